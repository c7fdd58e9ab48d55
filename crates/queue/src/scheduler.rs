//! One queue's in-memory state: the job table and the indexes the dispatcher reads.
//!
//! Indexes (each job is in exactly one, matching its `JobStatus::state`):
//! * `ready[p]`: due jobs of priority `p`, ordered by `(run_at, id)`; dispatch takes the first of
//!   the highest non-empty priority;
//! * `scheduled`: jobs waiting for `run_at`, ordered by `(run_at, id)`; promoted to `ready` when
//!   due;
//! * `leased`: jobs held by workers, ordered by `(deadline, id)`; expired from the front;
//! * `dead`: dead letters, ordered by `(dead_at, id)`; retention prunes from the front.
//!
//! Every change that must survive a restart appends [`Mutation`]s to a caller-provided vector;
//! the caller submits them to the store while still holding the queue lock, so the store sees
//! the changes of one job in the order they were made.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::clock::duration_ms;
use crate::config::{QueueConfig, RateLimit};
use crate::model::{DeadReason, ErrorInfo, Job, JobId, JobInfo, JobState, JobStatus, Priority};
use crate::store::{Counters, Mutation};
use crate::usage::{sub, RuntimeUsage};

/// Error URI recorded when a lease expires.
pub const LEASE_EXPIRED: &str = "switchyard.queue.lease_expired";
/// Error URI recorded for a job that was leased when the previous run stopped (crash).
pub const LEASE_LOST: &str = "switchyard.queue.lease_lost";

/// Longest error message kept with a job (it stays in memory while the job waits for its
/// retry or is dead; a worker chooses it).
pub(crate) const MAX_ERROR_MESSAGE: usize = 1024;
/// Longest error URI kept with a job.
pub(crate) const MAX_ERROR_URI: usize = 512;

/// What happened to a failed attempt.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Another attempt is scheduled at `at_ms` (unix ms).
    Retry {
        /// When the job is due again.
        at_ms: u64,
    },
    /// The job was dead-lettered.
    Dead {
        /// Why.
        reason: DeadReason,
    },
}

/// A job handed to a worker.
#[derive(Clone, Debug)]
pub struct Lease {
    /// The job (shared, never copied).
    pub job: Arc<Job>,
    /// Its payload, read from the store when the job was leased.
    pub payload: crate::model::Payload,
    /// Fencing token: pass it to `complete`, `fail`, `extend`, `release`.
    pub epoch: u64,
    /// Which attempt this is (1 for the first).
    pub attempt: u32,
    /// When the lease expires unless extended, unix ms.
    pub deadline_ms: u64,
}

/// Why the dispatcher got no job.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum WaitReason {
    /// No job is due.
    Empty,
    /// The queue's concurrency limit is reached.
    Concurrency,
    /// The rate limit has no token left.
    RateLimit,
}

/// When to ask again.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Wait {
    /// Ask again at this time (unix ms) at the latest; `None`: only when the queue's notifier
    /// fires (a push, a completion, a failure, an expiry, a requeue).
    pub until_ms: Option<u64>,
    /// Why there was nothing to lease.
    pub reason: WaitReason,
}

pub(crate) struct Entry {
    pub(crate) job: Arc<Job>,
    pub(crate) status: JobStatus,
}

pub(crate) struct IdemEntry {
    pub(crate) job: JobId,
    pub(crate) expires_ms: u64,
    /// The original push is not committed yet.
    pub(crate) pending: bool,
}

struct TokenBucket {
    per_ms: f64,
    burst: f64,
    tokens: f64,
    last_ms: u64,
}

impl TokenBucket {
    fn new(r: &RateLimit, now: u64) -> TokenBucket {
        let burst = f64::from(r.burst());
        TokenBucket {
            per_ms: r.per_second / 1000.0,
            burst,
            tokens: burst,
            last_ms: now,
        }
    }
    fn refill(&mut self, now: u64) {
        if now > self.last_ms {
            let add = (now - self.last_ms) as f64 * self.per_ms;
            self.tokens = (self.tokens + add).min(self.burst);
            self.last_ms = now;
        }
    }
    fn has_token(&mut self, now: u64) -> bool {
        self.refill(now);
        self.tokens >= 1.0
    }
    fn take(&mut self) {
        self.tokens -= 1.0;
    }
    fn next_token_ms(&self, now: u64) -> u64 {
        if self.tokens >= 1.0 {
            return now;
        }
        let wait = ((1.0 - self.tokens) / self.per_ms).ceil();
        now.saturating_add(if wait.is_finite() {
            wait as u64
        } else {
            u64::MAX / 2
        })
        .max(now.saturating_add(1))
    }
}

pub(crate) struct QueueState {
    pub(crate) config: Arc<QueueConfig>,
    pub(crate) name: Arc<str>,
    pub(crate) jobs: HashMap<JobId, Entry>,
    ready: [BTreeSet<(u64, JobId)>; Priority::LEVELS],
    ready_len: usize,
    scheduled: BTreeSet<(u64, JobId)>,
    leased: BTreeSet<(u64, JobId)>,
    dead: BTreeSet<(u64, JobId)>,
    /// Remembered idempotency keys (each key's text is shared with `idem_expiry`).
    pub(crate) idem: HashMap<Arc<str>, IdemEntry>,
    /// The keys by expiry: pruned from the front when their window ends, and evicted from
    /// the front when the queue holds `idempotency_max_keys`.
    idem_expiry: BTreeSet<(u64, Arc<str>)>,
    bucket: Option<TokenBucket>,
    pub(crate) counters: Counters,
    /// Ids of pushed jobs whose commit is not durable yet (not in `jobs` until it is).
    pub(crate) committing: HashSet<JobId>,
    /// The queue was deleted: jobs whose commit completes later are not inserted.
    pub(crate) deleted: bool,
    /// For a queue declared at run time: what the realm's run-time queues hold together.
    usage: Option<Arc<RuntimeUsage>>,
    /// Jobs this queue holds (including pushed jobs still committing) and their payload
    /// bytes, as counted in `usage`.
    held_jobs: u64,
    held_bytes: u64,
    /// The payload bytes of every queue of the store (for the disk reserve).
    stored: Option<Arc<AtomicU64>>,
}

impl QueueState {
    pub(crate) fn new(config: Arc<QueueConfig>, counters: Counters, now: u64) -> QueueState {
        QueueState {
            bucket: config.rate_limit.as_ref().map(|r| TokenBucket::new(r, now)),
            name: config.name.as_str().into(),
            config,
            jobs: HashMap::new(),
            ready: Default::default(),
            ready_len: 0,
            scheduled: BTreeSet::new(),
            leased: BTreeSet::new(),
            dead: BTreeSet::new(),
            idem: HashMap::new(),
            idem_expiry: BTreeSet::new(),
            counters,
            committing: HashSet::new(),
            deleted: false,
            usage: None,
            held_jobs: 0,
            held_bytes: 0,
            stored: None,
        }
    }

    /// Counts this queue's payload bytes in `stored` (every queue).
    pub(crate) fn count_stored(&mut self, stored: Arc<AtomicU64>) {
        self.stored = Some(stored);
    }

    /// Counts this (run-time) queue's jobs and keys in `usage`.
    pub(crate) fn count_in(&mut self, usage: Arc<RuntimeUsage>) {
        self.usage = Some(usage);
    }

    /// Jobs ready to run now (due, not leased).
    pub(crate) fn ready_len(&self) -> usize {
        self.ready_len
    }

    /// Takes a new configuration (a reload of the config file): what is already queued keeps
    /// its stored target and attempts; new leases, failures and pushes follow `config`. A new
    /// rate limit starts a full bucket; lowered idempotency-key and dead-letter bounds apply at
    /// once (the mutations that forget keys and dead jobs go to `muts`).
    pub(crate) fn reconfigure(
        &mut self,
        config: Arc<QueueConfig>,
        now: u64,
        muts: &mut Vec<Mutation>,
    ) {
        if config.rate_limit != self.config.rate_limit {
            self.bucket = config.rate_limit.as_ref().map(|r| TokenBucket::new(r, now));
        }
        self.config = config;
        self.evict_keys(0, muts);
        self.prune_dead(now, muts);
    }

    /// Stops counting this queue in the run-time usage (it is now declared by the config file).
    pub(crate) fn stop_counting_usage(&mut self) {
        if let Some(u) = self.usage.take() {
            u.release(self.held_jobs, self.held_bytes);
            u.forget_keys(self.idem.len() as u64);
        }
    }

    /// Starts counting what this queue holds in the run-time usage (it is no longer in the
    /// config file, and counts as declared at run time, as after a restart). The usage may then
    /// pass its bounds: new pushes to run-time queues are refused until it is back under them.
    pub(crate) fn start_counting_usage(&mut self, usage: Arc<RuntimeUsage>) {
        if self.usage.is_none() {
            usage.jobs.fetch_add(self.held_jobs, Ordering::Relaxed);
            usage.bytes.fetch_add(self.held_bytes, Ordering::Relaxed);
            usage.add_keys(self.idem.len() as u64);
            self.usage = Some(usage);
        }
    }

    /// The realm-wide usage this queue counts in (run-time queues only).
    pub(crate) fn usage(&self) -> Option<&Arc<RuntimeUsage>> {
        self.usage.as_ref()
    }

    /// Counts a job that enters the queue (pushed, or loaded at start). For a pushed job the
    /// realm-wide room was reserved already (`reserved`).
    pub(crate) fn hold(&mut self, bytes: u32, reserved: bool) {
        self.held_jobs += 1;
        self.held_bytes += u64::from(bytes);
        if let Some(s) = &self.stored {
            s.fetch_add(u64::from(bytes), Ordering::Relaxed);
        }
        if let (Some(u), false) = (&self.usage, reserved) {
            u.jobs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            u.bytes
                .fetch_add(u64::from(bytes), std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Forgets a pushed job whose commit failed (it never became visible): gives back what it
    /// held, and its idempotency key if the key still names it (a push again with the key is
    /// a new job, not a duplicate of one the store never took).
    pub(crate) fn abandon(&mut self, job: &Job) {
        if !self.committing.remove(&job.id) {
            return;
        }
        let bytes = u64::from(job.payload_bytes);
        self.held_jobs = self.held_jobs.saturating_sub(1);
        self.held_bytes = self.held_bytes.saturating_sub(bytes);
        if let Some(u) = &self.usage {
            u.release(1, bytes);
        }
        if let Some(s) = &self.stored {
            sub(s, bytes);
        }
        if let Some(key) = &job.idempotency_key {
            if let Some((k, e)) = self.idem.remove_entry(key.as_str()) {
                if e.job == job.id {
                    self.idem_expiry.remove(&(e.expires_ms, k));
                    if let Some(u) = &self.usage {
                        u.forget_keys(1);
                    }
                } else {
                    self.idem.insert(k, e);
                }
            }
        }
    }

    /// Gives back everything this queue counts (it is being deleted).
    pub(crate) fn release_all(&mut self) {
        if let Some(u) = &self.usage {
            u.release(self.held_jobs, self.held_bytes);
            u.forget_keys(self.idem.len() as u64);
        }
        if let Some(s) = &self.stored {
            sub(s, self.held_bytes);
        }
        self.held_jobs = 0;
        self.held_bytes = 0;
    }

    /// Removes `id` from whichever index its current state puts it in.
    fn unindex(&mut self, id: JobId) {
        let Some(e) = self.jobs.get(&id) else { return };
        let run_at = e.status.run_at_ms;
        match e.status.state {
            JobState::Ready => {
                let p = usize::from(e.job.priority.get());
                if self.ready[p].remove(&(run_at, id)) {
                    self.ready_len -= 1;
                }
            }
            JobState::Scheduled => {
                self.scheduled.remove(&(run_at, id));
            }
            JobState::Leased { deadline_ms, .. } => {
                self.leased.remove(&(deadline_ms, id));
            }
            JobState::Dead { at_ms, .. } => {
                self.dead.remove(&(at_ms, id));
            }
        }
    }

    /// Makes an (unindexed) job wait for `run_at`: Ready if due, else Scheduled.
    fn make_waiting(&mut self, id: JobId, run_at: u64, now: u64) {
        let Some(e) = self.jobs.get_mut(&id) else {
            return;
        };
        e.status.run_at_ms = run_at;
        if run_at <= now {
            e.status.state = JobState::Ready;
            let p = usize::from(e.job.priority.get());
            if self.ready[p].insert((run_at, id)) {
                self.ready_len += 1;
            }
        } else {
            e.status.state = JobState::Scheduled;
            self.scheduled.insert((run_at, id));
        }
    }

    /// Inserts a job as loaded or as just committed (waiting, dead or leased).
    pub(crate) fn insert(&mut self, job: Arc<Job>, status: JobStatus, now: u64) {
        let id = job.id;
        let state = status.state.clone();
        let run_at = status.run_at_ms;
        self.jobs.insert(id, Entry { job, status });
        match state {
            JobState::Ready | JobState::Scheduled => self.make_waiting(id, run_at, now),
            JobState::Leased { deadline_ms, .. } => {
                self.leased.insert((deadline_ms, id));
            }
            JobState::Dead { at_ms, .. } => {
                self.dead.insert((at_ms, id));
            }
        }
    }

    /// Removes a job entirely; returns it.
    pub(crate) fn remove(&mut self, id: JobId) -> Option<Entry> {
        self.unindex(id);
        let e = self.jobs.remove(&id)?;
        let bytes = u64::from(e.job.payload_bytes);
        self.held_jobs = self.held_jobs.saturating_sub(1);
        self.held_bytes = self.held_bytes.saturating_sub(bytes);
        if let Some(u) = &self.usage {
            u.release(1, bytes);
        }
        if let Some(s) = &self.stored {
            sub(s, bytes);
        }
        Some(e)
    }

    /// Moves due scheduled jobs to ready.
    pub(crate) fn promote(&mut self, now: u64) {
        while let Some(&(run_at, id)) = self.scheduled.first() {
            if run_at > now {
                break;
            }
            self.scheduled.pop_first();
            if let Some(e) = self.jobs.get_mut(&id) {
                e.status.state = JobState::Ready;
                let p = usize::from(e.job.priority.get());
                if self.ready[p].insert((run_at, id)) {
                    self.ready_len += 1;
                }
            }
        }
    }

    /// Leases the next due job if limits allow; otherwise says how long to wait.
    pub(crate) fn lease_next(&mut self, now: u64, muts: &mut Vec<Mutation>) -> Result<Lease, Wait> {
        self.promote(now);
        let limit = self.config.concurrency as usize;
        if limit > 0 && self.leased.len() >= limit {
            return Err(Wait {
                until_ms: None,
                reason: WaitReason::Concurrency,
            });
        }
        if self.ready_len == 0 {
            return Err(Wait {
                until_ms: self.scheduled.first().map(|&(t, _)| t),
                reason: WaitReason::Empty,
            });
        }
        if let Some(b) = &mut self.bucket {
            if !b.has_token(now) {
                return Err(Wait {
                    until_ms: Some(b.next_token_ms(now)),
                    reason: WaitReason::RateLimit,
                });
            }
            b.take();
        }
        let Some(p) = (0..Priority::LEVELS)
            .rev()
            .find(|&p| !self.ready[p].is_empty())
        else {
            return Err(Wait {
                until_ms: None,
                reason: WaitReason::Empty,
            });
        };
        let Some((_, id)) = self.ready[p].pop_first() else {
            return Err(Wait {
                until_ms: None,
                reason: WaitReason::Empty,
            });
        };
        self.ready_len -= 1;
        let deadline_ms = now.saturating_add(duration_ms(self.config.lease_timeout));
        let Some(e) = self.jobs.get_mut(&id) else {
            // Unreachable while the indexes are consistent; never hand out a ghost.
            return Err(Wait {
                until_ms: Some(now),
                reason: WaitReason::Empty,
            });
        };
        e.status.attempts = e.status.attempts.saturating_add(1);
        e.status.epoch = e.status.epoch.saturating_add(1);
        let epoch = e.status.epoch;
        e.status.state = JobState::Leased { epoch, deadline_ms };
        self.leased.insert((deadline_ms, id));
        muts.push(Mutation::PutLease {
            id,
            epoch,
            deadline_ms,
            attempts: e.status.attempts,
        });
        Ok(Lease {
            job: e.job.clone(),
            payload: crate::model::Payload::default(),
            epoch,
            attempt: e.status.attempts,
            deadline_ms,
        })
    }

    /// The error of a call presenting `epoch` for `id`, if it is not the current lease.
    pub(crate) fn check_lease(&self, id: JobId, epoch: u64) -> Result<(), crate::QueueError> {
        match self.jobs.get(&id) {
            None => Err(crate::QueueError::UnknownJob(id)),
            Some(e) => match e.status.state {
                JobState::Leased { epoch: cur, .. } if cur == epoch => Ok(()),
                _ => Err(crate::QueueError::StaleLease { job: id, epoch }),
            },
        }
    }

    /// Completes a leased job (lease already checked).
    pub(crate) fn complete(&mut self, id: JobId, muts: &mut Vec<Mutation>) {
        self.remove(id);
        self.counters.completed = self.counters.completed.saturating_add(1);
        muts.push(Mutation::RemoveJob(id));
        muts.push(self.counters_mutation());
    }

    /// Extends a lease (already checked) to `max(deadline, now + by)`; returns the deadline.
    pub(crate) fn extend(&mut self, id: JobId, new_deadline: u64, muts: &mut Vec<Mutation>) -> u64 {
        let Some(e) = self.jobs.get_mut(&id) else {
            return new_deadline;
        };
        let JobState::Leased { epoch, deadline_ms } = e.status.state else {
            return new_deadline;
        };
        let deadline = deadline_ms.max(new_deadline);
        if deadline != deadline_ms {
            self.leased.remove(&(deadline_ms, id));
            self.leased.insert((deadline, id));
            e.status.state = JobState::Leased {
                epoch,
                deadline_ms: deadline,
            };
            muts.push(Mutation::PutLease {
                id,
                epoch,
                deadline_ms: deadline,
                attempts: e.status.attempts,
            });
        }
        deadline
    }

    /// Returns a leased job (already checked) without counting the attempt.
    pub(crate) fn release(&mut self, id: JobId, run_at: u64, now: u64, muts: &mut Vec<Mutation>) {
        self.unindex(id);
        if let Some(e) = self.jobs.get_mut(&id) {
            e.status.attempts = e.status.attempts.saturating_sub(1);
        }
        self.make_waiting(id, run_at, now);
        self.put_job_mutation(id, muts);
        muts.push(Mutation::RemoveLease(id));
    }

    /// Records a failed attempt of a leased (or, at recovery, formerly leased) job and applies
    /// the policy. `retry_now` makes a retry due at once (crash recovery) instead of after the
    /// policy's delay.
    pub(crate) fn fail(
        &mut self,
        id: JobId,
        error: ErrorInfo,
        now: u64,
        retry_now: bool,
        muts: &mut Vec<Mutation>,
    ) -> Option<Outcome> {
        let e = self.jobs.get(&id)?;
        let cfg = &self.config;
        let attempts = e.status.attempts;
        let decision = if cfg.is_non_retryable(&error.uri) {
            Err(DeadReason::NonRetryable)
        } else if attempts >= e.job.max_attempts.unwrap_or(cfg.max_attempts) {
            Err(DeadReason::AttemptsExhausted)
        } else {
            let policy = e.job.retry.as_ref().unwrap_or(&cfg.retry);
            match policy.next_delay(attempts, &mut rand::rng()) {
                None => Err(DeadReason::PolicyExhausted),
                Some(_) if retry_now => Ok(now),
                Some(d) => Ok(now.saturating_add(duration_ms(d))),
            }
        };
        self.unindex(id);
        if let Some(e) = self.jobs.get_mut(&id) {
            e.status.last_error = Some(error);
        }
        let outcome = match decision {
            Ok(at_ms) => {
                self.counters.retried = self.counters.retried.saturating_add(1);
                self.make_waiting(id, at_ms, now);
                Outcome::Retry { at_ms }
            }
            Err(reason) => {
                self.counters.dead_lettered = self.counters.dead_lettered.saturating_add(1);
                if let Some(e) = self.jobs.get_mut(&id) {
                    e.status.state = JobState::Dead { reason, at_ms: now };
                }
                self.dead.insert((now, id));
                Outcome::Dead { reason }
            }
        };
        self.put_job_mutation(id, muts);
        muts.push(Mutation::RemoveLease(id));
        muts.push(self.counters_mutation());
        if matches!(outcome, Outcome::Dead { .. }) {
            self.prune_dead(now, muts);
        }
        Some(outcome)
    }

    /// Expires every lease whose deadline has passed; returns what happened to each.
    pub(crate) fn expire(
        &mut self,
        now: u64,
        muts: &mut Vec<Mutation>,
    ) -> Vec<(Arc<Job>, u64, Outcome)> {
        let mut out = Vec::new();
        while let Some(&(deadline, id)) = self.leased.first() {
            if deadline > now {
                break;
            }
            let (job, epoch) = match self.jobs.get(&id) {
                Some(e) => (e.job.clone(), e.status.epoch),
                None => {
                    self.leased.pop_first();
                    continue;
                }
            };
            let err = ErrorInfo {
                uri: LEASE_EXPIRED.into(),
                message: format!("lease of attempt {epoch} expired"),
                at_ms: now,
            };
            match self.fail(id, err, now, false, muts) {
                Some(o) => out.push((job, epoch, o)),
                None => {
                    self.leased.remove(&(deadline, id));
                }
            }
        }
        out
    }

    /// Requeues dead jobs: attempts reset, due now.
    pub(crate) fn requeue(&mut self, ids: &[JobId], now: u64, muts: &mut Vec<Mutation>) {
        for &id in ids {
            self.unindex(id);
            if let Some(e) = self.jobs.get_mut(&id) {
                e.status.attempts = 0;
            }
            self.make_waiting(id, now, now);
            self.put_job_mutation(id, muts);
        }
    }

    /// Ids of dead jobs, oldest first.
    pub(crate) fn dead_ids(&self) -> Vec<JobId> {
        self.dead.iter().map(|&(_, id)| id).collect()
    }

    /// Whether `id` is a dead job of this queue.
    pub(crate) fn is_dead(&self, id: JobId) -> bool {
        self.jobs
            .get(&id)
            .is_some_and(|e| matches!(e.status.state, JobState::Dead { .. }))
    }

    /// Ids of waiting (ready + scheduled) jobs.
    pub(crate) fn waiting_ids(&self) -> Vec<JobId> {
        self.ready
            .iter()
            .flat_map(|s| s.iter().map(|&(_, id)| id))
            .chain(self.scheduled.iter().map(|&(_, id)| id))
            .collect()
    }

    /// Ids of leased jobs.
    pub(crate) fn leased_ids(&self) -> Vec<JobId> {
        self.leased.iter().map(|&(_, id)| id).collect()
    }

    /// Deletes dead jobs beyond the retention limits.
    pub(crate) fn prune_dead(&mut self, now: u64, muts: &mut Vec<Mutation>) {
        let max_jobs = self.config.dead_letter.max_jobs;
        let max_age = duration_ms(self.config.dead_letter.max_age);
        while let Some(&(at, id)) = self.dead.first() {
            let too_many = max_jobs > 0 && self.dead.len() as u64 > max_jobs;
            let too_old = max_age > 0 && at.saturating_add(max_age) <= now;
            if !(too_many || too_old) {
                break;
            }
            self.remove(id);
            muts.push(Mutation::RemoveJob(id));
        }
    }

    /// Forgets idempotency keys whose window has passed.
    pub(crate) fn prune_idempotency(&mut self, now: u64, muts: &mut Vec<Mutation>) {
        while let Some((exp, _)) = self.idem_expiry.first() {
            if *exp > now {
                break;
            }
            self.forget_oldest_key(muts);
        }
    }

    /// Forgets the key closest to the end of its window (the oldest key).
    fn forget_oldest_key(&mut self, muts: &mut Vec<Mutation>) {
        let Some((exp, key)) = self.idem_expiry.pop_first() else {
            return;
        };
        if self.idem.get(&key).is_some_and(|e| e.expires_ms == exp) {
            self.idem.remove(&key);
            if let Some(u) = &self.usage {
                u.forget_keys(1);
            }
            muts.push(Mutation::RemoveIdempotencyKey {
                queue: self.name.clone(),
                key: key.to_string(),
            });
        }
    }

    /// Forgets the oldest keys until at most `idempotency_max_keys - room` remain. Returns how
    /// many were forgotten.
    pub(crate) fn evict_keys(&mut self, room: usize, muts: &mut Vec<Mutation>) -> usize {
        let cap = usize::try_from(self.config.idempotency_max_keys).unwrap_or(usize::MAX);
        let keep = cap.saturating_sub(room);
        let mut evicted = 0;
        while self.idem.len() > keep && !self.idem_expiry.is_empty() {
            self.forget_oldest_key(muts);
            evicted += 1;
        }
        evicted
    }

    /// Remembers an idempotency key (replacing an expired entry), forgetting the oldest keys
    /// first if the queue holds its `idempotency_max_keys`.
    pub(crate) fn remember_key(
        &mut self,
        key: &str,
        job: JobId,
        expires_ms: u64,
        pending: bool,
        muts: &mut Vec<Mutation>,
    ) {
        let key: Arc<str> = match self.idem.remove_entry(key) {
            Some((k, old)) => {
                self.idem_expiry.remove(&(old.expires_ms, k.clone()));
                k
            }
            None => {
                if self.evict_keys(1, muts) > 0 {
                    tracing::debug!(queue = %self.name, limit = self.config.idempotency_max_keys, "idempotency keys at their limit: the oldest was forgotten");
                }
                // The run-time queues together hold their limit: this queue forgets its own
                // oldest key (so the realm holds at most the limit plus one key per queue).
                if self.usage.as_ref().is_some_and(|u| u.keys_full()) && !self.idem.is_empty() {
                    self.forget_oldest_key(muts);
                    tracing::debug!(queue = %self.name, "idempotency keys of the run-time queues at their limit (runtime_max_idempotency_keys): the queue's oldest was forgotten");
                }
                if let Some(u) = &self.usage {
                    u.add_keys(1);
                }
                key.into()
            }
        };
        self.idem_expiry.insert((expires_ms, key.clone()));
        self.idem.insert(
            key,
            IdemEntry {
                job,
                expires_ms,
                pending,
            },
        );
    }

    /// When maintenance is next needed: a lease deadline, a key expiry, a dead job's age limit.
    pub(crate) fn next_maintenance(&self) -> Option<u64> {
        let lease = self.leased.first().map(|&(t, _)| t);
        let key = self.idem_expiry.first().map(|(t, _)| *t);
        let max_age = duration_ms(self.config.dead_letter.max_age);
        let dead = if max_age > 0 {
            self.dead.first().map(|&(t, _)| t.saturating_add(max_age))
        } else {
            None
        };
        [lease, key, dead].into_iter().flatten().min()
    }

    pub(crate) fn counters_mutation(&self) -> Mutation {
        Mutation::PutCounters {
            queue: self.name.clone(),
            counters: self.counters,
        }
    }

    pub(crate) fn put_job_mutation(&self, id: JobId, muts: &mut Vec<Mutation>) {
        if let Some(e) = self.jobs.get(&id) {
            muts.push(Mutation::PutJob {
                job: e.job.clone(),
                status: e.status.clone(),
            });
        }
    }

    pub(crate) fn info(&self, id: JobId) -> Option<JobInfo> {
        self.jobs.get(&id).map(|e| JobInfo {
            job: e.job.clone(),
            status: e.status.clone(),
            payload: None,
        })
    }

    /// Waiting jobs in dispatch order (ready by priority, then scheduled by time), at most `n`.
    pub(crate) fn peek(&self, n: usize) -> Vec<JobInfo> {
        self.ready
            .iter()
            .rev()
            .flat_map(|s| s.iter())
            .chain(self.scheduled.iter())
            .take(n)
            .filter_map(|&(_, id)| self.info(id))
            .collect()
    }

    /// Dead jobs, newest first, at most `n`.
    pub(crate) fn dead_newest(&self, n: usize) -> Vec<JobInfo> {
        self.dead
            .iter()
            .rev()
            .take(n)
            .filter_map(|&(_, id)| self.info(id))
            .collect()
    }

    /// Jobs waiting or in flight (not dead).
    pub(crate) fn live_jobs(&self) -> usize {
        self.jobs.len() - self.dead.len()
    }

    pub(crate) fn stats(&mut self, now: u64) -> crate::QueueStats {
        self.promote(now);
        let oldest = self
            .ready
            .iter()
            .filter_map(|s| s.first().map(|&(t, _)| t))
            .min();
        let mut by_priority = [0usize; Priority::LEVELS];
        for (p, s) in self.ready.iter().enumerate() {
            by_priority[p] = s.len();
        }
        crate::QueueStats {
            name: self.config.name.clone(),
            ready: self.ready_len,
            ready_by_priority: by_priority,
            scheduled: self.scheduled.len(),
            in_flight: self.leased.len(),
            dead: self.dead.len(),
            oldest_ready_age_ms: oldest.map(|t| now.saturating_sub(t)),
            retried_total: self.counters.retried,
            dead_lettered_total: self.counters.dead_lettered,
            completed_total: self.counters.completed,
            idempotency_keys: self.idem.len(),
            concurrency: self.config.concurrency,
        }
    }
}

/// Truncates an error message to [`MAX_ERROR_MESSAGE`] bytes on a character boundary.
pub(crate) fn truncate_message(msg: &str) -> String {
    truncate(msg, MAX_ERROR_MESSAGE)
}

/// Truncates an error URI to [`MAX_ERROR_URI`] bytes (`non_retryable_errors` are matched
/// against what is kept).
pub(crate) fn truncate_uri(uri: &str) -> String {
    truncate(uri, MAX_ERROR_URI)
}

fn truncate(msg: &str, max: usize) -> String {
    if msg.len() <= max {
        return msg.to_owned();
    }
    let mut end = max;
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    msg[..end].to_owned()
}
