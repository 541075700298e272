//! What a team shares through one PostgreSQL database besides the inventory: handoff targets, seen
//! and changed from every machine, and several `broker serve` in front of it. Each "machine" is a
//! broker directory of its own whose settings name the one database (the server `BROKER_POSTGRES`
//! names; a database of the test's own) and one TestProvider state directory, as every machine
//! reaches the same provisioning system.

use serde_json::{Value, json};

use crate::serve::Setup;
use crate::util::BrokerDir;

/// One database and one provider; [`Team::machine`] makes a broker directory that uses both.
struct Team {
    settings: String,
    provider: tempfile::TempDir,
}

impl Team {
    /// `None` when skipping is allowed and there is no server.
    fn new() -> Option<Team> {
        let (url, _) = broker_test_support::postgres_database()?;
        let provider = tempfile::tempdir().expect("temp dir");
        let settings = format!(
            "inventory: {url}\nTestProvider:\n  instances:\n    local:\n      default: true\n      \
             state_dir: {}\nnicks:\n  N:\n    test_action: basic\n",
            provider.path().display()
        );
        Some(Team { settings, provider })
    }

    fn machine(&self) -> BrokerDir {
        BrokerDir::new(&self.settings)
    }

    /// The hosts the provider holds.
    fn provider_hosts(&self) -> Vec<String> {
        std::fs::read_dir(self.provider.path().join("hosts"))
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// A target added on one machine is listed, changed, used for a handoff and removed from another;
/// no machine writes a `targets.yaml`.
#[test]
fn targets_and_handoffs_on_one_database_are_shared_by_every_machine() {
    let Some(team) = Team::new() else { return };
    let (a, b) = (team.machine(), team.machine());
    a.ok(&["target", "add", "-p", "noop", "-n", "hook", "-d", "first"]);
    let on_a = json_of(&a.ok(&["target", "list", "-o", "json"]));
    let on_b = json_of(&b.ok(&["target", "list", "-o", "json"]));
    assert_eq!(on_b, on_a);
    assert_eq!(
        (
            on_b[0]["name"].clone(),
            on_b[0]["kind"].clone(),
            on_b[0]["revision"].clone()
        ),
        (json!("hook"), json!("noop"), json!(1)),
        "{on_b}"
    );
    let id = on_b[0]["id"].as_str().unwrap().to_owned();

    b.ok(&["target", "update", "HOOK", "-d", "second"]);
    let shown = json_of(&a.ok(&["target", "show", "hook", "-o", "json"]));
    assert_eq!(
        (shown["description"].clone(), shown["revision"].clone()),
        (json!("second"), json!(2)),
        "{shown}"
    );

    a.ok(&["checkout", "-n", "N"]);
    let run = json_of(&b.ok(&["handoff", "run", "0", "--target", "hook", "-o", "json"]));
    assert_eq!(run["_broker_handoff_state"], "handed_off", "{run}");
    let record = &a.inventory()[0];
    assert_eq!(record["_broker_handoff_target"], json!(id), "{record}");
    // Run again from the other machine, to the target the record names.
    let again = json_of(&a.ok(&["handoff", "run", "0", "-o", "json"]));
    assert_eq!(again["_broker_handoff_state"], "handed_off", "{again}");

    let used = a.run(&["target", "remove", "hook"]);
    assert_eq!(used.status.code(), Some(13));
    assert!(
        String::from_utf8_lossy(&used.stderr).contains("is still used by host"),
        "{used:?}"
    );
    b.ok(&["checkin", "--all"]);
    a.ok(&["target", "remove", "hook"]);
    assert_eq!(b.ok(&["target", "list", "-o", "json"]), "[]\n");
    assert!(team.provider_hosts().is_empty());
    for dir in [&a, &b] {
        assert!(!dir.path().join("targets.yaml").exists());
    }
}

/// `METHOD PATH` on `s`'s server with its write token (admin for targets).
fn call(s: &Setup, method: &str, path: &str, body: &Value) -> crate::serve::client::Answer {
    let token = if path.starts_with("/api/v1/targets") {
        &s.admin
    } else {
        &s.write
    };
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    s.server.call(method, path, token, &body)
}

/// Two `broker serve` on one database: a host checked out through one is listed by the other and
/// checked in through it; a target added through one is the other's; a host checked in through
/// both at once is gone and its record removed, and neither answer is a failure (one checked it
/// in, the other did too — check-in is idempotent — or found it gone).
#[test]
fn two_servers_on_one_database_serve_the_same_hosts_and_targets() {
    let Some(team) = Team::new() else { return };
    let (a, b) = (Setup::new(&team.settings), Setup::new(&team.settings));
    let checkout = |s: &Setup| {
        let op = call(
            s,
            "POST",
            "/api/v1/checkouts?wait=true",
            &json!({"nick": "N"}),
        )
        .json();
        assert_eq!(op["state"], "succeeded", "{op}");
        op["hosts"][0]["_broker_id"].as_str().unwrap().to_owned()
    };
    let ids = |s: &Setup| -> Vec<String> {
        let hosts = call(s, "GET", "/api/v1/hosts", &Value::Null).json();
        let mut ids: Vec<String> = hosts
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["_broker_id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };

    let first = checkout(&a);
    assert_eq!(ids(&b), std::slice::from_ref(&first));
    let shown = call(&b, "GET", &format!("/api/v1/hosts/{first}"), &Value::Null);
    assert_eq!(shown.status, 200, "{shown:?}");
    let path = format!("/api/v1/hosts/{first}");
    assert_eq!(call(&b, "DELETE", &path, &Value::Null).status, 204);
    assert_eq!(call(&a, "DELETE", &path, &Value::Null).status, 404);
    assert_eq!(ids(&a), Vec::<String>::new());
    assert!(team.provider_hosts().is_empty());

    let target = json!({"name": "hook", "kind": "noop", "description": "shared"});
    let created = call(&a, "POST", "/api/v1/targets", &target);
    assert_eq!(created.status, 201, "{created:?}");
    let seen = call(&b, "GET", "/api/v1/targets/hook", &Value::Null);
    assert_eq!((seen.status, seen.json()), (200, created.json()));
    let again = call(&b, "POST", "/api/v1/targets", &target);
    assert_eq!((again.status, again.json()), (200, created.json()));

    let second = checkout(&b);
    let path = format!("/api/v1/hosts/{second}");
    let answers: Vec<u16> = std::thread::scope(|scope| {
        let both: Vec<_> = [&a, &b]
            .into_iter()
            .map(|s| scope.spawn(|| call(s, "DELETE", &path, &Value::Null).status))
            .collect();
        both.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert!(
        answers.contains(&204) && answers.iter().all(|s| *s == 204 || *s == 404),
        "{answers:?}"
    );
    assert_eq!(ids(&a), Vec::<String>::new());
    assert_eq!(ids(&b), Vec::<String>::new());
    assert!(team.provider_hosts().is_empty());
}
