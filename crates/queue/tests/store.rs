//! The redb store through the `Store` trait: ordering, atomic batches, lease-row coalescing.

use std::sync::mpsc;
use std::sync::Arc;

use switchyard_queue::store::{Batch, Mutation, Store};
use switchyard_queue::{
    Job, JobId, JobState, JobStatus, Priority, QueueConfig, RedbOptions, RedbStore, StoreError,
    Target,
};

fn job(id: u64) -> Arc<Job> {
    Arc::new(Job {
        id: JobId(id),
        queue: "w".into(),
        payload_bytes: 0,
        target: Target::procedure("a.b"),
        priority: Priority::NORMAL,
        created_at_ms: 1,
        max_attempts: None,
        retry: None,
        idempotency_key: None,
        result_topic: None,
    })
}

fn waiting() -> JobStatus {
    JobStatus {
        state: JobState::Ready,
        run_at_ms: 1,
        attempts: 0,
        epoch: 0,
        last_error: None,
    }
}

fn lease(id: u64, epoch: u64) -> Mutation {
    Mutation::PutLease {
        id: JobId(id),
        epoch,
        deadline_ms: 100,
        attempts: epoch as u32,
    }
}

fn commit(store: &RedbStore, mutations: Vec<Mutation>) -> Result<(), StoreError> {
    let (tx, rx) = mpsc::channel();
    store
        .submit(Batch {
            mutations,
            done: Some(Box::new(move |r| {
                let _ = tx.send(r);
            })),
            durable: true,
        })
        .unwrap();
    rx.recv().unwrap()
}

fn leased_ids(path: &std::path::Path) -> Vec<u64> {
    use redb::{ReadableDatabase, ReadableTable};
    let db = redb::Database::open(path).unwrap();
    let t = db.begin_read().unwrap();
    let leases = t
        .open_table(redb::TableDefinition::<u64, (u64, u64, u32)>::new("leases"))
        .unwrap();
    leases
        .iter()
        .unwrap()
        .map(|r| r.unwrap().0.value())
        .collect()
}

#[test]
fn lease_rows_are_coalesced_and_cleaned_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    {
        let s = RedbStore::open(&path, RedbOptions::default()).unwrap();
        let put = |id| Mutation::PutJob {
            job: job(id),
            status: waiting(),
        };
        commit(
            &s,
            vec![
                Mutation::PutQueue(std::sync::Arc::new(QueueConfig::new("w"))),
                put(1),
                put(2),
                put(3),
                put(4),
            ],
        )
        .unwrap();
        // 1: leased and completed in one commit: the lease row is never written.
        commit(&s, vec![lease(1, 1), Mutation::RemoveJob(JobId(1))]).unwrap();
        assert_eq!(s.stats().coalesced, 1);
        // 2: leased in one commit, completed in the next: the row is written, then removed.
        commit(&s, vec![lease(2, 1)]).unwrap();
        commit(&s, vec![Mutation::RemoveJob(JobId(2))]).unwrap();
        // 3: leased, failed (lease removed), leased again, in one commit: the second lease stays.
        commit(
            &s,
            vec![
                lease(3, 1),
                Mutation::PutJob {
                    job: job(3),
                    status: waiting(),
                },
                Mutation::RemoveLease(JobId(3)),
                lease(3, 2),
            ],
        )
        .unwrap();
        // 4: rewritten, then completed in one commit: the rewrite is elided.
        commit(
            &s,
            vec![
                Mutation::PutJob {
                    job: job(4),
                    status: waiting(),
                },
                Mutation::RemoveJob(JobId(4)),
            ],
        )
        .unwrap();
        assert_eq!(s.stats().coalesced, 3);
        let snap = s.load(0).unwrap();
        let ids: Vec<u64> = snap.jobs.iter().map(|(j, _)| j.id.0).collect();
        assert_eq!(ids, [3]);
        assert_eq!(
            snap.jobs[0].1.state,
            JobState::Leased {
                epoch: 2,
                deadline_ms: 100
            }
        );
        assert!(
            snap.max_job_id >= 4,
            "ids up to 4 are covered by the reservation"
        );
    }
    assert_eq!(leased_ids(&path), [3]);
    {
        // A reopened store knows which lease rows exist and removes them.
        let s = RedbStore::open(&path, RedbOptions::default()).unwrap();
        commit(&s, vec![Mutation::RemoveJob(JobId(3))]).unwrap();
    }
    assert!(leased_ids(&path).is_empty());
}

#[test]
fn batches_apply_in_order_and_barriers_wait() {
    let dir = tempfile::tempdir().unwrap();
    let s = RedbStore::open(dir.path().join("s.redb"), RedbOptions::default()).unwrap();
    let (tx, rx) = mpsc::channel();
    for i in 0..50u64 {
        let tx = tx.clone();
        let mutations = if i % 5 == 4 {
            Vec::new() // a barrier
        } else {
            vec![Mutation::PutJob {
                job: job(i + 1),
                status: waiting(),
            }]
        };
        s.submit(Batch {
            mutations,
            done: Some(Box::new(move |r| {
                r.unwrap();
                let _ = tx.send(i);
            })),
            durable: true,
        })
        .unwrap();
    }
    drop(tx);
    let order: Vec<u64> = rx.iter().collect();
    assert_eq!(
        order,
        (0..50).collect::<Vec<_>>(),
        "completions run in submission order"
    );
    assert_eq!(s.load(0).unwrap().jobs.len(), 40);
    s.close();
    assert!(matches!(
        s.submit(Batch::detached(Vec::new())),
        Err(StoreError::Closed)
    ));
}

/// A batch that need not be fsync'd at once is committed without one; its completion runs
/// after the fsync that persists it: the next durable commit, or one the writer forces within
/// `MAX_NON_DURABLE` when nothing else comes. Either way it survives a reopen.
#[test]
fn non_durable_batches_complete_after_the_next_fsync() {
    use std::time::{Duration, Instant};
    use switchyard_queue::store::MAX_NON_DURABLE;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let submit = |s: &RedbStore,
                  mutations: Vec<Mutation>,
                  durable: bool,
                  tx: mpsc::Sender<u64>,
                  tag: u64| {
        s.submit(Batch {
            mutations,
            done: Some(Box::new(move |r| {
                r.unwrap();
                let _ = tx.send(tag);
            })),
            durable,
        })
        .unwrap();
    };
    let put = |id| Mutation::PutJob {
        job: job(id),
        status: waiting(),
    };
    {
        let s = RedbStore::open(&path, RedbOptions::default()).unwrap();
        commit(
            &s,
            vec![
                Mutation::PutQueue(std::sync::Arc::new(QueueConfig::new("w"))),
                put(1),
                put(2),
            ],
        )
        .unwrap();
        let synced = s.stats().syncs;
        // Alone: the writer forces the fsync after MAX_NON_DURABLE.
        let (tx, rx) = mpsc::channel();
        let started = Instant::now();
        submit(&s, vec![Mutation::RemoveJob(JobId(1))], false, tx, 1);
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(1));
        assert!(
            started.elapsed() >= MAX_NON_DURABLE,
            "{:?}",
            started.elapsed()
        );
        let st = s.stats();
        assert_eq!(st.syncs, synced + 1, "{st:?}");
        // Followed by a durable batch: both complete with its fsync, in order.
        let (tx, rx) = mpsc::channel();
        submit(
            &s,
            vec![Mutation::RemoveJob(JobId(2))],
            false,
            tx.clone(),
            2,
        );
        submit(&s, vec![put(3)], true, tx, 3);
        let got: Vec<u64> = rx.iter().take(2).collect();
        assert_eq!(got, [2, 3]);
        assert!(s.stats().commits >= 3);
    }
    let s = RedbStore::open(&path, RedbOptions::default()).unwrap();
    let ids: Vec<u64> = s
        .load(1)
        .unwrap()
        .jobs
        .iter()
        .map(|(j, _)| j.id.0)
        .collect();
    assert_eq!(ids, [3]);
}
