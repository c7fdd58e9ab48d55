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
pub mod record;
pub mod view;

mod kill;
mod reaper;
mod returned;
mod state;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use switchyard_proto::{Dict, Message, Serializer, Value};
use switchyard_router::{Realm, Router};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::cluster::subject;
use record::SubscriptionRecord;
use state::{first_arg, Write, KV_WAIT, REPAIR_BEATS};
pub use state::{Forward, Meta, RealmMeta, CLAIM_WAIT};

/// Starts the writer, the bucket watch, each realm's meta event reader and
/// subscription recorder, and the reaper (fed with the nodes the
/// directory loses by `lost`).
pub async fn start(
    meta: &Arc<Meta>,
    router: &Router,
    lost: mpsc::UnboundedReceiver<(String, bool)>,
) -> Result<Vec<JoinHandle<()>>, String> {
    let Some(rx) = meta.writes_rx.lock().take() else {
        return Err("cluster: sessions started twice".into());
    };
    let mut tasks = vec![
        tokio::spawn(write_all(meta.clone(), rx)),
        tokio::spawn(watch(meta.clone())),
    ];
    let mut realms = HashMap::new();
    for realm in router.realms() {
        let rm = meta.realm(realm.name());
        let subject = subject::realm_rpc(&meta.prefix, realm.name(), "meta", "*");
        let sub = meta
            .client
            .subscribe(subject.clone())
            .await
            .map_err(|e| format!("cluster: cannot subscribe to {subject}: {e}"))?;
        tasks.push(tokio::spawn(receive_events(
            meta.clone(),
            realm.clone(),
            sub,
        )));
        let subject = subject::realm_rpc(&meta.prefix, realm.name(), "kill", &meta.node);
        let sub = meta
            .client
            .subscribe(subject.clone())
            .await
            .map_err(|e| format!("cluster: cannot subscribe to {subject}: {e}"))?;
        tasks.push(tokio::spawn(kill::serve(realm.clone(), rm.clone(), sub)));
        tasks.push(tokio::spawn(record_subscriptions(
            realm.clone(),
            rm.clone(),
        )));
        realms.insert(realm.name().to_string(), (realm.clone(), rm));
    }
    let _ = meta.client.flush().await;
    tasks.push(tokio::spawn(reaper::run(
        meta.clone(),
        Arc::new(realms),
        lost,
    )));
    Ok(tasks)
}

/// Applies a change of the bucket to the view.
fn apply(meta: &Meta, entry: kv::Entry) {
    match entry.operation {
        kv::Operation::Put => match record::decode(&entry.value) {
            Ok(r) => meta.view.write().put(r, Instant::now()),
            Err(e) => tracing::debug!(key = %entry.key, "cluster: undecodable session record: {e}"),
        },
        kv::Operation::Delete | kv::Operation::Purge => {
            let own = meta
                .view
                .read()
                .own_record(&meta.node, meta.epoch, &entry.key);
            meta.view.write().tombstone(&entry.key, Instant::now());
            if let Some((realm, own)) = own {
                meta.own_record_deleted(&realm, own);
            }
        }
    }
}

/// Writes the records, in order.
async fn write_all(meta: Arc<Meta>, mut rx: mpsc::Receiver<Write>) {
    let kv = meta.kv.clone();
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
        meta.pending
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Keeps the view equal to the bucket (watching again after an error).
async fn watch(meta: Arc<Meta>) {
    loop {
        match meta.kv.watch_with_history(">").await {
            Ok(mut changes) => {
                while let Some(change) = changes.next().await {
                    match change {
                        Ok(entry) => apply(&meta, entry),
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
                    if realm.session(id).is_some() {
                        // A session of this node another node took for
                        // dead (this node was stalled): it still runs
                        // here, and is claimed again (`returned`).
                        continue;
                    }
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

/// How long (in heartbeats) a node that reconnected waits before it
/// claims again what the others took while it was away.
const RETURN_BEATS: u32 = 2;

/// Writes the records of this node's subscriptions that changed (those
/// with client subscribers), and every repair round those the bucket
/// lost.
async fn record_subscriptions(realm: Arc<Realm>, rm: Arc<RealmMeta>) {
    let meta = rm.meta.clone();
    let mut written: HashMap<u64, SubscriptionRecord> = HashMap::new();
    let mut repair = tokio::time::interval(meta.heartbeat * REPAIR_BEATS);
    repair.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beat = tokio::time::interval(meta.heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A reconnection: this node's records are read from the bucket (the
    // others may have taken them), once it has been back for RETURN_BEATS.
    let mut seen_up = meta.up_since();
    let mut check_due = false;
    loop {
        tokio::select! {
            _ = rm.notify.notified() => {}
            _ = beat.tick() => {}
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
        let up = meta.up_since();
        if up != seen_up && meta.connected() {
            seen_up = up;
            check_due = true;
        }
        // Back for long enough that the others have heard this node's
        // heartbeat again (their reapers leave its new records alone).
        if meta.up_for() >= meta.heartbeat * RETURN_BEATS {
            if check_due {
                check_due = false;
                returned::check(&realm, &rm, &written).await;
            }
            returned::reclaim(&realm, &rm, &mut written).await;
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
    // Those the others took are claimed again (and announced) elsewhere.
    let taken: HashSet<u64> = rm.taken.lock().sessions.clone();
    for s in realm.sessions() {
        if clients.contains(&s.id) && !present.contains(&s.id) && !taken.contains(&s.id) {
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
