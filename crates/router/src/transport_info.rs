//! What the router knows of the transport a connection came in on: its
//! kind, the peer's address, TLS, the client certificate, the listener's
//! authentication rules, the WebSocket `Origin`. The transports fill it in;
//! authentication, authorization and limits read it.

use std::net::IpAddr;

/// A TLS client certificate the transport verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCert {
    /// SHA-256 of the DER certificate, lowercase hex.
    pub fingerprint: String,
    /// The subject's common name, if any.
    pub common_name: Option<String>,
}

/// What the meta API tells about a session's transport
/// (`wamp.session.get`'s `transport`: `type`, `peer_ip`, `tls`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportSummary {
    pub kind: &'static str,
    pub peer_ip: Option<IpAddr>,
    pub tls: bool,
}

#[derive(Clone, Debug, Default)]
pub struct TransportInfo {
    /// `"websocket"` or `"rawsocket"`.
    pub kind: &'static str,
    /// The remote IP address (None for Unix sockets).
    pub peer_ip: Option<IpAddr>,
    /// Whether the connection runs over TLS.
    pub tls: bool,
    /// The verified client certificate, with TLS client authentication.
    pub client_cert: Option<ClientCert>,
    /// Authentication methods this listener allows (None: the realm's).
    pub auth_methods: Option<Vec<String>>,
    /// The WebSocket handshake's `Origin` header.
    pub origin: Option<String>,
}

impl TransportInfo {
    /// The part the meta API shows.
    pub fn summary(&self) -> TransportSummary {
        TransportSummary {
            kind: self.kind,
            peer_ip: self.peer_ip,
            tls: self.tls,
        }
    }

    /// A transport of `kind` from `peer_ip`, nothing else known.
    pub fn new(kind: &'static str, peer_ip: Option<IpAddr>) -> Self {
        TransportInfo {
            kind,
            peer_ip,
            ..TransportInfo::default()
        }
    }
}
