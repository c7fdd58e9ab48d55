//! The checks every message of an established session goes through before
//! it is routed, shared by the message families: URI length and syntax,
//! the reserved `wamp.` namespace, match policies, authorization (static
//! roles, the session's cache, the realm's authorizer procedure) and the
//! per-session and per-realm limits on subscriptions and registrations.
//!
//! Each check answers `Result<_, OpError>` (the error URI and message the
//! client gets), so that a handler chains them with `?`/`and_then`.

use std::sync::Arc;

use switchyard_proto::message::code;
use switchyard_proto::{errors, uri, Dict, Message};

use crate::authz::{cache_key, Action, Decision};
use crate::errors::LIMIT_EXCEEDED;
use crate::metrics::Metrics;
use crate::realm::{AskFuture, Realm};
use crate::session::{OpError, Session};
use crate::uri_index::MatchPolicy;

/// A message refused before anything is looked up or kept for it.
pub(super) enum Refusal {
    /// Answer ERROR for this request type and id.
    Error(u64, u64, OpError),
    /// Answer nothing (an unacknowledged PUBLISH).
    Silent,
    /// A message that gets no ERROR (GOODBYE, ERROR...): a protocol violation.
    Violation(String),
}

/// Refuses a message whose URI is longer than the realm's `max_uri_length`.
pub(super) fn uri_length(realm: &Realm, s: &Session, msg: &Message) -> Result<(), Refusal> {
    let Some((request_type, request, what, uri)) = uri_of(msg) else {
        return Ok(());
    };
    let Err(e) = realm.check_uri_length(uri, what) else {
        return Ok(());
    };
    tracing::info!(session = s.id, "{} refused: {}", msg.name(), e.1);
    Err(match request {
        Some(request) => {
            // An unacknowledged PUBLISH gets no ERROR.
            let ack = match msg {
                Message::Publish { options, .. } => {
                    options.get_bool("acknowledge").unwrap_or(false)
                }
                _ => true,
            };
            if ack {
                Refusal::Error(request_type, request, e)
            } else {
                Refusal::Silent
            }
        }
        None => Refusal::Violation(e.1),
    })
}

/// The authorization of a message that asks for an action: None when the
/// realm checks nothing (or the message asks for no action), the decision
/// otherwise. `preauthorized` is the authorizer's answer when the message
/// comes back from waiting for it. Err: the realm's authorizer procedure
/// must be asked first (the connection waits for the answer).
pub(super) fn decide(
    realm: &Arc<Realm>,
    s: &Arc<Session>,
    msg: &Message,
    preauthorized: Option<Decision>,
) -> Result<Option<Decision>, AskFuture> {
    if !realm.authz().enabled() {
        return Ok(None);
    }
    let Some((action, uri, policy)) = action_of(msg) else {
        return Ok(None);
    };
    if let Some(d) = preauthorized {
        return Ok(Some(d));
    }
    match realm.authz().decide_pattern(s, action, uri, policy) {
        Decision::Ask => match s.cached_decision(action, &cache_key(uri, policy)) {
            Some(d) => Ok(Some(d)),
            None => Err(realm.ask_authorizer(s.clone(), action, uri.to_string(), policy)),
        },
        d => Ok(Some(d)),
    }
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

/// Applies the realm's authorization `decision` (None: nothing to check);
/// a denial is logged and answered with `wamp.error.not_authorized`. A
/// permission that discloses the caller or publisher sets `disclose_me` in
/// `options`.
pub(super) fn authorize(
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
        Decision::Deny | Decision::Ask => Err(realm.not_authorized(s, action, uri)),
    }
}

/// A concrete topic or procedure under the realm's URI rule.
pub(super) fn check_uri(u: &str, rule: uri::UriCheck, what: &str) -> Result<(), OpError> {
    uri::check(u, rule, false)
        .map_err(|reason| (errors::INVALID_URI, format!("invalid {what}: {reason}")))
}

/// A registration or subscription URI: wildcard patterns may have empty
/// components, prefix patterns may end with a dot.
pub(super) fn check_pattern(
    u: &str,
    rule: uri::UriCheck,
    policy: MatchPolicy,
) -> Result<(), OpError> {
    let allow_empty = policy != MatchPolicy::Exact;
    uri::check(u, rule, allow_empty).map_err(|reason| {
        (
            errors::INVALID_URI,
            format!("invalid {} pattern: {reason}", policy.as_str()),
        )
    })
}

/// Refuses a URI in the `wamp.` namespace, which only the router serves.
pub(super) fn not_reserved(u: &str, what: &str) -> Result<(), OpError> {
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

/// The `match` option of SUBSCRIBE (exact when absent).
pub(super) fn match_policy(options: &Dict) -> Result<MatchPolicy, OpError> {
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

/// Refuses one more subscription of `s` beyond the session's limit, or a
/// new subscription (topic and policy) beyond the realm's.
pub(super) fn subscription_limits(
    realm: &Realm,
    s: &Session,
    topic: &str,
    policy: MatchPolicy,
) -> Result<(), OpError> {
    let max = realm.config().max_subscriptions_per_session;
    if max > 0
        && realm
            .broker
            .session_subscription_over(s.id, topic, policy, max)
            .is_some()
    {
        Metrics::inc(&realm.metrics.subscription_limit);
        tracing::info!(session = s.id, max, "SUBSCRIBE refused: subscription limit");
        return Err((
            LIMIT_EXCEEDED,
            format!("a session may hold at most {max} subscriptions in this realm"),
        ));
    }
    let max = realm.config().max_subscriptions;
    if max > 0 {
        if let Some(n) = realm.broker.new_subscription_over(topic, policy, max) {
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
    Ok(())
}

/// Refuses one more registration of `s` beyond the session's limit, or a
/// new registration (procedure and policy) beyond the realm's.
pub(super) fn registration_limits(
    realm: &Realm,
    s: &Session,
    procedure: &str,
    policy: MatchPolicy,
) -> Result<(), OpError> {
    let max = realm.config().max_registrations_per_session;
    if max > 0 && realm.dealer.session_registrations(s.id) >= max {
        Metrics::inc(&realm.metrics.registration_limit);
        tracing::info!(session = s.id, max, "REGISTER refused: registration limit");
        return Err((
            LIMIT_EXCEEDED,
            format!("a session may hold at most {max} registrations in this realm"),
        ));
    }
    let max = realm.config().max_registrations;
    if max > 0 {
        if let Some(n) = realm.dealer.new_registration_over(procedure, policy, max) {
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
    Ok(())
}
