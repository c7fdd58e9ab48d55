//! `switchyard queue list|stats|peek|dead|requeue|purge|delete|push` against the
//! real router binary: tables and `--json`, push options, dead letters made
//! by a worker that is itself `switchyard register` with a failing command,
//! requeue and purge counts, and the exit codes of errors.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::cli::{cli, run, text};
use common::Router;
use serde_json::{json, Value as Json};

const QUEUES: &str = "\
[[realm.queue]]
name = \"pdf\"
target = \"test.cli.pdf\"

[[realm.queue]]
name = \"fail\"
target = \"test.cli.fail\"
retry = \"none\"
";

/// `switchyard queue ARGS... --url URL`: must succeed; its standard output.
fn queue(url: &str, args: &[&str]) -> String {
    let mut all = vec!["queue"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--url", url]);
    let out = run(cli(&all));
    assert!(
        out.status.success(),
        "{all:?}: exit {:?}: {}",
        out.status.code(),
        text(&out.stderr)
    );
    assert_eq!(text(&out.stderr), "", "{all:?}: nothing on stderr");
    text(&out.stdout)
}

/// The same with `--json`: the parsed line.
fn queue_json(url: &str, args: &[&str]) -> Json {
    let mut all = args.to_vec();
    all.push("--json");
    let out = queue(url, &all);
    assert_eq!(out.lines().count(), 1, "one line of JSON: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{out}: {e}"))
}

/// The cells of a table's lines (split at runs of two or more spaces).
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect()
        })
        .collect()
}

fn stat(url: &str, q: &str, field: &str) -> u64 {
    queue_json(url, &["stats", q])[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} of {q}"))
}

/// `switchyard register` serving a procedure in the background; killed on drop.
struct Worker {
    child: Child,
    stderr: mpsc::Receiver<String>,
}

impl Worker {
    fn start(url: &str, procedure: &str, script: &str) -> Worker {
        let mut child = cli(&[
            "register", procedure, "--url", url, "--", "sh", "-c", script,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn register");
        let err = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let w = Worker { child, stderr: rx };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match w.stderr.recv_timeout(left) {
                Ok(line) if line.contains("registered") => return w,
                Ok(_) => {}
                Err(_) => panic!("register did not start"),
            }
        }
    }

    /// SIGTERM; the exit code.
    fn stop(mut self) -> Option<i32> {
        // SAFETY: kill(2) on our own, not yet reaped child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().ok().and_then(|s| s.code())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls until `pred(stats)`.
fn wait_stats(url: &str, q: &str, what: &str, pred: impl Fn(&Json) -> bool) -> Json {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = queue_json(url, &["stats", q]);
        if pred(&st) {
            return st;
        }
        assert!(Instant::now() < deadline, "{q}: no {what}: {st}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn list_stats_push_and_peek() {
    let r = Router::start(QUEUES);
    let ws = r.ws_url();

    let list = queue(&ws, &["list"]);
    let t = rows(&list);
    assert_eq!(
        t[0],
        [
            "QUEUE",
            "READY",
            "SCHEDULED",
            "IN_FLIGHT",
            "DEAD",
            "COMPLETED",
            "RETRIED",
            "DEAD_LETTERED",
            "OLDEST_READY"
        ],
        "{list}"
    );
    assert_eq!(
        t[1],
        ["fail", "0", "0", "0", "0", "0", "0", "0", "-"],
        "{list}"
    );
    assert_eq!(t[2][0], "pdf", "{list}");
    assert_eq!(t.len(), 3, "{list}");
    let names: Vec<Json> = queue_json(&ws, &["list"])
        .as_array()
        .expect("array")
        .iter()
        .map(|s| s["name"].clone())
        .collect();
    assert_eq!(names, [json!("fail"), json!("pdf")]);

    // push: the id; the same idempotency key again: the id and "duplicate".
    let id: u64 = queue(
        &ws,
        &[
            "push",
            "pdf",
            "42",
            "hello world",
            "{\"a\": [1, null]}",
            "-3",
            "--kw",
            "to=a@b.c",
            "--priority",
            "high",
            "--delay",
            "1h",
            "--idempotency-key",
            "order-17",
            "--result-topic",
            "com.test.cli.done",
        ],
    )
    .trim()
    .parse()
    .expect("the job id");
    let again = queue(&ws, &["push", "pdf", "43", "--idempotency-key", "order-17"]);
    assert_eq!(again.trim(), format!("{id} duplicate"));
    // --json, over RawSocket with MessagePack, with run_at in unix ms
    let rs = r.rs_url();
    let in_an_hour = (std::time::SystemTime::now() + Duration::from_secs(3600))
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis()
        .to_string();
    let pushed = queue_json(
        &rs,
        &[
            "push",
            "pdf",
            "--run-at",
            &in_an_hour,
            "--serializer",
            "msgpack",
            "--retry",
            "none",
        ],
    );
    let second = pushed["id"].as_u64().expect("id");
    assert!(second > id, "{pushed}");
    assert_eq!(pushed["duplicate"], json!(false));

    // stats: a key/value table and JSON
    let st = queue(&ws, &["stats", "pdf"]);
    let t = rows(&st);
    assert!(
        t.contains(&vec!["queue".to_string(), "pdf".to_string()]),
        "{st}"
    );
    assert!(
        t.contains(&vec!["scheduled".to_string(), "2".to_string()]),
        "{st}"
    );
    assert!(
        t.contains(&vec!["idempotency keys".to_string(), "1".to_string()]),
        "{st}"
    );
    let js = queue_json(&ws, &["stats", "pdf"]);
    assert_eq!(
        (js["scheduled"].as_u64(), js["ready"].as_u64()),
        (Some(2), Some(0)),
        "{js}"
    );

    // peek: dispatch order (priority 7 first), the payload
    let peek = queue(&ws, &["peek", "pdf"]);
    let t = rows(&peek);
    assert_eq!(
        t[0],
        ["ID", "PRIORITY", "STATE", "ATTEMPTS", "RUN_AT", "ARGS"],
        "{peek}"
    );
    assert_eq!(t.len(), 3, "{peek}");
    assert_eq!(
        t[1][..4],
        [id.to_string(), "7".into(), "scheduled".into(), "0".into()],
        "{peek}"
    );
    assert!(
        t[1][4].ends_with('Z') && t[1][4].len() == 24,
        "RFC 3339 run_at: {peek}"
    );
    assert_eq!(
        t[1][5], r#"[42,"hello world",{"a":[1,null]},-3] {"to":"a@b.c"}"#,
        "{peek}"
    );
    assert_eq!(
        t[2][..3],
        [second.to_string(), "5".into(), "scheduled".into()],
        "{peek}"
    );
    let jobs = queue_json(&ws, &["peek", "pdf", "--limit", "1"]);
    let jobs = jobs.as_array().expect("array");
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["job"]["id"], json!(id));
    assert_eq!(
        jobs[0]["job"]["args"],
        json!([42, "hello world", {"a": [1, null]}, -3])
    );
    assert_eq!(jobs[0]["job"]["kwargs"], json!({"to": "a@b.c"}));
    assert_eq!(jobs[0]["job"]["idempotency_key"], json!("order-17"));
    assert_eq!(jobs[0]["job"]["result_topic"], json!("com.test.cli.done"));
    assert_eq!(
        queue_json(&ws, &["peek", "pdf", "--limit", "5"])
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    // purge the waiting jobs: the count
    assert_eq!(
        queue(&ws, &["purge", "pdf", "--which", "dead"]).trim(),
        "purged 0"
    );
    assert_eq!(
        queue(&ws, &["purge", "pdf", "--which", "ready"]).trim(),
        "purged 2"
    );
    assert_eq!(queue(&ws, &["peek", "pdf"]).trim(), "no waiting jobs");
    assert_eq!(stat(&ws, "pdf", "scheduled"), 0);
}

#[test]
fn dead_requeue_and_purge() {
    let r = Router::start(QUEUES);
    let ws = r.ws_url();
    // The worker is the CLI itself, with a command that fails: retry none
    // dead-letters each job at once.
    let worker = Worker::start(&ws, "test.cli.fail", "echo boom >&2; exit 3");
    let first: u64 = queue(&ws, &["push", "fail", "1"])
        .trim()
        .parse()
        .expect("id");
    wait_stats(&ws, "fail", "1 dead", |s| s["dead"] == 1);
    let unix = r.unix_url();
    let second: u64 = queue(&unix, &["push", "fail", "2", "--serializer", "cbor"])
        .trim()
        .parse()
        .expect("id");
    wait_stats(&ws, "fail", "2 dead", |s| s["dead"] == 2);

    let dead = queue(&ws, &["dead", "fail"]);
    let t = rows(&dead);
    assert_eq!(
        t[0],
        ["ID", "REASON", "ATTEMPTS", "DIED_AT", "LAST_ERROR", "ARGS"],
        "{dead}"
    );
    assert_eq!(t.len(), 3, "{dead}");
    assert_eq!(t[1][0], second.to_string(), "newest first: {dead}");
    assert_eq!(t[2][0], first.to_string(), "{dead}");
    assert_eq!(t[1][1..3], ["policy_exhausted", "1"], "{dead}");
    assert!(
        t[1][4].starts_with("switchyard.error.command_failed: command exited with status 3"),
        "{dead}"
    );
    assert_eq!(t[1][5], "[2]", "{dead}");
    let js = queue_json(&ws, &["dead", "fail", "--limit", "1"]);
    assert_eq!(js.as_array().map(Vec::len), Some(1), "{js}");
    assert_eq!(js[0]["job"]["id"], json!(second));
    assert_eq!(js[0]["status"]["reason"], json!("policy_exhausted"));
    assert_eq!(
        js[0]["status"]["last_error"]["uri"],
        json!("switchyard.error.command_failed")
    );

    // Without a worker, requeued jobs wait (not dead).
    assert_eq!(worker.stop(), Some(0));
    assert_eq!(
        queue(&ws, &["requeue", "fail", "--job", &first.to_string()]).trim(),
        "requeued 1"
    );
    let st = queue_json(&ws, &["stats", "fail"]);
    assert_eq!(st["dead"], json!(1), "{st}");
    assert_eq!(
        queue_json(&ws, &["requeue", "fail", "--all"]),
        json!({"requeued": 1})
    );
    let st = queue_json(&ws, &["stats", "fail"]);
    assert_eq!(st["dead"], json!(0), "{st}");
    let waiting = ["ready", "scheduled", "in_flight"]
        .iter()
        .map(|k| st[k].as_u64().expect("count"))
        .sum::<u64>();
    assert_eq!(waiting, 2, "{st}");
    assert_eq!(queue(&ws, &["dead", "fail"]).trim(), "no dead jobs");
    assert_eq!(
        queue_json(&ws, &["purge", "fail", "--which", "all"]),
        json!({"purged": 2})
    );
    let st = queue_json(&ws, &["stats", "fail"]);
    assert_eq!(
        (
            st["ready"].as_u64(),
            st["scheduled"].as_u64(),
            st["dead"].as_u64()
        ),
        (Some(0), Some(0), Some(0)),
        "{st}"
    );
    assert_eq!(st["dead_lettered_total"], json!(2), "{st}");
}

#[test]
fn queue_errors_and_exit_codes() {
    let r = Router::start(QUEUES);
    let ws = r.ws_url();
    let case = |args: &[&str], code: i32, needles: &[&str]| {
        let out = run(cli(args));
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        for n in needles {
            assert!(err.contains(n), "{args:?}: no {n:?} in {err}");
        }
        assert_eq!(text(&out.stdout), "", "{args:?}: nothing on stdout");
    };
    // WAMP errors: the procedure, the URI and the router's message; exit 1
    case(
        &["queue", "stats", "nope", "--url", &ws],
        1,
        &["switchyard: switchyard.queue.stats: switchyard.queue.error.unknown_queue: unknown queue `nope`"],
    );
    case(
        &["queue", "push", "nope", "1", "--url", &ws],
        1,
        &["switchyard.queue.error.unknown_queue"],
    );
    case(
        &["queue", "push", "pdf", "--priority", "42", "--url", &ws],
        1,
        &[
            "switchyard.queue.error.invalid_argument",
            "42 is out of range",
        ],
    );
    case(
        &["queue", "push", "pdf", "--delay", "soon", "--url", &ws],
        1,
        &["switchyard.queue.error.invalid_argument", "soon"],
    );
    case(
        &["queue", "requeue", "pdf", "--job", "999999", "--url", &ws],
        1,
        &["switchyard.queue.error.invalid_argument", "999999"],
    );
    // nothing was stored by the refused pushes
    assert_eq!(stat(&ws, "pdf", "scheduled") + stat(&ws, "pdf", "ready"), 0);
    // bad command lines: exit 2
    case(
        &["queue", "requeue", "pdf", "--url", &ws],
        2,
        &["--job", "--all"],
    );
    case(
        &[
            "queue", "push", "pdf", "--delay", "1s", "--run-at", "0", "--url", &ws,
        ],
        2,
        &["--run-at"],
    );
    case(
        &["queue", "purge", "pdf", "--which", "some", "--url", &ws],
        2,
        &["--which"],
    );
    case(&["queue", "peek", "--url", &ws], 2, &["<QUEUE>"]);
    // no router: exit 3
    let closed = format!("ws://127.0.0.1:{}/ws", common::free_port());
    case(
        &["queue", "list", "--url", &closed],
        3,
        &["connection refused"],
    );
    // the help has examples and the connection options
    let out = run(cli(&["queue", "--help"]));
    assert!(out.status.success());
    let help = text(&out.stdout);
    assert!(
        help.contains("Examples:") && help.contains("switchyard queue push"),
        "{help}"
    );
    for sub in ["list", "stats", "peek", "dead", "requeue", "purge", "push"] {
        let out = run(cli(&["queue", sub, "--help"]));
        assert!(out.status.success(), "{sub}");
        let help = text(&out.stdout);
        assert!(
            help.contains("--url") && help.contains("--json"),
            "{sub}: {help}"
        );
    }
}

#[test]
fn delete_a_runtime_queue() {
    let r = Router::start(QUEUES);
    let ws = r.ws_url();
    let out = run(cli(&[
        "call",
        "switchyard.queue.declare",
        "--kw",
        "name=tmp",
        "--kw",
        "target=test.cli.tmp",
        "--url",
        &ws,
    ]));
    assert!(out.status.success(), "declare: {}", text(&out.stderr));
    queue(&ws, &["push", "tmp", "1"]);
    let refused = |args: &[&str], needle: &str| {
        let out = run(cli(args));
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(text(&out.stderr).contains(needle), "{}", text(&out.stderr));
    };
    refused(
        &["queue", "delete", "tmp", "--url", &ws],
        "switchyard.queue.error.not_empty",
    );
    refused(
        &["queue", "delete", "pdf", "--force", "--url", &ws],
        "switchyard.queue.error.configured_queue",
    );
    assert_eq!(
        queue(&ws, &["delete", "tmp", "--force"]).trim(),
        "deleted tmp with 1 jobs"
    );
    refused(
        &["queue", "stats", "tmp", "--url", &ws],
        "switchyard.queue.error.unknown_queue",
    );
}
