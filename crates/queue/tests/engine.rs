//! Scheduler behaviour through the public API, on real redb files, with a manual clock.

mod common;

use std::time::Duration;

use common::*;
use switchyard_queue::{
    DeadReason, Declared, JobId, JobState, NewJob, Options, Outcome, Payload, Priority, Purge,
    QueueConfig, QueueError, Queues, RateLimit, Requeue, RetryPolicy, Target, WaitReason,
    LEASE_EXPIRED,
};

const S: u64 = 1000;

#[tokio::test]
async fn priority_then_fifo_order() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let q = open(dir.path(), &c, vec![cfg("w")]);
    for (t, p) in [("a", 5), ("b", 5), ("c", 9), ("d", 0), ("e", 9), ("f", 5)] {
        q.push("w", job(t).priority(Priority::new(p).unwrap()))
            .await
            .unwrap();
    }
    // A job whose backoff made it due earlier goes before newer jobs of its priority.
    q.push("w", job("g").run_at(T0 - 10 * S)).await.unwrap();
    let order: Vec<String> = (0..7).map(|_| tag(&lease(&q, "w"))).collect();
    assert_eq!(order, ["c", "e", "g", "a", "b", "f", "d"]);
    let w = try_lease(&q, "w").unwrap_err();
    assert_eq!(w.reason, WaitReason::Empty);
    assert_eq!(w.until_ms, None);
}

#[tokio::test]
async fn delayed_jobs_become_ready_at_run_at() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let q = open(dir.path(), &c, vec![cfg("w")]);
    q.push("w", job("late").delay(Duration::from_secs(10)))
        .await
        .unwrap();
    q.push("w", job("sooner").run_at(T0 + 5 * S)).await.unwrap();
    let w = try_lease(&q, "w").unwrap_err();
    assert_eq!(w.until_ms, Some(T0 + 5 * S));
    let s = q.stats("w").unwrap();
    assert_eq!((s.ready, s.scheduled), (0, 2));

    c.advance(Duration::from_millis(4999));
    assert!(try_lease(&q, "w").is_err());
    c.advance(Duration::from_millis(1));
    assert_eq!(tag(&lease(&q, "w")), "sooner");
    assert_eq!(try_lease(&q, "w").unwrap_err().until_ms, Some(T0 + 10 * S));
    c.advance(Duration::from_secs(5));
    assert_eq!(q.stats("w").unwrap().ready, 1);
    assert_eq!(tag(&lease(&q, "w")), "late");
}

#[tokio::test]
async fn lease_expiry_retries_per_policy_then_dead() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let mut qc = cfg("w");
    qc.retry = RetryPolicy::Fixed {
        times: 2,
        spacing: Duration::from_secs(10),
    };
    qc.lease_timeout = Duration::from_secs(30);
    let q = open(dir.path(), &c, vec![qc]);
    let id = q.push("w", job("x")).await.unwrap().id;

    for attempt in 1..=3u32 {
        let l = lease(&q, "w");
        assert_eq!(
            (l.job.id, l.attempt, l.epoch),
            (id, attempt, u64::from(attempt))
        );
        assert_eq!(l.deadline_ms, c.now_ms() + 30 * S);
        c.advance(Duration::from_millis(29_999));
        assert!(q.maintain().unwrap().expired.is_empty());
        c.advance(Duration::from_millis(1));
        let m = q.maintain().unwrap();
        assert_eq!(m.expired.len(), 1);
        assert_eq!(m.expired[0].epoch, u64::from(attempt));
        if attempt < 3 {
            assert_eq!(
                m.expired[0].outcome,
                Outcome::Retry {
                    at_ms: c.now_ms() + 10 * S
                }
            );
            assert_eq!(q.stats("w").unwrap().scheduled, 1);
            assert!(try_lease(&q, "w").is_err(), "backoff not honoured");
            c.advance(Duration::from_secs(10));
        } else {
            assert_eq!(
                m.expired[0].outcome,
                Outcome::Dead {
                    reason: DeadReason::PolicyExhausted
                }
            );
        }
    }
    let s = q.stats("w").unwrap();
    assert_eq!((s.dead, s.retried_total, s.dead_lettered_total), (1, 2, 1));
    let dead = q.dead("w", 10).unwrap();
    assert_eq!(dead[0].job.id, id);
    assert_eq!(dead[0].status.attempts, 3);
    assert_eq!(
        dead[0].status.last_error.as_ref().unwrap().uri,
        LEASE_EXPIRED
    );
}

#[tokio::test]
async fn exponential_backoff_on_explicit_failures() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let mut qc = cfg("w");
    qc.retry = RetryPolicy::Exponential {
        initial: Duration::from_secs(1),
        factor: 2.0,
        cap: Duration::from_secs(4),
        jitter: 0.0,
        max_attempts: None,
    };
    let q = open(dir.path(), &c, vec![qc]);
    q.push("w", job("x")).await.unwrap();
    let mut gaps = Vec::new();
    for _ in 0..4 {
        let l = lease(&q, "w");
        let s = q.fail(l.job.id, l.epoch, "com.example.oops", "no").unwrap();
        s.durable.await.unwrap();
        let Outcome::Retry { at_ms } = s.outcome else {
            panic!("{:?}", s.outcome)
        };
        gaps.push(at_ms - c.now_ms());
        c.set(at_ms);
    }
    assert_eq!(gaps, [S, 2 * S, 4 * S, 4 * S]);
}

#[tokio::test]
async fn max_attempts_and_non_retryable_errors() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let mut qc = cfg("w");
    qc.retry = RetryPolicy::Fixed {
        times: 100,
        spacing: Duration::ZERO,
    };
    qc.max_attempts = 3;
    qc.non_retryable_errors = vec!["com.example.invalid".into(), "com.example.fatal.*".into()];
    let q = open(dir.path(), &c, vec![qc]);

    // max_attempts from the queue.
    let id = q.push("w", job("a")).await.unwrap().id;
    for n in 1..=3 {
        let l = lease(&q, "w");
        let out = q
            .fail(id, l.epoch, "com.example.oops", "again")
            .unwrap()
            .outcome;
        if n < 3 {
            assert!(matches!(out, Outcome::Retry { .. }));
        } else {
            assert_eq!(
                out,
                Outcome::Dead {
                    reason: DeadReason::AttemptsExhausted
                }
            );
        }
    }
    // Per-job override.
    let id = q.push("w", job("b").max_attempts(1)).await.unwrap().id;
    let l = lease(&q, "w");
    let out = q.fail(id, l.epoch, "com.example.oops", "").unwrap().outcome;
    assert_eq!(
        out,
        Outcome::Dead {
            reason: DeadReason::AttemptsExhausted
        }
    );
    // Non-retryable: exact and prefix.
    for uri in ["com.example.invalid", "com.example.fatal.disk"] {
        let id = q.push("w", job("c")).await.unwrap().id;
        let l = lease(&q, "w");
        let out = q.fail(id, l.epoch, uri, "bad input").unwrap().outcome;
        assert_eq!(
            out,
            Outcome::Dead {
                reason: DeadReason::NonRetryable
            }
        );
        let info = q.job(id).unwrap();
        assert!(matches!(
            info.status.state,
            JobState::Dead {
                reason: DeadReason::NonRetryable,
                ..
            }
        ));
        assert_eq!(info.status.last_error.unwrap().message, "bad input");
    }
    // Per-job policy override: none.
    let id = q
        .push("w", job("d").retry(RetryPolicy::None))
        .await
        .unwrap()
        .id;
    let l = lease(&q, "w");
    assert_eq!(
        q.fail(id, l.epoch, "x.y", "").unwrap().outcome,
        Outcome::Dead {
            reason: DeadReason::PolicyExhausted
        }
    );
    assert_eq!(q.stats("w").unwrap().dead, 5);
}

#[tokio::test]
async fn fencing_refuses_stale_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let mut qc = cfg("w");
    qc.retry = RetryPolicy::Fixed {
        times: 5,
        spacing: Duration::ZERO,
    };
    let q = open(dir.path(), &c, vec![qc]);
    let id = q.push("w", job("x")).await.unwrap().id;
    let old = lease(&q, "w");
    c.advance(Duration::from_secs(31));
    assert_eq!(q.maintain().unwrap().expired.len(), 1);
    let new = lease(&q, "w");
    assert_eq!(new.job.id, id);
    assert!(new.epoch > old.epoch);

    let stale = |r: Result<(), QueueError>| {
        assert!(
            matches!(r, Err(QueueError::StaleLease { job, epoch }) if job == id && epoch == old.epoch),
            "{r:?}"
        )
    };
    stale(q.complete(id, old.epoch).map(drop));
    stale(q.fail(id, old.epoch, "a.b", "").map(drop));
    stale(q.extend(id, old.epoch, None).map(drop));
    stale(q.release(id, old.epoch, None).map(drop));
    // The current attempt is untouched and completes.
    assert_eq!(q.job(id).unwrap().status.epoch, new.epoch);
    q.complete(id, new.epoch).unwrap().await.unwrap();
    assert!(matches!(
        q.complete(id, new.epoch),
        Err(QueueError::UnknownJob(j)) if j == id
    ));
    assert_eq!(q.stats("w").unwrap().completed_total, 1);
    // A job that is not leased at all refuses settlement too.
    let id2 = q.push("w", job("y")).await.unwrap().id;
    assert!(matches!(
        q.complete(id2, 0),
        Err(QueueError::StaleLease { .. })
    ));
}

#[tokio::test]
async fn extend_moves_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let q = open(dir.path(), &c, vec![cfg("w")]);
    let id = q.push("w", job("x")).await.unwrap().id;
    let l = lease(&q, "w");
    c.advance(Duration::from_secs(20));
    let (deadline, d) = q
        .extend(id, l.epoch, Some(Duration::from_secs(60)))
        .unwrap();
    d.await.unwrap();
    assert_eq!(deadline, c.now_ms() + 60 * S);
    // Never shortens.
    let (d2, _) = q.extend(id, l.epoch, Some(Duration::from_secs(1))).unwrap();
    assert_eq!(d2, deadline);
    c.advance(Duration::from_secs(30)); // past the original 30 s lease
    assert!(q.maintain().unwrap().expired.is_empty());
    assert_eq!(q.maintain().unwrap().next_wakeup_ms, Some(deadline));
    c.set(deadline);
    assert_eq!(q.maintain().unwrap().expired.len(), 1);
    assert!(matches!(
        q.extend(id, l.epoch, Some(Duration::from_secs(8 * 24 * 3600))),
        Err(QueueError::Invalid(_)) | Err(QueueError::StaleLease { .. })
    ));
}

#[tokio::test]
async fn release_does_not_count_the_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let q = open(dir.path(), &c, vec![cfg("w")]);
    let id = q.push("w", job("x")).await.unwrap().id;
    let l = lease(&q, "w");
    q.release(id, l.epoch, Some(Duration::from_secs(2)))
        .unwrap()
        .await
        .unwrap();
    let info = q.job(id).unwrap();
    assert_eq!(info.status.attempts, 0);
    assert_eq!(info.status.state, JobState::Scheduled);
    c.advance(Duration::from_secs(2));
    let l2 = lease(&q, "w");
    assert_eq!(l2.attempt, 1);
    assert!(l2.epoch > l.epoch);
}

#[tokio::test]
async fn requeue_and_purge() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let mut qc = cfg("w");
    qc.retry = RetryPolicy::None;
    let q = open(dir.path(), &c, vec![qc]);
    let mut dead = Vec::new();
    for i in 0..3 {
        let id = q.push("w", job(&format!("d{i}"))).await.unwrap().id;
        let l = lease(&q, "w");
        q.fail(id, l.epoch, "a.b", "x")
            .unwrap()
            .durable
            .await
            .unwrap();
        dead.push(id);
    }
    q.push("w", job("r1")).await.unwrap();
    q.push("w", job("s1").delay(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(q.stats("w").unwrap().dead, 3);
    // Newest dead first.
    let listed: Vec<JobId> = q.dead("w", 10).unwrap().iter().map(|j| j.job.id).collect();
    assert_eq!(listed, [dead[2], dead[1], dead[0]]);

    // Requeue by id: a non-dead id refuses the whole request.
    let e = q
        .requeue("w", Requeue::Jobs(vec![dead[0], JobId(999_999)]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("999999"), "{e}");
    assert_eq!(q.stats("w").unwrap().dead, 3);
    assert_eq!(
        q.requeue("w", Requeue::Jobs(vec![dead[0]])).await.unwrap(),
        1
    );
    let info = q.job(dead[0]).unwrap();
    assert_eq!(
        (info.status.state, info.status.attempts),
        (JobState::Ready, 0)
    );
    assert_eq!(info.status.last_error.unwrap().uri, "a.b");
    assert_eq!(q.requeue("w", Requeue::AllDead).await.unwrap(), 2);
    let s = q.stats("w").unwrap();
    assert_eq!((s.ready, s.scheduled, s.dead), (4, 1, 0));
    // Requeued jobs keep their place by original run_at: they come first.
    assert_eq!(tag(&lease(&q, "w")), "d0");

    // Purge.
    let l = lease(&q, "w");
    q.fail(l.job.id, l.epoch, "a.b", "")
        .unwrap()
        .durable
        .await
        .unwrap();
    assert_eq!(q.purge("w", Purge::Dead).await.unwrap(), 1);
    assert!(q.job(l.job.id).is_none());
    assert_eq!(q.purge("w", Purge::Ready).await.unwrap(), 3); // 2 ready + 1 scheduled
    let s = q.stats("w").unwrap();
    assert_eq!(
        (s.ready, s.scheduled, s.dead, s.in_flight),
        (0, 0, 0, 1),
        "d0 is still leased"
    );
    q.push("w", job("z")).await.unwrap();
    let l = lease(&q, "w");
    assert_eq!(q.purge("w", Purge::All).await.unwrap(), 2);
    assert!(matches!(
        q.complete(l.job.id, l.epoch),
        Err(QueueError::UnknownJob(_))
    ));
}

#[tokio::test]
async fn idempotency_keys() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let mut qc = cfg("w");
    qc.idempotency_window = Duration::from_secs(3600);
    let q = open(dir.path(), &c, vec![qc, cfg("other")]);
    let a = q.push("w", job("a").idempotency_key("k1")).await.unwrap();
    assert!(!a.duplicate);
    let b = q.push("w", job("b").idempotency_key("k1")).await.unwrap();
    assert_eq!((b.id, b.duplicate), (a.id, true));
    assert_eq!(q.stats("w").unwrap().ready, 1);
    // Keys are per queue.
    let o = q
        .push("other", job("o").idempotency_key("k1"))
        .await
        .unwrap();
    assert!(!o.duplicate);
    // Still a duplicate once the original completed.
    let l = lease(&q, "w");
    q.complete(l.job.id, l.epoch).unwrap().await.unwrap();
    c.advance(Duration::from_secs(3599));
    let d = q.push("w", job("c").idempotency_key("k1")).await.unwrap();
    assert_eq!((d.id, d.duplicate), (a.id, true));
    // Concurrent duplicates in one push_many: one job.
    let acks = q
        .push_many(vec![
            ("w", job("m1").idempotency_key("k2")),
            ("w", job("m2").idempotency_key("k2")),
        ])
        .await
        .unwrap();
    assert_eq!(acks[1].id, acks[0].id);
    assert!(!acks[0].duplicate && acks[1].duplicate);
    // After the window the key is forgotten: a new job.
    c.advance(Duration::from_secs(1));
    assert_eq!(q.stats("w").unwrap().idempotency_keys, 2);
    q.maintain().unwrap();
    assert_eq!(q.stats("w").unwrap().idempotency_keys, 1);
    let e = q.push("w", job("e").idempotency_key("k1")).await.unwrap();
    assert!(!e.duplicate);
    assert_ne!(e.id, a.id);
}

#[tokio::test]
async fn concurrency_limit() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let mut qc = cfg("w");
    qc.concurrency = 2;
    let q = open(dir.path(), &c, vec![qc]);
    for i in 0..5 {
        q.push("w", job(&i.to_string())).await.unwrap();
    }
    let notify = q.notifier("w").unwrap();
    let a = lease(&q, "w");
    let b = lease(&q, "w");
    let w = try_lease(&q, "w").unwrap_err();
    assert_eq!(w.reason, WaitReason::Concurrency);
    assert_eq!(q.stats("w").unwrap().in_flight, 2);
    // Drain the permits the pushes left, then check a completion wakes the dispatcher.
    while tokio::time::timeout(Duration::from_millis(1), notify.notified())
        .await
        .is_ok()
    {}
    q.complete(a.job.id, a.epoch).unwrap().await.unwrap();
    tokio::time::timeout(Duration::from_secs(1), notify.notified())
        .await
        .expect("completion notifies");
    let c3 = lease(&q, "w");
    assert!(try_lease(&q, "w").is_err());
    q.fail(b.job.id, b.epoch, "a.b", "")
        .unwrap()
        .durable
        .await
        .unwrap();
    q.fail(c3.job.id, c3.epoch, "a.b", "")
        .unwrap()
        .durable
        .await
        .unwrap();
    let (many, wait) = q.next_ready_many("w", 10).unwrap();
    assert_eq!(many.len(), 2);
    assert_eq!(wait.unwrap().reason, WaitReason::Concurrency);
}

#[tokio::test]
async fn rate_limit_token_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let mut qc = cfg("w");
    qc.concurrency = 0;
    qc.rate_limit = Some(RateLimit {
        per_second: 2.0,
        burst: Some(3),
    });
    let q = open(dir.path(), &c, vec![qc]);
    for i in 0..10 {
        q.push("w", job(&i.to_string())).await.unwrap();
    }
    let (burst, wait) = q.next_ready_many("w", 10).unwrap();
    assert_eq!(burst.len(), 3);
    let w = wait.unwrap();
    assert_eq!(w.reason, WaitReason::RateLimit);
    assert_eq!(w.until_ms, Some(T0 + 500));
    c.advance(Duration::from_millis(499));
    assert!(try_lease(&q, "w").is_err());
    c.advance(Duration::from_millis(1));
    lease(&q, "w");
    assert!(try_lease(&q, "w").is_err());
    // 2 per second sustained.
    c.advance(Duration::from_secs(2));
    let (n, _) = q.next_ready_many("w", 10).unwrap();
    assert_eq!(n.len(), 3, "2 s at 2/s = 4 tokens, capped by burst 3");
}

#[tokio::test]
async fn bad_input_is_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let mut small = QueueConfig::new("small");
    small.max_payload_bytes = 8;
    let q = open(dir.path(), &c, vec![cfg("w"), small]);
    let before = q.store_stats().mutations;

    let e = q.push("nope", job("x")).await.unwrap_err();
    assert!(
        matches!(&e, QueueError::UnknownQueue(n) if n == "nope"),
        "{e}"
    );
    assert_eq!(e.uri(), "switchyard.queue.error.unknown_queue");

    let big = NewJob::new(Payload::json("0123456789")).target(Target::procedure("a.b"));
    let e = q.push("small", big).await.unwrap_err();
    assert!(
        matches!(
            e,
            QueueError::PayloadTooLarge {
                size: 10,
                limit: 8,
                ..
            }
        ),
        "{e}"
    );

    let e = q
        .push("small", NewJob::new(Payload::json("1")))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no default target"), "{e}");

    let e = q
        .push("w", job("x").run_at(T0 - 3600 * S))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, QueueError::Invalid(f) if f.field == "run_at"),
        "{e}"
    );
    // Seconds instead of milliseconds: far in the past.
    let e = q.push("w", job("x").run_at(T0 / 1000)).await.unwrap_err();
    assert!(e.to_string().contains("past"), "{e}");
    // Microseconds instead of milliseconds: centuries ahead.
    let e = q.push("w", job("x").run_at(T0 * 1000)).await.unwrap_err();
    assert!(e.to_string().contains("ahead"), "{e}");
    let e = q
        .push("w", job("x").delay(Duration::from_secs(400 * 86400)))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, QueueError::Invalid(f) if f.field == "delay"),
        "{e}"
    );

    let bad_policy = RetryPolicy::Exponential {
        initial: Duration::from_secs(1),
        factor: 0.0,
        cap: Duration::from_secs(5),
        jitter: 0.1,
        max_attempts: None,
    };
    let e = q.push("w", job("x").retry(bad_policy)).await.unwrap_err();
    assert!(
        matches!(&e, QueueError::Invalid(f) if f.field == "retry.factor"),
        "{e}"
    );
    let e = q.push("w", job("x").max_attempts(0)).await.unwrap_err();
    assert!(
        matches!(&e, QueueError::Invalid(f) if f.field == "max_attempts"),
        "{e}"
    );
    let e = q.push("w", job("x").idempotency_key("")).await.unwrap_err();
    assert!(
        matches!(&e, QueueError::Invalid(f) if f.field == "idempotency_key"),
        "{e}"
    );
    let e = q
        .push("w", job("x").target(Target::procedure("")))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, QueueError::Invalid(f) if f.field == "target.procedure"),
        "{e}"
    );
    // One bad job in a batch refuses the batch, and says which.
    let e = q
        .push_many(vec![("w", job("ok")), ("w", job("bad").max_attempts(0))])
        .await
        .unwrap_err();
    assert!(
        matches!(&e, QueueError::Invalid(f) if f.field == "jobs[1].max_attempts"),
        "{e}"
    );
    let e = q.fail(JobId(1), 1, "has space", "").err().unwrap();
    assert!(
        matches!(&e, QueueError::Invalid(f) if f.field == "error_uri"),
        "{e}"
    );

    // Within tolerance is fine.
    q.push("w", job("ok").run_at(T0 - 60 * S)).await.unwrap();
    let s = q.stats("w").unwrap();
    assert_eq!(s.ready + s.scheduled, 1);
    assert_eq!(
        q.store_stats().mutations,
        before + 2,
        "only the valid push was stored (its record and its payload)"
    );
}

#[tokio::test]
async fn declare_at_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    {
        let q = open(dir.path(), &c, vec![]);
        let mut pdf = cfg("pdf");
        pdf.max_attempts = 5;
        assert_eq!(q.declare(pdf.clone()).await.unwrap(), Declared::Created);
        assert_eq!(q.declare(pdf.clone()).await.unwrap(), Declared::Unchanged);
        let mut other = pdf.clone();
        other.max_attempts = 6;
        other.concurrency = 1;
        let e = q.declare(other).await.unwrap_err();
        assert!(
            matches!(&e, QueueError::ConfigConflict { fields, .. } if fields == "max_attempts, concurrency"),
            "{e}"
        );
        let mut bad = cfg("bad");
        bad.lease_timeout = Duration::ZERO;
        let e = q.declare(bad).await.unwrap_err();
        assert!(
            matches!(&e, QueueError::Invalid(f) if f.field == "lease_timeout"),
            "{e}"
        );
        q.push("pdf", job("x")).await.unwrap();
    }
    // Persisted: present after reopen without being in the config.
    let q = open(dir.path(), &c, vec![]);
    assert_eq!(q.names(), ["pdf"]);
    assert_eq!(q.config("pdf").unwrap().max_attempts, 5);
    assert_eq!(q.stats("pdf").unwrap().ready, 1);
}

#[tokio::test]
async fn dead_letter_retention() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let mut qc = cfg("w");
    qc.retry = RetryPolicy::None;
    qc.dead_letter.max_jobs = 2;
    qc.dead_letter.max_age = Duration::from_secs(3600);
    let q = open(dir.path(), &c, vec![qc]);
    let mut ids = Vec::new();
    for i in 0..3 {
        let id = q.push("w", job(&i.to_string())).await.unwrap().id;
        let l = lease(&q, "w");
        q.fail(id, l.epoch, "a.b", "")
            .unwrap()
            .durable
            .await
            .unwrap();
        ids.push(id);
        c.advance(Duration::from_secs(60));
    }
    let kept: Vec<JobId> = q.dead("w", 10).unwrap().iter().map(|j| j.job.id).collect();
    assert_eq!(kept, [ids[2], ids[1]], "oldest pruned beyond max_jobs");
    assert!(q.job(ids[0]).is_none());
    let m = q.maintain().unwrap();
    assert_eq!(m.next_wakeup_ms, Some(T0 + 60 * S + 3600 * S));
    c.set(T0 + 60 * S + 3600 * S);
    q.maintain().unwrap();
    let kept: Vec<JobId> = q.dead("w", 10).unwrap().iter().map(|j| j.job.id).collect();
    assert_eq!(kept, [ids[2]], "older than max_age pruned");
}

#[tokio::test]
async fn peek_shows_dispatch_order() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let q = open(dir.path(), &c, vec![cfg("w")]);
    q.push("w", job("later").delay(Duration::from_secs(5)))
        .await
        .unwrap();
    q.push("w", job("low").priority(Priority::LOW))
        .await
        .unwrap();
    q.push("w", job("high").priority(Priority::HIGH))
        .await
        .unwrap();
    let tags: Vec<String> = q
        .peek("w", 10)
        .unwrap()
        .iter()
        .map(|j| {
            let v: serde_json::Value =
                serde_json::from_slice(&j.payload.as_ref().unwrap().bytes).unwrap();
            v["tag"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(tags, ["high", "low", "later"]);
    assert_eq!(q.peek("w", 1).unwrap().len(), 1);
    let s = q.stats("w").unwrap();
    assert_eq!(s.oldest_ready_age_ms, Some(0));
    c.advance(Duration::from_secs(3));
    assert_eq!(q.stats("w").unwrap().oldest_ready_age_ms, Some(3000));
    assert_eq!(q.list().len(), 1);
}

#[tokio::test]
async fn run_maintenance_expires_leases_in_real_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut qc = cfg("w");
    qc.lease_timeout = Duration::from_millis(100);
    let q = std::sync::Arc::new(
        switchyard_queue::Queues::open(dir.path().join("q.redb"), vec![qc]).unwrap(),
    );
    let id = q.push("w", job("x")).await.unwrap().id;
    let l = lease(&q, "w");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(switchyard_queue::Queues::run_maintenance(
        std::sync::Arc::downgrade(&q),
        Duration::from_millis(20),
        move |e| {
            let _ = tx.send(e);
        },
    ));
    let e = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((e.job.id, e.epoch), (id, l.epoch));
    assert!(matches!(e.outcome, Outcome::Retry { .. }));
    drop(q);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("maintenance ends when the queues are dropped")
        .unwrap();
}

#[tokio::test]
async fn max_jobs_refuses_pushes_beyond_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let mut small = cfg("small");
    small.max_jobs = 2;
    let q = open(dir.path(), &c, vec![small, cfg("other")]);
    q.push("small", job("a")).await.unwrap();
    // A batch that would overflow stores nothing, in any queue.
    let err = q
        .push_many(vec![
            ("other", job("x")),
            ("small", job("b")),
            ("small", job("c")),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(err, QueueError::QueueFull { limit: 2, .. }),
        "{err}"
    );
    assert_eq!(err.uri(), "switchyard.queue.error.queue_full");
    assert_eq!(q.stats("other").unwrap().ready, 0);
    q.push("small", job("b")).await.unwrap();
    assert!(q.push("small", job("c")).await.is_err());
    // In flight counts; completing frees room; dead letters do not count.
    let l = lease(&q, "small");
    assert!(q.push("small", job("c")).await.is_err());
    q.complete(l.job.id, l.epoch).unwrap().await.unwrap();
    q.push("small", job("c")).await.unwrap();
}

#[tokio::test]
async fn idempotency_keys_are_capped_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let mut qc = cfg("w");
    qc.idempotency_max_keys = 3;
    qc.idempotency_key_max_bytes = 8;
    let q = open(dir.path(), &c, vec![qc.clone()]);
    let mut ids = Vec::new();
    for i in 0..5 {
        let a = q
            .push("w", job("a").idempotency_key(format!("k{i}")))
            .await
            .unwrap();
        ids.push(a.id);
        c.advance(Duration::from_millis(1));
    }
    assert_eq!(q.stats("w").unwrap().idempotency_keys, 3);
    // k4 is remembered, k0 was forgotten (oldest first).
    let d = q.push("w", job("b").idempotency_key("k4")).await.unwrap();
    assert_eq!((d.id, d.duplicate), (ids[4], true));
    let n = q.push("w", job("c").idempotency_key("k0")).await.unwrap();
    assert!(!n.duplicate);
    // Purging the jobs keeps the bound; reopening with a lower cap keeps the newest.
    q.purge("w", Purge::All).await.unwrap();
    assert_eq!(q.stats("w").unwrap().idempotency_keys, 3);
    drop(q);
    qc.idempotency_max_keys = 1;
    let q = open(dir.path(), &c, vec![qc.clone()]);
    assert_eq!(q.stats("w").unwrap().idempotency_keys, 1);
    let d = q.push("w", job("d").idempotency_key("k0")).await.unwrap();
    assert_eq!((d.id, d.duplicate), (n.id, true));
    drop(q);
    let q = open(dir.path(), &c, vec![qc]);
    assert_eq!(
        q.stats("w").unwrap().idempotency_keys,
        1,
        "evictions are durable"
    );
    // Too long a key: refused, naming the limit.
    let e = q
        .push("w", job("x").idempotency_key("123456789"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, QueueError::Invalid(f) if f.field == "idempotency_key" && f.message.contains("1..=8")),
        "{e}"
    );
}

#[tokio::test]
async fn runtime_queues_are_bounded_and_deletable() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let options = |max_queues| Options {
        clock: c.clone(),
        max_queues,
        ..Options::default()
    };
    let path = dir.path().join("queues.redb");
    let q = Queues::open_with(&path, vec![cfg("conf")], options(3)).unwrap();
    q.declare(cfg("a")).await.unwrap();
    q.declare(cfg("b")).await.unwrap();
    let e = q.declare(cfg("c")).await.unwrap_err();
    assert!(matches!(e, QueueError::TooManyQueues { limit: 3 }), "{e}");
    assert!(matches!(
        q.delete("conf", true).await.unwrap_err(),
        QueueError::ConfiguredQueue(_)
    ));
    q.push("a", job("x").idempotency_key("k")).await.unwrap();
    let e = q.delete("a", false).await.unwrap_err();
    assert!(matches!(e, QueueError::NotEmpty { jobs: 1, .. }), "{e}");
    let d = q.delete("a", true).await.unwrap();
    assert_eq!((d.jobs, d.idempotency_keys), (1, 1));
    assert!(matches!(q.stats("a"), Err(QueueError::UnknownQueue(_))));
    q.declare(cfg("c")).await.unwrap();
    drop(q);
    let q = Queues::open_with(&path, vec![cfg("conf")], options(3)).unwrap();
    assert_eq!(q.names(), vec!["b", "c", "conf"]);
    // Declared again: empty, no remembered key.
    q.declare(cfg("a")).await.unwrap_err();
    q.delete("b", false).await.unwrap();
    q.declare(cfg("a")).await.unwrap();
    let s = q.stats("a").unwrap();
    assert_eq!((s.ready, s.idempotency_keys), (0, 0));
    let p = q.push("a", job("y").idempotency_key("k")).await.unwrap();
    assert!(!p.duplicate);
}

#[tokio::test]
async fn reconfigure_applies_a_reloaded_file_and_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let mut w = cfg("w");
    w.concurrency = 1;
    {
        let q = open(dir.path(), &c, vec![w.clone(), cfg("gone")]);
        for i in 0..3 {
            q.push("w", job(&i.to_string())).await.unwrap();
        }
        q.push("gone", job("kept")).await.unwrap();
        let mut rt = cfg("rt");
        rt.max_attempts = 4;
        q.declare(rt).await.unwrap();
        let a = lease(&q, "w");
        assert_eq!(
            try_lease(&q, "w").unwrap_err().reason,
            WaitReason::Concurrency
        );

        // The reloaded file: `w` with more concurrency and another lease timeout, `new`
        // added, run-time `rt` now in the file (with another max_attempts), `gone` removed.
        let mut w2 = w.clone();
        w2.concurrency = 3;
        w2.lease_timeout = Duration::from_secs(7);
        let mut rt2 = cfg("rt");
        rt2.max_attempts = 9;
        let notify = q.notifier("w").unwrap();
        // Drain the permits the pushes left, so the wake-up below is the reload's.
        while tokio::time::timeout(Duration::from_millis(1), notify.notified())
            .await
            .is_ok()
        {}
        let got = q
            .reconfigure(vec![w2.clone(), cfg("new"), rt2])
            .await
            .unwrap();
        assert_eq!(got.created, ["new"]);
        assert_eq!(
            got.changed,
            [
                ("rt".to_string(), vec!["max_attempts"]),
                ("w".to_string(), vec!["lease_timeout", "concurrency"])
            ]
        );
        assert_eq!(got.adopted, ["rt"]);
        assert_eq!(got.released, ["gone"]);
        tokio::time::timeout(Duration::from_secs(1), notify.notified())
            .await
            .expect("a reconfigured queue's dispatcher is woken");
        // The new concurrency and lease timeout apply to the next leases; the running one stays.
        let b = lease(&q, "w");
        assert_eq!(b.deadline_ms, c.now_ms() + 7 * S);
        let _c = lease(&q, "w");
        assert_eq!(
            try_lease(&q, "w").unwrap_err().reason,
            WaitReason::Concurrency
        );
        q.complete(a.job.id, a.epoch).unwrap().await.unwrap();
        // `gone` keeps its job and can now be deleted at run time; `rt` cannot any more.
        assert_eq!(q.stats("gone").unwrap().ready, 1);
        assert!(!q.is_configured("gone").unwrap());
        assert!(q.is_configured("rt").unwrap());
        assert!(matches!(
            q.delete("rt", true).await.unwrap_err(),
            QueueError::ConfiguredQueue(_)
        ));
        q.push("new", job("n")).await.unwrap();
        // Reloading the same file again changes nothing.
        let mut rt2 = cfg("rt");
        rt2.max_attempts = 9;
        let again = q.reconfigure(vec![w2, cfg("new"), rt2]).await.unwrap();
        assert_eq!(again, Default::default());
        // An invalid queue refuses the whole file and changes nothing.
        let mut bad = cfg("w");
        bad.lease_timeout = Duration::ZERO;
        let e = q.reconfigure(vec![bad, cfg("other")]).await.unwrap_err();
        assert!(
            matches!(&e, QueueError::Invalid(f) if f.field.contains("lease_timeout")),
            "{e}"
        );
        assert!(q.config("other").is_err());
        assert_eq!(q.config("w").unwrap().concurrency, 3);
    }
    // Durable: after a restart with the same file, the new configurations are what was stored.
    let q = open(dir.path(), &c, vec![]);
    assert_eq!(q.config("w").unwrap().concurrency, 3);
    assert_eq!(q.config("rt").unwrap().max_attempts, 9);
    assert_eq!(q.stats("new").unwrap().ready, 1);
    assert_eq!(q.stats("gone").unwrap().ready, 1);
}

#[tokio::test]
async fn backpressure_slows_producers_down_until_workers_catch_up() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let mut qc = cfg("w");
    qc.backpressure.ready = 3;
    qc.backpressure.max_wait = Duration::from_secs(5);
    let mut off = cfg("off");
    off.backpressure.ready = 0;
    let q = std::sync::Arc::new(open(dir.path(), &c, vec![qc.clone(), off]));
    // Delayed jobs are not ready: they do not count.
    q.push("w", job("later").delay(Duration::from_secs(60)))
        .await
        .unwrap();
    for i in 0..3 {
        q.push("w", job(&i.to_string())).await.unwrap();
    }
    // The fourth ready job waits, stored nowhere, until a worker takes one.
    let waiting = {
        let q = q.clone();
        tokio::spawn(async move { q.push("w", job("3")).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "the push waits while the queue is backlogged"
    );
    assert_eq!(q.stats("w").unwrap().ready, 3);
    let started = std::time::Instant::now();
    let _l = lease(&q, "w");
    tokio::time::timeout(Duration::from_secs(2), waiting)
        .await
        .expect("a lease wakes the waiting push")
        .unwrap()
        .expect("then it is stored");
    assert!(
        started.elapsed() < Duration::from_millis(150),
        "woken by the lease, not by the recheck: {:?}",
        started.elapsed()
    );
    assert_eq!(q.stats("w").unwrap().ready, 3);

    // Nobody takes a job: the push is refused after max_wait, nothing stored.
    let mut short = qc;
    short.backpressure.max_wait = Duration::from_millis(300);
    q.reconfigure(vec![short, cfg("off")]).await.unwrap();
    let started = std::time::Instant::now();
    let e = q.push("w", job("4")).await.unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(
        matches!(
            &e,
            QueueError::Backlogged {
                ready: 3,
                limit: 3,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.uri(), "switchyard.queue.error.queue_full");
    assert_eq!(q.stats("w").unwrap().ready, 3);
    // push_many waits (and refuses) the same way, as one transaction.
    let e = q
        .push_many(vec![("off", job("a")), ("w", job("b"))])
        .await
        .unwrap_err();
    assert!(matches!(&e, QueueError::Backlogged { .. }), "{e}");
    assert_eq!(q.stats("off").unwrap().ready, 0);
    // Without backpressure, pushes are only bounded by max_jobs.
    for i in 0..10 {
        q.push("off", job(&i.to_string())).await.unwrap();
    }
}

#[tokio::test]
async fn backpressure_holds_at_most_max_waiting_pushes_per_queue() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let mut qc = cfg("w");
    qc.backpressure.ready = 1;
    qc.backpressure.max_wait = Duration::from_secs(5);
    let q = std::sync::Arc::new(open(dir.path(), &c, vec![qc]));
    q.push("w", job("first")).await.unwrap();
    // A client cannot make the router hold more waiting pushes (and their
    // payloads) than the bound: the next one is refused at once.
    let waiting: Vec<_> = (0..switchyard_queue::MAX_WAITING_PUSHES)
        .map(|i| {
            let q = q.clone();
            tokio::spawn(async move { q.push("w", job(&i.to_string())).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let e = q.push("w", job("one too many")).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(&e, QueueError::Backlogged { .. }), "{e}");
    for w in waiting {
        w.abort();
    }
    assert_eq!(q.stats("w").unwrap().ready, 1);
}
