//! Many processes on one inventory, and processes killed mid-checkout.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;

use crate::util::{BrokerDir, DEADLINE, SETTINGS, stderr, wait_for};

/// 8 processes × 10 cycles: each cycle checks a host out and checks in the one from the cycle before.
/// Every record must be there when its owner looks, none may be duplicated, and the file must parse.
#[test]
fn eight_processes_ten_cycles_lose_nothing() {
    let dir = BrokerDir::new(SETTINGS);
    const WORKERS: usize = 8;
    const CYCLES: usize = 10;
    let kept: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..WORKERS)
            .map(|worker| {
                let dir = &dir;
                scope.spawn(move || {
                    let mut previous: Option<String> = None;
                    for cycle in 0..CYCLES {
                        let tag = format!("w{worker}c{cycle}");
                        let out = dir.run(&[
                            "checkout",
                            "--test_action",
                            "basic",
                            "--tag",
                            &tag,
                            "-o",
                            "json",
                        ]);
                        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
                        let hosts: Vec<Value> =
                            serde_json::from_slice(&out.stdout).expect("checkout json");
                        let name = hosts[0]["name"].as_str().expect("name").to_owned();
                        if let Some(prev) = previous.take() {
                            let out = dir.run(&["checkin", &prev]);
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
    let text = std::fs::read_to_string(dir.inventory_path()).unwrap();
    let records: Vec<serde_yaml::Value> =
        serde_yaml::from_str(&text).expect("inventory parses after the run");
    let names: Vec<String> = records
        .iter()
        .map(|r| r["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    let unique: HashSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "duplicated records: {names:?}");
    let expected: HashSet<&String> = kept.iter().collect();
    assert_eq!(unique, expected);
    assert_eq!(
        dir.provider_hosts().len(),
        WORKERS,
        "hosts at the provider without a record"
    );
    dir.ok(&["checkin", "--all"]);
    assert!(dir.inventory().is_empty());
    assert!(dir.provider_hosts().is_empty());
}

/// `kill -9` of `broker checkout` after the host exists but before it is recorded ready: the pending
/// record finds the host, and `broker recover` removes both.
#[test]
fn kill_nine_mid_checkout_then_recover_leaves_no_orphan() {
    let dir = BrokerDir::new(SETTINGS);
    let mut child = dir.spawn_checkout(
        &["--test_action", "basic", "--hang", "created", "-c", "3"],
        3,
    );
    child.kill().unwrap(); // SIGKILL
    child.wait(DEADLINE);
    let records = dir.inventory();
    assert_eq!(records.len(), 3);
    assert!(
        records.iter().all(|r| r["_broker_state"] == "pending"),
        "{records:?}"
    );
    let out = dir.run(&["recover"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(dir.inventory().is_empty());
    assert!(
        dir.provider_hosts().is_empty(),
        "orphans: {:?}",
        dir.provider_hosts()
    );
}

/// A kill before the provider made anything leaves only a pending record, which recover drops.
#[test]
fn kill_nine_before_creation_then_checkin_pending() {
    let dir = BrokerDir::new(SETTINGS);
    let mut child = dir.spawn_checkout(&["--test_action", "basic", "--hang", "checkout"], 0);
    assert!(wait_for(Duration::from_secs(20), || dir.inventory().len() == 1));
    child.kill().unwrap();
    child.wait(DEADLINE);
    dir.ok(&["checkin", "--pending"]);
    assert!(dir.inventory().is_empty());
    assert!(dir.provider_hosts().is_empty());
}
