//! Browser origin checks and the per-address connection limit, over real
//! sockets to the real binary.

mod common;
mod pki;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use pki::*;
use switchyard_proto::Serializer;

/// Sends a WebSocket upgrade (with `origin`, if any) and returns the status
/// code and the whole response text.
fn upgrade(port: u16, origin: Option<&str>) -> (u16, String, TcpStream) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let origin = origin
        .map(|o| format!("Origin: {o}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: wamp.2.json\r\n{origin}\r\n"
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // Read the head, then the body if there is a Content-Length.
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if body.len() >= len {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&got).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text, s)
}

fn ws_listener(port: u16, extra: &str) -> String {
    format!("[[listener]]\ntype = \"websocket\"\naddress = \"127.0.0.1:{port}\"\n{extra}\n\n")
}

#[test]
fn allowed_origins_are_enforced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ws, open) = two_ports();
    let config = format!(
        "{}{}[[realm]]\nname = \"realm1\"\n",
        ws_listener(
            ws,
            "allowed_origins = [\"https://app.example.com\", \"http://localhost:3000\", \"https://*.example.org\"]"
        ),
        ws_listener(open, ""),
    );
    let r = start_router(dir, &config, &[ws, open]);

    for allowed in [
        "https://app.example.com",
        "https://APP.example.com:443",
        "http://localhost:3000",
        "https://eu.example.org",
    ] {
        let (status, text, _) = upgrade(ws, Some(allowed));
        assert_eq!(status, 101, "{allowed}: {text}");
    }
    // Non-browser clients send no Origin: allowed.
    let (status, text, _) = upgrade(ws, None);
    assert_eq!(status, 101, "{text}");

    for refused in [
        "https://evil.example.net",
        "http://app.example.com",
        "http://localhost:3001",
        "https://example.org",
        "null",
    ] {
        let (status, text, _) = upgrade(ws, Some(refused));
        assert_eq!(status, 403, "{refused}: {text}");
        assert!(
            text.contains(&format!("origin not allowed: \"{refused}\"")),
            "{text}"
        );
    }
    let log = r.log_text();
    assert!(
        log.contains("origin not in allowed_origins") && log.contains("evil.example.net"),
        "{log}"
    );

    // Without allowed_origins every origin may connect.
    let (status, text, _) = upgrade(open, Some("https://evil.example.net"));
    assert_eq!(status, 101, "{text}");
}

/// Whether the router closes a fresh RawSocket connection without answering
/// its handshake (refused by the limit).
fn rawsocket_refused(port: u16) -> bool {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _ = s.write_all(&[0x7F, 0xF1, 0, 0]);
    let mut reply = [0u8; 4];
    match s.read(&mut reply) {
        Ok(0) | Err(_) => true,
        Ok(_) => false,
    }
}

#[test]
fn connections_per_address_are_limited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ws, rs) = two_ports();
    let unix = dir.path().join("wamp.sock");
    let config = format!(
        "{}[[listener]]\ntype = \"rawsocket\"\naddress = \"127.0.0.1:{rs}\"\n\n\
         [[listener]]\ntype = \"rawsocket\"\nunix = \"{}\"\n\n\
         [[realm]]\nname = \"realm1\"\n\n[limits]\nmax_connections_per_address = 3\n",
        ws_listener(ws, ""),
        unix.display()
    );
    let mut r = start_router(dir, &config, &[ws, rs]);
    // The readiness probes must have been closed and counted down.
    std::thread::sleep(Duration::from_millis(300));

    // Three connections across both TCP listeners fill the limit.
    let mut a = common::Raw::connect(rs, Serializer::Json);
    a.join("realm1");
    let mut b = common::Raw::connect(rs, Serializer::Json);
    b.join("realm1");
    let (status, text, ws_conn) = upgrade(ws, None);
    assert_eq!(status, 101, "{text}");

    // The fourth is refused on either listener, and again.
    assert!(rawsocket_refused(rs), "4th RawSocket connection accepted");
    assert!(rawsocket_refused(rs), "5th RawSocket connection accepted");
    let (status, text, _) = upgrade(ws, None);
    assert_eq!(status, 429, "{text}");
    assert!(
        text.contains("too many connections from 127.0.0.1"),
        "{text}"
    );
    assert!(text.contains("at most 3"), "{text}");

    // Unix sockets are exempt.
    let mut u = std::os::unix::net::UnixStream::connect(&unix).expect("unix connect");
    u.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    u.write_all(&[0x7F, 0xF1, 0, 0]).expect("write");
    let mut reply = [0u8; 4];
    u.read_exact(&mut reply).expect("unix handshake reply");
    assert_eq!(reply[0], 0x7F);

    // One closes: a new connection gets in.
    drop(ws_conn);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut c = loop {
        if let Some(c) = try_rawsocket(rs) {
            break c;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "slot not freed after a close"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    c.join("realm1");
    assert!(
        rawsocket_refused(rs),
        "limit not enforced after the slot was reused"
    );
    drop((a, b));

    // The refusals were logged once (rate-limited), naming address and limit.
    let log = r.log_text();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("connection refused: 127.0.0.1"))
        .collect();
    assert_eq!(refusals.len(), 1, "{refusals:#?}");
    assert!(
        refusals[0].contains("max_connections_per_address"),
        "{}",
        refusals[0]
    );
    assert!(refusals[0].contains(" 3 "), "{}", refusals[0]);
    assert!(r.terminate().success());
}

/// A RawSocket connection if the router accepts one (None if refused).
fn try_rawsocket(port: u16) -> Option<common::Raw> {
    let mut r = common::Raw::connect_handshake(port, [0x7F, 0xF1, 0, 0]);
    let reply = r.read_exact(4).ok()?;
    (reply[0] == 0x7F).then_some(r)
}

#[test]
fn listener_auth_methods_switch_anonymous_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (public, internal) = two_ports();
    let config = format!(
        "[[listener]]\ntype = \"rawsocket\"\naddress = \"127.0.0.1:{public}\"\n\
         auth_methods = [\"ticket\", \"wampcra\"]\n\n\
         [[listener]]\ntype = \"rawsocket\"\naddress = \"127.0.0.1:{internal}\"\n\n\
         [[realm]]\nname = \"realm1\"\n"
    );
    let r = start_router(dir, &config, &[public, internal]);

    // The realm allows anonymous, but this listener does not.
    let mut c = common::Raw::connect(public, Serializer::Json);
    c.send(&common::hello("realm1"));
    let (reason, message) = common::abort_of(c.expect("ABORT"));
    assert_eq!(reason, "wamp.error.no_matching_auth_method", "{message}");

    // The other listener still lets anonymous clients in.
    let mut c = common::Raw::connect(internal, Serializer::Json);
    let (_, details) = c.join("realm1");
    assert_eq!(details.get_str("authmethod"), Some("anonymous"));
    assert!(r.log_text().contains("(auth methods: ticket, wampcra)"));
}

/// A client frame: text, masked, payload under 126 bytes.
fn masked_text(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut f = vec![0x81, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// The upgrade request is read and answered by the router itself (not
/// hyper): a head that comes in pieces, with a query, and a HELLO sent
/// right behind it in the same write, before the 101 came back, is
/// answered 101 then WELCOME (the bytes read past the head are the
/// session's first). Other requests on the same port still get hyper's
/// answers (the origin test above; the 404 here).
#[test]
fn a_hello_sent_with_the_upgrade_request_is_answered() {
    let r = common::Router::start("");
    let mut s = TcpStream::connect(("127.0.0.1", r.ws_port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let head = "GET /ws?client=test HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
                Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: wamp.2.json\r\n\r\n";
    let (first, rest) = head.split_at(30);
    s.write_all(first.as_bytes()).expect("write");
    std::thread::sleep(Duration::from_millis(50));
    let mut second = rest.as_bytes().to_vec();
    second.extend(masked_text(br#"[1,"realm1",{"roles":{"subscriber":{}}}]"#));
    s.write_all(&second).expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).expect("the router's answer");
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some((head, frames)) = text.split_once("\r\n\r\n") {
            assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
            assert!(
                head.to_ascii_lowercase()
                    .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
                "{head}"
            );
            // The WELCOME's frame (its header, then `[2,`).
            if frames.contains("[2,") {
                break;
            }
        }
    }

    let mut other = TcpStream::connect(("127.0.0.1", r.ws_port)).expect("connect");
    other
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    other
        .write_all(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let n = other.read(&mut buf).expect("answer");
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
}
