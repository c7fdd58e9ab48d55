//! `POST /queues/{name}/jobs`: enqueue a job with one signed HTTP request.
//!
//! The body is the job: `{"args": [...], "kwargs": {...}}` plus any push
//! option (`delay`, `run_at`, `priority`, `result_topic`, ...); the
//! `Idempotency-Key` header sets `idempotency_key`. The signature is the
//! bound one (`crate::signing::schemes::canonical`): it covers the method, the path (so the
//! queue), the `Idempotency-Key` header and the body, and the query may hold
//! only the signing parameters. The request is a call to
//! `switchyard.queue.push` under the signing key's identity, so the realm's
//! authorization applies. 201 `{"id", "duplicate": false}` once the job is
//! durable; 409 `{"id", "duplicate": true}` for a key seen inside the
//! queue's idempotency window (the original job's id).

use switchyard_router::logsafe::Clip;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use switchyard_proto::{errors, Value};
use switchyard_router::authz::Action;

use super::auth::{authenticate, browser_marker, Scheme};
use super::body::read_body;
use super::{authorize, bad, json_response, refusal, Bridge, Refusal};

const PUSH: &str = "switchyard.queue.push";

/// The queue named by a `/queues/{name}/jobs` path.
pub(super) fn queue_of(path: &str) -> Option<&str> {
    path.strip_prefix("/queues/")?
        .strip_suffix("/jobs")
        .filter(|q| !q.is_empty() && !q.contains('/'))
}

/// The HTTP status of a `switchyard.queue.push` error.
fn status_of(error: &str) -> StatusCode {
    match error {
        "switchyard.queue.error.unknown_queue" | errors::NO_SUCH_PROCEDURE => StatusCode::NOT_FOUND,
        "switchyard.queue.error.payload_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
        "switchyard.queue.error.queue_full" | "switchyard.queue.error.store" => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        errors::NOT_AUTHORIZED => StatusCode::FORBIDDEN,
        errors::TIMEOUT => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::BAD_REQUEST,
    }
}

pub(super) async fn handle(
    bridge: &Bridge,
    queue: &str,
    req: Request<Incoming>,
    peer: &str,
) -> Response<Full<Bytes>> {
    if req.method() != Method::POST {
        let mut r = refusal(Refusal(
            StatusCode::METHOD_NOT_ALLOWED,
            "switchyard.error.method_not_allowed",
            format!(
                "/queues/{queue}/jobs only accepts POST, not {}",
                req.method()
            ),
        ));
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    match push(bridge, queue, req).await {
        Ok(r) => r,
        Err(r) => {
            tracing::info!(%peer, queue = %Clip(queue), error = r.1, "queue push refused: {}", Clip(&r.2));
            refusal(r)
        }
    }
}

async fn push(
    bridge: &Bridge,
    queue: &str,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Refusal> {
    let mut keys = req.headers().get_all("idempotency-key").iter();
    let key = match (keys.next(), keys.next()) {
        (None, _) => None,
        (Some(_), Some(_)) => return Err(bad("the Idempotency-Key header is given twice")),
        (Some(v), None) => {
            let v = v
                .to_str()
                .map_err(|_| bad("the Idempotency-Key header must be visible ASCII"))?;
            if v.is_empty() {
                return Err(bad("the Idempotency-Key header is empty"));
            }
            Some(v.to_string())
        }
    };
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let browser = browser_marker(req.headers());
    let body = read_body(req, bridge).await?;
    let caller = authenticate(
        bridge,
        browser,
        &query,
        Scheme::Bound {
            method: &method,
            path: &path,
            idempotency_key: key.as_deref(),
        },
        &body,
    )?;
    let mut job = if body.iter().all(u8::is_ascii_whitespace) {
        switchyard_proto::Dict::new()
    } else {
        super::strict_json::check_unique_keys(&body)
            .map_err(|e| bad(format!("the body is not accepted: {e}")))?;
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Dict(d)) => {
                if let Some(path) = crate::queue_service::duplicate_key(&[], &d) {
                    let path = path.replacen("kwargs", "the body", 1);
                    return Err(bad(crate::queue_service::duplicate_key_message(&path)));
                }
                d
            }
            Ok(_) => return Err(bad("the body must be a JSON object (the job)")),
            Err(e) => return Err(bad(format!("the body is not JSON: {e}"))),
        }
    };
    if let Some(k) = key {
        match job.get_str("idempotency_key") {
            Some(other) if other != k => {
                return Err(bad(
                    "the Idempotency-Key header and the body's idempotency_key differ",
                ))
            }
            _ => job.insert("idempotency_key", k),
        }
    }
    authorize(bridge, &caller, Action::Call, PUSH).await?;
    let reply = caller
        .call(
            &bridge.realm.dealer,
            PUSH,
            vec![Value::from(queue)],
            Some(job),
            bridge.config.call_timeout,
        )
        .await
        .map_err(|f| Refusal(status_of(&f.error), errors_uri(&f.error), f.message))?;
    let id = match reply.kwargs.get("id") {
        Some(Value::UInt(id)) => *id,
        _ => return Err(bad("switchyard.queue.push answered without a job id")),
    };
    let duplicate = reply.kwargs.get_bool("duplicate").unwrap_or(false);
    let status = if duplicate {
        StatusCode::CONFLICT
    } else {
        StatusCode::CREATED
    };
    Ok(json_response(
        status,
        json!({"id": id, "duplicate": duplicate}),
    ))
}

/// The error URIs a refusal can carry are static; the queue's are known.
fn errors_uri(error: &str) -> &'static str {
    const KNOWN: [&str; 10] = [
        "switchyard.queue.error.unknown_queue",
        "switchyard.queue.error.invalid_argument",
        "switchyard.queue.error.payload_too_large",
        "switchyard.queue.error.queue_full",
        "switchyard.queue.error.store",
        "switchyard.queue.error.config_conflict",
        errors::NOT_AUTHORIZED,
        errors::NO_SUCH_PROCEDURE,
        errors::TIMEOUT,
        errors::INVALID_ARGUMENT,
    ];
    KNOWN
        .into_iter()
        .find(|k| *k == error)
        .unwrap_or("switchyard.queue.error.failed")
}
