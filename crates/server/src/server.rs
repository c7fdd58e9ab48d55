//! Starts the listeners, accepts connections and shuts down on a signal.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use switchyard_router::Router;
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ListenerConfig};
use crate::transport::{rawsocket, websocket, Settings};

/// How long shutdown waits for sessions to close after GOODBYE.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Runs the router until SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<(), String> {
    let router = Router::new(config.realm_configs());
    let settings = Settings::from_limits(&config.limits);
    let stop = CancellationToken::new();
    let mut unix_paths = Vec::new();

    for l in config.listener_configs()? {
        match l {
            ListenerConfig::Websocket { address, path } => {
                let listener = bind_tcp(address).await?;
                let ep = websocket::Endpoint {
                    router: router.clone(),
                    settings: settings.clone(),
                    path: path.clone(),
                };
                tracing::info!(
                    "listening for WAMP over WebSocket on ws://{}{path}",
                    local(&listener, address)
                );
                tokio::spawn(accept_loop(listener, stop.clone(), move |s, label| {
                    serve_websocket(s, label, &ep)
                }));
            }
            ListenerConfig::RawsocketTcp { address } => {
                let listener = bind_tcp(address).await?;
                tracing::info!(
                    "listening for WAMP over RawSocket on tcp://{}",
                    local(&listener, address)
                );
                let (router, settings) = (router.clone(), settings.clone());
                tokio::spawn(accept_loop(listener, stop.clone(), move |s, label| {
                    serve_rawsocket_tcp(s, label, &router, &settings)
                }));
            }
            ListenerConfig::RawsocketUnix { path } => {
                let listener = bind_unix(&path)?;
                tracing::info!(
                    "listening for WAMP over RawSocket on unix:{}",
                    path.display()
                );
                unix_paths.push(path.clone());
                let (router, settings) = (router.clone(), settings.clone());
                tokio::spawn(accept_loop(listener, stop.clone(), move |s, label| {
                    serve_rawsocket_unix(s, label, &router, &settings)
                }));
            }
        }
    }
    let realms: Vec<&str> = router.realms().map(|r| r.name()).collect();
    tracing::info!(realms = ?realms, "switchyard {} ready", env!("CARGO_PKG_VERSION"));

    let signal = wait_for_signal().await;
    tracing::info!("{signal} received: sending GOODBYE to every session");
    stop.cancel();
    router.shutdown();
    if tokio::time::timeout(SHUTDOWN_GRACE, router.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            open = router.connection_count(),
            "connections still open after {SHUTDOWN_GRACE:?}: exiting anyway"
        );
    }
    for p in unix_paths {
        let _ = std::fs::remove_file(p);
    }
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot listen for SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

fn local(l: &TcpListener, fallback: SocketAddr) -> SocketAddr {
    l.local_addr().unwrap_or(fallback)
}

async fn bind_tcp(address: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address}: {e}"))
}

fn bind_unix(path: &PathBuf) -> Result<UnixListener, String> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            // A stale socket from an earlier run; a live one would refuse
            // connections only after we remove it, so check first.
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(format!(
                    "cannot listen on unix:{}: another process is serving it",
                    path.display()
                ));
            }
            let _ = std::fs::remove_file(path);
        } else {
            return Err(format!(
                "cannot listen on unix:{}: the path exists and is not a socket",
                path.display()
            ));
        }
    }
    UnixListener::bind(path).map_err(|e| format!("cannot listen on unix:{}: {e}", path.display()))
}

fn tune(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!("TCP_NODELAY not set: {e}");
    }
}

/// TCP keepalive finds dead RawSocket peers without RawSocket PINGs: the
/// kernel probes after `ping_interval` of silence, every `ping_timeout / 3`,
/// and drops the connection after three unanswered probes.
fn tcp_keepalive(stream: &TcpStream, settings: &Settings) {
    if settings.ping_interval.is_zero() {
        return;
    }
    let probe = (settings.ping_timeout / 3).max(Duration::from_secs(1));
    let ka = socket2::TcpKeepalive::new()
        .with_time(settings.ping_interval)
        .with_interval(probe)
        .with_retries(3);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&ka) {
        tracing::debug!("TCP keepalive not set: {e}");
    }
}

/// A listening socket: TCP or Unix.
trait Acceptor {
    type Stream;
    /// The next connection and a label for logs.
    async fn next(&self) -> std::io::Result<(Self::Stream, String)>;
}

impl Acceptor for TcpListener {
    type Stream = TcpStream;
    async fn next(&self) -> std::io::Result<(TcpStream, String)> {
        let (stream, addr) = self.accept().await?;
        tune(&stream);
        Ok((stream, addr.to_string()))
    }
}

impl Acceptor for UnixListener {
    type Stream = UnixStream;
    async fn next(&self) -> std::io::Result<(UnixStream, String)> {
        let (stream, _) = self.accept().await?;
        Ok((stream, "unix".to_string()))
    }
}

/// Accepts connections until `stop`, handing each to `serve` (which spawns
/// its task). Accept errors such as EMFILE are logged and do not spin.
async fn accept_loop<L: Acceptor>(
    listener: L,
    stop: CancellationToken,
    mut serve: impl FnMut(L::Stream, String),
) {
    loop {
        tokio::select! {
            r = listener.next() => match r {
                Ok((stream, label)) => serve(stream, label),
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = stop.cancelled() => return,
        }
    }
}

fn serve_websocket(stream: TcpStream, label: String, ep: &websocket::Endpoint) {
    let ep = ep.clone();
    let timeout = ep.settings.handshake_timeout;
    tokio::spawn(async move {
        let peer = label.clone();
        let service = service_fn(move |req| websocket::handle_http(req, ep.clone(), label.clone()));
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(timeout)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        if let Err(e) = conn.await {
            tracing::debug!(peer = %peer, "HTTP connection ended: {e}");
        }
    });
}

fn serve_rawsocket_tcp(
    stream: TcpStream,
    label: String,
    router: &Arc<Router>,
    settings: &Settings,
) {
    tcp_keepalive(&stream, settings);
    let (r, w) = stream.into_split();
    tokio::spawn(rawsocket::serve(
        r,
        w,
        router.clone(),
        settings.clone(),
        label,
        Instant::now(),
    ));
}

fn serve_rawsocket_unix(
    stream: UnixStream,
    label: String,
    router: &Arc<Router>,
    settings: &Settings,
) {
    let (r, w) = stream.into_split();
    tokio::spawn(rawsocket::serve(
        r,
        w,
        router.clone(),
        settings.clone(),
        label,
        Instant::now(),
    ));
}
