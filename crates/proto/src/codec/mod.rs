//! The three WAMP serializers. Each codec decodes only the envelope of a
//! message into [`Value`]s and keeps the payload (`Arguments`,
//! `ArgumentsKw`) as raw byte spans of the original frame, so a payload the
//! router only forwards is never decoded. A payload is transcoded only when
//! the receiving peer speaks a different serializer.

pub(crate) mod cbor;
pub(crate) mod json;
pub(crate) mod msgpack;

use bytes::Bytes;

use crate::value::Value;

/// Nesting deeper than this in a message is refused (protects the stack).
pub const MAX_DEPTH: usize = 100;

/// A WAMP serializer.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Serializer {
    Json,
    MsgPack,
    Cbor,
}

impl Serializer {
    pub const ALL: [Serializer; 3] = [Serializer::Json, Serializer::MsgPack, Serializer::Cbor];

    /// The WebSocket subprotocol name.
    pub fn subprotocol(self) -> &'static str {
        match self {
            Serializer::Json => "wamp.2.json",
            Serializer::MsgPack => "wamp.2.msgpack",
            Serializer::Cbor => "wamp.2.cbor",
        }
    }

    pub fn from_subprotocol(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.subprotocol() == name)
    }

    /// The serializer id of the RawSocket handshake.
    pub fn rawsocket_id(self) -> u8 {
        match self {
            Serializer::Json => 1,
            Serializer::MsgPack => 2,
            Serializer::Cbor => 3,
        }
    }

    pub fn from_rawsocket_id(id: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.rawsocket_id() == id)
    }

    /// A dense index (0..3), for per-serializer caches.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether frames are binary (true) or UTF-8 text (JSON).
    pub fn is_binary(self) -> bool {
        !matches!(self, Serializer::Json)
    }

    pub fn name(self) -> &'static str {
        match self {
            Serializer::Json => "json",
            Serializer::MsgPack => "msgpack",
            Serializer::Cbor => "cbor",
        }
    }
}

impl std::fmt::Display for Serializer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A message that could not be decoded or does not have the shape WAMP
/// requires. The text is meant for a human (it goes into ABORT.Details.message).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

impl DecodeError {
    pub fn new(msg: impl Into<String>) -> Self {
        DecodeError(msg.into())
    }
}

/// A payload that cannot be expressed in the target serializer (for example a
/// MessagePack extension type, or a dict with non-string keys, sent to a JSON peer).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cannot transcode payload from {from} to {to}: {reason}")]
pub struct EncodeError {
    pub from: Serializer,
    pub to: Serializer,
    pub reason: String,
}

/// The coarse type of a payload element, read from its first byte(s).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    List,
    Dict,
    Bytes,
    Str,
    Other,
}

/// A message split into its decoded envelope (`head`) and raw payload
/// elements (`tail`).
pub(crate) struct Envelope {
    pub head: Vec<Value>,
    pub tail: Vec<(Bytes, Kind)>,
}

/// Decodes the top-level array: the first `head_len(type)` elements become
/// values, the rest stay raw.
pub(crate) fn split(
    ser: Serializer,
    frame: &Bytes,
    head_len: fn(u64) -> usize,
) -> Result<Envelope, DecodeError> {
    match ser {
        Serializer::Json => json::split(frame, head_len),
        Serializer::MsgPack => msgpack::split(frame, head_len),
        Serializer::Cbor => cbor::split(frame, head_len),
    }
}

/// Decodes one complete value.
pub(crate) fn decode_value(ser: Serializer, bytes: &[u8]) -> Result<Value, DecodeError> {
    match ser {
        Serializer::Json => json::decode_value(bytes),
        Serializer::MsgPack => msgpack::decode_value(bytes),
        Serializer::Cbor => cbor::decode_value(bytes),
    }
}

/// The writing side of a codec: the message encoder calls these in order.
pub(crate) trait Writer {
    fn array(&mut self, len: usize);
    fn uint(&mut self, v: u64);
    fn str(&mut self, s: &str);
    fn value(&mut self, v: &Value);
    fn dict(&mut self, d: &crate::value::Dict);
    /// Splices raw bytes already in this writer's serializer.
    fn raw(&mut self, bytes: &[u8]);
    fn finish(self) -> Vec<u8>;
}

pub(crate) fn writer(ser: Serializer, capacity: usize) -> AnyWriter {
    match ser {
        Serializer::Json => AnyWriter::Json(json::JsonWriter::new(capacity)),
        Serializer::MsgPack => AnyWriter::MsgPack(msgpack::MsgPackWriter::new(capacity)),
        Serializer::Cbor => AnyWriter::Cbor(cbor::CborWriter::new(capacity)),
    }
}

pub(crate) enum AnyWriter {
    Json(json::JsonWriter),
    MsgPack(msgpack::MsgPackWriter),
    Cbor(cbor::CborWriter),
}

macro_rules! dispatch {
    ($self:ident, $w:ident => $e:expr) => {
        match $self {
            AnyWriter::Json($w) => $e,
            AnyWriter::MsgPack($w) => $e,
            AnyWriter::Cbor($w) => $e,
        }
    };
}

impl AnyWriter {
    /// Why what was written cannot be sent in this serializer, if it cannot
    /// (only JSON has such a case: a string that begins with NUL).
    pub(crate) fn unrepresentable(&self) -> Option<&'static str> {
        match self {
            AnyWriter::Json(w) => w.unrepresentable(),
            _ => None,
        }
    }
}

impl Writer for AnyWriter {
    fn array(&mut self, len: usize) {
        dispatch!(self, w => w.array(len))
    }
    fn uint(&mut self, v: u64) {
        dispatch!(self, w => w.uint(v))
    }
    fn str(&mut self, s: &str) {
        dispatch!(self, w => w.str(s))
    }
    fn value(&mut self, v: &Value) {
        dispatch!(self, w => w.value(v))
    }
    fn dict(&mut self, d: &crate::value::Dict) {
        dispatch!(self, w => w.dict(d))
    }
    fn raw(&mut self, bytes: &[u8]) {
        dispatch!(self, w => w.raw(bytes))
    }
    fn finish(self) -> Vec<u8> {
        dispatch!(self, w => w.finish())
    }
}

/// Encodes a standalone value (used to build payloads in code).
pub fn encode_value(ser: Serializer, v: &Value) -> Vec<u8> {
    let mut w = writer(ser, 64);
    w.value(v);
    w.finish()
}

/// The message type code of an encoded message, read from its first bytes
/// only (the array header and the first element), without decoding the
/// rest: what the router's traffic counters need for a frame it sends.
/// None when the bytes do not start like a WAMP message.
pub fn peek_type(serializer: Serializer, frame: &[u8]) -> Option<u64> {
    match serializer {
        Serializer::Json => {
            let mut it = frame
                .iter()
                .copied()
                .skip_while(|b| b.is_ascii_whitespace());
            if it.next()? != b'[' {
                return None;
            }
            let mut code: u64 = 0;
            let mut digits = 0;
            for b in it.skip_while(|b| b.is_ascii_whitespace()) {
                if b.is_ascii_digit() && digits < 4 {
                    code = code * 10 + u64::from(b - b'0');
                    digits += 1;
                } else {
                    break;
                }
            }
            (digits > 0).then_some(code)
        }
        Serializer::MsgPack => {
            // fixarray, array16 or array32, then a positive integer of
            // one or two bytes (EVENT_RECEIVED is 337).
            let rest = match *frame.first()? {
                0x91..=0x9f => &frame[1..],
                0xdc => frame.get(3..)?,
                0xdd => frame.get(5..)?,
                _ => return None,
            };
            match *rest.first()? {
                b @ 0x00..=0x7f => Some(u64::from(b)),
                0xcc => rest.get(1).map(|b| u64::from(*b)),
                0xcd => rest
                    .get(1..3)
                    .map(|b| u64::from(u16::from_be_bytes([b[0], b[1]]))),
                _ => None,
            }
        }
        Serializer::Cbor => {
            // An array (definite or not), then an unsigned integer of one
            // or two bytes.
            let rest = match *frame.first()? {
                0x81..=0x97 | 0x9f => &frame[1..],
                0x98 => frame.get(2..)?,
                0x99 => frame.get(3..)?,
                0x9a => frame.get(5..)?,
                _ => return None,
            };
            match *rest.first()? {
                b @ 0x00..=0x17 => Some(u64::from(b)),
                0x18 => rest.get(1).map(|b| u64::from(*b)),
                0x19 => rest
                    .get(1..3)
                    .map(|b| u64::from(u16::from_be_bytes([b[0], b[1]]))),
                _ => None,
            }
        }
    }
}

#[cfg(test)]
mod peek_tests {
    use super::*;
    use crate::message::Message;
    use crate::value::Dict;

    #[test]
    fn peek_type_reads_the_code_of_every_serializer() {
        let msgs = [
            Message::Goodbye {
                details: Dict::new(),
                reason: "wamp.close.normal".into(),
            },
            Message::Published {
                request: 7,
                publication: 1 << 40,
            },
            // A code above 255: two bytes in MessagePack and CBOR (found by
            // the fuzz targets, fuzz/: peek_type gave None).
            Message::EventReceived { publication: 1 },
        ];
        for ser in Serializer::ALL {
            for m in &msgs {
                let frame = m.encode(ser).unwrap();
                assert_eq!(peek_type(ser, &frame), Some(m.code()), "{ser} {m:?}");
            }
            assert_eq!(peek_type(ser, b""), None);
            assert_eq!(peek_type(ser, b"\xff"), None);
        }
        assert_eq!(peek_type(Serializer::Json, b" [ 36, 1]"), Some(36));
        assert_eq!(peek_type(Serializer::Json, b"[\"x\"]"), None);
    }
}
