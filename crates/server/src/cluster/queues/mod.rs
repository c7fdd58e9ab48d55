//! Durable queues in cluster mode on NATS JetStream (issue 16; docs/CLUSTER.md, "Queues in
//! cluster mode").
//!
//! With `[cluster.queues] store = "jetstream"`, each realm's queues live in one replicated
//! JetStream log instead of a node's disk, and one node at a time (the *owner*) runs the queue
//! engine over it, unchanged: the same leases, fencing epochs, retries, priorities, delays,
//! idempotency keys and dead letters as on one node.
//!
//! - `lease.rs`: which node owns a realm's queues (a KV lease with a term; takeover within
//!   `1.5 × lease` of the owner's last renewal);
//! - `store.rs`: the engine's `Store` over the log (group commit, each part fenced on the one
//!   before, so an old owner's late write is refused; recovery by replay; checkpoints);
//! - `front.rs`: the `switchyard.queue.*` procedures on every node, served by the owner (over
//!   NATS from the other nodes);
//! - `bindings.rs`: topic bindings on every node (jobs written by the owner);
//! - `names.rs`: stream, subject, bucket and key names;
//! - (here) the metric `switchyard_queue_owner`: the owner exports a realm's
//!   `switchyard_queue_*` figures, the other nodes none, so a sum over every node's scrape is
//!   right;
//! - `config.rs`: `[cluster.queues]`.
//!
//! Here: per realm, a governor task follows the lease; when this node wins a term it opens the
//! log (term marker, replay), starts the realm's queue service on it and serves the forwarded
//! calls; when the term ends (lease lost, or the log refused a write) it stops the service.

mod bindings;
pub mod config;
mod front;
mod lease;
pub mod names;
mod store;

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::jetstream;
use switchyard_router::Realm;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::ClusterQueuesConfig;
pub use front::UNAVAILABLE;

use crate::queue_service::{QueueService, RealmQueues};

/// The queues of a node's realms in cluster mode (dropping it stops following the leases).
pub struct ClusterQueues {
    fronts: Vec<Arc<front::Front>>,
    tasks: Vec<JoinHandle<()>>,
    /// Per realm: tell its governor the node stops; it answers once done.
    leaving: Vec<(watch::Sender<bool>, watch::Receiver<bool>)>,
}

/// How long a stopping node waits for its realms' queues to be handed over.
const HANDOVER: Duration = Duration::from_secs(3);

impl ClusterQueues {
    /// The node stops: each realm's queues this node owns are stopped, what their logs had
    /// queued is written, and the lease is released so another node takes over at once (not
    /// after the lease). Bounded by [`HANDOVER`].
    pub async fn leave(&self) {
        for (tx, _) in &self.leaving {
            tx.send_replace(true);
        }
        let all = async {
            for (_, rx) in &self.leaving {
                let mut rx = rx.clone();
                let _ = rx.wait_for(|done| *done).await;
            }
        };
        if tokio::time::timeout(HANDOVER, all).await.is_err() {
            tracing::warn!("cluster: queues not handed over within {HANDOVER:?}: the others take them after the lease");
        }
    }

    /// Closes the queue services this node runs (their stores commit what is queued).
    pub fn close(&self) {
        for f in &self.fronts {
            if let Some(s) = f.service() {
                s.close();
            }
        }
    }
}

impl Drop for ClusterQueues {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What a realm's governor needs.
struct Governor {
    realm: Arc<Realm>,
    settings: RealmQueues,
    front: Arc<front::Front>,
    client: async_nats::Client,
    js: jetstream::Context,
    prefix: String,
    node: String,
    config: ClusterQueuesConfig,
}

/// Each bound queue is a queue of the config file with a target (checked at start on every
/// node, not only by the owner when it takes the queues).
fn check_bindings(realm: &Realm, settings: &RealmQueues) -> Result<(), String> {
    for b in &settings.bindings {
        for q in &b.queues {
            match settings.configs.iter().find(|c| &c.name == q) {
                Some(c) if c.target.is_some() => {}
                Some(_) => {
                    return Err(format!(
                        "realm \"{}\": queue_binding on \"{}\" feeds queue \"{q}\", which has no default target: set its `target`",
                        realm.name(),
                        b.topic
                    ))
                }
                None => {
                    return Err(format!(
                        "realm \"{}\": queue_binding on \"{}\" names queue \"{q}\", which is not in the configuration",
                        realm.name(),
                        b.topic
                    ))
                }
            }
        }
    }
    Ok(())
}

/// How long one JetStream request or publish acknowledgement of the queues is waited for (the
/// NATS client's own default is 10 s): a request to a server that just died, or to a stream
/// whose leader is being elected, is sent again sooner (a publish with the same message id,
/// which JetStream stores once).
fn request_bound(lease: Duration) -> Duration {
    lease.clamp(Duration::from_secs(1), Duration::from_secs(5))
}

/// Registers the queue procedures of every realm and starts following their leases.
pub async fn start(
    client: async_nats::Client,
    prefix: &str,
    node: &str,
    config: &ClusterQueuesConfig,
    realms: Vec<(Arc<Realm>, RealmQueues)>,
) -> Result<ClusterQueues, String> {
    let js = jetstream::ContextBuilder::new()
        .timeout(request_bound(config.lease))
        .build(client.clone());
    let kv = lease::bucket(&js, &names::owners_bucket(prefix), config.replicas).await?;
    let mut out = ClusterQueues {
        fronts: Vec::new(),
        tasks: Vec::new(),
        leaving: Vec::new(),
    };
    let metrics = realms.first().map(|(r, _)| r.metrics.clone());
    let mut owned = Vec::new();
    for (realm, settings) in realms {
        check_bindings(&realm, &settings)?;
        let name = realm.name().to_string();
        let front = front::Front::register(
            realm.clone(),
            client.clone(),
            names::api_subject(prefix, realm.name()),
            (config.lease * 2).clamp(Duration::from_secs(2), Duration::from_secs(30)),
        )?;
        if !settings.bindings.is_empty() || !settings.subscribers.is_empty() {
            let subscribers = crate::queue_service::DurableSubscribers::new(
                &realm,
                settings.subscribers.clone(),
            )?;
            let max_payload = settings
                .configs
                .iter()
                .cloned()
                .chain(
                    settings
                        .subscribers
                        .iter()
                        .filter_map(crate::queue_service::SubscriberQueue::config),
                )
                .map(|c| (c.name, c.max_payload_bytes))
                .collect();
            realm.set_publish_hook(Arc::new(bindings::ClusterBindings {
                front: front.clone(),
                bindings: settings.bindings.clone(),
                subscribers,
                max_payload,
            }));
        }
        let (owner_tx, owner_rx) = watch::channel(None);
        let (control_tx, control_rx) = watch::channel(lease::Control::default());
        let (leave_tx, leave_rx) = watch::channel(false);
        let (left_tx, left_rx) = watch::channel(false);
        let lease = lease::Lease {
            kv: kv.clone(),
            key: names::owner_key(realm.name()),
            node: node.to_string(),
            lease: config.lease,
            realm: realm.name().to_string(),
        };
        out.tasks
            .push(tokio::spawn(lease.run(owner_tx, control_rx)));
        let governor = Governor {
            realm,
            settings,
            front: front.clone(),
            client: client.clone(),
            js: js.clone(),
            prefix: prefix.to_string(),
            node: node.to_string(),
            config: config.clone(),
        };
        let links = Links {
            owner: owner_rx,
            control: control_tx,
            leave: leave_rx,
            left: left_tx,
        };
        out.tasks.push(tokio::spawn(govern(governor, links)));
        out.leaving.push((leave_tx, left_rx));
        owned.push((name, Arc::downgrade(&front)));
        out.fronts.push(front);
    }
    if let Some(metrics) = metrics {
        metrics.add_source(Box::new(owner_metric(owned)));
    }
    Ok(out)
}

/// `switchyard_queue_owner{realm}`: 1 while this node owns (runs) the realm's queues, else 0.
fn owner_metric(realms: Vec<(String, Weak<front::Front>)>) -> impl Fn(&mut String) + Send + Sync {
    move |out: &mut String| {
        use std::fmt::Write;
        out.push_str("# HELP switchyard_queue_owner Whether this node owns the realm's queues in cluster mode (1; it exports their switchyard_queue_* figures) or not (0).\n# TYPE switchyard_queue_owner gauge\n");
        for (realm, front) in &realms {
            let owns = front.upgrade().is_some_and(|f| f.service().is_some());
            let realm = realm
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let _ = writeln!(
                out,
                "switchyard_queue_owner{{realm=\"{realm}\"}} {}",
                u8::from(owns)
            );
        }
    }
}

/// The channels between a realm's governor, its lease task and [`ClusterQueues::leave`].
struct Links {
    owner: watch::Receiver<Option<u64>>,
    control: watch::Sender<lease::Control>,
    leave: watch::Receiver<bool>,
    left: watch::Sender<bool>,
}

/// Waits until `owner` no longer holds `term`.
async fn lost(owner: &mut watch::Receiver<Option<u64>>, term: u64) {
    loop {
        if *owner.borrow_and_update() != Some(term) {
            return;
        }
        if owner.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Resolves when the node stops.
async fn leaving(leave: &mut watch::Receiver<bool>) {
    if leave.wait_for(|l| *l).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Tells the lease task to release (when owning) and stop, waits for it (bounded), and says so.
async fn hand_over(links: &mut Links) {
    links.control.send_modify(|c| c.leaving = true);
    let _ = tokio::time::timeout(HANDOVER, links.owner.wait_for(|o| o.is_none())).await;
    links.left.send_replace(true);
}

/// Runs the realm's queue service during each of this node's terms.
async fn govern(g: Governor, mut links: Links) {
    let realm = g.realm.name().to_string();
    loop {
        let term = tokio::select! {
            t = async {
                loop {
                    if let Some(t) = *links.owner.borrow_and_update() {
                        return Some(t);
                    }
                    if links.owner.changed().await.is_err() {
                        return None;
                    }
                }
            } => t,
            _ = leaving(&mut links.leave) => None,
        };
        let Some(term) = term else {
            hand_over(&mut links).await;
            return;
        };
        let place = store::LogPlace {
            js: g.js.clone(),
            stream: names::stream(&g.prefix, &realm),
            subject: names::log_subject(&g.prefix, &realm),
            replicas: g.config.replicas,
            node: g.node.clone(),
            term,
            held: links.owner.clone(),
            retry_for: g.config.lease,
            checkpoint_entries: g.config.checkpoint_entries,
            result_budget: g.settings.limits.results.max_total_bytes as u64,
        };
        let location = format!("JetStream stream {} (term {term})", place.stream);
        let opened = tokio::select! {
            r = store::JetStreamStore::open(place) => r,
            _ = lost(&mut links.owner, term) => continue,
            _ = leaving(&mut links.leave) => {
                hand_over(&mut links).await;
                return;
            }
        };
        let store = match opened {
            Ok(s) => Arc::new(s),
            Err(e) => {
                tracing::error!(realm, term, "cluster: cannot open the queue log: {e}");
                links.control.send_modify(|c| c.give_up = term);
                continue;
            }
        };
        let recovered = store.recovered;
        let mut failed = store.failed();
        let service = match QueueService::start_replicated(
            g.realm.clone(),
            g.settings.clone(),
            store.clone(),
            location,
            store.completed(),
        )
        .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(realm, term, "cluster: cannot start the queues: {e}");
                switchyard_queue::Store::close(&*store);
                links.control.send_modify(|c| c.give_up = term);
                continue;
            }
        };
        // Forwarded calls reach this node before it says it dispatches.
        let sub = match front::subscribe_forwarded(&g.client, names::api_subject(&g.prefix, &realm))
            .await
        {
            Ok(sub) => sub,
            Err(e) => {
                tracing::error!(realm, term, "cluster: {e}");
                service.stop();
                links.control.send_modify(|c| c.give_up = term);
                continue;
            }
        };
        g.front.set_service(Some(service.clone()));
        let api = tokio::spawn(front::serve_forwarded(
            g.client.clone(),
            sub,
            service.clone(),
        ));
        tracing::info!(
            realm,
            term,
            log_messages = recovered.messages,
            jobs = recovered.jobs,
            took_ms = recovered.took.as_millis() as u64,
            "cluster: queues recovered from the log; dispatching"
        );
        let stopping = tokio::select! {
            _ = lost(&mut links.owner, term) => false,
            _ = failed.wait_for(|f| *f) => {
                links.control.send_modify(|c| c.give_up = term);
                false
            }
            _ = leaving(&mut links.leave) => true,
        };
        g.front.set_service(None);
        api.abort();
        service.stop();
        drop(service);
        if stopping {
            // What the log had queued is written before another node starts its term.
            let mut drained = store.drained();
            let _ = tokio::time::timeout(HANDOVER, drained.wait_for(|d| *d)).await;
            hand_over(&mut links).await;
            tracing::info!(realm, term, "cluster: queues handed over");
            return;
        }
        tracing::info!(realm, term, "cluster: queues stopped on this node");
    }
}
