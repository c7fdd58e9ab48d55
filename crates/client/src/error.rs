//! Error types of the client.

use switchyard_proto::{DecodeError, Dict, EncodeError, Value};

/// URI used in a [`CallError`] when the session or its connection ended
/// before the call completed.
pub const CONNECTION_LOST: &str = "switchyard.client.connection_lost";
/// URI used in a [`CallError`] when a reply could not be understood (bad
/// payload, unexpected message).
pub const PROTOCOL_ERROR: &str = "switchyard.client.protocol_error";
/// URI used in a [`CallError`] when the call could not be encoded or sent
/// (for example larger than the router accepts).
pub const SEND_FAILED: &str = "switchyard.client.send_failed";

/// A failure of the transport layer (connecting, handshakes, framing, I/O).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The URL is not one of `ws://`, `wss://`, `rs://`, `tcp://`, `unix:`.
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    /// An I/O error.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The WebSocket layer failed (upgrade refused, protocol error...).
    #[error("WebSocket error: {0}")]
    WebSocket(String),
    /// `wss://`: the TLS handshake failed (the router's certificate is not
    /// trusted or not valid for its name, ...) or the CA certificates could
    /// not be loaded. The message says which.
    #[error("TLS: {0}")]
    Tls(String),
    /// The router answered the RawSocket handshake with an error code
    /// (1 serializer unsupported, 2 maximum length unacceptable, 3 use of
    /// reserved bits, 4 maximum connection count reached).
    #[error("RawSocket handshake refused: error {code} ({})", rawsocket_error_text(*.code))]
    RawSocketRefused {
        /// The error code from the upper 4 bits of the reply's second octet.
        code: u8,
    },
    /// The peer broke the framing rules (bad RawSocket header, frame too long,
    /// bad handshake reply, subprotocol not accepted...).
    #[error("transport protocol error: {0}")]
    Protocol(String),
    /// The connection is closed. `code` and `reason` come from a WebSocket
    /// close frame when there was one; a plain EOF has `code: None`.
    #[error("connection closed{}", close_suffix(*.code, .reason))]
    Closed {
        /// The WebSocket close code, if the peer sent a close frame.
        code: Option<u16>,
        /// The WebSocket close reason (empty if none).
        reason: String,
    },
}

fn close_suffix(code: Option<u16>, reason: &str) -> String {
    match (code, reason.is_empty()) {
        (None, _) => String::new(),
        (Some(c), true) => format!(" (code {c})"),
        (Some(c), false) => format!(" (code {c}: {reason})"),
    }
}

/// The meaning of a RawSocket handshake error code.
pub fn rawsocket_error_text(code: u8) -> &'static str {
    match code {
        1 => "serializer unsupported",
        2 => "maximum message length unacceptable",
        3 => "use of reserved bits",
        4 => "maximum connection count reached",
        _ => "unknown error",
    }
}

impl From<tokio_websockets::Error> for TransportError {
    fn from(e: tokio_websockets::Error) -> Self {
        match e {
            tokio_websockets::Error::Io(io) => TransportError::Io(io),
            other => TransportError::WebSocket(other.to_string()),
        }
    }
}

/// An `ERROR` reply from the router (or a callee): the error URI plus its
/// optional payload. Local failures of a call use the URIs
/// [`CONNECTION_LOST`], [`PROTOCOL_ERROR`] and [`SEND_FAILED`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{uri}{}", args_suffix(.args))]
pub struct WampError {
    /// The error URI, e.g. `wamp.error.no_such_procedure`.
    pub uri: String,
    /// `Arguments` of the ERROR (empty if absent or undecodable).
    pub args: Vec<Value>,
    /// `ArgumentsKw` of the ERROR (empty if absent or undecodable).
    pub kwargs: Dict,
    /// `Details` of the ERROR.
    pub details: Dict,
}

fn args_suffix(args: &[Value]) -> String {
    match args.first() {
        Some(Value::Str(s)) => format!(": {s}"),
        Some(v) => format!(": {v:?}"),
        None => String::new(),
    }
}

impl WampError {
    /// An error with only a URI.
    pub fn new(uri: impl Into<String>) -> Self {
        WampError {
            uri: uri.into(),
            args: Vec::new(),
            kwargs: Dict::new(),
            details: Dict::new(),
        }
    }

    /// An error with a URI and one human-readable message argument.
    pub fn with_message(uri: impl Into<String>, message: impl Into<String>) -> Self {
        WampError {
            args: vec![Value::Str(message.into())],
            ..WampError::new(uri)
        }
    }
}

/// The error of [`crate::Session::call`]: the router's or callee's ERROR, or a
/// local failure mapped to one of the `switchyard.client.*` URIs.
pub type CallError = WampError;

/// Why a session ended.
#[derive(Debug, Clone, PartialEq)]
pub struct CloseInfo {
    /// The GOODBYE or ABORT reason, or `wamp.close.transport_lost` /
    /// `switchyard.client.protocol_error` for a connection that ended
    /// without one.
    pub reason: String,
    /// `Details.message` of the GOODBYE/ABORT, or a description of the
    /// transport failure.
    pub message: Option<String>,
    /// The GOODBYE/ABORT details (empty for a lost transport).
    pub details: Dict,
    /// Whether the router ended the session (GOODBYE/ABORT/closed socket)
    /// rather than this client.
    pub by_router: bool,
}

/// An error of the session layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The router answered HELLO (or AUTHENTICATE) with ABORT.
    #[error("session aborted: {reason}{}", .message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Abort {
        /// The ABORT reason URI.
        reason: String,
        /// `Details.message`, if any.
        message: Option<String>,
        /// The ABORT details.
        details: Dict,
    },
    /// The router answered a request with ERROR.
    #[error("router error: {0}")]
    Wamp(#[from] WampError),
    /// The router sent something this client cannot accept (undecodable
    /// message, unexpected message type, authentication not configured).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A message could not be encoded (payload not expressible in the
    /// serializer) or is longer than the router accepts.
    #[error("cannot send: {0}")]
    Send(String),
    /// The session is closed (left, aborted or connection lost).
    #[error("session closed: {}{}", .0.reason, .0.message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Closed(CloseInfo),
    /// The router did not answer in time.
    #[error("timed out: {0}")]
    Timeout(String),
}

impl Error {
    /// The WAMP error URI for [`Error::Wamp`] and the reason for
    /// [`Error::Abort`] / [`Error::Closed`].
    pub fn uri(&self) -> Option<&str> {
        match self {
            Error::Wamp(e) => Some(&e.uri),
            Error::Abort { reason, .. } => Some(reason),
            Error::Closed(info) => Some(&info.reason),
            _ => None,
        }
    }
}

impl From<DecodeError> for Error {
    fn from(e: DecodeError) -> Self {
        Error::Protocol(e.0)
    }
}

impl From<EncodeError> for Error {
    fn from(e: EncodeError) -> Self {
        Error::Send(e.to_string())
    }
}

impl From<Error> for WampError {
    fn from(e: Error) -> Self {
        match e {
            Error::Wamp(w) => w,
            Error::Closed(info) => WampError::with_message(
                CONNECTION_LOST,
                format!(
                    "session closed: {}{}",
                    info.reason,
                    info.message.map(|m| format!(": {m}")).unwrap_or_default()
                ),
            ),
            Error::Transport(t) => WampError::with_message(CONNECTION_LOST, t.to_string()),
            Error::Send(m) => WampError::with_message(SEND_FAILED, m),
            other => WampError::with_message(PROTOCOL_ERROR, other.to_string()),
        }
    }
}
