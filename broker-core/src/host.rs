//! The handle test code uses: a host record plus the provider that made it.
//!
//! A [`Host`] can open a [`Session`] to run commands and move files. Test frameworks wrap hosts in
//! their own types through [`FromHost`]. The record itself — the inventory's data — is
//! [`HostRecord`], in `record.rs`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::provider::Provider;
use crate::record::HostRecord;
use crate::session::{ExecOutput, Session};

/// A checked-out host: its record plus the provider that made it, for sessions.
///
/// `Host` derefs to its [`HostRecord`], so `host.hostname()` and friends work directly. Clones share
/// one session.
#[derive(Clone)]
pub struct Host {
    record: HostRecord,
    link: Option<Arc<HostLink>>,
}

struct HostLink {
    provider: Arc<dyn Provider>,
    session: tokio::sync::OnceCell<Arc<dyn Session>>,
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.record.fmt(f)
    }
}

impl std::ops::Deref for Host {
    type Target = HostRecord;
    fn deref(&self) -> &HostRecord {
        &self.record
    }
}

impl Host {
    /// A host from its record and the provider serving it.
    pub fn new(record: HostRecord, provider: Arc<dyn Provider>) -> Self {
        Host {
            record,
            link: Some(Arc::new(HostLink {
                provider,
                session: tokio::sync::OnceCell::new(),
            })),
        }
    }

    /// A host with no provider behind it (no session), e.g. for a record read from the inventory.
    pub fn detached(record: HostRecord) -> Self {
        Host { record, link: None }
    }

    /// The inventory record.
    pub fn record(&self) -> &HostRecord {
        &self.record
    }

    /// The provider that serves this host, if it is attached to one.
    pub fn provider_handle(&self) -> Option<&Arc<dyn Provider>> {
        self.link.as_ref().map(|l| &l.provider)
    }

    /// The host's session (opened on first use, then reused).
    ///
    /// # Errors
    /// [`Error::Host`] when the host has no provider, or the provider's error when connecting fails.
    pub async fn session(&self) -> Result<Arc<dyn Session>> {
        let link = self.link.as_ref().ok_or_else(|| Error::Host {
            host: self.display_name(),
            message: "this host is not attached to a provider; get it through `Broker`".into(),
            source: None,
        })?;
        let session = link
            .session
            .get_or_try_init(|| async {
                link.provider
                    .connect(&self.record)
                    .await
                    .map(Arc::<dyn Session>::from)
            })
            .await?;
        Ok(Arc::clone(session))
    }

    /// Runs a command on the host.
    ///
    /// # Errors
    /// A session error; a non-zero exit status is *not* an error (see [`ExecOutput::status`]).
    pub async fn execute(&self, command: &str) -> Result<ExecOutput> {
        self.session().await?.execute(command, None).await
    }

    /// Runs a command on the host, cancelling it after `timeout`.
    ///
    /// # Errors
    /// A session error, or [`Error::Timeout`] when the command outlives `timeout`.
    pub async fn execute_with_timeout(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Result<ExecOutput> {
        self.session().await?.execute(command, Some(timeout)).await
    }

    /// Runs a command, handing its output to `sink` as it arrives.
    ///
    /// # Errors
    /// A session error, or [`Error::Timeout`] when the command outlives `timeout`.
    pub async fn execute_streaming(
        &self,
        command: &str,
        timeout: Option<Duration>,
        sink: crate::session::OutputSink<'_>,
    ) -> Result<ExecOutput> {
        self.session()
            .await?
            .execute_streaming(command, timeout, sink)
            .await
    }

    /// Opens an interactive shell on the host (see [`Session::interactive`]).
    ///
    /// # Errors
    /// A session error, or [`Error::NotImplemented`] when the session has no PTYs.
    pub async fn interactive(
        &self,
        input: Box<dyn tokio::io::AsyncRead + Unpin + Send>,
        output: Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
        size: (u32, u32),
    ) -> Result<i32> {
        match self.session().await?.interactive(input, output, size).await {
            Err(Error::NotImplemented { .. }) => Err(Error::NotImplemented {
                provider: format!(
                    "the session to {} ({})",
                    self.display_name(),
                    self.provider().unwrap_or("unknown provider")
                ),
                operation: "interactive shells; run commands instead \
                            (`broker ssh HOST -- COMMAND`, or pipe them in)"
                    .into(),
            }),
            other => other,
        }
    }

    /// Reads a file from the host.
    ///
    /// # Errors
    /// A session error.
    pub async fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        self.session().await?.read_file(path).await
    }

    /// Writes a file on the host, creating its parent directory.
    ///
    /// # Errors
    /// A session error.
    pub async fn write_file(&self, path: &str, contents: &[u8]) -> Result<()> {
        self.session().await?.write_file(path, contents).await
    }
}

/// A test framework's own host type (the Python broker's `host_class`).
///
/// ```
/// use broker_core::{FromHost, Host, Result};
///
/// /// A Satellite server with methods of its own.
/// struct Satellite(Host);
///
/// impl FromHost for Satellite {
///     fn from_host(host: Host) -> Result<Self> {
///         Ok(Satellite(host))
///     }
///     fn host(&self) -> &Host {
///         &self.0
///     }
/// }
///
/// impl Satellite {
///     async fn version(&self) -> Result<String> {
///         Ok(self.0.execute("rpm -q satellite").await?.stdout)
///     }
/// }
/// ```
pub trait FromHost: Sized + Send + Sync + 'static {
    /// Wraps a freshly checked-out (or reconstructed) host.
    ///
    /// # Errors
    /// Whatever the wrapper decides, e.g. a host of the wrong [`HostRecord::host_type`].
    fn from_host(host: Host) -> Result<Self>;

    /// The wrapped host.
    fn host(&self) -> &Host;
}

impl FromHost for Host {
    fn from_host(host: Host) -> Result<Self> {
        Ok(host)
    }
    fn host(&self) -> &Host {
        self
    }
}

#[cfg(test)]
mod tests {
    use serde_yaml::Mapping;

    use super::*;
    use crate::provider::CheckoutContext;

    /// Serves sessions with a PTY (whose shell exits 7) or, for hosts named `plain`, without one.
    #[derive(Debug)]
    struct Shells;

    #[derive(Debug)]
    struct Shell {
        pty: bool,
    }

    #[async_trait::async_trait]
    impl Session for Shell {
        /// Says the command back, with status 3.
        async fn execute(&self, command: &str, _timeout: Option<Duration>) -> Result<ExecOutput> {
            Ok(ExecOutput {
                stdout: format!("{command}\n"),
                stderr: String::new(),
                status: 3,
            })
        }
        async fn read_file(&self, _path: &str) -> Result<Vec<u8>> {
            Ok(Vec::new())
        }
        async fn write_file(&self, _path: &str, _contents: &[u8]) -> Result<()> {
            Ok(())
        }
        async fn interactive(
            &self,
            _input: Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            _output: Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
            _size: (u32, u32),
        ) -> Result<i32> {
            if self.pty {
                Ok(7)
            } else {
                Err(Error::NotImplemented {
                    provider: "Shells".into(),
                    operation: "PTYs".into(),
                })
            }
        }
    }

    #[async_trait::async_trait]
    impl Provider for Shells {
        fn name(&self) -> &str {
            "Shells"
        }
        fn instance(&self) -> Option<&str> {
            None
        }
        async fn checkout(&self, _ctx: &CheckoutContext<'_>) -> Result<Mapping> {
            Err(self.not_implemented("checkout"))
        }
        async fn checkin(&self, _host: &HostRecord) -> Result<()> {
            Ok(())
        }
        async fn connect(&self, host: &HostRecord) -> Result<Box<dyn Session>> {
            Ok(Box::new(Shell {
                pty: host.hostname() != Some("plain"),
            }))
        }
    }

    fn host(hostname: &str) -> Host {
        let mut record = HostRecord::pending("Shells", None, Mapping::new());
        record.set(crate::record::fields::HOSTNAME, hostname);
        Host::new(record, Arc::new(Shells))
    }

    async fn shell(host: &Host) -> Result<i32> {
        host.interactive(
            Box::new(tokio::io::empty()),
            Box::new(tokio::io::sink()),
            (80, 24),
        )
        .await
    }

    #[tokio::test]
    async fn a_shell_returns_its_exit_status_and_a_session_without_ptys_says_what_to_do() {
        assert_eq!(shell(&host("tty")).await.unwrap(), 7);
        let err = shell(&host("plain")).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "the session to plain (Shells) does not support interactive shells; run commands \
             instead (`broker ssh HOST -- COMMAND`, or pipe them in)"
        );
    }

    /// A host shows as its record (`{:?}` of a record masks its secrets).
    #[test]
    fn a_host_debugs_as_its_record() {
        let host = host("tty");
        assert_eq!(format!("{host:?}"), format!("{:?}", host.record()));
        assert!(format!("{host:?}").contains("tty"));
    }

    /// A command run on a host gives its output and status, streamed to a sink when asked.
    #[tokio::test]
    async fn commands_give_their_output_and_status_streamed_when_asked() {
        let host = host("tty");
        let out = host.execute("echo hi").await.unwrap();
        assert_eq!((out.stdout.as_str(), out.status), ("echo hi\n", 3));
        let seen = std::sync::Mutex::new(String::new());
        let sink = |_: crate::session::OutputStream, bytes: &[u8]| {
            seen.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(bytes));
        };
        let out = host
            .execute_streaming("echo there", None, &sink)
            .await
            .unwrap();
        assert_eq!((out.stdout.as_str(), out.status), ("echo there\n", 3));
        assert_eq!(*seen.lock().unwrap(), "echo there\n");
    }

    #[test]
    fn a_host_knows_the_provider_serving_it_and_a_detached_one_none() {
        let attached = host("tty");
        let provider = attached.provider_handle().map(|p| p.name().to_owned());
        assert_eq!(provider.as_deref(), Some("Shells"));
        assert!(
            Host::detached(attached.record().clone())
                .provider_handle()
                .is_none()
        );
    }
}
