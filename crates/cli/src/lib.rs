//! `switchyard-cli`: the client commands of the `switchyard` binary,
//! `publish`, `call`, `subscribe`, `register`, `queue`, `worker` and `process` (docs/CLI.md).
//! They connect to a router as an ordinary WAMP client
//! ([`switchyard_client`]) over WebSocket or RawSocket, with the common
//! options of [`connect::ConnectArgs`]. A crate of its own because it is a
//! client: the router side (the `switchyard` library in crates/server) never
//! imports it; only the binary's `main.rs` dispatches to [`main`].
//!
//! - `connect.rs`: the connection and authentication options, and joining;
//! - `publish.rs`, `call.rs`, `subscribe.rs`, `register.rs`: one file per
//!   command (`register` can run a program per invocation);
//! - `queue.rs`: `switchyard queue ...`, the `switchyard.queue.*` procedures;
//! - `worker.rs`: `switchyard worker QUEUE -- CMD`, a queue's jobs run by a command;
//! - `process.rs`: `switchyard process ...`, the router's supervised processes;
//! - `values.rs`: arguments from the command line, JSON out.
//!
//! Output contract: results and events go to standard output as JSON (one
//! value or one event per line); everything else (progress, warnings,
//! errors) goes to standard error. Exit codes are the `EXIT_*` constants.

pub mod call;
pub mod connect;
pub mod process;
pub mod publish;
pub mod queue;
pub mod register;
pub mod subscribe;
pub mod values;
pub mod worker;

use std::fmt;
use std::process::ExitCode;

use switchyard_client::{ReconnectingSession, Session, WampError};

/// The client commands, as subcommands of the `switchyard` binary (their
/// help is on their argument structs).
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    Publish(Box<publish::PublishArgs>),
    Call(Box<call::CallArgs>),
    Subscribe(Box<subscribe::SubscribeArgs>),
    Register(Box<register::RegisterArgs>),
    Queue(Box<queue::QueueArgs>),
    Process(Box<process::ProcessArgs>),
    Worker(Box<worker::WorkerArgs>),
}

/// Runs a client command to its end; the process's exit code.
pub fn main(command: Command) -> ExitCode {
    match command {
        Command::Publish(a) => run(publish::run(*a)),
        Command::Call(a) => run(call::run(*a)),
        Command::Subscribe(a) => run(subscribe::run(*a)),
        Command::Register(a) => run(register::run(*a)),
        Command::Queue(a) => run(queue::run(*a)),
        Command::Process(a) => run(process::run(*a)),
        Command::Worker(a) => run(worker::run(*a)),
    }
}

/// Success (for `subscribe` and `register` also: stopped by Ctrl-C/SIGTERM
/// or `--count` reached).
pub const EXIT_OK: u8 = 0;
/// The router or a callee answered with a WAMP ERROR (the call failed, the
/// procedure does not exist, not authorized, ...).
pub const EXIT_WAMP_ERROR: u8 = 1;
/// Bad command line (also what clap uses for usage errors).
pub const EXIT_USAGE: u8 = 2;
/// The router could not be reached, or the connection was lost.
pub const EXIT_CONNECTION: u8 = 3;
/// The router refused the session (ABORT: unknown realm, authentication
/// failed, no matching authentication method) or ended it.
pub const EXIT_REFUSED: u8 = 4;
/// `call` or `publish` interrupted by Ctrl-C or SIGTERM before completing.
pub const EXIT_INTERRUPTED: u8 = 130;

/// A failure of a client command: the message for standard error and the
/// exit code.
#[derive(Debug)]
pub struct CliError {
    /// One of the `EXIT_*` codes.
    pub code: u8,
    /// What to print (may span several lines).
    pub message: String,
}

impl CliError {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        CliError {
            code,
            message: message.into(),
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        CliError::new(EXIT_USAGE, message)
    }

    /// A WAMP ERROR: `URI: message`, then the rest of its payload as JSON
    /// when there is more than the message.
    pub fn wamp(context: &str, e: &WampError) -> Self {
        let code = if e.uri.starts_with("switchyard.client.") {
            // Local failures of the client: the connection, not the callee.
            EXIT_CONNECTION
        } else {
            EXIT_WAMP_ERROR
        };
        CliError::new(code, format!("{context}{}", values::describe_error(e)))
    }
}

/// A call's WAMP ERROR as the command's failure; the session is left
/// cleanly first, unless the connection itself failed.
pub async fn call_failed(session: &Session, context: &str, e: &WampError) -> CliError {
    if !e.uri.starts_with("switchyard.client.") {
        let _ = session.leave().await;
    }
    CliError::wamp(context, e)
}

/// A refused request (`refused` + the WAMP ERROR; the session is left
/// cleanly) or a lost connection (`lost` + what happened).
pub async fn request_failed(
    session: &Session,
    refused: &str,
    lost: &str,
    e: switchyard_client::Error,
) -> CliError {
    match e {
        switchyard_client::Error::Wamp(e) => {
            let _ = session.leave().await;
            CliError::wamp(refused, &e)
        }
        e => CliError::new(EXIT_CONNECTION, format!("{lost}{e}")),
    }
}

/// [`request_failed`] for a reconnecting session.
pub async fn request_failed_rs(
    session: &ReconnectingSession,
    refused: &str,
    lost: &str,
    e: switchyard_client::Error,
) -> CliError {
    match e {
        switchyard_client::Error::Wamp(e) => {
            let _ = session.leave().await;
            CliError::wamp(refused, &e)
        }
        e => CliError::new(EXIT_CONNECTION, format!("{lost}{e}")),
    }
}

/// The failure of a long-running command whose session ended for good
/// (lost with `--no-reconnect`, or ended by the router): 3 for a lost
/// connection, 4 otherwise.
pub fn session_ended(info: switchyard_client::CloseInfo) -> CliError {
    let code = if info.reason == switchyard_client::session::TRANSPORT_LOST {
        EXIT_CONNECTION
    } else {
        EXIT_REFUSED
    };
    CliError::new(
        code,
        format!(
            "the session ended: {}{}",
            info.reason,
            info.message.map(|m| format!(": {m}")).unwrap_or_default()
        ),
    )
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Prints `result`'s error (if any) to standard error and turns it into the
/// process exit code.
pub fn finish(result: Result<u8, CliError>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            for line in e.message.lines() {
                eprintln!("switchyard: {line}");
            }
            ExitCode::from(e.code)
        }
    }
}

/// Runs a client command on a fresh single-threaded runtime.
pub fn run<F>(fut: F) -> ExitCode
where
    F: std::future::Future<Output = Result<u8, CliError>>,
{
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("switchyard: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = finish(runtime.block_on(fut));
    // Do not wait for stray blocking tasks (a pending stdin/stdout operation).
    runtime.shutdown_background();
    code
}

/// Ctrl-C (SIGINT) and SIGTERM, as a stream: [`Signals::recv`] returns on
/// each one.
pub struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn new() -> Result<Signals, CliError> {
        use tokio::signal::unix::{signal, SignalKind};
        let fail = |e: std::io::Error| {
            CliError::new(
                EXIT_CONNECTION,
                format!("cannot install signal handlers: {e}"),
            )
        };
        Ok(Signals {
            int: signal(SignalKind::interrupt()).map_err(fail)?,
            term: signal(SignalKind::terminate()).map_err(fail)?,
        })
    }

    /// Waits for the next SIGINT or SIGTERM.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}
