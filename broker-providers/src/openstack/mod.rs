//! `OpenStack`: servers that Nova makes from a Glance image on a Neutron network, logged in to
//! through Keystone v3 — the OpenStack APIs spoken directly over HTTP, as upstream's openstacksdk
//! speaks them.
//!
//! A checkout takes its image, flavor, network and key pair from a template (`--ostack-template`,
//! the arguments over it), else from the arguments over the `default_*` settings; what is missing of
//! image, flavor and network is one user error naming all of it. Each is resolved by id, then by
//! exact name (an image also by part of its name), the three at once, and every one not found is
//! named in one user error. The server is created, polled with a doubling pause until `ACTIVE`
//! (within `server_timeout`), and recorded with `hostname` (its floating address, else its first,
//! else its name), `instance_id` and `name`. A build that ends in `ERROR` is a provider error with
//! Nova's fault message, a build that times out a timeout; either way the server is deleted first.
//! Check-in deletes the server by `instance_id` (else `server_id`, `id`, the recorded argument, the
//! record id, the name, the address, as upstream looks); a server already gone is checked in.
//! Hosts are reached over SSH (feature `ssh`).
//!
//! # Settings (`OpenStack:` in `broker_settings.yaml`, per instance under `instances:`)
//! | key | default | |
//! |---|---|---|
//! | `cloud` | — | a cloud of `clouds.yaml` (`$OS_CLIENT_CONFIG_FILE`, `./`, the broker directory, `~/.config/openstack/`, `/etc/openstack/`; `secure.yaml` beside it merged over it) |
//! | `auth_url` | — | Keystone, `https://keystone.example.com:5000/v3` |
//! | `application_credential_id`, `application_credential_secret` | — | an application credential (or `application_credential_name` with `username`) |
//! | `username`, `password`, `project_name` (or `project_id`) | — | a password login |
//! | `user_domain_name`, `project_domain_name` | `Default` | (or `user_domain_id`, `project_domain_id`) |
//! | `identity_api_version` | `3` | Keystone v3 only |
//! | `region_name`, `interface` | any, `public` | which endpoints of the catalogue |
//! | `server_timeout` | 600 | seconds a build may take |
//! | `server_poll_interval` | 1 | seconds before the first poll of a build, doubling to 30 |
//! | `templates` | — | `{name: {image, flavor, network, key_name}}` |
//! | `default_image`, `default_flavor`, `default_network`, `default_key_name` | — | for checkouts without a template |
//!
//! # No host is lost
//! Every server carries the id of broker's intent record in its metadata (`broker_record_id`), so a
//! check-in of a record still `pending` after a crash finds and deletes what its checkout made,
//! and a sync (`broker inventory --sync OpenStack`) lists the servers broker made for this user —
//! never other servers of the project, nor other users' — with their record id, lease and
//! arguments. A create whose answer is lost is looked for by that id before it is sent again.
//!
//! # Files
//! `mod.rs` is the provider: the checkout's steps, check-in, sync and discovery; `settings.rs`
//! reads the section and `clouds.yaml`; `servers.rs` holds the pure rules over Nova's servers;
//! `api.rs` is the HTTP client (Keystone login, catalogue, re-login, retries).

mod api;
mod servers;
mod settings;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use broker_core::provider::{Arguments, HelpOption, Operation};
use broker_core::settings::ProviderSettings;
use broker_core::sync::lock;
use broker_core::value::scalar_text;
use broker_core::{
    CheckoutContext, Error, HostRecord, HostState, Mapping, Provider, ProviderConfig, ProviderKind,
    Result, Value,
};
use serde_json::{Value as Json, json};

use api::{ApiError, Cloud, Service};
use servers::{is_uuid, text};
use settings::{OpenStackSection, OpenStackSettings, Template};

/// The provider's name, as the inventory records it.
pub const NAME: &str = "OpenStack";

/// The longest pause between two polls of a build.
const MAX_PAUSE: Duration = Duration::from_secs(30);

/// How many times a create that failed in passing is sent (after looking for what it made).
const CREATE_TRIES: u32 = 3;

/// The registration of the OpenStack provider.
pub const KIND: ProviderKind = ProviderKind::new(
    NAME,
    "OpenStack servers (Keystone v3, Nova, Glance, Neutron)",
    build,
)
.checkout_actions(&["ostack_template", "ostack_image"])
.settings::<OpenStackSection>()
.arguments(&["ostack_flavor", "ostack_network", "ostack_key_name"])
.takes(
    Operation::Checkout,
    Arguments::Only(&["ostack_flavor", "ostack_network", "ostack_key_name", "name"]),
)
.help_options(&[
    HelpOption {
        name: "images",
        takes_value: false,
        help: "Active images (name and id)",
    },
    HelpOption {
        name: "flavors",
        takes_value: false,
        help: "Flavors (name and id)",
    },
    HelpOption {
        name: "networks",
        takes_value: false,
        help: "Networks (name and id)",
    },
    HelpOption {
        name: "templates",
        takes_value: false,
        help: "The templates of the settings",
    },
]);

fn build(config: ProviderConfig) -> Result<std::sync::Arc<dyn Provider>> {
    Ok(std::sync::Arc::new(OpenStack::new(config)?))
}

/// What this process knows about the create of an intent record's server.
#[derive(Debug, Clone)]
enum Create {
    /// Nothing was sent to Nova yet (or Nova refused it): nothing to clean up.
    NotSent,
    /// The create was sent; whether Nova made a server is unknown until asked.
    Sent,
    /// Nova made this server.
    Made(String),
    /// The server was deleted again (a failed build): nothing left to do.
    Settled,
}

/// What one checkout asks Nova for, before names become ids.
#[derive(Debug)]
struct Wanted {
    name: String,
    image: String,
    flavor: String,
    network: String,
    key_name: Option<String>,
    template: Option<String>,
}

/// The provider for one configured instance.
pub(crate) struct OpenStack {
    config: ProviderConfig,
    settings: OpenStackSettings,
    cloud: Cloud,
    creates: Mutex<HashMap<String, Create>>,
}

impl std::fmt::Debug for OpenStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenStack")
            .field("instance", &self.config.instance())
            .field("cloud", &self.cloud)
            .finish()
    }
}

impl OpenStack {
    fn new(config: ProviderConfig) -> Result<OpenStack> {
        let section = OpenStackSection::from_section(&config)?;
        let login = section.login(&config)?;
        let settings = section.settings();
        let cloud = Cloud::new(login, Duration::from_secs(120), settings.poll_interval);
        Ok(OpenStack {
            config,
            settings,
            cloud,
            creates: Mutex::new(HashMap::new()),
        })
    }

    /// A provider error naming this instance.
    fn error(&self, message: String) -> Error {
        self.with_instance(Error::provider(NAME, message))
    }

    fn with_instance(&self, e: Error) -> Error {
        match self.config.instance() {
            Some(i) => e.with_instance(i),
            None => e,
        }
    }

    /// An API failure as a broker error, saying what broker was doing.
    fn failed(&self, e: ApiError, doing: &str) -> Error {
        self.with_instance(e.into_error(doing))
    }

    fn note(&self, record: &str, create: Create) {
        lock(&self.creates).insert(record.to_owned(), create);
    }

    /// The server's name: the `name` argument, else the template's, else `broker-` and part of the
    /// record id (upstream's `broker-<8 characters>`).
    fn server_name(&self, ctx: &CheckoutContext<'_>) -> String {
        let template = arg(ctx.args(), "ostack_template")
            .and_then(|t| self.template(&t).ok())
            .and_then(|t| t.name.clone());
        arg(ctx.args(), "name").or(template).unwrap_or_else(|| {
            let id = ctx.record_id().as_str();
            format!(
                "broker-{}",
                id.trim_start_matches('h').get(..8).unwrap_or(id)
            )
        })
    }

    fn template(&self, name: &str) -> Result<&Template> {
        let found = self.settings.templates.iter().find(|(n, _)| n == name);
        found.map(|(_, t)| t).ok_or_else(|| {
            let known: Vec<&str> = self
                .settings
                .templates
                .iter()
                .map(|(n, _)| n.as_str())
                .collect();
            Error::user(format!(
                "no OpenStack template `{name}` in the settings (known: {}); list them with \
                 `broker providers OpenStack --templates`",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ))
        })
    }

    /// What the checkout asks for: a template's values under the arguments, else the arguments
    /// over the `default_*` settings (upstream applies the defaults only without a template).
    fn wanted(&self, ctx: &CheckoutContext<'_>) -> Result<Wanted> {
        let args = ctx.args();
        let template = arg(args, "ostack_template");
        let base = match &template {
            Some(name) => self.template(name)?.clone(),
            None => self.settings.defaults.clone(),
        };
        let pick = |key: &str, given: Option<String>| arg(args, key).or(given);
        let image = pick("ostack_image", base.image);
        let flavor = pick("ostack_flavor", base.flavor);
        let network = pick("ostack_network", base.network);
        let missing: Vec<&str> = [
            ("image", &image),
            ("flavor", &flavor),
            ("network", &network),
        ]
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| *k)
        .collect();
        let (Some(image), Some(flavor), Some(network)) = (image, flavor, network) else {
            return Err(Error::user(format!(
                "missing required OpenStack parameters: {}; give them with `--ostack-image`, \
                 `--ostack-flavor` and `--ostack-network`, with a template (`--ostack-template`), \
                 or as `default_image`, `default_flavor` and `default_network` in the settings",
                missing.join(", ")
            )));
        };
        Ok(Wanted {
            name: self.server_name(ctx),
            image,
            flavor,
            network,
            key_name: pick("ostack_key_name", base.key_name),
            template,
        })
    }

    /// The ids of the image, flavor and network, looked up at once; every one not found is named
    /// in one user error.
    async fn resolve(&self, api: &api::Api<'_>, w: &Wanted) -> Result<[String; 3]> {
        let (image, flavor, network) = tokio::join!(
            self.find_image(api, &w.image),
            self.find_listed(api, Service::Compute, "/flavors", "flavors", &w.flavor),
            self.find_listed(
                api,
                Service::Network,
                "/v2.0/networks",
                "networks",
                &w.network
            ),
        );
        let mut ids = Vec::new();
        let mut unknown = Vec::new();
        for (what, given, found) in [
            ("image", &w.image, image?),
            ("flavor", &w.flavor, flavor?),
            ("network", &w.network, network?),
        ] {
            match found {
                Some(id) => ids.push(id),
                None => unknown.push(format!("{what} `{given}`")),
            }
        }
        match <[String; 3]>::try_from(ids) {
            Ok(ids) if unknown.is_empty() => Ok(ids),
            _ => Err(Error::user(format!(
                "not found on OpenStack{}: {}; list what there is with `broker providers OpenStack \
                 --images`, `--flavors` or `--networks`",
                self.instance_suffix(),
                unknown.join(", ")
            ))),
        }
    }

    fn instance_suffix(&self) -> String {
        self.config
            .instance()
            .map(|i| format!("::{i}"))
            .unwrap_or_default()
    }

    /// An image by id (when the value is shaped like one), else by exact name, else the first
    /// whose name contains the value.
    async fn find_image(&self, api: &api::Api<'_>, given: &str) -> Result<Option<String>> {
        let doing = format!("looking up image `{given}`");
        if is_uuid(given) {
            match api
                .get(Service::Image, &format!("/v2/images/{given}"), &[])
                .await
            {
                Ok(image) => return Ok(Some(text(&image["id"]))),
                Err(e) if e.status() == Some(404) => {}
                Err(e) => return Err(self.failed(e, &doing)),
            }
        }
        let named = api
            .list(Service::Image, "/v2/images", &[("name", given)], "images")
            .await
            .map_err(|e| self.failed(e, &doing))?;
        if let Some(image) = named.first() {
            return Ok(Some(text(&image["id"])));
        }
        let all = api
            .list(Service::Image, "/v2/images", &[], "images")
            .await
            .map_err(|e| self.failed(e, &doing))?;
        let partial = all
            .iter()
            .find(|i| i["name"].as_str().is_some_and(|n| n.contains(given)));
        Ok(partial.map(|image| {
            tracing::info!(
                "OpenStack image `{given}` is taken to mean `{}`",
                text(&image["name"])
            );
            text(&image["id"])
        }))
    }

    /// A flavor or network by id, else by exact name, from one listing.
    async fn find_listed(
        &self,
        api: &api::Api<'_>,
        service: Service,
        path: &str,
        key: &str,
        given: &str,
    ) -> Result<Option<String>> {
        let all = api
            .list(service, path, &[], key)
            .await
            .map_err(|e| self.failed(e, &format!("looking up {key} `{given}`")))?;
        let found = all
            .iter()
            .find(|item| item["id"] == given)
            .or_else(|| all.iter().find(|item| item["name"] == given));
        Ok(found.map(|item| text(&item["id"])))
    }

    /// Nova's create request.
    fn create_body(&self, ctx: &CheckoutContext<'_>, w: &Wanted, ids: &[String; 3]) -> Json {
        let [image, flavor, network] = ids;
        let asked = [
            ("ostack_image", Some(w.image.as_str())),
            ("ostack_flavor", Some(w.flavor.as_str())),
            ("ostack_network", Some(w.network.as_str())),
            ("ostack_template", w.template.as_deref()),
        ];
        let mut server = json!({
            "name": w.name, "imageRef": image, "flavorRef": flavor,
            "networks": [{"uuid": network}],
            "metadata": servers::metadata(ctx, &asked),
        });
        if let Some(key) = &w.key_name {
            server["key_name"] = json!(key);
        }
        json!({ "server": server })
    }

    /// Sends the create; when it fails in passing, looks for the server it may have made (by the
    /// record id) before sending it again.
    async fn create(
        &self,
        api: &api::Api<'_>,
        ctx: &CheckoutContext<'_>,
        body: &Json,
    ) -> Result<String> {
        let record = ctx.record_id().as_str();
        let name = body["server"]["name"].as_str().unwrap_or_default();
        let doing = format!("creating server `{name}`");
        let mut pause = self.settings.poll_interval;
        let mut tries = 1;
        loop {
            self.note(record, Create::Sent);
            let error = match api.post(Service::Compute, "/servers", body).await {
                Ok(answer) => {
                    let id = text(&answer["server"]["id"]);
                    if id.is_empty() {
                        return Err(self.error(format!("{doing}: Nova's answer has no server id")));
                    }
                    self.note(record, Create::Made(id.clone()));
                    return Ok(id);
                }
                Err(e) => e,
            };
            if !error.transient() {
                // Nova refused it: nothing was made.
                self.note(record, Create::NotSent);
                return Err(self.failed(error, &doing));
            }
            if let Some(made) = self.servers_of(api, record, Some(name)).await?.first() {
                let id = text(&made["id"]);
                self.note(record, Create::Made(id.clone()));
                return Ok(id);
            }
            if tries >= CREATE_TRIES {
                return Err(self.failed(error, &doing));
            }
            tracing::warn!(
                "OpenStack did not answer the create properly ({error}); sending it again"
            );
            tokio::time::sleep(pause).await;
            pause *= 2;
            tries += 1;
        }
    }

    /// Polls a new server, the pause doubling, until it is `ACTIVE`; a build that ends in `ERROR`
    /// or outlasts `server_timeout` is deleted.
    async fn wait_active(
        &self,
        api: &api::Api<'_>,
        id: &str,
        name: &str,
        record: &str,
    ) -> Result<Json> {
        let started = Instant::now();
        let mut pause = self.settings.poll_interval;
        let doing = format!("waiting for server `{name}` ({id})");
        loop {
            match api
                .get_once(Service::Compute, &format!("/servers/{id}"), &[])
                .await
            {
                Ok(answer) => match answer["server"]["status"].as_str() {
                    Some("ACTIVE") => return Ok(answer["server"].clone()),
                    Some("ERROR") => {
                        let fault = servers::fault(&answer["server"]);
                        let outcome = self.delete_after_failure(api, id, record).await;
                        return Err(self.error(format!(
                            "server `{name}` ({id}) failed to build: {fault}; {outcome}"
                        )));
                    }
                    status => tracing::debug!(server = id, ?status, "building"),
                },
                Err(e) if e.status() == Some(404) => {
                    self.note(record, Create::Settled);
                    return Err(self.error(format!(
                        "server `{name}` ({id}) vanished while it was built"
                    )));
                }
                Err(e) if e.transient() => {
                    tracing::warn!("OpenStack did not answer properly ({e}); polling again");
                }
                Err(e) => return Err(self.failed(e, &doing)),
            }
            let left = self
                .settings
                .server_timeout
                .saturating_sub(started.elapsed());
            if left.is_zero() {
                let outcome = self.delete_after_failure(api, id, record).await;
                tracing::warn!("server `{name}` ({id}) was not active in time; {outcome}");
                return Err(Error::Timeout {
                    operation: format!("building OpenStack server `{name}` ({id}; {outcome})"),
                    after: self.settings.server_timeout,
                });
            }
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    /// Deletes the server of a failed checkout; says what became of it.
    async fn delete_after_failure(&self, api: &api::Api<'_>, id: &str, record: &str) -> String {
        match self.delete_server(api, id).await {
            Ok(()) => {
                self.note(record, Create::Settled);
                "the server was deleted".to_owned()
            }
            Err(e) => format!(
                "deleting it failed ({}); the check-in of the failed checkout tries again",
                broker_core::error::chain(&e)
            ),
        }
    }

    /// Deletes a server; one already gone is deleted.
    async fn delete_server(&self, api: &api::Api<'_>, id: &str) -> Result<()> {
        match api
            .delete(Service::Compute, &format!("/servers/{id}"))
            .await
        {
            Ok(_) => {
                tracing::info!("deleted OpenStack server {id}");
                Ok(())
            }
            Err(e) if e.status() == Some(404) => {
                tracing::info!("OpenStack server {id} is already gone");
                Ok(())
            }
            Err(e) => Err(self.failed(e, &format!("deleting server {id}"))),
        }
    }

    /// The servers carrying `record` in their metadata (narrowed by `name` on Nova's side when
    /// the name needs no escaping in Nova's regular expression).
    async fn servers_of(
        &self,
        api: &api::Api<'_>,
        record: &str,
        name: Option<&str>,
    ) -> Result<Vec<Json>> {
        let plain = |n: &&str| {
            n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        let query: Vec<(&str, &str)> = name
            .filter(plain)
            .map(|n| ("name", n))
            .into_iter()
            .collect();
        let all = api
            .list(Service::Compute, "/servers/detail", &query, "servers")
            .await
            .map_err(|e| self.failed(e, &format!("looking for the server of record {record}")))?;
        Ok(all
            .into_iter()
            .filter(|s| servers::record_id(s) == Some(record) && !servers::going(s))
            .collect())
    }

    /// The servers a record stands for: its `instance_id` (else `server_id`, `id`, the recorded
    /// argument), else the servers carrying its record id, else one by its name, else by its
    /// address.
    async fn servers_for(&self, api: &api::Api<'_>, host: &HostRecord) -> Result<Vec<String>> {
        let recorded = ["instance_id", "server_id", "id"]
            .iter()
            .find_map(|k| host.get(k).and_then(scalar_text))
            .or_else(|| host.args().get("instance_id").and_then(scalar_text))
            .filter(|id| !id.is_empty());
        if let Some(id) = recorded {
            return Ok(vec![id]);
        }
        if host.has_broker_id() {
            let found = self
                .servers_of(api, host.id().as_str(), host.name())
                .await?;
            if !found.is_empty() {
                return Ok(found.iter().map(|s| text(&s["id"])).collect());
            }
        }
        let all = api
            .list(Service::Compute, "/servers/detail", &[], "servers")
            .await
            .map_err(|e| self.failed(e, "looking for the server by name and address"))?;
        let by_name = host
            .name()
            .and_then(|n| all.iter().find(|s| s["name"] == n));
        let by_address = || {
            let address = host.hostname().or_else(|| host.ip())?;
            all.iter()
                .find(|s| servers::addresses(s).contains(&address))
        };
        Ok(by_name
            .or_else(by_address)
            .map(|s| vec![text(&s["id"])])
            .unwrap_or_default())
    }

    /// The server of a record still `pending`: the one this process made, else the ones carrying
    /// its record id; none when this process knows nothing was made.
    async fn servers_of_pending(
        &self,
        api: &api::Api<'_>,
        host: &HostRecord,
    ) -> Result<Vec<String>> {
        let known = lock(&self.creates).get(host.id().as_str()).cloned();
        match known {
            Some(Create::NotSent | Create::Settled) => Ok(Vec::new()),
            Some(Create::Made(id)) => Ok(vec![id]),
            Some(Create::Sent) | None => {
                let found = self
                    .servers_of(api, host.id().as_str(), host.name())
                    .await?;
                Ok(found.iter().map(|s| text(&s["id"])).collect())
            }
        }
    }

    /// `--images`, `--flavors`, `--networks`: `name (id)` of each.
    async fn listing(&self, service: Service, path: &str, key: &str) -> Result<Value> {
        let api = self.cloud.api()?;
        let items = api
            .list(service, path, &[], key)
            .await
            .map_err(|e| self.failed(e, &format!("listing {key}")))?;
        Ok(Value::Sequence(
            items
                .iter()
                .filter(|i| key != "images" || i["status"] == "active")
                .map(|i| Value::from(format!("{} ({})", text(&i["name"]), text(&i["id"]))))
                .collect(),
        ))
    }

    /// `--templates`: each template of the settings with what it sets.
    fn templates(&self) -> Value {
        let mut out = Mapping::new();
        for (name, t) in &self.settings.templates {
            let mut m = Mapping::new();
            for (key, value) in [
                ("image", &t.image),
                ("flavor", &t.flavor),
                ("network", &t.network),
                ("key_name", &t.key_name),
                ("name", &t.name),
            ] {
                if let Some(v) = value {
                    m.insert(key.into(), v.as_str().into());
                }
            }
            out.insert(name.as_str().into(), Value::Mapping(m));
        }
        Value::Mapping(out)
    }
}

/// A text argument, unless empty.
fn arg(args: &Mapping, key: &str) -> Option<String> {
    args.get(key)
        .and_then(scalar_text)
        .filter(|v| !v.trim().is_empty())
}

#[async_trait::async_trait]
impl Provider for OpenStack {
    fn name(&self) -> &str {
        NAME
    }

    fn instance(&self) -> Option<&str> {
        self.config.instance()
    }

    fn planned_fields(&self, ctx: &CheckoutContext<'_>) -> Mapping {
        let mut fields = Mapping::new();
        fields.insert("name".into(), self.server_name(ctx).into());
        fields
    }

    async fn checkout(&self, ctx: &CheckoutContext<'_>) -> Result<Mapping> {
        let record = ctx.record_id().as_str();
        self.note(record, Create::NotSent);
        let wanted = self.wanted(ctx)?;
        tracing::info!(
            "creating OpenStack server `{}` from image `{}`, flavor `{}`, network `{}`",
            wanted.name,
            wanted.image,
            wanted.flavor,
            wanted.network
        );
        let api = self.cloud.api()?;
        let ids = self.resolve(&api, &wanted).await?;
        let id = self
            .create(&api, ctx, &self.create_body(ctx, &wanted, &ids))
            .await?;
        tracing::info!("OpenStack server `{}` ({id}) is being built", wanted.name);
        let server = self.wait_active(&api, &id, &wanted.name, record).await?;
        let fields = servers::host_fields(&server);
        // The record becomes `ready`: its check-in goes by `instance_id` from now on.
        lock(&self.creates).remove(record);
        tracing::info!("OpenStack server `{}` ({id}) is active", wanted.name);
        Ok(fields)
    }

    async fn checkin(&self, host: &HostRecord) -> Result<()> {
        let pending = host.state() == HostState::Pending;
        let known = lock(&self.creates).get(host.id().as_str()).cloned();
        if pending && matches!(known, Some(Create::NotSent | Create::Settled)) {
            lock(&self.creates).remove(host.id().as_str());
            return Ok(());
        }
        let api = self.cloud.api()?;
        let ids = if pending {
            self.servers_of_pending(&api, host).await?
        } else {
            self.servers_for(&api, host).await?
        };
        if ids.is_empty() {
            tracing::info!(
                host = %host.display_name(),
                "no OpenStack server stands for this record; it is gone already"
            );
        }
        for id in &ids {
            self.delete_server(&api, id).await?;
        }
        lock(&self.creates).remove(host.id().as_str());
        Ok(())
    }

    async fn help(&self, query: &Mapping) -> Result<Value> {
        let flag = |key: &str| query.get(key).is_some_and(|v| v.as_bool() != Some(false));
        if flag("templates") {
            Ok(self.templates())
        } else if flag("images") {
            self.listing(Service::Image, "/v2/images", "images").await
        } else if flag("flavors") {
            self.listing(Service::Compute, "/flavors", "flavors").await
        } else if flag("networks") {
            self.listing(Service::Network, "/v2.0/networks", "networks")
                .await
        } else {
            Err(Error::usage(
                "ask OpenStack something: --images, --flavors, --networks or --templates",
            ))
        }
    }

    async fn inventory(&self, filter: Option<&str>) -> Result<Vec<HostRecord>> {
        let api = self.cloud.api()?;
        let user = api.user_id().await.map_err(|e| self.with_instance(e))?;
        let all = api
            .list(Service::Compute, "/servers/detail", &[], "servers")
            .await
            .map_err(|e| self.failed(e, "listing servers"))?;
        let records: Vec<HostRecord> = all
            .iter()
            .filter(|s| servers::record_id(s).is_some() && s["user_id"] == user.as_str())
            .filter(|s| !servers::going(s))
            .filter(|s| filter.is_none_or(|f| s["name"].as_str().is_some_and(|n| n.contains(f))))
            .map(|s| servers::synced_record(s, self.config.instance()))
            .collect();
        tracing::info!(
            servers = all.len(),
            broker_made = records.len(),
            "listed the OpenStack servers broker made for this user"
        );
        Ok(records)
    }

    async fn connect(&self, host: &HostRecord) -> Result<Box<dyn broker_core::Session>> {
        // A server deleted behind broker's back may have left its address (a floating IP) to
        // another machine: commands go only to a server OpenStack still has.
        let api = self.cloud.api()?;
        let mut alive = false;
        for id in self.servers_for(&api, host).await? {
            match api
                .get(Service::Compute, &format!("/servers/{id}"), &[])
                .await
            {
                Ok(_) => alive = true,
                Err(e) if e.status() == Some(404) => {}
                Err(e) => return Err(self.failed(e, &format!("looking up server {id}"))),
            }
        }
        if !alive {
            return Err(Error::host(
                host.display_name(),
                "OpenStack has no server for this host any more; `broker checkin` drops its record",
            ));
        }
        crate::ssh_session(self, host, &self.config).await
    }
}
