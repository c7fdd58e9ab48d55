//! `soak`: sessions churning for a long time. `--sessions` tasks each loop
//! until `--duration` ends: connect, subscribe to one of `--topics` topics,
//! publish (acknowledged) on it, call an echo procedure, stay a random
//! `--hold-ms` and leave. One long-lived session serves the echo procedure.
//! The router's memory and descriptors are sampled by the caller
//! (`scripts/soak.sh`); this reports cycles per second and the errors, every
//! `--report` seconds and at the end (a JSON line with `--json`).
//!
//! Several `--url`s (e.g. listeners on 127.0.0.1..127.0.0.8) spread the
//! connections over several destination addresses, so that closed
//! connections waiting out TIME_WAIT do not exhaust the source ports of one
//! address pair.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use switchyard_client::{Dict, Serializer, Session, Value};

use crate::stats::group;

#[derive(Args, Debug)]
pub struct SoakArgs {
    /// Router URLs (repeat the option; sessions take them in turn).
    #[arg(long, required = true)]
    pub url: Vec<String>,
    #[arg(long, default_value = "realm1")]
    pub realm: String,
    /// Churning sessions at once.
    #[arg(long, default_value_t = 10_000)]
    pub sessions: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 600)]
    pub duration: u64,
    /// Seconds over which the sessions start (evenly spread).
    #[arg(long, default_value_t = 20)]
    pub ramp: u64,
    /// A session stays connected a random time in MIN..MAX ms after its work.
    #[arg(long, default_value_t = 500)]
    pub hold_min_ms: u64,
    #[arg(long, default_value_t = 5000)]
    pub hold_max_ms: u64,
    /// Topics the sessions spread over.
    #[arg(long, default_value_t = 100)]
    pub topics: usize,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 10)]
    pub report: u64,
    /// Also print the totals as one JSON line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Default)]
struct Counts {
    cycles: AtomicU64,
    connect_errors: AtomicU64,
    op_errors: AtomicU64,
    events: AtomicU64,
    live: AtomicU64,
}

fn hold(seed: &mut u64, lo: u64, hi: u64) -> Duration {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    Duration::from_millis(lo + *seed % (hi.saturating_sub(lo)).max(1))
}

/// One session's life: connect, subscribe, publish, call, hold, leave.
async fn cycle(url: &str, a: &SoakArgs, topic: &str, n: u64, c: &Counts, seed: &mut u64) {
    let s = match tokio::time::timeout(
        Duration::from_secs(10),
        Session::connect(url, &a.realm, Serializer::MsgPack),
    )
    .await
    {
        Ok(Ok(s)) => s,
        _ => {
            c.connect_errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(200)).await;
            return;
        }
    };
    c.live.fetch_add(1, Ordering::Relaxed);
    let work = async {
        let mut sub = s.subscribe(topic).await?;
        s.publish(topic, vec![Value::UInt(n)], Dict::new(), true)
            .await?;
        let (args, _) = s
            .call("bench.soak.echo", vec![Value::UInt(n)], Dict::new())
            .await?;
        while sub.try_recv().is_some() {
            c.events.fetch_add(1, Ordering::Relaxed);
        }
        Ok::<_, switchyard_client::Error>(args)
    };
    match tokio::time::timeout(Duration::from_secs(10), work).await {
        Ok(Ok(args)) if args == vec![Value::UInt(n)] => {}
        _ => {
            c.op_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    tokio::time::sleep(hold(seed, a.hold_min_ms, a.hold_max_ms)).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), s.leave()).await;
    c.live.fetch_sub(1, Ordering::Relaxed);
    c.cycles.fetch_add(1, Ordering::Relaxed);
}

pub async fn run(a: SoakArgs) -> Result<i32, String> {
    let a = Arc::new(a);
    let callee = Session::connect(&a.url[0], &a.realm, Serializer::MsgPack)
        .await
        .map_err(|e| format!("callee: {e}"))?;
    callee
        .register("bench.soak.echo", |args, _| async move {
            Ok((args, Dict::new()))
        })
        .await
        .map_err(|e| format!("register: {e}"))?;
    let counts = Arc::new(Counts::default());
    let started = Instant::now();
    let end = started + Duration::from_secs(a.duration);
    let mut tasks = Vec::with_capacity(a.sessions);
    for i in 0..a.sessions {
        let (a, c) = (a.clone(), counts.clone());
        let delay = Duration::from_millis(a.ramp * 1000 * i as u64 / a.sessions.max(1) as u64);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let url = &a.url[i % a.url.len()];
            let topic = format!("bench.soak.t{}", i % a.topics.max(1));
            let mut seed = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let mut n = 0u64;
            while Instant::now() < end {
                n += 1;
                cycle(url, &a, &topic, n, &c, &mut seed).await;
            }
        }));
    }
    let reporter = {
        let (a, c) = (a.clone(), counts.clone());
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(a.report)).await;
                let now = c.cycles.load(Ordering::Relaxed);
                println!(
                    "soak {:>5.0} s: {:>8} cycles/s, {} live, errors: connect {}, operations {}",
                    started.elapsed().as_secs_f64(),
                    group((now - last) as f64 / a.report as f64),
                    c.live.load(Ordering::Relaxed),
                    c.connect_errors.load(Ordering::Relaxed),
                    c.op_errors.load(Ordering::Relaxed)
                );
                last = now;
            }
        })
    };
    for t in tasks {
        let _ = t.await;
    }
    reporter.abort();
    let secs = started.elapsed().as_secs_f64();
    let c = &counts;
    let cycles = c.cycles.load(Ordering::Relaxed);
    let (ce, oe) = (
        c.connect_errors.load(Ordering::Relaxed),
        c.op_errors.load(Ordering::Relaxed),
    );
    println!(
        "soak: {} sessions churning for {secs:.0} s: {} cycles (connect, subscribe, publish, call, leave), {} per second; errors: connect {ce}, operations {oe}",
        a.sessions,
        group(cycles as f64),
        group(cycles as f64 / secs)
    );
    if a.json {
        println!(
            "{}",
            json!({"scenario": "soak", "sessions": a.sessions, "seconds": secs, "cycles": cycles,
                   "cycles_per_second": cycles as f64 / secs, "connect_errors": ce,
                   "operation_errors": oe})
        );
    }
    let _ = callee.leave().await;
    Ok(if cycles > 0 && (ce + oe) * 1000 <= cycles {
        0
    } else {
        1
    })
}
