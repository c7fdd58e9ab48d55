//! The free-space reserve of the disk that holds the store ([`crate::Options::min_free_disk_bytes`]).
//!
//! A push that would leave less than the reserve free is refused, so clients never fill the
//! disk: a full disk makes the store fail every write (purges and acknowledgements too) until
//! a restart. The store file keeps the pages its deleted jobs freed and reuses them, so the
//! room it can reuse counts as free: its length minus twice the payload bytes it holds (a
//! conservative estimate of what the live jobs occupy).

use std::path::PathBuf;

/// Where the store lives and the reserve to keep.
#[derive(Debug)]
pub(crate) struct DiskReserve {
    file: PathBuf,
    min_free: u64,
}

/// Why a push does not fit: (free bytes counted, the reserve).
pub(crate) type Short = (u64, u64);

impl DiskReserve {
    pub(crate) fn new(file: PathBuf, min_free: u64) -> DiskReserve {
        DiskReserve { file, min_free }
    }

    /// Whether `incoming` payload bytes fit above the reserve, given the payload bytes the
    /// store holds now (`stored`). A failed look at the file system lets the push through (the
    /// store's own error then says what is wrong).
    pub(crate) fn check(&self, incoming: u64, stored: u64) -> Result<(), Short> {
        if self.min_free == 0 {
            return Ok(());
        }
        let dir = self
            .file
            .parent()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        let Ok(st) = rustix::fs::statvfs(&dir) else {
            return Ok(());
        };
        let available = st.f_bavail.saturating_mul(st.f_frsize);
        let file_len = std::fs::metadata(&self.file).map(|m| m.len()).unwrap_or(0);
        let reusable = file_len.saturating_sub(stored.saturating_mul(2));
        let free = available.saturating_add(reusable);
        // The pushed bytes take about twice their size in the file (pages, copy-on-write).
        if free < self.min_free.saturating_add(incoming.saturating_mul(2)) {
            return Err((free, self.min_free));
        }
        Ok(())
    }
}
