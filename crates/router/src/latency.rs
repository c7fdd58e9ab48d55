//! The routing latency histograms of `/metrics`
//! (`switchyard_routing_latency_seconds{kind="publish"|"call"}`): how long
//! the router takes from a PUBLISH to the last EVENT queued for this node's
//! subscribers, and from a CALL to its RESULT queued for the caller (the
//! callee's own time included).
//!
//! Kept by hand rather than with `prometheus-client`'s histogram, whose
//! observation takes a lock: here an observation is a search in a fixed
//! table and two relaxed atomic adds (the bucket and the sum; the count is
//! the buckets' total, added up at scrape time).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in nanoseconds (10 µs .. 10 s).
const BOUNDS_NS: [u64; 19] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// One histogram: a count per bucket (not cumulative; the last one is
/// +Inf) and the sum of the observations.
#[derive(Debug, Default)]
pub struct Latency {
    buckets: [AtomicU64; BOUNDS_NS.len() + 1],
    sum_ns: AtomicU64,
}

impl Latency {
    /// Records one observation.
    #[inline]
    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = BOUNDS_NS.partition_point(|b| *b < ns);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Appends the samples of this histogram, labelled `kind`, in the
    /// Prometheus text format (the HELP and TYPE lines are the caller's).
    fn render(&self, name: &str, kind: &str, out: &mut String) {
        let mut cumulative = 0u64;
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            let le = match BOUNDS_NS.get(i) {
                Some(ns) => format!("{}", *ns as f64 / 1e9),
                None => "+Inf".to_string(),
            };
            let _ = writeln!(
                out,
                "{name}_bucket{{kind=\"{kind}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{kind=\"{kind}\"}} {sum}");
        let _ = writeln!(out, "{name}_count{{kind=\"{kind}\"}} {cumulative}");
    }
}

/// The router's two routing latency histograms.
#[derive(Debug, Default)]
pub struct RoutingLatency {
    /// PUBLISH received -> the last EVENT queued on this node.
    pub publish: Latency,
    /// CALL received -> RESULT queued for the caller.
    pub call: Latency,
}

impl RoutingLatency {
    /// Appends the family in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        const NAME: &str = "switchyard_routing_latency_seconds";
        let _ = writeln!(
            out,
            "# HELP {NAME} Routing latency: PUBLISH received to the last EVENT queued on this node (kind=publish); CALL received to its RESULT queued (kind=call, the callee's time included)."
        );
        let _ = writeln!(out, "# TYPE {NAME} histogram");
        self.publish.render(NAME, "publish", out);
        self.call.render(NAME, "call", out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_the_count_is_their_total() {
        let l = RoutingLatency::default();
        l.publish.observe(Duration::from_micros(5));
        l.publish.observe(Duration::from_micros(30));
        l.publish.observe(Duration::from_secs(60));
        let mut out = String::new();
        l.render(&mut out);
        let line = |s: &str| out.lines().any(|l| l == s);
        assert!(
            line("switchyard_routing_latency_seconds_bucket{kind=\"publish\",le=\"0.00001\"} 1"),
            "{out}"
        );
        assert!(
            line("switchyard_routing_latency_seconds_bucket{kind=\"publish\",le=\"0.00005\"} 2"),
            "{out}"
        );
        assert!(
            line("switchyard_routing_latency_seconds_bucket{kind=\"publish\",le=\"10\"} 2"),
            "{out}"
        );
        assert!(
            line("switchyard_routing_latency_seconds_bucket{kind=\"publish\",le=\"+Inf\"} 3"),
            "{out}"
        );
        assert!(
            line("switchyard_routing_latency_seconds_count{kind=\"publish\"} 3"),
            "{out}"
        );
        assert!(
            line("switchyard_routing_latency_seconds_count{kind=\"call\"} 0"),
            "{out}"
        );
    }
}
