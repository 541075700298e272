//! A stateful simulator of a Beaker hub, for broker's tests.
//!
//! No Beaker can run on a test machine, so this speaks enough of a hub's two APIs for broker's
//! `Beaker` provider — and for the official `bkr` client — to behave as against the real thing:
//!
//! - XML-RPC at `/RPC2` (and `/client/`, where `bkr` posts): `auth.login_password` (a session in
//!   the `beaker_auth_token` cookie), `auth.who_am_i`, `auth.logout`, `jobs.upload`, `jobs.filter`,
//!   `taskactions.task_info`, `taskactions.to_xml` (clone and results forms), `taskactions.stop`,
//!   `systems.reserve`, `systems.release`; errors are XML-RPC faults worded as the hub words them;
//! - HTTP: `GET /systems/FQDN/` (a system as JSON, with its current reservation),
//!   `PATCH /systems/FQDN/reservations/+current` (return a manual reservation, as
//!   `bkr system-release`), `GET /mine?tg_format=atom` (the user's systems: owned, or reserved by
//!   them), `GET /users/+self`, `GET /jobs/ID`, `GET /recipes/ID`.
//!
//! Behind it sits a small lab of systems (`sys01.lab.example.com` …). A job's recipes move
//! `Queued` → `Running` → `Completed` (or `Reserved`, when the recipe asks for `<reservesys/>`,
//! holding its system until the job is cancelled) as the job is read: each read of a job
//! (`to_xml`, `task_info`, `/jobs/ID`) moves a recipe on once it has been read
//! [`SimOptions::queued_polls`] or [`SimOptions::running_polls`] times in its status. A recipe
//! goes to the free system that has run the fewest recipes, and waits `Queued` while the system it
//! asks for (`<hostRequires><hostname op="=" value=…/>`) is
//! taken, and is `Aborted` when no such system exists. A task ends with its `SIM_RESULT` parameter
//! (`Pass`, `Warn`, `Fail`, `Panic`; `Abort` aborts the recipe), else `Pass`. Transport faults and
//! expired sessions are asked for through [`Sim::inject`], matched against the path — for XML-RPC,
//! `/RPC2/<method>` — and [`Sim::unused_faults`] lists those never served.
#![allow(missing_docs)]

pub mod jobs;
mod xmlrpc;

use std::sync::{Arc, Mutex};

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request};
use serde_json::{Value, json};
use sim_http::{Dropped, Reply, UtcTime, lock, reply, reply_typed};

pub use jobs::{Job, Recipe, RecipeSet, Task};
pub use xmlrpc::Call;

/// How the simulated lab behaves.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Reads of a job a new recipe stays `Queued` for (when its system is free).
    pub queued_polls: u32,
    /// Reads of a job a scheduled recipe stays `Running` for.
    pub running_polls: u32,
    /// How many systems the lab has (`sys01.lab.example.com` …).
    pub systems: u32,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            queued_polls: 1,
            running_polls: 1,
            systems: 12,
        }
    }
}

/// A fault for the next matching requests.
pub type Fault = sim_http::Fault<FaultKind>;

/// What a [`Fault`] does.
#[derive(Debug, Clone)]
pub enum FaultKind {
    /// Answer with this HTTP status and a small error body.
    Status(u16),
    /// Close the connection without answering.
    Drop,
    /// Answer the XML-RPC call with this fault string.
    RpcFault(String),
    /// The session this request carries expires now: the request, and every later one with that
    /// cookie, is anonymous.
    ExpireSession,
}

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The XML-RPC call, for `/RPC2` and `/client/`.
    pub call: Option<Call>,
    /// The logged-in user it came from.
    pub user: Option<String>,
    /// The raw body (JSON bodies of `PATCH`es).
    pub body: String,
}

/// A Beaker user.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub email: String,
    pub password: String,
}

/// A system's open reservation.
#[derive(Debug, Clone, PartialEq)]
pub struct Reservation {
    pub user: String,
    /// `recipe` or `manual`.
    pub kind: String,
    pub start_time: String,
    pub recipe: Option<u64>,
}

/// A system of the lab.
#[derive(Debug, Clone)]
pub struct System {
    pub id: u64,
    pub fqdn: String,
    pub owner: String,
    pub mac_address: String,
    pub reservation: Option<Reservation>,
    /// How many recipes it has run: a recipe goes to the free system that ran fewest.
    pub recipes_run: u32,
}

#[derive(Debug, Clone)]
struct Session {
    token: String,
    user: String,
    expired: bool,
}

/// The user tests log in as.
pub const USER: &str = "alice";
/// Her password.
pub const PASSWORD: &str = "alice-password";
/// Another user, who holds a system of the lab from the start.
pub const OTHER_USER: &str = "bob";

/// The simulator's whole state; tests read and arrange it through [`Sim::world`].
#[derive(Debug)]
pub struct World {
    pub options: SimOptions,
    /// `http://127.0.0.1:PORT`
    pub origin: String,
    pub users: Vec<User>,
    sessions: Vec<Session>,
    pub systems: Vec<System>,
    pub jobs: Vec<Job>,
    ids: jobs::Ids,
    pub requests: Vec<Recorded>,
    faults: Vec<Fault>,
}

impl World {
    fn new(options: SimOptions, origin: String) -> Self {
        let users = [
            (USER, "alice-password"),
            (OTHER_USER, "bob-password"),
            ("admin", "admin"),
        ]
        .iter()
        .map(|(name, password)| User {
            name: (*name).into(),
            email: format!("{name}@example.com"),
            password: (*password).into(),
        })
        .collect();
        let mut w = World {
            options,
            origin,
            users,
            sessions: Vec::new(),
            systems: Vec::new(),
            jobs: Vec::new(),
            ids: jobs::Ids::default(),
            requests: Vec::new(),
            faults: Vec::new(),
        };
        for n in 1..=w.options.systems {
            w.add_system(&format!("sys{n:02}.lab.example.com"));
        }
        // Alice owns one system she has not reserved; Bob holds another by hand.
        if let Some(s) = w.systems.get_mut(11) {
            s.owner = USER.into();
        }
        if let Some(s) = w.systems.get_mut(10) {
            s.reservation = Some(Reservation {
                user: OTHER_USER.into(),
                kind: "manual".into(),
                start_time: timestamp(0),
                recipe: None,
            });
        }
        w
    }

    /// Adds a free system owned by `admin` (e.g. `localhost`, for a system a test backs with a
    /// container reached over SSH).
    pub fn add_system(&mut self, fqdn: &str) {
        let id = self.systems.len() as u64 + 1;
        self.systems.push(System {
            id,
            fqdn: fqdn.into(),
            owner: "admin".into(),
            mac_address: format!("52:54:00:00:{:02x}:{:02x}", id / 256, id % 256),
            reservation: None,
            recipes_run: 0,
        });
    }

    /// Submits job XML as `user` would with `jobs.upload`: the new job's `J:` id, or the hub's
    /// complaint.
    pub fn submit(&mut self, user: &str, xml: &str) -> Result<String, String> {
        upload(self, user, xml).map(|v| v.as_str().unwrap_or_default().to_owned())
    }

    /// Reserves `fqdn` by hand for `user`, as `systems.reserve` does.
    pub fn reserve(&mut self, user: &str, fqdn: &str) -> Result<(), String> {
        reserve(self, user, fqdn).map(|_| ())
    }

    /// The system named `fqdn`.
    pub fn system(&self, fqdn: &str) -> Option<&System> {
        self.systems.iter().find(|s| s.fqdn == fqdn)
    }

    /// The job with this id.
    pub fn job(&self, id: u64) -> Option<&Job> {
        self.jobs.iter().find(|j| j.id == id)
    }

    fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    fn session_user(&self, token: Option<&str>) -> Option<String> {
        let token = token?;
        self.sessions
            .iter()
            .find(|s| s.token == token && !s.expired)
            .map(|s| s.user.clone())
    }

    fn take_fault(&mut self, method: &str, path: &str) -> Option<FaultKind> {
        sim_http::take_fault(&mut self.faults, method, path)
    }
}

impl sim_http::Faulty for World {
    type Kind = FaultKind;

    fn faults(&mut self) -> &mut Vec<Fault> {
        &mut self.faults
    }
}

/// A running simulator (its URL, world, faults: [`sim_http::Simulated`]). Dropping it stops the
/// server.
#[derive(Debug)]
pub struct Sim(sim_http::Simulated<World>);

impl std::ops::Deref for Sim {
    type Target = sim_http::Simulated<World>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl SimOptions {
    /// Starts a simulator of this lab on a free loopback port, served by its own thread.
    ///
    /// # Panics
    /// When no loopback port can be bound (a test environment problem).
    #[allow(clippy::expect_used)]
    pub fn start(self) -> Sim {
        Sim::start_on(self, "127.0.0.1:0")
            .expect("binding a loopback port for the Beaker simulator")
    }
}

impl Sim {
    /// [`SimOptions::start`] with the default lab.
    pub fn start() -> Sim {
        SimOptions::default().start()
    }

    /// Starts a simulator on `bind` (e.g. `127.0.0.1:8000`); its URL is the hub URL (what
    /// `bkr --hub` and broker's `hub_url` take).
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub fn start_on(options: SimOptions, bind: &str) -> std::io::Result<Sim> {
        sim_http::Simulated::start_on(bind, |origin| World::new(options, origin), handle).map(Sim)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.world().requests.clone()
    }

    /// The XML-RPC calls so far of `method`.
    pub fn calls(&self, method: &str) -> Vec<Call> {
        self.world()
            .requests
            .iter()
            .filter_map(|r| r.call.clone())
            .filter(|c| c.method == method)
            .collect()
    }

    /// Every job.
    pub fn jobs(&self) -> Vec<Job> {
        self.world().jobs.clone()
    }

    /// Every system.
    pub fn systems(&self) -> Vec<System> {
        self.world().systems.clone()
    }
}

/// `YYYY-MM-DD HH:MM:SS` (UTC), as Beaker writes times, `offset` seconds from now.
fn timestamp(offset: u64) -> String {
    let now = UtcTime::now();
    let t = if offset == 0 {
        now
    } else {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        UtcTime::from_unix(secs + offset, 0)
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// What a request brings.
struct Req {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    token: Option<String>,
    body: String,
}

impl Req {
    fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The paths XML-RPC is served on: Beaker's `/RPC2` and the kobo-compatible `/client/`.
fn is_rpc_path(path: &str) -> bool {
    matches!(path, "/RPC2" | "/RPC2/" | "/client" | "/client/")
}

async fn handle(world: Arc<Mutex<World>>, req: Request<Incoming>) -> Result<Reply, Dropped> {
    let query = sim_http::query(req.uri());
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let token = req
        .headers()
        .get_all(hyper::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix("beaker_auth_token=")
                .map(str::to_owned)
        });
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(Dropped),
    };
    let body = String::from_utf8_lossy(&body).into_owned();
    let req = Req {
        method,
        path,
        query,
        token,
        body,
    };
    let mut w = lock(&world);
    respond(&mut w, &req)
}

fn respond(w: &mut World, req: &Req) -> Result<Reply, Dropped> {
    let call = (req.method == Method::POST && is_rpc_path(&req.path))
        .then(|| xmlrpc::read_call(&req.body));
    let fault_path = match &call {
        Some(Ok(c)) => format!("/RPC2/{}", c.method),
        _ => req.path.clone(),
    };
    let fault = w.take_fault(req.method.as_str(), &fault_path);
    if let Some(FaultKind::ExpireSession) = fault {
        for s in &mut w.sessions {
            if Some(&s.token) == req.token.as_ref() {
                s.expired = true;
            }
        }
    }
    let user = w.session_user(req.token.as_deref());
    w.requests.push(Recorded {
        method: req.method.to_string(),
        path: req.path.clone(),
        call: call.as_ref().and_then(|c| c.as_ref().ok().cloned()),
        user: user.clone(),
        body: req.body.clone(),
    });
    match fault {
        Some(FaultKind::Drop) => return Err(Dropped),
        Some(FaultKind::Status(code)) => {
            return Ok(reply_typed(
                code,
                "text/plain",
                format!("simulated error {code}\n"),
            ));
        }
        Some(FaultKind::RpcFault(message)) => {
            return Ok(xml_reply(xmlrpc::fault(&message)));
        }
        Some(FaultKind::ExpireSession) | None => {}
    }
    Ok(match call {
        Some(Ok(call)) => rpc(w, user, &call),
        Some(Err(e)) => reply_typed(400, "text/plain", format!("bad XML-RPC request: {e}\n")),
        None => http(w, user.as_deref(), req),
    })
}

fn xml_reply(body: String) -> Reply {
    reply_typed(200, "text/xml", body)
}

/// A fault worded as the hub words an exception: `<class 'bkr.common.bexceptions.BX'>:message`.
fn bx(message: &str) -> Result<Value, String> {
    Err(format!("<class 'bkr.common.bexceptions.BX'>:{message}"))
}

/// The identity fault of a call that needs a login.
fn anonymous() -> Result<Value, String> {
    Err("<class 'bkr.server.identity.IdentityFailure'>: Anonymous access denied".into())
}

fn param(call: &Call, i: usize) -> &Value {
    call.params.get(i).unwrap_or(&Value::Null)
}

fn text_param(call: &Call, i: usize) -> String {
    match param(call, i) {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Answers an XML-RPC call; a successful login also sets the session cookie.
fn rpc(w: &mut World, user: Option<String>, call: &Call) -> Reply {
    let mut cookie = None;
    let answer = match call.method.as_str() {
        "auth.login_password" => login(w, call).map(|(token, name)| {
            cookie = Some(token);
            Value::String(name)
        }),
        "auth.logout" => Ok(Value::Null),
        "auth.who_am_i" => match user.as_deref().and_then(|u| w.user(u)) {
            Some(u) => Ok(json!({"username": u.name, "email_address": u.email})),
            None => anonymous(),
        },
        "auth.login_krbv" | "auth.login_oauth2" => bx("this hub accepts password logins only"),
        _ => match user {
            Some(user) => rpc_as(w, &user, call),
            None if matches!(
                call.method.as_str(),
                "taskactions.task_info" | "taskactions.to_xml"
            ) =>
            {
                rpc_as(w, "", call)
            }
            None => anonymous(),
        },
    };
    let mut response = match answer {
        Ok(value) => xml_reply(xmlrpc::response(&value)),
        Err(message) => xml_reply(xmlrpc::fault(&message)),
    };
    if let Some(token) = cookie
        && let Ok(value) = hyper::header::HeaderValue::from_str(&format!(
            "beaker_auth_token={token}; Path=/; HttpOnly"
        ))
    {
        response
            .headers_mut()
            .insert(hyper::header::SET_COOKIE, value);
    }
    response
}

fn login(w: &mut World, call: &Call) -> Result<(String, String), String> {
    let (name, password) = (text_param(call, 0), text_param(call, 1));
    let known = w.user(&name).is_some_and(|u| u.password == password);
    if !known {
        return Err(
            "<class 'bkr.server.authentication.LoginException'>:Invalid username or password"
                .into(),
        );
    }
    let token = format!("session-{}-{}", w.sessions.len() + 1, name);
    w.sessions.push(Session {
        token: token.clone(),
        user: name.clone(),
        expired: false,
    });
    Ok((token, name))
}

/// The calls of a logged-in user (and the reads anyone may make, with `user` empty).
fn rpc_as(w: &mut World, user: &str, call: &Call) -> Result<Value, String> {
    match call.method.as_str() {
        "jobs.upload" => upload(w, user, &text_param(call, 0)),
        "jobs.filter" => Ok(filter_jobs(w, user, param(call, 0))),
        "taskactions.task_info" => {
            let i = job_index(w, &text_param(call, 0))?;
            advance(w, i);
            Ok(task_info(&w.jobs[i]))
        }
        "taskactions.to_xml" => to_xml(
            w,
            &text_param(call, 0),
            param(call, 1).as_bool() == Some(true),
        ),
        "taskactions.stop" => stop(w, user, &text_param(call, 0), &text_param(call, 1)),
        "systems.reserve" => reserve(w, user, &text_param(call, 0)),
        "systems.release" => release(w, user, &text_param(call, 0))
            .map_err(|(_, m)| format!("<class 'bkr.common.bexceptions.BX'>:{m}")),
        other => Err(format!(
            "XML-RPC method {other} not implemented by this server"
        )),
    }
}

fn upload(w: &mut World, user: &str, xml: &str) -> Result<Value, String> {
    let email = w.user(user).map(|u| u.email.clone()).unwrap_or_default();
    let job = match jobs::read_job(xml, (user, &email), &mut w.ids) {
        Ok(job) => job,
        Err(message) => return bx(&message),
    };
    let for_whom = roxmltree::Document::parse(xml)
        .ok()
        .and_then(|d| d.root_element().attribute("user").map(str::to_owned));
    if let Some(other) = for_whom.filter(|o| o != user) {
        return bx(&format!(
            "{user} is not a valid submission delegate for {other}"
        ));
    }
    let mut job = job;
    for r in job.recipes_mut() {
        r.status = "Queued".into();
        for t in &mut r.tasks {
            t.status = "Queued".into();
        }
    }
    let t_id = job.t_id();
    w.jobs.push(job);
    Ok(Value::String(t_id))
}

fn filter_jobs(w: &World, user: &str, filters: &Value) -> Value {
    let get = |key: &str| filters.get(key).filter(|v| !v.is_null());
    let owner = get("owner").and_then(Value::as_str).map(str::to_owned);
    let mine = get("mine").is_some_and(|v| v.as_bool() != Some(false));
    let whiteboard = get("whiteboard").and_then(Value::as_str);
    let finished = get("is_finished").and_then(Value::as_bool);
    let limit = get("limit")
        .and_then(Value::as_u64)
        .map_or(usize::MAX, |n| n as usize);
    let ids: Vec<Value> = w
        .jobs
        .iter()
        .rev()
        .filter(|j| !mine || j.owner == user)
        .filter(|j| owner.as_ref().is_none_or(|o| &j.owner == o))
        .filter(|j| whiteboard.is_none_or(|wb| j.whiteboard.contains(wb)))
        .filter(|j| finished.is_none_or(|f| jobs::is_finished(j.status()) == f))
        .take(limit)
        .map(|j| Value::String(j.t_id()))
        .collect();
    Value::Array(ids)
}

/// `J:12`, `RS:3`, `R:7` → the kind and the number.
fn split_t_id(t_id: &str) -> Option<(&str, u64)> {
    let (kind, id) = t_id.split_once(':')?;
    Some((kind, id.trim().parse().ok()?))
}

/// The index of the job `t_id` names (a job, one of its recipe sets, or one of its recipes).
fn job_index(w: &World, t_id: &str) -> Result<usize, String> {
    let found = split_t_id(t_id).and_then(|(kind, id)| {
        w.jobs.iter().position(|j| match kind {
            "J" => j.id == id,
            "RS" => j.recipe_sets.iter().any(|rs| rs.id == id),
            "R" => j.recipes().any(|r| r.id == id),
            _ => false,
        })
    });
    found.ok_or_else(|| format!("<class 'bkr.common.bexceptions.BX'>:Invalid {t_id}"))
}

fn task_info(job: &Job) -> Value {
    json!({"id": job.t_id(), "worker": null, "state_label": job.status(), "state": job.status(),
           "method": job.whiteboard, "result": job.result(),
           "is_finished": jobs::is_finished(job.status()),
           "is_failed": matches!(job.result(), "Warn" | "Fail" | "Panic"),
           "owner": job.owner, "submitter": job.owner, "group": job.group.clone().unwrap_or_default()})
}

fn to_xml(w: &mut World, t_id: &str, clone: bool) -> Result<Value, String> {
    let i = job_index(w, t_id)?;
    advance(w, i);
    let job = &w.jobs[i];
    let xml = match split_t_id(t_id) {
        Some(("RS", id)) => job
            .recipe_sets
            .iter()
            .find(|rs| rs.id == id)
            .map(|rs| jobs::recipe_set_in_job(job, rs, clone))
            .unwrap_or_default(),
        _ => jobs::job_xml(job, clone),
    };
    Ok(Value::String(xml))
}

/// Moves a job's recipes on by one read: `Queued` (until its system is free) → `Running` →
/// `Completed` or `Reserved`; `Aborted` when the system it asks for does not exist.
fn advance(w: &mut World, i: usize) {
    let (queued_polls, running_polls) = (w.options.queued_polls, w.options.running_polls);
    let owner = w.jobs[i].owner.clone();
    let recipe_ids: Vec<u64> = w.jobs[i].recipes().map(|r| r.id).collect();
    for id in recipe_ids {
        let Some(r) = w.jobs[i].recipes_mut().find(|r| r.id == id) else {
            continue;
        };
        r.reads += 1;
        match r.status.as_str() {
            "Queued" if r.reads > queued_polls => {
                let wanted = r.wanted_system.clone();
                schedule(w, i, id, wanted.as_deref(), &owner);
            }
            "Running" if r.reads > running_polls => {
                r.reads = 0;
                finish_tasks(r);
                let reserves = r.reserves();
                let aborted = r.tasks.iter().any(|t| t.status == "Aborted");
                r.status = match (reserves, aborted) {
                    (true, _) => "Reserved",
                    (false, true) => "Aborted",
                    (false, false) => "Completed",
                }
                .into();
                if !reserves {
                    r.finish_time = Some(timestamp(0));
                    let system = r.system.clone();
                    free(w, system.as_deref());
                }
            }
            _ => {}
        }
    }
}

/// Gives recipe `id` of job `i` a system, or aborts it when none can ever match.
fn schedule(w: &mut World, i: usize, id: u64, wanted: Option<&str>, owner: &str) {
    let free = w
        .systems
        .iter()
        .enumerate()
        .filter(|(_, s)| s.reservation.is_none() && wanted.is_none_or(|fqdn| s.fqdn == fqdn))
        .min_by_key(|(_, s)| s.recipes_run)
        .map(|(i, _)| i);
    let exists = wanted.is_none_or(|fqdn| w.system(fqdn).is_some());
    let Some(r) = w.jobs[i].recipes_mut().find(|r| r.id == id) else {
        return;
    };
    match free {
        Some(s) => {
            // The read that scheduled it shows it `Running`: it counts as one.
            r.reads = 1;
            r.status = "Running".into();
            r.start_time = Some(timestamp(0));
            r.system = Some(w.systems[s].fqdn.clone());
            for t in &mut r.tasks {
                t.status = "Running".into();
            }
            w.systems[s].recipes_run += 1;
            w.systems[s].reservation = Some(Reservation {
                user: owner.into(),
                kind: "recipe".into(),
                start_time: timestamp(0),
                recipe: Some(id),
            });
        }
        None if !exists => {
            r.status = "Aborted".into();
            for t in &mut r.tasks {
                t.status = "Aborted".into();
                t.result = "Warn".into();
            }
        }
        None => {}
    }
}

fn finish_tasks(r: &mut Recipe) {
    let mut aborted = false;
    for t in &mut r.tasks {
        if aborted {
            t.status = "Aborted".into();
            t.result = "Warn".into();
            continue;
        }
        match t.planned_result() {
            "Abort" => {
                aborted = true;
                t.status = "Aborted".into();
                t.result = "Warn".into();
            }
            result => {
                t.result = result.to_owned();
                t.status = "Completed".into();
            }
        }
    }
}

fn free(w: &mut World, fqdn: Option<&str>) {
    if let Some(s) = w.systems.iter_mut().find(|s| Some(s.fqdn.as_str()) == fqdn) {
        s.reservation = None;
    }
}

/// `taskactions.stop(id, 'cancel' | 'abort', msg)`: unfinished recipes of the job (or recipe
/// set) end, a reserved one returns its system; a finished job is left as it is.
fn stop(w: &mut World, user: &str, t_id: &str, how: &str) -> Result<Value, String> {
    let i = job_index(w, t_id)?;
    if w.jobs[i].owner != user {
        return bx(&format!("You don't have permission to cancel {t_id}"));
    }
    let status = match how {
        "cancel" => "Cancelled",
        "abort" => "Aborted",
        other => return bx(&format!("Unknown stop type {other}")),
    };
    let only_set = match split_t_id(t_id) {
        Some(("RS", id)) => Some(id),
        _ => None,
    };
    let mut freed = Vec::new();
    for rs in &mut w.jobs[i].recipe_sets {
        if only_set.is_some_and(|id| id != rs.id) {
            continue;
        }
        for r in &mut rs.recipes {
            if jobs::is_finished(&r.status) {
                continue;
            }
            // A reserved recipe's tasks are done: cancelling it ends the reservation.
            r.status = if r.status == "Reserved" {
                "Completed"
            } else {
                status
            }
            .into();
            r.finish_time = Some(timestamp(0));
            for t in r.tasks.iter_mut().filter(|t| !jobs::is_finished(&t.status)) {
                t.status = status.into();
                t.result = "Warn".into();
            }
            freed.extend(r.system.clone());
        }
    }
    for fqdn in freed {
        free(w, Some(&fqdn));
    }
    Ok(Value::Bool(true))
}

fn reserve(w: &mut World, user: &str, fqdn: &str) -> Result<Value, String> {
    let Some(s) = w.systems.iter_mut().find(|s| s.fqdn == fqdn) else {
        return bx(&format!("System {fqdn} not found"));
    };
    if s.reservation.is_some() {
        return bx(&format!("System {fqdn} is already reserved"));
    }
    s.reservation = Some(Reservation {
        user: user.into(),
        kind: "manual".into(),
        start_time: timestamp(0),
        recipe: None,
    });
    Ok(Value::Bool(true))
}

/// Ends `user`'s manual reservation of `fqdn`; the error is a status and the hub's message.
fn release(w: &mut World, user: &str, fqdn: &str) -> Result<Value, (u16, String)> {
    let Some(s) = w.systems.iter_mut().find(|s| s.fqdn == fqdn) else {
        return Err((404, format!("System {fqdn} not found")));
    };
    let Some(r) = s.reservation.clone() else {
        return Err((400, format!("System {fqdn} is not currently reserved")));
    };
    if r.user != user {
        return Err((403, format!("System {fqdn} is reserved by {}", r.user)));
    }
    if let Some(recipe) = r.recipe {
        return Err((
            400,
            format!("System {fqdn} is reserved by recipe R:{recipe}; cancel its job to return it"),
        ));
    }
    s.reservation = None;
    Ok(
        json!({"type": r.kind, "user": {"user_name": r.user}, "start_time": r.start_time,
              "finish_time": timestamp(0), "recipe_id": null}),
    )
}

/// The HTTP side: systems, reservations, the user's systems feed, users, jobs and recipes.
fn http(w: &mut World, user: Option<&str>, req: &Req) -> Reply {
    let segments: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
    match (&req.method, segments.as_slice()) {
        (&Method::GET, ["systems", fqdn]) => match w.system(fqdn) {
            Some(s) => reply(200, system_json(w, s)),
            None => not_found(&format!("System {fqdn} not found")),
        },
        (&Method::PATCH, ["systems", fqdn, "reservations", "+current"]) => {
            let Some(user) = user else {
                return unauthorized();
            };
            let body: Value = serde_json::from_str(&req.body).unwrap_or(Value::Null);
            if body.get("finish_time").and_then(Value::as_str) != Some("now") {
                return reply_typed(400, "text/plain", "finish_time must be now\n".into());
            }
            match release(w, user, fqdn) {
                Ok(v) => reply(200, v),
                Err((code, message)) => reply_typed(code, "text/plain", format!("{message}\n")),
            }
        }
        (&Method::GET, ["mine"]) => match user {
            Some(user) if req.param("tg_format") == Some("atom") => systems_feed(w, user),
            Some(_) => reply_typed(200, "text/html", "<html>My Systems</html>".into()),
            None => unauthorized(),
        },
        (&Method::GET, ["users", "+self"]) => match user.and_then(|u| w.user(u)) {
            Some(u) => reply(200, user_json(u)),
            None => unauthorized(),
        },
        (&Method::GET, ["jobs", id]) => match id
            .parse::<u64>()
            .ok()
            .and_then(|id| w.jobs.iter().position(|j| j.id == id))
        {
            Some(i) => {
                advance(w, i);
                reply(200, job_json(w, &w.jobs[i]))
            }
            None => not_found(&format!("Job {id} not found")),
        },
        (&Method::GET, ["recipes", id]) => {
            let found = id.parse::<u64>().ok().and_then(|id| {
                w.jobs
                    .iter()
                    .find_map(|j| j.recipes().find(|r| r.id == id).map(|r| (j, r)))
            });
            match found {
                Some((job, r)) => reply(200, recipe_json(job, r)),
                None => not_found(&format!("Recipe {id} not found")),
            }
        }
        _ => not_found("The requested URL was not found on the server."),
    }
}

fn not_found(message: &str) -> Reply {
    reply_typed(404, "text/plain", format!("{message}\n"))
}

fn unauthorized() -> Reply {
    reply_typed(401, "text/plain", "Authenticated user required\n".into())
}

fn user_json(u: &User) -> Value {
    json!({"user_name": u.name, "display_name": u.name, "email_address": u.email})
}

fn user_ref(w: &World, name: &str) -> Value {
    w.user(name)
        .map_or_else(|| json!({"user_name": name}), user_json)
}

fn system_json(w: &World, s: &System) -> Value {
    let reservation = s.reservation.as_ref().map(|r| {
        json!({"type": r.kind, "user": user_ref(w, &r.user), "start_time": r.start_time,
               "finish_time": null, "recipe_id": r.recipe})
    });
    json!({"id": s.id, "fqdn": s.fqdn, "owner": user_ref(w, &s.owner), "status": "Automated",
           "type": "Machine", "arches": ["x86_64"], "lab_controller_id": 1,
           "mac_address": s.mac_address, "memory": 16384, "vendor": "Simulated", "model": "Lab 1",
           "location": "rack 1", "current_reservation": reservation, "current_loan": null})
}

fn job_json(w: &World, job: &Job) -> Value {
    json!({"id": job.id, "t_id": job.t_id(), "owner": user_ref(w, &job.owner),
           "whiteboard": job.whiteboard, "status": job.status(), "result": job.result(),
           "retention_tag": job.retention_tag,
           "recipesets": job.recipe_sets.iter().map(|rs| json!({
               "id": rs.id, "t_id": format!("RS:{}", rs.id),
               "machine_recipes": rs.recipes.iter().map(|r| recipe_json(job, r)).collect::<Vec<_>>()
           })).collect::<Vec<_>>()})
}

fn recipe_json(job: &Job, r: &Recipe) -> Value {
    json!({"id": r.id, "t_id": format!("R:{}", r.id), "job_id": job.id, "whiteboard": r.whiteboard,
           "status": r.status, "result": r.result(), "distro": r.distro,
           "resource": r.system.as_ref().map(|fqdn| json!({"fqdn": fqdn})),
           "start_time": r.start_time, "finish_time": r.finish_time,
           "reservation_request": r.reservesys.as_ref().map(|rs| json!({"duration": rs.duration, "when": rs.when}))})
}

/// `/mine?tg_format=atom`: the systems `user` owns or has reserved, as an Atom feed.
fn systems_feed(w: &World, user: &str) -> Reply {
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\">\
         <title>My Systems</title><id>{0}/mine</id><updated>{1}</updated>",
        w.origin,
        timestamp(0)
    );
    for s in w
        .systems
        .iter()
        .filter(|s| s.owner == user || s.reservation.as_ref().is_some_and(|r| r.user == user))
    {
        let link = format!("{}/view/{}", w.origin, xmlrpc::escape(&s.fqdn));
        out.push_str(&format!(
            "<entry><title>{}</title><link href=\"{link}\"/><id>{link}</id></entry>",
            xmlrpc::escape(&s.fqdn)
        ));
    }
    out.push_str("</feed>\n");
    reply_typed(200, "application/atom+xml", out)
}
