//! Handoff targets (Razor's broker targets): a named, configured instance of a handoff kind that a
//! freshly checked-out host is handed to.
//!
//! A [`Target`] is data only; it is checked against its kind's schema
//! ([`KindSchema::validate`](crate::handoff::schema::KindSchema::validate)) before a store takes it.
//! Secret values are [`SecretString`]s: `Debug`, `Serialize` (what output shows) and errors give
//! only a fingerprint of them.

use std::collections::BTreeMap;
use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Serialize, Serializer};

use crate::error::{Error, Result};

/// The stable identity of a target; its name may change, its id does not.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct TargetId(String);

impl TargetId {
    /// A fresh, unique identity: `t` and 16 hex digits.
    pub fn generate() -> Self {
        let record = crate::record::RecordId::generate();
        TargetId(format!("t{}", &record.as_str()[1..]))
    }

    /// The identity as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for TargetId {
    fn from(s: &str) -> Self {
        TargetId(s.to_owned())
    }
}

impl fmt::Display for TargetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One configured value: plain text, or a secret shown only as its fingerprint.
#[derive(Clone)]
pub enum ConfigValue {
    /// A value shown as it is.
    Plain(String),
    /// A value never shown, logged or put in an error: `Debug` and `Serialize` give its fingerprint.
    Secret(SecretString),
}

impl ConfigValue {
    /// A plain value, or a secret one when `secret`.
    pub fn new(value: &str, secret: bool) -> Self {
        if secret {
            ConfigValue::Secret(SecretString::from(value.to_owned()))
        } else {
            ConfigValue::Plain(value.to_owned())
        }
    }

    /// The value itself, secret or not: for running a handoff, never for showing.
    pub fn expose(&self) -> &str {
        match self {
            ConfigValue::Plain(v) => v,
            ConfigValue::Secret(v) => v.expose_secret(),
        }
    }

    /// Whether the value is a secret.
    pub fn is_secret(&self) -> bool {
        matches!(self, ConfigValue::Secret(_))
    }

    /// The value as output shows it: a plain value as it is, a secret as `secret sha256:…` (the
    /// first 16 hex digits of its SHA-256), which tells two keys apart without showing either.
    pub fn shown(&self) -> String {
        match self {
            ConfigValue::Plain(v) => v.clone(),
            ConfigValue::Secret(v) => format!("secret {}", fingerprint(v.expose_secret())),
        }
    }
}

/// `sha256:` and the first 16 hex digits of the SHA-256 of `text`.
pub fn fingerprint(text: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(text.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

impl PartialEq for ConfigValue {
    fn eq(&self, other: &Self) -> bool {
        self.is_secret() == other.is_secret() && self.expose() == other.expose()
    }
}

impl Eq for ConfigValue {}

impl fmt::Debug for ConfigValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigValue::Plain(v) => fmt::Debug::fmt(v, f),
            ConfigValue::Secret(_) => f.write_str(&self.shown()),
        }
    }
}

impl Serialize for ConfigValue {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.shown())
    }
}

/// A target's configuration: key → value, checked against its kind's schema.
#[derive(Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct TargetConfig(BTreeMap<String, ConfigValue>);

impl TargetConfig {
    /// Sets `key`.
    pub fn insert(&mut self, key: impl Into<String>, value: ConfigValue) {
        self.0.insert(key.into(), value);
    }

    /// Unsets `key`, returning what it held.
    pub fn remove(&mut self, key: &str) -> Option<ConfigValue> {
        self.0.remove(key)
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&ConfigValue> {
        self.0.get(key)
    }

    /// The value of `key` as text, secret or not (for running a handoff, never for showing).
    pub fn text(&self, key: &str) -> Option<&str> {
        self.get(key).map(ConfigValue::expose)
    }

    /// The keys and values, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ConfigValue)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Whether no key is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The keys and values as a map, to change and check again.
    pub fn into_values(self) -> BTreeMap<String, ConfigValue> {
        self.0
    }

    /// The plain values and, apart, the secret ones, as text: how a store keeps them.
    pub fn split(&self) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        let (mut plain, mut secret) = (BTreeMap::new(), BTreeMap::new());
        for (key, value) in &self.0 {
            let into = if value.is_secret() {
                &mut secret
            } else {
                &mut plain
            };
            into.insert(key.clone(), value.expose().to_owned());
        }
        (plain, secret)
    }

    /// The configuration of `plain` values and `secret` ones ([`TargetConfig::split`] again).
    pub fn from_split(plain: BTreeMap<String, String>, secret: BTreeMap<String, String>) -> Self {
        let plain = plain.into_iter().map(|(k, v)| (k, ConfigValue::Plain(v)));
        let secret = secret
            .into_iter()
            .map(|(k, v)| (k, ConfigValue::Secret(v.into())));
        TargetConfig(plain.chain(secret).collect())
    }
}

impl fmt::Debug for TargetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.iter()).finish()
    }
}

/// A handoff target: a configured instance of a handoff kind.
///
/// `Serialize` gives what output shows (secrets as fingerprints); stores keep the values
/// themselves in their own format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    /// Stable identity.
    pub id: TargetId,
    /// Unique name, in any case.
    pub name: String,
    /// What the target is for, as its user wrote it.
    pub description: String,
    /// The handoff kind: `puppet`.
    pub kind: String,
    /// The configuration, checked against the kind's schema.
    pub config: TargetConfig,
    /// When it was added, seconds since the Unix epoch.
    pub created: i64,
    /// When it last changed, seconds since the Unix epoch.
    pub updated: i64,
    /// 1 when added, one more with each change.
    pub revision: u64,
}

/// Names `target get`/`remove` read as words of their own, which a target cannot be called.
pub const RESERVED_NAMES: &[&str] = &["all", "plugins", "plugin", "t", "kinds"];

/// The longest name a target may have, in characters.
pub const MAX_NAME_CHARS: usize = 250;

impl Target {
    /// A new target (revision 1, created and updated now, a fresh id) of a name checked by
    /// [`check_name`] and a configuration already checked against the kind's schema.
    ///
    /// # Errors
    /// [`Error::User`] when the name is not one a target may have.
    pub fn new(name: &str, description: &str, kind: &str, config: TargetConfig) -> Result<Self> {
        check_name(name)?;
        let now = crate::time::now_epoch();
        Ok(Target {
            id: TargetId::generate(),
            name: name.to_owned(),
            description: description.to_owned(),
            kind: kind.to_owned(),
            config,
            created: now,
            updated: now,
            revision: 1,
        })
    }

    /// Whether `id_or_name` names this target: its id exactly, or its name in any case.
    pub fn is_named(&self, id_or_name: &str) -> bool {
        self.id.as_str() == id_or_name || self.name.to_lowercase() == id_or_name.to_lowercase()
    }

    /// Whether `other` is this target again as far as adding goes: same kind, description and
    /// configuration (adding it again changes nothing).
    pub fn same_as(&self, other: &Target) -> bool {
        self.kind == other.kind
            && self.description == other.description
            && self.config == other.config
    }
}

/// Checks a target name: not empty, at most [`MAX_NAME_CHARS`] characters, no `/` or control
/// characters, no space at either end, not a word of the command line ([`RESERVED_NAMES`]).
///
/// # Errors
/// [`Error::User`] saying what is wrong with the name.
pub fn check_name(name: &str) -> Result<()> {
    let problem = if name.is_empty() {
        Some("the name is empty; give one with `-n/--name`".to_owned())
    } else if name.chars().count() > MAX_NAME_CHARS {
        Some(format!(
            "the name is longer than {MAX_NAME_CHARS} characters"
        ))
    } else if name.chars().any(|c| c == '/' || c.is_control()) {
        Some("the name holds a `/` or a control character".to_owned())
    } else if name.trim() != name {
        Some("the name starts or ends with white space".to_owned())
    } else if RESERVED_NAMES.iter().any(|r| r.eq_ignore_ascii_case(name)) {
        Some(format!(
            "`{name}` is a word of `broker target` (`get {name}`); choose another name"
        ))
    } else {
        None
    };
    match problem {
        Some(problem) => Err(Error::user(format!("invalid target name: {problem}"))),
        None => Ok(()),
    }
}

/// The target `id_or_name` names among `targets`: by id, else by name in any case.
///
/// # Errors
/// [`Error::User`] when none does, naming the targets there are.
pub fn lookup<'t>(targets: &'t [Target], id_or_name: &str) -> Result<&'t Target> {
    targets
        .iter()
        .find(|t| t.id.as_str() == id_or_name)
        .or_else(|| targets.iter().find(|t| t.is_named(id_or_name)))
        .ok_or_else(|| {
            let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
            let known = if names.is_empty() {
                "there are no targets; add one with `broker target add`".to_owned()
            } else {
                let hint = crate::spelling::misspelling_of(id_or_name, &names)
                    .map(|near| format!("did you mean `{near}`? "))
                    .unwrap_or_default();
                format!("{hint}the targets are {}", names.join(", "))
            };
            Error::user(format!("unknown handoff target `{id_or_name}`; {known}"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chef_like() -> TargetConfig {
        let mut config = TargetConfig::default();
        config.insert("server", ConfigValue::new("chef.example.com", false));
        config.insert("validation_key", ConfigValue::new("TOP-SECRET-KEY", true));
        config
    }

    #[test]
    fn a_secret_shows_only_as_its_fingerprint() {
        let target = Target::new("c", "", "chef", chef_like()).unwrap();
        let debug = format!("{target:?}");
        let json = serde_json::to_string(&target).unwrap();
        let yaml = serde_yaml::to_string(&target).unwrap();
        let print = fingerprint("TOP-SECRET-KEY");
        for shown in [&debug, &json, &yaml] {
            assert!(!shown.contains("TOP-SECRET"), "{shown}");
            assert!(shown.contains(&print), "{shown}");
            assert!(shown.contains("chef.example.com"), "{shown}");
        }
        assert_eq!(print, "sha256:275ad8e334bd2b68");
        assert_eq!(target.config.text("validation_key"), Some("TOP-SECRET-KEY"));
    }

    #[test]
    fn names_are_checked() {
        let refused = |name: &str| check_name(name).unwrap_err().to_string();
        assert_eq!(
            refused(""),
            "invalid target name: the name is empty; give one with `-n/--name`"
        );
        assert!(refused("a/b").contains("`/`"));
        assert!(refused(" a").contains("white space"));
        assert!(refused("All").contains("word of `broker target`"));
        assert!(refused(&"x".repeat(251)).contains("longer than 250"));
        check_name(&"é".repeat(250)).unwrap();
        check_name("puppet prod").unwrap();
    }

    #[test]
    fn a_target_is_found_by_id_or_by_name_in_any_case() {
        let a = Target::new("Puppet-Prod", "", "puppet", TargetConfig::default()).unwrap();
        let b = Target::new("chef", "", "chef", TargetConfig::default()).unwrap();
        let targets = vec![a.clone(), b.clone()];
        assert_eq!(lookup(&targets, "puppet-prod").unwrap(), &a);
        assert_eq!(lookup(&targets, b.id.as_str()).unwrap(), &b);
        assert_eq!(
            lookup(&targets, "puppet-prd").unwrap_err().to_string(),
            "unknown handoff target `puppet-prd`; did you mean `Puppet-Prod`? the targets are \
             Puppet-Prod, chef"
        );
        assert_eq!(
            lookup(&[], "x").unwrap_err().to_string(),
            "unknown handoff target `x`; there are no targets; add one with `broker target add`"
        );
        assert_ne!(a.id, b.id);
        assert!(a.id.as_str().starts_with('t'));
    }
}
