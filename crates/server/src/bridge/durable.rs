//! `durable = { ... }` on a `[[bridge.subscriber]]`: the subscriber's events
//! go through a durable queue instead of being POSTed at most once. Each
//! matching publication becomes a job (stored before the publisher is
//! acknowledged, as a topic binding's), which the queue engine POSTs to the
//! subscriber's URL with the subscriber's body and signature, retrying by
//! `retry` and dead-lettering after `max_attempts` (docs/HTTP-BRIDGE.md
//! "Durable delivery"). This file is the option's configuration and the
//! queue it becomes; the delivery itself is `queue_service::subscribers`.

use std::time::Duration;

use serde::Deserialize;
use switchyard_queue::{DeadLetterRetention, QueueConfig, RateLimit, RetryPolicy, Target};

/// Prefix of the queues durable subscribers get when they name none; no
/// other queue may use it.
pub const RESERVED_PREFIX: &str = "_subscriber-";

/// The `durable` table of a `[[bridge.subscriber]]` (`durable = {}` for
/// every default).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DurableDelivery {
    /// The queue's name (default `_subscriber-<index of the subscriber in
    /// its [[bridge]]>`; name it to keep its jobs when subscribers are
    /// added or reordered).
    #[serde(default)]
    pub queue: Option<String>,
    /// Retry policy between attempts (the queues' default: exponential 1 s
    /// x 2 up to 5 min, jitter 0.1).
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Attempts before an event is dead-lettered (default 20).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// POSTs in flight at once (default 1: events go one after the other,
    /// in order while the receiver accepts them).
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Most events waiting or in flight (default 100 000); beyond it a
    /// publication on the topic is refused.
    #[serde(default = "default_max_jobs")]
    pub max_jobs: u64,
    /// Largest event kept, in bytes (default 1 MiB); a larger publication
    /// on the topic is refused.
    #[serde(default = "default_max_payload")]
    pub max_payload_bytes: u32,
    /// Statuses that deliver the event (default: any 2xx).
    #[serde(default)]
    pub accepted_statuses: Vec<u16>,
    /// Errors that dead-letter at once, e.g. `switchyard.queue.http.400`.
    #[serde(default)]
    pub non_retryable_errors: Vec<String>,
    /// How many dead events are kept, and for how long.
    #[serde(default)]
    pub dead_letter: DeadLetterRetention,
    /// Optional POST rate limit.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
}

fn default_max_attempts() -> u32 {
    20
}
fn default_concurrency() -> u32 {
    1
}
fn default_max_jobs() -> u64 {
    100_000
}
fn default_max_payload() -> u32 {
    1024 * 1024
}

impl DurableDelivery {
    /// The queue's name for the subscriber at `index` of its bridge.
    pub fn queue_name(&self, index: usize) -> String {
        self.queue
            .clone()
            .unwrap_or_else(|| format!("{RESERVED_PREFIX}{index}"))
    }

    /// The queue configuration: its target is the subscriber's URL, an
    /// attempt lasts at most the subscriber's `timeout`.
    pub fn queue_config(&self, name: String, url: &str, timeout: Duration) -> QueueConfig {
        let mut c = QueueConfig::new(name);
        c.target = Some(Target::Http {
            url: url.to_string(),
            method: "POST".into(),
            accepted_statuses: self.accepted_statuses.clone(),
        });
        c.retry = self.retry.clone();
        c.lease_timeout = timeout;
        c.max_attempts = self.max_attempts;
        c.concurrency = self.concurrency;
        c.max_jobs = self.max_jobs;
        c.max_payload_bytes = self.max_payload_bytes;
        c.non_retryable_errors = self.non_retryable_errors.clone();
        c.dead_letter = self.dead_letter.clone();
        c.rate_limit = self.rate_limit.clone();
        c
    }

    /// What is wrong with it, as `durable.<field>: ...` lines.
    pub fn problems(&self, index: usize, url: &str, timeout: Duration) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(q) = &self.queue {
            if q.starts_with(RESERVED_PREFIX) {
                out.push(format!(
                    "durable.queue: \"{q}\": names starting with \"{RESERVED_PREFIX}\" are reserved"
                ));
            }
            // One URI component, so per-queue permissions can name it
            // (switchyard.queue.stats.<queue>).
            if q.contains('.') {
                out.push(format!("durable.queue: \"{q}\" must not contain '.'"));
            }
        }
        let config = self.queue_config(self.queue_name(index), url, timeout);
        if let Err(e) = config.validate() {
            // The target's URL and the timeout are the subscriber's own.
            let field = match e.field.as_str() {
                "lease_timeout" => "timeout".to_string(),
                f if f.starts_with("target") => "url".to_string(),
                f => format!("durable.{f}"),
            };
            out.push(format!("{field}: {}", e.message));
        }
        out
    }
}
