//! A WebSocket listener's connections: the WAMP upgrade answered without
//! hyper, everything else by hyper.
//!
//! Most connections to a WebSocket listener send one request, the upgrade,
//! and then speak WebSocket (framed by [`super::wsframe`]). hyper cost a
//! WebSocket session setup ~6 % of the router's CPU besides the 101's
//! write, a second task, and a locked `tokio::io::split` of the upgraded
//! stream (docs/BENCHMARKS.md). So the request head is read here (by
//! `handshake_timeout`, at most [`FAST_HEAD_MAX`] bytes) and parsed with
//! `httparse`, the parser hyper uses: a `GET` of the WAMP path that
//! [`websocket::handle_http`] would upgrade is answered 101 here and the
//! session runs in this task, over the stream's own halves. Anything else
//! (another path or page, the metrics, a refused origin, a bad or missing
//! upgrade header, no WAMP subprotocol, a body, HTTP/1.0, a longer head, the
//! testee) goes to hyper with the bytes read so far put back in front of
//! the stream ([`Prefixed`]), so that every answer and limit (403, 404, 426,
//! 431...) is the one hyper and `handle_http` give.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use switchyard_proto::Serializer;
use switchyard_router::TransportInfo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::conn_limit::Guarded;
use super::websocket::{self, Endpoint, Mode};

/// The longest request head answered here; a longer one goes to hyper
/// (whose limit, `max_request_head_size`, is at least this).
pub const FAST_HEAD_MAX: usize = super::MIN_REQUEST_HEAD_SIZE;
/// Most header lines (hyper's default; more is hyper's 431).
const MAX_HEADERS: usize = 100;
/// The least header timeout hyper is given after the fast path (hyper
/// closes at once on a zero one, before a head already read is answered).
const MIN_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(100);

/// A stream a WebSocket session can be served over: split into a read and a
/// write half for the reader and writer tasks.
pub trait IntoHalves: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    type Read: AsyncRead + Unpin + Send + 'static;
    type Write: AsyncWrite + Unpin + Send + 'static;
    fn into_halves(self) -> (Self::Read, Self::Write);
}

/// Plain TCP: the socket's own halves (no lock between them); the
/// connection's slot goes with the read half, whose task ends last.
impl IntoHalves for Guarded<TcpStream> {
    type Read = Guarded<tokio::net::tcp::OwnedReadHalf>;
    type Write = tokio::net::tcp::OwnedWriteHalf;
    fn into_halves(self) -> (Self::Read, Self::Write) {
        let (stream, guard) = self.into_parts();
        let (r, w) = stream.into_split();
        (Guarded::new(r, guard), w)
    }
}

/// TLS: one session state for both directions, behind tokio's lock.
impl IntoHalves for Guarded<tokio_rustls::server::TlsStream<TcpStream>> {
    type Read = tokio::io::ReadHalf<Self>;
    type Write = tokio::io::WriteHalf<Self>;
    fn into_halves(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }
}

/// Serves one connection of a WebSocket listener until it ends: the
/// request head must arrive by `deadline` (`handshake_timeout` after the
/// accept, as hyper's header timeout).
///
/// The returned future is the connection's task, for the session's whole
/// life: its arguments wait for the head in a box (freed once moved on),
/// and hyper's future, rarely needed, is boxed, so that a session's task
/// holds little more than the session ([`tests::a_connection_task_stays_small`]).
pub fn serve<S: IntoHalves>(
    stream: S,
    label: String,
    ep: Endpoint,
    transport: TransportInfo,
    deadline: Instant,
) -> impl std::future::Future<Output = ()> + Send {
    let args = Box::new((stream, label, ep, transport));
    async move {
        let mut args = args;
        let outcome = {
            let (stream, label, ep, transport) = &mut *args;
            handshake(stream, ep, transport, label, deadline).await
        };
        // Out of the box, which is freed here (not when the task ends).
        let (stream, label, ep, transport) = {
            let args = args;
            *args
        };
        match outcome {
            Outcome::Closed => {}
            Outcome::Upgraded { serializer, read } => {
                let (r, w) = stream.into_halves();
                let label = format!("{label} websocket/{serializer}");
                websocket::serve(r, w, read, serializer, ep, label, transport).await
            }
            Outcome::Hyper(read) => {
                // hyper's header timeout counts from now: what is left of
                // the head's deadline, so that a head trickled in over the
                // fast path's bytes gets no second `handshake_timeout`.
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .max(MIN_HEADER_TIMEOUT);
                Box::pin(serve_hyper(
                    Prefixed::new(read, stream),
                    label,
                    ep,
                    transport,
                    left,
                ))
                .await
            }
        }
    }
}

/// What became of a connection's first request.
enum Outcome {
    /// Answered 101 for a WAMP session with this serializer; `read` holds
    /// what the peer sent after its request.
    Upgraded {
        serializer: Serializer,
        read: BytesMut,
    },
    /// hyper answers it: what was read so far.
    Hyper(BytesMut),
    /// The connection is to be closed (no head in time, a read error).
    Closed,
}

/// Reads the first request head and answers it 101 if it is a WAMP upgrade
/// this listener takes; otherwise leaves it to hyper.
async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    ep: &Endpoint,
    transport: &mut TransportInfo,
    label: &str,
    deadline: Instant,
) -> Outcome {
    if ep.mode == Mode::Echo {
        return Outcome::Hyper(BytesMut::new());
    }
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(1024.min(FAST_HEAD_MAX - buf.len()));
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Err(_) => {
                // As hyper's header timeout: closed without an answer.
                tracing::debug!(peer = %label, "HTTP connection ended: no request head within handshake_timeout");
                return Outcome::Closed;
            }
            Ok(Err(e)) => {
                tracing::debug!(peer = %label, "HTTP connection ended: {e}");
                return Outcome::Closed;
            }
            // hyper sees the end (or a partial head) as it would have.
            Ok(Ok(0)) => return Outcome::Hyper(buf),
            Ok(Ok(_)) => {}
        }
        let upgrade = match parse(&buf, ep) {
            Parsed::Partial if buf.len() < FAST_HEAD_MAX => continue,
            Parsed::Partial | Parsed::Other => return Outcome::Hyper(buf),
            Parsed::Upgrade(u) => u,
        };
        transport.origin = upgrade.origin;
        let answer = switching_protocols(&upgrade.accept, upgrade.serializer);
        let write = async {
            stream.write_all(&answer).await?;
            stream.flush().await
        };
        match tokio::time::timeout_at(deadline, write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(peer = %label, "WebSocket upgrade failed: {e}");
                return Outcome::Closed;
            }
            Err(_) => {
                tracing::debug!(peer = %label, "WebSocket upgrade failed: the 101 not written within handshake_timeout");
                return Outcome::Closed;
            }
        }
        buf.advance(upgrade.len);
        let read = if buf.is_empty() { BytesMut::new() } else { buf };
        return Outcome::Upgraded {
            serializer: upgrade.serializer,
            read,
        };
    }
}

/// The 101 answer (the headers hyper wrote for [`websocket::handle_http`]'s
/// answer, without `date`, which a 1xx answer may omit: RFC 9110 6.6.1).
fn switching_protocols(accept: &str, serializer: Serializer) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
         sec-websocket-accept: {accept}\r\nsec-websocket-protocol: {}\r\n\r\n",
        serializer.subprotocol()
    )
    .into_bytes()
}

/// A request head, as far as the fast path is concerned.
#[derive(Debug)]
enum Parsed {
    /// Not complete yet.
    Partial,
    /// Complete, and not a WAMP upgrade this path answers (hyper does).
    Other,
    Upgrade(Upgrade),
}

/// A WAMP upgrade request that [`websocket::handle_http`] would accept.
#[derive(Debug)]
struct Upgrade {
    /// The head's length in bytes.
    len: usize,
    serializer: Serializer,
    /// `Sec-WebSocket-Accept`.
    accept: String,
    /// The `Origin` header, as `handle_http` records it.
    origin: Option<String>,
}

/// A header value as hyper's `HeaderValue::to_str` gives it: visible ASCII
/// and tabs only, else None.
fn visible(v: &[u8]) -> Option<&str> {
    if v.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)) {
        std::str::from_utf8(v).ok()
    } else {
        None
    }
}

/// Whether a header value lists `token` (comma-separated, any case), as
/// `handle_http` reads `Upgrade` and `Connection`.
fn has_token(v: &[u8], token: &str) -> bool {
    visible(v).is_some_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Whether the request target names `path` as hyper's `uri().path()` would.
fn target_is(target: &str, path: &str) -> bool {
    if target == path {
        return true;
    }
    // With a query: only if hyper would parse the whole target.
    target
        .strip_prefix(path)
        .is_some_and(|rest| rest.starts_with('?'))
        && target.parse::<hyper::Uri>().is_ok_and(|u| u.path() == path)
}

/// Parses a request head: an upgrade that [`websocket::handle_http`] would
/// answer 101 for a WAMP session (every check it makes, in the same
/// terms), or anything else.
fn parse(buf: &[u8], ep: &Endpoint) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    if req.method != Some("GET") || req.version != Some(1) {
        return Parsed::Other;
    }
    if !req.path.is_some_and(|t| target_is(t, &ep.path)) {
        return Parsed::Other;
    }
    // The metrics and other pages come first in `handle_http`.
    if ep.metrics_path.as_deref() == Some(ep.path.as_str())
        || ep
            .pages
            .as_ref()
            .is_some_and(|p| p.answer(&hyper::Method::GET, &ep.path).is_some())
    {
        return Parsed::Other;
    }
    let (mut upgrade, mut connection) = (false, false);
    let (mut version, mut key, mut origin) = (None, None, None);
    let mut serializer = None;
    for h in req.headers.iter() {
        let (name, value) = (h.name, h.value);
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade |= has_token(value, "websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            connection |= has_token(value, "upgrade");
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            version = version.or(Some(value));
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            key = key.or(Some(value));
        } else if name.eq_ignore_ascii_case("origin") {
            origin = origin.or(Some(value));
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            if serializer.is_none() {
                serializer = visible(value).and_then(|s| {
                    s.split(',')
                        .map(str::trim)
                        .find_map(Serializer::from_subprotocol)
                });
            }
        } else if name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("expect")
        {
            // A body, or a wait for one: hyper's business.
            return Parsed::Other;
        }
    }
    let origin = match origin {
        None => None,
        // hyper would record no origin, or refuse it: its answer.
        Some(o) => match visible(o) {
            Some(o) => Some(o),
            None => return Parsed::Other,
        },
    };
    if let (Some(policy), Some(o)) = (&ep.origins, origin) {
        if !policy.allows(o) {
            return Parsed::Other;
        }
    }
    let (Some(key), Some(serializer), true, true, Some(b"13")) =
        (key, serializer, upgrade, connection, version)
    else {
        return Parsed::Other;
    };
    Parsed::Upgrade(Upgrade {
        len,
        serializer,
        accept: websocket::accept_key(key),
        origin: origin.map(str::to_string),
    })
}

/// Serves HTTP on one connection with hyper until it ends or is upgraded to
/// a WebSocket (which then runs in its own task, still holding `stream`);
/// each request head must arrive within `header_timeout`.
pub async fn serve_hyper<S>(
    stream: S,
    label: String,
    ep: Endpoint,
    transport: TransportInfo,
    header_timeout: std::time::Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = super::http1_server(header_timeout, ep.settings.max_request_head);
    let peer = label.clone();
    let service = service_fn(move |req| {
        websocket::handle_http(req, ep.clone(), label.clone(), transport.clone())
    });
    let conn = conn
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(peer = %peer, "HTTP connection ended: {e}");
    }
}

/// A stream with bytes already read from it put back in front.
pub struct Prefixed<S> {
    prefix: BytesMut,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: BytesMut, inner: S) -> Self {
        Prefixed { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            if this.prefix.is_empty() {
                // Its memory goes now, not with the connection.
                this.prefix = BytesMut::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::transport::websocket::test_endpoint as endpoint;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn request(extra: &str) -> String {
        format!(
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    }

    fn parsed(req: &str, ep: &Endpoint) -> Parsed {
        parse(req.as_bytes(), ep)
    }

    #[test]
    fn a_wamp_upgrade_is_answered_here() {
        let ep = endpoint();
        let req = request("Sec-WebSocket-Protocol: foo, wamp.2.msgpack\r\nOrigin: http://a\r\n");
        let Parsed::Upgrade(u) = parsed(&req, &ep) else {
            panic!("not taken: {req}");
        };
        assert_eq!(u.len, req.len());
        assert_eq!(u.serializer, Serializer::MsgPack);
        // RFC 6455's example.
        assert_eq!(u.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(u.origin.as_deref(), Some("http://a"));
        // With a query, and split across reads.
        let q = request("Sec-WebSocket-Protocol: wamp.2.json\r\n").replace("/ws ", "/ws?a=1 ");
        assert!(matches!(parsed(&q, &ep), Parsed::Upgrade(_)));
        assert!(matches!(parsed(&q[..40], &ep), Parsed::Partial));
    }

    /// Everything `handle_http` refuses or answers otherwise goes to hyper.
    #[test]
    fn anything_else_is_left_to_hyper() {
        let mut ep = endpoint();
        let proto = "Sec-WebSocket-Protocol: wamp.2.json\r\n";
        let good = request(proto);
        let cases = [
            good.replace("GET ", "POST "),
            good.replace("/ws ", "/other "),
            good.replace("/ws ", "/wsx "),
            good.replace("/ws ", "http://x/ws "),
            good.replace("HTTP/1.1", "HTTP/1.0"),
            good.replace("Upgrade: websocket", "Upgrade: h2c"),
            good.replace("Connection: Upgrade", "Connection: keep-alive"),
            good.replace("Version: 13", "Version: 8"),
            good.replace(&format!("Sec-WebSocket-Key: {KEY}\r\n"), ""),
            request(""),
            request("Sec-WebSocket-Protocol: mqtt\r\n"),
            request(&format!("{proto}Content-Length: 0\r\n")),
            request(&format!("{proto}Transfer-Encoding: chunked\r\n")),
            request(&format!("{proto}Origin: http://\u{e9}\r\n")),
            request(&format!("{proto}{}", "X-A: b\r\n".repeat(MAX_HEADERS))),
            "GET /ws HTTP/1.1\r\nBad Header\r\n\r\n".to_string(),
        ];
        for req in &cases {
            assert!(
                matches!(parsed(req, &ep), Parsed::Other),
                "taken by the fast path: {req:?}"
            );
        }
        // The first Sec-WebSocket-Version counts, as in `handle_http`.
        let twice = request(&format!("{proto}Sec-WebSocket-Version: 13\r\n")).replacen(
            "Version: 13",
            "Version: 12",
            1,
        );
        assert!(matches!(parsed(&twice, &ep), Parsed::Other));
        // An origin outside allowed_origins.
        ep.origins = Some(Arc::new(
            crate::transport::origin::OriginPolicy::parse(&["https://ok.example".to_string()])
                .expect("policy"),
        ));
        let other = request(&format!("{proto}Origin: https://evil.example\r\n"));
        assert!(matches!(parsed(&other, &ep), Parsed::Other));
        let ok = request(&format!("{proto}Origin: https://ok.example\r\n"));
        assert!(matches!(parsed(&ok, &ep), Parsed::Upgrade(_)));
        // The metrics on the WAMP path, and the testee.
        let mut m = endpoint();
        m.metrics_path = Some("/ws".into());
        assert!(matches!(parsed(&good, &m), Parsed::Other));
    }

    /// The prefix is read first, then the stream.
    #[tokio::test]
    async fn a_prefixed_stream_reads_its_prefix_first() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b" world").await.expect("write");
        drop(a);
        let mut p = Prefixed::new(BytesMut::from(&b"hello"[..]), b);
        let mut all = String::new();
        p.read_to_string(&mut all).await.expect("read");
        assert_eq!(all, "hello world");
    }

    /// The task of a fast-path connection lives as long as its session: its
    /// future's size is memory per idle session (hyper's, not needed then,
    /// is boxed).
    #[tokio::test]
    async fn a_connection_task_stays_small() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let c = TcpStream::connect(l.local_addr().expect("addr"))
            .await
            .expect("connect");
        let task = serve(
            Guarded::new(c, None),
            "peer".into(),
            endpoint(),
            TransportInfo::new("websocket", None),
            Instant::now(),
        );
        let size = std::mem::size_of_val(&task);
        assert!(
            size <= 1536,
            "a WebSocket connection's task is {size} bytes"
        );
    }
}
