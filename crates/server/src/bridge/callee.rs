//! HTTP callees: a procedure whose invocations become HTTP requests to a
//! backend. The call's keyword arguments `method`, `path`, `headers` and
//! `body` shape the request (default: POST to the configured URL with the
//! call as JSON); the result is `{status, headers, body}`. What a caller
//! may set is confined (`crate::outbound::callee_request`): the path stays under the URL,
//! the method is one of `methods`, and framing, routing and (unless
//! `allow_headers` lists them) credential headers cannot be set.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::HeaderValue;
use hyper::{Method, Request};
use serde::Deserialize;
use serde_json::json;
use switchyard_proto::{errors, uri, Dict, Payload, Value};
use switchyard_router::authz::{Action, Decision};
use switchyard_router::dealer::RegisterOptions;
use switchyard_router::internal::{InternalCaller, InternalInvocation};
use switchyard_router::session::Identity;
use switchyard_router::Realm;
use tokio::sync::mpsc;

use crate::outbound::callee_request as outbound;

/// A `[[bridge.callee]]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCallee {
    pub procedure: String,
    /// The backend's base URL (http://); a call's `path` is appended.
    pub url: String,
    /// The role it registers as (authorization applies).
    #[serde(default = "default_role")]
    pub role: String,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Requests to the backend at once; more calls wait in the router.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Largest response body passed back, in bytes.
    #[serde(default = "default_max_response")]
    pub max_response_size: usize,
    /// The methods a caller may choose (default GET and POST).
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    /// Credential and client-address headers (Authorization, Cookie,
    /// Forwarded, X-Forwarded-*, X-Real-IP) a caller may set; default none.
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// With `secret`: each request is signed like the router's other
    /// outgoing requests (`key`, `timestamp`, `seq`, `nonce`, `signature`
    /// query parameters over the body), so the backend checks that the
    /// router sent it.
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub secret: Option<String>,
}

fn default_methods() -> Vec<String> {
    vec!["GET".into(), "POST".into()]
}

fn default_role() -> String {
    "callee".into()
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_concurrency() -> u32 {
    16
}
fn default_max_response() -> usize {
    1 << 20
}

impl HttpCallee {
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !crate::outbound::client::is_http_url(&self.url) || self.url.contains(['?', '#']) {
            out.push(format!(
                "url: \"{}\" must be an http:// or https:// URL without a query or fragment",
                self.url
            ));
        }
        match (&self.key, &self.secret) {
            (Some(_), Some(s)) if s.len() < 16 => {
                out.push("secret: must have at least 16 characters".into())
            }
            (Some(_), None) | (None, Some(_)) => {
                out.push("key and secret: give both (signed requests) or neither".into())
            }
            _ => {}
        }
        if let Err(e) = uri::check(&self.procedure, uri::UriCheck::Loose, false) {
            out.push(format!("procedure: {e}"));
        }
        if self.concurrency == 0 {
            out.push("concurrency must be at least 1".into());
        }
        for m in &self.methods {
            if !outbound::KNOWN_METHODS.contains(&m.to_ascii_uppercase().as_str()) {
                out.push(format!(
                    "methods: \"{m}\" is not one of {}",
                    outbound::KNOWN_METHODS.join(", ")
                ));
            }
        }
        for h in &self.allow_headers {
            if outbound::NEVER.contains(&h.to_ascii_lowercase().as_str()) {
                out.push(format!(
                    "allow_headers: \"{h}\" is set by the router and cannot be allowed"
                ));
            }
        }
        out
    }
}

/// Registers the procedure and spawns the task that serves it.
pub fn start(realm: &Arc<Realm>, c: &HttpCallee) -> Result<InternalCaller, String> {
    let (tx, rx) = mpsc::channel(c.concurrency as usize);
    let caller = InternalCaller::with_invocations(
        Identity {
            authid: format!("http-callee:{}", c.url),
            authrole: c.role.clone(),
            authmethod: "config".into(),
            authprovider: "bridge".into(),
        },
        tx,
    );
    let session = caller.session().clone();
    if let Decision::Deny | Decision::Ask =
        realm
            .authz()
            .decide(&session, Action::Register, &c.procedure)
    {
        return Err(format!(
            "HTTP callee {}: role \"{}\" may not register \"{}\"",
            c.url, c.role, c.procedure
        ));
    }
    let options = Dict::new()
        .with("concurrency", u64::from(c.concurrency))
        .with("invoke", "roundrobin");
    let opts = RegisterOptions::parse(&options).map_err(|(_, m)| m)?;
    realm
        .dealer
        .register(&session, &c.procedure, &opts, |_| {})
        .map_err(|(uri, m)| format!("HTTP callee for \"{}\": {uri}: {m}", c.procedure))?;
    tokio::spawn(serve(realm.clone(), session, c.clone(), rx));
    Ok(caller)
}

async fn serve(
    realm: Arc<Realm>,
    session: Arc<switchyard_router::Session>,
    c: HttpCallee,
    mut rx: mpsc::Receiver<InternalInvocation>,
) {
    let client = crate::outbound::client::client();
    let seq = Arc::new(std::sync::atomic::AtomicU64::new(0));
    while let Some(inv) = rx.recv().await {
        let (realm, session, c, client, seq) = (
            realm.clone(),
            session.clone(),
            c.clone(),
            client.clone(),
            seq.clone(),
        );
        tokio::spawn(async move {
            let request = inv.request;
            match forward(&client, &c, &seq, inv).await {
                Ok(result) => {
                    realm.dealer.yield_result(
                        &session,
                        request,
                        &Dict::new(),
                        Payload::values(vec![result], None),
                    );
                }
                Err((error, message)) => {
                    tracing::info!(
                        procedure = c.procedure,
                        error,
                        "HTTP callee: {}",
                        switchyard_router::logsafe::Clip(&message)
                    );
                    realm.dealer.yield_error(
                        &session,
                        request,
                        error.to_string(),
                        Payload::message(message),
                    );
                }
            }
        });
    }
}

use crate::outbound::client::HttpClient;

/// The headers that carry the caller's identity to the backend: set from
/// the invocation's details, so only what the realm's disclosure rules
/// disclose to a callee (`disclose_caller`, a permission's `disclose`);
/// never settable by a caller (`callee_request::check_header`).
pub const CALLER_HEADERS: [(&str, &str); 3] = [
    ("x-switchyard-caller-session", "caller"),
    ("x-switchyard-caller-authid", "caller_authid"),
    ("x-switchyard-caller-authrole", "caller_authrole"),
];

/// One invocation as one HTTP request; the result `{status, headers, body}`.
async fn forward(
    client: &HttpClient,
    c: &HttpCallee,
    seq: &std::sync::atomic::AtomicU64,
    inv: InternalInvocation,
) -> Result<Value, (&'static str, String)> {
    let bad = |m: String| (errors::INVALID_ARGUMENT, m);
    // The keyword arguments shape the request: a repeated key is refused.
    if let Some(path) = crate::queue_service::duplicate_key(&inv.args, &inv.kwargs) {
        return Err(bad(crate::queue_service::duplicate_key_message(&path)));
    }
    let kw = &inv.kwargs;
    let method = match kw.get_str("method") {
        Some(m) => {
            let upper = m.to_ascii_uppercase();
            if !c.methods.iter().any(|a| a.eq_ignore_ascii_case(&upper)) {
                return Err(bad(format!(
                    "method \"{}\" is not allowed for this procedure (allowed: {})",
                    switchyard_router::logsafe::Clip(m),
                    c.methods.join(", ")
                )));
            }
            Method::from_bytes(upper.as_bytes())
                .map_err(|_| bad(format!("invalid HTTP method \"{upper}\"")))?
        }
        None => Method::POST,
    };
    let url = match kw.get("path") {
        None => c.url.clone(),
        Some(Value::Str(p)) => {
            // Two independent checks: the disguises of a dot segment or a
            // separator in any encoding, then the parsed URL must keep the base.
            let url = outbound::confine_path(&c.url, p).map_err(bad)?;
            if let Some(why) = crate::outbound::destinations::relative_path_problem(p) {
                return Err(bad(format!(
                    "path \"{}\" refused: {why}: it must stay under the callee's URL",
                    switchyard_router::logsafe::Clip(p)
                )));
            }
            url
        }
        Some(_) => return Err(bad("path must be a string".into())),
    };
    let body = match kw.get("body") {
        Some(Value::Str(s)) => Bytes::from(s.clone()),
        Some(Value::Bytes(b)) => Bytes::from(b.clone()),
        Some(other) => Bytes::from(serde_json::to_vec(other).unwrap_or_default()),
        None if kw.get("method").is_some() => Bytes::new(),
        None => {
            let call = json!({
                "procedure": inv.details.get_str("procedure"),
                "args": serde_json::to_value(Value::List(inv.args)).unwrap_or_default(),
                "kwargs": serde_json::to_value(Value::Dict(inv.kwargs.clone())).unwrap_or_default(),
            });
            Bytes::from(call.to_string())
        }
    };
    let shown_url = url.clone();
    let url = match (&c.key, &c.secret) {
        (Some(key), Some(secret)) => {
            // A caller's query may not carry the signature's parameters
            // (a backend reading the first value would read the caller's).
            if let Some(q) = url.split_once('?').map(|(_, q)| q) {
                let taken = q.split('&').find_map(|kv| {
                    let name = kv.split('=').next().unwrap_or("");
                    crate::signing::SIGNING_PARAMS
                        .iter()
                        .chain(&["scope"])
                        .find(|p| p.eq_ignore_ascii_case(name))
                });
                if let Some(p) = taken {
                    return Err(bad(format!(
                        "the query parameter \"{p}\" is the router's signature's and cannot be set by a caller"
                    )));
                }
            }
            let n = seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            crate::signing::signed_url(&url, key, secret, n, &body)
        }
        _ => url,
    };
    let mut req = Request::builder().method(method).uri(&url);
    for (header, detail) in CALLER_HEADERS {
        let value = match inv.details.get(detail) {
            Some(Value::Int(n)) => Some(n.to_string()),
            Some(Value::UInt(n)) => Some(n.to_string()),
            Some(Value::Str(s)) => Some(s.clone()),
            _ => None,
        };
        if let Some(Ok(v)) = value.as_deref().map(HeaderValue::from_str) {
            req = req.header(header, v);
        }
    }
    match kw.get("headers") {
        None => {}
        Some(Value::Dict(headers)) => {
            if headers.len() > outbound::MAX_HEADERS {
                return Err(bad(format!(
                    "at most {} headers may be set",
                    outbound::MAX_HEADERS
                )));
            }
            for (name, value) in headers.iter() {
                let n = outbound::check_header(name, &c.allow_headers).map_err(bad)?;
                let Some(Ok(v)) = value.as_str().map(HeaderValue::from_str) else {
                    return Err(bad(format!(
                        "the value of header \"{n}\" must be a string of visible ASCII"
                    )));
                };
                req = req.header(n, v);
            }
        }
        Some(_) => return Err(bad("headers must be a dict".into())),
    }
    if kw.get("headers").is_none() && kw.get("body").is_none() && kw.get("method").is_none() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(Full::new(body))
        .map_err(|e| bad(format!("cannot build the request to {shown_url}: {e}")))?;
    // `timeout` bounds the whole exchange, the response body included: the
    // caller chooses the path, so it could choose an endpoint that streams.
    let deadline = tokio::time::Instant::now() + c.timeout;
    let too_late = || {
        (
            errors::TIMEOUT,
            format!(
                "{shown_url} did not answer (head and body) within timeout = {:?}",
                c.timeout
            ),
        )
    };
    let response = tokio::time::timeout_at(deadline, client.request(req))
        .await
        .map_err(|_| too_late())?
        .map_err(|e| {
            (
                errors::CANCELED,
                format!(
                    "request to {shown_url} failed: {}",
                    crate::outbound::destinations::error_chain(&e)
                ),
            )
        })?;
    let status = response.status().as_u16();
    let mut headers = Dict::new();
    for (name, value) in response.headers() {
        if let Ok(v) = value.to_str() {
            headers.insert(name.as_str(), v);
        }
    }
    let body = tokio::time::timeout_at(
        deadline,
        Limited::new(response.into_body(), c.max_response_size).collect(),
    )
    .await
    .map_err(|_| too_late())?
    .map_err(|e| {
        (
            errors::PAYLOAD_SIZE_EXCEEDED,
            format!("reading the response of {shown_url}: {e}"),
        )
    })?
    .to_bytes();
    let body = match String::from_utf8(body.to_vec()) {
        Ok(s) => Value::Str(s),
        Err(_) => Value::Bytes(body.to_vec()),
    };
    Ok(Value::Dict(
        Dict::new()
            .with("status", u64::from(status))
            .with("headers", headers)
            .with("body", body),
    ))
}
