//! Subscription meta procedures (spec "Subscription Meta API") and
//! `wamp.subscription.get_events` (spec "Event History").

use std::sync::Arc;

use switchyard_proto::{errors, Dict, Value};

use super::{invalid, Args, MetaResult};
use crate::broker::subscription_details;
use crate::realm::Realm;
use crate::session::{OpError, Session};
use crate::uri_index::MatchPolicy;

fn ids(list: Vec<u64>) -> Value {
    Value::List(list.into_iter().map(Value::UInt).collect())
}

fn no_such(id: u64) -> OpError {
    (
        errors::NO_SUCH_SUBSCRIPTION,
        format!("no subscription {id} in this realm"),
    )
}

pub(super) fn list(realm: &Arc<Realm>, _: &Arc<Session>, _: &Args) -> MetaResult {
    let [exact, prefix, wildcard] = realm.broker.list();
    let lists = Dict::new()
        .with("exact", ids(exact))
        .with("prefix", ids(prefix))
        .with("wildcard", ids(wildcard));
    Ok((vec![Value::Dict(lists)], None))
}

pub(super) fn lookup(realm: &Arc<Realm>, _: &Arc<Session>, args: &Args) -> MetaResult {
    let topic = args.str(0, "topic")?;
    let policy = match args.get(1) {
        None => MatchPolicy::Exact,
        Some(Value::Dict(options)) => match options.get_str("match") {
            None => MatchPolicy::Exact,
            Some(m) => MatchPolicy::parse(m)
                .ok_or_else(|| invalid(format!("unknown match policy \"{m}\"")))?,
        },
        Some(other) => {
            return Err(invalid(format!(
                "argument 2 (options) must be a dict, got {}",
                other.type_name()
            )))
        }
    };
    let found = realm.broker.lookup(topic, policy);
    Ok((vec![found.map(Value::UInt).unwrap_or(Value::Null)], None))
}

pub(super) fn matching(realm: &Arc<Realm>, _: &Arc<Session>, args: &Args) -> MetaResult {
    let topic = args.str(0, "topic")?;
    let found = realm.broker.matching(topic);
    let result = if found.is_empty() {
        Value::Null
    } else {
        ids(found)
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
    Ok((vec![ids(info.subscribers)], None))
}

pub(super) fn count_subscribers(realm: &Arc<Realm>, _: &Arc<Session>, args: &Args) -> MetaResult {
    let id = args.id(0, "subscription")?;
    let info = realm.broker.subscription(id).ok_or_else(|| no_such(id))?;
    Ok((vec![Value::UInt(info.subscribers.len() as u64)], None))
}

pub(super) fn get_events(realm: &Arc<Realm>, caller: &Arc<Session>, args: &Args) -> MetaResult {
    let id = args.id(0, "subscription")?;
    let events = realm.broker.get_events(id, &args.kwargs, caller)?;
    Ok((vec![Value::List(events)], None))
}
