//! What the router process holds, read from /proc: resident memory (VmRSS)
//! now and at its peak during an attack, for the denial-of-service tests.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::Router;

/// The router's process id.
pub fn pid(r: &Router) -> u32 {
    r.child.as_ref().expect("running").id()
}

/// The resident set of process `pid` in KiB (VmRSS; 0 once it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The router's resident memory, in MiB.
pub fn rss_mb(r: &Router) -> f64 {
    rss_kib(pid(r)) as f64 / 1024.0
}

/// Samples the router's RSS every 10 ms until dropped; `peak()` is the
/// highest value seen, in MiB.
pub struct PeakRss {
    stop: Arc<AtomicBool>,
    peak_kb: Arc<AtomicU64>,
    handle: Option<thread::JoinHandle<()>>,
}

impl PeakRss {
    pub fn start(r: &Router) -> PeakRss {
        let pid = pid(r);
        let stop = Arc::new(AtomicBool::new(false));
        let peak_kb = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak_kb.clone());
        let handle = thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_kib(pid), Ordering::Relaxed);
                thread::sleep(Duration::from_millis(10));
            }
        });
        PeakRss {
            stop,
            peak_kb,
            handle: Some(handle),
        }
    }

    pub fn peak(&self) -> f64 {
        self.peak_kb.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

impl Drop for PeakRss {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
