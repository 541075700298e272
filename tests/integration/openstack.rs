//! `broker` against the OpenStack simulator (`tests/openstack-sim`): the OpenStack provider end to
//! end through the command line, with upstream's options and settings.

use std::process::Stdio;
use std::time::Duration;

use broker_test_support::Containers;
use openstack_sim::{FaultKind, PASSWORD, PROJECT, RealServers, Sim, SimOptions, USER};

use crate::util::{BrokerDir, ChildGuard, DEADLINE, stderr, wait_for};

/// An `OpenStack` section as upstream's users write it (password login, domains, API version),
/// polling fast, with a template; `extra` adds keys.
fn settings(sim: &Sim, extra: &str) -> String {
    format!(
        "OpenStack:\n  auth_url: {}\n  username: {USER}\n  password: {PASSWORD}\n  \
         project_name: {PROJECT}\n  user_domain_name: Default\n  project_domain_name: Default\n  \
         identity_api_version: 3\n  server_timeout: 30\n  server_poll_interval: 0.02\n  \
         templates:\n    small:\n      image: rhel-9.4\n      flavor: m1.small\n      \
         network: private\n{extra}",
        sim.auth_url()
    )
}

const RHEL: [&str; 7] = [
    "checkout",
    "--ostack-image",
    "rhel-9.4",
    "--ostack-flavor",
    "m1.small",
    "--ostack-network",
    "private",
];

#[test]
fn every_option_checks_out_and_the_record_checks_in() {
    let sim = Sim::start();
    let dir = BrokerDir::new(&settings(&sim, ""));
    let mut args = RHEL.to_vec();
    args.extend(["--ostack-key-name", "alice-key"]);
    dir.ok(&args);
    let inventory = dir.inventory();
    assert_eq!(inventory.len(), 1);
    let host = &inventory[0];
    let server = sim.servers().remove(0);
    assert_eq!(host["hostname"], "10.0.0.10");
    assert_eq!(host["instance_id"], server.id.as_str());
    assert_eq!(host["name"], server.name.as_str());
    assert_eq!(host["_broker_provider"], "OpenStack");
    assert_eq!(host["_broker_args"]["ostack_key_name"], "alice-key");
    assert_eq!(server.key_name.as_deref(), Some("alice-key"));
    let table = dir.ok(&["inventory"]);
    assert!(table.contains("10.0.0.10  OpenStack  rhel-9.4"), "{table}");
    dir.ok(&["checkin", "--all"]);
    assert!(sim.servers().is_empty());
    assert!(dir.inventory().is_empty());

    // --ostack-template, with an option over the template's value.
    dir.ok(&[
        "checkout",
        "--ostack-template",
        "small",
        "--ostack-flavor",
        "m1.large",
    ]);
    let server = sim.servers().remove(0);
    assert_eq!(server.flavor, sim.world().flavor("m1.large").unwrap().id);
    assert_eq!(server.image, sim.world().image("rhel-9.4").unwrap().id);
    dir.ok(&["checkin", "0"]);
    assert!(sim.servers().is_empty());
}

#[test]
fn user_errors_exit_13_and_a_wrong_password_exits_5() {
    let sim = Sim::start();
    let dir = BrokerDir::new(&settings(&sim, ""));
    let out = dir.run(&["checkout", "--ostack-image", "rhel-9.4"]);
    assert_eq!(out.status.code(), Some(13), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("missing required OpenStack parameters: flavor, network"),
        "{}",
        stderr(&out)
    );
    let out = dir.run(&[
        "checkout",
        "--ostack-image",
        "rhel-9.4",
        "--ostack-flavour",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("did you mean `ostack_flavor`?"),
        "{}",
        stderr(&out)
    );

    let wrong = BrokerDir::new(&settings(&sim, "").replace(PASSWORD, "not-her-password"));
    let out = wrong.run(&RHEL);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("refused the password login"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("not-her-password"));
    assert!(wrong.inventory().is_empty());
    assert!(sim.servers().is_empty());
}

#[test]
fn a_build_error_exits_7_with_novas_fault_and_leaves_nothing() {
    let sim = Sim::start();
    let dir = BrokerDir::new(&settings(&sim, ""));
    sim.inject(
        Some("POST"),
        "/compute/v2.1/servers",
        FaultKind::BuildError("No valid host was found.".into()),
        1,
    );
    let out = dir.run(&RHEL);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("failed to build: No valid host was found.; the server was deleted"),
        "{}",
        stderr(&out)
    );
    assert!(sim.unused_faults().is_empty());
    assert!(sim.servers().is_empty());
    assert!(dir.inventory().is_empty());
}

#[test]
fn kill_nine_mid_build_then_recover_deletes_the_server() {
    let sim = Sim::start_with(SimOptions {
        build_polls: u32::MAX,
        ..SimOptions::default()
    });
    let dir = BrokerDir::new(&settings(&sim, ""));
    let mut child = ChildGuard::spawn(
        dir.command(&RHEL)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    assert!(
        wait_for(Duration::from_secs(30), || !sim.servers().is_empty()),
        "the server was created"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait(DEADLINE);
    let pending = dir.inventory();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0]["_broker_state"], "pending");
    dir.ok(&["recover"]);
    assert!(sim.servers().is_empty());
    assert!(dir.inventory().is_empty());
}

#[test]
fn sync_adopts_only_brokers_servers_and_discovery_answers() {
    let sim = Sim::start();
    let dir = BrokerDir::new(&settings(&sim, ""));
    dir.ok(&RHEL);
    let mine = dir.inventory().remove(0);
    std::fs::write(dir.inventory_path(), "[]\n").unwrap();
    sim.world()
        .add_server("hand-made", "u-alice", serde_json::Map::new());
    let out = dir.run(&["inventory", "--sync", "OpenStack"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let synced = dir.inventory();
    assert_eq!(synced.len(), 1, "{synced:?}");
    for key in ["_broker_id", "hostname", "name", "instance_id"] {
        assert_eq!(synced[0][key], mine[key], "{key}");
    }
    let table = dir.ok(&["inventory"]);
    assert!(table.contains("10.0.0.10  OpenStack  rhel-9.4"), "{table}");
    dir.ok(&["checkin", "--all"]);
    let left: Vec<String> = sim.servers().into_iter().map(|s| s.name).collect();
    assert_eq!(left, ["hand-made"]);

    let images = dir.ok(&["providers", "OpenStack", "--images"]);
    assert!(images.contains("rhel-9.4-minimal ("), "{images}");
    let limited = dir.ok(&[
        "providers",
        "OpenStack",
        "--flavors",
        "--results-filter",
        "'large' in @res",
    ]);
    assert!(
        limited.contains("m1.large") && !limited.contains("m1.small"),
        "{limited}"
    );
    let networks = dir.ok(&["providers", "OpenStack", "--networks"]);
    assert!(
        networks.contains("private (") && networks.contains("public ("),
        "{networks}"
    );
    let templates = dir.ok(&["providers", "OpenStack", "--templates"]);
    assert!(
        templates.contains("small") && templates.contains("m1.small"),
        "{templates}"
    );
}

#[test]
fn upstream_openstack_settings_validate() {
    let sim = Sim::start();
    let dir = BrokerDir::new(&settings(
        &sim,
        "  region_name: RegionOne\n  interface: public\n  default_image: rhel-9.4\n  \
         default_flavor: m1.small\n  default_network: private\n  default_key_name: alice-key\n",
    ));
    let out = dir.run(&["config", "validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("OpenStack: ok"), "{}", stderr(&out));
    let typo = BrokerDir::new(&settings(&sim, "  server_timout: 60\n"));
    let out = typo.run(&["config", "validate"]);
    assert!(
        stderr(&out).contains("did you mean `server_timeout`?"),
        "{}",
        stderr(&out)
    );
}

/// The simulator's servers are real hosts (Podman containers serving SSH at the server's address):
/// `broker ssh` runs commands on what an OpenStack checkout made, over SSH, and the check-in removes
/// the container with the server.
#[test]
fn ssh_reaches_a_server_backed_by_a_container() {
    if !broker_test_support::podman() || !broker_test_support::sshd_image() {
        return;
    }
    let prefix = Containers::new(format!("os{}ssh", std::process::id()));
    let sim = Sim::start_with(SimOptions {
        containers: Some(RealServers {
            image: "localhost/broker-sshd".into(),
            name_prefix: prefix.to_string(),
            ssh_port: 2222,
        }),
        ..SimOptions::default()
    });
    let dir = BrokerDir::new(&format!(
        "{}ssh:\n  host_username: root\n  host_password: broker-test-password\n  \
         host_ssh_port: 2222\n  host_connection_timeout: 60\n",
        settings(&sim, "")
    ));
    dir.ok(&RHEL);
    let host = dir.inventory().remove(0);
    let server = sim.servers().remove(0);
    let address = host["hostname"].as_str().unwrap().to_owned();
    assert!(address.starts_with("127."), "{host}");
    assert_eq!(
        prefix.names(),
        [format!("{prefix}_{}", server.id)],
        "one container per server"
    );
    // SSH_CONNECTION is set only in an SSH session: `client-ip client-port server-ip 22`.
    let via = dir.ok(&["ssh", "0", "--", "echo \"$SSH_CONNECTION\""]);
    assert!(via.trim().ends_with(" 22"), "not over SSH: {via:?}");
    assert_eq!(
        dir.ok(&["ssh", &address, "--", "echo", "on-the-server"]),
        "on-the-server\n"
    );
    assert_eq!(
        dir.run(&["ssh", "0", "--", "exit 4"]).status.code(),
        Some(4)
    );
    dir.ok(&["checkin", "--all"]);
    assert!(sim.servers().is_empty());
    assert!(
        prefix.names().is_empty(),
        "the container went with the server"
    );
}
