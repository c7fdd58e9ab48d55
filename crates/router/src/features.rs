//! What a client announced in `HELLO.Details.roles.<role>.features`. The
//! Dealer only sends a client the advanced messages (INTERRUPT, progressive
//! INVOCATIONs) it said it understands. (`receive_progress` is not among
//! them: the caller's wish is passed to every callee, whether it announced
//! `progressive_call_results` or not, as some clients never announce it.)

use switchyard_proto::{Dict, Value};

/// Advanced RPC features announced by a client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientFeatures {
    /// `callee.features.call_canceling`: the callee understands INTERRUPT.
    pub callee_call_canceling: bool,
    /// `callee.features.progressive_call_invocations`.
    pub callee_progressive_call_invocations: bool,
    /// `callee.features.registration_revocation`: the callee understands an
    /// UNREGISTERED the router sends on its own (request 0).
    pub callee_registration_revocation: bool,
    /// `caller.features.progressive_call_invocations`: the caller may send
    /// `CALL.Options.progress`, and its CALL request ids follow the spec's
    /// watermark rule.
    pub caller_progressive_call_invocations: bool,
}

impl ClientFeatures {
    /// Reads the features from HELLO.Details.
    pub fn from_hello(details: &Dict) -> Self {
        let roles = details.get("roles").and_then(Value::as_dict);
        let feature = |role: &str, name: &str| -> bool {
            roles
                .and_then(|r| r.get(role))
                .and_then(Value::as_dict)
                .and_then(|r| r.get("features"))
                .and_then(Value::as_dict)
                .and_then(|f| f.get_bool(name))
                .unwrap_or(false)
        };
        // The spec spells it "call_canceling" and, in one section,
        // "call_cancelling"; accept both.
        let canceling =
            |role: &str| feature(role, "call_canceling") || feature(role, "call_cancelling");
        ClientFeatures {
            callee_call_canceling: canceling("callee"),
            callee_progressive_call_invocations: feature("callee", "progressive_call_invocations")
                && canceling("callee"),
            callee_registration_revocation: feature("callee", "registration_revocation"),
            caller_progressive_call_invocations: feature("caller", "progressive_call_invocations"),
        }
    }
}
