//! Heartbeats from the client's side: a `switchyard-client` session pings a
//! router that has gone quiet and, when the router stays silent past
//! ping_interval + ping_timeout (here: the router process is stopped with
//! SIGSTOP, so its sockets stay open but nothing answers), drops the
//! connection; a `ReconnectingSession` then reconnects once the router
//! answers again, and its subscription works. Over WebSocket (ping frames)
//! and RawSocket (PING frames). The router's side (dropping a silent peer)
//! is tests/interop/python/test_timeouts.py.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Router;
use switchyard_client::reconnect::{Connector, Status};
use switchyard_client::{
    Dict, ReconnectOptions, ReconnectingSession, Serializer, Session, SessionOptions, Value,
};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// SIGSTOP / SIGCONT to the router, through the shell's `kill` (no unsafe
/// here, no procps needed).
fn signal(r: &Router, sig: &str) {
    let pid = r.child.as_ref().expect("running").id().to_string();
    let ok = std::process::Command::new("sh")
        .args(["-c", &format!("kill {sig} {pid}")])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {sig} {pid}");
}

async fn wait_status(rs: &ReconnectingSession, what: &str, f: impl Fn(&Status) -> bool) -> Status {
    let mut rx = rs.status();
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let s = rx.borrow_and_update().clone();
            if f(&s) {
                return s;
            }
            if rx.changed().await.is_err() {
                panic!("status channel closed while waiting for {what}");
            }
        }
    })
    .await;
    waited.unwrap_or_else(|_| panic!("no {what}: {:?}", rs.status().borrow().clone()))
}

fn silent_router_is_left_and_found_again(url_of: fn(&Router) -> String, ser: Serializer) {
    let r = Router::start("");
    let url = url_of(&r);
    block_on(async {
        let u = url.clone();
        let connector: Connector = Arc::new(move || {
            let u = u.clone();
            Box::pin(async move {
                let mut o = SessionOptions::new(ser);
                o.ping_interval = Duration::from_millis(300);
                o.ping_timeout = Duration::from_millis(300);
                o.timeout = Duration::from_secs(1);
                Session::connect_with(&u, "realm1", o).await
            })
        });
        let options = ReconnectOptions {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(500),
            ..ReconnectOptions::default()
        };
        let rs = ReconnectingSession::start(connector, options)
            .await
            .expect("join");
        let (tx, mut events) = tokio::sync::mpsc::channel(16);
        rs.subscribe_into("test.keepalive", Dict::new(), tx)
            .await
            .expect("subscribe");
        // Idle but answered: pings keep it up.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert!(matches!(
            *rs.status().borrow(),
            Status::Connected { reconnects: 0, .. }
        ));

        signal(&r, "-STOP");
        let t0 = std::time::Instant::now();
        let lost = wait_status(&rs, "the silent router left", |s| {
            matches!(s, Status::Reconnecting { .. })
        })
        .await;
        let took = t0.elapsed();
        signal(&r, "-CONT");
        eprintln!("{url}: the silent router was left after {took:?}");
        match &lost {
            Status::Reconnecting { error, .. } => {
                assert!(error.contains("silent"), "{error}")
            }
            other => panic!("{other:?}"),
        }
        // Silence counted from the last frame: at most interval + timeout
        // (600 ms) plus the keepalive's step, well under 2 s.
        assert!(took < Duration::from_secs(2), "{took:?}");

        wait_status(&rs, "the reconnect", |s| {
            matches!(s, Status::Connected { reconnects: 1, .. })
        })
        .await;
        let publisher = Session::connect(&url, "realm1", Serializer::Json)
            .await
            .expect("publisher");
        publisher
            .publish(
                "test.keepalive",
                vec![Value::from("back")],
                Dict::new(),
                true,
            )
            .await
            .expect("publish");
        let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("an event in time")
            .expect("event");
        assert_eq!(ev.args().expect("args"), vec![Value::from("back")]);
        let _ = rs.leave().await;
    });
}

#[test]
fn over_websocket_a_silent_router_is_left_and_found_again() {
    silent_router_is_left_and_found_again(Router::ws_url, Serializer::Json);
}

#[test]
fn over_rawsocket_a_silent_router_is_left_and_found_again() {
    silent_router_is_left_and_found_again(Router::rs_url, Serializer::MsgPack);
}
