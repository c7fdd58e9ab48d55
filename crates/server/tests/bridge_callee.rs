//! Issue 12 item 20: an HTTP callee's request is what the operator
//! configured, whatever the caller sends: the path stays under the base
//! URL (no dot segments in any encoding, no URL or authority), the method
//! is from `methods`, and framing, routing and credential headers cannot
//! be set. A real HTTP server records what reaches it; the calls are real
//! WAMP calls over RawSocket.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{args_of, Raw, Router};
use switchyard_proto::{Dict, Message, Payload, Serializer, Value};

/// A request as the backend saw it: the request line and the headers
/// (names in lower case).
#[derive(Debug, Clone)]
struct Seen {
    line: String,
    headers: Vec<(String, String)>,
}

struct Backend {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// An HTTP/1.1 server on loopback that records every request head and
/// answers 200 "ok".
fn backend() -> Backend {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.set_nonblocking(true).expect("nonblocking");
    let port = l.local_addr().expect("addr").port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let (s, st) = (seen.clone(), stop.clone());
    std::thread::spawn(move || {
        while !st.load(Ordering::Relaxed) {
            let Ok((mut c, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            c.set_nonblocking(false).ok();
            c.set_read_timeout(Some(Duration::from_secs(5))).ok();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let text = String::from_utf8_lossy(&buf).to_string();
            let head = text.split("\r\n\r\n").next().unwrap_or("");
            let mut lines = head.split("\r\n");
            let line = lines.next().unwrap_or("").to_string();
            let headers = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            s.lock().expect("lock").push(Seen { line, headers });
            c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                .ok();
        }
    });
    Backend { port, seen, stop }
}

/// Calls `procedure` with `kwargs`: Ok(the result dict) or Err((error,
/// message)).
fn call(c: &mut Raw, procedure: &str, kwargs: Dict) -> Result<Dict, (String, String)> {
    let req = c.req();
    c.send(&Message::Call {
        request: req,
        options: Dict::new(),
        procedure: procedure.into(),
        payload: Payload::values(vec![], Some(kwargs)),
    });
    match c.expect("RESULT or ERROR") {
        Message::Result { payload, .. } => match args_of(&payload).first() {
            Some(Value::Dict(d)) => Ok(d.clone()),
            other => panic!("expected [{{status, headers, body}}], got {other:?}"),
        },
        Message::Error { error, payload, .. } => {
            let message = args_of(&payload)
                .first()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            Err((error, message))
        }
        other => panic!("expected RESULT or ERROR, got {other:?}"),
    }
}

#[test]
fn http_callee_requests_stay_confined() {
    let b = backend();
    let port = common::free_port();
    let r = Router::start(&format!(
        "[[bridge]]\naddress = \"127.0.0.1:{port}\"\nrealm = \"realm1\"\nallow_unsigned = true\n\n\
         [[bridge.callee]]\nprocedure = \"com.test.api\"\nurl = \"http://127.0.0.1:{bp}/api\"\n\n\
         [[bridge.callee]]\nprocedure = \"com.test.admin\"\nurl = \"http://127.0.0.1:{bp}/api\"\n\
         methods = [\"GET\", \"DELETE\"]\nallow_headers = [\"Authorization\"]\n",
        bp = b.port
    ));
    let mut c = Raw::connect(r.rs_port, Serializer::MsgPack);
    c.join("realm1");
    let get = |path: &str| Dict::new().with("method", "GET").with("path", path);

    let escaping_paths = [
        "/../../admin/keys",
        "../admin/keys",
        "/items/../../admin/keys",
        "/./admin",
        "/%2e%2e/%2e%2e/admin/keys",
        "/%2E%2E/admin",
        "/.%2e/admin",
        "/%2e./admin",
        "/..%2fadmin",
        "/items%2F..%2F..%2Fadmin",
        "/%252e%252e/admin",
        "/%c0%ae%c0%ae/admin",
        "/..\\..\\admin",
        "/..%5cadmin",
        "//evil.example/admin",
        "http://evil.example/admin",
        "/..;/admin",
        "/items//admin",
        "/items\r\nHost: evil.example",
        "/items%0d%0aHost:%20evil",
        "/items#frag",
        "/ｉｔｅｍｓ",
    ];
    for path in escaping_paths {
        let got = call(&mut c, "com.test.api", get(path));
        match got {
            Err((error, message)) => {
                assert_eq!(error, "wamp.error.invalid_argument", "{path}: {message}");
                assert!(message.contains("refused"), "{path}: {message}");
            }
            Ok(d) => panic!("path {path:?} reached the backend: {d:?}"),
        }
    }
    for (procedure, method) in [
        ("com.test.api", "DELETE"),
        ("com.test.api", "PUT"),
        ("com.test.api", "TRACE"),
        ("com.test.api", "CONNECT"),
        ("com.test.admin", "POST"),
    ] {
        let got = call(
            &mut c,
            procedure,
            Dict::new().with("method", method).with("path", "/x"),
        );
        let Err((error, message)) = got else {
            panic!("{method} on {procedure} was forwarded")
        };
        assert_eq!(error, "wamp.error.invalid_argument", "{message}");
        assert!(message.contains("not allowed"), "{message}");
    }
    for (name, value) in [
        ("Host", "evil.example"),
        ("host", "evil.example"),
        ("Content-Length", "0"),
        ("Transfer-Encoding", "chunked"),
        ("Connection", "close"),
        ("Upgrade", "websocket"),
        ("Authorization", "Bearer stolen"),
        ("Cookie", "session=1"),
        ("X-Forwarded-For", "10.0.0.1"),
        ("X-Custom", "a\r\nHost: evil.example"),
    ] {
        let got = call(
            &mut c,
            "com.test.api",
            get("/x").with("headers", Dict::new().with(name, value)),
        );
        let Err((error, message)) = got else {
            panic!("header {name} was forwarded")
        };
        assert_eq!(error, "wamp.error.invalid_argument", "{name}: {message}");
    }
    assert!(
        b.seen.lock().expect("lock").is_empty(),
        "refused calls reached the backend: {:?}",
        b.seen.lock().expect("lock")
    );

    // What is allowed reaches the backend as configured.
    let ok = call(
        &mut c,
        "com.test.api",
        get("/items/7?x=1&next=%2Fhome").with("headers", Dict::new().with("X-Custom", "yes")),
    )
    .expect("allowed call");
    assert_eq!(ok.get("status").and_then(Value::as_u64), Some(200));
    let ok = call(
        &mut c,
        "com.test.admin",
        Dict::new()
            .with("method", "delete")
            .with("path", "/items/7")
            .with(
                "headers",
                Dict::new().with("Authorization", "Bearer configured"),
            ),
    )
    .expect("allowed call");
    assert_eq!(ok.get("status").and_then(Value::as_u64), Some(200));
    let seen = b.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    let host = format!("127.0.0.1:{}", b.port);
    let header = |s: &Seen, n: &str| {
        s.headers
            .iter()
            .filter(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(seen[0].line, "GET /api/items/7?x=1&next=%2Fhome HTTP/1.1");
    assert_eq!(header(&seen[0], "host"), vec![host.clone()]);
    assert_eq!(header(&seen[0], "x-custom"), vec!["yes".to_string()]);
    assert!(header(&seen[0], "authorization").is_empty());
    assert_eq!(seen[1].line, "DELETE /api/items/7 HTTP/1.1");
    assert_eq!(header(&seen[1], "host"), vec![host]);
    assert_eq!(
        header(&seen[1], "authorization"),
        vec!["Bearer configured".to_string()]
    );
}

/// Headers that backends and their frameworks read as the method
/// (`X-HTTP-Method-Override`: Express, Rails, ASP.NET, ...), the path
/// (`X-Original-URL`, `X-Rewrite-URL`: IIS, Symfony), the host or the
/// client's address (the `X-Forwarded-*` family, `True-Client-IP`, ...) would
/// undo the confinement of the method and the path or let a caller pose as
/// another client: refused unless `allow_headers` lists them.
#[test]
fn override_headers_cannot_change_method_path_or_client() {
    let b = backend();
    let port = common::free_port();
    let r = Router::start(&format!(
        "[[bridge]]\naddress = \"127.0.0.1:{port}\"\nrealm = \"realm1\"\nallow_unsigned = true\n\n\
         [[bridge.callee]]\nprocedure = \"com.test.api\"\nurl = \"http://127.0.0.1:{bp}/api\"\n\n\
         [[bridge.callee]]\nprocedure = \"com.test.proxy\"\nurl = \"http://127.0.0.1:{bp}/api\"\n\
         allow_headers = [\"X-Forwarded-Port\"]\n",
        bp = b.port
    ));
    let mut c = Raw::connect(r.rs_port, Serializer::Json);
    c.join("realm1");
    let post = |name: &str, value: &str| {
        Dict::new()
            .with("method", "POST")
            .with("path", "/items")
            .with("headers", Dict::new().with(name, value))
    };
    for (name, value) in [
        ("X-HTTP-Method-Override", "DELETE"),
        ("x-http-method", "DELETE"),
        ("X-Method-Override", "PUT"),
        ("X-Original-URL", "/admin/keys"),
        ("X-Rewrite-URL", "/admin/keys"),
        ("X-Original-Host", "evil.example"),
        ("X-Host", "evil.example"),
        ("X-Forwarded-Port", "443"),
        ("X-Forwarded-Server", "evil.example"),
        ("X-Forwarded-Scheme", "https"),
        ("X-Forwarded-Ssl", "on"),
        ("True-Client-IP", "10.0.0.1"),
        ("X-Client-IP", "10.0.0.1"),
        ("X-Cluster-Client-IP", "10.0.0.1"),
        ("CF-Connecting-IP", "10.0.0.1"),
        ("Client-IP", "10.0.0.1"),
    ] {
        let got = call(&mut c, "com.test.api", post(name, value));
        let Err((error, message)) = got else {
            panic!("header {name}: {value} was forwarded")
        };
        assert_eq!(error, "wamp.error.invalid_argument", "{name}: {message}");
        assert!(message.contains("allow_headers"), "{name}: {message}");
    }
    assert!(
        b.seen.lock().expect("lock").is_empty(),
        "refused calls reached the backend: {:?}",
        b.seen.lock().expect("lock")
    );
    // Listed by the operator: forwarded.
    let ok = call(&mut c, "com.test.proxy", post("X-Forwarded-Port", "443")).expect("listed");
    assert_eq!(ok.get("status").and_then(Value::as_u64), Some(200));
    assert_eq!(b.seen.lock().expect("lock").len(), 1);
}

/// A caller picks the path, so it can pick an endpoint that answers its
/// head at once and then trickles (or never ends) its body: a long poll,
/// server-sent events, a slow download. The callee's `timeout` bounds the
/// whole exchange, body included, not only the response head.
#[test]
fn a_trickling_response_body_is_bounded_by_the_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let bp = listener.local_addr().expect("addr").port();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let backend = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf);
        let _ = s.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 100000\r\n\r\n",
        );
        // One byte every 100 ms, for at most 15 s.
        for _ in 0..150 {
            if stop2.load(std::sync::atomic::Ordering::Relaxed) || s.write_all(b"x").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let port = common::free_port();
    let r = Router::start(&format!(
        "[[bridge]]\naddress = \"127.0.0.1:{port}\"\nrealm = \"realm1\"\nallow_unsigned = true\n\n\
         [[bridge.callee]]\nprocedure = \"com.test.api\"\nurl = \"http://127.0.0.1:{bp}/api\"\n\
         timeout = \"1s\"\n"
    ));
    let mut c = Raw::connect(r.rs_port, Serializer::Json);
    c.join("realm1");
    let t0 = std::time::Instant::now();
    let got = call(
        &mut c,
        "com.test.api",
        Dict::new().with("method", "GET").with("path", "/events"),
    );
    let took = t0.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    eprintln!("trickling body: answered after {took:?}: {got:?}");
    let Err((error, message)) = got else {
        panic!("a trickling body was awaited to its end")
    };
    assert_eq!(error, "wamp.error.timeout", "{message}");
    assert!(took < Duration::from_secs(4), "took {took:?}");
    drop(c);
    drop(r);
    let _ = backend.join();
}

/// Requests to an HTTP callee with `key`/`secret` carry the router's
/// signature (the query parameters of its other outgoing requests), and
/// the caller's identity in `X-Switchyard-Caller-*` headers only when the
/// realm's disclosure rules disclose it to a callee (here `on_request`: the
/// caller asked with `disclose_me`). A caller can set neither those headers
/// nor the signature's query parameters.
#[test]
fn http_callee_requests_are_signed_and_carry_the_disclosed_caller() {
    let b = backend();
    let port = common::free_port();
    let r = Router::start(&format!(
        "[[bridge]]\naddress = \"127.0.0.1:{port}\"\nrealm = \"realm1\"\nallow_unsigned = true\n\n\
         [[bridge.callee]]\nprocedure = \"com.test.api\"\nurl = \"http://127.0.0.1:{bp}/api\"\n\
         key = \"router\"\nsecret = \"callee-secret-0123456789\"\n",
        bp = b.port
    ));
    let mut c = Raw::connect(r.rs_port, Serializer::Json);
    let (session, details) = c.join("realm1");
    let authid = details.get_str("authid").expect("authid").to_string();
    let call_with = |c: &mut Raw, options: Dict, kwargs: Dict| {
        let request = c.req();
        c.send(&Message::Call {
            request,
            options,
            procedure: "com.test.api".into(),
            payload: Payload::values(vec![], Some(kwargs)),
        });
        c.expect("RESULT or ERROR")
    };
    let header = |s: &Seen, name: &str| {
        s.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    // Disclosed (the caller asked): the three headers and the signature.
    let m = call_with(
        &mut c,
        Dict::new().with("disclose_me", true),
        Dict::new().with("path", "/items?x=1"),
    );
    assert!(matches!(m, Message::Result { .. }), "{m:?}");
    let seen = b
        .seen
        .lock()
        .expect("seen")
        .last()
        .cloned()
        .expect("a request");
    assert!(
        seen.line
            .starts_with("POST /api/items?x=1&key=router&timestamp="),
        "{}",
        seen.line
    );
    for p in ["&seq=", "&nonce=", "&signature="] {
        assert!(seen.line.contains(p), "{}", seen.line);
    }
    assert_eq!(
        header(&seen, "x-switchyard-caller-authid").as_deref(),
        Some(authid.as_str())
    );
    assert_eq!(
        header(&seen, "x-switchyard-caller-authrole").as_deref(),
        Some("anonymous")
    );
    assert_eq!(
        header(&seen, "x-switchyard-caller-session"),
        Some(session.to_string())
    );
    // Not disclosed: no identity headers.
    let m = call_with(&mut c, Dict::new(), Dict::new());
    assert!(matches!(m, Message::Result { .. }), "{m:?}");
    let seen = b
        .seen
        .lock()
        .expect("seen")
        .last()
        .cloned()
        .expect("a request");
    assert!(
        seen.headers
            .iter()
            .all(|(n, _)| !n.starts_with("x-switchyard-")),
        "{seen:?}"
    );
    // A caller cannot forge them, nor the signature's parameters.
    let before = b.seen.lock().expect("seen").len();
    let forged = Dict::new().with(
        "headers",
        Dict::new().with("X-Switchyard-Caller-Authid", "admin"),
    );
    let m = call_with(&mut c, Dict::new(), forged);
    assert!(matches!(m, Message::Error { .. }), "{m:?}");
    let m = call_with(
        &mut c,
        Dict::new(),
        Dict::new().with("path", "/items?signature=x"),
    );
    assert!(matches!(m, Message::Error { .. }), "{m:?}");
    assert_eq!(b.seen.lock().expect("seen").len(), before);
}
