//! Speed of the router's URI pattern index (`uri_index::UriIndex`).
//!
//! Run: `cargo run --release -p switchyard-router --example uri_index_speed`
//!
//! For pattern sets of 10, 1,000 and 100,000 entries (all exact, all prefix,
//! all wildcard, and a 1/3 each mix) it times `best_match` (Dealer) and
//! `for_each_match` (Broker) on 1,024 different URIs that match exactly one
//! pattern ("hit") and on 1,024 that match none but share most of their
//! structure with the stored patterns ("miss"). Each figure is the median
//! ns/op over several repetitions. If matching cost does not grow with the
//! number of non-matching patterns, the 10 / 1k / 100k rows stay close
//! (the remaining growth is cache misses of a bigger working set).
//!
//! A second table compares the radix trie used for prefix entries with the
//! alternative of probing a hash map at every distinct stored prefix length,
//! and a third shows a naive linear scan for scale.

use std::collections::{BTreeSet, HashMap};
use std::hint::black_box;
use std::time::Instant;

use switchyard_router::uri_index::{MatchPolicy, UriIndex};

const REPS: usize = 11;
const QUERIES: usize = 1024;
/// Operations per repetition (per cell).
const OPS: usize = 200_000;

/// splitmix64: deterministic, dependency-free.
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

#[derive(Clone, Copy, PartialEq)]
enum Set {
    Exact,
    Prefix,
    Wildcard,
    Mixed,
}

impl Set {
    fn name(self) -> &'static str {
        match self {
            Set::Exact => "exact",
            Set::Prefix => "prefix",
            Set::Wildcard => "wildcard",
            Set::Mixed => "mixed",
        }
    }
}

/// Pattern `i` of a set: `(pattern, policy, a URI matching only it, a URI
/// matching nothing)`. Realistic shapes: `com.sNNN.oNNNNNN.mN`, sharing
/// the first two components with many other patterns.
fn entry(set: Set, i: usize) -> (String, MatchPolicy, String, String) {
    let x = i % 317;
    let m = i % 7;
    let kind = match set {
        Set::Exact => 0,
        Set::Prefix => 1,
        Set::Wildcard => 2,
        Set::Mixed => i % 3,
    };
    match kind {
        0 => (
            format!("com.s{x:03}.o{i:06}.m{m}"),
            MatchPolicy::Exact,
            format!("com.s{x:03}.o{i:06}.m{m}"),
            format!("com.s{x:03}.o{i:06}.m9"),
        ),
        1 => (
            format!("com.s{x:03}.o{i:06}"),
            MatchPolicy::Prefix,
            format!("com.s{x:03}.o{i:06}.m{m}"),
            format!("com.s{x:03}.q{i:06}.m{m}"),
        ),
        _ => {
            let (pattern, hit) = match (i / 3) % 3 {
                0 => (
                    format!("com.s{x:03}.o{i:06}..m{m}"),
                    format!("com.s{x:03}.o{i:06}.zz.m{m}"),
                ),
                1 => (
                    format!("com.s{x:03}..o{i:06}.m{m}"),
                    format!("com.s{x:03}.zz.o{i:06}.m{m}"),
                ),
                _ => (
                    format!("..s{x:03}.o{i:06}.m{m}"),
                    format!("zz.yy.s{x:03}.o{i:06}.m{m}"),
                ),
            };
            (
                pattern,
                MatchPolicy::Wildcard,
                hit,
                format!("com.s{x:03}.q{i:06}.zz.m{m}"),
            )
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median ns per call of `op` over the query list.
fn time(queries: &[String], op: impl FnMut(&str) -> usize) -> f64 {
    time_ops(queries, OPS, op)
}

/// Same, with about `ops` calls per repetition.
fn time_ops(queries: &[String], ops: usize, mut op: impl FnMut(&str) -> usize) -> f64 {
    let rounds = (ops / queries.len()).max(1);
    let mut samples = Vec::with_capacity(REPS);
    let mut sink = 0usize;
    for _ in 0..REPS {
        let start = Instant::now();
        for _ in 0..rounds {
            for q in queries {
                sink = sink.wrapping_add(op(black_box(q)));
            }
        }
        let ns = start.elapsed().as_nanos() as f64;
        samples.push(ns / (rounds * queries.len()) as f64);
    }
    black_box(sink);
    median(samples)
}

fn best(idx: &UriIndex<u64>, uri: &str) -> usize {
    match idx.best_match(uri) {
        Some((_, v)) => *v as usize,
        None => 0,
    }
}

fn each(idx: &UriIndex<u64>, uri: &str) -> usize {
    let mut n = 0usize;
    idx.for_each_match(uri, |_, v| n = n.wrapping_add(*v as usize + 1));
    n
}

fn count(idx: &UriIndex<u64>, uri: &str) -> usize {
    let mut n = 0;
    idx.for_each_match(uri, |_, _| n += 1);
    n
}

fn main() {
    println!("UriIndex: median ns/op over {REPS} reps, {QUERIES} distinct URIs per cell");
    println!();
    println!(
        "{:<9} {:>8} {:>9} | {:>10} {:>10} | {:>10} {:>10}",
        "set", "patterns", "build ms", "best hit", "best miss", "each hit", "each miss"
    );
    println!("{}", "-".repeat(77));
    for set in [Set::Exact, Set::Prefix, Set::Wildcard, Set::Mixed] {
        for n in [10usize, 1_000, 100_000] {
            let entries: Vec<_> = (0..n).map(|i| entry(set, i)).collect();
            let start = Instant::now();
            let mut idx = UriIndex::new();
            for (i, (pattern, policy, _, _)) in entries.iter().enumerate() {
                idx.insert(pattern, *policy, i as u64 + 1);
            }
            let build_ms = start.elapsed().as_secs_f64() * 1e3;
            assert_eq!(idx.len(), n);
            let mut rng = Rng(n as u64 ^ 0xABCD);
            let picks: Vec<usize> = (0..QUERIES).map(|_| rng.below(n)).collect();
            let hits: Vec<String> = picks.iter().map(|&i| entries[i].2.clone()).collect();
            let misses: Vec<String> = picks.iter().map(|&i| entries[i].3.clone()).collect();
            for (q, &i) in hits.iter().zip(&picks) {
                assert_eq!(count(&idx, q), 1, "{q} must match exactly one pattern");
                assert_eq!(best(&idx, q), i + 1);
            }
            for q in &misses {
                assert_eq!(count(&idx, q), 0, "{q} must match nothing");
            }
            let best_hit = time(&hits, |u| best(&idx, u));
            let best_miss = time(&misses, |u| best(&idx, u));
            let each_hit = time(&hits, |u| each(&idx, u));
            let each_miss = time(&misses, |u| each(&idx, u));
            println!(
                "{:<9} {:>8} {:>9.1} | {:>10.1} {:>10.1} | {:>10.1} {:>10.1}",
                set.name(),
                n,
                build_ms,
                best_hit,
                best_miss,
                each_hit,
                each_miss
            );
        }
    }
    prefix_strategies();
    naive_scan();
}

/// The alternative prefix design: a hash map of all prefix patterns, probed
/// with `uri[..len]` for every distinct stored pattern length.
struct HashProbe {
    map: HashMap<Box<str>, u64>,
    lens: Vec<usize>,
}

impl HashProbe {
    fn new(patterns: &[String]) -> Self {
        let lens: BTreeSet<usize> = patterns.iter().map(|p| p.len()).collect();
        HashProbe {
            map: patterns
                .iter()
                .enumerate()
                .map(|(i, p)| (p.as_str().into(), i as u64 + 1))
                .collect(),
            lens: lens.into_iter().collect(),
        }
    }

    fn longest(&self, uri: &str) -> usize {
        for &len in self.lens.iter().rev() {
            if let Some(v) = uri.get(..len).and_then(|p| self.map.get(p)) {
                return *v as usize;
            }
        }
        0
    }

    fn each(&self, uri: &str) -> usize {
        let mut n = 0usize;
        for &len in &self.lens {
            if len > uri.len() {
                break;
            }
            if let Some(v) = uri.get(..len).and_then(|p| self.map.get(p)) {
                n = n.wrapping_add(*v as usize + 1);
            }
        }
        n
    }
}

fn prefix_strategies() {
    println!();
    println!("Prefix entries: radix trie (used) vs hash map probed at every stored length");
    println!("100,000 prefix patterns, median ns/op (\"best\" = longest matching prefix)");
    println!();
    println!(
        "{:<20} {:>7} | {:<21} {:>8} {:>9} {:>9}",
        "pattern set", "lengths", "strategy", "best hit", "best miss", "each miss"
    );
    println!("{}", "-".repeat(81));
    let mut rng = Rng(42);
    let fixed: Vec<String> = (0..100_000).map(|i| entry(Set::Prefix, i).0).collect();
    // Varied lengths: `com.appN.<word of 1..=32 letters>` (unique words).
    let mut seen = BTreeSet::new();
    let mut varied = Vec::new();
    while varied.len() < 100_000 {
        let len = 1 + rng.below(32);
        let word: String = (0..len)
            .map(|_| char::from(b'a' + rng.below(26) as u8))
            .collect();
        let p = format!("com.app{}.{word}", rng.below(97));
        if seen.insert(p.clone()) {
            varied.push(p);
        }
    }
    for (name, patterns) in [("fixed width", &fixed), ("varied length 1..32", &varied)] {
        let mut idx = UriIndex::new();
        for (i, p) in patterns.iter().enumerate() {
            idx.insert(p, MatchPolicy::Prefix, i as u64 + 1);
        }
        let probe = HashProbe::new(patterns);
        let hits: Vec<String> = (0..QUERIES)
            .map(|_| format!("{}.call.me", patterns[rng.below(patterns.len())]))
            .collect();
        let misses: Vec<String> = (0..QUERIES)
            .map(|_| format!("com.app{}.~nothing.here.at.all", rng.below(97)))
            .collect();
        for q in hits.iter().chain(&misses) {
            assert_eq!(best(&idx, q), probe.longest(q));
            assert_eq!(each(&idx, q), probe.each(q));
        }
        let rows = [
            (
                "radix trie",
                time(&hits, |u| best(&idx, u)),
                time(&misses, |u| best(&idx, u)),
                time(&misses, |u| each(&idx, u)),
            ),
            (
                "hash probe per length",
                time(&hits, |u| probe.longest(u)),
                time(&misses, |u| probe.longest(u)),
                time(&misses, |u| probe.each(u)),
            ),
        ];
        for (strategy, hit, miss, each_miss) in rows {
            println!(
                "{:<20} {:>7} | {:<21} {:>8.1} {:>9.1} {:>9.1}",
                name,
                probe.lens.len(),
                strategy,
                hit,
                miss,
                each_miss
            );
        }
    }
}

/// For scale: checking every pattern (what the index avoids).
fn naive_scan() {
    println!();
    println!("For scale: naive scan of every pattern, mixed set, miss URIs, ns/op");
    for n in [10usize, 1_000, 100_000] {
        let entries: Vec<_> = (0..n).map(|i| entry(Set::Mixed, i)).collect();
        let mut rng = Rng(7);
        let misses: Vec<String> = (0..32).map(|_| entries[rng.below(n)].3.clone()).collect();
        let ns = time_ops(&misses, (2_000_000 / n).clamp(32, OPS), |uri| {
            entries
                .iter()
                .filter(|(p, policy, _, _)| match policy {
                    MatchPolicy::Exact => p == uri,
                    MatchPolicy::Prefix => uri.starts_with(p.as_str()),
                    MatchPolicy::Wildcard => {
                        p.split('.').count() == uri.split('.').count()
                            && p.split('.')
                                .zip(uri.split('.'))
                                .all(|(a, b)| a.is_empty() || a == b)
                    }
                })
                .count()
        });
        println!("  {n:>7} patterns: {ns:>12.1}");
    }
}
