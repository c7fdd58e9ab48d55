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

/// The realm's authorizer procedure, or the application's authorizer over
/// HTTP (`app`; then `procedure` only names it in log lines).
#[derive(Clone, Debug)]
pub struct DynamicAuthorizer {
    pub procedure: String,
    pub timeout: std::time::Duration,
    /// The app that decides instead of `procedure` (it travels with the
    /// rules, so a reload swaps both at once).
    pub app: Option<crate::app_auth::AppAuthHandle>,
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
///
/// One pass over the pattern: a value is copied as it is, never read again
/// for placeholders, so the authid `{authrole}` stays those ten characters
/// (a second pass would turn it into the role's name, another user's URI).
fn substitute(pattern: &str, s: &Session) -> Option<String> {
    if !pattern.contains('{') {
        return Some(pattern.to_string());
    }
    let safe =
        |v: &str| !v.is_empty() && !v.contains(|c: char| c == '.' || c == '#' || c.is_whitespace());
    let mut out = String::with_capacity(pattern.len() + s.authid.len());
    let mut rest = pattern;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let found = [("{authid}", &s.authid), ("{authrole}", &s.authrole)]
            .into_iter()
            .find(|(key, _)| tail.starts_with(key));
        match found {
            Some((key, value)) => {
                if !safe(value) {
                    return None;
                }
                out.push_str(value);
                rest = &tail[key.len()..];
            }
            None => {
                out.push('{');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    Some(out)
}

/// The patterns a permission stands for in session `s`'s eyes (none if a
/// value cannot be substituted).
///
/// A prefix permission whose LAST component holds a placeholder
/// (`com.app.home.{authid}`, without a trailing dot) binds that component:
/// for `al` it is `com.app.home.al` (exact) and `com.app.home.al.` (prefix),
/// never the plain string prefix `com.app.home.al`, which also matches
/// `com.app.home.alice.diary`. A substituted value ends the URI or its
/// component, so one user's value never reaches another user's URIs.
fn instances<'a>(
    permissions: &'a [Permission],
    s: &'a Session,
) -> impl Iterator<Item = (String, MatchPolicy, &'a Permission)> + 'a {
    permissions.iter().flat_map(move |p| {
        let Some(pattern) = substitute(&p.uri, s) else {
            return Vec::new();
        };
        let last = p.uri.rsplit('.').next().unwrap_or_default();
        let open_ended = p.policy == MatchPolicy::Prefix
            && (last.contains("{authid}") || last.contains("{authrole}"));
        if open_ended {
            let subtree = format!("{pattern}.");
            vec![
                (pattern, MatchPolicy::Exact, p),
                (subtree, MatchPolicy::Prefix, p),
            ]
        } else {
            vec![(pattern, p.policy, p)]
        }
    })
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
        // The most specific matching permissions decide; permissions tied
        // for it (the same pattern twice, or a prefix permission's exact
        // instance and an exact one, see [`instances`]) must all allow, so
        // the answer never depends on their order in the file.
        let mut best: Option<Specificity> = None;
        let mut decision = Decision::Deny;
        for (pattern, policy, p) in instances(&role.permissions, s) {
            if !policy.matches(&pattern, uri) {
                continue;
            }
            let spec = specificity(&pattern, policy);
            let this = if p.allow.contains(&action) {
                Decision::Allow {
                    disclose: p.disclose,
                }
            } else {
                Decision::Deny
            };
            match best.as_ref().map(|b| spec.cmp(b)) {
                Some(std::cmp::Ordering::Less) => {}
                Some(std::cmp::Ordering::Equal) => {
                    decision = match (decision, this) {
                        (Decision::Allow { disclose: a }, Decision::Allow { disclose: b }) => {
                            Decision::Allow { disclose: a || b }
                        }
                        _ => Decision::Deny,
                    };
                }
                _ => {
                    best = Some(spec);
                    decision = this;
                }
            }
        }
        decision
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

/// A wildcard pattern without a wildcard component matches one URI: itself.
fn effective_policy(pattern: &str, policy: MatchPolicy) -> MatchPolicy {
    if policy == MatchPolicy::Wildcard && !pattern.split('.').any(str::is_empty) {
        MatchPolicy::Exact
    } else {
        policy
    }
}

/// Whether every URI `p` matches is also matched by permission pattern `q`.
/// Sound (never true when some URI matched by `p` escapes `q`); it may say
/// false for exotic cases that are covered, which only makes
/// [`Authorizer::decide_pattern`] stricter. URIs have no empty component.
fn covers(q: &str, qpol: MatchPolicy, p: &str, ppol: MatchPolicy) -> bool {
    use MatchPolicy::*;
    match (qpol, ppol) {
        (_, Exact) => qpol.matches(q, p),
        // Every URI a prefix or wildcard pattern matches starts with its lead.
        (Prefix, _) => lead(p, ppol).starts_with(q),
        // An exact permission never covers a pattern, and a wildcard one
        // (a fixed number of components) never covers a prefix.
        (Exact, _) | (Wildcard, Prefix) => false,
        (Wildcard, Wildcard) => {
            let (qc, pc): (Vec<&str>, Vec<&str>) = (q.split('.').collect(), p.split('.').collect());
            qc.len() == pc.len()
                && qc
                    .iter()
                    .zip(&pc)
                    .all(|(a, b)| a.is_empty() || (!b.is_empty() && a == b))
        }
    }
}

/// Whether some URI could match both `q` and `p`. Complete (never false
/// when such a URI exists); it may say true when none does.
fn may_intersect(q: &str, qpol: MatchPolicy, p: &str, ppol: MatchPolicy) -> bool {
    use MatchPolicy::*;
    let compatible = |a: &str, b: &str| a.starts_with(b) || b.starts_with(a);
    match (qpol, ppol) {
        (Exact, _) => ppol.matches(p, q),
        (_, Exact) => qpol.matches(q, p),
        (Prefix, Prefix) => compatible(q, p),
        (Prefix, Wildcard) => prefix_meets_wildcard(q, p),
        (Wildcard, Prefix) => prefix_meets_wildcard(p, q),
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

/// Whether some URI starts with `prefix` and matches the wildcard pattern
/// `wildcard`: the prefix's whole components must fit the pattern's, and its
/// last, partial component must fit the pattern's next one.
fn prefix_meets_wildcard(prefix: &str, wildcard: &str) -> bool {
    let wc: Vec<&str> = wildcard.split('.').collect();
    let mut pc: Vec<&str> = prefix.split('.').collect();
    let partial = pc.pop().unwrap_or_default();
    pc.len() < wc.len()
        && pc.iter().zip(&wc).all(|(p, w)| w.is_empty() || p == w)
        && (wc[pc.len()].is_empty() || wc[pc.len()].starts_with(partial))
}

impl Authorizer {
    /// Like [`Authorizer::decide`] for a subscription or registration whose
    /// `match` is `policy`: a prefix or wildcard pattern is allowed only if
    /// the action is allowed on every URI the pattern can match, including
    /// URIs no permission matches (denied). The pattern string is never
    /// decided as if it were a URI: an exact permission on
    /// `com.app.inbox.al` does not allow the prefix `com.app.inbox.al`
    /// (which also matches `com.app.inbox.alice`).
    ///
    /// The rule, conservative: among the permissions that cover the pattern
    /// (match everything it matches), take the most specific, `c*` (none:
    /// denied). Every URI the pattern matches is decided by `c*` or by a more
    /// specific permission that matches it, so the pattern is allowed only
    /// if `c*` (and any permission tied with it) allows the action, and so
    /// does every permission at least as specific as `c*` that may match a
    /// URI of the pattern.
    pub fn decide_pattern(
        &self,
        s: &Session,
        action: Action,
        pattern: &str,
        policy: MatchPolicy,
    ) -> Decision {
        let policy = effective_policy(pattern, policy);
        if policy == MatchPolicy::Exact {
            return self.decide(s, action, pattern);
        }
        if !self.enabled() {
            return Decision::Allow { disclose: false };
        }
        let Some(role) = self.roles.iter().find(|r| r.name == s.authrole) else {
            // The authorizer procedure decides, told the match policy.
            return if self.dynamic.is_some() {
                Decision::Ask
            } else {
                Decision::Deny
            };
        };
        let perms: Vec<(String, MatchPolicy, &Permission)> =
            instances(&role.permissions, s).collect();
        let Some(floor) = perms
            .iter()
            .filter(|(q, qpol, _)| covers(q, *qpol, pattern, policy))
            .map(|(q, qpol, _)| specificity(q, *qpol))
            .max()
        else {
            return Decision::Deny;
        };
        let mut disclose = false;
        for (q, qpol, p) in &perms {
            let spec = specificity(q, *qpol);
            if spec < floor {
                continue;
            }
            let covering = covers(q, *qpol, pattern, policy);
            if !covering && !may_intersect(q, *qpol, pattern, policy) {
                continue;
            }
            if !p.allow.contains(&action) {
                return Decision::Deny;
            }
            disclose |= covering && p.disclose;
        }
        Decision::Allow { disclose }
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

/// The authorizer cache's key: a pattern is not the URI it spells.
pub fn cache_key(uri: &str, policy: MatchPolicy) -> String {
    match policy {
        MatchPolicy::Exact => uri.to_string(),
        other => format!("{} {uri}", other.as_str()),
    }
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
    fn a_value_is_never_substituted_again() {
        let sneaky = session("{authrole}", "user");
        assert_eq!(
            substitute("com.app.inbox.{authid}", &sneaky).as_deref(),
            Some("com.app.inbox.{authrole}")
        );
        let sneaky_role = session("al", "{authid}x");
        assert_eq!(
            substitute("a.{authrole}.{authid}.{other}", &sneaky_role).as_deref(),
            Some("a.{authid}x.al.{other}")
        );
    }

    #[test]
    fn a_prefix_ending_with_the_authid_is_the_users_subtree() {
        use Action::*;
        use MatchPolicy::*;
        let z = Authorizer::new(
            vec![RoleConfig {
                name: "user".into(),
                permissions: vec![
                    perm("com.app.home.{authid}", Prefix, &[Subscribe]),
                    perm("com.app.x{authid}y", Prefix, &[Subscribe]),
                ],
            }],
            None,
        );
        let al = session("al", "user");
        let allow = Decision::Allow { disclose: false };
        for own in ["com.app.home.al", "com.app.home.al.diary", "com.app.xaly.z"] {
            assert_eq!(z.decide(&al, Subscribe, own), allow, "{own}");
        }
        for other in [
            "com.app.home.alice",
            "com.app.home.alice.diary",
            "com.app.home.al-ice",
            "com.app.xalyy",
        ] {
            assert_eq!(z.decide(&al, Subscribe, other), Decision::Deny, "{other}");
        }
        assert_eq!(
            z.decide_pattern(&al, Subscribe, "com.app.home.al.", Prefix),
            allow
        );
        for (p, pol) in [
            ("com.app.home.al", Prefix),
            ("com.app.home.alice.", Wildcard),
        ] {
            assert_eq!(
                z.decide_pattern(&al, Subscribe, p, pol),
                Decision::Deny,
                "{p}"
            );
        }
    }

    #[test]
    fn tied_permissions_must_all_allow_whatever_their_order() {
        use Action::*;
        use MatchPolicy::*;
        let both = [
            perm("com.a", Exact, &[Subscribe]),
            perm("com.a", Exact, &[]),
        ];
        let al = session("al", "user");
        for perms in [both.to_vec(), both.iter().rev().cloned().collect()] {
            let z = Authorizer::new(
                vec![RoleConfig {
                    name: "user".into(),
                    permissions: perms,
                }],
                None,
            );
            assert_eq!(z.decide(&al, Subscribe, "com.a"), Decision::Deny);
        }
        // an explicit exact "no" on the user's root beats the prefix
        // permission's exact instance, in either order
        let root = [
            perm("com.home.{authid}", Exact, &[]),
            perm("com.home.{authid}", Prefix, &[Subscribe]),
        ];
        for perms in [root.to_vec(), root.iter().rev().cloned().collect()] {
            let z = Authorizer::new(
                vec![RoleConfig {
                    name: "user".into(),
                    permissions: perms,
                }],
                None,
            );
            assert_eq!(z.decide(&al, Subscribe, "com.home.al"), Decision::Deny);
            assert_eq!(
                z.decide(&al, Subscribe, "com.home.al.x"),
                Decision::Allow { disclose: false }
            );
        }
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
    fn an_exact_permission_never_allows_a_pattern() {
        use Action::*;
        use MatchPolicy::*;
        // Issue 12, item 1: the pattern string was decided as if it were a URI.
        let z = Authorizer::new(
            vec![RoleConfig {
                name: "user".into(),
                permissions: vec![
                    perm("com.app.inbox.{authid}", Exact, &[Subscribe]),
                    perm("com.app.news", Exact, &[Subscribe]),
                ],
            }],
            None,
        );
        let al = session("al", "user");
        let allow = Decision::Allow { disclose: false };
        assert_eq!(z.decide(&al, Subscribe, "com.app.inbox.al"), allow);
        assert_eq!(
            z.decide_pattern(&al, Subscribe, "com.app.inbox.al", Exact),
            allow
        );
        for (pattern, policy) in [
            ("com.app.inbox.al", Prefix),
            ("com.app.news", Prefix),
            ("com.app.news.", Prefix),
            ("com.app.", Prefix),
            ("com.app.inbox.", Wildcard),
            ("com.app..al", Wildcard),
        ] {
            assert_eq!(
                z.decide_pattern(&al, Subscribe, pattern, policy),
                Decision::Deny,
                "{policy} {pattern}"
            );
        }
        // A wildcard pattern without a wildcard component is its one URI.
        assert_eq!(
            z.decide_pattern(&al, Subscribe, "com.app.news", Wildcard),
            allow
        );
    }

    #[test]
    fn a_pattern_inside_a_covering_prefix_is_decided_by_the_most_specific_ones() {
        use Action::*;
        use MatchPolicy::*;
        let z = Authorizer::new(
            vec![RoleConfig {
                name: "user".into(),
                permissions: vec![
                    perm("com.app.", Prefix, &[Subscribe]),
                    perm("com.app.news.internal.", Prefix, &[]),
                    perm("com.app.news.internal.public", Exact, &[Subscribe]),
                    perm("com.app..admin", Wildcard, &[]),
                ],
            }],
            None,
        );
        let u = session("u", "user");
        let allow = Decision::Allow { disclose: false };
        let d = |pattern, policy| z.decide_pattern(&u, Subscribe, pattern, policy);
        assert_eq!(d("com.app.news.internal.", Prefix), Decision::Deny);
        assert_eq!(d("com.app.news.", Prefix), Decision::Deny);
        assert_eq!(d("com.app.weather.", Prefix), allow);
        // a more specific permission that allows does not hurt
        assert_eq!(d("com.app.news.internal.public", Prefix), Decision::Deny);
        // com.app.news.internal.x is denied
        assert_eq!(d("com.app...x", Wildcard), Decision::Deny);
        assert_eq!(d("com.app.weather..x", Wildcard), allow);
        // a less specific wildcard that denies loses against the covering prefix
        assert_eq!(d("com.app..admin", Wildcard), allow);
        // nothing covers it: denied
        assert_eq!(d("com.", Prefix), Decision::Deny);
        assert_eq!(d("..x", Wildcard), Decision::Deny);
    }

    /// A small deterministic generator (no dependency for one test).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    const COMPONENTS: [&str; 4] = ["a", "ab", "b", "al"];

    fn random_uri(rng: &mut Rng) -> Vec<String> {
        (0..1 + rng.below(3))
            .map(|_| COMPONENTS[rng.below(COMPONENTS.len())].to_string())
            .collect()
    }

    /// A random pattern of `policy`: prefixes are cut anywhere (mid
    /// component, after a dot), wildcards blank random components.
    fn random_pattern(rng: &mut Rng, policy: MatchPolicy, authid: bool) -> String {
        let mut comps = random_uri(rng);
        if authid && rng.below(3) == 0 {
            let i = rng.below(comps.len());
            comps[i] = "{authid}".into();
        }
        match policy {
            MatchPolicy::Exact => comps.join("."),
            MatchPolicy::Prefix => {
                let full = comps.join(".") + ".";
                let mut cut = rng.below(full.len() + 1);
                while !full.is_char_boundary(cut) {
                    cut -= 1;
                }
                let cut = full[..cut].to_string();
                // a cut inside "{authid}" is not a placeholder any more
                if cut.contains('{') && !cut.contains('}') {
                    full
                } else {
                    cut
                }
            }
            MatchPolicy::Wildcard => {
                for c in comps.iter_mut() {
                    if rng.below(2) == 0 {
                        c.clear();
                    }
                }
                comps.join(".")
            }
        }
    }

    fn random_policy(rng: &mut Rng) -> MatchPolicy {
        [
            MatchPolicy::Exact,
            MatchPolicy::Prefix,
            MatchPolicy::Wildcard,
        ][rng.below(3)]
    }

    /// Every URI of 1 to 4 components over COMPONENTS.
    fn universe() -> Vec<String> {
        let mut all: Vec<String> = COMPONENTS.iter().map(|c| c.to_string()).collect();
        let mut last = all.clone();
        for _ in 1..4 {
            last = last
                .iter()
                .flat_map(|u| COMPONENTS.iter().map(move |c| format!("{u}.{c}")))
                .collect();
            all.extend(last.iter().cloned());
        }
        all
    }

    #[test]
    fn an_allowed_pattern_allows_every_uri_it_matches() {
        use Action::*;
        let universe = universe();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut allowed, mut checked) = (0, 0);
        for _ in 0..4000 {
            let permissions = (0..1 + rng.below(5))
                .map(|_| {
                    let policy = random_policy(&mut rng);
                    let uri = random_pattern(&mut rng, policy, true);
                    let allow: &[Action] = if rng.below(3) == 0 { &[] } else { &[Subscribe] };
                    perm(&uri, policy, allow)
                })
                .collect::<Vec<_>>();
            let z = Authorizer::new(
                vec![RoleConfig {
                    name: "user".into(),
                    permissions: permissions.clone(),
                }],
                None,
            );
            let s = session(["a", "al"][rng.below(2)], "user");
            for _ in 0..8 {
                let policy = [MatchPolicy::Prefix, MatchPolicy::Wildcard][rng.below(2)];
                let pattern = random_pattern(&mut rng, policy, false);
                checked += 1;
                if z.decide_pattern(&s, Subscribe, &pattern, policy) == Decision::Deny {
                    continue;
                }
                allowed += 1;
                for u in universe.iter().filter(|u| policy.matches(&pattern, u)) {
                    assert_eq!(
                        z.decide(&s, Subscribe, u),
                        Decision::Allow { disclose: false },
                        "{policy} {pattern:?} was allowed but {u:?} is not, for {} with {permissions:#?}",
                        s.authid
                    );
                }
            }
        }
        // the generator exercises both answers
        assert!(allowed > checked / 20, "{allowed} of {checked} allowed");
        assert!(allowed < checked, "{allowed} of {checked} allowed");
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
