//! This node's part of the cluster-wide sessions ([`Meta`]) and each
//! realm's ([`RealmMeta`], what the realm's backplane delegates to): the
//! claim, the writes, the meta events sent, the answers from the view.
//! The tasks that move things are in `mod.rs` and `reaper.rs`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use bytes::Bytes;
use switchyard_proto::{Dict, Message, Payload, Serializer, Value};
use switchyard_router::backplane::{
    ClaimWait, KillOrder, KillWait, RemoteSession, RemoteSubscription,
};
use switchyard_router::Session;
use tokio::sync::{mpsc, oneshot, Notify};

use super::bucket;
use super::record::{self, SessionRecord};
use super::view::{Live, Own, View};
use crate::cluster::subject;

/// Hands a message (subject, body) to the node's publications queue to
/// NATS, without blocking; false when the queue is full.
pub type Forward = Box<dyn Fn(String, Bytes) -> bool + Send + Sync>;

/// How long a joining session waits at most for the claim of its id.
pub const CLAIM_WAIT: Duration = Duration::from_secs(2);
/// How long one KV write or read may take.
pub(super) const KV_WAIT: Duration = Duration::from_secs(2);
/// Record writes queued at once.
const WRITES: usize = 65_536;
/// How often (in heartbeats) a node repairs its own records and the
/// lowest live node sweeps records of processes that are gone.
pub(super) const REPAIR_BEATS: u32 = 10;

/// A record write, in the writer's order.
pub(super) enum Write {
    Put(String, Bytes),
    Delete(String),
}

/// This node's part of the cluster-wide sessions.
pub struct Meta {
    pub(super) node: Arc<str>,
    pub(super) epoch: u64,
    pub(super) prefix: String,
    pub(super) heartbeat: Duration,
    pub(super) client: async_nats::Client,
    pub(super) kv: kv::Store,
    pub(super) view: parking_lot::RwLock<View>,
    /// The nodes alive now (the directory keeps it).
    pub live: Arc<parking_lot::RwLock<Live>>,
    /// When the NATS connection last came up.
    pub(super) up_since: Arc<parking_lot::Mutex<Instant>>,
    pub(super) writes: mpsc::Sender<Write>,
    pub(super) writes_rx: parking_lot::Mutex<Option<mpsc::Receiver<Write>>>,
    /// To the publications queue (meta events keep their order with
    /// them).
    pub(super) outbound: Forward,
    pub(super) dropped: AtomicU64,
    /// Writes queued or in flight.
    pub(super) pending: std::sync::atomic::AtomicUsize,
    pub(super) realms: parking_lot::Mutex<HashMap<String, Arc<RealmMeta>>>,
}

impl Meta {
    /// Opens the sessions bucket (creating it if needed).
    // Each argument is one independent part of the node's setup, passed once at start.
    #[allow(clippy::too_many_arguments)]
    pub async fn open(
        client: async_nats::Client,
        node: Arc<str>,
        epoch: u64,
        prefix: &str,
        heartbeat: Duration,
        outbound: Forward,
        up_since: Arc<parking_lot::Mutex<Instant>>,
        replicas: usize,
    ) -> Result<Arc<Meta>, String> {
        let kv = bucket::open(&client, prefix, replicas).await?;
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
            pending: std::sync::atomic::AtomicUsize::new(0),
            realms: parking_lot::Mutex::default(),
        }))
    }

    pub(super) fn connected(&self) -> bool {
        matches!(
            self.client.connection_state(),
            async_nats::connection::State::Connected
        )
    }

    /// Connected for long enough that every live node's heartbeat has
    /// been heard since (a node that was cut off does not take the others
    /// for dead when it comes back).
    pub(super) fn settled(&self) -> bool {
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
                    taken: parking_lot::Mutex::default(),
                    notify: Notify::new(),
                })
            })
            .clone()
    }

    /// The delete marker of one of this process's records arrived: unless
    /// this node deleted it itself (a session that left, a subscription
    /// without client subscribers), another node took this one for dead
    /// and ended it: it is claimed and announced again.
    pub(super) fn own_record_deleted(&self, realm: &str, own: Own) {
        let Some(rm) = self.realms.lock().get(realm).cloned() else {
            return;
        };
        match own {
            Own::Session(id) => {
                if !rm.clients.lock().contains(&id) {
                    return;
                }
                rm.taken.lock().sessions.insert(id);
            }
            // Whether it still has client subscribers is decided there.
            Own::Subscription(id) => {
                rm.taken.lock().subscriptions.insert(id);
            }
        }
        rm.notify.notify_one();
    }

    /// How long the NATS connection has been up (zero while it is down).
    pub(super) fn up_for(&self) -> Duration {
        if self.connected() {
            self.up_since.lock().elapsed()
        } else {
            Duration::ZERO
        }
    }

    /// When the NATS connection last came up.
    pub(super) fn up_since(&self) -> Instant {
        *self.up_since.lock()
    }

    /// Waits until the queued record writes are done (at most `limit`).
    pub async fn drain(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.pending.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub(super) fn write(&self, w: Write) {
        self.pending.fetch_add(1, Ordering::Relaxed);
        if self.writes.try_send(w).is_err() {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            tracing::warn!("cluster: the queue of session record writes is full: a write was dropped (the next repair round mends it)");
        }
    }

    /// Queues a meta event for the other nodes.
    pub(super) fn forward(&self, events: &str, publication: u64, topic: &str, payload: &Payload) {
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
        if !(self.outbound)(events.to_string(), body) {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    dropped = n,
                    "cluster: the queue to NATS is full; meta events reached only this node"
                );
            }
        }
    }
}

/// A realm's part: what its backplane asks and is told.
pub struct RealmMeta {
    pub(super) meta: Arc<Meta>,
    pub(super) realm: String,
    /// `<prefix>.<realm>.meta.<node>`: where this node's meta events go.
    pub(super) events: String,
    /// This node's client sessions in the realm (from their `on_join` to
    /// their leave): whose subscription meta events are the cluster's
    /// business (router-owned sessions' are not).
    pub(super) clients: parking_lot::Mutex<HashSet<u64>>,
    /// Subscriptions whose record must be written again.
    pub(super) dirty: parking_lot::Mutex<HashSet<u64>>,
    /// This node's sessions and subscriptions whose records another node
    /// took (it took this node for dead: a partition, a stall) although
    /// they still run here: claimed and announced again (`returned`).
    pub(super) taken: parking_lot::Mutex<Taken>,
    pub(super) notify: Notify,
}

/// Records of this node another node took, to claim and announce again.
#[derive(Debug, Default)]
pub(super) struct Taken {
    pub sessions: HashSet<u64>,
    pub subscriptions: HashSet<u64>,
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
    pub(super) fn record(&self, session: &Session) -> SessionRecord {
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

    pub fn kill_remote(&self, order: KillOrder) -> Option<KillWait> {
        super::kill::ask(self, order)
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

pub(super) fn first_arg(payload: &Payload) -> Option<Value> {
    args(payload).into_iter().next()
}
