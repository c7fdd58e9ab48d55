//! [`UriIndex`]: the `(pattern, policy) -> T` map the Dealer and the Broker
//! route with. Exact entries in a hash map, prefix entries in a
//! `PrefixTrie`, wildcard entries in a `WildcardTrie`; the lookups ask
//! each in the order of the spec's precedence. Rules and costs: the
//! [module documentation](super).

use std::collections::HashMap;
use std::fmt;
use std::ops::ControlFlow;

use super::policy::MatchPolicy;
use super::prefix::PrefixTrie;
use super::wildcard::WildcardTrie;

/// An index of `(pattern, MatchPolicy) -> T` entries answering "which
/// entries match this URI" without scanning the entries that do not match.
///
/// See the [module documentation](super) for the matching rules and costs.
#[derive(Clone)]
pub struct UriIndex<T> {
    pub(super) exact: HashMap<Box<str>, T>,
    pub(super) prefix: PrefixTrie<T>,
    pub(super) wildcard: WildcardTrie<T>,
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
    pub(super) fn node_count(&self) -> usize {
        self.prefix.arena.live() + self.wildcard.arena.live() + self.wildcard.edges.len()
    }
}
