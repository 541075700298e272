//! The OpenAPI document of `broker serve`, and schemathesis run against the live server with it:
//! no answer is a server error, and every answer has a status, a content type, headers and a body
//! that the document gives for its route.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use super::{Setup, chef};
use crate::util::{ChildGuard, SETTINGS};

/// How long schemathesis may take before the test fails (it takes well under a minute here).
const SCHEMATHESIS_DEADLINE: Duration = Duration::from_secs(300);

#[test]
fn serve_the_openapi_document_is_served_to_a_token_and_describes_every_route() {
    let s = Setup::new(SETTINGS);
    let refused = s.server.call("GET", "/api/v1/openapi.json", "", "");
    assert_eq!(refused.status, 401, "{}", refused.body);
    let answer = s.get("/api/v1/openapi.json");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let doc = answer.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut routes: Vec<String> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            routes.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    routes.sort();
    // Every route of the table the role test walks, in the document's path templates.
    for (method, path, _role, _body) in super::ROUTES {
        let template = path
            .replace("/nope/", "/{id}/")
            .replace("kinds/puppet", "kinds/{name}")
            .replace("providers/TestProvider", "providers/{name}");
        let template = match template.rsplit_once("/nope") {
            Some((head, "")) if head.starts_with("/broker") => format!("{head}/{{uuid}}"),
            Some((head, "")) => format!("{head}/{{id}}"),
            _ => template,
        };
        assert!(
            routes.contains(&format!("{method} {template}")),
            "{method} {template} is not in the document: {routes:?}"
        );
    }
    // A provider the settings do not configure is the caller's request refused, not a server error
    // (schemathesis found it answering 500).
    let unconfigured = s.get("/api/v1/providers/AnsibleTower");
    assert_eq!(unconfigured.status, 422, "{}", unconfigured.body);
    assert_eq!(
        unconfigured.header("content-type"),
        Some("application/problem+json")
    );
    assert!(
        unconfigured.json()["detail"]
            .as_str()
            .is_some_and(|d| d.contains("AnsibleTower needs `base_url`")),
        "{}",
        unconfigured.body
    );
}

/// The ids schemathesis may use for path parameters besides the ones it makes up, so that the
/// routes of a host, a target and an operation are reached past their 404: two hosts checked out
/// (one handed off), two targets (one with a secret) and their operations.
fn seed(s: &Setup) -> Vec<String> {
    let mut known = Vec::new();
    for target in [
        json!({"name": "seed-noop", "kind": "noop"}),
        chef("seed-chef"),
    ] {
        let made = s.send("POST", "/api/v1/targets", &target);
        assert_eq!(made.status, 201, "{}", made.body);
        known.push(made.json()["id"].as_str().unwrap().to_owned());
        known.push(target["name"].as_str().unwrap().to_owned());
    }
    let checkout = json!({"arguments": {"test_action": "basic"}, "count": 2});
    let done = s.send("POST", "/api/v1/checkouts?wait=true", &checkout);
    assert_eq!(done.status, 200, "{}", done.body);
    let operation = done.json();
    assert_eq!(operation["state"], "succeeded", "{operation}");
    known.push(operation["id"].as_str().unwrap().to_owned());
    for host in operation["hosts"].as_array().unwrap() {
        known.push(host["_broker_id"].as_str().unwrap().to_owned());
    }
    let handed = s.send(
        "POST",
        &format!("/api/v1/hosts/{}/handoff", known[known.len() - 1]),
        &json!({"target": "seed-noop"}),
    );
    assert_eq!(handed.status, 200, "{}", handed.body);
    known
}

/// schemathesis's configuration: `known` offered for the path parameters half of the time; the
/// stateful phase follows the links it infers from the schemas (from the `Location` headers it
/// infers wrong ones: `/api/v1/targets/{id}` to Razor's `/broker/{uuid}`).
fn config(known: &[String]) -> String {
    let values: Vec<String> = known.iter().map(|k| format!("{k:?}")).collect();
    format!(
        "[phases.stateful.inference]\nalgorithms = [\"dependency-analysis\"]\n\n\
         [dictionaries.known]\nvalues = [{}]\n\n[parameters]\n\
         \"path.id\" = {{ dictionary = \"known\", probability = 0.5 }}\n\
         \"path.uuid\" = {{ dictionary = \"known\", probability = 0.5 }}\n",
        values.join(", ")
    )
}

#[test]
fn serve_schemathesis_finds_no_server_error_and_no_answer_the_document_does_not_describe() {
    let Some(schemathesis) = broker_test_support::schemathesis() else {
        return;
    };
    let s = Setup::new(SETTINGS);
    let known = seed(&s);
    let work = tempfile::tempdir().unwrap();
    let spec = work.path().join("openapi.json");
    let doc = s.get("/api/v1/openapi.json");
    assert_eq!(doc.status, 200, "{}", doc.body);
    std::fs::write(&spec, &doc.body).unwrap();
    let config_file = work.path().join("schemathesis.toml");
    std::fs::write(&config_file, config(&known)).unwrap();
    let mut command = Command::new(&schemathesis);
    command
        .arg("--config-file")
        .arg(&config_file)
        .arg("run")
        .arg(&spec)
        .args(["--url", &format!("http://{}", s.server.addr)])
        .args(["--header", &format!("Authorization: Bearer {}", s.admin)])
        .args(schemathesis_args())
        .current_dir(work.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = ChildGuard::spawn(&mut command).wait_output(SCHEMATHESIS_DEADLINE);
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "schemathesis:\n{report}");
    // Its summary: `N generated, N passed` — every case passed, and there were cases.
    let cases = report
        .lines()
        .skip_while(|l| l.trim() != "Test cases:")
        .nth(1)
        .unwrap_or_default()
        .trim();
    let (generated, passed) = cases.split_once(" generated, ").unwrap_or_default();
    assert_eq!(format!("{generated} passed"), passed, "{report}");
    assert!(generated.parse::<u32>().is_ok_and(|n| n > 500), "{report}");
    assert!(
        report.contains("✅  Stateful"),
        "the stateful phase ran no scenario: {report}"
    );
    // The server is still up, and none of the requests left a host half made.
    assert_eq!(s.server.call("GET", "/health", "", "").status, 200);
    let hosts = s.get("/api/v1/hosts").json();
    let pending: Vec<&Value> = hosts
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["_broker_state"] == "pending")
        .collect();
    assert!(pending.is_empty(), "{pending:?}");
    // No secret came back in clear to schemathesis: it is only in the server's store.
    assert!(!report.contains(super::SECRET_KEY), "{report}");
}

/// What schemathesis checks, and how much: every answer must be no server error and match the
/// document (status, content type, headers, body); a fixed seed and a bounded number of examples
/// per route keep the run short and the same from run to run.
pub(crate) fn schemathesis_args() -> Vec<&'static str> {
    vec![
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,\
         response_headers_conformance,response_schema_conformance",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        "30",
        "--seed",
        "20261126",
        "--workers",
        "1",
        "--request-timeout",
        "60",
        "--generation-database",
        "none",
        "--no-color",
    ]
}
