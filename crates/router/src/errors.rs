//! The router's own error URIs, beyond the WAMP ones in
//! `switchyard_proto::errors`: shared by every part that refuses something
//! (the Dealer, the meta API, the connection's checks).

/// The error URI of a limit (per session, per realm, per message size).
pub const LIMIT_EXCEEDED: &str = "switchyard.error.limit_exceeded";
