//! Handoffs of the `puppet` kind to a real Puppet Server (`scripts/puppetserver`, named by
//! `BROKER_PUPPET_SERVER`): container hosts from `localhost/broker-puppet-agent` (Debian's agent)
//! request a certificate, and apply the server's catalogue once it is signed — by hand (pending,
//! then `broker handoff retry`) or by the server's autosign list (`*.autosign.test`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::container::{containers, engine_dir};
use crate::handoff_run::{FILES_LEFT, log_of, on_host, the_record};
use crate::util::{BrokerDir, ChildGuard, Containers, stderr};

/// How long one broker command that runs the agent may take: an agent run is 5 to 40 s here, and
/// a loaded 2-core machine must never reach this.
const PUPPET_DEADLINE: Duration = Duration::from_secs(300);

/// What a broker directory of these tests needs: the server's directory, a broker directory for
/// container hosts, and their container prefix.
struct PuppetSetUp {
    server: PathBuf,
    dir: BrokerDir,
    prefix: Containers,
}

/// A broker directory with a puppet target `puppet` for the test server, or `None` when skipping
/// is allowed and the server or Podman is missing.
fn set_up(test: &str) -> Option<PuppetSetUp> {
    let server = broker_test_support::puppet_server()?;
    let (dir, prefix) = engine_dir(test)?;
    let port = std::fs::read_to_string(server.join("port")).unwrap();
    let clean = format!(
        "ca_clean_command=puppetserver ca clean --certname \"$BROKER_PUPPET_CERTNAME\" --config '{}'",
        puppet_conf(&server).display()
    );
    dir.ok(&[
        "target",
        "add",
        "-p",
        "puppet",
        "-n",
        "puppet",
        "-c",
        "server=host.containers.internal",
        "-c",
        &format!("server_port={}", port.trim()),
        "-c",
        "run_timeout=5m",
        "-c",
        &clean,
    ]);
    Some(PuppetSetUp {
        server,
        dir,
        prefix,
    })
}

fn puppet_conf(server: &Path) -> PathBuf {
    server.join("puppet/puppet.conf")
}

/// `broker ARGS` in `dir`, allowed [`PUPPET_DEADLINE`].
fn run_slow(dir: &BrokerDir, args: &[&str]) -> Output {
    let mut command = dir.command(args);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    ChildGuard::spawn(&mut command).wait_output(PUPPET_DEADLINE)
}

/// `puppetserver ca ARGS` against the test server's CA; its stdout.
fn ca(server: &Path, args: &[&str]) -> String {
    let out = Command::new("puppetserver")
        .arg("ca")
        .args(args)
        .arg("--config")
        .arg(puppet_conf(server))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "puppetserver ca {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The names of the certificates the test server's CA has signed (`puppetserver ca list --all`).
fn signed(server: &Path) -> Vec<String> {
    let listed = ca(server, &["list", "--all"]);
    listed
        .lines()
        .skip_while(|l| l.trim() != "Signed Certificates:")
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Checks host 0 in and that `ca_clean_command` took its certificate `name`, signed until then,
/// off the CA.
fn check_in_cleans_the_certificate(server: &Path, dir: &BrokerDir, name: &str) {
    assert!(
        signed(server).iter().any(|c| c == name),
        "{name} not signed before check-in"
    );
    dir.ok(&["checkin", "0"]);
    assert!(
        !signed(server).iter().any(|c| c == name),
        "{name} still signed on the CA after check-in"
    );
    let missing = Command::new("puppetserver")
        .args(["ca", "list", "--certname", name, "--config"])
        .arg(puppet_conf(server))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&missing.stdout),
        format!("Missing Certificates:\n    {name}\n")
    );
}

/// A certificate name no other test run uses.
fn certname(label: &str, domain: &str) -> String {
    format!("{label}-{}.{domain}", std::process::id())
}

/// `broker checkout` of an agent container named `hostname`, handed off to `puppet`.
fn checkout(dir: &BrokerDir, hostname: &str, more: &[&str]) -> Output {
    let mut args = vec![
        "checkout",
        "--container-host",
        "broker-puppet-agent",
        "--hostname",
        hostname,
        "--handoff",
        "puppet",
    ];
    args.extend_from_slice(more);
    run_slow(dir, &args)
}

#[test]
fn an_unsigned_agent_is_pending_until_signed_then_retry_applies_the_catalogue() {
    let Some(PuppetSetUp {
        server,
        dir,
        prefix,
    }) = set_up("pupwait")
    else {
        return;
    };
    let name = certname("pending", "broker.test");
    let out = checkout(&dir, &name, &["--keep-failed-handoff"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let record = the_record(&dir);
    assert_eq!(
        record["_broker_handoff_state"], "handoff_pending",
        "{record}"
    );
    assert_eq!(record["_broker_handoff_attempts"], 1, "{record}");
    assert_eq!(
        record["_broker_handoff_error"],
        format!(
            "the certificate request of {name} waits to be signed on the Puppet CA \
             (`puppetserver ca sign --certname {name}`); then `broker handoff retry`"
        )
    );
    assert!(
        ca(&server, &["list"]).contains(&name),
        "no request of {name} on the CA"
    );

    assert!(ca(&server, &["sign", "--certname", &name]).contains(&name));
    // Signed, a retry applies the catalogue. A Puppet Server starved of the 2 cores by the other
    // tests may fail a catalogue request (its JRuby pool busy): what a user does then is retry
    // again, so a run that failed is retried, up to three runs, each failure's report shown.
    let mut retried = run_slow(&dir, &["handoff", "retry", "0", "-o", "json"]);
    for _ in 1..3 {
        if retried.status.code() == Some(0) {
            break;
        }
        eprintln!(
            "the retry failed; again. {}{}",
            stderr(&retried),
            String::from_utf8_lossy(&retried.stdout)
        );
        retried = run_slow(&dir, &["handoff", "retry", "0", "-o", "json"]);
    }
    // On failure, the report (stdout) holds the run's log: what the agent said.
    assert_eq!(
        retried.status.code(),
        Some(0),
        "{}{}",
        stderr(&retried),
        String::from_utf8_lossy(&retried.stdout)
    );
    let report: Value = serde_json::from_slice(&retried.stdout).unwrap();
    assert_eq!(report["_broker_handoff_state"], "handed_off", "{report}");
    assert_eq!(the_record(&dir)["_broker_handoff_state"], "handed_off");
    assert_eq!(
        on_host(&dir, "cat /etc/broker-handoff-proof"),
        format!("{name}\n")
    );
    assert_eq!(on_host(&dir, FILES_LEFT).trim(), "0");

    check_in_cleans_the_certificate(&server, &dir, &name);
    assert!(containers(&prefix).is_empty());
}

#[test]
fn an_autosigned_agent_is_handed_off_at_checkout() {
    let Some(PuppetSetUp {
        server,
        dir,
        prefix,
    }) = set_up("pupauto")
    else {
        return;
    };
    let name = certname("auto", "autosign.test");
    let out = checkout(&dir, &name, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let record = the_record(&dir);
    assert_eq!(record["_broker_handoff_state"], "handed_off", "{record}");
    assert_eq!(record["_broker_handoff_attempts"], 1, "{record}");
    let log = log_of(&record);
    assert!(
        log.contains(&format!(
            "broker-puppet: running the Puppet agent as {name}"
        )),
        "{log:?}"
    );
    assert!(
        log.contains(&"exit status 2".to_owned()),
        "changes applied: {log:?}"
    );
    assert_eq!(
        on_host(&dir, "cat /etc/broker-handoff-proof"),
        format!("{name}\n")
    );
    check_in_cleans_the_certificate(&server, &dir, &name);
    assert!(containers(&prefix).is_empty());
}
