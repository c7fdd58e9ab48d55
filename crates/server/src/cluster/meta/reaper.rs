//! Ends what a dead node left in the sessions bucket: for each of its
//! sessions the testaments (as that session) and `wamp.session.on_leave`,
//! for each of its subscriptions `wamp.subscription.on_unsubscribe` per
//! subscriber and `on_delete`, published by one survivor.
//!
//! Who: when the directory loses a node (silent for three heartbeats, a
//! new epoch, or `bye`), the lowest-named live node reaps at once and
//! every other survivor two heartbeats later (in case the first could
//! not); every [`REPAIR_BEATS`](super::state::REPAIR_BEATS) heartbeats the lowest
//! live node also sweeps records of any process that is not alive (a node
//! that died while no other was running, a reaper that died midway).
//! Exactly once: a record is taken by a compare-and-delete on the revision
//! just read, and only the node whose delete succeeded publishes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use switchyard_proto::{Payload, Serializer, Value};
use switchyard_router::features::ClientFeatures;
use switchyard_router::session::Identity;
use switchyard_router::{Peer, Realm, Session, SlowConsumerPolicy};
use tokio::sync::mpsc;

use super::record::{self, Record, SessionRecord, SubscriptionRecord};
use super::state::{Meta, RealmMeta, KV_WAIT, REPAIR_BEATS};
use super::view::{alive, Candidate};

/// The realms by name, each with its part.
pub type Realms = Arc<HashMap<String, (Arc<Realm>, Arc<RealmMeta>)>>;

/// Records reaped at once.
const PARALLEL: usize = 32;

/// Reaps the nodes the directory loses (`lost`) and sweeps periodically.
pub async fn run(
    meta: Arc<Meta>,
    realms: Realms,
    mut lost: mpsc::UnboundedReceiver<(String, bool)>,
) {
    let mut sweep = tokio::time::interval(meta.heartbeat * REPAIR_BEATS);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    sweep.tick().await;
    loop {
        tokio::select! {
            node = lost.recv() => {
                let Some((node, died)) = node else { break };
                // A node that said bye closes its sessions itself (their
                // on_leave, testaments and records): what is left after
                // two heartbeats is ended here.
                let delay = if died && first(&meta, Some(&node)) {
                    Duration::ZERO
                } else {
                    meta.heartbeat * 2
                };
                let (meta, realms) = (meta.clone(), realms.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    reap(&meta, &realms, Some(&node), Duration::ZERO).await;
                });
            }
            _ = sweep.tick() => {
                let old = meta
                    .view
                    .write()
                    .old_tombstones(meta.heartbeat * TOMBSTONE_BEATS, Instant::now());
                if first(&meta, None) && meta.settled() {
                    // Settled: a new node's records may come before its
                    // first heartbeat.
                    reap(&meta, &realms, None, meta.heartbeat * 4).await;
                    purge(&meta, old).await;
                }
            }
        }
    }
}

/// How long (in heartbeats) a delete marker stays in the bucket: every
/// node's watch has delivered it long before (a marker purged before a
/// lagging watch got to it would leave that node a stale record).
const TOMBSTONE_BEATS: u32 = 30;

/// Purges the delete markers `keys` from the bucket's stream (each key
/// used once leaves one otherwise: the bucket would grow with every
/// session ever joined).
async fn purge(meta: &Meta, keys: Vec<String>) {
    let n = keys.len();
    for key in keys {
        let subject = format!("{}{key}", meta.kv.prefix);
        let purged = tokio::time::timeout(KV_WAIT, async {
            // Only the marker (and what came before it): a record put
            // again meanwhile stays.
            match meta.kv.entry(key.clone()).await {
                Ok(Some(e)) if e.operation != async_nats::jetstream::kv::Operation::Put => meta
                    .kv
                    .stream
                    .purge()
                    .filter(subject)
                    .sequence(e.revision + 1)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string()),
                Ok(_) => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
        if !matches!(purged, Ok(Ok(_))) {
            tracing::debug!(key, "cluster: a delete marker was not purged");
        }
    }
    if n > 0 {
        tracing::debug!(markers = n, "cluster: delete markers purged");
    }
}

/// Whether this node has the lowest name of the live nodes (`dead` not
/// counted).
fn first(meta: &Meta, dead: Option<&str>) -> bool {
    let live = meta.live.read();
    live.keys()
        .filter(|n| Some(n.as_str()) != dead)
        .all(|n| **n > *meta.node)
}

/// Reaps the records of processes that are not alive (`node`'s only,
/// when given) seen at least `settle` ago.
async fn reap(meta: &Arc<Meta>, realms: &Realms, node: Option<&str>, settle: Duration) {
    if !meta.settled() {
        // Just back from a NATS outage: the others' heartbeats may not
        // have come yet. The sweep takes what is still dead later.
        return;
    }
    let candidates = {
        let live = meta.live.read().clone();
        meta.view
            .read()
            .dead(&meta.node, meta.epoch, &live, node, settle, Instant::now())
    };
    if candidates.is_empty() {
        return;
    }
    let started = Instant::now();
    let reaped: usize = futures_util::stream::iter(candidates)
        .map(|c| reap_one(meta, realms, c))
        .buffer_unordered(PARALLEL)
        .filter(|done| std::future::ready(*done))
        .count()
        .await;
    if reaped > 0 {
        tracing::info!(
            node = node.unwrap_or("(sweep)"),
            records = reaped,
            took = ?started.elapsed(),
            "cluster: ended the sessions and subscriptions of a lost node"
        );
    }
}

/// Takes one record if its process is still not alive: true if this
/// node took it (and published what it ends).
async fn reap_one(meta: &Arc<Meta>, realms: &Realms, c: Candidate) -> bool {
    let key = match &c {
        Candidate::Session(id) => record::session_key(*id),
        Candidate::Subscription(node, id) => record::subscription_key(node, *id),
    };
    let entry = match tokio::time::timeout(KV_WAIT, meta.kv.entry(key.clone())).await {
        Ok(Ok(Some(e))) if e.operation == async_nats::jetstream::kv::Operation::Put => e,
        Ok(Ok(_)) => {
            // Deleted meanwhile (by its node, or another reaper).
            meta.view.write().delete(&key);
            return false;
        }
        Ok(Err(e)) => {
            tracing::debug!(key, "cluster: cannot read a record to reap: {e}");
            return false;
        }
        Err(_) => return false,
    };
    let record = match record::decode(&entry.value) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(key, "cluster: undecodable record: {e}");
            return false;
        }
    };
    let (node, epoch) = match &record {
        Record::Session(s) => (s.node.clone(), s.epoch),
        Record::Subscription(u) => (u.node.clone(), u.epoch),
    };
    let mine = node == *meta.node && (epoch == meta.epoch || epoch == 0);
    if mine || alive(&meta.live.read(), &node, epoch) {
        return false;
    }
    let deleted = tokio::time::timeout(
        KV_WAIT,
        meta.kv.delete_expect_revision(&key, Some(entry.revision)),
    )
    .await;
    if !matches!(deleted, Ok(Ok(()))) {
        // Another survivor took it first (or NATS failed: the sweep
        // tries again).
        return false;
    }
    meta.view.write().delete(&key);
    match record {
        Record::Session(s) => {
            if let Some((realm, _)) = realms.get(&s.realm) {
                end_session(realm, &s);
            }
        }
        Record::Subscription(u) => {
            if let Some((realm, rm)) = realms.get(&u.realm) {
                end_subscription(realm, rm, &u);
            }
        }
    }
    true
}

/// Publishes a dead node's session's testaments (as that session) and its
/// `on_leave` (which goes to the other nodes too).
fn end_session(realm: &Realm, s: &SessionRecord) {
    let (peer, _rx) = Peer::new(
        Serializer::MsgPack,
        1,
        SlowConsumerPolicy::Disconnect,
        1 << 16,
        format!("session {} of a lost node {}", s.id, s.node),
    );
    let text = |k: &str| s.details.get_str(k).unwrap_or_default().to_string();
    let identity = Identity {
        authid: s.authid.clone(),
        authrole: s.authrole.clone(),
        authmethod: text("authmethod"),
        authprovider: text("authprovider"),
    };
    let publisher = Session::new(s.id, identity, ClientFeatures::default(), peer);
    for t in &s.testaments {
        if let Err((uri, message)) = realm
            .broker
            .publish(&publisher, &t.topic, &t.options, &t.payload)
        {
            tracing::info!(session = s.id, topic = %t.topic, "testament not published: {uri}: {message}");
        }
    }
    realm.broker.publish_from_router(
        "wamp.session.on_leave",
        &Payload::values(
            vec![
                Value::UInt(s.id),
                Value::Str(s.authid.clone()),
                Value::Str(s.authrole.clone()),
            ],
            None,
        ),
    );
    tracing::info!(
        session = s.id,
        node = %s.node,
        testaments = s.testaments.len(),
        "cluster: session of a lost node ended"
    );
}

/// Publishes a dead node's subscription's `on_unsubscribe` (per
/// subscriber) and `on_delete`, here and on the other nodes.
fn end_subscription(realm: &Realm, rm: &RealmMeta, u: &SubscriptionRecord) {
    let announce = |topic: &str, session: u64| {
        let payload = Payload::values(vec![Value::UInt(session), Value::UInt(u.id)], None);
        let publication = realm.broker.publish_from_router(topic, &payload);
        rm.meta.forward(&rm.events, publication, topic, &payload);
    };
    for s in &u.subscribers {
        announce("wamp.subscription.on_unsubscribe", *s);
    }
    if let Some(last) = u.subscribers.last() {
        announce("wamp.subscription.on_delete", *last);
    }
}
