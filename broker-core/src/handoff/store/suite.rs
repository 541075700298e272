//! What every [`TargetStore`] must do, as checks a store's own tests run (feature `conformance`):
//! `targets.yaml`'s tests run them, and so does the PostgreSQL store's suite, on both stores.
//!
//! Each check takes an [`Open`]: a way to open a new handle on one store that is empty at first,
//! as another process would. A check panics, naming what failed.

use std::fmt::Display;
use std::sync::Barrier;

use crate::error::Result;
use crate::handoff::store::{Added, TargetStore};
use crate::handoff::target::{ConfigValue, Target, TargetConfig};

/// Opens a new handle on the store under test (the same store each time, empty at first).
pub type Open<'a> = &'a (dyn Fn() -> Box<dyn TargetStore> + Sync);

/// A `puppet` target called `name` whose `server` is `server`, with a secret `key`.
pub fn target(name: &str, server: &str) -> Target {
    let mut config = TargetConfig::default();
    config.insert("server", ConfigValue::new(server, false));
    config.insert("key", ConfigValue::new("SECRET-VALUE", true));
    ok(
        "making a target",
        Target::new(name, "prod", "puppet", config),
    )
}

/// `result`'s value; a panic saying `what` failed, and why, otherwise.
fn ok<T>(what: &str, result: Result<T>) -> T {
    result.unwrap_or_else(|e| panic!("{what}: {}", crate::error::chain(&e)))
}

/// `result`'s error, as text; a panic saying `what` did not fail otherwise.
fn refused<T: std::fmt::Debug>(what: &str, result: Result<T>) -> String {
    match result {
        Ok(v) => panic!("{what} was not refused: {v:?}"),
        Err(e) => e.to_string(),
    }
}

fn names(targets: &[Target]) -> Vec<&str> {
    targets.iter().map(|t| t.name.as_str()).collect()
}

/// Adding the same target again (its name in another case) is [`Added::Existing`]; a different
/// one of that name is refused, naming what differs; targets are listed in the order added.
pub fn adding_the_same_target_twice_is_idempotent_and_a_different_one_conflicts(open: Open) {
    let store = open();
    let first = target("puppet-prod", "p.example.com");
    assert_eq!(
        ok("adding", store.add(first.clone())),
        Added::Created(first.clone())
    );
    let again = target("PUPPET-prod", "p.example.com");
    assert_eq!(
        ok("adding again", store.add(again)),
        Added::Existing(first.clone())
    );
    let other = target("puppet-prod", "q.example.com");
    assert_eq!(
        refused("adding a different target", store.add(other)),
        "handoff target `puppet-prod` already exists with another value of server; \
         change it with `broker target update puppet-prod`"
    );
    assert_eq!(ok("listing", store.list()), vec![first.clone()]);
    let (b, c) = (target("b", "b.example.com"), target("a", "a.example.com"));
    ok("adding b", store.add(b));
    ok("adding a", store.add(c));
    assert_eq!(
        names(&ok("listing", open().list())),
        ["puppet-prod", "b", "a"]
    );
}

/// A secret value reads back as a secret, equal to what was stored; a plain one as plain.
pub fn secrets_read_back_as_secrets(open: Open) {
    let added = target("p", "p.example.com");
    ok("adding", open().add(added.clone()));
    let read = ok("reading", open().get("p"));
    assert!(read.config.get("key").is_some_and(ConfigValue::is_secret));
    assert!(
        !read
            .config
            .get("server")
            .is_some_and(ConfigValue::is_secret)
    );
    assert_eq!(read, added);
}

/// A replacement moves the revision on and keeps `created`; a stale revision or a name another
/// target has is refused.
pub fn replace_moves_the_revision_on_and_refuses_a_stale_one_or_a_taken_name(open: Open) {
    let store = open();
    let a = target("a", "a.example.com");
    ok("adding a", store.add(a.clone()));
    ok("adding b", store.add(target("b", "b.example.com")));
    let mut changed = a.clone();
    changed.description = "new".into();
    let stored = ok("replacing", store.replace(changed));
    assert_eq!((stored.revision, stored.created), (2, a.created));
    assert_eq!(ok("reading a", open().get("a")), stored);

    let stale = refused("replacing a stale revision", store.replace(a.clone()));
    assert!(
        stale.contains("changed while this change was made (revision 2 now, 1 read)"),
        "{stale}"
    );
    let mut renamed = stored;
    renamed.name = "B".into();
    let taken = refused("taking another target's name", store.replace(renamed));
    assert!(
        taken.ends_with("is called `b`; choose another name"),
        "{taken}"
    );
    let gone = refused(
        "replacing a target that is not there",
        store.replace(target("c", "c.example.com")),
    );
    assert!(
        gone.ends_with("is gone; another process removed it"),
        "{gone}"
    );
    assert_eq!(names(&ok("listing", store.list())), ["a", "b"]);
}

/// A target is removed once; removing it again finds nothing.
pub fn remove_takes_the_target_out_once(open: Open) {
    let store = open();
    let a = target("a", "a.example.com");
    ok("adding", store.add(a.clone()));
    assert_eq!(ok("removing", store.remove(&a.id)), Some(a.clone()));
    assert_eq!(ok("removing again", store.remove(&a.id)), None);
    assert!(ok("listing", store.list()).is_empty());
}

/// 8 writers, each with a handle of its own, add 10 targets each at once: all 80 are there, once.
pub fn concurrent_writers_lose_no_target(open: Open) {
    const WRITERS: usize = 8;
    const ADDS: usize = 10;
    let start = Barrier::new(WRITERS);
    std::thread::scope(|scope| {
        for w in 0..WRITERS {
            let start = &start;
            scope.spawn(move || {
                let store = open();
                start.wait();
                for i in 0..ADDS {
                    ok(
                        "adding",
                        store.add(target(&format!("w{w}-{i}"), "p.example.com")),
                    );
                }
            });
        }
    });
    let listed = ok("listing", open().list());
    let mut names = names(&listed);
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), WRITERS * ADDS);
}

/// 6 writers, each with a handle of its own, that read the same revision of one target replace it
/// at once: exactly one wins, the others are told it changed, and the stored target is the
/// winner's (no lost update).
pub fn of_writers_replacing_one_revision_exactly_one_wins(open: Open) {
    const WRITERS: usize = 6;
    let read = ok("adding", open().add(target("one", "p.example.com")))
        .target()
        .clone();
    let start = Barrier::new(WRITERS);
    let results: Vec<Result<Target>> = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let mut mine = read.clone();
                mine.description = format!("writer {w}");
                let start = &start;
                scope.spawn(move || {
                    let store = open();
                    start.wait();
                    store.replace(mine)
                })
            })
            .collect();
        writers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| panic!("a writer panicked")))
            .collect()
    });
    let won: Vec<&Target> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(won.len(), 1, "{results:?}");
    for lost in results.iter().filter_map(|r| r.as_ref().err()) {
        expect_contains(
            lost,
            "changed while this change was made (revision 2 now, 1 read)",
        );
    }
    assert_eq!(ok("reading", open().get("one")), *won[0]);
    assert_eq!(won[0].revision, 2);
}

/// 6 writers adding one target at once, its name in six cases: it is stored once; one writer
/// created it, the others found it there.
pub fn one_name_added_at_once_in_many_cases_is_stored_once(open: Open) {
    const CASES: [&str; 6] = ["dup", "DUP", "Dup", "dUp", "duP", "DuP"];
    let start = Barrier::new(CASES.len());
    let added: Vec<Added> = std::thread::scope(|scope| {
        let writers: Vec<_> = CASES
            .iter()
            .map(|name| {
                let start = &start;
                scope.spawn(move || {
                    let store = open();
                    start.wait();
                    ok("adding", store.add(target(name, "p")))
                })
            })
            .collect();
        writers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| panic!("a writer panicked")))
            .collect()
    });
    let created: Vec<&Target> = added
        .iter()
        .filter_map(|a| match a {
            Added::Created(t) => Some(t),
            Added::Existing(_) => None,
        })
        .collect();
    assert_eq!(created.len(), 1, "{added:?}");
    assert!(added.iter().all(|a| a.target() == created[0]), "{added:?}");
    assert_eq!(ok("listing", open().list()), vec![created[0].clone()]);
}

fn expect_contains(error: &impl Display, part: &str) {
    let text = error.to_string();
    assert!(text.contains(part), "{text}");
}
