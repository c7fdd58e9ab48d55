//! HTTP callees: a procedure whose invocations become HTTP requests to a
//! backend. The call's keyword arguments `method`, `path`, `headers` and
//! `body` shape the request (default: POST to the configured URL with the
//! call as JSON); the result is `{status, headers, body}`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde_json::json;
use switchyard_proto::{errors, uri, Dict, Payload, Value};
use switchyard_router::authz::{Action, Decision};
use switchyard_router::dealer::RegisterOptions;
use switchyard_router::internal::{InternalCaller, InternalInvocation};
use switchyard_router::session::Identity;
use switchyard_router::Realm;
use tokio::sync::mpsc;

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
        if !self.url.starts_with("http://") || self.url.parse::<Uri>().is_err() {
            out.push(format!("url: \"{}\" must be an http:// URL", self.url));
        }
        if let Err(e) = uri::check(&self.procedure, uri::UriCheck::Loose, false) {
            out.push(format!("procedure: {e}"));
        }
        if self.concurrency == 0 {
            out.push("concurrency must be at least 1".into());
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
        realm.authz.decide(&session, Action::Register, &c.procedure)
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
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    while let Some(inv) = rx.recv().await {
        let (realm, session, c, client) =
            (realm.clone(), session.clone(), c.clone(), client.clone());
        tokio::spawn(async move {
            let request = inv.request;
            match forward(&client, &c, inv).await {
                Ok(result) => {
                    realm.dealer.yield_result(
                        &session,
                        request,
                        &Dict::new(),
                        Payload::values(vec![result], None),
                    );
                }
                Err((error, message)) => {
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

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// One invocation as one HTTP request; the result `{status, headers, body}`.
async fn forward(
    client: &HttpClient,
    c: &HttpCallee,
    inv: InternalInvocation,
) -> Result<Value, (&'static str, String)> {
    let bad = |m: String| (errors::INVALID_ARGUMENT, m);
    // The keyword arguments shape the request: a repeated key is refused.
    if let Some(path) = crate::queues::duplicate_key(&inv.args, &inv.kwargs) {
        return Err(bad(crate::queues::duplicate_key_message(&path)));
    }
    let kw = &inv.kwargs;
    let method = match kw.get_str("method") {
        Some(m) => Method::from_bytes(m.to_ascii_uppercase().as_bytes())
            .map_err(|_| bad(format!("invalid HTTP method \"{m}\"")))?,
        None => Method::POST,
    };
    // CONNECT names only host:port (the callee URL's path is dropped) and
    // turns the connection into a tunnel.
    if method == Method::CONNECT {
        return Err(bad(
            "method CONNECT may not be used: its request names only the host, not the callee's URL"
                .into(),
        ));
    }
    let path = kw.get_str("path").unwrap_or("");
    if path.contains("://") || path.contains('\n') {
        return Err(bad(format!("path \"{path}\" must be a path, not a URL")));
    }
    // The base URL is the operator's: the caller's path stays under it.
    if let Some(why) = crate::outbound::relative_path_problem(path) {
        return Err(bad(format!(
            "path \"{}\": {why}: it must stay under the callee's URL",
            path.escape_debug()
        )));
    }
    let base = c.url.trim_end_matches('/');
    let url = match path {
        "" => c.url.clone(),
        p if p.starts_with('/') => format!("{base}{p}"),
        p => format!("{base}/{p}"),
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
    let mut req = Request::builder().method(method).uri(&url);
    if let Some(Value::Dict(headers)) = kw.get("headers") {
        for (name, value) in headers.iter() {
            let (Ok(n), Some(Ok(v))) = (
                HeaderName::from_bytes(name.as_bytes()),
                value.as_str().map(HeaderValue::from_str),
            ) else {
                return Err(bad(format!("invalid header \"{name}\"")));
            };
            if let Some(why) = crate::outbound::forbidden_header(name) {
                return Err(bad(format!(
                    "header \"{}\" may not be set: {why}",
                    name.escape_debug()
                )));
            }
            req = req.header(n, v);
        }
    } else if kw.get("body").is_none() && kw.get("method").is_none() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(Full::new(body))
        .map_err(|e| bad(format!("cannot build the request to {url}: {e}")))?;
    let response = tokio::time::timeout(c.timeout, client.request(req))
        .await
        .map_err(|_| {
            (
                errors::TIMEOUT,
                format!("{url} did not answer within {:?}", c.timeout),
            )
        })?
        .map_err(|e| (errors::CANCELED, format!("request to {url} failed: {e}")))?;
    let status = response.status().as_u16();
    let mut headers = Dict::new();
    for (name, value) in response.headers() {
        if let Ok(v) = value.to_str() {
            headers.insert(name.as_str(), v);
        }
    }
    let body = Limited::new(response.into_body(), c.max_response_size)
        .collect()
        .await
        .map_err(|e| {
            (
                errors::PAYLOAD_SIZE_EXCEEDED,
                format!("reading the response of {url}: {e}"),
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
