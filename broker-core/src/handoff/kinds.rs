//! The handoff kinds broker brings: `noop` always, `script` with the `handoff-script` feature,
//! `puppet` with `handoff-puppet`, `ansible` with `handoff-ansible`, `chef` with `handoff-chef`.
//! Kinds that need a client of their own (a configuration-management server's) each sit behind a
//! feature of their own.

#[cfg(feature = "handoff-ansible")]
pub mod ansible;
#[cfg(feature = "handoff-chef")]
pub mod chef;
pub mod noop;
#[cfg(feature = "handoff-puppet")]
pub mod puppet;
#[cfg(feature = "handoff-script")]
pub mod script;
pub mod shell;

use std::sync::Arc;

use super::run::HandoffRegistry;

/// A registry of the kinds compiled in.
pub fn builtin() -> HandoffRegistry {
    let registry = HandoffRegistry::new().with(Arc::new(noop::Noop));
    #[cfg(feature = "handoff-script")]
    let registry = registry.with(Arc::new(script::Script));
    #[cfg(feature = "handoff-puppet")]
    let registry = registry.with(Arc::new(puppet::Puppet));
    #[cfg(feature = "handoff-ansible")]
    let registry = registry.with(Arc::new(ansible::Ansible));
    #[cfg(feature = "handoff-chef")]
    let registry = registry.with(Arc::new(chef::Chef));
    registry
}

#[cfg(test)]
mod tests {
    /// Each kind compiled in is found under its schema's name, and says that name itself.
    #[test]
    fn the_builtin_kinds_are_found_under_their_schemas_names() {
        let registry = super::builtin();
        let mut names = registry.names();
        names.sort_unstable();
        let mut expected = vec!["noop"];
        #[cfg(feature = "handoff-script")]
        expected.push("script");
        #[cfg(feature = "handoff-puppet")]
        expected.push("puppet");
        #[cfg(feature = "handoff-ansible")]
        expected.push("ansible");
        #[cfg(feature = "handoff-chef")]
        expected.push("chef");
        expected.sort_unstable();
        assert_eq!(names, expected);
        for name in names {
            assert_eq!(registry.get(name).unwrap().name(), name);
            assert!(crate::handoff::schema::builtin_kind(name).is_ok(), "{name}");
        }
    }
}
