//! Configuration for containers against the real binary: `switchyard init`
//! writes a file `check-config` accepts (and does not overwrite one without
//! `--force`), `SWITCHYARD__*` variables set any key (listeners, bridges
//! and their keys, by index), and `secret_file` reads a secret from a file.

mod common;

use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::cli::{cli, run, text, Background};
use common::http::{request, x_authentication};
use common::{free_port, Raw};
use switchyard_proto::Serializer;

#[test]
fn init_writes_a_valid_commented_config_and_keeps_an_existing_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sy.toml");
    let p = path.to_str().expect("utf-8");
    let out = run(cli(&["init", p]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let written = std::fs::read_to_string(&path).expect("written");
    assert!(
        written.starts_with("# Switchyard configuration"),
        "{written}"
    );
    assert!(written.contains("SWITCHYARD__LISTENER__0__ADDRESS"));
    let check = run(cli(&["check-config", p]));
    assert!(check.status.success(), "{}", text(&check.stderr));
    assert!(text(&check.stdout).contains("configuration is valid"));

    // An existing file is kept...
    std::fs::write(&path, "# mine\n").expect("write");
    let again = run(cli(&["init", p]));
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("--force"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(std::fs::read_to_string(&path).expect("read"), "# mine\n");
    // ... unless forced.
    let forced = run(cli(&["init", "--force", p]));
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    assert_eq!(std::fs::read_to_string(&path).expect("read"), written);

    // Without a path: switchyard.toml in the working directory.
    let mut c = cli(&["init"]);
    c.current_dir(dir.path());
    assert!(run(c).status.success());
    assert!(dir.path().join("switchyard.toml").exists());
}

/// The file from `init`, with its listeners moved and a bridge with a key
/// added by environment variables, the key's secret read from a file.
#[test]
fn environment_variables_and_secret_files_configure_a_running_router() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("switchyard.toml");
    assert!(run(cli(&["init", config.to_str().expect("utf-8")]))
        .status
        .success());
    let secret_file = dir.path().join("bridge-key");
    let secret = "a-secret-read-from-a-file-0123";
    std::fs::write(&secret_file, format!("{secret}\n")).expect("secret");
    let (ws, rs, bridge) = (free_port(), free_port(), free_port());
    let vars = [
        (
            "SWITCHYARD__LISTENER__0__ADDRESS",
            format!("127.0.0.1:{ws}"),
        ),
        (
            "SWITCHYARD__LISTENER__1__ADDRESS",
            format!("127.0.0.1:{rs}"),
        ),
        (
            "SWITCHYARD__STORAGE__DATA_DIR",
            dir.path().join("data").display().to_string(),
        ),
        ("SWITCHYARD__LOG__FORMAT", "json".into()),
        (
            "SWITCHYARD__BRIDGE__0__ADDRESS",
            format!("127.0.0.1:{bridge}"),
        ),
        ("SWITCHYARD__BRIDGE__0__KEY__0__KEY", "app".into()),
        ("SWITCHYARD__BRIDGE__0__KEY__0__ROLE", "backend".into()),
        (
            "SWITCHYARD__BRIDGE__0__KEY__0__SECRET_FILE",
            secret_file.display().to_string(),
        ),
        ("SWITCHYARD__BRIDGE__0__REPLAY_CACHE_SIZE", "50".into()),
    ];
    // check-config sees the same.
    let mut check = cli(&["check-config", config.to_str().expect("utf-8")]);
    check.envs(vars.iter().map(|(k, v)| (k, v)));
    let out = run(check);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let mut c = cli(&["--config", config.to_str().expect("utf-8")]);
    c.envs(vars.iter().map(|(k, v)| (k, v)));
    let mut router = Background::spawn(c);
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(("127.0.0.1", bridge)).is_err() {
        assert!(Instant::now() < deadline, "not up: {}", router.all_stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    // JSON logs (SWITCHYARD__LOG__FORMAT).
    router.wait_stderr("ready\",\"realms\"");
    // The RawSocket listener moved.
    let mut raw = Raw::connect(rs, Serializer::Json);
    raw.join("realm1");
    // The bridge's key signs with the secret from the file.
    let body = r#"{"topic": "com.example.t", "args": [1]}"#;
    let h = x_authentication(("app", secret), "POST", "/publish", "1", None, body);
    let r = request(bridge, "POST", "/publish", &h, body);
    assert_eq!(r.status, 200, "{}", r.body);
    let h = x_authentication(
        ("app", "another-secret-0123456789"),
        "POST",
        "/publish",
        "2",
        None,
        body,
    );
    assert_eq!(request(bridge, "POST", "/publish", &h, body).status, 401);
    router.stop(libc::SIGTERM);
}

#[test]
fn a_bad_variable_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "[[realm]]\nname = \"realm1\"\n").expect("write");
    let p = config.to_str().expect("utf-8");
    for (var, value, want) in [
        (
            "SWITCHYARD__REALM__2__NAME",
            "x",
            "SWITCHYARD__REALM__2__NAME",
        ),
        (
            "SWITCHYARD__LIMITS__MAX_MESAGE_SIZE",
            "1",
            "unknown field `max_mesage_size`",
        ),
        (
            "SWITCHYARD__LISTENER__0__ADDRESS",
            "nope",
            "SWITCHYARD__LISTENER__0__ADDRESS",
        ),
        (
            "SWITCHYARD__CLUSTER__NATS_TOKEN_FILE",
            "/nonexistent/token",
            "cluster.nats_token_file",
        ),
    ] {
        let mut c = cli(&["check-config", p]);
        c.env(var, value).stdout(Stdio::null());
        let out = run(c);
        assert!(!out.status.success(), "{var}");
        assert!(
            text(&out.stderr).contains(want),
            "{var}: {}",
            text(&out.stderr)
        );
    }
    // Without variables the file's own lines are reported.
    std::fs::write(&config, "[[realm]]\nname = \"realm1\"\nbogus = 1\n").expect("write");
    let out = run(cli(&["check-config", p]));
    assert!(
        text(&out.stderr).contains("line 3"),
        "{}",
        text(&out.stderr)
    );
}
