//! Workspace integration tests: they run the real `broker` binary in temporary broker directories.
// Test code through and through: a failed set-up step should stop the test where it failed, in the
// helpers as in the `#[test]`s (clippy's `allow-unwrap-in-tests` covers only the latter).
#![allow(clippy::unwrap_used)]

#[cfg(feature = "ansible-tower")]
mod awx;
#[cfg(feature = "beaker")]
mod beaker;
mod beaker_sim;
mod cleanup;
mod cli;
mod components;
mod concurrency;
mod container;
mod docs;
mod flags;
mod foreman;
mod foreman_sim;
mod handoff_ansible;
mod handoff_chef;
mod handoff_puppet;
mod handoff_run;
mod input;
mod inventory_file;
mod leases;
#[cfg(feature = "openstack")]
mod openstack;
mod openstack_sim;
mod postgres;
#[cfg(feature = "serve")]
mod postgres_shared;
#[cfg(feature = "serve")]
mod remote;
mod scenarios;
mod secrets;
#[cfg(feature = "serve")]
mod serve;
mod snapshots;
mod ssh_agent;
mod targets;
mod upstream;
mod util;
