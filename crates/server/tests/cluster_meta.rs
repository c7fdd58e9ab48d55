//! Cluster mode over NATS (issue 15): sessions cluster-wide. A real
//! `nats-server -js` and real `switchyard` nodes joined by it, driven by
//! RawSocket clients: session ids claimed in the NATS KV bucket (and what
//! happens with NATS away), the session, subscription and registration
//! meta API seeing every node, meta events from every node, and a node
//! killed with SIGKILL: its sessions' `on_leave` and testaments published
//! once by a survivor, within the documented bound.
//!
//! Needs `nats-server` (scripts/install-nats.sh).

mod common;

use std::time::{Duration, Instant};

use common::nats::{Nats, NatsCluster};
use common::{args, args_of, Raw, Router};
use switchyard_proto::{errors, Dict, Message, Payload, Serializer, Value};

/// Heartbeat of these tests' nodes: a dead node is declared so within
/// 3.25 heartbeats (1.3 s).
const CLUSTER: &str = "heartbeat = \"400ms\"";

fn node(nats: &Nats, name: &str) -> Router {
    nats.node_full(name, "", CLUSTER)
}

fn join(node: &Router) -> (Raw, u64) {
    let mut c = Raw::connect(node.rs_port, Serializer::Json);
    let (id, _) = c.join("realm1");
    (c, id)
}

/// Calls `procedure`: its RESULT's arguments, or the ERROR's URI.
fn call(c: &mut Raw, procedure: &str, values: Vec<Value>) -> Result<Vec<Value>, String> {
    let request = c.req();
    c.send(&Message::Call {
        request,
        options: Dict::new(),
        procedure: procedure.into(),
        payload: args(values),
    });
    loop {
        match c.expect("RESULT") {
            Message::Result {
                request: r,
                payload,
                ..
            } if r == request => return Ok(args_of(&payload)),
            Message::Error {
                request: r, error, ..
            } if r == request => return Err(error),
            // Events of the client's subscriptions meanwhile.
            Message::Event { .. } => continue,
            other => panic!("expected RESULT of {procedure}, got {other:?}"),
        }
    }
}

/// The first result of meta procedure `procedure` (Null for an ERROR).
fn meta(c: &mut Raw, procedure: &str, values: Vec<Value>) -> Value {
    call(c, procedure, values)
        .ok()
        .and_then(|a| a.into_iter().next())
        .unwrap_or(Value::Null)
}

/// Asks `ask` on `c` until `done` holds for its answer (at most 5 s):
/// how long it took.
fn until(
    c: &mut Raw,
    what: &str,
    ask: impl FnMut(&mut Raw) -> Value,
    done: impl Fn(&Value) -> bool,
) -> Duration {
    until_within(c, what, Duration::from_secs(5), ask, done)
}

/// [`until`] with its own bound.
fn until_within(
    c: &mut Raw,
    what: &str,
    bound: Duration,
    mut ask: impl FnMut(&mut Raw) -> Value,
    done: impl Fn(&Value) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let got = ask(c);
        if done(&got) {
            return start.elapsed();
        }
        assert!(start.elapsed() < bound, "{what}: still {got:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ids(v: &Value) -> Vec<u64> {
    match v {
        Value::List(l) => {
            let mut ids: Vec<u64> = l.iter().filter_map(Value::as_u64).collect();
            ids.sort();
            ids
        }
        _ => Vec::new(),
    }
}

fn uint(v: u64) -> Value {
    Value::UInt(v)
}

/// The next EVENT: (subscription, args).
fn event(c: &mut Raw) -> (u64, Vec<Value>) {
    match c.expect("EVENT") {
        Message::Event {
            subscription,
            payload,
            ..
        } => (subscription, args_of(&payload)),
        other => panic!("expected EVENT, got {other:?}"),
    }
}

/// What arrives on `c` within `quiet` (None: nothing).
fn within(c: &mut Raw, quiet: Duration) -> Option<Message> {
    c.stream.set_read_timeout(Some(quiet)).expect("timeout");
    let got = c.recv();
    c.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    got
}

/// The record of session `id` in the cluster's sessions bucket (None: no
/// record), read with a NATS client of the test's own.
fn record(nats: &Nats, id: u64) -> Option<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = async_nats::connect(nats.url()).await.expect("NATS");
        let js = async_nats::jetstream::new(client);
        let kv = js.get_key_value("sy_sessions").await.expect("the bucket");
        kv.get(format!("s.{id}"))
            .await
            .expect("read")
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    })
}

#[test]
fn session_ids_are_claimed_in_nats_kv_and_released_at_leave() {
    let nats = Nats::start();
    let a = node(&nats, "a");
    let (mut c, id) = join(&a);
    // Claimed before WELCOME: the record (node, realm, details) is there.
    let r = record(&nats, id).expect("a record of the session");
    assert!(r.contains("realm1") && r.contains("anonymous"), "{r}");
    c.send(&Message::Goodbye {
        details: Dict::new(),
        reason: errors::CLOSE_NORMAL.into(),
    });
    c.expect("GOODBYE");
    let start = Instant::now();
    while record(&nats, id).is_some() {
        assert!(start.elapsed() < Duration::from_secs(5), "record kept");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn with_nats_away_a_session_joins_unclaimed_and_its_record_follows() {
    let mut nats = Nats::start();
    let a = node(&nats, "a");
    let b = node(&nats, "b");
    let (mut on_b, _) = join(&b);
    nats.stop();
    // The client notices within a moment; the HELLO after that does not
    // wait for NATS.
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    let (mut c, id) = join(&a);
    let took = start.elapsed();
    eprintln!("WELCOME with NATS away after {took:?}");
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    // The node still serves it (its own meta API knows it).
    assert_eq!(
        meta(&mut c, "wamp.session.get", vec![uint(id)])
            .as_dict()
            .and_then(|d| d.get("session"))
            .and_then(Value::as_u64),
        Some(id)
    );
    nats.start_again();
    // The repair round (every 10 heartbeats: 4 s) writes its record.
    let back = Instant::now();
    while record_retrying(&nats, id).is_none() {
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "no record after NATS came back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("record written {:?} after NATS came back", back.elapsed());
    // b's watch of the bucket resumed: it knows the session too.
    until(
        &mut on_b,
        "a's session on b after NATS came back",
        |c| meta(c, "wamp.session.get", vec![uint(id)]),
        |v| v.as_dict().is_some(),
    );
}

/// [`record`], tolerating a NATS that is not quite up yet.
fn record_retrying(nats: &Nats, id: u64) -> Option<String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| record(nats, id)))
        .ok()
        .flatten()
}

#[test]
fn the_session_meta_api_sees_every_node() {
    let nats = Nats::start();
    let (a, b) = (node(&nats, "a"), node(&nats, "b"));
    let (mut on_a, a_id) = join(&a);
    let (mut on_b, b_id) = join(&b);
    let count = |c: &mut Raw| meta(c, "wamp.session.count", vec![]);
    until(&mut on_b, "count on b", count, |v| v.as_u64() == Some(2));
    assert_eq!(ids(&meta(&mut on_b, "wamp.session.list", vec![])), {
        let mut both = vec![a_id, b_id];
        both.sort();
        both
    });
    // filter_authroles, as on one node.
    let anon = Value::List(vec!["anonymous".into()]);
    let none = Value::List(vec!["admin".into()]);
    assert_eq!(
        meta(&mut on_b, "wamp.session.count", vec![anon.clone()]).as_u64(),
        Some(2)
    );
    assert_eq!(
        meta(&mut on_b, "wamp.session.count", vec![none.clone()]).as_u64(),
        Some(0)
    );
    assert_eq!(
        ids(&meta(&mut on_b, "wamp.session.list", vec![none])),
        Vec::<u64>::new()
    );
    assert_eq!(
        ids(&meta(&mut on_a, "wamp.session.list", vec![anon])).len(),
        2
    );
    // get: the other node's session, with its details.
    let got = meta(&mut on_b, "wamp.session.get", vec![uint(a_id)]);
    let d = got.as_dict().expect("SessionDetails");
    assert_eq!(d.get("session").and_then(Value::as_u64), Some(a_id));
    assert_eq!(d.get_str("authrole"), Some("anonymous"));
    assert_eq!(d.get_str("authmethod"), Some("anonymous"));
    assert!(d.get("transport").is_some(), "{d:?}");
    // An unknown id: no_such_session, as on one node.
    assert_eq!(
        call(&mut on_b, "wamp.session.get", vec![uint(1)]),
        Err(errors::NO_SUCH_SESSION.to_string())
    );
    // The session leaves: gone on b as well.
    drop(on_a);
    let took = until(&mut on_b, "count on b after a leave", count, |v| {
        v.as_u64() == Some(1)
    });
    eprintln!("a leave seen on the other node after {took:?}");
    assert_eq!(
        call(&mut on_b, "wamp.session.get", vec![uint(a_id)]),
        Err(errors::NO_SUCH_SESSION.to_string())
    );
}

#[test]
fn the_subscription_and_registration_meta_api_see_every_node() {
    let nats = Nats::start();
    let (a, b) = (node(&nats, "a"), node(&nats, "b"));
    let (mut on_a, a_id) = join(&a);
    let (mut on_b, _) = join(&b);
    let exact = on_a.subscribe("com.ex.topic");
    let request = on_a.req();
    on_a.send(&Message::Subscribe {
        request,
        options: Dict::new().with("match", "prefix"),
        topic: "com.ex".into(),
    });
    let prefix = match on_a.expect("SUBSCRIBED") {
        Message::Subscribed { subscription, .. } => subscription,
        other => panic!("expected SUBSCRIBED, got {other:?}"),
    };
    // lookup on b finds a's subscription (b has none of its own).
    let lookup = |c: &mut Raw| meta(c, "wamp.subscription.lookup", vec!["com.ex.topic".into()]);
    until(&mut on_b, "lookup on b", lookup, |v| {
        v.as_u64() == Some(exact)
    });
    // (Each subscription's record is a write of its own: wait for both.)
    let prefix_opts = Value::Dict(Dict::new().with("match", "prefix"));
    let lookup_prefix = |c: &mut Raw| {
        meta(
            c,
            "wamp.subscription.lookup",
            vec!["com.ex".into(), prefix_opts.clone()],
        )
    };
    until(&mut on_b, "prefix lookup on b", lookup_prefix, |v| {
        v.as_u64() == Some(prefix)
    });
    let until_both = |c: &mut Raw| meta(c, "wamp.subscription.match", vec!["com.ex.topic".into()]);
    let mut want = vec![exact, prefix];
    want.sort();
    until(&mut on_b, "match on b", until_both, |v| ids(v) == want);
    let list = meta(&mut on_b, "wamp.subscription.list", vec![]);
    let list = list.as_dict().expect("by policy");
    assert!(ids(list.get("exact").expect("exact")).contains(&exact));
    assert!(ids(list.get("prefix").expect("prefix")).contains(&prefix));
    let got = meta(&mut on_b, "wamp.subscription.get", vec![uint(prefix)]);
    let d = got.as_dict().expect("SubscriptionDetails");
    assert_eq!(d.get_str("uri"), Some("com.ex"));
    assert_eq!(d.get_str("match"), Some("prefix"));
    assert_eq!(d.get("id").and_then(Value::as_u64), Some(prefix));
    assert_eq!(
        ids(&meta(
            &mut on_b,
            "wamp.subscription.list_subscribers",
            vec![uint(exact)]
        )),
        vec![a_id]
    );
    assert_eq!(
        meta(
            &mut on_b,
            "wamp.subscription.count_subscribers",
            vec![uint(exact)]
        )
        .as_u64(),
        Some(1)
    );
    // b subscribes too: its own subscription is the one lookup names.
    let mine = on_b.subscribe("com.ex.topic");
    assert_eq!(lookup(&mut on_b).as_u64(), Some(mine));
    // a unsubscribes: its subscription goes from b's view.
    let request = on_a.req();
    on_a.send(&Message::Unsubscribe {
        request,
        subscription: exact,
    });
    on_a.expect("UNSUBSCRIBED");
    until(
        &mut on_b,
        "a's subscription gone from b",
        |c| meta(c, "wamp.subscription.get", vec![uint(exact)]),
        |v| *v == Value::Null,
    );

    // Registrations: a's callee is known on b (with b's registration id).
    on_a.register("com.ex.proc");
    let lookup = |c: &mut Raw| meta(c, "wamp.registration.lookup", vec!["com.ex.proc".into()]);
    until(&mut on_b, "registration lookup on b", lookup, |v| {
        v.as_u64().is_some()
    });
    let reg = lookup(&mut on_b).as_u64().expect("registration");
    assert_eq!(
        meta(
            &mut on_b,
            "wamp.registration.match",
            vec!["com.ex.proc".into()]
        )
        .as_u64(),
        Some(reg)
    );
    assert!(ids(meta(&mut on_b, "wamp.registration.list", vec![])
        .as_dict()
        .and_then(|d| d.get("exact"))
        .unwrap_or(&Value::Null))
    .contains(&reg));
    let got = meta(&mut on_b, "wamp.registration.get", vec![uint(reg)]);
    assert_eq!(
        got.as_dict().and_then(|d| d.get_str("uri")),
        Some("com.ex.proc")
    );
    assert_eq!(
        ids(&meta(
            &mut on_b,
            "wamp.registration.list_callees",
            vec![uint(reg)]
        )),
        vec![a_id]
    );
    assert_eq!(
        meta(
            &mut on_b,
            "wamp.registration.count_callees",
            vec![uint(reg)]
        )
        .as_u64(),
        Some(1)
    );
    // ... and the callee's session too.
    let got = meta(&mut on_b, "wamp.session.get", vec![uint(a_id)]);
    assert_eq!(
        got.as_dict()
            .and_then(|d| d.get("session"))
            .and_then(Value::as_u64),
        Some(a_id)
    );
}

/// Subscribes `c` to each of `topics`: subscription id -> topic. (The
/// meta events of these subscriptions themselves are read and dropped.)
fn watch(c: &mut Raw, topics: &[&'static str]) -> Vec<(u64, &'static str)> {
    let subs = topics
        .iter()
        .map(|t| {
            let request = c.req();
            c.send(&Message::Subscribe {
                request,
                options: Dict::new(),
                topic: t.to_string(),
            });
            loop {
                match c.expect("SUBSCRIBED") {
                    Message::Subscribed {
                        request: r,
                        subscription,
                    } if r == request => break (subscription, *t),
                    Message::Event { .. } => continue,
                    other => panic!("expected SUBSCRIBED, got {other:?}"),
                }
            }
        })
        .collect();
    while within(c, Duration::from_millis(200)).is_some() {}
    subs
}

/// The meta events `c` gets within `quiet` of each other: (topic, args).
fn events(
    c: &mut Raw,
    subs: &[(u64, &'static str)],
    quiet: Duration,
) -> Vec<(&'static str, Vec<Value>)> {
    let mut out = Vec::new();
    while let Some(m) = within(c, quiet) {
        match m {
            Message::Event {
                subscription,
                payload,
                ..
            } => {
                let topic = subs
                    .iter()
                    .find(|(id, _)| *id == subscription)
                    .map_or("?", |(_, t)| *t);
                out.push((topic, args_of(&payload)));
            }
            other => panic!("expected EVENT, got {other:?}"),
        }
    }
    out
}

#[test]
fn meta_events_of_one_node_reach_meta_subscribers_on_another_once() {
    let nats = Nats::start();
    let (a, b) = (node(&nats, "a"), node(&nats, "b"));
    // b has taken a's directory (a registration of a known on b) before
    // the watch starts: a change b would first learn of from a's snapshot
    // made after the fact would fire no registration events there.
    let (mut warm, _) = join(&a);
    warm.register("com.ex.warm");
    let (mut watcher, _) = join(&b);
    let (mut probe, _) = join(&b);
    until(
        &mut probe,
        "a's directory on b",
        |c| meta(c, "wamp.registration.lookup", vec!["com.ex.warm".into()]),
        |v| v.as_u64().is_some(),
    );
    let subs = watch(
        &mut watcher,
        &[
            "wamp.session.on_join",
            "wamp.session.on_leave",
            "wamp.subscription.on_create",
            "wamp.subscription.on_subscribe",
            "wamp.subscription.on_unsubscribe",
            "wamp.subscription.on_delete",
            "wamp.registration.on_create",
            "wamp.registration.on_register",
            "wamp.registration.on_unregister",
            "wamp.registration.on_delete",
        ],
    );
    let (mut c, id) = join(&a);
    let sub = c.subscribe("com.ex.news");
    let request = c.req();
    c.send(&Message::Unsubscribe {
        request,
        subscription: sub,
    });
    c.expect("UNSUBSCRIBED");
    let reg = c.register("com.ex.proc");
    // (a announces what is registered when its announcer gets to it: a
    // registration gone by then is never announced.)
    until(
        &mut probe,
        "com.ex.proc on b",
        |c| meta(c, "wamp.registration.lookup", vec!["com.ex.proc".into()]),
        |v| v.as_u64().is_some(),
    );
    let request = c.req();
    c.send(&Message::Unregister {
        request,
        registration: reg,
    });
    c.expect("UNREGISTERED");
    // A client may not publish to wamp.*: refused, and nothing crosses.
    let request = c.req();
    c.send(&Message::Publish {
        request,
        options: Dict::new().with("acknowledge", true),
        topic: "wamp.session.on_join".into(),
        payload: args(vec![Value::Dict(Dict::new().with("session", 7u64))]),
    });
    match c.expect("ERROR") {
        Message::Error { error, .. } => assert_eq!(error, errors::INVALID_URI),
        other => panic!("expected ERROR, got {other:?}"),
    }
    c.send(&Message::Goodbye {
        details: Dict::new(),
        reason: errors::CLOSE_NORMAL.into(),
    });
    c.expect("GOODBYE");
    let all = events(&mut watcher, &subs, Duration::from_millis(1500));
    // Each once. The session and subscription events in the order they
    // happened on a; the registration events are b's own (a's callee's
    // proxy came and went on b, with b's registration id), in their order,
    // interleaved with the others as the directory's messages came.
    let (reg, got): (Vec<_>, Vec<_>) = all
        .iter()
        .cloned()
        .partition(|(t, _)| t.starts_with("wamp.registration."));
    let topics: Vec<&str> = got.iter().map(|(t, _)| *t).collect();
    assert_eq!(
        topics,
        vec![
            "wamp.session.on_join",
            "wamp.subscription.on_create",
            "wamp.subscription.on_subscribe",
            "wamp.subscription.on_unsubscribe",
            "wamp.subscription.on_delete",
            "wamp.session.on_leave",
        ],
        "{all:?}"
    );
    let details = got[0].1[0].as_dict().expect("details");
    assert_eq!(details.get("session").and_then(Value::as_u64), Some(id));
    assert_eq!(got[1].1[0], uint(id));
    assert_eq!(
        got[1].1[1]
            .as_dict()
            .and_then(|d| d.get("id"))
            .and_then(Value::as_u64),
        Some(sub)
    );
    for (_, a) in &got[2..5] {
        assert_eq!(a[..2], [uint(id), uint(sub)]);
    }
    assert_eq!(got[5].1[..1], [uint(id)]);
    let topics: Vec<&str> = reg.iter().map(|(t, _)| *t).collect();
    assert_eq!(
        topics,
        vec![
            "wamp.registration.on_create",
            "wamp.registration.on_register",
            "wamp.registration.on_unregister",
            "wamp.registration.on_delete",
        ],
        "{all:?}"
    );
    for (_, a) in &reg {
        assert_eq!(a[0], uint(id), "{all:?}");
    }
}

#[test]
fn a_killed_nodes_sessions_leave_and_their_testaments_are_published_once() {
    let nats = Nats::start();
    let (mut a, b, c) = (node(&nats, "a"), node(&nats, "b"), node(&nats, "c"));
    let (mut doomed, doomed_id) = join(&a);
    doomed.subscribe("com.ex.feed");
    call(
        &mut doomed,
        "wamp.session.add_testament",
        vec![
            "com.ex.gone".into(),
            Value::List(vec!["bye".into()]),
            Value::Dict(Dict::new().with("who", "doomed")),
        ],
    )
    .expect("testament added");
    let topics = [
        "wamp.session.on_leave",
        "com.ex.gone",
        "wamp.subscription.on_unsubscribe",
        "wamp.subscription.on_delete",
    ];
    let (mut on_b, _) = join(&b);
    let (mut on_c, _) = join(&c);
    let subs_b = watch(&mut on_b, &topics);
    let subs_c = watch(&mut on_c, &topics);
    // b and c know the doomed session and its subscription.
    until(
        &mut on_b,
        "b knows the session",
        |c| meta(c, "wamp.session.count", vec![]),
        |v| v.as_u64() == Some(3),
    );
    until(
        &mut on_c,
        "c knows the subscription",
        |c| meta(c, "wamp.subscription.lookup", vec!["com.ex.feed".into()]),
        |v| v.as_u64().is_some(),
    );
    // The testament reached the bucket (it is written after the RESULT).
    std::thread::sleep(Duration::from_millis(300));
    let killed = Instant::now();
    a.signal(libc::SIGKILL);
    drop(doomed);
    let first = event(&mut on_b);
    let took = killed.elapsed();
    eprintln!("first end event on b {took:?} after SIGKILL");
    // Declared dead within 3.25 heartbeats (1.3 s), then reaped at once
    // by the lowest live node (b); slack for a loaded machine.
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    assert!(
        took >= Duration::from_millis(800),
        "took {took:?}: before 2 heartbeats"
    );
    for (c, subs, first) in [
        (&mut on_b, &subs_b, Some(first)),
        (&mut on_c, &subs_c, None),
    ] {
        let mut got: Vec<(&str, Vec<Value>)> = Vec::new();
        if let Some((s, a)) = first {
            got.push((
                subs.iter()
                    .find(|(id, _)| *id == s)
                    .map_or("?", |(_, t)| *t),
                a,
            ));
        }
        // Beyond the other survivors' second try (two heartbeats).
        got.extend(events(c, subs, Duration::from_millis(1500)));
        let mut topics: Vec<&str> = got.iter().map(|(t, _)| *t).collect();
        topics.sort();
        assert_eq!(
            topics,
            vec![
                "com.ex.gone",
                "wamp.session.on_leave",
                "wamp.subscription.on_delete",
                "wamp.subscription.on_unsubscribe",
            ],
            "each once: {got:?}"
        );
        for (t, a) in &got {
            match *t {
                "com.ex.gone" => assert_eq!(a, &vec![Value::Str("bye".into())]),
                "wamp.session.on_leave" => assert_eq!(a[0], uint(doomed_id)),
                _ => assert_eq!(a[0], uint(doomed_id)),
            }
        }
    }
    // The survivors' meta API no longer lists it.
    assert_eq!(
        meta(&mut on_b, "wamp.session.count", vec![]).as_u64(),
        Some(2)
    );
    assert_eq!(
        meta(
            &mut on_c,
            "wamp.subscription.lookup",
            vec!["com.ex.feed".into()]
        ),
        Value::Null
    );
    assert!(record(&nats, doomed_id).is_none());
}

#[test]
fn a_stopped_nodes_sessions_leave_once_and_nothing_is_left_behind() {
    let nats = Nats::start();
    let (mut a, b, c) = (node(&nats, "a"), node(&nats, "b"), node(&nats, "c"));
    let (mut leaving, leaving_id) = join(&a);
    call(
        &mut leaving,
        "wamp.session.add_testament",
        vec!["com.ex.gone".into(), Value::List(vec!["bye".into()])],
    )
    .expect("testament added");
    let topics = ["wamp.session.on_leave", "com.ex.gone"];
    let (mut on_b, _) = join(&b);
    let (mut on_c, _) = join(&c);
    let subs_b = watch(&mut on_b, &topics);
    let subs_c = watch(&mut on_c, &topics);
    until(
        &mut on_b,
        "b knows the session",
        |c| meta(c, "wamp.session.count", vec![]),
        |v| v.as_u64() == Some(3),
    );
    std::thread::sleep(Duration::from_millis(300));
    // SIGTERM: a says bye, closes its sessions itself (their testaments
    // and on_leave), deletes their records; the survivors, two heartbeats
    // later, find nothing left to end.
    assert!(a.terminate().success());
    drop(leaving);
    for (c, subs) in [(&mut on_b, &subs_b), (&mut on_c, &subs_c)] {
        let got = events(c, subs, Duration::from_millis(1500));
        let mut topics: Vec<&str> = got.iter().map(|(t, _)| *t).collect();
        topics.sort();
        assert_eq!(
            topics,
            vec!["com.ex.gone", "wamp.session.on_leave"],
            "each once: {got:?}"
        );
    }
    assert_eq!(
        meta(&mut on_b, "wamp.session.count", vec![]).as_u64(),
        Some(2)
    );
    assert!(record(&nats, leaving_id).is_none());
}

#[test]
fn a_lone_node_restarted_after_sigkill_ends_its_earlier_process_sessions() {
    let nats = Nats::start();
    let mut a = node(&nats, "a");
    let (mut doomed, doomed_id) = join(&a);
    call(
        &mut doomed,
        "wamp.session.add_testament",
        vec!["com.ex.gone".into(), Value::List(vec!["bye".into()])],
    )
    .expect("testament added");
    std::thread::sleep(Duration::from_millis(300));
    a.signal(libc::SIGKILL);
    drop(doomed);
    // No other node saw it die: the new process of "a" (a new epoch)
    // finds the old one's records in its sweep (every 10 heartbeats, 4 s
    // here, once connected for 4 heartbeats) and ends them.
    let again = node(&nats, "a");
    let (mut watcher, _) = join(&again);
    let subs = watch(&mut watcher, &["wamp.session.on_leave", "com.ex.gone"]);
    let start = Instant::now();
    let mut got = Vec::new();
    while got.len() < 2 && start.elapsed() < Duration::from_secs(12) {
        got.extend(events(&mut watcher, &subs, Duration::from_millis(500)));
    }
    eprintln!(
        "the earlier process's session ended {:?} after the restart",
        start.elapsed()
    );
    got.extend(events(&mut watcher, &subs, Duration::from_millis(500)));
    let mut topics: Vec<&str> = got.iter().map(|(t, _)| *t).collect();
    topics.sort();
    assert_eq!(
        topics,
        vec!["com.ex.gone", "wamp.session.on_leave"],
        "{got:?}"
    );
    assert!(got
        .iter()
        .any(|(t, a)| *t == "wamp.session.on_leave" && a[0] == uint(doomed_id)));
    assert!(record(&nats, doomed_id).is_none());
}

/// Messages in the bucket's stream (records and delete markers).
fn bucket_messages(nats: &Nats) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = async_nats::connect(nats.url()).await.expect("NATS");
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream("KV_sy_sessions").await.expect("the stream");
        stream.info().await.expect("stream info").state.messages
    })
}

#[test]
fn the_bucket_does_not_keep_a_marker_per_session_ever_joined() {
    let nats = Nats::start();
    let a = node(&nats, "a");
    let (_stays, stays_id) = join(&a);
    for _ in 0..10 {
        let (mut c, _) = join(&a);
        c.send(&Message::Goodbye {
            details: Dict::new(),
            reason: errors::CLOSE_NORMAL.into(),
        });
        c.expect("GOODBYE");
    }
    // Each left a delete marker...
    let start = Instant::now();
    while bucket_messages(&nats) < 11 {
        assert!(start.elapsed() < Duration::from_secs(5), "no markers");
        std::thread::sleep(Duration::from_millis(50));
    }
    // ... purged once 30 heartbeats old (12 s here), at a sweep (every
    // 4 s): one record is left, the session that stays.
    while bucket_messages(&nats) > 1 {
        assert!(
            start.elapsed() < Duration::from_secs(25),
            "markers kept: {} messages",
            bucket_messages(&nats)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("markers purged after {:?}", start.elapsed());
    assert!(record(&nats, stays_id).is_some());
}

/// A node of an isolated NATS cluster (`NatsCluster::start_isolated`) that
/// knows only server `server`, named three times (so the buckets it
/// creates get three replicas and survive the loss of one server).
fn pinned_node(nats: &NatsCluster, name: &str, server: usize) -> Router {
    let url = nats.servers[server].url();
    Router::start(&format!(
        "[cluster]\nnode = \"{name}\"\nnats = [\"{url}\", \"{url}\", \"{url}\"]\n\
         subject_prefix = \"sy\"\n{CLUSTER}\n"
    ))
}

/// The next EVENT of `c` within `limit`, as (topic, args) of `subs`.
fn next_event(
    c: &mut Raw,
    subs: &[(u64, &'static str)],
    limit: Duration,
) -> Option<(&'static str, Vec<Value>)> {
    match within(c, limit)? {
        Message::Event {
            subscription,
            payload,
            ..
        } => Some((
            subs.iter()
                .find(|(id, _)| *id == subscription)
                .map_or("?", |(_, t)| *t),
            args_of(&payload),
        )),
        other => panic!("expected EVENT, got {other:?}"),
    }
}

#[test]
fn a_node_cut_off_from_nats_and_back_is_claimed_and_announced_again() {
    // Node c alone loses NATS: its one server (s3) is stopped; a and b
    // stay connected to s1 and s2, which keep a quorum of JetStream.
    let mut nats = NatsCluster::start_isolated(3);
    let a = pinned_node(&nats, "a", 0);
    let _b = pinned_node(&nats, "b", 1);
    let c = pinned_node(&nats, "c", 2);
    let (mut cut, cut_id) = join(&c);
    let sub = cut.subscribe("com.ex.cut");
    cut.register("com.ex.cut.proc");
    let (mut watcher, _) = join(&a);
    let (mut probe, probe_id) = join(&a);
    let topics = [
        "wamp.session.on_join",
        "wamp.session.on_leave",
        "wamp.subscription.on_create",
        "wamp.subscription.on_subscribe",
        "wamp.subscription.on_unsubscribe",
        "wamp.subscription.on_delete",
    ];
    let subs = watch(&mut watcher, &topics);
    until(
        &mut probe,
        "a knows c's session, subscription and registration",
        |c| {
            let known = meta(c, "wamp.session.get", vec![uint(cut_id)]) != Value::Null
                && meta(c, "wamp.subscription.lookup", vec!["com.ex.cut".into()]) != Value::Null
                && meta(
                    c,
                    "wamp.registration.lookup",
                    vec!["com.ex.cut.proc".into()],
                ) != Value::Null;
            Value::Bool(known)
        },
        |v| *v == Value::Bool(true),
    );
    // Cut off: a survivor ends c's session (a partition is a death).
    nats.servers[2].stop();
    let mut ended = Vec::new();
    let cut_at = Instant::now();
    while ended.len() < 3 {
        // (Longer than the bound of a death: when the bucket's JetStream
        // leader was on s3, the survivors' first reads fail until a new
        // one is elected, and the sweep, every 10 heartbeats, takes the
        // records: 2 to 12 s in runs here.)
        let e = next_event(&mut watcher, &subs, Duration::from_secs(25))
            .unwrap_or_else(|| panic!("c's session not ended on a: {ended:?}"));
        ended.push(e);
    }
    ended.extend(events(&mut watcher, &subs, Duration::from_millis(1000)));
    let mut topics_ended: Vec<&str> = ended.iter().map(|(t, _)| *t).collect();
    topics_ended.sort();
    assert_eq!(
        topics_ended,
        vec![
            "wamp.session.on_leave",
            "wamp.subscription.on_delete",
            "wamp.subscription.on_unsubscribe",
        ],
        "{ended:?}"
    );
    eprintln!("c ended on a {:?} after the cut", cut_at.elapsed());
    assert_eq!(
        meta(&mut probe, "wamp.session.get", vec![uint(cut_id)]),
        Value::Null
    );
    // The session still runs on c, cut off.
    assert_eq!(
        meta(&mut cut, "wamp.session.get", vec![uint(cut_id)])
            .as_dict()
            .and_then(|d| d.get("session"))
            .and_then(Value::as_u64),
        Some(cut_id)
    );
    // Back: c's session is claimed again and announced (on_join, then its
    // subscription's on_create and on_subscribe), once each.
    nats.servers[2].start_again();
    let back = Instant::now();
    let first = next_event(&mut watcher, &subs, Duration::from_secs(20))
        .expect("c's session announced again on a");
    eprintln!(
        "c's session announced again {:?} after NATS came back",
        back.elapsed()
    );
    let mut again = vec![first];
    again.extend(events(&mut watcher, &subs, Duration::from_millis(1500)));
    let names: Vec<&str> = again.iter().map(|(t, _)| *t).collect();
    assert_eq!(
        names,
        vec![
            "wamp.session.on_join",
            "wamp.subscription.on_create",
            "wamp.subscription.on_subscribe",
        ],
        "{again:?}"
    );
    let details = again[0].1[0].as_dict().expect("details");
    assert_eq!(details.get("session").and_then(Value::as_u64), Some(cut_id));
    assert_eq!(again[1].1[0], uint(cut_id));
    assert_eq!(again[2].1[..2], [uint(cut_id), uint(sub)]);
    // Visible again cluster-wide: the session (its record claimed in the
    // bucket), its subscription and its registration.
    assert_eq!(
        meta(&mut probe, "wamp.session.get", vec![uint(cut_id)])
            .as_dict()
            .and_then(|d| d.get("session"))
            .and_then(Value::as_u64),
        Some(cut_id)
    );
    assert!(ids(&meta(&mut probe, "wamp.session.list", vec![])).contains(&cut_id));
    // Its record is written again at once; a survivor's reap that comes
    // late (the sessions bucket's JetStream leader was on the stopped
    // server) can delete it once more, and the next repair round (10
    // heartbeats, 4 s) writes it again: allow three rounds.
    let mut remote_sub = Value::Null;
    let took = until_within(
        &mut probe,
        "c's subscription known on a again",
        Duration::from_secs(12),
        |c| {
            remote_sub = meta(c, "wamp.subscription.lookup", vec!["com.ex.cut".into()]);
            remote_sub.clone()
        },
        |v| *v != Value::Null,
    );
    eprintln!("c's subscription known on a again {took:?} after its session");
    assert_eq!(
        meta(
            &mut probe,
            "wamp.subscription.list_subscribers",
            vec![remote_sub]
        ),
        Value::List(vec![uint(cut_id)])
    );
    until(
        &mut probe,
        "c's registration known on a again",
        |c| {
            meta(
                c,
                "wamp.registration.lookup",
                vec!["com.ex.cut.proc".into()],
            )
        },
        |v| v.as_u64().is_some(),
    );
    // A publication on a reaches c's subscriber, a call on a c's callee.
    let request = probe.req();
    probe.send(&Message::Publish {
        request,
        options: Dict::new().with("acknowledge", true),
        topic: "com.ex.cut".into(),
        payload: args(vec!["again".into()]),
    });
    probe.expect("PUBLISHED");
    match cut.expect("EVENT") {
        Message::Event {
            subscription,
            payload,
            ..
        } => {
            assert_eq!(subscription, sub);
            assert_eq!(args_of(&payload), vec![Value::Str("again".into())]);
        }
        other => panic!("expected EVENT, got {other:?}"),
    }
    let request = probe.req();
    probe.send(&Message::Call {
        request,
        options: Dict::new(),
        procedure: "com.ex.cut.proc".into(),
        payload: args(vec![uint(41)]),
    });
    let (inv, got) = match cut.expect("INVOCATION") {
        Message::Invocation {
            request, payload, ..
        } => (request, args_of(&payload)),
        other => panic!("expected INVOCATION, got {other:?}"),
    };
    assert_eq!(got, vec![uint(41)]);
    cut.send(&Message::Yield {
        request: inv,
        options: Dict::new(),
        payload: args(vec![uint(42)]),
    });
    match probe.expect("RESULT") {
        Message::Result {
            request: r,
            payload,
            ..
        } => {
            assert_eq!(r, request);
            assert_eq!(args_of(&payload), vec![uint(42)]);
        }
        other => panic!("expected RESULT, got {other:?}"),
    }
    // Nothing more (no second announcement), and c knows a's sessions.
    assert!(events(&mut watcher, &subs, Duration::from_millis(1500)).is_empty());
    until(
        &mut cut,
        "c sees a's sessions again",
        |c| meta(c, "wamp.session.get", vec![uint(probe_id)]),
        |v| v.as_dict().is_some(),
    );
    drop(a);
}

const SECRET: &str = "kill-test-secret";

/// Realm tables: ticket logins, an `admin` role that may call the meta
/// API and a `user` role that may not.
fn kill_config() -> String {
    let hash = switchyard_router::auth::ticket::hash_secret(SECRET).expect("hash");
    let user = |authid: &str, role: &str| {
        format!(
            "[[realm.auth.ticket]]\nauthid = \"{authid}\"\nsecret = \"{hash}\"\nrole = \"{role}\"\n\n"
        )
    };
    format!(
        "[realm.auth]\nmethods = [\"ticket\"]\n\n{}{}{}\
         [[realm.role]]\nname = \"admin\"\n\n\
         [[realm.role.permission]]\nuri = \"wamp.\"\nmatch = \"prefix\"\nallow = [\"call\"]\n\n\
         [[realm.role]]\nname = \"user\"\n\n\
         [[realm.role.permission]]\nuri = \"com.\"\nmatch = \"prefix\"\nallow = [\"call\", \"register\"]\n",
        user("admin", "admin"),
        user("alice", "user"),
        user("bob", "user"),
    )
}

/// A session of `authid` on `node` (ticket): (client, session id).
fn login(node: &Router, authid: &str) -> (Raw, u64) {
    let mut c = Raw::connect(node.rs_port, Serializer::Json);
    let roles = Dict::new()
        .with("caller", Dict::new())
        .with("callee", Dict::new());
    c.send(&Message::Hello {
        realm: "realm1".into(),
        details: Dict::new()
            .with("roles", roles)
            .with("authmethods", Value::List(vec!["ticket".into()]))
            .with("authid", authid),
    });
    assert!(matches!(c.expect("CHALLENGE"), Message::Challenge { .. }));
    c.send(&Message::Authenticate {
        signature: SECRET.into(),
        extra: Dict::new(),
    });
    match c.expect("WELCOME") {
        Message::Welcome { session, .. } => (c, session),
        other => panic!("expected WELCOME, got {other:?}"),
    }
}

/// The GOODBYE that ends `c`'s session: (reason, message).
fn killed(c: &mut Raw) -> (String, String) {
    match c.expect("GOODBYE") {
        Message::Goodbye { reason, details } => (
            reason,
            details.get_str("message").unwrap_or_default().to_string(),
        ),
        other => panic!("expected GOODBYE, got {other:?}"),
    }
}

#[test]
fn kill_procedures_end_sessions_of_every_node_once_authorized_on_the_callers() {
    let nats = Nats::start();
    let node = |name| nats.node_full(name, &kill_config(), CLUSTER);
    let (a, b, c) = (node("a"), node("b"), node("c"));
    let (mut admin, _) = login(&a, "admin");
    let (mut alice0, alice0_id) = login(&a, "alice");
    let (mut alice1, alice1_id) = login(&b, "alice");
    let (mut bob1, bob1_id) = login(&b, "bob");
    let (mut alice2, alice2_id) = login(&c, "alice");
    let (mut bob2, _) = login(&c, "bob");
    let (mut bob3, _) = login(&c, "bob");
    until(
        &mut admin,
        "a sees every node's sessions",
        |c| meta(c, "wamp.session.count", vec![]),
        |v| v.as_u64() == Some(7),
    );
    // A role without the right is refused on its node, and nothing ends.
    for (procedure, arg) in [
        ("wamp.session.kill", uint(bob1_id)),
        ("wamp.session.kill_by_authid", "bob".into()),
        ("wamp.session.kill_by_authrole", "user".into()),
    ] {
        assert_eq!(
            call(&mut alice0, procedure, vec![arg]),
            Err(errors::NOT_AUTHORIZED.to_string()),
            "{procedure}"
        );
    }
    assert!(within(&mut bob1, Duration::from_millis(300)).is_none());
    assert_eq!(
        meta(&mut admin, "wamp.session.count", vec![]).as_u64(),
        Some(7)
    );
    // One session of another node, with a reason and a message.
    let request = admin.req();
    admin.send(&Message::Call {
        request,
        options: Dict::new(),
        procedure: "wamp.session.kill".into(),
        payload: Payload::values(
            vec![uint(bob1_id)],
            Some(
                Dict::new()
                    .with("reason", "com.ex.kicked")
                    .with("message", "go away"),
            ),
        ),
    });
    match admin.expect("RESULT") {
        Message::Result {
            request: r,
            payload,
            ..
        } => {
            assert_eq!(r, request);
            assert!(args_of(&payload).is_empty());
        }
        other => panic!("expected RESULT, got {other:?}"),
    }
    assert_eq!(
        killed(&mut bob1),
        ("com.ex.kicked".to_string(), "go away".to_string())
    );
    // An id no node holds.
    assert_eq!(
        call(&mut admin, "wamp.session.kill", vec![uint(12345)]),
        Err(errors::NO_SUCH_SESSION.to_string())
    );
    // By authid: the ids of every node's sessions, each ended.
    let mut got = ids(&meta(
        &mut admin,
        "wamp.session.kill_by_authid",
        vec!["alice".into()],
    ));
    got.sort();
    let mut want = vec![alice0_id, alice1_id, alice2_id];
    want.sort();
    assert_eq!(got, want);
    for s in [&mut alice0, &mut alice1, &mut alice2] {
        assert_eq!(killed(s).0, errors::CLOSE_KILLED);
    }
    // By authrole: the count, over the nodes (c's two bobs).
    assert_eq!(
        meta(
            &mut admin,
            "wamp.session.kill_by_authrole",
            vec!["user".into()]
        )
        .as_u64(),
        Some(2)
    );
    for s in [&mut bob2, &mut bob3] {
        assert_eq!(killed(s).0, errors::CLOSE_KILLED);
    }
    until(
        &mut admin,
        "only the admin is left",
        |c| meta(c, "wamp.session.count", vec![]),
        |v| v.as_u64() == Some(1),
    );
    // kill_all: every session of every node but the caller's own.
    let (mut on_a, _) = login(&a, "alice");
    let (mut on_b, _) = login(&b, "bob");
    let (mut on_c, _) = login(&c, "alice");
    until(
        &mut admin,
        "a sees the three new sessions",
        |c| meta(c, "wamp.session.count", vec![]),
        |v| v.as_u64() == Some(4),
    );
    assert_eq!(
        call(&mut on_b, "wamp.session.kill_all", vec![]),
        Err(errors::NOT_AUTHORIZED.to_string())
    );
    assert_eq!(
        meta(&mut admin, "wamp.session.kill_all", vec![]).as_u64(),
        Some(3)
    );
    for s in [&mut on_a, &mut on_b, &mut on_c] {
        assert_eq!(killed(s).0, errors::CLOSE_KILLED);
    }
    until(
        &mut admin,
        "only the admin is left after kill_all",
        |c| meta(c, "wamp.session.count", vec![]),
        |v| v.as_u64() == Some(1),
    );
    drop((b, c));
}
