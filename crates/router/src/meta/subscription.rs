//! Subscription meta procedures (spec "Subscription Meta API") and
//! `wamp.subscription.get_events` (spec "Event History").

use std::sync::Arc;

use switchyard_proto::{errors, Value};

use super::args::{by_policy, id_list, match_option, Args, MetaResult};
use crate::authz::cache_key;
use crate::authz::{Action, Decision};
use crate::backplane::RemoteSubscription;
use crate::broker::{subscription_details, SubscriptionInfo};
use crate::realm::Realm;
use crate::session::{OpError, Session};
use crate::uri_index::MatchPolicy;

fn no_such(id: u64) -> OpError {
    (
        errors::NO_SUCH_SUBSCRIPTION,
        format!("no subscription {id} in this realm"),
    )
}

/// The other nodes' subscriptions (none on a single node). Each keeps the
/// id its node gave it: a subscription to the same topic on two nodes has
/// two ids, and `get`/`list_subscribers` of an id answer for its node.
fn remote(realm: &Realm) -> Vec<RemoteSubscription> {
    realm
        .backplane()
        .map(|b| b.remote_subscriptions())
        .unwrap_or_default()
}

/// Subscription `id`, of this node or another.
fn info(realm: &Realm, id: u64) -> Result<SubscriptionInfo, OpError> {
    if let Some(info) = realm.broker.subscription(id) {
        return Ok(info);
    }
    remote(realm)
        .into_iter()
        .find(|r| r.id == id)
        .map(|r| SubscriptionInfo {
            id: r.id,
            uri: r.uri,
            policy: r.policy,
            created: r.created,
            subscribers: r.subscribers,
        })
        .ok_or_else(|| no_such(id))
}

pub(super) fn list(realm: &Arc<Realm>, _: &Arc<Session>, _: &Args) -> MetaResult {
    let mut lists = realm.broker.list();
    for r in remote(realm) {
        let i = match r.policy {
            MatchPolicy::Exact => 0,
            MatchPolicy::Prefix => 1,
            MatchPolicy::Wildcard => 2,
        };
        lists[i].push(r.id);
    }
    Ok((vec![by_policy(lists)], None))
}

/// This node's subscription to (`topic`, `policy`) if it has one, else
/// another node's (the one with the lowest id, so every node that lacks
/// it answers alike).
pub(super) fn lookup(realm: &Arc<Realm>, _: &Arc<Session>, args: &Args) -> MetaResult {
    let topic = args.str(0, "topic")?;
    let policy = match_option(args, 1)?;
    let found = realm.broker.lookup(topic, policy).or_else(|| {
        remote(realm)
            .iter()
            .filter(|r| r.uri == topic && r.policy == policy)
            .map(|r| r.id)
            .min()
    });
    Ok((vec![found.map(Value::UInt).unwrap_or(Value::Null)], None))
}

pub(super) fn matching(realm: &Arc<Realm>, _: &Arc<Session>, args: &Args) -> MetaResult {
    let topic = args.str(0, "topic")?;
    let mut found = realm.broker.matching(topic);
    found.extend(
        remote(realm)
            .iter()
            .filter(|r| r.policy.matches(&r.uri, topic))
            .map(|r| r.id),
    );
    let result = if found.is_empty() {
        Value::Null
    } else {
        id_list(found)
    };
    Ok((vec![result], None))
}

pub(super) fn get(realm: &Arc<Realm>, _: &Arc<Session>, args: &Args) -> MetaResult {
    let id = args.id(0, "subscription")?;
    let info = info(realm, id)?;
    Ok((vec![Value::Dict(subscription_details(&info))], None))
}

pub(super) fn list_subscribers(realm: &Arc<Realm>, _: &Arc<Session>, args: &Args) -> MetaResult {
    let id = args.id(0, "subscription")?;
    let info = info(realm, id)?;
    Ok((vec![id_list(info.subscribers)], None))
}

pub(super) fn count_subscribers(realm: &Arc<Realm>, _: &Arc<Session>, args: &Args) -> MetaResult {
    let id = args.id(0, "subscription")?;
    let info = info(realm, id)?;
    Ok((vec![Value::UInt(info.subscribers.len() as u64)], None))
}

/// The events of a subscription's history that the caller may read: all
/// of them if it is subscribed to it or may subscribe to its pattern,
/// otherwise those whose topic it may subscribe to. A session decided by the
/// authorizer procedure counts only the answers it cached (the procedure is
/// not called once per event).
pub(super) fn get_events(realm: &Arc<Realm>, caller: &Arc<Session>, args: &Args) -> MetaResult {
    let id = args.id(0, "subscription")?;
    let may_subscribe = |uri: &str, policy: MatchPolicy| match realm.authz().decide_pattern(
        caller,
        Action::Subscribe,
        uri,
        policy,
    ) {
        Decision::Allow { .. } => true,
        Decision::Deny => false,
        Decision::Ask => matches!(
            caller.cached_decision(Action::Subscribe, &cache_key(uri, policy)),
            Some(Decision::Allow { .. })
        ),
    };
    let events = realm
        .broker
        .get_events(id, &args.kwargs, caller, may_subscribe)?;
    Ok((vec![Value::List(events)], None))
}
