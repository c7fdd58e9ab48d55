//! Tests of the index as a whole, through [`UriIndex`]'s API (and, for
//! removal and hash collisions, a look at the tries' insides): the spec's
//! precedence, prefix and wildcard examples, insert/get/remove, removal and
//! churn leaving no nodes behind, hostile inputs, and a randomized
//! differential test against a naive reference implementation.

use super::hash::CompHasher;
use super::wildcard::EdgeSlot;
use super::MatchPolicy::{Exact, Prefix, Wildcard};
use super::*;
use std::collections::BTreeMap;

fn best(idx: &UriIndex<u64>, uri: &str) -> Option<(MatchPolicy, u64)> {
    idx.best_match(uri).map(|(p, v)| (p, *v))
}

fn all(idx: &UriIndex<u64>, uri: &str) -> Vec<(MatchPolicy, u64)> {
    let mut out = Vec::new();
    idx.for_each_match(uri, |p, v| out.push((p, *v)));
    out.sort_by_key(|&(p, v)| (v, policy_of(p)));
    out
}

fn policy_of(p: MatchPolicy) -> u8 {
    p as u8
}

/// The spec's worked example (rpc_pattern_based_registration.md,
/// "Calls matching multiple registrations").
fn spec_registrations() -> UriIndex<u64> {
    let mut idx = UriIndex::new();
    idx.insert("a1.b2.c3.d4.e55", Exact, 1);
    idx.insert("a1.b2.c3", Prefix, 2);
    idx.insert("a1.b2.c3.d4", Prefix, 3);
    idx.insert("a1.b2..d4.e5", Wildcard, 4);
    idx.insert("a1.b2.c33..e5", Wildcard, 5);
    idx.insert("a1.b2..d4.e5..g7", Wildcard, 6);
    idx.insert("a1.b2..d4..f6.g7", Wildcard, 7);
    idx
}

#[test]
fn spec_precedence_examples() {
    let idx = spec_registrations();
    assert_eq!(best(&idx, "a1.b2.c3.d4.e55"), Some((Exact, 1)));
    assert_eq!(best(&idx, "a1.b2.c3.d98.e74"), Some((Prefix, 2)));
    assert_eq!(best(&idx, "a1.b2.c3.d4.e325"), Some((Prefix, 3)));
    assert_eq!(best(&idx, "a1.b2.c55.d4.e5"), Some((Wildcard, 4)));
    assert_eq!(best(&idx, "a1.b2.c88.d4.e5.f6.g7"), Some((Wildcard, 6)));
    assert_eq!(best(&idx, "a2.b2.c2.d2.e2"), None);
}

/// The spec says 'a1.b2.c33.d4.e5' has "no prefix match" and picks RPC
/// 5, but with the string-prefix semantics of the same spec's "Prefix
/// Matching" section, 'a1.b2.c3' IS a prefix of 'a1.b2.c33.d4.e5'. We
/// implement string prefixes, so RPC 2 wins; the wildcard tie-break
/// itself (5 over 4) is checked without the prefix registrations.
#[test]
fn spec_precedence_example_c33() {
    let mut idx = spec_registrations();
    assert_eq!(best(&idx, "a1.b2.c33.d4.e5"), Some((Prefix, 2)));
    idx.remove("a1.b2.c3", Prefix);
    idx.remove("a1.b2.c3.d4", Prefix);
    assert_eq!(best(&idx, "a1.b2.c33.d4.e5"), Some((Wildcard, 5)));
    // [3,1] beats [2,2] regardless of insertion order.
    let mut idx = UriIndex::new();
    idx.insert("a1.b2.c33..e5", Wildcard, 5);
    idx.insert("a1.b2..d4.e5", Wildcard, 4);
    assert_eq!(best(&idx, "a1.b2.c33.d4.e5"), Some((Wildcard, 5)));
    assert_eq!(
        all(&idx, "a1.b2.c33.d4.e5"),
        vec![(Wildcard, 4), (Wildcard, 5)]
    );
}

#[test]
fn spec_precedence_second_portion() {
    // [2,2,1] beats [2,1,2], both insertion orders.
    for order in [[6, 7], [7, 6]] {
        let mut idx = UriIndex::new();
        for id in order {
            let pattern = if id == 6 {
                "a1.b2..d4.e5..g7"
            } else {
                "a1.b2..d4..f6.g7"
            };
            idx.insert(pattern, Wildcard, id);
        }
        assert_eq!(best(&idx, "a1.b2.c88.d4.e5.f6.g7"), Some((Wildcard, 6)));
        let m = idx.matches("a1.b2.c88.d4.e5.f6.g7");
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].0, "a1.b2..d4.e5..g7");
        assert_eq!(m[1].0, "a1.b2..d4..f6.g7");
    }
}

#[test]
fn spec_step3_example_and_leading_wildcards() {
    let mut idx = UriIndex::new();
    idx.insert("a1...d4", Wildcard, 1);
    idx.insert("a1.b2..d4", Wildcard, 2);
    assert_eq!(best(&idx, "a1.b2.c3.d4"), Some((Wildcard, 2)));
    // Portion before the first wildcard: 1 for "a..b", 0 for ".a.b".
    let mut idx = UriIndex::new();
    idx.insert(".x.y", Wildcard, 1);
    idx.insert("w..y", Wildcard, 2);
    assert_eq!(best(&idx, "w.x.y"), Some((Wildcard, 2)));
    // Adjacent wildcards: [1,0,1] loses to [1,1,0].
    let mut idx = UriIndex::new();
    idx.insert("a...d", Wildcard, 1);
    idx.insert("a..c.", Wildcard, 2);
    assert_eq!(best(&idx, "a.b.c.d"), Some((Wildcard, 2)));
}

#[test]
fn exact_beats_prefix_beats_wildcard() {
    let mut idx = UriIndex::new();
    idx.insert("a.b.c", Wildcard, 3);
    assert_eq!(best(&idx, "a.b.c"), Some((Wildcard, 3)));
    idx.insert("a", Prefix, 2);
    assert_eq!(best(&idx, "a.b.c"), Some((Prefix, 2)));
    idx.insert("a.b.c", Exact, 1);
    assert_eq!(best(&idx, "a.b.c"), Some((Exact, 1)));
    assert_eq!(
        all(&idx, "a.b.c"),
        vec![(Exact, 1), (Prefix, 2), (Wildcard, 3)]
    );
}

fn assert_prefix(pattern: &str, yes: &[&str], no: &[&str]) {
    let mut idx = UriIndex::new();
    idx.insert(pattern, Prefix, 7);
    for uri in yes {
        assert_eq!(
            best(&idx, uri),
            Some((Prefix, 7)),
            "{pattern} should match {uri}"
        );
        assert_eq!(all(&idx, uri), vec![(Prefix, 7)]);
    }
    for uri in no {
        assert_eq!(best(&idx, uri), None, "{pattern} should not match {uri}");
        assert!(all(&idx, uri).is_empty());
    }
}

#[test]
fn spec_prefix_examples() {
    assert_prefix(
        "com.myapp.myobject1",
        &[
            "com.myapp.myobject1.myprocedure1",
            "com.myapp.myobject1-mysubobject1",
            "com.myapp.myobject1.mysubobject1.myprocedure1",
            "com.myapp.myobject1",
        ],
        &["com.myapp.myobject2", "com.myapp.myobject"],
    );
    assert_prefix(
        "com.myapp.topic.emergency",
        &[
            "com.myapp.topic.emergency.11",
            "com.myapp.topic.emergency-low",
            "com.myapp.topic.emergency.category.severe",
            "com.myapp.topic.emergency",
        ],
        &[
            "com.myapp.topic.emerge",
            "",
            "com",
            "com.myapp.topic.emergenc",
        ],
    );
}

fn assert_wildcard(pattern: &str, yes: &[&str], no: &[&str]) {
    let mut idx = UriIndex::new();
    idx.insert(pattern, Wildcard, 9);
    for uri in yes {
        assert_eq!(
            best(&idx, uri),
            Some((Wildcard, 9)),
            "{pattern} should match {uri}"
        );
        assert_eq!(all(&idx, uri), vec![(Wildcard, 9)]);
    }
    for uri in no {
        assert_eq!(best(&idx, uri), None, "{pattern} should not match {uri}");
        assert!(all(&idx, uri).is_empty());
    }
}

#[test]
fn spec_wildcard_examples() {
    assert_wildcard(
        "com.myapp..myprocedure1",
        &[
            "com.myapp.myobject1.myprocedure1",
            "com.myapp.myobject2.myprocedure1",
        ],
        &[
            "com.myapp.myobject1.myprocedure1.mysubprocedure1",
            "com.myapp.myobject1.myprocedure2",
            "com.myapp2.myobject1.myprocedure1",
        ],
    );
    assert_wildcard(
        "com.myapp..userevent",
        &[
            "com.myapp.foo.userevent",
            "com.myapp.bar.userevent",
            "com.myapp.a12.userevent",
        ],
        &[
            "com.myapp.foo.userevent.bar",
            "com.myapp.foo.user",
            "com.myapp2.foo.userevent",
        ],
    );
}

#[test]
fn for_each_match_reports_each_entry_once() {
    let mut idx = UriIndex::new();
    let entries = [
        ("a.b", Exact),
        ("", Prefix),
        ("a", Prefix),
        ("a.", Prefix),
        ("a.b", Prefix),
        ("a.", Wildcard),
        (".b", Wildcard),
        ("..", Wildcard),
        (".", Wildcard),
        ("a.b", Wildcard),
    ];
    for (i, (p, pol)) in entries.iter().enumerate() {
        assert_eq!(idx.insert(p, *pol, i as u64), None);
    }
    // Non-matching neighbours.
    idx.insert("a.b.c", Exact, 100);
    idx.insert("a.bc", Prefix, 101);
    idx.insert("a.c", Wildcard, 102);
    idx.insert("a..", Wildcard, 103);
    let got = all(&idx, "a.b");
    let want: Vec<_> = entries
        .iter()
        .enumerate()
        .filter(|(_, (p, _))| *p != "..")
        .map(|(i, (_, pol))| (*pol, i as u64))
        .collect();
    assert_eq!(got, want);
    let m = idx.matches("a.b");
    assert_eq!(m.len(), want.len());
    assert_eq!(m[0], ("a.b".to_string(), Exact, &0));
    assert_eq!(m[1], ("a.b".to_string(), Prefix, &4));
    assert_eq!(m[4], ("".to_string(), Prefix, &1));
    assert_eq!(m[5], ("a.b".to_string(), Wildcard, &9));
    assert_eq!(m[8], (".".to_string(), Wildcard, &8));
}

#[test]
fn insert_get_remove_round_trips() {
    let mut idx = UriIndex::new();
    assert!(idx.is_empty());
    for pol in [Exact, Prefix, Wildcard] {
        assert_eq!(idx.insert("x.y", pol, 1), None);
        assert_eq!(idx.insert("x.y", pol, 2), Some(1));
        assert_eq!(idx.get("x.y", pol), Some(&2));
        *idx.get_mut("x.y", pol).expect("present") += 10;
        assert_eq!(idx.get("x.y", pol), Some(&12));
        assert_eq!(idx.get("x", pol), None);
        assert_eq!(idx.get("x.y.z", pol), None);
        assert_eq!(idx.get("x.", pol), None);
    }
    assert_eq!(idx.len(), 3);
    let mut listed: Vec<_> = idx
        .iter()
        .map(|(p, pol, v)| (p.to_string(), pol, *v))
        .collect();
    listed.sort_by_key(|(_, pol, _)| policy_of(*pol));
    assert_eq!(
        listed,
        vec![
            ("x.y".to_string(), Exact, 12),
            ("x.y".to_string(), Prefix, 12),
            ("x.y".to_string(), Wildcard, 12),
        ]
    );
    for pol in [Exact, Prefix, Wildcard] {
        assert_eq!(idx.remove("x.y", pol), Some(12));
        assert_eq!(idx.remove("x.y", pol), None);
        assert_eq!(idx.get("x.y", pol), None);
    }
    assert!(idx.is_empty());
    assert_eq!(idx.node_count(), 0);
}

#[test]
fn removal_cleans_the_tries() {
    let mut idx = UriIndex::new();
    let patterns = [
        "com.a.b",
        "com.a",
        "com.ab",
        "com.a.b.c",
        "",
        ".",
        "..",
        "a..",
        "com..x",
        "é.ü",
        "com",
        "co",
        "c",
        "com.a.b.d",
    ];
    for (i, p) in patterns.iter().enumerate() {
        idx.insert(p, Prefix, i as u64);
        idx.insert(p, Wildcard, 100 + i as u64);
    }
    assert!(idx.node_count() > 0);
    // Remove in a different order, checking the rest still works.
    for (k, p) in patterns.iter().enumerate().rev() {
        assert_eq!(idx.remove(p, Prefix), Some(k as u64));
        for (j, q) in patterns.iter().enumerate().take(k) {
            assert_eq!(idx.get(q, Prefix), Some(&(j as u64)));
        }
    }
    for (i, p) in patterns.iter().enumerate() {
        assert_eq!(idx.remove(p, Wildcard), Some(100 + i as u64));
    }
    assert!(idx.is_empty());
    assert_eq!(idx.node_count(), 0);
    // Churn: repeated insert/remove does not grow the arenas.
    for round in 0..100u64 {
        for p in patterns {
            idx.insert(p, Prefix, round);
            idx.insert(p, Wildcard, round);
        }
        for p in patterns {
            idx.remove(p, Prefix);
            idx.remove(p, Wildcard);
        }
    }
    assert_eq!(idx.node_count(), 0);
    assert_eq!(idx.prefix.arena.nodes.len(), 1);
    assert_eq!(idx.wildcard.arena.nodes.len(), 1);
}

#[test]
fn edge_cases_do_not_panic() {
    let mut idx = UriIndex::new();
    for (i, p) in ["", ".", "..", "a..", "a.", ".a", "ü..é", "🦀"]
        .iter()
        .enumerate()
    {
        for pol in [Exact, Prefix, Wildcard] {
            idx.insert(p, pol, i as u64);
        }
    }
    // Empty URI: exact "", prefix "", wildcard "" (one empty component).
    assert_eq!(all(&idx, ""), vec![(Exact, 0), (Prefix, 0), (Wildcard, 0)]);
    // "." has two empty components: matched by wildcards "." only.
    assert_eq!(
        all(&idx, "."),
        vec![(Prefix, 0), (Exact, 1), (Prefix, 1), (Wildcard, 1)]
    );
    // "a.." has three components.
    let m = all(&idx, "a..");
    assert!(m.contains(&(Wildcard, 2)) && m.contains(&(Wildcard, 3)));
    assert!(m.contains(&(Prefix, 4)) && m.contains(&(Exact, 3)));
    // Trailing dot is an empty last component, matched by a wildcard.
    assert_eq!(best(&idx, "x."), Some((Prefix, 0)));
    assert!(all(&idx, "x.").contains(&(Wildcard, 1)));
    assert!(!all(&idx, "x.").contains(&(Wildcard, 4)));
    assert!(all(&idx, "a.").contains(&(Wildcard, 4)));
    // Unicode.
    assert!(all(&idx, "ü.x.é").contains(&(Wildcard, 6)));
    assert!(all(&idx, "🦀🦀").contains(&(Prefix, 7)));
    assert!(!all(&idx, "🦀🦀").contains(&(Wildcard, 7)));
    // A prefix that ends inside a multi-byte character of the URI
    // cannot exist (patterns are &str), but byte-level splits must work.
    let mut u = UriIndex::new();
    u.insert("é", Prefix, 1);
    u.insert("è", Prefix, 2);
    assert_eq!(best(&u, "éa"), Some((Prefix, 1)));
    assert_eq!(best(&u, "èa"), Some((Prefix, 2)));
    assert_eq!(best(&u, "e"), None);
    // Very long URIs and patterns; deep tries are dropped without
    // recursion.
    let long = "a.".repeat(200_000);
    let deep = ".".repeat(100_000);
    let mut d = UriIndex::new();
    d.insert(&long, Wildcard, 1);
    d.insert(&deep, Wildcard, 2);
    d.insert(&long, Prefix, 3);
    assert_eq!(best(&d, &long), Some((Prefix, 3)));
    assert_eq!(all(&d, &long), vec![(Wildcard, 1), (Prefix, 3)]);
    assert_eq!(all(&d, &deep.replace('.', "x.")), vec![(Wildcard, 2)]);
    assert_eq!(
        all(&d, &format!("{long}a")),
        vec![(Wildcard, 1), (Prefix, 3)]
    );
    assert_eq!(all(&d, &format!("{long}a.")), vec![(Prefix, 3)]);
    for i in 0..2_000 {
        d.insert(&"z".repeat(i), Prefix, 10 + i as u64);
    }
    assert_eq!(best(&d, &"z".repeat(5_000)), Some((Prefix, 10 + 1999)));
    assert_eq!(d.remove(&deep, Wildcard), Some(2));
    drop(d);
    let _ = idx.matches(&long);
    idx.for_each_match(&"é.".repeat(10_000), |_, _| {});
}

// --- randomized differential test --------------------------------------

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const COMPONENTS: &[&str] = &["a", "b", "ab", "", "é", "a-b", "bb", "x"];

fn random_uri(rng: &mut Rng) -> String {
    let n = 1 + rng.below(5);
    (0..n)
        .map(|_| COMPONENTS[rng.below(COMPONENTS.len())])
        .collect::<Vec<_>>()
        .join(".")
}

fn random_pattern(rng: &mut Rng, policies: &[MatchPolicy]) -> (String, MatchPolicy) {
    let policy = policies[rng.below(policies.len())];
    let mut p = random_uri(rng);
    if policy == Prefix && rng.below(2) == 0 {
        // Cut at a random char boundary: exercises string prefixes.
        let cuts: Vec<usize> = (0..=p.len()).filter(|&i| p.is_char_boundary(i)).collect();
        p.truncate(cuts[rng.below(cuts.len())]);
    }
    if policy == Wildcard {
        // More wildcards than the alphabet alone gives (1 in 3).
        p = p
            .split('.')
            .map(|c| if rng.below(3) == 0 { "" } else { c })
            .collect::<Vec<_>>()
            .join(".");
    }
    (p, policy)
}

/// A URI matching `pattern` (wildcards filled in), or a random one.
fn uri_for(rng: &mut Rng, pattern: &str, policy: MatchPolicy) -> String {
    match policy {
        Exact => pattern.to_string(),
        Prefix => format!(
            "{pattern}{}",
            if rng.below(2) == 0 {
                String::new()
            } else {
                random_uri(rng)
            }
        ),
        Wildcard => pattern
            .split('.')
            .map(|c| {
                if c.is_empty() {
                    COMPONENTS[rng.below(COMPONENTS.len())]
                } else {
                    c
                }
            })
            .collect::<Vec<_>>()
            .join("."),
    }
}

fn naive_matches(pattern: &str, policy: MatchPolicy, uri: &str) -> bool {
    match policy {
        Exact => pattern == uri,
        Prefix => uri.starts_with(pattern),
        Wildcard => {
            let p: Vec<&str> = pattern.split('.').collect();
            let u: Vec<&str> = uri.split('.').collect();
            p.len() == u.len() && p.iter().zip(&u).all(|(a, b)| a.is_empty() || a == b)
        }
    }
}

/// "Portion of URI components matched before each wildcard", literally:
/// the lengths of the concrete runs between wildcards.
fn runs(pattern: &str) -> Vec<usize> {
    let mut out = vec![0];
    for c in pattern.split('.') {
        if c.is_empty() {
            out.push(0);
        } else if let Some(last) = out.last_mut() {
            *last += 1;
        }
    }
    out
}

type Reference = BTreeMap<(String, u8), (MatchPolicy, u64)>;

fn naive_best(reference: &Reference, uri: &str) -> Option<(MatchPolicy, u64)> {
    let matching: Vec<(&str, MatchPolicy, u64)> = reference
        .iter()
        .filter(|((p, _), (pol, _))| naive_matches(p, *pol, uri))
        .map(|((p, _), (pol, v))| (p.as_str(), *pol, *v))
        .collect();
    if let Some(&(_, pol, v)) = matching.iter().find(|m| m.1 == Exact) {
        return Some((pol, v));
    }
    let prefixes: Vec<_> = matching.iter().filter(|m| m.1 == Prefix).collect();
    if let Some(max) = prefixes.iter().map(|m| m.0.len()).max() {
        let top: Vec<_> = prefixes.iter().filter(|m| m.0.len() == max).collect();
        assert_eq!(top.len(), 1);
        return Some((Prefix, top[0].2));
    }
    let wild: Vec<_> = matching.iter().filter(|m| m.1 == Wildcard).collect();
    let max = wild.iter().map(|m| runs(m.0)).max()?;
    let top: Vec<_> = wild.iter().filter(|m| runs(m.0) == max).collect();
    assert_eq!(top.len(), 1, "wildcard tie for {uri}");
    Some((Wildcard, top[0].2))
}

/// Differential test against the naive reference; returns how many
/// best-match decisions were contested among several wildcards.
fn differential(seed: u64, policies: &[MatchPolicy]) -> usize {
    differential_on(UriIndex::new(), seed, policies)
}

fn differential_on(mut idx: UriIndex<u64>, seed: u64, policies: &[MatchPolicy]) -> usize {
    let mut rng = Rng(seed);
    let mut reference: Reference = BTreeMap::new();
    let mut next_id = 0u64;
    let mut hits = 0usize;
    let mut contested = 0usize;
    for _round in 0..30 {
        // Churn: ~60% inserts, ~40% removes.
        for _ in 0..100 {
            if rng.below(10) < 6 || reference.is_empty() {
                let (p, pol) = random_pattern(&mut rng, policies);
                next_id += 1;
                let prev = reference.insert((p.clone(), policy_of(pol)), (pol, next_id));
                assert_eq!(idx.insert(&p, pol, next_id), prev.map(|(_, v)| v));
            } else {
                let k = rng.below(reference.len());
                let key = reference.keys().nth(k).cloned().expect("k < len");
                let (pol, v) = reference.remove(&key).expect("present");
                assert_eq!(idx.remove(&key.0, pol), Some(v));
                assert_eq!(idx.remove(&key.0, pol), None);
            }
        }
        assert_eq!(idx.len(), reference.len());
        let keys: Vec<_> = reference
            .iter()
            .map(|((p, _), (pol, _))| (p.clone(), *pol))
            .collect();
        for _ in 0..300 {
            let uri = if rng.below(3) != 0 && !keys.is_empty() {
                let (p, pol) = &keys[rng.below(keys.len())];
                uri_for(&mut rng, p, *pol)
            } else {
                random_uri(&mut rng)
            };
            let want_best = naive_best(&reference, &uri);
            assert_eq!(best(&idx, &uri), want_best, "best_match({uri:?})");
            let mut want_all: Vec<(MatchPolicy, u64)> = reference
                .iter()
                .filter(|((p, _), (pol, _))| naive_matches(p, *pol, &uri))
                .map(|(_, &(pol, v))| (pol, v))
                .collect();
            want_all.sort_by_key(|&(p, v)| (v, policy_of(p)));
            hits += want_all.len();
            if want_best.is_some_and(|(p, _)| p == Wildcard)
                && want_all.iter().filter(|(p, _)| *p == Wildcard).count() > 1
            {
                contested += 1;
            }
            assert_eq!(all(&idx, &uri), want_all, "for_each_match({uri:?})");
            let m = idx.matches(&uri);
            assert_eq!(m.len(), want_all.len());
            assert_eq!(m.first().map(|(_, pol, v)| (*pol, **v)), want_best);
            for (p, pol, v) in &m {
                assert!(naive_matches(p, *pol, &uri));
                assert_eq!(
                    reference.get(&(p.clone(), policy_of(*pol))),
                    Some(&(*pol, **v))
                );
            }
        }
        for ((p, _), (pol, v)) in &reference {
            assert_eq!(idx.get(p, *pol), Some(v));
        }
        let mut listed: Vec<u64> = idx.iter().map(|(_, _, v)| *v).collect();
        listed.sort_unstable();
        let mut want: Vec<u64> = reference.values().map(|(_, v)| *v).collect();
        want.sort_unstable();
        assert_eq!(listed, want);
    }
    assert!(
        hits > 5_000,
        "test should exercise many matches, got {hits}"
    );
    for ((p, _), (pol, v)) in std::mem::take(&mut reference) {
        assert_eq!(idx.remove(&p, pol), Some(v));
    }
    assert!(idx.is_empty());
    assert_eq!(idx.node_count(), 0);
    contested
}

#[test]
fn randomized_differential_mixed() {
    differential(0x5EED_1234, &[Exact, Prefix, Wildcard]);
}

#[test]
fn randomized_differential_prefix() {
    differential(0x5EED_2345, &[Prefix, Prefix, Exact]);
}

#[test]
fn randomized_differential_wildcard() {
    let contested = differential(0x5EED_3456, &[Wildcard]);
    assert!(
        contested > 1_000,
        "too few contested decisions: {contested}"
    );
    let contested = differential(0x5EED_4567, &[Wildcard, Wildcard, Wildcard, Exact]);
    assert!(contested > 500, "too few contested decisions: {contested}");
}

/// With seeds (k1 = k3 = 0) under which every component shorter than 4
/// bytes (the whole test alphabet) hashes to 0, all edges of a node share
/// one edge hash: exercises the collision lists.
#[test]
fn randomized_differential_hash_collisions() {
    let mut idx = UriIndex::new();
    idx.wildcard.hasher = CompHasher {
        seeds: [0x1234_5678_9ABC_DEF1, 0, 7, 0],
    };
    assert_eq!(
        idx.wildcard.hasher.hash("a"),
        idx.wildcard.hasher.hash("bb")
    );
    idx.insert("a.b", Wildcard, 1);
    idx.insert("a.bb", Wildcard, 2);
    idx.insert("ab.b", Wildcard, 3);
    assert!(idx
        .wildcard
        .edges
        .values()
        .any(|slot| matches!(slot, EdgeSlot::Many(v) if v.len() > 1)));
    idx.clear();
    idx.wildcard.hasher = CompHasher {
        seeds: [0x1234_5678_9ABC_DEF1, 0, 7, 0],
    };
    differential_on(idx, 0x5EED_5678, &[Wildcard, Wildcard, Prefix]);
}

#[test]
fn clone_and_debug() {
    let mut idx = UriIndex::new();
    idx.insert("a..c", Wildcard, 1u64);
    idx.insert("a", Prefix, 2);
    let c = idx.clone();
    assert_eq!(best(&c, "a.b.c"), Some((Prefix, 2)));
    assert!(format!("{c:?}").contains("a..c"));
    idx.clear();
    assert!(idx.is_empty());
    assert_eq!(best(&c, "x.b.c"), None);
}
