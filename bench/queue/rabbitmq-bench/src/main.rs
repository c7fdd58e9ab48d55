//! `rabbitmq-bench`: the RabbitMQ half of Switchyard's queue benchmark.
//!
//! The scenario mirrors `switchyard-bench queue` exactly:
//!
//! * P producers (one connection and one channel each, publisher confirms on)
//!   keep W publishes in flight each; an enqueue counts as acknowledged when
//!   its confirm (basic.ack) arrives;
//! * C consumers (one connection and one channel each) with manual acks and a
//!   prefetch of `--prefetch` (the Switchyard queue's concurrency per worker)
//!   ack each message as soon as it arrives;
//! * one durable queue (classic by default, `--queue-type quorum` for a quorum
//!   queue), persistent messages (delivery_mode 2) of `--payload` bytes,
//!   published to the default exchange;
//! * `--warmup` jobs first (not counted), then `--jobs` measured jobs.
//!
//! Each message body starts with its sequence number and the time it was
//! published (both in hex), so the consumer that acks it knows its
//! enqueue→complete latency (producers and consumers share one clock).
//!
//! Figures: jobs/s from the first measured publish to the last measured ack;
//! enqueue-ack latency (publish → confirm) and enqueue→complete latency
//! (publish → the consumer's ack) p50/p99/mean; the broker's CPU seconds over
//! the measured window with `--server-pid` (`/proc/PID/stat` utime+stime).
//! `--json` prints one line in the style of `switchyard-bench`, readable by
//! `switchyard-bench summarize` (`calls_per_s` = jobs/s, `latency_*` =
//! enqueue-ack, `complete_*` = enqueue→complete).

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use futures_util::stream::{FuturesUnordered, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(
    name = "rabbitmq-bench",
    version,
    about = "Durable queue benchmark against RabbitMQ (the mirror of `switchyard-bench queue`)"
)]
struct Args {
    /// Broker URL.
    #[arg(long, default_value = "amqp://127.0.0.1:17672/%2f")]
    url: String,
    /// Queue name (deleted and declared anew for the run).
    #[arg(long, default_value = "bench")]
    queue: String,
    /// Queue type: a classic durable queue or a quorum queue.
    #[arg(long, value_enum, default_value_t = QueueType::Classic)]
    queue_type: QueueType,
    /// Classic queue storage version (x-queue-version 1 or 2; 0 = the broker's default).
    #[arg(long, default_value_t = 0)]
    classic_version: u8,
    /// Producer connections.
    #[arg(long, default_value_t = 4)]
    producers: usize,
    /// Publishes kept in flight (awaiting their confirm) per producer.
    #[arg(long, default_value_t = 32)]
    in_flight: usize,
    /// Consumer connections.
    #[arg(long, default_value_t = 4)]
    consumers: usize,
    /// Prefetch (basic.qos, per consumer): unacked messages a consumer may
    /// hold; bench/queue/run.sh passes the Switchyard queue's concurrency / consumers.
    #[arg(long, default_value_t = 64)]
    prefetch: u16,
    /// Measured jobs.
    #[arg(long, default_value_t = 100_000)]
    jobs: u64,
    /// Jobs pushed and consumed before the measured ones, not counted.
    #[arg(long, default_value_t = 1000)]
    warmup: u64,
    /// Message body size in bytes (at least 32: sequence number and timestamp).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// PID of the broker's VM (beam.smp), to report its CPU time.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Also print the figures as one JSON line.
    #[arg(long)]
    json: bool,
    /// Give up after this many seconds (the run then reports what it saw).
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Connections to share the producers' and consumers' channels (each
    /// lapin connection runs its own I/O thread); 0 = one connection per
    /// producer and per consumer, like the Switchyard side's sessions.
    #[arg(long, default_value_t = 0)]
    connections: usize,
    /// Tokio worker threads of the load generator (1 = current-thread runtime).
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum QueueType {
    Classic,
    Quorum,
}

impl QueueType {
    fn name(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }
}

// ---- CPU accounting and percentiles (as in switchyard-bench) ----

/// CPU seconds (utime + stime) used so far by `pid`, or by this process.
fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let tck = if tck > 0 { tck as f64 } else { 100.0 };
    Some((utime + stime) / tck)
}

/// The `p`-th percentile (nearest rank) of sorted samples.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
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

// ---- message bodies ----

/// A body of `size` bytes: 16 hex digits of sequence number, 16 of publish
/// time (ns since the run's base instant), then filler.
fn body(seq: u64, t_ns: u64, size: usize) -> Vec<u8> {
    let mut b = format!("{seq:016x}{t_ns:016x}").into_bytes();
    b.resize(size.max(32), b'x');
    b
}

fn parse_body(b: &[u8]) -> Option<(u64, u64)> {
    let s = std::str::from_utf8(b.get(..32)?).ok()?;
    Some((
        u64::from_str_radix(&s[..16], 16).ok()?,
        u64::from_str_radix(&s[16..32], 16).ok()?,
    ))
}

// ---- shared state ----

struct Shared {
    base: Instant,
    warmup: u64,
    /// Acks sent so far (warm-up and measured).
    acked: AtomicU64,
    /// The value of `acked` that ends the current round.
    target: AtomicU64,
    round_done: tokio::sync::Notify,
    last_ack: Mutex<Option<Instant>>,
    /// Deliveries per sequence number (saturating at 255).
    seen: Vec<AtomicU8>,
    redelivered: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Shared {
    fn error(&self, e: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut f = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        f.get_or_insert(e);
    }
}

/// One consumer: acks every delivery at once; records enqueue→complete
/// latencies of measured jobs into `lat`.
async fn consume(
    channel: Channel,
    queue: String,
    tag: String,
    shared: Arc<Shared>,
    lat: Arc<Mutex<Vec<u64>>>,
) {
    let mut consumer = match channel
        .basic_consume(
            queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(), // no_ack = false: manual acks
            FieldTable::default(),
        )
        .await
    {
        Ok(c) => c,
        Err(e) => {
            shared.error(format!("basic.consume: {e}"));
            return;
        }
    };
    while let Some(d) = consumer.next().await {
        let d = match d {
            Ok(d) => d,
            Err(e) => {
                shared.error(format!("delivery: {e}"));
                return;
            }
        };
        let now = Instant::now();
        match parse_body(&d.data) {
            Some((seq, t_ns)) => {
                if let Some(c) = shared.seen.get(seq as usize) {
                    let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                        Some(v.saturating_add(1))
                    });
                }
                if seq >= shared.warmup {
                    let at = now.duration_since(shared.base).as_nanos() as u64;
                    lat.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(at.saturating_sub(t_ns));
                }
            }
            None => shared.error("a message body without sequence number".into()),
        }
        if d.redelivered {
            shared.redelivered.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(e) = d.ack(BasicAckOptions::default()).await {
            shared.error(format!("basic.ack: {e}"));
            return;
        }
        let n = shared.acked.fetch_add(1, Ordering::AcqRel) + 1;
        if n == shared.target.load(Ordering::Acquire) {
            *shared.last_ack.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
            shared.round_done.notify_one();
        }
    }
}

struct ProducerOutcome {
    latencies_ns: Vec<u64>,
    nacks: u64,
}

/// One producer: keeps `in_flight` confirmed publishes going while sequence
/// numbers below `limit` are left in `next`.
#[allow(clippy::too_many_arguments)]
async fn produce(
    channel: Channel,
    queue: Arc<str>,
    shared: Arc<Shared>,
    next: Arc<AtomicU64>,
    limit: u64,
    in_flight: usize,
    payload: usize,
    deadline: Instant,
) -> ProducerOutcome {
    let props = BasicProperties::default().with_delivery_mode(2);
    let mut out = ProducerOutcome {
        latencies_ns: Vec::new(),
        nacks: 0,
    };
    let one = |seq: u64| {
        let (channel, queue, props, base) = (&channel, &queue, props.clone(), shared.base);
        async move {
            let t = Instant::now();
            let data = body(seq, t.duration_since(base).as_nanos() as u64, payload);
            let r = match channel
                .basic_publish(
                    "".into(),
                    queue.as_ref().into(),
                    BasicPublishOptions::default(),
                    &data,
                    props,
                )
                .await
            {
                Ok(confirm) => confirm.await,
                Err(e) => Err(e),
            };
            (t.elapsed(), r)
        }
    };
    let claim = || {
        let s = next.fetch_add(1, Ordering::Relaxed);
        (s < limit).then_some(s)
    };
    let mut inflight = FuturesUnordered::new();
    while inflight.len() < in_flight.max(1) {
        match claim() {
            Some(s) => inflight.push(one(s)),
            None => break,
        }
    }
    loop {
        let item = match tokio::time::timeout_at(deadline.into(), inflight.next()).await {
            Ok(Some(item)) => item,
            Ok(None) | Err(_) => break,
        };
        match item {
            (dt, Ok(c)) if c.is_ack() => out.latencies_ns.push(dt.as_nanos() as u64),
            (_, Ok(_)) => {
                out.nacks += 1;
                shared.error("a publish was nacked (or confirms are off)".into());
            }
            (_, Err(e)) => shared.error(format!("basic.publish: {e}")),
        }
        if let Some(s) = claim() {
            inflight.push(one(s));
        }
    }
    out
}

/// Publishes sequence numbers `from..to` with all producers and waits until
/// every one of them is acked by a consumer (or the deadline passes).
/// Returns the producers' outcomes and the instant of the round's last ack.
async fn round(
    a: &Args,
    producers: &[Channel],
    shared: &Arc<Shared>,
    from: u64,
    to: u64,
    deadline: Instant,
) -> (Vec<ProducerOutcome>, Option<Instant>) {
    shared.target.store(to, Ordering::Release);
    *shared.last_ack.lock().unwrap_or_else(|e| e.into_inner()) = None;
    let next = Arc::new(AtomicU64::new(from));
    let queue: Arc<str> = a.queue.as_str().into();
    let tasks: Vec<_> = producers
        .iter()
        .map(|ch| {
            tokio::spawn(produce(
                ch.clone(),
                queue.clone(),
                shared.clone(),
                next.clone(),
                to,
                a.in_flight,
                a.payload,
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
    while shared.acked.load(Ordering::Acquire) < to {
        if tokio::time::timeout_at(deadline.into(), shared.round_done.notified())
            .await
            .is_err()
        {
            break;
        }
    }
    let last = *shared.last_ack.lock().unwrap_or_else(|e| e.into_inner());
    (outs, last)
}

async fn connect(url: &str, name: &str) -> Result<Connection, String> {
    Connection::connect(
        url,
        ConnectionProperties::default().with_connection_name(name.into()),
    )
    .await
    .map_err(|e| format!("connect {url}: {e}"))
}

/// A channel on the next shared connection, or on a new connection of its
/// own (kept in `own`) when there are no shared ones.
async fn open_channel(
    url: &str,
    shared: &[Connection],
    next: &mut usize,
    own: &mut Vec<Connection>,
    name: String,
) -> Result<Channel, String> {
    let ch = if shared.is_empty() {
        let c = connect(url, &name).await?;
        let ch = c.create_channel().await;
        own.push(c);
        ch
    } else {
        *next += 1;
        shared[(*next - 1) % shared.len()].create_channel().await
    };
    ch.map_err(|e| format!("channel.open: {e}"))
}

async fn run(a: Args) -> Result<i32, String> {
    if a.payload < 32 {
        return Err("--payload must be at least 32 bytes".into());
    }
    let deadline = Instant::now() + Duration::from_secs(a.timeout);
    let total = a.warmup + a.jobs;

    // The queue, declared anew.
    let admin = connect(&a.url, "bench-admin").await?;
    let ch = admin.create_channel().await.map_err(|e| e.to_string())?;
    ch.queue_delete(a.queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .map_err(|e| format!("queue.delete: {e}"))?;
    let mut qargs = FieldTable::default();
    qargs.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(a.queue_type.name().into()),
    );
    if a.queue_type == QueueType::Classic && a.classic_version > 0 {
        qargs.insert(
            "x-queue-version".into(),
            AMQPValue::LongInt(a.classic_version.into()),
        );
    }
    ch.queue_declare(
        a.queue.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        qargs,
    )
    .await
    .map_err(|e| format!("queue.declare: {e}"))?;

    let shared = Arc::new(Shared {
        base: Instant::now(),
        warmup: a.warmup,
        acked: AtomicU64::new(0),
        target: AtomicU64::new(u64::MAX),
        round_done: tokio::sync::Notify::new(),
        last_ack: Mutex::new(None),
        seen: (0..total).map(|_| AtomicU8::new(0)).collect(),
        redelivered: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        first_error: Mutex::new(None),
    });

    // Consumers and producers, each on its own channel; on its own
    // connection too unless --connections says otherwise.
    let mut conns: Vec<Connection> = Vec::new();
    for i in 0..a.connections {
        conns.push(connect(&a.url, &format!("bench-{i}")).await?);
    }
    let mut next_conn = 0;
    let mut own_conns = Vec::new();
    let mut consumer_tasks = Vec::new();
    let mut lats = Vec::new();
    for i in 0..a.consumers.max(1) {
        let ch = open_channel(
            &a.url,
            &conns,
            &mut next_conn,
            &mut own_conns,
            format!("bench-consumer-{i}"),
        )
        .await?;
        ch.basic_qos(a.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| format!("basic.qos: {e}"))?;
        let lat = Arc::new(Mutex::new(Vec::new()));
        consumer_tasks.push(tokio::spawn(consume(
            ch,
            a.queue.clone(),
            format!("bench-consumer-{i}"),
            shared.clone(),
            lat.clone(),
        )));
        lats.push(lat);
    }
    // Producers, each on its own connection, with publisher confirms.
    let mut producers = Vec::new();
    for i in 0..a.producers.max(1) {
        let ch = open_channel(
            &a.url,
            &conns,
            &mut next_conn,
            &mut own_conns,
            format!("bench-producer-{i}"),
        )
        .await?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| format!("confirm.select: {e}"))?;
        producers.push(ch);
    }
    own_conns.extend(conns);

    if a.warmup > 0 {
        let (_, last) = round(&a, &producers, &shared, 0, a.warmup, deadline).await;
        if last.is_none() {
            let e = shared
                .first_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            return Err(format!(
                "warm-up did not finish ({} of {} acked){}",
                shared.acked.load(Ordering::Relaxed),
                a.warmup,
                e.map(|e| format!(": {e}")).unwrap_or_default()
            ));
        }
    }

    let server0 = a.server_pid.and_then(|p| cpu_seconds(Some(p)));
    let client0 = cpu_seconds(None);
    let t0 = Instant::now();
    let (outs, last) = round(&a, &producers, &shared, a.warmup, total, deadline).await;
    let end = Instant::now();
    let server = match (a.server_pid, server0) {
        (Some(p), Some(s0)) => cpu_seconds(Some(p)).map(|s1| s1 - s0),
        _ => None,
    };
    let client = match (client0, cpu_seconds(None)) {
        (Some(c0), Some(c1)) => Some(c1 - c0),
        _ => None,
    };
    let timed_out = last.is_none();
    let wall = last
        .unwrap_or(end)
        .duration_since(t0)
        .as_secs_f64()
        .max(1e-9);

    for t in &consumer_tasks {
        t.abort();
    }
    for t in consumer_tasks {
        let _ = t.await;
    }

    let mut enq: Vec<u64> = outs
        .iter()
        .flat_map(|o| o.latencies_ns.iter().copied())
        .collect();
    let confirmed = enq.len() as u64;
    let nacks: u64 = outs.iter().map(|o| o.nacks).sum();
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
        .filter(|c| c.load(Ordering::Relaxed) == 0)
        .count() as u64;
    let duplicates: u64 = measured
        .iter()
        .map(|c| u64::from(c.load(Ordering::Relaxed).saturating_sub(1)))
        .sum();
    let errors = shared.errors.load(Ordering::Relaxed);
    let first_error = shared
        .first_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let redelivered = shared.redelivered.load(Ordering::Relaxed);
    let rate = completed as f64 / wall;
    let per_cpu = server.filter(|s| *s > 0.0).map(|s| completed as f64 / s);

    let mut line = format!(
        "queue rabbitmq {} ({}): {} producers x {} in flight -> {} consumers (prefetch {}), payload {}B: {} jobs in {:.3} s = {:.0} jobs/s; enqueue ack p50 {:.1} us, p99 {:.1} us; enqueue->complete p50 {:.1} us, p99 {:.1} us",
        a.queue_type.name(),
        if a.classic_version > 0 && a.queue_type == QueueType::Classic {
            format!("v{}", a.classic_version)
        } else {
            "default version".into()
        },
        a.producers,
        a.in_flight,
        a.consumers,
        a.prefetch,
        a.payload,
        completed,
        wall,
        rate,
        e50,
        e99,
        c50,
        c99
    );
    if let Some(s) = server {
        line.push_str(&format!("; server CPU {s:.2} s"));
        if completed > 0 {
            line.push_str(&format!(
                " = {:.3} s per 1000 jobs",
                s * 1000.0 / completed as f64
            ));
        }
    }
    if let Some(c) = client {
        line.push_str(&format!("; bench CPU {c:.2} s"));
    }
    if lost > 0 || duplicates > 0 {
        line.push_str(&format!("; {lost} lost, {duplicates} duplicated"));
    }
    if redelivered > 0 {
        line.push_str(&format!("; {redelivered} redelivered"));
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
    if a.json {
        println!(
            "{}",
            json!({
                "bench": "queue",
                "system": "rabbitmq",
                "url": a.url,
                "queue_type": a.queue_type.name(),
                "classic_version": a.classic_version,
                "producers": a.producers,
                "in_flight": a.in_flight,
                "consumers": a.consumers,
                "prefetch": a.prefetch,
                "connections": a.connections,
                "payload": a.payload,
                "jobs": a.jobs,
                "confirmed": confirmed,
                "completed": completed,
                "nacks": nacks,
                "lost": lost,
                "duplicates": duplicates,
                "redelivered": redelivered,
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
                "server_cpu_s": server,
                "calls_per_server_cpu_s": per_cpu,
                "client_cpu_s": client,
            })
        );
    }

    let _ = ch
        .queue_delete(a.queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    for c in own_conns.iter().chain(std::iter::once(&admin)) {
        let _ = tokio::time::timeout(Duration::from_secs(2), c.close(200, "bye".into())).await;
    }
    let bad = errors > 0 || lost > 0 || duplicates > 0 || timed_out || completed < a.jobs;
    Ok(if bad { 2 } else { 0 })
}

fn main() {
    let a = Args::parse();
    let rt = if a.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(a.threads)
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(run(a));
    match code {
        Ok(c) => std::process::exit(c),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip() {
        let b = body(42, 123_456_789, 64);
        assert_eq!(b.len(), 64);
        assert_eq!(parse_body(&b), Some((42, 123_456_789)));
        assert_eq!(parse_body(b"short"), None);
    }

    #[test]
    fn percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&[], 50.0), 0);
    }
}
