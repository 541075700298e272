//! `broker scenarios`: the scenario files of `tests/fixtures/scenarios` run by the real binary
//! against TestProvider hosts and an sshd container, and from Rust through the library.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::util::{BrokerDir, ChildGuard, DEADLINE, SETTINGS, client_check, stderr, wait_for};

/// A fixture scenario file.
fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/scenarios")
        .join(name)
}

/// A scratch directory holding copies of the fixtures `names` and a file to upload.
fn work_with(names: &[&str]) -> tempfile::TempDir {
    let work = tempfile::tempdir().unwrap();
    for name in names {
        std::fs::copy(fixture(name), work.path().join(name)).unwrap();
    }
    std::fs::write(work.path().join("upload.txt"), "payload\n").unwrap();
    work
}

fn text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs `broker scenarios execute ARGS…`, returning (exit code, stdout, stderr).
fn execute(dir: &BrokerDir, args: &[&str]) -> (Option<i32>, String, String) {
    let mut full = vec!["scenarios", "execute"];
    full.extend_from_slice(args);
    let out = dir.run(&full);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr(&out),
    )
}

#[test]
fn every_action_and_step_key_runs_on_test_provider_hosts() {
    let dir = BrokerDir::new(SETTINGS);
    let work = work_with(&["every_action.yaml", "nested.yaml"]);
    let w = work.path().to_str().unwrap();
    let scenario = work.path().join("every_action.yaml");
    let (code, out, err) = execute(
        &dir,
        &[scenario.to_str().unwrap(), "--WORK", w, "--GREETING", "hi"],
    );
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");

    let summary: Value = serde_json::from_str(&text(&work.path().join("summary.json"))).unwrap();
    let statuses = [
        ["completed"; 16].as_slice(),
        &[
            "skipped",
            "failed",
            "failed",
            "completed",
            "failed",
            "running",
        ],
    ]
    .concat();
    let want = json!({
        "made": 2,
        "greetings": ["hi\n", "hi\n"],
        "uploaded": ["payload", "payload"],
        "noted": 2,
        "inventory_loop": ["basic\n", "basic\n"],
        "ports": {
            "http": {"stdout": "http=80\n", "stderr": "", "status": 0},
            "ssh": {"stdout": "ssh=22\n", "stderr": "", "status": 0},
        },
        "loop_checks": {"1": true, "2": {"error": "scenario `every_action`: too big: n < 2"}},
        "inventory_hosts": 2,
        "provider_hosts": 2,
        "executed": "hi",
        "local": {"stdout": format!("tester in {w}\n"), "stderr": "oops\n", "status": 3},
        "attempts": 2,
        "statuses": statuses,
        "previous": "ignored failure",
    });
    assert_eq!(summary, want);
    // Each iteration of the host loop appended a line, one per host.
    let mut noted: Vec<String> = text(&work.path().join("hosts.txt"))
        .lines()
        .map(str::to_owned)
        .collect();
    noted.sort();
    noted.dedup();
    assert_eq!(noted.len(), 2, "{noted:?}");
    let names = dir.provider_hosts();
    assert!(
        noted
            .iter()
            .all(|n| n.starts_with("broker-test-") && n.ends_with(" TestProvider")),
        "{noted:?}"
    );
    assert!(
        noted.contains(&format!("{} TestProvider", names[0])),
        "{noted:?}"
    );
    assert_eq!(text(&work.path().join("downloaded/again.txt")), "payload\n");
    assert_eq!(
        text(&work.path().join("recovery.txt")),
        "recovered after failed\n"
    );
    assert_eq!(
        text(&work.path().join("nested.txt")),
        "nested ran with hi\n"
    );
    // `output` to stdout; the progress on stderr.
    assert!(out.starts_with("hi\n"), "{out}");
    for shown in [
        "every_action: step `passes on its second attempt` failed (scenario `every_action`: not yet: retry.attempt >= 2); attempt 2 of 3",
        "every_action: step `skipped` skipped",
        "every_action: step `tolerated failure` failed: scenario `every_action`: tolerated (condition #2): 1 == 2, continuing",
        "every_action: step `check one host in` done",
        "hosts still checked out:",
    ] {
        assert!(err.contains(shown), "{shown:?} not in:\n{err}");
    }
    assert!(!err.contains("never runs"), "{err}");

    // One host was checked in by the scenario; the other stays the user's, listed in the scenario
    // inventory.
    let inventory = dir.inventory();
    assert_eq!(inventory.len(), 1, "{inventory:?}");
    assert_eq!(names.len(), 1);
    let listed = text(&dir.path().join("scenario_every_action_inventory.yaml"));
    assert!(
        listed.contains("api_password:") && !listed.contains("hi-secret"),
        "the password argument is not masked: {listed}"
    );
    let listed: Vec<Value> = serde_yaml::from_str(&listed).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["_broker_id"], inventory[0]["_broker_id"]);
    assert_eq!(
        inventory[0]["_broker_args"]["_broker_origin"],
        "scenario:every_action"
    );
    assert!(
        out.contains(inventory[0]["name"].as_str().unwrap()),
        "the table shows the host: {out}"
    );
    dir.ok(&["checkin", "--all"]);
    dir.assert_nothing_out();
}

#[test]
fn variables_from_the_command_line_take_the_types_of_the_files() {
    let dir = BrokerDir::new(SETTINGS);
    let scenario = fixture("typed_variables.yaml");
    let scenario = scenario.to_str().unwrap();
    let (code, _, err) = execute(&dir, &[scenario]);
    assert_eq!(code, Some(16), "{err}");
    assert!(
        err.contains(
            "error: scenario `typed_variables` step `the overrides arrived typed`: wrong types \
             (condition #1): flag is sameas true"
        ),
        "{err}"
    );
    let (code, out, err) = execute(
        &dir,
        &[
            scenario,
            "--flag",
            "yes",
            "--n",
            "41",
            "--ratio=1.5",
            "--items",
            "[1, 2]",
            "--options",
            r#"{"k": "v"}"#,
            "text=7",
        ],
    );
    assert_eq!(code, Some(0), "{out}\n{err}");
}

#[test]
fn a_failed_scenario_checks_its_hosts_in_unless_asked_to_keep_them() {
    let dir = BrokerDir::new(SETTINGS);
    let scenario = fixture("fails_after_checkout.yaml");
    let scenario = scenario.to_str().unwrap();
    let (code, _, err) = execute(&dir, &[scenario]);
    assert_eq!(code, Some(16), "{err}");
    assert!(
        err.contains(
            "error: scenario `fails_after_checkout` step `count the hosts`: wrong number of \
             hosts: scenario_inventory | length == EXPECTED"
        ),
        "{err}"
    );
    dir.assert_nothing_out();
    let listed = text(
        &dir.path()
            .join("scenario_fails_after_checkout_inventory.yaml"),
    );
    assert_eq!(listed.trim(), "[]");

    let (code, _, err) = execute(&dir, &["--keep-hosts-on-failure", scenario]);
    assert_eq!(code, Some(16), "{err}");
    assert_eq!(dir.inventory().len(), 1);
    assert_eq!(dir.provider_hosts().len(), 1);
    dir.ok(&["checkin", "--all"]);

    // The same file passes when told how many hosts to expect; its host stays checked out.
    let (code, _, err) = execute(&dir, &[scenario, "--EXPECTED", "1"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(dir.inventory().len(), 1);
    dir.ok(&["checkin", "--all"]);
    dir.assert_nothing_out();
}

/// Whether process `pid` has ended (gone, or a zombie left for init to reap).
fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn local_exec_timeouts_stop_the_commands_whole_process_group() {
    let dir = BrokerDir::new(SETTINGS);
    let work = work_with(&["local_timeouts.yaml"]);
    let scenario = work.path().join("local_timeouts.yaml");
    let (code, out, err) = execute(
        &dir,
        &[
            scenario.to_str().unwrap(),
            "--WORK",
            work.path().to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(16), "{out}\n{err}");
    assert!(
        err.contains(
            "error: scenario `local_timeouts` step `step timeout`: `local_exec` failed: step \
             `step timeout` timed out after 1s"
        ),
        "{err}"
    );
    assert!(!out.contains("unreachable"), "{out}");
    for file in ["first.pid", "second.pid"] {
        let pid: u32 = text(&work.path().join(file)).trim().parse().unwrap();
        assert!(
            wait_for(Duration::from_secs(10), || ended(pid)),
            "the background child of the timed-out command ({file}: {pid}) still runs"
        );
    }
}

#[test]
fn config_settings_from_the_command_line_reach_the_provider() {
    let dir = BrokerDir::new(SETTINGS);
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().to_str().unwrap();
    let scenario = fixture("settings_override.yaml");
    let (code, out, err) = execute(
        &dir,
        &[
            scenario.to_str().unwrap(),
            "--config.settings.TestProvider.instances.local.state_dir",
            state_dir,
        ],
    );
    assert_eq!(code, Some(0), "{out}\n{err}");
    let shown = format!("{state_dir}/hosts/broker-test-");
    assert!(
        out.starts_with(&shown) && out.trim_end().ends_with("/root"),
        "{out}"
    );
    // Checked in by the scenario, at the state directory the override named.
    dir.assert_nothing_out();
    assert_eq!(
        std::fs::read_dir(state.path().join("hosts"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn a_scenario_killed_mid_run_leaves_nothing_recover_and_reap_cannot_clean() {
    let dir = BrokerDir::new(SETTINGS);
    let work = tempfile::tempdir().unwrap();
    let scenario = work.path().join("killed.yaml");
    std::fs::write(
        &scenario,
        "steps:\n  - {name: two hosts, action: checkout, arguments: {test_action: basic, count: 2}}\n  \
         - {name: wait, action: local_exec, arguments: {command: sleep 30, timeout: 60}}\n",
    )
    .unwrap();
    let mut child = ChildGuard::spawn(
        dir.command(&["scenarios", "execute", scenario.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    let listed = dir.path().join("scenario_killed_inventory.yaml");
    assert!(
        wait_for(DEADLINE, || std::fs::read_to_string(&listed)
            .is_ok_and(|t| t.matches("_broker_id").count() == 2)),
        "the scenario never listed its two hosts"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait(DEADLINE);
    assert_eq!(dir.inventory().len(), 2);
    // The two hosts were checked out and held when the scenario died: recover (for checkouts and
    // check-ins under way) leaves them, and says which verb takes them.
    let recovered = dir.run(&["recover"]);
    assert_eq!(recovered.status.code(), Some(0));
    assert!(
        stderr(&recovered).contains(
            "2 checked-out host(s) held by processes that are gone (not in the middle of a checkout \
             or check-in, so not for recover); `broker reap --abandoned` checks them in"
        ),
        "{}",
        stderr(&recovered)
    );
    dir.ok(&["reap", "--abandoned"]);
    dir.assert_nothing_out();
}

#[test]
fn scenarios_are_listed_shown_validated_migrated_and_imported() {
    let dir = BrokerDir::new(SETTINGS);
    let scenarios = dir.path().join("scenarios");
    std::fs::create_dir_all(scenarios.join("team")).unwrap();
    std::fs::copy(
        fixture("every_action.yaml"),
        scenarios.join("team/every_action.yaml"),
    )
    .unwrap();
    std::fs::copy(
        fixture("typed_variables.yaml"),
        scenarios.join("typed.yaml"),
    )
    .unwrap();
    std::fs::write(
        scenarios.join("broken.yaml"),
        "steps: [{name: x, action: fly}]\n",
    )
    .unwrap();

    let listed = dir.ok(&["scenarios", "list"]);
    assert_eq!(
        listed,
        "Name          Path\n────────────  ──────────────\nbroken        scenarios\nevery_action  scenarios/team\ntyped         scenarios\n"
    );
    let tagged = dir.ok(&["scenarios", "list", "--tag", "smoke"]);
    assert!(
        tagged.contains("every_action") && !tagged.contains("typed"),
        "{tagged}"
    );
    let by_author = dir.ok(&["scenarios", "list", "--filter", r#""tests" in @res.author"#]);
    assert!(by_author.contains("every_action") && !by_author.contains("broken"));

    let info: serde_yaml::Value =
        serde_yaml::from_str(&dir.ok(&["scenarios", "info", "typed", "--no-syntax"])).unwrap();
    assert_eq!(info["name"], "typed");
    assert_eq!(info["spec_version"], 2);
    assert_eq!(info["variables"]["n"], 1);
    assert_eq!(
        serde_yaml::to_string(&info["steps"]).unwrap(),
        "- name: the overrides arrived typed\n  action: assert\n"
    );

    assert_eq!(
        dir.ok(&["scenarios", "validate", "every_action"]),
        "scenario `every_action` is valid\n"
    );
    let out = dir.run(&["scenarios", "validate", "broken"]);
    assert_eq!(out.status.code(), Some(16));
    assert!(
        stderr(&out).contains("scenario `broken`: invalid: the file does not follow the scenario format: at '/steps/0/action'"),
        "{}",
        stderr(&out)
    );
    assert!(dir.run(&["scenarios", "validate", "missing"]).status.code() == Some(16));

    assert_eq!(
        dir.ok(&["scenarios", "migrate", "typed", "--dry-run"]),
        "dry run: would migrate `typed` from version 2 to 3\n"
    );
    let migrated = dir.ok(&["scenarios", "migrate", "typed"]);
    assert!(
        migrated.starts_with("migrated `typed` from version 2 to 3"),
        "{migrated}"
    );
    assert!(text(&scenarios.join("typed.yaml")).contains("_spec_ver: 3\n"));
    assert_eq!(
        text(&scenarios.join("typed.yaml.bak")),
        text(&fixture("typed_variables.yaml"))
    );

    let imported = dir.ok(&[
        "scenarios",
        "import",
        fixture("nested.yaml").to_str().unwrap(),
        "--name",
        "copied",
    ]);
    assert!(imported.starts_with("imported "), "{imported}");
    assert_eq!(
        text(&scenarios.join("copied.yaml")),
        text(&fixture("nested.yaml"))
    );
}

/// Scenarios run from Rust: `Scenario::load(..)?.run_observed(&broker, …)`, with the step events.
#[test]
fn a_scenario_runs_from_rust_and_its_steps_can_be_observed() {
    use broker_core::scenario::{Scenario, StepEvent};
    let dir = BrokerDir::new(SETTINGS);
    let settings = broker_core::Settings::load_from(dir.path(), []).unwrap();
    let broker = broker_core::Broker::new(settings, broker_providers::registry()).unwrap();
    let yaml = "\
steps:
  - {name: host, action: checkout, arguments: {test_action: basic}}
  - {name: hello, action: ssh, with: {hosts: scenario_inventory}, arguments: {command: echo hi}}
  - {name: say, action: output, arguments: {content: \"{{ steps.hello.output.stdout }}\"}}
  - {name: back, action: checkin}
";
    let scenario = Scenario::from_yaml("lib", yaml).unwrap();
    let events = std::sync::Mutex::new(Vec::new());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let outcome = runtime
        .block_on(scenario.run_observed(&broker, &|e: &StepEvent| {
            events.lock().unwrap().push(e.to_string());
        }))
        .unwrap();
    assert!(outcome.hosts.is_empty());
    assert_eq!(
        events.into_inner().unwrap(),
        [
            "step `host` (checkout)",
            "step `host` done",
            "step `hello` (ssh)",
            "step `hello` done",
            "step `say` (output)",
            "hi",
            "step `say` done",
            "step `back` (checkin)",
            "step `back` done",
        ]
    );
    dir.assert_nothing_out();
}

#[test]
fn ssh_scp_and_sftp_reach_an_sshd_container() {
    let Some((dir, _prefix)) = crate::container::sshd_dir("scenario") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("upload.txt"), "over ssh\n").unwrap();
    let scenario = work.path().join("sshd.yaml");
    std::fs::write(
        &scenario,
        r#"_spec_ver: 3
variables: {WORK: /tmp/unset}
steps:
  - name: host
    action: checkout
    arguments: {container_host: broker-sshd, ports: "22"}
  - name: over ssh
    action: ssh
    with: {hosts: scenario_inventory}
    arguments: {command: 'echo "$SSH_CONNECTION"'}
    capture: {as: via, transform: "{{ step.output.stdout.split()[-1] }}"}
  - name: copy
    action: scp
    with: {hosts: "@scenario_inv._broker_provider == 'Container'"}
    arguments: {source: "{{ WORK }}/upload.txt", destination: /root/in/}
  - name: fetch
    action: sftp
    with: {hosts: scenario_inventory}
    arguments: {source: /root/in/upload.txt, destination: "{{ WORK }}/back.txt", direction: download}
  - name: checks
    action: assert
    arguments: {that: ["via == '22'", "steps.copy.output.status == 0"]}
  - name: give back
    action: checkin
"#,
    )
    .unwrap();
    let (code, out, err) = execute(
        &dir,
        &[
            scenario.to_str().unwrap(),
            "--WORK",
            work.path().to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert_eq!(text(&work.path().join("back.txt")), "over ssh\n");
    assert!(dir.inventory().is_empty());
}

/// Files broken in ways the format forbids, each with a reason the upstream schema also gives.
const INVALID: &[(&str, &str)] = &[
    ("no_steps.yaml", "variables:\n  a: 1\n"),
    (
        "unknown_step_key.yaml",
        "steps:\n  - name: say\n    action: output\n    arguments: {content: hi}\n    retries: 3\n",
    ),
    (
        "unknown_action.yaml",
        "steps:\n  - name: boom\n    action: explode\n",
    ),
    (
        "retry_count_not_a_number.yaml",
        "steps:\n  - name: say\n    action: output\n    arguments: {content: hi}\n    retry: {count: many}\n",
    ),
    (
        "step_without_name.yaml",
        "steps:\n  - action: output\n    arguments: {content: hi}\n",
    ),
];

/// The format is the Python broker's: its own validation (the JSON schema its PyPI package carries)
/// gives the same verdict as `broker scenarios validate` on every fixture file (all valid) and on
/// files broken in the ways the format forbids (all invalid). scripts/setup-pybroker installs it;
/// without it this fails unless `BROKER_ALLOW_SKIP=1` is set.
#[test]
fn the_python_brokers_schema_gives_the_same_verdict_on_every_file() {
    let Some(python) = broker_test_support::pybroker_python() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixture(""))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let valid = files.len();
    assert!(valid >= 6, "fixtures: {files:?}");
    for (name, body) in INVALID {
        let path = work.path().join(name);
        std::fs::write(&path, body).unwrap();
        files.push(path);
    }

    let mut args = vec![work.path().to_str().unwrap()];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    let upstream = client_check(
        &python,
        "pybroker/scenario_validate.py",
        &args,
        "pybroker scenarios OK",
    );

    let dir = BrokerDir::new(SETTINGS);
    for (n, file) in files.iter().enumerate() {
        let name = file.file_name().unwrap().to_str().unwrap();
        let expect_valid = n < valid;
        let verdict = upstream
            .lines()
            .find(|line| line.split([' ', ':']).nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no upstream verdict on {name}:\n{upstream}"));
        assert_eq!(
            verdict.starts_with("valid "),
            expect_valid,
            "upstream on {name}: {verdict}"
        );
        let ours = dir.run(&["scenarios", "validate", file.to_str().unwrap()]);
        let code = if expect_valid { 0 } else { 16 };
        assert_eq!(
            ours.status.code(),
            Some(code),
            "broker scenarios validate {name} (upstream: {verdict}): {}",
            stderr(&ours)
        );
    }
}
