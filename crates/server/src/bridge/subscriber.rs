//! HTTP subscribers: events on a topic (or pattern) are POSTed to a URL,
//! signed with the same scheme as requests to the bridge
//! ([`crate::signing::signed_url`]), so the receiver can check them.
//! Delivery is at most once: a failed POST is logged, not retried; a
//! subscriber with `durable` ([`super::durable`]) is served by a queue
//! instead (at least once, retried), with the same body and signature.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request};
use serde::Deserialize;
use serde_json::json;
use switchyard_proto::{uri, Value};
use switchyard_router::authz::{Action, Decision};
use switchyard_router::internal::{InternalCaller, InternalEvent};
use switchyard_router::session::Identity;
use switchyard_router::uri_index::MatchPolicy;
use switchyard_router::{Realm, Session};
use tokio::sync::mpsc;

use crate::signing::signed_url;

/// A `[[bridge.subscriber]]` table.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSubscriber {
    pub topic: String,
    #[serde(default, rename = "match")]
    pub policy: MatchPolicy,
    /// Where events are POSTed (http:// or https://).
    pub url: String,
    /// Sent as the `key` query parameter of each POST.
    pub key: String,
    /// Signs each POST.
    pub secret: String,
    /// The role it subscribes as (authorization applies).
    #[serde(default = "default_role")]
    pub role: String,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Events waiting to be POSTed; beyond, new events are dropped (logged).
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Deliver through a durable queue, with retries (off by default).
    #[serde(default)]
    pub durable: Option<super::durable::DurableDelivery>,
}

fn default_role() -> String {
    "subscriber".into()
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_queue() -> usize {
    1000
}

impl std::fmt::Debug for HttpSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSubscriber")
            .field("topic", &self.topic)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl HttpSubscriber {
    /// The identity it subscribes as (and durable deliveries are filtered by).
    pub fn identity(&self) -> Identity {
        Identity {
            authid: format!("http-subscriber:{}", self.url),
            authrole: self.role.clone(),
            authmethod: "config".into(),
            authprovider: "bridge".into(),
        }
    }

    /// Whether `session` (of [`HttpSubscriber::identity`]) may subscribe
    /// to its topic in `realm`.
    pub fn check_authorized(&self, realm: &Realm, session: &Session) -> Result<(), String> {
        match realm
            .authz()
            .decide_pattern(session, Action::Subscribe, &self.topic, self.policy)
        {
            Decision::Deny | Decision::Ask => Err(format!(
                "HTTP subscriber for {}: role \"{}\" may not subscribe to \"{}\"",
                self.url, self.role, self.topic
            )),
            _ => Ok(()),
        }
    }

    /// What is wrong with it; `index` is its place in its bridge.
    pub fn problems_at(&self, index: usize) -> Vec<String> {
        let mut out = self.problems();
        if let Some(d) = &self.durable {
            out.extend(d.problems(index, &self.url, self.timeout));
            // The router's own events (meta events) never pass the publish
            // hook that makes the jobs: such a subscriber would get nothing.
            if self.topic.starts_with("wamp.") {
                out.push(format!(
                    "durable: \"{}\" is one of the router's own wamp.* events, which are not delivered durably: subscribe to them without `durable`",
                    self.topic
                ));
            }
        }
        out
    }

    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !crate::outbound::client::is_http_url(&self.url) {
            out.push(format!(
                "url: \"{}\" must be an http:// or https:// URL",
                self.url
            ));
        }
        let allow_empty = self.policy != MatchPolicy::Exact;
        if let Err(e) = uri::check(&self.topic, uri::UriCheck::Loose, allow_empty) {
            out.push(format!("topic: {e}"));
        }
        if self.queue == 0 {
            out.push("queue must be at least 1".into());
        }
        out
    }
}

/// Subscribes `s` in `realm` and spawns the task that POSTs its events.
/// Returns the caller (it must live as long as the subscription).
pub fn start(realm: &Arc<Realm>, s: &HttpSubscriber) -> Result<InternalCaller, String> {
    let (tx, rx) = mpsc::channel(s.queue.max(1));
    let caller = InternalCaller::with_events(s.identity(), tx);
    let session = caller.session().clone();
    s.check_authorized(realm, &session)?;
    realm
        .broker
        .subscribe(&session, &s.topic, s.policy, false, |_| {});
    tokio::spawn(post_events(s.clone(), s.policy != MatchPolicy::Exact, rx));
    Ok(caller)
}

async fn post_events(s: HttpSubscriber, pattern: bool, mut rx: mpsc::Receiver<InternalEvent>) {
    let client = crate::outbound::client::client();
    let seq = AtomicU64::new(0);
    while let Some(e) = rx.recv().await {
        let topic = if pattern {
            e.details.get_str("topic").unwrap_or(&s.topic).to_string()
        } else {
            s.topic.clone()
        };
        let body = event_body(
            &topic,
            e.publication,
            Value::List(e.args),
            Value::Dict(e.kwargs),
            Value::Dict(e.details),
        );
        let seq = seq.fetch_add(1, Ordering::Relaxed) + 1;
        let url = signed_url(&s.url, &s.key, &s.secret, seq, body.as_bytes());
        let request = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )
            .body(Full::new(Bytes::from(body)));
        let Ok(request) = request else {
            tracing::warn!(url = s.url, "HTTP subscriber: cannot build the request");
            continue;
        };
        match tokio::time::timeout(s.timeout, client.request(request)).await {
            Ok(Ok(r)) if r.status().is_success() => {}
            Ok(Ok(r)) => tracing::warn!(
                url = s.url,
                status = r.status().as_u16(),
                publication = e.publication,
                "HTTP subscriber: the receiver refused an event"
            ),
            Ok(Err(err)) => tracing::warn!(
                url = s.url,
                publication = e.publication,
                "HTTP subscriber: POST failed: {err}"
            ),
            Err(_) => tracing::warn!(
                url = s.url,
                publication = e.publication,
                "HTTP subscriber: no answer within {:?}",
                s.timeout
            ),
        }
    }
}

/// The body of an HTTP subscriber's POST, durable or not:
/// `{"topic", "publication", "args", "kwargs", "details"}` (binary values
/// in the WAMP JSON convention).
pub fn event_body(
    topic: &str,
    publication: u64,
    args: Value,
    kwargs: Value,
    details: Value,
) -> String {
    let to_json = |v: Value| serde_json::to_value(&v).unwrap_or(serde_json::Value::Null);
    json!({
        "topic": topic,
        "publication": publication,
        "args": to_json(args),
        "kwargs": to_json(kwargs),
        "details": to_json(details),
    })
    .to_string()
}
