//! Cluster mode over NATS (issue 15): PubSub and RPC across nodes, node
//! failure.
//!
//! A node with `[cluster]` connects to NATS at start (bounded: it exits
//! with a message naming the servers when none answers) and gives each of
//! its realms a [`NatsBackplane`]. The router sees the cluster only through
//! the `Backplane` seam (switchyard-router knows nothing of NATS):
//!
//! - **Out.** The Broker hands every publication it accepted (after local
//!   delivery) to [`NatsBackplane::publish`], which encodes it once
//!   ([`wire`]) and queues it, without blocking, for the one task that
//!   publishes on this node's one NATS connection, in order, stamping each
//!   with the node's next sequence number (header `Switchyard-Seq`): so a
//!   publisher's events leave in publication order.
//! - **Interest.** Per realm, a router-owned session follows the
//!   subscription meta events; after each burst of them the node recomputes
//!   the subjects its local subscriptions need ([`subject::interest`],
//!   [`subject::covering`]) and subscribes to new ones before dropping old
//!   ones. A node with no local subscriber on a topic has no NATS
//!   subscription that reaches it, so NATS sends it nothing for it. A
//!   SUBSCRIBE whose subject the node does not hold yet waits
//!   ([`NatsBackplane::before_subscribe`](Backplane::before_subscribe), at
//!   most `INTEREST_WAIT`) until the reader has subscribed and flushed it
//!   (a "pin", kept until the Broker has the subscription).
//! - **In.** The realm's one reader (`follow_interest`) takes what its NATS
//!   subscriptions receive, restores each origin's order across them, and
//!   hands each publication to
//!   [`Broker::deliver_remote`](switchyard_router::broker::Broker::deliver_remote),
//!   which evaluates exclude/eligible/exclude_me on this node's sessions and
//!   never passes it back to the backplane. The connection is `no_echo`
//!   (NATS does not send a node its own publications back), messages whose
//!   `origin` is this node are dropped as well, and a small window of recent
//!   publication ids drops the second copy that two overlapping
//!   subscriptions can produce while the interest set changes.
//!
//! Sessions cluster-wide ([`meta`]): a session's id is claimed in the
//! cluster's NATS KV bucket before its WELCOME (unique cluster-wide; with
//! NATS away it joins unclaimed), its record (details, testaments) and
//! its node's subscriptions are kept there and watched by every node, so
//! `wamp.session.*` and `wamp.subscription.*` answer for every node; the
//! session and subscription meta events cross to the other nodes; a dead
//! node's sessions get their testaments and `on_leave` from one survivor.
//!
//! RPC across nodes: each node announces its client sessions'
//! registrations and a heartbeat ([`directory`], [`heartbeat`]); a remote
//! callee is a proxy session in the caller node's Dealer ([`proxy`]),
//! whose INVOCATIONs the callee's node relays to the callee and whose
//! answers come back ([`relay`]). A node silent for three heartbeats is
//! dead: its proxies leave every Dealer and their calls fail with
//! `wamp.error.canceled` naming the node.
//!
//! Retained events live in a NATS KV bucket every node mirrors
//! ([`retained`]); a realm's event histories are recorded on every node
//! (each node subscribes to its history topics' subjects as if they had a
//! local subscriber, and records what it receives).
//!
//! Durable queues on JetStream, one owner node per realm: [`queues`].
//!
//! Not done yet: see
//! (docs/CLUSTER.md lists them).

pub mod config;
pub mod directory;
pub mod heartbeat;
pub mod meta;
pub mod proxy;
pub mod queues;
pub mod relay;
pub mod retained;
pub mod subject;
pub mod wire;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use switchyard_router::backplane::{
    Backplane, CallRequest, CalleeAnswer, InterestWait, Publication,
};
use switchyard_router::dealer::RegistrationEvent;
use switchyard_router::internal::{InternalCaller, InternalEvent};
use switchyard_router::session::Identity;
use switchyard_router::uri_index::MatchPolicy;
use switchyard_router::{Realm, Router};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use config::ClusterConfig;

/// How long one attempt to reach one NATS server may take at start.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Publications queued for NATS at once; beyond, a publication reaches only
/// this node's subscribers (and is counted and logged).
const OUTBOUND_QUEUE: usize = 65_536;
/// How long a SUBSCRIBE waits at most for its NATS subscription (NATS
/// unreachable: the subscription is made anyway, local-only until then).
const INTEREST_WAIT: Duration = Duration::from_secs(2);
/// How long a subject asked for by a SUBSCRIBE stays subscribed without a
/// local subscription needing it (the SUBSCRIBE's session left meanwhile).
const PIN_TIME: Duration = Duration::from_secs(10);
/// Publication ids remembered per realm to drop a second copy.
const RECENT: usize = 8192;

/// The meta events after which a node recomputes its interest.
const INTEREST_EVENTS: [&str; 4] = [
    "wamp.subscription.on_create",
    "wamp.subscription.on_delete",
    "wamp.subscription.on_subscribe",
    "wamp.subscription.on_unsubscribe",
];

/// A message queued for NATS.
pub struct OutboundItem {
    pub subject: String,
    pub headers: Option<async_nats::HeaderMap>,
    pub body: Bytes,
}

/// A queue to the task that publishes on the node's NATS connection, in
/// order.
pub type Outbound = mpsc::Sender<OutboundItem>;

/// Registration changes of the realms' Dealers, for the directory.
type ChangesTx = mpsc::UnboundedSender<(Arc<str>, Vec<RegistrationEvent>)>;

/// This node's place in the cluster: its NATS connection and name.
pub struct Cluster {
    client: async_nats::Client,
    node: Arc<str>,
    prefix: String,
    /// Publications.
    outbound: Outbound,
    /// Directory messages and RPC answers (apart from publications, so a
    /// burst of publications never delays a heartbeat).
    control: Outbound,
    membership: Arc<heartbeat::Membership>,
    /// Cluster-wide sessions: claims, the meta API's view, meta events,
    /// dead nodes' sessions (`meta`).
    meta: Arc<meta::Meta>,
    lost_rx: parking_lot::Mutex<Option<mpsc::UnboundedReceiver<(String, bool)>>>,
    changes: ChangesTx,
    changes_rx: parking_lot::Mutex<Option<heartbeat::Changes>>,
    dropped: Arc<AtomicU64>,
    /// Publications sent to and received from the other nodes (`/metrics`).
    traffic: Arc<Traffic>,
    /// Retained events shared through the NATS KV bucket ([`retained`]).
    retained: Arc<retained::Outbox>,
    /// Replicas of the cluster's JetStream state (the retained events
    /// bucket): one per configured NATS server, at most 3.
    replicas: usize,
    /// Per realm: what its backplane and its reader share.
    realms: parking_lot::Mutex<HashMap<String, Arc<RealmShared>>>,
}

/// Publications sent to and received from the other nodes.
#[derive(Debug, Default)]
struct Traffic {
    /// Handed to NATS (queued for this node's connection).
    published: AtomicU64,
    /// Received from other nodes and handed to this node's Broker.
    received: AtomicU64,
}

/// A SUBSCRIBE's request for a subject, answered once it is in place.
type PinRequest = (String, oneshot::Sender<()>);

/// What a realm's backplane and its reader share.
struct RealmShared {
    /// The subjects the reader is subscribed to (after the flush).
    active: parking_lot::RwLock<HashSet<String>>,
    /// SUBSCRIBEs asking for a subject: (subject, answered once it is in
    /// place).
    pins: mpsc::Sender<PinRequest>,
    pins_rx: parking_lot::Mutex<Option<mpsc::Receiver<PinRequest>>>,
    /// Invocations relayed to this node's callees from other nodes.
    relay: Arc<relay::Relay>,
}

impl std::fmt::Debug for RealmShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealmShared").finish_non_exhaustive()
    }
}

/// What keeps a realm's cluster tasks alive (dropping it stops them).
pub struct RealmLink {
    _meta: Option<InternalCaller>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for RealmLink {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Cluster {
    /// Connects to NATS. Fails, naming the servers, when none answers within
    /// [`CONNECT_TIMEOUT`] each (the node then exits non-zero).
    pub async fn connect(c: &ClusterConfig) -> Result<Cluster, String> {
        let servers = c.nats.join(", ");
        let fail = |e: String| {
            format!(
                "cluster: node \"{}\" cannot reach NATS at {servers}: {e}",
                c.node
            )
        };
        let addrs = c
            .nats
            .iter()
            .map(|u| u.parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(e.to_string()))?;
        // When the connection last came up (the reaper of dead nodes'
        // sessions waits until the heartbeats have resumed).
        let up_since = Arc::new(parking_lot::Mutex::new(Instant::now()));
        let up = up_since.clone();
        // How many times the connection came up (heartbeats tell the
        // others of each reconnection).
        let connections = Arc::new(AtomicU64::new(0));
        let connected = connections.clone();
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("switchyard node {}", c.node))
            .no_echo()
            .connection_timeout(CONNECT_TIMEOUT)
            .event_callback(move |event| {
                let up = up.clone();
                let connected = connected.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            *up.lock() = Instant::now();
                            connected.fetch_add(1, Ordering::Relaxed);
                            tracing::info!("cluster: NATS connected")
                        }
                        other => tracing::warn!("cluster: NATS {other}"),
                    }
                }
            });
        if let Some(token) = &c.nats_token {
            options = options.token(token.clone());
        }
        if let Some(path) = &c.nats_credentials {
            options = options.credentials_file(path).await.map_err(|e| {
                format!(
                    "cluster.nats_credentials: cannot read {}: {e}",
                    path.display()
                )
            })?;
        }
        if let Some(tls) = &c.nats_tls {
            options = options.require_tls(true);
            if let Some(ca) = &tls.ca {
                options = options.add_root_certificates(ca.clone());
            }
            if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
                options = options.add_client_certificate(cert.clone(), key.clone());
            }
        }
        // Each server gets one attempt of CONNECT_TIMEOUT; the whole start
        // is bounded as well, whatever the client does inside.
        let whole = CONNECT_TIMEOUT * (addrs.len() as u32 + 1);
        let client = match tokio::time::timeout(whole, options.connect(addrs)).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(fail(e.to_string())),
            Err(_) => return Err(fail(format!("no answer within {whole:?}"))),
        };
        let info = client.server_info();
        tracing::info!(
            node = %c.node,
            server = %format!("{}:{}", info.host, info.port),
            version = %info.version,
            "cluster: connected to NATS"
        );
        let (outbound, rx) = mpsc::channel(OUTBOUND_QUEUE);
        tokio::spawn(publish_all(client.clone(), rx));
        let (control, rx) = mpsc::channel(OUTBOUND_QUEUE);
        tokio::spawn(publish_all(client.clone(), rx));
        let node: Arc<str> = c.node.as_str().into();
        let local = directory::LocalDirectory::new(&c.node);
        let meta = meta::Meta::open(
            client.clone(),
            node.clone(),
            local.epoch(),
            &c.subject_prefix,
            c.heartbeat,
            {
                let outbound = outbound.clone();
                Box::new(move |subject, body| {
                    let item = OutboundItem {
                        subject,
                        headers: None,
                        body,
                    };
                    outbound.try_send(item).is_ok()
                })
            },
            up_since,
            c.nats.len().clamp(1, 3),
        )
        .await?;
        let (lost, lost_rx) = mpsc::unbounded_channel();
        let membership = Arc::new(heartbeat::Membership {
            client: client.clone(),
            node: node.clone(),
            prefix: c.subject_prefix.clone(),
            heartbeat: c.heartbeat,
            local: Arc::new(parking_lot::Mutex::new(local)),
            control: control.clone(),
            live: meta.live.clone(),
            lost,
            connections,
        });
        let (changes, changes_rx) = mpsc::unbounded_channel();
        Ok(Cluster {
            client,
            node: node.clone(),
            prefix: c.subject_prefix.clone(),
            outbound,
            control,
            membership,
            meta,
            lost_rx: parking_lot::Mutex::new(Some(lost_rx)),
            changes,
            changes_rx: parking_lot::Mutex::new(Some(changes_rx)),
            dropped: Arc::default(),
            traffic: Arc::default(),
            retained: Arc::new(retained::Outbox::new(node.clone())),
            replicas: c.nats.len().clamp(1, 3),
            realms: parking_lot::Mutex::default(),
        })
    }

    /// This node's NATS connection.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The subject prefix of the cluster.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The cluster's families for `/metrics`, rendered at each scrape:
    /// the nodes this node sees alive (itself included), and the
    /// publications it sent to the other nodes, received from them and
    /// dropped (its queue to NATS full).
    pub fn metrics_source(&self) -> impl Fn(&mut String) + Send + Sync + 'static {
        let live = self.membership.live.clone();
        let traffic = self.traffic.clone();
        let dropped = self.dropped.clone();
        move |out| {
            use std::fmt::Write;
            let nodes = live.read().len() + 1;
            let _ = write!(
                out,
                "# HELP switchyard_cluster_nodes Nodes of the cluster this node sees alive (heartbeats), itself included.\n\
                 # TYPE switchyard_cluster_nodes gauge\n\
                 switchyard_cluster_nodes {nodes}\n\
                 # HELP switchyard_cluster_publications_total Publications this node sent to the other nodes (direction=\"out\"), received from them and delivered to its subscribers (direction=\"in\"), or could not send because its queue to NATS was full (direction=\"dropped\").\n\
                 # TYPE switchyard_cluster_publications_total counter\n\
                 switchyard_cluster_publications_total{{direction=\"out\"}} {}\n\
                 switchyard_cluster_publications_total{{direction=\"in\"}} {}\n\
                 switchyard_cluster_publications_total{{direction=\"dropped\"}} {}\n",
                traffic.published.load(Ordering::Relaxed),
                traffic.received.load(Ordering::Relaxed),
                dropped.load(Ordering::Relaxed),
            );
        }
    }

    /// A question the caller may keep: is the NATS connection up now?
    /// (`/readyz` and the `switchyard_cluster_nats_connected` gauge ask it.)
    pub fn connected_probe(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let client = self.client.clone();
        move || {
            matches!(
                client.connection_state(),
                async_nats::connection::State::Connected
            )
        }
    }

    fn shared(&self, realm: &str) -> Arc<RealmShared> {
        self.realms
            .lock()
            .entry(realm.to_string())
            .or_insert_with(|| {
                let (pins, rx) = mpsc::channel(1024);
                Arc::new(RealmShared {
                    active: parking_lot::RwLock::default(),
                    pins,
                    pins_rx: parking_lot::Mutex::new(Some(rx)),
                    relay: Arc::new(relay::Relay::new(
                        self.node.clone(),
                        subject::realm_rpc(&self.prefix, realm, "ans", ""),
                        self.control.clone(),
                    )),
                })
            })
            .clone()
    }

    /// The backplane of realm `realm` on this node.
    pub fn backplane(&self, realm: &str) -> Arc<dyn Backplane> {
        Arc::new(NatsBackplane {
            node: self.node.clone(),
            realm: Arc::from(realm),
            base: subject::realm_publications(&self.prefix, realm),
            outbound: self.outbound.clone(),
            dropped: self.dropped.clone(),
            traffic: self.traffic.clone(),
            shared: self.shared(realm),
            changes: self.changes.clone(),
            meta: self.meta.realm(realm),
            retained: self.retained.clone(),
        })
    }

    /// Starts following the interest of every realm of `router` and
    /// delivering what other nodes publish to its subscribers, and the
    /// cross-node RPC: the directory, the heartbeat, the proxies of remote
    /// callees and the relay to local ones. Everything is subscribed on
    /// NATS when this returns.
    pub async fn start(&self, router: &Router) -> Result<Vec<RealmLink>, String> {
        let mut links: Vec<RealmLink> = router
            .realms()
            .map(|realm| self.link(realm.clone()))
            .collect();
        let mut rpc = HashMap::new();
        for realm in router.realms() {
            let name = realm.name().to_string();
            let parts = heartbeat::RealmRpc {
                realm: realm.clone(),
                proxies: Arc::new(proxy::Proxies::new(
                    realm.clone(),
                    self.client.clone(),
                    self.node.clone(),
                    subject::realm_rpc(&self.prefix, &name, "inv", ""),
                )),
                relay: self.shared(&name).relay.clone(),
            };
            links.push(self.link_rpc(&parts).await?);
            rpc.insert(name, parts);
        }
        links.push(
            retained::start(
                &self.client,
                &self.prefix,
                router,
                self.retained.clone(),
                self.replicas,
            )
            .await?,
        );
        let Some(changes) = self.changes_rx.lock().take() else {
            return Err("cluster: started twice".into());
        };
        let tasks = heartbeat::start(self.membership.clone(), Arc::new(rpc), changes).await?;
        links.push(RealmLink { _meta: None, tasks });
        let Some(lost) = self.lost_rx.lock().take() else {
            return Err("cluster: started twice".into());
        };
        let tasks = meta::start(&self.meta, router, lost).await?;
        links.push(RealmLink { _meta: None, tasks });
        Ok(links)
    }

    /// Says goodbye to the other nodes (they drop this node's registrations
    /// at once) and stops announcing.
    pub async fn leave(&self) {
        self.membership.leave().await;
    }

    /// After the sessions closed: waits (briefly) until their records are
    /// deleted and their meta events are out.
    pub async fn finish(&self) {
        self.meta.drain(std::time::Duration::from_secs(2)).await;
        let _ = tokio::time::timeout(Duration::from_millis(500), self.client.flush()).await;
    }

    /// Subscribes a realm's invocation and answer subjects and starts its
    /// reader.
    async fn link_rpc(&self, parts: &heartbeat::RealmRpc) -> Result<RealmLink, String> {
        let name = parts.realm.name();
        let sub = |kind: &'static str| {
            let subject = subject::realm_rpc(&self.prefix, name, kind, &self.node);
            let client = self.client.clone();
            async move {
                client
                    .subscribe(subject.clone())
                    .await
                    .map_err(|e| format!("cluster: cannot subscribe to {subject}: {e}"))
            }
        };
        let inv = sub("inv").await?;
        let ans = sub("ans").await?;
        let _ = self.client.flush().await;
        let task = tokio::spawn(serve_rpc(parts.clone(), inv, ans));
        Ok(RealmLink {
            _meta: None,
            tasks: vec![task],
        })
    }

    fn link(&self, realm: Arc<Realm>) -> RealmLink {
        let (tx, rx) = mpsc::channel(1024);
        let meta = InternalCaller::with_events(
            Identity {
                authid: format!("cluster:{}", self.node),
                authrole: "switchyard".into(),
                authmethod: "internal".into(),
                authprovider: "switchyard".into(),
            },
            tx,
        );
        let session = meta.session().clone();
        for topic in INTEREST_EVENTS {
            realm
                .broker
                .subscribe(&session, topic, MatchPolicy::Exact, false, |_| {});
        }
        // Unconstrained: tokio's cooperative budget would make a channel
        // look empty in the middle of a drain, and the order argument of
        // `follow_interest` needs a drain to take all there is. The reader
        // yields after every round instead.
        let shared = self.shared(realm.name());
        let pins = shared.pins_rx.lock().take();
        let nats = Nats {
            client: self.client.clone(),
            sync: format!("{}.sync.{}", self.prefix, self.node),
            base: subject::realm_publications(&self.prefix, realm.name()),
            node: self.node.clone(),
            traffic: self.traffic.clone(),
        };
        let follower = tokio::spawn(tokio::task::unconstrained(follow_interest(
            nats, realm, rx, shared, pins,
        )));
        RealmLink {
            _meta: Some(meta),
            tasks: vec![follower],
        }
    }
}

/// The header that carries a publication's place in its node's order.
const SEQ_HEADER: &str = "Switchyard-Seq";

/// Publishes what the realms' backplanes queued, in queue order, on the
/// node's one connection, each stamped with the next sequence number.
async fn publish_all(client: async_nats::Client, mut rx: mpsc::Receiver<OutboundItem>) {
    let mut seq: u64 = 0;
    while let Some(OutboundItem {
        subject,
        headers,
        body,
    }) = rx.recv().await
    {
        seq += 1;
        let mut headers = headers.unwrap_or_default();
        headers.insert(SEQ_HEADER, seq.to_string().as_str());
        if let Err(e) = client.publish_with_headers(subject, headers, body).await {
            tracing::warn!("cluster: publication not sent to NATS: {e}");
        }
    }
}

/// The [`Backplane`] of one realm on a node of a NATS cluster.
#[derive(Debug)]
pub struct NatsBackplane {
    node: Arc<str>,
    realm: Arc<str>,
    /// `<prefix>.<realm>.pub`.
    base: String,
    outbound: Outbound,
    dropped: Arc<AtomicU64>,
    traffic: Arc<Traffic>,
    shared: Arc<RealmShared>,
    changes: ChangesTx,
    meta: Arc<meta::RealmMeta>,
    retained: Arc<retained::Outbox>,
}

impl Backplane for NatsBackplane {
    fn before_subscribe(&self, topic: &str, policy: MatchPolicy) -> Option<InterestWait> {
        if topic.starts_with("wamp.") {
            return None;
        }
        let subject = subject::interest(&self.base, topic, policy);
        if subject::is_covered(&self.shared.active.read(), &subject) {
            return None;
        }
        let (done, wait) = oneshot::channel();
        self.shared.pins.try_send((subject, done)).ok()?;
        Some(Box::pin(async move {
            let _ = tokio::time::timeout(INTEREST_WAIT, wait).await;
        }))
    }

    fn publish(&self, p: &Publication<'_>) {
        // Meta events are not published through the Broker's publish; a
        // client publication to wamp.* (when a role allows it) stays local
        // in this slice, as the meta API does.
        if p.topic.starts_with("wamp.") {
            return;
        }
        let body = match wire::encode(&self.node, p) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("cluster: {e}");
                return;
            }
        };
        let subject = subject::publication(&self.base, p.topic);
        let item = OutboundItem {
            subject,
            headers: None,
            body,
        };
        if self.outbound.try_send(item).is_ok() {
            self.traffic.published.fetch_add(1, Ordering::Relaxed);
        } else {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    dropped = n,
                    "cluster: the queue to NATS is full; publications reached only this node's subscribers"
                );
            }
        }
    }

    fn retain(&self, p: &Publication<'_>) {
        self.retained.put(&self.realm, p);
    }

    fn call(&self, _: &CallRequest<'_>) -> bool {
        // Remote callees are proxies in the local Dealer (proxy.rs): a
        // call no registration here matches has no callee anywhere the
        // directory knows of.
        false
    }

    fn registrations_changed(&self, events: &[RegistrationEvent]) {
        let _ = self.changes.send((self.realm.clone(), events.to_vec()));
    }

    fn answer(
        &self,
        callee: &switchyard_router::Session,
        invocation: u64,
        answer: CalleeAnswer,
    ) -> bool {
        self.shared.relay.answer(callee, invocation, answer)
    }

    fn claim_session(
        &self,
        session: &Arc<switchyard_router::Session>,
    ) -> Option<switchyard_router::backplane::ClaimWait> {
        self.meta.claim_session(session)
    }

    fn session_left(&self, session: &switchyard_router::Session) {
        self.meta.session_left(session);
    }

    fn testaments_changed(&self, session: &switchyard_router::Session) {
        self.meta.testaments_changed(session);
    }

    fn meta_event(&self, publication: u64, topic: &str, payload: &switchyard_proto::Payload) {
        self.meta.meta_event(publication, topic, payload);
    }

    fn remote_sessions(&self) -> Vec<switchyard_router::backplane::RemoteSession> {
        self.meta.remote_sessions()
    }

    fn remote_session(&self, id: u64) -> Option<switchyard_router::backplane::RemoteSession> {
        self.meta.remote_session(id)
    }

    fn remote_subscriptions(&self) -> Vec<switchyard_router::backplane::RemoteSubscription> {
        self.meta.remote_subscriptions()
    }

    fn kill_remote(
        &self,
        order: switchyard_router::backplane::KillOrder,
    ) -> Option<switchyard_router::backplane::KillWait> {
        self.meta.kill_remote(order)
    }
}

/// How often the relay looks for callees that left with invocations
/// pending (their callers' nodes then get `wamp.error.canceled`).
const RELAY_SWEEP: Duration = Duration::from_millis(100);

/// A realm's cross-node RPC reader: INVOCATIONs and INTERRUPTs for this
/// node's callees (to the relay), answers for this node's proxies (to the
/// Dealer).
async fn serve_rpc(
    parts: heartbeat::RealmRpc,
    mut inv: async_nats::Subscriber,
    mut ans: async_nats::Subscriber,
) {
    let mut sweep = tokio::time::interval(RELAY_SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            m = inv.next() => {
                let Some(m) = m else { break };
                if let Some((from, session, msg)) = rpc_message(&m) {
                    let registration = header_u64(&m, proxy::REGISTRATION_HEADER);
                    let incarnation = header_u64(&m, proxy::PROXY_HEADER);
                    parts.relay.receive(
                        &parts.realm,
                        &from,
                        session,
                        incarnation,
                        registration,
                        msg,
                    );
                }
            }
            m = ans.next() => {
                let Some(m) = m else { break };
                if let Some((from, session, msg)) = rpc_message(&m) {
                    let incarnation = header_u64(&m, proxy::PROXY_HEADER);
                    parts.proxies.answer(&from, session, incarnation, msg);
                }
            }
            _ = sweep.tick() => parts.relay.sweep(&parts.realm),
        }
    }
}

/// A number in header `name` of `m` (0 when absent).
fn header_u64(m: &async_nats::Message, name: &str) -> u64 {
    m.headers
        .as_ref()
        .and_then(|h| h.get(name))
        .and_then(|v| v.as_str().parse().ok())
        .unwrap_or(0)
}

/// (origin node, callee session, message) of a cross-node RPC message.
fn rpc_message(m: &async_nats::Message) -> Option<(String, u64, switchyard_proto::Message)> {
    let headers = m.headers.as_ref()?;
    let from = headers.get(proxy::FROM_HEADER)?.as_str().to_string();
    let session = headers.get(proxy::SESSION_HEADER)?.as_str().parse().ok()?;
    match switchyard_proto::Message::decode(switchyard_proto::Serializer::MsgPack, &m.payload) {
        Ok(msg) => Some((from, session, msg)),
        Err(e) => {
            tracing::warn!(subject = %m.subject, "cluster: undecodable RPC message dropped: {e:?}");
            None
        }
    }
}

/// Publication ids recently delivered from other nodes (a bounded window).
#[derive(Default)]
struct Recent {
    seen: HashSet<u64>,
    order: VecDeque<u64>,
}

impl Recent {
    /// False if (`origin`, `publication`) was delivered already.
    fn first(&mut self, origin: &str, publication: u64) -> bool {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (origin, publication).hash(&mut h);
        let key = h.finish();
        if !self.seen.insert(key) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > RECENT {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }
}

/// What a realm's reader uses of NATS.
struct Nats {
    client: async_nats::Client,
    /// `<prefix>.sync.<node>`: where the round trip after new
    /// subscriptions goes (nobody answers; NATS says so).
    sync: String,
    /// `<prefix>.<realm>.pub`.
    base: String,
    node: Arc<str>,
    traffic: Arc<Traffic>,
}

/// A publication from another node, not delivered yet.
struct Arrived {
    /// Its place in its origin's order (`SEQ_HEADER`); None: deliver as is.
    seq: Option<u64>,
    remote: wire::Remote,
}

/// The realm's one reader: keeps its NATS subscriptions equal to what its
/// local subscriptions need (recomputed after every burst of subscription
/// meta events) and delivers what they receive, in each origin node's
/// order.
///
/// # Order across subscriptions
/// async-nats gives each subscription its own channel, filled in the order
/// the messages came on the connection, so reading channels one by one can
/// reorder one publisher's events on different topics. The origin stamps
/// each publication with a per-node sequence number (in the order it
/// publishes), and this reader relies on one fact: when a message has been
/// taken from any channel, every message that came before it is already in
/// its channel. So: take what is there, note per origin the highest
/// sequence taken so far (the marks), drain every channel once more (which
/// collects all that came before the marked messages), then deliver, per
/// origin in sequence order, everything up to its mark; the rest waits for
/// the next round (at most one more drain).
async fn follow_interest(
    nats: Nats,
    realm: Arc<Realm>,
    mut changes: mpsc::Receiver<InternalEvent>,
    shared: Arc<RealmShared>,
    pins: Option<mpsc::Receiver<PinRequest>>,
) {
    let Some(mut pins) = pins else {
        return;
    };
    let Nats {
        client,
        sync,
        base,
        node,
        traffic,
    } = nats;
    let mut recent = Recent::default();
    let mut subs: Vec<(String, async_nats::Subscriber)> = Vec::new();
    let mut pending: Vec<Arrived> = Vec::new();
    let mut pinned: HashMap<String, Instant> = HashMap::new();
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    let mut changed = true;
    loop {
        while let Ok((subject, done)) = pins.try_recv() {
            pinned.insert(subject, Instant::now() + PIN_TIME);
            waiting.push(done);
            changed = true;
        }
        if changed {
            changed = false;
            let mut wanted: BTreeSet<String> = realm
                .broker
                .subscribed_patterns()
                .into_iter()
                .filter(|(uri, _)| !uri.starts_with("wamp."))
                .map(|(uri, policy)| subject::interest(&base, &uri, policy))
                .collect();
            // A pin ends once the subscription it was asked for exists (or
            // after PIN_TIME, when its SUBSCRIBE's session left).
            let now = Instant::now();
            pinned.retain(|s, until| *until > now && !wanted.contains(s));
            wanted.extend(pinned.keys().cloned());
            update_interest(&client, &sync, &wanted, &mut subs, &mut pending).await;
            *shared.active.write() = subs.iter().map(|(s, _)| s.clone()).collect();
            for done in waiting.drain(..) {
                let _ = done.send(());
            }
        }
        if pending.is_empty() {
            tokio::select! {
                change = changes.recv() => match change {
                    None => break,
                    Some(_) => {
                        while changes.try_recv().is_ok() {}
                        changed = true;
                        continue;
                    }
                },
                pin = pins.recv() => {
                    if let Some((subject, done)) = pin {
                        pinned.insert(subject, Instant::now() + PIN_TIME);
                        waiting.push(done);
                        changed = true;
                    }
                    continue;
                }
                message = next_of_any(&mut subs) => {
                    if let Some(a) = arrived(&message) {
                        pending.push(a);
                    }
                }
            }
        } else if changes.try_recv().is_ok() {
            while changes.try_recv().is_ok() {}
            changed = true;
        }
        let mut marks: HashMap<String, u64> = HashMap::new();
        for a in &pending {
            if let Some(seq) = a.seq {
                let m = marks.entry(a.remote.origin.clone()).or_insert(seq);
                *m = (*m).max(seq);
            }
        }
        drain(&mut subs, &mut pending);
        pending.sort_by(|x, y| (&x.remote.origin, x.seq).cmp(&(&y.remote.origin, y.seq)));
        let mut later = Vec::new();
        for a in pending.drain(..) {
            let due = match a.seq {
                None => true,
                Some(seq) => marks.get(&a.remote.origin).is_some_and(|m| seq <= *m),
            };
            if !due {
                later.push(a);
                continue;
            }
            let r = &a.remote;
            if *r.origin == *node || !recent.first(&r.origin, r.publication) {
                continue;
            }
            realm.broker.deliver_remote(
                r.publication,
                &r.topic,
                r.publisher,
                &r.options,
                &r.details,
                &r.payload,
            );
            traffic.received.fetch_add(1, Ordering::Relaxed);
        }
        pending = later;
        tokio::task::yield_now().await;
    }
}

/// Subscribes to the subjects `wanted` needs (the realm's subscriptions
/// and the pending SUBSCRIBEs) and drops the others (draining them first:
/// what they hold is delivered).
async fn update_interest(
    client: &async_nats::Client,
    sync: &str,
    wanted: &BTreeSet<String>,
    subs: &mut Vec<(String, async_nats::Subscriber)>,
    pending: &mut Vec<Arrived>,
) {
    let target = subject::covering(wanted);
    let have: HashSet<String> = subs.iter().map(|(s, _)| s.clone()).collect();
    let mut added = false;
    for s in target.iter().filter(|s| !have.contains(*s)) {
        match client.subscribe(s.clone()).await {
            Ok(sub) => {
                tracing::debug!(subject = %s, "cluster: subscribed");
                subs.push((s.clone(), sub));
                added = true;
            }
            Err(e) => tracing::warn!(subject = %s, "cluster: cannot subscribe: {e}"),
        }
    }
    // The new subscriptions are in place on the server before the ones
    // they replace go (no gap; a copy that arrives twice meanwhile is
    // dropped by `Recent`), and before a waiting SUBSCRIBE is answered.
    // `flush` only writes the socket; the server takes each connection's
    // commands in order, so its answer to a request made after the SUBs
    // (no responders: a status reply within a round trip) proves them
    // registered.
    if added {
        match tokio::time::timeout(
            INTEREST_WAIT,
            client.request(sync.to_string(), Bytes::new()),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {}
            Ok(Err(e)) => tracing::warn!("cluster: NATS round trip: {e}"),
            Err(_) => {
                tracing::warn!("cluster: NATS round trip: no answer within {INTEREST_WAIT:?}")
            }
        }
    }
    drain(subs, pending);
    // Dropping a Subscriber unsubscribes it.
    subs.retain(|(s, _)| {
        let keep = target.contains(s);
        if !keep {
            tracing::debug!(subject = %s, "cluster: unsubscribed");
        }
        keep
    });
}

/// The next message of any subscription (pending forever when there is
/// none to wait for: the caller also waits for interest changes).
async fn next_of_any(subs: &mut [(String, async_nats::Subscriber)]) -> async_nats::Message {
    std::future::poll_fn(|cx| {
        for (_, sub) in subs.iter_mut() {
            if let std::task::Poll::Ready(Some(m)) = sub.poll_next_unpin(cx) {
                return std::task::Poll::Ready(m);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// Takes every message already in a subscription's channel.
fn drain(subs: &mut [(String, async_nats::Subscriber)], pending: &mut Vec<Arrived>) {
    for (_, sub) in subs.iter_mut() {
        while let Some(Some(m)) = sub.next().now_or_never() {
            if let Some(a) = arrived(&m) {
                pending.push(a);
            }
        }
    }
}

/// Decodes a message from another node (None, logged, when it is not one).
fn arrived(message: &async_nats::Message) -> Option<Arrived> {
    match wire::decode(&message.payload) {
        Ok(remote) => Some(Arrived {
            seq: message
                .headers
                .as_ref()
                .and_then(|h| h.get(SEQ_HEADER))
                .and_then(|v| v.as_str().parse().ok()),
            remote,
        }),
        Err(e) => {
            tracing::warn!(subject = %message.subject, "cluster: undecodable message dropped: {e}");
            None
        }
    }
}
