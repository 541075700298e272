//! Handoff targets on the server (`/api/v1/targets`, `/api/v1/kinds`): list, show, add, change,
//! remove. Targets come back as broker-core's [`Target`], their secrets as the fingerprints the
//! server shows (`secret sha256:…`): for showing, never for running a handoff.

use std::collections::BTreeMap;

use broker_core::handoff::{Added, ConfigValue, Target, TargetChange, TargetConfig, TargetId};
use broker_core::{Error, Result};
use reqwest::{Method, StatusCode};
use serde::Deserialize;

use crate::{RemoteBroker, segment};

/// A new target: its name, kind, description and configuration values (checked by the server
/// against the kind's schema).
#[derive(Debug, Clone)]
pub struct TargetSpec {
    /// The target's name.
    pub name: String,
    /// Its handoff kind: `puppet`.
    pub kind: String,
    /// What it is for.
    pub description: String,
    /// Its configuration, secrets as secrets (sent to the server only).
    pub config: BTreeMap<String, ConfigValue>,
}

/// A target as the server shows it.
#[derive(Deserialize)]
struct Shown {
    id: String,
    name: String,
    #[serde(default)]
    description: String,
    kind: String,
    #[serde(default)]
    config: BTreeMap<String, String>,
    created: i64,
    updated: i64,
    revision: u64,
}

impl From<Shown> for Target {
    fn from(shown: Shown) -> Self {
        let mut config = TargetConfig::default();
        for (key, value) in shown.config {
            // Already as the server shows it: a secret is its fingerprint.
            config.insert(key, ConfigValue::Plain(value));
        }
        Target {
            id: TargetId::from(shown.id.as_str()),
            name: shown.name,
            description: shown.description,
            kind: shown.kind,
            config,
            created: shown.created,
            updated: shown.updated,
            revision: shown.revision,
        }
    }
}

/// Configuration values as the API takes them: text, secrets included (to the server only).
fn values(config: &BTreeMap<String, ConfigValue>) -> serde_json::Value {
    config
        .iter()
        .map(|(key, value)| (key.clone(), value.expose().into()))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

impl RemoteBroker {
    /// The server's handoff targets.
    ///
    /// # Errors
    /// As [`RemoteBroker::hosts`].
    pub async fn targets(&self) -> Result<Vec<Target>> {
        let shown: Vec<Shown> = self
            .http
            .json(Method::GET, "api/v1/targets", &[], None)
            .await?;
        Ok(shown.into_iter().map(Target::from).collect())
    }

    /// The target `id_or_name`.
    ///
    /// # Errors
    /// As [`RemoteBroker::hosts`]; [`Error::User`] when there is none.
    pub async fn target(&self, id_or_name: &str) -> Result<Target> {
        let path = format!("api/v1/targets/{}", segment(id_or_name));
        let shown: Shown = self.http.json(Method::GET, &path, &[], None).await?;
        Ok(shown.into())
    }

    /// The handoff kinds the server knows, as it shows them (`GET /api/v1/kinds`).
    ///
    /// # Errors
    /// As [`RemoteBroker::hosts`].
    pub async fn kinds(&self) -> Result<serde_json::Value> {
        self.http.json(Method::GET, "api/v1/kinds", &[], None).await
    }

    /// Adds a target (an admin token's right): [`Added::Created`], or [`Added::Existing`] when the
    /// same one is there already.
    ///
    /// # Errors
    /// As [`RemoteBroker::hosts`]; [`Error::User`] for a name, kind or value the server refuses,
    /// or a target of that name that differs; [`Error::Permission`] below admin.
    pub async fn add_target(&self, spec: &TargetSpec) -> Result<Added> {
        let body = serde_json::json!({
            "name": spec.name,
            "kind": spec.kind,
            "description": spec.description,
            "config": values(&spec.config),
        });
        let answer = self
            .http
            .send(Method::POST, "api/v1/targets", &[], Some(&body))
            .await?;
        let target: Target = self
            .http
            .read::<Shown>("api/v1/targets", &answer.body)?
            .into();
        Ok(if answer.status == StatusCode::CREATED {
            Added::Created(target)
        } else {
            Added::Existing(target)
        })
    }

    /// Changes the target `id_or_name`: its name, description, keys set and cleared (never its
    /// kind). `change.config` (a whole new configuration) is not sent: give `set` and `clear`.
    ///
    /// # Errors
    /// As [`RemoteBroker::add_target`]; [`Error::Usage`] for a whole configuration.
    pub async fn update_target(&self, id_or_name: &str, change: &TargetChange) -> Result<Target> {
        if change.config.is_some() {
            return Err(Error::usage(
                "a remote target is changed key by key; give the keys to set and to clear",
            ));
        }
        let mut body = serde_json::json!({
            "config": {"set": values(&change.set), "clear": change.clear},
        });
        if let Some(name) = &change.name {
            body["name"] = name.clone().into();
        }
        if let Some(description) = &change.description {
            body["description"] = description.clone().into();
        }
        let path = format!("api/v1/targets/{}", segment(id_or_name));
        let shown: Shown = self
            .http
            .json(Method::PATCH, &path, &[], Some(&body))
            .await?;
        Ok(shown.into())
    }

    /// Removes the target `id_or_name` and returns it as it was. (There is no "remove all" over
    /// the network, as in Razor.)
    ///
    /// # Errors
    /// As [`RemoteBroker::target`]; [`Error::User`] while a nick or a host names it.
    pub async fn remove_target(&self, id_or_name: &str) -> Result<Target> {
        let target = self.target(id_or_name).await?;
        let path = format!("api/v1/targets/{}", segment(target.id.as_str()));
        self.http.send(Method::DELETE, &path, &[], None).await?;
        Ok(target)
    }
}
