//! Cluster mode, PubSub the rest (issue 15): retained events and event
//! history across nodes, failures under load (a node SIGKILLed, the NATS
//! server restarted) and a three-server NATS cluster. Real `nats-server`
//! processes, real `switchyard` nodes, RawSocket clients.
//!
//! Needs `nats-server` (scripts/install-nats.sh installs Debian's).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::nats::{Nats, NatsCluster};
use common::pubsub::{
    assert_all, assert_increasing, call, client, collect, collect_counting, events, publish,
    publish_until, subscribe_with, warm_up,
};
use common::{free_port, Raw, Router};
use switchyard_proto::{Dict, Value};

const QUIET: Duration = Duration::from_millis(400);

/// A fast heartbeat: a killed node is forgotten within 1.3 s.
const BEAT: &str = "heartbeat = \"400ms\"";

fn retain() -> Dict {
    Dict::new().with("retain", true)
}

/// The retained events a new session on `node` gets when it subscribes to
/// (`topic`, `policy`) with get_retained: (details, numbers).
fn retained_on(node: &Router, topic: &str, policy: &str) -> Vec<(Dict, Vec<u64>)> {
    let (mut c, _) = client(node);
    let mut options = Dict::new().with("get_retained", true);
    if policy != "exact" {
        options.insert("match", policy);
    }
    subscribe_with(&mut c, topic, options);
    events(&mut c, Duration::from_millis(250))
}

/// Waits (5 s at most) until `node` returns retained event `n` for `topic`;
/// how long it took.
fn wait_retained(node: &Router, topic: &str, n: u64) -> Duration {
    wait_retained_within(node, topic, n, Duration::from_secs(5))
}

fn wait_retained_within(node: &Router, topic: &str, n: u64, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let got = retained_on(node, topic, "exact");
        if got.iter().any(|(_, v)| v.first() == Some(&n)) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{topic}: retained {n} not returned within {within:?}; got {got:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_retained_event_published_on_one_node_is_returned_on_every_other() {
    let nats = Nats::start();
    let (a, b, c) = (nats.node("a"), nats.node("b"), nats.node("c"));
    let (mut on_a, _) = client(&a);
    publish(&mut on_a, "ret.t", retain(), vec![Value::UInt(1)]);
    let took = wait_retained(&b, "ret.t", 1);
    eprintln!("retained event on another node after {took:?}");
    wait_retained(&c, "ret.t", 1);
    // As on one node: flagged `retained`, with the publication's details;
    // a pattern subscription gets it with its topic.
    let got = retained_on(&c, "ret.t", "exact");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0.get_bool("retained"), Some(true), "{got:?}");
    let got = retained_on(&b, "ret.", "prefix");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0.get_str("topic"), Some("ret.t"), "{got:?}");
    // A later one from another node replaces it everywhere.
    let (mut on_c, _) = client(&c);
    publish(&mut on_c, "ret.t", retain(), vec![Value::UInt(2)]);
    for node in [&a, &b, &c] {
        wait_retained(node, "ret.t", 2);
        assert_eq!(retained_on(node, "ret.t", "exact").len(), 1);
    }
    // Not retained: not shared either.
    publish(&mut on_a, "ret.t", Dict::new(), vec![Value::UInt(3)]);
    publish(&mut on_a, "ret.marker", retain(), vec![Value::UInt(4)]);
    wait_retained(&b, "ret.marker", 4);
    let got = retained_on(&b, "ret.t", "exact");
    assert_eq!(got.iter().map(|e| e.1[0]).collect::<Vec<_>>(), vec![2]);
}

#[test]
fn the_latest_retained_event_is_the_same_on_every_node() {
    // Two nodes retain on one topic at once: every node ends with the
    // value the bucket stored last, which is one of the two nodes' last.
    let nats = Nats::start();
    let (a, b, c) = (nats.node("a"), nats.node("b"), nats.node("c"));
    let threads: Vec<_> = [(&a, 0u64), (&b, 1000u64)]
        .into_iter()
        .map(|(node, base)| {
            let (mut p, _) = client(node);
            std::thread::spawn(move || {
                for n in 0..100 {
                    publish(&mut p, "ret.race", retain(), vec![Value::UInt(base + n)]);
                }
                // Wait for the session's publications to be handled.
                call(&mut p, "wamp.session.count", vec![], None);
            })
        })
        .collect();
    for t in threads {
        t.join().expect("publisher");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let values: Vec<Vec<u64>> = [&a, &b, &c]
            .iter()
            .map(|n| {
                retained_on(n, "ret.race", "exact")
                    .into_iter()
                    .map(|e| e.1[0])
                    .collect()
            })
            .collect();
        let same = values.iter().all(|v| v.len() == 1 && v == &values[0]);
        if same && [99, 1099].contains(&values[0][0]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nodes a, b, c disagree: {values:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_node_started_later_finds_the_retained_events() {
    let nats = Nats::start();
    let a = nats.node("a");
    let (mut on_a, _) = client(&a);
    for i in 0..20 {
        publish(
            &mut on_a,
            &format!("ret.many.t{i}"),
            retain(),
            vec![Value::UInt(i)],
        );
    }
    publish(&mut on_a, "ret.many.last", retain(), vec![Value::UInt(99)]);
    wait_retained(&a, "ret.many.last", 99);
    // Give a's puts their round trips, then start b: it reads the bucket
    // before it opens its listeners.
    std::thread::sleep(Duration::from_millis(500));
    let b = nats.node("b");
    let got = retained_on(&b, "ret.many.", "prefix");
    assert_eq!(got.len(), 21, "{got:?}\n{}", b.log_text());
}

#[test]
fn retained_events_keep_their_receivers_on_the_subscribers_node() {
    let nats = Nats::start();
    let (a, b) = (nats.node("a"), nats.node("b"));
    let mut x = Raw::connect(b.rs_port, switchyard_proto::Serializer::Json);
    let (_, welcome) = x.join("realm1");
    let x_authid = welcome.get_str("authid").expect("authid").to_string();
    let (mut y, y_id) = client(&b);
    let (mut on_a, _) = client(&a);
    let authids = Value::List(vec![Value::Str(x_authid)]);
    publish(
        &mut on_a,
        "ret.f.eligible",
        retain().with("eligible_authid", authids),
        vec![Value::UInt(1)],
    );
    publish(
        &mut on_a,
        "ret.f.exclude",
        retain().with("exclude", Value::List(vec![Value::UInt(y_id)])),
        vec![Value::UInt(2)],
    );
    publish(&mut on_a, "ret.f.marker", retain(), vec![Value::UInt(3)]);
    // One node's puts arrive in order: once the marker is on b, so are
    // the two before it.
    wait_retained(&b, "ret.f.marker", 3);
    let got = |c: &mut Raw, topic: &str| {
        subscribe_with(c, topic, Dict::new().with("get_retained", true));
        events(c, QUIET)
            .into_iter()
            .map(|e| e.1[0])
            .collect::<Vec<_>>()
    };
    assert_eq!(got(&mut x, "ret.f.eligible"), vec![1]);
    assert_eq!(got(&mut x, "ret.f.exclude"), vec![2]);
    assert_eq!(got(&mut y, "ret.f.eligible"), Vec::<u64>::new());
    assert_eq!(got(&mut y, "ret.f.exclude"), Vec::<u64>::new());
}

#[test]
fn a_retained_event_over_the_realm_limit_is_not_shared() {
    let nats = Nats::start();
    let limit = "max_retained_bytes = 300\n";
    let (a, b) = (nats.node_with("a", limit), nats.node_with("b", limit));
    let (mut on_a, _) = client(&a);
    let request = on_a.req();
    on_a.send(&switchyard_proto::Message::Publish {
        request,
        options: retain(),
        topic: "ret.big".into(),
        payload: common::args(vec![Value::Str("x".repeat(1000))]),
    });
    publish(&mut on_a, "ret.small", retain(), vec![Value::UInt(7)]);
    wait_retained(&b, "ret.small", 7);
    assert!(retained_on(&b, "ret.big", "exact").is_empty());
    assert!(retained_on(&a, "ret.big", "exact").is_empty());
}

/// The history events of (`topic`, exact) read on `node`: their first
/// arguments, oldest first.
fn history_on(node: &Router, topic: &str) -> Vec<(u64, u64)> {
    let (mut c, _) = client(node);
    let id = call(
        &mut c,
        "wamp.subscription.lookup",
        vec![Value::Str(topic.into())],
        None,
    );
    let id = id
        .first()
        .and_then(Value::as_u64)
        .expect("history subscription");
    let events = call(
        &mut c,
        "wamp.subscription.get_events",
        vec![Value::UInt(id)],
        None,
    );
    let Some(Value::List(events)) = events.into_iter().next() else {
        panic!("get_events returned no list")
    };
    events
        .iter()
        .map(|e| {
            let Value::Dict(d) = e else { panic!("{e:?}") };
            let Some(Value::List(a)) = d.get("args") else {
                panic!("{d:?}")
            };
            (
                a.first().and_then(Value::as_u64).unwrap_or(u64::MAX),
                a.get(1).and_then(Value::as_u64).unwrap_or(u64::MAX),
            )
        })
        .collect()
}

#[test]
fn history_read_on_any_node_holds_the_events_of_every_node() {
    let nats = Nats::start();
    let history = "[[realm.history]]\ntopic = \"hist.t\"\nlimit = 30\n";
    let (a, b, c) = (
        nats.node_with("a", history),
        nats.node_with("b", history),
        nats.node_with("c", history),
    );
    // Each node listens for the history topic from the start, subscriber
    // or not.
    for n in ["a", "b", "c"] {
        nats.wait_subjects(n, &["sy.realm1.pub.hist.t"]);
    }
    let mut publishers: Vec<Raw> = [&a, &b, &c].iter().map(|n| client(n).0).collect();
    for round in 0..5u64 {
        for (p, c) in publishers.iter_mut().enumerate() {
            publish(
                c,
                "hist.t",
                Dict::new(),
                vec![Value::UInt(p as u64), Value::UInt(round)],
            );
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for node in [&a, &b, &c] {
        let got = loop {
            let got = history_on(node, "hist.t");
            if got.len() == 15 || Instant::now() > deadline {
                break got;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(got.len(), 15, "{got:?}");
        // Every publisher's events, in its order.
        for p in 0..3 {
            let mine: Vec<u64> = got.iter().filter(|e| e.0 == p).map(|e| e.1).collect();
            assert_eq!(mine, vec![0, 1, 2, 3, 4], "publisher {p} in {got:?}");
        }
    }
    // Bounded as on one node: the last 30.
    for n in 5..20u64 {
        publish(
            &mut publishers[1],
            "hist.t",
            Dict::new(),
            vec![Value::UInt(1), Value::UInt(n)],
        );
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = history_on(&c, "hist.t");
        if got.last() == Some(&(1, 19)) {
            assert_eq!(got.len(), 30, "{got:?}");
            break;
        }
        assert!(Instant::now() < deadline, "{got:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_node_killed_under_load_leaves_the_others_delivering_exactly_once() {
    let nats = Nats::start();
    let (a, b, c) = (
        nats.node_full("a", "", BEAT),
        nats.node_full("b", "", BEAT),
        nats.node_full("c", "", BEAT),
    );
    let mut a = a;
    let topic = "load.k";
    let mut subs = Vec::new();
    for node in [&a, &b, &c] {
        let (mut s, _) = client(node);
        subscribe_with(&mut s, topic, Dict::new());
        subs.push(s);
    }
    for n in ["a", "b", "c"] {
        nats.wait_subjects(n, &["sy.realm1.pub.load.k"]);
    }
    let stop_pub = Arc::new(AtomicBool::new(false));
    let stop_sub = Arc::new(AtomicBool::new(false));
    let mut readers: Vec<_> = subs
        .into_iter()
        .map(|s| collect(s, stop_sub.clone()))
        .collect();
    let counts: Vec<Arc<AtomicU64>> = (0..3).map(|_| Arc::default()).collect();
    let publishers: Vec<_> = [&a, &b, &c]
        .iter()
        .enumerate()
        .map(|(i, node)| {
            publish_until(
                client(node).0,
                i as u64,
                topic,
                Duration::from_millis(1),
                counts[i].clone(),
                stop_pub.clone(),
            )
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    let at_kill: Vec<u64> = counts.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    assert!(!a.signal(libc::SIGKILL).success());
    // The survivors go on publishing past the dead node's cleanup time.
    std::thread::sleep(Duration::from_millis(1800));
    stop_pub.store(true, Ordering::SeqCst);
    let sent: Vec<u64> = publishers
        .into_iter()
        .map(|p| p.join().expect("publisher"))
        .collect();
    stop_sub.store(true, Ordering::SeqCst);
    let on_c = readers.pop().expect("c").join().expect("reader c");
    let on_b = readers.pop().expect("b").join().expect("reader b");
    eprintln!("published {sent:?} (at the kill: {at_kill:?})");
    for (who, got) in [("subscriber on b", &on_b), ("subscriber on c", &on_c)] {
        // Every publication of the survivors, before and after the kill,
        // once and in order; the dead node's, up to where it died.
        assert_all(got, 1, sent[1], who);
        assert_all(got, 2, sent[2], who);
        let from_a = assert_increasing(got, 0, who);
        assert!(
            from_a as u64 >= at_kill[0].min(100),
            "{who}: {from_a} events of a"
        );
        assert!(sent[1] > at_kill[1] + 100 && sent[2] > at_kill[2] + 100);
    }
    // The dead node's NATS subscriptions went with its connection.
    let connz = common::nats::http_get(nats.monitor, "/connz");
    assert_eq!(connz["num_connections"].as_u64(), Some(2), "{connz}");
}

/// GET /readyz on an operations listener: the HTTP status.
fn readyz(port: u16) -> u16 {
    common::http::request(port, "GET", "/readyz", "", "").status
}

fn wait_readyz(port: u16, want: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while readyz(port) != want {
        assert!(Instant::now() < deadline, "/readyz stays {}", readyz(port));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn nats_restarted_under_load_the_nodes_reconnect_and_deliver_again() {
    let mut nats = Nats::start();
    let ops: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let node = |name: &str, port: u16| {
        nats.node_full(
            name,
            &format!("[[listener]]\ntype = \"operations\"\naddress = \"127.0.0.1:{port}\"\n"),
            BEAT,
        )
    };
    let (a, b) = (node("a", ops[0]), node("b", ops[1]));
    let topic = "load.n";
    let (mut on_a, _) = client(&a);
    let (mut on_b, _) = client(&b);
    subscribe_with(&mut on_a, topic, Dict::new());
    subscribe_with(&mut on_b, topic, Dict::new());
    nats.wait_subjects("b", &["sy.realm1.pub.load.n"]);
    let (stop_pub, stop_sub) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let count = Arc::new(AtomicU64::new(0));
    let on_b_count = Arc::new(AtomicU64::new(0));
    let readers = [
        collect(on_a, stop_sub.clone()),
        collect_counting(on_b, stop_sub.clone(), on_b_count.clone()),
    ];
    let publisher = publish_until(
        client(&a).0,
        0,
        topic,
        Duration::from_millis(2),
        count.clone(),
        stop_pub.clone(),
    );
    std::thread::sleep(Duration::from_millis(500));
    // Everything published so far reached b before NATS goes.
    let before = count.load(Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    while on_b_count.load(Ordering::SeqCst) < before {
        assert!(Instant::now() < deadline, "b is behind before the outage");
        std::thread::sleep(Duration::from_millis(10));
    }
    nats.stop();
    for p in &ops {
        wait_readyz(*p, 503);
    }
    std::thread::sleep(Duration::from_millis(500));
    nats.start_again();
    for p in &ops {
        wait_readyz(*p, 200);
    }
    nats.wait_subjects("b", &["sy.realm1.pub.load.n"]);
    // From here on every publication reaches b.
    let resumed = count.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(700));
    stop_pub.store(true, Ordering::SeqCst);
    let sent = publisher.join().expect("publisher");
    stop_sub.store(true, Ordering::SeqCst);
    let [ra, rb] = readers;
    let (on_a, on_b) = (ra.join().expect("a"), rb.join().expect("b"));
    // The publisher's own node delivers everything, NATS or not.
    assert_all(&on_a, 0, sent, "subscriber on a");
    // The other node: in order, never twice, everything before the
    // outage and after the reconnection; what was published in the gap
    // may be lost.
    let got = assert_increasing(&on_b, 0, "subscriber on b") as u64;
    let b_events = on_b.get(&0).cloned().unwrap_or_default();
    for n in (0..before).chain(resumed..sent) {
        assert!(
            b_events.binary_search(&n).is_ok(),
            "subscriber on b lacks {n} (before {before}, resumed {resumed}, sent {sent})"
        );
    }
    eprintln!(
        "published {sent}; node b delivered {got}, lost {} of the {} made while NATS was away",
        sent - got,
        resumed - before
    );
}

#[test]
fn over_a_nats_cluster_a_publication_reaches_every_node_once_in_order() {
    let cluster = NatsCluster::start(3);
    let nodes: Vec<Router> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, n)| cluster.node(n, i))
        .collect();
    let servers: Vec<Option<usize>> = ["a", "b", "c"]
        .iter()
        .map(|n| cluster.server_of(n))
        .collect();
    eprintln!("nodes a, b, c on NATS servers {servers:?}");
    let mut subs: Vec<Raw> = nodes
        .iter()
        .map(|n| {
            let (mut s, _) = client(n);
            subscribe_with(&mut s, "nc.t", Dict::new());
            s
        })
        .collect();
    let (mut publisher, _) = client(&nodes[0]);
    {
        let mut refs: Vec<&mut Raw> = subs.iter_mut().collect();
        warm_up(&mut publisher, 0, "nc.t", &mut refs);
    }
    for n in 0..200 {
        publish(
            &mut publisher,
            "nc.t",
            Dict::new(),
            vec![Value::UInt(0), Value::UInt(n)],
        );
    }
    for (i, s) in subs.iter_mut().enumerate() {
        let got: Vec<u64> = events(s, QUIET).into_iter().map(|e| e.1[1]).collect();
        assert_eq!(got, (0..200).collect::<Vec<_>>(), "subscriber on node {i}");
    }
}

#[test]
fn over_a_nats_cluster_deliveries_continue_when_a_nats_server_dies() {
    let mut cluster = NatsCluster::start(3);
    let nodes: Vec<Router> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, n)| cluster.node(n, i))
        .collect();
    let topic = "nc.k";
    let mut subs: Vec<Raw> = nodes[1..]
        .iter()
        .map(|n| {
            let (mut s, _) = client(n);
            subscribe_with(&mut s, topic, Dict::new());
            s
        })
        .collect();
    let (mut publisher, _) = client(&nodes[0]);
    {
        let mut refs: Vec<&mut Raw> = subs.iter_mut().collect();
        warm_up(&mut publisher, 9, topic, &mut refs);
    }
    // A retained event from before the loss (the bucket has a replica on
    // each of the three servers the nodes list).
    publish(
        &mut publisher,
        "nc.ret.before",
        retain(),
        vec![Value::UInt(1)],
    );
    wait_retained(&nodes[2], "nc.ret.before", 1);
    let (stop_pub, stop_sub) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let readers: Vec<_> = subs
        .into_iter()
        .map(|s| collect(s, stop_sub.clone()))
        .collect();
    let count = Arc::new(AtomicU64::new(0));
    let load = publish_until(
        client(&nodes[0]).0,
        0,
        topic,
        Duration::from_millis(2),
        count.clone(),
        stop_pub.clone(),
    );
    std::thread::sleep(Duration::from_millis(500));
    // The server of the subscriber node b goes.
    let victim = cluster.server_of("b").expect("b is connected");
    let on_victim: Vec<&str> = ["a", "b", "c"]
        .into_iter()
        .filter(|n| cluster.server_of(n) == Some(victim))
        .collect();
    eprintln!(
        "killing NATS server s{} (of nodes {on_victim:?})",
        victim + 1
    );
    cluster.servers[victim].stop();
    for n in on_victim {
        let moved = cluster.wait_moved(n, victim);
        eprintln!("node {n} moved to NATS server s{}", moved + 1);
    }
    // The interest of b's subscriptions travels the routes again.
    std::thread::sleep(Duration::from_millis(1000));
    let resumed = count.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(700));
    stop_pub.store(true, Ordering::SeqCst);
    let sent = load.join().expect("publisher");
    // After the load, a batch every subscriber gets whole.
    for n in 0..100 {
        publish(
            &mut publisher,
            topic,
            Dict::new(),
            vec![Value::UInt(1), Value::UInt(n)],
        );
    }
    // Retained events survive the server and are shared after it, once
    // JetStream has its leaders again and answers (a NATS cluster elects
    // new ones after losing a server: 0.3 to 17 s in runs here).
    publish(
        &mut publisher,
        "nc.ret.after",
        retain(),
        vec![Value::UInt(2)],
    );
    for node in &nodes[1..] {
        wait_retained(node, "nc.ret.before", 1);
        let took = wait_retained_within(node, "nc.ret.after", 2, Duration::from_secs(30));
        eprintln!("retained event shared after the loss within {took:?}");
    }
    std::thread::sleep(QUIET);
    stop_sub.store(true, Ordering::SeqCst);
    for (who, r) in ["subscriber on b", "subscriber on c"]
        .into_iter()
        .zip(readers)
    {
        let got = r.join().expect("reader");
        let n = assert_increasing(&got, 0, who) as u64;
        let events = got.get(&0).cloned().unwrap_or_default();
        for k in resumed..sent {
            assert!(
                events.binary_search(&k).is_ok(),
                "{who} lacks {k} (resumed {resumed}, sent {sent})"
            );
        }
        assert_all(&got, 1, 100, who);
        eprintln!("{who}: {n} of {sent} under load");
    }
}

#[test]
fn a_node_whose_nats_has_no_jetstream_exits_non_zero_and_says_so() {
    // Retained events need the KV bucket: without JetStream a node would
    // silently keep them to itself.
    let server = Nats::start_core();
    let port = server.port;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("switchyard.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[listener]]\ntype = \"rawsocket\"\naddress = \"127.0.0.1:{}\"\n\n\
             [[realm]]\nname = \"realm1\"\n\n\
             [cluster]\nnode = \"a\"\nnats = [\"nats://127.0.0.1:{port}\"]\n",
            free_port()
        ),
    )
    .expect("config");
    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .current_dir(dir.path())
        .arg("--config")
        .arg(&cfg)
        .output()
        .expect("run switchyard");
    drop(server);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit status {:?}", out.status);
    // The first bucket the node opens (its sessions, or its retained events)
    // names the missing JetStream.
    assert!(
        stderr.contains("bucket switchyard_") && stderr.contains("nats-server -js"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// The retained events bucket's stream config, from the monitoring port.
fn bucket_config(nats: &Nats) -> serde_json::Value {
    let jsz = common::nats::http_get(nats.monitor, "/jsz?accounts=true&streams=true&config=true");
    jsz["account_details"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default())
        .find(|s| s["name"] == "KV_sy_retained")
        .map(|s| s["config"].clone())
        .unwrap_or_else(|| panic!("no KV_sy_retained in {jsz}"))
}

#[test]
fn the_bucket_is_capped_at_twice_the_realms_limits_and_follows_them() {
    let nats = Nats::start();
    let _a = nats.node("a");
    // Defaults: 16 MiB and 10,000 topics, plus 4 KiB of envelope a topic.
    let config = bucket_config(&nats);
    assert_eq!(config["max_bytes"], (16_777_216 + 10_000 * 4096) * 2);
    assert_eq!(config["max_msgs"], 20_000);
    assert_eq!(config["max_msgs_per_subject"], 1);
    // A node started with other limits (a changed configuration) sets
    // the caps to its own.
    let _b = nats.node_with(
        "b",
        "max_retained_bytes = 1000\nretained_topics_limit = 10\n",
    );
    let config = bucket_config(&nats);
    assert_eq!(config["max_bytes"], 1 << 20, "the floor of 1 MiB");
    assert_eq!(config["max_msgs"], 1024, "the floor of 1024 values");
}

/// `value` of the sample `line` (name and labels) in a /metrics scrape.
fn sample(port: u16, line: &str) -> Option<f64> {
    let body = common::http::request(port, "GET", "/metrics", "", "").body;
    body.lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
}

/// The cluster's figures on `/metrics` (issue 17): the nodes each node sees
/// alive, the publications it sent to the others and received from them.
#[test]
fn the_cluster_metrics_count_nodes_and_publications_both_ways() {
    let nats = Nats::start();
    let ops: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let node = |name: &str, port: u16| {
        nats.node_full(
            name,
            &format!("[[listener]]\ntype = \"operations\"\naddress = \"127.0.0.1:{port}\"\n"),
            BEAT,
        )
    };
    let (a, b) = (node("a", ops[0]), node("b", ops[1]));
    let (mut on_b, _) = client(&b);
    subscribe_with(&mut on_b, "metrics.t", Dict::new());
    nats.wait_subjects("b", &["sy.realm1.pub.metrics.t"]);
    let (mut on_a, _) = client(&a);
    for i in 0..5u64 {
        publish(&mut on_a, "metrics.t", Dict::new(), vec![Value::UInt(i)]);
    }
    let want = [
        (
            ops[0],
            "switchyard_cluster_publications_total{direction=\"out\"}",
            5.0,
        ),
        (
            ops[1],
            "switchyard_cluster_publications_total{direction=\"in\"}",
            5.0,
        ),
        (ops[0], "switchyard_cluster_nodes", 2.0),
        (ops[1], "switchyard_cluster_nodes", 2.0),
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    for (port, line, value) in want {
        while sample(port, line) != Some(value) {
            assert!(
                Instant::now() < deadline,
                "{line} on :{port} is {:?}, not {value}",
                sample(port, line)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Nothing came back to a, and nothing was dropped.
    assert_eq!(
        sample(
            ops[0],
            "switchyard_cluster_publications_total{direction=\"in\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            ops[0],
            "switchyard_cluster_publications_total{direction=\"dropped\"}"
        ),
        Some(0.0)
    );
    drop((a, b));
}
