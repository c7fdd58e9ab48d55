//! The WAMP meta API, checked on the router core directly: the session,
//! subscription and registration procedures (answers and errors), the meta
//! events of joins, leaves, subscriptions and registrations (arguments and
//! order), `wamp.session.kill`, and the authorization of the meta API in a
//! realm that lists roles.

mod support;

use support::{args, cra_users, first_arg, plain, router, router_with, Client};
use switchyard_proto::{Dict, Message, Value};

fn ids(v: &Value) -> Vec<u64> {
    let mut out: Vec<u64> = match v {
        Value::List(l) => l.iter().map(|i| i.as_u64().expect("an id")).collect(),
        other => panic!("expected a list of ids, got {other:?}"),
    };
    out.sort_unstable();
    out
}

fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort_unstable();
    v
}

/// The first result argument of a meta call that must succeed.
fn ok(c: &mut Client, procedure: &str, a: Vec<Value>) -> Value {
    let payload = c
        .call_now(procedure, a)
        .unwrap_or_else(|e| panic!("{procedure}: {e}"));
    first_arg(&payload)
}

fn err(c: &mut Client, procedure: &str, a: Vec<Value>) -> String {
    match c.call_now(procedure, a) {
        Ok(p) => panic!("{procedure}: expected an ERROR, got {:?}", args(&p)),
        Err(e) => e,
    }
}

#[tokio::test]
async fn session_count_list_and_get() {
    let r = router_with(serde_json::json!({
        "auth": cra_users(&[("alice", "user"), ("bob", "user")])
    }));
    let mut me = Client::join(&r, plain());
    let alice = Client::user(&r, "alice").await;
    let bob = Client::user(&r, "bob").await;

    assert_eq!(ok(&mut me, "wamp.session.count", vec![]), Value::UInt(3));
    assert_eq!(
        ids(&ok(&mut me, "wamp.session.list", vec![])),
        sorted(vec![me.session, alice.session, bob.session])
    );
    let users = Value::List(vec!["user".into()]);
    assert_eq!(
        ok(&mut me, "wamp.session.count", vec![users.clone()]),
        Value::UInt(2)
    );
    assert_eq!(
        ids(&ok(&mut me, "wamp.session.list", vec![users])),
        sorted(vec![alice.session, bob.session])
    );

    let got = ok(&mut me, "wamp.session.get", vec![alice.session.into()]);
    let d = got.as_dict().expect("session details");
    assert_eq!(d.get("session"), Some(&Value::UInt(alice.session)));
    assert_eq!(d.get_str("authid"), Some("alice"));
    assert_eq!(d.get_str("authrole"), Some("user"));
    assert_eq!(d.get_str("authmethod"), Some("wampcra"));
    let transport = d
        .get("transport")
        .and_then(Value::as_dict)
        .expect("transport");
    assert_eq!(transport.get_str("serializer"), Some("json"));

    assert_eq!(
        err(&mut me, "wamp.session.get", vec![12345u64.into()]),
        "wamp.error.no_such_session"
    );
    assert_eq!(
        err(&mut me, "wamp.session.get", vec!["alice".into()]),
        "wamp.error.invalid_argument"
    );
    assert_eq!(
        err(&mut me, "wamp.session.get", vec![]),
        "wamp.error.invalid_argument"
    );

    drop(bob);
    assert_eq!(ok(&mut me, "wamp.session.count", vec![]), Value::UInt(2));
}

#[test]
fn subscription_list_lookup_match_get_and_subscribers() {
    let r = router();
    let mut me = Client::join(&r, plain());
    let mut a = Client::join(&r, plain());
    let mut b = Client::join(&r, plain());
    let exact = a.subscribe("com.m.x.y", Dict::new());
    assert_eq!(b.subscribe("com.m.x.y", Dict::new()), exact);
    let prefix = a.subscribe("com.m.", Dict::new().with("match", "prefix"));
    let wild = b.subscribe("com.m..y", Dict::new().with("match", "wildcard"));

    let list = ok(&mut me, "wamp.subscription.list", vec![]);
    let list = list.as_dict().expect("a dict by match policy");
    assert_eq!(ids(list.get("exact").expect("exact")), vec![exact]);
    assert_eq!(ids(list.get("prefix").expect("prefix")), vec![prefix]);
    assert_eq!(ids(list.get("wildcard").expect("wildcard")), vec![wild]);

    let lookup = |me: &mut Client, topic: &str, policy: Option<&str>| {
        let mut a = vec![Value::from(topic)];
        if let Some(p) = policy {
            a.push(Value::Dict(Dict::new().with("match", p)));
        }
        ok(me, "wamp.subscription.lookup", a)
    };
    assert_eq!(lookup(&mut me, "com.m.x.y", None), Value::UInt(exact));
    assert_eq!(
        lookup(&mut me, "com.m.", Some("prefix")),
        Value::UInt(prefix)
    );
    assert_eq!(
        lookup(&mut me, "com.m..y", Some("wildcard")),
        Value::UInt(wild)
    );
    assert_eq!(
        lookup(&mut me, "com.m.", None),
        Value::Null,
        "the policy is part of the key"
    );
    assert_eq!(lookup(&mut me, "com.none", None), Value::Null);

    assert_eq!(
        ids(&ok(
            &mut me,
            "wamp.subscription.match",
            vec!["com.m.x.y".into()]
        )),
        sorted(vec![exact, prefix, wild])
    );
    assert_eq!(
        ids(&ok(
            &mut me,
            "wamp.subscription.match",
            vec!["com.m.z".into()]
        )),
        vec![prefix]
    );
    assert_eq!(
        ok(&mut me, "wamp.subscription.match", vec!["org.x".into()]),
        Value::Null
    );

    let got = ok(&mut me, "wamp.subscription.get", vec![wild.into()]);
    let d = got.as_dict().expect("subscription details");
    assert_eq!(d.get("id"), Some(&Value::UInt(wild)));
    assert_eq!(d.get_str("uri"), Some("com.m..y"));
    assert_eq!(d.get_str("match"), Some("wildcard"));
    assert!(
        d.get_str("created").is_some_and(|t| t.ends_with('Z')),
        "{d:?}"
    );

    assert_eq!(
        ids(&ok(
            &mut me,
            "wamp.subscription.list_subscribers",
            vec![exact.into()]
        )),
        sorted(vec![a.session, b.session])
    );
    assert_eq!(
        ok(
            &mut me,
            "wamp.subscription.count_subscribers",
            vec![exact.into()]
        ),
        Value::UInt(2)
    );
    assert_eq!(
        ok(
            &mut me,
            "wamp.subscription.count_subscribers",
            vec![prefix.into()]
        ),
        Value::UInt(1)
    );
    for p in [
        "wamp.subscription.get",
        "wamp.subscription.list_subscribers",
        "wamp.subscription.count_subscribers",
    ] {
        assert_eq!(
            err(&mut me, p, vec![7u64.into()]),
            "wamp.error.no_such_subscription",
            "{p}"
        );
    }
}

#[test]
fn registration_list_lookup_match_get_and_callees() {
    let r = router();
    let mut me = Client::join(&r, plain());
    let mut a = Client::join(&r, plain());
    let mut b = Client::join(&r, plain());
    let shared = Dict::new().with("invoke", "roundrobin");
    let exact = a.register("com.p.x.y", shared.clone());
    assert_eq!(
        b.register("com.p.x.y", shared),
        exact,
        "a shared registration"
    );
    let prefix = a.register("com.p.", Dict::new().with("match", "prefix"));
    let wild = b.register("com.p..y", Dict::new().with("match", "wildcard"));

    let list = ok(&mut me, "wamp.registration.list", vec![]);
    let list = list.as_dict().expect("a dict by match policy");
    assert_eq!(ids(list.get("exact").expect("exact")), vec![exact]);
    assert_eq!(ids(list.get("prefix").expect("prefix")), vec![prefix]);
    assert_eq!(ids(list.get("wildcard").expect("wildcard")), vec![wild]);

    assert_eq!(
        ok(
            &mut me,
            "wamp.registration.lookup",
            vec!["com.p.x.y".into()]
        ),
        Value::UInt(exact)
    );
    assert_eq!(
        ok(
            &mut me,
            "wamp.registration.lookup",
            vec![
                "com.p.".into(),
                Value::Dict(Dict::new().with("match", "prefix"))
            ]
        ),
        Value::UInt(prefix)
    );
    assert_eq!(
        ok(&mut me, "wamp.registration.lookup", vec!["com.q".into()]),
        Value::Null
    );
    // match: the registration a call would reach (exact, then the longest
    // prefix, then wildcard).
    let best = |me: &mut Client, p: &str| ok(me, "wamp.registration.match", vec![p.into()]);
    assert_eq!(best(&mut me, "com.p.x.y"), Value::UInt(exact));
    assert_eq!(best(&mut me, "com.p.z.y"), Value::UInt(prefix));
    assert_eq!(best(&mut me, "org.p"), Value::Null);

    let got = ok(&mut me, "wamp.registration.get", vec![exact.into()]);
    let d = got.as_dict().expect("registration details");
    assert_eq!(d.get("id"), Some(&Value::UInt(exact)));
    assert_eq!(d.get_str("uri"), Some("com.p.x.y"));
    assert_eq!(d.get_str("match"), Some("exact"));
    assert_eq!(d.get_str("invoke"), Some("roundrobin"));

    assert_eq!(
        ids(&ok(
            &mut me,
            "wamp.registration.list_callees",
            vec![exact.into()]
        )),
        sorted(vec![a.session, b.session])
    );
    assert_eq!(
        ok(
            &mut me,
            "wamp.registration.count_callees",
            vec![wild.into()]
        ),
        Value::UInt(1)
    );
    for p in [
        "wamp.registration.get",
        "wamp.registration.list_callees",
        "wamp.registration.count_callees",
    ] {
        assert_eq!(
            err(&mut me, p, vec![7u64.into()]),
            "wamp.error.no_such_registration",
            "{p}"
        );
    }
    assert_eq!(
        err(&mut me, "wamp.registration.nothing", vec![]),
        "wamp.error.no_such_procedure"
    );
    // Nobody but the router serves "wamp.".
    assert_eq!(
        a.try_register("wamp.session.count", Dict::new()),
        Err("wamp.error.invalid_uri".into())
    );
}

/// (topic, arguments) of every meta event `w` received.
fn meta_events(w: &mut Client) -> Vec<(String, Vec<Value>)> {
    w.events()
        .into_iter()
        .map(|e| {
            let topic = e
                .details
                .get_str("topic")
                .expect("prefix events name the topic");
            (topic.to_string(), args(&e.payload))
        })
        .collect()
}

#[test]
fn meta_events_report_joins_leaves_subscriptions_and_registrations_in_order() {
    let r = router();
    let mut w = Client::join(&r, plain());
    // SUBSCRIBED comes first (the helper reads it), then the meta events
    // of the watcher's own subscription, which it already receives.
    let own = w.subscribe("wamp.", Dict::new().with("match", "prefix"));
    let events = meta_events(&mut w);
    let topics: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        topics,
        vec![
            "wamp.subscription.on_create",
            "wamp.subscription.on_subscribe"
        ]
    );
    assert_eq!(events[1].1, vec![Value::UInt(w.session), Value::UInt(own)]);

    let mut c = Client::join(&r, plain());
    let s = c.session;
    let events = meta_events(&mut w);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, "wamp.session.on_join");
    let d = events[0].1[0].as_dict().expect("session details");
    assert_eq!(d.get("session"), Some(&Value::UInt(s)));
    assert_eq!(d.get_str("authrole"), Some("anonymous"));

    let sub = c.subscribe("com.e", Dict::new());
    let reg = c.register("com.e.proc", Dict::new());
    let request = c.req();
    c.send(Message::Unsubscribe {
        request,
        subscription: sub,
    });
    let request = c.req();
    c.send(Message::Unregister {
        request,
        registration: reg,
    });
    c.drain();
    let events = meta_events(&mut w);
    let topics: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        topics,
        vec![
            "wamp.subscription.on_create",
            "wamp.subscription.on_subscribe",
            "wamp.registration.on_create",
            "wamp.registration.on_register",
            "wamp.subscription.on_unsubscribe",
            "wamp.subscription.on_delete",
            "wamp.registration.on_unregister",
            "wamp.registration.on_delete",
        ]
    );
    let created = events[0].1[1].as_dict().expect("subscription details");
    assert_eq!(events[0].1[0], Value::UInt(s));
    assert_eq!(created.get("id"), Some(&Value::UInt(sub)));
    assert_eq!(created.get_str("uri"), Some("com.e"));
    assert_eq!(events[1].1, vec![Value::UInt(s), Value::UInt(sub)]);
    let created = events[2].1[1].as_dict().expect("registration details");
    assert_eq!(created.get("id"), Some(&Value::UInt(reg)));
    assert_eq!(created.get_str("uri"), Some("com.e.proc"));
    assert_eq!(events[3].1, vec![Value::UInt(s), Value::UInt(reg)]);
    assert_eq!(events[4].1, vec![Value::UInt(s), Value::UInt(sub)]);
    assert_eq!(events[5].1, vec![Value::UInt(s), Value::UInt(sub)]);
    assert_eq!(events[6].1, vec![Value::UInt(s), Value::UInt(reg)]);
    assert_eq!(events[7].1, vec![Value::UInt(s), Value::UInt(reg)]);

    // Joining an existing subscription creates nothing; leaving the realm
    // unsubscribes, deletes, then reports the leave.
    let mut other = Client::join(&r, plain());
    w.drain();
    let shared = other.subscribe("com.f", Dict::new());
    c.subscribe("com.f", Dict::new());
    let topics: Vec<String> = meta_events(&mut w).into_iter().map(|(t, _)| t).collect();
    assert_eq!(
        topics,
        vec![
            "wamp.subscription.on_create",
            "wamp.subscription.on_subscribe",
            "wamp.subscription.on_subscribe",
        ]
    );
    drop(c);
    let events = meta_events(&mut w);
    let topics: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        topics,
        vec!["wamp.subscription.on_unsubscribe", "wamp.session.on_leave"],
        "the subscription lives on with its other subscriber"
    );
    assert_eq!(events[0].1, vec![Value::UInt(s), Value::UInt(shared)]);
    let leave = &events[1].1;
    assert_eq!(leave[0], Value::UInt(s));
    assert!(leave[1]
        .as_str()
        .is_some_and(|a| a.starts_with("anonymous-")));
    assert_eq!(leave[2], Value::from("anonymous"));
}

#[test]
fn session_kill_ends_another_session_never_the_caller() {
    let r = router();
    let realm = r.realm("realm1").expect("realm").clone();
    let mut me = Client::join(&r, plain());
    let mut victim = Client::join(&r, plain());
    let killed = me
        .call_now("wamp.session.kill", vec![victim.session.into()])
        .map(|p| args(&p));
    assert_eq!(killed, Ok(vec![]));
    match victim.drain().as_slice() {
        [Message::Goodbye { reason, .. }] => assert_eq!(reason, "wamp.close.killed"),
        other => panic!("expected GOODBYE, got {other:?}"),
    }
    assert!(victim.closed);
    assert!(realm.session(victim.session).is_none());
    // What the killed client still sends is moot.
    let request = victim.req();
    assert_eq!(
        victim.send(Message::Publish {
            request,
            options: Dict::new(),
            topic: "com.x".into(),
            payload: switchyard_proto::Payload::empty(),
        }),
        switchyard_router::Flow::Close
    );
    let own = me.session;
    assert_eq!(
        err(&mut me, "wamp.session.kill", vec![own.into()]),
        "wamp.error.no_such_session",
        "a session cannot kill itself"
    );
    assert!(realm.session(me.session).is_some());
}

#[tokio::test]
async fn the_meta_api_needs_the_call_and_subscribe_permissions() {
    let r = router_with(serde_json::json!({
        "auth": cra_users(&[("ann", "user"), ("olga", "ops")]),
        "role": [
            {"name": "user", "permission": [
                {"uri": "com.app.", "match": "prefix", "allow": ["call", "subscribe", "publish"]},
                {"uri": "wamp.subscription.lookup", "allow": ["call"]}
            ]},
            {"name": "ops", "permission": [
                {"uri": "wamp.", "match": "prefix", "allow": ["call", "subscribe"]}
            ]}
        ]
    }));
    let mut ann = Client::user(&r, "ann").await;
    let mut olga = Client::user(&r, "olga").await;
    for p in [
        "wamp.session.count",
        "wamp.session.list",
        "wamp.subscription.list",
        "wamp.registration.list",
    ] {
        assert_eq!(err(&mut ann, p, vec![]), "wamp.error.not_authorized", "{p}");
        assert!(olga.call_now(p, vec![]).is_ok(), "{p}");
    }
    assert_eq!(
        err(&mut ann, "wamp.session.get", vec![olga.session.into()]),
        "wamp.error.not_authorized"
    );
    assert_eq!(
        err(&mut ann, "wamp.session.kill", vec![olga.session.into()]),
        "wamp.error.not_authorized"
    );
    assert!(r
        .realm("realm1")
        .expect("realm")
        .session(olga.session)
        .is_some());
    // A procedure the role lists is allowed.
    assert_eq!(
        ok(
            &mut ann,
            "wamp.subscription.lookup",
            vec!["com.app.x".into()]
        ),
        Value::Null
    );
    // Meta events are subscriptions like any other.
    assert_eq!(
        ann.try_subscribe("wamp.session.on_join", Dict::new()),
        Err("wamp.error.not_authorized".into())
    );
    olga.subscribe("wamp.session.on_join", Dict::new());
    let _late = Client::user(&r, "ann").await;
    assert_eq!(olga.events().len(), 1);
}

/// Calls `wamp.session.add_testament(topic, [arg])` with `scope`, if any.
fn add_testament(
    c: &mut Client,
    topic: &str,
    arg: &str,
    scope: Option<&str>,
) -> Result<(), String> {
    let request = c.req();
    let kwargs = scope.map(|s| Dict::new().with("scope", s));
    c.send(Message::Call {
        request,
        options: Dict::new(),
        procedure: "wamp.session.add_testament".into(),
        payload: switchyard_proto::Payload::values(
            vec![topic.into(), Value::List(vec![arg.into()])],
            kwargs,
        ),
    });
    match c.drain().as_slice() {
        [Message::Result { request: r, .. }] if *r == request => Ok(()),
        [Message::Error {
            request: r, error, ..
        }] if *r == request => Err(error.clone()),
        other => panic!("add_testament: unexpected {other:?}"),
    }
}

#[test]
fn testaments_are_published_when_the_session_ends_unless_flushed() {
    let r = router();
    let mut w = Client::join(&r, plain());
    w.subscribe("com.will", Dict::new());
    let mut c = Client::join(&r, plain());
    add_testament(&mut c, "com.will", "destroyed", None).expect("added");
    add_testament(&mut c, "com.will", "detached", Some("detached")).expect("added");
    assert_eq!(
        add_testament(&mut c, "wamp.session.on_leave", "forged", None),
        Err("wamp.error.invalid_uri".into()),
        "a testament may not forge a meta event"
    );
    assert_eq!(
        add_testament(&mut c, "com.will", "x", Some("forever")),
        Err("wamp.error.invalid_argument".into())
    );
    let mut flushed = Client::join(&r, plain());
    add_testament(&mut flushed, "com.will", "flushed", None).expect("added");
    assert!(flushed
        .call_now("wamp.session.flush_testaments", vec![])
        .is_ok());
    assert!(
        w.events().is_empty(),
        "nothing is published while the sessions live"
    );

    drop(flushed);
    assert!(
        w.events().is_empty(),
        "a flushed testament is not published"
    );
    drop(c);
    let got: Vec<Value> = w.events().iter().map(|e| e.arg()).collect();
    assert_eq!(got, vec![Value::from("detached"), Value::from("destroyed")]);
}

#[tokio::test]
async fn kill_by_authid_authrole_and_all_spare_the_caller() {
    let r = router_with(serde_json::json!({
        "auth": cra_users(&[("alice", "user"), ("bob", "user"), ("olga", "ops")])
    }));
    let realm = r.realm("realm1").expect("realm").clone();
    let mut olga = Client::user(&r, "olga").await;
    let mut alice = Client::user(&r, "alice").await;
    let mut alice2 = Client::user(&r, "alice").await;
    let mut bob = Client::user(&r, "bob").await;
    let mut anon = Client::join(&r, plain());

    let killed = ids(&ok(
        &mut olga,
        "wamp.session.kill_by_authid",
        vec!["alice".into()],
    ));
    assert_eq!(killed, sorted(vec![alice.session, alice2.session]));
    for c in [&mut alice, &mut alice2] {
        assert!(
            matches!(c.drain().as_slice(), [Message::Goodbye { reason, .. }] if reason == "wamp.close.killed")
        );
        assert!(realm.session(c.session).is_none());
    }
    // kill_by_authrole answers a count (spec), kill_by_authid the ids.
    assert_eq!(
        ok(
            &mut olga,
            "wamp.session.kill_by_authrole",
            vec!["user".into()]
        ),
        Value::UInt(1)
    );
    assert!(bob.drain().len() == 1 && bob.closed);
    // kill_all: every session but the caller's, with the given reason.
    let request = olga.req();
    olga.send(Message::Call {
        request,
        options: Dict::new(),
        procedure: "wamp.session.kill_all".into(),
        payload: switchyard_proto::Payload::values(
            vec![],
            Some(Dict::new().with("reason", "com.app.maintenance")),
        ),
    });
    assert!(
        matches!(olga.drain().as_slice(), [Message::Result { payload, .. }] if first_arg(payload) == Value::UInt(1))
    );
    assert!(
        matches!(anon.drain().as_slice(), [Message::Goodbye { reason, .. }] if reason == "com.app.maintenance")
    );
    assert_eq!(realm.session_count(), 1);
    assert!(realm.session(olga.session).is_some());
}

#[test]
fn kill_all_generates_no_meta_or_testament_events() {
    let r = router();
    let mut me = Client::join(&r, plain());
    me.subscribe("wamp.session.on_leave", Dict::new());
    me.subscribe("com.will", Dict::new());
    let mut other = Client::join(&r, plain());
    add_testament(&mut other, "com.will", "bye", None).expect("added");
    let request = me.call("wamp.session.kill_all", Dict::new(), vec![]);
    match me.drain().as_slice() {
        [Message::Result {
            request: r,
            payload,
            ..
        }] => {
            assert_eq!(*r, request);
            assert_eq!(first_arg(payload), Value::UInt(1));
        }
        other => panic!("expected only the RESULT, got {other:?}"),
    }
}
