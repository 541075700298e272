//! The shared inventory on a real PostgreSQL (the server `BROKER_POSTGRES` names; each test takes a
//! database of its own): many processes posing as several machines, `kill -9` then recovery from
//! another machine, export and import, a database that cannot be reached.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::util::{BrokerDir, ChildGuard, DEADLINE, SETTINGS, output, stderr, wait_for};

/// A broker directory whose inventory is the database at `url`, and the machine each command poses
/// as.
struct Fleet {
    dir: BrokerDir,
    url: String,
}

impl Fleet {
    /// `None` when skipping is allowed and there is no server.
    fn new(lease_seconds: u64) -> Option<Self> {
        let (url, _) = broker_test_support::postgres_database()?;
        Some(Fleet {
            dir: BrokerDir::new(SETTINGS),
            url: format!("{url}?owner_lease={lease_seconds}"),
        })
    }

    fn command(&self, machine: &str, args: &[&str]) -> Command {
        let mut cmd = self.dir.command(args);
        cmd.env("BROKER_INVENTORY", &self.url)
            .env("BROKER_MACHINE", machine);
        cmd
    }

    fn ok(&self, machine: &str, args: &[&str]) -> String {
        let out = output(&mut self.command(machine, args));
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn inventory(&self) -> Vec<Value> {
        match serde_json::from_str(&self.ok("observer", &["inventory", "-o", "json"])) {
            Ok(Value::Array(items)) => items,
            other => panic!("inventory -o json gave {other:?}"),
        }
    }
}

fn names(records: &[Value]) -> Vec<String> {
    let mut names: Vec<String> = records
        .iter()
        .map(|r| r["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    names.sort();
    names
}

/// 16 processes on 4 "machines" (`BROKER_MACHINE`) × 5 cycles against one database: each cycle
/// checks a host out and checks in the one of the cycle before. No record is lost (each check-in
/// finds its host) or duplicated, and the provider holds exactly the hosts the records name.
#[test]
fn processes_on_four_machines_lose_and_duplicate_nothing() {
    let Some(fleet) = Fleet::new(60) else { return };
    const WORKERS: usize = 16;
    const CYCLES: usize = 5;
    let kept: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..WORKERS)
            .map(|worker| {
                let fleet = &fleet;
                scope.spawn(move || {
                    let machine = format!("machine-{}", worker % 4);
                    let mut previous: Option<String> = None;
                    for cycle in 0..CYCLES {
                        let tag = format!("w{worker}c{cycle}");
                        let out = fleet.ok(
                            &machine,
                            &[
                                "checkout",
                                "--test_action",
                                "basic",
                                "--tag",
                                &tag,
                                "-o",
                                "json",
                            ],
                        );
                        let hosts: Vec<Value> = serde_json::from_str(&out).expect("checkout json");
                        let name = hosts[0]["name"].as_str().expect("name").to_owned();
                        if let Some(prev) = previous.take() {
                            let out = output(&mut fleet.command(&machine, &["checkin", &prev]));
                            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
                            assert!(
                                !stderr(&out).contains("not found"),
                                "{prev} was lost: {}",
                                stderr(&out)
                            );
                        }
                        previous = Some(name);
                    }
                    previous.expect("last host")
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker"))
            .collect()
    });
    let records = fleet.inventory();
    let listed = names(&records);
    let unique: HashSet<&String> = listed.iter().collect();
    assert_eq!(unique.len(), listed.len(), "duplicated records: {listed:?}");
    let mut expected = kept.clone();
    expected.sort();
    assert_eq!(listed, expected);
    let machines: HashSet<&str> = records
        .iter()
        .filter_map(|r| r["_broker_owner"]["machine"].as_str())
        .collect();
    assert_eq!(machines.len(), 4, "{machines:?}");
    assert_eq!(fleet.dir.provider_hosts().len(), WORKERS);
    fleet.ok("observer", &["checkin", "--all"]);
    assert!(fleet.inventory().is_empty());
    assert!(fleet.dir.provider_hosts().is_empty());
}

/// Checkouts on three machines stopped after making their hosts; half of them killed with `-9`.
/// `broker recover` from a fourth machine gives back the dead ones' hosts — once their leases ran
/// out — and never the hosts of the processes still running, whose pids it cannot see.
#[test]
fn recover_from_another_machine_releases_exactly_the_dead_ones_hosts() {
    let Some(fleet) = Fleet::new(2) else { return };
    let mut running: Vec<(usize, ChildGuard)> = Vec::new();
    for n in 0..6 {
        let machine = format!("machine-{}", n % 3);
        let tag = format!("k{n}");
        let child = ChildGuard::spawn(
            fleet
                .command(
                    &machine,
                    &[
                        "checkout",
                        "--test_action",
                        "basic",
                        "--tag",
                        &tag,
                        "--hang",
                        "created",
                    ],
                )
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        assert!(
            wait_for(Duration::from_secs(30), || fleet.dir.provider_hosts().len()
                == n + 1),
            "checkout {n} never made its host"
        );
        running.push((n, child));
    }
    let pending = fleet.inventory();
    assert_eq!(pending.len(), 6);
    let tag_of = |r: &Value| {
        r["_broker_args"]["tag"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let (mut killed, alive): (Vec<_>, Vec<_>) = running.into_iter().partition(|(n, _)| n % 2 == 0);
    for (_, child) in &mut killed {
        child.kill().expect("kill -9");
    }
    let dead_tags: HashSet<String> = killed.iter().map(|(n, _)| format!("k{n}")).collect();
    for (_, mut child) in killed {
        child.wait(DEADLINE);
    }
    // Before the leases run out nothing is given back; then exactly the dead ones' hosts are.
    assert!(
        wait_for(DEADLINE, || {
            fleet.ok("machine-9", &["recover"]);
            fleet.inventory().len() == 3
        }),
        "recover never gave back the dead ones' hosts: {:?}",
        fleet.inventory()
    );
    fleet.ok("machine-9", &["recover"]);
    let left: HashSet<String> = fleet.inventory().iter().map(tag_of).collect();
    let expected: HashSet<String> = (0..6)
        .map(|n| format!("k{n}"))
        .filter(|t| !dead_tags.contains(t))
        .collect();
    assert_eq!(left, expected);
    assert_eq!(fleet.dir.provider_hosts().len(), 3);
    drop(alive);
}

/// The file's records exported, imported into the database and exported again: the same records.
#[test]
fn export_and_import_move_records_between_file_and_database_unchanged() {
    let Some(fleet) = Fleet::new(60) else { return };
    let file = BrokerDir::new(SETTINGS);
    file.ok(&["checkout", "--test_action", "basic", "-c", "3"]);
    let exported = file.path().join("exported.yaml");
    file.ok(&["inventory", "--export", exported.to_str().unwrap()]);
    let from_file: Vec<serde_yaml::Value> =
        serde_yaml::from_str(&std::fs::read_to_string(&exported).unwrap()).unwrap();
    assert_eq!(from_file.len(), 3);
    fleet.ok("m", &["inventory", "--import", exported.to_str().unwrap()]);
    let back = fleet.dir.path().join("back.yaml");
    fleet.ok("m", &["inventory", "--export", back.to_str().unwrap()]);
    let from_database: Vec<serde_yaml::Value> =
        serde_yaml::from_str(&std::fs::read_to_string(&back).unwrap()).unwrap();
    assert_eq!(from_database, from_file);
    assert_eq!(fleet.inventory(), file.inventory());
}

/// A database that cannot be reached: one clear error naming the URL without its password, exit
/// code 1, no panic, and no host made.
#[test]
fn an_unreachable_database_is_a_clear_error_before_anything_is_made() {
    let dir = BrokerDir::new(SETTINGS);
    let out = output(dir.command(&["checkout", "--test_action", "basic"]).env(
        "BROKER_INVENTORY",
        "postgres://broker:s3cret@127.0.0.1:1/inventory",
    ));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err.trim(),
        "error: connecting to the inventory database `postgres://***@127.0.0.1:1/inventory`: \
         error connecting to server: Connection refused (os error 111)"
    );
    assert!(dir.provider_hosts().is_empty());
}
