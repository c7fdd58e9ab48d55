//! Cluster mode over NATS (issue 15, first slice: PubSub): a real
//! `nats-server` (JetStream on, a random loopback port, a temporary store)
//! and real `switchyard` nodes joined by it, driven by RawSocket clients.
//! What is asserted on the wire of NATS is read from the server's
//! monitoring endpoint (`/connz?subs=1`: each node's subscriptions and the
//! messages NATS sent it).
//!
//! Needs `nats-server` (scripts/install-nats.sh installs Debian's, in
//! /usr/sbin; `NATS_SERVER` names another binary).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::nats::{http_get, Nats};
use common::{args, args_of, free_port, Raw, Router};
use switchyard_proto::{Dict, Message, Serializer, Value};

fn client(node: &Router) -> (Raw, u64) {
    let mut c = Raw::connect(node.rs_port, Serializer::Json);
    let (id, _) = c.join("realm1");
    (c, id)
}

fn subscribe(c: &mut Raw, topic: &str, policy: &str) -> u64 {
    let request = c.req();
    let options = if policy == "exact" {
        Dict::new()
    } else {
        Dict::new().with("match", policy)
    };
    c.send(&Message::Subscribe {
        request,
        options,
        topic: topic.into(),
    });
    match c.expect("SUBSCRIBED") {
        Message::Subscribed { subscription, .. } => subscription,
        other => panic!("expected SUBSCRIBED, got {other:?}"),
    }
}

fn publish(c: &mut Raw, topic: &str, options: Dict, n: u64) {
    let request = c.req();
    c.send(&Message::Publish {
        request,
        options,
        topic: topic.into(),
        payload: args(vec![Value::UInt(n)]),
    });
}

/// Every EVENT `c` receives until it is quiet for `quiet`:
/// (subscription, details, first argument).
fn events(c: &mut Raw, quiet: Duration) -> Vec<(u64, Dict, u64)> {
    c.stream.set_read_timeout(Some(quiet)).expect("timeout");
    let mut out = Vec::new();
    while let Some(m) = c.recv() {
        if let Message::Event {
            subscription,
            details,
            payload,
            ..
        } = m
        {
            let n = args_of(&payload)
                .first()
                .and_then(Value::as_u64)
                .unwrap_or(u64::MAX);
            out.push((subscription, details, n));
        }
    }
    c.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    out
}

fn numbers(events: &[(u64, Dict, u64)]) -> Vec<u64> {
    events.iter().map(|e| e.2).collect()
}

const QUIET: Duration = Duration::from_millis(500);

#[test]
fn a_publication_reaches_every_other_node_exactly_once_in_order() {
    let nats = Nats::start();
    let (a, b, c) = (nats.node("a"), nats.node("b"), nats.node("c"));
    let (mut on_a, _) = client(&a);
    let (mut on_b, _) = client(&b);
    let (mut on_c, _) = client(&c);
    let (mut publisher, _) = client(&a);
    for s in [&mut on_a, &mut on_b, &mut on_c] {
        subscribe(s, "com.example.topic", "exact");
    }
    for node in ["a", "b", "c"] {
        nats.wait_subjects(node, &["sy.realm1.pub.com.example.topic"]);
    }
    let before: Vec<u64> = ["a", "b", "c"].iter().map(|n| nats.sent_to(n)).collect();
    for n in 0..200 {
        publish(&mut publisher, "com.example.topic", Dict::new(), n);
    }
    let want: Vec<u64> = (0..200).collect();
    for (name, s) in [("a", &mut on_a), ("b", &mut on_b), ("c", &mut on_c)] {
        assert_eq!(
            numbers(&events(s, QUIET)),
            want,
            "subscriber on node {name}"
        );
    }
    // The publishing node got nothing back from NATS (local delivery stays
    // local; no echo), the others got each publication once.
    assert_eq!(nats.sent_to("a") - before[0], 0);
    assert_eq!(nats.sent_to("b") - before[1], 200);
    assert_eq!(nats.sent_to("c") - before[2], 200);
}

#[test]
fn prefix_and_wildcard_subscriptions_across_nodes() {
    let nats = Nats::start();
    let (a, b, c) = (nats.node("a"), nats.node("b"), nats.node("c"));
    let (mut publisher, _) = client(&a);
    let (mut on_b, _) = client(&b);
    let (mut on_c, _) = client(&c);
    // A WAMP prefix is a string prefix: "com.ex" matches "com.example.a".
    let prefix = subscribe(&mut on_b, "com.ex", "prefix");
    let exact = subscribe(&mut on_b, "com.example.a", "exact");
    let wildcard = subscribe(&mut on_c, "com..a", "wildcard");
    // Broad subjects (every component but the prefix's last, partial one),
    // and the exact one the prefix covers is not subscribed (no two NATS
    // subscriptions of a node overlap).
    nats.wait_subjects("b", &["sy.realm1.pub.com.>"]);
    nats.wait_subjects("c", &["sy.realm1.pub.com.>"]);
    let before = (nats.sent_to("b"), nats.sent_to("c"));
    publish(&mut publisher, "com.example.a", Dict::new(), 1);
    publish(&mut publisher, "com.other.a", Dict::new(), 2);
    publish(&mut publisher, "com.example.b", Dict::new(), 3);
    publish(&mut publisher, "org.example.a", Dict::new(), 4);
    let got_b = events(&mut on_b, QUIET);
    // (One EVENT per subscription; their order within one publication is
    // the Broker's, hence the sort.)
    let mut seen_b: Vec<(u64, u64, Option<String>)> = got_b
        .iter()
        .map(|(s, d, n)| (*n, *s, d.get_str("topic").map(str::to_string)))
        .collect();
    seen_b.sort();
    let mut want_b = vec![
        (1, prefix, Some("com.example.a".to_string())),
        (1, exact, None),
        (3, prefix, Some("com.example.b".to_string())),
    ];
    want_b.sort();
    assert_eq!(seen_b, want_b);
    let got_c = events(&mut on_c, QUIET);
    let seen_c: Vec<(u64, u64, Option<String>)> = got_c
        .iter()
        .map(|(s, d, n)| (*s, *n, d.get_str("topic").map(str::to_string)))
        .collect();
    assert_eq!(
        seen_c,
        vec![
            (wildcard, 1, Some("com.example.a".into())),
            (wildcard, 2, Some("com.other.a".into())),
        ]
    );
    // Subscribed broadly, filtered locally: NATS sent both nodes the three
    // "com." publications once each (b's Broker dropped "com.other.a", c's
    // "com.example.b") and neither got "org.example.a".
    assert_eq!(nats.sent_to("b") - before.0, 3);
    assert_eq!(nats.sent_to("c") - before.1, 3);
}

#[test]
fn exclude_eligible_and_disclosure_are_decided_on_the_receiving_node() {
    let nats = Nats::start();
    let (a, b) = (nats.node("a"), nats.node("b"));
    let (mut publisher, publisher_id) = client(&a);
    subscribe(&mut publisher, "t.x", "exact");
    let (mut b1, b1_id) = client(&b);
    let (mut b2, b2_id) = client(&b);
    subscribe(&mut b1, "t.x", "exact");
    subscribe(&mut b2, "t.x", "exact");
    nats.wait_subjects("b", &["sy.realm1.pub.t.x"]);
    let ids = |l: &[u64]| Value::List(l.iter().map(|i| Value::UInt(*i)).collect());
    publish(
        &mut publisher,
        "t.x",
        Dict::new().with("eligible", ids(&[b1_id])),
        1,
    );
    publish(
        &mut publisher,
        "t.x",
        Dict::new().with("exclude", ids(&[b1_id])),
        2,
    );
    publish(
        &mut publisher,
        "t.x",
        Dict::new()
            .with("exclude_me", false)
            .with("disclose_me", true),
        3,
    );
    assert_eq!(numbers(&events(&mut b1, QUIET)), vec![1, 3]);
    let got_b2 = events(&mut b2, QUIET);
    assert_eq!(numbers(&got_b2), vec![2, 3]);
    let disclosed = &got_b2[1].1;
    assert_eq!(
        disclosed.get("publisher").and_then(Value::as_u64),
        Some(publisher_id)
    );
    assert_eq!(disclosed.get_str("publisher_authrole"), Some("anonymous"));
    assert!(got_b2[0].1.get("publisher").is_none());
    // exclude_me = false: the publisher (on a) got its own event, once.
    assert_eq!(numbers(&events(&mut publisher, QUIET)), vec![3]);
    let _ = b2_id;
}

#[test]
fn a_node_without_subscribers_gets_nothing_from_nats() {
    let nats = Nats::start();
    let (a, b, c) = (nats.node("a"), nats.node("b"), nats.node("c"));
    let (mut publisher, _) = client(&a);
    let (mut on_b, _) = client(&b);
    let sub = subscribe(&mut on_b, "only.b", "exact");
    nats.wait_subjects("b", &["sy.realm1.pub.only.b"]);
    nats.wait_subjects("c", &[]);
    let before = nats.sent_to("b");
    for n in 0..20 {
        publish(&mut publisher, "only.b", Dict::new(), n);
    }
    assert_eq!(events(&mut on_b, QUIET).len(), 20);
    assert_eq!(nats.sent_to("c"), 0, "c has no subscriber");
    assert_eq!(nats.sent_to("b") - before, 20);
    // The last subscriber leaves: b unsubscribes from NATS, and NATS sends
    // it nothing more.
    let request = on_b.req();
    on_b.send(&Message::Unsubscribe {
        request,
        subscription: sub,
    });
    assert!(matches!(
        on_b.expect("UNSUBSCRIBED"),
        Message::Unsubscribed { .. }
    ));
    nats.wait_subjects("b", &[]);
    for n in 0..20 {
        publish(&mut publisher, "only.b", Dict::new(), n);
    }
    std::thread::sleep(QUIET);
    assert_eq!(nats.sent_to("b") - before, 20);
    assert_eq!(nats.sent_to("c"), 0);
    drop(c);
}

#[test]
fn uri_characters_nats_forbids_are_escaped() {
    let nats = Nats::start();
    let (a, b) = (nats.node("a"), nats.node("b"));
    let (mut publisher, _) = client(&a);
    let (mut on_b, _) = client(&b);
    // Loose URIs may hold '*', '>', '$' and '~' in a component.
    subscribe(&mut on_b, "a*.>.$x~", "exact");
    nats.wait_subjects("b", &["sy.realm1.pub.a~2A.~3E.~24x~7E"]);
    publish(&mut publisher, "a*.>.$x~", Dict::new(), 7);
    assert_eq!(numbers(&events(&mut on_b, QUIET)), vec![7]);
}

#[test]
fn a_node_that_cannot_reach_nats_exits_non_zero_and_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let cfg = dir.path().join("switchyard.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[listener]]\ntype = \"rawsocket\"\naddress = \"127.0.0.1:{}\"\n\n\
             [cluster]\nnode = \"lonely\"\nnats = [\"nats://127.0.0.1:{port}\"]\n",
            free_port()
        ),
    )
    .expect("config");
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .current_dir(dir.path())
        .arg("--config")
        .arg(&cfg)
        .output()
        .expect("run switchyard");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit status {:?}", out.status);
    assert!(
        stderr.contains("cannot reach NATS") && stderr.contains(&port.to_string()),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[test]
fn one_publishers_order_holds_across_topics_on_another_node() {
    // WAMP: a subscriber of two topics gets one publisher's events in
    // publication order, whatever topic each went to. On the receiving
    // node the two topics are two NATS subscriptions.
    let nats = Nats::start();
    let (a, b) = (nats.node("a"), nats.node("b"));
    let (mut publisher, _) = client(&a);
    let (mut on_b, _) = client(&b);
    let topics = ["o.one", "o.two", "o.three"];
    for t in topics {
        subscribe(&mut on_b, t, "exact");
    }
    nats.wait_subjects(
        "b",
        &[
            "sy.realm1.pub.o.one",
            "sy.realm1.pub.o.three",
            "sy.realm1.pub.o.two",
        ],
    );
    let n = 3000;
    for i in 0..n {
        publish(&mut publisher, topics[(i % 3) as usize], Dict::new(), i);
    }
    let got = numbers(&events(&mut on_b, QUIET));
    assert_eq!(got.len(), n as usize);
    let first_out_of_order = got.windows(2).position(|w| w[0] > w[1]);
    assert_eq!(first_out_of_order, None, "order broken");
}

#[test]
fn a_subscriber_joining_a_history_subscription_gets_remote_events() {
    // A history subscription exists from the start without subscribers,
    // and records the events of every node: each node listens for its
    // topic from the start (its first subscriber creates no subscription,
    // no on_create, and needs no new NATS subscription).
    let nats = Nats::start();
    let history = "[[realm.history]]\ntopic = \"h.t\"\n";
    let (a, b) = (nats.node_with("a", history), nats.node_with("b", history));
    nats.wait_subjects("b", &["sy.realm1.pub.h.t"]);
    let (mut publisher, _) = client(&a);
    let (mut on_b, _) = client(&b);
    subscribe(&mut on_b, "h.t", "exact");
    nats.wait_subjects("b", &["sy.realm1.pub.h.t"]);
    publish(&mut publisher, "h.t", Dict::new(), 5);
    assert_eq!(numbers(&events(&mut on_b, QUIET)), vec![5]);
}

#[test]
fn the_payload_crosses_nodes_and_serializers() {
    let nats = Nats::start();
    let (a, b) = (nats.node("a"), nats.node("b"));
    let (mut publisher, _) = client(&a);
    let mut on_b = Raw::connect(b.rs_port, Serializer::MsgPack);
    on_b.join("realm1");
    let mut cbor_b = Raw::connect(b.rs_port, Serializer::Cbor);
    cbor_b.join("realm1");
    subscribe(&mut on_b, "p.t", "exact");
    subscribe(&mut cbor_b, "p.t", "exact");
    nats.wait_subjects("b", &["sy.realm1.pub.p.t"]);
    let kwargs = Dict::new()
        .with("text", "héllo")
        .with("n", Value::Int(-3))
        .with(
            "list",
            Value::List(vec![Value::Bool(true), Value::Float(1.5)]),
        );
    let request = publisher.req();
    publisher.send(&Message::Publish {
        request,
        options: Dict::new(),
        topic: "p.t".into(),
        payload: switchyard_proto::Payload::values(
            vec![Value::Str("x".into())],
            Some(kwargs.clone()),
        ),
    });
    for c in [&mut on_b, &mut cbor_b] {
        match c.expect("EVENT") {
            Message::Event { payload, .. } => {
                assert_eq!(args_of(&payload), vec![Value::Str("x".into())]);
                let got = payload
                    .kwargs
                    .as_ref()
                    .and_then(|k| k.to_value().ok())
                    .expect("kwargs");
                assert_eq!(got, Value::Dict(kwargs.clone()));
            }
            other => panic!("expected EVENT, got {other:?}"),
        }
    }
}

#[test]
fn after_nats_restarts_the_nodes_resubscribe_and_deliver_again() {
    // Not the failure handling of issue 15 (no outage semantics yet): only
    // that the client's reconnection restores the subscriptions.
    let mut nats = Nats::start();
    let (a, b) = (nats.node("a"), nats.node("b"));
    let (mut publisher, _) = client(&a);
    let (mut on_b, _) = client(&b);
    subscribe(&mut on_b, "r.t", "exact");
    nats.wait_subjects("b", &["sy.realm1.pub.r.t"]);
    nats.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let connz = http_get(nats.monitor, "/connz");
        if connz["num_connections"].as_u64() == Some(2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nodes did not reconnect: {connz}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    nats.wait_subjects("b", &["sy.realm1.pub.r.t"]);
    publish(&mut publisher, "r.t", Dict::new(), 9);
    assert_eq!(numbers(&events(&mut on_b, QUIET)), vec![9]);
}

#[test]
fn a_publication_over_the_nats_max_payload_stays_local_and_is_logged() {
    // nats-server's max_payload is 1 MiB by default; these nodes take WAMP
    // messages up to 4 MiB.
    let nats = Nats::start();
    let limits = "[limits]\nmax_message_size = 4194304\n";
    let (a, b) = (nats.node_with("a", limits), nats.node_with("b", limits));
    let (mut publisher, _) = client(&a);
    let (mut on_a, _) = client(&a);
    let (mut on_b, _) = client(&b);
    subscribe(&mut on_a, "big.t", "exact");
    subscribe(&mut on_b, "big.t", "exact");
    nats.wait_subjects("b", &["sy.realm1.pub.big.t"]);
    let request = publisher.req();
    publisher.send(&Message::Publish {
        request,
        options: Dict::new(),
        topic: "big.t".into(),
        payload: args(vec![Value::Str("x".repeat(2 << 20)), Value::UInt(1)]),
    });
    publish(&mut publisher, "big.t", Dict::new(), 2);
    let local = events(&mut on_a, QUIET);
    assert_eq!(local.len(), 2);
    assert_eq!(numbers(&events(&mut on_b, QUIET)), vec![2]);
    assert!(
        a.log_text().contains("max payload size exceeded"),
        "{}",
        a.log_text()
    );
}

#[test]
fn a_publication_made_after_subscribed_reaches_the_new_subscriber() {
    // SUBSCRIBED comes once the node's NATS subscription is in place: a
    // publication the publisher makes after it (here: at once, from
    // another node) is delivered. Fresh topics, so each needs a new one.
    let nats = Nats::start();
    let (a, b) = (nats.node("a"), nats.node("b"));
    let (mut publisher, _) = client(&a);
    let (mut on_b, _) = client(&b);
    for i in 0..30 {
        let topic = format!("fresh.t{i}");
        subscribe(&mut on_b, &topic, "exact");
        publish(&mut publisher, &topic, Dict::new(), i);
        on_b.stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        match on_b.recv() {
            Some(Message::Event { payload, .. }) => {
                assert_eq!(args_of(&payload), vec![Value::UInt(i)]);
            }
            other => {
                let log: Vec<String> = b
                    .log_text()
                    .lines()
                    .filter(|l| l.contains("cluster"))
                    .map(str::to_string)
                    .collect();
                panic!(
                    "topic {topic}: expected its EVENT, got {other:?}; node b:\n{}",
                    log.join("\n")
                )
            }
        }
    }
    // A prefix subscription too (a broader subject).
    subscribe(&mut on_b, "fresh2.", "prefix");
    publish(&mut publisher, "fresh2.x", Dict::new(), 99);
    assert_eq!(numbers(&events(&mut on_b, QUIET)), vec![99]);
}

#[test]
fn eligible_and_exclude_by_authid_are_decided_on_the_receiving_node() {
    let nats = Nats::start();
    let (a, b) = (nats.node("a"), nats.node("b"));
    let (mut publisher, _) = client(&a);
    let mut b1 = Raw::connect(b.rs_port, Serializer::Json);
    let (_, welcome) = b1.join("realm1");
    let b1_authid = welcome.get_str("authid").expect("authid").to_string();
    let (mut b2, _) = client(&b);
    subscribe(&mut b1, "t.y", "exact");
    subscribe(&mut b2, "t.y", "exact");
    nats.wait_subjects("b", &["sy.realm1.pub.t.y"]);
    let list = Value::List(vec![Value::Str(b1_authid.clone())]);
    publish(
        &mut publisher,
        "t.y",
        Dict::new().with("eligible_authid", list.clone()),
        1,
    );
    publish(
        &mut publisher,
        "t.y",
        Dict::new().with("exclude_authid", list),
        2,
    );
    let anonymous = Value::List(vec![Value::Str("anonymous".into())]);
    publish(
        &mut publisher,
        "t.y",
        Dict::new().with("exclude_authrole", anonymous),
        3,
    );
    assert_eq!(
        numbers(&events(&mut b1, QUIET)),
        vec![1],
        "b1 is {b1_authid}"
    );
    assert_eq!(numbers(&events(&mut b2, QUIET)), vec![2]);
}

/// GET /readyz on an operations listener: the status and the JSON body.
fn readyz(port: u16) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("operations port");
    write!(s, "GET /readyz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    (
        status,
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}")),
    )
}

/// GET /metrics on an operations listener: the text.
fn metrics(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("operations port");
    write!(s, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    text
}

/// Polls /readyz until it answers `want` (10 s at most); the last body.
fn wait_readyz(port: u16, want: u16) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = readyz(port);
        if status == want {
            return body;
        }
        assert!(Instant::now() < deadline, "/readyz stays {status}: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn readyz_is_503_while_nats_is_down_and_200_once_it_is_back() {
    let mut nats = Nats::start();
    let ops = free_port();
    let node = nats.node_with(
        "a",
        &format!("[[listener]]\ntype = \"operations\"\naddress = \"127.0.0.1:{ops}\"\n"),
    );
    let body = wait_readyz(ops, 200);
    assert!(
        body["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .any(|c| c["kind"] == "cluster" && c["ready"] == true),
        "{body}"
    );
    assert!(
        metrics(ops).contains("\nswitchyard_cluster_nats_connected 1\n"),
        "{}",
        metrics(ops)
    );
    nats.stop();
    let body = wait_readyz(ops, 503);
    assert!(metrics(ops).contains("\nswitchyard_cluster_nats_connected 0\n"));
    assert_eq!(body["status"], "not_ready");
    assert_eq!(
        body["not_ready"],
        serde_json::json!(["cluster: NATS disconnected"])
    );
    nats.start_again();
    wait_readyz(ops, 200);
    // The node still serves its clients meanwhile.
    let _ = client(&node);
}
