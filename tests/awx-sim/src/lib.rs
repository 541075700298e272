//! A stateful simulator of the AWX / Ansible Automation Platform REST API (v2), for broker's tests.
//!
//! No AWX can run on a test machine, so this speaks enough of its API for broker's `AnsibleTower`
//! provider — and for the official `awxkit` client — to behave as against the real thing:
//!
//! - the API root (`/api/`, legacy `available_versions` or the AAP 2.5 gateway's `apis`), `ping`, `me`;
//! - Bearer tokens and Basic auth, `POST tokens/` (temporary tokens) and `DELETE tokens/N/`;
//! - `count` / `next` / `previous` / `results` pagination (page size capped like AWX's), field
//!   lookups (`name`, `name__icontains`, `search`, `x__contains`, `order_by`…);
//! - workflow job templates, job templates, inventories, hosts (with `ansible_facts`), labels
//!   (duplicates refused per organization as AWX does);
//! - launches that create a job moving `pending` → `running` → `successful` / `failed` across polls,
//!   workflow jobs with `workflow_nodes` → child jobs, `job_events`, `artifacts`, `cancel`.
//!
//! Behind the API sits a small lab: `deploy-rhel` makes a VM (and a host in the launch's inventory),
//! `remove-vm` removes one, `extend-vm` extends one, `list-templates` / `list-flavors` report lists.
//! Failures are asked for through extra vars (`sim_fail: provision | configure | remove`,
//! `sim_omit_artifacts: true`) and transport faults through [`Sim::inject`]; links in answers can
//! be made absolute, pointing at any origin ([`World::link_origin`]), as a server behind a
//! misconfigured proxy (or a hostile one) would give them.
#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use serde_json::{Value, json};
use sim_http::{Dropped, Reply, lock, no_content, reply};

/// How the simulated server presents itself.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Serve the API under `/api/controller/v2/` behind an AAP 2.5 gateway root.
    pub aap25: bool,
    /// What `ping` reports as `version`.
    pub version: String,
    /// Refuse `POST tokens/` (as a gateway that disallows tokens for the user would).
    pub refuse_tokens: bool,
    /// How many polls a job answers `running` before it finishes.
    pub running_polls: u32,
    /// The largest page size the server grants (AWX: 200).
    pub max_page_size: usize,
    /// Serve HTTPS with this PEM certificate chain and PEM private key.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            aap25: false,
            version: "24.6.1".into(),
            refuse_tokens: false,
            running_polls: 1,
            max_page_size: 200,
            tls: None,
        }
    }
}

/// A transport fault for the next matching requests.
pub type Fault = sim_http::Fault<FaultKind>;

/// What a [`Fault`] does.
#[derive(Debug, Clone)]
pub enum FaultKind {
    /// Answer with this status and a small error body.
    Status(u16),
    /// Close the connection without answering.
    Drop,
    /// Answer `302 Found` with this `Location`.
    Redirect(String),
}

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub body: Value,
    /// `bearer:TOKEN`, `basic:USER` or `none`.
    pub auth: String,
}

impl Recorded {
    /// A query parameter.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A VM of the simulated lab.
#[derive(Debug, Clone, PartialEq)]
pub struct Vm {
    pub name: String,
    pub fqdn: String,
    pub inventory: Option<u64>,
    pub expire: String,
}

/// A token the server issued.
#[derive(Debug, Clone)]
pub struct Token {
    pub id: u64,
    pub token: String,
    pub user: u64,
    pub description: String,
}

#[derive(Debug, Clone)]
struct User {
    id: u64,
    username: String,
    password: String,
}

#[derive(Debug, Clone)]
struct Template {
    id: u64,
    workflow: bool,
    name: String,
    description: String,
    inventory: Option<u64>,
    extra_vars: String,
    can_start: bool,
}

#[derive(Debug, Clone)]
struct Inventory {
    id: u64,
    name: String,
    kind: String,
}

#[derive(Debug, Clone)]
struct SimHost {
    id: u64,
    name: String,
    inventory: u64,
    variables: Value,
    facts: Value,
    facts_status: u16,
}

#[derive(Debug, Clone)]
struct Job {
    id: u64,
    workflow: bool,
    template: u64,
    name: String,
    status: String,
    polls: u32,
    extra_vars: Value,
    inventory: Option<u64>,
    labels: Vec<u64>,
    launched_by: u64,
    artifacts: Value,
    result_traceback: String,
    job_explanation: String,
    result_stdout: String,
    events: Vec<Value>,
    /// Workflow jobs: (node id, child job id).
    nodes: Vec<(u64, u64)>,
    parent: Option<u64>,
    created: String,
}

/// The simulator's whole state; tests read and arrange it through [`Sim::world`].
#[derive(Debug)]
pub struct World {
    pub options: SimOptions,
    next_id: u64,
    users: Vec<User>,
    pub tokens: Vec<Token>,
    /// Descriptions of the tokens deleted through the API.
    pub deleted_tokens: Vec<String>,
    labels: Vec<(u64, String, u64)>,
    inventories: Vec<Inventory>,
    hosts: Vec<SimHost>,
    templates: Vec<Template>,
    jobs: Vec<Job>,
    pub vms: BTreeMap<String, Vm>,
    pub requests: Vec<Recorded>,
    faults: Vec<Fault>,
    /// When set (`http://other:8043`), every link in an answer (`next`, `previous`, `url`,
    /// `related`…) is absolute, on this origin, instead of a path.
    pub link_origin: Option<String>,
}

/// The organization every object belongs to.
const ORG: (u64, &str) = (1, "Default");

/// The token the default user `alice` holds.
pub const ALICE_TOKEN: &str = "alice-sim-token";
/// The default user's password.
pub const ALICE_PASSWORD: &str = "alice-password";

impl World {
    fn new(options: SimOptions) -> Self {
        let mut w = World {
            options,
            next_id: 100,
            users: vec![
                User {
                    id: 1,
                    username: "admin".into(),
                    password: "admin-password".into(),
                },
                User {
                    id: 2,
                    username: "alice".into(),
                    password: ALICE_PASSWORD.into(),
                },
            ],
            tokens: Vec::new(),
            deleted_tokens: Vec::new(),
            labels: Vec::new(),
            inventories: Vec::new(),
            hosts: Vec::new(),
            templates: Vec::new(),
            jobs: Vec::new(),
            vms: BTreeMap::new(),
            requests: Vec::new(),
            faults: Vec::new(),
            link_origin: None,
        };
        w.tokens.push(Token {
            id: 1,
            token: ALICE_TOKEN.into(),
            user: 2,
            description: "alice's personal token".into(),
        });
        let alice = w.add_inventory("alice-lab", "");
        w.add_inventory("alice-lab-old", "");
        w.add_inventory("shared-lab", "");
        w.add_inventory("alice-smart", "smart");
        let deploy = w.add_template(
            true,
            "deploy-rhel",
            "Deploy a RHEL VM in the lab",
            Some(alice),
            "deploy_rhel_version: '9.4'\nhost_type: host\n",
        );
        let _ = deploy;
        w.add_template(
            true,
            "deploy-rhel-no-inventory",
            "Deploy, but the template names no inventory",
            None,
            "{}",
        );
        w.add_template(
            true,
            "remove-vm",
            "Remove a VM",
            Some(alice),
            "source_vm: ''\n",
        );
        w.add_template(
            true,
            "extend-vm",
            "Extend a VM's lease",
            Some(alice),
            "{\"target_vm\": \"\", \"new_expire_time\": \"+172800\"}",
        );
        // No extra vars at all: `providers AnsibleTower --workflow` must not trip on it (upstream #481).
        w.add_template(
            true,
            "list-templates",
            "List deployable templates",
            Some(alice),
            "",
        );
        w.add_template(true, "list-flavors", "List VM flavors", Some(alice), "");
        w.add_template(
            false,
            "run-command",
            "Run a command on the lab",
            Some(alice),
            "command: uptime\n",
        );
        let hidden = w.add_template(true, "admin-only", "Not startable by alice", None, "");
        if let Some(t) = w.templates.iter_mut().find(|t| t.id == hidden) {
            t.can_start = false;
        }
        w
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn add_inventory(&mut self, name: &str, kind: &str) -> u64 {
        let id = self.id();
        self.inventories.push(Inventory {
            id,
            name: name.into(),
            kind: kind.into(),
        });
        id
    }

    fn add_template(
        &mut self,
        workflow: bool,
        name: &str,
        description: &str,
        inventory: Option<u64>,
        extra_vars: &str,
    ) -> u64 {
        let id = self.id();
        self.templates.push(Template {
            id,
            workflow,
            name: name.into(),
            description: description.into(),
            inventory,
            extra_vars: extra_vars.into(),
            can_start: true,
        });
        id
    }

    /// Adds an inventory and returns its id.
    pub fn inventory(&mut self, name: &str) -> u64 {
        self.add_inventory(name, "")
    }

    /// The id of the inventory named `name`.
    pub fn inventory_id(&self, name: &str) -> Option<u64> {
        self.inventories
            .iter()
            .find(|i| i.name == name)
            .map(|i| i.id)
    }

    /// Adds a host to an inventory; `facts_status` 200 serves its facts, 403 or 404 refuses them.
    pub fn host(
        &mut self,
        inventory: u64,
        name: &str,
        variables: Value,
        facts: Value,
        facts_status: u16,
    ) -> u64 {
        let id = self.id();
        self.hosts.push(SimHost {
            id,
            name: name.into(),
            inventory,
            variables,
            facts,
            facts_status,
        });
        id
    }

    /// The names of the labels that exist.
    pub fn label_names(&self) -> Vec<String> {
        self.labels.iter().map(|(_, n, _)| n.clone()).collect()
    }

    /// The extra vars of every workflow or playbook job launched from the template `name`, oldest first.
    pub fn launches(&self, name: &str) -> Vec<Value> {
        self.jobs
            .iter()
            .filter(|j| j.parent.is_none() && j.name == name)
            .map(|j| j.extra_vars.clone())
            .collect()
    }

    /// The launch requests (method POST on `…/launch/`), oldest first.
    pub fn launch_requests(&self) -> Vec<Recorded> {
        self.requests
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/launch/"))
            .cloned()
            .collect()
    }

    /// The statuses of the top-level jobs, by id.
    pub fn job_statuses(&self) -> Vec<(u64, String, String)> {
        self.jobs
            .iter()
            .filter(|j| j.parent.is_none())
            .map(|j| (j.id, j.name.clone(), j.status.clone()))
            .collect()
    }

    fn api_base(&self) -> &'static str {
        if self.options.aap25 {
            "/api/controller/v2/"
        } else {
            "/api/v2/"
        }
    }

    /// The template at `{kind}/{id}/` (`kind`: `workflow_job_templates` or `job_templates`).
    fn template_at(&self, kind: &str, id: &str) -> Option<&Template> {
        let workflow = kind == "workflow_job_templates";
        let id = parse_id(id)?;
        self.templates
            .iter()
            .find(|t| t.id == id && t.workflow == workflow)
    }

    /// The position of the job at `{kind}/{id}/` (`kind`: `workflow_jobs` or `jobs`).
    fn job_at(&self, kind: &str, id: &str) -> Option<usize> {
        let workflow = kind == "workflow_jobs";
        let id = parse_id(id)?;
        self.jobs
            .iter()
            .position(|j| j.id == id && j.workflow == workflow)
    }

    fn user_by_token(&self, token: &str) -> Option<&User> {
        let t = self.tokens.iter().find(|t| t.token == token)?;
        self.users.iter().find(|u| u.id == t.user)
    }

    fn take_fault(&mut self, method: &str, path: &str) -> Option<FaultKind> {
        sim_http::take_fault(&mut self.faults, method, path)
    }
}

/// A running simulator. Dropping it stops the server.
pub struct Sim {
    addr: SocketAddr,
    scheme: &'static str,
    world: Arc<Mutex<World>>,
    _served: sim_http::Served,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim").field("addr", &self.addr).finish()
    }
}

impl Sim {
    /// Starts a simulator with the default lab on a free loopback port, served by its own thread.
    pub fn start() -> Sim {
        Sim::start_with(SimOptions::default())
    }

    /// Starts a simulator presenting itself as `options` say.
    ///
    /// # Panics
    /// When no loopback port can be bound (a test environment problem).
    #[allow(clippy::expect_used)]
    pub fn start_with(options: SimOptions) -> Sim {
        Sim::start_on(options, "127.0.0.1:0")
            .expect("binding a loopback port for the AWX simulator")
    }

    /// Starts a simulator on `bind` (e.g. `127.0.0.1:8043`).
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub fn start_on(options: SimOptions, bind: &str) -> std::io::Result<Sim> {
        let listener = std::net::TcpListener::bind(bind)?;
        let addr = listener.local_addr()?;
        let tls = match &options.tls {
            Some((chain, key)) => Some(tls_acceptor(chain, key)?),
            None => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let world = Arc::new(Mutex::new(World::new(options)));
        let served = sim_http::serve(listener, tls, Arc::clone(&world), handle)?;
        Ok(Sim {
            addr,
            scheme,
            world,
            _served: served,
        })
    }

    /// `http://127.0.0.1:PORT` (`https://` when serving TLS)
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// The simulator's state, to arrange or inspect.
    pub fn world(&self) -> MutexGuard<'_, World> {
        lock(&self.world)
    }

    /// Makes the next `times` requests whose path contains `path_contains` fail as `kind`.
    pub fn inject(&self, method: Option<&str>, path_contains: &str, kind: FaultKind, times: u32) {
        self.world().faults.push(Fault {
            path_contains: path_contains.into(),
            method: method.map(str::to_owned),
            kind,
            times,
        });
    }

    /// The faults injected and not yet used up, each with the requests it still has to hit: a test
    /// that injects faults asserts this is empty, or a fault that was never served would let it pass
    /// without exercising what it is about.
    pub fn unused_faults(&self) -> Vec<Fault> {
        self.world().faults.clone()
    }

    /// Drops the faults not yet used up.
    pub fn clear_faults(&self) {
        self.world().faults.clear();
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.world().requests.clone()
    }

    /// The lab's VMs.
    pub fn vms(&self) -> BTreeMap<String, Vm> {
        self.world().vms.clone()
    }
}

fn tls_acceptor(chain: &[u8], key: &[u8]) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let invalid = |e: &dyn std::fmt::Display| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain)
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(&e))?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| invalid(&e))?;
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| invalid(&e))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| invalid(&e))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn handle(world: Arc<Mutex<World>>, req: Request<Incoming>) -> Result<Reply, Dropped> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query: Vec<(String, String)> = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let auth_header = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(Dropped),
    };
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .unwrap_or_else(|_| json!({"_raw": String::from_utf8_lossy(&body)}))
    };
    let (answer, origin) = respond(&world, &method, &path, query, body, auth_header)?;
    match origin {
        Some(origin) => Ok(absolute_links(answer, &origin).await),
        None => Ok(answer),
    }
}

/// The answer to a request, and the origin its links are to be made absolute on (when they are).
fn respond(
    world: &Mutex<World>,
    method: &Method,
    path: &str,
    query: Vec<(String, String)>,
    body: Value,
    auth_header: Option<String>,
) -> Result<(Reply, Option<String>), Dropped> {
    let mut w = lock(world);
    let auth = match &auth_header {
        Some(h) if h.starts_with("Bearer ") => format!("bearer:{}", &h[7..]),
        Some(h) if h.starts_with("Basic ") => {
            let user = basic_user(&h[6..]).map(|(u, _)| u).unwrap_or_default();
            format!("basic:{user}")
        }
        _ => "none".into(),
    };
    w.requests.push(Recorded {
        method: method.to_string(),
        path: path.to_owned(),
        query: query.clone(),
        body: body.clone(),
        auth,
    });
    match w.take_fault(method.as_str(), path) {
        Some(FaultKind::Drop) => return Err(Dropped),
        Some(FaultKind::Status(code)) => {
            return Ok((
                reply(code, json!({"detail": format!("simulated fault {code}")})),
                None,
            ));
        }
        Some(FaultKind::Redirect(location)) => {
            let mut response = reply(302, json!({}));
            if let Ok(value) = hyper::header::HeaderValue::from_str(&location) {
                response
                    .headers_mut()
                    .insert(hyper::header::LOCATION, value);
            }
            return Ok((response, None));
        }
        None => {}
    }
    let q = Query(query);
    let answer = route(&mut w, method, path, &q, body, auth_header.as_deref());
    // The API roots' version paths stay paths: they are not links.
    let origin = w
        .link_origin
        .clone()
        .filter(|_| path.starts_with(w.api_base()));
    Ok((answer, origin))
}

/// The answer with every API path in its JSON body (`"/api/…"`) made a URL on `origin`.
async fn absolute_links(answer: Reply, origin: &str) -> Reply {
    fn rewrite(v: &mut Value, origin: &str) {
        match v {
            Value::String(s) if s.starts_with("/api/") => *s = format!("{origin}{s}"),
            Value::Array(items) => items.iter_mut().for_each(|i| rewrite(i, origin)),
            Value::Object(map) => map.values_mut().for_each(|i| rewrite(i, origin)),
            _ => {}
        }
    }
    let (parts, body) = answer.into_parts();
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    let body = match serde_json::from_slice::<Value>(&bytes) {
        Ok(mut json) => {
            rewrite(&mut json, origin);
            Bytes::from(json.to_string())
        }
        Err(_) => bytes,
    };
    Response::from_parts(parts, Full::new(body))
}

fn basic_user(encoded: &str) -> Option<(String, String)> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

fn not_found() -> Reply {
    reply(404, json!({"detail": "Not found."}))
}

struct Query(Vec<(String, String)>);

impl Query {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn route(
    w: &mut World,
    method: &Method,
    path: &str,
    q: &Query,
    body: Value,
    auth: Option<&str>,
) -> Reply {
    // Unauthenticated roots.
    if method == Method::GET && path == "/api/" {
        return if w.options.aap25 {
            reply(
                200,
                json!({"apis": {"gateway": "/api/gateway/", "controller": "/api/controller/",
                        "eda": "/api/eda/", "galaxy": "/api/galaxy/"}}),
            )
        } else {
            reply(
                200,
                json!({"description": "AWX REST API", "current_version": "/api/v2/",
                       "available_versions": {"v2": "/api/v2/"}, "oauth2": "/api/o/",
                       "custom_logo": "", "custom_login_info": "", "login_redirect_override": ""}),
            )
        };
    }
    if w.options.aap25 && method == Method::GET && path == "/api/controller/" {
        return reply(
            200,
            json!({"description": "AWX REST API", "current_version": "/api/controller/v2/",
                   "available_versions": {"v2": "/api/controller/v2/"}}),
        );
    }
    let base = w.api_base();
    let Some(rest) = path.strip_prefix(base) else {
        return not_found();
    };
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    if method == Method::GET && segments.is_empty() {
        let mut links = serde_json::Map::new();
        for (name, path) in [
            ("ping", "ping"),
            ("me", "me"),
            ("tokens", "tokens"),
            ("inventory", "inventories"),
            ("hosts", "hosts"),
            ("labels", "labels"),
            ("job_templates", "job_templates"),
            ("jobs", "jobs"),
            ("workflow_job_templates", "workflow_job_templates"),
            ("workflow_jobs", "workflow_jobs"),
        ] {
            links.insert(name.into(), Value::from(format!("{base}{path}/")));
        }
        return reply(200, Value::Object(links));
    }
    if method == Method::GET && segments == ["ping"] {
        return reply(
            200,
            json!({"ha": false, "version": w.options.version, "active_node": "awx-sim",
                   "install_uuid": "00000000-0000-4000-8000-000000000000",
                   "instances": [{"node": "awx-sim", "heartbeat": "2026-11-22T00:00:00Z", "capacity": 100, "version": w.options.version}],
                   "instance_groups": [{"name": "default", "capacity": 100, "instances": ["awx-sim"]}]}),
        );
    }
    // Everything else needs a user.
    let user = match auth {
        Some(h) if h.starts_with("Bearer ") => w.user_by_token(&h[7..]).cloned(),
        Some(h) if h.starts_with("Basic ") => basic_user(&h[6..]).and_then(|(u, p)| {
            w.users
                .iter()
                .find(|x| x.username == u && x.password == p)
                .cloned()
        }),
        _ => None,
    };
    let Some(user) = user else {
        let detail = if auth.is_some() {
            "Invalid token or credentials."
        } else {
            "Authentication credentials were not provided."
        };
        return reply(401, json!({"detail": detail}));
    };
    let basic = auth.is_some_and(|h| h.starts_with("Basic "));
    match (method.as_str(), segments.as_slice()) {
        ("GET", ["me"]) => reply(200, list_of(vec![user_json(base, &user)])),
        ("POST", ["tokens"]) | ("POST", ["users", _, "personal_tokens"]) => {
            if w.options.refuse_tokens {
                return reply(
                    403,
                    json!({"detail": "Token creation is not allowed for this user."}),
                );
            }
            if !basic {
                return reply(
                    403,
                    json!({"detail": "Tokens can only be created with a password login."}),
                );
            }
            let id = w.id();
            let token = format!("sim-temp-{id}-{:x}", id * 7919);
            let description = body
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            w.tokens.push(Token {
                id,
                token: token.clone(),
                user: user.id,
                description: description.clone(),
            });
            reply(
                201,
                json!({"id": id, "type": "o_auth2_access_token", "url": format!("{base}tokens/{id}/"),
                       "description": description, "token": token, "refresh_token": null,
                       "user": user.id, "scope": body.get("scope").cloned().unwrap_or(json!("write")),
                       "application": null, "expires": "3025-01-01T00:00:00Z"}),
            )
        }
        ("GET", ["tokens"]) => {
            let items = w
                .tokens
                .iter()
                .filter(|t| t.user == user.id)
                .map(|t| token_json(base, t))
                .collect();
            listed(w, base, "tokens", items, q)
        }
        ("DELETE", ["tokens", id]) => {
            let Some(i) = parse_id(id).and_then(|id| w.tokens.iter().position(|t| t.id == id))
            else {
                return not_found();
            };
            let t = w.tokens.remove(i);
            w.deleted_tokens.push(t.description);
            no_content()
        }
        ("GET", ["workflow_job_templates"]) | ("GET", ["job_templates"]) => {
            let workflow = segments[0] == "workflow_job_templates";
            let items = w
                .templates
                .iter()
                .filter(|t| t.workflow == workflow)
                .map(|t| template_json(w, base, t))
                .collect();
            listed(w, base, segments[0], items, q)
        }
        ("GET", [kind @ ("workflow_job_templates" | "job_templates"), id]) => {
            match w.template_at(kind, id) {
                Some(t) => reply(200, template_json(w, base, t)),
                None => not_found(),
            }
        }
        (
            "GET",
            [
                kind @ ("workflow_job_templates" | "job_templates"),
                id,
                "launch",
            ],
        ) => match w.template_at(kind, id) {
            Some(t) => reply(
                200,
                json!({"can_start_without_user_input": true, "ask_inventory_on_launch": true,
                           "ask_variables_on_launch": true, "ask_labels_on_launch": true,
                           "variables_needed_to_start": [], "survey_enabled": false,
                           "defaults": {"extra_vars": t.extra_vars, "inventory": {"id": t.inventory}}}),
            ),
            None => not_found(),
        },
        (
            "GET",
            [
                kind @ ("workflow_job_templates" | "job_templates"),
                id,
                sub @ ("workflow_jobs" | "jobs"),
            ],
        ) => {
            let workflow = *kind == "workflow_job_templates";
            let Some(template) = parse_id(id) else {
                return not_found();
            };
            let items = w
                .jobs
                .iter()
                .filter(|j| j.workflow == workflow && j.template == template && j.parent.is_none())
                .map(|j| job_json(w, base, j))
                .collect();
            let path = format!("{kind}/{template}/{sub}");
            listed(w, base, &path, items, q)
        }
        (
            "POST",
            [
                kind @ ("workflow_job_templates" | "job_templates"),
                id,
                "launch",
            ],
        ) => {
            let Some(t) = w.template_at(kind, id).cloned() else {
                return not_found();
            };
            launch(w, base, &t, &user, &body)
        }
        ("GET", ["inventories"]) => {
            let items = w
                .inventories
                .iter()
                .map(|i| inventory_json(w, base, i))
                .collect();
            listed(w, base, "inventories", items, q)
        }
        ("GET", ["inventories", id]) => {
            match parse_id(id).and_then(|id| w.inventories.iter().find(|i| i.id == id)) {
                Some(i) => reply(200, inventory_json(w, base, i)),
                None => not_found(),
            }
        }
        ("GET", ["inventories", id, "hosts"]) => {
            let Some(inv) = parse_id(id) else {
                return not_found();
            };
            if !w.inventories.iter().any(|i| i.id == inv) {
                return not_found();
            }
            let items = w
                .hosts
                .iter()
                .filter(|h| h.inventory == inv)
                .map(|h| host_json(w, base, h))
                .collect();
            let path = format!("inventories/{inv}/hosts");
            listed(w, base, &path, items, q)
        }
        ("GET", ["hosts"]) => {
            let items = w.hosts.iter().map(|h| host_json(w, base, h)).collect();
            listed(w, base, "hosts", items, q)
        }
        ("GET", ["hosts", id]) => {
            match parse_id(id).and_then(|id| w.hosts.iter().find(|h| h.id == id)) {
                Some(h) => reply(200, host_json(w, base, h)),
                None => not_found(),
            }
        }
        ("GET", ["hosts", id, "ansible_facts"]) => {
            match parse_id(id).and_then(|id| w.hosts.iter().find(|h| h.id == id)) {
                Some(h) if h.facts_status == 200 => reply(200, h.facts.clone()),
                Some(h) if h.facts_status == 403 => reply(
                    403,
                    json!({"detail": "You do not have permission to perform this action."}),
                ),
                _ => not_found(),
            }
        }
        ("GET", ["labels"]) => {
            let items = w
                .labels
                .iter()
                .map(|(id, name, org)| label_json(base, *id, name, *org))
                .collect();
            listed(w, base, "labels", items, q)
        }
        ("POST", ["labels"]) => {
            let name = body
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let org = body
                .get("organization")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            if name.is_empty() || org != ORG.0 {
                return reply(
                    400,
                    json!({"name": ["This field is required."], "organization": ["Invalid pk."]}),
                );
            }
            if w.labels.iter().any(|(_, n, o)| *n == name && *o == org) {
                return reply(
                    400,
                    json!({"__all__": ["Label with this Name and Organization already exists."]}),
                );
            }
            let id = w.id();
            w.labels.push((id, name.clone(), org));
            reply(201, label_json(base, id, &name, org))
        }
        ("GET", [kind @ ("workflow_jobs" | "jobs")]) => {
            let workflow = *kind == "workflow_jobs";
            let items = w
                .jobs
                .iter()
                .filter(|j| j.workflow == workflow)
                .map(|j| job_json(w, base, j))
                .collect();
            listed(w, base, kind, items, q)
        }
        ("GET", [kind @ ("workflow_jobs" | "jobs"), id]) => {
            let Some(i) = w.job_at(kind, id) else {
                return not_found();
            };
            advance(w, i);
            let j = w.jobs[i].clone();
            reply(200, job_json(w, base, &j))
        }
        ("POST", [kind @ ("workflow_jobs" | "jobs"), id, "cancel"]) => {
            let Some(i) = w.job_at(kind, id) else {
                return not_found();
            };
            if is_final(&w.jobs[i].status) {
                return reply(405, json!({"error": "Job is not cancelable."}));
            }
            w.jobs[i].status = "canceled".into();
            w.jobs[i].job_explanation = "Job canceled by user".into();
            reply(202, Value::Null)
        }
        ("GET", ["workflow_jobs", id, "workflow_nodes"]) => {
            let Some(j) = w.job_at("workflow_jobs", id).map(|i| &w.jobs[i]) else {
                return not_found();
            };
            let items = j
                .nodes
                .iter()
                .filter_map(|(node, child)| {
                    let c = w.jobs.iter().find(|c| c.id == *child)?;
                    Some(json!({
                        "id": node, "type": "workflow_job_node",
                        "url": format!("{base}workflow_job_nodes/{node}/"),
                        "related": {"job": format!("{base}{}/{}/", if c.workflow {"workflow_jobs"} else {"jobs"}, c.id)},
                        "summary_fields": {"job": {"id": c.id, "name": c.name, "status": c.status,
                            "type": if c.workflow {"workflow_job"} else {"job"}, "failed": c.status == "failed" || c.status == "error"}},
                        "job": c.id, "workflow_job": j.id, "do_not_run": false,
                    }))
                })
                .collect();
            let path = format!("workflow_jobs/{}/workflow_nodes", j.id);
            listed(w, base, &path, items, q)
        }
        ("GET", ["jobs", id, "job_events"]) => {
            let Some(j) = w.job_at("jobs", id).map(|i| &w.jobs[i]) else {
                return not_found();
            };
            let items = j.events.clone();
            let path = format!("jobs/{}/job_events", j.id);
            listed(w, base, &path, items, q)
        }
        _ => not_found(),
    }
}

fn parse_id(text: &str) -> Option<u64> {
    text.parse().ok()
}

fn is_final(status: &str) -> bool {
    matches!(status, "successful" | "failed" | "error" | "canceled")
}

fn user_json(base: &str, u: &User) -> Value {
    json!({"id": u.id, "type": "user", "url": format!("{base}users/{}/", u.id),
           "username": u.username, "first_name": "", "last_name": "", "email": "",
           "is_superuser": u.username == "admin", "related": {"personal_tokens": format!("{base}users/{}/personal_tokens/", u.id)}})
}

fn token_json(base: &str, t: &Token) -> Value {
    json!({"id": t.id, "type": "o_auth2_access_token", "url": format!("{base}tokens/{}/", t.id),
           "description": t.description, "token": "************", "user": t.user, "scope": "write"})
}

fn label_json(base: &str, id: u64, name: &str, org: u64) -> Value {
    json!({"id": id, "type": "label", "url": format!("{base}labels/{id}/"), "name": name,
           "organization": org, "summary_fields": {"organization": {"id": ORG.0, "name": ORG.1}}})
}

fn template_json(w: &World, base: &str, t: &Template) -> Value {
    let (kind, ty) = if t.workflow {
        ("workflow_job_templates", "workflow_job_template")
    } else {
        ("job_templates", "job_template")
    };
    let inventory = t
        .inventory
        .and_then(|id| w.inventories.iter().find(|i| i.id == id))
        .map(|i| json!({"id": i.id, "name": i.name, "kind": i.kind}));
    let mut summary = json!({
        "organization": {"id": ORG.0, "name": ORG.1},
        "user_capabilities": {"edit": false, "delete": false, "start": t.can_start, "schedule": t.can_start, "copy": false},
        "labels": {"count": 0, "results": []},
    });
    if let Some(inv) = inventory {
        summary["inventory"] = inv;
    }
    json!({
        "id": t.id, "type": ty, "url": format!("{base}{kind}/{}/", t.id),
        "related": {"launch": format!("{base}{kind}/{}/launch/", t.id),
                    (if t.workflow { "workflow_jobs" } else { "jobs" }): format!("{base}{kind}/{}/{}/", t.id, if t.workflow { "workflow_jobs" } else { "jobs" }),
                    "labels": format!("{base}{kind}/{}/labels/", t.id),
                    "organization": format!("{base}organizations/{}/", ORG.0)},
        "summary_fields": summary,
        "name": t.name, "description": t.description, "extra_vars": t.extra_vars,
        "organization": ORG.0, "inventory": t.inventory,
        "ask_inventory_on_launch": true, "ask_variables_on_launch": true, "ask_labels_on_launch": true,
        "playbook": if t.workflow { Value::Null } else { json!("run.yml") },
    })
}

fn inventory_json(w: &World, base: &str, i: &Inventory) -> Value {
    let hosts = w.hosts.iter().filter(|h| h.inventory == i.id).count();
    json!({"id": i.id, "type": "inventory", "url": format!("{base}inventories/{}/", i.id),
           "related": {"hosts": format!("{base}inventories/{}/hosts/", i.id)},
           "summary_fields": {"organization": {"id": ORG.0, "name": ORG.1}},
           "name": i.name, "description": "", "kind": i.kind, "organization": ORG.0,
           "total_hosts": hosts, "has_active_failures": false})
}

fn host_json(w: &World, base: &str, h: &SimHost) -> Value {
    let inv = w.inventories.iter().find(|i| i.id == h.inventory);
    json!({"id": h.id, "type": "host", "url": format!("{base}hosts/{}/", h.id),
           "related": {"ansible_facts": format!("{base}hosts/{}/ansible_facts/", h.id),
                       "inventory": format!("{base}inventories/{}/", h.inventory)},
           "summary_fields": {"inventory": {"id": h.inventory, "name": inv.map(|i| i.name.clone())}},
           "name": h.name, "description": "", "inventory": h.inventory, "enabled": true,
           "variables": h.variables.to_string()})
}

fn job_json(w: &World, base: &str, j: &Job) -> Value {
    let kind = if j.workflow { "workflow_jobs" } else { "jobs" };
    let labels: Vec<Value> = j
        .labels
        .iter()
        .filter_map(|id| w.labels.iter().find(|(l, _, _)| l == id))
        .map(|(id, name, _)| json!({"id": id, "name": name}))
        .collect();
    let mut related = json!({"cancel": format!("{base}{kind}/{}/cancel/", j.id),
                             "labels": format!("{base}{kind}/{}/labels/", j.id)});
    if j.workflow {
        related["workflow_nodes"] = json!(format!("{base}workflow_jobs/{}/workflow_nodes/", j.id));
    } else {
        related["job_events"] = json!(format!("{base}jobs/{}/job_events/", j.id));
        related["stdout"] = json!(format!("{base}jobs/{}/stdout/", j.id));
    }
    let mut v = json!({
        "id": j.id, "type": if j.workflow {"workflow_job"} else {"job"},
        "url": format!("{base}{kind}/{}/", j.id), "related": related,
        "summary_fields": {"labels": {"count": labels.len(), "results": labels},
                           "created_by": {"id": j.launched_by}},
        "name": j.name, "status": j.status, "failed": matches!(j.status.as_str(), "failed" | "error"),
        "finished": if is_final(&j.status) { json!(j.created) } else { Value::Null },
        "extra_vars": j.extra_vars.to_string(), "inventory": j.inventory,
        "job_explanation": j.job_explanation, "launch_type": if j.parent.is_some() {"workflow"} else {"manual"},
        "created": j.created, "started": j.created,
    });
    if j.workflow {
        v["workflow_job_template"] = json!(j.template);
    } else {
        v["job_template"] = json!(j.template);
        v["artifacts"] = j.artifacts.clone();
        v["result_traceback"] = json!(j.result_traceback);
        v["result_stdout"] = json!(j.result_stdout);
    }
    v
}

/// A one-page list, as AWX answers `me/`.
fn list_of(items: Vec<Value>) -> Value {
    json!({"count": items.len(), "next": null, "previous": null, "results": items})
}

/// AWX's field lookups over a list of objects: `field`, `field__icontains`, `field__contains`,
/// `field__iexact`, `search`, `order_by`.
fn filter(mut items: Vec<Value>, q: &Query) -> Vec<Value> {
    for (key, wanted) in &q.0 {
        if matches!(key.as_str(), "page" | "page_size" | "order_by" | "format") {
            continue;
        }
        items.retain(|item| {
            if key == "search" {
                let w = wanted.to_lowercase();
                return ["name", "description"].iter().any(|f| {
                    item.get(*f)
                        .and_then(Value::as_str)
                        .is_some_and(|s| s.to_lowercase().contains(&w))
                });
            }
            let (field, lookup) = key.split_once("__").unwrap_or((key.as_str(), "exact"));
            let Some(value) = item.get(field) else {
                return false;
            };
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Null => "null".into(),
                other => other.to_string(),
            };
            match lookup {
                "exact" => {
                    text == *wanted || text.eq_ignore_ascii_case(wanted) && value.is_boolean()
                }
                "iexact" => text.eq_ignore_ascii_case(wanted),
                "contains" => text.contains(wanted.as_str()),
                "icontains" => text.to_lowercase().contains(&wanted.to_lowercase()),
                "startswith" => text.starts_with(wanted.as_str()),
                _ => false,
            }
        });
    }
    if let Some(order) = q.get("order_by") {
        let (field, desc) = match order.strip_prefix('-') {
            Some(f) => (f, true),
            None => (order, false),
        };
        items.sort_by(|a, b| {
            let ord = match (a.get(field), b.get(field)) {
                (Some(Value::Number(x)), Some(Value::Number(y))) => x
                    .as_f64()
                    .partial_cmp(&y.as_f64())
                    .unwrap_or(std::cmp::Ordering::Equal),
                (x, y) => x.map(Value::to_string).cmp(&y.map(Value::to_string)),
            };
            if desc { ord.reverse() } else { ord }
        });
    }
    items
}

/// A page of a list endpoint: AWX's field lookups, then its pagination.
fn listed(w: &World, base: &str, path: &str, items: Vec<Value>, q: &Query) -> Reply {
    reply(
        200,
        paginate(base, path, filter(items, q), q, w.options.max_page_size),
    )
}

fn paginate(base: &str, path: &str, items: Vec<Value>, q: &Query, max: usize) -> Value {
    let size = q
        .get("page_size")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(25)
        .clamp(1, max);
    let page = q
        .get("page")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let count = items.len();
    let start = (page - 1) * size;
    let results: Vec<Value> = items.into_iter().skip(start).take(size).collect();
    let link = |p: usize| {
        let mut params: Vec<(String, String)> =
            q.0.iter().filter(|(k, _)| k != "page").cloned().collect();
        params.push(("page".into(), p.to_string()));
        let qs = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        Value::from(format!("{base}{path}/?{qs}"))
    };
    json!({
        "count": count,
        "next": if start + size < count { link(page + 1) } else { Value::Null },
        "previous": if page > 1 { link(page - 1) } else { Value::Null },
        "results": results,
    })
}

fn launch(w: &mut World, base: &str, t: &Template, user: &User, body: &Value) -> Reply {
    if !t.can_start {
        return reply(
            403,
            json!({"detail": "You do not have permission to perform this action."}),
        );
    }
    let extra_vars = match body.get("extra_vars") {
        Some(Value::String(s)) if s.trim().is_empty() => json!({}),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return reply(
                    400,
                    json!({"extra_vars": ["Cannot parse as JSON (error: not an object) or YAML."]}),
                );
            }
        },
        Some(v @ Value::Object(_)) => v.clone(),
        None | Some(Value::Null) => json!({}),
        Some(_) => {
            return reply(
                400,
                json!({"extra_vars": ["Must be a valid JSON or YAML dictionary."]}),
            );
        }
    };
    let inventory = match body.get("inventory") {
        Some(Value::Number(n)) => match n
            .as_u64()
            .filter(|id| w.inventories.iter().any(|i| i.id == *id))
        {
            Some(id) => Some(id),
            None => {
                return reply(
                    400,
                    json!({"inventory": [format!("Invalid pk \"{n}\" - object does not exist.")]}),
                );
            }
        },
        _ => t.inventory,
    };
    let mut labels = Vec::new();
    if let Some(Value::Array(ids)) = body.get("labels") {
        for id in ids {
            match id
                .as_u64()
                .filter(|id| w.labels.iter().any(|(l, _, _)| l == id))
            {
                Some(id) => labels.push(id),
                None => {
                    return reply(
                        400,
                        json!({"labels": [format!("Invalid pk \"{id}\" - object does not exist.")]}),
                    );
                }
            }
        }
    }
    let id = w.id();
    w.jobs.push(Job {
        id,
        workflow: t.workflow,
        template: t.id,
        name: t.name.clone(),
        status: "pending".into(),
        polls: 0,
        extra_vars,
        inventory,
        labels,
        launched_by: user.id,
        artifacts: json!({}),
        result_traceback: String::new(),
        job_explanation: String::new(),
        result_stdout: String::new(),
        events: Vec::new(),
        nodes: Vec::new(),
        parent: None,
        created: now_iso(),
    });
    let i = w.jobs.len() - 1;
    let j = w.jobs[i].clone();
    let mut v = job_json(w, base, &j);
    v[if t.workflow { "workflow_job" } else { "job" }] = json!(id);
    v["ignored_fields"] = json!({});
    reply(201, v)
}

/// One poll of job `i`: pending → running → (after `running_polls`) finished.
fn advance(w: &mut World, i: usize) {
    let status = w.jobs[i].status.clone();
    match status.as_str() {
        "pending" => w.jobs[i].status = "running".into(),
        "running" => {
            w.jobs[i].polls += 1;
            if w.jobs[i].polls >= w.options.running_polls {
                finish(w, i);
            }
        }
        _ => {}
    }
}

struct Child {
    name: &'static str,
    status: &'static str,
    artifacts: Value,
    explanation: String,
    traceback: String,
    failed_msgs: Vec<(&'static str, String)>,
    stdout: String,
}

impl Child {
    fn ok(name: &'static str, artifacts: Value) -> Child {
        Child {
            name,
            status: "successful",
            artifacts,
            explanation: String::new(),
            traceback: String::new(),
            failed_msgs: Vec::new(),
            stdout: String::new(),
        }
    }
}

fn var<'a>(vars: &'a Value, key: &str) -> Option<&'a str> {
    vars.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// The lab: what each template does when its job finishes.
fn finish(w: &mut World, i: usize) {
    let job = w.jobs[i].clone();
    let vars = &job.extra_vars;
    let fail = var(vars, "sim_fail").unwrap_or_default().to_owned();
    let user = w
        .users
        .iter()
        .find(|u| u.id == job.launched_by)
        .map(|u| u.username.clone())
        .unwrap_or_default();
    let children: Vec<Child> = match job.name.as_str() {
        "deploy-rhel" | "deploy-rhel-no-inventory" => {
            let version = vars
                .get("deploy_rhel_version")
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .unwrap_or_else(|| "9.4".into());
            if fail == "provision" {
                vec![Child {
                    name: "provision-vm",
                    status: "error",
                    artifacts: json!({}),
                    explanation: "Job terminated: the lab has no capacity left".into(),
                    traceback:
                        "Traceback (most recent call last):\nLabQuotaExceeded: 0 of 40 slots free"
                            .into(),
                    failed_msgs: Vec::new(),
                    stdout: String::new(),
                }]
            } else {
                let name = format!(
                    "{user}-rhel-{version}-{:08x}",
                    job.id.wrapping_mul(2_654_435_761) as u32
                );
                let fqdn = format!("{name}.lab.example.com");
                let ip = format!("192.0.2.{}", job.id % 250 + 1);
                w.vms.insert(
                    name.clone(),
                    Vm {
                        name: name.clone(),
                        fqdn: fqdn.clone(),
                        inventory: job.inventory,
                        expire: "+172800".into(),
                    },
                );
                if let Some(inv) = job.inventory {
                    w.host(
                        inv,
                        &name,
                        json!({"fqdn": fqdn, "ansible_host": ip}),
                        json!({"ansible_distribution": "RedHat", "ansible_distribution_version": version,
                               "ansible_fqdn": fqdn, "ansible_interfaces": ["eth0", "lo"],
                               "_broker_args": vars, "_broker_facts": {"owner": user}}),
                        200,
                    );
                }
                let mut out = vec![Child::ok(
                    "provision-vm",
                    json!({"vm_name": name, "stage": "provision", "_broker_facts": {"rack": "r1", "stage": "provision"}}),
                )];
                if fail == "configure" {
                    out.push(Child {
                        name: "configure-vm",
                        status: "failed",
                        artifacts: json!({}),
                        explanation: String::new(),
                        traceback: String::new(),
                        failed_msgs: vec![
                            ("Install packages", "No space left on device".into()),
                            ("Report", "the deployment report could not be sent".into()),
                        ],
                        stdout: String::new(),
                    });
                } else if var(vars, "sim_omit_artifacts").is_some()
                    || vars.get("sim_omit_artifacts") == Some(&json!(true))
                {
                    out.push(Child::ok("configure-vm", json!({"stage": "configure"})));
                } else {
                    let mut args = vars.clone();
                    if let Some(map) = args.as_object_mut() {
                        map.retain(|k, _| !k.starts_with("sim_"));
                    }
                    out.push(Child::ok(
                        "configure-vm",
                        json!({"stage": "configure",
                               "_broker_facts": {"fqdn": fqdn, "name": name, "host_type": var(vars, "host_type").unwrap_or("host"),
                                                 "os_distribution": "RedHat", "os_distribution_version": version,
                                                 "stage": "configure", "ip": ip},
                               "_broker_args": args}),
                    ));
                }
                out
            }
        }
        "remove-vm" => {
            let vm = var(vars, "source_vm").unwrap_or_default().to_owned();
            if fail == "remove" {
                vec![Child {
                    name: "remove-vm",
                    status: "failed",
                    artifacts: json!({}),
                    explanation: String::new(),
                    traceback: String::new(),
                    failed_msgs: vec![(
                        "Delete VM",
                        format!("the hypervisor refused to delete {vm}"),
                    )],
                    stdout: String::new(),
                }]
            } else {
                w.vms.remove(&vm);
                w.hosts.retain(|h| h.name != vm);
                vec![Child::ok("remove-vm", json!({"removed": vm}))]
            }
        }
        "extend-vm" => {
            let vm = var(vars, "target_vm").unwrap_or_default().to_owned();
            let expire = var(vars, "new_expire_time").unwrap_or("+172800").to_owned();
            match w.vms.get_mut(&vm) {
                Some(v) => {
                    v.expire = expire.clone();
                    vec![Child::ok(
                        "extend-vm",
                        json!({"extended": vm, "expire": expire}),
                    )]
                }
                None => vec![Child {
                    name: "extend-vm",
                    status: "failed",
                    artifacts: json!({}),
                    explanation: String::new(),
                    traceback: String::new(),
                    failed_msgs: vec![("Find VM", format!("VM {vm} not found"))],
                    stdout: String::new(),
                }],
            }
        }
        "list-templates" => vec![Child::ok(
            "list-templates",
            json!({"data_out": {"list_templates": ["rhel-8.10", "rhel-9.4", "rhel-10.0", "fedora-41"]}}),
        )],
        "list-flavors" => vec![Child::ok(
            "list-flavors",
            json!({"data_out": {"list_flavors": ["m1.small", "m1.medium", "m1.large"]}}),
        )],
        "run-command" => {
            let command = var(vars, "command").unwrap_or("uptime").to_owned();
            let mut c = Child::ok(
                "run-command",
                json!({"command_output": format!("ran {command}")}),
            );
            c.stdout = format!("PLAY [all]\nTASK [run]\nok: [lab] => ran {command}\n");
            if fail == "command" {
                c.status = "failed";
                c.artifacts = json!({});
            }
            vec![c]
        }
        _ => vec![Child::ok("noop", json!({}))],
    };
    let failed = children.iter().find(|c| c.status != "successful");
    let status = failed.map(|c| c.status).unwrap_or("successful").to_owned();
    if job.workflow {
        let mut nodes = Vec::new();
        for child in &children {
            let id = w.id();
            let node = w.id();
            w.jobs.push(child_job(id, child, &job));
            nodes.push((node, id));
        }
        let j = &mut w.jobs[i];
        j.nodes = nodes;
        j.status = if status == "successful" {
            status
        } else {
            "failed".into()
        };
    } else if let Some(child) = children.first() {
        let built = child_job(job.id, child, &job);
        let j = &mut w.jobs[i];
        j.status = built.status;
        j.artifacts = built.artifacts;
        j.events = built.events;
        j.result_stdout = built.result_stdout;
        j.result_traceback = built.result_traceback;
        j.job_explanation = built.job_explanation;
    }
}

fn child_job(id: u64, child: &Child, parent: &Job) -> Job {
    let mut events = vec![json!({
        "id": id * 100, "type": "job_event", "event": "playbook_on_start", "failed": false,
        "event_data": {}, "task": "", "play": "",
    })];
    for (n, (task, msg)) in child.failed_msgs.iter().enumerate() {
        events.push(json!({
            "id": id * 100 + 1 + n as u64, "type": "job_event", "event": "runner_on_failed", "failed": true,
            "task": task, "play": child.name,
            "event_data": {"task": task, "play": child.name, "host": "lab", "res": {"msg": msg, "changed": false}},
        }));
    }
    Job {
        id,
        workflow: false,
        template: parent.template,
        name: child.name.into(),
        status: child.status.into(),
        polls: 0,
        extra_vars: parent.extra_vars.clone(),
        inventory: parent.inventory,
        labels: Vec::new(),
        launched_by: parent.launched_by,
        artifacts: child.artifacts.clone(),
        result_traceback: child.traceback.clone(),
        job_explanation: child.explanation.clone(),
        result_stdout: if child.stdout.is_empty() {
            format!("PLAY [{}] done\n", child.name)
        } else {
            child.stdout.clone()
        },
        events,
        nodes: Vec::new(),
        parent: Some(parent.id),
        created: parent.created.clone(),
    }
}

/// The current time as AWX writes it: `2026-11-22T05:30:00.123456Z`.
fn now_iso() -> String {
    let t = sim_http::UtcTime::now();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second, t.micros
    )
}
