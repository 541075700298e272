//! Typed provider settings: a provider reads its section — merged with its instance and the
//! environment overrides, as [`ProviderConfig`] holds it — into a struct of its own, once, when it is
//! built. This module finds the struct's keys in the section (in any case), reads them through
//! serde, names the key and line of a value it cannot read, and reports keys no one reads with the
//! closest known name. It must not decide what a provider's settings mean.

use serde::de::{DeserializeOwned, Deserializer, Error as _, Visitor};
use serde_yaml::{Mapping, Value};

use super::{ProviderConfig, get_ci, validate::Problem};
use crate::error::Result;

/// Keys of a provider section that broker itself reads: which instance is used, whether the
/// environment wins over it, labels and leases.
const BROKER_KEYS: &[&str] = &[
    "default",
    "override_envars",
    "provider_labels",
    crate::lease::fields::LEASE,
];

/// A provider's settings section, read into the provider's own struct.
///
/// Derive `serde::Deserialize` with `#[serde(default)]` on the struct, so every key may be left
/// out (check a setting the provider cannot do without after reading, with
/// [`ProviderConfig::missing`], which says where to set it), and read each field through one of
/// the [`field`](super::field) readers, which take numbers and booleans written as text, as the
/// environment and hand-written files give them. Keep the fields flat (no `flatten`): the keys
/// the section may hold are the struct's fields.
///
/// Keys match in any case, as everywhere in the settings. Besides the struct's fields a section may
/// hold broker's own keys (`instances`, `default`, `override_envars`, `provider_labels`, `lease`)
/// and [`ProviderSettings::UNUSED`]. Any other key is unknown: reported with the closest known name
/// by [`ProviderSettings::problems`] (`broker config validate`) and as a warning by
/// [`ProviderSettings::from_section`], never refused, so a settings file written for the Python
/// broker, or for another version of broker, keeps loading.
///
/// # Example
/// ```
/// use std::time::Duration;
///
/// use broker_core::settings::{ProviderSettings, field};
/// use broker_core::{ProviderConfig, secrecy::SecretString};
///
/// /// Beaker's section.
/// #[derive(serde::Deserialize, Default)]
/// #[serde(default)]
/// struct BeakerSettings {
///     #[serde(deserialize_with = "field::text")]
///     hub_url: Option<String>,
///     #[serde(deserialize_with = "field::duration")]
///     max_job_wait: Option<Duration>,
///     #[serde(deserialize_with = "field::secret")]
///     password: Option<SecretString>,
/// }
///
/// impl ProviderSettings for BeakerSettings {}
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let section = serde_yaml::from_str("{HUB_URL: https://beaker.example.com, max_job_wait: 24h}")?;
/// let config = ProviderConfig::new("Beaker", None, section, "/tmp");
/// let settings = BeakerSettings::from_section(&config)?;
/// let hub_url = settings.hub_url.ok_or_else(|| config.missing("hub_url"))?;
/// assert_eq!(hub_url, "https://beaker.example.com");
/// assert_eq!(settings.max_job_wait, Some(Duration::from_secs(86_400)));
///
/// let typo = ProviderConfig::new("Beaker", None, serde_yaml::from_str("{hub_ulr: x}")?, "/tmp");
/// let problems = BeakerSettings::problems(&typo);
/// assert_eq!(problems[0].to_string(), "`Beaker.hub_ulr`: unknown key, ignored; did you mean `hub_url`? rename or remove it");
/// # Ok(()) }
/// ```
pub trait ProviderSettings: DeserializeOwned {
    /// Keys the section may hold that the provider does not read: the Python broker's keys that
    /// have no use here (Container's `runtime`), so that its files load without a warning.
    const UNUSED: &'static [&'static str] = &[];

    /// Reads the section, warning (through `tracing`) of each unknown key.
    ///
    /// # Errors
    /// [`Error::Configuration`](crate::Error::Configuration) naming the first key whose value
    /// cannot be read, its line in the settings file, and what the value should be.
    fn from_section(config: &ProviderConfig) -> Result<Self> {
        let keys = field_names::<Self>();
        for problem in unknown_keys(config, keys, Self::UNUSED) {
            tracing::warn!("{}", config.setting_error(&problem.key, problem.message));
        }
        let known: Mapping = keys
            .iter()
            .filter_map(|key| Some((Value::from(*key), get_ci(&config.values, key)?.clone())))
            .collect();
        serde_path_to_error::deserialize(Value::Mapping(known)).map_err(|e| {
            let key = e.path().to_string();
            config.setting_error(&key, e.into_inner())
        })
    }

    /// The keys of the section no one reads, each with the closest known name, for
    /// `broker config validate`.
    fn problems(config: &ProviderConfig) -> Vec<Problem> {
        unknown_keys(config, field_names::<Self>(), Self::UNUSED)
            .into_iter()
            .map(|p| config.problem(&p.key, p.message))
            .collect()
    }
}

/// A key of the section and what is wrong with it, before it is located in the settings file.
struct Unknown {
    key: String,
    message: String,
}

/// The section's keys that are neither the struct's, `unused`, nor broker's own.
fn unknown_keys(config: &ProviderConfig, keys: &[&str], unused: &[&str]) -> Vec<Unknown> {
    let known: Vec<&str> = keys.iter().chain(unused).copied().collect();
    config
        .values
        .keys()
        .filter_map(Value::as_str)
        .filter(|key| {
            !known
                .iter()
                .chain(BROKER_KEYS)
                .any(|k| k.eq_ignore_ascii_case(key))
        })
        .map(|key| Unknown {
            key: key.to_owned(),
            message: match crate::spelling::closest(key, &known) {
                Some(near) => {
                    format!("unknown key, ignored; did you mean `{near}`? rename or remove it")
                }
                None => format!(
                    "unknown key, ignored: {} reads no settings of its own; remove it",
                    config.provider()
                ),
            },
        })
        .collect()
}

/// The names of the fields of `T`, which serde's derive hands to `deserialize_struct` (with their
/// aliases); none for a type that is not a struct.
fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    // The probe fails every read: all it wants is the field list it is shown.
    let _ = T::deserialize(FieldProbe(&mut fields));
    fields
}

/// A deserializer that only records the fields a struct asks for.
struct FieldProbe<'a>(&'a mut &'static [&'static str]);

impl<'de> Deserializer<'de> for FieldProbe<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> std::result::Result<V::Value, Self::Error> {
        Err(Self::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> std::result::Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(Self::Error::custom("fields recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use secrecy::{ExposeSecret, SecretString};

    use super::*;
    use crate::settings::{Settings, field};

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(default)]
    struct Sample {
        #[serde(deserialize_with = "field::text")]
        base_url: Option<String>,
        #[serde(deserialize_with = "field::secret")]
        token: Option<SecretString>,
        #[serde(deserialize_with = "field::seconds")]
        workflow_timeout: Option<Duration>,
        #[serde(deserialize_with = "field::whole")]
        results_limit: Option<u64>,
        #[serde(deserialize_with = "field::flag")]
        auto_map_ports: Option<bool>,
        #[serde(deserialize_with = "field::duration", alias = "wait")]
        max_wait: Option<Duration>,
    }

    impl ProviderSettings for Sample {
        const UNUSED: &'static [&'static str] = &["runtime"];
    }

    const FILE: &str = "\
Sample:
    base_url: https://a.example.com/
    Workflow_Timeout: '90'
    runtime: podman
    provider_labels: {team: x}
    instances:
        one:
            default: true
            results_limit: 7
            auto_map_ports: yes
            wait: 2h
            worflow_timeout: 5
        two:
            results_limit: many
";

    fn config(instance: &str, env: &[(&str, &str)]) -> ProviderConfig {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(super::super::SETTINGS_FILE), FILE).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Settings::load_from(dir.path(), env)
            .unwrap()
            .provider_config("Sample", Some(instance))
            .unwrap()
    }

    #[test]
    fn the_struct_reads_section_instance_and_environment_in_any_case() {
        let read = Sample::from_section(&config(
            "one",
            &[
                ("BROKER_SAMPLE__TOKEN", "12345"),
                ("BROKER_SAMPLE__base_url", "https://b/"),
            ],
        ))
        .unwrap();
        assert_eq!(read.base_url.as_deref(), Some("https://b/"));
        assert_eq!(read.token.unwrap().expose_secret(), "12345");
        assert_eq!(read.workflow_timeout, Some(Duration::from_secs(90)));
        assert_eq!(read.results_limit, Some(7));
        assert_eq!(read.auto_map_ports, Some(true));
        assert_eq!(read.max_wait, Some(Duration::from_secs(7200)));
    }

    #[test]
    fn a_value_that_cannot_be_read_is_named_by_key_and_line() {
        let err = Sample::from_section(&config("two", &[])).unwrap_err();
        assert_eq!(err.exit_code(), 8);
        assert_eq!(
            err.to_string(),
            "configuration error: `Sample.instances.two.results_limit` (broker_settings.yaml line 14): \
             `many` is not a whole number"
        );
        let err = Sample::from_section(&config("one", &[("BROKER_SAMPLE__TOKEN", "[a, b]")]))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "configuration error: `Sample.token` (set by BROKER_SAMPLE__TOKEN): must be text (its \
             value is not shown: a secret)"
        );
    }

    #[test]
    fn unknown_keys_are_reported_with_the_closest_known_name_and_their_line() {
        let problems: Vec<String> =
            Sample::problems(&config("one", &[("BROKER_SAMPLE__BASEURL", "x")]))
                .iter()
                .map(ToString::to_string)
                .collect();
        assert_eq!(
            problems,
            [
                "`Sample.baseurl`: unknown key, ignored; did you mean `base_url`? rename or remove it \
                 (set by BROKER_SAMPLE__BASEURL)",
                "line 12: `Sample.instances.one.worflow_timeout`: unknown key, ignored; did you mean \
                 `workflow_timeout`? rename or remove it",
            ]
        );
        // The Python broker's keys the provider declares unused, and broker's own, are known.
        assert!(Sample::problems(&config("two", &[])).is_empty());
    }

    #[test]
    fn the_fields_are_the_structs_with_their_aliases() {
        let mut names = field_names::<Sample>().to_vec();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "auto_map_ports",
                "base_url",
                "max_wait",
                "results_limit",
                "token",
                "wait",
                "workflow_timeout"
            ]
        );
        assert!(field_names::<u64>().is_empty());
    }
}
