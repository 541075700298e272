//! Snapshot tests of what users see: every verb's `--help`, the inventory table and the JSON and YAML
//! outputs, compared with the files in `tests/integration/snapshots/`. A change in any of them fails
//! here until the snapshot is updated with it, so it is a change someone reviewed (docs/testing.md,
//! "Snapshot tests", says how).
//!
//! The output is made deterministic where it is produced: the real `broker` binary runs in a
//! temporary broker directory with a fixed width (`COLUMNS`), no colours (`NO_COLOR`, and stdout is a
//! pipe) and the inventories below, whose order is the output's. What still varies between runs —
//! record ids, owner pids and machines, checkout times of hosts made here, the temporary directory —
//! is replaced by a placeholder, each exact value on its own, after checking it is what it should be.

use std::time::Duration;

use serde_json::Value;

use crate::util::BrokerDir;

/// The width help is taken at: clap wraps its text there (100 is also its width off a terminal).
const HELP_COLUMNS: &str = "100";

/// The width everything else is taken at unless a view says otherwise: tables fit whole.
const COLUMNS: &str = "160";

/// Settings for the output snapshots: TestProvider, a nick, inventory columns of one's own and a
/// secret that must show masked.
const SNAPSHOT_SETTINGS: &str = "\
TestProvider:
  instances:
    local:
      default: true
      api_password: hunter2-not-shown
nicks:
  N:
    test_action: basic
    flavor: small
";

/// A hand-written inventory with a record of each kind: one written by the Python broker (no
/// broker-only fields), a container and a TestProvider host checked out by broker, and a checkout
/// still pending. `{checkout}` is the checkout time of the two broker-made hosts.
const INVENTORY: &str = "\
- _broker_args:
    deploy_rhel_version: '9.4'
    workflow: deploy-rhel
  _broker_provider: AnsibleTower
  _broker_provider_instance: prod
  hostname: dhcp-42.lab.example.com
  name: jdoe-rhel-9.4-0a1b2c3d
  type: host
  os_distribution: RedHat
  os_distribution_version: '9.4'
  reported_devices:
    nics:
    - eth0
  shutdown_time: '1924992000'
  remove_time: '432000'
- _broker_id: h00000000000000c1
  _broker_provider: Container
  _broker_args:
    container_host: broker-busybox
    _broker_origin: broker_cli:jdoe
  type: host
  _broker_state: ready
  _broker_owner:
    user: jdoe
    machine: ws-17
    pid: 4242
  _broker_checkout_time: {checkout}
  name: jdoe_3fa1c2d4
  hostname: localhost
  exposed_ports:
    '22': '44263'
- _broker_id: h00000000000000t1
  _broker_provider: TestProvider
  _broker_provider_instance: local
  _broker_args:
    test_action: basic
    _broker_origin: broker_cli:jdoe
  type: host
  _broker_state: ready
  _broker_owner:
    user: jdoe
    machine: ws-17
    pid: 4243
  _broker_checkout_time: {checkout}
  name: broker-test-h00000000000000t1
  hostname: broker-test-h00000000000000t1.test.example.com
  os_distribution: FakeOS
  os_distribution_version: '1.0'
  _broker_expire_time: {expire}
- _broker_id: h00000000000000t2
  _broker_provider: TestProvider
  _broker_provider_instance: local
  _broker_args:
    test_action: basic
    _broker_origin: broker_cli:jdoe
  type: host
  _broker_state: pending
  _broker_owner:
    user: jdoe
    machine: ws-17
    pid: 4244
  _broker_checkout_time: {checkout}
  name: broker-test-h00000000000000t2
";

/// A fixed checkout time for the listings that show it as it is (Jan 01, 2026 00:00 UTC).
const CHECKOUT_TIME: i64 = 1_767_225_600;

/// Compares `text` with the snapshot `name`, whose header shows the command line that made it.
fn check(name: &str, command_line: &str, text: &str) {
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.set_description(command_line);
    settings.bind(|| insta::assert_snapshot!(name, text));
}

/// `broker ARGS` in `dir`, at the snapshot width and without colours; asserts it exits 0 and returns
/// its stdout.
fn shown(dir: &BrokerDir, args: &[&str]) -> String {
    shown_at(dir, args, COLUMNS)
}

/// [`shown`] at a terminal `columns` wide.
fn shown_at(dir: &BrokerDir, args: &[&str], columns: &str) -> String {
    let out = crate::util::output(
        dir.command(args)
            .env("COLUMNS", columns)
            .env("NO_COLOR", "1"),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "broker {args:?}\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("broker prints UTF-8")
}

/// Runs `broker ARGS` and compares its stdout with the snapshot `name`.
fn snapshot(dir: &BrokerDir, name: &str, args: &[&str]) {
    check(
        name,
        &format!("broker {}", args.join(" ")),
        &shown(dir, args),
    );
}

/// The subcommands a `--help` text lists under `Commands:`, less clap's own `help`.
fn listed_commands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| *line != "Commands:")
        .skip(1)
        .take_while(|line| !line.is_empty())
        .filter(|line| line.starts_with("  ") && !line.starts_with("   "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn help_of_every_verb() {
    let dir = BrokerDir::new("");
    let help = |args: &[&str]| shown_at(&dir, args, HELP_COLUMNS);
    let top = help(&["--help"]);
    check("help", "broker --help", &top);
    check("help-short", "broker -h", &help(&["-h"]));
    let mut verbs = listed_commands(&top);
    assert!(
        verbs.iter().any(|v| v == "checkout") && verbs.iter().any(|v| v == "config"),
        "no verbs found in\n{top}"
    );
    // Hidden from the list, documented in the README.
    verbs.extend(["completions", "manpage"].map(str::to_owned));
    for verb in &verbs {
        let text = help(&[verb, "--help"]);
        check(
            &format!("help-{verb}"),
            &format!("broker {verb} --help"),
            &text,
        );
        for sub in listed_commands(&text) {
            check(
                &format!("help-{verb}-{sub}"),
                &format!("broker {verb} {sub} --help"),
                &help(&[verb, &sub, "--help"]),
            );
        }
    }
    assert!(
        dir.inventory().is_empty(),
        "asking for help checks nothing out"
    );
}

/// A broker directory with [`SNAPSHOT_SETTINGS`] and [`INVENTORY`], its hosts checked out at
/// `checkout`.
fn with_inventory(checkout: i64) -> BrokerDir {
    with_inventory_expiring(checkout, LEASE_END)
}

/// The lease end of the listings that show it as it is (Jan 01, 2031 00:00 UTC).
const LEASE_END: i64 = 1_924_992_000;

/// [`with_inventory`], the leased host's lease ending at `expire`.
fn with_inventory_expiring(checkout: i64, expire: i64) -> BrokerDir {
    let dir = BrokerDir::new(SNAPSHOT_SETTINGS);
    let inventory = INVENTORY
        .replace("{checkout}", &checkout.to_string())
        .replace("{expire}", &expire.to_string());
    std::fs::write(dir.inventory_path(), inventory).expect("write the inventory");
    dir
}

/// One table view: its snapshot, the arguments, settings added to [`SNAPSHOT_SETTINGS`], the width.
struct View {
    name: &'static str,
    args: &'static [&'static str],
    settings: &'static str,
    columns: &'static str,
}

impl View {
    const fn new(name: &'static str, args: &'static [&'static str]) -> Self {
        View {
            name,
            args,
            settings: "",
            columns: COLUMNS,
        }
    }
}

/// The `Age` column shows the time since checkout, so these tables are taken with hosts checked out
/// three days before now — shown as `3d` until a minute has passed. A try that spans the turn of that
/// minute (a very slow machine) is taken again rather than redacted: the column's text and width stay
/// proven.
fn tables_at_a_fixed_age(views: &[View]) {
    const AGE: i64 = 3 * 86_400;
    let started = std::time::Instant::now();
    let taken = loop {
        let before = broker_core::time::now_epoch();
        // The lease has 2 hours left: the countdown shows `2h` for a minute (whole minutes, up).
        let dir = with_inventory_expiring(before - AGE, before + 2 * 3600);
        let texts: Vec<String> = views
            .iter()
            .map(|view| {
                let settings = format!("{SNAPSHOT_SETTINGS}{}", view.settings);
                std::fs::write(dir.path().join("broker_settings.yaml"), settings)
                    .expect("write settings");
                shown_at(&dir, view.args, view.columns)
            })
            .collect();
        if broker_core::time::now_epoch() - before < 60 {
            break texts;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3600),
            "every try took over a minute"
        );
    };
    for (view, text) in views.iter().zip(taken) {
        let mut command_line = format!("COLUMNS={} broker {}", view.columns, view.args.join(" "));
        if !view.settings.is_empty() {
            command_line.push_str(&format!(
                "; settings also have: {}",
                view.settings.trim_end()
            ));
        }
        check(view.name, &command_line, &text);
    }
}

#[test]
fn inventory_tables() {
    tables_at_a_fixed_age(&[
        View::new("inventory-table", &["inventory"]),
        View::new(
            "inventory-table-filter",
            &[
                "inventory",
                "--filter",
                "@inv._broker_provider == 'TestProvider'",
            ],
        ),
        View::new("inventory-list", &["inventory", "--list"]),
        View {
            settings: "inventory_fields: {Name: name, Workflow: _broker_args.workflow, Shutdown: shutdown_time, SSH port: exposed_ports.22}\n",
            ..View::new("inventory-table-fields", &["inventory"])
        },
        View {
            columns: "60",
            ..View::new("inventory-table-narrow", &["inventory"])
        },
    ]);
}

#[test]
fn inventory_outputs() {
    let dir = with_inventory(CHECKOUT_TIME);
    for (name, args) in [
        ("inventory-json", &["inventory", "-o", "json"][..]),
        ("inventory-yaml", &["inventory", "-o", "yaml"]),
        ("inventory-details", &["inventory", "--details"]),
        (
            "inventory-details-json",
            &["inventory", "--details", "-o", "json"],
        ),
        (
            "inventory-filter-json",
            &[
                "inventory",
                "--filter",
                "'RedHat' in @inv.os_distribution",
                "-o",
                "json",
            ],
        ),
    ] {
        snapshot(&dir, name, args);
    }
    // Verbs that report the hosts they handled, on the same inventory: the pending checkout (of a
    // process on another machine) is recovered, a ready host checked in.
    snapshot(&dir, "recover-json", &["recover", "--all", "-o", "json"]);
    snapshot(&dir, "checkin-yaml", &["checkin", "2", "-o", "yaml"]);
    let left: Vec<Value> = dir.inventory().iter().map(|r| r["name"].clone()).collect();
    assert_eq!(left, ["jdoe-rhel-9.4-0a1b2c3d", "jdoe_3fa1c2d4"]);
}

#[test]
fn providers_execute_and_config_outputs() {
    let dir = BrokerDir::new(SNAPSHOT_SETTINGS);
    for (name, args) in [
        ("providers-table", &["providers"][..]),
        ("providers-json", &["providers", "-o", "json"]),
        ("providers-yaml", &["providers", "-o", "yaml"]),
        (
            "execute-json",
            &[
                "execute",
                "--test_action",
                "basic",
                "--flavor",
                "large",
                "-o",
                "json",
            ],
        ),
        ("execute-yaml", &["execute", "--nick", "N", "-o", "yaml"]),
        ("execute-raw", &["execute", "--nick", "N", "-o", "raw"]),
        ("config-view", &["config", "view"]),
        (
            "config-view-chunk",
            &["config", "view", "TestProvider.instances"],
        ),
        ("config-nicks", &["config", "nicks"]),
        ("config-nick", &["config", "nick", "N"]),
    ] {
        snapshot(&dir, name, args);
    }
    let version = shown(&dir, &["--version"]);
    let broker_dir = dir.path().to_str().expect("a UTF-8 temporary path");
    assert!(version.contains(broker_dir), "{version}");
    check(
        "version",
        "broker --version (the broker directory shown as <broker dir>)",
        &version.replace(broker_dir, "<broker dir>"),
    );
    assert!(
        dir.inventory().is_empty(),
        "none of these checks out a host"
    );
}

/// What varies in the output about hosts this test made, each exact value replaced: record ids by
/// `<id N>` (N: the host's inventory position, so the same host reads the same everywhere), owner
/// pids and machines, checkout times. Each value is checked before it is hidden.
struct Redactions {
    pairs: Vec<(String, String)>,
}

impl Redactions {
    /// For the records of `inventory` (as `broker inventory -o json` gives them), checked out between
    /// `started` and `ended` (seconds since the epoch) by processes of this machine.
    fn of(inventory: &[Value], started: i64, ended: i64) -> Self {
        let machine = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .expect("read this machine's name")
            .trim()
            .to_owned();
        let mut pairs = Vec::new();
        for (position, record) in inventory.iter().enumerate() {
            let id = record["_broker_id"].as_str().expect("a record id");
            assert!(id.len() > 8 && id.starts_with('h'), "not a record id: {id}");
            pairs.push((id.to_owned(), format!("<id {position}>")));
            let owner = &record["_broker_owner"];
            assert_eq!(owner["user"], "tester");
            assert_eq!(owner["machine"], machine.as_str());
            let pid = owner["pid"].as_u64().expect("an owner pid");
            let process_started = owner["started"].as_u64().expect("an owner start time");
            let boot = owner["boot"].as_str().expect("an owner boot").to_owned();
            let time = record["_broker_checkout_time"]
                .as_i64()
                .expect("a checkout time");
            assert!(
                (started..=ended).contains(&time),
                "checkout time {time} is not between {started} and {ended}"
            );
            for (key, value, shown) in [
                ("machine", Value::from(machine.as_str()), "<machine>"),
                ("pid", Value::from(pid), "<pid>"),
                ("started", Value::from(process_started), "<started>"),
                ("boot", Value::from(boot.as_str()), "<boot>"),
                (
                    "_broker_checkout_time",
                    Value::from(time),
                    "<checkout time>",
                ),
            ] {
                let yaml = serde_yaml::to_string(&value).expect("yaml");
                pairs.push((
                    format!("\"{key}\": {value}"),
                    format!("\"{key}\": \"{shown}\""),
                ));
                pairs.push((
                    format!("{key}: {}", yaml.trim_end()),
                    format!("{key}: {shown}"),
                ));
            }
        }
        Redactions { pairs }
    }

    fn apply(&self, text: &str) -> String {
        self.pairs
            .iter()
            .fold(text.to_owned(), |text, (from, to)| text.replace(from, to))
    }
}

#[test]
fn outputs_about_hosts_made_here() {
    let dir = BrokerDir::new(SNAPSHOT_SETTINGS);
    let started = broker_core::time::now_epoch();
    let mut taken: Vec<(&str, Vec<&str>, String)> = Vec::new();
    let mut take = |name, args: Vec<&'static str>| {
        let text = shown(&dir, &args);
        taken.push((name, args, text));
    };
    take(
        "checkout-json",
        vec![
            "checkout",
            "--test_action",
            "basic",
            "-c",
            "2",
            "-o",
            "json",
        ],
    );
    take(
        "checkout-yaml",
        vec!["checkout", "--nick", "N", "-o", "yaml"],
    );
    take("duplicate-json", vec!["duplicate", "2", "-o", "json"]);
    take("duplicate-yaml", vec!["duplicate", "0", "-o", "yaml"]);
    take("extend-json", vec!["extend", "0", "1", "-o", "json"]);
    let ended = broker_core::time::now_epoch();
    let inventory = dir.inventory();
    assert_eq!(inventory.len(), 5);
    let redactions = Redactions::of(&inventory, started, ended);
    // Not one of the extended hosts, whose new lease would show.
    let host = format!(
        "broker-test-{}",
        inventory[2]["_broker_id"].as_str().unwrap_or_default()
    );
    let host_json = shown(
        &dir,
        &["providers", "TestProvider", "--host", &host, "-o", "json"],
    );
    let checkin = shown(&dir, &["checkin", "--all"]);
    for (name, args, text) in taken {
        check(
            name,
            &format!("broker {}", args.join(" ")),
            &redactions.apply(&text),
        );
    }
    check(
        "providers-host-json",
        "broker providers TestProvider --host broker-test-<id 2> -o json",
        &redactions.apply(&host_json),
    );
    check(
        "checkin-table",
        "broker checkin --all",
        &redactions.apply(&checkin),
    );
    assert!(dir.inventory().is_empty());
    assert!(dir.provider_hosts().is_empty());
}
