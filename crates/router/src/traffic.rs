//! The traffic families of `/metrics`: sessions by realm, transport,
//! serializer and authrole (gauges), WAMP messages in and out by type, the
//! bytes of those messages, and the slow-consumer policy's actions
//! (counters). Stored and encoded with the
//! `prometheus-client` crate.
//!
//! Nothing on the hot path looks a label up or allocates: the counter of
//! every message type is resolved once, when [`Traffic`] is created, into an
//! array indexed by the type code, so counting a message is one array index
//! and one relaxed atomic add. A session's gauge is resolved once, when the
//! session joins ([`Traffic::session`]), and held by the connection.
//!
//! Messages out are counted where they are queued: the EVENTs of a
//! publication once for all its subscribers ([`Traffic::events_queued`],
//! by the Broker), any other message when its connection queues it
//! ([`Traffic::queued`]). At a fan-out of 1000 the shared cache lines are
//! touched once per publication, not twice per delivered frame.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use switchyard_proto::message::type_name;
use switchyard_proto::Serializer;

/// Type codes are below this (YIELD is 70).
const CODES: usize = 128;

type TypeLabel = [(&'static str, &'static str); 1];
type AuthLabels = [(&'static str, &'static str); 2];

/// Why a login failed, as `switchyard_auth_failures_total` says it: a fixed
/// set, never the client's text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// None of the methods the client offered is allowed here.
    NoMatchingMethod,
    /// Refused before any challenge (no authid, unknown public key, no
    /// client certificate...).
    Refused,
    /// The answer to the challenge was wrong, or the authenticator
    /// procedure said no (or was not there).
    Rejected,
    /// Too many failed logins lately from this address or for this authid.
    Throttled,
    /// Too many ticket checks at once (`max_concurrent_ticket_checks`).
    Busy,
    /// Another message than AUTHENTICATE while authenticating.
    ProtocolViolation,
}

impl AuthFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::NoMatchingMethod => "no_matching_method",
            AuthFailure::Refused => "refused",
            AuthFailure::Rejected => "rejected",
            AuthFailure::Throttled => "throttled",
            AuthFailure::Busy => "busy",
            AuthFailure::ProtocolViolation => "protocol_violation",
        }
    }
}
type SessionLabels = [(&'static str, String); 4];

/// One direction (in or out): a counter per message type, and bytes.
struct Direction {
    by_type: Vec<Option<Counter>>,
    bytes: Counter,
}

impl Direction {
    fn new(registry: &mut Registry, dir: &str) -> Self {
        let family = Family::<TypeLabel, Counter>::default();
        let by_type = (0..CODES as u64)
            .map(|code| type_name(code).map(|name| family.get_or_create(&[("type", name)]).clone()))
            .collect();
        registry.register(
            format!("switchyard_messages_{dir}"),
            format!("WAMP messages {dir} on client connections, by message type"),
            family,
        );
        let bytes = Counter::default();
        registry.register(
            format!("switchyard_message_bytes_{dir}"),
            format!(
                "Bytes of the WAMP messages {dir} on client connections (serialized messages, without WebSocket or RawSocket framing)"
            ),
            bytes.clone(),
        );
        Direction { by_type, bytes }
    }

    #[inline]
    fn count(&self, code: Option<u64>, len: usize) {
        if let Some(Some(c)) = code.and_then(|c| self.by_type.get(c as usize)) {
            c.inc();
        }
        self.bytes.inc_by(len as u64);
    }
}

/// The traffic counters of one router.
pub struct Traffic {
    registry: Registry,
    incoming: Direction,
    outgoing: Direction,
    sessions: Family<SessionLabels, Gauge>,
    slow_disconnects: Counter,
    slow_dropped_events: Counter,
    auth_failures: Family<AuthLabels, Counter>,
    /// Routing latency histograms (PUBLISH, CALL).
    pub latency: crate::latency::RoutingLatency,
}

impl std::fmt::Debug for Traffic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Traffic")
    }
}

impl Default for Traffic {
    fn default() -> Self {
        let mut registry = Registry::default();
        let incoming = Direction::new(&mut registry, "in");
        let outgoing = Direction::new(&mut registry, "out");
        let sessions = Family::<SessionLabels, Gauge>::default();
        registry.register(
            "switchyard_sessions",
            "Established client sessions, by realm, transport, serializer and authrole",
            sessions.clone(),
        );
        let slow = Family::<TypeLabel, Counter>::default();
        let slow_disconnects = slow.get_or_create(&[("action", "disconnect")]).clone();
        let slow_dropped_events = slow.get_or_create(&[("action", "drop_event")]).clone();
        registry.register(
            "switchyard_slow_consumer_actions",
            "Frames that did not fit a client's outbound queue or its share of total_outbound_bytes, by what the slow-consumer policy did: disconnect (the session) or drop_event (policy drop_events)",
            slow,
        );
        let auth_failures = Family::<AuthLabels, Counter>::default();
        registry.register(
            "switchyard_auth_failures",
            "Failed logins, by authentication method (none: no method was allowed) and reason (no_matching_method, refused, rejected, throttled, busy, protocol_violation)",
            auth_failures.clone(),
        );
        Traffic {
            registry,
            auth_failures,
            latency: Default::default(),
            incoming,
            outgoing,
            sessions,
            slow_disconnects,
            slow_dropped_events,
        }
    }
}

impl Traffic {
    /// A message received: its type code and its length.
    #[inline]
    pub fn received(&self, code: u64, len: usize) {
        self.incoming.count(Some(code), len);
    }

    /// A message queued for a client connection: its type code (read from
    /// the frame) and its length.
    #[inline]
    pub fn queued(&self, code: Option<u64>, len: usize) {
        self.outgoing.count(code, len);
    }

    /// `n` EVENTs of `bytes` in all queued for client connections (one
    /// publication's, counted once by the Broker rather than per frame).
    pub fn events_queued(&self, n: u64, bytes: u64) {
        if let Some(Some(c)) = self.outgoing.by_type.get(36) {
            c.inc_by(n);
        }
        self.outgoing.bytes.inc_by(bytes);
    }

    /// A login failed (`method`: the method's name, or "none").
    pub fn auth_failed(&self, method: &'static str, reason: AuthFailure) {
        self.auth_failures
            .get_or_create(&[("method", method), ("reason", reason.as_str())])
            .inc();
    }

    /// The slow-consumer policy disconnected a session.
    pub fn slow_consumer_disconnected(&self) {
        self.slow_disconnects.inc();
    }

    /// The slow-consumer policy dropped an EVENT.
    pub fn slow_consumer_dropped_event(&self) {
        self.slow_dropped_events.inc();
    }

    /// Counts one session under its labels until the guard is dropped.
    pub fn session(
        &self,
        realm: &str,
        transport: &str,
        serializer: Serializer,
        authrole: &str,
    ) -> SessionGauge {
        let labels = [
            ("realm", realm.to_string()),
            ("transport", transport.to_string()),
            ("serializer", serializer.name().to_string()),
            ("authrole", authrole.to_string()),
        ];
        let gauge = self.sessions.get_or_create(&labels).clone();
        gauge.inc();
        SessionGauge(gauge)
    }

    /// Appends the families in the text format (without the OpenMetrics
    /// `# EOF` line, since other families follow).
    pub fn render(&self, out: &mut String) {
        let _ = prometheus_client::encoding::text::encode_registry(out, &self.registry);
        self.latency.render(out);
    }
}

/// One session counted in `switchyard_sessions`; dropping it uncounts it.
#[derive(Debug)]
pub struct SessionGauge(Gauge);

impl Drop for SessionGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_type_and_sessions_come_and_go() {
        let t = Traffic::default();
        t.received(16, 10);
        t.received(16, 5);
        t.received(999, 3);
        let peek = |f: &[u8]| switchyard_proto::codec::peek_type(Serializer::Json, f);
        for f in [
            &b"[17,1,2]"[..],
            b"[36,1,2,{}]",
            b"[36,1,3,{}]",
            b"[17,1,2]",
            b"[36,1,4,{}]",
        ] {
            t.queued(peek(f), f.len());
        }
        // A publication's EVENTs, counted once where they were queued.
        t.events_queued(2, 20);
        let g = t.session("realm1", "rawsocket", Serializer::Json, "user");
        let mut out = String::new();
        t.render(&mut out);
        assert!(
            out.contains("switchyard_messages_in_total{type=\"PUBLISH\"} 2"),
            "{out}"
        );
        assert!(
            out.contains("switchyard_message_bytes_in_total 18"),
            "{out}"
        );
        assert!(
            out.contains("switchyard_messages_out_total{type=\"PUBLISHED\"} 2"),
            "{out}"
        );
        assert!(
            out.contains("switchyard_messages_out_total{type=\"EVENT\"} 5"),
            "{out}"
        );
        assert!(
            out.contains("switchyard_message_bytes_out_total 69"),
            "{out}"
        );
        assert!(out.contains("switchyard_sessions{realm=\"realm1\",transport=\"rawsocket\",serializer=\"json\",authrole=\"user\"} 1"), "{out}");
        assert!(!out.contains("# EOF"));
        drop(g);
        let mut out = String::new();
        t.render(&mut out);
        assert!(out.contains("authrole=\"user\"} 0"), "{out}");
    }
}
