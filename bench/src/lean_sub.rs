//! Lean subscribers for the fan-out benches (`pubsub --lean-subscribers`,
//! `pubsub-nats --lean-subscribers`), equally lean for both systems.
//!
//! On the 2-core machine the subscribers share the CPUs with the server
//! they measure. The library clients are not equally heavy:
//! `switchyard_client::Session` (tokio-websockets, a reader and a writer
//! task, channels, a callback, a full decode of every EVENT into a `Value`
//! tree) burnt about 1.37 s of CPU per 1M deliveries, async-nats about
//! 0.62 s, and the rate ratio followed that difference. Here a subscriber
//! of either system is one TCP stream and one read buffer, driven by the
//! task that owns it, no channels: each read is parsed in place, and what
//! it gave is recorded under one uncontended lock per read.
//!
//! Both still check what they receive. WAMP: the session is opened and
//! subscribed by [`crate::lean::Wire`] (upgrade, HELLO/WELCOME,
//! SUBSCRIBE/SUBSCRIBED, each answer decoded and checked); then every frame
//! must be a whole text or binary message (per the serializer) holding
//! `[36, our subscription, publication, ...]`, whose publication id is
//! recorded for `pubsub`'s checks (none lost, none duplicated, publish
//! order); anything else (another message, another subscription, a close,
//! a ping, a malformed frame) is an error. NATS: `CONNECT`, `SUB`, `PING`,
//! and the `PONG` says the server has the subscription; then every
//! `MSG subject sid len` must be for our subject and sid, with the payload
//! and its `\r\n`, and its sequence number is checked as the library
//! subscriber checks it; the server's `PING`s are answered, `-ERR` or an
//! unknown line is an error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Buf, BytesMut};
use switchyard_proto::rawsocket::{self, FrameKind};
use switchyard_proto::Serializer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::lean::{Wire, MAX_FRAME};

/// The WAMP message type of EVENT.
const EVENT: u64 = 36;
/// Room kept free in a subscriber's read buffer before each read.
const READ_ROOM: usize = 64 * 1024;
/// The longest NATS protocol line we accept (a `MSG` header is ~50 bytes;
/// the server's `INFO` a few hundred).
const MAX_LINE: usize = 16 * 1024;
/// The largest NATS payload we accept.
const MAX_PAYLOAD: usize = 1 << 20;

/// Takes the EVENTs of one subscription out of a WAMP subscriber's stream.
#[derive(Clone, Copy, Debug)]
pub struct EventParser {
    /// WebSocket frames (else RawSocket).
    pub ws: bool,
    pub ser: Serializer,
    pub subscription: u64,
}

impl EventParser {
    /// Consumes every whole frame at the front of `buf` and calls
    /// `on_event` with each EVENT's publication id; a partial frame stays
    /// in `buf`. Anything but an EVENT of our subscription is an error
    /// (the frames before it have been passed on).
    pub fn parse(&self, buf: &mut BytesMut, mut on_event: impl FnMut(u64)) -> Result<(), String> {
        let mut at = 0;
        let r = loop {
            match self.frame(&buf[at..]) {
                Ok(Some((used, body))) => {
                    match self.event(body) {
                        Some(publication) => on_event(publication),
                        None => break Err(self.not_an_event(body)),
                    }
                    at += used;
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        buf.advance(at);
        r
    }

    /// The next whole frame of `b` (WebSocket or RawSocket, as the
    /// session speaks): (bytes used, payload).
    pub fn frame<'a>(&self, b: &'a [u8]) -> Result<Option<(usize, &'a [u8])>, String> {
        if self.ws {
            self.ws_frame(b)
        } else {
            rs_frame(b)
        }
    }

    /// The next whole WebSocket frame of `b`: (bytes used, payload).
    fn ws_frame<'a>(&self, b: &'a [u8]) -> Result<Option<(usize, &'a [u8])>, String> {
        if b.len() < 2 {
            return Ok(None);
        }
        if b[1] & 0x80 != 0 {
            return Err("the router sent a masked frame".into());
        }
        let (len, head) = match b[1] & 0x7f {
            126 => {
                if b.len() < 4 {
                    return Ok(None);
                }
                (usize::from(u16::from_be_bytes([b[2], b[3]])), 4)
            }
            127 => {
                if b.len() < 10 {
                    return Ok(None);
                }
                let mut l = [0u8; 8];
                l.copy_from_slice(&b[2..10]);
                (
                    usize::try_from(u64::from_be_bytes(l)).unwrap_or(usize::MAX),
                    10,
                )
            }
            n => (usize::from(n), 2),
        };
        if len > MAX_FRAME {
            return Err(format!("a {len}-byte frame (at most {MAX_FRAME})"));
        }
        if b.len() < head + len {
            return Ok(None);
        }
        let body = &b[head..head + len];
        let expected = if self.ser.is_binary() { 0x82 } else { 0x81 };
        match b[0] {
            x if x == expected => Ok(Some((head + len, body))),
            0x88 => Err(format!(
                "the router closed the WebSocket ({})",
                String::from_utf8_lossy(body.get(2..).unwrap_or_default())
            )),
            other => Err(format!(
                "unexpected WebSocket frame, first octet {other:#04x}"
            )),
        }
    }

    /// The publication id if `body` is an EVENT of our subscription.
    fn event(&self, body: &[u8]) -> Option<u64> {
        let (kind, subscription, publication) = head(self.ser, body, Arity::More)?;
        (kind == EVENT && subscription == self.subscription).then_some(publication)
    }

    fn not_an_event(&self, body: &[u8]) -> String {
        let shown = &body[..body.len().min(120)];
        let text = match self.ser {
            Serializer::Json => String::from_utf8_lossy(shown).into_owned(),
            _ => format!("{shown:02x?}"),
        };
        format!("not an EVENT of subscription {}: {text}", self.subscription)
    }
}

/// The next whole RawSocket frame of `b`: (bytes used, payload).
fn rs_frame(b: &[u8]) -> Result<Option<(usize, &[u8])>, String> {
    if b.len() < 4 {
        return Ok(None);
    }
    let h = rawsocket::decode_header([b[0], b[1], b[2], b[3]]).map_err(|e| e.to_string())?;
    if h.len > MAX_FRAME {
        return Err(format!("a {}-byte frame (at most {MAX_FRAME})", h.len));
    }
    if h.kind != FrameKind::Message {
        return Err(format!("unexpected RawSocket frame {:?}", h.kind));
    }
    if b.len() < 4 + h.len {
        return Ok(None);
    }
    Ok(Some((4 + h.len, &b[4..4 + h.len])))
}

/// How many elements a message's array has besides its three leading integers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    /// At least one more (an EVENT: `[36, sub, pub, Details, ...]`).
    More,
    /// None (a PUBLISHED: `[17, request, publication]`).
    Three,
}

/// The three leading unsigned integers of a message of serializer `ser`,
/// if it is an array of `arity` that starts with them.
pub fn head(ser: Serializer, body: &[u8], arity: Arity) -> Option<(u64, u64, u64)> {
    match ser {
        Serializer::Json => json_head(body, arity),
        Serializer::MsgPack => msgpack_head(body, arity),
        Serializer::Cbor => cbor_head(body, arity),
    }
}

/// The first three elements of a JSON array of unsigned integers
/// (`[36,sub,pub,...`), whitespace allowed; `None` if it is not one, or has
/// not the elements `arity` asks for after them.
fn json_head(b: &[u8], arity: Arity) -> Option<(u64, u64, u64)> {
    let mut i = 0;
    let skip = |i: &mut usize| {
        while b.get(*i).is_some_and(|c| c.is_ascii_whitespace()) {
            *i += 1;
        }
    };
    let uint = |i: &mut usize| -> Option<u64> {
        let start = *i;
        let mut v: u64 = 0;
        while let Some(c) = b.get(*i).filter(|c| c.is_ascii_digit()) {
            v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
            *i += 1;
        }
        (*i > start).then_some(v)
    };
    let expect = |i: &mut usize, c: u8| -> Option<()> {
        skip(i);
        (b.get(*i) == Some(&c)).then(|| *i += 1)
    };
    expect(&mut i, b'[')?;
    let mut v = [0u64; 3];
    for (n, x) in v.iter_mut().enumerate() {
        if n > 0 {
            expect(&mut i, b',')?;
        }
        skip(&mut i);
        *x = uint(&mut i)?;
    }
    match arity {
        // An EVENT has its Details next.
        Arity::More => expect(&mut i, b',')?,
        // A PUBLISHED ends here (and nothing follows the array).
        Arity::Three => {
            expect(&mut i, b']')?;
            skip(&mut i);
            if i != b.len() {
                return None;
            }
        }
    }
    Some((v[0], v[1], v[2]))
}

/// The same for a MessagePack array.
fn msgpack_head(b: &[u8], arity: Arity) -> Option<(u64, u64, u64)> {
    let (len, mut i) = match *b.first()? {
        h @ 0x90..=0x9f => (usize::from(h & 0x0f), 1),
        0xdc => (usize::from(u16::from_be_bytes([*b.get(1)?, *b.get(2)?])), 3),
        0xdd => (
            usize::try_from(u32::from_be_bytes(b.get(1..5)?.try_into().ok()?)).ok()?,
            5,
        ),
        _ => return None,
    };
    if (arity == Arity::More && len < 4) || (arity == Arity::Three && len != 3) {
        return None;
    }
    let mut uint = || -> Option<u64> {
        let (v, n) = match *b.get(i)? {
            x @ 0x00..=0x7f => (u64::from(x), 1),
            0xcc => (u64::from(*b.get(i + 1)?), 2),
            0xcd => (
                u64::from(u16::from_be_bytes(b.get(i + 1..i + 3)?.try_into().ok()?)),
                3,
            ),
            0xce => (
                u64::from(u32::from_be_bytes(b.get(i + 1..i + 5)?.try_into().ok()?)),
                5,
            ),
            0xcf => (u64::from_be_bytes(b.get(i + 1..i + 9)?.try_into().ok()?), 9),
            _ => return None,
        };
        i += n;
        Some(v)
    };
    let v = (uint()?, uint()?, uint()?);
    (arity == Arity::More || i == b.len()).then_some(v)
}

/// The same for a CBOR array (definite or indefinite length).
fn cbor_head(b: &[u8], arity: Arity) -> Option<(u64, u64, u64)> {
    // (elements, or None if indefinite; where the first one starts)
    let (count, mut i) = match *b.first()? {
        h @ 0x80..=0x97 => (Some(u64::from(h & 0x1f)), 1),
        0x98 => (Some(u64::from(*b.get(1)?)), 2),
        0x99..=0x9b => (Some(u64::MAX), 1 + (1 << (b[0] - 0x98))),
        0x9f => (None, 1),
        _ => return None,
    };
    if count.is_some_and(|n| (arity == Arity::More && n < 4) || (arity == Arity::Three && n != 3)) {
        return None;
    }
    let mut uint = || -> Option<u64> {
        let (v, n) = match *b.get(i)? {
            x @ 0x00..=0x17 => (u64::from(x), 1),
            0x18 => (u64::from(*b.get(i + 1)?), 2),
            0x19 => (
                u64::from(u16::from_be_bytes(b.get(i + 1..i + 3)?.try_into().ok()?)),
                3,
            ),
            0x1a => (
                u64::from(u32::from_be_bytes(b.get(i + 1..i + 5)?.try_into().ok()?)),
                5,
            ),
            0x1b => (u64::from_be_bytes(b.get(i + 1..i + 9)?.try_into().ok()?), 9),
            _ => return None,
        };
        i += n;
        Some(v)
    };
    let v = (uint()?, uint()?, uint()?);
    let end = if count.is_none() { i + 1 } else { i };
    let closed = count.is_some() || b.get(i) == Some(&0xff);
    (arity == Arity::More || (closed && end == b.len())).then_some(v)
}

/// What one WAMP subscriber saw.
#[derive(Default)]
pub struct WampSeen {
    /// Publication ids, in arrival order.
    pub publications: Vec<u64>,
    pub last: Option<Instant>,
    /// Why the subscriber stopped reading before the end, if it did.
    pub error: Option<String>,
}

/// A lean subscriber: the task reading its connection, and what it saw.
pub struct LeanSub<S> {
    pub seen: Arc<Mutex<S>>,
    pub task: JoinHandle<()>,
}

/// Opens a WAMP session with `wire`, subscribes to its topic 0, and
/// starts the task that reads the EVENTs; `total` counts the deliveries of
/// every subscriber.
pub async fn wamp_subscriber(
    wire: &Wire,
    total: Arc<AtomicU64>,
    capacity: usize,
) -> Result<LeanSub<WampSeen>, String> {
    let mut s = wire.open().await?;
    let subscription = wire.subscribe(&mut s, 0).await?;
    let (mut io, mut buf, ws) = s.into_parts();
    let parser = EventParser {
        ws,
        ser: wire.serializer(),
        subscription,
    };
    let seen = Arc::new(Mutex::new(WampSeen {
        publications: Vec::with_capacity(capacity),
        ..WampSeen::default()
    }));
    let seen2 = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            // What is buffered first: EVENTs may have come with SUBSCRIBED.
            let (r, n) = {
                let mut st = seen2.lock().unwrap_or_else(|e| e.into_inner());
                let before = st.publications.len();
                let r = parser.parse(&mut buf, |p| st.publications.push(p));
                let n = st.publications.len() - before;
                if n > 0 {
                    st.last = Some(Instant::now());
                }
                if let Err(e) = &r {
                    st.error = Some(e.clone());
                }
                (r, n)
            };
            if n > 0 {
                total.fetch_add(n as u64, Ordering::Relaxed);
            }
            if r.is_err() {
                return;
            }
            if let Err(e) = read_more(&mut io, &mut buf).await {
                seen2.lock().unwrap_or_else(|e| e.into_inner()).error = Some(e);
                return;
            }
        }
    });
    Ok(LeanSub { seen, task })
}

/// One read into `buf`, with [`READ_ROOM`] free; a close is an error.
async fn read_more(io: &mut TcpStream, buf: &mut BytesMut) -> Result<(), String> {
    if buf.capacity() - buf.len() < READ_ROOM / 4 {
        buf.reserve(READ_ROOM);
    }
    match io.read_buf(buf).await {
        Ok(0) => Err("the server closed the connection".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("read: {e}")),
    }
}

/// Takes the messages of one subscription out of a NATS subscriber's stream.
#[derive(Debug)]
pub struct MsgParser {
    pub subject: Vec<u8>,
    pub sid: Vec<u8>,
}

/// What [`MsgParser::parse`] found besides messages.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Control {
    /// The server's PINGs, each to be answered with a PONG.
    pub pings: usize,
    /// PONGs (answers to our PINGs).
    pub pongs: usize,
}

impl MsgParser {
    /// Consumes every whole protocol line (and `MSG` with its payload) at
    /// the front of `buf`, calling `on_msg` with each payload; a partial
    /// one stays in `buf`. A `MSG` for another subject or sid, `-ERR` or an
    /// unknown line is an error.
    pub fn parse(
        &self,
        buf: &mut BytesMut,
        mut on_msg: impl FnMut(&[u8]),
    ) -> Result<Control, String> {
        let mut at = 0;
        let mut control = Control::default();
        let r = loop {
            let rest = &buf[at..];
            let Some(nl) = rest.iter().position(|&c| c == b'\n') else {
                if rest.len() > MAX_LINE {
                    break Err(format!("a protocol line over {MAX_LINE} bytes"));
                }
                break Ok(());
            };
            let line = rest[..nl].strip_suffix(b"\r").unwrap_or(&rest[..nl]);
            if let Some(args) = line.strip_prefix(b"MSG ") {
                let len = match self.msg_len(args) {
                    Ok(len) => len,
                    Err(e) => break Err(e),
                };
                let start = nl + 1;
                if rest.len() < start + len + 2 {
                    break Ok(()); // the payload is not all here yet
                }
                if &rest[start + len..start + len + 2] != b"\r\n" {
                    break Err("a MSG payload not followed by CRLF".into());
                }
                on_msg(&rest[start..start + len]);
                at += start + len + 2;
                continue;
            }
            match line {
                b"PING" => control.pings += 1,
                b"PONG" => control.pongs += 1,
                b"+OK" => {}
                l if l.starts_with(b"INFO ") => {}
                l => break Err(format!("NATS server: {}", String::from_utf8_lossy(l))),
            }
            at += nl + 1;
        };
        buf.advance(at);
        r.map(|()| control)
    }

    /// The payload length of `MSG subject sid [reply-to] len`, checking
    /// that it is for our subject and sid.
    fn msg_len(&self, args: &[u8]) -> Result<usize, String> {
        let bad = || format!("MSG {}", String::from_utf8_lossy(args));
        let mut f = args.split(|&c| c == b' ').filter(|f| !f.is_empty());
        let (subject, sid) = (f.next().ok_or_else(bad)?, f.next().ok_or_else(bad)?);
        if subject != self.subject.as_slice() || sid != self.sid.as_slice() {
            return Err(format!("{}: not our subscription", bad()));
        }
        let (a, b) = (f.next().ok_or_else(bad)?, f.next());
        let len = match (b, f.next()) {
            (None, _) => a,
            (Some(b), None) => b, // with a reply subject
            _ => return Err(bad()),
        };
        let len: usize = std::str::from_utf8(len)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        if len > MAX_PAYLOAD {
            return Err(format!("{}: over {MAX_PAYLOAD} bytes", bad()));
        }
        Ok(len)
    }
}

/// What a NATS subscriber records: each payload (with the time of the
/// read that brought it), or why it stopped reading.
pub trait NatsRecord: Default + Send + 'static {
    fn record(&mut self, payload: &[u8], now: Instant);
    fn fail(&mut self, error: String);
}

/// Connects a NATS subscriber to `addr`: `INFO` in, `CONNECT`, `SUB` and
/// `PING` out, and the `PONG` says the server has the subscription. Then
/// the task reading the messages records each payload in an `S`.
pub async fn nats_subscriber<S: NatsRecord>(
    addr: &str,
    subject: &str,
    total: Arc<AtomicU64>,
) -> Result<LeanSub<S>, String> {
    const SID: &[u8] = b"1";
    let mut io = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("subscriber connect to {addr}: {e}"))?;
    io.set_nodelay(true).map_err(|e| e.to_string())?;
    let parser = MsgParser {
        subject: subject.as_bytes().to_vec(),
        sid: SID.to_vec(),
    };
    let mut buf = BytesMut::with_capacity(READ_ROOM);
    // INFO first.
    while !buf.contains(&b'\n') {
        if buf.len() > MAX_LINE {
            return Err("the NATS server's greeting has no end".into());
        }
        read_more(&mut io, &mut buf).await?;
    }
    if !buf.starts_with(b"INFO ") {
        return Err(format!(
            "NATS server greeted with {:?}",
            String::from_utf8_lossy(&buf[..buf.len().min(80)])
        ));
    }
    let hello = format!(
        "CONNECT {{\"verbose\":false,\"pedantic\":false,\"echo\":false,\"name\":\"switchyard-bench-sub\"}}\r\nSUB {subject} 1\r\nPING\r\n"
    );
    io.write_all(hello.as_bytes())
        .await
        .map_err(|e| format!("subscriber write: {e}"))?;
    loop {
        let c = parser.parse(&mut buf, |_| ())?;
        if c.pings > 0 {
            io.write_all(b"PONG\r\n")
                .await
                .map_err(|e| format!("subscriber write: {e}"))?;
        }
        if c.pongs > 0 {
            break;
        }
        read_more(&mut io, &mut buf).await?;
    }
    let seen = Arc::new(Mutex::new(S::default()));
    let seen2 = seen.clone();
    let task = tokio::spawn(async move {
        let fail = |e: String| seen2.lock().unwrap_or_else(|e| e.into_inner()).fail(e);
        loop {
            let mut n = 0u64;
            let r = {
                let mut st = seen2.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                parser.parse(&mut buf, |p| {
                    n += 1;
                    st.record(p, now);
                })
            };
            if n > 0 {
                total.fetch_add(n, Ordering::Relaxed);
            }
            match r {
                Ok(c) => {
                    for _ in 0..c.pings {
                        if let Err(e) = io.write_all(b"PONG\r\n").await {
                            return fail(format!("write: {e}"));
                        }
                    }
                }
                Err(e) => return fail(e),
            }
            if let Err(e) = read_more(&mut io, &mut buf).await {
                return fail(e);
            }
        }
    });
    Ok(LeanSub { seen, task })
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_proto::{Dict, Message, Payload, Value};

    fn event(ser: Serializer, subscription: u64, publication: u64) -> Vec<u8> {
        Message::Event {
            subscription,
            publication,
            details: Dict::new(),
            payload: Payload::values(vec![Value::Str("x".repeat(64))], None),
        }
        .encode(ser)
        .unwrap()
        .to_vec()
    }

    /// A server's (unmasked) WebSocket frame or a RawSocket frame.
    fn frame(ws: bool, opcode: u8, body: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        if ws {
            f.push(0x80 | opcode);
            match body.len() {
                n if n < 126 => f.push(n as u8),
                n => {
                    f.push(126);
                    f.extend_from_slice(&(n as u16).to_be_bytes());
                }
            }
        } else {
            f.extend_from_slice(&rawsocket::encode_header(FrameKind::Message, body.len()).unwrap());
        }
        f.extend_from_slice(body);
        f
    }

    /// Feeds `stream` to `parser` in pieces of `step` bytes.
    fn feed(parser: &EventParser, stream: &[u8], step: usize) -> (Vec<u64>, Result<(), String>) {
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for piece in stream.chunks(step) {
            buf.extend_from_slice(piece);
            if let Err(e) = parser.parse(&mut buf, |p| got.push(p)) {
                return (got, Err(e));
            }
        }
        assert!(buf.is_empty(), "{} bytes left over", buf.len());
        (got, Ok(()))
    }

    #[test]
    fn events_split_anywhere_are_all_taken() {
        for (ws, ser) in [
            (true, Serializer::Json),
            (false, Serializer::Json),
            (true, Serializer::MsgPack),
            (false, Serializer::Cbor),
        ] {
            let opcode = if ser.is_binary() { 0x2 } else { 0x1 };
            let pubs: Vec<u64> = vec![1, 36, 200, 70_000, 5_000_000_000, (1 << 53) - 1];
            let mut stream = Vec::new();
            for &p in &pubs {
                stream.extend(frame(ws, opcode, &event(ser, 4_321_987, p)));
            }
            // A frame over 125 bytes (a 2-byte length in WebSocket).
            let big = Message::Event {
                subscription: 4_321_987,
                publication: 9,
                details: Dict::new(),
                payload: Payload::values(vec![Value::Str("y".repeat(300))], None),
            }
            .encode(ser)
            .unwrap();
            stream.extend(frame(ws, opcode, &big));
            let mut want = pubs.clone();
            want.push(9);
            let parser = EventParser {
                ws,
                ser,
                subscription: 4_321_987,
            };
            for step in [1, 2, 3, 7, 64, stream.len()] {
                let (got, r) = feed(&parser, &stream, step);
                assert_eq!(r, Ok(()), "{ser} ws={ws} step {step}");
                assert_eq!(got, want, "{ser} ws={ws} step {step}");
            }
        }
    }

    #[test]
    fn anything_but_our_event_is_an_error() {
        let ser = Serializer::Json;
        let parser = EventParser {
            ws: true,
            ser,
            subscription: 5,
        };
        let ok = frame(true, 0x1, &event(ser, 5, 100));
        let published = Message::Published {
            request: 1,
            publication: 2,
        }
        .encode(ser)
        .unwrap();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (frame(true, 0x1, &event(ser, 6, 101)), "not an EVENT"),
            (frame(true, 0x1, &published), "not an EVENT"),
            (frame(true, 0x1, b"[36,5]"), "not an EVENT"),
            (frame(true, 0x1, b"[36,5,-1,{}]"), "not an EVENT"),
            (frame(true, 0x1, b"{\"36\":5}"), "not an EVENT"),
            (frame(true, 0x2, &event(ser, 5, 101)), "first octet 0x82"),
            (frame(true, 0x9, b""), "first octet 0x89"),
            (frame(true, 0x8, &[0x03, 0xe8, b'b', b'y', b'e']), "closed"),
            (vec![0x81, 0x85, 1, 2, 3, 4, 0, 0, 0, 0, 0], "masked"),
        ];
        for (bad, what) in cases {
            let mut stream = ok.clone();
            stream.extend(&bad);
            for step in [1, stream.len()] {
                let (got, r) = feed(&parser, &stream, step);
                assert_eq!(got, vec![100], "{what}");
                let e = r.err().unwrap_or_default();
                assert!(e.contains(what), "{what}: {e}");
            }
        }
        // Whitespace inside the JSON is allowed.
        let (got, r) = feed(&parser, &frame(true, 0x1, b"[ 36 , 5 ,\n7 , {}, []]"), 1);
        assert_eq!((got, r), (vec![7], Ok(())));
        // A RawSocket PING is not a message.
        let rs = EventParser {
            ws: false,
            ..parser
        };
        let mut ping = rawsocket::encode_header(FrameKind::Ping, 0)
            .unwrap()
            .to_vec();
        ping.extend(frame(false, 0, &event(ser, 5, 1)));
        let (_, r) = feed(&rs, &ping, 1);
        assert!(r.err().unwrap_or_default().contains("Ping"));
    }

    fn msgs(
        parser: &MsgParser,
        stream: &[u8],
        step: usize,
    ) -> (Vec<Vec<u8>>, Control, Result<(), String>) {
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut control = Control::default();
        for piece in stream.chunks(step) {
            buf.extend_from_slice(piece);
            match parser.parse(&mut buf, |p| got.push(p.to_vec())) {
                Ok(c) => {
                    control.pings += c.pings;
                    control.pongs += c.pongs;
                }
                Err(e) => return (got, control, Err(e)),
            }
        }
        assert!(buf.is_empty(), "{} bytes left over", buf.len());
        (got, control, Ok(()))
    }

    fn nats_parser() -> MsgParser {
        MsgParser {
            subject: b"bench.t1".to_vec(),
            sid: b"1".to_vec(),
        }
    }

    #[test]
    fn nats_messages_split_anywhere_are_all_taken() {
        let p = nats_parser();
        let stream = b"INFO {\"server_id\":\"x\"}\r\n+OK\r\nPONG\r\nMSG bench.t1 1 5\r\nhello\r\n\
PING\r\nMSG bench.t1 1 0\r\n\r\nMSG bench.t1 1 _INBOX.x 4\r\na\r\nb\r\nMSG  bench.t1  1  3\r\nMSG\r\n";
        for step in [1, 2, 5, 13, stream.len()] {
            let (got, c, r) = msgs(&p, stream, step);
            assert_eq!(r, Ok(()), "step {step}");
            assert_eq!(
                got,
                vec![
                    b"hello".to_vec(),
                    vec![],
                    b"a\r\nb".to_vec(),
                    b"MSG".to_vec()
                ],
                "step {step}"
            );
            assert_eq!(c, Control { pings: 1, pongs: 1 }, "step {step}");
        }
    }

    #[test]
    fn nats_anything_else_is_an_error() {
        let p = nats_parser();
        let cases: [(&[u8], &str); 6] = [
            (b"MSG bench.t2 1 5\r\nhello\r\n", "not our subscription"),
            (b"MSG bench.t1 2 5\r\nhello\r\n", "not our subscription"),
            (b"MSG bench.t1 1 5\r\nhelloXY", "CRLF"),
            (b"MSG bench.t1 1 five\r\n", "MSG bench.t1 1 five"),
            (b"-ERR 'Slow Consumer'\r\n", "Slow Consumer"),
            (b"HMSG bench.t1 1 3 5\r\n", "HMSG"),
        ];
        for (bad, what) in cases {
            let mut stream = b"MSG bench.t1 1 2\r\nok\r\n".to_vec();
            stream.extend_from_slice(bad);
            let (got, _, r) = msgs(&p, &stream, 1);
            assert_eq!(got, vec![b"ok".to_vec()], "{what}");
            let e = r.err().unwrap_or_default();
            assert!(e.contains(what), "{what}: {e}");
        }
    }
}
