//! The session's life on a connection: HELLO (realm, size limits,
//! authentication start), CHALLENGE and AUTHENTICATE (with the login
//! throttle), WELCOME (the session joins its realm) or ABORT, and GOODBYE or
//! ABORT from the client of an established session.

use std::sync::Arc;
use std::time::Instant;

use switchyard_proto::{errors, Dict, Message};

use super::rate_limit::RateLimit;
use super::state::{Connection, Flow, PendingClaim, State};
use crate::auth::{self, AuthMethod, Start, Verdict};
use crate::errors::LIMIT_EXCEEDED;
use crate::features::ClientFeatures;
use crate::logsafe::Clip;
use crate::metrics::Metrics;
use crate::realm::Realm;
use crate::router::HandshakeLimits;
use crate::session::{Identity, Session};
use crate::traffic::AuthFailure;

/// How many ids a joining session tries before it is refused, when other
/// nodes' sessions hold them (each draw is random in [1, 2^53]).
const MAX_CLAIMS: u32 = 3;

impl Connection {
    pub(super) fn handle_hello(&mut self, msg: Message) -> Flow {
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
        match realm.auth().start(&details, &self.transport, session_id) {
            Start::Welcome(identity) => {
                self.establish(realm, session_id, identity, features, &agent)
            }
            Start::Abort(reason, message) => {
                let method = realm
                    .auth()
                    .choose(&details, &self.transport)
                    .map_or("none", AuthMethod::as_str);
                if reason == auth::AUTHENTICATION_FAILED {
                    // A throttled client learns that, not whether its key
                    // is known; otherwise the attempt counts.
                    if let Err(flow) = self.start_attempt(&realm, details.get_str("authid"), method)
                    {
                        return flow;
                    }
                    Metrics::inc(&realm.metrics.auth_failed);
                    realm
                        .metrics
                        .traffic
                        .auth_failed(method, AuthFailure::Refused);
                } else {
                    realm
                        .metrics
                        .traffic
                        .auth_failed(method, AuthFailure::NoMatchingMethod);
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
                match self.start_attempt(&realm, Some(pending.authid()), method) {
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
        method: &'static str,
    ) -> Result<std::time::Duration, Flow> {
        match realm.throttle.start(self.transport.peer_ip, authid) {
            Ok(delay) => Ok(delay),
            Err(refusal) => {
                Metrics::inc(&realm.metrics.auth_throttled);
                realm
                    .metrics
                    .traffic
                    .auth_failed(method, AuthFailure::Throttled);
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
    pub(super) fn handle_authenticate(&mut self, msg: Message) -> Flow {
        let State::Authenticating { pending, realm, .. } = &mut self.state else {
            return Flow::Close;
        };
        match msg {
            Message::Authenticate { signature, .. } => match pending.take() {
                Some(p) => {
                    let (method, authid) = (p.method(), p.authid().to_string());
                    let check = realm.verify(p, signature, &self.transport);
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

    /// Creates the session; in a cluster, claims its id first (WELCOME
    /// waits for the claim in [`Connection::resume`]).
    fn establish(
        &mut self,
        realm: Arc<Realm>,
        session_id: u64,
        identity: Identity,
        features: ClientFeatures,
        agent: &str,
    ) -> Flow {
        let session = self.new_session(session_id, identity.clone(), features);
        if let Some(wait) = realm.backplane().and_then(|b| b.claim_session(&session)) {
            self.claim = Some(Box::new(PendingClaim {
                realm,
                session,
                identity,
                features,
                agent: agent.to_string(),
                wait,
                tries: 1,
            }));
            return Flow::Suspend;
        }
        self.welcome(realm, session, agent)
    }

    fn new_session(&self, id: u64, identity: Identity, features: ClientFeatures) -> Arc<Session> {
        let mut session = Session::new(id, identity, features, self.peer.clone());
        session.transport = Some(self.transport.summary());
        Arc::new(session)
    }

    /// Waits for the cluster-wide claim of a session's id: WELCOME when it
    /// is the session's, another id when another node's session holds it
    /// (at most [`MAX_CLAIMS`] tries).
    pub(super) async fn finish_claim(&mut self, claim: PendingClaim) -> Flow {
        let PendingClaim {
            realm,
            mut session,
            identity,
            features,
            agent,
            mut wait,
            mut tries,
        } = claim;
        loop {
            if wait.await {
                return self.welcome(realm, session, &agent);
            }
            tracing::warn!(
                session = session.id,
                realm = realm.name(),
                "session id held by another node's session: drawing another"
            );
            let next = realm.backplane().filter(|_| tries < MAX_CLAIMS).map(|b| {
                let s = self.new_session(realm.unused_session_id(), identity.clone(), features);
                (b.claim_session(&s), s)
            });
            match next {
                Some((Some(w), s)) => {
                    (session, wait) = (s, w);
                    tries += 1;
                }
                Some((None, s)) => return self.welcome(realm, s, &agent),
                None => {
                    return self.abort(
                        errors::CLOSE_SYSTEM_SHUTDOWN,
                        "session id collision, try again",
                    )
                }
            }
        }
    }

    /// Adds the session to its realm, sends WELCOME and announces it.
    fn welcome(&mut self, realm: Arc<Realm>, session: Arc<Session>, agent: &str) -> Flow {
        if !realm.join(session.clone()) {
            // Another session took the id since it was drawn (p ~ 2^-53).
            if let Some(b) = realm.backplane() {
                b.session_left(&session);
            }
            return self.abort(
                errors::CLOSE_SYSTEM_SHUTDOWN,
                "session id collision, try again",
            );
        }
        let welcome = Message::Welcome {
            session: session.id,
            details: welcome_details(realm.name(), &session, true),
        };
        // Encoded once: the frame that passes the size check is the one sent.
        let frame = session.encode(&welcome).or_else(|_| {
            // A RawSocket client may accept as little as 512 bytes, less
            // than the feature announcement: it gets the Basic Profile view.
            tracing::debug!(
                session = session.id,
                max = self.peer.max_message_len(),
                "WELCOME without the feature list: the client accepts too little"
            );
            session.encode(&Message::Welcome {
                session: session.id,
                details: welcome_details(realm.name(), &session, false),
            })
        });
        self.peer.set_session(session.id);
        self.peer
            .name_session(session.id, realm.name(), &session.authid);
        match frame {
            Ok(frame) => {
                self.peer.send(frame);
            }
            Err((_, reason)) => {
                tracing::warn!(
                    session = session.id,
                    "not sending WELCOME: {}",
                    Clip(&reason)
                )
            }
        }
        realm.announce_join(&session);
        self.counted = Some(self.router.metrics().traffic.session(
            realm.name(),
            self.transport.kind,
            self.peer.serializer(),
            &session.authrole,
        ));
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
        self.rate = RateLimit::new(realm.config().max_messages_per_second);
        self.state = State::Established { session, realm };
        Flow::Continue
    }

    /// Answers an AUTHENTICATE with its `verdict` (by `method`, for the
    /// `authid` the client claimed): WELCOME or ABORT.
    pub(super) fn finish_authentication(
        &mut self,
        method: &'static str,
        authid: String,
        verdict: Verdict,
    ) -> Flow {
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
                realm.metrics.traffic.auth_failed(method, AuthFailure::Busy);
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
                let why = if reason == errors::PROTOCOL_VIOLATION {
                    AuthFailure::ProtocolViolation
                } else {
                    AuthFailure::Rejected
                };
                realm.metrics.traffic.auth_failed(method, why);
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

    /// GOODBYE from the client: GOODBYE back (unless it is the answer to
    /// ours), the session ends, and the transport may carry a new HELLO.
    pub(super) fn goodbye(&mut self, s: &Session, reason: &str) -> Flow {
        tracing::debug!(session = s.id, reason = %Clip(reason), "GOODBYE from client");
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
        Flow::Continue
    }

    /// ABORT from the client of an established session: it ends, and the
    /// transport closes.
    pub(super) fn client_abort(&mut self, s: &Session, reason: &str) -> Flow {
        tracing::debug!(session = s.id, reason = %Clip(reason), "ABORT from client");
        self.leave();
        self.peer.close_after_flush();
        Flow::Close
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
    // Each role announces its own features.
    let roles = Dict::new()
        .with(
            "broker",
            Dict::new().with("features", features(crate::broker::FEATURES)),
        )
        .with(
            "dealer",
            Dict::new().with("features", features(crate::dealer::FEATURES)),
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
fn oversized_hello(realm: &str, details: &Dict, limits: &HandshakeLimits) -> Option<String> {
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
