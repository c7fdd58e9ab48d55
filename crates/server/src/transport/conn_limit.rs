//! `[limits] max_connections_per_address`: open TCP connections per remote
//! IP address, counted across every TCP listener. An IPv4 address counts
//! alone (also when it arrives IPv4-mapped on a dual-stack listener); IPv6
//! addresses count per prefix of `ipv6_prefix_length` bits (default 64):
//! one host usually holds a whole /64 and can connect from 2^64 addresses. A connection holds an
//! [`AddressGuard`] from accept until its socket is dropped; the guard's
//! `Drop` gives the slot back. Unix-socket connections are not counted.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Refusals are logged at most once per this interval (a flood must not
/// fill the disk); the lines in between are counted and reported.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

pub struct AddressLimiter {
    /// 0: unlimited.
    max: usize,
    /// IPv6 addresses are counted by their first this many bits (1..=128).
    v6_prefix: u8,
    counts: Mutex<HashMap<IpAddr, usize>>,
    log: Mutex<LogState>,
}

struct LogState {
    last: Option<Instant>,
    suppressed: u64,
}

/// One counted connection; dropping it frees the slot.
pub struct AddressGuard {
    limiter: Arc<AddressLimiter>,
    ip: IpAddr,
}

impl AddressLimiter {
    /// `v6_prefix`: the prefix length IPv6 addresses are grouped by
    /// (clamped to 1..=128).
    pub fn new(max: usize, v6_prefix: u8) -> Arc<Self> {
        Arc::new(AddressLimiter {
            max,
            v6_prefix: v6_prefix.clamp(1, 128),
            counts: Mutex::new(HashMap::new()),
            log: Mutex::new(LogState {
                last: None,
                suppressed: 0,
            }),
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot for a connection from `ip`, or `None` (logged, rate-limited)
    /// if that address already has `max` connections open.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<AddressGuard> {
        let ip = self.group(ip);
        if self.max > 0 {
            let mut counts = self.counts.lock();
            let n = counts.entry(ip).or_insert(0);
            if *n >= self.max {
                drop(counts);
                self.log_refusal(ip);
                return None;
            }
            *n += 1;
        }
        Some(AddressGuard {
            limiter: self.clone(),
            ip,
        })
    }

    /// What `ip` is counted as: an IPv4 address itself (an IPv4 client of a
    /// dual-stack listener arrives as ::ffff:a.b.c.d), an IPv6 address its
    /// prefix (the remaining bits zero).
    fn group(&self, ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            IpAddr::V4(v4) => IpAddr::V4(v4),
            IpAddr::V6(v6) => {
                let mask = u128::MAX << (128 - u32::from(self.v6_prefix));
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        }
    }

    /// Connections currently open from `ip` (counted only with a limit).
    #[cfg(test)]
    pub fn open(&self, ip: IpAddr) -> usize {
        self.counts
            .lock()
            .get(&self.group(ip))
            .copied()
            .unwrap_or(0)
    }

    fn log_refusal(&self, group: IpAddr) {
        // An IPv6 client is counted with its whole prefix: name it.
        let ip = match group {
            IpAddr::V6(_) if self.v6_prefix < 128 => format!("{group}/{}", self.v6_prefix),
            _ => group.to_string(),
        };
        let mut log = self.log.lock();
        let now = Instant::now();
        if log
            .last
            .is_some_and(|t| now.duration_since(t) < LOG_INTERVAL)
        {
            log.suppressed += 1;
            return;
        }
        let suppressed = std::mem::take(&mut log.suppressed);
        log.last = Some(now);
        drop(log);
        if suppressed > 0 {
            tracing::warn!(
                peer = %ip,
                "connection refused: {ip} already has {} connections open (limits.max_connections_per_address); {suppressed} more refusals since the last such line were not logged",
                self.max
            );
        } else {
            tracing::warn!(
                peer = %ip,
                "connection refused: {ip} already has {} connections open (limits.max_connections_per_address)",
                self.max
            );
        }
    }
}

impl Drop for AddressGuard {
    fn drop(&mut self) {
        if self.limiter.max == 0 {
            return;
        }
        let mut counts = self.limiter.counts.lock();
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// A stream that holds its connection's [`AddressGuard`], so the slot is
/// freed exactly when the socket is dropped, wherever that happens (hyper
/// hands an upgraded WebSocket's stream to another task).
pub struct Guarded<S> {
    inner: S,
    _guard: Option<AddressGuard>,
}

impl<S> Guarded<S> {
    pub fn new(inner: S, guard: Option<AddressGuard>) -> Self {
        Guarded {
            inner,
            _guard: guard,
        }
    }

    /// The stream and its guard, apart (the guard must then live as long
    /// as the stream's halves).
    pub fn into_parts(self) -> (S, Option<AddressGuard>) {
        (self.inner, self._guard)
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Guarded<S> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Guarded<S> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_address_and_frees_on_drop() {
        let l = AddressLimiter::new(2, 64);
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let g1 = l.acquire(a).expect("first");
        let g2 = l.acquire(a).expect("second");
        assert!(l.acquire(a).is_none(), "third from the same address");
        let _gb = l.acquire(b).expect("another address");
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert!(
            l.acquire(mapped).is_none(),
            "IPv4-mapped is the same address"
        );
        assert_eq!(l.open(a), 2);
        drop(g1);
        assert_eq!(l.open(a), 1);
        let _g3 = l.acquire(a).expect("a slot was freed");
        drop(g2);
        assert_eq!(l.open(a), 1);
        assert!(l.acquire(a).is_some());
    }

    /// An IPv6 host holds a /64: connections from many of its addresses
    /// are one address for the limit.
    #[test]
    fn ipv6_addresses_count_per_prefix() {
        let l = AddressLimiter::new(3, 64);
        let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
        let spray: Vec<_> = (1..=3)
            .map(|i| {
                l.acquire(ip(&format!("2001:db8:1:2:{i:x}:{i:x}::{i:x}")))
                    .expect("within the limit")
            })
            .collect();
        assert!(
            l.acquire(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")).is_none(),
            "a fourth address of the same /64"
        );
        assert_eq!(l.open(ip("2001:db8:1:2::")), 3);
        let _other = l.acquire(ip("2001:db8:1:3::1")).expect("another /64");
        drop(spray);
        assert_eq!(l.open(ip("2001:db8:1:2::")), 0);
        // 128: every address alone; IPv4 (also mapped) is never grouped.
        let l = AddressLimiter::new(1, 128);
        let _a = l.acquire(ip("2001:db8::1")).expect("first");
        let _b = l.acquire(ip("2001:db8::2")).expect("another address");
        let l = AddressLimiter::new(1, 64);
        let _c = l.acquire(ip("10.0.0.1")).expect("first");
        let _d = l
            .acquire(ip("10.0.0.2"))
            .expect("IPv4 is counted per address");
        assert!(l.acquire(ip("::ffff:10.0.0.2")).is_none());
    }

    #[test]
    fn zero_means_unlimited() {
        let l = AddressLimiter::new(0, 64);
        let a: IpAddr = "::1".parse().expect("ip");
        let guards: Vec<_> = (0..1000)
            .map(|_| l.acquire(a).expect("unlimited"))
            .collect();
        assert_eq!(guards.len(), 1000);
        assert!(l.counts.lock().is_empty());
    }
}
