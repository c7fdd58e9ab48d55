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
            if let Err(wrong) = fits(v, *ty) {
                return Err(DecodeError::new(format!(
                    "{what}.{key} must be {}, {wrong}",
                    describe(*ty),
                )));
            }
        }
    }
    Ok(())
}

fn is_id(v: &Value) -> bool {
    matches!(v, Value::UInt(u) if (1..=crate::id::MAX_ID).contains(u))
}

/// `Ok` if `v` has type `ty`, else what is wrong with it: the value itself
/// ("got float 1.5"), or for a list its first offending element ("element 2
/// is float 1.5").
fn fits(v: &Value, ty: T) -> Result<(), String> {
    let elements = |ok: fn(&Value) -> bool| match v {
        Value::List(l) => match l.iter().position(|x| !ok(x)) {
            None => Ok(()),
            Some(i) => Err(format!("but element {i} is {}", short(&l[i]))),
        },
        other => Err(format!("got {}", short(other))),
    };
    let whole = |ok: bool| {
        if ok {
            Ok(())
        } else {
            Err(format!("got {}", short(v)))
        }
    };
    match ty {
        T::Bool => whole(matches!(v, Value::Bool(_))),
        T::Id => whole(is_id(v)),
        T::UInt => whole(matches!(v, Value::UInt(_))),
        T::Str => whole(matches!(v, Value::Str(_))),
        T::IdList => elements(is_id),
        T::StrList => elements(|x| matches!(x, Value::Str(_))),
        T::ForwardFor => elements(|x| matches!(x, Value::Dict(_))),
        T::OneOf(allowed) => whole(matches!(v, Value::Str(s) if allowed.contains(&s.as_str()))),
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

/// How many characters of a string value an error message shows.
const SHOWN_CHARS: usize = 40;

/// A value's type and, for a scalar, the value itself (a string clipped to
/// [`SHOWN_CHARS`] characters with control characters escaped, so a message
/// that ends up in a log stays one short line): `float 1.5`, `string "x"`,
/// `integer 0`, `list of 3`.
pub fn short(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("bool {b}"),
        Value::UInt(u) => format!("integer {u}"),
        Value::Int(i) => format!("integer {i}"),
        Value::Float(f) => format!("float {f:?}"),
        Value::Str(s) => {
            let mut shown = String::from("string \"");
            for (n, c) in s.chars().enumerate() {
                if n == SHOWN_CHARS {
                    shown.push_str(&format!("...\" ({} bytes)", s.len()));
                    return shown;
                }
                if c.is_control()
                    || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
                {
                    shown.push_str(&c.escape_unicode().to_string());
                } else {
                    shown.push(c);
                }
            }
            shown.push('"');
            shown
        }
        Value::Bytes(b) => format!("binary of {} bytes", b.len()),
        Value::List(l) => format!("list of {}", l.len()),
        Value::Dict(d) => format!("dict of {}", d.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(key: &str, v: Value) -> String {
        let msg = Message::Publish {
            request: 1,
            options: Dict::new().with(key, v),
            topic: "a.b".into(),
            payload: Payload::empty(),
        };
        match check(&msg) {
            Ok(()) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    fn call(key: &str, v: Value) -> String {
        let msg = Message::Call {
            request: 1,
            options: Dict::new().with(key, v),
            procedure: "a.b".into(),
            payload: Payload::empty(),
        };
        match check(&msg) {
            Ok(()) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn list_options_name_the_offending_element_and_its_type() {
        let ids = Value::List(vec![Value::UInt(7), Value::Float(1.5)]);
        assert_eq!(
            publish("exclude", ids.clone()),
            "PUBLISH.Options.exclude must be a list of session ids, but element 1 is float 1.5"
        );
        assert_eq!(
            publish("eligible", Value::List(vec![Value::UInt(0)])),
            "PUBLISH.Options.eligible must be a list of session ids, but element 0 is integer 0"
        );
        assert_eq!(
            publish(
                "exclude_authid",
                Value::List(vec!["a".into(), Value::UInt(3)])
            ),
            "PUBLISH.Options.exclude_authid must be a list of strings, but element 1 is integer 3"
        );
        for key in ["exclude_authrole", "eligible_authid", "eligible_authrole"] {
            assert_eq!(
                publish(key, Value::List(vec![Value::Null])),
                format!("PUBLISH.Options.{key} must be a list of strings, but element 0 is null")
            );
        }
        assert_eq!(
            publish("forward_for", Value::List(vec![Value::Bool(true)])),
            "PUBLISH.Options.forward_for must be a list of dicts, but element 0 is bool true"
        );
        assert_eq!(publish("exclude", ids_ok()), "");
    }

    fn ids_ok() -> Value {
        Value::List(vec![Value::UInt(1), Value::UInt(2)])
    }

    #[test]
    fn non_lists_and_scalars_name_their_type_and_value() {
        assert_eq!(
            publish("exclude", Value::UInt(5)),
            "PUBLISH.Options.exclude must be a list of session ids, got integer 5"
        );
        assert_eq!(
            publish("disclose_me", Value::UInt(1)),
            "PUBLISH.Options.disclose_me must be a bool, got integer 1"
        );
        assert_eq!(
            call("timeout", Value::Int(-5)),
            "CALL.Options.timeout must be a non-negative integer, got integer -5"
        );
        assert_eq!(
            call("timeout", Value::Float(2.5)),
            "CALL.Options.timeout must be a non-negative integer, got float 2.5"
        );
        assert_eq!(
            call("disclose_me", Value::Str("yes".into())),
            "CALL.Options.disclose_me must be a bool, got string \"yes\""
        );
        assert_eq!(
            call("receive_progress", Value::List(vec![])),
            "CALL.Options.receive_progress must be a bool, got list of 0"
        );
    }

    #[test]
    fn shown_strings_are_clipped_and_escaped() {
        let long = "x".repeat(1000);
        let got = call("disclose_me", Value::Str(long));
        assert!(
            got.ends_with(&format!(
                "got string \"{}...\" (1000 bytes)",
                "x".repeat(SHOWN_CHARS)
            )),
            "{got}"
        );
        let got = call("disclose_me", Value::Str("a\nb\u{202e}".into()));
        assert_eq!(
            got,
            "CALL.Options.disclose_me must be a bool, got string \"a\\u{a}b\\u{202e}\""
        );
    }
}
