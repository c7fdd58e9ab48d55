//! `switchyard process list|start|stop|restart`: the router's supervised
//! processes (`[[process]]`, docs/PROCESSES.md) through the
//! `switchyard.process.*` procedures, as an ordinary WAMP client (so the
//! realm's authorization applies).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use switchyard_client::{Dict, Value};

use super::connect::ConnectArgs;
use super::values::to_json;
use super::{call_failed, CliError, Signals, EXIT_INTERRUPTED, EXIT_OK};

const EXAMPLES: &str = "\
Examples:
  switchyard process list
  switchyard process restart pdf-worker
  switchyard process stop pdf-worker       # returns once it is stopped
  switchyard process start pdf-worker      # also after a crash loop

Exit codes:
  0 done   1 WAMP error (e.g. switchyard.process.error.unknown_process)
  2 bad command line   3 router unreachable or connection lost   4 session refused
  130 interrupted";

/// See and control the router's supervised processes ([[process]]).
#[derive(Args, Debug, Clone)]
#[command(after_help = EXAMPLES, subcommand_required = true, arg_required_else_help = true)]
pub struct ProcessArgs {
    #[command(subcommand)]
    pub command: ProcessCommand,
}

/// Options of every `process` subcommand.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Print the answer as one line of JSON instead of a table.
    #[arg(long)]
    pub json: bool,

    #[command(flatten, next_help_heading = "Connection")]
    pub conn: ConnectArgs,
}

#[derive(Subcommand, Debug, Clone)]
pub enum ProcessCommand {
    /// Every process with its state (switchyard.process.list).
    List {
        #[command(flatten)]
        common: Common,
    },
    /// Start a stopped process (switchyard.process.start).
    Start {
        name: String,
        #[command(flatten)]
        common: Common,
    },
    /// Stop a process: SIGTERM to its group, SIGKILL after its stop_timeout
    /// (switchyard.process.stop).
    Stop {
        name: String,
        #[command(flatten)]
        common: Common,
    },
    /// Stop and start a process (switchyard.process.restart).
    Restart {
        name: String,
        #[command(flatten)]
        common: Common,
    },
}

/// Runs `switchyard process ...`.
pub async fn run(a: ProcessArgs) -> Result<u8, CliError> {
    let mut signals = Signals::new()?;
    let (procedure, name, a) = match a.command {
        ProcessCommand::List { common } => ("switchyard.process.list", None, common),
        ProcessCommand::Start { name, common } => ("switchyard.process.start", Some(name), common),
        ProcessCommand::Stop { name, common } => ("switchyard.process.stop", Some(name), common),
        ProcessCommand::Restart { name, common } => {
            ("switchyard.process.restart", Some(name), common)
        }
    };
    let args: Vec<Value> = name.into_iter().map(Value::Str).collect();
    let work = async {
        let session = a.conn.connect(None).await?;
        let answer = session.call(procedure, args, Dict::new()).await;
        let (args, _) = match answer {
            Ok(r) => r,
            Err(e) => return Err(call_failed(&session, &format!("{procedure}: "), &e).await),
        };
        let _ = session.leave().await;
        let value = args.into_iter().next().unwrap_or(Value::Null);
        if a.json {
            println!("{}", to_json(&value));
            return Ok(EXIT_OK);
        }
        let rows = match value {
            Value::List(l) => l,
            other => vec![other],
        };
        println!(
            "{:<24} {:<11} {:>8} {:>8} {:<10} LAST EXIT",
            "NAME", "STATUS", "PID", "RESTARTS", "SINCE"
        );
        for r in rows {
            let Value::Dict(d) = r else { continue };
            let pid = match d.get("pid") {
                Some(Value::UInt(p)) => p.to_string(),
                _ => "-".into(),
            };
            let restarts = match d.get("restarts") {
                Some(Value::UInt(n)) => n.to_string(),
                _ => "0".into(),
            };
            let since = match d.get("since_ms") {
                Some(Value::UInt(ms)) => ago(*ms),
                _ => "-".into(),
            };
            println!(
                "{:<24} {:<11} {:>8} {:>8} {:<10} {}",
                d.get_str("name").unwrap_or("?"),
                d.get_str("status").unwrap_or("?"),
                pid,
                restarts,
                since,
                d.get_str("last_exit").unwrap_or("-"),
            );
        }
        Ok(EXIT_OK)
    };
    tokio::select! {
        r = work => r,
        _ = signals.recv() => Err(CliError::new(EXIT_INTERRUPTED, "interrupted")),
    }
}

/// "12s ago"-style age of a unix-ms time, rounded to seconds.
fn ago(ms: u64) -> String {
    let then = UNIX_EPOCH + Duration::from_millis(ms);
    let secs = SystemTime::now()
        .duration_since(then)
        .map_or(0, |d| d.as_secs());
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}
