//! Retry policies: when a failed attempt (an explicit failure or an expired lease) is tried again.
//!
//! ```text
//! { "kind": "none" }                                     never retry: the first failure dead-letters
//! { "kind": "once", "delay": "10s" }                     one retry, 10 s after the failure
//! { "kind": "fixed", "times": 5, "spacing": "30s" }      5 retries, each 30 s after the failure
//! { "kind": "exponential", "initial": "1s", "factor": 2.0, "cap": "5m", "jitter": 0.1 }
//! ```
//!
//! A policy can also be written as just its kind (`"none"`, `"once"`, `"exponential"`), taking
//! the defaults below. Durations are human strings (`"250ms"`, `"1s"`, `"5m"`, `"1h"`) or a number
//! of milliseconds. The same shapes work in TOML:
//! `retry = { kind = "fixed", times = 5, spacing = "30s" }`.
//!
//! The queue's (or job's) `max_attempts` caps every policy: a job is dead-lettered once it has
//! been attempted `max_attempts` times, whatever the policy would still allow.

use std::fmt;
use std::time::Duration;

use rand::Rng;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::InvalidField;
use crate::human;

/// The longest delay any policy may produce (and the longest `initial`, `spacing`, `cap`).
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(365 * 24 * 3600);

/// When to try a failed job again. See the module docs for the accepted shapes.
#[derive(Clone, Debug, PartialEq)]
pub enum RetryPolicy {
    /// Never retry: the first failure dead-letters the job.
    None,
    /// Retry once, `delay` after the failure.
    Once {
        /// Wait before the retry (default 1 s).
        delay: Duration,
    },
    /// Retry `times` times (so at most `times + 1` attempts), each `spacing` after the failure.
    Fixed {
        /// Number of retries, at least 1.
        times: u32,
        /// Wait before each retry.
        spacing: Duration,
    },
    /// Retry with growing delays: the n-th retry waits `min(initial × factor^(n-1), cap)`, reduced
    /// by a random fraction of up to `jitter` (so the delay lies in
    /// `[d × (1 - jitter), d]` and never exceeds `cap`).
    Exponential {
        /// First delay (default 1 s); greater than zero.
        initial: Duration,
        /// Growth factor (default 2.0); at least 1.0.
        factor: f64,
        /// Largest delay (default 5 min); at least `initial`.
        cap: Duration,
        /// Random reduction fraction in `0.0..=1.0` (default 0.1), so that jobs failing together
        /// do not retry together.
        jitter: f64,
        /// Optional limit of attempts (first attempt included) from the policy itself; the
        /// queue's `max_attempts` applies as well, the smaller wins.
        max_attempts: Option<u32>,
    },
}

impl Default for RetryPolicy {
    /// Exponential from 1 s, doubling, capped at 5 min, 10 % jitter. With the default 20 attempts
    /// a failing job is retried for a little under an hour before it is dead-lettered: long
    /// enough to ride out a deploy or a short outage of a downstream service, short enough that
    /// a broken job shows up in the dead letters the same hour.
    fn default() -> Self {
        RetryPolicy::Exponential {
            initial: Duration::from_secs(1),
            factor: 2.0,
            cap: Duration::from_secs(300),
            jitter: 0.1,
            max_attempts: None,
        }
    }
}

impl RetryPolicy {
    /// The delay before the next attempt, after `failures` failed attempts (1 after the first
    /// failure), or `None` when the policy allows no further attempt (dead-letter).
    pub fn next_delay<R: Rng + ?Sized>(&self, failures: u32, rng: &mut R) -> Option<Duration> {
        let failures = failures.max(1);
        match *self {
            RetryPolicy::None => None,
            RetryPolicy::Once { delay } => (failures == 1).then_some(delay),
            RetryPolicy::Fixed { times, spacing } => (failures <= times).then_some(spacing),
            RetryPolicy::Exponential {
                initial,
                factor,
                cap,
                jitter,
                max_attempts,
            } => {
                if max_attempts.is_some_and(|m| failures >= m) {
                    return None;
                }
                let exp = i32::try_from(failures - 1).unwrap_or(i32::MAX).min(4096);
                let nominal = initial.as_secs_f64() * factor.powi(exp);
                let capped = if nominal.is_finite() {
                    nominal.min(cap.as_secs_f64())
                } else {
                    cap.as_secs_f64()
                };
                let r: f64 = if jitter > 0.0 {
                    rng.random::<f64>()
                } else {
                    0.0
                };
                let secs = (capped * (1.0 - jitter * r)).max(0.0);
                Some(Duration::from_secs_f64(secs).min(cap))
            }
        }
    }

    /// Checks the policy's values; the error names the field (`factor`, `jitter`, ...).
    pub fn validate(&self) -> Result<(), InvalidField> {
        let max = |field: &str, d: Duration| {
            if d > MAX_RETRY_DELAY {
                Err(InvalidField::new(
                    field,
                    format!(
                        "{} is longer than the maximum of 365 days",
                        human::format_duration(d)
                    ),
                ))
            } else {
                Ok(())
            }
        };
        match *self {
            RetryPolicy::None => Ok(()),
            RetryPolicy::Once { delay } => max("delay", delay),
            RetryPolicy::Fixed { times, spacing } => {
                if times == 0 {
                    return Err(InvalidField::new(
                        "times",
                        "must be at least 1 for a fixed policy (use kind \"none\" for no retries)",
                    ));
                }
                max("spacing", spacing)
            }
            RetryPolicy::Exponential {
                initial,
                factor,
                cap,
                jitter,
                max_attempts,
            } => {
                if initial.is_zero() {
                    return Err(InvalidField::new("initial", "must be greater than zero"));
                }
                max("initial", initial)?;
                max("cap", cap)?;
                if !factor.is_finite() || factor < 1.0 {
                    return Err(InvalidField::new(
                        "factor",
                        format!("must be a number of at least 1.0 (got {factor})"),
                    ));
                }
                if !jitter.is_finite() || !(0.0..=1.0).contains(&jitter) {
                    return Err(InvalidField::new(
                        "jitter",
                        format!("must be a fraction between 0.0 and 1.0 (got {jitter})"),
                    ));
                }
                if cap < initial {
                    return Err(InvalidField::new(
                        "cap",
                        format!(
                            "{} is shorter than initial ({})",
                            human::format_duration(cap),
                            human::format_duration(initial)
                        ),
                    ));
                }
                if max_attempts == Some(0) {
                    return Err(InvalidField::new("max_attempts", "must be at least 1"));
                }
                Ok(())
            }
        }
    }

    /// The policy's kind name: `none`, `once`, `fixed` or `exponential`.
    pub fn kind(&self) -> &'static str {
        match self {
            RetryPolicy::None => "none",
            RetryPolicy::Once { .. } => "once",
            RetryPolicy::Fixed { .. } => "fixed",
            RetryPolicy::Exponential { .. } => "exponential",
        }
    }

    /// Parses a policy from JSON text, validated.
    pub fn from_json(text: &str) -> Result<RetryPolicy, InvalidField> {
        serde_json::from_str(text).map_err(|e| InvalidField::new("retry", e.to_string()))
    }

    fn from_kind(kind: &str) -> Result<RetryPolicy, String> {
        match kind {
            "none" => Ok(RetryPolicy::None),
            "once" => Ok(RetryPolicy::Once {
                delay: Duration::from_secs(1),
            }),
            "exponential" => Ok(RetryPolicy::default()),
            "fixed" => Err("a fixed policy needs `times` and `spacing`: { kind = \"fixed\", times = 5, spacing = \"30s\" }".into()),
            other => Err(format!(
                "unknown retry policy kind `{other}`, expected one of `none`, `once`, `fixed`, `exponential`"
            )),
        }
    }
}

/// The wire/config representation; validated into [`RetryPolicy`].
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum Repr {
    None,
    Once {
        #[serde(with = "human::duration", default = "one_second")]
        delay: Duration,
    },
    Fixed {
        times: u32,
        #[serde(with = "human::duration")]
        spacing: Duration,
    },
    Exponential {
        #[serde(with = "human::duration", default = "one_second")]
        initial: Duration,
        #[serde(default = "two")]
        factor: f64,
        #[serde(with = "human::duration", default = "five_minutes")]
        cap: Duration,
        #[serde(default = "tenth")]
        jitter: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_attempts: Option<u32>,
    },
}

fn one_second() -> Duration {
    Duration::from_secs(1)
}
fn five_minutes() -> Duration {
    Duration::from_secs(300)
}
fn two() -> f64 {
    2.0
}
fn tenth() -> f64 {
    0.1
}

impl From<Repr> for RetryPolicy {
    fn from(r: Repr) -> Self {
        match r {
            Repr::None => RetryPolicy::None,
            Repr::Once { delay } => RetryPolicy::Once { delay },
            Repr::Fixed { times, spacing } => RetryPolicy::Fixed { times, spacing },
            Repr::Exponential {
                initial,
                factor,
                cap,
                jitter,
                max_attempts,
            } => RetryPolicy::Exponential {
                initial,
                factor,
                cap,
                jitter,
                max_attempts,
            },
        }
    }
}

impl From<&RetryPolicy> for Repr {
    fn from(p: &RetryPolicy) -> Self {
        match *p {
            RetryPolicy::None => Repr::None,
            RetryPolicy::Once { delay } => Repr::Once { delay },
            RetryPolicy::Fixed { times, spacing } => Repr::Fixed { times, spacing },
            RetryPolicy::Exponential {
                initial,
                factor,
                cap,
                jitter,
                max_attempts,
            } => Repr::Exponential {
                initial,
                factor,
                cap,
                jitter,
                max_attempts,
            },
        }
    }
}

impl Serialize for RetryPolicy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Repr::from(self).serialize(s)
    }
}

impl<'de> Deserialize<'de> for RetryPolicy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PolicyVisitor;
        impl<'de> Visitor<'de> for PolicyVisitor {
            type Value = RetryPolicy;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a retry policy: a kind name or a table/object with a `kind` field")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RetryPolicy, E> {
                RetryPolicy::from_kind(v).map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RetryPolicy, A::Error> {
                let repr = Repr::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let policy = RetryPolicy::from(repr);
                policy.validate().map_err(de::Error::custom)?;
                Ok(policy)
            }
        }
        d.deserialize_any(PolicyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorthand_kinds() {
        let p: RetryPolicy = serde_json::from_str("\"none\"").unwrap();
        assert_eq!(p, RetryPolicy::None);
        let p: RetryPolicy = serde_json::from_str("\"exponential\"").unwrap();
        assert_eq!(p, RetryPolicy::default());
        let e = serde_json::from_str::<RetryPolicy>("\"fixed\"").unwrap_err();
        assert!(e.to_string().contains("times"), "{e}");
    }
}
