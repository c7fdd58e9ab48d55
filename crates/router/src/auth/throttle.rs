//! The failed-login throttle of a realm.
//!
//! An attempt is counted when it starts (at HELLO, before the CHALLENGE),
//! so attempts still in flight count against the budget, and it is taken
//! back when the login succeeds. Counts are kept per address, per address
//! and authid, and per authid:
//!
//! - per address + authid: `max_failures` attempts, then each further one
//!   must wait a delay that doubles from 1 s up to `failure_window`;
//! - per address (every authid): `max_failures_per_address`, then the same;
//! - per authid from every address: never refused (that would let anyone
//!   lock any user out), but beyond `max_failures_per_authid` the verdict
//!   is delayed (up to 2 s), which slows a distributed guesser down.
//!
//! An entry is forgotten `failure_window` after its last attempt's delay
//! ran out. The table holds at most `failure_table_size` entries; when full,
//! expired entries go first, then the oldest tenth.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::AuthConfig;

/// The longest verdict delay for an authid under a distributed attack.
const MAX_AUTHID_DELAY: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Address(IpAddr),
    AddressAuthid(IpAddr, Box<str>),
    Authid(Box<str>),
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Attempts counted (started and not succeeded).
    attempts: u32,
    last: Instant,
    /// `last` before the latest attempt, restored if that one is taken back.
    prev: Instant,
}

/// Why an attempt is refused: what is throttled, and for how long.
#[derive(Debug)]
pub struct Refusal {
    pub what: &'static str,
    pub left: Duration,
}

pub struct Throttle {
    max_failures: u32,
    per_address: u32,
    per_authid: u32,
    window: Duration,
    table_size: usize,
    entries: Mutex<HashMap<Key, Entry>>,
}

/// The delay before the next attempt after `over` attempts beyond the
/// free ones: 1 s, 2 s, 4 s, ... up to `cap`.
fn backoff(over: u32, cap: Duration) -> Duration {
    Duration::from_secs(1u64 << over.min(20)).min(cap)
}

impl Throttle {
    pub fn new(config: &AuthConfig) -> Self {
        Throttle {
            max_failures: config.max_failures,
            per_address: config.max_failures_per_address,
            per_authid: config.max_failures_per_authid,
            window: config.failure_window,
            table_size: config.failure_table_size.max(16),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn enabled(&self) -> bool {
        self.max_failures > 0
    }

    fn keys(ip: Option<IpAddr>, authid: Option<&str>) -> Vec<(Key, u32)> {
        Vec::new()
            .into_iter()
            .chain(ip.map(|ip| (Key::Address(ip), 0)))
            .chain(
                ip.zip(authid)
                    .map(|(ip, a)| (Key::AddressAuthid(ip, a.into()), 1)),
            )
            .chain(authid.map(|a| (Key::Authid(a.into()), 2)))
            .collect()
    }

    /// The free attempts of a key kind (0: address, 1: address+authid,
    /// 2: authid).
    fn free(&self, kind: u32) -> u32 {
        match kind {
            0 => self.per_address,
            1 => self.max_failures,
            _ => self.per_authid,
        }
    }

    /// How long after its last attempt an entry with `attempts` must wait.
    fn delay(&self, attempts: u32, free: u32) -> Duration {
        if free == 0 || attempts < free {
            Duration::ZERO
        } else {
            backoff(attempts - free, self.window)
        }
    }

    /// Starts a login attempt from `ip` for `authid`: refused if the
    /// address, or the address with this authid, must still wait; else
    /// counted, and the delay to apply before its verdict (an authid under
    /// attack from many addresses) is returned.
    pub fn start(&self, ip: Option<IpAddr>, authid: Option<&str>) -> Result<Duration, Refusal> {
        if !self.enabled() {
            return Ok(Duration::ZERO);
        }
        let now = Instant::now();
        let keys = Self::keys(ip, authid);
        let mut entries = self.entries.lock();
        for (key, kind) in &keys {
            if *kind == 2 {
                continue;
            }
            if let Some(e) = entries
                .get(key)
                .filter(|e| !self.expired(e, self.free(*kind), now))
            {
                let wait = self.delay(e.attempts, self.free(*kind));
                let since = now.duration_since(e.last);
                if since < wait {
                    return Err(Refusal {
                        what: if *kind == 0 {
                            "address"
                        } else {
                            "address and authid"
                        },
                        left: wait - since,
                    });
                }
            }
        }
        if entries.len() + keys.len() > self.table_size {
            self.make_room(&mut entries, now);
        }
        let mut tarpit = Duration::ZERO;
        for (key, kind) in keys {
            let free = self.free(kind);
            let e = entries.entry(key).or_insert(Entry {
                attempts: 0,
                last: now,
                prev: now,
            });
            if self.expired(e, free, now) {
                e.attempts = 0;
            }
            e.attempts = e.attempts.saturating_add(1);
            e.prev = e.last;
            e.last = now;
            if kind == 2 && free > 0 && e.attempts > free {
                tarpit = (Duration::from_millis(10) * (1u32 << (e.attempts - free).min(8)))
                    .min(MAX_AUTHID_DELAY);
            }
        }
        Ok(tarpit)
    }

    /// A login that started with [`Throttle::start`] succeeded: its attempt
    /// is taken back, and the address's record for this authid forgotten.
    pub fn succeeded(&self, ip: Option<IpAddr>, authid: Option<&str>) {
        self.give_back(ip, authid, true);
    }

    /// A login that started but was never checked (the router was busy):
    /// its attempt is taken back.
    pub fn not_checked(&self, ip: Option<IpAddr>, authid: Option<&str>) {
        self.give_back(ip, authid, false);
    }

    fn give_back(&self, ip: Option<IpAddr>, authid: Option<&str>, success: bool) {
        if !self.enabled() {
            return;
        }
        let mut entries = self.entries.lock();
        for (key, kind) in Self::keys(ip, authid) {
            if kind == 1 && success {
                entries.remove(&key);
            } else if let Some(e) = entries.get_mut(&key) {
                e.attempts = e.attempts.saturating_sub(1);
                e.last = e.prev;
                if e.attempts == 0 {
                    entries.remove(&key);
                }
            }
        }
    }

    fn expired(&self, e: &Entry, free: u32, now: Instant) -> bool {
        now.duration_since(e.last) >= self.delay(e.attempts, free) + self.window
    }

    /// Drops expired entries; if that is not enough, the oldest tenth.
    fn make_room(&self, entries: &mut HashMap<Key, Entry>, now: Instant) {
        entries.retain(|k, e| {
            let kind = match k {
                Key::Address(_) => 0,
                Key::AddressAuthid(..) => 1,
                Key::Authid(_) => 2,
            };
            !self.expired(e, self.free(kind), now)
        });
        if entries.len() + 3 > self.table_size {
            let mut by_age: Vec<(Instant, Key)> =
                entries.iter().map(|(k, e)| (e.last, k.clone())).collect();
            by_age.sort_unstable_by_key(|(at, _)| *at);
            let drop = (self.table_size / 10).max(3);
            for (_, k) in by_age.into_iter().take(drop) {
                entries.remove(&k);
            }
            tracing::warn!(
                size = self.table_size,
                "failed-login table full: forgot the oldest {drop} entries"
            );
        }
    }

    /// Entries held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(max: u32) -> Throttle {
        let config = AuthConfig {
            max_failures: max,
            max_failures_per_address: 4 * max,
            max_failures_per_authid: 10 * max,
            failure_table_size: 100,
            ..AuthConfig::default()
        };
        Throttle::new(&config)
    }

    #[test]
    fn attempts_count_when_they_start_and_successes_give_them_back() {
        let t = throttle(3);
        let ip: IpAddr = [127, 0, 0, 2].into();
        for _ in 0..3 {
            t.start(Some(ip), Some("alice")).expect("free attempt");
        }
        let refused = t.start(Some(ip), Some("alice")).expect_err("4th waits");
        assert_eq!(refused.what, "address and authid");
        assert!(refused.left <= Duration::from_secs(1));
        // Another address is not affected.
        let other: IpAddr = [127, 0, 0, 1].into();
        t.start(Some(other), Some("alice")).expect("other address");
        t.succeeded(Some(other), Some("alice"));
        // A success from the first address forgets its record for alice.
        t.succeeded(Some(ip), Some("alice"));
        t.start(Some(ip), Some("alice")).expect("after a success");
    }

    #[test]
    fn the_table_is_bounded() {
        let t = throttle(3);
        for i in 0..1000u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            let _ = t.start(Some(ip), Some(&format!("user{i}")));
        }
        assert!(t.len() <= 100, "{}", t.len());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let cap = Duration::from_secs(60);
        assert_eq!(backoff(0, cap), Duration::from_secs(1));
        assert_eq!(backoff(3, cap), Duration::from_secs(8));
        assert_eq!(backoff(10, cap), cap);
        assert_eq!(backoff(u32::MAX, cap), cap);
    }
}
