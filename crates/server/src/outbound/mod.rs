//! Outbound HTTP whose shape a client chooses: the two places where a WAMP
//! client decides part of a request the router sends, and the limits on
//! each (docs/SECURITY.md):
//!
//! - `destinations.rs`: the destination itself (a queue declared at run
//!   time with an HTTP target): an allow-list of URL prefixes, and a
//!   connector that checks every resolved address (SSRF, DNS rebinding);
//! - `callee_request.rs`: the path, method and headers a caller may put
//!   into the request of an HTTP callee (`bridge::callee`), whose base URL
//!   the operator wrote.

pub mod callee_request;
pub mod client;
pub mod destinations;
