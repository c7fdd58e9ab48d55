//! The embedded store: one redb file, written by one thread with group commit.
//!
//! # Group commit
//! Callers never touch the write side. [`RedbStore::submit`] puts a [`Batch`] on a channel and
//! returns. One writer thread loops:
//! 1. block until a batch arrives (after a commit of one batch, poll for `SPIN` first: a
//!    producer's next push then finds the writer awake);
//! 2. take every other batch already waiting (up to `max_commit_mutations`), without waiting
//!    for more: batching comes from the time the previous commit took, never from a timer, so
//!    a lone operation is committed at once;
//! 3. apply all of them in ONE redb write transaction and commit it: with
//!    `Durability::Immediate` (one fsync for the whole group) if any batch is `durable` (a
//!    push, an operator action) or the last fsync is `MAX_NON_DURABLE` (50 ms) old; else with
//!    `Durability::None` (no fsync: leases, completions and failures only, persisted by the
//!    next durable commit; a crash before it only makes those jobs run again);
//! 4. run every batch's completion with the result once its commit is fsync'd (a
//!    non-durable commit's completions wait for the next durable one), in submission order: on the writer thread
//!    itself when nothing else is waiting (lowest latency), otherwise on a completer thread, so
//!    the next commit starts at once while the previous group's waiters are woken.
//!
//! Under load, the batches that arrive while one commit runs form the next commit, so the fsync
//! cost is shared by everything queued behind it.
//!
//! # The write-ahead log (default)
//! With [`RedbOptions::wal`], step 3 does not fsync redb: the group's mutations are applied in a
//! write transaction, appended to the log beside the file (`<file>-wal`, see `wal`) as one frame
//! with one `fdatasync`, and only then is the transaction committed with `Durability::None`
//! (if the frame fails, the transaction is aborted: redb never shows a refused push). A
//! non-durable group's mutations wait in memory for the next frame. When a lap of the log is
//! full, the commit is a durable redb commit instead (a *checkpoint*), which records the last
//! frame's sequence number in `meta` (`wal_lsn`) and a new random lap number (`wal_lap`) that
//! every frame of the next lap carries; the log then starts again at offset 0. At open (and at
//! each reopening after a failure) the frames of lap `wal_lap` after `wal_lsn` are replayed into
//! redb and checkpointed. Closing checkpoints. So a durable commit costs one small sequential
//! write and one flush instead of a dozen scattered page writes and their flush.
//!
//! # Coalescing
//! Inside one commit, a mutation that a later mutation of the same commit undoes is skipped: a
//! lease row written and deleted again (a job leased and completed within one commit window),
//! a job record rewritten and then deleted. The writer also remembers which lease rows exist in
//! the file, so deleting a lease that was never written costs nothing. A short job thus costs two
//! B-tree writes (insert at push, delete at completion).
//!
//! # Failure and recovery
//! A failed transaction or commit leaves redb refusing further writes until reopened, so the
//! store becomes *failed*: that group and every later one complete with the error (a full disk:
//! `No space left on device`). While failed, the writer closes the database and opens it again
//! after [`RECOVERY_INTERVAL`], then at doubling intervals up to [`MAX_RECOVERY_INTERVAL`]
//! (redb repairs the file on open, to the last committed state; what was acknowledged before
//! the failure is intact). Once that works (space came back), the
//! store takes writes again, without a restart. Batches refused while it was failed stay
//! refused: their callers got the error.
//!
//! # Tables
//! `meta` (`max_job_id`: the id reservation, see `ID_BLOCK`; `format`), `queues` (name → config JSON), `counters`
//! (name → completed, retried, dead-lettered), `jobs` (id → record without payload, see
//! `codec`), `payloads` (id → encoding and bytes: written once at push, read at dispatch, never
//! loaded at startup), `leases` (id → epoch, deadline, attempts), `idempotency` ((queue, key) →
//! job id, expiry).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::codec;
use crate::config::QueueConfig;
use crate::entry;
use crate::error::StoreError;
use crate::model::{JobId, JobState, Payload};
use crate::store::MAX_NON_DURABLE;
use crate::store::{
    Batch, Counters, Done, IdempotencyRecord, Mutation, Snapshot, Store, StoreStats, StoredLease,
};
use crate::wal::{self, Pending, Wal};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const QUEUES: TableDefinition<&str, &[u8]> = TableDefinition::new("queues");
const COUNTERS: TableDefinition<&str, (u64, u64, u64)> = TableDefinition::new("counters");
const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("jobs");
const PAYLOADS: TableDefinition<u64, &[u8]> = TableDefinition::new("payloads");
const LEASES: TableDefinition<u64, (u64, u64, u32)> = TableDefinition::new("leases");
const IDEMPOTENCY: TableDefinition<(&str, &str), (u64, u64)> = TableDefinition::new("idempotency");

const FORMAT_KEY: &str = "format";
/// Meta key of the log position: the LSN of the last log frame this file holds (written by
/// every checkpoint, in the same transaction).
const WAL_LSN_KEY: &str = "wal_lsn";
/// Meta key of the log's lap: the random number every frame written after the checkpoint that
/// recorded it carries (see `wal`: a frame shaped in a payload is not one of ours).
const WAL_LAP_KEY: &str = "wal_lap";
/// Default bytes of log frames per lap (see [`RedbOptions::wal_bytes`]).
pub const DEFAULT_WAL_BYTES: u64 = 8 * 1024 * 1024;
/// 2: payloads in their own table (1: inline in the job records; migrated on open).
const FORMAT: u64 = 2;
/// Job records migrated per transaction when a format 1 store is opened.
const MIGRATION_CHUNK: usize = 256;
/// Meta key of the id reservation: every job id ever committed is at or below it.
const MAX_JOB_ID_KEY: &str = "max_job_id";
/// Ids are reserved in blocks, so the reservation is rewritten once per block rather than in
/// every commit that creates jobs. After a restart numbering continues above the reservation:
/// ids have gaps (at most one block per restart) but never repeat.
const ID_BLOCK: u64 = 4096;

/// How soon a failed store first tries to reopen its file (and so recover); the wait doubles
/// after each failed try, up to [`MAX_RECOVERY_INTERVAL`].
pub const RECOVERY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// The longest wait between two tries to reopen a failed store.
pub const MAX_RECOVERY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(8);

/// A lap number: random, never 0 (0 reads as "none on record").
fn new_lap() -> u64 {
    rand::random::<u64>().max(1)
}

/// Records a checkpoint in `txn`: redb holds every log frame up to `lsn`, and the log's next
/// frames belong to lap `lap`.
fn record_checkpoint(txn: &redb::WriteTransaction, lsn: u64, lap: u64) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META).map_err(StoreError::storage)?;
    meta.insert(WAL_LSN_KEY, lsn).map_err(StoreError::storage)?;
    meta.insert(WAL_LAP_KEY, lap).map_err(StoreError::storage)?;
    Ok(())
}

/// The write-ahead log of the store file at `store`: `<store>-wal` beside it.
pub fn wal_path(store: &Path) -> std::path::PathBuf {
    wal::path_of(store)
}

/// Default redb page cache of a store: 32 MiB.
pub const DEFAULT_CACHE_SIZE: usize = 32 * 1024 * 1024;

/// Tuning of the embedded store.
#[derive(Clone, Debug)]
pub struct RedbOptions {
    /// Most mutations in one commit (batches are never split, so one large batch may exceed
    /// it). Bounds the latency a commit adds to what queues behind it. Default 16 384.
    pub max_commit_mutations: usize,
    /// redb page cache size in bytes (default [`DEFAULT_CACHE_SIZE`], 32 MiB; `None`: redb's
    /// own default of 1 GiB). The cache keeps written pages too, so it bounds how much of the
    /// store (payloads of waiting jobs included) stays in memory.
    pub cache_size: Option<usize>,
    /// Durable commits go to a write-ahead log beside the file (`<file>-wal`: one frame and one
    /// `fdatasync` per commit group) and reach redb without an fsync of their own, made durable
    /// there by a checkpoint once per lap of the log (default `true`). `false`: every durable
    /// commit is a durable redb commit (a log left by an earlier run is still replayed, then
    /// removed).
    pub wal: bool,
    /// Bytes of log frames per lap: a checkpoint (a durable redb commit) then lets the log
    /// start again at offset 0. Default [`DEFAULT_WAL_BYTES`] (8 MiB): the log file's size.
    pub wal_bytes: u64,
}

impl Default for RedbOptions {
    fn default() -> Self {
        RedbOptions {
            max_commit_mutations: 16_384,
            cache_size: Some(DEFAULT_CACHE_SIZE),
            wal: true,
            wal_bytes: DEFAULT_WAL_BYTES,
        }
    }
}

enum Msg {
    Batch(Batch),
    Close,
}

struct Shared {
    stats: Mutex<StoreStats>,
    /// Set while the store is failed (cheap to test).
    failed: AtomicBool,
    failure: Mutex<Option<StoreError>>,
    /// The open database; `None` for the moment the writer reopens it.
    db: RwLock<Option<Arc<Database>>>,
}

impl Shared {
    fn failure(&self) -> Option<StoreError> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        self.failure.lock().clone()
    }

    fn fail(&self, e: &StoreError) {
        let mut f = self.failure.lock();
        if f.is_none() {
            *f = Some(e.clone());
        }
        self.failed.store(true, Ordering::Release);
        self.stats.lock().failure = Some(e.clone());
    }

    fn recovered(&self) {
        *self.failure.lock() = None;
        self.failed.store(false, Ordering::Release);
        let mut s = self.stats.lock();
        s.failure = None;
        s.recoveries += 1;
    }

    /// The open database, or the error that closed it.
    fn db(&self) -> Result<Arc<Database>, StoreError> {
        match &*self.db.read() {
            Some(db) => Ok(db.clone()),
            None => Err(self
                .failure()
                .unwrap_or_else(|| StoreError::storage("the store is being reopened"))),
        }
    }
}

/// The embedded redb store with a group-committing writer thread.
pub struct RedbStore {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    closed: AtomicBool,
}

impl RedbStore {
    /// Opens (or creates) the store file at `path` and starts its writer thread.
    pub fn open(path: impl AsRef<Path>, options: RedbOptions) -> Result<RedbStore, StoreError> {
        let path = path.as_ref();
        let db = open_db(path, &options, true)?;
        let (hwm, leases_on_disk) = init_tables(&db)?;
        let shared = Arc::new(Shared {
            stats: Mutex::new(StoreStats::default()),
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
            db: RwLock::new(Some(Arc::new(db))),
        });
        let (tx, rx) = mpsc::channel();
        let (ctx, crx) = mpsc::channel::<Completion>();
        let pending = Arc::new(AtomicUsize::new(0));
        let completer = {
            let pending = pending.clone();
            std::thread::Builder::new()
                .name("switchyard-queue-completer".into())
                .spawn(move || {
                    while let Ok((result, dones)) = crx.recv() {
                        for done in dones {
                            done(result.clone());
                        }
                        pending.fetch_sub(1, Ordering::AcqRel);
                    }
                })
                .map_err(StoreError::storage)?
        };
        let writer = {
            let mut w = Writer {
                wal: None,
                log: Pending::default(),
                scratch: Vec::new(),
                path: path.to_path_buf(),
                options: options.clone(),
                shared: shared.clone(),
                max_mutations: options.max_commit_mutations.max(1),
                hwm,
                buf: Vec::new(),
                leases_on_disk,
                last_clear: HashMap::new(),
                last_remove: HashMap::new(),
                completer: ctx,
                pending,
                unsynced_since: None,
                deferred: Vec::new(),
                retry_in: RECOVERY_INTERVAL,
            };
            w.open_log()?;
            std::thread::Builder::new()
                .name("switchyard-queue-writer".into())
                .spawn(move || w.run(&rx))
                .map_err(StoreError::storage)?
        };
        Ok(RedbStore {
            tx,
            shared,
            threads: Mutex::new(vec![writer, completer]),
            closed: AtomicBool::new(false),
        })
    }
}

/// Opens (or creates) the redb file, verifying the checksum of every committed page: a file
/// damaged outside redb (truncated, bytes changed, not a redb file) is refused with
/// [`StoreError::Corrupt`] naming it, never trusted (a plain open may panic or read garbage).
///
/// `check` is false for the reopening after a failed commit: that file was written by this
/// process, and redb repairs (and so verifies) it on open if its last close was not clean.
fn open_db(path: &Path, options: &RedbOptions, check: bool) -> Result<Database, StoreError> {
    let mut builder = Database::builder();
    if let Some(bytes) = options.cache_size {
        builder.set_cache_size(bytes);
    }
    builder.set_check_integrity_on_open(check);
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| builder.create(path)));
    let damaged = |what: &dyn std::fmt::Display| {
        StoreError::corrupt(format!(
            "{} is damaged ({what}); nothing was changed: restore it from a backup, or move it away to start with an empty store",
            path.display()
        ))
    };
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Corrupted(e)))) => Err(damaged(&e)),
        Ok(Err(e @ redb::DatabaseError::UpgradeRequired(_))) => Err(damaged(&e)),
        // Shorter than its header, or not a redb file at all.
        Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Io(e))))
            if matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
            ) =>
        {
            Err(damaged(&e))
        }
        Ok(Err(e @ redb::DatabaseError::DatabaseAlreadyOpen)) => Err(StoreError::storage(format!(
            "opening {}: {e} (is another switchyard using this data directory?)",
            path.display()
        ))),
        Ok(Err(e)) => Err(StoreError::storage(format!(
            "opening {}: {e}",
            path.display()
        ))),
        Err(_) => Err(damaged(&"the store engine failed reading it")),
    }
}

/// Creates the tables, checks the format; returns the stored `max_job_id` and the ids that have
/// a lease row.
fn init_tables(db: &Database) -> Result<(u64, HashSet<u64>), StoreError> {
    let txn = db.begin_write().map_err(StoreError::storage)?;
    let hwm;
    let mut migrate = false;
    let mut leased = HashSet::new();
    {
        let mut meta = txn.open_table(META).map_err(StoreError::storage)?;
        let format = meta
            .get(FORMAT_KEY)
            .map_err(StoreError::storage)?
            .map(|g| g.value());
        match format {
            None => {
                meta.insert(FORMAT_KEY, FORMAT)
                    .map_err(StoreError::storage)?;
            }
            Some(FORMAT) => {}
            Some(1) => migrate = true,
            Some(other) => {
                return Err(StoreError::corrupt(format!(
                    "store format {other} is not supported (this build reads format {FORMAT})"
                )))
            }
        }
        hwm = meta
            .get(MAX_JOB_ID_KEY)
            .map_err(StoreError::storage)?
            .map(|g| g.value())
            .unwrap_or(0);
        // The log's first lap, on record before its first frame (a lap on record is kept: the
        // log's frames not yet replayed carry it).
        if meta
            .get(WAL_LAP_KEY)
            .map_err(StoreError::storage)?
            .is_none()
        {
            meta.insert(WAL_LAP_KEY, new_lap())
                .map_err(StoreError::storage)?;
        }
        txn.open_table(QUEUES).map_err(StoreError::storage)?;
        txn.open_table(COUNTERS).map_err(StoreError::storage)?;
        txn.open_table(JOBS).map_err(StoreError::storage)?;
        txn.open_table(PAYLOADS).map_err(StoreError::storage)?;
        txn.open_table(IDEMPOTENCY).map_err(StoreError::storage)?;
        let leases = txn.open_table(LEASES).map_err(StoreError::storage)?;
        for row in leases.iter().map_err(StoreError::storage)? {
            let (id, _) = row.map_err(StoreError::storage)?;
            leased.insert(id.value());
        }
    }
    txn.commit().map_err(StoreError::storage)?;
    if migrate {
        migrate_inline_payloads(db)?;
    }
    Ok((hwm, leased))
}

/// Moves the payloads of format 1 job records into the `payloads` table, a chunk of records
/// per transaction (memory stays bounded whatever the store's size), then records format 2.
/// A crash in between leaves a mix of both record versions, which the next open finishes.
fn migrate_inline_payloads(db: &Database) -> Result<(), StoreError> {
    let mut next = 0u64;
    let mut moved = 0usize;
    loop {
        let txn = db.begin_write().map_err(StoreError::storage)?;
        let done;
        {
            let mut jobs = txn.open_table(JOBS).map_err(StoreError::storage)?;
            let mut payloads = txn.open_table(PAYLOADS).map_err(StoreError::storage)?;
            let mut chunk: Vec<(u64, Vec<u8>)> = Vec::new();
            let mut last = None;
            for row in jobs.range(next..).map_err(StoreError::storage)? {
                let (id, record) = row.map_err(StoreError::storage)?;
                last = Some(id.value());
                if codec::version(record.value()) == Some(1) {
                    chunk.push((id.value(), record.value().to_vec()));
                }
                if chunk.len() >= MIGRATION_CHUNK {
                    break;
                }
            }
            done = chunk.len() < MIGRATION_CHUNK;
            let mut buf = Vec::new();
            for (id, record) in chunk {
                let d = codec::decode_job(&record, 0)?;
                if let Some(p) = &d.inline {
                    codec::encode_payload(p, &mut buf);
                    payloads
                        .insert(id, buf.as_slice())
                        .map_err(StoreError::storage)?;
                }
                codec::encode_job(&d.job, &d.status, &mut buf);
                jobs.insert(id, buf.as_slice())
                    .map_err(StoreError::storage)?;
                moved += 1;
            }
            next = last.map_or(u64::MAX, |l| l.saturating_add(1));
            if done {
                let mut meta = txn.open_table(META).map_err(StoreError::storage)?;
                meta.insert(FORMAT_KEY, FORMAT)
                    .map_err(StoreError::storage)?;
            }
        }
        txn.commit().map_err(StoreError::storage)?;
        if done {
            if moved > 0 {
                tracing::info!(
                    jobs = moved,
                    "queue store: payloads moved out of the job records (format 2)"
                );
            }
            return Ok(());
        }
    }
}

/// How long the writer polls for the next batch before it sleeps, after a commit of a lone
/// batch: a batch that comes soon after (the next push of a producer that waited for the last
/// one) then finds it awake. Under load (commits of several batches) it does not poll: the
/// cores are better spent producing the next batches.
const SPIN: std::time::Duration = std::time::Duration::from_micros(200);

/// The next message within `timeout`, polling (and yielding the core) for the first
/// [`SPIN`] of it if `poll`.
fn recv_spinning(
    rx: &mpsc::Receiver<Msg>,
    timeout: std::time::Duration,
    poll: bool,
) -> Result<Msg, mpsc::RecvTimeoutError> {
    let start = Instant::now();
    let spin = if poll {
        SPIN.min(timeout)
    } else {
        std::time::Duration::ZERO
    };
    loop {
        match rx.try_recv() {
            Ok(m) => return Ok(m),
            Err(mpsc::TryRecvError::Disconnected) => {
                return Err(mpsc::RecvTimeoutError::Disconnected)
            }
            Err(mpsc::TryRecvError::Empty) => {}
        }
        if start.elapsed() >= spin {
            return rx.recv_timeout(timeout.saturating_sub(start.elapsed()));
        }
        std::thread::yield_now();
    }
}

/// Completions of one commit group, run in order by the completer thread.
type Completion = (Result<(), StoreError>, Vec<Done>);

struct Writer {
    /// The file, to reopen it after a failure.
    path: std::path::PathBuf,
    options: RedbOptions,
    shared: Arc<Shared>,
    max_mutations: usize,
    /// The persisted id reservation (every committed id is at or below it).
    hwm: u64,
    buf: Vec<u8>,
    /// Ids with a lease row in the file (so removing a lease that was never written costs no
    /// B-tree lookup).
    leases_on_disk: HashSet<u64>,
    /// Per commit: position of the last mutation that clears a job's lease row.
    last_clear: HashMap<u64, usize>,
    /// Per commit: position of the last `RemoveJob` of a job.
    last_remove: HashMap<u64, usize>,
    completer: mpsc::Sender<Completion>,
    /// Completion groups handed to the completer and not yet run.
    pending: Arc<AtomicUsize>,
    /// When the first non-durable commit since the last durable one finished.
    unsynced_since: Option<Instant>,
    /// Completions of non-durable commits, run after the fsync that persists them.
    deferred: Vec<Done>,
    /// While failed: the wait before the next try to reopen the file.
    retry_in: std::time::Duration,
    /// The write-ahead log (`None`: durable commits are durable redb commits).
    wal: Option<Wal>,
    /// Encoded mutations of the non-durable commits not yet in the log (the next frame's
    /// start).
    log: Pending,
    scratch: Vec<u8>,
}

impl Writer {
    fn run(&mut self, rx: &mpsc::Receiver<Msg>) {
        let mut group: Vec<Batch> = Vec::new();
        let mut carry: Option<Msg> = None;
        // Whether the last commit was of one batch (see SPIN).
        let mut lone = false;
        loop {
            let mut closing = false;
            let failed = self.shared.failed.load(Ordering::Acquire);
            let first = match (carry.take(), self.unsynced_since) {
                (Some(m), _) => Some(m),
                // A failed store tries to reopen its file now and then.
                (None, _) if failed => match rx.recv_timeout(self.retry_in) {
                    Ok(m) => Some(m),
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if self.recover() {
                            self.retry_in = RECOVERY_INTERVAL;
                        } else {
                            self.retry_in = (self.retry_in * 2).min(MAX_RECOVERY_INTERVAL);
                        }
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => None,
                },
                // Non-durable commits wait at most MAX_NON_DURABLE for their fsync.
                (None, Some(t)) => {
                    match recv_spinning(rx, MAX_NON_DURABLE.saturating_sub(t.elapsed()), lone) {
                        Ok(m) => Some(m),
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            let result = self.sync_now();
                            let dones = std::mem::take(&mut self.deferred);
                            self.deliver(result, dones, true);
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => None,
                    }
                }
                (None, None) => match recv_spinning(rx, SPIN, lone) {
                    Ok(m) => Some(m),
                    Err(mpsc::RecvTimeoutError::Timeout) => rx.recv().ok(),
                    Err(mpsc::RecvTimeoutError::Disconnected) => None,
                },
            };
            match first {
                Some(Msg::Batch(b)) => group.push(b),
                Some(Msg::Close) | None => {
                    let result = self.finish();
                    let dones = std::mem::take(&mut self.deferred);
                    self.deliver(result, dones, true);
                    return;
                }
            }
            let mut n = group[0].mutations.len();
            while n < self.max_mutations {
                match rx.try_recv() {
                    Ok(Msg::Batch(b)) => {
                        n += b.mutations.len();
                        group.push(b);
                    }
                    Ok(Msg::Close) => {
                        closing = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            lone = group.len() == 1;
            let wants_sync = group.iter().any(|b| b.durable);
            // Ok(true): everything committed so far is fsync'd.
            let result = match self.shared.failure() {
                Some(e) => Err(e),
                None if n == 0 && wants_sync => self.sync_now().map(|()| true),
                None if n == 0 => Ok(self.unsynced_since.is_none()),
                None => self.commit_timed(&group, n),
            };
            let mut dones: Vec<Done> = group.drain(..).filter_map(|b| b.done).collect();
            let result = match result {
                Ok(false) => {
                    // Answered with the fsync that persists this commit.
                    self.deferred.append(&mut dones);
                    Ok(())
                }
                other => {
                    let mut all = std::mem::take(&mut self.deferred);
                    all.append(&mut dones);
                    dones = all;
                    other.map(|_| ())
                }
            };
            if closing {
                let synced = self.finish();
                dones.append(&mut self.deferred);
                let result = result.and(synced);
                self.deliver(result, dones, true);
                return;
            }
            if dones.is_empty() {
                continue;
            }
            // Completions wake producers and make pushed jobs visible. When nothing else is
            // waiting to be committed and the completer is idle, run them here (lowest latency);
            // otherwise hand them over, in order, so the next commit starts at once.
            if carry.is_none() {
                if let Ok(m) = rx.try_recv() {
                    carry = Some(m);
                }
            }
            self.deliver(result, dones, carry.is_none());
        }
    }

    /// Runs `dones` with `result`, in order after every group handed over before: here if
    /// `idle` and the completer has nothing left, else on the completer thread.
    fn deliver(&mut self, result: Result<(), StoreError>, dones: Vec<Done>, idle: bool) {
        if dones.is_empty() {
            return;
        }
        if idle && self.pending.load(Ordering::Acquire) == 0 {
            for done in dones {
                done(result.clone());
            }
            return;
        }
        self.pending.fetch_add(1, Ordering::AcqRel);
        if let Err(mpsc::SendError((result, dones))) = self.completer.send((result, dones)) {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            for done in dones {
                done(result.clone());
            }
        }
    }

    /// At shutdown: everything committed so far made durable in redb (a checkpoint, so the next
    /// start has no log to replay), or, without a log, fsync'd.
    fn finish(&mut self) -> Result<(), StoreError> {
        if self.wal.is_some() {
            self.checkpoint()
        } else {
            self.sync_now()
        }
    }

    /// A durable redb commit that records the last log frame: everything in the log (and the
    /// non-durable commits not yet in it) is then durable in redb, and the log starts a new lap.
    fn checkpoint(&mut self) -> Result<(), StoreError> {
        if let Some(e) = self.shared.failure() {
            return Err(e);
        }
        let Some(lsn) = self.wal.as_ref().map(Wal::last_lsn) else {
            return Ok(());
        };
        let lap = new_lap();
        let done = self
            .shared
            .db()?
            .begin_write()
            .map_err(StoreError::storage)
            .and_then(|mut txn| {
                record_checkpoint(&txn, lsn, lap)?;
                txn.set_durability(Durability::Immediate)
                    .map_err(StoreError::storage)?;
                txn.commit().map_err(StoreError::storage)
            });
        match &done {
            Ok(()) => {
                if let Some(wal) = self.wal.as_mut() {
                    wal.restart(lap);
                }
                self.log.clear();
                self.unsynced_since = None;
                self.shared.stats.lock().syncs += 1;
            }
            Err(e) => {
                tracing::error!(error = %e, "queue store: checkpoint failed; the store refuses writes until it could reopen its file");
                self.shared.fail(e);
            }
        }
        done
    }

    /// Opens the log beside the file and replays into redb the frames it holds that redb does
    /// not (a crash after they were acknowledged), then checkpoints: at start and at every
    /// reopening. Without a log (`wal = false`) a log file left by an earlier run is replayed
    /// too, then removed.
    fn open_log(&mut self) -> Result<(), StoreError> {
        self.wal = None;
        self.log.clear();
        let path = wal::path_of(&self.path);
        if !self.options.wal && !path.exists() {
            return Ok(());
        }
        let db = self.shared.db()?;
        let (applied, lap) = {
            let txn = db.begin_read().map_err(StoreError::storage)?;
            let meta = txn.open_table(META).map_err(StoreError::storage)?;
            let get = |key| {
                meta.get(key)
                    .map(|g| g.map(|g| g.value()).unwrap_or(0))
                    .map_err(StoreError::storage)
            };
            (get(WAL_LSN_KEY)?, get(WAL_LAP_KEY)?)
        };
        let (mut wal, frames) = Wal::open(&path, applied, lap, self.options.wal_bytes)?;
        // What the log holds that redb does not, and a new lap: a checkpoint. With nothing to
        // replay, the lap on record goes on (`init_tables` records the first one): its frames
        // in the file all have sequence numbers redb holds.
        if !frames.is_empty() || lap == 0 {
            let mut muts = Vec::new();
            for (lsn, body) in &frames {
                muts.extend(entry::decode_mutations(body).map_err(|e| {
                    StoreError::corrupt(format!(
                        "{}: frame {lsn}: {e}; the log was left as it is: restore the data directory from a backup, or move this file away (losing the commits it holds)",
                        path.display()
                    ))
                })?);
            }
            let refs: Vec<&Mutation> = muts.iter().collect();
            let txn = db.begin_write().map_err(StoreError::storage)?;
            let (_, reserved) = self.apply(&txn, &refs)?;
            let lap = new_lap();
            record_checkpoint(&txn, wal.last_lsn(), lap)?;
            txn.commit().map_err(StoreError::storage)?;
            wal.restart(lap);
            if let Some(r) = reserved {
                self.hwm = r;
            }
            if !frames.is_empty() {
                tracing::info!(
                    file = %path.display(),
                    frames = frames.len(),
                    mutations = muts.len(),
                    "queue store: replayed the log's commits into the store"
                );
            }
        }
        if self.options.wal {
            self.wal = Some(wal);
        } else {
            drop(wal);
            std::fs::remove_file(&path)
                .map_err(|e| StoreError::storage(format!("removing {}: {e}", path.display())))?;
        }
        Ok(())
    }

    /// Persists the non-durable commits not yet followed by a durable one (an empty durable
    /// commit): when they are `MAX_NON_DURABLE` old and nothing else came, and at shutdown.
    fn sync_now(&mut self) -> Result<(), StoreError> {
        if let Some(e) = self.shared.failure() {
            return Err(e);
        }
        if self.unsynced_since.is_none() {
            return Ok(());
        }
        if let Some(wal) = self.wal.as_mut() {
            if self.log.body_len() == 0 {
                // Nothing that needs persisting (results are not logged).
                self.unsynced_since = None;
                return Ok(());
            }
            if wal.fits(self.log.body_len()) {
                let appended = wal.append_pending(&mut self.log);
                match &appended {
                    Ok(_) => {
                        self.unsynced_since = None;
                        self.shared.stats.lock().syncs += 1;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "queue store: writing the log failed; the store refuses writes until it could reopen its file");
                        self.shared.fail(e);
                    }
                }
                return appended.map(|_| ());
            }
            return self.checkpoint();
        }
        let synced = self
            .shared
            .db()?
            .begin_write()
            .map_err(StoreError::storage)
            .and_then(|mut txn| {
                txn.set_durability(Durability::Immediate)
                    .map_err(StoreError::storage)?;
                txn.commit().map_err(StoreError::storage)
            });
        match &synced {
            Ok(()) => {
                self.unsynced_since = None;
                self.shared.stats.lock().syncs += 1;
            }
            Err(e) => {
                tracing::error!(error = %e, "queue store: fsync of the last commits failed; the store refuses writes until it could reopen its file");
                self.shared.fail(e);
            }
        }
        synced
    }

    /// A failed store closes its database and opens the file again (redb repairs it to the
    /// last committed state), then re-reads what the writer keeps of it. Stays failed (until the
    /// next try) if that fails, e.g. while the disk is still full. `true` if it worked.
    fn recover(&mut self) -> bool {
        let Some(old) = self.shared.db.write().take() else {
            return self.reopen();
        };
        // Readers (payloads, load) hold a clone for the length of one read transaction.
        let mut old = old;
        let deadline = Instant::now() + RECOVERY_INTERVAL;
        let db = loop {
            match Arc::try_unwrap(old) {
                Ok(db) => break db,
                Err(still) if Instant::now() < deadline => {
                    old = still;
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(still) => {
                    *self.shared.db.write() = Some(still);
                    return false;
                }
            }
        };
        if let Err(e) = db.close() {
            tracing::debug!(error = %e, "queue store: closing the failed database");
        }
        self.reopen()
    }

    fn reopen(&mut self) -> bool {
        let opened = open_db(&self.path, &self.options, false).and_then(|db| {
            let (hwm, leases) = init_tables(&db)?;
            Ok((db, hwm, leases))
        });
        match opened {
            Ok((db, hwm, leases)) => {
                self.hwm = hwm;
                self.leases_on_disk = leases;
                self.unsynced_since = None;
                *self.shared.db.write() = Some(Arc::new(db));
                // What the log holds and redb may not (a commit whose frame was written
                // before redb failed).
                if let Err(e) = self.open_log() {
                    tracing::debug!(error = %e, "queue store: still failed (replaying the log)");
                    return false;
                }
                self.shared.recovered();
                tracing::warn!(file = %self.path.display(), "queue store recovered: it takes writes again");
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "queue store: still failed");
                false
            }
        }
    }

    /// Commits a group; `Ok(true)` if the commit was durable.
    fn commit_timed(&mut self, group: &[Batch], n: usize) -> Result<bool, StoreError> {
        let started = Instant::now();
        let (skipped, durable) = match self.commit_group(group) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "queue store commit failed; the store refuses writes until it could reopen its file");
                self.shared.fail(&e);
                return Err(e);
            }
        };
        let elapsed = started.elapsed();
        let mut s = self.shared.stats.lock();
        s.commits += 1;
        s.syncs += u64::from(durable);
        s.batches += group.len() as u64;
        s.mutations += n as u64;
        s.coalesced += skipped;
        s.largest_commit = s.largest_commit.max(group.len() as u64);
        s.commit_time += elapsed;
        Ok(durable)
    }

    /// Commits a group: in the log (one frame, one `fdatasync`) if the store has one, else in
    /// redb durably. Returns how many mutations were elided because a later mutation of the same
    /// group undid them, and whether the commit was durable.
    fn commit_group(&mut self, group: &[Batch]) -> Result<(u64, bool), StoreError> {
        let muts: Vec<&Mutation> = group.iter().flat_map(|b| b.mutations.iter()).collect();
        let durable = group.iter().any(|b| b.durable)
            || self
                .unsynced_since
                .is_some_and(|t| t.elapsed() >= MAX_NON_DURABLE);
        let db = self.shared.db()?;
        let mut txn = db.begin_write().map_err(StoreError::storage)?;
        let (skipped, reserved) = self.apply(&txn, &muts)?;
        let Some(wal) = self.wal.as_mut() else {
            // An id reservation is always fsync'd.
            let durable = durable || reserved.is_some();
            txn.set_durability(if durable {
                Durability::Immediate
            } else {
                Durability::None
            })
            .map_err(StoreError::storage)?;
            txn.commit().map_err(StoreError::storage)?;
            self.committed(reserved, durable);
            return Ok((skipped, durable));
        };
        for m in &muts {
            // Results live in the server's memory in embedded mode: not logged.
            if !matches!(m, Mutation::PutResult { .. }) {
                entry::encode_mutation(m, self.log.buf(), &mut self.scratch)?;
            }
        }
        if self.scratch.capacity() > 1024 * 1024 {
            self.scratch = Vec::new();
        }
        if durable && !wal.fits(self.log.body_len()) {
            // The log's lap is full (or this frame is larger than a lap): this commit is a
            // checkpoint, durable in redb, and the log starts a new lap.
            let lap = new_lap();
            record_checkpoint(&txn, wal.last_lsn(), lap)?;
            txn.set_durability(Durability::Immediate)
                .map_err(StoreError::storage)?;
            txn.commit().map_err(StoreError::storage)?;
            wal.restart(lap);
            self.log.clear();
            self.committed(reserved, true);
            return Ok((skipped, true));
        }
        txn.set_durability(Durability::None)
            .map_err(StoreError::storage)?;
        if !durable {
            // In the log with the next durable commit (at most MAX_NON_DURABLE later).
            txn.commit().map_err(StoreError::storage)?;
            self.committed(reserved, false);
            return Ok((skipped, false));
        }
        // Durable once the frame is: if the frame fails, redb is left as it was.
        if let Err(e) = wal.append_pending(&mut self.log) {
            txn.abort().map_err(StoreError::storage)?;
            return Err(e);
        }
        if let Err(e) = txn.commit() {
            // The frame is durable: the group is answered as committed; the store fails, and
            // its reopening replays the log into redb.
            let e = StoreError::storage(e);
            tracing::error!(error = %e, "queue store: applying a logged commit to redb failed; the store refuses writes until it could reopen its file (the log holds the commit)");
            self.shared.fail(&e);
            return Ok((skipped, true));
        }
        self.committed(reserved, true);
        Ok((skipped, true))
    }

    /// What a successful commit changes in the writer's state.
    fn committed(&mut self, reserved: Option<u64>, durable: bool) {
        if let Some(r) = reserved {
            self.hwm = r;
        }
        self.unsynced_since = match (durable, self.unsynced_since) {
            (true, _) => None,
            (false, Some(t)) => Some(t),
            (false, None) => Some(Instant::now()),
        };
    }

    /// Applies mutations, in order, inside `txn`, and reserves a new block of ids if they use
    /// ids above the reservation. Returns the mutations elided (a later mutation of the same
    /// transaction undid them: a lease row written and deleted, a record rewritten and then
    /// deleted) and the new reservation, if any.
    fn apply(
        &mut self,
        txn: &redb::WriteTransaction,
        muts: &[&Mutation],
    ) -> Result<(u64, Option<u64>), StoreError> {
        self.last_clear.clear();
        self.last_remove.clear();
        for (i, m) in muts.iter().enumerate() {
            match m {
                Mutation::RemoveLease(id) => {
                    self.last_clear.insert(id.0, i);
                }
                Mutation::RemoveJob(id) => {
                    self.last_clear.insert(id.0, i);
                    self.last_remove.insert(id.0, i);
                }
                _ => {}
            }
        }
        let mut max_id = self.hwm;
        let mut reserved = self.hwm;
        let mut skipped = 0u64;
        {
            let mut jobs = txn.open_table(JOBS).map_err(StoreError::storage)?;
            let mut leases = txn.open_table(LEASES).map_err(StoreError::storage)?;
            let mut idem = txn.open_table(IDEMPOTENCY).map_err(StoreError::storage)?;
            let mut payloads = txn.open_table(PAYLOADS).map_err(StoreError::storage)?;
            let mut counters: HashMap<&str, Counters> = HashMap::new();
            let mut queues: Vec<&QueueConfig> = Vec::new();
            let mut removed_queues: Vec<Arc<str>> = Vec::new();
            for (i, m) in muts.iter().copied().enumerate() {
                match m {
                    Mutation::PutQueue(cfg) => queues.push(cfg),
                    Mutation::PutCounters { queue, counters: c } => {
                        counters.insert(queue, *c);
                    }
                    Mutation::PutJob { job, status } => {
                        max_id = max_id.max(job.id.0);
                        if self.last_remove.get(&job.id.0).is_some_and(|&r| r > i) {
                            skipped += 1;
                            continue;
                        }
                        codec::encode_job(job, status, &mut self.buf);
                        jobs.insert(job.id.0, self.buf.as_slice())
                            .map_err(StoreError::storage)?;
                    }
                    Mutation::PutPayload { id, payload } => {
                        if self.last_remove.get(&id.0).is_some_and(|&r| r > i) {
                            skipped += 1;
                            continue;
                        }
                        codec::encode_payload(payload, &mut self.buf);
                        payloads
                            .insert(id.0, self.buf.as_slice())
                            .map_err(StoreError::storage)?;
                    }
                    Mutation::PutLease {
                        id,
                        epoch,
                        deadline_ms,
                        attempts,
                    } => {
                        if self.last_clear.get(&id.0).is_some_and(|&c| c > i) {
                            skipped += 1;
                            continue;
                        }
                        leases
                            .insert(id.0, (*epoch, *deadline_ms, *attempts))
                            .map_err(StoreError::storage)?;
                        self.leases_on_disk.insert(id.0);
                    }
                    Mutation::RemoveLease(id) => {
                        if self.leases_on_disk.remove(&id.0) {
                            leases.remove(id.0).map_err(StoreError::storage)?;
                        }
                    }
                    Mutation::RemoveJob(id) => {
                        jobs.remove(id.0).map_err(StoreError::storage)?;
                        payloads.remove(id.0).map_err(StoreError::storage)?;
                        if self.leases_on_disk.remove(&id.0) {
                            leases.remove(id.0).map_err(StoreError::storage)?;
                        }
                    }
                    Mutation::PutIdempotencyKey {
                        queue,
                        key,
                        job,
                        expires_ms,
                    } => {
                        idem.insert((&**queue, key.as_str()), (job.0, *expires_ms))
                            .map_err(StoreError::storage)?;
                        max_id = max_id.max(job.0);
                    }
                    // Results live in the server's memory in embedded mode.
                    Mutation::PutResult { .. } => {}
                    Mutation::RemoveIdempotencyKey { queue, key } => {
                        idem.remove((&**queue, key.as_str()))
                            .map_err(StoreError::storage)?;
                    }
                    Mutation::RemoveQueue(name) => {
                        // Configurations are written after the loop: drop a declaration of
                        // this commit that comes before its deletion.
                        queues.retain(|c| c.name.as_str() != &**name);
                        counters.remove(&**name);
                        removed_queues.push(name.clone());
                        let mut keys: Vec<String> = Vec::new();
                        for row in idem.range((&**name, "")..).map_err(StoreError::storage)? {
                            let (k, _) = row.map_err(StoreError::storage)?;
                            let (queue, key) = k.value();
                            if queue != &**name {
                                break;
                            }
                            keys.push(key.to_owned());
                        }
                        for key in keys {
                            idem.remove((&**name, key.as_str()))
                                .map_err(StoreError::storage)?;
                        }
                    }
                }
            }
            if !removed_queues.is_empty() {
                let mut table = txn.open_table(QUEUES).map_err(StoreError::storage)?;
                let mut ctable = txn.open_table(COUNTERS).map_err(StoreError::storage)?;
                for name in &removed_queues {
                    table.remove(&**name).map_err(StoreError::storage)?;
                    ctable.remove(&**name).map_err(StoreError::storage)?;
                }
            }
            if !queues.is_empty() {
                let mut table = txn.open_table(QUEUES).map_err(StoreError::storage)?;
                for cfg in queues {
                    let json = serde_json::to_vec(cfg).map_err(StoreError::storage)?;
                    table
                        .insert(cfg.name.as_str(), json.as_slice())
                        .map_err(StoreError::storage)?;
                }
            }
            if !counters.is_empty() {
                let mut table = txn.open_table(COUNTERS).map_err(StoreError::storage)?;
                for (q, c) in counters {
                    table
                        .insert(q, (c.completed, c.retried, c.dead_lettered))
                        .map_err(StoreError::storage)?;
                }
            }
            if max_id > self.hwm {
                reserved = max_id.saturating_add(ID_BLOCK);
                let mut meta = txn.open_table(META).map_err(StoreError::storage)?;
                meta.insert(MAX_JOB_ID_KEY, reserved)
                    .map_err(StoreError::storage)?;
            }
        }
        Ok((skipped, (reserved != self.hwm).then_some(reserved)))
    }
}

impl Store for RedbStore {
    fn load(&self, now_ms: u64) -> Result<Snapshot, StoreError> {
        // The handle lives as long as the transaction (a reopening waits for it).
        let db = self.shared.db()?;
        let txn = db.begin_read().map_err(StoreError::storage)?;
        let mut snap = Snapshot::default();

        let meta = txn.open_table(META).map_err(StoreError::storage)?;
        snap.max_job_id = meta
            .get(MAX_JOB_ID_KEY)
            .map_err(StoreError::storage)?
            .map(|g| g.value())
            .unwrap_or(0);

        let counters = txn.open_table(COUNTERS).map_err(StoreError::storage)?;
        let queues = txn.open_table(QUEUES).map_err(StoreError::storage)?;
        for row in queues.iter().map_err(StoreError::storage)? {
            let (name, json) = row.map_err(StoreError::storage)?;
            let cfg: QueueConfig = serde_json::from_slice(json.value()).map_err(|e| {
                StoreError::corrupt(format!("configuration of queue `{}`: {e}", name.value()))
            })?;
            let c = counters
                .get(name.value())
                .map_err(StoreError::storage)?
                .map(|g| {
                    let (completed, retried, dead_lettered) = g.value();
                    Counters {
                        completed,
                        retried,
                        dead_lettered,
                    }
                })
                .unwrap_or_default();
            snap.queues.push((cfg, c));
        }

        let mut lease_rows: HashMap<u64, StoredLease> = HashMap::new();
        let leases = txn.open_table(LEASES).map_err(StoreError::storage)?;
        for row in leases.iter().map_err(StoreError::storage)? {
            let (id, v) = row.map_err(StoreError::storage)?;
            let (epoch, deadline_ms, attempts) = v.value();
            lease_rows.insert(
                id.value(),
                StoredLease {
                    epoch,
                    deadline_ms,
                    attempts,
                },
            );
        }

        let jobs = txn.open_table(JOBS).map_err(StoreError::storage)?;
        for row in jobs.iter().map_err(StoreError::storage)? {
            let (id, record) = row.map_err(StoreError::storage)?;
            let codec::Decoded {
                job, mut status, ..
            } = codec::decode_job(record.value(), now_ms)?;
            if job.id.0 != id.value() {
                return Err(StoreError::corrupt(format!(
                    "job record under key {} carries id {}",
                    id.value(),
                    job.id
                )));
            }
            snap.max_job_id = snap.max_job_id.max(job.id.0);
            if let Some(l) = lease_rows.get(&id.value()) {
                if !matches!(status.state, JobState::Dead { .. }) {
                    status.state = JobState::Leased {
                        epoch: l.epoch,
                        deadline_ms: l.deadline_ms,
                    };
                    status.attempts = l.attempts;
                }
                status.epoch = status.epoch.max(l.epoch);
            }
            snap.jobs.push((Arc::new(job), status));
        }

        let idem = txn.open_table(IDEMPOTENCY).map_err(StoreError::storage)?;
        for row in idem.iter().map_err(StoreError::storage)? {
            let (k, v) = row.map_err(StoreError::storage)?;
            let (queue, key) = k.value();
            let (job, expires_ms) = v.value();
            snap.max_job_id = snap.max_job_id.max(job);
            snap.idempotency_keys.push(IdempotencyRecord {
                queue: queue.to_owned(),
                key: key.to_owned(),
                job: JobId(job),
                expires_ms,
            });
        }
        Ok(snap)
    }

    fn submit(&self, batch: Batch) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        if let Some(e) = self.shared.failure() {
            return Err(e);
        }
        self.tx
            .send(Msg::Batch(batch))
            .map_err(|_| StoreError::Closed)
    }

    fn payloads(&self, ids: &[JobId]) -> Result<Vec<Option<Payload>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let db = self.shared.db()?;
        let txn = db.begin_read().map_err(StoreError::storage)?;
        let table = txn.open_table(PAYLOADS).map_err(StoreError::storage)?;
        ids.iter()
            .map(|id| {
                table
                    .get(id.0)
                    .map_err(StoreError::storage)?
                    .map(|row| codec::decode_payload(row.value()))
                    .transpose()
            })
            .collect()
    }

    fn stats(&self) -> StoreStats {
        self.shared.stats.lock().clone()
    }

    fn failure(&self) -> Option<StoreError> {
        self.shared.failure()
    }

    fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = self.tx.send(Msg::Close);
        // Writer first: it commits what is queued, then drops the completer's channel, so the
        // completer runs the last completions and ends.
        let handles: Vec<JoinHandle<()>> = self.threads.lock().drain(..).collect();
        for h in handles {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        self.close();
    }
}
