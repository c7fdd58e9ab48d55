//! `POST /queues/{name}/jobs`: enqueue a job with one signed HTTP request.
//!
//! The body is the job: `{"args": [...], "kwargs": {...}}` plus any push
//! option (`delay`, `run_at`, `priority`, `result_topic`, ...); the
//! `Idempotency-Key` header sets `idempotency_key`. The signature is the
//! bound one (`crate::signing::schemes::canonical`): it covers the method, the path (so the
//! queue), the `Idempotency-Key` header and the body, and the query may hold
//! only the signing parameters. The request is a call to
//! `switchyard.queue.push` under the signing key's identity, so the realm's
//! authorization applies. 202 (or, with `queue_push_status = 201`, 201)
//! `{"id", "duplicate": false, "location"}` with `Location:
//! /queues/{name}/jobs/{id}` once the job is durable; 409 `{"id",
//! "duplicate": true, "location"}` for a key seen inside the queue's
//! idempotency window (the original job's id).
//!
//! `GET /queues/{name}/jobs/{id}`: the job's state, attempts, last error and
//! (once completed, for the realm's result retention) its result, as a call
//! to `switchyard.queue.job` under the key's identity, limited to that queue:
//! an unknown job, one of another queue and one of a queue the key may not
//! read all get the same 404.

use switchyard_router::logsafe::Clip;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use switchyard_proto::{errors, Value};
use switchyard_router::authz::Action;

use super::auth::read_bound;
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
        "switchyard.queue.error.queue_full"
        | "switchyard.queue.error.store"
        | "switchyard.queue.error.unavailable" => StatusCode::SERVICE_UNAVAILABLE,
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
    let path = req.uri().path().to_string();
    let (caller, body) = read_bound(bridge, req, key.as_deref()).await?;
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
    } else if bridge.config.queue_push_status == 201 {
        StatusCode::CREATED
    } else {
        StatusCode::ACCEPTED
    };
    // The path as sent names the queue (its percent-encoding kept).
    let location = format!("{path}/{id}");
    let mut r = json_response(
        status,
        json!({"id": id, "duplicate": duplicate, "location": location}),
    );
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

/// The queue and job id named by a `/queues/{name}/jobs/{id}` path.
pub(super) fn job_of(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/queues/")?;
    let (queue, id) = rest.split_once("/jobs/")?;
    (!queue.is_empty() && !queue.contains('/') && !id.is_empty() && !id.contains('/'))
        .then_some((queue, id))
}

/// `GET /queues/{name}/jobs/{id}`: the job's state.
pub(super) async fn handle_job(
    bridge: &Bridge,
    queue: &str,
    id: &str,
    req: Request<Incoming>,
    peer: &str,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        let mut r = refusal(Refusal(
            StatusCode::METHOD_NOT_ALLOWED,
            "switchyard.error.method_not_allowed",
            format!(
                "/queues/{}/jobs/{} only accepts GET, not {}",
                Clip(queue),
                Clip(id),
                req.method()
            ),
        ));
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return r;
    }
    match job(bridge, queue, id, req).await {
        Ok(r) => r,
        Err(r) => {
            tracing::info!(%peer, queue = %Clip(queue), error = r.1, "job status refused: {}", Clip(&r.2));
            refusal(r)
        }
    }
}

const JOB: &str = "switchyard.queue.job";

/// The answer when the job is unknown, of another queue, or of a queue the
/// key may not read: one answer for all three.
fn no_such_job(queue: &str, id: &str) -> Refusal {
    Refusal(
        StatusCode::NOT_FOUND,
        "switchyard.queue.error.unknown_job",
        format!(
            "queue `{}` has no job {} that you may read",
            Clip(queue),
            Clip(id)
        ),
    )
}

async fn job(
    bridge: &Bridge,
    queue: &str,
    id: &str,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Refusal> {
    // (The body is signed, even empty, and must be read for the signature.)
    let (caller, _body) = read_bound(bridge, req, None).await?;
    let job_id = id.parse::<u64>().map_err(|_| no_such_job(queue, id))?;
    authorize(bridge, &caller, Action::Call, JOB).await?;
    let reply = caller
        .call(
            &bridge.realm.dealer,
            JOB,
            vec![Value::UInt(job_id)],
            Some(switchyard_proto::Dict::new().with("queue", queue)),
            bridge.config.call_timeout,
        )
        .await
        .map_err(|f| match f.error.as_str() {
            "switchyard.queue.error.unknown_job" | errors::NOT_AUTHORIZED => no_such_job(queue, id),
            other => Refusal(status_of(other), errors_uri(other), f.message),
        })?;
    Ok(json_response(StatusCode::OK, job_status(&reply.kwargs)))
}

/// The JSON of `GET /queues/{name}/jobs/{id}` from the answer of
/// `switchyard.queue.job` (docs/QUEUES.md, "Jobs over HTTP").
fn job_status(d: &switchyard_proto::Dict) -> serde_json::Value {
    let to_json = |v: Option<&Value>| {
        v.map(|v| serde_json::to_value(v).unwrap_or(serde_json::Value::Null))
            .unwrap_or(serde_json::Value::Null)
    };
    let job = match d.get("job") {
        Some(Value::Dict(j)) => j.clone(),
        _ => switchyard_proto::Dict::new(),
    };
    let status = match d.get("status") {
        Some(Value::Dict(s)) => s.clone(),
        _ => switchyard_proto::Dict::new(),
    };
    let state = status.get_str("state").unwrap_or("unknown");
    let mut out = json!({
        "id": to_json(job.get("id")),
        "queue": to_json(job.get("queue")),
        "state": state,
        "attempts": to_json(status.get("attempts")),
        "created_at_ms": to_json(job.get("created_at_ms")),
        "last_error": to_json(status.get("last_error")),
        "result": to_json(d.get("result")),
    });
    if state == "completed" {
        out["completed_at_ms"] = to_json(status.get("completed_at_ms"));
        out["result_bytes"] = to_json(d.get("result_bytes"));
        out["result_truncated"] = to_json(d.get("result_truncated"));
    }
    let extra: &[(&str, &str)] = match state {
        "completed" => &[],
        "leased" => &[
            ("run_at_ms", "run_at_ms"),
            ("lease_deadline_ms", "deadline_ms"),
        ],
        "dead" => &[("dead_reason", "reason"), ("dead_at_ms", "at_ms")],
        _ => &[("run_at_ms", "run_at_ms")],
    };
    for (name, key) in extra {
        out[*name] = to_json(status.get(key));
    }
    if let Some(Value::UInt(n)) = job.get("max_attempts") {
        out["max_attempts"] = json!(n);
    }
    out
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
