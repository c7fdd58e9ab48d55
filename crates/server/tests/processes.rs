//! Supervised processes (`[[process]]`) against the real binary: output in
//! the log under the process's name, restarts with backoff and a crash
//! loop left stopped, `switchyard process list|stop|start|restart`
//! (authorized like any call), and shutdown with stubborn children: one
//! that ignores SIGTERM and one whose forked grandchild does; none is left.

mod common;

use std::time::{Duration, Instant};

use common::cli::{cli, run, text};
use common::Router;
use serde_json::Value as Json;

/// `switchyard process ARGS --json --url URL`: the parsed answer.
fn process(url: &str, args: &[&str]) -> Json {
    let mut all = vec!["process"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--json", "--url", url]);
    let out = run(cli(&all));
    assert!(
        out.status.success(),
        "{all:?}: exit {:?}: {}",
        out.status.code(),
        text(&out.stderr)
    );
    serde_json::from_str(text(&out.stdout).trim()).expect("JSON")
}

fn entry<'a>(list: &'a Json, name: &str) -> &'a Json {
    list.as_array()
        .and_then(|l| l.iter().find(|p| p["name"] == name))
        .unwrap_or_else(|| panic!("{name} in {list}"))
}

/// Waits (at most 10 s) until `f` holds.
fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
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

/// The /metrics page.
fn metrics(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics connect");
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut page = String::new();
    s.read_to_string(&mut page).expect("read");
    page
}

fn sh(name: &str, script: &str, extra: &str) -> String {
    format!(
        "[[process]]\nname = \"{name}\"\ncommand = \"sh\"\nargs = [\"-c\", '''{script}''']\n{extra}\n"
    )
}

#[test]
fn a_crashing_process_is_restarted_then_left_stopped_in_a_crash_loop() {
    let config = sh(
        "crasher",
        "echo \"crasher says hi from $$\"; exit 3",
        "restart = \"on-failure\"\nbackoff = { initial = \"50ms\", max = \"200ms\" }\n\
         crash_loop = { max_restarts = 3, window = \"1m\" }",
    ) + &sh(
        "steady",
        "echo \"steady up, MODE=$MODE in $(pwd)\"; exec sleep 30",
        "env = { MODE = \"blue\" }\nworking_dir = \"/tmp\"\nstop_timeout = \"2s\"",
    ) + &sh("once", "exit 0", "restart = \"on-failure\"")
        + &sh(
            "ticker",
            "echo tick",
            "restart = \"always\"\nbackoff = { initial = \"50ms\", max = \"50ms\" }\n\
             crash_loop = { max_restarts = 1000, window = \"1m\" }",
        )
        + &sh(
            "lazy",
            "exec sleep 30",
            "autostart = false\nstop_timeout = \"1s\"",
        )
        + &sh("never", "exit 1", "restart = \"never\"")
        + "[[process]]\nname = \"missing\"\ncommand = \"/no/such/program\"\nrestart = \"never\"\n";
    let metrics_port = common::free_port();
    let config = format!(
        "{config}\n[[listener]]\ntype = \"websocket\"\naddress = \"127.0.0.1:{metrics_port}\"\nmetrics_path = \"/metrics\"\n"
    );
    let mut router = Router::start(&config);
    let url = router.ws_url();
    wait_for("the crash loop", || {
        let log = router.log_text();
        log.contains("crash-looping") && log.matches("[crasher] crasher says hi").count() >= 4
    });
    let log = router.log_text();
    // 1 start + 3 restarts, each line prefixed with the name.
    assert_eq!(log.matches("[crasher] crasher says hi").count(), 4, "{log}");
    assert!(log.contains("ERROR"), "{log}");
    assert!(
        log.contains("[steady] steady up, MODE=blue in /tmp"),
        "{log}"
    );

    let list = process(&url, &["list"]);
    let crasher = entry(&list, "crasher");
    assert_eq!(crasher["status"], "crash_loop", "{list}");
    assert_eq!(crasher["running"], false);
    assert_eq!(crasher["restarts"], 3);
    assert_eq!(crasher["last_exit"], "exit status 3");
    let steady = entry(&list, "steady");
    assert_eq!(steady["status"], "running", "{list}");
    let pid = steady["pid"].as_u64().expect("pid").to_string();
    assert!(!gone(&pid));
    // Ended with 0 under on-failure: not restarted.
    assert_eq!(entry(&list, "once")["status"], "exited", "{list}");
    // `always` restarts after exit 0 too; `never` leaves it; `autostart =
    // false` waits for a start.
    wait_for("ticks", || {
        router.log_text().matches("[ticker] tick").count() >= 3
    });
    let list = process(&url, &["list"]);
    assert_eq!(entry(&list, "never")["status"], "exited", "{list}");
    assert_eq!(
        entry(&list, "never")["last_exit"],
        "exit status 1",
        "{list}"
    );
    assert_eq!(entry(&list, "never")["restarts"], 0, "{list}");
    let missing = entry(&list, "missing");
    assert_eq!(missing["status"], "exited", "{list}");
    assert!(
        missing["last_exit"]
            .as_str()
            .is_some_and(|e| e.starts_with("cannot start: ")),
        "{list}"
    );
    assert_eq!(entry(&list, "lazy")["status"], "stopped", "{list}");
    assert!(entry(&list, "lazy")["pid"].is_null(), "{list}");
    assert_eq!(process(&url, &["start", "lazy"])["status"], "running");
    let page = metrics(metrics_port);
    for line in [
        "switchyard_process_restarts_total{process=\"crasher\"} 3",
        "switchyard_process_crash_looping{process=\"crasher\"} 1",
        "switchyard_process_running{process=\"steady\"} 1",
        "switchyard_process_running{process=\"crasher\"} 0",
    ] {
        assert!(page.lines().any(|l| l == line), "{line} in {page}");
    }

    // stop, start and restart on request.
    let stopped = process(&url, &["stop", "steady"]);
    assert_eq!(stopped["status"], "stopped", "{stopped}");
    assert!(gone(&pid), "stopped means gone");
    let started = process(&url, &["start", "steady"]);
    assert_eq!(started["status"], "running", "{started}");
    let pid2 = started["pid"].as_u64().expect("pid");
    let restarted = process(&url, &["restart", "steady"]);
    assert_eq!(restarted["status"], "running", "{restarted}");
    assert_ne!(restarted["pid"].as_u64(), Some(pid2));
    assert!(gone(&pid2.to_string()));
    // A crash-looping process starts again on request (and loops again).
    let again = process(&url, &["start", "crasher"]);
    assert_ne!(again["status"], "stopped", "{again}");

    // Unknown names are errors.
    let out = run(cli(&["process", "stop", "nope", "--url", &url]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("switchyard.process.error.unknown_process"),
        "{}",
        text(&out.stderr)
    );
    assert!(router.terminate().success());
}

#[test]
fn shutdown_stops_stubborn_processes_and_their_children() {
    // One ignores SIGTERM; the other's forked grandchild ignores it.
    let config = sh(
        "stubborn",
        "trap '' TERM; echo $$ > stubborn.pid; echo ready; while :; do sleep 0.1; done",
        "stop_timeout = \"1s\"",
    ) + &sh(
        "forker",
        "(trap '' TERM; while :; do sleep 0.1; done) & echo $! > grandchild.pid; echo $$ > forker.pid; wait",
        "stop_timeout = \"1s\"",
    );
    let mut router = Router::start(&config);
    let dir = router.dir.path().to_path_buf();
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    wait_for("the pid files", || {
        ["stubborn.pid", "grandchild.pid", "forker.pid"]
            .iter()
            .all(|f| read(f).ends_with('\n'))
    });
    let pids: Vec<String> = ["stubborn.pid", "grandchild.pid", "forker.pid"]
        .iter()
        .map(|f| read(f))
        .collect();
    for p in &pids {
        assert!(!gone(p), "{p} runs");
    }
    let t0 = Instant::now();
    assert!(router.terminate().success(), "{}", router.log_text());
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(6), "shutdown took {took:?}");
    wait_for("every process gone", || pids.iter().all(|p| gone(p)));
    let log = router.log_text();
    assert!(log.contains("[stubborn] ready"), "{log}");
    assert!(log.contains("process stubborn stopped"), "{log}");
}

#[test]
fn process_procedures_are_authorized_like_any_call() {
    let router = Router::start(
        &("[[realm.role]]\nname = \"anonymous\"\n\n\
           [[realm.role.permission]]\nuri = \"switchyard.process.list\"\nallow = [\"call\"]\n\n"
            .to_string()
            + &sh("idle", "exec sleep 30", "stop_timeout = \"1s\"")),
    );
    let url = router.ws_url();
    let list = process(&url, &["list"]);
    assert_eq!(entry(&list, "idle")["status"], "running");
    let out = run(cli(&["process", "stop", "idle", "--url", &url]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("wamp.error.not_authorized"),
        "{}",
        text(&out.stderr)
    );
    let list = process(&url, &["list"]);
    assert_eq!(entry(&list, "idle")["status"], "running");
    let mut router = router;
    assert!(router.terminate().success());
}

#[test]
fn check_config_reports_bad_process_entries_with_their_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("s.toml");
    std::fs::write(
        &cfg,
        "[[process]]\nname = \"a\"\ncommand = \"true\"\n\n\
         [[process]]\nname = \"a\"\ncommand = \"\"\nbackoff = { initial = \"5s\", max = \"1s\" }\n\
         restart = \"sometimes\"\n",
    )
    .expect("config");
    let out = run(cli(&["check-config", &cfg.display().to_string()]));
    let all = text(&out.stderr) + &text(&out.stdout);
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("sometimes"), "{all}");
    std::fs::write(
        &cfg,
        "[[process]]\nname = \"a\"\ncommand = \"true\"\n\n\
         [[process]]\nname = \"a\"\ncommand = \"\"\nbackoff = { initial = \"5s\", max = \"1s\" }\n",
    )
    .expect("config");
    let out = run(cli(&["check-config", &cfg.display().to_string()]));
    let all = text(&out.stderr) + &text(&out.stdout);
    assert!(!out.status.success(), "{all}");
    for want in [
        "line 5: process[1].command: must not be empty",
        "process[1].backoff.max: must be at least backoff.initial",
        "process[1].name: \"a\" is used twice",
    ] {
        assert!(all.contains(want), "{want} in {all}");
    }
}
