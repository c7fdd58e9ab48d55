//! The operations listener over real sockets: /healthz, /readyz (ready
//! after start, 503 with the reason while shutting down), /metrics with the
//! traffic and process families after real WAMP traffic, and the bounds
//! that keep the unauthenticated port from being a DoS vector.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{args, free_port, Raw, Router};
use switchyard_proto::{Dict, Message, Serializer, Value};

fn start() -> (Router, u16) {
    start_with("")
}

fn start_with(keys: &str) -> (Router, u16) {
    let port = free_port();
    let r = Router::start(&format!(
        "[[listener]]\ntype = \"operations\"\naddress = \"127.0.0.1:{port}\"\n{keys}\n"
    ));
    (r, port)
}

/// One HTTP/1.1 request; the status and the body.
fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    http_with_body(port, method, path, "")
}

fn http_with_body(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read answer");
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {out:?}"));
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string())
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The value of the sample `name` (with its labels, as written) in a scrape.
fn sample(scrape: &str, name: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn healthz_and_readyz_answer_200_once_started() {
    let bridge = free_port();
    let (r, port) = start_with(&format!(
        "\n[[bridge]]\naddress = \"127.0.0.1:{bridge}\"\nrealm = \"realm1\"\nallow_unsigned = true\n"
    ));
    assert_eq!(http(port, "GET", "/healthz"), (200, "ok\n".to_string()));
    let (status, body) = http(port, "GET", "/readyz");
    assert_eq!(status, 200, "{body}");
    let body = json(&body);
    assert_eq!(body["status"], "ready");
    assert_eq!(body["not_ready"], serde_json::json!([]));
    let checks = body["checks"].as_array().expect("checks");
    let names: Vec<String> = checks
        .iter()
        .map(|c| {
            assert_eq!(c["ready"], true, "{c}");
            format!(
                "{} {}",
                c["kind"].as_str().unwrap(),
                c["name"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        names.contains(&format!("listener ws://127.0.0.1:{}/ws", r.ws_port)),
        "{names:?}"
    );
    assert!(
        names.contains(&format!("listener tcp://127.0.0.1:{}", r.rs_port)),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.starts_with("listener unix:")),
        "{names:?}"
    );
    assert!(
        names.contains(&"queue_store realm1".to_string()),
        "{names:?}"
    );
    // Asked at each request: the store takes writes.
    assert!(
        names.contains(&"queue_store realm1 (writes)".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&format!("bridge http://127.0.0.1:{bridge}")),
        "{names:?}"
    );
    assert_eq!(names.len(), 6, "{names:?}");

    // HEAD is served without a body; other methods and paths are refused.
    assert_eq!(http(port, "HEAD", "/healthz"), (200, String::new()));
    assert_eq!(http(port, "POST", "/readyz").0, 405);
    let (status, body) = http(port, "GET", "/admin");
    assert_eq!(status, 404);
    assert!(body.contains("/healthz, /readyz and /metrics"), "{body}");
}

#[test]
fn readyz_is_503_with_the_reason_while_shutting_down() {
    // Not ready for 2 s after SIGTERM, while the sessions are still served.
    let (mut r, port) = start_with("shutdown_delay = \"2s\"");
    let mut c = Raw::connect(r.rs_port, Serializer::Json);
    c.join("realm1");
    let pid = r.child.as_ref().expect("running").id();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(3);
    let body = loop {
        let (status, body) = http(port, "GET", "/readyz");
        if status == 503 {
            break json(&body);
        }
        assert_eq!(status, 200, "{body}");
        assert!(
            Instant::now() < deadline,
            "/readyz stayed 200 after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["not_ready"][0], "the server is shutting down");
    // Alive, not ready, and still serving its sessions.
    assert_eq!(http(port, "GET", "/healthz").0, 200);
    let request = c.req();
    c.send(&Message::Publish {
        request,
        options: Dict::new().with("acknowledge", true),
        topic: "com.example.draining".into(),
        payload: args(vec![]),
    });
    assert!(matches!(c.expect("PUBLISHED"), Message::Published { .. }));
    // Then the sessions are told GOODBYE and the process exits.
    assert!(matches!(c.expect("GOODBYE"), Message::Goodbye { .. }));
    let status = r.terminate();
    assert!(status.success(), "{status:?}");
}

#[test]
fn metrics_count_sessions_messages_and_bytes_after_traffic() {
    let (r, port) = start();
    let (_, before) = http(port, "GET", "/metrics");
    let registrations = "switchyard_registrations{realm=\"realm1\"}";
    let subscriptions = "switchyard_subscriptions{realm=\"realm1\"}";
    // The router's own sessions (the queue service) register and subscribe
    // too.
    let own_regs = sample(&before, registrations).expect("registrations");
    let own_subs = sample(&before, subscriptions).expect("subscriptions");
    let mut sub = Raw::connect(r.rs_port, Serializer::Json);
    let (_, welcome) = sub.join("realm1");
    let authrole = match welcome.get("authrole") {
        Some(Value::Str(s)) => s.clone(),
        other => panic!("authrole {other:?}"),
    };
    sub.subscribe("com.example.ops");
    sub.register("com.example.ops.proc");
    let mut publisher = Raw::connect(r.rs_port, Serializer::MsgPack);
    publisher.join("realm1");
    const N: usize = 5;
    for _ in 0..N {
        let request = publisher.req();
        publisher.send(&Message::Publish {
            request,
            options: Dict::new().with("acknowledge", true),
            topic: "com.example.ops".into(),
            payload: args(vec![Value::Str("x".repeat(100))]),
        });
        assert!(matches!(
            publisher.expect("PUBLISHED"),
            Message::Published { .. }
        ));
        assert!(matches!(sub.expect("EVENT"), Message::Event { .. }));
    }

    // Messages out are counted where they are queued, before the client
    // reads them; the scrape is still retried briefly (bounded).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let scrape = loop {
        let (status, scrape) = http(port, "GET", "/metrics");
        assert_eq!(status, 200);
        let events = sample(&scrape, "switchyard_messages_out_total{type=\"EVENT\"}");
        if events == Some(N as f64) || std::time::Instant::now() > deadline {
            break scrape;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let v = |name: &str| sample(&scrape, name).unwrap_or_else(|| panic!("{name} in\n{scrape}"));
    assert_eq!(
        v("switchyard_messages_in_total{type=\"PUBLISH\"}"),
        N as f64
    );
    assert_eq!(
        v("switchyard_messages_out_total{type=\"PUBLISHED\"}"),
        N as f64
    );
    assert_eq!(v("switchyard_messages_out_total{type=\"EVENT\"}"), N as f64);
    assert_eq!(v("switchyard_messages_in_total{type=\"SUBSCRIBE\"}"), 1.0);
    assert_eq!(v("switchyard_messages_in_total{type=\"REGISTER\"}"), 1.0);
    assert_eq!(v(subscriptions), own_subs + 1.0);
    assert_eq!(v(registrations), own_regs + 1.0);
    assert_eq!(v("switchyard_messages_in_total{type=\"HELLO\"}"), 2.0);
    assert_eq!(v("switchyard_messages_out_total{type=\"WELCOME\"}"), 2.0);
    assert_eq!(v("switchyard_messages_in_total{type=\"CALL\"}"), 0.0);
    // Each PUBLISH carries a 100-byte argument: the bytes in and out count
    // at least the payloads.
    assert!(v("switchyard_message_bytes_in_total") > (N * 100) as f64);
    assert!(v("switchyard_message_bytes_out_total") > (N * 100) as f64);
    for ser in ["json", "msgpack"] {
        let name = format!(
            "switchyard_sessions{{realm=\"realm1\",transport=\"rawsocket\",serializer=\"{ser}\",authrole=\"{authrole}\"}}"
        );
        assert_eq!(v(&name), 1.0, "{name}");
    }
    assert!(v("process_resident_memory_bytes") > 1e6);
    assert!(v("process_open_fds") >= 5.0);
    assert!(v("process_cpu_seconds_total") >= 0.0);
    // The families that existed before stay.
    assert!(sample(&scrape, "switchyard_auth_succeeded_total").is_some());
    assert!(sample(&scrape, "switchyard_connections_refused_total").is_some());

    // A session that leaves is uncounted.
    publisher.send(&Message::Goodbye {
        details: Dict::new(),
        reason: "wamp.close.normal".into(),
    });
    publisher.expect("GOODBYE");
    let name = format!(
        "switchyard_sessions{{realm=\"realm1\",transport=\"rawsocket\",serializer=\"msgpack\",authrole=\"{authrole}\"}}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, scrape) = http(port, "GET", "/metrics");
        if sample(&scrape, &name) == Some(0.0) {
            break;
        }
        assert!(Instant::now() < deadline, "{name} still counted:\n{scrape}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn operations_connections_are_capped_and_the_port_recovers() {
    let (_r, port) = start();
    // Idle connections (no request) up to the cap hold every slot...
    let idle: Vec<TcpStream> = (0..16)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // ... and one more is closed without an answer.
    let mut extra = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = Vec::new();
    let n = extra.read_to_end(&mut buf).unwrap_or(0);
    assert_eq!(
        n,
        0,
        "answered over the cap: {:?}",
        String::from_utf8_lossy(&buf)
    );
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // Slots free once the server sees the idle connections close.
        if let Ok((200, _)) = std::panic::catch_unwind(|| http(port, "GET", "/healthz")) {
            break;
        }
        assert!(Instant::now() < deadline, "the port did not recover");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_idle_operations_connection_is_closed_after_the_header_timeout() {
    let (_r, port) = start();
    let mut idle = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    idle.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let n = idle.read_to_end(&mut buf).unwrap_or(0);
    let waited = started.elapsed();
    // hyper answers a request head that never came with 408 or just closes.
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text:?}");
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(9),
        "closed after {waited:?}"
    );
}

/// Publishes `n` acknowledged events of `size` bytes to `topic`.
fn flood(p: &mut Raw, topic: &str, n: usize, size: usize) {
    let blob = Value::Bytes(vec![7u8; size]);
    for _ in 0..n {
        let request = p.req();
        p.send(&Message::Publish {
            request,
            options: Dict::new().with("acknowledge", true),
            topic: topic.into(),
            payload: args(vec![blob.clone()]),
        });
        assert!(matches!(p.expect("PUBLISHED"), Message::Published { .. }));
    }
}

fn slow_consumer_actions(port: u16) -> (f64, f64) {
    let (_, scrape) = http(port, "GET", "/metrics");
    let v = |action: &str| {
        sample(
            &scrape,
            &format!("switchyard_slow_consumer_actions_total{{action=\"{action}\"}}"),
        )
        .unwrap_or_else(|| panic!("{action} in\n{scrape}"))
    };
    (v("disconnect"), v("drop_event"))
}

#[test]
fn slow_consumer_actions_are_counted_by_action() {
    // A subscriber that never reads, 24 MiB of events (more than the
    // socket buffers hold), an outbound queue of 4 messages.
    for (policy, expect_disconnect) in [("disconnect", true), ("drop_events", false)] {
        let port = free_port();
        let r = Router::start(&format!(
            "[[listener]]\ntype = \"operations\"\naddress = \"127.0.0.1:{port}\"\n\n\
             [limits]\noutbound_queue = 4\nslow_consumer = \"{policy}\"\n"
        ));
        assert_eq!(slow_consumer_actions(port), (0.0, 0.0));
        let mut slow = Raw::connect(r.rs_port, Serializer::Json);
        slow.join("realm1");
        slow.subscribe("com.example.firehose");
        let mut p = Raw::connect(r.rs_port, Serializer::MsgPack);
        p.join("realm1");
        flood(&mut p, "com.example.firehose", 384, 64 * 1024);
        let (disconnects, dropped) = slow_consumer_actions(port);
        if expect_disconnect {
            assert_eq!((disconnects, dropped), (1.0, 0.0), "{policy}");
        } else {
            assert_eq!(disconnects, 0.0, "{policy}");
            assert!(dropped > 0.0 && dropped < 384.0, "{policy}: {dropped}");
        }
    }
}

#[test]
fn bridge_requests_are_counted_by_endpoint_and_status() {
    let bridge = free_port();
    let (_r, port) = start_with(&format!(
        "\n[[bridge]]\naddress = \"127.0.0.1:{bridge}\"\nrealm = \"realm1\"\nallow_unsigned = true\n"
    ));
    let publish = r#"{"topic": "com.example.bridged", "args": [1]}"#;
    for _ in 0..2 {
        let (status, body) = http_with_body(bridge, "POST", "/publish", publish);
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(http(bridge, "GET", "/publish").0, 405);
    assert_eq!(http(bridge, "GET", "/random/path/1").0, 404);
    assert_eq!(http(bridge, "GET", "/random/path/2").0, 404);
    let (_, scrape) = http(port, "GET", "/metrics");
    let v = |endpoint: &str, status: u16| {
        sample(
            &scrape,
            &format!(
                "switchyard_bridge_requests_total{{realm=\"realm1\",endpoint=\"{endpoint}\",status=\"{status}\"}}"
            ),
        )
        .unwrap_or_else(|| panic!("{endpoint} {status} in\n{scrape}"))
    };
    assert_eq!(v("publish", 200), 2.0);
    assert_eq!(v("publish", 405), 1.0);
    // Unknown paths share one label value.
    assert_eq!(v("other", 404), 2.0);
}

/// A HELLO offering `methods` (and `authid`).
fn hello_with(methods: &[&str], authid: Option<&str>) -> Message {
    let mut details = Dict::new()
        .with("roles", Dict::new().with("subscriber", Dict::new()))
        .with(
            "authmethods",
            Value::List(methods.iter().map(|m| Value::from(*m)).collect()),
        );
    if let Some(a) = authid {
        details.insert("authid", a);
    }
    Message::Hello {
        realm: "realm1".into(),
        details,
    }
}

#[test]
fn auth_failures_are_counted_by_method_and_reason_and_routing_latency_is_observed() {
    let hash = switchyard_router::auth::ticket::hash_secret("right").expect("hash");
    let (r, port) = start_with(&format!(
        "\n[realm.auth]\nmethods = [\"anonymous\", \"ticket\"]\n\n[[realm.auth.ticket]]\nauthid = \"alice\"\nsecret = \"{hash}\"\nrole = \"user\"\n"
    ));
    // No method allowed here: method "none".
    let mut c = Raw::connect(r.rs_port, Serializer::Json);
    c.send(&hello_with(&["wampcra"], Some("x")));
    assert!(matches!(c.expect("ABORT"), Message::Abort { .. }));
    // A wrong ticket: "rejected", whatever the client wrote.
    let mut c = Raw::connect(r.rs_port, Serializer::Json);
    c.send(&hello_with(&["ticket"], Some("alice")));
    assert!(matches!(c.expect("CHALLENGE"), Message::Challenge { .. }));
    c.send(&Message::Authenticate {
        signature: "wrong".into(),
        extra: Dict::new(),
    });
    assert!(matches!(c.expect("ABORT"), Message::Abort { .. }));

    // A PUBLISH reaching a subscriber, and a CALL answered.
    let mut callee = Raw::connect(r.rs_port, Serializer::MsgPack);
    callee.join("realm1");
    callee.subscribe("com.example.lat");
    callee.register("com.example.lat.proc");
    let mut caller = Raw::connect(r.rs_port, Serializer::Json);
    caller.join("realm1");
    let request = caller.req();
    caller.send(&Message::Publish {
        request,
        options: Dict::new().with("acknowledge", true),
        topic: "com.example.lat".into(),
        payload: args(vec![]),
    });
    assert!(matches!(
        caller.expect("PUBLISHED"),
        Message::Published { .. }
    ));
    assert!(matches!(callee.expect("EVENT"), Message::Event { .. }));
    let request = caller.req();
    caller.send(&Message::Call {
        request,
        options: Dict::new(),
        procedure: "com.example.lat.proc".into(),
        payload: args(vec![]),
    });
    let invocation = match callee.expect("INVOCATION") {
        Message::Invocation { request, .. } => request,
        other => panic!("expected INVOCATION, got {other:?}"),
    };
    callee.send(&Message::Yield {
        request: invocation,
        options: Dict::new(),
        payload: args(vec![]),
    });
    assert!(matches!(caller.expect("RESULT"), Message::Result { .. }));

    let (_, scrape) = http(port, "GET", "/metrics");
    let v = |name: &str| sample(&scrape, name).unwrap_or_else(|| panic!("{name} in\n{scrape}"));
    assert_eq!(
        v("switchyard_auth_failures_total{method=\"none\",reason=\"no_matching_method\"}"),
        1.0
    );
    assert_eq!(
        v("switchyard_auth_failures_total{method=\"ticket\",reason=\"rejected\"}"),
        1.0
    );
    assert_eq!(
        v("switchyard_routing_latency_seconds_count{kind=\"publish\"}"),
        1.0
    );
    assert_eq!(
        v("switchyard_routing_latency_seconds_count{kind=\"call\"}"),
        1.0
    );
    assert_eq!(
        v("switchyard_routing_latency_seconds_bucket{kind=\"call\",le=\"+Inf\"}"),
        1.0
    );
}

/// Families named by the dashboard that only a node in a cluster has
/// (tests/cluster.rs checks them there).
const CLUSTER_ONLY: &[&str] = &["switchyard_cluster_nats_connected"];

/// The metric names a PromQL expression uses.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = ["switchyard_", "process_"]
        .iter()
        .filter_map(|p| rest.find(p))
        .min()
    {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        out.push(name);
    }
    out
}

/// Whether the scrape has a sample named `name`.
fn exists(scrape: &str, name: &str) -> bool {
    scrape.lines().any(|l| {
        l.strip_prefix(name)
            .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
    })
}

#[test]
fn the_grafana_dashboard_names_only_families_that_exist() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/grafana/switchyard.json"
    );
    let text = std::fs::read_to_string(path).expect("docs/grafana/switchyard.json");
    let dashboard = json(&text);
    let bridge = free_port();
    // A queue and a bridge, so that their families are there.
    let (r, port) = start_with(&format!(
        "\n[[realm.queue]]\nname = \"jobs\"\ntarget = \"com.example.work\"\n\n\
         [[bridge]]\naddress = \"127.0.0.1:{bridge}\"\nrealm = \"realm1\"\nallow_unsigned = true\n"
    ));
    // Families with labels have samples only once something happened: a
    // session, a failed login, a bridge request.
    let mut session = Raw::connect(r.rs_port, Serializer::Json);
    session.join("realm1");
    let mut refused = Raw::connect(r.rs_port, Serializer::Json);
    refused.send(&hello_with(&["ticket"], Some("x")));
    assert!(matches!(refused.expect("ABORT"), Message::Abort { .. }));
    let publish = r#"{"topic": "com.example.bridged", "args": [1]}"#;
    assert_eq!(http_with_body(bridge, "POST", "/publish", publish).0, 200);
    let (_, scrape) = http(port, "GET", "/metrics");
    let mut named = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for name in metric_names(expr) {
                named += 1;
                if CLUSTER_ONLY.contains(&name.as_str()) {
                    continue;
                }
                assert!(
                    exists(&scrape, &name),
                    "panel {:?} names {name}, not in the scrape:\n{scrape}",
                    panel["title"]
                );
            }
        }
    }
    assert!(named > 20, "the dashboard names {named} metrics");
}
