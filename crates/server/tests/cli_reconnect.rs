//! The long-running client commands survive a router restart: `switchyard
//! subscribe`, `register` and `worker` reconnect (same port, new router
//! process), join again and re-establish their subscription and
//! registrations; a job that was running when the router stopped is done
//! after the restart (nothing acknowledged is lost). With --no-reconnect a
//! lost router still ends the command with exit status 3 or 4.

mod common;

use std::time::{Duration, Instant};

use common::cli::{cli, run, text, Background};
use common::Router;
use serde_json::Value as Json;

const QUEUE: &str = "\
[[realm.queue]]
name = \"jobs\"
target = \"test.reconnect.jobs\"
lease_timeout = \"5s\"
";

fn ok(args: &[&str]) -> String {
    let out = run(cli(args));
    assert!(
        out.status.success(),
        "{args:?}: {:?} {}",
        out.status.code(),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn stats(url: &str) -> Json {
    serde_json::from_str(ok(&["queue", "stats", "jobs", "--json", "--url", url]).trim())
        .expect("JSON")
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn subscribe_register_and_worker_survive_a_router_restart() {
    let mut router = Router::start(QUEUE);
    let url = router.ws_url();
    let rs_url = router.rs_url();
    let mut sub = Background::spawn(cli(&["subscribe", "test.reconnect.topic", "--url", &url]));
    sub.wait_stderr("subscribed");
    // Over RawSocket, for the other transport.
    let mut reg = Background::spawn(cli(&[
        "register",
        "test.reconnect.echo",
        "--url",
        &rs_url,
        "--",
        "sh",
        "-c",
        "echo '\"pong\"'",
    ]));
    reg.wait_stderr("registered");
    let mut c = cli(&[
        "worker",
        "jobs",
        "--url",
        &url,
        "--",
        "sh",
        "-c",
        "read job; echo \"$SWITCHYARD_JOB_ATTEMPT\" >> attempts.log; sleep 1; echo '\"done\"'",
    ]);
    c.current_dir(router.dir.path());
    let mut worker = Background::spawn(c);
    worker.wait_stderr("worker for queue jobs ready");

    // A job that runs while the router stops.
    ok(&["queue", "push", "jobs", "1", "--url", &url]);
    let attempts = router.dir.path().join("attempts.log");
    wait_for("the job to start", 10, || attempts.exists());
    router.restart();

    for b in [&mut sub, &mut reg, &mut worker] {
        b.wait_stderr("reconnected");
    }
    ok(&[
        "publish",
        "test.reconnect.topic",
        "after-restart",
        "--url",
        &url,
    ]);
    assert_eq!(
        ok(&["call", "test.reconnect.echo", "--url", &url]).trim(),
        "\"pong\""
    );
    // The job, leased when the router stopped, is recovered and done by the
    // reconnected worker; a new one too.
    ok(&["queue", "push", "jobs", "2", "--url", &url]);
    wait_for("both jobs done", 15, || stats(&url)["completed_total"] == 2);
    assert_eq!(stats(&url)["dead"], 0);

    assert_eq!(sub.stop(libc::SIGTERM), 0);
    let events = sub.stdout_lines();
    assert!(
        events.iter().any(|e| e["args"][0] == "after-restart"),
        "{events:?}"
    );
    assert_eq!(reg.stop(libc::SIGTERM), 0);
    assert_eq!(worker.stop(libc::SIGTERM), 0);
    assert!(router.terminate().success());
}

#[test]
fn without_reconnect_a_lost_router_ends_the_command() {
    let mut router = Router::start("");
    let url = router.ws_url();
    let mut sub = Background::spawn(cli(&[
        "subscribe",
        "test.reconnect.topic",
        "--no-reconnect",
        "--url",
        &url,
    ]));
    sub.wait_stderr("subscribed");
    assert!(router.terminate().success());
    // The router's GOODBYE (system_shutdown): the session ended, status 4.
    assert_eq!(sub.wait(), 4, "{}", sub.all_stderr());
}
