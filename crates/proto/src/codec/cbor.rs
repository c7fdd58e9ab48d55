//! CBOR codec on `minicbor`: its decoder skips payload elements without
//! allocating and reports positions, which gives the raw spans.

use bytes::Bytes;
use minicbor::data::Type;
use minicbor::{Decoder, Encoder};

use super::{DecodeError, Envelope, Kind, Writer, MAX_DEPTH};
use crate::value::{Dict, Value};

fn err(e: minicbor::decode::Error) -> DecodeError {
    DecodeError::new(format!("invalid CBOR: {e}"))
}

pub(crate) fn split(frame: &Bytes, head_len: fn(u64) -> usize) -> Result<Envelope, DecodeError> {
    let mut d = Decoder::new(frame);
    let len = match d.datatype().map_err(err)? {
        Type::Array => d.array().map_err(err)?.unwrap_or(0) as usize,
        _ => {
            return Err(DecodeError::new(
                "message is not a definite-length CBOR array",
            ))
        }
    };
    if len == 0 {
        return Err(DecodeError::new("empty message array"));
    }
    let ty = match value(&mut d, 0)? {
        Value::UInt(t) => t,
        other => {
            return Err(DecodeError::new(format!(
                "message type must be an integer, got {}",
                other.type_name()
            )))
        }
    };
    let n = head_len(ty).min(len);
    // Capacities never trust a length read from the input.
    let mut head = Vec::with_capacity(n.min(16));
    head.push(Value::UInt(ty));
    for _ in 1..n {
        head.push(value(&mut d, 0)?);
    }
    let mut tail = Vec::with_capacity((len - n).min(2));
    for _ in n..len {
        let start = d.position();
        let kind = match d.datatype().map_err(err)? {
            Type::Array | Type::ArrayIndef => Kind::List,
            Type::Map | Type::MapIndef => Kind::Dict,
            Type::Bytes | Type::BytesIndef => Kind::Bytes,
            Type::String | Type::StringIndef => Kind::Str,
            _ => Kind::Other,
        };
        skip(&mut d, 0)?;
        tail.push((frame.slice(start..d.position()), kind));
    }
    if d.position() != frame.len() {
        return Err(DecodeError::new("trailing bytes after CBOR message"));
    }
    Ok(Envelope { head, tail })
}

/// Skips one item, refusing nesting deeper than [`MAX_DEPTH`] like the
/// other codecs do.
fn skip(d: &mut Decoder<'_>, depth: usize) -> Result<(), DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::new("CBOR data nested too deeply"));
    }
    match d.datatype().map_err(err)? {
        Type::Array | Type::ArrayIndef => match d.array().map_err(err)? {
            Some(n) => {
                for _ in 0..n {
                    skip(d, depth + 1)?;
                }
            }
            None => {
                while d.datatype().map_err(err)? != Type::Break {
                    skip(d, depth + 1)?;
                }
                d.skip().map_err(err)?;
            }
        },
        Type::Map | Type::MapIndef => match d.map().map_err(err)? {
            Some(n) => {
                for _ in 0..n.saturating_mul(2) {
                    skip(d, depth + 1)?;
                }
            }
            None => {
                while d.datatype().map_err(err)? != Type::Break {
                    skip(d, depth + 1)?;
                }
                d.skip().map_err(err)?;
            }
        },
        Type::Tag => {
            d.tag().map_err(err)?;
            skip(d, depth + 1)?;
        }
        _ => d.skip().map_err(err)?,
    }
    Ok(())
}

pub(crate) fn decode_value(bytes: &[u8]) -> Result<Value, DecodeError> {
    let mut d = Decoder::new(bytes);
    let v = value(&mut d, 0)?;
    if d.position() != bytes.len() {
        return Err(DecodeError::new("trailing bytes after CBOR value"));
    }
    Ok(v)
}

fn value(d: &mut Decoder<'_>, depth: usize) -> Result<Value, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::new("CBOR data nested too deeply"));
    }
    Ok(match d.datatype().map_err(err)? {
        Type::Bool => Value::Bool(d.bool().map_err(err)?),
        Type::Null | Type::Undefined => {
            d.skip().map_err(err)?;
            Value::Null
        }
        Type::U8 | Type::U16 | Type::U32 | Type::U64 => Value::UInt(d.u64().map_err(err)?),
        Type::I8 | Type::I16 | Type::I32 | Type::I64 => Value::from(d.i64().map_err(err)?),
        Type::Int => {
            let i = i128::from(d.int().map_err(err)?);
            match (u64::try_from(i), i64::try_from(i)) {
                (Ok(u), _) => Value::UInt(u),
                (_, Ok(s)) => Value::Int(s),
                _ => return Err(DecodeError::new("CBOR integer out of 64-bit range")),
            }
        }
        Type::F16 | Type::F32 | Type::F64 => Value::Float(d.f64().map_err(err)?),
        Type::String => Value::Str(d.str().map_err(err)?.to_owned()),
        Type::StringIndef => {
            let mut s = String::new();
            for part in d.str_iter().map_err(err)? {
                s.push_str(part.map_err(err)?);
            }
            Value::Str(s)
        }
        Type::Bytes => Value::Bytes(d.bytes().map_err(err)?.to_vec()),
        Type::BytesIndef => {
            let mut b = Vec::new();
            for part in d.bytes_iter().map_err(err)? {
                b.extend_from_slice(part.map_err(err)?);
            }
            Value::Bytes(b)
        }
        Type::Array | Type::ArrayIndef => {
            let len = d.array().map_err(err)?;
            let mut out = Vec::new();
            match len {
                Some(n) => {
                    for _ in 0..n {
                        out.push(value(d, depth + 1)?);
                    }
                }
                None => {
                    while d.datatype().map_err(err)? != Type::Break {
                        out.push(value(d, depth + 1)?);
                    }
                    d.skip().map_err(err)?;
                }
            }
            Value::List(out)
        }
        Type::Map | Type::MapIndef => {
            let len = d.map().map_err(err)?;
            let mut out = Vec::new();
            let mut entry = |d: &mut Decoder<'_>| -> Result<(), DecodeError> {
                let key = match value(d, depth + 1)? {
                    Value::Str(s) => s,
                    other => {
                        return Err(DecodeError::new(format!(
                            "dictionary keys must be strings, got {}",
                            other.type_name()
                        )))
                    }
                };
                out.push((key, value(d, depth + 1)?));
                Ok(())
            };
            match len {
                Some(n) => {
                    for _ in 0..n {
                        entry(d)?;
                    }
                }
                None => {
                    while d.datatype().map_err(err)? != Type::Break {
                        entry(d)?;
                    }
                    d.skip().map_err(err)?;
                }
            }
            Value::Dict(Dict(out))
        }
        Type::Tag => {
            // Tags (dates, bignums...) carry no meaning for WAMP: keep the tagged item.
            d.tag().map_err(err)?;
            value(d, depth + 1)?
        }
        other => return Err(DecodeError::new(format!("unsupported CBOR type {other:?}"))),
    })
}

pub(crate) struct CborWriter {
    enc: Encoder<Vec<u8>>,
}

impl CborWriter {
    pub(crate) fn new(capacity: usize) -> Self {
        CborWriter {
            enc: Encoder::new(Vec::with_capacity(capacity)),
        }
    }
}

// Encoding into a Vec<u8> cannot fail, so the results are ignored below.
impl Writer for CborWriter {
    fn array(&mut self, len: usize) {
        let _ = self.enc.array(len as u64);
    }
    fn uint(&mut self, v: u64) {
        let _ = self.enc.u64(v);
    }
    fn str(&mut self, s: &str) {
        let _ = self.enc.str(s);
    }
    fn value(&mut self, v: &Value) {
        write_value(&mut self.enc, v);
    }
    fn dict(&mut self, d: &Dict) {
        write_dict(&mut self.enc, d);
    }
    fn raw(&mut self, bytes: &[u8]) {
        self.enc.writer_mut().extend_from_slice(bytes);
    }
    fn finish(self) -> Vec<u8> {
        self.enc.into_writer()
    }
}

fn write_value(e: &mut Encoder<Vec<u8>>, v: &Value) {
    match v {
        Value::Null => {
            let _ = e.null();
        }
        Value::Bool(b) => {
            let _ = e.bool(*b);
        }
        Value::Int(i) => {
            let _ = e.i64(*i);
        }
        Value::UInt(u) => {
            let _ = e.u64(*u);
        }
        Value::Float(x) => {
            let _ = e.f64(*x);
        }
        Value::Str(s) => {
            let _ = e.str(s);
        }
        Value::Bytes(b) => {
            let _ = e.bytes(b);
        }
        Value::List(l) => {
            let _ = e.array(l.len() as u64);
            for x in l {
                write_value(e, x);
            }
        }
        Value::Dict(d) => write_dict(e, d),
    }
}

fn write_dict(e: &mut Encoder<Vec<u8>>, d: &Dict) {
    let _ = e.map(d.0.len() as u64);
    for (k, x) in &d.0 {
        let _ = e.str(k);
        write_value(e, x);
    }
}
