//! What the queues declared at run time hold together, against the realm-wide bounds
//! ([`crate::Options::runtime_max_jobs`], `runtime_max_payload_bytes`,
//! `runtime_max_idempotency_keys`). Queues of the config file are the operator's and are not
//! counted.

use std::sync::atomic::{AtomicU64, Ordering};

/// Jobs (waiting, in flight or dead, and pushed jobs still committing), their payload bytes and
/// idempotency keys of every run-time queue of one store, with the bounds (0 = no limit).
#[derive(Debug, Default)]
pub(crate) struct RuntimeUsage {
    pub(crate) jobs: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) keys: AtomicU64,
    pub(crate) max_jobs: u64,
    pub(crate) max_bytes: u64,
    pub(crate) max_keys: u64,
}

impl RuntimeUsage {
    pub(crate) fn new(max_jobs: u64, max_bytes: u64, max_keys: u64) -> RuntimeUsage {
        RuntimeUsage {
            max_jobs,
            max_bytes,
            max_keys,
            ..RuntimeUsage::default()
        }
    }

    /// Reserves room for `jobs` jobs of `bytes` payload bytes, or says which bound they pass:
    /// `(what, held, limit, config key)`.
    pub(crate) fn reserve(
        &self,
        jobs: u64,
        bytes: u64,
    ) -> Result<(), (&'static str, u64, u64, &'static str)> {
        if let Err(held) = try_add(&self.jobs, jobs, self.max_jobs) {
            return Err(("jobs", held, self.max_jobs, "runtime_max_jobs"));
        }
        if let Err(held) = try_add(&self.bytes, bytes, self.max_bytes) {
            self.jobs.fetch_sub(jobs, Ordering::Relaxed);
            return Err((
                "payload bytes",
                held,
                self.max_bytes,
                "runtime_max_payload_bytes",
            ));
        }
        Ok(())
    }

    /// Gives back room for jobs that left (or were never created).
    pub(crate) fn release(&self, jobs: u64, bytes: u64) {
        sub(&self.jobs, jobs);
        sub(&self.bytes, bytes);
    }

    /// Whether the run-time queues hold their limit of idempotency keys.
    pub(crate) fn keys_full(&self) -> bool {
        self.max_keys > 0 && self.keys.load(Ordering::Relaxed) >= self.max_keys
    }

    pub(crate) fn add_keys(&self, n: u64) {
        self.keys.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn forget_keys(&self, n: u64) {
        sub(&self.keys, n);
    }
}

/// Adds `n` to `counter` unless that passes `limit` (0 = no limit); the error is what it held.
fn try_add(counter: &AtomicU64, n: u64, limit: u64) -> Result<(), u64> {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
            let after = held.saturating_add(n);
            (limit == 0 || after <= limit).then_some(after)
        })
        .map(|_| ())
}

/// Subtracts `n` from `counter`, stopping at 0.
pub(crate) fn sub(counter: &AtomicU64, n: u64) {
    let _ = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
        Some(held.saturating_sub(n))
    });
}
