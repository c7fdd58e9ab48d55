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

/// A 900 KiB realm name and authid are logged clipped, not whole.
#[test]
fn huge_client_values_are_clipped_in_logs() {
    // The handshake limits (max_handshake_message_size and friends) refuse
    // such a HELLO before its values are read; raised here so that the
    // values reach the log lines that name them.
    let r = Router::start(
        "[limits]\nmax_message_size = 4194304\nmax_handshake_message_size = 4194304\n\
         max_authid_length = 2000000\nmax_uri_length = 2000000\n",
    );
    let huge = "r".repeat(900 * 1024);
    let mut c = Raw::connect(r.rs_port, Serializer::MsgPack);
    c.send(&common::hello(&huge));
    assert!(matches!(c.expect("ABORT"), Message::Abort { .. }));
    let mut c = Raw::connect(r.rs_port, Serializer::MsgPack);
    let Message::Hello { details, .. } = common::hello("nowhere") else {
        unreachable!()
    };
    c.send(&Message::Hello {
        realm: huge.clone(),
        details: details.with("authid", huge.as_str()),
    });
    assert!(matches!(c.expect("ABORT"), Message::Abort { .. }));
    std::thread::sleep(Duration::from_millis(200));
    let log = r.log_text();
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    eprintln!("log: {} bytes, longest line {longest} bytes", log.len());
    assert!(log.contains("...(921600 bytes)"), "{log}");
    assert!(longest < 2048, "a log line of {longest} bytes");
    assert!(log.len() < 64 * 1024, "log of {} bytes", log.len());
}

/// 20 subscribers announcing a 512-byte RawSocket maximum and 100 events
/// too large for them: one line per event at most (not one per
/// subscriber), at most `max_lines_per_callsite` per interval, and a
/// "suppressed" summary.
#[test]
fn repeated_warnings_are_rate_limited() {
    let r = Router::start("[log]\nmax_lines_per_callsite = 10\nrate_interval = \"1s\"\n");
    let mut subs = Vec::new();
    for _ in 0..20 {
        let mut s = Raw::connect_handshake(r.rs_port, [0x7F, 0x02, 0, 0]);
        let reply = s.read_exact(4).expect("handshake reply");
        assert_eq!(reply[1] & 0x0F, 0x02, "{reply:?}");
        s.ser = Serializer::MsgPack;
        s.join("realm1");
        s.subscribe("com.test.big");
        subs.push(s);
    }
    let mut p = Raw::connect(r.rs_port, Serializer::MsgPack);
    p.join("realm1");
    for _ in 0..100 {
        let req = p.req();
        p.send(&Message::Publish {
            request: req,
            options: Dict::new().with("acknowledge", true),
            topic: "com.test.big".into(),
            payload: Payload::values(vec![Value::from("x".repeat(1024))], None),
        });
        assert!(matches!(p.expect("PUBLISHED"), Message::Published { .. }));
    }
    std::thread::sleep(Duration::from_millis(2500));
    let log = r.log_text();
    let warned = log.lines().filter(|l| l.contains("not delivered")).count();
    let summary: Vec<&str> = log.lines().filter(|l| l.contains("suppressed")).collect();
    eprintln!("100 events x 20 small subscribers: {warned} WARN lines, summaries: {summary:#?}");
    assert!(warned <= 10, "{warned} lines");
    assert!(
        summary
            .iter()
            .any(|l| l.contains("suppressed 90 similar WARN messages")),
        "{summary:#?}"
    );
}

/// With `format = "json"`, every line stays one valid JSON object whatever
/// a client sends (newlines, carriage returns, DEL, C1 controls, U+2028).
#[test]
fn json_log_lines_stay_valid_json() {
    let port = common::free_port();
    let mut r = Router::start(&format!(
        "[log]\nformat = \"json\"\n\n\
         [[bridge]]\naddress = \"127.0.0.1:{port}\"\nrealm = \"realm1\"\n\n\
         [[bridge.key]]\nkey = \"good\"\nsecret = \"0123456789abcdef\"\nrole = \"backend\"\n"
    ));
    let evil = format!("x\n{FORGED}\r\u{7f}\u{85}\u{2028}{{\"level\":\"WARN\"}}\n");
    let reply = http(
        port,
        &format!(
            "/publish?key={}&timestamp=2026-01-01T00%3A00%3A00.000Z&seq=1&nonce=1&signature=x",
            pct(&evil)
        ),
        "{}",
    );
    assert!(reply.contains("unknown_key"), "{reply}");
    let mut c = Raw::connect(r.rs_port, Serializer::Json);
    c.send(&common::hello(&evil));
    assert!(matches!(c.expect("ABORT"), Message::Abort { .. }));
    r.terminate();
    let log = r.log_text();
    let mut lines = 0;
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line:?}"));
        assert!(v["level"].is_string(), "{line}");
        lines += 1;
    }
    assert!(log.contains("unknown signing key"), "{log}");
    assert!(lines >= 3, "{log}");
}

/// Invisible and bidirectional formatting characters (the Trojan Source
/// class: U+202E right-to-left override, U+2066..2069 isolates, zero-width
/// spaces and joiners, U+FEFF) make a log line display other than it reads
/// to a program: they are escaped like control characters.
#[test]
fn bidi_and_invisible_characters_are_escaped() {
    let port = common::free_port();
    let mut r = Router::start(&format!(
        "[[bridge]]\naddress = \"127.0.0.1:{port}\"\nrealm = \"realm1\"\n\n\
         [[bridge.key]]\nkey = \"good\"\nsecret = \"0123456789abcdef\"\nrole = \"backend\"\n"
    ));
    let sneaky = [
        '\u{202e}', '\u{202a}', '\u{2066}', '\u{2069}', '\u{200b}', '\u{200d}', '\u{200e}',
        '\u{061c}', '\u{feff}', '\u{2060}',
    ];
    let evil: String = sneaky.iter().map(|c| format!("k{c}")).collect();
    let reply = http(
        port,
        &format!(
            "/publish?key={}&timestamp=2026-01-01T00%3A00%3A00.000Z&seq=1&nonce=1&signature=x",
            pct(&evil)
        ),
        "{}",
    );
    assert!(reply.contains("unknown_key"), "{reply}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !r.log_text().contains("unknown signing key") {
        assert!(std::time::Instant::now() < deadline, "{}", r.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    r.terminate();
    let log = r.log_text();
    for c in sneaky {
        assert!(
            !log.contains(c),
            "U+{:04X} reached the log raw: {log}",
            c as u32
        );
        assert!(
            log.contains(&format!("\\u{{{:x}}}", c as u32)),
            "U+{:04X} is not shown escaped: {log}",
            c as u32
        );
    }
}
