//! Client-sent values in log lines: [`Clip`] truncates a value to
//! [`CLIP_CHARS`] characters (noting its full length) and escapes its control
//! characters, so a client can neither make one log line huge nor forge
//! another line. Use it at every log site that prints a value a client
//! chose (realm, authid, URIs, error messages, keys, ...):
//!
//! ```
//! use switchyard_router::logsafe::Clip;
//! let realm = "a\nb";
//! tracing::warn!(realm = %Clip(realm), "unknown realm");
//! assert_eq!(Clip(realm).to_string(), "a\\nb");
//! ```
//!
//! The log writer also escapes control characters and caps whole lines (a
//! backstop for a site that forgets); `Clip` keeps the line readable.

use std::fmt;

/// How many characters of a value [`Clip`] shows.
pub const CLIP_CHARS: usize = 128;

/// Displays a client-sent string truncated to [`CLIP_CHARS`] characters,
/// followed by `...(N bytes)` when longer, with control characters escaped.
#[derive(Clone, Copy)]
pub struct Clip<'a>(pub &'a str);

impl fmt::Display for Clip<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (shown, c) in self.0.chars().enumerate() {
            if shown == CLIP_CHARS {
                return write!(f, "...({} bytes)", self.0.len());
            }
            write_escaped(f, c)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Clip<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Whether `c` is escaped in logs: control characters (C0, DEL, C1), the
/// Unicode line and paragraph separators, and the invisible formatting
/// characters that make a line display other than it reads to a program
/// (bidirectional overrides, embeddings, isolates and marks, as in "Trojan
/// Source"; zero-width spaces, joiners and the BOM).
pub fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{061c}' // Arabic letter mark
                | '\u{200b}'..='\u{200f}' // zero-width space/(non-)joiner, LRM, RLM
                | '\u{202a}'..='\u{202e}' // LRE, RLE, PDF, LRO, RLO
                | '\u{2060}'..='\u{2064}' // word joiner, invisible operators
                | '\u{2066}'..='\u{2069}' // LRI, RLI, FSI, PDI
                | '\u{feff}' // zero-width no-break space (BOM)
        )
}

/// Writes `c`, escaped as `\n`, `\r`, `\t` or `\u{..}` when
/// [`needs_escape`].
pub fn write_escaped(f: &mut impl fmt::Write, c: char) -> fmt::Result {
    match c {
        '\n' => f.write_str("\\n"),
        '\r' => f.write_str("\\r"),
        '\t' => f.write_str("\\t"),
        c if needs_escape(c) => write!(f, "\\u{{{:x}}}", c as u32),
        c => f.write_char(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_shown_whole_and_escaped() {
        assert_eq!(Clip("realm1").to_string(), "realm1");
        assert_eq!(
            Clip("a\nb\rc\td\u{1b}[31m\u{7f}\u{85}\u{2028}").to_string(),
            "a\\nb\\rc\\td\\u{1b}[31m\\u{7f}\\u{85}\\u{2028}"
        );
        assert_eq!(
            Clip("a\u{202e}b\u{200b}c\u{2066}d\u{feff}é").to_string(),
            "a\\u{202e}b\\u{200b}c\\u{2066}d\\u{feff}é"
        );
        assert_eq!(format!("{:?}", Clip("x\ny")), "\"x\\ny\"");
    }

    #[test]
    fn long_values_are_truncated_with_their_length() {
        let long = "é".repeat(1000);
        let shown = Clip(&long).to_string();
        assert!(shown.starts_with(&"é".repeat(CLIP_CHARS)));
        assert!(shown.ends_with("...(2000 bytes)"), "{shown}");
        assert_eq!(Clip(&"x".repeat(CLIP_CHARS)).to_string().len(), CLIP_CHARS);
    }
}
