//! The Dealer: registrations (exact, prefix and wildcard; shared among
//! callees under an invocation policy, each callee with an optional
//! concurrency cap) and the life of a call: CALL → (wait for a free callee) →
//! INVOCATION → progressive YIELDs → YIELD/ERROR → RESULT/ERROR, with
//! timeouts, CANCEL in its three modes, and either side leaving.
//!
//! All state sits behind one mutex held only for bookkeeping: messages are
//! collected while it is held and encoded and queued after it is released
//! (see [`Out`]). Every path that ends a call goes through
//! `State::finish`, which frees every index entry the call had.

mod registry;
mod timer;

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use switchyard_proto::message::code;
use switchyard_proto::{errors, Dict, Message, Payload, Value};

use registry::{CalleeEntry, Registration};
pub use registry::{InvokePolicy, RegisterOptions};
use timer::{Expire, Timer};

use crate::backplane::{Backplane, CallRequest};
use crate::details::Disclosure;
use crate::session::{OpError, Session};
use crate::unused_random_id;
use crate::uri_index::{MatchPolicy, UriIndex};

/// The advanced features the Dealer announces in WELCOME
/// (`roles.dealer.features`): what it implements, and nothing more.
pub const FEATURES: &[&str] = &[
    "caller_identification",
    "call_timeout",
    "call_canceling",
    "progressive_call_results",
    "progressive_call_invocations",
    "pattern_based_registration",
    "shared_registration",
    "registration_meta_api",
    "session_meta_api",
    "testament_meta_api",
];

/// Realm settings the Dealer applies.
#[derive(Clone, Debug)]
pub struct DealerConfig {
    /// Whether callees learn who calls them.
    pub disclose_caller: Disclosure,
    /// Calls that may wait per registration when every callee is at its
    /// concurrency cap; one more is refused with `wamp.error.no_available_callee`.
    pub call_queue_limit: usize,
    /// Calls one caller session may have in flight (0: no limit); one more
    /// is refused with `switchyard.error.limit_exceeded`. The router's own
    /// sessions are not limited.
    pub max_calls_in_flight_per_session: usize,
    /// Bytes of arguments the calls waiting in registration queues may hold
    /// together (0: no limit); a CALL that would wait beyond is refused with
    /// `switchyard.error.limit_exceeded`.
    pub max_queued_call_bytes: usize,
    /// Where refusals by a limit are counted.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// The other nodes of a cluster (None: a single node).
    pub backplane: Option<Arc<dyn Backplane>>,
}

impl Default for DealerConfig {
    fn default() -> Self {
        DealerConfig {
            disclose_caller: Disclosure::OnRequest,
            call_queue_limit: 1000,
            max_calls_in_flight_per_session: 1000,
            max_queued_call_bytes: 64 << 20,
            metrics: None,
            backplane: None,
        }
    }
}

/// A change the registration meta API publishes.
#[derive(Clone, Debug)]
pub enum RegistrationEvent {
    Created {
        session: u64,
        info: RegistrationInfo,
    },
    Registered {
        session: u64,
        registration: u64,
    },
    Unregistered {
        session: u64,
        registration: u64,
    },
    Deleted {
        session: u64,
        registration: u64,
    },
}

/// What the meta API tells about a registration.
#[derive(Clone, Debug)]
pub struct RegistrationInfo {
    pub id: u64,
    pub uri: String,
    pub policy: MatchPolicy,
    pub invoke: InvokePolicy,
    pub created: SystemTime,
    pub callees: Vec<u64>,
}

/// Sizes of the Dealer's tables (a finished call leaves none behind).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DealerStats {
    pub registrations: usize,
    pub calls: usize,
    pub queued: usize,
    pub in_flight: u64,
    pub by_invocation: usize,
    pub by_request: usize,
    pub deadlines: usize,
}

/// Outcome of a YIELD or ERROR from a callee.
pub enum Answer {
    Delivered,
    /// No such invocation is pending (already answered, canceled, timed out
    /// or its caller left).
    Unknown,
}

/// Outcome of a CALL.
#[derive(Debug, PartialEq, Eq)]
pub enum CallOutcome {
    /// Routed, queued or answered with ERROR.
    Handled,
    /// A continuation of a progressive call that already ended: dropped, as
    /// the spec asks.
    Discarded,
    /// The session broke the protocol; the connection aborts it.
    Violation(String),
}

enum Target {
    /// Waiting in its registration's queue for a callee with capacity.
    Queued { payload: Payload },
    /// Sent to a callee as INVOCATION `invocation`.
    Invoked {
        callee: Arc<Session>,
        invocation: u64,
        /// INVOCATION.Details, frozen for progressive continuations.
        details: Dict,
    },
}

struct Call {
    caller: Arc<Session>,
    request: u64,
    procedure: Arc<str>,
    registration: u64,
    receive_progress: bool,
    disclose_me: bool,
    /// CALL.Options.timeout, if non-zero.
    timeout: Option<Duration>,
    target: Target,
    /// The entry of this call in `State::deadlines`, if the Dealer times it.
    deadline: Option<Instant>,
    /// CANCEL mode `kill` sent INTERRUPT; the callee's answer ends the call.
    killing: bool,
    /// A progressive invocation whose caller is still sending chunks.
    streaming: bool,
    /// When the Dealer took the CALL (`switchyard_routing_latency_seconds`).
    received: Instant,
    /// What a router-owned caller hands the callee in INVOCATION.Details
    /// (its CALL options named `x_switchyard_*`, e.g. a queue job's id).
    router_details: Option<Box<Dict>>,
}

/// CALL options of a router-owned caller under this prefix go on to the
/// callee in INVOCATION.Details (a client's are ignored: a callee can trust
/// them to come from the router).
pub const ROUTER_DETAILS_PREFIX: &str = "x_switchyard_";

/// The `x_switchyard_*` options of a router-owned caller's CALL, if any.
fn router_details(caller: &Session, options: &Dict) -> Option<Box<Dict>> {
    if !caller.router_owned {
        return None;
    }
    let mut d = Dict::new();
    for (k, v) in &options.0 {
        if k.starts_with(ROUTER_DETAILS_PREFIX) {
            d.insert(k.as_str(), v.clone());
        }
    }
    (!d.0.is_empty()).then(|| Box::new(d))
}

#[derive(Default)]
struct State {
    index: UriIndex<u64>,
    regs: FxHashMap<u64, Registration>,
    by_callee: FxHashMap<u64, Vec<u64>>,
    calls: FxHashMap<u64, Call>,
    /// Bytes of the payloads of calls not yet handed to a callee.
    queued_call_bytes: usize,
    /// (callee session, INVOCATION request id) → call.
    by_invocation: FxHashMap<(u64, u64), u64>,
    /// (caller session, CALL request id) → call.
    by_request: FxHashMap<(u64, u64), u64>,
    deadlines: BTreeSet<(Instant, u64)>,
    next_call: u64,
}

/// Work collected under the lock, done after it is released. (A `Vec`: its
/// items are large, and moving an inline array of them costs more than the
/// allocation.)
type Outbox = Vec<Out>;

/// An item of work collected under the lock.
enum Out {
    /// A message to the caller answering CALL `request` (RESULT or ERROR);
    /// if it cannot be encoded for the caller, the caller gets that ERROR.
    Reply {
        caller: Arc<Session>,
        request: u64,
        msg: Message,
        /// An ERROR the Dealer makes because no callee took the call (none
        /// registered, none with capacity, or the one picked left before it
        /// got the INVOCATION): see [`UNSERVED`].
        unserved: bool,
    },
    /// An INVOCATION for call `call`; if it cannot be delivered, the call
    /// ends with an ERROR to its caller.
    Invoke {
        call: u64,
        callee: Arc<Session>,
        msg: Message,
    },
    /// An INTERRUPT (nothing to do if it cannot be sent).
    Interrupt {
        callee: Arc<Session>,
        invocation: u64,
        mode: &'static str,
        reason: &'static str,
    },
}

/// INTERRUPT for the callee of an invoked call, if it announced
/// `call_canceling` (no other callee may get one).
fn interrupt_of(target: &Target, mode: &'static str, reason: &'static str) -> Option<Out> {
    match target {
        Target::Invoked {
            callee, invocation, ..
        } if callee.features.callee_call_canceling => Some(Out::Interrupt {
            callee: callee.clone(),
            invocation: *invocation,
            mode,
            reason,
        }),
        _ => None,
    }
}

fn call_error(request: u64, error: String, payload: Payload) -> Message {
    Message::Error {
        request_type: code::CALL,
        request,
        details: Dict::new(),
        error,
        payload,
    }
}

fn error_reply(caller: &Arc<Session>, request: u64, (uri, message): OpError) -> Out {
    Out::Reply {
        caller: caller.clone(),
        request,
        msg: Message::Error {
            request_type: code::CALL,
            request,
            details: Dict::new(),
            error: uri.to_string(),
            payload: Payload::message(message),
        },
        unserved: false,
    }
}

/// Like [`error_reply`], for a call no callee took: the Dealer answers
/// because no callee exists or can take it now (see [`UNSERVED`]).
fn unserved_reply(caller: &Arc<Session>, request: u64, e: OpError) -> Out {
    let mut out = error_reply(caller, request, e);
    if let Out::Reply { unserved, .. } = &mut out {
        *unserved = true;
    }
    out
}

/// `ERROR.Details` key, `true` when the Dealer itself answered a CALL
/// because no callee took it (no registration, every callee at its limit
/// with the wait queue full, the last callee gone while the call waited, or
/// the picked callee gone before the INVOCATION reached it), as opposed to
/// an ERROR a callee sent (which the Dealer forwards with empty details, so
/// a callee cannot forge this). Set only for router-owned callers (see
/// [`crate::internal`]): what a client receives is unchanged. Whoever
/// answered, not the error URI, tells the two apart: a callee may answer
/// `wamp.error.no_such_procedure` too.
pub const UNSERVED: &str = "switchyard_unserved";

/// How a call ends: [`State::end`] turns it into the caller's reply.
enum End {
    /// The callee's final YIELD.
    Result(Payload),
    /// The callee's ERROR answering the INVOCATION.
    CalleeError { error: String, payload: Payload },
    /// The Dealer ends the call (cancel, timeout, callee gone, ...).
    Router(OpError),
    /// The Dealer ends a call no callee took (see [`UNSERVED`]).
    Unserved(OpError),
}

/// Receives registration meta events, in the order the Dealer's state
/// changed (it is called with the Dealer's lock held, so it must not call
/// back into the Dealer).
pub type MetaSink = Box<dyn Fn(Vec<RegistrationEvent>) + Send + Sync>;

struct Inner {
    state: Mutex<State>,
    config: DealerConfig,
    timer: Timer,
    meta: MetaSink,
}

pub struct Dealer {
    inner: Arc<Inner>,
}

impl Default for Dealer {
    fn default() -> Self {
        Dealer::new(DealerConfig::default(), Box::new(|_| {}))
    }
}

impl Drop for Dealer {
    fn drop(&mut self) {
        self.inner.timer.stop();
    }
}

impl Dealer {
    /// A Dealer that reports registration changes to `meta`.
    pub fn new(config: DealerConfig, meta: MetaSink) -> Self {
        Dealer {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                config,
                timer: Timer::new(),
                meta,
            }),
        }
    }

    /// Adds `callee` to the registration of (`procedure`, match policy),
    /// creating it if needed. `on_registered(id)` (which sends REGISTERED)
    /// runs before the meta events and before any queued call is handed to
    /// the new callee.
    pub fn register(
        &self,
        callee: &Arc<Session>,
        procedure: &str,
        opts: &RegisterOptions,
        on_registered: impl FnOnce(u64),
    ) -> Result<(), OpError> {
        let mut out = Outbox::new();
        {
            let mut events = Vec::new();
            let mut guard = self.inner.state.lock();
            let st = &mut *guard;
            let entry = CalleeEntry {
                session: callee.clone(),
                concurrency: opts.concurrency,
                in_flight: 0,
                forward_timeout: opts.forward_timeout,
                disclose_caller: opts.disclose_caller,
            };
            let id = match st.index.get(procedure, opts.policy).copied() {
                Some(id) => {
                    let Some(reg) = st.regs.get_mut(&id) else {
                        return Err(internal("registration index out of step"));
                    };
                    let what = format!("{} \"{procedure}\"", policy_noun(opts.policy));
                    if reg.callee_index(callee.id).is_some() {
                        return Err((
                            errors::PROCEDURE_ALREADY_EXISTS,
                            format!("this session already registered {what}"),
                        ));
                    }
                    if reg.invoke == InvokePolicy::Single {
                        return Err((
                            errors::PROCEDURE_ALREADY_EXISTS,
                            format!("{what} is already registered by another session (invocation policy \"single\"; register with a shared policy such as \"roundrobin\" to add callees)"),
                        ));
                    }
                    if reg.invoke != opts.invoke {
                        return Err((
                            errors::PROCEDURE_ALREADY_EXISTS,
                            format!(
                                "{what} is registered with invocation policy \"{}\"; another callee must use the same policy, not \"{}\"",
                                reg.invoke.as_str(),
                                opts.invoke.as_str()
                            ),
                        ));
                    }
                    reg.callees.push(entry);
                    events.push(RegistrationEvent::Registered {
                        session: callee.id,
                        registration: id,
                    });
                    st.by_callee.entry(callee.id).or_default().push(id);
                    st.drain_queue(id, &self.inner.config, &mut out);
                    id
                }
                None => {
                    let id = unused_random_id(|id| st.regs.contains_key(&id));
                    let reg = Registration {
                        id,
                        uri: Arc::from(procedure),
                        policy: opts.policy,
                        invoke: opts.invoke,
                        created: SystemTime::now(),
                        callees: vec![entry],
                        next: 0,
                        queue: VecDeque::new(),
                    };
                    events.push(RegistrationEvent::Created {
                        session: callee.id,
                        info: info_of(&reg),
                    });
                    events.push(RegistrationEvent::Registered {
                        session: callee.id,
                        registration: id,
                    });
                    st.index.insert(procedure, opts.policy, id);
                    st.regs.insert(id, reg);
                    st.by_callee.entry(callee.id).or_default().push(id);
                    id
                }
            };
            on_registered(id);
            (self.inner.meta)(events);
        }
        self.inner.flush(out);
        Ok(())
    }

    /// Removes `callee` from `registration`. Its calls in flight may still
    /// be answered; calls waiting for a callee fail if it was the last one.
    pub fn unregister(&self, callee: &Session, registration: u64) -> Result<(), OpError> {
        let mut events = Vec::new();
        let mut out = Outbox::new();
        {
            let mut st = self.inner.state.lock();
            let found = st
                .regs
                .get(&registration)
                .and_then(|r| r.callee_index(callee.id));
            if found.is_none() {
                return Err((
                    errors::NO_SUCH_REGISTRATION,
                    format!("session {} has no registration {registration}", callee.id),
                ));
            }
            if let Some(list) = st.by_callee.get_mut(&callee.id) {
                list.retain(|r| *r != registration);
                if list.is_empty() {
                    st.by_callee.remove(&callee.id);
                }
            }
            st.detach(callee.id, registration, &mut events, &mut out, None);
            (self.inner.meta)(events);
        }
        self.inner.flush(out);
        Ok(())
    }

    /// Removes callee `session` from `registration` on the router's own
    /// initiative (a cluster's race for a single registration lost to an
    /// older one on another node): as [`Dealer::unregister`] (its calls in
    /// flight may still be answered), logged with `message`. A callee that
    /// announced `registration_revocation` gets `[UNREGISTERED, 0,
    /// {registration, reason, message}]` (spec "Registration Revocation").
    pub fn revoke(
        &self,
        callee: &Session,
        registration: u64,
        reason: &str,
        message: &str,
    ) -> Result<(), OpError> {
        self.unregister(callee, registration)?;
        if callee.features.callee_registration_revocation {
            callee.send(&Message::Unregistered {
                request: 0,
                details: Dict::new()
                    .with("registration", registration)
                    .with("reason", reason)
                    .with("message", message),
            });
        }
        tracing::info!(
            session = callee.id,
            registration,
            reason,
            "registration revoked: {}",
            crate::logsafe::Clip(message)
        );
        Ok(())
    }

    /// Handles a CALL. `is_new` is false for a request id at or below the
    /// caller's watermark (spec "Progressive Call Invocations"): such a CALL
    /// can only continue a progressive call.
    pub fn call(
        &self,
        caller: &Arc<Session>,
        request: u64,
        procedure: &str,
        options: &Dict,
        payload: Payload,
        is_new: bool,
    ) -> CallOutcome {
        let progress = options.get_bool("progress").unwrap_or(false);
        let mut out = Outbox::new();
        let outcome = {
            let mut guard = self.inner.state.lock();
            let st = &mut *guard;
            if let Some(&cid) = st.by_request.get(&(caller.id, request)) {
                st.continue_call(cid, request, progress, payload, &mut out)
            } else if !is_new {
                CallOutcome::Discarded
            } else {
                match st.new_call(
                    &self.inner.config,
                    caller,
                    request,
                    procedure,
                    options,
                    payload,
                    &mut out,
                ) {
                    Ok(()) => CallOutcome::Handled,
                    Err(Rejection::Error(e)) => {
                        out.push(error_reply(caller, request, e));
                        CallOutcome::Handled
                    }
                    Err(Rejection::NoCallee(e)) => {
                        out.push(unserved_reply(caller, request, e));
                        CallOutcome::Handled
                    }
                    Err(Rejection::Violation(v)) => CallOutcome::Violation(v),
                }
            }
        };
        let timed = matches!(options.get("timeout"), Some(Value::UInt(ms)) if *ms > 0);
        self.inner.flush(out);
        if timed {
            self.inner.timer.rearm(&self.inner);
        }
        outcome
    }

    /// A YIELD from a callee: a progressive RESULT, or the final one.
    pub fn yield_result(
        &self,
        callee: &Session,
        invocation: u64,
        options: &Dict,
        payload: Payload,
    ) -> Answer {
        let progress = options.get_bool("progress").unwrap_or(false);
        let mut out = Outbox::new();
        {
            let mut guard = self.inner.state.lock();
            let st = &mut *guard;
            let Some(&cid) = st.by_invocation.get(&(callee.id, invocation)) else {
                return Answer::Unknown;
            };
            if progress {
                let Some(call) = st.calls.get(&cid) else {
                    return Answer::Unknown;
                };
                // The caller's CALL.Options.receive_progress alone decides:
                // a callee may send progressive YIELDs without announcing
                // progressive_call_results (wampy.js never announces it).
                if !call.receive_progress || call.killing {
                    tracing::debug!(
                        session = callee.id,
                        invocation,
                        "progressive YIELD dropped: {}",
                        if call.killing {
                            "the caller canceled the call (mode kill)"
                        } else {
                            "the caller did not ask for progress (CALL.Options.receive_progress)"
                        }
                    );
                    return Answer::Delivered;
                }
                let (caller, request) = (call.caller.clone(), call.request);
                // The timeout runs between results.
                if let Some(timeout) = call.timeout {
                    if call.deadline.is_some() {
                        st.set_deadline(cid, Some(Instant::now() + timeout));
                    }
                }
                out.push(Out::Reply {
                    caller,
                    request,
                    msg: Message::Result {
                        request,
                        details: Dict::new().with("progress", true),
                        payload,
                    },
                    unserved: false,
                });
            } else if st
                .end(cid, &self.inner.config, &mut out, End::Result(payload))
                .is_none()
            {
                return Answer::Unknown;
            }
        }
        self.inner.flush(out);
        Answer::Delivered
    }

    /// An ERROR from a callee answering an INVOCATION: forwarded to the
    /// caller as ERROR for its CALL, with the same URI, args and kwargs.
    pub fn yield_error(
        &self,
        callee: &Session,
        invocation: u64,
        error: String,
        payload: Payload,
    ) -> Answer {
        let mut out = Outbox::new();
        {
            let mut st = self.inner.state.lock();
            let Some(&cid) = st.by_invocation.get(&(callee.id, invocation)) else {
                return Answer::Unknown;
            };
            let end = End::CalleeError { error, payload };
            if st.end(cid, &self.inner.config, &mut out, end).is_none() {
                return Answer::Unknown;
            }
        }
        self.inner.flush(out);
        Answer::Delivered
    }

    /// A CANCEL from a caller (spec "Call Canceling"). A call the Dealer no
    /// longer knows (answered already) is ignored.
    pub fn cancel(&self, caller: &Session, request: u64, options: &Dict) {
        let requested = options.get_str("mode").unwrap_or("killnowait");
        let mut out = Outbox::new();
        {
            let mut guard = self.inner.state.lock();
            let st = &mut *guard;
            let Some(&cid) = st.by_request.get(&(caller.id, request)) else {
                tracing::debug!(
                    session = caller.id,
                    request,
                    "CANCEL for a call that is not pending: ignored"
                );
                return;
            };
            let Some(call) = st.calls.get_mut(&cid) else {
                return;
            };
            // A callee that does not understand INTERRUPT (or a call no
            // callee has yet) can only be skipped.
            let mode = match interrupt_of(&call.target, "kill", errors::CANCELED) {
                Some(_) => requested,
                None => "skip",
            };
            if mode == "kill" {
                if !call.killing {
                    call.killing = true;
                    out.extend(interrupt_of(&call.target, "kill", errors::CANCELED));
                }
            } else {
                let message = format!("call to \"{}\" canceled by the caller", call.procedure);
                let end = End::Router((errors::CANCELED, message));
                let Some(call) = st.end(cid, &self.inner.config, &mut out, end) else {
                    return;
                };
                if mode == "killnowait" {
                    out.extend(interrupt_of(&call.target, "killnowait", errors::CANCELED));
                }
            }
        }
        self.inner.flush(out);
    }

    /// A session left: its registrations go (callers of its calls in flight
    /// get `wamp.error.canceled`), and the calls it made are dropped (their
    /// callees get INTERRUPT `killnowait` if they understand it).
    pub fn remove_session(&self, session: &Session) {
        self.remove_callee_session(session, None);
    }

    /// Like [`Dealer::remove_session`], for a session this node lost
    /// without it leaving (a cluster's proxy of a callee on a node that
    /// died): callers of its calls in flight get `wamp.error.canceled` with
    /// `reason` as the message.
    pub fn remove_lost_session(&self, session: &Session, reason: &str) {
        self.remove_callee_session(session, Some(reason));
    }

    fn remove_callee_session(&self, session: &Session, lost: Option<&str>) {
        let mut events = Vec::new();
        let mut out = Outbox::new();
        {
            let mut guard = self.inner.state.lock();
            let st = &mut *guard;
            for reg in st.by_callee.remove(&session.id).unwrap_or_default() {
                st.detach(session.id, reg, &mut events, &mut out, lost);
            }
            (self.inner.meta)(std::mem::take(&mut events));
            // Only a session with calls pending (as caller or callee) needs
            // the scan over the call table.
            let (served, made): (Vec<u64>, Vec<u64>) = if session.dealer_calls() == 0 {
                (Vec::new(), Vec::new())
            } else {
                let mut served = Vec::new();
                let mut made = Vec::new();
                for (cid, call) in &st.calls {
                    if call.caller.id == session.id {
                        made.push(*cid);
                    } else if matches!(&call.target, Target::Invoked { callee, .. } if callee.id == session.id)
                    {
                        served.push(*cid);
                    }
                }
                (served, made)
            };
            let session = session.id;
            for cid in served {
                let Some(procedure) = st.calls.get(&cid).map(|c| c.procedure.clone()) else {
                    continue;
                };
                let message = match lost {
                    Some(reason) => format!("call to \"{procedure}\" canceled: {reason}"),
                    None => format!("callee left: session {session} serving \"{procedure}\" disconnected before answering"),
                };
                let end = End::Router((errors::CANCELED, message));
                st.end(cid, &self.inner.config, &mut out, end);
            }
            for cid in made {
                if let Some(call) = st.finish(cid, &self.inner.config, &mut out) {
                    out.extend(interrupt_of(&call.target, "killnowait", errors::CANCELED));
                }
            }
        }
        self.inner.flush(out);
    }

    /// Ends the calls in flight to callee `session` with
    /// `wamp.error.canceled` ("call to ... canceled: `reason`"); its
    /// registrations stay. What a cluster does when the messages to or
    /// from a remote callee's node may have been lost. The number ended.
    pub fn fail_calls_to(&self, session: &Session, reason: &str) -> usize {
        if session.dealer_calls() == 0 {
            return 0;
        }
        let mut out = Outbox::new();
        let served = {
            let mut guard = self.inner.state.lock();
            let st = &mut *guard;
            let served: Vec<u64> = st
                .calls
                .iter()
                .filter(|(_, call)| {
                    matches!(&call.target, Target::Invoked { callee, .. } if callee.id == session.id)
                })
                .map(|(cid, _)| *cid)
                .collect();
            for cid in &served {
                let Some(procedure) = st.calls.get(cid).map(|c| c.procedure.clone()) else {
                    continue;
                };
                let message = format!("call to \"{procedure}\" canceled: {reason}");
                st.end(
                    *cid,
                    &self.inner.config,
                    &mut out,
                    End::Router((errors::CANCELED, message)),
                );
            }
            served.len()
        };
        self.inner.flush(out);
        served
    }

    /// Registrations `session` holds as a callee.
    pub fn new_registration_over(
        &self,
        procedure: &str,
        policy: MatchPolicy,
        max: usize,
    ) -> Option<usize> {
        let st = self.inner.state.lock();
        let n = st.regs.len();
        (n >= max && st.index.get(procedure, policy).is_none()).then_some(n)
    }

    /// Registrations in the realm (for /metrics).
    pub fn count(&self) -> usize {
        self.inner.state.lock().regs.len()
    }

    /// The options callee `session` registered `registration` with (None
    /// when it does not hold it).
    pub fn callee_options(&self, registration: u64, session: u64) -> Option<RegisterOptions> {
        let st = self.inner.state.lock();
        let reg = st.regs.get(&registration)?;
        let c = &reg.callees[reg.callee_index(session)?];
        Some(RegisterOptions {
            policy: reg.policy,
            invoke: reg.invoke,
            concurrency: c.concurrency,
            forward_timeout: c.forward_timeout,
            disclose_caller: c.disclose_caller,
        })
    }

    /// Registrations `session` holds.
    pub fn session_registrations(&self, session: u64) -> usize {
        self.inner
            .state
            .lock()
            .by_callee
            .get(&session)
            .map_or(0, Vec::len)
    }

    /// Registration ids by match policy (`wamp.registration.list`).
    pub fn list(&self) -> [Vec<u64>; 3] {
        let st = self.inner.state.lock();
        let mut lists: [Vec<u64>; 3] = Default::default();
        for reg in st.regs.values() {
            let slot = match reg.policy {
                MatchPolicy::Exact => 0,
                MatchPolicy::Prefix => 1,
                MatchPolicy::Wildcard => 2,
            };
            lists[slot].push(reg.id);
        }
        lists
    }

    /// The registration of exactly (`uri`, `policy`) (`wamp.registration.lookup`).
    pub fn lookup(&self, uri: &str, policy: MatchPolicy) -> Option<u64> {
        self.inner.state.lock().index.get(uri, policy).copied()
    }

    /// The registration a call to `uri` would use (`wamp.registration.match`).
    pub fn best_match(&self, uri: &str) -> Option<u64> {
        self.inner
            .state
            .lock()
            .index
            .best_match(uri)
            .map(|(_, id)| *id)
    }

    /// The session serving call `request` of session `caller`, once the
    /// call is invoked (not while it waits in a registration's queue).
    pub fn callee_of(&self, caller: u64, request: u64) -> Option<u64> {
        let st = self.inner.state.lock();
        let cid = st.by_request.get(&(caller, request))?;
        match &st.calls.get(cid)?.target {
            Target::Invoked { callee, .. } => Some(callee.id),
            Target::Queued { .. } => None,
        }
    }

    pub fn registration(&self, id: u64) -> Option<RegistrationInfo> {
        self.inner.state.lock().regs.get(&id).map(info_of)
    }

    pub fn stats(&self) -> DealerStats {
        let st = self.inner.state.lock();
        DealerStats {
            registrations: st.regs.len(),
            calls: st.calls.len(),
            queued: st.regs.values().map(|r| r.queue.len()).sum(),
            in_flight: st
                .regs
                .values()
                .flat_map(|r| r.callees.iter())
                .map(|c| u64::from(c.in_flight))
                .sum(),
            by_invocation: st.by_invocation.len(),
            by_request: st.by_request.len(),
            deadlines: st.deadlines.len(),
        }
    }
}

enum Rejection {
    Error(OpError),
    /// No callee can take the call: none registered, or all busy and no
    /// room to wait (answered as [`unserved_reply`]).
    NoCallee(OpError),
    Violation(String),
}

impl From<OpError> for Rejection {
    fn from(e: OpError) -> Self {
        Rejection::Error(e)
    }
}

fn internal(what: &str) -> OpError {
    tracing::error!("dealer: {what}");
    (errors::INVALID_ARGUMENT, format!("internal error: {what}"))
}

fn policy_noun(policy: MatchPolicy) -> &'static str {
    match policy {
        MatchPolicy::Exact => "procedure",
        MatchPolicy::Prefix => "prefix pattern",
        MatchPolicy::Wildcard => "wildcard pattern",
    }
}

fn info_of(reg: &Registration) -> RegistrationInfo {
    RegistrationInfo {
        id: reg.id,
        uri: reg.uri.to_string(),
        policy: reg.policy,
        invoke: reg.invoke,
        created: reg.created,
        callees: reg.callees.iter().map(|c| c.session.id).collect(),
    }
}

impl State {
    #[allow(clippy::too_many_arguments)]
    fn new_call(
        &mut self,
        config: &DealerConfig,
        caller: &Arc<Session>,
        request: u64,
        procedure: &str,
        options: &Dict,
        payload: Payload,
        out: &mut Outbox,
    ) -> Result<(), Rejection> {
        let progress = options.get_bool("progress").unwrap_or(false);
        let disclose_me = options.get_bool("disclose_me").unwrap_or(false);
        if progress && !caller.features.caller_progressive_call_invocations {
            return Err(Rejection::Violation(
                "CALL.Options.progress is set, but the session did not announce the caller feature progressive_call_invocations in HELLO".into(),
            ));
        }
        if disclose_me && config.disclose_caller == Disclosure::Never {
            return Err(Rejection::Error((
                errors::OPTION_DISALLOWED_DISCLOSE_ME,
                "this realm does not disclose callers to callees (disclose_caller = \"never\")"
                    .into(),
            )));
        }
        let max = config.max_calls_in_flight_per_session;
        if max > 0 && !caller.router_owned && caller.calls_as_caller() >= max {
            if let Some(m) = &config.metrics {
                crate::metrics::Metrics::inc(&m.limit_exceeded);
            }
            tracing::info!(
                session = caller.id,
                max,
                "CALL refused: calls in flight limit"
            );
            return Err(Rejection::Error((
                crate::errors::LIMIT_EXCEEDED,
                format!(
                    "a session may have at most {max} calls in flight in this realm (max_calls_in_flight_per_session); wait for results before calling again"
                ),
            )));
        }
        let found = if caller.exact_calls_only {
            self.index.get(procedure, MatchPolicy::Exact).copied()
        } else {
            self.index.best_match(procedure).map(|(_, id)| *id)
        };
        let Some(reg_id) = found else {
            if let Some(backplane) = &config.backplane {
                let call = CallRequest {
                    caller,
                    request,
                    procedure,
                    options,
                    payload: &payload,
                };
                if backplane.call(&call) {
                    return Ok(());
                }
            }
            let how = if caller.exact_calls_only {
                " exactly (this call skips prefix and wildcard registrations)"
            } else {
                ""
            };
            return Err(Rejection::NoCallee((
                errors::NO_SUCH_PROCEDURE,
                format!("no callee registered procedure \"{procedure}\"{how}"),
            )));
        };
        let Some(reg) = self.regs.get_mut(&reg_id) else {
            return Err(internal("registration index out of step").into());
        };
        let timeout = match options.get("timeout") {
            Some(Value::UInt(ms)) if *ms > 0 => Some(Duration::from_millis(*ms)),
            _ => None,
        };
        let picked = reg.pick();
        if progress {
            let Some(i) = picked else {
                return Err(Rejection::NoCallee((
                    errors::NO_AVAILABLE_CALLEE,
                    format!("every callee of \"{procedure}\" is at its concurrency limit (progressive invocations are not queued)"),
                )));
            };
            if !reg.callees[i]
                .session
                .features
                .callee_progressive_call_invocations
            {
                return Err(Rejection::Error((
                    errors::FEATURE_NOT_SUPPORTED,
                    format!("the callee of \"{procedure}\" does not support progressive call invocations (with call canceling)"),
                )));
            }
        }
        let len = payload.byte_len();
        let max = config.max_queued_call_bytes;
        if picked.is_none() && max > 0 && self.queued_call_bytes.saturating_add(len) > max {
            if let Some(m) = &config.metrics {
                crate::metrics::Metrics::inc(&m.limit_exceeded);
            }
            tracing::warn!(
                session = caller.id,
                max,
                "CALL refused: calls waiting for a callee hold {} bytes (max_queued_call_bytes)",
                self.queued_call_bytes
            );
            return Err(Rejection::NoCallee((
                crate::errors::LIMIT_EXCEEDED,
                format!(
                    "every callee of \"{procedure}\" is busy and the calls waiting for callees in this realm hold {} bytes; \
                     this one ({len} bytes) would exceed the limit of {max} bytes (max_queued_call_bytes)",
                    self.queued_call_bytes
                ),
            )));
        }
        if picked.is_none() && reg.queue.len() >= config.call_queue_limit {
            return Err(Rejection::NoCallee((
                errors::NO_AVAILABLE_CALLEE,
                format!(
                    "all {} callees of \"{procedure}\" are at their concurrency limit and {} calls are already waiting",
                    reg.callees.len(),
                    reg.queue.len()
                ),
            )));
        }
        self.next_call += 1;
        let cid = self.next_call;
        let call = Call {
            caller: caller.clone(),
            request,
            procedure: if reg.policy == MatchPolicy::Exact {
                reg.uri.clone()
            } else {
                Arc::from(procedure)
            },
            registration: reg_id,
            receive_progress: options.get_bool("receive_progress").unwrap_or(false),
            disclose_me,
            timeout,
            target: Target::Queued { payload },
            deadline: None,
            killing: false,
            streaming: progress,
            received: Instant::now(),
            router_details: router_details(caller, options),
        };
        self.calls.insert(cid, call);
        self.queued_call_bytes += len;
        self.by_request.insert((caller.id, request), cid);
        caller.call_started();
        caller.caller_call_started();
        if let Some(t) = timeout {
            self.set_deadline(cid, Some(Instant::now() + t));
        }
        match picked {
            Some(i) => {
                if let Some(o) = self.assign(cid, i, config) {
                    out.push(o);
                }
            }
            None => {
                if let Some(reg) = self.regs.get_mut(&reg_id) {
                    reg.queue.push_back(cid);
                }
            }
        }
        Ok(())
    }

    /// A CALL whose request id belongs to a call in progress: the next chunk
    /// of a progressive invocation, or a protocol violation.
    fn continue_call(
        &mut self,
        cid: u64,
        request: u64,
        progress: bool,
        payload: Payload,
        out: &mut Outbox,
    ) -> CallOutcome {
        let Some(call) = self.calls.get_mut(&cid) else {
            return CallOutcome::Discarded;
        };
        if !call.streaming {
            return CallOutcome::Violation(format!(
                "CALL reuses request id {request} of a call still in progress"
            ));
        }
        if call.killing {
            // The caller canceled (mode kill) and waits for the callee's
            // answer to the INTERRUPT: its later chunks go nowhere.
            if !progress {
                call.streaming = false;
            }
            return CallOutcome::Discarded;
        }
        let Target::Invoked {
            callee,
            invocation,
            details,
        } = &call.target
        else {
            return CallOutcome::Discarded;
        };
        let mut details = details.clone();
        details.0.retain(|(k, _)| k != "progress");
        if progress {
            details.insert("progress", true);
        } else {
            call.streaming = false;
        }
        out.push(Out::Invoke {
            call: cid,
            callee: callee.clone(),
            msg: Message::Invocation {
                request: *invocation,
                registration: call.registration,
                details,
                payload,
            },
        });
        CallOutcome::Handled
    }

    /// Hands a waiting call to callee `idx` of its registration.
    fn assign(&mut self, cid: u64, idx: usize, config: &DealerConfig) -> Option<Out> {
        let call = self.calls.get_mut(&cid)?;
        let reg = self.regs.get_mut(&call.registration)?;
        let entry = reg.callees.get_mut(idx)?;
        let Target::Queued { payload } = std::mem::replace(
            &mut call.target,
            Target::Queued {
                payload: Payload::empty(),
            },
        ) else {
            return None;
        };
        self.queued_call_bytes = self.queued_call_bytes.saturating_sub(payload.byte_len());
        entry.in_flight += 1;
        let callee = entry.session.clone();
        callee.call_started();
        let invocation = callee.peer.next_request_id();
        let mut details = Dict::new();
        if reg.policy != MatchPolicy::Exact {
            details.insert("procedure", &*call.procedure);
        }
        // Whether the callee announced progressive_call_results or not (not
        // every client does, yet they send progressive YIELDs when asked).
        if call.receive_progress {
            details.insert("receive_progress", true);
        }
        let disclose = match config.disclose_caller {
            Disclosure::Always => true,
            // The router's own callees (the queues' API) may always ask.
            Disclosure::Never => callee.router_owned && entry.disclose_caller,
            Disclosure::OnRequest => call.disclose_me || entry.disclose_caller,
        };
        if disclose {
            details.insert("caller", call.caller.id);
            details.insert("caller_authid", call.caller.authid.as_str());
            details.insert("caller_authrole", call.caller.authrole.as_str());
        }
        let mut forwarded = false;
        if let (Some(deadline), true) = (call.deadline, entry.forward_timeout) {
            // What is left of the caller's timeout (all of it, unless the
            // call waited for a free callee), in whole milliseconds rounded up.
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = left.as_micros().div_ceil(1000) as u64;
            details.insert("timeout", ms.max(1));
            forwarded = true;
        }
        if call.streaming {
            details.insert("progress", true);
        }
        if let Some(extra) = &call.router_details {
            for (k, v) in &extra.0 {
                details.insert(k.as_str(), v.clone());
            }
        }
        let msg = Message::Invocation {
            request: invocation,
            registration: reg.id,
            details: details.clone(),
            payload,
        };
        call.target = Target::Invoked {
            callee: callee.clone(),
            invocation,
            details,
        };
        self.by_invocation.insert((callee.id, invocation), cid);
        if forwarded {
            self.set_deadline(cid, None);
        }
        Some(Out::Invoke {
            call: cid,
            callee,
            msg,
        })
    }

    /// Hands waiting calls of `reg_id` to callees with spare capacity.
    fn drain_queue(&mut self, reg_id: u64, config: &DealerConfig, out: &mut Outbox) {
        while let Some(reg) = self.regs.get_mut(&reg_id) {
            if reg.queue.is_empty() {
                break;
            }
            let Some(idx) = reg.pick() else { break };
            let Some(cid) = reg.queue.pop_front() else {
                break;
            };
            if let Some(o) = self.assign(cid, idx, config) {
                out.push(o);
            }
        }
    }

    /// The one exit of a call that answers its caller: ends it (see
    /// [`State::finish`]) and queues the caller's RESULT or ERROR for `how`.
    /// This is where canceling decides the answer, for every path alike: a
    /// call the caller canceled in mode `kill` that ends other than with a
    /// RESULT (the callee's ERROR, whatever its URI, a timeout, the callee
    /// leaving) is answered `wamp.error.canceled`, carrying the callee's
    /// args and kwargs if it sent any; a RESULT that wins the race is
    /// delivered (spec "Call Canceling").
    fn end(&mut self, cid: u64, config: &DealerConfig, out: &mut Outbox, how: End) -> Option<Call> {
        let call = self.finish(cid, config, out)?;
        let request = call.request;
        let unserved = matches!(how, End::Unserved(_)) && !call.killing;
        let msg = match how {
            End::Result(payload) => {
                if let Some(m) = &config.metrics {
                    m.traffic.latency.call.observe(call.received.elapsed());
                }
                Message::Result {
                    request,
                    details: Dict::new(),
                    payload,
                }
            }
            End::CalleeError { error, payload } if call.killing => {
                tracing::debug!(
                    session = call.caller.id,
                    request,
                    error = %crate::logsafe::Clip(&error),
                    "the callee answered the INTERRUPT of a canceled call (mode kill): the caller gets wamp.error.canceled"
                );
                let payload = if payload.args.is_none() && payload.kwargs.is_none() {
                    Payload::message(format!(
                        "call to \"{}\" canceled by the caller",
                        call.procedure
                    ))
                } else {
                    payload
                };
                call_error(request, errors::CANCELED.to_string(), payload)
            }
            End::CalleeError { error, payload } => call_error(request, error, payload),
            End::Router((_, message)) | End::Unserved((_, message)) if call.killing => call_error(
                request,
                errors::CANCELED.to_string(),
                Payload::message(format!(
                    "call to \"{}\" canceled by the caller ({message})",
                    call.procedure
                )),
            ),
            End::Router((uri, message)) | End::Unserved((uri, message)) => {
                call_error(request, uri.to_string(), Payload::message(message))
            }
        };
        out.push(Out::Reply {
            caller: call.caller.clone(),
            request,
            msg,
            unserved,
        });
        Some(call)
    }

    /// Ends a call: removes it and every index entry it had, frees its
    /// callee's slot and hands waiting calls to free callees.
    fn finish(&mut self, cid: u64, config: &DealerConfig, out: &mut Outbox) -> Option<Call> {
        let call = self.calls.remove(&cid)?;
        self.by_request.remove(&(call.caller.id, call.request));
        call.caller.call_ended();
        call.caller.caller_call_ended();
        if let Some(at) = call.deadline {
            self.deadlines.remove(&(at, cid));
        }
        match &call.target {
            Target::Queued { payload } => {
                self.queued_call_bytes = self.queued_call_bytes.saturating_sub(payload.byte_len());
                if let Some(reg) = self.regs.get_mut(&call.registration) {
                    reg.queue.retain(|c| *c != cid);
                }
            }
            Target::Invoked {
                callee, invocation, ..
            } => {
                callee.call_ended();
                self.by_invocation.remove(&(callee.id, *invocation));
                if let Some(reg) = self.regs.get_mut(&call.registration) {
                    if let Some(i) = reg.callee_index(callee.id) {
                        let entry = &mut reg.callees[i];
                        entry.in_flight = entry.in_flight.saturating_sub(1);
                    }
                    self.drain_queue(call.registration, config, out);
                }
            }
        }
        Some(call)
    }

    /// Removes callee `session` from registration `reg_id`; deletes the
    /// registration (and fails its waiting calls) if it was the last callee.
    /// `lost`: why the callee was lost (see [`Dealer::remove_lost_session`]),
    /// for the message of the calls that waited.
    fn detach(
        &mut self,
        session: u64,
        reg_id: u64,
        events: &mut Vec<RegistrationEvent>,
        out: &mut Outbox,
        lost: Option<&str>,
    ) {
        let Some(reg) = self.regs.get_mut(&reg_id) else {
            return;
        };
        let Some(i) = reg.callee_index(session) else {
            return;
        };
        reg.callees.remove(i);
        if reg.next > i {
            reg.next -= 1;
        }
        events.push(RegistrationEvent::Unregistered {
            session,
            registration: reg_id,
        });
        if !reg.callees.is_empty() {
            return;
        }
        let Some(reg) = self.regs.remove(&reg_id) else {
            return;
        };
        self.index.remove(&reg.uri, reg.policy);
        events.push(RegistrationEvent::Deleted {
            session,
            registration: reg_id,
        });
        for cid in reg.queue {
            // The registration is gone, so finish() frees no slot.
            if let Some(call) = self.calls.remove(&cid) {
                if let Target::Queued { payload } = &call.target {
                    self.queued_call_bytes =
                        self.queued_call_bytes.saturating_sub(payload.byte_len());
                }
                self.by_request.remove(&(call.caller.id, call.request));
                call.caller.call_ended();
                call.caller.caller_call_ended();
                if let Some(at) = call.deadline {
                    self.deadlines.remove(&(at, cid));
                }
                let message = match lost {
                    Some(reason) => format!(
                        "call to \"{}\" canceled while waiting for a callee: {reason}",
                        call.procedure
                    ),
                    None => format!(
                        "the last callee of \"{}\" unregistered while the call was waiting",
                        call.procedure
                    ),
                };
                out.push(unserved_reply(
                    &call.caller,
                    call.request,
                    (errors::CANCELED, message),
                ));
            }
        }
    }

    fn set_deadline(&mut self, cid: u64, at: Option<Instant>) {
        let Some(call) = self.calls.get_mut(&cid) else {
            return;
        };
        if let Some(old) = call.deadline.take() {
            self.deadlines.remove(&(old, cid));
        }
        if let Some(at) = at {
            call.deadline = Some(at);
            self.deadlines.insert((at, cid));
        }
    }
}

impl Inner {
    /// Sends what was collected under the lock, in order. An INVOCATION
    /// that cannot be delivered ends its call with an ERROR to the caller.
    fn flush(&self, mut out: Outbox) {
        while !out.is_empty() {
            let mut again = Outbox::new();
            for item in out.drain(..) {
                self.deliver(item, &mut again);
            }
            out = again;
        }
    }

    /// Sends one item; what a failed INVOCATION leads to goes to `again`.
    fn deliver(&self, item: Out, again: &mut Outbox) {
        match item {
            Out::Reply {
                caller,
                request,
                mut msg,
                unserved,
            } => {
                if !caller.is_alive() {
                    return;
                }
                if unserved && caller.router_owned {
                    if let Message::Error { details, .. } = &mut msg {
                        details.insert(UNSERVED, true);
                    }
                }
                match caller.encode(&msg) {
                    Ok(frame) => {
                        caller.peer.send(frame);
                    }
                    Err(e) => {
                        caller.send_error(code::CALL, request, e);
                    }
                }
            }
            Out::Invoke { call, callee, msg } => {
                let delivered = callee.encode(&msg).and_then(|frame| {
                    if callee.is_alive() && callee.peer.send(frame) {
                        Ok(())
                    } else {
                        Err((
                            errors::CANCELED,
                            format!(
                                "callee session {} left before the call could be delivered",
                                callee.id
                            ),
                        ))
                    }
                });
                if let Err(e) = delivered {
                    let mut st = self.state.lock();
                    // The callee never got the call.
                    st.end(call, &self.config, again, End::Unserved(e));
                }
            }
            Out::Interrupt {
                callee,
                invocation,
                mode,
                reason,
            } => {
                if callee.is_alive() {
                    callee.send(&Message::Interrupt {
                        request: invocation,
                        options: Dict::new().with("mode", mode).with("reason", reason),
                    });
                }
            }
        }
    }
}

impl Expire for Inner {
    fn expire_due(&self, now: Instant) -> Option<Instant> {
        let mut out = Outbox::new();
        let next = {
            let mut guard = self.state.lock();
            let st = &mut *guard;
            while let Some(&(at, cid)) = st.deadlines.first() {
                if at > now {
                    break;
                }
                st.deadlines.pop_first();
                let Some(call) = st.calls.get_mut(&cid) else {
                    continue;
                };
                call.deadline = None;
                let ms = call.timeout.map(|t| t.as_millis()).unwrap_or(0);
                let message = match &call.target {
                    Target::Queued { .. } => format!(
                        "call to \"{}\" timed out after {ms} ms waiting for a callee with spare capacity",
                        call.procedure
                    ),
                    Target::Invoked { .. } => format!(
                        "call to \"{}\" timed out after {ms} ms without a result",
                        call.procedure
                    ),
                };
                let end = End::Router((errors::TIMEOUT, message));
                let Some(call) = st.end(cid, &self.config, &mut out, end) else {
                    continue;
                };
                // A call being killed already got its INTERRUPT.
                if !call.killing {
                    out.extend(interrupt_of(&call.target, "killnowait", errors::TIMEOUT));
                }
            }
            st.deadlines.first().map(|(at, _)| *at)
        };
        self.flush(out);
        next
    }
}
