//! `broker_settings.yaml`, environment overrides, nicks and provider instances.
//!
//! # Where settings come from
//! 1. The broker directory: `$BROKER_DIRECTORY`, else `~/.broker`.
//! 2. `broker_settings.yaml` in it, in the Python broker's format, read unchanged. With no file, built-in
//!    defaults apply and nothing touches the network.
//! 3. Environment overrides `BROKER_<KEY>__<SUB>=value`: keys are matched case-insensitively against the
//!    file's keys, values are parsed as YAML scalars (`22` is a number, `true` a boolean, `[a, b]` a list).
//!
//! # Provider instances
//! A provider section may hold `instances: {name: {...}}`. The instance used is the one named
//! explicitly (`--AnsibleTower prod`, `_broker_provider_instance`), else the one marked `default: true`,
//! else the only one. Its keys are merged over the section's top-level keys. Environment overrides of the
//! section's top-level keys win over the instance unless the instance sets `override_envars: true`, as
//! in the Python broker.
//!
//! # Secrets
//! Keys whose name contains `password`, `pword`, `token`, `secret` or `passphrase` are secrets (the
//! rule of [`crate::redact`]): they are handed out as [`secrecy::SecretString`], and shown masked by
//! [`Settings::masked`] and `Debug`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde_yaml::{Mapping, Value};

use crate::error::{Error, Result};
use crate::redact::mask;
use crate::value::scalar_text;

pub mod field;
pub(crate) mod file;
mod section;
mod validate;
pub use section::ProviderSettings;
pub use validate::{Problem, is_placeholder};

/// Lines of the settings file's keys (see [`validate::key_lines`]).
type KeyLines = std::sync::Arc<std::collections::HashMap<String, usize>>;

/// The name of the settings file in the broker directory.
pub const SETTINGS_FILE: &str = "broker_settings.yaml";
/// The name of the inventory file in the broker directory.
pub const INVENTORY_FILE: &str = "inventory.yaml";
/// The shipped example settings, written by `broker config init`.
pub const EXAMPLE_SETTINGS: &str = include_str!("broker_settings.yaml.example");

/// Environment variables with the `BROKER_` prefix that are not setting overrides.
const RESERVED_ENV: &[&str] = &[
    "DIRECTORY",
    "NON_INTERACTIVE",
    "NO_GLOBAL_CONFIG",
    "SUPERVISED",
];

/// Whether a settings key holds a secret (the rule of [`crate::redact`]).
pub use crate::redact::is_secret_key;

/// The broker directory: `$BROKER_DIRECTORY`, else `~/.broker`, where `~` is `$HOME` or, when
/// `HOME` is unset (containers, CI jobs), the home directory the password database (`/etc/passwd`)
/// gives this process's user — as `ssh` and other tools do — never the current directory.
///
/// # Errors
/// [`Error::Configuration`] when neither `BROKER_DIRECTORY`, `HOME` nor the password database names
/// a directory.
pub fn default_directory() -> Result<PathBuf> {
    directory_from(|name| std::env::var_os(name), passwd_home)
}

/// [`default_directory`] with the environment (`var`) and the password database's home
/// (`passwd_home`) given.
fn directory_from(
    var: impl Fn(&str) -> Option<std::ffi::OsString>,
    passwd_home: impl FnOnce() -> Option<PathBuf>,
) -> Result<PathBuf> {
    if let Some(dir) = var("BROKER_DIRECTORY").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let home = var("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(passwd_home)
        .ok_or_else(|| {
            Error::configuration(
                "HOME is not set and the password database has no home directory for this user; \
                 set BROKER_DIRECTORY (or HOME) to say where broker keeps its settings and inventory",
            )
        })?;
    Ok(home.join(".broker"))
}

/// This process's user's home directory from `/etc/passwd` (the real uid, read from
/// `/proc/self/status`).
fn passwd_home() -> Option<PathBuf> {
    let uid = crate::record::own_uid()?;
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd_home_of(&passwd, &uid)
}

/// The home field of the `/etc/passwd` entry of `uid`.
fn passwd_home_of(passwd: &str, uid: &str) -> Option<PathBuf> {
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 7 && fields[2] == uid && !fields[5].is_empty())
            .then(|| PathBuf::from(fields[5]))
    })
}

/// One `BROKER_A__B=value` override.
#[derive(Clone)]
struct EnvOverride {
    path: Vec<String>,
    value: Value,
}

/// All settings, loaded once per command.
#[derive(Clone)]
pub struct Settings {
    directory: PathBuf,
    file: Option<PathBuf>,
    raw: Mapping,
    env: Vec<EnvOverride>,
    /// Where each key is in the file, for messages.
    lines: KeyLines,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("directory", &self.directory)
            .field("file", &self.file)
            .field("values", &self.masked())
            .finish()
    }
}

impl Settings {
    /// Loads settings from the default broker directory and the process environment.
    ///
    /// # Errors
    /// [`Error::Parse`] (naming file, line and column) when the settings file is not valid YAML, and
    /// [`Error::Configuration`] when it is not a mapping.
    pub fn load() -> Result<Self> {
        Self::load_from(default_directory()?, std::env::vars())
    }

    /// Loads settings from `directory` with the given environment (for tests and embedding).
    ///
    /// # Errors
    /// As [`Settings::load`].
    pub fn load_from(
        directory: impl Into<PathBuf>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self> {
        let directory = directory.into();
        let path = directory.join(SETTINGS_FILE);
        let (file, raw, lines) = match std::fs::read_to_string(&path) {
            Ok(text) => (
                Some(path.clone()),
                parse_settings_text(&path, &text)?,
                validate::key_lines(&text),
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                (None, Mapping::new(), Default::default())
            }
            Err(e) => return Err(Error::io("reading settings", path, e)),
        };
        let mut settings = Settings {
            directory,
            file,
            raw,
            env: Vec::new(),
            lines: KeyLines::new(lines),
        };
        settings.apply_env(env);
        Ok(settings)
    }

    /// Settings from YAML text, with no environment (for tests and embedding).
    ///
    /// # Errors
    /// As [`Settings::load`].
    pub fn from_yaml(directory: impl Into<PathBuf>, yaml: &str) -> Result<Self> {
        let directory = directory.into();
        let raw = parse_settings_text(&directory.join(SETTINGS_FILE), yaml)?;
        Ok(Settings {
            directory,
            file: None,
            raw,
            env: Vec::new(),
            lines: KeyLines::new(validate::key_lines(yaml)),
        })
    }

    fn apply_env(&mut self, env: impl IntoIterator<Item = (String, String)>) {
        let mut overrides: Vec<EnvOverride> = env
            .into_iter()
            .filter_map(|(key, value)| {
                let rest = key.strip_prefix("BROKER_")?;
                if rest.is_empty() || RESERVED_ENV.iter().any(|r| r.eq_ignore_ascii_case(rest)) {
                    return None;
                }
                let path: Vec<String> = rest.split("__").map(str::to_owned).collect();
                if path.iter().any(String::is_empty) {
                    return None;
                }
                Some(EnvOverride {
                    path,
                    value: parse_env_value(&value),
                })
            })
            .collect();
        // Deterministic order: shorter paths first, so `BROKER_SSH={...}` is refined by `BROKER_SSH__X`.
        overrides.sort_by(|a, b| a.path.len().cmp(&b.path.len()).then(a.path.cmp(&b.path)));
        for o in &overrides {
            set_path_ci(&mut self.raw, &o.path, o.value.clone());
        }
        self.env = overrides;
    }

    /// These settings with `overlay` merged over them — nested mappings merge, everything else
    /// replaces, top-level keys in any case — as a scenario's `config.settings` are for its run.
    #[must_use]
    pub fn overlaid(&self, overlay: Mapping) -> Settings {
        let mut settings = self.clone();
        for (key, value) in overlay {
            if let Some(key) = key.as_str() {
                set_path_ci(&mut settings.raw, &[key.to_owned()], value);
            }
        }
        settings
    }

    /// The broker directory.
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// The settings file that was read, if one existed.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Where the settings file is (whether or not it exists).
    pub fn settings_path(&self) -> PathBuf {
        self.directory.join(SETTINGS_FILE)
    }

    /// Where the inventory is.
    pub fn inventory_path(&self) -> PathBuf {
        self.directory.join(INVENTORY_FILE)
    }

    /// The shared inventory database that `inventory` names (`postgres://…`; also
    /// `BROKER_INVENTORY`), as a secret (its URL holds a password); `None` when it is not set: the
    /// inventory is then [`Settings::inventory_path`].
    ///
    /// # Errors
    /// [`Error::Configuration`] when `inventory` is set to anything but a `postgres://` or
    /// `postgresql://` URL.
    pub fn inventory_database(&self) -> Result<Option<SecretString>> {
        match self.get("inventory") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(url))
                if url.starts_with("postgres://") || url.starts_with("postgresql://") =>
            {
                Ok(Some(SecretString::from(url.clone())))
            }
            Some(_) => Err(Error::configuration(
                "`inventory` must be a PostgreSQL URL (`postgres://user:password@host:port/database`); \
                 leave it unset for the inventory file in the broker directory",
            )),
        }
    }

    /// Where the log file is (`logging.log_path`, relative to the broker directory; a directory gets
    /// `broker.log` appended).
    pub fn log_path(&self) -> PathBuf {
        let configured = self
            .get("logging.log_path")
            .and_then(Value::as_str)
            .unwrap_or("logs/broker.log");
        let path = self.directory.join(configured);
        if path.extension().is_none() {
            path.join("broker.log")
        } else {
            path
        }
    }

    /// All values (file and environment merged), secrets included: handle with care.
    pub fn raw(&self) -> &Mapping {
        &self.raw
    }

    /// A value by dotted path, keys matched case-insensitively (`ssh.host_username`), as [`lookup`]
    /// finds it.
    pub fn get(&self, path: &str) -> Option<&Value> {
        lookup_in(&self.raw, path)
    }

    fn get_u64(&self, path: &str) -> Option<u64> {
        self.get(path).and_then(crate::value::scalar_u64)
    }

    fn get_duration(&self, path: &str, default: Duration) -> Result<Duration> {
        match self.get(path) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Number(n)) => n.as_u64().map(Duration::from_secs).ok_or_else(|| {
                Error::configuration(format!("`{path}` must be a positive number of seconds"))
            }),
            Some(Value::String(s)) => crate::time::parse_duration(s)
                .map_err(|_| Error::configuration(format!("`{path}`: `{s}` is not a duration"))),
            Some(_) => Err(Error::configuration(format!("`{path}` must be a duration"))),
        }
    }

    /// A secret by dotted path (`ssh.host_password`), never exposed in logs or `Debug`.
    pub fn secret(&self, path: &str) -> Option<SecretString> {
        self.get(path).and_then(scalar_text).map(SecretString::from)
    }

    /// `thread_limit`: the most provider calls broker makes at once (`None` = as many as hosts).
    pub fn thread_limit(&self) -> Option<usize> {
        self.get_u64("thread_limit").map(|n| n.max(1) as usize)
    }

    /// How long a guard's check-in on drop may take (`checkin_timeout`, default 300 s).
    ///
    /// # Errors
    /// [`Error::Configuration`] when the value is not a duration.
    pub fn checkin_timeout(&self) -> Result<Duration> {
        self.get_duration("checkin_timeout", Duration::from_secs(300))
    }

    /// How long a stopped checkout (Ctrl-C, a [`crate::Cancellation`], a dropped checkout future)
    /// waits for provider calls already under way to answer before giving up on them
    /// (`cancel_timeout`, default 10 s).
    ///
    /// # Errors
    /// [`Error::Configuration`] when the value is not a duration.
    pub fn cancel_timeout(&self) -> Result<Duration> {
        self.get_duration("cancel_timeout", Duration::from_secs(10))
    }

    /// `keep_on_failure` (env `BROKER_KEEP_ON_FAILURE`): how long guards dropped by a panicking test
    /// keep their hosts instead of checking them in; `None` (the default) checks them in.
    ///
    /// # Errors
    /// [`Error::Configuration`] when the value is not a duration.
    pub fn keep_on_failure(&self) -> Result<Option<Duration>> {
        let d = self.get_duration("keep_on_failure", Duration::ZERO)?;
        Ok((!d.is_zero()).then_some(d))
    }

    /// `reap_on_start` (env `BROKER_REAP_ON_START`, default `true`): whether a broker, the first time
    /// it checks out, first gives back what needs a reaper (see
    /// [`crate::lease`]): hosts whose lease ended and hosts a gone process held. `false` leaves that
    /// to `broker reap`.
    ///
    /// # Errors
    /// [`Error::Configuration`] when the value is not true or false.
    pub fn reap_on_start(&self) -> Result<bool> {
        match self.get("reap_on_start") {
            None | Some(Value::Null) => Ok(true),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" | "on" => Ok(true),
                "false" | "no" | "0" | "off" => Ok(false),
                _ => Err(Error::configuration(format!(
                    "`reap_on_start`: `{s}` is not true or false"
                ))),
            },
            Some(_) => Err(Error::configuration(
                "`reap_on_start` must be true or false",
            )),
        }
    }

    /// How long to wait for the inventory lock (`inventory_lock_timeout`, default 60 s).
    ///
    /// # Errors
    /// [`Error::Configuration`] when the value is not a duration.
    pub fn inventory_lock_timeout(&self) -> Result<Duration> {
        self.get_duration("inventory_lock_timeout", Duration::from_secs(60))
    }

    /// `inventory_fields`: table columns as `(title, field spec)`; the upstream default when unset.
    pub fn inventory_fields(&self) -> Vec<(String, String)> {
        match self.get("inventory_fields").and_then(Value::as_mapping) {
            Some(map) if !map.is_empty() => map
                .iter()
                .filter_map(|(k, v)| Some((scalar_text(k)?, scalar_text(v)?)))
                .collect(),
            _ => vec![
                ("Host".into(), "hostname | name".into()),
                ("Provider".into(), "_broker_provider".into()),
                ("Action".into(), "$action".into()),
                (
                    "OS".into(),
                    "os_distribution os_distribution_version".into(),
                ),
            ],
        }
    }

    /// `inventory_list_vars`: the field spec of `broker inventory --list` (default `hostname | name`).
    pub fn inventory_list_vars(&self) -> String {
        self.get("inventory_list_vars")
            .and_then(scalar_text)
            .unwrap_or_else(|| "hostname | name".into())
    }

    /// `logging.console_level` (default `info`).
    pub fn console_level(&self) -> String {
        self.get("logging.console_level")
            .and_then(scalar_text)
            .unwrap_or_else(|| "info".into())
    }

    /// `logging.file_level` (default `debug`).
    pub fn file_level(&self) -> String {
        self.get("logging.file_level")
            .and_then(scalar_text)
            .unwrap_or_else(|| "debug".into())
    }

    /// Top-level `provider_labels`, applied to every checkout of providers that support labels.
    pub fn provider_labels(&self) -> Mapping {
        self.get("provider_labels")
            .and_then(Value::as_mapping)
            .cloned()
            .unwrap_or_default()
    }

    /// The names of all nicks.
    pub fn nicks(&self) -> Vec<String> {
        self.get("nicks")
            .and_then(Value::as_mapping)
            .map(|m| m.keys().filter_map(scalar_text).collect())
            .unwrap_or_default()
    }

    /// The arguments of nick `name`.
    ///
    /// # Errors
    /// [`Error::User`] naming the known nicks when there is none of that name.
    pub fn nick(&self, name: &str) -> Result<Mapping> {
        let nicks = self.get("nicks").and_then(Value::as_mapping);
        match nicks.and_then(|n| n.get(name)) {
            Some(Value::Mapping(m)) => Ok(m.clone()),
            Some(_) => Err(Error::configuration(format!(
                "nick `{name}` must be a mapping of arguments"
            ))),
            None => {
                let known = self.nicks();
                Err(Error::user(if known.is_empty() {
                    format!(
                        "unknown nick `{name}`: no nicks are defined in {}",
                        self.settings_path().display()
                    )
                } else {
                    format!(
                        "unknown nick `{name}`; known nicks: {} (see `broker config nicks`)",
                        known.join(", ")
                    )
                }))
            }
        }
    }

    /// Whether the settings have a section for `provider`.
    pub fn has_provider_section(&self, provider: &str) -> bool {
        get_ci(&self.raw, provider).is_some()
    }

    /// The instance names configured for `provider`.
    pub fn provider_instances(&self, provider: &str) -> Vec<String> {
        get_ci(&self.raw, provider)
            .and_then(Value::as_mapping)
            .map(instances_of)
            .map(|i| i.iter().map(|(n, _)| n.clone()).collect())
            .unwrap_or_default()
    }

    /// The configuration of one provider instance, resolved as the module docs describe.
    ///
    /// # Errors
    /// [`Error::Configuration`] when the named instance does not exist, or several exist and none is
    /// the default.
    pub fn provider_config(
        &self,
        provider: &str,
        instance: Option<&str>,
    ) -> Result<ProviderConfig> {
        let section = get_ci(&self.raw, provider)
            .and_then(Value::as_mapping)
            .cloned()
            .unwrap_or_default();
        let chosen = choose_instance(provider, &instances_of(&section), instance)?;
        let values = self.instance_values(provider, section, chosen.as_ref());
        let instance_keys = chosen
            .as_ref()
            .map(|(_, inst)| {
                inst.keys()
                    .filter_map(|k| k.as_str().map(str::to_lowercase))
                    .collect()
            })
            .unwrap_or_default();
        let instance_name = chosen.map(|(n, _)| n);
        Ok(ProviderConfig {
            provider: provider.to_owned(),
            instance: instance_name.clone(),
            values,
            directory: self.directory.clone(),
            global_labels: self.provider_labels(),
            ssh: self
                .get("ssh")
                .and_then(Value::as_mapping)
                .cloned()
                .unwrap_or_default(),
            lines: KeyLines::clone(&self.lines),
            from_env: self.env_keys_of(provider, instance_name.as_deref()),
            instance_keys,
            asker: crate::interaction::Asker::default(),
            inventory_id: String::new(),
        }
        .with_default_inventory())
    }

    /// A provider section's values for one instance: the section's keys without `instances`, the
    /// instance's merged over them, and environment overrides of the section's own keys over both
    /// unless the instance sets `override_envars`.
    fn instance_values(
        &self,
        provider: &str,
        section: Mapping,
        chosen: Option<&(String, Mapping)>,
    ) -> Mapping {
        let mut values = section;
        values.shift_remove("instances");
        let mut override_envars = false;
        if let Some((_, inst)) = chosen {
            override_envars = inst.get("override_envars").and_then(Value::as_bool) == Some(true);
            deep_merge(&mut values, inst.clone());
        }
        if !override_envars {
            // Environment overrides of the section's own keys win over the instance's.
            for o in self.env.iter().filter(|o| {
                o.path.len() >= 2
                    && o.path[0].eq_ignore_ascii_case(provider)
                    && !o.path[1].eq_ignore_ascii_case("instances")
            }) {
                set_path_ci(&mut values, &o.path[1..], o.value.clone());
            }
        }
        values
    }

    /// The keys of a provider section (and of its instance `instance`) that environment overrides
    /// set, lowercased, each with its variable — also each key of a mapping that sets a whole
    /// section or instance at once (`BROKER_P__INSTANCES__PROD='{url: x}'`).
    fn env_keys_of(&self, provider: &str, instance: Option<&str>) -> Vec<(String, String)> {
        let mut keys = Vec::new();
        for o in self
            .env
            .iter()
            .filter(|o| o.path[0].eq_ignore_ascii_case(provider))
        {
            let variable = format!("BROKER_{}", o.path.join("__"));
            let set = keys_set(&o.path[1..], &o.value, instance);
            keys.extend(
                set.into_iter()
                    .map(|k| (k.to_lowercase(), variable.clone())),
            );
        }
        keys
    }

    /// The settings with every secret replaced by `********`, for display.
    pub fn masked(&self) -> Value {
        mask(&Value::Mapping(self.raw.clone()))
    }

    /// The settings below a dotted path (all of them for `""`), secrets masked (`broker config view
    /// CHUNK`).
    ///
    /// # Errors
    /// [`Error::User`] when the settings have nothing at `path`.
    pub fn masked_at(&self, path: &str) -> Result<Value> {
        lookup(&self.masked(), path)
            .cloned()
            .ok_or_else(|| Error::user(format!("the settings have no `{path}`")))
    }
}

/// The keys of instance `instance`'s configuration that an override sets: `rest` is its path below
/// the provider's section, `value` what it sets there.
fn keys_set<'v>(rest: &'v [String], value: &'v Value, instance: Option<&str>) -> Vec<&'v str> {
    let is_instances = |key: &str| key.eq_ignore_ascii_case("instances");
    match rest {
        [instances, name, within @ ..] if is_instances(instances) => {
            if instance.is_some_and(|i| i.eq_ignore_ascii_case(name)) {
                // Within the instance no key is special.
                keys_set(within, value, None)
            } else {
                Vec::new()
            }
        }
        [instances] if is_instances(instances) => chosen_instance_keys(value, instance),
        [key, ..] => vec![key.as_str()],
        [] => value
            .as_mapping()
            .into_iter()
            .flatten()
            .flat_map(|(key, v)| match key.as_str() {
                Some(key) if instance.is_some() && is_instances(key) => {
                    chosen_instance_keys(v, instance)
                }
                Some(key) => vec![key],
                None => Vec::new(),
            })
            .collect(),
    }
}

/// The keys of instance `instance` in a mapping of instances.
fn chosen_instance_keys<'v>(instances: &'v Value, instance: Option<&str>) -> Vec<&'v str> {
    let Some(instance) = instance else {
        return Vec::new();
    };
    instances
        .as_mapping()
        .into_iter()
        .flatten()
        .filter(|(name, _)| {
            name.as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(instance))
        })
        .flat_map(|(_, values)| keys_set(&[], values, None))
        .collect()
}

/// The value at a dotted path of settings (`AnsibleTower.instances.prod`): each key matched as
/// written, else in any case; empty segments are skipped, so `""` is `value` itself. Every dotted-key
/// read of settings goes through here ([`Settings::get`], `broker config view` and `edit`).
///
/// ```
/// let settings: serde_yaml::Value = serde_yaml::from_str("SSH: {host_username: root}").unwrap();
/// let found = broker_core::settings::lookup(&settings, "ssh.host_username");
/// assert_eq!(found.and_then(|v| v.as_str()), Some("root"));
/// ```
pub fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    if dotted_keys(path).next().is_none() {
        return Some(value);
    }
    lookup_in(value.as_mapping()?, path)
}

/// The keys of a dotted settings path, empty segments skipped (`.a..b` is `a.b`), for reading
/// ([`lookup`]) and writing (`broker config set`) alike.
pub(crate) fn dotted_keys(path: &str) -> impl Iterator<Item = &str> {
    path.split('.').filter(|key| !key.is_empty())
}

/// [`lookup`] below a mapping; `None` for a path with no key in it.
fn lookup_in<'a>(map: &'a Mapping, path: &str) -> Option<&'a Value> {
    let mut keys = dotted_keys(path);
    let first = get_ci(map, keys.next()?)?;
    keys.try_fold(first, |value, key| get_ci(value.as_mapping()?, key))
}

fn parse_settings_text(path: &Path, text: &str) -> Result<Mapping> {
    let text = crate::files::strip_bom(text);
    if text.trim().is_empty() {
        return Ok(Mapping::new());
    }
    let value: Value = serde_yaml::from_str(text).map_err(|e| Error::parse(path, &e, true))?;
    match value {
        Value::Mapping(m) => Ok(m),
        Value::Null => Ok(Mapping::new()),
        _ => Err(Error::configuration(format!(
            "{} must hold a mapping of settings at the top level",
            path.display()
        ))),
    }
}

/// A value from the environment: a YAML scalar (or flow collection) when it parses as one, else text.
fn parse_env_value(text: &str) -> Value {
    if text.is_empty() {
        return Value::String(String::new());
    }
    match serde_yaml::from_str::<Value>(text) {
        Ok(Value::Null) if !matches!(text.trim(), "null" | "~" | "None") => {
            Value::String(text.to_owned())
        }
        Ok(Value::String(_)) | Err(_) => Value::String(text.to_owned()),
        Ok(v) => v,
    }
}

/// A mapping value by key, exact match first, then case-insensitive.
pub(crate) fn get_ci<'a>(map: &'a Mapping, key: &str) -> Option<&'a Value> {
    map.get(key).or_else(|| {
        map.iter()
            .find(|(k, _)| k.as_str().is_some_and(|k| k.eq_ignore_ascii_case(key)))
            .map(|(_, v)| v)
    })
}

fn key_ci(map: &Mapping, key: &str) -> Value {
    existing_key_ci(map, key).unwrap_or_else(|| Value::String(key.to_ascii_lowercase()))
}

/// The key of `map` that is `key` in any case.
fn existing_key_ci(map: &Mapping, key: &str) -> Option<Value> {
    map.keys()
        .find(|k| k.as_str().is_some_and(|k| k.eq_ignore_ascii_case(key)))
        .cloned()
}

/// The mapping under `key`, made (or put in place of a scalar) when there is none.
fn child_mapping(map: &mut Mapping, key: Value) -> Option<&mut Mapping> {
    let entry = map
        .entry(key)
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    if !entry.is_mapping() {
        *entry = Value::Mapping(Mapping::new());
    }
    entry.as_mapping_mut()
}

fn set_path_ci(map: &mut Mapping, path: &[String], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let key = key_ci(map, first);
    if rest.is_empty() {
        match (map.get_mut(&key), value) {
            (Some(Value::Mapping(existing)), Value::Mapping(new)) => deep_merge(existing, new),
            (_, value) => {
                map.insert(key, value);
            }
        }
        return;
    }
    if let Some(child) = child_mapping(map, key) {
        set_path_ci(child, rest, value);
    }
}

/// Merges `over` into `base`: nested mappings merge, everything else replaces.
pub(crate) fn deep_merge(base: &mut Mapping, over: Mapping) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(Value::Mapping(b)), Value::Mapping(o)) => deep_merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// The instance of `provider` a caller gets: the one named, else the only one, else the one marked
/// `default: true`; none when the section has no instances.
fn choose_instance(
    provider: &str,
    instances: &[(String, Mapping)],
    instance: Option<&str>,
) -> Result<Option<(String, Mapping)>> {
    let names = || {
        instances
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match instance {
        Some(name) => instances
            .iter()
            .find(|(n, _)| n == name)
            .cloned()
            .map(Some)
            .ok_or_else(|| {
                Error::configuration(format!(
                    "{provider} has no instance `{name}`; configured: {}",
                    if instances.is_empty() {
                        format!(
                            "none (add it with `broker config set {provider}.instances.{name} '{{default: true}}'`, \
                             or leave out `--{provider} {name}`)"
                        )
                    } else {
                        names()
                    }
                ))
            }),
        None => match instances {
            [] => Ok(None),
            [only] => Ok(Some(only.clone())),
            many => many
                .iter()
                .find(|(_, m)| m.get("default").and_then(Value::as_bool) == Some(true))
                .cloned()
                .map(Some)
                .ok_or_else(|| {
                    Error::configuration(format!(
                        "{provider} has several instances ({}) and none is `default: true`; \
                         choose one with `--{provider} NAME`",
                        names()
                    ))
                }),
        },
    }
}

/// `instances` as (name, settings) pairs; accepts the old list-of-mappings form too.
fn instances_of(section: &Mapping) -> Vec<(String, Mapping)> {
    match get_ci(section, "instances") {
        Some(Value::Mapping(map)) => map
            .iter()
            .filter_map(|(k, v)| {
                Some((scalar_text(k)?, v.as_mapping().cloned().unwrap_or_default()))
            })
            .collect(),
        Some(Value::Sequence(items)) => items
            .iter()
            .filter_map(Value::as_mapping)
            .flat_map(|m| {
                m.iter().filter_map(|(k, v)| {
                    Some((scalar_text(k)?, v.as_mapping().cloned().unwrap_or_default()))
                })
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A stable identity of the inventory at `location` on this machine: 16 hex digits of a hash
/// (64-bit FNV-1a, which does not change between releases) of the machine's name and the
/// location, its directory resolved through symbolic links when it exists. The same broker
/// directory gives the same identity in every process; another directory, or the same path on
/// another machine sharing a container engine, another.
pub(crate) fn inventory_id(location: &str) -> String {
    let path = Path::new(location);
    let resolved = match (path.parent(), path.file_name()) {
        (Some(dir), Some(file)) => std::fs::canonicalize(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })
        .map(|dir| dir.join(file).display().to_string())
        .unwrap_or_else(|_| location.to_owned()),
        _ => location.to_owned(),
    };
    inventory_id_on(&crate::process::machine_name(), &resolved)
}

/// The identity of the inventory at `resolved` on `machine`: FNV-1a (64 bits) of both. Containers
/// carry it in a label, so it must stay the same from one version of broker to the next.
fn inventory_id_on(machine: &str, resolved: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in machine.bytes().chain([0]).chain(resolved.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The resolved settings of one provider instance.
#[derive(Clone)]
pub struct ProviderConfig {
    provider: String,
    instance: Option<String>,
    values: Mapping,
    directory: PathBuf,
    global_labels: Mapping,
    ssh: Mapping,
    /// Where the settings file's keys are, for [`ProviderConfig::setting_error`].
    lines: KeyLines,
    /// The keys environment overrides set (lowercased), with their variables: they are not where
    /// the file has them.
    from_env: Vec<(String, String)>,
    /// The keys the chosen instance sets itself (lowercased), wherever the file writes them (a flow
    /// mapping has no line per key): a problem with one is the instance's.
    instance_keys: Vec<String>,
    /// Whom the provider asks when it must (the broker's, set by [`ProviderConfig::set_asker`]).
    asker: crate::interaction::Asker,
    /// The inventory this broker keeps, as [`inventory_id`] names it.
    inventory_id: String,
}

impl fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("provider", &self.provider)
            .field("instance", &self.instance)
            .field("values", &mask(&Value::Mapping(self.values.clone())))
            .finish()
    }
}

impl ProviderConfig {
    /// A configuration built by hand (for tests and embedding).
    pub fn new(
        provider: &str,
        instance: Option<&str>,
        values: Mapping,
        directory: impl Into<PathBuf>,
    ) -> Self {
        ProviderConfig {
            provider: provider.to_owned(),
            instance: instance.map(str::to_owned),
            values,
            directory: directory.into(),
            global_labels: Mapping::new(),
            ssh: Mapping::new(),
            lines: KeyLines::default(),
            from_env: Vec::new(),
            instance_keys: Vec::new(),
            asker: crate::interaction::Asker::default(),
            inventory_id: String::new(),
        }
        .with_default_inventory()
    }

    /// The inventory of the broker directory, `DIRECTORY/inventory.yaml`, until the broker names its
    /// own store ([`ProviderConfig::set_inventory`]).
    fn with_default_inventory(mut self) -> Self {
        let location = self.directory.join(INVENTORY_FILE);
        self.inventory_id = inventory_id(&location.display().to_string());
        self
    }

    /// A stable identity of the inventory whose hosts this provider makes and lists (16 hex
    /// digits, see [`inventory_id`]). A provider that labels what it makes puts it on each host
    /// and lists only hosts carrying it (or no such label), so that a sync or an orphan reap over
    /// one inventory never touches the hosts of another — another user's, another broker
    /// directory's, a parallel test's.
    pub fn inventory_id(&self) -> &str {
        &self.inventory_id
    }

    /// Names the inventory the provider works for by its store's location
    /// ([`InventoryStore::location`](crate::inventory::InventoryStore::location)).
    pub(crate) fn set_inventory(&mut self, location: &str) {
        self.inventory_id = inventory_id(location);
    }

    /// Whom to ask when the provider must ask the user something: the interaction the broker was
    /// given ([`Broker::set_interaction`](crate::Broker::set_interaction)), else
    /// [`NonInteractive`](crate::interaction::NonInteractive).
    pub fn interaction(&self) -> std::sync::Arc<dyn crate::interaction::Interaction> {
        self.asker.get()
    }

    pub(crate) fn set_asker(&mut self, asker: crate::interaction::Asker) {
        self.asker = asker;
    }

    /// A configuration error about the setting `key` of this provider (instance), naming it as
    /// written in the settings file and its line: "`AnsibleTower.instances.prod.base_url` (line 12):
    /// …".
    /// A key set by an environment override names the variable instead:
    /// "`AnsibleTower.workflow_timeout` (set by BROKER_ANSIBLETOWER__WORKFLOW_TIMEOUT): …".
    pub fn setting_error(&self, key: &str, message: impl fmt::Display) -> Error {
        let (path, line) = self.locate(key);
        Error::configuration(match (line, self.env_variable(key)) {
            (Some(line), _) => format!("`{path}` ({SETTINGS_FILE} line {line}): {message}"),
            (None, Some(variable)) => format!("`{path}` (set by {variable}): {message}"),
            (None, None) => format!("`{path}`: {message}"),
        })
    }

    /// A [`Problem`] with the setting `key` of this provider (instance), located as
    /// [`ProviderConfig::setting_error`] locates it, for `broker config validate`.
    /// A key set by an environment override names the variable at the end of the message.
    pub fn problem(&self, key: &str, message: impl Into<String>) -> Problem {
        let (path, line) = self.locate(key);
        let mut message = message.into();
        if let Some(variable) = self.env_variable(key) {
            message.push_str(&format!(" (set by {variable})"));
        }
        Problem {
            key: path,
            line,
            message,
        }
    }

    /// The environment variable that set `key`, if one did.
    fn env_variable(&self, key: &str) -> Option<&str> {
        let key = key.to_lowercase();
        self.from_env
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, variable)| variable.as_str())
    }

    /// The dotted path of the setting `key` — in the chosen instance when the settings file has it
    /// there, else in the section — and its line in the file, if it is written there and no
    /// environment override set it.
    fn locate(&self, key: &str) -> (String, Option<usize>) {
        if self.env_variable(key).is_some() {
            return (format!("{}.{key}", self.provider), None);
        }
        let top = key.split('.').next().unwrap_or(key).to_lowercase();
        let set_by_instance = self.instance_keys.contains(&top);
        let path = match self.instance.as_deref() {
            Some(i) if set_by_instance => format!("{}.instances.{i}.{key}", self.provider),
            _ => format!("{}.{key}", self.provider),
        };
        let line = validate::line_in(&self.lines, &path);
        (path, line)
    }

    /// The settings' `ssh` section (secrets included: pass it on, don't show it), for providers whose
    /// hosts are reached over SSH.
    pub fn ssh_settings(&self) -> &Mapping {
        &self.ssh
    }

    /// The provider's name.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The chosen instance.
    pub fn instance(&self) -> Option<&str> {
        self.instance.as_deref()
    }

    /// The broker directory (providers keep local state under it).
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// A value, key matched case-insensitively. A provider reads its own section through
    /// [`ProviderSettings`] instead, which reports what it cannot read and the keys it does not know.
    pub fn get(&self, key: &str) -> Option<&Value> {
        get_ci(&self.values, key)
    }

    /// A string value (numbers and booleans as text).
    pub fn get_str(&self, key: &str) -> Option<String> {
        self.get(key).and_then(scalar_text)
    }

    /// A non-negative integer (also from text).
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(crate::value::scalar_u64)
    }

    /// A boolean (also from `yes`/`no`/`1`/`0` text).
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(field::boolean)
    }

    /// A secret value, never exposed in logs or `Debug`.
    pub fn secret(&self, key: &str) -> Option<SecretString> {
        self.get_str(key).map(SecretString::from)
    }

    /// Labels for this provider: top-level `provider_labels` with the section's own over them.
    pub fn provider_labels(&self) -> Mapping {
        let mut labels = self.global_labels.clone();
        if let Some(Value::Mapping(own)) = self.get("provider_labels") {
            deep_merge(&mut labels, own.clone());
        }
        labels
    }

    /// A value that must be present.
    ///
    /// # Errors
    /// [`Error::Configuration`] naming the setting when it is missing.
    pub fn require_str(&self, key: &str) -> Result<String> {
        self.get_str(key).ok_or_else(|| self.missing(key))
    }

    /// The error for a setting the provider cannot do without, saying where to set it: "AnsibleTower
    /// instance `prod` needs `base_url`; set it in broker_settings.yaml or
    /// BROKER_ANSIBLETOWER__BASE_URL".
    pub fn missing(&self, key: &str) -> Error {
        Error::configuration(format!(
            "{}{} needs `{key}`; set it in broker_settings.yaml or BROKER_{}__{}",
            self.provider,
            self.instance
                .as_deref()
                .map(|i| format!(" instance `{i}`"))
                .unwrap_or_default(),
            self.provider.to_ascii_uppercase(),
            key.to_ascii_uppercase()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::file::SettingsFile;
    use super::*;
    use secrecy::ExposeSecret;

    /// An environment value is read as YAML (a number, a boolean, a flow collection, null spelled
    /// out) and otherwise kept as the text it is — also text YAML would read as nothing.
    #[test]
    fn environment_values_read_as_yaml_scalars_or_stay_text() {
        let read = |text: &str| parse_env_value(text);
        assert_eq!(read("42"), Value::from(42));
        assert_eq!(read("true"), Value::Bool(true));
        assert_eq!(
            read("[a, b]"),
            serde_yaml::from_str::<Value>("[a, b]").unwrap()
        );
        for null in ["null", "~", " null "] {
            assert_eq!(read(null), Value::Null, "{null}");
        }
        for text in ["# not a comment", "", "a: b: c", "plain", "None", "NULL"] {
            assert_eq!(read(text), Value::from(text), "{text}");
        }
    }

    /// A provider configuration carries the `ssh` section, and a setting an environment variable
    /// gave the chosen instance is reported as set by that variable.
    #[test]
    fn a_provider_configuration_carries_ssh_and_names_the_variables_that_set_its_keys() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(SETTINGS_FILE),
            "ssh: {backend: ssh2, port: 2222}\nP:\n  instances:\n    prod: {url: x}\n    test: {url: y}\n",
        )
        .unwrap();
        let variable = "BROKER_P__INSTANCES__PROD__TIMEOUT";
        let settings = Settings::load_from(dir.path(), env(&[(variable, "soon")])).unwrap();
        let prod = settings.provider_config("P", Some("prod")).unwrap();
        assert_eq!(
            prod.ssh_settings().get("backend"),
            Some(&Value::from("ssh2"))
        );
        assert_eq!(prod.get_str("timeout").as_deref(), Some("soon"));
        let err = prod.setting_error("timeout", "not a duration").to_string();
        assert!(err.contains(&format!("(set by {variable})")), "{err}");
        let test = settings.provider_config("P", Some("test")).unwrap();
        assert_eq!(test.get_str("timeout"), None, "another instance's variable");
    }

    /// A variable that sets a whole instance, all instances or the whole section at once is named
    /// for each key it gives the chosen instance — and for no other instance's.
    #[test]
    fn a_variable_that_sets_a_mapping_is_named_for_each_of_its_keys() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(SETTINGS_FILE),
            "P:\n  instances:\n    prod: {url: x}\n    test: {url: y}\n",
        )
        .unwrap();
        let set_by = |variable: &str, value: &str, instance: &str, key: &str| {
            let settings = Settings::load_from(dir.path(), env(&[(variable, value)])).unwrap();
            let config = settings.provider_config("P", Some(instance)).unwrap();
            config.env_variable(key).map(str::to_owned)
        };
        let named = |variable: &str| Some(variable.to_owned());
        let whole = "BROKER_P__INSTANCES__PROD";
        assert_eq!(
            set_by(whole, "{user: u, url: z}", "prod", "user"),
            named(whole)
        );
        assert_eq!(
            set_by(whole, "{user: u, url: z}", "prod", "URL"),
            named(whole)
        );
        assert_eq!(set_by(whole, "{user: u}", "test", "user"), None);
        let all = "BROKER_P__INSTANCES";
        assert_eq!(set_by(all, "{prod: {user: u}}", "prod", "user"), named(all));
        assert_eq!(set_by(all, "{prod: {user: u}}", "test", "user"), None);
        assert_eq!(set_by(all, "{prod: {user: u}}", "prod", "instances"), None);
        let section = "BROKER_P";
        let value = "{timeout: 5, instances: {prod: {user: u}}}";
        assert_eq!(set_by(section, value, "prod", "timeout"), named(section));
        assert_eq!(set_by(section, value, "prod", "user"), named(section));
        assert_eq!(set_by(section, value, "test", "user"), None);
        assert_eq!(set_by(section, value, "prod", "instances"), None);
        // Nested keys count as the key they are under.
        let deep = "BROKER_P__INSTANCES__PROD__LABELS__TEAM";
        assert_eq!(set_by(deep, "qe", "prod", "labels"), named(deep));
        // A variable naming an instance that sets no mapping sets no key.
        assert_eq!(set_by(whole, "text", "prod", "instances"), None);
    }

    /// What a provider reads of its configuration, and how its errors say where a setting is:
    /// the instance's key with its line, the section's key with its line, and a missing key with
    /// where to set it.
    #[test]
    fn a_provider_configuration_reads_its_values_and_locates_its_keys() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(SETTINGS_FILE),
            "provider_labels: {team: qe, site: brq}\n\
             P:\n  \
               timeout: 30\n  \
               provider_labels: {site: rdu}\n  \
               instances:\n    \
                 prod: {url: 'https://p', token: s3cret, count: '7', default: true}\n",
        )
        .unwrap();
        let settings = Settings::load_from(dir.path(), Vec::new()).unwrap();
        let prod = settings.provider_config("P", Some("prod")).unwrap();
        assert_eq!(prod.provider(), "P");
        assert_eq!(prod.instance(), Some("prod"));
        assert_eq!(prod.directory(), dir.path());
        assert_eq!(prod.get_str("URL").as_deref(), Some("https://p"));
        assert_eq!(prod.get_u64("count"), Some(7));
        assert_eq!(
            prod.get_u64("timeout"),
            Some(30),
            "the section's under the instance's"
        );
        assert_eq!(prod.get_u64("url"), None);
        assert_eq!(
            prod.secret("token").map(|s| s.expose_secret().to_owned()),
            Some("s3cret".to_owned())
        );
        assert_eq!(prod.require_str("url").unwrap(), "https://p");
        let labels = prod.provider_labels();
        assert_eq!(labels.get("team"), Some(&Value::from("qe")));
        assert_eq!(
            labels.get("site"),
            Some(&Value::from("rdu")),
            "the section's win"
        );

        let shown = |e: Error| e.to_string();
        assert_eq!(
            shown(prod.setting_error("url", "bad")),
            format!("configuration error: `P.instances.prod.url` ({SETTINGS_FILE} line 6): bad")
        );
        assert_eq!(
            shown(prod.setting_error("timeout", "bad")),
            format!("configuration error: `P.timeout` ({SETTINGS_FILE} line 3): bad")
        );
        // A key the file does not have is placed at its section's line.
        assert_eq!(
            shown(prod.setting_error("absent", "bad")),
            format!("configuration error: `P.absent` ({SETTINGS_FILE} line 2): bad")
        );
        let problem = prod.problem("url", "bad");
        assert_eq!(
            (problem.key.as_str(), problem.line, problem.message.as_str()),
            ("P.instances.prod.url", Some(6), "bad")
        );
        assert_eq!(
            shown(prod.require_str("user").unwrap_err()),
            "configuration error: P instance `prod` needs `user`; \
             set it in broker_settings.yaml or BROKER_P__USER"
        );
        let bare = ProviderConfig::new("Q", None, Mapping::new(), "/tmp");
        assert_eq!(
            shown(bare.missing("base_url")),
            "configuration error: Q needs `base_url`; \
             set it in broker_settings.yaml or BROKER_Q__BASE_URL"
        );
        assert_eq!(bare.instance(), None);
        assert_eq!(
            shown(bare.setting_error("base_url", "bad")),
            "configuration error: `Q.base_url`: bad"
        );
    }

    /// A provider's boolean setting reads as written; one not set is none.
    #[test]
    fn a_provider_boolean_setting_reads_as_written() {
        let values: Mapping = serde_yaml::from_str("{on: true, off: false, text: maybe}").unwrap();
        let config = ProviderConfig::new("P", None, values, "/tmp");
        assert_eq!(config.get_bool("on"), Some(true));
        assert_eq!(config.get_bool("off"), Some(false));
        assert_eq!(config.get_bool("missing"), None);
    }

    /// A settings file that is there but cannot be read is an error naming it, never the
    /// defaults as if there were none.
    #[test]
    fn an_unreadable_settings_file_is_an_error_not_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(SETTINGS_FILE)).unwrap();
        let err = Settings::load_from(dir.path(), Vec::new()).unwrap_err();
        assert!(err.to_string().contains(SETTINGS_FILE), "{err}");
    }

    /// A provider's configuration shows which provider and instance it is and its values, with
    /// secrets masked: `{:?}` of it is safe to log.
    #[test]
    fn a_provider_configuration_debugs_with_its_secrets_masked() {
        let values: Mapping =
            serde_yaml::from_str("{base_url: 'https://aap.example.com', password: hunter2}")
                .unwrap();
        let config = ProviderConfig::new("AnsibleTower", Some("prod"), values, "/tmp");
        let shown = format!("{config:?}");
        for part in [
            "ProviderConfig",
            "AnsibleTower",
            "prod",
            "https://aap.example.com",
        ] {
            assert!(shown.contains(part), "{part} in {shown}");
        }
        assert!(shown.contains(crate::redact::MASK), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    /// Every top-level setting with a default reads as its default when unset and as written when
    /// set; a duration may be seconds or text, and anything else is an error naming the key.
    #[test]
    fn top_level_settings_read_as_written_else_their_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let unset = Settings::from_yaml(dir.path(), "{}").unwrap();
        let d = dir.path();
        assert_eq!(unset.settings_path(), d.join(SETTINGS_FILE));
        assert_eq!(unset.inventory_path(), d.join(INVENTORY_FILE));
        assert_eq!(unset.log_path(), d.join("logs/broker.log"));
        assert_eq!(unset.thread_limit(), None);
        assert_eq!(unset.checkin_timeout().unwrap(), Duration::from_secs(300));
        assert_eq!(unset.cancel_timeout().unwrap(), Duration::from_secs(10));
        assert_eq!(
            unset.inventory_lock_timeout().unwrap(),
            Duration::from_secs(60)
        );
        assert_eq!(unset.keep_on_failure().unwrap(), None);
        let titles: Vec<String> = unset.inventory_fields().into_iter().map(|f| f.0).collect();
        assert_eq!(titles, ["Host", "Provider", "Action", "OS"]);
        assert_eq!(unset.inventory_list_vars(), "hostname | name");
        assert_eq!(unset.console_level(), "info");
        assert_eq!(unset.file_level(), "debug");
        assert!(unset.provider_labels().is_empty());
        assert!(unset.nicks().is_empty());

        let set = Settings::from_yaml(
            d,
            "thread_limit: 0\ncheckin_timeout: 45\ncancel_timeout: 2m\n\
             inventory_lock_timeout: 1h30m\nkeep_on_failure: 30s\n\
             inventory_fields: {Name: hostname, Where: _broker_provider}\n\
             inventory_list_vars: name\nprovider_labels: {team: qe}\n\
             logging: {console_level: warning, file_level: trace, log_path: /var/log/b}\n\
             nicks: {rhel: {workflow: deploy-rhel}}\n",
        )
        .unwrap();
        assert_eq!(set.thread_limit(), Some(1), "0 is taken as 1");
        assert_eq!(set.checkin_timeout().unwrap(), Duration::from_secs(45));
        assert_eq!(set.cancel_timeout().unwrap(), Duration::from_secs(120));
        assert_eq!(
            set.inventory_lock_timeout().unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            set.keep_on_failure().unwrap(),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            set.inventory_fields(),
            [
                ("Name".to_owned(), "hostname".to_owned()),
                ("Where".to_owned(), "_broker_provider".to_owned())
            ]
        );
        assert_eq!(set.inventory_list_vars(), "name");
        assert_eq!(set.console_level(), "warning");
        assert_eq!(set.file_level(), "trace");
        // A path without an extension is a directory, given the default file name.
        assert_eq!(set.log_path(), PathBuf::from("/var/log/b/broker.log"));
        assert_eq!(set.provider_labels().get("team"), Some(&Value::from("qe")));
        assert_eq!(set.nicks(), ["rhel"]);
        let named =
            Settings::from_yaml(d, "thread_limit: 4\nlogging: {log_path: b.txt}\n").unwrap();
        assert_eq!(named.thread_limit(), Some(4));
        assert_eq!(named.log_path(), d.join("b.txt"));
        assert_eq!(
            Settings::from_yaml(d, "keep_on_failure: 0")
                .unwrap()
                .keep_on_failure()
                .unwrap(),
            None
        );

        for (text, message) in [
            (
                "checkin_timeout: -5",
                "`checkin_timeout` must be a positive number of seconds",
            ),
            (
                "cancel_timeout: soon",
                "`cancel_timeout`: `soon` is not a duration",
            ),
            (
                "inventory_lock_timeout: [1]",
                "`inventory_lock_timeout` must be a duration",
            ),
            (
                "keep_on_failure: 1.5",
                "`keep_on_failure` must be a positive number of seconds",
            ),
        ] {
            let settings = Settings::from_yaml(d, text).unwrap();
            let err = [
                settings.checkin_timeout(),
                settings.cancel_timeout(),
                settings.inventory_lock_timeout(),
                settings.keep_on_failure().map(|d| d.unwrap_or_default()),
            ]
            .into_iter()
            .find_map(std::result::Result::err)
            .unwrap_or_else(|| panic!("{text} is an error"));
            assert!(
                matches!(err, Error::Configuration { .. }),
                "{text}: {err:?}"
            );
            assert!(err.to_string().contains(message), "{text}: {err}");
        }
    }

    /// `{:?}` of all settings shows where they came from and the file's values, secrets masked.
    #[test]
    fn settings_debug_with_their_secrets_masked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SETTINGS_FILE), SETTINGS).unwrap();
        let settings = Settings::load_from(dir.path(), Vec::new()).unwrap();
        let shown = format!("{settings:?}");
        let directory = dir.path().display().to_string();
        for part in [
            "Settings",
            &directory,
            SETTINGS_FILE,
            "host_username",
            "root",
        ] {
            assert!(shown.contains(part), "{part} in {shown}");
        }
        assert!(shown.contains(crate::redact::MASK), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    /// One broker directory has one inventory identity, however it is reached; another directory
    /// has another. A provider's configuration carries its directory's until the broker names
    /// its store.
    #[test]
    fn an_inventory_is_named_by_its_resolved_location() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&a, &link).unwrap();
        let at = |d: &Path| inventory_id(&d.join(INVENTORY_FILE).display().to_string());
        assert_eq!(at(&a), at(&a));
        assert_eq!(at(&a), at(&link), "a symbolic link to the same directory");
        assert_ne!(at(&a), at(&b));
        assert_eq!(at(&a).len(), 16);
        // Pinned: containers' labels hold the identity, so it must not change between versions.
        assert_eq!(
            inventory_id_on("m1", "/srv/broker/inventory.yaml"),
            "3f26e031db1cc487"
        );
        assert_ne!(
            inventory_id_on("m2", "/srv/broker/inventory.yaml"),
            inventory_id_on("m1", "/srv/broker/inventory.yaml")
        );
        assert!(at(&a).chars().all(|c| c.is_ascii_hexdigit()), "{}", at(&a));
        let mut config = Settings::from_yaml(&link, "{}")
            .unwrap()
            .provider_config("Container", None)
            .unwrap();
        assert_eq!(config.inventory_id(), at(&a));
        config.set_inventory(&b.join(INVENTORY_FILE).display().to_string());
        assert_eq!(config.inventory_id(), at(&b));
        assert_eq!(
            ProviderConfig::new("Container", None, Mapping::new(), &a).inventory_id(),
            at(&a)
        );
    }

    const SETTINGS: &str = r#"
_version: 0.7.0
ssh:
    host_username: root
    host_password: "hunter2"
TestProvider:
    instances:
        test1:
            foo: "bar"
            default: True
        test2:
            foo: "baz"
            override_envars: True
    config_value: "something"
    token: abc
nicks:
    test_nick:
        test_action: "fake"
        arg1: "abc"
"#;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SETTINGS_FILE), SETTINGS).unwrap();
        Settings::load_from(dir.path(), env(pairs)).unwrap()
    }

    /// `inventory` (or `BROKER_INVENTORY`) names a shared database by a `postgres://` or
    /// `postgresql://` URL, kept secret; unset, the inventory is the file; anything else is a
    /// configuration error.
    #[test]
    fn the_inventory_database_is_a_postgres_url_or_none() {
        use secrecy::ExposeSecret;
        assert!(settings(&[]).inventory_database().unwrap().is_none());
        for url in [
            "postgres://qe:pw@db/broker",
            "postgresql://db.example.com/broker",
        ] {
            let s = settings(&[("BROKER_INVENTORY", url)]);
            let named = s.inventory_database().unwrap().expect("a database");
            assert_eq!(named.expose_secret(), url);
        }
        let err = settings(&[("BROKER_INVENTORY", "mysql://db/broker")])
            .inventory_database()
            .unwrap_err();
        assert!(matches!(err, Error::Configuration { .. }), "{err:?}");
        assert!(err.to_string().contains("postgres://"), "{err}");
    }

    #[test]
    fn default_instance_is_chosen_and_merged_over_top_level() {
        let s = settings(&[]);
        let c = s.provider_config("TestProvider", None).unwrap();
        assert_eq!(c.instance(), Some("test1"));
        assert_eq!(c.get_str("foo").as_deref(), Some("bar"));
        assert_eq!(c.get_str("config_value").as_deref(), Some("something"));
    }

    #[test]
    fn explicit_instance_wins_and_unknown_instance_is_a_configuration_error() {
        let s = settings(&[]);
        let c = s.provider_config("TestProvider", Some("test2")).unwrap();
        assert_eq!(c.get_str("foo").as_deref(), Some("baz"));
        let err = s.provider_config("TestProvider", Some("nope")).unwrap_err();
        assert_eq!(err.exit_code(), 8);
        assert!(err.to_string().contains("test1, test2"), "{err}");
        // With no instances at all, the error says how to add one.
        let empty = Settings::load_from(tempfile::tempdir().unwrap().path(), env(&[])).unwrap();
        let err = empty
            .provider_config("TestProvider", Some("local"))
            .unwrap_err();
        assert_eq!(err.exit_code(), 8);
        assert!(
            err.to_string()
                .contains("broker config set TestProvider.instances.local '{default: true}'"),
            "{err}"
        );
    }

    #[test]
    fn a_setting_an_instance_writes_in_a_flow_mapping_is_named_as_the_instances() {
        let yaml =
            "TestProvider:\n  lease: 1h\n  instances:\n    - one: {default: true, lease: soon}\n";
        let s = Settings::from_yaml(tempfile::tempdir().unwrap().path(), yaml).unwrap();
        let c = s.provider_config("TestProvider", None).unwrap();
        assert_eq!(
            c.setting_error("lease", "bad").to_string(),
            "configuration error: `TestProvider.instances.one.lease` (broker_settings.yaml line 4): bad"
        );
        // A key only the section sets is still the section's.
        let yaml = "TestProvider:\n  lease: soon\n  instances:\n    - one: {default: true}\n";
        let s = Settings::from_yaml(tempfile::tempdir().unwrap().path(), yaml).unwrap();
        let c = s.provider_config("TestProvider", None).unwrap();
        assert_eq!(
            c.setting_error("lease", "bad").to_string(),
            "configuration error: `TestProvider.lease` (broker_settings.yaml line 2): bad"
        );
    }

    #[test]
    fn an_instance_is_the_one_named_else_the_only_one_else_the_default() {
        let instance = |name: &str, default: bool| {
            let mut settings = Mapping::new();
            settings.insert("default".into(), default.into());
            (name.to_owned(), settings)
        };
        let chosen = |instances: &[(String, Mapping)], named: Option<&str>| {
            choose_instance("P", instances, named).map(|c| c.map(|(name, _)| name))
        };
        let two = [instance("a", false), instance("b", true)];
        assert_eq!(chosen(&two, Some("a")).unwrap().as_deref(), Some("a"));
        assert_eq!(chosen(&two, None).unwrap().as_deref(), Some("b"));
        assert_eq!(chosen(&two[..1], None).unwrap().as_deref(), Some("a"));
        assert_eq!(chosen(&[], None).unwrap(), None);
        let err = chosen(&two, Some("c")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "configuration error: P has no instance `c`; configured: a, b"
        );
        let undecided = [instance("a", false), instance("b", false)];
        let err = chosen(&undecided, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "configuration error: P has several instances (a, b) and none is `default: true`; \
             choose one with `--P NAME`"
        );
        assert_eq!(err.exit_code(), 8);
    }

    #[test]
    fn env_overrides_are_case_insensitive_and_typed() {
        let s = settings(&[
            ("BROKER_SSH__HOST_SSH_PORT", "2222"),
            ("BROKER_THREAD_LIMIT", "4"),
            ("BROKER_DIRECTORY", "/ignored"),
            ("BROKER_LOGGING__CONSOLE_LEVEL", "debug"),
        ]);
        assert_eq!(
            s.get("ssh.host_ssh_port").and_then(Value::as_u64),
            Some(2222)
        );
        assert_eq!(s.thread_limit(), Some(4));
        assert_eq!(s.console_level(), "debug");
        assert!(s.get("directory").is_none());
    }

    #[test]
    fn env_beats_instance_unless_override_envars() {
        let s = settings(&[("BROKER_TESTPROVIDER__foo", "env")]);
        let c1 = s.provider_config("TestProvider", Some("test1")).unwrap();
        assert_eq!(c1.get_str("foo").as_deref(), Some("env"));
        let c2 = s.provider_config("TestProvider", Some("test2")).unwrap();
        assert_eq!(c2.get_str("foo").as_deref(), Some("baz"));
    }

    #[test]
    fn nested_instance_env_override_applies() {
        let s = settings(&[("BROKER_TESTPROVIDER__INSTANCES__TEST2__foo", "deep")]);
        let c = s.provider_config("TestProvider", Some("test2")).unwrap();
        assert_eq!(c.get_str("foo").as_deref(), Some("deep"));
    }

    #[test]
    fn secrets_are_masked_everywhere_they_are_shown() {
        let s = settings(&[]);
        let shown = serde_yaml::to_string(&s.masked()).unwrap();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("host_password: '********'"), "{shown}");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(
            s.secret("ssh.host_password").unwrap().expose_secret(),
            "hunter2"
        );
        let c = s.provider_config("TestProvider", None).unwrap();
        assert!(!format!("{c:?}").contains("abc"));
        assert_eq!(c.secret("token").unwrap().expose_secret(), "abc");
    }

    #[test]
    fn missing_file_gives_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let s = Settings::load_from(dir.path(), env(&[])).unwrap();
        assert!(s.file().is_none());
        assert_eq!(s.inventory_list_vars(), "hostname | name");
        assert_eq!(s.inventory_fields().len(), 4);
        assert_eq!(s.checkin_timeout().unwrap(), Duration::from_secs(300));
    }

    #[test]
    fn reaping_on_start_is_on_unless_switched_off() {
        let dir = tempfile::tempdir().unwrap();
        let s = Settings::load_from(dir.path(), env(&[])).unwrap();
        assert!(s.reap_on_start().unwrap());
        let off =
            Settings::load_from(dir.path(), env(&[("BROKER_REAP_ON_START", "false")])).unwrap();
        assert!(!off.reap_on_start().unwrap());
        let bad = Settings::from_yaml(dir.path(), "reap_on_start: sometimes\n").unwrap();
        let e = bad.reap_on_start().unwrap_err();
        assert_eq!(e.exit_code(), 8);
        assert!(
            e.to_string().contains("`sometimes` is not true or false"),
            "{e}"
        );
        let problems: Vec<String> = bad.base_problems().iter().map(|p| p.to_string()).collect();
        assert!(
            problems
                .iter()
                .any(|p| p.contains("reap_on_start") && p.contains("not true or false")),
            "{problems:?}"
        );
    }

    #[test]
    fn passwd_home_is_the_entry_of_the_uid() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      # comment\n\
                      ci:x:1001:1001::/home/ci:/bin/sh\n\
                      nohome:x:1002:1002:::/bin/sh\n";
        assert_eq!(
            passwd_home_of(passwd, "1001"),
            Some(PathBuf::from("/home/ci"))
        );
        assert_eq!(passwd_home_of(passwd, "0"), Some(PathBuf::from("/root")));
        assert_eq!(passwd_home_of(passwd, "1002"), None);
        assert_eq!(passwd_home_of(passwd, "7"), None);
    }

    /// `BROKER_DIRECTORY`, else `$HOME/.broker`, else the password database's home; an empty
    /// variable counts as unset.
    #[test]
    fn the_broker_directory_is_found_in_that_order() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        let passwd = || Some(PathBuf::from("/home/pw"));
        let found = |pairs, passwd_home: fn() -> Option<PathBuf>| {
            directory_from(env(pairs), passwd_home).map_err(|e| e.to_string())
        };
        let both = &[("BROKER_DIRECTORY", "/srv/b"), ("HOME", "/home/h")];
        assert_eq!(found(both, passwd), Ok(PathBuf::from("/srv/b")));
        let empty_dir = &[("BROKER_DIRECTORY", ""), ("HOME", "/home/h")];
        assert_eq!(
            found(empty_dir, passwd),
            Ok(PathBuf::from("/home/h/.broker"))
        );
        assert_eq!(
            found(&[("HOME", "")], passwd),
            Ok(PathBuf::from("/home/pw/.broker"))
        );
        assert_eq!(found(&[], passwd), Ok(PathBuf::from("/home/pw/.broker")));
        let none = found(&[("HOME", "")], || None).unwrap_err();
        assert!(none.contains("set BROKER_DIRECTORY"), "{none}");
    }

    /// The real lookups: this process's environment and password database.
    #[test]
    fn the_default_directory_is_this_processs() {
        let expected = directory_from(|name| std::env::var_os(name), passwd_home);
        match (default_directory(), expected) {
            (Ok(dir), Ok(expected)) => {
                assert_eq!(dir, expected);
                assert!(dir.is_absolute() || std::env::var_os("BROKER_DIRECTORY").is_some());
            }
            (Err(_), Err(_)) => {}
            (dir, expected) => panic!("{dir:?} is not {expected:?}"),
        }
        // The password database's home is this user's entry, when it has one.
        let own = crate::record::own_uid().and_then(|uid| {
            let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
            passwd_home_of(&passwd, &uid)
        });
        assert_eq!(passwd_home(), own);
        if let Some(home) = passwd_home() {
            assert!(home.is_absolute(), "{home:?}");
        }
    }

    #[test]
    fn a_byte_order_mark_at_the_start_of_the_settings_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        // The first key right after the mark, as editors that add one write it.
        let text = format!("\u{feff}{}", SETTINGS.trim_start());
        std::fs::write(dir.path().join(SETTINGS_FILE), text).unwrap();
        let s = Settings::load_from(dir.path(), env(&[])).unwrap();
        assert_eq!(
            s.get("ssh.host_username").and_then(Value::as_str),
            Some("root")
        );
        let file = SettingsFile::in_directory(dir.path());
        assert_eq!(
            file.read().unwrap(),
            Settings::from_yaml(dir.path(), SETTINGS)
                .unwrap()
                .raw()
                .clone()
        );
    }

    #[test]
    fn config_set_keeps_the_spelling_of_new_keys_and_finds_existing_ones_in_any_case() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(SETTINGS_FILE),
            "ssh:\n  host_username: root\n",
        )
        .unwrap();
        let file = SettingsFile::in_directory(dir.path());
        file.set(
            "TestProvider.instances.local",
            serde_yaml::from_str("{default: true}").unwrap(),
        )
        .unwrap();
        file.set("SSH.host_username", Value::from("admin")).unwrap();
        let text = std::fs::read_to_string(dir.path().join(SETTINGS_FILE)).unwrap();
        assert_eq!(
            text,
            "ssh:\n  host_username: admin\nTestProvider:\n  instances:\n    local:\n      default: true\n"
        );
    }

    #[test]
    fn config_set_refuses_to_write_what_would_not_read_back_and_keeps_the_file() {
        // As the inventory writer (found by fuzzing it): a `%2C` in a tag was written as `,`.
        let dir = tempfile::tempdir().unwrap();
        let text = "ssh:\n  host_username: root\nodd: !foo%2Cbar x\n";
        std::fs::write(dir.path().join(SETTINGS_FILE), text).unwrap();
        let file = SettingsFile::in_directory(dir.path());
        let err = file
            .set("SSH.host_username", Value::from("admin"))
            .unwrap_err();
        let cause = std::error::Error::source(&err).map(ToString::to_string);
        assert!(
            cause
                .as_deref()
                .is_some_and(|c| c.contains("cannot write back unchanged")),
            "{err}: {cause:?}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join(SETTINGS_FILE)).unwrap(),
            text
        );
    }

    #[cfg(unix)]
    #[test]
    fn config_set_writes_through_a_symlinked_settings_file_keeping_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let dotfiles = tempfile::tempdir().unwrap();
        let target = dotfiles.path().join("broker_settings.yaml");
        std::fs::write(&target, SETTINGS).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).unwrap();
        let link = dir.path().join(SETTINGS_FILE);
        std::os::unix::fs::symlink(&target, &link).unwrap();

        let file = SettingsFile::in_directory(dir.path());
        file.set("ssh.host_username", Value::from("admin")).unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        let s = Settings::load_from(dir.path(), env(&[])).unwrap();
        assert_eq!(
            s.get("ssh.host_username").and_then(Value::as_str),
            Some("admin")
        );
        file.restore().unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), SETTINGS);
    }

    #[test]
    fn malformed_file_names_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SETTINGS_FILE), "ssh:\n  a: 1\n b: [\n").unwrap();
        let err = Settings::load_from(dir.path(), env(&[])).unwrap_err();
        match &err {
            Error::Parse { line, column, .. } => assert!(*line >= 2 && *column > 0, "{err}"),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(err.exit_code(), 8);
        assert!(err.to_string().contains("broker_settings.yaml"), "{err}");
    }

    #[test]
    fn unknown_nick_lists_known_ones() {
        let s = settings(&[]);
        assert_eq!(s.nick("test_nick").unwrap().len(), 2);
        let err = s.nick("rhel9").unwrap_err();
        assert!(err.to_string().contains("test_nick"), "{err}");
        assert_eq!(err.exit_code(), 13);
    }

    #[test]
    fn settings_file_set_backs_up_and_parses_values() {
        let dir = tempfile::tempdir().unwrap();
        let file = SettingsFile::in_directory(dir.path());
        assert!(file.init(SETTINGS).unwrap().is_none());
        let backup = file
            .set("TestProvider.instances.test1.foo", Value::from(7))
            .unwrap();
        assert!(backup.is_some());
        let s = Settings::load_from(dir.path(), env(&[])).unwrap();
        let c = s.provider_config("TestProvider", Some("test1")).unwrap();
        assert_eq!(c.get_u64("foo"), Some(7));
        file.restore().unwrap();
        let s = Settings::load_from(dir.path(), env(&[])).unwrap();
        assert_eq!(
            s.provider_config("TestProvider", Some("test1"))
                .unwrap()
                .get_str("foo")
                .as_deref(),
            Some("bar")
        );
        assert!(file.init("a: [").is_err());
    }

    #[test]
    fn dotted_paths_match_keys_as_written_first_then_in_any_case() {
        let value: Value =
            serde_yaml::from_str("{SSH: {user: a, User: b}, Ssh: {port: 2}, list: [x]}").unwrap();
        let found = |path| lookup(&value, path).cloned();
        assert_eq!(found("SSH.User"), Some(Value::from("b")));
        assert_eq!(
            found("ssh.user"),
            Some(Value::from("a")),
            "the first key in any case"
        );
        assert_eq!(
            found("Ssh.port"),
            Some(Value::from(2)),
            "as written before any case"
        );
        assert_eq!(
            found(".SSH..user."),
            Some(Value::from("a")),
            "empty segments skipped"
        );
        assert_eq!(found(""), Some(value.clone()));
        assert_eq!(found("list.0"), None, "lists are not indexed");
        assert_eq!(found("SSH.user.more"), None);
        assert_eq!(found("nothing"), None);
        let s = settings(&[]);
        assert_eq!(s.get("SSH.Host_Username"), Some(&Value::from("root")));
        assert_eq!(s.get("ssh..host_username"), Some(&Value::from("root")));
        assert_eq!(s.get(""), None, "a path names a key");
    }

    #[test]
    fn config_view_masks_the_chunk_and_names_a_missing_one() {
        let s = settings(&[]);
        assert_eq!(
            s.masked_at("ssh").unwrap(),
            serde_yaml::from_str::<Value>("{host_username: root, host_password: '********'}")
                .unwrap()
        );
        assert_eq!(s.masked_at("").unwrap(), s.masked());
        let err = s.masked_at("ssh.nothing").unwrap_err();
        assert_eq!(err.to_string(), "the settings have no `ssh.nothing`");
        assert_eq!(err.exit_code(), 13);
    }

    #[test]
    fn config_edit_reads_the_chunk_as_the_file_has_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = SettingsFile::in_directory(dir.path());
        assert_eq!(file.read_at("ssh").unwrap(), Value::Null, "no file yet");
        file.init(SETTINGS).unwrap();
        assert_eq!(
            file.read_at("SSH.host_password").unwrap(),
            Value::from("hunter2")
        );
        assert_eq!(file.read_at("ssh.nothing").unwrap(), Value::Null);
        assert_eq!(
            file.read_at("").unwrap(),
            Value::Mapping(file.read().unwrap())
        );
    }

    #[test]
    fn shipped_example_parses() {
        let s = Settings::from_yaml("/tmp", EXAMPLE_SETTINGS).unwrap();
        assert_eq!(s.nicks(), vec!["rhel9".to_owned(), "local".to_owned()]);
        assert_eq!(s.provider_instances("Container"), vec!["docker", "remote"]);
    }
}
