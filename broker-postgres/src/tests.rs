//! One suite for both stores: every test here runs against the `inventory.yaml` store (or
//! `targets.yaml`) and against PostgreSQL (a database of its own on the server `BROKER_POSTGRES`
//! names; see `broker_test_support::postgres_database`). The target-store tests are broker-core's
//! suite (`handoff::store::suite`), which `targets.yaml`'s own tests run too.

use std::sync::Arc;
use std::time::Duration;

use broker_core::handoff::store::suite;
use broker_core::handoff::{TargetStore, YamlTargetStore};
use broker_core::inventory::merge_sync;
use broker_core::record::fields;
use broker_core::{
    HostRecord, HostState, InventoryStore, Mapping, ProviderListing, RecordId, YamlFileStore,
};
use secrecy::SecretString;

use super::PostgresStore;

/// A store under test, with what keeps it alive (its directory).
struct Subject {
    name: &'static str,
    store: Arc<dyn InventoryStore>,
    _dir: Option<tempfile::TempDir>,
}

/// The file store and (unless skipping is allowed and there is no server) the PostgreSQL store.
fn subjects() -> Vec<Subject> {
    let dir = tempfile::tempdir().unwrap();
    let file = YamlFileStore::new(dir.path().join("inventory.yaml"), Duration::from_secs(30));
    let mut all = vec![Subject {
        name: "file",
        store: Arc::new(file),
        _dir: Some(dir),
    }];
    if let Some((url, _)) = broker_test_support::postgres_database() {
        let store = PostgresStore::open(&SecretString::from(url)).unwrap();
        all.push(Subject {
            name: "postgres",
            store: Arc::new(store),
            _dir: None,
        });
    }
    all
}

fn record(provider: &str, name: &str) -> HostRecord {
    let mut r = HostRecord::pending(provider, None, Mapping::new());
    r.set(fields::NAME, name);
    r.set_state(HostState::Ready);
    r
}

fn names(records: &[HostRecord]) -> Vec<String> {
    records.iter().map(HostRecord::display_name).collect()
}

#[test]
fn put_appends_new_records_and_replaces_known_ones_in_place() {
    for s in subjects() {
        let (a, b, c) = (record("P", "a"), record("P", "b"), record("P", "c"));
        s.store.put(&[a.clone(), b.clone()]).unwrap();
        let mut b2 = b.clone();
        b2.set("note", "changed");
        s.store.put(&[c.clone(), b2.clone()]).unwrap();
        assert_eq!(s.store.list().unwrap(), [a, b2, c], "{}", s.name);
    }
}

#[test]
fn remove_says_which_records_were_there() {
    for s in subjects() {
        let (a, b, c) = (record("P", "a"), record("P", "b"), record("P", "c"));
        s.store.put(&[a.clone(), b.clone(), c.clone()]).unwrap();
        let removed = s
            .store
            .remove(&[c.id(), RecordId::from("not-there"), a.id()])
            .unwrap();
        // In the inventory's order.
        assert_eq!(removed, [a.id(), c.id()], "{}", s.name);
        assert_eq!(s.store.list().unwrap(), [b], "{}", s.name);
        assert_eq!(s.store.remove(&[]).unwrap(), [], "{}", s.name);
    }
}

#[test]
fn replace_unchanged_replaces_only_records_still_as_read() {
    for s in subjects() {
        let (a, b) = (record("P", "a"), record("P", "b"));
        s.store.put(&[a.clone(), b.clone()]).unwrap();
        let mut b_now = b.clone();
        b_now.set("note", "changed by another process");
        s.store.put(std::slice::from_ref(&b_now)).unwrap();
        let mut a_new = a.clone();
        a_new.set_state(HostState::Releasing);
        let mut b_new = b.clone();
        b_new.set_state(HostState::Releasing);
        let won = s
            .store
            .replace_unchanged(&[(a.clone(), a_new.clone()), (b, b_new)])
            .unwrap();
        assert_eq!(won, [a.id()], "{}", s.name);
        assert_eq!(s.store.list().unwrap(), [a_new, b_now], "{}", s.name);
    }
}

#[test]
fn of_many_claims_on_one_record_exactly_one_wins() {
    for s in subjects() {
        for round in 0..10 {
            let r = record("P", &format!("r{round}"));
            s.store.put(std::slice::from_ref(&r)).unwrap();
            let wins: usize = std::thread::scope(|scope| {
                let claims: Vec<_> = (0..6)
                    .map(|n| {
                        let (store, seen) = (&s.store, r.clone());
                        scope.spawn(move || {
                            let mut claimed = seen.clone();
                            claimed.set("_claimed_by", n);
                            store.replace_unchanged(&[(seen, claimed)]).unwrap().len()
                        })
                    })
                    .collect();
                claims.into_iter().map(|c| c.join().unwrap()).sum()
            });
            assert_eq!(wins, 1, "{} round {round}", s.name);
        }
    }
}

#[test]
fn writers_at_once_lose_nothing() {
    for s in subjects() {
        std::thread::scope(|scope| {
            for t in 0..4 {
                let store = &s.store;
                scope.spawn(move || {
                    for n in 0..15 {
                        let r = record("P", &format!("t{t}-{n}"));
                        store.put(std::slice::from_ref(&r)).unwrap();
                        if n % 3 == 0 {
                            assert_eq!(store.remove(&[r.id()]).unwrap(), [r.id()]);
                        }
                    }
                });
            }
        });
        let mut left = names(&s.store.list().unwrap());
        left.sort();
        let mut expected: Vec<String> = (0..4)
            .flat_map(|t| {
                (0..15)
                    .filter(|n| n % 3 != 0)
                    .map(move |n| format!("t{t}-{n}"))
            })
            .collect();
        expected.sort();
        assert_eq!(left, expected, "{}", s.name);
    }
}

/// The inventory of the sync tests: the provider's records, one `pending`, and another provider's.
fn sync_inventory() -> Vec<HostRecord> {
    let mut pending = record("P", "p1");
    pending.set_state(HostState::Pending);
    vec![
        record("P", "old"),
        record("Q", "other"),
        record("P", "gone"),
        pending,
    ]
}

#[test]
fn a_sync_writes_what_the_merge_makes_in_its_order() {
    for s in subjects() {
        let inventory = sync_inventory();
        s.store.put(&inventory).unwrap();
        let reported = vec![
            {
                let mut r = HostRecord::default();
                r.set(fields::NAME, "old");
                r.set("extra", "new");
                r
            },
            {
                let mut r = HostRecord::default();
                r.set(fields::NAME, "brand-new");
                r
            },
        ];
        let listing = ProviderListing::new("P", None, inventory.clone(), reported);
        let mut expected = inventory.clone();
        let expected_report = merge_sync(&mut expected, listing.clone()).unwrap();
        let report = s.store.sync_provider(listing).unwrap();
        assert_eq!(report, expected_report, "{}", s.name);
        assert_eq!((report.added, report.updated, report.removed), (1, 1, 1));
        let stored = s.store.list().unwrap();
        assert_eq!(names(&stored), names(&expected), "{}", s.name);
        // The added record got an identity of its own; the rest are exactly the merge's.
        assert_eq!(stored[..3], expected[..3], "{}", s.name);
    }
}

#[test]
fn a_refused_sync_changes_nothing() {
    for s in subjects() {
        let inventory: Vec<HostRecord> = (0..5).map(|n| record("P", &format!("h{n}"))).collect();
        s.store.put(&inventory).unwrap();
        let listing = ProviderListing::new("P", None, inventory.clone(), Vec::new());
        let err = s.store.sync_provider(listing).unwrap_err();
        assert_eq!(err.exit_code(), 13, "{}: {err}", s.name);
        assert_eq!(s.store.list().unwrap(), inventory, "{}", s.name);
    }
}

#[test]
fn records_keep_their_values_and_key_order() {
    for s in subjects() {
        let mut r = record("P", "typed");
        r.set("count", 3);
        r.set("ratio", 0.5);
        r.set("flag", true);
        r.set("none", broker_core::Value::Null);
        r.set(
            "nested",
            serde_yaml::from_str::<broker_core::Value>("{b: [1, two], a: {z: 1}}").unwrap(),
        );
        s.store.put(std::slice::from_ref(&r)).unwrap();
        let back = s.store.list().unwrap();
        assert_eq!(back, [r.clone()], "{}", s.name);
        let keys = |r: &HostRecord| -> Vec<String> {
            r.fields()
                .keys()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect()
        };
        assert_eq!(keys(&back[0]), keys(&r), "{}", s.name);
    }
}

/// Whether the store's connections are encrypted, as the server sees them.
fn encrypted(store: &PostgresStore) -> bool {
    store
        .pool
        .run(
            "reading the connection's TLS state",
            Box::new(|client: &mut postgres::Client| {
                Ok(client
                    .query_one(
                        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                        &[],
                    )?
                    .get::<_, bool>(0))
            }),
        )
        .unwrap()
}

#[test]
fn sslrootcert_with_require_or_verify_full_checks_the_server_against_its_ca_and_encrypts() {
    let Some((url, dir)) = broker_test_support::postgres_database() else {
        return;
    };
    let ca = dir.join("ca.pem");
    for mode in ["require", "verify-ca", "verify-full"] {
        let with_ca = format!("{url}?sslmode={mode}&sslrootcert={}", ca.display());
        let store = PostgresStore::open(&SecretString::from(with_ca)).unwrap();
        assert!(encrypted(&store), "sslmode={mode}");
    }
    let plain = PostgresStore::open(&SecretString::from(format!("{url}?sslmode=disable"))).unwrap();
    assert!(!encrypted(&plain));
}

/// A way to open handles on one target store under test, empty at first, and what keeps it alive.
struct TargetSubject {
    name: &'static str,
    open: Box<dyn Fn() -> Box<dyn TargetStore> + Sync>,
    _dir: Option<tempfile::TempDir>,
}

/// `targets.yaml` and (unless skipping is allowed and there is no server) the database's targets;
/// each handle its own connections, as another process's.
fn target_subjects() -> Vec<TargetSubject> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("targets.yaml");
    let mut all = vec![TargetSubject {
        name: "file",
        open: Box::new(move || {
            Box::new(YamlTargetStore::new(path.clone(), Duration::from_secs(60)))
        }),
        _dir: Some(dir),
    }];
    if let Some((url, _)) = broker_test_support::postgres_database() {
        let url = SecretString::from(url);
        all.push(TargetSubject {
            name: "postgres",
            open: Box::new(move || Box::new(PostgresStore::open(&url).unwrap().targets())),
            _dir: None,
        });
    }
    all
}

/// Runs one check of broker-core's target-store suite on both stores.
fn on_both_target_stores(check: fn(suite::Open)) {
    for s in target_subjects() {
        eprintln!("target store: {}", s.name);
        check(&*s.open);
    }
}

#[test]
fn targets_added_twice_are_idempotent_and_a_different_one_conflicts() {
    on_both_target_stores(
        suite::adding_the_same_target_twice_is_idempotent_and_a_different_one_conflicts,
    );
}

#[test]
fn target_secrets_read_back_as_secrets() {
    on_both_target_stores(suite::secrets_read_back_as_secrets);
}

#[test]
fn target_replace_moves_the_revision_on_and_refuses_a_stale_one_or_a_taken_name() {
    on_both_target_stores(
        suite::replace_moves_the_revision_on_and_refuses_a_stale_one_or_a_taken_name,
    );
}

#[test]
fn target_remove_takes_the_target_out_once() {
    on_both_target_stores(suite::remove_takes_the_target_out_once);
}

#[test]
fn target_writers_at_once_lose_no_target() {
    on_both_target_stores(suite::concurrent_writers_lose_no_target);
}

#[test]
fn of_target_writers_replacing_one_revision_exactly_one_wins() {
    on_both_target_stores(suite::of_writers_replacing_one_revision_exactly_one_wins);
}

#[test]
fn one_target_name_added_at_once_in_many_cases_is_stored_once() {
    on_both_target_stores(suite::one_name_added_at_once_in_many_cases_is_stored_once);
}

/// The machines of the leases in `store`'s database, sorted.
fn lease_machines(store: &PostgresStore) -> Vec<String> {
    store
        .pool
        .run(
            "reading owners' leases",
            Box::new(|client: &mut postgres::Client| {
                let rows =
                    client.query("SELECT machine FROM broker_owners ORDER BY machine", &[])?;
                Ok(rows.iter().map(|r| r.get(0)).collect())
            }),
        )
        .unwrap()
}

#[test]
fn leases_of_owners_gone_that_hold_no_record_are_removed_on_renewal() {
    let Some((url, _)) = broker_test_support::postgres_database() else {
        return;
    };
    let store = PostgresStore::open(&SecretString::from(url)).unwrap();
    let me = broker_core::Owner::current().machine.clone();
    store
        .pool
        .run(
            "adding owners' leases",
            Box::new(|client: &mut postgres::Client| {
                client.batch_execute(
                    "INSERT INTO broker_owners (machine, pid, started, owner_user, lease_until) \
                     VALUES ('gone-idle', 1, 1, 'u', now() - interval '1 hour'), \
                            ('gone-busy', 2, 1, 'u', now() - interval '1 hour'), \
                            ('running', 3, 1, 'u', now() + interval '1 hour')",
                )?;
                Ok(())
            }),
        )
        .unwrap();
    // A record of the gone owner `gone-busy`: recover must still be told that owner is gone.
    let mut left = record("P", "left-behind");
    let owner: broker_core::Value =
        serde_yaml::from_str("{user: u, machine: gone-busy, pid: 2, started: 1}").unwrap();
    left.set(fields::OWNER, owner);
    left.set_state(HostState::Pending);
    store.put(std::slice::from_ref(&left)).unwrap();

    store.renew_lease().unwrap();
    let mut expected = vec!["gone-busy".to_owned(), "running".to_owned(), me.clone()];
    expected.sort();
    assert_eq!(lease_machines(&store), expected);
    let owner = left.owner().unwrap();
    assert_eq!(
        store.owner_leases().unwrap().liveness(&owner),
        broker_core::process::Liveness::Gone
    );

    // Once its record is gone, so is its lease.
    store.remove(&[left.id()]).unwrap();
    store.renew_lease().unwrap();
    let mut expected = vec!["running".to_owned(), me];
    expected.sort();
    assert_eq!(lease_machines(&store), expected);
}
