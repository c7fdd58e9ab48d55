//! The supervised processes on /metrics: whether each runs, its automatic
//! restarts, and whether it was left stopped in a crash loop.

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use switchyard_router::metrics::Metrics;

use super::supervisor::{Status, Supervisor};

pub(super) fn register(supervisor: &Arc<Supervisor>, metrics: &Metrics) {
    let weak = Arc::downgrade(supervisor);
    metrics.add_source(Box::new(move |out| render(&weak, out)));
}

fn render(supervisor: &Weak<Supervisor>, out: &mut String) {
    let Some(s) = supervisor.upgrade() else {
        return;
    };
    if s.processes().is_empty() {
        return;
    }
    let families: [(&str, &str, &str); 3] = [
        (
            "switchyard_process_running",
            "gauge",
            "1 while the supervised process runs.",
        ),
        (
            "switchyard_process_restarts_total",
            "counter",
            "Automatic restarts of the supervised process.",
        ),
        (
            "switchyard_process_crash_looping",
            "gauge",
            "1 while the process is left stopped after a crash loop.",
        ),
    ];
    for (i, (name, kind, help)) in families.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for m in s.processes() {
            let state = m.state();
            let v = match i {
                0 => u64::from(state.status == Status::Running),
                1 => m.restarts_total.load(Ordering::Relaxed),
                _ => u64::from(state.status == Status::CrashLoop),
            };
            // Names are checked: no quote or backslash to escape.
            let _ = writeln!(out, "{name}{{process=\"{}\"}} {v}", m.config.name);
        }
    }
}
