//! Entry points for the fuzz targets under `fuzz/` (feature `fuzzing`; not part of the API).
//!
//! Each takes arbitrary bytes and panics only when broker is wrong: the parsers may refuse the
//! input, but never panic on it, and what they accept must behave as documented. The same functions
//! replay the checked-in corpus (`fuzz/corpus/`) in the unit tests, so a fixed bug stays fixed.

use std::path::Path;

use crate::filter::Filter;
use crate::inventory::{emit_records, parse_inventory, put_fast, remove_fast};
use crate::record::{HostRecord, RecordId, fields};
use crate::settings::Settings;

/// The filter parser and evaluator: text that parses prints as text that parses to the same filter,
/// errors point inside the text, and evaluation never panics.
pub fn filter(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Filter::parse(text, "inv") {
        Ok(filter) => {
            let printed = filter.to_string();
            assert_eq!(
                Filter::parse(&printed, "inv").as_ref(),
                Ok(&filter),
                "{text:?} printed as {printed:?}"
            );
            let items: Vec<serde_yaml::Value> = serde_yaml::from_str(
                "[{name: a, n: 1, l: [x, '2'], m: {k: v}}, {name: B, n: 2.5}, {}, x, 7, [1]]",
            )
            .unwrap_or_default();
            let selected = filter.select(&items);
            assert!(selected.iter().all(|i| *i < items.len()), "{selected:?}");
        }
        Err(e) => {
            let end = text.chars().count() + 1;
            assert!((1..=end).contains(&e.column()), "{text:?}: {e}");
        }
    }
}

/// The inventory reader and the fast edits. The first byte chooses an edit (bit 7: remove, else
/// put; bits 0–2: the identity `h0`…`h7`); the rest is the file. A file the reader refuses is never
/// edited; on one it reads, a fast edit reads back as the whole-document path's records, and what
/// broker writes reads back as what it wrote.
pub fn inventory(data: &[u8]) {
    let Some((&op, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let path = Path::new("inventory.yaml");
    let text = crate::files::strip_bom(text);
    let parsed = parse_inventory(path, text);
    let id = RecordId::from(format!("h{}", op & 7).as_str());
    let remove = op & 0x80 != 0;
    let mut record = HostRecord::pending("P", None, Default::default());
    record.set(fields::ID, id.as_str());
    record.set("name", "- multi\nline: value");
    let fast = if remove {
        remove_fast(path, text, std::slice::from_ref(&id))
    } else {
        put_fast(path, text, std::slice::from_ref(&record)).map(|o| o.map(|t| (t, Vec::new())))
    };
    let Ok(mut records) = parsed else {
        assert!(
            !matches!(fast, Ok(Some(_))),
            "the fast path edited a file the reader refuses"
        );
        return;
    };
    // What broker writes reads back as what it wrote, or writing fails with an error.
    if let Ok(written) = emit_records(path, &records) {
        let reread = parse_inventory(path, &written);
        assert!(
            reread.as_ref().ok() == Some(&records),
            "written records read back differently ({:?}):\n{written}",
            reread.err().map(|e| e.to_string())
        );
    }
    let mut removed = Vec::new();
    if remove {
        if let Some(i) = records.iter().position(|r| r.id() == id) {
            removed.push(records.remove(i).id());
        }
    } else {
        match records.iter().position(|r| r.id() == id) {
            Some(i) => records[i] = record,
            None => records.push(record),
        }
    }
    match fast {
        Ok(Some((out, fast_removed))) => {
            assert_eq!(fast_removed, removed, "{text}");
            let read = parse_inventory(path, &out);
            assert!(
                read.as_ref().ok() == Some(&records),
                "the fast edit of\n{text}\nwrote\n{out}\nwhich reads as {read:?}"
            );
        }
        // The whole-document path takes over; only writing can fail (not here: nothing is written).
        Ok(None) => {}
        Err(e) => panic!("the fast path failed on a file the reader accepts: {e}"),
    }
}

/// Settings loading: the file (the input up to a NUL byte) and environment overrides (the lines
/// after it, `BROKER_…=value`) load or fail with an error; what loads answers every getter without
/// panicking.
pub fn settings(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (yaml, env) = text.split_once('\0').unwrap_or((text, ""));
    let env: Vec<(String, String)> = env
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    if std::fs::write(dir.path().join("broker_settings.yaml"), yaml).is_err() {
        return;
    }
    let Ok(settings) = Settings::load_from(dir.path(), env) else {
        return;
    };
    let _ = format!("{settings:?}");
    let _ = settings.masked();
    let _ = settings.checkin_timeout();
    let _ = settings.cancel_timeout();
    let _ = settings.keep_on_failure();
    let _ = settings.inventory_lock_timeout();
    let _ = settings.inventory_fields();
    let _ = settings.thread_limit();
    let _ = settings.provider_labels();
    for nick in settings.nicks() {
        let _ = settings.nick(&nick);
    }
    for provider in ["Container", "AnsibleTower", "TestProvider", "container"] {
        for instance in settings.provider_instances(provider) {
            let _ = settings.provider_config(provider, Some(&instance));
        }
        let _ = settings.provider_config(provider, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays every checked-in corpus input through its target.
    #[test]
    fn the_fuzz_corpus_replays_without_a_failure() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        let mut replayed = 0;
        for (target, run) in [
            ("filter", filter as fn(&[u8])),
            ("inventory", inventory),
            ("settings", settings),
        ] {
            let dir = root.join(target);
            let mut inputs: Vec<_> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .map(|entry| entry.expect("a corpus entry").path())
                .collect();
            inputs.sort();
            assert!(inputs.len() >= 3, "{} holds too few inputs", dir.display());
            for input in inputs {
                let data = std::fs::read(&input).expect("a readable corpus input");
                let outcome = std::panic::catch_unwind(|| run(&data));
                assert!(outcome.is_ok(), "{} fails", input.display());
                replayed += 1;
            }
        }
        assert!(replayed >= 9);
    }
}
