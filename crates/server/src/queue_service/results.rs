//! Completed jobs, remembered for a while, so that `switchyard.queue.job`
//! (and the bridge's `GET /queues/{name}/jobs/{id}`) can tell how a job
//! ended and what its worker answered.
//!
//! The engine deletes a job when it completes (only its counters remain),
//! and a job's result was until now only published on its `result_topic`.
//! This keeps, in memory, each completed job's queue, attempts, times and
//! result, bounded by `[realm.queue_limits.results]`: a result larger than
//! `max_result_bytes` (as JSON) is kept as its size only, every entry is
//! forgotten after `retention`, and all entries together hold at most
//! `max_total_bytes` (the oldest are forgotten first). A restart forgets
//! them: dead jobs stay in the store, completed ones are then unknown (404).
//!
//! In cluster mode ([`Completed::to_record`]) each one is also committed to
//! the realm's replicated queue log with the job's completion, and the node
//! that takes the queues over reads them back ([`Results::restore`]): a
//! takeover keeps them (a restart of the whole cluster too).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Deserialize;
use switchyard_proto::{Dict, Value};
use switchyard_queue::replicated::StoredResult;
use switchyard_queue::{human, Job, JobId};

/// `[realm.queue_limits.results]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResultRetention {
    /// How long a completed job (and its result) stays readable. Default
    /// 1 h; 0 = completed jobs are not remembered.
    #[serde(with = "human::duration")]
    pub retention: Duration,
    /// The largest result kept, in bytes of JSON; a larger one is reported
    /// as `result_truncated` with its size. Default 64 KiB.
    pub max_result_bytes: usize,
    /// Bytes all remembered completed jobs hold together (each counts its
    /// result and [`ENTRY_OVERHEAD`]); beyond, the oldest are forgotten.
    /// Default 16 MiB.
    pub max_total_bytes: usize,
}

impl Default for ResultRetention {
    fn default() -> Self {
        ResultRetention {
            retention: Duration::from_secs(3600),
            max_result_bytes: 64 * 1024,
            max_total_bytes: 16 << 20,
        }
    }
}

/// What one remembered job counts besides its result (its fields and the
/// maps' entries), so that many empty results are bounded too.
pub const ENTRY_OVERHEAD: usize = 256;

/// A completed job as remembered.
#[derive(Clone, Debug)]
pub struct Completed {
    pub id: JobId,
    pub queue: Arc<str>,
    pub attempts: u32,
    pub created_at_ms: u64,
    pub completed_at_ms: u64,
    /// `{args, kwargs}` of the worker's answer (`{status, body}` of an HTTP
    /// target's), or None when it was larger than `max_result_bytes`.
    pub result: Option<Dict>,
    /// The result's size in bytes of JSON.
    pub result_bytes: usize,
}

impl Completed {
    /// The answer of `switchyard.queue.job` for this job.
    pub fn to_dict(&self) -> Dict {
        let job = Dict::new()
            .with("id", self.id.0)
            .with("queue", &*self.queue)
            .with("created_at_ms", self.created_at_ms);
        let status = Dict::new()
            .with("state", "completed")
            .with("attempts", u64::from(self.attempts))
            .with("completed_at_ms", self.completed_at_ms)
            .with("last_error", Value::Null);
        Dict::new()
            .with("job", Value::Dict(job))
            .with("status", Value::Dict(status))
            .with(
                "result",
                self.result.clone().map(Value::Dict).unwrap_or(Value::Null),
            )
            .with("result_bytes", self.result_bytes as u64)
            .with("result_truncated", self.result.is_none())
    }
}

/// A completed job as committed to a replicated queue log (the job's id and
/// queue are the log record's own fields).
#[derive(serde::Serialize, Deserialize)]
struct Record {
    attempts: u32,
    created_at_ms: u64,
    completed_at_ms: u64,
    result: Option<Value>,
    result_bytes: usize,
}

impl Completed {
    /// This job as a record of the replicated queue log (JSON).
    pub fn to_record(&self) -> Vec<u8> {
        serde_json::to_vec(&Record {
            attempts: self.attempts,
            created_at_ms: self.created_at_ms,
            completed_at_ms: self.completed_at_ms,
            result: self.result.clone().map(Value::Dict),
            result_bytes: self.result_bytes,
        })
        .unwrap_or_default()
    }

    /// The job of a record of [`Completed::to_record`] (None if it does not decode).
    pub fn from_record(id: JobId, queue: Arc<str>, record: &[u8]) -> Option<Completed> {
        let r: Record = serde_json::from_slice(record).ok()?;
        let result = match r.result {
            None => None,
            Some(Value::Dict(d)) => Some(d),
            Some(_) => return None,
        };
        Some(Completed {
            id,
            queue,
            attempts: r.attempts,
            created_at_ms: r.created_at_ms,
            completed_at_ms: r.completed_at_ms,
            result,
            result_bytes: r.result_bytes,
        })
    }
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<JobId, (Instant, Completed, usize)>,
    /// Ids in the order they completed (so by expiry too).
    order: VecDeque<(Instant, JobId)>,
    total: usize,
}

/// The remembered completed jobs of one realm.
pub struct Results {
    limits: ResultRetention,
    inner: Mutex<Inner>,
}

impl Results {
    pub fn new(limits: ResultRetention) -> Results {
        Results {
            limits,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Remembers that `job` completed after `attempts` with `result`.
    #[cfg(test)]
    pub fn record(&self, job: &Job, attempts: u32, completed_at_ms: u64, result: Dict) {
        if let Some(entry) = self.entry(job, attempts, completed_at_ms, result) {
            self.insert(entry);
        }
    }

    /// How long a completed job stays readable.
    pub fn retention(&self) -> Duration {
        self.limits.retention
    }

    /// The entry [`Results::insert`] remembers for `job`, completed after
    /// `attempts` with `result` (None when results are not kept).
    pub fn entry(
        &self,
        job: &Job,
        attempts: u32,
        completed_at_ms: u64,
        result: Dict,
    ) -> Option<Completed> {
        if self.limits.retention.is_zero() {
            return None;
        }
        let value = Value::Dict(result);
        let result_bytes = json_len(&value);
        let result = match value {
            Value::Dict(d) if result_bytes <= self.limits.max_result_bytes => Some(d),
            _ => None,
        };
        Some(Completed {
            id: job.id,
            queue: job.queue.clone(),
            attempts,
            created_at_ms: job.created_at_ms,
            completed_at_ms,
            result,
            result_bytes,
        })
    }

    /// Remembers a completed job (from [`Results::entry`]).
    pub fn insert(&self, entry: Completed) {
        self.insert_at(entry, Instant::now());
    }

    /// Remembers the completed jobs of a replicated log (oldest first) that
    /// have not expired at `now_ms` (the clock of their completion times);
    /// each expires `retention` after it completed, not after the restore.
    pub fn restore(&self, records: Vec<StoredResult>, now_ms: u64) {
        if self.limits.retention.is_zero() {
            return;
        }
        let now = Instant::now();
        for r in records {
            let age = Duration::from_millis(now_ms.saturating_sub(r.at_ms));
            if age >= self.limits.retention {
                continue;
            }
            let Some(entry) = Completed::from_record(r.id, Arc::from(r.queue), &r.record) else {
                tracing::warn!(job = %r.id, "a completed job's record in the queue log does not decode; skipped");
                continue;
            };
            self.insert_at(entry, now.checked_sub(age).unwrap_or(now));
        }
    }

    fn insert_at(&self, entry: Completed, now: Instant) {
        let cost = ENTRY_OVERHEAD + entry.result.as_ref().map_or(0, |_| entry.result_bytes);
        let id = entry.id;
        let mut inner = self.inner.lock();
        if let Some((_, _, old)) = inner.by_id.insert(id, (now, entry, cost)) {
            inner.total -= old;
        }
        inner.total += cost;
        inner.order.push_back((now, id));
        self.evict(&mut inner, Instant::now());
    }

    /// The completed job `id`, if it is remembered.
    pub fn get(&self, id: JobId) -> Option<Completed> {
        let mut inner = self.inner.lock();
        self.evict(&mut inner, Instant::now());
        inner.by_id.get(&id).map(|(_, c, _)| c.clone())
    }

    /// Forgets every job of `queue` (it was deleted).
    pub fn forget_queue(&self, queue: &str) {
        let mut inner = self.inner.lock();
        let Inner { by_id, total, .. } = &mut *inner;
        by_id.retain(|_, (_, c, cost)| {
            let keep = &*c.queue != queue;
            if !keep {
                *total -= *cost;
            }
            keep
        });
    }

    fn evict(&self, inner: &mut Inner, now: Instant) {
        while let Some(&(at, id)) = inner.order.front() {
            let expired = now.saturating_duration_since(at) >= self.limits.retention;
            if !expired && inner.total <= self.limits.max_total_bytes {
                break;
            }
            inner.order.pop_front();
            // Only the entry recorded at `at` (a job completed again later,
            // after a requeue, has a newer one).
            if inner.by_id.get(&id).is_some_and(|(t, _, _)| *t == at) {
                if let Some((_, _, cost)) = inner.by_id.remove(&id) {
                    inner.total -= cost;
                }
            }
        }
    }
}

/// The length of `value` as JSON, counted without building the text.
fn json_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    match serde_json::to_writer(&mut n, value) {
        Ok(()) => n.0,
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_queue::{Priority, Target};

    fn job(id: u64) -> Job {
        Job {
            id: JobId(id),
            queue: Arc::from("q"),
            payload_bytes: 0,
            target: Target::Procedure("p".into()),
            priority: Priority::default(),
            created_at_ms: 1,
            max_attempts: None,
            retry: None,
            idempotency_key: None,
            result_topic: None,
        }
    }

    fn result(n: usize) -> Dict {
        Dict::new().with("args", Value::List(vec![Value::Str("x".repeat(n))]))
    }

    #[test]
    fn json_len_is_the_length_of_the_json_text() {
        for v in [
            Value::Dict(result(0)),
            Value::Dict(result(300)),
            Value::Dict(
                Dict::new()
                    .with("s", "a \"quoted\" \u{e9}\n")
                    .with("n", -3i64),
            ),
        ] {
            assert_eq!(json_len(&v), serde_json::to_vec(&v).expect("json").len());
        }
    }

    #[test]
    fn results_are_capped_and_bounded_in_total() {
        let r = Results::new(ResultRetention {
            retention: Duration::from_secs(60),
            max_result_bytes: 100,
            max_total_bytes: 3 * ENTRY_OVERHEAD + 100,
        });
        r.record(&job(1), 1, 10, result(10));
        let one = r.get(JobId(1)).expect("remembered");
        assert!(one.result.is_some());
        assert_eq!(one.attempts, 1);
        r.record(&job(2), 2, 11, result(1000));
        let two = r.get(JobId(2)).expect("remembered");
        assert!(two.result.is_none(), "over max_result_bytes");
        assert!(two.result_bytes > 1000);
        assert_eq!(two.to_dict().get_bool("result_truncated"), Some(true));
        // Two more: the total is exceeded, the oldest go first.
        r.record(&job(3), 1, 12, result(50));
        r.record(&job(4), 1, 13, result(50));
        assert!(r.get(JobId(1)).is_none());
        assert!(r.get(JobId(4)).is_some());
        r.forget_queue("q");
        assert!(r.get(JobId(4)).is_none());
        assert_eq!(r.inner.lock().total, 0);
    }

    #[test]
    fn a_record_of_the_log_gives_the_same_job_back() {
        let r = Results::new(ResultRetention {
            retention: Duration::from_secs(60),
            max_result_bytes: 100,
            ..ResultRetention::default()
        });
        let small = r.entry(&job(1), 2, 10_000, result(10)).expect("kept");
        let large = r.entry(&job(2), 1, 20_000, result(1000)).expect("kept");
        let stored = |c: &Completed, at_ms| StoredResult {
            id: c.id,
            queue: c.queue.to_string(),
            at_ms,
            expires_ms: at_ms + 60_000,
            record: c.to_record(),
        };
        let other = Results::new(ResultRetention {
            retention: Duration::from_secs(60),
            ..ResultRetention::default()
        });
        // Job 1 completed 70 s before the restore: expired; job 2 10 s before.
        other.restore(vec![stored(&small, 10_000), stored(&large, 70_000)], 80_000);
        assert!(other.get(JobId(1)).is_none());
        let two = other.get(JobId(2)).expect("restored");
        assert_eq!(two.to_dict(), large.to_dict());
        other.restore(vec![stored(&small, 75_000)], 80_000);
        assert_eq!(
            other.get(JobId(1)).expect("restored").to_dict(),
            small.to_dict()
        );
    }

    #[test]
    fn results_expire_and_zero_retention_keeps_none() {
        let r = Results::new(ResultRetention {
            retention: Duration::from_millis(1),
            ..ResultRetention::default()
        });
        r.record(&job(1), 1, 10, result(1));
        std::thread::sleep(Duration::from_millis(5));
        assert!(r.get(JobId(1)).is_none());
        let none = Results::new(ResultRetention {
            retention: Duration::ZERO,
            ..ResultRetention::default()
        });
        none.record(&job(1), 1, 10, result(1));
        assert!(none.get(JobId(1)).is_none());
    }
}
