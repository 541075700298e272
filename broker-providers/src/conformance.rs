//! Every provider of this crate runs broker's conformance kit (`broker_core::conformance`): its
//! life cycle, idempotent and vanished check-ins, sync, all or nothing, and every fault of the
//! fault wrapper, against the real system it talks to.

#[cfg(feature = "test-provider")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_provider_conforms() {
    broker_core::conformance::Conformance::new(crate::test_provider::KIND)
        .arg("test_action", "basic")
        .run()
        .await
        .unwrap();
}

#[cfg(feature = "container")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_conforms_on_a_real_engine() {
    if !broker_test_support::podman() {
        return;
    }
    let prefix = broker_test_support::Containers::new(format!("bt{}conform", std::process::id()));
    broker_core::conformance::Conformance::new(crate::container::KIND)
        .settings(&format!("Container:\n  name_prefix: {}\n", &*prefix))
        .arg("container_host", "broker-busybox")
        .arg("command", "sleep 3600")
        .listing_filter(&prefix)
        .run()
        .await
        .unwrap();
}

#[cfg(feature = "ansible-tower")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ansible_tower_conforms_on_the_awx_simulator() {
    let sim = awx_sim::Sim::start();
    let settings = format!(
        "AnsibleTower:\n  base_url: {}/\n  token: {}\n  workflow_poll_interval: 0.01\n  \
         max_resilient_wait: 5\n  workflow_timeout: 60\n",
        sim.url(),
        awx_sim::ALICE_TOKEN
    );
    broker_core::conformance::Conformance::new(crate::ansible_tower::KIND)
        .settings(&settings)
        .arg("workflow", "deploy-rhel")
        .arg("deploy_rhel_version", "9.4")
        .without_sessions()
        .run()
        .await
        .unwrap();
}

#[cfg(feature = "openstack")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openstack_conforms_on_the_openstack_simulator() {
    let sim = openstack_sim::Sim::start();
    let settings = format!(
        "OpenStack:\n  auth_url: {}\n  username: {}\n  password: {}\n  project_name: {}\n  \
         server_poll_interval: 0.01\n  server_timeout: 60\n",
        sim.auth_url(),
        openstack_sim::USER,
        openstack_sim::PASSWORD,
        openstack_sim::PROJECT
    );
    broker_core::conformance::Conformance::new(crate::openstack::KIND)
        .settings(&settings)
        .arg("ostack_image", "rhel-9.4")
        .arg("ostack_flavor", "m1.small")
        .arg("ostack_network", "private")
        .without_sessions()
        .run()
        .await
        .unwrap();
}

/// The Beaker provider on the hub simulator, whose systems — `127.0.0.2` … — are one container with
/// sshd reached on each of those addresses (with the `extendtesttime.sh` a Beaker harness puts on
/// its systems), so that the kit runs commands on them, extends them, and finds a returned system
/// unreachable.
#[cfg(all(feature = "beaker", feature = "ssh"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beaker_conforms_on_the_beaker_simulator() {
    if !broker_test_support::podman() || !broker_test_support::sshd_image() {
        return;
    }
    let sshd =
        broker_test_support::SshdContainer::start(&format!("bt{}beaker", std::process::id()))
            .with_extendtesttime();
    let sim = beaker_sim::SimOptions {
        systems: 0,
        ..Default::default()
    }
    .start();
    // More systems than the kit checks out, so that no system serves two checks (the kit tells
    // what a check made by its names).
    for n in 2..120 {
        sim.world().add_system(&format!("127.0.0.{n}"));
    }
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.xml");
    std::fs::write(
        &job,
        "<job><whiteboard>conformance</whiteboard><recipeSet><recipe><distroRequires/><hostRequires/>\
         <task name=\"/distribution/check-install\"/><reservesys duration=\"3600\"/></recipe></recipeSet></job>",
    )
    .unwrap();
    let settings = format!(
        "Beaker:\n  hub_url: {}\n  username: {}\n  password: {}\n  poll_interval: 0.01\n  \
         max_job_wait: 60\nssh:\n  host_ssh_port: {}\n  host_password: {}\n",
        sim.url(),
        beaker_sim::USER,
        beaker_sim::PASSWORD,
        sshd.port(),
        broker_test_support::SSHD_IMAGE_PASSWORD
    );
    broker_core::conformance::Conformance::new(crate::beaker::KIND)
        .settings(&settings)
        .arg("job_xml", job.to_string_lossy().into_owned())
        .extend_arg("extend_duration", 2)
        .run()
        .await
        .unwrap();
    assert_eq!(sshd.extended(), "2\n");
}

/// The Foreman provider on its simulator, each host a real machine: an sshd container reached at the
/// address Foreman gives every host (`127.0.0.1`; the names do not resolve here).
#[cfg(all(feature = "foreman", feature = "ssh"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreman_conforms_on_the_foreman_simulator() {
    if !broker_test_support::podman() || !broker_test_support::sshd_image() {
        return;
    }
    let sshd =
        broker_test_support::SshdContainer::start(&format!("bt{}foreman", std::process::id()));
    let sim = foreman_sim::Sim::start_with(foreman_sim::SimOptions {
        host_ip: Some("127.0.0.1".into()),
        ..foreman_sim::SimOptions::default()
    });
    let settings = format!(
        "Foreman:\n  foreman_url: {}\n  foreman_username: {}\n  foreman_password: {}\n  \
         organization: {}\n  location: {}\n  poll_interval: 0.01\n  name_prefix: conform\n\
         ssh:\n  host_ssh_port: {}\n  host_password: {}\n",
        sim.url(),
        foreman_sim::USER,
        foreman_sim::PASSWORD,
        foreman_sim::ORGANIZATION,
        foreman_sim::LOCATION_TITLE,
        sshd.port(),
        broker_test_support::SSHD_IMAGE_PASSWORD
    );
    broker_core::conformance::Conformance::new(crate::foreman::KIND)
        .settings(&settings)
        .arg("hostgroup", "base/rhel9")
        .run()
        .await
        .unwrap();
}
