//! WAMP messages: their type codes, shapes, decoding from a frame and
//! encoding for a serializer. Payloads stay raw (see [`Item`]).

use bytes::Bytes;

use crate::codec::{self, DecodeError, EncodeError, Kind, Serializer, Writer};
use crate::value::{Dict, Value};

/// Message type codes.
pub mod code {
    pub const HELLO: u64 = 1;
    pub const WELCOME: u64 = 2;
    pub const ABORT: u64 = 3;
    pub const CHALLENGE: u64 = 4;
    pub const AUTHENTICATE: u64 = 5;
    pub const GOODBYE: u64 = 6;
    pub const ERROR: u64 = 8;
    pub const PUBLISH: u64 = 16;
    pub const PUBLISHED: u64 = 17;
    pub const SUBSCRIBE: u64 = 32;
    pub const SUBSCRIBED: u64 = 33;
    pub const UNSUBSCRIBE: u64 = 34;
    pub const UNSUBSCRIBED: u64 = 35;
    pub const EVENT: u64 = 36;
    pub const CALL: u64 = 48;
    pub const CANCEL: u64 = 49;
    pub const RESULT: u64 = 50;
    pub const REGISTER: u64 = 64;
    pub const REGISTERED: u64 = 65;
    pub const UNREGISTER: u64 = 66;
    pub const UNREGISTERED: u64 = 67;
    pub const INVOCATION: u64 = 68;
    pub const INTERRUPT: u64 = 69;
    pub const YIELD: u64 = 70;
    pub const EVENT_RECEIVED: u64 = 337;
}

/// One payload element (`Arguments` or `ArgumentsKw`): either the raw bytes
/// of the frame it arrived in, or a value built by the router.
#[derive(Clone, Debug)]
pub enum Item {
    Raw { ser: Serializer, bytes: Bytes },
    Value(Value),
}

impl Item {
    /// Decodes the item (a full decode: only for transcoding and inspection).
    pub fn to_value(&self) -> Result<Value, DecodeError> {
        match self {
            Item::Raw { ser, bytes } => codec::decode_value(*ser, bytes),
            Item::Value(v) => Ok(v.clone()),
        }
    }

    fn write(&self, w: &mut codec::AnyWriter, to: Serializer) -> Result<(), EncodeError> {
        match self {
            Item::Raw { ser, bytes } if *ser == to => w.raw(bytes),
            Item::Raw { ser, bytes } => {
                let v = codec::decode_value(*ser, bytes).map_err(|e| EncodeError {
                    from: *ser,
                    to,
                    reason: e.0,
                })?;
                w.value(&v);
            }
            Item::Value(v) => w.value(v),
        }
        Ok(())
    }

    /// Whether the item is a list (payloads in Payload PassThru Mode are binary).
    pub fn is_list(&self) -> bool {
        match self {
            Item::Raw {
                ser: Serializer::Json,
                bytes,
            } => bytes.first() == Some(&b'['),
            Item::Raw {
                ser: Serializer::MsgPack,
                bytes,
            } => {
                matches!(bytes.first(), Some(0x90..=0x9f | 0xdc | 0xdd))
            }
            Item::Raw {
                ser: Serializer::Cbor,
                bytes,
            } => matches!(bytes.first(), Some(0x80..=0x9f)),
            Item::Value(v) => matches!(v, Value::List(_)),
        }
    }

    /// Encoded size in bytes when raw (a size estimate otherwise).
    pub fn raw_len(&self) -> usize {
        match self {
            Item::Raw { bytes, .. } => bytes.len(),
            Item::Value(_) => 16,
        }
    }
}

/// `Arguments|list` and `ArgumentsKw|dict` of a message.
#[derive(Clone, Debug, Default)]
pub struct Payload {
    pub args: Option<Item>,
    pub kwargs: Option<Item>,
}

impl Payload {
    pub fn empty() -> Self {
        Payload::default()
    }

    /// A payload of router-made values.
    pub fn values(args: Vec<Value>, kwargs: Option<Dict>) -> Self {
        Payload {
            args: Some(Item::Value(Value::List(args))),
            kwargs: kwargs.map(|d| Item::Value(Value::Dict(d))),
        }
    }

    /// A payload holding one human-readable message, as routers put in errors.
    pub fn message(text: impl Into<String>) -> Self {
        Payload::values(vec![Value::Str(text.into())], None)
    }

    pub fn is_empty(&self) -> bool {
        self.args.is_none() && self.kwargs.is_none()
    }

    /// Number of array elements the payload occupies.
    fn elements(&self) -> usize {
        match (&self.args, &self.kwargs) {
            (_, Some(_)) => 2,
            (Some(_), None) => 1,
            (None, None) => 0,
        }
    }

    fn write(&self, w: &mut codec::AnyWriter, to: Serializer) -> Result<(), EncodeError> {
        match (&self.args, &self.kwargs) {
            (Some(a), kw) => {
                a.write(w, to)?;
                if let Some(kw) = kw {
                    kw.write(w, to)?;
                }
            }
            (None, Some(kw)) => {
                w.value(&Value::List(Vec::new()));
                kw.write(w, to)?;
            }
            (None, None) => {}
        }
        Ok(())
    }

    /// The payload's encoded size (an estimate for router-made values).
    pub fn byte_len(&self) -> usize {
        self.args.as_ref().map_or(0, Item::raw_len) + self.kwargs.as_ref().map_or(0, Item::raw_len)
    }
}

/// A WAMP message.
#[derive(Clone, Debug)]
pub enum Message {
    Hello {
        realm: String,
        details: Dict,
    },
    Welcome {
        session: u64,
        details: Dict,
    },
    Abort {
        details: Dict,
        reason: String,
    },
    Challenge {
        method: String,
        extra: Dict,
    },
    Authenticate {
        signature: String,
        extra: Dict,
    },
    Goodbye {
        details: Dict,
        reason: String,
    },
    Error {
        request_type: u64,
        request: u64,
        details: Dict,
        error: String,
        payload: Payload,
    },
    Publish {
        request: u64,
        options: Dict,
        topic: String,
        payload: Payload,
    },
    Published {
        request: u64,
        publication: u64,
    },
    Subscribe {
        request: u64,
        options: Dict,
        topic: String,
    },
    Subscribed {
        request: u64,
        subscription: u64,
    },
    Unsubscribe {
        request: u64,
        subscription: u64,
    },
    Unsubscribed {
        request: u64,
    },
    Event {
        subscription: u64,
        publication: u64,
        details: Dict,
        payload: Payload,
    },
    EventReceived {
        publication: u64,
    },
    Call {
        request: u64,
        options: Dict,
        procedure: String,
        payload: Payload,
    },
    Cancel {
        request: u64,
        options: Dict,
    },
    Result {
        request: u64,
        details: Dict,
        payload: Payload,
    },
    Register {
        request: u64,
        options: Dict,
        procedure: String,
    },
    Registered {
        request: u64,
        registration: u64,
    },
    Unregister {
        request: u64,
        registration: u64,
    },
    Unregistered {
        /// 0 when the router revokes a registration on its own (spec
        /// "Registration Revocation"; `details` then says which and why).
        request: u64,
        /// Empty, or `registration` and `reason` of a revocation.
        details: Dict,
    },
    Invocation {
        request: u64,
        registration: u64,
        details: Dict,
        payload: Payload,
    },
    Interrupt {
        request: u64,
        options: Dict,
    },
    Yield {
        request: u64,
        options: Dict,
        payload: Payload,
    },
}

/// Number of envelope elements (type code included) before the payload.
fn head_len(ty: u64) -> usize {
    match ty {
        code::ERROR => 5,
        code::PUBLISH | code::EVENT | code::CALL | code::INVOCATION => 4,
        code::RESULT | code::YIELD => 3,
        _ => usize::MAX,
    }
}

/// The message name for a type code, for error messages.
pub fn type_name(ty: u64) -> Option<&'static str> {
    Some(match ty {
        code::HELLO => "HELLO",
        code::WELCOME => "WELCOME",
        code::ABORT => "ABORT",
        code::CHALLENGE => "CHALLENGE",
        code::AUTHENTICATE => "AUTHENTICATE",
        code::GOODBYE => "GOODBYE",
        code::ERROR => "ERROR",
        code::PUBLISH => "PUBLISH",
        code::PUBLISHED => "PUBLISHED",
        code::SUBSCRIBE => "SUBSCRIBE",
        code::SUBSCRIBED => "SUBSCRIBED",
        code::UNSUBSCRIBE => "UNSUBSCRIBE",
        code::UNSUBSCRIBED => "UNSUBSCRIBED",
        code::EVENT => "EVENT",
        code::CALL => "CALL",
        code::CANCEL => "CANCEL",
        code::RESULT => "RESULT",
        code::REGISTER => "REGISTER",
        code::REGISTERED => "REGISTERED",
        code::UNREGISTER => "UNREGISTER",
        code::UNREGISTERED => "UNREGISTERED",
        code::INVOCATION => "INVOCATION",
        code::INTERRUPT => "INTERRUPT",
        code::YIELD => "YIELD",
        code::EVENT_RECEIVED => "EVENT_RECEIVED",
        _ => return None,
    })
}

/// Reads typed envelope fields, producing errors that name the message and field.
struct Fields {
    name: &'static str,
    head: std::vec::IntoIter<Value>,
}

impl Fields {
    fn next(&mut self, field: &str) -> Result<Value, DecodeError> {
        self.head
            .next()
            .ok_or_else(|| DecodeError::new(format!("{} is missing {field}", self.name)))
    }
    fn id(&mut self, field: &str) -> Result<u64, DecodeError> {
        match self.next(field)? {
            Value::UInt(v) if (1..=crate::id::MAX_ID).contains(&v) => Ok(v),
            Value::UInt(v) => Err(DecodeError::new(format!(
                "{}.{field} must be an id in [1, 2^53], got {v}",
                self.name
            ))),
            other => Err(DecodeError::new(format!(
                "{}.{field} must be an integer, got {}",
                self.name,
                other.type_name()
            ))),
        }
    }
    fn uint(&mut self, field: &str) -> Result<u64, DecodeError> {
        match self.next(field)? {
            Value::UInt(v) => Ok(v),
            other => Err(DecodeError::new(format!(
                "{}.{field} must be an integer, got {}",
                self.name,
                other.type_name()
            ))),
        }
    }
    fn string(&mut self, field: &str) -> Result<String, DecodeError> {
        match self.next(field)? {
            Value::Str(s) => Ok(s),
            other => Err(DecodeError::new(format!(
                "{}.{field} must be a string, got {}",
                self.name,
                other.type_name()
            ))),
        }
    }
    fn dict(&mut self, field: &str) -> Result<Dict, DecodeError> {
        match self.next(field)? {
            Value::Dict(d) => Ok(d),
            other => Err(DecodeError::new(format!(
                "{}.{field} must be a dict, got {}",
                self.name,
                other.type_name()
            ))),
        }
    }
}

impl Message {
    /// Decodes one frame of serializer `ser` and checks its shape and the
    /// types of the options the router understands.
    pub fn decode(ser: Serializer, frame: &Bytes) -> Result<Message, DecodeError> {
        let env = codec::split(ser, frame, head_len)?;
        let ty = match env.head.first() {
            Some(Value::UInt(t)) => *t,
            _ => return Err(DecodeError::new("message type must be an integer")),
        };
        let name =
            type_name(ty).ok_or_else(|| DecodeError::new(format!("unknown message type {ty}")))?;
        let fixed = env.head.len();
        let mut f = Fields {
            name,
            head: env.head.into_iter(),
        };
        f.head.next();
        let has_payload = head_len(ty) != usize::MAX;
        let payload = if has_payload {
            payload_from(ser, name, env.tail)?
        } else {
            Payload::empty()
        };
        let extra_ok = matches!(
            ty,
            code::ABORT | code::GOODBYE | code::UNSUBSCRIBED | code::UNREGISTERED
        );
        let msg = match ty {
            code::HELLO => Message::Hello {
                realm: f.string("Realm")?,
                details: f.dict("Details")?,
            },
            code::WELCOME => Message::Welcome {
                session: f.id("Session")?,
                details: f.dict("Details")?,
            },
            code::ABORT => Message::Abort {
                details: f.dict("Details")?,
                reason: f.string("Reason")?,
            },
            code::CHALLENGE => Message::Challenge {
                method: f.string("AuthMethod")?,
                extra: f.dict("Extra")?,
            },
            code::AUTHENTICATE => Message::Authenticate {
                signature: f.string("Signature")?,
                extra: f.dict("Extra")?,
            },
            code::GOODBYE => Message::Goodbye {
                details: f.dict("Details")?,
                reason: f.string("Reason")?,
            },
            code::ERROR => Message::Error {
                request_type: f.uint("REQUEST.Type")?,
                request: f.id("Request")?,
                details: f.dict("Details")?,
                error: f.string("Error")?,
                payload,
            },
            code::PUBLISH => Message::Publish {
                request: f.id("Request")?,
                options: f.dict("Options")?,
                topic: f.string("Topic")?,
                payload,
            },
            code::PUBLISHED => Message::Published {
                request: f.id("Request")?,
                publication: f.id("Publication")?,
            },
            code::SUBSCRIBE => Message::Subscribe {
                request: f.id("Request")?,
                options: f.dict("Options")?,
                topic: f.string("Topic")?,
            },
            code::SUBSCRIBED => Message::Subscribed {
                request: f.id("Request")?,
                subscription: f.id("Subscription")?,
            },
            code::UNSUBSCRIBE => Message::Unsubscribe {
                request: f.id("Request")?,
                subscription: f.id("Subscription")?,
            },
            code::UNSUBSCRIBED => Message::Unsubscribed {
                request: f.id("Request")?,
            },
            code::EVENT => Message::Event {
                subscription: f.id("Subscription")?,
                publication: f.id("Publication")?,
                details: f.dict("Details")?,
                payload,
            },
            code::EVENT_RECEIVED => Message::EventReceived {
                publication: f.id("Publication")?,
            },
            code::CALL => Message::Call {
                request: f.id("Request")?,
                options: f.dict("Options")?,
                procedure: f.string("Procedure")?,
                payload,
            },
            code::CANCEL => Message::Cancel {
                request: f.id("Request")?,
                options: f.dict("Options")?,
            },
            code::RESULT => Message::Result {
                request: f.id("Request")?,
                details: f.dict("Details")?,
                payload,
            },
            code::REGISTER => Message::Register {
                request: f.id("Request")?,
                options: f.dict("Options")?,
                procedure: f.string("Procedure")?,
            },
            code::REGISTERED => Message::Registered {
                request: f.id("Request")?,
                registration: f.id("Registration")?,
            },
            code::UNREGISTER => Message::Unregister {
                request: f.id("Request")?,
                registration: f.id("Registration")?,
            },
            code::UNREGISTERED => {
                // [UNREGISTERED, Request] or, for a revocation by the
                // router, [UNREGISTERED, 0, Details].
                let request = f.uint("Request")?;
                let details = match f.head.next() {
                    Some(Value::Dict(d)) => d,
                    _ => Dict::new(),
                };
                if request == 0 && details.get("registration").is_none() {
                    return Err(DecodeError::new(
                        "UNREGISTERED.Request is 0 without Details.registration (a revocation)",
                    ));
                }
                Message::Unregistered { request, details }
            }
            code::INVOCATION => Message::Invocation {
                request: f.id("Request")?,
                registration: f.id("Registration")?,
                details: f.dict("Details")?,
                payload,
            },
            code::INTERRUPT => Message::Interrupt {
                request: f.id("Request")?,
                options: f.dict("Options")?,
            },
            code::YIELD => Message::Yield {
                request: f.id("Request")?,
                options: f.dict("Options")?,
                payload,
            },
            _ => return Err(DecodeError::new(format!("unknown message type {ty}"))),
        };
        if f.head.len() > 0 && !extra_ok {
            return Err(DecodeError::new(format!(
                "{name} has {} elements, more than its {fixed} fields",
                fixed + f.head.len()
            )));
        }
        crate::validate::check(&msg)?;
        Ok(msg)
    }

    /// The message type code.
    pub fn code(&self) -> u64 {
        match self {
            Message::Hello { .. } => code::HELLO,
            Message::Welcome { .. } => code::WELCOME,
            Message::Abort { .. } => code::ABORT,
            Message::Challenge { .. } => code::CHALLENGE,
            Message::Authenticate { .. } => code::AUTHENTICATE,
            Message::Goodbye { .. } => code::GOODBYE,
            Message::Error { .. } => code::ERROR,
            Message::Publish { .. } => code::PUBLISH,
            Message::Published { .. } => code::PUBLISHED,
            Message::Subscribe { .. } => code::SUBSCRIBE,
            Message::Subscribed { .. } => code::SUBSCRIBED,
            Message::Unsubscribe { .. } => code::UNSUBSCRIBE,
            Message::Unsubscribed { .. } => code::UNSUBSCRIBED,
            Message::Event { .. } => code::EVENT,
            Message::EventReceived { .. } => code::EVENT_RECEIVED,
            Message::Call { .. } => code::CALL,
            Message::Cancel { .. } => code::CANCEL,
            Message::Result { .. } => code::RESULT,
            Message::Register { .. } => code::REGISTER,
            Message::Registered { .. } => code::REGISTERED,
            Message::Unregister { .. } => code::UNREGISTER,
            Message::Unregistered { .. } => code::UNREGISTERED,
            Message::Invocation { .. } => code::INVOCATION,
            Message::Interrupt { .. } => code::INTERRUPT,
            Message::Yield { .. } => code::YIELD,
        }
    }

    /// The message name (`"PUBLISH"`...).
    pub fn name(&self) -> &'static str {
        type_name(self.code()).unwrap_or("UNKNOWN")
    }

    /// Encodes the message for `to`, transcoding raw payloads held in
    /// another serializer.
    pub fn encode(&self, to: Serializer) -> Result<Bytes, EncodeError> {
        let payload_len = self.payload().map_or(0, Payload::byte_len);
        let mut w = codec::writer(to, 64 + payload_len + payload_len / 4);
        let c = self.code();
        macro_rules! arr {
            ($fixed:expr) => {
                w.array($fixed)
            };
        }
        match self {
            Message::Hello { realm, details } => {
                arr!(3);
                w.uint(c);
                w.str(realm);
                w.dict(details);
            }
            Message::Welcome { session, details } => {
                arr!(3);
                w.uint(c);
                w.uint(*session);
                w.dict(details);
            }
            Message::Abort { details, reason } | Message::Goodbye { details, reason } => {
                arr!(3);
                w.uint(c);
                w.dict(details);
                w.str(reason);
            }
            Message::Challenge { method: s, extra }
            | Message::Authenticate {
                signature: s,
                extra,
            } => {
                arr!(3);
                w.uint(c);
                w.str(s);
                w.dict(extra);
            }
            Message::Error {
                request_type,
                request,
                details,
                error,
                payload,
            } => {
                arr!(5 + payload.elements());
                w.uint(c);
                w.uint(*request_type);
                w.uint(*request);
                w.dict(details);
                w.str(error);
                payload.write(&mut w, to)?;
            }
            Message::Publish {
                request,
                options: d,
                topic: uri,
                payload,
            }
            | Message::Call {
                request,
                options: d,
                procedure: uri,
                payload,
            } => {
                arr!(4 + payload.elements());
                w.uint(c);
                w.uint(*request);
                w.dict(d);
                w.str(uri);
                payload.write(&mut w, to)?;
            }
            Message::Subscribe {
                request,
                options,
                topic: uri,
            }
            | Message::Register {
                request,
                options,
                procedure: uri,
            } => {
                arr!(4);
                w.uint(c);
                w.uint(*request);
                w.dict(options);
                w.str(uri);
            }
            Message::Published {
                request: a,
                publication: b,
            }
            | Message::Subscribed {
                request: a,
                subscription: b,
            }
            | Message::Unsubscribe {
                request: a,
                subscription: b,
            }
            | Message::Registered {
                request: a,
                registration: b,
            }
            | Message::Unregister {
                request: a,
                registration: b,
            } => {
                arr!(3);
                w.uint(c);
                w.uint(*a);
                w.uint(*b);
            }
            Message::Unsubscribed { request } => {
                arr!(2);
                w.uint(c);
                w.uint(*request);
            }
            Message::Unregistered { request, details } => {
                if details.is_empty() {
                    arr!(2);
                    w.uint(c);
                    w.uint(*request);
                } else {
                    arr!(3);
                    w.uint(c);
                    w.uint(*request);
                    w.dict(details);
                }
            }
            Message::EventReceived { publication } => {
                arr!(2);
                w.uint(c);
                w.uint(*publication);
            }
            Message::Event {
                subscription: a,
                publication: b,
                details,
                payload,
            }
            | Message::Invocation {
                request: a,
                registration: b,
                details,
                payload,
            } => {
                arr!(4 + payload.elements());
                w.uint(c);
                w.uint(*a);
                w.uint(*b);
                w.dict(details);
                payload.write(&mut w, to)?;
            }
            Message::Cancel { request, options } | Message::Interrupt { request, options } => {
                arr!(3);
                w.uint(c);
                w.uint(*request);
                w.dict(options);
            }
            Message::Result {
                request,
                details: d,
                payload,
            }
            | Message::Yield {
                request,
                options: d,
                payload,
            } => {
                arr!(3 + payload.elements());
                w.uint(c);
                w.uint(*request);
                w.dict(d);
                payload.write(&mut w, to)?;
            }
        }
        if let Some(reason) = w.unrepresentable() {
            return Err(EncodeError {
                from: self.payload_serializer().unwrap_or(to),
                to,
                reason: reason.to_string(),
            });
        }
        Ok(Bytes::from(w.finish()))
    }

    /// The serializer of the message's raw payload, if it holds one.
    fn payload_serializer(&self) -> Option<Serializer> {
        let p = self.payload()?;
        [&p.args, &p.kwargs]
            .into_iter()
            .flatten()
            .find_map(|item| match item {
                Item::Raw { ser, .. } => Some(*ser),
                Item::Value(_) => None,
            })
    }

    /// The payload of messages that carry one.
    pub fn payload(&self) -> Option<&Payload> {
        match self {
            Message::Error { payload, .. }
            | Message::Publish { payload, .. }
            | Message::Event { payload, .. }
            | Message::Call { payload, .. }
            | Message::Result { payload, .. }
            | Message::Invocation { payload, .. }
            | Message::Yield { payload, .. } => Some(payload),
            _ => None,
        }
    }
}

fn payload_from(
    ser: Serializer,
    name: &str,
    tail: Vec<(Bytes, Kind)>,
) -> Result<Payload, DecodeError> {
    let mut it = tail.into_iter();
    let args = match it.next() {
        None => None,
        Some((bytes, Kind::List | Kind::Bytes | Kind::Str)) => Some(Item::Raw { ser, bytes }),
        Some(_) => return Err(DecodeError::new(format!("{name}.Arguments must be a list"))),
    };
    let kwargs = match it.next() {
        None => None,
        Some((bytes, Kind::Dict)) => Some(Item::Raw { ser, bytes }),
        Some(_) => {
            return Err(DecodeError::new(format!(
                "{name}.ArgumentsKw must be a dict"
            )))
        }
    };
    if it.next().is_some() {
        return Err(DecodeError::new(format!("{name} has too many elements")));
    }
    Ok(Payload { args, kwargs })
}
