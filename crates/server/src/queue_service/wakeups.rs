//! Dispatchers waiting for a worker, and the registrations that wake them.
//!
//! A queue whose target procedure has no callee leaves its jobs alone and
//! parks its dispatcher here, with no timer. A new registration
//! (`wamp.registration.on_create`) wakes only the dispatchers whose target
//! it can serve: an exact registration of that procedure, or a prefix or
//! wildcard registration matching it. So an idle queue costs no CPU, and a
//! registration costs work proportional to the queues it serves, not to
//! every queue of the realm.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use switchyard_router::uri_index::MatchPolicy;
use tokio::sync::Notify;

struct Waiting {
    procedure: String,
    notify: Arc<Notify>,
}

/// The dispatchers parked until a worker registers, by queue.
#[derive(Default)]
pub(super) struct WorkerWaits {
    waiting: Mutex<HashMap<String, Waiting>>,
    /// Dispatchers woken by registrations (and by the safety sweep), lifetime.
    woken: AtomicU64,
}

impl WorkerWaits {
    /// Parks `queue`'s dispatcher until a registration can serve
    /// `procedure`; await the returned notifier (a wake-up that comes
    /// before the await is kept).
    pub(super) fn park(&self, queue: &str, procedure: &str) -> Arc<Notify> {
        let notify = Arc::new(Notify::new());
        self.waiting.lock().insert(
            queue.to_string(),
            Waiting {
                procedure: procedure.to_string(),
                notify: notify.clone(),
            },
        );
        notify
    }

    /// Wakes `queue`'s dispatcher if it is parked (its queue was deleted,
    /// or it found a worker after all).
    pub(super) fn unpark(&self, queue: &str) {
        if let Some(w) = self.waiting.lock().remove(queue) {
            w.notify.notify_one();
        }
    }

    /// A registration of `uri` under `policy` was created: wakes the parked
    /// dispatchers whose procedure it matches; returns their queues.
    pub(super) fn registered(&self, uri: &str, policy: MatchPolicy) -> Vec<String> {
        self.wake_where(|procedure| policy.matches(uri, procedure))
    }

    /// Wakes the parked dispatchers whose procedure `has_worker` says can
    /// be served now (a safety net for a registration event that was lost).
    pub(super) fn sweep(&self, has_worker: impl Fn(&str) -> bool) -> Vec<String> {
        self.wake_where(has_worker)
    }

    fn wake_where(&self, serves: impl Fn(&str) -> bool) -> Vec<String> {
        let mut woken = Vec::new();
        self.waiting.lock().retain(|queue, w| {
            if serves(&w.procedure) {
                w.notify.notify_one();
                woken.push(queue.clone());
                false
            } else {
                true
            }
        });
        self.woken.fetch_add(woken.len() as u64, Ordering::Relaxed);
        woken
    }

    /// Dispatchers parked now.
    pub(super) fn parked(&self) -> usize {
        self.waiting.lock().len()
    }

    /// Dispatchers woken so far.
    pub(super) fn woken_total(&self) -> u64 {
        self.woken.load(Ordering::Relaxed)
    }
}
