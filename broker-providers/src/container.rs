//! `Container`: long-running containers as hosts, on Docker or Podman (Docker Engine API, `bollard`).
//!
//! # Engine
//! An engine asked for explicitly is used, or nothing is (the error names it): the first of the
//! instance's settings `socket` (a path or `unix://…`) or `host` + `host_port` (`tcp://`), then
//! `CONTAINER_HOST`, then `DOCKER_HOST`. Only when none is set is one discovered — the first that
//! answers a ping of:
//! 1. rootful Podman `/run/podman/podman.sock`;
//! 2. rootless Podman `$XDG_RUNTIME_DIR/podman/podman.sock`;
//! 3. Docker `/var/run/docker.sock`.
//!
//! When none answers, the error lists what was tried and how to start an engine's API.
//!
//! # Checkout (`container_host: IMAGE`)
//! The image is used when present (`localhost/IMAGE` too) and pulled otherwise. The container is named
//! `<name_prefix>_<8 hex of the record id>` (prefix: setting `name_prefix`, default the local user) and
//! labelled so that every container this broker made can be found again: `broker.managed=true`,
//! `broker.record_id`, `broker.inventory` (the inventory the record is in:
//! `ProviderConfig::inventory_id`), `broker.owner`, `broker.origin`, `broker.expire_time` (when the
//! host's lease ends; a sync puts it back on the record) and each provider label `k` as `broker.k`.
//!
//! A listing (`broker inventory --sync`, `broker reap --orphans`) shows the containers of this
//! inventory only: each labelled with it, never one labelled with another; one with no inventory
//! label (made by an older broker, or the Python broker's) when its name starts with the filter
//! (default: the name prefix) and `_`. Its `_broker_checkout_time` is the engine's `Created`.
//! Arguments: `ports` (`22`, `22:1337`, `22/tcp:1337`, space or comma separated; with `auto_map_ports`
//! the image's exposed ports too), `environment` (a mapping or `A=1,B=2`; `BROKER_ORIGIN` is added),
//! `command`, `entrypoint`, `hostname`, `volumes` (`src:dst[:ro]`), and for a host reached over SSH
//! the `host_…` SSH settings; no other (`CHECKOUT_ARGUMENTS`). Networks come from the setting
//! `network` (comma separated) and must exist.
//!
//! Hosts get a container exec session: commands run as `sh -c COMMAND` (the command is one argument,
//! so no quoting pitfalls), files move through the archive API. When port 22 is published the host's
//! `hostname` is `ENGINE_HOST:PORT` and it is reached over SSH instead (feature `ssh`), as upstream.
//!
//! Check-in force-removes the record's containers and their anonymous volumes: those labelled with the
//! record's identity (`broker.record_id`, which also finds the container of a record still `pending`
//! after a crash between create and record) and the one whose id the record holds (`container_id`).
//! A container is never removed for its name alone while it carries another record's identity: the
//! name may meanwhile belong to someone else. Only a record with neither (written by the Python broker)
//! is looked up by name. A container that is already gone is checked in. A create still under way
//! (its caller was interrupted, but the engine completes it) is waited for before looking.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as EngineError;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerCreateResponse, EndpointSettings, HostConfig, NetworkingConfig,
    PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, DownloadFromContainerOptions, ListImagesOptions,
    LogsOptions, RemoveContainerOptions, UploadToContainerOptions, WaitContainerOptions,
};
use broker_core::provider::{Arguments, HelpOption, Operation};
use broker_core::session::{Access, ContainerAccess};
use broker_core::settings::{ProviderSettings, field};
use broker_core::sync::lock;
use broker_core::value::scalar_text as text;
use broker_core::{
    CheckoutContext, Error, ExecOutput, HostRecord, Mapping, OutputSink, OutputStream, Provider,
    ProviderConfig, ProviderKind, Result, Session, Value,
};
use futures_util::StreamExt;
use serde::Deserialize;

/// The provider's name, as the inventory records it.
pub const NAME: &str = "Container";

/// Everything a checkout acts on: what the container is made with — broker builds the engine's
/// create request itself and passes nothing else on, so any other argument would be silently
/// ignored — and the SSH settings a host reached over SSH (port 22 published) takes per checkout
/// (`ssh::SshOptions::resolve`), in their `host_…` spelling only, so that `port` stays a misspelling
/// of `ports`.
const CHECKOUT_ARGUMENTS: &[&str] = &[
    "command",
    "entrypoint",
    "ports",
    "environment",
    "hostname",
    "volumes",
    "name",
    "host_username",
    "host_password",
    "host_ssh_port",
    "host_ssh_key_filename",
    "host_connection_timeout",
    "host_key_checking",
    "known_hosts",
    "host_ipv6",
    "host_ipv4_fallback",
];

/// The registration of the Container provider.
pub const KIND: ProviderKind =
    ProviderKind::new(NAME, "Docker or Podman containers as hosts", build)
        .checkout_actions(&["container_host"])
        .execute_actions(&["container_app"])
        .settings::<ContainerSettings>()
        .takes(Operation::Checkout, Arguments::Only(CHECKOUT_ARGUMENTS))
        .takes(
            Operation::Execute,
            Arguments::Only(&["command", "environment"]),
        )
        .help_options(&[
            HelpOption {
                name: "container_hosts",
                takes_value: false,
                help: "Images labelled broker_compatible",
            },
            HelpOption {
                name: "container_host",
                takes_value: true,
                help: "Details of one image",
            },
            HelpOption {
                name: "container_apps",
                takes_value: false,
                help: "All tagged images",
            },
            HelpOption {
                name: "container_app",
                takes_value: true,
                help: "Details of one image",
            },
        ]);

/// Label marking containers this broker made.
const LABEL_MANAGED: &str = "broker.managed";
/// Label holding the inventory record's identity.
const LABEL_RECORD: &str = "broker.record_id";
/// When the host's lease ends, seconds since the epoch (broker's `_broker_expire_time`).
const LABEL_EXPIRE: &str = "broker.expire_time";
/// The inventory the container's record belongs to ([`ProviderConfig::inventory_id`]).
const LABEL_INVENTORY: &str = "broker.inventory";

/// How long a check-in waits for a create of the same record that is still under way.
const CREATE_WAIT: Duration = Duration::from_secs(120);

/// How to start an engine's API when none answers.
const START_HINT: &str = "start one, e.g. `podman system service --time=0 unix:///run/podman/podman.sock &` \
     (or `systemctl start docker`), or point DOCKER_HOST at a running engine";

/// The `Container` settings section, per instance (see the module documentation).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ContainerSettings {
    /// The engine's socket: a path or `unix://PATH`.
    #[serde(deserialize_with = "field::text")]
    socket: Option<String>,
    /// A remote engine's host (`localhost` means none), reached at `host_port` (default 2375).
    #[serde(deserialize_with = "field::text")]
    host: Option<String>,
    #[serde(deserialize_with = "field::whole")]
    host_port: Option<u64>,
    /// The prefix of container names; default the local user.
    #[serde(deserialize_with = "field::text")]
    name_prefix: Option<String>,
    /// Networks to attach containers to, comma separated.
    #[serde(deserialize_with = "field::text")]
    network: Option<String>,
    /// Whether the image's exposed ports are published too.
    #[serde(deserialize_with = "field::flag")]
    auto_map_ports: Option<bool>,
}

impl ProviderSettings for ContainerSettings {
    /// The Python broker's: its engine clients needed the runtime and a login to a remote engine's
    /// machine, and a timeout; broker finds the engine by its API and lists no results here.
    const UNUSED: &'static [&'static str] = &[
        "runtime",
        "host_username",
        "host_password",
        "timeout",
        "results_limit",
    ];
}

fn build(config: ProviderConfig) -> Result<Arc<dyn Provider>> {
    let settings = ContainerSettings::from_section(&config)?;
    let prefix = settings
        .name_prefix
        .clone()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(broker_core::record::current_user);
    Ok(Arc::new(ContainerProvider {
        prefix,
        settings,
        engine: tokio::sync::OnceCell::new(),
        creating: Mutex::new(HashMap::new()),
        nothing_sent: Mutex::new(std::collections::HashSet::new()),
        config,
    }))
}

/// See the module documentation.
#[derive(Debug)]
pub struct ContainerProvider {
    config: ProviderConfig,
    settings: ContainerSettings,
    prefix: String,
    engine: tokio::sync::OnceCell<Engine>,
    /// Creates under way, by record identity; each lock is held until the engine has answered.
    creating: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Checkouts of this process that have not sent a create (yet), by record identity: a check-in
    /// of such a record has nothing to remove, even when the engine cannot be reached.
    nothing_sent: Mutex<std::collections::HashSet<String>>,
}

/// The engine that answered and the host name its published ports are reached at.
///
/// It holds no client: a client's connections belong to the runtime that made them, and a guard's
/// check-in runs on the drop worker's runtime, not the caller's, so each call connects its own
/// ([`ContainerProvider::docker`]).
#[derive(Debug, Clone)]
struct Engine {
    endpoint: Endpoint,
    address: String,
    public_host: String,
}

/// Where an engine's API may be.
#[derive(Debug, Clone, PartialEq)]
enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
}

impl Endpoint {
    fn parse(text: &str) -> Option<Endpoint> {
        let text = text.trim();
        if let Some(path) = text.strip_prefix("unix://") {
            return Some(Endpoint::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = text
            .strip_prefix("tcp://")
            .or_else(|| text.strip_prefix("http://"))
        {
            return Some(Endpoint::Tcp(addr.trim_end_matches('/').to_owned()));
        }
        text.starts_with('/')
            .then(|| Endpoint::Unix(PathBuf::from(text)))
    }

    /// The address another client of the engine uses (credentials included).
    fn url(&self) -> String {
        match self {
            Endpoint::Unix(p) => format!("unix://{}", p.display()),
            Endpoint::Tcp(a) => format!("tcp://{a}"),
        }
    }

    /// For messages: credentials written into `DOCKER_HOST` are not shown.
    fn describe(&self) -> String {
        broker_core::redact::url(&self.url())
    }

    fn public_host(&self) -> String {
        match self {
            Endpoint::Unix(_) => "localhost".into(),
            Endpoint::Tcp(addr) => addr
                .rsplit_once(':')
                .map(|(h, _)| h.to_owned())
                .unwrap_or_else(|| addr.clone()),
        }
    }

    fn connect(&self) -> std::result::Result<Docker, EngineError> {
        match self {
            Endpoint::Unix(p) => {
                Docker::connect_with_unix(&p.to_string_lossy(), 120, bollard::API_DEFAULT_VERSION)
            }
            Endpoint::Tcp(a) => {
                Docker::connect_with_http(&format!("http://{a}"), 120, bollard::API_DEFAULT_VERSION)
            }
        }
    }
}

impl ContainerProvider {
    fn error(&self, message: impl Into<String>) -> Error {
        let e = Error::provider(NAME, message);
        match self.config.instance() {
            Some(i) => e.with_instance(i),
            None => e,
        }
    }

    fn engine_error(&self, doing: &str, e: EngineError) -> Error {
        self.error(doing).caused_by(EngineFailure(e))
    }

    /// The engine asked for explicitly, if any — the first of the setting `socket`, the settings
    /// `host`/`host_port`, `$CONTAINER_HOST` and `$DOCKER_HOST` — with where it came from.
    ///
    /// # Errors
    /// An address broker cannot use (e.g. `ssh://…`), naming where it came from.
    fn asked_for(&self) -> Result<Option<(String, Endpoint)>> {
        self.asked_for_in(|var| std::env::var(var).ok())
    }

    /// [`ContainerProvider::asked_for`] with the environment `env` gives.
    fn asked_for_in(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<(String, Endpoint)>> {
        let parsed = |source: String, text: String| match Endpoint::parse(&text) {
            Some(endpoint) => Ok(Some((source, endpoint))),
            None => Err(self.error(format!(
                "the container engine address `{}` ({source}) is not one broker can use; \
                 give a socket path, `unix://PATH` or `tcp://HOST:PORT`",
                broker_core::redact::url(&text)
            ))),
        };
        let settings = &self.settings;
        if let Some(socket) = settings.socket.clone().filter(|s| !s.is_empty()) {
            return parsed("setting `socket`".to_owned(), socket);
        }
        if let Some(host) = settings
            .host
            .as_ref()
            .filter(|h| !h.is_empty() && *h != "localhost")
        {
            let port = settings.host_port.unwrap_or(2375);
            return Ok(Some((
                "settings `host`/`host_port`".to_owned(),
                Endpoint::Tcp(format!("{host}:{port}")),
            )));
        }
        for var in ["CONTAINER_HOST", "DOCKER_HOST"] {
            if let Some(value) = env(var).filter(|v| !v.is_empty()) {
                return parsed(format!("${var}"), value);
            }
        }
        Ok(None)
    }

    /// The engines tried when none was asked for, in discovery order, with what each is.
    fn discovered() -> Vec<(String, Endpoint)> {
        Self::discovered_in(std::env::var_os("XDG_RUNTIME_DIR"))
    }

    /// [`ContainerProvider::discovered`] for this `XDG_RUNTIME_DIR`.
    fn discovered_in(runtime_dir: Option<std::ffi::OsString>) -> Vec<(String, Endpoint)> {
        let mut out = vec![(
            "rootful Podman".to_owned(),
            Endpoint::Unix("/run/podman/podman.sock".into()),
        )];
        if let Some(dir) = runtime_dir {
            out.push((
                "rootless Podman".to_owned(),
                Endpoint::Unix(Path::new(&dir).join("podman/podman.sock")),
            ));
        }
        out.push((
            "Docker".to_owned(),
            Endpoint::Unix("/var/run/docker.sock".into()),
        ));
        out
    }

    /// The engine, found on first use.
    async fn engine(&self) -> Result<&Engine> {
        self.engine
            .get_or_try_init(|| async {
                // An engine asked for is used or nothing is: hosts must not land on another machine.
                let asked = self.asked_for()?;
                let explicit = asked.is_some();
                let candidates = match asked {
                    Some(asked) => vec![asked],
                    None => Self::discovered(),
                };
                let mut tried = Vec::new();
                for (source, endpoint) in candidates {
                    if let Endpoint::Unix(path) = &endpoint
                        && !path.exists()
                    {
                        tried.push(format!("{} ({source}): no such socket", endpoint.describe()));
                        continue;
                    }
                    let attempt = match endpoint.connect() {
                        Ok(docker) => match tokio::time::timeout(Duration::from_secs(5), docker.ping()).await {
                            Ok(Ok(_)) => Ok(docker),
                            Ok(Err(e)) => Err(engine_message(&e)),
                            Err(_) => Err("no answer within 5 s".to_owned()),
                        },
                        Err(e) => Err(engine_message(&e)),
                    };
                    match attempt {
                        Ok(_) => {
                            tracing::debug!(engine = %endpoint.describe(), "container engine found");
                            return Ok(Engine {
                                address: endpoint.describe(),
                                public_host: endpoint.public_host(),
                                endpoint,
                            });
                        }
                        Err(why) => tried.push(format!("{} ({source}): {why}", endpoint.describe())),
                    }
                }
                if explicit {
                    return Err(self.error(format!(
                        "the container engine asked for does not answer: {}; start it, or change or \
                         unset that setting or variable to use another engine",
                        tried.join("; ")
                    )));
                }
                Err(self.error(format!(
                    "no container engine answered; tried: {}; {START_HINT}",
                    tried.join("; ")
                )))
            })
            .await
    }

    /// A client of the engine for this call, on the runtime it runs on (see [`Engine`]).
    async fn docker(&self) -> Result<Docker> {
        let engine = self.engine().await?;
        engine
            .endpoint
            .connect()
            .map_err(|e| self.engine_error(&format!("connecting to {}", engine.address), e))
    }

    /// The image to run: as named, else `localhost/NAME`, else pulled.
    async fn ensure_image(&self, image: &str) -> Result<String> {
        let docker = self.docker().await?;
        let local = if image.starts_with("localhost/") {
            None
        } else {
            Some(format!("localhost/{image}"))
        };
        for candidate in std::iter::once(image.to_owned()).chain(local) {
            match docker.inspect_image(&candidate).await {
                Ok(_) => return Ok(candidate),
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    return Err(self.engine_error(&format!("inspecting image {candidate}"), e));
                }
            }
        }
        let options = CreateImageOptions {
            from_image: Some(image.to_owned()),
            ..Default::default()
        };
        let mut pull = docker.create_image(Some(options), None, None);
        while let Some(progress) = pull.next().await {
            if let Err(e) = progress {
                return Err(self
                    .error(format!(
                        "unable to find image {image} locally or pull it; build or load it first \
                         (`podman images` lists what is there)"
                    ))
                    .caused_by(EngineFailure(e)));
            }
        }
        Ok(image.to_owned())
    }

    /// The container's name: the `name` argument, else `<prefix>_<8 hex of the record id>`.
    fn planned_name(&self, ctx: &CheckoutContext<'_>) -> String {
        if let Some(name) = ctx.arg("name") {
            return name.to_owned();
        }
        let hex: String = ctx
            .record_id()
            .as_str()
            .chars()
            .filter(char::is_ascii_hexdigit)
            .take(8)
            .collect();
        format!("{}_{hex}", self.prefix)
    }

    fn labels(&self, ctx: &CheckoutContext<'_>) -> HashMap<String, String> {
        let mut labels = HashMap::new();
        labels.insert(LABEL_MANAGED.to_owned(), "true".to_owned());
        labels.insert(LABEL_RECORD.to_owned(), ctx.record_id().to_string());
        labels.insert(
            LABEL_INVENTORY.to_owned(),
            self.config.inventory_id().to_owned(),
        );
        let owner = broker_core::Owner::current();
        labels.insert(
            "broker.owner".to_owned(),
            format!("{}@{}", owner.user, owner.machine),
        );
        if let Some(origin) = ctx.arg("_broker_origin") {
            labels.insert("broker.origin".to_owned(), origin.to_owned());
        }
        if let Some(url) = ctx.arg("_jenkins_url") {
            labels.insert("broker.jenkins.url".to_owned(), url.to_owned());
        }
        if let Some(at) = ctx.expire_time() {
            labels.insert(LABEL_EXPIRE.to_owned(), at.to_string());
        }
        let mut provider_labels = self.config.provider_labels();
        if let Some(Value::Mapping(given)) = ctx.args().get("provider_labels") {
            provider_labels.extend(given.clone());
        }
        for (k, v) in provider_labels {
            if let Some(k) = text(&k) {
                labels.insert(format!("broker.{k}"), text(&v).unwrap_or_default());
            }
        }
        labels
    }

    /// Creates a container on a task of its own: when the checkout is dropped mid-request the engine
    /// completes the create anyway, so the request runs to its answer, and a check-in of the same
    /// record waits for that answer before it looks for the container.
    ///
    /// # Errors
    /// [`Error::Internal`] when the request's task panicked or was cancelled; else the engine's
    /// answer, for the caller to judge.
    async fn create_container(
        &self,
        docker: &Docker,
        record: &broker_core::RecordId,
        options: CreateContainerOptions,
        body: ContainerCreateBody,
    ) -> Result<std::result::Result<ContainerCreateResponse, EngineError>> {
        let slot = Arc::new(tokio::sync::Mutex::new(()));
        let answered = Arc::clone(&slot).lock_owned().await;
        lock(&self.creating).insert(record.to_string(), Arc::clone(&slot));
        lock(&self.nothing_sent).remove(record.as_str());
        let docker = docker.clone();
        let request = tokio::spawn(async move {
            let out = docker.create_container(Some(options), body).await;
            drop(answered);
            out
        });
        let out = request
            .await
            .map_err(|e| Error::internal(format!("{NAME}: the container create task failed"), e));
        let mut creating = lock(&self.creating);
        if creating
            .get(record.as_str())
            .is_some_and(|s| Arc::ptr_eq(s, &slot))
        {
            creating.remove(record.as_str());
        }
        out
    }

    /// Waits (bounded) until no create for this record is under way.
    async fn create_answered(&self, record: &HostRecord) {
        let slot = lock(&self.creating).get(record.id().as_str()).cloned();
        if let Some(slot) = slot
            && tokio::time::timeout(CREATE_WAIT, slot.lock())
                .await
                .is_err()
        {
            tracing::warn!(host = %record.display_name(), "a create of this host is still under way after {CREATE_WAIT:?}; looking for its container anyway");
        }
    }

    /// Finds the containers of a record: those labelled with its identity and the one whose id it
    /// recorded. The name alone is trusted only for records with neither (the Python broker's), and
    /// never for a container labelled as another record's: a name may meanwhile belong to another
    /// host or to a container broker did not make.
    async fn containers_of(&self, record: &HostRecord) -> Result<Vec<String>> {
        self.create_answered(record).await;
        let mut found: Vec<String> = Vec::new();
        let identity = record.id();
        let label = format!("{LABEL_RECORD}={identity}");
        for c in self.list_containers(Some(("label", &label))).await? {
            if let Some(id) = c.get("Id").and_then(serde_json::Value::as_str) {
                found.push(id.to_owned());
            }
        }
        let recorded_id = record
            .get("container_id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty());
        let by_name = record
            .name()
            .filter(|_| !record.has_broker_id() && recorded_id.is_none());
        for key in recorded_id.into_iter().chain(by_name) {
            let Some(inspect) = self.inspect_plain(key).await? else {
                continue;
            };
            let Some(id) = inspect.get("Id").and_then(serde_json::Value::as_str) else {
                continue;
            };
            let id = id.to_owned();
            let owner = inspect
                .pointer("/Config/Labels")
                .and_then(|labels| labels.get(LABEL_RECORD))
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned);
            match owner {
                Some(owner) if owner != identity.as_str() => tracing::warn!(
                    host = %record.display_name(),
                    "container {key} belongs to another inventory record; leaving it alone"
                ),
                _ if found.contains(&id) => {}
                _ => found.push(id),
            }
        }
        Ok(found)
    }

    /// Whether a listing of this inventory shows a container labelled with `inventory` and named
    /// `name`: one of this inventory, whatever its name; never one of another; one of no inventory
    /// (the Python broker's, or made before containers carried it) when its name starts with
    /// `prefix` and `_`.
    fn lists(&self, inventory: Option<&str>, name: &str, prefix: &str) -> bool {
        match inventory {
            Some(inventory) => inventory == self.config.inventory_id(),
            None => !prefix.is_empty() && name.starts_with(&format!("{prefix}_")),
        }
    }

    /// `GET /containers/{key}/json`, read as plain JSON (`None` when there is no such container). As
    /// for [`Container::list_containers`], bollard's typed answer rejects Podman's `stopped` state,
    /// which a container passes through while it is being stopped, so a check-in racing a stop
    /// would fail.
    async fn inspect_plain(&self, key: &str) -> Result<Option<serde_json::Value>> {
        let engine = self.engine().await?;
        let what = || format!("inspecting container {key} at {}", engine.address);
        let path = format!("/containers/{}/json", percent_encode(key));
        let (status, body) = http_get(&engine.endpoint, &path)
            .await
            .map_err(|e| self.error(what()).caused_by(e))?;
        match status {
            200 => serde_json::from_slice(&body).map(Some).map_err(|e| {
                self.error(format!("{}: unexpected answer", what()))
                    .caused_by(e)
            }),
            404 => Ok(None),
            _ => Err(self.error(format!(
                "{}: HTTP {status}: {}",
                what(),
                String::from_utf8_lossy(&body).trim()
            ))),
        }
    }

    /// `GET /containers/json?all=1`, read as plain JSON. bollard's typed summary rejects states other
    /// engines report (Podman's `stopped`), and one such container would break every listing.
    async fn list_containers(
        &self,
        filter: Option<(&str, &str)>,
    ) -> Result<Vec<serde_json::Value>> {
        let engine = self.engine().await?;
        let mut path = "/containers/json?all=1".to_owned();
        if let Some((key, value)) = filter {
            let filters = serde_json::json!({ key: [value] }).to_string();
            path.push_str("&filters=");
            path.push_str(&percent_encode(&filters));
        }
        let (status, body) = http_get(&engine.endpoint, &path).await.map_err(|e| {
            self.error(format!("listing containers at {}", engine.address))
                .caused_by(e)
        })?;
        if status != 200 {
            return Err(self.error(format!(
                "listing containers at {}: HTTP {status}: {}",
                engine.address,
                String::from_utf8_lossy(&body).trim()
            )));
        }
        serde_json::from_slice(&body).map_err(|e| {
            self.error(format!(
                "listing containers at {}: unexpected answer",
                engine.address
            ))
            .caused_by(e)
        })
    }
    // ---- the steps of a checkout, in call order ----

    /// The image to run and the ports to publish: the image's exposed ports when auto-mapping (which
    /// needs the image here, so it is looked for or pulled first), then the `ports` argument.
    async fn port_bindings(
        &self,
        docker: &Docker,
        wanted: &str,
        args: &Mapping,
    ) -> Result<(String, PortBindings)> {
        let mut image = wanted.to_owned();
        let mut bindings = PortBindings::new();
        if self.settings.auto_map_ports.unwrap_or(false) {
            image = self.ensure_image(wanted).await?;
            let inspect = docker
                .inspect_image(&image)
                .await
                .map_err(|e| self.engine_error("inspecting image", e))?;
            for port in inspect
                .config
                .and_then(|c| c.exposed_ports)
                .unwrap_or_default()
            {
                bindings.insert(port, Some(vec![PortBinding::default()]));
            }
        }
        if let Some(spec) = args.get("ports") {
            for (port, host_port) in
                parse_ports(&text(spec).unwrap_or_default()).map_err(Error::user)?
            {
                let binding = PortBinding {
                    host_ip: None,
                    host_port: host_port.map(|p| p.to_string()),
                };
                bindings.insert(port, Some(vec![binding]));
            }
        }
        Ok((image, bindings))
    }

    /// The networks of the `network` setting, each checked to exist on the engine.
    async fn networks(&self, docker: &Docker, engine: &Engine) -> Result<Vec<String>> {
        let networks: Vec<String> = self
            .settings
            .network
            .as_ref()
            .map(|n| {
                n.split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        for network in &networks {
            match docker.inspect_network(network, None).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {
                    return Err(Error::user(format!(
                        "network '{network}' not found on container host {}; create it or change the `network` setting",
                        engine.address
                    )));
                }
                Err(e) => {
                    return Err(self.engine_error(&format!("inspecting network {network}"), e));
                }
            }
        }
        Ok(networks)
    }

    /// What to create: image, command, environment, labels, ports, volumes and networks.
    fn create_body(
        &self,
        ctx: &CheckoutContext<'_>,
        image: String,
        bindings: PortBindings,
        networks: Vec<String>,
    ) -> ContainerCreateBody {
        let args = ctx.args();
        let mut env = parse_environment(args.get("environment"));
        if let Some(origin) = ctx.arg("_broker_origin") {
            env.push(format!("BROKER_ORIGIN={origin}"));
        }
        let endpoints: HashMap<String, EndpointSettings> = networks
            .iter()
            .map(|n| (n.clone(), EndpointSettings::default()))
            .collect();
        ContainerCreateBody {
            image: Some(image),
            hostname: ctx.arg("hostname").map(str::to_owned),
            cmd: args.get("command").map(command_words),
            entrypoint: args.get("entrypoint").map(command_words),
            env: Some(env),
            labels: Some(self.labels(ctx)),
            exposed_ports: Some(bindings.keys().cloned().collect()),
            host_config: Some(HostConfig {
                port_bindings: Some(bindings),
                binds: args.get("volumes").map(list_of),
                network_mode: networks.first().cloned(),
                ..Default::default()
            }),
            networking_config: (!endpoints.is_empty()).then_some(NetworkingConfig {
                endpoints_config: Some(endpoints),
            }),
            ..Default::default()
        }
    }

    /// Creates the container named `name` and starts it; returns the engine's answer and the image
    /// it runs. It creates first and looks for the image (pulling it) only when the engine does not
    /// have it: one round trip fewer on the common path.
    async fn create_and_start(
        &self,
        docker: &Docker,
        ctx: &CheckoutContext<'_>,
        wanted: &str,
        name: &str,
        body: ContainerCreateBody,
    ) -> Result<(ContainerCreateResponse, String)> {
        let mut image = body.image.clone().unwrap_or_else(|| wanted.to_owned());
        let options = CreateContainerOptions {
            name: Some(name.to_owned()),
            ..Default::default()
        };
        let record = ctx.record_id();
        let created = match self
            .create_container(docker, record, options.clone(), body.clone())
            .await?
        {
            Err(e) if is_not_found(&e) => {
                image = self.ensure_image(wanted).await?;
                let body = ContainerCreateBody {
                    image: Some(image.clone()),
                    ..body
                };
                self.create_container(docker, record, options, body).await?
            }
            other => other,
        }
        .map_err(|e| self.engine_error(&format!("creating container {name} from {image}"), e))?;
        docker
            .start_container(name, None)
            .await
            .map_err(|e| self.engine_error(&format!("starting container {name}"), e))?;
        Ok((created, image))
    }

    /// The host ports the running container's ports are published on, by bare container port
    /// (`"22": "32768"`).
    async fn published_ports(&self, docker: &Docker, name: &str) -> Result<Mapping> {
        let inspect = docker
            .inspect_container(name, None)
            .await
            .map_err(|e| self.engine_error(&format!("inspecting container {name}"), e))?;
        let mut exposed = Mapping::new();
        for (port, binds) in inspect
            .network_settings
            .and_then(|n| n.ports)
            .unwrap_or_default()
        {
            let host_port = binds.and_then(|b| b.into_iter().find_map(|b| b.host_port));
            if let Some(host_port) = host_port.filter(|p| !p.is_empty()) {
                let bare = port.split('/').next().unwrap_or(&port).to_owned();
                exposed.insert(bare.into(), host_port.into());
            }
        }
        Ok(exposed)
    }
    // ---- the steps of `execute`, in call order ----

    /// Starts the app container `name`, waits for it to exit, and returns its output and exit status.
    async fn run_app(&self, docker: &Docker, name: &str) -> Result<(String, i64)> {
        docker
            .start_container(name, None)
            .await
            .map_err(|e| self.engine_error("starting the app container", e))?;
        let mut wait = docker.wait_container(name, None::<WaitContainerOptions>);
        let mut status = 0;
        while let Some(item) = wait.next().await {
            match item {
                Ok(r) => status = r.status_code,
                // Non-zero exits surface as an error carrying the code.
                Err(EngineError::DockerContainerWaitError { code, .. }) => status = code,
                Err(e) => return Err(self.engine_error("waiting for the app container", e)),
            }
        }
        let mut logs = docker.logs(
            name,
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                ..Default::default()
            }),
        );
        let mut output = String::new();
        while let Some(chunk) = logs.next().await {
            let chunk =
                chunk.map_err(|e| self.engine_error("reading the app container's output", e))?;
            output.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
        Ok((output, status))
    }

    /// Removes the app container `name`, whatever its run came to; a failure is logged.
    async fn remove_app(&self, docker: &Docker, name: &str) {
        let removal = docker
            .remove_container(
                name,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                }),
            )
            .await;
        if let Err(e) = removal
            && !is_not_found(&e)
        {
            tracing::warn!("removing app container {name}: {}", engine_message(&e));
        }
    }
}

/// Ports to publish, by container port (`22/tcp`), as the engine takes them.
type PortBindings = HashMap<String, Option<Vec<PortBinding>>>;

/// The fields a checkout records: host name, name, image, short id and published ports. The host name
/// is what was asked for, else (Docker and Podman alike) the short id; with port 22 published, the
/// engine's host and that port.
fn host_fields(
    ctx: &CheckoutContext<'_>,
    engine: &Engine,
    created: ContainerCreateResponse,
    name: String,
    image: String,
    exposed: Mapping,
) -> Mapping {
    let short_id: String = created.id.chars().take(12).collect();
    let hostname = match exposed.get("22").and_then(Value::as_str) {
        Some(port) => format!("{}:{port}", engine.public_host),
        None => ctx
            .arg("hostname")
            .map(str::to_owned)
            .unwrap_or_else(|| short_id.clone()),
    };
    let mut fields = Mapping::new();
    fields.insert("hostname".into(), hostname.into());
    fields.insert("name".into(), name.into());
    fields.insert("image".into(), image.into());
    fields.insert("container_id".into(), short_id.into());
    if !exposed.is_empty() {
        fields.insert("exposed_ports".into(), Value::Mapping(exposed));
    }
    fields
}

/// One HTTP/1.0 GET (no chunked encoding, connection closed by the server) on the engine's socket.
async fn http_get(endpoint: &Endpoint, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: localhost\r\nAccept: application/json\r\n\r\n");
    let mut response = Vec::new();
    match endpoint {
        Endpoint::Unix(socket) => {
            let mut stream = tokio::net::UnixStream::connect(socket).await?;
            stream.write_all(request.as_bytes()).await?;
            stream.read_to_end(&mut response).await?;
        }
        Endpoint::Tcp(addr) => {
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            stream.write_all(request.as_bytes()).await?;
            stream.read_to_end(&mut response).await?;
        }
    }
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid("no HTTP header in the answer"))?;
    let head = String::from_utf8_lossy(&response[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| invalid("no HTTP status in the answer"))?;
    Ok((status, response[split + 4..].to_vec()))
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[async_trait::async_trait]
impl Provider for ContainerProvider {
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
        let wanted = ctx.arg("container_host").ok_or_else(|| {
            Error::user("container_host needs an image name, e.g. `--container-host fedora:40`")
        })?;
        lock(&self.nothing_sent).insert(ctx.record_id().to_string());
        let engine = self.engine().await?;
        let docker = &self.docker().await?;
        let (image, bindings) = self.port_bindings(docker, wanted, ctx.args()).await?;
        let networks = self.networks(docker, engine).await?;
        let name = self.planned_name(ctx);
        let publishes = !bindings.is_empty();
        let body = self.create_body(ctx, image, bindings, networks);
        let (created, image) = self
            .create_and_start(docker, ctx, wanted, &name, body)
            .await?;
        // Published ports are only known once the container runs; without any, nothing to ask.
        let exposed = if publishes {
            self.published_ports(docker, &name).await?
        } else {
            Mapping::new()
        };
        Ok(host_fields(ctx, engine, created, name, image, exposed))
    }

    async fn checkin(&self, host: &HostRecord) -> Result<()> {
        if lock(&self.nothing_sent).remove(host.id().as_str()) {
            tracing::debug!(host = %host.display_name(), "no container was asked for; nothing to remove");
            return Ok(());
        }
        let docker = self.docker().await?;
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        for container in self.containers_of(host).await? {
            match docker
                .remove_container(&container, Some(options.clone()))
                .await
            {
                Ok(()) => {}
                // Already gone (or being removed by someone else) is checked in.
                Err(e) if is_not_found(&e) || is_conflict_removal(&e) => {}
                Err(e) => {
                    return Err(self.engine_error(&format!("removing container {container}"), e));
                }
            }
        }
        Ok(())
    }

    async fn extend(&self, host: &HostRecord, _args: &Mapping) -> Result<()> {
        tracing::info!(host = %host.display_name(), "containers have no lease to extend; nothing to do");
        Ok(())
    }

    async fn execute(&self, args: &Mapping) -> Result<Value> {
        let image = args
            .get("container_app")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::user("container_app needs an image name"))?;
        let image = self.ensure_image(image).await?;
        let docker = self.docker().await?;
        let name = format!(
            "{}_app_{}",
            self.prefix,
            broker_core::RecordId::generate()
                .as_str()
                .trim_start_matches('h')
                .chars()
                .take(8)
                .collect::<String>()
        );
        let mut labels = HashMap::from([(LABEL_MANAGED.to_owned(), "true".to_owned())]);
        labels.insert("broker.app".to_owned(), "true".to_owned());
        let body = ContainerCreateBody {
            image: Some(image.clone()),
            cmd: args.get("command").map(command_words),
            env: Some(parse_environment(args.get("environment"))),
            labels: Some(labels),
            ..Default::default()
        };
        docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(|e| self.engine_error(&format!("creating container from {image}"), e))?;
        let run = self.run_app(&docker, &name).await;
        self.remove_app(&docker, &name).await;
        let (output, status) = run?;
        let mut out = Mapping::new();
        out.insert("output".into(), output.into());
        out.insert("status".into(), status.into());
        Ok(Value::Mapping(out))
    }

    async fn help(&self, query: &Mapping) -> Result<Value> {
        let docker = self.docker().await?;
        let detail = query
            .get("container_host")
            .or_else(|| query.get("container_app"))
            .and_then(Value::as_str);
        if let Some(image) = detail {
            let inspect = docker
                .inspect_image(image)
                .await
                .map_err(|e| self.engine_error(&format!("inspecting image {image}"), e))?;
            let mut out = Mapping::new();
            out.insert("id".into(), inspect.id.unwrap_or_default().into());
            out.insert(
                "tags".into(),
                Value::Sequence(
                    inspect
                        .repo_tags
                        .unwrap_or_default()
                        .into_iter()
                        .map(Value::from)
                        .collect(),
                ),
            );
            out.insert("size".into(), inspect.size.unwrap_or_default().into());
            if let Some(config) = inspect.config {
                let config = broker_core::value::to_yaml(&config);
                out.insert("config".into(), config);
            }
            return Ok(Value::Mapping(out));
        }
        let filters = query
            .contains_key("container_hosts")
            .then(|| HashMap::from([("label".to_owned(), vec!["broker_compatible".to_owned()])]));
        let images = docker
            .list_images(Some(ListImagesOptions {
                filters,
                ..Default::default()
            }))
            .await
            .map_err(|e| self.engine_error("listing images", e))?;
        let mut tags: Vec<String> = images
            .into_iter()
            .flat_map(|i| i.repo_tags)
            .filter(|t| t != "<none>:<none>")
            .collect();
        tags.sort();
        Ok(Value::Sequence(tags.into_iter().map(Value::from).collect()))
    }

    async fn inventory(&self, filter: Option<&str>) -> Result<Vec<HostRecord>> {
        let containers = self.list_containers(None).await?;
        let public_host = self.engine().await?.public_host.clone();
        let prefix = filter.unwrap_or(&self.prefix);
        let mut records = Vec::new();
        for c in containers {
            let field = |key: &str| {
                c.get(key)
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            let label = |key: &str| {
                c.get("Labels")
                    .and_then(|l| l.get(key))
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned)
            };
            let name = c
                .get("Names")
                .and_then(|n| n.get(0))
                .and_then(serde_json::Value::as_str)
                .map(|n| n.trim_start_matches('/').to_owned())
                .unwrap_or_default();
            if !self.lists(label(LABEL_INVENTORY).as_deref(), &name, prefix) {
                continue;
            }
            let mut record = HostRecord::default();
            if let Some(id) = label(LABEL_RECORD) {
                record.set(broker_core::record::fields::ID, id);
            }
            if let Some(at) = label(LABEL_EXPIRE).and_then(|at| at.parse::<i64>().ok()) {
                record.set(broker_core::record::fields::EXPIRE_TIME, at);
            }
            // When the engine made it (`Created`, seconds since the epoch): an orphan's age.
            if let Some(made) = c.get("Created").and_then(serde_json::Value::as_i64) {
                record.set(broker_core::record::fields::CHECKOUT_TIME, made);
            }
            record.set(broker_core::record::fields::PROVIDER, NAME);
            if let Some(instance) = self.config.instance() {
                record.set(broker_core::record::fields::PROVIDER_INSTANCE, instance);
            }
            let image = field("Image");
            let mut args = Mapping::new();
            args.insert("container_host".into(), image.clone().into());
            if let Some(origin) = label("broker.origin") {
                args.insert("_broker_origin".into(), origin.into());
            }
            record.set(broker_core::record::fields::ARGS, Value::Mapping(args));
            record.set("name", name.as_str());
            // Named as a checkout names it (`hostname` there): the published SSH port, else the
            // short id — a sync must not rename the hosts `broker ssh` and `checkin` know.
            let short_id: String = field("Id").chars().take(12).collect();
            let ssh_port = c
                .get("Ports")
                .and_then(serde_json::Value::as_array)
                .into_iter()
                .flatten()
                .find(|p| p.get("PrivatePort").and_then(serde_json::Value::as_u64) == Some(22))
                .and_then(|p| p.get("PublicPort").and_then(serde_json::Value::as_u64));
            let hostname = match ssh_port {
                Some(port) => format!("{public_host}:{port}"),
                None => short_id.clone(),
            };
            record.set("hostname", hostname);
            record.set("image", image);
            record.set("type", "host");
            record.set("container_id", short_id);
            record.set("status", field("State"));
            records.push(record);
        }
        Ok(records)
    }

    async fn connect(&self, host: &HostRecord) -> Result<Box<dyn Session>> {
        // With port 22 published the host is reached over SSH, as upstream does.
        #[cfg(feature = "ssh")]
        if host
            .get("exposed_ports")
            .and_then(Value::as_mapping)
            .is_some_and(|p| p.contains_key("22"))
        {
            return crate::ssh::connect_host(host, &self.config).await;
        }
        let container = host
            .name()
            .map(str::to_owned)
            .or_else(|| {
                host.get("container_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .ok_or_else(|| Error::Host {
                host: host.display_name(),
                message: "the record names no container".into(),
                source: None,
            })?;
        Ok(Box::new(ContainerSession {
            docker: self.docker().await?,
            engine: self.engine().await?.endpoint.url(),
            container,
            host: host.display_name(),
        }))
    }
}

/// Runs commands with `docker exec` and moves files through the archive API.
#[derive(Debug)]
struct ContainerSession {
    docker: Docker,
    /// The engine's API, as another client reaches it (`unix://…`, `tcp://…`).
    engine: String,
    container: String,
    host: String,
}

impl ContainerSession {
    fn host_error(&self, message: impl Into<String>) -> Error {
        Error::Host {
            host: self.host.clone(),
            message: message.into(),
            source: None,
        }
    }

    async fn run(&self, argv: Vec<String>, sink: Option<OutputSink<'_>>) -> Result<ExecOutput> {
        let exec = self
            .docker
            .create_exec(
                &self.container,
                CreateExecOptions {
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(argv),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| self.gone_or(e, "starting a command"))?;
        let started = self
            .docker
            .start_exec(&exec.id, None::<StartExecOptions>)
            .await
            .map_err(|e| self.gone_or(e, "starting a command"))?;
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        if let StartExecResults::Attached { mut output, .. } = started {
            while let Some(chunk) = output.next().await {
                match chunk.map_err(|e| {
                    self.host_error("reading command output")
                        .caused_by(EngineFailure(e))
                })? {
                    LogOutput::StdOut { message } | LogOutput::Console { message } => {
                        if let Some(sink) = sink {
                            sink(OutputStream::Stdout, &message);
                        }
                        stdout.extend_from_slice(&message)
                    }
                    LogOutput::StdErr { message } => {
                        if let Some(sink) = sink {
                            sink(OutputStream::Stderr, &message);
                        }
                        stderr.extend_from_slice(&message)
                    }
                    LogOutput::StdIn { .. } => {}
                }
            }
        }
        let inspect = self.docker.inspect_exec(&exec.id).await.map_err(|e| {
            self.host_error("reading the exit status")
                .caused_by(EngineFailure(e))
        })?;
        let status = inspect
            .exit_code
            .ok_or_else(|| self.host_error("the engine reported no exit status for the command"))?;
        Ok(ExecOutput {
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            status: status as i32,
        })
    }

    /// Runs `sh -c COMMAND` (the command is one argument, so no quoting pitfalls), bounded by `timeout`.
    async fn exec_command(
        &self,
        command: &str,
        timeout: Option<Duration>,
        sink: Option<OutputSink<'_>>,
    ) -> Result<ExecOutput> {
        // The command is one argument of `sh -c`; its shell's pid is kept, and its processes
        // marked, so a timeout can kill it and all it started.
        let marker = crate::shell::pid_marker();
        let script = format!(
            "{}echo $$ > {marker}; sh -c \"$1\"; status=$?; rm -f {marker}; exit $status",
            crate::shell::marking(&marker)
        );
        let argv = vec![
            "sh".into(),
            "-c".into(),
            script,
            "broker-exec".into(),
            command.to_owned(),
        ];
        let Some(limit) = timeout else {
            return self.run(argv, sink).await;
        };
        match tokio::time::timeout(limit, self.run(argv, sink)).await {
            Ok(result) => result,
            Err(_) => {
                // Kill the command's process tree, children first, found through /proc (no ps/pkill
                // needed in the image).
                let kill = crate::shell::kill_tree(&marker);
                match self.run(vec!["sh".into(), "-c".into(), kill], None).await {
                    Ok(out) if out.success() => {}
                    Ok(out) => {
                        tracing::warn!(host = %self.host, "stopping a timed-out command: {}", out.stderr.trim())
                    }
                    Err(e) => {
                        tracing::warn!(host = %self.host, "stopping a timed-out command: {}", broker_core::error::chain(&e))
                    }
                }
                Err(Error::Timeout {
                    operation: format!("`{command}` on {}", self.host),
                    after: limit,
                })
            }
        }
    }

    fn gone_or(&self, e: EngineError, doing: &str) -> Error {
        if is_not_found(&e) {
            self.host_error(format!(
                "container {} no longer exists; check the host in",
                self.container
            ))
        } else {
            self.host_error(doing).caused_by(EngineFailure(e))
        }
    }
}

#[async_trait::async_trait]
impl Session for ContainerSession {
    async fn execute(&self, command: &str, timeout: Option<Duration>) -> Result<ExecOutput> {
        self.exec_command(command, timeout, None).await
    }

    fn access(&self) -> Option<Access> {
        Some(Access::Container(ContainerAccess::new(
            &self.engine,
            &self.container,
        )))
    }

    async fn execute_streaming(
        &self,
        command: &str,
        timeout: Option<Duration>,
        sink: OutputSink<'_>,
    ) -> Result<ExecOutput> {
        self.exec_command(command, timeout, Some(sink)).await
    }

    async fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        let mut stream = self.docker.download_from_container(
            &self.container,
            Some(DownloadFromContainerOptions {
                path: path.to_owned(),
            }),
        );
        let mut archive = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| match &e {
                e2 if is_not_found(e2) => self.host_error(format!("no such file: {path}")),
                _ => self
                    .host_error(format!("reading {path}"))
                    .caused_by(EngineFailure(e)),
            })?;
            archive.extend_from_slice(&chunk);
        }
        let mut tar = tar::Archive::new(std::io::Cursor::new(archive));
        let entries = tar.entries().map_err(|e| {
            self.host_error(format!("reading {path}: bad archive"))
                .caused_by(e)
        })?;
        for entry in entries {
            let mut entry = entry.map_err(|e| {
                self.host_error(format!("reading {path}: bad archive"))
                    .caused_by(e)
            })?;
            if entry.header().entry_type().is_file() {
                let mut contents = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut contents)
                    .map_err(|e| self.host_error(format!("reading {path}")).caused_by(e))?;
                return Ok(contents);
            }
        }
        Err(self.host_error(format!("{path} is not a regular file")))
    }

    async fn write_file(&self, path: &str, contents: &[u8]) -> Result<()> {
        let (dir, file) = match path.rsplit_once('/') {
            Some(("", f)) => ("/".to_owned(), f.to_owned()),
            Some((d, f)) => (d.to_owned(), f.to_owned()),
            None => (".".to_owned(), path.to_owned()),
        };
        if file.is_empty() {
            return Err(self.host_error(format!("{path} names a directory, not a file")));
        }
        let made = self
            .run(vec!["mkdir".into(), "-p".into(), dir.clone()], None)
            .await?;
        if !made.success() {
            return Err(self.host_error(format!("creating {dir}: {}", made.stderr.trim())));
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(broker_core::time::now_epoch().max(0) as u64);
        let mut builder = tar::Builder::new(Vec::new());
        builder
            .append_data(&mut header, &file, contents)
            .map_err(|e| self.host_error(format!("packing {path}")).caused_by(e))?;
        let archive = builder
            .into_inner()
            .map_err(|e| self.host_error(format!("packing {path}")).caused_by(e))?;
        self.docker
            .upload_to_container(
                &self.container,
                Some(UploadToContainerOptions {
                    path: dir,
                    ..Default::default()
                }),
                bollard::body_full(archive.into()),
            )
            .await
            .map_err(|e| self.gone_or(e, &format!("writing {path}")))
    }
}

/// "No such container" is a 404 — and, from Podman, a 500 when the container went away while the
/// engine was looking it up (a removal racing an inspect or another removal).
fn is_not_found(e: &EngineError) -> bool {
    match e {
        EngineError::DockerResponseServerError {
            status_code: 404, ..
        } => true,
        EngineError::DockerResponseServerError {
            status_code: 500,
            message,
        } => message.contains("no such container"),
        _ => false,
    }
}

/// "removal already in progress" is a 409 for Docker; treat as gone.
fn is_conflict_removal(e: &EngineError) -> bool {
    matches!(e, EngineError::DockerResponseServerError { status_code: 409, message } if message.contains("in progress"))
}

/// An engine client's error, kept as the cause of a provider error and shown as [`engine_message`]
/// says (the client's type stays out of broker's API).
#[derive(Debug)]
struct EngineFailure(EngineError);

impl std::fmt::Display for EngineFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&engine_message(&self.0))
    }
}

/// Its text already says what the engine said: the client error's own causes would repeat it.
impl std::error::Error for EngineFailure {}

fn engine_message(e: &EngineError) -> String {
    match e {
        EngineError::DockerResponseServerError {
            status_code,
            message,
        } => format!("{message} (HTTP {status_code})"),
        other => other.to_string(),
    }
}

/// `22`, `22:1337`, `22/tcp:1337`, space or comma separated → (`22/tcp`, host port).
fn parse_ports(spec: &str) -> std::result::Result<Vec<(String, Option<u16>)>, String> {
    spec.split([' ', ','])
        .filter(|p| !p.is_empty())
        .map(|part| {
            let bad = || format!("`{part}` is not a port; write `22`, `22:1337` or `22/tcp:1337`");
            let (container, host) = match part.split_once(':') {
                Some((c, h)) => (c, Some(h.parse::<u16>().map_err(|_| bad())?)),
                None => (part, None),
            };
            let (port, proto) = container.split_once('/').unwrap_or((container, "tcp"));
            port.parse::<u16>().map_err(|_| bad())?;
            if !matches!(proto, "tcp" | "udp" | "sctp") {
                return Err(bad());
            }
            Ok((format!("{port}/{proto}"), host))
        })
        .collect()
}

/// `environment`: a mapping, or `A=1,B=2`.
fn parse_environment(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Mapping(m)) => m
            .iter()
            .filter_map(|(k, v)| Some(format!("{}={}", text(k)?, text(v).unwrap_or_default())))
            .collect(),
        Some(Value::String(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// A list argument: a YAML list, or comma-separated text.
fn list_of(value: &Value) -> Vec<String> {
    match value {
        Value::Sequence(items) => items.iter().filter_map(text).collect(),
        other => text(other)
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// A command: a YAML list as it is, or text split like a shell would (quotes and backslashes).
fn command_words(value: &Value) -> Vec<String> {
    if let Value::Sequence(items) = value {
        return items.iter().filter_map(text).collect();
    }
    let line = text(value).unwrap_or_default();
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => current.extend(chars.next()),
            (Some(_), c) => current.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                current.extend(chars.next());
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            (None, c) => {
                current.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(current);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_gone_during_an_engine_lookup_counts_as_gone() {
        let error = |status_code: u16, message: &str| EngineError::DockerResponseServerError {
            status_code,
            message: message.to_owned(),
        };
        assert!(is_not_found(&error(404, "no such container")));
        // What Podman answered when a removal raced an inspect, seen in the conformance kit.
        assert!(is_not_found(&error(
            500,
            "container 73ed06170fba does not exist in database: no such container"
        )));
        assert!(!is_not_found(&error(500, "database is locked")));
        assert!(!is_not_found(&error(409, "no such container")));
    }

    /// The SSH arguments a checkout takes are exactly those a host reached over SSH reads.
    #[cfg(feature = "ssh")]
    #[test]
    fn checkout_takes_the_ssh_arguments_its_ssh_hosts_read() {
        let given: Mapping = serde_yaml::from_str(
            "{container_host: x, host_username: u, host_password: p, host_ssh_port: 2222, \
              host_ssh_key_filename: /k, host_connection_timeout: 7, host_key_checking: off, \
              known_hosts: /kh, host_ipv6: true, host_ipv4_fallback: false}",
        )
        .unwrap();
        KIND.check_arguments(Operation::Checkout, &given).unwrap();
        let ssh_keys: Vec<&str> = given.keys().filter_map(Value::as_str).skip(1).collect();
        let declared: Vec<&str> = CHECKOUT_ARGUMENTS
            .iter()
            .copied()
            .filter(|k| k.starts_with("host_") || *k == "known_hosts")
            .collect();
        assert_eq!(ssh_keys, declared);
        let mut record = HostRecord::default();
        record.set(broker_core::record::fields::ARGS, Value::Mapping(given));
        let options =
            crate::ssh::SshOptions::resolve(&Mapping::new(), Some(&record), Path::new("/b"))
                .unwrap();
        assert_eq!(options.username, "u");
        assert_eq!(options.port, 2222);
        assert_eq!(options.key_filename, Some(PathBuf::from("/k")));
        assert_eq!(options.connection_timeout, Duration::from_secs(7));
        assert_eq!(options.host_key_policy, crate::ssh::HostKeyPolicy::Off);
        assert_eq!(options.known_hosts, PathBuf::from("/kh"));
        assert!(options.ipv6 && !options.ipv4_fallback);
        assert!(options.password.is_some());
        // Their short spellings are not taken: `port` would hide a mistyped `ports`.
        let err = KIND
            .check_arguments(
                Operation::Checkout,
                &serde_yaml::from_str("{container_host: x, port: 22}").unwrap(),
            )
            .unwrap_err();
        assert!(err.to_string().contains("did you mean `ports`?"), "{err}");
    }

    #[test]
    fn port_forms_match_upstream() {
        assert_eq!(
            parse_ports("22 8080:80,53/udp:5353").unwrap(),
            vec![
                ("22/tcp".to_owned(), None),
                ("8080/tcp".to_owned(), Some(80)),
                ("53/udp".to_owned(), Some(5353))
            ]
        );
        assert!(parse_ports("ssh").is_err());
        assert!(parse_ports("22/xyz").is_err());
    }

    #[test]
    fn environment_from_mapping_or_text() {
        let m: Value = serde_yaml::from_str("{A: 1, B: two}").unwrap();
        assert_eq!(parse_environment(Some(&m)), vec!["A=1", "B=two"]);
        assert_eq!(
            parse_environment(Some(&Value::from("A=1, B=2"))),
            vec!["A=1", "B=2"]
        );
    }

    #[test]
    fn commands_split_like_a_shell() {
        assert_eq!(
            command_words(&Value::from(r#"sh -c 'echo "hi there"' x\ y"#)),
            vec!["sh", "-c", r#"echo "hi there""#, "x y"]
        );
        assert_eq!(command_words(&Value::from("")), Vec::<String>::new());
    }

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            Endpoint::parse("unix:///run/x.sock"),
            Some(Endpoint::Unix("/run/x.sock".into()))
        );
        assert_eq!(
            Endpoint::parse("tcp://h:2375"),
            Some(Endpoint::Tcp("h:2375".into()))
        );
        assert_eq!(
            Endpoint::parse("/var/run/docker.sock"),
            Some(Endpoint::Unix("/var/run/docker.sock".into()))
        );
        assert_eq!(Endpoint::parse("ssh://u@h"), None);
        assert_eq!(Endpoint::Tcp("h:2375".into()).public_host(), "h");
    }

    fn provider(settings: &str) -> ContainerProvider {
        let settings = Settings::from_yaml("/nonexistent", settings).unwrap();
        let config = settings.provider_config(NAME, None).unwrap();
        ContainerProvider {
            prefix: "t".into(),
            settings: ContainerSettings::from_section(&config).unwrap(),
            engine: tokio::sync::OnceCell::new(),
            creating: Mutex::new(HashMap::new()),
            nothing_sent: Mutex::new(std::collections::HashSet::new()),
            config,
        }
    }

    /// The Python broker's example section reads without a problem; a typo is named with the key
    /// meant, and a value of the wrong kind with its key and line.
    #[test]
    fn settings_read_the_python_brokers_section_and_name_what_is_wrong() {
        let upstream = Settings::from_yaml("/b", broker_core::settings::EXAMPLE_SETTINGS).unwrap();
        for instance in ["docker", "remote"] {
            let config = upstream.provider_config(NAME, Some(instance)).unwrap();
            assert_eq!(ContainerSettings::problems(&config), [], "{instance}");
        }
        let docker = upstream.provider_config(NAME, Some("docker")).unwrap();
        let read = ContainerSettings::from_section(&docker).unwrap();
        assert_eq!((read.host_port, read.auto_map_ports), (None, Some(false)));
        let settings = Settings::from_yaml(
            "/b",
            "Container:\n  nam_prefix: me\n  host_port: '2376'\n  auto_map_ports: maybe\n",
        )
        .unwrap();
        let config = settings.provider_config(NAME, None).unwrap();
        let problems: Vec<String> = ContainerSettings::problems(&config)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            problems,
            [
                "line 2: `Container.nam_prefix`: unknown key, ignored; did you mean `name_prefix`? rename or remove it"
            ]
        );
        let err = ContainerSettings::from_section(&config).unwrap_err();
        assert_eq!(
            err.to_string(),
            "configuration error: `Container.auto_map_ports` (broker_settings.yaml line 4): `maybe` is not true or false"
        );
        let config = Settings::from_yaml("/b", "Container: {host: h, host_port: '2376'}\n")
            .unwrap()
            .provider_config(NAME, None)
            .unwrap();
        assert_eq!(
            ContainerSettings::from_section(&config).unwrap().host_port,
            Some(2376)
        );
    }

    /// A host's lease travels with its container, so that it can be reaped when its record is gone.
    #[test]
    fn a_lease_is_labelled_on_the_container() {
        let id = broker_core::RecordId::from("h0123456789abcdef");
        let args = Mapping::new();
        let leased = CheckoutContext::new(&id, &args, 0).with_expire_time(Some(1_924_992_000));
        let labels = provider("{}").labels(&leased);
        assert_eq!(
            labels.get(LABEL_EXPIRE).map(String::as_str),
            Some("1924992000")
        );
        assert_eq!(
            labels.get(LABEL_RECORD).map(String::as_str),
            Some("h0123456789abcdef")
        );
        let unleased = provider("{}").labels(&CheckoutContext::new(&id, &args, 0));
        assert!(!unleased.contains_key(LABEL_EXPIRE), "{unleased:?}");
    }

    /// Each container names the inventory of its record, and a listing of one inventory shows its
    /// own containers, never another's, and unlabelled ones only by their name.
    #[test]
    fn a_container_is_labelled_with_its_inventory_and_listed_only_there() {
        let id = broker_core::RecordId::from("h0123456789abcdef");
        let args = Mapping::new();
        let here = provider("{}");
        let mine = here.config.inventory_id().to_owned();
        assert_eq!(mine.len(), 16, "{mine}");
        let labels = here.labels(&CheckoutContext::new(&id, &args, 0));
        assert_eq!(labels.get(LABEL_INVENTORY), Some(&mine));
        assert!(here.lists(Some(&mine), "anything", "t"));
        assert!(!here.lists(Some("0123456789abcdef"), "t_0123", "t"));
        assert!(here.lists(None, "t_0123", "t"));
        assert!(!here.lists(None, "u_0123", "t"));
        assert!(!here.lists(None, "t_0123", ""));
    }

    /// An engine failure is kept as the provider error's source, shown as the engine said it.
    #[test]
    fn an_engine_error_is_kept_as_the_source() {
        let err = provider("{}").engine_error(
            "inspecting image x",
            EngineError::DockerResponseServerError {
                status_code: 404,
                message: "no such image".into(),
            },
        );
        assert_eq!(err.to_string(), "Container: inspecting image x");
        let cause = std::error::Error::source(&err).expect("the engine's error is the source");
        assert_eq!(cause.to_string(), "no such image (HTTP 404)");
        assert_eq!(
            broker_core::error::chain(&err),
            "Container: inspecting image x: no such image (HTTP 404)"
        );
        assert_eq!(err.exit_code(), 7);
    }

    /// The engine asked for: the setting `socket`, then `host`/`host_port`, then `$CONTAINER_HOST`,
    /// then `$DOCKER_HOST`, each named as where it came from.
    #[test]
    fn the_engine_asked_for_is_the_first_of_socket_host_container_host_docker_host() {
        let env = |container: &'static str, docker: &'static str| {
            move |var: &str| match var {
                "CONTAINER_HOST" => Some(container.to_owned()),
                "DOCKER_HOST" => Some(docker.to_owned()),
                _ => None,
            }
        };
        let both = env("tcp://c:1", "unix:///d.sock");
        let asked = |settings: &str, env: &dyn Fn(&str) -> Option<String>| {
            provider(settings)
                .asked_for_in(env)
                .unwrap()
                .map(|(source, endpoint)| (source, endpoint.describe()))
        };
        let all = "Container:\n  socket: /s.sock\n  host: h\n  host_port: 2376\n";
        assert_eq!(
            asked(all, &both),
            Some(("setting `socket`".into(), "unix:///s.sock".into()))
        );
        assert_eq!(
            asked("Container:\n  host: h\n  host_port: 2376\n", &both),
            Some(("settings `host`/`host_port`".into(), "tcp://h:2376".into()))
        );
        // `host: localhost` is the Python broker's default, not a choice.
        assert_eq!(
            asked("Container:\n  host: localhost\n", &both),
            Some(("$CONTAINER_HOST".into(), "tcp://c:1".into()))
        );
        assert_eq!(
            asked("", &env("", "unix:///d.sock")),
            Some(("$DOCKER_HOST".into(), "unix:///d.sock".into()))
        );
        assert_eq!(asked("", &|_: &str| None), None);
    }

    /// With none asked for: rootful Podman, rootless Podman of whoever runs broker, then Docker.
    #[test]
    fn discovery_tries_rootful_podman_then_rootless_podman_then_docker() {
        let tried = |runtime_dir: Option<&str>| -> Vec<(String, String)> {
            ContainerProvider::discovered_in(runtime_dir.map(Into::into))
                .into_iter()
                .map(|(what, endpoint)| (what, endpoint.describe()))
                .collect()
        };
        let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect()
        };
        assert_eq!(
            tried(Some("/run/user/4242")),
            pairs(&[
                ("rootful Podman", "unix:///run/podman/podman.sock"),
                (
                    "rootless Podman",
                    "unix:///run/user/4242/podman/podman.sock"
                ),
                ("Docker", "unix:///var/run/docker.sock"),
            ])
        );
        assert_eq!(
            tried(None),
            pairs(&[
                ("rootful Podman", "unix:///run/podman/podman.sock"),
                ("Docker", "unix:///var/run/docker.sock"),
            ])
        );
    }

    // ---- against the real engine (Podman via scripts/setup-podman) ----

    use broker_core::conformance::{Call, Effect, Fault, FaultInjector, When};
    use broker_core::{Broker, CheckoutRequest, ProviderRegistry, Settings};

    /// A broker on the engine that discovery finds, or `None` when none answers and
    /// `BROKER_ALLOW_SKIP=1` is set (without it, a missing engine fails the test).
    async fn engine_broker(dir: &Path, prefix: &str) -> Option<Broker> {
        let yaml = format!("Container:\n  name_prefix: {prefix}\n");
        let settings = Settings::from_yaml(dir, &yaml).unwrap();
        let broker = Broker::new(settings, ProviderRegistry::new().with(KIND)).unwrap();
        let probe = broker.provider_help(NAME, None, &Mapping::new()).await;
        broker_test_support::PODMAN
            .check(probe.map(|_| ()).map_err(|e| e.to_string()))
            .then_some(broker)
    }

    async fn containers_named(broker: &Broker, prefix: &str) -> Vec<String> {
        let config = broker.settings().provider_config(NAME, None).unwrap();
        let p = KIND.build(config).unwrap();
        let mut names: Vec<String> = p
            .inventory(Some(prefix))
            .await
            .unwrap()
            .iter()
            .filter_map(|r| r.name().map(str::to_owned))
            .filter(|n| n.starts_with(&format!("{prefix}_")))
            .collect();
        names.sort();
        names
    }

    /// This test's container-name prefix; its containers are removed when it ends, passed or not.
    fn prefix(test: &str) -> broker_test_support::Containers {
        broker_test_support::Containers::new(format!("bt{}{}", std::process::id(), test))
    }

    #[tokio::test]
    async fn real_engine_checkout_exec_files_checkin_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = prefix("exec");
        let Some(broker) = engine_broker(dir.path(), &prefix).await else {
            return;
        };
        let host = broker
            .checkout_one(
                CheckoutRequest::new()
                    .arg("container_host", "broker-busybox")
                    .arg("command", "sleep 3600")
                    .arg("environment", "GREETING=hello"),
            )
            .await
            .unwrap();
        assert_eq!(
            containers_named(&broker, &prefix).await,
            vec![host.name().unwrap().to_owned()]
        );
        let out = host
            .execute("echo $GREETING $BROKER_ORIGIN; echo oops >&2; exit 4")
            .await
            .unwrap();
        assert!(out.stdout.starts_with("hello "), "{out}");
        assert_eq!((out.stderr.as_str(), out.status), ("oops\n", 4));
        let seen = std::sync::Mutex::new(Vec::new());
        let sink = |stream: broker_core::OutputStream, bytes: &[u8]| {
            seen.lock().unwrap().push((stream, bytes.to_vec()));
        };
        let streamed = host
            .execute_streaming("echo one; sleep 0.2; echo two >&2", None, &sink)
            .await
            .unwrap();
        let seen = seen.into_inner().unwrap();
        assert_eq!(
            (streamed.stdout.as_str(), streamed.stderr.as_str()),
            ("one\n", "two\n")
        );
        assert_eq!(
            seen.first().map(|(s, b)| (*s, b.as_slice())),
            Some((broker_core::OutputStream::Stdout, &b"one\n"[..]))
        );
        // The command is one argument: quotes and metacharacters reach the shell unharmed.
        let tricky = host
            .execute(r#"printf '%s|' "a b" 'c"d' "$(echo e)""#)
            .await
            .unwrap();
        assert_eq!(tricky.stdout, r#"a b|c"d|e|"#);
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        host.write_file("/data/deep/blob.bin", &payload)
            .await
            .unwrap();
        assert_eq!(
            host.read_file("/data/deep/blob.bin").await.unwrap(),
            payload
        );
        assert!(matches!(
            host.read_file("/nope").await,
            Err(Error::Host { .. })
        ));
        let started = std::time::Instant::now();
        let err = host
            .execute_with_timeout("sleep 300", Duration::from_millis(500))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
        // Long before the command would have ended (a bound with room for a loaded machine).
        assert!(started.elapsed() < Duration::from_secs(120));
        let ps = host.execute("ps").await.unwrap();
        assert!(
            !ps.stdout.contains("sleep 300"),
            "the timed-out command was stopped:\n{}",
            ps.stdout
        );
        host.checkin().await.unwrap();
        assert!(containers_named(&broker, &prefix).await.is_empty());
        assert!(broker.inventory().list().unwrap().is_empty());
    }

    /// A guard dropped inside a current-thread runtime checks in on the drop worker's runtime, while
    /// the test's runtime is blocked in the drop: the provider must not reuse a client (and its
    /// pooled connections) bound to the test's runtime.
    #[tokio::test]
    async fn real_engine_guard_dropped_in_a_current_thread_runtime_checks_in() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = prefix("drop");
        let Some(broker) = engine_broker(dir.path(), &prefix).await else {
            return;
        };
        let yaml = format!("checkin_timeout: 30s\nContainer:\n  name_prefix: {prefix}\n");
        let settings = Settings::from_yaml(dir.path(), &yaml).unwrap();
        let guarded = Broker::new(settings, ProviderRegistry::new().with(KIND)).unwrap();
        let host = guarded
            .checkout_one(
                CheckoutRequest::new()
                    .arg("container_host", "broker-busybox")
                    .arg("command", "sleep 3600"),
            )
            .await
            .unwrap();
        assert_eq!(host.execute("echo up").await.unwrap().stdout, "up\n");
        drop(host);
        assert_eq!(guarded.inventory().list().unwrap(), Vec::new());
        assert_eq!(
            containers_named(&broker, &prefix).await,
            Vec::<String>::new()
        );
    }

    #[tokio::test]
    async fn real_engine_five_hosts_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = prefix("five");
        let Some(broker) = engine_broker(dir.path(), &prefix).await else {
            return;
        };
        // The third host fails once its container runs (the conformance kit's fault wrapper).
        let injector =
            FaultInjector::new(Fault::new(Call::Create, When::After, Effect::Fail).host(2));
        let settings = Settings::from_yaml(
            dir.path(),
            &format!("Container:\n  name_prefix: {prefix}\n"),
        )
        .unwrap();
        let faulty =
            Broker::new(settings, ProviderRegistry::new().with(injector.wrap(KIND))).unwrap();
        let err = faulty
            .checkout(
                CheckoutRequest::new()
                    .arg("container_host", "broker-busybox")
                    .arg("command", "sleep 3600")
                    .count(5),
            )
            .await
            .unwrap_err();
        assert!(injector.has_struck());
        assert!(
            matches!(&err, Error::CheckoutFailed { failures, rolled_back, .. }
            if failures.len() == 1 && failures[0].0 == 2 && rolled_back.len() == 4),
            "{err}"
        );
        assert!(
            containers_named(&broker, &prefix).await.is_empty(),
            "containers left behind"
        );
        assert!(broker.inventory().list().unwrap().is_empty());
    }

    #[tokio::test]
    async fn real_engine_vanished_container_checks_in() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = prefix("gone");
        let Some(broker) = engine_broker(dir.path(), &prefix).await else {
            return;
        };
        let host = broker
            .checkout_one(
                CheckoutRequest::new()
                    .arg("container_host", "broker-busybox")
                    .arg("command", "sleep 3600"),
            )
            .await
            .unwrap();
        let provider = host.provider_handle().unwrap().clone();
        provider.checkin(host.record()).await.unwrap(); // removed behind the broker's back
        assert!(matches!(
            host.execute("true").await,
            Err(Error::Host { .. })
        ));
        host.checkin().await.unwrap();
        assert!(broker.inventory().list().unwrap().is_empty());
    }

    #[tokio::test]
    async fn real_engine_published_ssh_port_becomes_the_hostname() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = prefix("ports");
        let Some(broker) = engine_broker(dir.path(), &prefix).await else {
            return;
        };
        let host = broker
            .checkout_one(
                CheckoutRequest::new()
                    .arg("container_host", "broker-busybox")
                    .arg("command", "sleep 3600")
                    .arg("ports", "22 8080/tcp"),
            )
            .await
            .unwrap();
        let ports = host
            .get("exposed_ports")
            .and_then(Value::as_mapping)
            .cloned()
            .unwrap_or_default();
        let ssh_port = ports
            .get("22")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        assert!(ssh_port.parse::<u16>().is_ok(), "{ports:?}");
        assert!(ports.contains_key("8080"), "{ports:?}");
        assert_eq!(
            host.hostname(),
            Some(format!("localhost:{ssh_port}").as_str())
        );
        host.checkin().await.unwrap();
        assert!(containers_named(&broker, &prefix).await.is_empty());
    }

    #[tokio::test]
    async fn real_engine_failed_checkout_never_removes_another_hosts_container() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = prefix("clash");
        let Some(broker) = engine_broker(dir.path(), &prefix).await else {
            return;
        };
        // Both hosts ask for the same name: the second create fails, and its clean-up must not remove
        // the first host's container, which has that name.
        let name = format!("{prefix}_fixed");
        let err = broker
            .checkout(
                CheckoutRequest::new()
                    .arg("container_host", "broker-busybox")
                    .arg("name", name.as_str())
                    .count(2)
                    .keep_partial(true),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::CheckoutFailed { kept, .. } if kept.len() == 1),
            "{err}"
        );
        assert_eq!(containers_named(&broker, &prefix).await, vec![name]);
        let kept = broker.inventory().list().unwrap();
        assert_eq!(kept.len(), 1);
        let outcomes = broker.checkin(kept, false).await;
        assert!(outcomes.iter().all(|o| o.result.is_ok()));
        assert!(containers_named(&broker, &prefix).await.is_empty());
    }
}
