//! WAMP over RawSocket, the wire format only (spec:
//! `advanced/transport_rawsocket.md`): the 4-octet opening handshake that
//! picks the serializer and each side's maximum message length, its error
//! codes, and the 4-octet frame header (reserved bits, 3-bit frame type,
//! 24-bit length plus the 25th bit for exactly 16 MiB).
//!
//! Why here: the router's listener (`crates/server`) and the client
//! (`crates/client`) speak the same octets, and both depend on this crate
//! while neither may depend on the other. One copy of the format keeps the
//! two sides from drifting apart (they had: the client refused a header
//! with the 25th length bit and other length bits set, the server read it
//! as 16 MiB).
//!
//! Why pure functions over octets and not a `tokio-util` codec: this crate
//! does no I/O and takes no runtime; and neither read loop fits a
//! `Decoder`. The router checks a frame's length against a limit that
//! depends on the session state before it buffers the frame, splits frames
//! off an adaptive buffer without copying, and writes batches with vectored
//! writes; the client answers PINGs from its reader. Each side keeps its
//! loop and asks this module what the octets mean.

use crate::Serializer;

/// The first octet of every handshake and handshake reply.
pub const MAGIC: u8 = 0x7F;

/// The longest payload a frame can carry: 2^24 octets (16 MiB), also the
/// largest maximum a handshake can announce.
pub const MAX_FRAME: usize = 1 << 24;

/// Handshake error code: the router does not speak the serializer asked for.
pub const ERR_SERIALIZER_UNSUPPORTED: u8 = 1;
/// Handshake error code: the maximum message length is unacceptable.
pub const ERR_MAX_LENGTH_UNACCEPTABLE: u8 = 2;
/// Handshake error code: use of reserved bits (unsupported feature).
pub const ERR_RESERVED_BITS: u8 = 3;
/// Handshake error code: maximum connection count reached.
pub const ERR_MAX_CONNECTIONS: u8 = 4;

/// The spec's text for a handshake error code.
pub fn error_text(code: u8) -> &'static str {
    match code {
        0 => "illegal (error code 0 must not be used)",
        ERR_SERIALIZER_UNSUPPORTED => "serializer unsupported",
        ERR_MAX_LENGTH_UNACCEPTABLE => "maximum message length unacceptable",
        ERR_RESERVED_BITS => "use of reserved bits (unsupported feature)",
        ERR_MAX_CONNECTIONS => "maximum connection count reached",
        _ => "currently undefined",
    }
}

/// The maximum message length a handshake's `LENGTH` field announces:
/// 2^(9+LENGTH) octets, 512 to 16 MiB. Only the low 4 bits of `exp` count.
pub const fn max_len(exp: u8) -> usize {
    1usize << (9 + (exp & 0x0F))
}

/// The `LENGTH` field to announce for a limit of `max` octets: the largest
/// 2^(9+LENGTH) not above `max` (0 below 1024, 15 from 16 MiB on).
pub fn length_exponent(max: usize) -> u8 {
    let mut l = 0u8;
    while l < 15 && (1usize << (9 + l + 1)) <= max {
        l += 1;
    }
    l
}

/// A client's handshake: ask for `serializer`, accept frames of up to
/// 2^(9+`exp`) octets (`exp` is capped at 15).
pub fn client_handshake(serializer: Serializer, exp: u8) -> [u8; 4] {
    handshake_octets(serializer, exp)
}

/// `LENGTH` and `SERIALIZER` in the second octet: a client's request and a
/// router's acceptance have the same shape.
fn handshake_octets(serializer: Serializer, exp: u8) -> [u8; 4] {
    [MAGIC, (exp.min(15) << 4) | serializer.rawsocket_id(), 0, 0]
}

/// What a client's handshake asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientHandshake {
    /// The serializer the client speaks.
    pub serializer: Serializer,
    /// The longest message the client accepts from the router.
    pub max_len: usize,
}

/// Why a client's handshake is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientHandshakeError {
    /// The first octet is not [`MAGIC`]: not RawSocket at all. The spec
    /// says to fail the connection, with no reply.
    NotRawSocket {
        /// The first octet received.
        first: u8,
    },
    /// The third or fourth octet is not zero.
    ReservedBits,
    /// The serializer id is 0 or one this crate does not speak.
    SerializerUnsupported {
        /// The serializer id asked for (low 4 bits of the second octet).
        id: u8,
    },
}

impl ClientHandshakeError {
    /// The error code to reply with ([`refusal`]); `None` when the spec
    /// says to close without a reply.
    pub fn code(self) -> Option<u8> {
        match self {
            ClientHandshakeError::NotRawSocket { .. } => None,
            ClientHandshakeError::ReservedBits => Some(ERR_RESERVED_BITS),
            ClientHandshakeError::SerializerUnsupported { .. } => Some(ERR_SERIALIZER_UNSUPPORTED),
        }
    }
}

/// Reads a client's handshake (router side). The reserved octets are
/// checked before the serializer.
pub fn parse_client_handshake(octets: [u8; 4]) -> Result<ClientHandshake, ClientHandshakeError> {
    if octets[0] != MAGIC {
        return Err(ClientHandshakeError::NotRawSocket { first: octets[0] });
    }
    if octets[2] != 0 || octets[3] != 0 {
        return Err(ClientHandshakeError::ReservedBits);
    }
    let id = octets[1] & 0x0F;
    let serializer = Serializer::from_rawsocket_id(id)
        .ok_or(ClientHandshakeError::SerializerUnsupported { id })?;
    Ok(ClientHandshake {
        serializer,
        max_len: max_len(octets[1] >> 4),
    })
}

/// The router's accepting reply: echo `serializer`, announce frames of up
/// to 2^(9+`exp`) octets (`exp` is capped at 15; see [`length_exponent`]).
pub fn accept(serializer: Serializer, exp: u8) -> [u8; 4] {
    handshake_octets(serializer, exp)
}

/// The router's refusing reply with error `code` (1..=15).
pub fn refusal(code: u8) -> [u8; 4] {
    [MAGIC, code << 4, 0, 0]
}

/// A router's accepting reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouterReply {
    /// The serializer the router echoed.
    pub serializer: Serializer,
    /// The router's `LENGTH` field (0..=15).
    pub exp: u8,
    /// The longest message the router accepts: 2^(9+`exp`) octets.
    pub max_len: usize,
}

/// Why a router's reply is not an acceptance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterReplyError {
    /// The first octet is not [`MAGIC`].
    NotRawSocket {
        /// The first octet received.
        first: u8,
    },
    /// The router refused, with this error code (see [`error_text`]).
    Refused {
        /// The upper 4 bits of the second octet.
        code: u8,
    },
    /// The reply names a serializer this crate does not know.
    UnknownSerializer {
        /// The serializer id (low 4 bits of the second octet).
        id: u8,
    },
    /// The third or fourth octet is not zero.
    ReservedOctets,
}

/// Reads a router's reply (client side). A refusal is reported as such
/// whatever its reserved octets hold; whether the serializer is the one
/// asked for is the caller's check.
pub fn parse_router_reply(octets: [u8; 4]) -> Result<RouterReply, RouterReplyError> {
    if octets[0] != MAGIC {
        return Err(RouterReplyError::NotRawSocket { first: octets[0] });
    }
    let id = octets[1] & 0x0F;
    if id == 0 {
        return Err(RouterReplyError::Refused {
            code: octets[1] >> 4,
        });
    }
    let serializer =
        Serializer::from_rawsocket_id(id).ok_or(RouterReplyError::UnknownSerializer { id })?;
    if octets[2] != 0 || octets[3] != 0 {
        return Err(RouterReplyError::ReservedOctets);
    }
    let exp = octets[1] >> 4;
    Ok(RouterReply {
        serializer,
        exp,
        max_len: max_len(exp),
    })
}

/// The type of a frame (the `TTT` bits of its header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// 0: a WAMP message.
    Message,
    /// 1: a PING; the peer must answer with one PONG echoing the payload.
    Ping,
    /// 2: a PONG.
    Pong,
    /// 3..=7: reserved (the value is kept for error messages).
    Reserved(u8),
}

impl FrameKind {
    /// The 3 `TTT` bits.
    pub const fn bits(self) -> u8 {
        match self {
            FrameKind::Message => 0,
            FrameKind::Ping => 1,
            FrameKind::Pong => 2,
            FrameKind::Reserved(t) => t & 0x07,
        }
    }

    /// The kind of the 3 `TTT` bits (only the low 3 bits of `bits` count).
    pub const fn from_bits(bits: u8) -> FrameKind {
        match bits & 0x07 {
            0 => FrameKind::Message,
            1 => FrameKind::Ping,
            2 => FrameKind::Pong,
            t => FrameKind::Reserved(t),
        }
    }
}

/// A decoded frame header: the payload of `len` octets follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The frame type. A reserved type decodes (so that a reader can check
    /// the length first, as the spec's readers do) and is the reader's to
    /// refuse.
    pub kind: FrameKind,
    /// The payload length, 0..=[`MAX_FRAME`].
    pub len: usize,
}

/// Why a frame header is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameHeaderError {
    /// One of the four `RRRR` bits is set (the first octet is given).
    ReservedBits(u8),
    /// The 25th length bit is set along with other length bits (it may only
    /// say "exactly 16 MiB").
    BadLength,
}

impl std::fmt::Display for FrameHeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameHeaderError::ReservedBits(first) => {
                write!(f, "RawSocket frame header uses reserved bits: {first:02x}")
            }
            FrameHeaderError::BadLength => {
                f.write_str("RawSocket frame length bit 25 set with a non-zero length")
            }
        }
    }
}

impl std::error::Error for FrameHeaderError {}

/// Decodes a frame header.
#[inline]
pub fn decode_header(h: [u8; 4]) -> Result<FrameHeader, FrameHeaderError> {
    if h[0] & 0xF0 != 0 {
        return Err(FrameHeaderError::ReservedBits(h[0]));
    }
    let low = (usize::from(h[1]) << 16) | (usize::from(h[2]) << 8) | usize::from(h[3]);
    let len = if h[0] & 0x08 != 0 {
        if low != 0 {
            return Err(FrameHeaderError::BadLength);
        }
        MAX_FRAME
    } else {
        low
    };
    Ok(FrameHeader {
        kind: FrameKind::from_bits(h[0]),
        len,
    })
}

/// The header of a frame of `kind` with a payload of `len` octets; `None`
/// if `len` is above [`MAX_FRAME`] (RawSocket cannot carry it).
#[inline]
pub fn encode_header(kind: FrameKind, len: usize) -> Option<[u8; 4]> {
    let t = kind.bits();
    match len {
        MAX_FRAME => Some([t | 0x08, 0, 0, 0]),
        l if l < MAX_FRAME => Some([t, (l >> 16) as u8, (l >> 8) as u8, l as u8]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_exponents() {
        assert_eq!(length_exponent(0), 0);
        assert_eq!(length_exponent(512), 0);
        assert_eq!(length_exponent(1023), 0);
        assert_eq!(length_exponent(1024), 1);
        assert_eq!(length_exponent(1 << 20), 11);
        assert_eq!(length_exponent((1 << 24) - 1), 14);
        assert_eq!(length_exponent(1 << 24), 15);
        assert_eq!(length_exponent(usize::MAX), 15);
        for exp in 0..=15 {
            assert_eq!(length_exponent(max_len(exp)), exp);
        }
        assert_eq!(max_len(0), 512);
        assert_eq!(max_len(15), MAX_FRAME);
        assert_eq!(max_len(0xF1), 1024, "only the LENGTH nibble counts");
    }

    #[test]
    fn client_handshakes() {
        // The spec's examples: JSON at 16M is 0xF1, MessagePack at 512 is 0x02.
        assert_eq!(client_handshake(Serializer::Json, 15), [0x7F, 0xF1, 0, 0]);
        assert_eq!(client_handshake(Serializer::MsgPack, 0), [0x7F, 0x02, 0, 0]);
        assert_eq!(
            client_handshake(Serializer::Cbor, 99)[1],
            0xF3,
            "capped at 15"
        );
        assert_eq!(
            parse_client_handshake([0x7F, 0x22, 0, 0]),
            Ok(ClientHandshake {
                serializer: Serializer::MsgPack,
                max_len: 2048
            })
        );
        for s in Serializer::ALL {
            for exp in [0, 7, 15] {
                let hs = parse_client_handshake(client_handshake(s, exp));
                assert_eq!(hs.map(|h| (h.serializer, h.max_len)), Ok((s, max_len(exp))));
            }
        }
    }

    #[test]
    fn client_handshake_errors() {
        let e = parse_client_handshake(*b"GET ");
        assert_eq!(e, Err(ClientHandshakeError::NotRawSocket { first: b'G' }));
        assert_eq!(e.err().and_then(ClientHandshakeError::code), None);
        // Reserved octets are checked before the serializer.
        for hs in [
            [0x7F, 0xF1, 0, 1],
            [0x7F, 0xF1, 1, 0],
            [0x7F, 0xF9, 0x80, 0],
        ] {
            let e = parse_client_handshake(hs);
            assert_eq!(e, Err(ClientHandshakeError::ReservedBits), "{hs:?}");
            assert_eq!(e.err().and_then(ClientHandshakeError::code), Some(3));
        }
        // 0 is illegal, 4 (UBJSON) and 5 (FlatBuffers) are not spoken here.
        for id in [0u8, 4, 5, 6, 15] {
            let e = parse_client_handshake([0x7F, 0xF0 | id, 0, 0]);
            assert_eq!(e, Err(ClientHandshakeError::SerializerUnsupported { id }));
            assert_eq!(e.err().and_then(ClientHandshakeError::code), Some(1));
        }
    }

    #[test]
    fn router_replies() {
        assert_eq!(accept(Serializer::MsgPack, 11), [0x7F, 0xB2, 0, 0]);
        assert_eq!(accept(Serializer::Json, 200), [0x7F, 0xF1, 0, 0]);
        assert_eq!(refusal(ERR_SERIALIZER_UNSUPPORTED), [0x7F, 0x10, 0, 0]);
        assert_eq!(refusal(ERR_RESERVED_BITS), [0x7F, 0x30, 0, 0]);
        assert_eq!(
            parse_router_reply([0x7F, 0xB2, 0, 0]),
            Ok(RouterReply {
                serializer: Serializer::MsgPack,
                exp: 11,
                max_len: 1 << 20
            })
        );
        for code in 0..=15 {
            assert_eq!(
                parse_router_reply(refusal(code)),
                Err(RouterReplyError::Refused { code })
            );
        }
        // A refusal is a refusal whatever its reserved octets hold.
        assert_eq!(
            parse_router_reply([0x7F, 0x40, 1, 1]),
            Err(RouterReplyError::Refused { code: 4 })
        );
        assert_eq!(
            parse_router_reply([0x7E, 0xF1, 0, 0]),
            Err(RouterReplyError::NotRawSocket { first: 0x7E })
        );
        assert_eq!(
            parse_router_reply([0x7F, 0xF5, 0, 0]),
            Err(RouterReplyError::UnknownSerializer { id: 5 })
        );
        assert_eq!(
            parse_router_reply([0x7F, 0xF1, 0, 1]),
            Err(RouterReplyError::ReservedOctets)
        );
        assert_eq!(
            error_text(ERR_MAX_CONNECTIONS),
            "maximum connection count reached"
        );
        assert_eq!(error_text(9), "currently undefined");
    }

    #[test]
    fn frame_headers_encode() {
        let h = |k, l| encode_header(k, l);
        assert_eq!(h(FrameKind::Message, 0), Some([0, 0, 0, 0]));
        assert_eq!(h(FrameKind::Message, 0x010203), Some([0, 1, 2, 3]));
        assert_eq!(h(FrameKind::Ping, 4), Some([1, 0, 0, 4]));
        assert_eq!(h(FrameKind::Pong, 0x012345), Some([2, 0x01, 0x23, 0x45]));
        // The spec's examples: 16M-1 and exactly 16M.
        assert_eq!(
            h(FrameKind::Message, MAX_FRAME - 1),
            Some([0, 0xFF, 0xFF, 0xFF])
        );
        assert_eq!(h(FrameKind::Message, MAX_FRAME), Some([0x08, 0, 0, 0]));
        assert_eq!(h(FrameKind::Pong, MAX_FRAME), Some([0x0A, 0, 0, 0]));
        assert_eq!(h(FrameKind::Message, MAX_FRAME + 1), None);
        assert_eq!(h(FrameKind::Message, usize::MAX), None);
    }

    #[test]
    fn frame_headers_decode() {
        let d = decode_header;
        let ok = |kind, len| Ok(FrameHeader { kind, len });
        assert_eq!(d([0, 1, 2, 3]), ok(FrameKind::Message, 0x010203));
        assert_eq!(d([1, 0, 0, 0]), ok(FrameKind::Ping, 0));
        assert_eq!(d([2, 0, 0, 5]), ok(FrameKind::Pong, 5));
        assert_eq!(
            d([0, 0xFF, 0xFF, 0xFF]),
            ok(FrameKind::Message, MAX_FRAME - 1)
        );
        assert_eq!(d([0x08, 0, 0, 0]), ok(FrameKind::Message, MAX_FRAME));
        assert_eq!(d([0x09, 0, 0, 0]), ok(FrameKind::Ping, MAX_FRAME));
        // Reserved types decode; the reader refuses them.
        for t in 3..=7u8 {
            assert_eq!(d([t, 0, 0, 1]), ok(FrameKind::Reserved(t), 1));
            assert_eq!(FrameKind::Reserved(t).bits(), t);
        }
        // Reserved bits, alone or with anything else.
        for first in [0x10u8, 0x20, 0x40, 0x80, 0xF0, 0x18, 0xFF] {
            assert_eq!(
                d([first, 0, 0, 0]),
                Err(FrameHeaderError::ReservedBits(first))
            );
        }
        // The 25th bit says exactly 16M: with other length bits it is malformed.
        for low in [[0, 0, 1], [0x80, 0, 0], [0xFF, 0xFF, 0xFF]] {
            assert_eq!(
                d([0x08, low[0], low[1], low[2]]),
                Err(FrameHeaderError::BadLength)
            );
        }
        assert!(FrameHeaderError::ReservedBits(0x80)
            .to_string()
            .contains("reserved bits: 80"));
    }

    #[test]
    fn frame_headers_round_trip() {
        for kind in [FrameKind::Message, FrameKind::Ping, FrameKind::Pong] {
            for len in [0, 1, 255, 256, 65535, 65536, MAX_FRAME - 1, MAX_FRAME] {
                let h = encode_header(kind, len).expect("fits");
                assert_eq!(decode_header(h), Ok(FrameHeader { kind, len }));
            }
        }
        for bits in 0..=255u8 {
            assert_eq!(FrameKind::from_bits(bits).bits(), bits & 0x07);
        }
    }
}
