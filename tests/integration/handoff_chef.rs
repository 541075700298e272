//! Handoff runs of the `chef` kind. No Chef server or client can be installed here, so the host's
//! `chef_client_path` is a script the test puts on a real container host: it stands in for
//! chef-client and checks what the bootstrap gave it — `client.rb`, the key file and its mode, the
//! run list — exiting 0 only when all is as the target says.

use std::process::Command;

use crate::container::{containers, engine_dir};
use crate::handoff_run::{log_of, on_host, the_record};
use crate::util::{BrokerDir, stderr};

/// Not a real key: what a validator's PEM looks like, with a line long enough to be masked alone.
const KEY: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAbrokerTestKeyNotReal0123456789\n-----END RSA PRIVATE KEY-----\n";
const KEY_LINE: &str = "MIIEowIBAAKCAQEAbrokerTestKeyNotReal0123456789";

/// Stands in for chef-client (`--config FILE --json-attributes FILE --no-color`).
const FAKE_CHEF_CLIENT: &str = r#"#!/bin/sh
[ "$1" = --config ] && [ "$3" = --json-attributes ] || { echo "unexpected arguments: $*"; exit 1; }
conf=$2
json=$4
key=$(sed -n "s/^validation_key '\(.*\)'$/\1/p" "$conf")
echo "$key" > /root/chef-key-path
fail() { echo "fake chef-client: $*"; exit 1; }
grep -qx "chef_server_url 'https://chef.example.com/organizations/acme'" "$conf" || fail "wrong server: $(grep chef_server_url "$conf")"
grep -qx "validation_client_name 'acme-validator'" "$conf" || fail "wrong validation client"
grep -qx "environment 'staging'" "$conf" || fail "wrong environment"
[ "$(stat -c %a "$key")" = 600 ] || fail "key mode $(stat -c %a "$key")"
grep -q "^MIIEowIBAAKCAQEAbrokerTestKeyNotReal" "$key" || fail "not the key"
echo "fake chef-client: converged with $(tr -d ' \n' < "$json")"
"#;

fn add_chef_target(dir: &BrokerDir) {
    let key = dir.path().join("validation.pem");
    std::fs::write(&key, KEY).unwrap();
    dir.ok(&[
        "target",
        "add",
        "-p",
        "chef",
        "-n",
        "chef-acme",
        "-c",
        "chef_server_url=https://chef.example.com/organizations/acme",
        "-c",
        "chef_version=18.2.7",
        "-c",
        &format!("validation_key=@{}", key.display()),
        "-c",
        "validation_client_name=acme-validator",
        "-c",
        "bootstrap_environment=staging",
        "-c",
        "chef_client_path=/root/chef-client",
        "-c",
        "base_run_list=role[base], recipe[ntp::client]",
    ]);
}

/// Puts the stand-in chef-client at `/root/chef-client` on the host, with `podman cp`.
fn put_fake_chef_client(dir: &BrokerDir, container: &str) {
    let path = dir.path().join("chef-client");
    std::fs::write(&path, FAKE_CHEF_CLIENT).unwrap();
    let copied = Command::new("podman")
        .args([
            "cp",
            path.to_str().unwrap(),
            &format!("{container}:/root/chef-client"),
        ])
        .output()
        .unwrap();
    assert!(copied.status.success(), "{copied:?}");
    on_host(dir, "chmod 755 /root/chef-client");
}

/// Where the stand-in found the key, and whether it is still there.
fn key_left(dir: &BrokerDir) -> String {
    on_host(
        dir,
        "test -e \"$(cat /root/chef-key-path)\" && echo left || echo removed",
    )
}

#[test]
fn chef_handoff_delivers_client_rb_the_key_0600_and_the_run_list_then_removes_the_key() {
    let Some((dir, prefix)) = engine_dir("chef") else {
        return;
    };
    add_chef_target(&dir);
    dir.ok(&[
        "checkout",
        "--container-host",
        "broker-busybox",
        "--command",
        "sleep 3600",
    ]);
    let name = the_record(&dir)["name"].as_str().unwrap().to_owned();
    put_fake_chef_client(&dir, &name);

    let out = dir.run(&["handoff", "run", "0", "--target", "chef-acme", "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let record = the_record(&dir);
    assert_eq!(record["_broker_handoff_state"], "handed_off", "{record}");
    let log = log_of(&record);
    assert!(
        log.contains(
            &"fake chef-client: converged with {\"run_list\":[\"role[base]\",\"recipe[ntp::client]\"]}"
                .to_owned()
        ),
        "{log:?}"
    );
    assert_eq!(key_left(&dir), "removed\n");
    assert_eq!(
        on_host(
            &dir,
            "grep chef_server_url /etc/chef/client.rb; stat -c %a /etc/chef/client.rb"
        ),
        "chef_server_url 'https://chef.example.com/organizations/acme'\n644\n"
    );

    // A server the stand-in does not expect: it exits 1, and the key is removed all the same.
    dir.ok(&[
        "target",
        "update",
        "chef-acme",
        "-c",
        "chef_server_url=https://other.example.com",
    ]);
    let failed = dir.run(&["handoff", "run", "0"]);
    assert_eq!(failed.status.code(), Some(10), "{}", stderr(&failed));
    let record = the_record(&dir);
    assert_eq!(record["_broker_handoff_state"], "handoff_failed");
    assert_eq!(
        record["_broker_handoff_error"],
        "the Chef bootstrap exited with status 1"
    );
    assert!(
        log_of(&record).contains(
            &"fake chef-client: wrong server: chef_server_url 'https://other.example.com'"
                .to_owned()
        ),
        "{record}"
    );
    assert_eq!(key_left(&dir), "removed\n");

    let inventory = std::fs::read_to_string(dir.inventory_path()).unwrap();
    for shown in [
        inventory,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr(&out),
        String::from_utf8_lossy(&failed.stdout).into_owned(),
        stderr(&failed),
        dir.ok(&["target", "show", "chef-acme", "-o", "json"]),
    ] {
        assert!(!shown.contains(KEY_LINE), "{shown}");
    }
    dir.ok(&["checkin", "0"]);
    assert!(containers(&prefix).is_empty());
}
