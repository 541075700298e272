//! Handoff runs of the `script` kind against real hosts: a container reached by exec, the sshd
//! container reached over SSH; and the failure paths (a failing script, a timeout).

use serde_json::Value;

use crate::container::{containers, engine_dir, sshd_dir};
use crate::util::{BrokerDir, stderr};

/// A script target `bootstrap` (id `tgt-bootstrap`) running `script`, with a secret `password`
/// and the given extra plain keys, written straight into `targets.yaml`.
pub(crate) fn script_target(dir: &BrokerDir, script: &str, extra: &str) {
    let path = dir.path().join("bootstrap.sh");
    std::fs::write(&path, script).unwrap();
    std::fs::write(
        dir.path().join("targets.yaml"),
        format!(
            "- id: tgt-bootstrap\n  name: bootstrap\n  kind: script\n  config:\n    script: {}\n    \
             retry_delay: 1s\n{extra}  secrets:\n    password: hunter2\n  created: 0\n  updated: 0\n  \
             revision: 1\n",
            path.display()
        ),
    )
    .unwrap();
}

/// Reports what the script can see of its files and session, and leaves a mark on the host.
const REPORTING_SCRIPT: &str = "#!/bin/sh
set -e
meta=\"$1\"
echo \"modes $(stat -c %a \"$(dirname \"$meta\")\") $(stat -c %a \"$meta\") $(stat -c %a \"$0\")\"
echo \"over-ssh=${SSH_CONNECTION:+yes}\"
grep -q '\"password\": \"hunter2\"' \"$meta\" && echo 'secret delivered'
grep -q '\"target\": \"bootstrap\"' \"$meta\" && echo 'target named'
echo handed-off > /root/handed-off
";

pub(crate) fn the_record(dir: &BrokerDir) -> Value {
    let records = dir.inventory();
    assert_eq!(records.len(), 1, "{records:?}");
    records[0].clone()
}

pub(crate) fn log_of(record: &Value) -> Vec<String> {
    record["_broker_handoff_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_owned())
        .collect()
}

/// What `broker ssh 0` prints for `command`.
pub(crate) fn on_host(dir: &BrokerDir, command: &str) -> String {
    String::from_utf8_lossy(&dir.run(&["ssh", "0", "--", command]).stdout).into_owned()
}

/// `broker checkout` of a busybox container host handed off to `bootstrap`, with `more` flags.
fn checkout_handed_off(dir: &BrokerDir, more: &[&str]) -> std::process::Output {
    let mut args = vec![
        "checkout",
        "--container-host",
        "broker-busybox",
        "--command",
        "sleep 3600",
        "--handoff",
        "bootstrap",
    ];
    args.extend_from_slice(more);
    dir.run(&args)
}

pub(crate) const FILES_LEFT: &str = "ls -d /tmp/broker-handoff.* 2>/dev/null | wc -l";

#[test]
fn script_handoff_of_a_container_host_over_exec() {
    let Some((dir, prefix)) = engine_dir("hoexec") else {
        return;
    };
    script_target(&dir, REPORTING_SCRIPT, "");
    let out = checkout_handed_off(&dir, &["-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let printed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed[0]["_broker_handoff_state"], "handed_off");
    let record = the_record(&dir);
    assert_eq!(record["_broker_handoff_target"], "tgt-bootstrap");
    assert_eq!(record["_broker_handoff_state"], "handed_off");
    assert_eq!(record["_broker_handoff_attempts"], 1);
    assert_eq!(record["_broker_handoff_error"], Value::Null);
    assert!(record["_broker_args"].get("handoff").is_none(), "{record}");
    let log = log_of(&record);
    for line in [
        "modes 700 600 700",
        "over-ssh=",
        "secret delivered",
        "target named",
    ] {
        assert!(log.contains(&line.to_owned()), "{line}: {log:?}");
    }
    assert!(!log.iter().any(|l| l.contains("hunter2")), "{log:?}");
    assert!(
        !std::fs::read_to_string(dir.inventory_path())
            .unwrap()
            .contains("hunter2")
    );
    assert_eq!(on_host(&dir, "cat /root/handed-off"), "handed-off\n");
    assert_eq!(on_host(&dir, FILES_LEFT).trim(), "0");

    let status: Value =
        serde_json::from_str(&dir.ok(&["handoff", "status", "0", "-o", "json"])).unwrap();
    assert_eq!(status["_broker_handoff_state"], "handed_off");
    let refused = dir.run(&["handoff", "retry", "0"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        stderr(&refused).contains("is already handed off"),
        "{}",
        stderr(&refused)
    );
    let again: Value =
        serde_json::from_str(&dir.ok(&["handoff", "run", "0", "-o", "json"])).unwrap();
    assert_eq!(again["_broker_handoff_state"], "handed_off");
    assert_eq!(again["_broker_handoff_target"], "tgt-bootstrap");

    dir.ok(&["checkin", "0"]);
    assert!(containers(&prefix).is_empty());
}

#[test]
fn script_handoff_of_the_sshd_container_host_over_ssh() {
    let Some((dir, prefix)) = sshd_dir("hossh") else {
        return;
    };
    script_target(&dir, REPORTING_SCRIPT, "");
    dir.ok(&[
        "checkout",
        "--container-host",
        "broker-sshd",
        "--ports",
        "22",
        "--handoff",
        "bootstrap",
    ]);
    let record = the_record(&dir);
    assert_eq!(record["_broker_handoff_state"], "handed_off", "{record}");
    let log = log_of(&record);
    for line in ["modes 700 600 700", "over-ssh=yes", "secret delivered"] {
        assert!(log.contains(&line.to_owned()), "{line}: {log:?}");
    }
    assert_eq!(on_host(&dir, FILES_LEFT).trim(), "0");
    dir.ok(&["checkin", "--all"]);
    assert!(containers(&prefix).is_empty());
}

#[test]
fn a_failing_handoff_script_fails_the_checkout_and_leaves_nothing() {
    let Some((dir, prefix)) = engine_dir("hofail") else {
        return;
    };
    script_target(&dir, "#!/bin/sh\necho giving up\nexit 1\n", "");
    let out = checkout_handed_off(&dir, &[]);
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "handoff to `bootstrap` ended handoff_failed: the handoff script exited with status 1"
        ),
        "{}",
        stderr(&out)
    );
    assert!(dir.inventory().is_empty());
    assert!(containers(&prefix).is_empty());
}

#[test]
fn a_timed_out_handoff_stops_the_scripts_processes() {
    let Some((dir, prefix)) = engine_dir("hotime") else {
        return;
    };
    script_target(
        &dir,
        "#!/bin/sh\nsleep 4242 &\nsleep 4243\n",
        "    run_timeout: 3s\n",
    );
    let out = checkout_handed_off(&dir, &["--keep-failed-handoff"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let record = the_record(&dir);
    assert_eq!(record["_broker_handoff_state"], "handoff_failed");
    assert_eq!(record["_broker_handoff_attempts"], 1);
    let error = record["_broker_handoff_error"].as_str().unwrap();
    assert!(
        error.ends_with("(its processes were stopped) timed out after 3s"),
        "{error}"
    );
    assert_eq!(on_host(&dir, "ps | grep -c '[s]leep 424'").trim(), "0");
    assert_eq!(on_host(&dir, FILES_LEFT).trim(), "0");
    let status = dir.run(&["handoff", "retry", "0", "-o", "json"]);
    assert_eq!(status.status.code(), Some(10), "{}", stderr(&status));
    dir.ok(&["checkin", "0"]);
    assert!(containers(&prefix).is_empty());
}

/// A script that starts `sleep TAG` as a daemon does — in a session of its own (`setsid`), its
/// parent gone — says so, and sleeps.
fn setsid_script(tag: u32) -> String {
    format!(
        "#!/bin/sh\n(setsid sh -c 'exec sleep {tag}' &)\necho started in a session of its own\nsleep 300\n"
    )
}

#[test]
fn a_timed_out_handoff_stops_what_the_script_started_with_setsid_in_a_container() {
    let Some((dir, prefix)) = engine_dir("hosetsid") else {
        return;
    };
    script_target(&dir, &setsid_script(4262), "    run_timeout: 3s\n");
    let out = checkout_handed_off(&dir, &["--keep-failed-handoff"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let record = the_record(&dir);
    assert_eq!(record["_broker_handoff_state"], "handoff_failed");
    assert!(
        log_of(&record).contains(&"started in a session of its own".to_owned()),
        "{record}"
    );
    assert_eq!(on_host(&dir, "ps | grep -c '[s]leep 4262'").trim(), "0");
    dir.ok(&["checkin", "0"]);
    assert!(containers(&prefix).is_empty());
}

#[test]
fn a_timed_out_handoff_stops_what_the_script_started_with_setsid_on_a_test_provider_host() {
    let dir = local_dir(&setsid_script(4264), "    run_timeout: 3s\n");
    let out = dir.run(&[
        "checkout",
        "--nick",
        "N",
        "--handoff",
        "bootstrap",
        "--keep-failed-handoff",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let record = the_record(&dir);
    assert_eq!(record["_broker_handoff_state"], "handoff_failed");
    // What it printed before the timeout is in the log (the session streams it).
    assert!(
        log_of(&record).contains(&"started in a session of its own".to_owned()),
        "{record}"
    );
    assert!(
        crate::util::wait_for(crate::util::DEADLINE, || sleeping(4264) == 0),
        "what the script started with setsid outlived the timeout"
    );
    dir.ok(&["checkin", "--all"]);
    dir.assert_nothing_out();
}

/// A broker directory with the TestProvider instance `local` and `script_target`'s `bootstrap`.
fn local_dir(script: &str, extra: &str) -> BrokerDir {
    let dir = BrokerDir::new(crate::util::SETTINGS);
    script_target(&dir, script, extra);
    dir
}

/// The files a run left in the TestProvider host's root and in this machine's `/tmp` (where a
/// command's `/tmp` is), by the record's host name.
fn left_on_test_host(dir: &BrokerDir, name: &str) -> Vec<String> {
    let root = dir
        .path()
        .join("test_provider/local/hosts")
        .join(name)
        .join("root/tmp");
    let in_root = std::fs::read_dir(root)
        .map(|d| {
            d.filter_map(|e| Some(e.ok()?.path().display().to_string()))
                .collect()
        })
        .unwrap_or_else(|_| Vec::new());
    in_root
        .into_iter()
        .filter(|p: &String| p.contains("broker-handoff."))
        .collect()
}

#[test]
fn a_test_provider_host_is_handed_off_by_a_script() {
    let dir = local_dir(
        "#!/bin/sh\nset -e\ntest -f \"$1\"\ngrep -q hunter2 \"$1\"\necho handed > handed-off\necho done\n",
        "",
    );
    let out = dir.run(&["checkout", "--nick", "N", "--handoff", "bootstrap"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let record = the_record(&dir);
    assert_eq!(record["_broker_handoff_state"], "handed_off", "{record}");
    assert_eq!(record["_broker_handoff_attempts"], 1, "{record}");
    assert!(log_of(&record).contains(&"done".to_owned()), "{record}");
    let name = record["name"].as_str().unwrap().to_owned();
    assert_eq!(left_on_test_host(&dir, &name), Vec::<String>::new());
    dir.ok(&["checkin", "--all"]);
    dir.assert_nothing_out();
}

#[test]
fn a_failed_handoff_says_the_host_was_checked_in_and_shows_the_end_of_its_log() {
    let dir = local_dir(
        "#!/bin/sh\necho first step ok\necho no puppet here >&2\nexit 3\n",
        "",
    );
    let out = dir.run(&["checkout", "--nick", "N", "--handoff", "bootstrap"]);
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(
            "handoff to `bootstrap` ended handoff_failed: the handoff script exited with status 3; \
             the host was checked in (a failed handoff fails the checkout; `--keep-failed-handoff` \
             keeps the host); the run's log ended:"
        ),
        "{err}"
    );
    // stdout and stderr are streamed from two pipes: their lines come in either order.
    assert!(
        err.contains("\n      first step ok\n      no puppet here\n      exit status 3\n")
            || err.contains("\n      no puppet here\n      first step ok\n      exit status 3\n"),
        "{err}"
    );
    assert!(!err.contains("broker handoff status"), "{err}");
    dir.assert_nothing_out();
}

#[test]
fn a_kept_failed_handoff_says_what_was_kept_and_how_to_retry_or_check_it_in() {
    let dir = local_dir("#!/bin/sh\nexit 3\n", "");
    let out = dir.run(&[
        "checkout",
        "--nick",
        "N",
        "--handoff",
        "bootstrap",
        "--keep-failed-handoff",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let record = the_record(&dir);
    let name = record["hostname"].as_str().unwrap().to_owned();
    assert_eq!(record["_broker_handoff_state"], "handoff_failed");
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "kept host {name} although its handoff to `bootstrap` ended handoff_failed (the \
             handoff script exited with status 3): `broker handoff status {name}` shows its log, \
             `broker handoff retry {name}` runs it again, `broker checkin {name}` gives the host back"
        )),
        "{err}"
    );
    dir.ok(&["checkin", "--all"]);
    dir.assert_nothing_out();
}

/// A script that marks the host when it has started, then sleeps in two processes (one a child in
/// the background) whose command lines carry `tag`.
fn sleeping_script(tag: u32) -> String {
    format!(
        "#!/bin/sh\ntouch \"$HOME/started\"\nsleep {tag} &\nsleep {}\n",
        tag + 1
    )
}

/// Processes of this machine whose command line is `sleep N` for the script of `tag`.
fn sleeping(tag: u32) -> usize {
    let wanted = [format!("sleep {tag}"), format!("sleep {}", tag + 1)];
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|line| {
            String::from_utf8_lossy(&line)
                .replace('\0', " ")
                .trim()
                .to_owned()
        })
        .filter(|line| wanted.contains(line))
        .count()
}

/// The root directory of the TestProvider host `local` holds (the only one).
fn test_host_root(dir: &BrokerDir) -> std::path::PathBuf {
    let hosts = dir.provider_hosts();
    assert_eq!(hosts.len(), 1, "{hosts:?}");
    dir.path()
        .join("test_provider/local/hosts")
        .join(&hosts[0])
        .join("root")
}

/// Starts `broker ARGS` (its output piped) and waits until its handoff script runs on the
/// TestProvider host.
fn start_mid_handoff(dir: &BrokerDir, args: &[&str], tag: u32) -> crate::util::ChildGuard {
    let child = crate::util::ChildGuard::spawn(
        dir.command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped()),
    );
    assert!(
        crate::util::wait_for(crate::util::DEADLINE, || {
            dir.provider_hosts().len() == 1
                && test_host_root(dir).join("started").exists()
                && sleeping(tag) == 2
        }),
        "the handoff script never started"
    );
    child
}

/// Starts `broker ARGS`, waits until its handoff script runs on the TestProvider host, and kills it
/// with SIGKILL.
fn kill_nine_mid_handoff(dir: &BrokerDir, args: &[&str], tag: u32) {
    let mut child = start_mid_handoff(dir, args, tag);
    child.kill().unwrap(); // SIGKILL
    child.wait(crate::util::DEADLINE);
    let record = the_record(dir);
    assert_eq!(record["_broker_handoff_state"], "handing_off", "{record}");
}

/// `kill -9` of `broker checkout --handoff` mid-run, then `broker VERB`: the host is checked in,
/// and nothing of the run is left on this machine.
fn kill_nine_mid_checkout_handoff_then(verb: &str, tag: u32) {
    let dir = local_dir(&sleeping_script(tag), "");
    kill_nine_mid_handoff(
        &dir,
        &["checkout", "--nick", "N", "--handoff", "bootstrap"],
        tag,
    );
    let out = dir.run(&[verb]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    dir.assert_nothing_out();
    assert!(
        crate::util::wait_for(crate::util::DEADLINE, || sleeping(tag) == 0),
        "the handoff script's processes outlived `broker {verb}`"
    );
}

#[test]
fn kill_nine_mid_checkout_handoff_then_recover_checks_the_host_in_and_leaves_nothing() {
    kill_nine_mid_checkout_handoff_then("recover", 4301);
}

#[test]
fn kill_nine_mid_checkout_handoff_then_reap_checks_the_host_in_and_leaves_nothing() {
    kill_nine_mid_checkout_handoff_then("reap", 4303);
}

#[test]
fn kill_nine_mid_handoff_run_then_recover_judges_it_failed_and_keeps_the_host() {
    let dir = local_dir(&sleeping_script(4305), "");
    dir.ok(&["checkout", "--nick", "N"]);
    kill_nine_mid_handoff(
        &dir,
        &["handoff", "run", "0", "--target", "bootstrap"],
        4305,
    );
    let out = dir.run(&["recover"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let record = the_record(&dir);
    assert_eq!(record["_broker_state"], "ready", "{record}");
    assert_eq!(
        record["_broker_handoff_state"], "handoff_failed",
        "{record}"
    );
    assert!(record.get("_broker_handoff_runner").is_none(), "{record}");
    let error = record["_broker_handoff_error"].as_str().unwrap();
    assert!(
        error.starts_with("interrupted: the broker process running it (pid ")
            && error.contains(
                "ended mid-run; what it left on the host was stopped and removed; `broker \
                 handoff retry "
            ),
        "{error}"
    );
    assert!(
        crate::util::wait_for(crate::util::DEADLINE, || sleeping(4305) == 0),
        "the handoff script's processes outlived the recovery"
    );
    let name = record["name"].as_str().unwrap().to_owned();
    assert_eq!(left_on_test_host(&dir, &name), Vec::<String>::new());
    dir.ok(&["checkin", "--all"]);
    dir.assert_nothing_out();
}

/// Starts `broker ARGS`, waits until its handoff script runs on the TestProvider host, sends it
/// `signal` (`INT`, `TERM`, `HUP`) and returns how it ended.
fn signal_mid_handoff(
    dir: &BrokerDir,
    args: &[&str],
    tag: u32,
    signal: &str,
) -> std::process::Output {
    let child = start_mid_handoff(dir, args, tag);
    crate::util::signal(&child, signal);
    child.wait_output(crate::util::DEADLINE)
}

#[test]
fn a_stop_signal_mid_checkout_handoff_stops_the_run_and_checks_the_host_in() {
    for (signal, tag) in [("INT", 4311), ("TERM", 4313), ("HUP", 4315)] {
        let dir = local_dir(&sleeping_script(tag), "");
        let out = signal_mid_handoff(
            &dir,
            &["checkout", "--nick", "N", "--handoff", "bootstrap"],
            tag,
            signal,
        );
        assert_eq!(out.status.code(), Some(130), "{signal}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(
                "interrupted: the checkout was stopped while its hosts were handed off to \
                 `bootstrap`; their runs were stopped and 1 host(s) checked in again"
            ),
            "{signal}: {}",
            stderr(&out)
        );
        dir.assert_nothing_out();
        assert_eq!(dir.provider_hosts(), Vec::<String>::new(), "{signal}");
        assert!(
            crate::util::wait_for(crate::util::DEADLINE, || sleeping(tag) == 0),
            "{signal}: the handoff script's processes outlived the stopped checkout"
        );
    }
}

#[test]
fn a_stop_signal_mid_handoff_run_stops_it_and_keeps_the_host_handoff_failed() {
    let dir = local_dir(&sleeping_script(4317), "");
    dir.ok(&["checkout", "--nick", "N"]);
    let out = signal_mid_handoff(
        &dir,
        &["handoff", "run", "0", "--target", "bootstrap"],
        4317,
        "TERM",
    );
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let record = the_record(&dir);
    let name = record["name"].as_str().unwrap().to_owned();
    let shown = record["hostname"].as_str().unwrap();
    assert!(
        stderr(&out).contains(&format!(
            "interrupted: SIGTERM: the handoff of {shown} was stopped and is recorded \
             handoff_failed; `broker handoff retry {shown}` runs it again"
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(record["_broker_state"], "ready", "{record}");
    assert_eq!(
        record["_broker_handoff_state"], "handoff_failed",
        "{record}"
    );
    assert_eq!(
        record["_broker_handoff_error"],
        "interrupted: the run was stopped before it ended; what it started on the host was \
         stopped and its files removed"
    );
    assert!(record.get("_broker_handoff_runner").is_none(), "{record}");
    assert!(record.get("_broker_handoff_run").is_none(), "{record}");
    assert!(
        crate::util::wait_for(crate::util::DEADLINE, || sleeping(4317) == 0),
        "the handoff script's processes outlived the stopped run"
    );
    assert_eq!(left_on_test_host(&dir, &name), Vec::<String>::new());
    dir.ok(&["checkin", "--all"]);
    dir.assert_nothing_out();
}

/// The sshd container host over SSH: a script that exits 1 fails the checkout and leaves nothing; a
/// timed-out run's processes are gone from the host (as `ps` there shows) and so are its files; a
/// host that cannot be reached any more is tried `retries` more times, then the handoff fails with
/// the attempts recorded.
#[test]
fn failure_paths_of_a_handoff_over_ssh() {
    let Some((dir, prefix)) = sshd_dir("hosshfail") else {
        return;
    };
    let sshd = [
        "checkout",
        "--container-host",
        "broker-sshd",
        "--ports",
        "22",
    ];
    let with_handoff = |more: &[&str]| {
        let mut args = sshd.to_vec();
        args.extend_from_slice(&["--handoff", "bootstrap"]);
        args.extend_from_slice(more);
        dir.run(&args)
    };

    script_target(&dir, "#!/bin/sh\necho giving up\nexit 1\n", "");
    let out = with_handoff(&[]);
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "handoff to `bootstrap` ended handoff_failed: the handoff script exited with status 1; \
             the host was checked in"
        ),
        "{}",
        stderr(&out)
    );
    assert!(dir.inventory().is_empty());
    assert!(containers(&prefix).is_empty());

    script_target(
        &dir,
        "#!/bin/sh\nsleep 4252 &\nsleep 4253\n",
        "    run_timeout: 3s\n    retries: 2\n    connect_timeout: 5s\n",
    );
    let out = with_handoff(&["--keep-failed-handoff"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let record = the_record(&dir);
    assert_eq!(record["_broker_handoff_state"], "handoff_failed");
    assert_eq!(record["_broker_handoff_attempts"], 1);
    assert!(
        record["_broker_handoff_error"]
            .as_str()
            .unwrap()
            .ends_with("(its processes were stopped) timed out after 3s"),
        "{record}"
    );
    assert_eq!(
        on_host(&dir, "ps -eo args | grep -c '^[s]leep 425'").trim(),
        "0"
    );
    assert_eq!(on_host(&dir, FILES_LEFT).trim(), "0");

    let container = record["name"].as_str().unwrap().to_owned();
    let stopped = std::process::Command::new("podman")
        .args(["stop", "-t", "0", &container])
        .output()
        .unwrap();
    assert!(stopped.status.success(), "{stopped:?}");
    let out = dir.run(&["handoff", "retry", "0", "-o", "json"]);
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["_broker_handoff_state"], "handoff_failed",
        "{report}"
    );
    assert_eq!(report["_broker_handoff_attempts"], 3, "{report}");
    let log = log_of(&report);
    for retry in ["retry 1 of 2", "retry 2 of 2"] {
        assert!(
            log.iter()
                .any(|l| l.starts_with("transport error: ") && l.contains(retry)),
            "{retry}: {log:?}"
        );
    }
    assert_eq!(the_record(&dir)["_broker_handoff_attempts"], 3);
    dir.ok(&["checkin", "--all"]);
    assert!(dir.inventory().is_empty());
    assert!(containers(&prefix).is_empty());
}

/// A host whose checkout is still handing it off is not the user's yet: `broker checkin` leaves it
/// to the checkout, as it does a `pending` one, naming the process.
#[test]
fn checkin_leaves_a_host_whose_checkout_is_still_handing_it_off() {
    let dir = local_dir(&sleeping_script(4307), "");
    let mut child = crate::util::ChildGuard::spawn(
        dir.command(&["checkout", "--nick", "N", "--handoff", "bootstrap"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    assert!(
        crate::util::wait_for(crate::util::DEADLINE, || sleeping(4307) == 2),
        "the handoff script never started"
    );
    let out = dir.run(&["checkin", "--all"]);
    assert_eq!(out.status.code(), Some(13), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("is still being checked out by pid {}", child.id())),
        "{}",
        stderr(&out)
    );
    assert_eq!(the_record(&dir)["_broker_handoff_state"], "handing_off");
    child.kill().unwrap();
    child.wait(crate::util::DEADLINE);
    dir.ok(&["recover"]);
    dir.assert_nothing_out();
}
