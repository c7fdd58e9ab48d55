//! Authorization, checked on the router core directly (rules: docs/SECURITY.md
//! "Authorization", crates/router/src/authz.rs): exact, prefix and wildcard
//! permissions, the most specific permission winning, tied permissions that
//! must all allow (deny wins the tie), `{authid}` substitution, pattern
//! subscriptions and registrations that must be allowed on every URI they
//! match, `wamp.error.not_authorized` for each denied action, denied
//! subscribers and history readers getting nothing, `disclose`, and the
//! dynamic authorizer procedure.

mod support;

use std::sync::Arc;

use support::{cra_users, plain, router_with, Client};
use switchyard_proto::message::code;
use switchyard_proto::{Dict, Message, Payload, Value};
use switchyard_router::{Flow, Router};

const DENIED: &str = "wamp.error.not_authorized";

fn json_router(roles: serde_json::Value, users: &[(&str, &str)]) -> Arc<Router> {
    router_with(serde_json::json!({ "auth": cra_users(users), "role": roles }))
}

/// Calls `procedure` (nobody registered it): `no_such_procedure` means the
/// call was allowed, `not_authorized` that it was denied.
fn call_allowed(c: &mut Client, procedure: &str) -> bool {
    match c.call_now(procedure, vec![]) {
        Err(e) if e == "wamp.error.no_such_procedure" => true,
        Err(e) if e == DENIED => false,
        other => panic!("CALL {procedure}: unexpected {other:?}"),
    }
}

fn subscribe_allowed(c: &mut Client, topic: &str, policy: &str) -> bool {
    match c.try_subscribe(topic, Dict::new().with("match", policy)) {
        Ok(_) => true,
        Err(e) if e == DENIED => false,
        Err(e) => panic!("SUBSCRIBE {topic} ({policy}): unexpected {e}"),
    }
}

fn publish_allowed(c: &mut Client, topic: &str) -> bool {
    match c.publish_ack(topic, Dict::new(), vec![]) {
        Ok(_) => true,
        Err(e) if e == DENIED => false,
        Err(e) => panic!("PUBLISH {topic}: unexpected {e}"),
    }
}

fn register_allowed(c: &mut Client, procedure: &str, policy: &str) -> bool {
    match c.try_register(procedure, Dict::new().with("match", policy)) {
        Ok(_) => true,
        Err(e) if e == DENIED => false,
        Err(e) => panic!("REGISTER {procedure} ({policy}): unexpected {e}"),
    }
}

#[tokio::test]
async fn exact_prefix_and_wildcard_permissions_allow_what_they_match() {
    let r = json_router(
        serde_json::json!([{"name": "user", "permission": [
            {"uri": "com.app.echo", "allow": ["call"]},
            {"uri": "com.app.news.", "match": "prefix", "allow": ["publish", "subscribe"]},
            {"uri": "com.app..status", "match": "wildcard", "allow": ["subscribe", "register"]}
        ]}]),
        &[("alice", "user")],
    );
    let mut a = Client::user(&r, "alice").await;
    assert!(call_allowed(&mut a, "com.app.echo"));
    assert!(!call_allowed(&mut a, "com.app.echo2"), "exact is exact");
    assert!(!call_allowed(&mut a, "com.app.echo.x"));
    assert!(publish_allowed(&mut a, "com.app.news.today"));
    assert!(publish_allowed(&mut a, "com.app.news.a.b.c"));
    assert!(
        !publish_allowed(&mut a, "com.app.newsletter"),
        "the prefix ends with a dot"
    );
    assert!(
        !publish_allowed(&mut a, "com.app.echo"),
        "call is not publish"
    );
    assert!(subscribe_allowed(&mut a, "com.app.x.status", "exact"));
    assert!(!subscribe_allowed(&mut a, "com.app.x.y.status", "exact"));
    assert!(register_allowed(&mut a, "com.app.db.status", "exact"));
    assert!(!register_allowed(&mut a, "com.app.echo", "exact"));
    // A pattern registration needs `register` on every URI it matches.
    // com.app.news.status is one of them, and the (more specific) prefix
    // com.app.news. allows subscribe there but not register.
    assert!(subscribe_allowed(&mut a, "com.app..status", "wildcard"));
    assert!(!register_allowed(&mut a, "com.app..status", "wildcard"));
    assert!(!register_allowed(&mut a, "com.app.", "prefix"));
    assert!(!register_allowed(&mut a, "com.app.db..", "wildcard"));
    // Outside every permission: denied.
    assert!(!subscribe_allowed(&mut a, "org.other", "exact"));
    assert!(!call_allowed(&mut a, "org.other"));
}

#[tokio::test]
async fn the_most_specific_permission_wins() {
    let r = json_router(
        serde_json::json!([{"name": "user", "permission": [
            {"uri": "com.app.", "match": "prefix", "allow": ["call", "subscribe"]},
            {"uri": "com.app.admin.", "match": "prefix", "allow": []},
            {"uri": "com.app.admin.ping", "allow": ["call"]},
            {"uri": "com.app..secret", "match": "wildcard", "allow": []}
        ]}]),
        &[("alice", "user")],
    );
    let mut a = Client::user(&r, "alice").await;
    assert!(call_allowed(&mut a, "com.app.echo"));
    assert!(
        !call_allowed(&mut a, "com.app.admin.reset"),
        "the longer prefix denies"
    );
    assert!(
        call_allowed(&mut a, "com.app.admin.ping"),
        "the exact permission allows"
    );
    // A prefix is more specific than a wildcard: com.app. decides.
    assert!(subscribe_allowed(&mut a, "com.app.x.secret", "exact"));
}

#[tokio::test]
async fn tied_permissions_must_all_allow_whatever_their_order() {
    for flip in [false, true] {
        let mut perms = vec![
            serde_json::json!({"uri": "com.t.", "match": "prefix", "allow": ["subscribe"]}),
            serde_json::json!({"uri": "com.t.", "match": "prefix", "allow": []}),
            serde_json::json!({"uri": "com.home.{authid}", "match": "prefix", "allow": ["subscribe"]}),
            serde_json::json!({"uri": "com.home.{authid}", "allow": []}),
        ];
        if flip {
            perms.reverse();
        }
        let r = json_router(
            serde_json::json!([{"name": "user", "permission": perms}]),
            &[("al", "user")],
        );
        let mut a = Client::user(&r, "al").await;
        assert!(
            !subscribe_allowed(&mut a, "com.t.x", "exact"),
            "flip={flip}"
        );
        // The prefix permission's exact instance ties with the exact one.
        assert!(
            !subscribe_allowed(&mut a, "com.home.al", "exact"),
            "flip={flip}"
        );
        assert!(
            subscribe_allowed(&mut a, "com.home.al.inbox", "exact"),
            "flip={flip}"
        );
    }
}

#[tokio::test]
async fn authid_placeholders_give_each_user_only_their_own_uris() {
    let r = json_router(
        serde_json::json!([{"name": "user", "permission": [
            {"uri": "com.app.user.{authid}.", "match": "prefix", "allow": ["publish", "subscribe"]},
            {"uri": "com.app.home.{authid}", "match": "prefix", "allow": ["subscribe"]},
            {"uri": "com.app.role.{authrole}", "allow": ["call"]}
        ]}]),
        &[("al", "user"), ("alice", "user"), ("bob", "user")],
    );
    let mut al = Client::user(&r, "al").await;
    let mut bob = Client::user(&r, "bob").await;
    assert!(subscribe_allowed(&mut al, "com.app.user.al.inbox", "exact"));
    assert!(!subscribe_allowed(
        &mut al,
        "com.app.user.bob.inbox",
        "exact"
    ));
    assert!(publish_allowed(&mut bob, "com.app.user.bob.inbox"));
    assert!(!publish_allowed(&mut bob, "com.app.user.al.inbox"));
    // A pattern over one's own subtree is fine; over everyone's, denied.
    assert!(subscribe_allowed(&mut al, "com.app.user.al.", "prefix"));
    assert!(!subscribe_allowed(&mut al, "com.app.user.", "prefix"));
    assert!(!subscribe_allowed(
        &mut al,
        "com.app.user..inbox",
        "wildcard"
    ));
    // A placeholder ending a prefix binds the whole component.
    assert!(subscribe_allowed(&mut al, "com.app.home.al", "exact"));
    assert!(subscribe_allowed(&mut al, "com.app.home.al.diary", "exact"));
    assert!(!subscribe_allowed(&mut al, "com.app.home.alice", "exact"));
    assert!(!subscribe_allowed(
        &mut al,
        "com.app.home.alice.diary",
        "exact"
    ));
    assert!(
        !subscribe_allowed(&mut al, "com.app.home.al", "prefix"),
        "also matches alice"
    );
    assert!(call_allowed(&mut al, "com.app.role.user"));
    assert!(!call_allowed(&mut al, "com.app.role.admin"));
}

#[tokio::test]
async fn each_denied_action_gets_not_authorized_for_its_request() {
    let r = json_router(
        serde_json::json!([{"name": "user", "permission": [
            {"uri": "com.ok.", "match": "prefix", "allow": ["publish", "subscribe", "call", "register"]}
        ]}]),
        &[("alice", "user")],
    );
    let mut a = Client::user(&r, "alice").await;
    let msgs = vec![
        (
            code::PUBLISH,
            Message::Publish {
                request: 11,
                options: Dict::new().with("acknowledge", true),
                topic: "com.no.t".into(),
                payload: Payload::empty(),
            },
        ),
        (
            code::SUBSCRIBE,
            Message::Subscribe {
                request: 12,
                options: Dict::new(),
                topic: "com.no.t".into(),
            },
        ),
        (
            code::CALL,
            Message::Call {
                request: 13,
                options: Dict::new(),
                procedure: "com.no.p".into(),
                payload: Payload::empty(),
            },
        ),
        (
            code::REGISTER,
            Message::Register {
                request: 14,
                options: Dict::new(),
                procedure: "com.no.p".into(),
            },
        ),
    ];
    for (i, (kind, msg)) in msgs.into_iter().enumerate() {
        assert_eq!(
            a.send(msg),
            Flow::Continue,
            "a denial does not end the session"
        );
        match a.drain().as_slice() {
            [Message::Error {
                request_type,
                request,
                error,
                ..
            }] => {
                assert_eq!(*request_type, kind);
                assert_eq!(*request, 11 + i as u64);
                assert_eq!(error, DENIED);
            }
            other => panic!("request type {kind}: expected ERROR, got {other:?}"),
        }
    }
    // Unacknowledged, a denied PUBLISH is dropped without an answer.
    a.publish("com.no.t", Dict::new(), vec![]);
    assert!(a.drain().is_empty());
    let realm = r.realm("realm1").expect("realm");
    assert!(realm.session(a.session).is_some());
}

#[tokio::test]
async fn denied_subscribers_and_roles_without_permissions_receive_nothing() {
    let r = json_router(
        serde_json::json!([
            {"name": "user", "permission": [
                {"uri": "com.app.user.{authid}.", "match": "prefix", "allow": ["publish", "subscribe"]},
                {"uri": "com.app.public.", "match": "prefix", "allow": ["publish", "subscribe"]}
            ]}
        ]),
        &[("alice", "user"), ("bob", "user")],
    );
    let mut alice = Client::user(&r, "alice").await;
    let mut bob = Client::user(&r, "bob").await;
    // The anonymous role is not listed: it may do nothing.
    let mut anon = Client::join(&r, plain());
    alice.subscribe("com.app.user.alice.inbox", Dict::new());
    let tries: Vec<(&str, &str)> = vec![
        ("com.app.user.alice.inbox", "exact"),
        ("com.app.user.", "prefix"),
        ("com.app.", "prefix"),
        ("com.app.user..inbox", "wildcard"),
        ("com...inbox", "wildcard"),
    ];
    for (topic, policy) in &tries {
        assert!(
            !subscribe_allowed(&mut bob, topic, policy),
            "bob: {topic} {policy}"
        );
        assert!(
            !subscribe_allowed(&mut anon, topic, policy),
            "anon: {topic} {policy}"
        );
    }
    assert!(!publish_allowed(&mut anon, "com.app.public.x"));
    assert!(subscribe_allowed(&mut bob, "com.app.public.", "prefix"));
    alice.publish(
        "com.app.user.alice.inbox",
        Dict::new().with("retain", true),
        vec!["private".into()],
    );
    assert_eq!(alice.events().len(), 0, "the publisher is excluded");
    for c in [&mut bob, &mut anon] {
        assert!(c.events().is_empty(), "a denied subscriber got an event");
    }
    // Nor through a retained event.
    assert!(!subscribe_allowed(&mut bob, "com.app.user.", "prefix"));
    let mut alice2 = Client::user(&r, "alice").await;
    alice2.subscribe(
        "com.app.user.alice.inbox",
        Dict::new().with("get_retained", true),
    );
    assert_eq!(
        alice2.events().len(),
        1,
        "the owner gets the retained event"
    );
    assert!(bob.events().is_empty());
}

#[tokio::test]
async fn history_readers_get_only_the_events_they_may_subscribe_to() {
    let r = router_with(serde_json::json!({
        "auth": cra_users(&[("alice", "user"), ("bob", "user"), ("olga", "ops")]),
        "history": [{"topic": "com.h.", "match": "prefix"}],
        "role": [
            {"name": "user", "permission": [
                {"uri": "com.h.{authid}.", "match": "prefix", "allow": ["publish", "subscribe"]},
                {"uri": "wamp.subscription.", "match": "prefix", "allow": ["call"]}
            ]},
            {"name": "ops", "permission": [
                {"uri": "com.h.", "match": "prefix", "allow": ["subscribe"]},
                {"uri": "wamp.", "match": "prefix", "allow": ["call"]}
            ]}
        ]
    }));
    let mut alice = Client::user(&r, "alice").await;
    let mut bob = Client::user(&r, "bob").await;
    let mut olga = Client::user(&r, "olga").await;
    alice.publish("com.h.alice.x", Dict::new(), vec!["a".into()]);
    bob.publish("com.h.bob.x", Dict::new(), vec!["b".into()]);
    let topics = |c: &mut Client| -> Vec<String> {
        let id = support::first_arg(
            &c.call_now(
                "wamp.subscription.lookup",
                vec![
                    "com.h.".into(),
                    Value::Dict(Dict::new().with("match", "prefix")),
                ],
            )
            .expect("lookup"),
        );
        match support::first_arg(
            &c.call_now("wamp.subscription.get_events", vec![id])
                .expect("get_events"),
        ) {
            Value::List(l) => l
                .iter()
                .map(|e| {
                    e.as_dict()
                        .and_then(|d| d.get_str("topic"))
                        .expect("topic")
                        .to_string()
                })
                .collect(),
            other => panic!("expected a list, got {other:?}"),
        }
    };
    assert_eq!(topics(&mut alice), vec!["com.h.alice.x"]);
    assert_eq!(topics(&mut bob), vec!["com.h.bob.x"]);
    assert_eq!(topics(&mut olga), vec!["com.h.alice.x", "com.h.bob.x"]);
}

#[tokio::test]
async fn a_disclose_permission_discloses_the_publisher_and_the_caller() {
    let r = json_router(
        serde_json::json!([{"name": "user", "permission": [
            {"uri": "com.app.", "match": "prefix", "allow": ["publish", "subscribe", "call", "register"]},
            {"uri": "com.app.audited.", "match": "prefix", "allow": ["publish", "subscribe", "call", "register"], "disclose": true}
        ]}]),
        &[("alice", "user"), ("bob", "user")],
    );
    let mut alice = Client::user(&r, "alice").await;
    let mut bob = Client::user(&r, "bob").await;
    bob.subscribe("com.app.audited.t", Dict::new());
    bob.subscribe("com.app.plain.t", Dict::new());
    alice.publish("com.app.audited.t", Dict::new(), vec![]);
    alice.publish("com.app.plain.t", Dict::new(), vec![]);
    let ev = bob.events();
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[0].details.get_str("publisher_authid"), Some("alice"));
    assert_eq!(ev[1].details.get_str("publisher_authid"), None);

    bob.register("com.app.audited.p", Dict::new());
    alice.call("com.app.audited.p", Dict::new(), vec![]);
    match bob.drain().as_slice() {
        [Message::Invocation { details, .. }] => {
            assert_eq!(details.get_str("caller_authid"), Some("alice"));
            assert_eq!(details.get("caller"), Some(&Value::UInt(alice.session)));
        }
        other => panic!("expected INVOCATION, got {other:?}"),
    }
}

/// Answers the INVOCATIONs `authorizer` has received with `allow`, and
/// returns the arguments of each (session details, uri, action, options).
fn answer_authorizer(authorizer: &mut Client, allow: bool) -> Vec<Vec<Value>> {
    let mut asked = Vec::new();
    for m in authorizer.drain() {
        match m {
            Message::Invocation {
                request, payload, ..
            } => {
                asked.push(support::args(&payload));
                authorizer.send(Message::Yield {
                    request,
                    options: Dict::new(),
                    payload: Payload::values(
                        vec![Value::Dict(
                            Dict::new().with("allow", allow).with("cache", true),
                        )],
                        None,
                    ),
                });
            }
            other => panic!("the authorizer got {other:?}"),
        }
    }
    asked
}

/// Resumes `c`'s suspended message while `authorizer` answers what the
/// router asks it: the flow, and the arguments of each question.
async fn resume_answering(
    c: &mut Client,
    authorizer: &mut Client,
    allow: bool,
) -> (Flow, Vec<Vec<Value>>) {
    let mut asked = Vec::new();
    let resume = c.conn.resume();
    tokio::pin!(resume);
    loop {
        tokio::select! {
            flow = &mut resume => return (flow, asked),
            _ = tokio::time::sleep(std::time::Duration::from_millis(1)) => {
                asked.extend(answer_authorizer(authorizer, allow));
            }
        }
    }
}

#[tokio::test]
async fn the_authorizer_procedure_decides_for_unlisted_roles() {
    let r = router_with(serde_json::json!({
        "auth": cra_users(&[("authz", "authorizer"), ("guest", "guest")]),
        "authorizer": "com.example.authorize",
        "role": [{"name": "authorizer", "permission": [
            {"uri": "com.example.authorize", "allow": ["register"]}
        ]}]
    }));
    let mut authz = Client::user(&r, "authz").await;
    authz.register("com.example.authorize", Dict::new());
    let mut guest = Client::user(&r, "guest").await;

    // The guest's SUBSCRIBE waits for the procedure's answer.
    let request = guest.req();
    let flow = guest.send(Message::Subscribe {
        request,
        options: Dict::new().with("match", "prefix"),
        topic: "com.g.".into(),
    });
    assert_eq!(flow, Flow::Suspend);
    let (flow, asked) = resume_answering(&mut guest, &mut authz, true).await;
    assert_eq!(flow, Flow::Continue);
    assert_eq!(asked.len(), 1);
    let a = &asked[0];
    let who = a[0].as_dict().expect("session details");
    assert_eq!(who.get("session"), Some(&Value::UInt(guest.session)));
    assert_eq!(who.get_str("authid"), Some("guest"));
    assert_eq!(a[1], Value::from("com.g."));
    assert_eq!(a[2], Value::from("subscribe"));
    assert_eq!(
        a[3].as_dict().and_then(|o| o.get_str("match")),
        Some("prefix")
    );
    assert!(
        matches!(guest.drain().as_slice(), [Message::Subscribed { request: r, .. }] if *r == request)
    );

    // A denial: not_authorized; the answer is cached, so the procedure is
    // asked once for the same action and URI.
    for round in 0..2 {
        let request = guest.req();
        let flow = guest.send(Message::Publish {
            request,
            options: Dict::new().with("acknowledge", true),
            topic: "com.g.x".into(),
            payload: Payload::empty(),
        });
        if round == 0 {
            assert_eq!(flow, Flow::Suspend);
            let (_, asked) = resume_answering(&mut guest, &mut authz, false).await;
            assert_eq!(asked.len(), 1);
        } else {
            assert_eq!(flow, Flow::Continue, "the cached answer decides at once");
            assert!(authz.drain().is_empty());
        }
        match guest.drain().as_slice() {
            [Message::Error {
                error, request: r, ..
            }] => {
                assert_eq!(error, DENIED);
                assert_eq!(*r, request);
            }
            other => panic!("round {round}: expected ERROR, got {other:?}"),
        }
    }
}
