//! JSON-RPC 2.0 over HTTP into WAMP (`[[bridge]] jsonrpc_path`): each
//! request is a call of the procedure named by `method` under the signing
//! key's identity (so the realm's authorization applies), `params` as the
//! call's arguments (an array) or keyword arguments (an object).
//!
//! - result: no arguments → `null`; one positional argument and no keyword
//!   arguments → that value; several positional only → the array; keyword
//!   arguments only → the object; both → `{"args": [...], "kwargs": {...}}`;
//! - errors: the spec's codes (-32700 parse error, -32600 invalid request,
//!   -32601 `wamp.error.no_such_procedure`, -32602
//!   `wamp.error.invalid_argument`, -32603 internal), the router's other
//!   refusals and the callee's application errors as server errors
//!   ([`server_error_code`]), each with `data: {error, args, kwargs}`;
//! - batches: at most `jsonrpc_max_batch` requests (their total size is
//!   bounded by `max_body_size`), run concurrently; an empty batch is an
//!   invalid request;
//! - notifications (no `id`) are called and not answered; a request made
//!   only of notifications gets `204 No Content`.
//!
//! Transport refusals (signature, size, method, busy) are the bridge's
//! usual JSON refusals with an HTTP status, not JSON-RPC errors: they come
//! before any request is read.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Map, Value as Json};
use switchyard_proto::{errors, uri, Dict, Value};
use switchyard_router::authz::{Action, Decision};
use switchyard_router::internal::InternalCaller;
use switchyard_router::logsafe::Clip;

use super::auth::read_bound;
use super::{json_response, refusal, Bridge, Refusal};

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;

/// The server error code (-32000..-32099) of a WAMP error the spec has no
/// code for: the callee's application errors are -32000, the router's own
/// refusals each have theirs.
pub fn server_error_code(error: &str) -> i64 {
    match error {
        errors::NOT_AUTHORIZED => -32001,
        errors::TIMEOUT => -32002,
        errors::NO_AVAILABLE_CALLEE => -32003,
        errors::CANCELED => -32004,
        errors::PAYLOAD_SIZE_EXCEEDED => -32005,
        errors::INVALID_URI => -32006,
        _ => -32000,
    }
}

/// The JSON-RPC code of a WAMP error.
fn code_of(error: &str) -> i64 {
    match error {
        errors::NO_SUCH_PROCEDURE => METHOD_NOT_FOUND,
        errors::INVALID_ARGUMENT => INVALID_PARAMS,
        other => server_error_code(other),
    }
}

pub(super) async fn handle(
    bridge: &Bridge,
    req: Request<Incoming>,
    peer: &str,
) -> Response<Full<Bytes>> {
    if req.method() != Method::POST {
        let mut r = refusal(Refusal(
            StatusCode::METHOD_NOT_ALLOWED,
            "switchyard.error.method_not_allowed",
            format!(
                "{} only accepts POST, not {}",
                bridge.config.jsonrpc_path.as_deref().unwrap_or(""),
                req.method()
            ),
        ));
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    let path = req.uri().path().to_string();
    let outcome = async {
        let (caller, body) = read_bound(bridge, req, None).await?;
        Ok::<_, Refusal>(answer(bridge, &caller, &body).await)
    }
    .await;
    match outcome {
        Ok(Some(reply)) => json_response(StatusCode::OK, reply),
        Ok(None) => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
        Err(r) => {
            tracing::info!(%peer, path = %Clip(&path), error = r.1, "JSON-RPC request refused: {}", Clip(&r.2));
            refusal(r)
        }
    }
}

/// An error response.
fn error(id: Json, code: i64, message: impl Into<String>, data: Option<Json>) -> Json {
    let mut e = json!({"code": code, "message": message.into()});
    if let Some(d) = data {
        e["data"] = d;
    }
    json!({"jsonrpc": "2.0", "error": e, "id": id})
}

/// The answer to a body: None when it held only notifications.
async fn answer(bridge: &Bridge, caller: &InternalCaller, body: &[u8]) -> Option<Json> {
    let parsed: Json = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return Some(error(
                Json::Null,
                PARSE_ERROR,
                "Parse error",
                Some(json!({"reason": e.to_string()})),
            ))
        }
    };
    // A repeated key: which of the values counts would be a guess.
    if let Err(e) = super::strict_json::check_unique_keys(body) {
        return Some(error(
            Json::Null,
            INVALID_REQUEST,
            "Invalid Request",
            Some(json!({"reason": e.to_string()})),
        ));
    }
    match parsed {
        Json::Array(batch) => {
            if batch.is_empty() {
                return Some(error(
                    Json::Null,
                    INVALID_REQUEST,
                    "Invalid Request",
                    Some(json!({"reason": "an empty batch"})),
                ));
            }
            let max = bridge.config.jsonrpc_max_batch;
            if batch.len() > max {
                return Some(error(
                    Json::Null,
                    INVALID_REQUEST,
                    "Invalid Request",
                    Some(json!({"reason": format!(
                        "a batch of {} requests: at most {max} (jsonrpc_max_batch)",
                        batch.len()
                    )})),
                ));
            }
            let replies =
                futures_util::future::join_all(batch.into_iter().map(|r| one(bridge, caller, r)))
                    .await;
            let replies: Vec<Json> = replies.into_iter().flatten().collect();
            (!replies.is_empty()).then_some(Json::Array(replies))
        }
        single => one(bridge, caller, single).await,
    }
}

/// One request of a body: its response, or None for a notification.
async fn one(bridge: &Bridge, caller: &InternalCaller, request: Json) -> Option<Json> {
    let Json::Object(obj) = request else {
        return Some(error(
            Json::Null,
            INVALID_REQUEST,
            "Invalid Request",
            Some(json!({"reason": "a request must be an object"})),
        ));
    };
    // The id, if it is one the spec allows (a string, a number or null).
    let id = match obj.get("id") {
        None => None,
        Some(v @ (Json::String(_) | Json::Number(_) | Json::Null)) => Some(v.clone()),
        Some(_) => {
            return Some(error(
                Json::Null,
                INVALID_REQUEST,
                "Invalid Request",
                Some(json!({"reason": "id must be a string, a number or null"})),
            ))
        }
    };
    let outcome = run(bridge, caller, &obj).await;
    let id = id?; // a notification: no answer, whatever happened
    Some(match outcome {
        Ok(result) => json!({"jsonrpc": "2.0", "result": result, "id": id}),
        Err((code, message, data)) => error(id, code, message, data),
    })
}

type RpcError = (i64, String, Option<Json>);

fn invalid(reason: impl Into<String>) -> RpcError {
    (
        INVALID_REQUEST,
        "Invalid Request".into(),
        Some(json!({"reason": reason.into()})),
    )
}

/// Validates and runs one request object.
async fn run(
    bridge: &Bridge,
    caller: &InternalCaller,
    obj: &Map<String, Json>,
) -> Result<Json, RpcError> {
    if obj.get("jsonrpc").and_then(Json::as_str) != Some("2.0") {
        return Err(invalid("jsonrpc must be \"2.0\""));
    }
    if let Some(extra) = obj
        .keys()
        .find(|k| !["jsonrpc", "method", "params", "id"].contains(&k.as_str()))
    {
        return Err(invalid(format!("unknown member \"{}\"", Clip(extra))));
    }
    let Some(procedure) = obj.get("method").and_then(Json::as_str) else {
        return Err(invalid("method must be a string"));
    };
    let (args, kwargs) = match obj.get("params") {
        None => (Vec::new(), None),
        Some(Json::Array(a)) => (a.iter().map(to_wamp).collect::<Result<Vec<_>, _>>()?, None),
        Some(o @ Json::Object(_)) => match to_wamp(o)? {
            Value::Dict(d) => (Vec::new(), Some(d)),
            _ => return Err(invalid("params must be an array or an object")),
        },
        Some(_) => return Err(invalid("params must be an array or an object")),
    };
    let not_found = |why: String| {
        (
            METHOD_NOT_FOUND,
            "Method not found".to_string(),
            Some(json!({"error": errors::NO_SUCH_PROCEDURE, "args": [why], "kwargs": {}})),
        )
    };
    bridge
        .realm
        .check_uri_length(procedure, "procedure")
        .map_err(|(_, m)| not_found(m))?;
    uri::check(procedure, bridge.realm.config().uri_check, false)
        .map_err(|e| not_found(format!("invalid procedure URI: {e}")))?;
    let session = caller.session();
    if !matches!(
        bridge
            .realm
            .authorize(session, Action::Call, procedure)
            .await,
        Decision::Allow { .. }
    ) {
        bridge
            .realm
            .metrics
            .not_authorized
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let message = format!(
            "{} (role \"{}\") is not authorized to call \"{procedure}\"",
            session.authid, session.authrole
        );
        return Err((
            server_error_code(errors::NOT_AUTHORIZED),
            message.clone(),
            Some(json!({"error": errors::NOT_AUTHORIZED, "args": [message], "kwargs": {}})),
        ));
    }
    let timeout: Duration = bridge.config.call_timeout;
    match caller
        .call(&bridge.realm.dealer, procedure, args, kwargs, timeout)
        .await
    {
        Ok(reply) => result_of(reply.args, reply.kwargs),
        Err(f) => {
            let data = json!({
                "error": f.error,
                "args": to_json(Value::List(f.args))?,
                "kwargs": to_json(Value::Dict(f.kwargs))?,
            });
            let message = if f.message.is_empty() {
                f.error.clone()
            } else {
                f.message
            };
            Err((code_of(&f.error), message, Some(data)))
        }
    }
}

/// The JSON-RPC result of a call's answer (the module's header).
fn result_of(args: Vec<Value>, kwargs: Dict) -> Result<Json, RpcError> {
    let has_kwargs = !kwargs.is_empty();
    match (args.len(), has_kwargs) {
        (0, false) => Ok(Json::Null),
        (1, false) => args.into_iter().next().map_or(Ok(Json::Null), to_json),
        (_, false) => to_json(Value::List(args)),
        (0, true) => to_json(Value::Dict(kwargs)),
        (_, true) => Ok(json!({
            "args": to_json(Value::List(args))?,
            "kwargs": to_json(Value::Dict(kwargs))?,
        })),
    }
}

fn to_wamp(v: &Json) -> Result<Value, RpcError> {
    serde_json::from_value(v.clone()).map_err(|e| {
        (
            INVALID_PARAMS,
            "Invalid params".to_string(),
            Some(json!({"reason": e.to_string()})),
        )
    })
}

fn to_json(v: Value) -> Result<Json, RpcError> {
    serde_json::to_value(&v).map_err(|e| {
        (
            INTERNAL_ERROR,
            "Internal error".to_string(),
            Some(json!({"reason": format!("the answer cannot be shown as JSON: {e}")})),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_map_by_shape() {
        let kw = Dict::new().with("a", 1u64);
        assert_eq!(result_of(vec![], Dict::new()).ok(), Some(Json::Null));
        assert_eq!(
            result_of(vec![Value::UInt(3)], Dict::new()).ok(),
            Some(json!(3))
        );
        assert_eq!(
            result_of(vec![Value::UInt(3), Value::from("x")], Dict::new()).ok(),
            Some(json!([3, "x"]))
        );
        assert_eq!(result_of(vec![], kw.clone()).ok(), Some(json!({"a": 1})));
        assert_eq!(
            result_of(vec![Value::UInt(3)], kw).ok(),
            Some(json!({"args": [3], "kwargs": {"a": 1}}))
        );
    }

    #[test]
    fn wamp_errors_map_to_codes() {
        assert_eq!(code_of(errors::NO_SUCH_PROCEDURE), METHOD_NOT_FOUND);
        assert_eq!(code_of(errors::INVALID_ARGUMENT), INVALID_PARAMS);
        assert_eq!(code_of("com.app.error.oops"), -32000);
        for e in [
            errors::NOT_AUTHORIZED,
            errors::TIMEOUT,
            errors::NO_AVAILABLE_CALLEE,
            errors::CANCELED,
        ] {
            assert!((-32099..=-32000).contains(&code_of(e)), "{e}");
        }
    }
}
