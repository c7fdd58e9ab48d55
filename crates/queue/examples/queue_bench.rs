//! Store-level benchmark of the durable queue: push → lease → complete with fsync on.
//!
//! ```text
//! cargo run --release -p switchyard-queue --example queue_bench -- \
//!     [--producers 4] [--in-flight 64] [--jobs 200000] [--payload 256] [--latency-jobs 2000] \
//!     [--work-ms 0] [--runs 3] [--dir /path/on/the/disk/to/test]
//! ```
//!
//! `--work-ms N` makes the dispatcher complete each leased batch N ms later (a stand-in for the
//! worker's run time), so leases and completions land in different commits and the lease rows
//! are really written and deleted; with 0 they are mostly coalesced away.
//!
//! Reports, per run and as the median of the runs:
//! * the disk's cost of one 4 KiB write + fdatasync (what a commit cannot go below);
//! * throughput: `producers × in-flight` pushes outstanding, one dispatcher leasing and
//!   completing; a job counts once its completion is durable;
//! * latency with one job in flight: push acknowledgement, and the full cycle
//!   (push acked → lease → completion durable);
//! * group commit: batches per commit and mutations per commit.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_queue::{
    Dispatch, NewJob, Options, Payload, QueueConfig, Queues, StoreStats, Target,
};

struct Args {
    producers: usize,
    in_flight: usize,
    jobs: u64,
    payload: usize,
    latency_jobs: usize,
    runs: usize,
    work_ms: u64,
    dir: Option<PathBuf>,
}

fn parse_args() -> Args {
    let mut a = Args {
        producers: 4,
        in_flight: 64,
        jobs: 200_000,
        payload: 256,
        latency_jobs: 2000,
        runs: 3,
        work_ms: 0,
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_default();
        match flag.as_str() {
            "--producers" => a.producers = val().parse().unwrap_or(a.producers),
            "--in-flight" => a.in_flight = val().parse().unwrap_or(a.in_flight),
            "--jobs" => a.jobs = val().parse().unwrap_or(a.jobs),
            "--payload" => a.payload = val().parse().unwrap_or(a.payload),
            "--latency-jobs" => a.latency_jobs = val().parse().unwrap_or(a.latency_jobs),
            "--runs" => a.runs = val().parse().unwrap_or(a.runs),
            "--work-ms" => a.work_ms = val().parse().unwrap_or(a.work_ms),
            "--dir" => a.dir = Some(PathBuf::from(val())),
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    a
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Median latency of a 4 KiB overwrite + fdatasync in `dir`.
fn fsync_cost(dir: &Path) -> Duration {
    let path = dir.join("fsync-probe");
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .expect("probe file");
    let block = [0x5au8; 4096];
    f.write_all(&block).expect("write");
    f.sync_all().expect("sync");
    let mut samples = Vec::with_capacity(500);
    for _ in 0..500 {
        let t = Instant::now();
        f.seek(SeekFrom::Start(0)).expect("seek");
        f.write_all(&block).expect("write");
        f.sync_data().expect("fdatasync");
        samples.push(t.elapsed());
    }
    let _ = std::fs::remove_file(&path);
    samples.sort();
    percentile(&samples, 0.5)
}

fn config() -> QueueConfig {
    let mut c = QueueConfig::new("bench");
    c.target = Some(Target::procedure("com.example.bench"));
    c.concurrency = 0;
    c
}

struct RunResult {
    jobs_per_s: f64,
    batches_per_commit: f64,
    mutations_per_commit: f64,
    coalesced_per_job: f64,
    commit_us: f64,
    push_p50: Duration,
    push_p99: Duration,
    cycle_p50: Duration,
    cycle_p99: Duration,
}

fn diff(a: &StoreStats, b: &StoreStats) -> (u64, u64, u64, u64, Duration) {
    (
        b.commits - a.commits,
        b.batches - a.batches,
        b.mutations - a.mutations,
        b.coalesced - a.coalesced,
        b.commit_time - a.commit_time,
    )
}

async fn throughput(q: Arc<Queues>, args: &Args) -> (f64, StoreStats, StoreStats) {
    let payload = Payload::json(format!(
        "\"{}\"",
        "x".repeat(args.payload.saturating_sub(2))
    ));
    let pushed = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let total = args.jobs;
    let before = q.store_stats();
    let start = Instant::now();
    let mut producers = Vec::new();
    for _ in 0..args.producers * args.in_flight {
        let q = q.clone();
        let pushed = pushed.clone();
        let payload = payload.clone();
        producers.push(tokio::spawn(async move {
            while pushed.fetch_add(1, Ordering::Relaxed) < total {
                q.push("bench", NewJob::new(payload.clone()))
                    .await
                    .expect("push");
            }
        }));
    }
    // Confirmer: counts jobs once the last completion of each dispatch round is durable
    // (commits are in order, so earlier completions are durable too).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, switchyard_queue::Durable)>();
    let confirmer = {
        let done = done.clone();
        tokio::spawn(async move {
            while let Some((n, d)) = rx.recv().await {
                d.await.expect("complete durable");
                done.fetch_add(n, Ordering::Relaxed);
            }
        })
    };
    let notify = q.notifier("bench").expect("queue");
    let mut dispatched = 0u64;
    while dispatched < total {
        let (leases, _) = q.next_ready_many("bench", 1024).expect("lease");
        if leases.is_empty() {
            let _ = tokio::time::timeout(Duration::from_millis(2), notify.notified()).await;
            continue;
        }
        let n = leases.len() as u64;
        dispatched += n;
        let complete = {
            let q = q.clone();
            let tx = tx.clone();
            move || {
                let mut last = None;
                for l in leases {
                    last = Some(q.complete(l.job.id, l.epoch).expect("complete"));
                }
                if let Some(d) = last {
                    let _ = tx.send((n, d));
                }
            }
        };
        if args.work_ms == 0 {
            complete();
        } else {
            let work = Duration::from_millis(args.work_ms);
            tokio::spawn(async move {
                tokio::time::sleep(work).await;
                complete();
            });
        }
    }
    drop(tx);
    confirmer.await.expect("confirmer");
    let elapsed = start.elapsed();
    for p in producers {
        p.await.expect("producer");
    }
    assert_eq!(done.load(Ordering::Relaxed), total);
    (
        total as f64 / elapsed.as_secs_f64(),
        before,
        q.store_stats(),
    )
}

async fn latency(q: &Queues, args: &Args) -> (Vec<Duration>, Vec<Duration>) {
    let payload = Payload::json(format!(
        "\"{}\"",
        "x".repeat(args.payload.saturating_sub(2))
    ));
    let mut push = Vec::with_capacity(args.latency_jobs);
    let mut cycle = Vec::with_capacity(args.latency_jobs);
    for _ in 0..args.latency_jobs {
        let t = Instant::now();
        q.push("bench", NewJob::new(payload.clone()))
            .await
            .expect("push");
        push.push(t.elapsed());
        let Dispatch::Lease(l) = q.next_ready("bench").expect("lease") else {
            panic!("pushed job not ready");
        };
        q.complete(l.job.id, l.epoch)
            .expect("complete")
            .await
            .expect("durable");
        cycle.push(t.elapsed());
    }
    push.sort();
    cycle.sort();
    (push, cycle)
}

fn run(args: &Args, base: &Path, i: usize) -> RunResult {
    let dir = base.join(format!("run-{i}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("run dir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let r = rt.block_on(async {
        let q = Arc::new(
            Queues::open_with(dir.join("bench.redb"), vec![config()], Options::default())
                .expect("open"),
        );
        let (rate, before, after) = throughput(q.clone(), args).await;
        let (commits, batches, mutations, coalesced, commit_time) = diff(&before, &after);
        let (push, cycle) = latency(&q, args).await;
        RunResult {
            jobs_per_s: rate,
            batches_per_commit: batches as f64 / commits.max(1) as f64,
            mutations_per_commit: mutations as f64 / commits.max(1) as f64,
            coalesced_per_job: coalesced as f64 / args.jobs.max(1) as f64,
            commit_us: us(commit_time) / commits.max(1) as f64,
            push_p50: percentile(&push, 0.5),
            push_p99: percentile(&push, 0.99),
            cycle_p50: percentile(&cycle, 0.5),
            cycle_p99: percentile(&cycle, 0.99),
        }
    });
    drop(rt);
    let _ = std::fs::remove_dir_all(&dir);
    r
}

fn main() {
    let args = parse_args();
    let tmp;
    let base = match &args.dir {
        Some(d) => d.clone(),
        None => {
            tmp = std::env::temp_dir().join(format!("queue-bench-{}", std::process::id()));
            tmp.clone()
        }
    };
    std::fs::create_dir_all(&base).expect("bench dir");
    let fsync = fsync_cost(&base);
    println!(
        "disk: 4 KiB write + fdatasync median {:.0} µs ({})",
        us(fsync),
        base.display()
    );
    println!(
        "load: {} producers × {} in flight, {} jobs of {} B, 1 dispatcher, work {} ms; latency: {} jobs one at a time",
        args.producers, args.in_flight, args.jobs, args.payload, args.work_ms, args.latency_jobs
    );
    let mut results = Vec::new();
    for i in 0..args.runs {
        let r = run(&args, &base, i);
        println!(
            "run {i}: {:>7.0} jobs/s | batches/commit {:>6.1} | mutations/commit {:>7.1} (coalesced/job {:.2}) | commit {:>6.0} µs | push ack p50 {:>4.0} µs p99 {:>5.0} µs | cycle p50 {:>4.0} µs p99 {:>5.0} µs",
            r.jobs_per_s,
            r.batches_per_commit,
            r.mutations_per_commit,
            r.coalesced_per_job,
            r.commit_us,
            us(r.push_p50),
            us(r.push_p99),
            us(r.cycle_p50),
            us(r.cycle_p99)
        );
        results.push(r);
    }
    let m = |f: &dyn Fn(&RunResult) -> f64| median(results.iter().map(f).collect());
    println!(
        "median of {}: {:.0} jobs/s | batches/commit {:.1} | mutations/commit {:.1} | commit {:.0} µs | push ack p50 {:.0} µs p99 {:.0} µs | cycle p50 {:.0} µs p99 {:.0} µs",
        args.runs,
        m(&|r| r.jobs_per_s),
        m(&|r| r.batches_per_commit),
        m(&|r| r.mutations_per_commit),
        m(&|r| r.commit_us),
        m(&|r| us(r.push_p50)),
        m(&|r| us(r.push_p99)),
        m(&|r| us(r.cycle_p50)),
        m(&|r| us(r.cycle_p99)),
    );
    if args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&base);
    }
}
