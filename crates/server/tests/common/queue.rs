//! Reading a queue's figures through `switchyard.queue.stats`, for the
//! queue tests (one copy instead of one per test file).

use switchyard_client::{Dict, Session, Value};

/// The `switchyard.queue.stats` keyword result of `queue`.
pub async fn stats(s: &Session, queue: &str) -> Dict {
    s.call(
        "switchyard.queue.stats",
        vec![Value::from(queue)],
        Dict::new(),
    )
    .await
    .expect("stats")
    .1
}

/// The unsigned integer `k` of `d`; panics (naming it) otherwise.
pub fn uint(d: &Dict, k: &str) -> u64 {
    match d.get(k) {
        Some(Value::UInt(n)) => *n,
        other => panic!("{k}: {other:?} in {d:?}"),
    }
}
