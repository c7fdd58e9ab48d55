//! `Label`: the bytes of a trie edge (a radix label of the prefix trie,
//! a component of the wildcard trie), inline when short.

/// Bytes stored inline when short (radix edge labels, wildcard trie
/// components), so that following an edge does not cost an extra cache
/// miss.
#[derive(Clone)]
pub(super) enum Label {
    Inline(u8, [u8; INLINE_LABEL]),
    Heap(Box<[u8]>),
}

pub(super) const INLINE_LABEL: usize = 22;

impl Label {
    pub(super) fn new(bytes: &[u8]) -> Self {
        match u8::try_from(bytes.len()) {
            Ok(len) if bytes.len() <= INLINE_LABEL => {
                let mut buf = [0u8; INLINE_LABEL];
                buf[..bytes.len()].copy_from_slice(bytes);
                Label::Inline(len, buf)
            }
            _ => Label::Heap(bytes.into()),
        }
    }

    pub(super) fn bytes(&self) -> &[u8] {
        match self {
            Label::Inline(len, buf) => buf.get(..usize::from(*len)).unwrap_or_default(),
            Label::Heap(b) => b,
        }
    }
}
