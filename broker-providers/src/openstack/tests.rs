//! The OpenStack provider against the stateful OpenStack simulator (`tests/openstack-sim`), through
//! the `Broker` facade: each login, templates and arguments, builds that fail or time out, faults,
//! crash recovery, check-in, sync and discovery.

use broker_core::{
    Broker, CheckoutRequest, Error, HostRecord, HostState, Mapping, ProviderRegistry, RecoverScope,
    Settings, Value,
};
use openstack_sim::{
    APP_CREDENTIAL_ID, APP_CREDENTIAL_NAME, APP_CREDENTIAL_SECRET, FaultKind, PASSWORD, PROJECT,
    Sim, SimOptions, USER,
};
use serde_json::{Value as Json, json};

fn registry() -> ProviderRegistry {
    ProviderRegistry::new().with(super::KIND)
}

/// The password login to `sim`, as upstream's settings write it.
fn password_login(sim: &Sim) -> String {
    format!(
        "  auth_url: {}\n  username: {USER}\n  password: {PASSWORD}\n  project_name: {PROJECT}\n  \
         user_domain_name: Default\n  project_domain_name: Default\n",
        sim.auth_url()
    )
}

/// The `OpenStack` section: `login`, fast polling, and `extra`.
fn section(login: &str, extra: &str) -> String {
    let mut yaml = format!("OpenStack:\n{login}");
    for (key, value) in [("server_poll_interval", "0.01"), ("server_timeout", "30")] {
        if !extra.contains(key) {
            yaml.push_str(&format!("  {key}: {value}\n"));
        }
    }
    yaml + extra
}

struct Env {
    sim: Sim,
    dir: tempfile::TempDir,
    broker: Broker,
}

impl Env {
    fn start(options: SimOptions, login: impl Fn(&Sim) -> String, extra: &str) -> Env {
        let sim = Sim::start_with(options);
        let dir = tempfile::tempdir().unwrap();
        let yaml = section(&login(&sim), extra);
        let broker =
            Broker::new(Settings::from_yaml(dir.path(), &yaml).unwrap(), registry()).unwrap();
        Env { sim, dir, broker }
    }

    fn records(&self) -> Vec<HostRecord> {
        self.broker.inventory().list().unwrap()
    }

    /// A second broker on the same directory: a new process, as far as memory goes.
    fn fresh_broker(&self, extra: &str) -> Broker {
        let yaml = section(&password_login(&self.sim), extra);
        Broker::new(
            Settings::from_yaml(self.dir.path(), &yaml).unwrap(),
            registry(),
        )
        .unwrap()
    }

    /// The requests for `method` whose path starts with `prefix`.
    fn requests(&self, method: &str, prefix: &str) -> Vec<openstack_sim::Recorded> {
        self.sim
            .requests()
            .into_iter()
            .filter(|r| r.method == method && r.path.starts_with(prefix))
            .collect()
    }

    fn logins(&self) -> Vec<openstack_sim::Recorded> {
        self.requests("POST", "/identity/v3/auth/tokens")
    }

    /// Asserts every injected fault was served: one never served would let a test pass without
    /// exercising what it is about.
    fn assert_faults_served(&self) {
        let unused = self.sim.unused_faults();
        assert!(unused.is_empty(), "faults never served: {unused:?}");
    }
}

fn env(extra: &str) -> Env {
    Env::start(SimOptions::default(), password_login, extra)
}

/// A checkout of rhel-9.4 on m1.small and `private`.
fn rhel() -> CheckoutRequest {
    CheckoutRequest::new()
        .arg("ostack_image", "rhel-9.4")
        .arg("ostack_flavor", "m1.small")
        .arg("ostack_network", "private")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_records_the_server_tagged_with_the_record_id_and_checkin_deletes_it() {
    let e = env("");
    let guard = e
        .broker
        .checkout_one(rhel().arg("ostack_key_name", "alice-key"))
        .await
        .unwrap();
    let record = guard.record().clone();
    let servers = e.sim.servers();
    assert_eq!(servers.len(), 1);
    let server = &servers[0];
    assert_eq!(server.status, "ACTIVE");
    assert_eq!(record.state(), HostState::Ready);
    assert_eq!(record.hostname(), Some("10.0.0.10"));
    assert_eq!(record.ip(), Some("10.0.0.10"));
    assert_eq!(
        record.get("instance_id"),
        Some(&Value::from(server.id.as_str()))
    );
    assert_eq!(record.name(), Some(server.name.as_str()));
    assert!(server.name.starts_with("broker-"), "{}", server.name);
    assert_eq!(
        server.metadata.get("broker_record_id"),
        Some(&json!(record.id().as_str()))
    );
    assert_eq!(
        server.metadata.get("broker_image"),
        Some(&json!("rhel-9.4"))
    );
    assert_eq!(server.key_name.as_deref(), Some("alice-key"));
    {
        let w = e.sim.world();
        assert_eq!(server.image, w.image("rhel-9.4").unwrap().id);
        assert_eq!(server.flavor, w.flavor("m1.small").unwrap().id);
        assert_eq!(server.networks, [w.network("private").unwrap().id.clone()]);
    }
    // One login for the whole checkout; the catalogue's endpoints, not guesses, are used.
    assert_eq!(e.logins().len(), 1);
    guard.checkin().await.unwrap();
    assert!(e.sim.servers().is_empty());
    assert!(e.records().is_empty());
    assert_eq!(e.requests("DELETE", "/compute/v2.1/servers/").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_credential_logs_in_by_id_or_by_name_without_a_scope() {
    let by_id = |sim: &Sim| {
        format!(
            "  auth_url: {}\n  application_credential_id: {APP_CREDENTIAL_ID}\n  \
             application_credential_secret: {APP_CREDENTIAL_SECRET}\n",
            sim.auth_url()
        )
    };
    let by_name = |sim: &Sim| {
        format!(
            "  auth_url: {}\n  application_credential_name: {APP_CREDENTIAL_NAME}\n  \
             username: {USER}\n  application_credential_secret: {APP_CREDENTIAL_SECRET}\n",
            sim.auth_url()
        )
    };
    for login in [&by_id as &dyn Fn(&Sim) -> String, &by_name] {
        let e = Env::start(SimOptions::default(), login, "");
        let guard = e.broker.checkout_one(rhel()).await.unwrap();
        guard.checkin().await.unwrap();
        let logins = e.logins();
        assert_eq!(logins.len(), 1);
        let auth = &logins[0].body["auth"];
        assert_eq!(
            auth["identity"]["methods"],
            json!(["application_credential"])
        );
        assert!(auth["scope"].is_null(), "{auth}");
        assert!(e.sim.servers().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloud_of_clouds_yaml_logs_in_with_its_region_and_interface() {
    let e = Env::start(SimOptions::default(), |_| "  cloud: simulated\n".into(), "");
    std::fs::write(
        e.dir.path().join("clouds.yaml"),
        format!(
            "clouds:\n  simulated:\n    auth:\n      auth_url: {}\n      username: {USER}\n      \
             password: {PASSWORD}\n      project_name: {PROJECT}\n      user_domain_name: Default\n      \
             project_domain_name: Default\n    region_name: RegionOne\n    interface: internal\n    \
             identity_api_version: 3\n",
            e.sim.auth_url()
        ),
    )
    .unwrap();
    // The provider reads clouds.yaml when it is built, on first use.
    let guard = e.broker.checkout_one(rhel()).await.unwrap();
    guard.checkin().await.unwrap();
    let login = &e.logins()[0].body["auth"];
    assert_eq!(login["identity"]["password"]["user"]["name"], USER);
    assert_eq!(login["scope"]["project"]["name"], PROJECT);
    // A region the catalogue has no endpoint in is a configuration error saying what to check.
    let elsewhere = Env::start(
        SimOptions::default(),
        password_login,
        "  region_name: Elsewhere\n",
    );
    let err = elsewhere.broker.checkout_one(rhel()).await.unwrap_err();
    let shown = broker_core::error::chain(&err);
    assert!(shown.contains("no image endpoint"), "{shown}");
    assert!(shown.contains("region_name"), "{shown}");
    assert_eq!(err.exit_code(), 8, "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_an_authentication_error_and_never_shows_the_password() {
    let e = Env::start(
        SimOptions::default(),
        |sim| password_login(sim).replace(PASSWORD, "wrong-horse-battery"),
        "",
    );
    let err = e.broker.checkout_one(rhel()).await.unwrap_err();
    assert_eq!(err.exit_code(), 5, "{err:?}");
    let shown = broker_core::error::chain(&err);
    assert!(shown.contains("refused the password login"), "{shown}");
    assert!(!shown.contains("wrong-horse-battery"), "{shown}");
    assert!(!format!("{err:?}").contains("wrong-horse-battery"));
    assert!(e.sim.servers().is_empty());
    assert!(e.records().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_gives_what_the_arguments_do_not_and_an_unknown_one_is_named() {
    let e = env(
        "  templates:\n    small:\n      image: fedora-41\n      flavor: m1.medium\n      \
         network: private\n      key_name: alice-key\n  default_flavor: m1.small\n",
    );
    let guard = e
        .broker
        .checkout_one(
            CheckoutRequest::new()
                .arg("ostack_template", "small")
                .arg("ostack_flavor", "m1.large"),
        )
        .await
        .unwrap();
    let server = e.sim.servers().remove(0);
    {
        let w = e.sim.world();
        assert_eq!(server.image, w.image("fedora-41").unwrap().id);
        assert_eq!(
            server.flavor,
            w.flavor("m1.large").unwrap().id,
            "the argument wins"
        );
    }
    assert_eq!(server.key_name.as_deref(), Some("alice-key"));
    assert_eq!(
        server.metadata.get("broker_template"),
        Some(&json!("small"))
    );
    guard.checkin().await.unwrap();
    let err = e
        .broker
        .checkout_one(CheckoutRequest::new().arg("ostack_template", "large"))
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 13, "{err:?}");
    assert!(
        err.to_string()
            .contains("no OpenStack template `large` in the settings (known: small)"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defaults_fill_a_checkout_without_a_template() {
    let e = env(
        "  default_image: rhel-9.4\n  default_flavor: m1.medium\n  default_network: private\n  \
         default_key_name: alice-key\n",
    );
    let guard = e
        .broker
        .checkout_one(CheckoutRequest::new().arg("ostack_image", "fedora-41"))
        .await
        .unwrap();
    let server = e.sim.servers().remove(0);
    {
        let w = e.sim.world();
        assert_eq!(server.image, w.image("fedora-41").unwrap().id);
        assert_eq!(server.flavor, w.flavor("m1.medium").unwrap().id);
    }
    assert_eq!(server.key_name.as_deref(), Some("alice-key"));
    guard.checkin().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_parameters_are_one_user_error_naming_all_before_any_request() {
    let e = env("");
    let err = e
        .broker
        .checkout_one(CheckoutRequest::new().arg("ostack_image", "rhel-9.4"))
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 13, "{err:?}");
    assert!(
        err.to_string()
            .contains("missing required OpenStack parameters: flavor, network;"),
        "{err}"
    );
    assert!(e.sim.requests().is_empty(), "{:?}", e.sim.requests());
    assert!(e.records().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_not_found_are_one_user_error_naming_each() {
    let e = env("");
    let err = e
        .broker
        .checkout_one(
            CheckoutRequest::new()
                .arg("ostack_image", "windows")
                .arg("ostack_flavor", "m9.huge")
                .arg("ostack_network", "private"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 13, "{err:?}");
    assert!(
        err.to_string()
            .contains("not found on OpenStack: image `windows`, flavor `m9.huge`;"),
        "{err}"
    );
    assert!(e.requests("POST", "/compute").is_empty());
    assert!(e.records().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_resolve_by_id_then_exact_name_then_part_of_the_name() {
    let e = env("");
    let (minimal, medium) = {
        let w = e.sim.world();
        (
            w.image("rhel-9.4-minimal").unwrap().id.clone(),
            w.flavor("m1.medium").unwrap().id.clone(),
        )
    };
    for (image, expected) in [
        (minimal.as_str(), "rhel-9.4-minimal"),
        ("rhel-9.4", "rhel-9.4"),
        ("minimal", "rhel-9.4-minimal"),
        ("fedora", "fedora-41"),
    ] {
        let guard = e
            .broker
            .checkout_one(
                rhel()
                    .arg("ostack_image", image)
                    .arg("ostack_flavor", medium.as_str()),
            )
            .await
            .unwrap();
        let server = e.sim.servers().remove(0);
        let wanted = e.sim.world().image(expected).unwrap().id.clone();
        assert_eq!(server.image, wanted, "{image}");
        assert_eq!(server.flavor, medium);
        guard.checkin().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_error_is_novas_fault_and_the_server_is_deleted() {
    let e = env("");
    let fault = "No valid host was found. There are not enough hosts available.";
    e.sim.inject(
        Some("POST"),
        "/compute/v2.1/servers",
        FaultKind::BuildError(fault.into()),
        1,
    );
    let err = e.broker.checkout_one(rhel()).await.unwrap_err();
    e.assert_faults_served();
    assert_eq!(err.exit_code(), 7, "{err:?}");
    let shown = broker_core::error::chain(&err);
    assert!(
        shown.contains(&format!("failed to build: {fault}; the server was deleted")),
        "{shown}"
    );
    assert!(e.sim.servers().is_empty());
    assert!(e.records().is_empty());
    // Deleted once, by the checkout: the check-in of the failed checkout knew there was nothing left.
    assert_eq!(e.requests("DELETE", "/compute/v2.1/servers/").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_that_outlasts_server_timeout_is_deleted() {
    let options = SimOptions {
        build_polls: u32::MAX,
        ..SimOptions::default()
    };
    let e = Env::start(options, password_login, "  server_timeout: 0.2\n");
    let err = e.broker.checkout_one(rhel()).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert_eq!(err.exit_code(), 7);
    assert!(
        err.to_string()
            .contains("the server was deleted) timed out after"),
        "{err}"
    );
    assert!(e.sim.servers().is_empty());
    assert!(e.records().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_expires_mid_poll_is_renewed_and_the_poll_asked_again() {
    let e = env("");
    e.sim.inject(
        Some("GET"),
        "/compute/v2.1/servers/",
        FaultKind::ExpireToken,
        1,
    );
    let guard = e.broker.checkout_one(rhel()).await.unwrap();
    e.assert_faults_served();
    let logins = e.logins();
    assert_eq!(logins.len(), 2, "one login, then one after the expiry");
    let polls = e.requests("GET", "/compute/v2.1/servers/");
    assert_eq!(polls[1].path, polls[0].path);
    assert_ne!(
        polls[1].token, polls[0].token,
        "asked again with the new token"
    );
    guard.checkin().await.unwrap();
    assert!(e.sim.servers().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passing_503s_are_ridden_out_and_a_refused_create_is_sent_again() {
    let e = env("");
    for (method, path, times) in [
        ("GET", "/image/v2/images", 1),
        ("GET", "/compute/v2.1/flavors", 1),
        ("POST", "/compute/v2.1/servers", 1),
        ("GET", "/compute/v2.1/servers/", 2),
        ("DELETE", "/compute/v2.1/servers/", 1),
    ] {
        e.sim
            .inject(Some(method), path, FaultKind::Status(503), times);
    }
    let guard = e.broker.checkout_one(rhel()).await.unwrap();
    assert_eq!(
        e.sim.servers().len(),
        1,
        "one server, though the create was sent twice"
    );
    assert_eq!(e.requests("POST", "/compute/v2.1/servers").len(), 2);
    guard.checkin().await.unwrap();
    e.assert_faults_served();
    assert!(e.sim.servers().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_exceeded_is_a_provider_error_with_novas_words() {
    let e = env("");
    e.sim.inject(
        Some("POST"),
        "/compute/v2.1/servers",
        FaultKind::QuotaExceeded,
        1,
    );
    let err = e.broker.checkout_one(rhel()).await.unwrap_err();
    e.assert_faults_served();
    assert_eq!(err.exit_code(), 7, "{err:?}");
    let shown = broker_core::error::chain(&err);
    assert!(shown.contains("over its quota"), "{shown}");
    assert!(
        shown.contains("Quota exceeded for instances: Requested 1"),
        "{shown}"
    );
    assert_eq!(e.requests("POST", "/compute/v2.1/servers").len(), 1);
    assert!(e.sim.servers().is_empty());
    assert!(e.records().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_deletes_the_server_of_a_checkout_that_crashed_after_the_create() {
    let e = env("");
    // A checkout that "crashed" after Nova made the server: its intent record is still pending,
    // and only the record id in the server's metadata links the two.
    let pending = HostRecord::pending("OpenStack", None, Mapping::new());
    e.broker
        .inventory()
        .put(std::slice::from_ref(&pending))
        .unwrap();
    let mut tagged = serde_json::Map::new();
    tagged.insert("broker_record_id".into(), json!(pending.id().as_str()));
    e.sim
        .world()
        .add_server("broker-crashed", "u-alice", tagged);
    e.sim
        .world()
        .add_server("someone-elses", "u-alice", serde_json::Map::new());
    let fresh = e.fresh_broker("");
    let outcomes = fresh.recover(RecoverScope::Unfinished).await.unwrap();
    assert_eq!(outcomes.len(), 1);
    assert!(outcomes[0].result.is_ok(), "{:?}", outcomes[0].result);
    let left: Vec<String> = e.sim.servers().into_iter().map(|s| s.name).collect();
    assert_eq!(left, ["someone-elses"]);
    assert!(e.records().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkin_of_a_vanished_server_succeeds_and_an_upstream_record_is_found_by_name() {
    let e = env("");
    let guard = e.broker.checkout_one(rhel()).await.unwrap();
    let record = guard.keep().record().clone();
    e.sim.world().servers.clear();
    let outcomes = e.broker.checkin(vec![record.clone()], false).await;
    assert!(outcomes[0].result.is_ok(), "{:?}", outcomes[0].result);
    assert!(e.records().is_empty());
    // The Python broker records no `instance_id`: its record is found by name, as upstream does.
    let id = e
        .sim
        .world()
        .add_server("upstream-vm", "u-alice", serde_json::Map::new());
    let upstream: HostRecord = HostRecord::from_mapping(
        serde_yaml::from_str(
            "{hostname: 10.0.0.10, name: upstream-vm, _broker_provider: OpenStack, \
             _broker_args: {ostack_image: rhel-9.4}}",
        )
        .unwrap(),
    );
    e.broker
        .inventory()
        .put(std::slice::from_ref(&upstream))
        .unwrap();
    let outcomes = e.broker.checkin(e.records(), false).await;
    assert!(outcomes[0].result.is_ok(), "{:?}", outcomes[0].result);
    assert!(e.sim.servers().is_empty());
    assert_eq!(
        e.requests("DELETE", "/compute/v2.1/servers/")
            .last()
            .map(|r| r.path.clone()),
        Some(format!("/compute/v2.1/servers/{id}"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_lists_only_the_servers_broker_made_for_this_user() {
    let e = env("");
    let guard = e.broker.checkout_one(rhel()).await.unwrap();
    let mine = guard.keep().record().clone();
    let mut bobs = serde_json::Map::new();
    bobs.insert("broker_record_id".into(), json!("hbob0000000000001"));
    e.sim.world().add_server("bobs-broker-vm", "u-bob", bobs);
    e.sim
        .world()
        .add_server("hand-made", "u-alice", serde_json::Map::new());
    e.broker.inventory().remove(&[mine.id()]).unwrap();
    e.broker.sync_inventory("OpenStack").await.unwrap();
    let records = e.records();
    assert_eq!(records.len(), 1, "{records:?}");
    let synced = &records[0];
    assert_eq!(synced.id(), mine.id());
    assert_eq!(synced.hostname(), mine.hostname());
    assert_eq!(synced.get("instance_id"), mine.get("instance_id"));
    assert_eq!(synced.provider(), Some("OpenStack"));
    assert_eq!(
        synced.args().get("ostack_flavor"),
        Some(&Value::from("m1.small"))
    );
    // What the sync recorded checks in like any record.
    let outcomes = e.broker.checkin(records, false).await;
    assert!(outcomes[0].result.is_ok(), "{:?}", outcomes[0].result);
    let left: Vec<String> = e.sim.servers().into_iter().map(|s| s.name).collect();
    assert_eq!(left, ["bobs-broker-vm", "hand-made"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_lists_images_flavors_networks_and_templates() {
    let e = env("  templates:\n    small:\n      image: rhel-9.4\n      flavor: m1.small\n");
    let ask = |flag: &str| {
        let mut query = Mapping::new();
        query.insert(flag.into(), Value::Bool(true));
        query
    };
    let help = |query: Mapping| {
        let broker = &e.broker;
        async move { broker.provider_help("OpenStack", None, &query).await }
    };
    let names = |v: Value| -> Vec<String> {
        v.as_sequence()
            .unwrap()
            .iter()
            .map(|i| i.as_str().unwrap().split(" (").next().unwrap().to_owned())
            .collect()
    };
    let images = help(ask("images")).await.unwrap();
    assert_eq!(names(images), ["rhel-9.4", "rhel-9.4-minimal", "fedora-41"]);
    let flavors = help(ask("flavors")).await.unwrap();
    assert_eq!(names(flavors), ["m1.small", "m1.medium", "m1.large"]);
    let networks = help(ask("networks")).await.unwrap();
    let id = e.sim.world().network("private").unwrap().id.clone();
    assert_eq!(
        networks.as_sequence().unwrap()[0],
        Value::from(format!("private ({id})"))
    );
    let templates = help(ask("templates")).await.unwrap();
    assert_eq!(
        templates,
        serde_yaml::from_str::<Value>("{small: {image: rhel-9.4, flavor: m1.small}}").unwrap()
    );
    let err = help(Mapping::new()).await.unwrap_err();
    assert_eq!(err.exit_code(), 2);
}

#[test]
fn the_provider_shows_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "OpenStack:\n  auth_url: http://127.0.0.1:9/v3\n  application_credential_id: c\n  \
                application_credential_secret: s3cret-value\n";
    let settings = Settings::from_yaml(dir.path(), yaml).unwrap();
    let provider = super::KIND
        .build(settings.provider_config("OpenStack", None).unwrap())
        .unwrap();
    let shown = format!("{provider:?}");
    assert!(shown.contains("ApplicationCredential"), "{shown}");
    assert!(!shown.contains("s3cret-value"), "{shown}");
}

#[test]
fn upstream_settings_keys_are_all_known() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "OpenStack:\n  auth_url: https://keystone.example.com:5000/v3\n  username: u\n  \
                password: p\n  project_name: demo\n  user_domain_name: Default\n  \
                project_domain_name: Default\n  identity_api_version: '3'\n  region_name: R\n  \
                interface: public\n  server_timeout: 600\n  application_credential_id: i\n  \
                application_credential_secret: s\n  cloud: ''\n  default_image: rhel\n  \
                default_flavor: m1.small\n  default_network: private\n  default_key_name: k\n  \
                templates:\n    small: {image: rhel, flavor: m1.small, network: private, key_name: k}\n";
    let settings = Settings::from_yaml(dir.path(), yaml).unwrap();
    let config = settings.provider_config("OpenStack", None).unwrap();
    assert!(super::KIND.settings_problems(&config).is_empty());
    let typo =
        Settings::from_yaml(dir.path(), &yaml.replace("server_timeout", "server_timout")).unwrap();
    let problems = super::KIND.settings_problems(&typo.provider_config("OpenStack", None).unwrap());
    assert_eq!(problems.len(), 1);
    assert!(
        problems[0]
            .to_string()
            .contains("did you mean `server_timeout`?"),
        "{}",
        problems[0]
    );
}

/// The JSON of one server as broker reads it, for the rules it is built from.
#[test]
fn a_servers_record_fields_follow_upstream() {
    let server: Json = json!({"id": "s", "name": "n", "addresses": {}});
    let fields = super::servers::host_fields(&server);
    assert_eq!(
        serde_yaml::to_string(&fields).unwrap(),
        "hostname: n\ninstance_id: s\nname: n\n"
    );
}

/// A server deleted behind broker's back gets no command, even where its address answers (a
/// floating IP passed on to another machine): a host error naming what to do, without trying SSH.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_command_goes_to_a_server_openstack_no_longer_has() {
    let e = env("ssh:\n  host_connection_timeout: 1\n");
    let guard = e.broker.checkout_one(rhel()).await.unwrap();
    e.sim.world().servers.clear();
    match guard.execute("true").await {
        Err(broker_core::Error::Host { message, .. }) => assert_eq!(
            message,
            "OpenStack has no server for this host any more; `broker checkin` drops its record"
        ),
        other => panic!("{other:?}"),
    }
}
