//! Dealer-side call deadlines: an ordered set of (deadline, call id) kept in
//! the Dealer's state, and one task per Dealer that sleeps until the earliest
//! deadline. No task or timer per call.

use std::sync::{Arc, Weak};
use std::time::Instant;

use tokio::sync::Notify;

/// What the timer task needs from its owner.
pub(crate) trait Expire: Send + Sync + 'static {
    /// Ends every call whose deadline is at or before `now`; returns the
    /// next deadline still pending.
    fn expire_due(&self, now: Instant) -> Option<Instant>;
}

/// Wakes the timer task when an earlier deadline appears, and starts it on
/// first use (inside a Tokio runtime).
pub(crate) struct Timer {
    wake: Arc<Notify>,
    started: std::sync::Once,
}

impl Timer {
    pub fn new() -> Self {
        Timer {
            wake: Arc::new(Notify::new()),
            started: std::sync::Once::new(),
        }
    }

    /// Tells the task to re-read the earliest deadline; starts it if needed.
    pub fn rearm<E: Expire>(&self, owner: &Arc<E>) {
        self.started.call_once(|| {
            let Ok(handle) = tokio::runtime::Handle::try_current() else {
                tracing::warn!("no Tokio runtime: dealer-side call timeouts are not enforced");
                return;
            };
            handle.spawn(run(Arc::downgrade(owner), self.wake.clone()));
        });
        self.wake.notify_one();
    }

    /// Lets the task notice its owner is gone.
    pub fn stop(&self) {
        self.wake.notify_one();
    }
}

async fn run<E: Expire>(owner: Weak<E>, wake: Arc<Notify>) {
    loop {
        let next = match owner.upgrade() {
            Some(o) => o.expire_due(Instant::now()),
            None => return,
        };
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at.into()) => {}
                    _ = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}
