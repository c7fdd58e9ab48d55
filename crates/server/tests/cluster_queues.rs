//! Cluster mode over NATS (issue 15, item 6): until queues live in
//! JetStream, a queue lives on the node that stores it, and its jobs are
//! dispatched to workers on any node. A real `nats-server`, two real
//! nodes with the same queue configuration; the job is pushed on node a,
//! the only worker is on node b, and node a's queue sees it completed.
//!
//! Needs `nats-server` (scripts/install-nats.sh).

mod common;

use std::time::{Duration, Instant};

use common::nats::Nats;
use common::{args, args_of, Raw, Router};
use switchyard_proto::{Dict, Message, Serializer, Value};

const QUEUE: &str = "[[realm.queue]]\nname = \"pdf\"\ntarget = \"com.example.render\"\n\
                     retry = { kind = \"fixed\", times = 3, spacing = \"100ms\" }\n";

fn join(node: &Router) -> Raw {
    let mut c = Raw::connect(node.rs_port, Serializer::Json);
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

/// Calls `procedure` and returns its RESULT's kwargs (panics on ERROR).
fn call(c: &mut Raw, procedure: &str, values: Vec<Value>, kwargs: Dict) -> Dict {
    let request = c.req();
    let payload = switchyard_proto::Payload::values(values, Some(kwargs));
    c.send(&Message::Call {
        request,
        options: Dict::new(),
        procedure: procedure.into(),
        payload,
    });
    match c.expect("RESULT") {
        Message::Result { payload, .. } => match payload.kwargs.map(|k| k.to_value()) {
            Some(Ok(Value::Dict(d))) => d,
            _ => Dict::new(),
        },
        other => panic!("{procedure}: expected RESULT, got {other:?}"),
    }
}

fn uint(d: &Dict, k: &str) -> u64 {
    d.get(k)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{k} in {d:?}"))
}

#[test]
fn a_job_pushed_on_one_node_runs_on_a_worker_of_another() {
    let nats = Nats::start();
    let a = nats.node_with("a", QUEUE);
    let b = nats.node_with("b", QUEUE);
    // The only worker, on node b.
    let mut worker = join(&b);
    let request = worker.req();
    worker.send(&Message::Register {
        request,
        options: Dict::new(),
        procedure: "com.example.render".into(),
    });
    worker.expect("REGISTERED");
    // Node a learns of it (its Dealer holds b's callee) within a heartbeat.
    let mut producer = join(&a);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let id = {
            let request = producer.req();
            producer.send(&Message::Call {
                request,
                options: Dict::new(),
                procedure: "wamp.registration.match".into(),
                payload: args(vec!["com.example.render".into()]),
            });
            match producer.expect("RESULT") {
                Message::Result { payload, .. } => args_of(&payload).into_iter().next(),
                other => panic!("{other:?}"),
            }
        };
        if matches!(id, Some(Value::UInt(_))) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node a never learned of b's worker"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let pushed = call(
        &mut producer,
        "switchyard.queue.push",
        vec!["pdf".into()],
        Dict::new().with("args", Value::List(vec![Value::UInt(4711)])),
    );
    let job = uint(&pushed, "id");
    // The worker on b gets the job's arguments and completes it.
    match worker.expect("INVOCATION") {
        Message::Invocation {
            request, payload, ..
        } => {
            assert_eq!(args_of(&payload), vec![Value::UInt(4711)]);
            worker.send(&Message::Yield {
                request,
                options: Dict::new(),
                payload: args(vec!["/pdf/4711.pdf".into()]),
            });
        }
        other => panic!("expected INVOCATION, got {other:?}"),
    }
    // Node a's queue (where the job is stored) sees it completed, once.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = call(
            &mut producer,
            "switchyard.queue.stats",
            vec!["pdf".into()],
            Dict::new(),
        );
        if uint(&stats, "completed_total") == 1 {
            assert_eq!(uint(&stats, "retried_total"), 0, "{stats:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "job {job} not completed: {stats:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Node b's own queue of the same name holds nothing: the job was a's.
    let mut other = join(&b);
    let stats = call(
        &mut other,
        "switchyard.queue.stats",
        vec!["pdf".into()],
        Dict::new(),
    );
    assert_eq!(uint(&stats, "completed_total"), 0, "{stats:?}");
}
