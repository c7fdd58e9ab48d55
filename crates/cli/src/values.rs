//! Command-line values to WAMP values and WAMP values to JSON output.
//!
//! An argument is taken as JSON when it parses as JSON (`42`, `-1.5`,
//! `true`, `null`, `"quoted"`, `[1,2]`, `{"a":1}`) and as a plain string
//! otherwise (`hello`, `hello world`, `2024-01-01`). A JSON string that
//! starts with `\u0000` carries base64 binary (WAMP's JSON convention), in
//! both directions.

use switchyard_client::{Dict, Value, WampError};

/// `text` as JSON if it parses, else as a string.
pub fn parse_value(text: &str) -> Value {
    serde_json::from_str::<Value>(text).unwrap_or_else(|_| Value::Str(text.to_owned()))
}

/// `KEY=VALUE` (split at the first `=`; VALUE as [`parse_value`]).
pub fn parse_key_value(text: &str) -> Result<(String, Value), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), parse_value(v))),
        Some(_) => Err(format!("\"{text}\": the key before '=' is empty")),
        None => Err(format!("\"{text}\": expected KEY=VALUE")),
    }
}

/// Positional arguments as values.
pub fn parse_args(args: &[String]) -> Vec<Value> {
    args.iter().map(|a| parse_value(a)).collect()
}

/// `KEY=VALUE` pairs as a dictionary (a later key replaces an earlier one).
pub fn to_dict(pairs: &[(String, Value)]) -> Dict {
    let mut d = Dict::new();
    for (k, v) in pairs {
        d.insert(k.clone(), v.clone());
    }
    d
}

/// Compact JSON of a value (binary as `"\u0000<base64>"`, non-finite floats
/// as `null`).
pub fn to_json(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// `{"args": [...], "kwargs": {...}}`.
pub fn envelope(args: Vec<Value>, kwargs: Dict) -> Value {
    Value::Dict(
        Dict::new()
            .with("args", Value::List(args))
            .with("kwargs", kwargs),
    )
}

/// The text of a WAMP error for standard error: `URI: message` (the first
/// argument when it is a string), then `{"args": ..., "kwargs": ...}` of
/// whatever else the error carries.
pub fn describe_error(e: &WampError) -> String {
    let mut args = e.args.clone();
    let mut out = e.uri.clone();
    if let Some(Value::Str(message)) = args.first() {
        out.push_str(": ");
        out.push_str(message);
        args.remove(0);
    }
    if !args.is_empty() || !e.kwargs.is_empty() {
        out.push('\n');
        out.push_str(&to_json(&envelope(args, e.kwargs.clone())));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_json_when_they_parse() {
        assert_eq!(parse_value("42"), Value::UInt(42));
        assert_eq!(parse_value("-3"), Value::Int(-3));
        assert_eq!(parse_value("1.5"), Value::Float(1.5));
        assert_eq!(parse_value("true"), Value::Bool(true));
        assert_eq!(parse_value("null"), Value::Null);
        assert_eq!(parse_value("\"42\""), Value::from("42"));
        assert_eq!(
            parse_value("[1, \"a\"]"),
            Value::List(vec![Value::UInt(1), Value::from("a")])
        );
        assert_eq!(
            parse_value("{\"a\": {\"b\": null}}"),
            Value::Dict(Dict::new().with("a", Dict::new().with("b", Value::Null)))
        );
        for plain in [
            "hello",
            "hello world",
            "",
            "2024-01-01",
            "{not json",
            "True",
        ] {
            assert_eq!(parse_value(plain), Value::from(plain), "{plain}");
        }
        assert_eq!(
            parse_value("\"\\u0000AQI=\""),
            Value::Bytes(vec![1, 2]),
            "WAMP JSON binary"
        );
    }

    #[test]
    fn key_values() {
        assert_eq!(parse_key_value("n=1"), Ok(("n".to_owned(), Value::UInt(1))));
        assert_eq!(
            parse_key_value("q=a=b"),
            Ok(("q".to_owned(), Value::from("a=b")))
        );
        assert_eq!(parse_key_value("e="), Ok(("e".to_owned(), Value::from(""))));
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("=1").is_err());
        let d = to_dict(&[("a".into(), Value::UInt(1)), ("a".into(), Value::UInt(2))]);
        assert_eq!(d, Dict::new().with("a", 2u64));
    }

    #[test]
    fn json_output_and_errors() {
        assert_eq!(
            to_json(&envelope(vec![Value::Bytes(vec![1, 2])], Dict::new())),
            r#"{"args":["\u0000AQI="],"kwargs":{}}"#
        );
        assert_eq!(to_json(&Value::Float(f64::NAN)), "null");
        let e = WampError::with_message("com.x.error", "it broke");
        assert_eq!(describe_error(&e), "com.x.error: it broke");
        let e = WampError {
            kwargs: Dict::new().with("exit_code", 3u64),
            ..WampError::new("switchyard.error.command_failed")
        };
        assert_eq!(
            describe_error(&e),
            "switchyard.error.command_failed\n{\"args\":[],\"kwargs\":{\"exit_code\":3}}"
        );
    }
}
