//! Queue configuration.
//!
//! ```toml
//! [[queues]]
//! name = "pdf"
//! target = "com.example.pdf.render"        # default target of jobs pushed without one
//! retry = { kind = "exponential", initial = "1s", factor = 2.0, cap = "5m", jitter = 0.1 }
//! lease_timeout = "30s"
//! max_attempts = 20
//! concurrency = 64                         # jobs in flight at once; 0 = unlimited
//! rate_limit = { per_second = 100, burst = 20 }
//! idempotency_window = "24h"
//! idempotency_max_keys = 100000           # keys remembered at once; the oldest is forgotten first
//! idempotency_key_max_bytes = 256
//! non_retryable_errors = ["com.example.error.invalid_input", "com.example.fatal.*"]
//! dead_letter = { max_jobs = 10000, max_age = "7days" }
//! max_payload_bytes = 1048576
//! max_jobs = 1000000                     # waiting + in flight; 0 = no limit
//! backpressure = { ready = 100000, max_wait = "10s" }   # producers wait while workers are behind
//! job_kwarg = "_job"                     # workers get {id, queue, attempt} under this kwarg
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::InvalidField;
use crate::human;
use crate::model::{check_name, Target};
use crate::policy::RetryPolicy;

/// A worker's ERROR with this URI (or one under it, such as
/// `switchyard.queue.non_retryable.bad_input`) dead-letters the job at once
/// in every queue, whatever its `non_retryable_errors`: a worker can say
/// "this job will never succeed" without the queue's configuration listing
/// its error (`switchyard worker` uses it for exit status 65).
pub const NON_RETRYABLE: &str = "switchyard.queue.non_retryable";

/// Longest lease (and lease extension).
pub const MAX_LEASE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Shortest lease.
pub const MIN_LEASE: Duration = Duration::from_millis(100);
/// Largest `max_payload_bytes`.
pub const MAX_PAYLOAD_LIMIT: u32 = 64 * 1024 * 1024;
/// Largest `idempotency_max_keys`.
pub const MAX_IDEMPOTENCY_KEYS: u64 = 10_000_000;
/// Largest `idempotency_key_max_bytes`.
pub const MAX_IDEMPOTENCY_KEY_BYTES: u32 = 4096;
/// Largest `max_attempts`.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100_000;

/// One queue's configuration. Every field but `name` has a default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Queue name: 1..=128 characters of `A-Z a-z 0-9 . _ -`.
    pub name: String,
    /// Default target of jobs pushed without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// Retry policy (default: exponential 1 s × 2, cap 5 min, jitter 0.1).
    #[serde(default)]
    pub retry: RetryPolicy,
    /// How long a worker may hold a job before the attempt counts as failed (default 30 s).
    #[serde(default = "default_lease_timeout", with = "human::duration")]
    pub lease_timeout: Duration,
    /// Attempts before a job is dead-lettered (default 20, like RabbitMQ quorum queues).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Jobs of this queue in flight at once (default 64; 0 = unlimited).
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Optional dispatch rate limit (token bucket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// How long an idempotency key is remembered (default 24 h).
    #[serde(default = "default_idempotency_window", with = "human::duration")]
    pub idempotency_window: Duration,
    /// Most idempotency keys remembered at once (default 100 000, at most 10 000 000). A new
    /// key beyond it makes the queue forget its oldest key (the one closest to the end of its
    /// window) first, so a producer with endless distinct keys cannot grow memory.
    #[serde(default = "default_idempotency_max_keys")]
    pub idempotency_max_keys: u64,
    /// Longest accepted idempotency key, in bytes (default 256, at most 4096).
    #[serde(default = "default_idempotency_key_max_bytes")]
    pub idempotency_key_max_bytes: u32,
    /// Error URIs that dead-letter a job at once. An entry ending in `.*` matches every URI
    /// starting with what precedes the `*` (e.g. `com.example.fatal.*`).
    #[serde(default)]
    pub non_retryable_errors: Vec<String>,
    /// How many dead jobs are kept, and for how long.
    #[serde(default)]
    pub dead_letter: DeadLetterRetention,
    /// Largest accepted payload in bytes (default 1 MiB; at most 64 MiB).
    #[serde(default = "default_max_payload")]
    pub max_payload_bytes: u32,
    /// Most jobs waiting or in flight at once (default 1 000 000; 0 = no
    /// limit). A push beyond it is refused with `queue_full`; dead letters
    /// do not count (they have their own retention).
    #[serde(default = "default_max_jobs")]
    pub max_jobs: u64,
    /// Back-pressure: when the queue's workers fall behind, producers are slowed down instead
    /// of the backlog growing (default: at 100 000 ready jobs, a push waits up to 10 s).
    #[serde(default)]
    pub backpressure: Backpressure,
    /// If set, workers get `{id, queue, attempt}` of the job under this keyword argument (for
    /// idempotent workers: the id is the same on every attempt). Off by default, so a worker's
    /// arguments are exactly the job's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_kwarg: Option<String>,
}

/// A token bucket: `per_second` jobs are dispatched per second on average, with bursts of up to
/// `burst` jobs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained rate, jobs per second (> 0; fractions allowed, e.g. 0.5 = one every 2 s).
    pub per_second: f64,
    /// Bucket size; default: one second's worth (`ceil(per_second)`, at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

impl RateLimit {
    /// The effective bucket size.
    pub fn burst(&self) -> u32 {
        self.burst.unwrap_or_else(|| {
            let b = self.per_second.ceil();
            if b >= f64::from(u32::MAX) {
                u32::MAX
            } else {
                (b as u32).max(1)
            }
        })
    }
}

/// Dead-letter retention: the oldest dead jobs are deleted once either limit is passed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterRetention {
    /// Most dead jobs kept (default 10 000; 0 = no limit).
    #[serde(default = "default_dead_max_jobs")]
    pub max_jobs: u64,
    /// Longest a dead job is kept (default 7 days; 0 = no limit).
    #[serde(default = "default_dead_max_age", with = "human::duration")]
    pub max_age: Duration,
}

impl Default for DeadLetterRetention {
    fn default() -> Self {
        DeadLetterRetention {
            max_jobs: default_dead_max_jobs(),
            max_age: default_dead_max_age(),
        }
    }
}

fn default_lease_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_attempts() -> u32 {
    20
}
fn default_concurrency() -> u32 {
    64
}
fn default_idempotency_window() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_idempotency_max_keys() -> u64 {
    100_000
}
fn default_idempotency_key_max_bytes() -> u32 {
    256
}
fn default_max_payload() -> u32 {
    1024 * 1024
}
fn default_max_jobs() -> u64 {
    1_000_000
}
fn default_backpressure_ready() -> u64 {
    100_000
}
fn default_backpressure_max_wait() -> Duration {
    Duration::from_secs(10)
}

/// Longest `backpressure.max_wait`.
pub const MAX_BACKPRESSURE_WAIT: Duration = Duration::from_secs(300);

/// `backpressure = { ready = 100000, max_wait = "10s" }`: a push to a queue that holds `ready`
/// or more jobs ready to run (due, not leased: its workers are behind) waits until the workers
/// have taken the queue back under that mark, for at most `max_wait`; then it is refused with
/// `queue_full`. Nothing is stored or acknowledged while a push waits, so a producer that waits
/// for its acknowledgements (or keeps a bounded number in flight) runs at the workers' pace.
/// Delayed and retrying jobs that are not due yet do not count.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backpressure {
    /// Ready jobs at which pushes wait (0 = never: pushes are only refused at `max_jobs`).
    #[serde(default = "default_backpressure_ready")]
    pub ready: u64,
    /// Longest a push waits for room (at most 5 minutes).
    #[serde(default = "default_backpressure_max_wait", with = "human::duration")]
    pub max_wait: Duration,
}

impl Default for Backpressure {
    fn default() -> Backpressure {
        Backpressure {
            ready: default_backpressure_ready(),
            max_wait: default_backpressure_max_wait(),
        }
    }
}
fn default_dead_max_jobs() -> u64 {
    10_000
}
fn default_dead_max_age() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

impl QueueConfig {
    /// A queue with this name and every default.
    pub fn new(name: impl Into<String>) -> QueueConfig {
        QueueConfig {
            name: name.into(),
            target: None,
            retry: RetryPolicy::default(),
            lease_timeout: default_lease_timeout(),
            max_attempts: default_max_attempts(),
            concurrency: default_concurrency(),
            rate_limit: None,
            idempotency_window: default_idempotency_window(),
            idempotency_max_keys: default_idempotency_max_keys(),
            idempotency_key_max_bytes: default_idempotency_key_max_bytes(),
            non_retryable_errors: Vec::new(),
            dead_letter: DeadLetterRetention::default(),
            max_payload_bytes: default_max_payload(),
            max_jobs: default_max_jobs(),
            backpressure: Backpressure::default(),
            job_kwarg: None,
        }
    }

    /// Checks every field; the error names the field (e.g. `retry.jitter`, `lease_timeout`).
    pub fn validate(&self) -> Result<(), InvalidField> {
        validate_queue_name(&self.name)?;
        if let Some(t) = &self.target {
            t.validate()?;
        }
        self.retry.validate().map_err(|e| e.within("retry"))?;
        if let Some(k) = &self.job_kwarg {
            if k.is_empty() || k.len() > 64 {
                return Err(InvalidField::new(
                    "job_kwarg",
                    format!("`{k}` must be 1..=64 characters long"),
                ));
            }
        }
        if self.lease_timeout < MIN_LEASE || self.lease_timeout > MAX_LEASE {
            return Err(InvalidField::new(
                "lease_timeout",
                format!(
                    "{} is outside 100ms..=7days",
                    human::format_duration(self.lease_timeout)
                ),
            ));
        }
        if self.max_attempts == 0 || self.max_attempts > MAX_ATTEMPTS_LIMIT {
            return Err(InvalidField::new(
                "max_attempts",
                format!("{} is outside 1..={MAX_ATTEMPTS_LIMIT}", self.max_attempts),
            ));
        }
        if let Some(r) = &self.rate_limit {
            if !r.per_second.is_finite() || r.per_second <= 0.0 {
                return Err(InvalidField::new(
                    "rate_limit.per_second",
                    format!("must be a positive number (got {})", r.per_second),
                ));
            }
            if r.burst == Some(0) {
                return Err(InvalidField::new("rate_limit.burst", "must be at least 1"));
            }
        }
        if self.idempotency_window < Duration::from_secs(1)
            || self.idempotency_window > Duration::from_secs(365 * 24 * 3600)
        {
            return Err(InvalidField::new(
                "idempotency_window",
                format!(
                    "{} is outside 1s..=365days",
                    human::format_duration(self.idempotency_window)
                ),
            ));
        }
        if self.idempotency_max_keys == 0 || self.idempotency_max_keys > MAX_IDEMPOTENCY_KEYS {
            return Err(InvalidField::new(
                "idempotency_max_keys",
                format!(
                    "{} is outside 1..={MAX_IDEMPOTENCY_KEYS}",
                    self.idempotency_max_keys
                ),
            ));
        }
        if self.idempotency_key_max_bytes == 0
            || self.idempotency_key_max_bytes > MAX_IDEMPOTENCY_KEY_BYTES
        {
            return Err(InvalidField::new(
                "idempotency_key_max_bytes",
                format!(
                    "{} is outside 1..={MAX_IDEMPOTENCY_KEY_BYTES}",
                    self.idempotency_key_max_bytes
                ),
            ));
        }
        for (i, uri) in self.non_retryable_errors.iter().enumerate() {
            check_name(&format!("non_retryable_errors[{i}]"), uri)?;
            if uri.contains('*') && !(uri.ends_with(".*") && uri.matches('*').count() == 1) {
                return Err(InvalidField::new(
                    format!("non_retryable_errors[{i}]"),
                    format!("`{uri}`: a wildcard is only allowed as a trailing `.*`"),
                ));
            }
        }
        if self.max_payload_bytes == 0 || self.max_payload_bytes > MAX_PAYLOAD_LIMIT {
            return Err(InvalidField::new(
                "max_payload_bytes",
                format!(
                    "{} is outside 1..={MAX_PAYLOAD_LIMIT}",
                    self.max_payload_bytes
                ),
            ));
        }
        if self.backpressure.max_wait > MAX_BACKPRESSURE_WAIT {
            return Err(InvalidField::new(
                "backpressure.max_wait",
                format!(
                    "{} is more than 5m",
                    human::format_duration(self.backpressure.max_wait)
                ),
            ));
        }
        Ok(())
    }

    /// Names of the fields whose values differ between `self` and `other`.
    pub fn differences(&self, other: &QueueConfig) -> Vec<&'static str> {
        let mut d = Vec::new();
        let mut check = |name: &'static str, differs: bool| {
            if differs {
                d.push(name);
            }
        };
        check("name", self.name != other.name);
        check("target", self.target != other.target);
        check("retry", self.retry != other.retry);
        check("lease_timeout", self.lease_timeout != other.lease_timeout);
        check("max_attempts", self.max_attempts != other.max_attempts);
        check("concurrency", self.concurrency != other.concurrency);
        check("rate_limit", self.rate_limit != other.rate_limit);
        check(
            "idempotency_window",
            self.idempotency_window != other.idempotency_window,
        );
        check(
            "idempotency_max_keys",
            self.idempotency_max_keys != other.idempotency_max_keys,
        );
        check(
            "idempotency_key_max_bytes",
            self.idempotency_key_max_bytes != other.idempotency_key_max_bytes,
        );
        check(
            "non_retryable_errors",
            self.non_retryable_errors != other.non_retryable_errors,
        );
        check("dead_letter", self.dead_letter != other.dead_letter);
        check(
            "max_payload_bytes",
            self.max_payload_bytes != other.max_payload_bytes,
        );
        check("max_jobs", self.max_jobs != other.max_jobs);
        check("backpressure", self.backpressure != other.backpressure);
        check("job_kwarg", self.job_kwarg != other.job_kwarg);
        d
    }

    /// Whether `uri` is listed (exactly or by a `prefix.*` entry) as non-retryable,
    /// or is [`NON_RETRYABLE`] (or under it), which every queue dead-letters.
    pub fn is_non_retryable(&self, uri: &str) -> bool {
        if uri == NON_RETRYABLE
            || uri
                .strip_prefix(NON_RETRYABLE)
                .is_some_and(|rest| rest.starts_with('.'))
        {
            return true;
        }
        self.non_retryable_errors
            .iter()
            .any(|e| match e.strip_suffix('*') {
                Some(prefix) => uri.starts_with(prefix),
                None => e == uri,
            })
    }
}

/// Checks a queue name: 1..=128 characters of `A-Z a-z 0-9 . _ -`.
pub fn validate_queue_name(name: &str) -> Result<(), InvalidField> {
    if name.is_empty() || name.len() > 128 {
        return Err(InvalidField::new(
            "name",
            format!("queue name `{name}` must be 1..=128 characters long"),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(InvalidField::new(
            "name",
            format!("queue name `{name}` contains `{c}`; use A-Z a-z 0-9 . _ -"),
        ));
    }
    Ok(())
}
