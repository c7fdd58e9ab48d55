//! Denial of service before login: what a client that has not authenticated
//! can make the router hold or do (Argon2 checks, the failed-login
//! throttle, HELLO fields, PINGs). Real binary, real sockets; RSS measured
//! from /proc.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::health::Health;
use common::memory::{rss_mb, PeakRss};
use common::{abort_of, Raw, Router};
use switchyard_proto::{Dict, Message, Serializer, Value};
use switchyard_router::auth::ticket;

const TICKET: &str = "correct horse battery staple";

/// The tests of this file run one at a time: each measures the router's
/// memory and latency, which the others would disturb.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A realm with anonymous sessions (the healthy session) and one ticket
/// user, alice; `auth_extra` goes into [realm.auth].
fn config(auth_extra: &str, limits: &str) -> String {
    let hash = ticket::hash_secret(TICKET).expect("hash");
    format!(
        "[realm.auth]\nmethods = [\"anonymous\", \"ticket\"]\n{auth_extra}\n\n\
         [[realm.auth.ticket]]\nauthid = \"alice\"\nsecret = \"{hash}\"\nrole = \"user\"\n\n\
         [limits]\n{limits}\n"
    )
}

fn ticket_hello(authid: &str) -> Message {
    Message::Hello {
        realm: "realm1".into(),
        details: Dict::new()
            .with("roles", Dict::new().with("caller", Dict::new()))
            .with("authmethods", Value::List(vec![Value::from("ticket")]))
            .with("authid", authid),
    }
}

fn authenticate(c: &mut Raw, signature: &str) {
    c.send(&Message::Authenticate {
        signature: signature.into(),
        extra: Dict::new(),
    });
}

/// A ticket login from `port`: WELCOME (true) or ABORT (false, with its
/// message).
fn ticket_login(port: u16, authid: &str, ticket: &str) -> Result<(), String> {
    let mut c = Raw::connect(port, Serializer::Json);
    // Argon2 checks of a debug build are slow, and they queue.
    c.stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    c.send(&ticket_hello(authid));
    match c.expect("CHALLENGE or ABORT") {
        Message::Challenge { .. } => {}
        m => return Err(abort_of(m).1),
    }
    authenticate(&mut c, ticket);
    match c.expect("WELCOME or ABORT") {
        Message::Welcome { .. } => Ok(()),
        m => Err(abort_of(m).1),
    }
}

// ---------------------------------------------------------------------
// 7. Argon2 checks are bounded, and their memory is reused.
// ---------------------------------------------------------------------

#[test]
fn concurrent_wrong_tickets_are_bounded_in_memory() {
    let _serial = serial();
    let r = Router::start(&config(
        "max_failures = 0",
        "max_concurrent_ticket_checks = 2\nticket_check_wait = \"60s\"",
    ));
    let port = r.rs_port;
    let before = rss_mb(&r);
    let peak = PeakRss::start(&r);
    let health = Health::start(&r);
    let started = Instant::now();
    let attackers: Vec<_> = (0..48)
        .map(|i| thread::spawn(move || ticket_login(port, "alice", &format!("wrong {i}"))))
        .collect();
    let results: Vec<_> = attackers
        .into_iter()
        .map(|a| a.join().expect("attacker"))
        .collect();
    let took = started.elapsed();
    let worst = health.finish();
    let peak_mb = peak.peak();
    drop(peak);
    thread::sleep(Duration::from_millis(500));
    let after = rss_mb(&r);
    let login = Instant::now();
    ticket_login(port, "alice", TICKET).expect("alice still logs in");
    let login = login.elapsed();
    eprintln!(
        "argon2: 48 wrong tickets in {took:?}: RSS before {before:.1} MiB, peak {peak_mb:.1} MiB, after {after:.1} MiB; \
         worst round trip {worst:?}; a right login afterwards {login:?}"
    );
    assert!(
        results.iter().all(|r| r.is_err()),
        "every wrong ticket fails"
    );
    // Two checks at once, 19 MiB each, in buffers that are kept and reused.
    assert!(
        peak_mb - before < 55.0,
        "{:.1} MiB for 48 checks",
        peak_mb - before
    );
    assert!(after - before < 55.0, "{:.1} MiB kept", after - before);
    assert!(worst < Duration::from_secs(2), "round trip {worst:?}");
}

#[test]
fn a_login_beyond_the_check_bound_fails_fast_with_a_clear_abort() {
    let _serial = serial();
    let r = Router::start(&config(
        "max_failures = 0",
        "max_concurrent_ticket_checks = 1\nticket_check_wait = \"1ms\"",
    ));
    let port = r.rs_port;
    let attackers: Vec<_> = (0..8)
        .map(|i| thread::spawn(move || ticket_login(port, "alice", &format!("wrong {i}"))))
        .collect();
    let messages: Vec<String> = attackers
        .into_iter()
        .filter_map(|a| a.join().expect("attacker").err())
        .collect();
    eprintln!("{messages:?}");
    assert!(
        messages
            .iter()
            .any(|m| m.contains("busy checking other logins (at most 1 at once")),
        "{messages:?}"
    );
}

// ---------------------------------------------------------------------
// 8. Attempts count when they start: HELLOs first, AUTHENTICATEs later.
// ---------------------------------------------------------------------

#[test]
fn interleaved_hellos_get_no_more_guesses_than_max_failures() {
    let _serial = serial();
    let r = Router::start(&config("max_failures = 5", ""));
    // 40 connections send HELLO first...
    let mut conns: Vec<Raw> = (0..40)
        .map(|_| {
            let mut c = Raw::connect(r.rs_port, Serializer::Json);
            c.send(&ticket_hello("alice"));
            c
        })
        .collect();
    let mut challenged = Vec::new();
    let mut refusals = Vec::new();
    for (i, c) in conns.iter_mut().enumerate() {
        match c.expect("CHALLENGE or ABORT") {
            Message::Challenge { .. } => challenged.push(i),
            m => refusals.push(abort_of(m).1),
        }
    }
    // ...and AUTHENTICATE afterwards: each CHALLENGE is one guess.
    for &i in &challenged {
        authenticate(&mut conns[i], "wrong");
        let (reason, _) = abort_of(conns[i].expect("ABORT"));
        assert_eq!(reason, "wamp.error.authentication_failed");
    }
    eprintln!(
        "interleaved: {} guesses of 40 HELLOs; refused: {:?}",
        challenged.len(),
        refusals.first()
    );
    assert_eq!(challenged.len(), 5, "max_failures = 5 guesses");
    assert!(
        refusals[0].contains("too many failed logins for this address and authid; try again in")
    );
}

// ---------------------------------------------------------------------
// 9. An attacker slows down; the real user from elsewhere is not locked out.
// ---------------------------------------------------------------------

/// A RawSocket (JSON) connection from the local address `from`.
fn connect_from(from: [u8; 4], port: u16) -> Raw {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    s.bind(&std::net::SocketAddr::from((from, 0)).into())
        .expect("bind");
    s.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
        .expect("connect");
    let stream: std::net::TcpStream = s.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut c = Raw {
        stream,
        ser: Serializer::Json,
        next_request: 1,
    };
    use std::io::Write;
    c.stream
        .write_all(&[0x7F, 0xF0 | Serializer::Json.rawsocket_id(), 0, 0])
        .expect("handshake");
    let reply = c.read_exact(4).expect("handshake reply");
    assert_eq!(reply[1] & 0x0F, Serializer::Json.rawsocket_id());
    c
}

fn login_from(from: [u8; 4], port: u16, authid: &str, ticket: &str) -> Result<(), String> {
    let mut c = connect_from(from, port);
    c.send(&ticket_hello(authid));
    match c.expect("CHALLENGE or ABORT") {
        Message::Challenge { .. } => {}
        m => return Err(abort_of(m).1),
    }
    authenticate(&mut c, ticket);
    match c.expect("WELCOME or ABORT") {
        Message::Welcome { .. } => Ok(()),
        m => Err(abort_of(m).1),
    }
}

#[test]
fn an_attacker_slows_down_without_locking_the_user_out() {
    let _serial = serial();
    let r = Router::start(&config("max_failures = 5", ""));
    let port = r.rs_port;
    let attacker = [127, 0, 0, 2];
    let mut messages = Vec::new();
    for i in 0..30 {
        messages.push(login_from(attacker, port, "alice", &format!("guess {i}")).unwrap_err());
    }
    let guesses = messages
        .iter()
        .filter(|m| *m == "authentication failed")
        .count();
    // 5 free guesses, and one more each time the delay (1 s, then 2 s)
    // has passed while the 30 tries ran.
    assert!((5..=7).contains(&guesses), "{messages:?}");
    assert!(
        messages[5]
            .contains("too many failed logins for this address and authid; try again in 1 s"),
        "{}",
        messages[5]
    );
    // The real user, from another address, at once.
    let start = Instant::now();
    login_from([127, 0, 0, 1], port, "alice", TICKET).expect("alice is not locked out");
    let took = start.elapsed();
    // The delay grows: once it has passed, one more guess, then a longer one.
    thread::sleep(Duration::from_millis(4100));
    let one_more = login_from(attacker, port, "alice", "guess 31").unwrap_err();
    let next = login_from(attacker, port, "alice", "guess 32").unwrap_err();
    eprintln!(
        "lockout: attacker got {guesses} guesses in 30 tries; alice logged in from another address in {took:?}; \
         after the delay: {one_more:?}, then {next:?}"
    );
    assert_eq!(one_more, "authentication failed");
    let secs: u64 = next
        .rsplit("try again in ")
        .next()
        .and_then(|t| t.trim_end_matches(" s").parse().ok())
        .unwrap_or(0);
    assert!(secs >= 2, "{next}");
    assert!(took < Duration::from_secs(1), "{took:?}");
}

// ---------------------------------------------------------------------
// 10. What a client sends before HELLO completes is bounded.
// ---------------------------------------------------------------------

fn hello_abort(port: u16, msg: &Message) -> (String, String) {
    let mut c = Raw::connect(port, Serializer::Json);
    c.send(msg);
    abort_of(c.expect("ABORT"))
}

#[test]
fn oversized_hello_fields_are_refused_and_nothing_is_kept() {
    let _serial = serial();
    let r = Router::start(&config("max_failures = 5", ""));
    let port = r.rs_port;
    let before = rss_mb(&r);
    let peak = PeakRss::start(&r);
    let health = Health::start(&r);
    let huge = "a".repeat(900 * 1024);
    // 40 HELLOs with a 900 KiB authid, each from the same address.
    for _ in 0..40 {
        let (reason, message) = hello_abort(port, &ticket_hello(&huge));
        assert_eq!(reason, "switchyard.error.limit_exceeded");
        assert!(
            message.contains("exceeds the limit of 65536 bytes (max_handshake_message_size)"),
            "{message}"
        );
    }
    let worst = health.finish();
    let peak_mb = peak.peak();
    drop(peak);
    let after = rss_mb(&r);
    // Fields within the message limit are bounded one by one.
    let (_, authid) = hello_abort(port, &ticket_hello(&"b".repeat(1000)));
    assert!(
        authid.contains("at most 256 bytes (max_authid_length)"),
        "{authid}"
    );
    let (_, realm) = hello_abort(
        port,
        &Message::Hello {
            realm: format!("com.{}", "r".repeat(1000)),
            details: Dict::new().with("roles", Dict::new().with("caller", Dict::new())),
        },
    );
    assert!(realm.contains("(max_uri_length)"), "{realm}");
    let methods = Value::List((0..100).map(|_| Value::from("ticket")).collect());
    let (_, many) = hello_abort(
        port,
        &Message::Hello {
            realm: "realm1".into(),
            details: Dict::new()
                .with("roles", Dict::new().with("caller", Dict::new()))
                .with("authmethods", methods),
        },
    );
    assert!(many.contains("authmethods must list at most 16"), "{many}");
    // None of it counted as a login attempt: alice logs in.
    ticket_login(port, "alice", TICKET).expect("alice logs in");
    eprintln!(
        "hello fields: 40 HELLOs with 900 KiB authids: RSS before {before:.1} MiB, peak {peak_mb:.1} MiB, \
         after {after:.1} MiB; worst round trip {worst:?}"
    );
    assert!(after - before < 10.0, "{:.1} MiB kept", after - before);
    assert!(
        peak_mb - before < 20.0,
        "{:.1} MiB at the peak",
        peak_mb - before
    );
    assert!(worst < Duration::from_secs(2), "round trip {worst:?}");
}

// ---------------------------------------------------------------------
// 11. PINGs of a peer that never reads the PONGs.
// ---------------------------------------------------------------------

/// Sends RawSocket PINGs of `size` bytes until the router closes the
/// connection (or `count` are sent); returns how many went out.
fn ping_flood_rawsocket(c: &mut Raw, size: usize, count: usize) -> usize {
    use std::io::Write;
    let payload = vec![0x55u8; size];
    let hdr = [1u8, (size >> 16) as u8, (size >> 8) as u8, size as u8];
    for i in 0..count {
        if c.stream.write_all(&hdr).is_err() || c.stream.write_all(&payload).is_err() {
            return i;
        }
    }
    count
}

#[test]
fn rawsocket_pings_without_reading_are_bounded() {
    let _serial = serial();
    let r = Router::start(&config("", ""));
    let before = rss_mb(&r);
    let peak = PeakRss::start(&r);
    let health = Health::start(&r);
    // Before HELLO, a PING is bounded by max_handshake_message_size.
    let mut early = Raw::connect(r.rs_port, Serializer::Json);
    let sent_early = ping_flood_rawsocket(&mut early, 900 * 1024, 64);
    // On established sessions: 900 KiB PINGs, never reading the PONGs.
    let floods: Vec<_> = (0..2)
        .map(|_| {
            let port = r.rs_port;
            thread::spawn(move || {
                let mut c = Raw::connect(port, Serializer::Json);
                c.join("realm1");
                c.stream
                    .set_write_timeout(Some(Duration::from_secs(10)))
                    .expect("timeout");
                ping_flood_rawsocket(&mut c, 900 * 1024, 64)
            })
        })
        .collect();
    let sent: Vec<usize> = floods
        .into_iter()
        .map(|f| f.join().expect("flood"))
        .collect();
    let worst = health.finish();
    let peak_mb = peak.peak();
    drop(peak);
    thread::sleep(Duration::from_millis(300));
    let after = rss_mb(&r);
    eprintln!(
        "rawsocket pings: before HELLO {sent_early} sent; established {sent:?} of 64 sent before the router closed; \
         RSS before {before:.1} MiB, peak {peak_mb:.1} MiB, after {after:.1} MiB; worst round trip {worst:?}"
    );
    assert!(sent_early < 64, "the early flood was cut off");
    assert!(sent.iter().all(|n| *n < 64), "{sent:?}");
    assert!(r.log_text().contains("max_pending_pong_bytes"), "logged");
    assert!(peak_mb - before < 40.0, "{:.1} MiB", peak_mb - before);
    assert!(worst < Duration::from_secs(2), "round trip {worst:?}");
}

/// A raw TCP connection upgraded to WebSocket (wamp.2.json) on `port`.
fn ws_upgrade(port: u16) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.set_write_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let req =
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: wamp.2.json\r\n\r\n";
    s.write_all(req.as_bytes()).expect("upgrade");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("response");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "upgraded");
    s
}

/// The next frame the router sends on `s`: its opcode and payload (server
/// frames are not masked).
fn ws_read_frame(s: &mut std::net::TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    use std::io::Read;
    let mut head = [0u8; 2];
    s.read_exact(&mut head)?;
    let len = match head[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b)?;
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b)?;
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload)?;
    Ok((head[0] & 0x0f, payload))
}

/// A masked text frame whose header announces `len` bytes, followed by
/// `payload` (all of it, or the start of a frame still to come).
fn ws_text_frame(len: usize, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x81u8, 0x80 | 127];
    frame.extend((len as u64).to_be_bytes());
    frame.extend(mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// A text frame's header announcing `len` bytes, and `sent` bytes of its
/// payload.
fn ws_text_frame_start(len: usize, sent: usize) -> Vec<u8> {
    ws_text_frame(len, &vec![b'a'; sent])
}

#[test]
fn websocket_message_before_welcome_is_bounded_on_the_frame_header() {
    let _serial = serial();
    use std::io::Write;
    let r = Router::start(&config("", ""));
    // One frame announcing 900 KiB before HELLO, of which 1000 bytes are
    // sent: refused on its header, at once (not after the 900 KiB nor at
    // the handshake timeout, 10 s).
    let mut s = ws_upgrade(r.ws_port);
    let started = Instant::now();
    s.write_all(&ws_text_frame_start(900 * 1024, 1000))
        .expect("frame");
    let (opcode, payload) = ws_read_frame(&mut s).expect("an answer before the timeout");
    let text = String::from_utf8_lossy(&payload).into_owned();
    assert_eq!(opcode, 1, "a text frame: {text}");
    assert!(text.starts_with("[3,"), "ABORT: {text}");
    assert!(text.contains("switchyard.error.limit_exceeded"), "{text}");
    assert!(
        text.contains("exceeds the limit of 65536 bytes (max_handshake_message_size)"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let (opcode, _) = ws_read_frame(&mut s).expect("close");
    assert_eq!(opcode, 8, "then a CLOSE");
    // 100 connections each sending 800 KiB of a 900 KiB message before
    // HELLO, and staying: nothing of it is buffered (before, the router
    // held all of it: 80 MB).
    let before = rss_mb(&r);
    let held: Vec<_> = (0..100)
        .map(|_| {
            let mut s = ws_upgrade(r.ws_port);
            // The router may close while the bytes are still going out.
            let _ = s.write_all(&ws_text_frame_start(900 * 1024, 800 * 1024));
            s
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    let after = rss_mb(&r);
    eprintln!(
        "websocket before HELLO: 100 x 800 KiB of 900 KiB messages: RSS before {before:.1} MiB, \
         after {after:.1} MiB"
    );
    assert!(after - before < 30.0, "{:.1} MiB", after - before);
    drop(held);
    // After WELCOME the transport's own limit applies: a 100 KiB message
    // is taken.
    let mut s = ws_upgrade(r.ws_port);
    ws_send_text(
        &mut s,
        r#"[1,"realm1",{"roles":{"publisher":{}},"authmethods":["anonymous"]}]"#,
    );
    let (_, welcome) = ws_read_frame(&mut s).expect("WELCOME");
    assert!(
        welcome.starts_with(b"[2,"),
        "{}",
        String::from_utf8_lossy(&welcome)
    );
    let big = "b".repeat(100 * 1024);
    ws_send_text(
        &mut s,
        &format!(r#"[16,7,{{"acknowledge":true}},"com.example.big",["{big}"]]"#),
    );
    let (_, published) = ws_read_frame(&mut s).expect("PUBLISHED");
    assert!(
        published.starts_with(b"[17,7,"),
        "{}",
        String::from_utf8_lossy(&published)
    );
}

/// Sends `text` as one masked text frame.
fn ws_send_text(s: &mut std::net::TcpStream, text: &str) {
    use std::io::Write;
    s.write_all(&ws_text_frame(text.len(), text.as_bytes()))
        .expect("send");
}

#[test]
fn websocket_pings_without_reading_are_bounded() {
    let _serial = serial();
    use std::io::Write;
    let r = Router::start(&config("", ""));
    let before = rss_mb(&r);
    let mut s = ws_upgrade(r.ws_port);
    // Masked PINGs of 125 bytes (the most a control frame may carry), in
    // batches, never reading a PONG.
    let mut frame = vec![0x89u8, 0x80 | 125, 1, 2, 3, 4];
    frame.extend((0..125).map(|i| (i as u8) ^ [1, 2, 3, 4][i % 4]));
    let batch: Vec<u8> = frame
        .iter()
        .copied()
        .cycle()
        .take(frame.len() * 1000)
        .collect();
    let peak = PeakRss::start(&r);
    let mut sent = 0;
    for _ in 0..400 {
        if s.write_all(&batch).is_err() {
            break;
        }
        sent += 1000;
    }
    let peak_mb = peak.peak();
    drop(peak);
    let after = rss_mb(&r);
    eprintln!(
        "websocket pings: {sent} of 400000 sent before the router closed; RSS before {before:.1} MiB, \
         peak {peak_mb:.1} MiB, after {after:.1} MiB"
    );
    assert!(sent < 400_000, "the flood was cut off");
    assert!(r
        .log_text()
        .contains("WebSocket PINGs without reading the PONGs"));
    assert!(peak_mb - before < 30.0, "{:.1} MiB", peak_mb - before);
}
