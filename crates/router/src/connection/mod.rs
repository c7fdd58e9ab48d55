//! The protocol state machine of one transport connection: HELLO →
//! (CHALLENGE → AUTHENTICATE →) WELCOME, then routing every message of the
//! established session, until GOODBYE, ABORT, a protocol violation or the
//! transport going away. Transports feed it whole frames; it answers through
//! the [`Peer`](crate::peer::Peer).
//!
//! This file holds the lifecycle (open, frame, resume, drop) and the
//! dispatch: by state, then, for an established session, one short call per
//! message kind after the checks every message goes through. The work of
//! each message lives with its family:
//!
//! - `state.rs`: the [`Connection`], its states, and how it ends (ABORT);
//! - `session.rs`: HELLO, AUTHENTICATE, WELCOME, GOODBYE/ABORT from the client;
//! - `pubsub.rs`: PUBLISH, SUBSCRIBE, UNSUBSCRIBE;
//! - `rpc.rs`: REGISTER, UNREGISTER, CALL, YIELD, ERROR, CANCEL;
//! - `checks.rs`: URI, authorization and limit checks the families share;
//! - `rate_limit.rs`: the per-session message rate.

mod checks;
mod pubsub;
mod rate_limit;
mod rpc;
mod session;
mod state;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use switchyard_proto::Message;

use checks::Refusal;
pub use state::{Connection, Flow};
use state::{Routed, State};

/// The error URI of a limit (kept here for the crate's users).
pub use crate::errors::LIMIT_EXCEEDED;
use crate::metrics::Metrics;
use crate::peer::Peer;
use crate::realm::Realm;
use crate::router::Router;
use crate::session::Session;
use crate::transport_info::TransportInfo;

impl Connection {
    pub fn new(router: Arc<Router>, peer: Arc<Peer>, transport: TransportInfo) -> Self {
        router.connection_opened();
        Connection {
            router,
            peer,
            transport,
            publish_received: None,
            state: State::AwaitHello,
            hello_wait_since: Instant::now(),
            request_watermark: 0,
            verdict: None,
            deferred: None,
            preauthorized: None,
            interest_wait: None,
            claim: None,
            interest_ready: false,
            rate: None,
            rate_logged: false,
            pause: None,
            auth_delay: std::time::Duration::ZERO,
            counted: None,
        }
    }

    /// While no session is established: since when HELLO is awaited. The
    /// transport applies its handshake timeout from there.
    pub fn awaiting_hello_since(&self) -> Option<Instant> {
        matches!(self.state, State::AwaitHello | State::Authenticating { .. })
            .then_some(self.hello_wait_since)
    }

    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    pub fn peer(&self) -> &Arc<Peer> {
        &self.peer
    }

    /// What is known of this connection's transport.
    pub fn transport(&self) -> &TransportInfo {
        &self.transport
    }

    /// Finishes the work a [`Flow::Suspend`] announced: a message waiting
    /// for the realm's authorizer, a SUBSCRIBE waiting for the cluster's
    /// interest, a pause over the message rate, the check of an
    /// AUTHENTICATE (then WELCOME or ABORT), or a cluster's claim of a new
    /// session's id (then WELCOME).
    pub async fn resume(&mut self) -> Flow {
        if let Some(claim) = self.claim.take() {
            return self.finish_claim(*claim).await;
        }
        if let Some((msg, ask)) = self.deferred.take() {
            self.preauthorized = Some(ask.await);
            let flow = self.handle(msg);
            self.preauthorized = None;
            if flow != Flow::Suspend {
                return flow;
            }
        }
        if let Some(waiting) = self.interest_wait.take() {
            let (msg, decision, wait) = *waiting;
            wait.await;
            self.interest_ready = true;
            self.preauthorized = decision;
            let flow = self.handle(msg);
            self.interest_ready = false;
            self.preauthorized = None;
            if flow != Flow::Suspend {
                return flow;
            }
        }
        if let Some(wait) = self.pause.take() {
            tokio::time::sleep(wait).await;
            return Flow::Continue;
        }
        let Some((method, authid, verdict)) = self.verdict.take() else {
            return Flow::Continue;
        };
        let delay = std::mem::take(&mut self.auth_delay);
        let verdict = if delay.is_zero() {
            verdict.await
        } else {
            let (verdict, _) = tokio::join!(verdict, tokio::time::sleep(delay));
            verdict
        };
        let flow = self.finish_authentication(method, authid, verdict);
        match self.claim.take() {
            Some(claim) if flow == Flow::Suspend => self.finish_claim(*claim).await,
            _ => flow,
        }
    }

    /// The largest frame to accept now: `max_message_size`, or less while
    /// the session does not exist yet. Transports check it on the frame
    /// header, before buffering the frame.
    pub fn frame_limit(&self, max_message_size: usize) -> usize {
        match self.state {
            State::AwaitHello | State::Authenticating { .. } => {
                max_message_size.min(self.router.handshake_limits().max_message)
            }
            _ => max_message_size,
        }
    }

    /// ABORTs a message too large for the handshake (checked again here
    /// for transports that frame whole messages themselves).
    pub fn refuse_handshake_frame(&mut self, len: usize) -> Flow {
        let max = self.router.handshake_limits().max_message;
        Metrics::inc(&self.router.metrics().limit_exceeded);
        tracing::info!(peer = %self.peer.label(), len, max, "handshake message too large: closing");
        self.abort(
            LIMIT_EXCEEDED,
            &format!(
                "a message of {len} bytes before the session exists exceeds the limit of {max} bytes (max_handshake_message_size)"
            ),
        )
    }

    /// Handles one received frame.
    pub fn handle_frame(&mut self, frame: &Bytes) -> Flow {
        if matches!(self.state, State::Closed) {
            return Flow::Close;
        }
        if frame.len() > self.frame_limit(usize::MAX) {
            return self.refuse_handshake_frame(frame.len());
        }
        self.peer.count_frame_in();
        match Message::decode(self.peer.serializer(), frame) {
            Ok(msg) => {
                self.router
                    .metrics()
                    .traffic
                    .received(msg.code(), frame.len());
                self.handle(msg)
            }
            Err(e) => self.protocol_violation(&format!("malformed message: {e}")),
        }
    }

    /// Dispatch by state.
    fn handle(&mut self, msg: Message) -> Flow {
        match &self.state {
            State::AwaitHello => self.handle_hello(msg),
            State::Authenticating { .. } => self.handle_authenticate(msg),
            State::Established { session, .. } if !session.is_alive() => {
                // The router ended the session (wamp.session.kill) and the
                // transport is closing; what the client still sends is moot.
                self.state = State::Closed;
                Flow::Close
            }
            State::Established { session, realm } => {
                let (session, realm) = (session.clone(), realm.clone());
                let flow = self.route(&session, &realm, msg);
                if flow != Flow::Continue {
                    return flow;
                }
                let rate = self.rate.as_mut();
                match rate.and_then(|r| r.over(&mut self.rate_logged, &session, &realm)) {
                    Some(wait) => {
                        self.pause = Some(wait);
                        Flow::Suspend
                    }
                    None => Flow::Continue,
                }
            }
            State::Closed => Flow::Close,
        }
    }

    /// A message of the established session `s`: the checks every message
    /// goes through (URI length, authorization, request-id watermark), then
    /// its handler.
    fn route(&mut self, s: &Arc<Session>, realm: &Arc<Realm>, msg: Message) -> Flow {
        if let Message::Publish { .. } = msg {
            // Kept across a wait for the authorizer (the message is routed
            // again, with its answer in `preauthorized`).
            if self.preauthorized.is_none() || self.publish_received.is_none() {
                self.publish_received = Some(std::time::Instant::now());
            }
        }
        // Before anything is authorized, looked up or kept for it.
        match checks::uri_length(realm, s, &msg) {
            Ok(()) => {}
            Err(Refusal::Error(request_type, request, e)) => {
                s.send_error(request_type, request, e);
                return Flow::Continue;
            }
            Err(Refusal::Silent) => return Flow::Continue,
            Err(Refusal::Violation(why)) => return self.protocol_violation(&why),
        }
        let decision = match checks::decide(realm, s, &msg, self.preauthorized.take()) {
            Ok(decision) => decision,
            Err(ask) => {
                self.deferred = Some((msg, ask));
                return Flow::Suspend;
            }
        };
        let watermark = self.request_watermark;
        if let Message::Publish { request, .. }
        | Message::Subscribe { request, .. }
        | Message::Unsubscribe { request, .. }
        | Message::Call { request, .. }
        | Message::Register { request, .. }
        | Message::Unregister { request, .. } = &msg
        {
            self.request_watermark = watermark.max(*request);
        }
        let cx = Routed { s, realm, decision };
        match msg {
            Message::Publish {
                request,
                options,
                topic,
                payload,
            } => self.publish(cx, request, options, topic, payload),
            Message::Subscribe {
                request,
                options,
                topic,
            } => self.subscribe(cx, request, options, topic),
            Message::Unsubscribe {
                request,
                subscription,
            } => self.unsubscribe(cx, request, subscription),
            Message::Register {
                request,
                options,
                procedure,
            } => self.register(cx, request, options, procedure),
            Message::Unregister {
                request,
                registration,
            } => self.unregister(cx, request, registration),
            Message::Call {
                request,
                options,
                procedure,
                payload,
            } => self.call(cx, watermark, request, options, procedure, payload),
            Message::Yield {
                request,
                options,
                payload,
            } => self.yield_result(cx, request, options, payload),
            Message::Error {
                request_type,
                request,
                error,
                payload,
                ..
            } => self.invocation_error(cx, request_type, request, error, payload),
            Message::Cancel { request, options } => self.cancel(cx, request, options),
            Message::Goodbye { reason, .. } => self.goodbye(s, &reason),
            Message::Abort { reason, .. } => self.client_abort(s, &reason),
            Message::Hello { .. } => {
                self.protocol_violation("received HELLO after the session was established")
            }
            other => self.protocol_violation(&format!(
                "received {}, which a client must not send to a router",
                other.name()
            )),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.leave();
        self.router.connection_closed();
    }
}
