//! `broker serve` on loopback, driven over HTTP: tokens and roles, Razor's routes and the native API,
//! secrets kept out of answers and the log, limits on slow and large requests, and many clients at
//! once checking TestProvider hosts out and in.

pub mod client;
mod openapi;
mod restart;
pub mod tls;

use serde_json::{Value, json};

use crate::util::{BrokerDir, SETTINGS};
use client::{Answer, Served};

/// A server in a broker directory, and a token of each role.
pub struct Setup {
    pub dir: BrokerDir,
    pub server: Served,
    pub read: String,
    pub write: String,
    pub admin: String,
}

/// A token that no server knows.
const WRONG: &str = "broker_0000000000000000000000000000000000000000000000000000000000000000";

/// A Chef validation key: a secret that must never come back.
const SECRET_KEY: &str = "CHEF-VALIDATION-KEY-TOP-SECRET";

impl Setup {
    pub fn new(settings: &str) -> Setup {
        let dir = BrokerDir::new(settings);
        let token = |name: &str, role: &str| {
            dir.ok(&["serve", "token", "add", name, "--role", role])
                .trim()
                .to_owned()
        };
        let (read, write, admin) = (
            token("reader", "read"),
            token("writer", "write"),
            token("boss", "admin"),
        );
        let server = Served::start(&dir);
        Setup {
            dir,
            server,
            read,
            write,
            admin,
        }
    }

    fn get(&self, path: &str) -> Answer {
        self.server.call("GET", path, &self.read, "")
    }

    /// Sends `body` with the least role that may: admin for changing targets, write otherwise.
    fn send(&self, method: &str, path: &str, body: &Value) -> Answer {
        let changes_targets = path.starts_with("/api/v1/targets") || path.starts_with("/broker");
        let token = if changes_targets {
            &self.admin
        } else {
            &self.write
        };
        self.server.call(method, path, token, &body.to_string())
    }
}

/// `text` percent-encoded for a query string.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn chef(name: &str) -> Value {
    json!({
        "name": name,
        "kind": "chef",
        "config": {
            "chef_server_url": "https://chef.example.com/organizations/x",
            "chef_version": "18.2.7",
            "validation_key": SECRET_KEY,
        }
    })
}

#[test]
fn serve_refuses_a_non_loopback_address_unless_insecure_and_stops_on_sigterm() {
    let dir = BrokerDir::new(SETTINGS);
    let out = dir.run(&["serve", "--listen", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error: refusing to listen on 0.0.0.0:0: it is not a loopback address"),
        "{err}"
    );
    let served = Served::start_with(&dir, &["--listen", "0.0.0.0:0", "--insecure"]);
    assert!(served.addr.starts_with("0.0.0.0:"), "{}", served.addr);
    let (code, stderr) = served.stop();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("without TLS (--insecure)"), "{stderr}");
    assert!(stderr.contains("SIGTERM: stopping"), "{stderr}");
}

#[test]
fn serve_tokens_are_shown_once_stored_as_hashes_listed_and_removed() {
    let dir = BrokerDir::new(SETTINGS);
    let token = dir.ok(&["serve", "token", "add", "ci", "--role", "write"]);
    let token = token.trim();
    assert!(token.starts_with("broker_") && token.len() == 71, "{token}");
    let settings = std::fs::read_to_string(dir.path().join("broker_settings.yaml")).unwrap();
    assert!(!settings.contains(token), "{settings}");
    assert!(
        settings.contains("role: write") && settings.contains("sha256: "),
        "{settings}"
    );
    assert!(
        settings.contains("test_action: basic"),
        "the rest stays: {settings}"
    );
    dir.ok(&["serve", "token", "add", "ro", "--role", "read"]);
    let listed: Value =
        serde_json::from_str(&dir.ok(&["serve", "token", "list", "-o", "json"])).unwrap();
    assert_eq!(
        listed,
        json!([{"name": "ci", "role": "write"}, {"name": "ro", "role": "read"}])
    );
    let again = dir.run(&["serve", "token", "add", "ci", "--role", "admin"]);
    assert_eq!(again.status.code(), Some(13));

    // A running server takes a token added and refuses one removed from the next request on.
    let served = Served::start(&dir);
    assert_eq!(served.call("GET", "/api/v1/hosts", token, "").status, 200);
    dir.ok(&["serve", "token", "remove", "ci"]);
    assert_eq!(served.call("GET", "/api/v1/hosts", token, "").status, 401);
    let gone = dir.run(&["serve", "token", "remove", "ci"]);
    assert_eq!(gone.status.code(), Some(13));
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("no token named `ci`; the tokens are ro")
    );
    let late = dir.ok(&["serve", "token", "add", "late", "--role", "read"]);
    assert_eq!(
        served.call("GET", "/api/v1/hosts", late.trim(), "").status,
        200
    );
    assert_eq!(
        served
            .call("POST", "/api/v1/checkouts", late.trim(), "{}")
            .status,
        403
    );
    // A settings file broken by hand leaves the tokens read before in use.
    let path = dir.path().join("broker_settings.yaml");
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{good}serve: [\n")).unwrap();
    assert_eq!(
        served.call("GET", "/api/v1/hosts", late.trim(), "").status,
        200
    );
    // The warning reaches the log as the server's stderr is read, a moment after the answer.
    assert!(
        crate::util::wait_for(crate::util::DEADLINE, || served
            .stderr()
            .contains("cannot be read, the ones read before stay in use")),
        "{}",
        served.stderr()
    );
}

/// Every route, the role it needs, and a body it may take.
const ROUTES: &[(&str, &str, &str, &str)] = &[
    ("GET", "/api/v1/kinds", "read", ""),
    ("GET", "/api/v1/kinds/puppet", "read", ""),
    ("GET", "/api/v1/targets", "read", ""),
    ("GET", "/api/v1/targets/nope", "read", ""),
    ("GET", "/api/v1/hosts", "read", ""),
    ("GET", "/api/v1/hosts/nope", "read", ""),
    ("GET", "/api/v1/hosts/nope/handoff", "read", ""),
    ("GET", "/api/v1/providers", "read", ""),
    ("GET", "/api/v1/providers/TestProvider", "read", ""),
    ("GET", "/api/v1/operations", "read", ""),
    ("GET", "/api/v1/operations/nope", "read", ""),
    ("GET", "/broker", "read", ""),
    ("GET", "/broker/plugins", "read", ""),
    ("GET", "/broker/nope", "read", ""),
    ("DELETE", "/broker", "read", ""),
    ("POST", "/api/v1/targets", "admin", "{}"),
    ("PATCH", "/api/v1/targets/nope", "admin", "{}"),
    ("DELETE", "/api/v1/targets/nope", "admin", ""),
    ("DELETE", "/api/v1/hosts/nope", "write", ""),
    ("POST", "/api/v1/hosts/nope/extend", "write", "{}"),
    ("POST", "/api/v1/hosts/nope/handoff", "write", "{}"),
    ("POST", "/api/v1/checkouts", "write", "{}"),
    ("POST", "/broker", "admin", "{}"),
    ("PUT", "/broker/nope", "admin", "{}"),
    ("DELETE", "/broker/nope", "admin", ""),
    ("GET", "/api/v1/tokens", "admin", ""),
];

#[test]
fn serve_every_route_but_health_needs_a_valid_token_of_a_role_that_may() {
    let s = Setup::new(SETTINGS);
    let health = s.server.call("GET", "/health", "", "");
    assert_eq!(
        (health.status, health.json()),
        (200, json!({"status": "ok"}))
    );
    let unknown = s.server.call("GET", "/no/such/route", "", "");
    assert_eq!(
        unknown.status, 401,
        "a route's existence is not told without a token"
    );
    let roles = [("read", &s.read), ("write", &s.write), ("admin", &s.admin)];
    let rank = |role: &str| roles.iter().position(|(r, _)| *r == role).unwrap();
    for (method, path, needed, body) in ROUTES {
        for token in ["", WRONG] {
            let answer = s.server.call(method, path, token, body);
            assert_eq!(
                answer.status, 401,
                "{method} {path} with {token:?}: {answer:?}"
            );
            assert_eq!(answer.header("www-authenticate"), Some("Bearer"));
            assert_eq!(
                answer.header("content-type"),
                Some("application/problem+json")
            );
        }
        for (role, token) in roles {
            let answer = s.server.call(method, path, token, body);
            if rank(role) < rank(needed) {
                assert_eq!(answer.status, 403, "{method} {path} as {role}: {answer:?}");
                assert_eq!(
                    answer.json()["detail"],
                    format!(
                        "this needs a token of role {needed} or above; this one's role is {role}"
                    )
                );
            } else {
                assert!(
                    ![401, 403].contains(&answer.status),
                    "{method} {path} as {role}: {answer:?}"
                );
            }
        }
    }
    let tokens = s.server.call("GET", "/api/v1/tokens", &s.admin, "").json();
    assert_eq!(
        tokens,
        json!([
            {"name": "boss", "role": "admin"},
            {"name": "reader", "role": "read"},
            {"name": "writer", "role": "write"},
        ])
    );
    assert!(s.dir.inventory().is_empty(), "no route made a host");
}

#[test]
fn serve_razor_routes_take_json_hash_as_query_form_or_body_and_refuse_remove_all() {
    let s = Setup::new(SETTINGS);
    let hash = |name: &str| {
        json!({"plugin": "puppet", "name": name, "description": "d",
               "req_metadata_hash": {"server": "puppet.example.com"}})
        .to_string()
    };
    let by_query = s.server.call(
        "POST",
        &format!("/broker?json_hash={}", encode(&hash("q"))),
        &s.admin,
        "",
    );
    let by_form = s.server.call_typed(
        "POST",
        "/broker",
        &s.admin,
        "application/x-www-form-urlencoded",
        &format!("json_hash={}", encode(&hash("f"))),
    );
    let by_body = s.server.call("POST", "/broker", &s.admin, &hash("b"));
    let mut ids = Vec::new();
    for (answer, name) in [(&by_query, "q"), (&by_form, "f"), (&by_body, "b")] {
        assert_eq!(answer.status, 201, "{answer:?}");
        let doc = answer.json();
        assert_eq!(doc["result"], "Created");
        assert_eq!(doc["command"], "add_broker");
        assert_eq!(doc["http_err_code"], 201);
        let item = &doc["response"][0];
        assert_eq!(item["@name"], name);
        assert_eq!(item["@plugin"], "puppet");
        assert_eq!(item["@user_description"], "d");
        assert_eq!(item["@req_metadata_hash"]["server"], "puppet.example.com");
        ids.push(item["@uuid"].as_str().unwrap().to_owned());
    }
    let all = s.get("/broker").json();
    assert_eq!(all["command"], "get_all_brokers");
    let listed: Vec<&str> = all["response"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["@uuid"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ids);
    assert_eq!(
        s.get("/broker?name=F").json()["response"][0]["@uuid"],
        ids[1].as_str()
    );

    let one = s.get(&format!("/broker/{}", ids[0]));
    assert_eq!(
        (one.status, one.json()["response"][0]["@name"].clone()),
        (200, json!("q"))
    );
    let plugins = s.get("/broker/plugins").json();
    assert!(
        plugins["response"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["@plugin"] == "chef")
    );

    let put = |uuid: &str, hash: &Value| {
        s.server.call(
            "PUT",
            &format!("/broker/{uuid}?json_hash={}", encode(&hash.to_string())),
            &s.admin,
            "",
        )
    };
    let updated = put(
        &ids[0],
        &json!({"description": "new", "req_metadata_hash": {"server": "p2.example.com"}}),
    );
    assert_eq!(updated.status, 202, "{updated:?}");
    assert_eq!(updated.json()["result"], "Updated");
    assert_eq!(updated.json()["response"][0]["@user_description"], "new");
    assert_eq!(
        updated.json()["response"][0]["@req_metadata_hash"]["server"],
        "p2.example.com"
    );
    let replugged = put(&ids[0], &json!({"plugin": "chef", "name": "x"}));
    assert_eq!(replugged.status, 400);
    assert_eq!(
        replugged.json()["err_class"],
        "ProjectRazor::Error::Slice::InputError"
    );
    let nothing = put(&ids[0], &json!({}));
    assert_eq!(nothing.status, 400);
    assert_eq!(
        nothing.json()["result"],
        "Must provide one option from [:name, :description, :req_metadata_hash]."
    );
    let invalid = put(
        &ids[0],
        &json!({"req_metadata_hash": {"server": "---invalid-hostname---"}}),
    );
    assert_eq!(invalid.status, 400);
    assert_eq!(
        invalid.json()["err_class"],
        "ProjectRazor::Error::Slice::InvalidBrokerMetadata"
    );
    assert_eq!(
        put("t0000", &json!({"name": "y"})).json()["std_err_code"],
        116
    );

    for path in ["/broker", "/broker/all"] {
        let refused = s.server.call("DELETE", path, &s.admin, "");
        assert_eq!(refused.status, 405, "{path}: {refused:?}");
        assert_eq!(
            refused.json()["result"],
            "Cannot remove all Brokers via REST"
        );
        assert_eq!(refused.json()["std_err_code"], 128);
    }
    assert_eq!(
        s.get("/broker").json()["response"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    let removed = s
        .server
        .call("DELETE", &format!("/broker/{}", ids[2]), &s.admin, "");
    assert_eq!(
        (removed.status, removed.json()["result"].clone()),
        (202, json!("Removed"))
    );
    let missing = s.get(&format!("/broker/{}", ids[2]));
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.json()["result"],
        format!("Broker Target UUID: [{}]", ids[2])
    );
    let again = s
        .server
        .call("DELETE", &format!("/broker/{}", ids[2]), &s.admin, "");
    assert_eq!(
        (again.status, again.json()["std_err_code"].clone()),
        (400, json!(116))
    );
    let no_plugin = s
        .server
        .call("POST", "/broker", &s.admin, r#"{"name": "z"}"#);
    assert_eq!(
        no_plugin.json()["result"],
        "Must Provide: [The broker plugin to use.]"
    );
}

#[test]
fn serve_secrets_are_redacted_on_every_get_and_in_the_access_log() {
    let s = Setup::new(SETTINGS);
    let created = s.send("POST", "/api/v1/targets", &chef("chef-native"));
    assert_eq!(created.status, 201, "{created:?}");
    let razor_hash = json!({"plugin": "chef", "name": "chef-razor", "req_metadata_hash": {
        "chef_server_url": "https://chef.example.com/organizations/x",
        "chef_version": "18.2.7", "validation_key": SECRET_KEY}});
    let by_query = s.server.call(
        "POST",
        &format!("/broker?json_hash={}", encode(&razor_hash.to_string())),
        &s.admin,
        "",
    );
    assert_eq!(by_query.status, 201, "{by_query:?}");
    let patched = s.send(
        "PATCH",
        "/api/v1/targets/chef-native",
        &json!({"config": {"set": {"validation_key": format!("{SECRET_KEY}-2")}}}),
    );
    assert_eq!(patched.status, 200, "{patched:?}");
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let razor_id = by_query.json()["response"][0]["@uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut shown = vec![
        created.body.clone(),
        by_query.body.clone(),
        patched.body.clone(),
    ];
    for path in [
        "/api/v1/targets".to_owned(),
        format!("/api/v1/targets/{id}"),
        "/api/v1/targets/chef-razor".to_owned(),
        "/broker".to_owned(),
        format!("/broker/{id}"),
        format!("/broker/{razor_id}"),
    ] {
        let answer = s.get(&path);
        assert_eq!(answer.status, 200, "{path}: {answer:?}");
        shown.push(answer.body);
    }
    let print = |key: &str| format!("secret {}", broker_core::handoff::target::fingerprint(key));
    for body in &shown {
        assert!(!body.contains(SECRET_KEY), "a secret came back: {body}");
    }
    assert!(
        shown[4].contains(&print(&format!("{SECRET_KEY}-2"))),
        "{}",
        shown[4]
    );
    assert!(shown[8].contains(&print(SECRET_KEY)), "{}", shown[8]);
    let log = s.server.stderr();
    let file = std::fs::read_to_string(s.dir.path().join("logs/broker.log")).unwrap();
    assert!(
        file.contains("broker::serve::access: POST /broker 201"),
        "{file}"
    );
    for text in [&log, &file] {
        assert!(
            !text.contains(SECRET_KEY),
            "a secret reached the log: {text}"
        );
        assert!(
            !text.contains("json_hash"),
            "a query reached the log: {text}"
        );
        for token in [&s.read, &s.write, &s.admin] {
            assert!(
                !text.contains(token.as_str()),
                "a token reached the log: {text}"
            );
        }
    }
    assert!(log.contains("POST /broker 201"), "{log}");
    assert!(log.contains("token=boss"), "{log}");
}

#[test]
fn serve_targets_create_is_idempotent_conflicts_names_the_field_and_patch_sets_and_clears() {
    let s = Setup::new(SETTINGS);
    let puppet = json!({"name": "p", "kind": "puppet", "description": "prod",
                        "config": {"server": "puppet.example.com"}});
    let first = s.send("POST", "/api/v1/targets", &puppet);
    assert_eq!(first.status, 201, "{first:?}");
    let id = first.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(
        first.header("location"),
        Some(format!("/api/v1/targets/{id}").as_str())
    );
    let same = s.send("POST", "/api/v1/targets", &puppet);
    assert_eq!(
        (same.status, same.json()),
        (200, first.json()),
        "the same again is no change"
    );
    let mut different = puppet.clone();
    different["config"]["server"] = json!("other.example.com");
    let conflict = s.send("POST", "/api/v1/targets", &different);
    assert_eq!(conflict.status, 409, "{conflict:?}");
    assert!(
        conflict.json()["detail"]
            .as_str()
            .unwrap()
            .contains("already exists")
    );
    assert_eq!(s.get("/api/v1/targets").json().as_array().unwrap().len(), 1);

    let refused = |body: Value, status: u16, field: &str| {
        let answer = s.send("POST", "/api/v1/targets", &body);
        assert_eq!(answer.status, status, "{body}: {answer:?}");
        assert_eq!(
            answer.header("content-type"),
            Some("application/problem+json")
        );
        assert_eq!(answer.json()["errors"][0]["field"], field, "{answer:?}");
        answer.json()["errors"][0]["message"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let message = refused(
        json!({"name": "q", "kind": "puppet", "config": {"server": "---invalid-hostname---"}}),
        422,
        "config.server",
    );
    assert!(
        message.starts_with("invalid value `---invalid-hostname---` for key `server`"),
        "{message}"
    );
    refused(
        json!({"name": "q", "kind": "puppet", "config": {"srv": "x"}}),
        422,
        "config.srv",
    );
    refused(json!({"name": "q", "kind": "pupet"}), 422, "kind");
    refused(json!({"name": "a/b", "kind": "puppet"}), 422, "name");
    refused(
        json!({"name": "c", "kind": "chef", "config": {}}),
        422,
        "config.chef_server_url",
    );
    refused(
        json!({"name": "q", "kind": "puppet", "colour": 1}),
        400,
        "colour",
    );
    refused(json!({"kind": "puppet"}), 400, "name");
    refused(json!("text"), 400, "body");
    refused(
        json!({"name": "q", "kind": "puppet", "config": {"server": []}}),
        422,
        "config.server",
    );
    refused(json!({"name": 7, "kind": "puppet"}), 400, "name");

    let patched = s.send(
        "PATCH",
        &format!("/api/v1/targets/{id}"),
        &json!({"description": "staging", "config": {"set": {"broker_version": "7.23.0"}, "clear": ["server"]}}),
    );
    assert_eq!(patched.status, 200, "{patched:?}");
    let target = patched.json();
    assert_eq!(target["description"], "staging");
    assert_eq!(target["config"]["broker_version"], "7.23.0");
    assert_eq!(
        target["config"]["server"], "",
        "cleared back to its default"
    );
    assert_eq!(target["revision"], 2);
    assert_eq!(
        s.get("/api/v1/targets/P").json(),
        target,
        "found by name in any case"
    );
    let bad = s.send(
        "PATCH",
        "/api/v1/targets/p",
        &json!({"config": {"set": {"nope": "x"}}}),
    );
    assert_eq!(
        (bad.status, bad.json()["errors"][0]["field"].clone()),
        (422, json!("config.nope"))
    );
    s.send(
        "POST",
        "/api/v1/targets",
        &json!({"name": "other", "kind": "noop"}),
    );
    let taken = s.send("PATCH", "/api/v1/targets/p", &json!({"name": "OTHER"}));
    assert_eq!(
        (taken.status, taken.json()["errors"][0]["field"].clone()),
        (409, json!("name"))
    );
    assert_eq!(
        s.send("PATCH", "/api/v1/targets/zz", &json!({})).status,
        404
    );

    let kinds = s.get("/api/v1/kinds").json();
    assert!(
        kinds
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["name"] == "puppet")
    );
    assert_eq!(s.get("/api/v1/kinds/CHEF").json()["name"], "chef");
    assert_eq!(s.get("/api/v1/kinds/nope").status, 404);

    assert_eq!(
        s.send("DELETE", "/api/v1/targets/other", &json!(null))
            .status,
        204
    );
    assert_eq!(
        s.send("DELETE", "/api/v1/targets/other", &json!(null))
            .status,
        404
    );
    assert_eq!(s.get("/api/v1/targets/other").status, 404);
}

#[test]
fn serve_a_target_a_nick_or_host_names_is_not_removed() {
    let settings = format!("{SETTINGS}    handoff: hook\n");
    let s = Setup::new(&settings);
    let made = s.send(
        "POST",
        "/api/v1/targets",
        &json!({"name": "hook", "kind": "noop"}),
    );
    assert_eq!(made.status, 201, "{made:?}");
    let id = made.json()["id"].as_str().unwrap().to_owned();
    let native = s
        .server
        .call("DELETE", "/api/v1/targets/hook", &s.admin, "");
    assert_eq!(native.status, 409, "{native:?}");
    assert!(
        native.json()["detail"]
            .as_str()
            .unwrap()
            .starts_with("handoff target `hook` is still used by nick N"),
        "{native:?}"
    );
    let razor = s
        .server
        .call("DELETE", &format!("/broker/{id}"), &s.admin, "");
    assert_eq!(razor.status, 409, "{razor:?}");
    assert_eq!(
        razor.json()["err_class"],
        "ProjectRazor::Error::Slice::Conflict"
    );
    assert_eq!(s.get("/api/v1/targets/hook").status, 200, "still there");

    // A host handed to a target no nick names keeps it too, until the host is checked in.
    let spare = s.send(
        "POST",
        "/api/v1/targets",
        &json!({"name": "spare", "kind": "noop"}),
    );
    let spare_id = spare.json()["id"].as_str().unwrap().to_owned();
    let out = s.send(
        "POST",
        "/api/v1/checkouts?wait=true",
        &json!({"arguments": {"test_action": "basic"}, "handoff": "spare"}),
    );
    assert_eq!(out.json()["state"], "succeeded", "{out:?}");
    let host = out.json()["hosts"][0]["_broker_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        out.json()["hosts"][0]["_broker_handoff_target"],
        spare_id.as_str()
    );
    let held = s
        .server
        .call("DELETE", "/api/v1/targets/spare", &s.admin, "");
    assert_eq!(held.status, 409, "{held:?}");
    assert!(
        held.json()["detail"]
            .as_str()
            .unwrap()
            .contains("is still used by host"),
        "{held:?}"
    );
    let path = format!("/api/v1/hosts/{host}");
    assert_eq!(s.server.call("DELETE", &path, &s.write, "").status, 204);
    let freed = s
        .server
        .call("DELETE", "/api/v1/targets/spare", &s.admin, "");
    assert_eq!(freed.status, 204, "{freed:?}");
    s.dir.assert_nothing_out();
}

#[test]
fn serve_a_body_over_the_limit_is_refused_with_413() {
    let s = Setup::new(&format!("{SETTINGS}serve: {{body_limit: 1000}}\n"));
    let big = json!({"name": "p", "kind": "puppet", "description": "x".repeat(2000)}).to_string();
    let declared = s.server.call("POST", "/api/v1/targets", &s.admin, &big);
    assert_eq!(declared.status, 413, "{declared:?}");
    assert_eq!(
        declared.json()["detail"],
        "the request body is larger than 1000 bytes"
    );
    // Chunked, so no length is declared: cut off when the limit is passed.
    let chunk = format!("{:x}\r\n{big}\r\n0\r\n\r\n", big.len());
    let chunked = s.server.raw(
        format!(
            "POST /api/v1/targets HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: \
             Bearer {}\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}",
            s.admin
        )
        .as_bytes(),
    );
    assert_eq!(chunked.status, 413, "{chunked:?}");
    let razor = s.server.call("POST", "/broker", &s.admin, &big);
    assert_eq!(razor.status, 413, "{razor:?}");
    assert!(
        s.get("/api/v1/targets")
            .json()
            .as_array()
            .unwrap()
            .is_empty()
    );
    let small = json!({"name": "p", "kind": "puppet"}).to_string();
    assert_eq!(
        s.server
            .call("POST", "/api/v1/targets", &s.admin, &small)
            .status,
        201
    );
}

#[test]
fn serve_a_client_sending_its_headers_a_byte_a_second_is_cut_off() {
    use std::io::{Read, Write};
    let s = Setup::new(&format!("{SETTINGS}serve: {{header_timeout: 2s}}\n"));
    let request = format!(
        "GET /api/v1/hosts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        s.read
    );
    let mut stream = s.server.connect();
    stream.set_nonblocking(true).unwrap();
    let mut sent = 0;
    let mut answer = Vec::new();
    for byte in request.as_bytes() {
        if stream.write_all(&[*byte]).is_err() {
            break;
        }
        sent += 1;
        std::thread::sleep(std::time::Duration::from_secs(1));
        // Until the server gives up on the request, there is nothing to read.
        let mut buf = [0u8; 256];
        match stream.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                break;
            }
            Err(_) => break,
        }
    }
    assert!(
        sent < request.len(),
        "the whole request went through, a byte a second"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "the slow request was answered: {answer}"
    );
    // The server still serves others.
    assert_eq!(s.get("/api/v1/hosts").status, 200);
}

#[test]
fn serve_a_host_its_own_checkout_is_still_making_is_not_checked_in() {
    let s = Setup::new(SETTINGS);
    let started = s.send(
        "POST",
        "/api/v1/checkouts",
        &json!({"arguments": {"test_action": "basic", "delay": "5s"}}),
    );
    assert_eq!(started.status, 202, "{started:?}");
    let location = format!(
        "/api/v1/operations/{}",
        started.json()["id"].as_str().unwrap()
    );
    // The checkout's intent record is written before the host is made.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let pending = loop {
        let hosts = s.get("/api/v1/hosts").json();
        if let Some(host) = hosts.as_array().and_then(|h| h.first()) {
            break host.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no intent record appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(pending["_broker_state"], "pending", "{pending}");
    let path = format!("/api/v1/hosts/{}", pending["_broker_id"].as_str().unwrap());
    let refused = s.server.call("DELETE", &path, &s.write, "");
    assert_eq!(refused.status, 409, "{refused:?}");
    assert!(
        refused.json()["detail"]
            .as_str()
            .unwrap()
            .contains("is still being checked out"),
        "{refused:?}"
    );
    // The operation's caller gets a host that is there, and can check it in then.
    let done = s.get(&format!("{location}?wait=true")).json();
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["hosts"][0]["_broker_id"], pending["_broker_id"]);
    assert_eq!(s.get(&path).status, 200);
    assert_eq!(s.server.call("DELETE", &path, &s.write, "").status, 204);
    assert_eq!(s.get("/api/v1/hosts").json(), json!([]));
}

#[test]
fn serve_checkouts_run_as_operations_and_hosts_are_listed_filtered_extended_and_checked_in() {
    let s = Setup::new(SETTINGS);
    let started = s.send(
        "POST",
        "/api/v1/checkouts",
        &json!({"nick": "N", "count": 2}),
    );
    assert_eq!(started.status, 202, "{started:?}");
    let op = started.json();
    let location = format!("/api/v1/operations/{}", op["id"].as_str().unwrap());
    assert_eq!(started.header("location"), Some(location.as_str()));
    assert_eq!(op["kind"], "checkout");
    assert_eq!(op["request"], json!({"nick": "N", "count": 2}));
    let done = s.get(&format!("{location}?wait=true")).json();
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["id"], op["id"]);
    let ids: Vec<String> = done["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["_broker_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(done["hosts"][0].get("_broker_guarded").is_none(), "{done}");
    assert_eq!(s.get("/api/v1/operations").json(), json!([done]));

    let hosts = s.get("/api/v1/hosts").json();
    let listed: Vec<&str> = hosts
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["_broker_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 2);
    assert!(ids.iter().all(|id| listed.contains(&id.as_str())));
    let filter = encode(&format!("@inv._broker_id == \"{}\"", ids[1]));
    let filtered = s.get(&format!("/api/v1/hosts?filter={filter}")).json();
    assert_eq!(filtered.as_array().unwrap().len(), 1);
    assert_eq!(filtered[0]["_broker_id"], ids[1].as_str());
    let bad = s.get(&format!(
        "/api/v1/hosts?filter={}",
        encode("@inv.name = 'x'")
    ));
    assert_eq!(bad.status, 400, "{bad:?}");
    assert_eq!(bad.json()["errors"][0]["field"], "filter");
    let one = s.get(&format!("/api/v1/hosts/{}", ids[0]));
    assert_eq!(
        (one.status, one.json()["_broker_id"].clone()),
        (200, json!(ids[0]))
    );
    let hostname = one.json()["hostname"].as_str().unwrap().to_owned();
    assert_eq!(
        s.get(&format!("/api/v1/hosts/{hostname}")).json()["_broker_id"],
        ids[0].as_str()
    );

    let extended = s.send(
        "POST",
        &format!("/api/v1/hosts/{}/extend", ids[0]),
        &json!({"arguments": {"extend_duration": "2h"}}),
    );
    assert_eq!(extended.status, 200, "{extended:?}");
    assert_eq!(extended.json()["_broker_id"], ids[0].as_str());

    for id in &ids {
        let path = format!("/api/v1/hosts/{id}");
        assert_eq!(s.server.call("DELETE", &path, &s.write, "").status, 204);
        assert_eq!(s.server.call("DELETE", &path, &s.write, "").status, 404);
    }
    s.dir.assert_nothing_out();

    let unknown = s.send(
        "POST",
        "/api/v1/checkouts?wait=true",
        &json!({"nick": "nope"}),
    );
    assert_eq!(unknown.status, 200);
    let failed = unknown.json();
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(failed["error"]["status"], 422);
    assert!(
        failed["error"]["detail"].as_str().unwrap().contains("nope"),
        "{failed}"
    );
    let zero = s.send(
        "POST",
        "/api/v1/checkouts",
        &json!({"nick": "N", "count": 0}),
    );
    assert_eq!(
        (zero.status, zero.json()["errors"][0]["field"].clone()),
        (422, json!("count"))
    );
    let nothing = s.send("POST", "/api/v1/checkouts", &json!({}));
    assert_eq!(nothing.json()["errors"][0]["field"], "arguments");
    let all_or_nothing = s.send(
        "POST",
        "/api/v1/checkouts?wait=true",
        &json!({"arguments": {"test_action": "basic", "fail_checkout": "2"}, "count": 3}),
    );
    assert_eq!(
        all_or_nothing.json()["state"],
        "failed",
        "{all_or_nothing:?}"
    );
    assert_eq!(s.get("/api/v1/operations/nope").status, 404);
    s.dir.assert_nothing_out();
}

#[test]
fn serve_many_clients_check_hosts_out_and_in_at_once_losing_and_doubling_none() {
    const CLIENTS: usize = 200;
    let s = Setup::new(SETTINGS);
    let results: Vec<(String, u16)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..CLIENTS)
            .map(|_| {
                scope.spawn(|| {
                    let out = s.send(
                        "POST",
                        "/api/v1/checkouts?wait=true",
                        &json!({"arguments": {"test_action": "basic"}}),
                    );
                    let op = out.json();
                    assert_eq!(op["state"], "succeeded", "{op}");
                    let hosts = op["hosts"].as_array().unwrap();
                    assert_eq!(hosts.len(), 1, "{op}");
                    let id = hosts[0]["_broker_id"].as_str().unwrap().to_owned();
                    let shown = s.get(&format!("/api/v1/hosts/{id}"));
                    assert_eq!(shown.status, 200, "{shown:?}");
                    let checkin =
                        s.server
                            .call("DELETE", &format!("/api/v1/hosts/{id}"), &s.write, "");
                    (id, checkin.status)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let mut ids: Vec<&str> = results.iter().map(|(id, _)| id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), CLIENTS, "a host was handed to two clients");
    assert!(
        results.iter().all(|(_, status)| *status == 204),
        "{results:?}"
    );
    assert_eq!(
        s.get("/api/v1/operations").json().as_array().unwrap().len(),
        CLIENTS
    );
    s.dir.assert_nothing_out();
}

#[test]
fn serve_sigterm_mid_checkout_gives_back_what_it_made_and_leaves_nothing() {
    // The hung provider call is given up on after `cancel_timeout`; its host is found by identity.
    let dir = BrokerDir::new(&format!("cancel_timeout: 1s\n{SETTINGS}"));
    let write = dir.ok(&["serve", "token", "add", "w", "--role", "write"]);
    let served = Served::start(&dir);
    let started = served.call(
        "POST",
        "/api/v1/checkouts",
        write.trim(),
        &json!({"arguments": {"test_action": "basic", "hang": "created"}, "count": 2}).to_string(),
    );
    assert_eq!(started.status, 202, "{started:?}");
    assert!(
        crate::util::wait_for(crate::util::DEADLINE, || dir.provider_hosts().len() == 2),
        "the checkout never made its hosts"
    );
    let (code, stderr) = served.stop();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("SIGTERM: stopping"), "{stderr}");
    dir.assert_nothing_out();
    // Nothing is left for `recover` either.
    dir.ok(&["recover", "--all"]);
    dir.assert_nothing_out();
}

#[test]
fn serve_hosts_are_handed_off_and_providers_answer_discovery_queries() {
    let s = Setup::new(SETTINGS);
    let hook = s.send(
        "POST",
        "/api/v1/targets",
        &json!({"name": "hook", "kind": "noop"}),
    );
    let hook_id = hook.json()["id"].as_str().unwrap().to_owned();
    let out = s.send("POST", "/api/v1/checkouts?wait=true", &json!({"nick": "N"}));
    let id = out.json()["hosts"][0]["_broker_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let status = |id: &str| s.get(&format!("/api/v1/hosts/{id}/handoff"));
    assert_eq!((status(&id).status, status(&id).json()), (200, json!({})));
    let path = format!("/api/v1/hosts/{id}/handoff");
    let refused = |body: Value| {
        let answer = s.send("POST", &path, &body);
        assert_eq!(answer.status, 422, "{body}: {answer:?}");
        assert_eq!(answer.json()["errors"][0]["field"], "target", "{answer:?}");
        answer.json()["detail"].as_str().unwrap().to_owned()
    };
    refused(json!({}));
    let unknown = refused(json!({"target": "hok"}));
    assert!(
        unknown.contains("unknown handoff target `hok`"),
        "{unknown}"
    );

    let ran = s.send("POST", &path, &json!({"target": "hook"}));
    assert_eq!(ran.status, 200, "{ran:?}");
    let report = ran.json();
    assert_eq!(report["_broker_handoff_state"], "handed_off", "{report}");
    assert_eq!(report["_broker_handoff_target"], hook_id.as_str());
    let now = status(&id).json();
    assert_eq!(now["_broker_handoff_state"], "handed_off", "{now}");
    assert_eq!(now["_broker_handoff_target"], hook_id.as_str());
    assert_eq!(
        s.get(&format!("/api/v1/hosts/{id}")).json()["_broker_handoff_state"],
        "handed_off"
    );
    refused(json!({"retry": true}));
    let again = s.send("POST", &path, &json!({}));
    assert_eq!(
        again.json()["_broker_handoff_state"],
        "handed_off",
        "to the target it had"
    );
    assert_eq!(status("nope").status, 404);

    let providers = s.get("/api/v1/providers").json();
    let test = providers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "TestProvider")
        .unwrap()
        .clone();
    assert_eq!(test["instances"], json!(["local"]));
    assert_eq!(test["actions"], json!(["test_action"]));
    let names = s.get("/api/v1/providers/TestProvider").json();
    let hostname = s.get(&format!("/api/v1/hosts/{id}")).json()["name"].clone();
    assert_eq!(names, json!([hostname]));
    let most = s.get("/api/v1/providers/TestProvider?checkins");
    assert_eq!(
        (most.status, most.json()),
        (200, json!({"most_at_once": 0}))
    );
    let limited = s.get("/api/v1/providers/TestProvider?results_limit=0");
    assert_eq!(limited.json(), json!([]));
    let bad = s.get("/api/v1/providers/TestProvider?chekins");
    assert_eq!(
        (bad.status, bad.json()["errors"][0]["field"].clone()),
        (400, json!("query"))
    );
    assert!(
        bad.json()["detail"].as_str().unwrap().contains("checkins"),
        "{bad:?}"
    );
    assert_eq!(s.get("/api/v1/providers/Nope").status, 404);

    assert_eq!(
        s.server
            .call("DELETE", &format!("/api/v1/hosts/{id}"), &s.write, "")
            .status,
        204
    );
    s.dir.assert_nothing_out();
}

/// How many threads of process `pid` sleep in `nanosleep` (broker's lock waits poll with sleeps).
fn sleeping_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("wchan")).ok())
                .filter(|wchan| wchan.contains("nanosleep"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn serve_a_request_waiting_for_a_lock_another_process_holds_stalls_no_other_request() {
    use std::io::BufRead;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let s = Setup::new(&format!("inventory_lock_timeout: 60s\n{SETTINGS}"));
    // Another process holds the lock of targets.yaml.
    let lock = s.dir.path().join("targets.yaml.flock");
    let mut holder = crate::util::ChildGuard::spawn(
        std::process::Command::new("flock")
            .arg("-x")
            .arg(&lock)
            .args(["-c", "echo locked; exec sleep 600"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped()),
    );
    let mut line = String::new();
    std::io::BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "locked\n");
    let answered = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let writes: Vec<_> = (0..4)
            .map(|i| {
                let (s, answered) = (&s, &answered);
                scope.spawn(move || {
                    let body = json!({"name": format!("t{i}"), "kind": "noop"});
                    let status = s.send("POST", "/api/v1/targets", &body).status;
                    answered.fetch_add(1, Ordering::SeqCst);
                    status
                })
            })
            .collect();
        // The server runs on two threads: two writes waiting for the lock would hold both.
        let pid = s.server.child.id();
        assert!(
            crate::util::wait_for(crate::util::DEADLINE, || sleeping_threads(pid) >= 2),
            "the writes never waited for the lock"
        );
        for _ in 0..3 {
            assert_eq!(s.server.call("GET", "/health", "", "").status, 200);
            assert_eq!(s.get("/api/v1/kinds").status, 200);
            assert_eq!(
                answered.load(Ordering::SeqCst),
                0,
                "a write went through a held lock"
            );
        }
        drop(holder);
        let statuses: Vec<u16> = writes.into_iter().map(|w| w.join().unwrap()).collect();
        assert_eq!(statuses, vec![201; 4]);
    });
    assert_eq!(s.get("/api/v1/targets").json().as_array().unwrap().len(), 4);
}

#[test]
fn serve_a_body_that_stops_coming_is_answered_with_408() {
    use std::io::{Read, Write};
    let s = Setup::new(&format!("{SETTINGS}serve: {{body_timeout: 1s}}\n"));
    let mut stream = s.server.connect();
    let head = format!(
        "POST /api/v1/targets HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer \
         {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\": ",
        s.admin
    );
    stream.write_all(head.as_bytes()).unwrap();
    // The rest of the body never comes; the answer does.
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout"),
        "{answer}"
    );
    assert!(
        answer.contains("the request body did not arrive in time"),
        "{answer}"
    );
    assert!(
        s.get("/api/v1/targets")
            .json()
            .as_array()
            .unwrap()
            .is_empty()
    );
}
