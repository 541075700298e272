//! `broker` against the AWX simulator (`tests/awx-sim`): the AnsibleTower provider end to end
//! through the command line.

use std::process::Stdio;
use std::time::Duration;

use awx_sim::{ALICE_PASSWORD, ALICE_TOKEN, Sim, SimOptions};

use crate::util::{BrokerDir, ChildGuard, DEADLINE, Terminal, client_check, stderr, wait_for};

fn settings(sim: &Sim, extra: &str) -> String {
    format!(
        "AnsibleTower:\n  base_url: {}\n  token: {ALICE_TOKEN}\n  workflow_poll_interval: 0.02\n{extra}\
         nicks:\n  rhel9:\n    workflow: deploy-rhel\n    deploy_rhel_version: '9.4'\n",
        sim.url()
    )
}

/// Waits until the first job the simulator launched runs.
fn wait_until_running(sim: &Sim) {
    assert!(
        wait_for(Duration::from_secs(20), || sim
            .world()
            .job_statuses()
            .first()
            .is_some_and(|j| j.2 == "running")),
        "the workflow started"
    );
}

#[test]
fn checkout_inventory_extend_checkin() {
    let sim = Sim::start();
    let dir = BrokerDir::new(&settings(&sim, ""));
    let out = dir.run(&[
        "checkout",
        "--nick",
        "rhel9",
        "--provider-labels",
        "team=qe",
        "--tower-inventory",
        "alice-lab",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(
        log.contains("API: http://") && log.contains("/api/v2/workflow_jobs/"),
        "{log}"
    );
    assert!(
        log.contains("UI:  http://") && log.contains("/#/jobs/workflow/"),
        "{log}"
    );

    let inventory = dir.inventory();
    assert_eq!(inventory.len(), 1);
    let host = &inventory[0];
    let name = host["name"].as_str().unwrap().to_owned();
    assert!(name.starts_with("alice-rhel-9.4-"), "{host}");
    assert_eq!(host["_broker_provider"], "AnsibleTower");
    assert_eq!(host["tower_inventory"], "alice-lab");
    assert_eq!(host["_broker_args"]["workflow"], "deploy-rhel");
    assert!(sim.world().label_names().contains(&"team=qe".to_owned()));
    // The upstream-style table shows the workflow as the action.
    let table = dir.ok(&["inventory"]);
    assert!(
        table.contains("deploy-rhel") && table.contains(&name),
        "{table}"
    );

    dir.ok(&["extend", "0", "--new-expire-time", "+3600", "-l", "stage=2"]);
    assert_eq!(sim.vms()[&name].expire, "+3600");
    assert!(sim.world().label_names().contains(&"stage=2".to_owned()));
    let extend = &sim.world().launches("extend-vm")[0];
    assert_eq!(extend["target_vm"], name.as_str());

    dir.ok(&["checkin", "0"]);
    assert!(sim.vms().is_empty(), "remove-vm ran");
    assert!(dir.inventory().is_empty());
    let release = &sim.world().launches("remove-vm")[0];
    assert_eq!(release["source_vm"], name.as_str());
}

/// A lease on an AWX checkout is recorded and goes to the workflow as the extra var
/// `_broker_expire_time` (never to the release); `extend --lease` moves broker's lease and runs AWX's
/// own extend workflow as well, which moves the VM's expiry as its `new_expire_time` says.
#[test]
fn a_lease_is_recorded_given_to_the_workflow_and_extended_at_awx_too() {
    let sim = Sim::start();
    let dir = BrokerDir::new(&settings(&sim, ""));
    let before = broker_core::time::now_epoch();
    dir.ok(&["checkout", "--nick", "rhel9", "--lease", "2h"]);
    let after = broker_core::time::now_epoch();
    let host = dir.inventory().remove(0);
    let name = host["name"].as_str().unwrap().to_owned();
    let at = host["_broker_expire_time"].as_i64().unwrap();
    assert!((before + 7200..=after + 7200).contains(&at), "{host}");
    let deploy = &sim.world().launches("deploy-rhel")[0];
    assert_eq!(deploy["_broker_expire_time"].as_i64(), Some(at), "{deploy}");

    let before = broker_core::time::now_epoch();
    dir.ok(&["extend", "0", "--lease", "1d"]);
    let after = broker_core::time::now_epoch();
    let moved = dir.inventory()[0]["_broker_expire_time"].as_i64().unwrap();
    assert!(
        (before + 86_400..=after + 86_400).contains(&moved),
        "{moved}"
    );
    let extends = sim.world().launches("extend-vm");
    assert_eq!(extends.len(), 1, "AWX's own extend ran: {extends:?}");
    assert_eq!(extends[0]["target_vm"], name.as_str());
    assert_eq!(extends[0]["new_expire_time"], "+172800", "the setting's");
    assert!(
        extends[0].get("_broker_expire_time").is_none(),
        "{}",
        extends[0]
    );

    dir.ok(&["checkin", "0"]);
    let release = &sim.world().launches("remove-vm")[0];
    assert_eq!(release["source_vm"], name.as_str());
    assert!(release.get("_broker_expire_time").is_none(), "{release}");
    assert!(sim.vms().is_empty());
}

/// `extend --sequential` launches a host's extend job only when the one before it has finished: while
/// the first job runs (and runs on), the second is never launched.
#[test]
fn extend_sequential_extends_one_host_after_the_other() {
    let sim = Sim::start();
    let dir = BrokerDir::new(&settings(&sim, ""));
    dir.ok(&["checkout", "--nick", "rhel9", "-c", "2"]);
    sim.world().options.running_polls = u32::MAX;
    let mut extend = ChildGuard::spawn(
        dir.command(&[
            "extend",
            "--all",
            "--sequential",
            "--new-expire-time",
            "+3600",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null()),
    );
    assert!(
        wait_for(DEADLINE, || !sim.world().launches("extend-vm").is_empty()),
        "no extend job was launched"
    );
    crate::util::signal(&extend, "TERM");
    assert_eq!(extend.wait(DEADLINE).code(), Some(130));
    assert_eq!(sim.world().launches("extend-vm").len(), 1);
}

#[test]
fn exit_codes_name_the_problem() {
    let sim = Sim::start();
    let dir = BrokerDir::new(&settings(&sim, ""));
    // A workflow that fails: 7, with the reason and the job's address; the VM it made is released.
    let out = dir.run(&["checkout", "--nick", "rhel9", "--sim_fail", "configure"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(text.contains("No space left on device"), "{text}");
    assert!(text.contains("/#/jobs/workflow/"), "{text}");
    assert!(sim.vms().is_empty());
    assert!(dir.inventory().is_empty());
    // A workflow that does not exist: 13, with close names.
    let out = dir.run(&["checkout", "--workflow", "deploy-rhle"]);
    assert_eq!(out.status.code(), Some(13), "{}", stderr(&out));
    assert!(stderr(&out).contains("deploy-rhel"), "{}", stderr(&out));
    // Declared options are spelled with dashes, as upstream's: an ambiguous inventory name is 13.
    let out = dir.run(&["checkout", "--nick", "rhel9", "--tower-inventory", "lab"]);
    assert_eq!(out.status.code(), Some(13), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("ambiguous AnsibleTower inventory `lab`"),
        "{}",
        stderr(&out)
    );
    // A token AWX refuses: 5.
    let bad = BrokerDir::new(&format!(
        "AnsibleTower:\n  base_url: {}\n  token: expired\n",
        sim.url()
    ));
    let out = bad.run(&["checkout", "--workflow", "deploy-rhel"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(!stderr(&out).contains("expired"), "the token is not shown");
    assert!(bad.inventory().is_empty());
}

#[test]
fn dangling_store_keeps_the_failed_host_for_a_later_checkin() {
    let sim = Sim::start();
    let dir = BrokerDir::new(&settings(&sim, "  dangling_behavior: store\n"));
    dir.expect(
        &["checkout", "--nick", "rhel9", "--sim_fail", "configure"],
        7,
    );
    let inventory = dir.inventory();
    assert_eq!(inventory.len(), 1);
    assert_eq!(inventory[0]["deploy_failed"], true);
    assert_eq!(sim.vms().len(), 1);
    dir.ok(&["checkin", "--all"]);
    assert!(sim.vms().is_empty());
}

#[test]
fn dangling_prompt_asks_on_the_terminal() {
    let sim = Sim::start();
    let dir = BrokerDir::new(&settings(&sim, "  dangling_behavior: prompt\n"));
    let mut session = Terminal::start(&mut dir.in_terminal(
        "",
        "checkout --nick rhel9 --sim_fail configure; echo broker-rc=$?",
    ));
    assert!(
        wait_for(DEADLINE, || !sim.world().launches("deploy-rhel").is_empty()
            && sim.vms().len() == 1),
        "the failing workflow ran"
    );
    session.wait_for_text("What would you like to do with this host?");
    session.type_keys("maybe\r");
    session.wait_for_text("Please answer c, s, cA or sA");
    session.type_keys("c\r");
    let (_, text) = session.finish();
    assert!(
        text.contains("What would you like to do with this host?"),
        "{text}"
    );
    assert!(text.contains("Please answer c, s, cA or sA"), "{text}");
    assert!(text.contains("broker-rc=7"), "{text}");
    assert!(sim.vms().is_empty(), "answered `c`: checked in");
    assert!(dir.inventory().is_empty());
}

const DANGLING_QUESTION: &str = "What would you like to do with this host?";

/// Checks out two hosts whose workflows both fail after making their VMs, with
/// `dangling_behavior: prompt`, on a terminal: answers the questions with `answers` in turn, and any
/// further question with `otherwise`. Returns what the terminal showed and how many questions it
/// asked.
fn checkout_answering_dangling(
    sim: &Sim,
    dir: &BrokerDir,
    answers: &[&str],
    otherwise: &str,
) -> (String, usize) {
    let mut session = Terminal::start(&mut dir.in_terminal(
        "",
        "checkout --nick rhel9 --sim_fail configure -c 2; echo broker-rc=$?",
    ));
    let mut answered = 0;
    let ended = wait_for(DEADLINE, || {
        let shown = session.shown();
        if shown.matches(DANGLING_QUESTION).count() > answered {
            let answer = answers.get(answered).copied().unwrap_or(otherwise);
            session.type_keys(&format!("{answer}\r"));
            answered += 1;
        }
        shown.contains("broker-rc=")
    });
    let (_, text) = session.finish();
    assert!(ended, "the checkout never ended: {text}");
    assert!(text.contains("broker-rc=7"), "{text}");
    assert_eq!(sim.world().launches("deploy-rhel").len(), 2, "{text}");
    (text, answered)
}

#[test]
fn dangling_prompt_s_stores_and_c_checks_in_one_host_each() {
    let sim = Sim::start();
    let dir = BrokerDir::new(&settings(&sim, "  dangling_behavior: prompt\n"));
    let (text, asked) = checkout_answering_dangling(&sim, &dir, &["s", "c"], "c");
    assert_eq!(asked, 2, "a question per host: {text}");
    let inventory = dir.inventory();
    assert_eq!(inventory.len(), 1, "{inventory:?}");
    assert_eq!(inventory[0]["deploy_failed"], true);
    let vms = sim.vms();
    assert_eq!(vms.len(), 1, "answered `c` for one: {vms:?}");
    dir.ok(&["checkin", "--all"]);
    assert!(sim.vms().is_empty());
}

#[test]
fn dangling_prompt_ca_checks_in_every_host_after_one_question() {
    let sim = Sim::start();
    let dir = BrokerDir::new(&settings(&sim, "  dangling_behavior: prompt\n"));
    let (text, asked) = checkout_answering_dangling(&sim, &dir, &["cA"], "s");
    assert_eq!(asked, 1, "`cA` answers for the next host too: {text}");
    assert!(sim.vms().is_empty(), "{:?}", sim.vms());
    assert!(dir.inventory().is_empty());
}

#[test]
fn dangling_prompt_sa_stores_every_host_after_one_question() {
    let sim = Sim::start();
    let dir = BrokerDir::new(&settings(&sim, "  dangling_behavior: prompt\n"));
    let (text, asked) = checkout_answering_dangling(&sim, &dir, &["sA"], "c");
    assert_eq!(asked, 1, "`sA` answers for the next host too: {text}");
    let inventory = dir.inventory();
    assert_eq!(inventory.len(), 2, "{inventory:?}");
    assert!(inventory.iter().all(|r| r["deploy_failed"] == true));
    assert_eq!(sim.vms().len(), 2);
    dir.ok(&["checkin", "--all"]);
    assert!(sim.vms().is_empty());
}

#[test]
fn ctrl_c_mid_workflow_cancels_it_and_deletes_the_temporary_token() {
    let sim = Sim::start_with(SimOptions {
        running_polls: 1_000_000,
        ..SimOptions::default()
    });
    let dir = BrokerDir::new(&format!(
        "AnsibleTower:\n  base_url: {}\n  username: alice\n  password: {ALICE_PASSWORD}\n  workflow_poll_interval: 0.05\n",
        sim.url()
    ));
    let child = ChildGuard::spawn(
        dir.command(&["checkout", "--workflow", "deploy-rhel"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    wait_until_running(&sim);
    assert_eq!(
        sim.world().tokens.len(),
        2,
        "alice's own and broker's temporary one"
    );
    crate::util::interrupt(&child);
    let out = child.wait_output(DEADLINE);
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let world = sim.world();
    assert_eq!(world.job_statuses()[0].2, "canceled");
    assert_eq!(world.tokens.len(), 1, "the temporary token is gone");
    assert_eq!(world.deleted_tokens.len(), 1);
    drop(world);
    assert!(dir.inventory().is_empty());
    assert!(sim.vms().is_empty());
}

#[test]
fn sync_discovery_and_execute() {
    let sim = Sim::start();
    let dir = BrokerDir::new(&settings(&sim, ""));
    dir.ok(&["checkout", "--nick", "rhel9"]);
    // Forget the host locally, then find it again through the provider.
    std::fs::write(dir.inventory_path(), "[]\n").unwrap();
    let out = dir.run(&["inventory", "--sync", "AnsibleTower"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let inventory = dir.inventory();
    assert_eq!(inventory.len(), 1, "{inventory:?}");
    assert_eq!(inventory[0]["os_distribution"], "RedHat");
    dir.ok(&["checkin", "--all"]);
    assert!(sim.vms().is_empty());

    let workflows = dir.ok(&[
        "providers",
        "AnsibleTower",
        "--workflows",
        "--results-limit",
        "2",
    ]);
    assert_eq!(workflows.lines().count(), 2, "{workflows}");
    let filtered = dir.ok(&[
        "providers",
        "AnsibleTower",
        "--workflows",
        "--results-filter",
        "'rhel' in @res",
    ]);
    assert!(
        filtered.contains("deploy-rhel") && !filtered.contains("remove-vm"),
        "{filtered}"
    );
    let one = dir.ok(&["providers", "AnsibleTower", "--workflow", "deploy-rhel"]);
    assert!(
        one.contains("deploy_rhel_version") && one.contains("alice-lab"),
        "{one}"
    );
    let flavors = dir.ok(&["providers", "AnsibleTower", "--flavors"]);
    assert!(flavors.contains("m1.small"), "{flavors}");

    let job = dir.ok(&[
        "execute",
        "--job-template",
        "run-command",
        "--command",
        "df -h",
        "--artifacts",
        "last",
    ]);
    assert!(job.contains("ran df -h"), "{job}");
}

/// The official AWX client, awxkit, drives the simulator the way the Python broker did (log in,
/// find templates, launch, wait, read nodes, artifacts and events, paginate, meet AWX's errors), so
/// the simulator these tests rely on speaks AWX. scripts/setup-awxkit installs it; without it this
/// fails unless `BROKER_ALLOW_SKIP=1` is set.
#[test]
fn awxkit_speaks_to_the_simulator() {
    let Some(python) = broker_test_support::awxkit_python() else {
        return;
    };
    let sim = Sim::start();
    client_check(
        &python,
        "awxkit/speaks_awx.py",
        &[&sim.url(), ALICE_TOKEN],
        "awxkit OK",
    );
    assert!(sim.vms().is_empty(), "awxkit released what it deployed");
}

/// Hosts the Python broker checked out (its inventory file, unchanged) are checked in by this
/// broker through their own instance, with their recorded arguments and inventory.
#[test]
fn hosts_recorded_by_the_python_broker_check_in() {
    let sim = Sim::start();
    let rhv = sim.world().inventory("rhv-inventory");
    let dir = BrokerDir::new(&format!(
        "AnsibleTower:\n  token: {ALICE_TOKEN}\n  workflow_poll_interval: 0.02\n  instances:\n    \
         rhv:\n      base_url: {}\n",
        sim.url()
    ));
    std::fs::write(
        dir.inventory_path(),
        include_str!("../fixtures/upstream_inventory.yaml"),
    )
    .unwrap();
    let before = dir.inventory().len();
    dir.ok(&[
        "checkin",
        "--all",
        "--filter",
        "@inv._broker_provider == 'AnsibleTower'",
    ]);
    let after = dir.inventory();
    assert_eq!(after.len(), before - 2);
    assert!(
        after
            .iter()
            .all(|r| r["_broker_provider"] != "AnsibleTower")
    );
    let world = sim.world();
    let mut released: Vec<String> = world
        .launches("remove-vm")
        .iter()
        .map(|v| v["source_vm"].as_str().unwrap().to_owned())
        .collect();
    released.sort();
    assert_eq!(
        released,
        [
            "jdoe-rhel-8.6-6e74d20e",
            "jdoe-sat-jenkins-6.11.4-3.0-rhel8.6-c940f469"
        ]
    );
    for launch in world.launch_requests() {
        assert_eq!(
            launch.body["inventory"], rhv,
            "the recorded tower_inventory"
        );
        let vars: serde_json::Value =
            serde_json::from_str(launch.body["extra_vars"].as_str().unwrap()).unwrap();
        assert_eq!(vars["workflow"], "remove-vm");
        assert_eq!(vars["deploy_rhel_version"], "8.6", "the recorded arguments");
    }
}

/// `kill -9` while the workflow runs: the pending record names no job, but the job carries the record's
/// id, so `broker recover` (another process) finds it, cancels it, and nothing is left.
#[test]
fn kill_nine_mid_workflow_then_recover() {
    let sim = Sim::start_with(SimOptions {
        running_polls: 1_000_000,
        ..SimOptions::default()
    });
    let dir = BrokerDir::new(&settings(&sim, ""));
    let mut child = ChildGuard::spawn(
        dir.command(&["checkout", "--nick", "rhel9"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_until_running(&sim);
    child.kill().unwrap(); // SIGKILL
    child.wait(DEADLINE);
    let pending = dir.inventory();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0]["_broker_state"], "pending");
    dir.ok(&["recover"]);
    assert_eq!(sim.world().job_statuses()[0].2, "canceled");
    assert!(dir.inventory().is_empty());
    assert!(sim.vms().is_empty());
}

#[test]
fn output_file_has_the_python_brokers_keys() {
    let sim = Sim::start();
    let dir = BrokerDir::new(&settings(&sim, ""));
    let file = dir.path().join("out.json");
    let read = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap()
    };
    let file_arg = file.display().to_string();
    let run = dir.run(&["--output-file", &file_arg, "checkout", "--nick", "rhel9"]);
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    // The addresses are logged once, in words, not again as raw fields.
    let log = stderr(&run);
    assert!(
        log.contains("UI:  http://") && !log.contains("ui_url="),
        "{log}"
    );
    let out = read();
    assert_eq!(out["return_code"], 0);
    assert_eq!(out["provider"], "AnsibleTower");
    assert_eq!(out["action"], "workflow");
    assert_eq!(out["arguments"]["workflow"], "deploy-rhel");
    assert_eq!(out["auth_type"], "token");
    let ui = out["ui_url"].as_str().unwrap();
    assert!(ui.contains("/#/jobs/workflow/"), "{out}");
    let api = out["api_url"].as_str().unwrap();
    assert!(api.contains("/api/v2/workflow_jobs/"), "{out}");
    assert_eq!(out["hosts"].as_array().unwrap().len(), 1);
    dir.ok(&["checkin", "--all"]);

    // A failed workflow: its status, reasons and address, as upstream writes them.
    let run = dir.run(&[
        "--output-file",
        &file_arg,
        "checkout",
        "--nick",
        "rhel9",
        "--sim_fail",
        "configure",
    ]);
    assert_eq!(run.status.code(), Some(7), "{}", stderr(&run));
    let out = read();
    assert_eq!(out["return_code"], 7);
    assert_eq!(out["Workflow Status"], "failed", "{out}");
    let reasons = out["Reason(s)"].as_array().expect("a list of reasons");
    assert!(
        reasons
            .iter()
            .any(|r| r.as_str().unwrap().contains("No space left on device")),
        "{out}"
    );
    assert!(
        out["URL"].as_str().unwrap().contains("/#/jobs/workflow/"),
        "{out}"
    );
    assert!(
        out["error_message"]
            .as_str()
            .unwrap()
            .contains("No space left"),
        "{out}"
    );
}
