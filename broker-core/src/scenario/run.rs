//! Running a scenario: steps in order, each with its `when`, `retry`, `timeout`, `loop`, `capture` and
//! `on_error`; the template context; the scenario inventory, written after every step; and, at the
//! end, the hosts the scenario checked out kept (success) or checked in (failure).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use serde_yaml::{Mapping, Value};

use super::spec::{OnError, Step};
use super::template::{Context, Templates};
use super::{Observer, Outcome, Scenario, StepEvent};
use crate::error::{Error, Result};
use crate::{Broker, HostGuard};

/// Why steps stopped before their end.
pub(super) enum Stop {
    /// An `exit` step with code 0: the scenario ends, successfully.
    Exit,
    /// The scenario failed.
    Failed(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Failed(e)
    }
}

type Steps<'a> = Pin<Box<dyn Future<Output = std::result::Result<(), Stop>> + Send + 'a>>;

/// The state of one run.
pub(super) struct Runner<'s> {
    pub(super) scenario: &'s Scenario,
    pub(super) broker: Broker,
    pub(super) observer: &'s Observer<'s>,
    pub(super) templates: Templates,
    /// Variables and captures.
    pub(super) variables: Mapping,
    /// Each step's memory (`name`, `output`, `status`), by name.
    pub(super) memory: Mapping,
    /// The hosts this scenario checked out and still holds: its scenario inventory.
    pub(super) held: Vec<HostGuard>,
    pub(super) inventory_path: PathBuf,
}

/// Runs `scenario` (see [`Scenario::run`]).
pub(super) async fn run(
    scenario: &Scenario,
    broker: &Broker,
    observer: &Observer<'_>,
) -> Result<Outcome> {
    let broker = match scenario.config.get("settings").and_then(Value::as_mapping) {
        Some(settings) if !settings.is_empty() => {
            broker.with_settings(broker.settings().overlaid(settings.clone()))?
        }
        _ => broker.clone(),
    };
    let inventory_path = scenario.inventory_path(broker.settings());
    let mut runner = Runner {
        scenario,
        broker,
        observer,
        templates: Templates::new(),
        variables: scenario.variables.clone(),
        memory: Mapping::new(),
        held: Vec::new(),
        inventory_path,
    };
    // A fresh run starts from an empty scenario inventory.
    runner.save_inventory()?;
    let ran = runner.steps(&scenario.steps).await;
    match ran {
        Ok(()) | Err(Stop::Exit) => runner.finish(),
        Err(Stop::Failed(e)) => Err(runner.fail(e).await),
    }
}

impl<'s> Runner<'s> {
    /// Success: the hosts still held become the user's.
    fn finish(mut self) -> Result<Outcome> {
        let hosts = self
            .held
            .drain(..)
            .map(|g| g.keep().record().clone())
            .collect();
        Ok(Outcome {
            hosts,
            inventory_path: self.inventory_path,
        })
    }

    /// Failure: the hosts still held are checked in (or kept, when asked); the error is returned.
    async fn fail(mut self, error: Error) -> Error {
        let held: Vec<HostGuard> = self.held.drain(..).collect();
        let mut left = Vec::new();
        for guard in held {
            if self.scenario.keep_hosts_on_failure {
                let _host = guard.keep();
                continue;
            }
            let name = guard.record().display_name();
            if let Err(e) = guard.checkin().await {
                left.push(format!("{name} ({})", crate::error::chain(&e)));
            }
        }
        if let Err(e) = self.save_inventory() {
            tracing::warn!("{}", crate::error::chain(&e));
        }
        if !left.is_empty() {
            tracing::error!(
                "checking in the hosts of failed scenario `{}` failed for {}; retry with `broker checkin`",
                self.scenario.name,
                left.join(", ")
            );
        }
        error
    }

    pub(super) fn emit(&self, event: StepEvent) {
        (self.observer)(&event);
    }

    /// Writes the scenario inventory: the records of the hosts held, their secrets masked as the
    /// inventory's are.
    pub(super) fn save_inventory(&self) -> Result<()> {
        let records = self.scenario_inventory();
        let text = serde_yaml::to_string(&records)
            .map_err(|e| Error::internal("writing the scenario inventory", e.to_string()))?;
        if let Some(parent) = self.inventory_path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io("creating the scenario inventory's directory", parent, e))?;
        }
        crate::files::replace(
            &self.inventory_path,
            text.as_bytes(),
            "writing the scenario inventory",
        )
    }

    /// The records of the scenario inventory, as templates see them (secrets masked).
    pub(super) fn scenario_inventory(&self) -> Vec<Value> {
        self.held
            .iter()
            .map(|g| g.record().masked().to_value())
            .collect()
    }

    /// Runs `steps` in order, writing the scenario inventory after each.
    pub(super) fn steps<'a>(&'a mut self, steps: &'a [Step]) -> Steps<'a> {
        Box::pin(async move {
            let mut previous = Value::Null;
            for step in steps {
                let outcome = self.step(step, &previous).await;
                self.save_inventory()?;
                outcome?;
                previous = self
                    .memory
                    .get(step.name.as_str())
                    .cloned()
                    .unwrap_or_default();
            }
            Ok(())
        })
    }

    /// The template context of `step`.
    pub(super) fn context(&self, step: &str, previous: &Value) -> Mapping {
        let mut cx = Mapping::new();
        cx.insert(
            "step".into(),
            self.memory.get(step).cloned().unwrap_or_default(),
        );
        cx.insert("previous_step".into(), previous.clone());
        cx.insert("steps".into(), Value::Mapping(self.memory.clone()));
        cx.insert(
            "scenario_inventory".into(),
            Value::Sequence(self.scenario_inventory()),
        );
        for (k, v) in &self.variables {
            cx.insert(k.clone(), v.clone());
        }
        cx
    }

    fn remember(&mut self, step: &str, status: &str, output: Value) {
        let mut m = Mapping::new();
        m.insert("name".into(), step.into());
        m.insert("output".into(), output);
        m.insert("status".into(), status.into());
        self.memory.insert(step.into(), Value::Mapping(m));
    }

    /// One step: its condition, its attempts, then what its failure calls for.
    async fn step(&mut self, step: &Step, previous: &Value) -> std::result::Result<(), Stop> {
        self.remember(&step.name, "running", Value::Null);
        let mut cx = self.context(&step.name, previous);
        if let (Some(when), None) = (&step.when, &step.repeat) {
            let holds = self.templates.condition(when, &Context::new(&cx));
            if !matches!(holds, Ok(true)) {
                self.remember(&step.name, "skipped", Value::Null);
                let reason = holds.err();
                self.emit(StepEvent::Skipped {
                    step: step.name.clone(),
                    reason,
                });
                return Ok(());
            }
        }
        self.emit(StepEvent::Started {
            step: step.name.clone(),
            action: step.action.clone(),
        });
        let mut attempt = 1;
        let error = loop {
            let mut retry = Mapping::new();
            retry.insert("attempt".into(), attempt.into());
            retry.insert("max_attempts".into(), step.attempts.into());
            cx.insert("retry".into(), Value::Mapping(retry));
            match self.attempt(step, &cx).await {
                Ok(output) => {
                    self.remember(&step.name, "completed", output.clone());
                    self.capture(step, output, &cx)?;
                    self.emit(StepEvent::Finished {
                        step: step.name.clone(),
                    });
                    return Ok(());
                }
                Err(Stop::Exit) => return Err(Stop::Exit),
                Err(Stop::Failed(e)) if attempt < step.attempts => {
                    attempt += 1;
                    self.emit(StepEvent::Retrying {
                        step: step.name.clone(),
                        attempt,
                        of: step.attempts,
                        error: crate::error::chain(&e),
                    });
                    tokio::time::sleep(step.delay).await;
                }
                Err(Stop::Failed(e)) => break e,
            }
        };
        self.failed(step, error).await
    }

    /// A step whose last attempt failed: `on_error`, `exit_on_error`, or the scenario fails.
    async fn failed(&mut self, step: &Step, error: Error) -> std::result::Result<(), Stop> {
        let text = crate::error::chain(&error);
        self.remember(&step.name, "failed", Value::from(text.clone()));
        let handled = !matches!(step.on_error, OnError::Fail) || !step.exit_on_error;
        self.emit(StepEvent::Failed {
            step: step.name.clone(),
            error: text,
            handled,
        });
        match &step.on_error {
            OnError::Continue => Ok(()),
            OnError::Steps(steps) => self.steps(steps).await,
            OnError::Fail if !step.exit_on_error => Ok(()),
            OnError::Fail => Err(Stop::Failed(self.step_error(step, error))),
        }
    }

    /// The scenario's error for a step's: the step named, the step's error as the cause (or as the
    /// message, when it is the scenario's own: a failed `assert`, an `exit`).
    fn step_error(&self, step: &Step, error: Error) -> Error {
        let scenario = self.scenario.name.clone();
        match error {
            Error::Scenario {
                step: None,
                message,
                source,
                ..
            } => Error::Scenario {
                scenario,
                step: Some(step.name.clone()),
                message,
                source,
            },
            Error::Scenario { .. } => error,
            other => Error::Scenario {
                scenario,
                step: Some(step.name.clone()),
                message: format!("`{}` failed", step.action),
                source: Some(Box::new(other)),
            },
        }
    }

    /// One attempt of a step, within its `timeout`.
    async fn attempt(&mut self, step: &Step, cx: &Mapping) -> std::result::Result<Value, Stop> {
        let Some(limit) = step.timeout else {
            return self.attempt_untimed(step, cx).await;
        };
        match tokio::time::timeout(limit, self.attempt_untimed(step, cx)).await {
            Ok(done) => done,
            // Dropping the attempt stops what it was doing: a `local_exec`'s process group is
            // killed, a checkout under way gives back what it made.
            Err(_) => Err(Stop::Failed(Error::Timeout {
                operation: format!("step `{}`", step.name),
                after: limit,
            })),
        }
    }

    async fn attempt_untimed(
        &mut self,
        step: &Step,
        cx: &Mapping,
    ) -> std::result::Result<Value, Stop> {
        let context = Context::new(cx);
        let hosts = match &step.hosts {
            Some(reference) => Some(self.resolve_hosts(reference, &context)?),
            None => None,
        };
        if step.repeat.is_some() {
            return self.repeat(step, cx, hosts.as_deref()).await;
        }
        let args = self
            .templates
            .render(&step.arguments, &context)
            .map_err(|e| self.own_error(e))?;
        self.dispatch(step, args, hosts.as_deref(), step.parallel, cx)
            .await
    }

    /// A loop step: the action once per item of its iterable, the outputs by key.
    async fn repeat(
        &mut self,
        step: &Step,
        cx: &Mapping,
        hosts: Option<&[crate::Host]>,
    ) -> std::result::Result<Value, Stop> {
        let Some(spec) = &step.repeat else {
            return Ok(Value::Null);
        };
        let items = self.iterable(&spec.iterable, &Context::new(cx))?;
        let mut outputs = Mapping::new();
        for item in items {
            let mut loop_cx = cx.clone();
            let default_key =
                bind_loop_vars(&mut loop_cx, &spec.vars, &item).map_err(|e| self.own_error(e))?;
            let context = Context::new(&loop_cx);
            if let Some(when) = &step.when
                && !matches!(self.templates.condition(when, &context), Ok(true))
            {
                continue;
            }
            self.emit(StepEvent::Iteration {
                step: step.name.clone(),
                item: default_key.clone(),
            });
            let done = match self.templates.render(&step.arguments, &context) {
                Ok(args) => self.dispatch(step, args, hosts, false, &loop_cx).await,
                Err(e) => Err(Stop::Failed(self.own_error(e))),
            };
            match done {
                Ok(result) => {
                    let key = self.loop_key(step, &loop_cx, &result, default_key)?;
                    outputs.insert(key.into(), result);
                }
                Err(Stop::Failed(e)) if spec.continue_on_error => {
                    let mut failed = Mapping::new();
                    failed.insert("error".into(), crate::error::chain(&e).into());
                    outputs.insert(default_key.into(), Value::Mapping(failed));
                }
                Err(stop) => return Err(stop),
            }
        }
        Ok(Value::Mapping(outputs))
    }

    /// An iteration's key: `capture.key` (with `result`), else the item's.
    fn loop_key(
        &self,
        step: &Step,
        loop_cx: &Mapping,
        result: &Value,
        default_key: String,
    ) -> std::result::Result<String, Stop> {
        let Some(expr) = step.capture.as_ref().and_then(|c| c.key.as_deref()) else {
            return Ok(default_key);
        };
        let mut cx = loop_cx.clone();
        cx.insert("result".into(), result.clone());
        let key = self
            .templates
            .eval(expr, &Context::new(&cx))
            .map_err(|e| self.own_error(e))?;
        Ok(key_text(&key))
    }

    /// The items of a loop's `iterable`: an inventory filter's records, or an expression's value
    /// (a mapping gives its `[key, value]` pairs; a single value, itself).
    fn iterable(&self, expr: &str, cx: &Context) -> Result<Vec<Value>> {
        let value = if expr.contains("@scenario_inv") || expr.contains("@inv") {
            Value::Sequence(self.filtered(expr)?)
        } else {
            let trimmed = expr.trim();
            let inner = trimmed
                .strip_prefix("{{")
                .and_then(|t| t.strip_suffix("}}"))
                .unwrap_or(trimmed);
            self.templates
                .eval(inner.trim(), cx)
                .map_err(|e| self.own_error(e))?
        };
        Ok(match value {
            Value::Sequence(items) => items,
            Value::Mapping(map) => map
                .into_iter()
                .map(|(k, v)| Value::Sequence(vec![k, v]))
                .collect(),
            Value::Null => Vec::new(),
            other => vec![other],
        })
    }

    /// The records an `@scenario_inv` or `@inv` filter keeps, as mappings.
    pub(super) fn filtered(&self, expr: &str) -> Result<Vec<Value>> {
        let (records, key) = if expr.contains("@scenario_inv") {
            let held = self.held.iter().map(|g| g.record().clone()).collect();
            (held, "scenario_inv")
        } else {
            (self.broker.inventory().list()?, "inv")
        };
        let filter = crate::filter::Filter::parse(expr, key)?;
        let kept = filter.select(&records);
        Ok(kept
            .into_iter()
            .map(|i| records[i].masked().to_value())
            .collect())
    }

    /// Stores a step's output as `capture.as` (through `capture.transform`).
    fn capture(
        &mut self,
        step: &Step,
        output: Value,
        cx: &Mapping,
    ) -> std::result::Result<(), Stop> {
        let Some(capture) = &step.capture else {
            return Ok(());
        };
        let value = match &capture.transform {
            Some(transform) => {
                let mut cx = cx.clone();
                let mut memory = Mapping::new();
                memory.insert("name".into(), step.name.clone().into());
                memory.insert("output".into(), output);
                memory.insert("status".into(), "completed".into());
                cx.insert("step".into(), Value::Mapping(memory));
                self.templates
                    .render_text(transform, &Context::new(&cx))
                    .map_err(|e| self.own_error(format!("capture `{}`: {e}", capture.name)))?
            }
            None => output,
        };
        self.variables.insert(capture.name.clone().into(), value);
        Ok(())
    }

    /// An error of the scenario itself (a template, an argument), not of a host or provider.
    pub(super) fn own_error(&self, message: impl Into<String>) -> Error {
        super::scenario_error(&self.scenario.name, message)
    }
}

/// Binds a loop item to the loop variables (unpacking it into several), returning its default key.
fn bind_loop_vars(
    cx: &mut Mapping,
    vars: &[String],
    item: &Value,
) -> std::result::Result<String, String> {
    match vars {
        [one] => {
            cx.insert(one.clone().into(), item.clone());
            Ok(key_text(item))
        }
        many => {
            let parts = item.as_sequence().filter(|p| p.len() >= many.len());
            let Some(parts) = parts else {
                return Err(format!(
                    "a loop item cannot be unpacked into {} variables ({}): {}",
                    many.len(),
                    many.join(", "),
                    key_text(item)
                ));
            };
            for (name, value) in many.iter().zip(parts) {
                cx.insert(name.clone().into(), value.clone());
            }
            Ok(parts.first().map(key_text).unwrap_or_default())
        }
    }
}

/// A value as a key: scalars as written, a host record by its hostname or name, else inline YAML.
pub(super) fn key_text(value: &Value) -> String {
    if let Some(text) = crate::value::scalar_text(value) {
        return text;
    }
    for field in ["hostname", "name"] {
        if let Some(name) = value.get(field).and_then(Value::as_str) {
            return name.to_owned();
        }
    }
    serde_yaml::to_string(value)
        .map(|t| t.trim().replace('\n', " "))
        .unwrap_or_default()
}
