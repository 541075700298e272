//! `broker config validate`: the settings checked against the providers compiled in. The forms of the
//! keys are [`Settings::base_problems`] and [`Settings::provider_problems`]; a provider instance whose
//! keys have no problem is then built ([`ProviderKind::build`]), which checks what only the provider
//! knows. This module decides what to check and what it comes to; it prints nothing.

use crate::error::{Error, Result};
use crate::provider::{ProviderKind, ProviderRegistry};
use crate::settings::{Problem, Settings};

/// One thing [`validate_settings`] found, in the order it looked.
#[derive(Debug)]
pub enum Finding {
    /// A key of the settings file with the wrong type or form, or an example placeholder left in.
    Problem(Problem),
    /// A provider instance (`AnsibleTower::prod`, or `AnsibleTower` without instances) that builds.
    Builds {
        /// The provider, with `::instance` when it has instances.
        label: String,
    },
    /// A provider instance that does not build, and why.
    DoesNotBuild {
        /// The provider, with `::instance` when it has instances.
        label: String,
        /// What building it said.
        error: Error,
    },
}

impl Finding {
    /// The exit code this finding calls for: 0 when it is no fault, a configuration error's (8) for a
    /// problem, the build error's own for an instance that does not build.
    pub fn exit_code(&self) -> i32 {
        match self {
            Finding::Problem(_) => Error::configuration(String::new()).exit_code(),
            Finding::Builds { .. } => 0,
            Finding::DoesNotBuild { error, .. } => error.exit_code(),
        }
    }
}

/// What [`validate_settings`] found.
#[derive(Debug)]
pub struct SettingsReport {
    source: String,
    findings: Vec<Finding>,
}

impl SettingsReport {
    /// The settings file checked, or `built-in defaults` when there is none.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Everything found, in the order it was checked.
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// 0 when the settings are valid; else the exit code of the last fault found.
    pub fn exit_code(&self) -> i32 {
        self.findings
            .iter()
            .rev()
            .map(Finding::exit_code)
            .find(|code| *code != 0)
            .unwrap_or(0)
    }
}

/// Checks the part of the settings `chunk` names: `all` (broker's own keys and every provider section
/// the settings have), `base` or `ssh` (broker's own keys), `PROVIDER` (each of its instances) or
/// `PROVIDER:INSTANCE`.
///
/// # Errors
/// [`Error::User`] when `chunk` names a provider that is not compiled in.
pub fn validate_settings(
    settings: &Settings,
    registry: &ProviderRegistry,
    chunk: &str,
) -> Result<SettingsReport> {
    let providers = providers_to_check(settings, registry, chunk)?;
    let mut findings = Vec::new();
    if matches!(chunk, "all" | "base" | "ssh") {
        findings.extend(settings.base_problems().into_iter().map(Finding::Problem));
    }
    for (kind, instance) in providers {
        for instance in instances_to_check(settings, kind, instance) {
            for finding in check_instance(settings, kind, instance.as_deref()) {
                // A key of the section is a problem of every instance: said once.
                let said = matches!(&finding, Finding::Problem(p)
                    if findings.iter().any(|f| matches!(f, Finding::Problem(q) if q == p)));
                if !said {
                    findings.push(finding);
                }
            }
        }
    }
    let source = settings
        .file()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "built-in defaults".into());
    Ok(SettingsReport { source, findings })
}

/// The providers `chunk` names, each with the instance it names (`PROVIDER:INSTANCE`), if any.
fn providers_to_check<'r, 'c>(
    settings: &Settings,
    registry: &'r ProviderRegistry,
    chunk: &'c str,
) -> Result<Vec<(&'r ProviderKind, Option<&'c str>)>> {
    match chunk {
        "all" => Ok(registry
            .kinds()
            .iter()
            .filter(|kind| settings.has_provider_section(kind.name()))
            .map(|kind| (kind, None))
            .collect()),
        "base" | "ssh" => Ok(Vec::new()),
        other => {
            let (name, instance) = match other.split_once(':') {
                Some((name, instance)) => (name, Some(instance)),
                None => (other, None),
            };
            Ok(vec![(registry.require(name)?, instance)])
        }
    }
}

/// The instance named, else every instance the settings configure, else the provider's section
/// itself (`None`).
fn instances_to_check(
    settings: &Settings,
    kind: &ProviderKind,
    named: Option<&str>,
) -> Vec<Option<String>> {
    if let Some(instance) = named {
        return vec![Some(instance.to_owned())];
    }
    let all = settings.provider_instances(kind.name());
    if all.is_empty() {
        vec![None]
    } else {
        all.into_iter().map(Some).collect()
    }
}

/// The problems of one instance's keys (placeholders, keys the provider does not read); when there
/// are none, whether it builds.
fn check_instance(
    settings: &Settings,
    kind: &ProviderKind,
    instance: Option<&str>,
) -> Vec<Finding> {
    let label = match instance {
        Some(i) => format!("{}::{i}", kind.name()),
        None => kind.name().to_owned(),
    };
    let config = match settings.provider_config(kind.name(), instance) {
        Ok(config) => config,
        Err(error) => return vec![Finding::DoesNotBuild { label, error }],
    };
    let mut problems = settings.provider_problems(kind.name(), instance);
    problems.extend(kind.settings_problems(&config));
    // `lease` is broker's key in every provider's section, read at each checkout.
    let lease = config
        .get(crate::lease::fields::LEASE)
        .filter(|v| !v.is_null());
    if let Some(Err(e)) = lease.map(crate::lease::Lease::from_value) {
        problems.push(config.problem(crate::lease::fields::LEASE, e.to_string()));
    }
    if !problems.is_empty() {
        return problems.into_iter().map(Finding::Problem).collect();
    }
    vec![match kind.build(config) {
        Ok(_) => Finding::Builds { label },
        Err(error) => Finding::DoesNotBuild { label, error },
    }]
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_yaml::Mapping;

    use super::*;
    use crate::provider::{CheckoutContext, Provider};
    use crate::record::HostRecord;

    /// A provider that makes no hosts; it builds when its settings have `url`.
    #[derive(Debug)]
    struct Idle;

    #[async_trait::async_trait]
    impl Provider for Idle {
        fn name(&self) -> &str {
            "Idle"
        }
        fn instance(&self) -> Option<&str> {
            None
        }
        async fn checkout(&self, _ctx: &CheckoutContext<'_>) -> Result<Mapping> {
            Err(Error::usage("no hosts here"))
        }
        async fn checkin(&self, _host: &HostRecord) -> Result<()> {
            Ok(())
        }
    }

    fn build_idle(config: crate::ProviderConfig) -> Result<Arc<dyn Provider>> {
        config.require_str("url")?;
        Ok(Arc::new(Idle))
    }

    fn registry() -> ProviderRegistry {
        ProviderRegistry::new()
            .with(ProviderKind::new("Alpha", "first", build_idle))
            .with(ProviderKind::new("Beta", "second", build_idle))
    }

    /// Each finding in a word: `problem KEY`, `builds LABEL`, `fails LABEL (EXIT CODE)`.
    fn found(report: &SettingsReport) -> Vec<String> {
        report
            .findings()
            .iter()
            .map(|f| match f {
                Finding::Problem(p) => format!("problem {}", p.key),
                Finding::Builds { label } => format!("builds {label}"),
                Finding::DoesNotBuild { label, error } => {
                    format!("fails {label} ({})", error.exit_code())
                }
            })
            .collect()
    }

    fn from_yaml(yaml: &str) -> Settings {
        Settings::from_yaml("/nonexistent", yaml).unwrap()
    }

    #[test]
    fn all_checks_broker_keys_then_each_instance_of_each_configured_provider() {
        let settings = from_yaml(
            "thread_limit: many\n\
             Alpha:\n  instances:\n    one: {url: u}\n    two: {}\n",
        );
        let report = validate_settings(&settings, &registry(), "all").unwrap();
        assert_eq!(
            found(&report),
            [
                "problem thread_limit",
                "builds Alpha::one",
                "fails Alpha::two (8)"
            ]
        );
        assert_eq!(report.source(), "built-in defaults");
        assert_eq!(report.exit_code(), 8);
    }

    #[test]
    fn the_last_fault_found_gives_the_exit_code() {
        let settings = from_yaml("thread_limit: many\nAlpha: {}\n");
        let report = validate_settings(&settings, &registry(), "all").unwrap();
        assert_eq!(found(&report), ["problem thread_limit", "fails Alpha (8)"]);
        let failing = Finding::DoesNotBuild {
            label: "Beta".into(),
            error: Error::usage("bad"),
        };
        let report = SettingsReport {
            source: String::new(),
            findings: vec![
                Finding::Problem(settings.problem("thread_limit", "bad")),
                failing,
                Finding::Builds {
                    label: "Alpha".into(),
                },
            ],
        };
        assert_eq!(report.exit_code(), 2);
    }

    #[test]
    fn a_named_provider_or_instance_is_checked_alone() {
        let settings = from_yaml("thread_limit: many\nBeta: {url: <the url>}\n");
        let report = validate_settings(&settings, &registry(), "Beta").unwrap();
        assert_eq!(
            found(&report),
            ["problem Beta.url"],
            "placeholders first, no build"
        );
        assert_eq!(report.exit_code(), 8);
        let settings = from_yaml("Alpha:\n  instances:\n    one: {}\n    two: {url: u}\n");
        let report = validate_settings(&settings, &registry(), "Alpha:two").unwrap();
        assert_eq!(found(&report), ["builds Alpha::two"]);
        assert_eq!(report.exit_code(), 0);
        let settings = from_yaml("thread_limit: many\nAlpha: {}\n");
        for chunk in ["base", "ssh"] {
            let report = validate_settings(&settings, &registry(), chunk).unwrap();
            assert_eq!(found(&report), ["problem thread_limit"], "{chunk}");
        }
        let err = validate_settings(&settings, &registry(), "Gamma").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown provider `Gamma`; this broker knows: Alpha, Beta"
        );
    }

    /// The settings of a provider that declares them.
    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(default)]
    struct UrlSettings {
        #[serde(deserialize_with = "crate::settings::field::text")]
        url: Option<String>,
    }

    impl crate::settings::ProviderSettings for UrlSettings {}

    #[test]
    fn keys_a_provider_does_not_read_are_problems_said_once_and_nothing_is_built() {
        let registry = registry()
            .with(ProviderKind::new("Typed", "third", build_idle).settings::<UrlSettings>());
        let settings = from_yaml(
            "Typed:\n  ulr: u\n  instances:\n    one: {url: u}\n    two: {url: u, default: true}\n",
        );
        let report = validate_settings(&settings, &registry, "all").unwrap();
        assert_eq!(found(&report), ["problem Typed.ulr"]);
        let Finding::Problem(problem) = &report.findings()[0] else {
            unreachable!()
        };
        assert_eq!(
            problem.to_string(),
            "line 2: `Typed.ulr`: unknown key, ignored; did you mean `url`? rename or remove it"
        );
        assert_eq!(report.exit_code(), 8);
        let settings = from_yaml("Typed:\n  instances:\n    one: {url: u, default: true}\n");
        let report = validate_settings(&settings, &registry, "Typed").unwrap();
        assert_eq!(found(&report), ["builds Typed::one"]);
    }

    #[test]
    fn a_lease_that_is_no_lease_is_a_problem_of_its_nick_or_section_with_its_line() {
        let settings = from_yaml(
            "Alpha:\n  url: u\n  instances:\n    one:\n      lease: 0\n    two: {lease: 2h}\n\
             Beta:\n  url: u\n  lease: [1, 2]\n\
             nicks:\n  ok: {alpha: x, lease: 30m}\n  long:\n    lease: 366d\n",
        );
        let report = validate_settings(&settings, &registry(), "all").unwrap();
        let problems: Vec<String> = report
            .findings()
            .iter()
            .map(|f| match f {
                Finding::Problem(p) => p.to_string(),
                Finding::Builds { label } => format!("builds {label}"),
                Finding::DoesNotBuild { label, .. } => format!("fails {label}"),
            })
            .collect();
        assert_eq!(
            problems,
            [
                "line 13: `nicks.long.lease`: a lease of 366d is longer than the longest broker \
                 gives (365d); give 365d or less, or leave the lease out to hold the host until it \
                 is checked in",
                "line 5: `Alpha.instances.one.lease`: a lease of 0 ends before the host is made; \
                 give 1s or more (`30m`, `2h`)",
                "builds Alpha::two",
                "line 9: `Beta.lease`: `lease` must be a duration (`30m`, `2h`), not `[1,2]`",
            ]
        );
        assert_eq!(report.exit_code(), 8);
    }

    #[test]
    fn a_provider_without_a_section_is_left_out_of_all_and_checked_when_named() {
        let settings = from_yaml("Alpha: {url: u}\n");
        let report = validate_settings(&settings, &registry(), "all").unwrap();
        assert_eq!(found(&report), ["builds Alpha"]);
        let report = validate_settings(&settings, &registry(), "Beta").unwrap();
        assert_eq!(found(&report), ["fails Beta (8)"]);
    }
}
