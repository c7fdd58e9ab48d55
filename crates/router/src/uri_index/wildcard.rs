//! `WildcardTrie`: the wildcard entries, a component trie. Each node has
//! one optional wildcard child and any number of concrete children, whose
//! edges share one hash table keyed by `(parent, component)`. A lookup is an
//! iterative depth-first search, concrete child before wildcard child, so
//! the first complete match is the Dealer's best; it memoises component
//! bounds and hashes and keeps its pending branches on the stack.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::ops::ControlFlow;

use super::arena::{Arena, Leaf, NONE, ROOT};
use super::hash::{edge_hash, find_dot, CompHasher, PreHashed};
use super::label::Label;

#[derive(Clone)]
pub(super) struct WNode<T> {
    pub(super) parent: usize,
    /// Child for an empty (wildcard) component, or `NONE`.
    pub(super) wild: usize,
    /// Number of concrete children (edges in `WildcardTrie::edges`).
    pub(super) concrete: usize,
    pub(super) leaf: Option<Leaf<T>>,
}

impl<T> WNode<T> {
    pub(super) fn vacant() -> Self {
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
pub(super) struct Edge {
    pub(super) parent: usize,
    pub(super) comp: Label,
    pub(super) child: usize,
}

/// The edges sharing one 64-bit edge hash: almost always exactly one.
#[derive(Clone)]
pub(super) enum EdgeSlot {
    One(Edge),
    Many(Vec<Edge>),
}

#[derive(Clone)]
pub(super) struct WildcardTrie<T> {
    pub(super) arena: Arena<WNode<T>>,
    /// Concrete edges of all nodes, keyed by `edge_hash`.
    pub(super) edges: HashMap<u64, EdgeSlot, BuildHasherDefault<PreHashed>>,
    pub(super) hasher: CompHasher,
    pub(super) len: usize,
}

/// Pending branch of the wildcard search: `node` reached after `depth`
/// components; `start` is the byte offset of the next URI component, or
/// `END` once the URI is exhausted.
#[derive(Clone, Copy, Default)]
pub(super) struct Frame {
    pub(super) node: usize,
    pub(super) depth: usize,
    pub(super) start: usize,
}

pub(super) const END: usize = usize::MAX;

/// Fixed buffer sizes of a wildcard lookup: components whose end / hash
/// are memoised, and pending branches held without allocating.
pub(super) const MEMO: usize = 16;

/// Per-lookup memo of URI component boundaries and hashes (a component may
/// be looked up under several nodes at the same depth).
pub(super) struct Components<'u> {
    pub(super) uri: &'u str,
    pub(super) ends: [usize; MEMO],
    pub(super) ends_len: usize,
    pub(super) hashes: [u64; MEMO],
    pub(super) hashed: u32,
}

impl<'u> Components<'u> {
    pub(super) fn new(uri: &'u str) -> Self {
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
    pub(super) fn end(&mut self, depth: usize, start: usize) -> usize {
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

    pub(super) fn hash(&mut self, depth: usize, comp: &str, hasher: &CompHasher) -> u64 {
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
pub(super) struct Stack<E: Copy + Default, const N: usize> {
    pub(super) buf: [E; N],
    pub(super) len: usize,
    pub(super) spill: Vec<E>,
}

impl<E: Copy + Default, const N: usize> Stack<E, N> {
    pub(super) fn new() -> Self {
        Stack {
            buf: [E::default(); N],
            len: 0,
            spill: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, e: E) {
        match self.buf.get_mut(self.len) {
            Some(slot) if self.spill.is_empty() => {
                *slot = e;
                self.len += 1;
            }
            _ => self.spill.push(e),
        }
    }

    pub(super) fn pop(&mut self) -> Option<E> {
        if let Some(e) = self.spill.pop() {
            return Some(e);
        }
        self.len = self.len.checked_sub(1)?;
        self.buf.get(self.len).copied()
    }
}

impl<T> WildcardTrie<T> {
    pub(super) fn new() -> Self {
        WildcardTrie {
            arena: Arena::new(WNode::vacant()),
            edges: HashMap::default(),
            hasher: CompHasher::new(),
            len: 0,
        }
    }

    /// The child of `parent` for the concrete component `comp`.
    pub(super) fn edge(&self, parent: usize, comp: &str, comp_hash: u64) -> Option<usize> {
        let matches = |e: &Edge| e.parent == parent && e.comp.bytes() == comp.as_bytes();
        match self.edges.get(&edge_hash(comp_hash, parent))? {
            EdgeSlot::One(e) => matches(e).then_some(e.child),
            EdgeSlot::Many(v) => v.iter().find(|e| matches(e)).map(|e| e.child),
        }
    }

    pub(super) fn add_edge(&mut self, parent: usize, comp: &str, comp_hash: u64, child: usize) {
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

    pub(super) fn remove_edge(&mut self, parent: usize, comp: &str, comp_hash: u64) {
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
    pub(super) fn find(&self, pattern: &str) -> Option<usize> {
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

    pub(super) fn get(&self, pattern: &str) -> Option<&Leaf<T>> {
        let node = self.find(pattern)?;
        self.arena[node].leaf.as_ref()
    }

    pub(super) fn get_mut(&mut self, pattern: &str) -> Option<&mut Leaf<T>> {
        let node = self.find(pattern)?;
        self.arena[node].leaf.as_mut()
    }

    pub(super) fn insert(&mut self, pattern: &str, value: T) -> Option<T> {
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

    pub(super) fn remove(&mut self, pattern: &str) -> Option<T> {
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
    pub(super) fn visit<'a>(
        &'a self,
        uri: &str,
        mut f: impl FnMut(&'a Leaf<T>) -> ControlFlow<()>,
    ) {
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
    pub(super) fn best(&self, uri: &str) -> Option<&Leaf<T>> {
        let mut best = None;
        self.visit(uri, |leaf| {
            best = Some(leaf);
            ControlFlow::Break(())
        });
        best
    }
}
