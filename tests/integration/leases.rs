//! Leases and reaping (docs/leases.md): a test process that ends without dropping its guards —
//! `kill -9`, `abort()`, `std::process::exit` — has its hosts given back by the next broker start or,
//! with a watcher, within seconds; ended leases are reaped; a live owner's hosts are not; two
//! reapers at once give each host back once; a guard that leaves its host behind says so on stderr.

use std::process::{Command, Stdio};
use std::time::Duration;

use broker_core::{Broker, CheckoutRequest, Mapping, Settings};
use serde_json::Value as Json;

use crate::util::{BROKER, BrokerDir, ChildGuard, Containers, DEADLINE, SETTINGS, wait_for};

/// How a test process holding guards ends.
#[derive(Debug, Clone, Copy)]
enum End {
    /// `kill -9` from outside.
    Killed,
    /// `std::process::abort()`.
    Aborted,
    /// `std::process::exit(3)`, which runs no destructor.
    Exited,
}

impl End {
    const ALL: [End; 3] = [End::Killed, End::Aborted, End::Exited];

    fn name(self) -> &'static str {
        match self {
            End::Killed => "kill",
            End::Aborted => "abort",
            End::Exited => "exit",
        }
    }
}

/// Not a test of its own: run by the tests below (with `--ignored`) as a test process that checks
/// hosts out into guards through the library, says so, and then ends as `BROKER_TEST_END` says
/// without dropping them — or drops them normally (`drop`), or panics (`panic`).
#[test]
#[ignore = "a test process the lease tests start and end"]
fn holds_guards_until_it_ends() {
    let Ok(end) = std::env::var("BROKER_TEST_END") else {
        return;
    };
    let ready = std::env::var("BROKER_TEST_READY").unwrap();
    let count: usize = std::env::var("BROKER_TEST_HOSTS").unwrap().parse().unwrap();
    let args: Mapping = serde_yaml::from_str(&std::env::var("BROKER_TEST_ARGS").unwrap()).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let broker = Broker::new(Settings::load().unwrap(), broker_providers::registry()).unwrap();
    if std::env::var_os("BROKER_TEST_WATCH").is_some() {
        // Never waited for: it outlives this process, which is what it is for.
        #[allow(clippy::zombie_processes)]
        let _watcher =
            broker_core::reap::spawn_watcher(BROKER, broker.settings().directory()).unwrap();
    }
    let request = CheckoutRequest::new().args(args).count(count);
    let guards = runtime.block_on(broker.checkout(request)).unwrap();
    std::fs::write(&ready, "ready").unwrap();
    match end.as_str() {
        "abort" => std::process::abort(),
        #[allow(clippy::disallowed_methods)]
        "exit" => std::process::exit(3),
        "drop" => drop(guards),
        "panic" => panic!("failing on purpose with {} guards", guards.len()),
        _ => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
    }
}

/// A started [`holds_guards_until_it_ends`]: it has checked its hosts out when this returns.
struct Holder {
    process: ChildGuard,
}

impl Holder {
    /// Starts a test process over `dir` checking out `count` hosts with `args` (YAML), with a
    /// watcher when `watch`, and ending as `end` says (`kill`: when [`Holder::kill`] is called).
    fn start(dir: &BrokerDir, args: &str, count: usize, end: &str, watch: bool) -> Holder {
        Holder::start_with(dir, args, count, end, watch, &[])
    }

    fn start_with(
        dir: &BrokerDir,
        args: &str,
        count: usize,
        end: &str,
        watch: bool,
        env: &[(&str, &str)],
    ) -> Holder {
        let ready = dir.path().join(format!("ready-{end}"));
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args([
                "--ignored",
                "--exact",
                "--nocapture",
                "leases::holds_guards_until_it_ends",
            ])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir.path())
            .env("USER", "tester")
            .env("BROKER_DIRECTORY", dir.path())
            .env("BROKER_TEST_END", end)
            .env("BROKER_TEST_READY", &ready)
            .env("BROKER_TEST_HOSTS", count.to_string())
            .env("BROKER_TEST_ARGS", args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if watch {
            command.env("BROKER_TEST_WATCH", "1");
        }
        let mut process = ChildGuard::spawn(&mut command);
        let made = wait_for(DEADLINE, || {
            ready.exists() || process.try_wait().ok().flatten().is_some()
        });
        assert!(made && ready.exists(), "the test process never checked out");
        Holder { process }
    }

    /// `kill -9`.
    fn kill(&mut self) {
        let _ = self.process.kill();
    }

    /// Waits for the test process to end, returning its stderr.
    fn ended(self) -> String {
        let out = self.process.wait_output(DEADLINE);
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

/// Ends a test process holding guards as `end` says.
fn end_holder(mut holder: Holder, end: End) {
    if let End::Killed = end {
        holder.kill();
    }
    holder.ended();
}

/// The inventory's records, as `broker inventory -o json` shows them.
fn records(dir: &BrokerDir) -> Vec<Json> {
    dir.inventory()
}

fn guarded(dir: &BrokerDir) -> usize {
    records(dir)
        .iter()
        .filter(|r| r["_broker_guarded"] == Json::Bool(true))
        .count()
}

/// `broker reap ARGS -o json` (exit 0): the hosts it names, each with its reason and result.
fn reaped(dir: &BrokerDir, args: &[&str]) -> Vec<(String, String, String)> {
    let mut full = vec!["reap"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["-o", "json"]);
    rows(&dir.ok(&full))
}

fn rows(json: &str) -> Vec<(String, String, String)> {
    let rows: Vec<Json> = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    let mut out: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| {
            let text = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
            (text("id"), text("reason"), text("result"))
        })
        .collect();
    out.sort();
    out
}

const TEST_HOSTS: &str = "{test_action: basic}";

#[test]
fn a_test_process_ended_without_dropping_its_guards_is_cleaned_up_by_the_next_start() {
    for end in End::ALL {
        let dir = BrokerDir::new(SETTINGS);
        let holder = Holder::start(&dir, TEST_HOSTS, 2, end.name(), false);
        assert_eq!(guarded(&dir), 2, "{end:?}");
        end_holder(holder, end);
        // Nobody checked them in: they are still out, recorded as held by a guard.
        assert_eq!(dir.provider_hosts().len(), 2, "{end:?}");
        assert_eq!(guarded(&dir), 2, "{end:?}");
        // The next broker to check out gives them back first.
        dir.ok(&["checkout", "--test_action", "basic"]);
        let left = records(&dir);
        assert_eq!(left.len(), 1, "{end:?}: {left:?}");
        assert_eq!(
            left[0]["_broker_guarded"],
            Json::Null,
            "a CLI host is its user's"
        );
        assert_eq!(dir.provider_hosts().len(), 1, "{end:?}");
        dir.ok(&["checkin", "--all"]);
        dir.assert_nothing_out();
    }
}

#[test]
fn reaping_on_start_can_be_switched_off() {
    let dir = BrokerDir::new(&format!("{SETTINGS}reap_on_start: false\n"));
    end_holder(
        Holder::start(&dir, TEST_HOSTS, 2, "kill", false),
        End::Killed,
    );
    dir.ok(&["checkout", "--test_action", "basic"]);
    assert_eq!(guarded(&dir), 2);
    assert_eq!(dir.provider_hosts().len(), 3);
    let done = reaped(&dir, &[]);
    assert_eq!(done.len(), 2, "{done:?}");
    assert!(
        done.iter()
            .all(|(_, why, result)| why == "owner-gone" && result == "checked in")
    );
    assert_eq!(dir.provider_hosts().len(), 1);
}

#[test]
fn with_a_watcher_a_test_process_ended_without_dropping_its_guards_is_cleaned_up_within_seconds() {
    for end in End::ALL {
        let dir = BrokerDir::new(SETTINGS);
        let holder = Holder::start(&dir, TEST_HOSTS, 2, end.name(), true);
        end_holder(holder, end);
        given_back_within_10_s(&dir, end, || dir.provider_hosts());
    }
}

/// Asserts that within 10 s (a bound to wait for, not a timing) `out` lists no host left and the
/// inventory of `dir` no record.
fn given_back_within_10_s(dir: &BrokerDir, end: End, out: impl Fn() -> Vec<String>) {
    assert!(
        wait_for(Duration::from_secs(10), || out().is_empty()),
        "{end:?}: still out after 10 s: {:?}",
        out()
    );
    assert!(
        wait_for(Duration::from_secs(10), || records(dir).is_empty()),
        "{end:?}: {:?}",
        records(dir)
    );
}

#[test]
fn a_watcher_of_a_test_process_that_drops_its_guards_finds_nothing_and_leaves_kept_hosts() {
    let dir = BrokerDir::new(SETTINGS);
    // A host its user holds (a CLI checkout) is no business of the watcher's.
    dir.ok(&["checkout", "--test_action", "basic"]);
    let holder = Holder::start(&dir, TEST_HOSTS, 2, "drop", true);
    holder.ended();
    assert!(wait_for(DEADLINE, || dir.provider_hosts().len() == 1));
    let left = records(&dir);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(
        left[0]["_broker_args"]["_broker_origin"],
        "broker_cli:tester"
    );
}

#[test]
fn an_ended_lease_is_reaped_and_a_running_one_is_not() {
    // Not on start: each checkout here would reap the leases that ended before it.
    let dir = BrokerDir::new(&format!("{SETTINGS}reap_on_start: false\n"));
    dir.ok(&[
        "checkout",
        "--test_action",
        "basic",
        "--lease",
        "1s",
        "-c",
        "2",
    ]);
    dir.ok(&["checkout", "--test_action", "basic", "--lease", "1h"]);
    dir.ok(&["checkout", "--test_action", "basic"]);
    let soon = broker_core::time::now_epoch() + 60;
    let leases: Vec<(String, i64)> = records(&dir)
        .iter()
        .filter_map(|r| {
            let id = r["_broker_id"].as_str()?.to_owned();
            Some((id, r["_broker_expire_time"].as_i64()?))
        })
        .collect();
    assert_eq!(leases.len(), 3, "{leases:?}");
    let short: Vec<String> = leases
        .iter()
        .filter(|(_, at)| *at < soon)
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(short.len(), 2);
    let ends = leases.iter().map(|(_, at)| *at).min().unwrap();
    assert!(wait_for(DEADLINE, || broker_core::time::now_epoch() > ends));
    let would = reaped(&dir, &["--dry-run"]);
    assert_eq!(would.len(), 2, "{would:?}");
    assert!(
        would
            .iter()
            .all(|(_, _, result)| result == "would check in")
    );
    assert_eq!(records(&dir).len(), 4, "a dry run checks nothing in");
    let done = reaped(&dir, &[]);
    let ids: Vec<&str> = done.iter().map(|(id, _, _)| id.as_str()).collect();
    let mut expected: Vec<&str> = short.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(ids, expected);
    assert!(
        done.iter()
            .all(|(_, why, result)| why == "lease-expired" && result == "checked in")
    );
    assert_eq!(records(&dir).len(), 2);
    assert_eq!(dir.provider_hosts().len(), 2);
    let bad = dir.expect(&["checkout", "--test_action", "basic", "--lease", "0"], 2);
    assert!(bad.is_empty());
    assert_eq!(records(&dir).len(), 2, "a refused lease makes nothing");
}

/// A lease in the settings that is no lease — not a duration, 0, negative, longer than broker
/// gives — is reported by `broker config validate` and refused at checkout, each with its key and
/// line; a lease given on the command line wins over the settings' and is not held up by a bad one.
#[test]
fn a_bad_lease_in_the_settings_is_named_by_validate_and_at_checkout_with_its_line() {
    let settings = "\
TestProvider:
  lease: soon
  instances:
    local:
      default: true
nicks:
  forever:
    test_action: basic
    lease: 400d
  never:
    test_action: basic
    lease: -5m
";
    let dir = BrokerDir::new(settings);
    let out = dir.run(&["config", "validate"]);
    let text = crate::util::stderr(&out);
    assert_eq!(out.status.code(), Some(8), "{text}");
    for want in [
        "line 2: `TestProvider.lease`: `soon` is not a duration",
        "line 9: `nicks.forever.lease`: a lease of 400d is longer than the longest broker gives \
         (365d); give 365d or less",
        "line 12: `nicks.never.lease`: `-5m` is not a duration",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    for (args, want) in [
        (
            &["checkout", "--test_action", "basic"][..],
            "configuration error: `TestProvider.lease` (broker_settings.yaml line 2): `soon` is \
             not a duration",
        ),
        (
            &["checkout", "--nick", "forever"][..],
            "configuration error: `nicks.forever.lease` (broker_settings.yaml line 9): a lease of \
             400d is longer than the longest broker gives (365d)",
        ),
        (
            &["checkout", "--test_action", "basic", "--lease", "366d"][..],
            "a lease of 366d is longer than the longest broker gives (365d)",
        ),
    ] {
        let out = dir.run(args);
        let text = crate::util::stderr(&out);
        let code = if args.contains(&"--lease") { 2 } else { 8 };
        assert_eq!(out.status.code(), Some(code), "{args:?}: {text}");
        assert!(
            text.contains(want),
            "{args:?}: missing {want:?} in:\n{text}"
        );
    }
    assert!(records(&dir).is_empty(), "a refused lease makes nothing");
    // The command line's lease wins; the bad settings it overrides are warned of, not refused.
    for args in [
        &["checkout", "--test_action", "basic", "--lease", "1h"][..],
        &["checkout", "--nick", "never", "--lease", "1h"][..],
    ] {
        let before = broker_core::time::now_epoch();
        let out = dir.run(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            crate::util::stderr(&out)
        );
        let leased = records(&dir).last().unwrap()["_broker_expire_time"]
            .as_i64()
            .unwrap();
        let after = broker_core::time::now_epoch();
        assert!((before + 3600..=after + 3600).contains(&leased), "{leased}");
        assert!(
            crate::util::stderr(&out).contains("not used: this checkout's lease overrides it"),
            "{}",
            crate::util::stderr(&out)
        );
    }
    dir.ok(&["checkin", "--all"]);
}

/// A lease edited by hand into something that is no time: the inventory says it cannot be read, a
/// reap of ended leases leaves the host and says why, in one line or in its JSON, and exits 0.
#[test]
fn a_lease_that_cannot_be_read_is_shown_and_skipped_not_reaped() {
    let dir = BrokerDir::new(&format!("{SETTINGS}reap_on_start: false\n"));
    dir.ok(&["checkout", "--test_action", "basic", "--lease", "1h"]);
    let text = std::fs::read_to_string(dir.inventory_path()).unwrap();
    let edited = text
        .lines()
        .map(|l| match l.split_once("_broker_expire_time: ") {
            Some((indent, _)) => format!("{indent}_broker_expire_time: garbage\n"),
            None => format!("{l}\n"),
        })
        .collect::<String>();
    assert_ne!(edited, text);
    std::fs::write(dir.inventory_path(), edited).unwrap();
    let id = records(&dir)[0]["_broker_id"].as_str().unwrap().to_owned();
    let name = records(&dir)[0]["hostname"].as_str().unwrap().to_owned();
    let table = dir.ok(&["inventory"]);
    let row = table.lines().find(|l| l.contains(&name)).unwrap();
    assert!(row.trim_end().ends_with(" unreadable"), "{table}");
    let detail = "its lease `_broker_expire_time: garbage` is not seconds since the epoch, so it \
                  never ends; give it a new one (`broker extend HOST --lease 2h`) or check it in";
    for args in [&["--expired"][..], &[], &["--dry-run"]] {
        let mut full = vec!["reap"];
        full.extend_from_slice(args);
        assert_eq!(
            dir.ok(&full),
            format!("skipped {name}: {detail}\n"),
            "{args:?}"
        );
        assert_eq!(
            reaped(&dir, args),
            [(
                id.clone(),
                "lease-unreadable".to_owned(),
                "skipped".to_owned()
            )],
            "{args:?}"
        );
    }
    assert_eq!(records(&dir).len(), 1, "left in the inventory");
    assert_eq!(dir.provider_hosts().len(), 1, "left at the provider");
    // Nothing else is skipped: a reap of what gone processes left says nothing of it.
    assert!(reaped(&dir, &["--abandoned"]).is_empty());
    // A new lease mends it.
    dir.ok(&["extend", &id, "--lease", "2h"]);
    assert!(records(&dir)[0]["_broker_expire_time"].as_i64().is_some());
    assert!(reaped(&dir, &["--expired"]).is_empty());
    dir.ok(&["checkin", "--all"]);
}

#[test]
fn a_live_owners_hosts_are_never_touched() {
    let dir = BrokerDir::new(SETTINGS);
    dir.ok(&["checkout", "--test_action", "basic"]);
    let mut holder = Holder::start(&dir, TEST_HOSTS, 2, "kill", false);
    assert!(reaped(&dir, &[]).is_empty());
    assert_eq!(records(&dir).len(), 3);
    assert_eq!(dir.provider_hosts().len(), 3);
    holder.kill();
    holder.ended();
    let done = reaped(&dir, &[]);
    assert_eq!(done.len(), 2, "{done:?}");
    assert!(done.iter().all(|(_, why, _)| why == "owner-gone"));
    // The CLI's host is its user's: its process ended long ago, and it stays.
    assert_eq!(records(&dir).len(), 1);
    assert_eq!(dir.provider_hosts().len(), 1);
}

#[test]
fn two_reapers_at_once_give_each_host_back_once() {
    let dir = BrokerDir::new(SETTINGS);
    end_holder(
        Holder::start(&dir, TEST_HOSTS, 8, "kill", false),
        End::Killed,
    );
    let ids: Vec<String> = records(&dir)
        .iter()
        .map(|r| r["_broker_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 8);
    let reapers: Vec<ChildGuard> = (0..2)
        .map(|_| {
            ChildGuard::spawn(
                dir.command(&["reap", "-o", "json"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped()),
            )
        })
        .collect();
    let mut all: Vec<String> = Vec::new();
    for reaper in reapers {
        let out = reaper.wait_output(DEADLINE);
        assert_eq!(out.status.code(), Some(0), "{}", crate::util::stderr(&out));
        for (id, _, result) in rows(&String::from_utf8_lossy(&out.stdout)) {
            assert_eq!(result, "checked in");
            all.push(id);
        }
    }
    all.sort();
    let mut expected = ids;
    expected.sort();
    assert_eq!(all, expected, "each host once, by one reaper or the other");
    dir.assert_nothing_out();
}

#[test]
fn a_guard_that_leaves_its_host_behind_says_so_on_stderr_without_a_subscriber() {
    let dir = BrokerDir::new(SETTINGS);
    // Its check-in fails: the record stays, and the test binary, which has no tracing subscriber,
    // prints why.
    let stderr = Holder::start(
        &dir,
        "{test_action: basic, fail_checkin: all}",
        1,
        "drop",
        false,
    )
    .ended();
    let name = records(&dir)[0]["hostname"].as_str().unwrap().to_owned();
    let line = format!("broker: checking in {name} on drop failed: ");
    assert!(stderr.contains(&line), "{stderr}");
    assert!(
        stderr.contains(&format!("retry with `broker checkin {name}`")),
        "{stderr}"
    );
    // A check-in that outlasts `checkin_timeout` says so too, and the record stays `releasing`.
    let dir = BrokerDir::new(&format!("{SETTINGS}checkin_timeout: 1s\n"));
    let stderr = Holder::start(
        &dir,
        "{test_action: basic, hang: checkin}",
        1,
        "drop",
        false,
    )
    .ended();
    let left = records(&dir);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["_broker_state"], "releasing");
    let name = left[0]["hostname"].as_str().unwrap();
    assert!(
        stderr.contains(&format!(
            "broker: checking in {name} on drop did not finish within 1s; the record stays in the \
             inventory marked releasing: retry with `broker checkin {name}`"
        )),
        "{stderr}"
    );
    // A host kept for a panicking test says until when.
    let dir = BrokerDir::new(SETTINGS);
    let holder = Holder::start_with(
        &dir,
        TEST_HOSTS,
        1,
        "panic",
        false,
        &[("BROKER_KEEP_ON_FAILURE", "30m")],
    );
    let stderr = holder.ended();
    let kept = records(&dir);
    assert_eq!(kept.len(), 1);
    assert_eq!(
        kept[0]["_broker_guarded"],
        Json::Null,
        "kept: it goes by its lease"
    );
    let name = kept[0]["hostname"].as_str().unwrap();
    assert!(
        stderr.contains(&format!(
            "broker: the test panicked: keeping host {name} until "
        )),
        "{stderr}"
    );
}

/// The container provider's settings for one test's containers.
fn container_settings(prefix: &Containers) -> String {
    format!("Container:\n  name_prefix: {prefix}\n")
}

const CONTAINER_HOSTS: &str = "{container_host: broker-busybox}";

#[test]
fn container_hosts_of_a_test_process_ended_without_dropping_its_guards_are_given_back() {
    if !broker_test_support::podman() {
        return;
    }
    for (end, watch) in [
        (End::Killed, false),
        (End::Aborted, true),
        (End::Exited, false),
    ] {
        let containers = Containers::new(format!("it{}lease{}", std::process::id(), end.name()));
        let dir = BrokerDir::new(&container_settings(&containers));
        let holder = Holder::start(&dir, CONTAINER_HOSTS, 2, end.name(), watch);
        end_holder(holder, end);
        if watch {
            assert!(
                wait_for(Duration::from_secs(10), || containers.names().is_empty()),
                "{end:?}: still there after 10 s: {:?}",
                containers.names()
            );
        } else {
            assert_eq!(containers.names().len(), 2, "{end:?}");
            let done = reaped(&dir, &[]);
            assert_eq!(done.len(), 2, "{end:?}: {done:?}");
            assert!(containers.names().is_empty(), "{:?}", containers.names());
        }
        assert!(
            wait_for(Duration::from_secs(10), || records(&dir).is_empty()),
            "{end:?}"
        );
    }
}

/// Each way a test process can end without dropping its guards, for real containers: the next
/// broker start (here a CLI checkout) gives them back, and so does a watcher, within 10 s.
#[test]
fn container_hosts_of_an_ended_test_process_go_back_at_the_next_start_or_by_a_watcher() {
    if !broker_test_support::podman() {
        return;
    }
    for end in End::ALL {
        for watch in [false, true] {
            let way = if watch { "watch" } else { "start" };
            let containers =
                Containers::new(format!("it{}lease{}{way}", std::process::id(), end.name()));
            let dir = BrokerDir::new(&container_settings(&containers));
            end_holder(
                Holder::start(&dir, CONTAINER_HOSTS, 2, end.name(), watch),
                end,
            );
            if watch {
                given_back_within_10_s(&dir, end, || containers.names());
                continue;
            }
            assert_eq!(
                containers.names().len(),
                2,
                "{end:?}: nobody gave them back"
            );
            dir.ok(&["checkout", "--container-host", "broker-busybox"]);
            let left = records(&dir);
            assert_eq!(left.len(), 1, "{end:?}: {left:?}");
            assert_eq!(left[0]["_broker_guarded"], Json::Null, "the CLI's own host");
            assert_eq!(
                containers.names().len(),
                1,
                "{end:?}: {:?}",
                containers.names()
            );
            dir.ok(&["checkin", "--all"]);
            assert!(containers.names().is_empty(), "{:?}", containers.names());
        }
    }
}

/// The leased containers' label carries the lease, so a sync brings a lost record back with it.
#[test]
fn a_containers_lease_survives_its_record() {
    if !broker_test_support::podman() {
        return;
    }
    let containers = Containers::new(format!("it{}leaselabel", std::process::id()));
    let dir = BrokerDir::new(&container_settings(&containers));
    dir.ok(&[
        "checkout",
        "--container-host",
        "broker-busybox",
        "--lease",
        "2h",
    ]);
    let expire = records(&dir)[0]["_broker_expire_time"].as_i64().unwrap();
    std::fs::write(dir.inventory_path(), "[]\n").unwrap();
    dir.ok(&["inventory", "--sync", "Container"]);
    // The sync lists this inventory's containers only, never other tests'.
    let back = records(&dir);
    assert_eq!(back.len(), 1, "{back:?}");
    assert_eq!(back[0]["_broker_expire_time"].as_i64(), Some(expire));
    dir.ok(&["checkin", back[0]["_broker_id"].as_str().unwrap()]);
    assert!(containers.names().is_empty());
}

/// Checks out one container in `dir` (the CLI's checkout: held by its user) and returns its
/// record's identity.
fn container_checked_out(dir: &BrokerDir) -> String {
    dir.ok(&["checkout", "--container-host", "broker-busybox"]);
    let all = records(dir);
    all.last().unwrap()["_broker_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Forgets every record of `dir`, leaving the hosts behind: orphans.
fn forget_records(dir: &BrokerDir) {
    std::fs::write(dir.inventory_path(), "[]\n").unwrap();
}

/// A broker directory of its own containers named `it<pid><test>_…`, holding one orphan: a
/// container checked out whose record was then forgotten. `None` (the test returns) without an
/// engine when skipping is allowed.
fn with_an_orphan(test: &str) -> Option<(Containers, BrokerDir, String)> {
    if !broker_test_support::podman() {
        return None;
    }
    let containers = Containers::new(format!("it{}{test}", std::process::id()));
    let dir = BrokerDir::new(&container_settings(&containers));
    let id = container_checked_out(&dir);
    forget_records(&dir);
    assert_eq!(containers.names().len(), 1);
    Some((containers, dir, id))
}

/// A container broker labelled for this inventory and no record knows is checked in by
/// `reap --orphans` once older than the grace period, and left while younger.
#[test]
fn an_orphan_container_is_checked_in_once_older_than_the_grace() {
    let Some((containers, dir, id)) = with_an_orphan("orphan") else {
        return;
    };
    assert_eq!(
        reaped(&dir, &["--orphans", "Container", "--grace", "1h"]),
        [],
        "younger than the grace"
    );
    assert_eq!(containers.names().len(), 1);
    assert_eq!(
        reaped(&dir, &["--orphans", "Container", "--grace", "0s"]),
        [(id, "orphan".to_owned(), "checked in".to_owned())]
    );
    assert!(containers.names().is_empty(), "{:?}", containers.names());
    assert!(records(&dir).is_empty(), "{:?}", records(&dir));
}

/// `--dry-run` names the orphan and why, and removes nothing.
#[test]
fn an_orphan_reap_dry_run_removes_nothing() {
    let Some((containers, dir, id)) = with_an_orphan("orphandry") else {
        return;
    };
    let out = dir.ok(&[
        "reap",
        "--orphans",
        "Container",
        "--grace",
        "0s",
        "--dry-run",
        "-o",
        "json",
    ]);
    assert_eq!(
        rows(&out),
        [(id, "orphan".to_owned(), "would check in".to_owned())]
    );
    let shown: Vec<Json> = serde_json::from_str(&out).unwrap();
    assert!(
        shown[0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("no inventory record knows it; made "),
        "{shown:?}"
    );
    assert_eq!(containers.names().len(), 1);
    assert!(records(&dir).is_empty(), "{:?}", records(&dir));
}

/// Two broker directories on one engine, their containers named alike: a sync or an orphan reap
/// over one never lists, adopts or removes the other's containers — not even its orphans.
#[test]
fn another_inventorys_containers_are_never_listed_or_reaped() {
    if !broker_test_support::podman() {
        return;
    }
    let containers = Containers::new(format!("it{}orphanab", std::process::id()));
    let a = BrokerDir::new(&container_settings(&containers));
    let b = BrokerDir::new(&container_settings(&containers));
    let a_id = container_checked_out(&a);
    let b_kept = container_checked_out(&b);
    let b_orphan = container_checked_out(&b);
    // B forgets one of its two containers.
    let text = std::fs::read_to_string(b.inventory_path()).unwrap();
    let mut stored: Vec<serde_yaml::Value> = serde_yaml::from_str(&text).unwrap();
    stored.retain(|r| r["_broker_id"].as_str() == Some(b_kept.as_str()));
    assert_eq!(stored.len(), 1);
    std::fs::write(b.inventory_path(), serde_yaml::to_string(&stored).unwrap()).unwrap();
    forget_records(&a);

    a.ok(&["inventory", "--sync", "Container"]);
    let synced: Vec<String> = records(&a)
        .iter()
        .map(|r| r["_broker_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        synced,
        std::slice::from_ref(&a_id),
        "only A's own container"
    );
    forget_records(&a);
    assert_eq!(
        reaped(&a, &["--orphans", "Container", "--grace", "0s"]),
        [(a_id, "orphan".to_owned(), "checked in".to_owned())]
    );
    assert_eq!(containers.names().len(), 2, "B's containers stay");
    let b_now: Vec<String> = records(&b)
        .iter()
        .map(|r| r["_broker_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(b_now, std::slice::from_ref(&b_kept));
    assert_eq!(
        reaped(&b, &["--orphans", "Container", "--grace", "0s"]),
        [(b_orphan, "orphan".to_owned(), "checked in".to_owned())]
    );
    assert_eq!(containers.names().len(), 1, "B's recorded container stays");
    b.ok(&["checkin", &b_kept]);
    assert!(containers.names().is_empty(), "{:?}", containers.names());
}
