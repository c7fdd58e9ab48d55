//! Per-queue figures in the Prometheus text format, appended to the
//! router's /metrics: depth (ready, scheduled), in flight, dead letters,
//! the oldest ready job's age, and lifetime counts of completions, retries,
//! dead letters, jobs that found no worker, answers that came too late and
//! attempts whose destination the outbound policy refused.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::QueueService;

/// Counters the queue crate does not keep.
#[derive(Default)]
pub(super) struct QueueMetrics {
    counts: Mutex<HashMap<Arc<str>, (u64, u64, u64)>>,
}

impl QueueMetrics {
    pub(super) fn no_worker(&self, queue: &Arc<str>) {
        self.counts.lock().entry(queue.clone()).or_default().0 += 1;
    }

    pub(super) fn late_answer(&self, queue: &Arc<str>) {
        self.counts.lock().entry(queue.clone()).or_default().1 += 1;
    }

    /// Drops the counts of a deleted queue.
    pub(super) fn forget(&self, queue: &str) {
        self.counts.lock().remove(queue);
    }

    pub(super) fn http_forbidden(&self, queue: &Arc<str>) {
        self.counts.lock().entry(queue.clone()).or_default().2 += 1;
    }
}

/// Every realm's service; one metrics source renders them all, so each
/// metric family is written once.
static SERVICES: Mutex<Vec<Weak<QueueService>>> = Mutex::new(Vec::new());

pub(super) fn register(service: &Arc<QueueService>) {
    let mut services = SERVICES.lock();
    services.retain(|w| w.strong_count() > 0);
    let first = services.is_empty();
    services.push(Arc::downgrade(service));
    if first {
        service.realm.metrics.add_source(Box::new(render));
    }
}

type Row = (String, String, u64);

fn render(out: &mut String) {
    let services: Vec<Arc<QueueService>> =
        SERVICES.lock().iter().filter_map(Weak::upgrade).collect();
    let mut families: Vec<(&str, &str, &str, Vec<Row>)> = vec![
        (
            "switchyard_queue_ready",
            "gauge",
            "Jobs due and waiting for a worker.",
            Vec::new(),
        ),
        (
            "switchyard_queue_scheduled",
            "gauge",
            "Jobs waiting for their run_at (delays and retry backoffs).",
            Vec::new(),
        ),
        (
            "switchyard_queue_in_flight",
            "gauge",
            "Jobs leased to a worker.",
            Vec::new(),
        ),
        (
            "switchyard_queue_dead",
            "gauge",
            "Jobs in the dead-letter list.",
            Vec::new(),
        ),
        (
            "switchyard_queue_oldest_ready_age_seconds",
            "gauge",
            "How long the longest-waiting due job has waited.",
            Vec::new(),
        ),
        (
            "switchyard_queue_completed_total",
            "counter",
            "Jobs completed.",
            Vec::new(),
        ),
        (
            "switchyard_queue_retried_total",
            "counter",
            "Failed attempts scheduled for another attempt.",
            Vec::new(),
        ),
        (
            "switchyard_queue_dead_lettered_total",
            "counter",
            "Jobs dead-lettered.",
            Vec::new(),
        ),
        (
            "switchyard_queue_without_worker",
            "gauge",
            "1 while the queue's target procedure has no registered worker (its jobs wait).",
            Vec::new(),
        ),
        (
            "switchyard_queue_no_worker_total",
            "counter",
            "Jobs with their own target handed back because nobody registered it (the attempt not counted).",
            Vec::new(),
        ),
        (
            "switchyard_queue_late_answers_total",
            "counter",
            "Worker answers that came after their lease ended (ignored).",
            Vec::new(),
        ),
        (
            "switchyard_queue_http_forbidden_total",
            "counter",
            "Attempts refused because [realm.outbound_http] does not allow their destination.",
            Vec::new(),
        ),
    ];
    for s in &services {
        let realm = s.realm.name().to_string();
        let counts = s.metrics.counts.lock().clone();
        for q in s.queues.list() {
            let (no_worker, late, forbidden) =
                counts.get(q.name.as_str()).copied().unwrap_or_default();
            let values = [
                q.ready as u64,
                q.scheduled as u64,
                q.in_flight as u64,
                q.dead as u64,
                q.oldest_ready_age_ms.unwrap_or(0) / 1000,
                q.completed_total,
                q.retried_total,
                q.dead_lettered_total,
                u64::from(s.without_worker(&q.name)),
                no_worker,
                late,
                forbidden,
            ];
            for (family, v) in families.iter_mut().zip(values) {
                family.3.push((realm.clone(), q.name.clone(), v));
            }
        }
    }
    for (name, kind, help, rows) in families {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (realm, queue, v) in rows {
            let _ = writeln!(
                out,
                "{name}{{realm=\"{}\",queue=\"{}\"}} {v}",
                escape(&realm),
                escape(&queue)
            );
        }
    }
    render_wakeups(out, &services);
}

/// Realm-wide figures of the dispatchers: how many wait for a worker, and
/// how many registrations (or safety sweeps) woke one.
type RealmFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&QueueService) -> u64,
);

fn render_wakeups(out: &mut String, services: &[Arc<QueueService>]) {
    let families: [RealmFamily; 2] = [
        (
            "switchyard_queue_dispatchers_waiting_for_worker",
            "gauge",
            "Queue dispatchers parked until a worker registers their target (no timer).",
            |s| s.waits.parked() as u64,
        ),
        (
            "switchyard_queue_dispatcher_wakeups_total",
            "counter",
            "Parked queue dispatchers woken because a registration can serve their target.",
            |s| s.waits.woken_total(),
        ),
    ];
    for (name, kind, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for s in services {
            let _ = writeln!(
                out,
                "{name}{{realm=\"{}\"}} {}",
                escape(s.realm.name()),
                value(s)
            );
        }
    }
}

/// A label value as the text format wants it.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
