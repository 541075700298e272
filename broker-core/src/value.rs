//! Reading the YAML values broker passes around (settings, arguments, host records, provider answers).
//!
//! The helpers here exist once so that every crate reads a value the same way; they must not decide
//! anything about a setting or a record (that belongs to `settings`, `inventory` and the providers).

use serde_yaml::Value;

/// A scalar as text: a string as it is, a number or a boolean as written in YAML (`22`, `1.5`,
/// `true`); `None` for null, a list, a mapping or a tagged value.
///
/// ```
/// use broker_core::value::scalar_text;
///
/// assert_eq!(scalar_text(&serde_yaml::from_str("22").unwrap()).as_deref(), Some("22"));
/// assert_eq!(scalar_text(&serde_yaml::from_str("[22]").unwrap()), None);
/// ```
pub fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A whole number that is not negative, from a number or from text (`22`, `' 22 '`): settings and
/// arguments written in YAML, on the command line or in the environment arrive as either.
///
/// ```
/// use broker_core::value::scalar_u64;
///
/// assert_eq!(scalar_u64(&serde_yaml::from_str("'22'").unwrap()), Some(22));
/// assert_eq!(scalar_u64(&serde_yaml::from_str("-1").unwrap()), None);
/// ```
pub fn scalar_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A number, from a number or from text (`0.5`, `'5'`), as [`scalar_u64`] reads whole numbers.
/// Callers that want a finite or positive number check that themselves.
pub fn scalar_f64(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A value (a YAML value, a provider's answer) as JSON, for payloads and the `--output-file`; null
/// when JSON cannot hold it (a mapping with a list for a key).
///
/// ```
/// let vars: serde_yaml::Value = serde_yaml::from_str("{port: 22}").unwrap();
/// assert_eq!(broker_core::value::to_json(&vars), serde_json::json!({"port": 22}));
/// ```
pub fn to_json(value: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

/// A value (JSON from an API, an engine's description) as YAML, for records and results; null when
/// it cannot be written as YAML.
///
/// ```
/// let answer = serde_json::json!({"port": 22});
/// let port = broker_core::value::to_yaml(&answer)["port"].as_u64();
/// assert_eq!(port, Some(22));
/// ```
pub fn to_yaml(value: &impl serde::Serialize) -> Value {
    serde_yaml::to_value(value).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Value {
        serde_yaml::from_str(text).unwrap()
    }

    #[test]
    fn scalars_read_as_written_and_the_rest_is_none() {
        assert_eq!(scalar_text(&yaml("'a b'")).as_deref(), Some("a b"));
        assert_eq!(scalar_text(&yaml("''")).as_deref(), Some(""));
        assert_eq!(scalar_text(&yaml("22")).as_deref(), Some("22"));
        assert_eq!(scalar_text(&yaml("-3")).as_deref(), Some("-3"));
        assert_eq!(scalar_text(&yaml("1.5")).as_deref(), Some("1.5"));
        assert_eq!(scalar_text(&yaml("true")).as_deref(), Some("true"));
        assert_eq!(scalar_text(&yaml("false")).as_deref(), Some("false"));
        for other in ["~", "[1]", "{a: 1}", "!tag 1"] {
            assert_eq!(scalar_text(&yaml(other)), None, "{other}");
        }
    }

    #[test]
    fn numbers_read_from_numbers_and_from_text() {
        assert_eq!(scalar_u64(&yaml("22")), Some(22));
        assert_eq!(scalar_u64(&yaml("' 22 '")), Some(22));
        for not_whole in ["-1", "1.5", "'x'", "true", "~", "[1]"] {
            assert_eq!(scalar_u64(&yaml(not_whole)), None, "{not_whole}");
        }
        assert_eq!(scalar_f64(&yaml("0.5")), Some(0.5));
        assert_eq!(scalar_f64(&yaml("' 5 '")), Some(5.0));
        assert_eq!(scalar_f64(&yaml("-2")), Some(-2.0));
        for not_a_number in ["'x'", "true", "~", "{a: 1}"] {
            assert_eq!(scalar_f64(&yaml(not_a_number)), None, "{not_a_number}");
        }
    }

    #[test]
    fn yaml_and_json_convert_both_ways_and_null_stands_for_what_json_cannot_hold() {
        let record = yaml("{name: a, port: 22, ok: true, tags: [x, ~], nested: {ratio: 1.5}}");
        let json = serde_json::json!({
            "name": "a", "port": 22, "ok": true, "tags": ["x", null], "nested": {"ratio": 1.5}
        });
        assert_eq!(to_json(&record), json);
        assert_eq!(to_yaml(&json), record);
        assert_eq!(to_json(&yaml("{[1]: a}")), serde_json::Value::Null);
    }
}
