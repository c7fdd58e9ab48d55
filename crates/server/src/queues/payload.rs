//! A job's payload: its WAMP arguments as the JSON object
//! `{"args": [...], "kwargs": {...}}` (binary values in the WAMP JSON
//! convention, a string starting with `\u0000` and base64). The queue stores
//! the bytes as they are; dispatch hands them to the Dealer as raw JSON, so
//! they are parsed once, when the callee's serializer is written.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use switchyard_proto::{Dict, Item, Payload, Serializer, Value};

#[derive(Serialize)]
struct Out<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    args: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kwargs: Option<&'a Value>,
}

#[derive(Deserialize)]
struct In<'a> {
    #[serde(borrow, default)]
    args: Option<&'a RawValue>,
    #[serde(borrow, default)]
    kwargs: Option<&'a RawValue>,
}

/// The payload of a job with these arguments: `args` must be a list and
/// `kwargs` a dict (either may be absent).
pub fn encode(args: Option<&Value>, kwargs: Option<&Value>) -> Result<Bytes, String> {
    let args = match args {
        None | Some(Value::Null) => None,
        Some(v @ Value::List(_)) => Some(v),
        Some(_) => return Err("`args` must be a list".into()),
    };
    let kwargs = match kwargs {
        None | Some(Value::Null) => None,
        Some(v @ Value::Dict(_)) => Some(v),
        Some(_) => return Err("`kwargs` must be a dict".into()),
    };
    serde_json::to_vec(&Out { args, kwargs })
        .map(Bytes::from)
        .map_err(|e| format!("the arguments cannot be stored as JSON: {e}"))
}

/// The job payload of a publication (its arguments as given).
pub fn of_publication(p: &Payload) -> Result<Bytes, String> {
    let decode = |item: &Option<Item>| -> Result<Option<Value>, String> {
        item.as_ref()
            .map(|i| {
                i.to_value()
                    .map_err(|e| format!("cannot decode the arguments: {e}"))
            })
            .transpose()
    };
    encode(decode(&p.args)?.as_ref(), decode(&p.kwargs)?.as_ref())
}

/// A stored payload as WAMP arguments (raw JSON items).
pub fn to_wamp(bytes: &[u8]) -> Result<Payload, String> {
    let parsed: In = serde_json::from_slice(bytes)
        .map_err(|e| format!("the stored payload is not valid JSON: {e}"))?;
    let raw = |r: Option<&RawValue>| {
        r.map(|r| Item::Raw {
            ser: Serializer::Json,
            bytes: Bytes::copy_from_slice(r.get().as_bytes()),
        })
    };
    Ok(Payload {
        args: raw(parsed.args),
        kwargs: raw(parsed.kwargs),
    })
}

/// A stored payload as values (for `peek`, `dead`, `job`).
pub fn to_values(bytes: &[u8]) -> (Value, Value) {
    #[derive(Deserialize)]
    struct Owned {
        #[serde(default)]
        args: Option<Value>,
        #[serde(default)]
        kwargs: Option<Value>,
    }
    match serde_json::from_slice::<Owned>(bytes) {
        Ok(o) => (
            o.args.unwrap_or(Value::List(Vec::new())),
            o.kwargs.unwrap_or(Value::Dict(Dict::new())),
        ),
        Err(_) => (Value::List(Vec::new()), Value::Dict(Dict::new())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_arguments_and_binary() {
        let args = Value::List(vec![Value::UInt(1), Value::Bytes(vec![0, 255, 7])]);
        let kwargs = Value::Dict(Dict::new().with("a", "b"));
        let bytes = encode(Some(&args), Some(&kwargs)).expect("encode");
        let (a, k) = to_values(&bytes);
        assert_eq!(a, args);
        assert_eq!(k, kwargs);
        let p = to_wamp(&bytes).expect("wamp");
        assert_eq!(p.args.expect("args").to_value().expect("value"), args);
    }

    #[test]
    fn wrong_shapes_are_refused() {
        assert!(encode(Some(&Value::UInt(1)), None).is_err());
        assert!(encode(None, Some(&Value::List(vec![]))).is_err());
        assert_eq!(&encode(None, None).expect("empty")[..], b"{}");
    }
}
