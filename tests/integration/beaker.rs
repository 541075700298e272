//! `broker` against the Beaker hub simulator (`tests/beaker-sim`): the Beaker provider end to end
//! through the command line.

use beaker_sim::{PASSWORD, Sim, USER};

use crate::util::{BrokerDir, stderr};

fn settings(sim: &Sim, extra: &str) -> String {
    format!(
        "Beaker:\n  hub_url: {}\n  username: {USER}\n  password: {PASSWORD}\n  poll_interval: 0.02\n  \
         max_job_wait: 1m\n{extra}",
        sim.url()
    )
}

/// A job reserving a system (`system`, or any), whose second task ends with `result`.
fn job(system: Option<&str>, result: &str) -> String {
    let host = system.map_or_else(
        || "<hostRequires/>".to_owned(),
        |s| format!("<hostRequires><hostname op=\"=\" value=\"{s}\"/></hostRequires>"),
    );
    format!(
        "<job><whiteboard>cli</whiteboard><recipeSet><recipe>\
         <distroRequires><distro_name op=\"=\" value=\"RHEL-9.4.0\"/></distroRequires>{host}\
         <task name=\"/distribution/check-install\"/>\
         <task name=\"/qe/smoke\"><params><param name=\"SIM_RESULT\" value=\"{result}\"/></params></task>\
         <reservesys duration=\"3600\"/></recipe></recipeSet></job>"
    )
}

/// Writes `xml` into the broker directory; its path.
fn job_file(dir: &BrokerDir, name: &str, xml: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, xml).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn checkout_inventory_sync_discovery_clone_checkin() {
    let sim = Sim::start();
    let dir = BrokerDir::new(&settings(&sim, ""));
    let path = job_file(&dir, "job.xml", &job(Some("sys06.lab.example.com"), "Pass"));
    let out = dir.run(&["checkout", "--job-xml", &path]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("{}/jobs/1", sim.url())),
        "{}",
        stderr(&out)
    );
    let host = dir.inventory().remove(0);
    assert_eq!(host["hostname"], "sys06.lab.example.com");
    assert_eq!(host["_broker_provider"], "Beaker");
    assert_eq!(host["_broker_args"]["job_xml"], path.as_str());
    assert_eq!(host["job_id"], "1");
    assert_eq!(host["mac_address"], "52:54:00:00:00:06");
    let table = dir.ok(&["inventory"]);
    assert!(table.contains("sys06.lab.example.com"), "{table}");

    // A sync finds the same system (and only it) from the hub.
    std::fs::remove_file(dir.inventory_path()).unwrap();
    dir.ok(&["inventory", "--sync", "Beaker"]);
    let synced = dir.inventory();
    assert_eq!(synced.len(), 1, "{synced:?}");
    assert_eq!(synced[0]["hostname"], "sys06.lab.example.com");
    assert_eq!(synced[0]["job_id"], "1");

    let jobs = dir.ok(&["providers", "Beaker", "--jobs"]);
    assert!(
        jobs.contains("J:1") && jobs.contains("cli [broker "),
        "{jobs}"
    );
    let xml = dir.ok(&["providers", "Beaker", "--job", "1"]);
    assert!(
        xml.contains("<job") && xml.contains("<param name=\"SIM_RESULT\" value=\"Pass\"/>"),
        "{xml}"
    );

    dir.ok(&["checkin", "0"]);
    assert!(dir.inventory().is_empty());
    assert_eq!(
        sim.world()
            .system("sys06.lab.example.com")
            .unwrap()
            .reservation,
        None
    );

    dir.ok(&["checkout", "--job-id", "1"]);
    assert_eq!(dir.inventory()[0]["job_id"], "2");
    assert_eq!(sim.world().job(2).unwrap().status(), "Reserved");
    dir.ok(&["checkin", "--all"]);
    assert_eq!(sim.world().job(2).unwrap().status(), "Completed");
    assert!(
        sim.systems()
            .iter()
            .all(|s| s.reservation.as_ref().is_none_or(|r| r.user != USER))
    );
}

#[test]
fn exit_codes_name_the_problem() {
    let sim = Sim::start();
    let dir = BrokerDir::new(&settings(&sim, ""));
    let failing = job_file(&dir, "failing.xml", &job(None, "Fail"));
    // A failing job: 7, naming the task and the job; the job is cancelled, its system returned.
    let out = dir.run(&["checkout", "--job-xml", &failing]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(log.contains("task /qe/smoke (T:2) of recipe R:1"), "{log}");
    assert!(log.contains(&format!("see {}/jobs/1", sim.url())), "{log}");
    assert!(dir.inventory().is_empty());
    assert!(
        sim.systems()
            .iter()
            .all(|s| s.reservation.as_ref().is_none_or(|r| r.user != USER))
    );

    // A job XML file that is not there: 13.
    let out = dir.run(&["checkout", "--job-xml", "/nonexistent/job.xml"]);
    assert_eq!(out.status.code(), Some(13), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot read the job XML `/nonexistent/job.xml`"),
        "{}",
        stderr(&out)
    );

    // An extend of more than 99 hours: 2, before anything is asked of the host.
    let passing = job_file(&dir, "passing.xml", &job(None, "Pass"));
    dir.ok(&["checkout", "--job-xml", &passing]);
    let out = dir.run(&["extend", "0", "--extend-duration", "100"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not a number of hours from 1 to 99"),
        "{}",
        stderr(&out)
    );
    dir.ok(&["checkin", "--all"]);

    // A refused password: 5, and the password is nowhere in what broker says.
    let wrong = BrokerDir::new(&settings(&sim, "").replace(PASSWORD, "not-her-password"));
    let path = job_file(&wrong, "job.xml", &job(None, "Pass"));
    let out = wrong.run(&["checkout", "--job-xml", &path]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Invalid username or password"),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("not-her-password"),
        "{}",
        stderr(&out)
    );
}

/// A reserved system backed by a container with sshd: `broker ssh` reaches it, `broker extend` runs
/// the harness's `extendtesttime.sh` on it with the hours asked for, and once its job is cancelled
/// behind broker's back broker no longer opens a session to it (exit 10).
#[test]
fn a_reserved_system_is_reached_over_ssh_and_extended_there() {
    if !broker_test_support::podman() || !broker_test_support::sshd_image() {
        return;
    }
    let sshd =
        broker_test_support::SshdContainer::start(&format!("it{}beaker", std::process::id()))
            .with_extendtesttime();
    let sim = Sim::start();
    sim.world().add_system("localhost");
    let ssh = format!(
        "ssh:\n  host_ssh_port: {}\n  host_password: {}\n",
        sshd.port(),
        broker_test_support::SSHD_IMAGE_PASSWORD
    );
    let dir = BrokerDir::new(&settings(&sim, &ssh));
    let path = job_file(&dir, "job.xml", &job(Some("localhost"), "Pass"));
    dir.ok(&["checkout", "--job-xml", &path]);
    assert_eq!(
        dir.ok(&["ssh", "0", "--", "echo", "reached"]).trim(),
        "reached"
    );
    dir.ok(&["extend", "0", "--extend-duration", "12"]);
    dir.ok(&["extend", "0"]);
    assert_eq!(sshd.extended(), "12\n99\n");

    // The reservation ends behind broker's back: the system is no longer hers.
    sim.world()
        .systems
        .iter_mut()
        .filter(|s| s.fqdn == "localhost")
        .for_each(|s| s.reservation = None);
    let out = dir.run(&["ssh", "0", "--", "true"]);
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no longer reserved for you"),
        "{}",
        stderr(&out)
    );
    dir.ok(&["checkin", "--all"]);
}
