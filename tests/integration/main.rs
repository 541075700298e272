//! Workspace integration tests: they run the real `broker` binary in temporary broker directories.

#[cfg(feature = "ansible-tower")]
mod awx;
mod cleanup;
mod cli;
mod components;
mod concurrency;
mod container;
mod docs;
mod input;
mod inventory_file;
mod secrets;
mod snapshots;
mod upstream;
mod util;
