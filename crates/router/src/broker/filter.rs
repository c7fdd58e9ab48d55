//! Who may receive a publication: publisher exclusion and subscriber black-
//! and whitelisting (spec "Subscriber Black- and Whitelisting"). A subscriber
//! receives the event if and only if it passes every list present.

use switchyard_proto::{Dict, Value};

use crate::session::Session;

/// The receiver restrictions of one publication.
#[derive(Clone, Debug, Default)]
pub(crate) struct Filter {
    /// The publisher itself, unless `exclude_me` is false.
    pub publisher: Option<u64>,
    pub exclude: Option<Vec<u64>>,
    pub exclude_authid: Option<Vec<String>>,
    pub exclude_authrole: Option<Vec<String>>,
    pub eligible: Option<Vec<u64>>,
    pub eligible_authid: Option<Vec<String>>,
    pub eligible_authrole: Option<Vec<String>>,
}

fn ids(options: &Dict, key: &str) -> Option<Vec<u64>> {
    match options.get(key) {
        Some(Value::List(l)) => Some(l.iter().filter_map(Value::as_u64).collect()),
        _ => None,
    }
}

fn strs(options: &Dict, key: &str) -> Option<Vec<String>> {
    match options.get(key) {
        Some(Value::List(l)) => Some(
            l.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
        ),
        _ => None,
    }
}

impl Filter {
    /// Bytes the lists hold (roughly), for what retained events cost.
    pub fn byte_len(&self) -> usize {
        let ids = |l: &Option<Vec<u64>>| l.as_ref().map_or(0, |l| l.len() * 8);
        let strs = |l: &Option<Vec<String>>| {
            l.as_ref()
                .map_or(0, |l| l.iter().map(|s| s.len() + 24).sum())
        };
        ids(&self.exclude)
            + ids(&self.eligible)
            + strs(&self.exclude_authid)
            + strs(&self.exclude_authrole)
            + strs(&self.eligible_authid)
            + strs(&self.eligible_authrole)
    }

    /// Reads PUBLISH.Options (their types were checked when decoding).
    /// `publisher` is the publishing session, if any.
    pub fn from_options(options: &Dict, publisher: Option<u64>) -> Self {
        let exclude_me = options.get_bool("exclude_me").unwrap_or(true);
        if options.is_empty() {
            return Filter {
                publisher,
                ..Filter::default()
            };
        }
        Filter {
            publisher: publisher.filter(|_| exclude_me),
            exclude: ids(options, "exclude"),
            exclude_authid: strs(options, "exclude_authid"),
            exclude_authrole: strs(options, "exclude_authrole"),
            eligible: ids(options, "eligible"),
            eligible_authid: strs(options, "eligible_authid"),
            eligible_authrole: strs(options, "eligible_authrole"),
        }
    }

    /// True when only the publisher is excluded (the common case).
    fn only_publisher(&self) -> bool {
        self.exclude.is_none()
            && self.exclude_authid.is_none()
            && self.exclude_authrole.is_none()
            && self.eligible.is_none()
            && self.eligible_authid.is_none()
            && self.eligible_authrole.is_none()
    }

    /// Whether `s` may receive the event.
    pub fn admits(&self, s: &Session) -> bool {
        if self.publisher == Some(s.id) {
            return false;
        }
        if self.only_publisher() {
            return true;
        }
        let has =
            |list: &Option<Vec<String>>, v: &str| list.as_ref().map(|l| l.iter().any(|x| x == v));
        let has_id = |list: &Option<Vec<u64>>| list.as_ref().map(|l| l.contains(&s.id));
        has_id(&self.eligible).unwrap_or(true)
            && has(&self.eligible_authid, &s.authid).unwrap_or(true)
            && has(&self.eligible_authrole, &s.authrole).unwrap_or(true)
            && !has_id(&self.exclude).unwrap_or(false)
            && !has(&self.exclude_authid, &s.authid).unwrap_or(false)
            && !has(&self.exclude_authrole, &s.authrole).unwrap_or(false)
    }

    /// Whether the event may go into event history: not when it names
    /// sessions, whose ids mean nothing to a later reader (spec "Event
    /// History", security aspects).
    pub fn storable(&self) -> bool {
        self.exclude.is_none() && self.eligible.is_none()
    }

    /// Whether a later reader with this identity may see a stored event
    /// (authid and authrole lists only; see [`Filter::storable`]).
    pub fn admits_identity(&self, authid: &str, authrole: &str) -> bool {
        let has =
            |list: &Option<Vec<String>>, v: &str| list.as_ref().map(|l| l.iter().any(|x| x == v));
        has(&self.eligible_authid, authid).unwrap_or(true)
            && has(&self.eligible_authrole, authrole).unwrap_or(true)
            && !has(&self.exclude_authid, authid).unwrap_or(false)
            && !has(&self.exclude_authrole, authrole).unwrap_or(false)
    }
}
