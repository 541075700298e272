//! Handing a freshly checked-out host on to what manages it next (Razor's brokers): a Puppet or
//! Chef server, an Ansible playbook, a script.
//!
//! A handoff *kind* ([`schema::KindSchema`]) says which keys configure it; a handoff *target*
//! ([`target::Target`]) is a named, configured instance of a kind, kept in a
//! [`store::TargetStore`] (`targets.yaml` next to the inventory: [`store::YamlTargetStore`]).
//! Running one is [`run`]: the [`Handoff`](run::Handoff) trait a kind implements, the registry
//! kinds are found in, and the runner that drives a kind over the host's session; [`kinds`] holds
//! the kinds broker brings (`noop`; `script`, `puppet`, `chef` and `ansible`, each with its
//! `handoff-KIND` feature).

pub mod admin;
pub(crate) mod checkout;
#[cfg(test)]
mod fake;
pub mod input;
pub mod kinds;
pub(crate) mod release;
pub mod run;
pub mod schema;
pub mod store;
pub mod target;

pub use admin::{
    TargetChange, TargetUsers, add_target, remove_all_targets, remove_target, update_target,
};
pub use run::{
    Handoff, HandoffContext, HandoffRegistry, HandoffState, Outcome, RunReport, StepError,
};
pub use schema::{KeySpec, KindSchema, Validation};
pub use store::{Added, TargetStore, YamlTargetStore};
pub use target::{ConfigValue, Target, TargetConfig, TargetId};
