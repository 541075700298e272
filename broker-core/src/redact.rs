//! Keeping secrets out of what broker shows, logs and writes: which keys hold secrets, masking their
//! values, and credentials written into URLs.
//!
//! One rule everywhere — settings, checkout arguments, nick values, host records, command output: a
//! key whose name contains `password`, `passwd`, `pword`, `token`, `secret`, `passphrase`,
//! `credential`, `api_key`/`apikey`, `private_key` or `authorization`, or that is `auth` or ends in
//! `_auth`/`-auth` or in `_key` (`ssh_key`, `access_key`, `validation_key`; but not a public
//! `host_key` or `public_key`) (in any case, `-` and `_` alike), holds a secret, and its value is shown as
//! [`MASK`]. A URL's user information
//! (`https://user:pw@host/`), in any value or message, is shown as `***`.
//!
//! This module only decides and rewrites; it never logs.

use std::borrow::Cow;

use serde_yaml::{Mapping, Value};

/// What a secret value is shown as.
pub const MASK: &str = "********";

const SECRET_MARKERS: &[&str] = &[
    "password",
    "passwd",
    "pword",
    "token",
    "secret",
    "passphrase",
    "credential",
    "api_key",
    "apikey",
    "private_key",
    "authorization",
];

/// Whether a key (of settings, arguments or a host record) holds a secret.
///
/// ```
/// use broker_core::redact::is_secret_key;
/// assert!(is_secret_key("host_password") && is_secret_key("API_Token"));
/// assert!(is_secret_key("db_passwd") && is_secret_key("api-key") && is_secret_key("x-auth"));
/// assert!(!is_secret_key("hostname") && !is_secret_key("auth_type"));
/// ```
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase().replace('-', "_");
    SECRET_MARKERS.iter().any(|m| key.contains(m))
        || key == "auth"
        || key.ends_with("_auth")
        || (key.ends_with("_key") && !key.ends_with("host_key") && !key.ends_with("public_key"))
}

/// Whether a value is the [`MASK`] that stands for a secret not shown or not stored.
pub fn is_masked(value: &Value) -> bool {
    value.as_str() == Some(MASK)
}

/// Whether the value under a secret-looking key is worth masking: empty values and structures (whose
/// own keys are looked at instead) are shown as they are.
fn maskable(value: &Value) -> bool {
    !matches!(value, Value::Null | Value::Mapping(_) | Value::Sequence(_))
        && value.as_str() != Some("")
        && !value.as_str().is_some_and(is_fingerprint)
}

/// Whether `text` is how broker shows a secret it keeps — `secret sha256:` and 16 hex digits of
/// its hash (a handoff target's Chef key) — which tells two secrets apart without showing either,
/// and is shown as it is.
fn is_fingerprint(text: &str) -> bool {
    text.strip_prefix("secret sha256:")
        .is_some_and(|hex| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The value with the value of every secret-looking key, at any depth, replaced by [`MASK`], and
/// the credentials of URLs in any text redacted ([`url_credentials`]).
///
/// ```
/// let args: serde_yaml::Value = serde_yaml::from_str("{workflow: w, host_password: pw}").unwrap();
/// let shown = broker_core::redact::mask(&args);
/// assert_eq!(shown["host_password"].as_str(), Some("********"));
/// assert_eq!(shown["workflow"].as_str(), Some("w"));
/// ```
pub fn mask(value: &Value) -> Value {
    match value {
        Value::Mapping(map) => Value::Mapping(mask_mapping(map)),
        Value::Sequence(items) => Value::Sequence(items.iter().map(mask).collect()),
        Value::Tagged(tagged) => Value::Tagged(Box::new(serde_yaml::value::TaggedValue {
            tag: tagged.tag.clone(),
            value: mask(&tagged.value),
        })),
        Value::String(text) => Value::String(url(text)),
        other => other.clone(),
    }
}

/// [`mask`] of a mapping.
pub fn mask_mapping(map: &Mapping) -> Mapping {
    map.iter()
        .map(|(k, v)| {
            let secret = k.as_str().is_some_and(is_secret_key) && maskable(v);
            let v = if secret {
                Value::String(MASK.into())
            } else {
                mask(v)
            };
            (k.clone(), v)
        })
        .collect()
}

/// Whether [`mask`] would change anything in the value.
pub fn has_secrets(value: &Value) -> bool {
    match value {
        Value::Mapping(map) => mapping_has_secrets(map),
        Value::Sequence(items) => items.iter().any(has_secrets),
        Value::Tagged(tagged) => has_secrets(&tagged.value),
        Value::String(text) => has_url_credentials(text),
        _ => false,
    }
}

/// Whether [`mask_mapping`] would change anything in the mapping.
pub fn mapping_has_secrets(map: &Mapping) -> bool {
    map.iter().any(|(k, v)| {
        (k.as_str().is_some_and(is_secret_key) && maskable(v) && !is_masked(v)) || has_secrets(v)
    })
}

/// The keys of a mapping (top level) whose value is the [`MASK`]: secrets that were not stored.
pub fn masked_keys(map: &Mapping) -> Vec<String> {
    map.iter()
        .filter(|(_, v)| is_masked(v))
        .filter_map(|(k, _)| k.as_str().map(str::to_owned))
        .collect()
}

/// [`mask`] of a JSON value, in place.
pub fn mask_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let maskable = match v {
                    serde_json::Value::Null
                    | serde_json::Value::Object(_)
                    | serde_json::Value::Array(_) => false,
                    serde_json::Value::String(s) => !s.is_empty(),
                    _ => true,
                };
                if is_secret_key(k) && maskable {
                    *v = serde_json::Value::String(MASK.into());
                } else {
                    mask_json(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(mask_json),
        serde_json::Value::String(text) if has_url_credentials(text) => *text = url(text),
        _ => {}
    }
}

/// The text with the user information of every URL in it (`scheme://user:password@host`) shown as
/// `***` (`scheme://***@host`). Used by broker's error messages and by providers for anything they
/// log or put into an error, so a password in `base_url` never reaches a terminal or a log file.
///
/// ```
/// use broker_core::redact::url_credentials;
/// assert_eq!(
///     url_credentials("cannot reach `https://alice:hunter2@tower.example.com/api/`"),
///     "cannot reach `https://***@tower.example.com/api/`"
/// );
/// assert_eq!(url_credentials("https://tower.example.com/"), "https://tower.example.com/");
/// ```
pub fn url_credentials(text: &str) -> Cow<'_, str> {
    if !text.contains("://") || !text.contains('@') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut redacted = false;
    while let Some(at) = rest.find("://") {
        let authority_start = at + 3;
        out.push_str(&rest[..authority_start]);
        rest = &rest[authority_start..];
        // The authority ends where the path, query or fragment begins, or where the text around the
        // URL resumes.
        let end = rest
            .find(|c: char| {
                matches!(
                    c,
                    '/' | '?' | '#' | '`' | '\'' | '"' | '<' | '>' | ',' | ';'
                ) || c.is_whitespace()
            })
            .unwrap_or(rest.len());
        if let Some(user_end) = rest[..end].rfind('@') {
            out.push_str("***");
            rest = &rest[user_end..];
            redacted = true;
        }
    }
    if !redacted {
        return Cow::Borrowed(text);
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Whether the text holds a URL with credentials in it.
pub fn has_url_credentials(text: &str) -> bool {
    matches!(url_credentials(text), Cow::Owned(_))
}

/// A URL (or any text) ready for a message: [`url_credentials`] as an owned string.
pub fn url(text: &str) -> String {
    url_credentials(text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_values_are_masked_at_any_depth_and_empty_ones_kept() {
        let v: Value = serde_yaml::from_str(
            "{a: 1, token: t, nested: {ssh_passphrase: p, list: [{secret_key: s}]}, password: '', pword: ~}",
        )
        .unwrap();
        let m = mask(&v);
        assert_eq!(
            serde_yaml::to_string(&m).unwrap(),
            "a: 1\ntoken: '********'\nnested:\n  ssh_passphrase: '********'\n  list:\n  - secret_key: '********'\npassword: ''\npword: null\n"
        );
        assert!(has_secrets(&v));
        assert!(!has_secrets(&m));
        let mut j: serde_json::Value = serde_json::to_value(&v).unwrap();
        mask_json(&mut j);
        assert_eq!(j, serde_json::to_value(&m).unwrap());
    }

    /// `has_secrets` says whether `mask` would change a value, wherever its only secret sits: in a
    /// list, behind a YAML tag, or as credentials in a URL.
    #[test]
    fn has_secrets_finds_a_lone_secret_wherever_mask_would_change_it() {
        for (yaml, secret) in [
            ("[{a: 1}, {token: t}]", true),
            ("[[x, {host_password: p}]]", true),
            ("!vault {password: p}", true),
            ("{list: [{api_key: k}]}", true),
            ("{url: 'https://alice:pw@tower.example.com/'}", true),
            ("'https://alice:pw@tower.example.com/'", true),
            ("[a, 'https://alice:pw@h/']", true),
            ("!url 'tcp://tok@h:2375'", true),
            ("[{a: 1}, {token: ''}]", false),
            ("!vault {user: u}", false),
            ("'https://tower.example.com/'", false),
            ("[1, true, ~, mail@example.com]", false),
        ] {
            let v: Value = serde_yaml::from_str(yaml).unwrap();
            assert_eq!(has_secrets(&v), secret, "{yaml}");
            assert_eq!(
                mask(&v) != v,
                secret,
                "mask and has_secrets disagree on {yaml}"
            );
            if !yaml.starts_with('!') {
                // The JSON twin masks the same values.
                let mut j: serde_json::Value = serde_json::to_value(&v).unwrap();
                mask_json(&mut j);
                assert_eq!(j, serde_json::to_value(mask(&v)).unwrap(), "{yaml}");
            }
        }
    }

    #[test]
    fn secret_looking_keys_beyond_passwords_and_tokens_are_secrets() {
        for key in [
            "api_key",
            "API-KEY",
            "apikey",
            "db_passwd",
            "x-auth",
            "auth",
            "proxy_auth",
            "aws_credentials",
            "ssh_private_key",
            "Authorization",
            "ssh_key",
            "SSH-KEY",
            "aws_access_key",
            "validation_key",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in [
            "auth_type",
            "author",
            "hostname",
            "key_name",
            "workflow",
            "authority",
            "host_key",
            "ssh_host_key",
            "public_key",
            "host_ssh_key_filename",
            "key",
        ] {
            assert!(!is_secret_key(key), "{key}");
        }
    }

    #[test]
    fn a_secrets_fingerprint_is_shown_as_it_is() {
        let config: Value = serde_yaml::from_str(
            "{validation_key: 'secret sha256:0123456789abcdef', password: 'secret sha256:xyz'}",
        )
        .unwrap();
        let shown = mask(&config);
        assert_eq!(
            shown["validation_key"].as_str(),
            Some("secret sha256:0123456789abcdef")
        );
        assert_eq!(shown["password"].as_str(), Some(MASK));
    }

    #[test]
    fn masked_keys_name_what_was_not_stored() {
        let m: Mapping = serde_yaml::from_str("{host_password: '********', workflow: w}").unwrap();
        assert_eq!(masked_keys(&m), ["host_password"]);
    }

    #[test]
    fn url_credentials_are_redacted_wherever_the_url_sits() {
        for (given, shown) in [
            ("https://u:pw@h/", "https://***@h/"),
            ("x `http://u:p@ss@h:80/a@b` y", "x `http://***@h:80/a@b` y"),
            ("tcp://tok@h:2375", "tcp://***@h:2375"),
            (
                "a https://u:1@h and ssh://v:2@i, done",
                "a https://***@h and ssh://***@i, done",
            ),
            ("no url: mail@example.com", "no url: mail@example.com"),
            ("https://h/users/@me", "https://h/users/@me"),
            ("https://h?x=a@b", "https://h?x=a@b"),
        ] {
            assert_eq!(url_credentials(given), shown, "{given}");
        }
    }
}
