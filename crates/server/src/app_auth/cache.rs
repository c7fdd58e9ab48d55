//! The cache of the app's authorizer answers: bounded in entries (the
//! oldest go first) and in time (each answer is reused for `cache_ttl`).
//! Keyed by the whole question (session, authid, role, action, URI, match
//! policy), so another session, or the same one under another role, asks
//! again.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use switchyard_proto::Value;

pub(super) type Key = (u64, String, String, String, String, String);

pub(super) struct AnswerCache {
    inner: Mutex<Inner>,
    ttl: Duration,
    capacity: usize,
}

#[derive(Default)]
struct Inner {
    answers: HashMap<Key, (Value, Instant)>,
    /// Insertion order, for eviction (a key may appear more than once
    /// when it was stored again; only its last entry counts).
    order: VecDeque<(Key, Instant)>,
}

impl AnswerCache {
    pub(super) fn new(ttl: Duration, capacity: usize) -> AnswerCache {
        AnswerCache {
            inner: Mutex::default(),
            ttl,
            capacity,
        }
    }

    pub(super) fn get(&self, key: &Key) -> Option<Value> {
        let inner = self.inner.lock();
        inner
            .answers
            .get(key)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(v, _)| v.clone())
    }

    pub(super) fn put(&self, key: Key, answer: Value) {
        if self.ttl.is_zero() || self.capacity == 0 {
            return;
        }
        let now = Instant::now();
        let until = now + self.ttl;
        let mut inner = self.inner.lock();
        let Inner { answers, order } = &mut *inner;
        // Expired and replaced entries first, then the oldest while full.
        while let Some((k, at)) = order.front().cloned() {
            let live = answers.get(&k).is_some_and(|(_, u)| *u == at);
            if live && at > now && answers.len() < self.capacity {
                break;
            }
            order.pop_front();
            if live {
                answers.remove(&k);
            }
        }
        answers.insert(key.clone(), (answer, until));
        order.push_back((key, until));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().answers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u64) -> Key {
        (
            n,
            "a".into(),
            "r".into(),
            "call".into(),
            "u".into(),
            "exact".into(),
        )
    }

    #[test]
    fn bounded_in_entries_and_time() {
        let c = AnswerCache::new(Duration::from_secs(60), 2);
        c.put(key(1), Value::Bool(true));
        c.put(key(2), Value::Bool(false));
        c.put(key(3), Value::Bool(true));
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(&key(1)), None);
        assert_eq!(c.get(&key(3)), Some(Value::Bool(true)));
        let short = AnswerCache::new(Duration::from_millis(1), 10);
        short.put(key(1), Value::Bool(true));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(short.get(&key(1)), None);
        let off = AnswerCache::new(Duration::ZERO, 10);
        off.put(key(1), Value::Bool(true));
        assert_eq!(off.get(&key(1)), None);
    }
}
