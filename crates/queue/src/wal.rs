//! The write-ahead log of the embedded store: one file beside the redb file
//! (`<store>-wal`), so that a durable commit costs one small sequential write and one
//! `fdatasync` instead of redb's copy-on-write commit (a dozen scattered pages).
//!
//! # Frames
//! The file is a sequence of frames, each the mutations of one or more commit groups, written
//! with one `pwrite` and made durable with one `fdatasync` before the next frame is written:
//!
//! ```text
//! u32 magic "SYWL" · u32 body length · u64 log sequence number (LSN) · u64 lap
//! u32 CRC-32 of the body · u32 CRC-32 of the 28 bytes before it · body
//! ```
//!
//! LSNs follow each other (+1). The store records in redb, in each of its durable commits (a
//! *checkpoint*), the LSN of the last frame that commit holds and a new random *lap* number;
//! after a checkpoint the next frame is written at offset 0 again (the file is reused, never
//! shrunk) and every frame of the new lap carries its number. Frames of an earlier lap stay
//! behind the new ones, with another lap number.
//!
//! **Why the lap number.** A frame's body holds job payloads, which producers choose. A
//! payload can hold bytes shaped like a frame, with checksums anyone can compute, and the
//! reader meets old bytes wherever the current lap ends. Without a secret, a producer's
//! payload left behind by an earlier lap could be read as the next commit after a crash (its
//! mutations applied to the store), or as "a later frame" that makes the store refuse to
//! start. A frame counts only when it carries the lap number redb holds: 64 random bits, in
//! two files only the router's user can read.
//!
//! # Reading at start
//! [`Wal::open`] reads frames from offset 0 while each is whole, checks out and carries the next
//! LSN. It stops at the first frame with a smaller LSN (an earlier lap: the end) or one that does
//! not check out. The latter is a *torn tail* (a crash during the last write, which was never
//! acknowledged: dropped) unless a whole frame with a later LSN follows anywhere in the file:
//! then a frame that had been made durable was damaged, and the store refuses to start,
//! naming the file (as it refuses a damaged redb file).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::StoreError;

const MAGIC: [u8; 4] = *b"SYWL";
/// Bytes before a frame's body.
pub(crate) const HEADER: usize = 32;
/// The file grows by zeroed chunks of this size, written ahead of the frames (a frame that
/// overwrites written blocks makes `fdatasync` flush data only, not the file's size).
const CHUNK: u64 = 1024 * 1024;

/// The open log, positioned for the next frame.
#[derive(Debug)]
pub(crate) struct Wal {
    path: PathBuf,
    file: File,
    /// File length (written, zeroed or frames).
    len: u64,
    /// Where the next frame goes.
    pos: u64,
    /// LSN of the next frame.
    next_lsn: u64,
    /// The lap the frames written now belong to.
    lap: u64,
    /// Frames are written from 0 up to this many bytes, then a checkpoint starts a new lap.
    limit: u64,
}

/// A frame read back: its LSN and its body.
pub(crate) type Frame = (u64, Vec<u8>);

/// The log file of the store file at `store`.
pub(crate) fn path_of(store: &Path) -> PathBuf {
    let mut name = store.file_name().unwrap_or_default().to_os_string();
    name.push("-wal");
    store.with_file_name(name)
}

/// The frame of lap `lap` that starts at `at` in `data`, if it is whole and checks out:
/// (LSN, body range). A frame of another lap is none.
fn frame_at(data: &[u8], at: usize, lap: u64) -> Option<(u64, std::ops::Range<usize>)> {
    let header = data.get(at..at.checked_add(HEADER)?)?;
    if header[..4] != MAGIC {
        return None;
    }
    let word =
        |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let long = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&header[i..i + 8]);
        u64::from_le_bytes(b)
    };
    if long(16) != lap || crc32fast::hash(&header[..28]) != word(28) {
        return None;
    }
    let len = word(4) as usize;
    let start = at + HEADER;
    let body = data.get(start..start.checked_add(len)?)?;
    if crc32fast::hash(body) != word(24) {
        return None;
    }
    Some((long(8), start..start + len))
}

impl Wal {
    /// Opens (or creates) the log at `path` and reads the frames of lap `lap` after `applied`
    /// (the LSN and lap the redb file holds durably), in order. The log is then positioned at
    /// offset 0 with the next LSN: the caller must make the returned frames durable in redb,
    /// with a new lap (a checkpoint, then [`Wal::restart`]), before it writes a frame.
    /// `limit`: bytes of frames per lap.
    pub(crate) fn open(
        path: &Path,
        applied: u64,
        lap: u64,
        limit: u64,
    ) -> Result<(Wal, Vec<Frame>), StoreError> {
        let io = |what: &str, e: std::io::Error| {
            StoreError::storage(format!("{what} {}: {e}", path.display()))
        };
        use std::os::unix::fs::OpenOptionsExt;
        // Only its owner may read it: it holds payloads, like the store file.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| io("opening", e))?;
        let limit = limit.max(CHUNK);
        // The lap's blocks are reserved (the length stays: frames and zeroes extend it), so
        // the log does not run out of room mid-run and the disk's free space counts it. Best
        // effort: where the file system cannot, the log takes room as it grows.
        if let Err(e) =
            rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::KEEP_SIZE, 0, limit)
        {
            tracing::warn!(file = %path.display(), error = %e, "queue store: could not reserve room for the log");
        }
        let data = std::fs::read(path).map_err(|e| io("reading", e))?;
        let frames = read_frames(&data, applied, lap).map_err(|m| {
            StoreError::corrupt(format!(
                "{} is damaged ({m}); the log was left as it is: restore the data directory from a backup, or move this file away (losing the commits it holds)",
                path.display()
            ))
        })?;
        let next_lsn = frames.last().map_or(applied, |f| f.0).saturating_add(1);
        Ok((
            Wal {
                path: path.to_path_buf(),
                file,
                len: data.len() as u64,
                pos: 0,
                next_lsn,
                lap,
                limit,
            },
            frames,
        ))
    }

    /// LSN of the last frame written (or read back): what a checkpoint records.
    pub(crate) fn last_lsn(&self) -> u64 {
        self.next_lsn.saturating_sub(1)
    }

    /// Where the next frame goes.
    #[cfg(test)]
    pub(crate) fn position(&self) -> u64 {
        self.pos
    }

    /// Whether a frame of `body` bytes fits in this lap.
    pub(crate) fn fits(&self, body: usize) -> bool {
        self.pos
            .saturating_add((HEADER + body) as u64)
            .le(&self.limit)
    }

    /// Starts lap `lap` at offset 0. Only after a checkpoint that holds every frame written
    /// and records `lap`.
    pub(crate) fn restart(&mut self, lap: u64) {
        self.pos = 0;
        self.lap = lap;
    }

    /// Writes `body` as the next frame and waits for the device (`fdatasync`). Returns its LSN.
    #[cfg(test)]
    pub(crate) fn append(&mut self, body: &[u8]) -> Result<u64, StoreError> {
        let mut p = Pending::default();
        p.buf().extend_from_slice(body);
        self.append_pending(&mut p)
    }

    /// Writes the frame built in `p` as the next frame and waits for the device
    /// (`fdatasync`); `p` is emptied. Returns its LSN. On error nothing of it counts (a partial
    /// frame is a torn tail).
    pub(crate) fn append_pending(&mut self, p: &mut Pending) -> Result<u64, StoreError> {
        let written = self.write_frame(&mut p.frame);
        p.clear();
        written
    }

    fn write_frame(&mut self, f: &mut [u8]) -> Result<u64, StoreError> {
        let len = u32::try_from(f.len() - HEADER)
            .map_err(|_| StoreError::storage("a log frame above 4 GiB"))?;
        let lsn = self.next_lsn;
        let body_crc = crc32fast::hash(&f[HEADER..]);
        f[..4].copy_from_slice(&MAGIC);
        f[4..8].copy_from_slice(&len.to_le_bytes());
        f[8..16].copy_from_slice(&lsn.to_le_bytes());
        f[16..24].copy_from_slice(&self.lap.to_le_bytes());
        f[24..28].copy_from_slice(&body_crc.to_le_bytes());
        let hcrc = crc32fast::hash(&f[..28]);
        f[28..32].copy_from_slice(&hcrc.to_le_bytes());
        let end = self.pos + f.len() as u64;
        let io = |e: std::io::Error| {
            StoreError::storage(format!("writing {}: {e}", self.path.display()))
        };
        if end > self.len {
            // Zeroes ahead, so that most frames overwrite blocks already written.
            static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
            let to = end.div_ceil(CHUNK).saturating_mul(CHUNK);
            while self.len < to {
                let n = (to - self.len).min(ZEROS.len() as u64) as usize;
                self.file.write_all_at(&ZEROS[..n], self.len).map_err(io)?;
                self.len += n as u64;
            }
        }
        self.file.write_all_at(f, self.pos).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        self.pos = end;
        self.next_lsn += 1;
        Ok(lsn)
    }
}

/// The next frame, built in place: room for its header, then the body.
#[derive(Debug)]
pub(crate) struct Pending {
    frame: Vec<u8>,
}

impl Default for Pending {
    fn default() -> Self {
        Pending {
            frame: vec![0; HEADER],
        }
    }
}

impl Pending {
    /// The buffer to append the body to (append only: its first bytes are the header's room).
    pub(crate) fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.frame
    }

    /// Bytes of body so far.
    pub(crate) fn body_len(&self) -> usize {
        self.frame.len() - HEADER
    }

    /// Empties it; a large buffer (a frame of big payloads) is given back.
    pub(crate) fn clear(&mut self) {
        self.frame.truncate(HEADER);
        if self.frame.capacity() > 1024 * 1024 {
            self.frame.shrink_to(64 * 1024);
        }
    }
}

/// The frames of lap `lap` after `applied`, or why the log is damaged.
fn read_frames(data: &[u8], applied: u64, lap: u64) -> Result<Vec<Frame>, String> {
    let mut frames = Vec::new();
    let mut at = 0usize;
    let mut expected = applied.saturating_add(1);
    loop {
        match frame_at(data, at, lap) {
            Some((lsn, body)) if lsn == expected => {
                frames.push((lsn, data[body.clone()].to_vec()));
                expected += 1;
                at = body.end;
            }
            // Not reached (a lap's LSNs only grow); read as the end, as a frame of an earlier lap.
            Some((lsn, _)) if lsn < expected => return Ok(frames),
            Some((lsn, _)) => {
                return Err(format!(
                    "frame {lsn} at offset {at} where frame {expected} was due"
                ))
            }
            None => {
                // The end (bytes of an earlier lap, zeroes), or a torn tail, unless a later
                // frame of this lap follows.
                let from = at + 1;
                if let Some(later) = data
                    .get(from..)
                    .unwrap_or_default()
                    .windows(MAGIC.len())
                    .enumerate()
                    .filter(|(_, w)| *w == MAGIC)
                    .find_map(|(i, _)| {
                        frame_at(data, from + i, lap).filter(|(lsn, _)| *lsn >= expected)
                    })
                {
                    return Err(format!(
                        "frame {expected} at offset {at} does not check out, and frame {} follows it",
                        later.0
                    ));
                }
                return Ok(frames);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: u64 = 4 * CHUNK;
    /// The lap the tests write (a checkpoint would draw it at random).
    const LAP: u64 = 0x5eed;

    fn log_in(dir: &Path) -> PathBuf {
        path_of(&dir.join("q.redb"))
    }

    /// Frames written come back in order, with their LSNs; those a checkpoint holds do not.
    #[test]
    fn frames_come_back_after_the_applied_lsn() {
        let dir = tempfile::tempdir().expect("dir");
        let path = log_in(dir.path());
        assert_eq!(path.file_name().unwrap(), "q.redb-wal");
        let (mut w, frames) = Wal::open(&path, 0, LAP, LIMIT).expect("open");
        assert!(frames.is_empty());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "only its owner reads the log");
        for i in 1..=5u8 {
            assert_eq!(
                w.append(&vec![i; i as usize * 100]).expect("append"),
                i as u64
            );
        }
        drop(w);
        let (w, frames) = Wal::open(&path, 0, LAP, LIMIT).expect("reopen");
        assert_eq!(frames.len(), 5);
        assert_eq!(frames[2], (3, vec![3u8; 300]));
        assert_eq!(w.last_lsn(), 5);
        // A checkpoint records the last frame and the next frame goes at offset 0: frames of
        // an earlier LSN at the start are a lap the checkpoint holds.
        let (w, frames) = Wal::open(&path, 5, LAP, LIMIT).expect("all applied");
        assert!(frames.is_empty());
        assert_eq!(w.last_lsn(), 5);
        let (w, frames) = Wal::open(&path, 3, LAP, LIMIT).expect("an earlier lap");
        assert!(frames.is_empty());
        assert_eq!(w.last_lsn(), 3);
    }

    /// A crash during the last write leaves part of a frame: it was never acknowledged, so it
    /// is dropped, at any length it was cut at and whatever bytes were left.
    #[test]
    fn a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().expect("dir");
        let path = log_in(dir.path());
        let (mut w, _) = Wal::open(&path, 0, LAP, LIMIT).expect("open");
        w.append(b"first").expect("append");
        w.append(b"second").expect("append");
        let third_at = w.position() as usize;
        w.append(&[7u8; 3000]).expect("append");
        let end = w.position() as usize;
        drop(w);
        let good = std::fs::read(&path).expect("read");
        for cut in [third_at + 1, third_at + 10, third_at + HEADER, end - 1] {
            // Cut short (the rest zero, as the file grows in zeroed chunks)...
            let mut torn = good.clone();
            torn[cut..end].fill(0);
            std::fs::write(&path, &torn).expect("write");
            let (w, frames) = Wal::open(&path, 0, LAP, LIMIT).expect("a torn tail opens");
            assert_eq!(frames.len(), 2, "cut at {cut}");
            assert_eq!(w.last_lsn(), 2);
            // ... or garbage in the part not written.
            let mut torn = good.clone();
            torn[cut..end].fill(0xa5);
            std::fs::write(&path, &torn).expect("write");
            let (_, frames) = Wal::open(&path, 0, LAP, LIMIT).expect("a torn tail opens");
            assert_eq!(frames.len(), 2, "cut at {cut}");
        }
    }

    /// A frame that was made durable and then damaged (a later frame follows it) stops the
    /// start, naming the file; nothing is changed.
    #[test]
    fn a_bad_checksum_mid_file_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().expect("dir");
        let path = log_in(dir.path());
        let (mut w, _) = Wal::open(&path, 0, LAP, LIMIT).expect("open");
        w.append(b"first").expect("append");
        let second_at = w.position() as usize;
        w.append(&[2u8; 500]).expect("append");
        w.append(b"third").expect("append");
        drop(w);
        let good = std::fs::read(&path).expect("read");
        // A body byte, a header byte (the length: the frame's end is unknown then).
        for at in [second_at + HEADER + 100, second_at + 5] {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            std::fs::write(&path, &bad).expect("write");
            let e = Wal::open(&path, 0, LAP, LIMIT).expect_err("refused");
            let msg = e.to_string();
            assert!(matches!(e, StoreError::Corrupt(_)), "{msg}");
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains("frame 2"), "{msg}");
            assert!(
                std::fs::read(&path).expect("read") == bad,
                "the log was left as it is"
            );
        }
        // The same damage in a frame the checkpoint holds does not matter.
        let mut bad = good.clone();
        bad[second_at + HEADER + 100] ^= 0x40;
        std::fs::write(&path, &bad).expect("write");
        let (_, frames) = Wal::open(&path, 3, LAP, LIMIT).expect("all applied");
        assert!(frames.is_empty());
    }

    /// After a checkpoint the log starts a new lap at offset 0: the frames of the earlier lap
    /// behind the new ones are not read back, and the file does not grow past its limit.
    #[test]
    fn a_new_lap_overwrites_the_old_one() {
        let dir = tempfile::tempdir().expect("dir");
        let path = log_in(dir.path());
        let (mut w, _) = Wal::open(&path, 0, LAP, LIMIT).expect("open");
        let body = vec![9u8; 64 * 1024];
        let mut lsn = 0;
        while w.fits(body.len()) {
            lsn = w.append(&body).expect("append");
        }
        assert!(lsn > 10);
        let len = std::fs::metadata(&path).expect("meta").len();
        assert!(len <= LIMIT, "{len}");
        // The checkpoint records `lsn` and a new lap.
        w.restart(LAP + 1);
        assert_eq!(w.append(b"new").expect("append"), lsn + 1);
        assert_eq!(w.append(b"newer").expect("append"), lsn + 2);
        drop(w);
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), len);
        let (w, frames) = Wal::open(&path, lsn, LAP + 1, LIMIT).expect("reopen");
        assert_eq!(
            frames,
            vec![(lsn + 1, b"new".to_vec()), (lsn + 2, b"newer".to_vec())]
        );
        assert_eq!(w.last_lsn(), lsn + 2);
        // A crash right after a checkpoint, before the new lap's first frame: nothing to read.
        let (_, frames) = Wal::open(&path, lsn + 2, LAP + 1, LIMIT).expect("reopen");
        assert!(frames.is_empty());
    }

    /// A frame's bytes as `write_frame` lays them out, built by hand (as a producer could,
    /// inside a payload).
    fn forge(lsn: u64, lap: u64, body: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&MAGIC);
        f.extend_from_slice(&(body.len() as u32).to_le_bytes());
        f.extend_from_slice(&lsn.to_le_bytes());
        f.extend_from_slice(&lap.to_le_bytes());
        f.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        let hcrc = crc32fast::hash(&f[..28]);
        f.extend_from_slice(&hcrc.to_le_bytes());
        f.extend_from_slice(body);
        f
    }

    /// A payload of an earlier lap shaped like a frame, lying where the current lap ends or
    /// after it, is neither read as a commit nor taken for damage: it lacks the lap's number.
    #[test]
    fn a_frame_forged_in_a_payload_is_not_read() {
        let dir = tempfile::tempdir().expect("dir");
        let path = log_in(dir.path());
        let new_lap = LAP + 1;
        // Lap LAP: one frame whose body (a payload) holds `forged` from where lap `new_lap`
        // will end (after its frame 2 of 3 bytes); then a checkpoint holds frame 1 and
        // starts lap `new_lap`, which writes frame 2; then a crash.
        let run = |forged: Vec<u8>| {
            let _ = std::fs::remove_file(&path);
            let (mut w, _) = Wal::open(&path, 0, LAP, LIMIT).expect("open");
            let mut body = vec![0xee; 3];
            body.extend(forged);
            body.extend([0xee; 100]);
            assert_eq!(w.append(&body).expect("append"), 1);
            w.restart(new_lap);
            assert_eq!(w.append(b"new").expect("append"), 2);
            drop(w);
            Wal::open(&path, 1, new_lap, LIMIT).map(|(_, frames)| frames)
        };
        let frame_2 = (2, b"new".to_vec());
        for lap in [LAP, 0, new_lap + 1] {
            // The next frame (3), where the reader looks for it.
            let frames = run(forge(3, lap, b"forged mutations")).expect("opens");
            assert_eq!(frames, vec![frame_2.clone()], "forged lap {lap}");
            // A "later frame", which would make a torn tail look like damage.
            let mut later = vec![0xee; 10];
            later.extend(forge(u64::MAX, lap, b"later"));
            let frames = run(later).expect("opens");
            assert_eq!(frames, vec![frame_2.clone()], "forged lap {lap}");
        }
        // The lap's number is what keeps them out: a producer who knew it would get its
        // mutations applied, or the store refused at start.
        let frames = run(forge(3, new_lap, b"forged mutations")).expect("opens");
        assert_eq!(frames, vec![frame_2, (3, b"forged mutations".to_vec())]);
        let mut later = vec![0xee; 10];
        later.extend(forge(u64::MAX, new_lap, b"later"));
        assert!(run(later).is_err());
    }

    /// A frame with an LSN beyond the next one (a gap) is damage, not an end.
    #[test]
    fn a_gap_in_the_lsns_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = log_in(dir.path());
        let (mut w, _) = Wal::open(&path, 0, LAP, LIMIT).expect("open");
        w.append(b"one").expect("append");
        drop(w);
        let e = Wal::open(&path, 0, LAP, LIMIT);
        assert!(e.is_ok());
        // The redb file says frame 0 is applied, the log starts at frame 1: fine; but a log
        // that starts beyond the next frame means frames are missing.
        let (mut w, _) = Wal::open(&path, 5, LAP, LIMIT).expect("stale");
        w.append(b"six").expect("append");
        drop(w);
        let e = Wal::open(&path, 2, LAP, LIMIT).expect_err("gap");
        assert!(
            e.to_string()
                .contains("frame 6 at offset 0 where frame 3 was due"),
            "{e}"
        );
    }
}
