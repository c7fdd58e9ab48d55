//! A subscriber that stops reading its socket while a publisher keeps
//! publishing: shows what the router does with a slow consumer (it should
//! drop that session per its slow-consumer policy and keep serving the
//! others) and checks that a healthy subscriber still gets every event.
//!
//! ```text
//! cargo run --release -p switchyard-client --example stalled_subscriber -- rs://127.0.0.1:8081 200000
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use switchyard_client::transport::{connect, TransportOptions};
use switchyard_client::{raw_payload, Dict, Message, Serializer, Session, Value};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "rs://127.0.0.1:8081".to_owned());
    let count: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(200_000);
    let ser = Serializer::MsgPack;
    let topic = "example.stalled";
    if let Err(e) = run(&url, count, ser, topic).await {
        eprintln!("FAILED: {e}");
        std::process::exit(1);
    }
}

async fn run(url: &str, count: u64, ser: Serializer, topic: &str) -> Result<(), String> {
    // The stalled subscriber: joins and subscribes by hand, then never reads again.
    let mut stalled = connect(url, TransportOptions::new(ser))
        .await
        .map_err(|e| e.to_string())?;
    let send = |m: Message| -> Result<(), String> {
        let b = m.encode(ser).map_err(|e| e.to_string())?;
        stalled.sender.send(b).map_err(|e| e.to_string())
    };
    send(Message::Hello {
        realm: "realm1".into(),
        details: Dict::new().with("roles", Dict::new().with("subscriber", Dict::new())),
    })?;
    let welcome = stalled.receiver.recv().await.map_err(|e| e.to_string())?;
    println!("stalled subscriber joined ({} byte WELCOME)", welcome.len());
    send(Message::Subscribe {
        request: 1,
        options: Dict::new(),
        topic: topic.into(),
    })?;
    let _subscribed = stalled.receiver.recv().await.map_err(|e| e.to_string())?;

    // A healthy subscriber and the publisher.
    let healthy = Session::connect(url, "realm1", ser)
        .await
        .map_err(|e| e.to_string())?;
    let got = Arc::new(AtomicU64::new(0));
    let g = got.clone();
    healthy
        .subscribe_callback(topic, Dict::new(), move |_| {
            g.fetch_add(1, Ordering::Relaxed);
        })
        .await
        .map_err(|e| e.to_string())?;
    let publisher = Session::connect(url, "realm1", ser)
        .await
        .map_err(|e| e.to_string())?;
    let payload = raw_payload(ser, &[Value::Str("x".repeat(1024))]);
    let opts = Dict::new().with("acknowledge", true);
    let t0 = Instant::now();
    let mut errors = 0u64;
    // 32 acknowledged publishes in flight.
    let mut inflight = FuturesUnordered::new();
    let publish = || publisher.publish_with(topic, opts.clone(), payload.clone());
    let mut sent = 0u64;
    while sent < count.min(32) {
        inflight.push(publish());
        sent += 1;
    }
    while let Some(r) = inflight.next().await {
        if r.is_err() {
            errors += 1;
        }
        if sent < count {
            inflight.push(publish());
            sent += 1;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.load(Ordering::Relaxed) < count && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "published {count} x 1 KiB in {:.2} s ({errors} errors); healthy subscriber got {}",
        t0.elapsed().as_secs_f64(),
        got.load(Ordering::Relaxed)
    );
    // Now read what the stalled connection has: events, then the router's verdict.
    let mut events = 0u64;
    let verdict = loop {
        match tokio::time::timeout(Duration::from_secs(5), stalled.receiver.recv()).await {
            Ok(Ok(frame)) => match Message::decode(ser, &frame) {
                Ok(Message::Event { .. }) => events += 1,
                Ok(other) => break format!("{other:?}"),
                Err(e) => break format!("undecodable frame: {e}"),
            },
            Ok(Err(e)) => break format!("transport: {e}"),
            Err(_) => break "nothing more within 5 s (still connected)".to_owned(),
        }
    };
    println!("stalled subscriber: {events} events buffered, then: {verdict}");
    if got.load(Ordering::Relaxed) != count {
        return Err("the healthy subscriber missed events".into());
    }
    Ok(())
}
