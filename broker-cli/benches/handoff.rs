//! A `script` handoff of 10 sshd container hosts at once through broker, against the same
//! upload-and-run done with OpenSSH's `scp` + `ssh` (password auth through `sshpass`) on the same
//! hosts, in one run.
//!
//! Run with `cargo bench -p broker-cli --bench handoff` (needs `scripts/setup-podman`,
//! `scripts/setup-sshd-image` and `sshpass`). Each round hands the 10 hosts off through
//! `Broker::handoff_to` (fresh sessions: each host is attached anew, so broker connects as OpenSSH
//! does) and does the same with OpenSSH: `ssh` makes a private directory, `scp` copies the script and
//! its metadata file into it, `ssh` sets their modes, runs the script and removes the directory.
//! Rounds alternate; the medians are compared. Target (issue 13): broker ≤ 1.1× OpenSSH.

use std::sync::Arc;
use std::time::{Duration, Instant};

use broker_core::handoff::{ConfigValue, HandoffState, Target, TargetConfig};
use broker_core::{Broker, CheckoutRequest, HostRecord, ProviderRegistry, Settings};

const HOSTS: usize = 10;
const PASSWORD: &str = "broker-test-password";
const SCRIPT: &str = "#!/bin/sh\ntest -s \"$1\" && echo handed-off > /tmp/bench-handed-off\n";

/// Every host handed off through broker, at once.
async fn broker_round(broker: &Broker, records: &[HostRecord], target: &Target) -> Duration {
    let hosts: Vec<_> = records
        .iter()
        .map(|r| broker.attach(r.clone()).expect("attach"))
        .collect();
    let start = Instant::now();
    let runs = hosts
        .iter()
        .map(|host| broker.handoff_to(host, target.clone()));
    for report in futures_util::future::join_all(runs).await {
        let report = report.expect("broker handoff");
        assert_eq!(report.state, HandoffState::HandedOff, "{report:?}");
    }
    start.elapsed()
}

/// `sshpass -p PASSWORD PROGRAM ARGS…` with the options every call takes, to `port`.
fn openssh(program: &str, port: &str, args: &[String]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("sshpass");
    command.args(["-p", PASSWORD, program]);
    let port_flag = if program == "scp" { "-P" } else { "-p" };
    command.args([
        "-q",
        port_flag,
        port,
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
    ]);
    command.args(args);
    command
}

async fn output(mut command: tokio::process::Command) -> String {
    let out = command.output().await.expect("start OpenSSH");
    assert!(out.status.success(), "{:?}: {out:?}", command.as_std());
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The same upload-and-run on one host with OpenSSH.
async fn openssh_one(port: String, script: &std::path::Path, metadata: &std::path::Path) {
    let dir = output(openssh(
        "ssh",
        &port,
        &[
            "root@localhost".into(),
            "umask 077 && mktemp -d /tmp/bench-ssh.XXXXXXXX".into(),
        ],
    ))
    .await;
    output(openssh(
        "scp",
        &port,
        &[
            script.display().to_string(),
            metadata.display().to_string(),
            format!("root@localhost:{dir}/"),
        ],
    ))
    .await;
    let run = format!(
        "cd {dir} && chmod 700 script && chmod 600 metadata.json && ./script {dir}/metadata.json; \
         rc=$?; rm -rf -- {dir}; exit $rc"
    );
    output(openssh("ssh", &port, &["root@localhost".into(), run])).await;
}

async fn openssh_round(
    ports: &[String],
    script: &std::path::Path,
    meta: &std::path::Path,
) -> Duration {
    let start = Instant::now();
    let runs = ports
        .iter()
        .map(|port| openssh_one(port.clone(), script, meta));
    futures_util::future::join_all(runs).await;
    start.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The `script` target `bench` running `script`.
fn target(script: &std::path::Path) -> Target {
    let mut config = TargetConfig::default();
    config.insert(
        "script",
        ConfigValue::new(&script.display().to_string(), false),
    );
    config.insert("password", ConfigValue::new("hunter2", true));
    Target::new("bench", "", "script", config).expect("target")
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let rounds = if quick { 1 } else { 7 };
    if !broker_test_support::podman() || !broker_test_support::sshd_image() {
        eprintln!(
            "needs Podman and the sshd image: run scripts/setup-podman and scripts/setup-sshd-image"
        );
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = Settings::from_yaml(
        dir.path(),
        &format!(
            "Container:\n  name_prefix: benchho{}\nssh:\n  host_username: root\n  host_password: \
             {PASSWORD}\n  host_connection_timeout: 60\n",
            std::process::id()
        ),
    )
    .expect("settings");
    let broker = Arc::new(
        Broker::new(
            settings,
            ProviderRegistry::new().with(broker_providers::container::KIND),
        )
        .expect("broker"),
    );
    let script = dir.path().join("script");
    std::fs::write(&script, SCRIPT).expect("write the script");
    let metadata = dir.path().join("metadata.json");
    std::fs::write(
        &metadata,
        "{\"target\": \"bench\", \"config\": {\"password\": \"hunter2\"}}",
    )
    .expect("write the metadata");
    let target = target(&script);
    runtime.block_on(async {
        let guards = broker
            .checkout(
                CheckoutRequest::new()
                    .arg("container_host", "broker-sshd")
                    .arg("ports", "22")
                    .count(HOSTS),
            )
            .await
            .expect("checkout of the sshd hosts");
        let records: Vec<HostRecord> = guards.iter().map(|g| g.record().clone()).collect();
        let ports: Vec<String> = records
            .iter()
            .map(|r| {
                let hostname = r.hostname().unwrap_or_default();
                hostname.rsplit(':').next().unwrap_or_default().to_owned()
            })
            .collect();
        // Warm up both paths (the hosts' sshd, the inventory file).
        broker_round(&broker, &records, &target).await;
        openssh_round(&ports, &script, &metadata).await;
        let (mut through_broker, mut through_openssh) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            through_broker.push(broker_round(&broker, &records, &target).await);
            through_openssh.push(openssh_round(&ports, &script, &metadata).await);
        }
        let (b, o) = (median(through_broker), median(through_openssh));
        println!(
            "script handoff of {HOSTS} sshd container hosts at once, median of {rounds} rounds"
        );
        println!(
            "{:<28} {:>10} {:>10} {:>7}",
            "", "scp+ssh", "broker", "ratio"
        );
        println!(
            "{:<28} {:>10.1?} {:>10.1?} {:>7.3}",
            "upload and run",
            o,
            b,
            b.as_secs_f64() / o.as_secs_f64()
        );
        for guard in guards {
            guard.checkin().await.expect("check-in");
        }
    });
}
