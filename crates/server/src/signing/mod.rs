//! Every request signature the server makes or checks, in one place, so
//! that the side that signs and the side that verifies cannot drift apart.
//!
//! | Who | Signs or verifies | Scheme |
//! |---|---|---|
//! | bridge `/publish`, `/call` (`bridge::auth`) | verifies | Crossbar-compatible |
//! | bridge `/queues/{name}/jobs` (`bridge::auth`) | verifies | bound (method, path, `Idempotency-Key`, body) |
//! | bridge, every endpoint, `X-Authentication` header (`bridge::auth`) | verifies | header (method, path and query, `Idempotency-Key`, body) |
//! | bridge webhooks (`bridge`) | verifies | `X-Hub-Signature-256` |
//! | HTTP subscribers (`bridge::subscriber`) | signs | Crossbar-compatible |
//! | queue HTTP targets (`queue_service::http_target`) | signs | Crossbar-compatible; destination-scoped for a URL a client chose |
//! | HTTP callees with `key`/`secret` (`bridge::callee`) | signs | Crossbar-compatible |
//! | the app's authenticator / authorizer URLs (`app_auth`) | signs | Crossbar-compatible |
//!
//! - `schemes.rs`: the MACs of each scheme (what both sides compute);
//! - `verify.rs`: the checks on an incoming signed request (counters,
//!   constant-time comparison, timestamp window);
//! - `replay.rs`: the replay cache (each accepted signature is accepted once);
//! - `outgoing.rs`: signing the requests the router sends.

pub mod outgoing;
pub mod replay;
pub mod schemes;
pub mod verify;

pub use outgoing::{destination_signed_url, signed_url};
pub use replay::{Refused, ReplayCache};
pub use schemes::verify_hub;
pub use verify::{Params, Scheme, SIGNING_PARAMS};
