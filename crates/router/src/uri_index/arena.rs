//! The arena both tries keep their nodes in: a `Vec` addressed by index
//! with a free list, so that no node owns another (dropping a deep trie
//! built from hostile patterns cannot overflow the stack) and freed slots
//! are reused; and `Leaf`, a stored entry.

use std::ops::{Index, IndexMut};

/// Index of the root node in both arenas; roots are never freed.
pub(super) const ROOT: usize = 0;
/// "No node".
pub(super) const NONE: usize = usize::MAX;

/// A stored entry: the full pattern (for `iter`/`matches`) and its value.
#[derive(Clone)]
pub(super) struct Leaf<T> {
    pub(super) pattern: Box<str>,
    pub(super) value: T,
}

/// Nodes in a `Vec`, addressed by index, with a free list. Node 0 is the
/// root. No recursive ownership, so dropping a deep trie cannot overflow
/// the stack.
#[derive(Clone)]
pub(super) struct Arena<N> {
    pub(super) nodes: Vec<N>,
    pub(super) free: Vec<usize>,
}

impl<N> Arena<N> {
    pub(super) fn new(root: N) -> Self {
        Arena {
            nodes: vec![root],
            free: Vec::new(),
        }
    }

    /// Live nodes, root excluded.
    pub(super) fn live(&self) -> usize {
        self.nodes.len() - 1 - self.free.len()
    }

    pub(super) fn alloc(&mut self, node: N) -> usize {
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
    pub(super) fn release(&mut self, i: usize, vacant: N) {
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
