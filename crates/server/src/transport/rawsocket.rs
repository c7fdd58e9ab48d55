//! WAMP over RawSocket (spec: advanced/transport_rawsocket.md), the
//! router's side: one connection's handshake, reader and writer. The wire
//! format itself (handshake octets, error codes, frame headers, the length
//! exponent) is [`switchyard_proto::rawsocket`], shared with the client;
//! this file owns what a router adds: timeouts, limits that depend on the
//! session state, PONG bookkeeping, keepalive PINGs, batched vectored
//! writes and the lingering close.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use switchyard_proto::rawsocket::{self, ClientHandshakeError, FrameKind};
use switchyard_router::outbound_queue::Batch;
use switchyard_router::{Connection, Flow, OutboundRx, Outgoing, Peer, Router, TransportInfo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tracing::Instrument;

use super::{
    finish_writer, hello_wait, is_dead, log_hello_wait, ping_timer, tick, Liveness, Settings,
    MAX_BATCH_BYTES, MAX_BATCH_FRAMES,
};

/// Serves one RawSocket connection until it closes.
///
/// The returned future is the connection's task for the session's whole
/// life. An async function keeps its by-value arguments in its future even
/// after it moved them on, and each nested call adds its own: so the
/// arguments wait for the handshake in a box (freed once moved on), and the
/// session's future is built by a plain function ([`serve_session`]) that
/// keeps nothing. The size test below bounds the result.
pub fn serve<R, W>(
    reader: R,
    writer: W,
    router: Arc<Router>,
    settings: Settings,
    label: String,
    transport: TransportInfo,
    accepted: Instant,
) -> impl std::future::Future<Output = ()> + Send
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let args = Box::new((reader, writer, router, settings, label, transport));
    async move {
        let mut args = args;
        let (reader, writer, _, settings, label, _) = &mut *args;
        let Some((serializer, client_max)) =
            handshake(reader, writer, settings, label, accepted).await
        else {
            return;
        };
        // Out of the box, which is freed here (not when the task ends).
        let (reader, writer, router, settings, label, transport) = {
            let args = args;
            *args
        };
        let label = format!("{label} rawsocket/{serializer}");
        let (peer, rx) = Peer::bounded(serializer, settings.outbound(), client_max, label);
        // Every line logged while serving this connection carries its span
        // (peer, and session, realm and authid once the session exists).
        let span = peer.span().clone();
        let session =
            span.in_scope(|| serve_session(reader, writer, router, settings, transport, peer, rx));
        session.instrument(span).await
    }
}

/// The RawSocket handshake: the client's four octets (by the handshake
/// deadline), and our answer. The serializer and the client's maximum
/// message length, or None if the connection is to be closed.
async fn handshake<R, W>(
    reader: &mut R,
    writer: &mut W,
    settings: &Settings,
    label: &str,
    accepted: Instant,
) -> Option<(switchyard_proto::Serializer, usize)>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let deadline = accepted + settings.handshake_timeout;
    let mut hs = [0u8; 4];
    match tokio::time::timeout_at(deadline, reader.read_exact(&mut hs)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::debug!(peer = %label, "rawsocket handshake not received: {e}");
            return None;
        }
        Err(_) => {
            tracing::info!(peer = %label, "rawsocket handshake timed out after {:?}", settings.handshake_timeout);
            return None;
        }
    }
    let (serializer, client_max) = match rawsocket::parse_client_handshake(hs) {
        Ok(h) => (h.serializer, h.max_len),
        Err(e) => {
            match e {
                ClientHandshakeError::NotRawSocket { first } => {
                    tracing::info!(peer = %label, "not a RawSocket handshake (first octet 0x{first:02x}, expected 0x7f): closing");
                }
                ClientHandshakeError::ReservedBits => {
                    tracing::info!(peer = %label, "rawsocket handshake uses reserved bits: refused");
                }
                ClientHandshakeError::SerializerUnsupported { id } => {
                    tracing::info!(peer = %label, ser_id = id, "rawsocket serializer unsupported: refused");
                }
            }
            if let Some(code) = e.code() {
                let _ = writer.write_all(&rawsocket::refusal(code)).await;
            }
            return None;
        }
    };
    let reply = rawsocket::accept(
        serializer,
        rawsocket::length_exponent(settings.max_message_size),
    );
    if writer.write_all(&reply).await.is_err() {
        return None;
    }
    Some((serializer, client_max))
}

/// [`serve`] once the handshake is done and the peer exists: starts the
/// writer and returns the reader, which holds only what it uses.
fn serve_session<R, W>(
    mut reader: R,
    writer: W,
    router: Arc<Router>,
    settings: Settings,
    transport: TransportInfo,
    peer: Arc<Peer>,
    rx: OutboundRx,
) -> impl std::future::Future<Output = ()> + Send
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let liveness = Liveness::new();
    let pong = Arc::new(PongSlot::default());
    // RawSocket PINGs have their own interval (off by default, see config).
    let writer_settings = Settings {
        ping_interval: settings.rawsocket_ping_interval,
        ..settings.clone()
    };
    let writer_task = tokio::spawn(write_loop(
        writer,
        rx,
        pong.clone(),
        peer.clone(),
        writer_settings,
        liveness.clone(),
    ));
    let mut conn = Connection::new(router, peer.clone(), transport);
    async move {
        let flow = read_loop(&mut reader, &mut conn, &settings, &liveness, &pong).await;
        conn.leave();
        drop(conn);
        finish_writer(flow, &peer, writer_task).await;
        // Only after an orderly close (an ABORT or GOODBYE written), not a kill.
        if flow == Flow::Close && peer.kill_reason().is_none() {
            discard_input(&mut reader).await;
        }
    }
}

/// Lingering close: after our last frame (e.g. an ABORT) is written and the
/// write side shut, read and drop what the peer still sends until it closes
/// (bounded in time and bytes). Closing a socket with unread input makes the
/// kernel reset the connection, and the peer would then lose the ABORT.
async fn discard_input<R: AsyncRead + Unpin>(reader: &mut R) {
    const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
    const MAX_DISCARD: usize = 32 << 20;
    // On the heap, and only while discarding: an array here would sit in
    // every connection's task for its whole life (the reader's future is as
    // large as its largest state), 8 KiB per idle session.
    let mut scratch = vec![0u8; 8192];
    let mut total = 0;
    let drain = async {
        while total < MAX_DISCARD {
            match reader.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// Most PINGs awaiting their PONG; a peer that sends more without reading
/// our answers is misbehaving and gets disconnected.
const MAX_PENDING_PONGS: usize = 64;

/// PONGs owed, one per PING received. Lighter than a channel (which would
/// allocate a block per connection): nothing is allocated until a PING comes.
#[derive(Default)]
struct PongSlot {
    pending: parking_lot::Mutex<Pongs>,
    notify: tokio::sync::Notify,
}

/// The PONGs owed and their bytes, until the writer has written them.
#[derive(Default)]
struct Pongs {
    queue: std::collections::VecDeque<Bytes>,
    /// Bytes queued, and taken by the writer but not yet written.
    bytes: usize,
}

impl PongSlot {
    /// Queues the PONG for a PING; false if too many, or too many bytes,
    /// are already owed (a PING into an empty slot is always answered).
    fn put(&self, payload: Bytes, max_bytes: usize) -> bool {
        let mut p = self.pending.lock();
        if p.queue.len() >= MAX_PENDING_PONGS
            || (p.bytes > 0 && p.bytes + payload.len() > max_bytes)
        {
            return false;
        }
        p.bytes += payload.len();
        p.queue.push_back(payload);
        drop(p);
        self.notify.notify_one();
        true
    }

    /// The PONGs to write; their bytes stay counted until [`PongSlot::written`].
    fn take_all(&self) -> std::collections::VecDeque<Bytes> {
        std::mem::take(&mut self.pending.lock().queue)
    }

    /// `n` bytes of PONGs were written.
    fn written(&self, n: usize) {
        let mut p = self.pending.lock();
        p.bytes = p.bytes.saturating_sub(n);
    }
}

/// Smallest read buffer: what an idle connection holds.
const MIN_READ: usize = 1024;
/// Largest read buffer a busy connection grows to.
const MAX_READ: usize = 64 * 1024;

async fn read_loop<R: AsyncRead + Unpin>(
    reader: &mut R,
    conn: &mut Connection,
    settings: &Settings,
    liveness: &Liveness,
    pong: &PongSlot,
) -> Flow {
    let peer = conn.peer().clone();
    // Frames are split off this buffer without copying. Its read size adapts:
    // it doubles while reads fill it and falls back to MIN_READ when idle,
    // so an idle connection holds only a small buffer.
    let mut buf = BytesMut::new();
    let mut read_size = MIN_READ;
    // The frames read without waiting are one batch: the writers they queue
    // frames for are woken once the socket has nothing more ready (or after
    // `outbound_queue::MAX_BATCH_FRAMES` frames, or when the loop ends).
    let mut batch = Batch::new();
    loop {
        // Route every complete frame already buffered.
        while buf.len() >= 4 {
            let (kind, len) = match rawsocket::decode_header([buf[0], buf[1], buf[2], buf[3]]) {
                Ok(h) => (h.kind, h.len),
                Err(rawsocket::FrameHeaderError::ReservedBits(_)) => {
                    return conn.protocol_violation("RawSocket frame header has reserved bits set");
                }
                Err(e) => return conn.protocol_violation(&e.to_string()),
            };
            // Checked on the header, before the frame is buffered.
            let limit = conn.frame_limit(settings.max_message_size);
            if len > limit {
                if limit < settings.max_message_size {
                    return conn.refuse_handshake_frame(len);
                }
                return conn.protocol_violation(&format!(
                    "message of {len} bytes exceeds the maximum message size of {} bytes",
                    settings.max_message_size
                ));
            }
            if buf.len() < 4 + len {
                buf.reserve(4 + len - buf.len());
                break;
            }
            let mut frame = buf.split_to(4 + len);
            let payload = frame.split_off(4).freeze();
            match kind {
                FrameKind::Message => {
                    let mut flow = batch.route(|| conn.handle_frame(&payload));
                    if flow == Flow::Suspend {
                        batch.flush();
                        // Boxed: rare (authorizer, authentication, rate
                        // pause), and the reader's future would otherwise
                        // reserve its room for the session's whole life.
                        flow = Box::pin(conn.resume()).await;
                    }
                    if flow == Flow::Close {
                        return Flow::Close;
                    }
                }
                FrameKind::Ping => {
                    // A copy: the PONG must not pin the read buffer.
                    let payload = Bytes::copy_from_slice(&payload);
                    if !pong.put(payload, settings.max_pending_pong_bytes) {
                        return conn.protocol_violation(&format!(
                            "RawSocket PINGs without reading the PONGs: more than {MAX_PENDING_PONGS} PONGs or {} bytes owed (max_pending_pong_bytes)",
                            settings.max_pending_pong_bytes
                        ));
                    }
                }
                FrameKind::Pong => {}
                FrameKind::Reserved(other) => {
                    return conn
                        .protocol_violation(&format!("unknown RawSocket frame type {other}"));
                }
            }
        }
        if buf.is_empty() {
            // Let go of a large buffer once everything in it was routed.
            if buf.capacity() > MAX_READ {
                buf = BytesMut::new();
            }
            buf.reserve(read_size);
        } else if buf.capacity() == buf.len() {
            buf.reserve(read_size);
        }
        let spare = buf.capacity() - buf.len();
        let mut read = std::pin::pin!(reader.read_buf(&mut buf));
        let read = tokio::select! {
            r = std::future::poll_fn(|cx| match std::future::Future::poll(read.as_mut(), cx) {
                std::task::Poll::Pending => {
                    // Nothing more ready: wake the writers, then wait.
                    batch.flush();
                    std::task::Poll::Pending
                }
                ready => ready,
            }) => r,
            _ = peer.killed().cancelled() => return Flow::Close,
            why = hello_wait(conn, settings.handshake_timeout) => {
                log_hello_wait(why, peer.label(), settings.handshake_timeout);
                return Flow::Close;
            }
        };
        match read {
            Ok(0) => return Flow::Continue,
            Err(e) => {
                super::log_read_error(peer.label(), &e);
                return Flow::Continue;
            }
            Ok(n) => {
                liveness.seen();
                read_size = if n >= spare {
                    (read_size * 2).min(MAX_READ)
                } else if n < read_size / 4 {
                    MIN_READ
                } else {
                    read_size
                };
            }
        }
    }
}

/// The writer. It ends as soon as the connection is killed, even in the
/// middle of a write: a peer that stopped reading blocks a write for good
/// (its socket buffer is full), and the connection, its socket and what is
/// queued for it would stay until that peer closed (a slow consumer cut
/// from its session would still hold all of it).
///
/// A plain function returning the task's future: an async one would keep a
/// second copy of the arguments beside `write_frames`' for the task's life.
/// The loop's future is boxed so that the task holds it once (`select!`
/// moves a future it owns into its own state, beside the captured one).
fn write_loop<W: AsyncWrite + Unpin + Send>(
    writer: W,
    rx: OutboundRx,
    pong: Arc<PongSlot>,
    peer: Arc<Peer>,
    settings: Settings,
    liveness: Arc<Liveness>,
) -> impl std::future::Future<Output = ()> + Send {
    let killed = peer.killed().clone();
    let mut frames = Box::pin(write_frames(writer, rx, pong, peer, settings, liveness));
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
    pong: Arc<PongSlot>,
    peer: Arc<Peer>,
    settings: Settings,
    liveness: Arc<Liveness>,
) {
    let mut timer = ping_timer(&settings);
    // Grows to the largest batch seen; not pre-sized, so idle connections stay small.
    let mut batch: Vec<Frame> = Vec::new();
    let mut ping_seq: u32 = 0;
    loop {
        let mut close = false;
        tokio::select! {
            biased;
            _ = peer.killed().cancelled() => break,
            _ = pong.notify.notified() => {
                for p in pong.take_all() {
                    batch.push(Frame::new(FrameKind::Pong, p));
                }
            }
            item = rx.recv() => match item {
                Some(Outgoing::Frame(f)) => batch.push(Frame::new(FrameKind::Message, f)),
                Some(Outgoing::Close) | None => close = true,
            },
            _ = tick(&mut timer) => {
                if is_dead(&settings, &liveness) {
                    peer.kill(format!("peer silent for {:?}: keepalive timed out", liveness.silent_for()));
                    break;
                }
                ping_seq = ping_seq.wrapping_add(1);
                let p = Bytes::copy_from_slice(&ping_seq.to_be_bytes());
                batch.push(Frame::new(FrameKind::Ping, p));
            }
        }
        if !close {
            let mut bytes: usize = batch.iter().map(|f| f.payload.len()).sum();
            while batch.len() < MAX_BATCH_FRAMES && bytes < MAX_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(Outgoing::Frame(f)) => {
                        bytes += f.len();
                        batch.push(Frame::new(FrameKind::Message, f));
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
        if !batch.is_empty() {
            if let Err(e) = write_batch(&mut writer, &batch).await {
                peer.kill(format!("write failed: {e}"));
                break;
            }
            let pongs: usize = batch
                .iter()
                .filter(|f| f.kind == FrameKind::Pong)
                .map(|f| f.payload.len())
                .sum();
            if pongs > 0 {
                pong.written(pongs);
            }
            batch.clear();
        }
        if close {
            let _ = writer.shutdown().await;
            // The close is written: stop the reader too.
            peer.stop();
            break;
        }
    }
}

/// A frame of a write batch, its header encoded when it is queued.
struct Frame {
    kind: FrameKind,
    /// `None` if the payload is longer than RawSocket can carry. Every frame
    /// is bounded before it gets here (a message by the client's announced
    /// maximum, a PONG by `max_message_size`, both at most 2^24 octets, the
    /// RawSocket maximum), so this does not happen; if it did, the write
    /// fails rather than send a wrong header.
    header: Option<[u8; 4]>,
    payload: Bytes,
}

impl Frame {
    fn new(kind: FrameKind, payload: Bytes) -> Self {
        Frame {
            kind,
            header: rawsocket::encode_header(kind, payload.len()),
            payload,
        }
    }
}

/// Writes header+payload pairs with vectored writes.
async fn write_batch<W: AsyncWrite + Unpin>(
    writer: &mut W,
    batch: &[Frame],
) -> std::io::Result<()> {
    if let Some(f) = batch.iter().find(|f| f.header.is_none()) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "a frame of {} octets is longer than RawSocket can carry",
                f.payload.len()
            ),
        ));
    }
    super::write_batch(writer, batch).await
}

impl super::WireFrame for Frame {
    fn header(&self) -> &[u8] {
        // `write_batch` checked that every frame has one.
        self.header.as_ref().map_or(&[], |h| &h[..])
    }
    fn payload(&self) -> &[u8] {
        &self.payload
    }
}

#[cfg(test)]
mod tests {
    /// Every state of a connection's reader lives in its task for the
    /// connection's whole life: the drain at close must not carry its
    /// buffer inline (it did: 8 KiB more per idle RawSocket session).
    #[test]
    fn the_drain_at_close_keeps_its_buffer_off_the_task() {
        let mut input = tokio::io::empty();
        let drain = super::discard_input(&mut input);
        let size = std::mem::size_of_val(&drain);
        assert!(size < 1024, "discard_input's future is {size} bytes");
    }

    /// The reader's task lives as long as the session: its future's size
    /// is memory per idle session. Nested async functions each kept their
    /// by-value arguments, and rare waits (the HELLO deadline, a suspended
    /// message) reserved their room for the session's life: 2,464 bytes in
    /// a debug build before, 1,304 after. The bound catches a regrowth.
    #[test]
    fn a_connection_task_stays_small() {
        let (r, w) = tokio::io::split(tokio::io::empty());
        let reader = super::serve(
            r,
            w,
            switchyard_router::Router::new(Vec::new()),
            crate::transport::test_settings(),
            "peer".into(),
            switchyard_router::TransportInfo::new("rawsocket", None),
            tokio::time::Instant::now(),
        );
        let size = std::mem::size_of_val(&reader);
        assert!(
            size <= 1536,
            "a RawSocket connection's reader future is {size} bytes"
        );

        let settings = crate::transport::test_settings();
        let (peer, rx) = switchyard_router::Peer::bounded(
            switchyard_proto::Serializer::Json,
            settings.outbound(),
            usize::MAX,
            "peer".into(),
        );
        // The writer's task: its loop is boxed once, not held twice
        // (976 bytes before, 120 + 680 after).
        let writer = super::write_loop(
            tokio::io::sink(),
            rx,
            std::sync::Arc::new(super::PongSlot::default()),
            peer,
            settings,
            crate::transport::Liveness::new(),
        );
        let size = std::mem::size_of_val(&writer);
        assert!(
            size <= 256,
            "a RawSocket connection's writer future is {size} bytes"
        );
    }
}
