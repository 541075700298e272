//! Handoff runs of the `ansible` kind against real hosts (the sshd image with Python for Ansible's
//! modules), with Debian's `ansible-playbook`: a container host reached through Podman's connection
//! plugin, the same over SSH (password login through sshpass), and a failing playbook.

use serde_json::Value;

use crate::container::{containers, engine_dir, sshd_dir};
use crate::handoff_run::{log_of, on_host, the_record};
use crate::util::{BrokerDir, stderr};

/// Leaves a file naming the greeting it was given and how it reached the host; only for hosts in
/// the group `web` (a host outside it would be skipped, and the file missing).
const PLAYBOOK: &str = "- hosts: web
  tasks:
    - name: leave a mark
      ansible.builtin.copy:
        dest: /root/ansible-was-here
        content: \"{{ greeting }} via {{ ansible_connection }}\\n\"
        mode: \"0640\"
";

/// Adds the target `play` running `playbook`, with a greeting in its extra variables and the host in
/// the groups `web` and `staging`.
fn ansible_target(dir: &BrokerDir, playbook: &str) {
    let path = dir.path().join("site.yml");
    std::fs::write(&path, playbook).unwrap();
    dir.ok(&[
        "target",
        "add",
        "-p",
        "ansible",
        "-n",
        "play",
        "-c",
        &format!("playbook={}", path.display()),
        "-c",
        "extra_vars={\"greeting\": \"hello from broker\"}",
        "-c",
        "groups=web, staging",
        "-c",
        "retry_delay=1s",
    ]);
}

/// `broker checkout` of a `broker-sshd-python` container handed off to `play`, with `more` flags;
/// the record, handed off.
fn checkout_handed_off(dir: &BrokerDir, more: &[&str]) -> Value {
    let mut args = vec![
        "checkout",
        "--container-host",
        "broker-sshd-python",
        "--handoff",
        "play",
    ];
    args.extend_from_slice(more);
    let out = dir.run(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let record = the_record(dir);
    assert_eq!(record["_broker_handoff_state"], "handed_off", "{record}");
    assert_eq!(record["_broker_handoff_attempts"], 1);
    record
}

/// Ansible's temporary directories on the host, none once a run is over.
const ANSIBLE_LEFT: &str = "ls -A /root/.ansible/tmp 2>/dev/null | wc -l";

#[test]
fn ansible_handoff_of_a_container_host_through_podman() {
    if !broker_test_support::ansible() {
        return;
    }
    let Some((dir, prefix)) = engine_dir("ansexec") else {
        return;
    };
    ansible_target(&dir, PLAYBOOK);
    let log = log_of(&checkout_handed_off(&dir, &[])).join("\n");
    assert!(log.contains("TASK [leave a mark]"), "{log}");
    assert!(
        log.contains("ansible-playbook exited with status 0"),
        "{log}"
    );
    assert_eq!(
        on_host(
            &dir,
            "cat /root/ansible-was-here; stat -c %a /root/ansible-was-here"
        ),
        "hello from broker via containers.podman.podman\n640\n"
    );
    assert_eq!(on_host(&dir, ANSIBLE_LEFT).trim(), "0");
    dir.ok(&["checkin", "0"]);
    assert!(containers(&prefix).is_empty());
}

#[test]
fn ansible_handoff_of_the_sshd_container_host_over_ssh() {
    if !broker_test_support::ansible() {
        return;
    }
    let Some((dir, prefix)) = sshd_dir("ansssh") else {
        return;
    };
    ansible_target(&dir, PLAYBOOK);
    let log = log_of(&checkout_handed_off(&dir, &["--ports", "22"])).join("\n");
    assert!(!log.contains("broker-test-password"), "{log}");
    assert_eq!(
        on_host(&dir, "cat /root/ansible-was-here"),
        "hello from broker via ssh\n"
    );
    assert_eq!(on_host(&dir, ANSIBLE_LEFT).trim(), "0");
    dir.ok(&["checkin", "--all"]);
    assert!(containers(&prefix).is_empty());
}

#[test]
fn a_failing_playbook_fails_the_checkout_and_leaves_nothing() {
    if !broker_test_support::ansible() {
        return;
    }
    let Some((dir, prefix)) = engine_dir("ansfail") else {
        return;
    };
    ansible_target(
        &dir,
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.fail:\n        msg: refusing {{ greeting }}\n",
    );
    let out = dir.run(&[
        "checkout",
        "--container-host",
        "broker-sshd-python",
        "--handoff",
        "play",
    ]);
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "handoff to `play` ended handoff_failed: ansible-playbook exited with status 2 (a task failed)"
        ),
        "{}",
        stderr(&out)
    );
    assert!(dir.inventory().is_empty());
    assert!(containers(&prefix).is_empty());
}
