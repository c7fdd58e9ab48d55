//! What one side of the router learns about another: whether a caller or
//! publisher is disclosed ([`Disclosure`]), and the details dictionaries the
//! meta API and the meta events tell about sessions, registrations and
//! subscriptions.
//!
//! These sit below the Broker, the Dealer and the realm so that all of them
//! (and the meta procedures) can use them without importing each other.

use serde::Deserialize;
use switchyard_proto::Dict;

use crate::session::Session;
use crate::uri_index::MatchPolicy;

/// Whether a peer's identity is disclosed to the other side (callers to
/// callees; later publishers to subscribers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Disclosure {
    /// When the peer asks (`disclose_me`) or the receiver asks
    /// (`disclose_caller` on REGISTER). The default.
    #[default]
    OnRequest,
    /// Always, whatever anyone asks.
    Always,
    /// Never; a `disclose_me` request is refused with
    /// `wamp.error.option_disallowed.disclose_me`.
    Never,
}

/// `wamp.session.get` / `on_join` details of a session.
/// Besides the spec's keys: `joined` (ISO 8601) and, for a client
/// session, its transport's `type` (`websocket`, `rawsocket`), `peer_ip`
/// and `tls`.
pub fn session_details(s: &Session) -> Dict {
    let mut transport = Dict::new()
        .with("peer", s.peer.label())
        .with("serializer", s.peer.serializer().to_string());
    if let Some(t) = &s.transport {
        transport.insert("type", t.kind);
        if let Some(ip) = t.peer_ip {
            transport.insert("peer_ip", ip.to_string());
        }
        transport.insert("tls", t.tls);
    }
    Dict::new()
        .with("session", s.id)
        .with("authid", s.authid.as_str())
        .with("authrole", s.authrole.as_str())
        .with("authmethod", s.authmethod.as_str())
        .with("authprovider", s.authprovider.as_str())
        .with(
            "joined",
            humantime::format_rfc3339_millis(s.joined).to_string(),
        )
        .with("transport", transport)
}

/// What the meta API tells about a registration or subscription: `id`,
/// `created` (ISO 8601), `uri`, `match`.
pub(crate) fn pattern_details(
    id: u64,
    created: std::time::SystemTime,
    uri: &str,
    policy: MatchPolicy,
) -> Dict {
    Dict::new()
        .with("id", id)
        .with(
            "created",
            humantime::format_rfc3339_millis(created).to_string(),
        )
        .with("uri", uri)
        .with("match", policy.as_str())
}
