//! The OpenStack simulator (`tests/openstack-sim`) that the OpenStack provider's tests run against,
//! checked by a client someone else wrote: the official openstacksdk.

use openstack_sim::{FaultKind, Sim};

use crate::util::client_check;

/// Nova's fault message of the build the test makes fail.
const NO_VALID_HOST: &str = "No valid host was found. There are not enough hosts available.";

/// openstacksdk logs in (password, application credential, a wrong password refused), lists images,
/// flavors and networks, creates a server, waits for ACTIVE, reads its metadata and addresses, gives
/// it a floating IP and deletes it; a create over quota is refused; a build that ends in ERROR shows
/// Nova's fault; a token that expires mid-poll makes keystoneauth log in again.
/// scripts/setup-openstacksdk installs it; without it this fails unless `BROKER_ALLOW_SKIP=1` is set.
#[test]
fn openstacksdk_speaks_to_the_simulator() {
    let Some(python) = broker_test_support::openstacksdk_python() else {
        return;
    };
    let sim = Sim::start();
    sim.inject(
        Some("POST"),
        "/compute/v2.1/servers",
        FaultKind::QuotaExceeded,
        1,
    );
    sim.inject(
        Some("POST"),
        "/compute/v2.1/servers",
        FaultKind::BuildError(NO_VALID_HOST.into()),
        1,
    );
    sim.inject(
        Some("GET"),
        "/compute/v2.1/servers/",
        FaultKind::ExpireToken,
        1,
    );
    client_check(
        &python,
        "openstacksdk/speaks_openstack.py",
        &[&sim.auth_url()],
        "openstacksdk OK",
    );
    assert!(
        sim.unused_faults().is_empty(),
        "faults never served: {:?}",
        sim.unused_faults()
    );
    let world = sim.world();
    assert!(world.servers.is_empty(), "left behind: {:?}", world.servers);
    assert!(world.floating_ips.is_empty(), "{:?}", world.floating_ips);
    assert!(world.ports.is_empty(), "{:?}", world.ports);
    // The poll whose token expired was asked again, with a token from a new login.
    let polls: Vec<_> = world
        .requests
        .iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/compute/v2.1/servers/"))
        .collect();
    let expired = polls[0].token.clone();
    assert!(expired.is_some(), "{:?}", polls[0]);
    assert_eq!(polls[1].path, polls[0].path);
    assert_ne!(
        polls[1].token, expired,
        "asked again with the expired token"
    );
    let logins = world
        .requests
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/identity/v3/auth/tokens")
        .count();
    // The first login, the one after expiry, the wrong password, the application credential.
    assert_eq!(logins, 4);
}
