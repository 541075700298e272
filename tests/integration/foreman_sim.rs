//! The Foreman simulator (`tests/foreman-sim`) that the Foreman provider's tests run against,
//! checked by a client someone else wrote: the Python broker's own Foreman provider.

use foreman_sim::Sim;

use crate::util::client_check;

/// The Python broker (0.8.11, from PyPI, an oracle only) checks a host out of a hostgroup (its
/// organisation by name, its location by title) and one by image-based provisioning, lists and
/// describes hostgroups, runs commands through remote execution (one fails with its exit status) and
/// checks both hosts in. What it did is read back from the simulator: the requests are Foreman's,
/// every host is gone. scripts/setup-pybroker installs it; without it this fails unless
/// `BROKER_ALLOW_SKIP=1` is set.
#[test]
fn the_python_brokers_foreman_provider_speaks_to_the_simulator() {
    let Some(python) = broker_test_support::pybroker_python() else {
        return;
    };
    let sim = Sim::start();
    let dir = tempfile::tempdir().unwrap();
    client_check(
        &python,
        "pybroker/foreman_checkout.py",
        &[&sim.url(), dir.path().to_str().unwrap()],
        "pybroker foreman OK",
    );
    let world = sim.world();
    assert!(world.hosts.is_empty(), "left behind: {:?}", world.hosts);
    let organization = world.organizations[0].id;
    let location = world
        .locations
        .iter()
        .find(|l| l.title == foreman_sim::LOCATION_TITLE)
        .unwrap()
        .id;
    let creates: Vec<_> = world
        .requests
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/api/hosts")
        .collect();
    assert_eq!(creates.len(), 2, "{creates:?}");
    let rhel9 = world.hostgroup("base/rhel9").unwrap().id;
    let built = &creates[0].body;
    assert_eq!(built["organization_id"], organization);
    assert_eq!(built["location_id"], location);
    assert_eq!(built["host"]["hostgroup_id"], rhel9);
    assert_eq!(built["host"]["build"], true);
    assert_eq!(built["host"]["compute_attributes"]["start"], "1");
    let imaged = &creates[1].body["host"];
    let lab = &world.compute_resources[0];
    assert_eq!(imaged["provision_method"], "image");
    assert_eq!(imaged["compute_resource_id"], lab.id);
    let fedora = lab.images.iter().find(|i| i.name == "fedora-41").unwrap();
    assert_eq!(
        imaged["compute_attributes"]["image_id"],
        fedora.uuid.as_str()
    );
    // Each host was run `hostname NAME` on after its build, then the test's two commands.
    let commands: Vec<(String, String, i32)> = world
        .jobs
        .iter()
        .map(|j| {
            let host = &j.hosts[0];
            (
                j.inputs["command"].as_str().unwrap().to_owned(),
                host.host.clone(),
                host.status,
            )
        })
        .collect();
    let first = commands[0].1.clone();
    let second = commands[1].1.clone();
    assert_eq!(
        commands,
        [
            (format!("hostname {first}"), first.clone(), 0),
            (format!("hostname {second}"), second, 0),
            ("echo hello".to_owned(), first.clone(), 0),
            ("exit 3".to_owned(), first, 3),
        ]
    );
    let deletes = world
        .requests
        .iter()
        .filter(|r| r.method == "DELETE" && r.path.starts_with("/api/hosts/"))
        .count();
    assert_eq!(deletes, 2);
    assert!(
        world
            .requests
            .iter()
            .all(|r| r.user.as_deref() == Some(foreman_sim::USER))
    );
}
