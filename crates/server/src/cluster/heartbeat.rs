//! The tasks that keep every node's view of the others' registrations and
//! liveness: the announcer of this node's registrations, the heartbeat,
//! the snapshot responder and the directory reader (which also declares
//! silent nodes dead). The messages and the bookkeeping are in
//! `directory.rs`; what an entry becomes here is in `proxy.rs`.
//!
//! Failure times: a node that stops cleanly says `Bye` and the others
//! forget it at once; a node that dies (SIGKILL, a lost machine or network)
//! is declared dead by each other node once it has been silent for three
//! heartbeats, checked every quarter heartbeat: within 3.25 heartbeats of
//! its last message (3.25 s with the default `heartbeat = "1s"`). A new
//! node (or a restarted one) is known to the others within one heartbeat
//! and one snapshot round trip.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use switchyard_router::dealer::RegistrationEvent;
use switchyard_router::Realm;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::directory::{Announcement, Entry, LocalDirectory, RemoteView, Snapshot, Step};
use super::proxy::{ms_since_epoch, Proxies};
use super::relay::Relay;
use super::{Outbound, OutboundItem};

/// How many heartbeats a node may miss before it is dead.
pub const MISSED_BEATS: u32 = 3;

/// Registration changes of a realm's Dealer, as its backplane saw them.
pub type Changes = mpsc::UnboundedReceiver<(Arc<str>, Vec<RegistrationEvent>)>;

/// What the directory tasks share.
pub struct Membership {
    pub client: async_nats::Client,
    pub node: Arc<str>,
    pub prefix: String,
    pub heartbeat: Duration,
    pub local: Arc<parking_lot::Mutex<LocalDirectory>>,
    /// The control queue (directory messages and answers), in order.
    pub control: Outbound,
    /// The nodes alive now, with their epochs (kept here for the sessions'
    /// reaper, `meta`).
    pub live: Arc<parking_lot::RwLock<HashMap<String, u64>>>,
    /// Told each node lost, after `live` changed: (node, true when it
    /// died or restarted; false when it said `bye` and is still closing
    /// its sessions itself).
    pub lost: mpsc::UnboundedSender<(String, bool)>,
    /// How many times this node's NATS connection came up (the first
    /// time included).
    pub connections: Arc<AtomicU64>,
}

impl Membership {
    /// How many times this node's NATS connection came back.
    fn reconnections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed).saturating_sub(1)
    }
}

/// A realm's cross-node RPC parts.
#[derive(Clone)]
pub struct RealmRpc {
    pub realm: Arc<Realm>,
    pub proxies: Arc<Proxies>,
    pub relay: Arc<Relay>,
}

impl Membership {
    fn dir_subject(&self) -> String {
        format!("{}.dir.{}", self.prefix, self.node)
    }

    /// Queues an announcement (called with the local directory locked, so
    /// the queue keeps the order of `gen`).
    fn announce(&self, a: &Announcement) {
        let mut a = a.clone();
        if let Announcement::Change { conn, .. } | Announcement::Beat { conn, .. } = &mut a {
            *conn = self.reconnections();
        }
        let body = match serde_json::to_vec(&a) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("cluster: cannot encode an announcement: {e}");
                return;
            }
        };
        let item = OutboundItem {
            subject: self.dir_subject(),
            headers: None,
            body: body.into(),
        };
        if self.control.try_send(item).is_err() {
            // The others see the gap at the next heartbeat and ask for a
            // snapshot.
            tracing::warn!(
                "cluster: the control queue to NATS is full: an announcement was dropped"
            );
        }
    }

    /// Says goodbye (the last announcement) and waits, briefly, until the
    /// control queue has gone out.
    pub async fn leave(&self) {
        {
            let mut local = self.local.lock();
            let bye = local.bye();
            self.announce(&bye);
        }
        let deadline = Instant::now() + Duration::from_millis(500);
        while self.control.capacity() < self.control.max_capacity() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), self.client.flush()).await;
    }
}

/// The entry that announces callee `session` of `registration`, if it is a
/// client session of this node (not a proxy, not a router-owned session).
fn local_entry(realm: &Realm, session: u64, registration: u64) -> Option<Entry> {
    let s = realm.session(session)?;
    let opts = realm.dealer.callee_options(registration, session)?;
    let info = realm.dealer.registration(registration)?;
    Some(Entry {
        realm: realm.name().to_string(),
        registration,
        session,
        uri: info.uri,
        policy: opts.policy.as_str().to_string(),
        invoke: opts.invoke.as_str().to_string(),
        created_ms: ms_since_epoch(info.created),
        authid: s.authid.clone(),
        authrole: s.authrole.clone(),
        authmethod: s.authmethod.clone(),
        authprovider: s.authprovider.clone(),
        call_canceling: s.features.callee_call_canceling,
        progressive_call_invocations: s.features.callee_progressive_call_invocations,
        concurrency: opts.concurrency,
        forward_timeout: opts.forward_timeout,
        disclose_caller: opts.disclose_caller,
    })
}

/// Subscribes what the directory needs, then starts its tasks.
pub async fn start(
    m: Arc<Membership>,
    realms: Arc<HashMap<String, RealmRpc>>,
    changes: Changes,
) -> Result<Vec<JoinHandle<()>>, String> {
    let dir = m
        .client
        .subscribe(format!("{}.dir.*", m.prefix))
        .await
        .map_err(|e| format!("cluster: cannot subscribe to the directory: {e}"))?;
    let snap = m
        .client
        .subscribe(format!("{}.snap.{}", m.prefix, m.node))
        .await
        .map_err(|e| format!("cluster: cannot subscribe to snapshot requests: {e}"))?;
    let _ = m.client.flush().await;
    Ok(vec![
        tokio::spawn(announce_changes(m.clone(), realms.clone(), changes)),
        tokio::spawn(beat(m.clone())),
        tokio::spawn(answer_snapshots(m.clone(), snap)),
        tokio::spawn(read_directory(m, realms, dir)),
    ])
}

/// Turns the Dealers' registration changes into announcements.
async fn announce_changes(
    m: Arc<Membership>,
    realms: Arc<HashMap<String, RealmRpc>>,
    mut changes: Changes,
) {
    while let Some((name, events)) = changes.recv().await {
        let Some(r) = realms.get(&*name) else {
            continue;
        };
        for e in events {
            match e {
                RegistrationEvent::Registered {
                    session,
                    registration,
                } => {
                    let Some(entry) = local_entry(&r.realm, session, registration) else {
                        continue;
                    };
                    let mut local = m.local.lock();
                    if let Some(a) = local.add(entry) {
                        m.announce(&a);
                    }
                }
                RegistrationEvent::Unregistered {
                    session,
                    registration,
                } => {
                    let key = (name.to_string(), registration, session);
                    let mut local = m.local.lock();
                    if let Some(a) = local.remove(&key) {
                        m.announce(&a);
                    }
                }
                _ => {}
            }
        }
    }
}

async fn beat(m: Arc<Membership>) {
    let mut every = tokio::time::interval(m.heartbeat);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let local = m.local.lock();
        if let Some(b) = local.beat() {
            m.announce(&b);
        }
    }
}

async fn answer_snapshots(m: Arc<Membership>, mut requests: async_nats::Subscriber) {
    while let Some(req) = requests.next().await {
        let Some(reply) = req.reply else {
            continue;
        };
        let snapshot = m.local.lock().snapshot();
        match serde_json::to_vec(&snapshot) {
            Ok(body) => {
                if let Err(e) = m.client.publish(reply, body.into()).await {
                    tracing::warn!("cluster: cannot answer a snapshot request: {e}");
                }
            }
            Err(e) => tracing::warn!("cluster: cannot encode the snapshot: {e}"),
        }
    }
}

/// Asks `node` for its snapshot.
async fn fetch_snapshot(
    client: async_nats::Client,
    subject: String,
    timeout: Duration,
) -> Result<Snapshot, String> {
    let reply = tokio::time::timeout(timeout, client.request(subject, bytes::Bytes::new()))
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&reply.payload).map_err(|e| e.to_string())
}

/// Follows the other nodes: applies their changes to this node's proxies,
/// reconciles snapshots, and declares silent nodes dead.
async fn read_directory(
    m: Arc<Membership>,
    realms: Arc<HashMap<String, RealmRpc>>,
    mut dir: async_nats::Subscriber,
) {
    let mut view = RemoteView::default();
    let (snap_tx, mut snap_rx) = mpsc::channel::<(String, Result<Snapshot, String>)>(64);
    let mut tick = tokio::time::interval(m.heartbeat / 4);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let silence = m.heartbeat * MISSED_BEATS;
    let mut own_reconnections = m.reconnections();
    let add = |node: &Arc<str>, e: Entry| {
        if let Some(r) = realms.get(&e.realm) {
            r.proxies.add(node, e);
        }
    };
    let remove = |node: &Arc<str>, e: &Entry| {
        if let Some(r) = realms.get(&e.realm) {
            r.proxies.remove(node, e);
        }
    };
    let lose = |view: &RemoteView, node: &str, reason: &str, died: bool| {
        *m.live.write() = view.live();
        for r in realms.values() {
            r.proxies.lose_node(node, reason);
            r.relay.lose_node(&r.realm, node);
        }
        let _ = m.lost.send((node.to_string(), died));
    };
    loop {
        tokio::select! {
            msg = dir.next() => {
                let Some(msg) = msg else { break };
                let a: Announcement = match serde_json::from_slice(&msg.payload) {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(subject = %msg.subject, "cluster: undecodable announcement dropped: {e}");
                        continue;
                    }
                };
                let node: Arc<str> = match &a {
                    Announcement::Change { node, .. }
                    | Announcement::Beat { node, .. }
                    | Announcement::Bye { node, .. } => Arc::from(node.as_str()),
                };
                if node == m.node {
                    continue;
                }
                let conn = match &a {
                    Announcement::Change { conn, .. } | Announcement::Beat { conn, .. } => Some(*conn),
                    Announcement::Bye { .. } => None,
                };
                match view.receive(a, Instant::now()) {
                    Step::Apply { add: added, remove: removed } => {
                        for e in &removed {
                            remove(&node, e);
                        }
                        for e in added {
                            add(&node, e);
                        }
                    }
                    Step::Snapshot => {
                        let tx = snap_tx.clone();
                        let subject = format!("{}.snap.{node}", m.prefix);
                        let client = m.client.clone();
                        let timeout = m.heartbeat.max(Duration::from_millis(500));
                        let node = node.clone();
                        tokio::spawn(async move {
                            let r = fetch_snapshot(client, subject, timeout).await;
                            let _ = tx.send((node.to_string(), r)).await;
                        });
                    }
                    Step::Left(_) => {
                        tracing::info!(node = %node, "cluster: node left the cluster");
                        lose(&view, &node, &format!("node {node} left the cluster"), false);
                    }
                    Step::Nothing => {}
                }
                if conn.is_some_and(|c| view.reconnected(&node, c)) {
                    // What this node sent it, or it answered, while it was
                    // away may be lost: those calls end.
                    tracing::info!(node = %node, "cluster: node reconnected to NATS: its calls in flight end");
                    let reason = format!(
                        "node {node} reconnected to NATS (what was sent to or from it meanwhile may be lost)"
                    );
                    for r in realms.values() {
                        r.proxies.fail_calls(Some(&node), &reason);
                    }
                }
            }
            snap = snap_rx.recv() => {
                let Some((node, result)) = snap else { continue };
                match result {
                    Ok(s) if s.node == node => {
                        let node: Arc<str> = Arc::from(node.as_str());
                        let r = view.reconcile(s, Instant::now());
                        if r.restarted {
                            lose(&view, &node, &format!("node {node} restarted"), true);
                        } else {
                            for e in &r.removed {
                                remove(&node, e);
                            }
                        }
                        for e in r.added {
                            add(&node, e);
                        }
                    }
                    Ok(_) => view.snapshot_failed(&node),
                    Err(e) => {
                        tracing::debug!(node = %node, "cluster: no snapshot: {e}");
                        view.snapshot_failed(&node);
                    }
                }
            }
            _ = tick.tick() => {
                let now = m.reconnections();
                if now != own_reconnections {
                    own_reconnections = now;
                    // This node's own connection came back: what it sent
                    // to other nodes' callees, or they answered, while it
                    // was away may be lost.
                    let reason = format!(
                        "node {} reconnected to NATS (what was sent to or from it meanwhile may be lost)",
                        m.node
                    );
                    for r in realms.values() {
                        r.proxies.fail_calls(None, &reason);
                    }
                }
                for (node, _) in view.expire(Instant::now(), silence) {
                    tracing::warn!(node = %node, "cluster: node lost: no heartbeat for {silence:?}");
                    lose(&view, &node, &format!("node {node} was lost (no heartbeat for {silence:?})"), true);
                }
                *m.live.write() = view.live();
                for r in realms.values() {
                    r.proxies.tick();
                }
            }
        }
    }
}
