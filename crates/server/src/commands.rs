//! What the router-side subcommands of `switchyard` do, so that `main.rs`
//! only parses the command line: `run` (the router itself, on its own
//! runtime), `check-config`, `init`, `hash-secret` and `reload`.

use std::path::Path;
use std::process::ExitCode;

use crate::config::Config;

/// `switchyard run` (and no subcommand): runs the router with `config`
/// until SIGINT or SIGTERM, on a multi-threaded runtime sized by
/// `[runtime] worker_threads`. Logging must be set up already.
pub fn run(config: Config) -> ExitCode {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if config.runtime.worker_threads > 0 {
        builder.worker_threads(config.runtime.worker_threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `switchyard reload --pid PID | --pid-file FILE`: sends SIGHUP to a
/// running router, which reloads its configuration file (see `reload.rs`).
/// The outcome is in the router's log, not here: this only says whether
/// the signal was delivered.
pub fn reload(pid: Option<i32>, pid_file: Option<&Path>) -> ExitCode {
    let pid = match (pid, pid_file) {
        (Some(pid), _) => pid,
        (None, Some(file)) => match std::fs::read_to_string(file) {
            Ok(text) => match text.trim().parse::<i32>() {
                Ok(pid) => pid,
                Err(_) => {
                    eprintln!("{}: not a process id: {:?}", file.display(), text.trim());
                    return ExitCode::FAILURE;
                }
            },
            Err(e) => {
                eprintln!("{}: cannot read: {e}", file.display());
                return ExitCode::FAILURE;
            }
        },
        (None, None) => {
            eprintln!("reload: give --pid or --pid-file");
            return ExitCode::FAILURE;
        }
    };
    let Some(target) = rustix::process::Pid::from_raw(pid).filter(|_| pid > 0) else {
        eprintln!("reload: {pid} is not a process id");
        return ExitCode::FAILURE;
    };
    match rustix::process::kill_process(target, rustix::process::Signal::HUP) {
        Ok(()) => {
            println!("SIGHUP sent to {pid}: the router's log says what was reloaded");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("reload: cannot signal process {pid}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `switchyard check-config FILE`: reports every error with its line and key.
pub fn check_config(file: &Path) -> ExitCode {
    match Config::load(file) {
        Ok(_) => {
            println!("{}: configuration is valid", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `switchyard init [PATH] [--force]`: writes a commented starting
/// configuration.
pub fn init(path: Option<&Path>, force: bool) -> ExitCode {
    let path = path.unwrap_or(Path::new(crate::config::init::DEFAULT_PATH));
    match crate::config::init::write(path, force) {
        Ok(()) => {
            println!(
                "{}: written; check it with `switchyard check-config {}`",
                path.display(),
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `switchyard hash-secret`: reads a secret from standard input and prints
/// what the config file stores for it.
pub fn hash_secret(method: &str, salt: Option<&str>, iterations: u32, keylen: u32) -> ExitCode {
    use switchyard_router::auth::{ticket, wampcra};
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprintln!("secret (end with Enter):");
    }
    let mut line = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        eprintln!("cannot read the secret from standard input: {e}");
        return ExitCode::FAILURE;
    }
    let secret = line.trim_end_matches(['\r', '\n']);
    if secret.is_empty() {
        eprintln!("empty secret: give it on standard input, e.g. `switchyard hash-secret < file`");
        return ExitCode::FAILURE;
    }
    let out = match (method, salt) {
        ("ticket", None) => ticket::hash_secret(secret),
        ("ticket", Some(_)) => Err("--salt only applies to --method wampcra".into()),
        ("wampcra", Some(salt)) if iterations > 0 && keylen > 0 => {
            Ok(wampcra::derive_key(secret, salt, iterations, keylen))
        }
        ("wampcra", Some(_)) => Err("--iterations and --keylen must be positive".into()),
        ("wampcra", None) => Err(
            "--method wampcra needs --salt (without a salt, the config stores the secret itself)"
                .into(),
        ),
        (other, _) => Err(format!("unknown method \"{other}\" (ticket or wampcra)")),
    };
    match out {
        Ok(s) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
