//! Hostile or mistaken input from the command line and the settings file: a clear error naming the
//! place, never a crash, and no file read by accident.

use crate::util::{BrokerDir, SETTINGS, output, stderr};

#[test]
fn a_deeply_nested_filter_is_a_user_error_not_a_crash() {
    let dir = BrokerDir::new(SETTINGS);
    dir.ok(&["checkout", "--nick", "N"]);
    let filter = format!("{}@inv.name{}", "(".repeat(10_000), ")".repeat(10_000));
    for verb in [&["inventory"][..], &["checkin", "--all"]] {
        let mut args = verb.to_vec();
        args.extend(["--filter", &filter]);
        let out = dir.run(&args);
        assert_eq!(out.status.code(), Some(13), "{verb:?}: {}", stderr(&out));
        let message = stderr(&out);
        assert!(
            message.contains("invalid filter at column 101")
                && message.contains("nests too deeply"),
            "{verb:?}: {}",
            &message[..message.len().min(300)]
        );
    }
    assert_eq!(dir.inventory().len(), 1, "nothing was checked in");
}

#[test]
fn config_set_reads_a_file_only_when_asked() {
    let dir = BrokerDir::new(SETTINGS);
    std::fs::write(dir.path().join("root"), "not a user name\n").unwrap();
    std::fs::write(dir.path().join("ssh.yaml"), "host_ssh_port: 2222\n").unwrap();
    let set = |args: &[&str]| {
        let mut full = vec!["config", "set"];
        full.extend_from_slice(args);
        let out = output(dir.command(&full).current_dir(dir.path()));
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    };
    set(&["ssh.host_username", "root"]);
    set(&["nicks.from_file", "@root"]);
    set(&["ssh_extra", "ssh.yaml"]);
    let settings: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(dir.path().join("broker_settings.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(settings["ssh"]["host_username"], "root");
    assert_eq!(settings["nicks"]["from_file"], "not a user name");
    assert_eq!(settings["ssh_extra"]["host_ssh_port"], 2222);
    let out = output(
        dir.command(&["config", "set", "ssh.host_username", "@missing"])
            .current_dir(dir.path()),
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("missing"), "{}", stderr(&out));
}

/// `config validate` on `settings`: exit 8, and stderr (returned) names each of `expected`.
fn invalid(settings: &str, expected: &[&str]) -> String {
    let dir = BrokerDir::new(settings);
    let out = dir.run(&["config", "validate"]);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(8), "{text}");
    for e in expected {
        assert!(text.contains(e), "missing {e:?} in:\n{text}");
    }
    assert!(!text.contains("settings are valid"), "{text}");
    text
}

#[test]
fn config_validate_refuses_the_example_placeholders() {
    let dir = BrokerDir::new("");
    dir.ok(&["config", "init"]);
    let written = std::fs::read_to_string(dir.path().join("broker_settings.yaml")).unwrap();
    let line = |key: &str| {
        written
            .lines()
            .position(|l| l.trim_start().starts_with(&format!("{key}:")))
            .unwrap()
            + 1
    };
    let out = dir.run(&["config", "validate"]);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(8), "{text}");
    for (key, path) in [
        ("host_password", "ssh.host_password"),
        ("base_url", "AnsibleTower.base_url"),
        ("token", "AnsibleTower.token"),
    ] {
        let want = format!("line {}: `{path}`: ", line(key));
        assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    }
    assert!(text.contains("the example's placeholder"), "{text}");
    assert!(text.contains("`Container.instances.remote.host`"), "{text}");
    assert!(
        !text.contains("<password>"),
        "secret placeholders are masked: {text}"
    );
}

#[test]
fn a_provider_setting_no_one_reads_is_named_with_the_one_meant() {
    let settings =
        "TestProvider:\n  instances:\n    local:\n      default: true\n      fail_chekin: all\n";
    invalid(
        settings,
        &[
            "line 5: `TestProvider.instances.local.fail_chekin`: unknown key, ignored; did you mean \
             `fail_checkin`? rename or remove it",
        ],
    );
    // Used, the settings still load (a file written for another broker keeps working), and say so.
    let dir = BrokerDir::new(settings);
    let out = dir.run(&["checkout", "--test_action", "basic"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "`TestProvider.instances.local.fail_chekin` (broker_settings.yaml line 5): unknown key, \
             ignored; did you mean `fail_checkin`?"
        ),
        "{}",
        stderr(&out)
    );
    dir.ok(&["checkin", "--all"]);
}

#[test]
fn config_validate_refuses_a_base_url_that_is_not_a_url() {
    invalid(
        "AnsibleTower:\n  token: t\n  base_url: not a url\n",
        &[
            "`AnsibleTower.base_url` (broker_settings.yaml line 3)",
            "`not a url` is not the address of a server",
        ],
    );
    invalid(
        "AnsibleTower:\n  token: t\n  instances:\n    prod:\n      base_url: ftp://x/\n",
        &["`AnsibleTower.instances.prod.base_url` (broker_settings.yaml line 5)"],
    );
}

#[test]
fn config_validate_refuses_a_workflow_timeout_that_is_not_a_number() {
    let settings =
        "AnsibleTower:\n  base_url: http://127.0.0.1:9/\n  token: t\n  workflow_timeout: abc\n";
    invalid(
        settings,
        &[
            "`AnsibleTower.workflow_timeout` (broker_settings.yaml line 4): `abc` is not a number of seconds",
        ],
    );
    // The first checkout says so too, before it asks the server anything.
    let dir = BrokerDir::new(settings);
    let out = dir.run(&["checkout", "--workflow", "deploy-rhel"]);
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("`AnsibleTower.workflow_timeout`"),
        "{}",
        stderr(&out)
    );
    assert!(dir.inventory().is_empty());
}

#[test]
fn config_validate_refuses_an_unknown_log_level() {
    invalid(
        "logging:\n  console_level: loud\n  file_level: debug\nthread_limit: -1\n",
        &[
            "line 2: `logging.console_level`: `loud` is not a log level",
            "line 4: `thread_limit`",
        ],
    );
    let dir = BrokerDir::new(SETTINGS);
    let out = dir.run(&["config", "validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("settings are valid"));
}

#[test]
fn without_user_in_the_environment_the_owner_is_the_uids_name() {
    let expected = String::from_utf8(
        std::process::Command::new("id")
            .arg("-un")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_owned();
    let dir = BrokerDir::new(SETTINGS);
    let out = output(
        dir.command(&["checkout", "--nick", "N", "-o", "json"])
            .env_remove("USER"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let records = dir.inventory();
    assert_eq!(records[0]["_broker_owner"]["user"], expected.as_str());
    assert_eq!(
        records[0]["_broker_args"]["_broker_origin"],
        format!("broker_cli:{expected}").as_str()
    );
}
