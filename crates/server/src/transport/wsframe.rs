//! WebSocket framing (RFC 6455, section 5), the server's side, without I/O:
//! [`Decoder`] takes frames off the connection's read buffer (which the
//! reader owns and sizes, see `websocket::read_loop`), and [`header`]
//! encodes the header of a frame the writer sends. tungstenite's frame
//! header codec parses and formats the headers; this file adds what a
//! server must check (masking, control frame rules, fragmentation, UTF-8 of
//! text messages as their bytes arrive, close codes) and the message size
//! limit, checked on each frame's header before its payload is buffered.
//!
//! Why not a WebSocket crate's stream: the one the router used
//! (tokio-websockets) reads through a buffer of a fixed 8 KiB that every
//! idle connection held (docs/BENCHMARKS.md, "Memory per idle session").

use std::io::Cursor;

use bytes::{Buf, Bytes, BytesMut};
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// A whole message: `text` ones are valid UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub text: bool,
    pub payload: Bytes,
}

/// What the peer sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    Message(Message),
    /// A PING and its payload (a copy: it does not pin the read buffer).
    Ping(Bytes),
    Pong,
    /// The peer's CLOSE, with its status code if it gave one.
    Close(Option<u16>),
}

/// Why the connection is closed: the peer broke the protocol.
#[derive(Debug, PartialEq, Eq)]
pub enum Violation {
    /// Closed with 1002.
    Protocol(String),
    /// A text message (or a CLOSE's reason) is not UTF-8: closed with 1007.
    InvalidUtf8,
    /// A message of at least `len` bytes, over `max`: closed with 1009.
    TooBig { len: usize, max: usize },
}

impl Violation {
    /// The status code of the CLOSE that answers it.
    pub fn code(&self) -> u16 {
        match self {
            Violation::Protocol(_) => 1002,
            Violation::InvalidUtf8 => 1007,
            Violation::TooBig { .. } => 1009,
        }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Violation::Protocol(why) => write!(f, "WebSocket protocol error: {why}"),
            Violation::InvalidUtf8 => write!(f, "invalid UTF-8 in a text message"),
            Violation::TooBig { len, max } => write!(
                f,
                "message of at least {len} bytes exceeds the maximum message size of {max} bytes"
            ),
        }
    }
}

fn protocol(why: &str) -> Violation {
    Violation::Protocol(why.to_string())
}

/// Most bytes a control frame carries (RFC 6455, 5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Decodes the frames a client sends. Holds nothing between messages but a
/// few counters: the bytes are the caller's buffer.
#[derive(Debug)]
pub struct Decoder {
    max_message: usize,
    /// A message sent in several frames, until its last one: text or
    /// binary, and the payload so far (a copy, off the read buffer).
    fragments: Option<(bool, BytesMut)>,
    /// Bytes of the current text frame's payload already unmasked and
    /// checked (the frame is still arriving).
    processed: usize,
    utf8: Utf8,
}

impl Decoder {
    pub fn new(max_message: usize) -> Decoder {
        Decoder {
            max_message,
            fragments: None,
            processed: 0,
            utf8: Utf8::default(),
        }
    }

    /// Sets the largest message taken from now on (a frame announcing more,
    /// together with the fragments before it, is `TooBig`).
    pub fn set_max_message(&mut self, max_message: usize) {
        self.max_message = max_message;
    }

    /// The next event whose frames are all in `buf` (taken off it), or
    /// None until more bytes arrive (`buf` then has room reserved for the
    /// rest of a frame whose header announced its length).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Event>, Violation> {
        loop {
            let mut cursor = Cursor::new(&buf[..]);
            let (header, len) = match FrameHeader::parse(&mut cursor) {
                Ok(Some(h)) => h,
                Ok(None) => return Ok(None),
                // The only error parsing a buffer can give: a reserved opcode.
                Err(e) => return Err(Violation::Protocol(e.to_string())),
            };
            let header_len = cursor.position() as usize;
            if header.rsv1 || header.rsv2 || header.rsv3 {
                return Err(protocol("reserved bits set (no extension was negotiated)"));
            }
            let Some(mask) = header.mask else {
                return Err(protocol("unmasked frame from a client"));
            };
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            let text = match header.opcode {
                OpCode::Control(control) => {
                    return self.control(buf, control, header.is_final, header_len, len, mask)
                }
                OpCode::Data(data) => match (data, &self.fragments) {
                    (Data::Continue, Some((text, _))) => *text,
                    (Data::Continue, None) => {
                        return Err(protocol("continuation frame without a message to continue"))
                    }
                    (Data::Text | Data::Binary, Some(_)) => {
                        return Err(protocol(
                            "new message before the last frame of a fragmented one",
                        ))
                    }
                    (Data::Text, None) => true,
                    (Data::Binary, None) => false,
                    (Data::Reserved(op), _) => {
                        return Err(Violation::Protocol(format!("reserved opcode {op}")))
                    }
                },
            };
            let so_far = self.fragments.as_ref().map_or(0, |(_, f)| f.len());
            if len > self.max_message.saturating_sub(so_far) {
                return Err(Violation::TooBig {
                    len: so_far.saturating_add(len),
                    max: self.max_message,
                });
            }
            let available = (buf.len() - header_len).min(len);
            if text && available > self.processed {
                // Checked as it arrives: a peer learns at once that its text
                // is not UTF-8, not after sending all of it.
                let part = &mut buf[header_len + self.processed..header_len + available];
                unmask(part, mask, self.processed);
                self.utf8.feed(part)?;
                self.processed = available;
            }
            if available < len {
                buf.reserve(header_len + len - buf.len());
                return Ok(None);
            }
            buf.advance(header_len);
            let mut payload = buf.split_to(len);
            if !text {
                unmask(&mut payload, mask, 0);
            }
            self.processed = 0;
            if !header.is_final {
                match &mut self.fragments {
                    Some((_, so_far)) => so_far.extend_from_slice(&payload),
                    None => self.fragments = Some((text, BytesMut::from(&payload[..]))),
                }
                continue;
            }
            if text {
                self.utf8.finish()?;
            }
            let payload = match self.fragments.take() {
                None => payload.freeze(),
                Some((_, mut so_far)) => {
                    so_far.extend_from_slice(&payload);
                    so_far.freeze()
                }
            };
            return Ok(Some(Event::Message(Message { text, payload })));
        }
    }

    fn control(
        &mut self,
        buf: &mut BytesMut,
        control: Control,
        fin: bool,
        header_len: usize,
        len: usize,
        mask: [u8; 4],
    ) -> Result<Option<Event>, Violation> {
        if !fin {
            return Err(protocol("fragmented control frame"));
        }
        if len > MAX_CONTROL_PAYLOAD {
            return Err(protocol("control frame longer than 125 bytes"));
        }
        if buf.len() < header_len + len {
            return Ok(None);
        }
        buf.advance(header_len);
        let mut payload = buf.split_to(len);
        unmask(&mut payload, mask, 0);
        match control {
            Control::Ping => Ok(Some(Event::Ping(Bytes::copy_from_slice(&payload)))),
            Control::Pong => Ok(Some(Event::Pong)),
            Control::Close => match &payload[..] {
                [] => Ok(Some(Event::Close(None))),
                [_] => Err(protocol("CLOSE with a 1-byte payload")),
                [hi, lo, reason @ ..] => {
                    let code = u16::from_be_bytes([*hi, *lo]);
                    if !CloseCode::from(code).is_allowed() {
                        return Err(Violation::Protocol(format!(
                            "CLOSE with the invalid status code {code}"
                        )));
                    }
                    if std::str::from_utf8(reason).is_err() {
                        return Err(Violation::InvalidUtf8);
                    }
                    Ok(Some(Event::Close(Some(code))))
                }
            },
            Control::Reserved(op) => Err(Violation::Protocol(format!("reserved opcode {op}"))),
        }
    }
}

/// The header of a frame the server sends: final, unmasked.
#[derive(Clone, Copy, Debug)]
pub struct Header {
    bytes: [u8; 10],
    len: u8,
}

impl Header {
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// The opcodes the server sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Text,
    Binary,
    Ping,
    Pong,
    Close,
}

/// Encodes the header of a frame of `kind` carrying `len` bytes: FIN and
/// the opcode, then the length in 7 bits, or 126 and 16 bits, or 127 and 64
/// bits (RFC 6455, 5.2); no mask. Written here rather than through
/// tungstenite's `FrameHeader::format` (an `io::Write` per field): the
/// writer encodes one per frame, ten per published event in a 1->10 fan-out
/// (`server_headers_match_tungstenite` checks both agree).
pub fn header(kind: Kind, len: usize) -> Header {
    let opcode: u8 = match kind {
        Kind::Text => 0x1,
        Kind::Binary => 0x2,
        Kind::Close => 0x8,
        Kind::Ping => 0x9,
        Kind::Pong => 0xA,
    };
    let mut bytes = [0u8; 10];
    bytes[0] = 0x80 | opcode;
    let len = len as u64;
    let n = if len < 126 {
        bytes[1] = len as u8;
        2
    } else if len <= u64::from(u16::MAX) {
        bytes[1] = 126;
        bytes[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        bytes[1] = 127;
        bytes[2..10].copy_from_slice(&len.to_be_bytes());
        10
    };
    Header { bytes, len: n }
}

/// The payload of a CLOSE: `code`, then `reason` cut to fit a control frame
/// (at a character boundary).
pub fn close_payload(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut p = Vec::with_capacity(2 + end);
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(&reason.as_bytes()[..end]);
    p.into()
}

/// Unmasks `data`, which starts `offset` bytes into its frame's payload.
fn unmask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut mask = mask;
    mask.rotate_left(offset % 4);
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

/// Checks a text message's UTF-8 piece by piece: a character may be split
/// between pieces (frames, or reads of one frame).
#[derive(Debug, Default)]
struct Utf8 {
    /// The start of a character the last piece ended in.
    carry: [u8; 4],
    carried: u8,
}

impl Utf8 {
    fn feed(&mut self, mut bytes: &[u8]) -> Result<(), Violation> {
        if self.carried > 0 {
            let have = usize::from(self.carried);
            let need = match self.carry[0] {
                0xF0..=0xF7 => 4,
                0xE0..=0xEF => 3,
                _ => 2,
            };
            let take = (need - have).min(bytes.len());
            self.carry[have..have + take].copy_from_slice(&bytes[..take]);
            self.carried += take as u8;
            bytes = &bytes[take..];
            match std::str::from_utf8(&self.carry[..usize::from(self.carried)]) {
                Ok(_) => self.carried = 0,
                Err(e) if e.error_len().is_some() => return Err(Violation::InvalidUtf8),
                // Still incomplete: this piece is used up.
                Err(_) => return Ok(()),
            }
        }
        match std::str::from_utf8(bytes) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(Violation::InvalidUtf8),
            Err(e) => {
                let tail = &bytes[e.valid_up_to()..];
                self.carry[..tail.len()].copy_from_slice(tail);
                self.carried = tail.len() as u8;
                Ok(())
            }
        }
    }

    /// The message ended: no character may be left unfinished.
    fn finish(&mut self) -> Result<(), Violation> {
        if self.carried > 0 {
            self.carried = 0;
            return Err(Violation::InvalidUtf8);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A masked client frame.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![first];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&MASK);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        f
    }

    fn decode_all(d: &mut Decoder, bytes: &[u8]) -> Result<Vec<Event>, Violation> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(e) = d.decode(&mut buf)? {
            out.push(e);
        }
        Ok(out)
    }

    fn text(s: &str) -> Event {
        Event::Message(Message {
            text: true,
            payload: Bytes::copy_from_slice(s.as_bytes()),
        })
    }

    #[test]
    fn messages_of_every_length_format_unmask_fed_byte_by_byte() {
        for n in [0usize, 5, 125, 126, 1000, 65535, 65536, 70_000] {
            let payload: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            let wire = frame(0x82, &payload);
            let mut d = Decoder::new(1 << 20);
            // All at once.
            assert_eq!(
                decode_all(&mut d, &wire).unwrap(),
                vec![Event::Message(Message {
                    text: false,
                    payload: payload.clone().into()
                })]
            );
            // In pieces of 7 bytes.
            let mut buf = BytesMut::new();
            let mut got = None;
            for piece in wire.chunks(7) {
                buf.extend_from_slice(piece);
                if let Some(e) = d.decode(&mut buf).unwrap() {
                    got = Some(e);
                }
            }
            assert_eq!(
                got,
                Some(Event::Message(Message {
                    text: false,
                    payload: payload.into()
                }))
            );
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn fragments_with_a_ping_between_make_one_message() {
        let mut wire = frame(0x01, "héll".as_bytes());
        wire.extend(frame(0x89, b"p"));
        wire.extend(frame(0x00, "o wö".as_bytes()));
        wire.extend(frame(0x80, "rld".as_bytes()));
        let mut d = Decoder::new(1 << 20);
        assert_eq!(
            decode_all(&mut d, &wire).unwrap(),
            vec![Event::Ping(Bytes::from_static(b"p")), text("héllo wörld")]
        );
    }

    #[test]
    fn invalid_utf8_fails_as_soon_as_its_bytes_arrive() {
        // "κόσμε" then 0xf4 0x90 (beyond U+10FFFF), in a frame of which
        // only the first bytes arrived: the violation is known already.
        let mut payload = "κόσμε".as_bytes().to_vec();
        payload.extend_from_slice(&[0xf4, 0x90, 0x80, 0x80, b'x', b'y']);
        let wire = frame(0x81, &payload);
        let cut = wire.len() - 3;
        let mut d = Decoder::new(1 << 20);
        let mut buf = BytesMut::from(&wire[..cut]);
        assert_eq!(d.decode(&mut buf), Err(Violation::InvalidUtf8));
        // A character split between frames is fine; one left unfinished is not.
        let (a, b) = "€".as_bytes().split_at(1);
        let mut wire = frame(0x01, a);
        wire.extend(frame(0x80, b));
        assert_eq!(
            decode_all(&mut Decoder::new(100), &wire).unwrap(),
            vec![text("€")]
        );
        assert_eq!(
            decode_all(&mut Decoder::new(100), &frame(0x81, a)),
            Err(Violation::InvalidUtf8)
        );
    }

    #[test]
    fn violations_and_their_close_codes() {
        let cases: Vec<(Vec<u8>, u16)> = vec![
            // Unmasked.
            (vec![0x81, 0x01, b'a'], 1002),
            // Reserved bit.
            (frame(0xc1, b"a"), 1002),
            // Reserved opcode.
            (frame(0x83, b"a"), 1002),
            // Fragmented PING.
            (frame(0x09, b"a"), 1002),
            // Continuation of nothing.
            (frame(0x80, b"a"), 1002),
            // A PING of 126 bytes.
            (frame(0x89, &[0; 126]), 1002),
            // CLOSE with a 1-byte payload, with a reserved code.
            (frame(0x88, &[3]), 1002),
            (frame(0x88, &1005u16.to_be_bytes()), 1002),
            // CLOSE reason not UTF-8.
            (frame(0x88, &[3, 232, 0xff]), 1007),
            // Over the limit, known from the header alone.
            (frame(0x82, &[0; 101])[..8].to_vec(), 1009),
        ];
        for (wire, code) in cases {
            let got = decode_all(&mut Decoder::new(100), &wire);
            assert_eq!(got.map_err(|v| v.code()), Err(code), "{wire:x?}");
        }
        // A message over the limit in fragments.
        let mut wire = frame(0x02, &[0; 60]);
        wire.extend(frame(0x80, &[0; 41]));
        assert_eq!(
            decode_all(&mut Decoder::new(100), &wire),
            Err(Violation::TooBig { len: 101, max: 100 })
        );
        let mut wire = frame(0x02, &[0; 60]);
        wire.extend(frame(0x80, &[0; 40]));
        assert_eq!(decode_all(&mut Decoder::new(100), &wire).unwrap().len(), 1);
    }

    #[test]
    fn close_frames() {
        let mut d = Decoder::new(100);
        assert_eq!(
            decode_all(&mut d, &frame(0x88, &[])).unwrap(),
            vec![Event::Close(None)]
        );
        let mut p = 4000u16.to_be_bytes().to_vec();
        p.extend_from_slice("bye ✓".as_bytes());
        assert_eq!(
            decode_all(&mut d, &frame(0x88, &p)).unwrap(),
            vec![Event::Close(Some(4000))]
        );
        let long = "é".repeat(100);
        let payload = close_payload(1009, &long);
        assert!(payload.len() <= MAX_CONTROL_PAYLOAD);
        assert!(std::str::from_utf8(&payload[2..]).is_ok());
    }

    #[test]
    fn server_headers() {
        assert_eq!(header(Kind::Text, 5).as_bytes(), &[0x81, 5]);
        assert_eq!(header(Kind::Binary, 300).as_bytes(), &[0x82, 126, 1, 44]);
        assert_eq!(
            header(Kind::Close, 70_000).as_bytes(),
            &[0x88, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]
        );
        assert_eq!(header(Kind::Pong, 0).as_bytes(), &[0x8a, 0]);
        assert_eq!(header(Kind::Ping, 1).as_bytes(), &[0x89, 1]);
    }

    /// The hand-written encoder gives tungstenite's bytes for every kind,
    /// at and around each length boundary.
    #[test]
    fn server_headers_match_tungstenite() {
        let kinds = [
            (Kind::Text, OpCode::Data(Data::Text)),
            (Kind::Binary, OpCode::Data(Data::Binary)),
            (Kind::Ping, OpCode::Control(Control::Ping)),
            (Kind::Pong, OpCode::Control(Control::Pong)),
            (Kind::Close, OpCode::Control(Control::Close)),
        ];
        let lens = [
            0usize,
            1,
            64,
            125,
            126,
            127,
            255,
            256,
            65_535,
            65_536,
            1 << 24,
            1 << 40,
        ];
        for (kind, opcode) in kinds {
            for len in lens {
                let h = FrameHeader {
                    is_final: true,
                    rsv1: false,
                    rsv2: false,
                    rsv3: false,
                    opcode,
                    mask: None,
                };
                let mut expected = Vec::new();
                h.format(len as u64, &mut expected).unwrap();
                assert_eq!(
                    header(kind, len).as_bytes(),
                    &expected[..],
                    "{kind:?} {len}"
                );
            }
        }
    }
}
