//! The router's own error URIs, beyond the WAMP ones in
//! `switchyard_proto::errors`: shared by every part that refuses something
//! (the Dealer, the meta API, the connection's checks).

/// The error URI of a limit (per session, per realm, per message size).
pub const LIMIT_EXCEEDED: &str = "switchyard.error.limit_exceeded";

/// Why an internal call failed: the error URI and the first argument (a
/// message) if any.
#[derive(Debug, Clone, PartialEq)]
pub struct CallFailure {
    pub error: String,
    pub message: String,
    /// The ERROR's arguments, as the callee sent them.
    pub args: Vec<switchyard_proto::Value>,
    pub kwargs: switchyard_proto::Dict,
    /// True when no callee took the call: the Dealer answered itself
    /// because none is registered, none has capacity (and the wait queue is
    /// full), or the callee left before the call reached it. False for an
    /// ERROR a callee sent, even one with the URI
    /// `wamp.error.no_such_procedure`, and for the router's other refusals.
    pub unserved: bool,
}

impl CallFailure {
    pub(crate) fn new(error: &str, message: String) -> Self {
        CallFailure {
            error: error.to_string(),
            message,
            args: Vec::new(),
            kwargs: switchyard_proto::Dict::new(),
            unserved: false,
        }
    }
}
