//! The queue service: the WAMP and HTTP face of the queue engine
//! (docs/QUEUES.md). The engine is the `switchyard-queue` crate
//! (crates/queue: jobs, leases, retries, the redb store), which knows
//! nothing of WAMP or sockets; this module is what makes it reachable from
//! WAMP clients and HTTP, and what hands its jobs to workers.
//!
//! One [`QueueService`] per realm drives that realm's engine ([`Queues`]):
//! - `api.rs`: the `switchyard.queue.*` procedures, served by a router-owned
//!   session through the ordinary Dealer (so authorization applies); the
//!   bridge's `POST /queues/{name}/jobs` calls them too;
//! - `access.rs`: per-queue authorization of those procedures;
//! - `dispatch.rs`: one dispatcher per queue leases jobs and calls their
//!   target procedure on a worker (an ordinary callee) or their HTTP URL,
//!   then completes, fails or releases the job; expired leases cancel the
//!   worker's call;
//! - `http_target.rs`: a job's attempt as a signed HTTP request;
//! - `wakeups.rs`: dispatchers parked until a worker registers;
//! - `bindings.rs`: topic bindings, a publish hook that turns publications
//!   into jobs (the publisher's PUBLISHED follows their commit);
//! - `subscribers.rs`: durable HTTP subscribers, whose events are jobs of a
//!   queue of their own, POSTed as the subscriber's events;
//! - `limits.rs`: `[realm.queue_limits]`;
//! - `results.rs`: completed jobs and their results, remembered for a while
//!   (`switchyard.queue.job`, `GET /queues/{name}/jobs/{id}`);
//! - `payload.rs`: the job payload (`args` and `kwargs` as MessagePack; stores
//!   written before store format 2 hold JSON `{"args", "kwargs"}`, still read);
//! - `metrics.rs`: per-queue gauges and counters for /metrics.

mod access;
pub(crate) mod api;
mod bindings;
mod dispatch;
mod http_target;
mod limits;
mod metrics;
mod payload;
mod reload;
mod results;
mod subscribers;
mod wakeups;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Deserialize;
use switchyard_proto::uri;
use switchyard_queue::{JobId, Options, Queues};
use switchyard_router::internal::InternalCaller;
use switchyard_router::session::Identity;
use switchyard_router::uri_index::MatchPolicy;
use switchyard_router::Realm;
use tokio::sync::Notify;

pub use access::name_problem as authorized_queue_name_problem;
pub use bindings::QueueBinding;
pub use limits::QueueLimits;
pub use payload::{duplicate_key, duplicate_key_message, of_publication};
pub use reload::ReloadQueues;
pub use subscribers::{DurableSubscribers, SubscriberQueue};

/// `[realm.queue_http]`: the key and secret that sign the requests of jobs
/// with an HTTP target (as the bridge's HTTP subscribers sign theirs).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueHttpSigning {
    pub key: String,
    pub secret: String,
}

impl std::fmt::Debug for QueueHttpSigning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueHttpSigning")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// What a realm's queues are configured with.
#[derive(Clone)]
pub struct RealmQueues {
    pub configs: Vec<switchyard_queue::QueueConfig>,
    pub bindings: Vec<QueueBinding>,
    pub http_signing: Option<QueueHttpSigning>,
    /// Where run-time declared queues may send HTTP requests.
    pub outbound_http: crate::outbound::destinations::OutboundHttpConfig,
    pub limits: QueueLimits,
    /// The realm's durable HTTP subscribers (`[[bridge.subscriber]]` with
    /// `durable`): each gets a config queue of its own.
    pub subscribers: Vec<SubscriberQueue>,
}

/// Where a service's store is.
enum Backing {
    /// The embedded store in this file.
    File(PathBuf),
    /// Another store (cluster mode), how logs name it, and the completed
    /// jobs its log kept.
    Store(
        Arc<dyn switchyard_queue::Store>,
        String,
        Vec<switchyard_queue::replicated::StoredResult>,
    ),
}

/// A job handed to a worker, while its attempt runs.
struct Running {
    epoch: u64,
    /// The worker call's request id (procedure targets).
    request: Option<u64>,
    /// The job's queue (`extend` is authorized per queue).
    queue: Arc<str>,
}

/// The queues of one realm, wired to its Dealer and Broker.
pub struct QueueService {
    realm: Arc<Realm>,
    queues: Arc<Queues>,
    /// Where the store is (a file, or cluster mode's log), for logs.
    location: String,
    /// The session that calls workers.
    worker: InternalCaller,
    /// The session serving `switchyard.queue.*` (kept alive here).
    api: Mutex<Option<InternalCaller>>,
    running: Mutex<HashMap<JobId, Running>>,
    /// The running dispatchers: queue name -> the notifier of the queue
    /// it serves (a queue deleted and declared again gets a new one).
    dispatchers: Mutex<HashMap<String, Arc<Notify>>>,
    /// Wakes the maintenance task when a lease is handed out (its deadline
    /// may come before the task's next planned look).
    maintenance: Arc<Notify>,
    /// Dispatchers waiting for a worker, woken by the registrations that
    /// can serve them.
    waits: Arc<wakeups::WorkerWaits>,
    /// Queues fed by topic bindings or durable subscribers (they cannot be
    /// deleted). A reload replaces it with its bindings.
    bound: parking_lot::RwLock<HashSet<String>>,
    /// The publish hook of the topic bindings and durable subscribers, once
    /// there is one (a reload gives it new bindings, or sets it).
    bindings: Mutex<Option<Arc<bindings::Bindings>>>,
    /// The queues of the durable HTTP subscribers (configured by the
    /// bridge, which a reload does not change).
    subscriber_configs: Vec<switchyard_queue::QueueConfig>,
    /// The durable HTTP subscribers, by queue.
    subscribers: subscribers::DurableSubscribers,
    limits: QueueLimits,
    /// The session that hears `wamp.registration.on_create` (kept alive).
    _watcher: InternalCaller,
    http: http_target::HttpTargets,
    metrics: metrics::QueueMetrics,
    /// Completed jobs, for a while (`[realm.queue_limits.results]`).
    results: results::Results,
    /// Completed jobs are committed to the store with their completion
    /// (cluster mode's log), for the node that takes the queues over.
    results_replicated: bool,
}

/// Who the queues' router-owned sessions are (workers see it as the caller,
/// if disclosed).
fn identity() -> Identity {
    Identity {
        authid: "switchyard-queue".into(),
        authrole: "switchyard".into(),
        authmethod: "internal".into(),
        authprovider: "switchyard".into(),
    }
}

/// How long a job whose procedure has no callee waits before it is tried
/// again (the attempt is not counted).
pub const NO_WORKER_RETRY: Duration = Duration::from_secs(1);

/// `queues-<realm>.redb`, with characters unsafe in file names replaced.
fn store_file(data_dir: &Path, realm: &str) -> PathBuf {
    let safe: String = realm
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    data_dir.join(format!("queues-{safe}.redb"))
}

impl QueueService {
    /// Opens (or creates) the realm's store, recovers it, registers the
    /// `switchyard.queue.*` procedures and starts a dispatcher per queue.
    pub async fn start(
        realm: Arc<Realm>,
        data_dir: &Path,
        settings: RealmQueues,
    ) -> Result<Arc<QueueService>, String> {
        // The directory is prepared (0700, or checked) once, before the realms.
        let path = store_file(data_dir, realm.name());
        if !crate::data_dir::prepare_file(&path)? {
            crate::data_dir::refuse_empty_store(&path)?;
        }
        // Its write-ahead log holds payloads too: created 0600, or checked like the store.
        crate::data_dir::prepare_file(&switchyard_queue::wal_path(&path))?;
        QueueService::start_on(realm, settings, Backing::File(path)).await
    }

    /// Like [`QueueService::start`], over `store` (cluster mode's replicated
    /// log, described by `location` in logs), without registering the
    /// `switchyard.queue.*` procedures: the caller serves them and hands
    /// the calls to [`QueueService::handle`].
    pub async fn start_replicated(
        realm: Arc<Realm>,
        settings: RealmQueues,
        store: Arc<dyn switchyard_queue::Store>,
        location: String,
        completed: Vec<switchyard_queue::replicated::StoredResult>,
    ) -> Result<Arc<QueueService>, String> {
        QueueService::start_on(realm, settings, Backing::Store(store, location, completed)).await
    }

    async fn start_on(
        realm: Arc<Realm>,
        settings: RealmQueues,
        backing: Backing,
    ) -> Result<Arc<QueueService>, String> {
        let mut configs = settings.configs;
        let reserved = crate::bridge::durable::RESERVED_PREFIX;
        if let Some(c) = configs.iter().find(|c| c.name.starts_with(reserved)) {
            return Err(format!(
                "realm \"{}\": queue \"{}\": names starting with \"{reserved}\" are reserved for durable HTTP subscribers",
                realm.name(),
                c.name
            ));
        }
        let subscriber_configs: Vec<switchyard_queue::QueueConfig> = settings
            .subscribers
            .iter()
            .filter_map(SubscriberQueue::config)
            .collect();
        configs.extend(subscriber_configs.iter().cloned());
        let durable = subscribers::DurableSubscribers::new(&realm, settings.subscribers)?;
        // The HTTP targets the operator wrote, per queue: the only ones
        // served unchecked, and only for the queue the operator wrote them in.
        let operator_urls = http_target::operator_urls(&configs);
        let options = Options {
            max_queues: settings.limits.max_queues,
            max_push_many_jobs: settings.limits.max_push_many_jobs,
            max_push_many_bytes: settings.limits.max_push_many_bytes,
            runtime_max_jobs: settings.limits.runtime_max_jobs,
            runtime_max_payload_bytes: settings.limits.runtime_max_payload_bytes,
            runtime_max_idempotency_keys: settings.limits.runtime_max_idempotency_keys,
            max_job_uri_bytes: settings.limits.max_job_uri_bytes,
            min_free_disk_bytes: settings.limits.min_free_disk_bytes,
            ..Options::default()
        };
        let (queues, location, completed) = match backing {
            Backing::File(path) => {
                let open_path = path.clone();
                let queues = tokio::task::spawn_blocking(move || {
                    Queues::open_with(&open_path, configs, options)
                })
                .await
                .map_err(|e| {
                    format!(
                        "realm \"{}\": opening the queue store {} failed: {e}",
                        realm.name(),
                        path.display()
                    )
                })?
                .map_err(|e| {
                    format!(
                        "realm \"{}\": cannot open the queue store {}: {e}",
                        realm.name(),
                        path.display()
                    )
                })?;
                (queues, path.display().to_string(), None)
            }
            Backing::Store(store, location, completed) => {
                let queues = tokio::task::spawn_blocking(move || {
                    Queues::with_store(store, configs, options)
                })
                .await
                .map_err(|e| format!("opening the queue store failed: {e}"))?
                .map_err(|e| {
                    format!(
                        "realm \"{}\": cannot recover the queues from {location}: {e}",
                        realm.name()
                    )
                })?;
                (queues, location, Some(completed))
            }
        };
        let queues = Arc::new(queues);
        let names = queues.names();
        if let Some(e) = reload::binding_problem(
            realm.name(),
            &settings.bindings,
            |q| queues.config(q).ok().map(|c| c.target.is_some()),
            &names,
        ) {
            return Err(e);
        }
        let waits = Arc::new(wakeups::WorkerWaits::default());
        let watcher = watch_registrations(&realm, waits.clone());
        let bound = settings
            .bindings
            .iter()
            .flat_map(|b| b.queues.iter().cloned())
            .chain(durable.queues().map(str::to_string))
            .collect();
        let register_api = completed.is_none();
        let results = results::Results::new(settings.limits.results.clone());
        if let Some(completed) = completed {
            results.restore(completed, queues.clock().now_ms());
        }
        let service = Arc::new(QueueService {
            results,
            results_replicated: !register_api,
            waits,
            bound: parking_lot::RwLock::new(bound),
            bindings: Mutex::new(None),
            subscriber_configs,
            subscribers: durable,
            limits: settings.limits,
            _watcher: watcher,
            worker: InternalCaller::new(identity()),
            api: Mutex::new(None),
            running: Mutex::new(HashMap::new()),
            dispatchers: Mutex::new(HashMap::new()),
            maintenance: Arc::new(Notify::new()),
            http: http_target::HttpTargets::new(
                settings.http_signing,
                operator_urls,
                &settings.outbound_http,
            ),
            metrics: metrics::QueueMetrics::default(),
            realm: realm.clone(),
            queues: queues.clone(),
            location,
        });
        if register_api {
            api::register(&service)?;
        }
        for name in &names {
            service.ensure_dispatcher(name);
        }
        tokio::spawn(maintenance(Arc::downgrade(&service)));
        // Cluster mode's replicated queues have a hook of their own (on every node).
        if register_api && (!settings.bindings.is_empty() || !service.subscribers.is_empty()) {
            service.set_bindings(settings.bindings);
        }
        metrics::register(&service);
        let totals = queues.list();
        tracing::info!(
            realm = realm.name(),
            store = %service.location,
            queues = ?names,
            waiting = totals.iter().map(|s| s.ready + s.scheduled).sum::<usize>(),
            dead = totals.iter().map(|s| s.dead).sum::<usize>(),
            "durable queues ready"
        );
        Ok(service)
    }

    /// Whether the store takes writes now (`/readyz` asks: a store that
    /// refuses them, e.g. on a full disk, makes the node not ready until it
    /// recovers).
    pub fn store_healthy(&self) -> bool {
        self.queues.store_failure().is_none()
    }

    /// The realm whose queues these are.
    pub fn realm_name(&self) -> &str {
        self.realm.name()
    }

    /// Commits what is pending and closes the store.
    pub fn close(&self) {
        self.queues.close();
    }

    /// The jobs of a publication (cluster mode: on a bound topic, or for a
    /// durable HTTP subscriber, made on any node), as (queue, payload);
    /// resolves once they are durable.
    pub fn push_bound(
        &self,
        jobs: Vec<(String, switchyard_queue::Payload)>,
    ) -> Result<switchyard_router::hooks::HookFuture, switchyard_router::session::OpError> {
        let jobs: Vec<(String, switchyard_queue::NewJob)> = jobs
            .into_iter()
            .map(|(q, data)| (q, switchyard_queue::NewJob::new(data)))
            .collect();
        let commit = self.queues.submit_many(jobs).map_err(|e| {
            (
                e.uri(),
                format!("the event cannot become a job, so it was not published: {e}"),
            )
        })?;
        Ok(Box::pin(async move {
            commit.await.map(|_| ()).map_err(|e| {
                (
                    e.uri(),
                    format!("the publication's jobs were not stored: {e}"),
                )
            })
        }))
    }

    /// Stops serving (cluster mode: this node no longer dispatches the
    /// realm's queues): closes the store, so every later change is refused,
    /// and removes the service's router-owned sessions from the realm (the
    /// worker calls still running are cancelled; their jobs run again where
    /// the queues go). The dispatchers end with the last reference.
    pub fn stop(&self) {
        self.queues.close();
        self.realm.broker.remove_session(self._watcher.session().id);
        self.realm.dealer.remove_session(self.worker.session());
    }
}

/// A router-owned session subscribed to `wamp.registration.on_create`:
/// each new registration wakes the dispatchers waiting for a worker that it
/// can serve (and only those).
fn watch_registrations(realm: &Arc<Realm>, waits: Arc<wakeups::WorkerWaits>) -> InternalCaller {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let watcher = InternalCaller::with_events(identity(), tx);
    realm.broker.subscribe(
        watcher.session(),
        "wamp.registration.on_create",
        MatchPolicy::Exact,
        false,
        |_| {},
    );
    let realm_name = realm.name().to_string();
    tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            let Some(switchyard_proto::Value::Dict(info)) = event.args.get(1) else {
                continue;
            };
            let Some(uri) = info.get_str("uri") else {
                continue;
            };
            let policy = info
                .get_str("match")
                .and_then(MatchPolicy::parse)
                .unwrap_or_default();
            for queue in waits.registered(uri, policy) {
                tracing::debug!(
                    realm = realm_name,
                    queue,
                    procedure = uri,
                    "queue dispatcher woken: a worker registered"
                );
            }
        }
    });
    watcher
}

/// Expires leases (cancelling their workers' calls), forgets old
/// idempotency keys and prunes dead letters: when the engine says the next
/// deadline falls, at least every second, and whenever a lease is handed
/// out, so a short lease is noticed on time.
async fn maintenance(service: std::sync::Weak<QueueService>) {
    const MAX_SLEEP: Duration = Duration::from_secs(1);
    /// How often parked dispatchers are checked against the registrations
    /// (in case a registration event was lost).
    const SWEEP: Duration = Duration::from_secs(10);
    let mut last_sweep = std::time::Instant::now();
    loop {
        let Some(s) = service.upgrade() else { return };
        if last_sweep.elapsed() >= SWEEP {
            last_sweep = std::time::Instant::now();
            let dealer = &s.realm.dealer;
            for queue in s.waits.sweep(|p| dealer.best_match(p).is_some()) {
                tracing::debug!(
                    realm = s.realm.name(),
                    queue,
                    "queue dispatcher woken: its worker is registered"
                );
            }
        }
        let sleep = match s.queues.maintain() {
            Ok(m) => {
                for e in m.expired {
                    s.lease_expired(e);
                }
                m.next_wakeup_ms
                    .map(|t| s.queues.clock().until(t))
                    .unwrap_or(MAX_SLEEP)
                    .clamp(Duration::from_millis(1), MAX_SLEEP)
            }
            Err(e) => {
                tracing::warn!(
                    realm = s.realm.name(),
                    "queue maintenance failed, retrying in a second: {e}"
                );
                MAX_SLEEP
            }
        };
        let wake = s.maintenance.clone();
        drop(s);
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// Checks a topic pattern for a binding.
fn check_topic(topic: &str, policy: MatchPolicy) -> Result<(), String> {
    uri::check(topic, uri::UriCheck::Loose, policy != MatchPolicy::Exact).map_err(|e| e.to_string())
}
