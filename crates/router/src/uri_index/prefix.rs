//! `PrefixTrie`: the prefix entries, a radix tree over bytes. A lookup
//! walks the URI's bytes once; every node passed that holds an entry is a
//! matching prefix, the deepest is the longest. Removal merges nodes back.

use super::arena::{Arena, Leaf, NONE, ROOT};
use super::label::{Label, INLINE_LABEL};

#[derive(Clone)]
pub(super) struct PNode<T> {
    /// Bytes on the edge from the parent (non-empty except for the root).
    pub(super) label: Label,
    pub(super) parent: usize,
    /// `(first byte of the child's label, child)`, sorted by byte.
    pub(super) children: Vec<(u8, usize)>,
    pub(super) leaf: Option<Leaf<T>>,
}

impl<T> PNode<T> {
    pub(super) fn vacant() -> Self {
        PNode {
            label: Label::Inline(0, [0; INLINE_LABEL]),
            parent: NONE,
            children: Vec::new(),
            leaf: None,
        }
    }
}

#[derive(Clone)]
pub(super) struct PrefixTrie<T> {
    pub(super) arena: Arena<PNode<T>>,
    pub(super) len: usize,
}

impl<T> PrefixTrie<T> {
    pub(super) fn new() -> Self {
        PrefixTrie {
            arena: Arena::new(PNode::vacant()),
            len: 0,
        }
    }

    /// `Ok(position)` of the child whose label starts with `b`, else
    /// `Err(insertion position)`.
    pub(super) fn child_slot(&self, node: usize, b: u8) -> Result<usize, usize> {
        self.arena[node]
            .children
            .binary_search_by_key(&b, |&(k, _)| k)
    }

    pub(super) fn child(&self, node: usize, b: u8) -> Option<usize> {
        let children = &self.arena[node].children;
        match children.binary_search_by_key(&b, |&(k, _)| k) {
            Ok(i) => children.get(i).map(|&(_, c)| c),
            Err(_) => None,
        }
    }

    /// The node whose path spells exactly `key`, if any.
    pub(super) fn find(&self, key: &[u8]) -> Option<usize> {
        let mut node = ROOT;
        let mut rest = key;
        while let Some(&b) = rest.first() {
            let c = self.child(node, b)?;
            rest = rest.strip_prefix(self.arena[c].label.bytes())?;
            node = c;
        }
        Some(node)
    }

    pub(super) fn get(&self, pattern: &str) -> Option<&Leaf<T>> {
        let node = self.find(pattern.as_bytes())?;
        self.arena[node].leaf.as_ref()
    }

    pub(super) fn get_mut(&mut self, pattern: &str) -> Option<&mut Leaf<T>> {
        let node = self.find(pattern.as_bytes())?;
        self.arena[node].leaf.as_mut()
    }

    pub(super) fn insert(&mut self, pattern: &str, value: T) -> Option<T> {
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

    pub(super) fn set_leaf(&mut self, node: usize, pattern: &str, value: T) -> Option<T> {
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
        let node = self.find(pattern.as_bytes())?;
        let leaf = self.arena[node].leaf.take()?;
        self.len -= 1;
        self.compact(node);
        Some(leaf.value)
    }

    /// Restores the radix invariants upwards from `node`, which just lost
    /// its entry or a child: entry-less leaves are freed, entry-less nodes
    /// with a single child are merged into that child.
    pub(super) fn compact(&mut self, mut node: usize) {
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
    pub(super) fn visit<'a>(&'a self, uri: &str, mut f: impl FnMut(&'a Leaf<T>)) {
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
    pub(super) fn longest(&self, uri: &str) -> Option<&Leaf<T>> {
        let mut best = None;
        self.visit(uri, |leaf| best = Some(leaf));
        best
    }
}
