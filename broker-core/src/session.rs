//! How test code reaches into a host: run commands, move files.
//!
//! Providers hand out sessions ([`crate::Provider::connect`]): container exec for containers, SSH for
//! machines. This module only defines the contract; it knows no transport.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;

use crate::error::{Error, Result};

/// What a command printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ExecOutput {
    /// Standard output, decoded as UTF-8 (invalid sequences replaced).
    pub stdout: String,
    /// Standard error, decoded as UTF-8 (invalid sequences replaced).
    pub stderr: String,
    /// The exit status. A session that cannot learn it reports an error instead of guessing 0.
    pub status: i32,
}

impl ExecOutput {
    /// Whether the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status == 0
    }
}

impl fmt::Display for ExecOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stdout:\n{}\nstderr:\n{}\nstatus: {}",
            self.stdout, self.stderr, self.status
        )
    }
}

/// Which stream a piece of streamed output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Receives output as a command produces it.
pub type OutputSink<'a> = &'a (dyn Fn(OutputStream, &[u8]) + Send + Sync);

/// How a program on this machine reaches the host a session reaches, for tools that open their own
/// connections (`ansible-playbook`): what the session itself used, secrets kept secret.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Access {
    /// Over SSH.
    Ssh(SshAccess),
    /// By running commands in a container through its engine.
    Container(ContainerAccess),
}

/// Reaching a host over SSH.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SshAccess {
    /// Host name or address, without the port.
    pub address: String,
    /// Port.
    pub port: u16,
    /// Login name.
    pub username: String,
    /// Password, when one is configured.
    pub password: Option<SecretString>,
    /// Private key file, when one is configured.
    pub key_file: Option<PathBuf>,
    /// Where host keys are remembered (OpenSSH's `known_hosts` format).
    pub known_hosts: PathBuf,
    /// How host keys are checked.
    pub host_key_policy: HostKeyPolicy,
}

impl SshAccess {
    /// Access as `username` to `address`:`port`, host keys checked against `known_hosts` as
    /// `host_key_policy` says; no password, no key file.
    pub fn new(
        address: impl Into<String>,
        port: u16,
        username: impl Into<String>,
        known_hosts: PathBuf,
        host_key_policy: HostKeyPolicy,
    ) -> Self {
        SshAccess {
            address: address.into(),
            port,
            username: username.into(),
            password: None,
            key_file: None,
            known_hosts,
            host_key_policy,
        }
    }
}

/// Reaching a container through its engine's API.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ContainerAccess {
    /// The engine's API: `unix:///run/podman/podman.sock`, `tcp://HOST:PORT`.
    pub engine: String,
    /// The container's name or id.
    pub container: String,
}

impl ContainerAccess {
    /// The container `container` on the engine at `engine`.
    pub fn new(engine: impl Into<String>, container: impl Into<String>) -> Self {
        ContainerAccess {
            engine: engine.into(),
            container: container.into(),
        }
    }
}

/// How SSH host keys are checked (the setting `ssh.host_key_checking`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyPolicy {
    /// Remember keys of new hosts; refuse a host whose key changed (the default).
    AcceptNew,
    /// Accept only keys already in the known-hosts file.
    Strict,
    /// Accept any key (hosts whose keys change on every rebuild).
    Off,
}

impl HostKeyPolicy {
    /// The policy `ssh.host_key_checking` names; empty is the default.
    ///
    /// # Errors
    /// [`Error::Configuration`] for a name that is none of them.
    pub fn parse(text: &str) -> Result<Self> {
        match text.to_ascii_lowercase().as_str() {
            "accept-new" | "accept_new" | "" => Ok(HostKeyPolicy::AcceptNew),
            "strict" | "yes" | "true" => Ok(HostKeyPolicy::Strict),
            "off" | "no" | "false" => Ok(HostKeyPolicy::Off),
            other => Err(Error::configuration(format!(
                "ssh.host_key_checking is `{other}`; use accept-new, strict or off"
            ))),
        }
    }

    /// The value of OpenSSH's `StrictHostKeyChecking` that checks keys the same way.
    pub fn openssh_option(self) -> &'static str {
        match self {
            HostKeyPolicy::AcceptNew => "accept-new",
            HostKeyPolicy::Strict => "yes",
            HostKeyPolicy::Off => "no",
        }
    }
}

/// A connection to a host that runs commands and moves files.
///
/// Implementations must be safe to share between tasks: one session serves many concurrent commands.
#[async_trait::async_trait]
pub trait Session: Send + Sync + fmt::Debug {
    /// Runs `command` and waits for it to end, or cancels it after `timeout` and returns
    /// [`Error::Timeout`].
    ///
    /// # Errors
    /// Transport failures and timeouts. A non-zero exit status is reported in [`ExecOutput::status`].
    async fn execute(&self, command: &str, timeout: Option<Duration>) -> Result<ExecOutput>;

    /// Runs `command` like [`Session::execute`], handing its output to `sink` as it arrives (for long
    /// commands and `broker ssh`). The default hands it over when the command ends; transports that
    /// can stream override this.
    ///
    /// # Errors
    /// As [`Session::execute`].
    async fn execute_streaming(
        &self,
        command: &str,
        timeout: Option<Duration>,
        sink: OutputSink<'_>,
    ) -> Result<ExecOutput> {
        let out = self.execute(command, timeout).await?;
        sink(OutputStream::Stdout, out.stdout.as_bytes());
        sink(OutputStream::Stderr, out.stderr.as_bytes());
        Ok(out)
    }

    /// Opens an interactive shell with a PTY of `size` (columns, rows), copying `input` to it and its
    /// output to `output` until it exits; returns its exit status. The caller owns the terminal (raw
    /// mode, restoring it).
    ///
    /// # Errors
    /// [`Error::NotImplemented`] for sessions without PTYs; transport failures.
    async fn interactive(
        &self,
        input: Box<dyn tokio::io::AsyncRead + Unpin + Send>,
        output: Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
        size: (u32, u32),
    ) -> Result<i32> {
        let _ = (input, output, size);
        Err(Error::NotImplemented {
            provider: "this session".into(),
            operation: "interactive shells".into(),
        })
    }

    /// Reads a whole file from the host.
    ///
    /// # Errors
    /// Transport failures, or a missing or unreadable file.
    async fn read_file(&self, path: &str) -> Result<Vec<u8>>;

    /// Writes a whole file on the host, creating its parent directory.
    ///
    /// # Errors
    /// Transport failures, or a file that cannot be written.
    async fn write_file(&self, path: &str, contents: &[u8]) -> Result<()>;

    /// Copies a local file to the host. The default reads it whole; transports that can stream override
    /// this.
    ///
    /// # Errors
    /// A local read failure or any error of [`Session::write_file`].
    async fn upload(&self, local: &Path, remote: &str) -> Result<()> {
        let contents = tokio_read(local).await?;
        self.write_file(remote, &contents).await
    }

    /// Copies a file from the host to a local path, creating the local parent directory. The default
    /// buffers it whole; transports that can stream override this.
    ///
    /// # Errors
    /// Any error of [`Session::read_file`] or a local write failure.
    async fn download(&self, remote: &str, local: &Path) -> Result<()> {
        let contents = self.read_file(remote).await?;
        if let Some(parent) = local.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io("creating directory", parent, e))?;
        }
        std::fs::write(local, contents).map_err(|e| Error::io("writing file", local, e))
    }

    /// How a program on this machine could reach the same host the same way, for tools that open
    /// their own connections. The default: it cannot be said.
    fn access(&self) -> Option<Access> {
        None
    }

    /// Closes the session. Dropping it closes it too; this reports errors.
    ///
    /// # Errors
    /// Transport failures while closing.
    async fn close(&self) -> Result<()> {
        Ok(())
    }
}

async fn tokio_read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io("reading file", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// `ssh.host_key_checking`'s words, and the OpenSSH option each checks keys as.
    #[test]
    fn host_key_policies_read_their_words_and_say_them_to_openssh() {
        for (words, policy, option) in [
            (
                &["accept-new", "accept_new", ""][..],
                HostKeyPolicy::AcceptNew,
                "accept-new",
            ),
            (&["strict", "yes", "true"][..], HostKeyPolicy::Strict, "yes"),
            (&["off", "no", "false"][..], HostKeyPolicy::Off, "no"),
        ] {
            for word in words {
                assert_eq!(HostKeyPolicy::parse(word).unwrap(), policy, "{word}");
            }
            assert_eq!(policy.openssh_option(), option);
        }
        let err = HostKeyPolicy::parse("maybe").unwrap_err();
        assert_eq!(
            err.to_string(),
            "configuration error: ssh.host_key_checking is `maybe`; use accept-new, strict or off"
        );
    }

    /// A session that answers every command with the same output, serves one file's contents, keeps
    /// what is written to it, and has no PTY.
    #[derive(Debug, Default)]
    struct Canned {
        output: ExecOutput,
        written: Mutex<Vec<(String, Vec<u8>)>>,
    }

    #[async_trait::async_trait]
    impl Session for Canned {
        async fn execute(&self, _command: &str, _timeout: Option<Duration>) -> Result<ExecOutput> {
            Ok(self.output.clone())
        }
        async fn read_file(&self, path: &str) -> Result<Vec<u8>> {
            Ok(format!("contents of {path}").into_bytes())
        }
        async fn write_file(&self, path: &str, contents: &[u8]) -> Result<()> {
            self.written
                .lock()
                .unwrap()
                .push((path.to_owned(), contents.to_vec()));
            Ok(())
        }
    }

    fn output(status: i32) -> ExecOutput {
        ExecOutput {
            stdout: "out\n".into(),
            stderr: "err\n".into(),
            status,
        }
    }

    #[test]
    fn success_is_status_zero_and_display_shows_every_part() {
        assert!(output(0).success());
        assert!(!output(1).success());
        assert!(!output(-1).success());
        assert_eq!(
            output(3).to_string(),
            "stdout:\nout\n\nstderr:\nerr\n\nstatus: 3"
        );
    }

    #[tokio::test]
    async fn streaming_by_default_hands_over_both_streams_when_the_command_ends() {
        let session = Canned {
            output: output(2),
            ..Canned::default()
        };
        let seen = Mutex::new(Vec::new());
        let sink = |stream: OutputStream, bytes: &[u8]| {
            seen.lock()
                .unwrap()
                .push((stream, String::from_utf8_lossy(bytes).into_owned()));
        };
        let out = session.execute_streaming("x", None, &sink).await.unwrap();
        assert_eq!(out, output(2));
        assert_eq!(
            *seen.lock().unwrap(),
            [
                (OutputStream::Stdout, "out\n".to_owned()),
                (OutputStream::Stderr, "err\n".to_owned())
            ]
        );
    }

    #[tokio::test]
    async fn a_session_without_ptys_says_interactive_shells_are_not_implemented() {
        let session = Canned::default();
        let err = session
            .interactive(
                Box::new(tokio::io::empty()),
                Box::new(tokio::io::sink()),
                (80, 24),
            )
            .await
            .unwrap_err();
        assert_eq!(err.exit_code(), 9, "{err}");
        assert!(err.to_string().contains("interactive shells"), "{err}");
    }

    #[tokio::test]
    async fn default_upload_and_download_move_whole_files_making_local_directories() {
        let dir = tempfile::tempdir().unwrap();
        let session = Canned::default();
        let local = dir.path().join("up.txt");
        std::fs::write(&local, "hello").unwrap();
        session.upload(&local, "/tmp/up.txt").await.unwrap();
        assert_eq!(
            *session.written.lock().unwrap(),
            [("/tmp/up.txt".to_owned(), b"hello".to_vec())]
        );
        let missing = session.upload(&dir.path().join("nope"), "/x").await;
        assert!(matches!(missing, Err(Error::Io { .. })), "{missing:?}");

        let down = dir.path().join("new/dir/down.txt");
        session.download("/etc/motd", &down).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&down).unwrap(),
            "contents of /etc/motd"
        );
    }
}
