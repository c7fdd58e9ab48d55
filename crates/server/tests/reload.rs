//! Reloading the configuration without a restart (issue 17, item 5): the
//! real binary, its config file rewritten on disk, then `switchyard reload
//! --pid` (which sends SIGHUP), and RawSocket clients that check what the
//! running router now allows.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Raw, Router};
use switchyard_proto::{Dict, Message, Serializer, Value};
use switchyard_router::auth::ticket;

const ROLES: &str = r#"
[[realm.role]]
name = "anonymous"

[[realm.role.permission]]
uri = "com.example."
match = "prefix"
allow = ["subscribe", "publish"]
"#;

fn config_path(r: &Router) -> std::path::PathBuf {
    r.dir.path().join("switchyard.toml")
}

/// Rewrites the router's config file: `from` replaced by `to`.
fn edit(r: &Router, from: &str, to: &str) {
    let path = config_path(r);
    let text = std::fs::read_to_string(&path).expect("config");
    assert!(text.contains(from), "{from:?} not in\n{text}");
    std::fs::write(&path, text.replacen(from, to, 1)).expect("write config");
}

/// `switchyard reload --pid <router>`, then waits until the log holds
/// `want` one time more than before.
fn reload(r: &Router, want: &str) {
    let before = r.log_text().matches(want).count();
    let pid = r.child.as_ref().expect("running").id();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["reload", "--pid", &pid.to_string()])
        .output()
        .expect("switchyard reload");
    assert!(out.status.success(), "{out:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while r.log_text().matches(want).count() <= before {
        assert!(
            Instant::now() < deadline,
            "no {want:?} in the log:\n{}",
            r.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SUBSCRIBE: Ok(subscription) or Err(error URI).
fn try_subscribe(c: &mut Raw, topic: &str) -> Result<u64, String> {
    let request = c.req();
    c.send(&Message::Subscribe {
        request,
        options: Dict::new(),
        topic: topic.into(),
    });
    match c.expect("SUBSCRIBED or ERROR") {
        Message::Subscribed { subscription, .. } => Ok(subscription),
        Message::Error { error, .. } => Err(error),
        other => panic!("expected SUBSCRIBED or ERROR, got {other:?}"),
    }
}

#[test]
fn a_permission_taken_away_applies_to_an_existing_session_after_reload() {
    let r = Router::start(ROLES);
    let mut c = Raw::connect(r.rs_port, Serializer::Json);
    c.join("realm1");
    assert!(try_subscribe(&mut c, "com.example.a").is_ok());

    edit(
        &r,
        r#"allow = ["subscribe", "publish"]"#,
        r#"allow = ["publish"]"#,
    );
    reload(&r, "configuration reloaded");
    assert_eq!(
        try_subscribe(&mut c, "com.example.b"),
        Err("wamp.error.not_authorized".to_string()),
        "the session kept its role, the role lost subscribe"
    );
    // The subscription made before stays (the reload checks new actions).
    let request = c.req();
    c.send(&Message::Publish {
        request,
        options: Dict::new().with("acknowledge", true),
        topic: "com.example.a".into(),
        payload: common::args(vec![Value::UInt(1)]),
    });
    assert!(matches!(c.expect("PUBLISHED"), Message::Published { .. }));

    // Given back: allowed again, same session.
    edit(
        &r,
        r#"allow = ["publish"]"#,
        r#"allow = ["subscribe", "publish"]"#,
    );
    reload(&r, "configuration reloaded");
    assert!(try_subscribe(&mut c, "com.example.c").is_ok());
}

#[test]
fn an_invalid_file_is_refused_with_its_line_and_the_old_rules_stay() {
    let r = Router::start(ROLES);
    let mut c = Raw::connect(r.rs_port, Serializer::Json);
    c.join("realm1");
    // Line 13 of the file (Router::start writes 12 lines before ROLES's).
    edit(
        &r,
        r#"allow = ["subscribe", "publish"]"#,
        r#"allow = ["publish"]
max_subscriptions_per_sesion = 3"#,
    );
    reload(&r, "reload refused: the file is invalid");
    let log = r.log_text();
    assert!(
        log.contains("max_subscriptions_per_sesion"),
        "the key is named:\n{log}"
    );
    assert!(log.contains("line "), "the line is named:\n{log}");
    assert!(
        try_subscribe(&mut c, "com.example.a").is_ok(),
        "nothing of the invalid file applies"
    );
    let mut other = Raw::connect(r.rs_port, Serializer::Json);
    other.join("realm1");
    assert!(try_subscribe(&mut other, "com.example.a").is_ok());
}

#[test]
fn a_key_read_only_at_startup_is_named_in_the_log() {
    let r = Router::start(&format!("{ROLES}\n[limits]\nmax_message_size = 1048576\n"));
    edit(
        &r,
        "max_message_size = 1048576",
        "max_message_size = 2097152",
    );
    reload(&r, "configuration reloaded");
    let log = r.log_text();
    assert!(
        log.contains("[limits] changed: read only at startup"),
        "{log}"
    );
}

fn ticket_hello(authid: &str) -> Message {
    let roles = Dict::new().with("subscriber", Dict::new());
    Message::Hello {
        realm: "realm1".into(),
        details: Dict::new()
            .with("roles", roles)
            .with("authmethods", Value::List(vec![Value::from("ticket")]))
            .with("authid", authid),
    }
}

/// Logs in with a ticket: the WELCOME's authrole, or the ABORT's reason.
fn ticket_login(port: u16, authid: &str, secret: &str) -> Result<String, String> {
    let mut c = Raw::connect(port, Serializer::Json);
    c.send(&ticket_hello(authid));
    match c.expect("CHALLENGE or ABORT") {
        Message::Challenge { .. } => {}
        Message::Abort { reason, .. } => return Err(reason),
        other => panic!("expected CHALLENGE, got {other:?}"),
    }
    c.send(&Message::Authenticate {
        signature: secret.into(),
        extra: Dict::new(),
    });
    match c.expect("WELCOME or ABORT") {
        Message::Welcome { details, .. } => {
            Ok(details.get_str("authrole").unwrap_or_default().to_string())
        }
        Message::Abort { reason, .. } => Err(reason),
        other => panic!("expected WELCOME, got {other:?}"),
    }
}

#[test]
fn a_principal_added_by_reload_can_log_in() {
    let hash = ticket::hash_secret("alice-secret").expect("hash");
    let bob = ticket::hash_secret("bob-secret").expect("hash");
    let auth = format!(
        "\n[realm.auth]\nmethods = [\"ticket\"]\n\n[[realm.auth.ticket]]\nauthid = \"alice\"\nsecret = \"{hash}\"\nrole = \"user\"\n"
    );
    let r = Router::start(&auth);
    assert_eq!(
        ticket_login(r.rs_port, "alice", "alice-secret"),
        Ok("user".into())
    );
    assert!(ticket_login(r.rs_port, "bob", "bob-secret").is_err());
    let path = config_path(&r);
    let mut text = std::fs::read_to_string(&path).expect("config");
    text.push_str(&format!(
        "\n[[realm.auth.ticket]]\nauthid = \"bob\"\nsecret = \"{bob}\"\nrole = \"user\"\n"
    ));
    std::fs::write(&path, text).expect("write config");
    reload(&r, "configuration reloaded");
    assert_eq!(
        ticket_login(r.rs_port, "bob", "bob-secret"),
        Ok("user".into())
    );
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, now (UTC): the bridge's timestamp format.
fn now() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// The query of a request to the bridge's /publish signed with `key`
/// (the Crossbar scheme: HMAC-SHA256 of key, timestamp, seq, nonce, body).
fn signed(key: &str, secret: &str, nonce: &str, body: &str) -> String {
    use base64::Engine;
    use hmac::Mac;
    let ts = now();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("hmac");
    for part in [key, ts.as_str(), "1", nonce, body] {
        mac.update(part.as_bytes());
    }
    let sig = base64::engine::general_purpose::URL_SAFE.encode(mac.finalize().into_bytes());
    let pct = |s: &str| {
        s.replace(':', "%3A")
            .replace('+', "%2B")
            .replace('=', "%3D")
    };
    format!(
        "key={key}&timestamp={}&seq=1&nonce={nonce}&signature={}",
        pct(&ts),
        pct(&sig)
    )
}

/// POST /publish on the bridge at `port`: the status.
fn bridge_publish(port: u16, query: &str, body: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("bridge");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        s,
        "POST /publish?{query} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {out:?}"))
}

#[test]
fn a_bridge_key_added_by_reload_signs_requests() {
    let port = common::free_port();
    let r = Router::start(&format!(
        "\n[[bridge]]\naddress = \"127.0.0.1:{port}\"\nrealm = \"realm1\"\n\n\
         [[bridge.key]]\nkey = \"old\"\nsecret = \"0123456789abcdef-old\"\nrole = \"backend\"\n"
    ));
    let body = r#"{"topic": "com.example.bridged", "args": [1]}"#;
    let new_key = |nonce: &str| signed("new", "0123456789abcdef-new", nonce, body);
    assert_eq!(
        bridge_publish(port, &new_key("1"), body),
        401,
        "unknown key"
    );
    assert_eq!(
        bridge_publish(
            port,
            &signed("old", "0123456789abcdef-old", "2", body),
            body
        ),
        200
    );
    let path = config_path(&r);
    let mut text = std::fs::read_to_string(&path).expect("config");
    text.push_str(
        "\n[[bridge.key]]\nkey = \"new\"\nsecret = \"0123456789abcdef-new\"\nrole = \"backend\"\n",
    );
    std::fs::write(&path, text).expect("write config");
    reload(&r, "configuration reloaded");
    assert_eq!(bridge_publish(port, &new_key("3"), body), 200);
    // A signature accepted before the reload stays used after it.
    let once = signed("old", "0123456789abcdef-old", "4", body);
    assert_eq!(bridge_publish(port, &once, body), 200);
    reload(&r, "configuration reloaded");
    assert_eq!(bridge_publish(port, &once, body), 401, "replayed");
    assert!(!r.log_text().contains("[[bridge]] (but its keys) changed"));
}

/// An HS256 JWT for `sub`, valid for five minutes.
fn jwt(sub: &str, secret: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + 300;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": sub, "aud": "switchyard", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode")
}

#[test]
fn a_jwt_key_rotated_in_its_file_applies_after_reload_and_a_bad_file_is_refused() {
    let keys = tempfile::tempdir().expect("tempdir");
    let key_file = keys.path().join("jwt.secret");
    std::fs::write(&key_file, "first-secret-0123456789").expect("key");
    let r = Router::start(&format!(
        "\n[realm.auth]\nmethods = [\"ticket\"]\nmax_failures = 0\n\n[[realm.auth.jwt]]\nalgorithms = [\"HS256\"]\nsecret_file = \"{}\"\naudience = \"switchyard\"\nrole = \"user\"\n",
        key_file.display()
    ));
    let old = jwt("alice", "first-secret-0123456789");
    let new = jwt("alice", "second-secret-0123456789");
    assert_eq!(ticket_login(r.rs_port, "alice", &old), Ok("user".into()));
    assert!(ticket_login(r.rs_port, "alice", &new).is_err());

    // The key rotated in its file: SIGHUP reads it again.
    std::fs::write(&key_file, "second-secret-0123456789").expect("key");
    reload(&r, "configuration reloaded");
    assert_eq!(ticket_login(r.rs_port, "alice", &new), Ok("user".into()));
    assert!(ticket_login(r.rs_port, "alice", &old).is_err());

    // A key file that cannot be read refuses the whole reload: the issuer
    // is not dropped, the running key stays.
    edit(&r, "role = \"user\"", "role = \"other\"");
    std::fs::remove_file(&key_file).expect("remove key");
    reload(&r, "reload refused");
    assert_eq!(ticket_login(r.rs_port, "alice", &new), Ok("user".into()));
}

#[test]
fn the_app_authenticator_over_http_is_swapped_by_reload() {
    // Nothing listens on `closed`: the app is unavailable, so a login it
    // decides gets `fallback_role`; without [realm.http_auth] the same
    // login has no principal and is refused.
    let closed = common::free_port();
    let app = format!(
        "\n[realm.http_auth]\nauthenticator_url = \"http://127.0.0.1:{closed}/login\"\nkey = \"router\"\nsecret = \"app-shared-secret-0123456789\"\ntimeout = \"300ms\"\nfallback_role = \"guest\"\n"
    );
    let r = Router::start("\n[realm.auth]\nmethods = [\"ticket\"]\nmax_failures = 0\n");
    assert!(ticket_login(r.rs_port, "alice", "anything").is_err());

    let path = config_path(&r);
    let without = std::fs::read_to_string(&path).expect("config");
    std::fs::write(&path, format!("{without}{app}")).expect("write config");
    reload(&r, "configuration reloaded");
    assert_eq!(
        ticket_login(r.rs_port, "alice", "anything"),
        Ok("guest".into()),
        "the app (down) decides: its fallback role"
    );

    // Removed again: logins no longer go to the app.
    std::fs::write(&path, without).expect("write config");
    reload(&r, "configuration reloaded");
    assert!(ticket_login(r.rs_port, "alice", "anything").is_err());
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

const QUEUES: &str = r#"
[[realm.queue]]
name = "a"
target = "com.example.work"
concurrency = 1
"#;

/// `switchyard.queue.stats` of `queue`, or the error URI.
async fn queue_stats(s: &switchyard_client::Session, queue: &str) -> Result<Dict, String> {
    s.call(
        "switchyard.queue.stats",
        vec![Value::from(queue)],
        Dict::new(),
    )
    .await
    .map(|(_, kw)| kw)
    .map_err(|e| e.to_string())
}

fn uint(d: &Dict, k: &str) -> u64 {
    match d.get(k) {
        Some(Value::UInt(n)) => *n,
        other => panic!("{k}: {other:?} in {d:?}"),
    }
}

#[test]
fn queues_and_bindings_are_applied_by_reload_and_nothing_is_deleted() {
    let r = Router::start(QUEUES);
    let rt = rt();
    let s = rt
        .block_on(switchyard_client::Session::connect(
            &r.rs_url(),
            "realm1",
            Serializer::MsgPack,
        ))
        .expect("connect");
    let push = |queue: &str| {
        rt.block_on(s.call(
            "switchyard.queue.push",
            vec![Value::from(queue)],
            Dict::new(),
        ))
        .map_err(|e| e.to_string())
    };
    push("a").expect("push to a");
    assert_eq!(
        uint(
            &rt.block_on(queue_stats(&s, "a")).expect("a"),
            "concurrency"
        ),
        1
    );
    assert!(push("b").is_err(), "b does not exist yet");

    // A changed queue, a new one and a binding that feeds it.
    edit(
        &r,
        "concurrency = 1",
        "concurrency = 4\n\n[[realm.queue]]\nname = \"b\"\ntarget = \"com.example.other\"\n\n\
         [[realm.queue_binding]]\ntopic = \"com.example.event\"\nqueues = [\"b\"]\n",
    );
    reload(&r, "configuration reloaded");
    let log = r.log_text();
    assert!(log.contains("reload: queue created"), "{log}");
    assert!(log.contains("changed=concurrency"), "{log}");
    assert_eq!(
        uint(
            &rt.block_on(queue_stats(&s, "a")).expect("a"),
            "concurrency"
        ),
        4
    );
    push("b").expect("push to the new queue");
    let mut ack = Dict::new();
    ack.insert("acknowledge", true);
    rt.block_on(s.publish_with(
        "com.example.event",
        ack.clone(),
        switchyard_proto::Payload::default(),
    ))
    .expect("a bound publication is stored");
    assert_eq!(
        uint(&rt.block_on(queue_stats(&s, "b")).expect("b"), "ready"),
        2
    );
    // A bound queue cannot be deleted.
    let e = rt
        .block_on(s.call(
            "switchyard.queue.delete",
            vec![Value::from("b")],
            Dict::new(),
        ))
        .expect_err("b is bound");
    assert!(e.to_string().contains("configured_queue"), "{e}");

    // A binding to a queue that does not exist refuses the whole file:
    // queue `a`'s new concurrency in the same file is not applied either.
    edit(&r, "concurrency = 4", "concurrency = 2");
    edit(&r, "queues = [\"b\"]", "queues = [\"nope\"]");
    reload(&r, "reload refused");
    let log = r.log_text();
    assert!(
        log.contains("names queue \"nope\", which is not declared"),
        "{log}"
    );
    assert_eq!(
        uint(
            &rt.block_on(queue_stats(&s, "a")).expect("a"),
            "concurrency"
        ),
        4
    );

    // Queue `a` and the binding leave the file: `a` keeps its job and can be
    // deleted at run time; the topic no longer makes jobs.
    let text = std::fs::read_to_string(config_path(&r)).expect("config");
    let start = text.find("[[realm.queue]]\nname = \"a\"").expect("queue a");
    let end = start
        + text[start..]
            .find("[[realm.queue]]\nname = \"b\"")
            .expect("b");
    let without_a = format!("{}{}", &text[..start], &text[end..]);
    let cut = without_a.find("[[realm.queue_binding]]").expect("binding");
    std::fs::write(config_path(&r), &without_a[..cut]).expect("write");
    reload(&r, "configuration reloaded");
    assert!(
        r.log_text().contains("no longer in the config file"),
        "{}",
        r.log_text()
    );
    assert_eq!(
        uint(&rt.block_on(queue_stats(&s, "a")).expect("a kept"), "ready"),
        1
    );
    rt.block_on(s.publish_with(
        "com.example.event",
        ack,
        switchyard_proto::Payload::default(),
    ))
    .expect("publish");
    assert_eq!(
        uint(&rt.block_on(queue_stats(&s, "b")).expect("b"), "ready"),
        2
    );
    let mut force = Dict::new();
    force.insert("force", true);
    rt.block_on(s.call("switchyard.queue.delete", vec![Value::from("a")], force))
        .expect("a, no longer configured, can be deleted");
}
