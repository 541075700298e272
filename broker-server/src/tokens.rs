//! Bearer tokens: made at random, shown once, kept only as their SHA-256 in the settings file
//! (`serve.tokens.NAME: {role, sha256}`), each with a [`Role`].
//!
//! A presented token is hashed and compared with every stored hash in constant time, so neither
//! the answer's timing nor the log tells how close a guess came.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use broker_core::cli_support::SettingsFile;
use broker_core::secrecy::{ExposeSecret, SecretString};
use broker_core::{Error, Mapping, Result, Settings, Value};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The settings key that holds the tokens.
pub const TOKENS_KEY: &str = "serve.tokens";

/// What a token may do; each role may do what the roles before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Role {
    /// Read: every `GET`.
    Read,
    /// Write: also create, change and remove targets, check hosts out and in, extend them.
    Write,
    /// Admin: also list the tokens.
    Admin,
}

impl Role {
    /// The role's name, as settings and `--role` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            "admin" => Ok(Role::Admin),
            _ => Err(Error::usage(format!(
                "unknown role `{s}`; the roles are read, write and admin"
            ))),
        }
    }
}

/// A token as a listing shows it: its name and role, never its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenInfo {
    /// The name it was added under.
    pub name: String,
    /// What it may do.
    pub role: Role,
}

/// The tokens a server takes, read once at start.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<(TokenInfo, [u8; 32])>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|(info, _)| info))
            .finish()
    }
}

impl Tokens {
    /// The tokens of `settings` (`serve.tokens`).
    ///
    /// # Errors
    /// [`Error::Configuration`] naming an entry that is not a mapping with a known `role` and a
    /// 64-digit hex `sha256`.
    pub fn from_settings(settings: &Settings) -> Result<Self> {
        let entries = match settings.get(TOKENS_KEY) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Mapping(tokens)) => parse_entries(tokens)?,
            Some(_) => {
                return Err(Error::configuration(format!(
                    "`{TOKENS_KEY}` must be a mapping of token names; add tokens with \
                     `broker serve token add`"
                )));
            }
        };
        Ok(Tokens { entries })
    }

    /// The tokens of the settings file `file` (`serve.tokens`).
    ///
    /// # Errors
    /// The file cannot be read; a malformed entry (as [`Tokens::from_settings`]).
    pub fn from_file(file: &SettingsFile) -> Result<Self> {
        let entries = match file.read_at(TOKENS_KEY)? {
            Value::Null => Vec::new(),
            Value::Mapping(tokens) => parse_entries(&tokens)?,
            _ => {
                return Err(Error::configuration(format!(
                    "`{TOKENS_KEY}` must be a mapping of token names; add tokens with \
                     `broker serve token add`"
                )));
            }
        };
        Ok(Tokens { entries })
    }

    /// Who presents `token`: its name and role, or `None` when no stored token is it. Every stored
    /// hash is compared, in constant time.
    pub fn verify(&self, token: &str) -> Option<&TokenInfo> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (info, hash) in &self.entries {
            if bool::from(presented.ct_eq(hash)) {
                found = Some(info);
            }
        }
        found
    }

    /// The tokens' names and roles.
    pub fn list(&self) -> Vec<TokenInfo> {
        self.entries.iter().map(|(info, _)| info.clone()).collect()
    }

    /// Whether there is no token (then every route but `/health` answers 401).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The tokens of a running server: those of the settings file, read again whenever the file
/// changed (it is replaced on every change, so its inode, size or time differ), so that a token
/// added or removed takes effect at the next request, without a restart.
#[derive(Debug)]
pub(crate) struct TokenSource {
    file: SettingsFile,
    read: std::sync::Mutex<(Option<Stamp>, Arc<Tokens>)>,
}

/// What tells one version of the settings file from another.
type Stamp = (u64, u64, Option<std::time::SystemTime>);

fn stamp(path: &std::path::Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.ino(), meta.len(), meta.modified().ok()))
}

impl TokenSource {
    /// The tokens of `settings`' file, read now.
    ///
    /// # Errors
    /// The file cannot be read; a malformed entry.
    pub(crate) fn open(settings: &Settings) -> Result<Self> {
        let file = SettingsFile::in_directory(settings.directory());
        let stamp = stamp(file.path());
        let tokens = Tokens::from_file(&file)?;
        Ok(TokenSource {
            file,
            read: std::sync::Mutex::new((stamp, Arc::new(tokens))),
        })
    }

    /// The tokens as the settings file has them now; when it changed into something that cannot
    /// be read, the last tokens read (and an error in the log).
    pub(crate) fn current(&self) -> Arc<Tokens> {
        let now = stamp(self.file.path());
        let mut read = broker_core::sync::lock(&self.read);
        if now != read.0 {
            match Tokens::from_file(&self.file) {
                Ok(tokens) => *read = (now, Arc::new(tokens)),
                Err(e) => tracing::error!(
                    "the tokens of {} cannot be read, the ones read before stay in use: {}",
                    self.file.path().display(),
                    broker_core::error::chain(&e)
                ),
            }
        }
        Arc::clone(&read.1)
    }
}

fn parse_entries(tokens: &Mapping) -> Result<Vec<(TokenInfo, [u8; 32])>> {
    tokens
        .iter()
        .map(|(name, entry)| {
            let name = broker_core::value::scalar_text(name).unwrap_or_default();
            let bad = |what: &str| {
                Error::configuration(format!(
                    "token `{name}` in `{TOKENS_KEY}` {what}; remove it with `broker serve token \
                     remove {name}` and add it again"
                ))
            };
            let field = |key: &str| {
                entry
                    .get(key)
                    .and_then(broker_core::value::scalar_text)
                    .ok_or_else(|| bad(&format!("has no `{key}`")))
            };
            let role: Role = field("role")?
                .parse()
                .map_err(|_| bad("has an unknown role"))?;
            let hash = decode_hash(&field("sha256")?).ok_or_else(|| bad("has a malformed hash"))?;
            Ok((TokenInfo { name, role }, hash))
        })
        .collect()
}

fn decode_hash(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The names and roles of the tokens in the settings file.
///
/// # Errors
/// The file cannot be read; a malformed entry (as [`Tokens::from_settings`]).
pub fn list_tokens(file: &SettingsFile) -> Result<Vec<TokenInfo>> {
    match file.read_at(TOKENS_KEY)? {
        Value::Mapping(tokens) => Ok(parse_entries(&tokens)?
            .into_iter()
            .map(|(info, _)| info)
            .collect()),
        _ => Ok(Vec::new()),
    }
}

/// Adds a token `name` with `role` to the settings file and returns it: the only time it is
/// shown. Only its SHA-256 is stored.
///
/// # Errors
/// [`Error::Usage`] for a name that is not letters, digits, `-` and `_`; [`Error::User`] when a
/// token of that name exists; the file cannot be read or written; no randomness.
pub fn add_token(file: &SettingsFile, name: &str, role: Role) -> Result<SecretString> {
    check_token_name(name)?;
    let mut tokens = stored_tokens(file)?;
    if tokens.contains_key(name) {
        return Err(Error::user(format!(
            "a token named `{name}` exists; remove it first with `broker serve token remove {name}`"
        )));
    }
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).map_err(|e| {
        Error::io_without_path("making a token", std::io::Error::other(e.to_string()))
    })?;
    let token = SecretString::from(format!("broker_{}", encode_hex(&random)));
    let hash = encode_hex(&Sha256::digest(token.expose_secret().as_bytes()));
    let mut entry = Mapping::new();
    entry.insert("role".into(), role.as_str().into());
    entry.insert("sha256".into(), hash.into());
    tokens.insert(name.to_owned(), Value::Mapping(entry));
    write_tokens(file, tokens)?;
    Ok(token)
}

/// Removes the token `name` from the settings file.
///
/// # Errors
/// [`Error::User`] when there is no such token, naming those there are; the file cannot be read
/// or written.
pub fn remove_token(file: &SettingsFile, name: &str) -> Result<()> {
    let mut tokens = stored_tokens(file)?;
    if tokens.remove(name).is_none() {
        let names: Vec<&str> = tokens.keys().map(String::as_str).collect();
        let known = if names.is_empty() {
            "there are no tokens".to_owned()
        } else {
            format!("the tokens are {}", names.join(", "))
        };
        return Err(Error::user(format!("no token named `{name}`; {known}")));
    }
    write_tokens(file, tokens)
}

fn stored_tokens(file: &SettingsFile) -> Result<BTreeMap<String, Value>> {
    match file.read_at(TOKENS_KEY)? {
        Value::Mapping(tokens) => Ok(tokens
            .into_iter()
            .filter_map(|(k, v)| Some((broker_core::value::scalar_text(&k)?, v)))
            .collect()),
        _ => Ok(BTreeMap::new()),
    }
}

fn write_tokens(file: &SettingsFile, tokens: BTreeMap<String, Value>) -> Result<()> {
    let mapping: Mapping = tokens.into_iter().map(|(k, v)| (k.into(), v)).collect();
    file.set(TOKENS_KEY, Value::Mapping(mapping))?;
    Ok(())
}

fn check_token_name(name: &str) -> Result<()> {
    let fine = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if fine {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "invalid token name `{name}`: use 1 to 64 letters, digits, `-` and `_`"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings_of(file: &SettingsFile, dir: &std::path::Path) -> Settings {
        let text = std::fs::read_to_string(file.path()).unwrap();
        Settings::from_yaml(dir, &text).unwrap()
    }

    #[test]
    fn a_token_is_stored_as_its_hash_and_verified_by_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = SettingsFile::in_directory(dir.path());
        std::fs::write(file.path(), "# mine\nlogging: {console_level: info}\n").unwrap();
        let ci = add_token(&file, "ci", Role::Write).unwrap();
        let boss = add_token(&file, "boss", Role::Admin).unwrap();
        assert_ne!(ci.expose_secret(), boss.expose_secret());
        assert!(ci.expose_secret().starts_with("broker_"));
        assert_eq!(ci.expose_secret().len(), "broker_".len() + 64);
        let text = std::fs::read_to_string(file.path()).unwrap();
        assert!(!text.contains(ci.expose_secret()), "{text}");
        assert!(text.contains(&encode_hex(&Sha256::digest(ci.expose_secret().as_bytes()))));
        assert!(text.contains("console_level: info"), "{text}");

        let tokens = Tokens::from_settings(&settings_of(&file, dir.path())).unwrap();
        let who = tokens.verify(ci.expose_secret()).unwrap();
        assert_eq!((who.name.as_str(), who.role), ("ci", Role::Write));
        assert_eq!(
            tokens.verify(boss.expose_secret()).unwrap().role,
            Role::Admin
        );
        assert!(tokens.verify("broker_0000").is_none());
        assert!(tokens.verify("").is_none());
        assert!(!format!("{tokens:?}").contains("sha256"));
        assert_eq!(
            list_tokens(&file).unwrap(),
            vec![
                TokenInfo {
                    name: "boss".into(),
                    role: Role::Admin
                },
                TokenInfo {
                    name: "ci".into(),
                    role: Role::Write
                },
            ]
        );
    }

    #[test]
    fn names_are_checked_and_taken_once_and_removal_names_what_there_is() {
        let dir = tempfile::tempdir().unwrap();
        let file = SettingsFile::in_directory(dir.path());
        assert!(add_token(&file, "a.b", Role::Read).is_err());
        assert!(add_token(&file, "", Role::Read).is_err());
        add_token(&file, "ci", Role::Read).unwrap();
        assert_eq!(
            add_token(&file, "ci", Role::Admin).unwrap_err().to_string(),
            "a token named `ci` exists; remove it first with `broker serve token remove ci`"
        );
        assert_eq!(
            remove_token(&file, "cj").unwrap_err().to_string(),
            "no token named `cj`; the tokens are ci"
        );
        remove_token(&file, "ci").unwrap();
        assert!(list_tokens(&file).unwrap().is_empty());
        assert_eq!(
            remove_token(&file, "ci").unwrap_err().to_string(),
            "no token named `ci`; there are no tokens"
        );
    }

    #[test]
    fn malformed_entries_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let bad = |yaml: &str| {
            let settings = Settings::from_yaml(dir.path(), yaml).unwrap();
            Tokens::from_settings(&settings).unwrap_err().to_string()
        };
        assert!(bad("serve: {tokens: {x: {role: root, sha256: ab}}}\n").contains("unknown role"));
        assert!(bad("serve: {tokens: {x: {role: read, sha256: ab}}}\n").contains("malformed hash"));
        assert!(bad("serve: {tokens: {x: {sha256: ab}}}\n").contains("has no `role`"));
        assert!(bad("serve: {tokens: [1]}\n").contains("must be a mapping"));
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Read < Role::Write && Role::Write < Role::Admin);
        assert_eq!("Admin".parse::<Role>().unwrap(), Role::Admin);
        assert!("root".parse::<Role>().is_err());
    }
}
