//! A node the others took for dead while it still ran (cut off from NATS
//! alone, or stalled for more than three heartbeats) and that is back.
//!
//! The others ended its sessions and subscriptions: a survivor took their
//! records from the bucket and published their testaments, `on_leave`,
//! `on_unsubscribe` and `on_delete` (a partition is a death, for them).
//! Once this node has been connected again for two heartbeats (the others
//! have heard its heartbeat, so no reaper takes its records again), it
//! claims each of its sessions again (KV `create` of its record, as at
//! the first join) and announces it to the other nodes with
//! `wamp.session.on_join`, then writes its subscriptions' records again
//! and announces each with `wamp.subscription.on_create` and one
//! `on_subscribe` per client subscriber. Its registrations come back
//! through the directory (its heartbeat makes the others take its
//! snapshot; their `wamp.registration.on_create`/`on_register` fire
//! there). This node's own meta subscribers are told nothing: for them no
//! session left.
//!
//! What was taken is known two ways: the delete marker of one of its own
//! records arriving on its watch (a delete it did not make), and, after
//! each reconnection, a read of its records in the bucket (a marker
//! purged before the watch got to it).

use std::collections::HashMap;

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use switchyard_proto::{Payload, Value};
use switchyard_router::Realm;

use super::record::{self, Record, SubscriptionRecord};
use super::state::{RealmMeta, KV_WAIT};

/// Reads at once when checking the bucket after a reconnection.
const PARALLEL: usize = 32;

/// After a reconnection: notes this node's sessions and subscriptions
/// whose records are no longer in the bucket.
pub(super) async fn check(
    realm: &Realm,
    rm: &RealmMeta,
    written: &HashMap<u64, SubscriptionRecord>,
) {
    let meta = &rm.meta;
    let sessions: Vec<u64> = {
        let clients = rm.clients.lock();
        realm
            .sessions()
            .iter()
            .map(|s| s.id)
            .filter(|id| clients.contains(id))
            .collect()
    };
    let keys: Vec<(String, bool, u64)> = sessions
        .into_iter()
        .map(|id| (record::session_key(id), true, id))
        .chain(
            written
                .keys()
                .map(|id| (record::subscription_key(&meta.node, *id), false, *id)),
        )
        .collect();
    let kv = meta.kv.clone();
    let missing: Vec<(bool, u64)> = futures_util::stream::iter(keys)
        .map(move |(key, session, id)| {
            let kv = kv.clone();
            async move {
                match tokio::time::timeout(KV_WAIT, kv.entry(key)).await {
                    Ok(Ok(Some(e))) if e.operation == kv::Operation::Put => None,
                    Ok(Ok(_)) => Some((session, id)),
                    // Cannot tell: the next reconnection or marker tells.
                    _ => None,
                }
            }
        })
        .buffer_unordered(PARALLEL)
        .filter_map(std::future::ready)
        .collect()
        .await;
    if missing.is_empty() {
        return;
    }
    let mut taken = rm.taken.lock();
    for (session, id) in missing {
        if session {
            taken.sessions.insert(id);
        } else {
            taken.subscriptions.insert(id);
        }
    }
}

/// Claims and announces again what the others took (see the module's
/// documentation). A claim NATS did not answer is tried again at the next
/// heartbeat.
pub(super) async fn reclaim(
    realm: &Realm,
    rm: &RealmMeta,
    written: &mut HashMap<u64, SubscriptionRecord>,
) {
    let meta = &rm.meta;
    let sessions: Vec<u64> = rm.taken.lock().sessions.drain().collect();
    for id in sessions {
        let Some(session) = realm.session(id) else {
            continue;
        };
        if !rm.clients.lock().contains(&id) {
            continue;
        }
        let record = rm.record(&session);
        let body = match record.encode() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("cluster: {e}");
                continue;
            }
        };
        let key = record::session_key(id);
        match tokio::time::timeout(KV_WAIT, meta.kv.create(&key, body)).await {
            Ok(Ok(_)) => {
                let payload = Payload::values(vec![Value::Dict(record.details)], None);
                meta.forward(
                    &rm.events,
                    switchyard_proto::id::random_id(),
                    "wamp.session.on_join",
                    &payload,
                );
                tracing::info!(
                    session = id,
                    "cluster: session claimed and announced again (the other nodes had taken this node for dead)"
                );
            }
            Ok(Err(e)) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                // Written again meanwhile by this node (nothing to
                // announce), or, with NATS away at its join, the id of a
                // session of another node.
                let holder = match tokio::time::timeout(KV_WAIT, meta.kv.get(&key)).await {
                    Ok(Ok(Some(v))) => match record::decode(&v) {
                        Ok(Record::Session(s)) => s.node,
                        _ => String::new(),
                    },
                    _ => String::new(),
                };
                if holder != *meta.node {
                    tracing::warn!(
                        session = id,
                        holder = %holder,
                        "cluster: session id held by another node's session: this session stays unclaimed"
                    );
                }
            }
            _ => {
                rm.taken.lock().sessions.insert(id);
            }
        }
    }
    let subscriptions: Vec<u64> = rm.taken.lock().subscriptions.drain().collect();
    for id in subscriptions {
        let Some(info) = realm.broker.subscription(id) else {
            continue;
        };
        let subscribers: Vec<u64> = {
            let clients = rm.clients.lock();
            info.subscribers
                .iter()
                .copied()
                .filter(|s| clients.contains(s))
                .collect()
        };
        let Some(first) = subscribers.first() else {
            // Deleted by this node itself (no client subscriber left).
            continue;
        };
        // Written again by the recorder, in its order.
        written.remove(&id);
        rm.dirty.lock().insert(id);
        let details = switchyard_router::broker::subscription_details(&info);
        let announce = |topic: &str, args: Vec<Value>| {
            meta.forward(
                &rm.events,
                switchyard_proto::id::random_id(),
                topic,
                &Payload::values(args, None),
            );
        };
        announce(
            "wamp.subscription.on_create",
            vec![Value::UInt(*first), Value::Dict(details)],
        );
        for s in &subscribers {
            announce(
                "wamp.subscription.on_subscribe",
                vec![Value::UInt(*s), Value::UInt(id)],
            );
        }
        tracing::info!(
            subscription = id,
            uri = %info.uri,
            "cluster: subscription announced again (the other nodes had taken this node for dead)"
        );
    }
}
