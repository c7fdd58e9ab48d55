//! `crash`: the SIGKILL-under-load test of the durable queues, repeated.
//!
//! Each iteration starts the router binary (`--router`) on a fresh data
//! directory, runs producers (acknowledged pushes, each job carrying a unique
//! number) and a worker (completing jobs), SIGKILLs the router at a random
//! moment, starts it again on the same store, lets the worker drain the queue
//! and counts: acknowledged jobs that never ran (lost: must be 0), jobs that
//! ran more than once (re-runs: at-least-once delivery after a crash), jobs
//! that ran although their push was never acknowledged (committed, the
//! answer lost in the kill). One line per iteration, totals at the end, and
//! a JSON line with `--json`; exit status 1 if any acknowledged job was lost.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use switchyard_client::{Dict, Serializer, Session, Value};

#[derive(Args, Debug)]
pub struct CrashArgs {
    /// The router binary (`switchyard`).
    #[arg(long)]
    pub router: PathBuf,
    /// Iterations (kill, restart, drain, count).
    #[arg(long, default_value_t = 100)]
    pub iterations: u32,
    /// Directory for the data directories, configurations and logs (each
    /// iteration's is deleted when it passed).
    #[arg(long)]
    pub dir: PathBuf,
    /// Ports are taken from this one upwards (each start takes the next one
    /// that is free, cycling through `port_span`; a start that loses its
    /// port to another socket meanwhile is tried again on the next).
    #[arg(long, default_value_t = 34000)]
    pub port_base: u16,
    #[arg(long, default_value_t = 500)]
    pub port_span: u16,
    /// Producer sessions, and pushes in flight on each.
    #[arg(long, default_value_t = 4)]
    pub producers: usize,
    #[arg(long, default_value_t = 16)]
    pub in_flight: usize,
    /// The kill comes this many milliseconds after the load started, drawn
    /// uniformly from MIN..MAX.
    #[arg(long, default_value_t = 200)]
    pub kill_min_ms: u64,
    #[arg(long, default_value_t = 1500)]
    pub kill_max_ms: u64,
    /// Give up draining an iteration's queue after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub drain_timeout: u64,
    /// Also print the totals as one JSON line.
    #[arg(long)]
    pub json: bool,
}

const QUEUE: &str = "[[realm.queue]]\nname = \"crash\"\ntarget = \"bench.crash.work\"\n\
     retry = { kind = \"fixed\", times = 50, spacing = \"10ms\" }\nlease_timeout = \"2s\"\n\
     max_attempts = 100\nconcurrency = 32\n";

struct Router {
    child: Child,
    url: String,
    log: PathBuf,
}

/// Hands out ports of `base..base + span` that are free now.
struct Ports {
    base: u16,
    span: u16,
    next: u16,
}

impl Ports {
    fn take(&mut self) -> u16 {
        for _ in 0..self.span {
            let port = self.base + self.next % self.span.max(1);
            self.next = self.next.wrapping_add(1);
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
        self.base
    }
}

impl Router {
    /// Starts the router on a free port (up to 5 tries, if another socket takes the port
    /// first: the range may lie in the ephemeral range of client connections).
    fn start(bin: &Path, dir: &Path, ports: &mut Ports, name: &str) -> Result<Router, String> {
        let mut last = String::new();
        for _ in 0..5 {
            match Router::start_on(bin, dir, ports.take(), name) {
                Ok(r) => return Ok(r),
                Err(e) if e.contains("Address already in use") => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    fn start_on(bin: &Path, dir: &Path, port: u16, name: &str) -> Result<Router, String> {
        let cfg = dir.join(format!("{name}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[[listener]]\ntype = \"rawsocket\"\naddress = \"127.0.0.1:{port}\"\n\n\
                 [[realm]]\nname = \"realm1\"\n\n{QUEUE}\n[storage]\ndata_dir = \"{}\"\n",
                dir.join("data").display()
            ),
        )
        .map_err(|e| format!("config: {e}"))?;
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(bin)
            .arg("--config")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).map_err(|e| format!("log: {e}"))?)
            .spawn()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        let mut r = Router {
            child,
            url: format!("rs://127.0.0.1:{port}"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        // The router's own line ("switchyard 0.1.0 ready"), logged once every listener is
        // bound (not "durable queues ready", which comes before).
        let ready = concat!("switchyard ", env!("CARGO_PKG_VERSION"), " ready");
        loop {
            if std::fs::read_to_string(&r.log).is_ok_and(|l| l.contains(ready))
                && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            {
                return Ok(r);
            }
            if let Ok(Some(st)) = r.child.try_wait() {
                return Err(format!("router exited ({st}):\n{}", r.log_text()));
            }
            if Instant::now() > deadline {
                r.kill();
                return Err(format!("router not ready in 30 s:\n{}", r.log_text()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.kill();
    }
}

/// xorshift64*, seeded from the clock: the kill moment only has to vary.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Rng(t | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}

type Seen = Arc<Mutex<HashMap<u64, u32>>>;

async fn worker(url: &str, seen: Seen) -> Result<Session, String> {
    let s = Session::connect(url, "realm1", Serializer::MsgPack)
        .await
        .map_err(|e| format!("worker: {e}"))?;
    s.register("bench.crash.work", move |args, _| {
        let seen = seen.clone();
        async move {
            if let Some(Value::UInt(n)) = args.first() {
                if let Ok(mut m) = seen.lock() {
                    *m.entry(*n).or_default() += 1;
                }
            }
            Ok((Vec::new(), Dict::new()))
        }
    })
    .await
    .map_err(|e| format!("register: {e}"))?;
    Ok(s)
}

fn uint(d: &Dict, k: &str) -> u64 {
    match d.get(k) {
        Some(Value::UInt(n)) => *n,
        _ => 0,
    }
}

/// Waits until nothing waits or runs; the stats at the end.
async fn drain(s: &Session, within: Duration) -> Result<Dict, String> {
    let deadline = Instant::now() + within;
    loop {
        let (_, st) = s
            .call(
                "switchyard.queue.stats",
                vec![Value::from("crash")],
                Dict::new(),
            )
            .await
            .map_err(|e| format!("stats: {e}"))?;
        if uint(&st, "ready") + uint(&st, "scheduled") + uint(&st, "in_flight") == 0 {
            return Ok(st);
        }
        if Instant::now() > deadline {
            return Err(format!("not drained in {within:?}: {st:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[derive(Default, Debug)]
struct Figures {
    acked: u64,
    ran: u64,
    lost: u64,
    reruns: u64,
    unacked_ran: u64,
    dead: u64,
    kill_ms: u64,
    recovery_ms: u64,
}

async fn iteration(
    a: &CrashArgs,
    i: u32,
    rng: &mut Rng,
    ports: &mut Ports,
) -> Result<Figures, String> {
    let dir = a.dir.join(format!("iter-{i:04}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let acked: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let seen: Seen = Arc::default();
    let next = Arc::new(AtomicU64::new(1));
    let kill_ms = rng.range(a.kill_min_ms, a.kill_max_ms);

    let mut router = Router::start(&a.router, &dir, ports, "run")?;
    let w = worker(&router.url, seen.clone()).await?;
    let mut producers = Vec::new();
    for _ in 0..a.producers {
        let s = Arc::new(
            Session::connect(&router.url, "realm1", Serializer::MsgPack)
                .await
                .map_err(|e| format!("producer: {e}"))?,
        );
        for _ in 0..a.in_flight {
            let (s, acked, next) = (s.clone(), acked.clone(), next.clone());
            producers.push(tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let r = s
                        .call(
                            "switchyard.queue.push",
                            vec![Value::from("crash")],
                            Dict::new().with("args", Value::List(vec![Value::UInt(n)])),
                        )
                        .await;
                    match r {
                        Ok(_) => {
                            if let Ok(mut a) = acked.lock() {
                                a.insert(n);
                            }
                        }
                        Err(_) => return,
                    }
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(kill_ms)).await;
    router.kill();
    for p in producers {
        let _ = p.await;
    }
    drop(w);

    let restarted = Instant::now();
    let router = Router::start(&a.router, &dir, ports, "restart")?;
    let recovery_ms = restarted.elapsed().as_millis() as u64;
    let _w = worker(&router.url, seen.clone()).await?;
    let admin = Session::connect(&router.url, "realm1", Serializer::Json)
        .await
        .map_err(|e| format!("admin: {e}"))?;
    let st = drain(&admin, Duration::from_secs(a.drain_timeout)).await?;
    let acked = acked.lock().map_err(|_| "poisoned")?.clone();
    let seen = seen.lock().map_err(|_| "poisoned")?.clone();
    let lost: Vec<u64> = acked
        .iter()
        .filter(|n| !seen.contains_key(n))
        .copied()
        .collect();
    let f = Figures {
        acked: acked.len() as u64,
        ran: seen.len() as u64,
        lost: lost.len() as u64,
        reruns: seen.values().map(|c| u64::from(c.saturating_sub(1))).sum(),
        unacked_ran: seen.keys().filter(|n| !acked.contains(n)).count() as u64,
        dead: uint(&st, "dead"),
        kill_ms,
        recovery_ms,
    };
    let panicked = router.log_text().contains("panicked");
    drop(router);
    if panicked {
        return Err(format!("the router panicked; logs in {}", dir.display()));
    }
    if f.lost == 0 && f.dead == 0 {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!(
            "iteration {i}: lost {:?} (first 10); logs and store kept in {}",
            &lost[..lost.len().min(10)],
            dir.display()
        );
    }
    Ok(f)
}

pub async fn run(a: CrashArgs) -> Result<i32, String> {
    let mut rng = Rng::new();
    let mut ports = Ports {
        base: a.port_base,
        span: a.port_span.max(1),
        next: 0,
    };
    let mut total = Figures::default();
    let mut max_reruns = 0;
    let started = Instant::now();
    for i in 0..a.iterations {
        let f = iteration(&a, i, &mut rng, &mut ports).await?;
        println!(
            "crash {:>3}/{}: killed after {:>4} ms: {:>5} acknowledged, {:>5} ran, lost {}, re-runs {:>3}, ran unacknowledged {:>2}, dead {}, restart {} ms",
            i + 1,
            a.iterations,
            f.kill_ms,
            f.acked,
            f.ran,
            f.lost,
            f.reruns,
            f.unacked_ran,
            f.dead,
            f.recovery_ms
        );
        max_reruns = max_reruns.max(f.reruns);
        total.acked += f.acked;
        total.ran += f.ran;
        total.lost += f.lost;
        total.reruns += f.reruns;
        total.unacked_ran += f.unacked_ran;
        total.dead += f.dead;
        total.recovery_ms = total.recovery_ms.max(f.recovery_ms);
    }
    println!(
        "crash test: {} iterations in {:.0} s: {} acknowledged jobs, {} lost, {} re-runs (at most {} in one iteration), {} ran without an acknowledgement, {} dead-lettered; slowest restart {} ms",
        a.iterations,
        started.elapsed().as_secs_f64(),
        total.acked,
        total.lost,
        total.reruns,
        max_reruns,
        total.unacked_ran,
        total.dead,
        total.recovery_ms
    );
    if a.json {
        println!(
            "{}",
            json!({"scenario": "crash", "iterations": a.iterations, "acknowledged": total.acked,
                   "ran": total.ran, "lost": total.lost, "reruns": total.reruns,
                   "max_reruns_per_iteration": max_reruns, "ran_unacknowledged": total.unacked_ran,
                   "dead": total.dead, "slowest_restart_ms": total.recovery_ms})
        );
    }
    Ok(if total.lost == 0 && total.dead == 0 {
        0
    } else {
        1
    })
}
