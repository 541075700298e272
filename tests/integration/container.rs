//! The Container provider through the real `broker` binary, against the local Podman engine
//! (started by scripts/setup-podman).

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::util::{
    BrokerDir, ChildGuard, Containers, DEADLINE, Terminal, output, stderr, wait_for,
};

/// A broker directory whose containers are named `<prefix>_…`, and those containers, removed when
/// the test ends (passed or not). A missing engine fails the test unless `BROKER_ALLOW_SKIP=1` is
/// set; then this is `None` and the test returns.
pub(crate) fn engine_dir(test: &str) -> Option<(BrokerDir, Containers)> {
    if !broker_test_support::podman() {
        return None;
    }
    let prefix = Containers::new(format!("it{}{test}", std::process::id()));
    let settings = format!("Container:\n  name_prefix: {prefix}\n");
    Some((BrokerDir::new(&settings), prefix))
}

/// Containers (running or not) whose name starts with `<prefix>_`.
pub(crate) fn containers(prefix: &str) -> Vec<String> {
    let out = Command::new("podman")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("name=^{prefix}_"),
            "--format",
            "{{.Names}}",
        ])
        .output()
        .expect("podman ps");
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

#[test]
fn container_checkout_ssh_checkin() {
    let Some((dir, prefix)) = engine_dir("ssh") else {
        return;
    };
    let out = dir.ok(&[
        "checkout",
        "--container-host",
        "broker-busybox",
        "--command",
        "sleep 3600",
        "-o",
        "json",
    ]);
    let hosts: Vec<Value> = serde_json::from_str(&out).unwrap();
    let name = hosts[0]["name"].as_str().unwrap().to_owned();
    assert_eq!(containers(&prefix), vec![name.clone()]);
    assert_eq!(dir.ok(&["ssh", &name, "--", "echo", "hello"]), "hello\n");
    let out = dir.run(&["ssh", "0", "--", "uname -a; exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Linux"));
    dir.ok(&["extend", "0"]);
    dir.ok(&["checkin", "0"]);
    assert!(containers(&prefix).is_empty());
    assert!(dir.inventory().is_empty());
}

#[test]
fn sync_finds_an_orphan_container() {
    let Some((dir, prefix)) = engine_dir("sync") else {
        return;
    };
    let orphan = format!("{prefix}_orphan");
    let made = Command::new("podman")
        .args([
            "run",
            "-d",
            "--name",
            &orphan,
            "--stop-timeout",
            "1",
            "--label",
            "broker.managed=true",
            "localhost/broker-busybox",
            "sleep",
            "3600",
        ])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let out = dir.run(&["inventory", "--sync", "Container"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let records = dir.inventory();
    let found: Vec<&Value> = records
        .iter()
        .filter(|r| r["name"] == orphan.as_str())
        .collect();
    assert_eq!(found.len(), 1, "{records:?}");
    assert_eq!(found[0]["_broker_provider"], "Container");
    // Named as a checkout names a container host: by its short id, which `checkin` takes.
    let id = found[0]["container_id"].as_str().unwrap();
    assert_eq!(found[0]["hostname"], id);
    assert!(
        stderr(&out).contains(id),
        "the orphan is named: {}",
        stderr(&out)
    );
    dir.ok(&["checkin", &orphan]);
    assert!(containers(&prefix).is_empty());
}

#[test]
fn sync_leaves_a_recorded_container_as_its_checkout_recorded_it() {
    let Some((dir, prefix)) = engine_dir("resync") else {
        return;
    };
    let out = dir.ok(&[
        "checkout",
        "--container-host",
        "broker-busybox",
        "--environment",
        "FOO=bar",
        "-o",
        "json",
    ]);
    let hosts: Vec<Value> = serde_json::from_str(&out).unwrap();
    let hostname = hosts[0]["hostname"].as_str().unwrap().to_owned();
    let before = dir.inventory();
    let out = dir.run(&["inventory", "--sync", "Container"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Only this test's containers (others' may be running on the same engine).
    let after: Vec<Value> = dir
        .inventory()
        .into_iter()
        .filter(|r| r["name"].as_str().is_some_and(|n| n.starts_with(&*prefix)))
        .collect();
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0]["hostname"], hostname.as_str(), "{after:?}");
    assert_eq!(
        after[0]["_broker_args"], before[0]["_broker_args"],
        "{after:?}"
    );
    assert_eq!(after[0]["_broker_args"]["environment"], "FOO=bar");
    // The name checkout printed still finds the host.
    dir.ok(&["checkin", &hostname]);
    assert!(containers(&prefix).is_empty());
}

/// Where [`hang_after_create_child`] checks a container out: set only in that child's environment.
const HANG_CHILD: &str = "BROKER_TEST_HANG_AFTER_CREATE";

/// In a child process of this test binary: checks a container out with the conformance kit's fault
/// wrapper hanging the checkout once the container runs, until the parent kills the process.
#[cfg(feature = "container")]
#[test]
#[ignore = "run by kill_nine_between_create_and_record_then_recover in a child process"]
fn hang_after_create_child() {
    use broker_core::conformance::{Call, Effect, Fault, FaultInjector, When};
    if std::env::var_os(HANG_CHILD).is_none() {
        return;
    }
    let injector = FaultInjector::new(Fault::new(Call::Create, When::After, Effect::Hang));
    let registry =
        broker_core::ProviderRegistry::new().with(injector.wrap(broker_providers::container::KIND));
    let broker =
        broker_core::Broker::new(broker_core::Settings::load().unwrap(), registry).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let checkout = runtime.block_on(
        broker.checkout(
            broker_core::CheckoutRequest::new()
                .arg("container_host", "broker-busybox")
                .arg("command", "sleep 3600"),
        ),
    );
    panic!("the checkout returned though its provider hangs: {checkout:?}");
}

#[test]
fn kill_nine_between_create_and_record_then_recover() {
    let Some((dir, prefix)) = engine_dir("kill") else {
        return;
    };
    // A process holding a checkout between "container created" and "recorded ready": this test
    // binary again, running `hang_after_create_child` in this broker directory, as `broker` runs.
    let broker = dir.command(&[]);
    let mut child = Command::new(std::env::current_exe().unwrap());
    child
        .args(["container::hang_after_create_child", "--exact", "--ignored"])
        .env_clear()
        .envs(broker.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .env(HANG_CHILD, "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = ChildGuard::spawn(&mut child);
    assert!(wait_for(DEADLINE, || containers(&prefix).len() == 1));
    child.kill().unwrap();
    child.wait(DEADLINE);
    let records = dir.inventory();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["_broker_state"], "pending");
    // The intent record names the container it was about to create.
    assert_eq!(
        vec![records[0]["name"].as_str().unwrap_or_default().to_owned()],
        containers(&prefix)
    );
    let out = dir.run(&["recover"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        containers(&prefix).is_empty(),
        "orphan left: {:?}",
        containers(&prefix)
    );
    assert!(dir.inventory().is_empty());
}

#[test]
fn execute_container_app_and_discovery() {
    let Some((dir, prefix)) = engine_dir("app") else {
        return;
    };
    let out = dir.ok(&[
        "execute",
        "--container-app",
        "broker-busybox",
        "--command",
        "sh -c 'echo from app; exit 2'",
        "-o",
        "json",
    ]);
    let result: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(result["output"], "from app\n");
    assert_eq!(result["status"], 2);
    assert!(containers(&prefix).is_empty());
    let listing = dir.ok(&["providers", "Container", "--container-hosts", "-o", "json"]);
    let images: Vec<Value> = serde_json::from_str(&listing).unwrap();
    assert!(
        images
            .iter()
            .any(|i| i == "localhost/broker-busybox:latest"),
        "{images:?}"
    );
    let details = dir.ok(&[
        "providers",
        "Container",
        "--container-host",
        "localhost/broker-busybox",
    ]);
    assert!(details.contains("broker_compatible"), "{details}");
}

#[test]
fn missing_image_and_network_are_clear_errors() {
    let Some((dir, _prefix)) = engine_dir("errs") else {
        return;
    };
    let out = dir.run(&["checkout", "--container-host", "no-such-image-here"]);
    assert_eq!(out.status.code(), Some(7));
    assert!(
        stderr(&out).contains("no-such-image-here"),
        "{}",
        stderr(&out)
    );
    std::fs::write(
        dir.path().join("broker_settings.yaml"),
        "Container:\n  network: no-such-network\n",
    )
    .unwrap();
    let out = dir.run(&["checkout", "--container-host", "broker-busybox"]);
    assert_eq!(out.status.code(), Some(13));
    assert!(
        stderr(&out).contains("network 'no-such-network' not found"),
        "{}",
        stderr(&out)
    );
    assert!(dir.inventory().is_empty());
}

/// A broker directory whose containers (named `<prefix>_…`, removed when the test ends) are reached
/// over SSH as root with the sshd image's password; `None` as [`engine_dir`] says, or when the sshd
/// image is missing.
pub(crate) fn sshd_dir(test: &str) -> Option<(BrokerDir, Containers)> {
    let (_dir, prefix) = engine_dir(test)?;
    if !broker_test_support::sshd_image() {
        return None;
    }
    let settings = format!(
        "Container:\n  name_prefix: {prefix}\nssh:\n  host_username: root\n  host_password: broker-test-password\n  host_connection_timeout: 60\n"
    );
    Some((BrokerDir::new(&settings), prefix))
}

#[test]
fn container_with_sshd_is_reached_over_ssh() {
    let Some((dir, prefix)) = sshd_dir("sshd") else {
        return;
    };
    let out = dir.ok(&[
        "checkout",
        "--container-host",
        "broker-sshd",
        "--ports",
        "22",
        "-o",
        "json",
    ]);
    let hosts: Vec<Value> = serde_json::from_str(&out).unwrap();
    let hostname = hosts[0]["hostname"].as_str().unwrap().to_owned();
    assert!(hostname.starts_with("localhost:"), "{hostname}");
    // SSH_CONNECTION is set only in an SSH session, not in a container exec.
    let via = dir.ok(&["ssh", &hostname, "--", "echo \"$SSH_CONNECTION\""]);
    assert!(via.trim().ends_with(" 22"), "not over SSH: {via:?}");
    assert!(
        dir.ok(&["ssh", "0", "--", "uname", "-a"])
            .starts_with("Linux")
    );
    assert_eq!(
        dir.run(&["ssh", "0", "--", "exit 9"]).status.code(),
        Some(9)
    );
    assert!(
        dir.path().join("known_hosts").exists(),
        "the host key was remembered"
    );
    // No command: an interactive shell with a terminal (driven here through `script`'s PTY).
    let mut shell = Terminal::start(&mut dir.in_terminal("", "ssh 0; echo broker-rc=$?"));
    // Typed once the remote shell shows its prompt (root's ends in `# `), each line once the
    // previous one was answered.
    shell.wait_for_text("# ");
    shell.type_keys("echo typed-$((40+2))\r");
    shell.wait_for_text("typed-42\n");
    shell.type_keys("exit 3\r");
    let (_, text) = shell.finish();
    assert!(text.contains("typed-42"), "{text}");
    assert!(text.contains("broker-rc=3"), "{text}");
    dir.ok(&["checkin", "--all"]);
    assert!(containers(&prefix).is_empty());
}

/// Records in the inventory file, read directly (the CLI may be busy with the same directory).
fn recorded_names(dir: &BrokerDir) -> Vec<String> {
    let text = std::fs::read_to_string(dir.inventory_path()).unwrap_or_default();
    let records: Vec<serde_yaml::Value> = serde_yaml::from_str(&text).unwrap_or_default();
    let mut names: Vec<String> = records
        .iter()
        .filter_map(|r| r.get("name").and_then(serde_yaml::Value::as_str))
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

#[test]
fn ctrl_c_during_container_checkout_leaves_no_unrecorded_container() {
    let Some((dir, prefix)) = engine_dir("intr") else {
        return;
    };
    for delay_ms in [0u64, 10, 30, 50, 70, 90] {
        let child = ChildGuard::spawn(
            dir.command(&[
                "checkout",
                "--container-host",
                "broker-busybox",
                "--command",
                "sleep 3600",
                "-c",
                "5",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped()),
        );
        // Count from the first intent record: the checkout is under way.
        assert!(wait_for(Duration::from_secs(20), || !recorded_names(&dir).is_empty()));
        std::thread::sleep(Duration::from_millis(delay_ms));
        crate::util::interrupt(&child);
        let out = child.wait_output(DEADLINE);
        let code = out.status.code();
        assert!(
            code == Some(130) || code == Some(0),
            "after {delay_ms} ms: {code:?}\n{}",
            stderr(&out)
        );
        // Every container broker made is either gone or still recorded: none is left unknown.
        let live = containers(&prefix);
        let recorded = recorded_names(&dir);
        let unrecorded: Vec<&String> = live.iter().filter(|c| !recorded.contains(c)).collect();
        assert!(
            unrecorded.is_empty(),
            "after {delay_ms} ms, containers with no record: {unrecorded:?}; records: {recorded:?}\n{}",
            stderr(&out)
        );
        // What stderr says was checked in is really gone.
        if code == Some(130) {
            assert_eq!(
                live,
                recorded,
                "after {delay_ms} ms the inventory and the engine disagree\n{}",
                stderr(&out)
            );
        }
        dir.ok(&["checkin", "--all"]);
        dir.ok(&["recover", "--all"]);
        assert!(containers(&prefix).is_empty(), "{:?}", containers(&prefix));
    }
}

#[test]
fn checkin_never_removes_a_foreign_container_that_took_the_name() {
    let Some((dir, prefix)) = engine_dir("foreign") else {
        return;
    };
    let out = dir.ok(&[
        "checkout",
        "--container-host",
        "broker-busybox",
        "--command",
        "sleep 3600",
        "-o",
        "json",
    ]);
    let hosts: Vec<Value> = serde_json::from_str(&out).unwrap();
    let name = hosts[0]["name"].as_str().unwrap().to_owned();
    // The host's container goes away behind broker's back, and someone else's takes its name.
    let podman = |args: &[&str]| {
        let out = Command::new("podman").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    podman(&["rm", "-f", &name]);
    podman(&[
        "run",
        "-d",
        "--name",
        &name,
        "--stop-timeout",
        "1",
        "localhost/broker-busybox",
        "sleep",
        "3600",
    ]);
    dir.ok(&["checkin", "0"]);
    assert!(dir.inventory().is_empty());
    assert_eq!(
        containers(&prefix),
        vec![name.clone()],
        "the foreign container survives"
    );
    podman(&["rm", "-f", &name]);
}

#[test]
fn an_engine_asked_for_that_does_not_answer_fails_naming_it() {
    let Some((dir, prefix)) = engine_dir("asked") else {
        return;
    };
    let checkout = [
        "checkout",
        "--container-host",
        "broker-busybox",
        "--command",
        "sleep 3600",
    ];
    for (var, value) in [
        ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
        ("CONTAINER_HOST", "tcp://127.0.0.1:1"),
        ("DOCKER_HOST", "ssh://core@engine.example.com"),
    ] {
        let out = output(dir.command(&checkout).env(var, value));
        assert_eq!(
            out.status.code(),
            Some(7),
            "{var}={value}: {}",
            stderr(&out)
        );
        let err = stderr(&out);
        assert!(err.contains(&format!("${var}")), "{err}");
        assert!(err.contains(value.split('@').next_back().unwrap()), "{err}");
        // Not silently on the local engine instead.
        assert!(
            containers(&prefix).is_empty(),
            "{var}={value}: {:?}",
            containers(&prefix)
        );
        assert!(dir.inventory().is_empty());
    }
    std::fs::write(
        dir.path().join("broker_settings.yaml"),
        format!("Container:\n  name_prefix: {prefix}\n  socket: /nonexistent/podman.sock\n"),
    )
    .unwrap();
    let out = dir.run(&checkout);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("setting `socket`"),
        "{}",
        stderr(&out)
    );
    assert!(containers(&prefix).is_empty());
}
