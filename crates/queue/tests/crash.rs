//! Crash test: a child process pushes (and works off) jobs under load and prints every
//! acknowledgement as soon as it has it; the parent SIGKILLs it at a random moment, reopens the
//! store and checks that every acknowledged job is still there unless a worker was completing
//! it, that no durably completed job came back, and that ids never repeat after a restart.
//! Three kill/restart rounds on the same store.
//!
//! The child is this test binary re-invoked with `CHILD_ENV` set (running `crash_child`).

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{cfg, job};
use rand::Rng;
use switchyard_queue::{JobId, NewJob, Payload, Queues, RetryPolicy};

const CHILD_ENV: &str = "SWITCHYARD_QUEUE_CRASH_CHILD";
const PRODUCERS: usize = 4;
const IN_FLIGHT_PER_PRODUCER: usize = 16;

fn queue_config() -> switchyard_queue::QueueConfig {
    let mut c = cfg("w");
    c.retry = RetryPolicy::Fixed {
        times: 3,
        spacing: Duration::ZERO,
    };
    c.concurrency = 32;
    c
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The child: runs only when spawned by the parent with `CHILD_ENV` set.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let q = Arc::new(Queues::open(&path, vec![queue_config()]).unwrap());
        say("STARTED");
        for p in 0..PRODUCERS {
            for s in 0..IN_FLIGHT_PER_PRODUCER {
                let q = q.clone();
                tokio::spawn(async move {
                    let body = format!("{{\"p\":{p},\"s\":{s},\"pad\":\"{}\"}}", "x".repeat(220));
                    loop {
                        let ack = q
                            .push("w", NewJob::new(Payload::json(body.clone())))
                            .await
                            .unwrap();
                        say(&format!("ACK {}", ack.id));
                    }
                });
            }
        }
        // A worker: completes most jobs, fails every 7th attempt (retried), reports completions
        // only once they are durable.
        let notify = q.notifier("w").unwrap();
        let mut n = 0u64;
        loop {
            let (leases, _) = q.next_ready_many("w", 16).unwrap();
            if leases.is_empty() {
                let _ = tokio::time::timeout(Duration::from_millis(5), notify.notified()).await;
                continue;
            }
            for l in leases {
                n += 1;
                if n.is_multiple_of(7) {
                    drop(
                        q.fail(l.job.id, l.epoch, "com.example.flaky", "try again")
                            .unwrap(),
                    );
                } else {
                    // Announce before completing: once the completion commits, the job may be
                    // absent from the store even if the DONE line never makes it out.
                    say(&format!("WORK {}", l.job.id));
                    let durable = q.complete(l.job.id, l.epoch).unwrap();
                    let id = l.job.id;
                    tokio::spawn(async move {
                        if durable.await.is_ok() {
                            say(&format!("DONE {id}"));
                        }
                    });
                }
            }
        }
    });
}

#[test]
fn acknowledged_jobs_survive_sigkill() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.redb");
    let exe = std::env::current_exe().unwrap();
    let mut acked: HashSet<JobId> = HashSet::new();
    let mut done: HashSet<JobId> = HashSet::new();
    let mut completing: HashSet<JobId> = HashSet::new();
    let mut rng = rand::rng();
    for round in 0..3 {
        let kill_after = rng.random_range(200..1500usize);
        let started = Instant::now();
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let max_before = acked.iter().max().copied().unwrap_or(JobId(0));
        let mut round_acks = 0usize;
        let mut killed = false;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap() == 0 {
                break;
            }
            // A line cut by the kill has no newline: it was never fully reported.
            let Some(text) = line.strip_suffix('\n') else {
                continue;
            };
            if let Some(id) = text.strip_prefix("ACK ") {
                let id = JobId(id.parse().unwrap());
                assert!(
                    id > max_before,
                    "round {round}: id {id} not above {max_before}"
                );
                assert!(
                    acked.insert(id),
                    "round {round}: id {id} acknowledged twice"
                );
                round_acks += 1;
            } else if let Some(id) = text.strip_prefix("WORK ") {
                completing.insert(JobId(id.parse().unwrap()));
            } else if let Some(id) = text.strip_prefix("DONE ") {
                done.insert(JobId(id.parse().unwrap()));
            }
            if !killed && (round_acks >= kill_after || started.elapsed() > Duration::from_secs(20))
            {
                child.kill().unwrap(); // SIGKILL
                killed = true;
            }
        }
        let status = child.wait().unwrap();
        assert!(killed, "child exited by itself: {status:?}");
        assert!(
            round_acks >= kill_after,
            "round {round}: only {round_acks} acks"
        );

        let q = Queues::open(&path, vec![queue_config()]).unwrap();
        let mut present = 0;
        for id in &acked {
            if q.job(*id).is_some() {
                present += 1;
            } else {
                assert!(
                    completing.contains(id),
                    "round {round}: acknowledged job {id} lost (never handed to the worker)"
                );
            }
        }
        for id in &done {
            assert!(
                q.job(*id).is_none(),
                "round {round}: completed job {id} came back"
            );
        }
        eprintln!(
            "crash round {round}: killed after {round_acks} acks ({:?}); {} acked in total, {} completed, {present} in store",
            started.elapsed(),
            acked.len(),
            done.len()
        );
        drop(q);
    }
    // Ids keep increasing after the last crash too.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let q = Queues::open(&path, vec![queue_config()]).unwrap();
    let fresh = rt.block_on(q.push("w", job("fresh"))).unwrap().id;
    assert!(acked.iter().all(|id| *id < fresh));
}
