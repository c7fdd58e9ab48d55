//! Transports: WebSocket and RawSocket (TCP and Unix), and the WebSocket
//! conformance testee (`testee.rs`). Each one frames
//! messages and feeds them to a router [`Connection`]; the router core
//! never sees a socket.
//!
//! Per connection there are two tasks: the reader (this module's loops),
//! which decodes frames and routes them synchronously, and the writer, which
//! blocks for the first queued frame, drains whatever else is queued and
//! writes the batch at once. The frames one read of the socket gave are
//! routed as one `outbound_queue::Batch`: the writers they queue frames for
//! are woken once, when the reader has nothing more ready, not once per
//! frame.

pub mod accept;
pub mod conn_limit;
pub mod origin;
pub mod rawsocket;
pub mod sockopt;
mod testee;
pub mod tls;
pub mod websocket;
pub mod ws_upgrade;
pub mod wsframe;
mod x509;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_router::traffic::Traffic;
use switchyard_router::{Flow, OutboundBudget, OutboundLimits, Peer, SlowConsumerPolicy};

/// What every transport needs to know from the configuration: plain
/// settings, which the configuration builds (`config::Limits::transport_settings`),
/// so that the transports do not import the configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    pub max_message_size: usize,
    pub outbound_queue: usize,
    pub outbound_queue_bytes: usize,
    /// Bytes queued for all client connections together
    /// (`total_outbound_bytes`), shared by every clone of these settings.
    pub outbound_budget: Arc<OutboundBudget>,
    pub slow_consumer: SlowConsumerPolicy,
    pub handshake_timeout: Duration,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    pub rawsocket_ping_interval: Duration,
    /// Bytes of PONGs owed to a peer (PINGs it sent while not reading our
    /// answers) before it is disconnected.
    pub max_pending_pong_bytes: usize,
    /// Largest HTTP request head (the WebSocket upgrade request), bytes.
    pub max_request_head: usize,
    /// SO_SNDBUF of each TCP connection (0: the kernel's autotuning).
    pub socket_send_buffer: usize,
    /// Where client connections' outgoing messages are counted (the
    /// router's traffic families); None: not counted.
    pub traffic: Option<Arc<Traffic>>,
}

impl Settings {
    /// The bounds of a client session's outbound queue.
    pub fn outbound(&self) -> OutboundLimits {
        OutboundLimits {
            messages: self.outbound_queue,
            bytes: self.outbound_queue_bytes,
            policy: self.slow_consumer,
            budget: Some(self.outbound_budget.clone()),
            traffic: self.traffic.clone(),
        }
    }
}

/// Most frames a writer batches into one write.
pub const MAX_BATCH_FRAMES: usize = 256;
/// Most bytes a writer batches into one write.
pub const MAX_BATCH_BYTES: usize = 256 * 1024;

/// When the peer was last heard from; the writer's keepalive reads it.
pub struct Liveness {
    start: Instant,
    last_seen_ms: AtomicU64,
}

impl Liveness {
    pub fn new() -> Arc<Self> {
        Arc::new(Liveness {
            start: Instant::now(),
            last_seen_ms: AtomicU64::new(0),
        })
    }

    pub fn seen(&self) {
        self.last_seen_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    pub fn silent_for(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_seen_ms.load(Ordering::Relaxed)))
    }
}

/// A keepalive timer: `None` when pings are disabled.
pub fn ping_timer(settings: &Settings) -> Option<tokio::time::Interval> {
    if settings.ping_interval.is_zero() {
        return None;
    }
    let mut t = tokio::time::interval_at(
        tokio::time::Instant::now() + settings.ping_interval,
        settings.ping_interval,
    );
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    Some(t)
}

/// Ticks of an optional interval; pending forever when disabled.
pub async fn tick(timer: &mut Option<tokio::time::Interval>) {
    match timer {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Whether a peer silent this long is dead.
pub fn is_dead(settings: &Settings, liveness: &Liveness) -> bool {
    liveness.silent_for() > settings.ping_interval + settings.ping_timeout
}

/// hyper's smallest read buffer: a request head may always be this long.
pub const MIN_REQUEST_HEAD_SIZE: usize = 8192;

/// The HTTP/1 server settings every listener shares: a request head (and a
/// keep-alive connection's wait for the next one) must arrive within
/// `header_timeout` and be at most `max_head` bytes (431 beyond; at least
/// [`MIN_REQUEST_HEAD_SIZE`], which the configuration checks).
pub fn http1_server(
    header_timeout: Duration,
    max_head: usize,
) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(max_head.max(MIN_REQUEST_HEAD_SIZE));
    b
}

/// Payloads up to this many bytes are copied beside their headers into one
/// buffer per write; longer ones are written from their own memory.
pub const COPY_PAYLOAD_MAX: usize = 1024;

/// A frame of a writer's batch: its encoded header and its payload.
pub trait WireFrame {
    fn header(&self) -> &[u8];
    fn payload(&self) -> &[u8];
}

/// Writes a writer's batch until every byte is out, then flushes. Frames
/// whose payload is at most [`COPY_PAYLOAD_MAX`] bytes are copied, header
/// and payload, into one buffer, written with one system call: the kernel
/// copies one contiguous range into the socket instead of two small
/// vectored slices per frame (a 1->10 fan-out of 64-byte events spent 7 %
/// of the router's CPU in `_copy_from_iter` over 40-50 slices per write,
/// NATS 2 % for the same bytes; docs/BENCHMARKS.md). Longer payloads go
/// out as their own slices, not copied.
pub async fn write_batch<W: tokio::io::AsyncWrite + Unpin, F: WireFrame>(
    writer: &mut W,
    batch: &[F],
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let copied: usize = batch
        .iter()
        .map(|f| {
            let p = f.payload().len();
            f.header().len() + if p <= COPY_PAYLOAD_MAX { p } else { 0 }
        })
        .sum();
    let mut buf = Vec::with_capacity(copied);
    // Where a payload written from its own memory goes: (offset in `buf`,
    // frame index).
    let mut own: Vec<(usize, usize)> = Vec::new();
    for (i, f) in batch.iter().enumerate() {
        buf.extend_from_slice(f.header());
        let p = f.payload();
        if p.len() <= COPY_PAYLOAD_MAX {
            buf.extend_from_slice(p);
        } else {
            own.push((buf.len(), i));
        }
    }
    if own.is_empty() {
        writer.write_all(&buf).await?;
        return writer.flush().await;
    }
    let mut slices = Vec::with_capacity(own.len() * 2 + 1);
    let mut start = 0;
    for (at, i) in own {
        if at > start {
            slices.push(std::io::IoSlice::new(&buf[start..at]));
        }
        slices.push(std::io::IoSlice::new(batch[i].payload()));
        start = at;
    }
    if buf.len() > start {
        slices.push(std::io::IoSlice::new(&buf[start..]));
    }
    write_all_slices(writer, &mut slices).await
}

/// Writes `slices` (a writer's batch: each frame's header and payload) with vectored writes
/// until every byte is out, then flushes.
pub async fn write_all_slices<W: tokio::io::AsyncWrite + Unpin>(
    writer: &mut W,
    slices: &mut [std::io::IoSlice<'_>],
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut rest = slices;
    while !rest.is_empty() {
        let n = writer.write_vectored(rest).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        std::io::IoSlice::advance_slices(&mut rest, n);
    }
    writer.flush().await
}

/// Logs why reading a connection failed: at info level when TCP gave up on
/// the peer (TCP_USER_TIMEOUT or keepalive: it vanished, e.g. a half-open
/// connection), else at debug level (resets and the like are routine).
pub fn log_read_error(label: &str, e: &std::io::Error) {
    if e.kind() == std::io::ErrorKind::TimedOut {
        tracing::info!(
            peer = %label,
            "peer unreachable: {e} (unacknowledged for ping_interval + ping_timeout, or keepalive probes unanswered): closing"
        );
    } else {
        tracing::debug!(peer = %label, "read error: {e}");
    }
}

/// Why a connection without a session stops waiting for HELLO.
pub enum HelloWait {
    TimedOut,
    ShuttingDown,
}

/// While the connection awaits HELLO: resolves at the handshake deadline or
/// when the router starts shutting down. Pending forever once a session is
/// established.
pub async fn hello_wait(conn: &switchyard_router::Connection, timeout: Duration) -> HelloWait {
    let Some(since) = conn.awaiting_hello_since() else {
        return std::future::pending().await;
    };
    let deadline = tokio::time::Instant::from_std(since) + timeout;
    // Boxed: the reader's future reserves room for this one for the
    // session's whole life (a timer and a cancellation wait, ~200 bytes),
    // though it only runs before WELCOME.
    Box::pin(async move {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => HelloWait::TimedOut,
            _ = conn.router().stopping().cancelled() => HelloWait::ShuttingDown,
        }
    })
    .await
}

/// Logs why a connection stopped waiting for HELLO.
pub fn log_hello_wait(why: HelloWait, label: &str, timeout: Duration) {
    match why {
        HelloWait::TimedOut => {
            tracing::info!(peer = %label, "no HELLO within {timeout:?}: closing")
        }
        HelloWait::ShuttingDown => {
            tracing::debug!(peer = %label, "shutting down: closing a connection without a session")
        }
    }
}

/// After the reader stops: on an orderly close let the writer flush what is
/// queued (bounded wait), otherwise drop the connection at once.
pub async fn finish_writer(flow: Flow, peer: &Arc<Peer>, mut task: tokio::task::JoinHandle<()>) {
    if flow == Flow::Close && !peer.is_stopped() {
        peer.close_after_flush();
        if tokio::time::timeout(std::time::Duration::from_secs(5), &mut task)
            .await
            .is_ok()
        {
            return;
        }
    }
    peer.stop();
    let _ = task.await;
}

/// Reads an HTTP request head (bounded in size and by `deadline`), writes
/// `reply`, and closes: for refusals that happen before hyper takes over.
/// Reading the request first lets the client see the answer (closing with
/// unread input would reset the connection).
pub async fn http_reply_and_close(
    mut stream: tokio::net::TcpStream,
    reply: &[u8],
    deadline: tokio::time::Instant,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let work = async {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while head.len() < 8192 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        if stream.write_all(reply).await.is_ok() {
            let _ = stream.shutdown().await;
        }
    };
    let _ = tokio::time::timeout_at(deadline, work).await;
}

/// Settings with the defaults' shape, for the transports' unit tests.
#[cfg(test)]
pub(crate) fn test_settings() -> Settings {
    Settings {
        max_message_size: 1 << 20,
        outbound_queue: 1024,
        outbound_queue_bytes: 1 << 20,
        outbound_budget: OutboundBudget::new(1 << 20),
        slow_consumer: SlowConsumerPolicy::default(),
        handshake_timeout: Duration::from_secs(10),
        ping_interval: Duration::from_secs(30),
        ping_timeout: Duration::from_secs(10),
        rawsocket_ping_interval: Duration::ZERO,
        max_pending_pong_bytes: 64 << 10,
        max_request_head: 64 << 10,
        socket_send_buffer: 0,
        traffic: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// Records each write it is given (the slices of a vectored one) and
    /// takes at most `chunk` bytes per call.
    struct Recorder {
        bytes: Vec<u8>,
        calls: Vec<Vec<usize>>,
        chunk: usize,
    }

    impl tokio::io::AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let n = buf.len().min(self.chunk);
            self.calls.push(vec![buf.len()]);
            self.bytes.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            self.calls.push(bufs.iter().map(|b| b.len()).collect());
            let mut left = self.chunk;
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(left);
                self.bytes.extend_from_slice(&b[..take]);
                left -= take;
                n += take;
                if left == 0 {
                    break;
                }
            }
            Poll::Ready(Ok(n))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    struct F(Vec<u8>, Vec<u8>);
    impl WireFrame for F {
        fn header(&self) -> &[u8] {
            &self.0
        }
        fn payload(&self) -> &[u8] {
            &self.1
        }
    }

    fn frame(tag: u8, len: usize) -> F {
        F(vec![0x80 | tag, len.min(125) as u8], vec![tag; len])
    }

    fn expected(batch: &[F]) -> Vec<u8> {
        batch
            .iter()
            .flat_map(|f| [f.0.clone(), f.1.clone()].concat())
            .collect()
    }

    fn write(batch: &[F], chunk: usize) -> Recorder {
        let mut w = Recorder {
            bytes: Vec::new(),
            calls: Vec::new(),
            chunk,
        };
        futures_util::FutureExt::now_or_never(write_batch(&mut w, batch))
            .expect("the recorder never blocks")
            .expect("the recorder never fails");
        w
    }

    /// A batch of small frames is one contiguous write, not two slices per
    /// frame.
    #[test]
    fn small_frames_go_out_as_one_contiguous_write() {
        let batch: Vec<F> = (0..20).map(|i| frame(i, 64 + usize::from(i))).collect();
        let w = write(&batch, usize::MAX);
        assert_eq!(w.bytes, expected(&batch));
        assert_eq!(w.calls, vec![vec![expected(&batch).len()]]);
    }

    /// Long payloads are written from their own memory between the copied
    /// runs; the bytes are the frames' in order, also when the writer takes
    /// a few bytes at a time.
    #[test]
    fn long_payloads_keep_their_own_slices_and_order() {
        let batch = vec![
            frame(1, 10),
            frame(2, COPY_PAYLOAD_MAX + 1),
            frame(3, 0),
            frame(4, COPY_PAYLOAD_MAX),
            frame(5, 5000),
        ];
        let w = write(&batch, usize::MAX);
        assert_eq!(w.bytes, expected(&batch));
        assert_eq!(
            w.calls,
            vec![vec![
                2 + 10 + 2,
                COPY_PAYLOAD_MAX + 1,
                2 + 2 + COPY_PAYLOAD_MAX + 2,
                5000
            ]]
        );
        for chunk in [1, 7, 1000] {
            assert_eq!(
                write(&batch, chunk).bytes,
                expected(&batch),
                "chunk {chunk}"
            );
        }
        let small: Vec<F> = (0..5).map(|i| frame(i, 30)).collect();
        assert_eq!(write(&small, 7).bytes, expected(&small));
    }
}
