//! The client commands (`switchyard publish`, `call`, `subscribe`,
//! `register`) against the real router binary over real sockets: events as
//! JSON lines, procedures served by shell commands, errors and exit codes,
//! and ticket, WAMP-CRA and cryptosign authentication.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::cli::{cli, run, text, Background};
use common::Router;
use ed25519_dalek::SigningKey;
use serde_json::{json, Value as Json};
use switchyard_router::auth::{ticket, wampcra};

#[test]
fn publish_reaches_subscribe_as_json_lines() {
    let r = Router::start("");
    let ws = r.ws_url();
    let mut sub = Background::spawn(cli(&[
        "subscribe",
        "com.test.cli.",
        "--match",
        "prefix",
        "--count",
        "3",
        "--url",
        &ws,
    ]));
    sub.wait_stderr("subscribed to com.test.cli.");

    // Over RawSocket TCP with MessagePack, acknowledged: prints the id.
    let out = run(cli(&[
        "publish",
        "com.test.cli.a",
        "1",
        "hello world",
        "{\"a\": [1, 2.5, null]}",
        "\"42\"",
        "-7",
        "--kw",
        "k=v",
        "--kw",
        "n=true",
        "--acknowledge",
        "--url",
        &r.rs_url(),
        "--serializer",
        "msgpack",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id: u64 = text(&out.stdout).trim().parse().expect("publication id");
    // Over a Unix socket with CBOR, not acknowledged: prints nothing.
    let out = run(cli(&[
        "publish",
        "com.test.cli.b",
        "--url",
        &r.unix_url(),
        "--serializer",
        "cbor",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
    // Binary travels as WAMP's JSON "\u0000" + base64 both ways.
    let out = run(cli(&[
        "publish",
        "com.test.cli.c",
        "\"\\u0000AQL/\"",
        "--url",
        &r.rs_url(),
        "--serializer",
        "cbor",
        "--acknowledge",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));

    assert_eq!(sub.wait(), 0, "exits after --count events");
    let events = sub.stdout_lines();
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[0]["topic"], "com.test.cli.a");
    assert_eq!(events[0]["publication"], json!(id));
    assert_eq!(
        events[0]["args"],
        json!([1, "hello world", {"a": [1, 2.5, null]}, "42", -7])
    );
    assert_eq!(events[0]["kwargs"], json!({"k": "v", "n": true}));
    assert_eq!(events[0]["details"]["topic"], "com.test.cli.a");
    assert_eq!(events[1]["topic"], "com.test.cli.b");
    assert_eq!(events[1]["args"], json!([]));
    assert_eq!(events[2]["args"], json!(["\u{0}AQL/"]));
}

#[test]
fn subscribe_stops_cleanly_on_ctrl_c() {
    let r = Router::start("");
    let ws = r.ws_url();
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let mut sub = Background::spawn(cli(&["subscribe", "com.test.quiet", "--url", &ws]));
        sub.wait_stderr("subscribed to");
        assert_eq!(sub.stop(sig), 0, "signal {sig}");
    }
    // The router saw a GOODBYE each time, not a dropped connection.
    let log = r.log_text();
    assert_eq!(
        log.matches("wamp.close.close_realm").count(),
        2,
        "clean leaves in the router log:\n{log}"
    );
}

#[test]
fn call_a_procedure_served_by_register() {
    let r = Router::start("");
    let ws = r.ws_url();
    // Echo the invocation back: the result is the JSON the command got.
    let mut echo = Background::spawn(cli(&[
        "register",
        "com.test.echo",
        "--url",
        &r.rs_url(),
        "--",
        "sh",
        "-c",
        "cat",
    ]));
    let mut fail = Background::spawn(cli(&[
        "register",
        "com.test.fail",
        "--url",
        &ws,
        "--",
        "sh",
        "-c",
        "cat >/dev/null; echo 'bad input' >&2; exit 3",
    ]));
    let mut text_out = Background::spawn(cli(&[
        "register",
        "com.test.text",
        "--url",
        &ws,
        "--",
        "sh",
        "-c",
        "echo 'not json: just text'",
    ]));
    let mut slow = Background::spawn(cli(&[
        "register",
        "com.test.slow",
        "--timeout",
        "300ms",
        "--url",
        &ws,
        "--",
        "sh",
        "-c",
        "sleep 30",
    ]));
    let mut capped = Background::spawn(cli(&[
        "register",
        "com.test.capped",
        "--concurrency",
        "2",
        "--url",
        &ws,
        "--",
        "sh",
        "-c",
        "sleep 0.4; echo ok",
    ]));
    for b in [&mut echo, &mut fail, &mut text_out, &mut slow, &mut capped] {
        b.wait_stderr("registered com.test.");
    }

    // A single result prints as that value; the callee saw args, kwargs, details.
    let out = run(cli(&[
        "call",
        "com.test.echo",
        "2",
        "x y",
        "--kw",
        "deep={\"a\":[true]}",
        "--url",
        &ws,
        "--serializer",
        "msgpack",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let got: Json = serde_json::from_str(text(&out.stdout).trim()).expect("JSON result");
    assert_eq!(got["procedure"], "com.test.echo");
    assert_eq!(got["args"], json!([2, "x y"]));
    assert_eq!(got["kwargs"], json!({"deep": {"a": [true]}}));
    assert!(got["details"].is_object(), "{got}");
    // --envelope: always {"args", "kwargs"}.
    let out = run(cli(&["call", "com.test.text", "--envelope", "--url", &ws]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let got: Json = serde_json::from_str(text(&out.stdout).trim()).expect("JSON");
    assert_eq!(got, json!({"args": ["not json: just text"], "kwargs": {}}));

    // A failing command: WAMP error, exit 1, URI, message and payload on stderr.
    let out = run(cli(&["call", "com.test.fail", "--url", &ws]));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "");
    let err = text(&out.stderr);
    assert!(
        err.contains("switchyard.error.command_failed: command exited with status 3: bad input"),
        "{err}"
    );
    assert!(err.contains("\"exit_code\":3"), "{err}");

    // A command over its --timeout is killed: command_timeout, promptly.
    let t0 = Instant::now();
    let out = run(cli(&["call", "com.test.slow", "--url", &ws]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("switchyard.error.command_timeout"),
        "{}",
        text(&out.stderr)
    );
    assert!(t0.elapsed() < Duration::from_secs(5));
    // The caller's own --timeout: the router times the call out.
    let out = run(cli(&[
        "call",
        "com.test.capped",
        "--timeout",
        "100ms",
        "--url",
        &ws,
    ]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("wamp.error.timeout"),
        "{}",
        text(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(400)); // let that command end

    // --concurrency 2: four 0.4 s calls take two rounds.
    let t0 = Instant::now();
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let ws = ws.clone();
            std::thread::spawn(move || run(cli(&["call", "com.test.capped", "--url", &ws])))
        })
        .collect();
    for c in calls {
        let out = c.join().expect("thread");
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout).trim(), "\"ok\"");
    }
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(780), "took {took:?}");

    // Ctrl-C: unregisters, leaves, exit 0; the procedure is gone.
    assert_eq!(echo.stop(libc::SIGINT), 0, "{}", echo.all_stderr());
    let out = run(cli(&["call", "com.test.echo", "--url", &ws]));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("wamp.error.no_such_procedure"));
}

#[test]
fn register_waits_for_running_commands_on_sigterm() {
    let r = Router::start("");
    let ws = r.ws_url();
    let mut callee = Background::spawn(cli(&[
        "register",
        "com.test.drain",
        "--url",
        &ws,
        "--",
        "sh",
        "-c",
        "sleep 0.5; echo finished",
    ]));
    callee.wait_stderr("registered");
    let ws2 = ws.clone();
    let call = std::thread::spawn(move || run(cli(&["call", "com.test.drain", "--url", &ws2])));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(callee.stop(libc::SIGTERM), 0);
    let out = call.join().expect("thread");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "\"finished\"");
    assert!(callee
        .all_stderr()
        .contains("waiting for 1 running command"));
}

#[test]
fn errors_and_exit_codes() {
    let r = Router::start("");
    let ws = r.ws_url();
    let case = |args: &[&str], code: i32, needle: &str| {
        let out = run(cli(args));
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(text(&out.stdout), "", "{args:?}: nothing on stdout");
    };
    case(
        &["call", "com.test.nobody", "--url", &ws],
        1,
        "wamp.error.no_such_procedure",
    );
    case(
        &[
            "call",
            "com.test.x",
            "--url",
            &ws,
            "--realm",
            "no.such.realm",
        ],
        4,
        "has no realm \"no.such.realm\" (wamp.error.no_such_realm",
    );
    let closed = format!("ws://127.0.0.1:{}/ws", common::free_port());
    case(
        &["publish", "com.test.x", "--url", &closed],
        3,
        "connection refused",
    );
    case(
        &["subscribe", "com.test.x", "--url", "http://x"],
        2,
        "invalid router URL",
    );
    case(
        &["publish", "com.test.x", "--kw", "novalue", "--url", &ws],
        2,
        "expected KEY=VALUE",
    );
    case(
        &["call", "com.test.x", "--timeout", "soon", "--url", &ws],
        2,
        "--timeout",
    );
    case(&["register", "com.test.x", "--url", &ws], 2, "<CMD>");
    // The router refuses: reserved URI, acknowledged publish to a bad URI.
    case(
        &["register", "wamp.mine", "--url", &ws, "--", "true"],
        1,
        "wamp.error.invalid_uri",
    );
    case(
        &["publish", "bad uri", "--acknowledge", "--url", &ws],
        1,
        "wamp.error.invalid_uri",
    );
    // A second register of the same procedure.
    let mut first = Background::spawn(cli(&[
        "register",
        "com.test.taken",
        "--url",
        &ws,
        "--",
        "true",
    ]));
    first.wait_stderr("registered");
    case(
        &["register", "com.test.taken", "--url", &ws, "--", "true"],
        1,
        "wamp.error.procedure_already_exists",
    );
    // A command that returns nothing: {"args": [], "kwargs": {}}.
    let out = run(cli(&["call", "com.test.taken", "--url", &ws]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), r#"{"args":[],"kwargs":{}}"#);

    // Every command explains itself with examples.
    for cmd in ["publish", "call", "subscribe", "register"] {
        let out = run(cli(&[cmd, "--help"]));
        assert!(out.status.success());
        let help = text(&out.stdout);
        assert!(help.contains("Examples:"), "{cmd}: {help}");
        assert!(help.contains(&format!("switchyard {cmd} ")), "{cmd}");
        assert!(help.contains("--url") && help.contains("--ticket"), "{cmd}");
    }
}

const TICKET: &str = "correct horse battery staple";
const CRA_PASSWORD: &str = "cra-password-42";
const SEED: [u8; 32] = [7u8; 32];

fn auth_config() -> String {
    let hash = ticket::hash_secret(TICKET).expect("hash");
    let cra_key = wampcra::derive_key(CRA_PASSWORD, "pepper", 100, 32);
    let pubkey = hex::encode(SigningKey::from_bytes(&SEED).verifying_key().to_bytes());
    format!(
        r#"
[realm.auth]
methods = ["ticket", "wampcra", "cryptosign"]

[[realm.auth.ticket]]
authid = "alice"
secret = "{hash}"
role = "user"

[[realm.auth.wampcra]]
authid = "peter"
secret = "{cra_key}"
salt = "pepper"
iterations = 100
keylen = 32
role = "user"

[[realm.auth.cryptosign]]
authid = "device-1"
pubkeys = ["{pubkey}"]
role = "user"
"#
    )
}

#[test]
fn ticket_wampcra_and_cryptosign_authentication() {
    let r = Router::start(&auth_config());
    let ws = r.ws_url();
    let with_ticket = |args: &[&str], authid: &str, ticket: &str| {
        let mut c = cli(args);
        c.env("SWITCHYARD_AUTHID", authid)
            .env("SWITCHYARD_TICKET", ticket);
        c
    };

    // A callee authenticated by ticket (from the environment).
    let mut callee = Background::spawn(with_ticket(
        &[
            "register",
            "com.test.whoami",
            "--url",
            &ws,
            "--",
            "sh",
            "-c",
            "cat",
        ],
        "alice",
        TICKET,
    ));
    callee.wait_stderr("registered");
    let whoami = |c: Command| -> Json {
        let out = run(c);
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_str(text(&out.stdout).trim()).expect("JSON")
    };
    let disclose = ["call", "com.test.whoami", "--option", "disclose_me=true"];

    // Ticket on the command line, over RawSocket.
    let rs = r.rs_url();
    let mut args = disclose.to_vec();
    args.extend(["--url", &rs, "--authid", "alice", "--ticket", TICKET]);
    let got = whoami(cli(&args));
    assert_eq!(got["details"]["caller_authid"], "alice", "{got}");

    // WAMP-CRA with a salted secret (PBKDF2, as Autobahn).
    let mut c = cli(&disclose);
    c.args(["--url", &ws, "--authid", "peter"])
        .env("SWITCHYARD_WAMPCRA_SECRET", CRA_PASSWORD);
    let got = whoami(c);
    assert_eq!(got["details"]["caller_authid"], "peter", "{got}");

    // Cryptosign with a key file (no authid needed).
    let key = r.dir.path().join("device.key");
    std::fs::write(&key, format!("{}\n", hex::encode(SEED))).expect("key file");
    let mut args = disclose.to_vec();
    let key_arg = key.display().to_string();
    args.extend(["--url", &ws, "--cryptosign-key", &key_arg]);
    let got = whoami(cli(&args));
    assert_eq!(got["details"]["caller_authid"], "device-1", "{got}");

    // A wrong ticket: exit 4, a clear message, and no secret printed.
    let out = run(with_ticket(
        &["call", "com.test.whoami", "--url", &ws],
        "alice",
        "wrong ticket",
    ));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains("authentication failed for authid \"alice\""),
        "{err}"
    );
    assert!(err.contains("wamp.error.authentication_failed"), "{err}");
    assert!(!err.contains("wrong ticket"), "a secret on stderr: {err}");
    // A wrong WAMP-CRA secret.
    let mut c = cli(&["publish", "com.test.x", "--url", &ws, "--authid", "peter"]);
    c.env("SWITCHYARD_WAMPCRA_SECRET", "guess");
    let out = run(c);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    // Anonymous against a realm that requires authentication.
    let out = run(cli(&["call", "com.test.whoami", "--url", &ws]));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("none of the authentication methods"), "{err}");
    assert!(err.contains("hint: give credentials"), "{err}");
    // A key file that is not a key: a usage error that does not echo it.
    std::fs::write(&key, "this is not hex but a secret").expect("key file");
    let out = run(cli(&[
        "call",
        "x.y",
        "--url",
        &ws,
        "--cryptosign-key",
        &key_arg,
    ]));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!err.contains("a secret"), "{err}");
    // --help shows no secret from the environment.
    let out = run(with_ticket(&["call", "--help"], "alice", TICKET));
    assert!(!text(&out.stdout).contains(TICKET));

    // Nothing secret reached the router's log either.
    let log = r.log_text();
    for secret in [TICKET, CRA_PASSWORD] {
        assert!(!log.contains(secret), "the log contains a secret");
    }
    // The callee never saw the ticket in its environment (checked through
    // a command that reports it).
    drop(callee);
    let mut env_probe = Background::spawn(with_ticket(
        &[
            "register",
            "com.test.env",
            "--url",
            &ws,
            "--",
            "sh",
            "-c",
            "echo \"[\\\"${SWITCHYARD_TICKET:-unset}\\\"]\"",
        ],
        "alice",
        TICKET,
    ));
    env_probe.wait_stderr("registered");
    let out = run(with_ticket(
        &["call", "com.test.env", "--url", &ws],
        "alice",
        TICKET,
    ));
    assert_eq!(
        text(&out.stdout).trim(),
        "[\"unset\"]",
        "{}",
        text(&out.stderr)
    );
}
