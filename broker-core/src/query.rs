//! Discovery queries (`broker providers NAME --flag …`): which flags a provider answers, the instance a
//! query goes to, and the result limits broker applies to the answer. [`crate::Broker::provider_help`]
//! asks the provider; this module only reads the flags and trims the answer, and calls no provider.

use serde::Serialize;
use serde_yaml::{Mapping, Value};

use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::provider::{ProviderKind, ProviderRegistry, closest};
use crate::settings::Settings;

/// A provider as `broker providers` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProviderSummary {
    /// The provider's name (`AnsibleTower`).
    pub name: &'static str,
    /// The arguments that pick it for a checkout (`workflow`).
    pub actions: &'static [&'static str],
    /// The instances the settings configure for it, in file order.
    pub instances: Vec<String>,
    /// One line on what it provides.
    pub about: &'static str,
}

/// Every provider compiled in, with the instances `settings` configure for each.
pub fn provider_summaries(
    registry: &ProviderRegistry,
    settings: &Settings,
) -> Vec<ProviderSummary> {
    registry
        .kinds()
        .iter()
        .map(|kind| ProviderSummary {
            name: kind.name(),
            actions: kind.checkout_action_keys(),
            instances: settings.provider_instances(kind.name()),
            about: kind.about(),
        })
        .collect()
}

/// One discovery query to one provider: its flags, the instance asked, and how to trim the answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderQuery {
    provider: &'static str,
    instance: Option<String>,
    flags: Mapping,
    results_filter: Option<String>,
    results_limit: Option<usize>,
}

impl ProviderQuery {
    /// Reads a query from command-line tokens: `--flag` alone is a switch, `--flag value` and
    /// `--flag=value` give a value, `--<Provider> NAME` picks the instance. Dashes in flag names stand
    /// for underscores.
    ///
    /// # Errors
    /// [`Error::Usage`] for a token that is not a flag, or a flag the provider does not answer (with
    /// the closest one it does).
    pub fn parse(kind: &ProviderKind, tokens: &[String]) -> Result<Self> {
        let mut query = ProviderQuery {
            provider: kind.name(),
            instance: None,
            flags: Mapping::new(),
            results_filter: None,
            results_limit: None,
        };
        let mut tokens = tokens.iter().peekable();
        while let Some(token) = tokens.next() {
            let Some(flag) = token.strip_prefix("--") else {
                return Err(Error::usage(format!(
                    "unexpected `{token}`; provider queries are flags like `--workflows`"
                )));
            };
            let (key, value) = match flag.split_once('=') {
                Some((k, v)) => (k.to_owned(), Value::from(v)),
                None => match tokens.next_if(|v| !v.starts_with('-')) {
                    Some(v) => (flag.to_owned(), Value::from(v.as_str())),
                    None => (flag.to_owned(), Value::Bool(true)),
                },
            };
            if key == kind.name() {
                query.instance = value.as_str().map(str::to_owned);
                continue;
            }
            let key = known_flag(kind, &key)?;
            query.flags.insert(Value::from(key), value);
        }
        Ok(query)
    }

    /// Keeps only the results `filter` selects (a filter over `@res`); the provider applies it too,
    /// before its own default limit, where it lists many results.
    #[must_use]
    pub fn results_filter(mut self, filter: Option<String>) -> Self {
        self.results_filter = filter;
        self
    }

    /// Keeps at most `limit` results; the provider applies it too, in place of its default limit.
    #[must_use]
    pub fn results_limit(mut self, limit: Option<usize>) -> Self {
        self.results_limit = limit;
        self
    }

    /// The provider asked.
    pub fn provider(&self) -> &'static str {
        self.provider
    }

    /// The instance asked (`--<Provider> NAME`), if one was named.
    pub fn instance(&self) -> Option<&str> {
        self.instance.as_deref()
    }

    /// What the provider is asked: the flags, with `results_filter` and `results_limit` when given.
    pub fn arguments(&self) -> Mapping {
        let mut arguments = self.flags.clone();
        if let Some(filter) = &self.results_filter {
            arguments.insert("results_filter".into(), Value::from(filter.as_str()));
        }
        if let Some(limit) = self.results_limit {
            arguments.insert("results_limit".into(), Value::from(limit as u64));
        }
        arguments
    }

    /// Applies the results filter, then the limit, to the provider's answer when it is a list; any
    /// other answer is left as it is.
    ///
    /// # Errors
    /// [`Error::Filter`] for a results filter that does not parse.
    pub fn trim(&self, answer: &mut Value) -> Result<()> {
        let Value::Sequence(items) = answer else {
            return Ok(());
        };
        if let Some(filter) = &self.results_filter {
            let keep = Filter::parse(filter, "res")?.select(items);
            *items = keep.into_iter().map(|i| items[i].clone()).collect();
        }
        if let Some(limit) = self.results_limit {
            items.truncate(limit);
        }
        Ok(())
    }
}

/// `flag` (dashes or underscores) as the provider's name for it, when the provider answers it.
fn known_flag(kind: &ProviderKind, flag: &str) -> Result<String> {
    let key = flag.replace('-', "_");
    let names: Vec<&str> = kind.help_option_list().iter().map(|o| o.name).collect();
    if names.contains(&key.as_str()) {
        return Ok(key);
    }
    let dashed = |name: &str| format!("--{}", name.replace('_', "-"));
    let near = closest(&key, &names)
        .map(|n| format!("did you mean `{}`? ", dashed(n)))
        .unwrap_or_default();
    let known = if names.is_empty() {
        "none".to_owned()
    } else {
        names
            .iter()
            .map(|n| dashed(n))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(Error::usage(format!(
        "{} has no query `{}`; {near}it answers: {known}",
        kind.name(),
        dashed(&key)
    )))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::provider::{HelpOption, Provider};

    fn unbuildable(_config: crate::ProviderConfig) -> Result<Arc<dyn Provider>> {
        Err(Error::usage("not built in these tests"))
    }

    const OPTIONS: &[HelpOption] = &[
        HelpOption {
            name: "hosts",
            takes_value: false,
            help: "list hosts",
        },
        HelpOption {
            name: "container_host",
            takes_value: true,
            help: "one host",
        },
    ];

    fn kind() -> ProviderKind {
        ProviderKind::new("Prov", "a provider for tests", unbuildable)
            .checkout_actions(&["prov_host"])
            .help_options(OPTIONS)
    }

    fn tokens(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    fn yaml(text: &str) -> Value {
        serde_yaml::from_str(text).unwrap()
    }

    #[test]
    fn flags_are_switches_or_take_the_next_word_and_the_provider_flag_names_the_instance() {
        let query = ProviderQuery::parse(
            &kind(),
            &tokens(&["--hosts", "--container-host", "web", "--Prov", "lab"]),
        )
        .unwrap();
        assert_eq!(query.instance(), Some("lab"));
        assert_eq!(query.provider(), "Prov");
        assert_eq!(
            Value::Mapping(query.arguments()),
            yaml("{hosts: true, container_host: web}")
        );
        let query =
            ProviderQuery::parse(&kind(), &tokens(&["--container_host=a=b", "--hosts"])).unwrap();
        assert_eq!(query.instance(), None);
        assert_eq!(
            Value::Mapping(query.arguments()),
            yaml("{container_host: a=b, hosts: true}")
        );
    }

    #[test]
    fn an_unknown_flag_names_the_closest_and_every_known_one() {
        let err = ProviderQuery::parse(&kind(), &tokens(&["--hots"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Prov has no query `--hots`; did you mean `--hosts`? it answers: --hosts, --container-host"
        );
        assert_eq!(err.exit_code(), Error::usage("").exit_code());
        let bare = ProviderKind::new("Bare", "no flags", unbuildable);
        let err = ProviderQuery::parse(&bare, &tokens(&["--hosts"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Bare has no query `--hosts`; it answers: none"
        );
    }

    #[test]
    fn a_word_that_is_not_a_flag_is_a_usage_error() {
        let err = ProviderQuery::parse(&kind(), &tokens(&["hosts"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unexpected `hosts`; provider queries are flags like `--workflows`"
        );
    }

    #[test]
    fn result_limits_go_to_the_provider_and_trim_a_listed_answer() {
        let query = ProviderQuery::parse(&kind(), &tokens(&["--hosts"]))
            .unwrap()
            .results_filter(Some("'b' in @res".into()))
            .results_limit(Some(2));
        assert_eq!(
            Value::Mapping(query.arguments()),
            yaml("{hosts: true, results_filter: \"'b' in @res\", results_limit: 2}")
        );
        let mut answer = yaml("[ab, cd, bb, b, xb]");
        query.trim(&mut answer).unwrap();
        assert_eq!(answer, yaml("[ab, bb]"));
        let mut answer = yaml("{one: b}");
        query.trim(&mut answer).unwrap();
        assert_eq!(answer, yaml("{one: b}"), "only lists are trimmed");
        let bad = ProviderQuery::parse(&kind(), &[])
            .unwrap()
            .results_filter(Some("@res ==".into()));
        assert!(matches!(bad.trim(&mut yaml("[a]")), Err(Error::Filter(_))));
    }

    #[test]
    fn summaries_list_each_provider_with_its_configured_instances() {
        let registry = ProviderRegistry::new().with(kind());
        let settings = Settings::from_yaml(
            "/nonexistent",
            "Prov:\n  instances:\n    - lab: {}\n    - prod: {default: true}\n",
        )
        .unwrap();
        assert_eq!(
            provider_summaries(&registry, &settings),
            vec![ProviderSummary {
                name: "Prov",
                actions: &["prov_host"],
                instances: vec!["lab".into(), "prod".into()],
                about: "a provider for tests",
            }]
        );
    }
}
