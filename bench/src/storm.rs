//! `storm`: a slow-consumer storm. Healthy load runs twice for `--duration`
//! seconds: RPC callers (`--callers` sessions, `--in-flight` calls each)
//! against an echo callee, and a publisher (acknowledged, `--payload` bytes,
//! `--publish-rate` per second) on a topic a healthy session subscribes to. Between the two runs,
//! `--stalled` subscribers join over RawSocket, subscribe to that topic and
//! stop reading, for good. Reports the healthy calls/s and events/s of both
//! runs and their ratio; exit status 1 below `--min-ratio` (0.9). What the
//! router does with the stalled subscribers is its `[limits] slow_consumer`
//! policy: cut them (`disconnect`) or keep them and drop their events
//! (`drop_events`, the storm then lasts the whole second run).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use switchyard_client::{Dict, Serializer, Session, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::stats::group;

#[derive(Args, Debug)]
pub struct StormArgs {
    /// RawSocket address of the router (host:port).
    #[arg(long)]
    pub rawsocket: String,
    #[arg(long, default_value = "realm1")]
    pub realm: String,
    /// Subscribers that stop reading.
    #[arg(long, default_value_t = 500)]
    pub stalled: usize,
    /// Seconds of each run (without, then with the stalled subscribers).
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    #[arg(long, default_value_t = 4)]
    pub callers: usize,
    #[arg(long, default_value_t = 8)]
    pub in_flight: usize,
    /// Event payload in bytes.
    #[arg(long, default_value_t = 1024)]
    pub payload: usize,
    /// Publications per second (0: as fast as they are acknowledged, 8 in
    /// flight; the fan-out to the stalled subscribers then competes with
    /// everything else for the CPU).
    #[arg(long, default_value_t = 1000)]
    pub publish_rate: u64,
    /// Lowest acceptable ratio (with the storm / without).
    #[arg(long, default_value_t = 0.9)]
    pub min_ratio: f64,
    #[arg(long)]
    pub json: bool,
}

const TOPIC: &str = "bench.storm.noise";

/// Reads one RawSocket frame; its type and body.
async fn read_frame(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 4];
    s.read_exact(&mut h).await?;
    let len = usize::from(h[1]) << 16 | usize::from(h[2]) << 8 | usize::from(h[3]);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await?;
    Ok((h[0] & 0x07, body))
}

async fn send_frame(s: &mut TcpStream, body: &[u8]) -> std::io::Result<()> {
    let len = body.len();
    let h = [0u8, (len >> 16) as u8, (len >> 8) as u8, len as u8];
    s.write_all(&h).await?;
    s.write_all(body).await
}

/// Reads frames until a WAMP message of type `code` (JSON) arrives.
async fn expect(s: &mut TcpStream, code: u64) -> Result<(), String> {
    loop {
        let (kind, body) = read_frame(s).await.map_err(|e| e.to_string())?;
        if kind != 0 {
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        if v.get(0).and_then(|c| c.as_u64()) == Some(code) {
            return Ok(());
        }
    }
}

/// Reads (and discards) what the router sends until `stop`; then returns the
/// connection, open, never to be read again.
async fn read_until(mut s: TcpStream, mut stop: watch::Receiver<bool>) -> TcpStream {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            _ = stop.changed() => return s,
            r = s.read(&mut buf) => match r {
                Ok(0) | Err(_) => return s,
                Ok(_) => {}
            },
        }
    }
}

/// A subscriber over raw RawSocket (JSON), subscribed.
async fn raw_subscriber(addr: &str, realm: &str) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    // Magic, max length 2^24, JSON.
    s.write_all(&[0x7f, 0xf1, 0, 0])
        .await
        .map_err(|e| e.to_string())?;
    let mut reply = [0u8; 4];
    s.read_exact(&mut reply).await.map_err(|e| e.to_string())?;
    if reply[0] != 0x7f || reply[1] & 0x0f != 1 {
        return Err(format!("handshake refused: {reply:?}"));
    }
    let hello = json!([1, realm, {"roles": {"subscriber": {}}}]).to_string();
    send_frame(&mut s, hello.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    expect(&mut s, 2).await?;
    let sub = json!([32, 1, {}, TOPIC]).to_string();
    send_frame(&mut s, sub.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    expect(&mut s, 33).await?;
    Ok(s)
}

struct Rates {
    calls: f64,
    events: f64,
    published: f64,
}

/// Runs the healthy load for `secs`.
async fn healthy(
    callers: &[Arc<Session>],
    a: &StormArgs,
    sub_events: &AtomicU64,
    publisher: &Session,
) -> Rates {
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let published = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for s in callers {
        for _ in 0..a.in_flight {
            let (s, stop, calls) = (s.clone(), stop.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if s.call("bench.storm.echo", vec![Value::UInt(1)], Dict::new())
                        .await
                        .is_ok()
                    {
                        calls.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    let body = "x".repeat(a.payload);
    let events_before = sub_events.load(Ordering::Relaxed);
    let started = Instant::now();
    let publishing = async {
        let mut sent = 0u64;
        while started.elapsed() < Duration::from_secs(a.duration) {
            if a.publish_rate > 0 {
                let due = Duration::from_secs_f64(sent as f64 / a.publish_rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
                sent += 8;
            }
            let batch = (0..8).map(|_| {
                publisher.publish(TOPIC, vec![Value::from(body.as_str())], Dict::new(), true)
            });
            for r in futures_util::future::join_all(batch).await {
                if r.is_ok() {
                    published.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    };
    publishing.await;
    stop.store(true, Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    let events = sub_events.load(Ordering::Relaxed) - events_before;
    for t in tasks {
        let _ = t.await;
    }
    Rates {
        calls: calls.load(Ordering::Relaxed) as f64 / secs,
        events: events as f64 / secs,
        published: published.load(Ordering::Relaxed) as f64 / secs,
    }
}

pub async fn run(a: StormArgs) -> Result<i32, String> {
    let url = format!("rs://{}", a.rawsocket);
    let callee = Session::connect(&url, &a.realm, Serializer::MsgPack)
        .await
        .map_err(|e| format!("callee: {e}"))?;
    callee
        .register("bench.storm.echo", |args, _| async move {
            Ok((args, Dict::new()))
        })
        .await
        .map_err(|e| format!("register: {e}"))?;
    let mut callers = Vec::new();
    for _ in 0..a.callers {
        callers.push(Arc::new(
            Session::connect(&url, &a.realm, Serializer::MsgPack)
                .await
                .map_err(|e| format!("caller: {e}"))?,
        ));
    }
    let publisher = Session::connect(&url, &a.realm, Serializer::MsgPack)
        .await
        .map_err(|e| format!("publisher: {e}"))?;
    let subscriber = Session::connect(&url, &a.realm, Serializer::MsgPack)
        .await
        .map_err(|e| format!("subscriber: {e}"))?;
    let mut sub = subscriber
        .subscribe(TOPIC)
        .await
        .map_err(|e| format!("subscribe: {e}"))?;
    let events = Arc::new(AtomicU64::new(0));
    let counter = {
        let events = events.clone();
        tokio::spawn(async move {
            while sub.recv().await.is_some() {
                events.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let before = healthy(&callers, &a, &events, &publisher).await;
    println!(
        "storm: without the stalled subscribers: {} calls/s, {} events/s to the healthy subscriber, {} publications/s",
        group(before.calls),
        group(before.events),
        group(before.published)
    );
    // They subscribe, read until every one has (so that none misses its SUBSCRIBED), then
    // stop reading for good.
    let opened = Instant::now();
    let (stop, stopped) = watch::channel(false);
    let mut readers = Vec::with_capacity(a.stalled);
    while readers.len() < a.stalled {
        let n = (a.stalled - readers.len()).min(100);
        let joins = (0..n).map(|_| raw_subscriber(&a.rawsocket, &a.realm));
        for s in futures_util::future::join_all(joins).await {
            let s = s.map_err(|e| format!("subscriber: {e}"))?;
            readers.push(tokio::spawn(read_until(s, stopped.clone())));
        }
    }
    let _ = stop.send(true);
    let mut stalls = Vec::with_capacity(readers.len());
    for r in readers {
        if let Ok(s) = r.await {
            stalls.push(s);
        }
    }
    println!(
        "storm: {} RawSocket subscribers on the topic, then they stopped reading ({:.1} s)",
        stalls.len(),
        opened.elapsed().as_secs_f64()
    );
    let during = healthy(&callers, &a, &events, &publisher).await;
    println!(
        "storm: with {} subscribers that stopped reading: {} calls/s, {} events/s to the healthy subscriber, {} publications/s",
        stalls.len(),
        group(during.calls),
        group(during.events),
        group(during.published)
    );
    let calls_ratio = during.calls / before.calls.max(1.0);
    let events_ratio = during.events / before.events.max(1.0);
    let pass = calls_ratio >= a.min_ratio && events_ratio >= a.min_ratio;
    println!(
        "storm: healthy throughput kept: calls {:.1} %, events {:.1} % (at least {:.0} % required): {}",
        calls_ratio * 100.0,
        events_ratio * 100.0,
        a.min_ratio * 100.0,
        if pass { "PASS" } else { "FAIL" }
    );
    if a.json {
        println!(
            "{}",
            json!({"scenario": "storm", "stalled": stalls.len(), "seconds": a.duration,
                   "calls_per_s_before": before.calls, "calls_per_s_during": during.calls,
                   "events_per_s_before": before.events, "events_per_s_during": during.events,
                   "published_per_s_before": before.published, "published_per_s_during": during.published,
                   "calls_ratio": calls_ratio, "events_ratio": events_ratio, "pass": pass})
        );
    }
    drop(stalls);
    counter.abort();
    Ok(if pass { 0 } else { 1 })
}
