//! The `pubsub` scenario: 1 publisher -> N subscribers on one topic,
//! optionally beside many subscriptions that do not match (`--noise`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde_json::json;
use switchyard_client::{raw_payload, Dict, Serializer, Session, SessionOptions, Value};

use crate::lean::Wire;
use crate::lean_pub::{LeanPublisher, Published};
use crate::lean_sub::{wamp_subscriber, WampSeen};
use crate::stats::{group, CpuMeter};
use crate::Common;

#[derive(Args, Debug)]
pub struct PubsubArgs {
    #[command(flatten)]
    pub common: Common,
    /// Subscriber sessions (each its own connection).
    #[arg(long, default_value_t = 10)]
    pub subscribers: usize,
    /// Events to publish.
    #[arg(long, default_value_t = 100_000)]
    pub publishes: u64,
    /// Acknowledged publishes kept in flight.
    #[arg(long, default_value_t = 32)]
    pub in_flight: usize,
    /// Serializer of the subscribers (default: the publisher's `--serializer`);
    /// a different one makes the router transcode every payload.
    #[arg(long, value_enum)]
    pub sub_serializer: Option<crate::Ser>,
    /// URL for the subscribers (default: `--url`), e.g. to publish over
    /// RawSocket and deliver over WebSocket; several (comma-separated)
    /// spread the subscribers over them in turn (the nodes of a cluster).
    #[arg(long, value_delimiter = ',')]
    pub sub_url: Vec<String>,
    /// Stop waiting for deliveries after this long without progress (seconds).
    #[arg(long, default_value_t = 5.0)]
    pub drain_timeout: f64,
    /// Subscriptions that do not match the published topic, made by one
    /// extra session before measuring (they share the topic's leading
    /// components, the hard case for an index).
    #[arg(long, default_value_t = 0)]
    pub noise: usize,
    /// Match policy of the noise subscriptions.
    #[arg(long, value_enum, default_value = "prefix")]
    pub noise_match: NoiseMatch,
    /// Lean subscribers (`lean_sub.rs`: one TCP stream each, EVENTs taken
    /// from the frames in place, ws:// and rs:// only) instead of
    /// `switchyard_client` sessions.
    #[arg(long)]
    pub lean_subscribers: bool,
    /// A lean publisher (`lean_pub.rs`: one TCP stream, PUBLISH frames
    /// pre-encoded but for the request id, PUBLISHED parsed in place,
    /// ws:// and rs:// only) instead of a `switchyard_client` session.
    #[arg(long)]
    pub lean_publisher: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum NoiseMatch {
    Exact,
    Prefix,
    Wildcard,
}

impl NoiseMatch {
    fn name(self) -> &'static str {
        match self {
            NoiseMatch::Exact => "exact",
            NoiseMatch::Prefix => "prefix",
            NoiseMatch::Wildcard => "wildcard",
        }
    }

    /// The i-th pattern: never matches `bench.pubsub.t...`.
    fn pattern(self, i: usize) -> String {
        match self {
            NoiseMatch::Exact => format!("bench.pubsub.n{i}"),
            NoiseMatch::Prefix => format!("bench.pubsub.n{i}."),
            NoiseMatch::Wildcard => format!("bench..t{i}"),
        }
    }
}

/// Makes `n` non-matching subscriptions on one session, 500 requests at a time.
async fn make_noise(a: &PubsubArgs, ser: Serializer) -> Result<Option<Session>, String> {
    if a.noise == 0 {
        return Ok(None);
    }
    let c = &a.common;
    let s = Session::connect_with(&c.url, &c.realm, SessionOptions::new(ser))
        .await
        .map_err(|e| format!("noise session connect: {e}"))?;
    let options = Dict::new().with("match", a.noise_match.name());
    let mut next = 0usize;
    while next < a.noise {
        let end = (next + 500).min(a.noise);
        let mut batch = FuturesUnordered::new();
        for i in next..end {
            let (s, o, t) = (&s, options.clone(), a.noise_match.pattern(i));
            batch.push(async move { s.subscribe_with(&t, o).await });
        }
        while let Some(r) = batch.next().await {
            // The subscription stays until the session leaves.
            r.map_err(|e| format!("noise subscribe: {e}"))?;
        }
        next = end;
    }
    Ok(Some(s))
}

/// A subscriber's connection: a library session, or the task of a lean one.
enum SubConn {
    Library(Session),
    Lean(tokio::task::JoinHandle<()>),
}

pub async fn run(a: PubsubArgs) -> Result<i32, String> {
    let c = &a.common;
    let ser: Serializer = c.serializer.into();
    let topic = format!(
        "bench.pubsub.t{}x{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0)
    );
    let sub_ser: Serializer = a.sub_serializer.map(Into::into).unwrap_or(ser);
    let sub_urls = if a.sub_url.is_empty() {
        vec![c.url.clone()]
    } else {
        a.sub_url.clone()
    };
    let sub_url = sub_urls.join(",");
    let expected_total = a.subscribers as u64 * a.publishes;
    let total = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(c.timeout);

    // Subscribers, connected a batch at a time.
    let mut subscribers: Vec<(SubConn, Arc<Mutex<WampSeen>>)> = Vec::with_capacity(a.subscribers);
    let wires = if a.lean_subscribers {
        let mut w = Vec::with_capacity(sub_urls.len());
        for url in &sub_urls {
            w.push(Wire::new(url, &c.realm, sub_ser, std::slice::from_ref(&topic)).await?);
        }
        w
    } else {
        Vec::new()
    };
    let mut remaining = a.subscribers;
    while remaining > 0 {
        let n = remaining.min(50);
        remaining -= n;
        if a.lean_subscribers {
            let mut joins = FuturesUnordered::new();
            for i in 0..n {
                let wire = &wires[(a.subscribers - remaining - n + i) % wires.len()];
                joins.push(wamp_subscriber(wire, total.clone(), a.publishes as usize));
            }
            while let Some(r) = joins.next().await {
                let s = r.map_err(|e| format!("lean subscriber: {e}"))?;
                subscribers.push((SubConn::Lean(s.task), s.seen));
            }
            continue;
        }
        let mut joins = FuturesUnordered::new();
        for i in 0..n {
            let (url, realm, topic, total) = (
                sub_urls[(a.subscribers - remaining - n + i) % sub_urls.len()].clone(),
                c.realm.clone(),
                topic.clone(),
                total.clone(),
            );
            let cap = a.publishes as usize;
            joins.push(async move {
                let s = Session::connect_with(&url, &realm, SessionOptions::new(sub_ser))
                    .await
                    .map_err(|e| format!("subscriber connect: {e}"))?;
                let seen = Arc::new(Mutex::new(WampSeen {
                    publications: Vec::with_capacity(cap),
                    ..WampSeen::default()
                }));
                let seen2 = seen.clone();
                s.subscribe_callback(&topic, Dict::new(), move |ev| {
                    {
                        let mut st = seen2.lock().unwrap_or_else(|e| e.into_inner());
                        st.publications.push(ev.publication);
                        st.last = Some(Instant::now());
                    }
                    total.fetch_add(1, Ordering::Relaxed);
                })
                .await
                .map_err(|e| format!("subscribe: {e}"))?;
                Ok::<_, String>((SubConn::Library(s), seen))
            });
        }
        while let Some(r) = joins.next().await {
            subscribers.push(r?);
        }
    }

    let noise = make_noise(&a, ser).await?;
    let mut publisher = match a.lean_publisher {
        true => {
            let wire = Wire::new(&c.url, &c.realm, ser, &[]).await?;
            Publisher::Lean(LeanPublisher::open(&wire, &topic, c.payload).await?)
        }
        false => Publisher::Library(library_publisher(&a, ser).await?),
    };

    // Publish M events keeping K in flight; remember (sequence, publication).
    let cpu = CpuMeter::start(&c.server_pid);
    let t0 = Instant::now();
    let Published {
        mut acked,
        mut errors,
        mut first_error,
        mut timed_out,
    } = match &mut publisher {
        Publisher::Lean(p) => p.publish_all(a.publishes, a.in_flight, deadline).await,
        Publisher::Library(s) => library_publish(&a, s, ser, &topic, deadline).await,
    };
    let t_published = Instant::now();

    // Wait for the deliveries: all of them, or no progress for drain_timeout.
    let drain = Duration::from_secs_f64(a.drain_timeout);
    if !timed_out {
        timed_out = wait_for_deliveries(&total, expected_total, drain, deadline).await;
    }
    let used = cpu.stop();

    // Check every subscriber's deliveries against the acknowledged publications.
    acked.sort_unstable();
    let seq_of: HashMap<u64, u64> = acked.iter().map(|&(seq, p)| (p, seq)).collect();
    let (mut delivered, mut lost, mut dups, mut unknown, mut misordered) = (0u64, 0u64, 0, 0, 0);
    let mut short_subs = 0usize;
    let mut end = t0;
    for (_, seen) in &subscribers {
        let st = seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = &st.error {
            errors += 1;
            first_error.get_or_insert_with(|| format!("subscriber: {e}"));
        }
        delivered += st.publications.len() as u64;
        if let Some(l) = st.last {
            end = end.max(l);
        }
        let mut got = st.publications.clone();
        got.sort_unstable();
        let before = got.len();
        got.dedup();
        dups += before - got.len();
        let known = got.iter().filter(|p| seq_of.contains_key(p)).count();
        unknown += got.len() - known;
        let missing = acked.len() as u64 - known as u64;
        if missing > 0 {
            short_subs += 1;
        }
        lost += missing;
        misordered += out_of_order(&st.publications, &seq_of);
    }
    // Publishes never acknowledged (errors) cannot be checked; count them as lost.
    let unacked = a.publishes - acked.len() as u64;
    lost += unacked * a.subscribers as u64;

    let wall = end.saturating_duration_since(t0).as_secs_f64().max(1e-9);
    let pub_wall = t_published
        .saturating_duration_since(t0)
        .as_secs_f64()
        .max(1e-9);
    let rate = delivered as f64 / wall;
    let pub_rate = acked.len() as f64 / pub_wall;
    let per_cpu = used
        .server
        .filter(|s| *s > 0.0)
        .map(|s| delivered as f64 / s);

    let mut transport = transport_name(&c.url).to_owned();
    if sub_url != c.url {
        transport = format!("{transport}->{}", transport_name(&sub_urls[0]));
        if sub_urls.len() > 1 {
            transport = format!("{transport}x{}", sub_urls.len());
        }
    }
    let ser_name = if sub_ser == ser {
        ser.name().to_owned()
    } else {
        format!("{ser}->{sub_ser}")
    };
    let mut line = format!(
        "pubsub {transport} {ser_name} 1{}->{}{} payload {}B in-flight {}: {} deliveries in {:.3} s = {} deliveries/s (publishes {}/s); lost {lost}, duplicates {dups}, out of order {misordered}",
        if a.lean_publisher { " (lean)" } else { "" },
        a.subscribers,
        if a.lean_subscribers { " (lean)" } else { "" },
        c.payload,
        a.in_flight,
        group(delivered as f64),
        wall,
        group(rate),
        group(pub_rate),
    );
    if a.noise > 0 {
        line.push_str(&format!(
            "; beside {} non-matching {} subscriptions",
            group(a.noise as f64),
            a.noise_match.name()
        ));
    }
    if let Some(s) = used.server {
        line.push_str(&format!("; server CPU {s:.2} s"));
        if let Some(p) = per_cpu {
            line.push_str(&format!(" = {} deliveries/server-CPU-s", group(p)));
        }
    }
    if let Some(s) = used.client {
        line.push_str(&format!("; bench CPU {s:.2} s"));
    }
    if errors > 0 {
        line.push_str(&format!(
            "; {errors} publish errors (first: {})",
            first_error.as_deref().unwrap_or("")
        ));
    }
    if timed_out {
        line.push_str("; TIMED OUT");
    }
    if short_subs > 0 {
        line.push_str(&format!("; {short_subs} subscribers missed events"));
    }
    println!("{line}");
    if c.json {
        println!(
            "{}",
            json!({
                "bench": "pubsub",
                "url": c.url,
                "transport": transport,
                "serializer": ser_name,
                "subscribers": a.subscribers,
                "lean_subscribers": a.lean_subscribers,
                "lean_publisher": a.lean_publisher,
                "noise": a.noise,
                "noise_match": a.noise_match.name(),
                "publishes": a.publishes,
                "in_flight": a.in_flight,
                "payload": c.payload,
                "expected": expected_total,
                "deliveries": delivered,
                "lost": lost,
                "duplicates": dups,
                "unknown": unknown,
                "out_of_order": misordered,
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

    // Lean subscribers just close their connections.
    let mut sessions = Vec::with_capacity(subscribers.len());
    for (conn, _) in &subscribers {
        match conn {
            SubConn::Library(s) => sessions.push(s),
            SubConn::Lean(task) => task.abort(),
        }
    }
    // The lean publisher just closes its connection.
    let library_publisher = match &publisher {
        Publisher::Library(s) => Some(s),
        Publisher::Lean(_) => None,
    };
    let mut leaves: FuturesUnordered<_> = sessions
        .into_iter()
        .chain(library_publisher)
        .chain(noise.iter())
        .map(|s| tokio::time::timeout(Duration::from_secs(5), s.leave()))
        .collect();
    while leaves.next().await.is_some() {}
    drop(leaves);
    let bad = lost > 0 || dups > 0 || unknown > 0 || misordered > 0 || errors > 0 || timed_out;
    Ok(if bad { 2 } else { 0 })
}

/// The publishing connection: a library session or a lean one.
enum Publisher {
    Library(Session),
    Lean(LeanPublisher),
}

/// Connects the library publisher.
async fn library_publisher(a: &PubsubArgs, ser: Serializer) -> Result<Session, String> {
    // Room in the send queue for every publish in flight, so that a
    // publish queues its frame at its first poll (see `publish` below).
    let mut pub_opts = SessionOptions::new(ser);
    pub_opts.transport.send_queue = pub_opts.transport.send_queue.max(a.in_flight);
    Session::connect_with(&a.common.url, &a.common.realm, pub_opts)
        .await
        .map_err(|e| format!("publisher connect: {e}"))
}

/// Publishes with the library session, keeping `in_flight` unanswered.
async fn library_publish(
    a: &PubsubArgs,
    publisher: &Session,
    ser: Serializer,
    topic: &str,
    deadline: Instant,
) -> Published {
    let payload = raw_payload(ser, &[Value::Str("x".repeat(a.common.payload))]);
    let options = Dict::new().with("acknowledge", true);
    let mut done = Published {
        acked: Vec::with_capacity(a.publishes as usize),
        errors: 0,
        first_error: None,
        timed_out: false,
    };
    let mut next = 0u64;
    let mut inflight = FuturesUnordered::new();
    // The order check below needs the PUBLISHes on the wire in `seq` order.
    // FuturesUnordered polls new futures in push order, and a publish
    // allocates its request id and queues its frame at its first poll when
    // the send queue has room (it always has: `send_queue >= in_flight`).
    // But tokio's cooperative budget can make that first poll return Pending
    // at the send queue's semaphore after the id is taken, and
    // FuturesUnordered then re-queues the future behind later ones: a later
    // `seq` was written first, and the check reported the router's faithful
    // delivery as "out of order" (1 in ~50k publishes at 32 in flight, 0.7%
    // at 256). `unconstrained` keeps the budget out of the publish futures.
    let publish = |seq: u64| {
        let (p, o, s) = (payload.clone(), options.clone(), publisher);
        tokio::task::unconstrained(async move { (seq, s.publish_with(topic, o, p).await) })
    };
    while next < a.publishes && inflight.len() < a.in_flight.max(1) {
        inflight.push(publish(next));
        next += 1;
    }
    loop {
        let item = match tokio::time::timeout_at(deadline.into(), inflight.next()).await {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(_) => {
                done.timed_out = true;
                break;
            }
        };
        match item {
            (seq, Ok(Some(publication))) => done.acked.push((seq, publication)),
            (_, Ok(None)) => {}
            (_, Err(e)) => done.fail(e.to_string()),
        }
        if next < a.publishes {
            inflight.push(publish(next));
            next += 1;
        }
    }
    done
}

/// Events of one publisher must arrive in publish order: counts the
/// deliveries (publication ids, in arrival order) whose publish sequence
/// (`seq_of`, the order the PUBLISHes were written) is not above the
/// Waits until `total` reaches `expected`, or has not moved for `drain`;
/// true if `deadline` passed first.
pub async fn wait_for_deliveries(
    total: &AtomicU64,
    expected: u64,
    drain: Duration,
    deadline: Instant,
) -> bool {
    let mut last_total = total.load(Ordering::Relaxed);
    let mut last_change = Instant::now();
    while last_total < expected {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let now_total = total.load(Ordering::Relaxed);
        if now_total != last_total {
            last_total = now_total;
            last_change = Instant::now();
        } else if last_change.elapsed() > drain {
            return false;
        }
        if Instant::now() > deadline {
            return true;
        }
    }
    false
}

/// highest one delivered before them. Unknown publications are skipped.
fn out_of_order(delivered: &[u64], seq_of: &HashMap<u64, u64>) -> u64 {
    let mut misordered = 0;
    let mut prev: Option<u64> = None;
    for p in delivered {
        if let Some(&seq) = seq_of.get(p) {
            if prev.is_some_and(|pv| seq <= pv) {
                misordered += 1;
            } else {
                prev = Some(seq);
            }
        }
    }
    misordered
}

/// `ws`, `rawsocket` or `unix` from a URL.
pub fn transport_name(url: &str) -> &'static str {
    if url.starts_with("ws://") {
        "websocket"
    } else if url.starts_with("unix:") {
        "rawsocket-unix"
    } else {
        "rawsocket"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Publication ids 1000 + seq (the router's ids are random: unrelated to seq).
    fn seq_of(n: u64) -> HashMap<u64, u64> {
        (0..n)
            .map(|seq| (1000 + (seq * 7919) % 9973, seq))
            .collect()
    }

    fn publication(seq: u64) -> u64 {
        1000 + (seq * 7919) % 9973
    }

    #[test]
    fn in_order_deliveries_pass() {
        let map = seq_of(100);
        let got: Vec<u64> = (0..100).map(publication).collect();
        assert_eq!(out_of_order(&got, &map), 0);
        // A lost event is not a reorder (the loss is counted elsewhere).
        let gap: Vec<u64> = (0..100).filter(|s| s % 10 != 3).map(publication).collect();
        assert_eq!(out_of_order(&gap, &map), 0);
    }

    #[test]
    fn a_swap_is_flagged() {
        let map = seq_of(100);
        let mut got: Vec<u64> = (0..100).map(publication).collect();
        got.swap(40, 41);
        assert_eq!(out_of_order(&got, &map), 1);
        // An event overtaken by several later ones counts once.
        let mut late: Vec<u64> = (0..100).map(publication).collect();
        let e = late.remove(10);
        late.insert(20, e);
        assert_eq!(out_of_order(&late, &map), 1);
        // A duplicate delivery is out of order too.
        let mut dup: Vec<u64> = (0..100).map(publication).collect();
        dup.insert(60, publication(59));
        assert_eq!(out_of_order(&dup, &map), 1);
    }

    #[test]
    fn unknown_publications_are_skipped() {
        let map = seq_of(10);
        let got = vec![publication(0), 5, publication(1), 3, publication(2)];
        assert_eq!(out_of_order(&got, &map), 0);
    }
}
