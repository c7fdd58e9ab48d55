//! Issue 12 items 15 and 27: what clients send cannot forge log lines
//! (control characters are escaped by the log writer), values are clipped,
//! lines are capped, and repeated lines are rate-limited per call site.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{Raw, Router};
use switchyard_proto::{Dict, Message, Payload, Serializer, Value};

/// A forged line, as an attacker would embed it.
const FORGED: &str = "2026-01-01T00:00:00.000000Z  WARN switchyard::forged: FORGED LINE";

/// Whether every line of `log` starts with the router's own prefix
/// (`<RFC 3339 timestamp>  <LEVEL> `); the offending lines otherwise.
fn foreign_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            let mut parts = l.splitn(2, ' ');
            let ts = parts.next().unwrap_or("");
            let rest = parts.next().unwrap_or("").trim_start();
            let ts_ok = ts.len() >= 20
                && ts.as_bytes()[4] == b'-'
                && ts.as_bytes()[10] == b'T'
                && ts.ends_with('Z')
                && ts[..4].bytes().all(|b| b.is_ascii_digit());
            let level_ok = ["TRACE ", "DEBUG ", "INFO ", "WARN ", "ERROR "]
                .iter()
                .any(|lv| rest.starts_with(lv));
            !(ts_ok && level_ok)
        })
        .collect()
}

fn http(port: u16, target: &str, body: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        s,
        "POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).ok();
    out
}

fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Newlines and carriage returns through a bridge key, a realm name, a
/// protocol violation and a worker's error message: no forged line.
#[test]
fn client_values_cannot_forge_log_lines() {
    let port = common::free_port();
    let mut r = Router::start(&format!(
        "[[realm.queue]]\nname = \"work\"\ntarget = \"com.test.work\"\n\n\
         [[bridge]]\naddress = \"127.0.0.1:{port}\"\nrealm = \"realm1\"\n\n\
         [[bridge.key]]\nkey = \"good\"\nsecret = \"0123456789abcdef\"\nrole = \"backend\"\n"
    ));
    let evil = format!("x\n{FORGED} (newline)\r\n{FORGED} (crlf)\r{FORGED} (cr)");
    // 1. The bridge: an unknown key is logged with the refusal.
    let reply = http(
        port,
        &format!(
            "/publish?key={}&timestamp=2026-01-01T00%3A00%3A00.000Z&seq=1&nonce=1&signature=x",
            pct(&evil)
        ),
        "{}",
    );
    assert!(reply.contains("unknown_key"), "{reply}");
    // 2. A realm name in HELLO.
    let mut c = Raw::connect(r.rs_port, Serializer::Json);
    c.send(&common::hello(&format!("realm{evil}")));
    assert!(matches!(c.expect("ABORT"), Message::Abort { .. }));
    // 3. A protocol violation (ERROR for a request type a client may not
    // answer, then a malformed frame).
    let mut c = Raw::connect(r.rs_port, Serializer::Json);
    c.join("realm1");
    c.send_frame(format!("[8, 48, 1, {{}}, {:?}]", evil).as_bytes());
    let mut c = Raw::connect(r.rs_port, Serializer::Json);
    c.send_frame(format!("[\"{}\"]", evil.replace('\n', "\\n").replace('\r', "\\r")).as_bytes());
    // 4. A worker's error message, logged when the job is dead-lettered.
    let mut worker = Raw::connect(r.rs_port, Serializer::Json);
    worker.join("realm1");
    worker.register("com.test.work");
    let mut producer = Raw::connect(r.rs_port, Serializer::Json);
    producer.join("realm1");
    let req = producer.req();
    producer.send(&Message::Call {
        request: req,
        options: Dict::new(),
        procedure: "switchyard.queue.push".into(),
        payload: Payload::values(
            vec![Value::from("work")],
            Some(Dict::new().with("max_attempts", 1u64)),
        ),
    });
    assert!(matches!(producer.expect("RESULT"), Message::Result { .. }));
    let invocation = match worker.expect("INVOCATION") {
        Message::Invocation { request, .. } => request,
        other => panic!("expected INVOCATION, got {other:?}"),
    };
    worker.send(&Message::Error {
        request_type: switchyard_proto::message::code::INVOCATION,
        request: invocation,
        details: Dict::new(),
        error: "com.test.failed".into(),
        payload: Payload::values(
            vec![Value::from(evil.as_str())],
            Some(Dict::new().with("message", evil.as_str())),
        ),
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !r.log_text().contains("dead-lettered") {
        assert!(std::time::Instant::now() < deadline, "{}", r.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    r.terminate();
    let log = r.log_text();
    let foreign = foreign_lines(&log);
    assert!(
        foreign.is_empty(),
        "lines that do not start with the router's prefix: {foreign:#?}"
    );
    assert!(!log
        .lines()
        .any(|l| l.contains("WARN switchyard::forged") && l.starts_with("2026-01-01")));
    // The values are there, escaped.
    assert!(
        log.contains("\\n2026-01-01T00:00:00.000000Z  WARN switchyard::forged"),
        "{log}"
    );
}
