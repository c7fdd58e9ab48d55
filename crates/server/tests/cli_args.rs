//! The `switchyard` command line itself, through the real binary: the
//! router's options belong to running the router and clap refuses them on
//! the client commands (which read no configuration file), `--help` tells
//! router commands from client commands, and every `switchyard ...` command
//! line shown in README.md, docs/*.md and switchyard.example.toml parses
//! (so the docs and the CLI cannot drift apart unnoticed).

mod common;

use std::path::{Path, PathBuf};

use common::cli::{cli, run};

/// The client commands, each with the arguments it needs to parse.
const CLIENTS: &[&[&str]] = &[
    &["publish", "com.example.t"],
    &["call", "com.example.p"],
    &["subscribe", "com.example.t"],
    &["register", "com.example.p", "--", "true"],
    &["queue", "list"],
    &["process", "list"],
    &["worker", "jobs", "--", "true"],
];

/// The router's options, each with a value.
const ROUTER_OPTIONS: &[&[&str]] = &[
    &["--config", "does-not-exist.toml"],
    &["-c", "does-not-exist.toml"],
    &["--log-level", "debug"],
    &["--log-format", "json"],
    &["--data-dir", "some-dir"],
];

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn router_options_are_refused_on_client_commands() {
    for client in CLIENTS {
        for option in ROUTER_OPTIONS {
            // After the command, and before it (`switchyard --config x publish ...`).
            let after: Vec<&str> = client[..2].iter().chain(*option).copied().collect();
            let after: Vec<&str> = after
                .into_iter()
                .chain(client[2..].iter().copied())
                .collect();
            let before: Vec<&str> = option.iter().chain(*client).copied().collect();
            for args in [after, before] {
                let out = run(cli(&args));
                let err = text(&out.stderr);
                assert_eq!(
                    out.status.code(),
                    Some(2),
                    "`switchyard {}` must be a usage error: {err}",
                    args.join(" ")
                );
                assert!(
                    err.contains("unexpected argument") || err.contains("cannot be used with"),
                    "`switchyard {}`: {err}",
                    args.join(" ")
                );
            }
        }
    }
}

#[test]
fn run_takes_the_router_options() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.toml");
    for args in [
        vec![
            "run",
            "--data-dir",
            "d",
            "--log-level",
            "debug",
            "--log-format",
            "json",
            "--config",
        ],
        vec![
            "--data-dir",
            "d",
            "--log-level",
            "debug",
            "--log-format",
            "json",
            "--config",
        ],
    ] {
        let mut c = cli(&args);
        c.arg(&missing);
        let out = run(c);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("missing.toml"),
            "{args:?}: the configuration file is read and its error named: {err}"
        );
    }
}

#[test]
fn help_tells_router_commands_from_client_commands() {
    for flag in ["--help", "-h"] {
        let out = run(cli(&[flag]));
        assert!(out.status.success());
        let help = text(&out.stdout);
        assert!(
            help.contains("Router commands: run (the default), check-config, hash-secret"),
            "{help}"
        );
        assert!(
            help.contains("Client commands: publish, call, subscribe, register, queue"),
            "{help}"
        );
    }
    let out = run(cli(&["publish", "--help"]));
    let help = text(&out.stdout);
    assert!(out.status.success(), "{help}");
    assert!(
        !help.contains("--config"),
        "client help offers --config: {help}"
    );
    assert!(
        !help.contains("--log-level"),
        "client help offers --log-level: {help}"
    );
    let out = run(cli(&["run", "--help"]));
    let help = text(&out.stdout);
    for option in ["--config", "--log-level", "--log-format", "--data-dir"] {
        assert!(help.contains(option), "run --help lacks {option}: {help}");
    }
}

/// Where a `switchyard ...` command line was shown.
struct Shown {
    at: String,
    line: String,
    args: Vec<String>,
}

/// The text of `line` up to its first shell operator outside quotes (a
/// pipe, `;`, `&&`, a redirection, a comment).
fn command_part(line: &str) -> &str {
    let (mut single, mut double) = (false, false);
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '|' | ';' | '&' | '>' | '<' if !single && !double => return &line[..i],
            '#' if !single && !double && prev.is_whitespace() => return &line[..i],
            _ => {}
        }
        prev = c;
    }
    line
}

/// The arguments after the program of a shell line that runs `switchyard`
/// (also as `cargo run -p switchyard -- ...` or `ExecStart=.../switchyard`),
/// if it does.
fn switchyard_args(line: &str) -> Option<Vec<String>> {
    let mut line = line.trim();
    line = line.strip_prefix("$ ").unwrap_or(line);
    line = line.strip_prefix("ExecStart=").unwrap_or(line);
    let words = shlex::split(command_part(line))?;
    // Environment assignments before the program.
    let mut words = words
        .into_iter()
        .skip_while(|w| {
            w.split_once('=').is_some_and(|(k, _)| {
                !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit())
            })
        })
        .peekable();
    let program = words.next()?;
    if program == "switchyard" || program.ends_with("/switchyard") {
        return Some(words.collect());
    }
    if program == "cargo" && words.peek().map(String::as_str) == Some("run") {
        let rest: Vec<String> = words.collect();
        let package = rest
            .windows(2)
            .any(|w| w[0] == "-p" && w[1] == "switchyard");
        if !package {
            return None;
        }
        return Some(match rest.iter().position(|w| w == "--") {
            Some(i) => rest[i + 1..].to_vec(),
            None => Vec::new(),
        });
    }
    None
}

/// Every `switchyard ...` command line shown in `file`: the lines of its
/// code blocks, and inline code spans (in prose, or in a code block's
/// comment such as a TOML file's) that are a whole command (not a
/// synopsis with placeholders such as `switchyard COMMAND --help`,
/// `publish|call`, `[ARGS...]` or `queue ...`).
fn shown_in(file: &Path, root: &Path) -> Vec<Shown> {
    let name = file
        .strip_prefix(root)
        .unwrap_or(file)
        .display()
        .to_string();
    let body = std::fs::read_to_string(file).expect("read doc");
    let mut found = Vec::new();
    let mut fenced = false;
    for (n, line) in body.lines().enumerate() {
        let at = format!("{name}:{}", n + 1);
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            if let Some(args) = switchyard_args(line) {
                found.push(Shown {
                    at: at.clone(),
                    line: line.trim().to_string(),
                    args,
                });
                continue;
            }
            // Else its comments may quote commands, like prose does.
        }
        for (i, span) in line.split('`').enumerate() {
            if i % 2 == 0 || !(span == "switchyard" || span.starts_with("switchyard ")) {
                continue;
            }
            let synopsis = span.contains("...")
                || span.contains('|')
                || span.contains('[')
                || span
                    .split_whitespace()
                    .nth(1)
                    .is_some_and(|w| w.chars().all(|c| c.is_ascii_uppercase() || c == '_'));
            if synopsis {
                continue;
            }
            if let Some(args) = switchyard_args(span) {
                found.push(Shown {
                    at: at.clone(),
                    line: span.to_string(),
                    args,
                });
            }
        }
    }
    found
}

fn docs() -> (PathBuf, Vec<PathBuf>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = vec![root.join("README.md"), root.join("switchyard.example.toml")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    (root, files)
}

/// Runs each documented command line with `--help` added (before a `--`,
/// so it is never taken for the argument of a command to run): clap checks
/// every command, subcommand and option up to there, and prints the help
/// instead of connecting or starting a router. A command line the CLI no
/// longer accepts fails here, with where the docs show it.
#[test]
fn every_documented_command_line_parses() {
    let (root, files) = docs();
    let shown: Vec<Shown> = files.iter().flat_map(|f| shown_in(f, &root)).collect();
    // The extraction itself works: the docs show dozens of commands,
    // including the one that drifted once.
    assert!(
        shown.len() >= 40,
        "only {} command lines found",
        shown.len()
    );
    assert!(
        shown
            .iter()
            .any(|s| s.args.first().map(String::as_str) == Some("run")),
        "docs/QUEUES.md's `switchyard run --data-dir DIR` not found"
    );
    eprintln!("{} documented command lines", shown.len());
    let mut failures = Vec::new();
    for s in &shown {
        let mut args: Vec<&str> = s.args.iter().map(String::as_str).collect();
        if !args.iter().any(|a| *a == "--help" || *a == "-h") {
            let at = args.iter().position(|a| *a == "--").unwrap_or(args.len());
            args.insert(at, "--help");
        }
        let out = run(cli(&args));
        if !out.status.success() || out.stdout.is_empty() {
            failures.push(format!(
                "{}: `{}`: {}",
                s.at,
                s.line,
                text(&out.stderr).trim()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "documented command lines the CLI refuses:\n{}",
        failures.join("\n")
    );
}

#[test]
fn the_extractor_reads_shell_lines() {
    let a = |l: &str| switchyard_args(l).map(|v| v.join(" "));
    assert_eq!(
        a("switchyard run --data-dir DIR").as_deref(),
        Some("run --data-dir DIR")
    );
    assert_eq!(
        a("$ switchyard queue stats nope; echo $?").as_deref(),
        Some("queue stats nope")
    );
    assert_eq!(
        a("X_Y=1 switchyard call p '{\"a\": 1}' --envelope | jq '.args[0]'").as_deref(),
        Some("call p {\"a\": 1} --envelope")
    );
    assert_eq!(
        a("switchyard register p -- sh -c 'jq \"[.args[]] | add\"'   # x").as_deref(),
        Some("register p -- sh -c jq \"[.args[]] | add\"")
    );
    assert_eq!(a("cargo run --release -p switchyard").as_deref(), Some(""));
    assert_eq!(
        a("ExecStart=/usr/local/bin/switchyard --config /etc/s.toml").as_deref(),
        Some("--config /etc/s.toml")
    );
    assert_eq!(a("cargo run -p switchyard-router --example x"), None);
    assert_eq!(a("await session.call(\"switchyard.queue.push\")"), None);
}
