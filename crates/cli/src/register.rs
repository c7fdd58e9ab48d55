//! `switchyard register PROCEDURE -- CMD [ARGS...]`: serve a procedure by
//! running a command once per invocation.

use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use switchyard_client::{payload, Dict, Invocation, Payload, Value, WampError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use super::connect::{parse_duration, ConnectArgs};
use super::subscribe::MatchPolicy;
use super::values::to_json;
use super::{request_failed_rs, CliError, Signals, EXIT_OK};

/// The error URI of a command that failed (non-zero exit, killed by a
/// signal, or could not be started).
pub const COMMAND_FAILED: &str = "switchyard.error.command_failed";
/// The error URI of a command that ran out of `--timeout` (it is killed).
pub const COMMAND_TIMEOUT: &str = "switchyard.error.command_timeout";

/// The error URI of a command killed because its worker stopped (drained
/// past its grace period).
pub const COMMAND_STOPPED: &str = "switchyard.error.command_stopped";

/// Largest standard output taken as a result.
const MAX_STDOUT: usize = 16 << 20;
/// Standard error kept for an error's `stderr`.
const MAX_STDERR: usize = 64 << 10;

/// Environment variables holding secrets, not passed on to the command.
const SECRET_VARS: &[&str] = &["SWITCHYARD_TICKET", "SWITCHYARD_WAMPCRA_SECRET"];

const EXAMPLES: &str = "\
The command's standard input is one line of JSON:
  {\"procedure\":\"com.example.add\",\"args\":[2,3],\"kwargs\":{},\"details\":{}}
Its standard output (surrounding whitespace ignored) becomes the single result:
parsed as JSON when it is JSON (5, \"text\", {\"a\":1}), else returned as a string
(invalid UTF-8: as binary); empty output means no result. A non-zero exit status
becomes the error switchyard.error.command_failed, with
  args   [\"command exited with status N: <last line of stderr>\"]
  kwargs {\"exit_code\": N (null if killed by a signal), \"signal\": S, \"stderr\": \"...\"}
and running longer than --timeout kills the command (its whole process group)
and answers switchyard.error.command_timeout.

Examples:
  switchyard register com.example.add -- sh -c 'jq \"[.args[]] | add\"'
  switchyard register com.example.date -- date -u +%FT%TZ
  switchyard register com.example.resize --concurrency 4 --timeout 30s -- ./resize.py
  switchyard register com.example.tools. --match prefix -- ./dispatch.sh";

/// The invocation policy of a shared registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InvokePolicy {
    Single,
    Roundrobin,
    Random,
    First,
    Last,
    #[value(name = "least_loaded", alias = "least-loaded")]
    LeastLoaded,
}

impl InvokePolicy {
    fn name(self) -> &'static str {
        match self {
            InvokePolicy::Single => "single",
            InvokePolicy::Roundrobin => "roundrobin",
            InvokePolicy::Random => "random",
            InvokePolicy::First => "first",
            InvokePolicy::Last => "last",
            InvokePolicy::LeastLoaded => "least_loaded",
        }
    }
}

/// Register a procedure served by running a command once per call.
///
/// For every invocation CMD runs with the call's arguments as JSON on its
/// standard input; what it prints becomes the result (details below). At
/// most --concurrency commands run at once (the router queues further
/// calls: the registration carries the concurrency cap). The registration
/// lasts until Ctrl-C or SIGTERM: then no new calls are taken, running
/// commands are waited for (a second Ctrl-C stops them), and the session
/// leaves cleanly with exit status 0. If the router goes away (restart,
/// lost connection) it reconnects and registers again; with --no-reconnect
/// the exit status is 3 or 4. A line "registered PROCEDURE" on standard error
/// (unless --quiet) tells when calls can be made.
///
/// The command inherits the environment except SWITCHYARD_TICKET and
/// SWITCHYARD_WAMPCRA_SECRET.
#[derive(Args, Debug, Clone)]
#[command(next_display_order = 10, after_help = EXAMPLES)]
pub struct RegisterArgs {
    /// The procedure URI (or prefix, or wildcard pattern, with --match).
    pub procedure: String,

    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,

    /// Commands that may run at once.
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,

    /// Kill a command still running after this long (500ms, 30s, 5m) and
    /// answer switchyard.error.command_timeout. Default: no limit.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,

    /// How PROCEDURE matches: exact, prefix or wildcard.
    #[arg(
        long = "match",
        value_enum,
        default_value = "exact",
        value_name = "POLICY"
    )]
    pub match_policy: MatchPolicy,

    /// Share the registration with other callees under this policy: single,
    /// roundrobin, random, first, last, least_loaded.
    #[arg(long, value_enum, value_name = "POLICY")]
    pub invoke: Option<InvokePolicy>,

    /// Print nothing on standard error except errors.
    #[arg(short, long)]
    pub quiet: bool,

    /// Exit (status 3) when the connection to the router is lost, instead
    /// of reconnecting (with backoff, re-establishing what it set up).
    #[arg(long)]
    pub no_reconnect: bool,

    #[command(flatten, next_help_heading = "Connection")]
    pub conn: ConnectArgs,
}

/// Runs one command per invocation.
struct Runner {
    command: Vec<String>,
    procedure: String,
    timeout: Option<Duration>,
    slots: Arc<Semaphore>,
    quiet: bool,
}

/// How a command run ended.
#[derive(Debug)]
pub enum Outcome {
    /// It exited (or was killed by a signal).
    Exited {
        status: ExitStatus,
        stdout: Vec<u8>,
        stdout_truncated: bool,
        stderr: Vec<u8>,
    },
    /// It ran out of the timeout and was killed.
    TimedOut(Duration),
    /// It could not be started or its pipes failed.
    Failed(String),
    /// Killed because the caller stopped it ([`RunOptions::stop`]).
    Stopped,
}

/// Kills the command's process group when dropped while armed (timeout,
/// or the invocation abandoned because the session ended).
struct GroupKill(Option<u32>);

impl Drop for GroupKill {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            if let Ok(pid) = i32::try_from(pid) {
                // SAFETY: kill(2) on the process group this process created
                // for a child it has not reaped yet; no memory is involved.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
        }
    }
}

/// Reads `r` to the end, keeping the first `cap` octets (and draining the
/// rest so the writer never blocks). Returns the octets and whether some
/// were dropped.
async fn read_capped<R: AsyncRead + Unpin>(r: Option<R>, cap: usize) -> (Vec<u8>, bool) {
    let Some(mut r) = r else {
        return (Vec::new(), false);
    };
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return (kept, truncated),
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                truncated |= n > room;
            }
        }
    }
}

/// Runs `command` with `input` on its standard input, in a process group
/// of its own, and collects its output.
pub async fn run_command(command: &[String], input: &[u8], timeout: Option<Duration>) -> Outcome {
    run_command_with(
        command,
        input,
        RunOptions {
            timeout,
            ..RunOptions::default()
        },
    )
    .await
}

/// More settings of a command run ([`run_command_with`]).
#[derive(Default)]
pub struct RunOptions {
    /// Killed (its process group) after this long: [`Outcome::TimedOut`].
    pub timeout: Option<Duration>,
    /// Added to its environment.
    pub env: Vec<(String, String)>,
    /// Killed when this turns true: [`Outcome::Stopped`].
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
    /// Called every `.0` while it runs (e.g. to extend a job's lease).
    pub tick: Option<(Duration, Box<dyn FnMut() + Send>)>,
}

/// [`run_command`] with the settings of `opts`.
pub async fn run_command_with(command: &[String], input: &[u8], opts: RunOptions) -> Outcome {
    let Some((program, args)) = command.split_first() else {
        return Outcome::Failed("no command given".into());
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(opts.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    for var in SECRET_VARS {
        cmd.env_remove(var);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(format!("cannot run \"{program}\": {e}")),
    };
    let mut group = GroupKill(child.id());
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let feed = async move {
        if let Some(mut s) = stdin {
            // A command that does not read its input is fine.
            let _ = s.write_all(input).await;
            let _ = s.shutdown().await;
        }
    };
    let all = async {
        let (_, (stdout, stdout_truncated), (stderr, _)) = tokio::join!(
            feed,
            read_capped(stdout, MAX_STDOUT),
            read_capped(stderr, MAX_STDERR)
        );
        match child.wait().await {
            Ok(status) => Outcome::Exited {
                status,
                stdout,
                stdout_truncated,
                stderr,
            },
            Err(e) => Outcome::Failed(format!("waiting for \"{program}\": {e}")),
        }
    };
    tokio::pin!(all);
    let deadline = opts.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut stop = opts.stop;
    let (every, mut tick) = match opts.tick {
        Some((every, f)) => (Some(every), Some(f)),
        None => (None, None),
    };
    let mut ticks = every.map(|e| tokio::time::interval_at(tokio::time::Instant::now() + e, e));
    let outcome = loop {
        tokio::select! {
            o = &mut all => break o,
            _ = async { match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            } } => {
                // `group` kills it.
                return Outcome::TimedOut(opts.timeout.unwrap_or_default());
            }
            _ = async { match stop.as_mut() {
                Some(rx) => { let _ = rx.wait_for(|v| *v).await; }
                None => std::future::pending().await,
            } } => return Outcome::Stopped,
            _ = async { match ticks.as_mut() {
                Some(i) => { i.tick().await; }
                None => std::future::pending().await,
            } } => {
                if let Some(f) = tick.as_mut() {
                    f();
                }
            }
        }
    };
    // Exited and reaped: nothing left to kill (and its pid may be reused).
    group.0 = None;
    outcome
}

/// The result (or error) of an invocation from how its command ended.
pub fn outcome_to_result(outcome: Outcome) -> Result<Payload, WampError> {
    match outcome {
        Outcome::Exited {
            status,
            stdout,
            stdout_truncated,
            stderr,
        } => {
            let stderr_text = String::from_utf8_lossy(&stderr).into_owned();
            if status.success() {
                if stdout_truncated {
                    return Err(WampError::with_message(
                        COMMAND_FAILED,
                        format!("the command printed more than {MAX_STDOUT} octets"),
                    ));
                }
                return Ok(match stdout_value(stdout) {
                    Some(v) => payload(vec![v], Dict::new()),
                    None => Payload::empty(),
                });
            }
            use std::os::unix::process::ExitStatusExt;
            let mut message = match (status.code(), status.signal()) {
                (Some(c), _) => format!("command exited with status {c}"),
                (None, Some(s)) => format!("command killed by signal {s}"),
                (None, None) => "command failed".to_owned(),
            };
            if let Some(last) = stderr_text.lines().rev().find(|l| !l.trim().is_empty()) {
                message.push_str(": ");
                message.push_str(last.trim());
            }
            let mut kwargs = Dict::new().with(
                "exit_code",
                status
                    .code()
                    .map_or(Value::Null, |c| Value::from(i64::from(c))),
            );
            if let Some(s) = status.signal() {
                kwargs.insert("signal", i64::from(s));
            }
            kwargs.insert("stderr", stderr_text);
            Err(WampError {
                uri: COMMAND_FAILED.into(),
                args: vec![Value::Str(message)],
                kwargs,
                details: Dict::new(),
            })
        }
        Outcome::TimedOut(t) => Err(WampError {
            kwargs: Dict::new().with("timeout_ms", t.as_millis() as u64),
            ..WampError::with_message(
                COMMAND_TIMEOUT,
                format!(
                    "the command did not finish within {} and was killed",
                    humantime::format_duration(t)
                ),
            )
        }),
        Outcome::Failed(m) => Err(WampError {
            kwargs: Dict::new().with("exit_code", Value::Null),
            ..WampError::with_message(COMMAND_FAILED, m)
        }),
        Outcome::Stopped => Err(WampError {
            kwargs: Dict::new().with("exit_code", Value::Null),
            ..WampError::with_message(
                COMMAND_STOPPED,
                "the command was stopped (its worker is shutting down)",
            )
        }),
    }
}

/// A command's standard output as a result value: none when blank, JSON
/// when it parses, else the text (binary when not UTF-8).
pub fn stdout_value(stdout: Vec<u8>) -> Option<Value> {
    match String::from_utf8(stdout) {
        Ok(text) => {
            let trimmed = text.trim();
            if trimmed.is_empty() {
                return None;
            }
            Some(
                serde_json::from_str::<Value>(trimmed)
                    .unwrap_or_else(|_| Value::Str(trimmed.to_owned())),
            )
        }
        Err(e) => Some(Value::Bytes(e.into_bytes())),
    }
}

impl Runner {
    async fn invoke(&self, inv: Invocation) -> Result<Payload, WampError> {
        // The router keeps to the registration's concurrency; this holds
        // even if it did not.
        let _slot = self.slots.acquire().await.map_err(|_| {
            WampError::with_message("wamp.error.canceled", "the callee is shutting down")
        })?;
        let bad = |e: switchyard_proto::DecodeError| {
            WampError::with_message("wamp.error.invalid_argument", e.to_string())
        };
        let args = inv.args().map_err(bad)?;
        let kwargs = inv.kwargs().map_err(bad)?;
        let procedure = inv
            .details
            .get_str("procedure")
            .unwrap_or(&self.procedure)
            .to_owned();
        let mut input = to_json(&Value::Dict(
            Dict::new()
                .with("procedure", procedure.as_str())
                .with("args", Value::List(args))
                .with("kwargs", kwargs)
                .with("details", inv.details.clone()),
        ));
        input.push('\n');
        let outcome = run_command(&self.command, input.as_bytes(), self.timeout).await;
        if let (false, Outcome::Exited { stderr, status, .. }) = (self.quiet, &outcome) {
            if status.success() && !stderr.is_empty() {
                eprint!("{}", String::from_utf8_lossy(stderr));
            }
        }
        let result = outcome_to_result(outcome);
        if let (false, Err(e)) = (self.quiet, &result) {
            let message = e.args.first().and_then(Value::as_str).unwrap_or("");
            eprintln!("switchyard: {procedure}: {}: {message}", e.uri);
        }
        result
    }
}

/// Runs `switchyard register`.
pub async fn run(a: RegisterArgs) -> Result<u8, CliError> {
    let mut signals = Signals::new()?;
    let session = tokio::select! {
        s = a.conn.connect_reconnecting(None, !a.no_reconnect, a.quiet) => s?,
        _ = signals.recv() => return Ok(EXIT_OK),
    };
    let mut options = Dict::new().with("concurrency", u64::from(a.concurrency));
    if let Some(m) = a.match_policy.option() {
        options.insert("match", m);
    }
    if let Some(i) = a.invoke {
        options.insert("invoke", i.name());
    }
    let slots = Arc::new(Semaphore::new(a.concurrency as usize));
    let runner = Arc::new(Runner {
        command: a.command.clone(),
        procedure: a.procedure.clone(),
        timeout: a.timeout,
        slots: Arc::clone(&slots),
        quiet: a.quiet,
    });
    let registered = session
        .register_raw(&a.procedure, options, move |inv| {
            let runner = Arc::clone(&runner);
            async move { runner.invoke(inv).await }
        })
        .await;
    let registration = match registered {
        Ok(r) => r,
        Err(e) => {
            let context = format!("cannot register {}: ", a.procedure);
            return Err(request_failed_rs(&session, &context, &context, e).await);
        }
    };
    if !a.quiet {
        eprintln!(
            "switchyard: registered {} (concurrency {}); Ctrl-C to stop",
            a.procedure, a.concurrency
        );
    }
    tokio::select! {
        info = session.closed() => return Err(super::session_ended(info)),
        _ = signals.recv() => {}
    }
    // Take no new calls, let the running commands finish, then leave.
    let _ = session.unregister(registration).await;
    let running = (a.concurrency as usize).saturating_sub(slots.available_permits());
    if running > 0 {
        if !a.quiet {
            eprintln!(
                "switchyard: waiting for {running} running command(s); Ctrl-C again to stop them"
            );
        }
        tokio::select! {
            _ = slots.acquire_many(a.concurrency) => {}
            _ = signals.recv() => {}
            _ = session.closed() => {}
        }
    }
    slots.close();
    let _ = session.leave().await;
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[test]
    fn stdout_becomes_the_result() {
        assert_eq!(stdout_value(b"5\n".to_vec()), Some(Value::UInt(5)));
        assert_eq!(
            stdout_value(b" {\"a\": [1]}\n".to_vec()),
            Some(Value::Dict(
                Dict::new().with("a", Value::List(vec![Value::UInt(1)]))
            ))
        );
        assert_eq!(
            stdout_value(b"hello world\n".to_vec()),
            Some(Value::from("hello world"))
        );
        assert_eq!(stdout_value(b"\n  \n".to_vec()), None);
        assert_eq!(
            stdout_value(vec![0xff, 0xfe]),
            Some(Value::Bytes(vec![0xff, 0xfe]))
        );
    }

    #[test]
    fn commands_run_fail_and_time_out() {
        block_on(async {
            let o = run_command(&sh("cat"), b"{\"x\":1}", None).await;
            let p = outcome_to_result(o).expect("ok");
            assert_eq!(
                p.args.map(|a| a.to_value().expect("decode")),
                Some(Value::List(vec![Value::Dict(Dict::new().with("x", 1u64))]))
            );

            let o = run_command(&sh("echo oops >&2; exit 3"), b"", None).await;
            let e = outcome_to_result(o).expect_err("fails");
            assert_eq!(e.uri, COMMAND_FAILED);
            assert_eq!(
                e.args,
                vec![Value::from("command exited with status 3: oops")]
            );
            assert_eq!(e.kwargs.get("exit_code"), Some(&Value::UInt(3)));
            assert_eq!(e.kwargs.get_str("stderr"), Some("oops\n"));

            let t0 = std::time::Instant::now();
            let o = run_command(
                &sh("sleep 30 & sleep 30; echo never"),
                b"",
                Some(Duration::from_millis(200)),
            )
            .await;
            assert!(t0.elapsed() < Duration::from_secs(5), "killed in time");
            let e = outcome_to_result(o).expect_err("times out");
            assert_eq!(e.uri, COMMAND_TIMEOUT);

            let o = run_command(&["/no/such/program".to_string()], b"", None).await;
            let e = outcome_to_result(o).expect_err("cannot start");
            assert_eq!(e.uri, COMMAND_FAILED);
            assert!(
                e.args[0]
                    .as_str()
                    .is_some_and(|m| m.contains("/no/such/program")),
                "{e:?}"
            );
        });
    }
}
