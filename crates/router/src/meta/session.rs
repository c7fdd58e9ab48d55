//! Session meta procedures (spec "Session Meta API").

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use switchyard_proto::uri::{self, UriCheck};
use switchyard_proto::{errors, Payload, Value};

use super::args::{invalid, Args, MetaResult};
use crate::authz::{Action, Decision};
use crate::backplane::{KillOrder, KillTarget};
use crate::details::session_details;
use crate::realm::{Farewell, Realm};
use crate::session::{OpError, Session, Testament, TestamentLimits, TestamentScope};

/// The ids of the realm's sessions (in a cluster, of every node's) whose
/// authrole is in `filter_authroles` (all without it).
fn filtered(realm: &Realm, args: &Args) -> Result<Vec<u64>, OpError> {
    let roles = args.str_list(0, "filter_authroles")?;
    let admits = |role: &str| roles.as_ref().is_none_or(|r| r.contains(&role));
    let mut ids: Vec<u64> = realm
        .sessions()
        .iter()
        .filter(|s| admits(&s.authrole))
        .map(|s| s.id)
        .collect();
    if let Some(b) = realm.backplane() {
        ids.extend(
            b.remote_sessions()
                .iter()
                .filter(|s| admits(&s.authrole))
                .map(|s| s.id),
        );
    }
    Ok(ids)
}

pub(super) fn count(realm: &Arc<Realm>, _: &Arc<Session>, args: &Args) -> MetaResult {
    Ok((vec![Value::UInt(filtered(realm, args)?.len() as u64)], None))
}

pub(super) fn list(realm: &Arc<Realm>, _: &Arc<Session>, args: &Args) -> MetaResult {
    let ids = filtered(realm, args)?
        .into_iter()
        .map(Value::UInt)
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
    let Some(s) = realm.session(id) else {
        // Another node's session: its details as its node built them.
        let remote = realm.backplane().and_then(|b| b.remote_session(id));
        let s = remote.ok_or_else(|| no_such(id))?;
        return Ok((vec![Value::Dict(s.details)], None));
    };
    // Besides the details: the frames the session sent and was sent so
    // far (`stats`), from which a monitor derives its message rates.
    let (frames_in, frames_out) = s.peer.frame_counts();
    let details = session_details(&s).with(
        "stats",
        switchyard_proto::Dict::new()
            .with("messages_in", frames_in)
            .with("messages_out", frames_out),
    );
    Ok((vec![Value::Dict(details)], None))
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

/// The answer of a kill procedure: now (a single node, or nothing to ask
/// the other nodes), or once the other nodes of a cluster have answered.
pub(super) fn kill(realm: &Arc<Realm>, caller: &Arc<Session>, args: &Args) -> Added {
    let run = || -> Result<Added, OpError> {
        let id = args.id(0, "session")?;
        let (reason, message) = reason(args)?;
        // A session cannot kill itself: "no *other* session with that id".
        if let Some(target) = realm.session(id).filter(|s| s.id != caller.id) {
            realm.kill(&target, reason, message);
            return Ok(Added::Now(Ok((vec![], None))));
        }
        // Another node's session: its node ends it.
        let remote = realm
            .backplane()
            .filter(|b| b.remote_session(id).is_some())
            .and_then(|b| b.kill_remote(order(KillTarget::Session(id), reason, message)));
        let Some(wait) = remote else {
            return Err(no_such(id));
        };
        Ok(Added::Later(Box::pin(async move {
            if wait.await.contains(&id) {
                Ok((vec![], None))
            } else {
                Err(no_such(id))
            }
        })))
    };
    run().unwrap_or_else(|e| Added::Now(Err(e)))
}

fn order(target: KillTarget, reason: &str, message: Option<&str>) -> KillOrder {
    KillOrder {
        target,
        reason: reason.to_string(),
        message: message.map(str::to_string),
    }
}

fn kill_where(
    realm: &Arc<Realm>,
    caller: &Arc<Session>,
    args: &Args,
    keep: impl Fn(&Session) -> bool,
    farewell: Farewell,
) -> Result<Vec<u64>, OpError> {
    let (reason, message) = reason(args)?;
    let mut killed = Vec::new();
    for s in realm.sessions() {
        if s.id != caller.id && keep(&s) {
            match farewell {
                Farewell::Announced => realm.kill(&s, reason, message),
                Farewell::Silent => realm.kill_silently(&s, reason, message),
            }
            killed.push(s.id);
        }
    }
    Ok(killed)
}

/// Kills this node's sessions `target` names, then (in a cluster) asks
/// the other nodes to kill theirs: `answer` makes the result of all the
/// ids.
fn kill_everywhere(
    realm: &Arc<Realm>,
    caller: &Arc<Session>,
    args: &Args,
    target: KillTarget,
    answer: fn(Vec<u64>) -> Vec<Value>,
) -> Added {
    let keep = |s: &Session| match &target {
        KillTarget::AuthId(a) => s.authid == *a,
        KillTarget::AuthRole(r) => s.authrole == *r,
        KillTarget::Session(id) => s.id == *id,
        KillTarget::All => true,
    };
    // `kill_all` ends sessions without their testaments and on_leave.
    let farewell = match target {
        KillTarget::All => Farewell::Silent,
        _ => Farewell::Announced,
    };
    let mut killed = match kill_where(realm, caller, args, keep, farewell) {
        Ok(k) => k,
        Err(e) => return Added::Now(Err(e)),
    };
    let remote = reason(args).ok().and_then(|(reason, message)| {
        realm
            .backplane()
            .and_then(|b| b.kill_remote(order(target, reason, message)))
    });
    match remote {
        None => Added::Now(Ok((answer(killed), None))),
        Some(wait) => Added::Later(Box::pin(async move {
            killed.extend(wait.await);
            Ok((answer(killed), None))
        })),
    }
}

pub(super) fn kill_by_authid(realm: &Arc<Realm>, caller: &Arc<Session>, args: &Args) -> Added {
    let authid = match args.str(0, "authid") {
        Ok(a) => a.to_string(),
        Err(e) => return Added::Now(Err(e)),
    };
    kill_everywhere(realm, caller, args, KillTarget::AuthId(authid), |ids| {
        vec![Value::List(ids.into_iter().map(Value::UInt).collect())]
    })
}

pub(super) fn kill_by_authrole(realm: &Arc<Realm>, caller: &Arc<Session>, args: &Args) -> Added {
    let authrole = match args.str(0, "authrole") {
        Ok(a) => a.to_string(),
        Err(e) => return Added::Now(Err(e)),
    };
    kill_everywhere(realm, caller, args, KillTarget::AuthRole(authrole), |ids| {
        vec![Value::UInt(ids.len() as u64)]
    })
}

pub(super) fn kill_all(realm: &Arc<Realm>, caller: &Arc<Session>, args: &Args) -> Added {
    kill_everywhere(realm, caller, args, KillTarget::All, |ids| {
        vec![Value::UInt(ids.len() as u64)]
    })
}

fn scope(args: &Args) -> Result<TestamentScope, OpError> {
    match args.kw_str("scope")? {
        None | Some("destroyed") => Ok(TestamentScope::Destroyed),
        Some("detached") => Ok(TestamentScope::Detached),
        Some(other) => Err(invalid(format!(
            "scope must be \"destroyed\" or \"detached\", got \"{other}\""
        ))),
    }
}

/// The answer of `wamp.session.add_testament` (now, or once the realm's
/// authorizer procedure has decided) and of the kill procedures (now, or
/// once the other nodes of a cluster have answered).
pub(super) enum Added {
    Now(MetaResult),
    Later(Pin<Box<dyn Future<Output = MetaResult> + Send>>),
}

/// `wamp.session.add_testament(topic, args, kwargs, publish_options=, scope=)`.
///
/// The router publishes a testament on the session's behalf, so it is
/// checked as that session's PUBLISH, when it is added: a valid topic
/// outside the reserved `wamp.` namespace, that the session may publish to
/// (its role, or the authorizer procedure). A permission with `disclose`
/// discloses the publisher of the testament too.
pub(super) fn add_testament(realm: &Arc<Realm>, caller: &Arc<Session>, payload: &Payload) -> Added {
    let checked = Args::decode(payload).and_then(|args| {
        let topic = args.str(0, "topic")?.to_string();
        realm.check_uri_length(&topic, "testament topic")?;
        if let Err(e) = uri::check(&topic, realm.config().uri_check, false) {
            return Err((errors::INVALID_URI, format!("invalid topic: {e}")));
        }
        if uri::is_reserved(&topic) {
            return Err((
                errors::INVALID_URI,
                format!(
                    "topic \"{topic}\" is in the \"wamp.\" namespace, which is reserved for the router"
                ),
            ));
        }
        Ok((args, topic))
    });
    let (args, topic) = match checked {
        Ok(ok) => ok,
        Err(e) => return Added::Now(Err(e)),
    };
    match realm.authz().decide(caller, Action::Publish, &topic) {
        Decision::Ask => match caller.cached_decision(Action::Publish, &topic) {
            Some(d) => Added::Now(decided(d, realm, caller, &args, topic)),
            None => {
                let (realm, caller) = (realm.clone(), caller.clone());
                Added::Later(Box::pin(async move {
                    let d = realm.authorize(&caller, Action::Publish, &topic).await;
                    decided(d, &realm, &caller, &args, topic)
                }))
            }
        },
        d => Added::Now(decided(d, realm, caller, &args, topic)),
    }
}

/// Adds the testament if `decision` allows it.
fn decided(
    decision: Decision,
    realm: &Realm,
    caller: &Session,
    args: &Args,
    topic: String,
) -> MetaResult {
    match decision {
        Decision::Allow { disclose } => add_authorized(realm, caller, args, topic, disclose),
        Decision::Deny | Decision::Ask => {
            Err(realm.not_authorized(caller, Action::Publish, &topic))
        }
    }
}

/// Adds an authorized testament on `topic`.
fn add_authorized(
    realm: &Realm,
    caller: &Session,
    args: &Args,
    topic: String,
    disclose: bool,
) -> MetaResult {
    let event_args = match args.get(1) {
        None => Vec::new(),
        Some(Value::List(l)) => l.clone(),
        Some(other) => {
            return Err(invalid(format!(
                "argument 2 (args) must be a list, got {}",
                other.type_name()
            )))
        }
    };
    let event_kwargs = match args.get(2) {
        None => None,
        Some(Value::Dict(d)) => Some(d.clone()),
        Some(other) => {
            return Err(invalid(format!(
                "argument 3 (kwargs) must be a dict, got {}",
                other.type_name()
            )))
        }
    };
    let mut options = match args.kwargs.get("publish_options") {
        None | Some(Value::Null) => switchyard_proto::Dict::new(),
        Some(Value::Dict(d)) => d.clone(),
        Some(other) => {
            return Err(invalid(format!(
                "publish_options must be a dict, got {}",
                other.type_name()
            )))
        }
    };
    // Nobody is left to receive an acknowledgement.
    options.0.retain(|(k, _)| k != "acknowledge");
    if disclose {
        options.insert("disclose_me", true);
    }
    let scope = scope(args)?;
    let testament = Testament {
        topic,
        options,
        payload: switchyard_proto::Payload::values(event_args, event_kwargs),
    };
    // What it holds: its EVENT, encoded.
    let size = switchyard_proto::Message::Event {
        subscription: 0,
        publication: 0,
        details: testament.options.clone(),
        payload: testament.payload.clone(),
    }
    .encode(switchyard_proto::Serializer::MsgPack)
    .map_or(usize::MAX / 2, |b| b.len())
        + testament.topic.len();
    let limits = TestamentLimits {
        count: realm.config().max_testaments_per_session,
        bytes: realm.config().max_testament_bytes_per_session,
        realm_bytes: realm.config().max_testament_bytes,
    };
    if let Err(why) = caller.add_testament(scope, testament, size, limits, &realm.testament_bytes) {
        crate::metrics::Metrics::inc(&realm.metrics.limit_exceeded);
        tracing::info!(session = caller.id, "testament refused: {why}");
        return Err((crate::errors::LIMIT_EXCEEDED, why));
    }
    if let Some(b) = realm.backplane() {
        b.testaments_changed(caller);
    }
    Ok((vec![], None))
}

/// `wamp.session.flush_testaments(scope=)`.
pub(super) fn flush_testaments(
    realm: &Arc<Realm>,
    caller: &Arc<Session>,
    args: &Args,
) -> MetaResult {
    if caller.flush_testaments(scope(args)?) > 0 {
        if let Some(b) = realm.backplane() {
            b.testaments_changed(caller);
        }
    }
    Ok((vec![], None))
}
