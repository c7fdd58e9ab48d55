//! REGISTER, UNREGISTER, CALL, YIELD, ERROR (for an INVOCATION) and CANCEL
//! of an established session: each checked (URI, reserved namespace,
//! authorization, limits, request-id order), handed to the realm's Dealer
//! (or, for `wamp.` procedures, to the meta API), and answered.

use switchyard_proto::message::code;
use switchyard_proto::{errors, uri, Dict, Payload};

use super::checks::{authorize, check_pattern, check_uri, not_reserved, registration_limits};
use super::state::{Connection, Flow, Routed};
use crate::authz::Action;
use crate::backplane::CalleeAnswer;
use crate::dealer::{Answer, CallOutcome, RegisterOptions};
use crate::session::Session;

impl Connection {
    /// REGISTER: REGISTERED, or ERROR (bad options or URI, not
    /// authorized, over a limit, already registered).
    pub(super) fn register(
        &mut self,
        cx: Routed<'_>,
        request: u64,
        options: Dict,
        procedure: String,
    ) -> Flow {
        let Routed { s, realm, decision } = cx;
        let rule = realm.config().uri_check;
        let checked = RegisterOptions::parse(&options).and_then(|opts| {
            check_pattern(&procedure, rule, opts.policy)?;
            not_reserved(&procedure, "procedure")?;
            authorize(s, realm, decision, Action::Register, &procedure, None)?;
            registration_limits(realm, s, &procedure, opts.policy)?;
            Ok(opts)
        });
        let result = checked.and_then(|opts| {
            realm.dealer.register(s, &procedure, &opts, |registration| {
                s.send(&switchyard_proto::Message::Registered {
                    request,
                    registration,
                });
            })
        });
        if let Err(e) = result {
            s.send_error(code::REGISTER, request, e);
        }
        Flow::Continue
    }

    /// UNREGISTER: UNREGISTERED, or ERROR for a registration the session
    /// does not hold.
    pub(super) fn unregister(&mut self, cx: Routed<'_>, request: u64, registration: u64) -> Flow {
        let Routed { s, realm, .. } = cx;
        match realm.dealer.unregister(s, registration) {
            Ok(()) => {
                s.send(&switchyard_proto::Message::Unregistered {
                    request,
                    details: Dict::new(),
                });
            }
            Err(e) => {
                s.send_error(code::UNREGISTER, request, e);
            }
        }
        Flow::Continue
    }

    /// CALL: a new call (or the next chunk of a progressive one) routed by
    /// the Dealer, or a meta procedure the router answers itself.
    /// `watermark` is the highest request id before this message.
    pub(super) fn call(
        &mut self,
        cx: Routed<'_>,
        watermark: u64,
        request: u64,
        mut options: Dict,
        procedure: String,
        payload: Payload,
    ) -> Flow {
        let Routed { s, realm, decision } = cx;
        let strict_ids = s.features.caller_progressive_call_invocations;
        if strict_ids && request > watermark + 1 {
            // Spec "Progressive Call Invocations": a caller that
            // announced the feature numbers its requests 1, 2, 3, ...
            return self.protocol_violation(&format!(
                "CALL request id {request} skips ids after {watermark}: a new request must use the next id in sequence"
            ));
        }
        let is_new = !strict_ids || request > watermark;
        if let Err(e) =
            check_uri(&procedure, realm.config().uri_check, "procedure").and_then(|_| {
                authorize(
                    s,
                    realm,
                    decision,
                    Action::Call,
                    &procedure,
                    Some(&mut options),
                )
            })
        {
            s.send_error(code::CALL, request, e);
        } else if uri::is_reserved(&procedure) {
            // The router's meta API; nobody else may serve "wamp.".
            if !crate::meta::call(realm, s, request, &procedure, &payload) {
                s.send_error(
                    code::CALL,
                    request,
                    (
                        errors::NO_SUCH_PROCEDURE,
                        format!("the router has no meta procedure \"{procedure}\""),
                    ),
                );
            }
        } else if let CallOutcome::Violation(v) = realm
            .dealer
            .call(s, request, &procedure, &options, payload, is_new)
        {
            return self.protocol_violation(&v);
        }
        Flow::Continue
    }

    /// YIELD: a callee's result (or progressive result) for an INVOCATION.
    pub(super) fn yield_result(
        &mut self,
        cx: Routed<'_>,
        request: u64,
        options: Dict,
        payload: Payload,
    ) -> Flow {
        let Routed { s, realm, .. } = cx;
        // Cluster mode only: an INVOCATION relayed from another node is
        // not in this node's Dealer (a single node clones nothing).
        let relayed = realm
            .backplane()
            .map(|b| (b, options.clone(), payload.clone()));
        if let Answer::Unknown = realm.dealer.yield_result(s, request, &options, payload) {
            if let Some((b, options, payload)) = relayed {
                if b.answer(s, request, CalleeAnswer::Yield { options, payload }) {
                    return Flow::Continue;
                }
            }
            return self.unknown_invocation(s, "YIELD", request);
        }
        Flow::Continue
    }

    /// ERROR from a client: only a callee's failure of an INVOCATION.
    pub(super) fn invocation_error(
        &mut self,
        cx: Routed<'_>,
        request_type: u64,
        request: u64,
        error: String,
        payload: Payload,
    ) -> Flow {
        let Routed { s, realm, .. } = cx;
        if request_type != code::INVOCATION {
            return self.protocol_violation(&format!(
                "received ERROR for request type {request_type}; a client may only send ERROR for INVOCATION (68)"
            ));
        }
        let relayed = realm
            .backplane()
            .map(|b| (b, error.clone(), payload.clone()));
        if let Answer::Unknown = realm.dealer.yield_error(s, request, error, payload) {
            if let Some((b, error, payload)) = relayed {
                if b.answer(s, request, CalleeAnswer::Error { error, payload }) {
                    return Flow::Continue;
                }
            }
            return self.unknown_invocation(s, "ERROR", request);
        }
        Flow::Continue
    }

    /// CANCEL: the Dealer ends (or interrupts) the call, per its mode.
    pub(super) fn cancel(&mut self, cx: Routed<'_>, request: u64, options: Dict) -> Flow {
        cx.realm.dealer.cancel(cx.s, request, &options);
        Flow::Continue
    }

    /// A YIELD/ERROR for an invocation that is not pending: fine if the call
    /// was answered or its caller left, a violation if it was never issued.
    fn unknown_invocation(&mut self, s: &Session, what: &str, request: u64) -> Flow {
        if request > s.peer.issued_request_ids() {
            return self.protocol_violation(&format!(
                "received {what} for INVOCATION {request}, which the router never sent"
            ));
        }
        tracing::debug!(
            session = s.id,
            request,
            "{what} for a call that is no longer pending: discarded"
        );
        Flow::Continue
    }
}
