//! Inventory benchmarks: list and add one host at 1,000 and 5,000 hosts.
//!
//! Run with `cargo bench -p broker-core --bench inventory`. Prints the median of several runs; targets
//! (issue #2): list 5,000 ≤ 150 ms, add one to 5,000 ≤ 250 ms.

use std::time::{Duration, Instant};

use broker_core::{HostRecord, InventoryStore, YamlFileStore};

/// A synthetic inventory in the Python broker's format.
fn upstream_inventory(hosts: usize) -> String {
    let mut out = String::new();
    for i in 0..hosts {
        out.push_str(&format!(
            "- _broker_args:\n    deploy_rhel_version: '8.{v}'\n    deploy_scenario: baserhel\n    host_type: host\n    \
             workflow: deploy-rhel\n    _broker_origin: broker_cli:jdoe\n  _broker_provider: AnsibleTower\n  \
             _broker_provider_instance: rhv\n  hostname: dhcp-{i}.test.example.com\n  name: jdoe-rhel-8.6-{i:08x}\n  \
             tower_inventory: rhv-rhvm02\n  type: host\n  os_distribution: RedHat\n  os_distribution_version: '8.{v}'\n  \
             reported_devices:\n    nics: [eth0, eth1]\n  shutdown_time: '1765804090'\n  remove_time: '432000'\n",
            v = i % 10
        ));
    }
    out
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn measure(runs: usize, mut f: impl FnMut()) -> Duration {
    f(); // warm up
    median(
        (0..runs)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed()
            })
            .collect(),
    )
}

fn main() {
    // `cargo test --benches` runs this with `--bench` absent; keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let runs = if quick { 1 } else { 9 };
    println!("{:<34} {:>10}", "benchmark", "median");
    for hosts in [1_000, 5_000] {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("inventory.yaml");
        let text = upstream_inventory(hosts);
        std::fs::write(&path, &text).expect("write inventory");
        let store = YamlFileStore::new(&path, Duration::from_secs(60));

        let parse = measure(runs, || {
            let records = broker_core::inventory::parse_inventory(&path, &text).expect("parse");
            assert_eq!(records.len(), hosts);
        });
        println!("{:<34} {:>10.1?}", format!("parse {hosts} hosts"), parse);

        let list = measure(runs, || {
            assert_eq!(store.list().expect("list").len(), hosts);
        });
        println!(
            "{:<34} {:>10.1?}",
            format!("inventory list, {hosts} hosts"),
            list
        );

        let add = measure(runs, || {
            let record = HostRecord::pending("TestProvider", None, Default::default());
            store.put(std::slice::from_ref(&record)).expect("put");
            store.remove(&[record.id()]).expect("remove");
        });
        println!(
            "{:<34} {:>10.1?}",
            format!("add + remove one, {hosts} hosts"),
            add
        );

        let add_only = measure(runs, || {
            let record = HostRecord::pending("TestProvider", None, Default::default());
            store.put(std::slice::from_ref(&record)).expect("put");
        });
        println!(
            "{:<34} {:>10.1?}",
            format!("add one, {hosts} hosts"),
            add_only
        );
    }
}
