//! The Beaker hub simulator (`tests/beaker-sim`) that the Beaker provider's tests run against,
//! checked by a client someone else wrote: the official `bkr` (PyPI `beaker-client`).

use std::path::Path;
use std::process::{Command, Stdio};

use beaker_sim::{FaultKind, Sim};
use broker_test_support::ChildGuard;

use crate::util::DEADLINE;

/// A job for one system, kept for the user once its tasks pass.
const RESERVING_JOB: &str = r#"<job retention_tag="scratch">
  <whiteboard>bkr check</whiteboard>
  <recipeSet priority="Normal">
    <recipe whiteboard="the only recipe">
      <distroRequires><and><distro_name op="=" value="RHEL-9.4.0"/><distro_arch op="=" value="x86_64"/></and></distroRequires>
      <hostRequires><and><hostname op="=" value="sys03.lab.example.com"/></and></hostRequires>
      <task name="/distribution/check-install" role="STANDALONE"/>
      <task name="/distribution/reservesys" role="STANDALONE"><params><param name="RESERVETIME" value="3600"/></params></task>
      <reservesys duration="3600"/>
    </recipe>
  </recipeSet>
</job>"#;

/// A job whose second task fails, with no reservation.
const FAILING_JOB: &str = r#"<job><whiteboard>bkr failing</whiteboard><recipeSet><recipe>
  <distroRequires><distro_name op="=" value="RHEL-9.4.0"/></distroRequires><hostRequires/>
  <task name="/distribution/check-install" role="STANDALONE"/>
  <task name="/qe/smoke" role="STANDALONE"><params><param name="SIM_RESULT" value="Fail"/></params></task>
</recipe></recipeSet></job>"#;

/// What one `bkr` command did.
struct Bkr {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `bkr ARGS` with the client configuration `conf` (hub, password login).
fn bkr(command: &str, conf: &Path, args: &[&str]) -> Bkr {
    let out = ChildGuard::spawn(
        Command::new(command)
            .args(args)
            .env("BEAKER_CLIENT_CONF", conf)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .wait_output(DEADLINE);
    Bkr {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `bkr ARGS` and returns its output, failing the test when it fails.
fn bkr_ok(command: &str, conf: &Path, args: &[&str]) -> String {
    let run = bkr(command, conf, args);
    assert!(
        run.ok,
        "bkr {args:?} failed:\n{}\n{}",
        run.stdout, run.stderr
    );
    run.stdout
}

/// The value of attribute `name` of the first element `element` of `xml`.
fn attr(xml: &str, element: &str, name: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(xml.trim()).ok()?;
    let node = doc.descendants().find(|n| n.has_tag_name(element))?;
    node.attribute(name).map(str::to_owned)
}

/// `bkr` logs in with a password, submits a job, follows its results from `Queued` through
/// `Running` to `Reserved`, reads the reserved system's details, lists the user's jobs and systems,
/// clones the job and cancels both, which returns the system; a failing task fails its job; a
/// wrong password and an injected 500 are errors. scripts/setup-beaker-client installs `bkr`;
/// without it this fails unless `BROKER_ALLOW_SKIP=1` is set.
#[test]
fn bkr_speaks_to_the_simulator() {
    let Some(command) = broker_test_support::bkr() else {
        return;
    };
    let sim = Sim::start();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("client.conf");
    let write_conf = |password: &str| {
        std::fs::write(
            &conf,
            format!(
                "HUB_URL = \"{}\"\nAUTH_METHOD = \"password\"\nUSERNAME = \"{}\"\nPASSWORD = \"{password}\"\n",
                sim.url(),
                beaker_sim::USER
            ),
        )
        .unwrap();
    };
    write_conf(beaker_sim::PASSWORD);
    let job_file = dir.path().join("job.xml");
    std::fs::write(&job_file, RESERVING_JOB).unwrap();
    let run = |args: &[&str]| bkr_ok(&command, &conf, args);

    let me: serde_json::Value = serde_json::from_str(&run(&["whoami"])).unwrap();
    assert_eq!(me["username"], "alice");

    assert_eq!(
        run(&["job-submit", job_file.to_str().unwrap()]).trim(),
        "Submitted: ['J:1']"
    );
    {
        let w = sim.world();
        let job = w.job(1).unwrap();
        assert_eq!(
            (job.owner.as_str(), job.whiteboard.as_str()),
            ("alice", "bkr check")
        );
        assert_eq!(job.status(), "Queued");
    }
    // Each read moves the job on: Queued, then Running on the system asked for, then Reserved.
    let mut seen = Vec::new();
    for _ in 0..3 {
        let results = run(&["job-results", "--prettyxml", "J:1"]);
        seen.push((
            attr(&results, "job", "status").unwrap(),
            attr(&results, "job", "result").unwrap(),
            attr(&results, "recipe", "system"),
        ));
    }
    let sys03 = Some("sys03.lab.example.com".to_owned());
    assert_eq!(
        seen,
        vec![
            ("Queued".into(), "New".into(), None),
            ("Running".into(), "New".into(), sys03.clone()),
            ("Reserved".into(), "Pass".into(), sys03.clone()),
        ]
    );
    let details: serde_json::Value = serde_json::from_str(&run(&[
        "system-details",
        "--format",
        "json",
        "sys03.lab.example.com",
    ]))
    .unwrap();
    assert_eq!(details["fqdn"], "sys03.lab.example.com");
    assert_eq!(details["mac_address"], "52:54:00:00:00:03");
    assert_eq!(details["current_reservation"]["user"]["user_name"], "alice");
    assert_eq!(details["current_reservation"]["type"], "recipe");
    assert_eq!(details["current_reservation"]["recipe_id"], 1);

    assert_eq!(run(&["job-list", "--mine"]).trim(), r#"["J:1"]"#);
    let mine: Vec<String> = run(&["system-list", "--mine"])
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(mine, ["sys03.lab.example.com", "sys12.lab.example.com"]);

    assert_eq!(run(&["job-clone", "J:1"]).trim(), "Submitted: ['J:2']");
    {
        let w = sim.world();
        let (first, clone) = (w.job(1).unwrap(), w.job(2).unwrap());
        assert_eq!(clone.whiteboard, first.whiteboard);
        let tasks = |j: &beaker_sim::Job| -> Vec<(String, Vec<(String, String)>)> {
            j.recipes()
                .flat_map(|r| r.tasks.iter().map(|t| (t.name.clone(), t.params.clone())))
                .collect()
        };
        assert_eq!(tasks(clone), tasks(first));
        assert_eq!(
            clone
                .recipes()
                .next()
                .unwrap()
                .reservesys
                .as_ref()
                .unwrap()
                .duration,
            3600
        );
    }

    assert_eq!(
        run(&["job-cancel", "J:1", "J:2"]).trim(),
        "Cancelled J:1\nCancelled J:2"
    );
    {
        let w = sim.world();
        assert_eq!(
            w.job(1).unwrap().status(),
            "Completed",
            "the reservation ended"
        );
        assert_eq!(w.job(2).unwrap().status(), "Cancelled");
        assert_eq!(w.job(2).unwrap().result(), "Warn");
        assert_eq!(w.system("sys03.lab.example.com").unwrap().reservation, None);
    }

    std::fs::write(&job_file, FAILING_JOB).unwrap();
    assert_eq!(
        run(&["job-submit", job_file.to_str().unwrap()]).trim(),
        "Submitted: ['J:3']"
    );
    let mut results = String::new();
    for _ in 0..3 {
        results = run(&["job-results", "J:3"]);
    }
    assert_eq!(
        attr(&results, "job", "status").as_deref(),
        Some("Completed")
    );
    assert_eq!(attr(&results, "job", "result").as_deref(), Some("Fail"));
    let system = attr(&results, "recipe", "system").unwrap();
    assert_eq!(
        sim.world().system(&system).unwrap().reservation,
        None,
        "no reservesys: returned"
    );

    sim.inject(Some("GET"), "/systems/sys01", FaultKind::Status(500), 1);
    let failed = bkr(
        &command,
        &conf,
        &[
            "system-details",
            "--format",
            "json",
            "sys01.lab.example.com",
        ],
    );
    assert!(
        !failed.ok && failed.stderr.contains("500"),
        "{}",
        failed.stderr
    );
    assert!(sim.unused_faults().is_empty(), "{:?}", sim.unused_faults());

    write_conf("not-her-password");
    let refused = bkr(&command, &conf, &["whoami"]);
    assert!(!refused.ok, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("Invalid username or password"),
        "{}",
        refused.stderr
    );
}
