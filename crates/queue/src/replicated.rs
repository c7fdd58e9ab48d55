//! The pure half of a log-structured [`Store`](crate::Store): what a store that keeps the
//! queues as an append-only, replicated log (cluster mode's NATS JetStream stream) needs from
//! this crate, without any I/O.
//!
//! * [`encode_mutations`] turns the mutations of one or more batches into one log entry's bytes;
//! * [`Materialized`] is the state such a log describes: it applies entries
//!   ([`Materialized::apply`]) in log order, answers [`Store::load`](crate::Store::load) with a
//!   [`Snapshot`] and [`Store::payloads`](crate::Store::payloads), and writes itself out as one
//!   entry ([`Materialized::checkpoint`]) that a fresh `Materialized` applies to the same state,
//!   so the log can be compacted (the entries before a checkpoint are no longer needed).
//!
//! Applying the entries of the log, in order, gives the state the embedded redb store would hold
//! after the same batches: the rules are the same (a removed job takes its payload and lease
//! with it; a removed queue takes its counters and idempotency keys; ids only grow).
//!
//! # Entry format
//! A sequence of records, each a tag byte and its fields: the encoding of store mutations that
//! the embedded store's write-ahead log shares (`entry`, where the records are listed), plus
//! two records only this log holds: `MaxJobId` (checkpoints: ids never go down, even when the
//! highest job is gone) and `PutResult` (a completed job's record).
//!
//! Completed jobs' records ([`Mutation::PutResult`]) are kept in completion order, bounded:
//! a record is dropped once a later one completed at or after its `expires_ms`, and the oldest
//! go first beyond the result budget ([`Materialized::with_result_budget`]). Both rules only
//! read the log, so every reader of the same log keeps the same records.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use crate::codec::{self, Reader};
use crate::config::QueueConfig;
use crate::entry::{self, Record};
use crate::error::StoreError;
use crate::model::{JobId, JobState, Payload};
use crate::store::{Counters, IdempotencyRecord, Mutation, Snapshot, StoredLease};

/// The default result budget of a [`Materialized`] state (bytes of records).
pub const DEFAULT_RESULT_BUDGET: u64 = 16 << 20;
/// What one kept result counts besides its record (so that many empty records are bounded).
const RESULT_OVERHEAD: u64 = 64;

/// Appends the records of `mutations` to `out` (one log entry may carry several batches: append
/// each in order).
pub fn encode_mutations(mutations: &[Mutation], out: &mut Vec<u8>) -> Result<(), StoreError> {
    let mut buf = Vec::new();
    for m in mutations {
        entry::encode_mutation(m, out, &mut buf)?;
    }
    Ok(())
}

/// A completed job's record, as kept by a [`Materialized`] state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredResult {
    /// The job.
    pub id: JobId,
    /// Its queue.
    pub queue: String,
    /// When it completed, unix ms.
    pub at_ms: u64,
    /// When it is forgotten, unix ms.
    pub expires_ms: u64,
    /// The record, as its writer encoded it.
    pub record: Vec<u8>,
}

impl StoredResult {
    fn cost(&self) -> u64 {
        self.record.len() as u64 + self.queue.len() as u64 + RESULT_OVERHEAD
    }
}

/// The state a log of entries describes (see the module documentation).
#[derive(Clone, Debug)]
pub struct Materialized {
    max_job_id: u64,
    /// Queue name -> configuration (JSON, decoded at load).
    queues: BTreeMap<String, Vec<u8>>,
    counters: HashMap<String, Counters>,
    /// Job id -> job record (decoded at load, with the clock of the load).
    jobs: HashMap<u64, Vec<u8>>,
    /// Job id -> payload row.
    payloads: HashMap<u64, Vec<u8>>,
    leases: HashMap<u64, StoredLease>,
    keys: BTreeMap<(String, String), (u64, u64)>,
    payload_bytes: u64,
    /// Completed jobs' records by id, and their ids in completion order.
    results: HashMap<u64, StoredResult>,
    result_order: VecDeque<(u64, u64)>,
    result_bytes: u64,
    result_budget: u64,
}

impl Default for Materialized {
    fn default() -> Materialized {
        Materialized {
            max_job_id: 0,
            queues: BTreeMap::new(),
            counters: HashMap::new(),
            jobs: HashMap::new(),
            payloads: HashMap::new(),
            leases: HashMap::new(),
            keys: BTreeMap::new(),
            payload_bytes: 0,
            results: HashMap::new(),
            result_order: VecDeque::new(),
            result_bytes: 0,
            result_budget: DEFAULT_RESULT_BUDGET,
        }
    }
}

impl Materialized {
    /// An empty state.
    pub fn new() -> Materialized {
        Materialized::default()
    }

    /// An empty state that keeps at most `bytes` of completed jobs' records (each counts its
    /// record, its queue name and a small overhead); the oldest go first.
    pub fn with_result_budget(bytes: u64) -> Materialized {
        Materialized {
            result_budget: bytes,
            ..Materialized::default()
        }
    }

    fn put_result(&mut self, r: StoredResult) {
        let (id, at) = (r.id.0, r.at_ms);
        self.result_bytes += r.cost();
        if let Some(old) = self.results.insert(id, r) {
            self.result_bytes -= old.cost();
        }
        self.result_order.push_back((id, at));
        // Expired (by the log's own clock) or over the budget: the oldest go.
        while let Some(&(front, front_at)) = self.result_order.front() {
            let current = self
                .results
                .get(&front)
                .filter(|r| r.at_ms == front_at)
                .map(|r| r.expires_ms);
            let drop = match current {
                None => true,
                Some(expires) => expires <= at || self.result_bytes > self.result_budget,
            };
            if !drop {
                break;
            }
            self.result_order.pop_front();
            if current.is_some() {
                if let Some(old) = self.results.remove(&front) {
                    self.result_bytes -= old.cost();
                }
            }
        }
    }

    /// The completed jobs' records kept, oldest first.
    pub fn results(&self) -> Vec<StoredResult> {
        self.result_order
            .iter()
            .filter_map(|(id, at)| self.results.get(id).filter(|r| r.at_ms == *at))
            .cloned()
            .collect()
    }

    /// Applies one entry (the bytes of [`encode_mutations`] or of a checkpoint). An entry that
    /// does not decode is an error and changes nothing it had not applied before the bad record.
    pub fn apply(&mut self, entry: &[u8]) -> Result<(), StoreError> {
        for record in entry::records(entry) {
            match record? {
                Record::PutQueue(json) => {
                    let cfg: QueueConfig = serde_json::from_slice(json).map_err(|e| {
                        StoreError::corrupt(format!("queue configuration in the log: {e}"))
                    })?;
                    self.queues.insert(cfg.name.clone(), json.to_vec());
                }
                Record::PutCounters { queue, counters } => {
                    self.counters.insert(queue, counters);
                }
                Record::PutJob(record) => {
                    let id = job_id_of(record)?;
                    self.max_job_id = self.max_job_id.max(id);
                    self.jobs.insert(id, record.to_vec());
                }
                Record::PutPayload { id, row } => {
                    self.payload_bytes += row.len() as u64;
                    if let Some(old) = self.payloads.insert(id, row.to_vec()) {
                        self.payload_bytes -= old.len() as u64;
                    }
                }
                Record::PutLease {
                    id,
                    epoch,
                    deadline_ms,
                    attempts,
                } => {
                    let lease = StoredLease {
                        epoch,
                        deadline_ms,
                        attempts,
                    };
                    self.leases.insert(id, lease);
                }
                Record::RemoveLease(id) => {
                    self.leases.remove(&id);
                }
                Record::RemoveJob(id) => {
                    self.jobs.remove(&id);
                    self.leases.remove(&id);
                    if let Some(old) = self.payloads.remove(&id) {
                        self.payload_bytes -= old.len() as u64;
                    }
                }
                Record::PutKey {
                    queue,
                    key,
                    job,
                    expires_ms,
                } => {
                    self.max_job_id = self.max_job_id.max(job);
                    self.keys.insert((queue, key), (job, expires_ms));
                }
                Record::RemoveQueue(name) => {
                    self.queues.remove(&name);
                    self.counters.remove(&name);
                    let mut freed = 0;
                    self.results.retain(|_, r| {
                        let keep = r.queue != name;
                        if !keep {
                            freed += r.cost();
                        }
                        keep
                    });
                    self.result_bytes -= freed;
                    let keys: Vec<(String, String)> = self
                        .keys
                        .range((name.clone(), String::new())..)
                        .take_while(|((q, _), _)| *q == name)
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in keys {
                        self.keys.remove(&k);
                    }
                }
                Record::RemoveKey { queue, key } => {
                    self.keys.remove(&(queue, key));
                }
                Record::MaxJobId(max) => {
                    self.max_job_id = self.max_job_id.max(max);
                }
                Record::PutResult {
                    id,
                    queue,
                    at_ms,
                    expires_ms,
                    record,
                } => {
                    let result = StoredResult {
                        id: JobId(id),
                        queue,
                        at_ms,
                        expires_ms,
                        record: record.to_vec(),
                    };
                    self.put_result(result);
                }
            }
        }
        Ok(())
    }

    /// Everything, as [`Store::load`](crate::Store::load) returns it (job records are decoded
    /// with `now_ms`).
    pub fn snapshot(&self, now_ms: u64) -> Result<Snapshot, StoreError> {
        let mut snap = Snapshot {
            max_job_id: self.max_job_id,
            ..Snapshot::default()
        };
        for (name, json) in &self.queues {
            let cfg: QueueConfig = serde_json::from_slice(json).map_err(|e| {
                StoreError::corrupt(format!("configuration of queue `{name}`: {e}"))
            })?;
            let counters = self.counters.get(name).copied().unwrap_or_default();
            snap.queues.push((cfg, counters));
        }
        let mut ids: Vec<&u64> = self.jobs.keys().collect();
        ids.sort_unstable();
        for id in ids {
            let codec::Decoded {
                job, mut status, ..
            } = codec::decode_job(&self.jobs[id], now_ms)?;
            if let Some(l) = self.leases.get(id) {
                if !matches!(status.state, JobState::Dead { .. }) {
                    status.state = JobState::Leased {
                        epoch: l.epoch,
                        deadline_ms: l.deadline_ms,
                    };
                    status.attempts = l.attempts;
                }
                status.epoch = status.epoch.max(l.epoch);
            }
            snap.jobs.push((Arc::new(job), status));
        }
        for ((queue, key), (job, expires_ms)) in &self.keys {
            snap.idempotency_keys.push(IdempotencyRecord {
                queue: queue.clone(),
                key: key.clone(),
                job: JobId(*job),
                expires_ms: *expires_ms,
            });
        }
        Ok(snap)
    }

    /// The payloads of `ids` (`None` for a job without one), in order.
    pub fn payloads(&self, ids: &[JobId]) -> Result<Vec<Option<Payload>>, StoreError> {
        ids.iter()
            .map(|id| {
                self.payloads
                    .get(&id.0)
                    .map(|row| codec::decode_payload(row.as_slice()))
                    .transpose()
            })
            .collect()
    }

    /// The whole state as one entry: applied to an empty `Materialized`, it gives this state.
    pub fn checkpoint(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity((self.payload_bytes + self.result_bytes) as usize + 1024);
        entry::put_max_job_id(&mut out, self.max_job_id);
        for json in self.queues.values() {
            entry::put_queue(&mut out, json);
        }
        for (queue, c) in &self.counters {
            entry::put_counters(&mut out, queue, c);
        }
        for record in self.jobs.values() {
            entry::put_job(&mut out, record);
        }
        for (id, row) in &self.payloads {
            entry::put_payload(&mut out, *id, row);
        }
        for (id, l) in &self.leases {
            entry::put_lease(&mut out, *id, l.epoch, l.deadline_ms, l.attempts);
        }
        for ((queue, key), (job, expires)) in &self.keys {
            entry::put_key(&mut out, queue, key, *job, *expires);
        }
        for r in self.results() {
            entry::put_result(&mut out, r.id.0, &r.queue, r.at_ms, r.expires_ms, &r.record);
        }
        out
    }

    /// Jobs held.
    pub fn jobs(&self) -> usize {
        self.jobs.len()
    }

    /// Payload bytes held (the payload rows).
    pub fn payload_bytes(&self) -> u64 {
        self.payload_bytes
    }
}

/// The id of a job record (its bytes 1..9, after the version byte).
fn job_id_of(record: &[u8]) -> Result<u64, StoreError> {
    let mut r = Reader {
        data: record,
        pos: 0,
    };
    r.u8("job record version")?;
    r.u64("job id")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Encoding, Job, JobStatus, Priority, Target};
    use bytes::Bytes;

    fn job(id: u64, queue: &str) -> (Arc<Job>, JobStatus) {
        (
            Arc::new(Job {
                id: JobId(id),
                queue: queue.into(),
                payload_bytes: 3,
                target: Target::Procedure("com.example.work".into()),
                priority: Priority::default(),
                created_at_ms: 1,
                max_attempts: None,
                retry: None,
                idempotency_key: Some("k".into()),
                result_topic: None,
            }),
            JobStatus {
                state: JobState::Ready,
                run_at_ms: 1,
                attempts: 0,
                epoch: 0,
                last_error: None,
            },
        )
    }

    fn payload() -> Payload {
        Payload {
            encoding: Encoding::default(),
            bytes: Bytes::from_static(b"abc"),
        }
    }

    fn entry(muts: &[Mutation]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_mutations(muts, &mut out).unwrap();
        out
    }

    #[test]
    fn the_log_gives_the_state_and_a_checkpoint_gives_it_again() {
        let cfg: QueueConfig =
            toml::from_str("name = \"q\"\ntarget = \"com.example.work\"").expect("config");
        let (j1, s1) = job(1, "q");
        let (j7, s7) = job(7, "q");
        let mut m = Materialized::new();
        m.apply(&entry(&[
            Mutation::PutQueue(std::sync::Arc::new(cfg.clone())),
            Mutation::PutJob {
                job: j1.clone(),
                status: s1.clone(),
            },
            Mutation::PutPayload {
                id: JobId(1),
                payload: payload(),
            },
            Mutation::PutIdempotencyKey {
                queue: "q".into(),
                key: "k".into(),
                job: JobId(1),
                expires_ms: 99,
            },
        ]))
        .unwrap();
        m.apply(&entry(&[
            Mutation::PutJob {
                job: j7,
                status: s7,
            },
            Mutation::PutPayload {
                id: JobId(7),
                payload: payload(),
            },
            Mutation::PutLease {
                id: JobId(1),
                epoch: 4,
                deadline_ms: 50,
                attempts: 1,
            },
        ]))
        .unwrap();
        // Job 7 completes: its payload goes, and the counters move.
        m.apply(&entry(&[
            Mutation::RemoveJob(JobId(7)),
            Mutation::PutCounters {
                queue: "q".into(),
                counters: Counters {
                    completed: 1,
                    retried: 0,
                    dead_lettered: 0,
                },
            },
        ]))
        .unwrap();
        let check = |m: &Materialized| {
            let snap = m.snapshot(10).unwrap();
            assert_eq!(snap.max_job_id, 7, "ids never go down");
            assert_eq!(snap.queues.len(), 1);
            assert_eq!(snap.queues[0].1.completed, 1);
            assert_eq!(snap.jobs.len(), 1);
            assert_eq!(snap.jobs[0].0.id, JobId(1));
            assert!(matches!(
                snap.jobs[0].1.state,
                JobState::Leased { epoch: 4, .. }
            ));
            assert_eq!(snap.idempotency_keys.len(), 1);
            let p = m.payloads(&[JobId(1), JobId(7)]).unwrap();
            assert_eq!(
                p[0].as_ref().map(|p| p.bytes.clone()),
                Some(payload().bytes)
            );
            assert!(p[1].is_none());
            assert_eq!(m.payload_bytes(), 4);
        };
        check(&m);
        let mut again = Materialized::new();
        again.apply(&m.checkpoint()).unwrap();
        check(&again);
        // A removed queue takes its keys and counters with it.
        again
            .apply(&entry(&[
                Mutation::RemoveJob(JobId(1)),
                Mutation::RemoveQueue("q".into()),
            ]))
            .unwrap();
        let snap = again.snapshot(10).unwrap();
        assert!(snap.queues.is_empty() && snap.jobs.is_empty());
        assert!(snap.idempotency_keys.is_empty());
        assert_eq!(snap.max_job_id, 7);
    }

    fn result(id: u64, queue: &str, at_ms: u64, expires_ms: u64, size: usize) -> Mutation {
        Mutation::PutResult {
            id: JobId(id),
            queue: queue.into(),
            at_ms,
            expires_ms,
            record: Bytes::from(vec![b'r'; size]),
        }
    }

    fn ids(m: &Materialized) -> Vec<u64> {
        m.results().iter().map(|r| r.id.0).collect()
    }

    #[test]
    fn completed_jobs_records_are_kept_bounded_and_checkpointed() {
        let mut m = Materialized::with_result_budget(1000);
        m.apply(&entry(&[
            result(1, "q", 10, 100, 10),
            result(2, "p", 20, 200, 10),
        ]))
        .unwrap();
        // A checkpoint gives the same records, in the same order.
        let mut again = Materialized::with_result_budget(1000);
        again.apply(&m.checkpoint()).unwrap();
        assert_eq!(again.results(), m.results());
        assert_eq!(ids(&again), vec![1, 2]);
        assert_eq!(again.results()[0].record, vec![b'r'; 10]);
        // A record completed at 100 or later: job 1 (expires at 100) is forgotten.
        m.apply(&entry(&[result(3, "q", 100, 1000, 10)])).unwrap();
        assert_eq!(ids(&m), vec![2, 3]);
        // Over the budget, the oldest go first.
        m.apply(&entry(&[result(4, "q", 101, 1000, 800)])).unwrap();
        assert_eq!(ids(&m), vec![3, 4]);
        // A removed queue takes its records.
        m.apply(&entry(&[Mutation::RemoveQueue("q".into())]))
            .unwrap();
        assert!(m.results().is_empty());
        m.apply(&entry(&[result(5, "p", 102, 1000, 10)])).unwrap();
        assert_eq!(ids(&m), vec![5]);
    }

    #[test]
    fn a_bad_entry_is_an_error() {
        assert!(Materialized::new().apply(&[42]).is_err());
        assert!(Materialized::new().apply(&[5, 1, 2]).is_err());
    }
}
