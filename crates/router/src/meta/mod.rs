//! The WAMP meta API: procedures the router itself implements in every realm
//! (`wamp.registration.*`, `wamp.subscription.*` with `get_events`,
//! `wamp.session.*` with the testaments). Meta events are published by
//! [`crate::realm::Realm`].

mod args;
mod registration;
mod session;
mod subscription;

use std::sync::Arc;

use switchyard_proto::message::code;
use switchyard_proto::{Dict, Message, Payload};

use crate::realm::Realm;
use crate::session::Session;
use args::{Args, MetaResult};

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
    let later = |added: session::Added| match added {
        session::Added::Now(result) => Some(result),
        session::Added::Later(pending) => {
            let caller = caller.clone();
            tokio::spawn(async move { reply(&caller, request, pending.await) });
            None
        }
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
        "wamp.session.add_testament" => {
            match later(session::add_testament(realm, caller, payload)) {
                Some(result) => result,
                None => return true,
            }
        }
        "wamp.session.flush_testaments" => run(session::flush_testaments),
        "wamp.session.count" => run(session::count),
        "wamp.session.list" => run(session::list),
        "wamp.session.get" => run(session::get),
        "wamp.session.kill"
        | "wamp.session.kill_by_authid"
        | "wamp.session.kill_by_authrole"
        | "wamp.session.kill_all" => {
            let kill = match procedure {
                "wamp.session.kill" => session::kill,
                "wamp.session.kill_by_authid" => session::kill_by_authid,
                "wamp.session.kill_by_authrole" => session::kill_by_authrole,
                _ => session::kill_all,
            };
            let added = match Args::decode(payload) {
                Ok(args) => kill(realm, caller, &args),
                Err(e) => session::Added::Now(Err(e)),
            };
            match later(added) {
                Some(result) => result,
                None => return true,
            }
        }
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
