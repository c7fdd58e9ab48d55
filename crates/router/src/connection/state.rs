//! What one connection is and holds: the [`Connection`] with its protocol
//! [`State`] (awaiting HELLO, authenticating, established, closed), the
//! [`Flow`] it answers the transport with, and the ways it ends (ABORT, a
//! protocol violation, the session leaving).
//!
//! It sits apart from `mod.rs` (the state machine's transitions) so that the
//! per-message files (`session.rs`, `pubsub.rs`, `rpc.rs`) build on it
//! without importing the dispatcher that calls them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_proto::{errors, Dict, Message};

use super::rate_limit::RateLimit;
use crate::auth::{Pending, VerdictFuture};
use crate::authz::Decision;
use crate::features::ClientFeatures;
use crate::logsafe::Clip;
use crate::peer::Peer;
use crate::realm::{AskFuture, Realm};
use crate::router::Router;
use crate::session::Session;
use crate::traffic::SessionGauge;
use crate::transport_info::TransportInfo;

/// What the transport should do after a frame.
#[derive(Debug, Copy, Clone, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading.
    Continue,
    /// Stop reading; write what is queued, then close the transport.
    Close,
    /// The connection waits for work of its own (an authentication check):
    /// the transport awaits [`Connection::resume`] before reading on.
    Suspend,
}

pub(super) enum State {
    AwaitHello,
    /// CHALLENGE sent; waiting for AUTHENTICATE (then for its check).
    Authenticating {
        realm: Arc<Realm>,
        session_id: u64,
        features: ClientFeatures,
        agent: String,
        pending: Option<Box<Pending>>,
    },
    Established {
        session: Arc<Session>,
        realm: Arc<Realm>,
    },
    Closed,
}

/// What routing one message of an established session knows: the session,
/// its realm, and the realm's authorization decision for the message (None:
/// nothing to check).
#[derive(Clone, Copy)]
pub(super) struct Routed<'a> {
    pub s: &'a Arc<Session>,
    pub realm: &'a Arc<Realm>,
    pub decision: Option<Decision>,
}

/// A session waiting for the cluster-wide claim of its id (see
/// `Connection::finish_claim`).
pub(super) struct PendingClaim {
    pub(super) realm: Arc<Realm>,
    pub(super) session: Arc<Session>,
    pub(super) identity: crate::session::Identity,
    pub(super) features: ClientFeatures,
    pub(super) agent: String,
    pub(super) wait: crate::backplane::ClaimWait,
    pub(super) tries: u32,
}

/// The protocol state machine of one transport connection (see the
/// module's `mod.rs`).
pub struct Connection {
    pub(super) router: Arc<Router>,
    pub(super) peer: Arc<Peer>,
    pub(super) transport: TransportInfo,
    pub(super) state: State,
    /// When the connection started waiting for HELLO (at open, and again
    /// after a GOODBYE, since the transport may be reused for a new session).
    pub(super) hello_wait_since: Instant,
    /// When the PUBLISH being routed reached [`Connection::route`]
    /// (`switchyard_routing_latency_seconds{kind="publish"}`).
    pub(super) publish_received: Option<Instant>,
    /// The highest request id the client has used in this session (spec
    /// "Progressive Call Invocations": a CALL at or below it can only
    /// continue a call).
    pub(super) request_watermark: u64,
    /// The check of an AUTHENTICATE, run by [`Connection::resume`]: method,
    /// authid (for the log) and the verdict to come.
    pub(super) verdict: Option<(&'static str, String, VerdictFuture)>,
    /// A message waiting for the realm's authorizer procedure.
    pub(super) deferred: Option<(Message, AskFuture)>,
    /// The authorizer's answer for the deferred message, when it is handled.
    pub(super) preauthorized: Option<Decision>,
    /// The session's message rate limit, if the realm sets one.
    pub(super) rate: Option<RateLimit>,
    pub(super) rate_logged: bool,
    /// How long to stop reading (over the message rate).
    pub(super) pause: Option<Duration>,
    /// A SUBSCRIBE (checked and authorized, with its decision) waiting
    /// until the other nodes of a cluster deliver its topic to this one
    /// ([`crate::backplane::Backplane::before_subscribe`]). Boxed: one
    /// pointer in every connection, the message only while one waits.
    pub(super) interest_wait:
        Option<Box<(Message, Option<Decision>, crate::backplane::InterestWait)>>,
    /// A session waiting for the cluster-wide claim of its id before its
    /// WELCOME ([`crate::backplane::Backplane::claim_session`]).
    pub(super) claim: Option<Box<PendingClaim>>,
    /// True while that SUBSCRIBE is handled again (no second wait).
    pub(super) interest_ready: bool,
    /// How long to hold the verdict of this login back (an authid under a
    /// distributed guessing attack).
    pub(super) auth_delay: Duration,
    /// This session counted in `switchyard_sessions` (from WELCOME to
    /// [`Connection::leave`]).
    pub(super) counted: Option<SessionGauge>,
}

impl Connection {
    /// The session id, once established.
    pub fn session_id(&self) -> Option<u64> {
        match &self.state {
            State::Established { session, .. } => Some(session.id),
            _ => None,
        }
    }

    /// Sends ABORT `wamp.error.protocol_violation` with `message`, ends the
    /// session and asks the transport to close.
    pub fn protocol_violation(&mut self, message: &str) -> Flow {
        tracing::info!(peer = %self.peer.label(), session = ?self.session_id(), "protocol violation: {}", Clip(message));
        self.abort(errors::PROTOCOL_VIOLATION, message)
    }

    /// Sends ABORT with `reason` and `message`, ends the session and asks
    /// the transport to close.
    pub(super) fn abort(&mut self, reason: &str, message: &str) -> Flow {
        let abort = Message::Abort {
            details: Dict::new().with("message", message),
            reason: reason.to_string(),
        };
        if let Ok(frame) = abort.encode(self.peer.serializer()) {
            self.peer.send(frame);
        }
        self.leave();
        self.peer.close_after_flush();
        Flow::Close
    }

    /// Ends the session (if any): frees its subscriptions, registrations and
    /// pending calls. Called when the transport closes; idempotent.
    pub fn leave(&mut self) {
        if let State::Established { session, realm } =
            std::mem::replace(&mut self.state, State::Closed)
        {
            tracing::debug!(session = session.id, realm = realm.name(), "session left");
            realm.leave(&session);
            self.peer.set_session(0);
            self.counted = None;
        }
    }
}
