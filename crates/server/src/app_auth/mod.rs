//! The application's authenticator and authorizer over HTTP
//! (`[realm.http_auth]`): the router POSTs a login or an action as JSON,
//! signed like its other outgoing requests (`crate::signing::signed_url`:
//! the app verifies it as it verifies the router's subscriber POSTs), and
//! reads the answer as it reads the answer of the authenticator or
//! authorizer procedure (`switchyard_router::app_auth::AppAuth`).
//!
//! - `config.rs`: the table and its checks;
//! - `cache.rs`: the bounded, expiring cache of authorizer answers.
//!
//! Answers: `200` with JSON (a login: a role string, or `{"role",
//! "authid"}`; an action: `true`/`false`, or `{"allow", "disclose",
//! "cache"}`); `401` or `403` refuse (the JSON body's `message`, if any,
//! goes into the ABORT or is logged). Anything else (no connection, a
//! timeout, another status, a body too large or not JSON) means the app is
//! unavailable: the login is refused (or gets `fallback_role`), the action
//! denied, with a WARN log line that counts such failures.

pub mod cache;
pub mod config;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use switchyard_proto::{errors, Dict, Value};
use switchyard_router::app_auth::{AppAuth, AppAuthHandle, AppFuture};
use switchyard_router::internal::CallFailure;
use tokio::sync::Semaphore;

use crate::outbound::client::HttpClient;
use cache::AnswerCache;
pub use config::HttpAuthConfig;

/// Longest refusal message passed on to an ABORT, characters.
const MAX_MESSAGE: usize = 200;

/// One realm's app over HTTP (shared with the tasks that ask it).
pub struct HttpAppAuth(Arc<Shared>);

struct Shared {
    config: HttpAuthConfig,
    client: HttpClient,
    slots: Semaphore,
    cache: AnswerCache,
    seq: AtomicU64,
    /// Requests the app did not answer usefully (logged with each failure).
    unavailable: AtomicU64,
}

/// The handle a realm's configuration carries.
pub fn handle(config: &HttpAuthConfig) -> AppAuthHandle {
    AppAuthHandle(Arc::new(HttpAppAuth(Arc::new(Shared {
        client: crate::outbound::client::client(),
        slots: Semaphore::new(config.max_concurrent.max(1)),
        cache: AnswerCache::new(config.cache_ttl, config.cache_entries),
        seq: AtomicU64::new(0),
        unavailable: AtomicU64::new(0),
        config: config.clone(),
    }))))
}

/// What came back from the app.
enum Outcome {
    Answer(Value),
    Refused(String),
    Unavailable(String),
}

fn to_json(v: Value) -> serde_json::Value {
    serde_json::to_value(&v).unwrap_or(serde_json::Value::Null)
}

impl Shared {
    /// POSTs `body` to `url`, signed; bounded by the timeout (the wait for
    /// a slot included) and the response size.
    async fn ask(&self, url: &str, body: serde_json::Value) -> Outcome {
        let c = &self.config;
        let work = async {
            let Ok(_permit) = self.slots.acquire().await else {
                return Outcome::Unavailable("the router is stopping".into());
            };
            let body = Bytes::from(body.to_string());
            let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
            let signed = crate::signing::signed_url(url, &c.key, &c.secret, seq, &body);
            let Ok(req) = Request::builder()
                .method(Method::POST)
                .uri(signed)
                .header(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )
                .body(Full::new(body))
            else {
                return Outcome::Unavailable("the URL is not valid".into());
            };
            let resp = match self.client.request(req).await {
                Ok(r) => r,
                Err(e) => {
                    return Outcome::Unavailable(format!(
                        "request failed: {}",
                        crate::outbound::destinations::error_chain(&e)
                    ))
                }
            };
            let status = resp.status();
            let bytes = match Limited::new(resp.into_body(), c.max_response_size)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return Outcome::Unavailable(format!(
                        "the response body exceeds {} bytes or broke off (max_response_size)",
                        c.max_response_size
                    ))
                }
            };
            let json = serde_json::from_slice::<Value>(&bytes);
            match status {
                StatusCode::OK => match json {
                    Ok(v) => Outcome::Answer(v),
                    Err(_) => Outcome::Unavailable("status 200 without a JSON body".into()),
                },
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    let message = json
                        .ok()
                        .and_then(|v| match v {
                            Value::Dict(d) => d.get_str("message").map(str::to_string),
                            _ => None,
                        })
                        .unwrap_or_default();
                    Outcome::Refused(message.chars().take(MAX_MESSAGE).collect())
                }
                s => Outcome::Unavailable(format!("status {}", s.as_u16())),
            }
        };
        match tokio::time::timeout(c.timeout, work).await {
            Ok(o) => o,
            Err(_) => Outcome::Unavailable(format!("no answer within {:?} (timeout)", c.timeout)),
        }
    }

    fn log_unavailable(&self, what: &str, url: &str, why: &str, then: &str) {
        let n = self.unavailable.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(
            url,
            failures = n,
            "the app's {what} is unavailable ({}): {then}",
            switchyard_router::logsafe::Clip(why)
        );
    }
}

fn failure(error: &str, message: String, unserved: bool) -> CallFailure {
    CallFailure {
        error: error.into(),
        message,
        args: Vec::new(),
        kwargs: Dict::new(),
        unserved,
    }
}

/// Runs `f` on its own task, so that the future handed to the router is
/// `Sync` (the hyper client's is not).
fn spawned<F>(f: F) -> AppFuture
where
    F: std::future::Future<Output = Result<Value, CallFailure>> + Send + 'static,
{
    let task = tokio::spawn(f);
    Box::pin(async move {
        task.await.unwrap_or_else(|_| {
            Err(failure(
                errors::CANCELED,
                "the request to the app was cancelled".into(),
                true,
            ))
        })
    })
}

impl AppAuth for HttpAppAuth {
    fn authenticates(&self) -> bool {
        self.0.config.authenticator_url.is_some()
    }

    fn authorizes(&self) -> bool {
        self.0.config.authorizer_url.is_some()
    }

    fn name(&self) -> String {
        let c = &self.0.config;
        [&c.authenticator_url, &c.authorizer_url]
            .into_iter()
            .flatten()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn authenticate(&self, realm: &str, authid: &str, details: Dict) -> AppFuture {
        let Some(url) = self.0.config.authenticator_url.clone() else {
            return Box::pin(std::future::ready(Err(failure(
                errors::NO_SUCH_PROCEDURE,
                String::new(),
                true,
            ))));
        };
        let peer = details
            .get("transport")
            .and_then(Value::as_dict)
            .and_then(|t| t.get_str("peer"))
            .map(str::to_string);
        let mut body = serde_json::json!({
            "realm": realm,
            "authid": authid,
            "peer": peer,
        });
        if let (Some(o), serde_json::Value::Object(d)) =
            (body.as_object_mut(), to_json(Value::Dict(details)))
        {
            o.extend(d);
        }
        let this = self.0.clone();
        spawned(async move {
            match this.ask(&url, body).await {
                Outcome::Answer(v) => Ok(v),
                Outcome::Refused(message) => {
                    Err(failure("wamp.error.authentication_failed", message, false))
                }
                Outcome::Unavailable(why) => match &this.config.fallback_role {
                    Some(role) => {
                        this.log_unavailable(
                            "authenticator",
                            &url,
                            &why,
                            &format!("login admitted with the fallback role \"{role}\""),
                        );
                        Ok(Value::from(role.as_str()))
                    }
                    None => {
                        this.log_unavailable("authenticator", &url, &why, "login refused");
                        Err(failure(errors::TIMEOUT, why, true))
                    }
                },
            }
        })
    }

    fn authorize(&self, session: Dict, uri: &str, action: &str, options: Dict) -> AppFuture {
        let Some(url) = self.0.config.authorizer_url.clone() else {
            return Box::pin(std::future::ready(Err(failure(
                errors::NO_SUCH_PROCEDURE,
                String::new(),
                true,
            ))));
        };
        let key: cache::Key = (
            session.get("session").and_then(Value::as_u64).unwrap_or(0),
            session.get_str("authid").unwrap_or("").to_string(),
            session.get_str("authrole").unwrap_or("").to_string(),
            action.to_string(),
            uri.to_string(),
            options.get_str("match").unwrap_or("exact").to_string(),
        );
        if let Some(v) = self.0.cache.get(&key) {
            return Box::pin(std::future::ready(Ok(v)));
        }
        let body = serde_json::json!({
            "session": to_json(Value::Dict(session)),
            "uri": uri,
            "action": action,
            "options": to_json(Value::Dict(options)),
        });
        let this = self.0.clone();
        spawned(async move {
            match this.ask(&url, body).await {
                Outcome::Answer(v) => {
                    this.cache.put(key, v.clone());
                    Ok(v)
                }
                Outcome::Refused(message) => {
                    this.cache.put(key, Value::Bool(false));
                    Err(failure(errors::NOT_AUTHORIZED, message, false))
                }
                Outcome::Unavailable(why) => {
                    this.log_unavailable("authorizer", &url, &why, "action denied");
                    Err(failure(errors::TIMEOUT, why, true))
                }
            }
        })
    }
}
