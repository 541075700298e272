//! The scenario file format: its spec versions, its JSON schema (`schema.json`, the constraints of
//! the Python broker's format, enforced with `boon`), and the steps read from a checked file. Reads
//! no file and runs nothing.

use std::sync::OnceLock;
use std::time::Duration;

use serde_yaml::{Mapping, Value};

/// The spec versions this broker runs (`_spec_ver`; a file without one is version 1).
pub const SPEC_VERSIONS: [u64; 3] = [1, 2, 3];

/// The newest spec version, which `broker scenarios migrate` brings files to.
pub const CURRENT_SPEC_VERSION: u64 = 3;

/// The actions a step may name.
pub const ACTIONS: [&str; 13] = [
    "checkout",
    "checkin",
    "inventory",
    "ssh",
    "scp",
    "sftp",
    "execute",
    "run_scenarios",
    "exit",
    "output",
    "provider_info",
    "assert",
    "local_exec",
];

const SCHEMA_TEXT: &str = include_str!("schema.json");
const SCHEMA_URL: &str = "https://broker.invalid/scenario-schema.json";

/// The compiled schema (compiled once per process).
fn schema() -> &'static Result<(boon::Schemas, boon::SchemaIndex), String> {
    static SCHEMA: OnceLock<Result<(boon::Schemas, boon::SchemaIndex), String>> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let json: serde_json::Value = serde_json::from_str(SCHEMA_TEXT)
            .map_err(|e| format!("the schema is not JSON: {e}"))?;
        let mut schemas = boon::Schemas::new();
        let mut compiler = boon::Compiler::new();
        compiler
            .add_resource(SCHEMA_URL, json)
            .map_err(|e| format!("the schema does not load: {e}"))?;
        let index = compiler
            .compile(SCHEMA_URL, &mut schemas)
            .map_err(|e| format!("the schema does not compile: {e}"))?;
        Ok((schemas, index))
    })
}

/// Why `doc` does not hold to the scenario schema, one problem per `; `; `None` when it does.
pub fn schema_problems(doc: &Value) -> Option<String> {
    let (schemas, index) = match schema() {
        Ok(compiled) => compiled,
        Err(e) => return Some(e.clone()),
    };
    let json = crate::value::to_json(doc);
    let error = schemas.validate(&json, *index).err()?;
    // The first line names the schema; the lines under it are the problems, most specific last.
    let problems: Vec<String> = error
        .to_string()
        .lines()
        .skip(1)
        .map(|line| line.trim().trim_start_matches("- ").to_owned())
        .filter(|line| !line.is_empty())
        .collect();
    Some(if problems.is_empty() {
        error.to_string()
    } else {
        problems.join("; ")
    })
}

/// The file's `_spec_ver` (1 when absent).
///
/// # Errors
/// A message naming the version when it is not one this broker runs.
pub fn spec_version(doc: &Mapping) -> Result<u64, String> {
    let Some(given) = doc.get("_spec_ver") else {
        return Ok(1);
    };
    let version = given.as_u64().filter(|v| SPEC_VERSIONS.contains(v));
    version.ok_or_else(|| {
        format!(
            "unsupported scenario format version `{}`: this broker runs versions 1, 2 and 3; \
             upgrade broker to run it",
            crate::value::scalar_text(given).unwrap_or_else(|| "?".into())
        )
    })
}

/// A duration written as whole seconds (`30`) or with a unit (`30s`, `5m`, `2h`, `1d`).
pub fn duration(value: &Value) -> Result<Duration, String> {
    if let Some(secs) = value.as_u64() {
        return Ok(Duration::from_secs(secs));
    }
    match value.as_str() {
        Some(text) => crate::time::parse_duration(text).map_err(|e| e.to_string()),
        None => Err(format!(
            "`{}` is not a duration; write seconds (`30`) or `30s`, `5m`, `2h`, `1d`",
            crate::value::scalar_text(value).unwrap_or_default()
        )),
    }
}

/// What a failed step does next.
#[derive(Debug, Clone)]
pub enum OnError {
    /// Fail the scenario (unless `exit_on_error: false`).
    Fail,
    /// Carry on (`on_error: continue`).
    Continue,
    /// Run these steps, then carry on.
    Steps(Vec<Step>),
}

/// A step's `loop`.
#[derive(Debug, Clone)]
pub struct Loop {
    /// An inventory filter (`@inv`, `@scenario_inv`) or an expression.
    pub iterable: String,
    /// The loop variables: one name, or several to unpack each item into (`key, value`).
    pub vars: Vec<String>,
    /// Whether a failed iteration is noted and the loop goes on.
    pub continue_on_error: bool,
}

/// A step's `capture`.
#[derive(Debug, Clone)]
pub struct Capture {
    /// The variable that receives the value.
    pub name: String,
    /// A template over `step.output` that makes the value.
    pub transform: Option<String>,
    /// For loops: an expression giving each iteration's key (with the loop variables and `result`).
    pub key: Option<String>,
}

/// One step of a scenario, as the file says it.
#[derive(Debug, Clone)]
pub struct Step {
    /// Its name (`steps.NAME` in templates).
    pub name: String,
    /// Its action, one of [`ACTIONS`].
    pub action: String,
    /// Its arguments, templates not yet rendered.
    pub arguments: Value,
    /// `with.hosts`: the hosts the action targets.
    pub hosts: Option<String>,
    /// `when`: run only when this holds.
    pub when: Option<String>,
    /// `loop`.
    pub repeat: Option<Loop>,
    /// `capture`.
    pub capture: Option<Capture>,
    /// `on_error`.
    pub on_error: OnError,
    /// `exit_on_error` (default true).
    pub exit_on_error: bool,
    /// `parallel` (default true): run a multi-host action on its hosts at once.
    pub parallel: bool,
    /// `retry.count` (default 1: one attempt).
    pub attempts: u32,
    /// `retry.delay`.
    pub delay: Duration,
    /// `timeout`.
    pub timeout: Option<Duration>,
}

impl Step {
    /// A step from its mapping in a file that holds to the schema.
    ///
    /// # Errors
    /// A message for what the schema cannot say (a duration such as `1h30m5h`).
    pub fn parse(value: &Value) -> Result<Step, String> {
        let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
        let name = text("name").unwrap_or_default();
        let within = |e: String| format!("step `{name}`: {e}");
        let on_error = match value.get("on_error") {
            Some(Value::Sequence(steps)) => OnError::Steps(
                steps
                    .iter()
                    .map(Step::parse)
                    .collect::<Result<_, _>>()
                    .map_err(within)?,
            ),
            Some(_) => OnError::Continue,
            None => OnError::Fail,
        };
        let retry = value.get("retry");
        let attempts = retry
            .and_then(|r| r.get("count"))
            .and_then(Value::as_u64)
            .map_or(1, |n| u32::try_from(n).unwrap_or(u32::MAX));
        let delay = match retry.and_then(|r| r.get("delay")) {
            Some(d) => duration(d).map_err(within)?,
            None => Duration::ZERO,
        };
        let timeout = match value.get("timeout") {
            Some(t) => Some(duration(t).map_err(within)?),
            None => None,
        };
        Ok(Step {
            action: text("action").unwrap_or_default(),
            arguments: value
                .get("arguments")
                .cloned()
                .unwrap_or_else(|| Value::Mapping(Mapping::new())),
            hosts: value
                .get("with")
                .and_then(|w| w.get("hosts"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            when: text("when"),
            repeat: value.get("loop").map(parse_loop),
            capture: value.get("capture").map(|c| Capture {
                name: field(c, "as").unwrap_or_default(),
                transform: field(c, "transform"),
                key: field(c, "key"),
            }),
            on_error,
            exit_on_error: value
                .get("exit_on_error")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            parallel: value
                .get("parallel")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            attempts: attempts.max(1),
            delay,
            timeout,
            name,
        })
    }
}

fn field(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn parse_loop(value: &Value) -> Loop {
    Loop {
        iterable: field(value, "iterable").unwrap_or_default(),
        vars: field(value, "iter_var")
            .unwrap_or_default()
            .split(',')
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect(),
        continue_on_error: field(value, "on_error").as_deref() == Some("continue"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(yaml: &str) -> Value {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn a_loop_reads_its_iterable_its_variables_and_what_an_error_does() {
        let read = |yaml: &str| {
            let Loop {
                iterable,
                vars,
                continue_on_error,
            } = parse_loop(&doc(yaml));
            (iterable, vars, continue_on_error)
        };
        assert_eq!(
            read("{iterable: '@scenario_inv', iter_var: ' key , value ', on_error: continue}"),
            (
                "@scenario_inv".into(),
                vec!["key".into(), "value".into()],
                true
            )
        );
        assert_eq!(
            read("{iterable: '{{ xs }}', iter_var: x}"),
            ("{{ xs }}".into(), vec!["x".into()], false)
        );
        assert_eq!(read("{on_error: stop}"), (String::new(), vec![], false));
    }

    #[test]
    fn the_schema_accepts_every_step_key_and_refuses_unknown_ones() {
        let full = doc(r#"
_spec_ver: 3
description: all keys
tags: [a]
config: {inventory_path: /tmp/x.yaml, log_path: x.log, settings: {ssh: {backend: x}}}
variables: {a: 1, b: [1], c: {d: null}}
steps:
  - name: s
    description: d
    action: ssh
    arguments: {command: id}
    with: {hosts: scenario_inventory}
    when: "a == 1"
    loop: {iterable: "b", iter_var: x, on_error: continue}
    capture: {as: out, transform: "{{ step.output }}", key: "x"}
    on_error: [{name: n, action: output, arguments: {content: x}}]
    exit_on_error: false
    parallel: false
    retry: {count: 2, delay: 30s}
    timeout: 5m
"#);
        assert_eq!(schema_problems(&full), None);
        for (bad, why) in [
            ("steps: [{name: s, action: fly}]", "/steps/0/action"),
            ("steps: [{name: s}]", "action"),
            ("steps: [{name: s, action: exit, colour: red}]", "colour"),
            (
                "steps: [{name: s, action: exit, retry: {count: 0}}]",
                "/steps/0/retry/count",
            ),
            (
                "steps: [{name: s, action: exit, timeout: 5 minutes}]",
                "/steps/0/timeout",
            ),
            (
                "steps: [{name: s, action: exit, on_error: stop}]",
                "/steps/0/on_error",
            ),
            ("config: {colour: red}\nsteps: []", "colour"),
            ("variables: []\nsteps: []", "/variables"),
            ("description: x", "steps"),
        ] {
            let problems = schema_problems(&doc(bad)).unwrap_or_else(|| panic!("{bad} passed"));
            assert!(problems.contains(why), "{bad}: {problems}");
        }
    }

    #[test]
    fn spec_versions_one_to_three_run_and_others_are_refused() {
        assert_eq!(spec_version(&Mapping::new()), Ok(1));
        for v in 1..=3u64 {
            let mut m = Mapping::new();
            m.insert("_spec_ver".into(), v.into());
            assert_eq!(spec_version(&m), Ok(v));
        }
        let mut m = Mapping::new();
        m.insert("_spec_ver".into(), 4.into());
        let e = spec_version(&m).unwrap_err();
        assert!(e.contains("version `4`"), "{e}");
    }

    #[test]
    fn durations_are_seconds_or_units() {
        assert_eq!(duration(&Value::from(7)), Ok(Duration::from_secs(7)));
        assert_eq!(duration(&Value::from("2m")), Ok(Duration::from_secs(120)));
        assert!(duration(&Value::from("soon")).is_err());
        let step = Step::parse(&doc(
            "{name: s, action: exit, retry: {count: 3, delay: 2}, timeout: 1h, on_error: continue}",
        ))
        .unwrap();
        assert_eq!(
            (step.attempts, step.delay, step.timeout),
            (3, Duration::from_secs(2), Some(Duration::from_secs(3600)))
        );
        assert!(matches!(step.on_error, OnError::Continue));
        assert!(step.exit_on_error && step.parallel);
    }
}
