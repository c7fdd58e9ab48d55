//! The operations listener (`[[listener]] type = "operations"`): plain HTTP
//! for operators and orchestrators, separate from the WAMP listeners so
//! that it can stay on loopback or a private network.
//!
//! - `GET /healthz`: 200 while the process serves HTTP (liveness).
//! - `GET /readyz`: 200 when every listener is bound and every queue store
//!   open, 503 with a JSON body naming what is not (readiness.rs); 503 from
//!   the moment a shutdown begins.
//! - `GET /metrics`: the router's metrics in the Prometheus text format.
//!
//! It is not authenticated, so it must not be a way in or a DoS vector:
//! it reads no request body, serves one request per connection, holds at
//! most [`MAX_CONNECTIONS`] connections (more are closed at once), and
//! gives each connection [`CONNECTION_DEADLINE`] in all.

pub mod process;
pub mod readiness;
pub mod routing;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use switchyard_router::metrics::Metrics;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::transport::accept::accept_loop;
pub use readiness::{CheckId, Readiness};

/// Connections served at once; more are closed without an answer.
pub const MAX_CONNECTIONS: usize = 16;
/// A request head must arrive within this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head, bytes (431 beyond): the endpoints take no
/// headers worth more.
pub const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// A connection is closed after this, answered or not.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);

/// What the endpoints read.
pub struct Operations {
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
}

/// Serves the operations endpoints on `listener` until `stop`.
pub async fn serve(
    listener: TcpListener,
    name: String,
    ops: Arc<Operations>,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let metrics = ops.metrics.clone();
    accept_loop(listener, name, metrics, stop, move |stream, remote| {
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(peer = %remote.label, "operations: {MAX_CONNECTIONS} connections open, closing one more");
            return;
        };
        let ops = ops.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |req| {
                let ops = ops.clone();
                async move { Ok::<_, Infallible>(handle(&req, &ops)) }
            });
            let conn = crate::transport::http1_server(HEADER_TIMEOUT, MAX_REQUEST_HEAD)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_DEADLINE, conn).await {
                Ok(Err(e)) => tracing::debug!(peer = %remote.label, "operations: HTTP connection ended: {e}"),
                Err(_) => tracing::debug!(peer = %remote.label, "operations: connection closed after {CONNECTION_DEADLINE:?}"),
                Ok(Ok(())) => {}
            }
        });
    })
    .await;
}

/// One request: the path decides; only GET and HEAD are served.
fn handle(req: &Request<Incoming>, ops: &Operations) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if !matches!(path, "/healthz" | "/readyz" | "/metrics") {
        return text(
            StatusCode::NOT_FOUND,
            "not found: the operations endpoints are /healthz, /readyz and /metrics\n".into(),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{path} answers GET and HEAD only\n"),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match path {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => {
            let (ready, body) = ops.readiness.report();
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let mut r = Response::new(Full::new(Bytes::from(body.to_string() + "\n")));
            *r.status_mut() = status;
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        _ => {
            let mut r = text(StatusCode::OK, ops.metrics.render());
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
