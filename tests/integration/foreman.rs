//! `broker` against the Foreman simulator (`tests/foreman-sim`): the Foreman provider end to end
//! through the command line.

use foreman_sim::{FaultKind, LOCATION_TITLE, ORGANIZATION, PASSWORD, Sim, USER};

use crate::util::{BrokerDir, stderr};

/// The Python broker's settings shape: instances under `Foreman:`, `name_prefix` beside them.
fn settings(sim: &Sim, password: &str) -> String {
    format!(
        "Foreman:\n  instances:\n    lab:\n      foreman_url: {}\n      foreman_username: {USER}\n      \
         foreman_password: {password}\n      organization: {ORGANIZATION}\n      location: {LOCATION_TITLE}\n      \
         default: true\n  name_prefix: cli\n  poll_interval: 0.02\n",
        sim.url()
    )
}

/// `broker checkout --hostgroup` builds a host, `inventory` shows it, `providers Foreman` lists and
/// describes hostgroups, `inventory --sync Foreman` finds it again after the record is lost, and
/// `checkin` deletes it.
#[test]
fn checkout_discovery_sync_checkin() {
    let sim = Sim::start();
    let dir = BrokerDir::new(&settings(&sim, PASSWORD));
    dir.ok(&["checkout", "--hostgroup", "base/rhel9"]);
    let inventory = dir.inventory();
    assert_eq!(inventory.len(), 1, "{inventory:?}");
    let host = &inventory[0];
    let name = host["name"].as_str().unwrap().to_owned();
    assert!(
        name.starts_with("cli-") && name.ends_with(".sim.example.com"),
        "{host}"
    );
    assert_eq!(host["_broker_provider"], "Foreman");
    assert_eq!(host["_broker_provider_instance"], "lab");
    assert_eq!(host["hostgroup"], "base/rhel9");
    assert_eq!(sim.world().host_names(), std::slice::from_ref(&name));

    let listed = dir.ok(&["providers", "Foreman", "--hostgroups"]);
    for title in ["base", "base/rhel9", "fedora"] {
        assert!(listed.contains(title), "{listed}");
    }
    let described = dir.ok(&["providers", "Foreman", "--hostgroup", "base/rhel9"]);
    assert!(
        described.contains("RedHat 9.4") && described.contains("sim.example.com"),
        "{described}"
    );

    // Another tool's host whose name contains the prefix is not adopted by sync.
    sim.world().add_host("cli-web01.sim.example.com", "base");
    std::fs::write(dir.inventory_path(), "[]\n").unwrap();
    dir.ok(&["inventory", "--sync", "Foreman"]);
    let synced = dir.inventory();
    assert_eq!(synced.len(), 1, "{synced:?}");
    assert_eq!(synced[0]["name"], name.as_str());

    dir.ok(&["checkin", "--all"]);
    assert!(dir.inventory().is_empty());
    assert_eq!(sim.world().host_names(), ["cli-web01.sim.example.com"]);
}

/// A refused login is exit code 5 without the password; a failed build is exit code 7 naming the
/// build state, with nothing left at Foreman or in the inventory; `execute --hostgroup` is no action
/// (the Python broker's makes a host it never records).
#[test]
fn exit_codes_name_the_problem() {
    let sim = Sim::start();
    let bad = BrokerDir::new(&settings(&sim, "s3cr3t-wrong"));
    let out = bad.run(&["checkout", "--hostgroup", "base/rhel9"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Foreman refused the login"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("s3cr3t"), "{}", stderr(&out));
    let logged = std::fs::read_to_string(bad.path().join("logs/broker.log")).unwrap_or_default();
    assert!(!logged.contains("s3cr3t"), "{logged}");

    let dir = BrokerDir::new(&settings(&sim, PASSWORD));
    sim.inject(Some("POST"), "/api/hosts", FaultKind::FailBuild, 1);
    let out = dir.run(&["checkout", "--hostgroup", "base/rhel9"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "did not build: Foreman says `Installation error` (build_status 3); broker deleted it"
        ),
        "{}",
        stderr(&out)
    );
    assert!(sim.world().hosts.is_empty());
    assert!(dir.inventory().is_empty());

    let out = dir.run(&["execute", "--hostgroup", "base/rhel9"]);
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Foreman does not support execute"),
        "{}",
        stderr(&out)
    );
    assert!(sim.world().hosts.is_empty());
    assert!(dir.inventory().is_empty());
}

/// A Foreman host backed by a real machine (an sshd container, published on every loopback
/// address): its name does not resolve here, so broker reaches it over SSH at the address Foreman
/// gave it — `broker ssh` runs there, with its exit status, and no remote-execution job is made.
#[test]
fn ssh_reaches_a_host_at_the_address_foreman_gave_it() {
    if !broker_test_support::podman() || !broker_test_support::sshd_image() {
        return;
    }
    let sshd =
        broker_test_support::SshdContainer::start(&format!("it{}foreman", std::process::id()));
    let sim = Sim::start_with(foreman_sim::SimOptions {
        host_ip: Some("127.0.0.1".into()),
        ..foreman_sim::SimOptions::default()
    });
    let dir = BrokerDir::new(&format!(
        "{}ssh:\n  host_ssh_port: {}\n  host_password: {}\n",
        settings(&sim, PASSWORD),
        sshd.port(),
        broker_test_support::SSHD_IMAGE_PASSWORD
    ));
    dir.ok(&["checkout", "--hostgroup", "base/rhel9"]);
    let host = dir.inventory().remove(0);
    assert_eq!(host["ip"], "127.0.0.1", "{host}");
    // SSH_CONNECTION is set only in an SSH session: `client-ip client-port server-ip 22`.
    let via = dir.ok(&["ssh", "0", "--", "echo \"$SSH_CONNECTION\""]);
    assert!(via.trim().ends_with(" 22"), "not over SSH: {via:?}");
    assert_eq!(
        dir.run(&["ssh", "0", "--", "exit 4"]).status.code(),
        Some(4)
    );
    assert!(
        sim.world().jobs.is_empty(),
        "ran through remote execution: {:?}",
        sim.world().jobs
    );
    dir.ok(&["checkin", "--all"]);
    assert!(sim.world().host_names().is_empty());
}
