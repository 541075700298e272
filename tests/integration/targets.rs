//! `broker target`: handoff targets added, shown, changed and removed through the CLI, with their
//! configuration checked against the kind's schema and secrets never shown.

use serde_json::Value;

use crate::util::{BrokerDir, SETTINGS, Terminal, stderr};

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

/// Runs broker expecting exit code `code`; returns stderr.
fn fails(dir: &BrokerDir, args: &[&str], code: i32) -> String {
    let out = dir.run(args);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
    stderr(&out)
}

#[test]
fn a_target_is_added_shown_changed_and_removed() {
    let dir = BrokerDir::new(SETTINGS);
    let added = json(&dir.ok(&[
        "target",
        "add",
        "-p",
        "puppet",
        "-n",
        "Puppet-Prod",
        "-d",
        "prod servers",
        "-c",
        "server=puppet.example.com",
        "-o",
        "json",
    ]));
    let id = added["id"].as_str().unwrap().to_owned();
    assert_eq!(added["kind"], "puppet");
    assert_eq!(added["revision"], 1);
    assert_eq!(
        added["config"],
        serde_json::json!({"server": "puppet.example.com", "broker_version": ""})
    );
    // Razor's verbs and the friendlier names find it by id or by name in any case.
    for args in [
        vec!["target", "get", "puppet-prod", "-o", "json"],
        vec!["target", "show", &id, "-o", "json"],
    ] {
        assert_eq!(json(&dir.ok(&args)), added);
    }
    for args in [
        vec!["target", "get"],
        vec!["target", "get", "all"],
        vec!["target", "list"],
    ] {
        let table = dir.ok(&args);
        assert!(
            table
                .lines()
                .nth(2)
                .unwrap()
                .starts_with("Puppet-Prod  puppet  prod servers"),
            "{table}"
        );
    }

    let changed = json(&dir.ok(&[
        "target",
        "update",
        "puppet-prod",
        "-n",
        "puppet-main",
        "-c",
        "broker_version=3.0.1_rc1",
        "--change-metadata",
        "server=",
        "-o",
        "json",
    ]));
    assert_eq!(changed["id"], id.as_str());
    assert_eq!(changed["name"], "puppet-main");
    assert_eq!(changed["revision"], 2);
    assert_eq!(
        changed["config"],
        serde_json::json!({"server": "", "broker_version": "3.0.1_rc1"})
    );
    let err = fails(&dir, &["target", "update", "puppet-main", "-p", "chef"], 2);
    assert!(err.contains("unexpected argument '-p'"), "{err}");

    let removed = json(&dir.ok(&["target", "remove", "PUPPET-MAIN", "-o", "json"]));
    assert_eq!(removed[0]["id"], id.as_str());
    assert_eq!(
        json(&dir.ok(&["target", "list", "-o", "json"])),
        serde_json::json!([])
    );
    let err = fails(&dir, &["target", "remove", "puppet-main"], 13);
    assert!(
        err.contains("unknown handoff target `puppet-main`"),
        "{err}"
    );
}

#[test]
fn razors_schema_cases_and_bad_input_are_errors_naming_the_field() {
    let dir = BrokerDir::new(SETTINGS);
    fn add(name: &str, kind: &str, config: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = ["target", "add", "-p", kind, "-n", name]
            .map(str::to_owned)
            .to_vec();
        for c in config {
            args.extend(["-c".to_owned(), (*c).to_owned()]);
        }
        args
    }
    for server in ["", "puppet.example.com"] {
        let c = format!("server={server}");
        let args = add(&format!("p{}", server.len()), "puppet", &[&c]);
        dir.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    }
    let args = add("v", "puppet", &["broker_version=3.0.1_rc1"]);
    dir.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let cases: [(Vec<String>, i32, &str); 7] = [
        (
            add("x", "puppet", &["server=---invalid-hostname---"]),
            13,
            "invalid value `---invalid-hostname---` for key `server`: expected a host name, or empty",
        ),
        (
            add(
                "x",
                "puppet",
                &["broker_version=this_is_not_a_valid_broker_version"],
            ),
            13,
            "invalid value `this_is_not_a_valid_broker_version` for key `broker_version`",
        ),
        (
            add("", "puppet", &[]),
            13,
            "invalid target name: the name is empty",
        ),
        (
            add("x", "pupet", &[]),
            13,
            "unknown handoff kind `pupet`; did you mean `puppet`?",
        ),
        (
            add("x", "puppet", &["sever=a"]),
            13,
            "unknown key `sever` for kind `puppet`; did you mean `server`?",
        ),
        (
            add("x", "script", &[]),
            13,
            "missing required key `script` of kind `script`",
        ),
        (
            add("x", "puppet", &["server"]),
            2,
            "`-c server…` is not KEY=VALUE or KEY=@FILE",
        ),
    ];
    for (args, code, message) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = fails(&dir, &args, code);
        assert!(err.contains(message), "{args:?}: {err}");
    }
    let names: Vec<Value> = json(&dir.ok(&["target", "list", "-o", "json"]))
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert_eq!(names, ["p0", "p18", "v"]);
}

#[test]
fn adding_the_same_target_twice_is_idempotent_and_a_different_one_conflicts() {
    let dir = BrokerDir::new(SETTINGS);
    let args = [
        "target",
        "add",
        "-p",
        "puppet",
        "-n",
        "p",
        "-c",
        "server=a.example.com",
        "-o",
        "json",
    ];
    let first = json(&dir.ok(&args));
    let out = dir.run(&args);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json(&String::from_utf8_lossy(&out.stdout)), first);
    assert!(stderr(&out).contains("is there already as given; nothing changed"));
    let err = fails(
        &dir,
        &[
            "target",
            "add",
            "-p",
            "puppet",
            "-n",
            "P",
            "-c",
            "server=b.example.com",
        ],
        13,
    );
    assert!(
        err.contains("handoff target `p` already exists with another value of server"),
        "{err}"
    );
    assert_eq!(
        json(&dir.ok(&["target", "list", "-o", "json"])),
        serde_json::json!([first])
    );
}

#[test]
fn a_secret_is_stored_but_never_shown_logged_or_put_in_an_error() {
    const KEY: &str =
        "-----BEGIN RSA PRIVATE KEY-----\nTOPSECRETKEYMATERIAL\n-----END RSA PRIVATE KEY-----\n";
    let dir = BrokerDir::new(SETTINGS);
    let pem = dir.path().join("validation.pem");
    std::fs::write(&pem, KEY).unwrap();
    let key_arg = format!("validation_key=@{}", pem.display());
    let report = dir.path().join("out.json");
    let add = [
        "--log-level",
        "trace",
        "--output-file",
        report.to_str().unwrap(),
        "target",
        "add",
        "-p",
        "chef",
        "-n",
        "chef",
        "-c",
        "chef_server_url=https://chef.example.com",
        "-c",
        "chef_version=18.2.7",
        "-c",
        &key_arg,
    ];
    let mut shown = vec![dir.ok(&add)];
    shown.push(std::fs::read_to_string(&report).unwrap());
    for format in ["json", "yaml", "table"] {
        shown.push(dir.ok(&["target", "show", "chef", "-o", format]));
    }
    let changed = dir.run(&["target", "update", "chef", "-c", "validation_key=   "]);
    assert_eq!(changed.status.code(), Some(13));
    shown.push(stderr(&changed));
    for log in std::fs::read_dir(dir.path().join("logs")).unwrap() {
        shown.push(std::fs::read_to_string(log.unwrap().path()).unwrap());
    }
    for text in &shown {
        assert!(!text.contains("TOPSECRET"), "the key was shown:\n{text}");
    }
    let fingerprint =
        json(&dir.ok(&["target", "show", "chef", "-o", "json"]))["config"]["validation_key"]
            .as_str()
            .unwrap()
            .to_owned();
    assert!(fingerprint.starts_with("secret sha256:"), "{fingerprint}");
    assert!(shown[0].contains(&fingerprint));

    let stored: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.path().join("targets.yaml")).unwrap())
            .unwrap();
    assert_eq!(stored[0]["secrets"]["validation_key"].as_str(), Some(KEY));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("targets.yaml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_target_a_nick_or_a_host_names_is_not_removed() {
    let settings = format!("{SETTINGS}  web:\n    test_action: basic\n    handoff: Nicked\n");
    let dir = BrokerDir::new(&settings);
    for name in ["nicked", "hosted", "free"] {
        dir.ok(&["target", "add", "-p", "noop", "-n", name]);
    }
    let hosted = json(&dir.ok(&["target", "show", "hosted", "-o", "json"]));
    std::fs::write(
        dir.inventory_path(),
        format!(
            "- hostname: h1.example.com\n  _broker_provider: TestProvider\n  _broker_handoff_target: {}\n",
            hosted["id"].as_str().unwrap()
        ),
    )
    .unwrap();
    let err = fails(&dir, &["target", "remove", "nicked"], 13);
    assert!(
        err.contains("handoff target `nicked` is still used by nick web; nothing was removed"),
        "{err}"
    );
    let err = fails(&dir, &["target", "remove", "hosted"], 13);
    assert!(
        err.contains("handoff target `hosted` is still used by host h1.example.com"),
        "{err}"
    );
    let err = fails(&dir, &["target", "remove", "all", "--yes"], 13);
    assert!(
        err.contains("`nicked` is still used by nick web; handoff target `hosted`"),
        "{err}"
    );
    assert_eq!(
        json(&dir.ok(&["target", "list", "-o", "json"]))
            .as_array()
            .unwrap()
            .len(),
        3
    );
    dir.ok(&["target", "remove", "free"]);
    assert_eq!(
        json(&dir.ok(&["target", "list", "-o", "json"]))
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn remove_all_asks_first_and_without_a_terminal_needs_yes() {
    let dir = BrokerDir::new(SETTINGS);
    let count = || {
        json(&dir.ok(&["target", "list", "-o", "json"]))
            .as_array()
            .unwrap()
            .len()
    };
    for name in ["a", "b"] {
        dir.ok(&["target", "add", "-p", "noop", "-n", name]);
    }
    let err = fails(&dir, &["target", "remove", "all"], 2);
    assert!(err.contains("add `--yes`"), "{err}");
    assert_eq!(count(), 2);

    let mut session = Terminal::start(&mut dir.in_terminal("", "target remove all; echo rc=$?"));
    session.wait_for_text("Remove them all? [y/n]");
    session.type_keys("n\r");
    let (_, text) = session.finish();
    assert!(
        text.contains("This removes all 2 handoff targets."),
        "{text}"
    );
    assert!(text.contains("nothing was removed\nrc=0"), "{text}");
    assert_eq!(count(), 2);

    let mut session = Terminal::start(&mut dir.in_terminal("", "target remove all; echo rc=$?"));
    session.wait_for_text("Remove them all? [y/n]");
    session.type_keys("y\r");
    let (_, text) = session.finish();
    assert!(text.contains("rc=0"), "{text}");
    assert_eq!(count(), 0);
}

#[test]
fn on_a_terminal_add_walks_the_kinds_keys_and_reads_secrets_without_echo() {
    let dir = BrokerDir::new(SETTINGS);
    let mut session =
        Terminal::start(&mut dir.in_terminal("", "target add -p chef -n chef -o json; echo rc=$?"));
    let answer = |session: &mut Terminal, prompt: &str, keys: &str| {
        session.wait_for_text(prompt);
        session.type_keys(keys);
    };
    answer(
        &mut session,
        "chef_server_url (QUIT to cancel): ",
        "chef.example.com\r",
    );
    answer(
        &mut session,
        "expected an http:// or https:// URL",
        "https://chef.example.com\r",
    );
    answer(&mut session, "chef_version (QUIT to cancel): ", "18.2.7\r");
    answer(
        &mut session,
        "(several lines; end with a blank line)",
        "KEYLINE-ONE\rKEYLINE-TWO\r\r",
    );
    for key in [
        "validation_client_name",
        "bootstrap_environment",
        "install_sh_url",
        "chef_client_path",
    ] {
        answer(&mut session, &format!("{key} (QUIT to cancel): "), "\r");
    }
    answer(
        &mut session,
        "base_run_list (SKIP to skip, QUIT to cancel): ",
        "SKIP\r",
    );
    let (_, text) = session.finish();
    assert!(text.contains("rc=0"), "{text}");
    assert!(
        text.contains(
            "URL of the Chef server (example: https://chef.example.com/organizations/example)"
        ),
        "{text}"
    );
    assert!(text.contains("default: \"chef-validator\""), "{text}");
    assert!(!text.contains("KEYLINE"), "the secret was echoed:\n{text}");
    let stored = std::fs::read_to_string(dir.path().join("targets.yaml")).unwrap();
    let stored: serde_yaml::Value = serde_yaml::from_str(&stored).unwrap();
    assert_eq!(
        stored[0]["secrets"]["validation_key"].as_str(),
        Some("KEYLINE-ONE\nKEYLINE-TWO\n")
    );
    let shown = json(&dir.ok(&["target", "show", "chef", "-o", "json"]));
    assert_eq!(shown["config"]["validation_client_name"], "chef-validator");
    assert!(shown["config"].get("base_run_list").is_none());

    let mut session =
        Terminal::start(&mut dir.in_terminal("", "target add -p puppet -n p; echo rc=$?"));
    answer(
        &mut session,
        "server (SKIP to skip, QUIT to cancel): ",
        "QUIT\r",
    );
    let (_, text) = session.finish();
    assert!(text.contains("cancelled; nothing was changed"), "{text}");
    assert!(text.contains("rc=13"), "{text}");
    assert_eq!(
        json(&dir.ok(&["target", "list", "-o", "json"]))
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn ctrl_c_at_a_secret_prompt_cancels_and_leaves_the_terminal_echoing() {
    let dir = BrokerDir::new(SETTINGS);
    let mut session = Terminal::start(&mut dir.in_terminal(
        "",
        "target add -p chef -n chef; echo rc=$?; stty -a | tr ' ;' '\\n\\n' | grep -x -- '-\\?echo'",
    ));
    for (prompt, keys) in [
        (
            "chef_server_url (QUIT to cancel): ",
            "https://chef.example.com\r",
        ),
        ("chef_version (QUIT to cancel): ", "18.2.7\r"),
        ("(several lines; end with a blank line)", "KEY\x03\r"),
    ] {
        session.wait_for_text(prompt);
        session.type_keys(keys);
    }
    let (_, text) = session.finish();
    assert!(
        text.contains("no answer to the configuration questions; nothing was changed"),
        "{text}"
    );
    assert!(text.contains("rc=13\necho\n"), "{text}");
    assert!(!text.contains("KEY\n"), "{text}");
    assert!(!dir.path().join("targets.yaml").exists());
}

#[test]
fn get_plugins_lists_the_five_kinds_with_their_schemas() {
    let dir = BrokerDir::new("");
    let kinds = json(&dir.ok(&["target", "get", "plugins", "-o", "json"]));
    let names: Vec<&str> = kinds
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["noop", "script", "puppet", "chef", "ansible"]);
    let chef_key = &kinds[3]["keys"][2];
    assert_eq!(chef_key["key"], "validation_key");
    assert_eq!(
        (
            chef_key["sensitive"].as_bool(),
            chef_key["multiline"].as_bool()
        ),
        (Some(true), Some(true))
    );
    assert_eq!(kinds[2]["keys"][0]["validation"], "a host name, or empty");
    for args in [
        &["target", "kinds", "-o", "json"][..],
        &["target", "get", "t", "-o", "json"],
    ] {
        assert_eq!(json(&dir.ok(args)), kinds);
    }
    let table = dir.ok(&["target", "kinds"]);
    assert!(table.contains("noop: No handoff"), "{table}");
    assert!(
        table.contains("every kind also takes, to time its runs:\nKey  ")
            && table.contains("\nconnect_timeout "),
        "{table}"
    );
    assert!(
        table.contains("\nvalidation_key          yes       -"),
        "{table}"
    );
}

/// 6 processes × 5 adds each on one `targets.yaml`: every target is there, once.
#[test]
fn targets_added_by_many_processes_at_once_are_all_kept() {
    let dir = BrokerDir::new(SETTINGS);
    std::thread::scope(|scope| {
        for w in 0..6 {
            let dir = &dir;
            scope.spawn(move || {
                for i in 0..5 {
                    let name = format!("w{w}-{i}");
                    dir.ok(&["target", "add", "-p", "noop", "-n", &name]);
                }
            });
        }
    });
    let list = json(&dir.ok(&["target", "list", "-o", "json"]));
    let mut names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 30);
}
