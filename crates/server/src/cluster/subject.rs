//! The NATS subjects of cluster mode, and the escaping rule that carries
//! any WAMP URI into them.
//!
//! # Layout
//! A publication on topic `T` in realm `R` travels on
//! `<prefix>.<escaped R>.pub.<escaped T>`, one subject token per URI
//! component (the realm, which may hold dots, is one token).
//!
//! # Escaping (one component -> one token)
//! NATS tokens cannot be empty, cannot hold whitespace, and a token that is
//! exactly `*` or `>` is a wildcard. A component is carried byte for byte,
//! except that these bytes become `~` and two upper-case hex digits:
//! `~` itself (`~7E`), `*` (`~2A`), `>` (`~3E`), `.` (`~2E`, only inside
//! the realm token), `$` (`~24`), and every ASCII control or whitespace
//! byte (space is `~20`). An empty component becomes the token `~`, which no
//! escaped component can be (a literal `~` is always followed by two hex
//! digits). The rule is injective, keeps a token's count equal to the URI's
//! component count, and leaves ordinary URIs (`com.example.topic`)
//! unchanged.
//!
//! # Interest
//! A node subscribes only to the subjects its local subscriptions need:
//! exact `a.b.c` -> `...pub.a.b.c`; prefix `a.b.c` (a WAMP prefix is a
//! string prefix: it also matches `a.b.cd`) -> `...pub.a.b.>` (every
//! component but the last, which may be partial); wildcard `a..c` ->
//! `...pub.a.>` (the components before the first wildcard one). Every
//! interest subject is thus either exact or `<tokens>.>`, so dropping the
//! subjects another one covers ([`covering`]) leaves a set in which no two
//! overlap: NATS delivers each publication to a node at most once. The
//! Broker matches what arrives against its own subscriptions ("subscribe
//! broadly, filter locally").

use std::collections::BTreeSet;

use switchyard_router::uri_index::MatchPolicy;

/// Appends component `c` to `out`, escaped into one token. `dots` escapes
/// `.` too (for the realm, a whole URI in one token).
fn push_token(out: &mut String, c: &str, dots: bool) {
    if c.is_empty() {
        out.push('~');
        return;
    }
    for ch in c.chars() {
        let escape = matches!(ch, '~' | '*' | '>' | '$')
            || (dots && ch == '.')
            || (ch.is_ascii() && (ch.is_ascii_whitespace() || ch.is_ascii_control()));
        if escape {
            out.push_str(&format!("~{:02X}", ch as u32));
        } else {
            out.push(ch);
        }
    }
}

/// `<prefix>.<escaped realm>.pub`: where a realm's publications live.
pub fn realm_publications(prefix: &str, realm: &str) -> String {
    let mut s = String::with_capacity(prefix.len() + realm.len() + 5);
    s.push_str(prefix);
    s.push('.');
    push_token(&mut s, realm, true);
    s.push_str(".pub");
    s
}

/// `<prefix>.<escaped realm>.<kind>.<node>`: a node's RPC subjects
/// (`inv`: invocations for its callees, `ans`: answers for its proxies).
/// With an empty `node`, the base to append a node name to.
pub fn realm_rpc(prefix: &str, realm: &str, kind: &str, node: &str) -> String {
    let mut s = String::with_capacity(prefix.len() + realm.len() + kind.len() + node.len() + 3);
    s.push_str(prefix);
    s.push('.');
    push_token(&mut s, realm, true);
    s.push('.');
    s.push_str(kind);
    s.push('.');
    s.push_str(node);
    s
}

/// The subject of a publication on `topic`, under `base`
/// ([`realm_publications`]).
pub fn publication(base: &str, topic: &str) -> String {
    let mut s = String::with_capacity(base.len() + topic.len() + 1);
    s.push_str(base);
    for c in topic.split('.') {
        s.push('.');
        push_token(&mut s, c, false);
    }
    s
}

/// The subject a node subscribes to for a local subscription (`uri`,
/// `policy`), under `base` (see the module header).
pub fn interest(base: &str, uri: &str, policy: MatchPolicy) -> String {
    let components: Vec<&str> = uri.split('.').collect();
    let covered: &[&str] = match policy {
        MatchPolicy::Exact => return publication(base, uri),
        MatchPolicy::Prefix => &components[..components.len() - 1],
        MatchPolicy::Wildcard => {
            let first = components
                .iter()
                .position(|c| c.is_empty())
                .unwrap_or(components.len());
            &components[..first]
        }
    };
    let mut s = String::from(base);
    for c in covered {
        s.push('.');
        push_token(&mut s, c, false);
    }
    s.push_str(".>");
    s
}

/// Whether `general` (an interest subject) covers `specific`.
fn covers(general: &str, specific: &str) -> bool {
    match general.strip_suffix('>') {
        // "a.b.>" covers "a.b.x..." (at least one more token) and "a.b.>"
        // covers "a.b.c.>": everything that starts with "a.b." but itself.
        Some(stem) => specific != general && specific.starts_with(stem),
        None => false,
    }
}

/// Whether `subject` is in `active` or covered by a subject in it.
pub fn is_covered(active: &std::collections::HashSet<String>, subject: &str) -> bool {
    active.contains(subject)
        || subject
            .match_indices('.')
            .any(|(i, _)| active.contains(&format!("{}.>", &subject[..i])))
}

/// The subjects of `wanted` that no other subject of `wanted` covers: what
/// a node subscribes to. No two of them overlap (see the module header).
pub fn covering(wanted: &BTreeSet<String>) -> BTreeSet<String> {
    wanted
        .iter()
        .filter(|s| !wanted.iter().any(|g| covers(g, s)))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: &str = "sy.realm1.pub";

    #[test]
    fn ordinary_uris_are_unchanged() {
        assert_eq!(
            publication(B, "com.example.topic"),
            "sy.realm1.pub.com.example.topic"
        );
        assert_eq!(
            realm_publications("sy", "com.example"),
            "sy.com~2Eexample.pub"
        );
    }

    #[test]
    fn what_nats_forbids_is_escaped_one_token_per_component() {
        assert_eq!(
            publication(B, "a b.*.>.~x.$y"),
            "sy.realm1.pub.a~20b.~2A.~3E.~7Ex.~24y"
        );
        assert_eq!(publication(B, "a..b"), "sy.realm1.pub.a.~.b");
        assert_eq!(publication(B, "a\tb\nc"), "sy.realm1.pub.a~09b~0Ac");
        // Non-ASCII passes unchanged (NATS takes UTF-8 tokens).
        assert_eq!(publication(B, "café.ü"), "sy.realm1.pub.café.ü");
        // Injective where it matters: a literal "~20" differs from a space.
        assert_ne!(publication(B, "~20"), publication(B, " "));
    }

    #[test]
    fn interest_subjects() {
        assert_eq!(
            interest(B, "a.b.c", MatchPolicy::Exact),
            "sy.realm1.pub.a.b.c"
        );
        assert_eq!(
            interest(B, "a.b.c", MatchPolicy::Prefix),
            "sy.realm1.pub.a.b.>"
        );
        assert_eq!(
            interest(B, "a.b.", MatchPolicy::Prefix),
            "sy.realm1.pub.a.b.>"
        );
        assert_eq!(interest(B, "a", MatchPolicy::Prefix), "sy.realm1.pub.>");
        assert_eq!(
            interest(B, "a..c", MatchPolicy::Wildcard),
            "sy.realm1.pub.a.>"
        );
        assert_eq!(interest(B, ".b", MatchPolicy::Wildcard), "sy.realm1.pub.>");
    }

    #[test]
    fn coverage_of_one_subject() {
        let active: std::collections::HashSet<String> = ["sy.r.pub.a.>", "sy.r.pub.x.y"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(is_covered(&active, "sy.r.pub.x.y"));
        assert!(is_covered(&active, "sy.r.pub.a.b"));
        assert!(is_covered(&active, "sy.r.pub.a.b.>"));
        assert!(!is_covered(&active, "sy.r.pub.a"));
        assert!(!is_covered(&active, "sy.r.pub.x.>"));
    }

    #[test]
    fn the_covering_set_has_no_overlap() {
        let wanted: BTreeSet<String> = [
            "sy.r.pub.a.b.c",
            "sy.r.pub.a.>",
            "sy.r.pub.a.b.>",
            "sy.r.pub.ab.c",
            "sy.r.pub.x.y",
            "sy.r.pub.a",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let got: Vec<String> = covering(&wanted).into_iter().collect();
        assert_eq!(
            got,
            [
                "sy.r.pub.a",
                "sy.r.pub.a.>",
                "sy.r.pub.ab.c",
                "sy.r.pub.x.y"
            ]
        );
    }
}
