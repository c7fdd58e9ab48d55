//! `switchyard_bridge_requests_total{realm, endpoint, status}`: the HTTP
//! bridge's requests by endpoint and answer, kept by `prometheus-client`
//! and appended to `/metrics`. `endpoint` is one of a fixed set (the paths
//! a client sends are not labels, so a scan of random paths cannot grow
//! the family); `status` is the HTTP status code of the answer.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use switchyard_router::metrics::Metrics;

type Labels = [(&'static str, String); 3];

/// The request counters of every bridge of the process.
pub struct RequestMetrics {
    family: Family<Labels, Counter>,
}

impl RequestMetrics {
    /// Creates the family and appends it to `metrics`' rendering.
    pub fn register(metrics: &Metrics) -> Arc<Self> {
        let family = Family::<Labels, Counter>::default();
        let mut registry = Registry::default();
        registry.register(
            "switchyard_bridge_requests",
            "HTTP bridge requests, by realm, endpoint (publish, call, webhook, queue, openapi, other) and answer status",
            family.clone(),
        );
        metrics.add_source(Box::new(move |out| {
            let _ = prometheus_client::encoding::text::encode_registry(out, &registry);
        }));
        Arc::new(RequestMetrics { family })
    }

    /// One answered request (a label lookup per HTTP request, not per WAMP
    /// message).
    pub fn count(&self, realm: &str, endpoint: &'static str, status: u16) {
        self.family
            .get_or_create(&[
                ("realm", realm.to_string()),
                ("endpoint", endpoint.to_string()),
                ("status", status.to_string()),
            ])
            .inc();
    }
}
