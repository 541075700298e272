//! Every flag of the command line and the argument layering it documents, each shown to change
//! what broker does (a test here fails when its flag is ignored).

use serde_json::Value;

use crate::util::{BrokerDir, ChildGuard, DEADLINE, SETTINGS, stderr, wait_for};

/// The settings with a nick that sets three arguments and one that asks for two hosts.
fn layered_settings() -> String {
    format!(
        "{SETTINGS}  P:\n    test_action: basic\n    a: nick\n    b: nick\n    c: nick\n  \
         C2:\n    test_action: basic\n    _count: 2\n"
    )
}

#[test]
fn arguments_layer_nick_then_args_file_then_command_line() {
    let dir = BrokerDir::new(&layered_settings());
    let yaml = dir.path().join("args.yaml");
    std::fs::write(&yaml, "b: file\nc: file\n").unwrap();
    let yaml = yaml.display().to_string();
    dir.ok(&[
        "checkout",
        "--nick",
        "P",
        "--args-file",
        &yaml,
        "--c",
        "cli",
    ]);
    let records = dir.inventory();
    assert_eq!(records.len(), 1);
    let args = &records[0]["_broker_args"];
    assert_eq!(
        (&args["a"], &args["b"], &args["c"]),
        (
            &Value::from("nick"),
            &Value::from("file"),
            &Value::from("cli")
        ),
        "{args}"
    );

    // A JSON args file, and `execute` layers the same way.
    let json = dir.path().join("args.json");
    std::fs::write(&json, r#"{"b": "json", "c": "json"}"#).unwrap();
    let json = json.display().to_string();
    let out = dir.ok(&[
        "execute",
        "--nick",
        "P",
        "--args-file",
        &json,
        "--c",
        "cli",
        "-o",
        "json",
    ]);
    let result: Value = serde_json::from_str(&out).unwrap();
    let args = &result["arguments"];
    assert_eq!(
        (&args["a"], &args["b"], &args["c"]),
        (
            &Value::from("nick"),
            &Value::from("json"),
            &Value::from("cli")
        ),
        "{out}"
    );
}

#[test]
fn a_count_comes_from_a_nick_an_args_file_or_an_argument() {
    let dir = BrokerDir::new(&layered_settings());
    dir.ok(&["checkout", "--nick", "C2"]);
    let records = dir.inventory();
    assert_eq!(records.len(), 2, "the nick's `_count: 2`");
    for r in &records {
        assert!(r["_broker_args"].get("_count").is_none(), "{r}");
    }
    dir.ok(&["checkin", "--all"]);

    let file = dir.path().join("count.yaml");
    std::fs::write(&file, "_count: 3\n").unwrap();
    let file = file.display().to_string();
    dir.ok(&["checkout", "--nick", "C2", "--args-file", &file]);
    assert_eq!(
        dir.inventory().len(),
        3,
        "the args file's count wins over the nick's"
    );
    dir.ok(&["checkin", "--all"]);

    dir.ok(&["checkout", "--nick", "C2", "--args-file", &file, "_count=1"]);
    assert_eq!(
        dir.inventory().len(),
        1,
        "the command line's wins over both"
    );
    dir.ok(&["checkin", "--all"]);

    dir.ok(&["checkout", "--test_action", "basic", "--_count", "2"]);
    assert_eq!(dir.inventory().len(), 2);
}

#[test]
fn provider_labels_reach_the_provider() {
    let dir = BrokerDir::new(SETTINGS);
    dir.ok(&["checkout", "--test_action", "basic", "-l", "run=7,owner=me"]);
    dir.ok(&[
        "checkout",
        "--test_action",
        "basic",
        "--provider-labels",
        "run=8",
    ]);
    let records = dir.inventory();
    let labels: Vec<&Value> = records
        .iter()
        .map(|r| &r["_broker_args"]["provider_labels"])
        .collect();
    assert_eq!(
        labels,
        vec![
            &serde_json::json!({"run": "7", "owner": "me"}),
            &serde_json::json!({"run": "8"})
        ],
        "{records:?}"
    );
    // `execute` hands them over too.
    let out = dir.ok(&[
        "execute",
        "--test_action",
        "ping",
        "-l",
        "run=9",
        "-o",
        "json",
    ]);
    let result: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        result["arguments"]["provider_labels"],
        serde_json::json!({"run": "9"}),
        "{out}"
    );
}

/// `checkin --sequential` starts a host's check-in only when the one before it has finished: of two
/// hosts whose check-ins hang, only one is ever started.
#[test]
fn checkin_sequential_gives_hosts_back_one_after_the_other() {
    let dir = BrokerDir::new(SETTINGS);
    dir.ok(&[
        "checkout",
        "--test_action",
        "basic",
        "--hang",
        "checkin",
        "-c",
        "2",
    ]);
    let mut child = ChildGuard::spawn(
        dir.command(&["checkin", "--all", "--sequential"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped()),
    );
    let hanging = "hanging at `checkin`";
    let shown = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let shown = std::sync::Arc::clone(&shown);
        let mut err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut err, &mut buf) {
                if n == 0 {
                    break;
                }
                shown
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let started = wait_for(DEADLINE, || shown.lock().unwrap().contains(hanging));
    assert!(started, "{}", shown.lock().unwrap());
    crate::util::signal(&child, "TERM");
    let status = child.wait(DEADLINE);
    reader.join().unwrap();
    let seen = shown.lock().unwrap().clone();
    assert_eq!(status.code(), Some(130), "{seen}");
    assert_eq!(seen.matches(hanging).count(), 1, "{seen}");
    assert_eq!(dir.provider_hosts().len(), 2, "neither check-in finished");
}

/// The background run's output file, named on stderr.
fn background_output(out: &std::process::Output) -> std::path::PathBuf {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("runs in the background as pid"), "{err}");
    err.split("output: ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| panic!("{err}"))
}

/// What a background run wrote, once it wrote `expected`.
fn wait_for_output(path: &std::path::Path, expected: &str) -> String {
    assert!(
        wait_for(DEADLINE, || std::fs::read_to_string(path)
            .is_ok_and(|t| t.contains(expected))),
        "{}: {:?}",
        path.display(),
        std::fs::read_to_string(path)
    );
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn every_verb_with_b_runs_in_the_background() {
    let dir = BrokerDir::new(SETTINGS);
    dir.ok(&["checkout", "--nick", "N"]);
    let name = dir.inventory()[0]["hostname"].as_str().unwrap().to_owned();

    let out = dir.run(&["extend", "-b", "0", "--extend-duration", "2h"]);
    wait_for_output(&background_output(&out), &format!("extended {name}"));

    let out = dir.run(&[
        "execute",
        "--background",
        "--test_action",
        "ping",
        "-o",
        "json",
    ]);
    let text = wait_for_output(&background_output(&out), "}");
    let result: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(result["action"], "ping");

    let out = dir.run(&["duplicate", "-b", "0"]);
    background_output(&out);
    assert!(wait_for(DEADLINE, || dir
        .inventory()
        .iter()
        .filter(|r| r["_broker_state"] == "ready")
        .count()
        == 2));

    let out = dir.run(&["checkin", "-b", "--all"]);
    wait_for_output(&background_output(&out), &format!("checked in {name}"));
    assert!(wait_for(DEADLINE, || dir.inventory().is_empty()));
}

#[test]
fn ssh_timeout_stops_a_command_that_outlives_it() {
    let dir = BrokerDir::new(SETTINGS);
    dir.ok(&["checkout", "--test_action", "basic"]);
    let out = dir.run(&[
        "ssh",
        "0",
        "--timeout",
        "1s",
        "--",
        "sleep 60; echo finished",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(7), "{err}");
    assert!(err.contains("timed out after 1s"), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("finished"));
}

#[test]
fn log_level_sets_what_the_console_shows() {
    let dir = BrokerDir::new(SETTINGS);
    let out = dir.run(&["--log-level", "debug", "checkout", "--test_action", "basic"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("DEBUG"), "{}", stderr(&out));
    let out = dir.run(&[
        "--log-level",
        "silent",
        "checkout",
        "--test_action",
        "basic",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stderr(&out), "");
    let out = dir.run(&["checkout", "--test_action", "basic"]);
    assert!(stderr(&out).contains("INFO"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("DEBUG"), "{}", stderr(&out));
    let out = dir.run(&["--log-level", "error", "checkout", "--test_action", "basic"]);
    assert_eq!(stderr(&out), "");
    // A log level that is not one is a usage error.
    assert_eq!(
        dir.run(&["--log-level", "loud", "inventory"]).status.code(),
        Some(2)
    );
}

#[test]
fn execute_output_log_logs_the_result_too() {
    let dir = BrokerDir::new(SETTINGS);
    let out = dir.run(&["execute", "--nick", "N"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let printed: serde_yaml::Value = serde_yaml::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["action"], "basic", "the nick's action");
    assert!(stderr(&out).contains("result:"), "{}", stderr(&out));
    let out = dir.run(&["execute", "--nick", "N", "-o", "yaml"]);
    assert_eq!(
        serde_yaml::from_slice::<serde_yaml::Value>(&out.stdout).unwrap(),
        printed
    );
    assert!(!stderr(&out).contains("result:"), "{}", stderr(&out));
}

#[test]
fn completions_and_man_pages() {
    let dir = BrokerDir::new("");
    let bash = dir.ok(&["completions", "bash"]);
    assert!(bash.contains("complete -F _broker"), "{bash}");
    let zsh = dir.ok(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef broker"), "{zsh}");
    assert!(zsh.contains("--keep-partial"));
    let fish = dir.ok(&["completions", "fish"]);
    assert!(fish.contains("complete -c broker"), "{fish}");

    let page = dir.ok(&["manpage"]);
    assert!(page.contains(".TH broker 1"), "{page}");
    let pages = dir.path().join("man1");
    std::fs::create_dir(&pages).unwrap();
    let out = dir.ok(&["manpage", "--dir", &pages.display().to_string()]);
    assert_eq!(out, "");
    let checkout = std::fs::read_to_string(pages.join("broker-checkout.1")).unwrap();
    assert!(checkout.contains("keep\\-partial"), "{checkout}");
    assert!(pages.join("broker.1").exists());
}

#[test]
fn config_init_from_a_file_and_force() {
    let dir = BrokerDir::new("");
    let settings = dir.path().join("broker_settings.yaml");
    let mine = dir.path().join("mine.yaml");
    std::fs::write(&mine, "thread_limit: 3\n").unwrap();
    let mine = mine.display().to_string();
    dir.ok(&["config", "init", "--from", &mine]);
    let first = std::fs::read_to_string(&settings).unwrap();
    assert!(first.contains("thread_limit: 3"), "{first}");
    assert!(!first.contains("AnsibleTower"), "not the example: {first}");

    let other = dir.path().join("other.yaml");
    std::fs::write(&other, "thread_limit: 5\n").unwrap();
    let other = other.display().to_string();
    let out = dir.run(&["config", "init", "--from", &other]);
    assert_eq!(out.status.code(), Some(13), "{}", stderr(&out));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&settings).unwrap(), first);

    dir.ok(&["config", "init", "--from", &other, "--force"]);
    let now = std::fs::read_to_string(&settings).unwrap();
    assert!(now.contains("thread_limit: 5"), "{now}");
    let backup = std::fs::read_to_string(dir.path().join("broker_settings.bak")).unwrap();
    assert_eq!(backup, first, "the file it replaced is backed up");
}

#[test]
fn no_syntax_is_accepted_and_changes_nothing() {
    let dir = BrokerDir::new(SETTINGS);
    assert_eq!(
        dir.ok(&["config", "view", "--no-syntax"]),
        dir.ok(&["config", "view"])
    );
    let nick = dir.ok(&["config", "nick", "N", "--no-syntax"]);
    assert_eq!(nick, dir.ok(&["config", "nick", "N"]));
    assert_eq!(nick, "test_action: basic\n");
}

#[test]
fn recover_all_takes_records_of_live_owners_too() {
    let dir = BrokerDir::new(SETTINGS);
    // A pending record whose owner is this (live) test process.
    std::fs::write(
        dir.inventory_path(),
        format!(
            "- name: broker-test-live\n  _broker_id: live\n  _broker_provider: TestProvider\n  \
             _broker_provider_instance: local\n  _broker_state: pending\n  _broker_owner:\n    \
             user: tester\n    machine: {}\n    pid: {}\n",
            hostname(),
            std::process::id()
        ),
    )
    .unwrap();
    dir.ok(&["recover"]);
    assert_eq!(dir.inventory().len(), 1, "its owner is alive: left alone");
    let out = dir.ok(&["recover", "--all", "-o", "json"]);
    assert!(dir.inventory().is_empty());
    let recovered: Vec<String> = serde_json::from_str(&out).unwrap();
    assert_eq!(recovered, vec!["broker-test-live".to_owned()]);
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn a_broker_directory_that_does_not_exist_yet_is_used_and_made() {
    let dir = BrokerDir::new("");
    let fresh = dir.path().join("not/yet");
    let out = crate::util::output(
        dir.command(&["checkout", "--test_action", "basic"])
            .env("BROKER_DIRECTORY", &fresh),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let inventory = std::fs::read_to_string(fresh.join("inventory.yaml")).unwrap();
    assert!(
        inventory.contains("_broker_provider: TestProvider"),
        "{inventory}"
    );
    assert!(!dir.inventory_path().exists(), "not the usual directory");
}

#[test]
fn build_url_is_recorded_as_the_jenkins_url() {
    let dir = BrokerDir::new(SETTINGS);
    let out = crate::util::output(
        dir.command(&["checkout", "--test_action", "basic"])
            .env("BUILD_URL", "https://ci.example.com/job/7/"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let records = dir.inventory();
    assert_eq!(
        records[0]["_broker_args"]["_jenkins_url"], "https://ci.example.com/job/7/",
        "{records:?}"
    );
}
