//! A job's payload: its WAMP arguments, stored as MessagePack (which, unlike
//! JSON, keeps text and binary apart): a 4-byte big-endian length, the
//! `args` list (that many bytes, 0 = none), then the `kwargs` dict (the
//! rest, empty = none). Dispatch hands both spans to the Dealer as raw
//! MessagePack items: no decode for a MessagePack worker, one transcode
//! for the others. (Stores written before this layout hold JSON
//! `{"args", "kwargs"}`; those are still read.)

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use switchyard_proto::codec::encode_value;
use switchyard_proto::{Dict, Item, Payload, Serializer, Value};
use switchyard_queue::{Encoding, Payload as JobPayload};

fn msgpack_value(v: &Value) -> Bytes {
    Bytes::from(encode_value(Serializer::MsgPack, v))
}

/// A list or dict as a raw MessagePack item.
fn msgpack(item: Option<&Item>) -> Result<Option<Bytes>, String> {
    match item {
        None => Ok(None),
        Some(Item::Raw {
            ser: Serializer::MsgPack,
            bytes,
        }) => Ok(Some(bytes.clone())),
        Some(Item::Value(v)) => Ok(Some(msgpack_value(v))),
        Some(other) => {
            let v = other
                .to_value()
                .map_err(|e| format!("cannot decode the arguments: {e}"))?;
            Ok(Some(msgpack_value(&v)))
        }
    }
}

fn frame(args: Option<Bytes>, kwargs: Option<Bytes>) -> Result<JobPayload, String> {
    let args = args.unwrap_or_default();
    let kwargs = kwargs.unwrap_or_default();
    let n = u32::try_from(args.len()).map_err(|_| "the arguments are too large".to_string())?;
    let mut out = BytesMut::with_capacity(4 + args.len() + kwargs.len());
    out.put_u32(n);
    out.put_slice(&args);
    out.put_slice(&kwargs);
    Ok(JobPayload::new(Encoding::MsgPack, out.freeze()))
}

/// The payload of a job with these arguments: `args` must be a list and
/// `kwargs` a dict (either may be absent).
pub fn encode(args: Option<&Value>, kwargs: Option<&Value>) -> Result<JobPayload, String> {
    let args = match args {
        None | Some(Value::Null) => None,
        Some(v @ Value::List(_)) => Some(msgpack_value(v)),
        Some(_) => return Err("`args` must be a list".into()),
    };
    let kwargs = match kwargs {
        None | Some(Value::Null) => None,
        Some(v @ Value::Dict(_)) => Some(msgpack_value(v)),
        Some(_) => return Err("`kwargs` must be a dict".into()),
    };
    frame(args, kwargs)
}

/// The job payload of a publication (its arguments as given; a MessagePack
/// publisher's bytes are stored as they arrived).
pub fn of_publication(p: &Payload) -> Result<JobPayload, String> {
    frame(msgpack(p.args.as_ref())?, msgpack(p.kwargs.as_ref())?)
}

/// The args and kwargs spans of a stored MessagePack payload.
fn spans(bytes: &Bytes) -> Result<(Option<Bytes>, Option<Bytes>), String> {
    let corrupt = || "the stored payload is corrupt".to_string();
    let n = bytes
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .ok_or_else(corrupt)? as usize;
    let end = 4usize
        .checked_add(n)
        .filter(|e| *e <= bytes.len())
        .ok_or_else(corrupt)?;
    let args = (n > 0).then(|| bytes.slice(4..end));
    let kwargs = (end < bytes.len()).then(|| bytes.slice(end..));
    Ok((args, kwargs))
}

#[derive(Deserialize)]
struct JsonPayload {
    #[serde(default)]
    args: Option<Value>,
    #[serde(default)]
    kwargs: Option<Value>,
}

/// A stored payload as WAMP arguments.
pub fn to_wamp(p: &JobPayload) -> Result<Payload, String> {
    match p.encoding {
        Encoding::MsgPack => {
            let (args, kwargs) = spans(&p.bytes)?;
            let raw = |b: Bytes| Item::Raw {
                ser: Serializer::MsgPack,
                bytes: b,
            };
            // WAMP has no kwargs without args: an empty list stands in.
            let args = match (args, &kwargs) {
                (Some(a), _) => Some(raw(a)),
                (None, Some(_)) => Some(Item::Value(Value::List(Vec::new()))),
                (None, None) => None,
            };
            Ok(Payload {
                args,
                kwargs: kwargs.map(raw),
            })
        }
        Encoding::Json => {
            let j: JsonPayload = serde_json::from_slice(&p.bytes)
                .map_err(|e| format!("the stored payload is not valid JSON: {e}"))?;
            let kwargs = match j.kwargs {
                Some(Value::Dict(d)) => Some(d),
                _ => None,
            };
            let args = match j.args {
                Some(Value::List(l)) => l,
                _ => Vec::new(),
            };
            Ok(Payload::values(args, kwargs))
        }
        other => Err(format!(
            "a payload encoded as {other:?} cannot be dispatched"
        )),
    }
}

/// A stored payload as (args, kwargs) values, `[]` / `{}` when absent.
pub fn to_values(p: &JobPayload) -> Result<(Value, Value), String> {
    let w = to_wamp(p)?;
    let value = |i: Option<Item>, empty: Value| -> Result<Value, String> {
        match i {
            None => Ok(empty),
            Some(i) => i
                .to_value()
                .map_err(|e| format!("the stored payload is corrupt: {e}")),
        }
    };
    Ok((
        value(w.args, Value::List(Vec::new()))?,
        value(w.kwargs, Value::Dict(Dict::new()))?,
    ))
}

/// A stored payload as the JSON body `{"args": [...], "kwargs": {...}}`
/// (binary values in the WAMP JSON convention).
pub fn to_json(p: &JobPayload) -> Result<Bytes, String> {
    let (args, kwargs) = to_values(p)?;
    let body = serde_json::json!({
        "args": serde_json::to_value(&args).map_err(|e| e.to_string())?,
        "kwargs": serde_json::to_value(&kwargs).map_err(|e| e.to_string())?,
    });
    Ok(Bytes::from(body.to_string()))
}

/// Where a map repeats a key, anywhere in a call's arguments: the path of
/// the first repeated key (`kwargs.kwargs["_job"]`), or None. WAMP
/// decoders disagree on which of two equal keys counts (this router reads
/// the first, most decoders keep the last), so a payload whose keys the
/// router reads or adds must not repeat any.
pub fn duplicate_key(args: &[Value], kwargs: &Dict) -> Option<String> {
    let mut path = String::from("args");
    for (i, v) in args.iter().enumerate() {
        let len = path.len();
        path.push_str(&format!("[{i}]"));
        if let Some(p) = duplicate_in(v, &mut path) {
            return Some(p);
        }
        path.truncate(len);
    }
    let mut path = String::from("kwargs");
    duplicate_in_dict(kwargs, &mut path)
}

fn duplicate_in(v: &Value, path: &mut String) -> Option<String> {
    match v {
        Value::Dict(d) => duplicate_in_dict(d, path),
        Value::List(l) => {
            for (i, x) in l.iter().enumerate() {
                if matches!(x, Value::Dict(_) | Value::List(_)) {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    if let Some(p) = duplicate_in(x, path) {
                        return Some(p);
                    }
                    path.truncate(len);
                }
            }
            None
        }
        _ => None,
    }
}

fn duplicate_in_dict(d: &Dict, path: &mut String) -> Option<String> {
    let name = |k: &str| {
        let short: String = k.chars().take(64).collect();
        format!("{short:?}")
    };
    let mut seen = std::collections::HashSet::with_capacity(d.0.len());
    for (k, _) in &d.0 {
        if !seen.insert(k.as_str()) {
            return Some(format!("{path}[{}]", name(k)));
        }
    }
    for (k, v) in &d.0 {
        if matches!(v, Value::Dict(_) | Value::List(_)) {
            let len = path.len();
            path.push_str(&format!("[{}]", name(k)));
            if let Some(p) = duplicate_in(v, path) {
                return Some(p);
            }
            path.truncate(len);
        }
    }
    None
}

/// The refusal of a payload that repeats a key.
pub fn duplicate_key_message(path: &str) -> String {
    format!(
        "{path} repeats a key: a map may not hold the same key twice (decoders disagree on which value counts)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_text_and_binary_apart() {
        let args = Value::List(vec![
            Value::UInt(1),
            Value::Bytes(vec![0, 255, 7]),
            Value::Str("\u{0}AP8Q".into()),
        ]);
        let kwargs = Value::Dict(Dict::new().with("a", "b"));
        let p = encode(Some(&args), Some(&kwargs)).expect("encode");
        assert_eq!(p.encoding, Encoding::MsgPack);
        let (a, k) = to_values(&p).expect("values");
        assert_eq!(a, args);
        assert_eq!(k, kwargs);
        let json: serde_json::Value =
            serde_json::from_slice(&to_json(&p).expect("json")).expect("parse");
        assert_eq!(json["kwargs"]["a"], "b");
    }

    #[test]
    fn kwargs_alone_get_an_empty_args_list() {
        let kwargs = Value::Dict(Dict::new().with("x", 1u64));
        let p = encode(None, Some(&kwargs)).expect("encode");
        let w = to_wamp(&p).expect("wamp");
        assert_eq!(
            w.args.expect("args").to_value().expect("v"),
            Value::List(vec![])
        );
        let (a, _) = to_values(&encode(None, None).expect("empty")).expect("values");
        assert_eq!(a, Value::List(vec![]));
    }

    #[test]
    fn msgpack_publications_are_stored_as_they_came() {
        let raw = Bytes::from(encode_value(
            Serializer::MsgPack,
            &Value::List(vec![Value::UInt(5)]),
        ));
        let p = of_publication(&Payload {
            args: Some(Item::Raw {
                ser: Serializer::MsgPack,
                bytes: raw.clone(),
            }),
            kwargs: None,
        })
        .expect("payload");
        assert_eq!(&p.bytes[4..], &raw[..]);
    }

    #[test]
    fn repeated_keys_are_found_at_any_depth() {
        let dup = Dict(vec![
            ("_job".into(), Value::UInt(1)),
            ("_job".into(), Value::UInt(2)),
        ]);
        let kw = Dict::new().with("kwargs", Value::Dict(dup.clone()));
        assert_eq!(
            duplicate_key(&[], &kw).as_deref(),
            Some("kwargs[\"kwargs\"][\"_job\"]")
        );
        let args = vec![Value::List(vec![Value::UInt(0), Value::Dict(dup)])];
        assert_eq!(
            duplicate_key(&args, &Dict::new()).as_deref(),
            Some("args[0][1][\"_job\"]")
        );
        let fine = Dict::new().with("a", Dict::new().with("a", 1u64));
        assert_eq!(duplicate_key(&[], &fine), None);
    }

    #[test]
    fn wrong_shapes_and_corrupt_bytes_are_refused() {
        assert!(encode(Some(&Value::UInt(1)), None).is_err());
        assert!(encode(None, Some(&Value::List(vec![]))).is_err());
        let bad = JobPayload::new(Encoding::MsgPack, Bytes::from_static(&[0, 0, 0, 9, 1]));
        assert!(to_wamp(&bad).is_err());
        let old = JobPayload::json(Bytes::from_static(br#"{"args": [1], "kwargs": {"k": 2}}"#));
        let (a, _) = to_values(&old).expect("old JSON payloads are still read");
        assert_eq!(a, Value::List(vec![Value::UInt(1)]));
    }
}
