//! PubSub over RawSocket for the cluster tests: sessions, subscriptions,
//! publications numbered in their first argument, and readers that
//! collect them in a thread while other nodes fail.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use switchyard_proto::{Dict, Message, Serializer, Value};

use super::{args, args_of, Raw, Router};

/// A JSON session on `node`'s realm1: (the client, its session id).
pub fn client(node: &Router) -> (Raw, u64) {
    let mut c = Raw::connect(node.rs_port, Serializer::Json);
    let (id, _) = c.join("realm1");
    (c, id)
}

/// Subscribes `c` with `options`; the subscription id.
pub fn subscribe_with(c: &mut Raw, topic: &str, options: Dict) -> u64 {
    let request = c.req();
    c.send(&Message::Subscribe {
        request,
        options,
        topic: topic.into(),
    });
    match c.expect("SUBSCRIBED") {
        Message::Subscribed { subscription, .. } => subscription,
        other => panic!("expected SUBSCRIBED, got {other:?}"),
    }
}

/// Publishes `values` on `topic` (no acknowledgement).
pub fn publish(c: &mut Raw, topic: &str, options: Dict, values: Vec<Value>) {
    let request = c.req();
    c.send(&Message::Publish {
        request,
        options,
        topic: topic.into(),
        payload: args(values),
    });
}

/// Every EVENT `c` receives until it is quiet for `quiet`: (details, its
/// arguments as numbers; u64::MAX for anything else).
pub fn events(c: &mut Raw, quiet: Duration) -> Vec<(Dict, Vec<u64>)> {
    c.stream.set_read_timeout(Some(quiet)).expect("timeout");
    let mut out = Vec::new();
    while let Some(m) = c.recv() {
        if let Message::Event {
            details, payload, ..
        } = m
        {
            let numbers = args_of(&payload)
                .iter()
                .map(|v| v.as_u64().unwrap_or(u64::MAX))
                .collect();
            out.push((details, numbers));
        }
    }
    c.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    out
}

/// Calls `procedure` and returns its RESULT's arguments (panics on ERROR).
pub fn call(c: &mut Raw, procedure: &str, values: Vec<Value>, kwargs: Option<Dict>) -> Vec<Value> {
    let request = c.req();
    c.send(&Message::Call {
        request,
        options: Dict::new(),
        procedure: procedure.into(),
        payload: switchyard_proto::Payload::values(values, kwargs),
    });
    loop {
        match c.expect("RESULT") {
            Message::Result {
                request: r,
                payload,
                ..
            } if r == request => return args_of(&payload),
            Message::Event { .. } => continue,
            other => panic!("expected RESULT of {procedure}, got {other:?}"),
        }
    }
}

/// Events of numbered publishers as a subscriber got them: per publisher
/// (the first argument), its numbers (the second) in arrival order.
pub type Received = std::collections::BTreeMap<u64, Vec<u64>>;

/// Reads EVENTs `[publisher, n]` on `c` in a thread until `stop` is set
/// and `c` has been quiet for 300 ms (or its connection ends).
pub fn collect(c: Raw, stop: Arc<AtomicBool>) -> JoinHandle<Received> {
    collect_counting(c, stop, Arc::default())
}

/// [`collect`], and `count` follows how many events it has received.
pub fn collect_counting(
    mut c: Raw,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
) -> JoinHandle<Received> {
    std::thread::spawn(move || {
        c.stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let mut got = Received::new();
        loop {
            match c.recv() {
                Some(Message::Event { payload, .. }) => {
                    let a = args_of(&payload);
                    if let (Some(p), Some(n)) = (
                        a.first().and_then(Value::as_u64),
                        a.get(1).and_then(Value::as_u64),
                    ) {
                        got.entry(p).or_default().push(n);
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                }
                Some(_) => {}
                None if stop.load(Ordering::SeqCst) => return got,
                // Quiet, or the connection ended (its node died).
                None => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    })
}

/// Publishes `[id, 0]`, `[id, 1]`, ... on `topic` from `c` in a thread,
/// one every `pace`, until `stop` is set (or the connection fails);
/// `count` follows how many it sent. Returns how many it sent.
pub fn publish_until(
    mut c: Raw,
    id: u64,
    topic: &'static str,
    pace: Duration,
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let request = c.req();
            let frame = Message::Publish {
                request,
                options: Dict::new(),
                topic: topic.into(),
                payload: args(vec![Value::UInt(id), Value::UInt(n)]),
            }
            .encode(c.ser)
            .expect("encode");
            let mut framed = vec![0u8, 0, 0, 0];
            let len = frame.len();
            framed[1] = (len >> 16) as u8;
            framed[2] = (len >> 8) as u8;
            framed[3] = len as u8;
            framed.extend_from_slice(&frame);
            if std::io::Write::write_all(&mut c.stream, &framed).is_err() {
                break;
            }
            n += 1;
            count.store(n, Ordering::SeqCst);
            std::thread::sleep(pace);
        }
        n
    })
}

/// Publishes numbered markers `[id, base + i]` on `topic` from `publisher`
/// until every one of `subscribers` has received one (10 s at most), then
/// drains them: the path from the publisher to each is live (with a NATS
/// cluster, a subscription reaches the other NATS servers by their
/// routes a moment after SUBSCRIBED).
pub fn warm_up(publisher: &mut Raw, id: u64, topic: &str, subscribers: &mut [&mut Raw]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut warm = vec![false; subscribers.len()];
    let mut i = 0u64;
    while warm.iter().any(|w| !w) {
        assert!(Instant::now() < deadline, "no event reached {warm:?}");
        publish(
            publisher,
            topic,
            Dict::new(),
            vec![Value::UInt(id), Value::UInt(1_000_000 + i)],
        );
        i += 1;
        for (s, w) in subscribers.iter_mut().zip(warm.iter_mut()) {
            if !*w && !events(s, Duration::from_millis(100)).is_empty() {
                *w = true;
            }
        }
    }
    for s in subscribers.iter_mut() {
        events(s, Duration::from_millis(300));
    }
}

/// `got` holds `0..n` for publisher `p`, once each, in order.
pub fn assert_all(got: &Received, p: u64, n: u64, who: &str) {
    let have = got.get(&p).cloned().unwrap_or_default();
    let want: Vec<u64> = (0..n).collect();
    if have != want {
        let dups = have.len() - {
            let mut d = have.clone();
            d.sort_unstable();
            d.dedup();
            d.len()
        };
        panic!(
            "{who}: publisher {p}: {} events of {n} ({dups} duplicates), first gap at {:?}",
            have.len(),
            want.iter().zip(&have).position(|(a, b)| a != b)
        );
    }
}

/// `got`'s events of publisher `p` are strictly increasing (in order, no
/// duplicates); how many there are.
pub fn assert_increasing(got: &Received, p: u64, who: &str) -> usize {
    let have = got.get(&p).cloned().unwrap_or_default();
    for w in have.windows(2) {
        assert!(
            w[0] < w[1],
            "{who}: publisher {p}: {} then {} (out of order or twice)",
            w[0],
            w[1]
        );
    }
    have.len()
}
