//! WAMP v2 protocol: messages, ids, URI rules and the JSON, MessagePack and
//! CBOR codecs. This crate does no I/O.

pub mod codec;
pub mod errors;
pub mod id;
pub mod message;
pub mod uri;
mod validate;
pub mod value;

pub use codec::{DecodeError, EncodeError, Serializer};
pub use message::{Item, Message, Payload};
pub use validate::short as shown_value;
pub use value::{Dict, Value};
