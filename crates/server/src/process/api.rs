//! `switchyard.process.list`, `.start`, `.stop` and `.restart`: the
//! supervised processes' state and control, registered in every realm by a
//! router-owned session through the ordinary Dealer (as the queues' API is),
//! so each call is authorized like any other: give operators
//! `switchyard.process.` (prefix) or single procedures.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use switchyard_proto::{Dict, Payload, Value};
use switchyard_router::internal::{InternalCaller, InternalInvocation};
use switchyard_router::session::Identity;
use switchyard_router::{Realm, Session};
use tokio::sync::mpsc;

use super::supervisor::{Control, Managed, Supervisor};

/// Error URI: no process of that name.
pub const UNKNOWN: &str = "switchyard.process.error.unknown_process";
/// Error URI: a missing or malformed argument.
pub const INVALID: &str = "switchyard.process.error.invalid_argument";

const PROCEDURES: [&str; 4] = [
    "switchyard.process.list",
    "switchyard.process.start",
    "switchyard.process.stop",
    "switchyard.process.restart",
];

/// Calls served at once per procedure (the rest wait in the Dealer).
const CONCURRENCY: u64 = 8;

fn identity() -> Identity {
    Identity {
        authid: "switchyard-process".into(),
        authrole: "switchyard".into(),
        authmethod: "internal".into(),
        authprovider: "switchyard".into(),
    }
}

/// Registers the procedures in `realm`; the returned caller keeps the
/// registrations alive.
pub fn register(
    supervisor: &Arc<Supervisor>,
    realm: &Arc<Realm>,
) -> Result<InternalCaller, String> {
    let (tx, rx) = mpsc::channel(64);
    let caller = InternalCaller::with_invocations(identity(), tx);
    let session = caller.session().clone();
    let names = caller.register_procedures(
        realm.name(),
        &realm.dealer,
        PROCEDURES.map(|procedure| (procedure, Dict::new().with("concurrency", CONCURRENCY))),
    )?;
    tokio::spawn(serve(
        Arc::downgrade(supervisor),
        realm.clone(),
        session,
        names,
        rx,
    ));
    Ok(caller)
}

async fn serve(
    supervisor: std::sync::Weak<Supervisor>,
    realm: Arc<Realm>,
    session: Arc<Session>,
    names: HashMap<u64, &'static str>,
    mut rx: mpsc::Receiver<InternalInvocation>,
) {
    while let Some(inv) = rx.recv().await {
        let Some(supervisor) = supervisor.upgrade() else {
            return;
        };
        let procedure = names.get(&inv.registration).copied().unwrap_or("");
        let (realm, session) = (realm.clone(), session.clone());
        tokio::spawn(async move {
            let request = inv.request;
            match handle(&supervisor, procedure, &inv).await {
                Ok(v) => realm.dealer.yield_result(
                    &session,
                    request,
                    &Dict::new(),
                    Payload::values(vec![v], None),
                ),
                Err((uri, message)) => realm.dealer.yield_error(
                    &session,
                    request,
                    uri.to_string(),
                    Payload::message(message),
                ),
            };
        });
    }
}

async fn handle(
    supervisor: &Supervisor,
    procedure: &str,
    inv: &InternalInvocation,
) -> Result<Value, (&'static str, String)> {
    if procedure == "switchyard.process.list" {
        return Ok(Value::List(
            supervisor.processes().iter().map(|m| describe(m)).collect(),
        ));
    }
    let short = procedure.trim_start_matches("switchyard.process.");
    let name = match inv.args.first().or_else(|| inv.kwargs.get("name")) {
        Some(Value::Str(s)) => s.as_str(),
        _ => {
            return Err((
                INVALID,
                format!("{short} needs the process name as its first argument"),
            ))
        }
    };
    let Some(m) = supervisor.find(name) else {
        return Err((UNKNOWN, format!("no process named {name:?}")));
    };
    let make: fn(tokio::sync::oneshot::Sender<()>) -> Control = match short {
        "start" => Control::Start,
        "stop" => Control::Stop,
        _ => Control::Restart,
    };
    tracing::info!(process = %name, "switchyard.process.{short} {name}");
    if !m.request(make).await {
        return Err((
            "switchyard.process.error.shutting_down",
            "the router is shutting down".into(),
        ));
    }
    Ok(describe(m))
}

/// `{name, status, running, pid, restarts, last_exit, since_ms, restart, command}`.
fn describe(m: &Managed) -> Value {
    let s = m.state();
    let since_ms = s
        .since
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut d = Dict::new()
        .with("name", m.config.name.as_str())
        .with("status", s.status.name())
        .with("running", s.status == super::supervisor::Status::Running)
        .with(
            "pid",
            s.pid.map_or(Value::Null, |p| Value::UInt(u64::from(p))),
        )
        .with("restarts", s.restarts)
        .with("since_ms", since_ms)
        .with("restart", m.config.restart.name())
        .with("command", m.config.command.as_str());
    d.insert("last_exit", s.last_exit.map_or(Value::Null, Value::Str));
    Value::Dict(d)
}
