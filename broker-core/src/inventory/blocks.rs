//! The inventory file as text: its top-level entries, for fast edits and parallel parsing.
//!
//! An inventory written by broker or by the Python broker is a YAML block sequence at column 0: every
//! entry starts with a line `- …` and runs until the next such line. Adding a record appends one
//! entry's text; replacing or removing a record splices its entry. Nothing else in the file is
//! touched, so a 5,000-host inventory is rewritten without re-emitting 5,000 hosts.
//!
//! This module only cuts text at lines; it knows nothing of YAML beyond that. A line `- …` at column
//! 0 may also continue a quoted string of the entry before, so the caller must check that the pieces
//! parse as one record each before trusting them (`Entries` in the parent module). Whenever the text
//! is not plainly such a sequence (flow style, document markers, anything at column 0 that is not an
//! entry or a comment), callers fall back to parsing the whole document: this module is only ever a
//! shortcut.

use std::ops::Range;

/// The top-level entries of a block-sequence document.
#[derive(Debug)]
pub(crate) struct Blocks<'t> {
    text: &'t str,
    /// Text before the first entry (comments), kept as it is.
    header: Range<usize>,
    entries: Vec<Range<usize>>,
}

impl<'t> Blocks<'t> {
    /// Splits `text`, or `None` when it is not plainly a block sequence at column 0.
    pub(crate) fn split(text: &'t str) -> Option<Self> {
        // YAML also breaks lines at these; this module cuts at `\n` only.
        let other_break = |(i, c): (usize, char)| match c {
            '\r' => text.as_bytes().get(i + 1) != Some(&b'\n'),
            '\u{85}' | '\u{2028}' | '\u{2029}' => true,
            _ => false,
        };
        if text.char_indices().any(other_break) {
            return None;
        }
        let trimmed = yaml_trim(text);
        if trimmed.is_empty() || trimmed == "[]" {
            return Some(Blocks {
                text,
                header: 0..0,
                entries: Vec::new(),
            });
        }
        let mut entries: Vec<Range<usize>> = Vec::new();
        let mut header_end = None;
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            let start = offset;
            offset += line.len();
            let content = line.trim_end_matches(['\n', '\r']);
            let first = content.as_bytes().first().copied();
            match first {
                None => {}
                Some(b'#') => {}
                Some(b'-') if content.starts_with("---") => return None,
                Some(b'-')
                    if content.len() == 1 || matches!(content.as_bytes()[1], b' ' | b'\t') =>
                {
                    if let Some(last) = entries.last_mut() {
                        last.end = start;
                    } else {
                        header_end = Some(start);
                    }
                    entries.push(start..text.len());
                }
                Some(b' ' | b'\t')
                    if entries.is_empty()
                        && !content.trim_start().is_empty()
                        && !content.trim_start().starts_with('#') =>
                {
                    return None;
                }
                Some(b' ' | b'\t') => {}
                Some(_) => return None,
            }
        }
        if entries.is_empty() {
            return None;
        }
        Some(Blocks {
            text,
            header: 0..header_end.unwrap_or(0),
            entries,
        })
    }

    /// How many entries there are.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The text of entry `i`.
    pub(crate) fn entry(&self, i: usize) -> &'t str {
        &self.text[self.entries[i].clone()]
    }

    /// The text before the first entry.
    pub(crate) fn header(&self) -> &'t str {
        &self.text[self.header.clone()]
    }

    /// The header followed by `entries` (each ending a line); `[]` when that leaves nothing.
    pub(crate) fn rewrite(&self, entries: &[&str]) -> String {
        let mut out = String::with_capacity(
            self.header.len() + entries.iter().map(|e| e.len() + 1).sum::<usize>(),
        );
        out.push_str(self.header());
        for entry in entries {
            push_entry(&mut out, entry);
        }
        if yaml_trim(&out).is_empty() {
            return "[]\n".to_owned();
        }
        out
    }

    /// Contiguous slices of whole entries, about `parts` of them, each with its number of entries.
    /// The header goes with the first slice.
    pub(crate) fn groups(&self, parts: usize) -> Vec<(usize, &'t str)> {
        if self.entries.is_empty() {
            return Vec::new();
        }
        let parts = parts.clamp(1, self.entries.len());
        let per = self.entries.len().div_ceil(parts);
        self.entries
            .chunks(per)
            .enumerate()
            .map(|(n, group)| {
                let start = if n == 0 { 0 } else { group[0].start };
                let end = group.last().map(|r| r.end).unwrap_or(start);
                (group.len(), &self.text[start..end])
            })
            .collect()
    }

    /// Contiguous slices of whole entries, about `parts` of them, for parsing in parallel. The header
    /// goes with the first slice.
    pub(crate) fn chunks(&self, parts: usize) -> Vec<&'t str> {
        self.groups(parts)
            .into_iter()
            .map(|(_, text)| text)
            .collect()
    }
}

/// `text` without the white space YAML knows (Rust's `trim` also takes a form feed or a Unicode
/// space for one, which YAML reads as text).
pub(crate) fn yaml_trim(text: &str) -> &str {
    text.trim_matches([' ', '\t', '\r', '\n'])
}

fn push_entry(out: &mut String, entry: &str) {
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(entry);
    if !out.ends_with('\n') {
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# kept\n- _broker_id: h1\n  name: a\n- name: b\n  _broker_id: h2\n  nested:\n    _broker_id: h9\n-\n  name: c\n";

    #[test]
    fn splits_entries_at_column_zero() {
        let blocks = Blocks::split(TEXT).unwrap();
        assert_eq!(blocks.len(), 3);
        assert_eq!(blocks.header(), "# kept\n");
        assert_eq!(blocks.entry(0), "- _broker_id: h1\n  name: a\n");
        assert_eq!(blocks.entry(2), "-\n  name: c\n");
    }

    #[test]
    fn rewrite_keeps_the_header_and_ends_every_entry() {
        let blocks = Blocks::split(TEXT).unwrap();
        let out = blocks.rewrite(&["- name: B\n", blocks.entry(2), "- name: d"]);
        assert_eq!(out, "# kept\n- name: B\n-\n  name: c\n- name: d\n");
        let parsed: serde_yaml::Value = serde_yaml::from_str(&out).unwrap();
        assert_eq!(parsed.as_sequence().unwrap().len(), 3);
    }

    #[test]
    fn empty_documents_become_a_list() {
        for text in ["", "[]\n", "  \n"] {
            let blocks = Blocks::split(text).unwrap();
            assert_eq!(blocks.rewrite(&["- a: 1\n"]), "- a: 1\n");
            assert_eq!(blocks.rewrite(&[]), "[]\n");
        }
    }

    #[test]
    fn other_shapes_are_refused() {
        for text in [
            "[{a: 1}]\n",
            "---\n- a: 1\n",
            "a: 1\n",
            "  - a: 1\n",
            "- a: 1\n...\n",
            "- a: 1\r...\n",
            "- a: 1\u{2028}...\n",
            "[]\x0c",
            "-a: 1\n",
            "- a: 1\n-b\n",
            "  a: 1\n- b: 2\n",
        ] {
            assert!(Blocks::split(text).is_none(), "{text:?}");
        }
    }

    #[test]
    fn crlf_line_ends_are_cut_like_lf() {
        let blocks = Blocks::split("- a: 1\r\n- b: 2\r\n").unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks.entry(1), "- b: 2\r\n");
    }

    #[test]
    fn chunks_cover_the_text_exactly() {
        let blocks = Blocks::split(TEXT).unwrap();
        for parts in 1..5 {
            assert_eq!(blocks.chunks(parts).concat(), TEXT);
            let counted: usize = blocks.groups(parts).iter().map(|(n, _)| n).sum();
            assert_eq!(counted, 3);
        }
    }
}
