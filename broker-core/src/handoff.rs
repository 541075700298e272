//! Handing a freshly checked-out host on to what manages it next (Razor's brokers): a Puppet or
//! Chef server, an Ansible playbook, a script.
//!
//! A handoff *kind* ([`schema::KindSchema`]) says which keys configure it; a handoff *target*
//! ([`target::Target`]) is a named, configured instance of a kind, kept in a
//! [`store::TargetStore`] (`targets.yaml` next to the inventory: [`store::YamlTargetStore`]).
//! This module is data and storage; it runs nothing on a host.

pub mod admin;
pub mod input;
pub mod schema;
pub mod store;
pub mod target;

pub use admin::{
    TargetChange, TargetUsers, add_target, remove_all_targets, remove_target, update_target,
};
pub use schema::{KeySpec, KindSchema, Validation};
pub use store::{Added, TargetStore, YamlTargetStore};
pub use target::{ConfigValue, Target, TargetConfig, TargetId};
