//! The connection state machine, checked on the router core directly:
//! HELLO → WELCOME (and what WELCOME announces), the protocol violations
//! (anything before HELLO, a second HELLO, router-only messages, malformed
//! frames), the GOODBYE handshake, ABORT, authentication (WAMP-CRA and
//! ticket, right and wrong secrets), unknown realms, and the limits the
//! connection enforces (handshake sizes, subscriptions per session and per
//! realm, the message rate).

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use support::{cra_sign, cra_users, plain, router, router_with, secret_of, Client};
use switchyard_proto::message::code;
use switchyard_proto::{Dict, Message, Payload, Value};
use switchyard_router::Flow;

fn hello(realm: &str, details: Dict) -> Message {
    Message::Hello {
        realm: realm.into(),
        details,
    }
}

fn goodbye(reason: &str) -> Message {
    Message::Goodbye {
        details: Dict::new(),
        reason: reason.into(),
    }
}

fn publish(request: u64, topic: &str) -> Message {
    Message::Publish {
        request,
        options: Dict::new(),
        topic: topic.into(),
        payload: Payload::empty(),
    }
}

fn features(details: &Dict, role: &str) -> Vec<String> {
    details
        .get("roles")
        .and_then(Value::as_dict)
        .and_then(|r| r.get(role))
        .and_then(Value::as_dict)
        .and_then(|r| r.get("features"))
        .and_then(Value::as_dict)
        .unwrap_or_else(|| panic!("WELCOME.Details.roles.{role}.features: {details:?}"))
        .iter()
        .filter(|(_, v)| **v == Value::Bool(true))
        .map(|(k, _)| k.to_string())
        .collect()
}

#[test]
fn welcome_names_the_session_and_announces_the_roles_and_features() {
    let r = router();
    let mut c = Client::connect(&r);
    assert_eq!(c.send(hello("realm1", plain())), Flow::Continue);
    let details = c.expect_welcome();
    assert!(
        c.session >= 1 && c.session <= 1 << 53,
        "session id {}",
        c.session
    );
    let realm = r.realm("realm1").expect("realm");
    assert!(
        realm.session(c.session).is_some(),
        "the session is in its realm"
    );
    assert_eq!(c.conn.session_id(), Some(c.session));

    assert_eq!(details.get_str("realm"), Some("realm1"));
    assert_eq!(details.get_str("authrole"), Some("anonymous"));
    assert_eq!(details.get_str("authmethod"), Some("anonymous"));
    assert!(details
        .get_str("authid")
        .is_some_and(|a| a.starts_with("anonymous-")));
    assert!(details
        .get_str("agent")
        .is_some_and(|a| a.starts_with("switchyard")));
    let broker = features(&details, "broker");
    for f in [
        "publisher_exclusion",
        "publisher_identification",
        "subscriber_blackwhite_listing",
        "pattern_based_subscription",
        "event_retention",
        "event_history",
        "subscription_meta_api",
        "session_meta_api",
    ] {
        assert!(
            broker.iter().any(|x| x == f),
            "broker lacks {f}: {broker:?}"
        );
    }
    let dealer = features(&details, "dealer");
    for f in [
        "caller_identification",
        "call_timeout",
        "call_canceling",
        "progressive_call_results",
        "progressive_call_invocations",
        "pattern_based_registration",
        "shared_registration",
        "registration_meta_api",
        "session_meta_api",
        "testament_meta_api",
    ] {
        assert!(
            dealer.iter().any(|x| x == f),
            "dealer lacks {f}: {dealer:?}"
        );
    }
    // Two sessions never share an id.
    let other = Client::join(&r, plain());
    assert_ne!(other.session, c.session);
}

#[test]
fn anything_but_hello_first_is_a_protocol_violation() {
    let r = router();
    let firsts = vec![
        publish(1, "com.x"),
        Message::Subscribe {
            request: 1,
            options: Dict::new(),
            topic: "com.x".into(),
        },
        Message::Call {
            request: 1,
            options: Dict::new(),
            procedure: "com.x".into(),
            payload: Payload::empty(),
        },
        goodbye("wamp.close.close_realm"),
        Message::Authenticate {
            signature: "x".into(),
            extra: Dict::new(),
        },
    ];
    for first in firsts {
        let name = format!("{first:?}");
        let mut c = Client::connect(&r);
        assert_eq!(c.send(first), Flow::Close, "{name}");
        assert_eq!(c.expect_abort(), "wamp.error.protocol_violation", "{name}");
        // The connection is done: even a HELLO now only closes it.
        assert_eq!(c.send(hello("realm1", plain())), Flow::Close);
        assert!(c.drain().is_empty());
    }
    assert_eq!(r.realm("realm1").expect("realm").session_count(), 0);
}

#[test]
fn a_malformed_frame_is_a_protocol_violation() {
    let r = router();
    let mut c = Client::connect(&r);
    assert_eq!(
        c.conn.handle_frame(&Bytes::from_static(b"[1, \"realm1\"")),
        Flow::Close
    );
    assert_eq!(c.expect_abort(), "wamp.error.protocol_violation");

    // HELLO must announce the client's roles.
    let mut c = Client::connect(&r);
    assert_eq!(c.send(hello("realm1", Dict::new())), Flow::Close);
    assert_eq!(c.expect_abort(), "wamp.error.protocol_violation");

    let mut c = Client::join(&r, plain());
    let id = c.session;
    assert_eq!(
        c.conn
            .handle_frame(&Bytes::from_static(b"{\"not\": \"wamp\"}")),
        Flow::Close
    );
    assert_eq!(c.expect_abort(), "wamp.error.protocol_violation");
    assert!(
        r.realm("realm1").expect("realm").session(id).is_none(),
        "the session ended"
    );
}

#[test]
fn a_second_hello_or_a_router_message_ends_the_session() {
    let r = router();
    let realm = r.realm("realm1").expect("realm").clone();
    let router_only = vec![
        hello("realm1", plain()),
        Message::Welcome {
            session: 1,
            details: Dict::new(),
        },
        Message::Event {
            subscription: 1,
            publication: 1,
            details: Dict::new(),
            payload: Payload::empty(),
        },
        Message::Result {
            request: 1,
            details: Dict::new(),
            payload: Payload::empty(),
        },
        Message::Challenge {
            method: "ticket".into(),
            extra: Dict::new(),
        },
        // A client sends ERROR only for an INVOCATION.
        Message::Error {
            request_type: code::CALL,
            request: 1,
            details: Dict::new(),
            error: "com.err".into(),
            payload: Payload::empty(),
        },
    ];
    for msg in router_only {
        let name = format!("{msg:?}");
        let mut c = Client::join(&r, plain());
        assert_eq!(c.send(msg), Flow::Close, "{name}");
        assert_eq!(c.expect_abort(), "wamp.error.protocol_violation", "{name}");
        assert!(
            realm.session(c.session).is_none(),
            "{name}: the session ended"
        );
    }
}

#[test]
fn goodbye_is_answered_and_the_transport_may_start_a_new_session() {
    let r = router();
    let realm = r.realm("realm1").expect("realm").clone();
    let mut watcher = Client::join(&r, plain());
    watcher.subscribe("com.g", Dict::new());
    let mut c = Client::join(&r, plain());
    c.subscribe("com.g", Dict::new());
    let first = c.session;

    assert_eq!(c.send(goodbye("wamp.close.close_realm")), Flow::Continue);
    match c.drain().as_slice() {
        [Message::Goodbye { reason, .. }] => assert_eq!(reason, "wamp.close.goodbye_and_out"),
        other => panic!("expected GOODBYE, got {other:?}"),
    }
    assert!(!c.closed, "the client closes the transport, not the router");
    assert!(realm.session(first).is_none());
    assert_eq!(c.conn.session_id(), None);
    // Its subscription went with it.
    watcher.publish("com.g", Dict::new().with("exclude_me", false), vec![]);
    assert_eq!(watcher.events().len(), 1);
    assert!(c.drain().is_empty());

    // A new session on the same transport.
    c.send(hello("realm1", plain()));
    c.expect_welcome();
    assert_ne!(c.session, first);

    // GOODBYE answering the router's GOODBYE is not answered again.
    assert_eq!(
        c.send(goodbye("wamp.close.goodbye_and_out")),
        Flow::Continue
    );
    assert!(c.drain().is_empty(), "GOODBYE echoed back");

    // Between sessions, only HELLO is allowed.
    assert_eq!(c.send(publish(1, "com.g")), Flow::Close);
    assert_eq!(c.expect_abort(), "wamp.error.protocol_violation");
}

#[test]
fn abort_from_the_client_ends_the_session_without_an_answer() {
    let r = router();
    let realm = r.realm("realm1").expect("realm").clone();
    let mut c = Client::join(&r, plain());
    let flow = c.send(Message::Abort {
        details: Dict::new(),
        reason: "wamp.close.system_shutdown".into(),
    });
    assert_eq!(flow, Flow::Close);
    assert!(c.drain().is_empty(), "ABORT is not answered");
    assert!(c.closed);
    assert!(realm.session(c.session).is_none());
}

#[test]
fn an_unknown_realm_or_method_is_aborted_with_its_reason() {
    let r = router();
    let mut c = Client::connect(&r);
    assert_eq!(c.send(hello("realm2", plain())), Flow::Close);
    assert_eq!(c.expect_abort(), "wamp.error.no_such_realm");

    let mut c = Client::connect(&r);
    let details = plain()
        .with("authid", "alice")
        .with("authmethods", Value::List(vec!["ticket".into()]));
    c.send(hello("realm1", details));
    assert_eq!(c.expect_abort(), "wamp.error.no_matching_auth_method");
}

#[test]
fn oversized_hello_fields_are_refused_before_anything_is_kept() {
    let r = router();
    let mut c = Client::connect(&r);
    c.send(hello("realm1", plain().with("authid", "a".repeat(300))));
    assert_eq!(c.expect_abort(), "switchyard.error.limit_exceeded");
    let mut c = Client::connect(&r);
    c.send(hello(&format!("realm1.{}", "r".repeat(600)), plain()));
    assert_eq!(c.expect_abort(), "switchyard.error.limit_exceeded");
    let mut c = Client::connect(&r);
    let methods = Value::List((0..20).map(|_| Value::from("anonymous")).collect());
    c.send(hello("realm1", plain().with("authmethods", methods)));
    assert_eq!(c.expect_abort(), "switchyard.error.limit_exceeded");
}

#[tokio::test]
async fn wampcra_welcomes_the_right_secret_and_aborts_a_wrong_one() {
    let r = router_with(serde_json::json!({
        "auth": cra_users(&[("alice", "user")])
    }));
    let (c, answer) = Client::wampcra(&r, "alice", &secret_of("alice")).await;
    match answer {
        Message::Welcome { details, .. } => {
            assert_eq!(details.get_str("authid"), Some("alice"));
            assert_eq!(details.get_str("authrole"), Some("user"));
            assert_eq!(details.get_str("authmethod"), Some("wampcra"));
        }
        other => panic!("expected WELCOME, got {other:?}"),
    }
    assert!(r
        .realm("realm1")
        .expect("realm")
        .session(c.session)
        .is_some());

    for (authid, secret) in [("alice", "not-the-secret"), ("mallory", "anything")] {
        let (mut c, answer) = Client::wampcra(&r, authid, secret).await;
        match answer {
            Message::Abort { reason, .. } => {
                assert_eq!(reason, "wamp.error.authentication_failed", "{authid}")
            }
            other => panic!("{authid}: expected ABORT, got {other:?}"),
        }
        c.recv();
        assert!(c.closed, "{authid}: the transport closes after ABORT");
    }
    assert_eq!(r.realm("realm1").expect("realm").session_count(), 1);
}

#[tokio::test]
async fn wampcra_challenge_carries_the_session_and_expects_authenticate() {
    let r = router_with(serde_json::json!({
        "auth": cra_users(&[("alice", "user")])
    }));
    let mut c = Client::connect(&r);
    c.send(hello(
        "realm1",
        plain()
            .with("authid", "alice")
            .with("authmethods", Value::List(vec!["wampcra".into()])),
    ));
    let challenge = match c.recv() {
        Some(Message::Challenge { method, extra }) => {
            assert_eq!(method, "wampcra");
            extra.get_str("challenge").expect("challenge").to_string()
        }
        other => panic!("expected CHALLENGE, got {other:?}"),
    };
    let parsed: serde_json::Value = serde_json::from_str(&challenge).expect("a JSON challenge");
    assert_eq!(parsed["authid"], "alice");
    assert_eq!(parsed["authmethod"], "wampcra");
    assert!(
        c.conn.awaiting_hello_since().is_some(),
        "still in the handshake"
    );
    // Anything but AUTHENTICATE (or ABORT) now is a protocol violation.
    assert_eq!(c.send(publish(1, "com.x")), Flow::Close);
    assert_eq!(c.expect_abort(), "wamp.error.protocol_violation");

    // The session id the challenge names is the one WELCOME gives.
    let mut c = Client::connect(&r);
    c.send(hello(
        "realm1",
        plain()
            .with("authid", "alice")
            .with("authmethods", Value::List(vec!["wampcra".into()])),
    ));
    let Some(Message::Challenge { extra, .. }) = c.recv() else {
        panic!("expected CHALLENGE")
    };
    let challenge = extra.get_str("challenge").expect("challenge").to_string();
    let parsed: serde_json::Value = serde_json::from_str(&challenge).expect("JSON");
    c.send(Message::Authenticate {
        signature: cra_sign(&secret_of("alice"), &challenge),
        extra: Dict::new(),
    });
    c.conn.resume().await;
    c.expect_welcome();
    assert_eq!(parsed["session"], c.session);
}

#[tokio::test]
async fn ticket_login_checks_the_argon2_hash() {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::from_b64("c3dpdGNoeWFyZHRlc3Q").expect("salt");
    let hash = argon2::Argon2::default()
        .hash_password(b"open sesame", &salt)
        .expect("hash")
        .to_string();
    let r = router_with(serde_json::json!({
        "auth": {
            "methods": ["ticket"],
            "ticket": [{"authid": "tom", "secret": hash, "role": "backend"}]
        }
    }));
    let login = |ticket: &'static str| {
        let r = r.clone();
        async move {
            let mut c = Client::connect(&r);
            c.send(hello(
                "realm1",
                plain()
                    .with("authid", "tom")
                    .with("authmethods", Value::List(vec!["ticket".into()])),
            ));
            match c.recv() {
                Some(Message::Challenge { method, .. }) => assert_eq!(method, "ticket"),
                other => panic!("expected CHALLENGE, got {other:?}"),
            }
            assert_eq!(
                c.send(Message::Authenticate {
                    signature: ticket.into(),
                    extra: Dict::new(),
                }),
                Flow::Suspend
            );
            c.conn.resume().await;
            c.recv().expect("an answer")
        }
    };
    match login("open sesame").await {
        Message::Welcome { details, .. } => {
            assert_eq!(details.get_str("authid"), Some("tom"));
            assert_eq!(details.get_str("authrole"), Some("backend"));
            assert_eq!(details.get_str("authmethod"), Some("ticket"));
        }
        other => panic!("expected WELCOME, got {other:?}"),
    }
    match login("open sesame!").await {
        Message::Abort { reason, .. } => assert_eq!(reason, "wamp.error.authentication_failed"),
        other => panic!("expected ABORT, got {other:?}"),
    }
    // Anonymous is not among this realm's methods.
    let mut c = Client::connect(&r);
    c.send(hello("realm1", plain()));
    assert_eq!(c.expect_abort(), "wamp.error.no_matching_auth_method");
}

#[test]
fn subscriptions_per_session_and_per_realm_are_limited() {
    let r = router_with(serde_json::json!({
        "max_subscriptions_per_session": 2,
        "max_subscriptions": 3
    }));
    let mut a = Client::join(&r, plain());
    a.subscribe("com.l.1", Dict::new());
    a.subscribe("com.l.2", Dict::new());
    assert_eq!(
        a.try_subscribe("com.l.3", Dict::new()),
        Err("switchyard.error.limit_exceeded".into())
    );
    let mut b = Client::join(&r, plain());
    b.subscribe("com.l.3", Dict::new()); // the realm's third
    assert_eq!(
        b.try_subscribe("com.l.4", Dict::new()),
        Err("switchyard.error.limit_exceeded".into()),
        "the realm holds its maximum of subscriptions"
    );
    // Joining an existing subscription costs the realm nothing.
    b.subscribe("com.l.1", Dict::new());
}

#[test]
#[ignore = "bug: a session at max_subscriptions_per_session that SUBSCRIBEs again to a subscription it already holds gets switchyard.error.limit_exceeded instead of SUBSCRIBED with the existing id (connection.rs counts broker.session_subscriptions before looking the subscription up; the repeat would not add one)"]
fn subscribing_again_at_the_limit_returns_the_existing_subscription() {
    let r = router_with(serde_json::json!({ "max_subscriptions_per_session": 1 }));
    let mut a = Client::join(&r, plain());
    let id = a.subscribe("com.l.1", Dict::new());
    assert_eq!(a.try_subscribe("com.l.1", Dict::new()), Ok(id));
}

#[test]
fn registrations_per_session_are_limited() {
    let r = router_with(serde_json::json!({ "max_registrations_per_session": 1 }));
    let mut a = Client::join(&r, plain());
    a.register("com.p.1", Dict::new());
    assert_eq!(
        a.try_register("com.p.2", Dict::new()),
        Err("switchyard.error.limit_exceeded".into())
    );
}

#[tokio::test]
async fn a_session_over_its_message_rate_is_slowed_down() {
    let rate = 20u32;
    let r = router_with(serde_json::json!({ "max_messages_per_second": rate }));
    let mut c = Client::join(&r, plain());
    let start = Instant::now();
    let mut suspended = 0;
    for i in 0..2 * rate {
        match c.send(publish(u64::from(i) + 1, "com.rate")) {
            Flow::Continue => {}
            Flow::Suspend => {
                suspended += 1;
                assert_eq!(c.conn.resume().await, Flow::Continue);
            }
            Flow::Close => panic!("a fast session is slowed down, not closed"),
        }
    }
    // A burst of `rate` passes; the next `rate` wait about a second in all.
    assert!(
        suspended >= rate as usize - 1,
        "suspended {suspended} times"
    );
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(5),
        "took {took:?}"
    );

    // Without a limit nothing is ever suspended.
    let r = router();
    let mut c = Client::join(&r, plain());
    for i in 0..1000 {
        assert_eq!(c.send(publish(i + 1, "com.rate")), Flow::Continue);
    }
}

#[test]
fn shutdown_says_goodbye_and_refuses_new_sessions() {
    let r = router();
    let mut c = Client::join(&r, plain());
    r.shutdown();
    match c.drain().as_slice() {
        [Message::Goodbye { reason, .. }] => assert_eq!(reason, "wamp.close.system_shutdown"),
        other => panic!("expected GOODBYE, got {other:?}"),
    }
    assert!(c.closed);
    let mut d = Client::connect(&r);
    d.send(hello("realm1", plain()));
    assert_eq!(d.expect_abort(), "wamp.close.system_shutdown");
}

#[test]
fn a_client_that_accepts_little_gets_welcome_without_the_feature_lists() {
    let r = router();
    let mut small = Client::connect_accepting(&r, 512);
    small.send(hello("realm1", plain()));
    let details = small.expect_welcome();
    assert!(features(&details, "broker").is_empty(), "{details:?}");
    assert!(features(&details, "dealer").is_empty());
    assert_eq!(details.get_str("realm"), Some("realm1"));
    // It is a session like any other.
    let mut publ = Client::join(&r, plain());
    small.subscribe("com.small", Dict::new());
    publ.publish("com.small", Dict::new(), vec![1u64.into()]);
    assert_eq!(small.events().len(), 1);
    // An event it cannot take is not sent (and does not end the session).
    publ.publish("com.small", Dict::new(), vec!["x".repeat(1000).into()]);
    assert!(small.events().is_empty());
    assert!(!small.closed);

    let mut big = Client::connect(&r);
    big.send(hello("realm1", plain()));
    assert!(!features(&big.expect_welcome(), "broker").is_empty());
}

#[test]
fn a_large_message_is_refused_before_the_session_exists_only() {
    let r = router();
    let agent = "a".repeat(70 * 1024);
    let mut c = Client::connect(&r);
    assert_eq!(
        c.send(hello("realm1", plain().with("agent", agent.as_str()))),
        Flow::Close
    );
    assert_eq!(c.expect_abort(), "switchyard.error.limit_exceeded");
    // The same size is fine once the session exists.
    let mut c = Client::join(&r, plain());
    assert!(c
        .publish_ack("com.big", Dict::new(), vec![agent.as_str().into()])
        .is_ok());
}

#[test]
fn calls_in_flight_and_testaments_per_session_are_limited() {
    let r = router_with(serde_json::json!({
        "max_calls_in_flight_per_session": 2,
        "max_testaments_per_session": 1
    }));
    let mut callee = Client::join(&r, plain());
    callee.register("com.slow", Dict::new());
    let mut caller = Client::join(&r, plain());
    caller.call("com.slow", Dict::new(), vec![]);
    caller.call("com.slow", Dict::new(), vec![]);
    let third = caller.call("com.slow", Dict::new(), vec![]);
    match caller.drain().as_slice() {
        [Message::Error { request, error, .. }] => {
            assert_eq!(*request, third);
            assert_eq!(error, "switchyard.error.limit_exceeded");
        }
        other => panic!("expected ERROR for the third call, got {other:?}"),
    }
    // Answering one frees its slot.
    let invocations: Vec<u64> = callee
        .drain()
        .into_iter()
        .map(|m| match m {
            Message::Invocation { request, .. } => request,
            other => panic!("expected INVOCATION, got {other:?}"),
        })
        .collect();
    assert_eq!(invocations.len(), 2);
    callee.send(Message::Yield {
        request: invocations[0],
        options: Dict::new(),
        payload: Payload::empty(),
    });
    assert!(matches!(
        caller.drain().as_slice(),
        [Message::Result { .. }]
    ));
    caller.call("com.slow", Dict::new(), vec![]);
    assert!(caller.drain().is_empty(), "the call waits for its callee");
    assert_eq!(callee.drain().len(), 1);

    let testament = |c: &mut Client| {
        c.call_now(
            "wamp.session.add_testament",
            vec!["com.will".into(), Value::List(vec![])],
        )
        .map(|_| ())
    };
    assert_eq!(testament(&mut caller), Ok(()));
    assert_eq!(
        testament(&mut caller),
        Err("switchyard.error.limit_exceeded".into())
    );
}
