//! `switchyard subscribe TOPIC`: print each event as one JSON line.

use clap::{Args, ValueEnum};
use switchyard_client::{Dict, Event, Value};
use tokio::io::AsyncWriteExt;

use super::connect::ConnectArgs;
use super::values::to_json;
use super::{request_failed_rs, session_ended, CliError, Signals, EXIT_OK};

/// Unread events held per subscription before the connection stops reading
/// (backpressure on the router, whose slow-consumer policy then applies).
const EVENT_QUEUE: usize = 1024;

const EXAMPLES: &str = "\
Each event is one line on standard output:
  {\"topic\":\"com.example.tick\",\"publication\":123,\"args\":[1],\"kwargs\":{},\"details\":{}}
(topic is the event's concrete topic, also for prefix and wildcard subscriptions)

Examples:
  switchyard subscribe com.example.tick
  switchyard subscribe com.example. --match prefix | jq -c '.args'
  switchyard subscribe com..status --match wildcard --count 1    # wait for one event
  SWITCHYARD_URL=rs://127.0.0.1:8081 switchyard subscribe com.example.tick --serializer msgpack";

/// How the topic matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MatchPolicy {
    /// The topic exactly.
    Exact,
    /// Every topic starting with TOPIC.
    Prefix,
    /// Empty URI components of TOPIC match any component (`com..status`).
    Wildcard,
}

impl MatchPolicy {
    pub fn option(self) -> Option<&'static str> {
        match self {
            MatchPolicy::Exact => None,
            MatchPolicy::Prefix => Some("prefix"),
            MatchPolicy::Wildcard => Some("wildcard"),
        }
    }
}

/// Subscribe to a topic and print each event as one line of JSON.
///
/// Runs until Ctrl-C or SIGTERM (then leaves the realm cleanly and exits
/// with 0) or until --count events have arrived. If the router goes away
/// (restart, lost connection) it reconnects and subscribes again; with
/// --no-reconnect it exits (3 or 4, with the reason on standard error). A line
/// "subscribed to TOPIC" on standard error (unless --quiet) tells when
/// events will be received.
#[derive(Args, Debug, Clone)]
#[command(next_display_order = 10, after_help = EXAMPLES)]
pub struct SubscribeArgs {
    /// The topic URI (or prefix, or wildcard pattern, with --match).
    pub topic: String,

    /// How TOPIC matches: exact, prefix or wildcard.
    #[arg(
        long = "match",
        value_enum,
        default_value = "exact",
        value_name = "POLICY"
    )]
    pub match_policy: MatchPolicy,

    /// Exit after this many events.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,

    /// A SUBSCRIBE option (repeatable), e.g. get_retained=true.
    #[arg(long = "option", value_name = "KEY=VALUE", value_parser = super::values::parse_key_value)]
    pub option: Vec<(String, Value)>,

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

/// One event as the JSON line `subscribe` prints.
pub fn event_line(subscribed_topic: &str, ev: &Event) -> String {
    let topic = ev.topic().unwrap_or(subscribed_topic).to_owned();
    let args = ev.args().unwrap_or_default();
    let kwargs = ev.kwargs().unwrap_or_default();
    let line = Dict::new()
        .with("topic", topic)
        .with("publication", ev.publication)
        .with("args", Value::List(args))
        .with("kwargs", kwargs)
        .with("details", ev.details.clone());
    to_json(&Value::Dict(line))
}

/// Runs `switchyard subscribe`.
pub async fn run(a: SubscribeArgs) -> Result<u8, CliError> {
    let mut signals = Signals::new()?;
    let mut options = super::values::to_dict(&a.option);
    if let Some(m) = a.match_policy.option() {
        options.insert("match", m);
    }
    let session = tokio::select! {
        s = a.conn.connect_reconnecting(Some(EVENT_QUEUE), !a.no_reconnect, a.quiet) => s?,
        _ = signals.recv() => return Ok(EXIT_OK),
    };
    // One channel for the subscription on every session (after reconnects).
    let (tx, mut events) = tokio::sync::mpsc::channel(EVENT_QUEUE);
    if let Err(e) = session.subscribe_into(&a.topic, options, tx).await {
        let context = format!("cannot subscribe to {}: ", a.topic);
        return Err(request_failed_rs(&session, &context, &context, e).await);
    }
    if !a.quiet {
        eprintln!("switchyard: subscribed to {}; Ctrl-C to stop", a.topic,);
    }
    let mut out = tokio::io::stdout();
    let mut seen = 0u64;
    if a.count == Some(0) {
        let _ = session.leave().await;
        return Ok(EXIT_OK);
    }
    loop {
        tokio::select! {
            info = session.closed() => return Err(session_ended(info)),
            ev = events.recv() => {
                let Some(ev) = ev else {
                    return Err(session_ended(session.closed().await));
                };
                let mut line = event_line(&a.topic, &ev);
                line.push('\n');
                let written = async {
                    out.write_all(line.as_bytes()).await?;
                    out.flush().await
                };
                // A blocked standard output (a slow reader) holds further
                // events back, but not Ctrl-C.
                let written = tokio::select! {
                    w = written => w,
                    _ = signals.recv() => break,
                };
                if written.is_err() {
                    // Standard output closed (e.g. `| head -1`): a normal end.
                    break;
                }
                seen += 1;
                if a.count.is_some_and(|n| seen >= n) {
                    break;
                }
            }
            _ = signals.recv() => break,
        }
    }
    let _ = session.leave().await;
    Ok(EXIT_OK)
}
