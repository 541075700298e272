//! `broker serve` stopped mid-checkouts — by SIGTERM, or killed — then started again on the same
//! broker directory: no host lost, none left behind, and each operation still readable with how it
//! ended.

use serde_json::{Value, json};

use super::client::Served;
use crate::util::{BrokerDir, DEADLINE, SETTINGS, wait_for};

/// A server with a write token, some checkouts finished and some in flight.
struct Busy {
    dir: BrokerDir,
    served: Served,
    token: String,
    /// The finished operations (each with one host).
    done: Vec<Value>,
    /// The ids of the operations in flight.
    flying: Vec<String>,
}

impl Busy {
    /// `done` checkouts that finished, then `slow` in flight whose hosts do not exist yet (the
    /// provider is slow to answer) and `hung` whose hosts exist (the provider hangs after making
    /// them); returns once the inventory holds a record for each.
    fn start(done: usize, slow: usize, hung: usize) -> Busy {
        let dir = BrokerDir::new(&format!("cancel_timeout: 2s\n{SETTINGS}"));
        let token = dir
            .ok(&["serve", "token", "add", "w", "--role", "write"])
            .trim()
            .to_owned();
        let served = Served::start(&dir);
        let post = |args: Value, wait: &str| {
            let answer = served.call(
                "POST",
                &format!("/api/v1/checkouts{wait}"),
                &token,
                &json!({ "arguments": args }).to_string(),
            );
            answer.json()
        };
        let done: Vec<Value> = (0..done)
            .map(|_| post(json!({"test_action": "basic"}), "?wait=true"))
            .collect();
        assert!(done.iter().all(|op| op["state"] == "succeeded"), "{done:?}");
        let mut flying = Vec::new();
        for n in 0..slow + hung {
            let fault = if n < slow {
                json!({"test_action": "basic", "delay": "10m"})
            } else {
                json!({"test_action": "basic", "hang": "created"})
            };
            let op = post(fault, "");
            assert_eq!(op["state"], "running", "{op}");
            flying.push(op["id"].as_str().unwrap().to_owned());
        }
        let all = done.len() + slow + hung;
        assert!(
            wait_for(DEADLINE, || dir.inventory().len() == all
                && dir.provider_hosts().len() == done.len() + hung),
            "the checkouts never got under way: {:?}",
            dir.inventory()
        );
        Busy {
            dir,
            served,
            token,
            done,
            flying,
        }
    }

    /// The ids and names of the hosts of the finished checkouts, sorted by name.
    fn done_hosts(&self) -> Vec<(String, String)> {
        let mut hosts: Vec<(String, String)> = self
            .done
            .iter()
            .map(|op| {
                let host = &op["hosts"][0];
                (
                    host["name"].as_str().unwrap().to_owned(),
                    host["_broker_id"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        hosts.sort();
        hosts
    }
}

/// Asserts that the inventory holds exactly `hosts` (name, id), all ready, and the provider exactly
/// their hosts: none lost, none left behind.
fn assert_only(dir: &BrokerDir, hosts: &[(String, String)]) {
    let mut records: Vec<(String, String, String)> = dir
        .inventory()
        .iter()
        .map(|r| {
            let field = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
            (field("name"), field("_broker_id"), field("_broker_state"))
        })
        .collect();
    records.sort();
    let expected: Vec<(String, String, String)> = hosts
        .iter()
        .map(|(name, id)| (name.clone(), id.clone(), "ready".to_owned()))
        .collect();
    assert_eq!(records, expected);
    let names: Vec<String> = hosts.iter().map(|(name, _)| name.clone()).collect();
    assert_eq!(dir.provider_hosts(), names);
}

/// After a restart: the finished operations as they ended, those in flight `interrupted`, in the
/// order they started; then the hosts out are checked in through the new server.
fn assert_operations_survived(busy: &Busy, again: &Served) {
    for op in &busy.done {
        let path = format!("/api/v1/operations/{}", op["id"].as_str().unwrap());
        let read = again.call("GET", &path, &busy.token, "");
        assert_eq!(read.status, 200, "{read:?}");
        assert_eq!(&read.json(), op);
    }
    for id in &busy.flying {
        let path = format!("/api/v1/operations/{id}");
        let read = again
            .call("GET", &format!("{path}?wait=true"), &busy.token, "")
            .json();
        assert_eq!(read["state"], "interrupted", "{read}");
        assert_eq!(read["hosts"], json!([]), "{read}");
        assert_eq!(read["error"]["status"], 503, "{read}");
        assert!(read["finished"].is_i64(), "{read}");
    }
    let listed: Vec<String> = again
        .call("GET", "/api/v1/operations", &busy.token, "")
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|op| op["id"].as_str().unwrap().to_owned())
        .collect();
    let started: Vec<String> = busy
        .done
        .iter()
        .map(|op| op["id"].as_str().unwrap().to_owned())
        .chain(busy.flying.iter().cloned())
        .collect();
    assert_eq!(listed, started);
    for (_, id) in busy.done_hosts() {
        let path = format!("/api/v1/hosts/{id}");
        assert_eq!(again.call("DELETE", &path, &busy.token, "").status, 204);
    }
    busy.dir.assert_nothing_out();
}

#[test]
fn serve_sigterm_mid_checkouts_then_restart_and_recover_loses_nothing_and_leaves_nothing() {
    let Busy {
        dir,
        served,
        token,
        done,
        flying,
    } = Busy::start(3, 5, 5);
    let (code, stderr) = served.stop();
    assert_eq!(code, Some(0), "{stderr}");
    let busy = Busy {
        served: Served::start(&dir),
        dir,
        token,
        done,
        flying,
    };
    // The stop gave back what the checkouts in flight had made; the finished ones' hosts stay out.
    assert_only(&busy.dir, &busy.done_hosts());
    busy.dir.ok(&["recover"]);
    assert_only(&busy.dir, &busy.done_hosts());
    let interrupted = busy
        .served
        .call(
            "GET",
            &format!("/api/v1/operations/{}", busy.flying[0]),
            &busy.token,
            "",
        )
        .json();
    assert!(
        interrupted["error"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("interrupted"),
        "{interrupted}"
    );
    assert_operations_survived(&busy, &busy.served);
}

#[test]
fn serve_killed_mid_checkouts_leaves_them_pending_for_recover_and_restarts_with_them_interrupted() {
    let Busy {
        dir,
        served,
        token,
        done,
        flying,
    } = Busy::start(2, 4, 4);
    let mut child = served.child;
    crate::util::signal(&child, "KILL");
    child.wait(DEADLINE);
    // Nothing is lost: each checkout in flight is still recorded, `pending`.
    let pending = dir
        .inventory()
        .iter()
        .filter(|r| r["_broker_state"] == "pending")
        .count();
    assert_eq!(pending, flying.len());
    let busy = Busy {
        served: Served::start(&dir),
        dir,
        token,
        done,
        flying,
    };
    let interrupted = busy
        .served
        .call(
            "GET",
            &format!("/api/v1/operations/{}", busy.flying[0]),
            &busy.token,
            "",
        )
        .json();
    assert!(
        interrupted["error"]["detail"]
            .as_str()
            .unwrap()
            .contains("`pending` in the inventory for `broker recover`"),
        "{interrupted}"
    );
    // `broker recover` checks in the hosts the killed server had made and drops the records of
    // those it had not.
    busy.dir.ok(&["recover"]);
    assert_only(&busy.dir, &busy.done_hosts());
    assert_operations_survived(&busy, &busy.served);
}
