//! Test harness: runs the real `switchyard` binary on free loopback ports
//! and talks to it over real sockets with a minimal blocking RawSocket client.

#![allow(dead_code)]

pub mod cli;
pub mod health;
pub mod http;
pub mod memory;
pub mod nats;
pub mod pubsub;
pub mod queue;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchyard_proto::{Dict, Message, Payload, Serializer, Value};

/// A port free now, for a router a test starts a moment later. Taken
/// below Linux's ephemeral range (32768-60999), which the OS hands out for
/// `bind(0)` and for the source ports of every client connection the tests
/// open: a port from there could be taken by a test's own connection before
/// the router binds it. Each process walks its own sequence (from a start
/// drawn from its pid) and skips ports something holds.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(7919)) % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN);
}

pub struct Router {
    pub child: Option<Child>,
    pub ws_port: u16,
    pub rs_port: u16,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
}

impl Router {
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.ws_port)
    }

    pub fn rs_url(&self) -> String {
        format!("rs://127.0.0.1:{}", self.rs_port)
    }

    pub fn unix_url(&self) -> String {
        format!("unix:{}", self.dir.path().join("wamp.sock").display())
    }
}

impl Router {
    /// Starts the router with extra TOML (e.g. a [limits] table).
    pub fn start(extra: &str) -> Router {
        // The two ports are picked free and bound by the router a moment
        // later: another test may take one meanwhile, and then the start is
        // tried again with other ports (ports in `extra` are the caller's).
        for attempt in 0..5 {
            let dir = tempfile::tempdir().expect("tempdir");
            let ws_port = free_port();
            let rs_port = free_port();
            let unix = dir.path().join("wamp.sock").display().to_string();
            let config = format!(
                "[[listener]]\ntype = \"websocket\"\naddress = \"127.0.0.1:{ws_port}\"\npath = \"/ws\"\n\n\
                 [[listener]]\ntype = \"rawsocket\"\naddress = \"127.0.0.1:{rs_port}\"\n\n\
                 [[listener]]\ntype = \"rawsocket\"\nunix = \"{unix}\"\n\n\
                 [[realm]]\nname = \"realm1\"\n\n{extra}\n"
            );
            let cfg = dir.path().join("switchyard.toml");
            std::fs::write(&cfg, config).expect("write config");
            let log = dir.path().join("router.log");
            let mut r = Router {
                child: None,
                ws_port,
                rs_port,
                dir,
                log,
            };
            match r.try_spawn() {
                Ok(()) => return r,
                Err(log)
                    if attempt < 4
                        && [ws_port, rs_port]
                            .iter()
                            .any(|p| log.contains(&format!(":{p}: Address already in use"))) =>
                {
                    continue
                }
                Err(log) => panic!("router did not start: {log}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Stops the router (SIGTERM) and starts it again with the same
    /// configuration, ports and data directory; its log starts afresh.
    pub fn restart(&mut self) {
        assert!(self.terminate().success(), "{}", self.log_text());
        self.spawn();
    }

    /// Starts the router again after [`Router::signal`] stopped it (same
    /// configuration, ports and data directory).
    pub fn start_again(&mut self) {
        self.spawn();
    }

    fn spawn(&mut self) {
        if let Err(log) = self.try_spawn() {
            panic!("router did not start: {log}");
        }
    }

    /// Starts the router and waits until it is ready; its log if it exits
    /// or is not ready within 30 s.
    fn try_spawn(&mut self) -> Result<(), String> {
        let cfg = self.dir.path().join("switchyard.toml");
        let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .current_dir(self.dir.path())
            .arg("--config")
            .arg(&cfg)
            .arg("--log-level")
            .arg("debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&self.log).expect("log file"))
            .spawn()
            .expect("spawn switchyard");
        self.child = Some(child);
        let (rs_port, ws_port) = (self.rs_port, self.ws_port);
        let deadline = Instant::now() + Duration::from_secs(30);
        // Every listener (the HTTP bridge's too) is bound before the router
        // logs that it is ready.
        let ready = concat!(" ", env!("CARGO_PKG_VERSION"), " ready");
        while TcpStream::connect(("127.0.0.1", rs_port)).is_err()
            || TcpStream::connect(("127.0.0.1", ws_port)).is_err()
            || !self.log_text().contains(ready)
        {
            let exited = self
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited || Instant::now() >= deadline {
                return Err(self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM)
    }

    /// Sends `sig` and waits for the exit status.
    pub fn signal(&mut self, sig: i32) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
        unsafe {
            libc::kill(child.id() as i32, sig);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "router did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let log = self.log_text();
        if log.contains("panicked") {
            panic!("router panicked:\n{log}");
        }
    }
}

/// A blocking RawSocket client speaking one serializer.
pub struct Raw {
    pub stream: TcpStream,
    pub ser: Serializer,
    pub next_request: u64,
}

impl Raw {
    /// Connects and performs the RawSocket handshake (asking for up to 16 MiB).
    pub fn connect(port: u16, ser: Serializer) -> Raw {
        let mut r = Raw::connect_handshake(port, [0x7F, 0xF0 | ser.rawsocket_id(), 0, 0]);
        let reply = r.read_exact(4).expect("handshake reply");
        assert_eq!(reply[0], 0x7F);
        assert_eq!(
            reply[1] & 0x0F,
            ser.rawsocket_id(),
            "handshake refused: {reply:?}"
        );
        r.ser = ser;
        r
    }

    /// Connects and sends raw handshake octets (no reply read).
    pub fn connect_handshake(port: u16, hs: [u8; 4]) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        let mut r = Raw {
            stream,
            ser: Serializer::Json,
            next_request: 1,
        };
        r.stream.write_all(&hs).expect("send handshake");
        r
    }

    pub fn read_exact(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; n];
        self.stream.read_exact(&mut buf)?;
        Ok(buf)
    }

    pub fn send_frame(&mut self, bytes: &[u8]) {
        let len = bytes.len();
        let hdr = [0, (len >> 16) as u8, (len >> 8) as u8, len as u8];
        self.stream.write_all(&hdr).expect("write header");
        self.stream.write_all(bytes).expect("write frame");
    }

    pub fn send(&mut self, msg: &Message) {
        let bytes = msg.encode(self.ser).expect("encode");
        self.send_frame(&bytes);
    }

    /// Reads the next WAMP message (answering PINGs); None on EOF/timeout.
    pub fn recv(&mut self) -> Option<Message> {
        loop {
            let hdr = self.read_exact(4).ok()?;
            let len = ((hdr[1] as usize) << 16) | ((hdr[2] as usize) << 8) | hdr[3] as usize;
            let body = self.read_exact(len).ok()?;
            match hdr[0] & 0x07 {
                0 => {
                    return Some(
                        Message::decode(self.ser, &Bytes::from(body))
                            .expect("router sent a valid message"),
                    )
                }
                1 => {
                    let pong = [2, hdr[1], hdr[2], hdr[3]];
                    self.stream.write_all(&pong).ok()?;
                    self.stream.write_all(&body).ok()?;
                }
                _ => {}
            }
        }
    }

    pub fn expect(&mut self, what: &str) -> Message {
        self.recv()
            .unwrap_or_else(|| panic!("expected {what}, got EOF or timeout"))
    }

    /// True if the router closed the connection (EOF) within the read timeout.
    pub fn closed(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
            }
        }
    }

    pub fn req(&mut self) -> u64 {
        let r = self.next_request;
        self.next_request += 1;
        r
    }

    /// HELLO → WELCOME; returns the session id and WELCOME details.
    pub fn join(&mut self, realm: &str) -> (u64, Dict) {
        self.send(&hello(realm));
        match self.expect("WELCOME") {
            Message::Welcome { session, details } => (session, details),
            other => panic!("expected WELCOME, got {other:?}"),
        }
    }

    pub fn subscribe(&mut self, topic: &str) -> u64 {
        let request = self.req();
        self.send(&Message::Subscribe {
            request,
            options: Dict::new(),
            topic: topic.into(),
        });
        match self.expect("SUBSCRIBED") {
            Message::Subscribed {
                request: r,
                subscription,
            } if r == request => subscription,
            other => panic!("expected SUBSCRIBED, got {other:?}"),
        }
    }

    pub fn register(&mut self, procedure: &str) -> u64 {
        let request = self.req();
        self.send(&Message::Register {
            request,
            options: Dict::new(),
            procedure: procedure.into(),
        });
        match self.expect("REGISTERED") {
            Message::Registered {
                request: r,
                registration,
            } if r == request => registration,
            other => panic!("expected REGISTERED, got {other:?}"),
        }
    }
}

pub fn hello(realm: &str) -> Message {
    let roles = Dict::new()
        .with("publisher", Dict::new())
        .with("subscriber", Dict::new())
        .with("caller", Dict::new())
        .with("callee", Dict::new());
    Message::Hello {
        realm: realm.into(),
        details: Dict::new().with("roles", roles),
    }
}

pub fn args(values: Vec<Value>) -> Payload {
    Payload::values(values, None)
}

/// Args of a payload, decoded.
pub fn args_of(p: &Payload) -> Vec<Value> {
    match p.args.as_ref().map(|a| a.to_value().expect("args decode")) {
        Some(Value::List(l)) => l,
        None => Vec::new(),
        other => panic!("args not a list: {other:?}"),
    }
}

pub fn abort_of(m: Message) -> (String, String) {
    match m {
        Message::Abort { details, reason } => {
            (reason, details.get_str("message").unwrap_or("").to_string())
        }
        other => panic!("expected ABORT, got {other:?}"),
    }
}
