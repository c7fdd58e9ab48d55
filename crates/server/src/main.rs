//! The `switchyard` command: parses the command line, sets up logging and
//! hands over to the library: the router ([`switchyard::commands`]: run,
//! check a configuration, hash a secret) or the WAMP client commands
//! `publish`, `call`, `subscribe`, `register`, `queue`, `worker` and `process` (the
//! `switchyard-cli` crate, which the router side never imports).
//!
//! The router's options (`--config`, `--log-format`, `--log-level`,
//! `--data-dir`: [`RouterArgs`]) belong to running the router only: they are
//! accepted with no command (`switchyard --config FILE`) and after `run`
//! (`switchyard run --config FILE`), and clap refuses them with a client
//! command, which connects to a router and reads no configuration file
//! (its connection options are its own, see `switchyard_cli::connect`). Offering them
//! there and ignoring them would let `switchyard publish --config x.toml`
//! look as if it used that file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use switchyard::config::{Config, LogFormat};
use switchyard::{commands, logging};

// The global allocator, chosen at build time by a cargo feature (both
// features at once: mimalloc). Without either, the system's (glibc malloc).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(all(feature = "jemalloc", not(feature = "mimalloc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Switchyard: a WAMP v2 router (PubSub and routed RPC) over WebSocket and
/// RawSocket, with JSON, MessagePack and CBOR.
///
/// With no arguments it serves realm "realm1" to anonymous clients on
/// ws://127.0.0.1:8080/ws and RawSocket tcp://127.0.0.1:8081. Stop it with
/// Ctrl-C or SIGTERM: every session gets GOODBYE wamp.close.system_shutdown.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    long_about,
    after_help = COMMANDS,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(flatten)]
    router: RouterArgs,

    #[command(subcommand)]
    command: Option<Command>,
}

/// Which commands run the router and which are clients (end of `--help`).
const COMMANDS: &str = "\
Router commands: run (the default), check-config, hash-secret, init, reload.
  The options above (--config, --log-format, --log-level, --data-dir) are the router's:
  `switchyard --config FILE` is `switchyard run --config FILE`.
Client commands: publish, call, subscribe, register, queue, worker, process.
  They connect to a running router as a WAMP client, with their own connection options
  (--url, --realm, authentication; see `switchyard COMMAND --help`), and read no config file.";

/// The options of running the router (with no command, or after `run`).
#[derive(clap::Args, Debug, Default)]
struct RouterArgs {
    /// Configuration file (TOML); see switchyard.example.toml. Without it the
    /// defaults above apply. SWITCHYARD__<TABLE>__<KEY> variables set keys
    /// over it (README, "Configuration in containers").
    #[arg(short, long, value_name = "FILE", env = "SWITCHYARD_CONFIG")]
    config: Option<PathBuf>,

    /// Log format; overrides [log] format in the configuration.
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,

    /// Log filter such as "info" or "debug"; overrides [log] level. The
    /// RUST_LOG environment variable overrides both.
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,

    /// Directory of the durable queues' store; overrides [storage] data_dir
    /// (default "switchyard-data" in the working directory).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the router (the default when no command is given).
    Run(RouterArgs),
    /// Check a configuration file and report every error with its line and key.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Write a commented starting configuration (default: switchyard.toml).
    Init {
        /// Where to write it.
        path: Option<PathBuf>,
        /// Replace the file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Turn a secret into what the config file stores, reading the secret
    /// from standard input (one line; nothing is echoed or logged).
    ///
    /// ticket (default): an Argon2id hash for `[[realm.auth.ticket]] secret`.
    /// wampcra with --salt: the PBKDF2 key for `[[realm.auth.wampcra]] secret`
    /// (use the same salt, iterations and keylen in the config).
    HashSecret {
        /// `ticket` or `wampcra`.
        #[arg(long, default_value = "ticket")]
        method: String,
        /// WAMP-CRA salt (required with --method wampcra).
        #[arg(long)]
        salt: Option<String>,
        /// WAMP-CRA PBKDF2 iterations.
        #[arg(long, default_value_t = 1000)]
        iterations: u32,
        /// WAMP-CRA derived key length in bytes.
        #[arg(long, default_value_t = 32)]
        keylen: u32,
    },
    /// Make a running router reload its configuration file: sends it SIGHUP.
    /// Roles, permissions, principals and realm limits apply at once; an
    /// invalid file is refused and the router's log says why (line and key).
    Reload {
        /// The router's process id.
        #[arg(
            long,
            conflicts_with = "pid_file",
            required_unless_present = "pid_file"
        )]
        pid: Option<i32>,
        /// A file holding the router's process id (as a supervisor writes).
        #[arg(long, value_name = "FILE")]
        pid_file: Option<PathBuf>,
    },
    // The client commands (crates/cli): their help is on their argument structs.
    #[command(flatten)]
    Client(switchyard_cli::Command),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // With `args_conflicts_with_subcommands`, the top-level router options
    // come only without a command; `run` has its own.
    let (command, router) = match cli.command {
        Some(Command::Run(args)) => (None, args),
        other => (other, cli.router),
    };
    if let Some(Command::Client(c)) = command {
        return switchyard_cli::main(c);
    }
    if let Some(Command::HashSecret {
        method,
        salt,
        iterations,
        keylen,
    }) = &command
    {
        return commands::hash_secret(method, salt.as_deref(), *iterations, *keylen);
    }
    if let Some(Command::Reload { pid, pid_file }) = &command {
        return commands::reload(*pid, pid_file.as_deref());
    }
    if let Some(Command::CheckConfig { file }) = &command {
        return commands::check_config(file);
    }
    if let Some(Command::Init { path, force }) = &command {
        return commands::init(path.as_deref(), *force);
    }
    // The file (if any) with the SWITCHYARD__* variables and *_file secrets.
    let mut config = match Config::load_from(router.config.as_deref(), std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    config.origin = switchyard::reload::Origin {
        path: router.config.clone(),
        data_dir: router.data_dir.clone(),
    };
    if let Some(dir) = router.data_dir {
        config.storage.data_dir = dir;
    }
    let format = router.log_format.unwrap_or(config.log.format);
    let level = router
        .log_level
        .clone()
        .or_else(|| config.log.level.clone())
        .unwrap_or_else(|| "info".into());
    logging::init(format, &level, &config.log);
    commands::run(config)
}
