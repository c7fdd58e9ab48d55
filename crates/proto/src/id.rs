//! WAMP ids: integers in [1, 2^53].

use std::sync::atomic::{AtomicU64, Ordering};

/// The largest id (2^53).
pub const MAX_ID: u64 = 1 << 53;

/// A global-scope id (session, publication): uniformly random in [1, 2^53].
pub fn random_id() -> u64 {
    rand::random_range(1..=MAX_ID)
}

/// A session-scope request id sequence: 1, 2, 3, ... wrapping to 1 after 2^53.
#[derive(Debug, Default)]
pub struct IdSequence(AtomicU64);

impl IdSequence {
    pub fn new() -> Self {
        IdSequence(AtomicU64::new(0))
    }

    /// The last id handed out (0 if none).
    pub fn current(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    pub fn next(&self) -> u64 {
        let prev = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(if v >= MAX_ID { 1 } else { v + 1 })
            })
            .unwrap_or(0);
        if prev >= MAX_ID {
            1
        } else {
            prev + 1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_are_in_range() {
        for _ in 0..10_000 {
            let id = random_id();
            assert!((1..=MAX_ID).contains(&id));
        }
    }

    #[test]
    fn sequence_starts_at_one_and_wraps() {
        let s = IdSequence::new();
        assert_eq!(s.next(), 1);
        assert_eq!(s.next(), 2);
        let s = IdSequence(AtomicU64::new(MAX_ID - 1));
        assert_eq!(s.next(), MAX_ID);
        assert_eq!(s.next(), 1);
    }
}
