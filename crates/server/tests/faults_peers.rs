//! Faults of peers, and what the other sessions see (docs/RELIABILITY.md,
//! "Faults: peers"): a callee that never answers, a subscriber that stops
//! reading (its TCP receive window full), and a half-open TCP connection
//! (a link dropped between two network namespaces the test makes; root
//! only). Real binary, real sockets; each test bounded in time.

mod common;

use std::io::{BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::cli::{run, text, Background};
use common::memory::{rss_mb, PeakRss};
use common::{args, Raw, Router};
use switchyard_client::{CallError, Dict, Serializer as ClientSerializer, Session, Value};
use switchyard_proto::{Message, Serializer};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// The tests of this file run one at a time: they measure throughput and
/// memory, which the others would disturb.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn error_uri(e: &CallError) -> String {
    e.uri.clone()
}

// ---------------------------------------------------------------------
// A callee that never answers.
// ---------------------------------------------------------------------

/// A callee hangs on one procedure: its callers get `wamp.error.timeout`
/// at their CALL.Options.timeout, the same callee's other procedure and
/// other callers are answered meanwhile, and the router's memory stays flat
/// over rounds of calls that time out, and of calls without a timeout whose
/// caller then leaves.
#[test]
fn a_callee_that_never_answers_costs_only_its_own_calls() {
    let _serial = serial();
    let r = Router::start("");
    let url = r.ws_url();
    block_on(async {
        let callee = Session::connect(&url, "realm1", ClientSerializer::Json)
            .await
            .expect("callee");
        callee
            .register("com.hang.never", |_, _| std::future::pending())
            .await
            .expect("register never");
        callee
            .register("com.hang.ok", |a, _| async move { Ok((a, Dict::new())) })
            .await
            .expect("register ok");
        let caller = Arc::new(
            Session::connect(&url, "realm1", ClientSerializer::Json)
                .await
                .expect("caller"),
        );
        let other = Session::connect(&url, "realm1", ClientSerializer::MsgPack)
            .await
            .expect("other caller");
        let payload =
            || switchyard_client::payload(vec![Value::from("x".repeat(1024))], Dict::new());

        // One call: the timeout is kept.
        let t0 = Instant::now();
        let e = caller
            .call_with(
                "com.hang.never",
                Dict::new().with("timeout", 300u64),
                payload(),
            )
            .await
            .expect_err("a hung callee gives no result");
        let took = t0.elapsed();
        assert_eq!(error_uri(&e), "wamp.error.timeout");
        assert!(
            took >= Duration::from_millis(290) && took < Duration::from_millis(1500),
            "{took:?}"
        );

        let before = rss_mb(&r);
        let peak = PeakRss::start(&r);
        let mut other_times = Vec::new();
        let mut timeouts = 0;
        for round in 0..5 {
            // 500 calls with a 300 ms timeout at once ...
            let calls: Vec<_> = (0..500)
                .map(|_| {
                    let c = caller.clone();
                    let p = payload();
                    tokio::spawn(async move {
                        c.call_with("com.hang.never", Dict::new().with("timeout", 300u64), p)
                            .await
                    })
                })
                .collect();
            // ... while another caller calls the callee's other procedure.
            for i in 0..20i64 {
                let t = Instant::now();
                let (a, _) = other
                    .call("com.hang.ok", vec![Value::from(i)], Dict::new())
                    .await
                    .expect("the callee's other procedure answers");
                assert_eq!(a, vec![Value::from(i)]);
                other_times.push(t.elapsed());
            }
            for c in calls {
                let e = c.await.expect("task").expect_err("no result");
                assert_eq!(error_uri(&e), "wamp.error.timeout", "round {round}");
                timeouts += 1;
            }
            // 500 calls without a timeout from a caller that then leaves:
            // the router forgets them with the caller.
            let leaver = Session::connect(&url, "realm1", ClientSerializer::Json)
                .await
                .expect("leaver");
            let leaver = Arc::new(leaver);
            let pending: Vec<_> = (0..500)
                .map(|_| {
                    let c = leaver.clone();
                    let p = payload();
                    tokio::spawn(async move { c.call_with("com.hang.never", Dict::new(), p).await })
                })
                .collect();
            tokio::time::sleep(Duration::from_millis(200)).await;
            leaver.leave().await.expect("leave");
            for p in pending {
                p.abort();
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let peak_mb = peak.peak();
        drop(peak);
        let after = rss_mb(&r);
        other_times.sort();
        let median_other = other_times[other_times.len() / 2];
        let worst_other = other_times[other_times.len() - 1];
        eprintln!(
            "hung callee: {timeouts} calls timed out; the other procedure's answers: median {median_other:?}, slowest {worst_other:?}; \
             router RSS before {before:.1} MiB, peak {peak_mb:.1} MiB, after {after:.1} MiB"
        );
        // Generous: the 500 calls fired at once load this (shared) machine.
        assert!(
            worst_other < Duration::from_secs(2),
            "the callee's other procedure was slowed down: {worst_other:?}"
        );
        assert!(
            after - before < 16.0,
            "the router holds {:.1} MiB more after 5000 abandoned calls",
            after - before
        );
        // Still alive and well: the callee's other procedure, and a new caller.
        let fresh = Session::connect(&url, "realm1", ClientSerializer::Cbor)
            .await
            .expect("fresh caller");
        let (a, _) = fresh
            .call("com.hang.ok", vec![Value::from("end")], Dict::new())
            .await
            .expect("ok");
        assert_eq!(a, vec![Value::from("end")]);
    });
}

// ---------------------------------------------------------------------
// A subscriber that stops reading.
// ---------------------------------------------------------------------

const EVENTS: usize = 20_000;
const EVENT_PAYLOAD: usize = 1024;
const QUEUE_BYTES: usize = 1 << 20;

/// `n` PUBLISH frames on `topic` (RawSocket framing, JSON), encoded once.
fn publish_frames(topic: &str, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * (EVENT_PAYLOAD + 64));
    let body = "e".repeat(EVENT_PAYLOAD);
    for i in 0..n {
        let m = Message::Publish {
            request: i as u64 + 1,
            options: Dict::new(),
            topic: topic.into(),
            payload: args(vec![Value::from(body.as_str())]),
        };
        let b = m.encode(Serializer::Json).expect("encode");
        let len = b.len();
        out.extend_from_slice(&[0, (len >> 16) as u8, (len >> 8) as u8, len as u8]);
        out.extend_from_slice(&b);
    }
    out
}

/// Counts EVENT frames (the large ones) on a raw subscriber until `n`.
fn count_events(c: Raw, n: usize) -> thread::JoinHandle<(usize, Instant)> {
    thread::spawn(move || {
        let mut rd = BufReader::with_capacity(256 * 1024, c.stream);
        let mut got = 0;
        // When the last event came (not when the read timed out waiting for
        // events the policy dropped).
        let mut last = Instant::now();
        let mut hdr = [0u8; 4];
        let mut body = vec![0u8; 64 * 1024];
        while got < n {
            if rd.read_exact(&mut hdr).is_err() {
                break;
            }
            let len = ((hdr[1] as usize) << 16) | ((hdr[2] as usize) << 8) | hdr[3] as usize;
            if body.len() < len {
                body.resize(len, 0);
            }
            if rd.read_exact(&mut body[..len]).is_err() {
                break;
            }
            if hdr[0] & 0x07 == 0 && len > EVENT_PAYLOAD {
                got += 1;
                last = Instant::now();
            }
        }
        (got, last)
    })
}

fn joined(r: &Router) -> Raw {
    let mut c = Raw::connect(r.rs_port, Serializer::Json);
    c.join("realm1");
    c
}

/// One run: a fast subscriber on a fresh topic (and, if `stalled`, a
/// subscriber that never reads), a publisher sending EVENTS events as fast
/// as the router takes them. Returns the events per second the fast
/// subscriber received and the stalled subscriber.
fn publish_run(r: &Router, topic: &str, stalled: bool) -> (f64, Option<Raw>) {
    let mut fast = joined(r);
    fast.subscribe(topic);
    let slow = stalled.then(|| {
        let mut s = joined(r);
        s.subscribe(topic);
        s
    });
    let frames = publish_frames(topic, EVENTS);
    let mut publisher = joined(r);
    let reader = count_events(fast, EVENTS);
    let t0 = Instant::now();
    publisher.stream.write_all(&frames).expect("publish");
    let (got, end) = reader.join().expect("fast subscriber");
    // Every event, as a rule; but a reader thread that a loaded machine
    // leaves unscheduled while the publisher writes everything at once is,
    // for those moments, a slow consumer too, and the `drop_events` policy
    // rightly drops some of its events (seen once at load 12: 16,885 of
    // 20,000). Its pace is what the test compares.
    assert!(
        got >= EVENTS * 8 / 10,
        "the fast subscriber got {got} of {EVENTS} events"
    );
    (got as f64 / end.duration_since(t0).as_secs_f64(), slow)
}

fn stalled_subscriber(policy: &str) {
    let _serial = serial();
    let r = Router::start(&format!(
        "[limits]\nslow_consumer = \"{policy}\"\noutbound_queue_bytes = {QUEUE_BYTES}\n"
    ));
    // Warm up (allocator, the first topic).
    publish_run(&r, "com.warm", false);
    let before = rss_mb(&r);
    let peak = PeakRss::start(&r);
    let (mut alone, mut beside) = (0f64, 0f64);
    let mut stalled = Vec::new();
    // Alternating, best of four each: the machine is shared, and the
    // best run is the one least disturbed by others.
    for round in 0..4 {
        let (a, _) = publish_run(&r, &format!("com.feed.alone{round}"), false);
        let (b, s) = publish_run(&r, &format!("com.feed.stalled{round}"), true);
        alone = alone.max(a);
        beside = beside.max(b);
        stalled.extend(s);
    }
    let peak_mb = peak.peak();
    drop(peak);
    let ratio = beside / alone;
    eprintln!(
        "stalled subscriber, policy {policy}: the fast subscriber got {alone:.0} events/s alone, \
         {beside:.0} events/s beside a subscriber that stopped reading ({:.0} %); \
         router RSS before {before:.1} MiB, peak {peak_mb:.1} MiB (outbound_queue_bytes {} MiB)",
        ratio * 100.0,
        QUEUE_BYTES >> 20
    );
    assert!(
        ratio >= 0.6,
        "the others' throughput fell to {:.0} % beside a stalled subscriber",
        ratio * 100.0
    );
    assert!(
        peak_mb - before < 24.0,
        "{:.1} MiB held for subscribers that stopped reading",
        peak_mb - before
    );
    let log = r.log_text();
    match policy {
        "drop_events" => {
            assert!(
                log.contains("dropping events (policy drop_events)"),
                "{log}"
            );
            // Still connected: it reads again, and gets answers.
            for (i, mut s) in stalled.into_iter().enumerate() {
                // It reads again: first what was queued for it (a request
                // sent while its queue is full would be answered with a
                // reply that does not fit, and that disconnects it: the
                // policy drops only EVENTs), then it is served as before.
                // Drained once nothing came for 2 s: with a loaded machine a
                // pause of the router's writer longer than a shorter wait
                // ended the drain early, and the request below then met a
                // full queue (a CI run).
                s.stream
                    .set_read_timeout(Some(Duration::from_secs(2)))
                    .expect("timeout");
                let mut events = 0;
                while let Some(m) = s.recv() {
                    assert!(matches!(m, Message::Event { .. }), "{m:?}");
                    events += 1;
                }
                s.stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("timeout");
                let t = common::health::round_trip(&mut s);
                assert!(t < Duration::from_secs(10), "stalled subscriber {i}: {t:?}");
                eprintln!("stalled subscriber {i}: read {events} queued events, then answered");
            }
        }
        _ => {
            assert!(log.contains("slow consumer: outbound queue holds"), "{log}");
            for mut s in stalled {
                assert!(s.closed(), "the stalled subscriber was disconnected");
            }
        }
    }
}

#[test]
fn a_subscriber_that_stops_reading_is_disconnected_and_others_keep_their_pace() {
    stalled_subscriber("disconnect");
}

#[test]
fn a_subscriber_that_stops_reading_loses_events_and_others_keep_their_pace() {
    stalled_subscriber("drop_events");
}

// ---------------------------------------------------------------------
// A half-open TCP connection.
// ---------------------------------------------------------------------

/// Two network namespaces joined by a veth pair: the router's (169.254.77.1)
/// and the clients' (169.254.77.2), removed when dropped. Link-local
/// addresses, reachable only between the two.
struct Netns {
    router: String,
    client: String,
    client_if: String,
    router_if: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), text(&out.stderr)))
    }
}

impl Netns {
    fn create() -> Result<Netns, String> {
        let id = std::process::id();
        let n = Netns {
            router: format!("sy-ho-r{id}"),
            client: format!("sy-ho-c{id}"),
            client_if: format!("syc{id}"),
            router_if: format!("syr{id}"),
        };
        let router_if = n.router_if.clone();
        ip(&["netns", "add", &n.router])?;
        ip(&["netns", "add", &n.client])?;
        ip(&[
            "link",
            "add",
            &router_if,
            "type",
            "veth",
            "peer",
            "name",
            &n.client_if,
        ])?;
        ip(&["link", "set", &router_if, "netns", &n.router])?;
        ip(&["link", "set", &n.client_if, "netns", &n.client])?;
        for (ns, dev, addr) in [
            (&n.router, &router_if, "169.254.77.1/30"),
            (&n.client, &n.client_if, "169.254.77.2/30"),
        ] {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "addr", "add", addr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(n)
    }

    /// `switchyard ARGS` inside namespace `ns`, with a clean environment.
    fn cli(ns: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_switchyard")])
            .args(args);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("SWITCHYARD_") {
                c.env_remove(k);
            }
        }
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.client]);
        let _ = ip(&["netns", "del", &self.router]);
        // Gone with its namespace, unless the setup failed before moving it.
        let _ = ip(&["link", "del", &self.router_if]);
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The session ids of the callees of `procedure`.
fn callees(ns: &str, procedure: &str) -> Vec<u64> {
    let url = ["--url", "ws://127.0.0.1:8080/ws"];
    let out = run(Netns::cli(
        ns,
        &[&["call", "wamp.registration.lookup", procedure][..], &url].concat(),
    ));
    let id = text(&out.stdout).trim().to_string();
    assert!(
        out.status.success() && id != "null",
        "lookup {procedure}: {id} {}",
        text(&out.stderr)
    );
    let out = run(Netns::cli(
        ns,
        &[&["call", "wamp.registration.list_callees", &id][..], &url].concat(),
    ));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)))
}

/// Calls `procedure` from inside the router's namespace; Ok(result) or
/// Err(stderr).
fn call_in(ns: &str, procedure: &str) -> Result<String, String> {
    let out = run(Netns::cli(
        ns,
        &[
            "call",
            procedure,
            "--url",
            "ws://127.0.0.1:8080/ws",
            "--timeout",
            "2s",
        ],
    ));
    if out.status.success() {
        Ok(text(&out.stdout).trim().to_string())
    } else {
        Err(text(&out.stderr))
    }
}

/// A client's link goes down while its sessions are open (no FIN, no RST:
/// the router's TCP connections stay half-open). The router's WebSocket
/// ping and RawSocket PING (1 s interval, 1 s timeout) find them dead: it
/// frees their sessions and registrations and publishes
/// `wamp.session.on_leave`, within interval + timeout + one tick; the
/// sessions on the other side of the router are not disturbed.
/// TCP_USER_TIMEOUT seen by the writer (its write fails) rather than by the
/// reader ("peer unreachable"): which one sees it first is a race.
const TIMED_OUT_WRITE: &str = "write failed: Connection timed out";

#[test]
fn half_open_connections_are_freed_by_the_keepalive() {
    if !is_root() {
        eprintln!(
            "SKIPPED half_open_connections_are_freed_by_the_keepalive: needs root (ip netns, veth)"
        );
        return;
    }
    let _serial = serial();
    let net = match Netns::create() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("SKIPPED half_open_connections_are_freed_by_the_keepalive: no network namespaces here ({e})");
            return;
        }
    };
    // With the RawSocket PINGs on, then with them off (the default): TCP
    // keepalive alone finds the dead RawSocket peer.
    let pings = "ping_interval = \"1s\"\nping_timeout = \"1s\"\n";
    let runs = [
        Run {
            limits: format!("{pings}rawsocket_ping_interval = \"1s\"\n"),
            victims: &[
                ("com.victim.ws", "ws://169.254.77.1:8080/ws"),
                ("com.victim.rs", "rs://169.254.77.1:8081"),
            ],
            // Silent for more than interval + timeout (2 s), noticed at the
            // next keepalive tick (1 s later at most), plus the polling.
            within: (Duration::from_millis(1500), Duration::from_secs(5)),
            // The keepalive tick, or TCP_USER_TIMEOUT if the poll's
            // INVOCATION went out first: both at interval + timeout.
            reason: &["keepalive timed out", "peer unreachable", TIMED_OUT_WRITE],
            pump: false,
        },
        Run {
            limits: pings.to_string(),
            victims: &[("com.victim.rs", "rs://169.254.77.1:8081")],
            // TCP: keepalive (idle 1 s, then 3 probes 1 s apart,
            // unanswered) or, once a message to the peer is in flight,
            // TCP_USER_TIMEOUT (interval + timeout: 2 s).
            within: (Duration::from_millis(1500), Duration::from_secs(9)),
            reason: &["peer unreachable", TIMED_OUT_WRITE],
            pump: false,
        },
        Run {
            limits: pings.to_string(),
            victims: &[("com.victim.ws", "ws://169.254.77.1:8080/ws")],
            // 4 MB of calls to the vanished callee fill the socket: the
            // writer waits on it, so the WebSocket keepalive (the writer's
            // timer) cannot run; TCP_USER_TIMEOUT (2 s) ends it.
            within: (Duration::from_millis(1500), Duration::from_secs(6)),
            reason: &["peer unreachable", TIMED_OUT_WRITE],
            pump: true,
        },
    ];
    for run in &runs {
        half_open_run(&net, run);
        ip(&["-n", &net.client, "link", "set", &net.client_if, "up"]).expect("link up");
    }
    drop(net);
}

/// One router configuration of the half-open test.
struct Run {
    limits: String,
    victims: &'static [(&'static str, &'static str)],
    /// How long after the link went down the victims must be freed.
    within: (Duration, Duration),
    /// What the router logs for each, one of (empty: not checked).
    reason: &'static [&'static str],
    /// Right after the link went down, 40 calls with 100 KB of arguments
    /// each go to the first victim (more than its socket takes).
    pump: bool,
}

fn half_open_run(net: &Netns, run: &Run) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("switchyard.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[listener]]\ntype = \"websocket\"\naddress = \"127.0.0.1:8080\"\n\n\
             [[listener]]\ntype = \"websocket\"\naddress = \"169.254.77.1:8080\"\n\n\
             [[listener]]\ntype = \"rawsocket\"\naddress = \"169.254.77.1:8081\"\n\n\
             [[realm]]\nname = \"realm1\"\n\n[limits]\n{}",
            run.limits
        ),
    )
    .expect("config");
    let log_path = dir.path().join("router.log");
    // In the temporary directory: the realm's queue store goes there.
    let mut router = Command::new("ip")
        .current_dir(dir.path())
        .args([
            "netns",
            "exec",
            &net.router,
            env!("CARGO_BIN_EXE_switchyard"),
        ])
        .arg("--config")
        .arg(&cfg)
        .args(["--log-level", "debug"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log"))
        .spawn()
        .expect("router");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !log().contains(" ready") {
        assert!(Instant::now() < deadline, "router not ready: {}", log());
        thread::sleep(Duration::from_millis(50));
    }
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        half_open_scenario(net, run, &log);
    }));
    let _ = router.kill();
    let _ = router.wait();
    if let Err(e) = result {
        eprintln!("router log:\n{}", log());
        std::panic::resume_unwind(e);
    }
}

fn half_open_scenario(net: &Netns, run: &Run, log: &dyn Fn() -> String) {
    let local = "ws://127.0.0.1:8080/ws";
    // Beside the router: a watcher of session meta events and a callee.
    let mut watcher = Background::spawn(Netns::cli(
        &net.router,
        &["subscribe", "wamp.session.on_leave", "--url", local],
    ));
    watcher.wait_stderr("subscribed to");
    let mut healthy = Background::spawn(Netns::cli(
        &net.router,
        &[
            "register",
            "com.healthy",
            "--url",
            local,
            "--",
            "echo",
            "\"fine\"",
        ],
    ));
    healthy.wait_stderr("registered com.healthy");
    // Across the link: callees which do not ping themselves (the router's
    // keepalive is under test).
    let mut victims = Vec::new();
    for (proc_, url) in run.victims {
        let mut v = Background::spawn(Netns::cli(
            &net.client,
            &[
                "register",
                proc_,
                "--url",
                url,
                "--ping-interval",
                "0",
                "--",
                "echo",
                "\"here\"",
            ],
        ));
        v.wait_stderr(&format!("registered {proc_}"));
        victims.push(v);
    }
    let mut sessions = Vec::new();
    for (proc_, _) in run.victims {
        assert_eq!(call_in(&net.router, proc_).as_deref(), Ok("\"here\""));
        let s = callees(&net.router, proc_);
        assert_eq!(s.len(), 1, "{proc_}: {s:?}");
        sessions.extend(s);
    }
    let healthy_session = callees(&net.router, "com.healthy");

    // The link goes down: nothing more crosses it, in either direction.
    ip(&["-n", &net.client, "link", "set", &net.client_if, "down"]).expect("link down");
    let cut = Instant::now();
    let mut pump = run.pump.then(|| {
        let script = format!(
            "for i in $(seq 40); do {} call {} \"$BIG\" --url {local} --timeout 1s \
             >/dev/null 2>&1 & done; wait",
            env!("CARGO_BIN_EXE_switchyard"),
            run.victims[0].0
        );
        Command::new("ip")
            .args(["netns", "exec", &net.router, "sh", "-c", &script])
            .env("BIG", "x".repeat(100_000))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pump")
    });
    let mut freed: Vec<(&str, Duration)> = Vec::new();
    let mut healthy_calls = 0;
    while freed.len() < run.victims.len() {
        assert!(
            cut.elapsed() < run.within.1 + Duration::from_secs(5),
            "half-open sessions still registered {:?} after the link went down; freed: {freed:?}",
            cut.elapsed()
        );
        for (p, _) in run.victims {
            if freed.iter().any(|(f, _)| f == p) {
                continue;
            }
            match call_in(&net.router, p) {
                Err(e) if e.contains("wamp.error.no_such_procedure") => {
                    freed.push((p, cut.elapsed()))
                }
                _ => {}
            }
        }
        // The other side of the router is not disturbed meanwhile.
        assert_eq!(
            call_in(&net.router, "com.healthy").as_deref(),
            Ok("\"fine\"")
        );
        healthy_calls += 1;
        thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "half-open, [limits] {}{}: registrations freed after {freed:?}; \
         {healthy_calls} calls to a healthy callee answered meanwhile",
        run.limits.trim().replace('\n', ", "),
        if run.pump {
            ", 4 MB of calls in flight"
        } else {
            ""
        }
    );
    for (p, took) in &freed {
        assert!(*took < run.within.1, "{p} freed after {took:?}");
        assert!(*took > run.within.0, "{p} freed after {took:?}: too early?");
    }
    if let Some(p) = pump.as_mut() {
        let _ = p.wait();
    }
    let text = log();
    let named: usize = run.reason.iter().map(|r| text.matches(r).count()).sum();
    assert!(
        named >= run.victims.len(),
        "the router names one of {:?} as the reason: {text}",
        run.reason
    );
    // The watcher saw the victims leave, and not the healthy one.
    watcher.stop(libc::SIGTERM);
    let left: Vec<u64> = watcher
        .stdout_lines()
        .iter()
        .filter_map(|e| e["args"][0].as_u64())
        .collect();
    for s in &sessions {
        assert!(left.contains(s), "no on_leave for session {s}: {left:?}");
    }
    for s in &healthy_session {
        assert!(!left.contains(s), "the healthy session left: {left:?}");
    }
    healthy.stop(libc::SIGTERM);
}
