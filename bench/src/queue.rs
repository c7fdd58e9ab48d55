//! The `queue` scenario: durable job queue throughput and latency, the mirror
//! of `bench/queue/rabbitmq-bench` (see docs/QUEUES.md and docs/BENCHMARKS.md).
//!
//! * P producer sessions call `switchyard.queue.push` with `[queue]` and the
//!   job's arguments in kwargs `args`, keeping W calls in flight each; an
//!   enqueue counts as acknowledged when its RESULT arrives (the router
//!   answers after the job is durable);
//! * C worker sessions share the registration of the queue's target
//!   procedure (`invoke`, default `roundrobin`, and `concurrency` per
//!   worker) and answer each invocation at once, which completes the job;
//! * `--warmup` jobs first (not counted), then `--jobs` measured jobs.
//!
//! The job's one argument is a string of `--payload` bytes that starts with
//! its sequence number and the time it was pushed (hex), so the worker that
//! runs it knows its enqueue→complete latency (producers and workers share a
//! clock). The queue itself (its `target` and `concurrency`) is configured in
//! the router (`[[realm.queue]]`); this tool only reads its stats.
//!
//! Figures: jobs/s from the first measured push to the last measured answer;
//! enqueue-ack latency (push → RESULT) and enqueue→complete latency (push →
//! the worker's answer) p50/p99/mean; the router's CPU seconds with
//! `--server-pid`. After the measured window the tool polls
//! `switchyard.queue.stats` until the router counts every job completed
//! (`settle_ms`: how long after the last answer that took). `--json` prints
//! one line that `switchyard-bench summarize` reads (`calls_per_s` = jobs/s,
//! `latency_*` = enqueue-ack, `complete_*` = enqueue→complete).

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde_json::json;
use switchyard_client::{Dict, Payload, Serializer, Session, SessionOptions, Value};

use crate::pubsub::transport_name;
use crate::stats::{group, percentile, CpuMeter};
use crate::Common;

const PUSH: &str = "switchyard.queue.push";
const STATS: &str = "switchyard.queue.stats";
const PURGE: &str = "switchyard.queue.purge";

#[derive(Args, Debug)]
pub struct QueueArgs {
    #[command(flatten)]
    pub common: Common,
    /// Queue name (declared in the router's config).
    #[arg(long, default_value = "bench")]
    pub queue: String,
    /// The queue's target procedure, registered by the workers.
    #[arg(long, default_value = "bench.queue.work")]
    pub procedure: String,
    /// Producer sessions (each its own connection).
    #[arg(long, default_value_t = 4)]
    pub producers: usize,
    /// Push calls kept in flight per producer.
    #[arg(long, default_value_t = 32)]
    pub in_flight: usize,
    /// Worker sessions sharing the registration of the target procedure.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// REGISTER.Options.concurrency of each worker (invocations at once);
    /// bench/queue/run.sh passes the queue's concurrency / workers.
    #[arg(long, default_value_t = 64)]
    pub concurrency: u64,
    /// Invocation policy of the shared registration.
    #[arg(long, default_value = "roundrobin")]
    pub invoke: String,
    /// Measured jobs.
    #[arg(long, default_value_t = 100_000)]
    pub jobs: u64,
    /// Jobs pushed and completed before the measured ones, not counted.
    #[arg(long, default_value_t = 1000)]
    pub warmup: u64,
    /// URLs of the producers (default: `--url`); several (comma-separated)
    /// spread them over the nodes of a cluster in turn.
    #[arg(long, value_delimiter = ',')]
    pub producer_url: Vec<String>,
    /// URLs of the workers (default: `--url`), spread in turn like
    /// `--producer-url`.
    #[arg(long, value_delimiter = ',')]
    pub worker_url: Vec<String>,
}

/// A job argument of `size` bytes: 16 hex digits of sequence number, 16 of
/// push time (ns since the run's base instant), then filler.
fn body(seq: u64, t_ns: u64, size: usize) -> String {
    let mut s = format!("{seq:016x}{t_ns:016x}");
    let fill = size.max(32) - s.len();
    s.extend(std::iter::repeat_n('x', fill));
    s
}

fn parse_body(s: &str) -> Option<(u64, u64)> {
    let head = s.get(..32)?;
    Some((
        u64::from_str_radix(&head[..16], 16).ok()?,
        u64::from_str_radix(&head[16..32], 16).ok()?,
    ))
}

/// p50, p99 and mean of nanosecond samples, in microseconds.
fn summary_us(samples: &mut [u64]) -> (f64, f64, f64) {
    samples.sort_unstable();
    let us = |ns: u64| ns as f64 / 1000.0;
    let mean = if samples.is_empty() {
        0.0
    } else {
        samples.iter().map(|&x| x as f64).sum::<f64>() / samples.len() as f64 / 1000.0
    };
    (
        us(percentile(samples, 50.0)),
        us(percentile(samples, 99.0)),
        mean,
    )
}

struct Shared {
    base: Instant,
    warmup: u64,
    /// Jobs answered so far (warm-up and measured).
    answered: AtomicU64,
    /// The value of `answered` that ends the current round.
    target: AtomicU64,
    round_done: tokio::sync::Notify,
    last_answer: Mutex<Option<Instant>>,
    /// Invocations per sequence number (saturating at 255).
    seen: Vec<AtomicU8>,
    /// Invocations whose argument is not one of this run's jobs.
    foreign: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Shared {
    fn error(&self, e: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut f = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        f.get_or_insert(e);
    }

    fn first_error(&self) -> Option<String> {
        self.first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A worker runs a job: record it and answer at once.
    fn run_job(&self, args: &[Value], lat: &Mutex<Vec<u64>>) {
        let now = Instant::now();
        let parsed = args.first().and_then(Value::as_str).and_then(parse_body);
        match parsed {
            Some((seq, t_ns)) if (seq as usize) < self.seen.len() => {
                let _ = self.seen[seq as usize].fetch_update(
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                    |v| Some(v.saturating_add(1)),
                );
                if seq >= self.warmup {
                    let at = now.duration_since(self.base).as_nanos() as u64;
                    lat.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(at.saturating_sub(t_ns));
                }
            }
            _ => {
                // A job left in the queue by an earlier run: answered, not counted.
                self.foreign.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let n = self.answered.fetch_add(1, Ordering::AcqRel) + 1;
        if n == self.target.load(Ordering::Acquire) {
            *self.last_answer.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
            self.round_done.notify_one();
        }
    }
}

struct ProducerOutcome {
    latencies_ns: Vec<u64>,
}

/// One producer: keeps `in_flight` pushes going while sequence numbers below
/// `limit` are left in `next`.
#[allow(clippy::too_many_arguments)]
async fn produce(
    s: Session,
    queue: Arc<str>,
    shared: Arc<Shared>,
    next: Arc<AtomicU64>,
    limit: u64,
    in_flight: usize,
    size: usize,
    deadline: Instant,
) -> ProducerOutcome {
    let mut out = ProducerOutcome {
        latencies_ns: Vec::new(),
    };
    let one = |seq: u64| {
        let (s, queue, base) = (&s, &queue, shared.base);
        async move {
            let t = Instant::now();
            let arg = body(seq, t.duration_since(base).as_nanos() as u64, size);
            let payload = Payload::values(
                vec![Value::from(&**queue)],
                Some(Dict::new().with("args", vec![Value::from(arg)])),
            );
            let r = s.call_with(PUSH, Dict::new(), payload).await;
            (t.elapsed(), r)
        }
    };
    let claim = || {
        let n = next.fetch_add(1, Ordering::Relaxed);
        (n < limit).then_some(n)
    };
    let mut inflight = FuturesUnordered::new();
    while inflight.len() < in_flight.max(1) {
        match claim() {
            Some(n) => inflight.push(one(n)),
            None => break,
        }
    }
    loop {
        let item = match tokio::time::timeout_at(deadline.into(), inflight.next()).await {
            Ok(Some(item)) => item,
            Ok(None) | Err(_) => break,
        };
        match item {
            (dt, Ok(_)) => out.latencies_ns.push(dt.as_nanos() as u64),
            (_, Err(e)) => shared.error(format!("push: {e}")),
        }
        if let Some(n) = claim() {
            inflight.push(one(n));
        }
    }
    out
}

/// Pushes sequence numbers `from..to` with all producers and waits until
/// every one of them has been run by a worker (or the deadline passes).
/// Returns the producers' outcomes and the instant of the round's last answer.
async fn round(
    a: &QueueArgs,
    producers: &[Session],
    shared: &Arc<Shared>,
    from: u64,
    to: u64,
    deadline: Instant,
) -> (Vec<ProducerOutcome>, Option<Instant>) {
    shared.target.store(to, Ordering::Release);
    *shared.last_answer.lock().unwrap_or_else(|e| e.into_inner()) = None;
    let next = Arc::new(AtomicU64::new(from));
    let queue: Arc<str> = a.queue.as_str().into();
    let tasks: Vec<_> = producers
        .iter()
        .map(|s| {
            tokio::spawn(produce(
                s.clone(),
                queue.clone(),
                shared.clone(),
                next.clone(),
                to,
                a.in_flight,
                a.common.payload,
                deadline,
            ))
        })
        .collect();
    let mut outs = Vec::new();
    for t in tasks {
        match t.await {
            Ok(o) => outs.push(o),
            Err(e) => shared.error(format!("producer task: {e}")),
        }
    }
    // A permit left by an earlier round can wake this early: check again.
    while shared.answered.load(Ordering::Acquire) < to {
        if tokio::time::timeout_at(deadline.into(), shared.round_done.notified())
            .await
            .is_err()
        {
            break;
        }
    }
    let last = *shared.last_answer.lock().unwrap_or_else(|e| e.into_inner());
    (outs, last)
}

/// The queue's stats (`switchyard.queue.stats`), as kwargs.
async fn stats(s: &Session, queue: &str) -> Result<Dict, String> {
    s.call(STATS, vec![Value::from(queue)], Dict::new())
        .await
        .map(|(_, kw)| kw)
        .map_err(|e| format!("{STATS}: {e}"))
}

fn stat(d: &Dict, key: &str) -> u64 {
    d.get(key).and_then(Value::as_u64).unwrap_or(0)
}

pub async fn run(a: QueueArgs) -> Result<i32, String> {
    let c = &a.common;
    if c.payload < 32 {
        return Err("--payload must be at least 32 bytes".into());
    }
    let ser: Serializer = c.serializer.into();
    let deadline = Instant::now() + Duration::from_secs(c.timeout);
    let total = a.warmup + a.jobs;
    let connect_to = |url: String| async move {
        Session::connect_with(&url, &c.realm, SessionOptions::new(ser)).await
    };
    let connect = || connect_to(c.url.clone());
    let nth = |urls: &[String], i: usize| -> String {
        if urls.is_empty() {
            c.url.clone()
        } else {
            urls[i % urls.len()].clone()
        }
    };

    // The queue must exist (router config); drop what an earlier run left.
    let admin = connect().await.map_err(|e| format!("connect: {e}"))?;
    let before = stats(&admin, &a.queue).await?;
    if stat(&before, "ready") + stat(&before, "scheduled") > 0 {
        admin
            .call(
                PURGE,
                vec![Value::from(a.queue.as_str())],
                Dict::new().with("which", "ready"),
            )
            .await
            .map_err(|e| format!("{PURGE}: {e}"))?;
    }
    let queue_concurrency = stat(&before, "concurrency");

    let shared = Arc::new(Shared {
        base: Instant::now(),
        warmup: a.warmup,
        answered: AtomicU64::new(0),
        target: AtomicU64::new(u64::MAX),
        round_done: tokio::sync::Notify::new(),
        last_answer: Mutex::new(None),
        seen: (0..total).map(|_| AtomicU8::new(0)).collect(),
        foreign: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        first_error: Mutex::new(None),
    });

    // Workers first, so that no job waits for a callee.
    let options = Dict::new()
        .with("invoke", a.invoke.as_str())
        .with("concurrency", a.concurrency);
    let mut workers = Vec::new();
    let mut lats = Vec::new();
    for i in 0..a.workers.max(1) {
        let w = connect_to(nth(&a.worker_url, i))
            .await
            .map_err(|e| format!("worker connect: {e}"))?;
        let lat = Arc::new(Mutex::new(Vec::new()));
        let (sh, l) = (shared.clone(), lat.clone());
        w.register_raw(&a.procedure, options.clone(), move |inv| {
            match inv.args() {
                Ok(args) => sh.run_job(&args, &l),
                Err(e) => sh.error(format!("invocation arguments: {e}")),
            }
            async { Ok(Payload::empty()) }
        })
        .await
        .map_err(|e| format!("register {}: {e}", a.procedure))?;
        workers.push(w);
        lats.push(lat);
    }
    let mut producers = Vec::new();
    for i in 0..a.producers.max(1) {
        producers.push(
            connect_to(nth(&a.producer_url, i))
                .await
                .map_err(|e| format!("producer connect: {e}"))?,
        );
    }

    if a.warmup > 0 {
        let (_, last) = round(&a, &producers, &shared, 0, a.warmup, deadline).await;
        if last.is_none() {
            return Err(format!(
                "warm-up did not finish ({} of {} run){}",
                shared.answered.load(Ordering::Relaxed),
                a.warmup,
                shared
                    .first_error()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
        }
    }
    // Let the warm-up's completions settle so that they are not measured.
    let settle_deadline = Instant::now() + Duration::from_secs(10);
    let mut completed0 = stat(&stats(&admin, &a.queue).await?, "completed_total");
    let warm_target = stat(&before, "completed_total") + a.warmup;
    while completed0 < warm_target && Instant::now() < settle_deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
        completed0 = stat(&stats(&admin, &a.queue).await?, "completed_total");
    }

    let cpu = CpuMeter::start(&c.server_pid);
    let t0 = Instant::now();
    let (outs, last) = round(&a, &producers, &shared, a.warmup, total, deadline).await;
    let end = Instant::now();
    let used = cpu.stop();
    let timed_out = last.is_none();
    let last_at = last.unwrap_or(end);
    let wall = last_at.duration_since(t0).as_secs_f64().max(1e-9);

    // Outside the window: wait until the router counts every job completed.
    let settle_deadline = Instant::now() + Duration::from_secs(10);
    let (settled_ms, after) = loop {
        let s = stats(&admin, &a.queue).await?;
        let done = stat(&s, "completed_total").saturating_sub(completed0);
        if done >= a.jobs && stat(&s, "in_flight") == 0 {
            break (Some(last_at.elapsed().as_secs_f64() * 1000.0), s);
        }
        if Instant::now() >= settle_deadline {
            break (None, s);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let completed_by_router = stat(&after, "completed_total").saturating_sub(completed0);

    let mut enq: Vec<u64> = outs
        .iter()
        .flat_map(|o| o.latencies_ns.iter().copied())
        .collect();
    let acked = enq.len() as u64;
    let mut done: Vec<u64> = lats
        .iter()
        .flat_map(|l| l.lock().unwrap_or_else(|e| e.into_inner()).clone())
        .collect();
    let completed = done.len() as u64;
    let (e50, e99, emean) = summary_us(&mut enq);
    let (c50, c99, cmean) = summary_us(&mut done);
    let measured = &shared.seen[a.warmup as usize..];
    let lost = measured
        .iter()
        .filter(|n| n.load(Ordering::Relaxed) == 0)
        .count() as u64;
    let duplicates: u64 = measured
        .iter()
        .map(|n| u64::from(n.load(Ordering::Relaxed).saturating_sub(1)))
        .sum();
    let foreign = shared.foreign.load(Ordering::Relaxed);
    let errors = shared.errors.load(Ordering::Relaxed);
    let first_error = shared.first_error();
    let rate = completed as f64 / wall;
    let per_cpu = used
        .server
        .filter(|s| *s > 0.0)
        .map(|s| completed as f64 / s);

    let transport = transport_name(&c.url);
    let mut line = format!(
        "queue switchyard {transport} {ser}: {} producers x {} in flight -> {} workers (concurrency {} each, {}; queue concurrency {}), payload {}B: {} jobs in {:.3} s = {} jobs/s; enqueue ack p50 {:.1} us, p99 {:.1} us; enqueue->complete p50 {:.1} us, p99 {:.1} us",
        a.producers,
        a.in_flight,
        a.workers,
        a.concurrency,
        a.invoke,
        queue_concurrency,
        c.payload,
        group(completed as f64),
        wall,
        group(rate),
        e50,
        e99,
        c50,
        c99
    );
    if let Some(s) = used.server {
        line.push_str(&format!("; server CPU {s:.2} s"));
        if completed > 0 {
            line.push_str(&format!(
                " = {:.3} s per 1000 jobs",
                s * 1000.0 / completed as f64
            ));
        }
    }
    if let Some(s) = used.client {
        line.push_str(&format!("; bench CPU {s:.2} s"));
    }
    match settled_ms {
        Some(ms) => line.push_str(&format!(
            "; all completions counted by the router {ms:.1} ms after the last answer"
        )),
        None => line.push_str(&format!(
            "; the router counts only {completed_by_router} of {} completed",
            a.jobs
        )),
    }
    if lost > 0 || duplicates > 0 {
        line.push_str(&format!("; {lost} lost, {duplicates} run twice"));
    }
    if foreign > 0 {
        line.push_str(&format!("; {foreign} jobs of an earlier run"));
    }
    if errors > 0 {
        line.push_str(&format!(
            "; {errors} errors (first: {})",
            first_error.as_deref().unwrap_or("")
        ));
    }
    if timed_out {
        line.push_str("; TIMED OUT");
    }
    println!("{line}");
    if c.json {
        println!(
            "{}",
            json!({
                "bench": "queue",
                "system": "switchyard",
                "url": c.url,
                "transport": transport,
                "serializer": ser.name(),
                "queue": a.queue,
                "queue_concurrency": queue_concurrency,
                "producers": a.producers,
                "in_flight": a.in_flight,
                "workers": a.workers,
                "concurrency": a.concurrency,
                "invoke": a.invoke,
                "payload": c.payload,
                "jobs": a.jobs,
                "confirmed": acked,
                "completed": completed,
                "completed_by_router": completed_by_router,
                "settle_ms": settled_ms,
                "lost": lost,
                "duplicates": duplicates,
                "foreign": foreign,
                "errors": errors,
                "timed_out": timed_out,
                "wall_s": wall,
                "jobs_per_s": rate,
                "calls_per_s": rate,
                "latency_p50_us": e50,
                "latency_p99_us": e99,
                "latency_mean_us": emean,
                "complete_p50_us": c50,
                "complete_p99_us": c99,
                "complete_mean_us": cmean,
                "server_cpu_s": used.server,
                "calls_per_server_cpu_s": per_cpu,
                "client_cpu_s": used.client,
            })
        );
    }
    for s in producers.iter().chain(workers.iter()).chain([&admin]) {
        let _ = tokio::time::timeout(Duration::from_secs(2), s.leave()).await;
    }
    let bad = errors > 0
        || lost > 0
        || duplicates > 0
        || timed_out
        || completed < a.jobs
        || settled_ms.is_none();
    Ok(if bad { 2 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip() {
        let b = body(7, 99_000, 64);
        assert_eq!(b.len(), 64);
        assert_eq!(parse_body(&b), Some((7, 99_000)));
        assert_eq!(parse_body("short"), None);
    }
}
