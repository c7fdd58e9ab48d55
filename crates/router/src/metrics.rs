//! The router's metrics, rendered in the Prometheus text format: the
//! counters of what the router refused or limited (hand-written here), the
//! traffic families (`traffic.rs`, kept by `prometheus-client`), and the
//! sources other parts add (the queues' gauges, the process figures).
//! docs/OPERATIONS.md lists every family.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::traffic::Traffic;

/// Appends more metrics to the rendered text (e.g. the queues' gauges).
pub type MetricsSource = Box<dyn Fn(&mut String) + Send + Sync>;

#[derive(Default)]
struct Sources(parking_lot::RwLock<Vec<MetricsSource>>);

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} metrics sources", self.0.read().len())
    }
}

#[derive(Default, Debug)]
pub struct Metrics {
    pub auth_succeeded: AtomicU64,
    pub auth_failed: AtomicU64,
    pub auth_throttled: AtomicU64,
    pub not_authorized: AtomicU64,
    pub subscription_limit: AtomicU64,
    pub registration_limit: AtomicU64,
    pub rate_limited: AtomicU64,
    pub connections_refused: AtomicU64,
    /// Requests refused by a size or count limit (URI length, calls in
    /// flight, testaments, retained bytes, HELLO fields).
    pub limit_exceeded: AtomicU64,
    /// Sessions, messages and bytes in and out (shared with every
    /// connection's outbound queue).
    pub traffic: Arc<Traffic>,
    sources: Sources,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds a source whose lines follow the counters in [`Metrics::render`].
    pub fn add_source(&self, source: MetricsSource) {
        self.sources.0.write().push(source);
    }

    /// The counters in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let rows: [(&str, &str, &AtomicU64); 9] = [
            ("switchyard_auth_succeeded_total", "Sessions that authenticated.", &self.auth_succeeded),
            ("switchyard_auth_failed_total", "Authentications that failed.", &self.auth_failed),
            (
                "switchyard_auth_throttled_total",
                "Authentications refused after too many failures from the address or for the authid.",
                &self.auth_throttled,
            ),
            ("switchyard_not_authorized_total", "Actions denied by authorization.", &self.not_authorized),
            (
                "switchyard_subscription_limit_total",
                "SUBSCRIBEs refused: the session holds its maximum of subscriptions.",
                &self.subscription_limit,
            ),
            (
                "switchyard_registration_limit_total",
                "REGISTERs refused: the session holds its maximum of registrations.",
                &self.registration_limit,
            ),
            (
                "switchyard_rate_limited_total",
                "Times a session was slowed down for sending over its message rate.",
                &self.rate_limited,
            ),
            (
                "switchyard_connections_refused_total",
                "Connections refused: too many from one address.",
                &self.connections_refused,
            ),
            (
                "switchyard_limit_exceeded_total",
                "Requests refused by a size or count limit (URI length, calls in flight, testaments, retained bytes, HELLO fields).",
                &self.limit_exceeded,
            ),
        ];
        for (name, help, v) in rows {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        }
        self.traffic.render(&mut out);
        for source in self.sources.0.read().iter() {
            source(&mut out);
        }
        out
    }
}
