//! The protocol state machine of one transport connection: HELLO →
//! WELCOME, then routing every message of the established session, until
//! GOODBYE, ABORT, a protocol violation or the transport going away.
//! Transports feed it whole frames; it answers through the [`Peer`].

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use switchyard_proto::message::code;
use switchyard_proto::{errors, id, uri, Dict, Message};

use crate::dealer::{Answer, CallOutcome, RegisterOptions};
use crate::features::ClientFeatures;
use crate::peer::Peer;
use crate::realm::Realm;
use crate::router::Router;
use crate::session::{Identity, OpError, Session};
use crate::uri_index::MatchPolicy;

/// What the transport should do after a frame.
#[derive(Debug, Copy, Clone, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading.
    Continue,
    /// Stop reading; write what is queued, then close the transport.
    Close,
}

enum State {
    AwaitHello,
    Established {
        session: Arc<Session>,
        realm: Arc<Realm>,
    },
    Closed,
}

pub struct Connection {
    router: Arc<Router>,
    peer: Arc<Peer>,
    state: State,
    /// When the connection started waiting for HELLO (at open, and again
    /// after a GOODBYE, since the transport may be reused for a new session).
    hello_wait_since: Instant,
    /// The highest request id the client has used in this session (spec
    /// "Progressive Call Invocations": a CALL at or below it can only
    /// continue a call).
    request_watermark: u64,
}

impl Connection {
    pub fn new(router: Arc<Router>, peer: Arc<Peer>) -> Self {
        router.connection_opened();
        Connection {
            router,
            peer,
            state: State::AwaitHello,
            hello_wait_since: Instant::now(),
            request_watermark: 0,
        }
    }

    /// While no session is established: since when HELLO is awaited. The
    /// transport applies its handshake timeout from there.
    pub fn awaiting_hello_since(&self) -> Option<Instant> {
        matches!(self.state, State::AwaitHello).then_some(self.hello_wait_since)
    }

    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    pub fn peer(&self) -> &Arc<Peer> {
        &self.peer
    }

    /// The session id, once established.
    pub fn session_id(&self) -> Option<u64> {
        match &self.state {
            State::Established { session, .. } => Some(session.id),
            _ => None,
        }
    }

    /// Handles one received frame.
    pub fn handle_frame(&mut self, frame: &Bytes) -> Flow {
        if matches!(self.state, State::Closed) {
            return Flow::Close;
        }
        match Message::decode(self.peer.serializer(), frame) {
            Ok(msg) => self.handle(msg),
            Err(e) => self.protocol_violation(&format!("malformed message: {e}")),
        }
    }

    /// Sends ABORT `wamp.error.protocol_violation` with `message`, ends the
    /// session and asks the transport to close.
    pub fn protocol_violation(&mut self, message: &str) -> Flow {
        tracing::info!(peer = %self.peer.label(), session = ?self.session_id(), "protocol violation: {message}");
        self.abort(errors::PROTOCOL_VIOLATION, message)
    }

    fn abort(&mut self, reason: &str, message: &str) -> Flow {
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
        }
    }

    fn handle(&mut self, msg: Message) -> Flow {
        match &self.state {
            State::AwaitHello => self.handle_hello(msg),
            State::Established { session, .. } if !session.is_alive() => {
                // The router ended the session (wamp.session.kill) and the
                // transport is closing; what the client still sends is moot.
                self.state = State::Closed;
                Flow::Close
            }
            State::Established { session, realm } => {
                let (session, realm) = (session.clone(), realm.clone());
                self.handle_established(&session, &realm, msg)
            }
            State::Closed => Flow::Close,
        }
    }

    fn handle_hello(&mut self, msg: Message) -> Flow {
        let Message::Hello { realm, details } = msg else {
            return self.protocol_violation(&format!(
                "received {} before HELLO: the first message of a session must be HELLO",
                msg.name()
            ));
        };
        if self.router.is_shutting_down() {
            return self.abort(errors::CLOSE_SYSTEM_SHUTDOWN, "the router is shutting down");
        }
        let Some(realm) = self.router.realm(&realm).cloned() else {
            tracing::info!(peer = %self.peer.label(), realm, "HELLO for an unknown realm");
            return self.abort(
                errors::NO_SUCH_REALM,
                &format!("realm \"{realm}\" does not exist"),
            );
        };
        let identity = Identity::anonymous();
        let features = ClientFeatures::from_hello(&details);
        let session = loop {
            let s = Arc::new(Session::new(
                id::random_id(),
                identity.clone(),
                features,
                self.peer.clone(),
            ));
            if realm.join(s.clone()) {
                break s;
            }
        };
        let mut welcome = Message::Welcome {
            session: session.id,
            details: welcome_details(realm.name(), &session, true),
        };
        if session.encode(&welcome).is_err() {
            // A RawSocket client may accept as little as 512 bytes, less
            // than the feature announcement: it gets the Basic Profile view.
            tracing::debug!(
                session = session.id,
                max = self.peer.max_message_len(),
                "WELCOME without the feature list: the client accepts too little"
            );
            welcome = Message::Welcome {
                session: session.id,
                details: welcome_details(realm.name(), &session, false),
            };
        }
        self.peer.set_session(session.id);
        session.send(&welcome);
        realm.announce_join(&session);
        self.request_watermark = 0;
        tracing::debug!(
            session = session.id,
            realm = realm.name(),
            peer = %self.peer.label(),
            agent = details.get_str("agent").unwrap_or(""),
            "session joined"
        );
        self.state = State::Established { session, realm };
        Flow::Continue
    }

    fn handle_established(&mut self, s: &Arc<Session>, realm: &Arc<Realm>, msg: Message) -> Flow {
        let rule = realm.config.uri_check;
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
        match msg {
            Message::Publish {
                request,
                options,
                topic,
                payload,
            } => {
                let ack = options.get_bool("acknowledge").unwrap_or(false);
                let published = check_uri(&topic, rule, "topic")
                    .and_then(|_| not_reserved(&topic, "topic"))
                    .and_then(|_| realm.broker.publish(s, &topic, &options, &payload));
                match published {
                    Ok(publication) if ack => {
                        s.send(&Message::Published {
                            request,
                            publication,
                        });
                    }
                    Ok(_) => {}
                    Err(e) if ack => {
                        s.send_error(code::PUBLISH, request, e);
                    }
                    Err((uri, message)) => {
                        tracing::debug!(
                            session = s.id,
                            topic,
                            "publication refused: {uri}: {message}"
                        );
                    }
                }
            }
            Message::Subscribe {
                request,
                options,
                topic,
            } => {
                let policy = match_policy(&options)
                    .and_then(|policy| check_pattern(&topic, rule, policy).map(|_| policy));
                match policy {
                    Ok(policy) => {
                        let get_retained = options.get_bool("get_retained").unwrap_or(false);
                        realm
                            .broker
                            .subscribe(s, &topic, policy, get_retained, |subscription| {
                                s.send(&Message::Subscribed {
                                    request,
                                    subscription,
                                });
                            });
                    }
                    Err(e) => {
                        s.send_error(code::SUBSCRIBE, request, e);
                    }
                }
            }
            Message::Unsubscribe {
                request,
                subscription,
            } => match realm.broker.unsubscribe(s, subscription) {
                Ok(()) => {
                    s.send(&Message::Unsubscribed { request });
                }
                Err(e) => {
                    s.send_error(code::UNSUBSCRIBE, request, e);
                }
            },
            Message::Register {
                request,
                options,
                procedure,
            } => {
                let checked = RegisterOptions::parse(&options).and_then(|opts| {
                    check_pattern(&procedure, rule, opts.policy)?;
                    not_reserved(&procedure, "procedure")?;
                    Ok(opts)
                });
                let result = checked.and_then(|opts| {
                    realm.dealer.register(s, &procedure, &opts, |registration| {
                        s.send(&Message::Registered {
                            request,
                            registration,
                        });
                    })
                });
                if let Err(e) = result {
                    s.send_error(code::REGISTER, request, e);
                }
            }
            Message::Unregister {
                request,
                registration,
            } => match realm.dealer.unregister(s, registration) {
                Ok(()) => {
                    s.send(&Message::Unregistered { request });
                }
                Err(e) => {
                    s.send_error(code::UNREGISTER, request, e);
                }
            },
            Message::Call {
                request,
                options,
                procedure,
                payload,
            } => {
                let strict_ids = s.features.caller_progressive_call_invocations;
                if strict_ids && request > watermark + 1 {
                    // Spec "Progressive Call Invocations": a caller that
                    // announced the feature numbers its requests 1, 2, 3, ...
                    return self.protocol_violation(&format!(
                        "CALL request id {request} skips ids after {watermark}: a new request must use the next id in sequence"
                    ));
                }
                let is_new = !strict_ids || request > watermark;
                if let Err(e) = check_uri(&procedure, rule, "procedure") {
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
            }
            Message::Yield {
                request,
                options,
                payload,
            } => {
                if let Answer::Unknown = realm.dealer.yield_result(s, request, &options, payload) {
                    return self.unknown_invocation(s, "YIELD", request);
                }
            }
            Message::Error {
                request_type,
                request,
                error,
                payload,
                ..
            } => {
                if request_type != code::INVOCATION {
                    return self.protocol_violation(&format!(
                        "received ERROR for request type {request_type}; a client may only send ERROR for INVOCATION (68)"
                    ));
                }
                if let Answer::Unknown = realm.dealer.yield_error(s, request, error, payload) {
                    return self.unknown_invocation(s, "ERROR", request);
                }
            }
            Message::Cancel { request, options } => {
                realm.dealer.cancel(s, request, &options);
            }
            Message::Goodbye { reason, .. } => {
                tracing::debug!(session = s.id, reason, "GOODBYE from client");
                if reason != errors::CLOSE_GOODBYE_AND_OUT {
                    s.send(&Message::Goodbye {
                        details: Dict::new(),
                        reason: errors::CLOSE_GOODBYE_AND_OUT.to_string(),
                    });
                }
                self.leave();
                // The transport stays open: the client closes it or opens a
                // new session on it (within the handshake timeout).
                self.state = State::AwaitHello;
                self.hello_wait_since = Instant::now();
                return Flow::Continue;
            }
            Message::Abort { reason, .. } => {
                tracing::debug!(session = s.id, reason, "ABORT from client");
                self.leave();
                self.peer.close_after_flush();
                return Flow::Close;
            }
            Message::Hello { .. } => {
                return self.protocol_violation("received HELLO after the session was established");
            }
            other => {
                return self.protocol_violation(&format!(
                    "received {}, which a client must not send to a router",
                    other.name()
                ));
            }
        }
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

impl Drop for Connection {
    fn drop(&mut self) {
        self.leave();
        self.router.connection_closed();
    }
}

/// WELCOME.Details; with `features` false, the roles without their
/// feature lists (for clients that accept very small messages).
fn welcome_details(realm: &str, session: &Session, features: bool) -> Dict {
    let features = |names: &[&str]| {
        names
            .iter()
            .filter(|_| features)
            .fold(Dict::new(), |d, name| d.with(*name, true))
    };
    let roles = Dict::new()
        .with(
            "broker",
            Dict::new().with(
                "features",
                features(&[
                    "publisher_exclusion",
                    "publisher_identification",
                    "subscriber_blackwhite_listing",
                    "pattern_based_subscription",
                    "event_retention",
                    "event_history",
                    "subscription_meta_api",
                    "session_meta_api",
                ]),
            ),
        )
        .with(
            "dealer",
            Dict::new().with(
                "features",
                features(&[
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
                ]),
            ),
        );
    Dict::new()
        .with("realm", realm)
        .with("authid", session.authid.as_str())
        .with("authrole", session.authrole.as_str())
        .with("authmethod", session.authmethod.as_str())
        .with("authprovider", session.authprovider.as_str())
        .with("roles", roles)
        .with("agent", concat!("switchyard-", env!("CARGO_PKG_VERSION")))
}

fn check_uri(u: &str, rule: uri::UriCheck, what: &str) -> Result<(), OpError> {
    uri::check(u, rule, false)
        .map_err(|reason| (errors::INVALID_URI, format!("invalid {what}: {reason}")))
}

/// A registration or subscription URI: wildcard patterns may have empty
/// components, prefix patterns may end with a dot.
fn check_pattern(u: &str, rule: uri::UriCheck, policy: MatchPolicy) -> Result<(), OpError> {
    let allow_empty = policy != MatchPolicy::Exact;
    uri::check(u, rule, allow_empty).map_err(|reason| {
        (
            errors::INVALID_URI,
            format!("invalid {} pattern: {reason}", policy.as_str()),
        )
    })
}

fn not_reserved(u: &str, what: &str) -> Result<(), OpError> {
    if uri::is_reserved(u) {
        Err((
            errors::INVALID_URI,
            format!(
                "{what} \"{u}\" is in the \"wamp.\" namespace, which is reserved for the router"
            ),
        ))
    } else {
        Ok(())
    }
}

fn match_policy(options: &Dict) -> Result<MatchPolicy, OpError> {
    match options.get_str("match") {
        None => Ok(MatchPolicy::Exact),
        Some(m) => MatchPolicy::parse(m).ok_or_else(|| {
            (
                errors::INVALID_ARGUMENT,
                format!("unknown match policy \"{m}\" (exact, prefix or wildcard)"),
            )
        }),
    }
}
