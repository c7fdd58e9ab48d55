//! The `pubsub-nats` scenario: the same fan-out as `pubsub` (1 publisher ->
//! N subscriber connections on one subject, M messages of P bytes, K
//! acknowledged publishes in flight) against a NATS core server, so that the
//! router can be compared with it in one run (issue 21).
//!
//! NATS core has no acknowledged publish. Its equivalent here is a PING after
//! every PUB: the server handles a connection's operations in order, so its
//! PONG means that it has processed the PUB before it, that is, queued the
//! message for every matching subscriber, which is what a WAMP router's
//! PUBLISHED says. The publisher keeps K such PUB+PING pairs in flight (a
//! sliding window, like `pubsub --in-flight K`). async-nats has no PING round
//! trip of its own (its `flush` only writes the socket), so the publisher
//! speaks the few lines of the NATS text protocol it needs over a plain TCP
//! connection; the subscribers are async-nats clients.
//!
//! Each payload starts with the message's sequence number (20 decimal
//! digits), so that every subscriber's deliveries are checked: all of them,
//! once each, in publish order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use futures_util::StreamExt;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::lean_sub::{nats_subscriber, NatsRecord};
use crate::pubsub::wait_for_deliveries;
use crate::stats::{group, CpuMeter};

#[derive(Args, Debug)]
pub struct NatsArgs {
    /// NATS server address (host:port, or nats://host:port).
    #[arg(long, default_value = "127.0.0.1:4222")]
    pub nats: String,
    /// Subscriber connections.
    #[arg(long, default_value_t = 10)]
    pub subscribers: usize,
    /// Messages to publish.
    #[arg(long, default_value_t = 100_000)]
    pub publishes: u64,
    /// Acknowledged publishes (PUB + PING) kept in flight.
    #[arg(long, default_value_t = 32)]
    pub in_flight: usize,
    /// Payload size in bytes (at least 20: the sequence number).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// PID of the NATS server, to report its CPU time over the measured window.
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Stop waiting for deliveries after this long without progress (seconds).
    #[arg(long, default_value_t = 5.0)]
    pub drain_timeout: f64,
    /// Also print the figures as one JSON line.
    #[arg(long)]
    pub json: bool,
    /// Give up after this many seconds (the run then reports what it saw).
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// Lean subscribers (`lean_sub.rs`: one TCP stream each, the NATS
    /// protocol parsed in place) instead of async-nats clients.
    #[arg(long)]
    pub lean_subscribers: bool,
}

/// Digits of the sequence number at the start of each payload.
const SEQ_DIGITS: usize = 20;

/// What one subscriber saw.
#[derive(Default)]
pub struct Seen {
    count: u64,
    /// The highest sequence number seen so far.
    prev: Option<u64>,
    out_of_order: u64,
    malformed: u64,
    last: Option<Instant>,
    /// Why a lean subscriber stopped reading before the end, if it did.
    error: Option<String>,
}

impl NatsRecord for Seen {
    /// Counts a message and checks its sequence against the previous one's.
    fn record(&mut self, payload: &[u8], now: Instant) {
        self.count += 1;
        self.last = Some(now);
        match seq_of(payload) {
            Some(seq) => {
                if self.prev.is_some_and(|p| seq <= p) {
                    self.out_of_order += 1;
                } else {
                    self.prev = Some(seq);
                }
            }
            None => self.malformed += 1,
        }
    }

    fn fail(&mut self, error: String) {
        self.error = Some(error);
    }
}

/// The sequence number at the start of a payload.
fn seq_of(payload: &[u8]) -> Option<u64> {
    std::str::from_utf8(payload.get(..SEQ_DIGITS)?)
        .ok()?
        .parse()
        .ok()
}

/// The payload of message `seq`: its number, then `x` up to `len` bytes.
fn payload_of(seq: u64, len: usize) -> Vec<u8> {
    let mut p = format!("{seq:0SEQ_DIGITS$}").into_bytes();
    p.resize(len.max(SEQ_DIGITS), b'x');
    p
}

fn addr_of(url: &str) -> &str {
    url.strip_prefix("nats://").unwrap_or(url)
}

/// The publishing connection: NATS's text protocol, the part it needs.
struct Publisher {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
    line: String,
}

/// What the server said, as far as the publisher cares.
enum Reply {
    Pong,
    Other,
}

impl Publisher {
    async fn connect(addr: &str) -> Result<Publisher, String> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("publisher connect to {addr}: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let (r, writer) = tcp.into_split();
        let mut p = Publisher {
            reader: BufReader::with_capacity(64 * 1024, r),
            writer,
            line: String::new(),
        };
        // INFO first, then CONNECT (no +OK for each PUB, no echo) and a PING
        // whose PONG says the server took the CONNECT.
        p.read_line().await?;
        if !p.line.starts_with("INFO ") {
            return Err(format!("NATS server greeted with {:?}", p.line.trim_end()));
        }
        p.writer
            .write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false,\"name\":\"switchyard-bench\"}\r\nPING\r\n")
            .await
            .map_err(|e| format!("publisher write: {e}"))?;
        loop {
            if let Reply::Pong = p.next_reply().await? {
                return Ok(p);
            }
        }
    }

    async fn read_line(&mut self) -> Result<(), String> {
        self.line.clear();
        let n = self
            .reader
            .read_line(&mut self.line)
            .await
            .map_err(|e| format!("publisher read: {e}"))?;
        if n == 0 {
            return Err("the NATS server closed the publisher's connection".into());
        }
        Ok(())
    }

    /// Reads one line from the server; answers its PINGs.
    async fn next_reply(&mut self) -> Result<Reply, String> {
        self.read_line().await?;
        let l = self.line.trim_end();
        if l == "PONG" {
            Ok(Reply::Pong)
        } else if l == "PING" {
            self.writer
                .write_all(b"PONG\r\n")
                .await
                .map_err(|e| format!("publisher write: {e}"))?;
            Ok(Reply::Other)
        } else if l.starts_with("-ERR") {
            Err(format!("NATS server: {l}"))
        } else {
            Ok(Reply::Other) // +OK, INFO
        }
    }

    /// Whether a whole line is already buffered (reading it will not wait).
    fn line_buffered(&self) -> bool {
        self.reader.buffer().contains(&b'\n')
    }
}

/// Publishes `n` messages keeping `window` PUB+PING pairs unanswered;
/// returns how many were acknowledged.
async fn publish_all(
    p: &mut Publisher,
    subject: &str,
    n: u64,
    window: usize,
    len: usize,
) -> Result<u64, String> {
    let window = window.max(1) as u64;
    let (mut sent, mut acked) = (0u64, 0u64);
    let mut out = Vec::with_capacity(64 * 1024);
    while acked < n {
        out.clear();
        while sent < n && sent - acked < window {
            let payload = payload_of(sent, len);
            out.extend_from_slice(format!("PUB {subject} {}\r\n", payload.len()).as_bytes());
            out.extend_from_slice(&payload);
            out.extend_from_slice(b"\r\nPING\r\n");
            sent += 1;
        }
        if !out.is_empty() {
            p.writer
                .write_all(&out)
                .await
                .map_err(|e| format!("publisher write: {e}"))?;
        }
        // One answer (waiting for it), then every answer already read.
        loop {
            if let Reply::Pong = p.next_reply().await? {
                acked += 1;
            }
            if !p.line_buffered() {
                break;
            }
        }
    }
    Ok(acked)
}

/// Connects a subscriber and makes sure the server has its subscription
/// before returning (a message to itself through the server, after the SUB).
async fn subscriber(url: String, subject: String, total: Arc<AtomicU64>) -> Result<Sub, String> {
    let client = async_nats::ConnectOptions::new()
        .subscription_capacity(1 << 20)
        .connect(url.as_str())
        .await
        .map_err(|e| format!("subscriber connect to {url}: {e}"))?;
    let mut sub = client
        .subscribe(subject)
        .await
        .map_err(|e| format!("subscribe: {e}"))?;
    let probe = client.new_inbox();
    let mut probe_sub = client
        .subscribe(probe.clone())
        .await
        .map_err(|e| format!("subscribe: {e}"))?;
    client
        .publish(probe, Bytes::from_static(b"probe"))
        .await
        .map_err(|e| format!("publish: {e}"))?;
    tokio::time::timeout(Duration::from_secs(10), probe_sub.next())
        .await
        .map_err(|_| "the subscription probe did not come back".to_string())?;
    drop(probe_sub);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let seen2 = seen.clone();
    let task = tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            seen2
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record(&m.payload, Instant::now());
            total.fetch_add(1, Ordering::Relaxed);
        }
    });
    Ok(Sub {
        client: Some(client),
        seen,
        task,
    })
}

/// A subscriber connection and the task counting what it receives.
struct Sub {
    /// The async-nats client (`None`: a lean subscriber, whose task owns
    /// its connection).
    client: Option<async_nats::Client>,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

pub async fn run(a: NatsArgs) -> Result<i32, String> {
    if a.payload < SEQ_DIGITS {
        return Err(format!("--payload must be at least {SEQ_DIGITS} bytes"));
    }
    let addr = addr_of(&a.nats).to_owned();
    let url = format!("nats://{addr}");
    let subject = format!(
        "bench.pubsub.t{}x{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0)
    );
    let expected_total = a.subscribers as u64 * a.publishes;
    let total = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(a.timeout);

    let mut subs = Vec::with_capacity(a.subscribers);
    for _ in 0..a.subscribers {
        subs.push(if a.lean_subscribers {
            let s = nats_subscriber(&addr, &subject, total.clone()).await?;
            Sub {
                client: None,
                seen: s.seen,
                task: s.task,
            }
        } else {
            subscriber(url.clone(), subject.clone(), total.clone()).await?
        });
    }
    let mut publisher = Publisher::connect(&addr).await?;

    let cpu = CpuMeter::start(&a.server_pid);
    let t0 = Instant::now();
    let mut timed_out = false;
    let mut first_error = None;
    let acked = match tokio::time::timeout_at(
        deadline.into(),
        publish_all(
            &mut publisher,
            &subject,
            a.publishes,
            a.in_flight,
            a.payload,
        ),
    )
    .await
    {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => {
            first_error = Some(e);
            0
        }
        Err(_) => {
            timed_out = true;
            0
        }
    };
    let t_published = Instant::now();

    // Wait for the deliveries: all of them, or no progress for drain_timeout.
    let drain = Duration::from_secs_f64(a.drain_timeout);
    if !timed_out {
        timed_out = wait_for_deliveries(&total, expected_total, drain, deadline).await;
    }
    let used = cpu.stop();

    let (mut delivered, mut lost, mut misordered, mut malformed) = (0u64, 0u64, 0u64, 0u64);
    let mut errors = u64::from(first_error.is_some()); // the publisher's
    let mut end = t0;
    for sub in &subs {
        let st = sub.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = &st.error {
            errors += 1;
            first_error.get_or_insert_with(|| format!("subscriber: {e}"));
        }
        delivered += st.count;
        lost += a.publishes.saturating_sub(st.count);
        misordered += st.out_of_order;
        malformed += st.malformed;
        if let Some(l) = st.last {
            end = end.max(l);
        }
    }
    let wall = end.saturating_duration_since(t0).as_secs_f64().max(1e-9);
    let pub_wall = t_published
        .saturating_duration_since(t0)
        .as_secs_f64()
        .max(1e-9);
    let rate = delivered as f64 / wall;
    let pub_rate = acked as f64 / pub_wall;
    let per_cpu = used
        .server
        .filter(|s| *s > 0.0)
        .map(|s| delivered as f64 / s);

    let mut line = format!(
        "pubsub nats 1->{}{} payload {}B in-flight {} (PUB+PING): {} deliveries in {:.3} s = {} deliveries/s (publishes {}/s); lost {lost}, out of order {misordered}",
        a.subscribers,
        if a.lean_subscribers { " (lean)" } else { "" },
        a.payload,
        a.in_flight,
        group(delivered as f64),
        wall,
        group(rate),
        group(pub_rate),
    );
    if let Some(s) = used.server {
        line.push_str(&format!("; server CPU {s:.2} s"));
        if let Some(p) = per_cpu {
            line.push_str(&format!(" = {} deliveries/server-CPU-s", group(p)));
        }
    }
    if let Some(s) = used.client {
        line.push_str(&format!("; bench CPU {s:.2} s"));
    }
    if let Some(e) = &first_error {
        line.push_str(&format!("; error: {e}"));
    }
    if malformed > 0 {
        line.push_str(&format!("; {malformed} malformed payloads"));
    }
    if timed_out {
        line.push_str("; TIMED OUT");
    }
    println!("{line}");
    if a.json {
        println!(
            "{}",
            json!({
                "bench": "pubsub",
                "url": url,
                "transport": "nats",
                "serializer": "nats",
                "subscribers": a.subscribers,
                "lean_subscribers": a.lean_subscribers,
                "publishes": a.publishes,
                "in_flight": a.in_flight,
                "payload": a.payload,
                "expected": expected_total,
                "deliveries": delivered,
                "lost": lost,
                "out_of_order": misordered,
                "malformed": malformed,
                "errors": errors,
                "timed_out": timed_out,
                "wall_s": wall,
                "deliveries_per_s": rate,
                "publishes_per_s": pub_rate,
                "server_cpu_s": used.server,
                "deliveries_per_server_cpu_s": per_cpu,
                "client_cpu_s": used.client,
            })
        );
    }

    // Nothing is left to read: close the publisher, stop the subscribers.
    let _ = publisher.writer.shutdown().await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(
        Duration::from_millis(200),
        publisher.reader.read_to_end(&mut rest),
    )
    .await;
    for sub in subs {
        sub.task.abort();
        drop(sub.client);
    }
    let bad = lost > 0 || misordered > 0 || malformed > 0 || errors > 0 || timed_out;
    Ok(if bad { 2 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_carries_its_sequence() {
        let p = payload_of(123_456, 64);
        assert_eq!(p.len(), 64);
        assert_eq!(seq_of(&p), Some(123_456));
        assert_eq!(seq_of(b"short"), None);
        assert_eq!(seq_of(&payload_of(u64::MAX, 20)), Some(u64::MAX));
    }
}
