//! What the meta procedures share: their decoded arguments ([`Args`]),
//! their result type, and the value builders of their answers. Kept apart
//! from the dispatch table in `mod.rs` so that the procedures and the table
//! do not import each other.

use switchyard_proto::{errors, Dict, Payload, Value};

use crate::session::OpError;
use crate::uri_index::MatchPolicy;

/// Positional and keyword results of a meta procedure.
pub(super) type MetaResult = Result<(Vec<Value>, Option<Dict>), OpError>;

/// Arguments of a meta call, decoded.
pub(super) struct Args {
    args: Vec<Value>,
    pub(super) kwargs: Dict,
}

impl Args {
    pub(super) fn decode(payload: &Payload) -> Result<Self, OpError> {
        let bad = |e: String| {
            (
                errors::INVALID_ARGUMENT,
                format!("cannot read the arguments: {e}"),
            )
        };
        let args = match &payload.args {
            None => Vec::new(),
            Some(item) => match item.to_value().map_err(|e| bad(e.to_string()))? {
                Value::List(l) => l,
                other => return Err(bad(format!("expected a list, got {}", other.type_name()))),
            },
        };
        let kwargs = match &payload.kwargs {
            None => Dict::new(),
            Some(item) => match item.to_value().map_err(|e| bad(e.to_string()))? {
                Value::Dict(d) => d,
                other => return Err(bad(format!("expected a dict, got {}", other.type_name()))),
            },
        };
        Ok(Args { args, kwargs })
    }

    pub(super) fn get(&self, i: usize) -> Option<&Value> {
        self.args.get(i).filter(|v| !matches!(v, Value::Null))
    }

    pub(super) fn id(&self, i: usize, name: &str) -> Result<u64, OpError> {
        match self.get(i) {
            Some(Value::UInt(id)) => Ok(*id),
            Some(other) => Err(invalid(format!(
                "argument {} ({name}) must be an id, got {}",
                i + 1,
                other.type_name()
            ))),
            None => Err(invalid(format!("argument {} ({name}) is missing", i + 1))),
        }
    }

    pub(super) fn str(&self, i: usize, name: &str) -> Result<&str, OpError> {
        match self.get(i) {
            Some(Value::Str(s)) => Ok(s),
            Some(other) => Err(invalid(format!(
                "argument {} ({name}) must be a string, got {}",
                i + 1,
                other.type_name()
            ))),
            None => Err(invalid(format!("argument {} ({name}) is missing", i + 1))),
        }
    }

    /// An optional list of strings (e.g. `filter_authroles`).
    pub(super) fn str_list(&self, i: usize, name: &str) -> Result<Option<Vec<&str>>, OpError> {
        match self.get(i) {
            None => Ok(None),
            Some(Value::List(l)) => l
                .iter()
                .enumerate()
                .map(|(n, v)| {
                    v.as_str().ok_or_else(|| {
                        invalid(format!(
                            "argument {} ({name}) must be a list of strings, but element {n} is {}",
                            i + 1,
                            switchyard_proto::shown_value(v)
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(other) => Err(invalid(format!(
                "argument {} ({name}) must be a list of strings, got {}",
                i + 1,
                other.type_name()
            ))),
        }
    }

    pub(super) fn kw_str(&self, key: &str) -> Result<Option<&str>, OpError> {
        match self.kwargs.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s)),
            Some(other) => Err(invalid(format!(
                "keyword argument {key} must be a string, got {}",
                other.type_name()
            ))),
        }
    }
}

pub(super) fn invalid(message: String) -> OpError {
    (errors::INVALID_ARGUMENT, message)
}

/// A list of ids as a WAMP value.
pub(super) fn id_list(ids: Vec<u64>) -> Value {
    Value::List(ids.into_iter().map(Value::UInt).collect())
}

/// `{"exact": [...], "prefix": [...], "wildcard": [...]}` of the `list`
/// meta procedures.
pub(super) fn by_policy([exact, prefix, wildcard]: [Vec<u64>; 3]) -> Value {
    Value::Dict(
        Dict::new()
            .with("exact", id_list(exact))
            .with("prefix", id_list(prefix))
            .with("wildcard", id_list(wildcard)),
    )
}

/// The match policy of the optional options dict at argument `i`
/// (`lookup`: "same options as when registering/subscribing").
pub(super) fn match_option(args: &Args, i: usize) -> Result<MatchPolicy, OpError> {
    match args.get(i) {
        None => Ok(MatchPolicy::Exact),
        Some(Value::Dict(options)) => match options.get_str("match") {
            None => Ok(MatchPolicy::Exact),
            Some(m) => MatchPolicy::parse(m)
                .ok_or_else(|| invalid(format!("unknown match policy \"{m}\""))),
        },
        Some(other) => Err(invalid(format!(
            "argument {} (options) must be a dict, got {}",
            i + 1,
            other.type_name()
        ))),
    }
}
