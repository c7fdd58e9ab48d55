//! The free-space reserve of the disk that holds the store ([`crate::Options::min_free_disk_bytes`]).
//!
//! A push that would leave less than the reserve free is refused, so clients never fill the
//! disk: a full disk makes the store fail every write (purges and acknowledgements too) until
//! a restart. The store file keeps the pages its deleted jobs freed and reuses them, so the
//! room it can reuse counts as free: its length minus twice the payload bytes it holds (a
//! conservative estimate of what the live jobs occupy).
//!
//! Looking at the file system costs two system calls with a path walk each (`statvfs`, and
//! `stat` of the file): too much for every push under load. A look is reused for at most
//! [`LOOK_AGAIN`], minus twice the bytes admitted since (what they take in the file); a push
//! that would not fit by the reused figures looks again at once, so a refusal is always based
//! on a fresh look.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How long one look at the file system is reused.
pub(crate) const LOOK_AGAIN: Duration = Duration::from_millis(50);

/// Where the store lives and the reserve to keep.
#[derive(Debug)]
pub(crate) struct DiskReserve {
    file: PathBuf,
    min_free: u64,
    last: Mutex<Option<Look>>,
}

/// The free bytes counted at one look, and what was admitted since.
#[derive(Debug, Clone, Copy)]
struct Look {
    at: Instant,
    free: u64,
    admitted: u64,
}

/// Why a push does not fit: (free bytes counted, the reserve).
pub(crate) type Short = (u64, u64);

impl DiskReserve {
    pub(crate) fn new(file: PathBuf, min_free: u64) -> DiskReserve {
        DiskReserve {
            file,
            min_free,
            last: Mutex::new(None),
        }
    }

    /// Whether `incoming` payload bytes fit above the reserve, given the payload bytes the
    /// store holds now (`stored`). A failed look at the file system lets the push through (the
    /// store's own error then says what is wrong).
    pub(crate) fn check(&self, incoming: u64, stored: u64) -> Result<(), Short> {
        if self.min_free == 0 {
            return Ok(());
        }
        // The pushed bytes take about twice their size in the file (pages, copy-on-write).
        let takes = incoming.saturating_mul(2);
        let need = self.min_free.saturating_add(takes);
        let mut last = self.last.lock();
        if let Some(l) = last.as_mut().filter(|l| l.at.elapsed() < LOOK_AGAIN) {
            if l.free.saturating_sub(l.admitted) >= need {
                l.admitted = l.admitted.saturating_add(takes);
                return Ok(());
            }
        }
        let Some(free) = self.free(stored) else {
            *last = None;
            return Ok(());
        };
        if free < need {
            *last = None;
            return Err((free, self.min_free));
        }
        *last = Some(Look {
            at: Instant::now(),
            free,
            admitted: takes,
        });
        Ok(())
    }

    /// Free bytes now: the file system's, plus the room the store file can reuse.
    fn free(&self, stored: u64) -> Option<u64> {
        let dir = self
            .file
            .parent()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        let st = rustix::fs::statvfs(&dir).ok()?;
        let available = st.f_bavail.saturating_mul(st.f_frsize);
        let file_len = std::fs::metadata(&self.file).map(|m| m.len()).unwrap_or(0);
        let reusable = file_len.saturating_sub(stored.saturating_mul(2));
        Some(available.saturating_add(reusable))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reserve_in(dir: &std::path::Path, min_free: u64) -> DiskReserve {
        let file = dir.join("store.redb");
        std::fs::write(&file, b"x").expect("file");
        DiskReserve::new(file, min_free)
    }

    /// A look is reused: the pushes after it are counted against it, without looking again.
    #[test]
    fn a_look_is_reused_and_counts_what_it_admitted() {
        let dir = tempfile::tempdir().expect("dir");
        let r = reserve_in(dir.path(), 1);
        r.check(10, 0).expect("room");
        let first = r.last.lock().expect("looked");
        assert_eq!(first.admitted, 20);
        r.check(100, 0).expect("room");
        let second = r.last.lock().expect("looked");
        assert_eq!(second.at, first.at, "the look was reused");
        assert_eq!(second.admitted, 220);
    }

    /// Figures that say "full" are never trusted for a refusal: the check looks again.
    #[test]
    fn a_refusal_is_based_on_a_fresh_look() {
        let dir = tempfile::tempdir().expect("dir");
        let r = reserve_in(dir.path(), 1);
        *r.last.lock() = Some(Look {
            at: Instant::now(),
            free: 0,
            admitted: 0,
        });
        r.check(10, 0)
            .expect("the disk has room: the stale look must not refuse");
        assert!(r.last.lock().expect("looked").free > 0);
        // A reserve larger than any disk is refused, by a fresh look.
        let huge = reserve_in(dir.path(), u64::MAX / 4);
        assert!(huge.check(1, 0).is_err());
        assert!(huge.last.lock().is_none());
    }

    /// After `LOOK_AGAIN` the figures are looked at again.
    #[test]
    fn an_old_look_is_replaced() {
        let dir = tempfile::tempdir().expect("dir");
        let r = reserve_in(dir.path(), 1);
        let old = Instant::now() - LOOK_AGAIN * 2;
        *r.last.lock() = Some(Look {
            at: old,
            free: u64::MAX / 2,
            admitted: 0,
        });
        r.check(10, 0).expect("room");
        let l = r.last.lock().expect("looked");
        assert!(l.at > old);
        assert_eq!(l.admitted, 20);
    }
}
