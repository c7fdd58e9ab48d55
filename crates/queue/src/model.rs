//! The job model: ids, priorities, payloads, targets, states.
//!
//! A job is split in two parts:
//! * [`Job`]: what was pushed (but its payload), immutable for the job's life and shared as
//!   `Arc<Job>`. The payload stays in the store until the job is dispatched (a [`crate::Lease`]
//!   carries it) or shown (`peek`, `dead`, `job`), so a waiting job costs memory for its
//!   metadata only;
//! * [`JobStatus`]: what changes (state, `run_at`, attempts, lease epoch, last error).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::InvalidField;
use crate::human;
use crate::policy::RetryPolicy;

/// A job id: unique in one store, increasing, never reused. The store persists an id
/// reservation ahead of the ids it commits, so ids do not repeat across restarts (they may jump
/// after a restart).
#[derive(
    Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Job priority, `0..=9`; **higher runs first**. Jobs of equal priority run in `run_at` order,
/// then in push (id) order. The default is [`Priority::NORMAL`] (5).
///
/// In JSON/TOML a priority is a number `0..=9` or one of the names `lowest` (0), `low` (3),
/// `normal` (5), `high` (7), `highest` (9).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Priority(u8);

impl Priority {
    /// 0, runs last.
    pub const LOWEST: Priority = Priority(0);
    /// 3.
    pub const LOW: Priority = Priority(3);
    /// 5, the default.
    pub const NORMAL: Priority = Priority(5);
    /// 7.
    pub const HIGH: Priority = Priority(7);
    /// 9, runs first.
    pub const HIGHEST: Priority = Priority(9);
    /// Number of levels.
    pub const LEVELS: usize = 10;

    /// A priority from a number, `0..=9`.
    pub fn new(level: u8) -> Result<Priority, InvalidField> {
        if level <= 9 {
            Ok(Priority(level))
        } else {
            Err(InvalidField::new(
                "priority",
                format!("{level} is out of range: use 0..=9 (higher runs first) or lowest|low|normal|high|highest"),
            ))
        }
    }

    /// A priority from a name (`low`, `high`, ...) or a number written as text.
    pub fn parse(s: &str) -> Result<Priority, InvalidField> {
        match s.trim().to_ascii_lowercase().as_str() {
            "lowest" => Ok(Priority::LOWEST),
            "low" => Ok(Priority::LOW),
            "normal" => Ok(Priority::NORMAL),
            "high" => Ok(Priority::HIGH),
            "highest" => Ok(Priority::HIGHEST),
            other => match other.parse::<u8>() {
                Ok(n) => Priority::new(n),
                Err(_) => Err(InvalidField::new(
                    "priority",
                    format!("`{s}` is not a priority: use 0..=9 (higher runs first) or lowest|low|normal|high|highest"),
                )),
            },
        }
    }

    /// The level, `0..=9`.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl Default for Priority {
    fn default() -> Self {
        Priority::NORMAL
    }
}

impl Serialize for Priority {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.0)
    }
}

impl<'de> Deserialize<'de> for Priority {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Priority;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a priority 0..=9 or lowest|low|normal|high|highest")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Priority, E> {
                let level = u8::try_from(v).unwrap_or(u8::MAX);
                Priority::new(level).map_err(|e| E::custom(e.message))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Priority, E> {
                match u8::try_from(v) {
                    Ok(level) => Priority::new(level).map_err(|e| E::custom(e.message)),
                    Err(_) => Err(E::custom(format!(
                        "{v} is out of range: use 0..=9 (higher runs first) or lowest|low|normal|high|highest"
                    ))),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Priority, E> {
                Priority::parse(v).map_err(|e| E::custom(e.message))
            }
        }
        d.deserialize_any(V)
    }
}

/// How a payload's bytes are encoded. The queue never decodes payloads; the tag tells the
/// router how to turn them back into WAMP arguments.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// JSON text (router builds before MessagePack payloads stored
    /// `{"args": [...], "kwargs": {...}}` this way; still read).
    #[default]
    Json,
    /// MessagePack.
    MsgPack,
    /// CBOR.
    Cbor,
    /// Opaque bytes.
    Raw,
}

impl Encoding {
    pub(crate) fn tag(self) -> u8 {
        match self {
            Encoding::Json => 0,
            Encoding::MsgPack => 1,
            Encoding::Cbor => 2,
            Encoding::Raw => 3,
        }
    }
    pub(crate) fn from_tag(t: u8) -> Option<Encoding> {
        Some(match t {
            0 => Encoding::Json,
            1 => Encoding::MsgPack,
            2 => Encoding::Cbor,
            3 => Encoding::Raw,
            _ => return None,
        })
    }
}

/// A job's opaque payload.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Payload {
    /// How `bytes` are encoded.
    pub encoding: Encoding,
    /// The bytes, never decoded by the queue.
    pub bytes: Bytes,
}

impl Payload {
    /// A JSON payload.
    pub fn json(bytes: impl Into<Bytes>) -> Payload {
        Payload {
            encoding: Encoding::Json,
            bytes: bytes.into(),
        }
    }
    /// A payload with the given encoding.
    pub fn new(encoding: Encoding, bytes: impl Into<Bytes>) -> Payload {
        Payload {
            encoding,
            bytes: bytes.into(),
        }
    }
    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
    /// True for an empty payload.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Longest accepted URI / URL / topic / method, in bytes.
pub const MAX_NAME_LEN: usize = 2048;

/// What runs a job.
///
/// In JSON/TOML: `"com.example.pdf.render"` (a procedure), `{ "procedure": "com.example.pdf" }`,
/// or `{ "http": { "url": "https://...", "method": "POST", "accepted_statuses": [200, 409] } }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Call this WAMP procedure; YIELD completes the job, ERROR fails the attempt.
    Procedure(String),
    /// Send an HTTP request; a response status in `accepted_statuses` completes the job.
    Http {
        /// `http://` or `https://` URL.
        url: String,
        /// HTTP method, upper case (default `POST`).
        method: String,
        /// Statuses that complete the job; empty means any 2xx.
        accepted_statuses: Vec<u16>,
    },
}

impl Target {
    /// A procedure target.
    pub fn procedure(uri: impl Into<String>) -> Target {
        Target::Procedure(uri.into())
    }

    /// Checks the target; errors name the field under `target`.
    pub fn validate(&self) -> Result<(), InvalidField> {
        match self {
            Target::Procedure(p) => check_name("target.procedure", p),
            Target::Http {
                url,
                method,
                accepted_statuses,
            } => {
                check_name("target.http.url", url)?;
                if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10 {
                    return Err(InvalidField::new(
                        "target.http.url",
                        format!("`{url}` is not an http:// or https:// URL"),
                    ));
                }
                const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];
                if !METHODS.contains(&method.as_str()) {
                    return Err(InvalidField::new(
                        "target.http.method",
                        format!("`{method}` is not one of GET, POST, PUT, PATCH, DELETE"),
                    ));
                }
                if let Some(s) = accepted_statuses.iter().find(|s| !(100..=599).contains(*s)) {
                    return Err(InvalidField::new(
                        "target.http.accepted_statuses",
                        format!("{s} is not an HTTP status (100..=599)"),
                    ));
                }
                Ok(())
            }
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
enum TargetRepr {
    Procedure(String),
    Http(HttpRepr),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpRepr {
    url: String,
    #[serde(default = "post")]
    method: String,
    #[serde(default)]
    accepted_statuses: Vec<u16>,
}

fn post() -> String {
    "POST".into()
}

impl Serialize for Target {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Target::Procedure(p) => TargetRepr::Procedure(p.clone()).serialize(s),
            Target::Http {
                url,
                method,
                accepted_statuses,
            } => TargetRepr::Http(HttpRepr {
                url: url.clone(),
                method: method.clone(),
                accepted_statuses: accepted_statuses.clone(),
            })
            .serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Target;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a procedure URI, { procedure = \"...\" } or { http = { url = \"...\" } }",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Target, E> {
                let t = Target::Procedure(v.to_owned());
                t.validate().map_err(E::custom)?;
                Ok(t)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Target, A::Error> {
                let t = match TargetRepr::deserialize(de::value::MapAccessDeserializer::new(map))? {
                    TargetRepr::Procedure(p) => Target::Procedure(p),
                    TargetRepr::Http(h) => Target::Http {
                        url: h.url,
                        method: h.method.to_ascii_uppercase(),
                        accepted_statuses: h.accepted_statuses,
                    },
                };
                t.validate().map_err(de::Error::custom)?;
                Ok(t)
            }
        }
        d.deserialize_any(V)
    }
}

/// Checks a URI-like name: non-empty, no whitespace or control characters, bounded length.
pub(crate) fn check_name(field: &str, s: &str) -> Result<(), InvalidField> {
    if s.is_empty() {
        return Err(InvalidField::new(field, "must not be empty"));
    }
    if s.len() > MAX_NAME_LEN {
        return Err(InvalidField::new(
            field,
            format!("is {} bytes long, the limit is {MAX_NAME_LEN}", s.len()),
        ));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(InvalidField::new(
            field,
            format!("`{s}` contains whitespace or control characters"),
        ));
    }
    Ok(())
}

/// The error of a failed attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// Error URI (WAMP ERROR URI, `switchyard.queue.lease_expired`, an HTTP status URI...).
    pub uri: String,
    /// Human-readable message (may be empty).
    pub message: String,
    /// When the attempt failed, unix ms.
    pub at_ms: u64,
}

/// Why a job was dead-lettered.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadReason {
    /// The error URI is listed in the queue's `non_retryable_errors`.
    NonRetryable,
    /// The job was attempted `max_attempts` times.
    AttemptsExhausted,
    /// The retry policy allows no further attempt (`none`, `once` after its retry, `fixed`
    /// after its `times`, `exponential` after its own `max_attempts`).
    PolicyExhausted,
}

impl DeadReason {
    /// Stable snake-case name, e.g. `attempts_exhausted`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadReason::NonRetryable => "non_retryable",
            DeadReason::AttemptsExhausted => "attempts_exhausted",
            DeadReason::PolicyExhausted => "policy_exhausted",
        }
    }
    pub(crate) fn tag(self) -> u8 {
        match self {
            DeadReason::NonRetryable => 0,
            DeadReason::AttemptsExhausted => 1,
            DeadReason::PolicyExhausted => 2,
        }
    }
    pub(crate) fn from_tag(t: u8) -> Option<DeadReason> {
        Some(match t {
            0 => DeadReason::NonRetryable,
            1 => DeadReason::AttemptsExhausted,
            2 => DeadReason::PolicyExhausted,
            _ => return None,
        })
    }
}

impl fmt::Display for DeadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a job is in its life. Completed jobs are deleted (and counted per queue).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JobState {
    /// Due (`run_at` has passed) and waiting for a worker.
    Ready,
    /// Waiting for `run_at` (a delayed job, or a retry waiting out its backoff).
    Scheduled,
    /// Handed to a worker under lease `epoch` until `deadline_ms` (unix ms).
    Leased {
        /// Fencing token: only this epoch may complete, fail or extend the job.
        epoch: u64,
        /// When the lease expires, unix ms.
        deadline_ms: u64,
    },
    /// In the dead-letter list.
    Dead {
        /// Why.
        reason: DeadReason,
        /// When, unix ms.
        at_ms: u64,
    },
}

impl JobState {
    /// The state's name: `ready`, `scheduled`, `leased`, `dead`.
    pub fn name(&self) -> &'static str {
        match self {
            JobState::Ready => "ready",
            JobState::Scheduled => "scheduled",
            JobState::Leased { .. } => "leased",
            JobState::Dead { .. } => "dead",
        }
    }
}

/// What was pushed: immutable for the job's life.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Job {
    /// The job's id.
    pub id: JobId,
    /// The queue it belongs to.
    pub queue: Arc<str>,
    /// Size of its payload in bytes (the payload itself stays in the store until the job is
    /// dispatched).
    pub payload_bytes: u32,
    /// What runs it.
    pub target: Target,
    /// Priority; higher runs first.
    pub priority: Priority,
    /// When it was pushed, unix ms.
    pub created_at_ms: u64,
    /// Per-job limit of attempts; `None` uses the queue's `max_attempts`.
    pub max_attempts: Option<u32>,
    /// Per-job retry policy; `None` uses the queue's.
    pub retry: Option<RetryPolicy>,
    /// Idempotency key it was pushed with.
    pub idempotency_key: Option<String>,
    /// Topic to publish the result (or final error) on.
    pub result_topic: Option<String>,
}

/// What changes during a job's life.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobStatus {
    /// Current state.
    #[serde(flatten)]
    pub state: JobState,
    /// When the job is (or was) due, unix ms.
    pub run_at_ms: u64,
    /// Attempts started so far (a lease starts an attempt).
    pub attempts: u32,
    /// The last lease epoch handed out (0 before the first lease). Never decreases, so a stale
    /// worker can never present a current epoch.
    pub epoch: u64,
    /// Error of the last failed attempt.
    pub last_error: Option<ErrorInfo>,
}

/// A job and its status, as returned by `peek`, `dead` and `job`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobInfo {
    /// The job.
    pub job: Arc<Job>,
    /// Its status.
    pub status: JobStatus,
    /// Its payload, read from the store; `None` when a listing's payload budget was spent
    /// before it (see `Queues::peek`) or the job was deleted meanwhile.
    #[serde(skip)]
    pub payload: Option<Payload>,
}

/// When a new job becomes due.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum When {
    /// At once.
    #[default]
    Now,
    /// After this delay.
    Delay(Duration),
    /// At this time, unix ms. A time in the past within the engine's tolerance
    /// (`Options::past_run_at_tolerance`, default 5 min) means "now"; further in the past is an
    /// error (it usually means seconds were given where milliseconds were expected).
    At(u64),
}

/// A job to push.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct NewJob {
    /// Opaque payload.
    pub payload: Payload,
    /// What runs it; `None` uses the queue's default `target`.
    pub target: Option<Target>,
    /// Priority (default normal).
    pub priority: Priority,
    /// When it becomes due (default now).
    pub when: When,
    /// Idempotency key: a second push with the same key to the same queue inside the queue's
    /// `idempotency_window` returns the first job's id with `duplicate: true`.
    pub idempotency_key: Option<String>,
    /// Retry policy override.
    pub retry: Option<RetryPolicy>,
    /// Attempts limit override.
    pub max_attempts: Option<u32>,
    /// Topic to publish the result on.
    pub result_topic: Option<String>,
}

impl NewJob {
    /// A job with this payload and defaults for everything else.
    pub fn new(payload: Payload) -> NewJob {
        NewJob {
            payload,
            ..NewJob::default()
        }
    }
    /// Sets the target.
    pub fn target(mut self, t: Target) -> Self {
        self.target = Some(t);
        self
    }
    /// Sets the priority.
    pub fn priority(mut self, p: Priority) -> Self {
        self.priority = p;
        self
    }
    /// Delays the job.
    pub fn delay(mut self, d: Duration) -> Self {
        self.when = When::Delay(d);
        self
    }
    /// Schedules the job at unix ms.
    pub fn run_at(mut self, ms: u64) -> Self {
        self.when = When::At(ms);
        self
    }
    /// Sets the idempotency key.
    pub fn idempotency_key(mut self, k: impl Into<String>) -> Self {
        self.idempotency_key = Some(k.into());
        self
    }
    /// Overrides the retry policy.
    pub fn retry(mut self, p: RetryPolicy) -> Self {
        self.retry = Some(p);
        self
    }
    /// Overrides the attempts limit.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }
    /// Sets the result topic.
    pub fn result_topic(mut self, t: impl Into<String>) -> Self {
        self.result_topic = Some(t.into());
        self
    }

    /// Builds a job from a payload and request options (as the router's `switchyard.queue.push`
    /// kwargs or the HTTP endpoint's query/body would carry them).
    pub fn from_options(payload: Payload, o: JobOptions) -> Result<NewJob, InvalidField> {
        let when = match (o.delay, o.run_at) {
            (Some(_), Some(_)) => {
                return Err(InvalidField::new(
                    "run_at",
                    "give either `delay` or `run_at`, not both",
                ))
            }
            (Some(d), None) => When::Delay(d),
            (None, Some(RunAt(ms))) => When::At(ms),
            (None, None) => When::Now,
        };
        Ok(NewJob {
            payload,
            target: o.target,
            priority: o.priority.unwrap_or_default(),
            when,
            idempotency_key: o.idempotency_key,
            retry: o.retry,
            max_attempts: o.max_attempts,
            result_topic: o.result_topic,
        })
    }
}

/// Push options in their wire form (JSON object or TOML table), all optional:
/// `target`, `priority`, `delay` (`"30s"` or ms), `run_at` (RFC 3339 or unix ms),
/// `idempotency_key`, `retry` (a policy), `max_attempts`, `result_topic`. Unknown fields are an
/// error naming them.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobOptions {
    /// See [`NewJob::target`].
    #[serde(default)]
    pub target: Option<Target>,
    /// See [`NewJob::priority`].
    #[serde(default)]
    pub priority: Option<Priority>,
    /// Delay before the job is due.
    #[serde(default, with = "human::opt_duration")]
    pub delay: Option<Duration>,
    /// When the job is due.
    #[serde(default)]
    pub run_at: Option<RunAt>,
    /// See [`NewJob::idempotency_key`].
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// See [`NewJob::retry`].
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    /// See [`NewJob::max_attempts`].
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// See [`NewJob::result_topic`].
    #[serde(default)]
    pub result_topic: Option<String>,
}

/// A `run_at` value: unix milliseconds, read from a number or from an RFC 3339 / digits string.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RunAt(pub u64);

impl<'de> Deserialize<'de> for RunAt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RunAt;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp or unix milliseconds")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RunAt, E> {
                Ok(RunAt(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RunAt, E> {
                u64::try_from(v)
                    .map(RunAt)
                    .map_err(|_| E::custom(format!("run_at {v} is before 1970")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RunAt, E> {
                human::parse_timestamp_ms(v).map(RunAt).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}
