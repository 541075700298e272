//! `TestProvider`: hosts that are directories on this machine, with fault injection.
//!
//! It exists so that broker can be tried out and tested end to end with no infrastructure. Its
//! "remote system" is a state directory (`state_dir`, default `<broker dir>/test_provider/<instance>`):
//! every host is a folder `hosts/<name>/` holding `host.yaml` and a `root/` that its session treats as
//! the host's file system. Sessions run commands locally with `sh -c` inside that root: this is a test
//! double, not isolation.
//!
//! # Paths
//! Commands run with the host's `root/` as working directory and as `HOME`; file calls
//! (`read_file`, `write_file`) resolve every path inside `root/`:
//!
//! | Written | In a command | In a file call |
//! |---|---|---|
//! | `www/index.html` | `root/www/index.html` | `root/www/index.html` |
//! | `~/www/index.html` | `root/www/index.html` | `root/www/index.html` |
//! | `/srv/www/index.html` | **this machine's** `/srv/www/index.html` | `root/srv/www/index.html` |
//!
//! So relative and `~/` paths mean the same file to both, as on a real host where commands start in
//! the login directory; an absolute path does not (commands are not confined to `root/`).
//!
//! Action key: `test_action` (checkout and execute). Hosts are named `broker-test-<record id>` so a
//! record left `pending` by a crash still finds its host.
//!
//! # Fault injection
//! Arguments (or settings of the same name, which apply to every checkout):
//! - `fail_checkout: "3"` — host #3 of the request fails (a comma list of 1-based positions, or `all`);
//! - `fail_checkin: N` — the N-th check-in this process makes through this provider fails (`all`: every
//!   one, recorded in the host's arguments so it also holds in later processes);
//! - `delay: 2s` / `checkin_delay: 2s` — wait before answering;
//! - `hang: checkout` (before the host exists), `hang: created` (after it exists), `hang: checkin` —
//!   never answer (until cancelled, timed out or killed).
//!
//! Any other argument is taken (the host's record keeps it), but a misspelling of a switch
//! (`fail_chekout`) is refused ([`Arguments::Recorded`]): the test would pass without its fault.
//!
//! For tests, the discovery query `checkins` (`broker providers TestProvider --checkins`) reports the
//! most check-ins this provider has had under way at once.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use broker_core::provider::{Arguments, HelpOption, Operation};
use broker_core::settings::{ProviderSettings, field};
use broker_core::{
    CheckoutContext, Error, ExecOutput, HostRecord, Mapping, OutputSink, OutputStream, Provider,
    ProviderConfig, ProviderKind, Result, Session, Value,
};
use serde::Deserialize;

/// The provider's name, as the inventory records it.
pub const NAME: &str = "TestProvider";

/// The fault switches, the only checkout and execute arguments TestProvider acts on besides
/// `test_action`. It takes any other argument, as the providers it stands in for do (its hosts
/// record them), but refuses a misspelling of one of these, which would be silently ignored.
const FAULTS: &[&str] = &[
    "fail_checkout",
    "fail_checkin",
    "delay",
    "checkin_delay",
    "hang",
];

/// The registration of TestProvider.
pub const KIND: ProviderKind = ProviderKind::new(
    NAME,
    "local directory-backed hosts for trying broker out and tests",
    build,
)
.checkout_actions(&["test_action"])
.execute_actions(&["test_action"])
.settings::<TestProviderSettings>()
.takes(Operation::Checkout, Arguments::Recorded(FAULTS))
.takes(Operation::Execute, Arguments::Recorded(FAULTS))
.takes(Operation::Extend, Arguments::Only(&["extend_duration"]))
.help_options(&[
    HelpOption {
        name: "hosts",
        takes_value: false,
        help: "List the hosts this provider holds",
    },
    HelpOption {
        name: "host",
        takes_value: true,
        help: "Show one host's details",
    },
    HelpOption {
        name: "checkins",
        takes_value: false,
        help: "The most check-ins under way at once (for tests)",
    },
]);

/// TestProvider's settings section (see the module documentation).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TestProviderSettings {
    /// Where its hosts live, relative to the broker directory; default `test_provider/<instance>`.
    #[serde(deserialize_with = "field::text")]
    state_dir: Option<String>,
    // The fault switches, for every call; an argument of the same name wins.
    #[serde(deserialize_with = "field::text")]
    fail_checkout: Option<String>,
    #[serde(deserialize_with = "field::text")]
    fail_checkin: Option<String>,
    #[serde(deserialize_with = "field::text")]
    delay: Option<String>,
    #[serde(deserialize_with = "field::text")]
    checkin_delay: Option<String>,
    #[serde(deserialize_with = "field::text")]
    hang: Option<String>,
}

impl ProviderSettings for TestProviderSettings {
    /// The Python broker's TestProvider read these (its test settings set them); this one has no
    /// use for them.
    const UNUSED: &'static [&'static str] = &["foo", "config_value"];
}

impl TestProviderSettings {
    /// The setting of the fault switch `key` (one of [`FAULTS`]).
    fn fault(&self, key: &str) -> Option<&str> {
        match key {
            "fail_checkout" => self.fail_checkout.as_deref(),
            "fail_checkin" => self.fail_checkin.as_deref(),
            "delay" => self.delay.as_deref(),
            "checkin_delay" => self.checkin_delay.as_deref(),
            "hang" => self.hang.as_deref(),
            _ => None,
        }
    }
}

fn build(config: ProviderConfig) -> Result<Arc<dyn Provider>> {
    let settings = TestProviderSettings::from_section(&config)?;
    let state_dir = match &settings.state_dir {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_relative() {
                config.directory().join(dir)
            } else {
                dir
            }
        }
        None => config
            .directory()
            .join("test_provider")
            .join(config.instance().unwrap_or("default")),
    };
    Ok(Arc::new(TestProvider {
        state_dir,
        settings,
        checkins: AtomicU64::new(0),
        checkins_under_way: AtomicU64::new(0),
        most_checkins_at_once: AtomicU64::new(0),
        config,
    }))
}

/// See the module documentation.
#[derive(Debug)]
pub struct TestProvider {
    config: ProviderConfig,
    settings: TestProviderSettings,
    state_dir: PathBuf,
    checkins: AtomicU64,
    checkins_under_way: AtomicU64,
    most_checkins_at_once: AtomicU64,
}

/// Counts a check-in as under way until dropped.
struct UnderWay<'a>(&'a AtomicU64);

impl Drop for UnderWay<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl TestProvider {
    fn hosts_dir(&self) -> PathBuf {
        self.state_dir.join("hosts")
    }

    /// The directory of the host named `name`, always inside the state directory: a name that is not
    /// one plain path component (an absolute path, `..`, a `/`) names no host of this provider.
    fn host_dir(&self, name: &str) -> Option<PathBuf> {
        let mut parts = Path::new(name).components();
        match (parts.next(), parts.next()) {
            (Some(std::path::Component::Normal(_)), None) if !name.contains('/') => {
                Some(self.hosts_dir().join(name))
            }
            _ => None,
        }
    }

    fn no_such_host(&self, name: &str) -> Error {
        self.error(format!(
            "host {name} no longer exists; check it in to drop the record"
        ))
        .with_host(name)
    }

    fn error(&self, message: impl Into<String>) -> Error {
        let e = Error::provider(NAME, message);
        match self.config.instance() {
            Some(i) => e.with_instance(i),
            None => e,
        }
    }

    /// An injected fault setting: the argument, else the provider setting.
    fn fault(&self, args: &Mapping, key: &str) -> Option<String> {
        args.get(key)
            .and_then(broker_core::value::scalar_text)
            .or_else(|| self.settings.fault(key).map(str::to_owned))
    }

    async fn pause(&self, args: &Mapping, key: &str) -> Result<()> {
        if let Some(text) = self.fault(args, key) {
            tokio::time::sleep(broker_core::time::parse_duration(&text)?).await;
        }
        Ok(())
    }

    async fn hang_if(&self, args: &Mapping, stage: &str) {
        if self.fault(args, "hang").as_deref() == Some(stage) {
            tracing::warn!("TestProvider: hanging at `{stage}` as asked (fault injection)");
            std::future::pending::<()>().await;
        }
    }

    /// The host name for a record: its `name`, else the one derived from its identity.
    fn name_for(record: &HostRecord) -> String {
        record
            .name()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("broker-test-{}", record.id()))
    }

    fn read_host(&self, name: &str) -> Option<HostRecord> {
        let text = std::fs::read_to_string(self.host_dir(name)?.join("host.yaml")).ok()?;
        serde_yaml::from_str(&text).ok()
    }
}

fn positions(spec: &str) -> Vec<usize> {
    spec.split(',')
        .filter_map(|p| p.trim().parse().ok())
        .collect()
}

#[async_trait::async_trait]
impl Provider for TestProvider {
    fn name(&self) -> &str {
        NAME
    }

    fn instance(&self) -> Option<&str> {
        self.config.instance()
    }

    fn planned_fields(&self, ctx: &CheckoutContext<'_>) -> Mapping {
        let mut fields = Mapping::new();
        fields.insert(
            "name".into(),
            format!("broker-test-{}", ctx.record_id()).into(),
        );
        fields
    }

    async fn checkout(&self, ctx: &CheckoutContext<'_>) -> Result<Mapping> {
        let args = ctx.args();
        let position = ctx.index() + 1;
        self.pause(args, "delay").await?;
        self.hang_if(args, "checkout").await;
        if let Some(spec) = self.fault(args, "fail_checkout")
            && (spec == "all" || positions(&spec).contains(&position))
        {
            return Err(self.error(format!(
                "injected failure of checkout #{position} (fail_checkout: {spec})"
            )));
        }
        let name = format!("broker-test-{}", ctx.record_id());
        let dir = self
            .host_dir(&name)
            .ok_or_else(|| self.error(format!("`{name}` cannot name a host directory")))?;
        let root = dir.join("root");
        std::fs::create_dir_all(&root).map_err(|e| {
            self.error(format!("creating {}", root.display()))
                .caused_by(e)
        })?;
        let mut fields = Mapping::new();
        fields.insert("hostname".into(), format!("{name}.test.example.com").into());
        fields.insert("name".into(), name.clone().into());
        fields.insert("os_distribution".into(), "FakeOS".into());
        fields.insert("os_distribution_version".into(), "1.0".into());
        fields.insert("extra".into(), true.into());
        let action = ctx.arg("test_action").unwrap_or("basic").to_owned();
        fields.insert("test_action".into(), action.into());
        let meta = serde_yaml::to_string(&fields)
            .map_err(|e| self.error("writing host state").caused_by(e))?;
        std::fs::write(dir.join("host.yaml"), meta)
            .map_err(|e| self.error("writing host state").caused_by(e))?;
        self.hang_if(args, "created").await;
        Ok(fields)
    }

    async fn checkin(&self, host: &HostRecord) -> Result<()> {
        let args = host.args();
        let count = self.checkins.fetch_add(1, Ordering::SeqCst) + 1;
        let now = self.checkins_under_way.fetch_add(1, Ordering::SeqCst) + 1;
        let _under_way = UnderWay(&self.checkins_under_way);
        self.most_checkins_at_once.fetch_max(now, Ordering::SeqCst);
        self.pause(&args, "checkin_delay").await?;
        self.hang_if(&args, "checkin").await;
        if let Some(spec) = self.fault(&args, "fail_checkin")
            && (spec == "all" || positions(&spec).contains(&(count as usize)))
        {
            // `all` stays in the host's recorded arguments, so running the check-in again is not
            // enough: say where the fault lives.
            let what_to_do = if spec == "all" {
                "the record's arguments keep it: remove `fail_checkin` from its `_broker_args` in the \
                 inventory, then run `broker checkin` again"
            } else {
                "run `broker checkin` again without it"
            };
            return Err(self.error(format!(
                "injected failure of check-in #{count} (fail_checkin: {spec}); {what_to_do}"
            )));
        }
        let name = Self::name_for(host);
        let Some(dir) = self.host_dir(&name) else {
            // Not a name this provider gives: no host of it can be there, and nothing outside its
            // state directory is touched.
            tracing::warn!(host = %host.display_name(), "`{name}` names no TestProvider host; nothing to remove");
            return Ok(());
        };
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            // Already gone is checked in.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self
                .error(format!("removing {}", dir.display()))
                .caused_by(e)),
        }
    }

    async fn extend(&self, host: &HostRecord, args: &Mapping) -> Result<()> {
        let name = Self::name_for(host);
        let (Some(dir), Some(mut record)) = (self.host_dir(&name), self.read_host(&name)) else {
            return Err(self.no_such_host(&name));
        };
        let meta = dir.join("host.yaml");
        let by = match args.get("extend_duration").and_then(Value::as_str) {
            Some(text) => broker_core::time::parse_duration(text)?,
            None => Duration::from_secs(3600),
        };
        record.set(
            "expire_time",
            broker_core::time::now_epoch() + by.as_secs() as i64,
        );
        let text = serde_yaml::to_string(&record).map_err(|e| {
            self.error(format!("writing {}", meta.display()))
                .caused_by(e)
        })?;
        std::fs::write(&meta, text).map_err(|e| {
            self.error(format!("writing {}", meta.display()))
                .caused_by(e)
        })
    }

    async fn execute(&self, args: &Mapping) -> Result<Value> {
        self.pause(args, "delay").await?;
        if self.fault(args, "fail_checkout").as_deref() == Some("all") {
            return Err(self.error("injected failure of execute (fail_checkout: all)"));
        }
        let mut out = Mapping::new();
        out.insert(
            "action".into(),
            args.get("test_action").cloned().unwrap_or(Value::Null),
        );
        out.insert("arguments".into(), Value::Mapping(args.clone()));
        Ok(Value::Mapping(out))
    }

    async fn help(&self, query: &Mapping) -> Result<Value> {
        if query.contains_key("checkins") {
            let mut out = Mapping::new();
            let most = self.most_checkins_at_once.load(Ordering::SeqCst);
            out.insert("most_at_once".into(), most.into());
            return Ok(Value::Mapping(out));
        }
        if let Some(name) = query.get("host").and_then(Value::as_str) {
            return self
                .read_host(name)
                .map(|r| r.to_value())
                .ok_or_else(|| self.error(format!("no host named {name}")));
        }
        let hosts = self.inventory(None).await?;
        Ok(Value::Sequence(
            hosts
                .iter()
                .filter_map(|h| h.name().map(Value::from))
                .collect(),
        ))
    }

    async fn inventory(&self, filter: Option<&str>) -> Result<Vec<HostRecord>> {
        let entries = match std::fs::read_dir(self.hosts_dir()) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(self
                    .error(format!("listing {}", self.hosts_dir().display()))
                    .caused_by(e));
            }
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| filter.is_none_or(|f| n.starts_with(f)))
            .collect();
        names.sort();
        Ok(names
            .iter()
            .map(|name| {
                let mut record = self.read_host(name).unwrap_or_default();
                record.set("name", name.as_str());
                record.set(broker_core::record::fields::PROVIDER, NAME);
                record
            })
            .collect())
    }

    async fn connect(&self, host: &HostRecord) -> Result<Box<dyn Session>> {
        let name = Self::name_for(host);
        let root = self.host_dir(&name).map(|dir| dir.join("root"));
        let Some(root) = root.filter(|root| root.is_dir()) else {
            return Err(Error::Host {
                host: host.display_name(),
                message:
                    "this host no longer exists at TestProvider; check it in to drop the record"
                        .into(),
                source: None,
            });
        };
        Ok(Box::new(LocalSession {
            host: host.display_name(),
            root,
        }))
    }
}

/// Runs commands with `sh -c` inside the host's root directory.
#[derive(Debug)]
struct LocalSession {
    host: String,
    root: PathBuf,
}

impl LocalSession {
    /// Where a file path of `read_file`/`write_file` lives: inside the host's root, whether written
    /// `/a/b`, `a/b` or `~/a/b`. Commands run in the root with `HOME` there, so `a/b` and `~/a/b` name
    /// the same file for them (`/a/b` in a command is this machine's). A path a command printed that
    /// is already inside the root (`mktemp` in `$TMPDIR`, which is the root's `tmp`) names that file.
    fn path(&self, remote: &str) -> Result<PathBuf> {
        if let Ok(inside) = Path::new(remote).strip_prefix(&self.root) {
            return self.path(&inside.to_string_lossy());
        }
        let remote = remote.strip_prefix("~/").unwrap_or(remote);
        let relative = Path::new(remote.trim_start_matches('/'));
        // `..` may not climb out of the host's root.
        if relative
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(self.host_error(format!(
                "`{remote}` climbs out of the host's file system (`..`); give a path without `..`"
            )));
        }
        Ok(self.root.join(relative))
    }

    fn host_error(&self, message: String) -> Error {
        Error::Host {
            host: self.host.clone(),
            message,
            source: None,
        }
    }
}

/// Kills the process group `group` leads (a command that timed out, with all it started).
fn kill_group(group: Option<u32>) {
    let Some(group) = group.and_then(|g| i32::try_from(g).ok()) else {
        return;
    };
    let _ = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{group}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl LocalSession {
    /// Runs `command` with `sh -c` in the host's root, handing its output to `sink` as it comes.
    /// After `timeout` its process group is killed, and every process marked as the command's
    /// ([`crate::shell::MARKER_ENV`]), so what left the group (`setsid`) goes too.
    async fn run(
        &self,
        command: &str,
        timeout: Option<Duration>,
        sink: OutputSink<'_>,
    ) -> Result<ExecOutput> {
        // The host's temporary files are its own: `mktemp` makes them inside the root.
        let tmp = self.root.join("tmp");
        tokio::fs::create_dir_all(&tmp).await.map_err(|e| {
            self.host_error("creating the host's tmp directory".into())
                .caused_by(e)
        })?;
        let marker = crate::shell::pid_marker();
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .current_dir(&self.root)
            .env("HOME", &self.root)
            .env("TMPDIR", &tmp)
            .env(crate::shell::MARKER_ENV, &marker)
            // Its own process group, so a timeout stops everything the command started.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                self.host_error(format!("starting `sh -c {command}`"))
                    .caused_by(e)
            })?;
        let group = child.id();
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let ran = async {
            let (stdout, stderr) = tokio::join!(
                relay(stdout, OutputStream::Stdout, sink),
                relay(stderr, OutputStream::Stderr, sink)
            );
            (stdout, stderr, child.wait().await)
        };
        let (stdout, stderr, status) = match timeout {
            Some(limit) => match tokio::time::timeout(limit, ran).await {
                Ok(ran) => ran,
                Err(_) => {
                    kill_group(group);
                    kill_marked(&marker).await;
                    return Err(Error::Timeout {
                        operation: format!("`{command}` on {}", self.host),
                        after: limit,
                    });
                }
            },
            None => ran.await,
        };
        let status = status
            .map_err(|e| self.host_error(format!("running `{command}`")).caused_by(e))?
            .code()
            .ok_or_else(|| self.host_error(format!("`{command}` was killed by a signal")))?;
        Ok(ExecOutput {
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            status,
        })
    }
}

/// Hands what `pipe` gives to `sink` as it comes, and returns all of it.
async fn relay(
    pipe: Option<impl tokio::io::AsyncRead + Unpin>,
    stream: OutputStream,
    sink: OutputSink<'_>,
) -> Vec<u8> {
    let mut all = Vec::new();
    let Some(mut pipe) = pipe else {
        return all;
    };
    let mut buffer = [0u8; 8192];
    // A read error ends the output; the exit status still tells how the command ended.
    while let Ok(read @ 1..) = tokio::io::AsyncReadExt::read(&mut pipe, &mut buffer).await {
        sink(stream, &buffer[..read]);
        all.extend_from_slice(&buffer[..read]);
    }
    all
}

/// Kills every process of this machine marked with `marker` (and its children), as the sessions
/// to other machines do.
async fn kill_marked(marker: &str) {
    let killed = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(crate::shell::kill_tree(marker))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    if let Err(e) = killed {
        tracing::warn!("stopping what a timed-out command started: {e}");
    }
}

#[async_trait::async_trait]
impl Session for LocalSession {
    async fn execute(&self, command: &str, timeout: Option<Duration>) -> Result<ExecOutput> {
        self.run(command, timeout, &|_, _| {}).await
    }

    async fn execute_streaming(
        &self,
        command: &str,
        timeout: Option<Duration>,
        sink: OutputSink<'_>,
    ) -> Result<ExecOutput> {
        self.run(command, timeout, sink).await
    }

    async fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        tokio::fs::read(self.path(path)?)
            .await
            .map_err(|e| self.host_error(format!("reading {path}")).caused_by(e))
    }

    async fn write_file(&self, path: &str, contents: &[u8]) -> Result<()> {
        let target = self.path(path)?;
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(|e| {
                self.host_error(format!("creating the parent of {path}"))
                    .caused_by(e)
            })?;
        }
        tokio::fs::write(&target, contents)
            .await
            .map_err(|e| self.host_error(format!("writing {path}")).caused_by(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use broker_core::{Broker, CheckoutRequest, HostState, ProviderRegistry, Settings};

    fn broker(dir: &Path) -> Broker {
        let settings = Settings::load_from(dir, Vec::new()).unwrap();
        Broker::new(settings, ProviderRegistry::new().with(KIND)).unwrap()
    }

    #[test]
    fn every_fault_switch_is_a_setting_and_the_python_brokers_keys_are_known() {
        let section: Mapping = FAULTS
            .iter()
            .map(|k| (Value::from(*k), Value::from(format!("{k}-set"))))
            .collect();
        let config = ProviderConfig::new(NAME, None, section, "/b");
        let settings = TestProviderSettings::from_section(&config).unwrap();
        for key in FAULTS {
            assert_eq!(settings.fault(key), Some(format!("{key}-set").as_str()));
        }
        let section = |yaml: &str| serde_yaml::from_str::<Mapping>(yaml).unwrap();
        let upstream = ProviderConfig::new(
            NAME,
            Some("test1"),
            section("{foo: bar, config_value: x, default: true, state_dir: s, fail_checkin: 3}"),
            "/b",
        );
        assert!(TestProviderSettings::problems(&upstream).is_empty());
        assert_eq!(
            TestProviderSettings::from_section(&upstream)
                .unwrap()
                .fail_checkin
                .as_deref(),
            Some("3")
        );
        let typo = ProviderConfig::new(NAME, None, section("{fail_chekin: 3}"), "/b");
        let problems: Vec<String> = TestProviderSettings::problems(&typo)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            problems,
            [
                "`TestProvider.fail_chekin`: unknown key, ignored; did you mean `fail_checkin`? rename or remove it"
            ]
        );
    }

    fn hosts_on_provider(dir: &Path) -> usize {
        std::fs::read_dir(dir.join("test_provider/default/hosts"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// A host error keeps the operating system's error as its source; the message says what failed.
    #[tokio::test]
    async fn a_host_error_keeps_its_cause() {
        let dir = tempfile::tempdir().unwrap();
        let session = LocalSession {
            host: "h1".into(),
            root: dir.path().to_owned(),
        };
        let err = session.read_file("/etc/nope").await.unwrap_err();
        assert!(matches!(err, Error::Host { .. }), "{err:?}");
        assert_eq!(err.to_string(), "host h1: reading /etc/nope");
        let cause = std::error::Error::source(&err).expect("the io error is the source");
        let io = cause.downcast_ref::<std::io::Error>().expect("an io error");
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
        assert_eq!(
            broker_core::error::chain(&err),
            format!("host h1: reading /etc/nope: {io}")
        );
    }

    fn local_session(root: &Path) -> LocalSession {
        LocalSession {
            host: "h1".into(),
            root: root.to_owned(),
        }
    }

    /// Processes whose command line is `cmd` exactly, found through `/proc`.
    fn running(cmd: &str) -> usize {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
            .filter(|line| {
                line.split(|b| *b == 0)
                    .filter(|a| !a.is_empty())
                    .eq(cmd.split(' ').map(str::as_bytes))
            })
            .count()
    }

    #[tokio::test]
    async fn a_timed_out_command_is_stopped_with_everything_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let session = local_session(dir.path());
        let err = session
            .execute("sleep 4711 & sleep 4712", Some(Duration::from_millis(500)))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
        let gone = broker_test_support::wait_for(Duration::from_secs(10), || {
            running("sleep 4711") + running("sleep 4712") == 0
        });
        assert!(gone, "the command's processes outlived its timeout");
    }

    #[tokio::test]
    async fn a_timed_out_command_is_stopped_with_what_it_started_in_a_session_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let session = local_session(dir.path());
        let err = session
            .execute(
                "(setsid sh -c 'touch started; exec sleep 4713' &); sleep 4714",
                Some(Duration::from_secs(3)),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
        assert!(dir.path().join("started").exists(), "setsid never ran");
        let gone = broker_test_support::wait_for(Duration::from_secs(10), || {
            running("sleep 4713") + running("sleep 4714") == 0
        });
        assert!(
            gone,
            "what the command started with setsid outlived its timeout"
        );
    }

    #[tokio::test]
    async fn output_reaches_the_sink_while_the_command_runs() {
        let dir = tempfile::tempdir().unwrap();
        let session = local_session(dir.path());
        let go = dir.path().join("go");
        let seen = std::sync::Mutex::new(Vec::new());
        // The command waits for `go`, which only its first line, once seen, makes.
        let sink = |stream: OutputStream, bytes: &[u8]| {
            let text = String::from_utf8_lossy(bytes).into_owned();
            if text == "first\n" {
                std::fs::write(&go, b"").unwrap();
            }
            seen.lock().unwrap().push((stream, text));
        };
        let out = session
            .execute_streaming(
                "echo first; while [ ! -e go ]; do sleep 0.05; done; echo second >&2",
                Some(Duration::from_secs(20)),
                &sink,
            )
            .await
            .unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            [
                (OutputStream::Stdout, "first\n".to_owned()),
                (OutputStream::Stderr, "second\n".to_owned())
            ]
        );
        assert_eq!(
            (out.stdout.as_str(), out.stderr.as_str(), out.status),
            ("first\n", "second\n", 0)
        );
    }

    #[tokio::test]
    async fn a_command_makes_its_temporary_files_inside_the_host_and_the_path_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let session = local_session(dir.path());
        let made = session.execute("mktemp -d", None).await.unwrap();
        let path = made.stdout.trim();
        assert!(
            Path::new(path).starts_with(dir.path().join("tmp")),
            "{path}"
        );
        session
            .write_file(&format!("{path}/f"), b"x")
            .await
            .unwrap();
        let listed = session
            .execute(&format!("cat '{path}/f'"), None)
            .await
            .unwrap();
        assert_eq!(listed.stdout, "x");
    }

    #[tokio::test]
    async fn checkout_execute_files_checkin_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path());
        let host = broker
            .checkout_one(CheckoutRequest::new().arg("test_action", "basic"))
            .await
            .unwrap();
        assert_eq!(host.state(), HostState::Ready);
        assert_eq!(broker.inventory().list().unwrap().len(), 1);
        let out = host
            .execute("echo out; echo err >&2; exit 3")
            .await
            .unwrap();
        assert_eq!(
            (out.stdout.as_str(), out.stderr.as_str(), out.status),
            ("out\n", "err\n", 3)
        );
        host.write_file("/etc/motd", b"hello").await.unwrap();
        assert_eq!(host.read_file("/etc/motd").await.unwrap(), b"hello");
        assert_eq!(host.execute("cat etc/motd").await.unwrap().stdout, "hello");
        let err = host
            .execute_with_timeout("sleep 5", Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
        host.checkin().await.unwrap();
        assert!(broker.inventory().list().unwrap().is_empty());
        assert_eq!(hosts_on_provider(dir.path()), 0);
    }

    /// Commands run in the host's root with `HOME` there, so a relative or `~/` path names the same
    /// file for a command as for `read_file`/`write_file`; an absolute path is the root's in file calls.
    #[tokio::test]
    async fn file_calls_and_commands_name_the_same_files() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path());
        let host = broker
            .checkout_one(CheckoutRequest::new().arg("test_action", "basic"))
            .await
            .unwrap();
        let cat = async |path: &str| host.execute(&format!("cat {path}")).await.unwrap().stdout;
        host.write_file("www/index.html", b"relative")
            .await
            .unwrap();
        assert_eq!(cat("www/index.html").await, "relative");
        assert_eq!(cat("~/www/index.html").await, "relative");
        host.write_file("~/notes.txt", b"home").await.unwrap();
        assert_eq!(cat("~/notes.txt").await, "home");
        assert_eq!(cat("notes.txt").await, "home");
        assert_eq!(host.read_file("~/notes.txt").await.unwrap(), b"home");
        host.execute("echo made > made.txt").await.unwrap();
        assert_eq!(host.read_file("made.txt").await.unwrap(), b"made\n");
        assert_eq!(host.read_file("~/made.txt").await.unwrap(), b"made\n");
        assert_eq!(host.read_file("/made.txt").await.unwrap(), b"made\n");
        host.checkin().await.unwrap();
    }

    #[tokio::test]
    async fn failed_third_of_five_rolls_back_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path());
        let err = broker
            .checkout(
                CheckoutRequest::new()
                    .arg("test_action", "basic")
                    .arg("fail_checkout", "3")
                    .count(5),
            )
            .await
            .unwrap_err();
        match &err {
            Error::CheckoutFailed {
                failures,
                rolled_back,
                ..
            } => {
                assert_eq!(failures.len(), 1);
                assert_eq!(failures[0].0, 2);
                assert_eq!(rolled_back.len(), 4);
            }
            other => panic!("unexpected {other}"),
        }
        assert!(err.to_string().contains("#3"), "{err}");
        assert!(broker.inventory().list().unwrap().is_empty());
        assert_eq!(hosts_on_provider(dir.path()), 0);
    }

    #[tokio::test]
    async fn a_failed_rollback_names_the_hosts_still_out_and_how_to_release_them() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path());
        let err = broker
            .checkout(
                CheckoutRequest::new()
                    .arg("test_action", "basic")
                    .arg("fail_checkout", "3")
                    .arg("fail_checkin", "all")
                    .count(3),
            )
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(!text.contains("checked in again"), "{text}");
        // The two hosts made are still out, marked releasing, and so is whatever the failed third
        // made (its clean-up failed too: its intent record stays pending); the message names each.
        let records = broker.inventory().list().unwrap();
        assert_eq!(records.len(), 3, "{text}");
        let releasing = records
            .iter()
            .filter(|r| r.state() == HostState::Releasing)
            .count();
        let pending = records
            .iter()
            .filter(|r| r.state() == HostState::Pending)
            .count();
        assert_eq!((releasing, pending), (2, 1), "{records:?}");
        let command = text
            .lines()
            .find_map(|l| l.split("`broker checkin ").nth(1))
            .unwrap_or_else(|| panic!("no checkin command: {text}"));
        for name in records.iter().map(HostRecord::display_name) {
            assert!(
                text.contains(&format!("    {name}: TestProvider")),
                "{text}"
            );
            assert!(command.contains(&name), "{name} not in `{command}`");
        }
        assert!(text.contains("still checked out"), "{text}");
        assert_eq!(hosts_on_provider(dir.path()), 2);
    }

    #[tokio::test]
    async fn keep_partial_keeps_the_hosts_that_were_made() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path());
        let err = broker
            .checkout(
                CheckoutRequest::new()
                    .arg("test_action", "basic")
                    .arg("fail_checkout", "2")
                    .count(3)
                    .keep_partial(true),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::CheckoutFailed { kept, .. } if kept.len() == 2),
            "{err}"
        );
        assert_eq!(broker.inventory().list().unwrap().len(), 2);
        assert_eq!(hosts_on_provider(dir.path()), 2);
    }

    #[tokio::test]
    async fn checkin_of_vanished_host_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path());
        let host = broker
            .checkout_one(CheckoutRequest::new().arg("test_action", "basic"))
            .await
            .unwrap();
        std::fs::remove_dir_all(
            dir.path()
                .join("test_provider/default/hosts")
                .join(host.name().unwrap()),
        )
        .unwrap();
        host.checkin().await.unwrap();
        assert!(broker.inventory().list().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_record_naming_a_path_outside_the_provider_never_touches_it() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path());
        let victim = dir.path().join("victim");
        std::fs::create_dir_all(victim.join("data")).unwrap();
        let hosts = dir.path().join("test_provider/default/hosts");
        std::fs::create_dir_all(&hosts).unwrap();
        let names = [
            victim.display().to_string(),
            "../../../victim".to_owned(),
            "..".to_owned(),
            ".".to_owned(),
            "a/../../../../victim".to_owned(),
        ];
        let mut records = Vec::new();
        for name in &names {
            let mut record = HostRecord::pending(NAME, None, Mapping::new());
            record.set("name", name.as_str());
            record.set_state(HostState::Ready);
            records.push(record);
        }
        broker.inventory().put(&records).unwrap();
        for record in &records {
            let host = broker.attach(record.clone()).unwrap();
            assert!(host.execute("true").await.is_err());
        }
        let extended = broker.extend(records.clone(), Mapping::new()).await;
        assert!(extended.iter().all(|o| o.result.is_err()));
        let outcomes = broker.checkin(records, false).await;
        assert!(outcomes.iter().all(|o| o.result.is_ok()));
        assert!(
            victim.join("data").is_dir(),
            "the directory a record named survives"
        );
        // Nor do a session's paths climb out of the host.
        let host = broker
            .checkout_one(CheckoutRequest::new().arg("test_action", "basic"))
            .await
            .unwrap();
        assert!(host.write_file("/../../../victim/x", b"x").await.is_err());
        assert!(host.read_file("../../../../victim/data").await.is_err());
        assert!(!victim.join("x").exists());
        host.checkin().await.unwrap();
        assert!(hosts.is_dir(), "and so does the provider's own");
        assert!(broker.inventory().list().unwrap().is_empty());
    }

    #[tokio::test]
    async fn failed_checkin_keeps_the_record_marked_releasing() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path());
        let host = broker
            .checkout_one(
                CheckoutRequest::new()
                    .arg("test_action", "basic")
                    .arg("fail_checkin", "all"),
            )
            .await
            .unwrap();
        let err = host.checkin().await.unwrap_err();
        assert_eq!(err.exit_code(), 7);
        let records = broker.inventory().list().unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].state(), HostState::Releasing);
        assert!(records[0].get("_broker_last_error").is_some());
    }

    // ---- guards dropped in every kind of context ----

    fn broker_with(dir: &Path, yaml: &str) -> Broker {
        let settings = Settings::from_yaml(dir, yaml).unwrap();
        Broker::new(settings, ProviderRegistry::new().with(KIND)).unwrap()
    }

    fn assert_all_checked_in(broker: &Broker, dir: &Path) {
        assert!(broker.inventory().list().unwrap().is_empty());
        assert_eq!(hosts_on_provider(dir), 0);
    }

    #[tokio::test]
    async fn dropped_guard_checks_in_on_current_thread_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path());
        let hosts = broker
            .checkout(CheckoutRequest::new().arg("test_action", "basic").count(2))
            .await
            .unwrap();
        assert_eq!(hosts_on_provider(dir.path()), 2);
        drop(hosts);
        assert_all_checked_in(&broker, dir.path());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropped_guard_checks_in_on_multi_thread_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path());
        let host = broker
            .checkout_one(CheckoutRequest::new().arg("test_action", "basic"))
            .await
            .unwrap();
        drop(host);
        assert_all_checked_in(&broker, dir.path());
    }

    #[test]
    fn dropped_guard_checks_in_outside_any_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let host = runtime
            .block_on(broker.checkout_one(CheckoutRequest::new().arg("test_action", "basic")))
            .unwrap();
        drop(runtime);
        drop(host);
        assert_all_checked_in(&broker, dir.path());
    }

    /// Checks a host out on a thread of its own, in a runtime of the given kind, and panics with the
    /// guard alive, as a failing test does.
    fn panic_holding_a_host(broker: &Broker, multi_thread: bool) {
        let broker = broker.clone();
        let outcome = std::thread::spawn(move || {
            let runtime = if multi_thread {
                tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
            } else {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            }
            .unwrap();
            runtime.block_on(async move {
                let _host = broker
                    .checkout_one(CheckoutRequest::new().arg("test_action", "basic"))
                    .await
                    .unwrap();
                panic!("the test failed");
            })
        })
        .join();
        // The thread must have died of the test's panic, holding the host: a checkout that failed
        // panics too, and would leave nothing to check in.
        let panic = outcome.expect_err("the thread should have panicked");
        assert_eq!(panic.downcast_ref::<&str>(), Some(&"the test failed"));
    }

    #[test]
    fn dropped_guard_checks_in_while_a_test_panics() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path());
        panic_holding_a_host(&broker, false);
        assert_all_checked_in(&broker, dir.path());
        panic_holding_a_host(&broker, true);
        assert_all_checked_in(&broker, dir.path());
    }

    #[test]
    fn keep_on_failure_keeps_the_hosts_of_a_panicking_test_with_a_lease() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker_with(dir.path(), "keep_on_failure: 30m\n");
        panic_holding_a_host(&broker, true);
        let records = broker.inventory().list().unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].state(), HostState::Ready);
        let lease = records[0].expire_time().unwrap() - broker_core::time::now_epoch();
        assert!((1700..=1800).contains(&lease), "lease {lease}");
        assert_eq!(hosts_on_provider(dir.path()), 1);
    }

    #[test]
    fn a_guard_dropped_while_its_multi_thread_runtime_shuts_down_is_checked_in() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (made, checked_out) = std::sync::mpsc::channel();
        let holder = broker.clone();
        runtime.spawn(async move {
            let _host = holder
                .checkout_one(CheckoutRequest::new().arg("test_action", "basic"))
                .await
                .unwrap();
            made.send(()).unwrap();
            std::future::pending::<()>().await;
        });
        checked_out.recv().unwrap();
        assert_eq!(hosts_on_provider(dir.path()), 1);
        // The runtime drops its tasks, and the guard with them, as it shuts down.
        drop(runtime);
        assert_all_checked_in(&broker, dir.path());
    }

    fn most_checkins_at_once(runtime: &tokio::runtime::Runtime, broker: &Broker) -> u64 {
        let mut query = Mapping::new();
        query.insert("checkins".into(), true.into());
        let stats = runtime
            .block_on(broker.provider_help(NAME, None, &query))
            .unwrap();
        stats["most_at_once"].as_u64().unwrap()
    }

    #[test]
    fn guards_dropped_together_check_in_concurrently() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path());
        for multi_thread in [false, true] {
            let runtime = if multi_thread {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
            } else {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            }
            .unwrap();
            let hosts = runtime
                .block_on(
                    broker.checkout(
                        CheckoutRequest::new()
                            .arg("test_action", "basic")
                            .arg("checkin_delay", "1s")
                            .count(4),
                    ),
                )
                .unwrap();
            runtime.block_on(async { drop(hosts) });
            assert_all_checked_in(&broker, dir.path());
            assert_eq!(
                most_checkins_at_once(&runtime, &broker),
                4,
                "multi_thread: {multi_thread}"
            );
        }
    }

    #[tokio::test]
    async fn hanging_checkin_on_drop_is_bounded_and_leaves_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker_with(dir.path(), "checkin_timeout: 1\n");
        let host = broker
            .checkout_one(
                CheckoutRequest::new()
                    .arg("test_action", "basic")
                    .arg("hang", "checkin"),
            )
            .await
            .unwrap();
        drop(host);
        let records = broker.inventory().list().unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].state(), HostState::Releasing);
        let note = records[0]
            .get("_broker_last_error")
            .and_then(Value::as_str)
            .unwrap_or("");
        assert!(note.contains("timed out"), "{note}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hanging_checkin_on_drop_is_bounded_on_multi_thread_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker_with(dir.path(), "checkin_timeout: 1\n");
        let host = broker
            .checkout_one(
                CheckoutRequest::new()
                    .arg("test_action", "basic")
                    .arg("hang", "checkin"),
            )
            .await
            .unwrap();
        drop(host);
        assert_eq!(
            broker.inventory().list().unwrap()[0].state(),
            HostState::Releasing
        );
    }

    #[tokio::test]
    async fn recover_cleans_up_a_pending_record_and_its_half_made_host() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path());
        // Dropped (as a crash would leave it) once the provider made the host and hangs.
        tokio::select! {
            _ = broker.checkout_one(
                CheckoutRequest::new()
                    .arg("test_action", "basic")
                    .arg("hang", "created"),
            ) => panic!("the checkout should hang"),
            made = settles(|| hosts_on_provider(dir.path()) == 1) => assert!(made),
        }
        let records = broker.inventory().list().unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].state(), HostState::Pending);
        assert_eq!(hosts_on_provider(dir.path()), 1);
        // The owner (this process) is alive, so only the broader scope touches it.
        assert!(
            broker
                .recover(broker_core::RecoverScope::Orphaned)
                .await
                .unwrap()
                .is_empty()
        );
        let outcomes = broker
            .recover(broker_core::RecoverScope::Unfinished)
            .await
            .unwrap();
        assert_eq!(outcomes.len(), 1);
        assert!(outcomes[0].result.is_ok());
        assert_all_checked_in(&broker, dir.path());
    }

    /// Polls until `check` holds (or 20 s pass).
    async fn settles(mut check: impl FnMut() -> bool) -> bool {
        for _ in 0..400 {
            if check() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        check()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_checkout_gives_back_what_its_provider_calls_make() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path());
        let request = CheckoutRequest::new()
            .arg("test_action", "basic")
            .arg("delay", "1s")
            .count(3);
        // Dropped (as a caller's `timeout` or `select!` does) while its provider calls are under way.
        tokio::select! {
            _ = broker.checkout(request) => panic!("the checkout should still be running"),
            () = async {
                while broker.inventory().list().unwrap().len() < 3 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            } => {}
        }
        // The provider calls under way finish; no one receives their hosts, so they go back.
        assert!(
            settles(|| broker.inventory().list().unwrap().is_empty()).await,
            "{:?}",
            broker.inventory().list().unwrap()
        );
        assert_eq!(hosts_on_provider(dir.path()), 0);
    }

    #[tokio::test]
    async fn a_cancelled_checkout_gives_back_its_hosts_and_says_which() {
        let dir = tempfile::tempdir().unwrap();
        // The provider never answers once it made a host: after the stop, broker waits
        // `cancel_timeout` and gives back what was made, found by each record's identity.
        let settings = Settings::from_yaml(dir.path(), "cancel_timeout: 1s\n").unwrap();
        let broker = Broker::new(settings, ProviderRegistry::new().with(KIND)).unwrap();
        let stop = broker_core::Cancellation::new();
        let request = CheckoutRequest::new()
            .arg("test_action", "basic")
            .arg("hang", "created")
            .count(2)
            .cancel_with(&stop);
        let (result, made) = tokio::join!(broker.checkout(request), async {
            // Both hosts exist at the provider: both provider calls are under way.
            while hosts_on_provider(dir.path()) < 2 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            stop.cancel();
            std::fs::read_dir(dir.path().join("test_provider/default/hosts"))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect::<Vec<String>>()
        });
        let err = result.unwrap_err();
        assert_eq!(err.exit_code(), 130);
        let text = err.to_string();
        assert!(text.contains("checked in again: broker-test-"), "{text}");
        assert_eq!(text.matches("broker-test-").count(), 2, "{text}");
        for name in &made {
            assert!(text.contains(name.as_str()), "{name} is not named: {text}");
        }
        assert!(!text.contains("not started"), "{text}");
        assert!(broker.inventory().list().unwrap().is_empty());
        assert_eq!(hosts_on_provider(dir.path()), 0);
    }

    #[tokio::test]
    async fn custom_host_types_wrap_checked_out_hosts() {
        struct Satellite(broker_core::Host);
        impl broker_core::FromHost for Satellite {
            fn from_host(host: broker_core::Host) -> Result<Self> {
                Ok(Satellite(host))
            }
            fn host(&self) -> &broker_core::Host {
                &self.0
            }
        }
        impl Satellite {
            async fn version(&self) -> Result<String> {
                Ok(self.0.execute("echo 6.16").await?.stdout.trim().to_owned())
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path());
        let sats = broker
            .checkout_as::<Satellite>(CheckoutRequest::new().arg("test_action", "basic"))
            .await
            .unwrap();
        assert_eq!(sats[0].version().await.unwrap(), "6.16");
        drop(sats);
        assert_all_checked_in(&broker, dir.path());
    }

    #[tokio::test]
    async fn with_hosts_checks_in_after_the_body() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path());
        let seen = broker
            .with_hosts(
                CheckoutRequest::new().arg("test_action", "basic").count(3),
                async |hosts: &[broker_core::Host]| hosts.len(),
            )
            .await
            .unwrap();
        assert_eq!(seen, 3);
        assert_all_checked_in(&broker, dir.path());
    }

    #[tokio::test]
    async fn nick_and_instance_selection() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker_with(
            dir.path(),
            "TestProvider:\n  instances:\n    a: {default: true}\n    b: {}\nnicks:\n  mine: {test_action: basic, tag: from-nick}\n",
        );
        let host = broker
            .checkout_one(
                CheckoutRequest::new()
                    .nick("mine")
                    .arg("TestProvider", "b")
                    .arg("tag", "explicit"),
            )
            .await
            .unwrap();
        assert_eq!(host.instance(), Some("b"));
        assert_eq!(
            host.args().get("tag").and_then(Value::as_str),
            Some("explicit")
        );
        assert!(host.args().get("TestProvider").is_none());
        assert!(host.args().get("_broker_origin").is_some());
        host.checkin().await.unwrap();
        let err = broker
            .checkout_one(CheckoutRequest::new().nick("nope"))
            .await
            .unwrap_err();
        assert_eq!(err.exit_code(), 13);
        let err = broker
            .checkout_one(CheckoutRequest::new().arg("unknown", "x"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("test_action"), "{err}");
    }

    #[test]
    fn blocking_api_runs_commands_and_checks_in_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings::load_from(dir.path(), Vec::new()).unwrap();
        let broker =
            broker_core::blocking::Broker::new(settings, ProviderRegistry::new().with(KIND))
                .unwrap();
        let hosts = broker
            .checkout(CheckoutRequest::new().arg("test_action", "basic").count(2))
            .unwrap();
        assert_eq!(hosts[0].execute("echo hi").unwrap().stdout, "hi\n");
        hosts[1].write_file("/a/b", b"x").unwrap();
        assert_eq!(hosts[1].read_file("/a/b").unwrap(), b"x");
        drop(hosts);
        assert!(broker.as_async().inventory().list().unwrap().is_empty());
        assert_eq!(hosts_on_provider(dir.path()), 0);
        let seen = broker
            .with_hosts(
                CheckoutRequest::new().arg("test_action", "basic"),
                |hosts| hosts.len(),
            )
            .unwrap();
        assert_eq!(seen, 1);
        assert_eq!(hosts_on_provider(dir.path()), 0);
    }

    #[tokio::test]
    async fn blocking_api_refuses_to_start_inside_a_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings::load_from(dir.path(), Vec::new()).unwrap();
        let err = broker_core::blocking::Broker::new(settings, ProviderRegistry::new().with(KIND))
            .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("async runtime"), "{err}");
    }
}
