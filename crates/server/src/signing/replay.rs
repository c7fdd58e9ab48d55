//! Replay protection of the bridge: each accepted signature is remembered
//! until its timestamp leaves the window, so the same signed request (or
//! any request with the same signature, e.g. digits moved between `seq` and
//! `nonce`) is accepted once.
//!
//! Memory is bounded: at most `capacity` signatures, evicted by time only.
//! A full cache refuses new signed requests (503) rather than forgetting a
//! signature that could still be replayed; only requests with a valid
//! signature take a place, so only holders of a key can fill it, and each
//! signing key has its own cache (`bridge::SigningKey`), so a key that
//! floods fills only its own.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::schemes::Mac32;

/// Why a signature was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Seen before, inside its window.
    Replayed,
    /// `capacity` signatures are remembered and none has expired yet; the
    /// oldest expires after the duration.
    Full(Duration),
}

#[derive(Default)]
struct Inner {
    /// Signature → when it may be forgotten.
    expiry: HashMap<Mac32, Instant>,
    /// The same, ordered by expiry (for eviction).
    by_time: BTreeSet<(Instant, Mac32)>,
}

pub struct ReplayCache {
    inner: Mutex<Inner>,
    capacity: usize,
}

impl ReplayCache {
    pub fn new(capacity: usize) -> ReplayCache {
        ReplayCache {
            inner: Mutex::new(Inner::default()),
            capacity,
        }
    }

    /// Records `mac`, to be remembered for `remember`; refused when it was
    /// seen before (and not yet expired) or the cache is full.
    pub fn first_use(&self, mac: Mac32, remember: Duration) -> Result<(), Refused> {
        self.first_use_at(mac, remember, Instant::now())
    }

    fn first_use_at(&self, mac: Mac32, remember: Duration, now: Instant) -> Result<(), Refused> {
        let mut inner = self.inner.lock();
        let Inner { expiry, by_time } = &mut *inner;
        while let Some(&(at, old)) = by_time.first() {
            if at > now {
                break;
            }
            by_time.pop_first();
            expiry.remove(&old);
        }
        if expiry.contains_key(&mac) {
            return Err(Refused::Replayed);
        }
        if expiry.len() >= self.capacity {
            let wait = by_time
                .first()
                .map(|(at, _)| at.saturating_duration_since(now))
                .unwrap_or_default();
            return Err(Refused::Full(wait));
        }
        let until = now + remember;
        expiry.insert(mac, until);
        by_time.insert((until, mac));
        Ok(())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().expiry.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_accepted_once_until_it_expires() {
        let c = ReplayCache::new(10);
        let t0 = Instant::now();
        let w = Duration::from_secs(300);
        assert_eq!(c.first_use_at([1; 32], w, t0), Ok(()));
        assert_eq!(c.first_use_at([1; 32], w, t0), Err(Refused::Replayed));
        assert_eq!(c.first_use_at([2; 32], w, t0), Ok(()));
        // After its window it is forgotten (its timestamp would be refused).
        assert_eq!(c.first_use_at([1; 32], w, t0 + w), Ok(()));
    }

    #[test]
    fn a_full_cache_refuses_and_evicts_by_time_only() {
        let c = ReplayCache::new(2);
        let t0 = Instant::now();
        let s = Duration::from_secs(10);
        assert_eq!(c.first_use_at([1; 32], s, t0), Ok(()));
        assert_eq!(c.first_use_at([2; 32], s * 2, t0), Ok(()));
        assert_eq!(c.first_use_at([3; 32], s, t0), Err(Refused::Full(s)));
        // Still remembered while full.
        assert_eq!(c.first_use_at([1; 32], s, t0), Err(Refused::Replayed));
        assert_eq!(c.first_use_at([3; 32], s, t0 + s), Ok(()));
        assert_eq!(c.len(), 2);
    }
}
