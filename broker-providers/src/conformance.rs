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
