//! Cluster mode over NATS (issue 15): RPC across nodes and node failure. A
//! real `nats-server` and real `switchyard` nodes joined by it, driven by
//! RawSocket clients: callers on one node, callees on another, and every
//! RPC rule of one node across them (match precedence, shared
//! registrations, caller disclosure, timeout, the three cancel modes,
//! progressive results and invocations, the caller leaving, a single
//! registration unique cluster-wide) and a callee node killed or stopped.
//!
//! Needs `nats-server` (scripts/install-nats.sh).

mod common;

use std::time::{Duration, Instant};

use common::nats::{Nats, NatsCluster};
use common::{args, args_of, Raw, Router};
use switchyard_proto::{errors, Dict, Message, Serializer, Value};

/// HELLO announcing the advanced RPC features these tests use.
fn hello() -> Message {
    let feats = Dict::new()
        .with("call_canceling", true)
        .with("progressive_call_results", true)
        .with("progressive_call_invocations", true)
        .with("caller_identification", true)
        .with("pattern_based_registration", true)
        .with("shared_registration", true)
        .with("registration_revocation", true);
    let roles = Dict::new()
        .with("caller", Dict::new().with("features", feats.clone()))
        .with("callee", Dict::new().with("features", feats))
        .with("subscriber", Dict::new());
    Message::Hello {
        realm: "realm1".into(),
        details: Dict::new().with("roles", roles),
    }
}

fn join(node: &Router) -> (Raw, u64) {
    let mut c = Raw::connect(node.rs_port, Serializer::Json);
    c.send(&hello());
    match c.expect("WELCOME") {
        Message::Welcome { session, .. } => (c, session),
        other => panic!("expected WELCOME, got {other:?}"),
    }
}

/// REGISTER with `options`: the registration id, or the ERROR's URI.
fn register(c: &mut Raw, procedure: &str, options: Dict) -> Result<u64, String> {
    let request = c.req();
    c.send(&Message::Register {
        request,
        options,
        procedure: procedure.into(),
    });
    match c.expect("REGISTERED") {
        Message::Registered { registration, .. } => Ok(registration),
        Message::Error { error, .. } => Err(error),
        other => panic!("expected REGISTERED, got {other:?}"),
    }
}

fn call(c: &mut Raw, procedure: &str, options: Dict, values: Vec<Value>) -> u64 {
    let request = c.req();
    c.send(&Message::Call {
        request,
        options,
        procedure: procedure.into(),
        payload: args(values),
    });
    request
}

/// Calls a meta procedure and returns its first result argument (Null for
/// an ERROR: the registration went meanwhile).
fn meta(c: &mut Raw, procedure: &str, values: Vec<Value>) -> Value {
    let request = call(c, procedure, Dict::new(), values);
    match c.expect("RESULT") {
        Message::Result {
            request: r,
            payload,
            ..
        } if r == request => args_of(&payload).into_iter().next().unwrap_or(Value::Null),
        Message::Error { request: r, .. } if r == request => Value::Null,
        other => panic!("expected RESULT of {procedure}, got {other:?}"),
    }
}

/// The callees of the registration of (`uri`, `policy`) on `c`'s node.
fn callees(c: &mut Raw, uri: &str, policy: &str) -> Vec<u64> {
    let id = meta(
        c,
        "wamp.registration.lookup",
        vec![uri.into(), Value::Dict(Dict::new().with("match", policy))],
    );
    let Some(id) = id.as_u64() else {
        return Vec::new();
    };
    match meta(c, "wamp.registration.list_callees", vec![Value::UInt(id)]) {
        Value::List(l) => l.iter().filter_map(Value::as_u64).collect(),
        _ => Vec::new(),
    }
    // (A registration that went between the two calls: none.)
}

/// Waits until `c`'s node has exactly `want` as the callees of (`uri`,
/// `policy`) (a remote callee is known there by its own session id).
fn wait_callees(c: &mut Raw, uri: &str, policy: &str, want: &[u64]) {
    let mut want = want.to_vec();
    want.sort();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut got = callees(c, uri, policy);
        got.sort();
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{uri} ({policy}): callees {got:?}, expected {want:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The next INVOCATION: (request, details, args).
fn invocation(c: &mut Raw) -> (u64, Dict, Vec<Value>) {
    match c.expect("INVOCATION") {
        Message::Invocation {
            request,
            details,
            payload,
            ..
        } => (request, details, args_of(&payload)),
        other => panic!("expected INVOCATION, got {other:?}"),
    }
}

fn yield_(c: &mut Raw, request: u64, options: Dict, values: Vec<Value>) {
    c.send(&Message::Yield {
        request,
        options,
        payload: args(values),
    });
}

/// The RESULT of `request`: (details, args).
fn result(c: &mut Raw, request: u64) -> (Dict, Vec<Value>) {
    match c.expect("RESULT") {
        Message::Result {
            request: r,
            details,
            payload,
        } if r == request => (details, args_of(&payload)),
        other => panic!("expected RESULT of {request}, got {other:?}"),
    }
}

/// The ERROR answering CALL `request`: (error, first argument).
fn call_error(c: &mut Raw, request: u64) -> (String, String) {
    match c.expect("ERROR") {
        Message::Error {
            request: r,
            error,
            payload,
            ..
        } if r == request => {
            let first = args_of(&payload)
                .first()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            (error, first)
        }
        other => panic!("expected ERROR of {request}, got {other:?}"),
    }
}

/// Nothing arrives on `c` within `quiet`.
fn silent(c: &mut Raw, quiet: Duration) -> Option<Message> {
    c.stream.set_read_timeout(Some(quiet)).expect("timeout");
    let got = c.recv();
    c.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    got
}

fn uint(v: u64) -> Value {
    Value::UInt(v)
}

#[test]
fn callees_on_another_node_are_called_with_the_same_matching_and_disclosure() {
    let nats = Nats::start();
    let (a, b, c) = (nats.node("a"), nats.node("b"), nats.node("c"));
    let (mut callee, callee_id) = join(&a);
    let (mut local_wildcard, wildcard_id) = join(&b);
    let (mut caller, caller_id) = join(&b);
    let (mut caller_c, _) = join(&c);
    register(&mut callee, "com.ex.add", Dict::new()).expect("exact");
    register(&mut callee, "com.pre.", Dict::new().with("match", "prefix")).expect("prefix");
    register(
        &mut callee,
        "com..wild",
        Dict::new().with("match", "wildcard"),
    )
    .expect("wildcard");
    register(&mut callee, "com.x.exact", Dict::new()).expect("exact");
    // On b, a local wildcard that also matches com.x.exact.
    register(
        &mut local_wildcard,
        "com..exact",
        Dict::new().with("match", "wildcard"),
    )
    .expect("local wildcard");
    for (uri, policy) in [
        ("com.ex.add", "exact"),
        ("com.pre.", "prefix"),
        ("com..wild", "wildcard"),
        ("com.x.exact", "exact"),
    ] {
        wait_callees(&mut caller, uri, policy, &[callee_id]);
        wait_callees(&mut caller_c, uri, policy, &[callee_id]);
    }
    wait_callees(&mut caller_c, "com..exact", "wildcard", &[wildcard_id]);

    // Exact, from b and from c.
    let r = call(
        &mut caller,
        "com.ex.add",
        Dict::new(),
        vec![uint(2), uint(3)],
    );
    let (inv, details, got) = invocation(&mut callee);
    assert_eq!(got, vec![uint(2), uint(3)]);
    assert!(
        details.get("caller").is_none(),
        "not disclosed unless asked"
    );
    yield_(&mut callee, inv, Dict::new(), vec![uint(5)]);
    assert_eq!(result(&mut caller, r).1, vec![uint(5)]);
    let r = call(&mut caller_c, "com.ex.add", Dict::new(), vec![uint(1)]);
    let (inv, _, _) = invocation(&mut callee);
    yield_(&mut callee, inv, Dict::new(), vec![uint(10)]);
    assert_eq!(result(&mut caller_c, r).1, vec![uint(10)]);

    // Prefix and wildcard: the callee learns the procedure called.
    for procedure in ["com.pre.fix", "com.y.wild"] {
        let r = call(&mut caller, procedure, Dict::new(), vec![]);
        let (inv, details, _) = invocation(&mut callee);
        assert_eq!(details.get_str("procedure"), Some(procedure));
        yield_(&mut callee, inv, Dict::new(), vec![procedure.into()]);
        assert_eq!(result(&mut caller, r).1, vec![Value::from(procedure)]);
    }

    // Precedence: the remote exact registration wins over b's local
    // wildcard; another procedure the wildcard matches stays local.
    let r = call(&mut caller, "com.x.exact", Dict::new(), vec![]);
    let (inv, _, _) = invocation(&mut callee);
    yield_(&mut callee, inv, Dict::new(), vec!["remote".into()]);
    assert_eq!(result(&mut caller, r).1, vec![Value::from("remote")]);
    let r = call(&mut caller_c, "com.y.exact", Dict::new(), vec![]);
    let (inv, _, _) = invocation(&mut local_wildcard);
    yield_(&mut local_wildcard, inv, Dict::new(), vec!["b".into()]);
    assert_eq!(result(&mut caller_c, r).1, vec![Value::from("b")]);

    // Caller disclosure, decided on the caller's node.
    let r = call(
        &mut caller,
        "com.ex.add",
        Dict::new().with("disclose_me", true),
        vec![],
    );
    let (inv, details, _) = invocation(&mut callee);
    assert_eq!(
        details.get("caller").and_then(Value::as_u64),
        Some(caller_id)
    );
    assert!(details.get_str("caller_authid").is_some());
    assert_eq!(details.get_str("caller_authrole"), Some("anonymous"));
    // A callee's ERROR crosses back unchanged.
    callee.send(&Message::Error {
        request_type: 68,
        request: inv,
        details: Dict::new(),
        error: "com.example.error.nope".into(),
        payload: args(vec!["nope".into()]),
    });
    assert_eq!(
        call_error(&mut caller, r),
        ("com.example.error.nope".to_string(), "nope".to_string())
    );
    // Nothing reached the local wildcard callee for com.x.exact.
    assert!(silent(&mut local_wildcard, Duration::from_millis(200)).is_none());
}

#[test]
fn shared_registrations_balance_across_nodes_and_single_ones_stay_unique() {
    let nats = Nats::start();
    let (a, b, c) = (nats.node("a"), nats.node("b"), nats.node("c"));
    let (mut on_a, a_id) = join(&a);
    let (mut on_b, b_id) = join(&b);
    let (mut caller, _) = join(&c);
    let shared = Dict::new().with("invoke", "roundrobin");
    register(&mut on_a, "com.shared", shared.clone()).expect("a");
    register(&mut on_b, "com.shared", shared).expect("b");
    wait_callees(&mut caller, "com.shared", "exact", &[a_id, b_id]);
    for s in [&mut on_a, &mut on_b] {
        s.stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
    }
    let mut served = [0u32; 2];
    for n in 0..6 {
        let r = call(&mut caller, "com.shared", Dict::new(), vec![uint(n)]);
        let (who, m) = match on_a.recv() {
            Some(m) => (0u64, m),
            None => (1, on_b.recv().expect("INVOCATION on a or b")),
        };
        let Message::Invocation { request, .. } = m else {
            panic!("expected INVOCATION, got {m:?}");
        };
        let s = if who == 0 { &mut on_a } else { &mut on_b };
        yield_(s, request, Dict::new(), vec![uint(who)]);
        assert_eq!(result(&mut caller, r).1, vec![uint(who)]);
        served[who as usize] += 1;
    }
    assert_eq!(
        served,
        [3, 3],
        "roundrobin alternates over both nodes' callees"
    );

    // A single registration: another node's REGISTER is refused.
    for s in [&mut on_a, &mut on_b] {
        s.stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
    }
    register(&mut on_a, "com.single", Dict::new()).expect("first");
    wait_callees(&mut on_b, "com.single", "exact", &[a_id]);
    assert_eq!(
        register(&mut on_b, "com.single", Dict::new()),
        Err(errors::PROCEDURE_ALREADY_EXISTS.to_string())
    );
}

#[test]
fn timeout_and_the_three_cancel_modes_across_nodes() {
    let nats = Nats::start();
    let (a, b) = (nats.node("a"), nats.node("b"));
    let (mut callee, callee_id) = join(&a);
    let (mut caller, _) = join(&b);
    register(&mut callee, "com.slow", Dict::new()).expect("register");
    wait_callees(&mut caller, "com.slow", "exact", &[callee_id]);

    // Timeout: timed on the caller's node; the callee gets INTERRUPT.
    let r = call(
        &mut caller,
        "com.slow",
        Dict::new().with("timeout", 300u64),
        vec![],
    );
    let (inv, _, _) = invocation(&mut callee);
    let (error, _) = call_error(&mut caller, r);
    assert_eq!(error, errors::TIMEOUT);
    match callee.expect("INTERRUPT") {
        Message::Interrupt { request, options } => {
            assert_eq!(request, inv);
            assert_eq!(options.get_str("mode"), Some("killnowait"));
        }
        other => panic!("expected INTERRUPT, got {other:?}"),
    }
    // Its late answer goes nowhere.
    yield_(&mut callee, inv, Dict::new(), vec![]);

    // skip: the caller gets canceled, the callee no INTERRUPT.
    let r = call(&mut caller, "com.slow", Dict::new(), vec![]);
    let (inv, _, _) = invocation(&mut callee);
    caller.send(&Message::Cancel {
        request: r,
        options: Dict::new().with("mode", "skip"),
    });
    assert_eq!(call_error(&mut caller, r).0, errors::CANCELED);
    assert!(silent(&mut callee, Duration::from_millis(300)).is_none());
    yield_(&mut callee, inv, Dict::new(), vec![]);

    // kill: INTERRUPT, and the callee's answer ends the call.
    let r = call(&mut caller, "com.slow", Dict::new(), vec![]);
    let (inv, _, _) = invocation(&mut callee);
    caller.send(&Message::Cancel {
        request: r,
        options: Dict::new().with("mode", "kill"),
    });
    match callee.expect("INTERRUPT") {
        Message::Interrupt { request, options } => {
            assert_eq!(request, inv);
            assert_eq!(options.get_str("mode"), Some("kill"));
        }
        other => panic!("expected INTERRUPT, got {other:?}"),
    }
    assert!(silent(&mut caller, Duration::from_millis(200)).is_none());
    callee.send(&Message::Error {
        request_type: 68,
        request: inv,
        details: Dict::new(),
        error: errors::CANCELED.into(),
        payload: args(vec![]),
    });
    assert_eq!(call_error(&mut caller, r).0, errors::CANCELED);

    // killnowait: canceled at once, INTERRUPT to the callee.
    let r = call(&mut caller, "com.slow", Dict::new(), vec![]);
    let (inv, _, _) = invocation(&mut callee);
    caller.send(&Message::Cancel {
        request: r,
        options: Dict::new().with("mode", "killnowait"),
    });
    assert_eq!(call_error(&mut caller, r).0, errors::CANCELED);
    match callee.expect("INTERRUPT") {
        Message::Interrupt { request, options } => {
            assert_eq!(request, inv);
            assert_eq!(options.get_str("mode"), Some("killnowait"));
        }
        other => panic!("expected INTERRUPT, got {other:?}"),
    }

    // The callee still serves.
    let r = call(&mut caller, "com.slow", Dict::new(), vec![]);
    let (inv, _, _) = invocation(&mut callee);
    yield_(&mut callee, inv, Dict::new(), vec![uint(1)]);
    assert_eq!(result(&mut caller, r).1, vec![uint(1)]);
}

#[test]
fn progressive_results_and_invocations_across_nodes() {
    let nats = Nats::start();
    let (a, b) = (nats.node("a"), nats.node("b"));
    let (mut callee, callee_id) = join(&a);
    let (mut caller, _) = join(&b);
    register(&mut callee, "com.stream", Dict::new()).expect("register");
    wait_callees(&mut caller, "com.stream", "exact", &[callee_id]);

    // Progressive results.
    let r = call(
        &mut caller,
        "com.stream",
        Dict::new().with("receive_progress", true),
        vec![],
    );
    let (inv, details, _) = invocation(&mut callee);
    assert_eq!(details.get_bool("receive_progress"), Some(true));
    for n in 1..=2 {
        yield_(
            &mut callee,
            inv,
            Dict::new().with("progress", true),
            vec![uint(n)],
        );
    }
    yield_(&mut callee, inv, Dict::new(), vec![uint(3)]);
    for n in 1..=2 {
        let (details, got) = result(&mut caller, r);
        assert_eq!(details.get_bool("progress"), Some(true));
        assert_eq!(got, vec![uint(n)]);
    }
    let (details, got) = result(&mut caller, r);
    assert_ne!(details.get_bool("progress"), Some(true));
    assert_eq!(got, vec![uint(3)]);

    // Progressive invocations: the chunks reach the callee as one
    // invocation (one request id), in order.
    let r = caller.req();
    let chunk = |caller: &mut Raw, progress: bool, n: u64| {
        caller.send(&Message::Call {
            request: r,
            options: if progress {
                Dict::new().with("progress", true)
            } else {
                Dict::new()
            },
            procedure: "com.stream".into(),
            payload: args(vec![uint(n)]),
        });
    };
    chunk(&mut caller, true, 1);
    let (first, details, got) = invocation(&mut callee);
    assert_eq!(
        (details.get_bool("progress"), got),
        (Some(true), vec![uint(1)])
    );
    chunk(&mut caller, true, 2);
    let (inv, details, got) = invocation(&mut callee);
    assert_eq!(inv, first);
    assert_eq!(
        (details.get_bool("progress"), got),
        (Some(true), vec![uint(2)])
    );
    chunk(&mut caller, false, 3);
    let (inv, details, got) = invocation(&mut callee);
    assert_eq!(inv, first);
    assert_ne!(details.get_bool("progress"), Some(true));
    assert_eq!(got, vec![uint(3)]);
    yield_(&mut callee, inv, Dict::new(), vec![uint(6)]);
    assert_eq!(result(&mut caller, r).1, vec![uint(6)]);
}

#[test]
fn a_caller_leaving_interrupts_the_remote_callee() {
    let nats = Nats::start();
    let (a, b) = (nats.node("a"), nats.node("b"));
    let (mut callee, callee_id) = join(&a);
    let (mut caller, _) = join(&b);
    register(&mut callee, "com.slow", Dict::new()).expect("register");
    wait_callees(&mut caller, "com.slow", "exact", &[callee_id]);
    call(&mut caller, "com.slow", Dict::new(), vec![]);
    let (inv, _, _) = invocation(&mut callee);
    drop(caller);
    match callee.expect("INTERRUPT") {
        Message::Interrupt { request, options } => {
            assert_eq!(request, inv);
            assert_eq!(options.get_str("mode"), Some("killnowait"));
        }
        other => panic!("expected INTERRUPT, got {other:?}"),
    }
}

/// SIGSTOP / SIGCONT to the NATS server: the nodes keep serving their
/// clients but hear nothing of each other meanwhile.
fn pause(nats: &Nats, sig: i32) {
    // SAFETY: kill(2) on the nats-server child we spawned and still own.
    unsafe {
        libc::kill(nats.child.id() as i32, sig);
    }
    // A stop takes effect once each of its threads is scheduled: wait
    // until every one is stopped (state T) or none is.
    let stopped = sig == libc::SIGSTOP;
    let deadline = Instant::now() + Duration::from_secs(5);
    let tasks = format!("/proc/{}/task", nats.child.id());
    loop {
        let states: Vec<bool> = std::fs::read_dir(&tasks)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
                    .map(|stat| {
                        stat.rsplit(')')
                            .next()
                            .is_some_and(|rest| rest.trim_start().starts_with('T'))
                    })
                    .collect()
            })
            .unwrap_or_default();
        if !states.is_empty() && states.iter().all(|s| *s == stopped) {
            return;
        }
        assert!(Instant::now() < deadline, "nats-server did not (re)start");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn racing_single_registrations_end_with_the_older_one_everywhere() {
    let nats = Nats::start();
    let (a, b, c) = (nats.node("a"), nats.node("b"), nats.node("c"));
    let (mut on_a, a_id) = join(&a);
    let (mut on_b, b_id) = join(&b);
    let (mut caller_c, _) = join(&c);
    // Every node knows the others.
    register(&mut on_a, "com.warm.a", Dict::new()).expect("warm a");
    register(&mut on_b, "com.warm.b", Dict::new()).expect("warm b");
    wait_callees(&mut on_b, "com.warm.a", "exact", &[a_id]);
    wait_callees(&mut on_a, "com.warm.b", "exact", &[b_id]);
    wait_callees(&mut caller_c, "com.warm.b", "exact", &[b_id]);
    // Both register before hearing of each other: b first.
    pause(&nats, libc::SIGSTOP);
    let rb = register(&mut on_b, "com.race", Dict::new());
    std::thread::sleep(Duration::from_millis(30));
    let ra = register(&mut on_a, "com.race", Dict::new());
    let raced = (ra, rb);
    pause(&nats, libc::SIGCONT);
    assert!(raced.0.is_ok() && raced.1.is_ok(), "{raced:?}");
    // b's older registration wins on every node; a's is revoked, and its
    // callee told so.
    match on_a.expect("UNREGISTERED") {
        Message::Unregistered { request, details } => {
            assert_eq!(request, 0);
            assert_eq!(
                details.get("registration").and_then(Value::as_u64),
                raced.0.as_ref().ok().copied()
            );
            assert_eq!(
                details.get_str("reason"),
                Some(errors::PROCEDURE_ALREADY_EXISTS)
            );
        }
        other => panic!("expected UNREGISTERED, got {other:?}"),
    }
    wait_callees(&mut on_a, "com.race", "exact", &[b_id]);
    wait_callees(&mut on_b, "com.race", "exact", &[b_id]);
    wait_callees(&mut caller_c, "com.race", "exact", &[b_id]);
    for caller in [&mut on_a, &mut caller_c] {
        let r = call(caller, "com.race", Dict::new(), vec![]);
        let (inv, _, _) = invocation(&mut on_b);
        yield_(&mut on_b, inv, Dict::new(), vec!["b".into()]);
        assert_eq!(result(caller, r).1, vec![Value::from("b")]);
    }
    assert!(a.log_text().contains("registration revoked"));
}

#[test]
fn a_killed_callee_node_fails_its_calls_and_loses_its_registrations() {
    let nats = Nats::start();
    let fast = "heartbeat = \"400ms\"";
    let mut a = nats.node_full("a", "", fast);
    let b = nats.node_full("b", "", fast);
    let (mut callee, callee_id) = join(&a);
    let (mut caller, _) = join(&b);
    let (mut watcher, _) = join(&b);
    watcher.subscribe("wamp.registration.on_unregister");
    // One call at a time: a second one waits on b for the callee.
    let one = Dict::new().with("concurrency", 1u64);
    register(&mut callee, "com.hang", one).expect("register");
    wait_callees(&mut caller, "com.hang", "exact", &[callee_id]);
    let r = call(&mut caller, "com.hang", Dict::new(), vec![]);
    invocation(&mut callee);
    let waiting = call(&mut caller, "com.hang", Dict::new(), vec![]);
    assert!(silent(&mut callee, Duration::from_millis(200)).is_none());
    let killed = Instant::now();
    a.signal(libc::SIGKILL);
    // The waiting call first (the registration goes), then the one in
    // flight: both name the lost node.
    let (error, message) = call_error(&mut caller, waiting);
    assert_eq!(error, errors::CANCELED);
    assert!(message.contains("node a"), "{message}");
    let (error, message) = call_error(&mut caller, r);
    let took = killed.elapsed();
    eprintln!("the call failed {took:?} after SIGKILL of its callee's node");
    assert_eq!(error, errors::CANCELED);
    assert!(message.contains("node a"), "{message}");
    // Documented bound: 3 heartbeats, checked every quarter heartbeat
    // (1.3 s here), plus slack for a loaded machine.
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    assert!(
        took >= Duration::from_millis(800),
        "took {took:?}: before 2 heartbeats"
    );
    match watcher.expect("EVENT") {
        Message::Event { payload, .. } => {
            assert_eq!(args_of(&payload).first(), Some(&Value::UInt(callee_id)));
        }
        other => panic!("expected EVENT, got {other:?}"),
    }
    // The survivor keeps serving; the procedure is gone.
    let r = call(&mut caller, "com.hang", Dict::new(), vec![]);
    assert_eq!(call_error(&mut caller, r).0, errors::NO_SUCH_PROCEDURE);
}

#[test]
fn a_node_that_stops_cleanly_is_forgotten_at_once() {
    let nats = Nats::start();
    let mut a = nats.node("a");
    let b = nats.node("b");
    let (mut callee, callee_id) = join(&a);
    let (mut caller, _) = join(&b);
    register(&mut callee, "com.hang", Dict::new()).expect("register");
    wait_callees(&mut caller, "com.hang", "exact", &[callee_id]);
    let r = call(&mut caller, "com.hang", Dict::new(), vec![]);
    invocation(&mut callee);
    let stopped = Instant::now();
    let pid = a.child.as_ref().map(|c| c.id()).expect("running");
    // SAFETY: kill(2) on the node we spawned and still own (not reaped).
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let (error, message) = call_error(&mut caller, r);
    let took = stopped.elapsed();
    assert_eq!(error, errors::CANCELED);
    assert!(message.contains("node a"), "{message}");
    // Well before three heartbeats (3 s).
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert!(a.terminate().success());
}

#[test]
fn a_callee_that_unregisters_and_registers_again_is_called_again() {
    let nats = Nats::start();
    let (a, b) = (nats.node("a"), nats.node("b"));
    let (mut callee, callee_id) = join(&a);
    let (mut caller, _) = join(&b);
    for round in 0..3u64 {
        let registration = register(&mut callee, "com.again", Dict::new()).expect("register");
        wait_callees(&mut caller, "com.again", "exact", &[callee_id]);
        let r = call(&mut caller, "com.again", Dict::new(), vec![uint(round)]);
        let (inv, _, got) = invocation(&mut callee);
        assert_eq!(got, vec![uint(round)]);
        yield_(&mut callee, inv, Dict::new(), vec![uint(round)]);
        assert_eq!(result(&mut caller, r).1, vec![uint(round)]);
        let request = callee.req();
        callee.send(&Message::Unregister {
            request,
            registration,
        });
        assert!(matches!(
            callee.expect("UNREGISTERED"),
            Message::Unregistered { .. }
        ));
        wait_callees(&mut caller, "com.again", "exact", &[]);
    }
}

#[test]
fn a_node_restarted_under_the_same_name_replaces_its_old_self() {
    let nats = Nats::start();
    let mut a = nats.node("a");
    let b = nats.node("b");
    let (mut callee, callee_id) = join(&a);
    let (mut caller, _) = join(&b);
    register(&mut callee, "com.old", Dict::new()).expect("register");
    wait_callees(&mut caller, "com.old", "exact", &[callee_id]);
    let r = call(&mut caller, "com.old", Dict::new(), vec![]);
    invocation(&mut callee);
    let killed = Instant::now();
    a.signal(libc::SIGKILL);
    // Back before three heartbeats (3 s) passed: the new process's first
    // heartbeat (a new epoch) ends what the old one had.
    let a2 = nats.node("a");
    let (error, message) = call_error(&mut caller, r);
    assert_eq!(error, errors::CANCELED);
    assert!(message.contains("node a restarted"), "{message}");
    assert!(killed.elapsed() < Duration::from_millis(2900));
    wait_callees(&mut caller, "com.old", "exact", &[]);
    let (mut callee2, callee2_id) = join(&a2);
    register(&mut callee2, "com.new", Dict::new()).expect("register");
    wait_callees(&mut caller, "com.new", "exact", &[callee2_id]);
    let r = call(&mut caller, "com.new", Dict::new(), vec![]);
    let (inv, _, _) = invocation(&mut callee2);
    yield_(&mut callee2, inv, Dict::new(), vec![uint(2)]);
    assert_eq!(result(&mut caller, r).1, vec![uint(2)]);
}

#[test]
fn first_across_nodes_is_the_first_callee_this_node_learned_of() {
    let nats = Nats::start();
    let (a, b, c) = (nats.node("a"), nats.node("b"), nats.node("c"));
    let (mut on_a, a_id) = join(&a);
    let (mut on_b, b_id) = join(&b);
    let (mut caller, _) = join(&c);
    let first = Dict::new().with("invoke", "first");
    let reg_a = register(&mut on_a, "com.standby", first.clone()).expect("a");
    wait_callees(&mut caller, "com.standby", "exact", &[a_id]);
    register(&mut on_b, "com.standby", first).expect("b");
    wait_callees(&mut caller, "com.standby", "exact", &[a_id, b_id]);
    for _ in 0..3 {
        let r = call(&mut caller, "com.standby", Dict::new(), vec![]);
        let (inv, _, _) = invocation(&mut on_a);
        yield_(&mut on_a, inv, Dict::new(), vec!["a".into()]);
        assert_eq!(result(&mut caller, r).1, vec![Value::from("a")]);
    }
    // The first one goes: the standby on the other node takes over.
    let request = on_a.req();
    on_a.send(&Message::Unregister {
        request,
        registration: reg_a,
    });
    on_a.expect("UNREGISTERED");
    wait_callees(&mut caller, "com.standby", "exact", &[b_id]);
    let r = call(&mut caller, "com.standby", Dict::new(), vec![]);
    let (inv, _, _) = invocation(&mut on_b);
    yield_(&mut on_b, inv, Dict::new(), vec!["b".into()]);
    assert_eq!(result(&mut caller, r).1, vec![Value::from("b")]);
}

/// A node of `nats` that connects to server `server` first (named three
/// times: its buckets get three replicas) and learns the others from it
/// (NATS advertises them), so it moves to another when that one goes.
fn node_on(nats: &NatsCluster, name: &str, server: usize) -> Router {
    let url = nats.servers[server].url();
    Router::start(&format!(
        "[cluster]\nnode = \"{name}\"\nnats = [\"{url}\", \"{url}\", \"{url}\"]\n\
         subject_prefix = \"sy\"\nheartbeat = \"400ms\"\n"
    ))
}

/// What became of one call made while a NATS server died.
#[derive(Debug)]
enum Outcome {
    Done,
    Failed(String, String),
}

/// Calls `procedure` on `c` in rounds of `batch` calls at once until
/// `until` says stop: per call, its outcome and how long it took. A call
/// not answered within `limit` panics (a call that hangs).
fn call_rounds(
    c: &mut Raw,
    procedure: &str,
    batch: usize,
    limit: Duration,
    mut until: impl FnMut(&[(Outcome, Duration)]) -> bool,
) -> Vec<(Outcome, Duration)> {
    let mut out = Vec::new();
    while !until(&out) {
        let mut pending: Vec<(u64, Instant)> = (0..batch)
            .map(|i| {
                let request = c.req();
                c.send(&Message::Call {
                    request,
                    options: Dict::new(),
                    procedure: procedure.into(),
                    payload: args(vec![uint(i as u64)]),
                });
                (request, Instant::now())
            })
            .collect();
        c.stream.set_read_timeout(Some(limit)).expect("timeout");
        while !pending.is_empty() {
            let m = c.recv().unwrap_or_else(|| {
                panic!(
                    "{} call(s) not answered within {limit:?} (a call hangs); so far {out:?}",
                    pending.len()
                )
            });
            let (request, outcome) = match m {
                Message::Result { request, .. } => (request, Outcome::Done),
                Message::Error {
                    request,
                    error,
                    payload,
                    ..
                } => {
                    let first = args_of(&payload)
                        .first()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default();
                    (request, Outcome::Failed(error, first))
                }
                other => panic!("expected RESULT or ERROR, got {other:?}"),
            };
            let Some(i) = pending.iter().position(|(r, _)| *r == request) else {
                panic!("an answer to no pending call: {request}");
            };
            let (_, sent) = pending.swap_remove(i);
            out.push((outcome, sent.elapsed()));
        }
    }
    out
}

#[test]
fn calls_to_a_callee_whose_nats_server_dies_complete_or_fail_clearly_and_none_hangs() {
    let mut nats = NatsCluster::start(3);
    let a = node_on(&nats, "a", 0);
    let b = node_on(&nats, "b", 1);
    let (mut callee, _) = join(&b);
    register(&mut callee, "com.ex.echo", Dict::new()).expect("registered");
    // The callee answers every invocation at once, in a thread of its own.
    let answering = std::thread::spawn(move || {
        let mut answered = 0u64;
        callee
            .stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        while let Some(m) = callee.recv() {
            if let Message::Invocation {
                request, payload, ..
            } = m
            {
                yield_(&mut callee, request, Dict::new(), args_of(&payload));
                answered += 1;
            }
        }
        answered
    });
    let (mut caller, _) = join(&a);
    let deadline = Instant::now() + Duration::from_secs(10);
    while callees(&mut caller, "com.ex.echo", "exact").is_empty() {
        assert!(Instant::now() < deadline, "b's callee not known on a");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(nats.server_of("b"), Some(1));
    let limit = Duration::from_secs(6);
    let before = call_rounds(&mut caller, "com.ex.echo", 4, limit, |o| o.len() >= 40);
    assert!(
        before.iter().all(|(o, _)| matches!(o, Outcome::Done)),
        "{before:?}"
    );
    // The callee node's server is killed while calls run (four at a time),
    // then the caller node's.
    for name in ["b", "a"] {
        let server = nats.server_of(name).expect("connected");
        let killed = Instant::now();
        nats.servers[server].stop();
        // Calls go on until 40 in a row have completed after it moved.
        let mut moved = None;
        let after = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            call_rounds(&mut caller, "com.ex.echo", 4, limit, |o| {
                if moved.is_none() {
                    moved = nats.server_of(name).filter(|s| *s != server);
                }
                let streak = o
                    .iter()
                    .rev()
                    .take_while(|(x, _)| matches!(x, Outcome::Done))
                    .count();
                assert!(
                    killed.elapsed() < Duration::from_secs(30),
                    "calls did not recover within 30 s: {o:?}"
                );
                moved.is_some() && streak >= 40
            })
        }));
        let after = after.unwrap_or_else(|_| {
            panic!(
                "node a's log:\n{}\nnode b's log:\n{}",
                a.log_text(),
                b.log_text()
            )
        });
        let failed: Vec<&(Outcome, Duration)> = after
            .iter()
            .filter(|(o, _)| matches!(o, Outcome::Failed(..)))
            .collect();
        let slowest = after.iter().map(|(_, t)| *t).max().unwrap_or_default();
        eprintln!(
            "{name}'s server killed: {} calls, {} failed, slowest {slowest:?}, {name} moved to server {moved:?}; failures: {failed:?}",
            after.len(),
            failed.len()
        );
        // Every call answered within the bound: a node whose connection
        // came back tells so in its next heartbeat (or notices it itself),
        // and the calls in flight to or from it end; a node silent for
        // 3.25 heartbeats (1.3 s) is dead.
        assert!(slowest < Duration::from_secs(5), "slowest call {slowest:?}");
        for (o, _) in &failed {
            let Outcome::Failed(uri, message) = o else {
                continue;
            };
            assert!(
                (uri == errors::CANCELED && message.contains(&format!("node {name}")))
                    || uri == errors::NO_SUCH_PROCEDURE,
                "a failure without a clear error: {uri} {message:?}"
            );
        }
    }
    drop(caller);
    drop(a);
    drop(b);
    let _ = answering.join();
}
