//! Secrets given as arguments, nick values or URL credentials never reach output, output files or
//! logs, and reach the inventory only while it is private to its owner.

use std::os::unix::fs::PermissionsExt;

use crate::util::{BrokerDir, stderr};

/// A TestProvider instance, a nick holding a secret, and table columns that would show secrets.
const SETTINGS: &str = "\
TestProvider:
  instances:
    local:
      default: true
nicks:
  S:
    test_action: basic
    host_password: nick-secret
inventory_fields:
  Host: name
  Password: _broker_args.host_password
inventory_list_vars: _broker_args.host_password
";

const SECRETS: [&str; 2] = ["hunter2", "nick-secret"];

fn assert_hidden(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} shows `{secret}`:\n{text}");
    }
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn secret_arguments_are_masked_in_every_output() {
    let dir = BrokerDir::new(SETTINGS);
    let out_file = dir.path().join("out.json");
    let out_arg = out_file.display().to_string();
    let shown = dir.ok(&[
        "--output-file",
        &out_arg,
        "checkout",
        "--test_action",
        "basic",
        "--host_password",
        "hunter2",
        "-o",
        "json",
    ]);
    assert_hidden("checkout -o json", &shown);
    assert!(shown.contains(r#""host_password": "********""#), "{shown}");
    let written = std::fs::read_to_string(&out_file).unwrap();
    assert_hidden("--output-file", &written);
    assert!(
        written.contains(r#""host_password": "********""#),
        "{written}"
    );
    assert_eq!(
        mode(&out_file),
        0o600,
        "the output file is its owner's only"
    );

    dir.ok(&["checkout", "--nick", "S"]);
    for view in [
        &["inventory", "-o", "json"][..],
        &["inventory", "-o", "yaml"],
        &["inventory", "--details"],
        &["inventory", "--list"],
        &["inventory"],
        &["config", "nick", "S"],
    ] {
        let text = dir.ok(view);
        assert_hidden(&format!("broker {view:?}"), &text);
        assert!(text.contains("********"), "broker {view:?}:\n{text}");
    }
    // `execute` logs its result as well as printing it.
    let logged = dir.run(&[
        "--output-file",
        &out_arg,
        "execute",
        "--test_action",
        "basic",
        "--host_password",
        "hunter2",
    ]);
    assert_eq!(logged.status.code(), Some(0), "{}", stderr(&logged));
    assert_hidden("execute's log", &stderr(&logged));
    assert_hidden("execute", &String::from_utf8_lossy(&logged.stdout));
    assert_hidden(
        "execute --output-file",
        &std::fs::read_to_string(&out_file).unwrap(),
    );
    let out = dir.run(&["--output-file", &out_arg, "inventory"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_hidden(
        "inventory --output-file",
        &std::fs::read_to_string(&out_file).unwrap(),
    );
    assert_hidden(
        "the log",
        &std::fs::read_to_string(dir.path().join("logs/broker.log")).unwrap(),
    );
}

#[test]
fn the_inventory_holds_secrets_only_while_private() {
    let dir = BrokerDir::new(SETTINGS);
    dir.ok(&[
        "checkout",
        "--test_action",
        "basic",
        "--host_password",
        "hunter2",
    ]);
    let inventory = dir.inventory_path();
    assert_eq!(mode(&inventory) & 0o044, 0, "a new inventory is private");
    let text = std::fs::read_to_string(&inventory).unwrap();
    assert!(text.contains("host_password: hunter2"), "{text}");
    // Private: duplicate has what it needs.
    dir.ok(&["duplicate", "0"]);
    let text = std::fs::read_to_string(&inventory).unwrap();
    assert_eq!(text.matches("host_password: hunter2").count(), 2, "{text}");

    // Readable by others: new records keep no secret in clear…
    std::fs::set_permissions(&inventory, std::fs::Permissions::from_mode(0o644)).unwrap();
    dir.ok(&["checkout", "--nick", "S"]);
    assert_eq!(mode(&inventory), 0o644, "the file keeps its mode");
    let text = std::fs::read_to_string(&inventory).unwrap();
    assert!(!text.contains("nick-secret"), "{text}");
    assert_eq!(
        text.matches("host_password: '********'").count(),
        1,
        "{text}"
    );
    // …and duplicate says which argument it lacks instead of sending the mask.
    let out = dir.run(&["duplicate", "2"]);
    assert_eq!(out.status.code(), Some(13), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(
        message.contains("`host_password`") && message.contains("broker checkout"),
        "{message}"
    );
    assert_eq!(dir.inventory().len(), 3, "nothing was checked out");
}

/// A password written into `base_url` appears on no terminal, in no log and in no output file.
#[cfg(feature = "ansible-tower")]
#[test]
fn a_password_in_a_url_is_shown_nowhere() {
    use awx_sim::{ALICE_PASSWORD, Sim};
    let sim = Sim::start();
    let with_login = sim
        .url()
        .replace("http://", &format!("http://alice:{ALICE_PASSWORD}@"));
    let dir = BrokerDir::new(&format!(
        "AnsibleTower:\n  base_url: {with_login}/\n  workflow_poll_interval: 0.02\n"
    ));
    let out_file = dir.path().join("out.json");
    let out_arg = out_file.display().to_string();
    let mut seen = String::new();
    for (args, code) in [
        (
            &[
                "--log-level",
                "trace",
                "checkout",
                "--workflow",
                "deploy-rhel",
            ][..],
            0,
        ),
        (
            &[
                "--log-level",
                "trace",
                "checkout",
                "--workflow",
                "deploy-rhle",
            ],
            13,
        ),
        (&["--log-level", "trace", "inventory", "-o", "json"], 0),
        (&["config", "view"], 0),
        (&["config", "view", "AnsibleTower"], 0),
        (&["--log-level", "trace", "checkin", "--all"], 0),
    ] {
        let mut full = vec!["--output-file", out_arg.as_str()];
        full.extend_from_slice(args);
        let out = dir.run(&full);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
        seen.push_str(&String::from_utf8_lossy(&out.stdout));
        seen.push_str(&stderr(&out));
        seen.push_str(&std::fs::read_to_string(&out_file).unwrap_or_default());
    }
    assert!(sim.vms().is_empty(), "the host was checked in again");
    assert!(seen.contains("deploy-rhel"), "{seen}");
    assert!(
        seen.contains("http://***@127.0.0.1:"),
        "config view shows the address: {seen}"
    );
    seen.push_str(&std::fs::read_to_string(dir.path().join("logs/broker.log")).unwrap());
    assert!(!seen.contains(ALICE_PASSWORD), "{seen}");
}
