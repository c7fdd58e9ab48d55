//! Durable queues through the real router: the SIGKILL crash test, fencing of
//! late answers, topic bindings, HTTP targets, and what counts as an attempt
//! (a worker's or target's error, whatever it says; not the router's own
//! "no worker" answer). (Retry policies, dead letters
//! and the rest of the API are tested with Autobahn|Python in
//! tests/interop/python/test_queues*.py.)

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::free_port;
use common::queue::{stats, uint};
use parking_lot::Mutex;
use switchyard_client::{Dict, Serializer, Session, Value};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A router process on fresh ports over a data directory that outlives it.
struct Proc {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Proc {
    fn start(dir: &Path, name: &str, queues: &str) -> Proc {
        let port = free_port();
        let config = format!(
            "[[listener]]\ntype = \"rawsocket\"\naddress = \"127.0.0.1:{port}\"\n\n\
             [[realm]]\nname = \"realm1\"\n\n{queues}\n\n\
             [storage]\ndata_dir = \"{}\"\n",
            dir.join("data").display()
        );
        let cfg = dir.join(format!("{name}.toml"));
        std::fs::write(&cfg, config).expect("config");
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .current_dir(dir)
            .arg("--config")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn");
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "router did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Proc { child, port, log }
    }

    fn url(&self) -> String {
        format!("rs://127.0.0.1:{}", self.port)
    }

    fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = self.log_text();
        assert!(!log.contains("panicked"), "router panicked:\n{log}");
    }
}

/// Registers a worker for `procedure` that records each job's `n`.
async fn worker(url: &str, procedure: &str, seen: Arc<Mutex<HashMap<u64, u32>>>) -> Session {
    let s = Session::connect(url, "realm1", Serializer::MsgPack)
        .await
        .expect("worker joins");
    s.register_with(
        procedure,
        Dict::new().with("invoke", "roundrobin"),
        move |args, _| {
            let seen = seen.clone();
            async move {
                if let Some(Value::UInt(n)) = args.first() {
                    *seen.lock().entry(*n).or_default() += 1;
                }
                Ok((Vec::new(), Dict::new()))
            }
        },
    )
    .await
    .expect("register worker");
    s
}

/// Waits until the queue has nothing waiting or in flight.
async fn drained(s: &Session, queue: &str, within: Duration) -> Dict {
    let deadline = Instant::now() + within;
    loop {
        let st = stats(s, queue).await;
        if uint(&st, "ready") + uint(&st, "scheduled") + uint(&st, "in_flight") == 0 {
            return st;
        }
        assert!(Instant::now() < deadline, "queue not drained: {st:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A producer pushes one job to `queue` with `result_topic = topic`; its
/// session, its subscription to the topic and the first result event's kwargs.
async fn push_for_result(
    url: &str,
    queue: &str,
    topic: &str,
) -> (Session, switchyard_client::Subscription, Dict) {
    let p = Session::connect(url, "realm1", Serializer::Json)
        .await
        .expect("producer");
    let mut results = p.subscribe(topic).await.expect("subscribe");
    p.call(
        "switchyard.queue.push",
        vec![Value::from(queue)],
        Dict::new().with("result_topic", topic),
    )
    .await
    .expect("push");
    let ev = tokio::time::timeout(Duration::from_secs(5), results.recv())
        .await
        .expect("result in time")
        .expect("event");
    let kw = ev.kwargs().expect("kwargs");
    (p, results, kw)
}

/// A pseudo-random number of milliseconds in `range` (from the clock: the
/// moment of the kill only has to vary from run to run).
fn random_ms(range: std::ops::Range<u64>) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    range.start + nanos % (range.end - range.start)
}

const CRASH_QUEUE: &str = "[[realm.queue]]\nname = \"crash\"\ntarget = \"test.crash.work\"\n\
     retry = { kind = \"fixed\", times = 50, spacing = \"10ms\" }\nlease_timeout = \"2s\"\n\
     max_attempts = 100\nconcurrency = 32\n";

/// Producers push under load, the router is SIGKILLed at a random moment
/// (twice), restarted on the same store, and then every job whose push was
/// acknowledged has run, and every job the store ever held was completed
/// exactly once (its `completed_total` equals the distinct jobs the worker
/// saw).
#[test]
fn sigkill_under_load_loses_no_acknowledged_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    let acked: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let seen: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let next = Arc::new(AtomicU64::new(1));
    for round in 0..2 {
        let mut router = Proc::start(dir.path(), &format!("crash{round}"), CRASH_QUEUE);
        let url = router.url();
        let kill_after = Duration::from_millis(random_ms(300..900));
        rt.block_on(async {
            let _worker = worker(&url, "test.crash.work", seen.clone()).await;
            let mut producers = Vec::new();
            for _ in 0..4 {
                let s = Session::connect(&url, "realm1", Serializer::MsgPack)
                    .await
                    .expect("producer joins");
                let s = Arc::new(s);
                for _ in 0..16 {
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
                                    acked.lock().insert(n);
                                }
                                Err(_) => return,
                            }
                        }
                    }));
                }
            }
            tokio::time::sleep(kill_after).await;
            router.kill9();
            for p in producers {
                let _ = p.await;
            }
        });
        assert!(
            acked.lock().len() > 50 * (round + 1),
            "round {round}: too little load before the kill ({} acknowledged)",
            acked.lock().len()
        );
    }
    // Restart and drain.
    let router = Proc::start(dir.path(), "final", CRASH_QUEUE);
    let url = router.url();
    rt.block_on(async {
        let _worker = worker(&url, "test.crash.work", seen.clone()).await;
        let admin = Session::connect(&url, "realm1", Serializer::Json)
            .await
            .expect("admin joins");
        let st = drained(&admin, "crash", Duration::from_secs(60)).await;
        let seen = seen.lock();
        let acked = acked.lock();
        let lost: Vec<&u64> = acked
            .iter()
            .filter(|n| !seen.contains_key(n))
            .take(10)
            .collect();
        assert!(
            lost.is_empty(),
            "acknowledged jobs never ran: {lost:?} (of {})",
            acked.len()
        );
        assert_eq!(uint(&st, "dead"), 0, "{st:?}");
        assert_eq!(
            uint(&st, "completed_total"),
            seen.len() as u64,
            "each job the store held is completed exactly once: {st:?}"
        );
        let reruns: u32 = seen.values().map(|c| c - 1).sum();
        // At-least-once: only attempts in flight at a kill (at most the
        // queue's concurrency, 32) or completed but not yet committed (about
        // one group commit's worth) run again, never the jobs completed
        // before.
        assert!(
            reruns <= 2 * (32 + 96),
            "{reruns} re-runs for 2 kills: completed jobs ran again"
        );
        eprintln!(
            "crash test: {} acknowledged, {} jobs ran, {reruns} re-run after the kills",
            acked.len(),
            seen.len()
        );
    });
}

/// A worker that answers after its lease expired is ignored: the job is
/// retried, completed once, by the second attempt.
#[test]
fn late_answer_after_lease_expiry_is_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let router = Proc::start(
        dir.path(),
        "fence",
        "[[realm.queue]]\nname = \"slow\"\ntarget = \"test.slow\"\nlease_timeout = \"300ms\"\n\
         retry = { kind = \"fixed\", times = 3, spacing = \"10ms\" }\n",
    );
    let url = router.url();
    runtime().block_on(async {
        let calls = Arc::new(AtomicU64::new(0));
        let w = Session::connect(&url, "realm1", Serializer::MsgPack)
            .await
            .expect("worker");
        let c = calls.clone();
        w.register("test.slow", move |_, _| {
            let c = c.clone();
            async move {
                let attempt = c.fetch_add(1, Ordering::SeqCst) + 1;
                if attempt == 1 {
                    tokio::time::sleep(Duration::from_millis(900)).await;
                }
                Ok((vec![Value::UInt(attempt)], Dict::new()))
            }
        })
        .await
        .expect("register");
        let (p, mut results, kw) = push_for_result(&url, "slow", "test.results").await;
        assert_eq!(kw.get_str("status"), Some("completed"), "{kw:?}");
        assert_eq!(kw.get("attempt"), Some(&Value::UInt(2)), "{kw:?}");
        assert_eq!(
            kw.get("args"),
            Some(&Value::List(vec![Value::UInt(2)])),
            "the second attempt's result: {kw:?}"
        );
        // The first attempt's answer comes later and changes nothing.
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert!(
            tokio::time::timeout(Duration::from_millis(100), results.recv())
                .await
                .is_err(),
            "no second result event"
        );
        let st = stats(&p, "slow").await;
        assert_eq!(uint(&st, "completed_total"), 1, "{st:?}");
        assert_eq!(uint(&st, "retried_total"), 1, "{st:?}");
        assert_eq!(uint(&st, "in_flight") + uint(&st, "ready"), 0, "{st:?}");
    });
    let log = router.log_text();
    assert!(log.contains("lease expired"), "{log}");
    // The expired call was canceled (killnowait): the worker's late YIELD never
    // reaches the queue, and the cancellation's own ERROR is not taken for one.
    assert!(!log.contains("answered after its lease ended"), "{log}");
}

/// One accepted HTTP request: its request line, headers and body.
fn accept_one(l: &TcpListener, status: u16) -> (String, HashMap<String, String>, String) {
    let (mut s, _) = l.accept().expect("accept");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut reader = BufReader::new(s.try_clone().expect("clone"));
    let mut line = String::new();
    reader.read_line(&mut line).expect("request line");
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).expect("header");
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).expect("body");
    let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
    s.write_all(reply.as_bytes()).expect("reply");
    (line, headers, String::from_utf8_lossy(&body).into_owned())
}

/// A job with an HTTP target is POSTed, signed, with its payload; a status
/// outside `accepted_statuses` fails the attempt, an accepted one completes
/// the job.
#[test]
fn http_target_is_signed_and_retried_until_accepted() {
    let backend = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = backend.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let router = Proc::start(
        dir.path(),
        "http",
        &format!(
            "[[realm.queue]]\nname = \"hooks\"\n\
             target = {{ http = {{ url = \"http://127.0.0.1:{port}/jobs\", accepted_statuses = [200, 409] }} }}\n\
             retry = {{ kind = \"fixed\", times = 2, spacing = \"50ms\" }}\n\n\
             [realm.queue_http]\nkey = \"router\"\nsecret = \"0123456789abcdef0123\"\n"
        ),
    );
    let url = router.url();
    let server = std::thread::spawn(move || {
        let first = accept_one(&backend, 500);
        let second = accept_one(&backend, 409);
        (first, second)
    });
    runtime().block_on(async {
        let p = Session::connect(&url, "realm1", Serializer::Json)
            .await
            .expect("producer");
        p.call(
            "switchyard.queue.push",
            vec![Value::from("hooks")],
            Dict::new()
                .with("args", Value::List(vec![Value::UInt(7)]))
                .with("kwargs", Dict::new().with("to", "a@b.c")),
        )
        .await
        .expect("push");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let st = stats(&p, "hooks").await;
            if uint(&st, "completed_total") == 1 {
                assert_eq!(uint(&st, "retried_total"), 1, "{st:?}");
                break;
            }
            assert!(Instant::now() < deadline, "not completed: {st:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let ((line1, headers1, body1), (line2, _, _)) = server.join().expect("backend");
    assert!(
        line1.starts_with("POST /jobs?key=router&timestamp="),
        "{line1}"
    );
    assert!(line1.contains("&signature="), "{line1}");
    assert!(line2.starts_with("POST /jobs?"), "{line2}");
    assert_eq!(
        headers1.get("x-switchyard-queue").map(String::as_str),
        Some("hooks")
    );
    assert_eq!(
        headers1.get("x-switchyard-attempt").map(String::as_str),
        Some("1")
    );
    // The signature verifies as the bridge's own requests do.
    let query: HashMap<&str, &str> = line1
        .split_whitespace()
        .nth(1)
        .and_then(|t| t.split_once('?'))
        .map(|(_, q)| q.split('&').filter_map(|kv| kv.split_once('=')).collect())
        .expect("query");
    let unescape = |v: &str| v.replace("%3A", ":").replace("%3D", "=");
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"0123456789abcdef0123").expect("key");
    for part in [
        query["key"],
        &unescape(query["timestamp"]),
        query["seq"],
        query["nonce"],
    ] {
        mac.update(part.as_bytes());
    }
    mac.update(body1.as_bytes());
    use base64::Engine;
    let expected = base64::engine::general_purpose::URL_SAFE.encode(mac.finalize().into_bytes());
    assert_eq!(unescape(query["signature"]), expected);
    let body: serde_json::Value = serde_json::from_str(&body1).expect("json body");
    assert_eq!(
        body,
        serde_json::json!({"args": [7], "kwargs": {"to": "a@b.c"}})
    );
}

/// In a realm that never discloses callers to callees, the queues (router
/// sessions) still learn who calls them: a worker extends its lease with
/// `switchyard.queue.extend` and outlives `lease_timeout`.
#[test]
fn extend_works_in_a_realm_that_never_discloses_callers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let router = Proc::start(
        dir.path(),
        "never",
        "disclose_caller = \"never\"\n\n\
         [[realm.queue]]\nname = \"long\"\ntarget = \"test.long\"\nlease_timeout = \"300ms\"\n\
         retry = \"none\"\n",
    );
    let url = router.url();
    runtime().block_on(async {
        let w = Arc::new(
            Session::connect(&url, "realm1", Serializer::MsgPack)
                .await
                .expect("worker"),
        );
        let me = w.clone();
        w.register("test.long", move |_, _| {
            let me = me.clone();
            async move {
                let (_, kw) = me
                    .call(
                        "switchyard.queue.extend",
                        vec![],
                        Dict::new().with("by", "3s"),
                    )
                    .await
                    .map_err(|e| (format!("{e}"), vec![], Dict::new()))?;
                tokio::time::sleep(Duration::from_millis(800)).await;
                Ok((vec![], kw))
            }
        })
        .await
        .expect("register");
        let (_p, _results, kw) = push_for_result(&url, "long", "test.long.results").await;
        assert_eq!(kw.get_str("status"), Some("completed"), "{kw:?}");
        assert_eq!(kw.get("attempt"), Some(&Value::UInt(1)), "{kw:?}");
    });
}

/// The sum of the samples of metric `name` on the router's metrics page.
fn metric(port: u16, name: &str) -> u64 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("metrics connect");
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut page = String::new();
    s.read_to_string(&mut page).expect("read");
    page.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The job's status (`switchyard.queue.job`: attempts, state, last_error).
async fn job(s: &Session, id: u64) -> Dict {
    let (_, kw) = s
        .call("switchyard.queue.job", vec![Value::UInt(id)], Dict::new())
        .await
        .expect("job");
    match kw.get("status") {
        Some(Value::Dict(d)) => d.clone(),
        other => panic!("job {id}: status {other:?} in {kw:?}"),
    }
}

/// A worker that answers ERROR with `wamp.error.no_such_procedure` (or any
/// URI the router also uses) made an attempt like any other failure: the
/// attempts count up and the job ends in the dead letter after
/// `max_attempts` (it used to be handed back uncounted, forever). Whoever
/// answered decides, not the URI.
#[test]
fn a_worker_error_is_an_attempt_whatever_its_uri() {
    const URIS: [&str; 3] = [
        "wamp.error.no_such_procedure",
        "wamp.error.no_available_callee",
        "wamp.error.canceled",
    ];
    let queues: String = (0..URIS.len())
        .map(|i| {
            format!(
                "[[realm.queue]]\nname = \"q{i}\"\ntarget = \"test.fails{i}\"\nmax_attempts = 3\n\
                 retry = {{ kind = \"fixed\", times = 100, spacing = \"10ms\" }}\n\n"
            )
        })
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let router = Proc::start(dir.path(), "uris", &queues);
    let url = router.url();
    runtime().block_on(async {
        let w = Session::connect(&url, "realm1", Serializer::MsgPack)
            .await
            .expect("worker");
        let calls: Vec<Arc<AtomicU64>> = URIS.iter().map(|_| Arc::default()).collect();
        for (i, uri) in URIS.into_iter().enumerate() {
            let c = calls[i].clone();
            w.register(&format!("test.fails{i}"), move |_, _| {
                let c = c.clone();
                async move {
                    c.fetch_add(1, Ordering::SeqCst);
                    Err((
                        uri.to_string(),
                        vec![Value::from("the worker says so")],
                        Dict::new(),
                    ))
                }
            })
            .await
            .expect("register");
        }
        for (i, uri) in URIS.into_iter().enumerate() {
            let (p, _results, kw) =
                push_for_result(&url, &format!("q{i}"), &format!("test.result{i}")).await;
            assert_eq!(kw.get_str("status"), Some("dead"), "{uri}: {kw:?}");
            assert_eq!(kw.get("attempt"), Some(&Value::UInt(3)), "{uri}: {kw:?}");
            assert_eq!(kw.get_str("error"), Some(uri), "{uri}: {kw:?}");
            let id = uint(&kw, "job");
            let j = job(&p, id).await;
            assert_eq!(uint(&j, "attempts"), 3, "{uri}: {j:?}");
            assert_eq!(
                calls[i].load(Ordering::SeqCst),
                3,
                "{uri}: one call per attempt"
            );
            let st = stats(&p, &format!("q{i}")).await;
            assert_eq!(uint(&st, "dead"), 1, "{uri}: {st:?}");
        }
    });
}

/// The router's own "nobody registered it" answer is no attempt: a job
/// waits with `attempts` 0, without spinning (a queue's own target parks
/// its dispatcher; a job naming its own target is tried again once a
/// second, NO_WORKER_RETRY), and runs once a worker registers.
#[test]
fn no_worker_is_no_attempt_and_does_not_spin() {
    let metrics_port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let router = Proc::start(
        dir.path(),
        "noworker",
        &format!(
            "[[realm.queue]]\nname = \"later\"\ntarget = \"test.later\"\nmax_attempts = 2\n\
             retry = {{ kind = \"fixed\", times = 100, spacing = \"10ms\" }}\n\n\
             [[realm.queue]]\nname = \"own\"\ntarget = \"test.present\"\nmax_attempts = 2\n\
             retry = {{ kind = \"fixed\", times = 100, spacing = \"10ms\" }}\n\n\
             [[listener]]\ntype = \"websocket\"\naddress = \"127.0.0.1:{metrics_port}\"\nmetrics_path = \"/metrics\"\n"
        ),
    );
    let url = router.url();
    runtime().block_on(async {
        let p = Session::connect(&url, "realm1", Serializer::Json)
            .await
            .expect("producer");
        let mut results = p.subscribe("test.results").await.expect("subscribe");
        // Queue "own" has a worker for its own target, so its dispatcher runs;
        // the job names a target nobody registered.
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let _present = worker(&url, "test.present", seen.clone()).await;
        let mut ids = Vec::new();
        for (queue, target) in [("later", None), ("own", Some("test.own"))] {
            let mut kw = Dict::new().with("result_topic", "test.results");
            if let Some(t) = target {
                kw.insert("target", t);
            }
            let (args, _) = p
                .call("switchyard.queue.push", vec![Value::from(queue)], kw)
                .await
                .expect("push");
            match args.first() {
                Some(Value::UInt(id)) => ids.push(*id),
                other => panic!("push answered {other:?}"),
            }
        }
        let window = Duration::from_secs(3);
        tokio::time::sleep(window).await;
        let tries = metric(metrics_port, "switchyard_queue_no_worker_total");
        eprintln!("{tries} dispatch tries without a worker in {window:?}");
        assert!(
            (1..=5).contains(&tries),
            "{tries} dispatch tries in {window:?}: at most one a second for the job with its own target, none for the parked queue"
        );
        for id in &ids {
            let j = job(&p, *id).await;
            assert_eq!(uint(&j, "attempts"), 0, "{j:?}");
        }
        let _w1 = worker(&url, "test.later", seen.clone()).await;
        let _w2 = worker(&url, "test.own", seen.clone()).await;
        for _ in &ids {
            let ev = tokio::time::timeout(Duration::from_secs(5), results.recv())
                .await
                .expect("result in time")
                .expect("event");
            let kw = ev.kwargs().expect("kwargs");
            assert_eq!(kw.get_str("status"), Some("completed"), "{kw:?}");
            assert_eq!(kw.get("attempt"), Some(&Value::UInt(1)), "{kw:?}");
        }
        drained(&p, "later", Duration::from_secs(2)).await;
        drained(&p, "own", Duration::from_secs(2)).await;
    });
}

/// The same class for HTTP targets: a 404 from the target is an attempt
/// like any other refused status (the URL answered), and the job ends in
/// the dead letter after `max_attempts`.
#[test]
fn an_http_target_answering_404_is_an_attempt() {
    let backend = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = backend.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let router = Proc::start(
        dir.path(),
        "http404",
        &format!(
            "[[realm.queue]]\nname = \"hooks\"\nmax_attempts = 3\n\
             target = {{ http = {{ url = \"http://127.0.0.1:{port}/missing\" }} }}\n\
             retry = {{ kind = \"fixed\", times = 100, spacing = \"10ms\" }}\n"
        ),
    );
    let url = router.url();
    let server = std::thread::spawn(move || {
        for _ in 0..3 {
            accept_one(&backend, 404);
        }
        backend
    });
    runtime().block_on(async {
        let (p, _results, kw) = push_for_result(&url, "hooks", "test.http.results").await;
        assert_eq!(kw.get_str("status"), Some("dead"), "{kw:?}");
        assert_eq!(kw.get("attempt"), Some(&Value::UInt(3)), "{kw:?}");
        assert_eq!(
            kw.get_str("error"),
            Some("switchyard.queue.http.404"),
            "{kw:?}"
        );
        let j = job(&p, uint(&kw, "job")).await;
        assert_eq!(uint(&j, "attempts"), 3, "{j:?}");
    });
    let _backend = server.join().expect("backend");
}

/// Back-pressure (issue 21): a producer that keeps 16 pushes in flight
/// against workers that take 20 ms a job is slowed down to their pace; the
/// backlog stays near `backpressure.ready` instead of growing, every push
/// is acknowledged and every job runs. A queue nobody works refuses a push
/// after `max_wait` with `queue_full`, naming the backlog, and stores
/// nothing.
#[test]
fn backpressure_slows_producers_to_the_workers_pace() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = Proc::start(
        dir.path(),
        "bp",
        "[[realm.queue]]\nname = \"bp\"\ntarget = \"com.example.slow\"\nconcurrency = 4\n\
         backpressure = { ready = 20, max_wait = \"5s\" }\n\n\
         [[realm.queue]]\nname = \"idle\"\ntarget = \"com.example.nobody\"\n\
         backpressure = { ready = 2, max_wait = \"300ms\" }\n",
    );
    let url = p.url();
    let rt = runtime();
    rt.block_on(async {
        let w = Session::connect(&url, "realm1", Serializer::MsgPack)
            .await
            .expect("worker joins");
        let done = Arc::new(AtomicU64::new(0));
        let d = done.clone();
        w.register("com.example.slow", move |_, _| {
            let d = d.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                d.fetch_add(1, Ordering::Relaxed);
                Ok((Vec::new(), Dict::new()))
            }
        })
        .await
        .expect("register");
        let s = Arc::new(
            Session::connect(&url, "realm1", Serializer::MsgPack)
                .await
                .expect("producer joins"),
        );
        // Sample the backlog while the producer runs.
        let max_ready = Arc::new(AtomicU64::new(0));
        let sampling = {
            let (s, max_ready) = (s.clone(), max_ready.clone());
            tokio::spawn(async move {
                loop {
                    let ready = uint(&stats(&s, "bp").await, "ready");
                    max_ready.fetch_max(ready, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        };
        const JOBS: u64 = 300;
        let pushed = Arc::new(AtomicU64::new(0));
        let producers: Vec<_> = (0..16)
            .map(|_| {
                let (s, pushed) = (s.clone(), pushed.clone());
                tokio::spawn(async move {
                    while pushed.fetch_add(1, Ordering::Relaxed) < JOBS {
                        s.call(
                            "switchyard.queue.push",
                            vec![Value::from("bp")],
                            Dict::new(),
                        )
                        .await
                        .expect("every push is acknowledged (slowed down, not refused)");
                    }
                })
            })
            .collect();
        for p in producers {
            p.await.expect("producer");
        }
        sampling.abort();
        let max_ready = max_ready.load(Ordering::Relaxed);
        // 20 ready, plus the pushes in flight that one lease can release at once.
        assert!(
            max_ready <= 20 + 16,
            "the backlog grew to {max_ready} ready jobs"
        );
        assert!(
            max_ready >= 15,
            "the producer was not held back ({max_ready})"
        );
        drained(&s, "bp", Duration::from_secs(30)).await;
        assert_eq!(done.load(Ordering::Relaxed), JOBS);

        for _ in 0..2 {
            s.call(
                "switchyard.queue.push",
                vec![Value::from("idle")],
                Dict::new(),
            )
            .await
            .expect("under the mark");
        }
        let started = Instant::now();
        let e = s
            .call(
                "switchyard.queue.push",
                vec![Value::from("idle")],
                Dict::new(),
            )
            .await
            .expect_err("refused after max_wait");
        assert!(started.elapsed() >= Duration::from_millis(300));
        let text = e.to_string();
        assert!(
            text.contains("switchyard.queue.error.queue_full") && text.contains("backlogged"),
            "{text}"
        );
        assert_eq!(uint(&stats(&s, "idle").await, "ready"), 2);
    });
}
