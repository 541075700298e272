//! Files written by the Python broker are read and rewritten without loss.

use crate::util::{BrokerDir, SETTINGS};

const INVENTORY: &str = include_str!("../fixtures/upstream_inventory.yaml");
const UPSTREAM_SETTINGS: &str = include_str!("../fixtures/upstream_settings.yaml");

fn as_yaml(text: &str) -> serde_yaml::Value {
    serde_yaml::from_str(text).expect("yaml")
}

#[test]
fn upstream_inventory_is_listed_unchanged() {
    let dir = BrokerDir::new(UPSTREAM_SETTINGS);
    std::fs::write(dir.inventory_path(), INVENTORY).unwrap();
    let listed = dir.ok(&["inventory", "-o", "yaml"]);
    assert_eq!(as_yaml(&listed), as_yaml(INVENTORY));
    // Listing never writes.
    assert_eq!(
        std::fs::read_to_string(dir.inventory_path()).unwrap(),
        INVENTORY
    );
    let table = dir.ok(&["inventory"]);
    for expected in [
        "dhcp-111.test.example.com",
        "deploy-rhel",
        "RedHat 8.6",
        "Dec 15, 2025 13:08 UTC",
        "ubi8:latest",
    ] {
        assert!(table.contains(expected), "{expected} missing from\n{table}");
    }
}

#[test]
fn upstream_inventory_survives_a_checkout_and_checkin_cycle() {
    let dir = BrokerDir::new(SETTINGS);
    std::fs::write(dir.inventory_path(), INVENTORY).unwrap();
    dir.ok(&["checkout", "--test_action", "basic"]);
    assert_eq!(dir.inventory().len(), 6);
    dir.ok(&["checkin", "5"]);
    let after = std::fs::read_to_string(dir.inventory_path()).unwrap();
    assert_eq!(as_yaml(&after), as_yaml(INVENTORY));
}

#[test]
fn removing_one_of_two_identical_looking_unnamed_hosts_keeps_the_other() {
    let dir = BrokerDir::new(SETTINGS);
    std::fs::write(dir.inventory_path(), INVENTORY).unwrap();
    // Upstream removes by name, deleting every unnamed entry; broker removes exactly the one asked.
    let out = dir.run(&["checkin", "3"]);
    assert_eq!(out.status.code(), Some(0));
    let left = dir.inventory();
    assert_eq!(left.len(), 4);
    assert_eq!(left[3]["hostname"], "test.host.example.com");
    assert_eq!(left[3]["extra"], true);
}

#[test]
fn upstream_settings_are_read_as_they_are() {
    let dir = BrokerDir::new(UPSTREAM_SETTINGS);
    let view = dir.ok(&["config", "view"]);
    for secret in ["sup3rs3cret", "tok3n-value", "c0ntainer-pass"] {
        assert!(!view.contains(secret), "{secret} shown in\n{view}");
    }
    assert!(
        view.contains("base_url: https://tower.example.com/"),
        "{view}"
    );
    assert_eq!(dir.ok(&["config", "nicks"]), "rhel9\ntest_nick\n");
    let providers = dir.ok(&["providers"]);
    assert!(providers.contains("test1, test2"), "{providers}");
    // The upstream test nick selects TestProvider through its `test_action` key.
    dir.ok(&["checkout", "--nick", "test_nick", "--TestProvider", "test2"]);
    let records = dir.inventory();
    assert_eq!(records[0]["_broker_provider_instance"], "test2");
    assert_eq!(records[0]["_broker_args"]["arg2"], 123);
    dir.ok(&["checkin", "--all"]);
}

#[test]
fn upstream_settings_validate_for_every_provider_they_configure() {
    let dir = BrokerDir::new(UPSTREAM_SETTINGS);
    let out = dir.run(&["config", "validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", crate::util::stderr(&out));
    let text = crate::util::stderr(&out);
    // Each instance is checked on its own.
    for provider in [
        "AnsibleTower::rhv: ok",
        "AnsibleTower::osp: ok",
        "Container::docker: ok",
    ] {
        assert!(text.contains(provider), "{text}");
    }
}
