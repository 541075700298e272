//! Collects the results providers and broker-core report on the way (`broker_core::report`) for
//! `--output-file`, under the Python broker's key names.

use std::sync::{LazyLock, Mutex};

use serde_json::{Map, Value as Json};
use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::Context;

/// What was reported so far in this process.
static REPORTED: LazyLock<Mutex<Map<String, Json>>> = LazyLock::new(|| Mutex::new(Map::new()));

/// The layer to install with the subscriber: it sees only `broker::report` events.
pub fn layer<S>() -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    Collector.with_filter(filter_fn(|meta| {
        meta.target() == broker_core::report::TARGET
    }))
}

/// The results reported so far, as output-file keys.
pub fn reported() -> Map<String, Json> {
    broker_core::sync::lock(&REPORTED).clone()
}

struct Collector;

impl<S: tracing::Subscriber> Layer<S> for Collector {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut reported = broker_core::sync::lock(&REPORTED);
        for (key, value) in fields.into_keys() {
            reported.insert(key, value);
        }
    }
}

/// One event's fields.
#[derive(Default)]
struct Fields(Vec<(&'static str, String)>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name(), value.to_owned()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name(), format!("{value:?}")));
    }
}

impl Fields {
    /// The fields as the Python broker's keys: `job_status` of a `Workflow` becomes
    /// `Workflow Status`, `job_reasons` `Reason(s)`, `job_url` `URL`; JSON text becomes JSON.
    fn into_keys(self) -> Vec<(String, Json)> {
        let subject = self
            .0
            .iter()
            .find(|(name, _)| *name == "job_subject")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| "Job".into());
        self.0
            .into_iter()
            .filter_map(|(name, value)| {
                let key = match name {
                    "provider" | "action" | "api_url" | "ui_url" | "auth_type" => name.to_owned(),
                    "arguments" | "job_reasons" => {
                        let key = if name == "arguments" {
                            name
                        } else {
                            "Reason(s)"
                        };
                        let json = serde_json::from_str(&value).unwrap_or(Json::String(value));
                        return Some((key.to_owned(), json));
                    }
                    "job_status" => format!("{subject} Status"),
                    "job_url" => "URL".to_owned(),
                    _ => return None,
                };
                Some((key, Json::String(value)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn report_events_become_the_python_brokers_keys() {
        let subscriber = tracing_subscriber::registry().with(layer());
        tracing::subscriber::with_default(subscriber, || {
            broker_core::report::action(
                "AnsibleTower",
                "workflow",
                &serde_yaml::from_str("{workflow: deploy-rhel, password: hunter2}").unwrap(),
            );
            tracing::info!(
                target: broker_core::report::TARGET,
                api_url = %"https://aap/api/v2/workflow_jobs/7/",
                ui_url = %"https://aap/#/jobs/workflow/7/output",
                "launched"
            );
            tracing::debug!(
                target: broker_core::report::TARGET,
                job_subject = "Workflow",
                job_status = "failed",
                job_reasons = %r#"["deploy: disk full"]"#,
                job_url = %"https://aap/#/jobs/workflow/7/output",
                "failed"
            );
            // Other events are not results, even with the same field names.
            tracing::info!(provider = "nope", ui_url = "nope", "unrelated");
        });
        let reported = reported();
        assert_eq!(reported["provider"], "AnsibleTower");
        assert_eq!(reported["action"], "workflow");
        assert_eq!(
            reported["arguments"],
            serde_json::json!({"workflow": "deploy-rhel", "password": broker_core::redact::MASK})
        );
        assert_eq!(reported["api_url"], "https://aap/api/v2/workflow_jobs/7/");
        assert_eq!(reported["ui_url"], "https://aap/#/jobs/workflow/7/output");
        assert_eq!(reported["Workflow Status"], "failed");
        assert_eq!(
            reported["Reason(s)"],
            serde_json::json!(["deploy: disk full"])
        );
        assert_eq!(reported["URL"], "https://aap/#/jobs/workflow/7/output");
    }
}
