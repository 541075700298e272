//! The CLI end to end with TestProvider: verbs, exit codes, output formats.

use std::time::Duration;

use serde_json::Value;

use crate::util::{BrokerDir, ChildGuard, DEADLINE, SETTINGS, Terminal, output, stderr, wait_for};

#[test]
fn checkout_nick_count_inventory_checkin_all() {
    let dir = BrokerDir::new(SETTINGS);
    dir.ok(&["checkout", "--nick", "N", "--count", "3"]);
    let records = dir.inventory();
    assert_eq!(records.len(), 3);
    for r in &records {
        assert_eq!(r["_broker_provider"], "TestProvider");
        assert_eq!(r["_broker_provider_instance"], "local");
        assert_eq!(r["_broker_state"], "ready");
        assert_eq!(r["_broker_args"]["test_action"], "basic");
    }
    assert_eq!(dir.provider_hosts().len(), 3);
    dir.ok(&["checkin", "--all"]);
    assert!(dir.inventory().is_empty());
    assert!(dir.provider_hosts().is_empty());
}

#[test]
fn checkout_prints_json_and_writes_the_output_file() {
    let dir = BrokerDir::new(SETTINGS);
    let out_file = dir.path().join("out.json");
    let out_arg = out_file.display().to_string();
    let stdout = dir.ok(&[
        "--output-file",
        &out_arg,
        "checkout",
        "--test_action",
        "basic",
        "-o",
        "json",
    ]);
    let hosts: Vec<Value> = serde_json::from_str(&stdout).expect("json");
    assert_eq!(hosts.len(), 1);
    let emitted: Value =
        serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    assert_eq!(emitted["return_code"], 0);
    assert_eq!(emitted["hosts"][0]["name"], hosts[0]["name"]);
    // The Python broker's keys: which provider action ran with which arguments.
    assert_eq!(emitted["provider"], "TestProvider");
    assert_eq!(emitted["action"], "test_action");
    assert_eq!(emitted["arguments"]["test_action"], "basic");
}

#[test]
fn exit_codes_follow_upstream() {
    let dir = BrokerDir::new(SETTINGS);
    let out = dir.run(&["checkout", "--nick", "nope"]);
    assert_eq!(out.status.code(), Some(13), "{}", stderr(&out));
    assert!(stderr(&out).contains("known nicks: N"), "{}", stderr(&out));

    let out = dir.run(&["checkout", "--flavour", "big"]);
    assert_eq!(out.status.code(), Some(13));
    assert!(stderr(&out).contains("test_action"), "{}", stderr(&out));

    let out = dir.run(&["inventory", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));

    let out = dir.run(&["inventory", "--filter", "@inv.name = 'x'"]);
    assert_eq!(out.status.code(), Some(13));
    assert!(stderr(&out).contains("column 11"), "{}", stderr(&out));

    let out = dir.run(&[
        "checkout",
        "--test_action",
        "basic",
        "--fail_checkout",
        "all",
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(dir.inventory().is_empty());

    dir.ok(&[
        "checkout",
        "--test_action",
        "basic",
        "--fail_checkin",
        "all",
    ]);
    let out = dir.run(&["checkin", "--all"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(stderr(&out).contains("broker checkin"), "{}", stderr(&out));
    let left = dir.inventory();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["_broker_state"], "releasing");
}

#[test]
fn malformed_settings_name_file_line_and_column() {
    let dir = BrokerDir::new("TestProvider:\n  instances: [\n    local\n  bad: {\n");
    let out = dir.run(&["inventory"]);
    assert_eq!(out.status.code(), Some(8));
    let err = stderr(&out);
    assert!(
        err.contains("broker_settings.yaml") && err.contains("line 4"),
        "{err}"
    );
}

#[test]
fn malformed_inventory_is_reported_and_kept() {
    let dir = BrokerDir::new(SETTINGS);
    let bad = "- hostname: a\n  name: [oops\n";
    std::fs::write(dir.inventory_path(), bad).unwrap();
    let out = dir.run(&["checkout", "--test_action", "basic"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("inventory.yaml` at line"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_to_string(dir.inventory_path()).unwrap(), bad);
    assert!(
        dir.provider_hosts().is_empty(),
        "nothing may be created when the intent cannot be recorded"
    );
}

#[test]
fn all_or_nothing_and_keep_partial() {
    let dir = BrokerDir::new(SETTINGS);
    let out = dir.run(&[
        "checkout",
        "--test_action",
        "basic",
        "--fail_checkout",
        "2",
        "-c",
        "3",
    ]);
    assert_eq!(out.status.code(), Some(7));
    assert!(
        stderr(&out).contains("1 of 3 checkouts failed"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("#2"), "{}", stderr(&out));
    assert!(dir.inventory().is_empty());
    assert!(dir.provider_hosts().is_empty());

    let out = dir.run(&[
        "checkout",
        "--test_action",
        "basic",
        "--fail_checkout",
        "2",
        "-c",
        "3",
        "--keep-partial",
    ]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(dir.inventory().len(), 2);
}

#[test]
fn checkin_by_id_hostname_name_and_filter() {
    let dir = BrokerDir::new(SETTINGS);
    dir.ok(&["checkout", "--nick", "N", "-c", "4"]);
    let records = dir.inventory();
    let hostname = records[1]["hostname"].as_str().unwrap().to_owned();
    let name = records[2]["name"].as_str().unwrap().to_owned();
    dir.ok(&["checkin", &hostname, &name]);
    assert_eq!(dir.inventory().len(), 2);
    let last = dir.inventory()[1]["name"].as_str().unwrap().to_owned();
    let filter = format!("@inv.name == '{last}'");
    dir.ok(&["checkin", "--filter", &filter, "0"]);
    let left = dir.inventory();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["name"], records[0]["name"]);
    let out = dir.run(&["checkin", "no-such-host"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("not found in the inventory: no-such-host"),
        "{}",
        stderr(&out)
    );
    assert_eq!(dir.inventory().len(), 1);
}

#[test]
fn duplicate_and_extend() {
    let dir = BrokerDir::new(SETTINGS);
    dir.ok(&["checkout", "--test_action", "basic", "--tag", "x"]);
    dir.ok(&["duplicate", "0", "--count", "2"]);
    let records = dir.inventory();
    assert_eq!(records.len(), 3);
    for r in &records {
        assert_eq!(r["_broker_args"]["tag"], "x");
    }
    dir.ok(&["extend", "--all", "--extend-duration", "2h"]);
    for host in dir.provider_hosts() {
        let meta = std::fs::read_to_string(
            dir.path()
                .join("test_provider/local/hosts")
                .join(host)
                .join("host.yaml"),
        )
        .unwrap();
        assert!(meta.contains("expire_time"), "{meta}");
    }
}

#[test]
fn execute_and_providers() {
    let dir = BrokerDir::new(SETTINGS);
    let out = dir.ok(&["execute", "--test_action", "ping", "-o", "json"]);
    let result: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(result["action"], "ping");
    let listing = dir.ok(&["providers"]);
    assert!(
        listing.contains("TestProvider") && listing.contains("test_action"),
        "{listing}"
    );
    dir.ok(&["checkout", "--nick", "N", "-c", "2"]);
    let hosts = dir.ok(&["providers", "TestProvider", "--hosts", "-o", "json"]);
    let hosts: Vec<Value> = serde_json::from_str(&hosts).unwrap();
    assert_eq!(hosts.len(), 2);
    let first = hosts[0].as_str().unwrap().to_owned();
    let filtered = dir.ok(&[
        "nick-help",
        "TestProvider",
        "--hosts",
        "--results-filter",
        &format!("'{first}' == @res"),
        "-o",
        "json",
    ]);
    assert_eq!(
        serde_json::from_str::<Vec<Value>>(&filtered).unwrap().len(),
        1
    );
    let out = dir.run(&["providers", "TestProvider", "--workflows"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--hosts"), "{}", stderr(&out));
}

#[test]
fn sync_pulls_provider_hosts_without_losing_other_records() {
    let dir = BrokerDir::new(SETTINGS);
    dir.ok(&["checkout", "--nick", "N", "-c", "2"]);
    let inventory = std::fs::read_to_string(dir.inventory_path()).unwrap();
    // Forget one record, as if written by a tool that crashed; add an unrelated upstream entry.
    let mut records: Vec<serde_yaml::Value> = serde_yaml::from_str(&inventory).unwrap();
    records.remove(0);
    records.push(
        serde_yaml::from_str("{_broker_provider: AnsibleTower, hostname: keep.example.com}")
            .unwrap(),
    );
    std::fs::write(
        dir.inventory_path(),
        serde_yaml::to_string(&records).unwrap(),
    )
    .unwrap();
    let out = dir.run(&["inventory", "--sync", "TestProvider"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("1 added, 1 updated, 0 removed"),
        "{}",
        stderr(&out)
    );
    let after = dir.inventory();
    assert_eq!(after.len(), 3);
    assert!(after.iter().any(|r| r["hostname"] == "keep.example.com"));
}

#[test]
fn version_needs_no_settings_and_creates_nothing() {
    let dir = BrokerDir::new("");
    let empty_home = dir.path().join("home");
    std::fs::create_dir(&empty_home).unwrap();
    let out = output(
        dir.command(&["--version"])
            .env_remove("BROKER_DIRECTORY")
            .env("HOME", &empty_home),
    );
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("broker "), "{text}");
    assert!(
        text.contains(&format!(
            "{}",
            empty_home.join(".broker/inventory.yaml").display()
        )),
        "{text}"
    );
    assert!(
        !empty_home.join(".broker").exists(),
        "--version must not create the broker directory"
    );
}

#[test]
fn works_with_no_settings_file_at_all() {
    let dir = BrokerDir::new("");
    dir.ok(&["checkout", "--test_action", "basic"]);
    assert_eq!(dir.inventory().len(), 1);
    dir.ok(&["checkin", "0"]);
    let view = dir.run(&["config", "view"]);
    assert_eq!(view.status.code(), Some(0));
    assert!(
        stderr(&view).contains("built-in defaults"),
        "{}",
        stderr(&view)
    );
}

#[test]
fn config_commands() {
    let dir = BrokerDir::new("");
    dir.ok(&["config", "init"]);
    assert_eq!(dir.run(&["config", "init"]).status.code(), Some(13));
    let view = dir.ok(&["config", "view", "AnsibleTower"]);
    assert!(view.contains("token: '********'"), "{view}");
    assert_eq!(dir.ok(&["config", "nicks"]), "rhel9\nlocal\n");
    assert!(
        dir.ok(&["config", "nick", "rhel9"])
            .contains("workflow: deploy-rhel")
    );
    dir.ok(&["config", "set", "thread_limit", "4"]);
    let settings = std::fs::read_to_string(dir.path().join("broker_settings.yaml")).unwrap();
    assert!(settings.contains("thread_limit: 4"), "{settings}");
    dir.ok(&["config", "restore"]);
    let settings = std::fs::read_to_string(dir.path().join("broker_settings.yaml")).unwrap();
    assert!(settings.contains("thread_limit: null"), "{settings}");
    dir.ok(&["config", "validate", "TestProvider"]);
    assert_eq!(
        dir.run(&["config", "validate", "Nope"]).status.code(),
        Some(13)
    );
    let out = dir.run(&["config", "edit"]);
    assert_eq!(out.status.code(), Some(13));
    assert!(stderr(&out).contains("config set"), "{}", stderr(&out));
}

#[test]
fn env_overrides_reach_providers_and_secrets_stay_masked() {
    let dir = BrokerDir::new(SETTINGS);
    let out = output(
        dir.command(&["config", "view", "ssh"])
            .env("BROKER_SSH__HOST_PASSWORD", "from-env-secret")
            .env("BROKER_SSH__HOST_SSH_PORT", "2222"),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("from-env-secret"), "{text}");
    // The settings have no password: a masked one is the override's.
    assert!(text.contains("host_password: '********'"), "{text}");
    assert!(text.contains("host_ssh_port: 2222"), "{text}");
    let state = dir.path().join("elsewhere");
    let status = dir
        .command(&["checkout", "--test_action", "basic"])
        .env("BROKER_TESTPROVIDER__STATE_DIR", &state)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(std::fs::read_dir(state.join("hosts")).unwrap().count(), 1);
}

#[test]
fn background_checkout_returns_at_once_and_logs() {
    let dir = BrokerDir::new(&format!("{SETTINGS}cancel_timeout: 1\n"));
    // The checkout that hangs in the background is stopped even when an assertion fails.
    let _background = Background(&dir);
    // It hangs: only a command that really returns at once gets back.
    let out = output(&mut dir.command(&[
        "checkout",
        "-b",
        "--test_action",
        "basic",
        "--hang",
        "checkout",
    ]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    let pid: u64 = err
        .split("runs in the background as pid ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    // The background process goes on: its intent record, owned by the pid it printed.
    assert!(wait_for(DEADLINE, || dir.inventory().first().is_some_and(
        |r| r["_broker_owner"]["pid"] == pid && r["_broker_state"] == "pending"
    )));
    // It logs to the usual log file.
    let log = dir.path().join("logs/broker.log");
    assert!(
        wait_for(DEADLINE, || std::fs::read_to_string(&log)
            .is_ok_and(|l| l.contains("hanging at `checkout`"))),
        "{:?}",
        std::fs::read_to_string(&log)
    );
    // Stopped, it gives back what it made.
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    assert!(wait_for(DEADLINE, || dir.inventory().is_empty()));
}

/// Stops (`kill -9`) the owners of the directory's `pending` records when dropped.
struct Background<'d>(&'d BrokerDir);

impl Drop for Background<'_> {
    fn drop(&mut self) {
        let Ok(text) = std::fs::read_to_string(self.0.inventory_path()) else {
            return;
        };
        let records: Vec<serde_yaml::Value> = serde_yaml::from_str(&text).unwrap_or_default();
        for record in records {
            if record["_broker_state"] == "pending"
                && let Some(pid) = record["_broker_owner"]["pid"].as_u64()
            {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

#[test]
fn ctrl_c_during_checkout_checks_in_what_was_made() {
    let dir = BrokerDir::new(&format!("{SETTINGS}cancel_timeout: 1\n"));
    let child = dir.spawn_checkout(
        &["--test_action", "basic", "--hang", "created", "-c", "2"],
        2,
    );
    crate::util::interrupt(&child);
    let out = child.wait_output(DEADLINE);
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(
        dir.provider_hosts().is_empty(),
        "{:?}",
        dir.provider_hosts()
    );
    assert!(dir.inventory().is_empty());
}

#[test]
fn inventory_views() {
    let dir = BrokerDir::new(SETTINGS);
    assert!(stderr(&dir.run(&["inventory"])).contains("No hosts found in inventory."));
    dir.ok(&["checkout", "--nick", "N", "-c", "2"]);
    let table = dir.ok(&["inventory"]);
    assert!(
        table.contains("Id") && table.contains("State") && table.contains("ready"),
        "{table}"
    );
    let list = dir.ok(&["inventory", "--list"]);
    assert_eq!(list.lines().count(), 2);
    assert!(
        list.lines().all(|l| l.ends_with(".test.example.com")),
        "{list}"
    );
    let details = dir.ok(&["inventory", "--details"]);
    assert!(
        details.contains("_broker_checkout_time:") && details.contains("UTC"),
        "{details}"
    );
    let yaml = dir.ok(&["inventory", "-o", "yaml", "--filter", "@inv[-1]"]);
    let parsed: Vec<serde_yaml::Value> = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(parsed.len(), 1);
}

/// `(Id, Host)` of each row of a table `broker` printed (the first two columns).
fn table_rows(table: &str) -> Vec<(String, String)> {
    table
        .lines()
        .skip(2)
        .map(|line| {
            let mut cells = line.split_whitespace();
            let id = cells.next().unwrap_or_default().to_owned();
            let host = cells.next().unwrap_or_default().to_owned();
            (id, host)
        })
        .collect()
}

#[test]
fn checkout_prints_the_ids_checkin_accepts_in_inventory_order() {
    let dir = BrokerDir::new(SETTINGS);
    dir.ok(&["checkout", "--nick", "N", "-c", "2"]);
    let printed = table_rows(&dir.ok(&["checkout", "--nick", "N", "-c", "3"]));
    let inventory = dir.inventory();
    assert_eq!(inventory.len(), 5);
    let expected: Vec<(String, String)> = inventory[2..]
        .iter()
        .enumerate()
        .map(|(i, r)| {
            (
                (i + 2).to_string(),
                r["hostname"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(printed, expected, "the Id column is the inventory position");
    let (id, host) = &printed[1];
    dir.ok(&["checkin", id]);
    let left: Vec<String> = dir
        .inventory()
        .iter()
        .map(|r| r["hostname"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(left.len(), 4);
    assert!(
        !left.contains(host),
        "checkin {id} released {host}: {left:?}"
    );
    let mut kept: Vec<String> = inventory
        .iter()
        .map(|r| r["hostname"].as_str().unwrap().to_owned())
        .filter(|h| h != host)
        .collect();
    kept.sort();
    let mut left = left;
    left.sort();
    assert_eq!(left, kept);
}

#[test]
fn duplicate_prints_the_ids_checkin_accepts() {
    let dir = BrokerDir::new(SETTINGS);
    dir.ok(&["checkout", "--nick", "N", "-c", "2"]);
    let printed = table_rows(&dir.ok(&["duplicate", "1", "-c", "2"]));
    let inventory = dir.inventory();
    let expected: Vec<(String, String)> = inventory[2..]
        .iter()
        .enumerate()
        .map(|(i, r)| {
            (
                (i + 2).to_string(),
                r["hostname"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(printed, expected);
}

/// Every verb and subcommand, as typed.
const VERBS: &[&[&str]] = &[
    &["checkout"],
    &["checkin"],
    &["inventory"],
    &["duplicate"],
    &["extend"],
    &["execute"],
    &["providers"],
    &["nick-help"],
    &["config"],
    &["config", "view"],
    &["config", "set"],
    &["config", "init"],
    &["config", "validate"],
    &["config", "nicks"],
    &["config", "nick"],
    &["config", "edit"],
    &["config", "restore"],
    &["recover"],
    &["ssh"],
    &["completions"],
    &["manpage"],
];

#[test]
fn every_verb_answers_help_and_exits_0() {
    let dir = BrokerDir::new(SETTINGS);
    for verb in VERBS {
        for flag in ["--help", "-h"] {
            let mut args = verb.to_vec();
            args.push(flag);
            let out = dir.run(&args);
            let text = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                out.status.code(),
                Some(0),
                "broker {args:?}: {}",
                stderr(&out)
            );
            assert!(text.contains("Usage: broker"), "broker {args:?}: {text}");
        }
    }
    // Also after other flags, and in front of the verb.
    for args in [
        &["checkout", "--test_action", "basic", "--help"][..],
        &["extend", "0", "--help"],
        &["--help", "checkout"],
        &["providers", "TestProvider", "--help"],
    ] {
        let out = dir.run(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "broker {args:?}: {}",
            stderr(&out)
        );
    }
    assert!(dir.inventory().is_empty(), "--help checks nothing out");
}

#[test]
fn a_count_of_zero_is_a_usage_error() {
    let dir = BrokerDir::new(SETTINGS);
    let out = dir.run(&["checkout", "--test_action", "basic", "-c", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--count"), "{}", stderr(&out));
    assert!(dir.inventory().is_empty());
    dir.ok(&["checkout", "--test_action", "basic"]);
    let out = dir.run(&["duplicate", "0", "--count", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(dir.inventory().len(), 1);
}

/// Holds the inventory's writer lock, as another broker process would, until dropped.
struct HeldLock {
    _holder: ChildGuard,
}

impl HeldLock {
    fn take(dir: &BrokerDir) -> Self {
        let lock = dir.path().join("inventory.yaml.flock");
        // Until killed (when this is dropped), however long the test takes.
        let child = ChildGuard::spawn(
            std::process::Command::new("flock")
                .args(["-x", "--no-fork"])
                .arg(&lock)
                .args(["sleep", "infinity"])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null()),
        );
        assert!(
            wait_for(DEADLINE, || {
                !std::process::Command::new("flock")
                    .args(["-n", "-x"])
                    .arg(&lock)
                    .arg("true")
                    .status()
                    .expect("run flock")
                    .success()
            }),
            "flock never took the lock"
        );
        HeldLock { _holder: child }
    }
}

#[test]
fn an_inventory_failure_during_checkin_exits_1() {
    let dir = BrokerDir::new(&format!("{SETTINGS}inventory_lock_timeout: 1s\n"));
    dir.ok(&["checkout", "--test_action", "basic"]);
    let lock = HeldLock::take(&dir);
    let out = dir.run(&["checkin", "0"]);
    drop(lock);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("locked"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("waiting up to 1s for the inventory lock"),
        "a long wait is said while it lasts: {}",
        stderr(&out)
    );
    assert_eq!(dir.inventory().len(), 1, "the host keeps its record");
    assert_eq!(dir.provider_hosts().len(), 1, "and was not checked in");
}

#[test]
fn checkout_whose_output_cannot_be_written_says_what_it_kept() {
    let dir = BrokerDir::new(SETTINGS);
    let full = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    let out = ChildGuard::spawn(
        dir.command(&["checkout", "--nick", "N", "-c", "2"])
            .stdout(full())
            .stderr(std::process::Stdio::piped()),
    )
    .wait_output(DEADLINE);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let records = dir.inventory();
    assert_eq!(records.len(), 2);
    let err = stderr(&out);
    for r in &records {
        assert!(err.contains(r["hostname"].as_str().unwrap()), "{err}");
    }
    assert!(err.contains("`broker checkin 0 1`"), "{err}");
    assert!(err.contains("No space left on device"), "{err}");

    // Nowhere to report them at all: nothing is kept.
    let out = ChildGuard::spawn(
        dir.command(&["checkout", "--nick", "N"])
            .stdout(full())
            .stderr(full()),
    )
    .wait_output(DEADLINE);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(dir.inventory().len(), 2);
    assert_eq!(dir.provider_hosts().len(), 2);
}

#[test]
fn background_runs_never_share_an_output_file() {
    let dir = BrokerDir::new(SETTINGS);
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    // Runs that started in this second and the next few hold these names already.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let taken: Vec<std::path::PathBuf> = (now..now + 30)
        .map(|t| logs.join(format!("background-{t}.out")))
        .collect();
    for path in &taken {
        std::fs::write(path, "another run's output\n").unwrap();
    }
    let out = dir.run(&["checkout", "-b", "--test_action", "basic"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    let named = err
        .split("output: ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .expect("the output file is named")
        .to_owned();
    assert!(
        !taken.iter().any(|p| p.display().to_string() == named),
        "{err}"
    );
    assert!(wait_for(Duration::from_secs(20), || dir.inventory().len() == 1));
    for path in &taken {
        assert_eq!(
            std::fs::read_to_string(path).unwrap(),
            "another run's output\n"
        );
    }
}

#[test]
fn the_output_flag_is_spelled_alike_on_every_verb() {
    let dir = BrokerDir::new(SETTINGS);
    for spelling in ["-o", "--output", "--output-format"] {
        let out = dir.ok(&["execute", "--test_action", "ping", spelling, "json"]);
        let result: Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{spelling}: {e}: {out}"));
        assert_eq!(result["action"], "ping");
        assert_eq!(
            result["arguments"],
            serde_json::json!({"test_action": "ping"}),
            "the flag is not a provider argument"
        );
        let out = dir.ok(&["checkout", "--test_action", "basic", spelling, "json"]);
        let hosts: Vec<Value> =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{spelling}: {e}: {out}"));
        assert_eq!(hosts.len(), 1);
        assert!(hosts[0]["_broker_args"].get("output").is_none(), "{out}");
        assert!(
            hosts[0]["_broker_args"].get("output-format").is_none(),
            "{out}"
        );
        let out = dir.ok(&["inventory", spelling, "json"]);
        assert!(serde_json::from_str::<Vec<Value>>(&out).is_ok(), "{out}");
    }
}

#[test]
fn a_misspelled_testprovider_fault_switch_is_refused_instead_of_recorded() {
    let dir = BrokerDir::new(SETTINGS);
    let out = dir.run(&[
        "checkout",
        "--test_action",
        "basic",
        "--fail_chekout",
        "all",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "TestProvider checkout would only record `fail_chekout`; did you mean `fail_checkout`? \
             (it acts on: fail_checkout, fail_checkin, delay, checkin_delay, hang)"
        ),
        "{}",
        stderr(&out)
    );
    let out = dir.run(&["execute", "--test_action", "basic", "--dealy", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("did you mean `delay`?"),
        "{}",
        stderr(&out)
    );
    assert!(dir.inventory().is_empty());
    // Spelled with dashes on the command line, a switch is the switch.
    let out = dir.run(&[
        "checkout",
        "--test_action",
        "basic",
        "--fail-checkout",
        "all",
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("injected failure of checkout #1 (fail_checkout: all)"),
        "{}",
        stderr(&out)
    );
    // Other arguments are still taken and recorded, as the providers it stands in for take them.
    dir.ok(&[
        "checkout",
        "--test_action",
        "basic",
        "--tag",
        "x",
        "--notes",
        "y",
    ]);
    let records = dir.inventory();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["_broker_args"]["tag"], "x");
    assert_eq!(records[0]["_broker_args"]["notes"], "y");
}

#[test]
fn arguments_a_provider_does_not_take_are_refused_with_the_closest_name() {
    let dir = BrokerDir::new(SETTINGS);
    dir.ok(&["checkout", "--test_action", "basic"]);
    let out = dir.run(&["extend", "0", "--expire-time", "+3600"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "TestProvider extend takes no argument `expire_time`; did you mean `extend_duration`?"
        ),
        "{}",
        stderr(&out)
    );
    let out = dir.run(&["extend", "0", "--extend-duraton", "2h"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("did you mean `extend_duration`?"),
        "{}",
        stderr(&out)
    );
    dir.ok(&["extend", "0", "--extend-duration", "2h"]);

    // Container takes a known set of arguments; the check comes before any engine is asked.
    let out = dir.run(&[
        "checkout",
        "--container-host",
        "broker-busybox",
        "--prots",
        "22",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("Container checkout takes no argument `prots`; did you mean `ports`?"),
        "{}",
        stderr(&out)
    );
    let out = dir.run(&[
        "execute",
        "--container-app",
        "broker-busybox",
        "--comand",
        "ls",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("did you mean `command`?"),
        "{}",
        stderr(&out)
    );
    assert_eq!(dir.inventory().len(), 1, "nothing more was checked out");

    // Discovery flags too.
    let out = dir.run(&["providers", "TestProvider", "--hots"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "TestProvider has no query `--hots`; did you mean `--hosts`? it answers: --hosts, --host"
        ),
        "{}",
        stderr(&out)
    );

    // TestProvider records any checkout argument, as AnsibleTower passes them on to its workflows.
    dir.ok(&["checkout", "--test_action", "basic", "--tag", "x"]);
}

#[test]
fn ssh_runs_piped_commands_and_exits_with_their_status() {
    use std::io::Write;
    let dir = BrokerDir::new(SETTINGS);
    dir.ok(&["checkout", "--test_action", "basic"]);
    let mut child = ChildGuard::spawn(
        dir.command(&["ssh", "0"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped()),
    );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"echo one\necho two >&2\nexit 3\n")
        .unwrap();
    let out = child.wait_output(DEADLINE);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\n");
    assert!(stderr(&out).contains("two\n"), "{}", stderr(&out));

    // Nothing piped in and no terminal: a clear usage error at once, not a wait.
    let out = dir.run(&["ssh", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no command to run"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn ssh_shell_on_a_host_without_shells_says_so_plainly() {
    let dir = BrokerDir::new(SETTINGS);
    dir.ok(&["checkout", "--test_action", "basic"]);
    let host = dir.inventory()[0]["hostname"].as_str().unwrap().to_owned();
    // `script` gives broker a terminal, as a user typing `broker ssh 0` has.
    let out = output(
        dir.in_terminal("", "ssh 0")
            .env("BROKER_NON_INTERACTIVE", "1"),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "error: the session to {host} (TestProvider) does not support interactive shells; run commands instead"
        )),
        "{text}"
    );
    assert!(!text.contains(" { "), "no Debug dump: {text}");
}

#[test]
fn ssh_to_a_host_that_does_not_answer_says_what_it_waits_for_at_once() {
    let dir = BrokerDir::new(
        "AnsibleTower:\n  base_url: http://127.0.0.1:9/\n  token: t\nssh:\n  host_connection_timeout: 2\n",
    );
    std::fs::write(
        dir.inventory_path(),
        "- hostname: no-such-host.invalid\n  name: vm1\n  _broker_provider: AnsibleTower\n",
    )
    .unwrap();
    let out = dir.run(&["ssh", "0", "--", "true"]);
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    let err = stderr(&out);
    let waiting = err
        .find("waiting up to 2s for no-such-host.invalid to answer SSH on port 22")
        .unwrap_or_else(|| panic!("{err}"));
    let failed = err.find("error: ").unwrap_or_else(|| panic!("{err}"));
    assert!(waiting < failed, "{err}");
    assert!(err.contains("within 2s"), "{err}");
}

/// Runs `broker ARGS` in a terminal (`script` gives it one) after `setup` (e.g. `stty cols 60`) and
/// returns what the terminal showed, without carriage returns.
fn in_terminal(dir: &BrokerDir, setup: &str, args: &str, env: &[(&str, &str)]) -> String {
    let mut command = dir.in_terminal(&format!("{setup}; "), args);
    command.env("BROKER_NON_INTERACTIVE", "1");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = output(&mut command);
    String::from_utf8_lossy(&out.stdout).replace('\r', "")
}

/// Whether `text` holds an SGR (color) escape sequence, `ESC [ digits;… m`.
fn has_color(text: &str) -> bool {
    text.split("\x1b[").skip(1).any(|rest| {
        let end = rest.find(|c: char| !(c.is_ascii_digit() || c == ';'));
        end.is_some_and(|i| rest[i..].starts_with('m'))
    })
}

#[test]
fn no_color_turns_colors_off() {
    let dir = BrokerDir::new(SETTINGS);
    let colored = in_terminal(&dir, "true", "checkout --test_action basic", &[]);
    assert!(has_color(&colored), "a terminal gets colors: {colored:?}");
    let plain = in_terminal(
        &dir,
        "true",
        "checkout --test_action basic",
        &[("NO_COLOR", "1")],
    );
    assert!(plain.contains("checked out"), "{plain:?}");
    assert!(!has_color(&plain), "NO_COLOR: {plain:?}");
}

#[test]
fn tables_fit_the_terminal_width() {
    let dir = BrokerDir::new(SETTINGS);
    dir.ok(&["checkout", "--nick", "N", "-c", "2"]);
    let fits = |text: &str| {
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0], "Id  Host       Provider  Action  OS        State  Age  Lease",
            "{text}"
        );
        assert_eq!(lines.len(), 4, "{text}");
        for row in &lines[2..] {
            assert!(
                row.contains("  broker-t…  TestPro…  basic   FakeOS …  ready  "),
                "{text}"
            );
        }
    };
    // A terminal that reports its width but no height (as `script` and some emulators do).
    fits(&in_terminal(&dir, "stty cols 60", "inventory", &[]));
    // COLUMNS, also through a pipe.
    let out = output(dir.command(&["inventory"]).env("COLUMNS", "60"));
    fits(&String::from_utf8_lossy(&out.stdout));
    // Without either, a pipe gets whole lines.
    assert!(
        dir.ok(&["inventory"])
            .lines()
            .any(|l| l.chars().count() > 60)
    );
}

#[test]
fn providers_honours_the_output_format() {
    let dir = BrokerDir::new(SETTINGS);
    let listing: Vec<Value> = serde_json::from_str(&dir.ok(&["providers", "-o", "json"])).unwrap();
    let test = listing
        .iter()
        .find(|p| p["name"] == "TestProvider")
        .expect("TestProvider is listed");
    assert_eq!(test["actions"], serde_json::json!(["test_action"]));
    assert_eq!(test["instances"], serde_json::json!(["local"]));
    let yaml: Vec<serde_yaml::Value> =
        serde_yaml::from_str(&dir.ok(&["providers", "-o", "yaml"])).unwrap();
    assert_eq!(yaml.len(), listing.len());
    assert!(dir.ok(&["providers"]).starts_with("Provider  "));

    dir.ok(&["checkout", "--nick", "N", "-c", "2"]);
    let mut hosts: Vec<String> = dir.provider_hosts();
    hosts.sort();
    let out = dir.ok(&["providers", "TestProvider", "--hosts", "-o", "table"]);
    let width = hosts.iter().map(|h| h.len()).max().unwrap();
    let mut expected = format!("Value\n{}\n", "─".repeat(width));
    let mut shown: Vec<&str> = out.lines().skip(2).collect();
    shown.sort();
    for h in &hosts {
        expected.push_str(h);
        expected.push('\n');
    }
    assert_eq!(
        out.lines().take(2).collect::<Vec<_>>().join("\n") + "\n",
        expected.lines().take(2).collect::<Vec<_>>().join("\n") + "\n"
    );
    assert_eq!(shown, hosts.iter().map(String::as_str).collect::<Vec<_>>());
    let yaml: Vec<String> =
        serde_yaml::from_str(&dir.ok(&["providers", "TestProvider", "--hosts"])).unwrap();
    assert_eq!(yaml.len(), 2);
}

#[test]
fn checkin_and_extend_print_the_hosts_they_handled() {
    let dir = BrokerDir::new(SETTINGS);
    dir.ok(&["checkout", "--nick", "N", "-c", "2"]);
    let names: Vec<String> = dir
        .inventory()
        .iter()
        .map(|r| r["hostname"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        dir.ok(&["extend", "0", "--extend-duration", "2h"]),
        format!("extended {}\n", names[0])
    );
    let extended: Vec<String> =
        serde_json::from_str(&dir.ok(&["extend", "--all", "-o", "json"])).unwrap();
    assert_eq!(extended.len(), 2);
    assert_eq!(
        dir.ok(&["checkin", "1"]),
        format!("checked in {}\n", names[1])
    );
    let checked_in: Vec<String> =
        serde_yaml::from_str(&dir.ok(&["checkin", "0", "-o", "yaml"])).unwrap();
    assert_eq!(checked_in, vec![names[0].clone()]);
}

#[test]
fn an_unwritable_output_file_fails_before_any_work() {
    let dir = BrokerDir::new(SETTINGS);
    let path = dir.path().join("no-such-dir/out.json");
    let out = dir.run(&[
        "--output-file",
        &path.display().to_string(),
        "checkout",
        "--test_action",
        "basic",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with(&format!(
            "error: cannot write the --output-file `{}`: No such file or directory",
            path.display()
        )),
        "{}",
        stderr(&out)
    );
    assert!(dir.inventory().is_empty(), "nothing was checked out");
    assert!(dir.provider_hosts().is_empty());
}

#[test]
fn without_home_the_broker_directory_is_the_users_home_not_the_current_one() {
    let dir = BrokerDir::new("");
    let out = output(
        dir.command(&["--version"])
            .env_remove("HOME")
            .env_remove("BROKER_DIRECTORY")
            .current_dir(dir.path()),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("Broker Directory"))
        .unwrap();
    let shown = line.trim_start_matches("Broker Directory").trim();
    assert!(
        shown.starts_with('/') && shown.ends_with("/.broker"),
        "{text}"
    );
    assert!(!dir.path().join(".broker").exists());
}

#[test]
fn a_count_of_zero_from_a_nick_or_an_argument_is_a_usage_error() {
    let dir = BrokerDir::new(&format!(
        "{SETTINGS}  Z:\n    test_action: basic\n    _count: 0\n"
    ));
    let out = dir.run(&["checkout", "--nick", "Z"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("a count of 0 asks for no host"),
        "{}",
        stderr(&out)
    );
    let out = dir.run(&["checkout", "--test_action", "basic", "_count=many"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("not `many`"), "{}", stderr(&out));
    assert!(dir.inventory().is_empty());
    // The command line's count wins over the nick's.
    dir.ok(&["checkout", "--nick", "Z", "-c", "2"]);
    assert_eq!(dir.inventory().len(), 2);
}

#[test]
fn sigterm_and_sighup_during_checkout_check_in_what_was_made() {
    let dir = BrokerDir::new(&format!("{SETTINGS}cancel_timeout: 1\n"));
    for signal in ["TERM", "HUP", "INT"] {
        let child = dir.spawn_checkout(
            &["--test_action", "basic", "--hang", "created", "-c", "2"],
            2,
        );
        crate::util::signal(&child, signal);
        let out = child.wait_output(DEADLINE);
        assert_eq!(
            out.status.code(),
            Some(130),
            "SIG{signal}: {}",
            stderr(&out)
        );
        assert!(
            dir.provider_hosts().is_empty(),
            "SIG{signal}: {:?}",
            dir.provider_hosts()
        );
        assert!(dir.inventory().is_empty(), "SIG{signal}");
        let err = stderr(&out);
        assert!(err.contains("checked in again: broker-test-"), "{err}");
        assert!(!err.contains("still checked out"), "{err}");
    }
}

/// A shell that closes sends its stopped jobs SIGHUP and then SIGTERM: the second signal is the same
/// request again, not the user's second Ctrl-C, so the clean-up goes on and gives back what was made.
#[test]
fn sighup_then_sigterm_let_the_clean_up_finish() {
    let dir = BrokerDir::new(&format!("{SETTINGS}cancel_timeout: 1\n"));
    let child = dir.spawn_checkout(
        &["--test_action", "basic", "--hang", "created", "-c", "2"],
        2,
    );
    crate::util::signal(&child, "HUP");
    crate::util::signal(&child, "TERM");
    let out = child.wait_output(DEADLINE);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("already stopping"), "{err}");
    assert!(
        !err.contains("SIGTERM again") && !err.contains("SIGHUP again"),
        "{err}"
    );
    assert!(err.contains("checked in again: broker-test-"), "{err}");
    dir.assert_nothing_out();
}

#[test]
fn second_ctrl_c_stops_waiting_and_says_what_is_left() {
    let dir = BrokerDir::new(&format!("{SETTINGS}cancel_timeout: 10m\n"));
    let mut child = ChildGuard::spawn(
        dir.command(&["checkout", "--test_action", "basic", "--hang", "checkout"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped()),
    );
    assert!(wait_for(Duration::from_secs(20), || dir
        .inventory()
        .first()
        .is_some_and(|r| r["_broker_state"] == "pending")));
    crate::util::interrupt(&child);
    // The second Ctrl-C only once the first was taken in (signals that arrive together count once).
    let said = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let said = std::sync::Arc::clone(&said);
        let mut err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                said.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    assert!(
        wait_for(DEADLINE, || said
            .lock()
            .unwrap()
            .contains("press Ctrl-C again to stop waiting")),
        "{}",
        said.lock().unwrap()
    );
    let seen = said.lock().unwrap().clone();
    crate::util::interrupt(&child);
    let status = child.wait(DEADLINE);
    reader.join().unwrap();
    let rest = said.lock().unwrap()[seen.len()..].to_owned();
    assert_eq!(status.code(), Some(130), "{seen}{rest}");
    let left = dir.inventory();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["_broker_state"], "pending");
    let name = left[0]["name"].as_str().unwrap();
    assert!(
        rest.contains(&format!("left in the inventory: {name} (pending)"))
            && rest.contains("`broker recover`"),
        "{rest}"
    );
    let out = dir.run(&["recover"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(dir.inventory().is_empty());
}

/// `broker checkout` running in a terminal (`script` gives it one), as a user at a prompt runs it,
/// and what the terminal has shown so far.
struct TerminalCheckout {
    terminal: Terminal,
    /// The process that owns the checkout's intent record: the one doing the checkout.
    owner: u32,
}

impl TerminalCheckout {
    /// Starts `broker COMMAND_LINE` and waits until the checkout's intent record is written.
    fn start(dir: &BrokerDir, command_line: &str) -> Self {
        // `exec`: broker alone in the terminal's foreground, as a shell with job control runs it (a
        // non-interactive `sh` waiting for it would take the Ctrl-C too, and end itself).
        let terminal = Terminal::start(dir.in_terminal("exec ", command_line).env("NO_COLOR", "1"));
        let mut owner = None;
        assert!(
            wait_for(Duration::from_secs(20), || {
                owner = std::fs::read_to_string(dir.inventory_path())
                    .ok()
                    .and_then(|t| serde_yaml::from_str::<Vec<serde_yaml::Value>>(&t).ok())
                    .and_then(|records| records.first()?["_broker_owner"]["pid"].as_u64());
                owner.is_some()
            }),
            "no intent record appeared"
        );
        TerminalCheckout {
            terminal,
            owner: u32::try_from(owner.unwrap()).unwrap(),
        }
    }

    /// Types on the terminal (`\x03` is Ctrl-C: the terminal sends SIGINT to its foreground processes).
    fn type_keys(&mut self, keys: &str) {
        self.terminal.type_keys(keys);
    }

    fn shown(&self) -> String {
        self.terminal.shown()
    }

    /// Presses Ctrl-C and waits for broker's question.
    fn press_ctrl_c(&mut self) {
        self.type_keys("\x03");
        self.terminal.wait_for_text("[b/s/r]");
    }

    /// The `broker` the user started, which supervises the one doing the checkout (its parent).
    fn supervisor(&self) -> u32 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.owner)).unwrap();
        // `pid (comm) state ppid …`; comm may hold spaces, so read after its closing parenthesis.
        let after = &stat[stat.rfind(')').unwrap() + 1..];
        let parent: u32 = after.split_whitespace().nth(1).unwrap().parse().unwrap();
        let exe = std::fs::read_link(format!("/proc/{parent}/exe")).unwrap();
        assert_eq!(
            exe,
            std::fs::canonicalize(crate::util::BROKER).unwrap(),
            "the checkout's parent {parent} is not a supervising broker"
        );
        parent
    }

    /// Waits for the terminal session to end: the exit code of `broker`, and all the terminal showed.
    /// A session that does not end within DEADLINE fails the test, its processes killed.
    fn wait(self) -> (Option<i32>, String) {
        self.terminal.finish()
    }
}

/// Whether a process is still running (not gone, not a zombie).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let after = &stat[stat.rfind(')').unwrap_or(0) + 1..];
        after.split_whitespace().next() != Some("Z")
    })
}

/// Runs `broker checkout ARGS` in a terminal, presses Ctrl-C once its intent record is written,
/// answers broker's question with `answer`, and returns the exit code and what the terminal showed.
fn checkout_answering_ctrl_c(dir: &BrokerDir, args: &str, answer: &str) -> (Option<i32>, String) {
    let mut checkout = TerminalCheckout::start(dir, &format!("checkout {args}"));
    checkout.press_ctrl_c();
    checkout.type_keys(&format!("{answer}\n"));
    checkout.wait()
}

#[test]
fn ctrl_c_on_a_terminal_asks_and_resume_goes_on_with_the_checkout() {
    let dir = BrokerDir::new(SETTINGS);
    let json = dir.path().join("hosts.json");
    // stdout to a file, stdin and stderr on the terminal: stdout stays the hosts alone.
    let (code, shown) = checkout_answering_ctrl_c(
        &dir,
        &format!("--test_action basic --delay 2 -o json > {}", json.display()),
        "r",
    );
    assert_eq!(code, Some(0), "{shown}");
    assert!(
        shown.contains(
            "Ctrl-C: [b]ackground (the checkout goes on without this terminal), [s]top the \
             checkout and give back what it made, or [r]esume it? [b/s/r] (r)"
        ),
        "{shown}"
    );
    assert!(shown.contains("resuming the checkout"), "{shown}");
    assert!(
        shown.contains("checked out"),
        "the messages reach the terminal: {shown}"
    );
    let records = dir.inventory();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["_broker_state"], "ready", "{records:?}");
    assert_eq!(dir.provider_hosts().len(), 1);
    let text = std::fs::read_to_string(&json).unwrap();
    let printed: Vec<Value> = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(printed.len(), 1, "{text}");
    assert_eq!(printed[0]["_broker_id"], records[0]["_broker_id"], "{text}");
    assert_eq!(
        std::fs::read_dir(dir.path().join("logs"))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| name.starts_with("background-"))
            .count(),
        0,
        "the checkout's output files are removed once shown"
    );
}

#[test]
fn ctrl_c_on_a_terminal_asks_and_stop_gives_back_what_was_made() {
    let dir = BrokerDir::new(&format!("{SETTINGS}cancel_timeout: 1\n"));
    let mut checkout =
        TerminalCheckout::start(&dir, "checkout --test_action basic --hang created -c 2");
    // Both hosts made (and their provider calls hanging) before the Ctrl-C, so that both are given
    // back rather than not started.
    assert!(
        wait_for(Duration::from_secs(20), || dir.provider_hosts().len() == 2),
        "{}",
        checkout.shown()
    );
    checkout.press_ctrl_c();
    checkout.type_keys("s\n");
    let (code, shown) = checkout.wait();
    assert_eq!(code, Some(130), "{shown}");
    assert!(shown.contains("Ctrl-C: stopping the checkout"), "{shown}");
    assert!(shown.contains("checked in again: broker-test-"), "{shown}");
    dir.assert_nothing_out();
}

#[test]
fn ctrl_c_on_a_terminal_answered_background_leaves_the_checkout_running() {
    let dir = BrokerDir::new(SETTINGS);
    let mut checkout = TerminalCheckout::start(&dir, "checkout --test_action basic --delay 8");
    let owner = checkout.owner;
    checkout.press_ctrl_c();
    checkout.type_keys("b\n");
    let (code, shown) = checkout.wait();
    assert_eq!(code, Some(0), "{shown}");
    // Back at the prompt while the checkout goes on.
    let records = dir.inventory();
    assert_eq!(records[0]["_broker_state"], "pending", "{records:?}");
    assert!(running(owner), "{shown}");
    let said = format!("the checkout goes on in the background as pid {owner}: its hosts go to ");
    let at = shown.find(&said).unwrap_or_else(|| panic!("{shown}"));
    let out = shown[at + said.len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert!(
        shown.contains(&format!("follow them with `tail -f {out} ")),
        "{shown}"
    );
    assert!(
        wait_for(Duration::from_secs(60), || !running(owner)),
        "the checkout never ended"
    );
    let records = dir.inventory();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["_broker_state"], "ready", "{records:?}");
    assert_eq!(dir.provider_hosts().len(), 1);
    let hosts = std::fs::read_to_string(&out).unwrap();
    assert!(
        hosts.contains(records[0]["hostname"].as_str().unwrap()),
        "the output file has the hosts: {hosts}"
    );
}

#[test]
fn kill_9_of_the_supervisor_leaves_the_checkout_to_finish_and_record() {
    let dir = BrokerDir::new(SETTINGS);
    let checkout = TerminalCheckout::start(&dir, "checkout --test_action basic --delay 3");
    let supervisor = checkout.supervisor();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &supervisor.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let owner = checkout.owner;
    let (_, shown) = checkout.wait();
    assert!(
        wait_for(Duration::from_secs(60), || !running(owner)),
        "the checkout never ended: {shown}"
    );
    let records = dir.inventory();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["_broker_state"], "ready", "{records:?}");
    assert_eq!(dir.provider_hosts().len(), 1);
}

#[test]
fn sigterm_and_sighup_to_the_supervisor_stop_the_checkout() {
    for signal in ["TERM", "HUP"] {
        let dir = BrokerDir::new(&format!("{SETTINGS}cancel_timeout: 1\n"));
        let checkout =
            TerminalCheckout::start(&dir, "checkout --test_action basic --hang created -c 2");
        assert!(
            wait_for(Duration::from_secs(20), || dir.provider_hosts().len() == 2),
            "SIG{signal}: the checkout never made 2 hosts"
        );
        let sent = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &checkout.supervisor().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let (code, shown) = checkout.wait();
        assert_eq!(code, Some(130), "SIG{signal}: {shown}");
        assert!(
            shown.contains(&format!("SIG{signal}: stopping the checkout")),
            "SIG{signal}: {shown}"
        );
        assert!(dir.inventory().is_empty(), "SIG{signal}");
        assert!(
            dir.provider_hosts().is_empty(),
            "SIG{signal}: {:?}",
            dir.provider_hosts()
        );
    }
}

/// The file named right after `said` in what the terminal showed.
fn file_named_after(shown: &str, said: &str) -> String {
    let at = shown.find(said).unwrap_or_else(|| panic!("{shown}"));
    shown[at + said.len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn output_the_supervisor_cannot_show_is_kept_and_named() {
    let dir = BrokerDir::new(SETTINGS);
    let checkout = TerminalCheckout::start(&dir, "checkout --test_action basic > /dev/full");
    let (code, shown) = checkout.wait();
    assert_eq!(code, Some(1), "{shown}");
    let out = file_named_after(
        &shown,
        "the checkout's output could not all be shown; it is kept in ",
    );
    let records = dir.inventory();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["_broker_state"], "ready", "{records:?}");
    let hosts = std::fs::read_to_string(&out).unwrap();
    assert!(
        hosts.contains(records[0]["hostname"].as_str().unwrap()),
        "{out}: {hosts}"
    );
}

/// A typo at the Ctrl-C question asks again rather than ending (or keeping) the checkout.
#[test]
fn an_answer_that_is_not_b_s_or_r_asks_again() {
    let dir = BrokerDir::new(SETTINGS);
    let mut checkout = TerminalCheckout::start(&dir, "checkout --test_action basic --delay 3");
    checkout.press_ctrl_c();
    checkout.type_keys("bg\n");
    checkout
        .terminal
        .wait_for_text("[b]ackground, [s]top or [r]esume?");
    checkout.type_keys("r\n");
    let (code, shown) = checkout.wait();
    assert_eq!(code, Some(0), "{shown}");
    assert!(shown.contains("`bg` is not b, s or r"), "{shown}");
    assert!(shown.contains("resuming the checkout"), "{shown}");
    let records = dir.inventory();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["_broker_state"], "ready", "{records:?}");
}

/// A reader that closed stdout before the hosts came (here `true`; after a Ctrl-C answered `r`, a
/// `tee` the Ctrl-C ended) has not read them: they are kept, and the file named.
#[test]
fn output_whose_reader_left_is_kept_and_named() {
    let dir = BrokerDir::new(SETTINGS);
    let checkout = TerminalCheckout::start(
        &dir,
        "checkout --test_action basic --delay 2 -o json | true",
    );
    let (_, shown) = checkout.wait();
    let out = file_named_after(
        &shown,
        "the checkout's output was not all read (its reader closed stdout); it is kept in ",
    );
    let records = dir.inventory();
    assert_eq!(records.len(), 1, "{records:?}");
    let hosts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let host = hosts.get(0).unwrap_or(&hosts);
    assert_eq!(host["hostname"], records[0]["hostname"], "{out}: {hosts}");
}

#[test]
fn second_ctrl_c_on_a_terminal_reaches_the_stopping_checkout() {
    let dir = BrokerDir::new(&format!("{SETTINGS}cancel_timeout: 10m\n"));
    let mut checkout =
        TerminalCheckout::start(&dir, "checkout --test_action basic --hang checkout");
    checkout.press_ctrl_c();
    checkout.type_keys("s\n");
    assert!(
        wait_for(Duration::from_secs(20), || checkout
            .shown()
            .contains("press Ctrl-C again to stop waiting")),
        "{}",
        checkout.shown()
    );
    checkout.type_keys("\x03");
    let (code, shown) = checkout.wait();
    assert_eq!(code, Some(130), "{shown}");
    let left = dir.inventory();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["_broker_state"], "pending");
    let name = left[0]["name"].as_str().unwrap();
    assert!(
        shown.contains(&format!(
            "Ctrl-C again: stopped waiting; left in the inventory: {name} (pending)"
        )),
        "{shown}"
    );
    dir.ok(&["recover"]);
    assert!(dir.inventory().is_empty());
}
