//! WAMP over WebSocket. hyper answers the HTTP upgrade (we choose the
//! subprotocol, or refuse with a clear HTTP error), then tokio-websockets
//! frames the upgraded stream.

use std::sync::Arc;
use switchyard_router::logsafe::Clip;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use switchyard_proto::Serializer;
use switchyard_router::outbound_queue::Batch;
use switchyard_router::{Connection, Flow, OutboundRx, Outgoing, Peer, Router, TransportInfo};
use tokio_websockets::{CloseCode, Config, Limits, Message, ServerBuilder, WebSocketStream};
use tracing::Instrument;

use super::origin::OriginPolicy;
use super::{
    finish_writer, hello_wait, is_dead, log_hello_wait, ping_timer, tick, Liveness, Settings,
    MAX_BATCH_BYTES, MAX_BATCH_FRAMES,
};

const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// PONGs the codec queued (it answers every PING) and the writer has not
/// flushed yet. The reader counts them and wakes the writer to flush; a
/// peer that sends PINGs without reading the PONGs is disconnected.
#[derive(Default)]
struct Pongs {
    owed: std::sync::atomic::AtomicUsize,
    flush: tokio::sync::Notify,
}

/// What one queued PONG costs: its payload (at most 125 bytes) and header.
fn pong_cost(payload: usize) -> usize {
    payload + 14
}

pub(super) type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

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
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WS_GUID.as_bytes());
    let accept = B64.encode(sha.digest().bytes());

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
        let limits = Limits::default().max_payload_len(Some(ep.settings.max_message_size));
        let ws = ServerBuilder::new()
            .limits(limits)
            .config(Config::default())
            .serve(TokioIo::new(upgraded));
        match serializer {
            Some(serializer) => {
                let label = format!("{label} websocket/{serializer}");
                serve(ws, serializer, ep, label, transport).await
            }
            // Boxed: the testee's future would set the size of every WAMP
            // connection's task.
            None => {
                Box::pin(super::testee::serve(
                    ws,
                    ep,
                    format!("{label} websocket-testee"),
                ))
                .await
            }
        }
    }
}

/// The WAMP session of an upgraded connection, inside the connection's span.
fn serve(
    ws: Ws,
    serializer: Serializer,
    ep: Endpoint,
    label: String,
    transport: TransportInfo,
) -> impl std::future::Future<Output = ()> + Send {
    let (peer, rx) = Peer::bounded(serializer, ep.settings.outbound(), usize::MAX, label);
    // Every line logged while serving this connection carries its span
    // (peer, and session, realm and authid once the session exists).
    let span = peer.span().clone();
    let session = span.in_scope(|| serve_session(ws, serializer, ep, transport, peer, rx));
    session.instrument(span)
}

/// [`serve`] once the peer exists: starts the writer and returns the
/// reader, which holds only what it uses.
fn serve_session(
    ws: Ws,
    serializer: Serializer,
    ep: Endpoint,
    transport: TransportInfo,
    peer: Arc<Peer>,
    rx: OutboundRx,
) -> impl std::future::Future<Output = ()> + Send {
    let Endpoint {
        router, settings, ..
    } = ep;
    let (sink, mut stream) = ws.split();
    let shared = Shared::new();
    let writer = tokio::spawn(write_loop(
        sink,
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
            &mut stream,
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

/// What the reader and the writer of one connection share: when the peer
/// was last heard from, and the PONGs owed.
pub(super) struct Shared {
    liveness: Arc<Liveness>,
    pongs: Arc<Pongs>,
    /// The peer sent a message over `max_message_size`: the writer closes
    /// with 1009 and writes nothing else.
    too_big: std::sync::atomic::AtomicBool,
}

impl Shared {
    pub(super) fn new() -> Arc<Shared> {
        Arc::new(Shared {
            liveness: Liveness::new(),
            pongs: Arc::new(Pongs::default()),
            too_big: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn too_big(&self) -> bool {
        self.too_big.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// What a connection does with the text and binary messages it reads: the
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
        if msg.is_binary() != serializer.is_binary() {
            let kind = if msg.is_binary() { "binary" } else { "text" };
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
        let frame: Bytes = msg.into_payload().into();
        let conn = &mut self.conn;
        let mut flow = batch.route(|| conn.handle_frame(&frame));
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

    async fn expired(&self) {
        let why = hello_wait(&self.conn, self.handshake_timeout).await;
        log_hello_wait(why, self.conn.peer().label(), self.handshake_timeout);
    }
}

/// Reads the connection until it ends: text and binary messages go to
/// `reader`; PINGs are answered (the writer flushes the PONGs) within
/// `max_pending_pong_bytes`; a CLOSE is answered; a message over
/// `max_message_size` closes with 1009. Returns how the writer should end.
///
/// The messages the stream gives without waiting are one batch: the writers
/// they queue frames for are woken once the stream has nothing more ready
/// (or after `outbound_queue::MAX_BATCH_FRAMES` messages, or when the loop
/// ends), so that each writer wakes once for the batch.
pub(super) async fn read_loop<R: Reader>(
    stream: &mut futures_util::stream::SplitStream<Ws>,
    reader: &mut R,
    peer: &Peer,
    settings: &Settings,
    shared: &Shared,
    label: &str,
) -> Flow {
    let mut batch = Batch::new();
    loop {
        let next = tokio::select! {
            m = std::future::poll_fn(|cx| match stream.poll_next_unpin(cx) {
                std::task::Poll::Pending => {
                    // Nothing more ready: wake the writers, then wait.
                    batch.flush();
                    std::task::Poll::Pending
                }
                ready => ready,
            }) => m,
            _ = peer.killed().cancelled() => return Flow::Close,
            _ = reader.expired() => return Flow::Close,
        };
        shared.liveness.seen();
        match next {
            Some(Ok(msg)) if msg.is_text() || msg.is_binary() => {
                if reader.message(msg, &mut batch).await == Flow::Close {
                    return Flow::Close;
                }
            }
            Some(Ok(msg)) if msg.is_close() => {
                batch.flush();
                flush_close(stream).await;
                return Flow::Continue;
            }
            Some(Ok(msg)) if msg.is_ping() => {
                // The codec queued the PONG; the writer flushes it.
                let pongs = &shared.pongs;
                let len = msg.as_payload().len();
                let owed = pongs
                    .owed
                    .fetch_add(pong_cost(len), std::sync::atomic::Ordering::Relaxed)
                    + pong_cost(len);
                if owed > settings.max_pending_pong_bytes.max(pong_cost(125)) {
                    peer.kill(format!(
                        "WebSocket PINGs without reading the PONGs: more than {} bytes owed (max_pending_pong_bytes)",
                        settings.max_pending_pong_bytes
                    ));
                    return Flow::Close;
                }
                pongs.flush.notify_one();
            }
            Some(Ok(_)) => {} // pong
            Some(Err(tokio_websockets::Error::PayloadTooLong { len, max_len })) => {
                tracing::info!(
                    peer = %label,
                    "message of at least {len} bytes exceeds the maximum message size of {max_len} bytes: closing with 1009"
                );
                // The codec queues a CLOSE 1009 itself for a single frame
                // that is too long, but not for a fragmented message that
                // grows too long: the writer sends it (or writes the
                // codec's), see `send_close`.
                shared
                    .too_big
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                return Flow::Close;
            }
            Some(Err(tokio_websockets::Error::Io(e))) => {
                super::log_read_error(label, &e);
                return Flow::Continue;
            }
            Some(Err(e)) => {
                tracing::debug!(peer = %label, "WebSocket read error: {e}");
                if let tokio_websockets::Error::Protocol(_) = e {
                    // The codec queued the CLOSE that names the violation
                    // (1002, or 1007 for invalid UTF-8): write it.
                    batch.flush();
                    flush_close(stream).await;
                }
                return Flow::Continue;
            }
            None => return Flow::Continue,
        }
    }
}

/// After the codec queued a close frame (our acknowledgement of the peer's
/// close, or 1009 for an oversized message), polling the stream once more
/// writes it; bounded, since the peer may be gone.
async fn flush_close(stream: &mut futures_util::stream::SplitStream<Ws>) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), stream.next()).await;
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
    fn message(self, f: Bytes) -> Message {
        match self {
            Framing::Wamp(s) if s.is_binary() => Message::binary(f),
            Framing::Wamp(_) => Message::text(f),
            Framing::Echo => super::testee::untag(f),
        }
    }
}

/// The writer: writes the outbound queue, the PONGs and the keepalive
/// PINGs. After each flush, `written` (if any) holds the number of queued
/// messages written so far. It ends as soon as the connection is killed,
/// even in the middle of a write: a peer that stopped reading blocks a
/// write for good, and the connection, its socket and what is queued for it
/// would stay until that peer closed (a slow consumer cut from its session
/// would still hold all of it).
///
/// A plain function returning the task's future: an async one would keep a
/// second copy of the arguments beside `write_frames`' for the task's life.
/// The loop's future is boxed so that the task holds it once (`select!`
/// moves a future it owns into its own state, beside the captured one).
pub(super) fn write_loop(
    sink: futures_util::stream::SplitSink<Ws, Message>,
    rx: OutboundRx,
    peer: Arc<Peer>,
    framing: Framing,
    settings: Settings,
    shared: Arc<Shared>,
    written: Option<tokio::sync::watch::Sender<u64>>,
) -> impl std::future::Future<Output = ()> + Send {
    let killed = peer.killed().clone();
    let mut frames = Box::pin(write_frames(
        sink, rx, peer, framing, settings, shared, written,
    ));
    async move {
        tokio::select! {
            biased;
            _ = killed.cancelled() => {}
            _ = &mut frames => {}
        }
    }
}

async fn write_frames(
    mut sink: futures_util::stream::SplitSink<Ws, Message>,
    mut rx: OutboundRx,
    peer: Arc<Peer>,
    framing: Framing,
    settings: Settings,
    shared: Arc<Shared>,
    written: Option<tokio::sync::watch::Sender<u64>>,
) {
    let to_msg = |f: Bytes| framing.message(f);
    let (liveness, pongs) = (&shared.liveness, &shared.pongs);
    let mut timer = ping_timer(&settings);
    loop {
        let result = tokio::select! {
            biased;
            _ = peer.killed().cancelled() => break,
            item = rx.recv() => match item {
                Some(Outgoing::Frame(_)) if shared.too_big() => {
                    send_close(&mut sink, &shared).await;
                    peer.stop();
                    break;
                }
                Some(Outgoing::Frame(f)) => {
                    let mut bytes = f.len();
                    let mut n = 1;
                    let mut close = false;
                    let mut r = sink.feed(to_msg(f)).await;
                    while r.is_ok() && n < MAX_BATCH_FRAMES && bytes < MAX_BATCH_BYTES {
                        match rx.try_recv() {
                            Ok(Outgoing::Frame(f)) => {
                                n += 1;
                                bytes += f.len();
                                r = sink.feed(to_msg(f)).await;
                            }
                            Ok(Outgoing::Close) => {
                                close = true;
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    // The flush writes the PONGs queued so far as well.
                    let owed = pongs.owed.load(std::sync::atomic::Ordering::Relaxed);
                    let r = match r {
                        Ok(()) => sink.flush().await,
                        Err(e) => Err(e),
                    };
                    if r.is_ok() {
                        pongs.owed.fetch_sub(owed, std::sync::atomic::Ordering::Relaxed);
                        if let Some(w) = &written {
                            w.send_modify(|count| *count += n as u64);
                        }
                    }
                    if close && r.is_ok() {
                        send_close(&mut sink, &shared).await;
                        peer.stop();
                        break;
                    }
                    r
                }
                Some(Outgoing::Close) | None => {
                    send_close(&mut sink, &shared).await;
                    peer.stop();
                    break;
                }
            },
            _ = pongs.flush.notified() => {
                // Writes the PONGs the codec queued.
                let owed = pongs.owed.load(std::sync::atomic::Ordering::Relaxed);
                let r = sink.flush().await;
                if r.is_ok() {
                    pongs.owed.fetch_sub(owed, std::sync::atomic::Ordering::Relaxed);
                }
                r
            }
            _ = tick(&mut timer) => {
                if is_dead(&settings, liveness) {
                    peer.kill(format!("peer silent for {:?}: keepalive timed out", liveness.silent_for()));
                    break;
                }
                sink.send(Message::ping(Bytes::from_static(b"switchyard"))).await
            }
        };
        if let Err(e) = result {
            peer.kill(format!("write failed: {e}"));
            break;
        }
    }
}

/// Ends the WebSocket with a CLOSE: 1009 after a message over
/// `max_message_size`, else 1000. When the codec has already queued a CLOSE
/// of its own (its answer to the peer's CLOSE, its 1009 for a single frame
/// that is too long), sending is refused and that one is written instead.
/// Bounded: the peer may not read.
async fn send_close(sink: &mut futures_util::stream::SplitSink<Ws, Message>, shared: &Shared) {
    let close = if shared.too_big() {
        Message::close(Some(CloseCode::MESSAGE_TOO_BIG), "message too big")
    } else {
        Message::close(Some(CloseCode::NORMAL_CLOSURE), "")
    };
    let closing = async {
        match sink.send(close).await {
            Err(tokio_websockets::Error::AlreadyClosed) => sink.flush().await,
            r => r,
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), closing).await;
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
        let ep = Endpoint {
            router: Router::new(Vec::new()),
            settings: crate::transport::test_settings(),
            path: "/ws".into(),
            origins: None,
            metrics_path: None,
            pages: None,
            mode: Mode::Wamp,
        };
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
