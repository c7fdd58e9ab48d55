//! Typed arguments of the Rust client (`switchyard_client::typed`) against
//! the real router, over every serializer: structs, tuples, options, enums,
//! binary data, `u64::MAX` and nested maps round-trip; a typed callee
//! answers arguments that do not fit with `wamp.error.invalid_argument`; a
//! result that does not fit the caller's type is a clear client error; a
//! typed subscription skips events that do not fit.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde::{Deserialize, Serialize};
use switchyard_client::reconnect::Connector;
use switchyard_client::typed::session::{INVALID_RESULT, WAMP_INVALID_ARGUMENT};
use switchyard_client::{
    ArgsKw, CallError, Dict, ReconnectOptions, ReconnectingSession, Serializer, Session, Value,
};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Kind {
    Plain,
    Weighted(f64),
    Sized { w: u32, h: u32 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u64,
    balance: i64,
    tags: Vec<String>,
    note: Option<String>,
    gift: Option<String>,
    kind: Kind,
    #[serde(with = "serde_bytes")]
    signature: Vec<u8>,
    stock: BTreeMap<u64, BTreeMap<String, Vec<f64>>>,
    pair: (String, i32),
    raw: Value,
}

fn order() -> Order {
    Order {
        id: u64::MAX,
        balance: i64::MIN,
        tags: vec!["a".into(), "é".into()],
        note: Some("fragile".into()),
        gift: None,
        kind: Kind::Sized { w: 2, h: 3 },
        signature: vec![0, 1, 127, 128, 255],
        stock: [(
            u64::MAX - 1,
            [("shelf".to_string(), vec![0.5, -1.25])].into(),
        )]
        .into(),
        pair: ("x".into(), -7),
        raw: Value::List(vec![Value::Bytes(vec![9, 8]), Value::Null]),
    }
}

async fn join(url: &str, ser: Serializer) -> Session {
    Session::connect(url, "realm1", ser)
        .await
        .unwrap_or_else(|e| panic!("{url} {ser}: join: {e}"))
}

async fn register_echoes(callee: &Session) {
    callee
        .register_typed("com.example.order", |o: Order| async move { Ok(o) })
        .await
        .expect("register order");
    callee
        .register_typed("com.example.swap", |(a, b): (String, u64)| async move {
            Ok((b, a))
        })
        .await
        .expect("register swap");
    callee
        .register_typed("com.example.next", |n: Option<u64>| async move {
            Ok(n.map(|n| n + 1))
        })
        .await
        .expect("register next");
    callee
        .register_typed("com.example.kind", |k: Kind| async move { Ok((k,)) })
        .await
        .expect("register kind");
    callee
        .register_typed(
            "com.example.both",
            |b: ArgsKw<(u64, u64), BTreeMap<String, u64>>| async move {
                Ok(b.args.0 + b.args.1 + b.kwargs.values().sum::<u64>())
            },
        )
        .await
        .expect("register both");
}

#[test]
fn typed_values_round_trip_over_every_serializer() {
    let r = Router::start("");
    block_on(async {
        // The callee speaks CBOR: every caller's payload is transcoded.
        let callee = join(&r.rs_url(), Serializer::Cbor).await;
        register_echoes(&callee).await;
        for ser in Serializer::ALL {
            let s = join(&r.ws_url(), ser).await;
            let back: Order = s
                .call_typed("com.example.order", order())
                .await
                .unwrap_or_else(|e| panic!("{ser}: order: {e}"));
            assert_eq!(back, order(), "{ser}");
            // A struct travels as keyword arguments.
            let raw = s
                .call("com.example.order", vec![], Dict::new())
                .await
                .expect_err("no arguments");
            assert_eq!(raw.uri, WAMP_INVALID_ARGUMENT, "{ser}");

            let swapped: (u64, String) = s
                .call_typed("com.example.swap", ("x", u64::MAX))
                .await
                .unwrap_or_else(|e| panic!("{ser}: swap: {e}"));
            assert_eq!(swapped, (u64::MAX, "x".to_string()), "{ser}");

            let none: Option<u64> = s
                .call_typed("com.example.next", None::<u64>)
                .await
                .unwrap_or_else(|e| panic!("{ser}: next(None): {e}"));
            assert_eq!(none, None, "{ser}");
            let some: Option<u64> = s
                .call_typed("com.example.next", u64::MAX - 1)
                .await
                .unwrap_or_else(|e| panic!("{ser}: next(n): {e}"));
            assert_eq!(some, Some(u64::MAX), "{ser}");

            for k in [
                Kind::Plain,
                Kind::Weighted(0.25),
                Kind::Sized { w: 1, h: 0 },
            ] {
                // One enum value as one positional argument: a 1-tuple.
                let back: Kind = s
                    .call_typed("com.example.kind", (k.clone(),))
                    .await
                    .unwrap_or_else(|e| panic!("{ser}: kind: {e}"));
                assert_eq!(back, k, "{ser}");
            }

            let sum: u64 = s
                .call_typed(
                    "com.example.both",
                    ArgsKw {
                        args: (1u64, 2u64),
                        kwargs: BTreeMap::from([("c".to_string(), 3u64)]),
                    },
                )
                .await
                .unwrap_or_else(|e| panic!("{ser}: both: {e}"));
            assert_eq!(sum, 6, "{ser}");
            s.leave().await.expect("leave");
        }
    });
}

#[test]
fn a_typed_callee_refuses_arguments_that_do_not_fit() {
    let r = Router::start("");
    block_on(async {
        let callee = join(&r.rs_url(), Serializer::MsgPack).await;
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&runs);
        callee
            .register_typed("com.example.add", move |(a, b): (u64, u64)| {
                counter.fetch_add(1, Ordering::SeqCst);
                async move { Ok(a + b) }
            })
            .await
            .expect("register");
        callee
            .register_typed("com.example.order", |o: Order| async move { Ok(o.id) })
            .await
            .expect("register");
        let caller = join(&r.ws_url(), Serializer::Json).await;

        let e = caller
            .call(
                "com.example.add",
                vec![Value::from("two"), Value::UInt(3)],
                Dict::new(),
            )
            .await
            .expect_err("a string is not a u64");
        assert_eq!(e.uri, WAMP_INVALID_ARGUMENT);
        let msg = e.args.first().and_then(Value::as_str).unwrap_or_default();
        assert!(
            msg.contains("com.example.add") && msg.contains("invalid type: string \"two\""),
            "{msg}"
        );
        let e: CallError = caller
            .call_typed::<u64>("com.example.add", (1u64, 2u64, 3u64))
            .await
            .expect_err("three arguments for two");
        assert_eq!(e.uri, WAMP_INVALID_ARGUMENT, "{e}");

        #[derive(Serialize)]
        struct Partial {
            id: u64,
        }
        let e = caller
            .call_typed::<u64>("com.example.order", Partial { id: 1 })
            .await
            .expect_err("missing fields");
        assert_eq!(e.uri, WAMP_INVALID_ARGUMENT);
        assert!(e.to_string().contains("missing field `balance`"), "{e}");
        assert_eq!(runs.load(Ordering::SeqCst), 0, "the handler never ran");

        // And the callee still serves.
        let sum: u64 = caller
            .call_typed("com.example.add", (2u64, 3u64))
            .await
            .expect("add");
        assert_eq!(sum, 5);
    });
}

#[test]
fn a_result_that_does_not_fit_is_a_client_error() {
    let r = Router::start("");
    block_on(async {
        let callee = join(&r.rs_url(), Serializer::Cbor).await;
        callee
            .register("com.example.name", |_, _| async move {
                Ok((vec![Value::from("not a number")], Dict::new()))
            })
            .await
            .expect("register");
        let caller = join(&r.rs_url(), Serializer::MsgPack).await;
        let e = caller
            .call_typed::<u64>("com.example.name", ())
            .await
            .expect_err("a string is not a u64");
        assert_eq!(e.uri, INVALID_RESULT);
        let text = e.to_string();
        assert!(
            text.contains("com.example.name")
                && text.contains("u64")
                && text.contains("invalid type: string \"not a number\""),
            "{text}"
        );
        // What Autobahn and most clients send when a procedure returns a
        // dict or a list: one positional argument.
        callee
            .register("com.example.dict", |_, _| async move {
                let d = Dict::new().with("sensor", "p").with("celsius", 1u64);
                Ok((vec![Value::Dict(d)], Dict::new()))
            })
            .await
            .expect("register");
        callee
            .register("com.example.list", |_, _| async move {
                Ok((
                    vec![Value::List(vec![Value::UInt(1), Value::UInt(2)])],
                    Dict::new(),
                ))
            })
            .await
            .expect("register");
        let r: Reading = caller
            .call_typed("com.example.dict", ())
            .await
            .expect("dict");
        assert_eq!(r.celsius, 1.0);
        let v: Vec<u32> = caller
            .call_typed("com.example.list", ())
            .await
            .expect("vec");
        assert_eq!(v, vec![1, 2]);
        let t: (u8, u8) = caller
            .call_typed("com.example.list", ())
            .await
            .expect("tuple");
        assert_eq!(t, (1, 2));

        // Errors with a typed payload.
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Limit {
            max: u64,
        }
        callee
            .register_typed("com.example.limited", |n: u64| async move {
                if n > 10 {
                    return Err(CallError::with_typed(
                        "com.example.error.limit",
                        Limit { max: 10 },
                    ));
                }
                Ok(n)
            })
            .await
            .expect("register");
        let e = caller
            .call_typed::<u64>("com.example.limited", 11u64)
            .await
            .expect_err("over the limit");
        assert_eq!(e.uri, "com.example.error.limit");
        assert_eq!(e.typed::<Limit>(), Ok(Limit { max: 10 }));

        // The same result read as what it is.
        let name: String = caller
            .call_typed("com.example.name", ())
            .await
            .expect("a string");
        assert_eq!(name, "not a number");
    });
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Reading {
    sensor: String,
    celsius: f64,
}

#[test]
fn typed_pubsub_skips_events_that_do_not_fit() {
    let r = Router::start("");
    block_on(async {
        let sub = join(&r.ws_url(), Serializer::Json).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        sub.subscribe_typed("com.example.reading", move |r: Reading| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(r);
            }
        })
        .await
        .expect("subscribe");
        let publisher = join(&r.rs_url(), Serializer::Cbor).await;
        publisher
            .publish(
                "com.example.reading",
                vec![Value::from("garbage")],
                Dict::new(),
                true,
            )
            .await
            .expect("publish garbage");
        let good = Reading {
            sensor: "t1".into(),
            celsius: -3.5,
        };
        publisher
            .publish_typed("com.example.reading", good.clone(), true)
            .await
            .expect("publish typed");
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("an event in time")
            .expect("open");
        assert_eq!(got, good, "the bad event was skipped, the good one arrives");
        assert!(rx.try_recv().is_err(), "nothing else");
    });
}

#[test]
fn a_reconnecting_session_has_the_typed_methods_across_a_restart() {
    let mut r = Router::start("");
    let url = r.rs_url();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (service, mut readings, key) = rt.block_on(async {
        let connector: Connector = Arc::new(move || {
            let url = url.clone();
            Box::pin(async move { Session::connect(&url, "realm1", Serializer::MsgPack).await })
        });
        let opts = ReconnectOptions {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(300),
            ..ReconnectOptions::default()
        };
        let service = ReconnectingSession::start(connector, opts)
            .await
            .expect("start");
        service
            .register_typed("com.example.double", Dict::new(), |n: u64| async move {
                Ok(n * 2)
            })
            .await
            .expect("register");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let key = service
            .subscribe_typed("com.example.reading", Dict::new(), move |r: Reading| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(r);
                }
            })
            .await
            .expect("subscribe");
        (service, rx, key)
    });
    r.restart();
    rt.block_on(async {
        let caller = join(&r.ws_url(), Serializer::Json).await;
        let reading = Reading {
            sensor: "t2".into(),
            celsius: 21.0,
        };
        // Until the service has re-registered after the restart.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let doubled: u64 = loop {
            match caller.call_typed("com.example.double", 21u64).await {
                Ok(v) => break v,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("not re-registered: {e}"),
            }
        };
        assert_eq!(doubled, 42);
        caller
            .publish_typed("com.example.reading", reading.clone(), true)
            .await
            .expect("publish");
        let got = tokio::time::timeout(Duration::from_secs(5), readings.recv())
            .await
            .expect("an event in time")
            .expect("open");
        assert_eq!(got, reading);
        let tripled: u64 = service
            .call_typed("com.example.double", 3u64)
            .await
            .expect("call through the reconnecting session");
        assert_eq!(tripled, 6);
        service
            .publish_typed("com.example.other", ("x",), false)
            .await
            .expect("publish through the reconnecting session");
        // Forgotten: the handler sees no further event (its stream ends).
        service.unsubscribe(key);
        caller
            .publish_typed("com.example.reading", reading.clone(), true)
            .await
            .expect("publish");
        let after = tokio::time::timeout(Duration::from_secs(5), readings.recv()).await;
        assert!(
            matches!(after, Ok(None)),
            "no event after unsubscribe, and the handler is gone: {after:?}"
        );
        service.leave().await.expect("leave");
    });
}
