//! Where targets live: the [`TargetStore`] trait (a PostgreSQL store implements it too) and
//! [`YamlTargetStore`], `targets.yaml` in the broker directory next to the inventory.
//!
//! The file store shares the inventory's discipline: readers take no lock, writers hold the
//! inventory's kind of `flock` (on `targets.yaml.flock`, and on the directory) across
//! read-modify-write and replace the file atomically. A store checks names and revisions; what a
//! configuration holds is checked before (against the kind's schema), not here.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::handoff::target::{ConfigValue, Target, TargetConfig, TargetId, lookup};

/// What adding a target came to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Added {
    /// The target is new.
    Created(Target),
    /// A target of that name with the same kind, description and configuration was there: nothing
    /// changed, and this is it.
    Existing(Target),
}

impl Added {
    /// The target, new or existing.
    pub fn target(&self) -> &Target {
        match self {
            Added::Created(t) | Added::Existing(t) => t,
        }
    }
}

/// Storage of handoff targets. Every method is one atomic step with respect to other processes
/// using the same store.
pub trait TargetStore: Send + Sync + fmt::Debug {
    /// All targets, in the order they were added.
    ///
    /// # Errors
    /// The store cannot be read.
    fn list(&self) -> Result<Vec<Target>>;

    /// The target `id_or_name` names: by id, else by name in any case.
    ///
    /// # Errors
    /// [`Error::User`] when no target has that id or name; the store cannot be read.
    fn get(&self, id_or_name: &str) -> Result<Target> {
        lookup(&self.list()?, id_or_name).cloned()
    }

    /// Adds `target` unless one of its name (in any case) is there: the same again
    /// ([`Target::same_as`]) is [`Added::Existing`], a different one a conflict.
    ///
    /// # Errors
    /// [`Error::User`] on a conflict (naming the target and what differs); the store cannot be
    /// read or written.
    fn add(&self, target: Target) -> Result<Added>;

    /// Replaces the stored target of `target.id`, which must still be at `target.revision`, with
    /// `target`, one revision on and updated now; returns what was stored.
    ///
    /// # Errors
    /// [`Error::User`] when the target is gone, changed since it was read, or its new name is
    /// another target's; the store cannot be read or written.
    fn replace(&self, target: Target) -> Result<Target>;

    /// Removes the target `id`, returning it (`None` when it was not there).
    ///
    /// # Errors
    /// The store cannot be read or written.
    fn remove(&self, id: &TargetId) -> Result<Option<Target>>;

    /// Where the targets are, for messages: a path or a URL without credentials.
    fn location(&self) -> String;
}

/// The `targets.yaml` store.
#[derive(Debug, Clone)]
pub struct YamlTargetStore {
    path: PathBuf,
    lock_timeout: Duration,
}

/// The targets file's lock, as its messages name it.
const TARGETS_LOCK: crate::inventory::LockLabel = crate::inventory::LockLabel {
    what: "handoff targets file",
    opening: "opening the handoff targets' lock",
    locking: "locking the handoff targets",
};

/// The name of the file store's file in the broker directory.
pub const TARGETS_FILE: &str = "targets.yaml";

impl YamlTargetStore {
    /// A store for the targets file at `path`, waiting up to `lock_timeout` for other writers
    /// (the inventory's `inventory_lock_timeout` is the one to give).
    pub fn new(path: impl Into<PathBuf>, lock_timeout: Duration) -> Self {
        YamlTargetStore {
            path: path.into(),
            lock_timeout,
        }
    }

    /// The store of the broker directory `dir`: `dir/targets.yaml`.
    pub fn in_directory(dir: &Path, lock_timeout: Duration) -> Self {
        Self::new(dir.join(TARGETS_FILE), lock_timeout)
    }

    /// The store next to the inventory `settings` name, waiting `inventory_lock_timeout` for other
    /// writers.
    ///
    /// # Errors
    /// [`Error::Configuration`] when `inventory_lock_timeout` is not a duration.
    pub fn for_settings(settings: &crate::settings::Settings) -> Result<Self> {
        let inventory = settings.inventory_path();
        let dir = inventory.parent().unwrap_or(settings.directory());
        Ok(Self::in_directory(dir, settings.inventory_lock_timeout()?))
    }

    /// The targets file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<Vec<Target>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("reading handoff targets", &self.path, e)),
        };
        let text = crate::files::strip_bom(&text);
        if text.trim().is_empty() {
            return Ok(Vec::new());
        }
        let stored: Option<Vec<StoredTarget>> =
            serde_yaml::from_str(text).map_err(|e| Error::parse(&self.path, &e, false))?;
        Ok(stored
            .unwrap_or_default()
            .into_iter()
            .map(StoredTarget::into_target)
            .collect())
    }

    /// Runs `change` on the targets under the writers' lock and writes them back atomically when
    /// it says they changed.
    fn modify<T>(&self, change: impl FnOnce(&mut Vec<Target>) -> Result<(bool, T)>) -> Result<T> {
        let _lock = crate::inventory::lock_beside(&self.path, self.lock_timeout, &TARGETS_LOCK)?;
        let mut targets = self.read()?;
        let (changed, out) = change(&mut targets)?;
        if changed {
            let stored: Vec<StoredTarget> = targets.iter().map(StoredTarget::from).collect();
            let text = serde_yaml::to_string(&stored)
                .map_err(|e| Error::internal("cannot write the handoff targets as YAML", e))?;
            // A file holding a secret is the owner's alone, even one made readable by others before.
            let action = "writing handoff targets";
            if stored.iter().any(|t| !t.secrets.is_empty()) {
                crate::files::replace_private(&self.path, text.as_bytes(), action)?;
            } else {
                crate::files::replace(&self.path, text.as_bytes(), action)?;
            }
        }
        Ok(out)
    }
}

impl TargetStore for YamlTargetStore {
    fn list(&self) -> Result<Vec<Target>> {
        self.read()
    }

    fn add(&self, target: Target) -> Result<Added> {
        self.modify(|targets| {
            if let Some(there) = targets.iter().find(|t| t.is_named(&target.name)) {
                return if there.same_as(&target) {
                    Ok((false, Added::Existing(there.clone())))
                } else {
                    Err(conflict(there, &target))
                };
            }
            targets.push(target.clone());
            Ok((true, Added::Created(target)))
        })
    }

    fn replace(&self, target: Target) -> Result<Target> {
        self.modify(|targets| {
            let Some(at) = targets.iter().position(|t| t.id == target.id) else {
                return Err(Error::user(format!(
                    "handoff target `{}` ({}) is gone; another process removed it",
                    target.name, target.id
                )));
            };
            if targets[at].revision != target.revision {
                return Err(Error::user(format!(
                    "handoff target `{}` changed while this change was made (revision {} now, {} read); \
                     run the command again",
                    target.name, targets[at].revision, target.revision
                )));
            }
            if let Some(other) = targets
                .iter()
                .find(|t| t.id != target.id && t.is_named(&target.name))
            {
                return Err(Error::user(format!(
                    "another handoff target ({}) is called `{}`; choose another name",
                    other.id, other.name
                )));
            }
            let mut new = target;
            new.revision += 1;
            new.updated = crate::time::now_epoch();
            targets[at] = new.clone();
            Ok((true, new))
        })
    }

    fn remove(&self, id: &TargetId) -> Result<Option<Target>> {
        self.modify(|targets| {
            let at = targets.iter().position(|t| &t.id == id);
            Ok((at.is_some(), at.map(|at| targets.remove(at))))
        })
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }
}

/// The error for adding `new` when `there` has its name but differs.
fn conflict(there: &Target, new: &Target) -> Error {
    let what = if there.kind != new.kind {
        format!("kind `{}`, not `{}`", there.kind, new.kind)
    } else if there.description != new.description {
        "another description".to_owned()
    } else {
        let keys: Vec<&str> = there
            .config
            .iter()
            .chain(new.config.iter())
            .filter(|(k, _)| there.config.get(k) != new.config.get(k))
            .map(|(k, _)| k)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        format!("another value of {}", keys.join(", "))
    };
    Error::user(format!(
        "handoff target `{}` already exists with {what}; change it with `broker target update {}`",
        there.name, there.name
    ))
}

/// A target as `targets.yaml` holds it: plain values under `config`, secret ones under `secrets`
/// (the file is private to its owner, as the inventory is when broker makes it).
#[derive(Serialize, Deserialize)]
struct StoredTarget {
    id: TargetId,
    name: String,
    #[serde(default)]
    description: String,
    kind: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    config: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    secrets: BTreeMap<String, String>,
    created: i64,
    updated: i64,
    revision: u64,
}

impl From<&Target> for StoredTarget {
    fn from(t: &Target) -> Self {
        let (mut config, mut secrets) = (BTreeMap::new(), BTreeMap::new());
        for (key, value) in t.config.iter() {
            let into = if value.is_secret() {
                &mut secrets
            } else {
                &mut config
            };
            into.insert(key.to_owned(), value.expose().to_owned());
        }
        StoredTarget {
            id: t.id.clone(),
            name: t.name.clone(),
            description: t.description.clone(),
            kind: t.kind.clone(),
            config,
            secrets,
            created: t.created,
            updated: t.updated,
            revision: t.revision,
        }
    }
}

impl StoredTarget {
    fn into_target(self) -> Target {
        let mut config = TargetConfig::default();
        for (key, value) in self.config {
            config.insert(key, ConfigValue::Plain(value));
        }
        for (key, value) in self.secrets {
            config.insert(key, ConfigValue::Secret(value.into()));
        }
        Target {
            id: self.id,
            name: self.name,
            description: self.description,
            kind: self.kind,
            config,
            created: self.created,
            updated: self.updated,
            revision: self.revision,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, YamlTargetStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = YamlTargetStore::in_directory(dir.path(), Duration::from_secs(5));
        (dir, store)
    }

    fn target(name: &str, server: &str) -> Target {
        let mut config = TargetConfig::default();
        config.insert("server", ConfigValue::new(server, false));
        config.insert("key", ConfigValue::new("SECRET-VALUE", true));
        Target::new(name, "prod", "puppet", config).unwrap()
    }

    #[test]
    fn adding_the_same_target_twice_is_idempotent_and_a_different_one_conflicts() {
        let (_dir, store) = store();
        let first = target("puppet-prod", "p.example.com");
        assert_eq!(
            store.add(first.clone()).unwrap(),
            Added::Created(first.clone())
        );
        let again = target("PUPPET-prod", "p.example.com");
        assert_eq!(store.add(again).unwrap(), Added::Existing(first.clone()));
        let other = target("puppet-prod", "q.example.com");
        assert_eq!(
            store.add(other).unwrap_err().to_string(),
            "handoff target `puppet-prod` already exists with another value of server; \
             change it with `broker target update puppet-prod`"
        );
        assert_eq!(store.list().unwrap(), vec![first]);
    }

    #[cfg(unix)]
    #[test]
    fn a_file_made_readable_by_others_is_the_owners_alone_once_it_holds_a_secret() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |store: &YamlTargetStore| {
            std::fs::metadata(store.path())
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        let (_dir, store) = store();
        let plain = |name: &str| {
            let mut config = TargetConfig::default();
            config.insert("server", ConfigValue::new("p.example.com", false));
            Target::new(name, "", "puppet", config).unwrap()
        };
        store.add(plain("plain")).unwrap();
        std::fs::set_permissions(store.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        // Without a secret the file keeps the mode its owner gave it ...
        store.add(plain("plain-2")).unwrap();
        assert_eq!(mode(&store), 0o644);
        // ... and with one it is closed.
        store.add(target("with-secret", "q.example.com")).unwrap();
        assert_eq!(mode(&store), 0o600);
    }

    #[test]
    fn secrets_are_kept_apart_in_the_file_and_read_back_as_secrets() {
        let (_dir, store) = store();
        let added = target("p", "p.example.com");
        store.add(added.clone()).unwrap();
        let text = std::fs::read_to_string(store.path()).unwrap();
        let file: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(file[0]["secrets"]["key"].as_str(), Some("SECRET-VALUE"));
        assert_eq!(file[0]["config"]["server"].as_str(), Some("p.example.com"));
        let read = store.get("p").unwrap();
        assert!(read.config.get("key").unwrap().is_secret());
        assert_eq!(read, added);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(store.path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn replace_moves_the_revision_on_and_refuses_a_stale_one_or_a_taken_name() {
        let (_dir, store) = store();
        let a = target("a", "a.example.com");
        store.add(a.clone()).unwrap();
        store.add(target("b", "b.example.com")).unwrap();
        let mut changed = a.clone();
        changed.description = "new".into();
        let stored = store.replace(changed).unwrap();
        assert_eq!((stored.revision, stored.created), (2, a.created));
        assert_eq!(store.get("a").unwrap(), stored);

        let stale = a.clone();
        assert!(
            store
                .replace(stale)
                .unwrap_err()
                .to_string()
                .contains("changed while this change was made (revision 2 now, 1 read)")
        );
        let mut renamed = stored;
        renamed.name = "B".into();
        assert!(
            store
                .replace(renamed)
                .unwrap_err()
                .to_string()
                .ends_with("is called `b`; choose another name")
        );
    }

    #[test]
    fn remove_takes_the_target_out_once() {
        let (_dir, store) = store();
        let a = target("a", "a.example.com");
        store.add(a.clone()).unwrap();
        assert_eq!(store.remove(&a.id).unwrap(), Some(a.clone()));
        assert_eq!(store.remove(&a.id).unwrap(), None);
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn a_file_that_does_not_parse_is_an_error_and_kept() {
        let (_dir, store) = store();
        std::fs::write(store.path(), "- id: [unclosed\n").unwrap();
        assert!(store.list().is_err());
        assert!(store.add(target("a", "a.example.com")).is_err());
        assert_eq!(
            std::fs::read_to_string(store.path()).unwrap(),
            "- id: [unclosed\n"
        );
    }

    #[test]
    fn a_lock_held_too_long_names_the_targets_file_not_the_inventory() {
        let (_dir, store) = store();
        let held =
            crate::inventory::lock_beside(store.path(), Duration::from_secs(5), &TARGETS_LOCK)
                .unwrap();
        let waiting = YamlTargetStore::new(store.path(), Duration::from_millis(100));
        let err = waiting.add(target("a", "a.example.com")).unwrap_err();
        let lock = format!("{}.flock", store.path().display());
        assert!(
            err.to_string().starts_with(&format!(
                "handoff targets file `{lock}` is locked by another process"
            )),
            "{err}"
        );
        assert!(!err.to_string().contains("inventory `"), "{err}");
        drop(held);
        waiting.add(target("a", "a.example.com")).unwrap();
    }

    #[test]
    fn concurrent_writers_lose_no_target() {
        const WRITERS: usize = 8;
        const ADDS: usize = 10;
        let (_dir, store) = store();
        std::thread::scope(|scope| {
            for w in 0..WRITERS {
                let path = store.path().to_owned();
                scope.spawn(move || {
                    // Each writer uses its own handle, as another process would.
                    let store = YamlTargetStore::new(path, Duration::from_secs(60));
                    for i in 0..ADDS {
                        let name = format!("w{w}-{i}");
                        store.add(target(&name, "p.example.com")).unwrap();
                    }
                });
            }
        });
        let mut names: Vec<String> = store.list().unwrap().into_iter().map(|t| t.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), WRITERS * ADDS);
    }
}
