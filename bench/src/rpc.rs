//! The `rpc` scenario: C callers -> N callees (a shared registration when
//! N > 1) that echo their arguments.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde_json::json;
use switchyard_client::{raw_payload, Dict, Item, Serializer, Session, SessionOptions, Value};

use crate::pubsub::transport_name;
use crate::stats::{group, percentile, CpuMeter};
use crate::Common;

#[derive(Args, Debug)]
pub struct RpcArgs {
    #[command(flatten)]
    pub common: Common,
    /// Caller sessions (each its own connection).
    #[arg(long, default_value_t = 4)]
    pub callers: usize,
    /// Calls kept in flight per caller.
    #[arg(long, default_value_t = 16)]
    pub in_flight: usize,
    /// Calls in all (measured).
    #[arg(long, default_value_t = 100_000)]
    pub calls: u64,
    /// Calls made before the measured ones (same callers), not counted.
    #[arg(long, default_value_t = 1000)]
    pub warmup: u64,
    /// Callee sessions sharing the registration.
    #[arg(long, default_value_t = 1)]
    pub callees: usize,
    /// Invocation policy of the shared registration (with --callees > 1):
    /// roundrobin, random, first, last, least_loaded.
    #[arg(long, default_value = "roundrobin")]
    pub invoke: String,
    /// URL for the callees (default: `--url`); several (comma-separated)
    /// put the callees on them in turn (the nodes of a cluster: callers on
    /// `--url`, callees on the others).
    #[arg(long, value_delimiter = ',')]
    pub callee_url: Vec<String>,
}

struct CallerOutcome {
    latencies_ns: Vec<u64>,
    errors: u64,
    mismatches: u64,
    first_error: Option<String>,
}

/// One caller: keeps `in_flight` calls going until `counter` reaches `limit`.
async fn caller(
    s: Session,
    procedure: Arc<str>,
    payload: switchyard_client::Payload,
    in_flight: usize,
    counter: Arc<AtomicU64>,
    limit: u64,
    deadline: Instant,
) -> CallerOutcome {
    let expected = match &payload.args {
        Some(Item::Raw { bytes, .. }) => Some(bytes.clone()),
        _ => None,
    };
    let mut out = CallerOutcome {
        latencies_ns: Vec::new(),
        errors: 0,
        mismatches: 0,
        first_error: None,
    };
    let one = || {
        let (s, p, pl) = (&s, &procedure, payload.clone());
        async move {
            let t = Instant::now();
            let r = s.call_with(p, Dict::new(), pl).await;
            (t.elapsed(), r)
        }
    };
    let claim = || counter.fetch_add(1, Ordering::Relaxed) < limit;
    let mut inflight = FuturesUnordered::new();
    while inflight.len() < in_flight.max(1) && claim() {
        inflight.push(one());
    }
    loop {
        let item = match tokio::time::timeout_at(deadline.into(), inflight.next()).await {
            Ok(Some(item)) => item,
            Ok(None) | Err(_) => break,
        };
        match item {
            (dt, Ok(r)) => {
                out.latencies_ns.push(dt.as_nanos() as u64);
                let same = match (&r.payload.args, &expected) {
                    (Some(Item::Raw { bytes, .. }), Some(e)) => bytes == e,
                    _ => false,
                };
                if !same {
                    out.mismatches += 1;
                }
            }
            (_, Err(e)) => {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| e.to_string());
            }
        }
        if claim() {
            inflight.push(one());
        }
    }
    out
}

async fn round(
    callers: &[Session],
    procedure: &Arc<str>,
    payload: &switchyard_client::Payload,
    in_flight: usize,
    calls: u64,
    deadline: Instant,
) -> Vec<CallerOutcome> {
    let counter = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for s in callers {
        tasks.push(tokio::spawn(caller(
            s.clone(),
            procedure.clone(),
            payload.clone(),
            in_flight,
            counter.clone(),
            calls,
            deadline,
        )));
    }
    let mut outs = Vec::new();
    for t in tasks {
        match t.await {
            Ok(o) => outs.push(o),
            Err(e) => outs.push(CallerOutcome {
                latencies_ns: Vec::new(),
                errors: 1,
                mismatches: 0,
                first_error: Some(format!("caller task failed: {e}")),
            }),
        }
    }
    outs
}

pub async fn run(a: RpcArgs) -> Result<i32, String> {
    let c = &a.common;
    let ser: Serializer = c.serializer.into();
    let procedure: Arc<str> = format!(
        "bench.rpc.echo.p{}x{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0)
    )
    .into();
    let deadline = Instant::now() + Duration::from_secs(c.timeout);

    let mut callees = Vec::new();
    let options = if a.callees > 1 {
        Dict::new().with("invoke", a.invoke.as_str())
    } else {
        Dict::new()
    };
    let callee_urls = if a.callee_url.is_empty() {
        vec![c.url.clone()]
    } else {
        a.callee_url.clone()
    };
    for i in 0..a.callees.max(1) {
        let url = &callee_urls[i % callee_urls.len()];
        let callee = Session::connect_with(url, &c.realm, SessionOptions::new(ser))
            .await
            .map_err(|e| format!("callee connect: {e}"))?;
        callee
            .register_raw(
                &procedure,
                options.clone(),
                |inv| async move { Ok(inv.payload) },
            )
            .await
            .map_err(|e| format!("register: {e}"))?;
        callees.push(callee);
    }
    let mut callers = Vec::new();
    for _ in 0..a.callers.max(1) {
        callers.push(
            Session::connect_with(&c.url, &c.realm, SessionOptions::new(ser))
                .await
                .map_err(|e| format!("caller connect: {e}"))?,
        );
    }
    let payload = raw_payload(ser, &[Value::Str("x".repeat(c.payload))]);

    if a.warmup > 0 {
        let w = round(
            &callers,
            &procedure,
            &payload,
            a.in_flight,
            a.warmup,
            deadline,
        )
        .await;
        if let Some(e) = w.iter().find_map(|o| o.first_error.clone()) {
            return Err(format!("warm-up call failed: {e}"));
        }
    }

    let cpu = CpuMeter::start(&c.server_pid);
    let t0 = Instant::now();
    let outs = round(
        &callers,
        &procedure,
        &payload,
        a.in_flight,
        a.calls,
        deadline,
    )
    .await;
    let wall = t0.elapsed().as_secs_f64().max(1e-9);
    let used = cpu.stop();
    let timed_out = Instant::now() >= deadline;

    let mut lat: Vec<u64> = outs
        .iter()
        .flat_map(|o| o.latencies_ns.iter().copied())
        .collect();
    lat.sort_unstable();
    let errors: u64 = outs.iter().map(|o| o.errors).sum();
    let mismatches: u64 = outs.iter().map(|o| o.mismatches).sum();
    let first_error = outs.iter().find_map(|o| o.first_error.clone());
    let done = lat.len() as u64;
    let rate = done as f64 / wall;
    let us = |ns: u64| ns as f64 / 1000.0;
    let p50 = us(percentile(&lat, 50.0));
    let p99 = us(percentile(&lat, 99.0));
    let mean = if lat.is_empty() {
        0.0
    } else {
        us(lat.iter().sum::<u64>() / lat.len() as u64)
    };
    let per_cpu = used.server.filter(|s| *s > 0.0).map(|s| done as f64 / s);

    let mut transport = transport_name(&c.url).to_owned();
    if callee_urls[0] != c.url || callee_urls.len() > 1 {
        transport = format!(
            "{transport}->{}x{}",
            transport_name(&callee_urls[0]),
            callee_urls.len()
        );
    }
    let mut line = format!(
        "rpc {transport} {ser} {} callers x {} in flight -> {} callee(s){}, payload {}B: {} calls in {:.3} s = {} calls/s; round trip p50 {:.1} us, p99 {:.1} us, mean {:.1} us",
        a.callers,
        a.in_flight,
        a.callees.max(1),
        if a.callees > 1 {
            format!(" ({})", a.invoke)
        } else {
            String::new()
        },
        c.payload,
        group(done as f64),
        wall,
        group(rate),
        p50,
        p99,
        mean
    );
    if let Some(s) = used.server {
        line.push_str(&format!("; server CPU {s:.2} s"));
        if let Some(p) = per_cpu {
            line.push_str(&format!(" = {} calls/server-CPU-s", group(p)));
        }
    }
    if let Some(s) = used.client {
        line.push_str(&format!("; bench CPU {s:.2} s"));
    }
    if errors > 0 {
        line.push_str(&format!(
            "; {errors} errors (first: {})",
            first_error.as_deref().unwrap_or("")
        ));
    }
    if mismatches > 0 {
        line.push_str(&format!("; {mismatches} results differ from the arguments"));
    }
    if timed_out {
        line.push_str("; TIMED OUT");
    }
    println!("{line}");
    if c.json {
        println!(
            "{}",
            json!({
                "bench": "rpc",
                "url": c.url,
                "transport": transport,
                "serializer": ser.name(),
                "callers": a.callers,
                "in_flight": a.in_flight,
                "callees": a.callees.max(1),
                "invoke": a.invoke,
                "payload": c.payload,
                "calls": done,
                "errors": errors,
                "mismatches": mismatches,
                "timed_out": timed_out,
                "wall_s": wall,
                "calls_per_s": rate,
                "latency_p50_us": p50,
                "latency_p99_us": p99,
                "latency_mean_us": mean,
                "server_cpu_s": used.server,
                "calls_per_server_cpu_s": per_cpu,
                "client_cpu_s": used.client,
            })
        );
    }
    for s in callers {
        let _ = tokio::time::timeout(Duration::from_secs(2), s.leave()).await;
    }
    for callee in callees {
        let _ = tokio::time::timeout(Duration::from_secs(2), callee.leave()).await;
    }
    let bad = errors > 0 || mismatches > 0 || timed_out || done < a.calls;
    Ok(if bad { 2 } else { 0 })
}
