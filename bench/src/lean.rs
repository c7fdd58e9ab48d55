//! A lean WAMP client for the session benchmarks (`sessions`, `cycles`):
//! the bytes a router must see to open, use and close a session, and as
//! little of the load generator's own work as that allows.
//!
//! On a 2-core machine the load generator shares the CPUs with the router,
//! and the client library (`switchyard_client::Session`: tokio-websockets'
//! handshake, a reader and a writer task, channels, a session state) spent
//! about as much CPU per session as the router: it capped the measurable
//! rate. Here every message that does not change from one session to the
//! next (the WebSocket upgrade request, the RawSocket handshake, HELLO,
//! SUBSCRIBE of each topic, GOODBYE, the WebSocket close) is encoded, framed
//! and masked once, in [`Wire::new`]; a session is one TCP stream and one
//! read buffer, driven by the task that owns it.
//!
//! It still checks every answer as a client must: the `101` status, the
//! `Sec-WebSocket-Accept` of our key and the selected subprotocol; the
//! RawSocket reply's serializer; and each WAMP answer is decoded with
//! `switchyard_proto` and must be the expected message (WELCOME,
//! SUBSCRIBED to our request, GOODBYE); anything else (ABORT, ERROR, a
//! close, a ping, a malformed frame) is an error with its reason.
//!
//! It speaks `ws://` and `rs://`/`tcp://` only (no TLS, no Unix socket),
//! plain WebSocket frames of at most [`MAX_FRAME`] bytes, unfragmented.

use std::net::SocketAddr;

use bytes::{Buf, Bytes, BytesMut};
use switchyard_proto::rawsocket::{self, FrameKind};
use switchyard_proto::{Dict, Message, Serializer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The WebSocket key of every upgrade, and the accept value a server must
/// answer for it (the example of RFC 6455, section 1.3).
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
/// The mask of every frame we send (a client must mask; the value is free).
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// The largest answer we accept (a WELCOME is a few hundred bytes).
pub const MAX_FRAME: usize = 64 * 1024;
/// The largest HTTP answer to the upgrade.
const MAX_HEAD: usize = 8 * 1024;
/// The request id of the one SUBSCRIBE a cycle makes.
const SUBSCRIBE_REQUEST: u64 = 1;

/// What every session of a run sends, built once.
pub struct Wire {
    addr: SocketAddr,
    ser: Serializer,
    /// The WebSocket upgrade request (`None`: RawSocket).
    upgrade: Option<Vec<u8>>,
    hello: Vec<u8>,
    goodbye: Vec<u8>,
    /// The WebSocket close frame sent after GOODBYE (empty for RawSocket).
    close: Vec<u8>,
    /// SUBSCRIBE (request [`SUBSCRIBE_REQUEST`]) of each topic, framed.
    subscribes: Vec<Vec<u8>>,
}

impl Wire {
    /// Resolves the router's address and encodes the fixed messages.
    pub async fn new(
        url: &str,
        realm: &str,
        ser: Serializer,
        topics: &[String],
    ) -> Result<Wire, String> {
        let (ws_path, hostport) = if let Some(rest) = url.strip_prefix("ws://") {
            let (hp, path) = rest.split_once('/').unwrap_or((rest, ""));
            (Some(format!("/{path}")), hp)
        } else if let Some(rest) = url
            .strip_prefix("rs://")
            .or_else(|| url.strip_prefix("tcp://"))
        {
            (None, rest.trim_end_matches('/'))
        } else {
            return Err(format!(
                "the lean client speaks ws:// and rs:// only, not {url} (use --client library)"
            ));
        };
        let addr = tokio::net::lookup_host(hostport)
            .await
            .map_err(|e| format!("cannot resolve {hostport}: {e}"))?
            .next()
            .ok_or_else(|| format!("{hostport} resolves to no address"))?;
        let upgrade = ws_path.map(|path| {
            format!(
                "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY}\r\n\
                 Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {}\r\n\r\n",
                ser.subprotocol()
            )
            .into_bytes()
        });
        let ws = upgrade.is_some();
        let frame = |m: &Message| -> Result<Vec<u8>, String> {
            let body = m.encode(ser).map_err(|e| e.to_string())?;
            Ok(if ws {
                ws_frame(if ser.is_binary() { 0x2 } else { 0x1 }, &body)
            } else {
                let Some(h) = rawsocket::encode_header(FrameKind::Message, body.len()) else {
                    return Err("message too large for RawSocket".into());
                };
                [&h[..], &body].concat()
            })
        };
        let hello = frame(&Message::Hello {
            realm: realm.to_owned(),
            details: hello_details(),
        })?;
        let goodbye = frame(&Message::Goodbye {
            details: Dict::new(),
            reason: "wamp.close.close_realm".into(),
        })?;
        let subscribes = topics
            .iter()
            .map(|t| {
                frame(&Message::Subscribe {
                    request: SUBSCRIBE_REQUEST,
                    options: Dict::new(),
                    topic: t.clone(),
                })
            })
            .collect::<Result<_, _>>()?;
        // Close, status 1000 (normal closure).
        let close = if ws {
            ws_frame(0x8, &1000u16.to_be_bytes())
        } else {
            Vec::new()
        };
        Ok(Wire {
            addr,
            ser,
            upgrade,
            hello,
            goodbye,
            close,
            subscribes,
        })
    }

    /// The serializer of every session.
    pub fn serializer(&self) -> Serializer {
        self.ser
    }

    /// Connects, does the transport's handshake and HELLO, and checks that
    /// the answer is a WELCOME.
    pub async fn open(&self) -> Result<LeanSession, String> {
        let io = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", self.addr))?;
        io.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut s = LeanSession {
            io,
            buf: BytesMut::with_capacity(1024),
            ws: self.upgrade.is_some(),
        };
        match &self.upgrade {
            Some(upgrade) => {
                s.send(upgrade).await?;
                s.read_upgrade_answer(self.ser).await?;
            }
            None => {
                s.send(&rawsocket::client_handshake(self.ser, 0x0F)).await?;
                s.fill(4).await?;
                let mut reply = [0u8; 4];
                s.buf.copy_to_slice(&mut reply);
                let accepted = rawsocket::parse_router_reply(reply)
                    .map_err(|e| format!("RawSocket handshake refused: {e:?}"))?;
                if accepted.serializer != self.ser {
                    return Err(format!(
                        "router chose serializer {}, we asked for {}",
                        accepted.serializer, self.ser
                    ));
                }
            }
        }
        s.send(&self.hello).await?;
        match s.recv(self.ser).await? {
            Message::Welcome { .. } => Ok(s),
            Message::Abort { reason, .. } => Err(format!("HELLO answered with ABORT {reason}")),
            other => Err(format!("HELLO answered with {}", name(&other))),
        }
    }

    /// SUBSCRIBE to topic `i` (of those given to [`Wire::new`]); the
    /// answer must be SUBSCRIBED to that request. Returns the subscription id.
    pub async fn subscribe(&self, s: &mut LeanSession, i: usize) -> Result<u64, String> {
        let frame = self
            .subscribes
            .get(i)
            .ok_or_else(|| format!("no topic {i}"))?;
        s.send(frame).await?;
        match s.recv(self.ser).await? {
            Message::Subscribed {
                request,
                subscription,
            } if request == SUBSCRIBE_REQUEST => Ok(subscription),
            Message::Error { error, .. } => Err(format!("SUBSCRIBE answered with ERROR {error}")),
            other => Err(format!("SUBSCRIBE answered with {}", name(&other))),
        }
    }

    /// GOODBYE; the answer must be the router's GOODBYE. Then the
    /// WebSocket close frame, and the connection is dropped.
    pub async fn leave(&self, mut s: LeanSession) -> Result<(), String> {
        s.send(&self.goodbye).await?;
        match s.recv(self.ser).await? {
            Message::Goodbye { .. } => {}
            other => return Err(format!("GOODBYE answered with {}", name(&other))),
        }
        if !self.close.is_empty() {
            // The router may have closed already: not an error of the session.
            let _ = s.io.write_all(&self.close).await;
        }
        Ok(())
    }
}

/// One open session: its stream and what was read past the last frame.
pub struct LeanSession {
    io: TcpStream,
    buf: BytesMut,
    ws: bool,
}

impl LeanSession {
    /// The stream, the bytes read past the last answer, and whether the
    /// session speaks WebSocket (else RawSocket): for a reader that takes
    /// over the connection (`lean_sub`).
    pub fn into_parts(self) -> (TcpStream, BytesMut, bool) {
        (self.io, self.buf, self.ws)
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.io
            .write_all(bytes)
            .await
            .map_err(|e| format!("write: {e}"))
    }

    /// Reads until `buf` holds at least `n` bytes.
    async fn fill(&mut self, n: usize) -> Result<(), String> {
        while self.buf.len() < n {
            self.buf.reserve(n - self.buf.len());
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) => return Err("the router closed the connection".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
        Ok(())
    }

    /// Reads the HTTP answer to the upgrade and checks it; the bytes after
    /// its blank line (the first frames) stay in `buf`.
    async fn read_upgrade_answer(&mut self, ser: Serializer) -> Result<(), String> {
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if self.buf.len() >= MAX_HEAD {
                return Err("the upgrade's answer has no end of header".into());
            }
            let have = self.buf.len();
            self.fill(have + 1).await?;
        };
        let head = self.buf.split_to(end);
        let text = std::str::from_utf8(&head).map_err(|_| "the upgrade's answer is not text")?;
        let mut lines = text.split("\r\n");
        let status = lines.next().unwrap_or("");
        if !status.starts_with("HTTP/1.1 101 ") {
            return Err(format!("upgrade answered with {status:?}"));
        }
        let (mut accept, mut protocol) = (None, None);
        for line in lines {
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("sec-websocket-accept") {
                    accept = Some(v.trim());
                } else if k.eq_ignore_ascii_case("sec-websocket-protocol") {
                    protocol = Some(v.trim());
                }
            }
        }
        if accept != Some(WS_ACCEPT) {
            return Err(format!(
                "Sec-WebSocket-Accept {accept:?}, expected {WS_ACCEPT}"
            ));
        }
        if protocol != Some(ser.subprotocol()) {
            return Err(format!(
                "router selected subprotocol {protocol:?}, expected {}",
                ser.subprotocol()
            ));
        }
        Ok(())
    }

    /// The next WAMP message (one WebSocket or RawSocket frame), decoded.
    async fn recv(&mut self, ser: Serializer) -> Result<Message, String> {
        let frame = if self.ws {
            self.ws_frame().await?
        } else {
            self.rs_frame().await?
        };
        Message::decode(ser, &frame).map_err(|e| format!("a malformed answer: {e}"))
    }

    async fn ws_frame(&mut self) -> Result<Bytes, String> {
        self.fill(2).await?;
        let (b0, b1) = (self.buf[0], self.buf[1]);
        if b1 & 0x80 != 0 {
            return Err("the router sent a masked frame".into());
        }
        let (len, head) = match b1 & 0x7f {
            126 => {
                self.fill(4).await?;
                (
                    usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]])),
                    4,
                )
            }
            127 => {
                self.fill(10).await?;
                let mut l = [0u8; 8];
                l.copy_from_slice(&self.buf[2..10]);
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
        self.fill(head + len).await?;
        self.buf.advance(head);
        let payload = self.buf.split_to(len).freeze();
        match b0 {
            // FIN + text or binary: one whole message.
            0x81 | 0x82 => Ok(payload),
            0x88 => Err(format!(
                "the router closed the WebSocket ({})",
                String::from_utf8_lossy(payload.get(2..).unwrap_or_default())
            )),
            other => Err(format!(
                "unexpected WebSocket frame, first octet {other:#04x}"
            )),
        }
    }

    async fn rs_frame(&mut self) -> Result<Bytes, String> {
        self.fill(4).await?;
        let h = rawsocket::decode_header([self.buf[0], self.buf[1], self.buf[2], self.buf[3]])
            .map_err(|e| e.to_string())?;
        if h.len > MAX_FRAME {
            return Err(format!("a {}-byte frame (at most {MAX_FRAME})", h.len));
        }
        if h.kind != FrameKind::Message {
            return Err(format!("unexpected RawSocket frame {:?}", h.kind));
        }
        self.fill(4 + h.len).await?;
        self.buf.advance(4);
        Ok(self.buf.split_to(h.len).freeze())
    }
}

/// A client's WebSocket frame: FIN, `opcode`, masked with [`MASK`].
fn ws_frame(opcode: u8, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(body.len() + 14);
    ws_frame_into(&mut f, opcode, &[body]);
    f
}

/// Appends to `out` a client's WebSocket frame (FIN, `opcode`, masked with
/// [`MASK`]) whose payload is `parts`, one after the other.
pub fn ws_frame_into(out: &mut Vec<u8>, opcode: u8, parts: &[&[u8]]) {
    out.push(0x80 | opcode);
    match parts.iter().map(|p| p.len()).sum::<usize>() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&MASK);
    let masked = parts.iter().flat_map(|p| p.iter());
    out.extend(masked.enumerate().map(|(i, b)| b ^ MASK[i % 4]));
}

/// HELLO's details: the roles the client library announces, so that the
/// router parses the same HELLO as from a real client.
fn hello_details() -> Dict {
    let features = |names: &[&str]| {
        let mut f = Dict::new();
        for n in names {
            f.insert(*n, true);
        }
        Dict::new().with("features", f)
    };
    let roles = Dict::new()
        .with(
            "publisher",
            features(&[
                "publisher_exclusion",
                "subscriber_blackwhite_listing",
                "publisher_identification",
            ]),
        )
        .with(
            "subscriber",
            features(&["pattern_based_subscription", "publisher_identification"]),
        )
        .with("caller", features(&["caller_identification"]))
        .with(
            "callee",
            features(&[
                "caller_identification",
                "pattern_based_registration",
                "shared_registration",
                "call_canceling",
            ]),
        );
    Dict::new()
        .with(
            "agent",
            concat!("switchyard-bench/", env!("CARGO_PKG_VERSION")),
        )
        .with("roles", roles)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn name(m: &Message) -> String {
    let text = format!("{m:?}");
    text.split([' ', '{', '(']).next().unwrap_or("?").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A scripted router on a free loopback port: answers the WebSocket
    /// upgrade with `answer` (or accepts RawSocket with `ser`), then each
    /// WAMP message it reads with the next of `replies`. Returns the URL and
    /// the messages it read.
    async fn scripted(
        ws: bool,
        ser: Serializer,
        answer: String,
        replies: Vec<Message>,
    ) -> (String, tokio::task::JoinHandle<Vec<Message>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut io, _) = l.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // The handshake.
            if ws {
                while find(&buf, b"\r\n\r\n").is_none() {
                    let n = io.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "client closed during the upgrade");
                    buf.extend_from_slice(&chunk[..n]);
                }
                let end = find(&buf, b"\r\n\r\n").unwrap() + 4;
                buf.drain(..end);
                io.write_all(answer.as_bytes()).await.unwrap();
            } else {
                while buf.len() < 4 {
                    let n = io.read(&mut chunk).await.unwrap();
                    buf.extend_from_slice(&chunk[..n]);
                }
                buf.drain(..4);
                io.write_all(&rawsocket::accept(ser, 0x0F)).await.unwrap();
            }
            let mut seen = Vec::new();
            let mut replies = replies.into_iter();
            loop {
                // One client frame: WebSocket (masked) or RawSocket.
                let frame = loop {
                    let parsed = if ws {
                        (buf.len() >= 2).then(|| {
                            let (len, head) = match buf[1] & 0x7f {
                                126 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 8),
                                n => (usize::from(n), 6),
                            };
                            (buf.len() >= head + len).then(|| {
                                let mask =
                                    [buf[head - 4], buf[head - 3], buf[head - 2], buf[head - 1]];
                                let body: Vec<u8> = buf[head..head + len]
                                    .iter()
                                    .enumerate()
                                    .map(|(i, b)| b ^ mask[i % 4])
                                    .collect();
                                (head + len, buf[0], body)
                            })
                        })
                    } else {
                        (buf.len() >= 4).then(|| {
                            let h =
                                rawsocket::decode_header([buf[0], buf[1], buf[2], buf[3]]).unwrap();
                            (buf.len() >= 4 + h.len)
                                .then(|| (4 + h.len, 0x81, buf[4..4 + h.len].to_vec()))
                        })
                    };
                    if let Some(Some((used, first, body))) = parsed {
                        buf.drain(..used);
                        break Some((first, body));
                    }
                    let n = io.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break None;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                };
                let Some((first, body)) = frame else {
                    return seen;
                };
                if first == 0x88 {
                    return seen; // the client's close frame
                }
                seen.push(Message::decode(ser, &Bytes::from(body)).unwrap());
                let Some(reply) = replies.next() else {
                    return seen;
                };
                let body = reply.encode(ser).unwrap();
                let mut out = Vec::new();
                if ws {
                    out.push(if ser.is_binary() { 0x82 } else { 0x81 });
                    assert!(body.len() < 126);
                    out.push(body.len() as u8);
                } else {
                    out.extend_from_slice(
                        &rawsocket::encode_header(FrameKind::Message, body.len()).unwrap(),
                    );
                }
                out.extend_from_slice(&body);
                io.write_all(&out).await.unwrap();
            }
        });
        let url = if ws {
            format!("ws://127.0.0.1:{port}/ws")
        } else {
            format!("rs://127.0.0.1:{port}")
        };
        (url, task)
    }

    fn upgrade_answer(accept: &str, protocol: &str) -> String {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\
             sec-websocket-accept: {accept}\r\nsec-websocket-protocol: {protocol}\r\n\r\n"
        )
    }

    fn welcome() -> Message {
        Message::Welcome {
            session: 7,
            details: Dict::new(),
        }
    }

    fn subscribed(request: u64) -> Message {
        Message::Subscribed {
            request,
            subscription: 9,
        }
    }

    fn goodbye() -> Message {
        Message::Goodbye {
            details: Dict::new(),
            reason: "wamp.close.goodbye_and_out".into(),
        }
    }

    fn topics() -> Vec<String> {
        vec!["bench.t0".into(), "bench.t1".into()]
    }

    #[test]
    fn a_websocket_frame_is_masked_and_sized() {
        let body = vec![b'x'; 200];
        let f = ws_frame(0x1, &body);
        assert_eq!(&f[..4], &[0x81, 0x80 | 126, 0, 200]);
        assert_eq!(&f[4..8], &MASK);
        let unmasked: Vec<u8> = f[8..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ MASK[i % 4])
            .collect();
        assert_eq!(unmasked, body);
        assert_eq!(ws_frame(0x2, b"ab")[..2], [0x82, 0x82]);
    }

    #[tokio::test]
    async fn a_cycle_over_websocket_sends_hello_subscribe_goodbye() {
        let ser = Serializer::Json;
        let answer = upgrade_answer(WS_ACCEPT, "wamp.2.json");
        let (url, peer) =
            scripted(true, ser, answer, vec![welcome(), subscribed(1), goodbye()]).await;
        let wire = Wire::new(&url, "realm1", ser, &topics()).await.unwrap();
        let mut s = wire.open().await.unwrap();
        wire.subscribe(&mut s, 1).await.unwrap();
        wire.leave(s).await.unwrap();
        let seen = peer.await.unwrap();
        assert!(
            matches!(&seen[0], Message::Hello { realm, .. } if realm == "realm1"),
            "{seen:?}"
        );
        assert!(
            matches!(&seen[1], Message::Subscribe { request: 1, topic, .. } if topic == "bench.t1"),
            "{seen:?}"
        );
        assert!(matches!(&seen[2], Message::Goodbye { .. }), "{seen:?}");
    }

    #[tokio::test]
    async fn a_cycle_over_rawsocket_msgpack() {
        let ser = Serializer::MsgPack;
        let (url, peer) = scripted(
            false,
            ser,
            String::new(),
            vec![welcome(), subscribed(1), goodbye()],
        )
        .await;
        let wire = Wire::new(&url, "realm1", ser, &topics()).await.unwrap();
        let mut s = wire.open().await.unwrap();
        wire.subscribe(&mut s, 0).await.unwrap();
        wire.leave(s).await.unwrap();
        assert_eq!(peer.await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn a_wrong_accept_or_subprotocol_fails_the_upgrade() {
        let ser = Serializer::Json;
        let (url, _peer) =
            scripted(true, ser, upgrade_answer("bm9wZQ==", "wamp.2.json"), vec![]).await;
        let wire = Wire::new(&url, "realm1", ser, &[]).await.unwrap();
        let e = wire.open().await.err().unwrap();
        assert!(e.contains("Sec-WebSocket-Accept"), "{e}");

        let (url, _peer) = scripted(
            true,
            ser,
            upgrade_answer(WS_ACCEPT, "wamp.2.msgpack"),
            vec![],
        )
        .await;
        let wire = Wire::new(&url, "realm1", ser, &[]).await.unwrap();
        let e = wire.open().await.err().unwrap();
        assert!(e.contains("subprotocol"), "{e}");
    }

    #[tokio::test]
    async fn anything_but_the_expected_answer_is_an_error() {
        let ser = Serializer::Json;
        let abort = Message::Abort {
            details: Dict::new(),
            reason: "wamp.error.no_such_realm".into(),
        };
        let (url, _peer) = scripted(
            true,
            ser,
            upgrade_answer(WS_ACCEPT, "wamp.2.json"),
            vec![abort],
        )
        .await;
        let wire = Wire::new(&url, "nope", ser, &[]).await.unwrap();
        let e = wire.open().await.err().unwrap();
        assert!(e.contains("ABORT wamp.error.no_such_realm"), "{e}");

        // SUBSCRIBED, but to another request.
        let (url, _peer) =
            scripted(false, ser, String::new(), vec![welcome(), subscribed(2)]).await;
        let wire = Wire::new(&url, "realm1", ser, &topics()).await.unwrap();
        let mut s = wire.open().await.unwrap();
        let e = wire.subscribe(&mut s, 0).await.err().unwrap();
        assert!(e.contains("SUBSCRIBE answered with Subscribed"), "{e}");

        // The router closes instead of answering GOODBYE.
        let (url, _peer) = scripted(false, ser, String::new(), vec![welcome()]).await;
        let wire = Wire::new(&url, "realm1", ser, &[]).await.unwrap();
        let s = wire.open().await.unwrap();
        let e = wire.leave(s).await.err().unwrap();
        assert!(e.contains("closed the connection"), "{e}");
    }

    #[tokio::test]
    async fn only_ws_and_rs_urls() {
        let e = Wire::new("unix:/tmp/x", "realm1", Serializer::Json, &[])
            .await
            .err()
            .unwrap();
        assert!(e.contains("--client library"), "{e}");
    }
}
