//! Whole-command benchmarks of the `broker` binary: `--version`, and inventory listing and adding one
//! host at 1,000 and 5,000 hosts (a synthetic inventory in the Python broker's format).
//!
//! Run with `cargo bench -p broker-cli --bench cli`; it builds and times the release binary and prints
//! the median of several runs. Targets (issue #2): `--version` ≤ 5 ms, list 5,000 ≤ 150 ms, add one to
//! 5,000 ≤ 250 ms. For comparison the Python broker 0.8 takes ~0.45 s for `--version`, 16 s to list
//! 5,000 hosts and 21 s to add one.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BROKER: &str = env!("CARGO_BIN_EXE_broker");

fn upstream_inventory(hosts: usize) -> String {
    let mut out = String::new();
    for i in 0..hosts {
        out.push_str(&format!(
            "- _broker_args:\n    deploy_rhel_version: '8.{v}'\n    deploy_scenario: baserhel\n    host_type: host\n    \
             workflow: deploy-rhel\n  _broker_provider: AnsibleTower\n  _broker_provider_instance: rhv\n  \
             hostname: dhcp-{i}.test.example.com\n  name: jdoe-rhel-8.6-{i:08x}\n  tower_inventory: rhv-rhvm02\n  \
             type: host\n  os_distribution: RedHat\n  os_distribution_version: '8.{v}'\n  reported_devices:\n    \
             nics: [eth0, eth1]\n  shutdown_time: '1765804090'\n  remove_time: '432000'\n",
            v = i % 10
        ));
    }
    out
}

fn time_command(dir: &Path, args: &[&str], runs: usize) -> Duration {
    let warm_up = usize::from(runs > 0);
    let mut samples: Vec<Duration> = (0..runs + 1)
        .map(|_| {
            let start = Instant::now();
            let status = Command::new(BROKER)
                .args(args)
                .env("BROKER_DIRECTORY", dir)
                .env("HOME", dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("run broker");
            let elapsed = start.elapsed();
            assert!(status.success(), "broker {args:?} failed");
            elapsed
        })
        .skip(warm_up) // warm-up (page cache)
        .collect();
    samples.sort();
    samples[samples.len() / 2]
}

/// Peak resident memory of a process in kB (`VmHWM`), while it runs.
fn peak_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `checkout --test_action basic -c COUNT` into an empty inventory: wall time and peak memory (the
/// peak is sampled while the process runs, so it is a close lower bound). Targets (issue 9 item 18):
/// `-c 1000` well under 5 s and at most 100 MB.
fn large_checkout(count: usize) -> (Duration, u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let start = Instant::now();
    let mut child = Command::new(BROKER)
        .args([
            "--log-level",
            "error",
            "checkout",
            "--test_action",
            "basic",
            "-c",
        ])
        .arg(count.to_string())
        .env("BROKER_DIRECTORY", dir.path())
        .env("HOME", dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run broker");
    let mut peak = 0;
    let status = loop {
        if let Some(kb) = peak_kb(child.id()) {
            peak = peak.max(kb);
        }
        if let Some(status) = child.try_wait().expect("wait for broker") {
            break status;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let elapsed = start.elapsed();
    assert!(status.success(), "checkout -c {count} failed");
    let text = std::fs::read_to_string(dir.path().join("inventory.yaml")).expect("inventory");
    assert_eq!(text.matches("_broker_state: ready").count(), count);
    (elapsed, peak)
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    for count in [300, 1_000] {
        let (elapsed, peak) = large_checkout(count);
        println!(
            "{:<38} {:>10.2?} {:>8} MB peak",
            format!("checkout -c {count} (TestProvider)"),
            elapsed,
            peak / 1024
        );
    }
    let runs = if quick { 1 } else { 15 };
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("broker_settings.yaml"),
        "TestProvider: {}\n",
    )
    .expect("settings");
    println!("{:<38} {:>10}", "benchmark (whole process)", "median");
    println!(
        "{:<38} {:>10.2?}",
        "broker --version",
        time_command(dir.path(), &["--version"], runs * 3)
    );
    for hosts in [1_000, 5_000] {
        std::fs::write(dir.path().join("inventory.yaml"), upstream_inventory(hosts))
            .expect("inventory");
        for (label, args) in [
            ("inventory -o json", &["inventory", "-o", "json"][..]),
            ("inventory (table)", &["inventory"][..]),
            ("inventory --list", &["inventory", "--list"][..]),
        ] {
            let t = time_command(dir.path(), args, runs);
            println!("{:<38} {:>10.1?}", format!("{label}, {hosts} hosts"), t);
        }
        // A checkout writes the inventory twice (pending, then ready): the cost of adding one host.
        let t = time_command(dir.path(), &["checkout", "--test_action", "basic"], runs);
        println!(
            "{:<38} {:>10.1?}",
            format!("checkout (2 writes), {hosts} hosts"),
            t
        );
        let t = time_command(
            dir.path(),
            &[
                "checkin",
                "--all",
                "--filter",
                "@inv._broker_provider == 'TestProvider'",
            ],
            0,
        );
        println!(
            "{:<38} {:>10.1?}",
            format!("checkin the checked-out hosts, {hosts}"),
            t
        );
    }
}
