//! The shared inventory on a real PostgreSQL (the server `BROKER_POSTGRES` names; each test takes a
//! database of its own, and a test that restarts its server starts one of its own): many processes
//! posing as several machines, a restart of the server in the middle of their run, `kill -9` then
//! recovery from another machine, export and import, a database that cannot be reached.

use std::collections::HashSet;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
        Some(Fleet::on(format!("{url}?owner_lease={lease_seconds}")))
    }

    /// A fleet on the database at `url`.
    fn on(url: String) -> Self {
        Fleet {
            // A checkout stopped while its provider hangs gives that call a second.
            dir: BrokerDir::new(&format!("{SETTINGS}cancel_timeout: 1\n")),
            url,
        }
    }

    /// Adds `line` to the fleet's settings.
    fn set(&self, line: &str) {
        let path = self.dir.path().join("broker_settings.yaml");
        let settings = std::fs::read_to_string(&path).unwrap();
        std::fs::write(path, format!("{settings}{line}\n")).unwrap();
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

/// What one worker of a fleet did.
struct Worked {
    /// The host it holds at the end.
    kept: String,
    /// How many of its commands said they were trying the database again.
    retried: usize,
}

/// One worker's cycles, as `machine`, while `more(cycles done)` says so: each cycle checks a host out
/// (tagged with the worker and the cycle) and checks in the host of the cycle before. Every command
/// must succeed and every check-in find its host (none lost).
fn cycles(
    fleet: &Fleet,
    worker: usize,
    machine: &str,
    mut more: impl FnMut(usize) -> bool,
) -> Worked {
    let mut previous: Option<String> = None;
    let mut retried = 0;
    let mut done = 0;
    while more(done) {
        let tag = format!("w{worker}c{done}");
        let args = [
            "checkout",
            "--test_action",
            "basic",
            "--tag",
            &tag,
            "-o",
            "json",
        ];
        let out = output(&mut fleet.command(machine, &args));
        assert_eq!(out.status.code(), Some(0), "{tag}: {}", stderr(&out));
        retried += usize::from(said_retrying(&out));
        let hosts: Vec<Value> = serde_json::from_slice(&out.stdout).expect("checkout json");
        let name = hosts[0]["name"].as_str().expect("name").to_owned();
        if let Some(prev) = previous.replace(name) {
            let out = output(&mut fleet.command(machine, &["checkin", &prev]));
            assert_eq!(out.status.code(), Some(0), "{prev}: {}", stderr(&out));
            assert!(
                !stderr(&out).contains("not found"),
                "{prev} was lost: {}",
                stderr(&out)
            );
            retried += usize::from(said_retrying(&out));
        }
        done += 1;
    }
    Worked {
        kept: previous.expect("last host"),
        retried,
    }
}

/// Whether a command warned that it was trying the database again.
fn said_retrying(out: &Output) -> bool {
    stderr(out).contains("; trying again for up to ")
}

/// What a fleet's workers left: exactly the hosts they `kept`, each once, owned by `machines`
/// machines, and the provider holds exactly those. All are checked in at the end.
fn assert_fleet_holds(fleet: &Fleet, kept: &[String], machines: usize) {
    let records = fleet.inventory();
    let listed = names(&records);
    let unique: HashSet<&String> = listed.iter().collect();
    assert_eq!(unique.len(), listed.len(), "duplicated records: {listed:?}");
    let mut expected = kept.to_vec();
    expected.sort();
    assert_eq!(listed, expected);
    let states: HashSet<&str> = records
        .iter()
        .filter_map(|r| r["_broker_state"].as_str())
        .collect();
    assert_eq!(states, HashSet::from(["ready"]), "{records:?}");
    let owners: HashSet<&str> = records
        .iter()
        .filter_map(|r| r["_broker_owner"]["machine"].as_str())
        .collect();
    assert_eq!(owners.len(), machines, "{owners:?}");
    let mut held = fleet.dir.provider_hosts();
    held.sort();
    assert_eq!(held, expected);
    fleet.ok("observer", &["checkin", "--all"]);
    assert!(fleet.inventory().is_empty());
    assert!(fleet.dir.provider_hosts().is_empty());
}

/// 32 processes on 4 "machines" (`BROKER_MACHINE`) × 20 cycles against one database: each cycle
/// checks a host out and checks in the one of the cycle before. No record is lost (each check-in
/// finds its host) or duplicated, and the provider holds exactly the hosts the records name.
#[test]
fn processes_on_four_machines_lose_and_duplicate_nothing() {
    let Some(fleet) = Fleet::new(60) else { return };
    const WORKERS: usize = 32;
    const CYCLES: usize = 20;
    let kept: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..WORKERS)
            .map(|worker| {
                let fleet = &fleet;
                scope.spawn(move || {
                    let machine = format!("machine-{}", worker % 4);
                    cycles(fleet, worker, &machine, |done| done < CYCLES).kept
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker"))
            .collect()
    });
    assert_fleet_holds(&fleet, &kept, 4);
}

/// A PostgreSQL server of the test's own (`scripts/postgres start`), stopped and removed when
/// dropped: a test that restarts its server must never restart the shared one.
struct OwnServer {
    dir: PathBuf,
}

const POSTGRES_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/postgres");

impl OwnServer {
    /// `None` when skipping is allowed and there is no PostgreSQL.
    fn start() -> Option<Self> {
        // The shared server's check says whether PostgreSQL is here (and fails the test if not).
        broker_test_support::postgres_database()?;
        let out = output(Command::new("bash").args([POSTGRES_SCRIPT, "start"]));
        assert!(
            out.status.success(),
            "scripts/postgres start: {}",
            stderr(&out)
        );
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Some(OwnServer {
            dir: PathBuf::from(dir),
        })
    }

    /// The URL of its `broker` database.
    fn url(&self) -> String {
        std::fs::read_to_string(self.dir.join("url"))
            .expect("the server's url")
            .trim()
            .to_owned()
    }

    /// Stops it (`-m fast`: sessions are ended, transactions under way rolled back) and starts it
    /// again on the same port and data.
    fn restart(&self) {
        let out = output(
            Command::new("bash")
                .arg(POSTGRES_SCRIPT)
                .arg("restart")
                .arg(&self.dir),
        );
        assert!(
            out.status.success(),
            "scripts/postgres restart: {}",
            stderr(&out)
        );
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(POSTGRES_SCRIPT)
            .arg("stop")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// 8 processes on 4 machines check hosts out and in while their PostgreSQL server restarts: the
/// commands the restart meets wait for the server (saying so) and finish, each worker goes on for 2
/// more cycles after the restart, and nothing is lost or duplicated. Two checkouts that were under
/// way across the restart (their hosts made, their provider hanging) are stopped after it: on their
/// connections the restart ended, they give their hosts back and remove their records.
#[test]
fn a_restart_of_the_database_in_the_middle_of_a_run_loses_nothing() {
    let Some(server) = OwnServer::start() else {
        return;
    };
    let fleet = Fleet::on(server.url());
    let in_flight: Vec<ChildGuard> = (0..2)
        .map(|n| {
            let args = ["checkout", "--test_action", "basic", "--hang", "created"];
            let child = ChildGuard::spawn(
                fleet
                    .command(&format!("m{n}"), &args)
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped()),
            );
            assert!(
                wait_for(DEADLINE, || fleet.dir.provider_hosts().len() == n + 1),
                "checkout {n} never made its host"
            );
            child
        })
        .collect();
    const WORKERS: usize = 8;
    let cycles_done = AtomicUsize::new(0);
    let restarted = AtomicBool::new(false);
    let (worked, reached): (Vec<Worked>, bool) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..WORKERS)
            .map(|worker| {
                let (fleet, cycles_done, restarted) = (&fleet, &cycles_done, &restarted);
                scope.spawn(move || {
                    let mut after_restart = 0;
                    cycles(fleet, worker, &format!("m{}", worker % 4), |done| {
                        if done > 0 {
                            cycles_done.fetch_add(1, Ordering::SeqCst);
                        }
                        if restarted.load(Ordering::SeqCst) {
                            after_restart += 1;
                        }
                        after_restart <= 2
                    })
                })
            })
            .collect();
        // The restart comes once every worker is under way.
        let reached = wait_for(DEADLINE, || {
            cycles_done.load(Ordering::SeqCst) >= 2 * WORKERS
        });
        if reached {
            server.restart();
        }
        restarted.store(true, Ordering::SeqCst);
        let worked = handles
            .into_iter()
            .map(|h| h.join().expect("worker"))
            .collect();
        (worked, reached)
    });
    assert!(reached, "the workers never got under way");
    let mut stopped = Vec::new();
    for child in in_flight {
        crate::util::signal(&child, "TERM");
        let out = child.wait_output(DEADLINE);
        assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
        stopped.push(out);
    }
    // Their first write after the restart is on a connection the restart ended.
    assert!(
        stopped.iter().any(said_retrying),
        "{:?}",
        stopped.iter().map(stderr).collect::<Vec<_>>()
    );
    let retried: usize = worked.iter().map(|w| w.retried).sum();
    assert!(retried > 0, "no command of the workers met the restart");
    let kept: Vec<String> = worked.into_iter().map(|w| w.kept).collect();
    assert_fleet_holds(&fleet, &kept, 4);
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

/// The process a worker of a storm runs now, for the storm to kill.
type Slot = Mutex<Option<Child>>;

/// How a killable command ended: its output, or killed by the storm.
enum Ran {
    Done(Output),
    Killed,
}

/// Runs `command` with its child in `slot` while it runs, so that the storm can kill it; a kill is
/// counted in `killed` before the child leaves the slot.
fn run_killable(slot: &Slot, killed: &AtomicUsize, command: &mut Command) -> Ran {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start broker");
    let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
    *slot.lock().unwrap() = Some(child);
    let err = std::thread::spawn(move || {
        let mut text = Vec::new();
        err.as_mut().map(|e| e.read_to_end(&mut text));
        text
    });
    let mut stdout = Vec::new();
    out.as_mut().map(|o| o.read_to_end(&mut stdout));
    let stderr = err.join().unwrap_or_default();
    let mut held = slot.lock().unwrap();
    let status = held
        .as_mut()
        .expect("the slot's child")
        .wait()
        .expect("wait for broker");
    if status.signal() == Some(9) {
        killed.fetch_add(1, Ordering::SeqCst);
    }
    held.take();
    if status.signal() == Some(9) {
        return Ran::Killed;
    }
    Ran::Done(Output {
        status,
        stdout,
        stderr,
    })
}

/// What the workers of a storm share.
struct Storm {
    /// Each worker's process now.
    slots: Vec<Slot>,
    /// Cycles finished, by all.
    cycles: AtomicUsize,
    /// Processes the storm killed.
    killed: AtomicUsize,
    /// Set when the storm is over.
    over: AtomicBool,
}

impl Storm {
    /// Kills worker `worker`'s process if one runs, and waits until its worker has seen it end.
    fn kill(&self, worker: usize) {
        let slot = &self.slots[worker];
        let victim = {
            let mut held = slot.lock().unwrap();
            let Some(child) = held.as_mut() else { return };
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            child.kill().expect("kill -9");
            child.id()
        };
        assert!(
            wait_for(DEADLINE, || slot.lock().unwrap().as_ref().map(Child::id)
                != Some(victim)),
            "worker {worker} never saw its process end"
        );
    }
}

/// Kills the running checkouts a storm left when dropped (the test failed first).
struct Alive(Vec<Child>);

impl Drop for Alive {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One worker of a storm, as `machine`: checkout/checkin cycles (any of its processes may be killed)
/// until the storm is over, then a checkout that hangs once its host is made, left running in its
/// slot. Every command the storm did not kill must succeed.
fn storm_worker(fleet: &Fleet, worker: usize, storm: &Storm) {
    let machine = format!("machine-{}", worker % 4);
    let slot = &storm.slots[worker];
    let mut previous: Option<String> = None;
    let mut cycle = 0;
    while !storm.over.load(Ordering::SeqCst) {
        let tag = format!("w{worker}c{cycle}");
        let args = [
            "checkout",
            "--test_action",
            "basic",
            "--tag",
            &tag,
            "-o",
            "json",
        ];
        let checkout = run_killable(slot, &storm.killed, &mut fleet.command(&machine, &args));
        if let Ran::Done(out) = checkout {
            assert_eq!(out.status.code(), Some(0), "{tag}: {}", stderr(&out));
            let hosts: Vec<Value> = serde_json::from_slice(&out.stdout).expect("checkout json");
            let name = hosts[0]["name"].as_str().expect("name").to_owned();
            if let Some(prev) = previous.replace(name) {
                let mut command = fleet.command(&machine, &["checkin", &prev]);
                if let Ran::Done(out) = run_killable(slot, &storm.killed, &mut command) {
                    assert_eq!(out.status.code(), Some(0), "{prev}: {}", stderr(&out));
                }
            }
        }
        cycle += 1;
        storm.cycles.fetch_add(1, Ordering::SeqCst);
    }
    let tag = format!("alive-{worker}");
    let args = [
        "checkout",
        "--test_action",
        "basic",
        "--tag",
        &tag,
        "--hang",
        "created",
    ];
    let child = fleet
        .command(&machine, &args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start broker");
    *slot.lock().unwrap() = Some(child);
}

/// The tag a record's checkout was given.
fn tag_of(record: &Value) -> String {
    record["_broker_args"]["tag"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// 32 workers on 4 machines check hosts out and in while a storm kills 50 of their processes with
/// `kill -9`, at random, wherever each is (before its intent, with a host half-made, mid-check-in,
/// after it finished); then each leaves one checkout running, hung once its host is made. `broker
/// recover` from a fifth machine, once the dead ones' leases ran out, releases exactly what the dead
/// processes left `pending` or `releasing` — their hosts, made or half-made — and nothing of the
/// running ones or the `ready` hosts; the provider then holds exactly the hosts the records name.
#[test]
fn a_kill_storm_then_recover_from_another_machine_releases_exactly_the_dead_ones_hosts() {
    let Some(fleet) = Fleet::new(2) else { return };
    // Checkouts would give back what the dead left before `recover` could.
    fleet.set("reap_on_start: false");
    const WORKERS: usize = 32;
    const KILLS: usize = 50;
    let storm = Storm {
        slots: (0..WORKERS).map(|_| Mutex::new(None)).collect(),
        cycles: AtomicUsize::new(0),
        killed: AtomicUsize::new(0),
        over: AtomicBool::new(false),
    };
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64 | 1);
    let mut random = seed;
    let mut next = move || {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        random
    };
    std::thread::scope(|scope| {
        for worker in 0..WORKERS {
            let (fleet, storm) = (&fleet, &storm);
            scope.spawn(move || storm_worker(fleet, worker, storm));
        }
        let mut seen = 0;
        while storm.killed.load(Ordering::SeqCst) < KILLS {
            // At most one kill per cycle finished somewhere, at a random worker's process.
            let moved = wait_for(DEADLINE, || storm.cycles.load(Ordering::SeqCst) > seen);
            if !moved {
                storm.over.store(true, Ordering::SeqCst);
                panic!("the workers stopped (seed {seed})");
            }
            seen = storm.cycles.load(Ordering::SeqCst);
            storm.kill((next() % WORKERS as u64) as usize);
        }
        storm.over.store(true, Ordering::SeqCst);
    });
    assert_eq!(storm.killed.load(Ordering::SeqCst), KILLS);
    let alive = Alive(
        storm
            .slots
            .iter()
            .map(|slot| slot.lock().unwrap().take().expect("a running checkout"))
            .collect(),
    );
    // The running checkouts have made their hosts.
    assert!(
        wait_for(DEADLINE, || {
            let hosts = fleet.dir.provider_hosts();
            let records = fleet.inventory();
            records
                .iter()
                .filter(|r| tag_of(r).starts_with("alive-"))
                .filter(|r| hosts.contains(&r["name"].as_str().unwrap_or_default().to_owned()))
                .count()
                == WORKERS
        }),
        "the last checkouts never made their hosts"
    );
    let before = fleet.inventory();
    let unfinished =
        |r: &&Value| matches!(r["_broker_state"].as_str(), Some("pending" | "releasing"));
    let dead: HashSet<String> = before
        .iter()
        .filter(unfinished)
        .map(tag_of)
        .filter(|t| !t.starts_with("alive-"))
        .collect();
    assert!(
        !dead.is_empty(),
        "the storm left nothing unfinished (seed {seed})"
    );
    assert!(
        wait_for(DEADLINE, || {
            fleet.ok("machine-9", &["recover"]);
            !fleet.inventory().iter().any(|r| dead.contains(&tag_of(r)))
        }),
        "recover never released the dead ones' hosts (seed {seed}): {dead:?}"
    );
    let left = fleet.inventory();
    let mut left_tags: Vec<String> = left.iter().map(tag_of).collect();
    left_tags.sort();
    let mut expected: Vec<String> = before
        .iter()
        .map(tag_of)
        .filter(|t| !dead.contains(t))
        .collect();
    expected.sort();
    assert_eq!(left_tags, expected, "seed {seed}");
    assert_eq!(left.len(), before.len() - dead.len(), "seed {seed}");
    let mut named: Vec<String> = left
        .iter()
        .map(|r| r["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    named.sort();
    assert_eq!(fleet.dir.provider_hosts(), named, "seed {seed}");
    drop(alive);
    fleet.ok("observer", &["recover", "--all"]);
    fleet.ok("observer", &["checkin", "--all"]);
    assert!(fleet.inventory().is_empty());
    assert!(fleet.dir.provider_hosts().is_empty());
}

/// The file's records exported, imported into the database and exported again: the same file.
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
    // Byte for byte: the records in their order, each with its keys in their order.
    assert_eq!(
        std::fs::read_to_string(&back).unwrap(),
        std::fs::read_to_string(&exported).unwrap()
    );
    assert_eq!(fleet.inventory(), file.inventory());
}

/// A database that cannot be reached: a warning that broker tries again for a while (a restart
/// looks the same at first), then one clear error naming the URL without its password, exit code 1,
/// no panic, and no host made.
#[test]
fn an_unreachable_database_is_a_clear_error_before_anything_is_made() {
    let dir = BrokerDir::new(SETTINGS);
    let out = output(dir.command(&["checkout", "--test_action", "basic"]).env(
        "BROKER_INVENTORY",
        "postgres://broker:s3cret@127.0.0.1:1/inventory",
    ));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let refused = "connecting to the inventory database `postgres://***@127.0.0.1:1/inventory`: \
                   error connecting to server: Connection refused (os error 111)";
    assert_eq!(
        err.trim(),
        format!("WARN {refused}; trying again for up to 10 s\nerror: {refused}")
    );
    assert!(dir.provider_hosts().is_empty());
}

/// Credentials the database refuses: an authentication error (exit code 5) at once — trying again
/// cannot mend them — naming the URL without the password, and no host made.
#[test]
fn refused_credentials_are_an_authentication_error_said_at_once() {
    let Some((url, _)) = broker_test_support::postgres_database() else {
        return;
    };
    // postgres://broker:PASSWORD@127.0.0.1:PORT/DATABASE
    let (user, rest) = url
        .split_once(':')
        .and_then(|(scheme, rest)| {
            let (user_part, host) = rest.split_once('@')?;
            let user = user_part.split(':').next()?;
            Some((format!("{scheme}:{user}"), host.to_owned()))
        })
        .expect("a URL with user and password");
    let dir = BrokerDir::new(SETTINGS);
    let out = output(
        dir.command(&["checkout", "--test_action", "basic"])
            .env("BROKER_INVENTORY", format!("{user}:wrong-s3cret@{rest}")),
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    let shown = format!("{user}@{rest}").replace("//broker@", "//***@");
    assert_eq!(
        err.trim(),
        format!(
            "error: authentication failed: the inventory database `{shown}` refused the \
             credentials: password authentication failed for user \"broker\" (28P01); check the \
             user and password in `inventory` (or BROKER_INVENTORY)"
        )
    );
    assert!(dir.provider_hosts().is_empty());
}

/// `sslrootcert` naming a CA that did not sign the server's certificate: one clear error at once
/// (trying again cannot mend it), exit code 1, naming the URL without its password; the server's
/// own CA connects.
#[test]
fn a_server_certificate_the_named_ca_did_not_sign_is_refused_at_once() {
    let Some((url, dir)) = broker_test_support::postgres_database() else {
        return;
    };
    let other = tempfile::tempdir().unwrap();
    let other_ca = other.path().join("other-ca.pem");
    let made = output(Command::new("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=another CA",
        "-keyout",
        &other.path().join("other-ca.key").display().to_string(),
        "-out",
        &other_ca.display().to_string(),
    ]));
    assert!(made.status.success(), "openssl: {}", stderr(&made));
    let fleet = Fleet::on(format!(
        "{url}?sslmode=verify-full&sslrootcert={}",
        dir.join("ca.pem").display()
    ));
    fleet.ok("m", &["inventory"]);
    let query = format!("sslmode=require&sslrootcert={}", other_ca.display());
    let fleet = Fleet::on(format!("{url}?{query}"));
    let out = output(&mut fleet.command("m", &["checkout", "--test_action", "basic"]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let (_, at) = url.split_once('@').expect("a URL with credentials");
    assert_eq!(
        err.trim(),
        format!(
            "error: connecting to the inventory database `postgres://***@{at}?{query}`: error \
             performing TLS handshake: invalid peer certificate: UnknownIssuer"
        )
    );
    assert!(fleet.dir.provider_hosts().is_empty());
}
