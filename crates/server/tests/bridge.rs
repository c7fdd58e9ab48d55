//! The HTTP bridge against the real binary: signed publish and call with a
//! RawSocket subscriber and callee on the other side, and every refusal
//! (method, body, signature, key, timestamp, replay, size).

mod common;

use std::io::{Read, Write};
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE as B64URL;
use base64::Engine;
use common::{args_of, Raw, Router};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use switchyard_proto::{Dict, Message, Payload, Serializer, Value};

const KEY: &str = "bazapp";
const SECRET: &str = "foobar-but-longer-than-16";

fn start() -> (Router, u16) {
    let port = common::free_port();
    let r = Router::start(&format!(
        "[[realm.queue]]\nname = \"mail\"\ntarget = \"com.test.mail\"\nmax_payload_bytes = 512\n\n\
         [[realm.queue]]\nname = \"other\"\ntarget = \"com.test.other\"\n\n\
         [[bridge]]\naddress = \"127.0.0.1:{port}\"\nrealm = \"realm1\"\nmax_body_size = 4096\n\n\
         [[bridge.key]]\nkey = \"{KEY}\"\nsecret = \"{SECRET}\"\nrole = \"backend\"\n\n\
         [[bridge.webhook]]\npath = \"/hooks/github\"\ntopic = \"com.test.github\"\nsecret = \"hook-secret\"\n\n\
         [[bridge.webhook]]\npath = \"/hooks/open\"\ntopic = \"com.test.open\"\n"
    ));
    (r, port)
}

fn now() -> String {
    let since = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock");
    time_fmt(since)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for a duration since the epoch (UTC).
fn time_fmt(since: Duration) -> String {
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

fn signature(secret: &str, key: &str, ts: &str, seq: &str, nonce: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac");
    for part in [key, ts, seq, nonce, body] {
        mac.update(part.as_bytes());
    }
    B64URL.encode(mac.finalize().into_bytes())
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn signed_query(key: &str, secret: &str, ts: &str, nonce: &str, body: &str) -> String {
    format!(
        "key={}&timestamp={}&seq=1&nonce={nonce}&signature={}",
        encode(key),
        encode(ts),
        encode(&signature(secret, key, ts, "1", nonce, body))
    )
}

/// The bound signature of our own endpoints (docs/HTTP-BRIDGE.md): the
/// HMAC of these lines, joined by `\n`.
#[allow(clippy::too_many_arguments)]
fn bound_signature(
    secret: &str,
    method: &str,
    path: &str,
    key: &str,
    ts: &str,
    seq: &str,
    nonce: &str,
    idempotency_key: Option<&str>,
    body: &str,
) -> String {
    use sha2::Digest;
    let digest: String = Sha256::digest(body.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let canonical = [
        "switchyard-bridge-v1",
        method,
        path,
        key,
        ts,
        seq,
        nonce,
        idempotency_key.unwrap_or(""),
        &digest,
    ]
    .join("\n");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac");
    mac.update(canonical.as_bytes());
    B64URL.encode(mac.finalize().into_bytes())
}

/// The query of a request to `path` with a bound signature.
fn bound_query(path: &str, nonce: &str, idempotency_key: Option<&str>, body: &str) -> String {
    let ts = now();
    let sig = bound_signature(
        SECRET,
        "POST",
        path,
        KEY,
        &ts,
        "1",
        nonce,
        idempotency_key,
        body,
    );
    format!(
        "key={}&timestamp={}&seq=1&nonce={nonce}&signature={}",
        encode(KEY),
        encode(&ts),
        encode(&sig)
    )
}

/// One HTTP request; (status, body).
fn http(port: u16, method: &str, target: &str, body: &str) -> (u16, String) {
    request(
        port,
        method,
        target,
        "Content-Type: application/json\r\n",
        body,
    )
}

/// One HTTP request with extra header lines; (status, body).
fn request(port: u16, method: &str, target: &str, headers: &str, body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (status, body)
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[test]
fn signing_vector_from_the_issue() {
    let body = r#"{"topic": "com.test.messages", "args": [1]}"#;
    assert_eq!(
        signature(
            "foobar",
            "bazapp",
            "2026-01-01T00:00:00.000Z",
            "1",
            "12345",
            body
        ),
        "8_Vuubsz7MxDaeZjM1fHfwwoT0dn1-LVHx9oPAnbXa8="
    );
    assert_eq!(
        time_fmt(Duration::from_millis(1_767_225_600_000)),
        "2026-01-01T00:00:00.000Z"
    );
}

#[test]
fn signed_publish_reaches_subscribers_once() {
    let (r, port) = start();
    let mut sub = Raw::connect(r.rs_port, Serializer::MsgPack);
    sub.join("realm1");
    sub.subscribe("com.test.messages");
    let body = r#"{"topic": "com.test.messages", "args": [1, "two"], "kwargs": {"k": true}}"#;
    let query = signed_query(KEY, SECRET, &now(), "101", body);
    let (status, reply) = http(port, "POST", &format!("/publish?{query}"), body);
    assert_eq!(status, 200, "{reply}");
    let id = json(&reply)["id"].as_u64().expect("id");
    match sub.expect("EVENT") {
        Message::Event {
            publication,
            payload,
            ..
        } => {
            assert_eq!(publication, id);
            assert_eq!(
                args_of(&payload),
                vec![Value::from(1u64), Value::from("two")]
            );
        }
        other => panic!("expected EVENT, got {other:?}"),
    }
    // The same request again: refused, nothing published.
    let (status, reply) = http(port, "POST", &format!("/publish?{query}"), body);
    assert_eq!(status, 401, "{reply}");
    assert_eq!(json(&reply)["error"], "switchyard.error.replayed_request");
    let marker = r#"{"topic": "com.test.messages", "args": ["marker"]}"#;
    let q = signed_query(KEY, SECRET, &now(), "102", marker);
    assert_eq!(http(port, "POST", &format!("/publish?{q}"), marker).0, 200);
    match sub.expect("marker EVENT") {
        Message::Event { payload, .. } => {
            assert_eq!(
                args_of(&payload),
                vec![Value::from("marker")],
                "a replay was delivered"
            )
        }
        other => panic!("expected EVENT, got {other:?}"),
    }
}

#[test]
fn every_bad_request_is_refused_with_a_reason() {
    let (r, port) = start();
    let mut sub = Raw::connect(r.rs_port, Serializer::Json);
    sub.join("realm1");
    sub.subscribe("com.test.messages");
    let body = r#"{"topic": "com.test.messages", "args": [1]}"#;
    let ts = now();
    let old = time_fmt(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("clock")
            - Duration::from_secs(3600),
    );
    let cases: Vec<(String, String, &str, u16, &str)> = vec![
        (
            "GET".into(),
            "/publish".into(),
            "",
            405,
            "switchyard.error.method_not_allowed",
        ),
        (
            "POST".into(),
            "/nowhere".into(),
            body,
            404,
            "switchyard.error.not_found",
        ),
        (
            "POST".into(),
            "/publish".into(),
            body,
            401,
            "switchyard.error.signature_required",
        ),
        (
            "POST".into(),
            format!(
                "/publish?{}",
                signed_query("nobody", SECRET, &ts, "201", body)
            ),
            body,
            401,
            "switchyard.error.unknown_key",
        ),
        (
            "POST".into(),
            format!(
                "/publish?{}",
                signed_query(KEY, "wrong-secret-wrong", &ts, "202", body)
            ),
            body,
            401,
            "switchyard.error.invalid_signature",
        ),
        (
            "POST".into(),
            format!("/publish?{}", signed_query(KEY, SECRET, &old, "203", body)),
            body,
            401,
            "switchyard.error.stale_timestamp",
        ),
        (
            "POST".into(),
            format!(
                "/publish?{}",
                signed_query(KEY, SECRET, &ts, "204", "not json")
            ),
            "not json",
            400,
            "switchyard.error.invalid_request",
        ),
        (
            "POST".into(),
            format!("/publish?{}", signed_query(KEY, SECRET, &ts, "205", "[1]")),
            "[1]",
            400,
            "switchyard.error.invalid_request",
        ),
        (
            "POST".into(),
            format!(
                "/publish?{}",
                signed_query(KEY, SECRET, &ts, "206", r#"{"args": [1]}"#)
            ),
            r#"{"args": [1]}"#,
            400,
            "switchyard.error.invalid_request",
        ),
        (
            "POST".into(),
            format!(
                "/publish?{}",
                signed_query(
                    KEY,
                    SECRET,
                    &ts,
                    "207",
                    r#"{"topic": "com.test.messages", "args": 1}"#
                )
            ),
            r#"{"topic": "com.test.messages", "args": 1}"#,
            400,
            "switchyard.error.invalid_request",
        ),
        (
            "POST".into(),
            format!(
                "/publish?{}",
                signed_query(KEY, SECRET, &ts, "208", r#"{"topic": "com..bad"}"#)
            ),
            r#"{"topic": "com..bad"}"#,
            400,
            "switchyard.error.invalid_request",
        ),
    ];
    for (method, target, b, want, error) in &cases {
        let (status, reply) = http(port, method, target, b);
        assert_eq!(status, *want, "{method} {target}: {reply}");
        let v = json(&reply);
        assert_eq!(v["error"], *error, "{method} {target}: {reply}");
        assert!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{reply}"
        );
    }
    let big = format!(
        r#"{{"topic": "com.test.messages", "args": ["{}"]}}"#,
        "x".repeat(5000)
    );
    let q = signed_query(KEY, SECRET, &ts, "209", &big);
    let (status, reply) = http(port, "POST", &format!("/publish?{q}"), &big);
    assert_eq!(status, 413, "{reply}");
    // None of them published anything.
    let marker = r#"{"topic": "com.test.messages", "args": ["marker"]}"#;
    let q = signed_query(KEY, SECRET, &now(), "210", marker);
    assert_eq!(http(port, "POST", &format!("/publish?{q}"), marker).0, 200);
    match sub.expect("EVENT") {
        Message::Event { payload, .. } => {
            assert_eq!(args_of(&payload), vec![Value::from("marker")])
        }
        other => panic!("expected EVENT, got {other:?}"),
    }
}

#[test]
fn signed_call_returns_results_and_errors() {
    let (r, port) = start();
    let mut callee = Raw::connect(r.rs_port, Serializer::Json);
    callee.join("realm1");
    callee.register("com.test.add");
    for (nonce, args, fail) in [("301", "[2, 3]", false), ("302", "[2, \"x\"]", true)] {
        let body = format!(r#"{{"procedure": "com.test.add", "args": {args}}}"#);
        let q = signed_query(KEY, SECRET, &now(), nonce, &body);
        let request = std::thread::spawn(move || http(port, "POST", &format!("/call?{q}"), &body));
        let (invocation, got) = match callee.expect("INVOCATION") {
            Message::Invocation {
                request, payload, ..
            } => (request, args_of(&payload)),
            other => panic!("expected INVOCATION, got {other:?}"),
        };
        if fail {
            callee.send(&Message::Error {
                request_type: switchyard_proto::message::code::INVOCATION,
                request: invocation,
                details: Dict::new(),
                error: "com.test.not_a_number".into(),
                payload: Payload::values(vec![Value::from("x is not a number")], None),
            });
        } else {
            let sum = got.iter().filter_map(Value::as_u64).sum::<u64>();
            callee.send(&Message::Yield {
                request: invocation,
                options: Dict::new(),
                payload: Payload::values(vec![Value::from(sum)], None),
            });
        }
        let (status, reply) = request.join().expect("http thread");
        assert_eq!(status, 200, "{reply}");
        let v = json(&reply);
        if fail {
            assert_eq!(v["error"], "com.test.not_a_number", "{reply}");
            assert_eq!(v["args"][0], "x is not a number", "{reply}");
        } else {
            assert_eq!(v["args"], serde_json::json!([5]), "{reply}");
        }
    }
    // No callee: Crossbar-style 200 with the error.
    let body = r#"{"procedure": "com.test.nobody"}"#;
    let q = signed_query(KEY, SECRET, &now(), "303", body);
    let (status, reply) = http(port, "POST", &format!("/call?{q}"), body);
    assert_eq!(
        (status, json(&reply)["error"].clone()),
        (200, "wamp.error.no_such_procedure".into())
    );
}

/// POST with extra header lines; (status, body).
fn http_with(port: u16, target: &str, headers: &str, body: &str) -> (u16, String) {
    request(port, "POST", target, headers, body)
}

#[test]
fn webhooks_publish_headers_and_body_and_check_signatures() {
    let (r, port) = start();
    let mut sub = Raw::connect(r.rs_port, Serializer::Json);
    sub.join("realm1");
    sub.subscribe("com.test.github");
    sub.subscribe("com.test.open");
    let body = r#"{"action": "opened"}"#;
    let mut mac = Hmac::<Sha256>::new_from_slice(b"hook-secret").expect("hmac");
    mac.update(body.as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // Wrong or missing signature: refused, nothing published.
    for header in ["", "X-Hub-Signature-256: sha256=00\r\n"] {
        let (status, reply) = http_with(port, "/hooks/github", header, body);
        assert_eq!(status, 401, "{reply}");
    }
    let (status, reply) = http_with(
        port,
        "/hooks/github",
        &format!("X-Hub-Signature-256: sha256={hex}\r\nX-GitHub-Event: issues\r\n"),
        body,
    );
    assert_eq!(status, 202, "{reply}");
    let (status, _) = http_with(port, "/hooks/open", "", "plain text");
    assert_eq!(status, 202);
    for (want_body, want_header) in [(body, Some("issues")), ("plain text", None)] {
        match sub.expect("EVENT") {
            Message::Event { payload, .. } => {
                let args = args_of(&payload);
                let Some(Value::Dict(d)) = args.first() else {
                    panic!("expected [{{headers, body}}], got {args:?}")
                };
                assert_eq!(d.get_str("body"), Some(want_body));
                let headers = d.get("headers").and_then(Value::as_dict).expect("headers");
                assert_eq!(headers.get_str("x-github-event"), want_header);
            }
            other => panic!("expected EVENT, got {other:?}"),
        }
    }
}

#[test]
fn openapi_describes_the_bridge() {
    let (_r, port) = start();
    let (status, reply) = http(port, "GET", "/openapi.json", "");
    assert_eq!(status, 200, "{reply}");
    let v = json(&reply);
    assert_eq!(v["openapi"], "3.0.3");
    for path in ["/publish", "/call", "/hooks/github"] {
        assert!(
            v["paths"][path]["post"].is_object(),
            "{path} missing: {reply}"
        );
    }
}

#[test]
fn http_subscriber_receives_signed_posts() {
    let receiver = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let rport = receiver.local_addr().expect("addr").port();
    let port = common::free_port();
    let r = Router::start(&format!(
        "[[bridge]]\naddress = \"127.0.0.1:{port}\"\nrealm = \"realm1\"\nallow_unsigned = true\n\n\
         [[bridge.subscriber]]\ntopic = \"com.test.orders.\"\nmatch = \"prefix\"\n\
         url = \"http://127.0.0.1:{rport}/events\"\nkey = \"hooks\"\nsecret = \"{SECRET}\"\n"
    ));
    let mut publisher = Raw::connect(r.rs_port, Serializer::MsgPack);
    publisher.join("realm1");
    let req = publisher.req();
    publisher.send(&Message::Publish {
        request: req,
        options: Dict::new().with("acknowledge", true),
        topic: "com.test.orders.paid".into(),
        payload: Payload::values(vec![Value::from(4711u64)], None),
    });
    let publication = match publisher.expect("PUBLISHED") {
        Message::Published { publication, .. } => publication,
        other => panic!("expected PUBLISHED, got {other:?}"),
    };
    receiver.set_nonblocking(false).expect("blocking");
    let (mut conn, _) = receiver.accept().expect("the router POSTs the event");
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
    // Read the request head and its body.
    let (head, body) = read_request(&mut conn);
    conn.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
        .ok();
    let target = head.lines().next().expect("request line").to_string();
    assert!(target.starts_with("POST /events?"), "{target}");
    let query = target
        .split(' ')
        .nth(1)
        .and_then(|t| t.split_once('?'))
        .map(|x| x.1)
        .unwrap_or("");
    let param = |name: &str| -> String {
        let raw = query
            .split('&')
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
            .unwrap_or("");
        // %XX decoding of the few escaped characters used.
        let mut out = Vec::new();
        let b = raw.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && i + 2 < b.len() + 1 {
                out.push(u8::from_str_radix(&raw[i + 1..i + 3], 16).expect("hex"));
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).expect("utf8")
    };
    assert_eq!(param("key"), "hooks");
    let expected = signature(
        SECRET,
        "hooks",
        &param("timestamp"),
        &param("seq"),
        &param("nonce"),
        &body,
    );
    assert_eq!(
        param("signature"),
        expected,
        "the POST's signature must verify"
    );
    let v = json(&body);
    assert_eq!(v["topic"], "com.test.orders.paid");
    assert_eq!(v["publication"].as_u64(), Some(publication));
    assert_eq!(v["args"], serde_json::json!([4711]));
}

/// Reads one HTTP request: (head, body as long as Content-Length says).
fn read_request(conn: &mut std::net::TcpStream) -> (String, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk).expect("read");
        assert!(n > 0, "connection closed early");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_string)
                })
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= len {
                return (head.to_string(), body[..len].to_string());
            }
        }
    }
}

/// A one-thread HTTP backend: answers `n` requests, echoing the request
/// line and body; returns what it saw.
fn backend(n: usize) -> (u16, std::thread::JoinHandle<Vec<(String, String)>>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let h = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..n {
            let (mut c, _) = l.accept().expect("accept");
            c.set_read_timeout(Some(Duration::from_secs(10))).ok();
            let (head, body) = read_request(&mut c);
            let line = head.lines().next().unwrap_or("").to_string();
            let reply = format!("saw {line}");
            write!(
                c,
                "HTTP/1.1 201 Created\r\nX-Backend: yes\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                reply.len()
            )
            .ok();
            seen.push((line, body));
        }
        seen
    });
    (port, h)
}

#[test]
fn http_callee_turns_calls_into_requests() {
    let (bport, seen) = backend(2);
    let port = common::free_port();
    let r = Router::start(&format!(
        "[[bridge]]\naddress = \"127.0.0.1:{port}\"\nrealm = \"realm1\"\nallow_unsigned = true\n\n\
         [[bridge.callee]]\nprocedure = \"com.test.backend\"\nurl = \"http://127.0.0.1:{bport}/api\"\n"
    ));
    let mut c = Raw::connect(r.rs_port, Serializer::Json);
    c.join("realm1");
    let mut call = |kwargs: Option<Dict>| -> Dict {
        let req = c.req();
        c.send(&Message::Call {
            request: req,
            options: Dict::new(),
            procedure: "com.test.backend".into(),
            payload: Payload::values(vec![Value::from(7u64)], kwargs),
        });
        match c.expect("RESULT") {
            Message::Result { payload, .. } => match args_of(&payload).first() {
                Some(Value::Dict(d)) => d.clone(),
                other => panic!("expected [{{status, headers, body}}], got {other:?}"),
            },
            other => panic!("expected RESULT, got {other:?}"),
        }
    };
    // Default: POST the call as JSON to the URL.
    let d = call(None);
    assert_eq!(d.get("status").and_then(Value::as_u64), Some(201));
    assert_eq!(d.get_str("body"), Some("saw POST /api HTTP/1.1"));
    let h = d.get("headers").and_then(Value::as_dict).expect("headers");
    assert_eq!(h.get_str("x-backend"), Some("yes"));
    // The call shapes the request: method and path.
    let d = call(Some(
        Dict::new().with("method", "get").with("path", "/items/7"),
    ));
    assert_eq!(d.get_str("body"), Some("saw GET /api/items/7 HTTP/1.1"));
    let seen = seen.join().expect("backend");
    let posted = json(&seen[0].1);
    assert_eq!(posted["args"], serde_json::json!([7]));
    assert_eq!(posted["procedure"], serde_json::Value::Null);
}

/// `POST /queues/{name}/jobs`: 202 once stored, 409 with the original id for
/// a repeated Idempotency-Key, and a JSON refusal (nothing stored) for an
/// unknown queue, a bad body or option, an oversized payload, a missing
/// signature or a wrong method.
#[test]
fn queue_jobs_endpoint_stores_jobs_once_per_idempotency_key() {
    let (_r, port) = start();
    let post = |nonce: &str, queue: &str, headers: &str, body: &str| {
        let idempotency_key = headers
            .strip_prefix("Idempotency-Key: ")
            .map(|h| h.trim_end());
        let path = format!("/queues/{queue}/jobs");
        let q = bound_query(&path, nonce, idempotency_key, body);
        request(
            port,
            "POST",
            &format!("/queues/{queue}/jobs?{q}"),
            &format!("Content-Type: application/json\r\n{headers}"),
            body,
        )
    };
    let job = r#"{"args": [1], "kwargs": {"to": "a@b.c"}}"#;
    let (status, reply) = post("401", "mail", "Idempotency-Key: order-7\r\n", job);
    assert_eq!(status, 202, "{reply}");
    let first = json(&reply);
    assert_eq!(first["duplicate"], false, "{reply}");
    let id = first["id"].as_u64().expect("job id");
    let (status, reply) = post("402", "mail", "Idempotency-Key: order-7\r\n", job);
    assert_eq!(status, 409, "{reply}");
    assert_eq!(
        json(&reply),
        serde_json::json!({"id": id, "duplicate": true, "location": format!("/queues/mail/jobs/{id}")})
    );
    // A new key is a new job.
    let (status, reply) = post("403", "mail", "Idempotency-Key: order-8\r\n", job);
    assert_eq!(status, 202, "{reply}");
    assert_ne!(json(&reply)["id"].as_u64(), Some(id));

    let refusals = [
        (
            "404",
            "nope",
            "",
            job,
            404,
            "switchyard.queue.error.unknown_queue",
        ),
        (
            "405",
            "mail",
            "",
            "[1]",
            400,
            "switchyard.error.invalid_request",
        ),
        (
            "406",
            "mail",
            "",
            r#"{"delay": "soon"}"#,
            400,
            "switchyard.queue.error.invalid_argument",
        ),
        (
            "407",
            "mail",
            "",
            r#"{"args": 5}"#,
            400,
            "switchyard.queue.error.invalid_argument",
        ),
        (
            "408",
            "mail",
            "",
            r#"{"delay": "1s", "run_at": 1}"#,
            400,
            "switchyard.queue.error.invalid_argument",
        ),
        (
            "409",
            "mail",
            "Idempotency-Key: a\r\n",
            r#"{"idempotency_key": "b"}"#,
            400,
            "switchyard.error.invalid_request",
        ),
    ];
    for (nonce, queue, headers, body, want, error) in refusals {
        let (status, reply) = post(nonce, queue, headers, body);
        assert_eq!(
            (status, json(&reply)["error"].as_str()),
            (want, Some(error)),
            "{body}: {reply}"
        );
        assert!(
            json(&reply)["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{reply}"
        );
    }
    let big = format!(r#"{{"args": ["{}"]}}"#, "x".repeat(600));
    let (status, reply) = post("410", "mail", "", &big);
    assert_eq!(
        (status, json(&reply)["error"].as_str()),
        (413, Some("switchyard.queue.error.payload_too_large")),
        "{reply}"
    );
    let (status, reply) = http(port, "POST", "/queues/mail/jobs", job);
    assert_eq!(status, 401, "{reply}");
    let (status, _) = http(port, "GET", "/queues/mail/jobs", "");
    assert_eq!(status, 405);

    // Exactly the two accepted jobs are stored.
    let body = r#"{"procedure": "switchyard.queue.stats", "args": ["mail"]}"#;
    let q = signed_query(KEY, SECRET, &now(), "411", body);
    let (status, reply) = http(port, "POST", &format!("/call?{q}"), body);
    assert_eq!(status, 200, "{reply}");
    // (No worker is registered: the dispatcher gives them back to wait.)
    let stats = &json(&reply)["kwargs"];
    assert_eq!(
        stats["ready"].as_u64().unwrap_or(9)
            + stats["scheduled"].as_u64().unwrap_or(9)
            + stats["in_flight"].as_u64().unwrap_or(9),
        2,
        "{reply}"
    );
}

/// Issue 12 item 5: the Crossbar signature concatenates seq and nonce
/// without a separator, so moving digits between them keeps the signature.
/// Replay protection remembers the signature: the ten digit-shift variants
/// of one signed request publish once. seq and nonce must be decimal
/// integers.
#[test]
fn digit_shifted_seq_and_nonce_are_one_request() {
    let (r, port) = start();
    let mut sub = Raw::connect(r.rs_port, Serializer::Json);
    sub.join("realm1");
    sub.subscribe("com.test.messages");
    let body = r#"{"topic": "com.test.messages", "args": ["shifted"]}"#;
    let ts = now();
    let digits = "12345678901";
    let sig = signature(SECRET, KEY, &ts, &digits[..1], &digits[1..], body);
    let mut accepted = 0;
    for split in 1..digits.len() {
        let (seq, nonce) = digits.split_at(split);
        assert_eq!(sig, signature(SECRET, KEY, &ts, seq, nonce, body));
        let target = format!(
            "/publish?key={KEY}&timestamp={}&seq={seq}&nonce={nonce}&signature={}",
            encode(&ts),
            encode(&sig)
        );
        let (status, reply) = http(port, "POST", &target, body);
        match status {
            200 => accepted += 1,
            401 => assert_eq!(
                json(&reply)["error"],
                "switchyard.error.replayed_request",
                "{reply}"
            ),
            _ => panic!("seq {seq} nonce {nonce}: {status} {reply}"),
        }
    }
    assert_eq!(accepted, 1, "ten variants of one signature, one request");
    // Empty, signed, non-decimal or overlong seq/nonce: refused.
    for (seq, nonce) in [
        ("1", ""),
        ("", "1"),
        ("1", "abc"),
        ("1", "-5"),
        ("1", "+5"),
        ("1", "0x10"),
        ("1", " 5"),
        ("1", "123456789012345678901"),
    ] {
        let sig = signature(SECRET, KEY, &now(), seq, nonce, body);
        let target = format!(
            "/publish?key={KEY}&timestamp={}&seq={}&nonce={}&signature={}",
            encode(&now()),
            encode(seq),
            encode(nonce),
            encode(&sig)
        );
        let (status, reply) = http(port, "POST", &target, body);
        assert_eq!(status, 401, "seq {seq:?} nonce {nonce:?}: {reply}");
        let v = json(&reply);
        assert_eq!(v["error"], "switchyard.error.invalid_signature", "{reply}");
        assert!(
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("decimal integer")),
            "{reply}"
        );
    }
    // A parameter given twice is refused (which one counts is ambiguous).
    let q = signed_query(KEY, SECRET, &now(), "77", body);
    let (status, reply) = http(port, "POST", &format!("/publish?{q}&nonce=78"), body);
    assert_eq!(status, 400, "{reply}");
    // Exactly one event came through.
    let marker = r#"{"topic": "com.test.messages", "args": ["marker"]}"#;
    let q = signed_query(KEY, SECRET, &now(), "99", marker);
    assert_eq!(http(port, "POST", &format!("/publish?{q}"), marker).0, 200);
    for want in ["shifted", "marker"] {
        match sub.expect("EVENT") {
            Message::Event { payload, .. } => {
                assert_eq!(args_of(&payload), vec![Value::from(want)])
            }
            other => panic!("expected EVENT, got {other:?}"),
        }
    }
}

/// Issue 12 item 6: on `/queues/{name}/jobs` the signature binds the
/// method, the path (the queue), the Idempotency-Key header and the body:
/// a signed push cannot be replayed into another queue or under another
/// key, and a Crossbar signature (body only) is not accepted there.
#[test]
fn queue_signatures_bind_the_queue_and_the_idempotency_key() {
    let (_r, port) = start();
    let job = r#"{"args": [1]}"#;
    let send = |path: &str, query: &str, headers: &str| {
        request(
            port,
            "POST",
            &format!("{path}?{query}"),
            &format!("Content-Type: application/json\r\n{headers}"),
            job,
        )
    };
    let mail = "/queues/mail/jobs";
    let signed = bound_query(mail, "501", Some("k-1"), job);
    let refused = |(status, reply): (u16, String), what: &str| {
        assert_eq!(status, 401, "{what}: {reply}");
        assert_eq!(
            json(&reply)["error"],
            "switchyard.error.invalid_signature",
            "{what}: {reply}"
        );
    };
    // Into another queue, with another key, without the key, with an
    // extra query parameter: refused before the correct one is sent.
    refused(
        send("/queues/other/jobs", &signed, "Idempotency-Key: k-1\r\n"),
        "another queue",
    );
    refused(
        send(mail, &signed, "Idempotency-Key: k-2\r\n"),
        "another Idempotency-Key",
    );
    refused(send(mail, &signed, ""), "no Idempotency-Key");
    let (status, reply) = send(mail, &format!("{signed}&x=1"), "Idempotency-Key: k-1\r\n");
    assert_eq!(status, 400, "extra parameter: {reply}");
    // A Crossbar signature over the same body is not enough here.
    refused(
        send(
            "/queues/other/jobs",
            &signed_query(KEY, SECRET, &now(), "502", job),
            "",
        ),
        "Crossbar signature",
    );
    // The request as signed: stored once.
    let (status, reply) = send(mail, &signed, "Idempotency-Key: k-1\r\n");
    assert_eq!(status, 202, "{reply}");
    let (status, reply) = send(mail, &signed, "Idempotency-Key: k-1\r\n");
    assert_eq!(status, 401, "{reply}");
    assert_eq!(json(&reply)["error"], "switchyard.error.replayed_request");
    // Without Idempotency-Key (an empty line in the canonical string).
    let plain = bound_query("/queues/other/jobs", "503", None, job);
    assert_eq!(send("/queues/other/jobs", &plain, "").0, 202);
    // An empty header would sign like an absent one: refused.
    let empty = bound_query(mail, "504", None, job);
    let (status, reply) = send(mail, &empty, "Idempotency-Key: \r\n");
    assert_eq!(status, 400, "{reply}");
    // One job in each queue.
    for (queue, nonce) in [("mail", "505"), ("other", "506")] {
        let body = format!(r#"{{"procedure": "switchyard.queue.stats", "args": ["{queue}"]}}"#);
        let q = signed_query(KEY, SECRET, &now(), nonce, &body);
        let (status, reply) = http(port, "POST", &format!("/call?{q}"), &body);
        assert_eq!(status, 200, "{reply}");
        let stats = &json(&reply)["kwargs"];
        let total: u64 = ["ready", "scheduled", "in_flight"]
            .iter()
            .map(|k| stats[k].as_u64().unwrap_or(9))
            .sum();
        assert_eq!(total, 1, "{queue}: {reply}");
    }
}

/// Replay protection's memory is bounded: with `replay_cache_size = 2`, a
/// third signed request inside the window gets 503 (a signature is never
/// forgotten before its window ends, so none can be replayed).
#[test]
fn a_full_replay_cache_refuses_rather_than_forgets() {
    let port = common::free_port();
    let _r = Router::start(&format!(
        "[[bridge]]\naddress = \"127.0.0.1:{port}\"\nrealm = \"realm1\"\nreplay_cache_size = 2\n\n\
         [[bridge.key]]\nkey = \"{KEY}\"\nsecret = \"{SECRET}\"\nrole = \"backend\"\n"
    ));
    let body = r#"{"topic": "com.test.messages", "args": [1]}"#;
    let send = |nonce: &str| {
        let q = signed_query(KEY, SECRET, &now(), nonce, body);
        http(port, "POST", &format!("/publish?{q}"), body)
    };
    let first = signed_query(KEY, SECRET, &now(), "601", body);
    assert_eq!(
        http(port, "POST", &format!("/publish?{first}"), body).0,
        200
    );
    assert_eq!(send("602").0, 200);
    let (status, reply) = send("603");
    assert_eq!(status, 503, "{reply}");
    let v = json(&reply);
    assert_eq!(v["error"], "switchyard.error.replay_cache_full");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("replay_cache_size = 2")),
        "{reply}"
    );
    // The remembered ones are still refused as replays.
    let (status, reply) = http(port, "POST", &format!("/publish?{first}"), body);
    assert_eq!(status, 401, "{reply}");
    assert_eq!(json(&reply)["error"], "switchyard.error.replayed_request");
}

/// A leaked key floods the replay cache with valid signatures: the other
/// keys of the bridge keep working (each key has its own replay memory).
#[test]
fn a_flooding_key_does_not_lock_out_the_other_keys() {
    let port = common::free_port();
    let _r = Router::start(&format!(
        "[[bridge]]\naddress = \"127.0.0.1:{port}\"\nrealm = \"realm1\"\nreplay_cache_size = 3\n\n\
         [[bridge.key]]\nkey = \"leaked\"\nsecret = \"leaked-secret-0123\"\nrole = \"backend\"\n\n\
         [[bridge.key]]\nkey = \"{KEY}\"\nsecret = \"{SECRET}\"\nrole = \"backend\"\n"
    ));
    let body = r#"{"topic": "com.test.messages", "args": [1]}"#;
    let send = |key: &str, secret: &str, nonce: &str| {
        let q = signed_query(key, secret, &now(), nonce, body);
        http(port, "POST", &format!("/publish?{q}"), body)
    };
    // The attacker fills the leaked key's memory: its own requests are
    // refused once the limit is reached...
    for n in 0..3 {
        assert_eq!(
            send("leaked", "leaked-secret-0123", &format!("70{n}")).0,
            200
        );
    }
    let (status, reply) = send("leaked", "leaked-secret-0123", "799");
    assert_eq!(status, 503, "{reply}");
    assert_eq!(json(&reply)["error"], "switchyard.error.replay_cache_full");
    // ...but every other key still has its own places.
    for n in 0..3 {
        let (status, reply) = send(KEY, SECRET, &format!("80{n}"));
        assert_eq!(status, 200, "another key is locked out: {reply}");
    }
}

/// An unsigned bridge on loopback is reachable by every web page the local
/// user opens: `fetch("http://127.0.0.1:8080/publish", {method: "POST",
/// mode: "no-cors", body})` is a "simple" request (no preflight), and DNS
/// rebinding makes it same-origin. Browsers mark such requests with
/// `Origin` (every POST) and `Sec-Fetch-Site`: unsigned requests carrying
/// them are refused; signed ones and non-browser clients are not affected.
#[test]
fn browsers_cannot_use_an_unsigned_bridge() {
    let port = common::free_port();
    let _r = Router::start(&format!(
        "[[bridge]]\naddress = \"127.0.0.1:{port}\"\nrealm = \"realm1\"\nallow_unsigned = true\n\
         unsigned_role = \"backend\"\n\n\
         [[bridge.key]]\nkey = \"{KEY}\"\nsecret = \"{SECRET}\"\nrole = \"backend\"\n"
    ));
    let body = r#"{"topic": "com.test.messages", "args": [1]}"#;
    for headers in [
        "Origin: http://evil.example\r\nContent-Type: text/plain\r\n",
        "Origin: null\r\nContent-Type: text/plain\r\n",
        // DNS rebinding: the page is same-origin with the bridge; the
        // browser still sends Origin on a POST.
        "Origin: http://rebind.example:80\r\n",
        "Sec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: no-cors\r\n",
        "Sec-Fetch-Site: same-origin\r\n",
    ] {
        for path in ["/publish", "/call", "/queues/work/jobs"] {
            let (status, reply) = request(port, "POST", path, headers, body);
            assert_eq!(status, 403, "{path} with {headers:?}: {reply}");
            assert_eq!(
                json(&reply)["error"],
                "switchyard.error.browser_request",
                "{reply}"
            );
        }
    }
    // curl, scripts, backends: accepted.
    let (status, reply) = request(port, "POST", "/publish", "", body);
    assert_eq!(status, 200, "{reply}");
    let (status, reply) = request(port, "POST", "/publish", "Sec-Fetch-Site: none\r\n", body);
    assert_eq!(
        status, 200,
        "a user-typed navigation is not cross-site: {reply}"
    );
    // A signed request is the key holder's, wherever it comes from.
    let q = signed_query(KEY, SECRET, &now(), "901", body);
    let (status, reply) = request(
        port,
        "POST",
        &format!("/publish?{q}"),
        "Origin: https://app.example\r\n",
        body,
    );
    assert_eq!(status, 200, "{reply}");
}

/// JSON with a key twice in one object means different things to different
/// parsers (first or last wins): a proxy or audit log that reads the first
/// `topic` would see another request than the router, which takes the
/// last. Bridge bodies with duplicate keys, at any depth, are refused.
#[test]
fn duplicate_json_keys_are_refused() {
    let port = common::free_port();
    let _r = Router::start(&format!(
        "[[realm.queue]]\nname = \"work\"\ntarget = \"com.test.work\"\n\n\
         [[bridge]]\naddress = \"127.0.0.1:{port}\"\nrealm = \"realm1\"\nallow_unsigned = true\n\
         unsigned_role = \"backend\"\n"
    ));
    for (path, body) in [
        (
            "/publish",
            r#"{"topic": "com.test.allowed", "topic": "com.test.other"}"#,
        ),
        (
            "/publish",
            r#"{"topic": "com.test.a", "options": {"exclude": [1], "exclude": [2]}}"#,
        ),
        (
            "/call",
            r#"{"procedure": "com.test.a", "procedure": "com.test.b"}"#,
        ),
        (
            "/call",
            r#"{"procedure": "com.test.a", "kwargs": {"x": {"y": 1, "y": 2}}}"#,
        ),
        (
            "/queues/work/jobs",
            r#"{"args": [1], "priority": "low", "priority": "high"}"#,
        ),
        (
            "/queues/work/jobs",
            r#"{"kwargs": {"a": [{"b": 1, "b": 2}]}}"#,
        ),
    ] {
        let (status, reply) = http(port, "POST", path, body);
        assert_eq!(status, 400, "{path} {body}: {reply}");
        let v = json(&reply);
        assert_eq!(v["error"], "switchyard.error.invalid_request", "{reply}");
        assert!(
            v["message"].as_str().is_some_and(|m| m.contains("twice")),
            "{reply}"
        );
    }
    // Equal keys in different objects are fine.
    let (status, reply) = http(
        port,
        "POST",
        "/publish",
        r#"{"topic": "com.test.a", "kwargs": {"x": {"x": 1}, "y": [{"x": 2}, {"x": 3}]}}"#,
    );
    assert_eq!(status, 200, "{reply}");
}

/// A webhook publishes the request's headers to every subscriber of its
/// topic. Credentials among them (GitLab's `X-Gitlab-Token` is the hook's
/// secret; a proxy's `Authorization`; a browser's `Cookie`) must not be
/// handed to subscribers: their values are replaced by "(redacted)".
#[test]
fn webhook_events_do_not_leak_credential_headers() {
    let (r, port) = start();
    let mut sub = Raw::connect(r.rs_port, Serializer::Json);
    sub.join("realm1");
    sub.subscribe("com.test.open");
    let secrets = [
        ("Authorization", "Basic dXNlcjpwYXNz"),
        ("Proxy-Authorization", "Basic cHJveHk="),
        ("Cookie", "session=s3cr3t"),
        ("X-Gitlab-Token", "gitlab-hook-secret"),
        ("X-Api-Key", "k-123"),
        ("X-Auth-Token", "t-456"),
        ("X-Webhook-Secret", "w-789"),
        ("X-Hook-Password", "p-000"),
    ];
    let headers: String = secrets
        .iter()
        .map(|(n, v)| format!("{n}: {v}\r\nX-Gitlab-Event: Push Hook\r\n"))
        .take(1)
        .chain(secrets.iter().skip(1).map(|(n, v)| format!("{n}: {v}\r\n")))
        .collect();
    let (status, reply) = http_with(port, "/hooks/open", &headers, "{}");
    assert_eq!(status, 202, "{reply}");
    let Message::Event { payload, .. } = sub.expect("EVENT") else {
        panic!("expected EVENT")
    };
    let args = args_of(&payload);
    let Some(Value::Dict(d)) = args.first() else {
        panic!("expected [{{headers, body}}], got {args:?}")
    };
    let got = d.get("headers").and_then(Value::as_dict).expect("headers");
    for (name, secret) in secrets {
        assert_eq!(
            got.get_str(&name.to_ascii_lowercase()),
            Some("(redacted)"),
            "{name} reached subscribers: {got:?}"
        );
        assert!(!format!("{got:?}").contains(secret), "{got:?}");
    }
    assert_eq!(got.get_str("x-gitlab-event"), Some("Push Hook"));
}

/// Crossbar's string does not bind the path (kept for compatibility): a
/// `/publish` signature sent to `/call` (or the other way) must still do
/// nothing. The body names the action (`topic` or `procedure`, and `topic`
/// wins when both are given, which `/call` refuses), and the signature is
/// remembered per key across the bridge's endpoints.
#[test]
fn a_publish_signature_cannot_call() {
    let (r, port) = start();
    let mut callee = Raw::connect(r.rs_port, Serializer::Json);
    callee.join("realm1");
    callee.register("com.test.echo");
    for body in [
        r#"{"topic": "com.test.echo", "args": [1]}"#,
        r#"{"topic": "com.test.x", "procedure": "com.test.echo"}"#,
    ] {
        // Diverted to /call before the original arrives: refused.
        let q = signed_query(KEY, SECRET, &now(), "1001", body);
        let (status, reply) = http(port, "POST", &format!("/call?{q}"), body);
        assert_eq!(status, 400, "{reply}");
        // Replayed to /call after /publish accepted it: refused.
        let q = signed_query(KEY, SECRET, &now(), "1002", body);
        assert_eq!(http(port, "POST", &format!("/publish?{q}"), body).0, 200);
        let (status, reply) = http(port, "POST", &format!("/call?{q}"), body);
        assert_eq!(status, 401, "{reply}");
        assert_eq!(json(&reply)["error"], "switchyard.error.replayed_request");
    }
    // The procedure was never invoked (recv gives up after its 5 s read
    // timeout).
    let got = callee.recv();
    assert!(got.is_none(), "the callee was invoked: {got:?}");
}

/// `allow_unsigned` on an address that is not loopback lets every host
/// that reaches it act as `unsigned_role`: the config is refused unless
/// `allow_unsigned_from_network` says so.
#[test]
fn unsigned_bridges_on_the_network_need_an_explicit_opt_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let check = |extra: &str| {
        let path = dir.path().join("switchyard.toml");
        std::fs::write(
            &path,
            format!(
                "[[realm]]\nname = \"realm1\"\n\n[[bridge]]\naddress = \"0.0.0.0:18999\"\n\
                 realm = \"realm1\"\nallow_unsigned = true\n{extra}"
            ),
        )
        .expect("write");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("check-config")
            .arg(&path)
            .output()
            .expect("run");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, text) = check("");
    assert!(!ok, "accepted: {text}");
    assert!(text.contains("allow_unsigned_from_network"), "{text}");
    let (ok, text) = check("allow_unsigned_from_network = true\n");
    assert!(ok, "{text}");
}
