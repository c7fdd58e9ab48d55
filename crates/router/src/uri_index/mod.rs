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
//!
//! # Files
//!
//! | File | What it holds |
//! |---|---|
//! | `policy.rs` | [`MatchPolicy`]: exact, prefix, wildcard; one pattern checked directly |
//! | `index.rs` | [`UriIndex`]: the map from `(pattern, policy)` to values, and the Dealer's and Broker's lookups over its three parts |
//! | `arena.rs` | `Arena`: the nodes of both tries in a `Vec` with a free list (no recursive ownership), and `Leaf`, a stored entry |
//! | `label.rs` | `Label`: bytes of an edge, inline when short |
//! | `prefix.rs` | `PrefixTrie`: prefix entries, a radix tree over bytes |
//! | `wildcard.rs` | `WildcardTrie`: wildcard entries, a component trie with its edges in one hash table, and the allocation-free depth-first search |
//! | `hash.rs` | `CompHasher`: the keyed hash of URI components, the edge hash, and the SWAR search for `.` |
//! | `tests.rs` | tests of the index as a whole: the spec's examples, removal and churn, edge cases, a randomized differential test against a naive reference |
//!
//! Each structure's own unit tests sit in its file.

mod arena;
mod hash;
mod index;
mod label;
mod policy;
mod prefix;
mod wildcard;

#[cfg(test)]
mod tests;

pub use index::UriIndex;
pub use policy::MatchPolicy;
