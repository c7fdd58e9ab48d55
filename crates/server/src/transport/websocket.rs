//! WAMP over WebSocket. hyper answers the HTTP upgrade (we choose the
//! subprotocol, or refuse with a clear HTTP error); then the upgraded
//! stream is framed by [`super::wsframe`] over a read buffer of our own,
//! which shrinks back to 128 bytes when the connection is idle.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use switchyard_router::logsafe::Clip;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::{Bytes, BytesMut};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use switchyard_proto::Serializer;
use switchyard_router::outbound_queue::Batch;
use switchyard_router::{Connection, Flow, OutboundRx, Outgoing, Peer, Router, TransportInfo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::Instrument;

use super::origin::OriginPolicy;
use super::wsframe::{self, Decoder, Event, Kind, Violation};
use super::{
    finish_writer, hello_wait, is_dead, log_hello_wait, ping_timer, tick, Liveness, Settings,
    MAX_BATCH_BYTES, MAX_BATCH_FRAMES,
};

pub(super) use super::wsframe::Message;

const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// What one queued PONG costs: its payload (at most 125 bytes) and header.
fn pong_cost(payload: usize) -> usize {
    payload + 14
}

/// What a WebSocket listener needs per request.
#[derive(Clone)]
pub struct Endpoint {
    pub router: Arc<Router>,
    pub settings: Settings,
    pub path: String,
    /// `allowed_origins`; None: every origin may connect.
    pub origins: Option<Arc<OriginPolicy>>,
    /// `metrics_path`: GET here returns the router's counters.
    pub metrics_path: Option<String>,
    /// Other pages this listener serves beside its WAMP endpoint (the
    /// admin page, `[admin]`), if any.
    pub pages: Option<Arc<dyn Pages>>,
    /// WAMP, or the echo of a `websocket-testee` listener.
    pub mode: Mode,
}

/// What a WebSocket listener does with the messages it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// WAMP: a subprotocol is required, messages go to the router.
    Wamp,
    /// The conformance testee (`type = "websocket-testee"`): any or no
    /// subprotocol, every text and binary message is sent back
    /// (`super::testee`).
    Echo,
}

/// HTTP pages a WebSocket listener serves beside its WAMP endpoint: the
/// answer to a request for one of their paths, None for any other path.
pub trait Pages: Send + Sync {
    fn answer(&self, method: &Method, path: &str) -> Option<Response<Full<Bytes>>>;
}

fn text_response(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body + "\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn supported_list() -> String {
    Serializer::ALL.map(|s| s.subprotocol()).join(", ")
}

fn header_has_token(req: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    req.headers().get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Answers one HTTP request on a WebSocket listener.
pub async fn handle_http(
    req: Request<Incoming>,
    ep: Endpoint,
    label: String,
    mut transport: TransportInfo,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    transport.origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if ep.metrics_path.as_deref() == Some(req.uri().path()) && req.method() == Method::GET {
        let mut r = text_response(StatusCode::OK, ep.router.metrics().render());
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        );
        return Ok(r);
    }
    if let Some(r) = ep
        .pages
        .as_ref()
        .and_then(|pages| pages.answer(req.method(), req.uri().path()))
    {
        return Ok(r);
    }
    if req.uri().path() != ep.path {
        return Ok(text_response(
            StatusCode::NOT_FOUND,
            format!("not found: the WAMP WebSocket endpoint is {}", ep.path),
        ));
    }
    if let (Some(policy), Some(origin)) = (&ep.origins, req.headers().get(header::ORIGIN)) {
        let allowed = origin.to_str().is_ok_and(|o| policy.allows(o));
        if !allowed {
            let shown = String::from_utf8_lossy(origin.as_bytes())
                .escape_debug()
                .to_string();
            tracing::info!(peer = %label, origin = %Clip(&shown), "WebSocket upgrade refused: origin not in allowed_origins");
            return Ok(text_response(
                StatusCode::FORBIDDEN,
                format!(
                    "origin not allowed: \"{shown}\" is not in this listener's allowed_origins"
                ),
            ));
        }
    }
    if req.method() != hyper::Method::GET {
        return Ok(text_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "the WAMP WebSocket endpoint only accepts GET with a WebSocket upgrade".into(),
        ));
    }
    if !header_has_token(&req, header::UPGRADE, "websocket")
        || !header_has_token(&req, header::CONNECTION, "upgrade")
    {
        let mut r = text_response(
            StatusCode::UPGRADE_REQUIRED,
            format!(
                "this is a WAMP WebSocket endpoint: connect with a WebSocket client offering one of the subprotocols {}",
                supported_list()
            ),
        );
        r.headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        return Ok(r);
    }
    if req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        let mut r = text_response(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported WebSocket version: use 13".into(),
        );
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return Ok(r);
    }
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return Ok(text_response(
            StatusCode::BAD_REQUEST,
            "missing Sec-WebSocket-Key header".into(),
        ));
    };
    let offered: Vec<String> = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if ep.mode == Mode::Echo {
        return Ok(upgrade(req, &key, ep, label, transport, None));
    }
    let Some(serializer) = offered.iter().find_map(|p| Serializer::from_subprotocol(p)) else {
        let got = if offered.is_empty() {
            "none".to_string()
        } else {
            offered.join(", ")
        };
        tracing::info!(peer = %label, offered = %Clip(&got), "WebSocket upgrade refused: no supported WAMP subprotocol");
        return Ok(text_response(
            StatusCode::BAD_REQUEST,
            format!(
                "no supported WAMP subprotocol requested (offered: {got}); offer one of {}",
                supported_list()
            ),
        ));
    };
    Ok(upgrade(req, &key, ep, label, transport, Some(serializer)))
}

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key` (RFC 6455 4.2.2).
pub(super) fn accept_key(key: &[u8]) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key);
    sha.update(WS_GUID.as_bytes());
    B64.encode(sha.digest().bytes())
}

/// Answers 101 Switching Protocols and serves the upgraded connection in
/// its own task: WAMP with `serializer`, or the echo (None).
fn upgrade(
    mut req: Request<Incoming>,
    key: &HeaderValue,
    ep: Endpoint,
    label: String,
    transport: TransportInfo,
    serializer: Option<Serializer>,
) -> Response<Full<Bytes>> {
    let accept = accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(connection(on_upgrade, ep, label, transport, serializer));

    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).unwrap_or_else(|_| HeaderValue::from_static("")),
    );
    if let Some(serializer) = serializer {
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(serializer.subprotocol()),
        );
    }
    r
}

/// The task of one upgraded connection, for its whole life: WAMP with
/// `serializer`, or the echo (None).
///
/// An async function keeps its by-value arguments in its future for as
/// long as it runs, even after it moved them on, and each nested call adds
/// its own: this task lives as long as the session, so the arguments wait
/// for the upgrade in a box (freed once moved on) and the session's future
/// is built by plain functions ([`serve`], [`serve_session`]) that keep
/// nothing. The size test below bounds the result.
fn connection(
    on_upgrade: hyper::upgrade::OnUpgrade,
    ep: Endpoint,
    label: String,
    transport: TransportInfo,
    serializer: Option<Serializer>,
) -> impl std::future::Future<Output = ()> + Send {
    let args = Box::new((ep, label, transport));
    async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(peer = %args.1, "WebSocket upgrade failed: {e}");
                return;
            }
        };
        // Out of the box, which is freed here (not when the task ends).
        let (ep, label, transport) = {
            let args = args;
            *args
        };
        let (reader, writer) = tokio::io::split(TokioIo::new(upgraded));
        match serializer {
            Some(serializer) => {
                let label = format!("{label} websocket/{serializer}");
                serve(
                    reader,
                    writer,
                    BytesMut::new(),
                    serializer,
                    ep,
                    label,
                    transport,
                )
                .await
            }
            // Boxed: the testee's future would set the size of every WAMP
            // connection's task.
            None => {
                Box::pin(super::testee::serve(
                    reader,
                    writer,
                    ep,
                    format!("{label} websocket-testee"),
                ))
                .await
            }
        }
    }
}

/// The WAMP session of an upgraded connection, inside the connection's span.
/// `read` holds what the peer sent after its upgrade request, if any.
pub(super) fn serve<R, W>(
    reader: R,
    writer: W,
    read: BytesMut,
    serializer: Serializer,
    ep: Endpoint,
    label: String,
    transport: TransportInfo,
) -> impl std::future::Future<Output = ()> + Send
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (peer, rx) = Peer::bounded(serializer, ep.settings.outbound(), usize::MAX, label);
    // Every line logged while serving this connection carries its span
    // (peer, and session, realm and authid once the session exists).
    let span = peer.span().clone();
    let session =
        span.in_scope(|| serve_session(reader, writer, read, serializer, ep, transport, peer, rx));
    session.instrument(span)
}

/// [`serve`] once the peer exists: starts the writer and returns the
/// reader, which holds only what it uses.
#[allow(clippy::too_many_arguments)]
fn serve_session<R, W>(
    mut reader: R,
    writer: W,
    read: BytesMut,
    serializer: Serializer,
    ep: Endpoint,
    transport: TransportInfo,
    peer: Arc<Peer>,
    rx: OutboundRx,
) -> impl std::future::Future<Output = ()> + Send
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let Endpoint {
        router, settings, ..
    } = ep;
    let shared = Shared::new();
    let writer = tokio::spawn(write_loop(
        writer,
        rx,
        peer.clone(),
        Framing::Wamp(serializer),
        settings.clone(),
        shared.clone(),
        None,
    ));
    let mut wamp = WampReader {
        conn: Connection::new(router, peer.clone(), transport),
        serializer,
        handshake_timeout: settings.handshake_timeout,
    };
    async move {
        // The label is the peer's (`Peer::label`), not kept twice.
        let flow = read_loop(
            &mut reader,
            read,
            &mut wamp,
            &peer,
            &settings,
            &shared,
            peer.label(),
        )
        .await;
        wamp.conn.leave();
        drop(wamp);
        finish_writer(flow, &peer, writer).await;
    }
}

/// The read half of an upgraded connection.
pub(super) type WsRead = tokio::io::ReadHalf<TokioIo<hyper::upgrade::Upgraded>>;
/// The write half of an upgraded connection.
pub(super) type WsWrite = tokio::io::WriteHalf<TokioIo<hyper::upgrade::Upgraded>>;

/// What the reader and the writer of one connection share: when the peer
/// was last heard from, the PONGs owed, and how the writer is to close.
pub(super) struct Shared {
    liveness: Liveness,
    pongs: Pongs,
    /// The CLOSE the writer ends with (see [`Closing`]), 0 until the
    /// reader decides: a CLOSE 1000.
    closing: AtomicU32,
}

/// How the writer closes, as [`Shared::closing`] holds it: the status code
/// in the low 16 bits, and these flags.
struct Closing;

impl Closing {
    /// Answers the peer's CLOSE, which had no status code: an empty CLOSE.
    const EMPTY: u32 = 1 << 16;
    /// Answers the peer's CLOSE (after what is queued), with its code.
    const ANSWER: u32 = 1 << 17;
    /// The peer broke the protocol: close at once with the code, writing
    /// nothing more of what is queued.
    const VIOLATION: u32 = 1 << 18;
}

impl Shared {
    pub(super) fn new() -> Arc<Shared> {
        Arc::new(Shared {
            liveness: Liveness {
                start: std::time::Instant::now(),
                last_seen_ms: std::sync::atomic::AtomicU64::new(0),
            },
            pongs: Pongs::default(),
            closing: AtomicU32::new(0),
        })
    }

    /// The peer broke the protocol: the writer closes at once.
    fn violated(&self) -> bool {
        self.closing.load(Ordering::Relaxed) & Closing::VIOLATION != 0
    }

    /// The CLOSE frame the writer ends with.
    fn close_payload(&self) -> Bytes {
        let c = self.closing.load(Ordering::Relaxed);
        let code = (c & 0xffff) as u16;
        if c & Closing::EMPTY != 0 {
            Bytes::new()
        } else if c & Closing::ANSWER != 0 {
            wsframe::close_payload(code, "")
        } else if c & Closing::VIOLATION != 0 {
            let reason = match code {
                1009 => "message too big",
                1007 => "invalid UTF-8",
                _ => "protocol error",
            };
            wsframe::close_payload(code, reason)
        } else {
            wsframe::close_payload(1000, "")
        }
    }
}

/// PONGs owed for the PINGs read, until the writer has written them.
#[derive(Default)]
struct Pongs {
    queue: parking_lot::Mutex<std::collections::VecDeque<Bytes>>,
    /// Bytes owed (see [`pong_cost`]): queued, or taken by the writer and
    /// not written yet.
    owed: AtomicUsize,
    flush: tokio::sync::Notify,
}

impl Pongs {
    /// Queues the PONG of a PING; false if more than `max_bytes` would be
    /// owed (a single PONG is always allowed).
    fn put(&self, payload: Bytes, max_bytes: usize) -> bool {
        let cost = pong_cost(payload.len());
        let owed = self.owed.fetch_add(cost, Ordering::Relaxed) + cost;
        if owed > max_bytes.max(pong_cost(wsframe::MAX_CONTROL_PAYLOAD)) {
            return false;
        }
        self.queue.lock().push_back(payload);
        self.flush.notify_one();
        true
    }
}

/// What the reader does with the text and binary messages it reads: the
/// WAMP session ([`WampReader`]) or the testee's echo
/// (`super::testee::EchoReader`). Everything else (PING, PONG, CLOSE,
/// limits, keepalive) is [`read_loop`]'s, the same for both.
pub(super) trait Reader {
    /// A text or binary message arrived; `Flow::Close` stops reading.
    /// Writers' wake-ups may be deferred to `batch`, which [`read_loop`]
    /// flushes before it waits for the socket; flush it before awaiting
    /// anything else.
    fn message(
        &mut self,
        msg: Message,
        batch: &mut Batch,
    ) -> impl std::future::Future<Output = Flow> + Send;
    /// Resolves when the connection must close although the peer is
    /// still there (WAMP: no HELLO in time).
    fn expired(&self) -> impl std::future::Future<Output = ()> + Send;
    /// The largest message taken now, at most `max_message_size` (WAMP:
    /// `max_handshake_message_size` before the session exists), checked on
    /// each frame header, before the frame is buffered.
    fn message_limit(&self, max_message_size: usize) -> usize {
        max_message_size
    }
    /// A frame announced a message of `len` bytes over a `message_limit`
    /// smaller than `max_message_size`: the reader says why (WAMP: ABORT)
    /// and the connection closes.
    fn refuse_message(&mut self, _len: usize) -> Flow {
        Flow::Close
    }
}

/// The WAMP session of a connection.
struct WampReader {
    conn: Connection,
    serializer: Serializer,
    handshake_timeout: std::time::Duration,
}

impl Reader for WampReader {
    async fn message(&mut self, msg: Message, batch: &mut Batch) -> Flow {
        let serializer = self.serializer;
        if msg.text == serializer.is_binary() {
            let kind = if msg.text { "text" } else { "binary" };
            return self.conn.protocol_violation(&format!(
                "received a {kind} WebSocket message, but {} requires {} messages",
                serializer.subprotocol(),
                if serializer.is_binary() {
                    "binary"
                } else {
                    "text"
                }
            ));
        }
        let conn = &mut self.conn;
        let mut flow = batch.route(|| conn.handle_frame(&msg.payload));
        if flow == Flow::Suspend {
            batch.flush();
            let peer = self.conn.peer().clone();
            flow = tokio::select! {
                // Boxed: rare (authorizer, authentication, rate pause),
                // and the reader's future would otherwise reserve its room
                // for the session's whole life.
                f = Box::pin(self.conn.resume()) => f,
                _ = peer.killed().cancelled() => Flow::Close,
            };
        }
        flow
    }

    fn message_limit(&self, max_message_size: usize) -> usize {
        self.conn.frame_limit(max_message_size)
    }

    fn refuse_message(&mut self, len: usize) -> Flow {
        self.conn.refuse_handshake_frame(len)
    }

    async fn expired(&self) {
        let why = hello_wait(&self.conn, self.handshake_timeout).await;
        log_hello_wait(why, self.conn.peer().label(), self.handshake_timeout);
    }
}

/// Smallest read buffer: what an idle connection holds. A longer message
/// is read on at once into a growing buffer (`read_more`).
const MIN_READ: usize = 128;
/// Largest read size a busy connection grows to (a frame announced as
/// longer gets the room it needs, up to `max_message_size`).
const MAX_READ: usize = 64 * 1024;

/// Reads the connection until it ends, starting with what `buf` already
/// holds (bytes read with the upgrade request): text and binary messages go to
/// `reader`; PINGs are answered (the writer writes the PONGs) within
/// `max_pending_pong_bytes`; a CLOSE is answered; a message over
/// `max_message_size` closes with 1009, a protocol error with 1002 (1007
/// for text that is not UTF-8). Returns how the writer should end.
///
/// The messages of one read are one batch: the writers they queue frames
/// for are woken once, before the loop reads again (or after
/// `outbound_queue::MAX_BATCH_FRAMES` messages, or when the loop ends), so
/// that each writer wakes once for the batch.
///
/// Frames are split off the read buffer without copying. Its read size
/// adapts: it doubles while reads fill it (up to 64 KiB) and falls back to
/// 128 bytes when the connection is quiet, so that an idle connection holds
/// only a small buffer.
pub(super) async fn read_loop<S: AsyncRead + Unpin, R: Reader>(
    io: &mut S,
    mut buf: BytesMut,
    reader: &mut R,
    peer: &Peer,
    settings: &Settings,
    shared: &Shared,
    label: &str,
) -> Flow {
    let mut batch = Batch::new();
    let mut decoder = Decoder::new(settings.max_message_size);
    let mut read_size = MIN_READ;
    loop {
        loop {
            // Before the session exists the reader takes less.
            let limit = reader.message_limit(settings.max_message_size);
            decoder.set_max_message(limit);
            let event = match decoder.decode(&mut buf) {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(Violation::TooBig { len, .. }) if limit < settings.max_message_size => {
                    return reader.refuse_message(len);
                }
                Err(v) => {
                    if let Violation::TooBig { .. } = v {
                        tracing::info!(peer = %label, "{v}: closing with 1009");
                    } else {
                        tracing::debug!(peer = %label, "{v}: closing with {}", v.code());
                    }
                    shared
                        .closing
                        .store(Closing::VIOLATION | u32::from(v.code()), Ordering::Relaxed);
                    return Flow::Close;
                }
            };
            match event {
                Event::Message(msg) => {
                    if reader.message(msg, &mut batch).await == Flow::Close {
                        return Flow::Close;
                    }
                }
                Event::Ping(payload) => {
                    if !shared.pongs.put(payload, settings.max_pending_pong_bytes) {
                        peer.kill(format!(
                            "WebSocket PINGs without reading the PONGs: more than {} bytes owed (max_pending_pong_bytes)",
                            settings.max_pending_pong_bytes
                        ));
                        return Flow::Close;
                    }
                }
                Event::Pong => {}
                Event::Close(code) => {
                    let closing = match code {
                        None => Closing::EMPTY,
                        Some(code) => Closing::ANSWER | u32::from(code),
                    };
                    shared.closing.store(closing, Ordering::Relaxed);
                    return Flow::Close;
                }
            }
        }
        if buf.is_empty() {
            buf.reserve(read_size);
            // `reserve` takes back the whole allocation once the messages
            // split off it are gone: a connection gone quiet after a burst
            // would wait with all of it. It waits with `read_size` bytes.
            if buf.capacity() > 2 * read_size {
                buf = BytesMut::with_capacity(read_size);
            }
        } else if buf.capacity() == buf.len() {
            buf.reserve(read_size);
        }
        let spare = buf.capacity() - buf.len();
        // What the last read gave is routed: wake its writers, then wait.
        batch.flush();
        let read = tokio::select! {
            r = io.read_buf(&mut buf) => r,
            _ = peer.killed().cancelled() => return Flow::Close,
            _ = reader.expired() => return Flow::Close,
        };
        match read {
            Ok(0) => return Flow::Continue,
            Err(e) => {
                super::log_read_error(label, &e);
                return Flow::Continue;
            }
            Ok(n) => {
                shared.liveness.seen();
                read_size = if n >= spare {
                    (read_size * 2).min(MAX_READ)
                } else if n < read_size / 4 {
                    MIN_READ
                } else {
                    read_size
                };
                if n >= spare {
                    read_more(io, &mut buf, &mut read_size);
                }
            }
        }
    }
}

/// After a read that filled the buffer: reads what else is already there
/// (without waiting), growing the buffer, so that a burst is routed at once
/// as one large read would have it (routing its first messages alone would
/// wake their subscribers' writers for a few messages each). Stops at
/// `MAX_READ` buffered; an end or error is left to the next read.
fn read_more<S: AsyncRead + Unpin>(io: &mut S, buf: &mut BytesMut, read_size: &mut usize) {
    use futures_util::FutureExt;
    while buf.len() < MAX_READ {
        buf.reserve(*read_size);
        let spare = buf.capacity() - buf.len();
        match io.read_buf(buf).now_or_never() {
            Some(Ok(n)) if n > 0 => {
                // The same sizing as `read_loop`'s reads.
                if n < spare {
                    if n < *read_size / 4 {
                        *read_size = MIN_READ;
                    }
                    return;
                }
                *read_size = (*read_size * 2).min(MAX_READ);
            }
            _ => return,
        }
    }
}

/// How the writer frames what the outbound queue holds.
#[derive(Clone, Copy)]
pub(super) enum Framing {
    /// WAMP messages: binary or text as the serializer requires.
    Wamp(Serializer),
    /// The testee's echoes, tagged text or binary (`super::testee::untag`).
    Echo,
}

impl Framing {
    fn frame(self, f: Bytes) -> Frame {
        match self {
            Framing::Wamp(s) if s.is_binary() => Frame::new(Kind::Binary, f),
            Framing::Wamp(_) => Frame::new(Kind::Text, f),
            Framing::Echo => {
                let msg = super::testee::untag(f);
                let kind = if msg.text { Kind::Text } else { Kind::Binary };
                Frame::new(kind, msg.payload)
            }
        }
    }
}

/// A frame of a write batch, its header encoded when it is queued.
struct Frame {
    kind: Kind,
    header: wsframe::Header,
    payload: Bytes,
}

impl Frame {
    fn new(kind: Kind, payload: Bytes) -> Frame {
        Frame {
            kind,
            header: wsframe::header(kind, payload.len()),
            payload,
        }
    }
}

/// The writer: writes the outbound queue, the PONGs and the keepalive
/// PINGs, and the CLOSE. After each write, `written` (if any) holds the
/// number of queued messages written so far. It ends as soon as the
/// connection is killed, even in the middle of a write: a peer that stopped
/// reading blocks a write for good, and the connection, its socket and what
/// is queued for it would stay until that peer closed (a slow consumer cut
/// from its session would still hold all of it).
///
/// A plain function returning the task's future: an async one would keep a
/// second copy of the arguments beside `write_frames`' for the task's life.
/// The loop's future is boxed so that the task holds it once (`select!`
/// moves a future it owns into its own state, beside the captured one).
pub(super) fn write_loop<W: AsyncWrite + Unpin + Send + 'static>(
    writer: W,
    rx: OutboundRx,
    peer: Arc<Peer>,
    framing: Framing,
    settings: Settings,
    shared: Arc<Shared>,
    written: Option<tokio::sync::watch::Sender<u64>>,
) -> impl std::future::Future<Output = ()> + Send {
    let killed = peer.killed().clone();
    let mut frames = Box::pin(write_frames(
        writer, rx, peer, framing, settings, shared, written,
    ));
    async move {
        tokio::select! {
            biased;
            _ = killed.cancelled() => {}
            _ = &mut frames => {}
        }
    }
}

async fn write_frames<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut rx: OutboundRx,
    peer: Arc<Peer>,
    framing: Framing,
    settings: Settings,
    shared: Arc<Shared>,
    written: Option<tokio::sync::watch::Sender<u64>>,
) {
    let (liveness, pongs) = (&shared.liveness, &shared.pongs);
    let mut timer = ping_timer(&settings);
    // Grows to the largest batch seen; not pre-sized, so idle connections stay small.
    let mut batch: Vec<Frame> = Vec::new();
    loop {
        let mut close = false;
        let mut messages = 0;
        tokio::select! {
            biased;
            _ = peer.killed().cancelled() => break,
            item = rx.recv() => match item {
                Some(Outgoing::Frame(_)) if shared.violated() => close = true,
                Some(Outgoing::Frame(f)) => {
                    messages += 1;
                    batch.push(framing.frame(f));
                }
                Some(Outgoing::Close) | None => close = true,
            },
            _ = pongs.flush.notified() => {}
            _ = tick(&mut timer) => {
                if is_dead(&settings, liveness) {
                    peer.kill(format!("peer silent for {:?}: keepalive timed out", liveness.silent_for()));
                    break;
                }
                batch.push(Frame::new(Kind::Ping, Bytes::from_static(b"switchyard")));
            }
        }
        if !close && !shared.violated() {
            let mut bytes: usize = batch.iter().map(|f| f.payload.len()).sum();
            while batch.len() < MAX_BATCH_FRAMES && bytes < MAX_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(Outgoing::Frame(f)) => {
                        messages += 1;
                        bytes += f.len();
                        batch.push(framing.frame(f));
                    }
                    Ok(Outgoing::Close) => {
                        close = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        // What this batch took leaves the queue's counts at once (not
        // one frame at a time).
        rx.settle();
        // Every write carries the PONGs owed so far, first: their PINGs
        // came before the messages of this batch (a message's last frame
        // may follow a PING, and is answered after it).
        let mut pong_bytes = 0;
        if pongs.owed.load(Ordering::Relaxed) > 0 {
            let owed = std::mem::take(&mut *pongs.queue.lock());
            pong_bytes = owed.iter().map(|p| pong_cost(p.len())).sum();
            batch.splice(0..0, owed.into_iter().map(|p| Frame::new(Kind::Pong, p)));
        }
        if shared.violated() {
            // Nothing more but the CLOSE.
            batch.retain(|f| f.kind == Kind::Pong);
            messages = 0;
            close = true;
        }
        if !batch.is_empty() {
            if let Err(e) = write_batch(&mut writer, &batch).await {
                peer.kill(format!("write failed: {e}"));
                break;
            }
            if batch.capacity() > 4 {
                batch.clear();
            } else {
                // A quiet connection does not keep the room of its last
                // write; a busy one keeps the room of its batches.
                batch = Vec::new();
            }
            if pong_bytes > 0 {
                pongs.owed.fetch_sub(pong_bytes, Ordering::Relaxed);
            }
            if let (Some(w), true) = (&written, messages > 0) {
                w.send_modify(|count| *count += messages);
            }
        }
        if close {
            send_close(&mut writer, &shared).await;
            // The CLOSE is written: stop the reader too.
            peer.stop();
            break;
        }
    }
}

impl super::WireFrame for Frame {
    fn header(&self) -> &[u8] {
        self.header.as_bytes()
    }
    fn payload(&self) -> &[u8] {
        &self.payload
    }
}

/// Writes the frames' headers and payloads, then flushes.
async fn write_batch<W: AsyncWrite + Unpin>(
    writer: &mut W,
    batch: &[Frame],
) -> std::io::Result<()> {
    super::write_batch(writer, batch).await
}

/// Ends the WebSocket with a CLOSE: the answer to the peer's CLOSE (its
/// code), the code of the peer's violation (1009 after a message over
/// `max_message_size`), else 1000; then shuts the write side. Bounded: the
/// peer may not read.
async fn send_close<W: AsyncWrite + Unpin>(writer: &mut W, shared: &Shared) {
    let close = Frame::new(Kind::Close, shared.close_payload());
    let closing = async {
        write_batch(writer, std::slice::from_ref(&close)).await?;
        writer.shutdown().await
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), closing).await;
}

/// A WAMP endpoint on `/ws` with the test settings, for the transports'
/// unit tests.
#[cfg(test)]
pub(super) fn test_endpoint() -> Endpoint {
    Endpoint {
        router: Router::new(Vec::new()),
        settings: crate::transport::test_settings(),
        path: "/ws".into(),
        origins: None,
        metrics_path: None,
        pages: None,
        mode: Mode::Wamp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The task of an upgraded connection lives as long as the session: its
    /// future's size is memory per idle session. Nested async functions
    /// each kept their by-value arguments (the stream, the endpoint, the
    /// settings twice), the testee's branch and rare waits reserved their
    /// room: 4,328 bytes in a debug build before, 1,256 after. The bound
    /// catches a regrowth.
    #[test]
    fn a_connection_task_stays_small() {
        let ep = test_endpoint();
        let mut req = Request::new(());
        let task = connection(
            hyper::upgrade::on(&mut req),
            ep,
            "peer".into(),
            TransportInfo::new("websocket", None),
            Some(Serializer::Json),
        );
        let size = std::mem::size_of_val(&task);
        assert!(
            size <= 1536,
            "a WebSocket connection's task is {size} bytes"
        );
    }
}
