//! The Dealer: registrations and the CALL → INVOCATION → YIELD/ERROR →
//! RESULT/ERROR round trip, including what happens when either side leaves.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use switchyard_proto::message::code;
use switchyard_proto::{errors, Dict, Message, Payload};

use crate::session::{OpError, Session};
use crate::unused_random_id;

struct Registration {
    procedure: String,
    callee: Arc<Session>,
}

#[derive(Default)]
struct Registry {
    by_procedure: HashMap<String, u64>,
    regs: HashMap<u64, Registration>,
    by_session: HashMap<u64, Vec<u64>>,
}

/// A call the Dealer forwarded and whose answer it awaits.
struct PendingCall {
    caller: Arc<Session>,
    caller_request: u64,
    procedure: String,
}

/// Outcome of a YIELD or ERROR from a callee.
pub enum Answer {
    Delivered,
    /// No such invocation is pending (already answered or its caller left).
    Unknown,
}

#[derive(Default)]
pub struct Dealer {
    registry: RwLock<Registry>,
    /// Pending calls keyed by (callee session, INVOCATION request id).
    calls: Mutex<HashMap<(u64, u64), PendingCall>>,
}

impl Dealer {
    pub fn register(&self, callee: &Arc<Session>, procedure: &str) -> Result<u64, OpError> {
        let mut reg = self.registry.write();
        if reg.by_procedure.contains_key(procedure) {
            return Err((
                errors::PROCEDURE_ALREADY_EXISTS,
                format!("procedure \"{procedure}\" is already registered"),
            ));
        }
        let id = unused_random_id(|id| reg.regs.contains_key(&id));
        reg.by_procedure.insert(procedure.to_string(), id);
        reg.regs.insert(
            id,
            Registration {
                procedure: procedure.to_string(),
                callee: callee.clone(),
            },
        );
        reg.by_session.entry(callee.id).or_default().push(id);
        Ok(id)
    }

    pub fn unregister(&self, callee: &Session, registration: u64) -> Result<(), OpError> {
        let mut reg = self.registry.write();
        let owned = reg
            .regs
            .get(&registration)
            .is_some_and(|r| r.callee.id == callee.id);
        if !owned {
            return Err((
                errors::NO_SUCH_REGISTRATION,
                format!("session {} has no registration {registration}", callee.id),
            ));
        }
        if let Some(r) = reg.regs.remove(&registration) {
            reg.by_procedure.remove(&r.procedure);
        }
        if let Some(list) = reg.by_session.get_mut(&callee.id) {
            list.retain(|r| *r != registration);
        }
        Ok(())
    }

    /// Forwards a CALL to the callee. Errors go back to the caller as ERROR.
    pub fn call(&self, caller: &Arc<Session>, request: u64, procedure: &str, payload: Payload) {
        let found = {
            let reg = self.registry.read();
            reg.by_procedure
                .get(procedure)
                .and_then(|id| reg.regs.get(id).map(|r| (*id, r.callee.clone())))
        };
        let Some((registration, callee)) = found else {
            caller.send_error(
                code::CALL,
                request,
                (
                    errors::NO_SUCH_PROCEDURE,
                    format!("no callee registered procedure \"{procedure}\""),
                ),
            );
            return;
        };
        let invocation = callee.peer.next_request_id();
        let frame = callee.encode(&Message::Invocation {
            request: invocation,
            registration,
            details: Dict::new(),
            payload,
        });
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                caller.send_error(code::CALL, request, e);
                return;
            }
        };
        let key = (callee.id, invocation);
        self.calls.lock().insert(
            key,
            PendingCall {
                caller: caller.clone(),
                caller_request: request,
                procedure: procedure.to_string(),
            },
        );
        // The callee may have left between the lookup and the insert; its
        // cleanup then did not see this call, so answer it here.
        let undeliverable = !callee.is_alive() || !callee.peer.send(frame);
        if undeliverable && self.calls.lock().remove(&key).is_some() {
            caller.send_error(
                code::CALL,
                request,
                (
                    errors::CANCELED,
                    format!("callee of \"{procedure}\" left before the call could be delivered"),
                ),
            );
        }
    }

    /// A YIELD from a callee: the RESULT goes to the caller.
    pub fn yield_result(&self, callee: &Session, invocation: u64, payload: Payload) -> Answer {
        self.answer(callee, invocation, |request| Message::Result {
            request,
            details: Dict::new(),
            payload,
        })
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
        self.answer(callee, invocation, |request| Message::Error {
            request_type: code::CALL,
            request,
            details: Dict::new(),
            error,
            payload,
        })
    }

    /// Ends a pending call with the message `reply(caller's request id)`. A
    /// reply the caller cannot take (size, serializer) becomes an ERROR.
    fn answer(
        &self,
        callee: &Session,
        invocation: u64,
        reply: impl FnOnce(u64) -> Message,
    ) -> Answer {
        let Some(pending) = self.calls.lock().remove(&(callee.id, invocation)) else {
            return Answer::Unknown;
        };
        let (caller, request) = (&pending.caller, pending.caller_request);
        match caller.encode(&reply(request)) {
            Ok(frame) => {
                caller.peer.send(frame);
            }
            Err(e) => {
                caller.send_error(code::CALL, request, e);
            }
        }
        Answer::Delivered
    }

    /// Removes the registrations of a session that left; its callers get
    /// ERROR `wamp.error.canceled`, and calls it made are forgotten (a late
    /// YIELD for them is discarded).
    pub fn remove_session(&self, session: u64) {
        {
            let mut reg = self.registry.write();
            for id in reg.by_session.remove(&session).unwrap_or_default() {
                if let Some(r) = reg.regs.remove(&id) {
                    reg.by_procedure.remove(&r.procedure);
                }
            }
        }
        let mut orphaned = Vec::new();
        self.calls.lock().retain(|(callee, _), p| {
            if *callee == session {
                orphaned.push((p.caller.clone(), p.caller_request, p.procedure.clone()));
                false
            } else {
                p.caller.id != session
            }
        });
        for (caller, request, procedure) in orphaned {
            caller.send_error(
                code::CALL,
                request,
                (
                    errors::CANCELED,
                    format!("callee left: session {session} serving \"{procedure}\" disconnected before answering"),
                ),
            );
        }
    }
}
