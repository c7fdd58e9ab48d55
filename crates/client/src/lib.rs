//! An async (tokio) WAMP v2 client for Switchyard's command-line client
//! (`switchyard publish|call|subscribe|register|queue`, in the server crate),
//! its benchmarks and its tests; the server also reads client certificates
//! with its [`der`] module.
//!
//! Two layers:
//!
//! * [`transport`]: connect a WebSocket (`ws://host:port/path`, or over TLS
//!   `wss://host:port/path`, see [`tls`]) or RawSocket (`rs://host:port`,
//!   `tcp://host:port`, `unix:/path`) transport and send or
//!   receive whole frames as [`bytes::Bytes`], with the handshake outcome.
//!   Nothing is decoded, so tests can send malformed frames and read the raw
//!   replies.
//! * [`Session`]: join a realm and publish, subscribe, call and register,
//!   with any number of requests in flight at once.
//!
//! [`ReconnectingSession`] (module [`reconnect`]) keeps a session up across
//! router restarts: it reconnects with backoff and jitter, joins again and
//! re-establishes its subscriptions and registrations.
//!
//! [`Credentials`] (module [`auth`]) add ticket, WAMP-CRA and cryptosign
//! authentication to [`SessionOptions`].
//!
//! Payloads use [`switchyard_proto`]'s [`Value`], [`Dict`] and [`Payload`]; the
//! codecs are that crate's.
//!
//! ```no_run
//! # async fn demo() -> Result<(), switchyard_client::Error> {
//! use switchyard_client::{Dict, Serializer, Session, Value};
//!
//! let s = Session::connect("rs://127.0.0.1:8081", "realm1", Serializer::MsgPack).await?;
//! let id = s.publish("com.example.hello", vec![Value::from("hi")], Dict::new(), true).await?;
//! assert!(id.is_some());
//! s.leave().await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod auth;
pub mod error;
pub mod reconnect;
pub mod session;
pub mod tls;
pub mod transport;

/// The DER reader of certificates, now the `switchyard-x509` crate (shared
/// with the server); kept under this name for existing users.
pub use switchyard_x509 as der;

pub use auth::Credentials;
pub use error::{CallError, CloseInfo, Error, TransportError, WampError};
pub use reconnect::{ReconnectOptions, ReconnectingSession};
pub use session::{
    payload, raw_payload, CallResult, ChallengeHandler, Event, HandlerResult, Invocation,
    Registration, Session, SessionOptions, Subscription,
};
pub use switchyard_proto::{Dict, Item, Message, Payload, Serializer, Value};
pub use transport::{
    connect, Connection, FrameReceiver, FrameSender, Incoming, Outgoing, RawSocketHandshake,
    TransportInfo, TransportOptions,
};
