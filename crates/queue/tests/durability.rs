//! Recovery, group commit, atomicity, corruption handling (real redb files).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use switchyard_queue::{
    DeadReason, JobId, JobState, Options, Priority, QueueError, Queues, RetryPolicy, StoreError,
    LEASE_LOST,
};

#[tokio::test]
async fn recovery_restores_every_state() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let mut w = cfg("w");
    w.retry = RetryPolicy::Fixed {
        times: 5,
        spacing: Duration::from_secs(10),
    };
    w.non_retryable_errors = vec!["com.example.fatal".into()];
    let mut n = cfg("n");
    n.retry = RetryPolicy::None;
    let configs = vec![w, n];

    let (ready, scheduled, leased, leased_none, dead, done, keyed, retrying);
    {
        let q = open(dir.path(), &c, configs.clone());
        ready = q
            .push(
                "w",
                job("ready")
                    .priority(Priority::HIGH)
                    .result_topic("com.example.t"),
            )
            .await
            .unwrap()
            .id;
        scheduled = q
            .push("w", job("scheduled").delay(Duration::from_secs(60)))
            .await
            .unwrap()
            .id;
        // Leased (in flight) when the "crash" happens.
        leased = q.push("w", job("leased")).await.unwrap().id;
        leased_none = q.push("n", job("leased-none")).await.unwrap().id;
        dead = q.push("w", job("dead")).await.unwrap().id;
        done = q.push("w", job("done")).await.unwrap().id;
        retrying = q.push("w", job("retrying")).await.unwrap().id;
        keyed = q
            .push("n", job("keyed").idempotency_key("order-7"))
            .await
            .unwrap()
            .id;

        // Lease in push order: ready(high) first.
        let l_ready = lease(&q, "w");
        assert_eq!(l_ready.job.id, ready);
        q.release(ready, l_ready.epoch, None)
            .unwrap()
            .await
            .unwrap();
        let mut by_id = std::collections::HashMap::new();
        for _ in 0..5 {
            let l = lease(&q, "w");
            by_id.insert(l.job.id, l);
        }
        let _ = lease(&q, "n"); // leased_none
        let l = &by_id[&dead];
        q.fail(dead, l.epoch, "com.example.fatal", "broken")
            .unwrap()
            .durable
            .await
            .unwrap();
        let l = &by_id[&done];
        q.complete(done, l.epoch).unwrap().await.unwrap();
        let l = &by_id[&retrying];
        q.fail(retrying, l.epoch, "com.example.flaky", "later")
            .unwrap()
            .durable
            .await
            .unwrap();
        // `ready` was released and re-leased above; give it back again so it is Ready.
        let l = &by_id[&ready];
        q.release(ready, l.epoch, None).unwrap().await.unwrap();
        assert!(by_id.contains_key(&leased));
        // Dropping closes the store after committing what is queued; no clean "unlease".
    }
    c.advance(Duration::from_secs(1));
    let q = open(dir.path(), &c, configs);

    let r = q.job(ready).unwrap();
    assert_eq!(r.status.state, JobState::Ready);
    assert_eq!(r.job.priority, Priority::HIGH);
    assert_eq!(r.job.result_topic.as_deref(), Some("com.example.t"));
    assert_eq!(
        &r.payload.as_ref().unwrap().bytes[..],
        br#"{"tag":"ready"}"#
    );
    assert_eq!(r.status.attempts, 0);

    let s = q.job(scheduled).unwrap();
    assert_eq!(s.status.state, JobState::Scheduled);
    assert_eq!(s.status.run_at_ms, T0 + 60_000);

    // Leased in the previous run: the attempt counts, retried at once, epoch kept.
    let l = q.job(leased).unwrap();
    assert_eq!(l.status.state, JobState::Ready);
    assert_eq!(l.status.attempts, 1);
    assert_eq!(l.status.last_error.as_ref().unwrap().uri, LEASE_LOST);
    let old_epoch = l.status.epoch;
    assert!(old_epoch >= 1);
    // With policy `none`, a lost lease dead-letters ("never run twice").
    let ln = q.job(leased_none).unwrap();
    assert!(matches!(
        ln.status.state,
        JobState::Dead {
            reason: DeadReason::PolicyExhausted,
            ..
        }
    ));

    let d = q.job(dead).unwrap();
    assert!(matches!(
        d.status.state,
        JobState::Dead {
            reason: DeadReason::NonRetryable,
            ..
        }
    ));
    assert_eq!(d.status.last_error.unwrap().message, "broken");
    assert!(q.job(done).is_none());
    let rt = q.job(retrying).unwrap();
    assert_eq!(rt.status.state, JobState::Scheduled);
    assert_eq!(rt.status.run_at_ms, T0 + 10_000);
    assert_eq!(rt.status.attempts, 1);

    let sw = q.stats("w").unwrap();
    assert_eq!(
        (sw.ready, sw.scheduled, sw.in_flight, sw.dead),
        (2, 2, 0, 1)
    );
    assert_eq!(
        (sw.completed_total, sw.retried_total, sw.dead_lettered_total),
        (1, 2, 1),
        "retried: `retrying` + the lost lease of `leased`"
    );
    let sn = q.stats("n").unwrap();
    assert_eq!((sn.ready, sn.dead, sn.dead_lettered_total), (1, 1, 1));

    // Idempotency survives.
    let dup = q
        .push("n", job("again").idempotency_key("order-7"))
        .await
        .unwrap();
    assert_eq!((dup.id, dup.duplicate), (keyed, true));
    // Fencing survives: the next lease of `leased` has a newer epoch.
    let mut got = None;
    for _ in 0..2 {
        let l = lease(&q, "w");
        if l.job.id == leased {
            got = Some(l);
        }
    }
    assert!(got.unwrap().epoch > old_epoch);
    // Ids continue above everything seen.
    let fresh = q.push("w", job("fresh")).await.unwrap().id;
    assert!(fresh > keyed);
}

#[tokio::test]
async fn ids_never_repeat_after_reopen_even_when_everything_completed() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let mut last = JobId(0);
    for _round in 0..3 {
        let q = open(dir.path(), &c, vec![cfg("w")]);
        for _ in 0..5 {
            let id = q.push("w", job("x")).await.unwrap().id;
            assert!(id > last, "{id} after {last}");
            last = id;
            let l = lease(&q, "w");
            q.complete(l.job.id, l.epoch).unwrap().await.unwrap();
        }
        assert_eq!(q.stats("w").unwrap().ready, 0);
    }
    // Ids jump after a restart (the store reserves them in blocks) but never repeat.
    assert!(last > JobId(15));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_batches_concurrent_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let q = Arc::new(
        Queues::open_with(
            dir.path().join("q.redb"),
            vec![cfg("w")],
            Options::default(),
        )
        .unwrap(),
    );
    let before = q.store_stats();
    const N: usize = 400;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..N {
        let q = q.clone();
        set.spawn(async move { q.push("w", job(&i.to_string())).await.unwrap().id });
    }
    let mut ids = Vec::new();
    while let Some(r) = set.join_next().await {
        ids.push(r.unwrap());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), N);
    let after = q.store_stats();
    let commits = after.commits - before.commits;
    let batches = after.batches - before.batches;
    assert_eq!(batches, N as u64);
    assert!(
        commits < N as u64 / 4,
        "{N} concurrent pushes took {commits} commits (largest {})",
        after.largest_commit
    );
    assert!(after.largest_commit > 1);
    assert_eq!(q.stats("w").unwrap().ready, N);
}

#[tokio::test]
async fn push_many_is_one_transaction_across_queues() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    {
        let q = open(dir.path(), &c, vec![cfg("pdf"), cfg("mail"), cfg("log")]);
        let before = q.store_stats().commits;
        let acks = q
            .push_many(vec![
                ("pdf", job("order-1")),
                ("mail", job("order-1")),
                ("log", job("order-1")),
            ])
            .await
            .unwrap();
        assert_eq!(q.store_stats().commits - before, 1);
        assert_eq!(acks.len(), 3);
        assert!(acks.windows(2).all(|w| w[1].id > w[0].id));
        for name in ["pdf", "mail", "log"] {
            assert_eq!(q.stats(name).unwrap().ready, 1);
        }
        // Unknown queue anywhere: nothing stored, no commit.
        let before = q.store_stats().commits;
        let e = q
            .push_many(vec![("pdf", job("order-2")), ("nope", job("order-2"))])
            .await
            .unwrap_err();
        assert!(matches!(e, QueueError::UnknownQueue(_)));
        assert_eq!(q.store_stats().commits, before);
        assert_eq!(q.stats("pdf").unwrap().ready, 1);
    }
    let q = open(dir.path(), &c, vec![cfg("pdf"), cfg("mail"), cfg("log")]);
    for name in ["pdf", "mail", "log"] {
        assert_eq!(q.stats(name).unwrap().ready, 1, "{name}");
    }
}

#[tokio::test]
async fn idempotency_window_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let mut w = cfg("w");
    w.idempotency_window = Duration::from_secs(60);
    let first = {
        let q = open(dir.path(), &c, vec![w.clone()]);
        let a = q.push("w", job("a").idempotency_key("k")).await.unwrap();
        let l = lease(&q, "w");
        q.complete(l.job.id, l.epoch).unwrap().await.unwrap();
        a.id
    };
    c.advance(Duration::from_secs(30));
    {
        let q = open(dir.path(), &c, vec![w.clone()]);
        let d = q.push("w", job("b").idempotency_key("k")).await.unwrap();
        assert_eq!((d.id, d.duplicate), (first, true));
        assert_eq!(q.stats("w").unwrap().ready, 0);
    }
    c.advance(Duration::from_secs(30));
    let q = open(dir.path(), &c, vec![w]);
    assert_eq!(q.stats("w").unwrap().idempotency_keys, 0, "pruned at load");
    let n = q.push("w", job("c").idempotency_key("k")).await.unwrap();
    assert!(!n.duplicate);
    assert!(n.id > first);
}

#[tokio::test]
async fn config_file_overrides_stored_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    {
        let q = open(dir.path(), &c, vec![cfg("w")]);
        q.push("w", job("x")).await.unwrap();
    }
    let mut changed = cfg("w");
    changed.max_attempts = 3;
    {
        let q = open(dir.path(), &c, vec![changed]);
        assert_eq!(q.config("w").unwrap().max_attempts, 3);
    }
    // Removed from the config file: kept as stored, jobs intact.
    let q = open(dir.path(), &c, vec![]);
    assert_eq!(q.config("w").unwrap().max_attempts, 3);
    assert_eq!(q.stats("w").unwrap().ready, 1);
    let e = Queues::open_with(
        dir.path().join("queues.redb"),
        vec![cfg("a"), cfg("a")],
        Options::default(),
    );
    drop(q);
    assert!(e.is_err());
}

#[test]
fn corrupt_store_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    // Not a redb file at all.
    let junk = dir.path().join("junk.redb");
    std::fs::write(&junk, vec![0x5a; 8192]).unwrap();
    let e = Queues::open(&junk, vec![]).err().unwrap();
    // Refused as damaged, naming the file (never opened as an empty store).
    assert!(
        matches!(e, QueueError::Store(StoreError::Corrupt(_))),
        "{e}"
    );
    assert!(e.to_string().contains("junk.redb"), "{e}");

    // A valid redb file whose job record is garbage.
    let path = dir.path().join("q.redb");
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let q = Queues::open(&path, vec![cfg("w")]).unwrap();
        rt.block_on(q.push("w", job("x"))).unwrap();
    }
    {
        let db = redb::Database::open(&path).unwrap();
        let t = db.begin_write().unwrap();
        {
            let mut jobs = t
                .open_table(redb::TableDefinition::<u64, &[u8]>::new("jobs"))
                .unwrap();
            jobs.insert(1u64, &[1u8, 1, 0, 0, 0, 0, 0, 0, 0, 0xff][..])
                .unwrap();
        }
        t.commit().unwrap();
    }
    let e = Queues::open(&path, vec![cfg("w")]).err().unwrap();
    assert!(
        matches!(e, QueueError::Store(StoreError::Corrupt(_))),
        "{e}"
    );
    assert!(e.to_string().contains("job 1"), "{e}");
}

#[tokio::test]
async fn closed_store_refuses_operations() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let q = open(dir.path(), &c, vec![cfg("w")]);
    q.push("w", job("x")).await.unwrap();
    q.close();
    let e = q.push("w", job("y")).await.unwrap_err();
    assert!(matches!(e, QueueError::Store(StoreError::Closed)), "{e}");
    drop(q);
    // Reopen works after close (file lock released) and the first job is there.
    let q = open(dir.path(), &c, vec![cfg("w")]);
    assert_eq!(q.stats("w").unwrap().ready, 1);
}

/// A version 1 job record (payload inline), as stores before format 2 wrote it.
fn v1_record(id: u64, queue: &str, payload: &[u8]) -> Vec<u8> {
    fn put_str(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s);
    }
    let mut r = vec![1u8];
    r.extend_from_slice(&id.to_le_bytes());
    put_str(&mut r, queue.as_bytes());
    r.push(0); // JSON
    put_str(&mut r, payload);
    r.push(0); // procedure target
    put_str(&mut r, b"com.example.work");
    r.push(5); // priority
    r.extend_from_slice(&T0.to_le_bytes()); // created
    r.extend_from_slice(&T0.to_le_bytes()); // run_at
    r.extend_from_slice(&0u32.to_le_bytes()); // attempts
    r.extend_from_slice(&0u64.to_le_bytes()); // epoch
    r.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // max_attempts, retry, key, topic, error, state
    r
}

/// A store of format 1 (payloads inside the job records) is migrated when it opens, in
/// chunks: its jobs keep their payloads, which now live in their own table.
#[test]
fn format_1_stores_are_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queues.redb");
    let n = 600u64;
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn
                .open_table(redb::TableDefinition::<&str, u64>::new("meta"))
                .unwrap();
            meta.insert("format", 1).unwrap();
            meta.insert("max_job_id", n + 10).unwrap();
            let mut queues = txn
                .open_table(redb::TableDefinition::<&str, &[u8]>::new("queues"))
                .unwrap();
            let json = serde_json::to_vec(&cfg("w")).unwrap();
            queues.insert("w", json.as_slice()).unwrap();
            let mut jobs = txn
                .open_table(redb::TableDefinition::<u64, &[u8]>::new("jobs"))
                .unwrap();
            for id in 1..=n {
                let rec = v1_record(id, "w", format!("{{\"tag\":\"{id}\"}}").as_bytes());
                jobs.insert(id, rec.as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }
    let c = clock();
    let mut w = cfg("w");
    w.concurrency = 0;
    let q = open(dir.path(), &c, vec![w.clone()]);
    assert_eq!(q.stats("w").unwrap().ready, n as usize);
    let mut tags = Vec::new();
    for _ in 0..n {
        let l = lease(&q, "w");
        assert_eq!(tag(&l), l.job.id.0.to_string());
        assert_eq!(l.job.payload_bytes as usize, tag(&l).len() + 10);
        tags.push(l.job.id.0);
    }
    assert_eq!(tags.len(), n as usize);
    drop(q);
    // Opened again: format 2, nothing left to migrate, payloads still there.
    let q = open(dir.path(), &c, vec![w]);
    let info = q.job(JobId(7)).unwrap();
    assert_eq!(&info.payload.unwrap().bytes[..], br#"{"tag":"7"}"#);
}
