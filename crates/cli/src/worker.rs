//! `switchyard worker QUEUE -- CMD [ARGS...]`: serve a durable queue
//! (docs/QUEUES.md) by running a command once per job. The worker registers
//! the queue's target procedure (found with `switchyard.queue.stats`, or
//! `--procedure`), so the router's dispatcher hands it jobs like to any
//! worker; the exit status of the command decides the job's fate, and the
//! lease is kept alive (progressive YIELDs) while the command runs.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clap::Args;
use switchyard_client::{
    Dict, Invocation, Message, Payload, ReconnectingSession, Value, WampError,
};
use tokio::sync::{watch, Semaphore};

use super::connect::{parse_duration, ConnectArgs};
use super::register::{outcome_to_result, run_command_with, Outcome, RunOptions};
use super::values::to_json;
use super::{request_failed_rs, CliError, Signals, EXIT_OK};

/// Exit status of a command whose job must not be tried again (EX_DATAERR).
pub const EXIT_NON_RETRYABLE: i32 = 65;

/// The INVOCATION.Details key where the router puts the job's identity.
const JOB_DETAILS: &str = "x_switchyard_job";

/// The dead-letter URI (switchyard_queue::NON_RETRYABLE).
const NON_RETRYABLE: &str = "switchyard.queue.non_retryable";

/// Lease extension period when the lease timeout is not known.
const DEFAULT_EXTEND_EVERY: Duration = Duration::from_secs(5);

const EXAMPLES: &str = "\
The command's standard input is one line of JSON, the job:
  {\"id\":17,\"queue\":\"pdf\",\"attempt\":1,\"args\":[42],\"kwargs\":{\"page\":1}}
and its environment has SWITCHYARD_JOB_ID, SWITCHYARD_JOB_ATTEMPT and SWITCHYARD_QUEUE.

How the command ends decides the job:
  exit 0          completed; standard output is the result (JSON; text is taken as a
                  string; empty output: no result)
  exit 65         failed, not retryable: dead-lettered at once (EX_DATAERR; the error is
                  switchyard.queue.non_retryable)
  any other exit  failed, retryable (e.g. 75 EX_TEMPFAIL; also a signal): the queue's retry
                  policy decides (error switchyard.error.command_failed)
  --timeout       killed, failed retryably (switchyard.error.command_timeout)
While it runs, the job's lease is extended (every third of the queue's lease_timeout).

On SIGTERM or Ctrl-C the worker drains: it takes no new job, waits up to --grace for the
running commands, then kills them (their jobs fail retryably with
switchyard.error.command_stopped) and leaves with status 0.

Examples:
  switchyard worker pdf -- php bin/console app:render-pdf
  switchyard worker mail --concurrency 8 --timeout 2m -- ./send-mail.py
  switchyard worker thumbnails --procedure com.example.thumbnail -- ./thumb.sh";

/// Serve a durable queue by running a command once per job.
///
/// The worker registers the queue's target procedure (shared, round-robin,
/// so several workers balance the queue) and runs CMD for every job the
/// router hands it, at most --concurrency at once. It needs `call` on
/// switchyard.queue.stats (to find the procedure; or give --procedure) and
/// `register` on the procedure. A line "worker for queue Q ready" on
/// standard error (unless --quiet) tells when it takes jobs.
#[derive(Args, Debug, Clone)]
#[command(next_display_order = 10, after_help = EXAMPLES)]
pub struct WorkerArgs {
    /// The queue.
    pub queue: String,

    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,

    /// Jobs run at once.
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,

    /// The procedure the queue's jobs call (default: the queue's target, from
    /// switchyard.queue.stats).
    #[arg(long, value_name = "URI")]
    pub procedure: Option<String>,

    /// Kill a command still running after this long (30s, 5m) and fail the
    /// job retryably. Default: no limit.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,

    /// On SIGTERM, how long running commands may finish before they are
    /// killed and their jobs failed retryably.
    #[arg(long, value_parser = parse_duration, default_value = "30s", value_name = "DURATION")]
    pub grace: Duration,

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

/// Runs one command per job.
struct Runner {
    command: Vec<String>,
    queue: String,
    timeout: Option<Duration>,
    slots: Arc<Semaphore>,
    /// Turns true when the drain's grace is over.
    stop: watch::Receiver<bool>,
    /// To send progressive YIELDs (set once connected).
    session: OnceLock<ReconnectingSession>,
    quiet: bool,
}

/// What the router says about the job in INVOCATION.Details.
struct JobInfo {
    id: Option<u64>,
    attempt: Option<u64>,
    lease_timeout: Option<Duration>,
}

fn job_info(details: &Dict) -> JobInfo {
    let job = match details.get(JOB_DETAILS) {
        Some(Value::Dict(d)) => Some(d),
        _ => None,
    };
    let uint = |k: &str| match job.and_then(|d| d.get(k)) {
        Some(Value::UInt(n)) => Some(*n),
        _ => None,
    };
    JobInfo {
        id: uint("id"),
        attempt: uint("attempt"),
        lease_timeout: uint("lease_timeout_ms").map(Duration::from_millis),
    }
}

impl Runner {
    async fn run_job(&self, inv: Invocation) -> Result<Payload, WampError> {
        let _slot = self.slots.acquire().await.map_err(|_| {
            WampError::with_message("wamp.error.canceled", "the worker is shutting down")
        })?;
        let bad = |e: switchyard_proto::DecodeError| {
            WampError::with_message(NON_RETRYABLE, format!("undecodable job: {e}"))
        };
        let args = inv.args().map_err(bad)?;
        let kwargs = inv.kwargs().map_err(bad)?;
        let job = job_info(&inv.details);
        let id_value = job.id.map_or(Value::Null, Value::UInt);
        let attempt_value = job.attempt.map_or(Value::Null, Value::UInt);
        let mut input = to_json(&Value::Dict(
            Dict::new()
                .with("id", id_value)
                .with("queue", self.queue.as_str())
                .with("attempt", attempt_value)
                .with("args", Value::List(args))
                .with("kwargs", kwargs),
        ));
        input.push('\n');
        let mut env = vec![("SWITCHYARD_QUEUE".to_string(), self.queue.clone())];
        if let Some(id) = job.id {
            env.push(("SWITCHYARD_JOB_ID".into(), id.to_string()));
        }
        if let Some(a) = job.attempt {
            env.push(("SWITCHYARD_JOB_ATTEMPT".into(), a.to_string()));
        }
        // A progressive YIELD extends the lease by the queue's lease_timeout.
        let every = job.lease_timeout.map_or(DEFAULT_EXTEND_EVERY, |t| {
            (t / 3).max(Duration::from_millis(100))
        });
        // The session that delivered the job (the current one): a YIELD
        // for it on a later session would name an unknown request.
        let session = self.session.get().and_then(ReconnectingSession::current);
        let request = inv.request;
        let extend = move || {
            if let Some(s) = &session {
                let _ = s.send_message(&Message::Yield {
                    request,
                    options: Dict::new().with("progress", true),
                    payload: Payload::empty(),
                });
            }
        };
        // Only a caller that takes progressive results (the queue does) gets
        // them; another caller of the procedure (with --procedure) does not.
        let progress = inv.details.get_bool("receive_progress") == Some(true);
        let opts = RunOptions {
            timeout: self.timeout,
            env,
            stop: Some(self.stop.clone()),
            tick: progress.then(|| (every, Box::new(extend) as Box<dyn FnMut() + Send>)),
        };
        let outcome = run_command_with(&self.command, input.as_bytes(), opts).await;
        if let (false, Outcome::Exited { stderr, .. }) = (self.quiet, &outcome) {
            if !stderr.is_empty() {
                eprint!("{}", String::from_utf8_lossy(stderr));
            }
        }
        let code = match &outcome {
            Outcome::Exited { status, .. } => status.code(),
            _ => None,
        };
        let mut result = outcome_to_result(outcome);
        if let Err(e) = &mut result {
            if code == Some(EXIT_NON_RETRYABLE) {
                e.uri = NON_RETRYABLE.into();
            }
        }
        if !self.quiet {
            let what = match job.id {
                Some(id) => format!("job {id} (attempt {})", job.attempt.unwrap_or(0)),
                None => "job".into(),
            };
            match &result {
                Ok(_) => eprintln!("switchyard: {}: {what} completed", self.queue),
                Err(e) => {
                    let message = e.args.first().and_then(Value::as_str).unwrap_or("");
                    eprintln!(
                        "switchyard: {}: {what} failed: {}: {message}",
                        self.queue, e.uri
                    );
                }
            }
        }
        result
    }
}

/// The queue's target procedure, from `switchyard.queue.stats`.
async fn target_of(session: &ReconnectingSession, queue: &str) -> Result<String, CliError> {
    let procedure = "switchyard.queue.stats";
    match session
        .call(procedure, vec![Value::from(queue)], Dict::new())
        .await
    {
        Ok((_, kw)) => match kw.get_str("target") {
            Some(t) => Ok(t.to_owned()),
            None => Err(CliError::usage(format!(
                "queue {queue} has no procedure target (an HTTP target, or a router too old to say): give --procedure"
            ))),
        },
        Err(e) => Err(request_failed_rs(session, &format!("{procedure}: "), "", e).await),
    }
}

/// Runs `switchyard worker`.
pub async fn run(a: WorkerArgs) -> Result<u8, CliError> {
    let mut signals = Signals::new()?;
    let session = tokio::select! {
        s = a.conn.connect_reconnecting(None, !a.no_reconnect, a.quiet) => s?,
        _ = signals.recv() => return Ok(EXIT_OK),
    };
    let procedure = match &a.procedure {
        Some(p) => p.clone(),
        None => target_of(&session, &a.queue).await?,
    };
    let options = Dict::new()
        .with("concurrency", u64::from(a.concurrency))
        .with("invoke", "roundrobin");
    let slots = Arc::new(Semaphore::new(a.concurrency as usize));
    let (stop_tx, stop_rx) = watch::channel(false);
    let runner = Arc::new(Runner {
        command: a.command.clone(),
        queue: a.queue.clone(),
        timeout: a.timeout,
        slots: Arc::clone(&slots),
        stop: stop_rx,
        session: OnceLock::new(),
        quiet: a.quiet,
    });
    let _ = runner.session.set(session.clone());
    let handler_runner = Arc::clone(&runner);
    let registered = session
        .register_raw(&procedure, options, move |inv| {
            let runner = Arc::clone(&handler_runner);
            async move { runner.run_job(inv).await }
        })
        .await;
    let registration = match registered {
        Ok(r) => r,
        Err(e) => {
            let context = format!("cannot register {procedure}: ");
            return Err(request_failed_rs(&session, &context, &context, e).await);
        }
    };
    if !a.quiet {
        eprintln!(
            "switchyard: worker for queue {} ready (procedure {procedure}, concurrency {}); SIGTERM or Ctrl-C drains",
            a.queue, a.concurrency
        );
    }
    tokio::select! {
        info = session.closed() => return Err(super::session_ended(info)),
        _ = signals.recv() => {}
    }
    // Drain: take no new job, give the running ones --grace, then stop them
    // (their ERRORs go out before the session is left).
    let _ = session.unregister(registration).await;
    let running = (a.concurrency as usize).saturating_sub(slots.available_permits());
    if running > 0 {
        if !a.quiet {
            eprintln!(
                "switchyard: draining: waiting up to {} for {running} running job(s)",
                humantime::format_duration(a.grace)
            );
        }
        let all_done = slots.acquire_many(a.concurrency);
        tokio::select! {
            _ = all_done => {}
            _ = tokio::time::sleep(a.grace) => {
                let _ = stop_tx.send(true);
                let _ = tokio::time::timeout(Duration::from_secs(5), slots.acquire_many(a.concurrency)).await;
            }
            _ = session.closed() => {}
        }
    }
    slots.close();
    // Let the last ERROR/YIELD reach the socket before GOODBYE.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _ = session.leave().await;
    Ok(EXIT_OK)
}
