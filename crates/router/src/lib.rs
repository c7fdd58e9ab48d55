//! Switchyard's router core: realms, sessions, the Broker and the Dealer.
//!
//! It knows nothing of sockets: a transport creates a [`Peer`] (the bounded
//! outbound queue it drains) and a [`Connection`], feeds the connection each
//! received frame, and writes what the peer's queue yields.

pub mod broker;
pub mod connection;
pub mod dealer;
pub mod peer;
pub mod realm;
pub mod router;
pub mod session;

pub use connection::{Connection, Flow};
pub use peer::{Outgoing, Peer, SlowConsumerPolicy};
pub use realm::{Realm, RealmConfig};
pub use router::Router;
pub use session::Session;
