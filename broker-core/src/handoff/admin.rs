//! What `broker target` does with targets, for the CLI and library callers alike: add one
//! (checked against its kind's schema; the same again is no change, a different one a conflict),
//! change one (never its kind), and remove one only when no nick and no host names it.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::handoff::schema::{KindSchema, find_kind};
use crate::handoff::store::{Added, TargetStore};
use crate::handoff::target::{ConfigValue, Target, check_name};
use crate::record::{HostRecord, fields};
use crate::settings::Settings;

/// The nick key that names the target a nick's checkouts are handed to.
pub const NICK_KEY: &str = "handoff";

/// Adds a target of kind `kind` (one of `kinds`, in any case) with the configuration `values`.
///
/// # Errors
/// [`Error::User`] for a name a target cannot have, an unknown kind, a configuration the kind's
/// schema refuses (naming the key), or a target of that name that differs; the store's errors.
pub fn add_target(
    store: &dyn TargetStore,
    kinds: &[KindSchema],
    name: &str,
    description: &str,
    kind: &str,
    values: BTreeMap<String, ConfigValue>,
) -> Result<Added> {
    check_name(name)?;
    let kind = find_kind(kinds, kind)?;
    let config = kind.validate(values)?;
    store.add(Target::new(name, description, kind.name, config)?)
}

/// A change to a target: what is `None` or empty stays as it is.
#[derive(Debug, Clone, Default)]
pub struct TargetChange {
    /// A new name.
    pub name: Option<String>,
    /// A new description.
    pub description: Option<String>,
    /// Keys to set.
    pub set: BTreeMap<String, ConfigValue>,
    /// Keys to unset: a key with a default goes back to it.
    pub clear: Vec<String>,
    /// The whole configuration instead (from the interactive walk); `set` and `clear` apply on it.
    pub config: Option<BTreeMap<String, ConfigValue>>,
}

/// Changes the target `id_or_name`; its kind stays. A change that changes nothing leaves the
/// target (and its revision) as it was.
///
/// # Errors
/// [`Error::User`] for an unknown target or kind, a name a target cannot have or another target
/// has, a configuration the kind's schema refuses (naming the key), a key to clear that the target
/// does not have; the store's errors.
pub fn update_target(
    store: &dyn TargetStore,
    kinds: &[KindSchema],
    id_or_name: &str,
    change: TargetChange,
) -> Result<Target> {
    let old = store.get(id_or_name)?;
    let kind = find_kind(kinds, &old.kind)?;
    let mut new = old.clone();
    if let Some(name) = change.name {
        check_name(&name)?;
        new.name = name;
    }
    if let Some(description) = change.description {
        new.description = description;
    }
    kind.refuse_unknown(change.set.keys().map(String::as_str))?;
    let mut values = change
        .config
        .unwrap_or_else(|| old.config.clone().into_values());
    for key in &change.clear {
        if values.remove(key).is_none() && kind.key(key).is_none() {
            return Err(Error::user(format!(
                "handoff target `{}` has no key `{key}` to clear",
                old.name
            )));
        }
    }
    values.extend(change.set);
    new.config = kind.validate(values)?;
    if new == old {
        return Ok(old);
    }
    store.replace(new)
}

/// Who still names a target: nicks (their `handoff` key) and hosts of the inventory (the field
/// [`fields::HANDOFF_TARGET`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TargetUsers {
    /// Names of the nicks.
    pub nicks: Vec<String>,
    /// Names of the hosts.
    pub hosts: Vec<String>,
}

impl TargetUsers {
    /// Whether nothing names the target.
    pub fn is_empty(&self) -> bool {
        self.nicks.is_empty() && self.hosts.is_empty()
    }
}

/// The nicks of `settings` and the inventory `records` that name `target` (by id or name).
pub fn target_users(target: &Target, settings: &Settings, records: &[HostRecord]) -> TargetUsers {
    let names = |value: Option<&serde_yaml::Value>| {
        value
            .and_then(crate::value::scalar_text)
            .is_some_and(|text| target.is_named(&text))
    };
    let nicks = settings
        .nicks()
        .into_iter()
        .filter(|nick| {
            settings
                .nick(nick)
                .is_ok_and(|args| names(args.get(NICK_KEY)))
        })
        .collect();
    let hosts = records
        .iter()
        .filter(|r| names(r.get(fields::HANDOFF_TARGET)))
        .map(HostRecord::display_name)
        .collect();
    TargetUsers { nicks, hosts }
}

/// Removes the target `id_or_name` unless a nick or a host of `records` names it.
///
/// # Errors
/// [`Error::User`] for an unknown target or one still named (saying by what); the store's errors.
pub fn remove_target(
    store: &dyn TargetStore,
    id_or_name: &str,
    settings: &Settings,
    records: &[HostRecord],
) -> Result<Target> {
    let target = store.get(id_or_name)?;
    refuse_used(std::slice::from_ref(&target), settings, records)?;
    Ok(store.remove(&target.id)?.unwrap_or(target))
}

/// Removes every target, unless a nick or a host of `records` names any (then none is removed).
///
/// # Errors
/// [`Error::User`] naming each target still named and by what; the store's errors.
pub fn remove_all_targets(
    store: &dyn TargetStore,
    settings: &Settings,
    records: &[HostRecord],
) -> Result<Vec<Target>> {
    let targets = store.list()?;
    refuse_used(&targets, settings, records)?;
    let mut removed = Vec::new();
    for target in targets {
        if let Some(gone) = store.remove(&target.id)? {
            removed.push(gone);
        }
    }
    Ok(removed)
}

fn refuse_used(targets: &[Target], settings: &Settings, records: &[HostRecord]) -> Result<()> {
    let used: Vec<String> = targets
        .iter()
        .filter_map(|t| {
            let users = target_users(t, settings, records);
            (!users.is_empty()).then(|| used_by(t, &users))
        })
        .collect();
    if used.is_empty() {
        return Ok(());
    }
    Err(Error::user(format!(
        "{}; nothing was removed: change those nicks and check those hosts in first",
        used.join("; ")
    )))
}

fn used_by(target: &Target, users: &TargetUsers) -> String {
    let mut by = Vec::new();
    if !users.nicks.is_empty() {
        by.push(format!("nick {}", users.nicks.join(", ")));
    }
    if !users.hosts.is_empty() {
        by.push(format!("host {}", users.hosts.join(", ")));
    }
    format!(
        "handoff target `{}` is still used by {}",
        target.name,
        by.join(" and ")
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::handoff::schema::builtin;
    use crate::handoff::store::YamlTargetStore;

    fn plain(pairs: &[(&str, &str)]) -> BTreeMap<String, ConfigValue> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), ConfigValue::Plain((*v).to_owned())))
            .collect()
    }

    fn setup() -> (tempfile::TempDir, YamlTargetStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = YamlTargetStore::in_directory(dir.path(), Duration::from_secs(5));
        (dir, store)
    }

    fn settings(dir: &std::path::Path, yaml: &str) -> Settings {
        Settings::from_yaml(dir, yaml).unwrap()
    }

    #[test]
    fn add_checks_the_name_the_kind_and_the_configuration() {
        let (_dir, store) = setup();
        let add = |name: &str, kind: &str, values: &[(&str, &str)]| {
            add_target(&store, builtin(), name, "", kind, plain(values)).map_err(|e| e.to_string())
        };
        assert!(
            add("", "puppet", &[])
                .unwrap_err()
                .contains("the name is empty")
        );
        assert!(
            add("p", "pupet", &[])
                .unwrap_err()
                .starts_with("unknown handoff kind `pupet`")
        );
        assert!(
            add("p", "puppet", &[("srv", "x")])
                .unwrap_err()
                .starts_with("unknown key `srv`")
        );
        assert!(
            add("s", "script", &[])
                .unwrap_err()
                .starts_with("missing required key `script`")
        );
        let added = add("p", "Puppet", &[("server", "p.example.com")]).unwrap();
        assert_eq!(added.target().kind, "puppet");
        assert!(matches!(added, Added::Created(_)));
        assert!(matches!(
            add("P", "puppet", &[("server", "p.example.com")]).unwrap(),
            Added::Existing(_)
        ));
        assert!(
            add("p", "puppet", &[])
                .unwrap_err()
                .contains("already exists")
        );
    }

    #[test]
    fn update_sets_and_clears_keys_and_keeps_the_kind() {
        let (_dir, store) = setup();
        add_target(
            &store,
            builtin(),
            "p",
            "",
            "puppet",
            plain(&[("server", "a.example.com")]),
        )
        .unwrap();
        let change = TargetChange {
            set: plain(&[("broker_version", "7.23.0")]),
            clear: vec!["server".into()],
            ..TargetChange::default()
        };
        let t = update_target(&store, builtin(), "p", change).unwrap();
        assert_eq!(t.config.text("server"), Some(""));
        assert_eq!(t.config.text("broker_version"), Some("7.23.0"));
        assert_eq!(t.revision, 2);
        let same = TargetChange {
            set: plain(&[("broker_version", "7.23.0")]),
            ..TargetChange::default()
        };
        assert_eq!(
            update_target(&store, builtin(), "p", same)
                .unwrap()
                .revision,
            2
        );
        let bad = TargetChange {
            set: plain(&[("server", "---invalid-hostname---")]),
            ..TargetChange::default()
        };
        assert!(update_target(&store, builtin(), "p", bad).is_err());
        let unknown = TargetChange {
            clear: vec!["nope".into()],
            ..TargetChange::default()
        };
        assert_eq!(
            update_target(&store, builtin(), "p", unknown)
                .unwrap_err()
                .to_string(),
            "handoff target `p` has no key `nope` to clear"
        );
        assert_eq!(store.get("p").unwrap().revision, 2);
        // Setting one key keeps the others.
        let port = TargetChange {
            set: plain(&[("server_port", "8141")]),
            ..TargetChange::default()
        };
        let t = update_target(&store, builtin(), "p", port).unwrap();
        assert_eq!(t.config.text("broker_version"), Some("7.23.0"));
        assert_eq!(t.config.text("server_port"), Some("8141"));
    }

    #[test]
    fn a_target_named_by_a_nick_or_a_host_is_not_removed() {
        let (dir, store) = setup();
        let settings = settings(
            dir.path(),
            "nicks:\n  web:\n    test_action: basic\n    handoff: PUPPET\n",
        );
        let p = add_target(&store, builtin(), "puppet", "", "puppet", plain(&[]))
            .unwrap()
            .target()
            .clone();
        add_target(&store, builtin(), "spare", "", "noop", plain(&[])).unwrap();
        let mut host = HostRecord::pending("TestProvider", None, Default::default());
        host.set("hostname", "h1.example.com");
        host.set(fields::HANDOFF_TARGET, p.id.as_str());
        let records = vec![host];

        assert_eq!(
            remove_target(&store, "puppet", &settings, &records)
                .unwrap_err()
                .to_string(),
            "handoff target `puppet` is still used by nick web and host h1.example.com; nothing \
             was removed: change those nicks and check those hosts in first"
        );
        assert!(remove_all_targets(&store, &settings, &[]).is_err());
        assert_eq!(store.list().unwrap().len(), 2);

        let settings = super::tests::settings(dir.path(), "nicks: {}\n");
        assert!(remove_target(&store, "puppet", &settings, &records).is_err());
        assert_eq!(
            remove_target(&store, "puppet", &settings, &[]).unwrap().id,
            p.id
        );
        assert_eq!(remove_all_targets(&store, &settings, &[]).unwrap().len(), 1);
        assert!(store.list().unwrap().is_empty());
    }
}
