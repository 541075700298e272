//! The actions a step can take, each given its rendered arguments and target hosts, each returning
//! the step's output as templates see it (a command's result is `{stdout, stderr, status}`; several
//! hosts' results are keyed by hostname).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_yaml::{Mapping, Value};

use super::run::{Runner, Stop};
use super::spec::Step;
use super::template::Context;
use super::{Scenario, StepEvent};
use crate::error::{Error, Result};
use crate::session::ExecOutput;
use crate::{CheckoutRequest, Host, HostRecord};

type Outcome = std::result::Result<Value, Stop>;

/// How many hosts a multi-host action works on at once.
const HOSTS_AT_ONCE: usize = 10;

/// How long a `local_exec` without a `timeout` may run: as long as it takes (a deadline past what a
/// clock can hold is no deadline to `tokio::time::timeout`).
const NO_TIMEOUT: Duration = Duration::MAX;

impl Runner<'_> {
    /// Runs `step`'s action with `args` on `hosts` (`with`, when given).
    pub(super) async fn dispatch(
        &mut self,
        step: &Step,
        args: Value,
        hosts: Option<&[Host]>,
        parallel: bool,
        cx: &Mapping,
    ) -> Outcome {
        let args = match args {
            Value::Mapping(m) => m,
            Value::Null => Mapping::new(),
            _ => return Err(self.own_error("`arguments` must be a mapping").into()),
        };
        let hosts = hosts.map(<[Host]>::to_vec);
        match step.action.as_str() {
            "checkout" => self.checkout(args).await.map_err(Stop::from),
            "checkin" => self.checkin(&args, hosts).await.map_err(Stop::from),
            "inventory" => self.inventory_action(&args).await.map_err(Stop::from),
            "ssh" | "scp" | "sftp" => {
                let hosts = self.targets(hosts, &step.action)?;
                self.on_hosts(&step.action, &args, hosts, parallel)
                    .await
                    .map_err(Stop::from)
            }
            "execute" => self.execute(args).await.map_err(Stop::from),
            "run_scenarios" => self.run_scenarios(&args).await.map_err(Stop::from),
            "exit" => Err(self.exit(&args)),
            "output" => self.output(&args).map_err(Stop::from),
            "assert" => self.assert(&args, cx).map_err(Stop::from),
            "provider_info" => self.provider_info(args).await.map_err(Stop::from),
            "local_exec" => self.local_exec(&args).await.map_err(Stop::from),
            other => Err(self.own_error(format!("unknown action `{other}`")).into()),
        }
    }

    /// The hosts a `with.hosts` names: `scenario_inventory`, `inventory`, an `@scenario_inv` or
    /// `@inv` filter, or a template giving host records.
    pub(super) fn resolve_hosts(&self, reference: &str, cx: &Context) -> Result<Vec<Host>> {
        match reference.trim() {
            "scenario_inventory" => Ok(self.held.iter().map(|g| (**g).clone()).collect()),
            "inventory" => self.broker.from_inventory(None),
            r if r.contains("@scenario_inv") || r.contains("@inv") => {
                self.filtered(r)?.iter().map(|v| self.host_of(v)).collect()
            }
            r => {
                let value = self
                    .templates
                    .render_text(r, cx)
                    .map_err(|e| self.own_error(e))?;
                self.hosts_of(&value)
            }
        }
    }

    /// Hosts from a value of host records (one, or a list).
    fn hosts_of(&self, value: &Value) -> Result<Vec<Host>> {
        match value {
            Value::Sequence(items) => items.iter().map(|v| self.host_of(v)).collect(),
            Value::Mapping(_) => Ok(vec![self.host_of(value)?]),
            Value::Null => Ok(Vec::new()),
            other => Err(self.own_error(format!(
                "`{}` does not name hosts; give host records (e.g. `{{{{ scenario_inventory }}}}`)",
                super::run::key_text(other)
            ))),
        }
    }

    /// The host of a record: the one this scenario holds, else the record attached to its provider.
    fn host_of(&self, value: &Value) -> Result<Host> {
        let Value::Mapping(fields) = value else {
            return Err(self.own_error("a host must be a host record (a mapping)"));
        };
        let record = HostRecord::from_mapping(fields.clone());
        if let Some(guard) = self.held.iter().find(|g| g.record().id() == record.id()) {
            return Ok((**guard).clone());
        }
        self.broker.attach(record)
    }

    fn targets(
        &self,
        hosts: Option<Vec<Host>>,
        action: &str,
    ) -> std::result::Result<Vec<Host>, Stop> {
        let hosts = hosts.unwrap_or_else(|| self.held.iter().map(|g| (**g).clone()).collect());
        if hosts.is_empty() {
            return Err(self
                .own_error(format!(
                    "`{action}` has no hosts: name them with `with: {{hosts: …}}`, or check hosts \
                     out in an earlier step"
                ))
                .into());
        }
        Ok(hosts)
    }

    async fn checkout(&mut self, mut args: Mapping) -> Result<Value> {
        if !args.contains_key("_broker_origin") {
            let origin = format!("scenario:{}", self.scenario.name);
            args.insert("_broker_origin".into(), origin.into());
        }
        let guards = self
            .broker
            .checkout(CheckoutRequest::new().args(args))
            .await?;
        let records: Vec<Value> = guards
            .iter()
            .map(|g| g.record().masked().to_value())
            .collect();
        self.held.extend(guards);
        self.save_inventory()?;
        Ok(Value::Sequence(records))
    }

    async fn checkin(&mut self, args: &Mapping, hosts: Option<Vec<Host>>) -> Result<Value> {
        let records: Vec<HostRecord> = match (hosts, args.get("hosts")) {
            (Some(hosts), _) if !hosts.is_empty() => {
                hosts.iter().map(|h| h.record().clone()).collect()
            }
            (_, Some(named)) => self
                .hosts_of(named)?
                .iter()
                .map(|h| h.record().clone())
                .collect(),
            _ => self.held.iter().map(|g| g.record().clone()).collect(),
        };
        let mut failures = Vec::new();
        let mut others = Vec::new();
        for record in records {
            let id = record.id();
            match self.held.iter().position(|g| g.record().id() == id) {
                Some(i) => {
                    let guard = self.held.remove(i);
                    if let Err(e) = guard.checkin().await {
                        failures.push(e);
                    }
                }
                None => others.push(record),
            }
        }
        for outcome in self.broker.checkin(others, false).await {
            if let Err(e) = outcome.result {
                failures.push(e);
            }
        }
        self.save_inventory()?;
        match failures.into_iter().next() {
            Some(first) => Err(first),
            None => Ok(Value::Bool(true)),
        }
    }

    async fn inventory_action(&self, args: &Mapping) -> Result<Value> {
        let filter = match args.get("sync").and_then(Value::as_str) {
            Some(spec) => {
                self.broker.sync_inventory(spec).await?;
                None
            }
            None => args.get("filter").and_then(Value::as_str),
        };
        let records = crate::selection::filter_records(self.broker.inventory().list()?, filter)?;
        Ok(Value::Sequence(
            records.iter().map(HostRecord::to_value).collect(),
        ))
    }

    /// `ssh`, `scp` or `sftp` on each host (up to ten at once unless `parallel: false`): one host's
    /// result as it is, several keyed by hostname.
    async fn on_hosts(
        &self,
        action: &str,
        args: &Mapping,
        hosts: Vec<Host>,
        parallel: bool,
    ) -> Result<Value> {
        let work = Arc::new(HostWork::new(action, args).map_err(|e| self.own_error(e))?);
        let at_once = if parallel { HOSTS_AT_ONCE } else { 1 };
        let gate = Arc::new(tokio::sync::Semaphore::new(at_once));
        let mut tasks = tokio::task::JoinSet::new();
        let single = hosts.len() == 1;
        for (i, host) in hosts.into_iter().enumerate() {
            let (work, gate) = (Arc::clone(&work), Arc::clone(&gate));
            tasks.spawn(async move {
                let _turn = gate.acquire_owned().await;
                let key = host.display_name();
                (i, key, work.run(&host).await)
            });
        }
        let mut results = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let (i, key, result) =
                joined.map_err(|e| Error::internal("a host task of the step failed", e))?;
            let result = result.map_err(|e| naming_the_host(e, &key))?;
            results.push((i, key, result));
        }
        results.sort_by_key(|(i, _, _)| *i);
        if single && let Some((_, _, only)) = results.pop() {
            return Ok(only);
        }
        Ok(Value::Mapping(
            results
                .into_iter()
                .map(|(_, key, result)| (Value::from(key), result))
                .collect(),
        ))
    }

    async fn execute(&self, args: Mapping) -> Result<Value> {
        self.broker.execute(CheckoutRequest::new().args(args)).await
    }

    async fn run_scenarios(&self, args: &Mapping) -> Result<Value> {
        let paths: Vec<String> = match args.get("paths") {
            Some(Value::Sequence(paths)) => paths
                .iter()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect(),
            Some(Value::String(one)) => vec![one.clone()],
            _ => Vec::new(),
        };
        let mut results = Vec::new();
        for path in paths {
            let found = super::catalog::find(self.broker.settings(), &path)?;
            let mut nested = Scenario::load(&found)?;
            for (key, text) in &self.scenario.overrides {
                match key.strip_prefix("config.") {
                    Some(dotted) => nested.set_config(dotted, Value::from(text.as_str())),
                    None => nested.set_variable(key, text),
                }
            }
            let nested = nested.keep_hosts_on_failure(self.scenario.keep_hosts_on_failure);
            let run: std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send + '_>> =
                Box::pin(super::run::run(&nested, &self.broker, self.observer));
            run.await?;
            let mut done = Mapping::new();
            done.insert("path".into(), path.into());
            done.insert("success".into(), true.into());
            results.push(Value::Mapping(done));
        }
        Ok(Value::Sequence(results))
    }

    /// `exit`: code 0 ends the scenario successfully, any other fails it.
    fn exit(&self, args: &Mapping) -> Stop {
        let code = args
            .get("return_code")
            .and_then(|c| crate::value::scalar_text(c)?.trim().parse::<i64>().ok())
            .unwrap_or(0);
        let message = args
            .get("message")
            .and_then(crate::value::scalar_text)
            .unwrap_or_else(|| "the scenario exited".into());
        if code == 0 {
            return Stop::Exit;
        }
        self.own_error(format!("exit action: {message} (code: {code})"))
            .into()
    }

    fn output(&self, args: &Mapping) -> Result<Value> {
        let mut content = args
            .get("content")
            .cloned()
            .ok_or_else(|| self.own_error("`output` needs `content`"))?;
        if let Some(name) = content.as_str()
            && let Some(value) = self.variables.get(name)
        {
            content = value.clone();
        }
        let destination = args
            .get("destination")
            .and_then(Value::as_str)
            .unwrap_or("stdout");
        let append = args.get("mode").and_then(Value::as_str) == Some("append");
        match destination {
            "stdout" | "stderr" => {
                let mut text = as_text(&content);
                if !text.ends_with('\n') {
                    text.push('\n');
                }
                self.emit(StepEvent::Output {
                    stderr: destination == "stderr",
                    text,
                });
            }
            file => write_output(Path::new(file), &content, append)?,
        }
        Ok(content)
    }

    fn assert(&self, args: &Mapping, cx: &Mapping) -> Result<Value> {
        let that = args
            .get("that")
            .ok_or_else(|| self.own_error("`assert` needs `that`"))?;
        let fail_msg = args
            .get("fail_msg")
            .and_then(crate::value::scalar_text)
            .unwrap_or_else(|| "assertion failed".into());
        let conditions = match that {
            Value::Sequence(items) => items.clone(),
            one => vec![one.clone()],
        };
        let total = conditions.len();
        let context = Context::new(cx);
        for (i, condition) in conditions.iter().enumerate() {
            let n = i + 1;
            let label = if total == 1 {
                String::new()
            } else {
                format!(" (condition #{n})")
            };
            let (holds, text) = match condition {
                Value::Bool(b) => (*b, b.to_string()),
                Value::String(expr) => {
                    let holds = self.templates.condition(expr, &context).map_err(|e| {
                        self.own_error(format!("{fail_msg}{label}: {expr} (error: {e})"))
                    })?;
                    (holds, expr.clone())
                }
                other => {
                    return Err(self.own_error(format!(
                        "assert condition #{n} must be text or a boolean, not `{}`",
                        super::run::key_text(other)
                    )));
                }
            };
            if !holds {
                return Err(self.own_error(format!("{fail_msg}{label}: {text}")));
            }
        }
        Ok(Value::Bool(true))
    }

    async fn provider_info(&self, mut args: Mapping) -> Result<Value> {
        let provider = args
            .shift_remove("provider")
            .and_then(|p| p.as_str().map(str::to_owned))
            .ok_or_else(|| self.own_error("`provider_info` needs `provider`"))?;
        let query = args
            .shift_remove("query")
            .ok_or_else(|| self.own_error("`provider_info` needs `query`"))?;
        match query {
            Value::String(flag) => {
                args.insert(flag.into(), true.into());
            }
            Value::Mapping(values) => args.extend(values),
            _ => return Err(self.own_error("`query` must be a name or a mapping")),
        }
        let instance = args
            .shift_remove(provider.as_str())
            .and_then(|i| i.as_str().map(str::to_owned));
        self.broker
            .provider_help(&provider, instance.as_deref(), &args)
            .await
    }

    async fn local_exec(&self, args: &Mapping) -> Result<Value> {
        let command = args
            .get("command")
            .and_then(crate::value::scalar_text)
            .filter(|c| !c.trim().is_empty())
            .ok_or_else(|| self.own_error("`local_exec` needs `command`"))?;
        let timeout = match args.get("timeout") {
            Some(t) => super::spec::duration(t).map_err(|e| self.own_error(e))?,
            None => NO_TIMEOUT,
        };
        let mut sh = tokio::process::Command::new("sh");
        sh.arg("-c").arg(&command);
        if let Some(cwd) = args.get("cwd") {
            let cwd = cwd
                .as_str()
                .ok_or_else(|| self.own_error("`local_exec` `cwd` must be text"))?;
            sh.current_dir(cwd);
        }
        match args.get("env") {
            Some(Value::Mapping(env)) => {
                for (k, v) in env {
                    let (Some(k), Some(v)) =
                        (crate::value::scalar_text(k), crate::value::scalar_text(v))
                    else {
                        continue;
                    };
                    sh.env(k, v);
                }
            }
            Some(Value::Null) | None => {}
            Some(_) => return Err(self.own_error("`local_exec` `env` must be a mapping")),
        }
        let stream = args.get("stream").and_then(Value::as_bool).unwrap_or(false);
        use crate::process::local::{Failure, run};
        let out = match run(&mut sh, timeout).await {
            Ok(out) => out,
            Err(Failure::TimedOut(partial)) => {
                tracing::warn!("local_exec: `{command}` timed out; its processes were stopped");
                partial
            }
            Err(Failure::Start(e)) => {
                return Err(Error::io_without_path("starting `sh` for `local_exec`", e));
            }
            Err(Failure::Wait(e)) => {
                return Err(Error::io_without_path(
                    "waiting for `local_exec`'s command",
                    e,
                ));
            }
        };
        if stream {
            for (stderr, text) in [(false, &out.stdout), (true, &out.stderr)] {
                if !text.is_empty() {
                    self.emit(StepEvent::Output {
                        stderr,
                        text: text.clone(),
                    });
                }
            }
        }
        Ok(result_value(&out))
    }
}

/// A command's result as templates see it.
fn result_value(out: &ExecOutput) -> Value {
    let mut m = Mapping::new();
    m.insert("stdout".into(), out.stdout.clone().into());
    m.insert("stderr".into(), out.stderr.clone().into());
    m.insert("status".into(), out.status.into());
    Value::Mapping(m)
}

fn message_result(text: String) -> Value {
    result_value(&ExecOutput {
        stdout: text,
        stderr: String::new(),
        status: 0,
    })
}

/// What `ssh`, `scp` or `sftp` does on one host.
enum HostWork {
    Command {
        command: String,
        timeout: Option<Duration>,
    },
    Upload {
        source: PathBuf,
        destination: String,
        verb: &'static str,
    },
    Download {
        source: String,
        destination: PathBuf,
    },
}

impl HostWork {
    fn new(action: &str, args: &Mapping) -> std::result::Result<HostWork, String> {
        let text = |key: &str| args.get(key).and_then(crate::value::scalar_text);
        if action == "ssh" {
            let command = text("command").ok_or("`ssh` needs `command`")?;
            let timeout = match args.get("timeout") {
                Some(t) => Some(super::spec::duration(t)?),
                None => None,
            };
            return Ok(HostWork::Command { command, timeout });
        }
        let (Some(source), Some(destination)) = (text("source"), text("destination")) else {
            return Err(format!("`{action}` needs `source` and `destination`"));
        };
        let direction = text("direction").unwrap_or_else(|| "upload".into());
        Ok(match (action, direction.as_str()) {
            ("scp", _) => HostWork::Upload {
                source: source.into(),
                destination,
                verb: "Copied",
            },
            (_, "upload") => HostWork::Upload {
                source: source.into(),
                destination,
                verb: "Uploaded",
            },
            (_, "download") => HostWork::Download {
                source,
                destination: destination.into(),
            },
            (_, other) => {
                return Err(format!(
                    "`direction` is `upload` or `download`, not `{other}`"
                ));
            }
        })
    }

    async fn run(&self, host: &Host) -> Result<Value> {
        match self {
            HostWork::Command { command, timeout } => {
                let out = match timeout {
                    Some(limit) => host.execute_with_timeout(command, *limit).await?,
                    None => host.execute(command).await?,
                };
                Ok(result_value(&out))
            }
            HostWork::Upload {
                source,
                destination,
                verb,
            } => {
                let bytes = std::fs::read(source)
                    .map_err(|e| Error::io("reading the file to copy", source, e))?;
                let target = into_directory(destination, source);
                host.write_file(&target, &bytes).await?;
                Ok(message_result(format!(
                    "{verb} {} to {destination}",
                    source.display()
                )))
            }
            HostWork::Download {
                source,
                destination,
            } => {
                let bytes = host.read_file(source).await?;
                let target = PathBuf::from(into_directory(
                    &destination.to_string_lossy(),
                    Path::new(source),
                ));
                if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| Error::io("creating the download's directory", parent, e))?;
                }
                std::fs::write(&target, bytes)
                    .map_err(|e| Error::io("writing the downloaded file", &target, e))?;
                Ok(message_result(format!(
                    "Downloaded {source} to {}",
                    destination.display()
                )))
            }
        }
    }
}

/// `destination`, or `destination` + the source's file name when it ends in `/`.
fn into_directory(destination: &str, source: &Path) -> String {
    match (destination.ends_with('/'), source.file_name()) {
        (true, Some(name)) => format!("{destination}{}", name.to_string_lossy()),
        _ => destination.to_owned(),
    }
}

/// `error` of a host action, saying which host it happened on (a step may run on many) unless it
/// already does.
fn naming_the_host(error: Error, host: &str) -> Error {
    match &error {
        Error::Host { host: named, .. } if named == host => error,
        Error::Provider { host: Some(_), .. } => error,
        _ => Error::host(host, crate::error::chain(&error)),
    }
}

/// A value as terminal text: text as it is, anything else as YAML.
fn as_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other).unwrap_or_default(),
    }
}

/// `output` to a file: JSON for `.json`, YAML for `.yaml`/`.yml`, text otherwise; replaced or
/// appended to.
fn write_output(path: &Path, content: &Value, append: bool) -> Result<()> {
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let mut text = match extension {
        "json" => serde_json::to_string_pretty(&crate::value::to_json(content))
            .map_err(|e| Error::internal("writing JSON output", e.to_string()))?,
        "yaml" | "yml" => serde_yaml::to_string(content)
            .map_err(|e| Error::internal("writing YAML output", e.to_string()))?,
        _ => as_text(content),
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::io("creating the output's directory", parent, e))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(path)
        .map_err(|e| Error::io("opening the output file", path, e))?;
    std::io::Write::write_all(&mut file, text.as_bytes())
        .map_err(|e| Error::io("writing the output file", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `output` files: JSON for `.json`, YAML for `.yaml`/`.yml` (text that YAML would read as
    /// something else is quoted), text otherwise; appended to when asked.
    #[test]
    fn output_files_are_written_in_their_extensions_format() {
        let dir = tempfile::tempdir().unwrap();
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        let text = Value::from("123");
        for name in ["out.yaml", "out.yml", "out.json", "out.txt"] {
            write_output(&dir.path().join(name), &text, false).unwrap();
        }
        assert_eq!(read("out.yaml"), "'123'\n");
        assert_eq!(read("out.yml"), "'123'\n");
        assert_eq!(read("out.json"), "\"123\"\n");
        assert_eq!(read("out.txt"), "123\n");
        write_output(&dir.path().join("out.txt"), &Value::from("456"), true).unwrap();
        assert_eq!(read("out.txt"), "123\n456\n");
        let list: Value = serde_yaml::from_str("[a, 1]").unwrap();
        write_output(&dir.path().join("sub/list.yaml"), &list, false).unwrap();
        assert_eq!(read("sub/list.yaml"), "- a\n- 1\n");
    }

    /// What `ssh`, `scp` and `sftp` need: a command, or a source and a destination; `sftp` goes
    /// up or down as `direction` says, `scp` always up.
    #[test]
    fn host_work_takes_what_each_host_action_needs() {
        let args = |text: &str| -> Mapping { serde_yaml::from_str(text).unwrap() };
        let work = |action: &str, text: &str| HostWork::new(action, &args(text));
        match work("ssh", "{command: ls, timeout: 5s}") {
            Ok(HostWork::Command { command, timeout }) => {
                assert_eq!(command, "ls");
                assert_eq!(timeout, Some(Duration::from_secs(5)));
            }
            _ => panic!("a command"),
        }
        assert!(matches!(
            work("ssh", "{command: ls}"),
            Ok(HostWork::Command { timeout: None, .. })
        ));
        assert_eq!(
            work("ssh", "{}").err().as_deref(),
            Some("`ssh` needs `command`")
        );
        let both = "{source: a, destination: b, direction: download}";
        assert!(matches!(
            work("scp", both),
            Ok(HostWork::Upload { verb: "Copied", .. })
        ));
        assert!(matches!(
            work("sftp", "{source: a, destination: b}"),
            Ok(HostWork::Upload {
                verb: "Uploaded",
                ..
            })
        ));
        match work("sftp", both) {
            Ok(HostWork::Download {
                source,
                destination,
            }) => {
                assert_eq!((source.as_str(), destination), ("a", PathBuf::from("b")));
            }
            _ => panic!("a download"),
        }
        assert_eq!(
            work("sftp", "{source: a, destination: b, direction: sideways}")
                .err()
                .as_deref(),
            Some("`direction` is `upload` or `download`, not `sideways`")
        );
        for text in ["{source: a}", "{destination: b}"] {
            assert_eq!(
                work("scp", text).err().as_deref(),
                Some("`scp` needs `source` and `destination`"),
                "{text}"
            );
        }
    }

    /// A destination ending in `/` is a directory: the source's file name goes in it.
    #[test]
    fn a_destination_ending_in_a_slash_takes_the_sources_name() {
        let source = Path::new("/work/upload.txt");
        assert_eq!(into_directory("/data/", source), "/data/upload.txt");
        assert_eq!(into_directory("/data/copy.txt", source), "/data/copy.txt");
        assert_eq!(into_directory("/data/", Path::new("/")), "/data/");
    }
}
