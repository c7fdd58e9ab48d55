//! [`MatchPolicy`]: how a registration's procedure or a subscription's topic
//! is matched against a URI (`match` in REGISTER/SUBSCRIBE options), and
//! the check of one pattern against one URI. The rules are in the
//! [module documentation](super).

use std::fmt;

/// How a registration's procedure / a subscription's topic is matched
/// against a call's procedure / a publication's topic
/// (`REGISTER.Options.match` / `SUBSCRIBE.Options.match`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchPolicy {
    /// String equality (the default when `match` is absent).
    #[default]
    Exact,
    /// The pattern is a string prefix of the URI.
    Prefix,
    /// Empty pattern components match any single URI component.
    Wildcard,
}

impl MatchPolicy {
    /// The wire name: `"exact"`, `"prefix"` or `"wildcard"`.
    #[must_use]
    pub const fn as_str(&self) -> &'static str {
        match self {
            MatchPolicy::Exact => "exact",
            MatchPolicy::Prefix => "prefix",
            MatchPolicy::Wildcard => "wildcard",
        }
    }

    /// Parses a wire name (case-sensitive); `None` for anything else.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "exact" => Some(MatchPolicy::Exact),
            "prefix" => Some(MatchPolicy::Prefix),
            "wildcard" => Some(MatchPolicy::Wildcard),
            _ => None,
        }
    }

    /// Whether `uri` matches `pattern` under this policy: one pattern
    /// checked directly (the index answers the same for many at once).
    #[must_use]
    pub fn matches(self, pattern: &str, uri: &str) -> bool {
        match self {
            MatchPolicy::Exact => pattern == uri,
            MatchPolicy::Prefix => uri.starts_with(pattern),
            MatchPolicy::Wildcard => {
                let (mut p, mut u) = (pattern.split('.'), uri.split('.'));
                loop {
                    match (p.next(), u.next()) {
                        (None, None) => return true,
                        (Some(pc), Some(uc)) if pc.is_empty() || pc == uc => {}
                        _ => return false,
                    }
                }
            }
        }
    }
}

impl fmt::Display for MatchPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::MatchPolicy::{self, Exact, Prefix, Wildcard};

    #[test]
    fn policy_names() {
        for p in [Exact, Prefix, Wildcard] {
            assert_eq!(MatchPolicy::parse(p.as_str()), Some(p));
            assert_eq!(p.to_string(), p.as_str());
        }
        assert_eq!(MatchPolicy::parse("Exact"), None);
        assert_eq!(MatchPolicy::parse(""), None);
        assert_eq!(MatchPolicy::default(), Exact);
    }
}
