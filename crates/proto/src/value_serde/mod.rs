//! Typed data to and from [`Value`] through serde: [`to_value`] turns any
//! `Serialize` type into a `Value`, [`from_value`] / [`from_value_ref`] read
//! any `Deserialize` type from one. Nothing goes through JSON on the way, so
//! binary data, the full `u64`/`i64` range and integer map keys survive.
//!
//! The mapping (the one serde_json uses, with binary data added):
//!
//! | Rust (serde data model)                      | `Value`                          |
//! |----------------------------------------------|----------------------------------|
//! | `bool`, `String`/`&str`/`char`               | `Bool`, `Str`                    |
//! | integers (`u128`/`i128` when they fit 64 bits) | `UInt` (≥ 0) or `Int` (< 0)    |
//! | `f32`, `f64`                                 | `Float`                          |
//! | bytes (`serde_bytes`, `Value::Bytes`)        | `Bytes` (a `Vec<u8>` is a list of integers; reading accepts both) |
//! | `()`, `None`, unit struct                    | `Null` (`Some(x)` is `x`)        |
//! | `Vec`, slice, tuple, tuple struct            | `List`                           |
//! | map, struct                                  | `Dict` (map keys: strings; integer, bool and char keys as their text, read back by the key's type) |
//! | newtype struct                               | its content                      |
//! | enum: unit variant / others                  | `Str(variant)` / `Dict{variant: content}` |
//!
//! Reading is strict where a guess would surprise: a struct is read from a
//! `Dict` only (not from a list), an integer type from an integer only (not
//! from a float), and a list or tuple must have exactly the expected length.
//! Errors say where: `at kwargs.user.age: invalid type: ...` style paths
//! (`at [1].name: ...`).

mod de;
mod ser;

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use crate::value::{Dict, Value};

pub use de::ValueDeserializer;
pub use ser::ValueSerializer;

/// The newtype-struct name under which `Value::Bytes` serializes (as WAMP's
/// JSON text of binary data): [`ValueSerializer`] turns it back into bytes.
pub const BYTES_TOKEN: &str = "$switchyard_proto::value::Bytes";

/// Converts `value` into a [`Value`].
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value, Error> {
    value.serialize(ValueSerializer)
}

/// Reads a `T` from `value`.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, Error> {
    from_value_ref(&value)
}

/// Reads a `T` from a borrowed `value` (`T` may borrow strings and bytes
/// from it).
pub fn from_value_ref<'de, T: Deserialize<'de>>(value: &'de Value) -> Result<T, Error> {
    T::deserialize(ValueDeserializer::new(value))
}

/// Why a conversion failed: serde's message and where in the value.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    message: String,
    /// Innermost segment first (errors gain segments on the way out).
    path: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Index(usize),
    Key(String),
}

impl Error {
    /// An error with a message and no location.
    pub fn new(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
            path: Vec::new(),
        }
    }

    /// serde's message, without the location.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Where the error is, e.g. `[1].name` (empty at the top).
    pub fn path(&self) -> String {
        let mut out = String::new();
        for s in self.path.iter().rev() {
            match s {
                Segment::Index(i) => out.push_str(&format!("[{i}]")),
                Segment::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                }
            }
        }
        out
    }

    /// The same error, located inside element `i` of a list.
    pub fn at_index(mut self, i: usize) -> Self {
        self.path.push(Segment::Index(i));
        self
    }

    /// The same error, located inside entry `key` of a dict.
    pub fn at_key(mut self, key: &str) -> Self {
        self.path.push(Segment::Key(key.to_owned()));
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "at {}: {}", self.path(), self.message)
        }
    }
}

impl std::error::Error for Error {}

impl serde::ser::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error::new(msg.to_string())
    }
}

impl serde::de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error::new(msg.to_string())
    }
}

impl<'de> Deserialize<'de> for Dict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Dict(dict) => Ok(dict),
            other => Err(serde::de::Error::invalid_type(
                de::unexpected(&other),
                &"a dict",
            )),
        }
    }
}

#[cfg(test)]
mod tests;
