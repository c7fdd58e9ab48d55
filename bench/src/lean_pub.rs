//! A lean WAMP publisher for the fan-out bench (`pubsub --lean-publisher`),
//! as lean as the NATS one (`nats.rs`, PUB+PING written by hand).
//!
//! With lean subscribers on both sides, the WAMP load generator still
//! burnt more CPU per delivery than the NATS one: its publisher was a
//! `switchyard_client::Session` (a writer and a reader task, channels, a
//! future per publish, a full decode of every PUBLISHED). Here the
//! publisher is one TCP stream: the session is opened by
//! [`crate::lean::Wire`] (handshake, HELLO/WELCOME, checked), every PUBLISH
//! (acknowledge=true) is encoded once with request id 0 and only the
//! request id is spliced in per publish (then framed, and masked for
//! WebSocket); K are kept in flight, written in one go, and the PUBLISHED
//! answers are parsed in place.
//!
//! Every answer is checked: it must be a whole frame holding
//! `[17, request, publication]` for a request we sent and that was not
//! answered yet; anything else (ERROR, another message, a close, a ping, a
//! malformed frame) is an error and stops the publisher.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use switchyard_proto::rawsocket::{self, FrameKind};
use switchyard_proto::{Dict, Message, Payload, Serializer, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::lean::{self, Wire};
use crate::lean_sub::{head, Arity, EventParser};

/// The WAMP message type of PUBLISHED.
const PUBLISHED: u64 = 17;
/// Room kept free in the read buffer before each read.
const READ_ROOM: usize = 16 * 1024;

/// A PUBLISH with acknowledge=true, split around its request id.
struct PublishTemplate {
    ser: Serializer,
    ws: bool,
    /// The body up to the request id (`[16,` in JSON).
    before: Vec<u8>,
    /// The body after it (options, topic, arguments).
    after: Vec<u8>,
}

impl PublishTemplate {
    fn new(ser: Serializer, ws: bool, topic: &str, payload_len: usize) -> Result<Self, String> {
        let body = Message::Publish {
            request: 0,
            options: Dict::new().with("acknowledge", true),
            topic: topic.to_owned(),
            payload: Payload::values(vec![Value::Str("x".repeat(payload_len))], None),
        }
        .encode(ser)
        .map_err(|e| e.to_string())?;
        // Request id 0 is one byte in every serializer, right after the
        // array's head and the type 16.
        let at = match ser {
            Serializer::Json => 4,
            Serializer::MsgPack | Serializer::Cbor => 2,
        };
        let zero = if ser == Serializer::Json { b'0' } else { 0 };
        if body.get(at) != Some(&zero) {
            return Err(format!("unexpected PUBLISH encoding {:02x?}", &body[..]));
        }
        Ok(PublishTemplate {
            ser,
            ws,
            before: body[..at].to_vec(),
            after: body[at + 1..].to_vec(),
        })
    }

    /// Appends the framed PUBLISH of `request` to `out`.
    fn write(&self, request: u64, out: &mut Vec<u8>) {
        let mut id = [0u8; 20];
        let id = uint(self.ser, request, &mut id);
        let len = self.before.len() + id.len() + self.after.len();
        let parts = [&self.before[..], id, &self.after[..]];
        if !self.ws {
            // RawSocket: a message is at most 16 MiB; ours is ~100 bytes.
            if let Some(h) = rawsocket::encode_header(FrameKind::Message, len) {
                out.extend_from_slice(&h);
            }
            for p in parts {
                out.extend_from_slice(p);
            }
            return;
        }
        let opcode = if self.ser.is_binary() { 0x2 } else { 0x1 };
        lean::ws_frame_into(out, opcode, &parts);
    }
}

/// `v` encoded as an unsigned integer of `ser`, in `buf`.
fn uint(ser: Serializer, v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let be = v.to_be_bytes();
    let (n, tag) = match ser {
        Serializer::Json => {
            let mut i = buf.len();
            let mut x = v;
            loop {
                i -= 1;
                buf[i] = b'0' + (x % 10) as u8;
                x /= 10;
                if x == 0 {
                    return &buf[i..];
                }
            }
        }
        Serializer::MsgPack => match v {
            0..=0x7f => (0, None),
            0x80..=0xff => (1, Some(0xcc)),
            0x100..=0xffff => (2, Some(0xcd)),
            0x1_0000..=0xffff_ffff => (4, Some(0xce)),
            _ => (8, Some(0xcf)),
        },
        Serializer::Cbor => match v {
            0..=0x17 => (0, None),
            0x18..=0xff => (1, Some(0x18)),
            0x100..=0xffff => (2, Some(0x19)),
            0x1_0000..=0xffff_ffff => (4, Some(0x1a)),
            _ => (8, Some(0x1b)),
        },
    };
    match tag {
        None => {
            buf[0] = be[7];
            &buf[..1]
        }
        Some(t) => {
            buf[0] = t;
            buf[1..=n].copy_from_slice(&be[8 - n..]);
            &buf[..=n]
        }
    }
}

/// Takes the PUBLISHED answers out of the publisher's stream.
pub struct PublishedParser {
    /// The framing (WebSocket or RawSocket) and serializer; its
    /// subscription is unused.
    frames: EventParser,
}

impl PublishedParser {
    pub fn new(ws: bool, ser: Serializer) -> Self {
        PublishedParser {
            frames: EventParser {
                ws,
                ser,
                subscription: 0,
            },
        }
    }

    /// Consumes every whole frame at the front of `buf`, calling
    /// `on_published(request, publication)` for each PUBLISHED; a partial
    /// frame stays in `buf`. Anything else is an error (the answers before
    /// it have been passed on).
    pub fn parse(
        &self,
        buf: &mut BytesMut,
        mut on_published: impl FnMut(u64, u64) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut at = 0;
        let r = loop {
            match self.frames.frame(&buf[at..]) {
                Ok(Some((used, body))) => {
                    match head(self.frames.ser, body, Arity::Three) {
                        Some((PUBLISHED, request, publication)) => {
                            if let Err(e) = on_published(request, publication) {
                                break Err(e);
                            }
                        }
                        _ => break Err(self.not_published(body)),
                    }
                    at += used;
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        bytes::Buf::advance(buf, at);
        r
    }

    fn not_published(&self, body: &[u8]) -> String {
        match Message::decode(self.frames.ser, &Bytes::copy_from_slice(body)) {
            Ok(Message::Error { error, .. }) => format!("PUBLISH answered with ERROR {error}"),
            _ => {
                let shown = &body[..body.len().min(120)];
                let text = match self.frames.ser {
                    Serializer::Json => String::from_utf8_lossy(shown).into_owned(),
                    _ => format!("{shown:02x?}"),
                };
                format!("not a PUBLISHED: {text}")
            }
        }
    }
}

/// What the lean publisher did.
pub struct Published {
    /// (sequence, publication) of each acknowledged publish, in answer order.
    pub acked: Vec<(u64, u64)>,
    /// Failed publishes (the lean publisher stops at its first error).
    pub errors: u64,
    pub first_error: Option<String>,
    pub timed_out: bool,
}

impl Published {
    pub fn fail(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }
}

/// An open publishing session.
pub struct LeanPublisher {
    io: TcpStream,
    buf: BytesMut,
    template: PublishTemplate,
    parser: PublishedParser,
}

impl LeanPublisher {
    /// Opens a session on `wire` for publishing `payload_len` x's to `topic`.
    pub async fn open(wire: &Wire, topic: &str, payload_len: usize) -> Result<Self, String> {
        let s = wire.open().await?;
        let (io, buf, ws) = s.into_parts();
        let ser = wire.serializer();
        Ok(LeanPublisher {
            io,
            buf,
            template: PublishTemplate::new(ser, ws, topic, payload_len)?,
            parser: PublishedParser::new(ws, ser),
        })
    }

    /// Publishes `n` events (acknowledge=true) keeping `window` unanswered;
    /// publish `seq` has request id `seq + 1`.
    pub async fn publish_all(&mut self, n: u64, window: usize, deadline: Instant) -> Published {
        let LeanPublisher {
            io,
            buf,
            template,
            parser,
        } = self;
        let window = window.max(1) as u64;
        let mut answered = vec![false; n as usize];
        let mut done = Published {
            acked: Vec::with_capacity(n as usize),
            errors: 0,
            first_error: None,
            timed_out: false,
        };
        let (mut sent, mut acks) = (0u64, 0u64);
        let mut out = Vec::with_capacity(64 * 1024);
        while acks < n {
            out.clear();
            while sent < n && sent - acks < window {
                template.write(sent + 1, &mut out);
                sent += 1;
            }
            if !out.is_empty() {
                if let Err(e) = io.write_all(&out).await {
                    done.fail(format!("publisher write: {e}"));
                    return done;
                }
            }
            let r = parser.parse(buf, |request, publication| {
                let seq = request.wrapping_sub(1);
                match answered.get_mut(seq as usize) {
                    Some(a) if seq < sent && !*a => {
                        *a = true;
                        done.acked.push((seq, publication));
                        acks += 1;
                        Ok(())
                    }
                    Some(_) if seq < sent => Err(format!("request {request} answered twice")),
                    _ => Err(format!("PUBLISHED for request {request}, not ours")),
                }
            });
            if let Err(e) = r {
                done.fail(e);
                return done;
            }
            if acks >= n || (sent - acks < window && sent < n) {
                continue;
            }
            if buf.capacity() - buf.len() < READ_ROOM / 4 {
                buf.reserve(READ_ROOM);
            }
            match tokio::time::timeout_at(deadline.into(), io.read_buf(buf)).await {
                Err(_) => {
                    done.timed_out = true;
                    return done;
                }
                Ok(Ok(0)) => {
                    done.fail("the router closed the publisher's connection".into());
                    return done;
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    done.fail(format!("publisher read: {e}"));
                    return done;
                }
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server's (unmasked) WebSocket frame or a RawSocket frame of `body`.
    fn frame(ws: bool, ser: Serializer, body: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        if ws {
            f.push(if ser.is_binary() { 0x82 } else { 0x81 });
            assert!(body.len() < 126);
            f.push(body.len() as u8);
        } else {
            f.extend_from_slice(&rawsocket::encode_header(FrameKind::Message, body.len()).unwrap());
        }
        f.extend_from_slice(body);
        f
    }

    fn published(ws: bool, ser: Serializer, request: u64, publication: u64) -> Vec<u8> {
        let body = Message::Published {
            request,
            publication,
        }
        .encode(ser)
        .unwrap();
        frame(ws, ser, &body)
    }

    /// Feeds `stream` in pieces of `step` bytes; what was passed on, and
    /// the first error.
    fn feed(
        p: &PublishedParser,
        stream: &[u8],
        step: usize,
    ) -> (Vec<(u64, u64)>, Result<(), String>) {
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for piece in stream.chunks(step) {
            buf.extend_from_slice(piece);
            let r = p.parse(&mut buf, |r, p| {
                got.push((r, p));
                Ok(())
            });
            if let Err(e) = r {
                return (got, Err(e));
            }
        }
        assert!(buf.is_empty(), "{} bytes left over", buf.len());
        (got, Ok(()))
    }

    const SERS: [(bool, Serializer); 5] = [
        (true, Serializer::Json),
        (false, Serializer::Json),
        (true, Serializer::MsgPack),
        (false, Serializer::Cbor),
        (true, Serializer::Cbor),
    ];

    #[test]
    fn published_split_anywhere_are_all_taken() {
        for (ws, ser) in SERS {
            let want: Vec<(u64, u64)> = vec![
                (1, 7),
                (2, 300),
                (127, 70_000),
                (128, 5_000_000_000),
                (100_000, (1 << 53) - 1),
            ];
            let stream: Vec<u8> = want
                .iter()
                .flat_map(|&(r, p)| published(ws, ser, r, p))
                .collect();
            let p = PublishedParser::new(ws, ser);
            for step in [1, 2, 3, 5, stream.len()] {
                let (got, r) = feed(&p, &stream, step);
                assert_eq!(r, Ok(()), "{ser} ws={ws} step {step}");
                assert_eq!(got, want, "{ser} ws={ws} step {step}");
            }
        }
    }

    #[test]
    fn anything_but_published_is_an_error() {
        let ser = Serializer::Json;
        let p = PublishedParser::new(true, ser);
        let ok = published(true, ser, 1, 100);
        let error = Message::Error {
            request_type: 16,
            request: 2,
            details: Dict::new(),
            error: "wamp.error.not_authorized".into(),
            payload: Payload::empty(),
        }
        .encode(ser)
        .unwrap();
        let event = Message::Event {
            subscription: 5,
            publication: 3,
            details: Dict::new(),
            payload: Payload::empty(),
        }
        .encode(ser)
        .unwrap();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (frame(true, ser, &error), "ERROR wamp.error.not_authorized"),
            (frame(true, ser, &event), "not a PUBLISHED"),
            (frame(true, ser, b"[17,2]"), "not a PUBLISHED"),
            (frame(true, ser, b"[17,2,3,{}]"), "not a PUBLISHED"),
            (frame(true, ser, b"[17,2,3]x"), "not a PUBLISHED"),
            (frame(true, ser, b"[17,2,-3]"), "not a PUBLISHED"),
            (vec![0x89, 0x00], "first octet 0x89"),
            (vec![0x88, 0x02, 0x03, 0xe8], "closed"),
        ];
        for (bad, what) in cases {
            let mut stream = ok.clone();
            stream.extend(&bad);
            for step in [1, stream.len()] {
                let (got, r) = feed(&p, &stream, step);
                assert_eq!(got, vec![(1, 100)], "{what}");
                let e = r.err().unwrap_or_default();
                assert!(e.contains(what), "{what}: {e}");
            }
        }
        // Binary serializers: a 4-element array is not a PUBLISHED either.
        for ser in [Serializer::MsgPack, Serializer::Cbor] {
            let p = PublishedParser::new(false, ser);
            let (got, r) = feed(&p, &frame(false, ser, &event_body(ser)), 1);
            assert!(got.is_empty());
            assert!(r.err().unwrap_or_default().contains("not a PUBLISHED"));
        }
        // The callback's verdict stops the parse.
        let stream = [published(true, ser, 1, 1), published(true, ser, 1, 2)].concat();
        let mut buf = BytesMut::from(&stream[..]);
        let mut seen = Vec::new();
        let r = p.parse(&mut buf, |r, _| {
            if seen.contains(&r) {
                return Err("twice".into());
            }
            seen.push(r);
            Ok(())
        });
        assert_eq!(r, Err("twice".into()));
    }

    fn event_body(ser: Serializer) -> Vec<u8> {
        Message::Event {
            subscription: 5,
            publication: 3,
            details: Dict::new(),
            payload: Payload::empty(),
        }
        .encode(ser)
        .unwrap()
        .to_vec()
    }

    /// The spliced PUBLISH is the one `switchyard_proto` encodes.
    #[test]
    fn template_matches_the_encoder() {
        for ser in [Serializer::Json, Serializer::MsgPack, Serializer::Cbor] {
            let t = PublishTemplate::new(ser, false, "bench.t", 64).unwrap();
            for request in [1, 23, 24, 127, 128, 255, 256, 65_535, 65_536, 1 << 40] {
                let mut out = Vec::new();
                t.write(request, &mut out);
                let want = Message::Publish {
                    request,
                    options: Dict::new().with("acknowledge", true),
                    topic: "bench.t".into(),
                    payload: Payload::values(vec![Value::Str("x".repeat(64))], None),
                }
                .encode(ser)
                .unwrap();
                assert_eq!(&out[4..], &want[..], "{ser} {request}");
                let h = rawsocket::decode_header([out[0], out[1], out[2], out[3]]).unwrap();
                assert_eq!(h.len, want.len());
            }
            // WebSocket: masked, and unmasks to the same body.
            let t = PublishTemplate::new(ser, true, "bench.t", 64).unwrap();
            let mut out = Vec::new();
            t.write(77, &mut out);
            let len = usize::from(out[1] & 0x7f);
            assert_eq!(out[1] & 0x80, 0x80);
            let body: Bytes = out[6..]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ lean::MASK[i % 4])
                .collect();
            assert_eq!(body.len(), len);
            let m = Message::decode(ser, &body).unwrap();
            assert!(matches!(m, Message::Publish { request: 77, .. }), "{m:?}");
        }
    }
}
