//! PubSub and RPC over real sockets, across serializers.

mod common;

use common::*;
use switchyard_proto::message::code;
use switchyard_proto::{errors, Dict, Message, Payload, Serializer, Value};

#[test]
fn pubsub_across_serializers_with_binary_and_kwargs() {
    let r = Router::start("");
    let mut subs: Vec<(Raw, u64)> = Serializer::ALL
        .into_iter()
        .map(|s| {
            let mut c = Raw::connect(r.rs_port, s);
            c.join("realm1");
            let id = c.subscribe("com.example.topic");
            (c, id)
        })
        .collect();
    // One subscription per topic, shared by all subscribers.
    assert!(subs.iter().all(|(_, id)| *id == subs[0].1));

    for publisher_ser in Serializer::ALL {
        let mut p = Raw::connect(r.rs_port, publisher_ser);
        p.join("realm1");
        let kwargs = Dict::new().with(
            "nested",
            Dict::new().with("list", Value::List(vec![Value::from(-5i64)])),
        );
        let request = p.req();
        p.send(&Message::Publish {
            request,
            options: Dict::new().with("acknowledge", true),
            topic: "com.example.topic".into(),
            payload: Payload::values(
                vec![Value::from("héllo"), Value::Bytes(vec![0, 1, 2, 255])],
                Some(kwargs.clone()),
            ),
        });
        let publication = match p.expect("PUBLISHED") {
            Message::Published {
                request: rq,
                publication,
            } if rq == request => publication,
            other => panic!("expected PUBLISHED, got {other:?}"),
        };
        for (s, sub_id) in &mut subs {
            match s.expect("EVENT") {
                Message::Event {
                    subscription,
                    publication: pb,
                    payload,
                    ..
                } => {
                    assert_eq!(subscription, *sub_id);
                    assert_eq!(pb, publication);
                    assert_eq!(
                        args_of(&payload),
                        vec![Value::from("héllo"), Value::Bytes(vec![0, 1, 2, 255])]
                    );
                    let kw = payload
                        .kwargs
                        .expect("kwargs")
                        .to_value()
                        .expect("kwargs decode");
                    assert_eq!(
                        kw,
                        Value::Dict(kwargs.clone()),
                        "{publisher_ser} -> {}",
                        s.ser
                    );
                }
                other => panic!("expected EVENT, got {other:?}"),
            }
        }
    }
}

#[test]
fn publisher_exclusion_is_on_by_default() {
    let r = Router::start("");
    let mut c = Raw::connect(r.rs_port, Serializer::Json);
    c.join("realm1");
    c.subscribe("com.example.me");
    let req = c.req();
    c.send(&Message::Publish {
        request: req,
        options: Dict::new().with("acknowledge", true),
        topic: "com.example.me".into(),
        payload: args(vec![Value::from(1u64)]),
    });
    assert!(matches!(c.expect("PUBLISHED"), Message::Published { .. }));
    let req = c.req();
    c.send(&Message::Publish {
        request: req,
        options: Dict::new()
            .with("acknowledge", true)
            .with("exclude_me", false),
        topic: "com.example.me".into(),
        payload: args(vec![Value::from(2u64)]),
    });
    // With exclude_me=false the EVENT comes, and comes before PUBLISHED.
    match c.expect("EVENT") {
        Message::Event { payload, .. } => assert_eq!(args_of(&payload), vec![Value::from(2u64)]),
        other => panic!("expected EVENT (and not the first publication), got {other:?}"),
    }
    assert!(matches!(c.expect("PUBLISHED"), Message::Published { .. }));
}

#[test]
fn rpc_round_trip_and_errors_pass_through() {
    let r = Router::start("");
    let mut callee = Raw::connect(r.rs_port, Serializer::Cbor);
    callee.join("realm1");
    let registration = callee.register("com.example.add");
    let mut caller = Raw::connect(r.rs_port, Serializer::Json);
    caller.join("realm1");

    let req = caller.req();
    caller.send(&Message::Call {
        request: req,
        options: Dict::new(),
        procedure: "com.example.add".into(),
        payload: Payload::values(
            vec![Value::from(2u64), Value::from(3u64)],
            Some(Dict::new().with("k", "v")),
        ),
    });
    let inv = match callee.expect("INVOCATION") {
        Message::Invocation {
            request,
            registration: reg,
            payload,
            ..
        } => {
            assert_eq!(reg, registration);
            assert_eq!(
                args_of(&payload),
                vec![Value::from(2u64), Value::from(3u64)]
            );
            request
        }
        other => panic!("expected INVOCATION, got {other:?}"),
    };
    callee.send(&Message::Yield {
        request: inv,
        options: Dict::new(),
        payload: args(vec![Value::from(5u64)]),
    });
    match caller.expect("RESULT") {
        Message::Result {
            request, payload, ..
        } => {
            assert_eq!(request, req);
            assert_eq!(args_of(&payload), vec![Value::from(5u64)]);
        }
        other => panic!("expected RESULT, got {other:?}"),
    }

    // An application error with args and kwargs reaches the caller intact.
    let req = caller.req();
    caller.send(&Message::Call {
        request: req,
        options: Dict::new(),
        procedure: "com.example.add".into(),
        payload: Payload::empty(),
    });
    let Message::Invocation { request: inv, .. } = callee.expect("INVOCATION") else {
        panic!("expected INVOCATION")
    };
    callee.send(&Message::Error {
        request_type: code::INVOCATION,
        request: inv,
        details: Dict::new(),
        error: "com.example.error.bad".into(),
        payload: Payload::values(
            vec![Value::from("why")],
            Some(Dict::new().with("code", 7u64)),
        ),
    });
    match caller.expect("ERROR") {
        Message::Error {
            request_type,
            request,
            error,
            payload,
            ..
        } => {
            assert_eq!((request_type, request), (code::CALL, req));
            assert_eq!(error, "com.example.error.bad");
            assert_eq!(args_of(&payload), vec![Value::from("why")]);
            let kw = payload.kwargs.expect("kwargs").to_value().expect("decode");
            assert_eq!(kw, Value::Dict(Dict::new().with("code", 7u64)));
        }
        other => panic!("expected ERROR, got {other:?}"),
    }
}

fn expect_error(c: &mut Raw, request_type: u64, uri: &str) -> String {
    match c.expect("ERROR") {
        Message::Error {
            request_type: t,
            error,
            payload,
            ..
        } => {
            assert_eq!(t, request_type);
            assert_eq!(error, uri);
            match args_of(&payload).first() {
                Some(Value::Str(s)) => s.clone(),
                other => panic!("router errors carry a message, got {other:?}"),
            }
        }
        other => panic!("expected ERROR {uri}, got {other:?}"),
    }
}

#[test]
fn dealer_and_broker_errors() {
    let r = Router::start("[[realm]]\nname = \"strict\"\nuri_check = \"strict\"\n");
    let mut c = Raw::connect(r.rs_port, Serializer::MsgPack);
    c.join("realm1");
    let req = c.req();
    c.send(&Message::Call {
        request: req,
        options: Dict::new(),
        procedure: "com.example.none".into(),
        payload: Payload::empty(),
    });
    let m = expect_error(&mut c, code::CALL, errors::NO_SUCH_PROCEDURE);
    assert!(m.contains("com.example.none"));

    c.register("com.example.taken");
    let req = c.req();
    c.send(&Message::Register {
        request: req,
        options: Dict::new(),
        procedure: "com.example.taken".into(),
    });
    expect_error(&mut c, code::REGISTER, errors::PROCEDURE_ALREADY_EXISTS);

    let req = c.req();
    c.send(&Message::Unregister {
        request: req,
        registration: 12345,
    });
    expect_error(&mut c, code::UNREGISTER, errors::NO_SUCH_REGISTRATION);
    let req = c.req();
    c.send(&Message::Unsubscribe {
        request: req,
        subscription: 12345,
    });
    expect_error(&mut c, code::UNSUBSCRIBE, errors::NO_SUCH_SUBSCRIPTION);

    for bad in ["com..x", "has space", "a.#", ""] {
        let req = c.req();
        c.send(&Message::Subscribe {
            request: req,
            options: Dict::new(),
            topic: bad.into(),
        });
        expect_error(&mut c, code::SUBSCRIBE, errors::INVALID_URI);
    }
    let req = c.req();
    c.send(&Message::Register {
        request: req,
        options: Dict::new(),
        procedure: "wamp.session.count".into(),
    });
    let m = expect_error(&mut c, code::REGISTER, errors::INVALID_URI);
    assert!(m.contains("reserved"), "{m}");

    // Loose realm accepts upper case; the strict realm refuses it.
    c.subscribe("com.Example.Topic");
    let mut s = Raw::connect(r.rs_port, Serializer::Json);
    s.join("strict");
    let req = s.req();
    s.send(&Message::Subscribe {
        request: req,
        options: Dict::new(),
        topic: "com.Example.Topic".into(),
    });
    let m = expect_error(&mut s, code::SUBSCRIBE, errors::INVALID_URI);
    assert!(m.contains("strict"), "{m}");
    // A wildcard pattern is checked component by component under the
    // realm's rule (empty components are the wildcards).
    let req = s.req();
    s.send(&Message::Subscribe {
        request: req,
        options: Dict::new().with("match", "wildcard"),
        topic: "com..Topic".into(),
    });
    let m = expect_error(&mut s, code::SUBSCRIBE, errors::INVALID_URI);
    assert!(m.contains("wildcard"), "{m}");
}

#[test]
fn callee_leaving_mid_call_cancels_the_call() {
    let r = Router::start("");
    let mut callee = Raw::connect(r.rs_port, Serializer::Json);
    callee.join("realm1");
    callee.register("com.example.slow");
    let mut caller = Raw::connect(r.rs_port, Serializer::MsgPack);
    caller.join("realm1");
    let req = caller.req();
    caller.send(&Message::Call {
        request: req,
        options: Dict::new(),
        procedure: "com.example.slow".into(),
        payload: Payload::empty(),
    });
    assert!(matches!(
        callee.expect("INVOCATION"),
        Message::Invocation { .. }
    ));
    drop(callee); // the socket closes without a YIELD
    let m = expect_error(&mut caller, code::CALL, errors::CANCELED);
    assert!(m.contains("callee left"), "{m}");
    // And the procedure is gone with it.
    let req = caller.req();
    caller.send(&Message::Call {
        request: req,
        options: Dict::new(),
        procedure: "com.example.slow".into(),
        payload: Payload::empty(),
    });
    expect_error(&mut caller, code::CALL, errors::NO_SUCH_PROCEDURE);
}

#[test]
fn slow_consumer_is_disconnected_without_harming_others() {
    // 64 queued 32 KiB events of slack; the slow subscriber overflows long
    // before the 600 events (~19 MiB) are through. The publisher stays at
    // most 16 events ahead of the fast subscriber's reader: that thread
    // shares two busy CPUs, and descheduled for a while it would fall 64
    // events behind and be cut as a slow consumer too, rightly.
    let r = Router::start("[limits]\noutbound_queue = 64\n");
    let topic = "com.example.firehose";
    // The slow subscriber never reads.
    let mut slow = Raw::connect(r.rs_port, Serializer::Json);
    let (slow_id, _) = slow.join("realm1");
    slow.subscribe(topic);
    let mut fast = Raw::connect(r.rs_port, Serializer::MsgPack);
    fast.join("realm1");
    fast.subscribe(topic);
    let mut p = Raw::connect(r.rs_port, Serializer::MsgPack);
    p.join("realm1");
    let blob = Value::Bytes(vec![7u8; 32 * 1024]);
    let total = 600;
    let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let progress = received.clone();
    let reader = std::thread::spawn(move || {
        let mut got = 0;
        while got < total {
            match fast.recv() {
                Some(Message::Event { .. }) => {
                    got += 1;
                    progress.store(got, std::sync::atomic::Ordering::Release);
                }
                Some(_) => {}
                None => break,
            }
        }
        got
    });
    for i in 0..total {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while received.load(std::sync::atomic::Ordering::Acquire) + 16 < i {
            assert!(
                std::time::Instant::now() < deadline && !reader.is_finished(),
                "the fast subscriber stopped at {} of {i} events",
                received.load(std::sync::atomic::Ordering::Acquire)
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let request = p.req();
        p.send(&Message::Publish {
            request,
            options: Dict::new().with("acknowledge", true),
            topic: topic.into(),
            payload: args(vec![blob.clone()]),
        });
        assert!(
            matches!(p.expect("PUBLISHED"), Message::Published { .. }),
            "publisher must keep going"
        );
    }
    assert_eq!(
        reader.join().expect("reader"),
        total,
        "the fast subscriber must get every event"
    );
    let log = r.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("slow consumer"))
        .expect("the disconnect must be logged");
    assert!(
        line.contains(&slow_id.to_string()),
        "the log line must name the session: {line}"
    );
    assert!(slow.closed(), "the slow subscriber must be disconnected");
}

#[test]
fn messages_larger_than_a_rawsocket_client_accepts_are_not_sent_to_it() {
    let r = Router::start("");
    // This client announces LENGTH 0: it accepts messages of at most 512 bytes.
    let mut small = Raw::connect_handshake(r.rs_port, [0x7F, 0x01, 0, 0]);
    assert_eq!(small.read_exact(4).expect("reply")[1] & 0x0F, 1);
    small.join("realm1");
    small.register("com.example.small");
    small.subscribe("com.example.big");
    let mut big = Raw::connect(r.rs_port, Serializer::Json);
    big.join("realm1");
    big.subscribe("com.example.big");
    let mut c = Raw::connect(r.rs_port, Serializer::Json);
    c.join("realm1");
    let large = Value::from("y".repeat(2000));

    // A call whose INVOCATION would exceed the callee's limit fails cleanly.
    let req = c.req();
    c.send(&Message::Call {
        request: req,
        options: Dict::new(),
        procedure: "com.example.small".into(),
        payload: args(vec![large.clone()]),
    });
    let m = expect_error(&mut c, code::CALL, errors::PAYLOAD_SIZE_EXCEEDED);
    assert!(m.contains("512"), "{m}");

    // An event too large for one subscriber still reaches the others.
    let req = c.req();
    c.send(&Message::Publish {
        request: req,
        options: Dict::new().with("acknowledge", true),
        topic: "com.example.big".into(),
        payload: args(vec![large.clone()]),
    });
    assert!(matches!(c.expect("PUBLISHED"), Message::Published { .. }));
    match big.expect("EVENT") {
        Message::Event { payload, .. } => assert_eq!(args_of(&payload), vec![large]),
        other => panic!("expected EVENT, got {other:?}"),
    }
    // The small client got nothing oversized and still works.
    let req = c.req();
    c.send(&Message::Call {
        request: req,
        options: Dict::new(),
        procedure: "com.example.small".into(),
        payload: args(vec![Value::from(1u64)]),
    });
    match small.expect("INVOCATION (not the oversized EVENT)") {
        Message::Invocation { payload, .. } => {
            assert_eq!(args_of(&payload), vec![Value::from(1u64)])
        }
        other => panic!("expected INVOCATION, got {other:?}"),
    }
    assert!(
        r.log_text().contains("not delivered"),
        "the skipped event must be logged"
    );
}
