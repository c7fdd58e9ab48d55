//! [`Queues`]: the API the router calls.
//!
//! # Concurrency model
//! * Each queue has its own lock over its in-memory state ([`crate::scheduler`]). Operations on
//!   different queues never contend (except on the store channel).
//! * A change that must be durable is submitted to the store *while the queue lock is held*, so
//!   the store applies the changes of a job in the order they were made in memory.
//! * A pushed job becomes visible to dispatch only once its commit is durable (the store's
//!   completion inserts it). So a worker never runs a job that could vanish in a crash, and a
//!   job id is never shown to anyone before it is durable, which is what makes "ids never
//!   repeat" hold across crashes.
//! * Leases, completions, failures, extensions are applied in memory at once and committed in
//!   the background (batched with everything else), without an fsync of their own: the next
//!   durable commit (a push's, or one the writer forces within 50 ms) persists them. The
//!   returned [`Durable`] resolves after that fsync, and may be dropped. A crash before it only
//!   means the job runs again (at-least-once): nothing acknowledged to a producer is lost.
//!   Pushes, declarations, requeues and purges are fsync'd at once.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use tokio::sync::{oneshot, Notify};

use crate::clock::{duration_ms, Clock};
use crate::config::{QueueConfig, MAX_ATTEMPTS_LIMIT, MAX_LEASE};
use crate::disk::DiskReserve;
use crate::error::{QueueError, StoreError};
use crate::human;
use crate::model::{
    check_name, ErrorInfo, Job, JobId, JobInfo, JobState, JobStatus, NewJob, Priority, When,
};
use crate::redb_store::{RedbOptions, RedbStore};
use crate::scheduler::{
    truncate_message, truncate_uri, Lease, Outcome, QueueState, Wait, LEASE_LOST,
};
use crate::store::{Batch, Counters, Done, Mutation, Store, StoreStats};
use crate::usage::RuntimeUsage;

/// Engine options.
#[derive(Clone, Debug)]
pub struct Options {
    /// Source of "now" (default: the system clock).
    pub clock: Clock,
    /// A `run_at` this far in the past is accepted as "now"; further back it is an error
    /// (default 5 min).
    pub past_run_at_tolerance: Duration,
    /// Longest accepted `delay` / distance of `run_at` into the future (default 365 days).
    pub max_delay: Duration,
    /// Options of the embedded store (used by [`Queues::open`] and [`Queues::open_with`]).
    pub store: RedbOptions,
    /// Most queues at once (default 1000; 0 = no limit). Queues of the config file are always
    /// created; a run-time [`Queues::declare`] beyond it is refused with `TooManyQueues`.
    pub max_queues: usize,
    /// Most jobs one [`Queues::push_many`] may create (default 1000; 0 = no limit).
    pub max_push_many_jobs: usize,
    /// Most payload bytes one [`Queues::push_many`] of several jobs may carry (default
    /// 16 MiB; 0 = no limit). A single job is bounded by its queue's `max_payload_bytes`.
    pub max_push_many_bytes: usize,
    /// Most jobs (waiting, in flight or dead) the queues declared at run time hold together
    /// (default 100 000; 0 = no limit). Queues of the config file are not counted. A push
    /// beyond it is refused with `RuntimeFull` (`queue_full`).
    pub runtime_max_jobs: u64,
    /// Most payload bytes the jobs of the queues declared at run time hold together (default
    /// 1 GiB; 0 = no limit).
    pub runtime_max_payload_bytes: u64,
    /// Most idempotency keys the queues declared at run time remember together (default
    /// 100 000; 0 = no limit). Beyond it, a run-time queue forgets its own oldest key first.
    pub runtime_max_idempotency_keys: u64,
    /// Longest target procedure and result topic a pushed job may name, in bytes (default
    /// 512; 0 = the URI limit of 2048). They stay in memory while the job waits.
    pub max_job_uri_bytes: usize,
    /// Free space to keep on the disk holding the store (default 256 MiB; 0 = none): a push
    /// that would leave less is refused with `DiskFull` (`queue_full`), so clients never fill
    /// the disk (a full disk fails every write of the store until a restart). Only for stores
    /// opened from a path ([`Queues::open_with`]).
    pub min_free_disk_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            clock: Clock::System,
            past_run_at_tolerance: Duration::from_secs(300),
            max_delay: Duration::from_secs(365 * 24 * 3600),
            store: RedbOptions::default(),
            max_queues: 1000,
            max_push_many_jobs: 1000,
            max_push_many_bytes: 16 * 1024 * 1024,
            runtime_max_jobs: 100_000,
            runtime_max_payload_bytes: 1024 * 1024 * 1024,
            runtime_max_idempotency_keys: 100_000,
            max_job_uri_bytes: 512,
            min_free_disk_bytes: 256 * 1024 * 1024,
        }
    }
}

/// Most payload bytes [`Queues::next_ready_many`] reads for one batch of leases (16 MiB; a
/// batch always has at least one job).
pub const LEASE_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// Most payload bytes one `peek` or `dead` listing reads from the store (1 MiB: an answer is
/// bounded by the transports' message size anyway; 16 concurrent listings of 16 MiB held a
/// healthy call for 6 s).
pub const LISTING_PAYLOAD_BUDGET: usize = 1024 * 1024;

/// The answer to a push.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PushAck {
    /// The job's id (for a duplicate: the original job's id).
    pub id: JobId,
    /// True when an earlier push with the same idempotency key, inside the window, created the
    /// job. The original may since have completed.
    pub duplicate: bool,
}

/// Resolves when an operation's effect is durable (for completions, failures, extensions and
/// releases: with the next fsync, at most 50 ms later). Dropping it does not undo anything:
/// the change is applied in memory already and is committed anyway.
#[must_use = "await it for durability, or drop it explicitly"]
pub struct Durable {
    rx: Option<oneshot::Receiver<Result<(), StoreError>>>,
}

impl Durable {
    fn done() -> Durable {
        Durable { rx: None }
    }
}

impl Future for Durable {
    type Output = Result<(), QueueError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.rx {
            None => Poll::Ready(Ok(())),
            Some(rx) => match Pin::new(rx).poll(cx) {
                Poll::Ready(Ok(r)) => Poll::Ready(r.map_err(QueueError::from)),
                Poll::Ready(Err(_)) => Poll::Ready(Err(StoreError::Closed.into())),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// The result of `fail`: what happens next, and the durability handle.
#[must_use]
pub struct Settled {
    /// Retry (when) or dead (why).
    pub outcome: Outcome,
    /// Resolves when the outcome is durable.
    pub durable: Durable,
}

/// What `next_ready` found.
#[derive(Debug)]
pub enum Dispatch {
    /// A job, leased to the caller.
    Lease(Lease),
    /// Nothing to lease now.
    Wait(Wait),
}

/// A lease that expired during [`Queues::maintain`].
#[derive(Clone, Debug)]
pub struct Expired {
    /// The job.
    pub job: Arc<Job>,
    /// The epoch of the lease that expired (a worker still holding it is now stale).
    pub epoch: u64,
    /// Retry or dead.
    pub outcome: Outcome,
}

/// The result of [`Queues::maintain`].
#[derive(Clone, Debug, Default)]
pub struct Maintenance {
    /// Leases that expired, with what happened to their jobs.
    pub expired: Vec<Expired>,
    /// When `maintain` next has work (unix ms): the earliest lease deadline, key expiry or
    /// dead-letter age limit. `None`: nothing is pending (call again after a lease is handed
    /// out; calling it every second is a simple, sufficient rule).
    pub next_wakeup_ms: Option<u64>,
}

/// Whether `declare` created the queue.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Declared {
    /// New queue, persisted.
    Created,
    /// Already declared with an identical configuration; nothing changed.
    Unchanged,
}

/// Most pushes that wait for room in one queue (`backpressure`); beyond, a push is refused at
/// once with [`QueueError::Backlogged`].
pub const MAX_WAITING_PUSHES: usize = 1024;

/// How often a waiting push looks at its queue again without being woken.
const ROOM_RECHECK: Duration = Duration::from_millis(100);

/// What [`Queues::reconfigure`] changed (queue names, sorted).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconfigured {
    /// Queues new to the config file, created.
    pub created: Vec<String>,
    /// Queues whose configuration changed, with the fields that did.
    pub changed: Vec<(String, Vec<&'static str>)>,
    /// Queues declared at run time that the file now declares.
    pub adopted: Vec<String>,
    /// Queues the file no longer declares: kept, now counted as declared at run time.
    pub released: Vec<String>,
}

/// Which dead jobs to requeue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requeue {
    /// These jobs (each must be dead in the queue, else nothing is requeued).
    Jobs(Vec<JobId>),
    /// Every dead job of the queue.
    AllDead,
}

/// What [`Queues::delete`] deleted.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Deleted {
    /// Jobs deleted with the queue (waiting, in flight, dead, and pushes still committing).
    pub jobs: usize,
    /// Idempotency keys forgotten with it.
    pub idempotency_keys: usize,
}

/// Which jobs to purge.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Purge {
    /// Waiting jobs: ready and scheduled.
    Ready,
    /// Dead jobs.
    Dead,
    /// Everything: waiting, leased (their workers' results will be refused) and dead.
    All,
}

/// One queue's figures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    /// Queue name.
    pub name: String,
    /// Due jobs waiting for a worker.
    pub ready: usize,
    /// `ready` split by priority (index = priority).
    pub ready_by_priority: [usize; Priority::LEVELS],
    /// Jobs waiting for their `run_at` (delayed jobs and backoffs).
    pub scheduled: usize,
    /// Leased jobs.
    pub in_flight: usize,
    /// Dead letters.
    pub dead: usize,
    /// How long the longest-waiting due job has been due, ms.
    pub oldest_ready_age_ms: Option<u64>,
    /// Failed attempts scheduled for retry, lifetime.
    pub retried_total: u64,
    /// Jobs dead-lettered, lifetime.
    pub dead_lettered_total: u64,
    /// Jobs completed, lifetime.
    pub completed_total: u64,
    /// Idempotency keys remembered.
    pub idempotency_keys: usize,
    /// Configured concurrency limit (0 = unlimited).
    pub concurrency: u32,
}

struct QueueShared {
    /// The queue's configuration: replaced by [`Queues::reconfigure`] (a reload of the config
    /// file), so read it through [`QueueShared::config`].
    config: RwLock<Arc<QueueConfig>>,
    state: Mutex<QueueState>,
    notify: Arc<Notify>,
    /// Declared by the config file (cannot be deleted at run time). A reload can change it.
    configured: AtomicBool,
    /// Pushes waiting for the workers to catch up (`backpressure`), and their wake-up.
    room: Notify,
    room_waiters: AtomicUsize,
}

impl QueueShared {
    fn new(config: Arc<QueueConfig>, state: QueueState, configured: bool) -> QueueShared {
        QueueShared {
            config: RwLock::new(config),
            state: Mutex::new(state),
            notify: Arc::new(Notify::new()),
            configured: AtomicBool::new(configured),
            room: Notify::new(),
            room_waiters: AtomicUsize::new(0),
        }
    }

    fn config(&self) -> Arc<QueueConfig> {
        self.config.read().clone()
    }

    fn configured(&self) -> bool {
        self.configured.load(Ordering::Acquire)
    }
}

const SHARDS: usize = 16;

/// Job id → its queue, for the calls that only carry a job id.
struct JobIndex {
    shards: Vec<Mutex<HashMap<JobId, Arc<QueueShared>>>>,
}

impl JobIndex {
    fn new() -> JobIndex {
        JobIndex {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
    fn shard(&self, id: JobId) -> &Mutex<HashMap<JobId, Arc<QueueShared>>> {
        &self.shards[(id.0 % SHARDS as u64) as usize]
    }
    fn get(&self, id: JobId) -> Option<Arc<QueueShared>> {
        self.shard(id).lock().get(&id).cloned()
    }
    fn insert(&self, id: JobId, q: Arc<QueueShared>) {
        self.shard(id).lock().insert(id, q);
    }
    fn remove(&self, id: JobId) {
        self.shard(id).lock().remove(&id);
    }
    fn remove_all(&self, muts: &[Mutation]) {
        for m in muts {
            if let Mutation::RemoveJob(id) = m {
                self.remove(*id);
            }
        }
    }
}

/// A validated push, before it gets an id.
struct Draft {
    q: Arc<QueueShared>,
    job: NewJob,
    target: crate::model::Target,
    run_at: u64,
}

enum PushWait {
    Now(Vec<PushAck>),
    Commit(oneshot::Receiver<Result<Vec<PushAck>, StoreError>>),
}

/// The durable queues of one store: declare, push, dispatch, settle, operate.
pub struct Queues {
    store: Arc<dyn Store>,
    registry: RwLock<HashMap<Arc<str>, Arc<QueueShared>>>,
    index: Arc<JobIndex>,
    next_id: AtomicU64,
    clock: Clock,
    options: Options,
    /// What the queues declared at run time hold together.
    usage: Arc<RuntimeUsage>,
    /// Payload bytes of every queue.
    stored: Arc<AtomicU64>,
    /// The free-space reserve of the store's disk.
    disk: Option<DiskReserve>,
}

impl Queues {
    /// Opens (or creates) the embedded store at `path` with the given queues (from the config
    /// file) and recovers its state. See [`Queues::with_store`].
    pub fn open(path: impl AsRef<Path>, configs: Vec<QueueConfig>) -> Result<Queues, QueueError> {
        Queues::open_with(path, configs, Options::default())
    }

    /// [`Queues::open`] with options.
    pub fn open_with(
        path: impl AsRef<Path>,
        configs: Vec<QueueConfig>,
        options: Options,
    ) -> Result<Queues, QueueError> {
        let file = path.as_ref().to_path_buf();
        let min_free = options.min_free_disk_bytes;
        let store = RedbStore::open(path, options.store.clone())?;
        let mut queues = Queues::with_store(Arc::new(store), configs, options)?;
        queues.disk = Some(DiskReserve::new(file, min_free));
        Ok(queues)
    }

    /// Recovers from `store`. Blocks until the recovery commit is durable.
    ///
    /// * `configs` (the config file's queues) are declared; where a stored queue of the same
    ///   name has a different configuration, the config file wins (and is persisted). Queues
    ///   declared at run time in earlier runs are loaded as they were.
    /// * Jobs that were leased when the previous run stopped count that attempt as failed with
    ///   `switchyard.queue.lease_lost`: unless that dead-letters them (non-retryable URI,
    ///   attempts exhausted, or a policy with no retry left, e.g. `none`, whose users asked for
    ///   "never run twice"), they are **ready at once**, not after a backoff: the router was
    ///   down, the job has waited already, and nothing suggests the job was at fault. Counting
    ///   the attempt bounds how often a job that crashes the router can crash it.
    /// * Idempotency keys past their window and dead jobs past retention are deleted.
    pub fn with_store(
        store: Arc<dyn Store>,
        configs: Vec<QueueConfig>,
        options: Options,
    ) -> Result<Queues, QueueError> {
        let clock = options.clock.clone();
        let now = clock.now_ms();
        let mut seen = std::collections::HashSet::new();
        for cfg in &configs {
            cfg.validate()
                .map_err(|e| e.within(&format!("queues.{}", cfg.name)))?;
            if !seen.insert(cfg.name.clone()) {
                return Err(QueueError::invalid(
                    "queues",
                    format!("queue `{}` is configured twice", cfg.name),
                ));
            }
        }
        let snap = store.load(now)?;
        let mut muts = Vec::new();
        let mut declared: HashMap<String, (QueueConfig, Counters)> = HashMap::new();
        for (cfg, counters) in snap.queues {
            declared.insert(cfg.name.clone(), (cfg, counters));
        }
        for cfg in configs {
            let counters = match declared.get(&cfg.name) {
                Some((old, _)) if *old == cfg => continue,
                Some((old, c)) => {
                    tracing::info!(queue = %cfg.name, changed = ?old.differences(&cfg), "queue configuration changed in the config file");
                    *c
                }
                None => Counters::default(),
            };
            muts.push(Mutation::PutQueue(Arc::new(cfg.clone())));
            declared.insert(cfg.name.clone(), (cfg, counters));
        }
        let usage = Arc::new(RuntimeUsage::new(
            options.runtime_max_jobs,
            options.runtime_max_payload_bytes,
            options.runtime_max_idempotency_keys,
        ));
        let stored = Arc::new(AtomicU64::new(0));
        let mut registry: HashMap<Arc<str>, Arc<QueueShared>> = HashMap::new();
        for (name, (cfg, counters)) in declared {
            let cfg = Arc::new(cfg);
            let mut state = QueueState::new(cfg.clone(), counters, now);
            state.count_stored(stored.clone());
            if !seen.contains(&cfg.name) {
                state.count_in(usage.clone());
            }
            registry.insert(
                name.into(),
                Arc::new(QueueShared::new(
                    cfg.clone(),
                    state,
                    seen.contains(&cfg.name),
                )),
            );
        }
        let index = Arc::new(JobIndex::new());
        let mut leased: Vec<(Arc<QueueShared>, JobId)> = Vec::new();
        for (job, status) in snap.jobs {
            let Some(q) = registry.get(&*job.queue) else {
                return Err(StoreError::corrupt(format!(
                    "job {} belongs to queue `{}`, which is not declared",
                    job.id, job.queue
                ))
                .into());
            };
            if matches!(status.state, JobState::Leased { .. }) {
                leased.push((q.clone(), job.id));
            }
            index.insert(job.id, q.clone());
            let mut st = q.state.lock();
            st.hold(job.payload_bytes, false);
            st.insert(job, status, now);
        }
        for (q, id) in leased {
            let err = ErrorInfo {
                uri: LEASE_LOST.into(),
                message: "the router stopped while the job was leased".into(),
                at_ms: now,
            };
            q.state.lock().fail(id, err, now, true, &mut muts);
        }
        // Oldest first, so a queue whose `idempotency_max_keys` was lowered keeps its newest.
        let mut keys = snap.idempotency_keys;
        keys.sort_by_key(|r| r.expires_ms);
        for rec in keys {
            let q = registry.get(rec.queue.as_str());
            match q {
                Some(q) if rec.expires_ms > now => {
                    q.state.lock().remember_key(
                        &rec.key,
                        rec.job,
                        rec.expires_ms,
                        false,
                        &mut muts,
                    );
                }
                _ => muts.push(Mutation::RemoveIdempotencyKey {
                    queue: rec.queue.into(),
                    key: rec.key,
                }),
            }
        }
        for q in registry.values() {
            q.state.lock().prune_dead(now, &mut muts);
        }
        index.remove_all(&muts);
        if !muts.is_empty() {
            let (tx, rx) = std::sync::mpsc::channel();
            let done: Done = Box::new(move |r| {
                let _ = tx.send(r);
            });
            store.submit(Batch::durable(muts, Some(done)))?;
            rx.recv().map_err(|_| StoreError::Closed)??;
        }
        let next_id = snap
            .max_job_id
            .checked_add(1)
            .ok_or_else(|| StoreError::corrupt("the job id space is exhausted"))?;
        Ok(Queues {
            store,
            registry: RwLock::new(registry),
            index,
            next_id: AtomicU64::new(next_id),
            clock,
            options,
            usage,
            stored,
            disk: None,
        })
    }

    fn queue(&self, name: &str) -> Result<Arc<QueueShared>, QueueError> {
        self.registry
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| QueueError::UnknownQueue(name.to_owned()))
    }

    /// The engine's clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Counters of the store's write side (commits, batches per commit...).
    pub fn store_stats(&self) -> StoreStats {
        self.store.stats()
    }

    /// Why the store refuses writes now, if it does (a full disk, an I/O error: it may
    /// recover by itself). Cheap.
    pub fn store_failure(&self) -> Option<StoreError> {
        self.store.failure()
    }

    /// A queue's configuration.
    pub fn config(&self, queue: &str) -> Result<Arc<QueueConfig>, QueueError> {
        Ok(self.queue(queue)?.config())
    }

    /// Names of the declared queues, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.registry.read().keys().map(|k| k.to_string()).collect();
        v.sort();
        v
    }

    /// Declares a queue at run time, persisted. Declaring an existing queue with an identical
    /// configuration is a no-op; with a different one, an error naming the fields that differ.
    pub async fn declare(&self, config: QueueConfig) -> Result<Declared, QueueError> {
        config.validate()?;
        let (declared, durable) = {
            let mut reg = self.registry.write();
            if let Some(q) = reg.get(config.name.as_str()) {
                let diff = q.config().differences(&config);
                if !diff.is_empty() {
                    return Err(QueueError::ConfigConflict {
                        queue: config.name,
                        fields: diff.join(", "),
                    });
                }
                // It may have been declared a moment ago and not be durable yet: wait for the
                // commits queued before us.
                (
                    Declared::Unchanged,
                    self.submit_tracked(Vec::new(), true, true)?,
                )
            } else {
                let limit = self.options.max_queues;
                if limit > 0 && reg.len() >= limit {
                    return Err(QueueError::TooManyQueues { limit });
                }
                let now = self.clock.now_ms();
                let cfg = Arc::new(config);
                let durable =
                    self.submit_tracked(vec![Mutation::PutQueue(cfg.clone())], false, true)?;
                let mut state = QueueState::new(cfg.clone(), Counters::default(), now);
                state.count_in(self.usage.clone());
                state.count_stored(self.stored.clone());
                reg.insert(
                    cfg.name.as_str().into(),
                    Arc::new(QueueShared::new(cfg, state, false)),
                );
                (Declared::Created, durable)
            }
        };
        durable.await?;
        Ok(declared)
    }

    /// Applies the queues of a reloaded config file, as one durable commit:
    /// * a queue new to the file is created (as at startup: declared by the file, not counted
    ///   against the run-time bounds, not deletable at run time);
    /// * a queue whose configuration changed takes the new one (its jobs, keys and counters
    ///   stay; see [`QueueState::reconfigure`] for what applies to work already queued);
    /// * a queue declared at run time that the file now names is adopted by the file;
    /// * a queue the file no longer names keeps its jobs and counts as declared at run time from
    ///   now on, exactly as after a restart: it can then be deleted with
    ///   `switchyard.queue.delete`. Nothing is deleted by a reload.
    ///
    /// Every configuration is validated first; an invalid one changes nothing. Notifiers fire,
    /// so dispatchers see a new concurrency or rate limit at once.
    pub async fn reconfigure(&self, configs: Vec<QueueConfig>) -> Result<Reconfigured, QueueError> {
        let mut seen = std::collections::HashSet::new();
        for cfg in &configs {
            cfg.validate()
                .map_err(|e| e.within(&format!("queues.{}", cfg.name)))?;
            if !seen.insert(cfg.name.clone()) {
                return Err(QueueError::invalid(
                    "queues",
                    format!("queue `{}` is configured twice", cfg.name),
                ));
            }
        }
        let now = self.clock.now_ms();
        let mut out = Reconfigured::default();
        let mut muts = Vec::new();
        let mut touched = Vec::new();
        let durable = {
            let mut reg = self.registry.write();
            for cfg in configs {
                let name = cfg.name.clone();
                match reg.get(name.as_str()).cloned() {
                    None => {
                        let cfg = Arc::new(cfg);
                        muts.push(Mutation::PutQueue(cfg.clone()));
                        let mut state = QueueState::new(cfg.clone(), Counters::default(), now);
                        state.count_stored(self.stored.clone());
                        reg.insert(
                            name.as_str().into(),
                            Arc::new(QueueShared::new(cfg, state, true)),
                        );
                        out.created.push(name);
                    }
                    Some(q) => {
                        let mut st = q.state.lock();
                        if !q.configured() {
                            st.stop_counting_usage();
                            q.configured.store(true, Ordering::Release);
                            out.adopted.push(name.clone());
                        }
                        let diff = q.config().differences(&cfg);
                        if !diff.is_empty() {
                            let cfg = Arc::new(cfg);
                            muts.push(Mutation::PutQueue(cfg.clone()));
                            st.reconfigure(cfg.clone(), now, &mut muts);
                            *q.config.write() = cfg;
                            out.changed.push((name, diff));
                        }
                        drop(st);
                        touched.push(q);
                    }
                }
            }
            for (name, q) in reg.iter() {
                if q.configured() && !seen.contains(&**name) {
                    q.state.lock().start_counting_usage(self.usage.clone());
                    q.configured.store(false, Ordering::Release);
                    out.released.push(name.to_string());
                }
            }
            self.submit_tracked(muts.clone(), true, true)?
        };
        self.index.remove_all(&muts);
        for q in touched {
            q.notify.notify_waiters();
            q.notify.notify_one();
        }
        durable.await?;
        out.created.sort();
        out.adopted.sort();
        out.changed.sort();
        out.released.sort();
        Ok(out)
    }

    /// Whether `queue` comes from the config file (as opposed to a run-time declaration).
    pub fn is_configured(&self, queue: &str) -> Result<bool, QueueError> {
        Ok(self.queue(queue)?.configured())
    }

    /// Deletes a queue declared at run time, with its jobs, idempotency keys and counters,
    /// durably. A queue of the config file cannot be deleted (`ConfiguredQueue`); a queue that
    /// holds jobs (waiting, in flight, dead, or pushed and still committing) is only deleted
    /// with `force` (else `NotEmpty`): the results of its running jobs are then ignored like
    /// late answers. Its notifier fires, so a dispatcher waiting on it finds it gone.
    pub async fn delete(&self, queue: &str, force: bool) -> Result<Deleted, QueueError> {
        let (q, deleted, durable, muts) = {
            let mut reg = self.registry.write();
            let q = reg
                .get(queue)
                .cloned()
                .ok_or_else(|| QueueError::UnknownQueue(queue.to_owned()))?;
            if q.configured() {
                return Err(QueueError::ConfiguredQueue(queue.to_owned()));
            }
            let mut st = q.state.lock();
            let jobs = st.jobs.len() + st.committing.len();
            if jobs > 0 && !force {
                return Err(QueueError::NotEmpty {
                    queue: queue.to_owned(),
                    jobs,
                });
            }
            let mut muts: Vec<Mutation> = st
                .jobs
                .keys()
                .chain(st.committing.iter())
                .map(|&id| Mutation::RemoveJob(id))
                .collect();
            muts.push(Mutation::RemoveQueue(st.name.clone()));
            let deleted = Deleted {
                jobs,
                idempotency_keys: st.idem.len(),
            };
            st.release_all();
            *st = QueueState::new(q.config(), Counters::default(), self.clock.now_ms());
            st.count_stored(self.stored.clone());
            st.deleted = true;
            let durable = self.submit_tracked(muts.clone(), false, true)?;
            drop(st);
            reg.remove(queue);
            (q, deleted, durable, muts)
        };
        self.index.remove_all(&muts);
        q.notify.notify_waiters();
        q.notify.notify_one();
        durable.await?;
        Ok(deleted)
    }

    /// Submits `mutations`; the handle resolves once they are fsync'd: at once if `durable`,
    /// else with the next durable commit (within `MAX_NON_DURABLE`).
    fn submit_tracked(
        &self,
        mutations: Vec<Mutation>,
        barrier: bool,
        durable: bool,
    ) -> Result<Durable, QueueError> {
        if mutations.is_empty() && !barrier {
            return Ok(Durable::done());
        }
        let (tx, rx) = oneshot::channel();
        let done: Done = Box::new(move |r| {
            let _ = tx.send(r);
        });
        self.store.submit(Batch {
            mutations,
            done: Some(done),
            durable,
        })?;
        Ok(Durable { rx: Some(rx) })
    }

    fn prepare(&self, queue: &str, job: NewJob, now: u64) -> Result<Draft, QueueError> {
        let q = self.queue(queue)?;
        let cfg = q.config();
        if job.payload.len() > cfg.max_payload_bytes as usize {
            return Err(QueueError::PayloadTooLarge {
                queue: queue.to_owned(),
                size: job.payload.len(),
                limit: cfg.max_payload_bytes,
            });
        }
        let uri_limit = self.options.max_job_uri_bytes;
        let long = |field: &str, uri: &str| {
            QueueError::invalid(
                field,
                format!(
                    "is {} bytes long; a job may name URIs of at most {uri_limit} bytes (max_job_uri_bytes)",
                    uri.len()
                ),
            )
        };
        if uri_limit > 0 {
            if let Some(crate::model::Target::Procedure(p)) = &job.target {
                if p.len() > uri_limit {
                    return Err(long("target", p));
                }
            }
            if let Some(t) = &job.result_topic {
                if t.len() > uri_limit {
                    return Err(long("result_topic", t));
                }
            }
        }
        let target = match (&job.target, &cfg.target) {
            (Some(t), _) => {
                t.validate()?;
                t.clone()
            }
            (None, Some(t)) => t.clone(),
            (None, None) => {
                return Err(QueueError::invalid(
                    "target",
                    format!("the job has no target and queue `{queue}` has no default target"),
                ))
            }
        };
        if let Some(p) = &job.retry {
            p.validate().map_err(|e| e.within("retry"))?;
        }
        if let Some(n) = job.max_attempts {
            if n == 0 || n > MAX_ATTEMPTS_LIMIT {
                return Err(QueueError::invalid(
                    "max_attempts",
                    format!("{n} is outside 1..={MAX_ATTEMPTS_LIMIT}"),
                ));
            }
        }
        if let Some(k) = &job.idempotency_key {
            let limit = cfg.idempotency_key_max_bytes;
            if k.is_empty() || k.len() > limit as usize {
                return Err(QueueError::invalid(
                    "idempotency_key",
                    format!(
                        "is {} bytes long; queue `{queue}` accepts keys of 1..={limit} bytes (idempotency_key_max_bytes)",
                        k.len()
                    ),
                ));
            }
        }
        if let Some(t) = &job.result_topic {
            check_name("result_topic", t)?;
        }
        let max_delay = duration_ms(self.options.max_delay);
        let run_at = match job.when {
            When::Now => now,
            When::Delay(d) => {
                if d > self.options.max_delay {
                    return Err(QueueError::invalid(
                        "delay",
                        format!(
                            "{} is longer than the maximum of {}",
                            human::format_duration(d),
                            human::format_duration(self.options.max_delay)
                        ),
                    ));
                }
                now.saturating_add(duration_ms(d))
            }
            When::At(at) => {
                let tolerance = duration_ms(self.options.past_run_at_tolerance);
                if at.saturating_add(tolerance) < now {
                    return Err(QueueError::invalid(
                        "run_at",
                        format!(
                            "{at} is {} in the past (tolerance {}); run_at is unix milliseconds or RFC 3339",
                            human::format_duration(Duration::from_millis(now - at)),
                            human::format_duration(self.options.past_run_at_tolerance)
                        ),
                    ));
                }
                if at > now.saturating_add(max_delay) {
                    return Err(QueueError::invalid(
                        "run_at",
                        format!(
                            "{at} is more than {} ahead; run_at is unix milliseconds or RFC 3339",
                            human::format_duration(self.options.max_delay)
                        ),
                    ));
                }
                at
            }
        };
        Ok(Draft {
            q,
            job,
            target,
            run_at,
        })
    }

    /// Pushes one job. Resolves once the job is durable (or, for a duplicate idempotency key,
    /// once the original is durable). On an error nothing was stored.
    pub async fn push(&self, queue: &str, job: NewJob) -> Result<PushAck, QueueError> {
        let mut acks = self.push_many(vec![(queue, job)]).await?;
        acks.pop()
            .ok_or_else(|| StoreError::corrupt("push produced no acknowledgement").into())
    }

    /// Pushes several jobs, possibly to several queues, in ONE transaction: all are stored or
    /// none (a validation error in any job stores nothing). Acks are in input order.
    ///
    /// A queue whose workers are behind (`backpressure`) makes the push wait first, before
    /// anything is stored, until they catch up (or refuses it with
    /// [`QueueError::Backlogged`] after `backpressure.max_wait`).
    pub async fn push_many<Q: AsRef<str>>(
        &self,
        jobs: Vec<(Q, NewJob)>,
    ) -> Result<Vec<PushAck>, QueueError> {
        let mut waited: Vec<&str> = Vec::new();
        for (queue, _) in &jobs {
            let queue = queue.as_ref();
            if !waited.contains(&queue) {
                self.wait_for_room(queue).await?;
                waited.push(queue);
            }
        }
        self.submit_many(jobs)?.await
    }

    /// Waits while `queue` holds `backpressure.ready` ready jobs or more, at most
    /// `backpressure.max_wait`. At most [`MAX_WAITING_PUSHES`] pushes wait per queue (each holds
    /// its payload); beyond, a push is refused at once.
    async fn wait_for_room(&self, queue: &str) -> Result<(), QueueError> {
        let Ok(q) = self.queue(queue) else {
            return Ok(()); // push_start reports the unknown queue
        };
        let cfg = q.config();
        let mark = cfg.backpressure.ready;
        let ready = |q: &QueueShared| q.state.lock().ready_len() as u64;
        if mark == 0 || ready(&q) < mark {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let refuse = |ready: u64| QueueError::Backlogged {
            queue: queue.to_owned(),
            ready,
            limit: mark,
            waited_ms: started.elapsed().as_millis() as u64,
        };
        if q.room_waiters.fetch_add(1, Ordering::AcqRel) >= MAX_WAITING_PUSHES {
            q.room_waiters.fetch_sub(1, Ordering::AcqRel);
            return Err(refuse(ready(&q)));
        }
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let _waiting = Waiting(&q.room_waiters);
        let deadline = tokio::time::Instant::now() + cfg.backpressure.max_wait;
        loop {
            let notified = q.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now_ready = ready(&q);
            if now_ready < mark || q.state.lock().deleted {
                return Ok(());
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                tracing::debug!(
                    queue,
                    ready = now_ready,
                    "push refused: the queue's workers did not catch up (backpressure)"
                );
                return Err(refuse(now_ready));
            }
            // Woken when a lease takes the queue under its mark; looked at again at least
            // every ROOM_RECHECK (a purge or a deletion does not wake).
            let _ = tokio::time::timeout((deadline - now).min(ROOM_RECHECK), notified).await;
        }
    }

    /// Like [`Queues::push_many`], but validates and submits the jobs now,
    /// before returning: an invalid job is an error at once (nothing stored),
    /// and the returned future only waits for the commit. For callers that
    /// must decide synchronously (the router's topic bindings).
    pub fn submit_many<Q: AsRef<str>>(
        &self,
        jobs: Vec<(Q, NewJob)>,
    ) -> Result<impl Future<Output = Result<Vec<PushAck>, QueueError>> + Send + 'static, QueueError>
    {
        let wait = self.push_start(jobs)?;
        Ok(async move {
            match wait {
                PushWait::Now(acks) => Ok(acks),
                PushWait::Commit(rx) => match rx.await {
                    Ok(r) => Ok(r?),
                    Err(_) => Err(StoreError::Closed.into()),
                },
            }
        })
    }

    fn push_start<Q: AsRef<str>>(&self, jobs: Vec<(Q, NewJob)>) -> Result<PushWait, QueueError> {
        let max_jobs = self.options.max_push_many_jobs;
        if max_jobs > 0 && jobs.len() > max_jobs {
            return Err(QueueError::BatchTooLarge {
                what: format!("{} jobs", jobs.len()),
                limit: format!("{max_jobs} jobs (max_push_many_jobs)"),
            });
        }
        let max_bytes = self.options.max_push_many_bytes;
        if jobs.len() > 1 && max_bytes > 0 {
            let bytes = jobs
                .iter()
                .fold(0usize, |n, (_, j)| n.saturating_add(j.payload.len()));
            if bytes > max_bytes {
                return Err(QueueError::BatchTooLarge {
                    what: format!("{bytes} payload bytes"),
                    limit: format!("{max_bytes} bytes (max_push_many_bytes)"),
                });
            }
        }
        if let Some(disk) = &self.disk {
            let incoming = jobs
                .iter()
                .fold(0u64, |n, (_, j)| n.saturating_add(j.payload.len() as u64));
            if let Err((free, reserve)) = disk.check(incoming, self.stored.load(Ordering::Relaxed))
            {
                return Err(QueueError::DiskFull { free, reserve });
            }
        }
        let now = self.clock.now_ms();
        let mut drafts = Vec::with_capacity(jobs.len());
        for (i, (queue, job)) in jobs.into_iter().enumerate() {
            let d = self.prepare(queue.as_ref(), job, now);
            drafts.push(d.map_err(|e| match e {
                QueueError::Invalid(f) if i > 0 => {
                    QueueError::Invalid(f.within(&format!("jobs[{i}]")))
                }
                other => other,
            })?);
        }
        // Lock every queue involved, in name order (the same order everywhere: no deadlock).
        let mut queues: Vec<Arc<QueueShared>> = drafts.iter().map(|d| d.q.clone()).collect();
        queues.sort_by(|a, b| a.config().name.cmp(&b.config().name));
        queues.dedup_by(|a, b| Arc::ptr_eq(a, b));
        let mut guards: Vec<_> = queues.iter().map(|q| q.state.lock()).collect();
        // Room for the new jobs (a duplicate key may not need it: erring on
        // the side of refusing keeps the check before any change).
        for (q, st) in queues.iter().zip(&guards) {
            if st.deleted {
                return Err(QueueError::UnknownQueue(q.config().name.clone()));
            }
            let limit = q.config().max_jobs;
            let adding = drafts.iter().filter(|d| Arc::ptr_eq(&d.q, q)).count();
            if limit > 0 && (st.live_jobs() + adding) as u64 > limit {
                return Err(QueueError::QueueFull {
                    queue: q.config().name.clone(),
                    limit,
                });
            }
        }
        // Room in the realm-wide bounds of the run-time queues, reserved now (given back
        // below for duplicates, and when the jobs leave).
        let (mut rt_jobs, mut rt_bytes) = (0u64, 0u64);
        for d in drafts.iter().filter(|d| {
            let gi = queues.iter().position(|q| Arc::ptr_eq(q, &d.q));
            gi.is_some_and(|gi| guards[gi].usage().is_some())
        }) {
            rt_jobs += 1;
            rt_bytes = rt_bytes.saturating_add(d.job.payload.len() as u64);
        }
        if rt_jobs > 0 {
            if let Err((what, held, limit, key)) = self.usage.reserve(rt_jobs, rt_bytes) {
                let queue = drafts
                    .iter()
                    .find(|d| !d.q.configured())
                    .map(|d| d.q.config().name.clone())
                    .unwrap_or_default();
                return Err(QueueError::RuntimeFull {
                    queue,
                    what,
                    held,
                    limit,
                    key,
                });
            }
        }

        let mut acks = Vec::with_capacity(drafts.len());
        let mut muts = Vec::with_capacity(drafts.len() * 2);
        let mut visible: Vec<(Arc<QueueShared>, Arc<Job>, JobStatus)> = Vec::new();
        let mut wait_for_original = false;
        for d in drafts {
            let gi = queues
                .iter()
                .position(|q| Arc::ptr_eq(q, &d.q))
                .unwrap_or_default();
            let st = &mut guards[gi];
            if let Some(key) = &d.job.idempotency_key {
                if let Some(e) = st.idem.get(key.as_str()) {
                    if e.expires_ms > now {
                        acks.push(PushAck {
                            id: e.job,
                            duplicate: true,
                        });
                        wait_for_original |= e.pending;
                        continue;
                    }
                }
            }
            let id = JobId(self.next_id.fetch_add(1, Ordering::Relaxed));
            let payload = d.job.payload;
            let job = Arc::new(Job {
                id,
                queue: st.name.clone(),
                // Bounded by max_payload_bytes (at most 64 MiB).
                payload_bytes: u32::try_from(payload.len()).unwrap_or(u32::MAX),
                target: d.target,
                priority: d.job.priority,
                created_at_ms: now,
                max_attempts: d.job.max_attempts,
                retry: d.job.retry,
                idempotency_key: d.job.idempotency_key,
                result_topic: d.job.result_topic,
            });
            let status = JobStatus {
                state: if d.run_at <= now {
                    JobState::Ready
                } else {
                    JobState::Scheduled
                },
                run_at_ms: d.run_at,
                attempts: 0,
                epoch: 0,
                last_error: None,
            };
            if let Some(key) = &job.idempotency_key {
                let expires_ms = now.saturating_add(duration_ms(d.q.config().idempotency_window));
                st.remember_key(key, id, expires_ms, true, &mut muts);
                muts.push(Mutation::PutIdempotencyKey {
                    queue: st.name.clone(),
                    key: key.clone(),
                    job: id,
                    expires_ms,
                });
            }
            muts.push(Mutation::PutJob {
                job: job.clone(),
                status: status.clone(),
            });
            // The payload goes to the store only: memory holds the job's metadata.
            muts.push(Mutation::PutPayload { id, payload });
            st.committing.insert(id);
            let runtime = st.usage().is_some();
            st.hold(job.payload_bytes, runtime);
            if runtime {
                rt_jobs -= 1;
                rt_bytes = rt_bytes.saturating_sub(u64::from(job.payload_bytes));
            }
            visible.push((d.q.clone(), job, status));
            acks.push(PushAck {
                id,
                duplicate: false,
            });
        }
        // Reserved for jobs that turned out duplicates.
        self.usage.release(rt_jobs, rt_bytes);
        if muts.is_empty() && !wait_for_original {
            return Ok(PushWait::Now(acks));
        }
        let (tx, rx) = oneshot::channel();
        let index = self.index.clone();
        let clock = self.clock.clone();
        let pushed: Vec<(usize, Arc<Job>)> = visible
            .iter()
            .map(|(q, job, _)| {
                let gi = queues.iter().position(|g| Arc::ptr_eq(g, q));
                (gi.unwrap_or_default(), job.clone())
            })
            .collect();
        let done: Done = Box::new(move |r| {
            match &r {
                Ok(()) => make_visible(&index, &clock, visible),
                // Never visible: forget them (a store that recovers takes the next push).
                Err(_) => abandon(visible),
            }
            let _ = tx.send(r.map(|()| acks));
        });
        if let Err(e) = self.store.submit(Batch::durable(muts, Some(done))) {
            for (gi, job) in pushed {
                if let Some(st) = guards.get_mut(gi) {
                    st.abandon(&job);
                }
            }
            return Err(e.into());
        }
        drop(guards);
        Ok(PushWait::Commit(rx))
    }

    /// Leases the next job of `queue`: highest priority first, then earliest `run_at`, then
    /// push order; within the concurrency and rate limits. The lease is recorded durably in the
    /// background (a crash then counts the attempt).
    pub fn next_ready(&self, queue: &str) -> Result<Dispatch, QueueError> {
        let (mut leases, wait) = self.next_ready_many(queue, 1)?;
        match (leases.pop(), wait) {
            (Some(l), _) => Ok(Dispatch::Lease(l)),
            (None, Some(w)) => Ok(Dispatch::Wait(w)),
            (None, None) => Ok(Dispatch::Wait(Wait {
                until_ms: None,
                reason: crate::scheduler::WaitReason::Empty,
            })),
        }
    }

    /// Leases up to `max` jobs (and at most [`LEASE_BATCH_BYTES`] of payloads) under one lock
    /// and one store submission, then reads their payloads from the store. The `Wait` is
    /// present when the queue had no more to lease now and says when to ask again (`None`
    /// with fewer than `max` jobs: the byte budget ended the batch; ask again at once).
    pub fn next_ready_many(
        &self,
        queue: &str,
        max: usize,
    ) -> Result<(Vec<Lease>, Option<Wait>), QueueError> {
        let q = self.queue(queue)?;
        if let Some(e) = self.store.failure() {
            return Err(e.into());
        }
        let now = self.clock.now_ms();
        let mut leases = Vec::new();
        let mut muts = Vec::new();
        let mut wait = None;
        {
            let mut st = q.state.lock();
            let mut bytes = 0usize;
            // At most LEASE_BATCH_BYTES of payloads per look (and always one job): the
            // payloads are read into memory together.
            while leases.len() < max && bytes < LEASE_BATCH_BYTES {
                match st.lease_next(now, &mut muts) {
                    Ok(l) => {
                        bytes = bytes.saturating_add(l.job.payload_bytes as usize);
                        leases.push(l);
                    }
                    Err(w) => {
                        wait = Some(w);
                        break;
                    }
                }
            }
            if !muts.is_empty() {
                self.store.submit(Batch::detached(muts))?;
            }
            if !leases.is_empty()
                && q.room_waiters.load(Ordering::Acquire) > 0
                && (st.ready_len() as u64) < q.config().backpressure.ready
            {
                q.room.notify_waiters();
            }
        }
        // The payloads, from the store, outside the queue lock (a leased job's record and
        // payload were committed before it became visible).
        let ids: Vec<JobId> = leases.iter().map(|l| l.job.id).collect();
        let payloads = match self.store.payloads(&ids) {
            Ok(p) => p,
            Err(e) => {
                for l in &leases {
                    if let Ok(d) = self.release(l.job.id, l.epoch, None) {
                        drop(d);
                    }
                }
                return Err(e.into());
            }
        };
        let mut out = Vec::with_capacity(leases.len());
        for (mut l, p) in leases.into_iter().zip(payloads) {
            match p {
                Some(p) => {
                    l.payload = p;
                    out.push(l);
                }
                // Deleted meanwhile (purge, delete): its lease is void.
                None => {
                    tracing::debug!(job = %l.job.id, "leased job has no payload: deleted meanwhile")
                }
            }
        }
        Ok((out, wait))
    }

    /// Reads the payloads of `infos` from the store, until `budget` bytes are loaded (the
    /// rest keep `payload: None`).
    fn with_payloads(
        &self,
        mut infos: Vec<JobInfo>,
        budget: usize,
    ) -> Result<Vec<JobInfo>, QueueError> {
        let mut spent = 0usize;
        let n = infos
            .iter()
            .take_while(|i| {
                spent = spent.saturating_add(i.job.payload_bytes as usize);
                spent <= budget
            })
            .count()
            .max(1)
            .min(infos.len());
        let ids: Vec<JobId> = infos[..n].iter().map(|i| i.job.id).collect();
        for (info, p) in infos.iter_mut().zip(self.store.payloads(&ids)?) {
            info.payload = p;
        }
        Ok(infos)
    }

    /// A notifier signalled when `queue` may have work for the dispatcher (push committed,
    /// completion or failure freeing a slot, expiry, requeue). It uses `notify_one`, which keeps a
    /// permit when nobody waits, so a single dispatcher per queue never misses a wakeup.
    pub fn notifier(&self, queue: &str) -> Result<Arc<Notify>, QueueError> {
        Ok(self.queue(queue)?.notify.clone())
    }

    fn leased_queue(&self, job: JobId) -> Result<Arc<QueueShared>, QueueError> {
        self.index.get(job).ok_or(QueueError::UnknownJob(job))
    }

    /// Completes a leased job (deletes it, counts it). `StaleLease` if `epoch` is not the
    /// job's current lease: the result of a worker whose lease expired never overwrites a newer
    /// attempt.
    pub fn complete(&self, job: JobId, epoch: u64) -> Result<Durable, QueueError> {
        self.complete_with(job, epoch, None)
    }

    /// [`Queues::complete`], committing `record` (a [`Mutation::PutResult`]) in the same batch
    /// as the completion: a replicated store then has the job's result exactly when it has its
    /// completion.
    pub fn complete_with(
        &self,
        job: JobId,
        epoch: u64,
        record: Option<Mutation>,
    ) -> Result<Durable, QueueError> {
        let q = self.leased_queue(job)?;
        let durable = {
            let mut st = q.state.lock();
            st.check_lease(job, epoch)?;
            let mut muts = Vec::with_capacity(3);
            st.complete(job, &mut muts);
            muts.extend(record);
            self.submit_tracked(muts, false, false)?
        };
        self.index.remove(job);
        q.notify.notify_one();
        Ok(durable)
    }

    /// Fails the current attempt with an error URI and message. The job is dead-lettered at once
    /// if the URI is non-retryable for its queue or its attempts are exhausted, else scheduled
    /// per its retry policy (or dead-lettered if the policy allows no more).
    pub fn fail(
        &self,
        job: JobId,
        epoch: u64,
        error_uri: &str,
        message: &str,
    ) -> Result<Settled, QueueError> {
        check_name("error_uri", error_uri)?;
        let q = self.leased_queue(job)?;
        let now = self.clock.now_ms();
        let (outcome, durable, muts_removed) = {
            let mut st = q.state.lock();
            st.check_lease(job, epoch)?;
            let err = ErrorInfo {
                uri: truncate_uri(error_uri),
                message: truncate_message(message),
                at_ms: now,
            };
            let mut muts = Vec::with_capacity(4);
            let outcome = st
                .fail(job, err, now, false, &mut muts)
                .ok_or(QueueError::UnknownJob(job))?;
            let removed: Vec<Mutation> = muts
                .iter()
                .filter(|m| matches!(m, Mutation::RemoveJob(_)))
                .cloned()
                .collect();
            (outcome, self.submit_tracked(muts, false, false)?, removed)
        };
        self.index.remove_all(&muts_removed);
        q.notify.notify_one();
        Ok(Settled { outcome, durable })
    }

    /// Extends a lease to `now + by` (default: the queue's `lease_timeout`); never shortens it.
    /// Returns the new deadline (unix ms).
    pub fn extend(
        &self,
        job: JobId,
        epoch: u64,
        by: Option<Duration>,
    ) -> Result<(u64, Durable), QueueError> {
        let q = self.leased_queue(job)?;
        let by = by.unwrap_or(q.config().lease_timeout);
        if by > MAX_LEASE {
            return Err(QueueError::invalid(
                "by",
                format!("{} is longer than 7 days", human::format_duration(by)),
            ));
        }
        let now = self.clock.now_ms();
        let mut st = q.state.lock();
        st.check_lease(job, epoch)?;
        let mut muts = Vec::new();
        let deadline = st.extend(job, now.saturating_add(duration_ms(by)), &mut muts);
        let durable = self.submit_tracked(muts, false, false)?;
        Ok((deadline, durable))
    }

    /// Gives a leased job back without counting the attempt (e.g. the worker went away before
    /// the job was sent to it). It is due again after `delay` (default: at once).
    pub fn release(
        &self,
        job: JobId,
        epoch: u64,
        delay: Option<Duration>,
    ) -> Result<Durable, QueueError> {
        let q = self.leased_queue(job)?;
        let now = self.clock.now_ms();
        let durable = {
            let mut st = q.state.lock();
            st.check_lease(job, epoch)?;
            let mut muts = Vec::with_capacity(2);
            let run_at = now.saturating_add(delay.map(duration_ms).unwrap_or(0));
            st.release(job, run_at, now, &mut muts);
            self.submit_tracked(muts, false, false)?
        };
        q.notify.notify_one();
        Ok(durable)
    }

    /// Expires overdue leases (each counts as a failed attempt, `switchyard.queue.lease_expired`),
    /// forgets idempotency keys past their window, prunes dead letters past retention. Call it
    /// at `next_wakeup_ms` (or simply every second).
    pub fn maintain(&self) -> Result<Maintenance, QueueError> {
        let now = self.clock.now_ms();
        let queues: Vec<Arc<QueueShared>> = self.registry.read().values().cloned().collect();
        let mut out = Maintenance::default();
        for q in queues {
            let mut muts = Vec::new();
            let (expired, next) = {
                let mut st = q.state.lock();
                let expired = st.expire(now, &mut muts);
                st.prune_idempotency(now, &mut muts);
                st.prune_dead(now, &mut muts);
                let next = st.next_maintenance();
                if !muts.is_empty() {
                    self.store.submit(Batch::detached(muts.clone()))?;
                }
                (expired, next)
            };
            self.index.remove_all(&muts);
            if !expired.is_empty() {
                q.notify.notify_one();
            }
            out.expired
                .extend(expired.into_iter().map(|(job, epoch, outcome)| Expired {
                    job,
                    epoch,
                    outcome,
                }));
            out.next_wakeup_ms = match (out.next_wakeup_ms, next) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(out)
    }

    /// Calls [`Queues::maintain`] whenever it has work, and at least every `max_interval`,
    /// handing every expired lease to `on_expired` (e.g. to cancel the worker's call and to
    /// publish a final error on the job's result topic). Ends when the `Queues` is dropped or
    /// its store closes or fails. Lease expiry is noticed at most `max_interval` late.
    ///
    /// ```text
    /// tokio::spawn(Queues::run_maintenance(Arc::downgrade(&queues), Duration::from_secs(1), |e| ...));
    /// ```
    pub async fn run_maintenance(
        queues: Weak<Queues>,
        max_interval: Duration,
        mut on_expired: impl FnMut(Expired) + Send,
    ) {
        loop {
            let sleep = {
                let Some(q) = queues.upgrade() else { return };
                match q.maintain() {
                    Ok(m) => {
                        for e in m.expired {
                            on_expired(e);
                        }
                        m.next_wakeup_ms
                            .map(|t| q.clock.until(t))
                            .unwrap_or(max_interval)
                            .min(max_interval)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "queue maintenance stops");
                        return;
                    }
                }
            };
            tokio::time::sleep(sleep.max(Duration::from_millis(1))).await;
        }
    }

    /// Figures of one queue.
    pub fn stats(&self, queue: &str) -> Result<QueueStats, QueueError> {
        let q = self.queue(queue)?;
        let now = self.clock.now_ms();
        let s = q.state.lock().stats(now);
        Ok(s)
    }

    /// Figures of every queue, by name.
    pub fn list(&self) -> Vec<QueueStats> {
        let now = self.clock.now_ms();
        let queues: Vec<Arc<QueueShared>> = self.registry.read().values().cloned().collect();
        let mut v: Vec<QueueStats> = queues.iter().map(|q| q.state.lock().stats(now)).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Up to `n` waiting jobs in dispatch order (ready by priority, then scheduled by time),
    /// with their payloads read from the store until [`LISTING_PAYLOAD_BUDGET`] bytes are
    /// loaded (the first always; later ones keep `payload: None`).
    pub fn peek(&self, queue: &str, n: usize) -> Result<Vec<JobInfo>, QueueError> {
        let q = self.queue(queue)?;
        let now = self.clock.now_ms();
        let infos = {
            let mut st = q.state.lock();
            st.promote(now);
            st.peek(n)
        };
        self.with_payloads(infos, LISTING_PAYLOAD_BUDGET)
    }

    /// Up to `n` dead jobs, newest first (payloads as for [`Queues::peek`]).
    pub fn dead(&self, queue: &str, n: usize) -> Result<Vec<JobInfo>, QueueError> {
        let infos = self.queue(queue)?.state.lock().dead_newest(n);
        self.with_payloads(infos, LISTING_PAYLOAD_BUDGET)
    }

    /// The status of a job (any state), if it exists; no store read.
    pub fn job_status(&self, id: JobId) -> Option<JobStatus> {
        self.index
            .get(id)
            .and_then(|q| q.state.lock().info(id))
            .map(|i| i.status)
    }

    /// The queue a job (any state) is in, if it exists; no store read.
    pub fn job_queue(&self, id: JobId) -> Option<String> {
        self.index
            .get(id)
            .and_then(|q| q.state.lock().info(id))
            .map(|i| i.job.queue.to_string())
    }

    /// One job by id (any state), if it exists, with its payload (`None` if the store cannot
    /// read it).
    pub fn job(&self, id: JobId) -> Option<JobInfo> {
        let info = self.index.get(id).and_then(|q| q.state.lock().info(id))?;
        match self.with_payloads(vec![info.clone()], usize::MAX) {
            Ok(mut v) => v.pop(),
            Err(e) => {
                tracing::warn!(job = %id, "cannot read the job's payload: {e}");
                Some(info)
            }
        }
    }

    /// Moves dead jobs back to ready (attempts reset to 0, last error kept). With explicit ids,
    /// every id must be a dead job of the queue, else nothing is requeued. Returns how many.
    pub async fn requeue(&self, queue: &str, which: Requeue) -> Result<usize, QueueError> {
        let q = self.queue(queue)?;
        let now = self.clock.now_ms();
        let (n, durable) = {
            let mut st = q.state.lock();
            let mut ids = match which {
                Requeue::AllDead => st.dead_ids(),
                Requeue::Jobs(ids) => {
                    if let Some(bad) = ids.iter().find(|&&id| !st.is_dead(id)) {
                        return Err(QueueError::invalid(
                            "jobs",
                            format!("job {bad} is not a dead job of queue `{queue}`; nothing was requeued"),
                        ));
                    }
                    ids
                }
            };
            ids.sort_unstable();
            ids.dedup();
            let mut muts = Vec::with_capacity(ids.len());
            st.requeue(&ids, now, &mut muts);
            (ids.len(), self.submit_tracked(muts, false, true)?)
        };
        q.notify.notify_one();
        durable.await?;
        Ok(n)
    }

    /// Deletes jobs of a queue; returns how many.
    pub async fn purge(&self, queue: &str, which: Purge) -> Result<usize, QueueError> {
        let q = self.queue(queue)?;
        let (muts, durable) = {
            let mut st = q.state.lock();
            let mut ids = Vec::new();
            if matches!(which, Purge::Ready | Purge::All) {
                ids.extend(st.waiting_ids());
            }
            if matches!(which, Purge::All) {
                ids.extend(st.leased_ids());
            }
            if matches!(which, Purge::Dead | Purge::All) {
                ids.extend(st.dead_ids());
            }
            let mut muts: Vec<Mutation> = Vec::with_capacity(ids.len());
            for id in ids {
                st.remove(id);
                muts.push(Mutation::RemoveJob(id));
            }
            let durable = self.submit_tracked(muts.clone(), false, true)?;
            (muts, durable)
        };
        self.index.remove_all(&muts);
        q.notify.notify_one();
        durable.await?;
        Ok(muts.len())
    }

    /// Commits what is queued and closes the store; later operations fail with "store closed".
    /// Also done on drop.
    pub fn close(&self) {
        self.store.close();
    }
}

impl Drop for Queues {
    fn drop(&mut self) {
        self.store.close();
    }
}

/// Pushed jobs whose commit failed: forgotten, with what they held.
fn abandon(visible: Vec<(Arc<QueueShared>, Arc<Job>, JobStatus)>) {
    for (q, job, _) in visible {
        q.state.lock().abandon(&job);
    }
}

/// Inserts committed jobs into their queues (runs on the store's writer thread). Jobs of a
/// queue deleted meanwhile were deleted with it.
fn make_visible(
    index: &JobIndex,
    clock: &Clock,
    visible: Vec<(Arc<QueueShared>, Arc<Job>, JobStatus)>,
) {
    let now = clock.now_ms();
    let mut i = 0;
    while i < visible.len() {
        let q = visible[i].0.clone();
        {
            let mut st = q.state.lock();
            while i < visible.len() && Arc::ptr_eq(&visible[i].0, &q) {
                let (_, job, status) = &visible[i];
                i += 1;
                if !st.committing.remove(&job.id) {
                    continue;
                }
                if let Some(key) = &job.idempotency_key {
                    if let Some(e) = st.idem.get_mut(key.as_str()) {
                        if e.job == job.id {
                            e.pending = false;
                        }
                    }
                }
                index.insert(job.id, q.clone());
                st.insert(job.clone(), status.clone(), now);
            }
        }
        q.notify.notify_one();
    }
}
