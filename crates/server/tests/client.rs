//! The Rust client (`switchyard-client`, used by the benchmarks) against the
//! real router, over every transport and serializer.

mod common;

use common::*;
use switchyard_client::{
    connect, Dict, Error, Serializer, Session, TransportError, TransportOptions, Value,
};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

#[test]
fn client_pubsub_and_rpc_over_every_transport_and_serializer() {
    let r = Router::start("");
    block_on(async {
        let callee = Session::connect(&r.rs_url(), "realm1", Serializer::Cbor)
            .await
            .expect("callee joins");
        callee
            .register("com.example.echo", |args, kwargs| async move {
                Ok((args, kwargs))
            })
            .await
            .expect("register");
        callee
            .register("com.example.fail", |_, _| async move {
                Err((
                    "com.example.error.nope".to_string(),
                    vec![Value::from("why")],
                    Dict::new().with("code", 3u64),
                ))
            })
            .await
            .expect("register");
        let blob = Value::Bytes(vec![0, 159, 255]);
        for url in [r.ws_url(), r.rs_url(), r.unix_url()] {
            for ser in Serializer::ALL {
                let ctx = format!("{url} {ser}");
                let s = Session::connect(&url, "realm1", ser)
                    .await
                    .unwrap_or_else(|e| panic!("{ctx}: join: {e}"));
                let topic = format!("com.example.topic.{}", ser.name());
                let mut sub = s
                    .subscribe(&topic)
                    .await
                    .unwrap_or_else(|e| panic!("{ctx}: subscribe: {e}"));
                // Publisher exclusion is on by default: publish from the callee's session.
                let id = callee
                    .publish(
                        &topic,
                        vec![blob.clone()],
                        Dict::new().with("n", 1u64),
                        true,
                    )
                    .await
                    .unwrap_or_else(|e| panic!("{ctx}: publish: {e}"));
                assert!(id.is_some(), "{ctx}: acknowledged publish has an id");
                let ev = tokio::time::timeout(std::time::Duration::from_secs(5), sub.recv())
                    .await
                    .unwrap_or_else(|_| panic!("{ctx}: no event"))
                    .expect("subscription open");
                assert_eq!(ev.args().expect("args"), vec![blob.clone()], "{ctx}");
                assert_eq!(
                    ev.kwargs().expect("kwargs"),
                    Dict::new().with("n", 1u64),
                    "{ctx}"
                );

                let (args, kwargs) = s
                    .call(
                        "com.example.echo",
                        vec![Value::from("x"), blob.clone()],
                        Dict::new().with("k", "v"),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("{ctx}: call: {e}"));
                assert_eq!(args, vec![Value::from("x"), blob.clone()], "{ctx}");
                assert_eq!(kwargs, Dict::new().with("k", "v"), "{ctx}");

                let err = s
                    .call("com.example.fail", vec![], Dict::new())
                    .await
                    .expect_err("must fail");
                assert_eq!(err.uri, "com.example.error.nope", "{ctx}");
                assert_eq!(err.args, vec![Value::from("why")], "{ctx}");
                assert_eq!(err.kwargs, Dict::new().with("code", 3u64), "{ctx}");

                let err = s
                    .call("com.example.missing", vec![], Dict::new())
                    .await
                    .expect_err("must fail");
                assert_eq!(err.uri, "wamp.error.no_such_procedure", "{ctx}");
                s.leave()
                    .await
                    .unwrap_or_else(|e| panic!("{ctx}: leave: {e}"));
            }
        }
    });
}

#[test]
fn client_sees_abort_and_handshake_refusal() {
    let r = Router::start("");
    block_on(async {
        match Session::connect(&r.ws_url(), "no.such.realm", Serializer::Json).await {
            Err(Error::Abort {
                reason, message, ..
            }) => {
                assert_eq!(reason, "wamp.error.no_such_realm");
                assert!(message.unwrap_or_default().contains("no.such.realm"));
            }
            Err(other) => panic!("expected ABORT, got {other}"),
            Ok(_) => panic!("joined a realm that does not exist"),
        }
        let mut opts = TransportOptions::new(Serializer::Json);
        opts.raw_handshake = Some([0x7F, 0xF5, 0, 0]); // FlatBuffers: unsupported
        match connect(&r.rs_url(), opts).await {
            Err(TransportError::RawSocketRefused { code }) => assert_eq!(code, 1),
            Err(other) => panic!("expected a refusal, got {other}"),
            Ok(_) => panic!("the router accepted an unsupported serializer"),
        }
    });
}

#[test]
fn client_answers_router_pings() {
    // RawSocket PINGs every 200 ms; a peer silent for 500 ms is dropped. An
    // idle client survives only if it answers every PING with a PONG.
    let r = Router::start("[limits]\nrawsocket_ping_interval = \"200ms\"\nping_interval = \"200ms\"\nping_timeout = \"300ms\"\n");
    block_on(async {
        let callee = Session::connect(&r.rs_url(), "realm1", Serializer::MsgPack)
            .await
            .expect("join");
        callee
            .register("com.example.alive", |_, _| async move {
                Ok((vec![Value::from(true)], Dict::new()))
            })
            .await
            .expect("register");
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        let caller = Session::connect(&r.ws_url(), "realm1", Serializer::Json)
            .await
            .expect("join");
        let (args, _) = caller
            .call("com.example.alive", vec![], Dict::new())
            .await
            .expect("callee still there");
        assert_eq!(args, vec![Value::from(true)]);
    });
    assert!(
        !r.log_text().contains("keepalive timed out"),
        "a client was dropped: {}",
        r.log_text()
    );
}

/// A reader routes what one read of its socket gave it as a batch and wakes
/// each subscriber's writer once at the end (`outbound_queue::Batch`). A
/// wake-up lost there stalls a subscriber with EVENTs queued. Bursts from
/// publishers over WebSocket and RawSocket at once (several reads per
/// burst, batches of every size, the last one partial), with pauses in
/// between so that every writer falls asleep: every subscriber gets every
/// event of a burst, in each publisher's order, within a bound.
#[test]
fn fan_out_bursts_with_pauses_reach_every_subscriber() {
    const SUBSCRIBERS: usize = 24;
    const BURST: u64 = 203;
    const ROUNDS: u64 = 6;
    let r = Router::start("");
    block_on(async {
        let topic = "com.example.bursts";
        let urls = [r.ws_url(), r.rs_url()];
        let mut subs = Vec::new();
        for i in 0..SUBSCRIBERS {
            let ser = Serializer::ALL[i % Serializer::ALL.len()];
            let s = Session::connect(&urls[i % 2], "realm1", ser)
                .await
                .expect("subscriber joins");
            let sub = s.subscribe(topic).await.expect("subscribe");
            subs.push((s, sub));
        }
        let publishers = [
            (r.ws_url(), Serializer::Json),
            (r.rs_url(), Serializer::MsgPack),
            (r.ws_url(), Serializer::Cbor),
        ];
        let mut pubs = Vec::new();
        for (url, ser) in &publishers {
            pubs.push(
                Session::connect(url, "realm1", *ser)
                    .await
                    .expect("publisher joins"),
            );
        }
        for round in 0..ROUNDS {
            // Every publisher's burst at once, unacknowledged: the client
            // writes what it has queued together.
            let bursts = pubs.iter().enumerate().map(|(p, s)| async move {
                for seq in 0..BURST {
                    s.publish(
                        topic,
                        vec![Value::from(p as u64), Value::from(round), Value::from(seq)],
                        Dict::new(),
                        false,
                    )
                    .await
                    .expect("publish");
                }
            });
            futures_util::future::join_all(bursts).await;
            for (i, (_, sub)) in subs.iter_mut().enumerate() {
                let mut next = [0u64; 3];
                for n in 0..BURST * pubs.len() as u64 {
                    let event = tokio::time::timeout(std::time::Duration::from_secs(5), sub.recv())
                        .await
                        .unwrap_or_else(|_| {
                            panic!(
                                "subscriber {i}, round {round}: event {n} of {} not delivered within 5 s (got {next:?} per publisher)",
                                BURST * pubs.len() as u64
                            )
                        })
                        .expect("subscription open");
                    let args = event.args().expect("args");
                    let num = |k: usize| args[k].as_u64().expect("a number");
                    let (p, rnd, seq) = (num(0) as usize, num(1), num(2));
                    assert_eq!(
                        (rnd, seq),
                        (round, next[p]),
                        "subscriber {i}: publisher {p}'s events in order"
                    );
                    next[p] += 1;
                }
            }
            // Quiet: every writer drains its queue and falls asleep.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    });
}
