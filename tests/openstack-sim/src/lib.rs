//! A stateful simulator of the OpenStack APIs broker's `OpenStack` provider uses, for its tests.
//!
//! No OpenStack can run on a test machine, so this serves, on one port and laid out as DevStack lays
//! them out, enough of four services for broker — and for the official `openstacksdk` — to behave as
//! against a real cloud:
//!
//! - Keystone v3 at `/identity`: version discovery, `POST /v3/auth/tokens` with the `password` method
//!   (user and project by name or id, with their domains) and the `application_credential` method
//!   (by id, or by name with the user), the token in `X-Subject-Token`, a service catalogue whose
//!   compute, image and network endpoints (public and internal, one region) point back here, tokens
//!   that expire on demand;
//! - Nova (compute API 2.1, no microversions) at `/compute/v2.1`: servers create / get / list / list
//!   detail / delete, their metadata, flavors; a server answers `BUILD` for
//!   [`SimOptions::build_polls`] reads, then `ACTIVE` with a fixed address on each of its networks —
//!   or `ERROR` with a `fault` when asked;
//! - Glance v2 at `/image`: images, list and get, `name` filter;
//! - Neutron v2.0 at `/networking`: networks, ports (one per server and network), floating IPs
//!   (create, associate to a port, list, delete), which then show in the server's addresses as
//!   `floating`.
//!
//! Every request but token creation and version discovery needs a valid `X-Auth-Token`, or is
//! answered 401 as keystonemiddleware answers. Faults are asked for through [`Sim::inject`]: error
//! statuses, Nova's quota refusal, a build that ends in `ERROR`, a token that expires at a given
//! request; [`Sim::unused_faults`] lists those never served.
//!
//! With [`SimOptions::containers`] the servers are real: each `ACTIVE` server is a Podman container
//! serving SSH at the server's address, so a client can log in to what it made.
#![allow(missing_docs)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request};
use serde_json::{Map, Value, json};
use sim_http::{Reply, lock, no_content, reply};

/// How the simulated cloud behaves.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// How many reads of a new server answer `BUILD` before it is `ACTIVE` (or `ERROR`).
    pub build_polls: u32,
    /// The region of every catalogue endpoint.
    pub region: String,
    /// When set, every server that becomes `ACTIVE` is a real host: a container that serves SSH at
    /// the server's address on the network `private` (then a loopback network of this process).
    pub containers: Option<RealServers>,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            build_polls: 2,
            region: "RegionOne".into(),
            containers: None,
        }
    }
}

/// Servers backed by Podman containers (the `podman` command): each `ACTIVE` server runs `image`,
/// its port 22 published at the server's fixed address on `ssh_port`, named `<name_prefix>_<server
/// id>` (the tests' `Containers` guard removes what a test leaves); deleting the server removes it.
#[derive(Debug, Clone)]
pub struct RealServers {
    /// An image whose command serves SSH on port 22 (`localhost/broker-sshd`).
    pub image: String,
    pub name_prefix: String,
    /// The port sshd answers on at the server's address.
    pub ssh_port: u16,
}

impl RealServers {
    /// The container name of server `id`.
    pub fn container(&self, id: &str) -> String {
        format!("{}_{id}", self.name_prefix)
    }

    /// Starts server `id`'s container at `ip`.
    fn start(&self, id: &str, ip: &str) -> Result<(), String> {
        let out = std::process::Command::new("podman")
            .args(["run", "-d", "--name", &self.container(id), "-p"])
            .arg(format!("{ip}:{}:22", self.ssh_port))
            .arg(&self.image)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("cannot run podman: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    /// Removes server `id`'s container, if it has one.
    fn remove(&self, id: &str) {
        let _removed = std::process::Command::new("podman")
            .args(["rm", "-f", "-t", "0", &self.container(id)])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// A loopback prefix (`127.A.B`) of this process, for the addresses of servers backed by
/// containers: each test process publishes on addresses of its own.
fn loopback_prefix() -> String {
    let pid = std::process::id();
    format!("127.{}.{}", 100 + pid % 100, 1 + (pid / 100) % 250)
}

/// A fault for the next matching requests.
pub type Fault = sim_http::Fault<FaultKind>;

/// What a [`Fault`] does.
#[derive(Debug, Clone)]
pub enum FaultKind {
    /// Answer with this status and the service's error body.
    Status(u16),
    /// Nova refuses a server create: `403` "Quota exceeded for instances".
    QuotaExceeded,
    /// The server this create makes is accepted, then ends in `ERROR` with this fault message.
    BuildError(String),
    /// The token this request carries expires now: the request is answered 401, and so is every
    /// later one with that token.
    ExpireToken,
}

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The full path, with its service prefix (`/compute/v2.1/servers`).
    pub path: String,
    pub query: Vec<(String, String)>,
    pub body: Value,
    /// The `X-Auth-Token` it carried.
    pub token: Option<String>,
}

/// A Glance image.
#[derive(Debug, Clone)]
pub struct Image {
    pub id: String,
    pub name: String,
}

/// A Nova flavor.
#[derive(Debug, Clone)]
pub struct Flavor {
    pub id: String,
    pub name: String,
    pub vcpus: u32,
    pub ram: u32,
    pub disk: u32,
}

/// A Neutron network; fixed addresses come from `cidr_prefix`.1… (`10.0.0`).
#[derive(Debug, Clone)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub cidr_prefix: String,
    /// An external network, where floating IPs come from.
    pub external: bool,
}

/// A Nova server.
#[derive(Debug, Clone)]
pub struct Server {
    pub id: String,
    pub name: String,
    /// `BUILD`, `ACTIVE` or `ERROR`.
    pub status: String,
    pub image: String,
    pub flavor: String,
    pub networks: Vec<String>,
    pub key_name: Option<String>,
    pub metadata: Map<String, Value>,
    pub project: String,
    /// The id of the user who made it (Nova's `user_id`).
    pub user: String,
    /// The fault message of a build that is to fail (or has failed).
    pub fail: Option<String>,
    reads: u32,
    created: String,
}

/// A Neutron port: a server's interface on a network.
#[derive(Debug, Clone)]
pub struct Port {
    pub id: String,
    pub network: String,
    pub device: String,
    pub ip: String,
    pub mac: String,
}

/// A Neutron floating IP.
#[derive(Debug, Clone)]
pub struct FloatingIp {
    pub id: String,
    pub address: String,
    pub network: String,
    pub port: Option<String>,
}

#[derive(Debug, Clone)]
struct User {
    id: String,
    name: String,
    domain: String,
    password: String,
}

#[derive(Debug, Clone)]
struct Project {
    id: String,
    name: String,
    domain: String,
}

#[derive(Debug, Clone)]
struct AppCredential {
    id: String,
    name: String,
    secret: String,
    user: String,
    project: String,
}

/// A token Keystone issued.
#[derive(Debug, Clone)]
pub struct Token {
    pub token: String,
    pub user: String,
    /// The project it is scoped to; `None` for an unscoped token.
    pub project: Option<String>,
    pub methods: Vec<String>,
    pub expired: bool,
}

/// The user tests log in as, in the domain `Default`.
pub const USER: &str = "alice";
/// Her password.
pub const PASSWORD: &str = "alice-password";
/// Her project, in the domain `Default`.
pub const PROJECT: &str = "demo";
/// Her application credential's id (scoped to [`PROJECT`]).
pub const APP_CREDENTIAL_ID: &str = "alice-appcred-0001";
/// Its name.
pub const APP_CREDENTIAL_NAME: &str = "broker";
/// Its secret.
pub const APP_CREDENTIAL_SECRET: &str = "alice-appcred-secret";

/// The simulator's whole state; tests read and arrange it through [`Sim::world`].
#[derive(Debug)]
pub struct World {
    pub options: SimOptions,
    /// `http://127.0.0.1:PORT`, what the catalogue's endpoints start with.
    pub origin: String,
    next_id: u64,
    users: Vec<User>,
    projects: Vec<Project>,
    app_credentials: Vec<AppCredential>,
    pub tokens: Vec<Token>,
    pub images: Vec<Image>,
    pub flavors: Vec<Flavor>,
    pub networks: Vec<Network>,
    /// The key pairs a server may name.
    pub key_names: Vec<String>,
    pub servers: Vec<Server>,
    pub ports: Vec<Port>,
    pub floating_ips: Vec<FloatingIp>,
    pub requests: Vec<Recorded>,
    faults: Vec<Fault>,
    /// Ports made so far: fixed addresses are not given again (a test that tells hosts apart by
    /// address must not meet a deleted server's address on a new one).
    ports_made: u32,
}

impl World {
    fn new(options: SimOptions, origin: String) -> Self {
        let mut w = World {
            options,
            origin,
            next_id: 0,
            users: vec![User {
                id: "u-alice".into(),
                name: USER.into(),
                domain: "default".into(),
                password: PASSWORD.into(),
            }],
            projects: vec![Project {
                id: "p-demo".into(),
                name: PROJECT.into(),
                domain: "default".into(),
            }],
            app_credentials: vec![AppCredential {
                id: APP_CREDENTIAL_ID.into(),
                name: APP_CREDENTIAL_NAME.into(),
                secret: APP_CREDENTIAL_SECRET.into(),
                user: "u-alice".into(),
                project: "p-demo".into(),
            }],
            tokens: Vec::new(),
            images: Vec::new(),
            flavors: Vec::new(),
            networks: Vec::new(),
            key_names: vec!["alice-key".into()],
            servers: Vec::new(),
            ports: Vec::new(),
            floating_ips: Vec::new(),
            requests: Vec::new(),
            faults: Vec::new(),
            ports_made: 0,
        };
        for name in ["rhel-9.4", "rhel-9.4-minimal", "fedora-41"] {
            let id = w.uuid();
            w.images.push(Image {
                id,
                name: name.into(),
            });
        }
        for (name, vcpus, ram, disk) in [
            ("m1.small", 1, 2_048, 20),
            ("m1.medium", 2, 4_096, 40),
            ("m1.large", 4, 8_192, 80),
        ] {
            let id = w.uuid();
            w.flavors.push(Flavor {
                id,
                name: name.into(),
                vcpus,
                ram,
                disk,
            });
        }
        let private = if w.options.containers.is_some() {
            loopback_prefix()
        } else {
            "10.0.0".to_owned()
        };
        for (name, prefix, external) in [
            ("private", private.as_str(), false),
            ("public", "172.24.4", true),
        ] {
            let id = w.uuid();
            w.networks.push(Network {
                id,
                name: name.into(),
                cidr_prefix: prefix.into(),
                external,
            });
        }
        w
    }

    /// A fresh UUID-shaped id (deterministic: a counter).
    fn uuid(&mut self) -> String {
        self.next_id += 1;
        format!(
            "5e1d{:04x}-0000-4000-8000-{:012x}",
            self.next_id, self.next_id
        )
    }

    /// The image named `name`.
    pub fn image(&self, name: &str) -> Option<&Image> {
        self.images.iter().find(|i| i.name == name)
    }

    /// The flavor named `name`.
    pub fn flavor(&self, name: &str) -> Option<&Flavor> {
        self.flavors.iter().find(|f| f.name == name)
    }

    /// The network named `name`.
    pub fn network(&self, name: &str) -> Option<&Network> {
        self.networks.iter().find(|n| n.name == name)
    }

    /// Makes an `ACTIVE` server of [`PROJECT`] on the network `private`, as `user` (a user id:
    /// alice is `u-alice`) made it with `metadata`: what a crashed checkout, or someone else, left.
    pub fn add_server(&mut self, name: &str, user: &str, metadata: Map<String, Value>) -> String {
        let id = self.uuid();
        let image = self.images[0].id.clone();
        let flavor = self.flavors[0].id.clone();
        let network = self.networks[0].id.clone();
        self.servers.push(Server {
            id: id.clone(),
            name: name.into(),
            status: "BUILD".into(),
            image,
            flavor,
            networks: vec![network],
            key_name: None,
            metadata,
            project: "p-demo".into(),
            user: user.into(),
            fail: None,
            reads: 0,
            created: CREATED.into(),
        });
        finish_build(self, self.servers.len() - 1);
        id
    }

    fn take_fault(&mut self, method: &str, path: &str) -> Option<FaultKind> {
        sim_http::take_fault(&mut self.faults, method, path)
    }

    fn valid_token(&self, token: Option<&str>) -> Option<&Token> {
        let token = token?;
        self.tokens
            .iter()
            .find(|t| t.token == token && !t.expired && t.project.is_some())
    }
}

/// A running simulator. Dropping it stops the server.
pub struct Sim {
    addr: SocketAddr,
    world: Arc<Mutex<World>>,
    _served: sim_http::Served,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let w = lock(&self.world);
        if let Some(real) = &w.options.containers {
            for server in &w.servers {
                real.remove(&server.id);
            }
        }
    }
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim").field("addr", &self.addr).finish()
    }
}

impl Sim {
    /// Starts a simulator with the default cloud on a free loopback port, served by its own thread.
    pub fn start() -> Sim {
        Sim::start_with(SimOptions::default())
    }

    /// Starts a simulator behaving as `options` say.
    ///
    /// # Panics
    /// When no loopback port can be bound (a test environment problem).
    #[allow(clippy::expect_used)]
    pub fn start_with(options: SimOptions) -> Sim {
        Sim::start_on(options, "127.0.0.1:0")
            .expect("binding a loopback port for the OpenStack simulator")
    }

    /// Starts a simulator on `bind` (e.g. `127.0.0.1:5000`).
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub fn start_on(options: SimOptions, bind: &str) -> std::io::Result<Sim> {
        let listener = std::net::TcpListener::bind(bind)?;
        let addr = listener.local_addr()?;
        let world = Arc::new(Mutex::new(World::new(options, format!("http://{addr}"))));
        let served = sim_http::serve(listener, None, Arc::clone(&world), handle)?;
        Ok(Sim {
            addr,
            world,
            _served: served,
        })
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Keystone's versioned URL, the `auth_url` of a `clouds.yaml`: `http://127.0.0.1:PORT/identity/v3`.
    pub fn auth_url(&self) -> String {
        format!("{}/identity/v3", self.url())
    }

    /// The simulator's state, to arrange or inspect.
    pub fn world(&self) -> MutexGuard<'_, World> {
        lock(&self.world)
    }

    /// Makes the next `times` requests whose path contains `path_contains` meet `kind`.
    pub fn inject(&self, method: Option<&str>, path_contains: &str, kind: FaultKind, times: u32) {
        self.world().faults.push(Fault {
            path_contains: path_contains.into(),
            method: method.map(str::to_owned),
            kind,
            times,
        });
    }

    /// The faults injected and not yet used up: a test that injects faults asserts this is empty,
    /// or a fault that was never served would let it pass without exercising what it is about.
    pub fn unused_faults(&self) -> Vec<Fault> {
        self.world().faults.clone()
    }

    /// Expires every token issued so far (as a token past its `expires_at`).
    pub fn expire_tokens(&self) {
        for t in &mut self.world().tokens {
            t.expired = true;
        }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.world().requests.clone()
    }

    /// The servers that exist.
    pub fn servers(&self) -> Vec<Server> {
        self.world().servers.clone()
    }
}

async fn handle(
    world: Arc<Mutex<World>>,
    req: Request<Incoming>,
) -> Result<Reply, std::convert::Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query: Vec<(String, String)> = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let token = req
        .headers()
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .unwrap_or_else(|_| json!({"_raw": String::from_utf8_lossy(&body)}))
    };
    let mut w = lock(&world);
    w.requests.push(Recorded {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        body: body.clone(),
        token: token.clone(),
    });
    let request = Req {
        method,
        path,
        query,
        body,
        token,
    };
    Ok(respond(&mut w, &request))
}

struct Req {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    body: Value,
    token: Option<String>,
}

impl Req {
    fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The services, by the path prefix they are served under.
const SERVICES: [&str; 4] = ["/identity", "/compute", "/image", "/networking"];

fn respond(w: &mut World, req: &Req) -> Reply {
    let Some(service) = SERVICES.iter().find(|s| {
        req.path == **s
            || req
                .path
                .strip_prefix(**s)
                .is_some_and(|r| r.starts_with('/'))
    }) else {
        return reply(
            404,
            json!({"error": {"code": 404, "title": "Not Found", "message": "no such service"}}),
        );
    };
    let rest = req.path[service.len()..].trim_end_matches('/').to_owned();
    if req.method == Method::GET
        && let Some(answer) = versions(w, service, &rest)
    {
        return answer;
    }
    let fault = w.take_fault(req.method.as_str(), &req.path);
    if let Some(FaultKind::ExpireToken) = fault {
        for t in &mut w.tokens {
            if Some(&t.token) == req.token.as_ref() {
                t.expired = true;
            }
        }
    }
    if *service == "/identity" {
        return identity(w, req, &rest, fault);
    }
    let Some(token) = w.valid_token(req.token.as_deref()).cloned() else {
        return unauthorized(w);
    };
    match fault {
        Some(FaultKind::Status(code)) => return fault_reply(service, code),
        Some(FaultKind::QuotaExceeded) if *service == "/compute" => {
            return reply(
                403,
                json!({"forbidden": {"code": 403, "message": "Quota exceeded for instances: Requested 1, but already used 10 of 10 instances"}}),
            );
        }
        _ => {}
    }
    let project = token.project.unwrap_or_default();
    let user = token.user;
    let build_error = match fault {
        Some(FaultKind::BuildError(message)) => Some(message),
        _ => None,
    };
    match *service {
        "/compute" => compute(w, req, &rest, (&project, &user), build_error),
        "/image" => image(w, req, &rest),
        _ => networking(w, req, &rest),
    }
}

fn unauthorized(w: &World) -> Reply {
    let mut r = reply(
        401,
        json!({"error": {"code": 401, "title": "Unauthorized",
                          "message": "The request you have made requires authentication."}}),
    );
    if let Ok(v) =
        hyper::header::HeaderValue::from_str(&format!("Keystone uri=\"{}/identity\"", w.origin))
    {
        r.headers_mut().insert("www-authenticate", v);
    }
    r
}

fn fault_reply(service: &str, code: u16) -> Reply {
    let message = format!("simulated fault {code}");
    match service {
        "/compute" if code == 404 => reply(
            code,
            json!({"itemNotFound": {"code": code, "message": message}}),
        ),
        "/compute" if code < 500 => reply(
            code,
            json!({"badRequest": {"code": code, "message": message}}),
        ),
        "/compute" => reply(
            code,
            json!({"computeFault": {"code": code, "message": message}}),
        ),
        "/networking" => reply(
            code,
            json!({"NeutronError": {"type": "SimulatedFault", "message": message, "detail": ""}}),
        ),
        _ => reply(code, json!({"error": {"code": code, "message": message}})),
    }
}

/// The version documents each service answers at its root and at its versioned root.
fn versions(w: &World, service: &str, rest: &str) -> Option<Reply> {
    let o = &w.origin;
    let (id, versioned, extra) = match service {
        "/identity" => (
            "v3.14",
            "/v3",
            json!({"status": "stable", "updated": "2020-04-07T00:00:00Z",
                   "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}]}),
        ),
        "/compute" => (
            "v2.1",
            "/v2.1",
            json!({"status": "CURRENT", "version": "", "min_version": "", "updated": "2013-07-23T11:33:21Z"}),
        ),
        "/image" => ("v2.16", "/v2", json!({"status": "CURRENT"})),
        _ => ("v2.0", "/v2.0", json!({"status": "CURRENT"})),
    };
    let mut version = extra;
    version["id"] = json!(id);
    version["links"] = json!([{"rel": "self", "href": format!("{o}{service}{versioned}/")}]);
    if rest.is_empty() {
        let values = json!([version]);
        return Some(match service {
            "/identity" => reply(300, json!({"versions": {"values": values}})),
            "/image" => reply(300, json!({"versions": values})),
            _ => reply(200, json!({"versions": values})),
        });
    }
    (rest == versioned).then(|| reply(200, json!({"version": version})))
}

fn identity(w: &mut World, req: &Req, rest: &str, fault: Option<FaultKind>) -> Reply {
    if let Some(FaultKind::Status(code)) = fault {
        return fault_reply("/identity", code);
    }
    if req.method == Method::POST && rest == "/v3/auth/tokens" {
        return issue_token(w, &req.body);
    }
    not_found_error("/identity", "The resource could not be found.")
}

/// `POST /v3/auth/tokens`: a password or application-credential login.
fn issue_token(w: &mut World, body: &Value) -> Reply {
    let identity = &body["auth"]["identity"];
    let methods: Vec<String> = identity["methods"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let found = match methods.first().map(String::as_str) {
        Some("password") if methods.len() == 1 => password_login(w, &identity["password"]["user"])
            .and_then(|user| scope(w, &body["auth"]["scope"]).map(|project| (user, project))),
        Some("application_credential") if methods.len() == 1 => {
            if !body["auth"]["scope"].is_null() {
                return reply(
                    401,
                    json!({"error": {"code": 401, "title": "Unauthorized",
                                      "message": "Application credentials cannot request a scope."}}),
                );
            }
            app_credential_login(w, &identity["application_credential"])
        }
        _ => {
            return reply(
                400,
                json!({"error": {"code": 400, "title": "Bad Request",
                                  "message": "Expecting to find identity methods password or application_credential in auth."}}),
            );
        }
    };
    let Some((user, project)) = found else {
        return unauthorized(w);
    };
    let token = format!(
        "gAAAAAsim{:016x}",
        w.next_id * 7_919 + w.tokens.len() as u64
    );
    w.next_id += 1;
    w.tokens.push(Token {
        token: token.clone(),
        user: user.clone(),
        project: project.clone(),
        methods: methods.clone(),
        expired: false,
    });
    let body = token_body(w, &user, project.as_deref(), &methods);
    let mut r = reply(201, body);
    if let Ok(v) = hyper::header::HeaderValue::from_str(&token) {
        r.headers_mut().insert("x-subject-token", v);
    }
    r
}

/// The user id a password login names, when its password is right.
fn password_login(w: &World, user: &Value) -> Option<String> {
    let found = w.users.iter().find(|u| {
        let named = user["id"].as_str() == Some(&u.id)
            || (user["name"].as_str() == Some(&u.name)
                && domain_matches(&user["domain"], &u.domain));
        named && user["password"].as_str() == Some(&u.password)
    })?;
    Some(found.id.clone())
}

fn domain_matches(domain: &Value, id: &str) -> bool {
    domain["id"].as_str() == Some(id)
        || domain["name"]
            .as_str()
            .is_some_and(|n| n.eq_ignore_ascii_case(id))
}

/// The project a password login asks for: `Some(None)` unscoped, `None` when no such project.
fn scope(w: &World, scope: &Value) -> Option<Option<String>> {
    if scope.is_null() {
        return Some(None);
    }
    let p = &scope["project"];
    let project = w.projects.iter().find(|pr| {
        p["id"].as_str() == Some(&pr.id)
            || (p["name"].as_str() == Some(&pr.name) && domain_matches(&p["domain"], &pr.domain))
    })?;
    Some(Some(project.id.clone()))
}

fn app_credential_login(w: &World, cred: &Value) -> Option<(String, Option<String>)> {
    let found = w.app_credentials.iter().find(|c| {
        let named = cred["id"].as_str() == Some(&c.id)
            || (cred["name"].as_str() == Some(&c.name)
                && (cred["user"]["id"].as_str() == Some(&c.user)
                    || w.users.iter().any(|u| {
                        u.id == c.user
                            && cred["user"]["name"].as_str() == Some(&u.name)
                            && domain_matches(&cred["user"]["domain"], &u.domain)
                    })));
        named && cred["secret"].as_str() == Some(&c.secret)
    })?;
    Some((found.user.clone(), Some(found.project.clone())))
}

/// When every token says it was issued. Tokens say they expire far in the future: expiry is the
/// server's refusal ([`Sim::expire_tokens`], [`FaultKind::ExpireToken`]), which a client cannot foresee.
const ISSUED_AT: &str = "2026-01-01T00:00:00.000000Z";
const EXPIRES_AT: &str = "2099-12-31T23:59:59.000000Z";
/// When every server says it was created.
const CREATED: &str = "2026-01-01T00:00:00Z";

fn token_body(w: &World, user: &str, project: Option<&str>, methods: &[String]) -> Value {
    let u = w.users.iter().find(|u| u.id == user);
    let mut token = json!({
        "methods": methods,
        "user": {"id": user, "name": u.map(|u| u.name.clone()), "domain": {"id": "default", "name": "Default"},
                 "password_expires_at": null},
        "audit_ids": ["c2ltLWF1ZGl0"],
        "issued_at": ISSUED_AT,
        "expires_at": EXPIRES_AT,
    });
    if let Some(p) = project.and_then(|p| w.projects.iter().find(|pr| pr.id == p)) {
        token["project"] =
            json!({"id": p.id, "name": p.name, "domain": {"id": "default", "name": "Default"}});
        token["roles"] =
            json!([{"id": "r-member", "name": "member"}, {"id": "r-reader", "name": "reader"}]);
        token["is_domain"] = json!(false);
        token["catalog"] = catalog(w);
    }
    json!({"token": token})
}

fn catalog(w: &World) -> Value {
    let services = [
        ("compute", "nova", "/compute/v2.1"),
        ("image", "glance", "/image"),
        ("network", "neutron", "/networking"),
        ("identity", "keystone", "/identity"),
    ];
    let entries: Vec<Value> = services
        .iter()
        .map(|(kind, name, path)| {
            let endpoints: Vec<Value> = ["public", "internal"]
                .iter()
                .map(|interface| {
                    json!({"id": format!("ep-{name}-{interface}"), "interface": interface,
                           "region": w.options.region, "region_id": w.options.region,
                           "url": format!("{}{path}", w.origin)})
                })
                .collect();
            json!({"type": kind, "name": name, "id": format!("svc-{name}"), "endpoints": endpoints})
        })
        .collect();
    Value::Array(entries)
}

fn not_found_error(service: &str, message: &str) -> Reply {
    match service {
        "/compute" => reply(
            404,
            json!({"itemNotFound": {"code": 404, "message": message}}),
        ),
        "/networking" => reply(
            404,
            json!({"NeutronError": {"type": "NotFound", "message": message, "detail": ""}}),
        ),
        "/image" => reply(
            404,
            json!({"message": message, "code": "404 Not Found", "title": "Not Found"}),
        ),
        _ => reply(
            404,
            json!({"error": {"code": 404, "title": "Not Found", "message": message}}),
        ),
    }
}

fn bad_request(message: &str) -> Reply {
    reply(
        400,
        json!({"badRequest": {"code": 400, "message": message}}),
    )
}

fn compute(
    w: &mut World,
    req: &Req,
    rest: &str,
    (project, user): (&str, &str),
    build_error: Option<String>,
) -> Reply {
    let Some(rest) = rest.strip_prefix("/v2.1") else {
        return not_found_error("/compute", "not found");
    };
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match (&req.method, segments.as_slice()) {
        (&Method::POST, ["servers"]) => create_server(w, &req.body, (project, user), build_error),
        (&Method::GET, ["servers"]) => list_servers(w, req, project, false),
        (&Method::GET, ["servers", "detail"]) => list_servers(w, req, project, true),
        (&Method::GET, ["servers", id]) => match read_server(w, id, project) {
            Some(s) => reply(200, json!({"server": server_json(w, &s)})),
            None => server_not_found(id),
        },
        (&Method::DELETE, ["servers", id]) => delete_server(w, id, project),
        (&Method::GET, ["servers", id, "metadata"]) => match find_server(w, id, project) {
            Some(i) => reply(200, json!({"metadata": w.servers[i].metadata})),
            None => server_not_found(id),
        },
        (&Method::POST | &Method::PUT, ["servers", id, "metadata"]) => {
            set_metadata(w, id, project, &req.body, req.method == Method::PUT)
        }
        (&Method::GET, ["servers", id, "metadata", key]) => match find_server(w, id, project) {
            Some(i) => match w.servers[i].metadata.get(*key) {
                Some(v) => reply(200, json!({"meta": {*key: v}})),
                None => not_found_error("/compute", "Metadata item was not found"),
            },
            None => server_not_found(id),
        },
        (&Method::GET, ["flavors"]) => reply(
            200,
            json!({"flavors": w.flavors.iter().map(|f| json!({"id": f.id, "name": f.name, "links": links(w, "/compute/v2.1/flavors", &f.id)})).collect::<Vec<_>>()}),
        ),
        (&Method::GET, ["flavors", "detail"]) => reply(
            200,
            json!({"flavors": w.flavors.iter().map(|f| flavor_json(w, f)).collect::<Vec<_>>()}),
        ),
        (&Method::GET, ["flavors", id]) => match w.flavors.iter().find(|f| f.id == *id) {
            Some(f) => reply(200, json!({"flavor": flavor_json(w, f)})),
            None => not_found_error("/compute", &format!("Flavor {id} could not be found.")),
        },
        _ => not_found_error("/compute", "The resource could not be found."),
    }
}

fn server_not_found(id: &str) -> Reply {
    not_found_error("/compute", &format!("Instance {id} could not be found."))
}

fn links(w: &World, collection: &str, id: &str) -> Value {
    json!([{"rel": "self", "href": format!("{}{collection}/{id}", w.origin)},
           {"rel": "bookmark", "href": format!("{}{}/{id}", w.origin, collection.replace("/v2.1", ""))}])
}

fn flavor_json(w: &World, f: &Flavor) -> Value {
    json!({"id": f.id, "name": f.name, "vcpus": f.vcpus, "ram": f.ram, "disk": f.disk,
           "OS-FLV-EXT-DATA:ephemeral": 0, "OS-FLV-DISABLED:disabled": false, "swap": "",
           "rxtx_factor": 1.0, "os-flavor-access:is_public": true,
           "links": links(w, "/compute/v2.1/flavors", &f.id)})
}

/// `POST /servers`: validates the request as Nova does, then makes a server in `BUILD`.
fn create_server(
    w: &mut World,
    body: &Value,
    (project, user): (&str, &str),
    build_error: Option<String>,
) -> Reply {
    let s = &body["server"];
    let Some(name) = s["name"].as_str().filter(|n| !n.trim().is_empty()) else {
        return bad_request(
            "Invalid input for field/attribute name. Value: None. None is not of type 'string'",
        );
    };
    let image = s["imageRef"].as_str().unwrap_or_default();
    if !w.images.iter().any(|i| i.id == image) {
        return bad_request("Invalid imageRef provided.");
    }
    let flavor = s["flavorRef"].as_str().unwrap_or_default();
    if !w.flavors.iter().any(|f| f.id == flavor) {
        return bad_request(&format!("Flavor {flavor} could not be found."));
    }
    let mut networks = Vec::new();
    for n in s["networks"].as_array().into_iter().flatten() {
        let id = n["uuid"].as_str().unwrap_or_default();
        if !w.networks.iter().any(|net| net.id == id) {
            return bad_request(&format!("Network {id} could not be found."));
        }
        networks.push(id.to_owned());
    }
    let key_name = s["key_name"].as_str().map(str::to_owned);
    if let Some(key) = &key_name
        && !w.key_names.contains(key)
    {
        return bad_request("Invalid key_name provided.");
    }
    let metadata = match &s["metadata"] {
        Value::Object(m) if m.values().all(Value::is_string) => m.clone(),
        Value::Null => Map::new(),
        _ => return bad_request("Invalid input for field/attribute metadata."),
    };
    let id = w.uuid();
    w.servers.push(Server {
        id: id.clone(),
        name: name.to_owned(),
        status: "BUILD".into(),
        image: image.to_owned(),
        flavor: flavor.to_owned(),
        networks,
        key_name,
        metadata,
        project: project.to_owned(),
        user: user.to_owned(),
        fail: build_error,
        reads: 0,
        created: CREATED.into(),
    });
    reply(
        202,
        json!({"server": {"id": id, "links": links(w, "/compute/v2.1/servers", &id),
                          "OS-DCF:diskConfig": "MANUAL", "security_groups": [{"name": "default"}],
                          "adminPass": "sim-admin-pass"}}),
    )
}

fn find_server(w: &World, id: &str, project: &str) -> Option<usize> {
    w.servers
        .iter()
        .position(|s| s.id == id && s.project == project)
}

/// A read of a server, which moves a build on: `BUILD` for `build_polls` reads, then `ACTIVE` with
/// its ports, or `ERROR`.
fn read_server(w: &mut World, id: &str, project: &str) -> Option<Server> {
    let i = find_server(w, id, project)?;
    if w.servers[i].status == "BUILD" {
        w.servers[i].reads += 1;
        if w.servers[i].reads > w.options.build_polls {
            finish_build(w, i);
        }
    }
    Some(w.servers[i].clone())
}

fn finish_build(w: &mut World, i: usize) {
    if w.servers[i].fail.is_some() {
        w.servers[i].status = "ERROR".into();
        return;
    }
    w.servers[i].status = "ACTIVE".into();
    let device = w.servers[i].id.clone();
    for network in w.servers[i].networks.clone() {
        let prefix = w
            .networks
            .iter()
            .find(|n| n.id == network)
            .map(|n| n.cidr_prefix.clone())
            .unwrap_or_default();
        let host = 10 + w.ports_made % 240;
        w.ports_made += 1;
        let id = w.uuid();
        w.ports.push(Port {
            id,
            network,
            device: device.clone(),
            ip: format!("{prefix}.{host}"),
            mac: format!("fa:16:3e:00:{:02x}:{:02x}", host / 256, host % 256),
        });
    }
    if let Some(real) = w.options.containers.clone() {
        let ip = w
            .ports
            .iter()
            .find(|p| p.device == device)
            .map(|p| p.ip.clone());
        if let Err(why) = ip
            .ok_or_else(|| "no address".to_owned())
            .and_then(|ip| real.start(&device, &ip))
        {
            w.servers[i].status = "ERROR".into();
            w.servers[i].fail = Some(format!("the server's container did not start: {why}"));
        }
    }
}

fn list_servers(w: &mut World, req: &Req, project: &str, detail: bool) -> Reply {
    let ids: Vec<String> = w
        .servers
        .iter()
        .filter(|s| s.project == project)
        .filter(|s| req.param("name").is_none_or(|n| s.name.contains(n)))
        .filter(|s| {
            req.param("status")
                .is_none_or(|st| s.status.eq_ignore_ascii_case(st))
        })
        .map(|s| s.id.clone())
        .collect();
    let mut servers = Vec::new();
    for id in ids {
        if let Some(s) = read_server(w, &id, project) {
            servers.push(if detail {
                server_json(w, &s)
            } else {
                json!({"id": s.id, "name": s.name, "links": links(w, "/compute/v2.1/servers", &s.id)})
            });
        }
    }
    reply(200, json!({"servers": servers}))
}

/// A server as Nova 2.1 shows it.
fn server_json(w: &World, s: &Server) -> Value {
    let (vm_state, task_state, power_state) = match s.status.as_str() {
        "BUILD" => ("building", json!("spawning"), 0),
        "ACTIVE" => ("active", Value::Null, 1),
        _ => ("error", Value::Null, 0),
    };
    let mut v = json!({
        "id": s.id, "name": s.name, "status": s.status, "tenant_id": s.project, "user_id": s.user,
        "metadata": s.metadata, "hostId": "", "key_name": s.key_name,
        "image": {"id": s.image, "links": links(w, "/compute/v2.1/images", &s.image)},
        "flavor": {"id": s.flavor, "links": links(w, "/compute/v2.1/flavors", &s.flavor)},
        "addresses": addresses(w, s), "accessIPv4": "", "accessIPv6": "",
        "created": s.created, "updated": s.created, "progress": 0,
        "OS-EXT-STS:vm_state": vm_state, "OS-EXT-STS:task_state": task_state,
        "OS-EXT-STS:power_state": power_state, "OS-DCF:diskConfig": "MANUAL",
        "OS-EXT-AZ:availability_zone": "nova", "config_drive": "",
        "security_groups": [{"name": "default"}], "os-extended-volumes:volumes_attached": [],
        "links": links(w, "/compute/v2.1/servers", &s.id),
    });
    if s.status == "ERROR" {
        v["fault"] = json!({"code": 500, "created": s.created,
                            "message": s.fail.clone().unwrap_or_default(),
                            "details": "Traceback (most recent call last):\n  nova.exception.BuildAbortException"});
    }
    v
}

/// `{network name: [fixed address, then its floating address]}`.
fn addresses(w: &World, s: &Server) -> Value {
    let mut out = Map::new();
    for port in w.ports.iter().filter(|p| p.device == s.id) {
        let name = w
            .networks
            .iter()
            .find(|n| n.id == port.network)
            .map(|n| n.name.clone())
            .unwrap_or_default();
        let mut list = vec![
            json!({"version": 4, "addr": port.ip, "OS-EXT-IPS:type": "fixed",
                                   "OS-EXT-IPS-MAC:mac_addr": port.mac}),
        ];
        for fip in w
            .floating_ips
            .iter()
            .filter(|f| f.port.as_deref() == Some(&port.id))
        {
            list.push(
                json!({"version": 4, "addr": fip.address, "OS-EXT-IPS:type": "floating",
                             "OS-EXT-IPS-MAC:mac_addr": port.mac}),
            );
        }
        out.insert(name, Value::Array(list));
    }
    Value::Object(out)
}

fn delete_server(w: &mut World, id: &str, project: &str) -> Reply {
    let Some(i) = find_server(w, id, project) else {
        return server_not_found(id);
    };
    w.servers.remove(i);
    if let Some(real) = &w.options.containers {
        real.remove(id);
    }
    let ports: Vec<String> = w
        .ports
        .iter()
        .filter(|p| p.device == id)
        .map(|p| p.id.clone())
        .collect();
    w.ports.retain(|p| p.device != id);
    for fip in &mut w.floating_ips {
        if fip.port.as_ref().is_some_and(|p| ports.contains(p)) {
            fip.port = None;
        }
    }
    no_content()
}

fn set_metadata(w: &mut World, id: &str, project: &str, body: &Value, replace: bool) -> Reply {
    let Some(i) = find_server(w, id, project) else {
        return server_not_found(id);
    };
    let Some(items) = body["metadata"]
        .as_object()
        .filter(|m| m.values().all(Value::is_string))
    else {
        return bad_request("Malformed request body");
    };
    let metadata = &mut w.servers[i].metadata;
    if replace {
        metadata.clear();
    }
    metadata.extend(items.clone());
    reply(200, json!({"metadata": metadata}))
}

fn image(w: &World, req: &Req, rest: &str) -> Reply {
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match (&req.method, segments.as_slice()) {
        (&Method::GET, ["v2", "images"]) => {
            let images: Vec<Value> = w
                .images
                .iter()
                .filter(|i| req.param("name").is_none_or(|n| i.name == n))
                .filter(|i| req.param("id").is_none_or(|n| i.id == n))
                .map(image_json)
                .collect();
            reply(
                200,
                json!({"images": images, "first": "/v2/images", "schema": "/v2/schemas/images"}),
            )
        }
        (&Method::GET, ["v2", "images", id]) => match w.images.iter().find(|i| i.id == *id) {
            Some(i) => reply(200, image_json(i)),
            None => not_found_error("/image", &format!("No image found with ID {id}")),
        },
        _ => not_found_error("/image", "The resource could not be found."),
    }
}

fn image_json(i: &Image) -> Value {
    json!({"id": i.id, "name": i.name, "status": "active", "visibility": "public", "protected": false,
           "os_hidden": false, "container_format": "bare", "disk_format": "qcow2", "size": 1_073_741_824_u64,
           "virtual_size": null, "min_disk": 0, "min_ram": 0, "owner": "p-admin", "tags": [],
           "checksum": null, "os_hash_algo": "sha512", "os_hash_value": null,
           "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
           "self": format!("/v2/images/{}", i.id), "file": format!("/v2/images/{}/file", i.id),
           "schema": "/v2/schemas/image"})
}

fn networking(w: &mut World, req: &Req, rest: &str) -> Reply {
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match (&req.method, segments.as_slice()) {
        (&Method::GET, ["v2.0", "extensions"]) => reply(200, json!({"extensions": []})),
        (&Method::GET, ["v2.0", "networks"]) => reply(
            200,
            json!({"networks": filtered(w.networks.iter().map(network_json), req)}),
        ),
        (&Method::GET, ["v2.0", "networks", id]) => match w.networks.iter().find(|n| n.id == *id) {
            Some(n) => reply(200, json!({"network": network_json(n)})),
            None => not_found_error("/networking", &format!("Network {id} could not be found.")),
        },
        (&Method::GET, ["v2.0", "ports"]) => reply(
            200,
            json!({"ports": filtered(w.ports.iter().map(port_json), req)}),
        ),
        (&Method::GET, ["v2.0", "floatingips"]) => reply(
            200,
            json!({"floatingips": filtered(w.floating_ips.iter().map(|f| floating_json(w, f)), req)}),
        ),
        (&Method::POST, ["v2.0", "floatingips"]) => create_floating_ip(w, &req.body),
        (&Method::PUT, ["v2.0", "floatingips", id]) => update_floating_ip(w, id, &req.body),
        (&Method::DELETE, ["v2.0", "floatingips", id]) => {
            let before = w.floating_ips.len();
            w.floating_ips.retain(|f| f.id != *id);
            if w.floating_ips.len() == before {
                not_found_error(
                    "/networking",
                    &format!("Floating IP {id} could not be found"),
                )
            } else {
                no_content()
            }
        }
        _ => not_found_error("/networking", "The resource could not be found."),
    }
}

/// The items that pass Neutron's filters.
fn filtered(items: impl Iterator<Item = Value>, req: &Req) -> Vec<Value> {
    items.filter(|item| matches_filters(item, req)).collect()
}

/// Neutron's filters: every query parameter (but paging and `fields`) must equal the field.
fn matches_filters(item: &Value, req: &Req) -> bool {
    req.query
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "limit" | "marker" | "fields" | "sort_key" | "sort_dir"
            )
        })
        .all(|(k, v)| match &item[k] {
            Value::String(s) => s == v,
            Value::Null => v.is_empty(),
            other => serde_json::from_str::<Value>(v).is_ok_and(|parsed| parsed == *other),
        })
}

fn network_json(n: &Network) -> Value {
    json!({"id": n.id, "name": n.name, "status": "ACTIVE", "admin_state_up": true, "shared": false,
           "router:external": n.external, "subnets": [format!("subnet-{}", n.name)], "mtu": 1450,
           "tenant_id": "p-demo", "project_id": "p-demo", "description": "", "tags": [],
           "availability_zones": ["nova"], "port_security_enabled": true})
}

fn port_json(p: &Port) -> Value {
    json!({"id": p.id, "network_id": p.network, "device_id": p.device, "device_owner": "compute:nova",
           "mac_address": p.mac, "status": "ACTIVE", "admin_state_up": true, "name": "",
           "fixed_ips": [{"subnet_id": "subnet", "ip_address": p.ip}],
           "tenant_id": "p-demo", "project_id": "p-demo"})
}

fn floating_json(w: &World, f: &FloatingIp) -> Value {
    let port = f
        .port
        .as_ref()
        .and_then(|id| w.ports.iter().find(|p| &p.id == id));
    json!({"id": f.id, "floating_ip_address": f.address, "floating_network_id": f.network,
           "port_id": f.port, "fixed_ip_address": port.map(|p| p.ip.clone()),
           "status": if port.is_some() { "ACTIVE" } else { "DOWN" }, "router_id": null,
           "tenant_id": "p-demo", "project_id": "p-demo", "description": "", "tags": []})
}

fn neutron_error(code: u16, kind: &str, message: &str) -> Reply {
    reply(
        code,
        json!({"NeutronError": {"type": kind, "message": message, "detail": ""}}),
    )
}

/// The port a floating IP's `port_id` names (`None`: no port), or Neutron's message when there is
/// no such port.
fn port_to_associate(w: &World, fip: &Value) -> Result<Option<String>, String> {
    let Some(port) = fip["port_id"].as_str() else {
        return Ok(None);
    };
    if w.ports.iter().any(|p| p.id == port) {
        Ok(Some(port.to_owned()))
    } else {
        Err(format!("Port {port} could not be found."))
    }
}

fn create_floating_ip(w: &mut World, body: &Value) -> Reply {
    let f = &body["floatingip"];
    let network = f["floating_network_id"].as_str().unwrap_or_default();
    let Some(prefix) = w
        .networks
        .iter()
        .find(|n| n.id == network && n.external)
        .map(|n| n.cidr_prefix.clone())
    else {
        return neutron_error(
            404,
            "ExternalGatewayForFloatingIPNotFound",
            &format!("External network {network} is not reachable"),
        );
    };
    let port = match port_to_associate(w, f) {
        Ok(port) => port,
        Err(message) => return neutron_error(404, "PortNotFound", &message),
    };
    let id = w.uuid();
    let address = format!("{prefix}.{}", w.floating_ips.len() + 100);
    w.floating_ips.push(FloatingIp {
        id,
        address,
        network: network.to_owned(),
        port,
    });
    let fip = w.floating_ips[w.floating_ips.len() - 1].clone();
    reply(201, json!({"floatingip": floating_json(w, &fip)}))
}

fn update_floating_ip(w: &mut World, id: &str, body: &Value) -> Reply {
    let port = match port_to_associate(w, &body["floatingip"]) {
        Ok(port) => port,
        Err(message) => return neutron_error(404, "PortNotFound", &message),
    };
    let Some(i) = w.floating_ips.iter().position(|f| f.id == id) else {
        return neutron_error(
            404,
            "FloatingIPNotFound",
            &format!("Floating IP {id} could not be found"),
        );
    };
    w.floating_ips[i].port = port;
    let fip = w.floating_ips[i].clone();
    reply(200, json!({"floatingip": floating_json(w, &fip)}))
}
