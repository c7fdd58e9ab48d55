//! URI pattern index shared by the Dealer (registrations) and the Broker
//! (subscriptions).
//!
//! A [`UriIndex<T>`] maps `(pattern, MatchPolicy)` keys to values (a
//! registration or subscription id) and answers the two routing questions of
//! the WAMP "pattern-based registration / subscription" features:
//!
//! * [`UriIndex::best_match`]: the Dealer's rule (spec, *Calls matching
//!   multiple registrations*): an exact match if present, else the longest
//!   matching prefix, else the best matching wildcard pattern, else none.
//! * [`UriIndex::for_each_match`]: the Broker's rule (*Events matching
//!   multiple subscriptions*): every matching entry, each exactly once.
//!
//! # Matching semantics
//!
//! * **exact**: string equality.
//! * **prefix**: plain *string* prefix, not component-wise: the spec's
//!   example has `com.myapp.myobject1` match `com.myapp.myobject1-mysubobject1`
//!   and `com.myapp.myobject1` itself. Among several matching prefixes the
//!   longest wins (longer string = more of the URI matched).
//! * **wildcard**: the pattern and the URI are split on `.`; the component
//!   counts must be equal and every non-empty pattern component must equal
//!   the URI component at the same position; an empty pattern component
//!   matches exactly one arbitrary URI component (which may itself be empty).
//!   Among several matching wildcard patterns the one with "the longest
//!   portion of URI components matched before each wildcard" wins: the
//!   sequence of lengths of the concrete runs delimited by the wildcards
//!   (zero-length runs included, e.g. for a leading wildcard or two adjacent
//!   ones) is compared lexicographically, larger wins. Since all candidates
//!   have the same number of components, this is the same as: at the first
//!   position where two patterns differ, the one with a concrete component
//!   there wins. Two *different* patterns matching the same URI always differ
//!   in some position, so this order is total and there are never ties.
//!
//! # Design and cost
//!
//! * exact entries: a `HashMap<Box<str>, T>`; one hash of the URI, no
//!   allocation.
//! * prefix entries: a compressed byte trie (radix tree) in an arena. A
//!   lookup walks the URI's bytes once, `O(len(uri))`, independent of the
//!   number of stored prefixes; every node passed that holds an entry is a
//!   matching prefix, the deepest one is the longest. (Probing a hash map at
//!   every stored prefix length costs one full hash per distinct length, see
//!   `examples/uri_index_speed.rs` for the numbers.)
//! * wildcard entries: a component trie in an arena; each node has one
//!   optional wildcard child and any number of concrete children, kept in a
//!   single hash table keyed by `(parent node, component)`. A lookup is an
//!   iterative depth-first search over the branches that exist for the URI's
//!   components, trying the concrete child before the wildcard child, so the
//!   first complete match found is the Dealer's best one (early exit). Each
//!   URI component is hashed once per lookup, however many nodes it is
//!   looked up under, with a fast folded-multiply hash keyed randomly per
//!   index (the construction of foldhash, hashbrown's default hasher; exact
//!   entries use std's SipHash). A lookup visits only trie nodes whose path
//!   is consistent with the URI's leading components, never the rest.
//! * No allocation on [`UriIndex::best_match`] / [`UriIndex::for_each_match`]
//!   unless the wildcard search has more than 16 pending branches (only
//!   possible for URIs of more than 15 components), which spills to a `Vec`.
//! * No recursion anywhere (deep tries built from hostile patterns cannot
//!   overflow the stack, also not when dropped), no `unsafe`, no panics on
//!   any input string.
//! * Removing an entry frees every trie node left without entries or
//!   children (and merges radix nodes), so memory does not grow with churn;
//!   freed arena slots are reused.

use std::collections::hash_map::{Entry, RandomState};
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::ops::{ControlFlow, Index, IndexMut};

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

/// An index of `(pattern, MatchPolicy) -> T` entries answering "which
/// entries match this URI" without scanning the entries that do not match.
///
/// See the [module documentation](self) for the matching rules and costs.
#[derive(Clone)]
pub struct UriIndex<T> {
    exact: HashMap<Box<str>, T>,
    prefix: PrefixTrie<T>,
    wildcard: WildcardTrie<T>,
}

impl<T> Default for UriIndex<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: fmt::Debug> fmt::Debug for UriIndex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T> UriIndex<T> {
    /// An empty index.
    #[must_use]
    pub fn new() -> Self {
        UriIndex {
            exact: HashMap::new(),
            prefix: PrefixTrie::new(),
            wildcard: WildcardTrie::new(),
        }
    }

    /// Number of `(pattern, policy)` entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.exact.len() + self.prefix.len + self.wildcard.len
    }

    /// Whether there are no entries.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        *self = Self::new();
    }

    /// The value stored under exactly this `(pattern, policy)` key (no
    /// matching involved: this is how a Dealer/Broker finds an existing
    /// registration/subscription for a new REGISTER/SUBSCRIBE).
    #[must_use]
    pub fn get(&self, pattern: &str, policy: MatchPolicy) -> Option<&T> {
        match policy {
            MatchPolicy::Exact => self.exact.get(pattern),
            MatchPolicy::Prefix => self.prefix.get(pattern).map(|l| &l.value),
            MatchPolicy::Wildcard => self.wildcard.get(pattern).map(|l| &l.value),
        }
    }

    /// Mutable access to the value stored under this `(pattern, policy)` key.
    pub fn get_mut(&mut self, pattern: &str, policy: MatchPolicy) -> Option<&mut T> {
        match policy {
            MatchPolicy::Exact => self.exact.get_mut(pattern),
            MatchPolicy::Prefix => self.prefix.get_mut(pattern).map(|l| &mut l.value),
            MatchPolicy::Wildcard => self.wildcard.get_mut(pattern).map(|l| &mut l.value),
        }
    }

    /// Inserts `value` under `(pattern, policy)`; returns the previous value
    /// if that key existed (the entry is then updated in place).
    pub fn insert(&mut self, pattern: &str, policy: MatchPolicy, value: T) -> Option<T> {
        match policy {
            MatchPolicy::Exact => {
                if let Some(slot) = self.exact.get_mut(pattern) {
                    return Some(std::mem::replace(slot, value));
                }
                self.exact.insert(pattern.into(), value);
                None
            }
            MatchPolicy::Prefix => self.prefix.insert(pattern, value),
            MatchPolicy::Wildcard => self.wildcard.insert(pattern, value),
        }
    }

    /// Removes the entry under `(pattern, policy)` and returns its value;
    /// trie nodes left empty are freed.
    pub fn remove(&mut self, pattern: &str, policy: MatchPolicy) -> Option<T> {
        match policy {
            MatchPolicy::Exact => {
                let value = self.exact.remove(pattern);
                if self.exact.is_empty() && self.exact.capacity() > 64 {
                    self.exact = HashMap::new();
                }
                value
            }
            MatchPolicy::Prefix => self.prefix.remove(pattern),
            MatchPolicy::Wildcard => self.wildcard.remove(pattern),
        }
    }

    /// The Dealer's rule: the single entry a call to `uri` is routed to.
    ///
    /// 1. the exact entry for `uri`, if any; else
    /// 2. the longest prefix entry that is a string prefix of `uri`; else
    /// 3. the best matching wildcard entry (concrete beats wildcard at the
    ///    first position where two candidates differ; never tied); else
    /// 4. `None` (`wamp.error.no_such_procedure`).
    ///
    /// Returns the matched entry's policy with its value. No allocation for
    /// URIs of up to 15 components (beyond that, only if the wildcard search
    /// branches a lot).
    #[must_use]
    pub fn best_match(&self, uri: &str) -> Option<(MatchPolicy, &T)> {
        if !self.exact.is_empty() {
            if let Some(v) = self.exact.get(uri) {
                return Some((MatchPolicy::Exact, v));
            }
        }
        if let Some(leaf) = self.prefix.longest(uri) {
            return Some((MatchPolicy::Prefix, &leaf.value));
        }
        self.wildcard
            .best(uri)
            .map(|leaf| (MatchPolicy::Wildcard, &leaf.value))
    }

    /// The Broker's rule: calls `f` once for every entry matching `uri` (the
    /// exact one, every matching prefix, every matching wildcard pattern),
    /// each exactly once. The order is unspecified (currently exact, then
    /// prefixes shortest first, then wildcards best first). No allocation
    /// for URIs of up to 15 components (see `best_match`).
    pub fn for_each_match(&self, uri: &str, mut f: impl FnMut(MatchPolicy, &T)) {
        if !self.exact.is_empty() {
            if let Some(v) = self.exact.get(uri) {
                f(MatchPolicy::Exact, v);
            }
        }
        self.prefix
            .visit(uri, |leaf| f(MatchPolicy::Prefix, &leaf.value));
        self.wildcard.visit(uri, |leaf| {
            f(MatchPolicy::Wildcard, &leaf.value);
            ControlFlow::Continue(())
        });
    }

    /// Every entry matching `uri` as `(pattern, policy, value)`, for the
    /// meta procedures `wamp.registration.match` /
    /// `wamp.subscription.match`. Ordered by Dealer precedence: the exact
    /// entry, then prefixes longest first, then wildcards best first; so the
    /// first element, if any, is [`best_match`](Self::best_match). Allocates.
    #[must_use]
    pub fn matches(&self, uri: &str) -> Vec<(String, MatchPolicy, &T)> {
        let mut out = Vec::new();
        if let Some((pattern, v)) = self.exact.get_key_value(uri) {
            out.push((pattern.to_string(), MatchPolicy::Exact, v));
        }
        let first_prefix = out.len();
        self.prefix.visit(uri, |leaf| {
            out.push((leaf.pattern.to_string(), MatchPolicy::Prefix, &leaf.value));
        });
        out[first_prefix..].reverse();
        self.wildcard.visit(uri, |leaf| {
            out.push((leaf.pattern.to_string(), MatchPolicy::Wildcard, &leaf.value));
            ControlFlow::Continue(())
        });
        out
    }

    /// All entries as `(pattern, policy, value)`, in unspecified order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, MatchPolicy, &T)> + '_ {
        let exact = self
            .exact
            .iter()
            .map(|(k, v)| (&**k, MatchPolicy::Exact, v));
        let prefix = self
            .prefix
            .arena
            .nodes
            .iter()
            .filter_map(|n| n.leaf.as_ref())
            .map(|l| (&*l.pattern, MatchPolicy::Prefix, &l.value));
        let wildcard = self
            .wildcard
            .arena
            .nodes
            .iter()
            .filter_map(|n| n.leaf.as_ref())
            .map(|l| (&*l.pattern, MatchPolicy::Wildcard, &l.value));
        exact.chain(prefix).chain(wildcard)
    }

    /// Live trie nodes (roots excluded) plus wildcard edges: zero once every
    /// pattern entry is removed.
    #[cfg(test)]
    fn node_count(&self) -> usize {
        self.prefix.arena.live() + self.wildcard.arena.live() + self.wildcard.edges.len()
    }
}

// ---------------------------------------------------------------------------
// Shared pieces

/// Index of the root node in both arenas; roots are never freed.
const ROOT: usize = 0;
/// "No node".
const NONE: usize = usize::MAX;

/// A stored entry: the full pattern (for `iter`/`matches`) and its value.
#[derive(Clone)]
struct Leaf<T> {
    pattern: Box<str>,
    value: T,
}

/// Nodes in a `Vec`, addressed by index, with a free list. Node 0 is the
/// root. No recursive ownership, so dropping a deep trie cannot overflow
/// the stack.
#[derive(Clone)]
struct Arena<N> {
    nodes: Vec<N>,
    free: Vec<usize>,
}

impl<N> Arena<N> {
    fn new(root: N) -> Self {
        Arena {
            nodes: vec![root],
            free: Vec::new(),
        }
    }

    /// Live nodes, root excluded.
    fn live(&self) -> usize {
        self.nodes.len() - 1 - self.free.len()
    }

    fn alloc(&mut self, node: N) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.nodes[i] = node;
                i
            }
            None => {
                self.nodes.push(node);
                self.nodes.len() - 1
            }
        }
    }

    /// Frees slot `i` (dropping its contents by overwriting it with
    /// `vacant`); the slot is reused by the next `alloc`. When only the root
    /// is left the arena is truncated and a large allocation given back.
    fn release(&mut self, i: usize, vacant: N) {
        self.nodes[i] = vacant;
        self.free.push(i);
        if self.live() == 0 {
            self.nodes.truncate(1);
            self.free.clear();
            if self.nodes.capacity() > 64 {
                self.nodes.shrink_to_fit();
                self.free = Vec::new();
            }
        }
    }
}

impl<N> Index<usize> for Arena<N> {
    type Output = N;
    fn index(&self, i: usize) -> &N {
        &self.nodes[i]
    }
}

impl<N> IndexMut<usize> for Arena<N> {
    fn index_mut(&mut self, i: usize) -> &mut N {
        &mut self.nodes[i]
    }
}

// ---------------------------------------------------------------------------
// Prefix entries: radix tree over bytes

/// Bytes stored inline when short (radix edge labels, wildcard trie
/// components), so that following an edge does not cost an extra cache
/// miss.
#[derive(Clone)]
enum Label {
    Inline(u8, [u8; INLINE_LABEL]),
    Heap(Box<[u8]>),
}

const INLINE_LABEL: usize = 22;

impl Label {
    fn new(bytes: &[u8]) -> Self {
        match u8::try_from(bytes.len()) {
            Ok(len) if bytes.len() <= INLINE_LABEL => {
                let mut buf = [0u8; INLINE_LABEL];
                buf[..bytes.len()].copy_from_slice(bytes);
                Label::Inline(len, buf)
            }
            _ => Label::Heap(bytes.into()),
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Label::Inline(len, buf) => buf.get(..usize::from(*len)).unwrap_or_default(),
            Label::Heap(b) => b,
        }
    }
}

#[derive(Clone)]
struct PNode<T> {
    /// Bytes on the edge from the parent (non-empty except for the root).
    label: Label,
    parent: usize,
    /// `(first byte of the child's label, child)`, sorted by byte.
    children: Vec<(u8, usize)>,
    leaf: Option<Leaf<T>>,
}

impl<T> PNode<T> {
    fn vacant() -> Self {
        PNode {
            label: Label::Inline(0, [0; INLINE_LABEL]),
            parent: NONE,
            children: Vec::new(),
            leaf: None,
        }
    }
}

#[derive(Clone)]
struct PrefixTrie<T> {
    arena: Arena<PNode<T>>,
    len: usize,
}

impl<T> PrefixTrie<T> {
    fn new() -> Self {
        PrefixTrie {
            arena: Arena::new(PNode::vacant()),
            len: 0,
        }
    }

    /// `Ok(position)` of the child whose label starts with `b`, else
    /// `Err(insertion position)`.
    fn child_slot(&self, node: usize, b: u8) -> Result<usize, usize> {
        self.arena[node]
            .children
            .binary_search_by_key(&b, |&(k, _)| k)
    }

    fn child(&self, node: usize, b: u8) -> Option<usize> {
        let children = &self.arena[node].children;
        match children.binary_search_by_key(&b, |&(k, _)| k) {
            Ok(i) => children.get(i).map(|&(_, c)| c),
            Err(_) => None,
        }
    }

    /// The node whose path spells exactly `key`, if any.
    fn find(&self, key: &[u8]) -> Option<usize> {
        let mut node = ROOT;
        let mut rest = key;
        while let Some(&b) = rest.first() {
            let c = self.child(node, b)?;
            rest = rest.strip_prefix(self.arena[c].label.bytes())?;
            node = c;
        }
        Some(node)
    }

    fn get(&self, pattern: &str) -> Option<&Leaf<T>> {
        let node = self.find(pattern.as_bytes())?;
        self.arena[node].leaf.as_ref()
    }

    fn get_mut(&mut self, pattern: &str) -> Option<&mut Leaf<T>> {
        let node = self.find(pattern.as_bytes())?;
        self.arena[node].leaf.as_mut()
    }

    fn insert(&mut self, pattern: &str, value: T) -> Option<T> {
        let key = pattern.as_bytes();
        let mut node = ROOT;
        let mut pos = 0;
        loop {
            let Some(rest) = key.get(pos..).filter(|r| !r.is_empty()) else {
                return self.set_leaf(node, pattern, value);
            };
            let b = rest[0];
            match self.child_slot(node, b) {
                Err(at) => {
                    let child = self.arena.alloc(PNode {
                        label: Label::new(rest),
                        parent: node,
                        children: Vec::new(),
                        leaf: None,
                    });
                    self.arena[node].children.insert(at, (b, child));
                    return self.set_leaf(child, pattern, value);
                }
                Ok(slot) => {
                    let child = self.arena[node].children[slot].1;
                    let label = self.arena[child].label.bytes();
                    let common = label.iter().zip(rest).take_while(|(x, y)| x == y).count();
                    if common == label.len() {
                        node = child;
                        pos += common;
                        continue;
                    }
                    // Split the edge: node -> mid (label[..common]) -> child.
                    let head = Label::new(&label[..common]);
                    let tail_first = label[common];
                    let tail = Label::new(&label[common..]);
                    let mid = self.arena.alloc(PNode {
                        label: head,
                        parent: node,
                        children: vec![(tail_first, child)],
                        leaf: None,
                    });
                    let c = &mut self.arena[child];
                    c.label = tail;
                    c.parent = mid;
                    self.arena[node].children[slot].1 = mid;
                    node = mid;
                    pos += common;
                }
            }
        }
    }

    fn set_leaf(&mut self, node: usize, pattern: &str, value: T) -> Option<T> {
        match &mut self.arena[node].leaf {
            Some(leaf) => Some(std::mem::replace(&mut leaf.value, value)),
            slot @ None => {
                *slot = Some(Leaf {
                    pattern: pattern.into(),
                    value,
                });
                self.len += 1;
                None
            }
        }
    }

    fn remove(&mut self, pattern: &str) -> Option<T> {
        let node = self.find(pattern.as_bytes())?;
        let leaf = self.arena[node].leaf.take()?;
        self.len -= 1;
        self.compact(node);
        Some(leaf.value)
    }

    /// Restores the radix invariants upwards from `node`, which just lost
    /// its entry or a child: entry-less leaves are freed, entry-less nodes
    /// with a single child are merged into that child.
    fn compact(&mut self, mut node: usize) {
        while node != ROOT {
            let n = &self.arena[node];
            if n.leaf.is_some() {
                return;
            }
            let parent = n.parent;
            let Some(&first) = n.label.bytes().first() else {
                return;
            };
            match n.children.len() {
                0 => {
                    let siblings = &mut self.arena[parent].children;
                    if let Ok(i) = siblings.binary_search_by_key(&first, |&(k, _)| k) {
                        siblings.remove(i);
                    }
                    self.arena.release(node, PNode::vacant());
                    node = parent;
                }
                1 => {
                    let child = n.children[0].1;
                    let mut label = n.label.bytes().to_vec();
                    label.extend_from_slice(self.arena[child].label.bytes());
                    let c = &mut self.arena[child];
                    c.label = Label::new(&label);
                    c.parent = parent;
                    let siblings = &mut self.arena[parent].children;
                    if let Ok(i) = siblings.binary_search_by_key(&first, |&(k, _)| k) {
                        siblings[i].1 = child;
                    }
                    self.arena.release(node, PNode::vacant());
                    return;
                }
                _ => return,
            }
        }
    }

    /// Calls `f` for every entry whose pattern is a prefix of `uri`,
    /// shortest first. One pass over `uri`'s bytes.
    fn visit<'a>(&'a self, uri: &str, mut f: impl FnMut(&'a Leaf<T>)) {
        if self.len == 0 {
            return;
        }
        let mut node = ROOT;
        let mut rest = uri.as_bytes();
        loop {
            let n = &self.arena[node];
            if let Some(leaf) = &n.leaf {
                f(leaf);
            }
            let Some(&b) = rest.first() else { return };
            let Some(c) = self.child(node, b) else { return };
            let Some(r) = rest.strip_prefix(self.arena[c].label.bytes()) else {
                return;
            };
            rest = r;
            node = c;
        }
    }

    /// The longest entry whose pattern is a prefix of `uri`.
    fn longest(&self, uri: &str) -> Option<&Leaf<T>> {
        let mut best = None;
        self.visit(uri, |leaf| best = Some(leaf));
        best
    }
}

// ---------------------------------------------------------------------------
// Wildcard entries: component trie

#[derive(Clone)]
struct WNode<T> {
    parent: usize,
    /// Child for an empty (wildcard) component, or `NONE`.
    wild: usize,
    /// Number of concrete children (edges in `WildcardTrie::edges`).
    concrete: usize,
    leaf: Option<Leaf<T>>,
}

impl<T> WNode<T> {
    fn vacant() -> Self {
        WNode {
            parent: NONE,
            wild: NONE,
            concrete: 0,
            leaf: None,
        }
    }
}

/// A concrete edge `parent --comp--> child`.
#[derive(Clone)]
struct Edge {
    parent: usize,
    comp: Label,
    child: usize,
}

/// The edges sharing one 64-bit edge hash: almost always exactly one.
#[derive(Clone)]
enum EdgeSlot {
    One(Edge),
    Many(Vec<Edge>),
}

/// Hasher for keys that already are well-mixed 64-bit hashes.
#[derive(Default, Clone, Copy)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (keys are `u64`); FNV-1a as a fallback.
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// 64x64 -> 128-bit multiply, folded back to 64 bits.
fn folded_multiply(x: u64, y: u64) -> u64 {
    let full = u128::from(x) * u128::from(y);
    (full as u64) ^ ((full >> 64) as u64)
}

/// Little-endian load of up to 8 bytes (zero-padded).
fn load(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    let n = bytes.len().min(8);
    buf[..n].copy_from_slice(&bytes[..n]);
    u64::from_le_bytes(buf)
}

/// Keyed hash of URI components: a folded-multiply construction like
/// foldhash (hashbrown's default hasher), seeded randomly per index so
/// peers cannot precompute colliding components. Roughly 5x faster than
/// std's SipHash on short components, which dominates wildcard lookups.
#[derive(Clone)]
struct CompHasher {
    seeds: [u64; 4],
}

impl CompHasher {
    fn new() -> Self {
        let keys = RandomState::new();
        CompHasher {
            seeds: [0u64, 1, 2, 3].map(|i| keys.hash_one(i) | 1),
        }
    }

    fn hash(&self, s: &str) -> u64 {
        let s = s.as_bytes();
        let len = s.len();
        let [k0, k1, k2, k3] = self.seeds;
        let (a, b) = if len <= 16 {
            if len >= 8 {
                (load(s), load(&s[len - 8..]))
            } else if len >= 4 {
                (load(&s[..4]), load(&s[len - 4..]))
            } else if let Some(&first) = s.first() {
                let mid = s[len / 2];
                let last = s[len - 1];
                (
                    u64::from(first) | u64::from(mid) << 8 | u64::from(last) << 16,
                    0,
                )
            } else {
                (0, 0)
            }
        } else {
            let mut acc = k2;
            let mut chunks = s.chunks_exact(16);
            for chunk in &mut chunks {
                acc = folded_multiply(load(&chunk[..8]) ^ k0, load(&chunk[8..]) ^ acc);
            }
            // The last 16 bytes (overlapping the last chunk if needed).
            let tail = &s[len - 16..];
            (
                load(&tail[..8]) ^ acc.rotate_left(23),
                load(&tail[8..]) ^ acc,
            )
        };
        folded_multiply(a ^ k0, b ^ k1 ^ (len as u64).wrapping_mul(k3))
    }
}

/// Hash of the edge `(parent, component)` from the component's hash, which
/// is already well mixed in all bits (the low ones pick the bucket, the top
/// 7 are hashbrown's tag); the odd multiplier spreads distinct parents.
fn edge_hash(comp_hash: u64, parent: usize) -> u64 {
    comp_hash ^ (parent as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Position of the first `.` in `s`, 8 bytes at a time (SWAR zero-byte
/// test: the lowest flagged byte is always exact).
fn find_dot(s: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const DOTS: u64 = LO * b'.' as u64;
    let mut chunks = s.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        let x = load(chunk) ^ DOTS;
        let found = x.wrapping_sub(LO) & !x & HI;
        if found != 0 {
            return Some(base + (found.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'.')
        .map(|i| base + i)
}

#[derive(Clone)]
struct WildcardTrie<T> {
    arena: Arena<WNode<T>>,
    /// Concrete edges of all nodes, keyed by `edge_hash`.
    edges: HashMap<u64, EdgeSlot, BuildHasherDefault<PreHashed>>,
    hasher: CompHasher,
    len: usize,
}

/// Pending branch of the wildcard search: `node` reached after `depth`
/// components; `start` is the byte offset of the next URI component, or
/// `END` once the URI is exhausted.
#[derive(Clone, Copy, Default)]
struct Frame {
    node: usize,
    depth: usize,
    start: usize,
}

const END: usize = usize::MAX;

/// Fixed buffer sizes of a wildcard lookup: components whose end / hash
/// are memoised, and pending branches held without allocating.
const MEMO: usize = 16;

/// Per-lookup memo of URI component boundaries and hashes (a component may
/// be looked up under several nodes at the same depth).
struct Components<'u> {
    uri: &'u str,
    ends: [usize; MEMO],
    ends_len: usize,
    hashes: [u64; MEMO],
    hashed: u32,
}

impl<'u> Components<'u> {
    fn new(uri: &'u str) -> Self {
        Components {
            uri,
            ends: [0; MEMO],
            ends_len: 0,
            hashes: [0; MEMO],
            hashed: 0,
        }
    }

    /// End offset of the component at `depth`, which starts at `start`.
    /// Depth `d` is only ever asked for after depth `d - 1`.
    fn end(&mut self, depth: usize, start: usize) -> usize {
        if depth < self.ends_len {
            return self.ends[depth];
        }
        let rest = self.uri.as_bytes().get(start..).unwrap_or_default();
        let end = find_dot(rest).map_or(self.uri.len(), |i| start + i);
        if depth == self.ends_len && depth < MEMO {
            self.ends[depth] = end;
            self.ends_len += 1;
        }
        end
    }

    fn hash(&mut self, depth: usize, comp: &str, hasher: &CompHasher) -> u64 {
        if depth < MEMO && self.hashed & (1 << depth) != 0 {
            return self.hashes[depth];
        }
        let h = hasher.hash(comp);
        if depth < MEMO {
            self.hashes[depth] = h;
            self.hashed |= 1 << depth;
        }
        h
    }
}

/// A LIFO stack that lives on the call stack up to `N` elements and only
/// allocates beyond that.
struct Stack<E: Copy + Default, const N: usize> {
    buf: [E; N],
    len: usize,
    spill: Vec<E>,
}

impl<E: Copy + Default, const N: usize> Stack<E, N> {
    fn new() -> Self {
        Stack {
            buf: [E::default(); N],
            len: 0,
            spill: Vec::new(),
        }
    }

    fn push(&mut self, e: E) {
        match self.buf.get_mut(self.len) {
            Some(slot) if self.spill.is_empty() => {
                *slot = e;
                self.len += 1;
            }
            _ => self.spill.push(e),
        }
    }

    fn pop(&mut self) -> Option<E> {
        if let Some(e) = self.spill.pop() {
            return Some(e);
        }
        self.len = self.len.checked_sub(1)?;
        self.buf.get(self.len).copied()
    }
}

impl<T> WildcardTrie<T> {
    fn new() -> Self {
        WildcardTrie {
            arena: Arena::new(WNode::vacant()),
            edges: HashMap::default(),
            hasher: CompHasher::new(),
            len: 0,
        }
    }

    /// The child of `parent` for the concrete component `comp`.
    fn edge(&self, parent: usize, comp: &str, comp_hash: u64) -> Option<usize> {
        let matches = |e: &Edge| e.parent == parent && e.comp.bytes() == comp.as_bytes();
        match self.edges.get(&edge_hash(comp_hash, parent))? {
            EdgeSlot::One(e) => matches(e).then_some(e.child),
            EdgeSlot::Many(v) => v.iter().find(|e| matches(e)).map(|e| e.child),
        }
    }

    fn add_edge(&mut self, parent: usize, comp: &str, comp_hash: u64, child: usize) {
        let edge = Edge {
            parent,
            comp: Label::new(comp.as_bytes()),
            child,
        };
        match self.edges.entry(edge_hash(comp_hash, parent)) {
            Entry::Vacant(slot) => {
                slot.insert(EdgeSlot::One(edge));
            }
            Entry::Occupied(mut slot) => {
                let slot = slot.get_mut();
                match slot {
                    EdgeSlot::Many(v) => v.push(edge),
                    EdgeSlot::One(_) => {
                        let EdgeSlot::One(first) =
                            std::mem::replace(slot, EdgeSlot::Many(Vec::with_capacity(2)))
                        else {
                            return;
                        };
                        if let EdgeSlot::Many(v) = slot {
                            v.push(first);
                            v.push(edge);
                        }
                    }
                }
            }
        }
        self.arena[parent].concrete += 1;
    }

    fn remove_edge(&mut self, parent: usize, comp: &str, comp_hash: u64) {
        let key = edge_hash(comp_hash, parent);
        let Entry::Occupied(mut slot) = self.edges.entry(key) else {
            return;
        };
        let matches = |e: &Edge| e.parent == parent && e.comp.bytes() == comp.as_bytes();
        let removed = match slot.get_mut() {
            EdgeSlot::One(e) => {
                let hit = matches(e);
                if hit {
                    slot.remove();
                }
                hit
            }
            EdgeSlot::Many(v) => {
                let before = v.len();
                v.retain(|e| !matches(e));
                let hit = v.len() < before;
                if v.len() == 1 {
                    if let Some(last) = v.pop() {
                        *slot.get_mut() = EdgeSlot::One(last);
                    }
                } else if v.is_empty() {
                    slot.remove();
                }
                hit
            }
        };
        if removed {
            self.arena[parent].concrete -= 1;
        }
    }

    /// The node whose path is exactly `pattern`'s components, if any.
    fn find(&self, pattern: &str) -> Option<usize> {
        let mut node = ROOT;
        for comp in pattern.split('.') {
            node = if comp.is_empty() {
                Some(self.arena[node].wild).filter(|&w| w != NONE)?
            } else {
                self.edge(node, comp, self.hasher.hash(comp))?
            };
        }
        Some(node)
    }

    fn get(&self, pattern: &str) -> Option<&Leaf<T>> {
        let node = self.find(pattern)?;
        self.arena[node].leaf.as_ref()
    }

    fn get_mut(&mut self, pattern: &str) -> Option<&mut Leaf<T>> {
        let node = self.find(pattern)?;
        self.arena[node].leaf.as_mut()
    }

    fn insert(&mut self, pattern: &str, value: T) -> Option<T> {
        let mut node = ROOT;
        for comp in pattern.split('.') {
            node = if comp.is_empty() {
                match self.arena[node].wild {
                    NONE => {
                        let child = self.arena.alloc(WNode {
                            parent: node,
                            ..WNode::vacant()
                        });
                        self.arena[node].wild = child;
                        child
                    }
                    child => child,
                }
            } else {
                let comp_hash = self.hasher.hash(comp);
                match self.edge(node, comp, comp_hash) {
                    Some(child) => child,
                    None => {
                        let child = self.arena.alloc(WNode {
                            parent: node,
                            ..WNode::vacant()
                        });
                        self.add_edge(node, comp, comp_hash, child);
                        child
                    }
                }
            };
        }
        match &mut self.arena[node].leaf {
            Some(leaf) => Some(std::mem::replace(&mut leaf.value, value)),
            slot @ None => {
                *slot = Some(Leaf {
                    pattern: pattern.into(),
                    value,
                });
                self.len += 1;
                None
            }
        }
    }

    fn remove(&mut self, pattern: &str) -> Option<T> {
        let leaf_node = self.find(pattern)?;
        let leaf = self.arena[leaf_node].leaf.take()?;
        self.len -= 1;
        // Walk back up (the last component is the edge into `leaf_node`),
        // freeing nodes without entry and children.
        let mut node = leaf_node;
        for comp in pattern.rsplit('.') {
            let n = &self.arena[node];
            if node == ROOT || n.leaf.is_some() || n.wild != NONE || n.concrete != 0 {
                break;
            }
            let parent = n.parent;
            if comp.is_empty() {
                self.arena[parent].wild = NONE;
            } else {
                self.remove_edge(parent, comp, self.hasher.hash(comp));
            }
            self.arena.release(node, WNode::vacant());
            node = parent;
        }
        if self.len == 0 && self.edges.capacity() > 64 {
            self.edges = HashMap::default();
        }
        Some(leaf.value)
    }

    /// Depth-first search over the trie branches matching `uri`'s
    /// components, concrete child before wildcard child; calls `f` for each
    /// matching entry in Dealer precedence order (best first) until it
    /// breaks.
    fn visit<'a>(&'a self, uri: &str, mut f: impl FnMut(&'a Leaf<T>) -> ControlFlow<()>) {
        if self.len == 0 {
            return;
        }
        let mut comps = Components::new(uri);
        let mut stack: Stack<Frame, MEMO> = Stack::new();
        stack.push(Frame {
            node: ROOT,
            depth: 0,
            start: 0,
        });
        while let Some(Frame { node, depth, start }) = stack.pop() {
            let n = &self.arena[node];
            if start == END {
                if let Some(leaf) = &n.leaf {
                    if f(leaf).is_break() {
                        return;
                    }
                }
                continue;
            }
            if n.wild == NONE && n.concrete == 0 {
                continue;
            }
            let end = comps.end(depth, start);
            let next = if end < uri.len() { end + 1 } else { END };
            // Pushed first, so explored after the concrete branch.
            if n.wild != NONE {
                stack.push(Frame {
                    node: n.wild,
                    depth: depth + 1,
                    start: next,
                });
            }
            if n.concrete != 0 {
                if let Some(comp) = uri.get(start..end).filter(|c| !c.is_empty()) {
                    let h = comps.hash(depth, comp, &self.hasher);
                    if let Some(child) = self.edge(node, comp, h) {
                        stack.push(Frame {
                            node: child,
                            depth: depth + 1,
                            start: next,
                        });
                    }
                }
            }
        }
    }

    /// The best matching entry (the first one the search finds).
    fn best(&self, uri: &str) -> Option<&Leaf<T>> {
        let mut best = None;
        self.visit(uri, |leaf| {
            best = Some(leaf);
            ControlFlow::Break(())
        });
        best
    }
}

// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
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
    fn find_dot_and_component_hash() {
        for len in 0..40 {
            let plain = "x".repeat(len);
            assert_eq!(find_dot(plain.as_bytes()), None);
            for at in 0..len {
                let mut v = plain.clone().into_bytes();
                v[at] = b'.';
                if at + 1 < len {
                    v[len - 1] = b'.';
                }
                assert_eq!(find_dot(&v), Some(at), "len {len} at {at}");
            }
        }
        assert_eq!(find_dot("é.".as_bytes()), Some(2));
        // Bytes just below/above '.' must not be taken for it.
        assert_eq!(find_dot(b"-/-/-/-/-/-/.-/"), Some(12));
        let h = CompHasher::new();
        let words = [
            "", "a", "b", "ab", "ba", "abb", "aab", "abcd", "abcde", "abcdefgh",
        ];
        let long: Vec<String> = (0..64).map(|i| "q".repeat(i)).collect();
        let mut seen = std::collections::HashSet::new();
        for w in words
            .iter()
            .copied()
            .chain(long.iter().map(String::as_str).skip(9))
        {
            assert_eq!(h.hash(w), h.hash(w));
            assert!(seen.insert(h.hash(w)), "collision on {w:?}");
        }
        assert_ne!(
            CompHasher::new().hash("abc"),
            h.hash("abc"),
            "seeded per index"
        );
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
}
