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
use crate::process::Liveness;
use crate::record::{HostRecord, HostState, Owner, RecordId, fields};

mod blocks;
use blocks::Blocks;
#[cfg(test)]
mod props;
#[cfg(test)]
mod sync_props;
pub mod transfer;

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

    /// Replaces a provider's (or one of its instances') records with what the provider reports, as
    /// [`merge_sync`] describes: records still being checked out or in are kept, old fields are merged
    /// into the new records of the same host, and only records that were `ready` before the listing
    /// started may be removed.
    ///
    /// # Errors
    /// [`Error::SyncRefused`] when the sync would remove many records and the listing is not forced;
    /// lock, read, parse or write failures. On error nothing is changed.
    fn sync_provider(&self, listing: ProviderListing) -> Result<SyncReport>;

    /// Replaces each `(seen, new)` pair's record with `new` if the store still holds `seen` exactly
    /// as it was read (same identity, same fields); returns the identities of `seen` records that
    /// were replaced. Two processes claiming one record (two reapers at once) thus cannot both win.
    ///
    /// The default reads and then writes, which is atomic only within one process: a store shared
    /// by processes overrides it with a compare-and-replace under its lock, as [`YamlFileStore`] does.
    ///
    /// # Errors
    /// Lock, read, parse or write failures; on error nothing is changed.
    fn replace_unchanged(&self, changes: &[(HostRecord, HostRecord)]) -> Result<Vec<RecordId>> {
        let mut records = self.list()?;
        let replaced = replace_matching(&mut records, changes);
        let new: Vec<HostRecord> = changes
            .iter()
            .filter(|(seen, _)| replaced.contains(&seen.id()))
            .map(|(_, new)| new.clone())
            .collect();
        self.put(&new)?;
        Ok(replaced)
    }

    /// Where the records live, for messages (`/home/me/.broker/inventory.yaml`).
    fn location(&self) -> String;

    /// Whether only the owner can read the records. Secret-looking arguments and fields are stored
    /// in clear (for `broker duplicate` and check-in workflows) only in a private store; elsewhere
    /// they are stored masked (see [`crate::redact`]). A store that cannot tell is not private.
    fn is_private(&self) -> bool {
        false
    }

    /// What the store knows of the processes that use it, for telling whether a record's owner on
    /// another machine is gone (a pid means nothing there). A store shared by machines keeps a
    /// lease per process, renewed while the process runs; the default knows of none, so only this
    /// machine's processes can be told gone.
    ///
    /// # Errors
    /// The store cannot be read.
    fn owner_leases(&self) -> Result<OwnerLeases> {
        Ok(OwnerLeases::default())
    }
}

/// The owners' leases a shared store keeps ([`InventoryStore::owner_leases`]).
#[derive(Debug, Clone, Default)]
pub struct OwnerLeases {
    leases: Vec<OwnerLease>,
}

/// One process's lease in a shared store.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OwnerLease {
    /// The machine the process runs on ([`Owner::machine`]).
    pub machine: String,
    /// Its pid.
    pub pid: u32,
    /// When it started ([`Owner::started`]), when known.
    pub started: Option<u64>,
    /// Whether its lease ran out: it stopped renewing it (it ended, or its machine did).
    pub expired: bool,
}

impl OwnerLease {
    /// The lease of `owner`'s process.
    pub fn new(owner: &Owner, expired: bool) -> Self {
        OwnerLease {
            machine: owner.machine.clone(),
            pid: owner.pid,
            started: owner.started,
            expired,
        }
    }
}

impl OwnerLeases {
    /// These leases.
    pub fn new(leases: Vec<OwnerLease>) -> Self {
        OwnerLeases { leases }
    }

    /// Whether `owner` runs: as this machine tells ([`Owner::liveness`]), else as its lease says
    /// (gone when it ran out); [`Liveness::Unknown`] for a process without a lease.
    pub fn liveness(&self, owner: &Owner) -> Liveness {
        match owner.liveness() {
            Liveness::Unknown => {}
            known => return known,
        }
        let same_start = |l: &OwnerLease| match (l.started, owner.started) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        self.leases
            .iter()
            .find(|l| l.machine == owner.machine && l.pid == owner.pid && same_start(l))
            .map_or(Liveness::Unknown, |l| {
                if l.expired {
                    Liveness::Gone
                } else {
                    Liveness::Alive
                }
            })
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
    /// The names of the removed hosts.
    pub removed_hosts: Vec<String>,
}

/// A provider's list of its hosts, to merge into the inventory ([`InventoryStore::sync_provider`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProviderListing {
    /// The provider's name.
    pub provider: String,
    /// The instance that was listed; `None` for all of the provider's records.
    pub instance: Option<String>,
    /// The inventory's records as they were just before the listing started. Only the provider's
    /// records that were `ready` then may be removed: a host checked out while the provider was
    /// being listed is missing from the listing for that reason alone. A listed host whose record
    /// is in here but gone by the merge was checked in meanwhile, and is not added again.
    pub before: Vec<HostRecord>,
    /// The hosts the provider reported.
    pub reported: Vec<HostRecord>,
    /// Whether to remove records even when that removes many (see [`merge_sync`]).
    pub force: bool,
}

impl ProviderListing {
    /// A listing of `provider` (or one instance of it); `before` are the inventory's records as read
    /// just before the provider was asked.
    pub fn new(
        provider: impl Into<String>,
        instance: Option<&str>,
        before: Vec<HostRecord>,
        reported: Vec<HostRecord>,
    ) -> Self {
        ProviderListing {
            provider: provider.into(),
            instance: instance.map(str::to_owned),
            before,
            reported,
            force: false,
        }
    }

    /// Removes records even when the sync would remove many of them.
    #[must_use]
    pub fn force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }
}

/// The `inventory.yaml` store.
#[derive(Debug, Clone)]
pub struct YamlFileStore {
    path: PathBuf,
    lock_timeout: Duration,
}

impl YamlFileStore {
    /// A store for the inventory at `path`, waiting up to `lock_timeout` for other writers.
    pub fn new(path: impl Into<PathBuf>, lock_timeout: Duration) -> Self {
        YamlFileStore {
            path: path.into(),
            lock_timeout,
        }
    }

    /// The inventory file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read_text(&self) -> Result<String> {
        match std::fs::read_to_string(&self.path) {
            Ok(mut text) => {
                let bom = text.len() - crate::files::strip_bom(&text).len();
                text.drain(..bom);
                Ok(text)
            }
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
            crate::files::replace(&self.path, new_text.as_bytes(), "writing inventory")?;
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
        emit_records(&self.path, records)
    }

    /// The lock file of an inventory that is no symbolic link.
    #[cfg(test)]
    fn lock_path(&self) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".flock");
        self.path.with_file_name(name)
    }

    /// Takes the writers' lock, waiting at most the lock timeout (see [`lock_beside`]).
    fn lock(&self) -> Result<LockGuard> {
        lock_beside(&self.path, self.lock_timeout, &INVENTORY_LOCK)
    }
}

/// What a lock guards, as its messages name it.
#[derive(Debug)]
pub(crate) struct LockLabel {
    /// The file locked, as the error and the wait's warning name it (`inventory`).
    pub(crate) what: &'static str,
    /// The action of an error opening the lock file.
    pub(crate) opening: &'static str,
    /// The action of an error taking the lock.
    pub(crate) locking: &'static str,
}

/// The inventory's lock.
pub(crate) const INVENTORY_LOCK: LockLabel = LockLabel {
    what: "inventory",
    opening: "opening inventory lock",
    locking: "locking inventory",
};

/// Takes the writers' lock of the file at `path` (the inventory, or another file broker shares the
/// same way: `targets.yaml`), waiting at most `lock_timeout`; its errors name the file as `label`
/// says.
///
/// The lock is an `flock` on a sidecar file next to the file (next to its target when the
/// inventory is a symbolic link, so every path to one file shares one lock), then on the
/// directory that holds both. People delete stale lock files by habit: a lock taken on a file
/// that is no longer the one at the path excludes no one, so after locking, the file is compared
/// with what the path names now, and on a mismatch the lock is taken again on the new file. That
/// alone cannot stop a file deleted while held from being made anew and locked by another
/// process; the directory cannot be deleted from under a writer, and its lock is what excludes
/// in that case.
pub(crate) fn lock_beside(
    path: &Path,
    lock_timeout: Duration,
    label: &LockLabel,
) -> Result<LockGuard> {
    let target = crate::files::follow_links(path).map_err(|e| Error::io(label.opening, path, e))?;
    let beside = |file: &Path| {
        let mut lock_name = file.file_name().unwrap_or_default().to_os_string();
        lock_name.push(".flock");
        file.with_file_name(lock_name)
    };
    let lock_path = match target.file_name() {
        Some(_) => beside(&target),
        None => beside(path),
    };
    let dir = lock_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io("creating broker directory", dir, e))?;
    let started = Instant::now();
    let file = loop {
        let file = open_lock_file(&lock_path, label)?;
        wait_for_lock(&file, &file, &lock_path, started, lock_timeout, label)?;
        if is_file_at(&file, &lock_path).map_err(|e| Error::io(label.locking, &lock_path, e))? {
            break file;
        }
        // The lock file was deleted or replaced while this process waited: dropping `file`
        // releases a lock that no longer excludes anyone; lock the file at the path now.
        tracing::debug!(lock = %lock_path.display(), "lock file replaced while waiting; locking again");
        if started.elapsed() >= lock_timeout {
            return Err(Error::InventoryLocked {
                what: label.what,
                path: lock_path,
                holder: "the lock file kept being deleted or replaced".into(),
                waited: started.elapsed(),
            });
        }
    };
    let directory = File::open(dir).map_err(|e| Error::io("opening broker directory", dir, e))?;
    wait_for_lock(&directory, &file, &lock_path, started, lock_timeout, label)?;
    // For diagnostics only: who holds the lock. The lock itself is the flock, not this text.
    let owner = crate::record::Owner::current();
    let mut f = &file;
    let _ = f.set_len(0);
    let _ = writeln!(
        f,
        "pid {} on {} (user {})",
        owner.pid, owner.machine, owner.user
    );
    Ok(LockGuard {
        file,
        _directory: directory,
    })
}

/// Waits for the flock on `locked` (the lock file or the directory) until the lock timeout from
/// `started`; a timeout names the holder as written in the lock file `file`.
fn wait_for_lock(
    locked: &File,
    file: &File,
    lock_path: &Path,
    started: Instant,
    lock_timeout: Duration,
    label: &LockLabel,
) -> Result<()> {
    let mut pause = Duration::from_millis(2);
    let mut announced = false;
    loop {
        match locked.try_lock() {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) => {
                if started.elapsed() >= lock_timeout {
                    return Err(Error::InventoryLocked {
                        what: label.what,
                        path: lock_path.to_owned(),
                        holder: lock_holder(file),
                        waited: started.elapsed(),
                    });
                }
                // Short waits are normal among parallel writers; a long one is said, once.
                if !announced && started.elapsed() >= ANNOUNCE_LOCK_WAIT {
                    announced = true;
                    tracing::warn!(
                        "waiting up to {} for the {} lock `{}` ({})",
                        crate::time::format_duration(lock_timeout),
                        label.what,
                        lock_path.display(),
                        lock_holder(file)
                    );
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::io(label.locking, lock_path, e));
            }
        }
    }
}

/// How long a writer waits for the inventory lock before it says so on stderr.
const ANNOUNCE_LOCK_WAIT: Duration = Duration::from_millis(500);

/// Opens (creating) the lock file without following a symbolic link: broker writes into its lock
/// file, and must never write into whatever a link points at.
fn open_lock_file(lock_path: &Path, label: &LockLabel) -> Result<File> {
    let mut options = File::options();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW);
    }
    options.open(lock_path).map_err(|e| {
        let is_link = std::fs::symlink_metadata(lock_path).is_ok_and(|m| m.is_symlink());
        let e = if is_link {
            std::io::Error::new(
                e.kind(),
                "it is a symbolic link, which broker does not follow; remove it and broker creates \
                 a new lock file",
            )
        } else {
            e
        };
        Error::io(label.opening, lock_path, e)
    })
}

/// Whether the open `file` is the file that `path` names now (not deleted, not replaced).
fn is_file_at(file: &File, path: &Path) -> std::io::Result<bool> {
    let at_path = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let open = file.metadata()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Ok((open.dev(), open.ino()) == (at_path.dev(), at_path.ino()))
    }
    #[cfg(not(unix))]
    {
        // No inode numbers to compare: trust the path.
        let _ = open;
        Ok(at_path.is_file())
    }
}

/// Who holds the lock, as the holder wrote it into the lock file.
fn lock_holder(file: &File) -> String {
    use std::io::{Read, Seek};
    let mut text = String::new();
    let mut f = file;
    let _ = f.rewind().and_then(|()| f.read_to_string(&mut text));
    Some(text.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown holder".into())
}

/// A held writers' lock ([`lock_beside`]); dropping it unlocks.
pub(crate) struct LockGuard {
    file: File,
    /// Closing the directory releases its lock.
    _directory: File,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// From this size on, inventories in the usual block layout are parsed in parallel slices.
const PARALLEL_FROM_BYTES: usize = 256 * 1024;

/// Parses inventory text (a YAML list of mappings; empty text is an empty inventory). A UTF-8 byte
/// order mark at the start is ignored.
///
/// Large inventories in the usual block layout are parsed in parallel, one slice of entries per core.
///
/// # Errors
/// [`Error::Parse`] naming file, line and column.
pub fn parse_inventory(path: &Path, text: &str) -> Result<Vec<HostRecord>> {
    parse_in_parts(path, text, parse_threads())
}

/// [`parse_inventory`] with at most `parts` threads.
fn parse_in_parts(path: &Path, text: &str, parts: usize) -> Result<Vec<HostRecord>> {
    let text = crate::files::strip_bom(text);
    if text.len() >= PARALLEL_FROM_BYTES
        && let Some(blocks) = Blocks::split(text)
    {
        let chunks = blocks.chunks(parts);
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

fn parse_threads() -> usize {
    std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
        .min(4)
}

fn parse_whole(path: &Path, text: &str) -> Result<Vec<HostRecord>> {
    if blocks::yaml_trim(text).is_empty() {
        return Ok(Vec::new());
    }
    let parsed: Option<Vec<HostRecord>> = serde_yaml::from_str(text).map_err(|e| {
        // The reader places a duplicate key at the start of its mapping; the check places it at the
        // key itself.
        let checked = serde_yaml::from_str::<Option<Vec<CheckedEntry>>>(text).err();
        match checked {
            Some(c) if e.to_string().contains("duplicate entry") => Error::parse(path, &c, false),
            _ => Error::parse(path, &e, false),
        }
    })?;
    Ok(parsed.unwrap_or_default())
}

/// The whole inventory as text, checked to read back as `records` when a record holds what the
/// writer may not reproduce: a YAML tag (one spelled with `%` escapes is written unescaped) or a
/// mapping used as a key (which it cannot write).
///
/// # Errors
/// [`Error::Io`] naming the first record that cannot be written back unchanged; nothing is written.
pub(crate) fn emit_records(path: &Path, records: &[HostRecord]) -> Result<String> {
    if records.is_empty() {
        return Ok("[]\n".to_owned());
    }
    let text = serde_yaml::to_string(records);
    let unusual = records.iter().any(|r| r.fields().iter().any(unusual_entry));
    match text {
        Ok(text) if !unusual || parse_whole(path, &text).is_ok_and(|back| back == records) => {
            Ok(text)
        }
        Ok(_) | Err(_) => {
            let culprit = records
                .iter()
                .find(|r| !matches!(emit_checked(path, r), Ok(Some(_))))
                .map(HostRecord::display_name)
                .unwrap_or_else(|| "?".into());
            Err(Error::io(
                "writing inventory",
                path,
                std::io::Error::other(format!(
                    "the record `{culprit}` holds a YAML tag or a key that broker cannot write back \
                     unchanged; change it by hand in the file"
                )),
            ))
        }
    }
}

/// Whether a mapping entry holds a tag or a non-text key, at any depth.
fn unusual_entry((key, value): (&Value, &Value)) -> bool {
    matches!(
        key,
        Value::Mapping(_) | Value::Sequence(_) | Value::Tagged(_)
    ) || unusual_value(key)
        || unusual_value(value)
}

fn unusual_value(value: &Value) -> bool {
    match value {
        Value::Tagged(_) => true,
        Value::Sequence(items) => items.iter().any(unusual_value),
        Value::Mapping(map) => map.iter().any(unusual_entry),
        _ => false,
    }
}

/// One record as a sequence entry (`- key: value …`).
fn emit_entry(path: &Path, record: &HostRecord) -> Result<String> {
    serde_yaml::to_string(std::slice::from_ref(record))
        .map_err(|e| Error::io("writing inventory", path, std::io::Error::other(e)))
}

/// An inventory's entries with the identity each one holds: what the fast edits splice.
///
/// Splicing text is sound only when the document means exactly its entries one after another:
/// every line `- …` at column 0 starts an entry (none continues a quoted string or a flow
/// collection of the entry before), and no entry depends on another (an alias of an anchor set in
/// another entry). Slices of whole entries are parsed on their own, as strictly as the reader parses
/// (duplicate keys and integers beyond 64 bits are errors), and must give one mapping per entry; an
/// entry that is removed or replaced must not hold an anchor (a `&`). Anything else takes the
/// whole-document path, which also reports a file broker cannot read, with its location, before
/// anything is written.
struct Entries<'t> {
    blocks: Blocks<'t>,
    /// Each entry's `_broker_id`, when it has one.
    ids: Vec<Option<String>>,
}

impl<'t> Entries<'t> {
    /// The entries of `text`, or `None` when splicing it cannot be shown to be sound.
    fn parse(text: &'t str) -> Option<Self> {
        let blocks = Blocks::split(text)?;
        let parts = if text.len() >= PARALLEL_FROM_BYTES {
            parse_threads()
        } else {
            1
        };
        let groups = blocks.groups(parts);
        let parse = |(count, chunk): (usize, &str)| -> Option<Vec<Option<String>>> {
            let entries = serde_yaml::from_str::<Option<Vec<CheckedEntry>>>(chunk)
                .ok()?
                .unwrap_or_default();
            (entries.len() == count).then(|| entries.into_iter().map(|e| e.id).collect())
        };
        let parsed: Vec<Option<Vec<Option<String>>>> = if groups.len() > 1 {
            std::thread::scope(|scope| {
                let handles: Vec<_> = groups
                    .iter()
                    .map(|group| scope.spawn(move || parse(*group)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().ok().flatten())
                    .collect()
            })
        } else {
            groups.into_iter().map(parse).collect()
        };
        let mut ids = Vec::with_capacity(blocks.len());
        for group in parsed {
            ids.extend(group?);
        }
        (ids.len() == blocks.len()).then_some(Entries { blocks, ids })
    }

    /// The position of the first entry with each of these identities; `None` when one is a content
    /// fingerprint (`legacy-…`), which only the whole-document path computes.
    fn positions<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> Option<Vec<Option<usize>>> {
        let mut first: HashMap<&str, usize> = HashMap::with_capacity(self.ids.len());
        for (i, id) in self.ids.iter().enumerate() {
            if let Some(id) = id {
                first.entry(id.as_str()).or_insert(i);
            }
        }
        ids.into_iter()
            .map(|id| (!id.starts_with("legacy-")).then(|| first.get(id).copied()))
            .collect()
    }

    /// The text with entries replaced (`Some(record)`) or removed (`None`) and records appended;
    /// `None` when the result cannot be shown to read back as exactly the intended records.
    fn splice(
        &self,
        path: &Path,
        edits: &HashMap<usize, Option<HostRecord>>,
        appended: &[HostRecord],
    ) -> Result<Option<String>> {
        if edits.keys().any(|i| self.blocks.entry(*i).contains('&')) {
            return Ok(None);
        }
        // A kept entry is written as it is, line end included: one added to the last entry of a
        // file without a final line end can change a value (a block scalar gains a `\n`).
        if (0..self.blocks.len())
            .any(|i| !edits.contains_key(&i) && !self.blocks.entry(i).ends_with('\n'))
        {
            return Ok(None);
        }
        let mut replaced: HashMap<usize, String> = HashMap::new();
        for (i, record) in edits {
            if let Some(r) = record {
                match emit_checked(path, r)? {
                    Some(text) => replaced.insert(*i, text),
                    None => return Ok(None),
                };
            }
        }
        let mut appended_text = Vec::with_capacity(appended.len());
        for r in appended {
            match emit_checked(path, r)? {
                Some(text) => appended_text.push(text),
                None => return Ok(None),
            }
        }
        // Each of these entries reads back as its record: kept ones were parsed on their own above,
        // new ones just now.
        let mut expected: Vec<&str> = Vec::with_capacity(self.blocks.len() + appended_text.len());
        for i in 0..self.blocks.len() {
            match (replaced.get(&i), edits.contains_key(&i)) {
                (Some(new), _) => expected.push(new),
                (None, true) => {}
                (None, false) => expected.push(self.blocks.entry(i)),
            }
        }
        expected.extend(appended_text.iter().map(String::as_str));
        let out = self.blocks.rewrite(&expected);
        Ok(is_written_as(path, &out, self.blocks.header(), &expected).then_some(out))
    }
}

/// Whether `out` consists of exactly `header` and the `expected` entries, split where they were
/// split — or, when it is no plain list of entries, whether it reads as the empty inventory that no
/// entry expects. A check of the splice's own text before it replaces the file.
fn is_written_as(path: &Path, out: &str, header: &str, expected: &[&str]) -> bool {
    match Blocks::split(out) {
        Some(written) => {
            written.header() == header
                && written.len() == expected.len()
                && (0..written.len()).all(|i| written.entry(i) == expected[i])
        }
        None => expected.is_empty() && parse_whole(path, out).is_ok_and(|r| r.is_empty()),
    }
}

/// One record as an entry, when that entry reads back (on its own) as exactly the record.
fn emit_checked(path: &Path, record: &HostRecord) -> Result<Option<String>> {
    let text = emit_entry(path, record)?;
    let back = serde_yaml::from_str::<Vec<HostRecord>>(&text).ok();
    Ok((back.as_deref() == Some(std::slice::from_ref(record))).then_some(text))
}

/// One entry, checked to read as a record exactly as the reader reads it, without building the
/// record: a mapping (or nothing) with unique keys whose values a [`Value`] can hold. Only its
/// `_broker_id` is kept.
struct CheckedEntry {
    id: Option<String>,
}

impl<'de> serde::Deserialize<'de> for CheckedEntry {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = CheckedEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a host mapping")
            }
            fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<CheckedEntry, E> {
                Ok(CheckedEntry { id: None })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<CheckedEntry, A::Error> {
                let mut id = None;
                let mut keys = SeenKeys::default();
                while let Some(is_id) = map.next_key_seed(UniqueKey(&mut keys))? {
                    if is_id {
                        if let Value::String(s) = map.next_value::<Value>()?
                            && !s.is_empty()
                        {
                            id = Some(s);
                        }
                    } else {
                        map.next_value::<CheckedValue>()?;
                    }
                }
                Ok(CheckedEntry { id })
            }
        }
        // As `Mapping` deserializes (and so `HostRecord`).
        deserializer.deserialize_map(Visit)
    }
}

/// A value checked to be one a [`Value`] can hold, and thrown away. Tagged values are refused (the
/// caller then parses the whole document) rather than checked.
struct CheckedValue;

impl<'de> serde::Deserialize<'de> for CheckedValue {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = CheckedValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_bool<E: serde::de::Error>(
                self,
                _: bool,
            ) -> std::result::Result<CheckedValue, E> {
                Ok(CheckedValue)
            }
            fn visit_i64<E: serde::de::Error>(
                self,
                _: i64,
            ) -> std::result::Result<CheckedValue, E> {
                Ok(CheckedValue)
            }
            fn visit_u64<E: serde::de::Error>(
                self,
                _: u64,
            ) -> std::result::Result<CheckedValue, E> {
                Ok(CheckedValue)
            }
            fn visit_f64<E: serde::de::Error>(
                self,
                _: f64,
            ) -> std::result::Result<CheckedValue, E> {
                Ok(CheckedValue)
            }
            fn visit_str<E: serde::de::Error>(
                self,
                _: &str,
            ) -> std::result::Result<CheckedValue, E> {
                Ok(CheckedValue)
            }
            fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<CheckedValue, E> {
                Ok(CheckedValue)
            }
            fn visit_none<E: serde::de::Error>(self) -> std::result::Result<CheckedValue, E> {
                Ok(CheckedValue)
            }
            fn visit_some<D: serde::Deserializer<'de>>(
                self,
                deserializer: D,
            ) -> std::result::Result<CheckedValue, D::Error> {
                <CheckedValue as serde::Deserialize>::deserialize(deserializer)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<CheckedValue, A::Error> {
                while seq.next_element::<CheckedValue>()?.is_some() {}
                Ok(CheckedValue)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<CheckedValue, A::Error> {
                let mut keys = SeenKeys::default();
                while map.next_key_seed(UniqueKey(&mut keys))?.is_some() {
                    map.next_value::<CheckedValue>()?;
                }
                Ok(CheckedValue)
            }
        }
        // Integers beyond 64 bits, bytes and tags fall to the visitor's defaults: errors.
        deserializer.deserialize_any(Visit)
    }
}

/// The keys of one mapping seen so far; text keys borrowed from the document where it allows (most
/// keys: this check runs over every entry of the inventory on every write). Small mappings, the usual
/// case, are searched in a list; large ones in a set.
#[derive(Default)]
struct SeenKeys<'de> {
    text: Vec<std::borrow::Cow<'de, str>>,
    text_set: HashSet<std::borrow::Cow<'de, str>>,
    other: HashSet<Value>,
}

impl<'de> SeenKeys<'de> {
    const LIST_UP_TO: usize = 16;

    /// Adds a text key; gives it back when it was there already.
    fn insert_text(
        &mut self,
        key: std::borrow::Cow<'de, str>,
    ) -> std::result::Result<(), std::borrow::Cow<'de, str>> {
        if self.text_set.is_empty() && self.text.len() < Self::LIST_UP_TO {
            if self.text.contains(&key) {
                return Err(key);
            }
            self.text.push(key);
            return Ok(());
        }
        if self.text_set.is_empty() {
            self.text_set.extend(self.text.drain(..));
        }
        if self.text_set.contains(&key) {
            return Err(key);
        }
        self.text_set.insert(key);
        Ok(())
    }
}

/// A mapping key checked to be unique among the keys seen (an error at the key itself, where the
/// reader names the whole mapping); yields whether it is `_broker_id`.
struct UniqueKey<'k, 'de>(&'k mut SeenKeys<'de>);

impl<'de> serde::de::DeserializeSeed<'de> for UniqueKey<'_, 'de> {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> std::result::Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> UniqueKey<'_, 'de> {
    fn text<E: serde::de::Error>(
        self,
        key: std::borrow::Cow<'de, str>,
    ) -> std::result::Result<bool, E> {
        let is_id = key == fields::ID;
        match self.0.insert_text(key) {
            Ok(()) => Ok(is_id),
            Err(key) => Err(E::custom(format_args!("duplicate entry with key {key:?}"))),
        }
    }

    fn other<E: serde::de::Error>(self, key: Value) -> std::result::Result<bool, E> {
        if self.0.other.contains(&key) {
            let shown = serde_yaml::to_string(&key).unwrap_or_default();
            return Err(E::custom(format_args!(
                "duplicate entry with key {}",
                shown.trim()
            )));
        }
        self.0.other.insert(key);
        Ok(false)
    }
}

impl<'de> serde::de::Visitor<'de> for UniqueKey<'_, 'de> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping key")
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> std::result::Result<bool, E> {
        self.other(Value::Bool(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<bool, E> {
        self.other(Value::Number(v.into()))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<bool, E> {
        self.other(Value::Number(v.into()))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> std::result::Result<bool, E> {
        self.other(Value::Number(v.into()))
    }
    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> std::result::Result<bool, E> {
        self.text(std::borrow::Cow::Borrowed(v))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<bool, E> {
        self.text(std::borrow::Cow::Owned(v.to_owned()))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> std::result::Result<bool, E> {
        self.text(std::borrow::Cow::Owned(v))
    }
    fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<bool, E> {
        self.other(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        seq: A,
    ) -> std::result::Result<bool, A::Error> {
        let key =
            serde::Deserialize::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
        self.other(Value::Sequence(key))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        map: A,
    ) -> std::result::Result<bool, A::Error> {
        let key =
            serde::Deserialize::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        self.other(Value::Mapping(key))
    }
}

/// Adds or replaces records by splicing entries, when the text allows; `None` means "parse instead".
pub(crate) fn put_fast(path: &Path, text: &str, new: &[HostRecord]) -> Result<Option<String>> {
    let Some(entries) = Entries::parse(text) else {
        return Ok(None);
    };
    if !new.iter().all(HostRecord::has_broker_id) {
        return Ok(None);
    }
    let ids: Vec<RecordId> = new.iter().map(HostRecord::id).collect();
    let Some(positions) = entries.positions(ids.iter().map(RecordId::as_str)) else {
        return Ok(None);
    };
    // As the whole-document path: a record replaces the first with its identity, else is appended
    // (and a later record with the same identity replaces that one).
    let mut edits: HashMap<usize, Option<HostRecord>> = HashMap::new();
    let mut appended: Vec<HostRecord> = Vec::new();
    let mut appended_at: HashMap<RecordId, usize> = HashMap::new();
    for (record, at) in new.iter().zip(positions) {
        match at {
            Some(i) => {
                edits.insert(i, Some(record.clone()));
            }
            None => match appended_at.get(&record.id()) {
                Some(j) => appended[*j] = record.clone(),
                None => {
                    appended_at.insert(record.id(), appended.len());
                    appended.push(record.clone());
                }
            },
        }
    }
    entries.splice(path, &edits, &appended)
}

/// Removes records by splicing entries; `None` means "parse instead".
pub(crate) fn remove_fast(
    path: &Path,
    text: &str,
    ids: &[RecordId],
) -> Result<Option<(String, Vec<RecordId>)>> {
    let Some(entries) = Entries::parse(text) else {
        return Ok(None);
    };
    let Some(positions) = entries.positions(ids.iter().map(RecordId::as_str)) else {
        return Ok(None);
    };
    let mut at: Vec<usize> = positions.into_iter().flatten().collect();
    // As the whole-document path: each identity removes its first record; reported in file order.
    at.sort_unstable();
    at.dedup();
    let removed: Vec<RecordId> = at
        .iter()
        .filter_map(|i| entries.ids[*i].as_deref().map(RecordId::from))
        .collect();
    let edits: HashMap<usize, Option<HostRecord>> = at.into_iter().map(|i| (i, None)).collect();
    Ok(entries
        .splice(path, &edits, &[])?
        .map(|text| (text, removed)))
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

    fn sync_provider(&self, listing: ProviderListing) -> Result<SyncReport> {
        self.modify(|text| {
            let (text, report) =
                self.modify_records(text, |records| merge_sync(records, listing))?;
            Ok((text, report?))
        })
    }

    fn replace_unchanged(&self, changes: &[(HostRecord, HostRecord)]) -> Result<Vec<RecordId>> {
        self.modify(|text| {
            let mut records = parse_inventory(&self.path, text)?;
            let replaced = replace_matching(&mut records, changes);
            if replaced.is_empty() {
                // Nothing to write: the file stays byte for byte as it is.
                return Ok((text.to_owned(), replaced));
            }
            Ok((self.emit(&records)?, replaced))
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

/// Replaces in `records` each `seen` record still there unchanged by its `new` one, in place;
/// returns the identities of the `seen` records replaced.
fn replace_matching(
    records: &mut [HostRecord],
    changes: &[(HostRecord, HostRecord)],
) -> Vec<RecordId> {
    let mut replaced = Vec::new();
    for (seen, new) in changes {
        let id = seen.id();
        if let Some(slot) = records.iter_mut().find(|r| r.id() == id && *r == seen) {
            *slot = new.clone();
            replaced.push(id);
        }
    }
    replaced
}

/// A sync refuses to remove more than this many records at once when they are more than half of the
/// provider's records, unless forced.
const SYNC_REMOVES_FREELY: usize = 3;

/// The sync merge, shared by every store.
///
/// The provider's view replaces this provider instance's `ready` records: a reported host that matches
/// a record (same `_broker_id`, `hostname` or `name`) updates it, one that matches none is added, and
/// records matching no reported host are dropped — but only those that were `ready` before the
/// listing started ([`ProviderListing::before`]); a record made while the provider was listed is
/// kept. Records being checked out or in (`pending`, `releasing`) are left as they are, and a listed
/// host whose record was removed while the listing ran (checked in meanwhile) is not added back.
///
/// A listing that would remove many records — more than three and more than half of the provider's
/// `ready` records, or every one of them — is refused unless [`ProviderListing::force`] is set: an
/// empty or partial listing (a provider pointed at the wrong place) must not wipe the inventory.
/// Linear in the number of records (a sync of thousands of hosts must not take seconds).
///
/// # Errors
/// [`Error::SyncRefused`], naming the records it would remove; `records` is then unchanged.
pub fn merge_sync(records: &mut Vec<HostRecord>, listing: ProviderListing) -> Result<SyncReport> {
    let ProviderListing {
        provider,
        instance,
        before,
        reported,
        force,
    } = listing;
    let scope = SyncScope {
        provider: &provider,
        instance: instance.as_deref(),
    };
    let mut known = SyncBase::new(records, &before, &scope);
    let mut report = SyncReport::default();
    let synced = known.merge_reported(records, reported, &scope, &mut report);
    let dropped = known.dropped(records, &mut report);
    report.removed = report.removed_hosts.len();
    let replaced = known.old.len();
    let all = report.removed > 0 && report.removed == replaced;
    let many = report.removed > SYNC_REMOVES_FREELY && report.removed * 2 > replaced;
    if !force && (all || many) {
        return Err(Error::SyncRefused {
            provider: scope.name(),
            records: replaced,
            removing: report.removed_hosts,
        });
    }
    let mut position = 0;
    records.retain(|_| {
        let keep = !dropped.contains(&position);
        position += 1;
        keep
    });
    records.extend(synced);
    Ok(report)
}

/// The provider instance whose records a sync replaces (all of the provider's without an instance).
struct SyncScope<'a> {
    provider: &'a str,
    instance: Option<&'a str>,
}

impl SyncScope<'_> {
    fn belongs(&self, r: &HostRecord) -> bool {
        r.provider() == Some(self.provider)
            && match (self.instance, r.instance()) {
                (Some(wanted), Some(have)) => wanted == have,
                _ => true,
            }
    }

    /// `Provider` or `Provider::instance`.
    fn name(&self) -> String {
        match self.instance {
            Some(i) => format!("{}::{i}", self.provider),
            None => self.provider.to_owned(),
        }
    }
}

/// What the inventory knows of the provider's hosts when its listing is merged.
struct SyncBase {
    /// The provider's ready records (positions in `records`): what the listing replaces.
    old: Vec<usize>,
    /// The keys of `old`, to their places in it.
    old_keys: HostKeys,
    /// Which of `old` a reported host matched.
    matched: Vec<bool>,
    /// The records that stay as they are, and those this sync writes: a reported host matching one
    /// of them is not taken again.
    present: HostKeys,
    /// The provider's records that were `ready` before the listing started: only those may go.
    ready_before: HashSet<RecordId>,
    /// The provider's records checked in while the listing ran.
    gone_meanwhile: HostKeys,
}

impl SyncBase {
    fn new(records: &[HostRecord], before: &[HostRecord], scope: &SyncScope<'_>) -> Self {
        let old: Vec<usize> = records
            .iter()
            .enumerate()
            .filter(|(_, r)| scope.belongs(r) && r.state() == HostState::Ready)
            .map(|(i, _)| i)
            .collect();
        let mut old_keys = HostKeys::default();
        for (k, &i) in old.iter().enumerate() {
            old_keys.insert(&records[i], k);
        }
        let mut present = HostKeys::default();
        for r in records
            .iter()
            .filter(|r| scope.belongs(r) && r.state() != HostState::Ready)
        {
            present.insert(r, 0);
        }
        let now: HashSet<RecordId> = records
            .iter()
            .filter(|r| scope.belongs(r))
            .map(HostRecord::id)
            .collect();
        let mut ready_before: HashSet<RecordId> = HashSet::new();
        let mut gone_meanwhile = HostKeys::default();
        for r in before.iter().filter(|r| scope.belongs(r)) {
            let id = r.id();
            if !now.contains(&id) {
                gone_meanwhile.insert(r, 0);
            } else if r.state() == HostState::Ready {
                ready_before.insert(id);
            }
        }
        SyncBase {
            matched: vec![false; old.len()],
            old,
            old_keys,
            present,
            ready_before,
            gone_meanwhile,
        }
    }

    /// The records the listing writes: each reported host merged into the record it matches, or
    /// added when it matches none; counted in `report`.
    fn merge_reported(
        &mut self,
        records: &[HostRecord],
        reported: Vec<HostRecord>,
        scope: &SyncScope<'_>,
        report: &mut SyncReport,
    ) -> Vec<HostRecord> {
        let mut synced = Vec::new();
        for mut new in reported {
            // A host already being checked out or in by someone keeps its record as it is.
            if self.present.find(&new).is_some() {
                continue;
            }
            let record = if let Some(k) = self.old_keys.find(&new) {
                self.matched[k] = true;
                report.updated += 1;
                updated(&records[self.old[k]], new)
            } else if self.gone_meanwhile.find(&new).is_some() {
                // Checked in while the provider was listed: gone by now, not an orphan.
                continue;
            } else {
                if new.provider().is_none() {
                    new.set(fields::PROVIDER, scope.provider);
                }
                if let (Some(i), None) = (scope.instance, new.instance()) {
                    new.set(fields::PROVIDER_INSTANCE, i);
                }
                report.added_hosts.push(new.display_name());
                report.added += 1;
                new
            };
            self.present.insert(&record, 0);
            synced.push(record);
        }
        synced
    }

    /// The positions of the records that go: those the listing replaced, and those `ready` before
    /// it that it no longer reports (named in `report`).
    fn dropped(&self, records: &[HostRecord], report: &mut SyncReport) -> HashSet<usize> {
        let mut dropped: HashSet<usize> = HashSet::new();
        for (k, &i) in self.old.iter().enumerate() {
            if self.matched[k] {
                dropped.insert(i);
            } else if self.ready_before.contains(&records[i].id()) {
                dropped.insert(i);
                report.removed_hosts.push(records[i].display_name());
            }
        }
        dropped
    }
}

/// A known record with the provider's fields for it (`new`) merged over its own.
fn updated(known: &HostRecord, mut new: HostRecord) -> HostRecord {
    let mut merged = known.clone();
    let mut fresh = std::mem::take(new.fields_mut());
    // The arguments the host was checked out with are broker's, not the provider's: a listing knows
    // only some of them (`duplicate` needs them all), so it fills only the keys the record lacks.
    if let (Some(Value::Mapping(given)), Some(Value::Mapping(listed))) =
        (known.get(fields::ARGS), fresh.get(fields::ARGS))
    {
        let mut args = listed.clone();
        args.extend(given.clone());
        fresh.insert(fields::ARGS.into(), Value::Mapping(args));
    }
    // So is the lease: a label keeps the one given at checkout, the record any extension.
    if known.expire_time().is_some() {
        fresh.shift_remove(fields::EXPIRE_TIME);
    }
    // And when the host was checked out: a provider's making time (an orphan's age) comes later.
    if known.checkout_time().is_some() {
        fresh.shift_remove(fields::CHECKOUT_TIME);
    }
    merged.merge(fresh);
    merged
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

    #[test]
    fn records_holding_tags_are_written_when_they_read_back_unchanged() {
        let path = Path::new("inventory.yaml");
        let records: Vec<HostRecord> =
            serde_yaml::from_str("[{name: a, x: !custom 5, deep: {k: [!t v]}}, {name: b}]")
                .unwrap();
        let text = emit_records(path, &records).unwrap();
        assert_eq!(parse_whole(path, &text).unwrap(), records);
    }

    #[test]
    fn a_splice_is_written_only_as_exactly_its_entries() {
        let path = Path::new("inventory.yaml");
        let (a, b) = ("- name: a\n", "- name: b\n");
        let out = "# hosts\n- name: a\n- name: b\n";
        assert!(is_written_as(path, out, "# hosts\n", &[a, b]));
        assert!(!is_written_as(path, out, "# other\n", &[a, b]));
        assert!(!is_written_as(path, out, "# hosts\n", &[a]));
        assert!(!is_written_as(path, out, "# hosts\n", &[a, b, b]));
        assert!(!is_written_as(path, out, "# hosts\n", &[b, a]));
        assert!(!is_written_as(path, out, "# hosts\n", &[a, "- name: c\n"]));
        // Text that is no plain list of entries must read as the empty inventory, and only when no
        // entry is expected.
        assert!(is_written_as(path, "--- []\n", "", &[]));
        assert!(!is_written_as(path, "--- []\n", "", &[a]));
        assert!(!is_written_as(path, "--- [{name: a}]\n", "", &[]));
        assert!(!is_written_as(path, "--- [\n", "", &[]));
    }

    #[test]
    fn a_file_store_is_located_at_its_path() {
        let path = Path::new("/somewhere/inventory.yaml");
        let store = YamlFileStore::new(path, Duration::from_secs(5));
        assert_eq!(store.location(), "/somewhere/inventory.yaml");
    }

    #[test]
    fn is_file_at_tells_a_lock_file_gone_from_one_it_cannot_look_at() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inventory.yaml.flock");
        let file = File::create(&path).unwrap();
        assert!(is_file_at(&file, &path).unwrap());
        // Removed: another file may take its place, so lock again.
        std::fs::remove_file(&path).unwrap();
        assert!(!is_file_at(&file, &path).unwrap());
        // A path that cannot be looked at is an error to report, not a lock to take again.
        let under_a_file = dir.path().join("plain");
        std::fs::write(&under_a_file, "").unwrap();
        let err = is_file_at(&file, &under_a_file.join("inventory.yaml.flock")).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotADirectory);
    }

    fn store() -> (tempfile::TempDir, YamlFileStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = YamlFileStore::new(dir.path().join("inventory.yaml"), Duration::from_secs(5));
        (dir, store)
    }

    #[test]
    fn a_record_changed_since_it_was_read_is_not_replaced() {
        let (_dir, store) = store();
        std::fs::write(store.path(), UPSTREAM).unwrap();
        let mut mine = HostRecord::pending("TestProvider", None, serde_yaml::Mapping::new());
        mine.set(fields::HOSTNAME, "mine");
        store.put(std::slice::from_ref(&mine)).unwrap();
        let seen = store.list().unwrap();
        let claim = |r: &HostRecord| {
            let mut c = r.clone();
            c.set("_broker_reaper", "me");
            (r.clone(), c)
        };
        // The first claim of the broker record and of a Python broker record wins ...
        let first = store
            .replace_unchanged(&[claim(&seen[3]), claim(&seen[1])])
            .unwrap();
        assert_eq!(first, [seen[3].id(), seen[1].id()]);
        let after = store.list().unwrap();
        assert_eq!(after.len(), 4, "replaced in place, nothing added");
        assert_eq!(after[1].get("_broker_reaper"), Some(&Value::from("me")));
        assert_eq!(after[1].hostname(), Some("test.host.example.com"));
        assert_eq!(after[3].get("_broker_reaper"), Some(&Value::from("me")));
        // ... and a second one, made from the same reading, loses and writes nothing.
        let text = std::fs::read_to_string(store.path()).unwrap();
        let second = store
            .replace_unchanged(&[claim(&seen[3]), claim(&seen[1])])
            .unwrap();
        assert!(second.is_empty(), "{second:?}");
        assert_eq!(std::fs::read_to_string(store.path()).unwrap(), text);
        // A record that is gone is not added back.
        store.remove(&[after[3].id()]).unwrap();
        assert!(
            store
                .replace_unchanged(&[claim(&after[3])])
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.list().unwrap().len(), 3);
    }

    #[test]
    fn upstream_inventory_round_trips_without_loss() {
        let (_dir, store) = store();
        std::fs::write(store.path(), UPSTREAM).unwrap();
        let before = store.list().unwrap();
        assert_eq!(before.len(), 3);
        // A record without `_broker_id` (the Python broker's) cannot be spliced in: putting one back
        // unchanged makes the writer emit the whole document.
        store.put(&before[..1]).unwrap();
        let written = std::fs::read_to_string(store.path()).unwrap();
        assert_ne!(
            written, UPSTREAM,
            "the whole document was to be written anew"
        );
        let after = store.list().unwrap();
        assert_eq!(before, after);
        let as_values: Value = serde_yaml::from_str(&written).unwrap();
        let original: Value = serde_yaml::from_str(UPSTREAM).unwrap();
        assert_eq!(as_values, original);
    }

    #[test]
    fn an_inventory_that_cannot_be_read_is_an_error_not_an_empty_inventory() {
        let (_dir, store) = store();
        // A directory where the file should be: reading it fails, as an unreadable file does.
        std::fs::create_dir(store.path()).unwrap();
        let err = store.list().unwrap_err();
        assert!(err.to_string().starts_with("reading inventory"), "{err}");
        let record = HostRecord::pending("TestProvider", None, Default::default());
        let err = store.put(std::slice::from_ref(&record)).unwrap_err();
        assert!(err.to_string().starts_with("reading inventory"), "{err}");
        assert!(store.path().is_dir());
    }

    #[test]
    fn an_entry_broker_cannot_read_is_reported_as_the_reader_saw_it() {
        let path = Path::new("inventory.yaml");
        // Not a mapping: the reader's own message, not the duplicate-key checker's.
        let text = "- hostname: a\n- just text\n";
        let reader = serde_yaml::from_str::<Vec<HostRecord>>(text).unwrap_err();
        let err = parse_inventory(path, text).unwrap_err();
        assert_eq!(
            err.to_string(),
            Error::parse(path, &reader, false).to_string()
        );
        assert!(matches!(err, Error::Parse { line: 2, .. }), "{err}");
        // A duplicate key: placed at the key (line 3), not at the start of its mapping (line 2).
        let err = parse_inventory(path, "- hostname: a\n- name: b\n  name: c\n").unwrap_err();
        assert!(matches!(err, Error::Parse { line: 3, .. }), "{err}");
    }

    #[test]
    fn an_entry_with_a_duplicate_key_of_any_kind_refuses_every_write() {
        let (_dir, store) = store();
        let record = HostRecord::pending("P", None, Default::default());
        // `"n\x61me"` is `name` written with an escape: a key the reader cannot borrow from the text.
        for key in [
            "1",
            "-1",
            "1.5",
            "true",
            "~",
            "[a]",
            "{a: 1}",
            "name",
            r#""n\x61me""#,
        ] {
            let text = format!("- _broker_id: h1\n  {key}: x\n  {key}: y\n- hostname: b\n");
            std::fs::write(store.path(), &text).unwrap();
            let err = store.put(std::slice::from_ref(&record)).unwrap_err();
            assert!(err.to_string().contains("duplicate entry"), "{key}: {err}");
            let err = store.remove(&["h1".into()]).unwrap_err();
            assert!(err.to_string().contains("duplicate entry"), "{key}: {err}");
            assert_eq!(
                std::fs::read_to_string(store.path()).unwrap(),
                text,
                "{key}"
            );
        }
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

    /// The records of `text` as the reader sees them, by the whole-document parse.
    /// A lease speaks for the process of its machine, pid and start only: the same pid on another
    /// machine, or another pid, is a process no lease knows.
    #[test]
    fn an_owners_lease_is_found_by_machine_pid_and_start() {
        let owner = |machine: &str, pid: u32, started: Option<u64>| Owner {
            user: "qe".into(),
            machine: machine.into(),
            pid,
            started,
            boot: None,
        };
        let leases = OwnerLeases::new(vec![
            OwnerLease::new(&owner("ci-1.example.com", 4242, Some(100)), true),
            OwnerLease::new(&owner("ci-2.example.com", 4343, Some(100)), false),
        ]);
        let liveness = |machine: &str, pid: u32, started: Option<u64>| {
            leases.liveness(&owner(machine, pid, started))
        };
        assert_eq!(
            liveness("ci-1.example.com", 4242, Some(100)),
            Liveness::Gone
        );
        assert_eq!(liveness("ci-1.example.com", 4242, None), Liveness::Gone);
        assert_eq!(
            liveness("ci-2.example.com", 4343, Some(100)),
            Liveness::Alive
        );
        assert_eq!(
            liveness("ci-3.example.com", 4242, Some(100)),
            Liveness::Unknown
        );
        assert_eq!(
            liveness("ci-1.example.com", 4343, Some(100)),
            Liveness::Unknown
        );
        assert_eq!(
            liveness("ci-1.example.com", 4242, Some(101)),
            Liveness::Unknown
        );
    }

    /// The file store is private when neither group nor others may read the file, and before it
    /// is written (broker creates it readable by its owner only).
    #[test]
    fn the_file_store_is_private_only_when_only_its_owner_may_read_it() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, store) = store();
        assert!(store.is_private(), "not written yet");
        store.put(&[]).unwrap();
        for (mode, private) in [
            (0o600, true),
            (0o640, false),
            (0o604, false),
            (0o644, false),
        ] {
            let file = dir.path().join("inventory.yaml");
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(store.is_private(), private, "{mode:o}");
        }
    }

    #[test]
    fn a_store_in_a_directory_not_made_yet_makes_it() {
        let (dir, _) = store();
        let path = dir.path().join("not/yet/inventory.yaml");
        let store = YamlFileStore::new(&path, Duration::from_secs(5));
        let record = HostRecord::pending("TestProvider", None, Default::default());
        store.put(std::slice::from_ref(&record)).unwrap();
        assert_eq!(store.list().unwrap(), [record]);
        assert!(dir.path().join("not/yet/inventory.yaml.flock").is_file());
    }

    #[test]
    fn a_long_wait_for_the_lock_is_announced_once_naming_the_holder() {
        let (_dir, store) = store();
        let store = YamlFileStore::new(store.path(), Duration::from_secs(60));
        let (subscriber, events) = crate::test_log::Collect::new();
        let warnings = || -> Vec<String> {
            let events = events.lock().unwrap();
            let warned = events
                .iter()
                .filter(|(level, _)| *level == tracing::Level::WARN);
            warned.map(|(_, message)| message.clone()).collect()
        };
        let said = || warnings().len();
        let held = store.lock().unwrap();
        std::thread::scope(|scope| {
            // The holder lets go once the wait was announced and has lasted a while (or after 30 s).
            scope.spawn(|| {
                let started = Instant::now();
                while (said() == 0 || started.elapsed() < Duration::from_millis(1500))
                    && started.elapsed() < Duration::from_secs(30)
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                drop(held);
            });
            tracing::subscriber::with_default(subscriber, || store.put(&[]).unwrap());
        });
        let warnings = warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let expected = format!(
            "waiting up to 1m for the inventory lock `{}` (pid {}",
            store.lock_path().display(),
            std::process::id()
        );
        assert!(warnings[0].starts_with(&expected), "{warnings:?}");
    }

    /// A wait shorter than the announcement's threshold is not announced: parallel writers wait
    /// for one another all the time. (The wait is timed from a start ahead of now, so however
    /// slowly this machine runs it, it has not yet lasted the threshold when the lock comes free.)
    #[test]
    fn a_short_wait_for_the_lock_is_not_announced() {
        let dir = tempfile::tempdir().unwrap();
        let lock_path = dir.path().join("inventory.yaml.flock");
        let held = File::create(&lock_path).unwrap();
        held.lock().unwrap();
        let waiting = File::open(&lock_path).unwrap();
        let (subscriber, events) = crate::test_log::Collect::new();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                std::thread::sleep(Duration::from_millis(50));
                held.unlock().unwrap();
            });
            let ahead = Instant::now() + Duration::from_secs(3600);
            tracing::subscriber::with_default(subscriber, || {
                wait_for_lock(
                    &waiting,
                    &waiting,
                    &lock_path,
                    ahead,
                    Duration::from_secs(60),
                    &INVENTORY_LOCK,
                )
                .unwrap();
            });
        });
        assert_eq!(*events.lock().unwrap(), Vec::new());
    }

    fn read(text: &str) -> Vec<HostRecord> {
        parse_whole(Path::new("inventory.yaml"), text).unwrap()
    }

    fn ids(records: &[HostRecord]) -> Vec<String> {
        records.iter().map(|r| r.id().as_str().to_owned()).collect()
    }

    #[test]
    fn checkin_after_a_quoted_string_continued_on_a_dash_line_leaves_a_readable_file() {
        let (_dir, store) = store();
        let text = "- _broker_id: h1\n  _broker_provider: TestProvider\n  name: \"first part\n- second part\"\n- _broker_id: h2\n  _broker_provider: TestProvider\n  name: b\n";
        std::fs::write(store.path(), text).unwrap();
        let before = store.list().unwrap();
        assert_eq!(ids(&before), ["h1", "h2"]);
        assert_eq!(before[0].name(), Some("first part - second part"));
        assert_eq!(store.remove(&["h1".into()]).unwrap(), vec!["h1".into()]);
        assert_eq!(store.list().unwrap(), vec![before[1].clone()]);
    }

    #[test]
    fn a_continuation_line_that_reads_like_an_identity_does_not_select_its_entry() {
        let (_dir, store) = store();
        let text = "- _broker_id: h2\n  _broker_provider: TestProvider\n  note: \"starts here\n  _broker_id: h1\n  ends here\"\n- _broker_id: h1\n  _broker_provider: TestProvider\n  name: one\n";
        std::fs::write(store.path(), text).unwrap();
        let before = store.list().unwrap();
        assert_eq!(ids(&before), ["h2", "h1"]);
        assert_eq!(store.remove(&["h1".into()]).unwrap(), vec!["h1".into()]);
        assert_eq!(store.list().unwrap(), vec![before[0].clone()]);

        // Replacing goes to the right entry too.
        std::fs::write(store.path(), text).unwrap();
        let mut h1 = before[1].clone();
        h1.set_state(HostState::Releasing);
        store.put(std::slice::from_ref(&h1)).unwrap();
        assert_eq!(store.list().unwrap(), vec![before[0].clone(), h1]);
    }

    #[test]
    fn an_inventory_the_reader_refuses_fails_the_first_write_naming_the_place() {
        let (_dir, store) = store();
        for (text, line) in [
            // A duplicate key.
            ("- _broker_id: h1\n  name: a\n  name: b\n", 3),
            // An integer beyond 64 bits (PyYAML reads it).
            (
                "- _broker_id: h1\n  name: a\n- _broker_id: h2\n  disk: 123456789012345678901234567890\n",
                4,
            ),
        ] {
            std::fs::write(store.path(), text).unwrap();
            let err = store.list().unwrap_err();
            assert!(
                matches!(err, Error::Parse { line: l, .. } if l == line),
                "{err}"
            );
            let intent = HostRecord::pending("TestProvider", None, Default::default());
            let err = store.put(std::slice::from_ref(&intent)).unwrap_err();
            match &err {
                Error::Parse {
                    path,
                    line: l,
                    column,
                    ..
                } => {
                    assert_eq!(path, store.path());
                    assert_eq!((*l, *column > 0), (line, true), "{err}");
                }
                other => panic!("expected a parse error, got {other}"),
            }
            assert!(store.remove(&["h1".into()]).is_err());
            assert_eq!(std::fs::read_to_string(store.path()).unwrap(), text);
        }
    }

    #[test]
    fn removing_an_entry_whose_anchor_another_entry_uses_keeps_the_value() {
        let (_dir, store) = store();
        let text = "- _broker_id: h1\n  _broker_args: &shared\n    image: rhel9\n- _broker_id: h2\n  _broker_args: *shared\n";
        std::fs::write(store.path(), text).unwrap();
        let before = store.list().unwrap();
        assert_eq!(
            before[1]
                .lookup("_broker_args.image")
                .and_then(Value::as_str),
            Some("rhel9")
        );
        store.remove(&["h1".into()]).unwrap();
        assert_eq!(store.list().unwrap(), vec![before[1].clone()]);

        // Replacing the anchor's entry keeps the alias readable too.
        std::fs::write(store.path(), text).unwrap();
        let mut h1 = before[0].clone();
        h1.set("hostname", "h1.example.com");
        store.put(std::slice::from_ref(&h1)).unwrap();
        assert_eq!(store.list().unwrap(), vec![h1, before[1].clone()]);
    }

    #[test]
    fn deleting_the_lock_file_while_writers_run_loses_no_record() {
        use std::sync::atomic::{AtomicBool, Ordering};
        const WRITERS: usize = 8;
        const PUTS: usize = 10;
        let (_dir, store) = store();
        let lock_path = store.lock_path();
        let done = AtomicBool::new(false);
        let written: Vec<RecordId> = std::thread::scope(|scope| {
            scope.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    let _ = std::fs::remove_file(&lock_path);
                    std::thread::yield_now();
                }
            });
            let writers: Vec<_> = (0..WRITERS)
                .map(|_| {
                    scope.spawn(|| {
                        // Each writer uses its own handle, as another process would.
                        let store = YamlFileStore::new(store.path(), Duration::from_secs(60));
                        (0..PUTS)
                            .map(|_| {
                                let r = HostRecord::pending("P", None, Default::default());
                                store.put(std::slice::from_ref(&r)).unwrap();
                                r.id()
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            // Stop the lock remover before looking at the outcome: were a writer's panic re-raised
            // first, the scope would wait for the remover forever instead of failing.
            let outcomes: Vec<_> = writers.into_iter().map(|w| w.join()).collect();
            done.store(true, Ordering::Relaxed);
            outcomes.into_iter().flat_map(|o| o.unwrap()).collect()
        });
        let listed: HashSet<RecordId> = store.list().unwrap().iter().map(HostRecord::id).collect();
        let missing: Vec<&RecordId> = written.iter().filter(|id| !listed.contains(id)).collect();
        assert!(
            missing.is_empty(),
            "{} of {} records lost",
            missing.len(),
            written.len()
        );
        assert_eq!(listed.len(), WRITERS * PUTS);
    }

    #[cfg(unix)]
    #[test]
    fn a_symbolic_link_at_the_lock_path_is_refused_and_its_target_kept() {
        let (dir, store) = store();
        let victim = dir.path().join("precious.txt");
        std::fs::write(&victim, "keep me\n").unwrap();
        std::os::unix::fs::symlink(&victim, store.lock_path()).unwrap();
        let err = store
            .put(&[HostRecord::pending("P", None, Default::default())])
            .unwrap_err();
        let text = crate::error::chain(&err);
        assert!(text.contains("symbolic link"), "{text}");
        assert!(text.contains("inventory.yaml.flock"), "{text}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me\n");
        assert!(!store.path().exists(), "nothing was written");
    }

    #[cfg(unix)]
    #[test]
    fn a_symlinked_shared_inventory_stays_a_link_and_keeps_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("team");
        std::fs::create_dir(&shared).unwrap();
        let target = shared.join("inventory.yaml");
        std::fs::write(&target, UPSTREAM).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o664)).unwrap();
        let link = dir.path().join("inventory.yaml");
        std::os::unix::fs::symlink("team/inventory.yaml", &link).unwrap();
        let store = YamlFileStore::new(&link, Duration::from_secs(5));

        // The fast path (a record of broker's own) and the whole-document path (a sync).
        let record = HostRecord::pending("TestProvider", None, Default::default());
        store.put(std::slice::from_ref(&record)).unwrap();
        store
            .sync_provider(ProviderListing::new("Other", None, Vec::new(), Vec::new()))
            .unwrap();
        store.remove(&[record.id()]).unwrap();

        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o664);
        assert_eq!(store.list().unwrap(), read(UPSTREAM));
        assert!(
            shared.join("inventory.yaml.flock").exists(),
            "one lock per file"
        );
        assert!(!dir.path().join("inventory.yaml.flock").exists());
    }

    #[cfg(unix)]
    #[test]
    fn a_new_inventory_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, store) = store();
        store
            .put(&[HostRecord::pending("P", None, Default::default())])
            .unwrap();
        let mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode()
            & 0o7777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_record_broker_cannot_write_back_unchanged_fails_the_write_and_keeps_the_file() {
        // Found by the `inventory` fuzz target: the writer spelled a `%2C` in a tag as `,` (a file
        // no reader accepts) and could not write a mapping used as a key at all.
        for odd in ["- name: odd\n  note: !foo%2Cbar x\n", "- {{a: 1}: x}\n"] {
            let (_dir, store) = store();
            let text = format!("- hostname: plain\n{odd}");
            std::fs::write(store.path(), &text).unwrap();
            let records = store.list().unwrap();
            assert_eq!(records.len(), 2, "{text}");
            let shown = records[1].display_name();
            // A removal by content identity takes the whole-document path.
            let err = store.remove(&[records[0].id()]).unwrap_err();
            // As the CLI prints it: the error and its causes.
            let mut err: &dyn std::error::Error = &err;
            let mut chain = err.to_string();
            while let Some(source) = err.source() {
                chain = format!("{chain}: {source}");
                err = source;
            }
            let err = chain;
            assert!(
                err.contains(&format!("`{shown}`")) && err.contains("cannot write back unchanged"),
                "{err}"
            );
            assert_eq!(std::fs::read_to_string(store.path()).unwrap(), text);
        }
    }

    #[test]
    fn line_breaks_and_spaces_only_yaml_knows_never_mislead_the_fast_edit() {
        // Found by the `inventory` fuzz target. YAML also breaks lines at a lone CR (and NEL, LS,
        // PS), so `...` after one ended the document and the appended entry started a second; and
        // Rust's `trim` takes a form feed for a space, so `[]\x0c`, which the reader refuses, was
        // edited as an empty inventory.
        let record = HostRecord::pending("P", None, Default::default());
        for text in [
            "- _broker_id: h1\r...\n",
            "- _broker_id: h1\r- _broker_id: h2\n",
            "- _broker_id: h1\u{2028}...\n",
        ] {
            let (_dir, store) = store();
            std::fs::write(store.path(), text).unwrap();
            match parse_whole(store.path(), text) {
                Ok(mut expected) => {
                    store.put(std::slice::from_ref(&record)).unwrap();
                    expected.push(record.clone());
                    assert_eq!(store.list().unwrap(), expected, "{text:?}");
                }
                Err(_) => {
                    assert!(
                        store.put(std::slice::from_ref(&record)).is_err(),
                        "{text:?}"
                    );
                    assert_eq!(std::fs::read_to_string(store.path()).unwrap(), text);
                }
            }
        }
        let (_dir, store) = store();
        std::fs::write(store.path(), "[]\x0c").unwrap();
        assert!(store.list().is_err());
        assert!(store.put(std::slice::from_ref(&record)).is_err());
        assert_eq!(std::fs::read_to_string(store.path()).unwrap(), "[]\x0c");
    }

    #[test]
    fn a_block_scalar_ending_a_file_without_a_final_line_end_keeps_its_value() {
        // Found by the `inventory` fuzz target: a line end added after the last entry made the
        // block scalar `- h1` read as `- h1\n`.
        let text = "- _broker_id: h1\n  name: a\n- _broker_id: h2\n  note: |\n    - h1";
        let added = HostRecord::pending("P", None, Default::default());
        for remove in [false, true] {
            let (_dir, store) = store();
            std::fs::write(store.path(), text).unwrap();
            let mut expected = read(text);
            assert_eq!(expected[1].get("note"), Some(&Value::from("- h1")));
            if remove {
                store.remove(&[RecordId::from("h1")]).unwrap();
                expected.remove(0);
            } else {
                store.put(std::slice::from_ref(&added)).unwrap();
                expected.push(added.clone());
            }
            assert_eq!(store.list().unwrap(), expected, "remove: {remove}");
        }
    }

    #[test]
    fn a_byte_order_mark_at_the_start_is_accepted() {
        let (_dir, store) = store();
        std::fs::write(store.path(), format!("\u{feff}{UPSTREAM}")).unwrap();
        assert_eq!(store.list().unwrap(), read(UPSTREAM));
        let record = HostRecord::pending("P", None, Default::default());
        store.put(std::slice::from_ref(&record)).unwrap();
        let mut expected = read(UPSTREAM);
        expected.push(record);
        assert_eq!(store.list().unwrap(), expected);
    }

    /// A small deterministic generator (xorshift), so a failing layout can be replayed by its seed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len())]
        }
    }

    /// A value in one of the styles people and PyYAML write, some running over several lines whose
    /// text looks like entry starts or identities.
    fn value(rng: &mut Rng, entry: usize, anchors: &mut Vec<String>) -> String {
        let tricky = [
            "- second part",
            "  _broker_id: h1",
            "  _broker_id: h2",
            "- _broker_id: h3",
            "  name: other",
            "# not a comment",
            "plain words",
        ];
        match rng.below(10) {
            0 => format!("\"starts\n{}\n  ends\"", rng.pick(&tricky)),
            1 => format!("'starts\n{}\n  ends'", rng.pick(&tricky)),
            2 => format!("|\n    {}\n    more", rng.pick(&tricky).trim()),
            3 => format!("[a,\n    {}]", rng.below(100)),
            4 => {
                let name = format!("a{entry}x{}", anchors.len());
                anchors.push(name.clone());
                format!("&{name} {{image: rhel{}}}", rng.below(10))
            }
            5 if !anchors.is_empty() => format!("*{}", anchors[rng.below(anchors.len())]),
            6 => format!("{}", rng.below(1000)),
            7 => "\"a & b\"".to_owned(),
            // PyYAML reads it; broker cannot.
            8 if rng.below(4) == 0 => "123456789012345678901234567890".to_owned(),
            _ => format!("word{}", rng.below(10)),
        }
    }

    /// An inventory in the usual block layout with awkward values, identities h1..h4 (some repeated).
    fn layout(rng: &mut Rng) -> String {
        let mut text = String::new();
        let mut anchors = Vec::new();
        if rng.below(4) == 0 {
            text.push_str("# hand-edited\n");
        }
        for entry in 0..1 + rng.below(5) {
            let mut lines = Vec::new();
            if rng.below(6) != 0 {
                lines.push(format!("_broker_id: h{}", 1 + rng.below(4)));
            }
            lines.push("_broker_provider: P".to_owned());
            for key in ["name", "note"] {
                if rng.below(3) != 0 {
                    lines.push(format!("{key}: {}", value(rng, entry, &mut anchors)));
                }
            }
            if rng.below(40) == 0 {
                lines.push("_broker_provider: Q".to_owned()); // a duplicate key
            }
            let shift = rng.below(lines.len());
            lines.rotate_left(shift);
            text.push_str("- ");
            text.push_str(&lines.join("\n  "));
            text.push('\n');
            if rng.below(5) == 0 {
                text.push_str("# between entries\n");
            }
        }
        text
    }

    #[test]
    fn fast_edits_of_many_layouts_read_back_as_the_whole_document_path_would_write_them() {
        let (_dir, store) = store();
        let path = store.path().to_owned();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut checked, mut refused) = (0, 0);
        for round in 0..250 {
            let text = layout(&mut rng);
            std::fs::write(&path, &text).unwrap();
            let id = RecordId::from(format!("h{}", 1 + rng.below(5)).as_str());
            let Ok(mut expected) = parse_whole(&path, &text) else {
                // Broker cannot read it: every write is refused and the file kept.
                assert!(store.remove(std::slice::from_ref(&id)).is_err(), "{text}");
                assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
                refused += 1;
                continue;
            };
            let context = format!("round {round}, {id}:\n{text}");
            match rng.below(3) {
                0 => {
                    let at = expected.iter().position(|r| r.id() == id);
                    let removed = store.remove(std::slice::from_ref(&id)).unwrap();
                    assert_eq!(
                        removed,
                        at.map(|i| expected.remove(i).id())
                            .into_iter()
                            .collect::<Vec<_>>(),
                        "{context}"
                    );
                }
                1 => {
                    let mut record = HostRecord::pending("P", None, Default::default());
                    record.set(fields::ID, id.as_str());
                    record.set("name", "multi\nline\n- value");
                    match expected.iter().position(|r| r.id() == id) {
                        Some(i) => expected[i] = record.clone(),
                        None => expected.push(record.clone()),
                    }
                    store.put(std::slice::from_ref(&record)).unwrap();
                }
                _ => {
                    let record = HostRecord::pending("P", None, Default::default());
                    expected.push(record.clone());
                    store.put(std::slice::from_ref(&record)).unwrap();
                }
            }
            let written = std::fs::read_to_string(&path).unwrap();
            let read = parse_whole(&path, &written).unwrap_or_else(|e| {
                panic!("{context}\nwrote an unreadable file ({e}):\n{written}")
            });
            assert_eq!(read, expected, "{context}\nwrote:\n{written}");
            checked += 1;
        }
        assert!(
            checked > 200 && refused > 0,
            "{checked} checked, {refused} refused"
        );
    }

    /// Large inventories are parsed in parallel slices of entries: the records are those of the
    /// whole-document parse, in order, for every layout (anchors used across slices fall back to the
    /// whole document), and an unreadable one is refused with the same location.
    #[test]
    fn parallel_parsing_of_large_inventories_gives_the_whole_documents_records() {
        let path = Path::new("inventory.yaml");
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        // Plain records, as broker writes them: every slice parses on its own.
        let mut plain = String::from("# a large inventory\n");
        let mut n = 0;
        while plain.len() < PARALLEL_FROM_BYTES + 10_000 {
            plain.push_str(&format!(
                "- _broker_id: id{n}\n  _broker_provider: P\n  hostname: host{n}.example.com\n  \
                 _broker_args:\n    n: {n}\n    text: \"a\\nb\"\n"
            ));
            n += 1;
        }
        let chunks = Blocks::split(&plain).unwrap().chunks(4);
        assert_eq!(chunks.len(), 4);
        for chunk in &chunks {
            assert!(
                parse_whole(path, chunk).is_ok(),
                "slices parse on their own"
            );
        }
        let expected = parse_whole(path, &plain).unwrap();
        assert_eq!(expected.len(), n);
        for parts in [2, 3, 4] {
            assert_eq!(parse_in_parts(path, &plain, parts).unwrap(), expected);
        }
        // Hand-edited layouts, anchors and aliases among them.
        for round in 0..6 {
            let mut text = String::new();
            while text.len() < PARALLEL_FROM_BYTES {
                let piece = layout(&mut rng);
                if parse_whole(path, &piece).is_ok() {
                    text.push_str(&piece);
                }
            }
            let expected = parse_whole(path, &text).unwrap();
            let parsed = parse_in_parts(path, &text, 4).unwrap();
            assert!(parsed == expected, "round {round}: the records differ");
        }
        // A duplicate key in the last entry: the error names the place the whole document gives.
        let bad = format!("{plain}- _broker_id: x\n  name: a\n  name: b\n");
        let whole = parse_whole(path, &bad).unwrap_err().to_string();
        assert!(whole.contains("line"), "{whole}");
        assert_eq!(
            parse_in_parts(path, &bad, 4).unwrap_err().to_string(),
            whole
        );
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
        let before = records.clone();
        let report = merge_sync(
            &mut records,
            ProviderListing::new("P", None, before, reported),
        )
        .unwrap();
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
    fn sync_keeps_the_arguments_a_host_was_checked_out_with() {
        let mut records: Vec<HostRecord> = serde_yaml::from_str(
            r#"
- {_broker_provider: P, _broker_id: c1, hostname: 9d72b8b30535, _broker_args: {container_host: broker-busybox, environment: FOO=bar}}
"#,
        )
        .unwrap();
        let reported: Vec<HostRecord> = serde_yaml::from_str(
            r#"
- {_broker_id: c1, hostname: 9d72b8b30535, status: running, _broker_args: {container_host: localhost/broker-busybox:latest, _broker_origin: ci}}
"#,
        )
        .unwrap();
        let before = records.clone();
        let report = merge_sync(
            &mut records,
            ProviderListing::new("P", None, before.clone(), reported.clone()),
        )
        .unwrap();
        assert_eq!((report.added, report.updated, report.removed), (0, 1, 0));
        let args = records[0].args();
        assert_eq!(
            args.get("container_host").and_then(Value::as_str),
            Some("broker-busybox")
        );
        assert_eq!(
            args.get("environment").and_then(Value::as_str),
            Some("FOO=bar")
        );
        assert_eq!(
            args.get("_broker_origin").and_then(Value::as_str),
            Some("ci")
        );
        assert_eq!(
            records[0].get("status").and_then(Value::as_str),
            Some("running")
        );
        // The same listing again changes nothing.
        let again = records.clone();
        merge_sync(
            &mut records,
            ProviderListing::new("P", None, again.clone(), reported),
        )
        .unwrap();
        assert_eq!(records, again);
    }

    /// The records after a sync of provider `P` reporting `reported` over `stored` (both YAML).
    fn synced(stored: &str, reported: &str) -> Vec<HostRecord> {
        let mut records: Vec<HostRecord> = serde_yaml::from_str(stored).unwrap();
        let reported: Vec<HostRecord> = serde_yaml::from_str(reported).unwrap();
        let before = records.clone();
        merge_sync(
            &mut records,
            ProviderListing::new("P", None, before, reported),
        )
        .unwrap();
        records
    }

    #[test]
    fn sync_keeps_an_extended_lease_and_brings_back_a_lost_one() {
        // The provider's label keeps the lease given at checkout; `c2`'s record was lost.
        let records = synced(
            "- {_broker_provider: P, _broker_id: c1, hostname: a, _broker_expire_time: 2000}\n",
            "- {_broker_id: c1, hostname: a, _broker_expire_time: 1000}\n\
             - {_broker_id: c2, hostname: b, _broker_expire_time: 1500}\n",
        );
        let leases: Vec<(String, Option<i64>)> = records
            .iter()
            .map(|r| (r.display_name(), r.expire_time()))
            .collect();
        assert_eq!(
            leases,
            [("a".to_owned(), Some(2000)), ("b".to_owned(), Some(1500))]
        );
    }

    #[test]
    fn sync_keeps_a_records_checkout_time_and_takes_the_providers_for_a_lost_one() {
        // The provider says when it made each host (Container: the engine's `Created`), a moment
        // after broker recorded the checkout; `c2`'s record was lost.
        let records = synced(
            "- {_broker_provider: P, _broker_id: c1, hostname: a, _broker_checkout_time: 2000}\n",
            "- {_broker_id: c1, hostname: a, _broker_checkout_time: 2001}\n\
             - {_broker_id: c2, hostname: b, _broker_checkout_time: 1500}\n",
        );
        let times: Vec<(String, Option<i64>)> = records
            .iter()
            .map(|r| (r.display_name(), r.checkout_time()))
            .collect();
        assert_eq!(
            times,
            [("a".to_owned(), Some(2000)), ("b".to_owned(), Some(1500))]
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
        let before = records.clone();
        let report = merge_sync(
            &mut records,
            ProviderListing::new("P", Some("a"), before, reported),
        )
        .unwrap();
        assert_eq!(
            report,
            SyncReport {
                added: 1,
                updated: 1,
                removed: 1,
                added_hosts: vec!["brand-new".into()],
                removed_hosts: vec!["gone".into()],
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

    fn provider_records(yaml: &str) -> Vec<HostRecord> {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn sync_keeps_hosts_checked_out_while_the_provider_was_listed() {
        let before = provider_records(
            r#"
- {_broker_provider: P, _broker_id: old, name: old}
- {_broker_provider: P, _broker_id: gone, name: gone}
- {_broker_provider: P, _broker_id: p1, _broker_state: pending, name: p1}
- {_broker_provider: P, _broker_id: in1, name: in1}
"#,
        );
        // While the provider was listed: p1 became ready, new1 was checked out, in1 was checked in.
        let mut records = provider_records(
            r#"
- {_broker_provider: P, _broker_id: old, name: old}
- {_broker_provider: P, _broker_id: gone, name: gone}
- {_broker_provider: P, _broker_id: p1, name: p1}
- {_broker_provider: P, _broker_id: new1, name: new1}
"#,
        );
        // The listing was taken before p1 and new1 existed, and while in1 still did.
        let reported = provider_records("[{name: old}, {name: in1}]");
        let report = merge_sync(
            &mut records,
            ProviderListing::new("P", None, before, reported),
        )
        .unwrap();
        assert_eq!(
            report,
            SyncReport {
                added: 0,
                updated: 1,
                removed: 1,
                added_hosts: vec![],
                removed_hosts: vec!["gone".into()],
            }
        );
        assert_eq!(ids(&records), ["p1", "new1", "old"]);
    }

    #[test]
    fn sync_refuses_to_remove_many_records_unless_forced() {
        let inventory = provider_records(
            r#"
- {_broker_provider: P, _broker_id: a, name: a}
- {_broker_provider: P, _broker_id: b, name: b}
- {_broker_provider: P, _broker_id: c, name: c}
- {_broker_provider: P, _broker_id: d, name: d}
- {_broker_provider: P, _broker_id: e, name: e}
- {_broker_provider: Q, _broker_id: q, name: q}
"#,
        );
        let listing = |reported: &str| {
            ProviderListing::new("P", None, inventory.clone(), provider_records(reported))
        };
        // An empty listing (a provider pointed at the wrong place) would remove every record.
        let mut records = inventory.clone();
        let err = merge_sync(&mut records, listing("[]")).unwrap_err();
        assert!(
            matches!(&err, Error::SyncRefused { records: 5, removing, .. } if removing.len() == 5),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "syncing P would remove 5 of its 5 records: a, b, c, d, e; nothing was changed; \
             if the provider really no longer has these hosts, sync again with `--force`"
        );
        assert_eq!(err.exit_code(), 13);
        assert_eq!(records, inventory, "nothing changed");
        // Four of five: more than three and more than half.
        let err = merge_sync(&mut records, listing("[{name: a}]")).unwrap_err();
        assert!(matches!(&err, Error::SyncRefused { removing, .. } if removing.len() == 4));
        // Three of five is a few.
        let report = merge_sync(&mut records, listing("[{name: a}, {name: b}]")).unwrap();
        assert_eq!(report.removed_hosts, ["c", "d", "e"]);
        assert_eq!(ids(&records), ["q", "a", "b"]);
        // Forced, the empty listing removes them all.
        let mut records = inventory.clone();
        let report = merge_sync(&mut records, listing("[]").force(true)).unwrap();
        assert_eq!(report.removed, 5);
        assert_eq!(ids(&records), ["q"]);
    }

    #[test]
    fn sync_removes_half_of_the_records_but_no_more_without_force() {
        let names = ["a", "b", "c", "d", "e", "f", "g", "h"];
        let yaml: String = names
            .iter()
            .map(|n| format!("- {{_broker_provider: P, _broker_id: {n}, name: {n}}}\n"))
            .collect();
        let inventory = provider_records(&yaml);
        let listing = |reported: &str| {
            ProviderListing::new("P", None, inventory.clone(), provider_records(reported))
        };
        // Five of eight is more than half.
        let mut records = inventory.clone();
        let err =
            merge_sync(&mut records, listing("[{name: a}, {name: b}, {name: c}]")).unwrap_err();
        assert!(matches!(&err, Error::SyncRefused { removing, .. } if removing.len() == 5));
        // Four of eight is half, not more: removed.
        let report = merge_sync(
            &mut records,
            listing("[{name: a}, {name: b}, {name: c}, {name: d}]"),
        )
        .unwrap();
        assert_eq!(report.removed_hosts, ["e", "f", "g", "h"]);
    }
}

/// The store's guarantees as a [`crate::Broker`] relies on them: checkout and sync end to end.
#[cfg(test)]
mod with_a_broker {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use tokio::sync::Notify;

    use super::*;
    use crate::provider::{CheckoutContext, Provider, ProviderKind, ProviderRegistry};
    use crate::{Broker, CheckoutRequest, Mapping, Settings};

    /// Hosts "at the provider"; a listing can be held open while the test checks a host out.
    /// Tests run in parallel threads of one process, so each has a world of its own: `Listed(i)`
    /// lives in `WORLDS[i]`.
    #[derive(Debug)]
    struct Listed(usize);

    #[derive(Debug)]
    struct World {
        hosts: Mutex<Vec<String>>,
        checkouts: AtomicUsize,
        hold_listing: AtomicBool,
        listing_started: Notify,
        resume_listing: Notify,
    }

    impl World {
        const fn new() -> Self {
            World {
                hosts: Mutex::new(Vec::new()),
                checkouts: AtomicUsize::new(0),
                hold_listing: AtomicBool::new(false),
                listing_started: Notify::const_new(),
                resume_listing: Notify::const_new(),
            }
        }
    }

    static WORLDS: [World; 3] = [World::new(), World::new(), World::new()];

    impl std::ops::Deref for Listed {
        type Target = World;
        fn deref(&self) -> &World {
            &WORLDS[self.0]
        }
    }

    #[async_trait::async_trait]
    impl Provider for Listed {
        fn name(&self) -> &str {
            "Listed"
        }
        fn instance(&self) -> Option<&str> {
            None
        }
        async fn checkout(&self, _ctx: &CheckoutContext<'_>) -> Result<Mapping> {
            let n = self.checkouts.fetch_add(1, Ordering::SeqCst);
            let name = format!("vm-{n}");
            self.hosts.lock().unwrap().push(name.clone());
            let mut fields = Mapping::new();
            fields.insert("name".into(), name.into());
            Ok(fields)
        }
        async fn checkin(&self, host: &HostRecord) -> Result<()> {
            self.hosts
                .lock()
                .unwrap()
                .retain(|h| Some(h.as_str()) != host.name());
            Ok(())
        }
        async fn inventory(&self, _filter: Option<&str>) -> Result<Vec<HostRecord>> {
            let listed: Vec<HostRecord> = self
                .hosts
                .lock()
                .unwrap()
                .iter()
                .map(|name| {
                    let mut r = HostRecord::default();
                    r.set("name", name.as_str());
                    r
                })
                .collect();
            if self.hold_listing.load(Ordering::SeqCst) {
                self.listing_started.notify_one();
                self.resume_listing.notified().await;
            }
            Ok(listed)
        }
    }

    /// A broker whose one provider is `Listed(W)`, and that world.
    fn broker<const W: usize>(dir: &Path) -> (Broker, &'static World) {
        fn build<const W: usize>(_: crate::ProviderConfig) -> Result<Arc<dyn Provider>> {
            Ok(Arc::new(Listed(W)))
        }
        let settings = Settings::load_from(dir, Vec::new()).unwrap();
        let kind =
            ProviderKind::new("Listed", "test", build::<W>).checkout_actions(&["listed_action"]);
        let broker = Broker::new(settings, ProviderRegistry::new().with(kind)).unwrap();
        (broker, &WORLDS[W])
    }

    fn request() -> CheckoutRequest {
        CheckoutRequest::new().arg("listed_action", "x")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_checkout_into_an_inventory_broker_cannot_read_never_asks_the_provider() {
        let dir = tempfile::tempdir().unwrap();
        let (broker, listed) = broker::<0>(dir.path());
        let path = dir.path().join("inventory.yaml");
        for (text, line) in [
            ("- _broker_id: h1\n  name: a\n  name: b\n", 3),
            ("- name: a\n  disk: 123456789012345678901234567890\n", 2),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = broker.checkout(request()).await.unwrap_err();
            let text_of = crate::error::chain(&err);
            assert!(
                text_of.contains(&format!("inventory.yaml` at line {line}, column")),
                "{text_of}"
            );
            assert_eq!(err.exit_code(), 1);
            assert_eq!(
                listed.checkouts.load(Ordering::SeqCst),
                0,
                "no host was made"
            );
            assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sync_keeps_a_host_checked_out_while_the_provider_is_listed() {
        let dir = tempfile::tempdir().unwrap();
        let (broker, listed) = broker::<1>(dir.path());
        let first = broker.checkout(request()).await.unwrap();
        first.into_iter().for_each(|g| drop(g.keep()));

        listed.hold_listing.store(true, Ordering::SeqCst);
        let started = listed.listing_started.notified();
        let sync = tokio::spawn({
            let broker = broker.clone();
            async move { broker.sync_inventory("Listed").await }
        });
        started.await;
        // Checked out after the listing was taken: not in it.
        let second = broker.checkout(request()).await.unwrap();
        second.into_iter().for_each(|g| drop(g.keep()));
        listed.resume_listing.notify_one();
        let report = sync.await.unwrap().unwrap();

        assert_eq!((report.removed, report.updated, report.added), (0, 1, 0));
        let names: Vec<String> = broker
            .inventory()
            .list()
            .unwrap()
            .iter()
            .map(HostRecord::display_name)
            .collect();
        assert_eq!(names, ["vm-1", "vm-0"]);
    }

    /// A sync that would remove every record of the provider is refused and changes nothing;
    /// forced, it removes them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sync_that_would_remove_everything_is_refused_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let (broker, listed) = broker::<2>(dir.path());
        let guards = broker.checkout(request().count(2)).await.unwrap();
        guards.into_iter().for_each(|g| drop(g.keep()));
        // Gone behind broker's back: the provider lists none of them.
        listed.hosts.lock().unwrap().clear();
        let err = broker.sync_inventory("Listed").await.unwrap_err();
        assert!(
            matches!(&err, Error::SyncRefused { records: 2, removing, .. } if removing.len() == 2),
            "{err}"
        );
        assert_eq!(broker.inventory().list().unwrap().len(), 2);
        let report = broker.sync_inventory_forced("Listed").await.unwrap();
        assert_eq!((report.removed, report.updated, report.added), (2, 0, 0));
        assert!(broker.inventory().list().unwrap().is_empty());
    }

    /// A store that keeps the trait's own `replace_unchanged`.
    #[derive(Debug)]
    struct Plain(YamlFileStore);

    impl InventoryStore for Plain {
        fn list(&self) -> Result<Vec<HostRecord>> {
            self.0.list()
        }
        fn put(&self, records: &[HostRecord]) -> Result<()> {
            self.0.put(records)
        }
        fn remove(&self, ids: &[RecordId]) -> Result<Vec<RecordId>> {
            self.0.remove(ids)
        }
        fn sync_provider(&self, listing: ProviderListing) -> Result<SyncReport> {
            self.0.sync_provider(listing)
        }
        fn location(&self) -> String {
            self.0.location()
        }
    }

    #[test]
    fn the_default_replace_unchanged_replaces_only_records_still_as_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inventory.yaml");
        let store = Plain(YamlFileStore::new(path, Duration::from_secs(5)));
        let record = |name: &str| {
            let mut r = HostRecord::pending("TestProvider", None, Mapping::new());
            r.set(fields::NAME, name);
            r
        };
        let (a, b) = (record("a"), record("b"));
        store.put(&[a.clone(), b.clone()]).unwrap();
        // `b` changed after it was read: its claim must lose.
        let mut b_now = b.clone();
        b_now.set("_note", "changed by another process");
        store.put(&[b_now.clone()]).unwrap();
        let mut a_new = a.clone();
        a_new.set("_note", "claimed");
        let mut b_new = b.clone();
        b_new.set("_note", "claimed");
        let replaced = store
            .replace_unchanged(&[(a.clone(), a_new.clone()), (b, b_new)])
            .unwrap();
        assert_eq!(replaced, vec![a.id()]);
        let mut stored = store.list().unwrap();
        stored.sort_by_key(|r| r.name().map(str::to_owned));
        assert_eq!(stored, vec![a_new, b_now]);
    }
}
