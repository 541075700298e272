//! Launching workflows and job templates, waiting for them, explaining failures, and reading what
//! they made (artifacts, dangling VMs).

use std::time::{Duration, Instant};

use broker_core::{Error, Mapping, Result, Value};
use serde_json::{Value as Json, json};

use super::NAME;
use super::api::{Api, ApiError, ApiResult, json_text};

/// A workflow job template or a job template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Workflow,
    JobTemplate,
}

impl Kind {
    fn templates(self) -> &'static str {
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

    fn ui(self) -> &'static str {
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

fn is_final(status: &str) -> bool {
    matches!(status, "successful" | "failed" | "error" | "canceled")
}

/// Converts a YAML mapping to JSON, for payloads.
pub(crate) fn to_json(value: &Value) -> Json {
    serde_json::to_value(value).unwrap_or(Json::Null)
}

/// Converts JSON to YAML, for records and results.
pub(crate) fn to_yaml(value: &Json) -> Value {
    serde_yaml::to_value(value).unwrap_or(Value::Null)
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

impl super::Tower {
    /// Finds a template by exact name; when there is none, the error lists close names.
    pub(crate) async fn template(&self, api: &Api, kind: Kind, name: &str) -> Result<Json> {
        let found = api
            .get(kind.templates(), &[("name", name.to_owned())])
            .await
            .map_err(|e| e.into_error(&format!("looking up {} `{name}`", kind.label())))?;
        if let Some(t) = found
            .get("results")
            .and_then(Json::as_array)
            .and_then(|r| r.last())
        {
            return Ok(t.clone());
        }
        let close = self.close_names(api, kind.templates(), name).await;
        Err(Error::user(format!(
            "{} `{name}` not found on AnsibleTower{}{}; list them with `broker providers AnsibleTower --{}`",
            kind.label(),
            self.instance_suffix(),
            if close.is_empty() {
                String::new()
            } else {
                format!(" (close names: {})", close.join(", "))
            },
            match kind {
                Kind::Workflow => "workflows",
                Kind::JobTemplate => "job-templates",
            }
        )))
    }

    /// Names on `path` that resemble `name` (AWX's `search` on each word of it).
    async fn close_names(&self, api: &Api, path: &str, name: &str) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        let words = name
            .split(['-', '_', ' ', '.'])
            .filter(|w| w.len() >= 3)
            .take(3);
        for word in std::iter::once(name).chain(words) {
            if let Ok(found) = api
                .get_all(path, &[("search", word.to_owned())], Some(10))
                .await
            {
                for item in found {
                    if let Some(n) = item.get("name").and_then(Json::as_str)
                        && !names.iter().any(|x| x == n)
                    {
                        names.push(n.to_owned());
                    }
                }
            }
            if names.len() >= 5 {
                break;
            }
        }
        names.truncate(5);
        names
    }

    /// An inventory given by id or name, as its id and name. Names must match exactly when several
    /// inventories contain the text.
    pub(crate) async fn resolve_inventory(
        &self,
        api: &Api,
        given: &Value,
    ) -> Result<(u64, String)> {
        let doing = |what: &str| format!("looking up inventory `{what}`");
        let as_id = match given {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        if let Some(id) = as_id {
            let inv = api
                .get(&format!("inventories/{id}/"), &[])
                .await
                .map_err(|e| match e.status() {
                    Some(404) => Error::user(format!(
                        "AnsibleTower inventory {id} does not exist or you cannot see it; list them with `broker providers AnsibleTower --inventories`"
                    )),
                    _ => e.into_error(&doing(&id.to_string())),
                })?;
            let name = inv.get("name").map(json_text).unwrap_or_default();
            return Ok((id, name));
        }
        let name = match given {
            Value::String(s) => s.trim().to_owned(),
            other => serde_yaml::to_string(other)
                .unwrap_or_default()
                .trim()
                .to_owned(),
        };
        let found = api
            .get_all("inventories/", &[("search", name.clone())], None)
            .await
            .map_err(|e| e.into_error(&doing(&name)))?;
        let exact: Vec<&Json> = found
            .iter()
            .filter(|i| i.get("name").and_then(Json::as_str) == Some(name.as_str()))
            .collect();
        let pick = match (exact.len(), found.len()) {
            (1, _) => exact[0],
            (0, 1) => &found[0],
            (0, 0) => {
                return Err(Error::user(format!(
                    "unknown AnsibleTower inventory `{name}`; list them with `broker providers AnsibleTower --inventories`"
                )));
            }
            _ => {
                let names: Vec<String> = found
                    .iter()
                    .filter_map(|i| i.get("name").and_then(Json::as_str).map(str::to_owned))
                    .collect();
                return Err(Error::user(format!(
                    "ambiguous AnsibleTower inventory `{name}`: it matches {}; give the exact name or the id",
                    names.join(", ")
                )));
            }
        };
        let id = pick.get("id").and_then(Json::as_u64).unwrap_or_default();
        let name = pick.get("name").map(json_text).unwrap_or(name);
        Ok((id, name))
    }

    /// Label ids for `k=v` labels, created in the template's organization when missing.
    async fn resolve_labels(
        &self,
        api: &Api,
        labels: &Mapping,
        template: &Json,
    ) -> Result<Vec<u64>> {
        let org = template
            .pointer("/summary_fields/organization/id")
            .or_else(|| template.get("organization"))
            .and_then(Json::as_u64);
        let mut ids = Vec::new();
        for (key, value) in labels {
            let key = match key {
                Value::String(s) => s.clone(),
                other => serde_yaml::to_string(other)
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
            };
            let value = match value {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                Value::Bool(false) => String::new(),
                other => serde_yaml::to_string(other)
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
            };
            let name = if value.is_empty() {
                key
            } else {
                format!("{key}={value}")
            };
            let created = api
                .post("labels/", &json!({"name": name, "organization": org}))
                .await;
            let id = match created {
                Ok(label) => label.get("id").and_then(Json::as_u64),
                Err(e) if e.status() == Some(400) => {
                    // Already there (AWX refuses duplicates per organization): look it up.
                    let mut query = vec![("name", name.clone())];
                    if let Some(org) = org {
                        query.push(("organization", org.to_string()));
                    }
                    let found = api
                        .get("labels/", &query)
                        .await
                        .map_err(|e| e.into_error(&format!("looking up label `{name}`")))?;
                    found.pointer("/results/0/id").and_then(Json::as_u64)
                }
                Err(e) => return Err(e.into_error(&format!("creating label `{name}`"))),
            };
            match id {
                Some(id) => ids.push(id),
                None => {
                    tracing::warn!(label = %name, "AnsibleTower neither created nor found the label; launching without it")
                }
            }
        }
        Ok(ids)
    }

    /// Launches a template with `args` as extra vars: resolves its inventory and labels, sends
    /// every argument (JSON-looking strings as structures), and reports the job's addresses.
    pub(crate) async fn launch(
        &self,
        api: &Api,
        kind: Kind,
        name: &str,
        mut args: Mapping,
        record: Option<&str>,
    ) -> Result<Launched> {
        let template = self.template(api, kind, name).await?;
        let mut payload = serde_json::Map::new();
        let (inventory_id, inventory) = self
            .launch_inventory(api, &template, name, &mut args)
            .await?;
        if let Some(id) = inventory_id {
            payload.insert("inventory".into(), json!(id));
        }
        if let Some(ids) = self.launch_labels(api, &template, &mut args).await? {
            payload.insert("labels".into(), json!(ids));
        }
        payload.insert("extra_vars".into(), extra_vars(&template, args));
        let launch_path = related(&template, "launch", || {
            format!(
                "{}{}/launch/",
                kind.templates(),
                template.get("id").map(json_text).unwrap_or_default()
            )
        });
        if let Some(record) = record {
            // From here on AWX may make a job even if its answer is lost.
            self.note(record, super::LaunchNote::Sent);
        }
        let answer = api
            .post(&launch_path, &Json::Object(payload))
            .await
            .map_err(|e| e.into_error(&format!("launching {} `{name}`", kind.label())))?;
        let launched = launched_job(api, kind, name, inventory, &answer)?;
        tracing::debug!(
            target: broker_core::report::TARGET,
            api_url = %launched.api_url,
            ui_url = %launched.ui_url,
            "job addresses"
        );
        tracing::info!(
            "launched {} `{name}` as job {}\n  API: {}\n  UI:  {}",
            kind.label(),
            launched.id,
            launched.api_url,
            launched.ui_url
        );
        Ok(launched)
    }

    /// The inventory to launch in — the argument `inventory`, else `tower_inventory` / the setting,
    /// else the template's default (which the user must be able to see) — as the id to send, if one
    /// was asked for, and its name.
    async fn launch_inventory(
        &self,
        api: &Api,
        template: &Json,
        name: &str,
        args: &mut Mapping,
    ) -> Result<(Option<u64>, Option<String>)> {
        let explicit = args.shift_remove("inventory");
        let wanted = explicit.or_else(|| {
            args.get("tower_inventory")
                .cloned()
                .filter(|v| !v.is_null())
                .or_else(|| self.settings.inventory.clone().map(Value::from))
        });
        match wanted {
            Some(given) => {
                let (id, inv_name) = self.resolve_inventory(api, &given).await?;
                tracing::info!("using AnsibleTower inventory `{inv_name}` ({id})");
                Ok((Some(id), Some(inv_name)))
            }
            None => Ok((
                None,
                Some(self.default_inventory(api, template, name).await?),
            )),
        }
    }

    /// The ids of the labels to launch with — the `provider_labels` argument over the setting's —
    /// if any; the labels stay in `args` (as a mapping) to reach the job as an extra var.
    async fn launch_labels(
        &self,
        api: &Api,
        template: &Json,
        args: &mut Mapping,
    ) -> Result<Option<Vec<u64>>> {
        let mut labels = match args.shift_remove("provider_labels") {
            Some(Value::Mapping(m)) => m,
            Some(Value::String(s)) => broker_core::args::parse_labels(&s),
            _ => Mapping::new(),
        };
        for (k, v) in self.settings.provider_labels.clone() {
            labels.entry(k).or_insert(v);
        }
        if labels.is_empty() {
            return Ok(None);
        }
        let ids = self.resolve_labels(api, &labels, template).await?;
        args.insert("provider_labels".into(), Value::Mapping(labels));
        Ok(Some(ids))
    }

    /// The template's default inventory, which the user must be able to see.
    async fn default_inventory(&self, api: &Api, template: &Json, name: &str) -> Result<String> {
        let Some(id) = template.get("inventory").and_then(Json::as_u64) else {
            return Err(Error::user(format!(
                "`{name}` has no default inventory; give one with `--tower-inventory NAME` or set \
                 `inventory` for AnsibleTower{}",
                self.instance_suffix()
            )));
        };
        match api.get(&format!("inventories/{id}/"), &[]).await {
            Ok(inv) => {
                tracing::info!("no inventory given; AnsibleTower uses the template's default");
                Ok(inv.get("name").map(json_text).unwrap_or_default())
            }
            Err(e) if matches!(e.status(), Some(403 | 404)) => Err(Error::user(format!(
                "you cannot see the default inventory of `{name}`; give one with `--tower-inventory NAME`"
            ))),
            Err(e) => Err(e.into_error("reading the template's default inventory")),
        }
    }

    /// Polls a job until it finishes, riding out connection errors, 5xx and 403 answers for up to
    /// `max_resilient_wait`; gives up after `workflow_timeout`.
    pub(crate) async fn wait(&self, api: &Api, launched: &Launched) -> Result<Finished> {
        let started = Instant::now();
        let mut failing_since: Option<Instant> = None;
        let path = api.path(&launched.path());
        loop {
            match api.get(&path, &[]).await {
                Ok(job) => {
                    failing_since = None;
                    let status = job.get("status").and_then(Json::as_str).unwrap_or("");
                    if is_final(status) {
                        tracing::info!(
                            "{} job {} finished: {status}",
                            launched.kind.label(),
                            launched.id
                        );
                        return Ok(Finished {
                            launched: launched.clone(),
                            job,
                        });
                    }
                    tracing::debug!(job = launched.id, status, "waiting");
                }
                Err(e) if e.transient() => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.settings.max_resilient_wait {
                        return Err(Error::provider(
                            NAME,
                            format!(
                                "maximum resilient wait time exceeded: AnsibleTower kept failing for {}s while broker waited for job {} ({e}); the job may still run, see {}",
                                self.settings.max_resilient_wait.as_secs(),
                                launched.id,
                                launched.ui_url
                            ),
                        ));
                    }
                    tracing::warn!("AnsibleTower did not answer properly ({e}); retrying");
                }
                Err(e) => {
                    return Err(e.into_error(&format!("waiting for job {}", launched.id)));
                }
            }
            if started.elapsed() >= self.settings.workflow_timeout {
                return Err(Error::Timeout {
                    operation: format!(
                        "{} `{}` (job {}, {})",
                        launched.kind.label(),
                        launched.template,
                        launched.id,
                        launched.ui_url
                    ),
                    after: self.settings.workflow_timeout,
                });
            }
            tokio::time::sleep(self.settings.poll_interval).await;
        }
    }

    /// The child jobs of a workflow job (nested workflows walked), oldest first, with their
    /// final state loaded.
    pub(crate) async fn children(&self, api: &Api, workflow: &Json) -> ApiResult<Vec<Json>> {
        let mut out = Vec::new();
        let mut stack = vec![(workflow.clone(), 0usize)];
        while let Some((wf, depth)) = stack.pop() {
            let Some(nodes) = wf.pointer("/related/workflow_nodes").and_then(Json::as_str) else {
                continue;
            };
            let nodes = api.get_all(nodes, &[], None).await?;
            let mut jobs: Vec<(u64, String, String)> = nodes
                .iter()
                .filter_map(|n| {
                    let id = n.pointer("/summary_fields/job/id").and_then(Json::as_u64)?;
                    let ty = n
                        .pointer("/summary_fields/job/type")
                        .and_then(Json::as_str)
                        .unwrap_or("job")
                        .to_owned();
                    let url = related(n, "job", || {
                        api.path(&format!(
                            "{}/{id}/",
                            if ty == "workflow_job" {
                                "workflow_jobs"
                            } else {
                                "jobs"
                            }
                        ))
                    });
                    Some((id, ty, url))
                })
                .collect();
            jobs.sort_by_key(|(id, _, _)| *id);
            for (_, ty, url) in jobs {
                let job = api.get(&url, &[]).await?;
                if ty == "workflow_job" && depth < 8 {
                    stack.push((job.clone(), depth + 1));
                }
                out.push(job);
            }
        }
        out.sort_by_key(|j| j.get("id").and_then(Json::as_u64).unwrap_or_default());
        Ok(out)
    }

    /// Why a job failed: failed child jobs newest first (`result_traceback` / `job_explanation`
    /// for errored ones, failed events' messages otherwise); only the newest with
    /// `error_scope: last`.
    pub(crate) async fn failure_reasons(&self, api: &Api, finished: &Finished) -> Vec<Reason> {
        let job = &finished.job;
        let jobs: Vec<Json> = if finished.launched.kind == Kind::Workflow {
            match self.children(api, job).await {
                Ok(children) => children,
                Err(e) => {
                    return vec![Reason {
                        job: finished.launched.template.clone(),
                        task: None,
                        reason: format!("could not read the failed workflow's jobs ({e})"),
                    }];
                }
            }
        } else {
            vec![job.clone()]
        };
        let mut reasons = Vec::new();
        for child in jobs.iter().rev() {
            reasons.extend(job_failure_reasons(api, child).await);
        }
        if reasons.is_empty() {
            reasons.push(Reason {
                job: finished.launched.template.clone(),
                task: None,
                reason: format!(
                    "unable to determine the failure cause; see {}",
                    finished.launched.ui_url
                ),
            });
        }
        if self.settings.error_scope_last {
            reasons.truncate(1);
        }
        reasons
    }

    /// VMs that successful child jobs of a failed workflow made (their `vm_name` artifacts).
    pub(crate) async fn dangling_vms(&self, api: &Api, finished: &Finished) -> Vec<String> {
        if finished.launched.kind != Kind::Workflow {
            return Vec::new();
        }
        let children = match self.children(api, &finished.job).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("could not look for hosts the failed workflow left ({e})");
                return Vec::new();
            }
        };
        let mut vms = Vec::new();
        for child in children {
            if child.get("status").and_then(Json::as_str) != Some("successful") {
                continue;
            }
            let names = match child.pointer("/artifacts/vm_name") {
                Some(Json::String(s)) => vec![s.clone()],
                Some(Json::Array(items)) => items.iter().map(json_text).collect(),
                _ => Vec::new(),
            };
            for n in names {
                if !n.is_empty() && !vms.contains(&n) {
                    vms.push(n);
                }
            }
        }
        vms
    }

    /// The artifacts of a finished job: `last` takes the newest child's, `merge` deep-merges them
    /// all (newer over older).
    pub(crate) async fn artifacts(
        &self,
        api: &Api,
        finished: &Finished,
        strategy: &str,
    ) -> Result<Json> {
        if finished.launched.kind == Kind::JobTemplate {
            return Ok(finished.job.get("artifacts").cloned().unwrap_or(json!({})));
        }
        let children = self
            .children(api, &finished.job)
            .await
            .map_err(|e| e.into_error("reading the workflow's jobs"))?;
        let mut with_artifacts = children.iter().filter_map(|c| {
            c.get("artifacts")
                .filter(|a| a.as_object().is_some_and(|m| !m.is_empty()))
        });
        Ok(if strategy == "merge" {
            let mut merged = json!({});
            for a in with_artifacts {
                merge_json(&mut merged, a);
            }
            merged
        } else {
            with_artifacts.next_back().cloned().unwrap_or(json!({}))
        })
    }

    /// Cancels a job that is still running; an already finished job is left alone.
    pub(crate) async fn cancel(&self, api: &Api, launched: &Launched) -> Result<()> {
        let path = api.path(&format!("{}/{}/cancel/", launched.kind.jobs(), launched.id));
        match api.post(&path, &json!({})).await {
            Ok(_) => {
                tracing::warn!(
                    "canceled {} job {} ({})",
                    launched.kind.label(),
                    launched.id,
                    launched.ui_url
                );
                Ok(())
            }
            Err(ApiError::Status { status: 405, .. }) => Ok(()),
            Err(e) => Err(e.into_error(&format!("canceling job {}", launched.id))),
        }
    }
}

/// Why one job (not a workflow) failed, errored or was canceled; nothing for others. An errored job's
/// traceback (else its explanation); else the messages of its failed events, each with its task; else
/// its explanation, else the tail of its output.
async fn job_failure_reasons(api: &Api, job: &Json) -> Vec<Reason> {
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
async fn failed_event_reasons(api: &Api, job: &Json, name: &str) -> Vec<Reason> {
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
fn extra_vars(template: &Json, args: Mapping) -> Json {
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
fn launched_job(
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
fn merge_json(base: &mut Json, over: &Json) {
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

/// Seconds from a setting that may be a number (`5`, `0.5`) or text.
pub(crate) fn seconds(value: Option<&Value>, default: f64) -> Duration {
    let secs = match value {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|s| s.is_finite() && *s >= 0.0)
    .unwrap_or(default);
    Duration::from_secs_f64(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn seconds_accept_numbers_and_text() {
        assert_eq!(seconds(Some(&Value::from(5)), 1.0), Duration::from_secs(5));
        assert_eq!(
            seconds(Some(&Value::from("0.25")), 1.0),
            Duration::from_millis(250)
        );
        assert_eq!(
            seconds(Some(&Value::from("soon")), 1.0),
            Duration::from_secs(1)
        );
        assert_eq!(seconds(None, 2.0), Duration::from_secs(2));
    }
}
