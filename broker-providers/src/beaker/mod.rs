//! `Beaker`: systems reserved by Beaker jobs.
//!
//! A checkout submits a job (`--job-xml PATH`) or a clone of one (`--job-id ID`) to the hub, waits
//! for its results, and gives the system its first recipe reserved as the host, with the system's
//! details (MAC address, owner, reservation and its expiry). A job that fails — its result `Warn`,
//! `Fail` or `Panic`, or cancelled, or aborted — or that does not finish within `max_job_wait` is an
//! error naming the job's address and its failing task, and the job is cancelled, so that its
//! systems go back to the pool. Check-in cancels the job (which ends its reservation) or, for a
//! system reserved by hand, returns the reservation; already done is done. Extend runs
//! `extendtesttime.sh` on the host, as the Python broker did. Hosts are reached over SSH (feature
//! `ssh`), and only while the system is still reserved for the user.
//!
//! The provider talks to the hub itself — XML-RPC at `/RPC2` and the HTTP API — so neither Python
//! nor `bkr` is needed to run it.
//!
//! # Settings (`Beaker:` in `broker_settings.yaml`)
//! | key | default | |
//! |---|---|---|
//! | `hub_url` | required | `https://beaker.example.com` |
//! | `username`, `password` | required | a password login |
//! | `auth` | `password` | `krbv` / `kerberos` is refused with the reason (below) |
//! | `max_job_wait` | `24h` | how long a job may take to reserve its system |
//! | `poll_interval` | `60` | the longest pause, in seconds, between two reads of a job's results; the pauses start at 1 s and double up to it |
//! | `results_limit` | `20` | the length of `--jobs` |
//!
//! **Kerberos**, `bkr`'s default login, is not supported: it needs a GSSAPI library (MIT's
//! `libgssapi_krb5`), which broker would have to link — a C library, and a second crypto stack
//! beside rustls — while broker is one self-contained binary. Use a password login (Beaker accepts
//! one for every account that has a password; LDAP accounts use their LDAP password).
//!
//! # No host is lost
//! Every job broker submits carries the intent record's id in its whiteboard (`[broker <id>]`): a
//! checkout that is interrupted, or whose process died, is cleaned up from its intent record by
//! finding the job by that text (`jobs.filter`) and cancelling it.
//!
//! # Files
//! `mod.rs` is the provider: settings, checkout, check-in, extend, inventory, discovery; `job.rs`
//! holds the job XML and results and the pure rules over them; `hub.rs` is the hub client (login,
//! session, XML-RPC and HTTP); `xmlrpc.rs` the XML-RPC codec.

mod hub;
mod job;
#[cfg(test)]
mod tests;
mod xmlrpc;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use broker_core::provider::{Arguments, HelpOption, Operation};
use broker_core::secrecy::SecretString;
use broker_core::settings::{ProviderSettings, field};
use broker_core::sync::lock;
use broker_core::value::to_yaml;
use broker_core::{
    CheckoutContext, Error, HostRecord, HostState, Mapping, Provider, ProviderConfig, ProviderKind,
    Result, Value,
};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use hub::{Hub, HubConfig, HubError, SessionSlot};
use job::{JobResults, Verdict};

/// The provider's name, as the inventory records it.
pub const NAME: &str = "Beaker";

/// The script a Beaker harness puts on every system to extend its reservation's watchdog.
const EXTEND_SCRIPT: &str = "/usr/bin/extendtesttime.sh";

/// The registration of the Beaker provider.
pub const KIND: ProviderKind = ProviderKind::new(NAME, "Beaker jobs that reserve systems", build)
    .checkout_actions(&["job_xml", "job_id"])
    .settings::<BeakerSection>()
    .arguments(&["extend_duration"])
    .takes(
        Operation::Checkout,
        Arguments::Recorded(&["job_xml", "job_id"]),
    )
    .takes(Operation::Extend, Arguments::Only(&["extend_duration"]))
    .help_options(&[
        HelpOption {
            name: "jobs",
            takes_value: false,
            help: "Your unfinished jobs",
        },
        HelpOption {
            name: "job",
            takes_value: true,
            help: "A job's XML, as a clone of it would be submitted",
        },
    ]);

fn build(config: ProviderConfig) -> Result<std::sync::Arc<dyn Provider>> {
    Ok(std::sync::Arc::new(Beaker::new(config)?))
}

/// The `Beaker` settings section, as written (see the module documentation's table).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct BeakerSection {
    #[serde(deserialize_with = "field::text")]
    hub_url: Option<String>,
    #[serde(deserialize_with = "field::text")]
    username: Option<String>,
    #[serde(deserialize_with = "field::secret")]
    password: Option<SecretString>,
    #[serde(deserialize_with = "field::text")]
    auth: Option<String>,
    #[serde(deserialize_with = "field::duration")]
    max_job_wait: Option<Duration>,
    #[serde(deserialize_with = "field::seconds")]
    poll_interval: Option<Duration>,
    #[serde(deserialize_with = "field::whole")]
    results_limit: Option<u64>,
}

impl ProviderSettings for BeakerSection {}

impl BeakerSection {
    /// The hub and the login, checked.
    fn hub(&self, config: &ProviderConfig) -> Result<HubConfig> {
        use broker_core::secrecy::ExposeSecret;
        let url = self
            .hub_url
            .as_deref()
            .filter(|u| !broker_core::settings::is_placeholder(&Value::from(*u)))
            .ok_or_else(|| config.missing("hub_url"))?
            .trim_end_matches('/')
            .to_owned();
        let parsed = reqwest::Url::parse(&url);
        if !parsed.is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some()) {
            return Err(config.setting_error(
                "hub_url",
                format!(
                    "`{url}` is not the address of a hub; write it as `https://beaker.example.com`"
                ),
            ));
        }
        if let Some(auth) = self
            .auth
            .as_deref()
            .filter(|a| !a.eq_ignore_ascii_case("password"))
        {
            return Err(config.setting_error(
                "auth",
                format!("`{auth}` logins are not supported: {KERBEROS}"),
            ));
        }
        let username = self.username.clone().filter(|u| !u.is_empty());
        let password = self
            .password
            .clone()
            .filter(|p| !p.expose_secret().is_empty());
        let (Some(username), Some(password)) = (username, password) else {
            return Err(Error::configuration(format!(
                "Beaker needs `username` and `password` (a password login) in its section of \
                 broker_settings.yaml, or BROKER_BEAKER__USERNAME and BROKER_BEAKER__PASSWORD; \
                 Kerberos, bkr's default, is not supported: {KERBEROS}"
            )));
        };
        Ok(HubConfig {
            url,
            username,
            password,
            timeout: Duration::from_secs(120),
        })
    }
}

/// Why a Kerberos login is refused.
const KERBEROS: &str = "broker talks to the hub itself and would need a GSSAPI library (MIT's \
     libgssapi_krb5, a C library with a crypto stack of its own) for Kerberos; log in with \
     `username` and `password` instead";

/// What this process knows about the job submitted for an intent record.
#[derive(Debug, Clone)]
enum JobNote {
    /// Nothing was sent to the hub yet.
    NotSubmitted,
    /// The job was sent; whether the hub made it is unknown until asked.
    Sent,
    /// The hub runs (or ran) this job (`J:123`).
    Submitted(String),
    /// The job ended and was dealt with: nothing left to do.
    Settled,
}

/// The provider for one configured instance.
pub(crate) struct Beaker {
    config: ProviderConfig,
    hub: HubConfig,
    session: SessionSlot,
    max_job_wait: Duration,
    poll_interval: Duration,
    results_limit: usize,
    jobs: Mutex<HashMap<String, JobNote>>,
}

impl std::fmt::Debug for Beaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Beaker")
            .field("instance", &self.config.instance())
            .field("hub", &self.hub)
            .finish()
    }
}

impl Beaker {
    fn new(config: ProviderConfig) -> Result<Beaker> {
        let section = BeakerSection::from_section(&config)?;
        let hub = section.hub(&config)?;
        Ok(Beaker {
            hub,
            session: Mutex::new(None),
            max_job_wait: section
                .max_job_wait
                .unwrap_or(Duration::from_secs(24 * 3600)),
            poll_interval: section
                .poll_interval
                .unwrap_or(Duration::from_secs(60))
                .max(Duration::from_millis(10)),
            results_limit: section.results_limit.map_or(20, |n| n as usize),
            jobs: Mutex::new(HashMap::new()),
            config,
        })
    }

    /// A hub client for this call.
    fn client(&self) -> Result<Hub<'_>> {
        Hub::new(&self.hub, &self.session)
    }

    fn error(&self, message: String) -> Error {
        let e = Error::provider(NAME, message);
        match self.config.instance() {
            Some(i) => e.with_instance(i),
            None => e,
        }
    }

    fn note(&self, record: &str, note: JobNote) {
        lock(&self.jobs).insert(record.to_owned(), note);
    }

    /// The job's page on the hub.
    fn job_url(&self, t_id: &str) -> String {
        format!("{}/jobs/{}", self.hub.url, t_id.trim_start_matches("J:"))
    }

    /// The job XML a checkout submits: the file `job_xml`, or a clone of job `job_id`.
    async fn job_to_submit(&self, hub: &Hub<'_>, args: &Mapping) -> Result<String> {
        let text = |key: &str| args.get(key).and_then(broker_core::value::scalar_text);
        if let Some(path) = text("job_xml") {
            return std::fs::read_to_string(&path).map_err(|e| {
                Error::user(format!(
                    "cannot read the job XML `{path}`; give the path of a Beaker job XML file"
                ))
                .caused_by(e)
            });
        }
        let Some(id) = text("job_id") else {
            return Err(Error::user(
                "no job given; give `--job-xml PATH` or `--job-id ID`",
            ));
        };
        let t_id = job_t_id(&id).ok_or_else(|| {
            Error::user(format!(
                "`{id}` is not a Beaker job id; give it as `123` or `J:123`"
            ))
        })?;
        clone_xml(hub, &t_id).await
    }

    /// Polls the job's results until it has its systems, fails, or runs out of `max_job_wait`;
    /// a failed or late job is cancelled.
    async fn wait_for(&self, hub: &Hub<'_>, t_id: &str, record: &str) -> Result<JobResults> {
        let deadline = Instant::now() + self.max_job_wait;
        let mut pause = self.poll_interval.min(Duration::from_secs(1));
        loop {
            match self.results(hub, t_id).await {
                Ok(results) => match results.verdict() {
                    Verdict::Ready => return Ok(results),
                    Verdict::Failed(why) => {
                        return Err(self.give_up(hub, t_id, &why, record).await);
                    }
                    Verdict::Waiting => {
                        tracing::debug!(job = t_id, status = %results.status, "waiting");
                    }
                },
                Err(e) if e.transient() => {
                    tracing::warn!("reading the results of Beaker job {t_id}: {e}; asking again");
                }
                Err(e) => return Err(e.into_error(&format!("reading the results of job {t_id}"))),
            }
            if Instant::now() + pause > deadline {
                let why = format!(
                    "Beaker job {t_id} did not reserve its systems within {} (max_job_wait)",
                    broker_core::time::format_duration(self.max_job_wait)
                );
                return Err(self.give_up(hub, t_id, &why, record).await);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(self.poll_interval);
        }
    }

    async fn results(
        &self,
        hub: &Hub<'_>,
        t_id: &str,
    ) -> std::result::Result<JobResults, HubError> {
        let xml = hub
            .call(
                "taskactions.to_xml",
                &[json!(t_id), json!(false), json!(true), json!(false)],
            )
            .await?;
        JobResults::parse(xml.as_str().unwrap_or_default()).map_err(|message| HubError::Decode {
            what: format!("the results of {t_id}"),
            message,
        })
    }

    /// Cancels a job that failed or took too long (then nothing is left to clean up for the
    /// intent `record`); the error says why, what became of the job, and where to see it.
    async fn give_up(&self, hub: &Hub<'_>, t_id: &str, why: &str, record: &str) -> Error {
        let cancelled = match self.cancel(hub, t_id).await {
            Ok(()) => {
                self.note(record, JobNote::Settled);
                "the job was cancelled, its systems returned".to_owned()
            }
            Err(e) => format!(
                "cancelling it failed ({}); cancel it with `bkr job-cancel {t_id}`",
                broker_core::error::chain(&e)
            ),
        };
        tracing::debug!(
            target: broker_core::report::TARGET,
            job_status = "failed",
            job_reasons = %why,
            job_url = %self.job_url(t_id),
            "job failed"
        );
        self.error(format!("{why}; {cancelled}; see {}", self.job_url(t_id)))
    }

    /// Cancels a job (which ends the reservations of its recipes); a finished or vanished job is
    /// left as it is.
    async fn cancel(&self, hub: &Hub<'_>, t_id: &str) -> Result<()> {
        let answer = hub
            .call(
                "taskactions.stop",
                &[json!(t_id), json!("cancel"), json!("released by broker")],
            )
            .await;
        match answer {
            Ok(_) => {
                tracing::info!("cancelled Beaker job {t_id}");
                Ok(())
            }
            Err(e)
                if e.hub_message()
                    .is_some_and(|m| m.contains(&format!("Invalid {t_id}"))) =>
            {
                tracing::info!("Beaker job {t_id} no longer exists");
                Ok(())
            }
            Err(e) => Err(e.into_error(&format!("cancelling job {t_id}"))),
        }
    }
}

/// A job's XML as a clone of it is submitted (`bkr job-clone`: `taskactions.to_xml` in its clone
/// form).
async fn clone_xml(hub: &Hub<'_>, t_id: &str) -> Result<String> {
    let xml = hub
        .call(
            "taskactions.to_xml",
            &[json!(t_id), json!(true), json!(false)],
        )
        .await
        .map_err(|e| e.into_error(&format!("reading job {t_id}")))?;
    Ok(xml.as_str().unwrap_or_default().to_owned())
}

/// `123` or `J:123` as `J:123`.
fn job_t_id(id: &str) -> Option<String> {
    let number = id.trim().trim_start_matches("J:");
    number.parse::<u64>().ok().map(|n| format!("J:{n}"))
}

/// A system's name as a path segment of the hub's URLs.
fn path_segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// A JSON value at `pointer` as text (`None` when absent or null).
fn text_at(v: &Json, pointer: &str) -> Option<String> {
    match v.pointer(pointer)? {
        Json::Null => None,
        Json::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Systems, reservations, hosts: what the provider reads of them at the hub.
impl Beaker {
    /// A system's details as host fields (upstream's `system-details`): MAC address, owner, id,
    /// and its reservation — when it began, for whom, for which recipe, when it ends.
    async fn system_fields(
        &self,
        hub: &Hub<'_>,
        fqdn: &str,
        reserve_seconds: Option<u64>,
    ) -> Result<(Mapping, Json)> {
        let system = hub
            .get_json(&format!("systems/{}/", path_segment(fqdn)))
            .await
            .map_err(|e| e.into_error(&format!("reading the details of system {fqdn}")))?;
        let mut m = Mapping::new();
        let mut put = |key: &str, value: Option<String>| {
            if let Some(v) = value {
                m.insert(Value::from(key), Value::from(v));
            }
        };
        put("mac_address", text_at(&system, "/mac_address"));
        put("owner", text_at(&system, "/owner/user_name"));
        put("system_id", text_at(&system, "/id"));
        put(
            "reservation_id",
            text_at(&system, "/current_reservation/recipe_id"),
        );
        put(
            "reserved_for",
            text_at(&system, "/current_reservation/user/user_name"),
        );
        let start = text_at(&system, "/current_reservation/start_time");
        let expires = text_at(&system, "/current_reservation/finish_time").or_else(|| {
            let begun = broker_core::time::parse_utc(start.as_deref()?)?;
            Some(broker_core::time::format_utc(
                begun + i64::try_from(reserve_seconds?).ok()?,
            ))
        });
        put("reserved_on", start);
        put("expires_on", expires);
        Ok((m, system))
    }

    /// The host a passed job gives: its first recipe's system, with the job's and the system's
    /// details.
    async fn host_fields(&self, hub: &Hub<'_>, results: &JobResults) -> Result<Mapping> {
        let t_id = results.t_id();
        let recipe = results
            .recipes
            .iter()
            .find(|r| r.system.is_some())
            .ok_or_else(|| {
                self.error(format!(
                    "Beaker job {t_id} passed without a system; see {}",
                    self.job_url(&t_id)
                ))
            })?;
        let fqdn = recipe.system.clone().unwrap_or_default();
        if recipe.status != "Reserved" {
            tracing::warn!(
                "Beaker job {t_id} completed without reserving {fqdn} (no <reservesys/> in its recipe): \
                 the system is back in the pool and may be someone else's"
            );
        }
        let (mut m, _) = self
            .system_fields(hub, &fqdn, recipe.reserve_seconds)
            .await?;
        m.insert("name".into(), Value::from(fqdn.as_str()));
        m.insert("hostname".into(), Value::from(fqdn.as_str()));
        m.insert("job_id".into(), Value::from(results.id.as_str()));
        m.insert("recipe_id".into(), Value::from(recipe.id.as_str()));
        m.insert("job_url".into(), Value::from(self.job_url(&t_id)));
        m.insert(
            "whiteboard".into(),
            Value::from(results.whiteboard.as_str()),
        );
        if let Some(distro) = &recipe.distro {
            m.insert("distro".into(), Value::from(distro.as_str()));
        }
        let systems: Vec<Value> = results
            .recipes
            .iter()
            .filter_map(|r| r.system.clone())
            .map(Value::from)
            .collect();
        if systems.len() > 1 {
            m.insert("job_systems".into(), Value::Sequence(systems));
        }
        Ok(m)
    }

    /// The job a pending record's checkout submitted: from this process's memory, else found by
    /// the record's id in the whiteboard of the user's jobs.
    async fn jobs_of_pending(&self, hub: &Hub<'_>, record: &HostRecord) -> Result<Vec<String>> {
        let id = record.id();
        let known = lock(&self.jobs).get(id.as_str()).cloned();
        match known {
            Some(JobNote::Submitted(t_id)) => return Ok(vec![t_id]),
            Some(JobNote::NotSubmitted | JobNote::Settled) => return Ok(Vec::new()),
            Some(JobNote::Sent) | None => {}
        }
        let found = hub
            .call(
                "jobs.filter",
                &[json!({"whiteboard": job::record_marker(id.as_str()), "mine": true})],
            )
            .await
            .map_err(|e| {
                e.into_error(&format!(
                    "looking for the job of unfinished checkout {}",
                    id.as_str()
                ))
            })?;
        Ok(found
            .as_array()
            .map(|ids| {
                ids.iter()
                    .filter_map(Json::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Returns a system reserved by hand (`bkr system-release`); not reserved, or reserved by
    /// someone else now, is done.
    async fn return_reservation(&self, hub: &Hub<'_>, fqdn: &str) -> Result<()> {
        let path = format!("systems/{}/reservations/+current", path_segment(fqdn));
        match hub
            .http_request(
                reqwest::Method::PATCH,
                &path,
                Some(&json!({"finish_time": "now"})),
            )
            .await
        {
            Ok(_) => {
                tracing::info!("returned the reservation of {fqdn}");
                Ok(())
            }
            Err(e) if matches!(e.status(), Some(400 | 403 | 404)) => {
                tracing::info!("{fqdn} is no longer reserved for you ({e}): nothing to return");
                Ok(())
            }
            Err(e) => Err(e.into_error(&format!("returning the reservation of {fqdn}"))),
        }
    }

    /// The systems reserved for the user (upstream's `system-list --mine`, without the systems the
    /// user merely owns), each read on its own.
    async fn reserved_systems(&self, hub: &Hub<'_>) -> Result<Vec<HostRecord>> {
        let feed = hub
            .http_request(
                reqwest::Method::GET,
                "mine?tg_format=atom&list_tgp_limit=0",
                None,
            )
            .await
            .map_err(|e| e.into_error("listing your systems"))?;
        let doc = roxmltree::Document::parse(&feed).map_err(|e| {
            self.error(format!(
                "the hub's list of your systems is not an Atom feed: {e}"
            ))
        })?;
        let fqdns: Vec<String> = doc
            .descendants()
            .filter(|n| n.has_tag_name("entry"))
            .filter_map(|e| e.children().find(|n| n.has_tag_name("title")))
            .filter_map(|t| t.text().map(|s| s.trim().to_owned()))
            .collect();
        let mut records = Vec::new();
        for fqdn in fqdns {
            if let Some(record) = self.reserved_host(hub, &fqdn).await? {
                records.push(record);
            }
        }
        Ok(records)
    }

    /// The host record of a system, when it is reserved for the user.
    async fn reserved_host(&self, hub: &Hub<'_>, fqdn: &str) -> Result<Option<HostRecord>> {
        let recipe_id = {
            let (_, system) = self.system_fields(hub, fqdn, None).await?;
            if text_at(&system, "/current_reservation/user/user_name").as_deref()
                != Some(hub.username())
            {
                return Ok(None);
            }
            text_at(&system, "/current_reservation/recipe_id")
        };
        let mut fields = Mapping::new();
        let mut reserve_seconds = None;
        if let Some(recipe_id) = recipe_id {
            let recipe = hub
                .get_json(&format!("recipes/{recipe_id}"))
                .await
                .map_err(|e| e.into_error(&format!("reading recipe R:{recipe_id} of {fqdn}")))?;
            reserve_seconds = recipe
                .pointer("/reservation_request/duration")
                .and_then(Json::as_u64);
            if let Some(job_id) = text_at(&recipe, "/job_id") {
                let job = hub
                    .get_json(&format!("jobs/{job_id}"))
                    .await
                    .map_err(|e| e.into_error(&format!("reading job J:{job_id} of {fqdn}")))?;
                fields.insert("job_id".into(), Value::from(job_id.as_str()));
                fields.insert("job_url".into(), Value::from(self.job_url(&job_id)));
                fields.insert("recipe_id".into(), Value::from(recipe_id.as_str()));
                if let Some(wb) = text_at(&job, "/whiteboard") {
                    fields.insert("whiteboard".into(), Value::from(wb));
                }
            }
            if let Some(distro) = text_at(&recipe, "/distro") {
                fields.insert("distro".into(), Value::from(distro));
            }
        }
        let (details, _) = self.system_fields(hub, fqdn, reserve_seconds).await?;
        fields.extend(details);
        fields.insert("name".into(), Value::from(fqdn));
        fields.insert("hostname".into(), Value::from(fqdn));
        fields.insert("_broker_provider".into(), Value::from(NAME));
        if let Some(i) = self.config.instance() {
            fields.insert("_broker_provider_instance".into(), Value::from(i));
        }
        Ok(Some(HostRecord::from_mapping(fields)))
    }

    /// Whether the system of a record is still reserved for the user (by the record's recipe, when
    /// it names one): a session to a system returned to the pool would reach someone else's.
    async fn still_reserved(&self, hub: &Hub<'_>, host: &HostRecord) -> Result<()> {
        let fqdn = host
            .hostname()
            .or_else(|| host.name())
            .unwrap_or_default()
            .to_owned();
        let (_, system) = self.system_fields(hub, &fqdn, None).await?;
        let holder = text_at(&system, "/current_reservation/user/user_name");
        let recipe = text_at(&system, "/current_reservation/recipe_id");
        let wanted_recipe = host
            .get("recipe_id")
            .and_then(broker_core::value::scalar_text);
        let yours = holder.as_deref() == Some(hub.username())
            && wanted_recipe.is_none_or(|r| recipe.as_deref() == Some(r.as_str()));
        if yours {
            Ok(())
        } else {
            Err(Error::host(
                fqdn,
                "the system is no longer reserved for you (its job ended or its reservation was \
                 returned); check the host in",
            ))
        }
    }
}

/// The hours of an extend: `extend_duration`, 1 to 99 (default 99, as upstream).
fn extend_hours(args: &Mapping) -> Result<u64> {
    let Some(given) = args.get("extend_duration").filter(|v| !v.is_null()) else {
        return Ok(99);
    };
    broker_core::value::scalar_u64(given)
        .filter(|h| (1..=99).contains(h))
        .ok_or_else(|| {
            Error::usage(format!(
                "`--extend-duration {}` is not a number of hours from 1 to 99",
                broker_core::value::scalar_text(given).unwrap_or_default()
            ))
        })
}

#[async_trait::async_trait]
impl Provider for Beaker {
    fn name(&self) -> &str {
        NAME
    }

    fn instance(&self) -> Option<&str> {
        self.config.instance()
    }

    async fn checkout(&self, ctx: &CheckoutContext<'_>) -> Result<Mapping> {
        let record = ctx.record_id().as_str();
        self.note(record, JobNote::NotSubmitted);
        let hub = self.client()?;
        let xml = self.job_to_submit(&hub, ctx.args()).await?;
        let xml = job::tag_whiteboard(&xml, &job::record_marker(record))
            .map_err(|why| Error::user(format!("the job XML cannot be submitted: {why}")))?;
        self.note(record, JobNote::Sent);
        let submitted = hub
            .call("jobs.upload", &[json!(xml)])
            .await
            .map_err(|e| e.into_error("submitting the job"))?;
        let t_id = submitted.as_str().unwrap_or_default().to_owned();
        self.note(record, JobNote::Submitted(t_id.clone()));
        tracing::debug!(target: broker_core::report::TARGET, job_url = %self.job_url(&t_id), "job addresses");
        tracing::info!("submitted Beaker job {t_id}: {}", self.job_url(&t_id));
        let results = self.wait_for(&hub, &t_id, record).await?;
        let fields = self.host_fields(&hub, &results).await?;
        // The record becomes `ready`: its check-in goes by its job id from now on.
        lock(&self.jobs).remove(record);
        Ok(fields)
    }

    async fn checkin(&self, host: &HostRecord) -> Result<()> {
        let hub = self.client()?;
        if host.state() == HostState::Pending {
            for t_id in self.jobs_of_pending(&hub, host).await? {
                self.cancel(&hub, &t_id).await?;
            }
            self.note(host.id().as_str(), JobNote::Settled);
            return Ok(());
        }
        let job = host.get("job_id").and_then(broker_core::value::scalar_text);
        match (
            job.as_deref().and_then(job_t_id),
            host.hostname().or_else(|| host.name()),
        ) {
            (Some(t_id), _) => self.cancel(&hub, &t_id).await,
            (None, Some(fqdn)) => self.return_reservation(&hub, fqdn).await,
            (None, None) => Err(self.error(format!(
                "record {} has neither a `job_id` nor a `hostname`: nothing to release",
                host.display_name()
            ))),
        }
    }

    async fn extend(&self, host: &HostRecord, args: &Mapping) -> Result<()> {
        let hours = extend_hours(args)?;
        let session = self.connect(host).await?;
        let command = format!("{EXTEND_SCRIPT} {hours}");
        let out = session
            .execute(&command, Some(Duration::from_secs(300)))
            .await?;
        if out.status != 0 {
            let said = if out.stderr.trim().is_empty() {
                &out.stdout
            } else {
                &out.stderr
            };
            return Err(Error::host(
                host.display_name(),
                format!("`{command}` exited with {}: {}", out.status, said.trim()),
            ));
        }
        tracing::info!(
            "extended the reservation of {} by {hours} hours",
            host.display_name()
        );
        Ok(())
    }

    async fn help(&self, query: &Mapping) -> Result<Value> {
        let hub = self.client()?;
        if let Some(id) = query.get("job").and_then(broker_core::value::scalar_text) {
            let t_id = job_t_id(&id).ok_or_else(|| {
                Error::user(format!(
                    "`{id}` is not a Beaker job id; give it as `123` or `J:123`"
                ))
            })?;
            return Ok(Value::from(clone_xml(&hub, &t_id).await?));
        }
        let asked_for_jobs = query
            .get("jobs")
            .is_some_and(|v| v.as_bool() != Some(false));
        if !asked_for_jobs {
            return Err(Error::usage("ask Beaker something: --jobs or --job ID"));
        }
        let limit = query
            .get("results_limit")
            .and_then(broker_core::value::scalar_u64)
            .map_or(self.results_limit, |n| n as usize);
        let ids = hub
            .call(
                "jobs.filter",
                &[json!({"mine": true, "is_finished": false, "limit": limit})],
            )
            .await
            .map_err(|e| e.into_error("listing your jobs"))?;
        let mut jobs = Vec::new();
        for t_id in ids
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Json::as_str)
        {
            let info = hub
                .call("taskactions.task_info", &[json!(t_id)])
                .await
                .map_err(|e| e.into_error(&format!("reading job {t_id}")))?;
            jobs.push(to_yaml(&json!({
                "id": t_id,
                "status": info.get("state_label"),
                "result": info.get("result"),
                "whiteboard": info.get("method"),
            })));
        }
        Ok(Value::Sequence(jobs))
    }

    async fn inventory(&self, filter: Option<&str>) -> Result<Vec<HostRecord>> {
        let hub = self.client()?;
        if let Some(user) = filter.filter(|f| !f.is_empty() && *f != hub.username()) {
            return Err(Error::usage(format!(
                "Beaker lists the systems reserved for the user broker logs in as ({}), not for `{user}`",
                hub.username()
            )));
        }
        self.reserved_systems(&hub).await
    }

    async fn connect(&self, host: &HostRecord) -> Result<Box<dyn broker_core::Session>> {
        self.still_reserved(&self.client()?, host).await?;
        crate::ssh_session(self, host, &self.config).await
    }
}
