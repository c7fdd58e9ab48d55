//! Type checks for the options and details the protocol defines. A wrong
//! type is a protocol violation whose message names the offending key.

use crate::codec::DecodeError;
use crate::message::{Message, Payload};
use crate::value::{Dict, Value};

#[derive(Copy, Clone)]
enum T {
    Bool,
    Id,
    Str,
    IdList,
    StrList,
    ForwardFor,
    OneOf(&'static [&'static str]),
    UInt,
}

const ENC_ALGOS: &[&str] = &["null", "cryptobox", "mqtt", "xbr"];
const ENC_SERIALIZERS: &[&str] = &[
    "null",
    "json",
    "msgpack",
    "cbor",
    "ubjson",
    "opaque",
    "flatbuffers",
];
const MATCH: &[&str] = &["exact", "prefix", "wildcard"];
/// The spec's invocation policies plus Switchyard's `least_loaded`.
const INVOKE: &[&str] = &[
    "single",
    "roundrobin",
    "random",
    "first",
    "last",
    "least_loaded",
];
const CANCEL_MODES: &[&str] = &["skip", "kill", "killnowait"];

const PUBLISH_OPTIONS: &[(&str, T)] = &[
    ("acknowledge", T::Bool),
    ("exclude_me", T::Bool),
    ("exclude", T::IdList),
    ("exclude_authid", T::StrList),
    ("exclude_authrole", T::StrList),
    ("eligible", T::IdList),
    ("eligible_authid", T::StrList),
    ("eligible_authrole", T::StrList),
    ("retain", T::Bool),
    ("disclose_me", T::Bool),
    ("transaction_hash", T::Str),
    ("forward_for", T::ForwardFor),
    ("enc_algo", T::OneOf(ENC_ALGOS)),
    ("enc_serializer", T::OneOf(ENC_SERIALIZERS)),
];

const SUBSCRIBE_OPTIONS: &[(&str, T)] = &[
    ("match", T::OneOf(MATCH)),
    ("get_retained", T::Bool),
    ("forward_for", T::ForwardFor),
];

const EVENT_DETAILS: &[(&str, T)] = &[
    ("publisher", T::Id),
    ("publisher_authid", T::Str),
    ("publisher_authrole", T::Str),
    ("topic", T::Str),
    ("retained", T::Bool),
    ("transaction_hash", T::Str),
    ("x_acknowledged_delivery", T::Bool),
    ("forward_for", T::ForwardFor),
    ("enc_algo", T::OneOf(ENC_ALGOS)),
    ("enc_serializer", T::OneOf(ENC_SERIALIZERS)),
];

const CALL_OPTIONS: &[(&str, T)] = &[
    ("timeout", T::UInt),
    ("receive_progress", T::Bool),
    ("progress", T::Bool),
    ("disclose_me", T::Bool),
    ("forward_for", T::ForwardFor),
    ("enc_algo", T::OneOf(ENC_ALGOS)),
    ("enc_serializer", T::OneOf(ENC_SERIALIZERS)),
];

const REGISTER_OPTIONS: &[(&str, T)] = &[
    ("match", T::OneOf(MATCH)),
    ("invoke", T::OneOf(INVOKE)),
    ("concurrency", T::UInt),
    ("forward_timeout", T::Bool),
    ("disclose_caller", T::Bool),
    ("forward_for", T::ForwardFor),
];

const YIELD_OPTIONS: &[(&str, T)] = &[("progress", T::Bool)];

const CANCEL_OPTIONS: &[(&str, T)] = &[("mode", T::OneOf(CANCEL_MODES))];

const HELLO_DETAILS: &[(&str, T)] = &[("agent", T::Str), ("authid", T::Str)];

pub(crate) fn check(msg: &Message) -> Result<(), DecodeError> {
    match msg {
        Message::Hello { details, .. } => {
            keys("HELLO.Details", details, HELLO_DETAILS)?;
            match details.get("roles") {
                Some(Value::Dict(roles)) if !roles.is_empty() => Ok(()),
                Some(Value::Dict(_)) => Err(DecodeError::new(
                    "HELLO.Details.roles must announce at least one role",
                )),
                Some(other) => Err(DecodeError::new(format!(
                    "HELLO.Details.roles must be a dict, got {}",
                    other.type_name()
                ))),
                None => Err(DecodeError::new("HELLO.Details.roles is missing")),
            }
        }
        Message::Publish {
            options, payload, ..
        } => {
            keys("PUBLISH.Options", options, PUBLISH_OPTIONS)?;
            passthru("PUBLISH", options, payload)
        }
        Message::Subscribe { options, .. } => keys("SUBSCRIBE.Options", options, SUBSCRIBE_OPTIONS),
        Message::Event {
            details, payload, ..
        } => {
            keys("EVENT.Details", details, EVENT_DETAILS)?;
            passthru("EVENT", details, payload)
        }
        Message::Call {
            options, payload, ..
        } => {
            keys("CALL.Options", options, CALL_OPTIONS)?;
            passthru("CALL", options, payload)
        }
        Message::Register { options, .. } => keys("REGISTER.Options", options, REGISTER_OPTIONS),
        Message::Result {
            details, payload, ..
        } => passthru("RESULT", details, payload),
        Message::Invocation {
            details, payload, ..
        } => passthru("INVOCATION", details, payload),
        Message::Yield {
            options, payload, ..
        } => {
            keys("YIELD.Options", options, YIELD_OPTIONS)?;
            passthru("YIELD", options, payload)
        }
        Message::Cancel { options, .. } => keys("CANCEL.Options", options, CANCEL_OPTIONS),
        Message::Error {
            details, payload, ..
        } => passthru("ERROR", details, payload),
        _ => Ok(()),
    }
}

/// Arguments must be a list unless the message is in Payload PassThru Mode.
fn passthru(name: &str, opts: &Dict, payload: &Payload) -> Result<(), DecodeError> {
    match &payload.args {
        Some(args) if !args.is_list() => {
            if opts.get("enc_algo").is_some() || opts.get("ppt_scheme").is_some() {
                Ok(())
            } else {
                Err(DecodeError::new(format!(
                    "{name}.Arguments must be a list (a binary payload needs Payload PassThru Mode options)"
                )))
            }
        }
        _ => Ok(()),
    }
}

fn keys(what: &str, d: &Dict, table: &[(&str, T)]) -> Result<(), DecodeError> {
    for (key, ty) in table {
        if let Some(v) = d.get(key) {
            if !fits(v, *ty) {
                return Err(DecodeError::new(format!(
                    "{what}.{key} must be {}, got {}",
                    describe(*ty),
                    short(v)
                )));
            }
        }
    }
    Ok(())
}

fn is_id(v: &Value) -> bool {
    matches!(v, Value::UInt(u) if (1..=crate::id::MAX_ID).contains(u))
}

fn fits(v: &Value, ty: T) -> bool {
    match ty {
        T::Bool => matches!(v, Value::Bool(_)),
        T::Id => is_id(v),
        T::UInt => matches!(v, Value::UInt(_)),
        T::Str => matches!(v, Value::Str(_)),
        T::IdList => matches!(v, Value::List(l) if l.iter().all(is_id)),
        T::StrList => matches!(v, Value::List(l) if l.iter().all(|x| matches!(x, Value::Str(_)))),
        T::ForwardFor => {
            matches!(v, Value::List(l) if l.iter().all(|x| matches!(x, Value::Dict(_))))
        }
        T::OneOf(allowed) => matches!(v, Value::Str(s) if allowed.contains(&s.as_str())),
    }
}

fn describe(ty: T) -> String {
    match ty {
        T::Bool => "a bool".into(),
        T::Id => "a session id".into(),
        T::UInt => "a non-negative integer".into(),
        T::Str => "a string".into(),
        T::IdList => "a list of session ids".into(),
        T::StrList => "a list of strings".into(),
        T::ForwardFor => "a list of dicts".into(),
        T::OneOf(allowed) => format!("one of {}", allowed.join(", ")),
    }
}

fn short(v: &Value) -> String {
    match v {
        Value::Str(s) if s.len() <= 40 => format!("\"{s}\""),
        Value::Bool(b) => b.to_string(),
        Value::UInt(u) => u.to_string(),
        other => other.type_name().to_string(),
    }
}
