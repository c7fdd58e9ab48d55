//! What a publication looks like between nodes: one NATS message body per
//! publication, a WAMP PUBLISH message encoded with MessagePack, so the
//! payload (arguments and keyword arguments) is carried and transcoded by
//! the router's own codec, whatever serializer the publisher spoke:
//!
//! `[16, <publication id>, <Envelope>, <topic>, <args>?, <kwargs>?]`
//!
//! where `<Envelope>` is a dict: `origin` (the publishing node's name),
//! `publisher` (the session id, cluster-wide unique), `authid` and
//! `authrole` (the publisher's), `options` (its PUBLISH.Options, for
//! exclude/eligible/exclude_me, evaluated on the receiving node) and
//! `details` (the EVENT.Details the publishing node built: publisher
//! disclosure is decided there). The receiving node never trusts anything
//! else in it: it only delivers, never publishes again.

use bytes::Bytes;
use switchyard_proto::{Dict, Message, Payload, Serializer, Value};
use switchyard_router::backplane::Publication;

/// A publication as another node sent it.
#[derive(Debug)]
pub struct Remote {
    pub origin: String,
    pub publication: u64,
    pub topic: String,
    pub publisher: u64,
    pub options: Dict,
    pub details: Dict,
    pub payload: Payload,
}

/// Encodes `p`, published on node `origin`.
pub fn encode(origin: &str, p: &Publication<'_>) -> Result<Bytes, String> {
    let mut envelope = Dict::new();
    envelope.insert("origin", origin);
    envelope.insert("publisher", p.publisher.id);
    envelope.insert("authid", p.publisher.authid.as_str());
    envelope.insert("authrole", p.publisher.authrole.as_str());
    envelope.insert("options", Value::Dict(p.options.clone()));
    envelope.insert("details", Value::Dict(p.details.clone()));
    Message::Publish {
        request: p.id,
        options: envelope,
        topic: p.topic.to_string(),
        payload: p.payload.clone(),
    }
    .encode(Serializer::MsgPack)
    .map_err(|e| format!("cannot encode publication {}: {e:?}", p.id))
}

/// Decodes a message another node published (None, with the reason, for
/// anything else).
pub fn decode(body: &Bytes) -> Result<Remote, String> {
    let message = Message::decode(Serializer::MsgPack, body).map_err(|e| format!("{e:?}"))?;
    let Message::Publish {
        request,
        mut options,
        topic,
        payload,
    } = message
    else {
        return Err("not a PUBLISH envelope".into());
    };
    let publisher = options
        .get("publisher")
        .and_then(Value::as_u64)
        .ok_or("envelope.publisher is missing")?;
    let origin = options.get_str("origin").unwrap_or_default().to_string();
    Ok(Remote {
        origin,
        publication: request,
        topic,
        publisher,
        options: take_dict(&mut options, "options")?,
        details: take_dict(&mut options, "details")?,
        payload,
    })
}

/// Removes `key` from `d`: a dict, or empty when absent.
fn take_dict(d: &mut Dict, key: &str) -> Result<Dict, String> {
    match d.0.iter().position(|(k, _)| k == key) {
        None => Ok(Dict::new()),
        Some(i) => match d.0.swap_remove(i).1 {
            Value::Dict(v) => Ok(v),
            _ => Err(format!("envelope.{key} is not a dict")),
        },
    }
}
