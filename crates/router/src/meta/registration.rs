//! Registration meta procedures (spec "Registration Meta API").

use std::sync::Arc;

use switchyard_proto::{errors, Value};

use super::args::{by_policy, id_list, match_option, Args, MetaResult};
use crate::realm::{registration_details, Realm};
use crate::session::{OpError, Session};

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
    Ok((vec![by_policy(realm.dealer.list())], None))
}

pub(super) fn lookup(realm: &Arc<Realm>, _: &Arc<Session>, args: &Args) -> MetaResult {
    let procedure = args.str(0, "procedure")?;
    let policy = match_option(args, 1)?;
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
    Ok((vec![id_list(info.callees)], None))
}

pub(super) fn count_callees(realm: &Arc<Realm>, _: &Arc<Session>, args: &Args) -> MetaResult {
    let id = args.id(0, "registration")?;
    let info = realm.dealer.registration(id).ok_or_else(|| no_such(id))?;
    Ok((vec![Value::UInt(info.callees.len() as u64)], None))
}
