//! The AnsibleTower provider against the stateful AWX simulator (`tests/awx-sim`), through the
//! `Broker` facade, plus exact-request checks against mockito.

use awx_sim::{ALICE_PASSWORD, ALICE_TOKEN, FaultKind, Sim, SimOptions};
use broker_core::{
    Broker, CheckoutRequest, HostRecord, HostState, Mapping, ProviderRegistry, RecoverScope,
    Settings, Value,
};
use serde_json::{Value as Json, json};

fn registry() -> ProviderRegistry {
    ProviderRegistry::new().with(super::KIND)
}

/// Settings for one AnsibleTower instance on `url`, polling fast; `extra` adds lines to the section
/// (and overrides the defaults here).
fn settings(url: &str, extra: &str) -> String {
    let mut yaml = format!("AnsibleTower:\n  base_url: {url}/\n  token: {ALICE_TOKEN}\n");
    for (key, value) in [
        ("workflow_poll_interval", "0.01"),
        ("max_resilient_wait", "5"),
        ("workflow_timeout", "30"),
    ] {
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

fn env_with(options: SimOptions, extra: &str) -> Env {
    let sim = Sim::start_with(options);
    let dir = tempfile::tempdir().unwrap();
    let yaml = settings(&sim.url(), extra);
    let broker = Broker::new(Settings::from_yaml(dir.path(), &yaml).unwrap(), registry()).unwrap();
    Env { sim, dir, broker }
}

fn env(extra: &str) -> Env {
    env_with(SimOptions::default(), extra)
}

/// The faults the simulator still holds, one line each: a fault test asserts there are none, so a
/// fault that was never served cannot let it pass.
fn unused_faults(sim: &Sim) -> Vec<String> {
    sim.unused_faults()
        .iter()
        .map(|f| {
            let method = f.method.as_deref().unwrap_or("any");
            format!("{method} {} ({} left)", f.path_contains, f.times)
        })
        .collect()
}

impl Env {
    fn records(&self) -> Vec<HostRecord> {
        self.broker.inventory().list().unwrap()
    }

    /// A second broker on the same directory and settings: a new process, as far as memory goes.
    fn fresh_broker(&self, extra: &str) -> Broker {
        let yaml = settings(&self.sim.url(), extra);
        Broker::new(
            Settings::from_yaml(self.dir.path(), &yaml).unwrap(),
            registry(),
        )
        .unwrap()
    }
}

fn launch_vars(r: &awx_sim::Recorded) -> Json {
    let text = r.body.get("extra_vars").and_then(Json::as_str).unwrap();
    serde_json::from_str(text).unwrap()
}

fn deploy() -> CheckoutRequest {
    CheckoutRequest::new()
        .arg("workflow", "deploy-rhel")
        .arg("deploy_rhel_version", "9.4")
}

fn labels(pairs: &[(&str, &str)]) -> Mapping {
    pairs
        .iter()
        .map(|(k, v)| (Value::from(*k), Value::from(*v)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_sends_every_argument_and_records_the_host_from_artifacts() {
    let e = env("  provider_labels:\n    team: qe\n");
    let guard = e
        .broker
        .checkout_one(
            deploy()
                .arg("extra_list", "[\"a\", \"b\"]")
                .provider_labels(labels(&[("run", "42")])),
        )
        .await
        .unwrap();
    let record = guard.record().clone();
    let name = record.name().unwrap().to_owned();
    assert!(name.starts_with("alice-rhel-9.4-"), "{name}");
    assert_eq!(
        record.hostname(),
        Some(format!("{name}.lab.example.com").as_str())
    );
    assert_eq!(record.get("type"), Some(&Value::from("host")));
    assert_eq!(
        record.get("tower_inventory"),
        Some(&Value::from("alice-lab"))
    );
    assert_eq!(
        record.get("os_distribution_version"),
        Some(&Value::from("9.4"))
    );
    assert_eq!(
        record.args().get("deploy_rhel_version"),
        Some(&Value::from("9.4"))
    );
    assert_eq!(record.state(), HostState::Ready);
    // `last`: the configure job's facts only.
    assert!(record.get("rack").is_none());

    let launches = e.sim.world().launch_requests();
    assert_eq!(launches.len(), 1);
    let launch = &launches[0];
    assert_eq!(launch.auth, format!("bearer:{ALICE_TOKEN}"));
    assert!(
        launch.body.get("inventory").is_none(),
        "the template's default inventory is used"
    );
    let vars = launch_vars(launch);
    assert_eq!(vars["workflow"], "deploy-rhel");
    assert_eq!(vars["deploy_rhel_version"], "9.4");
    assert_eq!(
        vars["extra_list"],
        json!(["a", "b"]),
        "JSON-looking strings are sent as structures"
    );
    assert_eq!(vars["_broker_record_id"], record.id().as_str());
    assert!(vars["_broker_origin"].as_str().is_some());
    assert_eq!(vars["provider_labels"], json!({"run": "42", "team": "qe"}));
    // Arguments the template does not declare itself.
    let custom = vars["_broker_extra_vars"].as_object().unwrap();
    assert!(custom.contains_key("extra_list") && custom.contains_key("workflow"));
    assert!(!custom.contains_key("deploy_rhel_version") && !custom.contains_key("host_type"));
    // Labels made in the template's organization and sent by id.
    let names = e.sim.world().label_names();
    assert!(
        names.contains(&"run=42".to_owned()) && names.contains(&"team=qe".to_owned()),
        "{names:?}"
    );
    assert_eq!(launch.body["labels"].as_array().map(Vec::len), Some(2));
    assert!(e.sim.vms().contains_key(&name));

    guard.checkin().await.unwrap();
    assert!(e.sim.vms().is_empty(), "remove-vm ran");
    assert!(e.records().is_empty());
    let launches = e.sim.world().launch_requests();
    let release = launch_vars(&launches[1]);
    assert_eq!(release["workflow"], "remove-vm");
    assert_eq!(release["source_vm"], name.as_str());
    assert!(release.get("_broker_record_id").is_none());
    let alice_lab = e.sim.world().inventory_id("alice-lab").unwrap();
    assert_eq!(
        launches[1].body["inventory"],
        json!(alice_lab),
        "released in the host's inventory"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_that_exist_are_reused_not_duplicated() {
    let e = env("");
    for _ in 0..2 {
        let g = e
            .broker
            .checkout_one(deploy().provider_labels(labels(&[("team", "qe")])))
            .await
            .unwrap();
        g.checkin().await.unwrap();
    }
    let names = e.sim.world().label_names();
    assert_eq!(
        names.iter().filter(|n| *n == "team=qe").count(),
        1,
        "{names:?}"
    );
    let launches = e.sim.world().launch_requests();
    assert_eq!(launches[0].body["labels"], launches[2].body["labels"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_merge_takes_every_child_job() {
    let e = env("");
    let g = e
        .broker
        .checkout_one(deploy().arg("artifacts", "merge"))
        .await
        .unwrap();
    assert_eq!(
        g.record().get("rack"),
        Some(&Value::from("r1")),
        "the provision job's fact is kept"
    );
    assert_eq!(
        g.record().get("stage"),
        Some(&Value::from("configure")),
        "newer jobs win"
    );
    g.checkin().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_by_name_with_exact_match_among_similar_names() {
    let e = env("");
    let g = e
        .broker
        .checkout_one(deploy().arg("tower_inventory", "alice-lab"))
        .await
        .unwrap();
    let id = e.sim.world().inventory_id("alice-lab").unwrap();
    assert_eq!(
        e.sim.world().launch_requests()[0].body["inventory"],
        json!(id)
    );
    assert_eq!(
        g.record().get("tower_inventory"),
        Some(&Value::from("alice-lab"))
    );
    g.checkin().await.unwrap();

    let err = e
        .broker
        .checkout_one(deploy().arg("tower_inventory", "lab"))
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 13);
    assert!(err.to_string().contains("ambiguous"), "{err}");
    let err = e
        .broker
        .checkout_one(deploy().arg("tower_inventory", "nowhere"))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("unknown AnsibleTower inventory `nowhere`"),
        "{err}"
    );
    let err = e
        .broker
        .checkout_one(CheckoutRequest::new().arg("workflow", "deploy-rhel-no-inventory"))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("has no default inventory"),
        "{err}"
    );
    assert!(e.records().is_empty());
    assert!(e.sim.vms().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_workflow_names_close_ones() {
    let e = env("");
    let err = e
        .broker
        .checkout_one(CheckoutRequest::new().arg("workflow", "deploy-rhle"))
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 13);
    let text = err.to_string();
    assert!(text.contains("workflow `deploy-rhle` not found"), "{text}");
    assert!(text.contains("deploy-rhel"), "close names listed: {text}");
    assert!(e.records().is_empty(), "no intent record is left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_rides_out_a_502_and_a_dropped_connection() {
    let e = env_with(
        SimOptions {
            running_polls: 3,
            ..SimOptions::default()
        },
        "",
    );
    e.sim
        .inject(Some("GET"), "/workflow_jobs/", FaultKind::Status(502), 2);
    e.sim
        .inject(Some("GET"), "/workflow_jobs/", FaultKind::Drop, 1);
    e.sim
        .inject(Some("GET"), "/workflow_jobs/", FaultKind::Status(403), 1);
    let g = e.broker.checkout_one(deploy()).await.unwrap();
    assert!(g.record().hostname().is_some());
    g.checkin().await.unwrap();
    assert!(e.sim.vms().is_empty());
    assert_eq!(unused_faults(&e.sim), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_gives_up_after_max_resilient_wait_and_cleans_up() {
    let e = env_with(
        SimOptions {
            running_polls: 2,
            ..SimOptions::default()
        },
        "  max_resilient_wait: 0.3\n",
    );
    // The launch succeeds, then every poll of the workflow job fails for a long while.
    e.sim
        .inject(Some("GET"), "/workflow_jobs/", FaultKind::Status(503), 60);
    let err = e.broker.checkout_one(deploy()).await.unwrap_err();
    assert_eq!(err.exit_code(), 7);
    assert!(
        err.to_string()
            .contains("maximum resilient wait time exceeded"),
        "{err}"
    );
    // The last failed poll is the cause.
    let broker_core::Error::CheckoutFailed { failures, .. } = &err else {
        panic!("{err:?}")
    };
    let cause = std::error::Error::source(&failures[0].1).map(|c| c.to_string());
    assert!(
        cause
            .as_deref()
            .is_some_and(|c| c.contains("/workflow_jobs/") && c.contains("503")),
        "{err:?}"
    );
    // Clean-up met the same outage, so the intent record stays for `broker recover`, naming the error.
    let records = e.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].state(), HostState::Pending);
    assert!(records[0].get("_broker_last_error").is_some());
    // The outage was served: polls met it until the wait ran out (far fewer than it could hit).
    let left = e.sim.unused_faults();
    assert!(
        left.len() == 1 && (1..=58).contains(&left[0].times),
        "{left:?}"
    );
    // Once the server answers again, recover (in a new process) finds the job by the record id it
    // carried and cancels it; nothing was made, nothing is left.
    e.sim.clear_faults();
    let fresh = e.fresh_broker("");
    let outcomes = fresh.recover(RecoverScope::Unfinished).await.unwrap();
    assert_eq!(outcomes.len(), 1);
    assert!(outcomes[0].result.is_ok(), "{:?}", outcomes[0].result);
    assert!(e.records().is_empty());
    assert!(e.sim.vms().is_empty(), "{:?}", e.sim.vms());
    assert_eq!(e.sim.world().job_statuses()[0].2, "canceled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_timeout_cancels_the_job() {
    let e = env_with(
        SimOptions {
            running_polls: 10_000,
            ..SimOptions::default()
        },
        "  workflow_timeout: 0.2\n",
    );
    let err = e.broker.checkout_one(deploy()).await.unwrap_err();
    assert_eq!(err.exit_code(), 7);
    assert!(err.to_string().contains("timed out"), "{err}");
    let statuses = e.sim.world().job_statuses();
    assert_eq!(statuses[0].2, "canceled", "{statuses:?}");
    assert!(e.records().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_workflow_reports_reasons_and_checks_in_the_host_it_left() {
    let e = env("");
    let err = e
        .broker
        .checkout_one(deploy().arg("sim_fail", "configure"))
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 7);
    let text = err.to_string();
    assert!(text.contains("No space left on device"), "{text}");
    assert!(
        !text.contains("report could not be sent"),
        "error_scope: last keeps the first reason only: {text}"
    );
    assert!(text.contains("configure-vm (Install packages)"), "{text}");
    assert!(text.contains("failed"), "{text}");
    assert!(
        text.contains("/#/jobs/workflow/"),
        "the job's UI address: {text}"
    );
    assert!(text.contains("was checked in"), "{text}");
    assert!(e.sim.vms().is_empty(), "the dangling VM was released");
    assert!(e.records().is_empty());
    let releases = e.sim.world().launches("remove-vm");
    assert_eq!(
        releases.len(),
        1,
        "released once, not again by the clean-up"
    );

    // A host left in an inventory given at checkout is released in that inventory.
    let err = e
        .broker
        .checkout_one(
            deploy()
                .arg("sim_fail", "configure")
                .arg("tower_inventory", "shared-lab"),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("was checked in"), "{err}");
    let shared = e.sim.world().inventory_id("shared-lab").unwrap();
    let release = e.sim.world().launch_requests().last().cloned().unwrap();
    assert_eq!(launch_vars(&release)["workflow"], "remove-vm");
    assert_eq!(release.body["inventory"], json!(shared));
    assert!(e.sim.vms().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_errored_job_reports_its_traceback() {
    let e = env("");
    let err = e
        .broker
        .checkout_one(deploy().arg("sim_fail", "provision"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("provision-vm: Traceback"), "{text}");
    assert!(text.contains("LabQuotaExceeded"), "{text}");
    assert!(
        e.sim.world().launches("remove-vm").is_empty(),
        "nothing was made, nothing released"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dangling_store_keeps_the_host_marked_failed() {
    let e = env("  dangling_behavior: store\n");
    let err = e
        .broker
        .checkout_one(deploy().arg("sim_fail", "configure"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("kept in the inventory"), "{err}");
    let records = e.records();
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!(r.get("deploy_failed"), Some(&Value::Bool(true)));
    assert_eq!(r.state(), HostState::Ready);
    let vm = r.name().unwrap().to_owned();
    assert!(e.sim.vms().contains_key(&vm));
    assert_eq!(r.get("tower_inventory"), Some(&Value::from("alice-lab")));
    assert!(
        r.hostname()
            .is_some_and(|h| h.ends_with(".lab.example.com"))
    );
    assert!(e.sim.world().launches("remove-vm").is_empty());
    // It checks in like any host.
    let outcomes = e.broker.checkin(records, false).await;
    assert!(outcomes[0].result.is_ok());
    assert!(e.sim.vms().is_empty());
    assert!(e.records().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dangling_prompt_without_a_terminal_stores() {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        // The question reads this process's stdin: when that is the terminal `cargo test` was typed
        // at, it would wait there for an answer. Run this test again in a child with no terminal.
        let out = broker_test_support::ChildGuard::spawn(
            std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "ansible_tower::tests::dangling_prompt_without_a_terminal_stores",
                ])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped()),
        )
        .wait_output(std::time::Duration::from_secs(90));
        let shown = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && shown.contains("1 passed"),
            "{shown}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let e = env("  dangling_behavior: prompt\n");
    let _ = e
        .broker
        .checkout_one(deploy().arg("sim_fail", "configure"))
        .await
        .unwrap_err();
    let records = e.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].get("deploy_failed"), Some(&Value::Bool(true)));
}

/// `dangling_behavior: prompt` asks the interaction the caller gave the broker, not a terminal: two
/// failed hosts, one question (answered `cA`, which answers for the second host too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dangling_prompt_asks_the_callers_interaction() {
    use broker_core::interaction::{Interaction, Question};
    #[derive(Default)]
    struct Answers(std::sync::Mutex<Vec<(String, String, Vec<String>)>>);
    impl Interaction for Answers {
        fn choose(&self, question: &Question<'_>) -> Option<String> {
            let answers = question.answers.iter().map(|a| (*a).to_owned()).collect();
            self.0.lock().unwrap().push((
                question.context.to_owned(),
                question.prompt.to_owned(),
                answers,
            ));
            Some("cA".to_owned())
        }
    }
    let e = env("  dangling_behavior: prompt\n");
    let asked = std::sync::Arc::new(Answers::default());
    e.broker.set_interaction(asked.clone());
    let err = e
        .broker
        .checkout(deploy().arg("sim_fail", "configure").count(2))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("it left was checked in"), "{err}");
    assert!(e.sim.vms().is_empty(), "{:?}", e.sim.vms());
    assert!(e.records().is_empty());
    let asked = asked.0.lock().unwrap().clone();
    assert_eq!(asked.len(), 1, "{asked:?}");
    let (context, prompt, answers) = &asked[0];
    assert!(
        context.starts_with("The failed workflow left host `")
            && context.contains("\nFailure reason: "),
        "{context}"
    );
    assert_eq!(
        prompt,
        "What would you like to do with this host? Checkin (c), Store (s), Checkin All (cA), Store All (sA) [c/s/cA/sA]: "
    );
    assert_eq!(answers, &["c", "s", "cA", "sA"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_scope_all_lists_every_reason() {
    let e = env("  error_scope: all\n");
    let err = e
        .broker
        .checkout_one(deploy().arg("sim_fail", "configure"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("configure-vm (Install packages): No space left on device")
            && text.contains("configure-vm (Report): the deployment report could not be sent"),
        "{text}"
    );
    // A job template's failed job without failed events: the tail of its output is the reason.
    let err = e
        .broker
        .execute(
            CheckoutRequest::new()
                .arg("job_template", "run-command")
                .arg("sim_fail", "command"),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ran uptime"), "{err}");
    assert!(err.to_string().contains("/#/jobs/playbook/"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_without_broker_facts_is_a_clear_error_and_leaves_nothing() {
    let e = env("");
    let err = e
        .broker
        .checkout_one(deploy().arg("sim_omit_artifacts", "true"))
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 7);
    assert!(err.to_string().contains("no `_broker_facts`"), "{err}");
    assert!(e.records().is_empty());
    assert!(
        e.sim.vms().is_empty(),
        "the clean-up released the VM by its vm_name artifact"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_runs_the_extend_workflow_with_the_hosts_name() {
    let e = env("  new_expire_time: '+7200'\n");
    let g = e.broker.checkout_one(deploy()).await.unwrap();
    let name = g.record().name().unwrap().to_owned();
    let outcomes = e
        .broker
        .extend(vec![g.record().clone()], Mapping::new())
        .await;
    assert!(outcomes[0].result.is_ok(), "{:?}", outcomes[0].result);
    assert_eq!(e.sim.vms()[&name].expire, "+7200", "the setting's default");
    let mut args = Mapping::new();
    args.insert("new_expire_time".into(), "+3600".into());
    let outcomes = e.broker.extend(vec![g.record().clone()], args).await;
    assert!(outcomes[0].result.is_ok());
    assert_eq!(e.sim.vms()[&name].expire, "+3600");
    let extend = e.sim.world().launches("extend-vm");
    assert_eq!(extend[1]["target_vm"], name.as_str());
    assert_eq!(extend[1]["workflow"], "extend-vm");
    let launch = e.sim.world().launch_requests().last().cloned().unwrap();
    assert_eq!(
        launch.body["inventory"],
        json!(e.sim.world().inventory_id("alice-lab").unwrap())
    );
    g.checkin().await.unwrap();
    // A host that is gone: the workflow's failure is reported.
    let mut gone = HostRecord::from_mapping(Mapping::new());
    gone.set("name", "vanished-vm");
    gone.set("_broker_provider", "AnsibleTower");
    let outcomes = e.broker.extend(vec![gone], Mapping::new()).await;
    let err = outcomes[0].result.as_ref().unwrap_err();
    assert!(
        err.to_string().contains("VM vanished-vm not found"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_releases_what_a_crashed_checkout_made() {
    let e = env("");
    // A checkout that "crashed" after AWX made the host: its intent record is still pending, and
    // only the record id it sent links the job to it.
    let pending = HostRecord::pending("AnsibleTower", None, Mapping::new());
    e.broker
        .inventory()
        .put(std::slice::from_ref(&pending))
        .unwrap();
    e.broker
        .execute(deploy().arg("_broker_record_id", pending.id().as_str()))
        .await
        .unwrap();
    assert_eq!(e.sim.vms().len(), 1);
    let fresh = e.fresh_broker("");
    let outcomes = fresh.recover(RecoverScope::Unfinished).await.unwrap();
    assert_eq!(outcomes.len(), 1);
    assert!(outcomes[0].result.is_ok(), "{:?}", outcomes[0].result);
    assert!(e.sim.vms().is_empty(), "the host the job made was released");
    assert!(e.records().is_empty());
    // A pending record whose launch never reached AWX is simply dropped.
    let never = HostRecord::pending("AnsibleTower", None, Mapping::new());
    e.broker
        .inventory()
        .put(std::slice::from_ref(&never))
        .unwrap();
    let outcomes = fresh.recover(RecoverScope::Unfinished).await.unwrap();
    assert!(outcomes[0].result.is_ok());
    assert!(e.records().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_login_makes_one_temporary_token_and_deletes_it() {
    let sim = Sim::start();
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "AnsibleTower:\n  username: alice\n  password: {ALICE_PASSWORD}\n  workflow_poll_interval: 0.01\n  \
         instances:\n    one:\n      base_url: {url}\n      default: true\n    two:\n      base_url: {url}\n",
        url = sim.url()
    );
    {
        let broker =
            Broker::new(Settings::from_yaml(dir.path(), &yaml).unwrap(), registry()).unwrap();
        let a = broker.checkout_one(deploy()).await.unwrap();
        let b = broker
            .checkout_one(deploy().arg("AnsibleTower", "two"))
            .await
            .unwrap();
        assert_eq!(b.record().instance(), Some("two"));
        let temp: Vec<_> = sim
            .world()
            .tokens
            .iter()
            .filter(|t| t.description.starts_with("Broker temp "))
            .cloned()
            .collect();
        assert_eq!(temp.len(), 1, "both instances share one token");
        let bearer = format!("bearer:{}", temp[0].token);
        let requests = sim.requests();
        assert!(
            requests
                .iter()
                .filter(|r| r.path.ends_with("/launch/"))
                .all(|r| r.auth == bearer)
        );
        assert_eq!(
            requests
                .iter()
                .filter(|r| r.auth.starts_with("basic:"))
                .count(),
            1,
            "the password is sent once, to make the token"
        );
        a.checkin().await.unwrap();
        b.checkin().await.unwrap();
    }
    let world = sim.world();
    assert!(
        world
            .tokens
            .iter()
            .all(|t| !t.description.starts_with("Broker temp "))
    );
    assert_eq!(world.deleted_tokens.len(), 1);
    assert!(world.deleted_tokens[0].starts_with("Broker temp "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_login_falls_back_to_basic_auth_when_tokens_are_refused() {
    let sim = Sim::start_with(SimOptions {
        refuse_tokens: true,
        ..SimOptions::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "AnsibleTower:\n  base_url: {}\n  username: alice\n  password: {ALICE_PASSWORD}\n  workflow_poll_interval: 0.01\n",
        sim.url()
    );
    let broker = Broker::new(Settings::from_yaml(dir.path(), &yaml).unwrap(), registry()).unwrap();
    let g = broker.checkout_one(deploy()).await.unwrap();
    g.checkin().await.unwrap();
    assert!(
        sim.world()
            .launch_requests()
            .iter()
            .all(|r| r.auth == "basic:alice")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_an_authentication_error() {
    let sim = Sim::start();
    let dir = tempfile::tempdir().unwrap();
    for auth in ["token: not-a-token", "username: alice\n  password: wrong"] {
        let yaml = format!("AnsibleTower:\n  base_url: {}\n  {auth}\n", sim.url());
        let broker =
            Broker::new(Settings::from_yaml(dir.path(), &yaml).unwrap(), registry()).unwrap();
        let err = broker.checkout_one(deploy()).await.unwrap_err();
        assert_eq!(err.exit_code(), 5, "{err}");
        let shown = broker_core::error::chain(&err);
        assert!(shown.contains("401"), "{shown}");
        assert!(
            !shown.contains("not-a-token") && !shown.contains("wrong"),
            "{shown}"
        );
        assert!(broker.inventory().list().unwrap().is_empty());
    }
    let yaml = format!("AnsibleTower:\n  base_url: {}\n", sim.url());
    let broker = Broker::new(Settings::from_yaml(dir.path(), &yaml).unwrap(), registry()).unwrap();
    let err = broker.checkout_one(deploy()).await.unwrap_err();
    assert_eq!(err.exit_code(), 8, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aap25_is_found_by_probing_or_by_setting() {
    for extra in ["", "  aap_version: '2.5'\n"] {
        let e = env_with(
            SimOptions {
                aap25: true,
                ..SimOptions::default()
            },
            extra,
        );
        let g = e.broker.checkout_one(deploy()).await.unwrap();
        g.checkin().await.unwrap();
        let launches = e.sim.world().launch_requests();
        assert!(
            launches[0]
                .path
                .starts_with("/api/controller/v2/workflow_job_templates/")
        );
        assert!(e.sim.vms().is_empty());
        let root_probes = e
            .sim
            .requests()
            .iter()
            .filter(|r| r.path == "/api/")
            .count();
        assert_eq!(root_probes, usize::from(extra.is_empty()));
    }
    // A legacy server named 2.4 is not probed either.
    let e = env("  aap_version: '2.4'\n");
    e.broker
        .checkout_one(deploy())
        .await
        .unwrap()
        .checkin()
        .await
        .unwrap();
    assert!(e.sim.requests().iter().all(|r| r.path != "/api/"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_reads_every_page_and_replaces_only_its_instance() {
    let sim = Sim::start();
    {
        let mut w = sim.world();
        let big = w.inventory("alice-big");
        for n in 0..450 {
            let status = match n {
                7 => 403,
                8 => 404,
                _ => 200,
            };
            w.host(
                big,
                &format!("vm-{n:03}"),
                json!({"fqdn": format!("vm-{n:03}.lab.example.com"), "ansible_host": "192.0.2.9"}),
                json!({"ansible_distribution": "RedHat", "ansible_distribution_version": "9.4",
                       "_broker_args": {"workflow": "deploy-rhel", "empty": ""},
                       "_broker_facts": {"owner": "alice", "blank": ""}}),
                status,
            );
        }
        let other = w.inventory("bob-lab");
        w.host(other, "bob-vm", json!({}), json!({}), 200);
    }
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "AnsibleTower:\n  token: {ALICE_TOKEN}\n  instances:\n    a:\n      base_url: {url}\n      default: true\n    b:\n      base_url: {url}\n",
        url = sim.url()
    );
    let broker = Broker::new(Settings::from_yaml(dir.path(), &yaml).unwrap(), registry()).unwrap();
    let mut other = HostRecord::from_mapping(Mapping::new());
    other.set("name", "b-host");
    other.set("hostname", "b-host.example.com");
    other.set("_broker_provider", "AnsibleTower");
    other.set("_broker_provider_instance", "b");
    let mut stale = HostRecord::from_mapping(Mapping::new());
    stale.set("name", "gone-vm");
    stale.set("_broker_provider", "AnsibleTower");
    stale.set("_broker_provider_instance", "a");
    broker.inventory().put(&[other, stale]).unwrap();

    // The stale record is the instance's only one: removing it needs `--force`.
    let report = broker
        .sync_inventory_forced("AnsibleTower::a")
        .await
        .unwrap();
    assert_eq!(report.added, 450, "{report:?}");
    assert_eq!(report.removed_hosts, ["gone-vm"]);
    let records = broker.inventory().list().unwrap();
    assert_eq!(records.len(), 451);
    assert!(
        records.iter().any(|r| r.name() == Some("b-host")),
        "instance b's host stays"
    );
    assert!(records.iter().all(|r| r.name() != Some("bob-vm")));
    let big = sim.world().inventory_id("alice-big").unwrap();
    let pages: Vec<Option<String>> = sim
        .requests()
        .iter()
        .filter(|r| r.path.ends_with(&format!("/inventories/{big}/hosts/")))
        .map(|r| r.param("page").map(str::to_owned))
        .collect();
    assert_eq!(
        pages,
        [None, Some("2".into()), Some("3".into())],
        "every page of 450 hosts was read"
    );
    let vm = records.iter().find(|r| r.name() == Some("vm-001")).unwrap();
    assert_eq!(vm.hostname(), Some("vm-001.lab.example.com"));
    assert_eq!(vm.ip(), Some("192.0.2.9"));
    assert_eq!(vm.get("tower_inventory"), Some(&Value::from("alice-big")));
    assert_eq!(vm.get("os_distribution"), Some(&Value::from("RedHat")));
    assert_eq!(vm.get("owner"), Some(&Value::from("alice")));
    assert!(vm.get("blank").is_none());
    assert_eq!(vm.instance(), Some("a"));
    let args = vm.get("_broker_args").and_then(Value::as_mapping).unwrap();
    assert!(args.contains_key("workflow") && !args.contains_key("empty"));
    // Hosts whose facts cannot be read are still listed.
    let forbidden = records.iter().find(|r| r.name() == Some("vm-007")).unwrap();
    assert_eq!(forbidden.hostname(), Some("vm-007.lab.example.com"));
    assert!(records.iter().any(|r| r.name() == Some("vm-008")));

    // `@ll` sees every inventory.
    let report = broker.sync_inventory("AnsibleTower:@ll::a").await.unwrap();
    assert_eq!(report.added, 1, "bob's host: {report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_lists_templates_inventories_and_workflow_results() {
    let e = env("  results_limit: 3\n");
    let ask = |pairs: &[(&str, Value)]| -> Mapping {
        pairs
            .iter()
            .map(|(k, v)| (Value::from(*k), v.clone()))
            .collect()
    };
    let help = |q: Mapping| {
        let broker = &e.broker;
        async move { broker.provider_help("AnsibleTower", None, &q).await }
    };
    let all = help(ask(&[
        ("workflows", Value::Bool(true)),
        ("results_limit", Value::from(50)),
    ]))
    .await
    .unwrap();
    let names: Vec<&str> = all
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(names.contains(&"deploy-rhel") && names.contains(&"remove-vm"));
    assert!(
        !names.contains(&"admin-only"),
        "only workflows the user may start"
    );
    let limited = help(ask(&[("workflows", Value::Bool(true))]))
        .await
        .unwrap();
    assert_eq!(
        limited.as_sequence().unwrap().len(),
        3,
        "results_limit from the settings"
    );
    let filtered = help(ask(&[
        ("workflows", Value::Bool(true)),
        ("results_filter", Value::from("@res.startswith('deploy')")),
    ]))
    .await
    .unwrap();
    assert!(
        filtered
            .as_sequence()
            .unwrap()
            .iter()
            .all(|v| v.as_str().unwrap().starts_with("deploy"))
    );

    let wf = help(ask(&[("workflow", Value::from("deploy-rhel"))]))
        .await
        .unwrap();
    assert_eq!(
        wf.get("description"),
        Some(&Value::from("Deploy a RHEL VM in the lab"))
    );
    assert_eq!(wf.get("inventory"), Some(&Value::from("alice-lab")));
    assert_eq!(
        wf.get("extra_vars")
            .and_then(|v| v.get("deploy_rhel_version")),
        Some(&Value::from("9.4"))
    );
    // No extra vars at all (upstream #481) is an empty mapping, not an error.
    let bare = help(ask(&[("workflow", Value::from("list-templates"))]))
        .await
        .unwrap();
    assert_eq!(
        bare.get("extra_vars"),
        Some(&Value::Mapping(Mapping::new()))
    );

    let jts = help(ask(&[("job_templates", Value::Bool(true))]))
        .await
        .unwrap();
    assert_eq!(jts, Value::Sequence(vec![Value::from("run-command")]));
    let jt = help(ask(&[("job_template", Value::from("run-command"))]))
        .await
        .unwrap();
    assert_eq!(
        jt.get("extra_vars").and_then(|v| v.get("command")),
        Some(&Value::from("uptime"))
    );

    let invs = help(ask(&[
        ("inventories", Value::Bool(true)),
        ("results_limit", Value::from(50)),
    ]))
    .await
    .unwrap();
    let invs: Vec<&str> = invs
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        invs.contains(&"alice-lab") && !invs.contains(&"alice-smart"),
        "{invs:?}"
    );
    let inv = help(ask(&[("inventory", Value::from("shared-lab"))]))
        .await
        .unwrap();
    assert_eq!(inv.get("name"), Some(&Value::from("shared-lab")));

    let templates = help(ask(&[
        ("templates", Value::Bool(true)),
        ("results_limit", Value::from(50)),
    ]))
    .await
    .unwrap();
    assert_eq!(
        templates,
        serde_yaml::from_str::<Value>("[rhel-9.4, rhel-8.10, rhel-10.0, fedora-41]").unwrap(),
        "sorted descending"
    );
    let flavors = help(ask(&[("flavors", Value::Bool(true))])).await.unwrap();
    assert_eq!(flavors.as_sequence().unwrap().len(), 3);

    let err = help(ask(&[("workflow", Value::from("nope"))]))
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 13);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_returns_the_job_or_its_artifacts() {
    let e = env("");
    let job = e
        .broker
        .execute(
            CheckoutRequest::new()
                .arg("job_template", "run-command")
                .arg("command", "df -h"),
        )
        .await
        .unwrap();
    assert_eq!(job.get("status"), Some(&Value::from("successful")));
    assert!(
        job.get("ui_url")
            .and_then(Value::as_str)
            .unwrap()
            .contains("/#/jobs/playbook/")
    );
    let artifacts = e
        .broker
        .execute(
            CheckoutRequest::new()
                .arg("job_template", "run-command")
                .arg("command", "df -h")
                .arg("artifacts", "last"),
        )
        .await
        .unwrap();
    assert_eq!(
        artifacts.get("command_output"),
        Some(&Value::from("ran df -h"))
    );
}

/// Exact requests, checked with mockito: the temporary token's creation (Basic auth, once) and its
/// deletion (with itself) when the provider goes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_token_requests_are_exact() {
    use mockito::Matcher;
    let mut server = mockito::Server::new_async().await;
    let root = server
        .mock("GET", "/api/")
        .with_header("content-type", "application/json")
        .with_body(r#"{"available_versions": {"v2": "/api/v2/"}, "current_version": "/api/v2/"}"#)
        .expect(1)
        .create_async()
        .await;
    // "alice:s3cret" in base64.
    let create = server
        .mock("POST", "/api/v2/tokens/")
        .match_header("authorization", "Basic YWxpY2U6czNjcmV0")
        .match_body(Matcher::AllOf(vec![
            Matcher::PartialJson(json!({"application": null, "scope": "write"})),
            Matcher::Regex(r#""description":"Broker temp [a-z]{10}""#.into()),
        ]))
        .with_status(201)
        .with_header("content-type", "application/json")
        .with_body(r#"{"id": 42, "token": "temp-token-42"}"#)
        .expect(1)
        .create_async()
        .await;
    let me = server
        .mock("GET", "/api/v2/me/")
        .match_header("authorization", "Bearer temp-token-42")
        .with_header("content-type", "application/json")
        .with_body(r#"{"count": 1, "results": [{"id": 2, "username": "alice"}]}"#)
        .expect(1)
        .create_async()
        .await;
    let wfjts = server
        .mock("GET", "/api/v2/workflow_job_templates/")
        .match_header("authorization", "Bearer temp-token-42")
        .match_query(Matcher::AllOf(vec![
            Matcher::UrlEncoded("order_by".into(), "name".into()),
            Matcher::UrlEncoded("page_size".into(), "200".into()),
        ]))
        .with_header("content-type", "application/json")
        .with_body(r#"{"count": 1, "next": null, "results": [{"name": "deploy-rhel"}]}"#)
        .expect(1)
        .create_async()
        .await;
    let delete = server
        .mock("DELETE", "/api/v2/tokens/42/")
        .match_header("authorization", "Bearer temp-token-42")
        .with_status(204)
        .expect(1)
        .create_async()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "AnsibleTower:\n  base_url: {}\n  username: alice\n  password: s3cret\n",
        server.url()
    );
    {
        let broker =
            Broker::new(Settings::from_yaml(dir.path(), &yaml).unwrap(), registry()).unwrap();
        let mut q = Mapping::new();
        q.insert("workflows".into(), Value::Bool(true));
        let list = broker
            .provider_help("AnsibleTower", None, &q)
            .await
            .unwrap();
        assert_eq!(list, Value::Sequence(vec![Value::from("deploy-rhel")]));
    }
    for m in [root, create, me, wfjts, delete] {
        m.assert_async().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkin_from_a_guard_dropped_without_a_runtime_of_its_own() {
    // A guard dropped on a plain thread (no runtime) still checks its host in: the provider's HTTP
    // runs on its own runtime, not the one that made the connection pool.
    let e = env("");
    let g = e.broker.checkout_one(deploy()).await.unwrap();
    std::thread::spawn(move || drop(g)).join().unwrap();
    assert!(e.sim.vms().is_empty());
    assert!(e.records().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_checked_against_the_system_store_a_ca_bundle_or_not_at_all() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/tls");
    let read = |name: &str| std::fs::read(format!("{fixtures}/{name}")).unwrap();
    let sim = Sim::start_with(SimOptions {
        tls: Some((read("server.pem"), read("server.key"))),
        ..SimOptions::default()
    });
    assert!(sim.url().starts_with("https://"));
    let dir = tempfile::tempdir().unwrap();
    let broker_with = |verify: &str| {
        let yaml = settings(&sim.url(), verify);
        Broker::new(Settings::from_yaml(dir.path(), &yaml).unwrap(), registry()).unwrap()
    };
    // The test CA is in no system store: refused, saying why.
    let err = broker_with("").checkout_one(deploy()).await.unwrap_err();
    assert_eq!(err.exit_code(), 7);
    assert!(
        broker_core::error::chain(&err)
            .to_lowercase()
            .contains("certificate"),
        "{err:?}"
    );
    // Trusted through `verify: CA bundle`, or not checked with `verify: false`.
    for verify in [
        format!("  verify: {fixtures}/ca.pem\n"),
        "  verify: false\n".to_owned(),
    ] {
        let broker = broker_with(&verify);
        let g = broker.checkout_one(deploy()).await.unwrap();
        g.checkin().await.unwrap();
    }
    assert!(sim.vms().is_empty());
    let err = broker_with("  verify: /nonexistent/ca.pem\n")
        .checkout_one(deploy())
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 8, "{err}");
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    // Why it cannot be read is the cause, not part of the message.
    let cause = std::error::Error::source(&err)
        .and_then(|c| c.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind);
    assert_eq!(cause, Some(std::io::ErrorKind::NotFound), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_to_another_origin_are_refused_and_get_no_credentials() {
    let elsewhere = Sim::start();
    let e = env_with(
        SimOptions {
            max_page_size: 2,
            ..SimOptions::default()
        },
        "",
    );
    {
        let mut w = e.sim.world();
        for name in ["alice-a", "alice-b", "alice-c"] {
            w.inventory(name);
        }
        w.link_origin = Some(elsewhere.url());
    }

    // `next`: the second page of the inventories is elsewhere.
    let err = e.broker.sync_inventory("AnsibleTower").await.unwrap_err();
    let text = broker_core::error::chain(&err);
    assert_eq!(err.exit_code(), 7, "{text}");
    assert!(
        text.contains(&format!(
            "refusing to follow `{}/api/v2/inventories/",
            elsewhere.url()
        )) && text.contains("page=2")
            && text.contains(&format!("leads away from `{}`", e.sim.url())),
        "{text}"
    );

    // `related`: the template's launch link is elsewhere; nothing is launched, nothing is kept.
    let err = e.broker.checkout_one(deploy()).await.unwrap_err();
    let text = broker_core::error::chain(&err);
    assert!(
        text.contains(&format!(
            "refusing to follow `{}/api/v2/workflow_job_templates/",
            elsewhere.url()
        )) && text.contains("/launch/`"),
        "{text}"
    );
    assert!(e.sim.world().launch_requests().is_empty());
    assert!(e.records().is_empty());

    assert!(
        elsewhere.requests().is_empty(),
        "the other origin was never asked: {:?}",
        elsewhere.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_links_to_the_configured_origin_are_followed() {
    let e = env_with(
        SimOptions {
            max_page_size: 2,
            ..SimOptions::default()
        },
        "",
    );
    {
        let mut w = e.sim.world();
        let inv = w.inventory("alice-pages");
        for n in 0..5 {
            w.host(inv, &format!("vm-{n}"), json!({}), json!({}), 200);
        }
        let own = e.sim.url();
        w.link_origin = Some(own);
    }
    let report = e.broker.sync_inventory("AnsibleTower").await.unwrap();
    assert_eq!(report.added, 5, "{report:?}");
    let g = e.broker.checkout_one(deploy()).await.unwrap();
    g.checkin().await.unwrap();
    assert!(e.sim.vms().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_followed_within_the_configured_origin_only() {
    let elsewhere = Sim::start();
    let e = env("");
    e.sim.inject(
        Some("GET"),
        "/api/v2/me/",
        FaultKind::Redirect(format!("{}/api/v2/me/", elsewhere.url())),
        1,
    );
    let err = e.broker.checkout_one(deploy()).await.unwrap_err();
    let text = broker_core::error::chain(&err);
    assert!(
        text.contains(&format!(
            "refusing to follow `{}/api/v2/me/`",
            elsewhere.url()
        )),
        "{text}"
    );
    assert!(
        elsewhere.requests().is_empty(),
        "{:?}",
        elsewhere.requests()
    );
    assert!(e.records().is_empty());
    assert_eq!(unused_faults(&e.sim), Vec::<String>::new());

    // The same server under another path: followed, with the credentials.
    let e = env("");
    e.sim.inject(
        Some("GET"),
        "/api/v2/me/",
        FaultKind::Redirect("/api/v2/me/?moved=1".into()),
        1,
    );
    let g = e.broker.checkout_one(deploy()).await.unwrap();
    g.checkin().await.unwrap();
    let me: Vec<_> = e
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/v2/me/")
        .collect();
    assert_eq!(me.len(), 2, "{me:?}");
    assert_eq!(me[1].param("moved"), Some("1"));
    assert_eq!(me[1].auth, format!("bearer:{ALICE_TOKEN}"));
    assert_eq!(unused_faults(&e.sim), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_in_base_url_logs_in_and_is_never_shown() {
    let sim = Sim::start();
    let with_login = sim
        .url()
        .replace("http://", &format!("http://alice:{ALICE_PASSWORD}@"));
    let dir = tempfile::tempdir().unwrap();
    let yaml =
        format!("AnsibleTower:\n  base_url: {with_login}/\n  workflow_poll_interval: 0.01\n");
    let broker = Broker::new(Settings::from_yaml(dir.path(), &yaml).unwrap(), registry()).unwrap();
    let guard = broker.checkout_one(deploy()).await.unwrap();
    assert!(
        sim.requests().iter().any(|r| r.auth == "basic:alice"),
        "the URL's user and password are the login"
    );
    let err = broker
        .checkout_one(CheckoutRequest::new().arg("workflow", "deploy-rhle"))
        .await
        .unwrap_err();
    let shown = broker_core::error::chain(&err);
    assert!(shown.contains("deploy-rhel"), "{shown}");
    let inventory = std::fs::read_to_string(dir.path().join("inventory.yaml")).unwrap();
    for text in [
        shown,
        inventory,
        format!("{broker:?}"),
        format!("{guard:?}"),
    ] {
        assert!(!text.contains(ALICE_PASSWORD), "{text}");
    }
    guard.checkin().await.unwrap();

    // A server that does not answer, and a base_url that does not parse: the errors name the
    // address without the password.
    for base_url in [
        format!("http://alice:{ALICE_PASSWORD}@127.0.0.1:9/"),
        format!("http://alice:{ALICE_PASSWORD}@tower:port/"),
    ] {
        let yaml = format!("AnsibleTower:\n  base_url: {base_url}\n  token: {ALICE_TOKEN}\n");
        let broker =
            Broker::new(Settings::from_yaml(dir.path(), &yaml).unwrap(), registry()).unwrap();
        let err = broker.checkout_one(deploy()).await.unwrap_err();
        let shown = broker_core::error::chain(&err);
        assert!(!shown.contains(ALICE_PASSWORD), "{shown}");
        assert!(
            shown.contains("127.0.0.1:9") || shown.contains("***@tower:port"),
            "{shown}"
        );
    }
}

/// The Python broker's section reads as it is, every key known; a typo is named with the key meant,
/// and a value of the wrong kind with its key and line, before anything is asked of AWX.
#[test]
fn settings_read_the_python_brokers_section_and_name_what_is_wrong() {
    use super::{Dangling, TowerSection};
    use broker_core::settings::ProviderSettings;
    let upstream = Settings::from_yaml(
        "/b",
        include_str!("../../../tests/fixtures/upstream_settings.yaml"),
    )
    .unwrap();
    for instance in ["rhv", "osp"] {
        let config = upstream
            .provider_config(super::NAME, Some(instance))
            .unwrap();
        assert_eq!(TowerSection::problems(&config), [], "{instance}");
        let section = TowerSection::from_section(&config).unwrap();
        let settings = section.settings(&config);
        assert_eq!(settings.results_limit, 50);
        assert_eq!(settings.dangling, Dangling::Checkin);
        assert!(section.connect_options(&config).is_ok());
    }
    let read = |yaml: &str| {
        let config = Settings::from_yaml("/b", yaml)
            .unwrap()
            .provider_config(super::NAME, None)
            .unwrap();
        let section = TowerSection::from_section(&config).map_err(|e| e.to_string())?;
        let settings = section.settings(&config);
        let connect = section
            .connect_options(&config)
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((settings, connect, TowerSection::problems(&config)))
    };
    let (settings, connect, problems) = read(
        "AnsibleTower:\n  base_url: https://t/\n  token: 12345\n  results_limit: '7'\n  \
         dangling_behavior: Store\n  verify: ca.pem\n  workflow_tiemout: 5\n",
    )
    .unwrap();
    assert_eq!(settings.results_limit, 7);
    assert_eq!(settings.dangling, Dangling::Store);
    assert!(
        matches!(&connect.verify, super::Verify::Bundle(p) if p == std::path::Path::new("/b/ca.pem"))
    );
    assert_eq!(
        problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [
            "line 7: `AnsibleTower.workflow_tiemout`: unknown key, ignored; did you mean `workflow_timeout`? rename or remove it"
        ]
    );
    for (line, expected) in [
        (
            "dangling_behavior: maybe",
            "`AnsibleTower.dangling_behavior` (broker_settings.yaml line 4): `maybe` is not one of checkin, store, prompt",
        ),
        (
            "verify: [a]",
            "`AnsibleTower.verify` (broker_settings.yaml line 4): `- a` is not true, false or a CA bundle path",
        ),
        (
            "results_limit: lots",
            "`AnsibleTower.results_limit` (broker_settings.yaml line 4): `lots` is not a whole number",
        ),
    ] {
        let err = read(&format!(
            "AnsibleTower:\n  base_url: https://t/\n  token: t\n  {line}\n"
        ))
        .unwrap_err();
        assert_eq!(err, format!("configuration error: {expected}"));
    }
    let err = read("AnsibleTower:\n  token: t\n").unwrap_err();
    assert_eq!(
        err,
        "configuration error: AnsibleTower needs `base_url`; set it in broker_settings.yaml or BROKER_ANSIBLETOWER__BASE_URL"
    );
}

/// AWX hosts carry no broker record identity (it travels with the job, not the host), so an orphan
/// reap lists them and takes none for an orphan: it never removes a host another broker directory
/// of the same user holds (docs/leases.md, "Orphans").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphan_reap_never_picks_an_awx_host() {
    let e = env("");
    let g = e.broker.checkout_one(deploy()).await.unwrap();
    let kept = g.keep();
    e.broker.inventory().remove(&[kept.id()]).unwrap();
    assert!(e.records().is_empty());
    let reaped = e
        .broker
        .reap_orphans("AnsibleTower", std::time::Duration::ZERO, false)
        .await
        .unwrap();
    assert!(reaped.is_empty(), "{reaped:?}");
    assert_eq!(e.sim.vms().len(), 1, "{:?}", e.sim.vms());
    // Not for want of a listing: a sync of the same provider adopts the host.
    let report = e.broker.sync_inventory("AnsibleTower:@ll").await.unwrap();
    assert_eq!(report.added, 1, "{report:?}");
}
