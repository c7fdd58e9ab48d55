//! The write-ahead log of the embedded store, through the `Store` trait and a real crash: a
//! child process (this test binary re-invoked with `CHILD_ENV` set) commits durable batches,
//! waits for each acknowledgement and aborts, without closing the store (no checkpoint). The
//! acknowledged commits are then in the log only, not durable in the redb file; opening the
//! store replays them. Also: a damaged frame stops the start naming the log; a torn last frame
//! is dropped; replaying twice gives the same state; the log wraps (laps) when it is full; a
//! store opened without the log replays a leftover log and removes it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{mpsc, Arc};

use switchyard_queue::store::{Batch, Mutation, Store};
use switchyard_queue::{
    Encoding, Job, JobId, JobState, JobStatus, Payload, Priority, RedbOptions, RedbStore,
    StoreError, Target,
};

const CHILD_ENV: &str = "SWITCHYARD_QUEUE_WAL_CHILD";
const META: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
const JOBS: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("jobs");

fn job(id: u64) -> Arc<Job> {
    Arc::new(Job {
        id: JobId(id),
        queue: "w".into(),
        payload_bytes: 0,
        target: Target::procedure("a.b"),
        priority: Priority::NORMAL,
        created_at_ms: 1,
        max_attempts: None,
        retry: None,
        idempotency_key: None,
        result_topic: None,
    })
}

fn push(id: u64, size: usize) -> Vec<Mutation> {
    vec![
        Mutation::PutJob {
            job: job(id),
            status: JobStatus {
                state: JobState::Ready,
                run_at_ms: 1,
                attempts: 0,
                epoch: 0,
                last_error: None,
            },
        },
        Mutation::PutPayload {
            id: JobId(id),
            payload: Payload {
                encoding: Encoding::Raw,
                bytes: vec![(id % 251) as u8; size].into(),
            },
        },
    ]
}

fn wal_of(store: &Path) -> PathBuf {
    let mut name = store.file_name().unwrap().to_os_string();
    name.push("-wal");
    store.with_file_name(name)
}

fn options(wal_bytes: u64) -> RedbOptions {
    RedbOptions {
        wal_bytes,
        ..RedbOptions::default()
    }
}

/// The child: jobs 1..=N pushed (one durable batch each, one at a time), jobs divisible
/// by 5 then deleted again (durable), every job leased (non-durable); each acknowledgement
/// awaited; then abort.
#[test]
fn wal_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let n: u64 = std::env::var("WAL_JOBS").unwrap().parse().unwrap();
    let size: usize = std::env::var("WAL_SIZE").unwrap().parse().unwrap();
    let wal_bytes: u64 = std::env::var("WAL_BYTES").unwrap().parse().unwrap();
    let s = RedbStore::open(&path, options(wal_bytes)).unwrap();
    let (tx, rx) = mpsc::channel();
    let submit = |mutations: Vec<Mutation>, durable: bool| {
        let tx = tx.clone();
        s.submit(Batch {
            mutations,
            done: Some(Box::new(move |r: Result<(), StoreError>| {
                let _ = tx.send(r);
            })),
            durable,
        })
        .unwrap();
    };
    // One at a time: a frame each.
    for id in 1..=n {
        submit(push(id, size), true);
        rx.recv().unwrap().unwrap();
    }
    for id in 1..=n {
        submit(
            vec![Mutation::PutLease {
                id: JobId(id),
                epoch: 1,
                deadline_ms: 99,
                attempts: 1,
            }],
            false,
        );
    }
    for id in (5..=n).step_by(5) {
        submit(vec![Mutation::RemoveJob(JobId(id))], true);
    }
    let batches = n + n / 5;
    for _ in 0..batches {
        rx.recv().unwrap().unwrap();
    }
    // Crash: no close, no checkpoint.
    std::process::abort();
}

/// Runs the child on a fresh store in `dir`; returns the store's path.
fn crashed_store(dir: &Path, jobs: u64, size: usize, wal_bytes: u64) -> PathBuf {
    let path = dir.join("q.redb");
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "wal_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &path)
        .env("WAL_JOBS", jobs.to_string())
        .env("WAL_SIZE", size.to_string())
        .env("WAL_BYTES", wal_bytes.to_string())
        .status()
        .unwrap();
    assert!(!status.success(), "the child aborts");
    path
}

/// Job ids in the redb file as it is durably, without the log.
fn ids_in_redb_file(path: &Path) -> Vec<u64> {
    use redb::{ReadableDatabase, ReadableTable};
    let db = redb::Database::open(path).unwrap();
    let t = db.begin_read().unwrap();
    let jobs = t.open_table(JOBS).unwrap();
    jobs.iter().unwrap().map(|r| r.unwrap().0.value()).collect()
}

/// Everything the store gives back: job ids with their lease epoch, and each payload.
fn contents(path: &Path) -> Vec<(u64, u64, Option<Payload>)> {
    let s = RedbStore::open(path, RedbOptions::default()).unwrap();
    let snap = s.load(0).unwrap();
    let mut out: Vec<(u64, u64, Option<Payload>)> = snap
        .jobs
        .iter()
        .map(|(j, st)| {
            let p = s.payloads(&[j.id]).unwrap().pop().unwrap();
            (j.id.0, st.epoch, p)
        })
        .collect();
    out.sort_by_key(|r| r.0);
    s.close();
    out
}

fn expected_ids(n: u64) -> Vec<u64> {
    (1..=n).filter(|id| id % 5 != 0).collect()
}

/// Acknowledged commits that only the log holds come back after a crash, deletions included,
/// with their payloads.
#[test]
fn acknowledged_commits_in_the_log_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = crashed_store(dir.path(), 200, 100, 16 << 20);
    assert!(wal_of(&path).metadata().unwrap().len() > 0);
    assert!(
        ids_in_redb_file(&path).is_empty(),
        "before the replay the redb file holds none of them (they are in the log only)"
    );
    let got = contents(&path);
    let ids: Vec<u64> = got.iter().map(|r| r.0).collect();
    assert_eq!(ids, expected_ids(200));
    for (id, _, p) in &got {
        let p = p.as_ref().expect("payload");
        assert_eq!(&p.bytes[..], &vec![(*id % 251) as u8; 100][..]);
    }
    // The replay was checkpointed: the redb file holds them now.
    assert_eq!(ids_in_redb_file(&path), expected_ids(200));
}

/// Replaying frames onto a store that already holds them (redb kept some non-durable commits
/// across a close) gives the same state as replaying them once.
#[test]
fn replaying_twice_gives_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = crashed_store(dir.path(), 120, 50, 16 << 20);
    let wal = std::fs::read(wal_of(&path)).unwrap();
    // The lap its frames belong to (header bytes 16..24).
    let lap = u64::from_le_bytes(wal[16..24].try_into().unwrap());
    let once = contents(&path);
    assert_eq!(once.len(), expected_ids(120).len());
    // The replayed and checkpointed file, its log position set back, the log put back.
    {
        use redb::ReadableTable;
        let db = redb::Database::create(&path).unwrap();
        let t = db.begin_write().unwrap();
        {
            let mut meta = t.open_table(META).unwrap();
            assert!(meta.get("wal_lsn").unwrap().unwrap().value() > 0);
            meta.insert("wal_lsn", 0).unwrap();
            assert_ne!(
                meta.get("wal_lap").unwrap().unwrap().value(),
                lap,
                "a new lap"
            );
            meta.insert("wal_lap", lap).unwrap();
        }
        t.commit().unwrap();
    }
    std::fs::write(wal_of(&path), &wal).unwrap();
    let twice = contents(&path);
    assert_eq!(once, twice);
}

/// Bytes of a frame's header (magic, u32 length, u64 LSN, u64 lap, two CRCs).
const HEADER: usize = 32;

/// The offsets of the frames in a log.
fn frame_offsets(wal: &[u8]) -> Vec<usize> {
    let mut at = 0;
    let mut out = Vec::new();
    while wal.len() >= at + HEADER && &wal[at..at + 4] == b"SYWL" {
        out.push(at);
        at += HEADER + u32::from_le_bytes(wal[at + 4..at + 8].try_into().unwrap()) as usize;
    }
    out
}

/// A damaged frame followed by good ones: the store refuses to open, naming the log, and
/// leaves the log as it is. A torn last frame (the crash cut the write that would have acknowledged
/// it) is dropped.
#[test]
fn a_damaged_log_is_refused_and_a_torn_tail_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = crashed_store(dir.path(), 50, 3000, 16 << 20);
    let wal_path = wal_of(&path);
    let good = std::fs::read(&wal_path).unwrap();
    let redb_before = std::fs::read(&path).unwrap();
    let frames = frame_offsets(&good);
    assert!(frames.len() >= 3, "{} frames", frames.len());

    let mut bad = good.clone();
    bad[frames[1] + HEADER + 7] ^= 1;
    std::fs::write(&wal_path, &bad).unwrap();
    let e = RedbStore::open(&path, RedbOptions::default())
        .err()
        .expect("refused");
    let msg = e.to_string();
    assert!(matches!(e, StoreError::Corrupt(_)), "{msg}");
    assert!(msg.contains(&wal_path.display().to_string()), "{msg}");
    assert!(
        std::fs::read(&wal_path).unwrap() == bad,
        "the log was left as it is"
    );

    // Torn: the last frame cut in half. It is dropped: the store holds what the frames before
    // it hold, no less, and opens.
    let last = *frames.last().unwrap();
    let end =
        last + HEADER + u32::from_le_bytes(good[last + 4..last + 8].try_into().unwrap()) as usize;
    let mut torn = good.clone();
    torn[(last + end) / 2..end].fill(0);
    std::fs::write(&wal_path, &torn).unwrap();
    let got = contents(&path);
    let with = |log: &[u8]| {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("q.redb");
        std::fs::write(&p, &redb_before).unwrap();
        std::fs::write(wal_of(&p), log).unwrap();
        contents(&p)
    };
    let mut before_last = good.clone();
    before_last[last..].fill(0);
    assert_eq!(got, with(&before_last));
    assert!(got != with(&good), "the last frame held commits");
}

/// A log smaller than the commits: it wraps after a checkpoint (several laps), the file stays
/// near its size, and nothing acknowledged is lost.
#[test]
fn the_log_wraps_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // 300 × 16 KiB: about 5 laps of 1 MiB.
    let path = crashed_store(dir.path(), 300, 16 * 1024, 1 << 20);
    let len = wal_of(&path).metadata().unwrap().len();
    assert!(len <= 2 << 20, "the log is {len} bytes");
    assert!(
        !ids_in_redb_file(&path).is_empty(),
        "checkpoints made earlier commits durable in redb"
    );
    let ids: Vec<u64> = contents(&path).iter().map(|r| r.0).collect();
    assert_eq!(ids, expected_ids(300));
}

/// A store opened without the log (`wal = false`) still replays a log left by a crash, then
/// removes it; its commits are durable redb commits from then on.
#[test]
fn a_leftover_log_is_replayed_without_the_log_option() {
    let dir = tempfile::tempdir().unwrap();
    let path = crashed_store(dir.path(), 40, 10, 16 << 20);
    let s = RedbStore::open(
        &path,
        RedbOptions {
            wal: false,
            ..RedbOptions::default()
        },
    )
    .unwrap();
    assert!(!wal_of(&path).exists(), "the log was removed");
    assert_eq!(s.load(0).unwrap().jobs.len(), expected_ids(40).len());
    drop(s);
    assert_eq!(ids_in_redb_file(&path), expected_ids(40));
}

/// A tmpfs of `mib` MiB, unmounted on drop; `None` (skipped) when not root.
struct SmallFs(tempfile::TempDir);

impl SmallFs {
    fn mount(mib: u32) -> Option<SmallFs> {
        use std::os::unix::fs::MetadataExt;
        // The owner of /proc/self is this process's user.
        if std::fs::metadata("/proc/self")
            .map(|m| m.uid())
            .unwrap_or(1)
            != 0
        {
            eprintln!("SKIPPED: mounting a small file system needs root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(ok.success(), "mount -t tmpfs");
        Some(SmallFs(dir))
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

fn commit(s: &RedbStore, mutations: Vec<Mutation>) -> Result<(), StoreError> {
    let (tx, rx) = mpsc::channel();
    s.submit(Batch {
        mutations,
        done: Some(Box::new(move |r| {
            let _ = tx.send(r);
        })),
        durable: true,
    })?;
    rx.recv().unwrap_or(Err(StoreError::Closed))
}

/// The log itself runs out of room (a lap larger than the disk, so its room could not be
/// reserved): the push whose frame failed is refused and forgotten, every acknowledged one
/// stays, and once space is back the store reopens by itself (replaying the log) and takes
/// writes again.
#[test]
fn a_full_disk_under_the_log_fails_the_push_and_recovers() {
    let Some(fs) = SmallFs::mount(24) else { return };
    let path = fs.0.path().join("q.redb");
    let s = RedbStore::open(&path, options(64 << 20)).unwrap();
    let filler = fs.0.path().join("filler");
    std::fs::write(&filler, vec![1u8; 20 << 20]).unwrap();
    let mut acked = 0u64;
    let error = loop {
        match commit(&s, push(acked + 1, 100 * 1024)) {
            Ok(()) => acked += 1,
            Err(e) => break e,
        }
        assert!(acked < 100, "the disk never filled up");
    };
    assert!(acked > 0);
    assert!(
        error.to_string().contains("No space left on device"),
        "{error}"
    );
    std::fs::remove_file(&filler).unwrap();
    let t = std::time::Instant::now();
    loop {
        match commit(&s, push(1000, 10)) {
            Ok(()) => break,
            Err(e) => {
                assert!(
                    t.elapsed() < std::time::Duration::from_secs(20),
                    "still failing 20 s after space came back: {e}"
                );
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
    eprintln!(
        "{acked} acknowledged, then {error}; writes again after {:?}",
        t.elapsed()
    );
    let mut ids: Vec<u64> = s
        .load(0)
        .unwrap()
        .jobs
        .iter()
        .map(|(j, _)| j.id.0)
        .collect();
    ids.sort();
    let mut want: Vec<u64> = (1..=acked).collect();
    want.push(1000);
    assert_eq!(
        ids, want,
        "the refused push is forgotten, the acknowledged ones stay"
    );
    drop(s);
    let again: Vec<u64> = contents(&path).iter().map(|r| r.0).collect();
    assert_eq!(again, want);
}

fn submit_non_durable(
    s: &RedbStore,
    mutations: Vec<Mutation>,
) -> mpsc::Receiver<Result<(), StoreError>> {
    let (tx, rx) = mpsc::channel();
    s.submit(Batch {
        mutations,
        done: Some(Box::new(move |r| {
            let _ = tx.send(r);
        })),
        durable: false,
    })
    .unwrap();
    rx
}

/// Non-durable commits (a lease, a completion) wait for the next durable commit to be
/// written, and their callers hear back with it; that commit, or the checkpoint of a clean
/// close when none comes, puts them in the redb file too.
#[test]
fn non_durable_commits_land_with_the_next_durable_one_or_at_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.redb");
    let s = RedbStore::open(&path, RedbOptions::default()).unwrap();
    commit(&s, push(1, 10)).unwrap();
    commit(&s, push(2, 10)).unwrap();
    let leased = submit_non_durable(
        &s,
        vec![Mutation::PutLease {
            id: JobId(2),
            epoch: 7,
            deadline_ms: 99,
            attempts: 1,
        }],
    );
    commit(&s, push(3, 10)).unwrap();
    assert!(leased.recv().unwrap().is_ok());
    let epochs: Vec<(u64, u64)> = {
        let snap = s.load(0).unwrap();
        let mut v: Vec<(u64, u64)> = snap.jobs.iter().map(|(j, st)| (j.id.0, st.epoch)).collect();
        v.sort();
        v
    };
    assert_eq!(
        epochs,
        vec![(1, 0), (2, 7), (3, 0)],
        "the lease is read back"
    );
    // A completion that no durable commit follows: the close's checkpoint holds it.
    let completed = submit_non_durable(&s, vec![Mutation::RemoveJob(JobId(1))]);
    drop(s);
    assert!(completed.recv().unwrap().is_ok());
    assert_eq!(ids_in_redb_file(&path), vec![2, 3]);
    let back: Vec<(u64, u64)> = contents(&path).iter().map(|r| (r.0, r.1)).collect();
    assert_eq!(back, vec![(2, 7), (3, 0)]);
}
