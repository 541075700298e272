//! OpenStack: 10 checkouts at once and their check-ins, broker against openstacksdk doing the same
//! create / wait / delete, and the requests one checkout and one check-in cost the cloud.
//!
//! Run with `cargo bench -p broker-providers --bench openstack`. Against the OpenStack simulator
//! (`tests/openstack-sim`) on loopback, one run each, so the figures are the clients' own cost plus
//! the simulator's, not a real cloud's (whose every request takes far longer — which is why the
//! request count matters). Both poll a build with the same doubling pause from 50 ms, and a server
//! is `ACTIVE` on its third read. The openstacksdk side runs when `BROKER_OPENSTACKSDK_PYTHON`
//! names a python with openstacksdk (`scripts/setup-openstacksdk` prints one): it does what the
//! Python broker's provider does, 10 threads on one connection (`tests/openstacksdk/upstream_checkouts.py`).

use std::time::Instant;

use broker_core::{Broker, CheckoutRequest, ProviderRegistry, Settings};
use openstack_sim::{PASSWORD, PROJECT, Sim, USER};

const HOSTS: usize = 10;
const FIRST_PAUSE: &str = "0.05";

fn main() {
    let sim = Sim::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let yaml = format!(
        "OpenStack:\n  auth_url: {}\n  username: {USER}\n  password: {PASSWORD}\n  \
         project_name: {PROJECT}\n  server_poll_interval: {FIRST_PAUSE}\n",
        sim.auth_url()
    );
    let broker = Broker::new(
        Settings::from_yaml(dir.path(), &yaml).expect("settings"),
        ProviderRegistry::new().with(broker_providers::openstack::KIND),
    )
    .expect("broker");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let request = CheckoutRequest::new()
        .arg("ostack_image", "rhel-9.4")
        .arg("ostack_flavor", "m1.small")
        .arg("ostack_network", "private")
        .count(HOSTS);

    let start = Instant::now();
    let guards = runtime
        .block_on(broker.checkout(request))
        .expect("checkout");
    let made = start.elapsed();
    let checkout_requests = sim.requests().len();
    let records = guards
        .into_iter()
        .map(|g| g.keep().record().clone())
        .collect();
    let start = Instant::now();
    let outcomes = runtime.block_on(broker.checkin(records, false));
    let given_back = start.elapsed();
    assert!(outcomes.iter().all(|o| o.result.is_ok()));
    assert!(sim.servers().is_empty());
    let checkin_requests = sim.requests().len() - checkout_requests;
    println!(
        "{HOSTS} checkouts at once: broker {:.0} ms (login included), their check-ins {:.0} ms",
        made.as_secs_f64() * 1e3,
        given_back.as_secs_f64() * 1e3
    );
    println!(
        "requests: {:.1} per checkout (one login for all; image, flavor and network; create; polls), {:.1} per check-in",
        checkout_requests as f64 / HOSTS as f64,
        checkin_requests as f64 / HOSTS as f64
    );

    let Ok(python) = std::env::var("BROKER_OPENSTACKSDK_PYTHON") else {
        println!("(set BROKER_OPENSTACKSDK_PYTHON to compare with openstacksdk)");
        return;
    };
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/openstacksdk/upstream_checkouts.py"
    );
    let before = sim.requests().len();
    let out = std::process::Command::new(&python)
        .args([script, &sim.auth_url(), &HOSTS.to_string(), FIRST_PAUSE])
        .output()
        .expect("run python");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let times: Vec<f64> = text
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    assert_eq!(times.len(), 2, "{text}");
    let theirs: Vec<_> = sim.requests().split_off(before);
    let creates = theirs
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/compute/v2.1/servers")
        .count();
    let deletes = theirs.iter().filter(|r| r.method == "DELETE").count();
    println!(
        "{HOSTS} checkouts at once: openstacksdk {:.0} ms (login included) = {:.1}x broker, their check-ins {:.0} ms",
        times[0],
        times[0] / (made.as_secs_f64() * 1e3),
        times[1]
    );
    println!(
        "requests: {:.1} per checkout, {:.1} per check-in ({creates} creates, {deletes} deletes)",
        (theirs.len() - deletes) as f64 / HOSTS as f64,
        deletes as f64 / HOSTS as f64
    );
    assert!(
        sim.servers().is_empty(),
        "openstacksdk deleted what it made"
    );
}
