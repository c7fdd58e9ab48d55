//! Faults of the queue store, through the real binary: the disk holding it
//! fills up (a small tmpfs the test mounts, as root), and the store file is
//! truncated or corrupted while the router is down.
//!
//! * A full disk: pushes fail with an error that says so, nothing
//!   acknowledged is lost, the router keeps serving everything else, and
//!   pushes work again as soon as space comes back, without a restart.
//! * A damaged store: the router refuses to start, with an error naming the
//!   file and a non-zero exit, never a panic, and never starts on an empty or
//!   partial store as if all were well.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::queue::{stats, uint};
use common::Router;
use switchyard_client::{Dict, Serializer, Session, Value};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A tmpfs of `mib` MiB mounted on a fresh directory, unmounted on drop.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    /// `None` (the test is skipped, saying why) when not root.
    fn mount(mib: u32) -> Option<SmallFs> {
        if rustix::process::geteuid().as_raw() != 0 {
            eprintln!("SKIPPED: mounting a small file system needs root (run the test as root)");
            return None;
        }
        let dir = tempfile::tempdir().expect("mount point");
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
            .expect("run mount");
        assert!(ok.success(), "mount -t tmpfs failed (as root)");
        Some(SmallFs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `path` until the file system is full, or `max` bytes.
    fn fill(&self, path: &Path, max: u64) -> u64 {
        use std::io::Write;
        let mut f = std::fs::File::create(path).expect("filler");
        let block = vec![0x5au8; 64 * 1024];
        let mut written = 0u64;
        while written < max {
            match f.write(&block) {
                Ok(0) | Err(_) => break,
                Ok(n) => written += n as u64,
            }
        }
        let _ = f.sync_all();
        written
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn data_config(data: &Path, reserve: u64, ops_port: u16) -> String {
    format!(
        "[realm.queue_limits]\nmin_free_disk_bytes = {reserve}\n\n\
         [[realm.queue]]\nname = \"conf\"\ntarget = \"test.nobody\"\nmax_jobs = 0\n\n\
         [storage]\ndata_dir = \"{}\"\n\n\
         [[listener]]\ntype = \"operations\"\naddress = \"127.0.0.1:{ops_port}\"\n",
        data.display()
    )
}

/// The status of GET /readyz on the operations listener, and its body.
fn readyz(port: u16) -> (u16, String) {
    let r = common::http::request(port, "GET", "/readyz", "", "");
    (r.status, r.body)
}

async fn join(r: &Router) -> Session {
    Session::connect(&r.rs_url(), "realm1", Serializer::MsgPack)
        .await
        .expect("join")
}

async fn push(s: &Session, payload: Vec<u8>) -> Result<(), String> {
    s.call(
        "switchyard.queue.push",
        vec![Value::from("conf")],
        Dict::new().with("args", Value::List(vec![Value::Bytes(payload)])),
    )
    .await
    .map(|_| ())
    .map_err(|e| e.to_string())
}

/// Something unrelated to the queues still works: a call routed to a callee.
async fn rpc_works(caller: &Session, n: u64) {
    let (args, _) = tokio::time::timeout(
        Duration::from_secs(5),
        caller.call("test.echo", vec![Value::UInt(n)], Dict::new()),
    )
    .await
    .expect("RPC answered in time")
    .expect("RPC works");
    assert_eq!(args, vec![Value::UInt(n)]);
}

async fn echo_callee(r: &Router) -> Session {
    let s = join(r).await;
    s.register(
        "test.echo",
        |args, _| async move { Ok((args, Dict::new())) },
    )
    .await
    .expect("register");
    s
}

/// Fills the disk under the store: a filler file takes most of it, then
/// pushes of 200 KiB take the rest. `reserve` is the router's
/// `min_free_disk_bytes`. Returns the router (running), the filler and the
/// pushes acknowledged, and the error of the refused push.
fn fill_with_pushes(
    fs: &SmallFs,
    reserve: u64,
    filler_bytes: u64,
) -> (Router, PathBuf, u64, String, u16) {
    let data = fs.path().join("data");
    let ops = common::free_port();
    let router = Router::start(&data_config(&data, reserve, ops));
    let filler = fs.path().join("filler");
    fs.fill(&filler, filler_bytes);
    let (acked, error) = runtime().block_on(async {
        let s = join(&router).await;
        let _callee = echo_callee(&router).await;
        let mut acked = 0u64;
        let mut error = None;
        for i in 0..400u64 {
            match push(&s, vec![i as u8; 200 * 1024]).await {
                Ok(()) => acked += 1,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        let error = error.expect("the disk fills up");
        // Everything else keeps working: RPC, and reading the queue.
        rpc_works(&s, 1).await;
        let st = stats(&s, "conf").await;
        assert_eq!(uint(&st, "ready"), acked, "{st:?}");
        // Further pushes fail the same way, quickly.
        for _ in 0..3 {
            let t = Instant::now();
            let e = push(&s, vec![1; 200 * 1024]).await.expect_err("still full");
            assert!(e.to_lowercase().contains("no space"), "{e}");
            assert!(t.elapsed() < Duration::from_secs(2));
        }
        rpc_works(&s, 2).await;
        (acked, error)
    });
    (router, filler, acked, error, ops)
}

/// Space comes back: pushes work again within a few seconds, without a
/// restart; then a restart finds every acknowledged job.
fn space_returns(mut router: Router, filler: &Path, acked: u64, ops: u16) {
    std::fs::remove_file(filler).expect("remove the filler");
    let more = runtime().block_on(async {
        let s = join(&router).await;
        // The store tries to reopen its file 1, 2, 4, 8, 8... s apart.
        let freed = Instant::now();
        loop {
            match push(&s, vec![7; 200 * 1024]).await {
                Ok(()) => {
                    eprintln!(
                        "pushes work again {:?} after space came back",
                        freed.elapsed()
                    );
                    break;
                }
                Err(e) => {
                    assert!(
                        freed.elapsed() < Duration::from_secs(20),
                        "pushes still fail 20 s after space came back: {e}\n{}",
                        router.log_text()
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        for i in 0..9u8 {
            push(&s, vec![i; 200 * 1024])
                .await
                .expect("pushes work again");
        }
        let st = stats(&s, "conf").await;
        assert_eq!(uint(&st, "ready"), acked + 10, "{st:?}");
        10
    });
    // Ready again, without a restart.
    let (status, body) = readyz(ops);
    assert_eq!(status, 200, "{body}");
    // Nothing acknowledged is lost, across a kill -9 too.
    let status = router.signal(libc::SIGKILL);
    assert!(!status.success());
    router.start_again();
    runtime().block_on(async {
        let s = join(&router).await;
        let st = stats(&s, "conf").await;
        assert_eq!(
            uint(&st, "ready"),
            acked + more,
            "every acknowledged job is in the store after a restart: {st:?}"
        );
    });
}

/// No reserve: the disk really fills up, and the store's writes fail with
/// ENOSPC. The push says "No space left on device"; the router keeps
/// serving; once the filler is deleted, the store reopens its file by
/// itself and pushes work again, without a restart.
#[test]
fn a_full_disk_fails_pushes_clearly_and_recovers_when_space_returns() {
    let Some(fs) = SmallFs::mount(24) else { return };
    let (router, filler, acked, error, ops) = fill_with_pushes(&fs, 0, 16 * 1024 * 1024);
    eprintln!("no reserve: {acked} pushes of 200 KiB acknowledged, then: {error}");
    assert!(
        error.contains("switchyard.queue.error.store") && error.contains("No space left on device"),
        "{error}"
    );
    assert!(acked > 0, "some pushes fit before the disk was full");
    let log = router.log_text();
    assert!(log.contains("No space left on device"), "{log}");
    // While the store refuses writes, the node says it is not ready.
    let (status, body) = readyz(ops);
    assert_eq!(status, 503, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        report["not_ready"][0], "queue store of realm \"realm1\" refuses writes (see the log)",
        "{body}"
    );
    space_returns(router, &filler, acked, ops);
}

/// With the reserve (`min_free_disk_bytes`), pushes are refused before the
/// disk is full, with an error that names the reserve; the store never
/// fails; pushes work again once space comes back.
#[test]
fn the_disk_reserve_refuses_pushes_before_the_disk_is_full() {
    let Some(fs) = SmallFs::mount(24) else { return };
    let (router, filler, acked, error, ops) =
        fill_with_pushes(&fs, 4 * 1024 * 1024, 12 * 1024 * 1024);
    eprintln!("reserve 4 MiB: {acked} pushes of 200 KiB acknowledged, then: {error}");
    assert!(
        error.contains("switchyard.queue.error.queue_full")
            && error.contains("no space for this push")
            && error.contains("min_free_disk_bytes"),
        "{error}"
    );
    assert!(!router.log_text().contains("No space left on device"));
    // The reserve kept the store writable: the node stays ready.
    assert_eq!(readyz(ops).0, 200);
    space_returns(router, &filler, acked, ops);
}

// ---------------------------------------------------------------------------
// A damaged store file

/// The store of a router that ran: `jobs` jobs of 1 KiB waiting in `conf`,
/// stopped cleanly. Returns the bytes of the file.
fn a_store_with_jobs(jobs: u64) -> Vec<u8> {
    let data = tempfile::tempdir().expect("data");
    let mut router = Router::start(&data_config(data.path(), 0, common::free_port()));
    runtime().block_on(async {
        let s = join(&router).await;
        for i in 0..jobs {
            push(&s, vec![(i % 251) as u8; 1024]).await.expect("push");
        }
    });
    assert!(router.terminate().success());
    std::fs::read(data.path().join("queues-realm1.redb")).expect("store file")
}

/// What a start on a store file gives.
enum Start {
    /// Exited (the code) with this log.
    Refused(Option<i32>, String),
    /// Started, with this many jobs ready in `conf`.
    Ran(u64, String),
}

/// Starts the binary on `store` (a copy put in a fresh data directory).
fn start_on(store: &[u8]) -> Start {
    start_with_log(store, None)
}

/// Starts the binary on `store` and, if given, the write-ahead log beside it.
fn start_with_log(store: &[u8], log: Option<&[u8]>) -> Start {
    let data = tempfile::tempdir().expect("data");
    let file = data.path().join("queues-realm1.redb");
    std::fs::write(&file, store).expect("store");
    if let Some(log) = log {
        std::fs::write(data.path().join("queues-realm1.redb-wal"), log).expect("log");
    }
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let dir = tempfile::tempdir().expect("dir");
    let port = common::free_port();
    let cfg = dir.path().join("switchyard.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[listener]]\ntype = \"rawsocket\"\naddress = \"127.0.0.1:{port}\"\n\n\
             [[realm]]\nname = \"realm1\"\n\n{}",
            data_config(data.path(), 0, common::free_port())
        ),
    )
    .expect("config");
    let log = dir.path().join("router.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn");
    let ready = concat!(" ", env!("CARGO_PKG_VERSION"), " ready");
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return Start::Refused(status.code(), text());
        }
        if text().contains(ready) {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("neither ready nor exited within 60 s:\n{}", text());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let ready = runtime().block_on(async {
        let s = Session::connect(
            &format!("rs://127.0.0.1:{port}"),
            "realm1",
            Serializer::Json,
        )
        .await
        .expect("join");
        uint(&stats(&s, "conf").await, "ready")
    });
    // SAFETY: kill(2) on the child we spawned and have not reaped.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let _ = child.wait();
    Start::Ran(ready, text())
}

/// A store damaged while the router was down: truncated at many offsets,
/// emptied, bytes flipped across the file, replaced by something else. Each
/// either refuses to start (a non-zero exit, an error naming the file, no
/// panic) or, where the damage hit no data (a byte of free space), starts
/// with every job. Never a panic, never a start with fewer jobs.
#[test]
fn a_damaged_store_is_refused_at_start_naming_the_file() {
    const JOBS: u64 = 300;
    let good = a_store_with_jobs(JOBS);
    let len = good.len();
    assert!(len > 64 * 1024, "a store of {len} bytes");
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        ("empty (0 bytes)".into(), Vec::new()),
        (
            "not a redb file".into(),
            b"# this is a text file, not a store\n".repeat(200),
        ),
        ("only the first 100 bytes".into(), good[..100].to_vec()),
    ];
    // Truncated at offsets spread over the file, and one byte short.
    for k in 1..8 {
        let at = len * k / 8 + 13 * k;
        cases.push((format!("truncated at {at} of {len}"), good[..at].to_vec()));
    }
    cases.push((
        format!("truncated at {} of {len}", len - 1),
        good[..len - 1].to_vec(),
    ));
    // 64 bytes inverted at offsets spread over the file (the header too).
    for at in [0usize, 600, 4096, 9000]
        .into_iter()
        .chain((1..10).map(|k| len * k / 10 + 77))
    {
        let mut bad = good.clone();
        for b in &mut bad[at..(at + 64).min(len)] {
            *b ^= 0xff;
        }
        cases.push((format!("64 bytes inverted at {at} of {len}"), bad));
    }
    let mut refused = 0;
    let mut intact = 0;
    for (what, bytes) in &cases {
        match start_on(bytes) {
            Start::Refused(code, log) => {
                assert!(
                    !log.contains("panicked"),
                    "{what}: the router panicked:\n{log}"
                );
                assert!(
                    code.is_some_and(|c| c != 0),
                    "{what}: exit {code:?}:\n{log}"
                );
                assert!(
                    log.contains("queues-realm1.redb"),
                    "{what}: the error does not name the file:\n{log}"
                );
                let line = log
                    .lines()
                    .find(|l| l.contains("queues-realm1.redb"))
                    .unwrap_or_default();
                eprintln!("{what}: refused: {line}");
                refused += 1;
            }
            Start::Ran(n, log) => {
                assert!(!log.contains("panicked"), "{what}: panicked:\n{log}");
                assert_eq!(
                    n, JOBS,
                    "{what}: started with {n} of {JOBS} jobs (silent loss):\n{log}"
                );
                eprintln!("{what}: started with all {n} jobs (the damage hit no live data)");
                intact += 1;
            }
        }
    }
    eprintln!(
        "{} damaged stores: {refused} refused, {intact} started intact",
        cases.len()
    );
    assert!(refused >= cases.len() - 4, "most damage is detected");
}

// ---------------------------------------------------------------------------
// The write-ahead log after a crash

/// The frames of a log: (offset, end) of each (header: "SYWL", u32 body length, u64 LSN,
/// u64 lap, two CRCs: 32 bytes).
fn log_frames(log: &[u8]) -> Vec<(usize, usize)> {
    let mut at = 0;
    let mut out = Vec::new();
    while log.len() >= at + 32 && &log[at..at + 4] == b"SYWL" {
        let len = u32::from_le_bytes(log[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
        out.push((at, at + 32 + len));
        at += 32 + len;
    }
    out
}

/// A router killed (SIGKILL) after `jobs` acknowledged pushes, one at a time: its store and
/// log as the crash left them. The pushes since the start are in the log (its frames), and
/// only there.
fn a_crashed_store(jobs: u64) -> (Vec<u8>, Vec<u8>) {
    let data = tempfile::tempdir().expect("data");
    let mut router = Router::start(&data_config(data.path(), 0, common::free_port()));
    runtime().block_on(async {
        let s = join(&router).await;
        for i in 0..jobs {
            push(&s, vec![(i % 251) as u8; 1024]).await.expect("push");
        }
    });
    assert!(!router.signal(libc::SIGKILL).success());
    (
        std::fs::read(data.path().join("queues-realm1.redb")).expect("store file"),
        std::fs::read(data.path().join("queues-realm1.redb-wal")).expect("log file"),
    )
}

/// After a crash, the acknowledged pushes that only the log holds are replayed at start; a
/// frame cut short by the crash is dropped; a damaged frame followed by good ones stops the
/// start with an error naming the log (exit status 1, no panic).
#[test]
fn a_crashed_store_replays_its_log_and_a_damaged_log_is_refused() {
    const JOBS: u64 = 20;
    let (store, log) = a_crashed_store(JOBS);
    let frames = log_frames(&log);
    assert!(frames.len() >= JOBS as usize, "{} frames", frames.len());

    match start_with_log(&store, Some(&log)) {
        Start::Ran(n, text) => {
            assert_eq!(n, JOBS, "every acknowledged push is back:\n{text}");
            assert!(text.contains("replayed the log"), "{text}");
        }
        Start::Refused(code, text) => panic!("refused ({code:?}):\n{text}"),
    }

    // The last frame cut in half: dropped (its push was never acknowledged).
    let (last, end) = *frames.last().expect("a frame");
    let mut torn = log.clone();
    torn[(last + end) / 2..end].fill(0);
    match start_with_log(&store, Some(&torn)) {
        Start::Ran(n, text) => assert_eq!(n, JOBS - 1, "{text}"),
        Start::Refused(code, text) => panic!("a torn tail refused ({code:?}):\n{text}"),
    }

    // A byte of the second frame's body changed: refused, naming the log.
    let mut bad = log.clone();
    bad[frames[1].0 + 32 + 6] ^= 0x10;
    match start_with_log(&store, Some(&bad)) {
        Start::Refused(code, text) => {
            assert!(!text.contains("panicked"), "{text}");
            assert!(code.is_some_and(|c| c != 0), "exit {code:?}:\n{text}");
            let line = text
                .lines()
                .find(|l| l.contains("queues-realm1.redb-wal is damaged"))
                .unwrap_or_else(|| panic!("the error does not name the log:\n{text}"));
            eprintln!("damaged log: refused: {line}");
        }
        Start::Ran(n, text) => panic!("a damaged log started with {n} jobs:\n{text}"),
    }
}
