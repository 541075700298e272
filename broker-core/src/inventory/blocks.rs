//! The inventory file as text: its top-level entries, for fast edits and parallel parsing.
//!
//! An inventory written by broker or by the Python broker is a YAML block sequence at column 0: every
//! entry starts with a line `- …` and runs until the next such line. Adding a record appends one
//! entry's text; replacing or removing a record of broker's own finds its entry by the unique line
//! `_broker_id: h…` and splices it. Nothing else in the file is touched, so a 5,000-host inventory is
//! rewritten in milliseconds instead of being parsed and re-emitted.
//!
//! Whenever the text is not plainly such a sequence (flow style, document markers, anything at column
//! 0 that is not an entry or a comment), or an identity is not found, callers fall back to parsing the
//! whole document: this module is only ever a shortcut.

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
        let trimmed = text.trim();
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

    /// The entry holding the top-level key `_broker_id: <id>`.
    pub(crate) fn find_id(&self, id: &str) -> Option<usize> {
        let first = format!("- _broker_id: {id}");
        let inner = format!("\n  _broker_id: {id}");
        self.entries.iter().position(|range| {
            let entry = &self.text[range.clone()];
            line_match(entry, &first, 0)
                || entry
                    .match_indices(&inner)
                    .any(|(at, m)| ends_line(entry, at + m.len()))
        })
    }

    /// The text with entries replaced (`Some(text)`) or removed (`None`) and `appended` entries at
    /// the end. `edits` maps entry positions to their new text.
    pub(crate) fn rewrite(&self, edits: &[(usize, Option<String>)], appended: &[String]) -> String {
        let mut out = String::with_capacity(
            self.text.len() + appended.iter().map(String::len).sum::<usize>(),
        );
        out.push_str(&self.text[self.header.clone()]);
        for (i, range) in self.entries.iter().enumerate() {
            match edits.iter().find(|(at, _)| *at == i) {
                Some((_, Some(new))) => push_entry(&mut out, new),
                Some((_, None)) => {}
                None => push_entry(&mut out, &self.text[range.clone()]),
            }
        }
        for entry in appended {
            push_entry(&mut out, entry);
        }
        if out.trim().is_empty() {
            return "[]\n".to_owned();
        }
        out
    }

    /// Contiguous slices of whole entries, about `parts` of them, for parsing in parallel. The header
    /// goes with the first slice.
    pub(crate) fn chunks(&self, parts: usize) -> Vec<&'t str> {
        let parts = parts.clamp(1, self.entries.len().max(1));
        let per = self.entries.len().div_ceil(parts);
        self.entries
            .chunks(per.max(1))
            .enumerate()
            .map(|(n, group)| {
                let start = if n == 0 { 0 } else { group[0].start };
                let end = group.last().map(|r| r.end).unwrap_or(start);
                &self.text[start..end]
            })
            .collect()
    }
}

fn line_match(entry: &str, needle: &str, at: usize) -> bool {
    entry[at..].starts_with(needle) && ends_line(entry, at + needle.len())
}

fn ends_line(text: &str, at: usize) -> bool {
    matches!(text.as_bytes().get(at), None | Some(b'\n' | b'\r'))
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
    fn splits_entries_and_finds_identities() {
        let blocks = Blocks::split(TEXT).unwrap();
        assert_eq!(blocks.entries.len(), 3);
        assert_eq!(blocks.find_id("h1"), Some(0));
        assert_eq!(blocks.find_id("h2"), Some(1));
        assert_eq!(blocks.find_id("h9"), None, "nested keys are not identities");
        assert_eq!(blocks.find_id("h"), None, "identities match whole lines");
    }

    #[test]
    fn rewrite_replaces_removes_and_appends() {
        let blocks = Blocks::split(TEXT).unwrap();
        let out = blocks.rewrite(
            &[(0, None), (1, Some("- name: B\n".into()))],
            &["- name: d".into()],
        );
        assert_eq!(out, "# kept\n- name: B\n-\n  name: c\n- name: d\n");
        let parsed: serde_yaml::Value = serde_yaml::from_str(&out).unwrap();
        assert_eq!(parsed.as_sequence().unwrap().len(), 3);
    }

    #[test]
    fn empty_documents_become_a_list() {
        for text in ["", "[]\n", "  \n"] {
            let blocks = Blocks::split(text).unwrap();
            assert_eq!(blocks.rewrite(&[], &["- a: 1\n".into()]), "- a: 1\n");
            assert_eq!(blocks.rewrite(&[], &[]), "[]\n");
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
        ] {
            assert!(Blocks::split(text).is_none(), "{text:?}");
        }
    }

    #[test]
    fn chunks_cover_the_text_exactly() {
        let blocks = Blocks::split(TEXT).unwrap();
        for parts in 1..5 {
            assert_eq!(blocks.chunks(parts).concat(), TEXT);
        }
    }
}
