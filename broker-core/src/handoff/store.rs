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
use crate::handoff::schema::{KeySpec, KindSchema};
use crate::handoff::target::{Target, TargetConfig, TargetId, lookup};

#[cfg(any(test, feature = "conformance"))]
pub mod suite;

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
    /// The schemas a listing checks targets against ([`YamlTargetStore::checked_against`]).
    kinds: Option<&'static [KindSchema]>,
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
            kinds: None,
        }
    }

    /// This store, checking every target of the `kinds` it reads (the file may have been edited by
    /// hand) as `broker target add` would have: an unknown key or a refused value is an
    /// [`Error::Parse`] at that key's line and column, a missing required key one at the target's
    /// `config:`. Targets of other kinds (a third party's) are not checked. Changes (`add`,
    /// `replace`, `remove`) still work on a file that fails the check, so it can be mended with
    /// `broker target update` or `remove`.
    #[must_use]
    pub fn checked_against(mut self, kinds: &'static [KindSchema]) -> Self {
        self.kinds = Some(kinds);
        self
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

    /// The targets, checked against the store's kinds (if any); the file's text, for locating.
    fn read_checked(&self) -> Result<Vec<Target>> {
        let (targets, text) = self.read_text()?;
        if let Some(kinds) = self.kinds {
            for warning in check_schemas(&self.path, &text, &targets, kinds)? {
                tracing::warn!("{warning}");
            }
        }
        Ok(targets)
    }

    fn read(&self) -> Result<Vec<Target>> {
        self.read_text().map(|(targets, _)| targets)
    }

    fn read_text(&self) -> Result<(Vec<Target>, String)> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
            Err(e) => return Err(Error::io("reading handoff targets", &self.path, e)),
        };
        let text = crate::files::strip_bom(&text);
        if text.trim().is_empty() {
            return Ok(Default::default());
        }
        let stored: Option<Vec<StoredTarget>> =
            serde_yaml::from_str(text).map_err(|e| Error::parse(&self.path, &e, false))?;
        let targets = stored
            .unwrap_or_default()
            .into_iter()
            .map(StoredTarget::into_target)
            .collect();
        Ok((targets, text.to_owned()))
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
        self.read_checked()
    }

    fn add(&self, target: Target) -> Result<Added> {
        self.modify(|targets| {
            let added = plan_add(targets, target)?;
            let created = matches!(added, Added::Created(_));
            if created {
                targets.push(added.target().clone());
            }
            Ok((created, added))
        })
    }

    fn replace(&self, target: Target) -> Result<Target> {
        self.modify(|targets| {
            let (at, new) = plan_replace(targets, target)?;
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

/// What adding `target` to the stored `targets` comes to, as every store decides it: a target of
/// its name (in any case) that is the same ([`Target::same_as`]) is [`Added::Existing`], one that
/// differs a conflict; otherwise [`Added::Created`] (which the store then writes).
///
/// # Errors
/// [`Error::User`] on a conflict, naming the target and what differs.
pub fn plan_add(targets: &[Target], target: Target) -> Result<Added> {
    match targets.iter().find(|t| t.is_named(&target.name)) {
        Some(there) if there.same_as(&target) => Ok(Added::Existing(there.clone())),
        Some(there) => Err(conflict(there, &target)),
        None => Ok(Added::Created(target)),
    }
}

/// What replacing the stored target of `target.id` with `target` comes to, as every store decides
/// it: the index in `targets` of the target replaced, and the target to store there (one revision
/// on, updated now).
///
/// # Errors
/// [`Error::User`] when the target is gone, is no longer at `target.revision` (another process
/// changed it since it was read), or its new name is another target's.
pub fn plan_replace(targets: &[Target], target: Target) -> Result<(usize, Target)> {
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
    Ok((at, new))
}

/// Checks each target of a kind broker knows the schema of as `broker target add` would have (a
/// file may be edited by hand): a value its key refuses is an error at that key's line, a missing
/// required key one at its target's `config:`. A key the kind does not have is a warning (returned)
/// at its line, not an error: a key a kind dropped must not make the whole file unusable, and is
/// what `broker target update` can clear. Other kinds (a third party's) were checked when they were
/// added.
fn check_schemas(
    path: &Path,
    text: &str,
    targets: &[Target],
    kinds: &[KindSchema],
) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    for (index, target) in targets.iter().enumerate() {
        let Ok(kind) = crate::handoff::schema::find_kind(kinds, &target.kind) else {
            continue;
        };
        let fault = |key: Option<&str>, e: &Error| {
            let (line, column) = locate(text, index, key);
            Error::Parse {
                path: path.to_owned(),
                line,
                column,
                message: format!("handoff target `{}`: {e}", target.name),
                settings: false,
            }
        };
        let mut known = BTreeMap::new();
        for (key, value) in target.config.iter() {
            let Some(spec) = kind.key(key) else {
                if let Err(e) = kind.refuse_unknown([key]) {
                    let (line, column) = locate(text, index, Some(key));
                    warnings.push(format!(
                        "`{}` at line {line}, column {column}: handoff target `{}`: {e}; it is \
                         left as it is (`broker target update {} --clear {key}` drops it)",
                        path.display(),
                        target.name,
                        target.name
                    ));
                }
                continue;
            };
            // A value kept under `secrets:` is not shown, whatever its key.
            let spec = KeySpec {
                secret: spec.secret || value.is_secret(),
                ..*spec
            };
            spec.check(value.expose())
                .map_err(|e| fault(Some(key), &e))?;
            known.insert(key.to_owned(), value.clone());
        }
        kind.validate(known).map_err(|e| fault(None, &e))?;
    }
    Ok(warnings)
}

/// Where, in a file laid out as broker writes it, the `index`-th target has `key` (under
/// `config:` or `secrets:`), or — for `None` or a key not found — its `config:`, else its first
/// line: one-based line and column; `(0, 0)` when the target cannot be found.
fn locate(text: &str, index: usize, key: Option<&str>) -> (usize, usize) {
    let lines: Vec<&str> = text.lines().collect();
    let starts: Vec<usize> = (0..lines.len())
        .filter(|n| lines[*n].starts_with('-'))
        .collect();
    let Some(&start) = starts.get(index) else {
        return (0, 0);
    };
    let end = starts.get(index + 1).copied().unwrap_or(lines.len());
    let at = |n: usize, nested: bool, name: &str| {
        let body = lines[n].trim_start();
        let indent = lines[n].len() - body.len();
        let named = body
            .strip_prefix(name)
            .is_some_and(|rest| rest.trim_start().starts_with(':'));
        (named && (indent > 2) == nested).then_some((n + 1, indent + 1))
    };
    key.and_then(|key| (start..end).find_map(|n| at(n, true, key)))
        .or_else(|| (start..end).find_map(|n| at(n, false, "config")))
        .unwrap_or((start + 1, 1))
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
/// (the file is private to its owner, as the inventory is when broker makes it). A key it does not
/// know is an error at that key (a `secret:` meant as `secrets:` would otherwise be dropped).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
        let (config, secrets) = t.config.split();
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
        let config = TargetConfig::from_split(self.config, self.secrets);
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
    use std::sync::Arc;

    use super::*;
    use crate::handoff::target::ConfigValue;
    use suite::target;

    fn store() -> (tempfile::TempDir, YamlTargetStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = YamlTargetStore::in_directory(dir.path(), Duration::from_secs(5));
        (dir, store)
    }

    /// The suite every store passes, on `targets.yaml`: each handle a store of its own on one
    /// file, as another process would have.
    fn run(check: fn(suite::Open)) {
        let (_dir, store) = store();
        let path = store.path().to_owned();
        check(&move || Box::new(YamlTargetStore::new(path.clone(), Duration::from_secs(60))));
    }

    #[test]
    fn the_target_store_suite_passes_on_the_file() {
        run(suite::adding_the_same_target_twice_is_idempotent_and_a_different_one_conflicts);
        run(suite::secrets_read_back_as_secrets);
        run(suite::replace_moves_the_revision_on_and_refuses_a_stale_one_or_a_taken_name);
        run(suite::remove_takes_the_target_out_once);
        run(suite::concurrent_writers_lose_no_target);
        run(suite::of_writers_replacing_one_revision_exactly_one_wins);
        run(suite::one_name_added_at_once_in_many_cases_is_stored_once);
    }

    /// A store that gets every rule of the suite wrong, for the suite's own test: names match only
    /// as written, secrets are kept as plain text, a replacement neither checks nor moves the
    /// revision, a removal removes nothing, and each change is written over the list as its
    /// handle read it — all of a round of concurrent calls (`race`) read before any writes.
    #[derive(Debug)]
    struct Naive {
        targets: Arc<std::sync::Mutex<Vec<Target>>>,
        /// Where the concurrent calls wait for one another: `add` or `replace`, and how many.
        race: Option<(&'static str, Arc<std::sync::Barrier>)>,
    }

    impl Naive {
        fn read(&self) -> Vec<Target> {
            self.targets.lock().unwrap().clone()
        }

        /// Writes `read` changed by `change`, once every racer of `call` has read.
        fn write(&self, call: &str, mut read: Vec<Target>, change: impl FnOnce(&mut Vec<Target>)) {
            if let Some((racing, others)) = &self.race
                && *racing == call
            {
                others.wait();
            }
            change(&mut read);
            *self.targets.lock().unwrap() = read;
        }
    }

    impl TargetStore for Naive {
        fn list(&self) -> Result<Vec<Target>> {
            Ok(self.read())
        }
        fn add(&self, target: Target) -> Result<Added> {
            let read = self.read();
            if let Some(there) = read.iter().find(|t| t.name == target.name) {
                return Ok(Added::Existing(there.clone()));
            }
            let (mut plain, secret) = target.config.split();
            plain.extend(secret);
            let mut kept = target.clone();
            kept.config = TargetConfig::from_split(plain, BTreeMap::new());
            self.write("add", read, |list| list.push(kept));
            Ok(Added::Created(target))
        }
        fn replace(&self, target: Target) -> Result<Target> {
            let read = self.read();
            let stored = target.clone();
            self.write("replace", read, |list| {
                list.iter_mut()
                    .filter(|t| t.id == stored.id)
                    .for_each(|t| *t = stored.clone());
            });
            Ok(target)
        }
        fn remove(&self, id: &TargetId) -> Result<Option<Target>> {
            Ok(self.read().into_iter().find(|t| &t.id == id))
        }
        fn location(&self) -> String {
            "memory".into()
        }
    }

    /// Each check of the suite fails a store that breaks its rule: the suite can fail.
    #[test]
    fn the_suite_fails_a_store_that_breaks_its_rules() {
        /// A check, and the call at which its concurrent callers race, and how many they are.
        type Check = (fn(suite::Open), Option<(&'static str, usize)>);
        let checks: [Check; 7] = [
            (
                suite::adding_the_same_target_twice_is_idempotent_and_a_different_one_conflicts,
                None,
            ),
            (suite::secrets_read_back_as_secrets, None),
            (
                suite::replace_moves_the_revision_on_and_refuses_a_stale_one_or_a_taken_name,
                None,
            ),
            (suite::remove_takes_the_target_out_once, None),
            (suite::concurrent_writers_lose_no_target, Some(("add", 8))),
            (
                suite::of_writers_replacing_one_revision_exactly_one_wins,
                Some(("replace", 6)),
            ),
            (
                suite::one_name_added_at_once_in_many_cases_is_stored_once,
                Some(("add", 6)),
            ),
        ];
        for (n, (check, race)) in checks.into_iter().enumerate() {
            let targets = Arc::new(std::sync::Mutex::new(Vec::new()));
            let race = race.map(|(call, racers)| (call, Arc::new(std::sync::Barrier::new(racers))));
            let open = move || {
                Box::new(Naive {
                    targets: Arc::clone(&targets),
                    race: race.clone(),
                }) as Box<dyn TargetStore>
            };
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&open)));
            assert!(
                ran.is_err(),
                "check #{} passed a store that breaks it",
                n + 1
            );
        }
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

    /// Where `store.list()` says its file is wrong: line, column and message.
    fn fault(store: &YamlTargetStore, text: &str) -> (usize, usize, String) {
        std::fs::write(store.path(), text).unwrap();
        match store.list().unwrap_err() {
            Error::Parse {
                path,
                line,
                column,
                message,
                settings: false,
            } if path == store.path() => (line, column, message),
            other => panic!("{other:?}"),
        }
    }

    const GOOD: &str =
        "- id: t1\n  name: a\n  kind: noop\n  created: 0\n  updated: 0\n  revision: 1\n";

    #[test]
    fn a_hand_edited_file_is_checked_against_the_kinds_schema_at_the_bad_key() {
        let (_dir, store) = store();
        let store = store.checked_against(crate::handoff::schema::builtin());
        let item = |config: &str| {
            format!(
                "{GOOD}- id: t2\n  name: b\n  kind: script\n  config:\n{config}  created: 0\n  \
                 updated: 0\n  revision: 1\n"
            )
        };
        let text = item("    script: /x\n    bogus: 1\n");
        std::fs::write(store.path(), &text).unwrap();
        let targets = store.list().unwrap();
        let warnings = check_schemas(
            store.path(),
            &text,
            &targets,
            crate::handoff::schema::builtin(),
        )
        .unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with(&format!(
                "`{}` at line 12, column 5: handoff target `b`: unknown key `bogus` for kind \
                 `script`",
                store.path().display()
            )),
            "{warnings:?}"
        );
        assert!(
            warnings[0].ends_with(
                "; it is left as it is (`broker target update b --clear bogus` drops it)"
            ),
            "{warnings:?}"
        );
        let (line, column, message) = fault(&store, &item("    script: /x\n    retries: lots\n"));
        assert_eq!((line, column), (12, 5), "{message}");
        assert!(
            message.starts_with("handoff target `b`: invalid value `lots` for key `retries`"),
            "{message}"
        );
        let (line, column, message) = fault(&store, &item("    data: /x\n"));
        assert_eq!((line, column), (10, 3), "{message}");
        assert!(
            message.starts_with("handoff target `b`: missing required key `script`"),
            "{message}"
        );
        // A file that fails the check can still be mended through the store.
        assert!(store.remove(&"t2".into()).unwrap().is_some());
        assert_eq!(store.list().unwrap().len(), 1);
        // A kind this broker has no schema of (a third party's) is checked when it is added.
        std::fs::write(store.path(), GOOD.replace("noop", "custom")).unwrap();
        assert_eq!(store.list().unwrap()[0].kind, "custom");
    }

    /// Where a target's key is: under its `config:` or `secrets:` (not a target field of the same
    /// name), else at its `config:`, else at its first line; nowhere for a target not there.
    #[test]
    fn a_targets_key_is_located_in_its_own_item() {
        let text = "- id: t1\n  name: a\n  kind: noop\n- id: t2\n  name: b\n  kind: script\n  \
                    config:\n    script: /x\n  secrets:\n    token: s\n    name: inner\n";
        assert_eq!(locate(text, 0, None), (1, 1));
        assert_eq!(locate(text, 0, Some("name")), (1, 1), "a field, not a key");
        assert_eq!(locate(text, 1, Some("script")), (8, 5));
        assert_eq!(locate(text, 1, Some("token")), (10, 5));
        assert_eq!(locate(text, 1, Some("name")), (11, 5));
        assert_eq!(
            locate(text, 1, Some("scr")),
            (7, 3),
            "a key is matched whole"
        );
        assert_eq!(locate(text, 1, None), (7, 3));
        assert_eq!(locate(text, 2, None), (0, 0));
    }

    #[test]
    fn an_unknown_key_of_an_item_is_refused_at_the_key() {
        let (_dir, store) = store();
        let text = format!(
            "{GOOD}- id: t2\n  name: b\n  kind: noop\n  secret:\n    password: x\n  created: 0\n  updated: 0\n  revision: 1\n"
        );
        let (line, column, message) = fault(&store, &text);
        assert_eq!((line, column), (10, 3), "{message}");
        assert!(message.contains("unknown field `secret`"), "{message}");
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
}
