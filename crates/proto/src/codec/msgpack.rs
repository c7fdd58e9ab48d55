//! MessagePack codec: a small reader over `rmp` markers that decodes values
//! and skips payload elements (recording their byte spans), and a writer on
//! `rmp::encode` (which always picks the most compact representation).

use bytes::Bytes;
use rmp::Marker;

use super::{DecodeError, Envelope, Kind, Writer, MAX_DEPTH};
use crate::value::{Dict, Value};

pub(crate) fn split(frame: &Bytes, head_len: fn(u64) -> usize) -> Result<Envelope, DecodeError> {
    let mut r = Reader { buf: frame, pos: 0 };
    let len = match r.marker()? {
        Marker::FixArray(n) => n as usize,
        Marker::Array16 => r.be_u16()? as usize,
        Marker::Array32 => r.be_u32()? as usize,
        _ => return Err(DecodeError::new("message is not a MessagePack array")),
    };
    if len == 0 {
        return Err(DecodeError::new("empty message array"));
    }
    let ty = match r.value(0)? {
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
        head.push(r.value(0)?);
    }
    let mut tail = Vec::with_capacity((len - n).min(2));
    for _ in n..len {
        let start = r.pos;
        let kind = r.skip(0)?;
        tail.push((frame.slice(start..r.pos), kind));
    }
    if r.pos != frame.len() {
        return Err(DecodeError::new("trailing bytes after MessagePack message"));
    }
    Ok(Envelope { head, tail })
}

pub(crate) fn decode_value(bytes: &[u8]) -> Result<Value, DecodeError> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let v = r.value(0)?;
    if r.pos != bytes.len() {
        return Err(DecodeError::new("trailing bytes after MessagePack value"));
    }
    Ok(v)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

fn truncated() -> DecodeError {
    DecodeError::new("truncated MessagePack data")
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or_else(truncated)?;
        let s = self.buf.get(self.pos..end).ok_or_else(truncated)?;
        self.pos = end;
        Ok(s)
    }
    fn byte(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn be<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn be_u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.be()?))
    }
    fn be_u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.be()?))
    }
    fn marker(&mut self) -> Result<Marker, DecodeError> {
        Ok(Marker::from_u8(self.byte()?))
    }

    /// The length that follows a str/bin/array/map/ext marker, if it is one.
    fn container_len(&mut self, m: Marker) -> Result<Option<usize>, DecodeError> {
        Ok(Some(match m {
            Marker::FixStr(n) => n as usize,
            Marker::FixArray(n) => n as usize,
            Marker::FixMap(n) => n as usize,
            Marker::Str8 | Marker::Bin8 | Marker::Ext8 => self.byte()? as usize,
            Marker::Str16 | Marker::Bin16 | Marker::Array16 | Marker::Map16 | Marker::Ext16 => {
                self.be_u16()? as usize
            }
            Marker::Str32 | Marker::Bin32 | Marker::Array32 | Marker::Map32 | Marker::Ext32 => {
                self.be_u32()? as usize
            }
            _ => return Ok(None),
        }))
    }

    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        if depth > super::MAX_DEPTH {
            return Err(DecodeError::new("MessagePack data nested too deeply"));
        }
        let m = self.marker()?;
        Ok(match m {
            Marker::Null => Value::Null,
            Marker::True => Value::Bool(true),
            Marker::False => Value::Bool(false),
            Marker::FixPos(v) => Value::UInt(v as u64),
            Marker::FixNeg(v) => Value::Int(v as i64),
            Marker::U8 => Value::UInt(self.byte()? as u64),
            Marker::U16 => Value::UInt(self.be_u16()? as u64),
            Marker::U32 => Value::UInt(self.be_u32()? as u64),
            Marker::U64 => Value::UInt(u64::from_be_bytes(self.be()?)),
            Marker::I8 => Value::from(i8::from_be_bytes(self.be()?) as i64),
            Marker::I16 => Value::from(i16::from_be_bytes(self.be()?) as i64),
            Marker::I32 => Value::from(i32::from_be_bytes(self.be()?) as i64),
            Marker::I64 => Value::from(i64::from_be_bytes(self.be()?)),
            Marker::F32 => Value::Float(f32::from_be_bytes(self.be()?) as f64),
            Marker::F64 => Value::Float(f64::from_be_bytes(self.be()?)),
            Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32 => {
                let n = self.container_len(m)?.unwrap_or(0);
                let s = std::str::from_utf8(self.take(n)?)
                    .map_err(|_| DecodeError::new("MessagePack string is not valid UTF-8"))?;
                Value::Str(s.to_owned())
            }
            Marker::Bin8 | Marker::Bin16 | Marker::Bin32 => {
                let n = self.container_len(m)?.unwrap_or(0);
                Value::Bytes(self.take(n)?.to_vec())
            }
            Marker::FixArray(_) | Marker::Array16 | Marker::Array32 => {
                let n = self.container_len(m)?.unwrap_or(0);
                let mut out = Vec::with_capacity(n.min(self.buf.len() - self.pos).min(1024));
                for _ in 0..n {
                    out.push(self.value(depth + 1)?);
                }
                Value::List(out)
            }
            Marker::FixMap(_) | Marker::Map16 | Marker::Map32 => {
                let n = self.container_len(m)?.unwrap_or(0);
                let mut out = Vec::with_capacity(n.min(self.buf.len() - self.pos).min(1024));
                for _ in 0..n {
                    let key = match self.value(depth + 1)? {
                        Value::Str(s) => s,
                        other => {
                            return Err(DecodeError::new(format!(
                                "dictionary keys must be strings, got {}",
                                other.type_name()
                            )))
                        }
                    };
                    out.push((key, self.value(depth + 1)?));
                }
                Value::Dict(Dict(out))
            }
            _ => {
                return Err(DecodeError::new(format!(
                    "unsupported MessagePack type (marker 0x{:02x})",
                    m.to_u8()
                )))
            }
        })
    }

    /// Skips one complete value and reports its coarse kind.
    fn skip(&mut self, depth: usize) -> Result<Kind, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::new("MessagePack data nested too deeply"));
        }
        let m = self.marker()?;
        let kind = match m {
            Marker::FixArray(_) | Marker::Array16 | Marker::Array32 => Kind::List,
            Marker::FixMap(_) | Marker::Map16 | Marker::Map32 => Kind::Dict,
            Marker::Bin8 | Marker::Bin16 | Marker::Bin32 => Kind::Bytes,
            Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32 => Kind::Str,
            _ => Kind::Other,
        };
        let fixed = match m {
            Marker::Null | Marker::True | Marker::False | Marker::FixPos(_) | Marker::FixNeg(_) => {
                0
            }
            Marker::U8 | Marker::I8 => 1,
            Marker::U16 | Marker::I16 => 2,
            Marker::U32 | Marker::I32 | Marker::F32 => 4,
            Marker::U64 | Marker::I64 | Marker::F64 => 8,
            Marker::FixExt1 => 2,
            Marker::FixExt2 => 3,
            Marker::FixExt4 => 5,
            Marker::FixExt8 => 9,
            Marker::FixExt16 => 17,
            Marker::Reserved => {
                return Err(DecodeError::new("reserved MessagePack marker 0xc1"));
            }
            _ => {
                let n = self.container_len(m)?.unwrap_or(0);
                match kind {
                    Kind::List => {
                        for _ in 0..n {
                            self.skip(depth + 1)?;
                        }
                        0
                    }
                    Kind::Dict => {
                        for _ in 0..2 * n {
                            self.skip(depth + 1)?;
                        }
                        0
                    }
                    _ if matches!(m, Marker::Ext8 | Marker::Ext16 | Marker::Ext32) => n + 1,
                    _ => n,
                }
            }
        };
        self.take(fixed)?;
        Ok(kind)
    }
}

pub(crate) struct MsgPackWriter {
    buf: Vec<u8>,
}

impl MsgPackWriter {
    pub(crate) fn new(capacity: usize) -> Self {
        MsgPackWriter {
            buf: Vec::with_capacity(capacity),
        }
    }
}

// Writing into a Vec<u8> cannot fail, so the rmp results are ignored below.
impl Writer for MsgPackWriter {
    fn array(&mut self, len: usize) {
        let _ = rmp::encode::write_array_len(&mut self.buf, len as u32);
    }
    fn uint(&mut self, v: u64) {
        let _ = rmp::encode::write_uint(&mut self.buf, v);
    }
    fn str(&mut self, s: &str) {
        let _ = rmp::encode::write_str(&mut self.buf, s);
    }
    fn value(&mut self, v: &Value) {
        write_value(&mut self.buf, v);
    }
    fn dict(&mut self, d: &Dict) {
        write_dict(&mut self.buf, d);
    }
    fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }
    fn finish(self) -> Vec<u8> {
        self.buf
    }
}

fn write_value(buf: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => {
            let _ = rmp::encode::write_nil(buf);
        }
        Value::Bool(b) => {
            let _ = rmp::encode::write_bool(buf, *b);
        }
        Value::Int(i) => {
            let _ = rmp::encode::write_sint(buf, *i);
        }
        Value::UInt(u) => {
            let _ = rmp::encode::write_uint(buf, *u);
        }
        Value::Float(x) => {
            let _ = rmp::encode::write_f64(buf, *x);
        }
        Value::Str(s) => {
            let _ = rmp::encode::write_str(buf, s);
        }
        Value::Bytes(b) => {
            let _ = rmp::encode::write_bin(buf, b);
        }
        Value::List(l) => {
            let _ = rmp::encode::write_array_len(buf, l.len() as u32);
            for x in l {
                write_value(buf, x);
            }
        }
        Value::Dict(d) => write_dict(buf, d),
    }
}

fn write_dict(buf: &mut Vec<u8>, d: &Dict) {
    let _ = rmp::encode::write_map_len(buf, d.0.len() as u32);
    for (k, x) in &d.0 {
        let _ = rmp::encode::write_str(buf, k);
        write_value(buf, x);
    }
}
