//! `AnsibleTower`: hosts made by AWX / Ansible Automation Platform workflows.
//!
//! A checkout launches a workflow (e.g. `deploy-rhel`) with every argument as an extra var, waits for
//! it, and builds the host from the artifacts its jobs set: `_broker_facts` (hostname from the fact
//! ending in `fqdn`, name from `name` or `vm_provisioned`, type from the fact ending in `host_type`)
//! and `_broker_args`. Check-in launches the `release_workflow` (`remove-vm`) with `source_vm`,
//! extend the `extend_workflow` (`extend-vm`) with `target_vm` and `new_expire_time`. Hosts are
//! reached over SSH (feature `ssh`).
//!
//! # Settings (`AnsibleTower:` in `broker_settings.yaml`, per instance under `instances:`)
//! | key | default | |
//! |---|---|---|
//! | `base_url` | required | `https://tower.example.com/` |
//! | `token` | — | a personal access token (preferred) |
//! | `username`, `password` | — | a password login: broker makes a temporary token, shares it with every instance of the process that logs in the same way, and deletes it when done |
//! | `aap_version` | probe | `2.5` and later use `/api/controller/v2/`; otherwise `/api/` is asked |
//! | `inventory` | template's | inventory name or id to launch into |
//! | `release_workflow` / `extend_workflow` | `remove-vm` / `extend-vm` | |
//! | `new_expire_time` | `+172800` | for extend |
//! | `workflow_timeout` | 3600 | seconds a job may take |
//! | `workflow_poll_interval` | 5 | seconds between polls (fractions allowed) |
//! | `max_resilient_wait` | 7200 | seconds of connection errors, 5xx and 403 answers ridden out while polling |
//! | `results_limit` | 20 | default limit of discovery lists |
//! | `error_scope` | `last` | `last`: the newest failure reason; anything else: all |
//! | `dangling_behavior` | `checkin` | hosts a failed workflow made: `checkin`, `store` (keep in the inventory with `deploy_failed: true`) or `prompt` (ask on a terminal; `store` without one) |
//! | `provider_labels` | — | `k: v` labels put on every job (with the top-level `provider_labels`) |
//! | `verify` | `true` | `false` skips TLS checks; a path adds a PEM CA bundle |
//!
//! # No host is lost
//! Every launch carries the intent record's id in the extra var `_broker_record_id`, and a leased
//! checkout its lease in `_broker_expire_time` (seconds since the epoch, as the record has it), for
//! workflows that set the VM's own expiry from it; AWX workflows take extra vars they do not use
//! (every checkout argument is one), and neither is passed on to a release or extend. A checkout
//! that fails, times out or is interrupted is cleaned up from its intent record: a job still
//! running is canceled, and the VMs its successful jobs made (`vm_name` artifacts, or the finished
//! host) are released. After a crash, `broker recover` finds the job by that id.
//!
//! # Files
//! `mod.rs` is the provider: settings, `Tower` and all its methods (the checkout's steps, then AWX
//! jobs: templates, inventories, labels, launch, wait, failure reasons, artifacts), and the
//! `Provider` implementation; `jobs.rs` holds the jobs' data and the pure rules over it (extra vars,
//! host fields, reasons from a job's record) and knows nothing of `Tower`; `api.rs` is the HTTP
//! client (on its own runtime, see there).

mod api;
mod jobs;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use broker_core::interaction::{Interaction, Question};
use broker_core::provider::{Arguments, HelpOption, Operation};
use broker_core::secrecy::SecretString;
use broker_core::settings::{ProviderSettings, field};
use broker_core::sync::lock;
use broker_core::value::to_yaml;
use broker_core::{
    CheckoutContext, Error, HostRecord, HostState, Mapping, Provider, ProviderConfig, ProviderKind,
    Result, Value,
};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use api::{Api, ApiError, ApiResult, ConnectOptions, Credentials, Verify, json_text};
use jobs::{
    Finished, Kind, Launched, Reason, extra_vars, host_fields, is_final, is_set,
    job_failure_reasons, launched_job, merge_json, related, set_entries,
};

/// The extra var carrying a leased checkout's lease (broker's `_broker_expire_time`).
const EXPIRE_TIME_VAR: &str = broker_core::record::fields::EXPIRE_TIME;

/// The provider's name, as the inventory records it.
pub const NAME: &str = "AnsibleTower";

/// The registration of the AnsibleTower provider.
pub const KIND: ProviderKind =
    ProviderKind::new(NAME, "AWX / Ansible Automation Platform workflows", build)
        .checkout_actions(&["workflow"])
        .execute_actions(&["workflow", "job_template"])
        .settings::<TowerSection>()
        .arguments(&["tower_inventory", "new_expire_time", "artifacts"])
        .takes(Operation::Extend, Arguments::Only(&["new_expire_time"]))
        .help_options(&[
            HelpOption {
                name: "workflows",
                takes_value: false,
                help: "Workflows you can launch",
            },
            HelpOption {
                name: "workflow",
                takes_value: true,
                help: "A workflow's description, default inventory and extra vars",
            },
            HelpOption {
                name: "job_templates",
                takes_value: false,
                help: "Job templates you can launch",
            },
            HelpOption {
                name: "job_template",
                takes_value: true,
                help: "A job template's description, default inventory and extra vars",
            },
            HelpOption {
                name: "inventories",
                takes_value: false,
                help: "Inventories you can see",
            },
            HelpOption {
                name: "inventory",
                takes_value: true,
                help: "One inventory",
            },
            HelpOption {
                name: "templates",
                takes_value: false,
                help: "Deployable templates (the `list-templates` workflow's artifacts)",
            },
            HelpOption {
                name: "flavors",
                takes_value: false,
                help: "VM flavors (the `list-flavors` workflow's artifacts)",
            },
            HelpOption {
                name: "tower_inventory",
                takes_value: true,
                help: "Filter results by the specified inventory",
            },
        ]);

fn build(config: ProviderConfig) -> Result<std::sync::Arc<dyn Provider>> {
    Ok(std::sync::Arc::new(Tower::new(config)?))
}

/// What to do with hosts a failed workflow made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dangling {
    Checkin,
    Store,
    Prompt,
}

/// The settings of one instance, read once.
#[derive(Debug, Clone)]
pub(crate) struct TowerSettings {
    pub inventory: Option<String>,
    pub release_workflow: String,
    pub extend_workflow: String,
    pub new_expire_time: String,
    pub workflow_timeout: Duration,
    pub poll_interval: Duration,
    pub max_resilient_wait: Duration,
    pub results_limit: usize,
    pub error_scope_last: bool,
    pub dangling: Dangling,
    pub provider_labels: Mapping,
}

/// The `AnsibleTower` settings section of one instance, as written (see the module documentation's
/// table); [`TowerSection::settings`] and [`TowerSection::connect_options`] give what the provider
/// uses.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TowerSection {
    #[serde(deserialize_with = "field::text")]
    base_url: Option<String>,
    #[serde(deserialize_with = "field::secret")]
    token: Option<SecretString>,
    #[serde(deserialize_with = "field::text")]
    username: Option<String>,
    #[serde(deserialize_with = "field::secret")]
    password: Option<SecretString>,
    #[serde(deserialize_with = "field::text")]
    aap_version: Option<String>,
    #[serde(deserialize_with = "crate::http::verify")]
    verify: Option<Verify>,
    #[serde(deserialize_with = "field::text")]
    inventory: Option<String>,
    #[serde(deserialize_with = "field::text")]
    release_workflow: Option<String>,
    #[serde(deserialize_with = "field::text")]
    extend_workflow: Option<String>,
    #[serde(deserialize_with = "field::text")]
    new_expire_time: Option<String>,
    #[serde(deserialize_with = "field::seconds")]
    workflow_timeout: Option<Duration>,
    #[serde(deserialize_with = "field::seconds")]
    workflow_poll_interval: Option<Duration>,
    #[serde(deserialize_with = "field::seconds")]
    max_resilient_wait: Option<Duration>,
    #[serde(deserialize_with = "field::whole")]
    results_limit: Option<u64>,
    #[serde(deserialize_with = "field::text")]
    error_scope: Option<String>,
    #[serde(deserialize_with = "dangling")]
    dangling_behavior: Option<Dangling>,
}

impl ProviderSettings for TowerSection {}

impl TowerSection {
    /// What the provider uses, defaults filled in.
    fn settings(&self, config: &ProviderConfig) -> TowerSettings {
        let text_or = |value: &Option<String>, default: &str| {
            value.clone().unwrap_or_else(|| default.to_owned())
        };
        TowerSettings {
            inventory: self.inventory.clone().filter(|s| !s.is_empty()),
            release_workflow: text_or(&self.release_workflow, "remove-vm"),
            extend_workflow: text_or(&self.extend_workflow, "extend-vm"),
            new_expire_time: text_or(&self.new_expire_time, "+172800"),
            workflow_timeout: self.workflow_timeout.unwrap_or(Duration::from_secs(3600)),
            poll_interval: self
                .workflow_poll_interval
                .unwrap_or(Duration::from_secs(5))
                .max(Duration::from_millis(10)),
            max_resilient_wait: self.max_resilient_wait.unwrap_or(Duration::from_secs(7200)),
            results_limit: self.results_limit.map_or(20, |n| n as usize),
            error_scope_last: self
                .error_scope
                .as_deref()
                .is_none_or(|s| s.eq_ignore_ascii_case("last")),
            dangling: self.dangling_behavior.unwrap_or(Dangling::Checkin),
            provider_labels: config.provider_labels(),
        }
    }

    /// Where and how to connect: `base_url` without the login written into it, the credentials, the
    /// TLS check.
    fn connect_options(&self, config: &ProviderConfig) -> Result<ConnectOptions> {
        // Credentials written into the URL never travel with it: they are taken out here, so that no
        // address broker logs, shows or records carries them.
        let given_url = self
            .base_url
            .as_ref()
            .ok_or_else(|| config.missing("base_url"))?;
        let (base_url, url_login) = split_login(given_url);
        check_base_url(config, &base_url)?;
        let verify = crate::http::verify_in(self.verify.as_ref(), config.directory());
        Ok(ConnectOptions {
            base_url,
            credentials: self.credentials(config, url_login)?,
            aap_version: self.aap_version.clone(),
            verify,
            request_timeout: Duration::from_secs(120),
        })
    }

    /// A `token`, else `username` and `password`, else the login written into `base_url`.
    fn credentials(
        &self,
        config: &ProviderConfig,
        url_login: Option<(String, SecretString)>,
    ) -> Result<Credentials> {
        use broker_core::secrecy::ExposeSecret;
        for (key, value) in [
            (
                "token",
                self.token.as_ref().map(ExposeSecret::expose_secret),
            ),
            ("username", self.username.as_deref()),
            (
                "password",
                self.password.as_ref().map(ExposeSecret::expose_secret),
            ),
        ] {
            if value.is_some_and(|v| broker_core::settings::is_placeholder(&Value::from(v))) {
                return Err(config.setting_error(
                    key,
                    "is still the example's placeholder; set a real value or remove the key",
                ));
            }
        }
        let where_ = match config.instance() {
            Some(i) => format!("AnsibleTower instance `{i}`"),
            None => "AnsibleTower".to_owned(),
        };
        let token = self.token.clone().filter(|t| !t.expose_secret().is_empty());
        let username = self.username.clone().filter(|u| !u.is_empty());
        let password = self
            .password
            .clone()
            .filter(|p| !p.expose_secret().is_empty());
        let from_settings = token.is_some() || username.is_some() || password.is_some();
        if url_login.is_some() && from_settings {
            tracing::warn!(
                "{where_}: the user and password in `base_url` are not used; `token` (or \
                 `username` and `password`) are"
            );
        }
        match (token, username, password, url_login) {
            (Some(token), _, _, _) => Ok(Credentials::Token(token)),
            (None, Some(username), Some(password), _)
            | (None, None, None, Some((username, password))) => {
                Ok(Credentials::Password { username, password })
            }
            _ => Err(Error::configuration(format!(
                "{where_} needs `token`, or `username` and `password`; set them in broker_settings.yaml \
                 or BROKER_ANSIBLETOWER__TOKEN"
            ))),
        }
    }
}

/// `dangling_behavior`: `checkin`, `store` or `prompt`, in any case.
fn dangling<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<Dangling>, D::Error> {
    use serde::de::Error as _;
    let Some(text) = field::text(deserializer)? else {
        return Ok(None);
    };
    match text.to_ascii_lowercase().as_str() {
        "checkin" => Ok(Some(Dangling::Checkin)),
        "store" => Ok(Some(Dangling::Store)),
        "prompt" => Ok(Some(Dangling::Prompt)),
        _ => Err(D::Error::custom(format!(
            "`{text}` is not one of checkin, store, prompt"
        ))),
    }
}

/// What this process knows about the launch made for an intent record.
#[derive(Debug, Clone)]
pub(crate) enum LaunchNote {
    /// Nothing was sent to AWX yet: nothing to clean up.
    NotLaunched,
    /// The launch request was sent; whether AWX made a job is unknown until asked.
    Sent,
    /// AWX runs (or ran) this job.
    Launched(Launched),
    /// The job's outcome was handled (its dangling hosts checked in or kept): nothing left to do.
    Settled,
}

/// The provider for one configured instance.
pub(crate) struct Tower {
    config: ProviderConfig,
    settings: TowerSettings,
    connect: ConnectOptions,
    api: tokio::sync::OnceCell<Api>,
    launches: Mutex<HashMap<String, LaunchNote>>,
    /// A "for all" answer (`cA` / `sA`) to the dangling-host question.
    sticky: Mutex<Option<Dangling>>,
    prompt: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Tower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnsibleTower")
            .field("instance", &self.config.instance())
            .field("base_url", &self.connect.base_url)
            .field("credentials", &self.connect.credentials)
            .finish()
    }
}

impl Tower {
    fn new(config: ProviderConfig) -> Result<Tower> {
        let section = TowerSection::from_section(&config)?;
        let connect = section.connect_options(&config)?;
        let settings = section.settings(&config);
        Ok(Tower {
            config,
            settings,
            connect,
            api: tokio::sync::OnceCell::new(),
            launches: Mutex::new(HashMap::new()),
            sticky: Mutex::new(None),
            prompt: tokio::sync::Mutex::new(()),
        })
    }

    /// The connected client, made on first use and shared by every call of this instance.
    async fn api(&self) -> Result<&Api> {
        let api = self
            .api
            .get_or_try_init(|| Api::connect(&self.connect))
            .await;
        api.map_err(|e| match self.config.instance() {
            Some(i) => e.with_instance(i),
            None => e,
        })
    }

    pub(crate) fn instance_suffix(&self) -> String {
        self.config
            .instance()
            .map(|i| format!("::{i}"))
            .unwrap_or_default()
    }

    fn error(&self, message: String) -> Error {
        let e = Error::provider(NAME, message);
        match self.config.instance() {
            Some(i) => e.with_instance(i),
            None => e,
        }
    }

    pub(crate) fn note(&self, record: &str, note: LaunchNote) {
        lock(&self.launches).insert(record.to_owned(), note);
    }

    fn settle(&self, record: &str) {
        self.note(record, LaunchNote::Settled);
    }

    /// Launches and waits for the job, noting it against the intent record `record`.
    async fn launch_and_wait(
        &self,
        api: &Api,
        kind: Kind,
        name: &str,
        args: Mapping,
        record: Option<&str>,
    ) -> Result<Finished> {
        let launched = self.launch(api, kind, name, args, record).await?;
        if let Some(record) = record {
            self.note(record, LaunchNote::Launched(launched.clone()));
        }
        self.wait(api, &launched).await
    }

    /// Launches and waits; a failed job becomes an error with its reasons.
    async fn run(&self, api: &Api, kind: Kind, name: &str, args: Mapping) -> Result<Finished> {
        let finished = self.launch_and_wait(api, kind, name, args, None).await?;
        if finished.succeeded() {
            return Ok(finished);
        }
        let reasons = self.failure_reasons(api, &finished).await;
        Err(self.failure(&finished, &reasons, &[]))
    }

    /// As [`Tower::run`], and the hosts a failed workflow left are checked in or kept as
    /// `dangling_behavior` says (kept through `ctx`).
    async fn run_handling_dangling(
        &self,
        api: &Api,
        kind: Kind,
        name: &str,
        args: Mapping,
        ctx: Option<&CheckoutContext<'_>>,
    ) -> Result<Finished> {
        let record = ctx.map(|c| c.record_id().as_str());
        let finished = self.launch_and_wait(api, kind, name, args, record).await?;
        if finished.succeeded() {
            return Ok(finished);
        }
        let reasons = self.failure_reasons(api, &finished).await;
        let mut notes = Vec::new();
        let auto_checked_in = reasons
            .iter()
            .any(|r| r.reason.contains("was automatically checked-in"));
        if !auto_checked_in {
            for vm in self.dangling_vms(api, &finished).await {
                let choice = self.dangling_choice(&vm, &reasons).await;
                let inventory = finished.launched.inventory.as_deref();
                notes.push(self.handle_dangling(api, &vm, inventory, choice, ctx).await);
            }
        }
        if let Some(ctx) = ctx {
            self.settle(ctx.record_id().as_str());
        }
        Err(self.failure(&finished, &reasons, &notes))
    }

    /// The error of a failed job: status, reasons, what happened to the hosts it left, its URL.
    fn failure(&self, finished: &Finished, reasons: &[Reason], notes: &[String]) -> Error {
        let launched = &finished.launched;
        let listed: Vec<String> = reasons.iter().map(Reason::to_string).collect();
        tracing::debug!(
            target: broker_core::report::TARGET,
            job_subject = match launched.kind {
                Kind::Workflow => "Workflow",
                Kind::JobTemplate => "Job",
            },
            job_status = finished.status(),
            job_reasons = %json!(listed),
            job_url = %launched.ui_url,
            "job failed"
        );
        let mut message = format!(
            "{} `{}` (job {}) {}: {}",
            launched.kind.label(),
            launched.template,
            launched.id,
            finished.status(),
            reasons
                .iter()
                .map(Reason::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        );
        for note in notes {
            message.push_str("; ");
            message.push_str(note);
        }
        message.push_str(&format!("; see {}", launched.ui_url));
        self.error(message)
    }

    async fn dangling_choice(&self, vm: &str, reasons: &[Reason]) -> Dangling {
        if let Some(sticky) = *lock(&self.sticky) {
            return sticky;
        }
        if self.settings.dangling != Dangling::Prompt {
            return self.settings.dangling;
        }
        let _one_question_at_a_time = self.prompt.lock().await;
        if let Some(sticky) = *lock(&self.sticky) {
            return sticky;
        }
        let vm = vm.to_owned();
        let reason = reasons.first().map(Reason::to_string).unwrap_or_default();
        let interaction = self.config.interaction();
        let answer = tokio::task::spawn_blocking(move || ask_dangling(&*interaction, &vm, &reason))
            .await
            .ok()
            .flatten();
        match answer.as_deref() {
            Some("c") => Dangling::Checkin,
            Some("s") => Dangling::Store,
            Some("cA") => {
                *lock(&self.sticky) = Some(Dangling::Checkin);
                Dangling::Checkin
            }
            Some("sA") => {
                *lock(&self.sticky) = Some(Dangling::Store);
                Dangling::Store
            }
            _ => {
                tracing::warn!(
                    "dangling_behavior is `prompt` but nobody can answer (no terminal); storing the host"
                );
                Dangling::Store
            }
        }
    }

    /// Checks a dangling host in (in the inventory it was made in) or keeps it; says what happened.
    async fn handle_dangling(
        &self,
        api: &Api,
        vm: &str,
        inventory: Option<&str>,
        choice: Dangling,
        ctx: Option<&CheckoutContext<'_>>,
    ) -> String {
        tracing::warn!("the failed workflow left host `{vm}`");
        match (choice, ctx) {
            (Dangling::Store, Some(ctx)) => {
                let mut fields = self.stored_host(api, vm).await;
                fields.insert("deploy_failed".into(), Value::Bool(true));
                ctx.keep_failed(fields);
                format!(
                    "host `{vm}` it left is kept in the inventory (deploy_failed); check it in when done"
                )
            }
            _ => {
                let mut args = Mapping::new();
                if let Some(inventory) = inventory {
                    args.insert("inventory".into(), Value::from(inventory));
                }
                match self.release_vm(api, vm, args).await {
                    Ok(()) => format!("host `{vm}` it left was checked in"),
                    Err(e) => format!(
                        "host `{vm}` it left could not be checked in ({}); run `broker execute --workflow {} --source-vm {vm}`",
                        broker_core::error::chain(&e),
                        self.settings.release_workflow
                    ),
                }
            }
        }
    }

    /// The inventory fields of a host as AWX knows it (upstream's stored dangling host).
    async fn stored_host(&self, api: &Api, vm: &str) -> Mapping {
        let found = api.get("hosts/", &[("name", vm.to_owned())]).await;
        match found.ok().and_then(|f| f.pointer("/results/0").cloned()) {
            Some(host) => {
                let inventory = host
                    .pointer("/summary_fields/inventory/name")
                    .map(json_text);
                self.compile_host(api, &host, inventory).await
            }
            None => {
                let mut m = Mapping::new();
                m.insert("name".into(), Value::from(vm));
                m.insert("type".into(), Value::from("host"));
                m
            }
        }
    }

    /// Upstream's host record from an AWX host: its variables, facts and broker facts.
    async fn compile_host(&self, api: &Api, host: &Json, inventory: Option<String>) -> Mapping {
        let name = host.get("name").map(json_text).unwrap_or_default();
        let variables: Json = match host.get("variables") {
            Some(Json::String(s)) if !s.trim().is_empty() => serde_json::from_str(s)
                .or_else(|_| serde_yaml::from_str::<Json>(s))
                .unwrap_or(Json::Null),
            Some(Json::Object(m)) => Json::Object(m.clone()),
            _ => Json::Null,
        };
        let facts = match host
            .pointer("/related/ansible_facts")
            .and_then(Json::as_str)
        {
            Some(url) => match api.get(url, &[]).await {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!("unable to get the facts of {name}: {e}");
                    Json::Null
                }
            },
            None => Json::Null,
        };
        let mut m = set_entries(facts.get("_broker_facts"));
        let hostname = variables
            .get("fqdn")
            .or_else(|| facts.get("ansible_fqdn"))
            .or_else(|| variables.pointer("/openstack/metadata/fqdn"))
            .map(json_text)
            .filter(|s| !s.is_empty());
        m.insert("name".into(), Value::from(name.as_str()));
        m.insert(
            "type".into(),
            Value::from(
                host.get("type")
                    .map(json_text)
                    .unwrap_or_else(|| "host".into()),
            ),
        );
        m.insert(
            "hostname".into(),
            hostname.map(Value::from).unwrap_or(Value::Null),
        );
        if let Some(ip) = variables
            .get("ansible_host")
            .map(json_text)
            .filter(|s| !s.is_empty())
        {
            m.insert("ip".into(), Value::from(ip));
        }
        if let Some(inv) = inventory {
            m.insert("tower_inventory".into(), Value::from(inv));
        }
        m.insert("_broker_provider".into(), Value::from(NAME));
        if let Some(i) = self.config.instance() {
            m.insert("_broker_provider_instance".into(), Value::from(i));
        }
        m.insert(
            "_broker_args".into(),
            Value::Mapping(set_entries(facts.get("_broker_args"))),
        );
        for (field, fact) in [
            ("os_distribution", "ansible_distribution"),
            ("os_distribution_version", "ansible_distribution_version"),
        ] {
            if let Some(v) = facts.get(fact).filter(|v| is_set(v)) {
                m.insert(Value::from(field), to_yaml(v));
            }
        }
        if let Some(nics) = facts
            .get("ansible_interfaces")
            .filter(|v| v.as_array().is_some_and(|a| !a.is_empty()))
        {
            let mut devices = Mapping::new();
            devices.insert("nics".into(), to_yaml(nics));
            m.insert("reported_devices".into(), Value::Mapping(devices));
        }
        m
    }

    /// Runs the release workflow for one VM.
    async fn release_vm(&self, api: &Api, vm: &str, mut args: Mapping) -> Result<()> {
        let workflow = self.settings.release_workflow.clone();
        args.insert("workflow".into(), Value::from(workflow.as_str()));
        args.insert("source_vm".into(), Value::from(vm));
        self.run(api, Kind::Workflow, &workflow, args)
            .await
            .map(|_| tracing::info!("released `{vm}` through `{workflow}`"))
    }

    /// The VM a record names (its `name`, else its `hostname`), for the release or extend workflow.
    fn vm_name(&self, host: &HostRecord, wanted: &str) -> Result<String> {
        vm_of(host).map(str::to_owned).ok_or_else(|| {
            self.error(format!(
                "record {} has neither `name` nor `hostname`, so there is no {wanted}",
                host.display_name()
            ))
        })
    }

    /// The arguments of a release or extend: the recorded ones without the checkout's own, and the
    /// recorded inventory as the launch inventory.
    fn follow_up_args(record: &HostRecord) -> Mapping {
        let mut args = record.args();
        for key in [
            "workflow",
            "job_template",
            "artifacts",
            "_broker_extra_vars",
            "_broker_record_id",
            EXPIRE_TIME_VAR,
            "source_vm",
            "target_vm",
            "count",
            "_count",
        ] {
            args.shift_remove(key);
        }
        let inventory = args
            .shift_remove("tower_inventory")
            .filter(|v| !v.is_null())
            .or_else(|| {
                record
                    .get("tower_inventory")
                    .cloned()
                    .filter(|v| !v.is_null())
            });
        if let Some(inv) = inventory {
            args.insert("inventory".into(), inv);
        }
        args
    }

    /// Finds the job a pending record's checkout launched: from this process's memory, else by the
    /// record id it carried in its extra vars.
    async fn launch_of(&self, api: &Api, record: &HostRecord) -> Result<Option<Launched>> {
        let id = record.id();
        let known = lock(&self.launches).get(id.as_str()).cloned();
        match known {
            Some(LaunchNote::Launched(l)) => return Ok(Some(l)),
            Some(LaunchNote::NotLaunched | LaunchNote::Settled) => return Ok(None),
            Some(LaunchNote::Sent) | None => {}
        }
        let found = api
            .get(
                "workflow_jobs/",
                &[
                    ("extra_vars__contains", id.as_str().to_owned()),
                    ("order_by", "-id".to_owned()),
                ],
            )
            .await
            .map_err(|e| {
                e.into_error(&format!(
                    "looking for the job of unfinished checkout {}",
                    id.as_str()
                ))
            })?;
        let Some(job) = found.pointer("/results/0") else {
            return Ok(None);
        };
        let job_id = job.get("id").and_then(Json::as_u64).unwrap_or_default();
        Ok(Some(Launched {
            kind: Kind::Workflow,
            id: job_id,
            template: job.get("name").map(json_text).unwrap_or_default(),
            inventory: None,
            api_url: api.url(&api.path(&format!("workflow_jobs/{job_id}/"))),
            ui_url: api.ui_url("workflow", job_id),
        }))
    }

    /// Whether this process knows that a pending record needs no clean-up at AWX.
    fn nothing_to_clean(&self, record: &HostRecord) -> bool {
        matches!(
            lock(&self.launches).get(record.id().as_str()),
            Some(LaunchNote::NotLaunched | LaunchNote::Settled)
        )
    }

    /// Cleans up after a checkout that never became `ready`: cancels its job if it still runs, then
    /// releases what it made.
    async fn checkin_pending(&self, api: &Api, record: &HostRecord) -> Result<()> {
        let Some(launched) = self.launch_of(api, record).await? else {
            tracing::debug!(
                record = record.id().as_str(),
                "no job was launched for this checkout"
            );
            return Ok(());
        };
        let current = api
            .get(&api.path(&launched.path()), &[])
            .await
            .map_err(|e| e.into_error(&format!("reading job {}", launched.id)))?;
        let status = current.get("status").and_then(Json::as_str).unwrap_or("");
        if !matches!(status, "successful" | "failed" | "error" | "canceled") {
            self.cancel(api, &launched).await?;
        }
        let finished = self.wait(api, &launched).await?;
        let mut vms = self.dangling_vms(api, &finished).await;
        if finished.succeeded()
            && let Ok(artifacts) = self.artifacts(api, &finished, "last").await
            && let Ok(fields) = host_fields(&artifacts, &launched, &record.args())
            && let made = HostRecord::from_mapping(fields)
            && let Some(name) = vm_of(&made)
            && !vms.iter().any(|v| v == name)
        {
            vms.push(name.to_owned());
        }
        let args = Self::follow_up_args(record);
        let mut failures = Vec::new();
        for vm in &vms {
            if let Err(e) = self.release_vm(api, vm, args.clone()).await {
                failures.push(format!("{vm}: {}", broker_core::error::chain(&e)));
            }
        }
        self.settle(record.id().as_str());
        if failures.is_empty() {
            Ok(())
        } else {
            Err(self.error(format!(
                "could not release what unfinished checkout job {} made: {}",
                launched.id,
                failures.join("; ")
            )))
        }
    }

    /// `--templates` / `--flavors`: runs the listing workflow and reads its artifacts.
    async fn listing(
        &self,
        api: &Api,
        workflow: &str,
        key: &str,
        inventory: Option<&Value>,
    ) -> Result<Value> {
        let mut args = Mapping::new();
        args.insert("workflow".into(), Value::from(workflow));
        if let Some(inv) = inventory {
            args.insert("tower_inventory".into(), inv.clone());
        }
        let finished = self.run(api, Kind::Workflow, workflow, args).await?;
        let artifacts = self.artifacts(api, &finished, "merge").await?;
        let mut items: Vec<String> = artifacts
            .pointer(&format!("/data_out/{key}"))
            .and_then(Json::as_array)
            .map(|a| a.iter().map(json_text).collect())
            .unwrap_or_default();
        items.sort_unstable_by(|a, b| b.cmp(a));
        Ok(Value::Sequence(
            items.into_iter().map(Value::from).collect(),
        ))
    }

    /// A template's description, default inventory and extra vars.
    async fn describe_template(&self, api: &Api, kind: Kind, name: &str) -> Result<Value> {
        let t = self.template(api, kind, name).await?;
        let inventory = t
            .pointer("/summary_fields/inventory/name")
            .map(json_text)
            .map(Value::from)
            .unwrap_or(Value::Null);
        let mut m = Mapping::new();
        m.insert("name".into(), Value::from(name));
        m.insert(
            "description".into(),
            Value::from(t.get("description").map(json_text).unwrap_or_default()),
        );
        m.insert("inventory".into(), inventory);
        m.insert(
            "extra_vars".into(),
            Value::Mapping(jobs::template_vars(
                t.get("extra_vars").and_then(Json::as_str).unwrap_or(""),
            )),
        );
        Ok(Value::Mapping(m))
    }

    /// Names of the templates of a kind the user may launch.
    async fn template_names(&self, api: &Api, kind: Kind) -> Result<Vec<String>> {
        let path = match kind {
            Kind::Workflow => "workflow_job_templates/",
            Kind::JobTemplate => "job_templates/",
        };
        let all = api
            .get_all(path, &[("order_by", "name".to_owned())], None)
            .await
            .map_err(|e| e.into_error(&format!("listing {}s", kind.label())))?;
        Ok(all
            .iter()
            .filter(|t| {
                t.pointer("/summary_fields/user_capabilities/start")
                    .and_then(Json::as_bool)
                    .unwrap_or(true)
            })
            .filter_map(|t| t.get("name").and_then(Json::as_str).map(str::to_owned))
            .collect())
    }
}

/// AWX jobs, as this provider runs them: templates, inventories and labels resolved, launches, waits,
/// failure reasons, dangling VMs and artifacts (the jobs' data and pure rules are in `jobs`).
impl Tower {
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
        let as_id = broker_core::value::scalar_u64(given);
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
            self.note(record, LaunchNote::Sent);
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
                                "maximum resilient wait time exceeded: AnsibleTower kept failing for {}s while broker waited for job {}; the job may still run, see {}",
                                self.settings.max_resilient_wait.as_secs(),
                                launched.id,
                                launched.ui_url
                            ),
                        )
                        .caused_by(e));
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

/// `base_url` must be an `http` or `https` URL with a host (not the example's placeholder).
fn check_base_url(config: &ProviderConfig, base_url: &str) -> Result<()> {
    let parsed = reqwest::Url::parse(base_url);
    let fine = !broker_core::settings::is_placeholder(&Value::from(base_url))
        && parsed
            .as_ref()
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
    if fine {
        return Ok(());
    }
    Err(config.setting_error(
        "base_url",
        format!(
            "`{base_url}` is not the address of a server; write it as `https://tower.example.com/`"
        ),
    ))
}

/// `base_url` without the user and password written into it (`https://user:pw@host/`), and those.
fn split_login(base_url: &str) -> (String, Option<(String, broker_core::secrecy::SecretString)>) {
    let Ok(mut url) = reqwest::Url::parse(base_url) else {
        return (base_url.to_owned(), None);
    };
    if url.username().is_empty() && url.password().is_none() {
        return (base_url.to_owned(), None);
    }
    let username = percent_decoded(url.username());
    let password = percent_decoded(url.password().unwrap_or(""));
    // Clearing the user information of an http(s) URL cannot fail.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let login = (!username.is_empty() && !password.is_empty())
        .then(|| (username, broker_core::secrecy::SecretString::from(password)));
    (url.to_string(), login)
}

/// `%40` → `@`: the user information of a URL as written.
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The VM a record stands for at AWX: its `name`, else its `hostname`.
fn vm_of(host: &HostRecord) -> Option<&str> {
    host.name().or_else(|| host.hostname())
}

/// Asks what to do with a host a failed workflow left: `c`, `s`, `cA` or `sA`; `None` when nobody
/// can answer (the caller's interaction; the CLI asks on its terminal unless `BROKER_NON_INTERACTIVE`
/// is set).
fn ask_dangling(interaction: &dyn Interaction, vm: &str, reason: &str) -> Option<String> {
    let context = format!("The failed workflow left host `{vm}`.\nFailure reason: {reason}");
    interaction.choose(&Question {
        context: &context,
        prompt: "What would you like to do with this host? Checkin (c), Store (s), Checkin All (cA), Store All (sA) [c/s/cA/sA]: ",
        answers: &["c", "s", "cA", "sA"],
    })
}

#[async_trait::async_trait]
impl Provider for Tower {
    fn name(&self) -> &str {
        NAME
    }

    fn instance(&self) -> Option<&str> {
        self.config.instance()
    }

    async fn checkout(&self, ctx: &CheckoutContext<'_>) -> Result<Mapping> {
        self.note(ctx.record_id().as_str(), LaunchNote::NotLaunched);
        let api = self.api().await?;
        let mut args = ctx.args().clone();
        let workflow = args
            .get("workflow")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| Error::user("no workflow specified; give `--workflow NAME`"))?;
        let strategy = args
            .get("artifacts")
            .and_then(Value::as_str)
            .unwrap_or("last")
            .to_owned();
        args.insert(
            "_broker_record_id".into(),
            Value::from(ctx.record_id().as_str()),
        );
        // The lease travels with the job, for workflows that set the VM's own expiry from it.
        if let Some(at) = ctx.expire_time() {
            args.insert(EXPIRE_TIME_VAR.into(), Value::from(at));
        }
        let finished = self
            .run_handling_dangling(api, Kind::Workflow, &workflow, args, Some(ctx))
            .await?;
        let artifacts = self.artifacts(api, &finished, &strategy).await?;
        let fields = host_fields(&artifacts, &finished.launched, ctx.args())?;
        // The record becomes `ready`: its check-in goes by name from now on, not through this note.
        lock(&self.launches).remove(ctx.record_id().as_str());
        Ok(fields)
    }

    async fn checkin(&self, host: &HostRecord) -> Result<()> {
        if host.state() == HostState::Pending && self.nothing_to_clean(host) {
            return Ok(());
        }
        let api = self.api().await?;
        if host.state() == HostState::Pending {
            return self.checkin_pending(api, host).await;
        }
        let name = self.vm_name(host, "`source_vm` to release")?;
        let args = Self::follow_up_args(host);
        self.release_vm(api, &name, args).await
    }

    async fn extend(&self, host: &HostRecord, args: &Mapping) -> Result<()> {
        let api = self.api().await?;
        let name = self.vm_name(host, "`target_vm` to extend")?;
        let mut extra = Mapping::new();
        extra.insert(
            "workflow".into(),
            Value::from(self.settings.extend_workflow.as_str()),
        );
        extra.insert("target_vm".into(), Value::from(name.as_str()));
        let expire = args
            .get("new_expire_time")
            .cloned()
            .filter(|v| !v.is_null())
            .unwrap_or_else(|| Value::from(self.settings.new_expire_time.as_str()));
        extra.insert("new_expire_time".into(), expire);
        if let Some(labels) = args.get("provider_labels").cloned() {
            extra.insert("provider_labels".into(), labels);
        }
        if let Some(inv) = Self::follow_up_args(host).get("inventory").cloned() {
            extra.insert("inventory".into(), inv);
        }
        if let Some(origin) = host.args().get("_broker_origin").cloned() {
            extra.insert("_broker_origin".into(), origin);
        }
        let workflow = self.settings.extend_workflow.clone();
        self.run(api, Kind::Workflow, &workflow, extra).await?;
        tracing::info!("extended `{name}` through `{workflow}`");
        Ok(())
    }

    async fn execute(&self, args: &Mapping) -> Result<Value> {
        let api = self.api().await?;
        let (kind, name) = if let Some(w) = args.get("workflow").and_then(Value::as_str) {
            (Kind::Workflow, w.to_owned())
        } else if let Some(j) = args.get("job_template").and_then(Value::as_str) {
            (Kind::JobTemplate, j.to_owned())
        } else {
            return Err(Error::user(
                "no workflow or job template specified; give `--workflow NAME` or `--job-template NAME`",
            ));
        };
        let strategy = args
            .get("artifacts")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let finished = self
            .run_handling_dangling(api, kind, &name, args.clone(), None)
            .await?;
        if let Some(strategy) = strategy {
            return Ok(to_yaml(&self.artifacts(api, &finished, &strategy).await?));
        }
        let job = &finished.job;
        let mut out = serde_json::Map::new();
        for key in ["id", "name", "type", "status", "artifacts", "result_stdout"] {
            if let Some(v) = job.get(key) {
                out.insert(key.into(), v.clone());
            }
        }
        out.insert("url".into(), json!(finished.launched.api_url));
        out.insert("ui_url".into(), json!(finished.launched.ui_url));
        Ok(to_yaml(&Json::Object(out)))
    }

    async fn help(&self, query: &Mapping) -> Result<Value> {
        let api = self.api().await?;
        let text = |key: &str| query.get(key).and_then(Value::as_str).map(str::to_owned);
        let flag = |key: &str| query.get(key).is_some_and(|v| v.as_bool() != Some(false));
        let limit = query
            .get("results_limit")
            .and_then(broker_core::value::scalar_u64)
            .map(|n| n as usize)
            .unwrap_or(self.settings.results_limit);
        let inventory = query
            .get("tower_inventory")
            .filter(|v| v.as_str().is_some());
        let list: Vec<String> = if let Some(name) = text("workflow") {
            return self.describe_template(api, Kind::Workflow, &name).await;
        } else if let Some(name) = text("job_template") {
            return self.describe_template(api, Kind::JobTemplate, &name).await;
        } else if let Some(name) = text("inventory") {
            let (id, name) = self.resolve_inventory(api, &Value::from(name)).await?;
            let inv = api
                .get(&format!("inventories/{id}/"), &[])
                .await
                .map_err(|e| e.into_error(&format!("reading inventory `{name}`")))?;
            let mut m = Mapping::new();
            for key in ["id", "name", "description", "kind", "total_hosts"] {
                if let Some(v) = inv.get(key) {
                    m.insert(Value::from(key), to_yaml(v));
                }
            }
            return Ok(Value::Mapping(m));
        } else if flag("workflows") {
            self.template_names(api, Kind::Workflow).await?
        } else if flag("job_templates") {
            self.template_names(api, Kind::JobTemplate).await?
        } else if flag("inventories") {
            api.get_all("inventories/", &[("order_by", "name".to_owned())], None)
                .await
                .map_err(|e| e.into_error("listing inventories"))?
                .iter()
                .filter(|i| {
                    i.get("kind")
                        .and_then(Json::as_str)
                        .unwrap_or("")
                        .is_empty()
                })
                .filter_map(|i| i.get("name").and_then(Json::as_str).map(str::to_owned))
                .collect()
        } else if flag("templates") {
            return self.filtered(
                self.listing(api, "list-templates", "list_templates", inventory)
                    .await?,
                query,
                limit,
            );
        } else if flag("flavors") {
            return self.filtered(
                self.listing(api, "list-flavors", "list_flavors", inventory)
                    .await?,
                query,
                limit,
            );
        } else {
            return Err(Error::usage(
                "ask AnsibleTower something: --workflows, --workflow NAME, --job-templates, --job-template NAME, \
                 --inventories, --inventory NAME, --templates or --flavors",
            ));
        };
        self.filtered(
            Value::Sequence(list.into_iter().map(Value::from).collect()),
            query,
            limit,
        )
    }

    async fn inventory(&self, filter: Option<&str>) -> Result<Vec<HostRecord>> {
        let api = self.api().await?;
        let user = filter.unwrap_or(api.username()).to_owned();
        let inventories = api
            .get_all("inventories/", &[], None)
            .await
            .map_err(|e| e.into_error("listing inventories"))?;
        let mut hosts = Vec::new();
        for inv in inventories.iter().filter(|i| {
            user == "@ll"
                || i.get("name")
                    .and_then(Json::as_str)
                    .is_some_and(|n| n.contains(user.as_str()))
        }) {
            let name = inv.get("name").map(json_text).unwrap_or_default();
            let path = related(inv, "hosts", || {
                format!(
                    "inventories/{}/hosts/",
                    inv.get("id").map(json_text).unwrap_or_default()
                )
            });
            let found = api
                .get_all(&path, &[], None)
                .await
                .map_err(|e| e.into_error(&format!("listing the hosts of inventory `{name}`")))?;
            hosts.extend(found.into_iter().map(|h| (h, name.clone())));
        }
        tracing::info!(hosts = hosts.len(), user = %user, "compiling AnsibleTower host information");
        let records = futures_util::stream::iter(hosts)
            .map(|(host, inv)| async move {
                HostRecord::from_mapping(self.compile_host(api, &host, Some(inv)).await)
            })
            .buffered(8)
            .collect::<Vec<_>>()
            .await;
        Ok(records)
    }

    async fn connect(&self, host: &HostRecord) -> Result<Box<dyn broker_core::Session>> {
        crate::ssh_session(self, host, &self.config).await
    }
}

impl Tower {
    /// Applies `results_filter` and the limit to a discovery list.
    fn filtered(&self, value: Value, query: &Mapping, limit: usize) -> Result<Value> {
        let Value::Sequence(mut items) = value else {
            return Ok(value);
        };
        if let Some(filter) = query.get("results_filter").and_then(Value::as_str) {
            let keep = broker_core::filter::Filter::parse(filter, "res")?.select(&items);
            items = keep
                .into_iter()
                .filter_map(|i| items.get(i).cloned())
                .collect();
        }
        items.truncate(limit);
        Ok(Value::Sequence(items))
    }
}
