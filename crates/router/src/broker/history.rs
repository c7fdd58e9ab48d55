//! Event history (spec "Event History"): the last events of a configured
//! subscription, bounded in count and age, served by
//! `wamp.subscription.get_events`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use switchyard_proto::{errors, Dict, Payload, Value};

use super::filter::Filter;
use crate::session::OpError;
use crate::uri_index::MatchPolicy;

/// A topic (or topic pattern) whose events the realm keeps.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// The topic, or the pattern with `match`.
    pub topic: String,
    /// How `topic` matches: "exact" (default), "prefix" or "wildcard".
    #[serde(default, rename = "match")]
    pub policy: MatchPolicy,
    /// Events kept (the oldest go first); default 100.
    #[serde(default = "default_limit")]
    pub limit: usize,
    /// Events older than this are dropped; default: no age limit.
    #[serde(default, with = "humantime_serde")]
    pub max_age: Option<Duration>,
}

fn default_limit() -> usize {
    100
}

/// Most events any history may keep, whatever the configuration says.
pub const MAX_HISTORY_LIMIT: usize = 1_000_000;

pub(crate) struct StoredEvent {
    pub time: SystemTime,
    pub publication: u64,
    pub topic: String,
    pub details: Dict,
    pub payload: Payload,
    pub filter: Arc<Filter>,
}

pub(crate) struct History {
    limit: usize,
    max_age: Option<Duration>,
    events: VecDeque<StoredEvent>,
}

impl History {
    pub fn new(config: &HistoryConfig) -> Self {
        History {
            limit: config.limit.min(MAX_HISTORY_LIMIT),
            max_age: config.max_age,
            events: VecDeque::new(),
        }
    }

    pub fn push(&mut self, event: StoredEvent) {
        if self.limit == 0 {
            return;
        }
        let now = event.time;
        self.events.push_back(event);
        while self.events.len() > self.limit {
            self.events.pop_front();
        }
        self.prune(now);
    }

    fn prune(&mut self, now: SystemTime) {
        let Some(max_age) = self.max_age else { return };
        while self
            .events
            .front()
            .is_some_and(|e| now.duration_since(e.time).unwrap_or_default() > max_age)
        {
            self.events.pop_front();
        }
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// The events `query` selects that a reader with (`authid`, `authrole`)
    /// was eligible for and may read (`may_read(topic)`: the reader may
    /// subscribe to the event's topic), as the spec's Event objects.
    pub fn query(
        &mut self,
        subscription: u64,
        q: &Query,
        authid: &str,
        authrole: &str,
        may_read: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<Value>, OpError> {
        self.prune(SystemTime::now());
        let position = |publication: u64| -> Result<usize, OpError> {
            self.events
                .iter()
                .position(|e| e.publication == publication)
                .ok_or_else(|| {
                    (
                        errors::INVALID_ARGUMENT,
                        format!("publication {publication} is not in the history (it may have aged out)"),
                    )
                })
        };
        let mut lo = 0usize;
        let mut hi = self.events.len();
        if let Some(p) = q.from_publication {
            lo = lo.max(position(p)?);
        }
        if let Some(p) = q.after_publication {
            lo = lo.max(position(p)? + 1);
        }
        if let Some(p) = q.before_publication {
            hi = hi.min(position(p)?);
        }
        if let Some(p) = q.until_publication {
            hi = hi.min(position(p)? + 1);
        }
        let selected = self
            .events
            .iter()
            .enumerate()
            .filter(|(i, _)| *i >= lo && *i < hi)
            .map(|(_, e)| e)
            .filter(|e| q.from_time.is_none_or(|t| e.time >= t))
            .filter(|e| q.after_time.is_none_or(|t| e.time > t))
            .filter(|e| q.before_time.is_none_or(|t| e.time < t))
            .filter(|e| q.until_time.is_none_or(|t| e.time <= t))
            .filter(|e| q.topic.as_deref().is_none_or(|t| e.topic == t))
            .filter(|e| e.filter.admits_identity(authid, authrole))
            .filter(|e| may_read(&e.topic));
        let limit = q.limit.unwrap_or(usize::MAX);
        let events: Vec<&StoredEvent> = if q.reverse {
            selected.rev().take(limit).collect()
        } else {
            selected.take(limit).collect()
        };
        events
            .into_iter()
            .map(|e| event_object(subscription, e))
            .collect()
    }
}

fn event_object(subscription: u64, e: &StoredEvent) -> Result<Value, OpError> {
    let bad = |what: &str, err: String| {
        (
            errors::INVALID_ARGUMENT,
            format!(
                "stored event {}: cannot read its {what}: {err}",
                e.publication
            ),
        )
    };
    let mut d = Dict::new()
        .with(
            "timestamp",
            humantime::format_rfc3339_millis(e.time).to_string(),
        )
        .with("subscription", subscription)
        .with("publication", e.publication)
        .with("topic", e.topic.as_str())
        .with("details", e.details.clone());
    if let Some(args) = &e.payload.args {
        d.insert(
            "args",
            args.to_value()
                .map_err(|err| bad("args", err.to_string()))?,
        );
    }
    if let Some(kwargs) = &e.payload.kwargs {
        d.insert(
            "kwargs",
            kwargs
                .to_value()
                .map_err(|err| bad("kwargs", err.to_string()))?,
        );
    }
    Ok(Value::Dict(d))
}

/// An RFC 3339 timestamp with `Z` or a numeric offset, any precision.
fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(SystemTime::from)
}

/// The keyword arguments of `wamp.subscription.get_events`.
#[derive(Default, Debug)]
pub(crate) struct Query {
    pub reverse: bool,
    pub limit: Option<usize>,
    pub from_time: Option<SystemTime>,
    pub after_time: Option<SystemTime>,
    pub before_time: Option<SystemTime>,
    pub until_time: Option<SystemTime>,
    pub topic: Option<String>,
    pub from_publication: Option<u64>,
    pub after_publication: Option<u64>,
    pub before_publication: Option<u64>,
    pub until_publication: Option<u64>,
}

impl Query {
    pub fn parse(kwargs: &Dict) -> Result<Self, OpError> {
        let invalid = |key: &str, what: &str| {
            (
                errors::INVALID_ARGUMENT,
                format!("keyword argument {key} must be {what}"),
            )
        };
        let mut q = Query::default();
        for (key, v) in kwargs.iter() {
            if matches!(v, Value::Null) {
                continue;
            }
            let time = || -> Result<SystemTime, OpError> {
                v.as_str()
                    .and_then(parse_rfc3339)
                    .ok_or_else(|| invalid(key, "an RFC 3339 timestamp"))
            };
            let id = || v.as_u64().ok_or_else(|| invalid(key, "a publication id"));
            match key {
                "reverse" => q.reverse = v.as_bool().ok_or_else(|| invalid(key, "a bool"))?,
                "limit" => {
                    q.limit = Some(
                        v.as_u64()
                            .filter(|n| *n > 0)
                            .ok_or_else(|| invalid(key, "a positive integer"))?
                            as usize,
                    )
                }
                "from_time" => q.from_time = Some(time()?),
                "after_time" => q.after_time = Some(time()?),
                "before_time" => q.before_time = Some(time()?),
                "until_time" => q.until_time = Some(time()?),
                "topic" => {
                    q.topic = Some(
                        v.as_str()
                            .ok_or_else(|| invalid(key, "a topic URI"))?
                            .to_string(),
                    )
                }
                "from_publication" => q.from_publication = Some(id()?),
                "after_publication" => q.after_publication = Some(id()?),
                "before_publication" => q.before_publication = Some(id()?),
                "until_publication" => q.until_publication = Some(id()?),
                other => {
                    return Err((
                        errors::INVALID_ARGUMENT,
                        format!(
                        "unknown keyword argument {other} (see the spec's Event History section)"
                    ),
                    ))
                }
            }
        }
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::parse_rfc3339;

    #[test]
    fn timestamps_with_offsets_mean_the_same_instant() {
        let utc = parse_rfc3339("2026-11-22T10:00:00.250Z").expect("utc");
        let plus2 = parse_rfc3339("2026-11-22T12:00:00.250+02:00").expect("offset");
        assert_eq!(utc, plus2);
        assert_eq!(
            utc.duration_since(SystemTime::UNIX_EPOCH).ok(),
            Some(Duration::from_millis(1_795_341_600_250))
        );
        assert!(parse_rfc3339("2026-11-22 10:00").is_none());
    }
}
