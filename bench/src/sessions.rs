//! Session setup and teardown (issue 21, target 3).
//!
//! * `sessions`: `--sessions` sessions opened with `--concurrency` handshakes
//!   (TCP or WebSocket upgrade, HELLO -> WELCOME) at once; the rate is
//!   sessions established per second over the measured window (from the
//!   first connect to the last WELCOME). The sessions are then left
//!   (GOODBYE), outside the window, and the whole is repeated `--rounds`
//!   times.
//! * `cycles`: `--workers` tasks each loop connect -> SUBSCRIBE -> SUBSCRIBED
//!   -> GOODBYE -> GOODBYE reply (connection closed) until `--cycles` cycles
//!   are done; the rate is cycles per second.
//!
//! Both report the router's CPU per session (with `--server-pid`) and the
//! load generator's own CPU: on a 2-core machine the client shares the
//! cores with the router, and a client that burns more CPU per session than
//! the router is the bottleneck of the figure. Hence `--client lean` (the
//! default): the pre-encoded messages and bare streams of [`crate::lean`];
//! `--client library` runs the same scenario with `switchyard_client`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde_json::json;
use switchyard_client::{Serializer, Session, SessionOptions};

use crate::lean::{LeanSession, Wire};
use crate::pubsub::transport_name;
use crate::stats::{group, CpuMeter, CpuUsed};
use crate::Common;

#[derive(Args, Debug)]
pub struct SessionsArgs {
    #[command(flatten)]
    pub common: Common,
    /// Sessions opened per round.
    #[arg(long, default_value_t = 1000)]
    pub sessions: usize,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
    /// Rounds (each opens `--sessions`, then leaves them all, unmeasured).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Which client opens the sessions.
    #[arg(long, value_enum, default_value_t = ClientKind::Lean)]
    pub client: ClientKind,
}

/// The client of the session benchmarks.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ClientKind {
    /// Pre-encoded messages over a bare stream (`lean.rs`): ws:// and rs:// only.
    Lean,
    /// `switchyard_client::Session` (any URL the library takes).
    Library,
}

#[derive(Args, Debug)]
pub struct CyclesArgs {
    #[command(flatten)]
    pub common: Common,
    /// Connect-subscribe-leave cycles in all (measured).
    #[arg(long, default_value_t = 10_000)]
    pub cycles: u64,
    /// Cycles running at once (one task each).
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Topics the cycles spread over.
    #[arg(long, default_value_t = 100)]
    pub topics: usize,
    /// Which client runs the cycles.
    #[arg(long, value_enum, default_value_t = ClientKind::Lean)]
    pub client: ClientKind,
}

/// The load generator's sessions: no keepalive task (they live for
/// milliseconds; a PING timer per session would be the client's cost, not
/// the router's).
fn options(ser: Serializer) -> SessionOptions {
    let mut o = SessionOptions::new(ser);
    o.ping_interval = Duration::ZERO;
    o
}

/// A run's client: the lean one's pre-encoded messages, or the library.
enum Client {
    Lean(Wire),
    Library(Serializer),
}

/// An open session of either client.
enum Open {
    Lean(LeanSession),
    Library(Session),
}

impl Client {
    async fn new(kind: ClientKind, c: &Common, topics: &[String]) -> Result<Client, String> {
        let ser: Serializer = c.serializer.into();
        Ok(match kind {
            ClientKind::Lean => Client::Lean(Wire::new(&c.url, &c.realm, ser, topics).await?),
            ClientKind::Library => Client::Library(ser),
        })
    }

    /// Connect, handshake, HELLO -> WELCOME.
    async fn open(&self, c: &Common) -> Result<Open, String> {
        match self {
            Client::Lean(w) => w.open().await.map(Open::Lean),
            Client::Library(ser) => Session::connect_with(&c.url, &c.realm, options(*ser))
                .await
                .map(Open::Library)
                .map_err(|e| e.to_string()),
        }
    }

    /// SUBSCRIBE to `topics[i]` -> SUBSCRIBED, then GOODBYE -> GOODBYE.
    async fn subscribe_and_leave(
        &self,
        s: Open,
        topics: &[String],
        i: usize,
    ) -> Result<(), String> {
        match (self, s) {
            (Client::Lean(w), Open::Lean(mut s)) => {
                w.subscribe(&mut s, i).await?;
                w.leave(s).await
            }
            (Client::Library(_), Open::Library(s)) => {
                let topic = topics.get(i).ok_or_else(|| format!("no topic {i}"))?;
                let sub = s.subscribe(topic).await.map_err(|e| e.to_string())?;
                s.leave().await.map_err(|e| e.to_string())?;
                drop(sub);
                Ok(())
            }
            _ => Err("a session of the other client".into()),
        }
    }

    /// GOODBYE -> GOODBYE.
    async fn leave(&self, s: Open) -> Result<(), String> {
        match (self, s) {
            (Client::Lean(w), Open::Lean(s)) => w.leave(s).await,
            (Client::Library(_), Open::Library(s)) => {
                s.leave().await.map(drop).map_err(|e| e.to_string())
            }
            _ => Err("a session of the other client".into()),
        }
    }
}

/// The figures both scenarios print: rate, router and client CPU per unit.
fn cpu_text(used: &CpuUsed, done: u64, unit: &str) -> (String, Option<f64>, Option<f64>) {
    let mut text = String::new();
    let per = |s: f64| (done > 0).then(|| s * 1e6 / done as f64);
    let server_us = used.server.and_then(per);
    let client_us = used.client.and_then(per);
    if let (Some(s), Some(p)) = (used.server, server_us) {
        text.push_str(&format!("; server CPU {s:.2} s = {p:.1} us/{unit}"));
    }
    if let (Some(s), Some(p)) = (used.client, client_us) {
        text.push_str(&format!("; bench CPU {s:.2} s = {p:.1} us/{unit}"));
    }
    (text, server_us, client_us)
}

pub async fn run_sessions(a: SessionsArgs) -> Result<i32, String> {
    let c = &a.common;
    let ser: Serializer = c.serializer.into();
    let client = Client::new(a.client, c, &[]).await?;
    let deadline = Instant::now() + Duration::from_secs(c.timeout);
    let (mut wall, mut done, mut errors) = (0.0f64, 0u64, 0u64);
    let mut first_error = None;
    let (mut server_cpu, mut client_cpu) = (Some(0.0f64), Some(0.0f64));
    for _ in 0..a.rounds.max(1) {
        let cpu = CpuMeter::start(&c.server_pid);
        let t0 = Instant::now();
        let mut open = Vec::with_capacity(a.sessions);
        let mut inflight = FuturesUnordered::new();
        let mut started = 0;
        while started < a.sessions || !inflight.is_empty() {
            while started < a.sessions && inflight.len() < a.concurrency.max(1) {
                inflight.push(client.open(c));
                started += 1;
            }
            match tokio::time::timeout_at(deadline.into(), inflight.next()).await {
                Ok(Some(Ok(s))) => open.push(s),
                Ok(Some(Err(e))) => {
                    errors += 1;
                    first_error.get_or_insert(e);
                }
                Ok(None) => break,
                Err(_) => return Err("timed out opening sessions".into()),
            }
        }
        wall += t0.elapsed().as_secs_f64();
        let used = cpu.stop();
        server_cpu = server_cpu.zip(used.server).map(|(a, b)| a + b);
        client_cpu = client_cpu.zip(used.client).map(|(a, b)| a + b);
        done += open.len() as u64;
        // Leave them all (not measured), then let the router settle.
        let leaves: FuturesUnordered<_> = open.into_iter().map(|s| client.leave(s)).collect();
        let _ = tokio::time::timeout(Duration::from_secs(30), leaves.count()).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let wall = wall.max(1e-9);
    let rate = done as f64 / wall;
    let used = CpuUsed {
        server: if c.server_pid.is_empty() {
            None
        } else {
            server_cpu
        },
        client: client_cpu,
    };
    let (cpu, server_us, client_us) = cpu_text(&used, done, "session");
    let transport = transport_name(&c.url);
    let mut line = format!(
        "sessions {transport} {ser} ({:?} client): {} rounds x {} sessions, {} handshakes at once: {} established in {wall:.3} s = {} sessions/s{cpu}",
        a.client,
        a.rounds.max(1),
        a.sessions,
        a.concurrency,
        group(done as f64),
        group(rate)
    );
    if errors > 0 {
        line.push_str(&format!(
            "; {errors} errors (first: {})",
            first_error.as_deref().unwrap_or("")
        ));
    }
    println!("{line}");
    if c.json {
        println!(
            "{}",
            json!({
                "bench": "sessions", "url": c.url, "transport": transport,
                "serializer": ser.name(), "client": format!("{:?}", a.client).to_lowercase(),
                "sessions": a.sessions, "rounds": a.rounds,
                "concurrency": a.concurrency, "established": done, "errors": errors,
                "wall_s": wall, "sessions_per_s": rate,
                "server_cpu_s": used.server, "server_us_per_session": server_us,
                "client_cpu_s": used.client, "client_us_per_session": client_us,
            })
        );
    }
    let expected = (a.sessions * a.rounds.max(1)) as u64;
    Ok(if errors > 0 || done < expected { 2 } else { 0 })
}

/// One worker: cycles until `counter` reaches `limit`.
async fn worker(
    a: Arc<CyclesArgs>,
    run: Arc<(Client, Vec<String>)>,
    id: usize,
    counter: Arc<AtomicU64>,
    deadline: Instant,
) -> (u64, u64, Option<String>) {
    let c = &a.common;
    let (client, topics) = &*run;
    let (mut ok, mut errors, mut first) = (0, 0, None);
    let mut n = id;
    while counter.fetch_add(1, Ordering::Relaxed) < a.cycles && Instant::now() < deadline {
        let topic = n % topics.len().max(1);
        n += a.workers.max(1);
        let one = async {
            let s = client.open(c).await?;
            client.subscribe_and_leave(s, topics, topic).await
        };
        match tokio::time::timeout_at(deadline.into(), one).await {
            Ok(Ok(())) => ok += 1,
            Ok(Err(e)) => {
                errors += 1;
                first.get_or_insert(e);
            }
            Err(_) => break,
        }
    }
    (ok, errors, first)
}

pub async fn run_cycles(a: CyclesArgs) -> Result<i32, String> {
    let a = Arc::new(a);
    let c = &a.common;
    let ser: Serializer = c.serializer.into();
    let topics: Vec<String> = (0..a.topics.max(1))
        .map(|i| format!("bench.cycles.t{i}"))
        .collect();
    let run = Arc::new((Client::new(a.client, c, &topics).await?, topics));
    let deadline = Instant::now() + Duration::from_secs(c.timeout);
    let counter = Arc::new(AtomicU64::new(0));
    let cpu = CpuMeter::start(&c.server_pid);
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..a.workers.max(1))
        .map(|i| tokio::spawn(worker(a.clone(), run.clone(), i, counter.clone(), deadline)))
        .collect();
    let (mut done, mut errors, mut first_error) = (0u64, 0u64, None);
    for t in tasks {
        match t.await {
            Ok((ok, e, f)) => {
                done += ok;
                errors += e;
                if first_error.is_none() {
                    first_error = f;
                }
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    let wall = t0.elapsed().as_secs_f64().max(1e-9);
    let used = cpu.stop();
    let timed_out = Instant::now() >= deadline;
    let rate = done as f64 / wall;
    let (cpu, server_us, client_us) = cpu_text(&used, done, "cycle");
    let transport = transport_name(&c.url);
    let mut line = format!(
        "cycles {transport} {ser} ({:?} client): {} workers, connect-subscribe-leave: {} cycles in {wall:.3} s = {} cycles/s{cpu}",
        a.client,
        a.workers,
        group(done as f64),
        group(rate)
    );
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
                "bench": "cycles", "url": c.url, "transport": transport,
                "serializer": ser.name(), "client": format!("{:?}", a.client).to_lowercase(),
                "workers": a.workers, "cycles": done,
                "errors": errors, "timed_out": timed_out, "wall_s": wall,
                "cycles_per_s": rate,
                "server_cpu_s": used.server, "server_us_per_cycle": server_us,
                "client_cpu_s": used.client, "client_us_per_cycle": client_us,
            })
        );
    }
    Ok(if errors > 0 || timed_out || done < a.cycles {
        2
    } else {
        0
    })
}
