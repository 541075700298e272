//! A blocking facade for plain `#[test]` functions (feature `blocking`).
//!
//! It forwards to the async API on a small runtime of its own, so cleanup is written once: a
//! [`HostGuard`] here wraps the async guard and checks in the same way when dropped.
//!
//! ```no_run
//! use broker_core::blocking::Broker;
//! use broker_core::{CheckoutRequest, Settings};
//!
//! # fn demo(registry: broker_core::ProviderRegistry) -> broker_core::Result<()> {
//! let broker = Broker::new(Settings::load()?, registry)?;
//! let host = broker.checkout_one(CheckoutRequest::new().arg("test_action", "basic"))?;
//! assert!(host.execute("true")?.success());
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::host::{FromHost, Host};
use crate::record::HostRecord;
use crate::session::ExecOutput;
use crate::{CheckoutRequest, HostOutcome, ProviderRegistry, Settings};

/// The blocking broker.
#[derive(Debug, Clone)]
pub struct Broker {
    inner: crate::Broker,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl Broker {
    /// A blocking broker over the settings' inventory.
    ///
    /// # Errors
    /// [`Error::Usage`] when called inside an async runtime (use the async API there), and the errors
    /// of [`crate::Broker::new`].
    pub fn new(settings: Settings, registry: ProviderRegistry) -> Result<Self> {
        Self::wrap(crate::Broker::new(settings, registry)?)
    }

    /// Wraps an async broker.
    ///
    /// # Errors
    /// [`Error::Usage`] when called inside an async runtime.
    pub fn wrap(inner: crate::Broker) -> Result<Self> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Error::usage(
                "the blocking broker was created inside an async runtime; use `broker_core::Broker` there",
            ));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("broker-blocking")
            .enable_all()
            .build()
            .map_err(|e| Error::io_without_path("starting a runtime", e))?;
        Ok(Broker {
            inner,
            runtime: Arc::new(runtime),
        })
    }

    /// The async broker underneath.
    pub fn as_async(&self) -> &crate::Broker {
        &self.inner
    }

    /// Checks out the hosts a request asks for (see [`crate::Broker::checkout`]).
    ///
    /// # Errors
    /// As [`crate::Broker::checkout`].
    pub fn checkout(&self, request: CheckoutRequest) -> Result<Vec<HostGuard>> {
        self.checkout_as(request)
    }

    /// Checks out one host.
    ///
    /// # Errors
    /// As [`crate::Broker::checkout`].
    pub fn checkout_one(&self, request: CheckoutRequest) -> Result<HostGuard> {
        let mut hosts = self.checkout_as(request.count(1))?;
        hosts
            .pop()
            .ok_or_else(|| Error::user("the provider returned no host"))
    }

    /// Checks out hosts wrapped in a test framework's own host type.
    ///
    /// # Errors
    /// As [`crate::Broker::checkout_as`].
    pub fn checkout_as<H: FromHost>(&self, request: CheckoutRequest) -> Result<Vec<HostGuard<H>>> {
        let guards = self
            .runtime
            .block_on(self.inner.checkout_as::<H>(request))?;
        Ok(guards
            .into_iter()
            .map(|g| HostGuard {
                guard: Some(g),
                runtime: Arc::clone(&self.runtime),
            })
            .collect())
    }

    /// Checks hosts out, runs `body`, checks them in (also when `body` panics).
    ///
    /// # Errors
    /// As [`crate::Broker::with_hosts`].
    pub fn with_hosts<T>(
        &self,
        request: CheckoutRequest,
        body: impl FnOnce(&[HostGuard]) -> T,
    ) -> Result<T> {
        let guards = self.checkout(request)?;
        let out = body(&guards);
        let mut first_error = None;
        for guard in guards {
            if let Err(e) = guard.checkin() {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(out), Err)
    }

    /// Checks in inventory records (see [`crate::Broker::checkin`]).
    pub fn checkin(&self, records: Vec<HostRecord>, sequential: bool) -> Vec<HostOutcome> {
        self.runtime
            .block_on(self.inner.checkin(records, sequential))
    }
}

/// A checked-out host for blocking code; dropping it checks the host in.
#[must_use = "dropping a HostGuard checks the host in at once; bind it: `let host = …`"]
#[derive(Debug)]
pub struct HostGuard<H: FromHost = Host> {
    guard: Option<crate::HostGuard<H>>,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl<H: FromHost> std::ops::Deref for HostGuard<H> {
    type Target = H;
    fn deref(&self) -> &H {
        match &self.guard {
            Some(g) => g,
            None => unreachable!("a HostGuard's host is present until the guard is consumed"),
        }
    }
}

impl<H: FromHost> HostGuard<H> {
    fn take(&mut self) -> crate::HostGuard<H> {
        match self.guard.take() {
            Some(g) => g,
            None => unreachable!("a HostGuard's host is present until the guard is consumed"),
        }
    }

    /// Checks the host in now.
    ///
    /// # Errors
    /// As [`crate::HostGuard::checkin`].
    pub fn checkin(mut self) -> Result<()> {
        let guard = self.take();
        self.runtime.block_on(guard.checkin())
    }

    /// Leaves the host checked out and returns it.
    pub fn keep(mut self) -> H {
        self.take().keep()
    }

    /// Runs a command on the host.
    ///
    /// # Errors
    /// As [`Host::execute`].
    pub fn execute(&self, command: &str) -> Result<ExecOutput> {
        self.runtime.block_on(self.host().execute(command))
    }

    /// Runs a command on the host, cancelling it after `timeout`.
    ///
    /// # Errors
    /// As [`Host::execute_with_timeout`].
    pub fn execute_with_timeout(&self, command: &str, timeout: Duration) -> Result<ExecOutput> {
        self.runtime
            .block_on(self.host().execute_with_timeout(command, timeout))
    }

    /// Reads a file from the host.
    ///
    /// # Errors
    /// As [`Host::read_file`].
    pub fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        self.runtime.block_on(self.host().read_file(path))
    }

    /// Writes a file on the host.
    ///
    /// # Errors
    /// As [`Host::write_file`].
    pub fn write_file(&self, path: &str, contents: &[u8]) -> Result<()> {
        self.runtime
            .block_on(self.host().write_file(path, contents))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_yaml::Mapping;

    use super::*;
    use crate::provider::{CheckoutContext, Provider, ProviderKind};
    use crate::session::Session;

    /// The hosts the echo provider checked in, in order.
    static CHECKED_IN: Mutex<Vec<String>> = Mutex::new(Vec::new());

    /// Names its hosts `TAG-INDEX` (its `echo` argument is the tag) and notes each check-in; its
    /// sessions answer a command with the command and the host's name.
    #[derive(Debug)]
    struct Echo;

    #[async_trait::async_trait]
    impl Provider for Echo {
        fn name(&self) -> &str {
            "Echo"
        }
        fn instance(&self) -> Option<&str> {
            None
        }
        async fn checkout(&self, ctx: &CheckoutContext<'_>) -> Result<Mapping> {
            let tag = ctx.arg("echo").unwrap_or_default();
            let mut fields = Mapping::new();
            fields.insert("hostname".into(), format!("{tag}-{}", ctx.index()).into());
            Ok(fields)
        }
        async fn checkin(&self, host: &HostRecord) -> Result<()> {
            let name = host.hostname().unwrap_or_default().to_owned();
            if name.starts_with("refused-") {
                return Err(Error::provider("Echo", "refused").with_host(&name));
            }
            crate::sync::lock(&CHECKED_IN).push(name);
            Ok(())
        }
        async fn connect(&self, host: &HostRecord) -> Result<Box<dyn Session>> {
            Ok(Box::new(EchoSession(host.display_name())))
        }
    }

    #[derive(Debug)]
    struct EchoSession(String);

    #[async_trait::async_trait]
    impl Session for EchoSession {
        async fn execute(&self, command: &str, timeout: Option<Duration>) -> Result<ExecOutput> {
            let within = timeout.map(|t| format!(" within {}s", t.as_secs()));
            Ok(ExecOutput {
                stdout: format!("{command} on {}{}", self.0, within.unwrap_or_default()),
                stderr: String::new(),
                status: 0,
            })
        }
        async fn read_file(&self, path: &str) -> Result<Vec<u8>> {
            Ok(format!("{path} of {}", self.0).into_bytes())
        }
        async fn write_file(&self, path: &str, contents: &[u8]) -> Result<()> {
            // Writes nothing: says what it was asked to write, so a test sees the call arrive.
            let what = String::from_utf8_lossy(contents);
            Err(Error::user(format!(
                "{path} on {} would hold {what}",
                self.0
            )))
        }
    }

    fn broker(dir: &std::path::Path) -> Result<Broker> {
        let settings = Settings::from_yaml(dir, "")?;
        let kind =
            ProviderKind::new("Echo", "test", |_| Ok(Arc::new(Echo))).checkout_actions(&["echo"]);
        Broker::new(settings, ProviderRegistry::new().with(kind))
    }

    fn request(tag: &str, count: usize) -> CheckoutRequest {
        CheckoutRequest::new().arg("echo", tag).count(count)
    }

    /// The hosts of `tag` checked in so far, sorted.
    fn checked_in(tag: &str) -> Vec<String> {
        let prefix = format!("{tag}-");
        let mut names: Vec<String> = crate::sync::lock(&CHECKED_IN)
            .iter()
            .filter(|n| n.starts_with(&prefix))
            .cloned()
            .collect();
        names.sort();
        names
    }

    fn hostnames(broker: &Broker) -> Vec<String> {
        let records = broker.as_async().inventory().list().unwrap();
        records
            .iter()
            .map(|r| r.hostname().unwrap_or_default().to_owned())
            .collect()
    }

    #[test]
    fn the_blocking_facade_runs_commands_and_checks_in_on_drop() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path())?;
        let host = broker.checkout_one(request("dropped", 1))?;
        assert_eq!(host.execute("hostname")?.stdout, "hostname on dropped-0");
        assert_eq!(host.read_file("/etc/motd")?, b"/etc/motd of dropped-0");
        assert_eq!(hostnames(&broker), ["dropped-0"]);
        drop(host);
        assert_eq!(checked_in("dropped"), ["dropped-0"]);
        assert_eq!(hostnames(&broker), Vec::<String>::new());
        Ok(())
    }

    #[test]
    fn the_blocking_facade_checks_in_when_asked_and_keeps_when_asked() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path())?;
        let mut hosts = broker.checkout(request("asked", 2))?;
        let kept = hosts.remove(1).keep();
        assert_eq!(kept.hostname(), Some("asked-1"));
        hosts.remove(0).checkin()?;
        assert_eq!(checked_in("asked"), ["asked-0"]);
        assert_eq!(hostnames(&broker), ["asked-1"]);
        Ok(())
    }

    #[test]
    fn the_blocking_with_hosts_checks_in_after_the_body() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path())?;
        let answers = broker.with_hosts(request("scoped", 2), |hosts| {
            hosts
                .iter()
                .map(|h| h.execute("true").map(|o| o.stdout))
                .collect::<Result<Vec<_>>>()
        })??;
        assert_eq!(answers, ["true on scoped-0", "true on scoped-1"]);
        assert_eq!(checked_in("scoped"), ["scoped-0", "scoped-1"]);
        assert_eq!(hostnames(&broker), Vec::<String>::new());
        Ok(())
    }

    #[test]
    fn the_blocking_facade_passes_timeouts_writes_and_check_in_errors_on() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path())?;
        let host = broker.checkout_one(request("passed", 1))?;
        let out = host.execute_with_timeout("uptime", Duration::from_secs(7))?;
        assert_eq!(out.stdout, "uptime on passed-0 within 7s");
        let err = host.write_file("/etc/motd", b"hello").unwrap_err();
        assert_eq!(err.to_string(), "/etc/motd on passed-0 would hold hello");
        drop(host);
        // An explicit check-in returns the provider's error (a drop could only log it).
        let refused = broker.checkout_one(request("refused", 1))?;
        let err = refused.checkin().unwrap_err();
        assert!(err.to_string().contains("refused"), "{err}");
        assert_eq!(hostnames(&broker), ["refused-0"]);
        Ok(())
    }

    #[test]
    fn the_blocking_checkin_reports_each_record() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path())?;
        let kept: Vec<HostRecord> = broker
            .checkout(request("listed", 2))?
            .into_iter()
            .map(|h| h.keep().record().clone())
            .collect();
        let outcomes = broker.checkin(kept, true);
        let names: Vec<(String, bool)> = outcomes
            .iter()
            .map(|o| {
                (
                    o.record.hostname().unwrap_or_default().to_owned(),
                    o.result.is_ok(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [("listed-0".into(), true), ("listed-1".into(), true)]
        );
        assert_eq!(checked_in("listed"), ["listed-0", "listed-1"]);
        assert_eq!(hostnames(&broker), Vec::<String>::new());
        Ok(())
    }

    #[tokio::test]
    async fn the_blocking_facade_refuses_to_start_inside_a_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let err = broker(dir.path()).unwrap_err();
        assert!(matches!(err, Error::Usage { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "the blocking broker was created inside an async runtime; use `broker_core::Broker` there"
        );
    }
}
