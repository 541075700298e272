//! Handoff kinds as data: what a kind is called, what it does, and the keys a target of that kind
//! is configured with ([`KindSchema`], [`KeySpec`]), with the schemas of the five built-in kinds.
//!
//! A schema checks a target's configuration ([`KindSchema::validate`]): unknown keys (with a "did
//! you mean"), missing required keys and values its validation refuses are errors naming the key;
//! defaults fill what was not given; secret keys become [`ConfigValue::Secret`]. This module runs
//! nothing: running a handoff is `handoff::run` and `handoff::kinds`.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::handoff::target::{ConfigValue, TargetConfig};

/// A handoff kind (Razor's broker plugin): its name, what it hands a host to, and its keys.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct KindSchema {
    /// The kind's name, as `-p/--plugin` takes it: `puppet`.
    pub name: &'static str,
    /// What a host is handed to, one line.
    pub description: &'static str,
    /// The keys a target of this kind is configured with, in the order they are asked for.
    pub keys: &'static [KeySpec],
}

/// One key of a kind's configuration.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct KeySpec {
    /// The key: `server`.
    pub key: &'static str,
    /// What the value is, as a prompt says it.
    pub description: &'static str,
    /// An example value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub example: Option<&'static str>,
    /// Whether a target must have a value (a default counts).
    pub required: bool,
    /// The value taken when none is given. `None` leaves the key unset; `Some("")` sets it empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<&'static str>,
    /// Whether the value is a secret: kept as a secret type, shown only as a fingerprint, asked for
    /// without echo. Serialized as `sensitive` (output masks whatever a key named like `secret`
    /// holds, even a flag).
    #[serde(rename = "sensitive")]
    pub secret: bool,
    /// Whether the value spans lines (a key file); asked for until a blank line.
    pub multiline: bool,
    /// Which values are accepted.
    pub validation: Validation,
}

/// Which values a key accepts: a check and what it accepts, said in words for errors and listings.
#[derive(Clone, Copy)]
pub struct Validation {
    /// What is accepted, e.g. "a host name, or empty".
    pub accepts: &'static str,
    /// The check.
    pub check: fn(&str) -> bool,
}

impl fmt::Debug for Validation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.accepts)
    }
}

impl Serialize for Validation {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.accepts)
    }
}

impl Validation {
    /// Any text.
    pub const ANY: Validation = Validation {
        accepts: "any text",
        check: |_| true,
    };
    /// Any text but the empty one.
    pub const NOT_EMPTY: Validation = Validation {
        accepts: "any text but an empty one",
        check: |v| !v.trim().is_empty(),
    };
    /// A host name, or empty (Razor's puppet `server`).
    pub const HOSTNAME_OR_EMPTY: Validation = Validation {
        accepts: "a host name, or empty",
        check: |v| v.is_empty() || is_hostname(v),
    };
    /// A version as RubyGems writes one (`3.0.1_rc1`), or empty (Razor's puppet `broker_version`).
    pub const GEM_VERSION_OR_EMPTY: Validation = Validation {
        accepts: "a version such as 7.23.0 or 3.0.1_rc1, or empty for the latest",
        check: |v| v.is_empty() || is_gem_version(v),
    };
    /// A TCP port (1 to 65535), or empty for the default.
    pub const PORT_OR_EMPTY: Validation = Validation {
        accepts: "a port number from 1 to 65535, or empty",
        check: |v| v.is_empty() || v.parse::<u16>().is_ok_and(|port| port > 0),
    };
    /// `1.2.3` with an optional suffix after a dot (Razor's chef `chef_version`).
    pub const RELEASE_VERSION: Validation = Validation {
        accepts: "a version such as 18.2.7",
        check: is_release_version,
    };
    /// An `http://` or `https://` URL with a host.
    pub const URL: Validation = Validation {
        accepts: "an http:// or https:// URL",
        check: is_url,
    };
    /// A name of letters, digits, `.`, `_` and `-`.
    pub const WORD: Validation = Validation {
        accepts: "letters, digits, '.', '_' and '-'",
        check: |v| !v.is_empty() && v.chars().all(is_word_char),
    };
    /// A command name or an absolute path to one.
    pub const COMMAND: Validation = Validation {
        accepts: "a command name or an absolute path, without spaces",
        check: is_command,
    };
    /// A Chef run list: `role[x], recipe[y::z]`, or empty.
    pub const RUN_LIST_OR_EMPTY: Validation = Validation {
        accepts: "role[...] and recipe[...] items separated by commas, or empty",
        check: |v| v.trim().is_empty() || is_run_list(v),
    };
    /// Names separated by commas, or empty.
    pub const NAMES_OR_EMPTY: Validation = Validation {
        accepts: "names of letters, digits, '.', '_' and '-' separated by commas, or empty",
        check: |v| {
            v.trim().is_empty()
                || v.split(',')
                    .all(|n| !n.trim().is_empty() && n.trim().chars().all(is_word_char))
        },
    };
    /// A duration (`90`, `45s`, `30m`, `1h30m`), or empty for the default.
    pub const DURATION_OR_EMPTY: Validation = Validation {
        accepts: "a duration such as 90, 45s, 30m or 1h30m, or empty",
        check: |v| v.trim().is_empty() || crate::time::parse_duration(v).is_ok(),
    };
    /// A whole number (0 or more), or empty for the default.
    pub const COUNT_OR_EMPTY: Validation = Validation {
        accepts: "a whole number (0 or more), or empty",
        check: |v| v.trim().is_empty() || v.trim().parse::<u32>().is_ok(),
    };
    /// A YAML or JSON mapping, or empty.
    pub const MAPPING_OR_EMPTY: Validation = Validation {
        accepts: "a YAML or JSON mapping, or empty",
        check: |v| {
            v.trim().is_empty()
                || matches!(
                    serde_yaml::from_str::<serde_yaml::Value>(v),
                    Ok(serde_yaml::Value::Mapping(_))
                )
        },
    };
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Dot-separated labels of ASCII letters, digits and inner dashes (RFC 1123).
pub(crate) fn is_hostname(v: &str) -> bool {
    v.len() <= 253
        && v.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Digits, then dot-separated parts of letters, digits, `-` and `_`.
fn is_gem_version(v: &str) -> bool {
    let mut parts = v.split('.');
    let first = parts.next().unwrap_or_default();
    !first.is_empty()
        && first.chars().all(|c| c.is_ascii_digit())
        && parts.all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        })
}

fn is_release_version(v: &str) -> bool {
    let mut parts = v.splitn(4, '.');
    let numbers = (0..3).all(|_| {
        parts
            .next()
            .is_some_and(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    });
    numbers
        && parts.next().is_none_or(|rest| {
            !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
        })
}

fn is_url(v: &str) -> bool {
    let rest = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"));
    rest.is_some_and(|rest| {
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        !host.is_empty() && !v.chars().any(char::is_whitespace)
    })
}

fn is_command(v: &str) -> bool {
    !v.is_empty()
        && !v.chars().any(|c| c.is_whitespace() || c.is_control())
        && (v.starts_with('/') || !v.contains('/'))
}

fn is_run_list(v: &str) -> bool {
    v.split(',').all(|item| {
        let item = item.trim();
        ["role[", "recipe["].iter().any(|open| {
            item.strip_prefix(open)
                .and_then(|rest| rest.strip_suffix(']'))
                .is_some_and(|inner| !inner.is_empty() && !inner.contains(']'))
        })
    })
}

impl KeySpec {
    /// A key with only a description: optional, no default, plain, one line, any text.
    pub const fn new(key: &'static str, description: &'static str) -> Self {
        KeySpec {
            key,
            description,
            example: None,
            required: false,
            default: None,
            secret: false,
            multiline: false,
            validation: Validation::ANY,
        }
    }

    /// Checks one given value against the key's validation.
    ///
    /// # Errors
    /// [`Error::User`] naming the key, what it accepts and (unless secret) the value refused.
    pub fn check(&self, value: &str) -> Result<()> {
        if (self.validation.check)(value) {
            return Ok(());
        }
        let shown = if self.secret {
            String::new()
        } else {
            format!(" `{value}`")
        };
        Err(Error::user(format!(
            "invalid value{shown} for key `{}`: expected {}",
            self.key, self.validation.accepts
        )))
    }
}

/// The names of the [`RUN_KEYS`].
pub mod run {
    /// How long reaching the host may take (default 60s).
    pub const CONNECT_TIMEOUT: &str = "connect_timeout";
    /// How long one run may take before it is stopped (default 30m).
    pub const RUN_TIMEOUT: &str = "run_timeout";
    /// How often a transport error is tried again (default 3).
    pub const RETRIES: &str = "retries";
    /// The wait before each retry (default 5s).
    pub const RETRY_DELAY: &str = "retry_delay";
    /// How often a pending handoff is re-checked before it stays pending (default 0).
    pub const RECHECKS: &str = "rechecks";
    /// The wait before each re-check (default 30s).
    pub const RECHECK_INTERVAL: &str = "recheck_interval";
}

/// Keys a target of every kind takes, after its kind's own: how its runs are timed and retried
/// (see `handoff::run::RunPolicy`). Unset, each has its default.
pub const RUN_KEYS: &[KeySpec] = &[
    KeySpec {
        example: Some("60s"),
        validation: Validation::DURATION_OR_EMPTY,
        ..KeySpec::new(
            run::CONNECT_TIMEOUT,
            "How long reaching the host may take; default 60s",
        )
    },
    KeySpec {
        example: Some("30m"),
        validation: Validation::DURATION_OR_EMPTY,
        ..KeySpec::new(
            run::RUN_TIMEOUT,
            "How long one run may take before it is stopped; default 30m",
        )
    },
    KeySpec {
        example: Some("3"),
        validation: Validation::COUNT_OR_EMPTY,
        ..KeySpec::new(
            run::RETRIES,
            "How often a transport error is tried again; default 3",
        )
    },
    KeySpec {
        example: Some("5s"),
        validation: Validation::DURATION_OR_EMPTY,
        ..KeySpec::new(run::RETRY_DELAY, "The wait before each retry; default 5s")
    },
    KeySpec {
        example: Some("10"),
        validation: Validation::COUNT_OR_EMPTY,
        ..KeySpec::new(
            run::RECHECKS,
            "How often a pending handoff is checked again before it stays pending; default 0",
        )
    },
    KeySpec {
        example: Some("30s"),
        validation: Validation::DURATION_OR_EMPTY,
        ..KeySpec::new(
            run::RECHECK_INTERVAL,
            "The wait before each re-check; default 30s",
        )
    },
];

impl KindSchema {
    /// The kind's own keys, then the [`RUN_KEYS`] every kind takes.
    pub fn all_keys(&self) -> impl Iterator<Item = &KeySpec> {
        self.keys.iter().chain(RUN_KEYS)
    }

    /// The spec of `key`, if the kind has that key.
    pub fn key(&self, key: &str) -> Option<&KeySpec> {
        self.all_keys().find(|k| k.key == key)
    }

    /// Checks a configuration given as text values and makes it a [`TargetConfig`]: every key must
    /// be one of the kind's, every value pass its key's validation, every required key have a value
    /// (given or default); defaults fill keys not given.
    ///
    /// # Errors
    /// [`Error::User`] naming the first key at fault: unknown (with the closest key of the kind),
    /// missing, or refused by its validation.
    pub fn validate(&self, given: BTreeMap<String, ConfigValue>) -> Result<TargetConfig> {
        self.refuse_unknown(given.keys().map(String::as_str))?;
        let mut given = given;
        let mut config = TargetConfig::default();
        for spec in self.all_keys() {
            let value = match given.remove(spec.key) {
                Some(value) => value,
                None => match spec.default {
                    Some(default) => ConfigValue::new(default, spec.secret),
                    None if spec.required => {
                        return Err(Error::user(format!(
                            "missing required key `{}` of kind `{}` ({}); give it with `-c {}=VALUE`",
                            spec.key, self.name, spec.description, spec.key
                        )));
                    }
                    None => continue,
                },
            };
            spec.check(value.expose())?;
            config.insert(spec.key, ConfigValue::new(value.expose(), spec.secret));
        }
        Ok(config)
    }

    /// Refuses keys the kind does not have, naming the closest one it has.
    ///
    /// # Errors
    /// [`Error::User`] naming the first unknown key.
    pub fn refuse_unknown<'k>(&self, keys: impl IntoIterator<Item = &'k str>) -> Result<()> {
        let known: Vec<&str> = self.all_keys().map(|k| k.key).collect();
        for key in keys {
            if known.contains(&key) {
                continue;
            }
            let hint = match crate::spelling::misspelling_of(key, &known) {
                Some(near) => format!("; did you mean `{near}`?"),
                None if self.keys.is_empty() => format!(
                    "; kind `{}` takes only the run keys ({})",
                    self.name,
                    run_key_names()
                ),
                None => format!(
                    "; its keys are {} (and the run keys: {})",
                    self.keys
                        .iter()
                        .map(|k| k.key)
                        .collect::<Vec<_>>()
                        .join(", "),
                    run_key_names()
                ),
            };
            return Err(Error::user(format!(
                "unknown key `{key}` for kind `{}`{hint}",
                self.name
            )));
        }
        Ok(())
    }
}

fn run_key_names() -> String {
    RUN_KEYS
        .iter()
        .map(|k| k.key)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The schemas of the built-in kinds: noop, script, puppet, chef, ansible.
pub fn builtin() -> &'static [KindSchema] {
    &BUILTIN
}

/// The schema of the built-in kind `name` (in any case).
///
/// # Errors
/// [`Error::User`] naming the kinds there are, with the closest one.
pub fn builtin_kind(name: &str) -> Result<&'static KindSchema> {
    find_kind(builtin(), name)
}

/// The schema named `name` (in any case) among `kinds`.
///
/// # Errors
/// [`Error::User`] naming the kinds there are, with the closest one.
pub fn find_kind<'k>(kinds: &'k [KindSchema], name: &str) -> Result<&'k KindSchema> {
    if let Some(kind) = kinds.iter().find(|k| k.name.eq_ignore_ascii_case(name)) {
        return Ok(kind);
    }
    let names: Vec<&str> = kinds.iter().map(|k| k.name).collect();
    let hint = crate::spelling::misspelling_of(name, &names)
        .map(|near| format!("did you mean `{near}`? "))
        .unwrap_or_default();
    Err(Error::user(format!(
        "unknown handoff kind `{name}`; {hint}the kinds are {} (see `broker target kinds`)",
        names.join(", ")
    )))
}

static BUILTIN: [KindSchema; 5] = [NOOP, SCRIPT, PUPPET, CHEF, ANSIBLE];

/// Hands off to nothing: the host is marked handed off as it is.
pub const NOOP: KindSchema = KindSchema {
    name: "noop",
    description: "No handoff: the host is marked handed off as it is",
    keys: &[],
};

/// Uploads a script and a metadata JSON file, runs the script, judges by its exit status.
pub const SCRIPT: KindSchema = KindSchema {
    name: "script",
    description: "Upload a script and a metadata JSON file to the host, run the script, judge by its exit status",
    keys: &[
        KeySpec {
            example: Some("./bootstrap.sh"),
            required: true,
            validation: Validation::NOT_EMPTY,
            ..KeySpec::new("script", "Path of the script on this machine")
        },
        KeySpec {
            default: Some("/tmp/broker_handoff_script"),
            validation: Validation::NOT_EMPTY,
            ..KeySpec::new("script_path", "Where the script goes on the host")
        },
        KeySpec {
            example: Some("./data.tar"),
            ..KeySpec::new(
                "data",
                "Path of a data file on this machine to upload too; optional",
            )
        },
        KeySpec {
            default: Some("/tmp/broker_handoff_data"),
            validation: Validation::NOT_EMPTY,
            ..KeySpec::new("data_path", "Where the data file goes on the host")
        },
        KeySpec {
            default: Some("/tmp/broker_handoff_metadata.json"),
            validation: Validation::NOT_EMPTY,
            ..KeySpec::new(
                "metadata_path",
                "Where the metadata JSON file goes on the host (the script's first argument)",
            )
        },
        KeySpec {
            default: Some("/tmp/broker_handoff.log"),
            validation: Validation::NOT_EMPTY,
            ..KeySpec::new("log_path", "Where the script's output is kept on the host")
        },
        KeySpec {
            example: Some("bootstrap complete"),
            ..KeySpec::new(
                "success_marker",
                "Text a line of output must contain for the run to count as a success; optional",
            )
        },
        KeySpec {
            example: Some("waiting for approval"),
            ..KeySpec::new(
                "pending_marker",
                "Text in a line of output that means the handoff is pending, to be checked again; optional",
            )
        },
    ],
};

/// Installs the Puppet agent when absent, points it at the server and runs it.
pub const PUPPET: KindSchema = KindSchema {
    name: "puppet",
    description: "Puppet server: install the agent when absent, point it at the server, run `puppet agent -t`",
    keys: &[
        KeySpec {
            example: Some("puppet.example.com"),
            default: Some(""),
            validation: Validation::HOSTNAME_OR_EMPTY,
            ..KeySpec::new(
                "server",
                "Host name of the Puppet server, also the CA server; empty for Puppet's default",
            )
        },
        KeySpec {
            example: Some("7.23.0"),
            default: Some(""),
            validation: Validation::GEM_VERSION_OR_EMPTY,
            ..KeySpec::new(
                "broker_version",
                "Puppet version to install when the agent is absent; empty for the latest",
            )
        },
        KeySpec {
            example: Some("8140"),
            validation: Validation::PORT_OR_EMPTY,
            ..KeySpec::new(
                "server_port",
                "Port of the Puppet server, also the CA's; optional, empty for Puppet's default 8140",
            )
        },
        KeySpec {
            example: Some(
                "ssh puppet.example.com sudo puppetserver ca clean --certname \"$BROKER_PUPPET_CERTNAME\"",
            ),
            ..KeySpec::new(
                "ca_clean_command",
                "Command run on this machine at check-in to clean the node's certificate from the CA \
                 (its name in $BROKER_PUPPET_CERTNAME); optional: without it the certificate stays",
            )
        },
    ],
};

/// Installs Chef when absent, registers with the server and runs chef-client.
pub const CHEF: KindSchema = KindSchema {
    name: "chef",
    description: "Chef server: install chef-client when absent, register with the validation key, run it",
    keys: &[
        KeySpec {
            example: Some("https://chef.example.com/organizations/example"),
            required: true,
            validation: Validation::URL,
            ..KeySpec::new("chef_server_url", "URL of the Chef server")
        },
        KeySpec {
            example: Some("18.2.7"),
            required: true,
            validation: Validation::RELEASE_VERSION,
            ..KeySpec::new("chef_version", "Chef client version to install when absent")
        },
        KeySpec {
            example: Some("-----BEGIN RSA PRIVATE KEY-----"),
            required: true,
            secret: true,
            multiline: true,
            validation: Validation::NOT_EMPTY,
            ..KeySpec::new("validation_key", "The validator's private key (PEM)")
        },
        KeySpec {
            example: Some("example-validator"),
            required: true,
            default: Some("chef-validator"),
            validation: Validation::WORD,
            ..KeySpec::new("validation_client_name", "Name of the validation client")
        },
        KeySpec {
            example: Some("production"),
            required: true,
            default: Some("_default"),
            validation: Validation::WORD,
            ..KeySpec::new("bootstrap_environment", "Chef environment of the node")
        },
        KeySpec {
            example: Some("https://omnitruck.chef.io/install.sh"),
            required: true,
            default: Some("https://omnitruck.chef.io/install.sh"),
            validation: Validation::URL,
            ..KeySpec::new("install_sh_url", "URL of the Chef install script")
        },
        KeySpec {
            example: Some("/opt/chef/bin/chef-client"),
            required: true,
            default: Some("chef-client"),
            validation: Validation::COMMAND,
            ..KeySpec::new(
                "chef_client_path",
                "The chef-client command, a name or an absolute path",
            )
        },
        KeySpec {
            example: Some("role[base], recipe[ntp::client]"),
            validation: Validation::RUN_LIST_OR_EMPTY,
            ..KeySpec::new(
                "base_run_list",
                "Run list of the node's first run; optional",
            )
        },
    ],
};

/// Runs `ansible-playbook` from this machine against the host over SSH.
pub const ANSIBLE: KindSchema = KindSchema {
    name: "ansible",
    description: "Ansible: run `ansible-playbook` from this machine against the host over SSH",
    keys: &[
        KeySpec {
            example: Some("./site.yml"),
            required: true,
            validation: Validation::NOT_EMPTY,
            ..KeySpec::new("playbook", "Path of the playbook on this machine")
        },
        KeySpec {
            example: Some("{\"env\": \"staging\"}"),
            multiline: true,
            validation: Validation::MAPPING_OR_EMPTY,
            ..KeySpec::new(
                "extra_vars",
                "Extra variables as a YAML or JSON mapping; optional",
            )
        },
        KeySpec {
            example: Some("web, staging"),
            validation: Validation::NAMES_OR_EMPTY,
            ..KeySpec::new(
                "groups",
                "Inventory groups the host is put in, separated by commas; optional",
            )
        },
        KeySpec {
            default: Some("ansible-playbook"),
            validation: Validation::COMMAND,
            ..KeySpec::new(
                "ansible_playbook_path",
                "The ansible-playbook command, a name or an absolute path",
            )
        },
    ],
};

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, ConfigValue> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), ConfigValue::Plain((*v).to_owned())))
            .collect()
    }

    fn message(result: Result<TargetConfig>) -> String {
        result.expect_err("refused").to_string()
    }

    #[test]
    fn puppet_server_takes_razors_cases() {
        for good in ["", "puppet.example.com", "puppet", "a-1.b2.example"] {
            let config = PUPPET.validate(values(&[("server", good)])).unwrap();
            assert_eq!(config.text("server"), Some(good));
        }
        assert_eq!(
            message(PUPPET.validate(values(&[("server", "---invalid-hostname---")]))),
            "invalid value `---invalid-hostname---` for key `server`: expected a host name, or empty"
        );
        for bad in [
            "a..b",
            "-a.example.com",
            "a-.example.com",
            "a_b.example.com",
            "a b",
        ] {
            assert!(
                PUPPET.validate(values(&[("server", bad)])).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn puppet_broker_version_takes_razors_cases() {
        for good in ["", "3.0.1_rc1", "7.23.0", "7"] {
            PUPPET
                .validate(values(&[("broker_version", good)]))
                .unwrap();
        }
        assert_eq!(
            message(PUPPET.validate(values(&[(
                "broker_version",
                "this_is_not_a_valid_broker_version"
            )]))),
            "invalid value `this_is_not_a_valid_broker_version` for key `broker_version`: \
             expected a version such as 7.23.0 or 3.0.1_rc1, or empty for the latest"
        );
    }

    #[test]
    fn puppet_server_port_is_a_port_or_empty() {
        for good in ["", "8140", "1", "65535"] {
            PUPPET.validate(values(&[("server_port", good)])).unwrap();
        }
        for bad in ["0", "65536", "81 40", "-1", "http"] {
            assert_eq!(
                message(PUPPET.validate(values(&[("server_port", bad)]))),
                format!(
                    "invalid value `{bad}` for key `server_port`: expected a port number from 1 \
                     to 65535, or empty"
                )
            );
        }
        let config = PUPPET.validate(BTreeMap::new()).unwrap();
        assert_eq!(
            (config.text("server_port"), config.text("ca_clean_command")),
            (None, None)
        );
    }

    #[test]
    fn defaults_fill_keys_not_given_and_optional_keys_stay_unset() {
        let config = SCRIPT.validate(values(&[("script", "./s.sh")])).unwrap();
        assert_eq!(
            config.text("script_path"),
            Some("/tmp/broker_handoff_script")
        );
        assert_eq!(config.text("success_marker"), None);
        let config = PUPPET.validate(BTreeMap::new()).unwrap();
        assert_eq!(config.text("server"), Some(""));
    }

    #[test]
    fn an_unknown_key_is_named_with_the_closest_known_one() {
        assert_eq!(
            message(PUPPET.validate(values(&[("sever", "p.example.com")]))),
            "unknown key `sever` for kind `puppet`; did you mean `server`?"
        );
        assert_eq!(
            message(PUPPET.validate(values(&[("colour", "red")]))),
            "unknown key `colour` for kind `puppet`; its keys are server, broker_version, \
             server_port, ca_clean_command (and the run keys: connect_timeout, run_timeout, \
             retries, retry_delay, rechecks, recheck_interval)"
        );
        assert_eq!(
            message(NOOP.validate(values(&[("x", "1")]))),
            "unknown key `x` for kind `noop`; kind `noop` takes only the run keys (connect_timeout, \
             run_timeout, retries, retry_delay, rechecks, recheck_interval)"
        );
    }

    #[test]
    fn every_kind_takes_the_run_keys_checked_and_without_defaults() {
        let config = NOOP
            .validate(values(&[("run_timeout", "90s"), ("retries", "0")]))
            .unwrap();
        assert_eq!(config.text("run_timeout"), Some("90s"));
        assert_eq!(config.text("connect_timeout"), None);
        assert_eq!(
            message(SCRIPT.validate(values(&[("script", "s"), ("run_timeout", "soon")]))),
            "invalid value `soon` for key `run_timeout`: expected a duration such as 90, 45s, 30m \
             or 1h30m, or empty"
        );
        assert_eq!(
            message(PUPPET.validate(values(&[("rechecks", "-1")]))),
            "invalid value `-1` for key `rechecks`: expected a whole number (0 or more), or empty"
        );
        assert!(CHEF.key("recheck_interval").is_some());
    }

    #[test]
    fn a_missing_required_key_is_named() {
        let err = message(SCRIPT.validate(BTreeMap::new()));
        assert_eq!(
            err,
            "missing required key `script` of kind `script` (Path of the script on this machine); \
             give it with `-c script=VALUE`"
        );
    }

    #[test]
    fn a_secret_key_becomes_a_secret_and_a_refused_secret_is_not_shown() {
        let given = values(&[
            (
                "chef_server_url",
                "https://chef.example.com/organizations/x",
            ),
            ("chef_version", "18.2.7"),
            (
                "validation_key",
                "-----BEGIN KEY-----\nabc\n-----END KEY-----",
            ),
        ]);
        let config = CHEF.validate(given.clone()).unwrap();
        assert!(config.get("validation_key").unwrap().is_secret());
        assert!(!config.get("chef_server_url").unwrap().is_secret());
        assert_eq!(config.text("chef_client_path"), Some("chef-client"));

        let mut empty_key = given;
        empty_key.insert("validation_key".into(), ConfigValue::Plain("   ".into()));
        assert_eq!(
            message(CHEF.validate(empty_key)),
            "invalid value for key `validation_key`: expected any text but an empty one"
        );
    }

    /// docs/handoff.md's table of each kind's keys is what the kind has: the same keys, required,
    /// secret and multi-line as it says, with the default it shows where it shows one plainly.
    #[test]
    fn the_kinds_keys_are_as_the_handoff_guide_lists_them() {
        let guide = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/handoff.md");
        let guide = std::fs::read_to_string(guide).unwrap();
        let mut listed: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
        let mut kind = None;
        for line in guide.lines() {
            if let Some(rest) = line.strip_prefix("**`") {
                kind = rest.split_once("`**").map(|(name, _)| name.to_owned());
                listed.entry(kind.clone().unwrap_or_default()).or_default();
            } else if let (Some(kind), Some(row)) = (&kind, line.strip_prefix("| `")) {
                let cells = format!("`{row}")
                    .split('|')
                    .map(|c| c.trim().to_owned())
                    .collect();
                listed.entry(kind.clone()).or_default().push(cells);
            } else if line.starts_with("## ") {
                kind = None;
            }
        }
        let kinds: Vec<&str> = BUILTIN.iter().map(|k| k.name).collect();
        assert_eq!(listed.keys().map(String::as_str).collect::<Vec<_>>(), {
            let mut sorted = kinds.clone();
            sorted.sort_unstable();
            sorted
        });
        for schema in &BUILTIN {
            let rows = &listed[schema.name];
            let keys: Vec<&str> = schema.keys.iter().map(|k| k.key).collect();
            let documented: Vec<&str> = rows.iter().map(|r| r[0].trim_matches('`')).collect();
            assert_eq!(documented, keys, "the keys of `{}`", schema.name);
            for (spec, row) in schema.keys.iter().zip(rows) {
                let what = format!("`{}` of `{}`: {row:?}", spec.key, schema.name);
                assert_eq!(row[1].starts_with("yes"), spec.required, "required: {what}");
                assert_eq!(row[1].contains("secret"), spec.secret, "secret: {what}");
                let multiline = row[1..].iter().any(|cell| cell.contains("multi-line"));
                assert_eq!(multiline, spec.multiline, "multi-line: {what}");
                let shown = row[2].strip_prefix('`').and_then(|d| d.strip_suffix('`'));
                if let Some(default) = shown.filter(|d| !d.contains('`')) {
                    assert_eq!(spec.default, Some(default), "default: {what}");
                } else if row[2].is_empty() {
                    assert_eq!(spec.default, None, "default: {what}");
                }
            }
        }
    }

    /// The kinds as users see them in `broker target kinds -o yaml` (and a server's `GET /kinds`),
    /// with the run keys every kind takes: a change to any key's example, requirement, default,
    /// secrecy or what it accepts is a change to review (docs/testing.md, "Snapshot tests").
    #[test]
    fn the_kinds_read_as_the_snapshot_shows() {
        let mut shown = serde_yaml::Mapping::new();
        shown.insert("kinds".into(), crate::value::to_yaml(&builtin()));
        shown.insert("run_keys".into(), crate::value::to_yaml(&RUN_KEYS));
        insta::assert_snapshot!("builtin-kinds", serde_yaml::to_string(&shown).unwrap());
    }

    /// A validation shows as what it accepts (in `{:?}` of a key).
    #[test]
    fn a_validation_debugs_as_what_it_accepts() {
        assert_eq!(
            format!("{:?}", Validation::URL),
            "an http:// or https:// URL"
        );
        let spec = format!("{:?}", SCRIPT.keys[0]);
        assert!(
            spec.contains("validation: any text but an empty one"),
            "{spec}"
        );
    }

    /// What the interactive walk and `broker target kinds` show a user: every key without a
    /// default has an example of what to type, and every example is a value its key accepts.
    #[test]
    fn every_key_without_a_default_has_an_example_its_key_accepts() {
        for schema in &BUILTIN {
            for spec in schema.keys {
                let what = format!("`{}` of `{}`", spec.key, schema.name);
                if spec.default.is_none() {
                    assert!(spec.example.is_some(), "{what} has no example");
                }
                if let Some(example) = spec.example {
                    assert!(spec.check(example).is_ok(), "{what}: {example}");
                }
            }
        }
    }

    /// Words are letters, digits, `.`, `_` and `-`, at least one; the timing keys every kind takes
    /// are checked too.
    #[test]
    fn words_and_the_run_keys_are_checked() {
        for (word, ok) in [
            ("chef-validator", true),
            ("a.b_c", true),
            ("", false),
            ("a b", false),
        ] {
            assert_eq!((Validation::WORD.check)(word), ok, "{word:?}");
        }
        let script =
            |path: &str| SCRIPT.validate(values(&[("script", "./b.sh"), ("script_path", path)]));
        assert!(script("/tmp/b.sh").is_ok());
        assert!(script("").is_err(), "an empty script_path");
        for key in RUN_KEYS {
            let refused = PUPPET.validate(values(&[(key.key, "soon")]));
            assert!(refused.is_err(), "{} took `soon`", key.key);
            assert!(
                PUPPET.validate(values(&[(key.key, "")])).is_ok(),
                "{}",
                key.key
            );
        }
    }

    #[test]
    fn chef_and_ansible_values_are_checked() {
        let base = [
            ("chef_server_url", "https://chef.example.com"),
            ("chef_version", "18.2.7"),
            ("validation_key", "k"),
        ];
        let with = |key: &'static str, value: &'static str| {
            let mut v = values(&base);
            v.insert(key.into(), ConfigValue::Plain(value.into()));
            CHEF.validate(v).is_ok()
        };
        assert!(with("chef_client_path", "/opt/chef/bin/chef-client"));
        assert!(!with("chef_client_path", "bin/chef client"));
        assert!(with("base_run_list", "role[base], recipe[ntp::client]"));
        assert!(!with("base_run_list", "base"));
        assert!(!with("base_run_list", "role[]"));
        assert!(!with("base_run_list", "role[base]]"));
        assert!(!with("base_run_list", "role[base], recipe[]"));
        assert!(!with("chef_server_url", "chef.example.com"));
        assert!(!with("chef_version", "18.2"));
        assert!(with("chef_version", "18.2.7.rc1"));
        // The suffix may have dots of its own, and nothing but letters, digits and dots.
        assert!(with("chef_version", "18.2.7.rc.1"));
        assert!(!with("chef_version", "18.2.7.rc-1"));
        assert!(!with("chef_version", "18.2.7."));
        assert!(!with("chef_version", "18.x.7"));

        let ansible = |key: &'static str, value: &'static str| {
            ANSIBLE
                .validate(values(&[("playbook", "site.yml"), (key, value)]))
                .is_ok()
        };
        assert!(ansible("extra_vars", "env: staging"));
        assert!(!ansible("extra_vars", "- a list"));
        assert!(ansible("groups", "web, staging"));
        assert!(!ansible("groups", "web,,staging"));
    }

    #[test]
    fn kinds_are_found_in_any_case_and_an_unknown_one_lists_them() {
        assert_eq!(builtin_kind("Puppet").unwrap().name, "puppet");
        assert_eq!(
            builtin_kind("pupet").unwrap_err().to_string(),
            "unknown handoff kind `pupet`; did you mean `puppet`? the kinds are noop, script, \
             puppet, chef, ansible (see `broker target kinds`)"
        );
    }
}
