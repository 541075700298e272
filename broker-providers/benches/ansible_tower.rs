//! AnsibleTower: inventory sync of many hosts, and what one checkout costs the AWX server.
//!
//! Run with `cargo bench -p broker-providers --bench ansible_tower`. Against the AWX simulator
//! (`tests/awx-sim`) on loopback, so the figures are broker's own cost plus the simulator's, not a real
//! AWX's (whose per-request latency is far higher — which is why the request count matters):
//!
//! - `broker inventory --sync AnsibleTower` of 2,000 hosts with facts, median of 5;
//! - the same sync done the Python broker's way through awxkit, when `BROKER_AWXKIT_PYTHON` names a
//!   python with awxkit (`scripts/setup-awxkit` prints one);
//! - the number of API requests one checkout and one check-in make (deterministic).

use std::time::{Duration, Instant};

use awx_sim::{ALICE_TOKEN, Sim};
use broker_core::{Broker, CheckoutRequest, ProviderConfig, ProviderRegistry, Settings};
use serde_json::json;

const HOSTS: usize = 2_000;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let sim = Sim::start();
    {
        let mut w = sim.world();
        for inv in 0..4 {
            let id = w.inventory(&format!("alice-bench-{inv}"));
            for n in 0..HOSTS / 4 {
                let name = format!("vm-{inv}-{n:04}");
                w.host(
                    id,
                    &name,
                    json!({"fqdn": format!("{name}.lab.example.com"), "ansible_host": "192.0.2.7"}),
                    json!({"ansible_distribution": "RedHat", "ansible_distribution_version": "9.4",
                           "ansible_fqdn": format!("{name}.lab.example.com"),
                           "_broker_facts": {"owner": "alice"}, "_broker_args": {"workflow": "deploy-rhel"}}),
                    200,
                );
            }
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let yaml = format!(
        "AnsibleTower:\n  base_url: {}\n  token: {ALICE_TOKEN}\n  workflow_poll_interval: 0.01\n",
        sim.url()
    );
    let settings = Settings::from_yaml(dir.path(), &yaml).expect("settings");
    let broker = Broker::new(
        settings,
        ProviderRegistry::new().with(broker_providers::ansible_tower::KIND),
    )
    .expect("broker");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");

    // The provider alone: the API requests and compiling the records.
    let provider = broker_providers::ansible_tower::KIND
        .build(ProviderConfig::new(
            "AnsibleTower",
            None,
            serde_yaml::from_str(&format!("base_url: {}\ntoken: {ALICE_TOKEN}\n", sim.url()))
                .expect("yaml"),
            dir.path(),
        ))
        .expect("provider");
    let mut times = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let hosts = runtime
            .block_on(provider.inventory(None))
            .expect("inventory");
        times.push(start.elapsed());
        assert_eq!(hosts.len(), HOSTS);
    }
    let alone = median(times);

    let mut times = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let report = runtime
            .block_on(broker.sync_inventory("AnsibleTower"))
            .expect("sync");
        times.push(start.elapsed());
        assert_eq!(report.added + report.updated, HOSTS);
    }
    let ours = median(times);
    println!(
        "sync {HOSTS} hosts with facts: broker {:.0} ms (median of 5, {:.2} ms/host)",
        ours.as_secs_f64() * 1e3,
        ours.as_secs_f64() * 1e3 / HOSTS as f64
    );
    println!(
        "  of which the provider's requests and records: {:.0} ms",
        alone.as_secs_f64() * 1e3
    );

    if let Ok(python) = std::env::var("BROKER_AWXKIT_PYTHON") {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/awxkit/upstream_sync.py"
        );
        let mut times = Vec::new();
        for _ in 0..3 {
            let start = Instant::now();
            let out = std::process::Command::new(&python)
                .args([script, &sim.url(), ALICE_TOKEN, "alice"])
                .output()
                .expect("run python");
            times.push(start.elapsed());
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.trim() == HOSTS.to_string(),
                "{text}"
            );
        }
        let theirs = median(times);
        println!(
            "sync {HOSTS} hosts with facts: the Python broker's way (awxkit) {:.0} ms (median of 3) = {:.1}x broker",
            theirs.as_secs_f64() * 1e3,
            theirs.as_secs_f64() / ours.as_secs_f64()
        );
    } else {
        println!("(set BROKER_AWXKIT_PYTHON to compare with the Python broker's way)");
    }

    let before = sim.requests().len();
    let guard = runtime
        .block_on(
            broker.checkout_one(
                CheckoutRequest::new()
                    .arg("workflow", "deploy-rhel")
                    .provider_labels([("team".into(), "qe".into())].into_iter().collect()),
            ),
        )
        .expect("checkout");
    let checkout = sim.requests().len() - before;
    let before = sim.requests().len();
    runtime.block_on(guard.checkin()).expect("checkin");
    let checkin = sim.requests().len() - before;
    println!(
        "API requests: checkout {checkout} (connect, template, inventory, label, launch, polls, nodes, jobs), check-in {checkin}"
    );
}
