//! `Foreman`: hosts built by Foreman from a hostgroup, or from an image on a compute resource.
//!
//! A checkout creates the host (`POST /api/hosts`: the hostgroup, `build: true`, started, in the
//! configured organisation and location — each found by title or name; with `image` and
//! `computeresource`, image-based provisioning) and waits until Foreman says it is built
//! (`build_status` 0). A build that fails (`Installation error`, an expired token) or outlasts
//! `build_timeout` is an error naming Foreman's build state, and the host is deleted. Check-in
//! deletes the host (a host already gone is checked in). Commands run over SSH when the host
//! answers there, else through Foreman remote execution (see [`rex`]).
//!
//! # Settings (`Foreman:` in `broker_settings.yaml`, per instance under `instances:`)
//! | key | default | |
//! |---|---|---|
//! | `foreman_url` | required | `https://foreman.example.com` |
//! | `foreman_username`, `foreman_password` | required | Basic auth; the password is a secret |
//! | `organization`, `location` | required | title or name |
//! | `hostgroup` | — | the hostgroup when `--hostgroup` is not given |
//! | `verify` | `true` | `false` skips TLS checks; a path adds a PEM CA bundle |
//! | `name_prefix` | `broker` | hosts are named `PREFIX-XXXXXXXX` (8 hex digits of the record id) |
//! | `build_timeout` | 3600 | seconds a build may take |
//! | `poll_interval` | 5 | seconds between polls of a build or a job (fractions allowed) |
//! | `max_retries` | 5 | times a request that got no answer or a 5xx is tried again, waiting `poll_interval`, then twice as long each time |
//!
//! # No host is lost
//! The host's name is chosen before anything is sent and written into the intent record, so a
//! record left `pending` by a crash is checked in by finding the host by that name. A create whose
//! answer is lost (a 502 from the proxy) is looked up by name before it is tried again, so it is
//! never made twice. Sync lists every page and keeps only hosts named as broker names them.

mod api;
mod rex;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use broker_core::provider::HelpOption;
use broker_core::secrecy::SecretString;
use broker_core::settings::{ProviderSettings, field};
use broker_core::sync::lock;
use broker_core::{
    CheckoutContext, Error, HostRecord, HostState, Mapping, Provider, ProviderConfig, ProviderKind,
    Result, Value,
};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use api::{Api, ConnectOptions, Retry};

/// The provider's name, as the inventory records it.
pub const NAME: &str = "Foreman";

/// The registration of the Foreman provider.
pub const KIND: ProviderKind = ProviderKind::new(
    NAME,
    "Foreman hosts, built from a hostgroup or an image",
    build,
)
.checkout_actions(&["hostgroup"])
.settings::<ForemanSection>()
.arguments(&["image", "computeresource"])
.help_options(&[
    HelpOption {
        name: "hostgroups",
        takes_value: false,
        help: "Hostgroups you can build hosts from",
    },
    HelpOption {
        name: "hostgroup",
        takes_value: true,
        help: "A hostgroup's description, operating system, domain and subnets",
    },
]);

fn build(config: ProviderConfig) -> Result<Arc<dyn Provider>> {
    Ok(Arc::new(Foreman::new(config)?))
}

/// The `Foreman` settings section of one instance, as written (see the module documentation).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ForemanSection {
    #[serde(deserialize_with = "field::text")]
    foreman_url: Option<String>,
    #[serde(deserialize_with = "field::text")]
    foreman_username: Option<String>,
    #[serde(deserialize_with = "field::secret")]
    foreman_password: Option<SecretString>,
    #[serde(deserialize_with = "field::text")]
    organization: Option<String>,
    #[serde(deserialize_with = "field::text")]
    location: Option<String>,
    #[serde(deserialize_with = "field::text")]
    hostgroup: Option<String>,
    #[serde(deserialize_with = "crate::http::verify")]
    verify: Option<crate::http::Verify>,
    #[serde(deserialize_with = "field::text")]
    name_prefix: Option<String>,
    #[serde(deserialize_with = "field::seconds")]
    build_timeout: Option<Duration>,
    #[serde(deserialize_with = "field::seconds")]
    poll_interval: Option<Duration>,
    #[serde(deserialize_with = "field::whole")]
    max_retries: Option<u64>,
}

impl ProviderSettings for ForemanSection {}

/// What the provider uses of its settings, defaults filled in.
#[derive(Debug, Clone)]
struct Settings {
    organization: String,
    location: String,
    hostgroup: Option<String>,
    prefix: String,
    build_timeout: Duration,
    poll_interval: Duration,
}

impl ForemanSection {
    fn required(&self, config: &ProviderConfig, key: &str, value: Option<&str>) -> Result<String> {
        match value.filter(|v| !v.is_empty()) {
            Some(v) if broker_core::settings::is_placeholder(&Value::from(v)) => {
                Err(config
                    .setting_error(key, "is still the example's placeholder; set a real value"))
            }
            Some(v) => Ok(v.to_owned()),
            None => Err(config.missing(key)),
        }
    }

    fn resolve(&self, config: &ProviderConfig) -> Result<(Settings, ConnectOptions)> {
        use broker_core::secrecy::ExposeSecret;
        let url = self.required(config, "foreman_url", self.foreman_url.as_deref())?;
        let username =
            self.required(config, "foreman_username", self.foreman_username.as_deref())?;
        let password = self
            .foreman_password
            .clone()
            .filter(|p| !p.expose_secret().is_empty())
            .ok_or_else(|| config.missing("foreman_password"))?;
        let poll_interval = self
            .poll_interval
            .unwrap_or(Duration::from_secs(5))
            .max(Duration::from_millis(10));
        let settings = Settings {
            organization: self.required(config, "organization", self.organization.as_deref())?,
            location: self.required(config, "location", self.location.as_deref())?,
            hostgroup: self.hostgroup.clone().filter(|h| !h.is_empty()),
            prefix: self
                .name_prefix
                .clone()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "broker".to_owned()),
            build_timeout: self.build_timeout.unwrap_or(Duration::from_secs(3600)),
            poll_interval,
        };
        let connect = ConnectOptions {
            url: url.trim_end_matches('/').to_owned(),
            username,
            password,
            verify: crate::http::verify_in(self.verify.as_ref(), config.directory()),
            retry: Retry {
                attempts: self.max_retries.map_or(5, |n| n.min(20) as u32),
                first_delay: poll_interval,
            },
        };
        Ok((settings, connect))
    }
}

/// The provider for one configured instance.
pub(crate) struct Foreman {
    config: ProviderConfig,
    settings: Settings,
    connect: ConnectOptions,
    api: tokio::sync::OnceCell<Api>,
    /// The organisation's and the location's ids, found on first use.
    scope: tokio::sync::OnceCell<(u64, u64)>,
    /// The intent records of this process's checkouts that have sent no create yet: their check-in
    /// has nothing to look for.
    nothing_sent: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Foreman {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(NAME)
            .field("instance", &self.config.instance())
            .field("foreman_url", &self.connect.url)
            .field("foreman_username", &self.connect.username)
            .finish_non_exhaustive()
    }
}

impl Foreman {
    fn new(config: ProviderConfig) -> Result<Foreman> {
        let section = ForemanSection::from_section(&config)?;
        let (settings, connect) = section.resolve(&config)?;
        Ok(Foreman {
            config,
            settings,
            connect,
            api: tokio::sync::OnceCell::new(),
            scope: tokio::sync::OnceCell::new(),
            nothing_sent: Mutex::new(HashSet::new()),
        })
    }

    async fn api(&self) -> Result<&Api> {
        self.api
            .get_or_try_init(|| async { Api::new(&self.connect) })
            .await
    }

    fn error(&self, message: impl Into<String>) -> Error {
        let e = Error::provider(NAME, message);
        match self.config.instance() {
            Some(i) => e.with_instance(i),
            None => e,
        }
    }

    /// The name a checkout gives its host: `PREFIX-` and 8 hex digits of the record id.
    fn planned_name(&self, ctx: &CheckoutContext<'_>) -> String {
        let hex: String = ctx
            .record_id()
            .as_str()
            .chars()
            .filter(char::is_ascii_hexdigit)
            .take(8)
            .collect();
        format!("{}-{hex}", self.settings.prefix)
    }

    /// The organisation's and the location's ids.
    async fn scope(&self, api: &Api) -> Result<(u64, u64)> {
        let found = self
            .scope
            .get_or_try_init(|| async {
                let organization = self
                    .named(api, "organizations", &self.settings.organization)
                    .await
                    .map_err(|e| self.not_found(e, "organization"))?;
                let location = self
                    .named(api, "locations", &self.settings.location)
                    .await
                    .map_err(|e| self.not_found(e, "location"))?;
                Ok::<_, Error>((id_of(&organization), id_of(&location)))
            })
            .await?;
        Ok(*found)
    }

    fn not_found(&self, e: Error, key: &str) -> Error {
        match e {
            Error::User { message } => self.config.setting_error(key, message),
            other => other,
        }
    }

    /// The object of the list `resource` whose title or name is `name`.
    async fn named(&self, api: &Api, resource: &str, name: &str) -> Result<Json> {
        let items = api
            .all(&[resource], None)
            .await
            .map_err(|e| e.into_error(&format!("listing {resource}")))?;
        let text = |v: &Json, key: &str| v[key].as_str().unwrap_or_default().to_owned();
        if let Some(found) = items
            .iter()
            .find(|i| text(i, "title") == name || text(i, "name") == name)
        {
            return Ok(found.clone());
        }
        let known: Vec<String> = items
            .iter()
            .map(|i| match text(i, "title") {
                t if t.is_empty() => text(i, "name"),
                t => t,
            })
            .collect();
        Err(Error::user(format!(
            "Foreman has no {} `{name}` (by title or name); it has: {}",
            resource.trim_end_matches('s'),
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )))
    }

    /// The body of the host to create, as `POST /api/hosts` takes it.
    async fn host_body(&self, api: &Api, ctx: &CheckoutContext<'_>, name: &str) -> Result<Json> {
        let hostgroup = ctx
            .arg("hostgroup")
            .or(self.settings.hostgroup.as_deref())
            .ok_or_else(|| {
                Error::user(
                    "no hostgroup given: give `--hostgroup NAME`, or set `hostgroup` in the Foreman settings",
                )
            })?;
        let (organization, location) = self.scope(api).await?;
        let hostgroup = self.named(api, "hostgroups", hostgroup).await?;
        let mut host = serde_json::Map::new();
        for (key, value) in ctx.args() {
            let Some(key) = key.as_str() else { continue };
            let ours = ["hostgroup", "image", "computeresource", "provider_labels"];
            if !key.starts_with('_') && !ours.contains(&key) {
                host.insert(key.to_owned(), broker_core::value::to_json(value));
            }
        }
        host.insert("name".into(), json!(name));
        host.insert("hostgroup_id".into(), json!(id_of(&hostgroup)));
        host.insert("build".into(), json!(true));
        host.insert("organization_id".into(), json!(organization));
        host.insert("location_id".into(), json!(location));
        host.insert("compute_attributes".into(), json!({"start": "1"}));
        host.entry("comment")
            .or_insert_with(|| json!(format!("made by broker (record {})", ctx.record_id())));
        match (ctx.arg("image"), ctx.arg("computeresource")) {
            (Some(image), Some(resource)) => {
                let resource = self.named(api, "compute_resources", resource).await?;
                let uuid = self.image_uuid(api, &resource, image).await?;
                host.insert("compute_resource_id".into(), json!(id_of(&resource)));
                host.insert(
                    "compute_attributes".into(),
                    json!({"start": "1", "image_id": uuid}),
                );
                host.insert("provision_method".into(), json!("image"));
            }
            (None, None) => {}
            _ => {
                return Err(Error::usage(
                    "image-based provisioning needs both `--image NAME` and `--computeresource NAME`",
                ));
            }
        }
        Ok(json!({"organization_id": organization, "location_id": location, "host": host}))
    }

    /// The uuid of the image `name` on the compute resource `resource`.
    async fn image_uuid(&self, api: &Api, resource: &Json, name: &str) -> Result<String> {
        let id = id_of(resource).to_string();
        let images = api
            .all(
                &["compute_resources", &id, "images"],
                Some(&format!("name = \"{name}\"")),
            )
            .await
            .map_err(|e| e.into_error("listing the compute resource's images"))?;
        images
            .iter()
            .find(|i| i["name"].as_str() == Some(name))
            .and_then(|i| i["uuid"].as_str())
            .map(str::to_owned)
            .ok_or_else(|| {
                Error::user(format!(
                    "compute resource `{}` has no image `{name}`",
                    resource["name"].as_str().unwrap_or_default()
                ))
            })
    }

    /// Creates the host `name`. A create whose answer is lost is looked up by name before it is
    /// tried again, so that it is never made twice.
    async fn create(&self, api: &Api, record: &str, name: &str, body: &Json) -> Result<Json> {
        lock(&self.nothing_sent).remove(record);
        let retry = api.retry();
        let mut tried = 0;
        loop {
            match api.post(&["hosts"], body).await {
                Ok(created) => return Ok(created),
                Err(e) if e.transient() && tried < retry.attempts => {
                    tracing::info!(
                        "Foreman: creating `{name}`: {e}; looking for it, then trying again"
                    );
                    tokio::time::sleep(retry.delay(tried)).await;
                    tried += 1;
                    if let Some(made) = self.hosts_named(api, name).await?.into_iter().next() {
                        return Ok(made);
                    }
                }
                Err(e) => return Err(e.into_error(&format!("creating host `{name}`"))),
            }
        }
    }

    /// The hosts called `name`, or `name` and a domain.
    async fn hosts_named(&self, api: &Api, name: &str) -> Result<Vec<Json>> {
        let found = api
            .all(&["hosts"], Some(&format!("name ~ \"{name}\"")))
            .await
            .map_err(|e| e.into_error(&format!("looking for host `{name}`")))?;
        let dotted = format!("{name}.");
        Ok(found
            .into_iter()
            .filter(|h| {
                h["name"]
                    .as_str()
                    .is_some_and(|n| n == name || n.starts_with(&dotted))
            })
            .collect())
    }

    /// Waits until the host is built; a failed build, or one that outlasts `build_timeout`, is an
    /// error naming the build state, and the host is deleted.
    async fn wait_built(&self, api: &Api, created: &Json) -> Result<Json> {
        let id = id_of(created).to_string();
        let name = created["name"].as_str().unwrap_or(&id).to_owned();
        let deadline = Instant::now() + self.settings.build_timeout;
        let mut host = created.clone();
        loop {
            let status = host["build_status"].as_u64();
            let label = host["build_status_label"].as_str().unwrap_or("unknown");
            match status {
                Some(0) => return Ok(host),
                Some(1) if Instant::now() < deadline => {}
                Some(1) => {
                    let why = format!(
                        "host `{name}` is still `{label}` (build_status 1) after {} s (`build_timeout`)",
                        self.settings.build_timeout.as_secs()
                    );
                    return Err(self.given_up(api, &name, why).await);
                }
                _ => {
                    let why = format!(
                        "host `{name}` did not build: Foreman says `{label}` (build_status {})",
                        status.map_or("missing".to_owned(), |s| s.to_string())
                    );
                    return Err(self.given_up(api, &name, why).await);
                }
            }
            tokio::time::sleep(self.settings.poll_interval).await;
            host = match api.get(&["hosts", &id]).await {
                Ok(host) => host,
                Err(e) if e.transient() && Instant::now() < deadline => continue,
                Err(e) => return Err(e.into_error(&format!("reading host `{name}`"))),
            };
        }
    }

    /// The error of a build given up on, once the host is deleted (or saying it could not be).
    async fn given_up(&self, api: &Api, name: &str, why: String) -> Error {
        match self.delete_host(api, name).await {
            Ok(()) => self.error(format!("{why}; broker deleted it")),
            Err(e) => self
                .error(format!(
                    "{why}; deleting it failed too: check it in later (`broker checkin`), or delete it in Foreman"
                ))
                .caused_by(e),
        }
    }

    /// Deletes the host `name`; one already gone is fine.
    async fn delete_host(&self, api: &Api, name: &str) -> Result<()> {
        match api.delete(&["hosts", name]).await {
            Ok(_) => {
                tracing::info!("deleted Foreman host `{name}`");
                Ok(())
            }
            Err(e) if e.status() == Some(404) => {
                tracing::info!("Foreman host `{name}` is already gone");
                Ok(())
            }
            Err(e) => Err(e.into_error(&format!("deleting host `{name}`"))),
        }
    }

    /// The record of a host Foreman lists.
    fn record(&self, host: &Json) -> Mapping {
        let mut m = host_fields(host);
        m.insert("_broker_provider".into(), Value::from(NAME));
        if let Some(i) = self.config.instance() {
            m.insert("_broker_provider_instance".into(), Value::from(i));
        }
        let mut args = Mapping::new();
        if let Some(group) = host["hostgroup_title"].as_str() {
            args.insert("hostgroup".into(), Value::from(group));
        }
        m.insert("_broker_args".into(), Value::Mapping(args));
        m
    }

    /// `--hostgroup NAME`: what Foreman says of it.
    async fn describe_hostgroup(&self, api: &Api, name: &str) -> Result<Value> {
        let found = self.named(api, "hostgroups", name).await?;
        let id = id_of(&found).to_string();
        let group = api
            .get(&["hostgroups", &id])
            .await
            .map_err(|e| e.into_error(&format!("reading hostgroup `{name}`")))?;
        let mut m = Mapping::new();
        m.insert("name".into(), Value::from(name));
        for (label, key) in [
            ("Description", "description"),
            ("Operating System", "operatingsystem_name"),
            ("Domain", "domain_name"),
            ("Subnet", "subnet_name"),
            ("Subnet6", "subnet6_name"),
        ] {
            if let Some(v) = group[key].as_str().filter(|v| !v.is_empty()) {
                m.insert(label.into(), Value::from(v));
            }
        }
        Ok(Value::Mapping(m))
    }
}

/// An object's `id`.
fn id_of(v: &Json) -> u64 {
    v["id"].as_u64().unwrap_or_default()
}

/// Whether `name` is one broker gives: `PREFIX-`, 8 hex digits, then the end or a domain.
fn made_by_broker(name: &str, prefix: &str) -> bool {
    let Some(rest) = name.strip_prefix(prefix).and_then(|r| r.strip_prefix('-')) else {
        return false;
    };
    let (tag, domain) = rest.split_at(rest.find('.').unwrap_or(rest.len()));
    tag.len() == 8
        && tag.chars().all(|c| c.is_ascii_hexdigit())
        && (domain.is_empty() || domain.len() > 1)
}

/// A host's fields as the inventory records them.
fn host_fields(host: &Json) -> Mapping {
    let mut m = Mapping::new();
    let name = host["name"].as_str().unwrap_or_default();
    m.insert("name".into(), Value::from(name));
    m.insert("hostname".into(), Value::from(name));
    for (field, key) in [
        ("ip", "ip"),
        ("hostgroup", "hostgroup_title"),
        ("os_distribution", "operatingsystem_name"),
    ] {
        if let Some(v) = host[key].as_str().filter(|v| !v.is_empty()) {
            m.insert(field.into(), Value::from(v));
        }
    }
    if let Some(id) = host["id"].as_u64() {
        m.insert("foreman_id".into(), Value::from(id));
    }
    m
}

/// Where a host is tried over SSH, in order: its name (as upstream; Foreman's hosts are named in DNS)
/// when it resolves from here — SSH would otherwise keep trying a name that cannot resolve for
/// `host_connection_timeout` — then the address Foreman gave it.
#[cfg(feature = "ssh")]
async fn ssh_addresses(host: &HostRecord) -> Vec<HostRecord> {
    let mut tries = Vec::new();
    if let Some(name) = host.hostname()
        && tokio::net::lookup_host((name, 22)).await.is_ok()
    {
        tries.push(host.clone());
    }
    if let Some(ip) = host.ip().filter(|ip| host.hostname() != Some(*ip)) {
        let mut by_ip = host.clone();
        by_ip.set("hostname", ip);
        tries.push(by_ip);
    }
    tries
}

#[async_trait::async_trait]
impl Provider for Foreman {
    fn name(&self) -> &str {
        NAME
    }

    fn instance(&self) -> Option<&str> {
        self.config.instance()
    }

    fn planned_fields(&self, ctx: &CheckoutContext<'_>) -> Mapping {
        let mut fields = Mapping::new();
        fields.insert("name".into(), self.planned_name(ctx).into());
        fields
    }

    async fn checkout(&self, ctx: &CheckoutContext<'_>) -> Result<Mapping> {
        let name = self.planned_name(ctx);
        let record = ctx.record_id().as_str();
        lock(&self.nothing_sent).insert(record.to_owned());
        let api = self.api().await?;
        let body = self.host_body(api, ctx, &name).await?;
        let created = self.create(api, record, &name, &body).await?;
        let built = self.wait_built(api, &created).await?;
        Ok(host_fields(&built))
    }

    async fn checkin(&self, host: &HostRecord) -> Result<()> {
        if lock(&self.nothing_sent).remove(host.id().as_str()) {
            return Ok(());
        }
        let name = host
            .name()
            .or_else(|| host.hostname())
            .ok_or_else(|| self.error("the record has no name or hostname to delete"))?
            .to_owned();
        let api = self.api().await?;
        if host.state() != HostState::Pending {
            return self.delete_host(api, &name).await;
        }
        // The intent of a checkout that may not have finished: whatever it made has its name.
        for made in self.hosts_named(api, &name).await? {
            let made = made["name"].as_str().unwrap_or(&name).to_owned();
            self.delete_host(api, &made).await?;
        }
        Ok(())
    }

    async fn extend(&self, host: &HostRecord, args: &Mapping) -> Result<()> {
        let _ = args;
        tracing::info!(
            "Foreman hosts have no lease to extend; `{}` is unchanged",
            host.display_name()
        );
        Ok(())
    }

    async fn help(&self, query: &Mapping) -> Result<Value> {
        let api = self.api().await?;
        if let Some(name) = query.get("hostgroup").and_then(Value::as_str) {
            return self.describe_hostgroup(api, name).await;
        }
        let asked = query
            .get("hostgroups")
            .is_some_and(|v| v.as_bool() != Some(false));
        if !asked {
            return Err(Error::usage(
                "ask Foreman something: --hostgroups, or --hostgroup NAME",
            ));
        }
        let groups = api
            .all(&["hostgroups"], None)
            .await
            .map_err(|e| e.into_error("listing hostgroups"))?;
        let mut titles: Vec<Value> = groups
            .iter()
            .filter_map(|g| g["title"].as_str().map(Value::from))
            .collect();
        if let Some(filter) = query.get("results_filter").and_then(Value::as_str) {
            let keep = broker_core::filter::Filter::parse(filter, "res")?.select(&titles);
            titles = keep
                .into_iter()
                .filter_map(|i| titles.get(i).cloned())
                .collect();
        }
        Ok(Value::Sequence(titles))
    }

    async fn inventory(&self, filter: Option<&str>) -> Result<Vec<HostRecord>> {
        let prefix = filter.unwrap_or(&self.settings.prefix).to_owned();
        let api = self.api().await?;
        let hosts = api
            .all(&["hosts"], Some(&format!("name ~ \"{prefix}-\"")))
            .await
            .map_err(|e| e.into_error("listing hosts"))?;
        Ok(hosts
            .iter()
            .filter(|h| {
                h["name"]
                    .as_str()
                    .is_some_and(|n| made_by_broker(n, &prefix))
            })
            .map(|h| HostRecord::from_mapping(self.record(h)))
            .collect())
    }

    async fn connect(&self, host: &HostRecord) -> Result<Box<dyn broker_core::Session>> {
        let name = host
            .name()
            .or_else(|| host.hostname())
            .ok_or_else(|| self.error("the record has no name to run commands on"))?;
        let api = self.api().await?;
        // A host deleted at Foreman may have left its address to another machine: commands go
        // only to a host Foreman still has.
        if self.hosts_named(api, name).await?.is_empty() {
            return Err(Error::host(
                host.display_name(),
                format!(
                    "Foreman has no host `{name}` any more; `broker checkin {name}` drops its record"
                ),
            ));
        }
        #[cfg(feature = "ssh")]
        for address in ssh_addresses(host).await {
            match crate::ssh::connect_host(&address, &self.config).await {
                Ok(session) => return Ok(session),
                Err(e) => tracing::info!(
                    "{} is not reachable over SSH at {} ({e})",
                    host.display_name(),
                    address.hostname().unwrap_or_default()
                ),
            }
        }
        tracing::info!(
            "running commands on {} through Foreman remote execution",
            host.display_name()
        );
        let (organization, location) = self.scope(api).await?;
        Ok(Box::new(rex::RexSession::new(
            api.clone(),
            name,
            (organization, location),
            self.settings.poll_interval,
        )))
    }
}
