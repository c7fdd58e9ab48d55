//! Session establishment and protocol violations, over real RawSocket
//! connections to the real binary.

mod common;

use common::*;
use switchyard_proto::{errors, Dict, Message, Serializer, Value};

#[test]
fn welcome_announces_roles_and_identity() {
    let r = Router::start("");
    for ser in Serializer::ALL {
        let mut c = Raw::connect(r.rs_port, ser);
        let (session, details) = c.join("realm1");
        assert!((1..=1u64 << 53).contains(&session));
        assert_eq!(details.get_str("realm"), Some("realm1"));
        assert_eq!(details.get_str("authrole"), Some("anonymous"));
        assert_eq!(details.get_str("authmethod"), Some("anonymous"));
        assert!(details
            .get_str("agent")
            .unwrap_or("")
            .starts_with("switchyard"));
        let roles = details
            .get("roles")
            .and_then(Value::as_dict)
            .expect("roles");
        let broker = roles
            .get("broker")
            .and_then(Value::as_dict)
            .expect("broker");
        let features = broker
            .get("features")
            .and_then(Value::as_dict)
            .expect("features");
        assert_eq!(features.get_bool("publisher_exclusion"), Some(true));
        assert!(roles.get("dealer").is_some());
    }
}

#[test]
fn unknown_realm_is_aborted() {
    let r = Router::start("");
    let mut c = Raw::connect(r.rs_port, Serializer::Json);
    c.send(&hello("no.such.realm"));
    let (reason, message) = abort_of(c.expect("ABORT"));
    assert_eq!(reason, errors::NO_SUCH_REALM);
    assert!(message.contains("no.such.realm"), "{message}");
    assert!(c.closed());
}

fn violation(r: &Router, join_first: bool, frame: &[u8]) -> String {
    let mut c = Raw::connect(r.rs_port, Serializer::Json);
    if join_first {
        c.join("realm1");
    }
    c.send_frame(frame);
    let (reason, message) = abort_of(c.expect("ABORT"));
    assert_eq!(reason, errors::PROTOCOL_VIOLATION, "{message}");
    assert!(
        c.closed(),
        "connection must close after a protocol violation"
    );
    message
}

#[test]
fn protocol_violations_abort_with_a_reason_and_spare_others() {
    let r = Router::start("");
    // A healthy session that must keep working throughout.
    let mut healthy = Raw::connect(r.rs_port, Serializer::MsgPack);
    healthy.join("realm1");

    let m = violation(&r, false, br#"[32,1,{},"com.example.topic"]"#);
    assert!(m.contains("before HELLO"), "{m}");
    let m = violation(&r, true, br#"[999,1]"#);
    assert!(m.contains("unknown message type 999"), "{m}");
    let m = violation(&r, true, br#"[32,"x"]"#);
    assert!(m.contains("SUBSCRIBE"), "{m}");
    let m = violation(&r, true, b"{not json");
    assert!(m.contains("JSON"), "{m}");
    let m = violation(&r, true, br#"[1,"realm1",{"roles":{"caller":{}}}]"#);
    assert!(m.contains("HELLO"), "{m}");
    let m = violation(&r, true, br#"[16,1,{"acknowledge":"yes"},"com.x"]"#);
    assert!(m.contains("acknowledge"), "{m}");
    let m = violation(&r, true, br#"[36,1,2,{}]"#);
    assert!(m.contains("EVENT"), "{m}");
    let m = violation(&r, true, br#"[70,77,{}]"#);
    assert!(m.contains("never sent"), "{m}");

    // The healthy session still works.
    let sub = healthy.subscribe("com.example.still.alive");
    assert!(sub > 0);
}

#[test]
fn option_type_errors_name_the_option_the_element_and_its_type() {
    let r = Router::start("");
    let m = violation(&r, true, br#"[16,1,{"exclude":[7,1.5]},"com.x"]"#);
    assert_eq!(
        m,
        "malformed message: PUBLISH.Options.exclude must be a list of session ids, but element 1 is float 1.5"
    );
    let m = violation(&r, true, br#"[16,1,{"eligible_authrole":["a",3]},"com.x"]"#);
    assert_eq!(
        m,
        "malformed message: PUBLISH.Options.eligible_authrole must be a list of strings, but element 1 is integer 3"
    );
    let m = violation(&r, true, br#"[48,1,{"timeout":-5},"com.x"]"#);
    assert_eq!(
        m,
        "malformed message: CALL.Options.timeout must be a non-negative integer, got integer -5"
    );
    let long = "y".repeat(5000);
    let frame = format!(r#"[48,1,{{"disclose_me":"{long}"}},"com.x"]"#);
    let m = violation(&r, true, frame.as_bytes());
    assert!(
        m.starts_with(
            "malformed message: CALL.Options.disclose_me must be a bool, got string \"yyyy"
        ) && m.ends_with("...\" (5000 bytes)")
            && m.len() < 200,
        "{m}"
    );
}

#[test]
fn goodbye_is_answered_and_transport_can_be_reused() {
    let r = Router::start("");
    let mut c = Raw::connect(r.rs_port, Serializer::Cbor);
    c.join("realm1");
    c.register("com.example.proc");
    c.send(&Message::Goodbye {
        details: Dict::new(),
        reason: errors::CLOSE_REALM.into(),
    });
    match c.expect("GOODBYE") {
        Message::Goodbye { reason, .. } => assert_eq!(reason, errors::CLOSE_GOODBYE_AND_OUT),
        other => panic!("expected GOODBYE, got {other:?}"),
    }
    // The registration left with the session: another session may take it.
    let mut other = Raw::connect(r.rs_port, Serializer::Json);
    other.join("realm1");
    other.register("com.example.proc");
    // The same transport can start a new session.
    c.join("realm1");
}

#[test]
fn rawsocket_handshake_errors() {
    let r = Router::start("");
    let mut c = Raw::connect_handshake(r.rs_port, [0x7F, 0xF4, 0, 0]); // UBJSON: unsupported
    assert_eq!(c.read_exact(4).expect("reply"), vec![0x7F, 0x10, 0, 0]);
    assert!(c.closed());
    let mut c = Raw::connect_handshake(r.rs_port, [0x7F, 0xF0, 0, 0]); // serializer 0: illegal
    assert_eq!(c.read_exact(4).expect("reply"), vec![0x7F, 0x10, 0, 0]);
    let mut c = Raw::connect_handshake(r.rs_port, [0x7F, 0xF1, 0, 1]); // reserved octets
    assert_eq!(c.read_exact(4).expect("reply"), vec![0x7F, 0x30, 0, 0]);
    let mut c = Raw::connect_handshake(r.rs_port, *b"GET "); // not RawSocket
    assert!(c.closed());
    // A valid handshake announces our maximum: 1 MiB = 2^(9+11).
    let mut c = Raw::connect_handshake(r.rs_port, [0x7F, 0x22, 0, 0]);
    assert_eq!(c.read_exact(4).expect("reply"), vec![0x7F, 0xB2, 0, 0]);
}

/// The 25th length bit of a RawSocket frame header says "exactly 16 MiB"
/// only with the other 24 length bits cleared (spec). The router read
/// `08 00 00 01` as a 16 MiB frame and waited for it; the client refused it.
/// One decoder (switchyard_proto::rawsocket) now refuses it on both sides.
#[test]
fn rawsocket_length_bit_25_with_other_length_bits_is_a_protocol_violation() {
    use std::io::Write;
    let r = Router::start("[limits]\nmax_message_size = 16777216\n");
    let mut c = Raw::connect(r.rs_port, Serializer::Json);
    c.join("realm1");
    c.stream.write_all(&[0x08, 0, 0, 1]).expect("send header");
    let (reason, message) = abort_of(c.expect("ABORT"));
    assert_eq!(reason, errors::PROTOCOL_VIOLATION);
    assert!(message.contains("bit 25"), "{message}");
    assert!(c.closed());
}

#[test]
fn oversized_message_aborts_that_session_only() {
    let r = Router::start("[limits]\nmax_message_size = 4096\n");
    let mut healthy = Raw::connect(r.rs_port, Serializer::Json);
    healthy.join("realm1");
    let mut c = Raw::connect(r.rs_port, Serializer::Json);
    c.join("realm1");
    let big = format!(r#"[16,1,{{}},"com.x",["{}"]]"#, "x".repeat(5000));
    c.send_frame(big.as_bytes());
    let (reason, message) = abort_of(c.expect("ABORT"));
    assert_eq!(reason, errors::PROTOCOL_VIOLATION);
    assert!(message.contains("4096"), "{message}");
    assert!(c.closed());
    healthy.subscribe("com.example.ok");
}

#[test]
fn handshake_and_hello_timeouts_close_idle_connections() {
    let r = Router::start("[limits]\nhandshake_timeout = \"500ms\"\n");
    // No RawSocket handshake at all.
    let mut idle = std::net::TcpStream::connect(("127.0.0.1", r.rs_port)).expect("connect");
    idle.set_read_timeout(Some(std::time::Duration::from_secs(3)))
        .expect("timeout");
    let mut buf = [0u8; 8];
    let t = std::time::Instant::now();
    let n = std::io::Read::read(&mut idle, &mut buf).unwrap_or(0);
    assert_eq!(n, 0, "expected EOF");
    assert!(t.elapsed() < std::time::Duration::from_secs(2));
    // Handshake done, but no HELLO.
    let mut c = Raw::connect(r.rs_port, Serializer::Json);
    let t = std::time::Instant::now();
    assert!(c.closed());
    assert!(t.elapsed() < std::time::Duration::from_secs(2));
    assert!(r.log_text().contains("no HELLO within"));
}

#[test]
fn sigterm_sends_goodbye_and_exits_zero() {
    let mut r = Router::start("");
    let mut clients: Vec<Raw> = Serializer::ALL
        .into_iter()
        .map(|s| {
            let mut c = Raw::connect(r.rs_port, s);
            c.join("realm1");
            c
        })
        .collect();
    // A connection still waiting to send HELLO must not hold up the exit.
    let mut pending = Raw::connect(r.rs_port, Serializer::Json);
    let t = std::time::Instant::now();
    let status = r.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(3),
        "shutdown took {:?}",
        t.elapsed()
    );
    assert!(pending.closed());
    for c in &mut clients {
        match c.expect("GOODBYE") {
            Message::Goodbye { reason, .. } => assert_eq!(reason, errors::CLOSE_SYSTEM_SHUTDOWN),
            other => panic!("expected GOODBYE, got {other:?}"),
        }
    }
}

#[test]
fn every_rawsocket_ping_gets_its_pong() {
    use std::io::Write;
    let r = Router::start("");
    let mut c = Raw::connect(r.rs_port, Serializer::Json);
    c.join("realm1");
    let mut burst = Vec::new();
    for p in [&b"one"[..], b"two", b"three", b""] {
        burst.extend_from_slice(&[1, 0, 0, p.len() as u8]);
        burst.extend_from_slice(p);
    }
    c.stream.write_all(&burst).expect("send pings");
    for want in [&b"one"[..], b"two", b"three", b""] {
        let hdr = c.read_exact(4).expect("pong header");
        assert_eq!(hdr[0], 2, "expected a PONG frame, got header {hdr:?}");
        let body = c.read_exact(hdr[3] as usize).expect("pong body");
        assert_eq!(body, want);
    }
    // The session still works afterwards.
    c.subscribe("com.example.after.pings");
}

#[test]
fn sigint_shuts_down_like_sigterm() {
    let mut r = Router::start("");
    let mut c = Raw::connect(r.rs_port, Serializer::MsgPack);
    c.join("realm1");
    let status = r.signal(libc::SIGINT);
    assert!(status.success(), "exit status {status:?}");
    match c.expect("GOODBYE") {
        Message::Goodbye { reason, .. } => assert_eq!(reason, errors::CLOSE_SYSTEM_SHUTDOWN),
        other => panic!("expected GOODBYE, got {other:?}"),
    }
    assert!(r.log_text().contains("SIGINT received"));
}
