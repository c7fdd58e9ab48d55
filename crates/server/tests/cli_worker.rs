//! `switchyard worker QUEUE -- CMD` against the real router: a job whose
//! command succeeds (its JSON output is the result; the job on stdin and in
//! the environment), fails retryably (tried again), fails non-retryably
//! (exit 65: dead letter at once), runs past its lease (extended, completed
//! once), runs past --timeout (killed, failed), and SIGTERM drains.

mod common;

use std::time::{Duration, Instant};

use common::cli::{cli, run, text, Background};
use common::Router;
use serde_json::{json, Value as Json};

const QUEUE: &str = "\
[[realm.queue]]
name = \"jobs\"
target = \"test.worker.jobs\"
lease_timeout = \"600ms\"
retry = { kind = \"fixed\", times = 5, spacing = \"100ms\" }
max_attempts = 5
";

/// The job's command: writes `id attempt mode` to runs.log, then acts by
/// the job's first argument.
const SCRIPT: &str = r#"input=$(cat)
mode=$(printf '%s' "$input" | sed -n 's/.*"args":\["\([a-z]*\)".*/\1/p')
echo "$SWITCHYARD_JOB_ID $SWITCHYARD_JOB_ATTEMPT $mode $SWITCHYARD_QUEUE" >> runs.log
case $mode in
  ok) printf '{"got": %s}\n' "$input" ;;
  flaky) [ "$SWITCHYARD_JOB_ATTEMPT" = 1 ] && { echo "try later" >&2; exit 75; }; echo '"second time"' ;;
  bad) echo "cannot parse the input" >&2; exit 65 ;;
  slow) sleep 2; echo '"slow done"' ;;
  stuck) echo $$ > "stuck-$SWITCHYARD_QUEUE.pid"; sleep 30 ;;
  short) sleep 1; echo '"short done"' ;;
  empty) ;;
esac
"#;

fn json_out(args: &[&str]) -> Json {
    let out = run(cli(args));
    assert!(
        out.status.success(),
        "{args:?}: {:?} {}",
        out.status.code(),
        text(&out.stderr)
    );
    serde_json::from_str(text(&out.stdout).trim()).expect("JSON")
}

/// Pushes a job with `mode` as its argument; its id.
fn push(url: &str, mode: &str, extra: &[&str]) -> u64 {
    let mut args = vec![
        "queue",
        "push",
        "jobs",
        mode,
        "--result-topic",
        "test.results",
        "--json",
        "--url",
        url,
    ];
    args.extend_from_slice(extra);
    json_out(&args)["id"].as_u64().expect("id")
}

/// `switchyard.queue.job` (its kwargs).
fn job(url: &str, id: u64) -> Json {
    let j = json_out(&[
        "call",
        "switchyard.queue.job",
        &id.to_string(),
        "--envelope",
        "--url",
        url,
    ]);
    j["kwargs"].clone()
}

fn runs(router: &Router) -> Vec<String> {
    std::fs::read_to_string(router.dir.path().join("runs.log"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn worker(router: &Router, extra: &[&str]) -> Background {
    let url = router.ws_url();
    let mut args = vec!["worker", "jobs", "--url", &url];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "sh", "-c", SCRIPT]);
    let mut c = cli(&args);
    c.current_dir(router.dir.path());
    let mut w = Background::spawn(c);
    w.wait_stderr("worker for queue jobs ready");
    w
}

#[test]
fn a_worker_command_completes_fails_dead_letters_extends_and_times_out() {
    let mut router = Router::start(QUEUE);
    let url = router.ws_url();
    let mut results = Background::spawn(cli(&["subscribe", "test.results", "--url", &url]));
    results.wait_stderr("subscribed");
    let mut w = worker(&router, &["--concurrency", "8", "--timeout", "3s"]);
    let ok = push(&url, "ok", &["--kw", "page=1"]);
    let flaky = push(&url, "flaky", &[]);
    let bad = push(&url, "bad", &[]);
    let slow = push(&url, "slow", &[]);
    let stuck = push(&url, "stuck", &["--max-attempts", "1"]);
    let empty = push(&url, "empty", &[]);
    // 6 jobs end: 4 completed, 2 dead.
    wait_for("every job to end", 15, || {
        let st = json_out(&["queue", "stats", "jobs", "--json", "--url", &url]);
        st["completed_total"] == 4 && st["dead"] == 2
    });
    let log = runs(&router);
    let count = |id: u64| {
        log.iter()
            .filter(|l| l.starts_with(&format!("{id} ")))
            .count()
    };
    // The job id, attempt and queue in the environment.
    assert!(log.contains(&format!("{ok} 1 ok jobs")), "{log:?}");
    assert_eq!(count(ok), 1);
    // Failed retryably (exit 75), then done on attempt 2.
    assert!(log.contains(&format!("{flaky} 2 flaky jobs")), "{log:?}");
    assert_eq!(count(flaky), 2);
    // Exit 65: dead at once.
    assert_eq!(count(bad), 1);
    let dead = job(&url, bad);
    assert_eq!(dead["status"]["state"], "dead", "{dead}");
    assert_eq!(dead["status"]["reason"], "non_retryable", "{dead}");
    assert_eq!(
        dead["status"]["last_error"]["uri"], "switchyard.queue.non_retryable",
        "{dead}"
    );
    // Ran 2 s on a 600 ms lease: extended, ran once.
    assert_eq!(count(slow), 1, "{log:?}");
    // Past --timeout: killed, failed (attempts exhausted).
    assert_eq!(count(stuck), 1);
    let st = job(&url, stuck);
    assert_eq!(
        st["status"]["last_error"]["uri"], "switchyard.error.command_timeout",
        "{st}"
    );
    assert_eq!(count(empty), 1);

    // Results: the command's JSON; the job on its stdin.
    let code = w.stop(libc::SIGTERM);
    assert_eq!(code, 0);
    std::thread::sleep(Duration::from_millis(300));
    results.stop(libc::SIGTERM);
    let events = results.stdout_lines();
    let result_of = |id: u64| {
        events
            .iter()
            .find(|e| e["kwargs"]["job"] == id)
            .unwrap_or_else(|| panic!("result of {id} in {events:?}"))
            .clone()
    };
    let r = result_of(ok);
    assert_eq!(r["kwargs"]["status"], "completed");
    assert_eq!(
        r["kwargs"]["args"],
        json!([{"got": {"id": ok, "queue": "jobs", "attempt": 1, "args": ["ok"], "kwargs": {"page": 1}}}]),
        "{r}"
    );
    assert_eq!(result_of(flaky)["kwargs"]["args"], json!(["second time"]));
    assert_eq!(result_of(slow)["kwargs"]["args"], json!(["slow done"]));
    assert_eq!(result_of(empty)["kwargs"]["status"], "completed");
    assert!(router.terminate().success());
}

#[test]
fn sigterm_drains_the_worker() {
    let mut router = Router::start(QUEUE);
    let url = router.ws_url();
    let mut w = worker(&router, &["--concurrency", "2", "--grace", "2s"]);
    let short = push(&url, "short", &[]);
    let stuck = push(&url, "stuck", &[]);
    wait_for("both jobs to start", 10, || runs(&router).len() == 2);
    let t0 = Instant::now();
    let code = w.stop(libc::SIGTERM);
    let took = t0.elapsed();
    assert_eq!(code, 0, "{}", w.all_stderr());
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(6),
        "{took:?}"
    );
    // The short job finished inside the grace; the stuck one was stopped
    // and failed retryably: it waits for its next attempt.
    let stats = json_out(&["queue", "stats", "jobs", "--json", "--url", &url]);
    assert_eq!(stats["completed_total"], 1, "{stats}");
    let _ = short;
    let st = job(&url, stuck);
    assert_eq!(
        st["status"]["last_error"]["uri"], "switchyard.error.command_stopped",
        "{st}"
    );
    assert_ne!(st["status"]["state"], "dead", "{st}");
    assert_eq!(st["status"]["attempts"], 1, "{st}");
    assert!(router.terminate().success());
}

/// The router's cancellation reaches the command: a call that times out
/// interrupts `switchyard register`'s command, and a job whose queue is
/// deleted (force) interrupts the worker's; both are killed, not left to run.
#[test]
fn interrupted_invocations_kill_their_command() {
    let mut router = Router::start(QUEUE);
    let url = router.ws_url();
    let dir = router.dir.path().to_path_buf();
    let mut c = cli(&[
        "register",
        "test.worker.slow",
        "--url",
        &url,
        "--",
        "sh",
        "-c",
        "echo $$ > register.pid; sleep 30",
    ]);
    c.current_dir(&dir);
    let mut reg = Background::spawn(c);
    reg.wait_stderr("registered");
    let out = run(cli(&[
        "call",
        "test.worker.slow",
        "--timeout",
        "500ms",
        "--url",
        &url,
    ]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let pid = std::fs::read_to_string(dir.join("register.pid")).expect("pid");
    wait_for("the register command killed", 5, || gone(&pid));

    // A queue declared at run time can be deleted with its running job.
    let out = run(cli(&[
        "call",
        "switchyard.queue.declare",
        "--kw",
        "name=tmp",
        "--kw",
        "target=test.worker.tmp",
        "--url",
        &url,
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut c = cli(&["worker", "tmp", "--url", &url, "--", "sh", "-c", SCRIPT]);
    c.current_dir(&dir);
    let mut w = Background::spawn(c);
    w.wait_stderr("worker for queue tmp ready");
    let out = run(cli(&["queue", "push", "tmp", "stuck", "--url", &url]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for("the job to start", 10, || runs(&router).len() == 1);
    let line = runs(&router)[0].clone();
    assert!(line.ends_with(" 1 stuck tmp"), "{line}");
    let pid_file = dir.join("stuck-tmp.pid");
    wait_for("the pid file", 5, || {
        std::fs::read_to_string(&pid_file).is_ok_and(|p| p.ends_with('\n'))
    });
    let pid = std::fs::read_to_string(&pid_file).expect("pid");
    assert!(!gone(&pid), "the job's command runs");
    let out = run(cli(&[
        "call",
        "switchyard.queue.delete",
        "tmp",
        "--kw",
        "force=true",
        "--url",
        &url,
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for("the job's command killed", 5, || gone(&pid));
    assert_eq!(w.stop(libc::SIGTERM), 0);
    assert_eq!(reg.stop(libc::SIGTERM), 0);
    assert!(router.terminate().success());
}

/// Whether a process is gone (or a zombie nobody reaped yet).
fn gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}
