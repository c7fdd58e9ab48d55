//! Issue 12 item 14: slow HTTP connections to the bridge cannot take the
//! router's file descriptors. The router runs with a 256-descriptor limit
//! (prlimit); the per-address limit applies to the bridge's listener too,
//! a request body must arrive within `limits.http_body_timeout`, and when
//! descriptors do run out (many addresses), accept errors back off, shed
//! pending connections and are logged once per interval, and the router
//! serves again as soon as descriptors are free.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::memory::{pid, rss_kib};
use common::{Raw, Router};
use switchyard_proto::{Dict, Message, Payload, Serializer, Value};

const FD_LIMIT: u32 = 256;

/// The router under `prlimit --nofile=256` with a bridge, and the bridge's
/// port. Ports are picked free and bound by the router a moment later, so
/// another test may take one meanwhile: a start that fails on a port in use
/// is tried again with other ports (a few times).
fn start(extra: &str) -> (Router, u16) {
    let mut last = String::new();
    for _ in 0..5 {
        let bport = common::free_port();
        match try_start(bport, extra) {
            Ok(r) => return (r, bport),
            Err(log) if log.contains("Address already in use") => last = log,
            Err(log) => panic!("router did not start: {log}"),
        }
    }
    panic!("router did not start, ports taken five times: {last}");
}

fn try_start(bport: u16, extra: &str) -> Result<Router, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ws_port, rs_port) = (common::free_port(), common::free_port());
    let config = format!(
        "[[listener]]\ntype = \"websocket\"\naddress = \"0.0.0.0:{ws_port}\"\npath = \"/ws\"\n\n\
         [[listener]]\ntype = \"rawsocket\"\naddress = \"0.0.0.0:{rs_port}\"\n\n\
         [[realm]]\nname = \"realm1\"\n\n\
         [[bridge]]\naddress = \"0.0.0.0:{bport}\"\nrealm = \"realm1\"\nallow_unsigned = true\nallow_unsigned_from_network = true\n\n\
         {extra}\n"
    );
    let cfg = dir.path().join("switchyard.toml");
    std::fs::write(&cfg, config).expect("write config");
    let log = dir.path().join("router.log");
    let child = Command::new("prlimit")
        .arg(format!("--nofile={FD_LIMIT}:{FD_LIMIT}"))
        .arg(env!("CARGO_BIN_EXE_switchyard"))
        .current_dir(dir.path())
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn prlimit switchyard");
    let mut r = Router {
        child: Some(child),
        ws_port,
        rs_port,
        dir,
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", rs_port)).is_err()
        || TcpStream::connect(("127.0.0.1", bport)).is_err()
    {
        let exited = r
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
        if exited || Instant::now() >= deadline {
            return Err(r.log_text());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(r)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// CPU time (user + system) of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

/// A TCP connection from `from` (any 127.x.y.z address) to `port`.
fn connect_from(from: Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.bind(&SocketAddr::V4(SocketAddrV4::new(from, 0)).into())?;
    s.connect_timeout(
        &SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).into(),
        Duration::from_secs(2),
    )?;
    s.set_tcp_nodelay(true)?;
    Ok(s.into())
}

/// A WAMP session over RawSocket from `from`.
fn session_from(from: Ipv4Addr, port: u16) -> Raw {
    let mut stream = connect_from(from, port).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream
        .write_all(&[0x7F, 0xF0 | Serializer::MsgPack.rawsocket_id(), 0, 0])
        .expect("handshake");
    let mut reply = [0u8; 4];
    stream.read_exact(&mut reply).expect("handshake reply");
    assert_eq!(reply[0], 0x7F, "handshake refused");
    let mut raw = Raw {
        stream,
        ser: Serializer::MsgPack,
        next_request: 1,
    };
    raw.join("realm1");
    raw
}

/// The median of `n` acknowledged PUBLISH round trips.
fn round_trip(s: &mut Raw, n: usize) -> Duration {
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            let req = s.req();
            s.send(&Message::Publish {
                request: req,
                options: Dict::new().with("acknowledge", true),
                topic: "com.test.ping".into(),
                payload: Payload::values(vec![Value::from(1u64)], None),
            });
            assert!(matches!(s.expect("PUBLISHED"), Message::Published { .. }));
            t.elapsed()
        })
        .collect();
    times.sort();
    times[n / 2]
}

/// A slow request: a head announcing a body that never comes.
fn slow_request(s: &mut TcpStream) -> std::io::Result<()> {
    s.write_all(
        b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100000\r\n\r\n{\"topic\": ",
    )
}

/// Slow-body connections from one address: refused beyond the per-address
/// limit (with a 429), closed with 408 after the body timeout; meanwhile a
/// WAMP session from another address connects and its round trip holds.
#[test]
fn slow_bridge_connections_are_bounded_per_address_and_in_time() {
    let (r, bport) =
        start("[limits]\nmax_connections_per_address = 64\nhttp_body_timeout = \"4s\"\n");
    let pid = pid(&r);
    let mut healthy = session_from(Ipv4Addr::new(127, 0, 0, 2), r.rs_port);
    let before = round_trip(&mut healthy, 21);
    let (rss_before, fds_before) = (rss_kib(pid), open_fds(pid));

    let attacker = Ipv4Addr::new(127, 0, 0, 1);
    let mut open = Vec::new();
    let mut refused = 0;
    let attack_start = Instant::now();
    for _ in 0..200 {
        let Ok(mut s) = connect_from(attacker, bport) else {
            refused += 1;
            continue;
        };
        if slow_request(&mut s).is_err() {
            refused += 1;
            continue;
        }
        open.push(s);
    }
    // The router answers 429 at once to the connections over the limit.
    std::thread::sleep(Duration::from_millis(300));
    let mut too_many = 0;
    let mut waiting = Vec::new();
    for mut s in open {
        let mut buf = [0u8; 512];
        s.set_nonblocking(true).ok();
        match s.read(&mut buf) {
            Ok(n) if n > 0 && String::from_utf8_lossy(&buf[..n]).contains(" 429 ") => too_many += 1,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                s.set_nonblocking(false).ok();
                waiting.push(s) // still waiting for its body
            }
            _ => refused += 1,
        }
    }
    let (rss_peak, fds_peak) = (rss_kib(pid), open_fds(pid));
    // A new WAMP session (another address) connects; its round trip holds.
    let mut fresh = session_from(Ipv4Addr::new(127, 0, 0, 3), r.rs_port);
    let during = round_trip(&mut healthy, 21).max(round_trip(&mut fresh, 21));
    eprintln!(
        "200 slow-body connections from one address: {} kept open, {too_many} refused with 429, \
         {refused} closed; router fds {fds_before} -> {fds_peak} (limit {FD_LIMIT}); \
         RSS {rss_before} -> {rss_peak} KiB; publish round trip {before:?} -> {during:?}",
        waiting.len()
    );
    assert!(
        waiting.len() <= 64,
        "{} slow connections open",
        waiting.len()
    );
    assert!(too_many + refused >= 136, "{too_many} + {refused}");
    assert!(fds_peak < FD_LIMIT as usize - 64, "{fds_peak} descriptors");
    assert!(
        during <= before * 2 + Duration::from_millis(5),
        "round trip {before:?} -> {during:?}"
    );
    // The body timeout closes them: 408.
    let mut timed_out = 0;
    for s in &mut waiting {
        s.set_read_timeout(Some(Duration::from_secs(6))).ok();
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        if reply.contains(" 408 ") && reply.contains("http_body_timeout") {
            timed_out += 1;
        }
    }
    let held = attack_start.elapsed();
    assert_eq!(timed_out, waiting.len(), "every slow request gets 408");
    assert!(held < Duration::from_secs(8), "held for {held:?}");
    drop(waiting);
    std::thread::sleep(Duration::from_millis(300));
    let (rss_after, fds_after) = (rss_kib(pid), open_fds(pid));
    let after = round_trip(&mut healthy, 21);
    eprintln!(
        "after: fds {fds_after}, RSS {rss_after} KiB, round trip {after:?}; slow connections held {held:?}"
    );
    assert!(fds_after <= fds_before + 4, "{fds_before} -> {fds_after}");
    assert!(
        rss_peak < rss_before + 32 * 1024,
        "RSS {rss_before} -> {rss_peak} KiB"
    );
}

/// Connections from many addresses exhaust the 256 descriptors: accept
/// errors do not spin (CPU) or flood the log, and once the attackers go
/// the router accepts WAMP sessions again.
#[test]
fn descriptor_exhaustion_does_not_spin_or_flood_the_log() {
    let (r, bport) = start("[limits]\nmax_connections_per_address = 60\n");
    let pid = pid(&r);
    let rss_before = rss_kib(pid);
    let ticks_before = cpu_ticks(pid);
    let t0 = Instant::now();
    let mut held = Vec::new();
    for a in 1..=8u8 {
        for _ in 0..60 {
            if let Ok(mut s) = connect_from(Ipv4Addr::new(127, 0, 1, a), bport) {
                let _ = slow_request(&mut s);
                held.push(s);
            }
        }
    }
    // Keep the pressure on for a few seconds: more connections to every
    // listener while no descriptor is free.
    let mut extra = Vec::new();
    for i in 0..100 {
        let port = [bport, r.rs_port, r.ws_port][i % 3];
        if let Ok(s) = connect_from(Ipv4Addr::new(127, 0, 2, 1 + (i % 50) as u8), port) {
            extra.push(s);
        }
    }
    let fds_peak = open_fds(pid);
    let rss_peak = rss_kib(pid);
    std::thread::sleep(Duration::from_secs(3));
    let ticks = cpu_ticks(pid) - ticks_before;
    let elapsed = t0.elapsed();
    drop(held);
    drop(extra);
    std::thread::sleep(Duration::from_millis(500));
    // Served again.
    let mut s = session_from(Ipv4Addr::new(127, 0, 0, 9), r.rs_port);
    let rt = round_trip(&mut s, 5);
    let rss_after = rss_kib(pid);
    let log = r.log_text();
    let accept_lines = log.lines().filter(|l| l.contains("accept failed")).count();
    // Clock ticks are 1/100 s on Linux.
    let cpu_share = ticks as f64 / 100.0 / elapsed.as_secs_f64();
    eprintln!(
        "fd exhaustion: peak fds {fds_peak}/{FD_LIMIT}, CPU {:.0}% over {elapsed:?}, \
         {accept_lines} accept-failure log lines, RSS {rss_before} -> {rss_peak} -> {rss_after} KiB, \
         round trip after {rt:?}",
        cpu_share * 100.0
    );
    for l in log.lines().filter(|l| l.contains("accept failed")) {
        eprintln!("  {l}");
    }
    assert!(accept_lines <= 3, "{accept_lines} accept-failure lines");
    assert!(
        cpu_share < 0.5,
        "the router used {:.0}% CPU",
        cpu_share * 100.0
    );
    assert!(rt < Duration::from_millis(200), "{rt:?}");
}

/// Large bodies sent slowly or in parallel: the bridge holds at most
/// `max_buffered_body_bytes` of them (the rest get 503 at once), so memory
/// stays bounded.
#[test]
fn buffered_request_bodies_are_bounded_in_bytes() {
    // (Keys of the [[bridge]] table, which start() writes last but one.)
    let (r, bport) = start("max_body_size = 1048576\nmax_buffered_body_bytes = 8388608\n");
    let pid = pid(&r);
    let mut healthy = session_from(Ipv4Addr::new(127, 0, 0, 2), r.rs_port);
    let before = round_trip(&mut healthy, 21);
    let rss_before = rss_kib(pid);
    let chunk = vec![b'x'; 1024 * 1024 - 16];
    let mut held = Vec::new();
    let mut busy = 0;
    for _ in 0..40 {
        let mut s = connect_from(Ipv4Addr::LOCALHOST, bport).expect("connect");
        s.write_all(
            format!(
                "POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                1024 * 1024
            )
            .as_bytes(),
        )
        .expect("head");
        // The body, all but its last bytes; the router holds what it read.
        let _ = s.write_all(&chunk);
        held.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    for s in &mut held {
        s.set_nonblocking(true).ok();
        let mut buf = [0u8; 512];
        if let Ok(n) = s.read(&mut buf) {
            if String::from_utf8_lossy(&buf[..n]).contains(" 503 ") {
                busy += 1;
            }
        }
    }
    let rss_peak = rss_kib(pid);
    let during = round_trip(&mut healthy, 21);
    drop(held);
    std::thread::sleep(Duration::from_millis(500));
    let rss_after = rss_kib(pid);
    eprintln!(
        "40 x 1 MiB bodies held back: {busy} answered 503; RSS {rss_before} -> {rss_peak} -> {rss_after} KiB; \
         round trip {before:?} -> {during:?}"
    );
    assert!(busy >= 30, "{busy} refused");
    assert!(
        rss_peak < rss_before + 24 * 1024,
        "RSS {rss_before} -> {rss_peak} KiB"
    );
    assert!(
        during <= before * 2 + Duration::from_millis(5),
        "round trip {before:?} -> {during:?}"
    );
}

/// The kernel holds up to 4096 connections (or `net.core.somaxconn`, if
/// lower) for each listener until the router accepts them, not bind's
/// default of 128: in the soak (docs/RELIABILITY.md), 10,000 sessions
/// churning overflowed a backlog of 128 and the dropped SYNs cost their
/// clients seconds of retransmission timeouts. `ss` shows a listener's
/// backlog as its Send-Q.
#[test]
fn listeners_keep_a_backlog_for_a_reconnect_storm() {
    let router = Router::start("");
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096);
    for port in [router.rs_port, router.ws_port] {
        let out = Command::new("ss")
            .args(["-Hltn", &format!("sport = :{port}")])
            .output()
            .expect("ss (iproute2) runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let backlog: u32 = text
            .split_whitespace()
            .nth(2)
            .and_then(|q| q.parse().ok())
            .unwrap_or_else(|| panic!("no listener on {port} in: {text}"));
        assert_eq!(backlog, somaxconn.min(4096), "port {port}: {text}");
    }
}

/// Starts an HTTP request on `port` whose head never ends: `size` bytes of
/// headers (as much as the router reads). Returns the connection.
fn endless_head(port: u16, path: &str, size: usize) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.set_write_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let line = format!("X-Pad: {}\r\n", "a".repeat(1000));
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: x\r\n");
    while head.len() < size {
        head.push_str(&line);
    }
    // The router may answer and close before all of it is read.
    let _ = s.write_all(head.as_bytes());
    s
}

/// What a connection got back first (its status line), or the error.
fn first_line(s: &mut TcpStream) -> String {
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
        Err(e) => format!("error: {e}"),
    }
}

/// Request heads that never end, on the WebSocket listener and the bridge:
/// each is cut off at `max_request_head_size` (64 KiB by default) with a
/// 431 (hyper's default let one connection buffer about 400 KiB, for
/// `handshake_timeout`); what 2 x 100 such connections from one address make
/// the router hold stays small.
#[test]
fn endless_request_heads_are_bounded_in_bytes() {
    let (r, bport) = start("");
    let pid = pid(&r);
    let before = rss_kib(pid);
    let mut held = Vec::new();
    for port_path in [(r.ws_port, "/ws"), (bport, "/publish")] {
        for _ in 0..100 {
            held.push(endless_head(port_path.0, port_path.1, 300 * 1024));
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = rss_kib(pid);
    let answers: Vec<String> = [0, 100].iter().map(|&i| first_line(&mut held[i])).collect();
    eprintln!(
        "endless request heads: 200 connections x 300 KiB: RSS {} -> {} KiB; answers {answers:?}",
        before, after
    );
    for a in &answers {
        assert!(a.starts_with("HTTP/1.1 431"), "{answers:?}");
    }
    assert!(
        after.saturating_sub(before) < 20 * 1024,
        "{} KiB held",
        after.saturating_sub(before)
    );
    drop(held);
    // A request head within the limit still works.
    let mut ok = endless_head(bport, "/publish", 0);
    ok.write_all(b"\r\n").expect("end of head");
    let status = first_line(&mut ok);
    assert!(!status.starts_with("HTTP/1.1 431"), "{status}");
}

/// A request head trickled to the WebSocket listener past the bytes the
/// router's own upgrade parser reads (8 KiB; then hyper takes the rest)
/// still has `handshake_timeout` from the accept in all, not a second one
/// when hyper takes over.
#[test]
fn a_trickled_request_head_gets_one_handshake_timeout_in_all() {
    let (r, _) = start("[limits]\nhandshake_timeout = \"2s\"\n");
    let mut s = TcpStream::connect(("127.0.0.1", r.ws_port)).expect("connect");
    let t0 = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .expect("request line");
    // 12 KiB of header lines over 1.8 s: past the fast path's 8 KiB (at
    // ~1.2 s, when hyper takes over), well within the 64 KiB head limit.
    let line = format!("X-Pad: {}\r\n", "a".repeat(1000));
    for _ in 0..12 {
        std::thread::sleep(Duration::from_millis(150));
        if s.write_all(line.as_bytes()).is_err() {
            break;
        }
    }
    // Then nothing: the router must close by ~2 s after the accept.
    let mut buf = [0u8; 256];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break t0.elapsed(),
            Ok(_) => {}
        }
    };
    eprintln!("trickled head: connection closed after {closed:?}");
    assert!(
        closed >= Duration::from_millis(1900),
        "closed before handshake_timeout: {closed:?}"
    );
    assert!(
        closed < Duration::from_millis(2600),
        "a second handshake_timeout after the fast path: closed after {closed:?}"
    );
}
