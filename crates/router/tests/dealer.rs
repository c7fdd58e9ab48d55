//! Dealer invariants, checked on the router core directly: after any mix of
//! outcomes (result, error, progressive results, timeout, every cancel mode,
//! caller gone, callee gone, queue full) the call tables are empty.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::{first_arg, hello_details, router, Client};
use switchyard_proto::message::code;
use switchyard_proto::{errors, Dict, Message, Payload, Value};
use switchyard_router::dealer::DealerStats;

const CALLEE_FEATURES: &[&str] = &["call_canceling", "progressive_call_results"];

/// What a test caller saw for one call.
#[derive(Debug, Default, Clone)]
struct Seen {
    progress: usize,
    finals: usize,
    errors: Vec<String>,
}

fn collect(c: &mut Client, seen: &mut HashMap<u64, Seen>) {
    for m in c.drain() {
        match m {
            Message::Result {
                request, details, ..
            } => {
                let s = seen.entry(request).or_default();
                if details.get_bool("progress") == Some(true) {
                    assert_eq!(s.finals, 0, "progressive RESULT after the final one");
                    s.progress += 1;
                } else {
                    s.finals += 1;
                }
            }
            Message::Error {
                request_type,
                request,
                error,
                ..
            } => {
                assert_eq!(request_type, code::CALL);
                seen.entry(request).or_default().errors.push(error);
            }
            other => panic!("caller got unexpected {other:?}"),
        }
    }
}

/// Answers INVOCATIONs at random; returns how many it answered.
fn serve(callee: &mut Client, rng: &mut StdRng, pending: &mut Vec<u64>) {
    for m in callee.drain() {
        match m {
            Message::Invocation { request, .. } => pending.push(request),
            Message::Interrupt { request, options } => {
                if options.get_str("mode") == Some("kill") {
                    // The caller waits for the callee's answer to a kill.
                    pending.retain(|r| *r != request);
                    callee.send(Message::Error {
                        request_type: code::INVOCATION,
                        request,
                        details: Dict::new(),
                        error: errors::CANCELED.into(),
                        payload: Payload::empty(),
                    });
                } else if rng.random_bool(0.5) {
                    // killnowait: the answer, if any, is discarded.
                    pending.retain(|r| *r != request);
                }
            }
            other => panic!("callee got unexpected {other:?}"),
        }
    }
    let mut keep = Vec::new();
    for inv in pending.drain(..) {
        match rng.random_range(0..10) {
            0..=2 => {
                callee.send(Message::Yield {
                    request: inv,
                    options: Dict::new(),
                    payload: Payload::values(vec![Value::from(1u64)], None),
                });
            }
            3 => {
                callee.send(Message::Error {
                    request_type: code::INVOCATION,
                    request: inv,
                    details: Dict::new(),
                    error: "com.example.oops".into(),
                    payload: Payload::empty(),
                });
            }
            4 => {
                callee.send(Message::Yield {
                    request: inv,
                    options: Dict::new().with("progress", true),
                    payload: Payload::empty(),
                });
                keep.push(inv);
            }
            _ => keep.push(inv), // answer later (or never: timeout / leave)
        }
    }
    *pending = keep;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_tables_are_empty_after_a_storm_of_mixed_outcomes() {
    let r = router();
    let realm = r.realm("realm1").expect("realm").clone();
    let mut rng = StdRng::seed_from_u64(0x5717c4);
    let shared = Dict::new()
        .with("invoke", "roundrobin")
        .with("concurrency", 3u64);
    let mut a = Client::join(&r, hello_details(&[], CALLEE_FEATURES));
    let mut b = Client::join(&r, hello_details(&[], &[])); // no call canceling
    let mut w = Client::join(&r, hello_details(&[], CALLEE_FEATURES));
    a.register("com.storm.p", shared.clone());
    b.register("com.storm.p", shared.clone());
    w.register("com.storm.", Dict::new().with("match", "prefix"));
    let (mut pa, mut pb, mut pw) = (Vec::new(), Vec::new(), Vec::new());

    let mut callers: Vec<Client> = (0..3)
        .map(|_| Client::join(&r, hello_details(&[], &[])))
        .collect();
    let mut seen: Vec<HashMap<u64, Seen>> = vec![HashMap::new(); callers.len()];
    let mut issued: Vec<Vec<u64>> = vec![Vec::new(); callers.len()];

    for round in 0..60 {
        for (i, c) in callers.iter_mut().enumerate() {
            for _ in 0..rng.random_range(1..8) {
                let mut opts = Dict::new();
                if rng.random_bool(0.3) {
                    opts.insert("timeout", rng.random_range(1..40u64));
                }
                if rng.random_bool(0.4) {
                    opts.insert("receive_progress", true);
                }
                let proc = match rng.random_range(0..10) {
                    0..=6 => "com.storm.p",
                    7 | 8 => "com.storm.by.prefix",
                    _ => "com.elsewhere.nothing",
                };
                let req = c.call(proc, opts, vec![Value::from(round as u64)]);
                issued[i].push(req);
                if rng.random_bool(0.15) {
                    let mode = ["skip", "kill", "killnowait"][rng.random_range(0..3)];
                    c.send(Message::Cancel {
                        request: req,
                        options: Dict::new().with("mode", mode),
                    });
                }
            }
        }
        serve(&mut a, &mut rng, &mut pa);
        serve(&mut b, &mut rng, &mut pb);
        serve(&mut w, &mut rng, &mut pw);
        for (i, c) in callers.iter_mut().enumerate() {
            collect(c, &mut seen[i]);
        }
        if round == 30 {
            // A callee with calls in flight leaves, and a caller with calls
            // in flight leaves.
            b.conn.leave();
            callers[0].conn.leave();
        }
        if round % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Answer everything still pending, let the timers fire, collect.
    for _ in 0..200 {
        if realm.dealer.stats().calls == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        for (callee, pending) in [(&mut a, &mut pa), (&mut w, &mut pw)] {
            for m in callee.drain() {
                if let Message::Invocation { request, .. } = m {
                    pending.push(request);
                }
            }
            for inv in pending.drain(..) {
                callee.send(Message::Yield {
                    request: inv,
                    options: Dict::new(),
                    payload: Payload::empty(),
                });
            }
        }
        for (i, c) in callers.iter_mut().enumerate() {
            collect(c, &mut seen[i]);
        }
    }
    let stats = realm.dealer.stats();
    assert_eq!(
        DealerStats {
            registrations: stats.registrations,
            ..DealerStats::default()
        },
        stats,
        "call state left behind"
    );
    // Every call of the callers still connected ended exactly once.
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    for i in 1..callers.len() {
        for req in &issued[i] {
            let s = seen[i].get(req).cloned().unwrap_or_default();
            assert_eq!(
                s.finals + s.errors.len(),
                1,
                "call {req} of caller {i} ended {s:?}"
            );
            let key = s.errors.first().cloned().unwrap_or_else(|| "result".into());
            *outcomes.entry(key).or_default() += 1;
        }
    }
    for expected in [
        "result",
        "com.example.oops",
        errors::TIMEOUT,
        errors::CANCELED,
        errors::NO_SUCH_PROCEDURE,
    ] {
        assert!(
            outcomes.contains_key(expected),
            "the storm never produced {expected}: {outcomes:?}"
        );
    }
    // Everyone leaves: no registration is left either.
    a.conn.leave();
    w.conn.leave();
    for c in &mut callers {
        c.conn.leave();
    }
    assert_eq!(realm.dealer.stats(), DealerStats::default());
}

#[tokio::test]
async fn waiting_calls_respect_the_queue_limit_and_their_timeout() {
    let mut config = switchyard_router::RealmConfig::new("realm1");
    config.call_queue_limit = 2;
    let r = switchyard_router::Router::new(vec![config]);
    let mut callee = Client::join(&r, hello_details(&[], CALLEE_FEATURES));
    callee.register("com.q.p", Dict::new().with("concurrency", 1u64));
    let mut c = Client::join(&r, hello_details(&[], &[]));
    let first = c.call("com.q.p", Dict::new(), vec![Value::from(1u64)]);
    let waits = c.call("com.q.p", Dict::new(), vec![Value::from(2u64)]);
    let times_out = c.call(
        "com.q.p",
        Dict::new().with("timeout", 30u64),
        vec![Value::from(3u64)],
    );
    let refused = c.call("com.q.p", Dict::new(), vec![Value::from(4u64)]);
    match c.recv() {
        Some(Message::Error { request, error, .. }) => {
            assert_eq!(
                (request, error.as_str()),
                (refused, errors::NO_AVAILABLE_CALLEE)
            );
        }
        other => panic!("expected ERROR no_available_callee, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    match c.recv() {
        Some(Message::Error { request, error, .. }) => {
            assert_eq!((request, error.as_str()), (times_out, errors::TIMEOUT));
        }
        other => panic!("expected ERROR timeout, got {other:?}"),
    }
    // Only the first call reached the callee; answering it releases the next.
    let invs: Vec<_> = callee.drain();
    assert_eq!(invs.len(), 1, "{invs:?}");
    let Message::Invocation {
        request, payload, ..
    } = &invs[0]
    else {
        panic!("{invs:?}")
    };
    assert_eq!(first_arg(payload), Value::from(1u64));
    callee.send(Message::Yield {
        request: *request,
        options: Dict::new(),
        payload: Payload::empty(),
    });
    match callee.recv() {
        Some(Message::Invocation { payload, .. }) => {
            assert_eq!(first_arg(&payload), Value::from(2u64))
        }
        other => panic!("expected the waiting call, got {other:?}"),
    }
    assert!(matches!(c.recv(), Some(Message::Result { request, .. }) if request == first));
    let _ = waits;
}

/// `x_switchyard_*` CALL options reach the callee's INVOCATION.Details only
/// from a router-owned caller (the queues' dispatcher): a client cannot
/// forge a job's identity.
#[tokio::test]
async fn only_router_owned_callers_pass_x_switchyard_details_on() {
    use switchyard_router::internal::InternalCaller;
    let r = router();
    let realm = r.realm("realm1").expect("realm").clone();
    let mut callee = Client::join(&r, hello_details(&[], CALLEE_FEATURES));
    callee.register("com.details.p", Dict::new());
    let job = Dict::new().with("id", 7u64);
    let options = Dict::new()
        .with("x_switchyard_job", job.clone())
        .with("x_other", 1u64);
    let mut client = Client::join(&r, hello_details(&[], &[]));
    client.call("com.details.p", options.clone(), vec![]);
    let internal = InternalCaller::default();
    let _pending = internal
        .start_call(
            &realm.dealer,
            "com.details.p",
            &options,
            Payload::empty(),
            None,
        )
        .expect("call");
    let details: Vec<Dict> = callee
        .drain()
        .into_iter()
        .filter_map(|m| match m {
            Message::Invocation { details, .. } => Some(details),
            _ => None,
        })
        .collect();
    assert_eq!(details.len(), 2, "{details:?}");
    assert_eq!(details[0].get("x_switchyard_job"), None, "{:?}", details[0]);
    assert_eq!(
        details[1].get("x_switchyard_job"),
        Some(&Value::Dict(job)),
        "{:?}",
        details[1]
    );
    assert_eq!(details[1].get("x_other"), None);
}
