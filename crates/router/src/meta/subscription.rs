//! Subscription meta procedures (spec "Subscription Meta API") and
//! `wamp.subscription.get_events` (spec "Event History").

use std::sync::Arc;

use switchyard_proto::{errors, Value};

use super::args::{by_policy, id_list, match_option, Args, MetaResult};
use crate::authz::cache_key;
use crate::authz::{Action, Decision};
use crate::broker::subscription_details;
use crate::realm::Realm;
use crate::session::{OpError, Session};
use crate::uri_index::MatchPolicy;

fn no_such(id: u64) -> OpError {
    (
        errors::NO_SUCH_SUBSCRIPTION,
        format!("no subscription {id} in this realm"),
    )
}

pub(super) fn list(realm: &Arc<Realm>, _: &Arc<Session>, _: &Args) -> MetaResult {
    Ok((vec![by_policy(realm.broker.list())], None))
}

pub(super) fn lookup(realm: &Arc<Realm>, _: &Arc<Session>, args: &Args) -> MetaResult {
    let topic = args.str(0, "topic")?;
    let policy = match_option(args, 1)?;
    let found = realm.broker.lookup(topic, policy);
    Ok((vec![found.map(Value::UInt).unwrap_or(Value::Null)], None))
}

pub(super) fn matching(realm: &Arc<Realm>, _: &Arc<Session>, args: &Args) -> MetaResult {
    let topic = args.str(0, "topic")?;
    let found = realm.broker.matching(topic);
    let result = if found.is_empty() {
        Value::Null
    } else {
        id_list(found)
    };
    Ok((vec![result], None))
}

pub(super) fn get(realm: &Arc<Realm>, _: &Arc<Session>, args: &Args) -> MetaResult {
    let id = args.id(0, "subscription")?;
    let info = realm.broker.subscription(id).ok_or_else(|| no_such(id))?;
    Ok((vec![Value::Dict(subscription_details(&info))], None))
}

pub(super) fn list_subscribers(realm: &Arc<Realm>, _: &Arc<Session>, args: &Args) -> MetaResult {
    let id = args.id(0, "subscription")?;
    let info = realm.broker.subscription(id).ok_or_else(|| no_such(id))?;
    Ok((vec![id_list(info.subscribers)], None))
}

pub(super) fn count_subscribers(realm: &Arc<Realm>, _: &Arc<Session>, args: &Args) -> MetaResult {
    let id = args.id(0, "subscription")?;
    let info = realm.broker.subscription(id).ok_or_else(|| no_such(id))?;
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
