//! `[realm.queue_limits]`: what clients may make the realm's queues hold
//! (docs/SECURITY.md "Queue state a client controls").

use serde::Deserialize;

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
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            max_queues: default_max_queues(),
            allow_runtime_declare: true,
            max_push_many_jobs: default_max_push_many_jobs(),
            max_push_many_bytes: default_max_push_many_bytes(),
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
