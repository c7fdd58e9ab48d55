//! Attacks on the state a client makes the queues hold (docs/SECURITY.md
//! "Queue state a client controls"), by an anonymous client of the default
//! open realm, through the real router over real sockets.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::memory::{pid, rss_kib};
use common::queue::{stats, uint};
use common::Router;
use switchyard_client::{Dict, Serializer, Session, Value};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The realm's store file under the router's directory.
fn store_file(dir: &Path) -> Option<PathBuf> {
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.file_name().is_some_and(|n| n == "queues-realm1.redb") {
                return Some(p);
            }
        }
    }
    None
}

fn file_kib(dir: &Path) -> u64 {
    store_file(dir)
        .and_then(|p| std::fs::metadata(p).ok())
        .map(|m| m.len() / 1024)
        .unwrap_or(0)
}

async fn join(r: &Router) -> Session {
    Session::connect(&r.rs_url(), "realm1", Serializer::MsgPack)
        .await
        .expect("join")
}

/// Round trip of a cheap call, in ms.
async fn round_trip(s: &Session) -> f64 {
    let t = Instant::now();
    stats(s, "conf").await;
    t.elapsed().as_secs_f64() * 1000.0
}

async fn declare(s: &Session, cfg: Dict) -> Result<Dict, String> {
    s.call("switchyard.queue.declare", Vec::new(), cfg)
        .await
        .map(|(_, kw)| kw)
        .map_err(|e| e.to_string())
}

fn queue(name: &str) -> Dict {
    Dict::new().with("name", name).with("target", "test.nobody")
}

async fn push(s: &Session, queue: &str, payload: Vec<u8>) -> Result<(), String> {
    s.call(
        "switchyard.queue.push",
        vec![Value::from(queue)],
        Dict::new().with("args", Value::List(vec![Value::Bytes(payload)])),
    )
    .await
    .map(|_| ())
    .map_err(|e| e.to_string())
}

async fn push_tiny(s: &Session, queue: &str, n: usize) -> Result<(), String> {
    let jobs = (0..n)
        .map(|i| {
            Value::Dict(
                Dict::new()
                    .with("queue", queue)
                    .with("args", Value::List(vec![Value::UInt(i as u64)])),
            )
        })
        .collect();
    s.call(
        "switchyard.queue.push_many",
        vec![Value::List(jobs)],
        Dict::new(),
    )
    .await
    .map(|_| ())
    .map_err(|e| e.to_string())
}

async fn purge(s: &Session, queue: &str) {
    s.call(
        "switchyard.queue.purge",
        vec![Value::from(queue)],
        Dict::new().with("which", "all"),
    )
    .await
    .expect("purge");
}

const REALM_BOUNDS: &str = "[realm.queue_limits]\nruntime_max_payload_bytes = 33554432\n\
     runtime_max_jobs = 2000\nruntime_max_idempotency_keys = 500\n\n\
     [[realm.queue]]\nname = \"conf\"\ntarget = \"test.nobody\"\n\
     max_payload_bytes = 67108864\nidempotency_max_keys = 10000000\nmax_jobs = 0\n";

/// Whoever declares a queue at run time used to choose its limits (up to 64
/// MiB payloads, 10 M idempotency keys, unlimited jobs...), so the realm's
/// worst case was max_queues times the per-queue maxima. Now: run-time
/// queues hold, together, at most `runtime_max_jobs` jobs,
/// `runtime_max_payload_bytes` payload bytes and (about)
/// `runtime_max_idempotency_keys` keys; deleting or purging gives the room
/// back; config-file queues are not bounded by them.
#[test]
fn runtime_queues_are_bounded_realm_wide() {
    let router = Router::start(REALM_BOUNDS);
    let p = pid(&router);
    runtime().block_on(async {
        let s = join(&router).await;
        let healthy = join(&router).await;
        let rt_before = round_trip(&healthy).await;
        let names: Vec<String> = (0..8).map(|i| format!("attack{i}")).collect();
        for n in &names {
            declare(&s, queue(n)).await.expect("declare");
        }
        // Jobs: 2 x 1000 tiny jobs fit, a third push_many does not.
        push_tiny(&s, "attack0", 1000).await.expect("push_many");
        push_tiny(&s, "attack1", 1000).await.expect("push_many");
        let e = push_tiny(&s, "attack2", 10).await.expect_err("realm-wide job bound");
        assert!(
            e.contains("switchyard.queue.error.queue_full") && e.contains("runtime_max_jobs"),
            "{e}"
        );
        // Purging gives the room back.
        purge(&s, "attack0").await;
        purge(&s, "attack1").await;
        push_tiny(&s, "attack2", 1000).await.expect("room again");
        purge(&s, "attack2").await;

        // Bytes: 900 KiB jobs spread over the run-time queues.
        let (rss0, disk0) = (rss_kib(p), file_kib(router.dir.path()));
        let mut accepted = 0usize;
        let mut refused = None;
        let mut rt_during = 0f64;
        for i in 0..100usize {
            match push(&s, &names[i % names.len()], vec![i as u8; 900 * 1024]).await {
                Ok(()) => accepted += 1,
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
            if i % 10 == 0 {
                rt_during = rt_during.max(round_trip(&healthy).await);
            }
        }
        let (rss1, disk1) = (rss_kib(p), file_kib(router.dir.path()));
        eprintln!(
            "900 KiB pushes into 8 run-time queues: {accepted} accepted; store file {disk0} -> {disk1} KiB; RSS {rss0} -> {rss1} KiB; healthy call {rt_before:.1} ms before, {rt_during:.1} ms at worst during"
        );
        let e = refused.expect("the realm-wide byte bound refuses a push");
        assert!(
            e.contains("switchyard.queue.error.queue_full")
                && e.contains("runtime_max_payload_bytes")
                && e.contains("33554432"),
            "{e}"
        );
        assert!(accepted <= 36, "{accepted} jobs of 900 KiB in 32 MiB");
        assert!(disk1 < disk0 + 48 * 1024, "store grew {disk0} -> {disk1} KiB");
        assert!(rt_during < 1000.0, "healthy call took {rt_during:.1} ms");
        // The config file's queue is the operator's: not bounded by it.
        push(&s, "conf", vec![1u8; 900 * 1024]).await.expect("config queue");
        // Deleting the run-time queues gives the room back.
        for n in &names {
            s.call(
                "switchyard.queue.delete",
                vec![Value::from(n.as_str())],
                Dict::new().with("force", true),
            )
            .await
            .expect("delete");
        }
        declare(&s, queue("again")).await.expect("declare");
        for i in 0..30u8 {
            push(&s, "again", vec![i; 900 * 1024]).await.expect("room after delete");
        }
        purge(&s, "again").await;

        // Keys: 3 queues x 600 distinct keys; together they remember about 500.
        for n in ["k1", "k2", "k3"] {
            declare(&s, queue(n)).await.expect("declare");
            for chunk in 0..6 {
                let jobs = (0..100)
                    .map(|i| {
                        Value::Dict(
                            Dict::new()
                                .with("queue", n)
                                .with("idempotency_key", format!("{n}-{chunk}-{i}")),
                        )
                    })
                    .collect();
                s.call("switchyard.queue.push_many", vec![Value::List(jobs)], Dict::new())
                    .await
                    .expect("push_many");
                purge(&s, n).await;
            }
        }
        let mut keys = 0;
        for n in ["k1", "k2", "k3"] {
            keys += uint(&stats(&s, n).await, "idempotency_keys");
        }
        eprintln!("3 x 600 distinct keys into run-time queues: {keys} remembered");
        assert!(keys <= 503, "{keys} keys remembered");
        // The newest key of a queue is still a duplicate.
        let (_, kw) = s
            .call(
                "switchyard.queue.push",
                vec![Value::from("k3")],
                Dict::new().with("idempotency_key", "k3-5-99"),
            )
            .await
            .expect("push");
        assert_eq!(kw.get_bool("duplicate"), Some(true));
    });
}

/// A run-time declaration may not ask for more than the ceilings of
/// `[realm.queue_limits.runtime_queue]` (default: the per-queue defaults,
/// a lease of at most 1 h); the refusal names the setting and the ceiling.
/// Config-file queues are not bounded by them, and re-declaring one (as a
/// worker does at start) stays possible.
#[test]
fn runtime_declaration_cannot_ask_for_more_than_the_ceilings() {
    let router = Router::start(REALM_BOUNDS);
    runtime().block_on(async {
        let s = join(&router).await;
        for (key, value, ceiling) in [
            ("idempotency_max_keys", Value::UInt(10_000_000), "100000"),
            (
                "max_payload_bytes",
                Value::UInt(64 * 1024 * 1024),
                "1048576",
            ),
            ("max_jobs", Value::UInt(0), "1000000"),
            ("concurrency", Value::UInt(0), "64"),
            ("idempotency_key_max_bytes", Value::UInt(4096), "256"),
            ("idempotency_window", Value::from("30days"), "1day"),
            ("lease_timeout", Value::from("7days"), "1h"),
            ("max_attempts", Value::UInt(100_000), "20"),
        ] {
            let e = declare(&s, queue("greedy").with(key, value))
                .await
                .expect_err("over the ceiling");
            assert!(
                e.contains("switchyard.queue.error.limit_exceeded")
                    && e.contains(key)
                    && e.contains(ceiling)
                    && e.contains("runtime_queue"),
                "{key}: {e}"
            );
        }
        let e = declare(
            &s,
            queue("greedy").with("dead_letter", Dict::new().with("max_jobs", 0u64)),
        )
        .await
        .expect_err("unbounded dead letters");
        assert!(e.contains("dead_letter.max_jobs"), "{e}");
        let listed = s
            .call("switchyard.queue.list", Vec::new(), Dict::new())
            .await
            .expect("list")
            .0;
        assert!(!format!("{listed:?}").contains("greedy"), "{listed:?}");
        // Within the ceilings: fine.
        declare(
            &s,
            queue("modest")
                .with("max_payload_bytes", 65536u64)
                .with("lease_timeout", "5m"),
        )
        .await
        .expect("declare within the ceilings");
    });
    assert!(router.log_text().contains("above the ceiling"));
    let _ = Duration::ZERO;
}

/// A run-time queue's configuration is client-sized too: a list of
/// `non_retryable_errors` (or a long target) of almost a message each, in
/// every queue the realm allows, made the router hold max_queues x 1 MiB
/// of configuration. A run-time declaration's configuration is at most
/// `[realm.queue_limits.runtime_queue] config_max_bytes` (16 KiB).
#[test]
fn runtime_queue_configuration_is_bounded_in_size() {
    let router = Router::start(REALM_BOUNDS);
    let p = pid(&router);
    runtime().block_on(async {
        let s = join(&router).await;
        let healthy = join(&router).await;
        let rt_before = round_trip(&healthy).await;
        let before = rss_kib(p);
        let mut accepted = 0;
        let mut refusal = None;
        for q in 0..40 {
            let errors: Vec<Value> = (0..1800)
                .map(|i| Value::from(format!("com.example.e{q}.{i}.{}", "x".repeat(480))))
                .collect();
            match declare(
                &s,
                queue(&format!("wide{q}")).with("non_retryable_errors", Value::List(errors)),
            )
            .await
            {
                Ok(_) => accepted += 1,
                Err(e) => {
                    refusal = Some(e);
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after = rss_kib(p);
        let rt_after = round_trip(&healthy).await;
        eprintln!(
            "declarations of ~900 KiB: {accepted} accepted; RSS {before} -> {after} KiB; healthy call {rt_before:.1} -> {rt_after:.1} ms"
        );
        let e = refusal.expect("a configuration of 900 KiB is refused");
        assert!(
            e.contains("switchyard.queue.error.limit_exceeded") && e.contains("config_max_bytes"),
            "{e}"
        );
        assert_eq!(accepted, 0);
        // A reasonable list is fine.
        declare(
            &s,
            queue("narrow").with(
                "non_retryable_errors",
                Value::List(vec![Value::from("com.example.fatal.*")]),
            ),
        )
        .await
        .expect("declare");
    });
}

/// Probe: delete + re-declare loops and push / purge cycles do not grow
/// the router's memory or its store file.
#[test]
fn delete_redeclare_and_purge_cycles_do_not_grow() {
    let router = Router::start(REALM_BOUNDS);
    let p = pid(&router);
    runtime().block_on(async {
        let s = join(&router).await;
        // Warm up.
        for i in 0..50 {
            declare(&s, queue("churn")).await.expect("declare");
            push(&s, "churn", vec![i as u8; 1000]).await.expect("push");
            s.call(
                "switchyard.queue.delete",
                vec![Value::from("churn")],
                Dict::new().with("force", true),
            )
            .await
            .expect("delete");
        }
        let before = rss_kib(p);
        let t = Instant::now();
        for i in 0..500 {
            declare(&s, queue("churn")).await.expect("declare");
            push(&s, "churn", vec![i as u8; 1000]).await.expect("push");
            s.call(
                "switchyard.queue.delete",
                vec![Value::from("churn")],
                Dict::new().with("force", true),
            )
            .await
            .expect("delete");
        }
        let churn = t.elapsed();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = rss_kib(p);
        eprintln!("500 declare/push/delete cycles in {churn:?}: RSS {before} -> {after} KiB");
        assert!(after < before + 8 * 1024, "{before} -> {after} KiB");

        declare(&s, queue("cycle")).await.expect("declare");
        let mut sizes = Vec::new();
        for round in 0..6 {
            for i in 0..12u8 {
                push(&s, "cycle", vec![i ^ round; 900 * 1024])
                    .await
                    .expect("push");
            }
            purge(&s, "cycle").await;
            sizes.push(file_kib(router.dir.path()));
        }
        eprintln!("store file after each push 10.5 MiB / purge round: {sizes:?} KiB");
        // redb reuses the freed pages: the file stays within a few rounds' worth.
        assert!(sizes.iter().all(|&k| k < 40 * 1024), "{sizes:?}");
    });
}

/// Probe: a restart with 20 000 waiting jobs (after kill -9) starts in
/// bounded time and memory.
#[test]
fn restart_with_a_large_store() {
    let data = tempfile::tempdir().expect("tempdir");
    let extra = format!(
        "[[realm.queue]]\nname = \"conf\"\ntarget = \"test.nobody\"\n\n[storage]\ndata_dir = \"{}\"\n",
        data.path().display()
    );
    let mut first = Router::start(&extra);
    runtime().block_on(async {
        let s = join(&first).await;
        for _ in 0..20 {
            push_tiny(&s, "conf", 1000).await.expect("push_many");
        }
    });
    let rss_first = rss_kib(pid(&first));
    first.signal(9);
    let t = Instant::now();
    let second = Router::start(&extra);
    let started = t.elapsed();
    let p = pid(&second);
    runtime().block_on(async {
        let s = join(&second).await;
        assert_eq!(uint(&stats(&s, "conf").await, "ready"), 20_000);
    });
    let rss_second = rss_kib(p);
    eprintln!(
        "20000 waiting jobs: RSS {rss_first} KiB before kill -9; restart in {started:?}, RSS {rss_second} KiB"
    );
    assert!(started < Duration::from_secs(10), "{started:?}");
    assert!(rss_second < 128 * 1024, "{rss_second} KiB");
}

/// Memory per waiting job whose metadata the client sizes: a job naming a
/// target and a result topic of 2 KiB each and a 250-byte key cost 8971
/// bytes of memory per waiting job (10 000 jobs: +88 MB), so a config
/// queue of the default max_jobs (1 000 000) could hold 9 GB. A job's URIs
/// are at most `max_job_uri_bytes` (512) now.
#[test]
fn job_metadata_memory_is_bounded() {
    let router = Router::start(REALM_BOUNDS);
    let p = pid(&router);
    runtime().block_on(async {
        let s = join(&router).await;
        for field in ["target", "result_topic"] {
            let e = s
                .call(
                    "switchyard.queue.push",
                    vec![Value::from("conf")],
                    Dict::new().with(field, format!("com.t.{}", "t".repeat(2030))),
                )
                .await
                .expect_err("a 2 KiB URI")
                .to_string();
            assert!(
                e.contains("switchyard.queue.error.invalid_argument")
                    && e.contains(field)
                    && e.contains("max_job_uri_bytes"),
                "{e}"
            );
        }
        let batch = |from: usize| {
            Value::List(
                (from..from + 500)
                    .map(|i| {
                        Value::Dict(
                            Dict::new()
                                .with("queue", "conf")
                                .with("target", format!("com.t{i:06}.{}", "t".repeat(500)))
                                .with("result_topic", format!("com.r{i:06}.{}", "r".repeat(500)))
                                .with("idempotency_key", format!("{i}-{}", "k".repeat(240))),
                        )
                    })
                    .collect(),
            )
        };
        s.call("switchyard.queue.push_many", vec![batch(0)], Dict::new())
            .await
            .expect("warm up");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = rss_kib(p);
        let mut n = 0;
        for b in 1..=20 {
            s.call("switchyard.queue.push_many", vec![batch(b * 500)], Dict::new())
                .await
                .expect("push_many");
            n += 500;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after = rss_kib(p);
        let per_job = (after.saturating_sub(before)) as f64 * 1024.0 / n as f64;
        eprintln!("{n} jobs with 512-byte target and result topic, 250-byte key: RSS {before} -> {after} KiB, {per_job:.0} bytes per job");
        // Includes the store's page cache filling (bounded at 32 MiB).
        assert!(per_job < 6000.0, "{per_job} bytes per job");
    });
}

/// CPU time (user + system) of the router, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

/// Probe: a payload that is small in MessagePack (as stored) but expands
/// 6x in JSON (control characters): a JSON worker gets it once (1.2 MB
/// INVOCATION), the router does not spin.
#[test]
fn payload_expanding_in_json_for_the_worker() {
    let router = Router::start(
        "[[realm.queue]]\nname = \"exp\"\ntarget = \"test.exp.work\"\nmax_attempts = 3\nmax_payload_bytes = 4194304\n\
         retry = { kind = \"fixed\", times = 2, spacing = \"100ms\" }\n",
    );
    let p = pid(&router);
    runtime().block_on(async {
        let s = join(&router).await;
        // 160 000 control characters: 160 KB in MessagePack, 960 KB as stored JSON.
        let text: String = "\u{1}".repeat(200_000);
        s.call(
            "switchyard.queue.push",
            vec![Value::from("exp")],
            Dict::new().with("args", Value::List(vec![Value::from(text.as_str())])),
        )
        .await
        .expect("push");
        let worker = Session::connect(&router.ws_url(), "realm1", Serializer::Json)
            .await
            .expect("json worker");
        let got = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let g = got.clone();
        let _reg = worker
            .register("test.exp.work", move |args, _| {
                let g = g.clone();
                async move {
                    g.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let n = match args.first() {
                        Some(Value::Str(s)) => s.len() as u64,
                        _ => 0,
                    };
                    Ok((vec![Value::UInt(n)], Dict::new()))
                }
            })
            .await
            .expect("register");
        let t0 = cpu_ticks(p);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let ticks = cpu_ticks(p) - t0;
        let st = stats(&s, "exp").await;
        eprintln!(
            "JSON worker, 200 KB payload as stored (MessagePack), 1.2 MB as JSON: delivered {} times; stats {st:?}; router CPU {ticks} ticks in 3 s",
            got.load(std::sync::atomic::Ordering::Relaxed)
        );
        assert!(ticks < 150, "{ticks} ticks");
    });
}

/// Probe: registration churn against many parked dispatchers. 300
/// run-time queues hold one job each for `test.churn.N` with no worker; a
/// client registers a prefix `test.churn` (waking all 300, which lease and
/// call it) and unregisters, in a loop. Measures the router's CPU per
/// registration and that a healthy call stays fast.
#[test]
fn registration_churn_against_parked_dispatchers() {
    let router = Router::start("[realm.queue_limits]\nmax_queues = 400\n\n[[realm.queue]]\nname = \"conf\"\ntarget = \"test.nobody\"\n");
    let p = pid(&router);
    runtime().block_on(async {
        let s = join(&router).await;
        let healthy = join(&router).await;
        for i in 0..300 {
            let name = format!("churn{i}");
            declare(
                &s,
                Dict::new().with("name", name.as_str()).with("target", format!("test.churn.{i}")),
            )
            .await
            .expect("declare");
            push(&s, &name, vec![1]).await.expect("push");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rt_before = round_trip(&healthy).await;
        let worker = join(&router).await;
        let t0 = cpu_ticks(p);
        let start = Instant::now();
        let mut rt_during = 0f64;
        let rounds = 30;
        for r in 0..rounds {
            let reg = worker
                .register_with(
                    "test.churn",
                    Dict::new().with("match", "prefix"),
                    |_, _| async move {
                        // Never answers in time: the registration goes first.
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        Ok((Vec::new(), Dict::new()))
                    },
                )
                .await
                .expect("register");
            tokio::time::sleep(Duration::from_millis(20)).await;
            worker.unregister(reg.id).await.expect("unregister");
            if r % 5 == 0 {
                rt_during = rt_during.max(round_trip(&healthy).await);
            }
        }
        let elapsed = start.elapsed();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let ticks = cpu_ticks(p) - t0;
        let mut attempts = 0;
        let mut ready = 0;
        for i in [0, 150, 299] {
            let st = stats(&s, &format!("churn{i}")).await;
            attempts += uint(&st, "retried_total");
            ready += uint(&st, "ready") + uint(&st, "scheduled");
        }
        eprintln!(
            "{rounds} register/unregister rounds waking 300 dispatchers in {elapsed:?}: router CPU {ticks} ticks ({:.1} per round); healthy call {rt_before:.1} -> {rt_during:.1} ms; 3 sample queues: {ready} waiting, {attempts} retried",
            ticks as f64 / rounds as f64
        );
        assert!(rt_during < 500.0, "{rt_during} ms");
        // Registrations that serve none of the parked queues: a scan, no wake-up.
        let other = join(&router).await;
        let t0 = cpu_ticks(p);
        let start = Instant::now();
        let mut regs = Vec::new();
        for i in 0..300 {
            regs.push(
                other
                    .register(&format!("other.proc{i}"), |_, _| async move {
                        Ok((Vec::new(), Dict::new()))
                    })
                    .await
                    .expect("register"),
            );
        }
        let elapsed = start.elapsed();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let ticks = cpu_ticks(p) - t0;
        eprintln!(
            "300 unrelated registrations with 300 parked dispatchers in {elapsed:?}: router CPU {ticks} ticks"
        );
    });
}

/// Probe: a full disk. Needs a small file system (e.g. `mount -t tmpfs -o
/// size=48m tmpfs DIR`, as root) named by `SWITCHYARD_SMALL_FS`; skipped
/// without it. Pushes 900 KiB jobs until the disk is full: the push gets an
/// error, the router stays up and answers, and after a purge pushes work
/// again.
#[test]
fn full_disk() {
    let Ok(dir) = std::env::var("SWITCHYARD_SMALL_FS") else {
        eprintln!("SWITCHYARD_SMALL_FS not set: skipped");
        return;
    };
    let data = tempfile::tempdir_in(&dir).expect("tempdir on the small fs");
    let extra = format!(
        "[realm.queue_limits]\nmin_free_disk_bytes = 8388608\n\n\
         [[realm.queue]]\nname = \"conf\"\ntarget = \"test.nobody\"\nmax_jobs = 0\n\n[storage]\ndata_dir = \"{}\"\n",
        data.path().display()
    );
    let router = Router::start(&extra);
    runtime().block_on(async {
        let s = join(&router).await;
        let healthy = join(&router).await;
        let mut accepted = 0;
        let mut error = None;
        for i in 0..200usize {
            match push(&s, "conf", vec![i as u8; 900 * 1024]).await {
                Ok(()) => accepted += 1,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        let e = error.expect("the disk fills");
        let rt = round_trip(&healthy).await;
        eprintln!(
            "disk nearly full after {accepted} pushes of 900 KiB: {e}; healthy call {rt:.1} ms"
        );
        assert!(
            e.contains("switchyard.queue.error.queue_full") && e.contains("min_free_disk_bytes"),
            "{e}"
        );
        s.call(
            "switchyard.queue.purge",
            vec![Value::from("conf")],
            Dict::new().with("which", "all"),
        )
        .await
        .expect("purge works: the store did not fail");
        for i in 0..20u8 {
            push(&s, "conf", vec![i; 900 * 1024])
                .await
                .expect("pushes work again once there is room");
        }
    });
    eprintln!(
        "{}",
        router
            .log_text()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .take(8)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Listings read payloads and convert them: 16 clients peeking at once at
/// a queue of 900 KiB jobs (16 MiB of payloads per answer) held a healthy
/// session's call for 6.4 s, the conversions running on the threads that
/// serve every session. Listings now read at most 1 MiB of payloads and
/// run on blocking threads.
#[test]
fn concurrent_peeks_do_not_stall_the_router() {
    let router = Router::start(REALM_BOUNDS);
    let p = pid(&router);
    runtime().block_on(async {
        let s = join(&router).await;
        for i in 0..24u8 {
            push(&s, "conf", vec![i; 900 * 1024]).await.expect("push");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = rss_kib(p);
        let healthy = join(&router).await;
        let rt_before = round_trip(&healthy).await;
        let mut peekers = Vec::new();
        for _ in 0..16 {
            peekers.push(join(&router).await);
        }
        let stop = Instant::now() + Duration::from_secs(4);
        let mut peak = before;
        let mut rt_during = 0f64;
        let mut answers = std::collections::HashMap::<String, usize>::new();
        while Instant::now() < stop {
            let calls = peekers.iter().map(|c| async move {
                c.call(
                    "switchyard.queue.peek",
                    vec![Value::from("conf")],
                    Dict::new().with("limit", 1000u64),
                )
                .await
                .map(|_| "ok".to_string())
                .unwrap_or_else(|e| e.to_string().chars().take(60).collect())
            });
            let (results, (rss, rt)) = tokio::join!(futures_util::future::join_all(calls), async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                (rss_kib(p), round_trip(&healthy).await)
            });
            peak = peak.max(rss);
            rt_during = rt_during.max(rt);
            for a in results {
                *answers.entry(a).or_default() += 1;
            }
            peak = peak.max(rss_kib(p));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = rss_kib(p);
        eprintln!(
            "16 sessions peeking at 24 x 900 KiB jobs for 4 s: RSS {before} -> peak {peak} -> {after} KiB; healthy call {rt_before:.1} -> {rt_during:.1} ms; answers {answers:?}"
        );
        assert!(rt_during < 1000.0, "healthy call took {rt_during:.1} ms");
        assert!(peak < before + 200 * 1024, "{before} -> {peak} KiB");
    });
}

/// Probe: pushes of 1 MB strings of control characters (6 MB in JSON; the
/// store keeps MessagePack, so 1 MB) from 16 sessions at once into a
/// run-time queue: the realm-wide byte bound (32 MiB here) stops them, and
/// a healthy call stays fast.
#[test]
fn concurrent_expanding_pushes() {
    let router = Router::start(REALM_BOUNDS);
    let p = pid(&router);
    runtime().block_on(async {
        let healthy = join(&router).await;
        declare(&healthy, queue("rt")).await.expect("declare");
        let rt_before = round_trip(&healthy).await;
        let before = rss_kib(p);
        let mut pushers = Vec::new();
        for _ in 0..16 {
            pushers.push(join(&router).await);
        }
        let text: String = "\u{1}".repeat(1_000_000);
        let stop = Instant::now() + Duration::from_secs(4);
        let (mut peak, mut rt_during, mut answers) = (before, 0f64, std::collections::HashMap::<String, usize>::new());
        while Instant::now() < stop {
            let calls = pushers.iter().map(|c| {
                let text = text.as_str();
                async move {
                    c.call(
                        "switchyard.queue.push",
                        vec![Value::from("rt")],
                        Dict::new().with("args", Value::List(vec![Value::from(text)])),
                    )
                    .await
                    .map(|_| "ok".to_string())
                    .unwrap_or_else(|e| e.to_string().chars().take(50).collect())
                }
            });
            let (results, (rss, rt)) = tokio::join!(futures_util::future::join_all(calls), async {
                tokio::time::sleep(Duration::from_millis(30)).await;
                (rss_kib(p), round_trip(&healthy).await)
            });
            peak = peak.max(rss);
            rt_during = rt_during.max(rt);
            for a in results {
                *answers.entry(a).or_default() += 1;
            }
        }
        let after = rss_kib(p);
        eprintln!(
            "16 sessions pushing 1 MB of control characters into a run-time queue: RSS {before} -> peak {peak} -> {after} KiB; healthy call {rt_before:.1} -> {rt_during:.1} ms; answers {answers:?}"
        );
        assert!(rt_during < 1000.0, "healthy call took {rt_during:.1} ms");
        assert!(answers.get("ok").copied().unwrap_or(0) <= 33, "{answers:?}");
    });
}

/// In a realm with roles, deleting is a call like any other: a session
/// whose role may declare and push but not call `switchyard.queue.delete`
/// cannot delete a queue (nor its jobs).
#[test]
fn delete_by_an_unauthorized_session_is_refused() {
    let router = Router::start(
        "[[realm.role]]\nname = \"anonymous\"\n\n\
         [[realm.role.permission]]\nuri = \"switchyard.queue.declare\"\nallow = [\"call\"]\n\n\
         [[realm.role.permission]]\nuri = \"switchyard.queue.push\"\nallow = [\"call\"]\n\n\
         [[realm.role.permission]]\nuri = \"switchyard.queue.stats\"\nallow = [\"call\"]\n\n\
         [[realm.role.permission]]\nuri = \"test.\"\nmatch = \"prefix\"\nallow = [\"call\"]\n",
    );
    runtime().block_on(async {
        let s = join(&router).await;
        declare(&s, queue("mine")).await.expect("declare");
        push(&s, "mine", vec![1]).await.expect("push");
        for force in [false, true] {
            let e = s
                .call(
                    "switchyard.queue.delete",
                    vec![Value::from("mine")],
                    Dict::new().with("force", force),
                )
                .await
                .expect_err("not authorized")
                .to_string();
            assert!(e.contains("wamp.error.not_authorized"), "{e}");
        }
        let st = stats(&s, "mine").await;
        assert_eq!(uint(&st, "ready"), 1, "{st:?}");
    });
}

/// Probe: idempotency keys under concurrent pushes: 16 sessions push the
/// same key at once (one job), then 16 x 100 distinct keys at once into a
/// queue that remembers 100: the cap holds and the newest keys are kept.
#[test]
fn idempotency_keys_under_concurrent_pushes() {
    let router = Router::start(REALM_BOUNDS);
    runtime().block_on(async {
        let s = join(&router).await;
        declare(&s, queue("idem").with("idempotency_max_keys", 100u64))
            .await
            .expect("declare");
        let mut sessions = Vec::new();
        for _ in 0..16 {
            sessions.push(join(&router).await);
        }
        let same = sessions.iter().map(|c| async move {
            let (_, kw) = c
                .call(
                    "switchyard.queue.push",
                    vec![Value::from("idem")],
                    Dict::new().with("idempotency_key", "the-same"),
                )
                .await
                .expect("push");
            uint(&kw, "id")
        });
        let ids: std::collections::HashSet<u64> = futures_util::future::join_all(same)
            .await
            .into_iter()
            .collect();
        assert_eq!(ids.len(), 1, "{ids:?}");
        let distinct = sessions.iter().enumerate().map(|(n, c)| async move {
            for i in 0..100 {
                c.call(
                    "switchyard.queue.push",
                    vec![Value::from("idem")],
                    Dict::new().with("idempotency_key", format!("s{n}-{i}")),
                )
                .await
                .expect("push");
            }
        });
        futures_util::future::join_all(distinct).await;
        let keys = uint(&stats(&s, "idem").await, "idempotency_keys");
        eprintln!("16 x 100 concurrent distinct keys, cap 100: {keys} remembered");
        assert!(keys <= 100, "{keys}");
        let (_, kw) = s
            .call(
                "switchyard.queue.push",
                vec![Value::from("idem")],
                Dict::new().with("idempotency_key", "s0-99"),
            )
            .await
            .expect("push");
        eprintln!(
            "newest key of session 0 still a duplicate: {:?}",
            kw.get_bool("duplicate")
        );
    });
}

/// Probe: deeply nested job arguments, crafted as raw MessagePack (the
/// client library would not build them): 200 000 levels are refused by the
/// decoder, 95 levels are stored and reach a JSON worker; the router stays
/// up.
#[test]
fn deeply_nested_job_arguments() {
    let router = Router::start(
        "[[realm.queue]]\nname = \"deep\"\ntarget = \"test.deep.work\"\nmax_attempts = 1\n",
    );
    let frame = |depth: usize| {
        let mut b = vec![0x96, 48, 0x01, 0x80, 0xb5];
        b.extend_from_slice(b"switchyard.queue.push");
        b.extend_from_slice(&[0x91, 0xa4]);
        b.extend_from_slice(b"deep");
        b.extend_from_slice(&[0x81, 0xa4]);
        b.extend_from_slice(b"args");
        b.extend(std::iter::repeat_n(0x91u8, depth));
        b.push(0xc0);
        b
    };
    for depth in [200_000usize, 95] {
        let mut raw = common::Raw::connect(router.rs_port, Serializer::MsgPack);
        raw.join("realm1");
        raw.send_frame(&frame(depth));
        let answer = format!("{:?}", raw.recv());
        eprintln!(
            "nested {depth} levels: {}",
            answer.chars().take(160).collect::<String>()
        );
        if depth > 100 {
            assert!(answer.contains("nested too deeply"), "{answer}");
        } else {
            assert!(answer.starts_with("Some(Result"), "{answer}");
        }
    }
    runtime().block_on(async {
        let worker = Session::connect(&router.ws_url(), "realm1", Serializer::Json)
            .await
            .expect("json worker");
        let _reg = worker
            .register("test.deep.work", |_, _| async move {
                Ok((Vec::new(), Dict::new()))
            })
            .await
            .expect("register");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let s = join(&router).await;
        let st = s
            .call(
                "switchyard.queue.stats",
                vec![Value::from("deep")],
                Dict::new(),
            )
            .await
            .expect("the router is up")
            .1;
        eprintln!("after a JSON worker: {st:?}");
        assert_eq!(uint(&st, "completed_total"), 1, "{st:?}");
    });
}

/// A healthy session on a thread and runtime of its own (so that the
/// attackers' answers decoded in the test process do not delay it): the
/// worst round trip of a cheap call, every 20 ms for `secs`.
fn healthy_probe(url: String, secs: u64) -> std::thread::JoinHandle<(f64, f64)> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let s = Session::connect(&url, "realm1", Serializer::MsgPack)
                .await
                .expect("join");
            let before = round_trip(&s).await;
            let stop = Instant::now() + Duration::from_secs(secs);
            let mut worst = 0f64;
            while Instant::now() < stop {
                worst = worst.max(round_trip(&s).await);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (before, worst)
        })
    })
}

/// 16 sessions calling `switchyard.queue.list` in a loop in a realm of 600
/// queues kept both cores busy: a healthy session's call (its own thread)
/// took up to 248 ms. Listings now run one at a time, on a blocking thread.
#[test]
fn list_spam_with_many_queues() {
    let router = Router::start(REALM_BOUNDS);
    let p = pid(&router);
    runtime().block_on(async {
        let s = join(&router).await;
        let declares = (0..600).map(|i| {
            let s = &s;
            async move { declare(s, queue(&format!("many{i:03}-{}", "n".repeat(100)))).await.expect("declare") }
        });
        futures_util::future::join_all(declares).await;
        let mut spammers = Vec::new();
        for _ in 0..16 {
            spammers.push(join(&router).await);
        }
        let probe = healthy_probe(router.rs_url(), 3);
        let t0 = cpu_ticks(p);
        let stop = Instant::now() + Duration::from_secs(3);
        let mut calls = 0;
        while Instant::now() < stop {
            let batch = spammers.iter().map(|c| async move {
                c.call("switchyard.queue.list", Vec::new(), Dict::new()).await.map(|_| ())
            });
            let results = futures_util::future::join_all(batch).await;
            calls += results.iter().filter(|r| r.is_ok()).count();
        }
        let ticks = cpu_ticks(p) - t0;
        let (rt_before, rt_during) = probe.join().expect("probe");
        eprintln!(
            "{calls} lists of 600 queues in 3 s: router CPU {ticks} ticks; healthy call {rt_before:.1} -> {rt_during:.1} ms"
        );
        assert!(rt_during < 100.0, "healthy call took {rt_during:.1} ms");
    });
}

/// The realm-wide bounds of run-time queues are counted again at start:
/// after a kill -9 and a restart the stored jobs still count (a restart
/// does not give the attacker a fresh budget).
#[test]
fn runtime_bounds_survive_a_restart() {
    let data = tempfile::tempdir().expect("tempdir");
    let extra = format!(
        "[realm.queue_limits]\nruntime_max_jobs = 1500\n\n[[realm.queue]]\nname = \"conf\"\ntarget = \"test.nobody\"\n\n[storage]\ndata_dir = \"{}\"\n",
        data.path().display()
    );
    let mut first = Router::start(&extra);
    runtime().block_on(async {
        let s = join(&first).await;
        declare(&s, queue("rtq")).await.expect("declare");
        push_tiny(&s, "rtq", 1000).await.expect("push_many");
    });
    first.signal(9);
    let second = Router::start(&extra);
    runtime().block_on(async {
        let s = join(&second).await;
        let e = push_tiny(&s, "rtq", 600).await.expect_err("still counted");
        assert!(e.contains("runtime_max_jobs"), "{e}");
        push_tiny(&s, "rtq", 500)
            .await
            .expect("what is left of the bound");
    });
}
