//! `switchyard publish TOPIC [ARGS...]`: publish one event.

use clap::Args;
use switchyard_client::{payload, Value};

use super::connect::ConnectArgs;
use super::values::{parse_args, parse_key_value, to_dict};
use super::{request_failed, CliError, Signals, EXIT_CONNECTION, EXIT_INTERRUPTED, EXIT_OK};

const EXAMPLES: &str = "\
Examples:
  switchyard publish com.example.hello 'hi there'
  switchyard publish com.example.order 42 '{\"sku\": \"A-1\"}' --kw priority=high --kw rush=true
  switchyard publish com.example.tick 1 --option retain=true --option exclude_me=false
  switchyard publish com.example.audit done --acknowledge        # prints the publication id
  SWITCHYARD_TICKET=... switchyard publish com.app.news hi --authid alice --url rs://10.0.0.5:8081";

/// Publish one event to a topic.
///
/// ARGS become the event's positional arguments and --kw KEY=VALUE its
/// keyword arguments. Each value is parsed as JSON when it is valid JSON
/// (numbers, true, false, null, "quoted strings", [arrays], {objects}) and
/// taken as a plain string otherwise, so `42` is a number, `'"42"'` the
/// string "42", and `hello` the string "hello".
///
/// --option KEY=VALUE sets PUBLISH.Options (exclude_me, exclude, eligible,
/// exclude_authid, eligible_authrole, retain, disclose_me, ...; see
/// docs/PUBSUB.md). Without --acknowledge the router confirms nothing, so
/// an unauthorized or invalid publication is dropped silently; with it, the
/// router's answer is awaited and the publication id printed.
#[derive(Args, Debug, Clone)]
#[command(next_display_order = 10, after_help = EXAMPLES, allow_negative_numbers = true)]
pub struct PublishArgs {
    /// The topic URI.
    pub topic: String,

    /// Positional arguments of the event (JSON, else plain strings).
    #[arg(value_name = "ARGS")]
    pub args: Vec<String>,

    /// A keyword argument (repeatable). VALUE as for ARGS.
    #[arg(long = "kw", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub kw: Vec<(String, Value)>,

    /// A PUBLISH option (repeatable), e.g. retain=true, exclude_me=false,
    /// eligible=[123].
    #[arg(long = "option", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub option: Vec<(String, Value)>,

    /// Ask the router to acknowledge; print the publication id, and fail
    /// (exit 1) if the router refuses the publication.
    #[arg(long)]
    pub acknowledge: bool,

    #[command(flatten, next_help_heading = "Connection")]
    pub conn: ConnectArgs,
}

/// Runs `switchyard publish`.
pub async fn run(a: PublishArgs) -> Result<u8, CliError> {
    let mut signals = Signals::new()?;
    let mut options = to_dict(&a.option);
    if a.acknowledge {
        options.insert("acknowledge", true);
    }
    let acknowledge = options.get_bool("acknowledge") == Some(true);
    let body = payload(parse_args(&a.args), to_dict(&a.kw));
    let work = async {
        let session = a.conn.connect(None).await?;
        let published = session.publish_with(&a.topic, options, body).await;
        let id = match published {
            Ok(id) => id,
            Err(e) => {
                return Err(request_failed(
                    &session,
                    &format!("publish to {} refused: ", a.topic),
                    &format!("publish to {} failed: ", a.topic),
                    e,
                )
                .await)
            }
        };
        // The router answers GOODBYE after handling what came before it,
        // so a clean leave also means an unacknowledged PUBLISH arrived.
        if let Err(e) = session.leave().await {
            if !acknowledge {
                return Err(CliError::new(
                    EXIT_CONNECTION,
                    format!(
                        "the connection ended before the router confirmed the session's end: {e}"
                    ),
                ));
            }
        }
        if let Some(id) = id {
            println!("{id}");
        }
        Ok(EXIT_OK)
    };
    tokio::select! {
        r = work => r,
        _ = signals.recv() => Err(CliError::new(EXIT_INTERRUPTED, "interrupted")),
    }
}
