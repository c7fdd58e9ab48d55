//! The HTTP bridge: backends that cannot hold a WebSocket publish and call
//! with one HTTP POST, wire-compatible with Crossbar.io's HTTP bridge.
//!
//! - `POST /publish` `{"topic", "args", "kwargs", "options"}` → 200 `{"id"}`
//! - `POST /call` `{"procedure", "args", "kwargs", "options"}` → 200
//!   `{"args", "kwargs"}`; a WAMP error → 200 `{"error", "args", "kwargs"}`
//!   (Crossbar's way) or, with `error_status = true`, an HTTP status.
//! - `POST /queues/{name}/jobs`, `GET /queues/{name}/jobs/{id}` (`queue.rs`);
//! - JSON-RPC 2.0 at `jsonrpc_path` (`jsonrpc.rs`).
//!
//! Each signing key acts as its own session identity (authid, role), so the
//! realm's authorization applies per key. Every refusal is JSON with a
//! readable reason, and nothing is published or called.

mod auth;
mod body;
pub mod callee;
pub mod durable;
mod jsonrpc;
pub mod metrics;
mod queue;
mod strict_json;
pub mod subscriber;

pub use strict_json::check_unique_keys;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use switchyard_router::logsafe::Clip;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::json;
use switchyard_proto::{errors, uri, Dict, Item, Payload, Serializer, Value};
use switchyard_router::authz::{Action, Decision};
use switchyard_router::internal::InternalCaller;
use switchyard_router::session::Identity;
use switchyard_router::{Realm, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::transport::accept::accept_loop;
use crate::transport::conn_limit::{AddressLimiter, Guarded};
use switchyard_router::metrics::Metrics;

use crate::signing::{self, ReplayCache};
use auth::{authenticate, Credentials, Scheme};
use body::read_body;

/// A `[[bridge]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// Where the bridge listens (HTTP).
    pub address: SocketAddr,
    /// The realm it publishes and calls in.
    #[serde(default = "default_realm")]
    pub realm: String,
    #[serde(default = "default_publish_path")]
    pub publish_path: String,
    #[serde(default = "default_call_path")]
    pub call_path: String,
    /// Largest request body, in bytes.
    #[serde(default = "default_max_body")]
    pub max_body_size: usize,
    /// Bytes of request bodies the bridge holds at once (being read or
    /// handled), across its connections; beyond, 503.
    #[serde(default = "default_max_buffered")]
    pub max_buffered_body_bytes: usize,
    /// How far a request's timestamp may be from the router's clock; a
    /// nonce is accepted once within it.
    #[serde(default = "default_window", with = "humantime_serde")]
    pub timestamp_window: Duration,
    /// How many accepted signatures replay protection remembers per key
    /// (each until its timestamp leaves the window); when all places of a
    /// key are taken, its signed requests get 503 until the oldest expires.
    /// Each key has its own places, so a leaked key cannot lock out others.
    #[serde(default = "default_replay_cache_size")]
    pub replay_cache_size: usize,
    /// Where JSON-RPC 2.0 requests are served (e.g. "/rpc"); none by
    /// default. Signed like the bridge's own endpoints.
    #[serde(default)]
    pub jsonrpc_path: Option<String>,
    /// Most requests in one JSON-RPC batch (their total size is bounded by
    /// `max_body_size`).
    #[serde(default = "default_jsonrpc_max_batch")]
    pub jsonrpc_max_batch: usize,
    /// The status of a stored job at `POST /queues/{name}/jobs`: 202
    /// Accepted (the default: the job is stored, not yet done) or 201
    /// Created (what this endpoint answered before; for clients that check
    /// for it). Both carry `Location: /queues/{name}/jobs/{id}`.
    #[serde(default = "default_queue_push_status")]
    pub queue_push_status: u16,
    /// Answer WAMP errors of calls with HTTP statuses (403, 404, 504, ...)
    /// instead of Crossbar's 200 `{"error": ...}`.
    #[serde(default)]
    pub error_status: bool,
    /// Timeout of a call whose options name none.
    #[serde(default = "default_call_timeout", with = "humantime_serde")]
    pub call_timeout: Duration,
    /// Accept unsigned requests (only sensible on loopback): they act as
    /// authid "http-bridge" with `unsigned_role`.
    #[serde(default)]
    pub allow_unsigned: bool,
    /// `allow_unsigned` on an address that is not loopback (every host that
    /// reaches it acts as `unsigned_role`): refused unless this is set.
    #[serde(default)]
    pub allow_unsigned_from_network: bool,
    #[serde(default = "default_unsigned_role")]
    pub unsigned_role: String,
    /// Signing keys.
    #[serde(default, rename = "key")]
    pub keys: Vec<BridgeKey>,
    /// Webhooks: any POST to their path is published to their topic.
    #[serde(default, rename = "webhook")]
    pub webhooks: Vec<Webhook>,
    /// HTTP subscribers: events POSTed to a URL.
    #[serde(default, rename = "subscriber")]
    pub subscribers: Vec<subscriber::HttpSubscriber>,
    /// HTTP callees: procedures served by an HTTP backend.
    #[serde(default, rename = "callee")]
    pub callees: Vec<callee::HttpCallee>,
}

/// A `[[bridge.webhook]]`: publishes `{headers, body}` of each POST.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    pub path: String,
    pub topic: String,
    /// If set, a GitHub-style `X-Hub-Signature-256: sha256=<hex HMAC of the
    /// body>` is required.
    #[serde(default)]
    pub secret: Option<String>,
    /// The role the webhook publishes as (default "webhook").
    #[serde(default = "default_webhook_role")]
    pub role: String,
}

fn default_webhook_role() -> String {
    "webhook".into()
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("path", &self.path)
            .field("topic", &self.topic)
            .field("signed", &self.secret.is_some())
            .finish_non_exhaustive()
    }
}

/// A signing key and who requests signed with it are.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeKey {
    pub key: String,
    pub secret: String,
    /// Default: the key.
    #[serde(default)]
    pub authid: Option<String>,
    pub role: String,
}

impl std::fmt::Debug for BridgeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeKey")
            .field("key", &self.key)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

fn default_realm() -> String {
    "realm1".into()
}
fn default_publish_path() -> String {
    "/publish".into()
}
fn default_call_path() -> String {
    "/call".into()
}
fn default_max_body() -> usize {
    1 << 20
}
fn default_max_buffered() -> usize {
    64 << 20
}
fn default_window() -> Duration {
    Duration::from_secs(300)
}
fn default_replay_cache_size() -> usize {
    100_000
}
fn default_jsonrpc_max_batch() -> usize {
    100
}
fn default_queue_push_status() -> u16 {
    202
}
fn default_call_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_unsigned_role() -> String {
    "anonymous".into()
}

impl BridgeConfig {
    /// Problems `check-config` reports.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, p) in [
            ("publish_path", &self.publish_path),
            ("call_path", &self.call_path),
        ] {
            if !p.starts_with('/') {
                out.push(format!("{name}: \"{p}\" must start with '/'"));
            }
        }
        if self.publish_path == self.call_path {
            out.push("publish_path and call_path must differ".into());
        }
        for (i, w) in self.webhooks.iter().enumerate() {
            let taken = [
                &self.publish_path,
                &self.call_path,
                &OPENAPI_PATH.to_string(),
            ]
            .contains(&&w.path)
                || self.webhooks[..i].iter().any(|o| o.path == w.path);
            if !w.path.starts_with('/') || taken {
                out.push(format!(
                    "webhook[{i}].path: \"{}\" must start with '/' and be unique on this bridge",
                    w.path
                ));
            }
            if let Err(e) = uri::check(&w.topic, uri::UriCheck::Loose, false) {
                out.push(format!("webhook[{i}].topic: {e}"));
            }
        }
        for (i, s) in self.subscribers.iter().enumerate() {
            for p in s.problems_at(i) {
                out.push(format!("subscriber[{i}].{p}"));
            }
        }
        for (i, c) in self.callees.iter().enumerate() {
            for p in c.problems() {
                out.push(format!("callee[{i}].{p}"));
            }
        }
        if self.max_buffered_body_bytes < self.max_body_size {
            out.push(format!(
                "max_buffered_body_bytes ({}) must be at least max_body_size ({})",
                self.max_buffered_body_bytes, self.max_body_size
            ));
        }
        if let Some(p) = &self.jsonrpc_path {
            let taken = [
                &self.publish_path,
                &self.call_path,
                &OPENAPI_PATH.to_string(),
            ]
            .contains(&p)
                || self.webhooks.iter().any(|w| &w.path == p);
            if !p.starts_with('/') || p.starts_with("/queues/") || taken {
                out.push(format!(
                    "jsonrpc_path: \"{p}\" must start with '/', not be under /queues/, and differ from the bridge's other paths"
                ));
            }
        }
        if self.jsonrpc_max_batch == 0 {
            out.push("jsonrpc_max_batch must be at least 1".into());
        }
        if !matches!(self.queue_push_status, 201 | 202) {
            out.push(format!(
                "queue_push_status = {}: use 202 (Accepted, the default) or 201 (Created)",
                self.queue_push_status
            ));
        }
        if self.replay_cache_size == 0 {
            out.push("replay_cache_size must be at least 1".into());
        }
        if self.allow_unsigned
            && !self.address.ip().is_loopback()
            && !self.allow_unsigned_from_network
        {
            out.push(format!(
                "allow_unsigned on {}: every host that reaches this address could publish and \
                 call as unsigned_role without a key; listen on a loopback address (127.0.0.1, \
                 [::1]) or set allow_unsigned_from_network = true",
                self.address
            ));
        }
        if self.keys.is_empty() && !self.allow_unsigned {
            out.push("no [[bridge.key]]: add a signing key, or set allow_unsigned = true".into());
        }
        for (i, k) in self.keys.iter().enumerate() {
            if self.keys[..i].iter().any(|o| o.key == k.key) {
                out.push(format!("key[{i}]: key \"{}\" is defined twice", k.key));
            }
            if k.key.is_empty() || k.key.chars().any(char::is_control) {
                out.push(format!(
                    "key[{i}]: a key must be non-empty, without control characters"
                ));
            }
            if k.secret.len() < 16 {
                out.push(format!(
                    "key[{i}] ({}): the secret must have at least 16 characters",
                    k.key
                ));
            }
        }
        out
    }
}

/// Where the OpenAPI description is served.
pub const OPENAPI_PATH: &str = "/openapi.json";

/// A signing key of a bridge.
pub(crate) struct SigningKey {
    secret: String,
    caller: InternalCaller,
    /// The signatures made with this key accepted inside the window. One
    /// memory per key: a signature is bound to its key (the key is part of
    /// the signed string), and a key that floods (leaked, or a client bug)
    /// fills only its own places. Shared with the key's next version when a
    /// reload keeps its secret (its role or authid changed): a signature
    /// accepted before the reload is still refused after it.
    replays: Arc<ReplayCache>,
}

/// The signing keys of a bridge, by key.
type Keys = HashMap<String, Arc<SigningKey>>;

/// The signing keys `config` lists; a key of `old` with the same secret
/// keeps its replay memory.
fn signing_keys(config: &[BridgeKey], cache_size: usize, old: Option<&Keys>) -> Keys {
    config
        .iter()
        .map(|k| {
            let authid = k.authid.clone().unwrap_or_else(|| k.key.clone());
            let replays = old
                .and_then(|o| o.get(&k.key))
                .filter(|o| o.secret == k.secret)
                .map(|o| o.replays.clone())
                .unwrap_or_else(|| Arc::new(ReplayCache::new(cache_size)));
            (
                k.key.clone(),
                Arc::new(SigningKey {
                    secret: k.secret.clone(),
                    caller: InternalCaller::new(key_identity(&authid, &k.role)),
                    replays,
                }),
            )
        })
        .collect()
}

/// Who a bridge's requests act as.
fn key_identity(authid: &str, role: &str) -> Identity {
    Identity {
        authid: authid.to_string(),
        authrole: role.to_string(),
        authmethod: "http-signature".into(),
        authprovider: "bridge".into(),
    }
}

/// One running bridge.
pub struct Bridge {
    config: BridgeConfig,
    realm: Arc<Realm>,
    /// Per key: its secret, the identity its requests act as, and the
    /// signatures it had accepted inside the timestamp window. Swapped
    /// whole by a reload ([`Bridge::reload_keys`]).
    keys: ArcSwap<Keys>,
    unsigned: Option<InternalCaller>,
    /// Per webhook path: the webhook and the identity it publishes as.
    webhooks: HashMap<String, (Webhook, InternalCaller)>,
    /// The sessions of the HTTP subscribers.
    _subscribers: Vec<InternalCaller>,
    body_timeout: Duration,
    /// Bytes of request bodies being read or handled (max_buffered_body_bytes).
    body_budget: Arc<tokio::sync::Semaphore>,
}

impl Bridge {
    /// `body_timeout`: how long a request body may take to arrive
    /// (`[limits] http_body_timeout`).
    pub fn new(
        config: BridgeConfig,
        router: &Router,
        body_timeout: Duration,
    ) -> Result<Arc<Bridge>, String> {
        let realm = router.realm(&config.realm).cloned().ok_or_else(|| {
            format!(
                "bridge on {}: realm \"{}\" is not configured",
                config.address, config.realm
            )
        })?;
        let identity = key_identity;
        let keys =
            ArcSwap::from_pointee(signing_keys(&config.keys, config.replay_cache_size, None));
        let unsigned = config
            .allow_unsigned
            .then(|| InternalCaller::new(identity("http-bridge", &config.unsigned_role)));
        let webhooks = config
            .webhooks
            .iter()
            .map(|w| {
                (
                    w.path.clone(),
                    (w.clone(), InternalCaller::new(identity("webhook", &w.role))),
                )
            })
            .collect();
        let subscribers = config
            .subscribers
            .iter()
            // Durable subscribers are served by the realm's queues.
            .filter(|s| s.durable.is_none())
            .map(|s| subscriber::start(&realm, s))
            .chain(config.callees.iter().map(|c| callee::start(&realm, c)))
            .collect::<Result<Vec<_>, _>>()?;
        let body_budget = body::budget(config.max_buffered_body_bytes);
        Ok(Arc::new(Bridge {
            config,
            realm,
            keys,
            unsigned,
            webhooks,
            _subscribers: subscribers,
            body_timeout,
            body_budget,
        }))
    }

    pub fn config(&self) -> &BridgeConfig {
        &self.config
    }

    /// Replaces the signing keys (a configuration reload): requests are
    /// checked against `keys` from now on. A key whose secret is unchanged
    /// keeps its replay memory.
    pub fn reload_keys(&self, keys: &[BridgeKey]) {
        let old = self.keys.load();
        let new = signing_keys(keys, self.config.replay_cache_size, Some(&old));
        self.keys.store(Arc::new(new));
    }

    /// The signing key `key`, as the configuration is now.
    pub(crate) fn signing_key(&self, key: &str) -> Option<Arc<SigningKey>> {
        self.keys.load().get(key).cloned()
    }

    /// The endpoint a path names, as a label of the request metrics.
    fn endpoint_of(&self, path: &str) -> &'static str {
        if path == OPENAPI_PATH {
            "openapi"
        } else if self.webhooks.contains_key(path) {
            "webhook"
        } else if queue::queue_of(path).is_some() {
            "queue"
        } else if path == self.config.publish_path {
            "publish"
        } else if path == self.config.call_path {
            "call"
        } else {
            "other"
        }
    }
}

/// What bounds the bridge's connections: the per-address limit shared with
/// every TCP listener, and the read timeouts.
pub struct ConnLimits {
    pub limiter: Arc<AddressLimiter>,
    pub metrics: Arc<Metrics>,
    /// A request head must arrive within this (also while a keep-alive
    /// connection waits idle for its next request).
    pub header_timeout: Duration,
    /// Largest request head (`max_request_head_size`), bytes: 431 beyond.
    pub max_request_head: usize,
    /// Requests by endpoint and status, for /metrics.
    pub requests: Arc<metrics::RequestMetrics>,
}

/// Connections over the per-address limit answered with 429 at once;
/// beyond this (a flood) they are just closed.
const MAX_REFUSAL_REPLIES: usize = 32;

/// Serves HTTP on `listener` until `stop`.
pub async fn serve(
    listener: TcpListener,
    name: String,
    bridge: Arc<Bridge>,
    limits: ConnLimits,
    stop: CancellationToken,
) {
    let refusals = Arc::new(tokio::sync::Semaphore::new(MAX_REFUSAL_REPLIES));
    let metrics = limits.metrics.clone();
    let limits = Arc::new(limits);
    accept_loop(listener, name, metrics, stop, move |stream, remote| {
        let peer = remote.label;
        let guard = match remote.ip {
            None => None,
            Some(ip) => match limits.limiter.acquire(ip) {
                Some(g) => Some(g),
                None => {
                    Metrics::inc(&limits.metrics.connections_refused);
                    refuse(stream, ip, limits.limiter.max(), &refusals);
                    return;
                }
            },
        };
        let bridge = bridge.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            let requests = limits.requests.clone();
            let service = service_fn(move |req| {
                let bridge = bridge.clone();
                let peer = peer.clone();
                let requests = requests.clone();
                async move {
                    let endpoint = bridge.endpoint_of(req.uri().path());
                    let r = handle(req, &bridge, &peer).await;
                    let realm = &bridge.config.realm;
                    requests.count(realm, endpoint, r.status().as_u16());
                    Ok::<_, std::convert::Infallible>(r)
                }
            });
            let conn =
                crate::transport::http1_server(limits.header_timeout, limits.max_request_head)
                    .serve_connection(TokioIo::new(Guarded::new(stream, guard)), service);
            if let Err(e) = conn.await {
                tracing::debug!("bridge: HTTP connection ended: {e}");
            }
        });
    })
    .await;
}

/// A connection over the per-address limit: 429 with a readable body.
fn refuse(
    stream: tokio::net::TcpStream,
    ip: std::net::IpAddr,
    max: usize,
    refusals: &Arc<tokio::sync::Semaphore>,
) {
    let Ok(permit) = refusals.clone().try_acquire_owned() else {
        return;
    };
    let body = json!({
        "error": "switchyard.error.too_many_connections",
        "message": format!("too many connections from {ip}: at most {max} per address (limits.max_connections_per_address)"),
    })
    .to_string();
    let reply = format!(
        "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nConnection: close\r\n\
         Retry-After: 5\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tokio::spawn(async move {
        let _permit = permit;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        crate::transport::http_reply_and_close(stream, reply.as_bytes(), deadline).await;
    });
}

/// A refusal: HTTP status, error URI and a readable message.
struct Refusal(StatusCode, &'static str, String);

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string() + "\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn refusal(Refusal(status, error, message): Refusal) -> Response<Full<Bytes>> {
    json_response(status, json!({ "error": error, "message": message }))
}

fn bad(message: impl Into<String>) -> Refusal {
    Refusal(
        StatusCode::BAD_REQUEST,
        "switchyard.error.invalid_request",
        message.into(),
    )
}

fn unauthorized(error: &'static str, message: impl Into<String>) -> Refusal {
    Refusal(StatusCode::UNAUTHORIZED, error, message.into())
}

async fn handle(req: Request<Incoming>, bridge: &Bridge, peer: &str) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    if path == OPENAPI_PATH && req.method() == Method::GET {
        return json_response(StatusCode::OK, openapi(&bridge.config));
    }
    if let Some((hook, caller)) = bridge.webhooks.get(&path) {
        if req.method() != Method::POST {
            return refusal(Refusal(
                StatusCode::METHOD_NOT_ALLOWED,
                "switchyard.error.method_not_allowed",
                format!("{path} only accepts POST, not {}", req.method()),
            ));
        }
        return match webhook(bridge, hook, caller, req).await {
            Ok(r) => r,
            Err(r) => {
                tracing::info!(%peer, path = %Clip(&path), error = r.1, "webhook refused: {}", Clip(&r.2));
                refusal(r)
            }
        };
    }
    if bridge.config.jsonrpc_path.as_deref() == Some(path.as_str()) {
        return jsonrpc::handle(bridge, req, peer).await;
    }
    if let Some(queue) = queue::queue_of(&path) {
        return queue::handle(bridge, queue, req, peer).await;
    }
    if let Some((queue, id)) = queue::job_of(&path) {
        return queue::handle_job(bridge, queue, id, req, peer).await;
    }
    let action = if path == bridge.config.publish_path {
        Action::Publish
    } else if path == bridge.config.call_path {
        Action::Call
    } else {
        return refusal(Refusal(
            StatusCode::NOT_FOUND,
            "switchyard.error.not_found",
            format!(
                "no endpoint at {path}: POST to {} or {}",
                bridge.config.publish_path, bridge.config.call_path
            ),
        ));
    };
    if req.method() != Method::POST {
        let mut r = refusal(Refusal(
            StatusCode::METHOD_NOT_ALLOWED,
            "switchyard.error.method_not_allowed",
            format!("{path} only accepts POST, not {}", req.method()),
        ));
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    let outcome = async {
        let cred = Credentials::of(&req);
        let body = read_body(req, bridge).await?;
        let caller = authenticate(bridge, &cred, Scheme::Crossbar, &body)?;
        let request = parse_body(&body)?;
        match action {
            Action::Call => call(bridge, &caller, request).await,
            _ => publish(bridge, &caller, request).await,
        }
    }
    .await;
    match outcome {
        Ok(r) => r,
        Err(r) => {
            tracing::info!(%peer, path = %Clip(&path), error = r.1, "bridge request refused: {}", Clip(&r.2));
            refusal(r)
        }
    }
}

/// The parsed JSON body.
struct BridgeRequest {
    uri: Option<String>,
    uri_key: &'static str,
    args: Option<Bytes>,
    kwargs: Option<Bytes>,
    options: Dict,
    args_values: Vec<Value>,
    kwargs_values: Option<Dict>,
}

/// Reads a `/publish` or `/call` body as the bridge does before it acts on
/// it (a JSON object with each key once; `topic` or `procedure` a string;
/// `args` an array, `kwargs` and `options` objects): the URI it names, if
/// any, or the message of the 400 answer. For tools that check bodies
/// offline, and the fuzz target `bridge_request` (fuzz/).
pub fn parse_request_body(body: &[u8]) -> Result<Option<String>, String> {
    parse_body(body)
        .map(|r| r.uri)
        .map_err(|Refusal(_, _, message)| message)
}

fn parse_body(body: &[u8]) -> Result<BridgeRequest, Refusal> {
    strict_json::check_unique_keys(body)
        .map_err(|e| bad(format!("the body is not accepted: {e}")))?;
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("the body is not JSON: {e}")))?;
    let serde_json::Value::Object(obj) = v else {
        return Err(bad("the body must be a JSON object"));
    };
    let (uri, uri_key) = match (obj.get("topic"), obj.get("procedure")) {
        (Some(serde_json::Value::String(t)), _) => (Some(t.clone()), "topic"),
        (_, Some(serde_json::Value::String(p))) => (Some(p.clone()), "procedure"),
        (Some(_), _) => return Err(bad("\"topic\" must be a string")),
        (_, Some(_)) => return Err(bad("\"procedure\" must be a string")),
        _ => (None, ""),
    };
    let raw = |key: &str, want_array: bool| -> Result<Option<Bytes>, Refusal> {
        match obj.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v @ serde_json::Value::Array(_)) if want_array => {
                Ok(Some(Bytes::from(v.to_string())))
            }
            Some(v @ serde_json::Value::Object(_)) if !want_array => {
                Ok(Some(Bytes::from(v.to_string())))
            }
            Some(_) => Err(bad(format!(
                "\"{key}\" must be {}",
                if want_array { "an array" } else { "an object" }
            ))),
        }
    };
    let args = raw("args", true)?;
    let kwargs = raw("kwargs", false)?;
    let options = match obj.get("options") {
        None | Some(serde_json::Value::Null) => Dict::new(),
        Some(o @ serde_json::Value::Object(_)) => {
            match serde_json::from_value::<Value>(o.clone()) {
                Ok(Value::Dict(d)) => d,
                _ => return Err(bad("\"options\" must be an object")),
            }
        }
        Some(_) => return Err(bad("\"options\" must be an object")),
    };
    let decode = |b: &Option<Bytes>| -> Result<Option<Value>, Refusal> {
        b.as_ref()
            .map(|b| {
                serde_json::from_slice::<Value>(b).map_err(|e| bad(format!("bad arguments: {e}")))
            })
            .transpose()
    };
    let args_values = match decode(&args)? {
        Some(Value::List(l)) => l,
        _ => Vec::new(),
    };
    let kwargs_values = match decode(&kwargs)? {
        Some(Value::Dict(d)) => Some(d),
        _ => None,
    };
    Ok(BridgeRequest {
        uri,
        uri_key,
        args,
        kwargs,
        options,
        args_values,
        kwargs_values,
    })
}

fn check_uri(bridge: &Bridge, r: &BridgeRequest, want: &'static str) -> Result<String, Refusal> {
    let Some(u) = r.uri.clone().filter(|_| r.uri_key == want) else {
        return Err(bad(format!("the body needs \"{want}\" (a URI string)")));
    };
    bridge
        .realm
        .check_uri_length(&u, want)
        .map_err(|(_, message)| bad(message))?;
    uri::check(&u, bridge.realm.config().uri_check, false)
        .map_err(|e| bad(format!("invalid {want}: {e}")))?;
    if uri::is_reserved(&u) && want == "topic" {
        return Err(bad(format!(
            "topic \"{u}\" is in the \"wamp.\" namespace, which is reserved for the router"
        )));
    }
    Ok(u)
}

async fn authorize(
    bridge: &Bridge,
    caller: &InternalCaller,
    action: Action,
    uri: &str,
) -> Result<(), Refusal> {
    let session = caller.session();
    match bridge.realm.authorize(session, action, uri).await {
        Decision::Allow { .. } => Ok(()),
        _ => {
            bridge
                .realm
                .metrics
                .not_authorized
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Err(Refusal(
                StatusCode::FORBIDDEN,
                errors::NOT_AUTHORIZED,
                format!(
                    "{} (role \"{}\") is not authorized to {action} \"{uri}\"",
                    session.authid, session.authrole
                ),
            ))
        }
    }
}

async fn publish(
    bridge: &Bridge,
    caller: &InternalCaller,
    r: BridgeRequest,
) -> Result<Response<Full<Bytes>>, Refusal> {
    let topic = check_uri(bridge, &r, "topic")?;
    authorize(bridge, caller, Action::Publish, &topic).await?;
    let raw = |b: Option<Bytes>| {
        b.map(|bytes| Item::Raw {
            ser: Serializer::Json,
            bytes,
        })
    };
    let payload = Payload {
        args: raw(r.args),
        kwargs: raw(r.kwargs),
    };
    let (publication, pending) = bridge
        .realm
        .publish(caller.session(), &topic, &r.options, &payload)
        .map_err(|(uri, message)| Refusal(StatusCode::BAD_REQUEST, uri, message))?;
    // A topic bound to durable queues: answer once its jobs are committed.
    if let Some(pending) = pending {
        pending
            .await
            .map_err(|(uri, message)| Refusal(StatusCode::SERVICE_UNAVAILABLE, uri, message))?;
    }
    Ok(json_response(StatusCode::OK, json!({ "id": publication })))
}

async fn call(
    bridge: &Bridge,
    caller: &InternalCaller,
    r: BridgeRequest,
) -> Result<Response<Full<Bytes>>, Refusal> {
    let procedure = check_uri(bridge, &r, "procedure")?;
    authorize(bridge, caller, Action::Call, &procedure).await?;
    let timeout = match r.options.get("timeout") {
        Some(Value::UInt(ms)) if *ms > 0 => Duration::from_millis(*ms),
        Some(Value::UInt(_)) | None => bridge.config.call_timeout,
        Some(_) => return Err(bad("options.timeout must be a number of milliseconds")),
    };
    let to_json = |v: Value| serde_json::to_value(&v).unwrap_or(serde_json::Value::Null);
    match caller
        .call(
            &bridge.realm.dealer,
            &procedure,
            r.args_values,
            r.kwargs_values,
            timeout,
        )
        .await
    {
        Ok(reply) => Ok(json_response(
            StatusCode::OK,
            json!({
                "args": to_json(Value::List(reply.args)),
                "kwargs": to_json(Value::Dict(reply.kwargs)),
            }),
        )),
        Err(f) => {
            let status = if bridge.config.error_status {
                error_status(&f.error)
            } else {
                StatusCode::OK
            };
            Ok(json_response(
                status,
                json!({
                    "error": f.error,
                    "args": to_json(Value::List(f.args)),
                    "kwargs": to_json(Value::Dict(f.kwargs)),
                }),
            ))
        }
    }
}

/// What a webhook event shows instead of a credential header's value.
const REDACTED: &str = "(redacted)";

/// Parts of header names that carry credentials (`Authorization`,
/// `Proxy-Authorization`, `X-Auth-Token`, `X-Gitlab-Token`, `X-Api-Key`,
/// `X-Webhook-Secret`, ...), and `Cookie`: a webhook event goes to every
/// subscriber of its topic, which must not learn the hook's secret or a
/// proxy's or a browser's credentials. (`X-Hub-Signature-256` is an HMAC,
/// not a secret, and stays: subscribers may verify it.)
const CREDENTIAL_PARTS: [&str; 9] = [
    "auth",
    "token",
    "secret",
    "password",
    "passwd",
    "api-key",
    "apikey",
    "credential",
    "cookie",
];

/// Whether a (lowercase) header name carries a credential.
fn is_credential_header(lower: &str) -> bool {
    CREDENTIAL_PARTS.iter().any(|p| lower.contains(p))
}

/// A webhook POST: check the optional GitHub-style signature, then publish
/// `[{"headers": {...}, "body": "..."}]` on the webhook's topic.
async fn webhook(
    bridge: &Bridge,
    hook: &Webhook,
    caller: &InternalCaller,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Refusal> {
    let mut headers = serde_json::Map::new();
    for (name, value) in req.headers() {
        if let Ok(v) = value.to_str() {
            let v = if is_credential_header(name.as_str()) {
                REDACTED
            } else {
                v
            };
            headers.insert(name.as_str().to_string(), serde_json::Value::from(v));
        }
    }
    let body = read_body(req, bridge).await?;
    if let Some(secret) = &hook.secret {
        let given = headers
            .get("x-hub-signature-256")
            .and_then(|v| v.as_str())
            .and_then(|v| v.strip_prefix("sha256="))
            .unwrap_or("");
        if !signing::verify_hub(secret, &body, given) {
            return Err(unauthorized(
                "switchyard.error.invalid_signature",
                "X-Hub-Signature-256 is missing or does not match the body",
            ));
        }
    }
    authorize(bridge, caller, Action::Publish, &hook.topic).await?;
    let event = json!([{
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    }]);
    let payload = Payload {
        args: Some(Item::Raw {
            ser: Serializer::Json,
            bytes: Bytes::from(event.to_string()),
        }),
        kwargs: None,
    };
    let (publication, pending) = bridge
        .realm
        .publish(caller.session(), &hook.topic, &Dict::new(), &payload)
        .map_err(|(uri, message)| Refusal(StatusCode::BAD_REQUEST, uri, message))?;
    if let Some(pending) = pending {
        pending
            .await
            .map_err(|(uri, message)| Refusal(StatusCode::SERVICE_UNAVAILABLE, uri, message))?;
    }
    Ok(json_response(
        StatusCode::ACCEPTED,
        json!({ "id": publication }),
    ))
}

/// The bridge's OpenAPI 3 description, with this bridge's paths.
pub fn openapi(c: &BridgeConfig) -> serde_json::Value {
    let signed = json!([
        {"name": "key", "in": "query", "schema": {"type": "string"}, "description": "signing key"},
        {"name": "timestamp", "in": "query", "schema": {"type": "string"}, "description": "UTC, YYYY-MM-DDTHH:MM:SS.mmmZ, within the bridge's window"},
        {"name": "seq", "in": "query", "schema": {"type": "string", "pattern": "^[0-9]{1,20}$"}, "description": "a decimal integer"},
        {"name": "nonce", "in": "query", "schema": {"type": "string", "pattern": "^[0-9]{1,20}$"}, "description": "a decimal integer, fresh per request (each signature is accepted once)"},
        {"name": "signature", "in": "query", "schema": {"type": "string"}, "description": "URL-safe base64 (padded) of HMAC-SHA256(secret, key+timestamp+seq+nonce+body)"}
    ]);
    // The alternative to the query parameters (docs/HTTP-BRIDGE.md).
    let x_auth = json!({"name": "X-Authentication", "in": "header", "schema": {"type": "string"}, "description": "instead of the query parameters: key=<key>, timestamp=<ts>, nonce=<n>, signature=<URL-safe base64 of HMAC-SHA256(secret, switchyard-x-authentication-v1, method, path and query, key, timestamp, nonce, Idempotency-Key, hex SHA-256 of the body, joined by newlines)>"});
    let signed = json!(signed
        .as_array()
        .into_iter()
        .flatten()
        .cloned()
        .chain([x_auth])
        .collect::<Vec<_>>());
    let refusal = json!({"description": "refused; nothing was published or called", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Refusal"}}}});
    let mut paths = serde_json::Map::new();
    paths.insert(c.publish_path.clone(), json!({"post": {
        "summary": "Publish an event",
        "parameters": signed,
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Publish"}}}},
        "responses": {
            "200": {"description": "published", "content": {"application/json": {"schema": {"type": "object", "properties": {"id": {"type": "integer"}}}}}},
            "400": refusal, "401": refusal, "403": refusal, "405": refusal, "413": refusal
        }
    }}));
    paths.insert(c.call_path.clone(), json!({"post": {
        "summary": "Call a procedure",
        "parameters": signed,
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Call"}}}},
        "responses": {
            "200": {"description": "the result, or (Crossbar-style) the WAMP error", "content": {"application/json": {"schema": {"type": "object", "properties": {
                "args": {"type": "array"}, "kwargs": {"type": "object"}, "error": {"type": "string"}}}}}},
            "400": refusal, "401": refusal, "403": refusal, "404": refusal, "405": refusal, "413": refusal, "504": refusal
        }
    }}));
    let mut queue_params = signed.as_array().cloned().unwrap_or_default();
    if let Some(sig) = queue_params.iter_mut().find(|p| p["name"] == "signature") {
        sig["description"] = json!("URL-safe base64 (padded) of HMAC-SHA256(secret, the canonical string: switchyard-bridge-v1, method, path, key, timestamp, seq, nonce, Idempotency-Key, hex SHA-256 of the body, joined by newlines)");
    }
    queue_params.push(json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"}, "description": "the queue"}));
    let mut job_params: Vec<serde_json::Value> = queue_params.clone();
    job_params.push(json!({"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}, "description": "the job's id"}));
    queue_params.push(json!({"name": "Idempotency-Key", "in": "header", "schema": {"type": "string"}, "description": "a second push with the same key inside the queue's idempotency window answers 409 with the first job's id"}));
    paths.insert("/queues/{name}/jobs".into(), json!({"post": {
        "summary": "Enqueue a job (durable when answered)",
        "parameters": queue_params,
        "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}},
        "responses": {
            "202": {"description": "stored (durable, not yet done); 201 with queue_push_status = 201", "headers": {"Location": {"schema": {"type": "string"}, "description": "/queues/{name}/jobs/{id}"}}, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Pushed"}}}},
            "409": {"description": "duplicate Idempotency-Key: the original job", "headers": {"Location": {"schema": {"type": "string"}}}, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Pushed"}}}},
            "400": refusal, "401": refusal, "403": refusal, "404": refusal, "405": refusal, "413": refusal, "503": refusal
        }
    }}));
    paths.insert("/queues/{name}/jobs/{id}".into(), json!({"get": {
        "summary": "A job's state, attempts, last error and result (docs/QUEUES.md)",
        "parameters": job_params,
        "responses": {
            "200": {"description": "the job", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobStatus"}}}},
            "404": {"description": "no such job in this queue that the key may read", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Refusal"}}}},
            "401": refusal, "403": refusal, "405": refusal
        }
    }}));
    if let Some(p) = &c.jsonrpc_path {
        let mut params = signed.as_array().cloned().unwrap_or_default();
        if let Some(sig) = params.iter_mut().find(|p| p["name"] == "signature") {
            sig["description"] = json!("URL-safe base64 (padded) of HMAC-SHA256(secret, the canonical string: switchyard-bridge-v1, method, path, key, timestamp, seq, nonce, an empty line, hex SHA-256 of the body, joined by newlines)");
        }
        paths.insert(p.clone(), json!({"post": {
            "summary": "JSON-RPC 2.0: method = procedure, params = args (array) or kwargs (object); batches and notifications (docs/HTTP-BRIDGE.md)",
            "parameters": params,
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": ["object", "array"]}}}},
            "responses": {
                "200": {"description": "the JSON-RPC response (or batch of responses)", "content": {"application/json": {"schema": {"type": "object"}}}},
                "204": {"description": "the request held only notifications"},
                "401": refusal, "405": refusal, "413": refusal
            }
        }}));
    }
    for w in &c.webhooks {
        paths.insert(w.path.clone(), json!({"post": {
            "summary": format!("Webhook: publishes the request's headers and body on {}", w.topic),
            "responses": {"202": {"description": "published"}, "401": refusal, "413": refusal}
        }}));
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Switchyard HTTP bridge", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {"schemas": {
            "Publish": {"type": "object", "required": ["topic"], "properties": {
                "topic": {"type": "string"}, "args": {"type": "array"}, "kwargs": {"type": "object"},
                "options": {"type": "object", "description": "PUBLISH options: exclude, eligible, exclude_authid, ..., retain, disclose_me"}}},
            "Call": {"type": "object", "required": ["procedure"], "properties": {
                "procedure": {"type": "string"}, "args": {"type": "array"}, "kwargs": {"type": "object"},
                "options": {"type": "object", "properties": {"timeout": {"type": "integer", "description": "milliseconds"}}}}},
            "Job": {"type": "object", "properties": {
                "args": {"type": "array"}, "kwargs": {"type": "object"},
                "delay": {"description": "\"30s\" or milliseconds"}, "run_at": {"description": "RFC 3339 or unix milliseconds"},
                "priority": {"description": "0..9 or lowest|low|normal|high|highest"}, "idempotency_key": {"type": "string"},
                "retry": {"type": "object"}, "max_attempts": {"type": "integer"}, "result_topic": {"type": "string"},
                "target": {"type": "string", "description": "a procedure (default: the queue's target)"}}},
            "Pushed": {"type": "object", "properties": {"id": {"type": "integer"}, "duplicate": {"type": "boolean"}, "location": {"type": "string"}}},
            "JobStatus": {"type": "object", "properties": {
                "id": {"type": "integer"}, "queue": {"type": "string"},
                "state": {"type": "string", "enum": ["scheduled", "ready", "leased", "dead", "completed"]},
                "attempts": {"type": "integer"}, "max_attempts": {"type": "integer"}, "created_at_ms": {"type": "integer"},
                "last_error": {"type": "object", "nullable": true, "properties": {"uri": {"type": "string"}, "message": {"type": "string"}, "at_ms": {"type": "integer"}}},
                "result": {"type": "object", "nullable": true, "description": "completed: {args, kwargs} of the worker's answer"},
                "result_bytes": {"type": "integer"}, "result_truncated": {"type": "boolean"},
                "run_at_ms": {"type": "integer"}, "lease_deadline_ms": {"type": "integer"},
                "dead_reason": {"type": "string"}, "dead_at_ms": {"type": "integer"}, "completed_at_ms": {"type": "integer"}}},
            "Refusal": {"type": "object", "properties": {"error": {"type": "string"}, "message": {"type": "string"}}}
        }}
    })
}

/// The HTTP status for a call's WAMP error (`error_status = true`).
fn error_status(error: &str) -> StatusCode {
    match error {
        errors::NOT_AUTHORIZED => StatusCode::FORBIDDEN,
        errors::NO_SUCH_PROCEDURE => StatusCode::NOT_FOUND,
        errors::TIMEOUT => StatusCode::GATEWAY_TIMEOUT,
        errors::INVALID_ARGUMENT | errors::INVALID_URI => StatusCode::BAD_REQUEST,
        errors::NO_AVAILABLE_CALLEE | errors::CANCELED => StatusCode::SERVICE_UNAVAILABLE,
        errors::PAYLOAD_SIZE_EXCEEDED => StatusCode::PAYLOAD_TOO_LARGE,
        // An application error of the callee.
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_statuses() {
        assert_eq!(error_status(errors::NOT_AUTHORIZED), StatusCode::FORBIDDEN);
        assert_eq!(
            error_status(errors::NO_SUCH_PROCEDURE),
            StatusCode::NOT_FOUND
        );
        assert_eq!(error_status(errors::TIMEOUT), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            error_status("com.app.oops"),
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }

    #[test]
    fn request_bodies_parse_as_the_bridge_reads_them() {
        assert_eq!(
            parse_request_body(br#"{"topic": "com.a.b", "args": [1], "kwargs": {"k": 2}}"#),
            Ok(Some("com.a.b".to_string()))
        );
        assert_eq!(parse_request_body(b"{}"), Ok(None));
        for (bad, why) in [
            (&br#"{"topic": "a", "topic": "b"}"#[..], "appears twice"),
            (b"[1]", "must be a JSON object"),
            (br#"{"procedure": 1}"#, "must be a string"),
            (br#"{"topic": "a", "args": {}}"#, "must be an array"),
        ] {
            let e = parse_request_body(bad).expect_err(why);
            assert!(e.contains(why), "{e}");
        }
    }
}
