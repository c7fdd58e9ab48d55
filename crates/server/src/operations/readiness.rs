//! What `/readyz` reports: the checks the server registers at startup (one
//! per listener, bridge and queue store, each "not ready" until it is
//! bound or open) and whether the server is shutting down. A load balancer
//! or an orchestrator sends traffic to the process only while every check
//! passes. Some checks are probes, asked at each request (the cluster's
//! NATS connection, which can go and come back).

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use serde_json::{json, Value};

/// One thing that must be up before the server is ready.
struct Check {
    /// "listener", "bridge", "queue_store" (and later "cluster").
    kind: &'static str,
    /// What it is: a listener's address, a realm's name.
    name: String,
    ready: bool,
}

/// A check asked at each `/readyz`: its kind, name, the reason it gives
/// while it fails, and the question.
struct Probe {
    kind: &'static str,
    name: String,
    reason: String,
    up: Box<dyn Fn() -> bool + Send + Sync>,
}

/// The readiness of the server (shared by `server.rs`, which reports
/// progress, and the operations listener, which answers `/readyz`).
#[derive(Default)]
pub struct Readiness {
    checks: Mutex<Vec<Check>>,
    probes: Mutex<Vec<Probe>>,
    stopping: AtomicBool,
}

/// The handle of a registered check.
#[derive(Debug, Clone, Copy)]
pub struct CheckId(usize);

impl Readiness {
    /// Registers a check that is not ready yet.
    pub fn expect(&self, kind: &'static str, name: String) -> CheckId {
        let mut checks = self.checks.lock();
        checks.push(Check {
            kind,
            name,
            ready: false,
        });
        CheckId(checks.len() - 1)
    }

    /// Registers a check asked at each request: while `up` answers false
    /// the server is not ready, and `reason` says why.
    pub fn probe(
        &self,
        kind: &'static str,
        name: String,
        reason: String,
        up: impl Fn() -> bool + Send + Sync + 'static,
    ) {
        self.probes.lock().push(Probe {
            kind,
            name,
            reason,
            up: Box::new(up),
        });
    }

    /// The check passes from now on.
    pub fn ready(&self, id: CheckId) {
        if let Some(c) = self.checks.lock().get_mut(id.0) {
            c.ready = true;
        }
    }

    /// The server is shutting down: never ready again.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Whether every check passes, and the JSON body of `/readyz`:
    /// `{"status": "ready" | "not_ready", "not_ready": [reasons],
    /// "checks": [{"kind", "name", "ready"}]}`.
    pub fn report(&self) -> (bool, Value) {
        let checks = self.checks.lock();
        let probe_list = self.probes.lock();
        let probes: Vec<(&Probe, bool)> = probe_list.iter().map(|p| (p, (p.up)())).collect();
        let mut reasons: Vec<String> = checks
            .iter()
            .filter(|c| !c.ready)
            .map(|c| match c.kind {
                "queue_store" => format!("queue store of realm \"{}\" is not open", c.name),
                kind => format!("{kind} {} is not bound", c.name),
            })
            .chain(
                probes
                    .iter()
                    .filter(|(_, up)| !up)
                    .map(|(p, _)| p.reason.clone()),
            )
            .collect();
        if self.stopping.load(Ordering::Relaxed) {
            reasons.insert(0, "the server is shutting down".to_string());
        }
        let ready = reasons.is_empty();
        let body = json!({
            "status": if ready { "ready" } else { "not_ready" },
            "not_ready": reasons,
            "checks": checks
                .iter()
                .map(|c| json!({"kind": c.kind, "name": c.name, "ready": c.ready}))
                .chain(
                    probes
                        .iter()
                        .map(|(p, up)| json!({"kind": p.kind, "name": p.name, "ready": up})),
                )
                .collect::<Vec<_>>(),
        });
        (ready, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_check_passes_and_not_stopping() {
        let r = Readiness::default();
        let (ok, _) = r.report();
        assert!(ok, "no checks: ready");
        let l = r.expect("listener", "ws://127.0.0.1:1/ws".into());
        let q = r.expect("queue_store", "realm1".into());
        r.ready(l);
        let (ok, body) = r.report();
        assert!(!ok);
        assert_eq!(body["status"], "not_ready");
        assert_eq!(
            body["not_ready"][0],
            "queue store of realm \"realm1\" is not open"
        );
        assert_eq!(body["checks"][0]["ready"], true);
        r.ready(q);
        assert!(r.report().0);
        let up = std::sync::Arc::new(AtomicBool::new(false));
        let probe = up.clone();
        r.probe(
            "cluster",
            "nats".into(),
            "cluster: NATS disconnected".into(),
            move || probe.load(Ordering::Relaxed),
        );
        let (ok, body) = r.report();
        assert!(!ok);
        assert_eq!(body["not_ready"][0], "cluster: NATS disconnected");
        up.store(true, Ordering::Relaxed);
        assert!(r.report().0);
        r.stopping();
        let (ok, body) = r.report();
        assert!(!ok);
        assert_eq!(body["not_ready"][0], "the server is shutting down");
    }
}
