//! Registrations: one per (procedure URI, match policy), each with its
//! callees in registration order, its invocation policy and the queue of
//! calls waiting for a callee with spare capacity.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use switchyard_proto::{errors, Dict, Value};

use crate::session::{OpError, Session};
use crate::uri_index::MatchPolicy;

/// How a call picks among the callees of a shared registration
/// (spec "Shared Registration", plus `least_loaded`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvokePolicy {
    /// One callee only; a second REGISTER is refused (the default).
    Single,
    /// The first callee (in registration order) with spare capacity.
    First,
    /// The last callee with spare capacity.
    Last,
    /// Each callee in turn.
    RoundRobin,
    /// A callee drawn at random.
    Random,
    /// The callee with the fewest calls in flight (ties in turn).
    LeastLoaded,
}

impl InvokePolicy {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "single" => Self::Single,
            "first" => Self::First,
            "last" => Self::Last,
            "roundrobin" => Self::RoundRobin,
            "random" => Self::Random,
            "least_loaded" => Self::LeastLoaded,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Single => "single",
            Self::First => "first",
            Self::Last => "last",
            Self::RoundRobin => "roundrobin",
            Self::Random => "random",
            Self::LeastLoaded => "least_loaded",
        }
    }
}

/// REGISTER.Options as the Dealer uses them.
#[derive(Clone, Debug)]
pub struct RegisterOptions {
    pub policy: MatchPolicy,
    pub invoke: InvokePolicy,
    /// Calls this callee runs at once; 0 = no limit.
    pub concurrency: u32,
    /// Pass CALL.Options.timeout to the callee instead of timing it here.
    pub forward_timeout: bool,
    /// The callee asks to know who calls it.
    pub disclose_caller: bool,
}

impl RegisterOptions {
    /// Reads and checks REGISTER.Options (types were checked at decode).
    pub fn parse(options: &Dict) -> Result<Self, OpError> {
        let policy = match options.get_str("match") {
            None => MatchPolicy::Exact,
            Some(m) => MatchPolicy::parse(m).ok_or_else(|| {
                (
                    errors::INVALID_ARGUMENT,
                    format!("unknown match policy \"{m}\" (exact, prefix or wildcard)"),
                )
            })?,
        };
        let invoke = match options.get_str("invoke") {
            None => InvokePolicy::Single,
            Some(i) => InvokePolicy::parse(i).ok_or_else(|| {
                (
                    errors::INVALID_ARGUMENT,
                    format!(
                        "unknown invocation policy \"{i}\" (single, first, last, roundrobin, random or least_loaded)"
                    ),
                )
            })?,
        };
        let concurrency = match options.get("concurrency") {
            None => 0,
            Some(Value::UInt(n)) if (1..=u64::from(u32::MAX)).contains(n) => *n as u32,
            Some(other) => {
                return Err((
                    errors::INVALID_ARGUMENT,
                    format!(
                        "REGISTER.Options.concurrency must be a positive integer (at most 2^32-1), got {}",
                        switchyard_proto::shown_value(other)
                    ),
                ))
            }
        };
        Ok(RegisterOptions {
            policy,
            invoke,
            concurrency,
            forward_timeout: options.get_bool("forward_timeout").unwrap_or(false),
            disclose_caller: options.get_bool("disclose_caller").unwrap_or(false),
        })
    }
}

/// One callee attached to a registration.
pub(crate) struct CalleeEntry {
    pub session: Arc<Session>,
    pub concurrency: u32,
    pub in_flight: u32,
    pub forward_timeout: bool,
    pub disclose_caller: bool,
}

impl CalleeEntry {
    pub fn has_capacity(&self) -> bool {
        self.concurrency == 0 || self.in_flight < self.concurrency
    }
}

pub(crate) struct Registration {
    pub id: u64,
    pub uri: Arc<str>,
    pub policy: MatchPolicy,
    pub invoke: InvokePolicy,
    pub created: SystemTime,
    pub callees: Vec<CalleeEntry>,
    /// Round-robin cursor: the index to try first next time.
    pub next: usize,
    /// Calls waiting for a callee with spare capacity, oldest first.
    pub queue: VecDeque<u64>,
}

impl Registration {
    pub fn callee_index(&self, session: u64) -> Option<usize> {
        self.callees.iter().position(|c| c.session.id == session)
    }

    /// The callee for the next call under the invocation policy, among the
    /// callees with spare capacity; None if every callee is at its cap.
    pub fn pick(&mut self) -> Option<usize> {
        let n = self.callees.len();
        if n == 0 {
            return None;
        }
        let free = |c: &CalleeEntry| c.has_capacity();
        match self.invoke {
            InvokePolicy::Single | InvokePolicy::First => self.callees.iter().position(free),
            InvokePolicy::Last => self.callees.iter().rposition(free),
            InvokePolicy::RoundRobin => {
                let start = self.next % n;
                let i = (0..n)
                    .map(|k| (start + k) % n)
                    .find(|&i| free(&self.callees[i]))?;
                self.next = (i + 1) % n;
                Some(i)
            }
            InvokePolicy::Random => {
                let candidates = self.callees.iter().filter(|c| free(c)).count();
                if candidates == 0 {
                    return None;
                }
                let nth = rand::random_range(0..candidates);
                self.callees
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| free(c))
                    .nth(nth)
                    .map(|(i, _)| i)
            }
            InvokePolicy::LeastLoaded => {
                let start = self.next % n;
                let i = (0..n)
                    .map(|k| (start + k) % n)
                    .filter(|&i| free(&self.callees[i]))
                    .min_by_key(|&i| self.callees[i].in_flight)?;
                self.next = (i + 1) % n;
                Some(i)
            }
        }
    }
}
