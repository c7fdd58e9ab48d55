//! `[realm.queue_limits]`: what clients may make the realm's queues hold
//! (docs/SECURITY.md "Queue state a client controls").

use std::time::Duration;

use serde::Deserialize;
use switchyard_queue::{human, QueueConfig};

/// Bounds of the state clients control in a realm's queues.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueLimits {
    /// Most queues in the realm (config file and run time together; the
    /// config file's are always created). A run-time declaration beyond it
    /// gets `switchyard.queue.error.limit_exceeded`. 0 = no limit.
    #[serde(default = "default_max_queues")]
    pub max_queues: usize,
    /// Whether `switchyard.queue.declare` may create queues at run time (it
    /// is still authorized per role like any call). Default true.
    #[serde(default = "yes")]
    pub allow_runtime_declare: bool,
    /// Most jobs one `switchyard.queue.push_many` may carry.
    #[serde(default = "default_max_push_many_jobs")]
    pub max_push_many_jobs: usize,
    /// Most payload bytes one `switchyard.queue.push_many` may carry.
    #[serde(default = "default_max_push_many_bytes")]
    pub max_push_many_bytes: usize,
    /// Most jobs (waiting, in flight or dead) the queues declared at run time
    /// hold together (default 100 000; 0 = no limit). Config-file queues are
    /// not counted.
    #[serde(default = "default_runtime_max_jobs")]
    pub runtime_max_jobs: u64,
    /// Most payload bytes the jobs of the queues declared at run time hold
    /// together, on disk (default 1 GiB; 0 = no limit).
    #[serde(default = "default_runtime_max_payload_bytes")]
    pub runtime_max_payload_bytes: u64,
    /// Most idempotency keys the queues declared at run time remember
    /// together (default 100 000; 0 = no limit).
    #[serde(default = "default_runtime_max_idempotency_keys")]
    pub runtime_max_idempotency_keys: u64,
    /// Longest target procedure and result topic one job may name (they
    /// stay in memory while it waits); default 512 bytes.
    #[serde(default = "default_max_job_uri_bytes")]
    pub max_job_uri_bytes: usize,
    /// Free space to keep on the disk of the queue store: a push that would
    /// leave less is refused (`queue_full`), for every queue, so clients
    /// never fill the disk. Default 256 MiB; 0 = none.
    #[serde(default = "default_min_free_disk_bytes")]
    pub min_free_disk_bytes: u64,
    /// The largest values a run-time declaration may ask for.
    #[serde(default)]
    pub runtime_queue: RuntimeCeilings,
    /// How long completed jobs and their results stay readable.
    #[serde(default)]
    pub results: super::results::ResultRetention,
}

/// `[realm.queue_limits.runtime_queue]`: the largest per-queue settings a
/// queue declared at run time may have (config-file queues are the
/// operator's and are not bounded by them). Defaults: the per-queue
/// defaults, and a lease of at most 1 h. "No limit" (0) values of
/// `max_jobs`, `concurrency` and `dead_letter` count as above any ceiling.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeCeilings {
    pub max_payload_bytes: u32,
    pub max_jobs: u64,
    pub idempotency_max_keys: u64,
    pub idempotency_key_max_bytes: u32,
    #[serde(with = "human::duration")]
    pub idempotency_window: Duration,
    pub concurrency: u32,
    pub max_attempts: u32,
    #[serde(with = "human::duration")]
    pub lease_timeout: Duration,
    pub dead_letter_max_jobs: u64,
    #[serde(with = "human::duration")]
    pub dead_letter_max_age: Duration,
    /// Largest configuration (as JSON: target, retry, non_retryable_errors...).
    pub config_max_bytes: usize,
}

impl Default for RuntimeCeilings {
    fn default() -> Self {
        let q = QueueConfig::new("defaults");
        RuntimeCeilings {
            max_payload_bytes: q.max_payload_bytes,
            max_jobs: q.max_jobs,
            idempotency_max_keys: q.idempotency_max_keys,
            idempotency_key_max_bytes: q.idempotency_key_max_bytes,
            idempotency_window: q.idempotency_window,
            concurrency: q.concurrency,
            max_attempts: q.max_attempts,
            lease_timeout: Duration::from_secs(3600),
            dead_letter_max_jobs: q.dead_letter.max_jobs,
            dead_letter_max_age: q.dead_letter.max_age,
            config_max_bytes: 16 * 1024,
        }
    }
}

impl RuntimeCeilings {
    /// Why a run-time declaration of `cfg` asks for more than the ceilings
    /// allow (the first setting over its ceiling, named with its key).
    pub fn refuse(&self, cfg: &QueueConfig) -> Option<String> {
        let size = serde_json::to_vec(cfg)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > self.config_max_bytes {
            return Some(format!(
                "queue `{}`: its configuration is {size} bytes long (as JSON), above the ceiling of {} bytes for queues declared at run time ([realm.queue_limits.runtime_queue] config_max_bytes): shorten non_retryable_errors or the target, or declare the queue in the config file",
                cfg.name, self.config_max_bytes
            ));
        }
        // 0 means "no limit" for these.
        let unlimited = |v: u64| if v == 0 { u64::MAX } else { v };
        let numbers: [(&str, u64, u64); 7] = [
            (
                "max_payload_bytes",
                cfg.max_payload_bytes.into(),
                self.max_payload_bytes.into(),
            ),
            ("max_jobs", unlimited(cfg.max_jobs), self.max_jobs),
            (
                "idempotency_max_keys",
                cfg.idempotency_max_keys,
                self.idempotency_max_keys,
            ),
            (
                "idempotency_key_max_bytes",
                cfg.idempotency_key_max_bytes.into(),
                self.idempotency_key_max_bytes.into(),
            ),
            (
                "concurrency",
                unlimited(cfg.concurrency.into()),
                self.concurrency.into(),
            ),
            (
                "max_attempts",
                cfg.max_attempts.into(),
                self.max_attempts.into(),
            ),
            (
                "dead_letter.max_jobs",
                unlimited(cfg.dead_letter.max_jobs),
                self.dead_letter_max_jobs,
            ),
        ];
        for (key, asked, ceiling) in numbers {
            if asked > ceiling {
                let asked = if asked == u64::MAX {
                    "0 (no limit)".to_string()
                } else {
                    asked.to_string()
                };
                return Some(over(cfg, key, &asked, &ceiling.to_string()));
            }
        }
        let unlimited_age = |d: Duration| if d.is_zero() { Duration::MAX } else { d };
        let durations = [
            (
                "idempotency_window",
                cfg.idempotency_window,
                self.idempotency_window,
            ),
            ("lease_timeout", cfg.lease_timeout, self.lease_timeout),
            (
                "dead_letter.max_age",
                unlimited_age(cfg.dead_letter.max_age),
                self.dead_letter_max_age,
            ),
        ];
        for (key, asked, ceiling) in durations {
            if asked > ceiling {
                let asked = if asked == Duration::MAX {
                    "0 (no limit)".to_string()
                } else {
                    human::format_duration(asked)
                };
                return Some(over(cfg, key, &asked, &human::format_duration(ceiling)));
            }
        }
        None
    }
}

fn over(cfg: &QueueConfig, key: &str, asked: &str, ceiling: &str) -> String {
    let k = key.replace('.', "_");
    format!(
        "queue `{}` asks for {key} = {asked}, above the ceiling of {ceiling} for queues declared at run time ([realm.queue_limits.runtime_queue] {k}): ask for less, or declare the queue in the config file",
        cfg.name
    )
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            max_queues: default_max_queues(),
            allow_runtime_declare: true,
            max_push_many_jobs: default_max_push_many_jobs(),
            max_push_many_bytes: default_max_push_many_bytes(),
            runtime_max_jobs: default_runtime_max_jobs(),
            runtime_max_payload_bytes: default_runtime_max_payload_bytes(),
            runtime_max_idempotency_keys: default_runtime_max_idempotency_keys(),
            runtime_queue: RuntimeCeilings::default(),
            results: Default::default(),
            max_job_uri_bytes: default_max_job_uri_bytes(),
            min_free_disk_bytes: default_min_free_disk_bytes(),
        }
    }
}

impl QueueLimits {
    /// The problem with these values, if any (for check-config).
    pub fn check(&self) -> Result<(), String> {
        if self.max_push_many_jobs == 0 {
            return Err("max_push_many_jobs: must be at least 1".into());
        }
        if self.max_push_many_bytes == 0 {
            return Err("max_push_many_bytes: must be at least 1".into());
        }
        Ok(())
    }
}

fn default_max_queues() -> usize {
    1000
}
fn yes() -> bool {
    true
}
fn default_max_push_many_jobs() -> usize {
    1000
}
fn default_max_push_many_bytes() -> usize {
    16 * 1024 * 1024
}
fn default_runtime_max_jobs() -> u64 {
    100_000
}
fn default_runtime_max_payload_bytes() -> u64 {
    1024 * 1024 * 1024
}
fn default_runtime_max_idempotency_keys() -> u64 {
    100_000
}
fn default_max_job_uri_bytes() -> usize {
    512
}
fn default_min_free_disk_bytes() -> u64 {
    256 * 1024 * 1024
}
