//! A healthy session's round trip, measured while a test attacks the
//! router: acknowledged PUBLISHes on a topic nobody listens to.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use switchyard_proto::{Dict, Message, Serializer, Value};

use super::{args, Raw, Router};

/// One acknowledged PUBLISH on a topic nobody listens to: the time to its
/// PUBLISHED.
pub fn round_trip(c: &mut Raw) -> Duration {
    let request = c.req();
    let start = Instant::now();
    c.send(&Message::Publish {
        request,
        options: Dict::new().with("acknowledge", true),
        topic: "com.health.ping".into(),
        payload: args(vec![Value::from("ping")]),
    });
    loop {
        match c.expect("PUBLISHED") {
            Message::Published { request: r, .. } if r == request => return start.elapsed(),
            _ => continue,
        }
    }
}

/// A healthy session doing acknowledged PUBLISHes every 20 ms on its own
/// thread; `finish` returns the slowest round trip.
pub struct Health {
    done: Arc<AtomicBool>,
    handle: thread::JoinHandle<Vec<Duration>>,
}

impl Health {
    pub fn start(r: &Router) -> Health {
        let mut c = Raw::connect(r.rs_port, Serializer::Json);
        c.join("realm1");
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let handle = thread::spawn(move || {
            let mut samples = Vec::new();
            while !d.load(Ordering::Relaxed) {
                samples.push(round_trip(&mut c));
                thread::sleep(Duration::from_millis(20));
            }
            samples
        });
        Health { done, handle }
    }

    /// The slowest round trip (the median and the count are printed).
    pub fn finish(self) -> Duration {
        self.done.store(true, Ordering::Relaxed);
        let mut samples = self.handle.join().expect("healthy session");
        samples.sort();
        let median = samples.get(samples.len() / 2).copied().unwrap_or_default();
        let worst = samples.last().copied().unwrap_or_default();
        eprintln!(
            "healthy session: {} round trips during the attack, median {median:?}, worst {worst:?}",
            samples.len()
        );
        worst
    }
}
