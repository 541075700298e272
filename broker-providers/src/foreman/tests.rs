//! The Foreman provider against the stateful Foreman simulator (`tests/foreman-sim`), through the
//! `Broker` facade.

use broker_core::{
    Broker, CheckoutRequest, HostRecord, HostState, Mapping, ProviderRegistry, RecoverScope,
    Settings, Value,
};
use foreman_sim::{FaultKind, LOCATION_TITLE, ORGANIZATION, PASSWORD, Sim, SimOptions, USER};

fn registry() -> ProviderRegistry {
    ProviderRegistry::new().with(super::KIND)
}

/// Settings for one Foreman instance on `url` (location by title, polling fast); `extra` adds lines
/// to the section.
fn settings(url: &str, extra: &str) -> String {
    format!(
        "Foreman:\n  instances:\n    lab:\n      foreman_url: {url}\n      foreman_username: {USER}\n      \
         foreman_password: {PASSWORD}\n      organization: {ORGANIZATION}\n      location: {LOCATION_TITLE}\n      \
         default: true\n  poll_interval: 0.01\n  name_prefix: bt\n{extra}"
    )
}

struct Env {
    sim: Sim,
    dir: tempfile::TempDir,
    broker: Broker,
}

fn env_with(options: SimOptions, extra: &str) -> Env {
    let sim = Sim::start_with(options);
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_on(&sim, &dir, extra);
    Env { sim, dir, broker }
}

fn broker_on(sim: &Sim, dir: &tempfile::TempDir, extra: &str) -> Broker {
    let yaml = settings(&sim.url(), extra);
    Broker::new(Settings::from_yaml(dir.path(), &yaml).unwrap(), registry()).unwrap()
}

fn env(extra: &str) -> Env {
    env_with(SimOptions::default(), extra)
}

fn rhel9() -> CheckoutRequest {
    CheckoutRequest::new().arg("hostgroup", "base/rhel9")
}

impl Env {
    fn records(&self) -> Vec<HostRecord> {
        self.broker.inventory().list().unwrap()
    }

    fn creates(&self) -> Vec<foreman_sim::Recorded> {
        self.sim
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path == "/api/hosts")
            .collect()
    }
}

/// A checkout creates the host in the hostgroup (organisation by name, location by title), waits for
/// the build, and records the host Foreman made; check-in deletes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_builds_a_host_and_checkin_deletes_it() {
    let e = env("");
    let guard = e.broker.checkout_one(rhel9()).await.unwrap();
    let record = guard.record().clone();
    let name = record.name().unwrap().to_owned();
    assert!(super::made_by_broker(&name, "bt"), "{name}");
    assert!(name.ends_with(".sim.example.com"), "{name}");
    assert_eq!(record.hostname(), Some(name.as_str()));
    assert_eq!(record.get("hostgroup"), Some(&Value::from("base/rhel9")));
    assert_eq!(record.provider(), Some("Foreman"));
    {
        let world = e.sim.world();
        let host = world.host(&name).unwrap();
        assert_eq!(host.build_status, 0);
        let brno = world
            .locations
            .iter()
            .find(|l| l.title == LOCATION_TITLE)
            .unwrap();
        assert_eq!(
            (host.organization, host.location),
            (world.organizations[0].id, brno.id)
        );
        assert_eq!(record.ip(), Some(host.ip.as_str()));
    }
    let body = &e.creates()[0].body;
    assert_eq!(body["host"]["build"], true);
    assert_eq!(
        body["host"]["compute_attributes"],
        serde_json::json!({"start": "1"})
    );
    // The name was chosen before the create, and the intent record carried it.
    assert_eq!(
        format!("{}.sim.example.com", body["host"]["name"].as_str().unwrap()),
        name
    );
    guard.checkin().await.unwrap();
    assert!(e.sim.hosts().is_empty(), "{:?}", e.sim.hosts());
    assert!(e.records().is_empty());
    // Checking in a host already gone is done, not an error.
    let outcomes = e.broker.checkin(vec![record], false).await;
    assert!(outcomes[0].result.is_ok(), "{:?}", outcomes[0].result);
}

/// `--image` with `--computeresource` provisions from the image, found by name on that resource.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_based_provisioning_names_the_image_by_its_uuid() {
    let e = env("");
    let guard = e
        .broker
        .checkout_one(
            CheckoutRequest::new()
                .arg("hostgroup", "fedora")
                .arg("image", "fedora-41")
                .arg("computeresource", "libvirt-lab"),
        )
        .await
        .unwrap();
    let (host, lab) = {
        let world = e.sim.world();
        let host = world.host(guard.record().name().unwrap()).unwrap().clone();
        (host, world.compute_resources[0].clone())
    };
    let fedora = lab.images.iter().find(|i| i.name == "fedora-41").unwrap();
    assert_eq!(host.provision_method, "image");
    assert_eq!(host.compute_resource, Some(lab.id));
    assert_eq!(host.image.as_deref(), Some(fedora.uuid.as_str()));
    guard.checkin().await.unwrap();
    let err = e
        .broker
        .checkout_one(
            CheckoutRequest::new()
                .arg("hostgroup", "fedora")
                .arg("image", "centos-5")
                .arg("computeresource", "libvirt-lab"),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "compute resource `libvirt-lab` has no image `centos-5`"
    );
    assert!(e.sim.hosts().is_empty());
}

/// A failed build is an error naming Foreman's build state, and the host is deleted (the Python
/// broker polls it forever and leaves it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_build_is_named_and_its_host_deleted() {
    let e = env("");
    e.sim
        .inject(Some("POST"), "/api/hosts", FaultKind::FailBuild, 1);
    let err = e.broker.checkout_one(rhel9()).await.unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with("Foreman::lab: host `bt-")
            && message.ends_with(
                ".sim.example.com` did not build: Foreman says `Installation error` (build_status 3); broker deleted it"
            ),
        "{message}"
    );
    assert_eq!(err.exit_code(), 7);
    assert!(e.sim.hosts().is_empty(), "{:?}", e.sim.hosts());
    assert!(e.records().is_empty(), "{:?}", e.records());
    assert!(e.sim.unused_faults().is_empty());
}

/// A build that outlasts `build_timeout` is given up with the state it was in, the host deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_past_its_timeout_is_given_up() {
    let e = env("  build_timeout: 0.2\n");
    e.sim
        .inject(Some("POST"), "/api/hosts", FaultKind::SlowBuild(100_000), 1);
    let err = e.broker.checkout_one(rhel9()).await.unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("is still `Pending installation` (build_status 1) after 0 s (`build_timeout`); broker deleted it"),
        "{message}"
    );
    assert!(e.sim.hosts().is_empty());
    assert!(e.records().is_empty());
}

/// 502s from the proxy while creating and polling are ridden out: a create whose answer was lost
/// is found by name, not made twice (one 502 crashes the Python broker and leaves the host).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_gateways_are_ridden_out_and_a_lost_create_is_not_repeated() {
    let e = env("");
    e.sim
        .inject(Some("GET"), "/api/hosts/", FaultKind::Status(502), 2);
    e.sim
        .inject(Some("GET"), "/api/organizations", FaultKind::Status(503), 1);
    let guard = e.broker.checkout_one(rhel9()).await.unwrap();
    assert!(e.sim.unused_faults().is_empty());
    guard.checkin().await.unwrap();
    assert!(e.sim.hosts().is_empty());

    // The create is made, but its answer is lost behind a 502: broker finds the host by its name
    // instead of creating another.
    e.sim
        .inject(Some("POST"), "/api/hosts", FaultKind::Lost(502), 1);
    let guard = e.broker.checkout_one(rhel9()).await.unwrap();
    assert!(e.sim.unused_faults().is_empty());
    assert_eq!(e.creates().len(), 2, "one create for each checkout");
    assert_eq!(e.sim.world().host_names(), [guard.record().name().unwrap()]);
    guard.checkin().await.unwrap();
}

/// A login Foreman refuses is an authentication error (exit code 5) naming the settings to check;
/// the password shows nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_is_exit_code_5_without_the_password() {
    let sim = Sim::start();
    let dir = tempfile::tempdir().unwrap();
    let yaml = settings(&sim.url(), "").replace(PASSWORD, "hunter2-wrong");
    let broker = Broker::new(Settings::from_yaml(dir.path(), &yaml).unwrap(), registry()).unwrap();
    let err = broker.checkout_one(rhel9()).await.unwrap_err();
    assert_eq!(err.exit_code(), 5, "{err}");
    let shown = broker_core::error::chain(&err);
    assert!(
        shown.contains(
            "authentication failed: Foreman refused the login while listing organizations; check \
             `foreman_username` and `foreman_password`"
        ) && shown.contains("answered 401: Unable to authenticate user alice"),
        "{shown}"
    );
    assert!(!shown.contains("still checked out"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(broker.inventory().list().unwrap().is_empty());
}

/// Sync lists every page and takes only the hosts broker names (`PREFIX-` and 8 hex digits), not
/// every host whose name merely contains the prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_reads_every_page_and_only_hosts_broker_made() {
    let e = env("");
    {
        let mut w = e.sim.world();
        for i in 0..130 {
            w.add_host(
                &format!("bt-{:08x}.sim.example.com", 0xa000_0000u32 + i),
                "base",
            );
        }
        for other in [
            "bt-web01",
            "xbt-0000abcd",
            "bt-0000abcdef",
            "bt-0000zzzz",
            "mybt-server",
        ] {
            w.add_host(other, "base");
        }
    }
    let report = e.broker.sync_inventory("Foreman").await.unwrap();
    assert_eq!(report.added, 130, "{report:?}");
    let records = e.records();
    assert_eq!(records.len(), 130);
    assert!(
        records
            .iter()
            .all(|r| super::made_by_broker(r.name().unwrap(), "bt"))
    );
    let first = records
        .iter()
        .find(|r| r.name() == Some("bt-a0000000.sim.example.com"))
        .unwrap();
    assert_eq!(first.provider(), Some("Foreman"));
    assert_eq!(first.instance(), Some("lab"));
    assert_eq!(first.get("hostgroup"), Some(&Value::from("base")));
    // More than one page was read.
    let pages: Vec<String> = e
        .sim
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/api/hosts")
        .filter_map(|r| r.param("page").map(str::to_owned))
        .collect();
    assert_eq!(pages, ["1", "2"]);
}

/// `--hostgroups` lists titles; `--hostgroup NAME` describes one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_lists_and_describes_hostgroups() {
    let e = env("");
    let flag = |key: &str, value: Value| {
        let mut m = Mapping::new();
        m.insert(key.into(), value);
        m
    };
    let listed = e
        .broker
        .provider_help("Foreman", None, &flag("hostgroups", Value::Bool(true)))
        .await
        .unwrap();
    assert_eq!(
        listed,
        Value::Sequence(vec!["base".into(), "base/rhel9".into(), "fedora".into()])
    );
    let described = e
        .broker
        .provider_help("Foreman", None, &flag("hostgroup", "base/rhel9".into()))
        .await
        .unwrap();
    let expected: Value = serde_yaml::from_str(
        "name: base/rhel9\nDescription: base/rhel9 hosts\nOperating System: RedHat 9.4\n\
         Domain: sim.example.com\nSubnet: lab\n",
    )
    .unwrap();
    assert_eq!(described, expected);
    let err = e
        .broker
        .provider_help("Foreman", None, &flag("hostgroup", "nope".into()))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Foreman has no hostgroup `nope` (by title or name); it has: base, base/rhel9, fedora"
    );
}

/// A host SSH cannot reach runs commands through Foreman remote execution, on that host only; the
/// exit status comes from the job's output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_fall_back_to_remote_execution() {
    let sim = Sim::start();
    let dir = tempfile::tempdir().unwrap();
    // Foreman's domain does not resolve here: SSH gives up at once, or after its timeout.
    let yaml = settings(&sim.url(), "") + "ssh:\n  host_connection_timeout: 1\n";
    let broker = Broker::new(Settings::from_yaml(dir.path(), &yaml).unwrap(), registry()).unwrap();
    let e = Env { sim, dir, broker };
    let a = e.broker.checkout_one(rhel9()).await.unwrap();
    let b = e.broker.checkout_one(rhel9()).await.unwrap();
    e.sim.world().command_results.push((
        "cat /etc/os-release".into(),
        0,
        "NAME=RHEL\nVERSION=9.4\n".into(),
    ));
    let out = b.execute("cat /etc/os-release").await.unwrap();
    assert_eq!(
        (out.status, out.stdout.as_str()),
        (0, "NAME=RHEL\nVERSION=9.4\n")
    );
    let failed = b.execute("exit 3").await.unwrap();
    assert_eq!(failed.status, 3);
    let jobs = e.sim.world().jobs.clone();
    let b_name = b.record().name().unwrap();
    assert_eq!(jobs.len(), 2);
    assert!(
        jobs.iter()
            .all(|j| j.hosts.len() == 1 && j.hosts[0].host == b_name),
        "{jobs:?}"
    );
    let err = b.read_file("/etc/hostname").await.unwrap_err();
    assert!(
        err.to_string()
            .contains("remote execution carries no files"),
        "{err}"
    );
    a.checkin().await.unwrap();
    b.checkin().await.unwrap();
}

/// A record left `pending` by a crash is checked in by the name it carries: the host is found
/// (with the domain Foreman added) and deleted; with no host, there is nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_record_is_recovered_by_its_name() {
    let e = env("");
    e.sim
        .inject(Some("GET"), "/api/hosts/", FaultKind::Status(404), 1);
    e.sim
        .inject(Some("DELETE"), "/api/hosts/", FaultKind::Status(500), 6);
    let err = e.broker.checkout_one(rhel9()).await.unwrap_err();
    assert_eq!(err.exit_code(), 7, "{err}");
    let records = e.records();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].state(), HostState::Pending);
    let planned = records[0].name().unwrap().to_owned();
    assert_eq!(
        e.sim.world().host_names(),
        [format!("{planned}.sim.example.com")]
    );
    assert!(
        e.sim.unused_faults().is_empty(),
        "{:?}",
        e.sim.unused_faults()
    );
    let fresh = broker_on(&e.sim, &e.dir, "");
    let outcomes = fresh.recover(RecoverScope::Unfinished).await.unwrap();
    assert!(outcomes[0].result.is_ok(), "{:?}", outcomes[0].result);
    assert!(e.sim.hosts().is_empty());
    assert!(e.records().is_empty());
}
