//! Authorization: what a session's role may do on which URIs.
//!
//! A realm that lists roles checks every PUBLISH, SUBSCRIBE, CALL (meta
//! procedures included) and REGISTER against the permissions of the
//! session's role. Among the permissions whose pattern matches the URI, the
//! most specific wins (exact, then the longest prefix, then the wildcard with
//! the longest fixed runs, as for routing); its `allow` list decides.
//! Patterns may contain `{authid}` and `{authrole}`, replaced by the
//! session's own, so `com.app.user.{authid}.` grants each user only its own
//! topics. A realm without roles allows everything.
//!
//! A realm may also name an authorizer procedure: sessions whose role is
//! not listed statically are then decided by calling it with
//! (session details, uri, action); it answers a bool or a dict
//! `{allow, disclose, cache}`, and a `cache: true` answer is kept for that
//! session, URI and action until the session ends.

use std::fmt;

use serde::Deserialize;

use crate::session::Session;
use crate::uri_index::MatchPolicy;

/// An action a permission allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Call,
    Register,
    Publish,
    Subscribe,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Call => "call",
            Action::Register => "register",
            Action::Publish => "publish",
            Action::Subscribe => "subscribe",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule of a role.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Permission {
    /// The URI or pattern; may contain `{authid}` and `{authrole}`.
    pub uri: String,
    /// How `uri` matches: exact (default), prefix or wildcard.
    #[serde(default, rename = "match")]
    pub policy: MatchPolicy,
    /// The actions allowed on matching URIs; the others are denied.
    #[serde(default)]
    pub allow: Vec<Action>,
    /// Disclose the caller / publisher on matching URIs, whatever it asks.
    #[serde(default)]
    pub disclose: bool,
}

/// A role and its permissions.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    pub name: String,
    #[serde(default, rename = "permission")]
    pub permissions: Vec<Permission>,
}

/// The answer for one action on one URI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow {
        disclose: bool,
    },
    Deny,
    /// The realm's authorizer procedure decides.
    Ask,
}

/// The realm's authorizer procedure.
#[derive(Clone, Debug)]
pub struct DynamicAuthorizer {
    pub procedure: String,
    pub timeout: std::time::Duration,
}

/// How specific a matching pattern is: higher wins.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Specificity(u8, usize, Vec<usize>);

fn specificity(pattern: &str, policy: MatchPolicy) -> Specificity {
    match policy {
        MatchPolicy::Exact => Specificity(2, pattern.len(), Vec::new()),
        MatchPolicy::Prefix => Specificity(1, pattern.len(), Vec::new()),
        MatchPolicy::Wildcard => {
            // Lengths of the runs of fixed components, compared in order.
            let mut runs = vec![0usize];
            for c in pattern.split('.') {
                if c.is_empty() {
                    runs.push(0);
                } else if let Some(last) = runs.last_mut() {
                    *last += 1;
                }
            }
            Specificity(0, 0, runs)
        }
    }
}

/// Replaces `{authid}` and `{authrole}`; None if a value cannot stand in a
/// URI component (empty, or with '.', '#' or whitespace), so such a
/// permission never matches rather than matching too much.
fn substitute(pattern: &str, s: &Session) -> Option<String> {
    if !pattern.contains('{') {
        return Some(pattern.to_string());
    }
    let safe =
        |v: &str| !v.is_empty() && !v.contains(|c: char| c == '.' || c == '#' || c.is_whitespace());
    let mut out = pattern.to_string();
    for (key, value) in [("{authid}", &s.authid), ("{authrole}", &s.authrole)] {
        if out.contains(key) {
            if !safe(value) {
                return None;
            }
            out = out.replace(key, value);
        }
    }
    Some(out)
}

/// A realm's roles.
#[derive(Default)]
pub struct Authorizer {
    roles: Vec<RoleConfig>,
    dynamic: Option<DynamicAuthorizer>,
}

impl Authorizer {
    pub fn new(roles: Vec<RoleConfig>, dynamic: Option<DynamicAuthorizer>) -> Self {
        Authorizer { roles, dynamic }
    }

    /// Whether the realm checks actions at all (it lists roles or has an
    /// authorizer procedure).
    pub fn enabled(&self) -> bool {
        !self.roles.is_empty() || self.dynamic.is_some()
    }

    pub fn dynamic(&self) -> Option<&DynamicAuthorizer> {
        self.dynamic.as_ref()
    }

    /// The statically configured role `name`, if the realm lists it.
    pub fn role(&self, name: &str) -> Option<&RoleConfig> {
        self.roles.iter().find(|r| r.name == name)
    }

    /// May session `s` do `action` on `uri`?
    pub fn decide(&self, s: &Session, action: Action, uri: &str) -> Decision {
        if !self.enabled() {
            return Decision::Allow { disclose: false };
        }
        let Some(role) = self.roles.iter().find(|r| r.name == s.authrole) else {
            return if self.dynamic.is_some() {
                Decision::Ask
            } else {
                Decision::Deny
            };
        };
        let best = role
            .permissions
            .iter()
            .filter_map(|p| {
                let pattern = substitute(&p.uri, s)?;
                p.policy
                    .matches(&pattern, uri)
                    .then(|| (specificity(&pattern, p.policy), p))
            })
            .max_by(|a, b| a.0.cmp(&b.0));
        match best {
            Some((_, p)) if p.allow.contains(&action) => Decision::Allow {
                disclose: p.disclose,
            },
            _ => Decision::Deny,
        }
    }
}

/// The fixed start of a pattern: all of a prefix, or a wildcard pattern up
/// to its first wildcard component (every URI it matches starts with it).
fn lead(pattern: &str, policy: MatchPolicy) -> &str {
    match policy {
        MatchPolicy::Wildcard => {
            let mut end = 0;
            for c in pattern.split('.') {
                if c.is_empty() {
                    return &pattern[..end];
                }
                end = (end + c.len() + 1).min(pattern.len());
            }
            pattern
        }
        _ => pattern,
    }
}

/// Whether every URI `p` matches is also matched by permission pattern `q`.
fn covers(q: &str, qpol: MatchPolicy, p: &str, ppol: MatchPolicy) -> bool {
    match (qpol, ppol) {
        (MatchPolicy::Prefix, _) => lead(p, ppol).starts_with(q),
        (MatchPolicy::Wildcard, MatchPolicy::Wildcard) => {
            let (qc, pc): (Vec<&str>, Vec<&str>) = (q.split('.').collect(), p.split('.').collect());
            qc.len() == pc.len()
                && qc
                    .iter()
                    .zip(&pc)
                    .all(|(a, b)| a.is_empty() || (!b.is_empty() && a == b))
        }
        _ => false,
    }
}

/// Whether some URI could match both `q` and `p` (errs on the side of yes).
fn may_intersect(q: &str, qpol: MatchPolicy, p: &str, ppol: MatchPolicy) -> bool {
    use MatchPolicy::*;
    let compatible = |a: &str, b: &str| a.starts_with(b) || b.starts_with(a);
    match (qpol, ppol) {
        (Exact, _) => ppol.matches(p, q),
        (Prefix, Prefix) => compatible(q, p),
        (Prefix, Wildcard) | (Wildcard, Prefix) | (Prefix, Exact) | (Wildcard, Exact) => {
            compatible(lead(q, qpol), lead(p, ppol))
        }
        (Wildcard, Wildcard) => {
            let (qc, pc): (Vec<&str>, Vec<&str>) = (q.split('.').collect(), p.split('.').collect());
            qc.len() == pc.len()
                && qc
                    .iter()
                    .zip(&pc)
                    .all(|(a, b)| a.is_empty() || b.is_empty() || a == b)
        }
    }
}

impl Authorizer {
    /// Like [`Authorizer::decide`] for a prefix or wildcard pattern (a
    /// pattern subscription): allowed only if the action is allowed on every
    /// URI the pattern can match. A pattern that reaches into a more
    /// specific permission denying the action is refused, so a prefix
    /// subscription cannot collect other users' events.
    pub fn decide_pattern(
        &self,
        s: &Session,
        action: Action,
        pattern: &str,
        policy: MatchPolicy,
    ) -> Decision {
        let base = self.decide(s, action, pattern);
        if policy == MatchPolicy::Exact || !matches!(base, Decision::Allow { .. }) {
            return base;
        }
        let Some(role) = self.roles.iter().find(|r| r.name == s.authrole) else {
            return base;
        };
        for perm in &role.permissions {
            let Some(q) = substitute(&perm.uri, s) else {
                continue;
            };
            if covers(&q, perm.policy, pattern, policy) {
                continue;
            }
            if may_intersect(&q, perm.policy, pattern, policy) && !perm.allow.contains(&action) {
                return Decision::Deny;
            }
        }
        base
    }
}

/// Problems a config file check reports for a realm's roles.
pub fn problems(roles: &[RoleConfig]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, r) in roles.iter().enumerate() {
        if roles[..i].iter().any(|o| o.name == r.name) {
            out.push(format!("role[{i}]: role \"{}\" is defined twice", r.name));
        }
        for (j, p) in r.permissions.iter().enumerate() {
            let probe = p.uri.replace("{authid}", "x").replace("{authrole}", "x");
            let allow_empty = p.policy != MatchPolicy::Exact;
            if let Err(e) = switchyard_proto::uri::check(
                &probe,
                switchyard_proto::uri::UriCheck::Loose,
                allow_empty,
            ) {
                out.push(format!("role[{i}] ({}).permission[{j}].uri: {e}", r.name));
            }
            if p.uri.contains('{') && probe.contains('{') {
                out.push(format!(
                    "role[{i}] ({}).permission[{j}].uri: only {{authid}} and {{authrole}} may be substituted",
                    r.name
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::ClientFeatures;
    use crate::session::Identity;
    use switchyard_proto::Serializer;

    fn session(authid: &str, authrole: &str) -> Session {
        let (peer, _rx) = crate::Peer::new(
            Serializer::Json,
            4,
            crate::SlowConsumerPolicy::Disconnect,
            1 << 16,
            "test".into(),
        );
        Session::new(
            1,
            Identity {
                authid: authid.into(),
                authrole: authrole.into(),
                authmethod: "ticket".into(),
                authprovider: "static".into(),
            },
            ClientFeatures::default(),
            peer,
        )
    }

    fn perm(uri: &str, policy: MatchPolicy, allow: &[Action]) -> Permission {
        Permission {
            uri: uri.into(),
            policy,
            allow: allow.to_vec(),
            disclose: false,
        }
    }

    #[test]
    fn most_specific_wins_and_authid_is_substituted() {
        use Action::*;
        use MatchPolicy::*;
        let z = Authorizer::new(
            vec![RoleConfig {
                name: "user".into(),
                permissions: vec![
                    perm("com.app.", Prefix, &[Call, Subscribe]),
                    perm("com.app.admin.", Prefix, &[]),
                    perm("com.app.user.{authid}.", Prefix, &[Publish, Subscribe]),
                    perm("com.app..status", Wildcard, &[Subscribe]),
                    perm("com.app.admin.ping", Exact, &[Call]),
                ],
            }],
            None,
        );
        let alice = session("alice", "user");
        let allow = Decision::Allow { disclose: false };
        assert_eq!(z.decide(&alice, Call, "com.app.echo"), allow);
        assert_eq!(z.decide(&alice, Publish, "com.app.echo"), Decision::Deny);
        assert_eq!(
            z.decide(&alice, Call, "com.app.admin.reset"),
            Decision::Deny
        );
        assert_eq!(z.decide(&alice, Call, "com.app.admin.ping"), allow);
        assert_eq!(z.decide(&alice, Publish, "com.app.user.alice.inbox"), allow);
        assert_eq!(
            z.decide(&alice, Publish, "com.app.user.bob.inbox"),
            Decision::Deny
        );
        assert_eq!(z.decide(&alice, Register, "com.app.echo"), Decision::Deny);
        // Not "com.app.user.alice" + "x": the pattern ends with a dot.
        assert_eq!(
            z.decide(&alice, Publish, "com.app.user.alicex.inbox"),
            Decision::Deny
        );
        // An unknown role may do nothing; a dotted authid never matches.
        assert_eq!(
            z.decide(&session("alice", "guest"), Call, "com.app.echo"),
            Decision::Deny
        );
        let dotted = session("bob.evil", "user");
        assert_eq!(
            z.decide(&dotted, Publish, "com.app.user.bob.evil.x"),
            Decision::Deny
        );
        // Without roles, everything is allowed.
        assert_eq!(Authorizer::default().decide(&alice, Register, "x"), allow);
    }

    #[test]
    fn a_pattern_may_not_reach_into_denied_uris() {
        use Action::*;
        use MatchPolicy::*;
        let z = Authorizer::new(
            vec![RoleConfig {
                name: "user".into(),
                permissions: vec![
                    perm("com.app.", Prefix, &[Subscribe]),
                    perm("com.app.user.", Prefix, &[]),
                    perm("com.app.user.{authid}.", Prefix, &[Subscribe]),
                ],
            }],
            None,
        );
        let alice = session("alice", "user");
        let allow = Decision::Allow { disclose: false };
        for (pattern, policy) in [
            ("com.app.", Prefix),
            ("com.app.u", Prefix),
            ("com.app...inbox", Wildcard),
            ("com.app.user..inbox", Wildcard),
        ] {
            assert_eq!(
                z.decide_pattern(&alice, Subscribe, pattern, policy),
                Decision::Deny,
                "{pattern}"
            );
        }
        for (pattern, policy) in [
            ("com.app.user.alice.", Prefix),
            ("com.app.user.alice..x", Wildcard),
            ("com.app.news.", Prefix),
            ("com.app.news..x", Wildcard),
            ("com.app.user.bob.inbox", Exact),
        ] {
            let expected = if pattern.contains("bob") {
                Decision::Deny
            } else {
                allow
            };
            assert_eq!(
                z.decide_pattern(&alice, Subscribe, pattern, policy),
                expected,
                "{pattern}"
            );
        }
    }

    #[test]
    fn wildcard_specificity_follows_the_fixed_runs() {
        assert!(
            specificity("a.b..d", MatchPolicy::Wildcard)
                > specificity("a...d", MatchPolicy::Wildcard)
        );
        assert!(
            specificity("a.b", MatchPolicy::Exact) > specificity("a.b.c.d.e", MatchPolicy::Prefix)
        );
    }
}
