//! The Broker, checked on the router core directly (in-process sessions, no
//! sockets): topic matching (exact, prefix, wildcard), acknowledgements,
//! publisher exclusion, black- and whitelisting, publisher disclosure,
//! retained events, event history, unsubscribing, shared subscriptions, the
//! errors for invalid URIs and options, and per-publisher ordering.

mod support;

use support::{args, cra_users, plain, router, router_with, Client};
use switchyard_proto::{Dict, Message, Value};

fn topic_of(e: &support::Event) -> Option<&str> {
    e.details.get_str("topic")
}

#[test]
fn an_exact_subscription_gets_only_its_own_topic() {
    let r = router();
    let mut sub = Client::join(&r, plain());
    let mut publ = Client::join(&r, plain());
    let id = sub.subscribe("com.a.b", Dict::new());
    for t in ["com.a.b", "com.a.b.c", "com.a", "com.a.bc"] {
        publ.publish(t, Dict::new(), vec![t.into()]);
    }
    let events = sub.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].subscription, id);
    assert_eq!(events[0].arg(), Value::from("com.a.b"));
    assert_eq!(
        topic_of(&events[0]),
        None,
        "an exact match does not repeat the topic"
    );
}

#[test]
fn prefix_and_wildcard_subscriptions_match_and_name_the_topic() {
    let r = router();
    let mut sub = Client::join(&r, plain());
    let mut publ = Client::join(&r, plain());
    let prefix = sub.subscribe("com.a.", Dict::new().with("match", "prefix"));
    let wild = sub.subscribe("com..c", Dict::new().with("match", "wildcard"));
    assert_ne!(prefix, wild);
    let seen = |sub: &mut Client, publ: &mut Client, topic: &str| -> Vec<u64> {
        publ.publish(topic, Dict::new(), vec![topic.into()]);
        let events = sub.events();
        for e in &events {
            assert_eq!(topic_of(e), Some(topic), "pattern events name the topic");
            assert_eq!(e.arg(), Value::from(topic));
        }
        let mut ids: Vec<u64> = events.iter().map(|e| e.subscription).collect();
        ids.sort_unstable();
        ids
    };
    let mut both = vec![prefix, wild];
    both.sort_unstable();
    assert_eq!(seen(&mut sub, &mut publ, "com.a.c"), both);
    assert_eq!(seen(&mut sub, &mut publ, "com.a.x.y"), vec![prefix]);
    assert_eq!(seen(&mut sub, &mut publ, "com.b.c"), vec![wild]);
    // Wildcards stand for exactly one component.
    assert!(seen(&mut sub, &mut publ, "com.b.x.c").is_empty());
    assert!(seen(&mut sub, &mut publ, "org.a.c").is_empty());
}

#[test]
fn only_an_acknowledged_publish_is_answered() {
    let r = router();
    let mut sub = Client::join(&r, plain());
    let mut publ = Client::join(&r, plain());
    sub.subscribe("com.ack", Dict::new());
    publ.publish("com.ack", Dict::new(), vec![1u64.into()]);
    assert!(publ.drain().is_empty(), "no PUBLISHED without acknowledge");
    let publication = publ
        .publish_ack("com.ack", Dict::new(), vec![2u64.into()])
        .expect("PUBLISHED");
    let events = sub.events();
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[1].publication, publication,
        "PUBLISHED names the EVENT's publication"
    );
    assert_ne!(events[0].publication, events[1].publication);
}

#[test]
fn the_publisher_is_excluded_unless_it_asks_otherwise() {
    let r = router();
    let mut c = Client::join(&r, plain());
    c.subscribe("com.self", Dict::new());
    c.publish("com.self", Dict::new(), vec![1u64.into()]);
    c.publish(
        "com.self",
        Dict::new().with("exclude_me", true),
        vec![2u64.into()],
    );
    // Other options leave the default alone.
    assert!(c
        .publish_ack("com.self", Dict::new(), vec![3u64.into()])
        .is_ok());
    c.publish(
        "com.self",
        Dict::new().with("retain", true),
        vec![4u64.into()],
    );
    assert!(c.events().is_empty(), "exclude_me defaults to true");
    c.publish(
        "com.self",
        Dict::new().with("exclude_me", false),
        vec![5u64.into()],
    );
    let events = c.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].arg(), Value::from(5u64));
}

#[tokio::test]
async fn exclude_and_eligible_lists_by_session_authid_and_authrole() {
    let r = router_with(serde_json::json!({
        "auth": cra_users(&[("alice", "user"), ("bob", "user"), ("carol", "admin")])
    }));
    let mut alice = Client::user(&r, "alice").await;
    let mut bob = Client::user(&r, "bob").await;
    let mut carol = Client::user(&r, "carol").await;
    let mut publ = Client::join(&r, plain());
    for c in [&mut alice, &mut bob, &mut carol] {
        c.subscribe("com.bw", Dict::new());
    }
    let ids = |l: &[u64]| Value::List(l.iter().map(|i| Value::UInt(*i)).collect());
    let strs = |l: &[&str]| Value::List(l.iter().map(|s| Value::from(*s)).collect());
    let cases: Vec<(Dict, [bool; 3])> = vec![
        (Dict::new(), [true, true, true]),
        (
            Dict::new().with("exclude", ids(&[bob.session])),
            [true, false, true],
        ),
        (
            Dict::new().with("eligible", ids(&[bob.session])),
            [false, true, false],
        ),
        (
            Dict::new().with("exclude_authid", strs(&["alice"])),
            [false, true, true],
        ),
        (
            Dict::new().with("eligible_authid", strs(&["alice", "carol"])),
            [true, false, true],
        ),
        (
            Dict::new().with("exclude_authrole", strs(&["user"])),
            [false, false, true],
        ),
        (
            Dict::new().with("eligible_authrole", strs(&["user"])),
            [true, true, false],
        ),
        // Every list present must pass: eligible and exclude together.
        (
            Dict::new()
                .with("eligible_authrole", strs(&["user"]))
                .with("exclude", ids(&[alice.session])),
            [false, true, false],
        ),
        (
            Dict::new()
                .with("eligible", ids(&[alice.session, carol.session]))
                .with("exclude_authrole", strs(&["admin"])),
            [true, false, false],
        ),
    ];
    for (i, (options, want)) in cases.into_iter().enumerate() {
        publ.publish("com.bw", options.clone(), vec![Value::UInt(i as u64)]);
        let got = [&mut alice, &mut bob, &mut carol].map(|c| {
            let events = c.events();
            assert!(events.len() <= 1);
            events.first().map(|e| e.arg()) == Some(Value::UInt(i as u64))
        });
        assert_eq!(got, want, "case {i}: {options:?}");
    }
}

#[tokio::test]
async fn the_publisher_is_disclosed_on_request_always_or_never() {
    let auth = cra_users(&[("alice", "user")]);
    let check = |e: &support::Event, p: &Client, disclosed: bool| {
        if disclosed {
            assert_eq!(e.details.get("publisher"), Some(&Value::UInt(p.session)));
            assert_eq!(e.details.get_str("publisher_authid"), Some("alice"));
            assert_eq!(e.details.get_str("publisher_authrole"), Some("user"));
        } else {
            for k in ["publisher", "publisher_authid", "publisher_authrole"] {
                assert!(e.details.get(k).is_none(), "{k} disclosed: {:?}", e.details);
            }
        }
    };

    // on_request (the default): only when the publisher asks.
    let r = router_with(serde_json::json!({ "auth": auth }));
    let mut sub = Client::join(&r, plain());
    let mut alice = Client::user(&r, "alice").await;
    sub.subscribe("com.who", Dict::new());
    alice.publish("com.who", Dict::new(), vec![1u64.into()]);
    alice.publish(
        "com.who",
        Dict::new().with("disclose_me", true),
        vec![2u64.into()],
    );
    let events = sub.events();
    assert_eq!(events.len(), 2);
    check(&events[0], &alice, false);
    check(&events[1], &alice, true);

    // always: whatever the publisher asks.
    let r = router_with(serde_json::json!({ "auth": auth, "disclose_publisher": "always" }));
    let mut sub = Client::join(&r, plain());
    let mut alice = Client::user(&r, "alice").await;
    sub.subscribe("com.who", Dict::new());
    alice.publish("com.who", Dict::new(), vec![1u64.into()]);
    check(&sub.events()[0], &alice, true);

    // never: asking is refused, and nothing is delivered for that PUBLISH.
    let r = router_with(serde_json::json!({ "auth": auth, "disclose_publisher": "never" }));
    let mut sub = Client::join(&r, plain());
    let mut alice = Client::user(&r, "alice").await;
    sub.subscribe("com.who", Dict::new());
    assert_eq!(
        alice.publish_ack("com.who", Dict::new().with("disclose_me", true), vec![]),
        Err("wamp.error.option_disallowed.disclose_me".to_string())
    );
    assert!(sub.events().is_empty());
    alice.publish("com.who", Dict::new(), vec![1u64.into()]);
    check(&sub.events()[0], &alice, false);
}

#[test]
fn a_retained_event_goes_to_later_subscribers_that_ask_for_it() {
    let r = router();
    let mut publ = Client::join(&r, plain());
    publ.publish(
        "com.r.x",
        Dict::new().with("retain", true),
        vec![1u64.into()],
    );
    publ.publish(
        "com.r.x",
        Dict::new().with("retain", true),
        vec![2u64.into()],
    );
    publ.publish("com.r.y", Dict::new(), vec![3u64.into()]); // not retained

    let mut late = Client::join(&r, plain());
    let id = late.subscribe("com.r.x", Dict::new().with("get_retained", true));
    let events = late.events();
    assert_eq!(events.len(), 1, "only the last retained event: {events:?}");
    assert_eq!(events[0].subscription, id);
    assert_eq!(events[0].arg(), Value::from(2u64));
    assert_eq!(events[0].details.get_bool("retained"), Some(true));

    // Without get_retained, nothing; a pattern subscription gets every
    // retained topic it matches, with the topic named.
    let mut other = Client::join(&r, plain());
    other.subscribe("com.r.x", Dict::new());
    assert!(other.events().is_empty());
    other.subscribe(
        "com.r.",
        Dict::new()
            .with("match", "prefix")
            .with("get_retained", true),
    );
    let events = other.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(topic_of(&events[0]), Some("com.r.x"));

    // A retained event keeps its black/whitelist for later subscribers.
    publ.publish(
        "com.r.z",
        Dict::new()
            .with("retain", true)
            .with("exclude_authrole", Value::List(vec!["anonymous".into()])),
        vec![4u64.into()],
    );
    let mut third = Client::join(&r, plain());
    third.subscribe("com.r.z", Dict::new().with("get_retained", true));
    assert!(
        third.events().is_empty(),
        "an excluded role got a retained event"
    );
}

#[test]
fn event_history_is_kept_for_configured_topics_and_served_by_get_events() {
    let r = router_with(serde_json::json!({
        "history": [{"topic": "com.h.", "match": "prefix", "limit": 3}]
    }));
    let mut publ = Client::join(&r, plain());
    for i in 0..5u64 {
        publ.publish("com.h.t", Dict::new(), vec![i.into()]);
    }
    publ.publish("com.other", Dict::new(), vec![99u64.into()]);
    let mut reader = Client::join(&r, plain());
    let found = reader
        .call_now(
            "wamp.subscription.lookup",
            vec![
                "com.h.".into(),
                Value::Dict(Dict::new().with("match", "prefix")),
            ],
        )
        .expect("lookup");
    let id = support::first_arg(&found);
    assert!(
        matches!(id, Value::UInt(_)),
        "a history subscription exists: {id:?}"
    );
    let got = reader
        .call_now("wamp.subscription.get_events", vec![id.clone()])
        .expect("get_events");
    let events = match support::first_arg(&got) {
        Value::List(l) => l,
        other => panic!("get_events answers a list, got {other:?}"),
    };
    let kept: Vec<Value> = events
        .iter()
        .map(|e| {
            let d = e.as_dict().expect("an event object");
            assert_eq!(d.get_str("topic"), Some("com.h.t"));
            assert_eq!(d.get("subscription"), Some(&id));
            match d.get("args") {
                Some(Value::List(a)) => a[0].clone(),
                other => panic!("no args: {other:?}"),
            }
        })
        .collect();
    assert_eq!(
        kept,
        vec![2u64.into(), 3u64.into(), 4u64.into()],
        "the last `limit` events, oldest first"
    );

    // A topic without history: invalid_argument; an unknown id: no_such_subscription.
    let mut sub = Client::join(&r, plain());
    let plain_id = sub.subscribe("com.nohist", Dict::new());
    assert_eq!(
        reader
            .call_now("wamp.subscription.get_events", vec![plain_id.into()])
            .map(|_| ()),
        Err("wamp.error.invalid_argument".to_string())
    );
    assert_eq!(
        reader
            .call_now("wamp.subscription.get_events", vec![1u64.into()])
            .map(|_| ()),
        Err("wamp.error.no_such_subscription".to_string())
    );
}

#[test]
fn unsubscribe_stops_events_and_an_unknown_subscription_is_an_error() {
    let r = router();
    let mut sub = Client::join(&r, plain());
    let mut publ = Client::join(&r, plain());
    let id = sub.subscribe("com.u", Dict::new());
    publ.publish("com.u", Dict::new(), vec![1u64.into()]);
    assert_eq!(sub.events().len(), 1);
    let request = sub.req();
    sub.send(Message::Unsubscribe {
        request,
        subscription: id,
    });
    assert!(matches!(
        sub.drain().as_slice(),
        [Message::Unsubscribed { request: r }] if *r == request
    ));
    publ.publish("com.u", Dict::new(), vec![2u64.into()]);
    assert!(sub.events().is_empty(), "EVENT after UNSUBSCRIBED");
    let request = sub.req();
    sub.send(Message::Unsubscribe {
        request,
        subscription: id,
    });
    match sub.drain().as_slice() {
        [Message::Error {
            request: r, error, ..
        }] => {
            assert_eq!(*r, request);
            assert_eq!(error, "wamp.error.no_such_subscription");
        }
        other => panic!("expected ERROR, got {other:?}"),
    }
}

#[test]
fn sessions_share_one_subscription_per_topic_and_match_policy() {
    let r = router();
    let mut a = Client::join(&r, plain());
    let mut b = Client::join(&r, plain());
    let mut publ = Client::join(&r, plain());
    let ida = a.subscribe("com.s", Dict::new());
    let idb = b.subscribe("com.s", Dict::new());
    assert_eq!(ida, idb, "one subscription per (topic, match)");
    assert_eq!(
        a.subscribe("com.s", Dict::new()),
        ida,
        "SUBSCRIBE again: the same id"
    );
    let prefix = b.subscribe("com.s", Dict::new().with("match", "prefix"));
    assert_ne!(prefix, ida, "another match policy is another subscription");

    publ.publish("com.s", Dict::new(), vec![1u64.into()]);
    assert_eq!(
        a.events().len(),
        1,
        "subscribing twice does not double the events"
    );
    assert_eq!(b.events().len(), 2, "one EVENT per matching subscription");

    // a leaves the shared subscription; b keeps it (and its id).
    let request = a.req();
    a.send(Message::Unsubscribe {
        request,
        subscription: ida,
    });
    a.drain();
    publ.publish("com.s", Dict::new(), vec![2u64.into()]);
    assert!(a.events().is_empty());
    let ev = b.events();
    assert_eq!(ev.len(), 2);
    assert!(ev.iter().any(|e| e.subscription == ida));
}

#[test]
fn invalid_uris_and_options_are_refused_with_their_error() {
    let r = router();
    let mut c = Client::join(&r, plain());
    let sub = |c: &mut Client, topic: &str, options: Dict| c.try_subscribe(topic, options);
    assert_eq!(
        sub(&mut c, "com..x", Dict::new()),
        Err("wamp.error.invalid_uri".into())
    );
    assert_eq!(
        sub(&mut c, "com x", Dict::new()),
        Err("wamp.error.invalid_uri".into())
    );
    // Empty components are what a wildcard pattern is made of.
    assert!(sub(&mut c, "com..x", Dict::new().with("match", "wildcard")).is_ok());
    // Meta topics may be subscribed to (meta events), not published to.
    assert!(sub(&mut c, "wamp.session.on_join", Dict::new()).is_ok());
    let publish = |c: &mut Client, topic: &str| c.publish_ack(topic, Dict::new(), vec![]);
    assert_eq!(
        publish(&mut c, "com..x"),
        Err("wamp.error.invalid_uri".into())
    );
    assert_eq!(
        publish(&mut c, "wamp.session.on_join"),
        Err("wamp.error.invalid_uri".into())
    );
    assert_eq!(
        publish(&mut c, &"x".repeat(600)),
        Err("wamp.error.invalid_uri".into())
    );
    // Unacknowledged, a refused PUBLISH is dropped silently.
    c.publish("com..x", Dict::new(), vec![]);
    assert!(c.drain().is_empty());
    // An unknown match policy is a malformed message (the options are
    // checked when decoding): the session ends.
    let request = c.req();
    c.send(Message::Subscribe {
        request,
        options: Dict::new().with("match", "regex"),
        topic: "com.x".into(),
    });
    assert_eq!(c.expect_abort(), "wamp.error.protocol_violation");
}

#[test]
fn events_of_one_publisher_arrive_in_publication_order() {
    let r = router();
    let mut exact = Client::join(&r, plain());
    let mut pattern = Client::join(&r, plain());
    let mut publ = Client::join(&r, plain());
    exact.subscribe("com.seq.t", Dict::new());
    pattern.subscribe("com.seq.", Dict::new().with("match", "prefix"));
    let n = 500u64;
    for i in 0..n {
        let topic = if i % 3 == 0 {
            "com.seq.other"
        } else {
            "com.seq.t"
        };
        publ.publish(topic, Dict::new(), vec![i.into()]);
    }
    let seq = |c: &mut Client| -> Vec<u64> {
        c.events()
            .iter()
            .map(|e| e.arg().as_u64().expect("a number"))
            .collect()
    };
    let want_exact: Vec<u64> = (0..n).filter(|i| i % 3 != 0).collect();
    assert_eq!(seq(&mut exact), want_exact);
    assert_eq!(seq(&mut pattern), (0..n).collect::<Vec<_>>());
}

#[test]
fn a_subscriber_that_left_gets_nothing_and_holds_nothing() {
    let r = router();
    let realm = r.realm("realm1").expect("realm").clone();
    let mut publ = Client::join(&r, plain());
    let sub = {
        let mut sub = Client::join(&r, plain());
        sub.subscribe("com.gone", Dict::new());
        sub.session
    };
    // Dropping the connection is the transport going away.
    assert!(realm.session(sub).is_none());
    assert_eq!(
        args(
            &publ
                .call_now("wamp.subscription.lookup", vec!["com.gone".into()])
                .expect("lookup")
        ),
        vec![Value::Null],
        "the subscription is deleted with its last subscriber"
    );
    assert!(publ.publish_ack("com.gone", Dict::new(), vec![]).is_ok());
}

#[test]
fn realms_do_not_share_subscriptions_or_events() {
    let r = switchyard_router::Router::new(vec![
        switchyard_router::RealmConfig::new("realm1"),
        switchyard_router::RealmConfig::new("realm2"),
    ]);
    let mut one = Client::join_realm(&r, "realm1", plain());
    let mut two = Client::join_realm(&r, "realm2", plain());
    let mut publ = Client::join_realm(&r, "realm1", plain());
    one.subscribe("com.x", Dict::new());
    two.subscribe("com.x", Dict::new());
    publ.publish("com.x", Dict::new(), vec![1u64.into()]);
    assert_eq!(one.events().len(), 1);
    assert!(two.events().is_empty(), "an event crossed realms");
    assert_eq!(
        args(&two.call_now("wamp.session.count", vec![]).expect("count")),
        vec![Value::UInt(1)]
    );
}

#[test]
fn a_session_cannot_unsubscribe_another_sessions_subscription() {
    let r = router();
    let mut a = Client::join(&r, plain());
    let mut b = Client::join(&r, plain());
    let mut publ = Client::join(&r, plain());
    let id = a.subscribe("com.mine", Dict::new());
    let request = b.req();
    b.send(Message::Unsubscribe {
        request,
        subscription: id,
    });
    match b.drain().as_slice() {
        [Message::Error { error, .. }] => assert_eq!(error, "wamp.error.no_such_subscription"),
        other => panic!("expected ERROR, got {other:?}"),
    }
    publ.publish("com.mine", Dict::new(), vec![]);
    assert_eq!(a.events().len(), 1, "a is still subscribed");
}

#[test]
fn arguments_and_keyword_arguments_reach_subscribers_unchanged() {
    let r = router();
    let mut sub = Client::join(&r, plain());
    let mut publ = Client::join(&r, plain());
    sub.subscribe("com.kw", Dict::new());
    let kwargs = Dict::new().with("n", 7u64).with("neg", -3i64).with(
        "nested",
        Dict::new().with("list", Value::List(vec![true.into(), Value::Null])),
    );
    let request = publ.req();
    publ.send(Message::Publish {
        request,
        options: Dict::new(),
        topic: "com.kw".into(),
        payload: switchyard_proto::Payload::values(
            vec!["a".into(), 1u64.into()],
            Some(kwargs.clone()),
        ),
    });
    let events = sub.events();
    assert_eq!(events.len(), 1);
    assert_eq!(
        args(&events[0].payload),
        vec![Value::from("a"), Value::from(1u64)]
    );
    let got = events[0].payload.kwargs.as_ref().map(|k| k.to_value());
    assert!(
        matches!(got, Some(Ok(Value::Dict(ref d))) if *d == kwargs),
        "{got:?}"
    );
}

#[test]
fn retention_is_bounded_by_the_realm_limits() {
    let r = router_with(serde_json::json!({ "retained_topics_limit": 1 }));
    let mut publ = Client::join(&r, plain());
    let retain = || Dict::new().with("retain", true);
    publ.publish("com.keep.a", retain(), vec![1u64.into()]);
    publ.publish("com.keep.b", retain(), vec![2u64.into()]); // over the limit: delivered only
    publ.publish("com.keep.a", retain(), vec![3u64.into()]); // replaces a's
    let mut late = Client::join(&r, plain());
    late.subscribe(
        "com.keep.",
        Dict::new()
            .with("match", "prefix")
            .with("get_retained", true),
    );
    let got: Vec<Value> = late.events().iter().map(|e| e.arg()).collect();
    assert_eq!(got, vec![Value::from(3u64)]);

    let r = router_with(serde_json::json!({ "max_retained_bytes": 64 }));
    let mut publ = Client::join(&r, plain());
    publ.publish("com.big", retain(), vec!["x".repeat(100).into()]);
    let mut late = Client::join(&r, plain());
    late.subscribe("com.big", Dict::new().with("get_retained", true));
    assert!(
        late.events().is_empty(),
        "an event over max_retained_bytes was retained"
    );
}
