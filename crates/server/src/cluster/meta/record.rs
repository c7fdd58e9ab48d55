//! What the sessions bucket holds (NATS KV, one key per record), encoded
//! with the router's own codec: a WAMP `PUBLISH` in MessagePack whose
//! options dict is the record (`[16, <id>, <record>, <kind>]`), so
//! testament payloads and session details keep every WAMP value.
//!
//! - `s.<session id>`: a session of some node: `node`, `epoch` (its
//!   process), `realm`, `authid`, `authrole`, `details` (its
//!   `SessionDetails`) and `testaments` (each `topic`, `options`, `args`,
//!   `kwargs`; `detached` ones first). Created with KV `create` before the
//!   session's WELCOME: the claim of its id.
//! - `u.<node>.<subscription id>`: a subscription of `node` with client
//!   subscribers: `epoch`, `realm`, `uri`, `match`, `created` (ms since the
//!   Unix epoch) and `subscribers`.

use bytes::Bytes;
use switchyard_proto::{Dict, Message, Payload, Serializer, Value};
use switchyard_router::session::Testament;
use switchyard_router::uri_index::MatchPolicy;

const SESSION: &str = "switchyard.session";
const SUBSCRIPTION: &str = "switchyard.subscription";

/// The key of session `id`'s record.
pub fn session_key(id: u64) -> String {
    format!("s.{id}")
}

/// The key of subscription `id` of `node`.
pub fn subscription_key(node: &str, id: u64) -> String {
    format!("u.{node}.{id}")
}

/// A session of some node.
#[derive(Clone, Debug)]
pub struct SessionRecord {
    pub id: u64,
    pub node: String,
    pub epoch: u64,
    pub realm: String,
    pub authid: String,
    pub authrole: String,
    pub details: Dict,
    pub testaments: Vec<Testament>,
}

/// A subscription of some node.
#[derive(Clone, Debug, PartialEq)]
pub struct SubscriptionRecord {
    pub id: u64,
    pub node: String,
    pub epoch: u64,
    pub realm: String,
    pub uri: String,
    pub policy: MatchPolicy,
    pub created_ms: u64,
    pub subscribers: Vec<u64>,
}

/// Either record.
#[derive(Clone, Debug)]
pub enum Record {
    Session(SessionRecord),
    Subscription(SubscriptionRecord),
}

fn envelope(id: u64, kind: &str, record: Dict) -> Result<Bytes, String> {
    Message::Publish {
        request: id,
        options: record,
        topic: kind.to_string(),
        payload: Payload::empty(),
    }
    .encode(Serializer::MsgPack)
    .map_err(|e| format!("cannot encode the record of {id}: {e:?}"))
}

impl SessionRecord {
    pub fn encode(&self) -> Result<Bytes, String> {
        let testaments = self
            .testaments
            .iter()
            .map(|t| {
                let mut d = Dict::new()
                    .with("topic", t.topic.as_str())
                    .with("options", Value::Dict(t.options.clone()));
                if let Some(args) = t.payload.args.as_ref().and_then(|a| a.to_value().ok()) {
                    d.insert("args", args);
                }
                if let Some(kw) = t.payload.kwargs.as_ref().and_then(|a| a.to_value().ok()) {
                    d.insert("kwargs", kw);
                }
                Value::Dict(d)
            })
            .collect();
        let record = Dict::new()
            .with("node", self.node.as_str())
            .with("epoch", self.epoch)
            .with("realm", self.realm.as_str())
            .with("authid", self.authid.as_str())
            .with("authrole", self.authrole.as_str())
            .with("details", Value::Dict(self.details.clone()))
            .with("testaments", Value::List(testaments));
        envelope(self.id, SESSION, record)
    }
}

impl SubscriptionRecord {
    pub fn encode(&self) -> Result<Bytes, String> {
        let record = Dict::new()
            .with("node", self.node.as_str())
            .with("epoch", self.epoch)
            .with("realm", self.realm.as_str())
            .with("uri", self.uri.as_str())
            .with("match", self.policy.as_str())
            .with("created", self.created_ms)
            .with(
                "subscribers",
                Value::List(self.subscribers.iter().map(|s| Value::UInt(*s)).collect()),
            );
        envelope(self.id, SUBSCRIPTION, record)
    }
}

fn text(d: &Dict, key: &str) -> Result<String, String> {
    d.get_str(key)
        .map(str::to_string)
        .ok_or_else(|| format!("record.{key} is missing"))
}

fn number(d: &Dict, key: &str) -> Result<u64, String> {
    d.get(key)
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("record.{key} is missing"))
}

fn testament(v: &Value) -> Option<Testament> {
    let d = v.as_dict()?;
    let args = match d.get("args") {
        Some(Value::List(l)) => l.clone(),
        _ => Vec::new(),
    };
    let kwargs = match d.get("kwargs") {
        Some(Value::Dict(k)) => Some(k.clone()),
        _ => None,
    };
    Some(Testament {
        topic: d.get_str("topic")?.to_string(),
        options: d.get("options").and_then(Value::as_dict).cloned()?,
        payload: Payload::values(args, kwargs),
    })
}

/// Decodes a record (None, with the reason, for anything else).
pub fn decode(body: &Bytes) -> Result<Record, String> {
    let message = Message::decode(Serializer::MsgPack, body).map_err(|e| format!("{e:?}"))?;
    let Message::Publish {
        request: id,
        options: d,
        topic,
        ..
    } = message
    else {
        return Err("not a record".into());
    };
    match topic.as_str() {
        SESSION => Ok(Record::Session(SessionRecord {
            id,
            node: text(&d, "node")?,
            epoch: number(&d, "epoch")?,
            realm: text(&d, "realm")?,
            authid: text(&d, "authid")?,
            authrole: text(&d, "authrole")?,
            details: d
                .get("details")
                .and_then(Value::as_dict)
                .cloned()
                .unwrap_or_default(),
            testaments: match d.get("testaments") {
                Some(Value::List(l)) => l.iter().filter_map(testament).collect(),
                _ => Vec::new(),
            },
        })),
        SUBSCRIPTION => Ok(Record::Subscription(SubscriptionRecord {
            id,
            node: text(&d, "node")?,
            epoch: number(&d, "epoch")?,
            realm: text(&d, "realm")?,
            uri: text(&d, "uri")?,
            policy: d
                .get_str("match")
                .and_then(MatchPolicy::parse)
                .ok_or("record.match is missing")?,
            created_ms: number(&d, "created")?,
            subscribers: match d.get("subscribers") {
                Some(Value::List(l)) => l.iter().filter_map(Value::as_u64).collect(),
                _ => Vec::new(),
            },
        })),
        other => Err(format!("unknown record kind {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_with_their_testaments() {
        let s = SessionRecord {
            id: 42,
            node: "n1".into(),
            epoch: 7,
            realm: "realm1".into(),
            authid: "alice".into(),
            authrole: "user".into(),
            details: Dict::new().with("session", 42u64),
            testaments: vec![Testament {
                topic: "com.example.gone".into(),
                options: Dict::new().with("exclude_me", false),
                payload: Payload::values(
                    vec![Value::Str("bye".into())],
                    Some(Dict::new().with("n", 1u64)),
                ),
            }],
        };
        let Ok(Record::Session(back)) = decode(&s.encode().expect("encode")) else {
            panic!("not a session record");
        };
        assert_eq!((back.id, back.epoch, &*back.authid), (42, 7, "alice"));
        assert_eq!(back.details.get("session"), Some(&Value::UInt(42)));
        assert_eq!(back.testaments.len(), 1);
        let t = &back.testaments[0];
        assert_eq!(t.topic, "com.example.gone");
        assert_eq!(
            t.payload.args.as_ref().and_then(|a| a.to_value().ok()),
            Some(Value::List(vec![Value::Str("bye".into())]))
        );
        let u = SubscriptionRecord {
            id: 9,
            node: "n2".into(),
            epoch: 3,
            realm: "realm1".into(),
            uri: "com.".into(),
            policy: MatchPolicy::Prefix,
            created_ms: 1000,
            subscribers: vec![1, 2],
        };
        let Ok(Record::Subscription(back)) = decode(&u.encode().expect("encode")) else {
            panic!("not a subscription record");
        };
        assert_eq!(back, u);
        assert!(decode(&Bytes::from_static(b"\x93\x01")).is_err());
    }
}
