//! Typed arguments through serde: how a Rust value becomes a WAMP payload
//! (`Arguments` and `ArgumentsKw`) and back. [`ToPayload`] and
//! [`FromPayload`] hold the rules; the typed methods of
//! [`crate::Session`] and [`crate::ReconnectingSession`] (`call_typed`,
//! `register_typed`, `publish_typed`, `subscribe_typed`, in [`session`])
//! apply them. Values convert with [`switchyard_proto::value_serde`]
//! directly, not through JSON: binary data, the whole `u64` range and
//! integer map keys survive.
//!
//! **Sending** (`T: Serialize`), by what `T` serializes to:
//!
//! | `T` serializes to                               | the payload                      |
//! |-------------------------------------------------|----------------------------------|
//! | a list: tuple, tuple struct, `Vec`, array       | positional `Arguments`           |
//! | a dict: struct, map (and enum variants with content) | keyword `ArgumentsKw`       |
//! | null: `()`, `None`, a unit struct               | no arguments                     |
//! | anything else: a number, string, bytes, unit enum variant | one positional argument |
//!
//! So `(2, 3)` sends `[2, 3]`, `Point { x, y }` sends `{x, y}` as keyword
//! arguments, and `5` sends `[5]`. To send one list or one struct as a
//! single positional argument, wrap it in a 1-tuple: `(vec,)`, `(point,)`.
//! To send both parts, use [`ArgsKw`]`{ args, kwargs }`.
//!
//! **Receiving** (`T: DeserializeOwned`), by what arrived:
//!
//! | the payload                  | `T` is read from                                      |
//! |------------------------------|-------------------------------------------------------|
//! | nothing                      | nothing: `()`, `None`, an empty `Vec`/map, a struct whose fields are all optional or defaulted |
//! | one positional argument      | that argument; if `T` does not fit it, the list of the one argument (so `(u64,)` and `Vec<u64>` read `[5]`) |
//! | several positional arguments | their list: a tuple of that many, a `Vec`             |
//! | only keyword arguments       | their dict: a struct, a map                           |
//! | both                         | the positional arguments as above; if `T` does not fit them, the keyword arguments |
//!
//! A struct is read from a dict only (never from a list), so a struct takes
//! keyword arguments, or one positional argument that is a dict (what
//! Autobahn and most clients send when a procedure returns a dict). What
//! Python or JavaScript return as one list (`return [1, 2]`) arrives as one
//! positional argument and reads into a `Vec` or a tuple alike. To read
//! both parts, ask for [`ArgsKw<A, K>`]: `A` from the list of positional
//! arguments, `K` from the keyword arguments. To accept and ignore any
//! arguments, take [`serde::de::IgnoredAny`].
//!
//! When nothing fits, the error is the one of the first reading tried, with
//! serde's message and where (`at [0].age: invalid type: ...`).

pub mod session;

use serde::de::{self, DeserializeOwned, Visitor};
use serde::{Deserializer, Serialize};
use switchyard_proto::value_serde::{self, from_value_ref, to_value};
use switchyard_proto::{Dict, Payload, Value};

use crate::error::WampError;
use crate::session::{payload, CallResult, Event, Invocation};

pub use session::{INVALID_ARGUMENT, INVALID_RESULT, TYPED_EVENT_QUEUE, WAMP_INVALID_ARGUMENT};
pub use value_serde::Error as ValueError;

/// Both parts of a payload, as one value: `args` are the positional
/// arguments (it must serialize to a list, or to null for none), `kwargs`
/// the keyword arguments (a dict, or null for none). Reading, `args` reads
/// the list of positional arguments as a whole and `kwargs` their dict.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ArgsKw<A, K> {
    /// The positional arguments.
    pub args: A,
    /// The keyword arguments.
    pub kwargs: K,
}

/// A value that can be sent as a payload: every `Serialize` type (see the
/// module documentation for the rule) and [`ArgsKw`].
pub trait ToPayload {
    /// The positional and keyword arguments to send.
    fn to_parts(&self) -> Result<(Vec<Value>, Dict), ValueError>;

    /// The payload to send.
    fn to_payload(&self) -> Result<Payload, ValueError> {
        let (args, kwargs) = self.to_parts()?;
        Ok(payload(args, kwargs))
    }
}

/// A value that can be read from a payload: every `DeserializeOwned` type
/// (see the module documentation for the rule) and [`ArgsKw`].
pub trait FromPayload: Sized {
    /// Reads `Arguments` and `ArgumentsKw`.
    fn from_parts(args: Vec<Value>, kwargs: Dict) -> Result<Self, ValueError>;

    /// Decodes `payload` and reads it.
    fn from_payload(payload: &Payload) -> Result<Self, ValueError> {
        let (args, kwargs) = decode(payload)?;
        Self::from_parts(args, kwargs)
    }
}

impl<T: Serialize + ?Sized> ToPayload for T {
    fn to_parts(&self) -> Result<(Vec<Value>, Dict), ValueError> {
        Ok(match to_value(self)? {
            Value::Null => (Vec::new(), Dict::new()),
            Value::List(args) => (args, Dict::new()),
            Value::Dict(kwargs) => (Vec::new(), kwargs),
            one => (vec![one], Dict::new()),
        })
    }
}

impl<A: Serialize, K: Serialize> ToPayload for ArgsKw<A, K> {
    fn to_parts(&self) -> Result<(Vec<Value>, Dict), ValueError> {
        let args = match to_value(&self.args).map_err(|e| e.at_key("args"))? {
            Value::Null => Vec::new(),
            Value::List(l) => l,
            other => {
                return Err(ValueError::new(format!(
                    "ArgsKw.args must serialize to a list (a tuple, a Vec), not a {}",
                    other.type_name()
                )))
            }
        };
        let kwargs = match to_value(&self.kwargs).map_err(|e| e.at_key("kwargs"))? {
            Value::Null => Dict::new(),
            Value::Dict(d) => d,
            other => {
                return Err(ValueError::new(format!(
                    "ArgsKw.kwargs must serialize to a dict (a struct, a map), not a {}",
                    other.type_name()
                )))
            }
        };
        Ok((args, kwargs))
    }
}

impl<T: DeserializeOwned> FromPayload for T {
    fn from_parts(args: Vec<Value>, kwargs: Dict) -> Result<Self, ValueError> {
        let kwargs = (!kwargs.is_empty()).then_some(Value::Dict(kwargs));
        let n = args.len();
        let list = Value::List(args);
        let first = match (&list, n) {
            (_, 0) => {
                return match &kwargs {
                    None => T::deserialize(Nothing),
                    Some(kw) => from_value_ref(kw),
                }
            }
            (Value::List(items), 1) => {
                from_value_ref(&items[0]).or_else(|e| from_value_ref(&list).map_err(|_| e))
            }
            _ => from_value_ref(&list),
        };
        match (first, &kwargs) {
            (Ok(v), _) => Ok(v),
            (Err(e), Some(kw)) => from_value_ref(kw).map_err(|_| e),
            (Err(e), None) => Err(e),
        }
    }
}

impl<A: DeserializeOwned, K: DeserializeOwned> FromPayload for ArgsKw<A, K> {
    fn from_parts(args: Vec<Value>, kwargs: Dict) -> Result<Self, ValueError> {
        let args = if args.is_empty() {
            A::deserialize(Nothing)
        } else {
            from_value_ref(&Value::List(args))
        }
        .map_err(|e| e.at_key("args"))?;
        let kwargs = if kwargs.is_empty() {
            K::deserialize(Nothing)
        } else {
            from_value_ref(&Value::Dict(kwargs))
        }
        .map_err(|e| e.at_key("kwargs"))?;
        Ok(ArgsKw { args, kwargs })
    }
}

fn decode(p: &Payload) -> Result<(Vec<Value>, Dict), ValueError> {
    let args = match &p.args {
        None => Vec::new(),
        Some(item) => match item.to_value().map_err(|e| ValueError::new(e.0))? {
            Value::List(l) => l,
            other => {
                return Err(ValueError::new(format!(
                    "Arguments is a {}, not a list",
                    other.type_name()
                )))
            }
        },
    };
    let kwargs = match &p.kwargs {
        None => Dict::new(),
        Some(item) => match item.to_value().map_err(|e| ValueError::new(e.0))? {
            Value::Dict(d) => d,
            other => {
                return Err(ValueError::new(format!(
                    "ArgumentsKw is a {}, not a dict",
                    other.type_name()
                )))
            }
        },
    };
    Ok((args, kwargs))
}

/// An absent payload: unit, `None`, an empty sequence or an empty map.
struct Nothing;

impl<'de> Deserializer<'de> for Nothing {
    type Error = ValueError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        visitor.visit_unit()
    }
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        visitor.visit_none()
    }
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        visitor.visit_seq(de::value::SeqDeserializer::new(std::iter::empty::<()>()))
    }
    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        self.deserialize_seq(visitor)
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        self.deserialize_seq(visitor)
    }
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        visitor.visit_map(de::value::MapDeserializer::new(
            std::iter::empty::<((), ())>(),
        ))
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        self.deserialize_map(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct newtype_struct enum identifier ignored_any
    }
}

impl WampError {
    /// An error whose payload is `value`, by the sending rule of
    /// [`crate::typed`] (a struct becomes the error's keyword arguments). If
    /// `value` does not serialize, the payload is that failure's message.
    pub fn with_typed(uri: impl Into<String>, value: impl ToPayload) -> Self {
        match value.to_parts() {
            Ok((args, kwargs)) => WampError {
                args,
                kwargs,
                ..WampError::new(uri)
            },
            Err(e) => {
                WampError::with_message(uri, format!("the error's payload does not serialize: {e}"))
            }
        }
    }

    /// Reads the error's `args`/`kwargs` as a `T` (see [`crate::typed`]).
    pub fn typed<T: FromPayload>(&self) -> Result<T, ValueError> {
        T::from_parts(self.args.clone(), self.kwargs.clone())
    }
}

impl Event {
    /// Reads the event's payload as a `T` (see [`crate::typed`] for the rule).
    pub fn typed<T: FromPayload>(&self) -> Result<T, ValueError> {
        T::from_payload(&self.payload)
    }
}

impl Invocation {
    /// Reads the invocation's arguments as an `A` (see [`crate::typed`]).
    pub fn typed<A: FromPayload>(&self) -> Result<A, ValueError> {
        A::from_payload(&self.payload)
    }
}

impl CallResult {
    /// Reads the result as an `R` (see [`crate::typed`]).
    pub fn typed<R: FromPayload>(&self) -> Result<R, ValueError> {
        R::from_payload(&self.payload)
    }
}

#[cfg(test)]
mod tests;
