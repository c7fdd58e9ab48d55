//! Jobs with an HTTP target: each attempt is one request to the job's URL
//! with the job's payload (`{"args", "kwargs"}`) as the JSON body, signed
//! like the bridge's HTTP subscribers when `[realm.queue_http]` names a key
//! (`crate::signing::outgoing`).
//! A status in `accepted_statuses` (default: any 2xx) completes the job;
//! another status fails the attempt with `switchyard.queue.http.<status>`,
//! so `non_retryable_errors` can list e.g. `switchyard.queue.http.400`.
//! A durable HTTP subscriber's queue (`subscribers.rs`) POSTs the event
//! its job holds, signed with the subscriber's key, to its URL.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use switchyard_proto::{Dict, Value};
use switchyard_queue::{Lease, Target};

use super::{QueueHttpSigning, QueueService, Running};
use crate::outbound::destinations::{
    error_chain, GuardedConnector, OutboundHttpConfig, OutboundPolicy,
};
use crate::signing::{destination_signed_url, signed_url};

/// Error URI of an attempt whose destination the outbound policy refuses.
const FORBIDDEN: &str = "switchyard.queue.http.forbidden";

/// Largest response body kept for the result topic.
const MAX_RESPONSE: usize = 64 * 1024;

pub(super) struct HttpTargets {
    /// For the URLs the operator wrote in `[[realm.queue]]`.
    client: crate::outbound::client::HttpClient,
    /// For any other URL (a queue declared at run time): checked against
    /// `[realm.outbound_http]`, connected to checked addresses only (TLS,
    /// for https://, over the checked connection).
    guarded: Client<HttpsConnector<GuardedConnector>, Full<Bytes>>,
    policy: Arc<OutboundPolicy>,
    /// `(queue, url)` of the HTTP targets the operator wrote: a URL is
    /// trusted for the queue it was written in only (another queue declared
    /// with the same URL is a client's choice like any other).
    /// Replaced by a reload of the config file.
    operator_urls: parking_lot::RwLock<HashSet<(String, String)>>,
    signing: Option<QueueHttpSigning>,
    seq: AtomicU64,
}

impl HttpTargets {
    pub(super) fn new(
        signing: Option<QueueHttpSigning>,
        operator_urls: HashSet<(String, String)>,
        outbound: &OutboundHttpConfig,
    ) -> HttpTargets {
        let policy = Arc::new(OutboundPolicy::new(outbound));
        HttpTargets {
            client: crate::outbound::client::client(),
            guarded: Client::builder(TokioExecutor::new()).build(crate::outbound::client::https(
                GuardedConnector::new(policy.clone()),
            )),
            policy,
            operator_urls: parking_lot::RwLock::new(operator_urls),
            signing,
            seq: AtomicU64::new(0),
        }
    }

    /// Whether the operator wrote `url` as the target of `queue`.
    fn operator_wrote(&self, queue: &str, url: &str) -> bool {
        self.operator_urls
            .read()
            .contains(&(queue.to_string(), url.to_string()))
    }

    /// The HTTP targets of a reloaded config file.
    pub(super) fn set_operator_urls(&self, urls: HashSet<(String, String)>) {
        *self.operator_urls.write() = urls;
    }

    /// May a client name `url` as the destination of `queue` (a run-time
    /// declaration)? Only the operator's own queue keeps the operator's URL
    /// unchecked.
    pub(super) fn check_declared(&self, queue: &str, url: &str) -> Result<(), String> {
        if self.operator_wrote(queue, url) {
            return Ok(());
        }
        self.policy.check_url(url)
    }
}

/// `(queue, url)` of the HTTP targets written in the config file.
pub(super) fn operator_urls(
    configs: &[switchyard_queue::QueueConfig],
) -> HashSet<(String, String)> {
    configs
        .iter()
        .filter_map(|c| match &c.target {
            Some(Target::Http { url, .. }) => Some((c.name.to_string(), url.clone())),
            _ => None,
        })
        .collect()
}

/// Why an HTTP target cannot be used, if it cannot (http:// and https://
/// are served).
pub(super) fn unsupported(target: &Target) -> Option<String> {
    match target {
        Target::Http { url, .. } if !crate::outbound::client::is_http_url(url) => Some(format!(
            "target.http.url: \"{url}\": only http:// and https:// URLs are supported"
        )),
        _ => None,
    }
}

impl QueueService {
    pub(super) async fn http_worker(&self, lease: Lease) {
        let job = lease.job.clone();
        let Target::Http {
            url,
            method,
            accepted_statuses,
        } = &job.target
        else {
            return;
        };
        // A durable subscriber's queue: the subscriber's URL as configured
        // now, its body and its key.
        let subscriber = self.subscribers.get(&job.queue);
        let url = subscriber.map_or(url, |s| &s.url);
        if subscriber.is_none() {
            if let Some(why) = unsupported(&job.target) {
                self.fail(&lease, "switchyard.queue.http.unsupported", &why);
                return;
            }
        }
        // A URL the operator did not write (a queue declared at run time) is
        // checked again at each attempt: the policy may have changed since.
        let trusted = subscriber.is_some() || self.http.operator_wrote(&job.queue, url);
        if !trusted {
            if let Err(why) = self.http.policy.check_url(url) {
                self.metrics.http_forbidden(&job.queue);
                tracing::warn!(job = %job.id, queue = %job.queue, "HTTP target refused: {why}");
                self.fail(&lease, FORBIDDEN, &why);
                return;
            }
        }
        self.running.lock().insert(
            job.id,
            Running {
                epoch: lease.epoch,
                request: None,
                queue: job.queue.clone(),
            },
        );
        let body = match subscriber {
            Some(_) => super::subscribers::body(&lease.payload),
            None => super::payload::to_json(&lease.payload),
        };
        let body = match body {
            Ok(b) => b,
            Err(e) => {
                self.forget(&lease);
                self.fail(&lease, "switchyard.queue.error.invalid_payload", &e);
                return;
            }
        };
        let verb = Method::from_bytes(method.as_bytes()).unwrap_or(Method::POST);
        let url = match (subscriber, &self.http.signing) {
            // Signed exactly as the non-durable subscriber signs its POSTs.
            (Some(s), _) => {
                let seq = self.http.seq.fetch_add(1, Ordering::Relaxed) + 1;
                signed_url(url, &s.key, &s.secret, seq, &body)
            }
            (None, Some(k)) if trusted => {
                let seq = self.http.seq.fetch_add(1, Ordering::Relaxed) + 1;
                signed_url(url, &k.key, &k.secret, seq, &body)
            }
            // A destination a client chose: the signature is bound to the
            // method and path, so that one harvested there does not verify
            // at the operator's other endpoints (docs/SECURITY.md).
            (None, Some(k)) => {
                let seq = self.http.seq.fetch_add(1, Ordering::Relaxed) + 1;
                destination_signed_url(url, verb.as_str(), &k.key, &k.secret, seq, &body)
            }
            (None, None) => url.clone(),
        };
        let request = Request::builder()
            .method(verb)
            .uri(&url)
            .header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )
            .header("x-switchyard-job", job.id.0.to_string())
            .header("x-switchyard-queue", &*job.queue)
            .header("x-switchyard-attempt", lease.attempt.to_string())
            .body(Full::new(body));
        let request = match request {
            Ok(r) => r,
            Err(e) => {
                self.forget(&lease);
                self.fail(
                    &lease,
                    "switchyard.queue.http.invalid",
                    &format!("cannot build the request: {e}"),
                );
                return;
            }
        };
        let left = lease
            .deadline_ms
            .saturating_sub(self.queues.clock().now_ms())
            .max(1);
        let answer = tokio::time::timeout(Duration::from_millis(left), async {
            let response = if trusted {
                self.http.client.request(request).await?
            } else {
                self.http.guarded.request(request).await?
            };
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            Ok::<_, hyper_util::client::legacy::Error>((status, body))
        })
        .await;
        self.forget(&lease);
        let target = match (subscriber, &job.target) {
            (Some(s), _) => s.url.as_str(),
            (None, Target::Http { url, .. }) => url.as_str(),
            (None, Target::Procedure(p)) => p.as_str(),
        };
        match answer {
            Ok(Ok((status, body))) => {
                let accepted = if accepted_statuses.is_empty() {
                    (200..300).contains(&status)
                } else {
                    accepted_statuses.contains(&status)
                };
                let text = String::from_utf8_lossy(&body).into_owned();
                if accepted {
                    let result = Dict::new()
                        .with("status", u64::from(status))
                        .with("body", Value::Str(text));
                    self.complete(&lease, result).await;
                } else {
                    let excerpt: String = text.chars().take(200).collect();
                    self.fail(
                        &lease,
                        &format!("switchyard.queue.http.{status}"),
                        &format!("{method} {target} answered {status}: {excerpt}"),
                    );
                }
            }
            Ok(Err(e)) => {
                let denied = std::error::Error::source(&e)
                    .and_then(|s| s.downcast_ref::<std::io::Error>())
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied);
                let why = error_chain(&e);
                if denied {
                    self.metrics.http_forbidden(&job.queue);
                    tracing::warn!(job = %job.id, queue = %job.queue, "HTTP target refused: {why}");
                }
                self.fail(
                    &lease,
                    if denied {
                        FORBIDDEN
                    } else {
                        "switchyard.queue.http.unreachable"
                    },
                    &format!("{method} {target} failed: {why}"),
                )
            }
            // The lease expired meanwhile: maintenance counts the attempt.
            Err(_) => {}
        }
    }
}
