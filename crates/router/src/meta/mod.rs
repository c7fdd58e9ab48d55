//! The WAMP meta API: procedures the router itself implements in every realm
//! (`wamp.registration.*`, `wamp.subscription.*` with `get_events`,
//! `wamp.session.*` with the testaments). Meta events are published by
//! [`crate::realm::Realm`].

mod registration;
mod session;
mod subscription;

use std::sync::Arc;

use switchyard_proto::message::code;
use switchyard_proto::{errors, Dict, Message, Payload, Value};

use crate::realm::Realm;
use crate::session::{OpError, Session};
use crate::uri_index::MatchPolicy;

/// Positional and keyword results of a meta procedure.
type MetaResult = Result<(Vec<Value>, Option<Dict>), OpError>;

/// Arguments of a meta call, decoded.
pub(crate) struct Args {
    args: Vec<Value>,
    kwargs: Dict,
}

impl Args {
    fn decode(payload: &Payload) -> Result<Self, OpError> {
        let bad = |e: String| {
            (
                errors::INVALID_ARGUMENT,
                format!("cannot read the arguments: {e}"),
            )
        };
        let args = match &payload.args {
            None => Vec::new(),
            Some(item) => match item.to_value().map_err(|e| bad(e.to_string()))? {
                Value::List(l) => l,
                other => return Err(bad(format!("expected a list, got {}", other.type_name()))),
            },
        };
        let kwargs = match &payload.kwargs {
            None => Dict::new(),
            Some(item) => match item.to_value().map_err(|e| bad(e.to_string()))? {
                Value::Dict(d) => d,
                other => return Err(bad(format!("expected a dict, got {}", other.type_name()))),
            },
        };
        Ok(Args { args, kwargs })
    }

    fn get(&self, i: usize) -> Option<&Value> {
        self.args.get(i).filter(|v| !matches!(v, Value::Null))
    }

    fn id(&self, i: usize, name: &str) -> Result<u64, OpError> {
        match self.get(i) {
            Some(Value::UInt(id)) => Ok(*id),
            Some(other) => Err(invalid(format!(
                "argument {} ({name}) must be an id, got {}",
                i + 1,
                other.type_name()
            ))),
            None => Err(invalid(format!("argument {} ({name}) is missing", i + 1))),
        }
    }

    fn str(&self, i: usize, name: &str) -> Result<&str, OpError> {
        match self.get(i) {
            Some(Value::Str(s)) => Ok(s),
            Some(other) => Err(invalid(format!(
                "argument {} ({name}) must be a string, got {}",
                i + 1,
                other.type_name()
            ))),
            None => Err(invalid(format!("argument {} ({name}) is missing", i + 1))),
        }
    }

    /// An optional list of strings (e.g. `filter_authroles`).
    fn str_list(&self, i: usize, name: &str) -> Result<Option<Vec<&str>>, OpError> {
        match self.get(i) {
            None => Ok(None),
            Some(Value::List(l)) => l
                .iter()
                .enumerate()
                .map(|(n, v)| {
                    v.as_str().ok_or_else(|| {
                        invalid(format!(
                            "argument {} ({name}) must be a list of strings, but element {n} is {}",
                            i + 1,
                            switchyard_proto::shown_value(v)
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(other) => Err(invalid(format!(
                "argument {} ({name}) must be a list of strings, got {}",
                i + 1,
                other.type_name()
            ))),
        }
    }

    fn kw_str(&self, key: &str) -> Result<Option<&str>, OpError> {
        match self.kwargs.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s)),
            Some(other) => Err(invalid(format!(
                "keyword argument {key} must be a string, got {}",
                other.type_name()
            ))),
        }
    }
}

fn invalid(message: String) -> OpError {
    (errors::INVALID_ARGUMENT, message)
}

/// A list of ids as a WAMP value.
fn id_list(ids: Vec<u64>) -> Value {
    Value::List(ids.into_iter().map(Value::UInt).collect())
}

/// `{"exact": [...], "prefix": [...], "wildcard": [...]}` of the `list`
/// meta procedures.
fn by_policy([exact, prefix, wildcard]: [Vec<u64>; 3]) -> Value {
    Value::Dict(
        Dict::new()
            .with("exact", id_list(exact))
            .with("prefix", id_list(prefix))
            .with("wildcard", id_list(wildcard)),
    )
}

/// The match policy of the optional options dict at argument `i`
/// (`lookup`: "same options as when registering/subscribing").
fn match_option(args: &Args, i: usize) -> Result<MatchPolicy, OpError> {
    match args.get(i) {
        None => Ok(MatchPolicy::Exact),
        Some(Value::Dict(options)) => match options.get_str("match") {
            None => Ok(MatchPolicy::Exact),
            Some(m) => MatchPolicy::parse(m)
                .ok_or_else(|| invalid(format!("unknown match policy \"{m}\""))),
        },
        Some(other) => Err(invalid(format!(
            "argument {} (options) must be a dict, got {}",
            i + 1,
            other.type_name()
        ))),
    }
}

/// Runs meta procedure `procedure` if it is one; false if it is not (the
/// caller then gets `wamp.error.no_such_procedure` from the Dealer).
pub(crate) fn call(
    realm: &Arc<Realm>,
    caller: &Arc<Session>,
    request: u64,
    procedure: &str,
    payload: &Payload,
) -> bool {
    let run = |f: fn(&Arc<Realm>, &Arc<Session>, &Args) -> MetaResult| -> MetaResult {
        f(realm, caller, &Args::decode(payload)?)
    };
    let result = match procedure {
        "wamp.registration.list" => run(registration::list),
        "wamp.registration.lookup" => run(registration::lookup),
        "wamp.registration.match" => run(registration::best_match),
        "wamp.registration.get" => run(registration::get),
        "wamp.registration.list_callees" => run(registration::list_callees),
        "wamp.registration.count_callees" => run(registration::count_callees),
        "wamp.subscription.list" => run(subscription::list),
        "wamp.subscription.lookup" => run(subscription::lookup),
        "wamp.subscription.match" => run(subscription::matching),
        "wamp.subscription.get" => run(subscription::get),
        "wamp.subscription.list_subscribers" => run(subscription::list_subscribers),
        "wamp.subscription.count_subscribers" => run(subscription::count_subscribers),
        "wamp.subscription.get_events" => run(subscription::get_events),
        "wamp.session.add_testament" => match session::add_testament(realm, caller, payload) {
            session::Added::Now(result) => result,
            session::Added::Later(pending) => {
                let caller = caller.clone();
                tokio::spawn(async move { reply(&caller, request, pending.await) });
                return true;
            }
        },
        "wamp.session.flush_testaments" => run(session::flush_testaments),
        "wamp.session.count" => run(session::count),
        "wamp.session.list" => run(session::list),
        "wamp.session.get" => run(session::get),
        "wamp.session.kill" => run(session::kill),
        "wamp.session.kill_by_authid" => run(session::kill_by_authid),
        "wamp.session.kill_by_authrole" => run(session::kill_by_authrole),
        "wamp.session.kill_all" => run(session::kill_all),
        _ => return false,
    };
    reply(caller, request, result);
    true
}

/// Sends the RESULT (or ERROR) of meta call `request`.
fn reply(caller: &Session, request: u64, result: MetaResult) {
    match result {
        Ok((args, kwargs)) => {
            let msg = Message::Result {
                request,
                details: Dict::new(),
                payload: Payload::values(args, kwargs),
            };
            if let Err(e) = caller.encode(&msg).map(|frame| caller.peer.send(frame)) {
                caller.send_error(code::CALL, request, e);
            }
        }
        Err(e) => {
            caller.send_error(code::CALL, request, e);
        }
    }
}
