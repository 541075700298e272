//! A stateful simulator of the Foreman API (v2) that broker's `Foreman` provider uses, for its tests.
//!
//! No Foreman can run on a test machine, so this speaks enough of its API for broker — and for the
//! Python broker's own Foreman provider — to behave as against a real server:
//!
//! - HTTP Basic auth on everything under `/api/` (also spelt `/api/v2/`); a refused login is
//!   answered 401 with Foreman's `Unable to authenticate user …`;
//! - lists as Foreman pages them (`page`, `per_page` — default 20, or `all` — answered with `total`,
//!   `subtotal`, `page`, `per_page`, `search`, `results`) and a subset of its scoped search
//!   (`field = v`, `!=`, `~` (contains), `!~`, `^ (a, b)`, terms joined by `and`, and free text,
//!   which matches names containing it as Foreman's does);
//! - organisations and locations (nested: a `title` such as `Europe/Brno` beside the `name`),
//!   hostgroups (with operating system, domain, subnets), compute resources and their images, job
//!   templates;
//! - hosts: create (Foreman's 422 answers for what it refuses; the hostgroup's domain appended to a
//!   short name; image-based provisioning checked against the compute resource's images), get by id
//!   or name, list, delete. A host created with `build: true` is `Pending installation`
//!   (`build_status` 1) for [`SimOptions::build_polls`] reads, then `Installed` (0) — or
//!   `Installation error` (3) when asked;
//! - remote execution: job invocations targeting hosts by a search query, `running` for
//!   [`SimOptions::job_polls`] reads, then `succeeded` or `failed`, with each host's output as the
//!   SSH provider gives it (`Exit status: N`, and a `debug` chunk when N is not 0).
//!
//! Faults are asked for through [`Sim::inject`]: error statuses (a 5xx comes as the HTML page of the
//! proxy in front of Foreman), a build that fails, a build that takes longer;
//! [`Sim::unused_faults`] lists those never served.
#![allow(missing_docs)]

use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper::{Method, Request};
use serde_json::{Map, Value, json};
use sim_http::{Received, Reply, lock, reply};

/// How the simulated server behaves.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// How many reads of a host being built answer `Pending installation` before it is built.
    pub build_polls: u32,
    /// How many reads of a job invocation answer `running` before it ends.
    pub job_polls: u32,
    /// The page size when a list request names none (Foreman's `entries_per_page`).
    pub per_page: usize,
    /// The address every host gets; `None`: `192.0.2.N`, one each (a documentation range).
    pub host_ip: Option<String>,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            build_polls: 2,
            job_polls: 1,
            per_page: 20,
            host_ip: None,
        }
    }
}

/// A fault for the next matching requests.
pub type Fault = sim_http::Fault<FaultKind>;

/// What a [`Fault`] does.
#[derive(Debug, Clone)]
pub enum FaultKind {
    /// Answer with this status: a 5xx as the proxy in front of Foreman answers (an HTML page), any
    /// other as Foreman does (its JSON error).
    Status(u16),
    /// The host this create makes is accepted, and its build ends in `Installation error`.
    FailBuild,
    /// The host this create makes stays `Pending installation` for this many reads.
    SlowBuild(u32),
    /// The request is carried out, but its answer is lost: this status comes instead, as when the
    /// proxy in front of Foreman gives up waiting for it.
    Lost(u16),
}

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub body: Value,
    /// The Basic-auth user it carried.
    pub user: Option<String>,
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

/// An organisation or a location.
#[derive(Debug, Clone)]
pub struct Taxonomy {
    pub id: u64,
    pub name: String,
    /// The path of names from the top (`Europe/Brno`).
    pub title: String,
}

/// A hostgroup.
#[derive(Debug, Clone)]
pub struct Hostgroup {
    pub id: u64,
    pub name: String,
    pub title: String,
    pub description: String,
    pub operatingsystem: Option<String>,
    /// Appended to the short names of its hosts.
    pub domain: Option<String>,
    pub subnet: Option<String>,
    pub subnet6: Option<String>,
}

/// An image a compute resource provisions from.
#[derive(Debug, Clone)]
pub struct Image {
    pub id: u64,
    pub name: String,
    pub uuid: String,
}

/// A compute resource.
#[derive(Debug, Clone)]
pub struct ComputeResource {
    pub id: u64,
    pub name: String,
    pub provider: String,
    pub images: Vec<Image>,
}

/// A remote execution job template.
#[derive(Debug, Clone)]
pub struct JobTemplate {
    pub id: u64,
    pub name: String,
}

/// A host.
#[derive(Debug, Clone)]
pub struct Host {
    pub id: u64,
    pub name: String,
    pub hostgroup: Option<u64>,
    pub organization: u64,
    pub location: u64,
    /// 0 installed, 1 pending installation, 3 installation error.
    pub build_status: u8,
    pub ip: String,
    pub mac: String,
    pub compute_resource: Option<u64>,
    /// The image's uuid, for image-based provisioning.
    pub image: Option<String>,
    pub provision_method: String,
    pub comment: String,
    /// Whether the build, once over, fails.
    pub fail_build: bool,
    /// Reads left before the build is over.
    pub polls_left: u32,
}

/// One host's part of a job invocation.
#[derive(Debug, Clone)]
pub struct JobHost {
    pub host: String,
    pub status: i32,
    pub stdout: String,
}

/// A remote execution job invocation.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: u64,
    pub template: String,
    pub search_query: String,
    /// The job template's inputs (`command`).
    pub inputs: Value,
    pub hosts: Vec<JobHost>,
    /// Reads left answering `running`.
    pub polls_left: u32,
}

impl Job {
    fn status(&self) -> &'static str {
        if self.polls_left > 0 {
            "running"
        } else if self.hosts.iter().all(|h| h.status == 0) {
            "succeeded"
        } else {
            "failed"
        }
    }
}

/// The user tests log in as.
pub const USER: &str = "alice";
/// Her password.
pub const PASSWORD: &str = "alice-password";
/// The organisation every test names.
pub const ORGANIZATION: &str = "Default Organization";
/// A nested location: its title (`Europe/Brno`) and its name (`Brno`) both name it.
pub const LOCATION_TITLE: &str = "Europe/Brno";
/// The job template the Python broker's `execute` runs.
pub const COMMAND_TEMPLATE: &str = "Run Command - Script Default";

/// The simulator's whole state; tests read and arrange it through [`Sim::world`].
#[derive(Debug)]
pub struct World {
    pub options: SimOptions,
    next_id: u64,
    users: Vec<(String, String)>,
    pub organizations: Vec<Taxonomy>,
    pub locations: Vec<Taxonomy>,
    pub hostgroups: Vec<Hostgroup>,
    pub compute_resources: Vec<ComputeResource>,
    pub job_templates: Vec<JobTemplate>,
    pub hosts: Vec<Host>,
    pub jobs: Vec<Job>,
    /// What a command run through remote execution answers, by the whole command: its exit status
    /// and output. Others: `echo X` prints X, `exit N` ends with N, anything else succeeds silently.
    pub command_results: Vec<(String, i32, String)>,
    pub requests: Vec<Recorded>,
    faults: Vec<Fault>,
}

impl World {
    fn new(options: SimOptions) -> Self {
        let mut w = World {
            options,
            next_id: 0,
            users: vec![(USER.into(), PASSWORD.into())],
            organizations: Vec::new(),
            locations: Vec::new(),
            hostgroups: Vec::new(),
            compute_resources: Vec::new(),
            job_templates: Vec::new(),
            hosts: Vec::new(),
            jobs: Vec::new(),
            command_results: Vec::new(),
            requests: Vec::new(),
            faults: Vec::new(),
        };
        for (name, title) in [(ORGANIZATION, ORGANIZATION), ("ACME", "ACME")] {
            let id = w.id();
            w.organizations.push(taxonomy(id, name, title));
        }
        for (name, title) in [
            ("Default Location", "Default Location"),
            ("Europe", "Europe"),
            ("Brno", LOCATION_TITLE),
        ] {
            let id = w.id();
            w.locations.push(taxonomy(id, name, title));
        }
        for (name, title, os, domain) in [
            ("base", "base", None, None),
            (
                "rhel9",
                "base/rhel9",
                Some("RedHat 9.4"),
                Some("sim.example.com"),
            ),
            (
                "fedora",
                "fedora",
                Some("Fedora 41"),
                Some("sim.example.com"),
            ),
        ] {
            let id = w.id();
            w.hostgroups.push(Hostgroup {
                id,
                name: name.into(),
                title: title.into(),
                description: format!("{title} hosts"),
                operatingsystem: os.map(str::to_owned),
                domain: domain.map(str::to_owned),
                subnet: domain.map(|_| "lab".to_owned()),
                subnet6: None,
            });
        }
        let id = w.id();
        let mut images = Vec::new();
        for name in ["rhel-9.4", "fedora-41"] {
            let image = w.id();
            images.push(Image {
                id: image,
                name: name.into(),
                uuid: format!("img-{image:04}-{name}"),
            });
        }
        w.compute_resources.push(ComputeResource {
            id,
            name: "libvirt-lab".into(),
            provider: "Libvirt".into(),
            images,
        });
        for name in [COMMAND_TEMPLATE, "Run Command - Ansible Default"] {
            let id = w.id();
            w.job_templates.push(JobTemplate {
                id,
                name: name.into(),
            });
        }
        w
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Adds a built host (as one made elsewhere, by hand or by another tool) and returns its id.
    pub fn add_host(&mut self, name: &str, hostgroup: &str) -> u64 {
        let id = self.id();
        let hostgroup = self.hostgroup(hostgroup).map(|h| h.id);
        let ip = self.ip_for(id);
        self.hosts.push(Host {
            id,
            name: name.into(),
            hostgroup,
            organization: self.organizations[0].id,
            location: self.locations[0].id,
            build_status: 0,
            ip,
            mac: mac_for(id),
            compute_resource: None,
            image: None,
            provision_method: "build".into(),
            comment: String::new(),
            fail_build: false,
            polls_left: 0,
        });
        id
    }

    /// The hostgroup named or titled `name`.
    pub fn hostgroup(&self, name: &str) -> Option<&Hostgroup> {
        self.hostgroups
            .iter()
            .find(|h| h.name == name || h.title == name)
    }

    /// The host named `name`.
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// The names of the hosts, in the order they were made.
    pub fn host_names(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.name.clone()).collect()
    }

    fn ip_for(&self, id: u64) -> String {
        self.options
            .host_ip
            .clone()
            .unwrap_or_else(|| format!("192.0.2.{}", id % 250 + 1))
    }

    fn take_fault(&mut self, method: &str, path: &str) -> Option<FaultKind> {
        sim_http::take_fault(&mut self.faults, method, path)
    }
}

fn taxonomy(id: u64, name: &str, title: &str) -> Taxonomy {
    Taxonomy {
        id,
        name: name.into(),
        title: title.into(),
    }
}

fn mac_for(id: u64) -> String {
    format!("52:54:00:00:{:02x}:{:02x}", id / 256 % 256, id % 256)
}

impl sim_http::Faulty for World {
    type Kind = FaultKind;

    fn faults(&mut self) -> &mut Vec<Fault> {
        &mut self.faults
    }
}

/// A running simulator (its URL, state and faults through [`sim_http::Simulated`]). Dropping it
/// stops the server.
#[derive(Debug)]
pub struct Sim(sim_http::Simulated<World>);

impl std::ops::Deref for Sim {
    type Target = sim_http::Simulated<World>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Sim {
    /// A simulator of the default server on a free loopback port, served by its own thread.
    pub fn start() -> Sim {
        Sim::start_with(SimOptions::default())
    }

    /// A simulator behaving as `options` say, on a free loopback port.
    ///
    /// # Panics
    /// When no loopback port can be bound (a test environment problem).
    #[allow(clippy::expect_used)]
    pub fn start_with(options: SimOptions) -> Sim {
        Sim::start_on(options, "127.0.0.1:0")
            .expect("binding a loopback port for the Foreman simulator")
    }

    /// Starts a simulator on `bind` (e.g. `127.0.0.1:3000`); its URL is the `foreman_url`.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub fn start_on(options: SimOptions, bind: &str) -> std::io::Result<Sim> {
        sim_http::Simulated::start_on(bind, |_| World::new(options), handle).map(Sim)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.world().requests.clone()
    }

    /// The hosts that exist.
    pub fn hosts(&self) -> Vec<Host> {
        self.world().hosts.clone()
    }
}

async fn handle(world: Arc<Mutex<World>>, req: Request<Incoming>) -> Result<Reply, hyper::Error> {
    let req = sim_http::receive(req).await?;
    let user = req.basic_credentials();
    let mut w = lock(&world);
    w.requests.push(Recorded {
        method: req.method.to_string(),
        path: req.path.clone(),
        query: req.query.clone(),
        body: req.body.clone(),
        user: user.as_ref().map(|(u, _)| u.clone()),
    });
    let Some(rest) = req.path.strip_prefix("/api/") else {
        return Ok(not_found_message("no such page"));
    };
    let rest = rest.strip_prefix("v2/").unwrap_or(rest);
    let segments: Vec<String> = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let known = user.is_some_and(|login| w.users.contains(&login));
    if !known {
        let name = req.basic_credentials().map(|(u, _)| u).unwrap_or_default();
        return Ok(reply(
            401,
            json!({"error": {"message": format!("Unable to authenticate user {name}")}}),
        ));
    }
    Ok(match w.take_fault(req.method.as_str(), &req.path) {
        Some(FaultKind::Status(code)) => fault_reply(code),
        Some(FaultKind::Lost(code)) => {
            let _ = route(&mut w, &req, &segments, None);
            fault_reply(code)
        }
        fault => route(&mut w, &req, &segments, fault),
    })
}

fn fault_reply(code: u16) -> Reply {
    if code >= 500 {
        return sim_http::reply_typed(
            code,
            "text/html; charset=iso-8859-1",
            "<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\n<html><head><title>Proxy Error</title>\
             </head><body><h1>Proxy Error</h1><p>The proxy server received an invalid response from an \
             upstream server.</p></body></html>\n"
                .to_owned(),
        );
    }
    reply(
        code,
        json!({"error": {"message": format!("simulated fault {code}")}}),
    )
}

fn not_found_message(message: &str) -> Reply {
    reply(404, json!({"message": message}))
}

fn not_found(resource: &str, id: &str) -> Reply {
    not_found_message(&format!("Resource {resource} not found by id '{id}'"))
}

/// Foreman's answer to a record it will not save: 422 with each field's errors.
fn unprocessable(errors: &[(&str, &str)]) -> Reply {
    let mut by_field = Map::new();
    let mut full = Vec::new();
    for (field, message) in errors {
        by_field.insert((*field).into(), json!([message]));
        let mut label = field.replace('_', " ");
        if let Some(first) = label.get(..1) {
            label = format!("{}{}", first.to_uppercase(), &label[1..]);
        }
        full.push(format!("{label} {message}"));
    }
    reply(
        422,
        json!({"error": {"id": null, "errors": by_field, "full_messages": full}}),
    )
}

fn route(w: &mut World, req: &Received, segments: &[String], fault: Option<FaultKind>) -> Reply {
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (&req.method, s.as_slice()) {
        (&Method::GET, ["status"]) => reply(
            200,
            json!({"result": "ok", "status": 200, "version": "3.12.0", "api_version": 2}),
        ),
        (&Method::GET, ["organizations"]) => {
            let items = w.organizations.iter().map(taxonomy_json).collect();
            listed(w, req, items)
        }
        (&Method::GET, ["locations"]) => {
            let items = w.locations.iter().map(taxonomy_json).collect();
            listed(w, req, items)
        }
        (&Method::GET, ["organizations", id]) => {
            one(&w.organizations, id, "organization", taxonomy_json)
        }
        (&Method::GET, ["locations", id]) => one(&w.locations, id, "location", taxonomy_json),
        (&Method::GET, ["hostgroups"]) => {
            let items = w.hostgroups.iter().map(hostgroup_json).collect();
            listed(w, req, items)
        }
        (&Method::GET, ["hostgroups", id]) => {
            match w
                .hostgroups
                .iter()
                .find(|h| h.id.to_string() == *id || h.title == *id)
            {
                Some(h) => reply(200, hostgroup_json(h)),
                None => not_found("hostgroup", id),
            }
        }
        (&Method::GET, ["compute_resources"]) => {
            let items = w.compute_resources.iter().map(compute_json).collect();
            listed(w, req, items)
        }
        (&Method::GET, ["compute_resources", id]) => {
            one(&w.compute_resources, id, "compute_resource", compute_json)
        }
        (&Method::GET, ["compute_resources", id, "images"]) => {
            match w.compute_resources.iter().find(|c| c.id.to_string() == *id) {
                Some(c) => {
                    let items = c.images.iter().map(|i| image_json(c, i)).collect();
                    listed(w, req, items)
                }
                None => not_found("compute_resource", id),
            }
        }
        (&Method::GET, ["job_templates"]) => {
            let items = w
                .job_templates
                .iter()
                .map(|t| json!({"id": t.id, "name": t.name, "job_category": "Commands", "provider_type": "script"}))
                .collect();
            listed(w, req, items)
        }
        (&Method::GET, ["hosts"]) => {
            let items = w.hosts.iter().map(|h| host_json(w, h)).collect();
            listed(w, req, items)
        }
        (&Method::POST, ["hosts"]) => create_host(w, &req.body, fault),
        (&Method::GET, ["hosts", id]) => match read_host(w, id) {
            Some(h) => reply(200, host_json(w, &h)),
            None => not_found("host", id),
        },
        (&Method::DELETE, ["hosts", id]) => match find_host(w, id) {
            Some(i) => {
                let host = w.hosts.remove(i);
                reply(200, host_json(w, &host))
            }
            None => not_found("host", id),
        },
        (&Method::POST, ["job_invocations"]) => create_job(w, &req.body),
        (&Method::GET, ["job_invocations", id]) => match read_job(w, id) {
            Some(job) => reply(200, job_json(&job)),
            None => not_found("job_invocation", id),
        },
        (&Method::GET, ["job_invocations", id, "outputs"]) => {
            match w.jobs.iter().find(|j| j.id.to_string() == *id) {
                Some(job) => reply(200, outputs_json(w, job)),
                None => not_found("job_invocation", id),
            }
        }
        _ => not_found_message("Route not found"),
    }
}

/// The object of `items` whose id is `id`.
fn one<T>(items: &[T], id: &str, resource: &str, to_json: fn(&T) -> Value) -> Reply {
    match items
        .iter()
        .map(to_json)
        .find(|v| v["id"].as_u64().is_some_and(|n| id.parse() == Ok(n)))
    {
        Some(v) => reply(200, v),
        None => not_found(resource, id),
    }
}

/// A page of `items` as Foreman answers a list: searched, then paged.
fn listed(w: &World, req: &Received, items: Vec<Value>) -> Reply {
    let total = items.len();
    let search = req.param("search").filter(|s| !s.trim().is_empty());
    let found = match search {
        Some(text) => match search::select(items, text) {
            Ok(found) => found,
            Err(message) => return reply(400, json!({"error": {"message": message}})),
        },
        None => items,
    };
    let subtotal = found.len();
    let per_page = match req.param("per_page") {
        Some("all") => subtotal.max(1),
        Some(n) => match n.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                return reply(
                    400,
                    json!({"error": {"message": format!("per_page: `{n}` is not a positive number")}}),
                );
            }
        },
        None => w.options.per_page,
    };
    let page = match req.param("page").map(str::parse::<usize>) {
        None => 1,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            return reply(
                400,
                json!({"error": {"message": "page: not a positive number"}}),
            );
        }
    };
    let results: Vec<Value> = found
        .into_iter()
        .skip((page - 1).saturating_mul(per_page))
        .take(per_page)
        .collect();
    reply(
        200,
        json!({"total": total, "subtotal": subtotal, "page": page, "per_page": per_page,
               "search": search, "sort": {"by": null, "order": null}, "results": results}),
    )
}

fn taxonomy_json(t: &Taxonomy) -> Value {
    json!({"id": t.id, "name": t.name, "title": t.title, "description": null,
           "created_at": CREATED, "updated_at": CREATED})
}

fn hostgroup_json(h: &Hostgroup) -> Value {
    json!({"id": h.id, "name": h.name, "title": h.title, "description": h.description,
           "operatingsystem_name": h.operatingsystem, "domain_name": h.domain,
           "subnet_name": h.subnet, "subnet6_name": h.subnet6,
           "created_at": CREATED, "updated_at": CREATED})
}

fn compute_json(c: &ComputeResource) -> Value {
    json!({"id": c.id, "name": c.name, "provider": c.provider, "provider_friendly_name": c.provider,
           "url": "qemu:///system", "created_at": CREATED, "updated_at": CREATED})
}

fn image_json(c: &ComputeResource, i: &Image) -> Value {
    json!({"id": i.id, "name": i.name, "uuid": i.uuid, "username": "root", "user_data": false,
           "compute_resource_id": c.id, "compute_resource_name": c.name,
           "operatingsystem_id": 1, "architecture_id": 1,
           "created_at": CREATED, "updated_at": CREATED})
}

const CREATED: &str = "2026-01-01 00:00:00 UTC";

fn build_label(status: u8) -> &'static str {
    match status {
        0 => "Installed",
        1 => "Pending installation",
        2 => "Token expired",
        _ => "Installation error",
    }
}

fn host_json(w: &World, h: &Host) -> Value {
    let hostgroup = h
        .hostgroup
        .and_then(|id| w.hostgroups.iter().find(|g| g.id == id));
    let name_of = |list: &[Taxonomy], id: u64| {
        list.iter()
            .find(|t| t.id == id)
            .map(|t| t.name.clone())
            .unwrap_or_default()
    };
    let compute = h
        .compute_resource
        .and_then(|id| w.compute_resources.iter().find(|c| c.id == id));
    let image = compute.and_then(|c| c.images.iter().find(|i| Some(&i.uuid) == h.image.as_ref()));
    json!({"id": h.id, "name": h.name, "certname": h.name, "display_name": h.name,
           "ip": h.ip, "ip6": null, "mac": h.mac,
           "hostgroup_id": h.hostgroup, "hostgroup_name": hostgroup.map(|g| g.name.clone()),
           "hostgroup_title": hostgroup.map(|g| g.title.clone()),
           "organization_id": h.organization, "organization_name": name_of(&w.organizations, h.organization),
           "location_id": h.location, "location_name": name_of(&w.locations, h.location),
           "operatingsystem_name": hostgroup.and_then(|g| g.operatingsystem.clone()),
           "domain_name": hostgroup.and_then(|g| g.domain.clone()),
           "build": h.build_status == 1, "build_status": h.build_status,
           "build_status_label": build_label(h.build_status),
           "compute_resource_id": h.compute_resource, "compute_resource_name": compute.map(|c| c.name.clone()),
           "image_id": image.map(|i| i.id), "image_name": image.map(|i| i.name.clone()),
           "provision_method": h.provision_method, "comment": h.comment,
           "managed": true, "enabled": true, "global_status": 0, "global_status_label": "OK",
           "created_at": CREATED, "updated_at": CREATED})
}

/// The index of the host whose id or name is `id`.
fn find_host(w: &World, id: &str) -> Option<usize> {
    w.hosts
        .iter()
        .position(|h| h.id.to_string() == id || h.name == id)
}

/// A read of a host, which moves its build on.
fn read_host(w: &mut World, id: &str) -> Option<Host> {
    let i = find_host(w, id)?;
    let host = &mut w.hosts[i];
    if host.build_status == 1 {
        if host.polls_left == 0 {
            host.build_status = if host.fail_build { 3 } else { 0 };
        } else {
            host.polls_left -= 1;
        }
    }
    Some(host.clone())
}

/// An id the request gives as a number or as text.
fn id_in(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str()?.trim().parse().ok())
}

fn create_host(w: &mut World, body: &Value, fault: Option<FaultKind>) -> Reply {
    let host = &body["host"];
    if !host.is_object() {
        return reply(
            400,
            json!({"error": {"message": "Missing parameter: host"}}),
        );
    }
    let field = |key: &str| {
        let inner = &host[key];
        if inner.is_null() { &body[key] } else { inner }
    };
    let organization =
        id_in(field("organization_id")).filter(|id| w.organizations.iter().any(|o| o.id == *id));
    let location = id_in(field("location_id")).filter(|id| w.locations.iter().any(|l| l.id == *id));
    let hostgroup = match &host["hostgroup_id"] {
        Value::Null => Ok(None),
        v => id_in(v)
            .and_then(|id| w.hostgroups.iter().find(|g| g.id == id))
            .map(|g| Some(g.clone()))
            .ok_or(()),
    };
    let mut errors = Vec::new();
    let mut name = host["name"].as_str().unwrap_or_default().to_lowercase();
    if name.is_empty() {
        errors.push(("name", "can't be blank"));
    }
    if organization.is_none() {
        errors.push(("organization_id", "can't be blank"));
    }
    if location.is_none() {
        errors.push(("location_id", "can't be blank"));
    }
    let hostgroup = hostgroup.unwrap_or_else(|()| {
        errors.push(("hostgroup_id", "is invalid"));
        None
    });
    if let Some(domain) = hostgroup.as_ref().and_then(|g| g.domain.as_ref())
        && !name.is_empty()
        && !name.contains('.')
    {
        name = format!("{name}.{domain}");
    }
    if w.hosts.iter().any(|h| h.name == name) {
        errors.push(("name", "has already been taken"));
    }
    let provision_method = host["provision_method"]
        .as_str()
        .unwrap_or("build")
        .to_owned();
    let (compute_resource, image) = match image_choice(w, host, &provision_method) {
        Ok(choice) => choice,
        Err(error) => {
            errors.push(error);
            (None, None)
        }
    };
    if !errors.is_empty() {
        return unprocessable(&errors);
    }
    let build = matches!(&host["build"], Value::Bool(true))
        || matches!(host["build"].as_str(), Some("true" | "1"));
    let id = w.id();
    let ip = w.ip_for(id);
    let (fail_build, polls) = match fault {
        Some(FaultKind::FailBuild) => (true, w.options.build_polls),
        Some(FaultKind::SlowBuild(polls)) => (false, polls),
        _ => (false, w.options.build_polls),
    };
    let created = Host {
        id,
        name,
        hostgroup: hostgroup.map(|g| g.id),
        organization: organization.unwrap_or_default(),
        location: location.unwrap_or_default(),
        build_status: u8::from(build),
        ip,
        mac: mac_for(id),
        compute_resource,
        image,
        provision_method,
        comment: host["comment"].as_str().unwrap_or_default().to_owned(),
        fail_build,
        polls_left: polls,
    };
    w.hosts.push(created.clone());
    reply(201, host_json(w, &created))
}

/// A field Foreman refuses, and why.
type FieldError = (&'static str, &'static str);

/// The compute resource and image of an image-based host, checked as Foreman does.
fn image_choice(
    w: &World,
    host: &Value,
    provision_method: &str,
) -> Result<(Option<u64>, Option<String>), FieldError> {
    let compute = match &host["compute_resource_id"] {
        Value::Null => None,
        v => Some(
            id_in(v)
                .and_then(|id| w.compute_resources.iter().find(|c| c.id == id))
                .ok_or(("compute_resource_id", "is invalid"))?,
        ),
    };
    if provision_method != "image" {
        return Ok((compute.map(|c| c.id), None));
    }
    let compute = compute.ok_or(("compute_resource_id", "can't be blank"))?;
    let uuid = host["compute_attributes"]["image_id"]
        .as_str()
        .ok_or(("image", "can't be blank"))?;
    if !compute.images.iter().any(|i| i.uuid == uuid) {
        return Err(("image", "is not available on the compute resource"));
    }
    Ok((Some(compute.id), Some(uuid.to_owned())))
}

/// What `command` answers on a host: exit status and output.
fn run_command(w: &World, command: &str) -> (i32, String) {
    if let Some((_, status, out)) = w.command_results.iter().find(|(c, _, _)| c == command) {
        return (*status, out.clone());
    }
    let command = command.trim();
    if let Some(text) = command.strip_prefix("echo ") {
        return (0, text.trim_matches(|c| c == '"' || c == '\'').to_owned());
    }
    if let Some(code) = command.strip_prefix("exit ") {
        return (code.trim().parse().unwrap_or(1), String::new());
    }
    (0, String::new())
}

fn create_job(w: &mut World, body: &Value) -> Reply {
    let job = &body["job_invocation"];
    let Some(template) = id_in(&job["job_template_id"])
        .and_then(|id| w.job_templates.iter().find(|t| t.id == id))
        .map(|t| t.name.clone())
    else {
        return unprocessable(&[("job_template_id", "is invalid")]);
    };
    let search_query = job["search_query"].as_str().unwrap_or_default().to_owned();
    let hosts: Vec<Value> = w.hosts.iter().map(|h| host_json(w, h)).collect();
    let targets = match search::select(hosts, &search_query) {
        Ok(found) if !found.is_empty() => found,
        Ok(_) => return unprocessable(&[("targeting", "matches no host")]),
        Err(message) => return reply(400, json!({"error": {"message": message}})),
    };
    let inputs = job["inputs"].clone();
    let command = inputs["command"].as_str().unwrap_or_default().to_owned();
    let hosts = targets
        .iter()
        .map(|t| {
            let (status, stdout) = run_command(w, &command);
            JobHost {
                host: t["name"].as_str().unwrap_or_default().to_owned(),
                status,
                stdout,
            }
        })
        .collect();
    let id = w.id();
    let created = Job {
        id,
        template,
        search_query,
        inputs,
        hosts,
        polls_left: w.options.job_polls,
    };
    w.jobs.push(created.clone());
    reply(201, job_json(&created))
}

/// A read of a job invocation, which moves it on.
fn read_job(w: &mut World, id: &str) -> Option<Job> {
    let job = w.jobs.iter_mut().find(|j| j.id.to_string() == id)?;
    let seen = job.clone();
    job.polls_left = job.polls_left.saturating_sub(1);
    Some(seen)
}

fn job_json(j: &Job) -> Value {
    let status = j.status();
    let count = |ok: bool| {
        if status == "running" {
            0
        } else {
            j.hosts.iter().filter(|h| (h.status == 0) == ok).count()
        }
    };
    let hosts: Vec<Value> = j.hosts.iter().map(|h| json!({"name": h.host})).collect();
    json!({"id": j.id, "description": format!("Run {}", j.inputs["command"].as_str().unwrap_or_default()),
           "job_category": "Commands", "status": status, "status_label": status,
           "succeeded": count(true), "failed": count(false),
           "pending": if status == "running" { j.hosts.len() } else { 0 },
           "total": j.hosts.len(), "start_at": CREATED,
           "targeting": {"search_query": j.search_query, "targeting_type": "static_query", "hosts": hosts},
           "template_name": j.template})
}

/// Each host's output as Foreman's SSH remote execution reports it.
fn outputs_json(w: &World, j: &Job) -> Value {
    let outputs: Vec<Value> = j
        .hosts
        .iter()
        .map(|h| {
            let mut chunks: Vec<Value> = Vec::new();
            if j.status() != "running" {
                chunks.extend(h.stdout.lines().map(|line| {
                    json!({"output_type": "stdout", "output": format!("{line}\n"), "timestamp": 1.0})
                }));
                chunks.push(json!({"output_type": "stdout", "output": format!("Exit status: {}", h.status), "timestamp": 2.0}));
                if h.status != 0 {
                    chunks.push(json!({"output_type": "debug", "output": "StandardError: Job execution failed", "timestamp": 3.0}));
                }
            }
            let host_id = w.host(&h.host).map(|x| x.id);
            json!({"host_id": host_id, "host_name": h.host, "refresh": j.status() == "running", "output": chunks})
        })
        .collect();
    json!({"outputs": outputs})
}

/// A subset of Foreman's scoped search.
pub mod search {
    use serde_json::Value;

    #[derive(Debug, PartialEq)]
    enum Op {
        Eq,
        Ne,
        Like,
        NotLike,
        In,
    }

    #[derive(Debug)]
    struct Term {
        /// `None`: free text.
        field: Option<String>,
        op: Op,
        values: Vec<String>,
    }

    /// Search fields that name another field of the answer.
    const ALIASES: [(&str, &str); 4] = [
        ("hostgroup", "hostgroup_title"),
        ("organization", "organization_name"),
        ("location", "location_name"),
        ("image", "image_name"),
    ];

    /// The items `query` selects.
    ///
    /// # Errors
    /// Foreman's message for a field that cannot be searched.
    pub fn select(items: Vec<Value>, query: &str) -> Result<Vec<Value>, String> {
        let terms: Vec<Term> = split_and(query).iter().map(|t| term(t)).collect();
        let mut out = Vec::new();
        for item in items {
            let mut all = true;
            for t in &terms {
                all &= matches(&item, t)?;
            }
            if all {
                out.push(item);
            }
        }
        Ok(out)
    }

    /// The terms of `query`, split at ` and ` in any case.
    fn split_and(query: &str) -> Vec<String> {
        let lower = query.to_ascii_lowercase();
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(at) = lower[start..].find(" and ") {
            out.push(query[start..start + at].trim().to_owned());
            start += at + 5;
        }
        out.push(query[start..].trim().to_owned());
        out.retain(|t| !t.is_empty());
        out
    }

    fn term(text: &str) -> Term {
        let ops = [
            ("!=", Op::Ne),
            ("!~", Op::NotLike),
            ("^", Op::In),
            ("=", Op::Eq),
            ("~", Op::Like),
        ];
        let found = ops
            .into_iter()
            .filter_map(|(s, op)| text.find(s).map(|at| (at, s.len(), op)))
            .min_by_key(|(at, len, _)| (*at, usize::MAX - len));
        let Some((at, len, op)) = found else {
            return Term {
                field: None,
                op: Op::Like,
                values: vec![unquote(text)],
            };
        };
        let value = text[at + len..].trim();
        let values = if op == Op::In {
            value
                .trim_start_matches('(')
                .trim_end_matches(')')
                .split(',')
                .map(unquote)
                .collect()
        } else {
            vec![unquote(value)]
        };
        Term {
            field: Some(text[..at].trim().to_owned()),
            op,
            values,
        }
    }

    fn unquote(text: &str) -> String {
        let t = text.trim();
        t.strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .or_else(|| t.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')))
            .unwrap_or(t)
            .to_owned()
    }

    fn matches(item: &Value, t: &Term) -> Result<bool, String> {
        let Some(field) = &t.field else {
            let needle = t.values[0].to_lowercase();
            return Ok(["name", "title"].iter().any(|f| {
                item[*f]
                    .as_str()
                    .is_some_and(|v| v.to_lowercase().contains(&needle))
            }));
        };
        let key = ALIASES
            .iter()
            .find(|(alias, _)| alias == field)
            .map_or(field.as_str(), |(_, key)| *key);
        let Some(value) = item.get(key) else {
            return Err(format!("Field '{field}' not recognized for searching!"));
        };
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        let like = |v: &str| text.to_lowercase().contains(&v.to_lowercase());
        Ok(match t.op {
            Op::Eq => text == t.values[0],
            Op::Ne => text != t.values[0],
            Op::Like => like(&t.values[0]),
            Op::NotLike => !like(&t.values[0]),
            Op::In => t.values.contains(&text),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(items: &[Value]) -> Vec<&str> {
        items.iter().filter_map(|i| i["name"].as_str()).collect()
    }

    #[test]
    fn scoped_search_terms() {
        let items = vec![
            json!({"name": "broker-1", "hostgroup_title": "base/rhel9", "id": 1}),
            json!({"name": "xbroker-2", "hostgroup_title": "fedora", "id": 2}),
            json!({"name": "other", "hostgroup_title": "fedora", "id": 3}),
        ];
        let select = |q: &str| search::select(items.clone(), q).unwrap();
        assert_eq!(names(&select("broker")), ["broker-1", "xbroker-2"]);
        assert_eq!(names(&select("name = broker-1")), ["broker-1"]);
        assert_eq!(names(&select("name=\"other\"")), ["other"]);
        assert_eq!(names(&select("name != other")), ["broker-1", "xbroker-2"]);
        assert_eq!(names(&select("name ~ BROKER")), ["broker-1", "xbroker-2"]);
        assert_eq!(names(&select("name !~ broker")), ["other"]);
        assert_eq!(
            names(&select("name ^ (other, broker-1)")),
            ["broker-1", "other"]
        );
        assert_eq!(
            names(&select("hostgroup = fedora AND name ~ broker")),
            ["xbroker-2"]
        );
        assert_eq!(
            search::select(items, "colour = red").unwrap_err(),
            "Field 'colour' not recognized for searching!"
        );
    }

    #[test]
    fn a_failed_command_reports_its_status_and_a_debug_chunk() {
        let mut w = World::new(SimOptions::default());
        w.command_results.push(("false".into(), 3, "oops\n".into()));
        let job = Job {
            id: 1,
            template: COMMAND_TEMPLATE.into(),
            search_query: "name = h".into(),
            inputs: json!({"command": "false"}),
            hosts: vec![JobHost {
                host: "h".into(),
                status: run_command(&w, "false").0,
                stdout: run_command(&w, "false").1,
            }],
            polls_left: 0,
        };
        assert_eq!(job.status(), "failed");
        assert_eq!(
            outputs_json(&w, &job)["outputs"][0]["output"],
            json!([{"output_type": "stdout", "output": "oops\n", "timestamp": 1.0},
                   {"output_type": "stdout", "output": "Exit status: 3", "timestamp": 2.0},
                   {"output_type": "debug", "output": "StandardError: Job execution failed", "timestamp": 3.0}])
        );
        assert_eq!(run_command(&w, "echo 'hi there'"), (0, "hi there".into()));
        assert_eq!(run_command(&w, "exit 4"), (4, String::new()));
    }

    /// One request over a fresh connection: the status and the body.
    fn call(
        sim: &Sim,
        method: &str,
        path: &str,
        auth: &str,
        body: Option<&Value>,
    ) -> (u16, String) {
        use std::io::{Read, Write};
        let address = sim.url().replace("http://", "");
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        let body = body.map(Value::to_string).unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: sim\r\nAuthorization: Basic {auth}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let status = answer[9..12].parse().unwrap();
        let (_, body) = answer.split_once("\r\n\r\n").unwrap();
        (status, body.to_owned())
    }

    /// `alice:alice-password`, as Basic auth sends it.
    const ALICE: &str = "YWxpY2U6YWxpY2UtcGFzc3dvcmQ=";

    fn parsed(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    /// Lists are paged and searched as Foreman does it, and a wrong password is refused with
    /// Foreman's message.
    #[test]
    fn lists_are_paged_and_searched_and_logins_checked() {
        let sim = Sim::start();
        for i in 0..45 {
            sim.world().add_host(&format!("made-{i:02}"), "base");
        }
        let (status, body) = call(&sim, "GET", "/api/hosts?page=3", ALICE, None);
        assert_eq!(status, 200);
        let page = parsed(&body);
        assert_eq!(
            [
                &page["total"],
                &page["subtotal"],
                &page["page"],
                &page["per_page"]
            ],
            [&json!(45), &json!(45), &json!(3), &json!(20)]
        );
        assert_eq!(
            names(page["results"].as_array().unwrap()),
            ["made-40", "made-41", "made-42", "made-43", "made-44"]
        );
        let (_, body) = call(
            &sim,
            "GET",
            "/api/v2/hosts?search=name%20~%20made-1&per_page=all",
            ALICE,
            None,
        );
        let found = parsed(&body);
        assert_eq!(
            [&found["subtotal"], &found["total"]],
            [&json!(10), &json!(45)]
        );
        let (status, body) = call(&sim, "GET", "/api/hosts", "YWxpY2U6d3Jvbmc=", None);
        assert_eq!(status, 401);
        assert_eq!(
            parsed(&body),
            json!({"error": {"message": "Unable to authenticate user alice"}})
        );
    }

    /// A build moves from pending to installed, or to an installation error when asked; a 502 comes
    /// as the proxy's HTML page; a create Foreman refuses is a 422 naming the fields.
    #[test]
    fn builds_move_on_and_faults_are_served() {
        let sim = Sim::start();
        sim.inject(Some("POST"), "/api/hosts", FaultKind::FailBuild, 1);
        sim.inject(Some("GET"), "/api/hosts/", FaultKind::Status(502), 1);
        let hostgroup = sim.world().hostgroup("base/rhel9").unwrap().id;
        let host = json!({"organization_id": 1, "location_id": 3,
                          "host": {"name": "Doomed", "hostgroup_id": hostgroup, "build": true}});
        let (status, body) = call(&sim, "POST", "/api/hosts", ALICE, Some(&host));
        assert_eq!(status, 201);
        let created = parsed(&body);
        assert_eq!(created["name"], "doomed.sim.example.com");
        assert_eq!(created["build_status_label"], "Pending installation");
        let path = format!("/api/hosts/{}", created["id"]);
        let (status, body) = call(&sim, "GET", &path, ALICE, None);
        assert_eq!(status, 502);
        assert!(body.contains("<title>Proxy Error</title>"), "{body}");
        let states: Vec<Value> = (0..4)
            .map(|_| parsed(&call(&sim, "GET", &path, ALICE, None).1)["build_status_label"].clone())
            .collect();
        assert_eq!(
            states,
            [
                "Pending installation",
                "Pending installation",
                "Installation error",
                "Installation error"
            ]
        );
        assert!(sim.unused_faults().is_empty(), "{:?}", sim.unused_faults());
        let (status, body) = call(&sim, "POST", "/api/hosts", ALICE, Some(&host));
        assert_eq!(status, 422);
        assert_eq!(
            parsed(&body)["error"]["full_messages"],
            json!(["Name has already been taken"])
        );
        let (status, _) = call(&sim, "DELETE", &path, ALICE, None);
        assert_eq!(status, 200);
        let (status, body) = call(&sim, "DELETE", &path, ALICE, None);
        assert_eq!(
            (status, parsed(&body)),
            (
                404,
                json!({"message": format!("Resource host not found by id '{}'", created["id"])})
            )
        );
    }
}
