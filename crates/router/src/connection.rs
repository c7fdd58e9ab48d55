//! The protocol state machine of one transport connection: HELLO →
//! WELCOME, then routing every message of the established session, until
//! GOODBYE, ABORT, a protocol violation or the transport going away.
//! Transports feed it whole frames; it answers through the [`Peer`].

use crate::logsafe::Clip;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use switchyard_proto::message::code;
use switchyard_proto::{errors, uri, Dict, Message};

use crate::auth::{self, Pending, Start, Verdict, VerdictFuture};
use crate::authz::{Action, Decision};
use crate::metrics::Metrics;

/// The error URI of a per-session limit (subscriptions, registrations).
pub const LIMIT_EXCEEDED: &str = "switchyard.error.limit_exceeded";
use crate::dealer::{Answer, CallOutcome, RegisterOptions};
use crate::features::ClientFeatures;
use crate::peer::Peer;
use crate::realm::Realm;
use crate::router::Router;
use crate::session::{Identity, OpError, Session};
use crate::transport_info::TransportInfo;
use crate::uri_index::MatchPolicy;

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

enum State {
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

pub struct Connection {
    router: Arc<Router>,
    peer: Arc<Peer>,
    transport: TransportInfo,
    state: State,
    /// When the connection started waiting for HELLO (at open, and again
    /// after a GOODBYE, since the transport may be reused for a new session).
    hello_wait_since: Instant,
    /// The highest request id the client has used in this session (spec
    /// "Progressive Call Invocations": a CALL at or below it can only
    /// continue a call).
    request_watermark: u64,
    /// The check of an AUTHENTICATE, run by [`Connection::resume`]: method,
    /// authid (for the log) and the verdict to come.
    verdict: Option<(&'static str, String, VerdictFuture)>,
    /// A message waiting for the realm's authorizer procedure.
    deferred: Option<(Message, AskFuture)>,
    /// The authorizer's answer for the deferred message, when it is handled.
    preauthorized: Option<Decision>,
    /// The session's message rate limit, if the realm sets one.
    rate: Option<RateLimit>,
    rate_logged: bool,
    /// How long to stop reading (over the message rate).
    pause: Option<std::time::Duration>,
    /// How long to hold the verdict of this login back (an authid under a
    /// distributed guessing attack).
    auth_delay: std::time::Duration,
}

/// A token bucket: `rate` messages per second, bursts of up to `rate`.
struct RateLimit {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    fn new(rate: u32) -> Option<Self> {
        (rate > 0).then(|| RateLimit {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            at: Instant::now(),
        })
    }

    /// Takes a token; how long to wait before the next message, if any.
    fn take(&mut self) -> Option<std::time::Duration> {
        let now = Instant::now();
        let elapsed = now.duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate) - 1.0;
        (self.tokens < 0.0).then(|| std::time::Duration::from_secs_f64(-self.tokens / self.rate))
    }
}

type AskFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Decision> + Send + Sync>>;

impl Connection {
    pub fn new(router: Arc<Router>, peer: Arc<Peer>, transport: TransportInfo) -> Self {
        router.connection_opened();
        Connection {
            router,
            peer,
            transport,
            state: State::AwaitHello,
            hello_wait_since: Instant::now(),
            request_watermark: 0,
            verdict: None,
            deferred: None,
            preauthorized: None,
            rate: None,
            rate_logged: false,
            pause: None,
            auth_delay: std::time::Duration::ZERO,
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

    /// The session id, once established.
    pub fn session_id(&self) -> Option<u64> {
        match &self.state {
            State::Established { session, .. } => Some(session.id),
            _ => None,
        }
    }

    /// What is known of this connection's transport.
    pub fn transport(&self) -> &TransportInfo {
        &self.transport
    }

    /// Finishes the work a [`Flow::Suspend`] announced: the check of an
    /// AUTHENTICATE, then WELCOME or ABORT.
    pub async fn resume(&mut self) -> Flow {
        if let Some((msg, ask)) = self.deferred.take() {
            self.preauthorized = Some(ask.await);
            let flow = self.handle(msg);
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
        let ip = self.transport.peer_ip;
        let State::Authenticating {
            realm,
            session_id,
            features,
            agent,
            ..
        } = std::mem::replace(&mut self.state, State::Closed)
        else {
            return Flow::Close;
        };
        match verdict {
            Verdict::Welcome(identity) => {
                realm.throttle.succeeded(ip, Some(&authid));
                Metrics::inc(&realm.metrics.auth_succeeded);
                tracing::info!(
                    peer = %self.peer.label(),
                    realm = realm.name(),
                    authid = %Clip(&identity.authid),
                    authrole = %Clip(&identity.authrole),
                    method,
                    "authenticated"
                );
                self.establish(realm, session_id, identity, features, &agent)
            }
            Verdict::Busy(message) => {
                realm.throttle.not_checked(ip, Some(&authid));
                Metrics::inc(&realm.metrics.limit_exceeded);
                tracing::warn!(
                    peer = %self.peer.label(),
                    realm = realm.name(),
                    method,
                    "login refused: too many ticket checks at once"
                );
                self.abort(auth::AUTHENTICATION_FAILED, &message)
            }
            Verdict::Abort(reason, message) => {
                // Its attempt was counted when it started.
                Metrics::inc(&realm.metrics.auth_failed);
                tracing::info!(
                    peer = %self.peer.label(),
                    realm = realm.name(),
                    authid,
                    method,
                    "authentication failed: {message}"
                );
                self.abort(reason, &message)
            }
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
        match Message::decode(self.peer.serializer(), frame) {
            Ok(msg) => self.handle(msg),
            Err(e) => self.protocol_violation(&format!("malformed message: {e}")),
        }
    }

    /// Sends ABORT `wamp.error.protocol_violation` with `message`, ends the
    /// session and asks the transport to close.
    pub fn protocol_violation(&mut self, message: &str) -> Flow {
        tracing::info!(peer = %self.peer.label(), session = ?self.session_id(), "protocol violation: {}", Clip(message));
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
            State::Authenticating { .. } => self.handle_authenticate(msg),
            State::Established { session, .. } if !session.is_alive() => {
                // The router ended the session (wamp.session.kill) and the
                // transport is closing; what the client still sends is moot.
                self.state = State::Closed;
                Flow::Close
            }
            State::Established { session, realm } => {
                let (session, realm) = (session.clone(), realm.clone());
                let flow = self.handle_established(&session, &realm, msg);
                if flow != Flow::Continue {
                    return flow;
                }
                match self.rate.as_mut().and_then(RateLimit::take) {
                    Some(wait) => {
                        if !self.rate_logged {
                            self.rate_logged = true;
                            tracing::info!(
                                session = session.id,
                                limit = realm.config.max_messages_per_second,
                                "session slowed down: over its message rate"
                            );
                        }
                        Metrics::inc(&realm.metrics.rate_limited);
                        self.pause = Some(wait);
                        Flow::Suspend
                    }
                    None => Flow::Continue,
                }
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
        if let Some(why) = oversized_hello(&realm, &details, self.router.handshake_limits()) {
            Metrics::inc(&self.router.metrics().limit_exceeded);
            tracing::info!(peer = %self.peer.label(), "HELLO refused: {why}");
            return self.abort(LIMIT_EXCEEDED, &why);
        }
        let Some(realm) = self.router.realm(&realm).cloned() else {
            tracing::info!(peer = %self.peer.label(), realm = %Clip(&realm), "HELLO for an unknown realm");
            return self.abort(
                errors::NO_SUCH_REALM,
                &format!("realm \"{realm}\" does not exist"),
            );
        };
        let features = ClientFeatures::from_hello(&details);
        let agent = details.get_str("agent").unwrap_or("").to_string();
        let session_id = realm.unused_session_id();
        match realm.auth.start(&details, &self.transport, session_id) {
            Start::Welcome(identity) => {
                self.establish(realm, session_id, identity, features, &agent)
            }
            Start::Abort(reason, message) => {
                if reason == auth::AUTHENTICATION_FAILED {
                    // A throttled client learns that, not whether its key
                    // is known; otherwise the attempt counts.
                    if let Err(flow) = self.start_attempt(&realm, details.get_str("authid")) {
                        return flow;
                    }
                    Metrics::inc(&realm.metrics.auth_failed);
                }
                tracing::info!(
                    peer = %self.peer.label(),
                    realm = realm.name(),
                    authid = %Clip(details.get_str("authid").unwrap_or("")),
                    "authentication refused: {}",
                    Clip(&message)
                );
                self.abort(reason, &message)
            }
            Start::Challenge {
                method,
                extra,
                pending,
            } => {
                // Counted now, so that attempts in flight count too.
                match self.start_attempt(&realm, Some(pending.authid())) {
                    Ok(delay) => self.auth_delay = delay,
                    Err(flow) => return flow,
                }
                let challenge = Message::Challenge {
                    method: method.to_string(),
                    extra,
                };
                if let Ok(frame) = challenge.encode(self.peer.serializer()) {
                    self.peer.send(frame);
                }
                self.state = State::Authenticating {
                    realm,
                    session_id,
                    features,
                    agent,
                    pending: Some(pending),
                };
                Flow::Continue
            }
        }
    }

    /// Counts a login attempt from this address for `authid`, or ABORTs it
    /// if the address (or the address with this authid) failed too often
    /// lately and must still wait. Ok: how long to hold its verdict back.
    fn start_attempt(
        &mut self,
        realm: &Realm,
        authid: Option<&str>,
    ) -> Result<std::time::Duration, Flow> {
        match realm.throttle.start(self.transport.peer_ip, authid) {
            Ok(delay) => Ok(delay),
            Err(refusal) => {
                Metrics::inc(&realm.metrics.auth_throttled);
                tracing::warn!(
                    peer = %self.peer.label(),
                    realm = realm.name(),
                    "login refused: too many failed logins for this {}",
                    refusal.what
                );
                Err(self.abort(
                    auth::AUTHENTICATION_FAILED,
                    &format!(
                        "too many failed logins for this {}; try again in {} s",
                        refusal.what,
                        refusal.left.as_secs() + 1
                    ),
                ))
            }
        }
    }

    /// The AUTHENTICATE answering our CHALLENGE: its check runs in
    /// [`Connection::resume`].
    fn handle_authenticate(&mut self, msg: Message) -> Flow {
        let State::Authenticating { pending, realm, .. } = &mut self.state else {
            return Flow::Close;
        };
        match msg {
            Message::Authenticate { signature, .. } => match pending.take() {
                Some(p) => {
                    let (method, authid) = (p.method(), p.authid().to_string());
                    let check = auth::verify(p, signature, realm, &self.transport);
                    self.verdict = Some((method, authid, check));
                    Flow::Suspend
                }
                None => self.protocol_violation("received a second AUTHENTICATE"),
            },
            Message::Abort { reason, .. } => {
                tracing::debug!(peer = %self.peer.label(), reason = %Clip(&reason), "ABORT from client during authentication");
                self.state = State::Closed;
                self.peer.close_after_flush();
                Flow::Close
            }
            other => match auth::unexpected(other.name()) {
                Verdict::Abort(_, message) => self.protocol_violation(&message),
                Verdict::Welcome(_) | Verdict::Busy(_) => Flow::Close,
            },
        }
    }

    /// Creates the session, sends WELCOME and announces it.
    fn establish(
        &mut self,
        realm: Arc<Realm>,
        session_id: u64,
        identity: Identity,
        features: ClientFeatures,
        agent: &str,
    ) -> Flow {
        let session = Arc::new(Session::new(
            session_id,
            identity,
            features,
            self.peer.clone(),
        ));
        if !realm.join(session.clone()) {
            // Another session took the id since it was drawn (p ~ 2^-53).
            return self.abort(
                errors::CLOSE_SYSTEM_SHUTDOWN,
                "session id collision, try again",
            );
        }
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
            authid = session.authid,
            authrole = session.authrole,
            authmethod = session.authmethod,
            agent,
            "session joined"
        );
        self.rate = RateLimit::new(realm.config.max_messages_per_second);
        self.state = State::Established { session, realm };
        Flow::Continue
    }

    fn handle_established(&mut self, s: &Arc<Session>, realm: &Arc<Realm>, msg: Message) -> Flow {
        // Before anything is authorized, looked up or kept for it.
        if let Some((request_type, request, what, uri)) = uri_of(&msg) {
            if let Err(e) = realm.check_uri_length(uri, what) {
                tracing::info!(session = s.id, "{} refused: {}", msg.name(), e.1);
                return match request {
                    Some(request) => {
                        // An unacknowledged PUBLISH gets no ERROR.
                        let ack = match &msg {
                            Message::Publish { options, .. } => {
                                options.get_bool("acknowledge").unwrap_or(false)
                            }
                            _ => true,
                        };
                        if ack {
                            s.send_error(request_type, request, e);
                        }
                        Flow::Continue
                    }
                    None => self.protocol_violation(&e.1),
                };
            }
        }
        let rule = realm.config.uri_check;
        let checked = if realm.authz.enabled() {
            action_of(&msg)
        } else {
            None
        };
        let decision = match checked {
            None => None,
            Some((action, uri, policy)) => match self.preauthorized.take() {
                Some(d) => Some(d),
                None => match realm.authz.decide_pattern(s, action, uri, policy) {
                    Decision::Ask => match s.cached_decision(action, &cache_key(uri, policy)) {
                        Some(d) => Some(d),
                        None => {
                            let ask = ask_authorizer(
                                realm.clone(),
                                s.clone(),
                                action,
                                uri.to_string(),
                                policy,
                            );
                            self.deferred = Some((msg, ask));
                            return Flow::Suspend;
                        }
                    },
                    d => Some(d),
                },
            },
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
        match msg {
            Message::Publish {
                request,
                mut options,
                topic,
                payload,
            } => {
                let ack = options.get_bool("acknowledge").unwrap_or(false);
                let published = check_uri(&topic, rule, "topic")
                    .and_then(|_| not_reserved(&topic, "topic"))
                    .and_then(|_| {
                        authorize(
                            s,
                            realm,
                            decision,
                            Action::Publish,
                            &topic,
                            Some(&mut options),
                        )
                    })
                    .and_then(|_| realm.publish(s, &topic, &options, &payload));
                match published {
                    Ok((publication, None)) if ack => {
                        s.send(&Message::Published {
                            request,
                            publication,
                        });
                    }
                    Ok((_, None)) => {}
                    Ok((publication, Some(pending))) => {
                        // The publication feeds durable queues: PUBLISHED
                        // follows the commit of its jobs.
                        let s = s.clone();
                        tokio::spawn(async move {
                            match pending.await {
                                Ok(()) if ack => {
                                    s.send(&Message::Published {
                                        request,
                                        publication,
                                    });
                                }
                                Ok(()) => {}
                                Err(e) if ack => {
                                    s.send_error(code::PUBLISH, request, e);
                                }
                                Err((uri, message)) => {
                                    tracing::warn!(
                                        session = s.id,
                                        topic = %Clip(&topic),
                                        "publication delivered, but its queue jobs failed: {uri}: {}",
                                        Clip(&message)
                                    );
                                }
                            }
                        });
                    }
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
                    .and_then(|policy| check_pattern(&topic, rule, policy).map(|_| policy))
                    .and_then(|policy| {
                        authorize(s, realm, decision, Action::Subscribe, &topic, None)
                            .map(|_| policy)
                    })
                    .and_then(|policy| {
                        let max = realm.config.max_subscriptions_per_session;
                        if max > 0
                            && realm
                                .broker
                                .session_subscription_over(s.id, &topic, policy, max)
                                .is_some()
                        {
                            Metrics::inc(&realm.metrics.subscription_limit);
                            tracing::info!(
                                session = s.id,
                                max,
                                "SUBSCRIBE refused: subscription limit"
                            );
                            return Err((
                                LIMIT_EXCEEDED,
                                format!(
                                    "a session may hold at most {max} subscriptions in this realm"
                                ),
                            ));
                        }
                        let max = realm.config.max_subscriptions;
                        if max > 0 {
                            if let Some(n) = realm.broker.new_subscription_over(&topic, policy, max)
                            {
                                Metrics::inc(&realm.metrics.subscription_limit);
                                Metrics::inc(&realm.metrics.limit_exceeded);
                                tracing::warn!(
                                    session = s.id,
                                    max,
                                    "SUBSCRIBE refused: the realm holds {n} subscriptions (max_subscriptions)"
                                );
                                return Err((
                                    LIMIT_EXCEEDED,
                                    format!(
                                        "this realm holds {n} subscriptions, its limit (max_subscriptions = {max}); \
                                         only existing topics can be subscribed to"
                                    ),
                                ));
                            }
                        }
                        Ok(policy)
                    });
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
                    authorize(s, realm, decision, Action::Register, &procedure, None)?;
                    let max = realm.config.max_registrations_per_session;
                    if max > 0 && realm.dealer.session_registrations(s.id) >= max {
                        Metrics::inc(&realm.metrics.registration_limit);
                        tracing::info!(session = s.id, max, "REGISTER refused: registration limit");
                        return Err((
                            LIMIT_EXCEEDED,
                            format!("a session may hold at most {max} registrations in this realm"),
                        ));
                    }
                    let max = realm.config.max_registrations;
                    if max > 0 {
                        if let Some(n) =
                            realm
                                .dealer
                                .new_registration_over(&procedure, opts.policy, max)
                        {
                            Metrics::inc(&realm.metrics.registration_limit);
                            Metrics::inc(&realm.metrics.limit_exceeded);
                            tracing::warn!(
                                session = s.id,
                                max,
                                "REGISTER refused: the realm holds {n} registrations (max_registrations)"
                            );
                            return Err((
                                LIMIT_EXCEEDED,
                                format!(
                                    "this realm holds {n} registrations, its limit (max_registrations = {max})"
                                ),
                            ));
                        }
                    }
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
                mut options,
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
                if let Err(e) = check_uri(&procedure, rule, "procedure").and_then(|_| {
                    authorize(
                        s,
                        realm,
                        decision,
                        Action::Call,
                        &procedure,
                        Some(&mut options),
                    )
                }) {
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
                tracing::debug!(session = s.id, reason = %Clip(&reason), "GOODBYE from client");
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
                tracing::debug!(session = s.id, reason = %Clip(&reason), "ABORT from client");
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

/// Why a HELLO is refused for its size, naming the field and the limit:
/// everything in it may end up in a log line or the failed-login table.
fn oversized_hello(
    realm: &str,
    details: &Dict,
    limits: &crate::router::HandshakeLimits,
) -> Option<String> {
    if realm.len() > limits.max_realm {
        return Some(format!(
            "realm name of {} bytes exceeds the limit of {} bytes (max_uri_length)",
            realm.len(),
            limits.max_realm
        ));
    }
    if let Some(authid) = details.get("authid") {
        let len = authid.as_str().map_or(usize::MAX, str::len);
        if len > limits.max_authid {
            return Some(format!(
                "HELLO.Details.authid must be a string of at most {} bytes (max_authid_length)",
                limits.max_authid
            ));
        }
    }
    if let Some(switchyard_proto::Value::List(methods)) = details.get("authmethods") {
        if methods.len() > limits.max_authmethods
            || methods
                .iter()
                .any(|m| m.as_str().is_none_or(|m| m.len() > 32))
        {
            return Some(format!(
                "HELLO.Details.authmethods must list at most {} method names of at most 32 bytes",
                limits.max_authmethods
            ));
        }
    }
    None
}

/// The URI a client message carries: the request type and id to answer
/// (None: a message that gets no ERROR), what it is, and the URI.
fn uri_of(msg: &Message) -> Option<(u64, Option<u64>, &'static str, &str)> {
    match msg {
        Message::Publish { request, topic, .. } => {
            Some((code::PUBLISH, Some(*request), "topic", topic))
        }
        Message::Subscribe { request, topic, .. } => {
            Some((code::SUBSCRIBE, Some(*request), "topic", topic))
        }
        Message::Call {
            request, procedure, ..
        } => Some((code::CALL, Some(*request), "procedure", procedure)),
        Message::Register {
            request, procedure, ..
        } => Some((code::REGISTER, Some(*request), "procedure", procedure)),
        Message::Error { error, .. } => Some((code::ERROR, None, "error URI", error)),
        Message::Goodbye { reason, .. } | Message::Abort { reason, .. } => {
            Some((code::GOODBYE, None, "reason", reason))
        }
        _ => None,
    }
}

/// The action a message asks for, and on which URI.
fn action_of(msg: &Message) -> Option<(Action, &str, MatchPolicy)> {
    let policy = |options: &Dict| {
        options
            .get_str("match")
            .and_then(MatchPolicy::parse)
            .unwrap_or(MatchPolicy::Exact)
    };
    match msg {
        Message::Publish { topic, .. } => Some((Action::Publish, topic, MatchPolicy::Exact)),
        Message::Subscribe { topic, options, .. } => {
            Some((Action::Subscribe, topic, policy(options)))
        }
        Message::Call { procedure, .. } => Some((Action::Call, procedure, MatchPolicy::Exact)),
        Message::Register {
            procedure, options, ..
        } => Some((Action::Register, procedure, policy(options))),
        _ => None,
    }
}

/// The authorizer cache's key: a pattern is not the URI it spells.
pub(crate) fn cache_key(uri: &str, policy: MatchPolicy) -> String {
    match policy {
        MatchPolicy::Exact => uri.to_string(),
        other => format!("{} {uri}", other.as_str()),
    }
}

/// Calls the realm's authorizer procedure about `action` on `uri` (with the
/// match `policy` of a subscription or registration) by `s`.
/// It answers a bool or `{allow, disclose, cache}`; anything else, an error
/// or no answer in time denies.
pub(crate) fn ask_authorizer(
    realm: Arc<Realm>,
    s: Arc<Session>,
    action: Action,
    uri: String,
    policy: MatchPolicy,
) -> AskFuture {
    Box::pin(async move {
        let Some(dynamic) = realm.authz.dynamic().cloned() else {
            return Decision::Deny;
        };
        let details = Dict::new()
            .with("session", s.id)
            .with("authid", s.authid.as_str())
            .with("authrole", s.authrole.as_str())
            .with("authmethod", s.authmethod.as_str())
            .with("authprovider", s.authprovider.as_str());
        let args = vec![
            switchyard_proto::Value::Dict(details),
            switchyard_proto::Value::from(uri.as_str()),
            switchyard_proto::Value::from(action.as_str()),
            switchyard_proto::Value::Dict(Dict::new().with("match", policy.as_str())),
        ];
        let reply = realm
            .internal
            .call(
                &realm.dealer,
                &dynamic.procedure,
                args,
                None,
                dynamic.timeout,
            )
            .await;
        let (decision, cache) = match reply {
            Ok(r) => match r.args.first() {
                Some(switchyard_proto::Value::Bool(allow)) => (
                    if *allow {
                        Decision::Allow { disclose: false }
                    } else {
                        Decision::Deny
                    },
                    false,
                ),
                Some(switchyard_proto::Value::Dict(d)) => (
                    if d.get_bool("allow") == Some(true) {
                        Decision::Allow {
                            disclose: d.get_bool("disclose").unwrap_or(false),
                        }
                    } else {
                        Decision::Deny
                    },
                    d.get_bool("cache").unwrap_or(false),
                ),
                _ => {
                    tracing::warn!(
                        procedure = dynamic.procedure,
                        "the authorizer answered neither a bool nor a dict with \"allow\": denied"
                    );
                    (Decision::Deny, false)
                }
            },
            Err(f) => {
                tracing::warn!(
                    procedure = dynamic.procedure,
                    error = %Clip(&f.error),
                    "the authorizer failed, denied: {}",
                    Clip(&f.message)
                );
                (Decision::Deny, false)
            }
        };
        if cache {
            let max = realm.config.max_authorizer_cache_entries;
            let key = cache_key(&uri, policy);
            if !s.cache_decision(action, &key, decision, &realm.authz_cached, max) {
                Metrics::inc(&realm.metrics.limit_exceeded);
                tracing::debug!(
                    session = s.id,
                    max,
                    "authorizer answer not cached: the realm's sessions hold {max} (max_authorizer_cache_entries)"
                );
            }
        }
        decision
    })
}

/// Asks the realm's authorizer; a denial is logged and answered with
/// `wamp.error.not_authorized`. A permission that discloses the caller or
/// publisher sets `disclose_me` in `options`.
fn authorize(
    s: &Session,
    realm: &Realm,
    decision: Option<Decision>,
    action: Action,
    uri: &str,
    options: Option<&mut Dict>,
) -> Result<(), OpError> {
    match decision.unwrap_or(Decision::Allow { disclose: false }) {
        Decision::Allow { disclose } => {
            if let (true, Some(options)) = (disclose, options) {
                options.insert("disclose_me", true);
            }
            Ok(())
        }
        Decision::Deny | Decision::Ask => Err(not_authorized(s, realm, action, uri)),
    }
}

/// A denial: counted, logged, and the `wamp.error.not_authorized` error
/// naming the action and the URI.
pub(crate) fn not_authorized(s: &Session, realm: &Realm, action: Action, uri: &str) -> OpError {
    Metrics::inc(&realm.metrics.not_authorized);
    tracing::info!(
        session = s.id,
        authid = %Clip(&s.authid),
        authrole = %Clip(&s.authrole),
        action = action.as_str(),
        uri = %Clip(uri),
        "not authorized"
    );
    (
        errors::NOT_AUTHORIZED,
        format!(
            "session {} (authid \"{}\", role \"{}\") is not authorized to {action} \"{uri}\"",
            s.id, s.authid, s.authrole
        ),
    )
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
