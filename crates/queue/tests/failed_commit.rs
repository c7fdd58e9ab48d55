//! Pushes whose commit fails (a full disk) are forgotten: their idempotency
//! key does not name a job the store never took, and the room they held in
//! the run-time queues' limits is given back. A store that then works again
//! takes the same pushes.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{cfg, clock, job, lease, tag};
use switchyard_queue::store::{Batch, Snapshot, Store, StoreStats};
use switchyard_queue::{
    JobId, Options, Payload, QueueError, Queues, RedbOptions, RedbStore, StoreError,
};

/// A store whose commits fail while `failing` is set (as a full disk makes
/// them fail), then work again.
struct Flaky {
    inner: RedbStore,
    failing: AtomicBool,
}

impl Store for Flaky {
    fn load(&self, now_ms: u64) -> Result<Snapshot, StoreError> {
        self.inner.load(now_ms)
    }
    fn submit(&self, batch: Batch) -> Result<(), StoreError> {
        if !self.failing.load(Ordering::SeqCst) {
            return self.inner.submit(batch);
        }
        if let Some(done) = batch.done {
            // Never from inside submit.
            std::thread::spawn(move || {
                done(Err(StoreError::Storage(
                    "I/O error: No space left on device (os error 28)".into(),
                )))
            });
        }
        Ok(())
    }
    fn payloads(&self, ids: &[JobId]) -> Result<Vec<Option<Payload>>, StoreError> {
        self.inner.payloads(ids)
    }
    fn stats(&self) -> StoreStats {
        self.inner.stats()
    }
    fn failure(&self) -> Option<StoreError> {
        None
    }
    fn close(&self) {
        self.inner.close()
    }
}

#[tokio::test]
async fn a_push_whose_commit_failed_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Flaky {
        inner: RedbStore::open(dir.path().join("q.redb"), RedbOptions::default()).unwrap(),
        failing: AtomicBool::new(false),
    });
    let clock = clock();
    let q = Queues::with_store(
        store.clone(),
        Vec::new(),
        Options {
            clock: clock.clone(),
            runtime_max_jobs: 2,
            ..Options::default()
        },
    )
    .unwrap();
    q.declare(cfg("w")).await.unwrap();

    store.failing.store(true, Ordering::SeqCst);
    for i in 0..3 {
        let e = q
            .push("w", job(&format!("lost{i}")).idempotency_key("k"))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, QueueError::Store(_)) && e.to_string().contains("No space"),
            "{e}"
        );
    }
    store.failing.store(false, Ordering::SeqCst);

    // The key names no job: the push again is a new job, not a duplicate.
    let a = q.push("w", job("a").idempotency_key("k")).await.unwrap();
    assert!(!a.duplicate, "{a:?}");
    // The failed pushes hold no room in the run-time limit of 2 jobs.
    q.push("w", job("b")).await.unwrap();
    let st = q.stats("w").unwrap();
    assert_eq!(st.ready, 2, "{st:?}");
    assert_eq!(tag(&lease(&q, "w")), "a");
    assert_eq!(tag(&lease(&q, "w")), "b");
}
