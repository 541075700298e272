//! The inventory file as people and the Python broker leave it: hand-written layouts, files broker
//! cannot read, deleted lock files, and syncs that would empty it.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::util::{BrokerDir, SETTINGS, stderr};

fn names(dir: &BrokerDir) -> Vec<String> {
    dir.inventory()
        .iter()
        .map(|r| r["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A quoted string continued on a line that starts with `- ` (valid YAML, as PyYAML writes and reads
/// it): checking in the entry above must leave a file every later command can read.
#[test]
fn checkin_0_after_a_quoted_string_continued_on_a_dash_line_keeps_the_file_readable() {
    let dir = BrokerDir::new(SETTINGS);
    std::fs::write(
        dir.inventory_path(),
        "- _broker_id: h1\n  _broker_provider: TestProvider\n  name: \"first part\n- second part\"\n\
         - _broker_id: h2\n  _broker_provider: TestProvider\n  name: b\n",
    )
    .unwrap();
    assert_eq!(names(&dir), ["first part - second part", "b"]);
    dir.ok(&["checkin", "0"]);
    assert_eq!(names(&dir), ["b"]);
}

/// A continuation line that reads `  _broker_id: h1` inside h2's quoted string: checking in h1 must
/// remove h1's record, not h2's.
#[test]
fn checkin_of_h1_leaves_h2_whose_string_mentions_h1() {
    let dir = BrokerDir::new(SETTINGS);
    std::fs::write(
        dir.inventory_path(),
        "- _broker_id: h2\n  _broker_provider: TestProvider\n  name: two\n  note: \"starts here\n  \
         _broker_id: h1\n  ends here\"\n- _broker_id: h1\n  _broker_provider: TestProvider\n  name: one\n",
    )
    .unwrap();
    assert_eq!(names(&dir), ["two", "one"]);
    dir.ok(&["checkin", "one"]);
    assert_eq!(names(&dir), ["two"]);
}

/// An inventory broker cannot read back (a duplicate key; an integer beyond 64 bits, which PyYAML
/// reads): `checkout` fails before any host is made, naming file, line and column.
#[test]
fn checkout_into_an_inventory_broker_cannot_read_makes_no_host() {
    for (text, line) in [
        (
            "- _broker_id: h1\n  _broker_provider: TestProvider\n  name: a\n  name: b\n",
            4,
        ),
        (
            "- _broker_provider: TestProvider\n  name: a\n  disk: 123456789012345678901234567890\n",
            3,
        ),
    ] {
        let dir = BrokerDir::new(SETTINGS);
        std::fs::write(dir.inventory_path(), text).unwrap();
        let out = dir.run(&["checkout", "--test_action", "basic"]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("inventory.yaml` at line {line}, column")),
            "{}",
            stderr(&out)
        );
        assert!(dir.provider_hosts().is_empty(), "a host was made");
        assert_eq!(std::fs::read_to_string(dir.inventory_path()).unwrap(), text);
    }
}

/// Users of the Python broker delete lock files by habit: 8 processes × 4 checkouts while the lock
/// file is deleted in a loop lose no record.
#[test]
fn deleting_the_lock_file_while_processes_check_out_loses_nothing() {
    const WORKERS: usize = 8;
    const CHECKOUTS: usize = 4;
    let dir = BrokerDir::new(SETTINGS);
    let lock = dir.path().join("inventory.yaml.flock");
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                let _ = std::fs::remove_file(&lock);
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        });
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                scope.spawn(|| {
                    for _ in 0..CHECKOUTS {
                        let out = dir.run(&["checkout", "--test_action", "basic"]);
                        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Relaxed);
    });
    let mut recorded = names(&dir);
    recorded.sort();
    assert_eq!(recorded.len(), WORKERS * CHECKOUTS);
    assert_eq!(recorded, dir.provider_hosts(), "every host has its record");
}

/// A listing that comes back empty (the engine is not the one the hosts are on) removes nothing
/// unless forced, and the forced sync names what it removed.
#[test]
fn a_sync_that_would_remove_every_record_needs_force() {
    let dir = BrokerDir::new(SETTINGS);
    dir.ok(&["checkout", "--test_action", "basic", "-c", "5"]);
    let before = dir.inventory();
    let mut hosts = names(&dir);
    hosts.sort();
    std::fs::remove_dir_all(dir.path().join("test_provider/local/hosts")).unwrap();

    let out = dir.run(&["inventory", "--sync", "TestProvider"]);
    assert_eq!(out.status.code(), Some(13), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(
        message.contains("would remove 5 of its 5 records"),
        "{message}"
    );
    assert!(
        hosts.iter().all(|h| message.contains(h.as_str())),
        "{message}"
    );
    assert!(message.contains("--force"), "{message}");
    assert_eq!(dir.inventory(), before, "nothing changed");

    let out = dir.run(&["inventory", "--sync", "TestProvider", "--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(message.contains("5 removed"), "{message}");
    assert!(
        hosts.iter().all(|h| message.contains(h.as_str())),
        "{message}"
    );
    assert!(dir.inventory().is_empty());
}
