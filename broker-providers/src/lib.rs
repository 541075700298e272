//! Provider implementations for broker, one module and one cargo feature each.
//!
//! | feature | provider | action keys |
//! |---|---|---|
//! | `test-provider` (default) | [`TestProvider`](test_provider) | `test_action` |
//! | `container` (default) | [`Container`](container) (Docker, Podman) | `container_host`, `container_app` |
//! | `ansible-tower` (default) | [`AnsibleTower`](ansible_tower) (AWX, AAP) | `workflow`, `job_template` |
//! | `foreman` (default) | [`Foreman`](foreman) | `hostgroup` |
//! | `openstack` (default) | [`OpenStack`](openstack) (Keystone v3, Nova, Glance, Neutron) | `ostack_template`, `ostack_image` |
//! | `beaker` (default) | [`Beaker`](beaker) (Beaker jobs, systems) | `job_xml`, `job_id` |
//! | `ssh` (default) | [SSH sessions](ssh) for hosts reached over SSH | — |
//!
//! [`registry`] returns every provider compiled in; hand it to [`broker_core::Broker::new`].
//!
//! ```
//! let registry = broker_providers::registry();
//! # #[cfg(feature = "test-provider")]
//! assert!(registry.get("TestProvider").is_some());
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use broker_core::ProviderRegistry;

#[cfg(feature = "ansible-tower")]
pub mod ansible_tower;
#[cfg(feature = "beaker")]
pub mod beaker;
#[cfg(test)]
mod conformance;
#[cfg(feature = "container")]
pub mod container;
#[cfg(feature = "foreman")]
pub mod foreman;
#[cfg(any(feature = "ansible-tower", feature = "foreman"))]
mod http;
#[cfg(feature = "openstack")]
pub mod openstack;
#[cfg(any(feature = "container", feature = "ssh", feature = "test-provider"))]
mod shell;
#[cfg(feature = "ssh")]
pub mod ssh;
#[cfg(feature = "test-provider")]
pub mod test_provider;

/// The Rust examples of `docs/leases.md`, compiled by `cargo test --doc` (with broker-core's
/// `conformance` feature, which this crate's tests turn on) so that they stay true to the API.
#[cfg(all(doctest, feature = "container"))]
#[doc = include_str!("../../docs/leases.md")]
struct LeasesDoc;

/// A session to a host reached over SSH (the providers whose hosts are machines: AnsibleTower,
/// Beaker, OpenStack); without the `ssh` feature, [`broker_core::Error::NotImplemented`].
#[cfg(any(feature = "ansible-tower", feature = "beaker", feature = "openstack"))]
async fn ssh_session(
    provider: &dyn broker_core::Provider,
    host: &broker_core::HostRecord,
    config: &broker_core::ProviderConfig,
) -> broker_core::Result<Box<dyn broker_core::Session>> {
    #[cfg(feature = "ssh")]
    {
        let _ = provider;
        ssh::connect_host(host, config).await
    }
    #[cfg(not(feature = "ssh"))]
    {
        let _ = (host, config);
        Err(provider.not_implemented("sessions (build with the `ssh` feature)"))
    }
}

/// Every provider this build has, by name.
pub fn registry() -> ProviderRegistry {
    #[allow(unused_mut)]
    let mut registry = ProviderRegistry::new();
    #[cfg(feature = "ansible-tower")]
    registry.register(ansible_tower::KIND);
    #[cfg(feature = "beaker")]
    registry.register(beaker::KIND);
    #[cfg(feature = "container")]
    registry.register(container::KIND);
    #[cfg(feature = "foreman")]
    registry.register(foreman::KIND);
    #[cfg(feature = "openstack")]
    registry.register(openstack::KIND);
    #[cfg(feature = "test-provider")]
    registry.register(test_provider::KIND);
    registry
}
