//! The CLI end to end with TestProvider: verbs, exit codes, output formats.

use std::time::Duration;

use serde_json::Value;

use crate::util::{BrokerDir, SETTINGS, stderr, wait_for};

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
    let out = dir
        .command(&["--version"])
        .env_remove("BROKER_DIRECTORY")
        .env("HOME", &empty_home)
        .output()
        .unwrap();
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
    let out = dir
        .command(&["config", "view", "ssh"])
        .env("BROKER_SSH__HOST_PASSWORD", "from-env-secret")
        .env("BROKER_SSH__HOST_SSH_PORT", "2222")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("from-env-secret"), "{text}");
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
    let dir = BrokerDir::new(SETTINGS);
    let out = dir.run(&["checkout", "-b", "--test_action", "basic", "--delay", "1s"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("runs in the background as pid"),
        "{}",
        stderr(&out)
    );
    assert!(wait_for(Duration::from_secs(20), || dir
        .provider_hosts()
        .len()
        == 1
        && dir
            .inventory()
            .first()
            .is_some_and(|r| r["_broker_state"] == "ready")));
    let log = dir.path().join("logs/broker.log");
    assert!(wait_for(Duration::from_secs(5), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("checked out"))
    }));
}

#[test]
fn ctrl_c_during_checkout_checks_in_what_was_made() {
    let dir = BrokerDir::new(SETTINGS);
    let child = dir.spawn_checkout(
        &["--test_action", "basic", "--hang", "created", "-c", "2"],
        2,
    );
    crate::util::interrupt(&child);
    let out = child.wait_with_output().unwrap();
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
