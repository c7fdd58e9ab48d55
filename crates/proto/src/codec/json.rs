//! JSON codec, with WAMP's binary convention: a string that starts with
//! `\u0000` carries base64 of binary data.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer as _};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{DecodeError, Envelope, Kind, Writer};
use crate::value::{Dict, Value};

pub(crate) fn split(frame: &Bytes, head_len: fn(u64) -> usize) -> Result<Envelope, DecodeError> {
    // One pass: envelope elements are decoded straight into values, payload
    // elements are only validated and located (borrowed `RawValue`s).
    let mut domain_error = None;
    let visitor = EnvelopeVisitor {
        head_len,
        error: &mut domain_error,
    };
    let mut de = serde_json::Deserializer::from_slice(frame);
    let parsed = de
        .deserialize_seq(visitor)
        .and_then(|v| de.end().map(|_| v));
    let (head, raws) = match (parsed, domain_error) {
        (_, Some(e)) => return Err(e),
        (Ok(v), None) => v,
        (Err(e), None) => {
            return Err(DecodeError::new(format!(
                "message is not a JSON array: {e}"
            )))
        }
    };
    let base = frame.as_ptr() as usize;
    let mut tail = Vec::with_capacity(raws.len());
    for text in raws {
        check_depth(text.as_bytes())?;
        let start = text.as_ptr() as usize - base;
        let kind = match text.as_bytes().first() {
            Some(b'[') => Kind::List,
            Some(b'{') => Kind::Dict,
            Some(b'"') if text.starts_with("\"\\u0000") => Kind::Bytes,
            Some(b'"') => Kind::Str,
            _ => Kind::Other,
        };
        tail.push((frame.slice(start..start + text.len()), kind));
    }
    Ok(Envelope { head, tail })
}

/// Reads the top-level array: the type code, `head_len(type)` envelope
/// values, then raw payload elements. Errors about the message's meaning
/// (rather than JSON syntax) go to `error` so they keep their own wording.
struct EnvelopeVisitor<'e> {
    head_len: fn(u64) -> usize,
    error: &'e mut Option<DecodeError>,
}

type Split<'de> = (Vec<Value>, Vec<&'de str>);

impl<'de> Visitor<'de> for EnvelopeVisitor<'_> {
    type Value = Split<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a WAMP message array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Split<'de>, A::Error> {
        let mut fail = |msg: String| {
            *self.error = Some(DecodeError::new(msg));
            de::Error::custom("invalid message")
        };
        let ty = match seq.next_element::<Value>()? {
            Some(Value::UInt(t)) => t,
            Some(other) => {
                return Err(fail(format!(
                    "message type must be an integer, got {}",
                    other.type_name()
                )));
            }
            None => return Err(fail("empty message array".into())),
        };
        let n = (self.head_len)(ty);
        // Capacities never trust a length read from the input.
        let mut head = Vec::with_capacity(n.min(16));
        head.push(Value::UInt(ty));
        while head.len() < n {
            match seq.next_element::<Value>()? {
                Some(v) => head.push(v),
                None => return Ok((head, Vec::new())),
            }
        }
        let mut tail = Vec::new();
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            tail.push(raw.get());
        }
        Ok((head, tail))
    }
}

/// Refuses raw JSON nested deeper than [`MAX_DEPTH`] (the payload is only
/// skipped, so serde_json's own recursion limit does not apply to it).
fn check_depth(text: &[u8]) -> Result<(), DecodeError> {
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    for &b in text {
        if in_str {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > super::MAX_DEPTH {
                    return Err(DecodeError::new("JSON data nested too deeply"));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

pub(crate) fn decode_value(bytes: &[u8]) -> Result<Value, DecodeError> {
    serde_json::from_slice(bytes).map_err(|e| DecodeError::new(format!("invalid JSON: {e}")))
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::UInt(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        match v.strip_prefix('\0') {
            Some(b64) => B64
                .decode(b64)
                .map(Value::Bytes)
                .map_err(|e| E::custom(format!("invalid base64 in binary string: {e}"))),
            None => Ok(Value::Str(v.to_owned())),
        }
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        if v.starts_with('\0') {
            self.visit_str(&v)
        } else {
            Ok(Value::Str(v))
        }
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    // The next four are never called by serde_json; they let a `Value` be
    // read from other deserializers (e.g. a field of a typed struct read by
    // `value_serde::from_value`).
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Bytes(v.to_vec()))
    }
    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Value, E> {
        Ok(Value::Bytes(v))
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::List(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some((k, v)) = map.next_entry::<String, Value>()? {
            out.push((k, v));
        }
        Ok(Value::Dict(Dict(out)))
    }
}

impl Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::UInt(u) => s.serialize_u64(*u),
            Value::Float(x) => s.serialize_f64(*x),
            Value::Str(v) => s.serialize_str(v),
            // The WAMP JSON text of binary data, wrapped so that the
            // `Value` serializer of [`crate::value_serde`] recognizes it and
            // keeps the bytes (serde_json writes the text as is).
            Value::Bytes(b) => {
                s.serialize_newtype_struct(crate::value_serde::BYTES_TOKEN, &B64Text(b))
            }
            Value::List(l) => {
                let mut seq = s.serialize_seq(Some(l.len()))?;
                for v in l {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Value::Dict(d) => d.serialize(s),
        }
    }
}

/// Binary data as WAMP's JSON text: `\0` and base64.
struct B64Text<'a>(&'a [u8]);

impl Serialize for B64Text<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut text = String::with_capacity(1 + self.0.len().div_ceil(3) * 4);
        text.push('\0');
        B64.encode_string(self.0, &mut text);
        s.serialize_str(&text)
    }
}

impl Serialize for Dict {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// Writes a compact JSON array, element by element.
pub(crate) struct JsonWriter {
    buf: Vec<u8>,
    remaining: usize,
    first: bool,
    /// A string written begins with NUL: WAMP's JSON would read it as
    /// binary data (`\u0000` and base64), so the frame must not be sent.
    nul_string: bool,
}

/// Whether `v` holds a string that begins with NUL (dictionary keys aside:
/// they are never read as binary).
fn has_nul_string(v: &Value) -> bool {
    match v {
        Value::Str(s) => s.starts_with('\0'),
        Value::List(l) => l.iter().any(has_nul_string),
        Value::Dict(d) => d.0.iter().any(|(_, v)| has_nul_string(v)),
        _ => false,
    }
}

impl JsonWriter {
    pub(crate) fn new(capacity: usize) -> Self {
        JsonWriter {
            buf: Vec::with_capacity(capacity),
            remaining: 0,
            first: true,
            nul_string: false,
        }
    }

    /// Why the frame written cannot be sent as JSON, if it cannot.
    pub(crate) fn unrepresentable(&self) -> Option<&'static str> {
        self.nul_string.then_some(
            "a string begins with NUL, which WAMP's JSON reads as binary data (\"\\u0000\" and base64)",
        )
    }

    fn before(&mut self) {
        if self.remaining > 0 && !self.first {
            self.buf.push(b',');
        }
        self.first = false;
    }

    fn after(&mut self) {
        if self.remaining > 0 {
            self.remaining -= 1;
            if self.remaining == 0 {
                self.buf.push(b']');
            }
        }
    }
}

impl Writer for JsonWriter {
    fn array(&mut self, len: usize) {
        self.buf.push(b'[');
        if len == 0 {
            self.buf.push(b']');
        }
        self.remaining = len;
        self.first = true;
    }
    fn uint(&mut self, v: u64) {
        self.before();
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
        self.after();
    }
    fn str(&mut self, s: &str) {
        self.nul_string |= s.starts_with('\0');
        self.before();
        // Writing a &str to a Vec cannot fail.
        let _ = serde_json::Serializer::new(&mut self.buf).serialize_str(s);
        self.after();
    }
    fn value(&mut self, v: &Value) {
        self.nul_string |= has_nul_string(v);
        self.before();
        // Serializing a Value to a Vec cannot fail (no non-string keys exist).
        let _ = serde_json::to_writer(&mut self.buf, v);
        self.after();
    }
    fn dict(&mut self, d: &Dict) {
        self.nul_string |= d.0.iter().any(|(_, v)| has_nul_string(v));
        self.before();
        let _ = serde_json::to_writer(&mut self.buf, d);
        self.after();
    }
    fn raw(&mut self, bytes: &[u8]) {
        self.before();
        self.buf.extend_from_slice(bytes);
        self.after();
    }
    fn finish(self) -> Vec<u8> {
        self.buf
    }
}
