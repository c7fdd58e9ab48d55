//! WAMP v2 protocol: messages, ids, URI rules and the JSON, MessagePack and
//! CBOR codecs, and the wire formats that the router and the client share
//! (the RawSocket handshake and framing, [`rawsocket`]; the WAMP-CRA
//! computations, [`auth::wampcra`]). This crate does no I/O.

pub mod auth;
pub mod codec;
pub mod errors;
pub mod id;
pub mod message;
pub mod rawsocket;
pub mod uri;
mod validate;
pub mod value;
pub mod value_serde;

pub use codec::{DecodeError, EncodeError, Serializer};
pub use message::{Item, Message, Payload};
pub use validate::short as shown_value;
pub use value::{Dict, Value};
