//! Session meta procedures (spec "Session Meta API").

use std::sync::Arc;

use switchyard_proto::uri::{self, UriCheck};
use switchyard_proto::{errors, Value};

use super::{Args, MetaResult};
use crate::realm::{session_details, Realm};
use crate::session::{OpError, Session};

fn filtered(realm: &Realm, args: &Args) -> Result<Vec<Arc<Session>>, OpError> {
    let roles = args.str_list(0, "filter_authroles")?;
    let mut sessions = realm.sessions();
    if let Some(roles) = roles {
        sessions.retain(|s| roles.contains(&s.authrole.as_str()));
    }
    Ok(sessions)
}

pub(super) fn count(realm: &Arc<Realm>, _: &Arc<Session>, args: &Args) -> MetaResult {
    Ok((vec![Value::UInt(filtered(realm, args)?.len() as u64)], None))
}

pub(super) fn list(realm: &Arc<Realm>, _: &Arc<Session>, args: &Args) -> MetaResult {
    let ids = filtered(realm, args)?
        .iter()
        .map(|s| Value::UInt(s.id))
        .collect();
    Ok((vec![Value::List(ids)], None))
}

fn no_such(id: u64) -> OpError {
    (
        errors::NO_SUCH_SESSION,
        format!("no session {id} in this realm"),
    )
}

pub(super) fn get(realm: &Arc<Realm>, _: &Arc<Session>, args: &Args) -> MetaResult {
    let id = args.id(0, "session")?;
    let s = realm.session(id).ok_or_else(|| no_such(id))?;
    Ok((vec![Value::Dict(session_details(&s))], None))
}

/// The `reason` and `message` keyword arguments of the kill procedures.
fn reason(args: &Args) -> Result<(&str, Option<&str>), OpError> {
    let reason = args.kw_str("reason")?.unwrap_or(errors::CLOSE_KILLED);
    if let Err(e) = uri::check(reason, UriCheck::Loose, false) {
        return Err((
            errors::INVALID_URI,
            format!("reason \"{reason}\" is not a valid URI: {e}"),
        ));
    }
    Ok((reason, args.kw_str("message")?))
}

pub(super) fn kill(realm: &Arc<Realm>, caller: &Arc<Session>, args: &Args) -> MetaResult {
    let id = args.id(0, "session")?;
    let (reason, message) = reason(args)?;
    // A session cannot kill itself: "no *other* session with that id".
    let target = realm
        .session(id)
        .filter(|s| s.id != caller.id)
        .ok_or_else(|| no_such(id))?;
    realm.kill(&target, reason, message);
    Ok((vec![], None))
}

fn kill_where(
    realm: &Arc<Realm>,
    caller: &Arc<Session>,
    args: &Args,
    keep: impl Fn(&Session) -> bool,
) -> Result<Vec<u64>, OpError> {
    let (reason, message) = reason(args)?;
    let mut killed = Vec::new();
    for s in realm.sessions() {
        if s.id != caller.id && keep(&s) {
            realm.kill(&s, reason, message);
            killed.push(s.id);
        }
    }
    Ok(killed)
}

pub(super) fn kill_by_authid(realm: &Arc<Realm>, caller: &Arc<Session>, args: &Args) -> MetaResult {
    let authid = args.str(0, "authid")?.to_string();
    let killed = kill_where(realm, caller, args, |s| s.authid == authid)?;
    Ok((
        vec![Value::List(killed.into_iter().map(Value::UInt).collect())],
        None,
    ))
}

pub(super) fn kill_by_authrole(
    realm: &Arc<Realm>,
    caller: &Arc<Session>,
    args: &Args,
) -> MetaResult {
    let authrole = args.str(0, "authrole")?.to_string();
    let killed = kill_where(realm, caller, args, |s| s.authrole == authrole)?;
    Ok((vec![Value::UInt(killed.len() as u64)], None))
}

pub(super) fn kill_all(realm: &Arc<Realm>, caller: &Arc<Session>, args: &Args) -> MetaResult {
    let killed = kill_where(realm, caller, args, |_| true)?;
    Ok((vec![Value::UInt(killed.len() as u64)], None))
}
