//! `broker config validate`: the types and forms of the settings broker reads, each problem named by
//! its key and its line in the settings file. Nothing here touches the network: providers check
//! their own sections when they are built ([`crate::ProviderKind::build`]), through
//! [`ProviderConfig::setting_error`](super::ProviderConfig::setting_error).

use std::collections::HashMap;
use std::fmt;

use serde_yaml::Value;

use super::{Settings, get_ci};
use crate::value::scalar_text;

/// One thing wrong with the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The dotted key, as written in the file where it is there (`AnsibleTower.base_url`).
    pub key: String,
    /// Its line in the settings file, when it is written there (not set from the environment).
    pub line: Option<usize>,
    /// What is wrong and what would be right.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: `{}`: {}", self.key, self.message),
            None => write!(f, "`{}`: {}", self.key, self.message),
        }
    }
}

/// Where each key of a block-style YAML document is: lowercased dotted path → 1-based line. Keys
/// inside flow collections (`{a: 1}`) are not listed; [`line_in`] then falls back to their parent.
pub(crate) fn key_lines(text: &str) -> HashMap<String, usize> {
    let mut lines = HashMap::new();
    let mut open: Vec<(usize, String)> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let trimmed = raw.trim_start_matches([' ', '\u{feff}']);
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("---") {
            continue;
        }
        let mut indent = raw.len() - trimmed.len();
        let mut entry = trimmed;
        // `- key: value` (the old list form of `instances`): the key sits after the dash.
        while let Some(rest) = entry.strip_prefix("- ") {
            indent += 2;
            entry = rest.trim_start();
        }
        let Some(key) = mapping_key(entry) else {
            continue;
        };
        while open.last().is_some_and(|(i, _)| *i >= indent) {
            open.pop();
        }
        open.push((indent, key.to_lowercase()));
        let path: Vec<&str> = open.iter().map(|(_, k)| k.as_str()).collect();
        lines.entry(path.join(".")).or_insert(n + 1);
    }
    lines
}

/// The key of a `key: value` or `key:` line, unquoted.
fn mapping_key(entry: &str) -> Option<String> {
    let (key, _) = if let Some(rest) = entry.strip_prefix('"') {
        let end = rest.find('"')?;
        let after = &rest[end + 1..];
        after
            .starts_with(':')
            .then_some((rest[..end].to_owned(), ()))?
    } else if let Some(rest) = entry.strip_prefix('\'') {
        let end = rest.find('\'')?;
        let after = &rest[end + 1..];
        after
            .starts_with(':')
            .then_some((rest[..end].to_owned(), ()))?
    } else {
        let colon = entry
            .find(": ")
            .or_else(|| entry.ends_with(':').then(|| entry.len() - 1))?;
        let key = &entry[..colon];
        if key.starts_with(['{', '[', '&', '*', '!', '|', '>']) {
            return None;
        }
        (key.trim().to_owned(), ())
    };
    Some(key)
}

/// The line of `path` (dotted, any case) in `lines`, else of the nearest parent written there.
pub(crate) fn line_in(lines: &HashMap<String, usize>, path: &str) -> Option<usize> {
    let mut path = path.to_lowercase();
    loop {
        if let Some(line) = lines.get(&path) {
            return Some(*line);
        }
        let (parent, _) = path.rsplit_once('.')?;
        path = parent.to_owned();
    }
}

/// Whether a value is one of the example file's placeholders (`"<password>"`,
/// `"https://<ansible tower host>/"`): text between `<` and `>`.
pub fn is_placeholder(value: &Value) -> bool {
    value.as_str().is_some_and(|s| {
        s.find('<')
            .is_some_and(|open| s[open + 1..].find('>').is_some_and(|close| close > 0))
    })
}

const LOG_LEVELS: &[&str] = &[
    "error", "warning", "warn", "info", "debug", "trace", "silent", "off",
];

impl Settings {
    /// The line of a dotted key in the settings file (of its nearest parent when the key is written
    /// inside a flow mapping), if the file has it.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        line_in(&self.lines, path)
    }

    /// A problem with the key at `path`, located in the file.
    pub fn problem(&self, path: &str, message: impl Into<String>) -> Problem {
        Problem {
            key: path.to_owned(),
            line: self.line_of(path),
            message: message.into(),
        }
    }

    /// A configuration error with the key at `path`, located in the settings file as a provider's
    /// are ([`ProviderConfig::setting_error`](super::ProviderConfig::setting_error)):
    /// `` `nicks.rhel9.lease` (broker_settings.yaml line 5): … ``.
    pub fn setting_error(&self, path: &str, message: impl fmt::Display) -> crate::Error {
        crate::Error::configuration(match self.line_of(path) {
            Some(line) => format!("`{path}` ({} line {line}): {message}", super::SETTINGS_FILE),
            None => format!("`{path}`: {message}"),
        })
    }

    /// The problems of the settings broker itself reads: `logging`, durations, `thread_limit`, the
    /// inventory views, `nicks` (their leases too), `provider_labels` and `ssh`; and any example
    /// placeholder left in them.
    pub fn base_problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        self.log_level_problems(&mut out);
        self.number_problems(&mut out);
        self.shape_problems(&mut out);
        self.nick_lease_problems(&mut out);
        self.ssh_problems(&mut out);
        for key in ["logging", "ssh"] {
            if let Some(v) = self.get(key) {
                placeholders(self, key, v, &mut out);
            }
        }
        out
    }

    /// `logging.console_level` and `logging.file_level`: known levels.
    fn log_level_problems(&self, out: &mut Vec<Problem>) {
        for key in ["logging.console_level", "logging.file_level"] {
            match self.get(key) {
                None | Some(Value::Null) => {}
                Some(v) => {
                    let text = scalar_text(v).unwrap_or_default().to_ascii_lowercase();
                    if !LOG_LEVELS.contains(&text.as_str()) {
                        out.push(self.problem(
                            key,
                            format!(
                                "`{}` is not a log level; use error, warning, info, debug, trace or silent",
                                shown(v)
                            ),
                        ));
                    }
                }
            }
        }
    }

    /// Durations, `reap_on_start` and `thread_limit`.
    fn number_problems(&self, out: &mut Vec<Problem>) {
        for key in [
            "checkin_timeout",
            "inventory_lock_timeout",
            "keep_on_failure",
        ] {
            if self.get_duration(key, std::time::Duration::ZERO).is_err() {
                out.push(self.problem(
                    key,
                    format!(
                        "`{}` is not a duration; write seconds (`90`) or `45s`, `30m`, `2h`, `1d`",
                        self.get(key).map(shown).unwrap_or_default()
                    ),
                ));
            }
        }
        if self.reap_on_start().is_err() {
            out.push(self.problem(
                "reap_on_start",
                format!(
                    "`{}` is not true or false",
                    self.get("reap_on_start").map(shown).unwrap_or_default()
                ),
            ));
        }
        match self.get("thread_limit") {
            None | Some(Value::Null) => {}
            Some(_) if self.get_u64("thread_limit").is_some_and(|n| n > 0) => {}
            Some(v) => out.push(self.problem(
                "thread_limit",
                format!("`{}` is not a positive whole number (or null)", shown(v)),
            )),
        }
    }

    /// The sections that must be mappings, and each nick.
    fn shape_problems(&self, out: &mut Vec<Problem>) {
        for (key, what) in [
            (
                "inventory_fields",
                "a mapping of column titles to field specs",
            ),
            ("provider_labels", "a mapping of label names to values"),
            ("nicks", "a mapping of nick names to argument mappings"),
            ("ssh", "a mapping"),
            ("logging", "a mapping"),
        ] {
            if let Some(v) = self.get(key).filter(|v| !v.is_null() && !v.is_mapping()) {
                out.push(self.problem(key, format!("`{}` is not {what}", shown(v))));
            }
        }
        if let Some(Value::Mapping(nicks)) = self.get("nicks") {
            for (name, args) in nicks {
                if !args.is_mapping() {
                    let name = scalar_text(name).unwrap_or_default();
                    out.push(self.problem(
                        &format!("nicks.{name}"),
                        "a nick must be a mapping of arguments",
                    ));
                }
            }
        }
    }

    /// Each nick's `lease`: a duration broker gives ([`crate::lease::Lease`]).
    fn nick_lease_problems(&self, out: &mut Vec<Problem>) {
        let Some(Value::Mapping(nicks)) = self.get("nicks") else {
            return;
        };
        for (name, args) in nicks {
            let lease = args
                .as_mapping()
                .and_then(|a| a.get(crate::lease::fields::LEASE))
                .filter(|v| !v.is_null());
            if let Some(Err(e)) = lease.map(crate::lease::Lease::from_value) {
                let name = scalar_text(name).unwrap_or_default();
                out.push(self.problem(&format!("nicks.{name}.lease"), e.to_string()));
            }
        }
    }

    fn ssh_problems(&self, out: &mut Vec<Problem>) {
        if let Some(v) = self.get("ssh.host_ssh_port").filter(|v| !v.is_null()) {
            let ok = scalar_text(v)
                .and_then(|t| t.trim().parse::<u32>().ok())
                .is_some_and(|p| (1..=65535).contains(&p));
            if !ok {
                out.push(self.problem(
                    "ssh.host_ssh_port",
                    format!("`{}` is not a port number (1-65535)", shown(v)),
                ));
            }
        }
        if let Some(v) = self
            .get("ssh.host_connection_timeout")
            .filter(|v| !v.is_null())
        {
            let ok = scalar_text(v).is_some_and(|t| crate::time::parse_duration(&t).is_ok());
            if !ok {
                out.push(self.problem(
                    "ssh.host_connection_timeout",
                    format!(
                        "`{}` is not a duration; write seconds (`60`) or `2m`",
                        shown(v)
                    ),
                ));
            }
        }
        if let Some(v) = self.get("ssh.host_key_checking").filter(|v| !v.is_null()) {
            let text = scalar_text(v).unwrap_or_default().to_ascii_lowercase();
            if !["accept-new", "strict", "off", ""].contains(&text.as_str()) {
                out.push(self.problem(
                    "ssh.host_key_checking",
                    format!("`{}` is not one of accept-new, strict, off", shown(v)),
                ));
            }
        }
        for key in ["ssh.host_ipv6", "ssh.host_ipv4_fallback"] {
            if let Some(v) = self.get(key).filter(|v| !v.is_null() && !v.is_bool()) {
                out.push(self.problem(key, format!("`{}` is not true or false", shown(v))));
            }
        }
    }

    /// The example placeholders left in a provider's section: its shared keys and those of
    /// `instance` (every instance when `None`).
    pub fn provider_problems(&self, provider: &str, instance: Option<&str>) -> Vec<Problem> {
        let mut out = Vec::new();
        let Some(Value::Mapping(section)) = get_ci(&self.raw, provider) else {
            return out;
        };
        for (key, value) in section {
            let Some(key) = scalar_text(key) else {
                continue;
            };
            let path = format!("{provider}.{key}");
            if key.eq_ignore_ascii_case("instances") {
                if let Value::Mapping(instances) = value {
                    for (name, settings) in instances {
                        let name = scalar_text(name).unwrap_or_default();
                        if instance.is_none_or(|i| i == name) {
                            placeholders(self, &format!("{path}.{name}"), settings, &mut out);
                        }
                    }
                }
                continue;
            }
            placeholders(self, &path, value, &mut out);
        }
        out
    }
}

/// Every example placeholder in `value` (at `path`), as problems.
fn placeholders(settings: &Settings, path: &str, value: &Value, out: &mut Vec<Problem>) {
    match value {
        Value::Mapping(map) => {
            for (k, v) in map {
                if let Some(k) = scalar_text(k) {
                    placeholders(settings, &format!("{path}.{k}"), v, out);
                }
            }
        }
        v if is_placeholder(v) => {
            let key = path.rsplit('.').next().unwrap_or(path);
            let shown_value = if crate::redact::is_secret_key(key) {
                crate::redact::MASK.to_owned()
            } else {
                shown(v)
            };
            out.push(settings.problem(
                path,
                format!(
                    "`{shown_value}` is the example's placeholder; set a real value or remove the key"
                ),
            ));
        }
        _ => {}
    }
}

/// A value as written in a message.
pub(super) fn shown(v: &Value) -> String {
    let text = scalar_text(v).unwrap_or_else(|| {
        serde_yaml::to_string(v)
            .unwrap_or_default()
            .trim()
            .to_owned()
    });
    crate::redact::url(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_lines_follow_indentation_lists_and_quotes() {
        let text = "\
# comment
logging:
    console_level: loud
AnsibleTower:
    base_url: x
    instances:
        prod:
            base_url: y
        'stage': {base_url: z}
Container:
    instances:
    -   docker:
            host: h
";
        let lines = key_lines(text);
        assert_eq!(line_in(&lines, "logging.console_level"), Some(3));
        assert_eq!(line_in(&lines, "AnsibleTower.base_url"), Some(5));
        assert_eq!(
            line_in(&lines, "ansibletower.instances.prod.base_url"),
            Some(8)
        );
        assert_eq!(
            line_in(&lines, "AnsibleTower.instances.stage.base_url"),
            Some(9)
        );
        assert_eq!(line_in(&lines, "Container.instances.docker.host"), Some(13));
        assert_eq!(line_in(&lines, "nicks.x"), None);
    }

    #[test]
    fn placeholders_are_text_in_angle_brackets() {
        for p in [
            "<password>",
            "https://<ansible tower host>/",
            "</path/to/the/ssh-key>",
        ] {
            assert!(is_placeholder(&Value::from(p)), "{p}");
        }
        // `<>` holds no text: not a placeholder.
        for v in ["a < b", "x>y<", "<>", "", "https://tower.example.com/"] {
            assert!(!is_placeholder(&Value::from(v)), "{v}");
        }
    }

    /// Comments that read like keys, a list at its parent key's indentation and double-quoted keys
    /// still place each key on its own line.
    #[test]
    fn key_lines_skip_comments_and_place_top_level_lists_and_double_quoted_keys() {
        let text = "\
logging:
# note: a comment that reads like a key
    console_level: loud
instances:
- docker:
    host: h
\"quoted key\":
    inner: 1
";
        let lines = key_lines(text);
        assert_eq!(line_in(&lines, "logging.console_level"), Some(3));
        assert_eq!(line_in(&lines, "instances.docker.host"), Some(6));
        assert_eq!(line_in(&lines, "quoted key.inner"), Some(8));
        assert_eq!(lines.len(), 7, "{lines:?}");
    }

    fn settings(yaml: &str) -> Settings {
        Settings::from_yaml("/nonexistent-broker-directory", yaml).unwrap()
    }

    fn problem(key: &str, line: usize, message: &str) -> Problem {
        Problem {
            key: key.to_owned(),
            line: Some(line),
            message: message.to_owned(),
        }
    }

    #[test]
    fn validate_names_unknown_log_levels_only() {
        let found = settings(
            "\
logging:
    console_level: loud
    file_level: DEBUG
",
        )
        .base_problems();
        assert_eq!(
            found,
            [problem(
                "logging.console_level",
                2,
                "`loud` is not a log level; use error, warning, info, debug, trace or silent"
            )]
        );
    }

    #[test]
    fn validate_names_bad_durations_and_thread_limits() {
        let found = settings(
            "\
checkin_timeout: soon
thread_limit: 0
",
        )
        .base_problems();
        assert_eq!(
            found,
            [
                problem(
                    "checkin_timeout",
                    1,
                    "`soon` is not a duration; write seconds (`90`) or `45s`, `30m`, `2h`, `1d`"
                ),
                problem(
                    "thread_limit",
                    2,
                    "`0` is not a positive whole number (or null)"
                ),
            ]
        );
        for ok in ["thread_limit: 1", "thread_limit: 4", "thread_limit: null"] {
            assert_eq!(settings(ok).base_problems(), [], "{ok}");
        }
    }

    #[test]
    fn validate_names_sections_that_are_not_mappings_and_bad_nicks() {
        let found = settings(
            "\
nicks:
    rhel: {workflow: deploy}
    bad: 5
provider_labels: none
logging:
    console_level: info
ssh:
inventory_fields: {Host: hostname}
",
        )
        .base_problems();
        assert_eq!(
            found,
            [
                problem(
                    "provider_labels",
                    4,
                    "`none` is not a mapping of label names to values"
                ),
                problem("nicks.bad", 3, "a nick must be a mapping of arguments"),
            ]
        );
    }

    #[test]
    fn validate_names_bad_ssh_settings() {
        let found = settings(
            "\
ssh:
    host_ssh_port: 70000
    host_connection_timeout: soon
    host_key_checking: maybe
    host_ipv6: 'yes'
    host_ipv4_fallback: 1
",
        )
        .base_problems();
        assert_eq!(
            found,
            [
                problem(
                    "ssh.host_ssh_port",
                    2,
                    "`70000` is not a port number (1-65535)"
                ),
                problem(
                    "ssh.host_connection_timeout",
                    3,
                    "`soon` is not a duration; write seconds (`60`) or `2m`"
                ),
                problem(
                    "ssh.host_key_checking",
                    4,
                    "`maybe` is not one of accept-new, strict, off"
                ),
                problem("ssh.host_ipv6", 5, "`yes` is not true or false"),
                problem("ssh.host_ipv4_fallback", 6, "`1` is not true or false"),
            ]
        );
    }

    #[test]
    fn validate_accepts_good_ssh_settings() {
        let found = settings(
            "\
ssh:
    host_ssh_port: 2222
    host_connection_timeout: 2m
    host_key_checking: Strict
    host_ipv6: true
    host_ipv4_fallback: false
",
        )
        .base_problems();
        assert_eq!(found, []);
    }

    #[test]
    fn validate_names_placeholders_inside_sections_masking_secrets() {
        let found = settings(
            "\
ssh:
    host_username: '<user>'
    host_password: '<password>'
",
        )
        .base_problems();
        assert_eq!(
            found,
            [
                problem(
                    "ssh.host_username",
                    2,
                    "`<user>` is the example's placeholder; set a real value or remove the key"
                ),
                problem(
                    "ssh.host_password",
                    3,
                    "`********` is the example's placeholder; set a real value or remove the key"
                ),
            ]
        );
    }

    #[test]
    fn validate_names_placeholders_of_the_chosen_instance_only() {
        let s = settings(
            "\
AnsibleTower:
    base_url: '<url>'
    instances:
        prod:
            host: '<prod host>'
        stage:
            host: '<stage host>'
",
        );
        let message = |v: &str| {
            format!("`{v}` is the example's placeholder; set a real value or remove the key")
        };
        let shared = problem("AnsibleTower.base_url", 2, &message("<url>"));
        let prod = problem(
            "AnsibleTower.instances.prod.host",
            5,
            &message("<prod host>"),
        );
        let stage = problem(
            "AnsibleTower.instances.stage.host",
            7,
            &message("<stage host>"),
        );
        assert_eq!(
            s.provider_problems("AnsibleTower", Some("prod")),
            [shared.clone(), prod.clone()]
        );
        assert_eq!(
            s.provider_problems("AnsibleTower", Some("stage")),
            [shared.clone(), stage.clone()]
        );
        assert_eq!(
            s.provider_problems("AnsibleTower", None),
            [shared, prod, stage]
        );
    }
}
