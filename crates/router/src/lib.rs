//! Switchyard's router core: realms, sessions, the Broker and the Dealer.
//!
//! It knows nothing of sockets: a transport creates a [`Peer`] (the bounded
//! outbound queue it drains) and a [`Connection`], feeds the connection each
//! received frame, and writes what the peer's queue yields.
//!
//! Layers, bottom to top (a module imports only those below it, apart from
//! a module and its own children; `scripts/import-graph.py` checks it):
//! leaves (`logsafe`, `traffic`, `metrics`, `uri_index`, `transport_info`, `features`,
//! `outbound_queue`, `peer`); `session` and `authz`; shared details (`details`, `errors`) and
//! the cluster seam (`backplane`); `broker`, `dealer`, `hooks`; `internal`
//! (the router's own calls); `auth`; `realm`; `meta`; `router`; and
//! `connection`, the per-connection state machine that drives them all.
//! docs/ARCHITECTURE.md maps every file.

pub mod app_auth;
pub mod auth;
pub mod authz;
pub mod backplane;
pub mod broker;
pub mod connection;
pub mod dealer;
pub mod details;
pub mod errors;
pub mod features;
pub mod hooks;
pub mod internal;
pub mod latency;
pub mod logsafe;
mod meta;
pub mod metrics;
pub mod outbound_queue;
pub mod peer;
pub mod realm;
pub mod router;
pub mod session;
pub mod traffic;
pub mod transport_info;
pub mod uri_index;

pub use connection::{Connection, Flow};
pub use details::Disclosure;
pub use peer::{OutboundBudget, OutboundLimits, OutboundRx, Outgoing, Peer, SlowConsumerPolicy};
pub use realm::{Realm, RealmConfig};
pub use router::{HandshakeLimits, Router};
pub use session::Session;
pub use transport_info::{ClientCert, TransportInfo};

/// A random id in [1, 2^53] for which `taken` is false (subscription and
/// registration ids: random, so they cannot be guessed or enumerated).
pub(crate) fn unused_random_id(taken: impl Fn(u64) -> bool) -> u64 {
    loop {
        let id = switchyard_proto::id::random_id();
        if !taken(id) {
            return id;
        }
    }
}
