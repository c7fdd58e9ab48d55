//! `switchyard queue list|stats|peek|dead|requeue|purge|delete|push`: the durable
//! job queues of a realm (docs/QUEUES.md), through the `switchyard.queue.*`
//! procedures, as an ordinary WAMP client (so the router's authorization
//! applies: operators need `switchyard.queue.*`, producers
//! `switchyard.queue.push`).
//!
//! Output: tables for people by default, `--json` for scripts (one line of
//! compact JSON: the procedure's answer). A WAMP error prints its URI and
//! message on standard error and exits with 1.

use std::time::{Duration, UNIX_EPOCH};

use clap::{Args, Subcommand, ValueEnum};
use switchyard_client::{Dict, Value};

use super::connect::ConnectArgs;
use super::values::{parse_args, parse_key_value, parse_value, to_dict, to_json};
use super::{call_failed, CliError, Signals, EXIT_INTERRUPTED, EXIT_OK, EXIT_WAMP_ERROR};

const EXAMPLES: &str = "\
Examples:
  switchyard queue list                                   # one line per queue
  switchyard queue stats pdf --json | jq .ready
  switchyard queue push pdf 42 '{\"page\": 1}' --kw lang=fr --priority high --delay 30s
  switchyard queue push mail --kw to=a@b.c --idempotency-key order-17 --result-topic com.shop.mail.done
  switchyard queue peek pdf --limit 20
  switchyard queue dead pdf                               # dead letters, newest first
  switchyard queue requeue pdf --job 4101 --job 4102      # or --all
  switchyard queue purge pdf --which dead
  switchyard queue delete tmp-reports --force             # a queue declared at run time

Exit codes:
  0 done   1 WAMP error (e.g. switchyard.queue.error.unknown_queue; URI and message on stderr)
  2 bad command line   3 router unreachable or connection lost   4 session refused
  130 interrupted";

/// Inspect and operate the durable job queues of a realm.
///
/// Each subcommand calls one switchyard.queue.* procedure (docs/QUEUES.md)
/// as an ordinary client, with the connection options of the other client
/// commands, so the realm's authorization applies to it. Tables are printed
/// by default; --json prints the procedure's answer as one line of JSON.
#[derive(Args, Debug, Clone)]
#[command(after_help = EXAMPLES, subcommand_required = true, arg_required_else_help = true)]
pub struct QueueArgs {
    #[command(subcommand)]
    pub command: QueueCommand,
}

/// Options of every `queue` subcommand.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Print the answer as one line of JSON instead of a table.
    #[arg(long)]
    pub json: bool,

    #[command(flatten, next_help_heading = "Connection")]
    pub conn: ConnectArgs,
}

/// What `purge` removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Which {
    /// Waiting jobs (ready and scheduled).
    Ready,
    /// Dead letters.
    Dead,
    /// Everything, running jobs included.
    All,
}

impl Which {
    fn as_str(self) -> &'static str {
        match self {
            Which::Ready => "ready",
            Which::Dead => "dead",
            Which::All => "all",
        }
    }
}

#[derive(Subcommand, Debug, Clone)]
pub enum QueueCommand {
    /// List the realm's queues with their figures (switchyard.queue.list).
    List {
        #[command(flatten)]
        common: Common,
    },
    /// One queue's figures (switchyard.queue.stats).
    Stats {
        /// The queue.
        queue: String,
        #[command(flatten)]
        common: Common,
    },
    /// The next waiting jobs, in dispatch order (switchyard.queue.peek).
    Peek {
        /// The queue.
        queue: String,
        /// How many jobs (at most 1000).
        #[arg(long, default_value_t = 10)]
        limit: u64,
        #[command(flatten)]
        common: Common,
    },
    /// Dead letters, newest first (switchyard.queue.dead).
    Dead {
        /// The queue.
        queue: String,
        /// How many jobs (at most 1000).
        #[arg(long, default_value_t = 10)]
        limit: u64,
        #[command(flatten)]
        common: Common,
    },
    /// Put dead jobs back in the queue (switchyard.queue.requeue).
    #[command(group(clap::ArgGroup::new("which").required(true).args(["jobs", "all"])))]
    Requeue {
        /// The queue.
        queue: String,
        /// A dead job's id (repeatable; or several after one --job). If one
        /// of them is not a dead job of the queue, nothing is requeued.
        #[arg(long = "job", value_name = "ID", num_args = 1..)]
        jobs: Vec<u64>,
        /// Every dead job of the queue.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Delete jobs (switchyard.queue.purge).
    Purge {
        /// The queue.
        queue: String,
        /// ready: waiting jobs; dead: dead letters; all: both and running jobs.
        #[arg(long, value_enum)]
        which: Which,
        #[command(flatten)]
        common: Common,
    },
    /// Delete a queue declared at run time, with its jobs
    /// (switchyard.queue.delete). Queues of the config file cannot be
    /// deleted; a queue that holds jobs only with --force.
    Delete {
        /// The queue.
        queue: String,
        /// Delete it even if it holds jobs (waiting, running or dead).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Push a job; prints its id, and "duplicate" when the idempotency key
    /// was already used (switchyard.queue.push).
    ///
    /// ARGS and --kw KEY=VALUE are the job's positional and keyword
    /// arguments, parsed as JSON when valid JSON, else plain strings (as for
    /// `switchyard call`).
    #[command(allow_negative_numbers = true)]
    Push(Box<PushArgs>),
}

/// `queue push`.
#[derive(Args, Debug, Clone)]
pub struct PushArgs {
    /// The queue.
    pub queue: String,

    /// Positional arguments of the job (JSON, else plain strings).
    #[arg(value_name = "ARGS")]
    pub args: Vec<String>,

    /// A keyword argument of the job (repeatable). VALUE as for ARGS.
    #[arg(long = "kw", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub kw: Vec<(String, Value)>,

    /// Run it after this long: 250ms, 30s, 5m, 1h, or milliseconds.
    #[arg(long, value_name = "DURATION", conflicts_with = "run_at")]
    pub delay: Option<String>,

    /// Run it at this time: RFC 3339 (2026-11-22T10:00:00Z) or unix milliseconds.
    #[arg(long, value_name = "TIME")]
    pub run_at: Option<String>,

    /// 0..9 (higher runs first) or lowest, low, normal (default), high, highest.
    #[arg(long, value_name = "P")]
    pub priority: Option<String>,

    /// A second push with the same key (to the same queue, within its
    /// idempotency window) returns the first job's id.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,

    /// Publish the job's end (completed or dead) on this topic.
    #[arg(long, value_name = "TOPIC")]
    pub result_topic: Option<String>,

    /// The procedure that runs the job, instead of the queue's target.
    #[arg(long, value_name = "PROCEDURE")]
    pub target: Option<String>,

    /// The job's retry policy: a kind (none, once, exponential) or JSON,
    /// e.g. '{"kind": "fixed", "times": 3, "spacing": "10s"}'.
    #[arg(long, value_name = "POLICY")]
    pub retry: Option<String>,

    /// The job's limit of attempts, instead of the queue's.
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<u64>,

    #[command(flatten)]
    pub common: Common,
}

/// One call: the procedure, its arguments, and what to print of its answer.
struct Request {
    procedure: &'static str,
    args: Vec<Value>,
    kwargs: Dict,
    render: fn(&[Value], &Dict) -> Result<String, String>,
    json: fn(&[Value], &Dict) -> Value,
}

fn first(args: &[Value], _: &Dict) -> Value {
    args.first().cloned().unwrap_or(Value::Null)
}

fn kwargs(_: &[Value], kw: &Dict) -> Value {
    Value::Dict(kw.clone())
}

impl QueueCommand {
    fn common(&self) -> &Common {
        match self {
            QueueCommand::List { common }
            | QueueCommand::Stats { common, .. }
            | QueueCommand::Peek { common, .. }
            | QueueCommand::Dead { common, .. }
            | QueueCommand::Requeue { common, .. }
            | QueueCommand::Purge { common, .. }
            | QueueCommand::Delete { common, .. } => common,
            QueueCommand::Push(p) => &p.common,
        }
    }

    fn request(&self) -> Request {
        let q = |name: &str| vec![Value::from(name)];
        match self {
            QueueCommand::List { .. } => Request {
                procedure: "switchyard.queue.list",
                args: Vec::new(),
                kwargs: Dict::new(),
                render: |args, _| match args.first() {
                    Some(Value::List(list)) => Ok(list_table(list)),
                    other => Err(format!("expected a list of queues, got {other:?}")),
                },
                json: first,
            },
            QueueCommand::Stats { queue, .. } => Request {
                procedure: "switchyard.queue.stats",
                args: q(queue),
                kwargs: Dict::new(),
                render: |_, kw| Ok(stats_table(kw)),
                json: kwargs,
            },
            QueueCommand::Peek { queue, limit, .. } | QueueCommand::Dead { queue, limit, .. } => {
                let dead = matches!(self, QueueCommand::Dead { .. });
                Request {
                    procedure: if dead {
                        "switchyard.queue.dead"
                    } else {
                        "switchyard.queue.peek"
                    },
                    args: q(queue),
                    kwargs: Dict::new().with("limit", *limit),
                    render: if dead {
                        |args, _| jobs_table(args, true)
                    } else {
                        |args, _| jobs_table(args, false)
                    },
                    json: first,
                }
            }
            QueueCommand::Requeue {
                queue, jobs, all, ..
            } => Request {
                procedure: "switchyard.queue.requeue",
                args: q(queue),
                kwargs: if *all {
                    Dict::new().with("all", true)
                } else {
                    Dict::new().with(
                        "jobs",
                        Value::List(jobs.iter().map(|id| Value::UInt(*id)).collect()),
                    )
                },
                render: |_, kw| Ok(format!("requeued {}", field(kw, "requeued"))),
                json: kwargs,
            },
            QueueCommand::Purge { queue, which, .. } => Request {
                procedure: "switchyard.queue.purge",
                args: q(queue),
                kwargs: Dict::new().with("which", which.as_str()),
                render: |_, kw| Ok(format!("purged {}", field(kw, "purged"))),
                json: kwargs,
            },
            QueueCommand::Delete { queue, force, .. } => Request {
                procedure: "switchyard.queue.delete",
                args: q(queue),
                kwargs: Dict::new().with("force", *force),
                render: |_, kw| {
                    Ok(format!(
                        "deleted {} with {} jobs",
                        field(kw, "queue"),
                        field(kw, "jobs")
                    ))
                },
                json: kwargs,
            },
            QueueCommand::Push(p) => Request {
                procedure: "switchyard.queue.push",
                args: q(&p.queue),
                kwargs: push_kwargs(p),
                render: |_, kw| {
                    let id = field(kw, "id");
                    Ok(if kw.get_bool("duplicate") == Some(true) {
                        format!("{id} duplicate")
                    } else {
                        id
                    })
                },
                json: kwargs,
            },
        }
    }
}

/// The kwargs of `switchyard.queue.push`: `args`, `kwargs` and the options
/// given (the router checks them, so its messages apply).
fn push_kwargs(p: &PushArgs) -> Dict {
    let mut kw = Dict::new()
        .with("args", Value::List(parse_args(&p.args)))
        .with("kwargs", to_dict(&p.kw));
    let strings = [
        ("delay", &p.delay),
        ("run_at", &p.run_at),
        ("priority", &p.priority),
        ("idempotency_key", &p.idempotency_key),
        ("result_topic", &p.result_topic),
        ("target", &p.target),
    ];
    for (key, value) in strings {
        if let Some(v) = value {
            kw.insert(key, v.as_str());
        }
    }
    if let Some(r) = &p.retry {
        kw.insert("retry", parse_value(r));
    }
    if let Some(n) = p.max_attempts {
        kw.insert("max_attempts", n);
    }
    kw
}

/// Runs `switchyard queue ...`.
pub async fn run(a: QueueArgs) -> Result<u8, CliError> {
    let mut signals = Signals::new()?;
    let common = a.command.common();
    let req = a.command.request();
    let work = async {
        let session = common.conn.connect(None).await?;
        let answer = session
            .call(req.procedure, req.args.clone(), req.kwargs.clone())
            .await;
        let (args, kw) = match answer {
            Ok(r) => r,
            Err(e) => return Err(call_failed(&session, &format!("{}: ", req.procedure), &e).await),
        };
        let _ = session.leave().await;
        if common.json {
            println!("{}", to_json(&(req.json)(&args, &kw)));
        } else {
            let text = (req.render)(&args, &kw).map_err(|e| {
                CliError::new(
                    EXIT_WAMP_ERROR,
                    format!("{}: unexpected answer: {e}", req.procedure),
                )
            })?;
            println!("{}", text.trim_end_matches('\n'));
        }
        Ok(EXIT_OK)
    };
    tokio::select! {
        r = work => r,
        _ = signals.recv() => Err(CliError::new(EXIT_INTERRUPTED, "interrupted")),
    }
}

// ---------------------------------------------------------------------------
// tables

/// A field as text: numbers and strings as they are, null and absent as
/// `-`, anything else as JSON.
fn field(d: &Dict, key: &str) -> String {
    match d.get(key) {
        None | Some(Value::Null) => "-".into(),
        Some(Value::Str(s)) => s.clone(),
        Some(Value::UInt(n)) => n.to_string(),
        Some(Value::Int(n)) => n.to_string(),
        Some(v) => to_json(v),
    }
}

fn dict(v: Option<&Value>) -> Dict {
    match v {
        Some(Value::Dict(d)) => d.clone(),
        _ => Dict::new(),
    }
}

fn uint(d: &Dict, key: &str) -> Option<u64> {
    match d.get(key) {
        Some(Value::UInt(n)) => Some(*n),
        _ => None,
    }
}

/// Milliseconds as a short duration (`950ms`, `12s`, `3m 4s`).
fn age(ms: Option<u64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) if ms < 1000 => format!("{ms}ms"),
        Some(ms) => humantime::format_duration(Duration::from_secs(ms / 1000)).to_string(),
    }
}

/// Unix milliseconds as RFC 3339 UTC.
fn time(ms: Option<u64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) => {
            humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        }
    }
}

/// At most `max` characters, with `…` when cut.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `s` with its control characters escaped (`\u{1b}`, `\r`, `\n`...): cells
/// carry text from clients and workers (an error message, a queue's figures)
/// and go to the operator's terminal, where an escape sequence could set the
/// title, clear the screen, write the clipboard or fake lines.
fn printable(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Left-aligned columns; the last column is not padded. Cells are printed
/// with their control characters escaped.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| printable(c)).collect())
        .collect();
    let rows = rows.as_slice();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let n = cells.len();
        let mut s = String::new();
        for (i, (cell, w)) in cells.into_iter().zip(&widths).enumerate() {
            s.push_str(cell);
            if i + 1 < n {
                s.push_str(&" ".repeat(w - cell.chars().count() + 2));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn list_table(list: &[Value]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|v| {
            let d = dict(Some(v));
            let mut row: Vec<String> = [
                "name",
                "ready",
                "scheduled",
                "in_flight",
                "dead",
                "completed_total",
                "retried_total",
                "dead_lettered_total",
            ]
            .iter()
            .map(|k| field(&d, k))
            .collect();
            row.push(age(uint(&d, "oldest_ready_age_ms")));
            row
        })
        .collect();
    if rows.is_empty() {
        return "no queues in this realm".into();
    }
    table(
        &[
            "QUEUE",
            "READY",
            "SCHEDULED",
            "IN_FLIGHT",
            "DEAD",
            "COMPLETED",
            "RETRIED",
            "DEAD_LETTERED",
            "OLDEST_READY",
        ],
        &rows,
    )
}

fn stats_table(d: &Dict) -> String {
    let by_priority = match d.get("ready_by_priority") {
        Some(Value::List(levels)) => {
            let parts: Vec<String> = levels
                .iter()
                .enumerate()
                .rev()
                .filter_map(|(p, n)| match n {
                    Value::UInt(n) if *n > 0 => Some(format!("{p}:{n}")),
                    _ => None,
                })
                .collect();
            if parts.is_empty() {
                "-".to_string()
            } else {
                parts.join(" ")
            }
        }
        _ => "-".to_string(),
    };
    let concurrency = match uint(d, "concurrency") {
        Some(0) => "unlimited".to_string(),
        _ => field(d, "concurrency"),
    };
    let rows: Vec<Vec<String>> = [
        ("queue", field(d, "name")),
        ("ready", field(d, "ready")),
        ("ready by priority", by_priority),
        ("scheduled", field(d, "scheduled")),
        ("in flight", field(d, "in_flight")),
        ("dead", field(d, "dead")),
        ("oldest ready", age(uint(d, "oldest_ready_age_ms"))),
        ("completed", field(d, "completed_total")),
        ("retried", field(d, "retried_total")),
        ("dead-lettered", field(d, "dead_lettered_total")),
        ("idempotency keys", field(d, "idempotency_keys")),
        ("concurrency", concurrency),
    ]
    .into_iter()
    .map(|(k, v)| vec![k.to_string(), v])
    .collect();
    let text = table(&["", ""], &rows);
    // no header line for the key/value table
    text.lines().skip(1).collect::<Vec<_>>().join("\n")
}

/// The job's arguments as compact JSON: `[args] {kwargs}`.
fn payload_text(job: &Dict) -> String {
    let args = job.get("args").map(to_json).unwrap_or_else(|| "[]".into());
    match job.get("kwargs") {
        Some(Value::Dict(k)) if !k.is_empty() => {
            format!("{args} {}", to_json(&Value::Dict(k.clone())))
        }
        _ => args,
    }
}

fn jobs_table(args: &[Value], dead: bool) -> Result<String, String> {
    let list = match args.first() {
        Some(Value::List(l)) => l,
        other => return Err(format!("expected a list of jobs, got {other:?}")),
    };
    if list.is_empty() {
        return Ok(if dead {
            "no dead jobs".into()
        } else {
            "no waiting jobs".into()
        });
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|v| {
            let info = dict(Some(v));
            let job = dict(info.get("job"));
            let status = dict(info.get("status"));
            if dead {
                let err = dict(status.get("last_error"));
                let error = match (err.get_str("uri"), err.get_str("message")) {
                    (Some(u), Some(m)) if !m.is_empty() => format!("{u}: {m}"),
                    (Some(u), _) => u.to_string(),
                    _ => "-".into(),
                };
                vec![
                    field(&job, "id"),
                    field(&status, "reason"),
                    field(&status, "attempts"),
                    time(uint(&status, "at_ms")),
                    clip(&error, 80),
                    clip(&payload_text(&job), 60),
                ]
            } else {
                vec![
                    field(&job, "id"),
                    field(&job, "priority"),
                    field(&status, "state"),
                    field(&status, "attempts"),
                    time(uint(&status, "run_at_ms")),
                    clip(&payload_text(&job), 60),
                ]
            }
        })
        .collect();
    Ok(if dead {
        table(
            &["ID", "REASON", "ATTEMPTS", "DIED_AT", "LAST_ERROR", "ARGS"],
            &rows,
        )
    } else {
        table(
            &["ID", "PRIORITY", "STATE", "ATTEMPTS", "RUN_AT", "ARGS"],
            &rows,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        q: QueueArgs,
    }

    fn parse(args: &[&str]) -> Result<QueueCommand, clap::Error> {
        let mut v = vec!["switchyard"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v).map(|c| c.q.command)
    }

    #[test]
    fn push_options_become_kwargs() {
        let cmd = parse(&[
            "push",
            "pdf",
            "42",
            "hello",
            "-1",
            "--kw",
            "to=a@b.c",
            "--delay",
            "30s",
            "--priority",
            "high",
            "--idempotency-key",
            "k",
            "--retry",
            "{\"kind\": \"none\"}",
            "--max-attempts",
            "3",
        ])
        .expect("parses");
        let req = cmd.request();
        assert_eq!(req.procedure, "switchyard.queue.push");
        assert_eq!(req.args, vec![Value::from("pdf")]);
        let kw = req.kwargs;
        assert_eq!(
            kw.get("args"),
            Some(&Value::List(vec![
                Value::UInt(42),
                Value::from("hello"),
                Value::Int(-1)
            ]))
        );
        assert_eq!(
            kw.get("kwargs"),
            Some(&Value::Dict(Dict::new().with("to", "a@b.c")))
        );
        assert_eq!(kw.get_str("delay"), Some("30s"));
        assert_eq!(kw.get_str("priority"), Some("high"));
        assert_eq!(kw.get_str("idempotency_key"), Some("k"));
        assert_eq!(
            kw.get("retry"),
            Some(&Value::Dict(Dict::new().with("kind", "none")))
        );
        assert_eq!(kw.get("max_attempts"), Some(&Value::UInt(3)));
        assert!(kw.get("run_at").is_none() && kw.get("target").is_none());
    }

    #[test]
    fn usage_errors() {
        assert!(parse(&["push", "q", "--delay", "1s", "--run-at", "0"]).is_err());
        assert!(parse(&["requeue", "q"]).is_err(), "--job or --all");
        assert!(parse(&["requeue", "q", "--job", "1", "--all"]).is_err());
        assert!(parse(&["requeue", "q", "--job", "x"]).is_err());
        assert!(parse(&["purge", "q"]).is_err(), "--which is required");
        assert!(parse(&["delete", "q", "--force"]).is_ok());
        assert!(parse(&["purge", "q", "--which", "some"]).is_err());
        let cmd = parse(&["requeue", "q", "--job", "1", "2", "--job", "3"]).expect("parses");
        assert_eq!(
            cmd.request().kwargs.get("jobs"),
            Some(&Value::List(vec![
                Value::UInt(1),
                Value::UInt(2),
                Value::UInt(3)
            ]))
        );
    }

    #[test]
    fn tables() {
        let t = table(
            &["A", "LONGER"],
            &[vec!["xyz".into(), "1".into()], vec!["".into(), "22".into()]],
        );
        assert_eq!(t, "A    LONGER\nxyz  1\n     22");
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(age(Some(950)), "950ms");
        assert_eq!(age(Some(61_500)), "1m 1s");
        assert_eq!(time(Some(0)), "1970-01-01T00:00:00.000Z");
        let stats = Dict::new()
            .with("name", "pdf")
            .with("ready", 3u64)
            .with(
                "ready_by_priority",
                Value::List(
                    [0u64, 0, 0, 1, 0, 2, 0, 0, 0, 0]
                        .iter()
                        .map(|n| Value::UInt(*n))
                        .collect(),
                ),
            )
            .with("concurrency", 0u64)
            .with("oldest_ready_age_ms", Value::Null);
        let s = stats_table(&stats);
        assert!(s.starts_with("queue              pdf\n"), "{s}");
        assert!(s.contains("ready by priority  5:2 3:1"), "{s}");
        assert!(s.contains("oldest ready       -"), "{s}");
        assert!(s.contains("concurrency        unlimited"), "{s}");
    }
}
