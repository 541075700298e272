//! Properties of the fast inventory edits: whatever the layout, splicing entries gives the records
//! that parsing the whole document, editing it and writing it again gives, and on files broker
//! wrote itself, the very same text.

use std::path::Path;

use proptest::prelude::*;

use super::*;

const UPSTREAM_FILE: &str = include_str!("../../../tests/fixtures/upstream_inventory.yaml");

/// A value as people and PyYAML write it, some running over lines that read like entry starts,
/// identities or comments. `entry` and `anchors` name anchors so that later entries can alias them.
fn value(entry: usize) -> impl Strategy<Value = (String, Option<String>)> {
    let tricky = prop::sample::select(vec![
        "- second part",
        "  _broker_id: h1",
        "- _broker_id: h2",
        "_broker_id: h3",
        "  name: other",
        "# not a comment",
        "plain words",
        "key: value",
    ]);
    prop_oneof![
        1 => "[a-z][a-z0-9.-]{0,8}".prop_map(|w| (w, None)),
        1 => tricky
            .clone()
            .prop_map(|t| (format!("\"starts\n{t}\n  ends\""), None)),
        1 => tricky
            .clone()
            .prop_map(|t| (format!("'it''s\n{t}\n  ends'"), None)),
        1 => tricky
            .clone()
            .prop_map(|t| (format!("|\n    {}\n    more", t.trim()), None)),
        1 => tricky.prop_map(|t| (format!(">-\n    {}\n\n    more", t.trim()), None)),
        1 => (0u32..100).prop_map(|n| (format!("[a,\n    {n}]"), None)),
        1 => (0u32..10).prop_map(|n| (format!("{{image: rhel{n},\n    ports: {{'22': '2222'}}}}"), None)),
        1 => (0u32..10).prop_map(|n| (format!("\n    nested: {n}\n    deeper:\n      - x\n      - y"), None)),
        3 => (0u32..10).prop_map(move |n| {
            let name = format!("a{entry}x{n}");
            (format!("&{name} {{image: rhel{n}}}"), Some(name))
        }),
        1 => Just(("\"a & b\"".to_owned(), None)),
        1 => Just(("word # a trailing comment".to_owned(), None)),
        1 => prop_oneof![Just("~"), Just("null"), Just("true"), Just("'8.6'"), Just("8.6"), Just("0x1F")]
            .prop_map(|v| (v.to_owned(), None)),
        // PyYAML reads it; broker cannot (beyond 64 bits).
        1 => Just(("123456789012345678901234567890".to_owned(), None)),
    ]
}

/// One entry's lines (`key: value`), with anchors it defines.
#[derive(Debug, Clone)]
struct EntrySpec {
    lines: Vec<String>,
    anchors: Vec<String>,
    /// `-\n  key: …` instead of `- key: …`.
    dash_alone: bool,
    /// Indentation of the keys: 2 (PyYAML) or 4 (`-   key: …`).
    wide: bool,
    comment_after: bool,
    comment_inside: bool,
}

fn entry(n: usize) -> impl Strategy<Value = EntrySpec> {
    (
        prop::option::weighted(0.85, (1u8..5, any::<bool>())),
        prop::collection::vec(
            (
                prop::sample::select(vec!["name", "hostname", "note", "_broker_args"]),
                value(n),
            ),
            0..3,
        ),
        any::<bool>(),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.03),
        prop::bool::weighted(0.3),
        any::<prop::sample::Index>(),
    )
        .prop_map(
            move |(
                id,
                values,
                has_alias_slot,
                wide,
                comment_after,
                comment_inside,
                duplicate,
                dash_alone,
                rotate,
            )| {
                let mut lines = Vec::new();
                let mut anchors = Vec::new();
                if let Some((id, quoted)) = id {
                    lines.push(if quoted {
                        format!("_broker_id: 'h{id}'")
                    } else {
                        format!("_broker_id: h{id}")
                    });
                }
                lines.push("_broker_provider: P".to_owned());
                let mut keys = std::collections::HashSet::new();
                for (key, (text, anchor)) in values {
                    if keys.insert(key) {
                        lines.push(format!("{key}: {text}"));
                        anchors.extend(anchor);
                    }
                }
                if has_alias_slot {
                    lines.push("ALIAS".to_owned());
                }
                if duplicate {
                    lines.push("_broker_provider: Q".to_owned());
                }
                let shift = rotate.index(lines.len());
                lines.rotate_left(shift);
                EntrySpec {
                    lines,
                    anchors,
                    dash_alone,
                    wide,
                    comment_after,
                    comment_inside,
                }
            },
        )
}

/// How the whole file is laid out around its entries.
#[derive(Debug, Clone, Copy)]
enum Frame {
    Plain,
    Bom,
    CrLf,
    DocumentStart,
    Flow,
    /// No line end after the last line.
    NoFinalLineEnd,
    /// Lines ended by a lone CR (old Mac files), which YAML reads as line breaks.
    CrOnly,
}

/// An inventory as a person might leave it after editing it by hand.
fn hand_edited() -> impl Strategy<Value = String> {
    (
        (0usize..6).prop_flat_map(|n| (0..n).map(entry).collect::<Vec<_>>()),
        prop::bool::weighted(0.3),
        prop::sample::select(vec![
            Frame::Plain,
            Frame::Plain,
            Frame::Plain,
            Frame::Bom,
            Frame::CrLf,
            Frame::DocumentStart,
            Frame::Flow,
            Frame::NoFinalLineEnd,
            Frame::CrOnly,
        ]),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(entries, header, frame, pick)| {
            let mut text = String::new();
            if header {
                text.push_str("# hand-edited\n\n");
            }
            if matches!(frame, Frame::DocumentStart) {
                text.push_str("---\n");
            }
            if matches!(frame, Frame::Flow) {
                // The same records as flow mappings in one flow sequence.
                let items: Vec<String> = entries
                    .iter()
                    .map(|e| {
                        let fields: Vec<&str> = e
                            .lines
                            .iter()
                            .filter(|l| {
                                l.starts_with("_broker_id") || l.starts_with("_broker_provider")
                            })
                            .map(String::as_str)
                            .collect();
                        format!("{{{}}}", fields.join(", "))
                    })
                    .collect();
                text.push_str(&format!("[{}]\n", items.join(",\n ")));
                return text;
            }
            let mut anchors: Vec<String> = Vec::new();
            for e in &entries {
                let indent = if e.wide { "    " } else { "  " };
                let lines: Vec<String> = e
                    .lines
                    .iter()
                    .filter_map(|l| match l.as_str() {
                        "ALIAS" if anchors.is_empty() => None,
                        "ALIAS" => Some(format!("alias: *{}", anchors[pick.index(anchors.len())])),
                        _ => Some(l.replace("\n    ", &format!("\n{indent}  "))),
                    })
                    .collect();
                if e.dash_alone {
                    text.push_str("-\n");
                    text.push_str(indent);
                } else {
                    text.push_str(if e.wide { "-   " } else { "- " });
                }
                let mut body = lines.join(&format!("\n{indent}"));
                if e.comment_inside {
                    body.push_str(&format!("\n{indent}# a note inside"));
                }
                text.push_str(&body);
                text.push('\n');
                if e.comment_after {
                    text.push_str("# between entries\n");
                }
                anchors.extend(e.anchors.iter().cloned());
            }
            match frame {
                Frame::Bom => format!("\u{feff}{text}"),
                Frame::CrLf => text.replace('\n', "\r\n"),
                Frame::CrOnly => text.replace('\n', "\r"),
                // Ending in a block scalar, whose value depends on that line end.
                Frame::NoFinalLineEnd if !entries.is_empty() => {
                    format!("{}\n  tail: |\n    - last", text.trim_end_matches('\n'))
                }
                _ => text,
            }
        })
}

/// One change to the inventory.
#[derive(Debug, Clone)]
enum Edit {
    /// Put records: each with identity `h{n}` (or a fresh one) and a name.
    Put(Vec<(Option<u8>, String)>),
    /// Remove identities `h{n}` (`Ok`) or the identity of the n-th record (`Err`).
    Remove(Vec<Result<u8, usize>>),
}

fn edit() -> impl Strategy<Value = Edit> {
    let name = prop_oneof![
        "[a-z]{1,6}",
        Just("multi\nline\n- value".to_owned()),
        Just("&anchor *alias: #x".to_owned()),
        Just("- _broker_id: h1".to_owned()),
        any::<String>(),
    ];
    prop_oneof![
        prop::collection::vec((prop::option::weighted(0.8, 1u8..6), name), 0..3)
            .prop_map(Edit::Put),
        prop::collection::vec(
            prop_oneof![1 => (1u8..6).prop_map(Ok), 3 => (0usize..5).prop_map(Err)],
            0..3
        )
        .prop_map(Edit::Remove),
    ]
}

fn record(id: Option<u8>, name: &str) -> HostRecord {
    let mut record = HostRecord::pending("P", None, Default::default());
    if let Some(id) = id {
        record.set(fields::ID, format!("h{id}"));
    }
    record.set("name", name);
    record
}

/// The whole-document path: parse, edit the records, (the caller emits them).
fn edit_whole(
    path: &Path,
    text: &str,
    edit: &Edit,
    new: &[HostRecord],
) -> Result<(Vec<HostRecord>, Vec<RecordId>)> {
    let mut records = parse_inventory(path, text)?;
    let mut removed = Vec::new();
    match edit {
        Edit::Put(_) => {
            for record in new {
                match records.iter().position(|r| r.id() == record.id()) {
                    Some(i) => records[i] = record.clone(),
                    None => records.push(record.clone()),
                }
            }
        }
        Edit::Remove(_) => {
            let mut wanted: HashSet<RecordId> = ids_to_remove(edit, &records).into_iter().collect();
            records.retain(|r| {
                let id = r.id();
                if wanted.remove(&id) {
                    removed.push(id);
                    false
                } else {
                    true
                }
            });
        }
    }
    Ok((records, removed))
}

fn ids_to_remove(edit: &Edit, records: &[HostRecord]) -> Vec<RecordId> {
    match edit {
        Edit::Put(_) => Vec::new(),
        Edit::Remove(ids) => ids
            .iter()
            .map(|id| match id {
                Ok(n) => RecordId::from(format!("h{n}").as_str()),
                Err(i) => records
                    .get(*i)
                    .map(HostRecord::id)
                    .unwrap_or_else(|| RecordId::from("legacy-0000000000000000")),
            })
            .collect(),
    }
}

/// Runs `edit` through the store (fast path or fallback, as the store decides) and checks the file
/// against the whole-document path. Returns whether the fast path produced the text.
fn check_edit(text: &str, edit: &Edit) -> std::result::Result<bool, TestCaseError> {
    let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let path = dir.path().join("inventory.yaml");
    std::fs::write(&path, text).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let store = YamlFileStore::new(&path, Duration::from_secs(5));
    let new: Vec<HostRecord> = match edit {
        Edit::Put(items) => items.iter().map(|(id, name)| record(*id, name)).collect(),
        Edit::Remove(_) => Vec::new(),
    };
    let unbommed = crate::files::strip_bom(text);
    let whole = edit_whole(&path, text, edit, &new);
    let ids = match &whole {
        Ok(_) => ids_to_remove(edit, &parse_inventory(&path, text).unwrap_or_default()),
        Err(_) => ids_to_remove(edit, &[]),
    };
    let fast = match edit {
        Edit::Put(_) => put_fast(&path, unbommed, &new),
        Edit::Remove(_) => remove_fast(&path, unbommed, &ids).map(|o| o.map(|(text, _)| text)),
    };
    let done = match edit {
        Edit::Put(_) => store.put(&new).map(|()| Vec::new()),
        Edit::Remove(_) => store.remove(&ids),
    };
    let written = std::fs::read_to_string(&path).map_err(|e| TestCaseError::fail(e.to_string()))?;
    match whole {
        Err(_) => {
            // Broker cannot read it: nothing is written, by either path.
            prop_assert!(
                done.is_err(),
                "an unreadable file was edited:\n{text}\nto\n{written}"
            );
            prop_assert_eq!(&written, text);
            prop_assert!(
                !matches!(fast, Ok(Some(_))),
                "the fast path edited an unreadable file"
            );
            Ok(false)
        }
        Ok((expected, removed)) => {
            let done = done.map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
            prop_assert_eq!(done, removed, "removed ids of\n{}", text);
            let read = parse_inventory(&path, &written).map_err(|e| {
                TestCaseError::fail(format!("wrote an unreadable file ({e}):\n{written}"))
            })?;
            prop_assert_eq!(&read, &expected, "from\n{}\nwrote\n{}", text, written);
            match fast.map_err(|e| TestCaseError::fail(e.to_string()))? {
                Some(fast) => {
                    let read = parse_inventory(&path, &fast).map_err(|e| {
                        TestCaseError::fail(format!("fast edit unreadable ({e}):\n{fast}"))
                    })?;
                    prop_assert_eq!(&read, &expected, "fast edit of\n{}\nwrote\n{}", text, fast);
                    Ok(true)
                }
                None => Ok(false),
            }
        }
    }
}

/// Records as broker's writers make them, with values of every kind.
fn broker_records(ordinary: bool) -> impl Strategy<Value = Vec<HostRecord>> {
    let text = if ordinary {
        "[a-z0-9][a-z0-9.-]{0,10}".boxed()
    } else {
        any::<String>().boxed()
    };
    let value = prop_oneof![
        text.clone().prop_map(Value::String),
        any::<i64>().prop_map(Value::from),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
        prop::collection::vec(text.clone(), 0..3)
            .prop_map(|items| Value::Sequence(items.into_iter().map(Value::String).collect())),
    ];
    prop::collection::vec(
        (
            prop::option::weighted(0.8, 1u8..8),
            prop::collection::vec((text, value), 0..4),
        ),
        0..5,
    )
    .prop_map(|items| {
        items
            .into_iter()
            .map(|(id, extra)| {
                let mut record = record(id, "host");
                for (key, value) in extra {
                    record.set(&key, value);
                }
                record
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(crate::proptest_config(128))]

    #[test]
    fn fast_edits_of_hand_edited_files_read_back_as_the_whole_document_path(
        text in hand_edited(),
        edits in prop::collection::vec(edit(), 1..3),
    ) {
        let mut text = text;
        for edit in &edits {
            check_edit(&text, edit)?;
            // The next edit starts from what the store wrote.
            let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let path = dir.path().join("inventory.yaml");
            if let Ok((records, _)) = edit_whole(&path, &text, edit, &match edit {
                Edit::Put(items) => items.iter().map(|(id, name)| record(*id, name)).collect(),
                Edit::Remove(_) => Vec::new(),
            }) {
                text = serde_yaml::to_string(&records).map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
        }
    }

    #[test]
    fn fast_edits_of_the_python_brokers_file_read_back_as_the_whole_document_path(edit in edit()) {
        let fast = check_edit(UPSTREAM_FILE, &edit)?;
        // A put of records with identities never needs the whole document on this file, unless a
        // record holds a line break other than `\n`, which the fast path leaves to the whole-document
        // path on purpose (see `Blocks::split`).
        if let Edit::Put(items) = &edit {
            let all_named = items.iter().all(|(id, _)| id.is_some());
            let other_breaks = items
                .iter()
                .any(|(_, name)| name.contains(['\u{85}', '\u{2028}', '\u{2029}']));
            prop_assert!(
                fast || !all_named || other_breaks,
                "the fast path refused the upstream file"
            );
        }
    }

    #[test]
    fn fast_edits_of_files_broker_wrote_are_the_text_the_whole_document_path_writes(
        records in broker_records(true),
        edit in edit(),
    ) {
        let path = Path::new("inventory.yaml");
        let text = if records.is_empty() { "[]\n".to_owned() } else {
            serde_yaml::to_string(&records).map_err(|e| TestCaseError::fail(e.to_string()))?
        };
        let new: Vec<HostRecord> = match &edit {
            Edit::Put(items) => items.iter().map(|(id, name)| record(*id, name)).collect(),
            Edit::Remove(_) => Vec::new(),
        };
        let (expected, removed) = edit_whole(path, &text, &edit, &new)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let emitted = if expected.is_empty() { "[]\n".to_owned() } else {
            serde_yaml::to_string(&expected).map_err(|e| TestCaseError::fail(e.to_string()))?
        };
        let fast = match &edit {
            Edit::Put(_) => put_fast(path, &text, &new).map(|t| t.map(|t| (t, Vec::new()))),
            Edit::Remove(_) => remove_fast(path, &text, &ids_to_remove(&edit, &records)),
        }
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let uses_identities = match &edit {
            Edit::Put(items) => items.iter().all(|(id, _)| id.is_some()),
            Edit::Remove(ids) => ids.iter().all(Result::is_ok),
        };
        match fast {
            Some((fast, fast_removed)) => {
                prop_assert_eq!(fast, emitted);
                prop_assert_eq!(fast_removed, removed);
            }
            None => prop_assert!(!uses_identities, "the fast path refused broker's own file:\n{}", text),
        }
    }

    #[test]
    fn fast_edits_of_records_with_any_text_read_back_as_the_whole_document_path(
        records in broker_records(false),
        edit in edit(),
    ) {
        let text = if records.is_empty() { "[]\n".to_owned() } else {
            serde_yaml::to_string(&records).map_err(|e| TestCaseError::fail(e.to_string()))?
        };
        check_edit(&text, &edit)?;
    }
}
