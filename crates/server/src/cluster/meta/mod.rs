//! Cluster-wide sessions (issue 15): session ids claimed cluster-wide, the
//! session and subscription meta API over every node, meta events from
//! every node, and the sessions of a dead node ended by a survivor.
//!
//! **State.** One NATS KV bucket per cluster (`<prefix>_sessions`,
//! [`bucket`]) holds a record per client session (`s.<id>`: its node and
//! process epoch, realm, details and testaments) and per subscription
//! with client subscribers (`u.<node>.<id>`), [`record`]. Every node
//! watches the whole bucket into memory ([`view`]); the meta procedures
//! answer from there, at once, without asking the other nodes (see
//! docs/CLUSTER.md for why this and not a scatter-gather request).
//!
//! - **Claim.** A session's record is created with KV `create` (refused
//!   when the key exists) before its WELCOME: an id another node's session
//!   holds makes the joining session draw another. The wait is bounded
//!   ([`CLAIM_WAIT`]); with NATS away (or slow) the session joins with its
//!   random id unclaimed, and the node's repair round writes its record
//!   once NATS is back.
//! - **Writes.** Testament changes, leaves and subscription changes go to
//!   one writer task per node, in order ([`Write`]); a full queue drops
//!   the write (logged) and the repair round mends it.
//! - **Meta events.** `wamp.session.on_join`/`on_leave` and the
//!   `wamp.subscription.on_*` events of client sessions are published on
//!   `<prefix>.<realm>.meta.<node>` after local delivery; every other node
//!   delivers them to its meta subscribers. Registration meta events are
//!   not sent: each node fires its own when a remote callee's proxy comes
//!   and goes (docs/CLUSTER.md, RPC).
//! - **A dead node** ([`reaper`]): when the directory declares a node
//!   dead (or restarted, or gone with `bye`), the lowest-named live node
//!   reaps its records at once and every other survivor after two
//!   heartbeats; each record is removed with a compare-and-delete on its
//!   revision, and only the node whose delete succeeded publishes the
//!   session's testaments and `on_leave` (or the subscription's
//!   `on_unsubscribe`/`on_delete`): once per session, whichever survivor.

pub mod bucket;
mod reaper;
pub mod record;
pub mod view;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt;
use switchyard_proto::{Dict, Message, Payload, Serializer, Value};
use switchyard_router::backplane::{ClaimWait, RemoteSession, RemoteSubscription};
use switchyard_router::{Realm, Router, Session};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

use super::{subject, Outbound, OutboundItem};
use record::{SessionRecord, SubscriptionRecord};
use view::{Live, View};

/// How long a joining session waits at most for the claim of its id.
pub const CLAIM_WAIT: Duration = Duration::from_secs(2);
/// How long one KV write or read may take.
const KV_WAIT: Duration = Duration::from_secs(2);
/// Record writes queued at once.
const WRITES: usize = 65_536;
/// How often (in heartbeats) a node repairs its own records and the
/// lowest live node sweeps records of processes that are gone.
const REPAIR_BEATS: u32 = 10;

/// A record write, in the writer's order.
enum Write {
    Put(String, Bytes),
    Delete(String),
}

/// This node's part of the cluster-wide sessions.
pub struct Meta {
    node: Arc<str>,
    epoch: u64,
    prefix: String,
    heartbeat: Duration,
    client: async_nats::Client,
    kv: kv::Store,
    view: parking_lot::RwLock<View>,
    /// The nodes alive now (the directory keeps it).
    pub live: Arc<parking_lot::RwLock<Live>>,
    /// When the NATS connection last came up.
    up_since: Arc<parking_lot::Mutex<Instant>>,
    writes: mpsc::Sender<Write>,
    writes_rx: parking_lot::Mutex<Option<mpsc::Receiver<Write>>>,
    /// The publications queue (meta events keep their order with them).
    outbound: Outbound,
    dropped: AtomicU64,
    realms: parking_lot::Mutex<HashMap<String, Arc<RealmMeta>>>,
}

impl Meta {
    /// Opens the sessions bucket (creating it if needed).
    pub async fn open(
        client: async_nats::Client,
        node: Arc<str>,
        epoch: u64,
        prefix: &str,
        heartbeat: Duration,
        outbound: Outbound,
        up_since: Arc<parking_lot::Mutex<Instant>>,
    ) -> Result<Arc<Meta>, String> {
        let kv = bucket::open(&client, prefix).await?;
        let (writes, rx) = mpsc::channel(WRITES);
        Ok(Arc::new(Meta {
            node,
            epoch,
            prefix: prefix.to_string(),
            heartbeat,
            client,
            kv,
            view: parking_lot::RwLock::default(),
            live: Arc::default(),
            up_since,
            writes,
            writes_rx: parking_lot::Mutex::new(Some(rx)),
            outbound,
            dropped: AtomicU64::new(0),
            realms: parking_lot::Mutex::default(),
        }))
    }

    fn connected(&self) -> bool {
        matches!(
            self.client.connection_state(),
            async_nats::connection::State::Connected
        )
    }

    /// Connected for long enough that every live node's heartbeat has
    /// been heard since (a node that was cut off does not take the others
    /// for dead when it comes back).
    fn settled(&self) -> bool {
        self.connected() && self.up_since.lock().elapsed() >= self.heartbeat * 4
    }

    /// The part of realm `realm` (its backplane delegates to it).
    pub fn realm(self: &Arc<Self>, realm: &str) -> Arc<RealmMeta> {
        self.realms
            .lock()
            .entry(realm.to_string())
            .or_insert_with(|| {
                Arc::new(RealmMeta {
                    meta: self.clone(),
                    realm: realm.to_string(),
                    events: subject::realm_rpc(&self.prefix, realm, "meta", &self.node),
                    clients: parking_lot::Mutex::default(),
                    dirty: parking_lot::Mutex::default(),
                    notify: Notify::new(),
                })
            })
            .clone()
    }

    fn write(&self, w: Write) {
        if self.writes.try_send(w).is_err() {
            tracing::warn!("cluster: the queue of session record writes is full: a write was dropped (the next repair round mends it)");
        }
    }

    /// Queues a meta event for the other nodes.
    fn forward(&self, events: &str, publication: u64, topic: &str, payload: &Payload) {
        let body = Message::Publish {
            request: publication,
            options: Dict::new().with("origin", &*self.node),
            topic: topic.to_string(),
            payload: payload.clone(),
        }
        .encode(Serializer::MsgPack);
        let Ok(body) = body else {
            return;
        };
        let item = OutboundItem {
            subject: events.to_string(),
            headers: None,
            body,
        };
        if self.outbound.try_send(item).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    dropped = n,
                    "cluster: the queue to NATS is full; meta events reached only this node"
                );
            }
        }
    }

    /// Starts the writer, the bucket watch, each realm's meta event reader
    /// and subscription recorder, and the reaper (fed with the nodes the
    /// directory loses by `lost`).
    pub async fn start(
        self: &Arc<Self>,
        router: &Router,
        lost: mpsc::UnboundedReceiver<String>,
    ) -> Result<Vec<JoinHandle<()>>, String> {
        let Some(rx) = self.writes_rx.lock().take() else {
            return Err("cluster: sessions started twice".into());
        };
        let mut tasks = vec![
            tokio::spawn(write_all(self.kv.clone(), rx)),
            tokio::spawn(watch(self.clone())),
        ];
        let mut realms = HashMap::new();
        for realm in router.realms() {
            let rm = self.realm(realm.name());
            let subject = subject::realm_rpc(&self.prefix, realm.name(), "meta", "*");
            let sub = self
                .client
                .subscribe(subject.clone())
                .await
                .map_err(|e| format!("cluster: cannot subscribe to {subject}: {e}"))?;
            tasks.push(tokio::spawn(receive_events(
                self.clone(),
                realm.clone(),
                sub,
            )));
            tasks.push(tokio::spawn(record_subscriptions(
                realm.clone(),
                rm.clone(),
            )));
            realms.insert(realm.name().to_string(), (realm.clone(), rm));
        }
        let _ = self.client.flush().await;
        tasks.push(tokio::spawn(reaper::run(
            self.clone(),
            Arc::new(realms),
            lost,
        )));
        Ok(tasks)
    }

    /// Applies a change of the bucket to the view.
    fn apply(&self, entry: kv::Entry) {
        match entry.operation {
            kv::Operation::Put => match record::decode(&entry.value) {
                Ok(r) => self.view.write().put(r, Instant::now()),
                Err(e) => {
                    tracing::debug!(key = %entry.key, "cluster: undecodable session record: {e}")
                }
            },
            kv::Operation::Delete | kv::Operation::Purge => self.view.write().delete(&entry.key),
        }
    }
}

/// A realm's part: what its backplane asks and is told.
pub struct RealmMeta {
    meta: Arc<Meta>,
    realm: String,
    /// `<prefix>.<realm>.meta.<node>`: where this node's meta events go.
    events: String,
    /// This node's client sessions in the realm (from their `on_join` to
    /// their leave): whose subscription meta events are the cluster's
    /// business (router-owned sessions' are not).
    clients: parking_lot::Mutex<HashSet<u64>>,
    /// Subscriptions whose record must be written again.
    dirty: parking_lot::Mutex<HashSet<u64>>,
    notify: Notify,
}

impl std::fmt::Debug for RealmMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealmMeta")
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

/// What became of a claim.
#[derive(Debug, PartialEq)]
enum Claim {
    Claimed,
    Taken,
    /// NATS did not answer in time (or refused otherwise): the session
    /// goes on unclaimed.
    Unclaimed,
}

impl RealmMeta {
    fn record(&self, session: &Session) -> SessionRecord {
        SessionRecord {
            id: session.id,
            node: self.meta.node.to_string(),
            epoch: self.meta.epoch,
            realm: self.realm.clone(),
            authid: session.authid.clone(),
            authrole: session.authrole.clone(),
            details: switchyard_router::details::session_details(session),
            testaments: session.testaments(),
        }
    }

    pub fn claim_session(&self, session: &Arc<Session>) -> Option<ClaimWait> {
        if !self.meta.connected() {
            tracing::info!(
                session = session.id,
                "cluster: NATS is away: the session joins with its random id unclaimed"
            );
            return None;
        }
        let body = match self.record(session).encode() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("cluster: {e}");
                return None;
            }
        };
        let key = record::session_key(session.id);
        let kv = self.meta.kv.clone();
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let outcome = match tokio::time::timeout(CLAIM_WAIT, kv.create(&key, body)).await {
                Ok(Ok(_)) => Claim::Claimed,
                Ok(Err(e)) if e.kind() == kv::CreateErrorKind::AlreadyExists => Claim::Taken,
                Ok(Err(e)) => {
                    tracing::warn!(key, "cluster: session id not claimed: {e}");
                    Claim::Unclaimed
                }
                Err(_) => {
                    tracing::warn!(
                        key,
                        "cluster: session id not claimed: NATS did not answer within {CLAIM_WAIT:?}"
                    );
                    Claim::Unclaimed
                }
            };
            // The session gave up waiting (its connection closed): the
            // claim is released.
            if let Err(Claim::Claimed) = tx.send(outcome) {
                let _ = tokio::time::timeout(KV_WAIT, kv.delete(&key)).await;
            }
        });
        Some(Box::pin(
            async move { !matches!(rx.await, Ok(Claim::Taken)) },
        ))
    }

    pub fn session_left(&self, session: &Session) {
        self.clients.lock().remove(&session.id);
        self.meta
            .write(Write::Delete(record::session_key(session.id)));
    }

    pub fn testaments_changed(&self, session: &Session) {
        match self.record(session).encode() {
            Ok(body) => self
                .meta
                .write(Write::Put(record::session_key(session.id), body)),
            Err(e) => tracing::warn!("cluster: {e}"),
        }
    }

    /// A meta event of this node (under the Broker's lock: only queues).
    pub fn meta_event(&self, publication: u64, topic: &str, payload: &Payload) {
        let Some(event) = topic.strip_prefix("wamp.") else {
            return;
        };
        match event {
            "session.on_join" => {
                if let Some(id) = first_arg(payload)
                    .as_ref()
                    .and_then(Value::as_dict)
                    .and_then(|d| d.get("session"))
                    .and_then(Value::as_u64)
                {
                    self.clients.lock().insert(id);
                }
                self.meta.forward(&self.events, publication, topic, payload);
            }
            "session.on_leave" => self.meta.forward(&self.events, publication, topic, payload),
            "subscription.on_create"
            | "subscription.on_subscribe"
            | "subscription.on_unsubscribe"
            | "subscription.on_delete" => {
                let args = args(payload);
                let session = args.first().and_then(Value::as_u64);
                if !session.is_some_and(|s| self.clients.lock().contains(&s)) {
                    return;
                }
                let id = match args.get(1) {
                    Some(Value::Dict(d)) => d.get("id").and_then(Value::as_u64),
                    Some(v) => v.as_u64(),
                    None => None,
                };
                if let Some(id) = id {
                    self.dirty.lock().insert(id);
                    self.notify.notify_one();
                }
                self.meta.forward(&self.events, publication, topic, payload);
            }
            _ => {}
        }
    }

    pub fn remote_sessions(&self) -> Vec<RemoteSession> {
        self.meta.view.read().sessions(&self.meta.node, &self.realm)
    }

    pub fn remote_session(&self, id: u64) -> Option<RemoteSession> {
        self.meta
            .view
            .read()
            .session(&self.meta.node, &self.realm, id)
    }

    pub fn remote_subscriptions(&self) -> Vec<RemoteSubscription> {
        self.meta
            .view
            .read()
            .subscriptions(&self.meta.node, &self.realm)
    }
}

fn args(payload: &Payload) -> Vec<Value> {
    match payload.args.as_ref().and_then(|a| a.to_value().ok()) {
        Some(Value::List(l)) => l,
        _ => Vec::new(),
    }
}

fn first_arg(payload: &Payload) -> Option<Value> {
    args(payload).into_iter().next()
}

/// Writes the records, in order.
async fn write_all(kv: kv::Store, mut rx: mpsc::Receiver<Write>) {
    while let Some(w) = rx.recv().await {
        let (key, result) = match w {
            Write::Put(key, body) => {
                let r = tokio::time::timeout(KV_WAIT, kv.put(&key, body)).await;
                (key, r.map(|r| r.map(drop).map_err(|e| e.to_string())))
            }
            Write::Delete(key) => {
                let r = tokio::time::timeout(KV_WAIT, kv.delete(&key)).await;
                (key, r.map(|r| r.map_err(|e| e.to_string())))
            }
        };
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(key, "cluster: session record not written: {e}"),
            Err(_) => tracing::warn!(
                key,
                "cluster: session record not written: no answer within {KV_WAIT:?}"
            ),
        }
    }
}

/// Keeps the view equal to the bucket (watching again after an error).
async fn watch(meta: Arc<Meta>) {
    loop {
        match meta.kv.watch_with_history(">").await {
            Ok(mut changes) => {
                while let Some(change) = changes.next().await {
                    match change {
                        Ok(entry) => meta.apply(entry),
                        // Not fatal (e.g. a missed heartbeat of the
                        // watch while NATS restarts): keep reading.
                        Err(e) => tracing::debug!("cluster: sessions bucket watch: {e}"),
                    }
                }
                tracing::warn!("cluster: the sessions bucket watch ended: watching again");
            }
            Err(e) => tracing::warn!("cluster: cannot watch the sessions bucket: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Delivers the other nodes' meta events to this node's meta subscribers
/// (and notes their sessions' joins and leaves at once).
async fn receive_events(meta: Arc<Meta>, realm: Arc<Realm>, mut sub: async_nats::Subscriber) {
    while let Some(m) = sub.next().await {
        let Ok(Message::Publish {
            request: publication,
            options,
            topic,
            payload,
        }) = Message::decode(Serializer::MsgPack, &m.payload)
        else {
            tracing::warn!(subject = %m.subject, "cluster: undecodable meta event dropped");
            continue;
        };
        let origin = options.get_str("origin").unwrap_or_default();
        if origin == &*meta.node || !topic.starts_with("wamp.") {
            continue;
        }
        match topic.as_str() {
            "wamp.session.on_join" => {
                if let Some(Value::Dict(d)) = first_arg(&payload) {
                    meta.view
                        .write()
                        .joined(origin, realm.name(), &d, Instant::now());
                }
            }
            "wamp.session.on_leave" => {
                if let Some(id) = first_arg(&payload).as_ref().and_then(Value::as_u64) {
                    meta.view.write().left(id);
                }
            }
            _ => {}
        }
        realm
            .broker
            .deliver_remote(publication, &topic, 0, &Dict::new(), &Dict::new(), &payload);
    }
}

/// Writes the records of this node's subscriptions that changed (those
/// with client subscribers), and every repair round those the bucket
/// lost.
async fn record_subscriptions(realm: Arc<Realm>, rm: Arc<RealmMeta>) {
    let meta = rm.meta.clone();
    let mut written: HashMap<u64, SubscriptionRecord> = HashMap::new();
    let mut repair = tokio::time::interval(meta.heartbeat * REPAIR_BEATS);
    repair.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = rm.notify.notified() => {}
            _ = repair.tick() => {
                repair_sessions(&realm, &rm);
                let present: HashSet<u64> = meta
                    .view
                    .read()
                    .own_subscriptions(&meta.node, meta.epoch, &rm.realm)
                    .into_iter()
                    .collect();
                if meta.connected() {
                    // Lost records (a partition made others reap them, a
                    // dropped write): written again.
                    written.retain(|id, _| present.contains(id));
                    rm.dirty.lock().extend(realm.broker.list().into_iter().flatten());
                }
            }
        }
        let ids: Vec<u64> = rm.dirty.lock().drain().collect();
        for id in ids {
            let record = realm.broker.subscription(id).and_then(|info| {
                let clients = rm.clients.lock();
                let subscribers: Vec<u64> = info
                    .subscribers
                    .into_iter()
                    .filter(|s| clients.contains(s))
                    .collect();
                (!subscribers.is_empty()).then(|| SubscriptionRecord {
                    id,
                    node: meta.node.to_string(),
                    epoch: meta.epoch,
                    realm: rm.realm.clone(),
                    uri: info.uri,
                    policy: info.policy,
                    created_ms: view::ms(info.created),
                    subscribers,
                })
            });
            let key = record::subscription_key(&meta.node, id);
            match record {
                Some(r) if written.get(&id) != Some(&r) => match r.encode() {
                    Ok(body) => {
                        meta.write(Write::Put(key, body));
                        written.insert(id, r);
                    }
                    Err(e) => tracing::warn!("cluster: {e}"),
                },
                Some(_) => {}
                None => {
                    if written.remove(&id).is_some() {
                        meta.write(Write::Delete(key));
                    }
                }
            }
        }
    }
}

/// Makes the bucket's records of this node's sessions in `realm` match
/// its sessions: records of sessions gone are deleted, sessions without a
/// record (joined while NATS was away, or reaped by others while this
/// node was cut off) get one.
fn repair_sessions(realm: &Realm, rm: &RealmMeta) {
    let meta = &rm.meta;
    if !meta.connected() {
        return;
    }
    // Settled: a record whose claim just completed may come before its
    // session is in the realm.
    let settle = CLAIM_WAIT + meta.heartbeat;
    let (present, recorded): (HashSet<u64>, HashSet<u64>) = {
        let view = meta.view.read();
        let own = |settle| {
            view.own_sessions(&meta.node, meta.epoch, &rm.realm, settle, Instant::now())
                .into_iter()
                .collect()
        };
        (own(Duration::ZERO), own(settle))
    };
    let clients: HashSet<u64> = rm.clients.lock().clone();
    for s in realm.sessions() {
        if clients.contains(&s.id) && !present.contains(&s.id) {
            tracing::info!(session = s.id, "cluster: session record written again");
            rm.testaments_changed(&s);
        }
    }
    for id in recorded {
        if realm.session(id).is_none() {
            meta.write(Write::Delete(record::session_key(id)));
        }
    }
}
