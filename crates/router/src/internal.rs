//! Router-owned sessions: how the router itself calls procedures its
//! clients registered, and serves procedures and receives events of its own.
//! Used by the dynamic authenticator and authorizer, the HTTP bridge (its
//! calls and publications, HTTP-backed callees, webhook subscribers) and the
//! durable queues (the `switchyard.queue.*` procedures, calls to workers).
//! Such a session, never listed in the realm, sends CALLs through the
//! ordinary Dealer (so authorization applies to it as to a client); a task
//! reads what the Dealer queues for it and completes the waiting callers, or
//! hands INVOCATIONs and EVENTs to the owner's channel.
//!
//! A failed call says who answered ([`CallFailure::unserved`]): the Dealer
//! because no callee took the call, or a callee (whatever error URI it chose).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use switchyard_proto::{errors, Dict, Message, Payload, Serializer, Value};
use tokio::sync::{mpsc, oneshot};

use crate::dealer::{CallOutcome, Dealer};
use crate::features::ClientFeatures;
use crate::peer::{Outgoing, Peer, SlowConsumerPolicy};
use crate::session::{Identity, Session};

/// What a procedure answered.
#[derive(Debug)]
pub struct Reply {
    pub args: Vec<Value>,
    pub kwargs: Dict,
}

impl Reply {
    /// A result with one argument.
    pub fn single(v: Value) -> Reply {
        Reply {
            args: vec![v],
            kwargs: Dict::new(),
        }
    }
}

pub use crate::errors::CallFailure;

/// Called for each progressive RESULT of a call.
pub type OnProgress = Box<dyn Fn(&Dict) + Send + Sync>;

struct Waiter {
    tx: oneshot::Sender<Result<Reply, CallFailure>>,
    progress: Option<OnProgress>,
}

type Waiters = Mutex<HashMap<u64, Waiter>>;

/// A call the Dealer has taken; [`PendingCall::wait`] for its answer.
pub struct PendingCall {
    request: u64,
    rx: oneshot::Receiver<Result<Reply, CallFailure>>,
}

impl PendingCall {
    /// The CALL's request id (for [`InternalCaller::cancel`] and
    /// [`Dealer::callee_of`]).
    pub fn request(&self) -> u64 {
        self.request
    }

    /// The call's final RESULT or ERROR. A call without a timeout waits as
    /// long as the callee takes, until it is canceled or its callee leaves.
    pub async fn wait(self) -> Result<Reply, CallFailure> {
        self.rx.await.unwrap_or_else(|_| {
            Err(CallFailure::new(
                errors::CANCELED,
                "the router's internal session stopped".into(),
            ))
        })
    }
}

/// An EVENT delivered to a router-owned session (its subscriptions).
#[derive(Debug, Clone)]
pub struct InternalEvent {
    pub subscription: u64,
    pub publication: u64,
    pub details: Dict,
    pub args: Vec<Value>,
    pub kwargs: Dict,
}

/// An INVOCATION for a procedure a router-owned session registered.
#[derive(Debug, Clone)]
pub struct InternalInvocation {
    pub request: u64,
    pub registration: u64,
    pub details: Dict,
    pub args: Vec<Value>,
    pub kwargs: Dict,
}

/// A caller for router-made calls, under one identity.
pub struct InternalCaller {
    identity: Identity,
    /// Where EVENTs for this session's subscriptions go, if anywhere.
    events: Option<mpsc::Sender<InternalEvent>>,
    /// Where INVOCATIONs for this session's registrations go, if anywhere.
    invocations: Option<mpsc::Sender<InternalInvocation>>,
    /// See [`InternalCaller::exact_registrations_only`].
    exact_only: bool,
    started: OnceLock<Started>,
}

struct Started {
    session: Arc<Session>,
    next: AtomicU64,
    waiters: Arc<Waiters>,
}

impl Default for InternalCaller {
    /// The router's own identity (authid and authrole "switchyard").
    fn default() -> Self {
        InternalCaller::new(Identity {
            authid: "switchyard".into(),
            authrole: "switchyard".into(),
            authmethod: "internal".into(),
            authprovider: "switchyard".into(),
        })
    }
}

/// A payload's positional and keyword arguments, decoded (empty when
/// absent or not a list / dict).
fn decode(p: &Payload) -> (Vec<Value>, Dict) {
    let args = match p.args.as_ref().and_then(|i| i.to_value().ok()) {
        Some(Value::List(l)) => l,
        _ => Vec::new(),
    };
    let kwargs = match p.kwargs.as_ref().and_then(|i| i.to_value().ok()) {
        Some(Value::Dict(d)) => d,
        _ => Dict::new(),
    };
    (args, kwargs)
}

impl InternalCaller {
    /// A caller whose calls and publications carry `identity` (so
    /// authorization and disclosure apply to it as to a client).
    pub fn new(identity: Identity) -> Self {
        InternalCaller {
            identity,
            events: None,
            invocations: None,
            exact_only: false,
            started: OnceLock::new(),
        }
    }

    /// Like [`InternalCaller::new`]; INVOCATIONs of the session's
    /// registrations are handed to `invocations`, and the handler answers
    /// each with `Dealer::yield_result` or `Dealer::yield_error`. Register
    /// with a `concurrency` no larger than the channel.
    pub fn with_invocations(
        identity: Identity,
        invocations: mpsc::Sender<InternalInvocation>,
    ) -> Self {
        InternalCaller {
            identity,
            events: None,
            invocations: Some(invocations),
            exact_only: false,
            started: OnceLock::new(),
        }
    }

    /// Like [`InternalCaller::new`]; the EVENTs of the session's
    /// subscriptions are handed to `events` (dropped, with a log line, when
    /// it is full).
    pub fn with_events(identity: Identity, events: mpsc::Sender<InternalEvent>) -> Self {
        InternalCaller {
            identity,
            events: Some(events),
            invocations: None,
            exact_only: false,
            started: OnceLock::new(),
        }
    }

    /// Its calls go only to a callee that registered exactly the procedure
    /// called, never to a prefix or wildcard registration that happens to
    /// match it: for calls that hand over secrets or let the answer decide
    /// who a session is or what it may do (the authenticator and authorizer
    /// procedures), where "whoever may register a matching pattern" is not
    /// the callee the realm's configuration named.
    #[must_use]
    pub fn exact_registrations_only(mut self) -> Self {
        self.exact_only = true;
        self
    }

    /// The session this caller acts as.
    pub fn session(&self) -> &Arc<Session> {
        &self.started().session
    }

    /// Registers `procedures` (each with its REGISTER.Options) for this
    /// session in `dealer` of realm `realm`, through the Dealer's own
    /// checks; returns the registration ids with their procedures, for the
    /// session's invocation loop.
    pub fn register_procedures(
        &self,
        realm: &str,
        dealer: &Dealer,
        procedures: impl IntoIterator<Item = (&'static str, Dict)>,
    ) -> Result<HashMap<u64, &'static str>, String> {
        let session = self.session();
        let mut names = HashMap::new();
        for (procedure, options) in procedures {
            let opts = crate::dealer::RegisterOptions::parse(&options).map_err(|(_, m)| m)?;
            let mut id = 0;
            dealer
                .register(session, procedure, &opts, |r| id = r)
                .map_err(|(uri, m)| {
                    format!("realm \"{realm}\": cannot register {procedure}: {uri}: {m}")
                })?;
            names.insert(id, procedure);
        }
        Ok(names)
    }

    fn started(&self) -> &Started {
        self.started.get_or_init(|| {
            let (peer, rx) = Peer::new(
                Serializer::MsgPack,
                16 * 1024,
                SlowConsumerPolicy::Disconnect,
                usize::MAX,
                "router".into(),
            );
            let mut session = Session::new(
                switchyard_proto::id::random_id(),
                self.identity.clone(),
                ClientFeatures::default(),
                peer,
            );
            session.router_owned = true;
            session.exact_calls_only = self.exact_only;
            let session = Arc::new(session);
            let waiters: Arc<Waiters> = Arc::default();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(read_replies(
                    rx,
                    waiters.clone(),
                    self.events.clone(),
                    self.invocations.clone(),
                ));
            }
            Started {
                session,
                next: AtomicU64::new(0),
                waiters,
            }
        })
    }

    /// Sends CALL `procedure` with `options` (e.g. `receive_progress`; no
    /// `timeout` means none) and `payload`; `progress` sees each
    /// progressive RESULT. A call the Dealer refuses at once (no such
    /// procedure...) is answered through the returned [`PendingCall`] too.
    pub fn start_call(
        &self,
        dealer: &Dealer,
        procedure: &str,
        options: &Dict,
        payload: Payload,
        progress: Option<OnProgress>,
    ) -> Result<PendingCall, CallFailure> {
        let st = self.started();
        let request = st.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        st.waiters.lock().insert(request, Waiter { tx, progress });
        if let CallOutcome::Violation(v) =
            dealer.call(&st.session, request, procedure, options, payload, true)
        {
            st.waiters.lock().remove(&request);
            return Err(CallFailure::new(errors::INVALID_ARGUMENT, v));
        }
        Ok(PendingCall { request, rx })
    }

    /// Cancels call `request` (mode `killnowait`: the waiting
    /// [`PendingCall`] gets `wamp.error.canceled` at once, and a callee that
    /// understands it gets INTERRUPT).
    pub fn cancel(&self, dealer: &Dealer, request: u64) {
        let options = Dict::new().with("mode", "killnowait");
        dealer.cancel(&self.started().session, request, &options);
    }

    /// Calls `procedure` and waits at most `timeout` for its answer.
    pub async fn call(
        &self,
        dealer: &Dealer,
        procedure: &str,
        args: Vec<Value>,
        kwargs: Option<Dict>,
        timeout: Duration,
    ) -> Result<Reply, CallFailure> {
        let options = Dict::new().with("timeout", timeout.as_millis() as u64);
        let pending = self.start_call(
            dealer,
            procedure,
            &options,
            Payload::values(args, kwargs),
            None,
        )?;
        let request = pending.request;
        // The Dealer times the call; this bound only guards against a reply
        // that never comes (a lost reader task).
        match tokio::time::timeout(timeout + Duration::from_secs(1), pending.rx).await {
            Ok(Ok(result)) => result,
            _ => {
                self.started().waiters.lock().remove(&request);
                Err(CallFailure::new(
                    errors::TIMEOUT,
                    format!("no answer from \"{procedure}\""),
                ))
            }
        }
    }
}

async fn read_replies(
    mut rx: crate::peer::OutboundRx,
    waiters: Arc<Waiters>,
    events: Option<mpsc::Sender<InternalEvent>>,
    invocations: Option<mpsc::Sender<InternalInvocation>>,
) {
    let mut dropped = 0u64;
    while let Some(item) = rx.recv().await {
        let Outgoing::Frame(frame) = item else {
            continue;
        };
        let (request, result) = match Message::decode(Serializer::MsgPack, &frame) {
            Ok(Message::Invocation {
                request,
                registration,
                details,
                payload,
            }) => {
                let Some(invocations) = &invocations else {
                    continue;
                };
                let (args, kwargs) = decode(&payload);
                let inv = InternalInvocation {
                    request,
                    registration,
                    details,
                    args,
                    kwargs,
                };
                // The registration's concurrency cap bounds what is in
                // flight, so the channel (as large) does not overflow.
                if invocations.send(inv).await.is_err() {
                    return;
                }
                continue;
            }
            Ok(Message::Event {
                subscription,
                publication,
                details,
                payload,
            }) => {
                let Some(events) = &events else { continue };
                let (args, kwargs) = decode(&payload);
                let event = InternalEvent {
                    subscription,
                    publication,
                    details,
                    args,
                    kwargs,
                };
                if events.try_send(event).is_err() {
                    dropped += 1;
                    if dropped.is_power_of_two() {
                        tracing::warn!(dropped, "internal subscriber is behind: events dropped");
                    }
                }
                continue;
            }
            Ok(Message::Result {
                request,
                details,
                payload,
            }) => {
                if details.get_bool("progress") == Some(true) {
                    if let Some(Waiter {
                        progress: Some(f), ..
                    }) = waiters.lock().get(&request)
                    {
                        f(&details);
                    }
                    continue;
                }
                let (args, kwargs) = decode(&payload);
                (request, Ok(Reply { args, kwargs }))
            }
            Ok(Message::Error {
                request,
                error,
                payload,
                details,
                ..
            }) => {
                // The Dealer marks its own "no callee took it" answers; a
                // callee's ERROR reaches us with the Dealer's empty details.
                let unserved = details.get_bool(crate::dealer::UNSERVED) == Some(true);
                let (args, kwargs) = decode(&payload);
                let message = args
                    .first()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                (
                    request,
                    Err(CallFailure {
                        error,
                        message,
                        args,
                        kwargs,
                        unserved,
                    }),
                )
            }
            _ => continue,
        };
        if let Some(w) = waiters.lock().remove(&request) {
            let _ = w.tx.send(result);
        }
    }
}
