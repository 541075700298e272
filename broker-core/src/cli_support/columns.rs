//! The columns of `broker inventory`: field specs as the settings write them, `*_time` fields as dates
//! or durations, and broker's own state, age and lease columns.

use serde_yaml::Value;

use crate::record::{HostRecord, fields};

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
        Value::Null => None,
        other => crate::value::scalar_text(other).or_else(|| {
            serde_yaml::to_string(other)
                .ok()
                .map(|s| s.trim().replace('\n', " "))
        }),
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

/// The broker-only columns shown after the configured ones: state, age and what the lease has left
/// (`1h 59m`, `expired`; see [`crate::lease::remaining`]; `unreadable` for a lease that cannot be
/// read).
pub fn broker_columns(record: &HostRecord, now: i64) -> [String; 3] {
    let age = record
        .checkout_time()
        .map(|t| crate::time::format_duration_human((now - t).max(0) as u64))
        .unwrap_or_else(|| "-".into());
    let lease = match (record.expire_time(), record.unreadable_expire_time()) {
        (Some(at), _) => crate::lease::remaining(at, now),
        (None, Some(_)) => "unreadable".into(),
        (None, None) => "-".into(),
    };
    [record.state().to_string(), age, lease]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--details` shows every `*_time` field as a date or a duration, in nested mappings too, and
    /// every other field as it is.
    #[test]
    fn details_show_time_fields_as_dates_or_durations() {
        let record: Value = serde_yaml::from_str(
            "{name: n1, shutdown_time: '1765804090', job: {remove_time: 432000, id: 7}}",
        )
        .unwrap();
        let want: Value = serde_yaml::from_str(
            "{name: n1, shutdown_time: 'Dec 15, 2025 13:08 UTC', job: {remove_time: 5d, id: 7}}",
        )
        .unwrap();
        assert_eq!(humanize_times(&record), want);
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
        // An empty value, or one that says `Unknown`, is no value: the next alternative shows.
        let rec: HostRecord =
            serde_yaml::from_str("{name: n2, hostname: '', ip: Unknown}").unwrap();
        assert_eq!(
            FieldSpec::parse("hostname | name").render(&rec, &keys),
            "n2"
        );
        assert_eq!(FieldSpec::parse("ip | name").render(&rec, &keys), "n2");
        assert_eq!(
            FieldSpec::parse("ip hostname name").render(&rec, &keys),
            "n2"
        );
    }

    /// `$action` finds the action of a provider this build lacks by the Python broker's action
    /// keys; an empty alternative is none; a list or mapping shows on one line.
    #[test]
    fn field_specs_show_other_providers_actions_and_collections() {
        let rec: HostRecord = serde_yaml::from_str(
            "{name: n1, _broker_args: {ostack_image: rhel-9}, tags: [a, b], labels: {team: qe}}",
        )
        .unwrap();
        assert_eq!(FieldSpec::parse("$action").render(&rec, &[]), "rhel-9");
        assert_eq!(FieldSpec::parse("| name").render(&rec, &[]), "n1");
        assert_eq!(FieldSpec::parse("  |  ").render(&rec, &[]), "Unknown");
        assert_eq!(FieldSpec::parse("tags").render(&rec, &[]), "- a - b");
        assert_eq!(FieldSpec::parse("labels").render(&rec, &[]), "team: qe");
        let none: HostRecord = serde_yaml::from_str("{name: n2, _broker_args: {}}").unwrap();
        assert_eq!(FieldSpec::parse("$action | name").render(&none, &[]), "n2");
    }

    /// The state and age columns: the record's state and how long ago it was checked out (`-`
    /// without a checkout time, never negative).
    #[test]
    fn the_state_and_age_columns_say_what_the_record_does() {
        let now = 2_000_000_000;
        let columns = |fields: &str| {
            let rec: HostRecord =
                serde_yaml::from_str(&format!("{{hostname: a{fields}}}")).unwrap();
            broker_columns(&rec, now)
        };
        let [state, age, _] = columns(&format!(", _broker_checkout_time: {}", now - 3 * 3600));
        assert_eq!((state.as_str(), age.as_str()), ("ready", "3h"));
        let [_, age, _] = columns(&format!(", _broker_checkout_time: {}", now + 60));
        assert_eq!(age, "0s", "a checkout time ahead of the clock");
        let [_, age, _] = columns("");
        assert_eq!(age, "-");
        let [state, _, _] = columns(", _broker_state: pending");
        assert_eq!(state, "pending");
    }

    #[test]
    fn the_lease_column_counts_down_and_says_when_a_lease_cannot_be_read() {
        let now = 2_000_000_000;
        let lease = |fields: &str| {
            let rec: HostRecord =
                serde_yaml::from_str(&format!("{{hostname: a{fields}}}")).unwrap();
            broker_columns(&rec, now)[2].clone()
        };
        assert_eq!(
            lease(&format!(", _broker_expire_time: {}", now + 7_140)),
            "1h 59m"
        );
        assert_eq!(lease(&format!(", _broker_expire_time: {now}")), "expired");
        assert_eq!(lease(", _broker_expire_time: garbage"), "unreadable");
        assert_eq!(lease(""), "-");
    }
}
