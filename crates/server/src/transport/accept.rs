//! The accept loop of every listener (WebSocket, RawSocket over TCP and
//! Unix, the HTTP bridge), and what it does when accepting fails.
//!
//! When the process runs out of file descriptors (EMFILE, ENFILE), accept
//! fails while the connection stays in the kernel's backlog, so a naive
//! loop spins on the same error and writes a log line each time. Here:
//! - a **reserve descriptor** (`/dev/null`, opened at start) is released,
//!   the pending connections are accepted and closed at once (their clients
//!   learn immediately instead of hanging; counted in
//!   `switchyard_connections_refused_total`), and the reserve is taken again;
//! - the loop **backs off** (10 ms, doubling to 1 s) while accepting fails;
//! - the failure is **logged once per 10 s** with the number of failures
//!   and shed connections since the last line.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use parking_lot::Mutex;
use switchyard_router::metrics::Metrics;
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

/// Accept failures are logged at most once per this interval.
const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// First and longest pause after a failed accept.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Most pending connections closed per round while out of descriptors.
const SHED_PER_ROUND: usize = 256;

/// A listening socket: TCP or Unix.
pub trait Acceptor {
    type Stream;
    /// The next connection, with a label for logs and the peer's IP address.
    fn next(&self) -> impl std::future::Future<Output = std::io::Result<(Self::Stream, Remote)>>;
}

/// Who connected: a label for logs and, over TCP, the IP address.
pub struct Remote {
    pub label: String,
    pub ip: Option<IpAddr>,
}

impl Acceptor for TcpListener {
    type Stream = TcpStream;
    async fn next(&self) -> std::io::Result<(TcpStream, Remote)> {
        let (stream, addr) = self.accept().await?;
        // TCP_NODELAY is the listener's, inherited where the system does
        // (`sockopt`); elsewhere set here.
        if !super::sockopt::INHERITED {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!("TCP_NODELAY not set: {e}");
            }
        }
        Ok((
            stream,
            Remote {
                label: addr.to_string(),
                ip: Some(addr.ip()),
            },
        ))
    }
}

impl Acceptor for UnixListener {
    type Stream = UnixStream;
    async fn next(&self) -> std::io::Result<(UnixStream, Remote)> {
        let (stream, _) = self.accept().await?;
        Ok((
            stream,
            Remote {
                label: "unix".to_string(),
                ip: None,
            },
        ))
    }
}

/// The reserve descriptor and the accept-failure log, shared by every
/// listener of the process.
struct Reserve {
    file: Mutex<Option<std::fs::File>>,
    log: Mutex<Option<Instant>>,
    failures: AtomicU64,
    shed: AtomicU64,
}

fn reserve() -> &'static Reserve {
    static RESERVE: std::sync::OnceLock<Reserve> = std::sync::OnceLock::new();
    RESERVE.get_or_init(|| Reserve {
        file: Mutex::new(std::fs::File::open("/dev/null").ok()),
        log: Mutex::new(None),
        failures: AtomicU64::new(0),
        shed: AtomicU64::new(0),
    })
}

/// Opens the reserve descriptor (call once at start, before listening).
pub fn init_reserve() {
    let _ = reserve();
}

/// Whether `e` means the process or the system is out of descriptors or
/// buffers (accepting again at once cannot succeed).
fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Accepts connections until `stop`, handing each to `serve` (which spawns
/// its task). Accept errors back off, shed pending connections when out of
/// descriptors, and are logged once per interval.
pub async fn accept_loop<L: Acceptor>(
    listener: L,
    name: String,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    mut serve: impl FnMut(L::Stream, Remote),
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        tokio::select! {
            r = listener.next() => match r {
                Ok((stream, remote)) => {
                    backoff = BACKOFF_MIN;
                    serve(stream, remote);
                }
                Err(e) => {
                    let r = reserve();
                    r.failures.fetch_add(1, Ordering::Relaxed);
                    if out_of_descriptors(&e) {
                        let shed = shed_pending(&listener);
                        r.shed.fetch_add(shed as u64, Ordering::Relaxed);
                        for _ in 0..shed {
                            Metrics::inc(&metrics.connections_refused);
                        }
                    }
                    log_failure(&name, &e);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            },
            _ = stop.cancelled() => return,
        }
    }
}

/// Out of descriptors: frees the reserve, accepts and closes the pending
/// connections (at most [`SHED_PER_ROUND`]), takes the reserve again.
fn shed_pending<L: Acceptor>(listener: &L) -> usize {
    let r = reserve();
    let mut file = r.file.lock();
    if file.take().is_none() {
        // Another listener holds the reserve's slot right now (or it could
        // not be reopened): nothing to free.
        *file = std::fs::File::open("/dev/null").ok();
        return 0;
    }
    let mut shed = 0;
    while shed < SHED_PER_ROUND {
        match listener.next().now_or_never() {
            Some(Ok((stream, _))) => {
                drop(stream);
                shed += 1;
            }
            _ => break,
        }
    }
    *file = std::fs::File::open("/dev/null").ok();
    shed
}

fn log_failure(name: &str, e: &std::io::Error) {
    let r = reserve();
    let mut last = r.log.lock();
    let now = Instant::now();
    if last.is_some_and(|t| now.duration_since(t) < LOG_INTERVAL) {
        return;
    }
    *last = Some(now);
    let failures = r.failures.swap(0, Ordering::Relaxed);
    let shed = r.shed.swap(0, Ordering::Relaxed);
    let hint = if out_of_descriptors(e) {
        " (out of file descriptors: pending connections are closed until some are free; \
         raise the descriptor limit, e.g. LimitNOFILE, or lower limits.max_connections_per_address)"
    } else {
        ""
    };
    tracing::warn!(
        listener = name,
        failures,
        shed,
        "accept failed: {e}{hint}; {failures} failure(s) and {shed} connection(s) closed unserved since the last such line (logged at most every {} s)",
        LOG_INTERVAL.as_secs()
    );
}
