//! The low-level layer: connect a transport (WebSocket, also over TLS, or
//! RawSocket), then send and receive whole frames as [`Bytes`]. Nothing here
//! decodes WAMP, so tests can send malformed frames and read raw replies.
//!
//! A connection has one writer task (spawned by [`connect`]) fed through a
//! queue by any number of [`FrameSender`] clones; it blocks for the first
//! queued frame, drains whatever else is queued, and writes the batch with
//! one flush. The queue is bounded for the frames an application produces:
//! [`FrameSender::send_async`] waits while [`TransportOptions::send_queue`]
//! frames are queued or being written (backpressure on the caller), while
//! [`FrameSender::send`] never waits (control frames such as PONG, GOODBYE
//! or close, and tests that send hand-made frames). The [`FrameReceiver`] reads straight from the socket
//! in the task that calls [`FrameReceiver::recv`]. Pings (WebSocket PING
//! frames, RawSocket type-1 frames) are answered automatically.
//!
//! The RawSocket wire format (handshake octets, error codes, frame headers)
//! is [`switchyard_proto::rawsocket`], the same code the router's listener
//! uses; this file owns the client's sockets, queues and checks.
//!
//! ```no_run
//! # async fn demo() -> Result<(), switchyard_client::TransportError> {
//! use switchyard_client::transport::{connect, TransportOptions};
//! use switchyard_proto::Serializer;
//!
//! let mut conn = connect("rs://127.0.0.1:8081", TransportOptions::new(Serializer::Json)).await?;
//! conn.sender.send(bytes::Bytes::from_static(b"[1,\"realm1\",{\"roles\":{\"caller\":{}}}]"))?;
//! let reply = conn.receiver.recv().await?;
//! # let _ = reply; Ok(()) }
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use switchyard_proto::rawsocket::{self, FrameHeaderError, FrameKind, RouterReplyError};
use switchyard_proto::Serializer;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_websockets::{CloseCode, Message as WsMessage, WebSocketStream};

use crate::error::TransportError;
use crate::tls::MaybeTls;

/// The largest RawSocket frame the framing can express (2^24 octets).
pub const RAWSOCKET_MAX_FRAME: usize = rawsocket::MAX_FRAME;

/// Frames drained into one write batch at most.
const BATCH: usize = 1024;

/// Default of [`TransportOptions::send_queue`].
pub const DEFAULT_SEND_QUEUE: usize = 1024;

/// Where to connect, parsed from a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `ws://host:port/path` (the full URL is kept for the upgrade request).
    WebSocket {
        /// The URL as given.
        url: String,
        /// `host:port` to connect to (port 80 if absent).
        addr: String,
    },
    /// `wss://host:port/path`: WebSocket over TLS.
    SecureWebSocket {
        /// The URL as given.
        url: String,
        /// `host:port` to connect to (port 443 if absent).
        addr: String,
        /// The host (DNS name or IP address, without brackets) the router's
        /// certificate must be valid for.
        host: String,
    },
    /// `rs://host:port` or `tcp://host:port`: RawSocket over TCP.
    RawSocketTcp {
        /// `host:port`.
        addr: String,
    },
    /// `unix:/path` or `unix:///path`: RawSocket over a Unix socket.
    RawSocketUnix {
        /// The socket path.
        path: PathBuf,
    },
}

impl Endpoint {
    /// Parses `ws://host:port/path`, `wss://host:port/path`, `rs://host:port`,
    /// `tcp://host:port`, `unix:/path` or `unix:///path`.
    pub fn parse(url: &str) -> Result<Endpoint, TransportError> {
        let bad = || TransportError::InvalidUrl(url.to_owned());
        for (scheme, default_port, tls) in [("ws://", 80, false), ("wss://", 443, true)] {
            let Some(rest) = url.strip_prefix(scheme) else {
                continue;
            };
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            let host = host_of(authority).ok_or_else(bad)?;
            let addr = if has_port(authority) {
                authority.to_owned()
            } else {
                format!("{authority}:{default_port}")
            };
            let url = url.to_owned();
            return Ok(if tls {
                Endpoint::SecureWebSocket { url, addr, host }
            } else {
                Endpoint::WebSocket { url, addr }
            });
        }
        if let Some(rest) = url
            .strip_prefix("rs://")
            .or_else(|| url.strip_prefix("tcp://"))
        {
            let addr = rest.trim_end_matches('/');
            if addr.is_empty() || addr.contains('/') || !has_port(addr) {
                return Err(bad());
            }
            return Ok(Endpoint::RawSocketTcp {
                addr: addr.to_owned(),
            });
        }
        if let Some(rest) = url.strip_prefix("unix:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(bad());
            }
            return Ok(Endpoint::RawSocketUnix { path: path.into() });
        }
        Err(bad())
    }
}

/// The host of `host:port`, `host`, `[v6]:port` or `[v6]` (without the
/// brackets); `None` if it is empty or malformed.
fn host_of(authority: &str) -> Option<String> {
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split_once(']')?.0
    } else if has_port(authority) {
        authority.rsplit_once(':')?.0
    } else {
        authority
    };
    (!host.is_empty() && !host.contains(['@', ' '])).then(|| host.to_owned())
}

fn has_port(authority: &str) -> bool {
    // `[::1]:8080`, `host:8080`; a bare IPv6 literal in brackets has no port.
    match authority.rfind(':') {
        Some(i) => !authority[i..].contains(']') && authority[i + 1..].parse::<u16>().is_ok(),
        None => false,
    }
}

/// Options of [`connect`].
#[derive(Debug, Clone)]
pub struct TransportOptions {
    /// The serializer to negotiate.
    pub serializer: Serializer,
    /// RawSocket: the `LENGTH` field of our handshake (0..=15), announcing the
    /// longest frame we accept, 2^(9+LENGTH) octets. Default 15 (16 MiB).
    pub max_len_exp: u8,
    /// RawSocket: send these 4 octets as the handshake instead of the
    /// computed one (for tests of the router's handshake checks). The reply
    /// is still parsed as usual.
    pub raw_handshake: Option<[u8; 4]>,
    /// WebSocket: the subprotocols to offer, in order (default: the
    /// serializer's, e.g. `wamp.2.json`). An empty list offers none.
    pub subprotocols: Option<Vec<String>>,
    /// WebSocket: require the router to select the serializer's subprotocol
    /// (default true). With false, the selected one is only reported in
    /// [`TransportInfo::WebSocket`].
    pub require_subprotocol: bool,
    /// How many frames sent with [`FrameSender::send_async`] may be queued
    /// for (or being written by) the writer task; more senders wait until
    /// the socket has taken some. Default [`DEFAULT_SEND_QUEUE`]; 0 counts
    /// as 1.
    pub send_queue: usize,
    /// `wss://`: a PEM file of CA certificates to trust in addition to the
    /// system's CA bundle (for a router with a self-signed or private-CA
    /// certificate). The router's certificate is always verified.
    pub ca_file: Option<PathBuf>,
}

impl TransportOptions {
    /// Defaults for `serializer`.
    pub fn new(serializer: Serializer) -> Self {
        TransportOptions {
            serializer,
            max_len_exp: 15,
            raw_handshake: None,
            subprotocols: None,
            require_subprotocol: true,
            send_queue: DEFAULT_SEND_QUEUE,
            ca_file: None,
        }
    }
}

/// What the transport handshake settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportInfo {
    /// A WebSocket connection.
    WebSocket {
        /// The `Sec-WebSocket-Protocol` the router selected, if any.
        subprotocol: Option<String>,
    },
    /// A RawSocket connection.
    RawSocket(RawSocketHandshake),
}

/// The router's successful RawSocket handshake reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawSocketHandshake {
    /// The 4 octets the router sent.
    pub reply: [u8; 4],
    /// The serializer the router echoed.
    pub serializer: Serializer,
    /// The router's `LENGTH` field (0..=15).
    pub max_len_exp: u8,
    /// The longest frame the router accepts from us: 2^(9+LENGTH) octets.
    pub max_len: usize,
}

/// A connected transport: a frame sender, a frame receiver and the
/// handshake outcome.
pub struct Connection {
    /// Sends frames (cloneable; the writer task batches them).
    pub sender: FrameSender,
    /// Receives frames (read directly from the socket).
    pub receiver: FrameReceiver,
    /// The negotiated serializer.
    pub serializer: Serializer,
    /// Handshake details.
    pub info: TransportInfo,
}

impl Connection {
    /// The longest frame the router accepts (`None` for WebSocket, where
    /// the router announces no limit).
    pub fn max_frame_len(&self) -> Option<usize> {
        match &self.info {
            TransportInfo::RawSocket(h) => Some(h.max_len),
            TransportInfo::WebSocket { .. } => None,
        }
    }
}

/// A frame for the writer task.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// A WAMP message: a text frame for JSON over WebSocket, else binary; a
    /// type-0 frame over RawSocket.
    Message(Bytes),
    /// WebSocket: a text frame regardless of the serializer (the payload must
    /// be valid UTF-8 for tokio-websockets to send it). RawSocket: type 0.
    Text(Bytes),
    /// WebSocket: a binary frame regardless of the serializer. RawSocket: type 0.
    Binary(Bytes),
    /// A PING (WebSocket ping frame, RawSocket type 1).
    Ping(Bytes),
    /// A PONG (WebSocket pong frame, RawSocket type 2).
    Pong(Bytes),
    /// RawSocket only: octets written as they are, with no frame header (for
    /// tests of malformed framing). Ignored on WebSocket.
    Raw(Bytes),
    /// Close the connection: a WebSocket close frame (then the writer
    /// stops); on RawSocket, shut down the write side. Frames queued after
    /// this are dropped.
    Close {
        /// WebSocket close code (default 1000).
        code: Option<u16>,
        /// WebSocket close reason.
        reason: String,
    },
}

/// An item of the writer's queue: the frame, and whether it holds one of
/// the [`TransportOptions::send_queue`] slots (given back once written).
#[derive(Debug)]
struct Queued {
    item: Outgoing,
    slot: bool,
}

/// The sending side of a connection. Cheap to clone.
///
/// [`FrameSender::send_async`] is the bounded path: it waits for one of the
/// [`TransportOptions::send_queue`] slots, which the writer task gives back
/// once the frame is written to the socket, so a producer faster than the
/// network is slowed down instead of filling memory. [`FrameSender::send`]
/// queues at once without taking a slot (for control frames and tests).
#[derive(Clone, Debug)]
pub struct FrameSender {
    tx: mpsc::UnboundedSender<Queued>,
    room: Arc<Semaphore>,
    capacity: usize,
}

fn writer_stopped() -> TransportError {
    TransportError::Closed {
        code: None,
        reason: "writer stopped".into(),
    }
}

impl FrameSender {
    fn new(tx: mpsc::UnboundedSender<Queued>, capacity: usize) -> (Self, Arc<Semaphore>) {
        let capacity = capacity.clamp(1, Semaphore::MAX_PERMITS);
        let room = Arc::new(Semaphore::new(capacity));
        let sender = FrameSender {
            tx,
            room: Arc::clone(&room),
            capacity,
        };
        (sender, room)
    }

    /// Queues one WAMP message frame at once, without waiting for room in
    /// the bounded queue (see [`FrameSender::send_async`]).
    pub fn send(&self, frame: Bytes) -> Result<(), TransportError> {
        self.send_outgoing(Outgoing::Message(frame))
    }

    /// Queues any [`Outgoing`] item at once (not counted against the bound).
    pub fn send_outgoing(&self, item: Outgoing) -> Result<(), TransportError> {
        self.tx
            .send(Queued { item, slot: false })
            .map_err(|_| writer_stopped())
    }

    /// Queues one WAMP message frame, first waiting while
    /// [`TransportOptions::send_queue`] frames are queued or being written.
    /// Fails once the connection is closed (also while waiting).
    pub async fn send_async(&self, frame: Bytes) -> Result<(), TransportError> {
        self.send_outgoing_async(Outgoing::Message(frame)).await
    }

    /// [`FrameSender::send_async`] for any [`Outgoing`] item.
    pub async fn send_outgoing_async(&self, item: Outgoing) -> Result<(), TransportError> {
        if self.tx.is_closed() {
            return Err(writer_stopped());
        }
        let permit = self.room.acquire().await.map_err(|_| writer_stopped())?;
        // The writer gives the slot back (add_permits) after writing it.
        permit.forget();
        self.tx
            .send(Queued { item, slot: true })
            .map_err(|_| writer_stopped())
    }

    /// Frames sent with [`FrameSender::send_async`] that are queued or
    /// being written now.
    pub fn queued(&self) -> usize {
        self.capacity.saturating_sub(self.room.available_permits())
    }

    /// The bound of [`FrameSender::send_async`] ([`TransportOptions::send_queue`]).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Queues a close (see [`Outgoing::Close`]).
    pub fn close(&self) -> Result<(), TransportError> {
        self.send_outgoing(Outgoing::Close {
            code: None,
            reason: String::new(),
        })
    }

    /// Whether the writer task has stopped (connection closed or failed).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// What [`FrameReceiver::recv_any`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A RawSocket message frame (type 0).
    Message(Bytes),
    /// A WebSocket text frame.
    Text(Bytes),
    /// A WebSocket binary frame.
    Binary(Bytes),
    /// A PING from the router (already answered).
    Ping(Bytes),
    /// A PONG from the router.
    Pong(Bytes),
}

/// The receiving side of a connection.
pub struct FrameReceiver {
    inner: ReceiverInner,
    closed: Option<(Option<u16>, String)>,
}

enum ReceiverInner {
    Raw(RawReader),
    Ws(SplitStream<WebSocketStream<MaybeTls>>),
}

struct RawReader {
    io: Box<dyn AsyncRead + Send + Unpin>,
    buf: BytesMut,
    max_len: usize,
    pong: mpsc::WeakUnboundedSender<Queued>,
}

impl FrameReceiver {
    /// The next message frame (WebSocket text or binary, RawSocket type 0);
    /// PINGs are answered and skipped, PONGs skipped.
    /// After the connection ends every call returns [`TransportError::Closed`]
    /// (or the error that ended it, the first time).
    pub async fn recv(&mut self) -> Result<Bytes, TransportError> {
        loop {
            match self.recv_any().await? {
                Incoming::Message(b) | Incoming::Text(b) | Incoming::Binary(b) => return Ok(b),
                Incoming::Ping(_) | Incoming::Pong(_) => {}
            }
        }
    }

    /// The next frame of any kind (tells WebSocket text from binary, and
    /// shows PINGs, already answered, and PONGs).
    pub async fn recv_any(&mut self) -> Result<Incoming, TransportError> {
        if let Some((code, reason)) = &self.closed {
            return Err(TransportError::Closed {
                code: *code,
                reason: reason.clone(),
            });
        }
        let r = match &mut self.inner {
            ReceiverInner::Raw(r) => r.recv().await,
            ReceiverInner::Ws(ws) => ws_recv(ws).await,
        };
        if let Err(e) = &r {
            self.closed = Some(match e {
                TransportError::Closed { code, reason } => (*code, reason.clone()),
                other => (None, other.to_string()),
            });
        }
        r
    }
}

async fn ws_recv(
    ws: &mut SplitStream<WebSocketStream<MaybeTls>>,
) -> Result<Incoming, TransportError> {
    match ws.next().await {
        None => Err(TransportError::Closed {
            code: None,
            reason: String::new(),
        }),
        Some(Err(e)) => Err(e.into()),
        Some(Ok(m)) => {
            if m.is_text() {
                Ok(Incoming::Text(m.into_payload().into()))
            } else if m.is_binary() {
                Ok(Incoming::Binary(m.into_payload().into()))
            } else if m.is_ping() {
                Ok(Incoming::Ping(m.into_payload().into()))
            } else if m.is_pong() {
                Ok(Incoming::Pong(m.into_payload().into()))
            } else if let Some((code, reason)) = m.as_close() {
                Err(TransportError::Closed {
                    code: Some(u16::from(code)),
                    reason: reason.to_owned(),
                })
            } else {
                Err(TransportError::Closed {
                    code: None,
                    reason: String::new(),
                })
            }
        }
    }
}

impl RawReader {
    async fn recv(&mut self) -> Result<Incoming, TransportError> {
        loop {
            if self.buf.len() >= 4 {
                let h = [self.buf[0], self.buf[1], self.buf[2], self.buf[3]];
                let header = rawsocket::decode_header(h)
                    .map_err(|e: FrameHeaderError| TransportError::Protocol(e.to_string()))?;
                let len = header.len;
                if len > self.max_len {
                    return Err(TransportError::Protocol(format!(
                        "RawSocket frame of {len} octets exceeds our maximum of {}",
                        self.max_len
                    )));
                }
                if self.buf.len() >= 4 + len {
                    self.buf.advance(4);
                    let payload = self.buf.split_to(len).freeze();
                    match header.kind {
                        FrameKind::Message => return Ok(Incoming::Message(payload)),
                        FrameKind::Ping => {
                            if let Some(tx) = self.pong.upgrade() {
                                let _ = tx.send(Queued {
                                    item: Outgoing::Pong(payload.clone()),
                                    slot: false,
                                });
                            }
                            return Ok(Incoming::Ping(payload));
                        }
                        FrameKind::Pong => return Ok(Incoming::Pong(payload)),
                        FrameKind::Reserved(t) => {
                            return Err(TransportError::Protocol(format!(
                                "RawSocket frame of reserved type {t}"
                            )))
                        }
                    }
                }
                self.buf.reserve(4 + len - self.buf.len());
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(64 * 1024);
            }
            let n = self.io.read_buf(&mut self.buf).await?;
            if n == 0 {
                return Err(if self.buf.is_empty() {
                    TransportError::Closed {
                        code: None,
                        reason: String::new(),
                    }
                } else {
                    TransportError::Protocol(format!(
                        "connection closed inside a frame ({} octets pending)",
                        self.buf.len()
                    ))
                });
            }
        }
    }
}

/// Connects to `url` (see [`Endpoint::parse`]) and performs the transport
/// handshake (WebSocket upgrade or RawSocket handshake). Spawns the writer
/// task, so it must run inside a tokio runtime.
pub async fn connect(url: &str, opts: TransportOptions) -> Result<Connection, TransportError> {
    match Endpoint::parse(url)? {
        Endpoint::WebSocket { url, addr } => connect_ws(&url, &addr, None, &opts).await,
        Endpoint::SecureWebSocket { url, addr, host } => {
            connect_ws(&url, &addr, Some(&host), &opts).await
        }
        Endpoint::RawSocketTcp { addr } => {
            let s = TcpStream::connect(&addr).await?;
            s.set_nodelay(true)?;
            let (r, w) = s.into_split();
            rawsocket_handshake(Box::new(r), Box::new(w), &opts).await
        }
        Endpoint::RawSocketUnix { path } => {
            let s = UnixStream::connect(&path).await?;
            let (r, w) = s.into_split();
            rawsocket_handshake(Box::new(r), Box::new(w), &opts).await
        }
    }
}

/// A WebSocket connection to `addr`; over TLS with the router `tls_host`
/// when it is given.
async fn connect_ws(
    url: &str,
    addr: &str,
    tls_host: Option<&str>,
    opts: &TransportOptions,
) -> Result<Connection, TransportError> {
    let offered = opts
        .subprotocols
        .clone()
        .unwrap_or_else(|| vec![opts.serializer.subprotocol().to_owned()]);
    let mut builder = tokio_websockets::ClientBuilder::new()
        .uri(url)
        .map_err(|e| TransportError::InvalidUrl(format!("{url}: {e}")))?
        .limits(tokio_websockets::Limits::default().max_payload_len(Some(64 << 20)))
        // Let a batch of small frames build up before a write.
        .config(tokio_websockets::Config::default().flush_threshold(64 * 1024));
    if !offered.is_empty() {
        let value = http::HeaderValue::from_str(&offered.join(", "))
            .map_err(|e| TransportError::InvalidUrl(format!("bad subprotocol list: {e}")))?;
        builder = builder
            .add_header(http::header::SEC_WEBSOCKET_PROTOCOL, value)
            .map_err(TransportError::from)?;
    }
    // Read the CA files before connecting: a bad file is not a network error.
    let tls_config = match tls_host {
        Some(_) => Some(crate::tls::client_config(opts.ca_file.as_deref())?),
        None => None,
    };
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let io = match (tls_host, tls_config) {
        (Some(host), Some(config)) => {
            MaybeTls::Tls(Box::new(crate::tls::handshake(tcp, host, config).await?))
        }
        _ => MaybeTls::Plain(tcp),
    };
    let (ws, response) = builder.connect_on(io).await?;
    let subprotocol = response
        .headers()
        .get(http::header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_owned());
    let wanted = opts.serializer.subprotocol();
    if opts.require_subprotocol && subprotocol.as_deref() != Some(wanted) {
        return Err(TransportError::Protocol(format!(
            "router selected subprotocol {subprotocol:?}, expected {wanted:?}"
        )));
    }
    let (sink, stream) = ws.split();
    let (tx, rx) = mpsc::unbounded_channel();
    let (sender, room) = FrameSender::new(tx, opts.send_queue);
    tokio::spawn(ws_writer(sink, rx, room, opts.serializer));
    Ok(Connection {
        sender,
        receiver: FrameReceiver {
            inner: ReceiverInner::Ws(stream),
            closed: None,
        },
        serializer: opts.serializer,
        info: TransportInfo::WebSocket { subprotocol },
    })
}

/// Gives the send-queue slots of written frames back, and fails waiting
/// senders once the writer stops.
struct Slots {
    room: Arc<Semaphore>,
    taken: usize,
}

impl Slots {
    fn count(&mut self, q: &Queued) {
        self.taken += usize::from(q.slot);
    }
    fn release(&mut self) {
        if self.taken > 0 {
            self.room.add_permits(self.taken);
            self.taken = 0;
        }
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        self.room.close();
    }
}

async fn ws_writer(
    mut sink: SplitSink<WebSocketStream<MaybeTls>, WsMessage>,
    mut rx: mpsc::UnboundedReceiver<Queued>,
    room: Arc<Semaphore>,
    ser: Serializer,
) {
    let mut slots = Slots { room, taken: 0 };
    let mut batch = Vec::with_capacity(64);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let mut closing = false;
        for q in batch.drain(..) {
            slots.count(&q);
            let msg = match q.item {
                Outgoing::Message(b) if ser.is_binary() => WsMessage::binary(b),
                // tokio-websockets validates text on receipt, not on send, so
                // a non-UTF-8 "text" frame goes out as is (useful for tests).
                Outgoing::Message(b) | Outgoing::Text(b) => {
                    WsMessage::text(tokio_websockets::Payload::from(b))
                }
                Outgoing::Binary(b) => WsMessage::binary(b),
                Outgoing::Ping(b) => WsMessage::ping(b),
                Outgoing::Pong(b) => WsMessage::pong(b),
                Outgoing::Raw(_) => continue,
                Outgoing::Close { code, reason } => {
                    closing = true;
                    let code = code
                        .and_then(|c| CloseCode::try_from(c).ok())
                        .filter(|c| !c.is_reserved())
                        .unwrap_or(CloseCode::NORMAL_CLOSURE);
                    WsMessage::close(Some(code), truncate_utf8(&reason, 123))
                }
            };
            if sink.feed(msg).await.is_err() {
                return;
            }
            if closing {
                break;
            }
        }
        if sink.flush().await.is_err() || closing {
            return;
        }
        slots.release();
    }
    // All senders are gone: close politely.
    let _ = sink
        .send(WsMessage::close(Some(CloseCode::NORMAL_CLOSURE), ""))
        .await;
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

async fn rawsocket_handshake(
    mut r: Box<dyn AsyncRead + Send + Unpin>,
    mut w: Box<dyn AsyncWrite + Send + Unpin>,
    opts: &TransportOptions,
) -> Result<Connection, TransportError> {
    let hello = opts
        .raw_handshake
        .unwrap_or_else(|| rawsocket::client_handshake(opts.serializer, opts.max_len_exp));
    w.write_all(&hello).await?;
    w.flush().await?;
    let mut reply = [0u8; 4];
    r.read_exact(&mut reply).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            TransportError::Closed {
                code: None,
                reason: "router closed the connection during the RawSocket handshake".into(),
            }
        } else {
            TransportError::Io(e)
        }
    })?;
    let accepted = rawsocket::parse_router_reply(reply).map_err(|e| match e {
        RouterReplyError::Refused { code } => TransportError::RawSocketRefused { code },
        RouterReplyError::NotRawSocket { first } => TransportError::Protocol(format!(
            "RawSocket handshake reply starts with {first:#04x}, not 0x7f"
        )),
        RouterReplyError::UnknownSerializer { id } => {
            TransportError::Protocol(format!("RawSocket handshake reply names serializer {id}"))
        }
        RouterReplyError::ReservedOctets => TransportError::Protocol(
            "RawSocket handshake reply has non-zero reserved octets".into(),
        ),
    })?;
    let serializer = accepted.serializer;
    let requested = Serializer::from_rawsocket_id(hello[1] & 0x0F);
    if requested != Some(serializer) {
        return Err(TransportError::Protocol(format!(
            "router echoed serializer {serializer}, we asked for {:?}",
            requested
        )));
    }
    let handshake = RawSocketHandshake {
        reply,
        serializer,
        max_len_exp: accepted.exp,
        max_len: accepted.max_len,
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let pong = tx.downgrade();
    let (sender, room) = FrameSender::new(tx, opts.send_queue);
    tokio::spawn(raw_writer(w, rx, room));
    Ok(Connection {
        sender,
        receiver: FrameReceiver {
            inner: ReceiverInner::Raw(RawReader {
                io: r,
                buf: BytesMut::with_capacity(64 * 1024),
                max_len: rawsocket::max_len(hello[1] >> 4),
                pong,
            }),
            closed: None,
        },
        serializer,
        info: TransportInfo::RawSocket(handshake),
    })
}

/// Appends a frame to `buf`; false if the payload is longer than RawSocket
/// can carry.
fn put_frame(buf: &mut BytesMut, kind: FrameKind, payload: &[u8]) -> bool {
    let len = payload.len();
    let Some(header) = rawsocket::encode_header(kind, len) else {
        return false;
    };
    buf.reserve(4 + len);
    buf.put_slice(&header);
    buf.put_slice(payload);
    true
}

async fn raw_writer(
    mut w: Box<dyn AsyncWrite + Send + Unpin>,
    mut rx: mpsc::UnboundedReceiver<Queued>,
    room: Arc<Semaphore>,
) {
    let mut slots = Slots { room, taken: 0 };
    let mut batch = Vec::with_capacity(64);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let mut closing = false;
        buf.clear();
        for q in batch.drain(..) {
            slots.count(&q);
            let ok = match q.item {
                Outgoing::Message(b) | Outgoing::Text(b) | Outgoing::Binary(b) => {
                    put_frame(&mut buf, FrameKind::Message, &b)
                }
                Outgoing::Ping(b) => put_frame(&mut buf, FrameKind::Ping, &b),
                Outgoing::Pong(b) => put_frame(&mut buf, FrameKind::Pong, &b),
                Outgoing::Raw(b) => {
                    buf.put_slice(&b);
                    true
                }
                Outgoing::Close { .. } => {
                    closing = true;
                    break;
                }
            };
            if !ok {
                // Longer than RawSocket can frame: the connection cannot go on.
                closing = true;
                break;
            }
        }
        if !buf.is_empty() && w.write_all(&buf).await.is_err() {
            return;
        }
        if closing {
            let _ = w.shutdown().await;
            return;
        }
        slots.release();
        if buf.capacity() > 4 << 20 {
            buf = BytesMut::with_capacity(64 * 1024);
        }
    }
    let _ = w.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            Endpoint::parse("ws://127.0.0.1:8080/ws").ok(),
            Some(Endpoint::WebSocket {
                url: "ws://127.0.0.1:8080/ws".into(),
                addr: "127.0.0.1:8080".into()
            })
        );
        assert_eq!(
            Endpoint::parse("ws://localhost/ws").ok(),
            Some(Endpoint::WebSocket {
                url: "ws://localhost/ws".into(),
                addr: "localhost:80".into()
            })
        );
        assert_eq!(
            Endpoint::parse("rs://127.0.0.1:8081").ok(),
            Some(Endpoint::RawSocketTcp {
                addr: "127.0.0.1:8081".into()
            })
        );
        assert_eq!(
            Endpoint::parse("tcp://[::1]:8081/").ok(),
            Some(Endpoint::RawSocketTcp {
                addr: "[::1]:8081".into()
            })
        );
        assert_eq!(
            Endpoint::parse("unix:/tmp/s.sock").ok(),
            Some(Endpoint::RawSocketUnix {
                path: "/tmp/s.sock".into()
            })
        );
        assert_eq!(
            Endpoint::parse("unix:///tmp/s.sock").ok(),
            Some(Endpoint::RawSocketUnix {
                path: "/tmp/s.sock".into()
            })
        );
        assert_eq!(
            Endpoint::parse("wss://router.example.com/ws").ok(),
            Some(Endpoint::SecureWebSocket {
                url: "wss://router.example.com/ws".into(),
                addr: "router.example.com:443".into(),
                host: "router.example.com".into(),
            })
        );
        assert_eq!(
            Endpoint::parse("wss://127.0.0.1:8443/ws?x=1").ok(),
            Some(Endpoint::SecureWebSocket {
                url: "wss://127.0.0.1:8443/ws?x=1".into(),
                addr: "127.0.0.1:8443".into(),
                host: "127.0.0.1".into(),
            })
        );
        assert_eq!(
            Endpoint::parse("wss://[::1]:8443/ws").ok(),
            Some(Endpoint::SecureWebSocket {
                url: "wss://[::1]:8443/ws".into(),
                addr: "[::1]:8443".into(),
                host: "::1".into(),
            })
        );
        assert!(Endpoint::parse("wss://").is_err());
        assert!(Endpoint::parse("wss://:8443/ws").is_err());
        assert!(Endpoint::parse("http://x:1").is_err());
        assert!(Endpoint::parse("rs://host").is_err());
        assert!(Endpoint::parse("ws://").is_err());
        assert!(Endpoint::parse("unix:").is_err());
    }

    #[test]
    fn frames_headers() {
        let mut b = BytesMut::new();
        assert!(put_frame(&mut b, FrameKind::Message, b"abc"));
        assert_eq!(&b[..], &[0, 0, 0, 3, b'a', b'b', b'c']);
        let mut b = BytesMut::new();
        assert!(put_frame(&mut b, FrameKind::Ping, &vec![0u8; 0x012345]));
        assert_eq!(&b[..4], &[1, 0x01, 0x23, 0x45]);
        let mut b = BytesMut::new();
        assert!(put_frame(
            &mut b,
            FrameKind::Message,
            &vec![0u8; RAWSOCKET_MAX_FRAME]
        ));
        assert_eq!(&b[..4], &[0x08, 0, 0, 0]);
        let mut b = BytesMut::new();
        assert!(!put_frame(
            &mut b,
            FrameKind::Message,
            &vec![0u8; RAWSOCKET_MAX_FRAME + 1]
        ));
        assert!(b.is_empty());
    }
}
