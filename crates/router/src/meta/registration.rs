//! Registration meta procedures (spec "Registration Meta API").

use std::sync::Arc;

use switchyard_proto::{errors, Dict, Value};

use super::{invalid, Args, MetaResult};
use crate::realm::{registration_details, Realm};
use crate::session::{OpError, Session};
use crate::uri_index::MatchPolicy;

fn ids(list: Vec<u64>) -> Value {
    Value::List(list.into_iter().map(Value::UInt).collect())
}

fn id_or_null(id: Option<u64>) -> Value {
    id.map(Value::UInt).unwrap_or(Value::Null)
}

fn no_such(id: u64) -> OpError {
    (
        errors::NO_SUCH_REGISTRATION,
        format!("no registration {id} in this realm"),
    )
}

pub(super) fn list(realm: &Arc<Realm>, _: &Arc<Session>, _: &Args) -> MetaResult {
    let [exact, prefix, wildcard] = realm.dealer.list();
    let lists = Dict::new()
        .with("exact", ids(exact))
        .with("prefix", ids(prefix))
        .with("wildcard", ids(wildcard));
    Ok((vec![Value::Dict(lists)], None))
}

pub(super) fn lookup(realm: &Arc<Realm>, _: &Arc<Session>, args: &Args) -> MetaResult {
    let procedure = args.str(0, "procedure")?;
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
    Ok((
        vec![id_or_null(realm.dealer.lookup(procedure, policy))],
        None,
    ))
}

pub(super) fn best_match(realm: &Arc<Realm>, _: &Arc<Session>, args: &Args) -> MetaResult {
    let procedure = args.str(0, "procedure")?;
    Ok((vec![id_or_null(realm.dealer.best_match(procedure))], None))
}

pub(super) fn get(realm: &Arc<Realm>, _: &Arc<Session>, args: &Args) -> MetaResult {
    let id = args.id(0, "registration")?;
    let info = realm.dealer.registration(id).ok_or_else(|| no_such(id))?;
    Ok((vec![Value::Dict(registration_details(&info))], None))
}

pub(super) fn list_callees(realm: &Arc<Realm>, _: &Arc<Session>, args: &Args) -> MetaResult {
    let id = args.id(0, "registration")?;
    let info = realm.dealer.registration(id).ok_or_else(|| no_such(id))?;
    Ok((vec![ids(info.callees)], None))
}

pub(super) fn count_callees(realm: &Arc<Realm>, _: &Arc<Session>, args: &Args) -> MetaResult {
    let id = args.id(0, "registration")?;
    let info = realm.dealer.registration(id).ok_or_else(|| no_such(id))?;
    Ok((vec![Value::UInt(info.callees.len() as u64)], None))
}
