//! The durable side of the queues: the [`Store`] trait.
//!
//! The in-memory engine ([`crate::Queues`]) holds the working state; a store only has to
//! 1. hand everything back at startup ([`Store::load`]), and
//! 2. apply batches of mutations atomically and durably, in submission order
//!    ([`Store::submit`]), telling the submitter when its batch is durable.
//!
//! The embedded implementation is [`crate::RedbStore`] (group commit over redb). A NATS
//! JetStream store for cluster mode is meant to sit beside it.

use std::sync::Arc;
use std::time::Duration;

use crate::config::QueueConfig;
use crate::error::StoreError;
use crate::model::{Job, JobId, JobStatus, Payload};

/// Called once the batch it was submitted with is durable (`Ok`) or can never be (`Err`).
/// It runs on the store's writer thread: it must be quick and must not block on the store.
pub type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send + 'static>;

/// Per-queue lifetime counters, persisted with the queue.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// Jobs completed.
    pub completed: u64,
    /// Failed attempts that were scheduled for another attempt.
    pub retried: u64,
    /// Jobs moved to the dead letters.
    pub dead_lettered: u64,
}

/// One durable change.
#[derive(Clone, Debug)]
pub enum Mutation {
    /// Create or replace a queue's configuration.
    PutQueue(Arc<QueueConfig>),
    /// Replace a queue's counters (absolute values).
    PutCounters {
        /// Queue name.
        queue: Arc<str>,
        /// New values.
        counters: Counters,
    },
    /// Create or replace a job record. `status.state` is never `Leased` here (a `Leased` state is
    /// stored as waiting): leases are [`Mutation::PutLease`] rows.
    PutJob {
        /// The job.
        job: Arc<Job>,
        /// Its status.
        status: JobStatus,
    },
    /// Store a new job's payload (a row of its own, written once, read at dispatch).
    PutPayload {
        /// The job.
        id: JobId,
        /// Its payload.
        payload: Payload,
    },
    /// Record that a job is leased (a crash then shows the attempt was started).
    PutLease {
        /// The job.
        id: JobId,
        /// Lease epoch.
        epoch: u64,
        /// Lease deadline, unix ms.
        deadline_ms: u64,
        /// Attempts started, this one included.
        attempts: u32,
    },
    /// Delete a job's lease row.
    RemoveLease(JobId),
    /// Delete a job (and its lease row and payload).
    RemoveJob(JobId),
    /// Remember an idempotency key until `expires_ms`.
    PutIdempotencyKey {
        /// Queue name (keys are per queue).
        queue: Arc<str>,
        /// The key.
        key: String,
        /// The job first pushed with it.
        job: JobId,
        /// When it is forgotten, unix ms.
        expires_ms: u64,
    },
    /// Delete a queue: its configuration, its counters and its idempotency keys (its jobs are
    /// deleted by the `RemoveJob` mutations before it).
    RemoveQueue(Arc<str>),
    /// Forget an idempotency key.
    RemoveIdempotencyKey {
        /// Queue name.
        queue: Arc<str>,
        /// The key.
        key: String,
    },
    /// A completed job's record (its result, as its caller encodes it), committed with the
    /// completion ([`crate::Queues::complete_with`]). A replicated store keeps it, so that the
    /// node that takes the queues over can still answer for the job (cluster mode), until
    /// `expires_ms` or until its queue is removed; the embedded store ignores it (its results
    /// live in memory).
    PutResult {
        /// The job.
        id: JobId,
        /// Its queue.
        queue: Arc<str>,
        /// When it completed, unix ms (the log's clock: older records expire against it).
        at_ms: u64,
        /// When it is forgotten, unix ms.
        expires_ms: u64,
        /// The record.
        record: bytes::Bytes,
    },
}

/// Mutations committed together, all or nothing, and an optional completion.
pub struct Batch {
    /// Applied in order, in one transaction.
    pub mutations: Vec<Mutation>,
    /// Called once the batch is durable (fsync'd) or has failed.
    pub done: Option<Done>,
    /// Its commit must be fsync'd at once (pushes, operator actions). Otherwise (leases,
    /// completions, failures) it may be committed without an fsync of its own; the next durable
    /// commit, forced at most [`MAX_NON_DURABLE`] later, persists it (and then runs `done`).
    pub durable: bool,
}

/// Longest a non-durable commit waits for a durable one (the writer forces one then).
pub const MAX_NON_DURABLE: std::time::Duration = std::time::Duration::from_millis(50);

impl Batch {
    /// A durable batch.
    pub fn durable(mutations: Vec<Mutation>, done: Option<Done>) -> Batch {
        Batch {
            mutations,
            done,
            durable: true,
        }
    }

    /// A batch without completion that need not be fsync'd at once (still ordered, and
    /// durable within [`MAX_NON_DURABLE`]).
    pub fn detached(mutations: Vec<Mutation>) -> Batch {
        Batch {
            mutations,
            done: None,
            durable: false,
        }
    }
}

/// A remembered idempotency key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// Queue name.
    pub queue: String,
    /// The key.
    pub key: String,
    /// The job first pushed with it.
    pub job: JobId,
    /// When it is forgotten, unix ms.
    pub expires_ms: u64,
}

/// A lease row as stored.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct StoredLease {
    /// Lease epoch.
    pub epoch: u64,
    /// Deadline, unix ms.
    pub deadline_ms: u64,
    /// Attempts started.
    pub attempts: u32,
}

/// Everything a store holds, as loaded at startup.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// An upper bound of every job id ever stored (0 if none): new ids start above it. (The
    /// embedded store reserves ids in blocks, so this may be above the highest id used.)
    pub max_job_id: u64,
    /// Declared queues with their counters.
    pub queues: Vec<(QueueConfig, Counters)>,
    /// Every job (without its payload, which stays in the store), with the lease row applied
    /// (such jobs are `Leased` in the status).
    pub jobs: Vec<(Arc<Job>, JobStatus)>,
    /// Every remembered idempotency key, expired ones included (the engine prunes them).
    pub idempotency_keys: Vec<IdempotencyRecord>,
}

/// Counters of the store's write side.
#[derive(Clone, Debug, Default)]
pub struct StoreStats {
    /// Transactions committed.
    pub commits: u64,
    /// fsyncs: durable commits, and the empty durable commits that persist non-durable ones.
    pub syncs: u64,
    /// Batches submitted and committed (a commit carries one or more batches).
    pub batches: u64,
    /// Mutations committed.
    pub mutations: u64,
    /// Most batches carried by a single commit.
    pub largest_commit: u64,
    /// Mutations elided because a later mutation of the same commit undid them (a lease row
    /// written and deleted in one commit, a record rewritten and then deleted).
    pub coalesced: u64,
    /// Time spent committing (including fsync).
    pub commit_time: Duration,
    /// Set while the store is failed; every operation meanwhile gets this error.
    pub failure: Option<StoreError>,
    /// Times a failed store reopened its file and took writes again.
    pub recoveries: u64,
}

impl StoreStats {
    /// Mean batches per commit.
    pub fn mean_batches_per_commit(&self) -> f64 {
        if self.commits == 0 {
            0.0
        } else {
            self.batches as f64 / self.commits as f64
        }
    }
}

/// A durable store for queues.
pub trait Store: Send + Sync + 'static {
    /// Reads everything. Called once at startup, before any [`Store::submit`].
    fn load(&self, now_ms: u64) -> Result<Snapshot, StoreError>;

    /// Queues a batch. Batches are applied in submission order; each is atomic; when `done` is
    /// called with `Ok` the batch is durable. On `Err` the batch was not queued and `done` is
    /// dropped without being called (so a captured oneshot sender reports "closed").
    /// Never calls `done` from inside `submit`.
    fn submit(&self, batch: Batch) -> Result<(), StoreError>;

    /// Reads the payloads of committed jobs (`None` for a job that has none: deleted, or not
    /// committed yet), in the order of `ids`, from the last committed state. Called at
    /// dispatch and by listings; never holds a queue lock.
    fn payloads(&self, ids: &[JobId]) -> Result<Vec<Option<Payload>>, StoreError>;

    /// Write-side counters.
    fn stats(&self) -> StoreStats;

    /// The error that makes the store refuse writes, while it is failed. Cheap (one atomic
    /// load) while it is not.
    fn failure(&self) -> Option<StoreError>;

    /// Commits what is queued, stops the writer and releases the store. Later submits fail with
    /// [`StoreError::Closed`]. Idempotent.
    fn close(&self);
}
