//! `switchyard call PROCEDURE [ARGS...]`: call a procedure, print the
//! result as JSON.

use std::time::Duration;

use clap::Args;
use switchyard_client::{payload, Value, WampError};

use super::connect::{parse_duration, ConnectArgs};
use super::values::{envelope, parse_args, parse_key_value, to_dict, to_json};
use super::{call_failed, CliError, Signals, EXIT_INTERRUPTED, EXIT_OK, EXIT_WAMP_ERROR};

const EXAMPLES: &str = "\
Output:
  exactly one positional result and no keyword results: that value  (5, \"ok\", {\"a\":1})
  anything else (none, several, or keyword results):  {\"args\": [...], \"kwargs\": {...}}
  --envelope: always the {\"args\", \"kwargs\"} object

Exit codes:
  0 result printed   1 WAMP error (URI and message on stderr)   2 bad command line
  3 router unreachable or connection lost   4 session refused (realm, authentication)
  130 interrupted

Examples:
  switchyard call com.example.add 2 3                     # prints 5
  switchyard call com.example.greet Ada --kw lang=fr --timeout 5s
  switchyard call com.example.lookup '{\"id\": 7}' --envelope | jq '.args[0]'
  switchyard call com.example.add 1 2 --url rs://127.0.0.1:8081 --serializer msgpack";

/// Call a procedure and print its result as JSON.
///
/// ARGS and --kw KEY=VALUE are the call's positional and keyword
/// arguments; each value is parsed as JSON when it is valid JSON and taken
/// as a plain string otherwise (see `switchyard publish --help`).
///
/// The result goes to standard output as one line of JSON (rule below). A
/// WAMP error (wamp.error.no_such_procedure, a callee's own error, ...)
/// prints its URI and message, and any further payload as JSON, to
/// standard error and exits with 1.
#[derive(Args, Debug, Clone)]
#[command(next_display_order = 10, after_help = EXAMPLES, allow_negative_numbers = true)]
pub struct CallArgs {
    /// The procedure URI.
    pub procedure: String,

    /// Positional arguments (JSON, else plain strings).
    #[arg(value_name = "ARGS")]
    pub args: Vec<String>,

    /// A keyword argument (repeatable). VALUE as for ARGS.
    #[arg(long = "kw", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub kw: Vec<(String, Value)>,

    /// A CALL option (repeatable), e.g. disclose_me=true.
    #[arg(long = "option", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub option: Vec<(String, Value)>,

    /// Give up after this long (500ms, 5s, 2m): the router cancels the call
    /// and answers wamp.error.timeout. Default: wait for the result.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,

    /// Always print {"args": [...], "kwargs": {...}}.
    #[arg(long)]
    pub envelope: bool,

    #[command(flatten, next_help_heading = "Connection")]
    pub conn: ConnectArgs,
}

/// What `call` prints for a result (see the rule in the help).
pub fn render_result(
    args: Vec<Value>,
    kwargs: switchyard_client::Dict,
    always_envelope: bool,
) -> String {
    if !always_envelope && args.len() == 1 && kwargs.is_empty() {
        return to_json(&args[0]);
    }
    to_json(&envelope(args, kwargs))
}

/// Runs `switchyard call`.
pub async fn run(a: CallArgs) -> Result<u8, CliError> {
    let mut signals = Signals::new()?;
    let mut options = to_dict(&a.option);
    if let Some(t) = a.timeout {
        options.insert("timeout", u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
    }
    let body = payload(parse_args(&a.args), to_dict(&a.kw));
    let work = async {
        let session = a.conn.connect(None).await?;
        let call = session.call_with(&a.procedure, options, body);
        let outcome = match a.timeout {
            // The router enforces the timeout; this only guards against a
            // router that does not answer at all.
            Some(t) => match tokio::time::timeout(t + Duration::from_secs(2), call).await {
                Ok(r) => r,
                Err(_) => Err(WampError::with_message(
                    "wamp.error.timeout",
                    format!(
                        "no answer within {} (the router did not time the call out)",
                        humantime::format_duration(t)
                    ),
                )),
            },
            None => call.await,
        };
        let result = match outcome {
            Ok(r) => r,
            Err(e) => return Err(call_failed(&session, &format!("{}: ", a.procedure), &e).await),
        };
        let (args, kwargs) = match (result.args(), result.kwargs()) {
            (Ok(a), Ok(k)) => (a, k),
            (Err(e), _) | (_, Err(e)) => {
                return Err(CliError::new(
                    EXIT_WAMP_ERROR,
                    format!("the result cannot be decoded: {e}"),
                ))
            }
        };
        println!("{}", render_result(args, kwargs, a.envelope));
        let _ = session.leave().await;
        Ok(EXIT_OK)
    };
    tokio::select! {
        r = work => r,
        _ = signals.recv() => Err(CliError::new(EXIT_INTERRUPTED, "interrupted")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_client::Dict;

    #[test]
    fn output_rule() {
        assert_eq!(render_result(vec![Value::UInt(5)], Dict::new(), false), "5");
        assert_eq!(
            render_result(vec![Value::UInt(5)], Dict::new(), true),
            r#"{"args":[5],"kwargs":{}}"#
        );
        assert_eq!(
            render_result(vec![], Dict::new(), false),
            r#"{"args":[],"kwargs":{}}"#
        );
        assert_eq!(
            render_result(vec![Value::from("a"), Value::Null], Dict::new(), false),
            r#"{"args":["a",null],"kwargs":{}}"#
        );
        assert_eq!(
            render_result(vec![Value::UInt(1)], Dict::new().with("k", true), false),
            r#"{"args":[1],"kwargs":{"k":true}}"#
        );
    }
}
