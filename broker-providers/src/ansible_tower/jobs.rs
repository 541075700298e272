//! AWX jobs as data — workflows and job templates, a launched and a finished job, failure reasons —
//! and the pure rules over them: the extra vars a launch sends, the job a launch answer names, why a
//! job failed, the host fields its artifacts give. `Tower` (in `mod.rs`) runs the jobs with these.

use broker_core::value::{to_json, to_yaml};
use broker_core::{Error, Mapping, Result, Value};
use serde_json::Value as Json;

use super::NAME;
use super::api::{Api, json_text};

/// A workflow job template or a job template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Workflow,
    JobTemplate,
}

impl Kind {
    pub(crate) fn templates(self) -> &'static str {
        match self {
            Kind::Workflow => "workflow_job_templates/",
            Kind::JobTemplate => "job_templates/",
        }
    }

    pub(crate) fn jobs(self) -> &'static str {
        match self {
            Kind::Workflow => "workflow_jobs",
            Kind::JobTemplate => "jobs",
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Kind::Workflow => "workflow",
            Kind::JobTemplate => "job template",
        }
    }

    pub(crate) fn ui(self) -> &'static str {
        match self {
            Kind::Workflow => "workflow",
            Kind::JobTemplate => "playbook",
        }
    }
}

/// A job broker launched.
#[derive(Debug, Clone)]
pub(crate) struct Launched {
    pub kind: Kind,
    pub id: u64,
    pub template: String,
    pub inventory: Option<String>,
    pub api_url: String,
    pub ui_url: String,
}

impl Launched {
    pub(crate) fn path(&self) -> String {
        format!("{}/{}/", self.kind.jobs(), self.id)
    }
}

/// A finished job: what it was and its final state.
#[derive(Debug, Clone)]
pub(crate) struct Finished {
    pub launched: Launched,
    pub job: Json,
}

impl Finished {
    pub(crate) fn status(&self) -> &str {
        self.job
            .get("status")
            .and_then(Json::as_str)
            .unwrap_or("unknown")
    }

    pub(crate) fn succeeded(&self) -> bool {
        self.status() == "successful"
    }
}

/// One reason a job failed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reason {
    pub job: String,
    pub task: Option<String>,
    pub reason: String,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.task {
            Some(task) => write!(f, "{} ({task}): {}", self.job, self.reason.trim()),
            None => write!(f, "{}: {}", self.job, self.reason.trim()),
        }
    }
}

pub(crate) fn is_final(status: &str) -> bool {
    matches!(status, "successful" | "failed" | "error" | "canceled")
}

/// Python's truthiness for fact values, as the Python broker filters them: null, false, "", [] and {}
/// are not set.
pub(crate) fn is_set(v: &Json) -> bool {
    !matches!(v, Json::Null | Json::Bool(false))
        && !v.as_str().is_some_and(str::is_empty)
        && !v.as_array().is_some_and(Vec::is_empty)
        && !v.as_object().is_some_and(serde_json::Map::is_empty)
}

/// The entries of a JSON object whose values are set, as a YAML mapping (empty for anything else).
pub(crate) fn set_entries(v: Option<&Json>) -> Mapping {
    v.and_then(Json::as_object)
        .map(|m| {
            m.iter()
                .filter(|(_, v)| is_set(v))
                .map(|(k, v)| (Value::from(k.as_str()), to_yaml(v)))
                .collect()
        })
        .unwrap_or_default()
}

/// An AWX object's `related` link `name`, else `fallback()`.
pub(crate) fn related(obj: &Json, name: &str, fallback: impl FnOnce() -> String) -> String {
    obj.get("related")
        .and_then(|r| r.get(name))
        .and_then(Json::as_str)
        .map(str::to_owned)
        .unwrap_or_else(fallback)
}

/// A string that parses as a JSON list or object becomes that structure; everything else stays.
pub(crate) fn parse_string_value(value: Value) -> Value {
    if let Value::String(s) = &value {
        let t = s.trim_start();
        if (t.starts_with('[') || t.starts_with('{'))
            && let Ok(parsed @ (Json::Array(_) | Json::Object(_))) = serde_json::from_str::<Json>(s)
        {
            return to_yaml(&parsed);
        }
    }
    value
}

/// A template's own `extra_vars`: JSON, else YAML, else nothing (an empty text is no vars).
pub(crate) fn template_vars(text: &str) -> Mapping {
    if text.trim().is_empty() {
        return Mapping::new();
    }
    if let Ok(Json::Object(map)) = serde_json::from_str::<Json>(text) {
        return match to_yaml(&Json::Object(map)) {
            Value::Mapping(m) => m,
            _ => Mapping::new(),
        };
    }
    match serde_yaml::from_str::<Value>(text) {
        Ok(Value::Mapping(m)) => m,
        _ => {
            tracing::warn!("a template's extra_vars are neither JSON nor YAML; ignoring them");
            Mapping::new()
        }
    }
}

/// Why one job (not a workflow) failed, errored or was canceled; nothing for others. An errored job's
/// traceback (else its explanation); else the messages of its failed events, each with its task; else
/// its explanation, else the tail of its output.
pub(crate) async fn job_failure_reasons(api: &Api, job: &Json) -> Vec<Reason> {
    let status = job.get("status").and_then(Json::as_str).unwrap_or("");
    if job.get("type").and_then(Json::as_str) == Some("workflow_job")
        || !matches!(status, "failed" | "error" | "canceled")
    {
        return Vec::new();
    }
    let name = job.get("name").map(json_text).unwrap_or_default();
    let traceback = job
        .get("result_traceback")
        .map(json_text)
        .unwrap_or_default();
    let explanation = job
        .get("job_explanation")
        .map(json_text)
        .unwrap_or_default();
    if status == "error" {
        let reason = if traceback.trim().is_empty() {
            explanation
        } else {
            traceback
        };
        return vec![Reason {
            job: name,
            task: None,
            reason,
        }];
    }
    let from_events = failed_event_reasons(api, job, &name).await;
    if !from_events.is_empty() {
        return from_events;
    }
    let stdout = job.get("result_stdout").map(json_text).unwrap_or_default();
    let tail: Vec<&str> = stdout.lines().rev().take(15).collect();
    let text = if !explanation.trim().is_empty() {
        explanation
    } else {
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    };
    if text.trim().is_empty() {
        return Vec::new();
    }
    vec![Reason {
        job: name,
        task: None,
        reason: text,
    }]
}

/// The messages of a job's failed events, each with its task (else play); none when they cannot be
/// read.
pub(crate) async fn failed_event_reasons(api: &Api, job: &Json, name: &str) -> Vec<Reason> {
    let Some(events) = job.pointer("/related/job_events").and_then(Json::as_str) else {
        return Vec::new();
    };
    let Ok(events) = api
        .get_all(events, &[("failed", "true".to_owned())], None)
        .await
    else {
        return Vec::new();
    };
    let mut reasons = Vec::new();
    for ev in events
        .iter()
        .filter(|e| e.get("failed") == Some(&Json::Bool(true)))
    {
        if let Some(msg) = ev.pointer("/event_data/res/msg").map(json_text)
            && !msg.is_empty()
        {
            let task = ev
                .pointer("/event_data/task")
                .or_else(|| ev.pointer("/event_data/play"))
                .map(json_text)
                .filter(|t| !t.is_empty());
            reasons.push(Reason {
                job: name.to_owned(),
                task,
                reason: msg,
            });
        }
    }
    reasons
}

/// The launch's `extra_vars`: every argument (JSON-looking strings as structures), and under
/// `_broker_extra_vars` those the template does not define itself.
pub(crate) fn extra_vars(template: &Json, args: Mapping) -> Json {
    let mut vars = Mapping::new();
    for (k, v) in args {
        vars.insert(k, parse_string_value(v));
    }
    let own = template_vars(
        template
            .get("extra_vars")
            .and_then(Json::as_str)
            .unwrap_or(""),
    );
    let custom: Mapping = vars
        .iter()
        .filter(|(k, _)| !own.contains_key(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    vars.insert("_broker_extra_vars".into(), Value::Mapping(custom));
    Json::String(to_json(&Value::Mapping(vars)).to_string())
}

/// The job AWX's answer to a launch names, with its addresses.
pub(crate) fn launched_job(
    api: &Api,
    kind: Kind,
    name: &str,
    inventory: Option<String>,
    answer: &Json,
) -> Result<Launched> {
    let id = answer
        .get(match kind {
            Kind::Workflow => "workflow_job",
            Kind::JobTemplate => "job",
        })
        .or_else(|| answer.get("id"))
        .and_then(Json::as_u64)
        .ok_or_else(|| {
            Error::provider(
                NAME,
                format!(
                    "AnsibleTower launched {} `{name}` but named no job id",
                    kind.label()
                ),
            )
        })?;
    Ok(Launched {
        kind,
        id,
        template: name.to_owned(),
        inventory,
        api_url: api.url(&api.path(&format!("{}/{id}/", kind.jobs()))),
        ui_url: api.ui_url(kind.ui(), id),
    })
}

/// Deep merge of JSON objects, `over` winning.
pub(crate) fn merge_json(base: &mut Json, over: &Json) {
    match (base, over) {
        (Json::Object(b), Json::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        merge_json(existing, v)
                    }
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// The inventory fields of a host made by a workflow, from its artifacts: hostname from the first
/// fact ending in `fqdn`, name from `name` or `vm_provisioned`, type from a fact ending in
/// `host_type`, `_broker_args` from the artifacts (empty values dropped) and every non-empty fact.
pub(crate) fn host_fields(
    artifacts: &Json,
    launched: &Launched,
    args: &Mapping,
) -> Result<Mapping> {
    let Some(facts) = artifacts.get("_broker_facts").and_then(Json::as_object) else {
        let keys: Vec<&str> = artifacts
            .as_object()
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default();
        return Err(Error::provider(
            NAME,
            format!(
                "{} `{}` (job {}) succeeded but its artifacts have no `_broker_facts` (they have: {}), \
                 so broker cannot tell which host it made; the workflow must `set_stats` `_broker_facts` \
                 and `_broker_args`. See {}",
                launched.kind.label(),
                launched.template,
                launched.id,
                if keys.is_empty() {
                    "none".to_owned()
                } else {
                    keys.join(", ")
                },
                launched.ui_url
            ),
        ));
    };
    let first = |v: &Json| match v {
        Json::Array(items) => items.first().map(json_text).unwrap_or_default(),
        other => json_text(other),
    };
    let mut hostname = None;
    let mut name = None;
    let mut host_type = None;
    for (key, value) in facts {
        if hostname.is_none() && key.ends_with("fqdn") {
            hostname = Some(first(value)).filter(|s| !s.is_empty());
        }
        if name.is_none() && (key == "name" || key == "vm_provisioned") {
            name = Some(first(value)).filter(|s| !s.is_empty());
        }
        if key.ends_with("host_type") {
            host_type = Some(json_text(value)).filter(|s| !s.is_empty());
        }
    }
    if hostname.is_none() {
        tracing::warn!(
            job = launched.id,
            "the job's `_broker_facts` name no fqdn; the host has no hostname"
        );
    }
    let mut fields = set_entries(artifacts.get("_broker_facts"));
    let broker_args = match artifacts.get("_broker_args").filter(|a| a.is_object()) {
        Some(a) => Value::Mapping(set_entries(Some(a))),
        None => {
            tracing::warn!(
                job = launched.id,
                "the job's artifacts have no `_broker_args`; recording the arguments broker sent"
            );
            Value::Mapping(args.clone())
        }
    };
    fields.insert("_broker_args".into(), broker_args);
    fields.insert(
        "hostname".into(),
        hostname.map(Value::from).unwrap_or(Value::Null),
    );
    fields.insert("name".into(), name.map(Value::from).unwrap_or(Value::Null));
    fields.insert(
        "type".into(),
        Value::from(host_type.unwrap_or_else(|| "host".into())),
    );
    if let Some(inv) = &launched.inventory
        && !fields.contains_key("tower_inventory")
    {
        fields.insert("tower_inventory".into(), Value::from(inv.as_str()));
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_looking_strings_become_structures() {
        assert_eq!(
            parse_string_value(Value::from("[1, 2]")),
            serde_yaml::from_str::<Value>("[1, 2]").unwrap()
        );
        assert_eq!(
            parse_string_value(Value::from("{\"a\": {\"b\": 1}}")),
            serde_yaml::from_str::<Value>("a: {b: 1}").unwrap()
        );
        assert_eq!(parse_string_value(Value::from("9.4")), Value::from("9.4"));
        assert_eq!(
            parse_string_value(Value::from("[not json")),
            Value::from("[not json")
        );
        assert_eq!(
            parse_string_value(Value::from("\"x\"")),
            Value::from("\"x\"")
        );
    }

    #[test]
    fn template_vars_read_json_yaml_and_nothing() {
        assert!(template_vars("").is_empty());
        assert!(template_vars("  ").is_empty());
        assert!(template_vars("{\"target_vm\": \"\"}").contains_key("target_vm"));
        assert!(template_vars("source_vm: ''\nx: 1\n").contains_key("x"));
        assert!(template_vars(": : not yaml [").is_empty());
    }

    fn launched() -> Launched {
        Launched {
            kind: Kind::Workflow,
            id: 7,
            template: "deploy-rhel".into(),
            inventory: Some("lab".into()),
            api_url: "http://x/api/v2/workflow_jobs/7/".into(),
            ui_url: "http://x/#/jobs/workflow/7/output".into(),
        }
    }

    #[test]
    fn host_fields_follow_upstream_rules() {
        let artifacts = json!({
            "_broker_facts": {"vm_fqdn": ["a.example.com", "b"], "vm_provisioned": ["vm-a"],
                              "my_host_type": "satellite", "empty": "", "os": "RHEL"},
            "_broker_args": {"workflow": "deploy-rhel", "blank": "", "n": 0, "v": "9.4"},
        });
        let f = host_fields(&artifacts, &launched(), &Mapping::new()).unwrap();
        assert_eq!(f.get("hostname"), Some(&Value::from("a.example.com")));
        assert_eq!(f.get("name"), Some(&Value::from("vm-a")));
        assert_eq!(f.get("type"), Some(&Value::from("satellite")));
        assert_eq!(f.get("tower_inventory"), Some(&Value::from("lab")));
        assert!(!f.contains_key("empty"));
        let args = f.get("_broker_args").and_then(Value::as_mapping).unwrap();
        assert!(args.contains_key("workflow") && args.contains_key("v") && args.contains_key("n"));
        assert!(!args.contains_key("blank"));
    }

    #[test]
    fn missing_facts_is_a_clear_provider_error() {
        let e = host_fields(&json!({"stage": "x"}), &launched(), &Mapping::new()).unwrap_err();
        assert_eq!(e.exit_code(), 7);
        let text = e.to_string();
        assert!(
            text.contains("_broker_facts") && text.contains("stage") && text.contains("job 7"),
            "{text}"
        );
    }

    #[test]
    fn merge_is_deep_and_newer_wins() {
        let mut a = json!({"x": {"a": 1, "b": 1}, "y": 1});
        merge_json(&mut a, &json!({"x": {"b": 2}, "z": 3}));
        assert_eq!(a, json!({"x": {"a": 1, "b": 2}, "y": 1, "z": 3}));
    }
}
