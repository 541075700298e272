//! Readers of single settings, for the fields of a [`ProviderSettings`](super::ProviderSettings)
//! struct: `#[serde(deserialize_with = "field::seconds")]` on an `Option<Duration>` field.
//!
//! They take what the settings file and the environment give for the same thing — a number written
//! as a number or as text (`BROKER_ANSIBLETOWER__WORKFLOW_TIMEOUT=60` and `workflow_timeout: "60"`),
//! a boolean as `true` or `yes` — and read null as unset. Anything else is an error saying what the
//! value should be; the key and its line are added by
//! [`ProviderSettings::from_section`](super::ProviderSettings::from_section). A secret's value is never
//! shown in an error.

use std::time::Duration;

use secrecy::SecretString;
use serde::de::{Deserialize, Deserializer, Error as _};
use serde_yaml::Value;

use super::validate::shown;
use crate::value::{scalar_f64, scalar_text, scalar_u64};

/// The value, `None` for null.
fn value<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Ok(Some(Value::deserialize(deserializer)?).filter(|v| !v.is_null()))
}

/// Text: a string, or a number or boolean as written.
///
/// # Errors
/// A list or mapping.
pub fn text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    value(deserializer)?
        .map(|v| {
            scalar_text(&v).ok_or_else(|| D::Error::custom(format!("`{}` is not text", shown(&v))))
        })
        .transpose()
}

/// A secret, as [`text`]; its value never appears in an error.
///
/// # Errors
/// A list or mapping.
pub fn secret<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SecretString>, D::Error> {
    value(deserializer)?
        .map(|v| {
            scalar_text(&v)
                .map(SecretString::from)
                .ok_or_else(|| D::Error::custom("must be text (its value is not shown: a secret)"))
        })
        .transpose()
}

/// A whole number, not negative.
///
/// # Errors
/// Anything else.
pub fn whole<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    value(deserializer)?
        .map(|v| {
            scalar_u64(&v)
                .ok_or_else(|| D::Error::custom(format!("`{}` is not a whole number", shown(&v))))
        })
        .transpose()
}

/// A number of seconds, fractions allowed (`5`, `0.5`).
///
/// # Errors
/// Anything but a number that is not negative.
pub fn seconds<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    value(deserializer)?
        .map(|v| {
            scalar_f64(&v)
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| {
                    D::Error::custom(format!("`{}` is not a number of seconds", shown(&v)))
                })
        })
        .transpose()
}

/// A duration: whole seconds (`90`) or `45s`, `30m`, `2h`, `1d`, `1h30m`.
///
/// # Errors
/// Anything else.
pub fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    value(deserializer)?
        .map(|v| {
            scalar_text(&v)
                .and_then(|t| crate::time::parse_duration(&t).ok())
                .ok_or_else(|| {
                    D::Error::custom(format!(
                        "`{}` is not a duration; write seconds (`90`) or `45s`, `30m`, `2h`, `1d`",
                        shown(&v)
                    ))
                })
        })
        .transpose()
}

/// A boolean: `true`/`false`, or as text `yes`/`no`, `on`/`off`, `1`/`0`.
///
/// # Errors
/// Anything else.
pub fn flag<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<bool>, D::Error> {
    value(deserializer)?
        .map(|v| {
            boolean(&v)
                .ok_or_else(|| D::Error::custom(format!("`{}` is not true or false", shown(&v))))
        })
        .transpose()
}

/// A boolean as [`flag`] reads it.
pub(super) fn boolean(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" | "on" => Some(true),
            "false" | "no" | "0" | "off" => Some(false),
            _ => None,
        },
        Value::Number(n) => n.as_u64().map(|n| n != 0),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each reader on one value, as `Ok(read)` or `Err(message)`.
    fn read<T>(
        reader: fn(Value) -> Result<Option<T>, serde_yaml::Error>,
        yaml: &str,
    ) -> Result<Option<T>, String> {
        reader(serde_yaml::from_str(yaml).unwrap()).map_err(|e| e.to_string())
    }

    #[test]
    fn seconds_accept_numbers_and_text_with_fractions() {
        assert_eq!(read(seconds, "5"), Ok(Some(Duration::from_secs(5))));
        assert_eq!(
            read(seconds, "'0.25'"),
            Ok(Some(Duration::from_millis(250)))
        );
        assert_eq!(read(seconds, "null"), Ok(None));
        assert_eq!(
            read(seconds, "soon"),
            Err("`soon` is not a number of seconds".into())
        );
        assert_eq!(
            read(seconds, "-1"),
            Err("`-1` is not a number of seconds".into())
        );
    }

    #[test]
    fn numbers_and_booleans_written_as_text_are_read() {
        assert_eq!(read(whole, "'50'"), Ok(Some(50)));
        assert_eq!(read(whole, "50"), Ok(Some(50)));
        assert_eq!(
            read(whole, "1.5"),
            Err("`1.5` is not a whole number".into())
        );
        assert_eq!(read(flag, "yes"), Ok(Some(true)));
        assert_eq!(read(flag, "'0'"), Ok(Some(false)));
        assert_eq!(
            read(flag, "maybe"),
            Err("`maybe` is not true or false".into())
        );
        assert_eq!(read(text, "9.4"), Ok(Some("9.4".into())));
        assert_eq!(read(text, "[a]"), Err("`- a` is not text".into()));
        assert_eq!(read(duration, "2h"), Ok(Some(Duration::from_secs(7200))));
        assert_eq!(read(duration, "90"), Ok(Some(Duration::from_secs(90))));
        assert!(
            read(duration, "soon")
                .unwrap_err()
                .starts_with("`soon` is not a duration")
        );
    }

    #[test]
    fn a_secret_is_read_as_text_and_never_shown() {
        use secrecy::ExposeSecret;
        let token = read(secret, "12345").unwrap().unwrap();
        assert_eq!(token.expose_secret(), "12345");
        let err = read(secret, "{hunter2: x}").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
