//! Host records: the data of one inventory entry, and nothing that acts on a host.
//!
//! A [`HostRecord`] is one entry of `inventory.yaml`. It keeps every field verbatim (a round trip through
//! the inventory loses nothing, whatever a provider or the Python broker wrote) and offers typed access
//! to the fields broker itself uses. Broker adds a few fields the Python broker lacks and ignores:
//! `_broker_id`, `_broker_state`, `_broker_owner`, `_broker_checkout_time` and `_broker_expire_time`.
//!
//! This module depends on no provider, session or store: they all depend on it. The handle that runs
//! commands on a host is [`Host`](crate::Host), in `host.rs`.

use std::borrow::Cow;
use std::fmt;
use std::hash::Hasher;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value};

use crate::filter::FilterTarget;
use crate::process::Liveness;

/// Field names of the inventory format.
pub mod fields {
    /// The provider's name (`AnsibleTower`, `Container`, `TestProvider`…).
    pub const PROVIDER: &str = "_broker_provider";
    /// The provider instance the host came from.
    pub const PROVIDER_INSTANCE: &str = "_broker_provider_instance";
    /// The arguments the host was checked out with.
    pub const ARGS: &str = "_broker_args";
    /// The host's DNS name or address.
    pub const HOSTNAME: &str = "hostname";
    /// The provider's name for the host (VM name, container name).
    pub const NAME: &str = "name";
    /// The host's IP address.
    pub const IP: &str = "ip";
    /// The host class (`host`, `satellite`…).
    pub const TYPE: &str = "type";
    /// Broker's stable identity of the record (broker only).
    pub const ID: &str = "_broker_id";
    /// `pending`, `ready` or `releasing` (broker only).
    pub const STATE: &str = "_broker_state";
    /// Who checked the host out: `user`, `machine`, `pid` (broker only).
    pub const OWNER: &str = "_broker_owner";
    /// When the checkout started, seconds since the epoch (broker only).
    pub const CHECKOUT_TIME: &str = "_broker_checkout_time";
    /// When the local lease ends, seconds since the epoch (broker only).
    pub const EXPIRE_TIME: &str = "_broker_expire_time";
    /// The last error broker met handling this record (broker only).
    pub const LAST_ERROR: &str = "_broker_last_error";
    /// The id of the handoff target the host was handed to (broker only).
    pub const HANDOFF_TARGET: &str = "_broker_handoff_target";
    /// `handing_off`, `handed_off`, `handoff_pending` or `handoff_failed` (broker only).
    pub const HANDOFF_STATE: &str = "_broker_handoff_state";
    /// How many runs the last handoff took, retries and re-checks included (broker only).
    pub const HANDOFF_ATTEMPTS: &str = "_broker_handoff_attempts";
    /// Why the last handoff did not hand the host off (broker only).
    pub const HANDOFF_ERROR: &str = "_broker_handoff_error";
    /// The last handoff's log, one line per item (broker only).
    pub const HANDOFF_LOG: &str = "_broker_handoff_log";
    /// The process running the handoff under way, as [`OWNER`] (broker only; removed when it ends).
    pub const HANDOFF_RUNNER: &str = "_broker_handoff_runner";
    /// `true` while the handoff under way is the last step of the checkout that made the host,
    /// which is not done until it ends (broker only; removed when it ends).
    pub const HANDOFF_AT_CHECKOUT: &str = "_broker_handoff_at_checkout";
    /// The id of the handoff run under way, recorded before it starts: its private directories on
    /// the host are named by it and its processes carry it, so that what it left is found after a
    /// crash, and nothing of another run (broker only; removed when it ends).
    pub const HANDOFF_RUN: &str = "_broker_handoff_run";
}

/// Whether `record`'s handoff is under way (`handing_off`).
pub fn handing_off(record: &HostRecord) -> bool {
    record.get(fields::HANDOFF_STATE).and_then(Value::as_str) == Some("handing_off")
}

/// Whether `record`'s handoff is under way and the process running it is gone: it will never end.
pub fn handoff_interrupted(record: &HostRecord) -> bool {
    handing_off(record)
        && record
            .get(fields::HANDOFF_RUNNER)
            .and_then(|v| serde_yaml::from_value::<Owner>(v.clone()).ok())
            .is_some_and(|runner| runner.is_dead())
}

/// Whether `record`'s host is still being made: a checkout whose last step, the handoff, has not
/// ended. Its owner holds it as it holds a `pending` host.
pub fn checkout_handing_off(record: &HostRecord) -> bool {
    handing_off(record) && record.get(fields::HANDOFF_AT_CHECKOUT) == Some(&Value::Bool(true))
}

/// Where a record is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum HostState {
    /// Broker asked the provider for this host and has not heard back: the host may or may not exist.
    Pending,
    /// The host exists and is checked out.
    Ready,
    /// Broker is checking the host in (or a check-in did not finish).
    Releasing,
}

impl HostState {
    /// The name written to the inventory.
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Pending => "pending",
            HostState::Ready => "ready",
            HostState::Releasing => "releasing",
        }
    }
}

impl fmt::Display for HostState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The process that checked a host out (or, in `_broker_reaper`, that is reaping it).
///
/// A pid alone does not name a process for long, so broker records with it the process's start time
/// and boot (see [`crate::process`]): a later process that got the same pid is not taken for the
/// owner. Records written before these were recorded match any process with the pid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Login name.
    pub user: String,
    /// Machine (host name) the process ran on.
    pub machine: String,
    /// Process id.
    pub pid: u32,
    /// When the process started, in clock ticks since boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<u64>,
    /// The boot the process started in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<String>,
}

impl Owner {
    /// The current process.
    pub fn current() -> &'static Owner {
        static CURRENT: OnceLock<Owner> = OnceLock::new();
        CURRENT.get_or_init(|| {
            let pid = std::process::id();
            Owner {
                user: current_user(),
                machine: crate::process::machine_name(),
                pid,
                started: crate::process::start_ticks(pid),
                boot: crate::process::boot_id(),
            }
        })
    }

    /// Process `pid` of this machine as it runs now (its user left empty); `None` when no such
    /// process runs.
    pub fn local(pid: u32) -> Option<Owner> {
        let me = Owner::current();
        Some(Owner {
            user: String::new(),
            machine: me.machine.clone(),
            pid,
            started: Some(crate::process::start_ticks(pid)?),
            boot: me.boot.clone(),
        })
    }

    /// Whether the owning process still runs, as far as this machine can tell: processes of other
    /// machines are [`Liveness::Unknown`]; one of this machine is gone when no process has its pid,
    /// or the one that has it now started at another time or in another boot.
    pub fn liveness(&self) -> Liveness {
        let me = Owner::current();
        if self.machine != me.machine {
            return Liveness::Unknown;
        }
        if !cfg!(target_os = "linux") {
            return Liveness::Unknown;
        }
        let started_now = if self.pid == me.pid {
            me.started
        } else {
            match crate::process::start_ticks(self.pid) {
                Some(ticks) => Some(ticks),
                None => return Liveness::Gone,
            }
        };
        if recorded_matches(self.started.as_ref(), started_now.as_ref())
            && recorded_matches(self.boot.as_ref(), me.boot.as_ref())
        {
            Liveness::Alive
        } else {
            Liveness::Gone
        }
    }

    /// Whether the owning process is known to be gone (see [`Owner::liveness`]). Owners on other
    /// machines are never presumed dead.
    pub fn is_dead(&self) -> bool {
        self.liveness() == Liveness::Gone
    }

    /// The owner as an inventory value (`{user, machine, pid, started, boot}`).
    pub fn to_value(&self) -> Value {
        let mut o = Mapping::new();
        o.insert("user".into(), self.user.clone().into());
        o.insert("machine".into(), self.machine.clone().into());
        o.insert("pid".into(), u64::from(self.pid).into());
        if let Some(started) = self.started {
            o.insert("started".into(), started.into());
        }
        if let Some(boot) = &self.boot {
            o.insert("boot".into(), boot.clone().into());
        }
        Value::Mapping(o)
    }
}

/// Whether a recorded value matches the present one, where both are known.
fn recorded_matches<T: PartialEq>(recorded: Option<&T>, now: Option<&T>) -> bool {
    match (recorded, now) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// The login name of the current user: `$USER`, `$LOGNAME` or `$USERNAME`, else — as `whoami` and
/// `id -un` do, for containers and CI jobs that set none of them — the name the password database
/// (`/etc/passwd`) gives this process's uid, else `uid<N>`, else `unknown`.
pub fn current_user() -> String {
    user_from(
        |k| std::env::var(k).ok(),
        own_uid(),
        || std::fs::read_to_string("/etc/passwd").ok(),
    )
}

/// [`current_user`] with the environment (`var`), the uid and the password database given.
fn user_from(
    var: impl Fn(&str) -> Option<String>,
    uid: Option<String>,
    passwd: impl FnOnce() -> Option<String>,
) -> String {
    user_named_in(var)
        .or_else(|| {
            let uid = uid?;
            let named = passwd().and_then(|passwd| passwd_name_of(&passwd, &uid));
            Some(named.unwrap_or_else(|| format!("uid{uid}")))
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The first of `$USER`, `$LOGNAME` and `$USERNAME` that `var` gives and is not empty.
fn user_named_in(var: impl Fn(&str) -> Option<String>) -> Option<String> {
    ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|k| var(k).filter(|v| !v.is_empty()))
}

/// This process's real uid, from `/proc/self/status` (broker-core calls no `getuid`: it has no
/// unsafe code and no libc binding).
pub(crate) fn own_uid() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    Some(
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))?
            .split_whitespace()
            .next()?
            .to_owned(),
    )
}

/// The name of the `/etc/passwd` entry of `uid`.
fn passwd_name_of(passwd: &str, uid: &str) -> Option<String> {
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 7 && fields[2] == uid && !fields[0].is_empty())
            .then(|| fields[0].to_owned())
    })
}

/// The stable identity of an inventory record.
///
/// Records broker wrote carry `_broker_id`. Records written by the Python broker have none; their
/// identity is a fingerprint of their whole content, so removing one never touches another entry that
/// merely shares an empty `name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RecordId(String);

impl RecordId {
    /// A fresh, unique identity.
    pub fn generate() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mut h = Fnv::default();
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write(format!("{:?}", std::thread::current().id()).as_bytes());
        RecordId(format!("h{:016x}", h.finish()))
    }

    /// The identity as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for RecordId {
    fn from(s: &str) -> Self {
        RecordId(s.to_owned())
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// FNV-1a, 64 bit: stable across Rust versions and platforms (unlike `DefaultHasher`).
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

fn fingerprint(value: &Value, h: &mut Fnv) {
    match value {
        Value::Null => h.write_u8(0),
        Value::Bool(b) => {
            h.write_u8(1);
            h.write_u8(u8::from(*b));
        }
        Value::Number(n) => {
            h.write_u8(2);
            h.write(n.to_string().as_bytes());
        }
        Value::String(s) => {
            h.write_u8(3);
            h.write(s.as_bytes());
            h.write_u8(0xff);
        }
        Value::Sequence(items) => {
            h.write_u8(4);
            h.write_usize(items.len());
            items.iter().for_each(|v| fingerprint(v, h));
        }
        Value::Mapping(map) => {
            h.write_u8(5);
            h.write_usize(map.len());
            for (k, v) in map {
                fingerprint(k, h);
                fingerprint(v, h);
            }
        }
        Value::Tagged(tagged) => {
            h.write_u8(6);
            h.write(tagged.tag.to_string().as_bytes());
            fingerprint(&tagged.value, h);
        }
    }
}

/// One entry of the inventory: every field verbatim, with typed access to the ones broker uses.
#[derive(Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HostRecord {
    fields: Mapping,
}

impl fmt::Debug for HostRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostRecord")
            .field("id", &self.id())
            .field("provider", &self.provider())
            .field("hostname", &self.hostname())
            .field("name", &self.name())
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl HostRecord {
    /// A record from its fields, as read from an inventory.
    pub fn from_mapping(fields: Mapping) -> Self {
        HostRecord { fields }
    }

    /// The intent record written before a provider is asked for a host: `pending`, owned by this
    /// process, with a fresh identity.
    pub fn pending(provider: &str, instance: Option<&str>, args: Mapping) -> Self {
        let mut record = HostRecord::default();
        record.set(fields::ID, RecordId::generate().0);
        record.set(fields::PROVIDER, provider);
        if let Some(instance) = instance {
            record.set(fields::PROVIDER_INSTANCE, instance);
        }
        record.set(fields::ARGS, Value::Mapping(args));
        record.set(fields::TYPE, "host");
        record.set_state(HostState::Pending);
        record.set(fields::OWNER, Owner::current().to_value());
        record.set(fields::CHECKOUT_TIME, crate::time::now_epoch());
        record
    }

    /// The record as it may be shown: the values of secret-looking fields and arguments (at any
    /// depth) replaced by [`crate::redact::MASK`]. Borrowed when there is nothing to hide.
    pub fn masked(&self) -> std::borrow::Cow<'_, HostRecord> {
        if crate::redact::mapping_has_secrets(&self.fields) {
            std::borrow::Cow::Owned(HostRecord {
                fields: crate::redact::mask_mapping(&self.fields),
            })
        } else {
            std::borrow::Cow::Borrowed(self)
        }
    }

    /// All fields, in file order.
    pub fn fields(&self) -> &Mapping {
        &self.fields
    }

    /// All fields, to change freely.
    pub fn fields_mut(&mut self) -> &mut Mapping {
        &mut self.fields
    }

    /// The record as a YAML value.
    pub fn to_value(&self) -> Value {
        Value::Mapping(self.fields.clone())
    }

    /// A top-level field.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.fields.get(key)
    }

    /// A field by dotted path (`_broker_args.deploy_rhel_version`).
    pub fn lookup(&self, path: &str) -> Option<&Value> {
        let mut parts = path.split('.');
        let first = parts.next()?;
        let mut current = self.fields.get(first)?;
        for part in parts {
            current = match current {
                Value::Mapping(m) => m.get(part)?,
                Value::Sequence(items) => items.get(part.parse::<usize>().ok()?)?,
                Value::Tagged(t) => match &t.value {
                    Value::Mapping(m) => m.get(part)?,
                    _ => return None,
                },
                _ => return None,
            };
        }
        Some(current)
    }

    /// Sets a top-level field, keeping its position when it exists.
    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.fields
            .insert(Value::String(key.to_owned()), value.into());
    }

    /// Removes a top-level field.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.fields.shift_remove(key)
    }

    /// Copies every field of `other` over this record (the provider's answer over the intent record).
    pub fn merge(&mut self, other: Mapping) {
        for (k, v) in other {
            self.fields.insert(k, v);
        }
    }

    fn str_field(&self, key: &str) -> Option<&str> {
        match self.fields.get(key)? {
            Value::String(s) if !s.is_empty() => Some(s),
            _ => None,
        }
    }

    /// The stable identity: `_broker_id`, or a fingerprint of the content for records without one.
    pub fn id(&self) -> RecordId {
        match self.str_field(fields::ID) {
            Some(id) => RecordId(id.to_owned()),
            None => {
                let mut h = Fnv::default();
                fingerprint(&Value::Mapping(self.fields.clone()), &mut h);
                RecordId(format!("legacy-{:016x}", h.finish()))
            }
        }
    }

    /// Whether broker wrote this record (it has a `_broker_id`).
    pub fn has_broker_id(&self) -> bool {
        self.str_field(fields::ID).is_some()
    }

    /// `hostname`, when set and not empty.
    pub fn hostname(&self) -> Option<&str> {
        self.str_field(fields::HOSTNAME)
    }

    /// `name`, when set and not empty.
    pub fn name(&self) -> Option<&str> {
        self.str_field(fields::NAME)
    }

    /// `ip`, when set and not empty.
    pub fn ip(&self) -> Option<&str> {
        self.str_field(fields::IP)
    }

    /// `_broker_provider`.
    pub fn provider(&self) -> Option<&str> {
        self.str_field(fields::PROVIDER)
    }

    /// `_broker_provider_instance`.
    pub fn instance(&self) -> Option<&str> {
        self.str_field(fields::PROVIDER_INSTANCE)
    }

    /// `_broker_args`: what the host was checked out with.
    pub fn args(&self) -> Mapping {
        match self.fields.get(fields::ARGS) {
            Some(Value::Mapping(m)) => m.clone(),
            _ => Mapping::new(),
        }
    }

    /// The host class: the `host_type` argument or fact, else `type`, else `host`.
    pub fn host_type(&self) -> &str {
        self.lookup("_broker_args.host_type")
            .and_then(Value::as_str)
            .or_else(|| self.str_field(fields::TYPE))
            .unwrap_or("host")
    }

    /// The record's state; records without one (written by the Python broker) are `ready`.
    pub fn state(&self) -> HostState {
        match self.str_field(fields::STATE) {
            Some("pending") => HostState::Pending,
            Some("releasing") => HostState::Releasing,
            _ => HostState::Ready,
        }
    }

    /// Sets the state.
    pub fn set_state(&mut self, state: HostState) {
        self.set(fields::STATE, state.as_str());
    }

    /// The owning process, when broker recorded one.
    pub fn owner(&self) -> Option<Owner> {
        serde_yaml::from_value(self.fields.get(fields::OWNER)?.clone()).ok()
    }

    /// When the checkout started (seconds since the epoch).
    pub fn checkout_time(&self) -> Option<i64> {
        self.fields.get(fields::CHECKOUT_TIME)?.as_i64()
    }

    /// When the local lease ends (seconds since the epoch), if one was recorded and can be read: a
    /// whole number, a number with a fraction (the Python broker's `time.time()`; the fraction is
    /// dropped) or either written as text. A lease that is there and cannot be read is
    /// [`HostRecord::unreadable_expire_time`].
    pub fn expire_time(&self) -> Option<i64> {
        epoch_seconds(self.fields.get(fields::EXPIRE_TIME)?)
    }

    /// The recorded lease end, as written, when it is there and cannot be read
    /// (`_broker_expire_time: garbage`, edited by hand). Such a lease never ends by itself: the
    /// inventory shows it as `unreadable`, and a reap of ended leases reports the host and leaves it.
    pub fn unreadable_expire_time(&self) -> Option<String> {
        let value = self
            .fields
            .get(fields::EXPIRE_TIME)
            .filter(|v| !v.is_null())?;
        epoch_seconds(value).is_none().then(|| {
            crate::value::scalar_text(value)
                .unwrap_or_else(|| crate::value::to_json(value).to_string())
        })
    }

    /// What to call this host in messages: hostname, else name, else its identity.
    pub fn display_name(&self) -> String {
        self.hostname()
            .or_else(|| self.name())
            .map(str::to_owned)
            .unwrap_or_else(|| self.id().0)
    }

    /// Whether `key` names this record: its identity, hostname or name.
    pub fn answers_to(&self, key: &str) -> bool {
        self.hostname() == Some(key) || self.name() == Some(key) || self.id().0 == key
    }
}

/// The filter's view of a record: its top-level fields.
impl FilterTarget for HostRecord {
    fn field(&self, key: &str) -> Option<&Value> {
        self.get(key)
    }
    fn as_value(&self) -> Option<Cow<'_, Value>> {
        Some(Cow::Owned(self.to_value()))
    }
}

/// Seconds since the epoch in a `*_time` field: a whole number, else a finite number of no more than
/// 15 digits before the point (fraction dropped), from a number or from text.
fn epoch_seconds(value: &Value) -> Option<i64> {
    if let Some(whole) = value.as_i64() {
        return Some(whole);
    }
    let seconds = crate::value::scalar_f64(value)?;
    // Safe to convert: finite and well inside i64.
    (seconds.is_finite() && seconds.abs() < 1e15).then(|| seconds.floor() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkout is still handing off only while its record says `handing_off` and that the
    /// handoff is the checkout's own last step.
    #[test]
    fn a_checkout_hands_off_while_its_handoff_at_checkout_is_under_way() {
        let record = |state: &str, at_checkout: Option<bool>| {
            let mut record = HostRecord::default();
            record.set(fields::HANDOFF_STATE, state);
            if let Some(at) = at_checkout {
                record.set(fields::HANDOFF_AT_CHECKOUT, at);
            }
            record
        };
        assert!(checkout_handing_off(&record("handing_off", Some(true))));
        assert!(!checkout_handing_off(&record("handing_off", Some(false))));
        assert!(!checkout_handing_off(&record("handing_off", None)));
        assert!(!checkout_handing_off(&record("handoff_failed", Some(true))));
    }

    /// `{:?}` of a record names it (identity, provider, hostname, name, state) and shows none of
    /// its other fields, where secrets may be.
    #[test]
    fn a_records_debug_names_it_and_shows_no_other_field() {
        let mut record = HostRecord::pending("AnsibleTower", None, Default::default());
        record.set(fields::HOSTNAME, "h1.example.com");
        record.set("name", "vm-1");
        record.set("api_token", "hunter2");
        let shown = format!("{record:?}");
        for part in [
            "HostRecord",
            record.id().as_str(),
            "AnsibleTower",
            "h1.example.com",
            "vm-1",
            "Pending",
        ] {
            assert!(shown.contains(part), "{part} in {shown}");
        }
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    /// A handoff is interrupted when its record says it is under way and the process running it is
    /// gone; one whose runner lives, or that is not under way, is not.
    #[test]
    fn a_handoff_is_interrupted_when_its_runner_is_gone() {
        let gone = Owner {
            pid: 3_999_999_999,
            ..Owner::current().clone()
        };
        let record = |state: &str, runner: &Owner| {
            let mut record = HostRecord::default();
            record.set(fields::HANDOFF_STATE, state);
            record.set(fields::HANDOFF_RUNNER, runner.to_value());
            record
        };
        assert!(handoff_interrupted(&record("handing_off", &gone)));
        assert!(!handoff_interrupted(&record(
            "handing_off",
            Owner::current()
        )));
        assert!(!handoff_interrupted(&record("handoff_failed", &gone)));
        let mut no_runner = record("handing_off", &gone);
        no_runner.remove(fields::HANDOFF_RUNNER);
        assert!(!handoff_interrupted(&no_runner));
    }

    #[test]
    fn the_user_is_the_first_of_user_logname_and_username_that_is_set_and_not_empty() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(name, _)| *name == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert_eq!(
            user_named_in(env(&[("USER", ""), ("LOGNAME", "me")])).as_deref(),
            Some("me")
        );
        assert_eq!(
            user_named_in(env(&[("USERNAME", "you"), ("USER", "me")])).as_deref(),
            Some("me")
        );
        assert_eq!(user_named_in(env(&[("USER", ""), ("USERNAME", "")])), None);
    }

    #[test]
    fn a_record_from_a_mapping_has_exactly_its_fields() {
        let fields: Mapping = serde_yaml::from_str("{name: a, _broker_provider: P}").unwrap();
        let record = HostRecord::from_mapping(fields.clone());
        assert_eq!(record.fields(), &fields);
        assert_eq!(record.name(), Some("a"));
    }

    #[test]
    fn the_user_name_of_a_uid_comes_from_the_password_database() {
        let passwd =
            "root:x:0:0:root:/root:/bin/bash\n# note\nci:x:1001:1001::/home/ci:/bin/sh\nbroken:x\n";
        assert_eq!(passwd_name_of(passwd, "1001").as_deref(), Some("ci"));
        assert_eq!(passwd_name_of(passwd, "0").as_deref(), Some("root"));
        assert_eq!(passwd_name_of(passwd, "1002"), None);
        assert!(own_uid().is_some_and(|u| u.parse::<u32>().is_ok()));
    }

    fn record(yaml: &str) -> HostRecord {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn a_lease_is_read_from_numbers_and_text_and_one_that_cannot_be_is_told_apart() {
        let lease = |v: &str| {
            let r = record(&format!("{{hostname: a, _broker_expire_time: {v}}}"));
            (r.expire_time(), r.unreadable_expire_time())
        };
        assert_eq!(lease("1765804090"), (Some(1_765_804_090), None));
        assert_eq!(
            lease("1765804090.75"),
            (Some(1_765_804_090), None),
            "Python's time.time()"
        );
        assert_eq!(lease("'1765804090'"), (Some(1_765_804_090), None));
        assert_eq!(lease("null"), (None, None));
        assert_eq!(record("{hostname: a}").unreadable_expire_time(), None);
        for (written, shown) in [
            ("garbage", "garbage"),
            ("'2026-11-26 12:00'", "2026-11-26 12:00"),
            (".nan", ".nan"),
            ("1e300", "1e300"),
            ("[1, 2]", "[1,2]"),
            ("true", "true"),
        ] {
            assert_eq!(lease(written), (None, Some(shown.to_owned())), "{written}");
        }
    }

    #[test]
    fn legacy_records_get_distinct_content_identities() {
        let a = record("{_broker_provider: TestProvider, hostname: a}");
        let b = record("{_broker_provider: TestProvider, hostname: b}");
        let a2 = record("{_broker_provider: TestProvider, hostname: a}");
        assert_ne!(a.id(), b.id());
        assert_eq!(a.id(), a2.id());
        assert!(a.id().as_str().starts_with("legacy-"));
    }

    #[test]
    fn pending_record_carries_owner_and_identity() {
        let rec = HostRecord::pending("TestProvider", Some("t1"), Mapping::new());
        assert_eq!(rec.state(), HostState::Pending);
        assert!(rec.has_broker_id());
        assert_eq!(rec.owner().unwrap().pid, std::process::id());
        assert_eq!(rec.instance(), Some("t1"));
        assert!(!rec.owner().unwrap().is_dead());
    }

    #[test]
    fn a_reused_pid_is_not_taken_for_the_owner() {
        let me = Owner::current();
        assert!(me.started.is_some() && me.boot.is_some(), "{me:?}");
        assert_eq!(me.liveness(), Liveness::Alive);
        let earlier = Owner {
            started: me.started.map(|t| t.saturating_sub(1)),
            ..me.clone()
        };
        assert_eq!(
            earlier.liveness(),
            Liveness::Gone,
            "same pid, started earlier"
        );
        let other_boot = Owner {
            boot: Some("another-boot".into()),
            ..me.clone()
        };
        assert_eq!(other_boot.liveness(), Liveness::Gone);
        let unrecorded = Owner {
            started: None,
            boot: None,
            ..me.clone()
        };
        assert_eq!(
            unrecorded.liveness(),
            Liveness::Alive,
            "old records match by pid"
        );
        let elsewhere = Owner {
            machine: format!("{}-elsewhere", me.machine),
            ..me.clone()
        };
        assert_eq!(elsewhere.liveness(), Liveness::Unknown);
        assert!(!elsewhere.is_dead());
        let gone = Owner {
            pid: 3_999_999_999,
            ..me.clone()
        };
        assert!(gone.is_dead());
    }

    #[test]
    fn owners_round_trip_through_the_inventory() {
        let me = Owner::current();
        let back: Owner = serde_yaml::from_value(me.to_value()).unwrap();
        assert_eq!(&back, me);
        // As written before start times were recorded.
        let old: Owner = serde_yaml::from_str("{user: u, machine: m, pid: 7}").unwrap();
        assert_eq!((old.started, old.boot.as_deref()), (None, None));
        let written = serde_yaml::to_string(&old.to_value()).unwrap();
        assert_eq!(written, "user: u\nmachine: m\npid: 7\n");
    }

    #[test]
    fn lookup_follows_dotted_paths() {
        let rec = record("{_broker_args: {deploy_rhel_version: '9.4', nics: [a, b]}}");
        assert_eq!(
            rec.lookup("_broker_args.deploy_rhel_version")
                .and_then(Value::as_str),
            Some("9.4")
        );
        assert_eq!(
            rec.lookup("_broker_args.nics.1").and_then(Value::as_str),
            Some("b")
        );
        assert!(rec.lookup("_broker_args.missing").is_none());
    }

    #[test]
    fn empty_names_are_not_names() {
        let rec = record("{hostname: '', name: null}");
        assert_eq!(rec.hostname(), None);
        assert_eq!(rec.name(), None);
        assert!(!rec.answers_to(""));
    }

    /// The well-known fields read as written, each from its own key.
    #[test]
    fn the_well_known_fields_read_as_written() {
        let rec = record(
            "{hostname: h.example.com, name: vm-1, ip: 192.0.2.7, _broker_provider: Container, \
             _broker_provider_instance: local}",
        );
        assert_eq!(rec.hostname(), Some("h.example.com"));
        assert_eq!(rec.name(), Some("vm-1"));
        assert_eq!(rec.ip(), Some("192.0.2.7"));
        assert_eq!(rec.provider(), Some("Container"));
        assert_eq!(rec.instance(), Some("local"));
        let bare = record("{ip: ''}");
        assert_eq!(bare.ip(), None);
        assert_eq!(bare.provider(), None);
    }

    /// The user is the environment's, else the password database's name of the uid, else the
    /// uid, else unknown; this process's is found the same way.
    #[test]
    fn the_user_is_the_environments_else_the_password_databases() {
        let passwd =
            || Some("root:x:0:0::/root:/bin/sh\nci:x:1001:1001::/home/ci:/bin/sh\n".into());
        let env = |user: Option<&'static str>| {
            move |k: &str| (k == "USER").then_some(user).flatten().map(str::to_owned)
        };
        assert_eq!(
            user_from(env(Some("me")), Some("1001".into()), passwd),
            "me"
        );
        assert_eq!(user_from(env(None), Some("1001".into()), passwd), "ci");
        assert_eq!(user_from(env(None), Some("7".into()), passwd), "uid7");
        assert_eq!(user_from(env(None), Some("7".into()), || None), "uid7");
        assert_eq!(user_from(env(None), None, passwd), "unknown");
        let expected = user_from(
            |k| std::env::var(k).ok(),
            own_uid(),
            || std::fs::read_to_string("/etc/passwd").ok(),
        );
        assert_eq!(current_user(), expected);
        assert_eq!(Owner::current().user, expected);
    }

    /// A process of this machine is described as it runs now; a pid no process has is none.
    #[test]
    fn a_local_process_is_described_as_it_runs_now() {
        let me = Owner::current();
        let local = Owner::local(me.pid).expect("this process runs");
        assert_eq!(
            (local.pid, &local.machine, &local.started, &local.boot),
            (me.pid, &me.machine, &me.started, &me.boot)
        );
        assert_eq!(local.user, "");
        assert_eq!(Owner::local(3_999_999_999), None);
    }

    #[test]
    fn records_without_state_are_ready() {
        assert_eq!(record("{hostname: x}").state(), HostState::Ready);
    }
}
