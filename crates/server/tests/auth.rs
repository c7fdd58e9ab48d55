//! Authentication (ticket, WAMP-CRA, cryptosign, anonymous switched off)
//! and authorization (per-user topics through `{authid}`) against the real
//! binary over RawSocket. The third-party-client side of the same is in
//! tests/interop/python/test_auth.py.

mod common;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::{abort_of, Raw, Router};
use ed25519_dalek::{Signer, SigningKey};
use switchyard_proto::message::code;
use switchyard_proto::{errors, Dict, Message, Payload, Serializer, Value};
use switchyard_router::auth::{ticket, wampcra};

const TICKET: &str = "correct horse battery staple";
const CRA_PASSWORD: &str = "cra-password-42";
const SIGNING_KEY: [u8; 32] = [7u8; 32];

fn config() -> String {
    let hash = ticket::hash_secret(TICKET).expect("hash");
    let cra_key = wampcra::derive_key(CRA_PASSWORD, "pepper", 100, 32);
    let pubkey = hex::encode(
        SigningKey::from_bytes(&SIGNING_KEY)
            .verifying_key()
            .to_bytes(),
    );
    format!(
        r#"
[realm.auth]
methods = ["ticket", "wampcra", "cryptosign"]

[[realm.auth.ticket]]
authid = "alice"
secret = "{hash}"
role = "user"

[[realm.auth.wampcra]]
authid = "peter"
secret = "{cra_key}"
salt = "pepper"
iterations = 100
keylen = 32
role = "user"

[[realm.auth.cryptosign]]
authid = "device-1"
pubkeys = ["{pubkey}"]
role = "device"

[[realm.role]]
name = "user"

[[realm.role.permission]]
uri = "com.app."
match = "prefix"
allow = ["call", "subscribe"]

# Other users' topics: nothing (more specific than "com.app.")...
[[realm.role.permission]]
uri = "com.app.user."
match = "prefix"
allow = []

# ...except one's own (more specific still).
[[realm.role.permission]]
uri = "com.app.user.{{authid}}."
match = "prefix"
allow = ["publish", "subscribe"]

[[realm.role]]
name = "device"

[[realm.role.permission]]
uri = "com.app.telemetry"
allow = ["publish"]
"#
    )
}

fn hello(authmethods: &[&str], authid: Option<&str>, authextra: Option<Dict>) -> Message {
    let roles = Dict::new()
        .with("publisher", Dict::new())
        .with("subscriber", Dict::new())
        .with("caller", Dict::new())
        .with("callee", Dict::new());
    let mut details = Dict::new().with("roles", roles).with(
        "authmethods",
        Value::List(authmethods.iter().map(|m| Value::from(*m)).collect()),
    );
    if let Some(a) = authid {
        details.insert("authid", a);
    }
    if let Some(e) = authextra {
        details.insert("authextra", e);
    }
    Message::Hello {
        realm: "realm1".into(),
        details,
    }
}

fn challenge(c: &mut Raw) -> (String, Dict) {
    match c.expect("CHALLENGE") {
        Message::Challenge { method, extra } => (method, extra),
        other => panic!("expected CHALLENGE, got {other:?}"),
    }
}

fn authenticate(c: &mut Raw, signature: &str) {
    c.send(&Message::Authenticate {
        signature: signature.into(),
        extra: Dict::new(),
    });
}

fn welcome(c: &mut Raw) -> Dict {
    match c.expect("WELCOME") {
        Message::Welcome { details, .. } => details,
        other => panic!("expected WELCOME, got {other:?}"),
    }
}

fn ticket_login(r: &Router, authid: &str, ticket: &str) -> Raw {
    let mut c = Raw::connect(r.rs_port, Serializer::Json);
    c.send(&hello(&["ticket"], Some(authid), None));
    let (method, _) = challenge(&mut c);
    assert_eq!(method, "ticket");
    authenticate(&mut c, ticket);
    c
}

#[test]
fn ticket_wampcra_and_cryptosign() {
    let r = Router::start(&config());

    // Ticket: the right one, a wrong one, an unknown authid (same answer).
    let mut c = ticket_login(&r, "alice", TICKET);
    let d = welcome(&mut c);
    assert_eq!(d.get_str("authid"), Some("alice"));
    assert_eq!(d.get_str("authrole"), Some("user"));
    assert_eq!(d.get_str("authmethod"), Some("ticket"));
    assert_eq!(d.get_str("authprovider"), Some("static"));
    for (authid, t) in [("alice", "wrong ticket"), ("mallory", TICKET)] {
        let mut bad = ticket_login(&r, authid, t);
        let (reason, message) = abort_of(bad.expect("ABORT"));
        assert_eq!(reason, "wamp.error.authentication_failed", "{authid}");
        assert_eq!(message, "authentication failed");
    }

    // WAMP-CRA with a salted secret, computed as Autobahn does.
    let mut c = Raw::connect(r.rs_port, Serializer::MsgPack);
    c.send(&hello(&["wampcra"], Some("peter"), None));
    let (method, extra) = challenge(&mut c);
    assert_eq!(method, "wampcra");
    assert_eq!(extra.get_str("salt"), Some("pepper"));
    let ch = extra.get_str("challenge").expect("challenge").to_string();
    let key = wampcra::derive_key(CRA_PASSWORD, "pepper", 100, 32);
    authenticate(&mut c, &B64.encode(wampcra::sign(&key, &ch)));
    assert_eq!(welcome(&mut c).get_str("authid"), Some("peter"));
    let mut bad = Raw::connect(r.rs_port, Serializer::Json);
    bad.send(&hello(&["wampcra"], Some("peter"), None));
    let (_, extra) = challenge(&mut bad);
    let ch = extra.get_str("challenge").expect("challenge").to_string();
    authenticate(&mut bad, &B64.encode(wampcra::sign("not the key", &ch)));
    assert_eq!(
        abort_of(bad.expect("ABORT")).0,
        "wamp.error.authentication_failed"
    );

    // Cryptosign: a signature over the challenge, then a forged one.
    let sk = SigningKey::from_bytes(&SIGNING_KEY);
    let pubkey = hex::encode(sk.verifying_key().to_bytes());
    for forge in [false, true] {
        let mut c = Raw::connect(r.rs_port, Serializer::Json);
        c.send(&hello(
            &["cryptosign"],
            None,
            Some(Dict::new().with("pubkey", pubkey.as_str())),
        ));
        let (method, extra) = challenge(&mut c);
        assert_eq!(method, "cryptosign");
        let ch = hex::decode(extra.get_str("challenge").expect("challenge")).expect("hex");
        let mut sig = sk.sign(&ch).to_bytes().to_vec();
        if forge {
            sig[0] ^= 1;
        }
        sig.extend_from_slice(&ch);
        authenticate(&mut c, &hex::encode(sig));
        if forge {
            assert_eq!(
                abort_of(c.expect("ABORT")).0,
                "wamp.error.authentication_failed"
            );
        } else {
            let d = welcome(&mut c);
            assert_eq!(
                (d.get_str("authid"), d.get_str("authrole")),
                (Some("device-1"), Some("device"))
            );
        }
    }

    // Anonymous is not among the realm's methods.
    let mut c = Raw::connect(r.rs_port, Serializer::Json);
    c.send(&common::hello("realm1"));
    let (reason, message) = abort_of(c.expect("ABORT"));
    assert_eq!(reason, "wamp.error.no_matching_auth_method");
    assert!(message.contains("ticket"), "{message}");

    // No secret reaches the log.
    let log = r.log_text();
    for secret in [TICKET, CRA_PASSWORD, "wrong ticket"] {
        assert!(!log.contains(secret), "the log contains a secret: {secret}");
    }
    assert!(log.contains("authentication failed"), "failures are logged");
}

/// GET `path` on 127.0.0.1:`port`; the response.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

#[test]
fn users_reach_only_their_own_topics() {
    let metrics_port = common::free_port();
    let r = Router::start(&format!(
        "{}\n[[listener]]\ntype = \"websocket\"\naddress = \"127.0.0.1:{metrics_port}\"\nmetrics_path = \"/metrics\"\n",
        config()
    ));
    let mut alice = ticket_login(&r, "alice", TICKET);
    welcome(&mut alice);
    let expect_error = |c: &mut Raw, request_type: u64, uri: &str| match c.expect("ERROR") {
        Message::Error {
            request_type: t,
            error,
            payload,
            ..
        } => {
            assert_eq!((t, error.as_str()), (request_type, uri));
            common::args_of(&payload)
                .first()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        }
        other => panic!("expected ERROR {uri}, got {other:?}"),
    };
    // Her own topic: allowed. Bob's: refused, for publish and subscribe.
    for (topic, allowed) in [
        ("com.app.user.alice.inbox", true),
        ("com.app.user.bob.inbox", false),
    ] {
        let req = alice.req();
        alice.send(&Message::Publish {
            request: req,
            options: Dict::new().with("acknowledge", true),
            topic: topic.into(),
            payload: Payload::empty(),
        });
        if allowed {
            assert!(matches!(
                alice.expect("PUBLISHED"),
                Message::Published { .. }
            ));
        } else {
            let m = expect_error(&mut alice, code::PUBLISH, errors::NOT_AUTHORIZED);
            assert!(m.contains("publish") && m.contains(topic), "{m}");
        }
    }
    let req = alice.req();
    alice.send(&Message::Subscribe {
        request: req,
        options: Dict::new(),
        topic: "com.app.user.bob.inbox".into(),
    });
    let m = expect_error(&mut alice, code::SUBSCRIBE, errors::NOT_AUTHORIZED);
    assert!(m.contains("subscribe"), "{m}");
    // Nothing outside the permissions, the meta API included.
    for procedure in ["com.other.thing", "wamp.session.kill_all"] {
        let req = alice.req();
        alice.send(&Message::Call {
            request: req,
            options: Dict::new(),
            procedure: procedure.into(),
            payload: Payload::empty(),
        });
        expect_error(&mut alice, code::CALL, errors::NOT_AUTHORIZED);
    }
    let req = alice.req();
    alice.send(&Message::Register {
        request: req,
        options: Dict::new(),
        procedure: "com.app.echo".into(),
    });
    expect_error(&mut alice, code::REGISTER, errors::NOT_AUTHORIZED);
    assert!(r.log_text().contains("not authorized"));
    // Each denial is counted.
    let metrics = http_get(metrics_port, "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    let denied = metrics
        .lines()
        .find_map(|l| l.strip_prefix("switchyard_not_authorized_total "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert_eq!(denied, Some(5), "{metrics}");
    assert!(
        metrics.contains("switchyard_auth_succeeded_total 1"),
        "{metrics}"
    );
}
