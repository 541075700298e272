//! A provider and session for the handoff's unit tests: the session fails its first connects as
//! told, answers commands from a script of replies, and keeps what it was asked and given.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_yaml::Mapping;

use crate::error::{Error, Result};
use crate::host::Host;
use crate::provider::{CheckoutContext, Provider};
use crate::record::HostRecord;
use crate::session::{ExecOutput, Session};

/// What the fake host saw, and how it answers.
#[derive(Debug, Default)]
pub(crate) struct Script {
    /// Connects that fail before one succeeds.
    pub(crate) failing_connects: usize,
    /// Connects asked for.
    pub(crate) connects: usize,
    /// Replies to commands, in order; a command with none left gets `ok("")`.
    pub(crate) replies: VecDeque<Result<ExecOutput>>,
    /// Commands run, in order.
    pub(crate) commands: Vec<String>,
    /// Files written: path and contents.
    pub(crate) written: Vec<(String, Vec<u8>)>,
    /// What the session says of how to reach the host.
    pub(crate) access: Option<crate::session::Access>,
}

pub(crate) type Shared = Arc<Mutex<Script>>;

pub(crate) fn ok(stdout: &str) -> Result<ExecOutput> {
    Ok(ExecOutput {
        stdout: stdout.to_owned(),
        stderr: String::new(),
        status: 0,
    })
}

#[cfg(any(
    feature = "handoff-script",
    feature = "handoff-puppet",
    feature = "handoff-chef"
))]
pub(crate) fn status(status: i32, stdout: &str) -> Result<ExecOutput> {
    Ok(ExecOutput {
        stdout: stdout.to_owned(),
        stderr: String::new(),
        status,
    })
}

#[derive(Debug)]
struct Fake(Shared);

#[async_trait::async_trait]
impl Provider for Fake {
    fn name(&self) -> &str {
        "Fake"
    }
    fn instance(&self) -> Option<&str> {
        None
    }
    async fn checkout(&self, _ctx: &CheckoutContext<'_>) -> Result<Mapping> {
        Ok(Mapping::new())
    }
    async fn checkin(&self, _host: &HostRecord) -> Result<()> {
        Ok(())
    }
    async fn connect(&self, _host: &HostRecord) -> Result<Box<dyn Session>> {
        let mut s = self.0.lock().unwrap();
        s.connects += 1;
        if s.connects <= s.failing_connects {
            return Err(Error::host("fake", "connection refused"));
        }
        Ok(Box::new(FakeSession(Arc::clone(&self.0))))
    }
}

#[derive(Debug)]
struct FakeSession(Shared);

#[async_trait::async_trait]
impl Session for FakeSession {
    async fn execute(&self, command: &str, _timeout: Option<Duration>) -> Result<ExecOutput> {
        let mut s = self.0.lock().unwrap();
        s.commands.push(command.to_owned());
        s.replies.pop_front().unwrap_or_else(|| ok(""))
    }
    async fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        Err(Error::host("fake", format!("no {path}")))
    }
    fn access(&self) -> Option<crate::session::Access> {
        self.0.lock().unwrap().access.clone()
    }
    async fn write_file(&self, path: &str, contents: &[u8]) -> Result<()> {
        let mut s = self.0.lock().unwrap();
        s.written.push((path.to_owned(), contents.to_vec()));
        Ok(())
    }
}

/// A host of the fake provider, and what its session sees.
pub(crate) fn host(script: Script) -> (Host, Shared) {
    let shared = Arc::new(Mutex::new(script));
    let mut record = HostRecord::default();
    record.set(crate::record::fields::HOSTNAME, "fake.example.com");
    let host = Host::new(record, Arc::new(Fake(Arc::clone(&shared))));
    (host, shared)
}

/// A target of `kind` named `name` with plain `values`.
pub(crate) fn target(name: &str, kind: &str, values: &[(&str, &str)]) -> crate::handoff::Target {
    let mut config = crate::handoff::TargetConfig::default();
    for (key, value) in values {
        config.insert(*key, crate::handoff::ConfigValue::new(value, false));
    }
    crate::handoff::Target::new(name, "", kind, config).unwrap()
}

/// `target` with `key` set, as a secret when `secret`.
pub(crate) fn with(
    mut target: crate::handoff::Target,
    key: &str,
    value: &str,
    secret: bool,
) -> crate::handoff::Target {
    target
        .config
        .insert(key, crate::handoff::ConfigValue::new(value, secret));
    target
}

#[cfg(any(
    feature = "handoff-script",
    feature = "handoff-puppet",
    feature = "handoff-chef"
))]
/// The id of the runs [`run`] makes.
pub(crate) const RUN: &str = "r1";

#[cfg(any(
    feature = "handoff-script",
    feature = "handoff-puppet",
    feature = "handoff-chef"
))]
/// The private directory the fake host's `mktemp -d` answers with.
pub(crate) const DIR: &str = "/tmp/broker-handoff.abc";

/// Runs `kind` for `target` on a fake host whose `mktemp -d` answers [`DIR`], then `replies`; the
/// report and what the host saw.
#[cfg(any(
    feature = "handoff-script",
    feature = "handoff-puppet",
    feature = "handoff-chef"
))]
pub(crate) async fn run_in_private_dir(
    kind: &dyn crate::handoff::Handoff,
    target: &crate::handoff::Target,
    replies: Vec<Result<ExecOutput>>,
) -> (crate::handoff::RunReport, Script) {
    let mut replies: VecDeque<_> = replies.into();
    replies.push_front(ok(&format!("{DIR}\n")));
    let (host, seen) = host(Script {
        replies,
        ..Script::default()
    });
    let report = crate::handoff::run::run_stoppable(kind, &host, target, RUN, None)
        .await
        .unwrap();
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    (report, seen)
}
