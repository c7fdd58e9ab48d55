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
//! Typed arguments (module [`typed`], docs/CLIENT-RUST.md): `call_typed`,
//! `register_typed`, `publish_typed` and `subscribe_typed` on [`Session`] and
//! [`ReconnectingSession`] take and return any serde type. A tuple or `Vec`
//! travels as positional arguments, a struct or map as keyword arguments,
//! `()`/`None` as none and any other value as one positional argument
//! ([`ArgsKw`] sends or reads both parts); a result of one positional
//! argument reads as that value. A callee answers arguments that do not
//! deserialize with `wamp.error.invalid_argument`; a caller gets
//! `switchyard.client.invalid_result` for a result that does not fit.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use serde::{Deserialize, Serialize};
//! use switchyard_client::{Serializer, Session};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Point { x: i64, y: i64 }
//!
//! let s = Session::connect("rs://127.0.0.1:8081", "realm1", Serializer::MsgPack).await?;
//! s.register_typed("com.example.norm1", |p: Point| async move { Ok(p.x.abs() + p.y.abs()) })
//!     .await?;
//! let n: i64 = s.call_typed("com.example.norm1", Point { x: 3, y: -4 }).await?;
//! assert_eq!(n, 7);
//! let (q, r): (u64, u64) = s.call_typed("com.example.divmod", (7u64, 2u64)).await?;
//! # let _ = (q, r);
//! # Ok(()) }
//! ```
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
pub mod typed;

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
pub use typed::{ArgsKw, FromPayload, ToPayload};
