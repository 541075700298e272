//! The local record of every host that is out.
//!
//! Storage sits behind [`InventoryStore`] so that a shared database can replace the file for CI fleets.
//! The default store, [`YamlFileStore`], keeps the Python broker's `inventory.yaml` format (a YAML list
//! of host mappings) and makes it safe for many processes at once:
//!
//! - readers take no lock: the file is only ever replaced whole, by rename, so a reader sees the old
//!   file or the new one;
//! - writers hold an OS advisory lock (`flock`) on a sidecar file, `inventory.yaml.flock`, only across
//!   read-modify-write, waiting at most `inventory_lock_timeout`. The kernel drops the lock when its
//!   process dies, so a crash never leaves a stale lock;
//! - a write goes to a temporary file in the same directory, is fsynced, renamed over the inventory,
//!   and the directory is fsynced: a `kill -9` at any instant leaves the old file or the new one;
//! - records are removed by their stable identity ([`HostRecord::id`]), never by a field that may be
//!   empty.
//!
//! The sidecar lock does not interoperate with the Python broker's `inventory.yaml.lock` file: do not run
//! both tools against one broker directory at the same moment. Keep the broker directory on a local file
//! system; `flock` is unreliable over some NFS setups.

use std::collections::HashMap;
use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_yaml::Value;

use crate::error::{Error, Result};
use crate::host::{HostRecord, HostState, RecordId, fields};

mod blocks;
use blocks::Blocks;

/// Storage of inventory records.
///
/// Every method is one atomic step with respect to other processes using the same store.
pub trait InventoryStore: Send + Sync + fmt::Debug {
    /// All records, in order.
    ///
    /// # Errors
    /// Read or parse failures (a file that does not parse is never overwritten).
    fn list(&self) -> Result<Vec<HostRecord>>;

    /// Inserts records, replacing any record with the same identity in place.
    ///
    /// # Errors
    /// Lock, read, parse or write failures; on error nothing is changed.
    fn put(&self, records: &[HostRecord]) -> Result<()>;

    /// Removes the records with these identities; returns the identities that were present.
    ///
    /// # Errors
    /// Lock, read, parse or write failures; on error nothing is changed.
    fn remove(&self, ids: &[RecordId]) -> Result<Vec<RecordId>>;

    /// Replaces a provider's (or one of its instances') records with what the provider reports, keeping
    /// records still being checked out or in, and merging old fields into the new records of the same
    /// host (hostname or name).
    ///
    /// # Errors
    /// Lock, read, parse or write failures; on error nothing is changed.
    fn sync_provider(
        &self,
        provider: &str,
        instance: Option<&str>,
        reported: Vec<HostRecord>,
    ) -> Result<SyncReport>;

    /// Where the records live, for messages (`/home/me/.broker/inventory.yaml`).
    fn location(&self) -> String;

    /// Whether only the owner can read the records. Secret-looking arguments and fields are stored
    /// in clear (for `broker duplicate` and check-in workflows) only in a private store; elsewhere
    /// they are stored masked (see [`crate::redact`]). A store that cannot tell is not private.
    fn is_private(&self) -> bool {
        false
    }
}

/// What a sync changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyncReport {
    /// Hosts the provider reported that the inventory did not know.
    pub added: usize,
    /// Hosts already known, updated with the provider's fields.
    pub updated: usize,
    /// Hosts the inventory knew that the provider no longer has.
    pub removed: usize,
    /// The names of the added hosts: what the provider holds that no record knew (orphans).
    pub added_hosts: Vec<String>,
}

/// The `inventory.yaml` store.
#[derive(Debug, Clone)]
pub struct YamlFileStore {
    path: PathBuf,
    lock_path: PathBuf,
    lock_timeout: Duration,
}

impl YamlFileStore {
    /// A store for the inventory at `path`, waiting up to `lock_timeout` for other writers.
    pub fn new(path: impl Into<PathBuf>, lock_timeout: Duration) -> Self {
        let path = path.into();
        let mut lock_name = path
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        lock_name.push(".flock");
        let lock_path = path.with_file_name(lock_name);
        YamlFileStore {
            path,
            lock_path,
            lock_timeout,
        }
    }

    /// The inventory file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read_text(&self) -> Result<String> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => Ok(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(Error::io("reading inventory", &self.path, e)),
        }
    }

    /// Runs `change` on the file's text under the writer lock and writes what it returns atomically.
    fn modify<T>(&self, change: impl FnOnce(&str) -> Result<(String, T)>) -> Result<T> {
        let _lock = self.lock()?;
        let text = self.read_text()?;
        let (new_text, out) = change(&text)?;
        if new_text != text {
            self.write(new_text.as_bytes())?;
        }
        Ok(out)
    }

    /// Parses, changes and re-emits the whole document: the general path.
    fn modify_records<T>(
        &self,
        text: &str,
        change: impl FnOnce(&mut Vec<HostRecord>) -> T,
    ) -> Result<(String, T)> {
        let mut records = parse_inventory(&self.path, text)?;
        let out = change(&mut records);
        Ok((self.emit(&records)?, out))
    }

    fn emit(&self, records: &[HostRecord]) -> Result<String> {
        if records.is_empty() {
            return Ok("[]\n".to_owned());
        }
        serde_yaml::to_string(records)
            .map_err(|e| Error::io("writing inventory", &self.path, std::io::Error::other(e)))
    }

    fn lock(&self) -> Result<LockGuard> {
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating broker directory", dir, e))?;
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.lock_path)
            .map_err(|e| Error::io("opening inventory lock", &self.lock_path, e))?;
        let started = Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    if started.elapsed() >= self.lock_timeout {
                        let holder = std::fs::read_to_string(&self.lock_path)
                            .ok()
                            .map(|s| s.trim().to_owned())
                            .filter(|s| !s.is_empty())
                            .unwrap_or_else(|| "unknown holder".into());
                        return Err(Error::InventoryLocked {
                            path: self.lock_path.clone(),
                            holder,
                            waited: started.elapsed(),
                        });
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(Error::io("locking inventory", &self.lock_path, e));
                }
            }
        }
        // For diagnostics only: who holds the lock. The lock itself is the flock, not this text.
        let owner = crate::host::Owner::current();
        let mut f = &file;
        let _ = f.set_len(0);
        let _ = writeln!(
            f,
            "pid {} on {} (user {})",
            owner.pid, owner.machine, owner.user
        );
        Ok(LockGuard { file })
    }

    fn write(&self, contents: &[u8]) -> Result<()> {
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let failed = |e| Error::io("writing inventory", &self.path, e);
        let mut tmp = tempfile::Builder::new()
            .prefix(".inventory.")
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(failed)?;
        tmp.write_all(contents).map_err(failed)?;
        tmp.as_file().sync_all().map_err(failed)?;
        tmp.persist(&self.path).map_err(|e| failed(e.error))?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

struct LockGuard {
    file: File,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// Parses inventory text (a YAML list of mappings; empty text is an empty inventory).
///
/// Large inventories in the usual block layout are parsed in parallel, one slice of entries per core.
///
/// # Errors
/// [`Error::Parse`] naming file, line and column.
pub fn parse_inventory(path: &Path, text: &str) -> Result<Vec<HostRecord>> {
    const PARALLEL_FROM_BYTES: usize = 256 * 1024;
    if text.len() >= PARALLEL_FROM_BYTES
        && let Some(blocks) = Blocks::split(text)
    {
        let cores = std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
            .min(4);
        let chunks = blocks.chunks(cores);
        if chunks.len() > 1 {
            let parsed: Vec<Option<Vec<HostRecord>>> = std::thread::scope(|scope| {
                let handles: Vec<_> = chunks
                    .iter()
                    .map(|chunk| scope.spawn(move || parse_whole(path, chunk).ok()))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().ok().flatten())
                    .collect()
            });
            if parsed.iter().all(Option::is_some) {
                return Ok(parsed.into_iter().flatten().flatten().collect());
            }
            // Fall through: the whole-document parse reports the exact location.
        }
    }
    parse_whole(path, text)
}

/// Checks that the text is an inventory (a list of mappings) without building it: the fast edits
/// below never write into a file broker could not read back.
fn check_syntax(path: &Path, text: &str) -> Result<()> {
    let chunks: Vec<&str> = match Blocks::split(text) {
        Some(blocks) if text.len() >= 256 * 1024 => blocks.chunks(2),
        _ => vec![text],
    };
    let ok = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|chunk| {
                scope.spawn(move || serde_yaml::from_str::<Option<Vec<AnyMapping>>>(chunk).is_ok())
            })
            .collect();
        handles.into_iter().all(|h| h.join().unwrap_or(false))
    });
    if ok {
        Ok(())
    } else {
        parse_whole(path, text).map(drop)
    }
}

/// A mapping whose content is checked for syntax and thrown away.
struct AnyMapping;

impl<'de> serde::Deserialize<'de> for AnyMapping {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = AnyMapping;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a host mapping")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<AnyMapping, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(AnyMapping)
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

fn parse_whole(path: &Path, text: &str) -> Result<Vec<HostRecord>> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let parsed: Option<Vec<HostRecord>> =
        serde_yaml::from_str(text).map_err(|e| Error::parse(path, &e, false))?;
    Ok(parsed.unwrap_or_default())
}

/// One record as a sequence entry (`- key: value …`).
fn emit_entry(path: &Path, record: &HostRecord) -> Result<String> {
    serde_yaml::to_string(std::slice::from_ref(record))
        .map_err(|e| Error::io("writing inventory", path, std::io::Error::other(e)))
}

/// Adds or replaces records by splicing entries, when the text allows; `None` means "parse instead".
fn put_fast(path: &Path, text: &str, new: &[HostRecord]) -> Result<Option<String>> {
    let Some(blocks) = Blocks::split(text) else {
        return Ok(None);
    };
    check_syntax(path, text)?;
    let mut edits = Vec::new();
    let mut appended = Vec::new();
    for record in new {
        if !record.has_broker_id() {
            return Ok(None);
        }
        let id = record.id();
        let entry = emit_entry(path, record)?;
        match blocks.find_id(id.as_str()) {
            Some(i) => edits.push((i, Some(entry))),
            // Absent for certain only when the identity appears nowhere in the text.
            None if !text.contains(id.as_str()) => appended.push(entry),
            None => return Ok(None),
        }
    }
    Ok(Some(blocks.rewrite(&edits, &appended)))
}

/// Removes broker's own records by splicing entries; `None` means "parse instead".
fn remove_fast(
    path: &Path,
    text: &str,
    ids: &[RecordId],
) -> Result<Option<(String, Vec<RecordId>)>> {
    let Some(blocks) = Blocks::split(text) else {
        return Ok(None);
    };
    check_syntax(path, text)?;
    let mut edits = Vec::new();
    let mut removed = Vec::new();
    for id in ids {
        if id.as_str().starts_with("legacy-") {
            return Ok(None);
        }
        match blocks.find_id(id.as_str()) {
            Some(i) => {
                if !edits.iter().any(|(at, _)| *at == i) {
                    edits.push((i, None));
                    removed.push(id.clone());
                }
            }
            None if !text.contains(id.as_str()) => {}
            None => return Ok(None),
        }
    }
    Ok(Some((blocks.rewrite(&edits, &[]), removed)))
}

impl InventoryStore for YamlFileStore {
    fn list(&self) -> Result<Vec<HostRecord>> {
        parse_inventory(&self.path, &self.read_text()?)
    }

    fn put(&self, new: &[HostRecord]) -> Result<()> {
        self.modify(|text| {
            if let Some(out) = put_fast(&self.path, text, new)? {
                return Ok((out, ()));
            }
            self.modify_records(text, |records| {
                for record in new {
                    let id = record.id();
                    match records.iter().position(|r| r.id() == id) {
                        Some(i) => records[i] = record.clone(),
                        None => records.push(record.clone()),
                    }
                }
            })
        })
    }

    fn remove(&self, ids: &[RecordId]) -> Result<Vec<RecordId>> {
        self.modify(|text| {
            if let Some(done) = remove_fast(&self.path, text, ids)? {
                return Ok(done);
            }
            self.modify_records(text, |records| {
                let mut wanted: HashSet<&RecordId> = ids.iter().collect();
                let mut removed = Vec::new();
                records.retain(|r| {
                    if wanted.is_empty() {
                        return true;
                    }
                    let id = r.id();
                    if wanted.remove(&id) {
                        removed.push(id);
                        false
                    } else {
                        true
                    }
                });
                removed
            })
        })
    }

    fn sync_provider(
        &self,
        provider: &str,
        instance: Option<&str>,
        reported: Vec<HostRecord>,
    ) -> Result<SyncReport> {
        self.modify(|text| {
            self.modify_records(text, |records| {
                merge_sync(records, provider, instance, reported)
            })
        })
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    /// Private when neither group nor others may read the file (through a symlink: its target). A
    /// file not written yet is private: broker creates it readable by its owner only.
    fn is_private(&self) -> bool {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::metadata(&self.path) {
            Ok(meta) => meta.permissions().mode() & 0o044 == 0,
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        }
    }
}

/// The sync merge, shared by every store.
///
/// The provider's view replaces this provider instance's `ready` records: a reported host that matches
/// a record (same `_broker_id`, `hostname` or `name`) updates it, one that matches none is added, and
/// records matching no reported host are dropped. Records being checked out or in (`pending`,
/// `releasing`) are left as they are. Linear in the number of records (a sync of thousands of hosts
/// must not take seconds).
pub fn merge_sync(
    records: &mut Vec<HostRecord>,
    provider: &str,
    instance: Option<&str>,
    reported: Vec<HostRecord>,
) -> SyncReport {
    let belongs = |r: &HostRecord| {
        r.provider() == Some(provider)
            && match (instance, r.instance()) {
                (Some(wanted), Some(have)) => wanted == have,
                _ => true,
            }
    };
    let mut report = SyncReport::default();
    let mut old: Vec<HostRecord> = Vec::new();
    records.retain(|r| {
        if belongs(r) && r.state() == HostState::Ready {
            old.push(r.clone());
            false
        } else {
            true
        }
    });
    let mut old_keys = HostKeys::default();
    for (i, o) in old.iter().enumerate() {
        old_keys.insert(o, i);
    }
    // The records that stay as they are, and those this sync writes: a reported host matching one
    // of them is not taken again.
    let mut present = HostKeys::default();
    for r in records.iter().filter(|r| belongs(r)) {
        present.insert(r, 0);
    }
    let mut matched = vec![false; old.len()];
    for mut new in reported {
        // A host already being checked out or in by someone keeps its record as it is.
        if present.find(&new).is_some() {
            continue;
        }
        let record = if let Some(i) = old_keys.find(&new) {
            matched[i] = true;
            let mut merged = old[i].clone();
            merged.merge(std::mem::take(new.fields_mut()));
            report.updated += 1;
            merged
        } else {
            if new.provider().is_none() {
                new.set(fields::PROVIDER, provider);
            }
            if let (Some(i), None) = (instance, new.instance()) {
                new.set(fields::PROVIDER_INSTANCE, i);
            }
            report.added_hosts.push(new.display_name());
            report.added += 1;
            new
        };
        present.insert(&record, 0);
        records.push(record);
    }
    report.removed = matched.iter().filter(|m| !**m).count();
    report
}

/// The identities a record answers to in a sync — `_broker_id`, `hostname`, `name` — each mapped to
/// the first record (by position) that has it.
#[derive(Default)]
struct HostKeys {
    ids: HashMap<String, usize>,
    hostnames: HashMap<String, usize>,
    names: HashMap<String, usize>,
}

impl HostKeys {
    fn insert(&mut self, r: &HostRecord, position: usize) {
        if r.has_broker_id() {
            self.ids
                .entry(r.id().as_str().to_owned())
                .or_insert(position);
        }
        if let Some(h) = r.hostname() {
            self.hostnames.entry(h.to_owned()).or_insert(position);
        }
        if let Some(n) = r.name() {
            self.names.entry(n.to_owned()).or_insert(position);
        }
    }

    /// The first record sharing an identity with `r`.
    fn find(&self, r: &HostRecord) -> Option<usize> {
        let id = r
            .has_broker_id()
            .then(|| self.ids.get(r.id().as_str()).copied())
            .flatten();
        let hostname = r.hostname().and_then(|h| self.hostnames.get(h).copied());
        let name = r.name().and_then(|n| self.names.get(n).copied());
        [id, hostname, name].into_iter().flatten().min()
    }
}

/// The action keys of the Python broker's providers, so `$action` shows for records of providers this
/// build lacks.
const KNOWN_ACTION_KEYS: &[&str] = &[
    "workflow",
    "job_template",
    "container_host",
    "container_app",
    "job_xml",
    "job_id",
    "hostgroup",
    "ostack_template",
    "ostack_image",
    "test_action",
];

/// One column of `broker inventory`: `a | b` (first that has a value), `a b` (joined with a space),
/// `$action` (the checkout action's value), dotted paths; `*_time` fields shown as dates or durations.
#[derive(Debug, Clone)]
pub struct FieldSpec {
    alternatives: Vec<Vec<String>>,
}

impl FieldSpec {
    /// Parses a field spec.
    pub fn parse(spec: &str) -> Self {
        FieldSpec {
            alternatives: spec
                .split('|')
                .map(|alt| {
                    alt.split_whitespace()
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                })
                .filter(|parts| !parts.is_empty())
                .collect(),
        }
    }

    /// The text of this column for a record; `Unknown` when no alternative has a value.
    pub fn render(&self, record: &HostRecord, action_keys: &[&str]) -> String {
        for alternative in &self.alternatives {
            let parts: Vec<String> = alternative
                .iter()
                .filter_map(|part| render_part(record, part, action_keys))
                .collect();
            if !parts.is_empty() {
                return parts.join(" ");
            }
        }
        "Unknown".into()
    }
}

fn render_part(record: &HostRecord, part: &str, action_keys: &[&str]) -> Option<String> {
    if part == "$action" {
        let args = record.get(fields::ARGS)?.as_mapping()?;
        return action_keys
            .iter()
            .chain(KNOWN_ACTION_KEYS)
            .find_map(|key| args.get(*key).and_then(value_text));
    }
    let text = value_text(record.lookup(part)?)?;
    if text.is_empty() || text == "Unknown" {
        return None;
    }
    if part.ends_with("_time") {
        return Some(crate::time::format_time_value(&text));
    }
    Some(text)
}

fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => None,
        other => serde_yaml::to_string(other)
            .ok()
            .map(|s| s.trim().replace('\n', " ")),
    }
}

/// A record for `broker inventory --details`: every `*_time` field shown as a date or a duration.
pub fn humanize_times(value: &Value) -> Value {
    match value {
        Value::Mapping(map) => Value::Mapping(
            map.iter()
                .map(|(k, v)| {
                    let is_time = k.as_str().is_some_and(|k| k.ends_with("_time"));
                    let shown = match (is_time, value_text(v)) {
                        (true, Some(text)) => Value::String(crate::time::format_time_value(&text)),
                        _ => humanize_times(v),
                    };
                    (k.clone(), shown)
                })
                .collect(),
        ),
        Value::Sequence(items) => Value::Sequence(items.iter().map(humanize_times).collect()),
        other => other.clone(),
    }
}

/// The broker-only columns shown after the configured ones: state, age and lease expiry.
pub fn broker_columns(record: &HostRecord, now: i64) -> [String; 3] {
    let age = record
        .checkout_time()
        .map(|t| crate::time::format_duration_human((now - t).max(0) as u64))
        .unwrap_or_else(|| "-".into());
    let lease = record
        .expire_time()
        .map(crate::time::format_epoch)
        .unwrap_or_else(|| "-".into());
    [record.state().to_string(), age, lease]
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPSTREAM: &str = r#"- _broker_args:
    deploy_rhel_version: '8.6'
    deploy_scenario: baserhel
    host_type: host
    workflow: deploy-rhel
  _broker_provider: AnsibleTower
  _broker_provider_instance: rhv
  hostname: dhcp-111.test.example.com
  name: mahuser-rhel-8.6-6e74d20e
  tower_inventory: rhv-rhvm02
  type: host
- _broker_provider: TestProvider
  hostname: test.host.example.com
  name: null
  reported_devices:
    nics: [eth0]
  exposed_ports: {'22': '44263'}
- _broker_provider: TestProvider
  hostname: other.host.example.com
  name: null
"#;

    fn store() -> (tempfile::TempDir, YamlFileStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = YamlFileStore::new(dir.path().join("inventory.yaml"), Duration::from_secs(5));
        (dir, store)
    }

    #[test]
    fn upstream_inventory_round_trips_without_loss() {
        let (_dir, store) = store();
        std::fs::write(store.path(), UPSTREAM).unwrap();
        let before = store.list().unwrap();
        assert_eq!(before.len(), 3);
        store.put(&[]).unwrap();
        let after = store.list().unwrap();
        assert_eq!(before, after);
        let as_values: Value =
            serde_yaml::from_str(&std::fs::read_to_string(store.path()).unwrap()).unwrap();
        let original: Value = serde_yaml::from_str(UPSTREAM).unwrap();
        assert_eq!(as_values, original);
    }

    #[test]
    fn removing_one_unnamed_host_leaves_the_others() {
        let (_dir, store) = store();
        std::fs::write(store.path(), UPSTREAM).unwrap();
        let records = store.list().unwrap();
        let removed = store.remove(&[records[1].id()]).unwrap();
        assert_eq!(removed, vec![records[1].id()]);
        let left = store.list().unwrap();
        assert_eq!(left.len(), 2);
        assert_eq!(left[1].hostname(), Some("other.host.example.com"));
    }

    #[test]
    fn put_replaces_by_identity() {
        let (_dir, store) = store();
        let mut rec = HostRecord::pending("TestProvider", None, Default::default());
        store.put(std::slice::from_ref(&rec)).unwrap();
        rec.set_state(HostState::Ready);
        rec.set("hostname", "h1");
        store.put(std::slice::from_ref(&rec)).unwrap();
        let all = store.list().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].state(), HostState::Ready);
        assert_eq!(all[0].hostname(), Some("h1"));
    }

    #[test]
    fn malformed_inventory_is_reported_and_never_overwritten() {
        let (_dir, store) = store();
        let bad = "- hostname: a\n  name: [unclosed\n";
        std::fs::write(store.path(), bad).unwrap();
        let err = store.list().unwrap_err();
        assert!(matches!(err, Error::Parse { line: 2.., .. }), "{err}");
        assert!(
            store
                .put(&[HostRecord::pending("P", None, Default::default())])
                .is_err()
        );
        assert_eq!(std::fs::read_to_string(store.path()).unwrap(), bad);
    }

    #[test]
    fn lock_wait_is_bounded_and_names_the_holder() {
        let (_dir, store) = store();
        let store = YamlFileStore::new(store.path(), Duration::from_millis(100));
        let held = store.lock().unwrap();
        // A second handle on the same file conflicts with the first one's flock, as another process would.
        let err = store.put(&[]).unwrap_err();
        assert!(matches!(err, Error::InventoryLocked { .. }), "{err}");
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(held);
        store.put(&[]).unwrap();
    }

    #[test]
    fn sync_matches_by_id_hostname_or_name_and_takes_a_host_once() {
        let mut records: Vec<HostRecord> = serde_yaml::from_str(
            r#"
- {_broker_provider: P, name: vm-1, hostname: old-fqdn, extra: kept}
- {_broker_provider: P, _broker_id: h1, hostname: a}
- {_broker_provider: P, _broker_state: releasing, _broker_id: r1, name: busy}
"#,
        )
        .unwrap();
        let reported: Vec<HostRecord> = serde_yaml::from_str(
            r#"
- {name: vm-1, hostname: new-fqdn}
- {_broker_id: h1, hostname: renamed}
- {name: vm-1, hostname: new-fqdn}
- {name: busy}
"#,
        )
        .unwrap();
        let report = merge_sync(&mut records, "P", None, reported);
        assert_eq!((report.added, report.updated, report.removed), (0, 2, 0));
        assert_eq!(records.len(), 3, "{records:?}");
        let vm = records.iter().find(|r| r.name() == Some("vm-1")).unwrap();
        assert_eq!(vm.hostname(), Some("new-fqdn"));
        assert_eq!(vm.get("extra").and_then(Value::as_str), Some("kept"));
        assert!(records.iter().any(|r| r.hostname() == Some("renamed")));
        let busy = records.iter().find(|r| r.name() == Some("busy")).unwrap();
        assert_eq!(
            busy.state(),
            HostState::Releasing,
            "a host being checked in is left alone"
        );
    }

    #[test]
    fn sync_replaces_only_the_instance_and_keeps_pending_records() {
        let mut records: Vec<HostRecord> = serde_yaml::from_str(
            r#"
- {_broker_provider: P, _broker_provider_instance: a, hostname: keep-me-updated, _broker_id: x1, extra: old}
- {_broker_provider: P, _broker_provider_instance: a, hostname: gone}
- {_broker_provider: P, _broker_provider_instance: b, hostname: other-instance}
- {_broker_provider: P, _broker_provider_instance: a, _broker_state: pending, _broker_id: p1}
- {_broker_provider: Q, hostname: other-provider}
"#,
        )
        .unwrap();
        let reported: Vec<HostRecord> = serde_yaml::from_str(
            "[{hostname: keep-me-updated, extra: new}, {hostname: brand-new}]",
        )
        .unwrap();
        let report = merge_sync(&mut records, "P", Some("a"), reported);
        assert_eq!(
            report,
            SyncReport {
                added: 1,
                updated: 1,
                removed: 1,
                added_hosts: vec!["brand-new".into()]
            }
        );
        let names: Vec<String> = records.iter().map(|r| r.display_name()).collect();
        assert_eq!(
            names,
            vec![
                "other-instance",
                "p1",
                "other-provider",
                "keep-me-updated",
                "brand-new"
            ]
        );
        let updated = records
            .iter()
            .find(|r| r.hostname() == Some("keep-me-updated"))
            .unwrap();
        assert_eq!(updated.get("extra").and_then(Value::as_str), Some("new"));
        assert_eq!(updated.id().as_str(), "x1");
        let added = records
            .iter()
            .find(|r| r.hostname() == Some("brand-new"))
            .unwrap();
        assert_eq!(added.instance(), Some("a"));
    }

    #[test]
    fn field_specs_follow_upstream_rules() {
        let rec: HostRecord = serde_yaml::from_str(
            "{name: n1, _broker_args: {workflow: deploy-rhel}, os_distribution: RHEL, \
             os_distribution_version: '9.4', shutdown_time: '1765804090', remove_time: 432000}",
        )
        .unwrap();
        let keys = ["workflow", "container_host"];
        assert_eq!(
            FieldSpec::parse("hostname | name").render(&rec, &keys),
            "n1"
        );
        assert_eq!(
            FieldSpec::parse("os_distribution os_distribution_version").render(&rec, &keys),
            "RHEL 9.4"
        );
        assert_eq!(
            FieldSpec::parse("$action").render(&rec, &keys),
            "deploy-rhel"
        );
        assert_eq!(FieldSpec::parse("missing").render(&rec, &keys), "Unknown");
        assert_eq!(
            FieldSpec::parse("shutdown_time").render(&rec, &keys),
            "Dec 15, 2025 13:08 UTC"
        );
        assert_eq!(FieldSpec::parse("remove_time").render(&rec, &keys), "5d");
        assert_eq!(
            FieldSpec::parse("_broker_args.workflow").render(&rec, &keys),
            "deploy-rhel"
        );
    }
}
