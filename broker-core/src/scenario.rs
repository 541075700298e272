//! YAML scenarios: workflows of checkouts, commands, file copies and checks, in the Python broker's
//! format (spec versions 1-3), so files written for it run here unchanged.
//!
//! A scenario owns its run: its variables and captures, the memory of its steps, and the hosts it
//! checked out (its *scenario inventory*, written to its own file after every step). The hosts
//! themselves are checked out through the [`Broker`] like any others, held by this process until the
//! scenario ends: a scenario killed mid-run leaves records that `broker reap` / `broker recover
//! --abandoned` give back. When the scenario fails, the hosts it checked out are checked in, unless
//! it was asked to keep them ([`Scenario::keep_hosts_on_failure`]); when it succeeds, they stay
//! checked out for the user. This module prints nothing: callers observe [`StepEvent`]s.
//!
//! ```no_run
//! use broker_core::scenario::Scenario;
//!
//! # async fn demo(broker: broker_core::Broker) -> broker_core::Result<()> {
//! let mut scenario = Scenario::load("deploy.yaml")?;
//! scenario.set_variable("RHEL_VERSION", "9.4");
//! let outcome = scenario
//!     .run_observed(&broker, &|event| eprintln!("{event}"))
//!     .await?;
//! println!("{} hosts still checked out", outcome.hosts.len());
//! # Ok(()) }
//! ```

mod actions;
pub mod catalog;
mod run;
#[cfg(test)]
mod run_tests;
pub mod spec;
pub mod template;

use std::fmt;
use std::path::{Path, PathBuf};

use serde_yaml::{Mapping, Value};

use crate::error::{Error, Result};
use crate::record::HostRecord;
use crate::{Broker, Settings};

pub use spec::{CURRENT_SPEC_VERSION, SPEC_VERSIONS};

/// What a running scenario tells its observer.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum StepEvent {
    /// A step starts (its first attempt).
    Started {
        /// The step's name.
        step: String,
        /// Its action.
        action: String,
    },
    /// A loop step starts an iteration.
    Iteration {
        /// The step's name.
        step: String,
        /// The iteration's key.
        item: String,
    },
    /// A step's `when` did not hold (or could not be evaluated: `reason` says why).
    Skipped {
        /// The step's name.
        step: String,
        /// Why, when the condition failed rather than being false.
        reason: Option<String>,
    },
    /// An attempt failed and the step is tried again.
    Retrying {
        /// The step's name.
        step: String,
        /// The attempt about to start (2 or more).
        attempt: u32,
        /// How many attempts the step has.
        of: u32,
        /// Why the last one failed.
        error: String,
    },
    /// A step completed.
    Finished {
        /// The step's name.
        step: String,
    },
    /// A step failed after its last attempt.
    Failed {
        /// The step's name.
        step: String,
        /// Why.
        error: String,
        /// Whether the scenario goes on (`on_error`, `exit_on_error: false`).
        handled: bool,
    },
    /// An `output` step (or a streamed `local_exec`) has text for the terminal.
    Output {
        /// Whether it goes to standard error rather than standard output.
        stderr: bool,
        /// The text, ending in a line break.
        text: String,
    },
}

impl fmt::Display for StepEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepEvent::Started { step, action } => write!(f, "step `{step}` ({action})"),
            StepEvent::Iteration { step, item } => write!(f, "step `{step}` [{item}]"),
            StepEvent::Skipped { step, reason: None } => write!(f, "step `{step}` skipped"),
            StepEvent::Skipped {
                step,
                reason: Some(why),
            } => write!(f, "step `{step}` skipped: {why}"),
            StepEvent::Retrying {
                step,
                attempt,
                of,
                error,
            } => write!(
                f,
                "step `{step}` failed ({error}); attempt {attempt} of {of}"
            ),
            StepEvent::Finished { step } => write!(f, "step `{step}` done"),
            StepEvent::Failed {
                step,
                error,
                handled,
            } => {
                let then = if *handled { ", continuing" } else { "" };
                write!(f, "step `{step}` failed: {error}{then}")
            }
            StepEvent::Output { text, .. } => f.write_str(text.trim_end()),
        }
    }
}

/// Whoever watches a run.
pub type Observer<'a> = dyn Fn(&StepEvent) + Send + Sync + 'a;

/// How a scenario ended when it did not fail.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Outcome {
    /// The hosts it checked out that are still checked out (now the user's, as after `broker
    /// checkout`).
    pub hosts: Vec<HostRecord>,
    /// Its scenario inventory file, which lists them.
    pub inventory_path: PathBuf,
}

/// A loaded, checked scenario, ready to run (any number of times).
#[derive(Debug, Clone)]
pub struct Scenario {
    name: String,
    path: Option<PathBuf>,
    spec_version: u64,
    /// The file as written.
    doc: Mapping,
    /// `config`, with overrides.
    config: Mapping,
    /// `variables`, with overrides.
    variables: Mapping,
    steps: Vec<spec::Step>,
    /// The command line's variable and config overrides, handed on to `run_scenarios`.
    overrides: Vec<(String, String)>,
    keep_hosts_on_failure: bool,
}

impl Scenario {
    /// Loads and checks a scenario file: YAML, a supported spec version, the schema.
    ///
    /// # Errors
    /// [`Error::Scenario`] naming the file and what is wrong with it.
    pub fn load(path: impl AsRef<Path>) -> Result<Scenario> {
        let path = path.as_ref();
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(path).map_err(|e| {
            scenario_error(&name, format!("reading `{}`", path.display())).caused_by(e)
        })?;
        let mut scenario = Self::from_yaml(&name, &text)?;
        scenario.path = Some(path.to_owned());
        Ok(scenario)
    }

    /// A scenario from YAML text, named `name`.
    ///
    /// # Errors
    /// [`Error::Scenario`] saying what is wrong with it.
    pub fn from_yaml(name: &str, text: &str) -> Result<Scenario> {
        let doc: Value = serde_yaml::from_str(crate::files::strip_bom(text))
            .map_err(|e| scenario_error(name, "the file is not valid YAML").caused_by(e))?;
        let Value::Mapping(doc) = doc else {
            return Err(scenario_error(
                name,
                "the file is empty or not a mapping; a scenario has at least `steps:`",
            ));
        };
        let spec_version = spec::spec_version(&doc).map_err(|e| scenario_error(name, e))?;
        if let Some(problems) = spec::schema_problems(&Value::Mapping(doc.clone())) {
            return Err(scenario_error(
                name,
                format!("the file does not follow the scenario format: {problems}"),
            ));
        }
        let steps = doc
            .get("steps")
            .and_then(Value::as_sequence)
            .map(|steps| steps.iter().map(spec::Step::parse).collect())
            .unwrap_or_else(|| Ok(Vec::new()))
            .map_err(|e| scenario_error(name, e))?;
        let section = |key: &str| {
            doc.get(key)
                .and_then(Value::as_mapping)
                .cloned()
                .unwrap_or_default()
        };
        Ok(Scenario {
            name: name.to_owned(),
            path: None,
            spec_version,
            config: section("config"),
            variables: section("variables"),
            steps,
            doc,
            overrides: Vec::new(),
            keep_hosts_on_failure: false,
        })
    }

    /// The scenario's name (its file's stem).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its file, when it was loaded from one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Its spec version (`_spec_ver`, 1 when absent).
    pub fn spec_version(&self) -> u64 {
        self.spec_version
    }

    /// Its variables, with overrides.
    pub fn variables(&self) -> &Mapping {
        &self.variables
    }

    /// Its `config`, with overrides.
    pub fn config(&self) -> &Mapping {
        &self.config
    }

    /// Overrides a variable from text (`--NAME value`): a variable the file gives a boolean, a
    /// number, a list or a mapping gets the text read as one (`true`/`yes`/`on`/`1`, `42`, `1.5`,
    /// JSON `[…]`/`{…}`); text that does not read so stays text (logged). A variable the file does
    /// not have is added as text.
    pub fn set_variable(&mut self, name: &str, text: &str) {
        self.overrides.push((name.to_owned(), text.to_owned()));
        let value = match self.variables.get(name) {
            Some(original) => coerce(name, text, original),
            None => Value::from(text),
        };
        self.variables.insert(name.into(), value);
    }

    /// Overrides a `config` value by its dotted path (`settings.ssh.backend`, with or without a
    /// leading `config.`), as `--config.settings.ssh.backend VALUE` does.
    pub fn set_config(&mut self, path: &str, value: Value) {
        let path = path.strip_prefix("config.").unwrap_or(path);
        if let Some(text) = value.as_str() {
            self.overrides
                .push((format!("config.{path}"), text.to_owned()));
        }
        let mut parts: Vec<&str> = path.split('.').collect();
        let Some(last) = parts.pop() else { return };
        let mut target = &mut self.config;
        for part in parts {
            let entry = target
                .entry(part.into())
                .or_insert_with(|| Value::Mapping(Mapping::new()));
            if !entry.is_mapping() {
                *entry = Value::Mapping(Mapping::new());
            }
            match entry.as_mapping_mut() {
                Some(map) => target = map,
                None => return,
            }
        }
        target.insert(last.into(), value);
    }

    /// Keeps the hosts this scenario checked out when it fails (default: they are checked in).
    #[must_use]
    pub fn keep_hosts_on_failure(mut self, keep: bool) -> Self {
        self.keep_hosts_on_failure = keep;
        self
    }

    /// Where the scenario inventory goes: `config.inventory_path` (`~` expanded), else
    /// `<broker directory>/scenario_<name>_inventory.yaml`.
    pub fn inventory_path(&self, settings: &Settings) -> PathBuf {
        match self.config.get("inventory_path").and_then(Value::as_str) {
            Some(path) => expand_home(path),
            None => settings
                .directory()
                .join(format!("scenario_{}_inventory.yaml", self.name)),
        }
    }

    /// Where `config.log_path` sends this scenario's log: a bare file name into
    /// `<broker directory>/logs/`, an absolute file as it is, an absolute directory (no extension)
    /// to `<dir>/<name>.log`; `None` without one.
    pub fn log_path(&self, settings: &Settings) -> Option<PathBuf> {
        let given = PathBuf::from(self.config.get("log_path")?.as_str()?);
        Some(if !given.is_absolute() {
            settings.directory().join("logs").join(given)
        } else if given.extension().is_some() {
            given
        } else {
            given.join(format!("{}.log", self.name))
        })
    }

    /// A summary: name, path, config, variables and each step's name and action (`broker scenarios
    /// info`).
    pub fn info(&self) -> Value {
        let steps: Vec<Value> = self
            .steps
            .iter()
            .map(|s| {
                let mut m = Mapping::new();
                m.insert("name".into(), s.name.clone().into());
                m.insert("action".into(), s.action.clone().into());
                Value::Mapping(m)
            })
            .collect();
        let mut info = Mapping::new();
        info.insert("name".into(), self.name.clone().into());
        let path = self.path.as_ref().map(|p| p.display().to_string());
        info.insert("path".into(), path.map_or(Value::Null, Value::from));
        info.insert("spec_version".into(), self.spec_version.into());
        info.insert("config".into(), Value::Mapping(self.config.clone()));
        info.insert("variables".into(), Value::Mapping(self.variables.clone()));
        info.insert("steps".into(), Value::Sequence(steps));
        Value::Mapping(info)
    }

    /// The file's top-level metadata (everything but `config`, `variables`, `steps` and `_` keys),
    /// which `broker scenarios list --filter` looks at as `@res`.
    pub fn metadata(&self) -> Mapping {
        metadata(&self.doc)
    }

    /// Runs the scenario with `broker` (its settings with `config.settings` merged over them).
    ///
    /// # Errors
    /// [`Error::Scenario`] naming the step that failed, with the step's error as its source.
    pub async fn run(&self, broker: &Broker) -> Result<Outcome> {
        self.run_observed(broker, &|_| {}).await
    }

    /// As [`Scenario::run`], telling `observer` of each step as it goes.
    ///
    /// # Errors
    /// As [`Scenario::run`].
    pub async fn run_observed(&self, broker: &Broker, observer: &Observer<'_>) -> Result<Outcome> {
        run::run(self, broker, observer).await
    }
}

/// A scenario's top-level metadata (see [`Scenario::metadata`]).
pub(crate) fn metadata(doc: &Mapping) -> Mapping {
    doc.iter()
        .filter(|(k, _)| {
            k.as_str().is_some_and(|k| {
                !k.starts_with('_') && !matches!(k, "config" | "variables" | "steps")
            })
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A scenario error with no step.
pub(crate) fn scenario_error(scenario: &str, message: impl Into<String>) -> Error {
    Error::Scenario {
        scenario: scenario.to_owned(),
        step: None,
        message: message.into(),
        source: None,
    }
}

fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

/// `text` read as the type of `original` (see [`Scenario::set_variable`]).
fn coerce(name: &str, text: &str, original: &Value) -> Value {
    let as_text = || Value::from(text);
    let read = match original {
        Value::Bool(_) => match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Some(Value::Bool(true)),
            "false" | "0" | "no" | "off" => Some(Value::Bool(false)),
            _ => None,
        },
        Value::Number(n) if n.is_f64() => text.trim().parse::<f64>().ok().map(Value::from),
        Value::Number(_) => text.trim().parse::<i64>().ok().map(Value::from),
        Value::Sequence(_) | Value::Mapping(_) if text.starts_with(['[', '{']) => {
            serde_json::from_str::<serde_json::Value>(text)
                .ok()
                .map(|json| crate::value::to_yaml(&json))
        }
        Value::Sequence(_) | Value::Mapping(_) => None,
        _ => return as_text(),
    };
    read.unwrap_or_else(|| {
        tracing::warn!(
            "the value given for variable `{name}` does not read as the file's type; it stays text"
        );
        as_text()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(yaml: &str) -> Scenario {
        Scenario::from_yaml("t", yaml).unwrap()
    }

    #[test]
    fn overrides_take_the_type_of_the_files_variable() {
        let mut s = scenario(
            "variables: {flag: false, on: true, n: 1, x: 1.5, xs: [1], m: {a: 1}, s: text, none: null}\nsteps: []",
        );
        for (name, text) in [
            ("flag", "yes"),
            ("on", "Off"),
            ("n", "42"),
            ("x", "2.25"),
            ("xs", "[1, 2]"),
            ("m", r#"{"b": [true]}"#),
            ("s", "7"),
            ("none", "8"),
            ("new", "true"),
        ] {
            s.set_variable(name, text);
        }
        let want: Mapping = serde_yaml::from_str(
            "{flag: true, on: false, n: 42, x: 2.25, xs: [1, 2], m: {b: [true]}, s: '7', none: '8', new: 'true'}",
        )
        .unwrap();
        assert_eq!(s.variables(), &want);
        // Text that does not read as the type stays text.
        s.set_variable("n", "many");
        s.set_variable("flag", "maybe");
        s.set_variable("xs", "1,2");
        assert_eq!(s.variables()["n"], Value::from("many"));
        assert_eq!(s.variables()["flag"], Value::from("maybe"));
        assert_eq!(s.variables()["xs"], Value::from("1,2"));
        // And the user is told so, also for a list or mapping given as other text.
        let (collect, events) = crate::test_log::Collect::new();
        tracing::subscriber::with_default(collect, || {
            s.set_variable("m", "a=1");
            s.set_variable("n", "3");
        });
        let warned: Vec<String> = events
            .lock()
            .unwrap()
            .iter()
            .map(|(_, m)| m.clone())
            .collect();
        assert_eq!(
            warned,
            ["the value given for variable `m` does not read as the file's type; it stays text"]
        );
    }

    /// A scenario's metadata is its own top-level keys: not `_`-keys, `config`, `variables` or
    /// `steps`.
    #[test]
    fn metadata_is_the_top_level_keys_but_the_scenarios_own() {
        let s = scenario(
            "_spec_ver: 3\ndescription: d\ntags: [a]\nconfig: {}\nvariables: {}\nsteps: []\nauthor: me",
        );
        let want: Mapping =
            serde_yaml::from_str("{description: d, tags: [a], author: me}").unwrap();
        assert_eq!(s.metadata(), want);
    }

    #[test]
    fn the_spec_version_is_the_files_or_1() {
        assert_eq!(scenario("steps: []").spec_version(), 1);
        assert_eq!(scenario("_spec_ver: 2\nsteps: []").spec_version(), 2);
        assert_eq!(scenario("_spec_ver: 3\nsteps: []").spec_version(), 3);
    }

    #[test]
    fn config_overrides_set_dotted_paths() {
        let mut s = scenario("config: {settings: {ssh: {backend: a, port: 22}}}\nsteps: []");
        s.set_config("config.settings.ssh.backend", "b".into());
        s.set_config("settings.TestProvider.x", "y".into());
        s.set_config("inventory_path", "/tmp/i.yaml".into());
        let want: Mapping = serde_yaml::from_str(
            "{settings: {ssh: {backend: b, port: 22}, TestProvider: {x: y}}, inventory_path: /tmp/i.yaml}",
        )
        .unwrap();
        assert_eq!(s.config(), &want);
    }

    #[test]
    fn invalid_files_are_refused_saying_why() {
        for (yaml, why) in [
            ("", "empty"),
            ("steps: [", "not valid YAML"),
            ("_spec_ver: 9\nsteps: []", "version `9`"),
            ("steps: [{name: a, action: fly}]", "/steps/0/action"),
            (
                "steps: [{name: a, action: exit, retry: {count: 2, delay: 5h3h}}]",
                "/steps/0/retry/delay",
            ),
        ] {
            let e = Scenario::from_yaml("bad", yaml).unwrap_err();
            assert_eq!(e.exit_code(), 16);
            let text = crate::error::chain(&e);
            assert!(
                text.starts_with("scenario `bad`") && text.contains(why),
                "{text}"
            );
        }
    }

    #[test]
    fn paths_follow_the_config() {
        let settings = Settings::from_yaml("/b", "").unwrap();
        let s = scenario("steps: []");
        assert_eq!(
            s.inventory_path(&settings),
            PathBuf::from("/b/scenario_t_inventory.yaml")
        );
        assert_eq!(s.log_path(&settings), None);
        for (given, want) in [
            ("x.log", "/b/logs/x.log"),
            ("/var/log/s.log", "/var/log/s.log"),
            ("/var/log/scenarios", "/var/log/scenarios/t.log"),
        ] {
            let s = scenario(&format!("config: {{log_path: {given}}}\nsteps: []"));
            assert_eq!(s.log_path(&settings), Some(PathBuf::from(want)));
        }
        let s = scenario("config: {inventory_path: /i/x.yaml}\nsteps: []");
        assert_eq!(s.inventory_path(&settings), PathBuf::from("/i/x.yaml"));
    }
}
