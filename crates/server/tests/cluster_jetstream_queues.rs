//! Durable queues in cluster mode on JetStream (issue 16): a real `nats-server -js` and three
//! real nodes with `[cluster.queues] store = "jetstream"`. One node owns the realm's queues
//! (a KV lease); the others forward the `switchyard.queue.*` calls to it; its jobs go to
//! workers on any node. The owner is SIGKILLed under load: no acknowledged job is lost, each
//! runs, none is completed twice in the store, and dispatch resumes within the documented bound.
//!
//! Needs `nats-server` (scripts/install-nats.sh).

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::nats::{Nats, NatsCluster};
use common::{args, args_of, Raw, Router};
use switchyard_proto::{Dict, Message, Serializer, Value};

const QUEUES: &str = "[[realm.queue]]\nname = \"pdf\"\ntarget = \"com.example.render\"\n\
     retry = { kind = \"fixed\", times = 20, spacing = \"100ms\" }\nlease_timeout = \"5s\"\n\n\
     [[realm.queue]]\nname = \"mail\"\ntarget = \"com.example.mail\"\n\
     retry = { kind = \"fixed\", times = 1, spacing = \"100ms\" }\n\n\
     [[realm.queue]]\nname = \"prio\"\ntarget = \"com.example.prio\"\nconcurrency = 1\n";

/// The lease of these tests (the default is 3 s).
const LEASE: Duration = Duration::from_secs(1);
const CLUSTER: &str = "[cluster.queues]\nstore = \"jetstream\"\nlease = \"1s\"\n";

fn node(nats: &Nats, name: &str) -> Router {
    nats.node_full(name, QUEUES, CLUSTER)
}

/// Logged by a node once it serves the queues (after the log's replay).
const OWNER_LINE: &str = "queues recovered from the log; dispatching";

/// Three nodes; returns them with the index of the one that owns the queues.
fn three(nats: &Nats) -> (Vec<Router>, usize) {
    let nodes = vec![node(nats, "a"), node(nats, "b"), node(nats, "c")];
    let owner = owner_of(&nodes, &[0, 1, 2], Duration::from_secs(10));
    (nodes, owner)
}

/// Whether a node's log says it owns the queues now (its last word on it).
fn owns(node: &Router) -> bool {
    let log = node.log_text();
    let lost = [
        "no longer dispatches",
        "queues stopped on this node",
        "queues handed over",
    ]
    .iter()
    .filter_map(|l| log.rfind(l))
    .max();
    match (log.rfind(OWNER_LINE), lost) {
        (Some(got), Some(lost)) => got > lost,
        (got, _) => got.is_some(),
    }
}

/// The node among `candidates` that owns the queues, by their logs (waits up to `within` for
/// exactly one: during a change of owner the old one may not have noticed yet).
fn owner_of(nodes: &[Router], candidates: &[usize], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let owners: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|&i| owns(&nodes[i]))
            .collect();
        if owners.len() == 1 {
            return owners[0];
        }
        assert!(
            Instant::now() < deadline,
            "owners {owners:?} among {candidates:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn join(node: &Router) -> Raw {
    let mut c = Raw::connect(node.rs_port, Serializer::MsgPack);
    c.send(&Message::Hello {
        realm: "realm1".into(),
        details: Dict::new().with(
            "roles",
            Dict::new()
                .with("caller", Dict::new())
                .with("callee", Dict::new()),
        ),
    });
    c.expect("WELCOME");
    c
}

/// Calls `procedure`: its RESULT's kwargs, or the ERROR's URI and message.
fn try_call(
    c: &mut Raw,
    procedure: &str,
    values: Vec<Value>,
    kwargs: Dict,
) -> Result<Dict, (String, String)> {
    let request = c.req();
    c.send(&Message::Call {
        request,
        options: Dict::new(),
        procedure: procedure.into(),
        payload: switchyard_proto::Payload::values(values, Some(kwargs)),
    });
    match c.expect("RESULT") {
        Message::Result {
            request: r,
            payload,
            ..
        } if r == request => Ok(match payload.kwargs.map(|k| k.to_value()) {
            Some(Ok(Value::Dict(d))) => d,
            _ => Dict::new(),
        }),
        Message::Error {
            request: r,
            error,
            payload,
            ..
        } if r == request => {
            let text = match args_of(&payload).first() {
                Some(Value::Str(s)) => s.clone(),
                _ => String::new(),
            };
            Err((error, text))
        }
        other => panic!("{procedure}: unexpected {other:?}"),
    }
}

fn call(c: &mut Raw, procedure: &str, values: Vec<Value>, kwargs: Dict) -> Dict {
    try_call(c, procedure, values, kwargs).unwrap_or_else(|e| panic!("{procedure}: {e:?}"))
}

fn uint(d: &Dict, k: &str) -> u64 {
    d.get(k)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{k} in {d:?}"))
}

fn stats(c: &mut Raw, queue: &str) -> Dict {
    call(c, "switchyard.queue.stats", vec![queue.into()], Dict::new())
}

fn push(c: &mut Raw, queue: &str, value: u64, options: Dict) -> Result<Dict, (String, String)> {
    try_call(
        c,
        "switchyard.queue.push",
        vec![queue.into()],
        options.with("args", Value::List(vec![Value::UInt(value)])),
    )
}

/// Waits until `check` holds for the stats of `queue` read on `c`.
fn wait_stats(c: &mut Raw, queue: &str, what: &str, check: impl Fn(&Dict) -> bool) -> Dict {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // Unavailable while a takeover replays the log.
        let s = match try_call(c, "switchyard.queue.stats", vec![queue.into()], Dict::new()) {
            Ok(s) => s,
            Err((uri, m)) if uri == "switchyard.queue.error.unavailable" => {
                Dict::new().with("unavailable", m)
            }
            Err(e) => panic!("stats: {e:?}"),
        };
        if s.get("unavailable").is_none() && check(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: {s:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The next INVOCATION's first argument, answered with an ERROR (`fail`) or a YIELD.
fn serve_one(worker: &mut Raw, fail: bool) -> Option<u64> {
    loop {
        match worker.recv()? {
            // A call of a node that died: nothing to answer.
            Message::Interrupt { .. } => continue,
            m => return serve(worker, m, fail),
        }
    }
}

fn serve(worker: &mut Raw, m: Message, fail: bool) -> Option<u64> {
    match m {
        Message::Invocation {
            request, payload, ..
        } => {
            let v = args_of(&payload).first().and_then(Value::as_u64);
            if fail {
                worker.send(&Message::Error {
                    request_type: 68,
                    request,
                    details: Dict::new(),
                    error: "com.example.broken".into(),
                    payload: args(vec!["it broke".into()]),
                });
            } else {
                worker.send(&Message::Yield {
                    request,
                    options: Dict::new(),
                    payload: args(vec!["done".into()]),
                });
            }
            v
        }
        other => panic!("worker: unexpected {other:?}"),
    }
}

fn others(owner: usize) -> (usize, usize) {
    let rest: Vec<usize> = (0..3).filter(|&i| i != owner).collect();
    (rest[0], rest[1])
}

#[test]
fn a_job_pushed_on_one_node_runs_once_on_a_worker_of_another() {
    let nats = Nats::start();
    let (nodes, owner) = three(&nats);
    let (x, y) = others(owner);
    // The worker on y; the producer on x; the queues on the owner.
    let mut worker = join(&nodes[y]);
    worker.register("com.example.render");
    let mut producer = join(&nodes[x]);
    let pushed = push(&mut producer, "pdf", 4711, Dict::new()).expect("push");
    assert_eq!(pushed.get("duplicate"), Some(&Value::Bool(false)));
    assert_eq!(serve_one(&mut worker, false), Some(4711));
    for i in [x, y, owner] {
        let mut c = join(&nodes[i]);
        let s = wait_stats(&mut c, "pdf", "completed once", |s| {
            uint(s, "completed_total") == 1
        });
        assert_eq!(uint(&s, "retried_total"), 0, "{s:?}");
        assert_eq!(uint(&s, "ready") + uint(&s, "in_flight"), 0, "{s:?}");
    }
    // Run once: no second invocation.
    worker
        .stream
        .set_read_timeout(Some(Duration::from_millis(700)))
        .expect("timeout");
    assert!(worker.recv().is_none(), "the job ran twice");
}

#[test]
fn idempotency_keys_hold_across_nodes() {
    let nats = Nats::start();
    let (nodes, owner) = three(&nats);
    let (x, y) = others(owner);
    let key = || Dict::new().with("idempotency_key", "order-42");
    let first = push(&mut join(&nodes[x]), "pdf", 1, key()).expect("push on x");
    let id = uint(&first, "id");
    for i in [y, owner] {
        let again = push(&mut join(&nodes[i]), "pdf", 2, key()).expect("push again");
        assert_eq!(uint(&again, "id"), id, "same job on node {i}");
        assert_eq!(again.get("duplicate"), Some(&Value::Bool(true)));
    }
    let s = stats(&mut join(&nodes[y]), "pdf");
    assert_eq!(uint(&s, "ready"), 1, "one job: {s:?}");
}

#[test]
fn retry_dead_letter_delay_and_priority_work_across_nodes() {
    let nats = Nats::start();
    let (nodes, owner) = three(&nats);
    let (x, y) = others(owner);
    let mut producer = join(&nodes[x]);
    // Retry, then dead letter: `mail` allows one retry; its worker on y always fails.
    let mut failing = join(&nodes[y]);
    failing.register("com.example.mail");
    let id = uint(
        &push(&mut producer, "mail", 7, Dict::new()).expect("push"),
        "id",
    );
    assert_eq!(serve_one(&mut failing, true), Some(7));
    assert_eq!(serve_one(&mut failing, true), Some(7), "retried once");
    let mut operator = join(&nodes[owner]);
    let s = wait_stats(&mut operator, "mail", "dead-lettered", |s| {
        uint(s, "dead") == 1
    });
    assert_eq!(uint(&s, "retried_total"), 1, "{s:?}");
    let dead = try_call(
        &mut join(&nodes[x]),
        "switchyard.queue.dead",
        vec!["mail".into()],
        Dict::new(),
    );
    assert!(dead.is_ok(), "{dead:?}");
    // Requeued from another node: it runs again.
    call(
        &mut join(&nodes[y]),
        "switchyard.queue.requeue",
        vec!["mail".into()],
        Dict::new().with("jobs", Value::List(vec![Value::UInt(id)])),
    );
    assert_eq!(serve_one(&mut failing, false), Some(7), "requeued");

    // Priority: with no worker, a low then a high job wait; the high one runs first.
    push(
        &mut producer,
        "prio",
        1,
        Dict::new().with("priority", "low"),
    )
    .expect("low");
    push(
        &mut producer,
        "prio",
        2,
        Dict::new().with("priority", "high"),
    )
    .expect("high");
    let mut worker = join(&nodes[y]);
    worker.register("com.example.prio");
    assert_eq!(serve_one(&mut worker, false), Some(2), "high first");
    assert_eq!(serve_one(&mut worker, false), Some(1));

    // Delay: a job pushed with a delay does not run before it.
    let mut render = join(&nodes[y]);
    render.register("com.example.render");
    let pushed = Instant::now();
    push(&mut producer, "pdf", 9, Dict::new().with("delay", "1500ms")).expect("delayed");
    assert_eq!(serve_one(&mut render, false), Some(9));
    let waited = pushed.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(4),
        "ran after {waited:?}"
    );
}

#[test]
fn the_owner_killed_under_load_loses_no_acknowledged_job() {
    const PER_PRODUCER: u64 = 150;
    let nats = Nats::start();
    let (mut nodes, owner) = three(&nats);
    let (x, y) = others(owner);
    // The worker, on a surviving node: every job value it saw, with when.
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<HashMap<u64, Vec<Instant>>>> = Arc::default();
    let mut worker = join(&nodes[y]);
    worker.register("com.example.render");
    worker
        .stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let worker_thread = {
        let (stop, seen) = (stop.clone(), seen.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(v) = serve_one_opt(&mut worker) {
                    seen.lock()
                        .unwrap()
                        .entry(v)
                        .or_default()
                        .push(Instant::now());
                }
            }
        })
    };
    // Producers on the two surviving nodes: each value pushed with a key until acknowledged.
    let acked: Arc<Mutex<Vec<u64>>> = Arc::default();
    let producers: Vec<_> = [x, y]
        .iter()
        .enumerate()
        .map(|(p, &n)| {
            let port = nodes[n].rs_port;
            let acked = acked.clone();
            std::thread::spawn(move || {
                let mut c = join_port(port);
                // A push forwarded to the owner as it dies waits for the forwarding timeout.
                c.stream
                    .set_read_timeout(Some(Duration::from_secs(20)))
                    .expect("timeout");
                let mut refused = 0u32;
                for i in 0..PER_PRODUCER {
                    let value = (p as u64 + 1) * 10_000 + i;
                    let deadline = Instant::now() + Duration::from_secs(30);
                    loop {
                        let key = Dict::new().with("idempotency_key", format!("v{value}"));
                        match push(&mut c, "pdf", value, key) {
                            Ok(_) => break,
                            Err((uri, _)) => {
                                assert!(uri.starts_with("switchyard.queue.error."), "{uri}");
                                refused += 1;
                                assert!(Instant::now() < deadline, "push of {value} refused");
                                std::thread::sleep(Duration::from_millis(50));
                            }
                        }
                    }
                    acked.lock().unwrap().push(value);
                    std::thread::sleep(Duration::from_millis(5));
                }
                refused
            })
        })
        .collect();
    // Kill the owner once some jobs are acknowledged (and some running).
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < 60 {
        assert!(Instant::now() < deadline, "pushes too slow");
        std::thread::sleep(Duration::from_millis(5));
    }
    nodes[owner].signal(libc::SIGKILL);
    let killed = Instant::now();
    let refused: u32 = producers.into_iter().map(|p| p.join().unwrap()).sum();
    let acked: HashSet<u64> = acked.lock().unwrap().iter().copied().collect();
    assert_eq!(acked.len() as u64, 2 * PER_PRODUCER);
    // Every acknowledged job runs.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let missing = acked
            .iter()
            .filter(|v| !seen.lock().unwrap().contains_key(v))
            .count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} acknowledged jobs never ran"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Each job is completed once in the store: as many completions as jobs, none waiting.
    let mut c = join(&nodes[x]);
    let s = wait_stats(&mut c, "pdf", "all completed", |s| {
        uint(s, "ready") + uint(s, "in_flight") + uint(s, "scheduled") == 0
    });
    assert_eq!(uint(&s, "completed_total"), 2 * PER_PRODUCER, "{s:?}");
    assert_eq!(uint(&s, "dead"), 0, "{s:?}");
    // Dispatch resumed on a survivor within the bound: 1.5 × lease for the takeover, plus the
    // log's replay and the first dispatch.
    let new_owner = owner_of(&nodes, &[x, y], Duration::from_secs(1));
    let resumed = seen
        .lock()
        .unwrap()
        .values()
        .flatten()
        .filter(|t| **t > killed + Duration::from_millis(20))
        .min()
        .copied()
        .expect("jobs ran after the kill");
    let took = resumed - killed;
    let bound = LEASE * 3 / 2 + Duration::from_secs(1);
    eprintln!(
        "owner {owner} killed; node {new_owner} took over; dispatch resumed after {took:?} \
         (bound {bound:?}); {refused} pushes refused meanwhile and retried; {} runs for {} jobs",
        seen.lock().unwrap().values().map(Vec::len).sum::<usize>(),
        acked.len()
    );
    assert!(
        took <= bound,
        "dispatch resumed after {took:?}, bound {bound:?}"
    );
    stop.store(true, Ordering::Relaxed);
    worker_thread.join().unwrap();
}

fn join_port(port: u16) -> Raw {
    let mut c = Raw::connect(port, Serializer::MsgPack);
    c.send(&Message::Hello {
        realm: "realm1".into(),
        details: Dict::new().with("roles", Dict::new().with("caller", Dict::new())),
    });
    c.expect("WELCOME");
    c
}

/// Like [`serve_one`] (answers YIELD), `None` on a read timeout.
fn serve_one_opt(worker: &mut Raw) -> Option<u64> {
    serve_one(worker, false)
}

/// Messages in JetStream stream `name` (the monitoring endpoint's `/jsz`).
fn stream_messages(nats: &Nats, name: &str) -> u64 {
    fn find(v: &serde_json::Value, name: &str) -> Option<u64> {
        match v {
            serde_json::Value::Object(m) => {
                if m.get("name").and_then(|n| n.as_str()) == Some(name) {
                    if let Some(n) = m
                        .get("state")
                        .and_then(|s| s.get("messages"))
                        .and_then(|n| n.as_u64())
                    {
                        return Some(n);
                    }
                }
                m.values().find_map(|v| find(v, name))
            }
            serde_json::Value::Array(l) => l.iter().find_map(|v| find(v, name)),
            _ => None,
        }
    }
    let jsz = common::nats::http_get(nats.monitor, "/jsz?accounts=true&streams=true");
    find(&jsz, name).unwrap_or_else(|| panic!("no stream {name} in {jsz}"))
}

#[test]
fn a_takeover_replays_a_compacted_log() {
    const JOBS: u64 = 100;
    let nats = Nats::start();
    let cluster =
        "[cluster.queues]\nstore = \"jetstream\"\nlease = \"1s\"\ncheckpoint_entries = 16\n";
    let mut nodes = vec![
        nats.node_full("a", QUEUES, cluster),
        nats.node_full("b", QUEUES, cluster),
    ];
    let owner = owner_of(&nodes, &[0, 1], Duration::from_secs(10));
    let other = 1 - owner;
    // One entry per push (one at a time), no worker: the jobs wait.
    let mut producer = join(&nodes[other]);
    for v in 0..JOBS {
        push(&mut producer, "pdf", v, Dict::new()).expect("push");
    }
    // Checkpoints purged the log: far fewer messages than entries written.
    let kept = stream_messages(&nats, "SWYQ_sy_realm1");
    assert!(
        kept < 40,
        "the log holds {kept} messages after {JOBS} pushes"
    );
    nodes[owner].signal(libc::SIGKILL);
    assert_eq!(owner_of(&nodes, &[other], Duration::from_secs(10)), other);
    // The survivor recovered every job from the checkpoint and the entries after it.
    let mut operator = join(&nodes[other]);
    wait_stats(&mut operator, "pdf", "jobs recovered", |s| {
        uint(s, "ready") == JOBS
    });
    let mut worker = join(&nodes[other]);
    worker.register("com.example.render");
    let mut seen = HashSet::new();
    while seen.len() < JOBS as usize {
        let v = serve_one(&mut worker, false).expect("a job");
        seen.insert(v);
    }
    let s = wait_stats(&mut operator, "pdf", "all completed", |s| {
        uint(s, "completed_total") == JOBS
    });
    assert_eq!(uint(&s, "ready") + uint(&s, "in_flight"), 0, "{s:?}");
}

#[test]
fn a_paused_owner_that_wakes_up_is_fenced() {
    let nats = Nats::start();
    let nodes = [node(&nats, "a"), node(&nats, "b")];
    let owner = owner_of(&nodes, &[0, 1], Duration::from_secs(10));
    let other = 1 - owner;
    let mut worker = join(&nodes[other]);
    worker.register("com.example.render");
    let mut producer = join(&nodes[other]);
    push(&mut producer, "pdf", 5, Dict::new()).expect("push");
    // The owner hands the job to the worker; the worker holds it; the owner freezes.
    let first = match worker.expect("INVOCATION") {
        Message::Invocation { request, .. } => request,
        other => panic!("{other:?}"),
    };
    let pid = nodes[owner].child.as_ref().expect("running").id() as i32;
    // SAFETY: kill(2) on a child this test spawned and still owns.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let paused = Instant::now();
    // The survivor takes over, counts the frozen owner's attempt as lost and runs the job again.
    let second = loop {
        match worker.expect("INVOCATION") {
            Message::Invocation {
                request, payload, ..
            } => {
                assert_eq!(args_of(&payload), vec![Value::UInt(5)]);
                break request;
            }
            Message::Interrupt { .. } => continue,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(owner_of(&nodes, &[other], Duration::from_secs(1)), other);
    // Both attempts answer: the second completes the job on the new owner; the first reaches
    // the old owner when it wakes (before the heartbeats declare it dead).
    for request in [second, first] {
        worker.send(&Message::Yield {
            request,
            options: Dict::new(),
            payload: args(vec!["done".into()]),
        });
    }
    let mut operator = join(&nodes[other]);
    wait_stats(&mut operator, "pdf", "completed", |s| {
        uint(s, "completed_total") == 1
    });
    std::thread::sleep(Duration::from_millis(2500).saturating_sub(paused.elapsed()));
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    // The old owner finds its term over and stops; its late completion changes nothing.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !nodes[owner]
        .log_text()
        .contains("this node no longer dispatches the realm's queues")
    {
        assert!(Instant::now() < deadline, "{}", nodes[owner].log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let s = stats(&mut operator, "pdf");
    assert_eq!(uint(&s, "completed_total"), 1, "completed twice: {s:?}");
    assert_eq!(uint(&s, "ready") + uint(&s, "in_flight"), 0, "{s:?}");
    let log = nodes[owner].log_text();
    let why = log
        .lines()
        .filter(|l| l.contains("fenced") || l.contains("no longer dispatches"))
        .collect::<Vec<_>>()
        .join("\n");
    eprintln!("the old owner on waking:\n{why}");
    // Its calls are forwarded to the new owner, as on any other node.
    let s = stats(&mut join(&nodes[owner]), "pdf");
    assert_eq!(uint(&s, "completed_total"), 1, "{s:?}");
}

#[test]
fn the_queues_survive_a_nats_restart() {
    const JOBS: u64 = 20;
    let mut nats = Nats::start();
    let (nodes, owner) = three(&nats);
    let (x, y) = others(owner);
    let mut producer = join(&nodes[x]);
    producer
        .stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    for v in 0..JOBS {
        push(&mut producer, "pdf", v, Dict::new()).expect("push");
    }
    // NATS dies (SIGKILL) and comes back on the same store; then the owner dies too, so the
    // jobs can only come from what NATS kept.
    nats.restart();
    let mut nodes = nodes;
    nodes[owner].signal(libc::SIGKILL);
    let new_owner = owner_of(&nodes, &[x, y], Duration::from_secs(15));
    eprintln!("node {new_owner} took over after the NATS restart");
    // The jobs acknowledged before are there; the queues take pushes again.
    let mut operator = join(&nodes[y]);
    wait_stats(&mut operator, "pdf", "jobs kept", |s| {
        uint(s, "ready") == JOBS
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err((uri, m)) = push(&mut producer, "pdf", JOBS, Dict::new()) {
        assert!(Instant::now() < deadline, "{uri}: {m}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut worker = join(&nodes[y]);
    worker.register("com.example.render");
    let mut seen = HashSet::new();
    while seen.len() <= JOBS as usize {
        seen.insert(serve_one(&mut worker, false).expect("a job"));
    }
    wait_stats(&mut operator, "pdf", "all completed", |s| {
        uint(s, "completed_total") == JOBS + 1
    });
}

#[test]
fn losing_a_nats_server_of_an_r3_cluster_loses_no_job() {
    lose_a_nats_server("the log's leader", |nats| {
        nats.stream_leader("SWYQ_sy_realm1")
    });
}

#[test]
fn losing_the_nats_server_leading_the_ownership_bucket_loses_no_job() {
    // The owner cannot renew its lease until the bucket has a new leader: the queues move.
    lose_a_nats_server("the ownership bucket's leader", |nats| {
        nats.stream_leader("KV_SWYQ_OWNERS_sy")
    });
}

#[test]
fn losing_the_jetstream_meta_leader_loses_no_job() {
    lose_a_nats_server("JetStream's meta leader", |nats| {
        nats.meta_leader().expect("a meta leader")
    });
}

/// Three nodes over a three-server NATS cluster with `replicas = 3`: half the jobs pushed, the
/// server `lost` names SIGKILLed, the other half pushed (acknowledged again within a bound),
/// then the node owning the queues SIGKILLed: every job runs from what the two NATS servers
/// left hold, and completes once.
fn lose_a_nats_server(what: &str, lost: impl Fn(&NatsCluster) -> usize) {
    const JOBS: u64 = 40;
    let mut nats = NatsCluster::start(3);
    let config = |name: &str| {
        format!(
            "{QUEUES}\n[cluster]\nnode = \"{name}\"\nnats = [{}]\nsubject_prefix = \"sy\"\n\
             [cluster.queues]\nstore = \"jetstream\"\nreplicas = 3\nlease = \"2s\"\n",
            nats.toml_urls(0)
        )
    };
    let mut nodes = vec![
        Router::start(&config("a")),
        Router::start(&config("b")),
        Router::start(&config("c")),
    ];
    let owner = owner_of(&nodes, &[0, 1, 2], Duration::from_secs(15));
    let (x, _) = others(owner);
    let mut producer = join(&nodes[x]);
    producer
        .stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    // JetStream elects new leaders after a server's loss: seconds, more on a loaded machine.
    let mut push_until_acked = |v: u64| {
        let deadline = Instant::now() + Duration::from_secs(60);
        let key = || Dict::new().with("idempotency_key", format!("k{v}"));
        while let Err((uri, m)) = push(&mut producer, "pdf", v, key()) {
            assert!(Instant::now() < deadline, "push {v}: {uri}: {m}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    for v in 0..JOBS / 2 {
        push_until_acked(v);
    }
    let leader = lost(&nats);
    nats.servers[leader].stop();
    let killed = Instant::now();
    push_until_acked(JOBS / 2);
    let back = killed.elapsed();
    for v in JOBS / 2 + 1..JOBS {
        push_until_acked(v);
    }
    // Whichever node dispatches now (the loss may have moved the lease) dies too, so the jobs
    // can only come from the two NATS servers left.
    let owner = owner_of(&nodes, &[0, 1, 2], Duration::from_secs(30));
    let (x, y) = others(owner);
    nodes[owner].signal(libc::SIGKILL);
    let new_owner = owner_of(&nodes, &[x, y], Duration::from_secs(60));
    eprintln!(
        "NATS server s{leader} ({what}) killed: pushes acknowledged again after {back:?}; \
         then node {owner} killed; node {new_owner} took over"
    );
    // The stream's new leader is elected within seconds; the owner waits for it (LOG_OUTAGE)
    // rather than handing over, so the wait is that election, not a chain of takeovers.
    assert!(
        back < Duration::from_secs(20),
        "pushes came back {back:?} after the loss of {what}; the nodes' logs:\n{}",
        nodes
            .iter()
            .map(|n| n
                .log_text()
                .lines()
                .filter(|l| l.contains("queue") && !l.contains("DEBUG"))
                .collect::<Vec<_>>()
                .join("\n"))
            .collect::<Vec<_>>()
            .join("\n---\n")
    );
    let mut worker = join(&nodes[y]);
    worker.register("com.example.render");
    worker
        .stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < JOBS as usize {
        match serve_one(&mut worker, false) {
            Some(v) => {
                seen.insert(v);
            }
            None => assert!(
                Instant::now() < deadline,
                "{} of {JOBS} jobs ran; the survivors' logs:\n{}",
                seen.len(),
                [x, y]
                    .iter()
                    .map(|&i| nodes[i]
                        .log_text()
                        .lines()
                        .filter(|l| l.contains("cluster: ") && l.contains("queue"))
                        .collect::<Vec<_>>()
                        .join("\n"))
                    .collect::<Vec<_>>()
                    .join("\n---\n")
            ),
        }
    }
    let mut operator = join(&nodes[x]);
    let s = wait_stats(&mut operator, "pdf", "all completed", |s| {
        uint(s, "completed_total") == JOBS
    });
    assert_eq!(uint(&s, "ready") + uint(&s, "in_flight"), 0, "{s:?}");
}

#[test]
fn a_stopping_owner_hands_its_queues_over_at_once() {
    // A lease long enough that a takeover by expiry would be plain.
    let cluster = "[cluster.queues]\nstore = \"jetstream\"\nlease = \"4s\"\n";
    let mut nodes = vec![];
    let nats = Nats::start();
    nodes.push(nats.node_full("a", QUEUES, cluster));
    nodes.push(nats.node_full("b", QUEUES, cluster));
    let owner = owner_of(&nodes, &[0, 1], Duration::from_secs(10));
    let other = 1 - owner;
    let mut producer = join(&nodes[other]);
    push(&mut producer, "pdf", 3, Dict::new()).expect("push");
    let stopping = Instant::now();
    assert!(nodes[owner].terminate().success());
    assert!(
        nodes[owner].log_text().contains("queues handed over"),
        "{}",
        nodes[owner].log_text()
    );
    assert_eq!(owner_of(&nodes, &[other], Duration::from_secs(10)), other);
    let took = stopping.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "took over after {took:?}:\n{}\n{}",
        nodes[owner]
            .log_text()
            .lines()
            .filter(|l| l.contains("queues") || l.contains("stopping"))
            .collect::<Vec<_>>()
            .join("\n"),
        nodes[other]
            .log_text()
            .lines()
            .filter(|l| l.contains("queue"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let mut worker = join(&nodes[other]);
    worker.register("com.example.render");
    assert_eq!(serve_one(&mut worker, false), Some(3));
    eprintln!("handed over in {took:?} (lease 4s)");
}

/// The bridge key of the HTTP test.
const BACKEND: (&str, &str) = ("backend", "backend-secret-0123456789");

/// `POST /queues/{queue}/jobs` on `port`, signed, with an idempotency key.
fn http_push(port: u16, queue: &str, nonce: &str, key: &str, body: &str) -> common::http::Reply {
    let path = format!("/queues/{queue}/jobs");
    let q = common::http::bound_query(BACKEND, "POST", &path, nonce, Some(key), body);
    let headers = format!("Content-Type: application/json\r\nIdempotency-Key: {key}\r\n");
    common::http::request(port, "POST", &format!("{path}?{q}"), &headers, body)
}

#[test]
fn the_http_queue_endpoints_work_on_every_node() {
    let nats = Nats::start();
    let ports = [common::free_port(), common::free_port()];
    let tables = |port: u16| {
        format!(
            "{QUEUES}\n[[realm.role]]\nname = \"anonymous\"\n\n\
             [[realm.role.permission]]\nuri = \"com.example.\"\nmatch = \"prefix\"\nallow = [\"register\", \"call\"]\n\n\
             [[realm.role.permission]]\nuri = \"switchyard.queue.\"\nmatch = \"prefix\"\nallow = [\"call\"]\n\n\
             [[realm.role]]\nname = \"backend\"\n\n\
             [[realm.role.permission]]\nuri = \"switchyard.queue.\"\nmatch = \"prefix\"\nallow = [\"call\"]\n\n\
             [[bridge]]\naddress = \"127.0.0.1:{port}\"\nrealm = \"realm1\"\n\n\
             [[bridge.key]]\nkey = \"{}\"\nsecret = \"{}\"\nrole = \"backend\"\n",
            BACKEND.0, BACKEND.1
        )
    };
    let nodes = [
        nats.node_full("a", &tables(ports[0]), CLUSTER),
        nats.node_full("b", &tables(ports[1]), CLUSTER),
    ];
    let owner = owner_of(&nodes, &[0, 1], Duration::from_secs(10));
    let other = 1 - owner;
    // A push over HTTP on the node that does not own the queues: 202 and the job's location.
    let r = http_push(ports[other], "pdf", "1", "order-7", r#"{"args": [77]}"#);
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["id"].as_u64().expect("id");
    // The same key on the owner's bridge: 409, the same job.
    let again = http_push(ports[owner], "pdf", "2", "order-7", r#"{"args": [78]}"#);
    assert_eq!(again.status, 409, "{}", again.body);
    assert_eq!(again.json()["id"], id);
    // A worker runs it; its state over HTTP on the other node says so.
    let mut worker = join(&nodes[other]);
    worker.register("com.example.render");
    assert_eq!(serve_one(&mut worker, false), Some(77));
    let path = format!("/queues/pdf/jobs/{id}");
    let deadline = Instant::now() + Duration::from_secs(10);
    for nonce in 3.. {
        let q = common::http::bound_query(BACKEND, "GET", &path, &nonce.to_string(), None, "");
        let r = common::http::request(ports[other], "GET", &format!("{path}?{q}"), "", "");
        assert_eq!(r.status, 200, "{}", r.body);
        if r.json()["state"] == "completed" {
            break;
        }
        assert!(Instant::now() < deadline, "{}", r.body);
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_forwarded_call_is_authorized_per_queue_on_the_owner() {
    let nats = Nats::start();
    // Anonymous callers may push to `pdf` only (docs/SECURITY.md, per-queue authorization).
    let roles = format!(
        "{QUEUES}\n[[realm.role]]\nname = \"anonymous\"\n\n\
         [[realm.role.permission]]\nuri = \"switchyard.queue.push\"\nallow = [\"call\"]\n\n\
         [[realm.role.permission]]\nuri = \"switchyard.queue.push.pdf\"\nallow = [\"call\"]\n"
    );
    let nodes = [
        nats.node_full("a", &roles, CLUSTER),
        nats.node_full("b", &roles, CLUSTER),
    ];
    let owner = owner_of(&nodes, &[0, 1], Duration::from_secs(10));
    for i in [1 - owner, owner] {
        let mut c = join(&nodes[i]);
        push(&mut c, "pdf", 1, Dict::new()).expect("push to pdf");
        let refused = push(&mut c, "mail", 1, Dict::new()).expect_err("push to mail");
        assert_eq!(
            refused.0, "wamp.error.not_authorized",
            "node {i}: {refused:?}"
        );
    }
}

#[test]
fn a_publication_on_a_bound_topic_becomes_a_job_on_any_node() {
    let nats = Nats::start();
    let tables = format!(
        "{QUEUES}\n[[realm.queue_binding]]\ntopic = \"com.example.order.\"\nmatch = \"prefix\"\nqueues = [\"pdf\"]\n"
    );
    let nodes = [
        nats.node_full("a", &tables, CLUSTER),
        nats.node_full("b", &tables, CLUSTER),
    ];
    let owner = owner_of(&nodes, &[0, 1], Duration::from_secs(10));
    let other = 1 - owner;
    let mut worker = join(&nodes[other]);
    worker.register("com.example.render");
    // Published on the node that does not own the queues, then on the owner: PUBLISHED follows
    // the jobs' commit, and each becomes a job that runs.
    for (i, node) in [other, owner].into_iter().enumerate() {
        let mut publisher = join(&nodes[node]);
        let request = publisher.req();
        publisher.send(&Message::Publish {
            request,
            options: Dict::new().with("acknowledge", true),
            topic: "com.example.order.placed".into(),
            payload: args(vec![Value::UInt(100 + i as u64)]),
        });
        match publisher.expect("PUBLISHED") {
            Message::Published { request: r, .. } => assert_eq!(r, request),
            other => panic!("expected PUBLISHED, got {other:?}"),
        }
        assert_eq!(serve_one(&mut worker, false), Some(100 + i as u64));
    }
    let mut operator = join(&nodes[other]);
    wait_stats(&mut operator, "pdf", "both completed", |s| {
        uint(s, "completed_total") == 2
    });
}

/// The bodies of the HTTP requests `l` gets (each answered 200), on a channel.
fn http_receiver(l: std::net::TcpListener) -> std::sync::mpsc::Receiver<String> {
    use std::io::{BufRead, BufReader, Read, Write};
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut s) = conn else { continue };
            s.set_read_timeout(Some(Duration::from_secs(5))).ok();
            let Ok(clone) = s.try_clone() else { continue };
            let mut reader = BufReader::new(clone);
            let mut len = 0usize;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h.trim_end().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    if k.trim().eq_ignore_ascii_case("content-length") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0; len];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
            if tx
                .send(String::from_utf8_lossy(&body).into_owned())
                .is_err()
            {
                return;
            }
        }
    });
    rx
}

#[test]
fn a_durable_http_subscriber_gets_the_events_published_on_any_node() {
    let nats = Nats::start();
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let receiver_port = l.local_addr().expect("addr").port();
    let got = http_receiver(l);
    let tables = |bridge_port: u16| {
        format!(
            "{QUEUES}\n[[bridge]]\naddress = \"127.0.0.1:{bridge_port}\"\nrealm = \"realm1\"\n\
             allow_unsigned = true\n\n[[bridge.subscriber]]\ntopic = \"com.example.paid\"\n\
             url = \"http://127.0.0.1:{receiver_port}/events\"\nkey = \"hooks\"\n\
             secret = \"durable-secret-longer-than-16\"\n\
             durable = {{ retry = {{ kind = \"fixed\", times = 5, spacing = \"100ms\" }} }}\n"
        )
    };
    let nodes = [
        nats.node_full("a", &tables(common::free_port()), CLUSTER),
        nats.node_full("b", &tables(common::free_port()), CLUSTER),
    ];
    let owner = owner_of(&nodes, &[0, 1], Duration::from_secs(10));
    for (i, node) in [1 - owner, owner].into_iter().enumerate() {
        let mut publisher = join(&nodes[node]);
        let request = publisher.req();
        publisher.send(&Message::Publish {
            request,
            options: Dict::new().with("acknowledge", true),
            topic: "com.example.paid".into(),
            payload: args(vec![Value::UInt(500 + i as u64)]),
        });
        match publisher.expect("PUBLISHED") {
            Message::Published { .. } => {}
            other => panic!("expected PUBLISHED, got {other:?}"),
        }
        let body = got
            .recv_timeout(Duration::from_secs(10))
            .expect("the event POSTed");
        let event: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(event["topic"], "com.example.paid", "{event}");
        assert_eq!(event["args"][0], 500 + i as u64, "{event}");
    }
}

#[test]
fn a_node_says_so_and_exits_when_nats_has_no_jetstream() {
    let nats = common::nats::Nats::start_core();
    let port = nats.port;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("switchyard.toml");
    std::fs::write(
        &config,
        format!(
            "[[listener]]\ntype = \"rawsocket\"\naddress = \"127.0.0.1:{}\"\n\n[[realm]]\nname = \"realm1\"\n\n\
             [cluster]\nnode = \"a\"\nnats = [\"nats://127.0.0.1:{port}\"]\n\n\
             [cluster.queues]\nstore = \"jetstream\"\n",
            common::free_port()
        ),
    )
    .expect("config");
    let log_path = dir.path().join("node.log");
    let mut node = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .current_dir(dir.path())
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log"))
        .spawn()
        .expect("switchyard");
    // It stops by itself, at once (bounded here: killed after 20 s).
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = node.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = node.kill();
            let _ = node.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(nats);
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let status = status.unwrap_or_else(|| panic!("the node did not stop: {log}"));
    assert!(!status.success(), "{log}");
    // Whichever part of the cluster needs JetStream first (the sessions
    // bucket, the retained events, the queues) says so.
    assert!(log.contains("JetStream") && log.contains("-js"), "{log}");
}

/// `switchyard.queue.job` for `id` on `c`, retried while a takeover replays the log.
fn read_job(c: &mut Raw, id: u64) -> Result<Dict, (String, String)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match try_call(c, "switchyard.queue.job", vec![id.into()], Dict::new()) {
            Err((uri, _)) if uri == "switchyard.queue.error.unavailable" => {
                assert!(Instant::now() < deadline, "job {id}: still unavailable");
                std::thread::sleep(Duration::from_millis(50));
            }
            r => return r,
        }
    }
}

fn state_of(job: &Dict) -> String {
    job.get("status")
        .and_then(Value::as_dict)
        .and_then(|s| s.get_str("state"))
        .unwrap_or_else(|| panic!("no status.state in {job:?}"))
        .to_string()
}

/// `GET /queues/{queue}/jobs/{id}` on `port`, signed.
fn http_job(port: u16, queue: &str, id: u64, nonce: &str) -> common::http::Reply {
    let path = format!("/queues/{queue}/jobs/{id}");
    let q = common::http::bound_query(BACKEND, "GET", &path, nonce, None, "");
    common::http::request(port, "GET", &format!("{path}?{q}"), "", "")
}

#[test]
fn a_takeover_keeps_completed_jobs_dead_letters_and_keys() {
    let nats = Nats::start();
    let ports = [
        common::free_port(),
        common::free_port(),
        common::free_port(),
    ];
    let tables = |port: u16| {
        format!(
            "{QUEUES}\n[[realm.role]]\nname = \"anonymous\"\n\n\
             [[realm.role.permission]]\nuri = \"com.example.\"\nmatch = \"prefix\"\nallow = [\"register\", \"call\"]\n\n\
             [[realm.role.permission]]\nuri = \"switchyard.queue.\"\nmatch = \"prefix\"\nallow = [\"call\"]\n\n\
             [[realm.role]]\nname = \"backend\"\n\n\
             [[realm.role.permission]]\nuri = \"switchyard.queue.\"\nmatch = \"prefix\"\nallow = [\"call\"]\n\n\
             [[bridge]]\naddress = \"127.0.0.1:{port}\"\nrealm = \"realm1\"\n\n\
             [[bridge.key]]\nkey = \"{}\"\nsecret = \"{}\"\nrole = \"backend\"\n",
            BACKEND.0, BACKEND.1
        )
    };
    let mut nodes: Vec<Router> = ["a", "b", "c"]
        .iter()
        .zip(ports)
        .map(|(name, port)| nats.node_full(name, &tables(port), CLUSTER))
        .collect();
    let owner = owner_of(&nodes, &[0, 1, 2], Duration::from_secs(10));
    let (x, y) = others(owner);
    let mut producer = join(&nodes[x]);
    // A job completed with a result, pushed with an idempotency key.
    let key = || Dict::new().with("idempotency_key", "invoice-3");
    let done = uint(&push(&mut producer, "pdf", 31, key()).expect("push"), "id");
    let mut worker = join(&nodes[y]);
    worker.register("com.example.render");
    assert_eq!(serve_one(&mut worker, false), Some(31));
    // A dead job: `mail` allows one retry, its worker fails both attempts.
    let dead = uint(
        &push(&mut producer, "mail", 32, Dict::new()).expect("push"),
        "id",
    );
    let mut failing = join(&nodes[y]);
    failing.register("com.example.mail");
    assert_eq!(serve_one(&mut failing, true), Some(32));
    assert_eq!(serve_one(&mut failing, true), Some(32));
    let mut operator = join(&nodes[x]);
    wait_stats(&mut operator, "pdf", "completed", |s| {
        uint(s, "completed_total") == 1
    });
    wait_stats(&mut operator, "mail", "dead-lettered", |s| {
        uint(s, "dead") == 1
    });
    let before = read_job(&mut operator, done).expect("the completed job before");
    assert_eq!(state_of(&before), "completed", "{before:?}");

    // The owner dies; a survivor takes the queues over.
    nodes[owner].signal(libc::SIGKILL);
    let next = owner_of(&nodes, &[x, y], Duration::from_secs(10));
    eprintln!("owner {owner} killed; {next} took over");
    for (i, nonce) in [(x, 100), (y, 200)] {
        let mut c = join(&nodes[i]);
        // Over WAMP: the completed job, its result, the dead job.
        let job = read_job(&mut c, done)
            .unwrap_or_else(|e| panic!("node {i}: the completed job is gone: {e:?}"));
        assert_eq!(state_of(&job), "completed", "node {i}: {job:?}");
        assert_eq!(
            job, before,
            "node {i}: the same answer as before the takeover"
        );
        let result = job.get("result").and_then(Value::as_dict).expect("result");
        assert_eq!(
            result.get("args"),
            Some(&Value::List(vec!["done".into()])),
            "{job:?}"
        );
        let d = read_job(&mut c, dead).expect("the dead job");
        assert_eq!(state_of(&d), "dead", "node {i}: {d:?}");
        // The idempotency key still names the completed job.
        let again = push(&mut c, "pdf", 33, key()).expect("push again");
        assert_eq!(uint(&again, "id"), done, "node {i}");
        assert_eq!(again.get("duplicate"), Some(&Value::Bool(true)), "node {i}");
        // Over HTTP on the node's bridge.
        let r = http_job(ports[i], "pdf", done, &nonce.to_string());
        assert_eq!(r.status, 200, "node {i}: {}", r.body);
        let body = r.json();
        assert_eq!(body["state"], "completed", "node {i}: {}", r.body);
        assert_eq!(body["result"]["args"][0], "done", "node {i}: {}", r.body);
        let r = http_job(ports[i], "mail", dead, &(nonce + 1).to_string());
        assert_eq!(r.status, 200, "node {i}: {}", r.body);
        assert_eq!(r.json()["state"], "dead", "node {i}: {}", r.body);
        // The counters too.
        let s = stats(&mut c, "pdf");
        assert_eq!(uint(&s, "completed_total"), 1, "node {i}: {s:?}");
    }
}

/// The value of the sample `line` (name and labels) in `port`'s /metrics.
fn sample(port: u16, line: &str) -> Option<f64> {
    let body = common::http::request(port, "GET", "/metrics", "", "").body;
    body.lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
}

#[test]
fn the_owner_exports_the_queue_metrics_and_a_new_owner_takes_them_over() {
    const OWNER: &str = "switchyard_queue_owner{realm=\"realm1\"}";
    const READY: &str = "switchyard_queue_ready{realm=\"realm1\",queue=\"pdf\"}";
    const COMPLETED: &str = "switchyard_queue_completed_total{realm=\"realm1\",queue=\"pdf\"}";
    let nats = Nats::start();
    let ops = [common::free_port(), common::free_port()];
    let tables = |port: u16| {
        format!("{QUEUES}\n[[listener]]\ntype = \"operations\"\naddress = \"127.0.0.1:{port}\"\n")
    };
    let mut nodes = vec![
        nats.node_full("a", &tables(ops[0]), CLUSTER),
        nats.node_full("b", &tables(ops[1]), CLUSTER),
    ];
    let owner = owner_of(&nodes, &[0, 1], Duration::from_secs(10));
    let other = 1 - owner;
    // One job completed, two waiting (no worker).
    let mut producer = join(&nodes[other]);
    push(&mut producer, "pdf", 1, Dict::new()).expect("push");
    let mut worker = join(&nodes[other]);
    worker.register("com.example.render");
    assert_eq!(serve_one(&mut worker, false), Some(1));
    drop(worker);
    wait_stats(&mut producer, "pdf", "completed", |s| {
        uint(s, "completed_total") == 1 && uint(s, "in_flight") == 0
    });
    push(&mut producer, "pdf", 2, Dict::new()).expect("push");
    push(&mut producer, "pdf", 3, Dict::new()).expect("push");
    wait_stats(&mut producer, "pdf", "two waiting", |s| {
        uint(s, "ready") == 2
    });
    // The owner exports the queue's figures and says it owns the queues; the other node
    // exports none of them (a sum over both scrapes counts each once).
    assert_eq!(sample(ops[owner], OWNER), Some(1.0));
    assert_eq!(sample(ops[other], OWNER), Some(0.0));
    assert_eq!(sample(ops[owner], READY), Some(2.0));
    assert_eq!(sample(ops[owner], COMPLETED), Some(1.0));
    assert_eq!(sample(ops[other], READY), None);
    // After a takeover the survivor exports them, the lifetime counter where it was.
    nodes[owner].signal(libc::SIGKILL);
    assert_eq!(owner_of(&nodes, &[other], Duration::from_secs(10)), other);
    wait_stats(&mut join(&nodes[other]), "pdf", "recovered", |s| {
        uint(s, "ready") == 2
    });
    assert_eq!(sample(ops[other], OWNER), Some(1.0));
    assert_eq!(sample(ops[other], READY), Some(2.0));
    assert_eq!(sample(ops[other], COMPLETED), Some(1.0));
}
