//! Dispatch: one task per queue leases due jobs (within the queue's
//! concurrency and rate limits) and runs each attempt in its own task.
//!
//! An attempt calls the job's target procedure through the ordinary Dealer,
//! so the registration's invocation policy and concurrency apply:
//! - RESULT completes the job (after the completion is durable, the result
//!   goes to the job's result topic);
//! - an ERROR a worker sent fails the attempt (retry by policy, or dead
//!   letter), whatever its URI (`wamp.error.no_such_procedure` included);
//! - an ERROR the Dealer made because no callee took the call (none
//!   registered, all busy with a full wait queue, the last one gone while
//!   the call waited: [`switchyard_router::internal::CallFailure::unserved`]) gives the job back without
//!   counting the attempt: it is due again after [`NO_WORKER_RETRY`] (and
//!   a queue without any worker parks its dispatcher until one registers).
//!   Who answered decides, never the error URI: a worker that answers
//!   `no_such_procedure` for a job would otherwise get it forever;
//! - a progressive RESULT extends the lease;
//! - when the lease expires, the maintenance task cancels the call; a late
//!   answer is refused by the lease epoch and changes nothing.

use std::sync::Arc;
use switchyard_router::logsafe::Clip;

use switchyard_proto::{errors, Dict, Item, Payload, Value};
use switchyard_queue::store::Mutation;
use switchyard_queue::{
    Expired, Job, Lease, Outcome, QueueError, Target, WaitReason, LEASE_EXPIRED,
};
use switchyard_router::internal::{OnProgress, Reply};
use tokio::sync::Notify;

use super::{payload, QueueService, Running, NO_WORKER_RETRY};

/// Leases taken per look at a queue.
const BATCH: usize = 64;

/// The INVOCATION.Details key of a job's identity (docs/QUEUES.md#workers).
pub const JOB_DETAILS: &str = "x_switchyard_job";

/// Error URI of a job whose stored payload cannot be read.
const INVALID_PAYLOAD: &str = "switchyard.queue.error.invalid_payload";

impl QueueService {
    /// Starts the dispatcher of `queue` unless it runs already (a queue
    /// deleted and declared again gets a new one; the old one ends).
    pub(super) fn ensure_dispatcher(self: &Arc<Self>, queue: &str) {
        let Ok(notify) = self.queues.notifier(queue) else {
            return;
        };
        let mut dispatchers = self.dispatchers.lock();
        if dispatchers
            .get(queue)
            .is_some_and(|n| Arc::ptr_eq(n, &notify))
        {
            return;
        }
        dispatchers.insert(queue.to_string(), notify.clone());
        tokio::spawn(dispatch_loop(
            Arc::downgrade(self),
            queue.to_string(),
            notify,
        ));
    }

    /// Forgets the dispatcher of a deleted queue (whose notifier was
    /// `notify`) and wakes it if it waits for a worker: it finds its queue
    /// gone and ends.
    pub(super) fn forget_dispatcher(&self, queue: &str, notify: &Arc<Notify>) {
        let mut dispatchers = self.dispatchers.lock();
        if dispatchers
            .get(queue)
            .is_some_and(|n| Arc::ptr_eq(n, notify))
        {
            dispatchers.remove(queue);
        }
        drop(dispatchers);
        self.waits.unpark(queue);
    }

    fn attempt(self: &Arc<Self>, lease: Lease) {
        let s = self.clone();
        tokio::spawn(async move {
            let job = lease.job.clone();
            let data =
                match payload::to_wamp(&lease.payload).and_then(|p| s.with_job_info(p, &lease)) {
                    Ok(p) => p,
                    Err(e) => {
                        s.fail(&lease, INVALID_PAYLOAD, &e);
                        return;
                    }
                };
            match &job.target {
                Target::Procedure(p) => s.call_worker(lease, p, data).await,
                Target::Http { .. } => s.http_worker(lease).await,
            }
        });
    }

    async fn call_worker(&self, lease: Lease, procedure: &str, data: Payload) {
        let (id, epoch) = (lease.job.id, lease.epoch);
        let queues = self.queues.clone();
        let progress: OnProgress = Box::new(move |_| match queues.extend(id, epoch, None) {
            // The durable handle may go: a crash only means the job runs again.
            Ok((_, durable)) => drop(durable),
            Err(e) => tracing::debug!(job = %id, "progress did not extend the lease: {e}"),
        });
        let options = Dict::new()
            .with("receive_progress", true)
            .with(JOB_DETAILS, self.job_details(&lease));
        let pending = match self.worker.start_call(
            &self.realm.dealer,
            procedure,
            &options,
            data,
            Some(progress),
        ) {
            Ok(p) => p,
            Err(f) => {
                self.fail(&lease, &f.error, &f.message);
                return;
            }
        };
        self.running.lock().insert(
            id,
            Running {
                epoch,
                request: Some(pending.request()),
                queue: lease.job.queue.clone(),
            },
        );
        let answer = pending.wait().await;
        let ours = self.forget(&lease);
        match answer {
            // The maintenance task canceled this call when the lease expired (and counted
            // the attempt): the cancellation's own ERROR is no answer from the worker.
            Err(f) if !ours && f.error == errors::CANCELED => {}
            Ok(reply) => self.complete(&lease, reply_event(reply)).await,
            Err(f) if f.unserved => {
                self.metrics.no_worker(&lease.job.queue);
                tracing::debug!(
                    job = %id,
                    queue = %lease.job.queue,
                    procedure,
                    "no worker for the job: it waits ({})",
                    f.error
                );
                if let Err(e) = self.queues.release(id, epoch, Some(NO_WORKER_RETRY)) {
                    tracing::debug!(job = %id, "release refused: {e}");
                }
            }
            Err(f) => self.fail(&lease, &f.error, &f.message),
        }
    }

    /// Adds `{id, queue, attempt}` under the queue's `job_kwarg`, if it has one.
    fn with_job_info(&self, mut data: Payload, lease: &Lease) -> Result<Payload, String> {
        let Ok(config) = self.queues.config(&lease.job.queue) else {
            return Ok(data);
        };
        let Some(name) = &config.job_kwarg else {
            return Ok(data);
        };
        let mut kwargs = match data.kwargs.take().map(|k| k.to_value()) {
            None => Dict::new(),
            Some(Ok(Value::Dict(d))) => d,
            Some(_) => return Err("the stored keyword arguments are not a dict".into()),
        };
        // The router's value is the only one: every key equal to the name
        // goes (a stored payload, say from a bound publication, may repeat
        // it, and a worker's decoder might keep the producer's copy).
        kwargs.0.retain(|(k, _)| k != name);
        kwargs.insert(
            name.as_str(),
            Dict::new()
                .with("id", lease.job.id.0)
                .with("queue", &*lease.job.queue)
                .with("attempt", u64::from(lease.attempt)),
        );
        if data.args.is_none() {
            data.args = Some(Item::Value(Value::List(Vec::new())));
        }
        data.kwargs = Some(Item::Value(Value::Dict(kwargs)));
        Ok(data)
    }

    /// What the worker finds in INVOCATION.Details under [`JOB_DETAILS`]:
    /// `{id, queue, attempt, lease_timeout_ms}` (the Dealer passes it on
    /// because this caller is the router's own).
    fn job_details(&self, lease: &Lease) -> Dict {
        let mut d = Dict::new()
            .with("id", lease.job.id.0)
            .with("queue", &*lease.job.queue)
            .with("attempt", u64::from(lease.attempt));
        if let Ok(config) = self.queues.config(&lease.job.queue) {
            d.insert("lease_timeout_ms", config.lease_timeout.as_millis() as u64);
        }
        d
    }

    /// Whether `queue`'s default target is a procedure nobody registered.
    pub(super) fn without_worker(&self, queue: &str) -> bool {
        self.missing_worker(queue).is_some()
    }

    /// `queue`'s default target procedure, if nobody registered it.
    fn missing_worker(&self, queue: &str) -> Option<String> {
        let config = self.queues.config(queue).ok()?;
        match &config.target {
            Some(Target::Procedure(p)) if self.realm.dealer.best_match(p).is_none() => {
                Some(p.clone())
            }
            _ => None,
        }
    }

    /// Forgets the running attempt of `lease` (not a newer one); false if it
    /// was gone already (its lease expired).
    pub(super) fn forget(&self, lease: &Lease) -> bool {
        let mut running = self.running.lock();
        if running
            .get(&lease.job.id)
            .is_some_and(|r| r.epoch == lease.epoch)
        {
            running.remove(&lease.job.id);
            return true;
        }
        false
    }

    /// Completes the attempt; once that is durable, tells the result topic.
    pub(super) async fn complete(&self, lease: &Lease, result: Dict) {
        let job = &lease.job;
        let now = self.queues.clock().now_ms();
        // The result is copied only for a job that publishes it.
        let published = job.result_topic.as_ref().map(|_| result.clone());
        let entry = self.results.entry(job, lease.attempt, now, result);
        // In cluster mode the completed job goes to the log with its
        // completion, for the node that takes the queues over.
        let record =
            entry
                .as_ref()
                .filter(|_| self.results_replicated)
                .map(|c| Mutation::PutResult {
                    id: job.id,
                    queue: job.queue.clone(),
                    at_ms: now,
                    expires_ms: now.saturating_add(self.results.retention().as_millis() as u64),
                    record: c.to_record().into(),
                });
        match self.queues.complete_with(job.id, lease.epoch, record) {
            Ok(durable) => {
                // The engine has forgotten the job already: remember it as
                // completed now, or `switchyard.queue.job` would not find it
                // while the completion is committed.
                if let Some(entry) = entry {
                    self.results.insert(entry);
                }
                if let Err(e) = durable.await {
                    tracing::warn!(job = %job.id, queue = %job.queue, "completion not durable: {e}");
                    return;
                }
                tracing::debug!(job = %job.id, queue = %job.queue, attempt = lease.attempt, "job completed");
                if let Some(result) = published {
                    self.publish_result(job, "completed", lease.attempt, result);
                }
            }
            Err(e) => self.refused(job, lease.epoch, e),
        }
    }

    /// Fails the attempt: retry by policy, or dead letter.
    pub(super) fn fail(&self, lease: &Lease, error: &str, message: &str) {
        let job = &lease.job;
        // An error URI the queue cannot store is still a failure; keep
        // what the worker said in the message.
        let valid =
            switchyard_proto::uri::check(error, switchyard_proto::uri::UriCheck::Loose, false)
                .is_ok();
        let replaced;
        let (error, message) = if valid {
            (error, message)
        } else {
            replaced = format!("the worker answered the invalid error URI {error:?}: {message}");
            (errors::INVALID_ARGUMENT, replaced.as_str())
        };
        match self.queues.fail(job.id, lease.epoch, error, message) {
            Ok(settled) => {
                self.after_failure(job, lease.attempt, error, message, settled.outcome);
            }
            Err(e) => self.refused(job, lease.epoch, e),
        }
    }

    fn after_failure(&self, job: &Job, attempt: u32, error: &str, message: &str, outcome: Outcome) {
        match outcome {
            Outcome::Retry { at_ms } => {
                tracing::debug!(job = %job.id, queue = %job.queue, attempt, error = %Clip(error), "attempt failed: retry at {at_ms}");
            }
            Outcome::Dead { reason } => {
                tracing::info!(job = %job.id, queue = %job.queue, attempt, error = %Clip(error), %reason, "job dead-lettered: {}", Clip(message));
                self.publish_result(
                    job,
                    "dead",
                    attempt,
                    Dict::new()
                        .with("error", error)
                        .with("message", message)
                        .with("reason", reason.as_str()),
                );
            }
        }
    }

    fn refused(&self, job: &Job, epoch: u64, e: QueueError) {
        match e {
            QueueError::StaleLease { .. } | QueueError::UnknownJob(_) => {
                // Not for a deleted queue (its figures are gone with it).
                if self.queues.config(&job.queue).is_ok() {
                    self.metrics.late_answer(&job.queue);
                }
                tracing::info!(
                    job = %job.id,
                    queue = %job.queue,
                    epoch,
                    "a worker answered after its lease ended: ignored ({})",
                    Clip(&e.to_string())
                );
            }
            e => {
                tracing::warn!(job = %job.id, queue = %job.queue, "cannot settle the job: {}", Clip(&e.to_string()))
            }
        }
    }

    /// The queue was deleted (force): its running workers' calls are
    /// canceled (a worker that understands INTERRUPT stops its work; a late
    /// answer changes nothing, the jobs are gone).
    pub(super) fn cancel_running(&self, queue: &str) {
        let requests: Vec<u64> = {
            let mut running = self.running.lock();
            let ids: Vec<_> = running
                .iter()
                .filter(|(_, r)| &*r.queue == queue)
                .map(|(id, _)| *id)
                .collect();
            ids.iter()
                .filter_map(|id| running.remove(id))
                .filter_map(|r| r.request)
                .collect()
        };
        tracing::debug!(
            queue,
            calls = requests.len(),
            "queue deleted: its workers' calls are canceled"
        );
        for request in requests {
            self.worker.cancel(&self.realm.dealer, request);
        }
    }

    /// A lease ran out (maintenance): cancel the worker's call.
    pub(super) fn lease_expired(&self, e: Expired) {
        let running = {
            let mut running = self.running.lock();
            match running.get(&e.job.id) {
                Some(r) if r.epoch == e.epoch => running.remove(&e.job.id),
                _ => None,
            }
        };
        if let Some(Running {
            request: Some(request),
            ..
        }) = running
        {
            self.worker.cancel(&self.realm.dealer, request);
        }
        let lease_timeout = self
            .queues
            .config(&e.job.queue)
            .map(|c| c.lease_timeout)
            .unwrap_or_default();
        let message = format!("no answer within the lease ({lease_timeout:?})");
        tracing::info!(job = %e.job.id, queue = %e.job.queue, "lease expired: {message}");
        let attempt = self
            .queues
            .job_status(e.job.id)
            .map(|s| s.attempts)
            .unwrap_or_default();
        self.after_failure(&e.job, attempt, LEASE_EXPIRED, &message, e.outcome);
    }

    /// Publishes `{job, queue, status, attempt, ...}` on the job's result
    /// topic, if it has one.
    pub(super) fn publish_result(&self, job: &Job, status: &str, attempt: u32, mut kwargs: Dict) {
        let Some(topic) = &job.result_topic else {
            return;
        };
        // Checked when the job was pushed; a job stored by an older version
        // may still name a reserved topic.
        if switchyard_proto::uri::is_reserved(topic) {
            tracing::warn!(job = %job.id, queue = %job.queue, topic = ?topic, "result not published: the topic is reserved for the router");
            return;
        }
        kwargs.insert("job", job.id.0);
        kwargs.insert("queue", &*job.queue);
        kwargs.insert("status", status);
        kwargs.insert("attempt", u64::from(attempt));
        let payload = Payload::values(Vec::new(), Some(kwargs));
        let id = self.realm.broker.publish_from_router(topic, &payload);
        // Cluster mode: the result topic's subscribers on the other nodes too.
        if let Some(backplane) = self.realm.backplane() {
            let none = Dict::new();
            backplane.publish(&switchyard_router::backplane::Publication {
                id,
                topic,
                publisher: self.worker.session(),
                options: &none,
                details: &none,
                payload: &payload,
            });
        }
    }
}

/// The result event's fields of a worker's answer.
fn reply_event(reply: Reply) -> Dict {
    Dict::new()
        .with("args", Value::List(reply.args))
        .with("kwargs", Value::Dict(reply.kwargs))
}

async fn dispatch_loop(service: std::sync::Weak<QueueService>, queue: String, notify: Arc<Notify>) {
    loop {
        let (wait, clock) = {
            let Some(s) = service.upgrade() else { return };
            // The queue was deleted (and maybe declared again, with its own
            // dispatcher): this one ends.
            match s.queues.notifier(&queue) {
                Ok(n) if Arc::ptr_eq(&n, &notify) => {}
                _ => return,
            }
            if let Some(procedure) = s.missing_worker(&queue) {
                // Leave the jobs as they are (ready, in priority order) and
                // sleep, with no timer, until a registration that can serve
                // the target wakes this dispatcher (and only this one).
                let parked = s.waits.park(&queue, &procedure);
                if s.without_worker(&queue) {
                    drop(s);
                    parked.notified().await;
                } else {
                    s.waits.unpark(&queue);
                }
                continue;
            }
            let clock = s.queues.clock().clone();
            match s.queues.next_ready_many(&queue, BATCH) {
                Ok((leases, wait)) => {
                    if !leases.is_empty() {
                        s.maintenance.notify_one();
                    }
                    for lease in leases {
                        s.attempt(lease);
                    }
                    (wait, clock)
                }
                Err(QueueError::UnknownQueue(_)) => return,
                Err(e) => {
                    tracing::warn!(queue, "dispatch paused for a second: {e}");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            }
        };
        let Some(wait) = wait else {
            // A full batch: there may be more.
            tokio::task::yield_now().await;
            continue;
        };
        match wait.until_ms {
            Some(at) => {
                tokio::select! {
                    _ = notify.notified() => {}
                    _ = tokio::time::sleep(clock.until(at)) => {}
                }
            }
            None => notify.notified().await,
        }
        if wait.reason == WaitReason::RateLimit {
            tracing::trace!(queue, "rate limit reached");
        }
    }
}
