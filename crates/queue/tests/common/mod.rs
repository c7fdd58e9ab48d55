//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::Path;

use switchyard_queue::{
    Clock, Dispatch, Lease, NewJob, Options, Payload, QueueConfig, Queues, Target, Wait,
};

/// A fixed start time (2027-01-15), so tests never depend on the wall clock.
pub const T0: u64 = 1_800_000_000_000;

pub fn clock() -> Clock {
    Clock::manual(T0)
}

pub fn cfg(name: &str) -> QueueConfig {
    let mut c = QueueConfig::new(name);
    c.target = Some(Target::procedure("com.example.work"));
    c
}

pub fn job(tag: &str) -> NewJob {
    NewJob::new(Payload::json(format!("{{\"tag\":\"{tag}\"}}")))
}

pub fn tag(l: &Lease) -> String {
    let v: serde_json::Value = serde_json::from_slice(&l.payload.bytes).unwrap();
    v["tag"].as_str().unwrap().to_owned()
}

pub fn open(dir: &Path, clock: &Clock, configs: Vec<QueueConfig>) -> Queues {
    Queues::open_with(
        dir.join("queues.redb"),
        configs,
        Options {
            clock: clock.clone(),
            ..Options::default()
        },
    )
    .unwrap()
}

pub fn try_lease(q: &Queues, queue: &str) -> Result<Lease, Wait> {
    match q.next_ready(queue).unwrap() {
        Dispatch::Lease(l) => Ok(l),
        Dispatch::Wait(w) => Err(w),
    }
}

pub fn lease(q: &Queues, queue: &str) -> Lease {
    match try_lease(q, queue) {
        Ok(l) => l,
        Err(w) => panic!("expected a job in `{queue}`, got {w:?}"),
    }
}
