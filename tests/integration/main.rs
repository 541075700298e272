//! Workspace integration tests: they run the real `broker` binary in temporary broker directories.

#[cfg(feature = "ansible-tower")]
mod awx;
mod cleanup;
mod cli;
mod components;
mod concurrency;
mod container;
mod docs;
mod flags;
mod input;
mod inventory_file;
mod secrets;
mod snapshots;
mod ssh_agent;
mod upstream;
mod util;
