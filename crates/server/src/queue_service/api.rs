//! The `switchyard.queue.*` procedures (docs/QUEUES.md). A router-owned
//! session registers them with the realm's Dealer, so calls are authorized
//! like any other; each answer is a YIELD or an ERROR with a
//! `switchyard.queue.error.*` URI and a readable message.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;
use switchyard_router::logsafe::Clip;

use serde_json::json;
use switchyard_proto::{errors, Dict, Payload, Value};
use switchyard_queue::{
    human, JobId, JobInfo, JobOptions, NewJob, Purge, QueueConfig, QueueError, Requeue, Target,
};
use switchyard_router::authz::{Action, Decision};
use switchyard_router::features::ClientFeatures;
use switchyard_router::internal::{InternalCaller, InternalInvocation};
use switchyard_router::peer::{Peer, SlowConsumerPolicy};
use switchyard_router::session::{Identity, OpError};
use switchyard_router::Session;
use tokio::sync::mpsc;

use super::{access, http_target, payload, QueueService};
use crate::bridge::durable::RESERVED_PREFIX;

const INVALID: &str = "switchyard.queue.error.invalid_argument";

/// Procedures and the calls each serves at once (the rest wait in the
/// Dealer's queue of the registration; their sum stays below the channel).
pub(crate) const PROCEDURES: [(&str, u32); 12] = [
    ("switchyard.queue.push", 512),
    ("switchyard.queue.push_many", 64),
    ("switchyard.queue.extend", 128),
    ("switchyard.queue.declare", 8),
    ("switchyard.queue.delete", 8),
    ("switchyard.queue.list", 8),
    ("switchyard.queue.stats", 32),
    ("switchyard.queue.peek", 8),
    ("switchyard.queue.dead", 8),
    ("switchyard.queue.job", 32),
    ("switchyard.queue.requeue", 8),
    ("switchyard.queue.purge", 8),
];

/// The REGISTER.Options of the procedure that serves `concurrency` calls
/// at once (the caller is disclosed: access is per queue and per caller).
pub(crate) fn register_options(concurrency: u32) -> Dict {
    Dict::new()
        .with("concurrency", u64::from(concurrency))
        .with("disclose_caller", true)
}

/// Listings (`peek`, `dead`, `job`, `list`) run one at a time.
static LISTINGS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// The longest list `peek` and `dead` return.
const MAX_LIST: usize = 1000;

/// Registers the procedures under a router-owned session.
pub(super) fn register(service: &Arc<QueueService>) -> Result<(), String> {
    let (tx, rx) = mpsc::channel(1024);
    let caller = InternalCaller::with_invocations(super::identity(), tx);
    let session = caller.session().clone();
    let realm = &service.realm;
    let names = caller.register_procedures(
        realm.name(),
        &realm.dealer,
        PROCEDURES.map(|(procedure, concurrency)| (procedure, register_options(concurrency))),
    )?;
    tokio::spawn(serve(Arc::downgrade(service), session, names, rx));
    *service.api.lock() = Some(caller);
    Ok(())
}

async fn serve(
    service: Weak<QueueService>,
    session: Arc<Session>,
    names: HashMap<u64, &'static str>,
    mut rx: mpsc::Receiver<InternalInvocation>,
) {
    while let Some(inv) = rx.recv().await {
        let Some(service) = service.upgrade() else {
            return;
        };
        let procedure = names.get(&inv.registration).copied().unwrap_or("");
        let session = session.clone();
        tokio::spawn(async move {
            let request = inv.request;
            match service.handle(procedure, inv).await {
                Ok((args, kwargs)) => service.realm.dealer.yield_result(
                    &session,
                    request,
                    &Dict::new(),
                    Payload::values(args, kwargs),
                ),
                Err((uri, message)) => service.realm.dealer.yield_error(
                    &session,
                    request,
                    uri.to_string(),
                    Payload::message(message),
                ),
            };
        });
    }
}

pub(crate) type Answer = Result<(Vec<Value>, Option<Dict>), OpError>;

fn queue_error(e: QueueError) -> OpError {
    (e.uri(), e.to_string())
}

fn invalid(message: impl Into<String>) -> OpError {
    (INVALID, message.into())
}

/// A JSON value as a WAMP value.
fn to_wamp(v: serde_json::Value) -> Value {
    serde_json::from_value(v).unwrap_or(Value::Null)
}

/// A WAMP value as JSON (binary as the `\u0000` base64 convention).
fn to_json(v: &Value) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

fn kwargs_json(kw: &Dict, skip: &[&str]) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (k, v) in kw.iter() {
        if !skip.contains(&k) {
            m.insert(k.to_string(), to_json(v));
        }
    }
    serde_json::Value::Object(m)
}

/// The queue name: the first argument, or kwargs `queue`.
/// The job id of `switchyard.queue.job`.
fn job_id_arg(inv: &InternalInvocation) -> Result<JobId, OpError> {
    match inv.args.first().or_else(|| inv.kwargs.get("id")) {
        Some(Value::UInt(id)) => Ok(JobId(*id)),
        _ => Err(invalid(
            "job needs the job id (an integer) as its first argument",
        )),
    }
}

fn queue_arg<'a>(inv: &'a InternalInvocation, what: &str) -> Result<&'a str, OpError> {
    match inv.args.first().or_else(|| inv.kwargs.get("queue")) {
        Some(Value::Str(s)) => Ok(s),
        Some(_) => Err(invalid(format!("{what}: the queue name must be a string"))),
        None => Err(invalid(format!(
            "{what} needs the queue name as its first argument"
        ))),
    }
}

fn limit_arg(kw: &Dict) -> Result<usize, OpError> {
    match kw.get("limit") {
        None => Ok(10),
        Some(Value::UInt(n)) => Ok((*n as usize).min(MAX_LIST)),
        Some(_) => Err(invalid("limit must be a positive integer")),
    }
}

fn job_info(info: &JobInfo) -> Value {
    let mut v = serde_json::to_value(info).unwrap_or(serde_json::Value::Null);
    let (args, kwargs) = match &info.payload {
        Some(p) => payload::to_values(p).unwrap_or((
            Value::Str("(unreadable payload)".into()),
            Value::Dict(Dict::new()),
        )),
        // Past the listing's payload budget: ask for the job itself.
        None => (
            Value::Str(format!(
                "(payload of {} bytes not loaded: see switchyard.queue.job)",
                info.job.payload_bytes
            )),
            Value::Dict(Dict::new()),
        ),
    };
    if let Some(job) = v.get_mut("job").and_then(|j| j.as_object_mut()) {
        job.insert("args".into(), to_json(&args));
        job.insert("kwargs".into(), to_json(&kwargs));
    }
    to_wamp(v)
}

/// The session that made a call (disclosed to the queue's procedures): a
/// client session of the realm, or the identity of a router-owned one
/// (the HTTP bridge's keys).
fn caller_of(service: &QueueService, details: &Dict) -> Option<Arc<Session>> {
    let id = match details.get("caller") {
        Some(Value::UInt(id)) => *id,
        _ => return None,
    };
    if let Some(s) = service.realm.session(id) {
        return Some(s);
    }
    let identity = Identity {
        authid: details.get_str("caller_authid")?.to_string(),
        authrole: details.get_str("caller_authrole")?.to_string(),
        authmethod: "internal".into(),
        authprovider: "switchyard".into(),
    };
    let (peer, _rx) = Peer::new(
        switchyard_proto::Serializer::MsgPack,
        1,
        SlowConsumerPolicy::Disconnect,
        usize::MAX,
        "authorization".into(),
    );
    Some(Arc::new(Session::new(
        id,
        identity,
        ClientFeatures::default(),
        peer,
    )))
}

impl QueueService {
    /// Serves one call of `procedure` (one of [`PROCEDURES`]).
    pub(crate) async fn handle(
        self: &Arc<Self>,
        procedure: &str,
        inv: InternalInvocation,
    ) -> Answer {
        // The router reads (and, for a job, later adds) keys in these
        // arguments: a repeated key is refused, in every serializer.
        if let Some(path) = payload::duplicate_key(&inv.args, &inv.kwargs) {
            return Err(invalid(payload::duplicate_key_message(&path)));
        }
        let caller = caller_of(self, &inv.details);
        let caller = caller.as_ref();
        // The procedures that act on the queue named by their first argument:
        // per-queue authorization before anything else (an unauthorized
        // caller does not learn whether the queue exists).
        if matches!(
            procedure,
            "switchyard.queue.push"
                | "switchyard.queue.stats"
                | "switchyard.queue.peek"
                | "switchyard.queue.dead"
                | "switchyard.queue.requeue"
                | "switchyard.queue.purge"
                | "switchyard.queue.delete"
        ) {
            let q = queue_arg(&inv, procedure.trim_start_matches("switchyard.queue."))?;
            self.authorize_queue(caller, procedure, q).await?;
        }
        if procedure == "switchyard.queue.job" {
            let id = job_id_arg(&inv)?;
            let found = self
                .queues
                .job_queue(id)
                .or_else(|| self.results.get(id).map(|c| c.queue.to_string()));
            match inv.kwargs.get("queue") {
                // Within one queue (the bridge's GET /queues/{name}/jobs/{id}):
                // a job that is unknown, of another queue, or of a queue the
                // caller may not read gets the same answer, so nothing tells
                // them apart.
                Some(Value::Str(q)) => {
                    let unknown = || {
                        (
                            QueueError::UnknownJob(id).uri(),
                            format!("queue `{}` has no job {id} that you may read", Clip(q)),
                        )
                    };
                    access::check_name(procedure, q)?;
                    if self.authorize_queue(caller, procedure, q).await.is_err()
                        || found.as_deref() != Some(q.as_str())
                    {
                        return Err(unknown());
                    }
                }
                Some(_) => return Err(invalid("job: queue must be a string")),
                // Authorized on the job's queue, found without reading its
                // payload; the refusal does not name the queue.
                None => {
                    let queue = found.ok_or_else(|| queue_error(QueueError::UnknownJob(id)))?;
                    self.authorize_queue(caller, procedure, &queue)
                        .await
                        .map_err(|(uri, _)| {
                            (
                                uri,
                                format!("no access to the queue of job {id} with {procedure}"),
                            )
                        })?;
                }
            }
        }
        // `list` shows only the queues the caller may see.
        let mut visible = None;
        if procedure == "switchyard.queue.list" {
            let mut names = HashSet::new();
            for stats in self.queues.list() {
                if self.allowed(caller, procedure, &stats.name).await {
                    names.insert(stats.name);
                }
            }
            visible = Some(names);
        }
        if matches!(
            procedure,
            "switchyard.queue.peek"
                | "switchyard.queue.dead"
                | "switchyard.queue.job"
                | "switchyard.queue.list"
        ) {
            // Listings read payloads from the store and convert them: blocking work, kept
            // off the threads that serve every session, one at a time per router (a
            // client calling them in a loop takes at most one core).
            let _turn = LISTINGS.acquire().await;
            let service = self.clone();
            let procedure = procedure.to_string();
            return tokio::task::spawn_blocking(move || service.listing(&procedure, inv, visible))
                .await
                .unwrap_or_else(|e| {
                    Err((errors::INVALID_ARGUMENT, format!("listing failed: {e}")))
                });
        }
        match procedure {
            "switchyard.queue.push" => self.push(caller, inv).await,
            "switchyard.queue.push_many" => self.push_many(caller, inv).await,
            "switchyard.queue.extend" => self.extend(caller, inv).await,
            "switchyard.queue.declare" => self.declare(caller, inv).await,
            "switchyard.queue.delete" => self.delete(inv).await,
            "switchyard.queue.stats" => {
                let q = queue_arg(&inv, "stats")?;
                let stats = self.queues.stats(q).map_err(queue_error)?;
                match to_wamp(serde_json::to_value(stats).unwrap_or_default()) {
                    Value::Dict(mut d) => {
                        // What a worker needs to serve the queue
                        // (`switchyard worker QUEUE` finds its procedure here).
                        if let Ok(cfg) = self.queues.config(q) {
                            if let Some(Target::Procedure(p)) = &cfg.target {
                                d.insert("target", p.as_str());
                            }
                            d.insert("lease_timeout_ms", cfg.lease_timeout.as_millis() as u64);
                        }
                        Ok((Vec::new(), Some(d)))
                    }
                    _ => Err((errors::INVALID_ARGUMENT, "stats unavailable".into())),
                }
            }
            "switchyard.queue.requeue" => {
                let q = queue_arg(&inv, "requeue")?;
                let which = match (inv.kwargs.get("jobs"), inv.kwargs.get_bool("all")) {
                    (Some(Value::List(ids)), None | Some(false)) => Requeue::Jobs(
                        ids.iter()
                            .map(|v| match v {
                                Value::UInt(id) => Ok(JobId(*id)),
                                _ => Err(invalid("jobs must be a list of job ids")),
                            })
                            .collect::<Result<_, _>>()?,
                    ),
                    (None, Some(true)) => Requeue::AllDead,
                    _ => return Err(invalid("requeue needs either jobs = [ids] or all = true")),
                };
                let n = self.queues.requeue(q, which).await.map_err(queue_error)?;
                tracing::info!(queue = %Clip(q), requeued = n, "dead jobs requeued");
                Ok((
                    vec![Value::UInt(n as u64)],
                    Some(Dict::new().with("requeued", n as u64)),
                ))
            }
            "switchyard.queue.purge" => {
                let q = queue_arg(&inv, "purge")?;
                let which = match inv.kwargs.get_str("which") {
                    Some("ready") => Purge::Ready,
                    Some("dead") => Purge::Dead,
                    Some("all") => Purge::All,
                    Some(other) => {
                        return Err(invalid(format!(
                            "which = \"{other}\": use ready, dead or all"
                        )))
                    }
                    None => {
                        return Err(invalid(
                            "purge needs which = \"ready\", \"dead\" or \"all\"",
                        ))
                    }
                };
                let n = self.queues.purge(q, which).await.map_err(queue_error)?;
                tracing::info!(queue = %Clip(q), purged = n, "queue purged");
                Ok((
                    vec![Value::UInt(n as u64)],
                    Some(Dict::new().with("purged", n as u64)),
                ))
            }
            other => Err((
                errors::NO_SUCH_PROCEDURE,
                format!("\"{other}\" is not a queue procedure"),
            )),
        }
    }

    /// `peek`, `dead`, `job` and `list` (run on a blocking thread).
    fn listing(
        &self,
        procedure: &str,
        inv: InternalInvocation,
        visible: Option<HashSet<String>>,
    ) -> Answer {
        match procedure {
            "switchyard.queue.list" => {
                let list: Vec<_> = self
                    .queues
                    .list()
                    .into_iter()
                    .filter(|q| visible.as_ref().is_none_or(|v| v.contains(&q.name)))
                    .collect();
                let list = serde_json::to_value(list).unwrap_or_default();
                Ok((vec![to_wamp(list)], None))
            }
            "switchyard.queue.peek" | "switchyard.queue.dead" => {
                let q = queue_arg(&inv, "peek")?;
                let n = limit_arg(&inv.kwargs)?;
                let jobs = if procedure.ends_with("peek") {
                    self.queues.peek(q, n)
                } else {
                    self.queues.dead(q, n)
                }
                .map_err(queue_error)?;
                Ok((vec![Value::List(jobs.iter().map(job_info).collect())], None))
            }
            "switchyard.queue.job" => {
                let id = job_id_arg(&inv)?;
                let Some(info) = self.queues.job(id) else {
                    // Completed (and remembered), or unknown.
                    return match self.results.get(id) {
                        Some(done) => Ok((Vec::new(), Some(done.to_dict()))),
                        None => Err(queue_error(QueueError::UnknownJob(id))),
                    };
                };
                match job_info(&info) {
                    Value::Dict(d) => Ok((Vec::new(), Some(d))),
                    _ => Err(queue_error(QueueError::UnknownJob(id))),
                }
            }
            other => Err((
                errors::NO_SUCH_PROCEDURE,
                format!("\"{other}\" is not a queue listing"),
            )),
        }
    }

    /// A job from a push's keyword arguments (`args`, `kwargs`, options),
    /// checked against what the caller may do.
    async fn new_job(&self, caller: Option<&Arc<Session>>, kw: &Dict) -> Result<NewJob, OpError> {
        let data = payload::encode(kw.get("args"), kw.get("kwargs")).map_err(invalid)?;
        let options: JobOptions =
            serde_json::from_value(kwargs_json(kw, &["args", "kwargs", "queue"]))
                .map_err(|e| invalid(format!("invalid job options: {e}")))?;
        let job = NewJob::from_options(data, options).map_err(|e| queue_error(e.into()))?;
        if let Some(Target::Http { .. }) = &job.target {
            return Err(invalid(
                "target: an HTTP target can only be set in a queue's configuration (declare it, or use [[realm.queue]]), not per job",
            ));
        }
        if let Some(Target::Procedure(p)) = &job.target {
            self.acts_for(caller, Action::Call, "target", p).await?;
        }
        if let Some(t) = &job.result_topic {
            self.acts_for(caller, Action::Publish, "result_topic", t)
                .await?;
        }
        Ok(job)
    }

    /// A URI the router will use on the caller's behalf (a job's result
    /// topic, published on; a target procedure, called): it must be a URI the
    /// caller could use itself: valid under the realm's URI rule, outside the
    /// reserved `wamp.` namespace, and authorized for `action` by the caller
    /// (static roles and the dynamic authorizer), now, when it is given.
    async fn acts_for(
        &self,
        caller: Option<&Arc<Session>>,
        action: Action,
        field: &str,
        uri: &str,
    ) -> Result<(), OpError> {
        // The queue's own limit first, without echoing the URI: a topic of
        // megabytes is not copied into the refusal, the log and the
        // authorizer's call.
        if uri.len() > switchyard_queue::model::MAX_NAME_LEN {
            let shown: String = uri.chars().take(32).collect();
            return Err(invalid(format!(
                "{field}: {shown:?}... is {} bytes long, the limit is {}",
                uri.len(),
                switchyard_queue::model::MAX_NAME_LEN
            )));
        }
        if let Err(e) = switchyard_proto::uri::check(uri, self.realm.config().uri_check, false) {
            return Err(invalid(format!("{field}: {e}")));
        }
        if switchyard_proto::uri::is_reserved(uri) {
            return Err(invalid(format!(
                "{field}: \"{uri}\" is in the \"wamp.\" namespace, which is reserved for the router"
            )));
        }
        if !self.realm.authz().enabled() {
            return Ok(());
        }
        let Some(caller) = caller else {
            return Err((
                errors::NOT_AUTHORIZED,
                format!("{field}: the caller is unknown"),
            ));
        };
        if let Decision::Allow { .. } = self.realm.authorize(caller, action, uri).await {
            return Ok(());
        }
        self.realm
            .metrics
            .not_authorized
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            realm = self.realm.name(),
            session = caller.id,
            %action,
            uri = ?uri,
            "queue request refused: {field} not authorized"
        );
        Err((
            errors::NOT_AUTHORIZED,
            format!(
                "authid \"{}\" (role \"{}\") may not {action} \"{uri}\", so it cannot name it as {field}",
                caller.authid, caller.authrole
            ),
        ))
    }

    /// A durable HTTP subscriber's queue takes its topic's publications
    /// only: its jobs are POSTed as events signed with the subscriber's key.
    fn refuse_subscriber_queue(&self, queue: &str) -> Result<(), OpError> {
        match self.subscribers.get(queue) {
            Some(_) => Err((
                errors::NOT_AUTHORIZED,
                format!("queue `{queue}` delivers a durable HTTP subscriber's events: jobs cannot be pushed into it"),
            )),
            None => Ok(()),
        }
    }

    async fn push(&self, caller: Option<&Arc<Session>>, inv: InternalInvocation) -> Answer {
        let queue = queue_arg(&inv, "push")?.to_string();
        self.refuse_subscriber_queue(&queue)?;
        let job = self.new_job(caller, &inv.kwargs).await?;
        let ack = self.queues.push(&queue, job).await.map_err(queue_error)?;
        Ok((
            vec![Value::UInt(ack.id.0)],
            Some(
                Dict::new()
                    .with("id", ack.id.0)
                    .with("duplicate", ack.duplicate),
            ),
        ))
    }

    async fn push_many(&self, caller: Option<&Arc<Session>>, inv: InternalInvocation) -> Answer {
        let Some(Value::List(items)) = inv.args.first().or_else(|| inv.kwargs.get("jobs")) else {
            return Err(invalid(
                "push_many needs a list of jobs ({queue, args, kwargs, ...options}) as its first argument",
            ));
        };
        let mut jobs = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let Value::Dict(kw) = item else {
                return Err(invalid(format!("jobs[{i}] must be a dict")));
            };
            let Some(queue) = kw.get_str("queue") else {
                return Err(invalid(format!("jobs[{i}].queue: missing")));
            };
            self.authorize_queue(caller, "switchyard.queue.push_many", queue)
                .await
                .and_then(|()| self.refuse_subscriber_queue(queue))
                .map_err(|(uri, m)| (uri, format!("jobs[{i}]: {m}")))?;
            let job = self
                .new_job(caller, kw)
                .await
                .map_err(|(uri, m)| (uri, format!("jobs[{i}]: {m}")))?;
            jobs.push((queue.to_string(), job));
        }
        let acks = self.queues.push_many(jobs).await.map_err(queue_error)?;
        let list = acks
            .iter()
            .map(|a| {
                Value::Dict(
                    Dict::new()
                        .with("id", a.id.0)
                        .with("duplicate", a.duplicate),
                )
            })
            .collect();
        Ok((vec![Value::List(list)], None))
    }

    async fn declare(
        self: &Arc<Self>,
        caller: Option<&Arc<Session>>,
        inv: InternalInvocation,
    ) -> Answer {
        let cfg_json = match inv.args.first() {
            Some(v @ Value::Dict(_)) => to_json(v),
            _ => kwargs_json(&inv.kwargs, &[]),
        };
        let cfg: QueueConfig = serde_json::from_value(cfg_json)
            .map_err(|e| invalid(format!("invalid queue configuration: {e}")))?;
        if cfg.name.starts_with(RESERVED_PREFIX) {
            return Err((
                errors::NOT_AUTHORIZED,
                format!("queue names starting with `{RESERVED_PREFIX}` are reserved for durable HTTP subscribers"),
            ));
        }
        self.authorize_queue(caller, "switchyard.queue.declare", &cfg.name)
            .await?;
        if let Some(target) = &cfg.target {
            if let Some(why) = http_target::unsupported(target) {
                return Err(invalid(why));
            }
            // Every job of the queue calls its target as the router: the
            // declaring client must be allowed to call it itself.
            if let switchyard_queue::Target::Procedure(p) = target {
                self.acts_for(caller, Action::Call, "target", p).await?;
            }
            if let switchyard_queue::Target::Http { url, .. } = target {
                if let Err(why) = self.http.check_declared(&cfg.name, url) {
                    self.realm
                        .metrics
                        .not_authorized
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(
                        realm = self.realm.name(),
                        queue = ?cfg.name,
                        "run-time declaration of an HTTP target refused: {why}"
                    );
                    return Err((
                        errors::NOT_AUTHORIZED,
                        format!("queue \"{}\": target.http.url: {why}", cfg.name),
                    ));
                }
            }
        }
        let name = cfg.name.clone();
        if !self.limits.allow_runtime_declare && self.queues.config(&name).is_err() {
            tracing::info!(
                realm = self.realm.name(),
                queue = %name.escape_debug(),
                "run-time queue declaration refused: allow_runtime_declare = false"
            );
            return Err((
                errors::NOT_AUTHORIZED,
                format!(
                    "realm \"{}\" does not allow declaring queues at run time ([realm.queue_limits] allow_runtime_declare = false): declare `{name}` in the config file",
                    self.realm.name()
                ),
            ));
        }
        if self.queues.config(&name).is_err() {
            if let Some(why) = self.limits.runtime_queue.refuse(&cfg) {
                tracing::warn!(realm = self.realm.name(), queue = %name.escape_debug(), "queue declaration refused: {why}");
                return Err(("switchyard.queue.error.limit_exceeded", why));
            }
        }
        let declared = match self.queues.declare(cfg).await {
            Ok(d) => d,
            Err(e @ QueueError::TooManyQueues { .. }) => {
                tracing::warn!(realm = self.realm.name(), queue = %name.escape_debug(), "queue declaration refused: {e}");
                return Err(queue_error(e));
            }
            Err(e) => return Err(queue_error(e)),
        };
        let created = declared == switchyard_queue::Declared::Created;
        if created {
            tracing::info!(realm = self.realm.name(), queue = %Clip(&name), "queue declared");
        }
        self.ensure_dispatcher(&name);
        Ok((
            Vec::new(),
            Some(Dict::new().with("queue", name).with("created", created)),
        ))
    }

    /// `switchyard.queue.delete`: deletes a queue declared at run time
    /// (refused for config-file queues and queues fed by a topic binding; a
    /// queue holding jobs only with `force = true`).
    async fn delete(self: &Arc<Self>, inv: InternalInvocation) -> Answer {
        let q = queue_arg(&inv, "delete")?.to_string();
        let force = match inv.kwargs.get("force") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(invalid("force must be true or false")),
        };
        if self.bound.read().contains(&q) {
            return Err((
                "switchyard.queue.error.configured_queue",
                format!("queue `{q}` is fed by a [[realm.queue_binding]] of the config file: remove the binding first"),
            ));
        }
        let notify = self.queues.notifier(&q).map_err(queue_error)?;
        let deleted = self.queues.delete(&q, force).await.map_err(queue_error)?;
        self.forget_dispatcher(&q, &notify);
        self.metrics.forget(&q);
        self.results.forget_queue(&q);
        self.cancel_running(&q);
        tracing::info!(
            realm = self.realm.name(),
            queue = q,
            jobs = deleted.jobs,
            idempotency_keys = deleted.idempotency_keys,
            "queue deleted"
        );
        Ok((
            Vec::new(),
            Some(
                Dict::new()
                    .with("queue", q)
                    .with("deleted", true)
                    .with("jobs", deleted.jobs as u64)
                    .with("idempotency_keys", deleted.idempotency_keys as u64),
            ),
        ))
    }

    /// `switchyard.queue.extend`: extends the leases of the jobs the calling
    /// session is running (or just `job`, if given).
    async fn extend(
        &self,
        caller_session: Option<&Arc<Session>>,
        inv: InternalInvocation,
    ) -> Answer {
        let caller = match inv.details.get("caller") {
            Some(Value::UInt(id)) => *id,
            _ => return Err(invalid("extend: the caller is unknown")),
        };
        let only = match inv.kwargs.get("job").or_else(|| inv.args.first()) {
            None => None,
            Some(Value::UInt(id)) => Some(JobId(*id)),
            Some(_) => return Err(invalid("job must be a job id")),
        };
        let by = match inv.kwargs.get("by") {
            None => None,
            Some(Value::Str(s)) => {
                Some(human::parse_duration(s).map_err(|e| invalid(format!("by: {e}")))?)
            }
            Some(Value::UInt(ms)) => Some(Duration::from_millis(*ms)),
            Some(_) => {
                return Err(invalid(
                    "by must be a duration such as \"60s\" or milliseconds",
                ))
            }
        };
        let worker = self.worker.session().id;
        let running: Vec<(JobId, u64, Arc<str>)> = self
            .running
            .lock()
            .iter()
            .filter(|(id, _)| only.is_none_or(|o| o == **id))
            .filter_map(|(id, r)| Some((*id, r.epoch, r.request?, r.queue.clone())))
            .filter(|(_, _, request, _)| {
                self.realm.dealer.callee_of(worker, *request) == Some(caller)
            })
            .map(|(id, epoch, _, queue)| (id, epoch, queue))
            .collect();
        // Per-queue authorization of each job's queue.
        let mut mine = Vec::with_capacity(running.len());
        for (id, epoch, queue) in running {
            match self
                .authorize_queue(caller_session, "switchyard.queue.extend", &queue)
                .await
            {
                Ok(()) => mine.push((id, epoch)),
                Err(e) if only.is_some() => return Err(e),
                Err(_) => {}
            }
        }
        if mine.is_empty() {
            return Err(queue_error(match only {
                Some(id) => QueueError::Invalid(switchyard_queue::InvalidField::new(
                    "job",
                    format!("this session is not running job {id} (only its worker may extend its lease, while it runs it)"),
                )),
                None => QueueError::Invalid(switchyard_queue::InvalidField::new(
                    "job",
                    "this session is running no job of a queue (extend from the worker, while it runs the job)",
                )),
            }));
        }
        let mut extended = Vec::new();
        for (id, epoch) in mine {
            match self.queues.extend(id, epoch, by) {
                Ok((deadline, durable)) => {
                    drop(durable);
                    extended.push(to_wamp(json!({"job": id.0, "deadline_ms": deadline})));
                }
                Err(e) => return Err(queue_error(e)),
            }
        }
        Ok((
            Vec::new(),
            Some(Dict::new().with("extended", Value::List(extended))),
        ))
    }
}
