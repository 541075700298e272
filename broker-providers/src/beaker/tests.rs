//! The Beaker provider against the stateful hub simulator (`tests/beaker-sim`), through the
//! `Broker` facade.

use beaker_sim::{FaultKind, PASSWORD, Sim, USER};
use broker_core::{
    Broker, CheckoutRequest, Error, HostRecord, Mapping, ProviderRegistry, RecoverScope, Settings,
    Value,
};

fn registry() -> ProviderRegistry {
    ProviderRegistry::new().with(super::KIND)
}

/// Settings for the hub at `url`, polling fast; `extra` adds lines to the section.
fn settings(url: &str, extra: &str) -> String {
    let mut yaml = format!(
        "Beaker:\n  hub_url: {url}\n  username: {USER}\n  password: {PASSWORD}\n  poll_interval: 0.01\n"
    );
    if !extra.contains("max_job_wait") {
        yaml.push_str("  max_job_wait: 1m\n");
    }
    yaml + extra
}

struct Env {
    sim: Sim,
    dir: tempfile::TempDir,
    broker: Broker,
}

fn env_with(sim: Sim, extra: &str) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let yaml = settings(&sim.url(), extra);
    let broker = Broker::new(Settings::from_yaml(dir.path(), &yaml).unwrap(), registry()).unwrap();
    Env { sim, dir, broker }
}

fn env(extra: &str) -> Env {
    env_with(Sim::start(), extra)
}

impl Env {
    fn records(&self) -> Vec<HostRecord> {
        self.broker.inventory().list().unwrap()
    }

    /// A second broker on the same directory: a new process, as far as memory goes.
    fn fresh_broker(&self) -> Broker {
        let yaml = settings(&self.sim.url(), "");
        Broker::new(
            Settings::from_yaml(self.dir.path(), &yaml).unwrap(),
            registry(),
        )
        .unwrap()
    }

    /// Writes a job XML file: one recipe on `system` (any when `None`), the install task, a task
    /// ending with `result`, and `reservesys` (its attributes) unless `None`.
    fn job_file(&self, system: Option<&str>, result: &str, reservesys: Option<&str>) -> String {
        let path = self.dir.path().join(format!("job-{}.xml", rand_suffix()));
        std::fs::write(&path, job_xml(system, result, reservesys)).unwrap();
        path.to_string_lossy().into_owned()
    }

    /// Checks out one host from the job XML file at `path`.
    async fn checkout(&self, path: &str) -> broker_core::Result<broker_core::HostGuard> {
        self.broker
            .checkout_one(CheckoutRequest::new().arg("job_xml", path))
            .await
    }

    fn unused_faults(&self) -> Vec<String> {
        self.sim
            .unused_faults()
            .iter()
            .map(|f| format!("{} ({} left)", f.path_contains, f.times))
            .collect()
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn job_xml(system: Option<&str>, result: &str, reservesys: Option<&str>) -> String {
    let host = system.map_or_else(
        || "<hostRequires/>".to_owned(),
        |s| format!("<hostRequires><hostname op=\"=\" value=\"{s}\"/></hostRequires>"),
    );
    let reserve = reservesys
        .map(|a| format!("<reservesys {a}/>"))
        .unwrap_or_default();
    format!(
        "<job retention_tag=\"scratch\"><whiteboard>qe run</whiteboard><recipeSet priority=\"Normal\">\
         <recipe><distroRequires><distro_name op=\"=\" value=\"RHEL-9.4.0\"/></distroRequires>{host}\
         <task name=\"/distribution/check-install\" role=\"STANDALONE\"/>\
         <task name=\"/qe/smoke\" role=\"STANDALONE\"><params><param name=\"SIM_RESULT\" value=\"{result}\"/></params></task>\
         {reserve}</recipe></recipeSet></job>"
    )
}

fn text<'a>(record: &'a HostRecord, key: &str) -> Option<&'a str> {
    record.get(key).and_then(Value::as_str)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_submits_the_job_tagged_with_its_record_and_records_the_reserved_system() {
    let e = env("");
    let job = e.job_file(
        Some("sys03.lab.example.com"),
        "Pass",
        Some("duration=\"3600\""),
    );
    let guard = e.checkout(&job).await.unwrap();
    let record = guard.keep().record().clone();
    assert_eq!(record.name(), Some("sys03.lab.example.com"));
    assert_eq!(record.hostname(), Some("sys03.lab.example.com"));
    let marker = format!("[broker {}]", record.id().as_str());
    let expected = [
        ("job_id", "1".to_owned()),
        ("recipe_id", "1".to_owned()),
        ("job_url", format!("{}/jobs/1", e.sim.url())),
        ("whiteboard", format!("qe run {marker}")),
        ("distro", "RHEL-9.4.0".to_owned()),
        ("mac_address", "52:54:00:00:00:03".to_owned()),
        ("owner", "admin".to_owned()),
        ("system_id", "3".to_owned()),
        ("reservation_id", "1".to_owned()),
        ("reserved_for", USER.to_owned()),
    ];
    for (key, value) in expected {
        assert_eq!(text(&record, key), Some(value.as_str()), "{key}");
    }
    let reserved_on = text(&record, "reserved_on").unwrap();
    let begun = broker_core::time::parse_utc(reserved_on).unwrap();
    assert_eq!(
        text(&record, "expires_on"),
        Some(broker_core::time::format_utc(begun + 3600).as_str())
    );
    {
        let w = e.sim.world();
        let job = w.job(1).unwrap();
        assert_eq!(job.whiteboard, format!("qe run {marker}"));
        assert_eq!(job.status(), "Reserved");
        assert_eq!(
            w.system("sys03.lab.example.com")
                .unwrap()
                .reservation
                .as_ref()
                .unwrap()
                .user,
            USER
        );
    }

    // Check-in cancels the job, which returns the system; again is no error.
    for _ in 0..2 {
        for o in e.broker.checkin(vec![record.clone()], false).await {
            o.result.unwrap();
        }
    }
    assert!(e.records().is_empty());
    assert_eq!(
        e.sim
            .world()
            .system("sys03.lab.example.com")
            .unwrap()
            .reservation,
        None
    );
    assert_eq!(e.sim.world().job(1).unwrap().status(), "Completed");
    assert_eq!(e.sim.calls("taskactions.stop").len(), 2);
    // One login served every call.
    assert_eq!(e.sim.calls("auth.login_password").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_id_is_cloned_and_the_clone_is_the_host() {
    let e = env("");
    let first = job_xml(None, "Pass", Some("duration=\"600\""));
    e.sim.world().submit(USER, &first).unwrap();
    let guard = e
        .broker
        .checkout_one(CheckoutRequest::new().arg("job_id", "J:1"))
        .await
        .unwrap();
    let record = guard.keep().record().clone();
    assert_eq!(text(&record, "job_id"), Some("2"));
    let to_xml = &e.sim.calls("taskactions.to_xml")[0];
    assert_eq!(
        to_xml.params[..2],
        [serde_json::json!("J:1"), serde_json::json!(true)]
    );
    let w = e.sim.world();
    let (original, clone) = (w.job(1).unwrap(), w.job(2).unwrap());
    assert_eq!(original.whiteboard, "qe run", "the original is not touched");
    assert_eq!(
        clone.whiteboard,
        format!("qe run [broker {}]", record.id().as_str())
    );
    assert_eq!(clone.recipes().next().unwrap().tasks.len(), 2);
    assert_eq!(clone.status(), "Reserved");
}

/// The Python broker's faults: a failed job is never cancelled, so its system stays reserved; a
/// job whose result is Fail but with one passing task counts as a success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_is_cancelled_and_its_error_names_the_failing_task_and_the_job() {
    let e = env("");
    // Reserved when it fails: without the cancel, the system would stay the user's.
    let job = e.job_file(
        Some("sys05.lab.example.com"),
        "Fail",
        Some("when=\"onfail\""),
    );
    let err = e.checkout(&job).await.unwrap_err();
    assert_eq!(err.exit_code(), 7, "{err:?}");
    let message = broker_core::error::chain(&err);
    for part in [
        "Beaker job J:1 ended Reserved with result Fail",
        "task /qe/smoke (T:2) of recipe R:1 on sys05.lab.example.com: Fail (Completed)",
        "the job was cancelled, its systems returned",
        &format!("see {}/jobs/1", e.sim.url()),
    ] {
        assert!(message.contains(part), "{part:?} not in {message}");
    }
    assert!(e.records().is_empty());
    assert_eq!(
        e.sim
            .world()
            .system("sys05.lab.example.com")
            .unwrap()
            .reservation,
        None
    );
    assert_eq!(
        e.sim.calls("taskactions.stop").len(),
        1,
        "cancelled once, not again on clean-up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warn_an_aborted_recipe_and_a_missing_system_are_failures_too() {
    let e = env("");
    let warn = e.job_file(None, "Warn", Some(""));
    let aborted = e.job_file(None, "Abort", None);
    let nowhere = e.job_file(Some("gone.lab.example.com"), "Pass", Some(""));
    for (job, says) in [
        (
            &warn,
            "ended Reserved with result Warn; task /qe/smoke (T:2)",
        ),
        (
            &aborted,
            "ended Aborted with result Warn; task /qe/smoke (T:4)",
        ),
        (
            &nowhere,
            "ended Aborted with result Warn; task /distribution/check-install (T:5)",
        ),
    ] {
        let err = e.checkout(job).await.unwrap_err();
        let message = broker_core::error::chain(&err);
        assert!(message.contains(says), "{says:?} not in {message}");
    }
    assert!(
        e.sim
            .systems()
            .iter()
            .all(|s| s.reservation.as_ref().is_none_or(|r| r.user != USER))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_does_not_reserve_in_time_is_cancelled() {
    let e = env("  max_job_wait: 1s\n");
    // Bob holds sys11: the job waits in the queue.
    let job = e.job_file(Some("sys11.lab.example.com"), "Pass", Some(""));
    let err = e.checkout(&job).await.unwrap_err();
    let message = broker_core::error::chain(&err);
    assert!(
        message.contains("Beaker job J:1 did not reserve its systems within 1s (max_job_wait); the job was cancelled"),
        "{message}"
    );
    assert_eq!(e.sim.world().job(1).unwrap().status(), "Cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_rides_out_dropped_connections_and_5xx_and_a_forgotten_session_logs_in_again() {
    let e = env("");
    e.sim.inject(None, "taskactions.to_xml", FaultKind::Drop, 1);
    e.sim
        .inject(None, "taskactions.to_xml", FaultKind::Status(502), 1);
    e.sim
        .inject(None, "jobs.upload", FaultKind::ExpireSession, 1);
    let job = e.job_file(None, "Pass", Some(""));
    let guard = e.checkout(&job).await.unwrap();
    assert_eq!(text(guard.record(), "job_id"), Some("1"));
    assert!(e.unused_faults().is_empty(), "{:?}", e.unused_faults());
    assert_eq!(
        e.sim.calls("auth.login_password").len(),
        2,
        "logged in again once"
    );
    guard.checkin().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_password_is_exit_5_and_the_password_is_never_shown() {
    let sim = Sim::start();
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "Beaker:\n  hub_url: {}\n  username: {USER}\n  password: hunter2-not-hers\n  poll_interval: 0.01\n",
        sim.url()
    );
    let broker = Broker::new(Settings::from_yaml(dir.path(), &yaml).unwrap(), registry()).unwrap();
    let job = dir.path().join("job.xml");
    std::fs::write(&job, job_xml(None, "Pass", Some(""))).unwrap();
    let err = broker
        .checkout_one(CheckoutRequest::new().arg("job_xml", job.to_str().unwrap()))
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 5, "{err:?}");
    let shown = format!("{} {err:?}", broker_core::error::chain(&err));
    assert!(shown.contains("Invalid username or password"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(sim.jobs().is_empty());
    let values: Mapping = serde_yaml::from_str(&format!(
        "hub_url: {}\nusername: {USER}\npassword: hunter2-not-hers\n",
        sim.url()
    ))
    .unwrap();
    let provider = super::Beaker::new(broker_core::ProviderConfig::new(
        "Beaker",
        None,
        values,
        dir.path(),
    ))
    .unwrap();
    assert!(!format!("{provider:?}").contains("hunter2"));
}

#[test]
fn kerberos_or_no_password_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    for (section, says) in [
        (
            "  auth: krbv\n  username: alice\n  password: x\n",
            "`krbv` logins are not supported",
        ),
        (
            "  username: alice\n",
            "Beaker needs `username` and `password`",
        ),
        ("", "Beaker needs `username` and `password`"),
    ] {
        let yaml = format!("Beaker:\n  hub_url: https://beaker.example.com\n{section}");
        let settings = Settings::from_yaml(dir.path(), &yaml).unwrap();
        let err = settings
            .provider_config("Beaker", None)
            .and_then(|config| (super::KIND).build(config))
            .unwrap_err();
        let message = broker_core::error::chain(&err);
        assert!(matches!(err, Error::Configuration { .. }), "{err:?}");
        assert!(
            message.contains(says) && message.contains("GSSAPI"),
            "{message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_cancels_the_job_of_a_crashed_checkout_found_by_its_record() {
    let e = env("");
    // A checkout that "crashed" after the hub took its job: only the whiteboard links them.
    let pending = HostRecord::pending(super::NAME, None, Mapping::new());
    e.broker
        .inventory()
        .put(std::slice::from_ref(&pending))
        .unwrap();
    let tagged = super::job::tag_whiteboard(
        &job_xml(None, "Pass", Some("")),
        &super::job::record_marker(pending.id().as_str()),
    )
    .unwrap();
    e.sim.world().submit(USER, &tagged).unwrap();
    e.sim
        .world()
        .submit(USER, &job_xml(None, "Pass", Some("")))
        .unwrap();
    let outcomes = e
        .fresh_broker()
        .recover(RecoverScope::Unfinished)
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 1);
    assert!(outcomes[0].result.is_ok(), "{:?}", outcomes[0].result);
    assert!(e.records().is_empty());
    let w = e.sim.world();
    assert_eq!(w.job(1).unwrap().status(), "Cancelled");
    assert_eq!(
        w.job(2).unwrap().status(),
        "Queued",
        "another job is left alone"
    );
}

/// The Python broker's sync broke on multi-recipe jobs and copied one host's details onto others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_lists_each_system_reserved_for_the_user_with_its_own_details() {
    let e = env("");
    let two_recipes = job_xml(Some("sys02.lab.example.com"), "Pass", Some("duration=\"7200\"")).replace(
        "</recipeSet>",
        "<recipe><distroRequires/><hostRequires><hostname op=\"=\" value=\"sys04.lab.example.com\"/></hostRequires>\
         <task name=\"/distribution/check-install\"/><reservesys duration=\"7200\"/></recipe></recipeSet>",
    );
    let path = e.dir.path().join("two.xml");
    std::fs::write(&path, two_recipes).unwrap();
    let guard = e
        .broker
        .checkout_one(CheckoutRequest::new().arg("job_xml", path.to_str().unwrap()))
        .await
        .unwrap();
    assert_eq!(
        guard.record().get("job_systems"),
        Some(
            &serde_yaml::from_str::<Value>("[sys02.lab.example.com, sys04.lab.example.com]")
                .unwrap()
        )
    );
    guard.keep();
    e.sim
        .world()
        .reserve(USER, "sys07.lab.example.com")
        .unwrap();
    e.broker.sync_inventory("Beaker").await.unwrap();
    let mut records = e.records();
    records.sort_by(|a, b| a.name().cmp(&b.name()));
    let names: Vec<_> = records
        .iter()
        .map(|r| r.name().unwrap_or_default())
        .collect();
    // Not sys11 (Bob's), not sys12 (hers, but not reserved).
    assert_eq!(
        names,
        [
            "sys02.lab.example.com",
            "sys04.lab.example.com",
            "sys07.lab.example.com"
        ]
    );
    let field = |i: usize, key: &str| text(&records[i], key).map(str::to_owned);
    assert_eq!(
        field(0, "mac_address").as_deref(),
        Some("52:54:00:00:00:02")
    );
    assert_eq!(
        field(1, "mac_address").as_deref(),
        Some("52:54:00:00:00:04")
    );
    assert_eq!(
        (field(0, "recipe_id"), field(1, "recipe_id")),
        (Some("1".into()), Some("2".into()))
    );
    assert_eq!(field(1, "job_id").as_deref(), Some("1"));
    assert!(field(1, "whiteboard").is_some_and(|w| w.contains("[broker ")));
    let begun = broker_core::time::parse_utc(&field(1, "reserved_on").unwrap()).unwrap();
    assert_eq!(
        field(1, "expires_on"),
        Some(broker_core::time::format_utc(begun + 7200))
    );
    assert_eq!(field(2, "job_id"), None, "reserved by hand");
    assert_eq!(field(2, "reserved_for").as_deref(), Some(USER));

    // Checking in the hand-made reservation returns it; the job's systems go with their job.
    for o in e.broker.checkin(records, false).await {
        o.result.unwrap();
    }
    assert!(
        e.sim
            .systems()
            .iter()
            .all(|s| s.reservation.as_ref().is_none_or(|r| r.user != USER))
    );
    let patches = e
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .count();
    assert_eq!(patches, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_lists_unfinished_jobs_and_shows_a_jobs_xml() {
    let e = env("");
    e.sim
        .world()
        .submit(USER, &job_xml(None, "Pass", Some("")))
        .unwrap();
    e.sim
        .world()
        .submit(USER, &job_xml(None, "Pass", None))
        .unwrap();
    e.sim
        .world()
        .submit(beaker_sim::OTHER_USER, &job_xml(None, "Pass", None))
        .unwrap();
    let mut query = Mapping::new();
    query.insert("jobs".into(), Value::Bool(true));
    let jobs = e
        .broker
        .provider_help("Beaker", None, &query)
        .await
        .unwrap();
    let listed: Vec<_> = jobs
        .as_sequence()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["id"].as_str().unwrap().to_owned(),
                j["whiteboard"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("J:2".to_owned(), "qe run".to_owned()),
            ("J:1".to_owned(), "qe run".to_owned())
        ]
    );
    let mut query = Mapping::new();
    query.insert("job".into(), Value::from("1"));
    let xml = e
        .broker
        .provider_help("Beaker", None, &query)
        .await
        .unwrap();
    let xml = xml.as_str().unwrap();
    assert!(
        xml.starts_with("<job retention_tag=\"scratch\"><whiteboard>qe run</whiteboard>"),
        "{xml}"
    );
    assert!(
        xml.contains("<param name=\"SIM_RESULT\" value=\"Pass\"/>"),
        "{xml}"
    );
    assert!(!xml.contains("status="), "the clone form: {xml}");
}

#[test]
fn extend_takes_1_to_99_hours() {
    let args =
        |v: Value| -> Mapping { [(Value::from("extend_duration"), v)].into_iter().collect() };
    assert_eq!(super::extend_hours(&Mapping::new()).unwrap(), 99);
    assert_eq!(super::extend_hours(&args(Value::from(1))).unwrap(), 1);
    assert_eq!(super::extend_hours(&args(Value::from("99"))).unwrap(), 99);
    for bad in [Value::from(0), Value::from(100), Value::from("soon")] {
        let err = super::extend_hours(&args(bad)).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_session_to_a_system_no_longer_reserved() {
    let e = env("");
    let job = e.job_file(None, "Pass", Some(""));
    let record = e.checkout(&job).await.unwrap().keep().record().clone();
    e.sim.world().jobs[0].recipe_sets[0].recipes[0].status = "Completed".into();
    let fqdn = record.hostname().unwrap().to_owned();
    e.sim
        .world()
        .systems
        .iter_mut()
        .filter(|s| s.fqdn == fqdn)
        .for_each(|s| s.reservation = None);
    let host = e.broker.attach(record).unwrap();
    let err = host.execute("true").await.unwrap_err();
    assert!(matches!(err, Error::Host { .. }), "{err:?}");
    assert!(
        broker_core::error::chain(&err).contains("no longer reserved for you"),
        "{err:?}"
    );
}
