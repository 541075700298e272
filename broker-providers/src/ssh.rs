//! SSH sessions for hosts, with `russh` (pure Rust, async; `ring` crypto). russh's types stay inside
//! this module: the public face is [`SshOptions`], [`connect`] and `broker_core::Session`.
//!
//! - **Commands**: `execute(cmd, timeout)` reads the channel until it closes; a missing exit status is
//!   an error, never 0; a timeout signals the command, closes the channel and says so. Output can be
//!   streamed as it arrives.
//! - **Files**: SFTP, streamed in both directions (no whole-file buffering for `upload`/`download`);
//!   the remote parent directory is created.
//! - **Authentication**, in the Python broker's order: key file, password, agent (`SSH_AUTH_SOCK`);
//!   when all fail the error names each method and why (exit code 5).
//! - **Host keys** (`ssh.host_key_checking`): `accept-new` (default; remembered in
//!   `<broker dir>/known_hosts`, a changed key is refused), `strict` (only keys already known), `off`.
//! - **Connecting** retries with backoff until `host_connection_timeout` (a fresh host refuses
//!   connections for a while). One connection per session carries many commands (at most 8 channels
//!   at once, below OpenSSH's default `MaxSessions` of 10).

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use broker_core::secrecy::{ExposeSecret, SecretString};
use broker_core::session::{Access, SshAccess};
use broker_core::{
    Error, ExecOutput, HostRecord, Mapping, OutputSink, OutputStream, Result, Session, Value,
};
use russh::client;
use russh::keys::PublicKeyOrCertificate;
use russh::keys::{PrivateKeyWithHashAlg, PublicKey};
use russh::{ChannelMsg, Sig};
use tokio::io::AsyncWriteExt;

pub use broker_core::session::HostKeyPolicy;

/// Everything needed to reach one host.
#[derive(Clone)]
pub struct SshOptions {
    /// Login name (`host_username`, default `root`).
    pub username: String,
    /// Password (`host_password`), tried after the key file.
    pub password: Option<SecretString>,
    /// Port (`host_ssh_port`, default 22); a `host:port` hostname wins.
    pub port: u16,
    /// Private key file (`host_ssh_key_filename`), tried first.
    pub key_filename: Option<PathBuf>,
    /// How long to keep trying to connect (`host_connection_timeout`, default 60 s).
    pub connection_timeout: Duration,
    /// Host key policy.
    pub host_key_policy: HostKeyPolicy,
    /// Where accepted host keys are remembered.
    pub known_hosts: PathBuf,
    /// Prefer IPv6 addresses (`host_ipv6`).
    pub ipv6: bool,
    /// Fall back to IPv4 when IPv6 fails (`host_ipv4_fallback`, default true).
    pub ipv4_fallback: bool,
}

impl fmt::Debug for SshOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshOptions")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "********"))
            .field("port", &self.port)
            .field("key_filename", &self.key_filename)
            .field("connection_timeout", &self.connection_timeout)
            .field("host_key_policy", &self.host_key_policy)
            .finish_non_exhaustive()
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        // A masked value stands for a secret the inventory does not hold: not set.
        Value::String(s) if s.is_empty() || s == broker_core::redact::MASK => None,
        other => broker_core::value::scalar_text(other),
    }
}

impl SshOptions {
    /// Options from the `ssh` settings section, overridden by the host's own fields and its checkout
    /// arguments (`host_username`/`username`, `host_password`/`password`, `host_ssh_port`/`port`,
    /// `host_ssh_key_filename`/`key_filename`, `host_connection_timeout`/`connection_timeout`).
    ///
    /// # Errors
    /// [`Error::Configuration`] for values of the wrong kind.
    pub fn resolve(
        ssh: &Mapping,
        host: Option<&HostRecord>,
        broker_directory: &Path,
    ) -> Result<Self> {
        let args = host.map(HostRecord::args).unwrap_or_default();
        let lookup = |keys: &[&str]| -> Option<String> {
            for key in keys {
                let from_host = host.and_then(|h| h.get(key)).and_then(text);
                let found = from_host
                    .or_else(|| args.get(*key).and_then(text))
                    .or_else(|| ssh.get(*key).and_then(text));
                if found.is_some() {
                    return found;
                }
            }
            None
        };
        let number = |keys: &[&str], default: u64| -> Result<u64> {
            match lookup(keys) {
                Some(t) => t.trim().parse().map_err(|_| {
                    Error::configuration(format!("ssh `{}` must be a number, not `{t}`", keys[0]))
                }),
                None => Ok(default),
            }
        };
        let flag = |keys: &[&str], default: bool| -> bool {
            lookup(keys)
                .map(|t| matches!(t.to_ascii_lowercase().as_str(), "true" | "yes" | "1"))
                .unwrap_or(default)
        };
        let key_filename = lookup(&["host_ssh_key_filename", "key_filename"])
            .filter(|k| !k.starts_with('<'))
            .map(|k| match k.strip_prefix("~/") {
                Some(rest) => std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .unwrap_or_default()
                    .join(rest),
                None => PathBuf::from(k),
            });
        let timeout = match lookup(&["host_connection_timeout", "connection_timeout"]) {
            Some(t) => broker_core::time::parse_duration(&t).map_err(|_| {
                Error::configuration(format!(
                    "ssh host_connection_timeout `{t}` is not a duration"
                ))
            })?,
            None => Duration::from_secs(60),
        };
        let port = number(&["host_ssh_port", "port"], 22)?;
        Ok(SshOptions {
            username: lookup(&["host_username", "username"]).unwrap_or_else(|| "root".into()),
            password: lookup(&["host_password", "password"])
                .filter(|p| !p.starts_with('<'))
                .map(SecretString::from),
            port: u16::try_from(port)
                .map_err(|_| Error::configuration(format!("ssh port {port} is out of range")))?,
            key_filename,
            connection_timeout: timeout,
            host_key_policy: HostKeyPolicy::parse(
                &lookup(&["host_key_checking"]).unwrap_or_default(),
            )?,
            known_hosts: match lookup(&["known_hosts"]) {
                Some(p) => PathBuf::from(p),
                None => broker_directory.join("known_hosts"),
            },
            ipv6: flag(&["host_ipv6"], false),
            ipv4_fallback: flag(&["host_ipv4_fallback"], true),
        })
    }
}

/// A session to a host reached over SSH, with the `ssh` settings and the host's own overrides: what
/// providers whose hosts are machines return from `Provider::connect`.
///
/// # Errors
/// As [`connect`], and [`Error::Host`] when the record has no hostname or IP.
pub async fn connect_host(
    host: &HostRecord,
    config: &broker_core::ProviderConfig,
) -> Result<Box<dyn Session>> {
    let address = host.hostname().or_else(|| host.ip()).ok_or_else(|| {
        host_error(
            &host.display_name(),
            "the record has no hostname or ip to reach over SSH",
        )
    })?;
    let options = SshOptions::resolve(config.ssh_settings(), Some(host), config.directory())?;
    Ok(Box::new(connect(address, &options).await?))
}

/// Splits `host:port` (and `[v6]:port`); a bare host keeps `default_port`.
fn split_host(hostname: &str, default_port: u16) -> (String, u16) {
    if let Some(rest) = hostname.strip_prefix('[')
        && let Some((host, tail)) = rest.split_once(']')
    {
        let port = tail
            .strip_prefix(':')
            .and_then(|p| p.parse().ok())
            .unwrap_or(default_port);
        return (host.to_owned(), port);
    }
    match hostname.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => match port.parse() {
            Ok(port) => (host.to_owned(), port),
            Err(_) => (hostname.to_owned(), default_port),
        },
        _ => (hostname.to_owned(), default_port),
    }
}

/// Checks server keys against the policy, remembering why it refused.
struct KeyCheck {
    host: String,
    port: u16,
    policy: HostKeyPolicy,
    known_hosts: PathBuf,
    refusal: Arc<Mutex<Option<String>>>,
}

impl KeyCheck {
    fn refuse(&self, why: String) -> bool {
        *broker_core::sync::lock(&self.refusal) = Some(why);
        false
    }
}

impl client::Handler for KeyCheck {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        offered: &PublicKeyOrCertificate,
    ) -> std::result::Result<bool, Self::Error> {
        if self.policy == HostKeyPolicy::Off {
            return Ok(true);
        }
        let from_certificate;
        let key: &PublicKey = match offered {
            PublicKeyOrCertificate::PublicKey { key, .. } => key,
            PublicKeyOrCertificate::Certificate(cert) => {
                from_certificate = PublicKey::from(cert.public_key().clone());
                &from_certificate
            }
        };
        match russh::keys::check_known_hosts_path(&self.host, self.port, key, &self.known_hosts) {
            Ok(true) => Ok(true),
            Ok(false) if self.policy == HostKeyPolicy::AcceptNew => {
                if let Some(dir) = self.known_hosts.parent() {
                    let _made = std::fs::create_dir_all(dir);
                }
                match russh::keys::known_hosts::learn_known_hosts_path(&self.host, self.port, key, &self.known_hosts) {
                    Ok(()) => Ok(true),
                    Err(e) => Ok(self.refuse(format!(
                        "cannot remember its host key in {}: {e}",
                        self.known_hosts.display()
                    ))),
                }
            }
            Ok(false) => Ok(self.refuse(format!(
                "its host key is not in {} and ssh.host_key_checking is strict",
                self.known_hosts.display()
            ))),
            Err(russh::keys::Error::KeyChanged { line }) => Ok(self.refuse(format!(
                "its host key CHANGED (it differs from line {line} of {}); if the host was rebuilt, \
                 remove that line and try again",
                self.known_hosts.display()
            ))),
            Err(e) => Ok(self.refuse(format!("checking its host key: {e}"))),
        }
    }
}

/// An open SSH connection to one host.
pub struct SshSession {
    name: String,
    access: SshAccess,
    handle: client::Handle<KeyCheck>,
    channels: tokio::sync::Semaphore,
    sftp: tokio::sync::OnceCell<russh_sftp::client::SftpSession>,
}

impl fmt::Debug for SshSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshSession")
            .field("host", &self.name)
            .finish_non_exhaustive()
    }
}

fn host_error(host: &str, message: impl Into<String>) -> Error {
    Error::Host {
        host: host.to_owned(),
        message: message.into(),
        source: None,
    }
}

/// Connects to `hostname` (`host` or `host:port`) and authenticates.
///
/// # Errors
/// [`Error::Host`] when the host cannot be reached within the connection timeout or its key is
/// refused; [`Error::Authentication`] naming each method that failed.
pub async fn connect(hostname: &str, options: &SshOptions) -> Result<SshSession> {
    let (host, port) = split_host(hostname, options.port);
    let config = Arc::new(client::Config {
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        preferred: russh::Preferred {
            kex: Cow::Owned(russh::Preferred::default().kex.to_vec()),
            ..Default::default()
        },
        ..Default::default()
    });
    let mut handle = handshake(hostname, &host, port, config, options).await?;
    authenticate(&mut handle, hostname, options).await?;
    let mut access = SshAccess::new(
        host,
        port,
        options.username.clone(),
        options.known_hosts.clone(),
        options.host_key_policy,
    );
    access.password.clone_from(&options.password);
    access.key_file.clone_from(&options.key_filename);
    Ok(SshSession {
        name: hostname.to_owned(),
        access,
        handle,
        channels: tokio::sync::Semaphore::new(8),
        sftp: tokio::sync::OnceCell::new(),
    })
}

/// Opens the SSH connection to `host`:`port` (named `hostname` in messages) and checks its key,
/// retrying refused and failed connections — a host still booting answers later — until the
/// connection timeout.
async fn handshake(
    hostname: &str,
    host: &str,
    port: u16,
    config: Arc<client::Config>,
    options: &SshOptions,
) -> Result<client::Handle<KeyCheck>> {
    let deadline = Instant::now() + options.connection_timeout;
    let mut pause = Duration::from_millis(100);
    let refusal = Arc::new(Mutex::new(None));
    let mut announced = false;
    loop {
        let check = KeyCheck {
            host: host.to_owned(),
            port,
            policy: options.host_key_policy,
            known_hosts: options.known_hosts.clone(),
            refusal: Arc::clone(&refusal),
        };
        let remaining = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        let attempt = tokio::time::timeout(remaining, async {
            let stream = open_tcp(host, port, options)
                .await
                .map_err(russh::Error::from)?;
            client::connect_stream(Arc::clone(&config), stream, check).await
        })
        .await;
        match attempt {
            Ok(Ok(handle)) => return Ok(handle),
            Ok(Err(russh::Error::UnknownKey)) => {
                let why = broker_core::sync::lock(&refusal)
                    .clone()
                    .unwrap_or_else(|| "its host key was refused".into());
                return Err(host_error(hostname, format!("refusing to connect: {why}")));
            }
            Ok(Err(e)) if Instant::now() < deadline => {
                // A host still booting (or a name not yet in DNS) answers later: say at once what is
                // awaited, then keep quiet while retrying.
                if !announced {
                    announced = true;
                    tracing::warn!(
                        "waiting up to {} for {hostname} to answer SSH on port {port} ({e})",
                        broker_core::time::format_duration(options.connection_timeout)
                    );
                }
                tracing::debug!(
                    host = hostname,
                    "SSH connection failed ({e}); retrying in {}",
                    broker_core::time::format_duration(pause)
                );
                tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now())))
                    .await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Ok(Err(e)) => {
                return Err(host_error(
                    hostname,
                    format!(
                        "cannot connect over SSH to port {port} within {}; check that sshd runs and the port is reachable",
                        broker_core::time::format_duration(options.connection_timeout)
                    ),
                )
                .caused_by(e));
            }
            Err(_) => {
                return Err(host_error(
                    hostname,
                    format!(
                        "no SSH answer on port {port} within {}",
                        broker_core::time::format_duration(options.connection_timeout)
                    ),
                ));
            }
        }
    }
}

/// What a command's channel carried until it closed.
#[derive(Default)]
struct Ended {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    status: Option<u32>,
    signal: Option<String>,
}

/// Reads a command's channel until it closes (the exit status may come before or after EOF), passing
/// output to `sink` as it comes.
async fn read_channel(
    channel: &mut russh::Channel<client::Msg>,
    sink: Option<OutputSink<'_>>,
) -> Ended {
    let mut ended = Ended::default();
    while let Some(msg) = channel.wait().await {
        match msg {
            ChannelMsg::Data { data } => {
                if let Some(sink) = sink {
                    sink(OutputStream::Stdout, &data);
                }
                ended.stdout.extend_from_slice(&data);
            }
            ChannelMsg::ExtendedData { data, ext: 1 } => {
                if let Some(sink) = sink {
                    sink(OutputStream::Stderr, &data);
                }
                ended.stderr.extend_from_slice(&data);
            }
            ChannelMsg::ExitStatus { exit_status } => ended.status = Some(exit_status),
            ChannelMsg::ExitSignal { signal_name, .. } => {
                ended.signal = Some(signal_text(signal_name))
            }
            _ => {}
        }
    }
    ended
}

/// A signal's name as `kill -l` spells it (`TERM`), for messages.
fn signal_text(signal: Sig) -> String {
    match signal {
        Sig::ABRT => "ABRT".into(),
        Sig::ALRM => "ALRM".into(),
        Sig::FPE => "FPE".into(),
        Sig::HUP => "HUP".into(),
        Sig::ILL => "ILL".into(),
        Sig::INT => "INT".into(),
        Sig::KILL => "KILL".into(),
        Sig::PIPE => "PIPE".into(),
        Sig::QUIT => "QUIT".into(),
        Sig::SEGV => "SEGV".into(),
        Sig::TERM => "TERM".into(),
        Sig::USR1 => "USR1".into(),
        Sig::Custom(name) => name,
    }
}

/// A TCP connection to the host, trying its addresses in the preferred order: IPv6 first with
/// `host_ipv6` (and only IPv6 unless `host_ipv4_fallback`), else IPv4 first.
async fn open_tcp(
    host: &str,
    port: u16,
    options: &SshOptions,
) -> std::io::Result<tokio::net::TcpStream> {
    let mut addresses: Vec<std::net::SocketAddr> =
        tokio::net::lookup_host((host, port)).await?.collect();
    addresses.sort_by_key(|a| a.is_ipv6() != options.ipv6);
    if options.ipv6 && !options.ipv4_fallback {
        addresses.retain(std::net::SocketAddr::is_ipv6);
    }
    let mut last = std::io::Error::new(
        std::io::ErrorKind::AddrNotAvailable,
        format!(
            "{host} has no {}address",
            if options.ipv6 && !options.ipv4_fallback {
                "IPv6 "
            } else {
                ""
            }
        ),
    );
    for address in addresses {
        match tokio::net::TcpStream::connect(address).await {
            Ok(stream) => {
                let _nodelay = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Key file, then password, then agent; the error names each method that was tried.
async fn authenticate(
    handle: &mut client::Handle<KeyCheck>,
    hostname: &str,
    options: &SshOptions,
) -> Result<()> {
    let user = options.username.clone();
    let mut tried: Vec<String> = Vec::new();
    // The RSA signature hash the server accepts: asked once, used for the key file and agent keys.
    let hash = handle
        .best_supported_rsa_hash()
        .await
        .ok()
        .flatten()
        .flatten();
    if let Some(path) = &options.key_filename {
        match russh::keys::load_secret_key(path, None) {
            Ok(key) => {
                let key = PrivateKeyWithHashAlg::new(Arc::new(key), hash);
                match handle.authenticate_publickey(user.clone(), key).await {
                    Ok(r) if r.success() => return Ok(()),
                    Ok(_) => tried.push(format!("key {} was not accepted", path.display())),
                    Err(e) => tried.push(format!("key {}: {e}", path.display())),
                }
            }
            Err(e) => tried.push(format!("key {} cannot be read: {e}", path.display())),
        }
    }
    if let Some(password) = &options.password {
        match handle
            .authenticate_password(user.clone(), password.expose_secret())
            .await
        {
            Ok(r) if r.success() => return Ok(()),
            Ok(_) => tried.push("password was not accepted".into()),
            Err(e) => tried.push(format!("password: {e}")),
        }
    }
    match russh::keys::agent::client::AgentClient::connect_env().await {
        Ok(mut agent) => match agent.request_identities().await {
            Ok(identities) if identities.is_empty() => tried.push("agent holds no keys".into()),
            Ok(identities) => {
                let mut accepted = false;
                for identity in identities {
                    if let Ok(r) = handle
                        .authenticate_publickey_with(
                            user.clone(),
                            identity.public_key().into_owned(),
                            hash,
                            &mut agent,
                        )
                        .await
                        && r.success()
                    {
                        accepted = true;
                        break;
                    }
                }
                if accepted {
                    return Ok(());
                }
                tried.push("no agent key was accepted".into());
            }
            Err(e) => tried.push(format!("agent: {e}")),
        },
        Err(_) => tried.push("agent: no SSH_AUTH_SOCK".into()),
    }
    Err(Error::Authentication {
        message: format!(
            "{user}@{hostname}: key-based, password-based and agent authentication all failed ({})",
            tried.join("; ")
        ),
        source: None,
    })
}

impl SshSession {
    async fn run(
        &self,
        command: &str,
        timeout: Option<Duration>,
        sink: Option<OutputSink<'_>>,
    ) -> Result<ExecOutput> {
        let _slot = self
            .channels
            .acquire()
            .await
            .map_err(|_| host_error(&self.name, "the session is closed"))?;
        let mut channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| host_error(&self.name, "opening a channel").caused_by(e))?;
        // With a timeout, the command's shell records its pid and marks its processes so the whole
        // process tree — and what left it (`setsid`) — can be stopped: OpenSSH signals only the
        // session's first process, and closing the channel stops nothing that does not write.
        let marker = timeout.map(|_| crate::shell::pid_marker());
        let wire = match &marker {
            Some(m) => format!(
                "{}echo $$ > {m}; trap 'rm -f {m}' EXIT; {command}",
                crate::shell::marking(m)
            ),
            None => command.to_owned(),
        };
        channel
            .exec(true, wire)
            .await
            .map_err(|e| host_error(&self.name, format!("starting `{command}`")).caused_by(e))?;
        let read = read_channel(&mut channel, sink);
        let ended = match timeout {
            Some(limit) => tokio::time::timeout(limit, read).await.ok(),
            None => Some(read.await),
        };
        let Some(ended) = ended else {
            return Err(self.stop_timed_out(channel, marker, command, timeout).await);
        };
        let status = match (ended.status, ended.signal) {
            (Some(s), _) => s as i32,
            (None, Some(sig)) => {
                return Err(host_error(
                    &self.name,
                    format!("`{command}` was killed by signal {sig}"),
                ));
            }
            (None, None) => {
                return Err(host_error(
                    &self.name,
                    format!(
                        "`{command}` ended without an exit status (the connection may have dropped)"
                    ),
                ));
            }
        };
        Ok(ExecOutput {
            stdout: String::from_utf8_lossy(&ended.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&ended.stderr).into_owned(),
            status,
        })
    }

    /// Stops a command that ran past its timeout — kills the channel's process and, through the pid
    /// its shell recorded in `marker`, the whole process tree — and returns the timeout error.
    async fn stop_timed_out(
        &self,
        channel: russh::Channel<client::Msg>,
        marker: Option<String>,
        command: &str,
        timeout: Option<Duration>,
    ) -> Error {
        let _signalled = channel.signal(Sig::KILL).await;
        let _closed = channel.close().await;
        drop(channel);
        if let Some(marker) = &marker {
            let kill = crate::shell::kill_tree(marker);
            if let Err(e) = Box::pin(self.run(&kill, None, None)).await {
                tracing::warn!(host = %self.name, "stopping a timed-out command: {}", broker_core::error::chain(&e));
            }
        }
        Error::Timeout {
            operation: format!("`{command}` on {}", self.name),
            after: timeout.unwrap_or_default(),
        }
    }

    async fn sftp(&self) -> Result<&russh_sftp::client::SftpSession> {
        self.sftp
            .get_or_try_init(|| async {
                let channel =
                    self.handle.channel_open_session().await.map_err(|e| {
                        host_error(&self.name, "opening an SFTP channel").caused_by(e)
                    })?;
                channel
                    .request_subsystem(true, "sftp")
                    .await
                    .map_err(|e| host_error(&self.name, "starting SFTP").caused_by(e))?;
                russh_sftp::client::SftpSession::new(channel.into_stream())
                    .await
                    .map_err(|e| host_error(&self.name, "starting SFTP").caused_by(e))
            })
            .await
    }

    /// Streams `source` into the remote file `path`, creating its parent directory.
    async fn write_from(
        &self,
        path: &str,
        source: &mut (dyn tokio::io::AsyncRead + Unpin + Send),
    ) -> Result<()> {
        self.ensure_parent(path).await?;
        let mut target = self
            .sftp()
            .await?
            .create(path)
            .await
            .map_err(|e| host_error(&self.name, format!("creating {path}")).caused_by(e))?;
        tokio::io::copy(source, &mut target)
            .await
            .map_err(|e| host_error(&self.name, format!("writing {path}")).caused_by(e))?;
        target
            .shutdown()
            .await
            .map_err(|e| host_error(&self.name, format!("closing {path}")).caused_by(e))
    }

    async fn ensure_parent(&self, path: &str) -> Result<()> {
        let Some((parent, _)) = path.rsplit_once('/') else {
            return Ok(());
        };
        if parent.is_empty() {
            return Ok(());
        }
        let quoted = format!("'{}'", parent.replace('\'', r"'\''"));
        let made = self.run(&format!("mkdir -p {quoted}"), None, None).await?;
        if made.success() {
            Ok(())
        } else {
            Err(host_error(
                &self.name,
                format!("creating {parent}: {}", made.stderr.trim()),
            ))
        }
    }
}

#[async_trait::async_trait]
impl Session for SshSession {
    async fn execute(&self, command: &str, timeout: Option<Duration>) -> Result<ExecOutput> {
        self.run(command, timeout, None).await
    }

    async fn execute_streaming(
        &self,
        command: &str,
        timeout: Option<Duration>,
        sink: OutputSink<'_>,
    ) -> Result<ExecOutput> {
        self.run(command, timeout, Some(sink)).await
    }

    async fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        self.sftp()
            .await?
            .read(path)
            .await
            .map_err(|e| host_error(&self.name, format!("reading {path}")).caused_by(e))
    }

    async fn write_file(&self, path: &str, contents: &[u8]) -> Result<()> {
        self.write_from(path, &mut &contents[..]).await
    }

    async fn upload(&self, local: &Path, remote: &str) -> Result<()> {
        let mut source = tokio::fs::File::open(local)
            .await
            .map_err(|e| Error::io("reading", local, e))?;
        self.write_from(remote, &mut source).await
    }

    async fn download(&self, remote: &str, local: &Path) -> Result<()> {
        if let Some(parent) = local.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| Error::io("creating directory", parent, e))?;
        }
        let mut source = self
            .sftp()
            .await?
            .open(remote)
            .await
            .map_err(|e| host_error(&self.name, format!("opening {remote}")).caused_by(e))?;
        let mut target = tokio::fs::File::create(local)
            .await
            .map_err(|e| Error::io("writing", local, e))?;
        tokio::io::copy(&mut source, &mut target)
            .await
            .map_err(|e| host_error(&self.name, format!("reading {remote}")).caused_by(e))?;
        target
            .flush()
            .await
            .map_err(|e| Error::io("writing", local, e))
    }

    async fn interactive(
        &self,
        mut input: Box<dyn tokio::io::AsyncRead + Unpin + Send>,
        mut output: Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
        (cols, rows): (u32, u32),
    ) -> Result<i32> {
        use tokio::io::AsyncReadExt;
        let mut channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| host_error(&self.name, "opening a channel").caused_by(e))?;
        let term = std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into());
        channel
            .request_pty(true, &term, cols, rows, 0, 0, &[])
            .await
            .map_err(|e| host_error(&self.name, "requesting a terminal").caused_by(e))?;
        channel
            .request_shell(true)
            .await
            .map_err(|e| host_error(&self.name, "starting a shell").caused_by(e))?;
        let mut buffer = vec![0u8; 4096];
        let mut input_open = true;
        let mut status = None;
        loop {
            tokio::select! {
                read = input.read(&mut buffer), if input_open => match read {
                    Ok(0) | Err(_) => {
                        input_open = false;
                        let _eof = channel.eof().await;
                    }
                    Ok(n) => {
                        if channel.data_bytes(buffer[..n].to_vec()).await.is_err() {
                            break;
                        }
                    }
                },
                msg = channel.wait() => match msg {
                    Some(ChannelMsg::Data { data }) | Some(ChannelMsg::ExtendedData { data, .. }) => {
                        let written = output.write_all(&data).await.and(output.flush().await);
                        if written.is_err() {
                            break;
                        }
                    }
                    Some(ChannelMsg::ExitStatus { exit_status }) => status = Some(exit_status as i32),
                    Some(_) => {}
                    None => break,
                },
            }
        }
        status.ok_or_else(|| host_error(&self.name, "the shell ended without an exit status"))
    }

    fn access(&self) -> Option<Access> {
        Some(Access::Ssh(self.access.clone()))
    }

    async fn close(&self) -> Result<()> {
        self.handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await
            .map_err(|e| host_error(&self.name, "closing the connection").caused_by(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing listens: the connection error is kept as the source, the message says what to check.
    #[tokio::test]
    async fn a_refused_connection_keeps_its_cause() {
        let dir = tempfile::tempdir().unwrap();
        let options = SshOptions {
            username: "root".into(),
            password: None,
            port: free_port(),
            key_filename: None,
            connection_timeout: Duration::from_millis(300),
            host_key_policy: HostKeyPolicy::AcceptNew,
            known_hosts: dir.path().join("known_hosts"),
            ipv6: false,
            ipv4_fallback: true,
        };
        let err = connect("127.0.0.1", &options).await.unwrap_err();
        assert!(matches!(err, Error::Host { .. }), "{err:?}");
        let shown = err.to_string();
        assert!(
            shown.starts_with("host 127.0.0.1: cannot connect over SSH to port ")
                && shown.ends_with("; check that sshd runs and the port is reachable"),
            "{shown}"
        );
        let cause = std::error::Error::source(&err).expect("the connection error is the source");
        assert!(
            cause.to_string().contains("refused"),
            "{}",
            broker_core::error::chain(&err)
        );
    }

    #[test]
    fn host_and_port_split() {
        assert_eq!(
            split_host("h.example.com", 22),
            ("h.example.com".into(), 22)
        );
        assert_eq!(split_host("localhost:2222", 22), ("localhost".into(), 2222));
        assert_eq!(split_host("[::1]:2200", 22), ("::1".into(), 2200));
        assert_eq!(split_host("::1", 22), ("::1".into(), 22));
    }

    #[test]
    fn a_password_the_inventory_holds_masked_is_not_used() {
        let ssh: Mapping = serde_yaml::from_str("{host_password: s3cret}").unwrap();
        let host: HostRecord =
            serde_yaml::from_str("{hostname: h, _broker_args: {host_password: '********'}}")
                .unwrap();
        let opts = SshOptions::resolve(&ssh, Some(&host), Path::new("/tmp/b")).unwrap();
        assert_eq!(
            opts.password.as_ref().map(|p| p.expose_secret().to_owned()),
            Some("s3cret".to_owned())
        );
    }

    #[test]
    fn options_layer_host_over_settings_and_hide_the_password() {
        let ssh: Mapping = serde_yaml::from_str(
            "{host_username: admin, host_password: s3cret, host_ssh_port: 2222, host_ssh_key_filename: '</path/to/the/ssh-key>'}",
        )
        .unwrap();
        let host: HostRecord =
            serde_yaml::from_str("{hostname: h, _broker_args: {host_username: tester}}").unwrap();
        let opts = SshOptions::resolve(&ssh, Some(&host), Path::new("/tmp/b")).unwrap();
        assert_eq!(opts.username, "tester");
        assert_eq!(opts.port, 2222);
        assert!(
            opts.key_filename.is_none(),
            "example placeholders are not paths"
        );
        assert_eq!(
            opts.password
                .as_ref()
                .map(|p| p.expose_secret().to_owned())
                .as_deref(),
            Some("s3cret")
        );
        assert!(!format!("{opts:?}").contains("s3cret"));
        assert_eq!(opts.known_hosts, Path::new("/tmp/b/known_hosts"));
        let bad: Mapping = serde_yaml::from_str("{host_key_checking: maybe}").unwrap();
        assert_eq!(
            SshOptions::resolve(&bad, None, Path::new("/"))
                .unwrap_err()
                .exit_code(),
            8
        );
    }

    // ---- against a real OpenSSH server started here (scripts/setup-sshd installs it) ----

    use std::process::{Child, Command, Stdio};

    /// An sshd of our own on 127.0.0.1 with its own host key and authorized key.
    struct Sshd {
        dir: tempfile::TempDir,
        port: u16,
        child: Option<Child>,
    }

    impl Drop for Sshd {
        fn drop(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _killed = child.kill();
                let _reaped = child.wait();
            }
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn keygen(path: &Path) {
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(path)
            .stdout(Stdio::null())
            .status()
            .expect("ssh-keygen");
        assert!(status.success());
    }

    impl Sshd {
        /// Whether sshd is here; a missing sshd fails the test unless `BROKER_ALLOW_SKIP=1` is set.
        fn available() -> bool {
            broker_test_support::sshd()
        }

        /// Prepares keys and configuration; `start` runs it.
        fn prepare() -> Sshd {
            let dir = tempfile::tempdir().unwrap();
            keygen(&dir.path().join("host_key"));
            keygen(&dir.path().join("id_ed25519"));
            std::fs::copy(
                dir.path().join("id_ed25519.pub"),
                dir.path().join("authorized_keys"),
            )
            .unwrap();
            Sshd {
                dir,
                port: free_port(),
                child: None,
            }
        }

        /// Starts sshd, on another free port if this one was taken meanwhile (a port found free
        /// can be taken by someone else before sshd binds it).
        fn start(&mut self) {
            for _ in 0..5 {
                if self.try_start() {
                    return;
                }
                self.port = free_port();
            }
            panic!("sshd could not bind any of 5 free ports");
        }

        /// Starts sshd on its port; `false` when it exits at once (the port is taken).
        fn try_start(&mut self) -> bool {
            let _made = std::fs::create_dir_all("/run/sshd");
            let d = self.dir.path().display();
            let config = format!(
                "Port {}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile {d}/authorized_keys\nPasswordAuthentication yes\n\
                 KbdInteractiveAuthentication no\nPermitRootLogin yes\nStrictModes no\nUsePAM no\n\
                 MaxSessions 100\nMaxStartups 100:30:200\nSubsystem sftp internal-sftp\nLogLevel ERROR\n",
                self.port
            );
            std::fs::write(self.dir.path().join("sshd_config"), config).unwrap();
            let pid_file = self.dir.path().join("sshd.pid");
            let _stale = std::fs::remove_file(&pid_file);
            let child = Command::new("/usr/sbin/sshd")
                .args(["-D", "-e", "-f"])
                .arg(self.dir.path().join("sshd_config"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start sshd");
            self.child = Some(child);
            // sshd writes its pid file once it listens, and exits when it cannot bind.
            let mut exited = false;
            let up = broker_test_support::wait_for(Duration::from_secs(60), || {
                exited = self
                    .child
                    .as_mut()
                    .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
                exited || pid_file.exists()
            });
            assert!(up, "sshd neither listened nor exited within 60 s");
            if exited {
                self.child = None;
                return false;
            }
            true
        }

        fn stop(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _killed = child.kill();
                let _reaped = child.wait();
            }
        }

        fn running() -> Option<Sshd> {
            if !Self::available() {
                return None;
            }
            let mut sshd = Self::prepare();
            sshd.start();
            Some(sshd)
        }

        fn address(&self) -> String {
            format!("127.0.0.1:{}", self.port)
        }

        fn key_options(&self) -> SshOptions {
            SshOptions {
                username: "root".into(),
                password: None,
                port: self.port,
                key_filename: Some(self.dir.path().join("id_ed25519")),
                // A ceiling (connecting retries until then), generous for a loaded machine.
                connection_timeout: Duration::from_secs(60),
                host_key_policy: HostKeyPolicy::AcceptNew,
                known_hosts: self.dir.path().join("known_hosts"),
                ipv6: false,
                ipv4_fallback: true,
            }
        }

        fn password_options(&self, password: &str) -> SshOptions {
            SshOptions {
                username: "brokertest".into(),
                password: Some(SecretString::from(password.to_owned())),
                key_filename: None,
                ..self.key_options()
            }
        }
    }

    #[tokio::test]
    async fn key_and_password_auth_run_commands() {
        let Some(sshd) = Sshd::running() else { return };
        let session = connect(&sshd.address(), &sshd.key_options()).await.unwrap();
        let out = session
            .execute("echo out; echo err >&2; exit 7", None)
            .await
            .unwrap();
        assert_eq!(
            (out.stdout.as_str(), out.stderr.as_str(), out.status),
            ("out\n", "err\n", 7)
        );
        assert_eq!(
            session.execute("id -un", None).await.unwrap().stdout,
            "root\n"
        );
        let session = connect(
            &sshd.address(),
            &sshd.password_options("broker-test-password"),
        )
        .await
        .unwrap();
        assert_eq!(
            session.execute("id -un", None).await.unwrap().stdout,
            "brokertest\n"
        );
        session.close().await.unwrap();
    }

    #[tokio::test]
    async fn wrong_credentials_are_authentication_errors() {
        let Some(sshd) = Sshd::running() else { return };
        let err = connect(&sshd.address(), &sshd.password_options("nope"))
            .await
            .unwrap_err();
        assert_eq!(err.exit_code(), 5, "{err}");
        assert!(
            err.to_string().contains("password was not accepted"),
            "{err}"
        );
        let other = tempfile::tempdir().unwrap();
        keygen(&other.path().join("id"));
        let mut opts = sshd.key_options();
        opts.key_filename = Some(other.path().join("id"));
        let err = connect(&sshd.address(), &opts).await.unwrap_err();
        assert_eq!(err.exit_code(), 5, "{err}");
        assert!(err.to_string().contains("was not accepted"), "{err}");
        assert!(!err.to_string().contains("broker-test-password"));
    }

    #[tokio::test]
    async fn a_command_that_outlives_its_timeout_is_stopped() {
        let Some(sshd) = Sshd::running() else { return };
        let session = connect(&sshd.address(), &sshd.key_options()).await.unwrap();
        let marker = format!("sleep 4{}", std::process::id() % 1000);
        let err = session
            .execute(
                &format!("{marker}; echo never"),
                Some(Duration::from_millis(500)),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
        // The session still works afterwards.
        assert!(session.execute("true", None).await.unwrap().success());
        let running = || {
            let left = Command::new("pgrep")
                .args(["-f", &marker])
                .output()
                .unwrap();
            String::from_utf8_lossy(&left.stdout).into_owned()
        };
        assert!(
            broker_test_support::wait_for(Duration::from_secs(30), || running().is_empty()),
            "the command was not stopped: {}",
            running()
        );
    }

    #[tokio::test]
    async fn what_a_timed_out_command_started_with_setsid_is_stopped_too() {
        let Some(sshd) = Sshd::running() else { return };
        let session = connect(&sshd.address(), &sshd.key_options()).await.unwrap();
        let escaped = format!("sleep 5{}", std::process::id() % 1000);
        let started = sshd.dir.path().join("setsid-started");
        let err = session
            .execute(
                &format!(
                    "(setsid sh -c 'touch {}; exec {escaped}' &); sleep 300",
                    started.display()
                ),
                Some(Duration::from_secs(3)),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
        assert!(started.exists(), "setsid never ran");
        let running = || {
            let left = Command::new("pgrep")
                .args(["-fx", &escaped])
                .output()
                .unwrap();
            String::from_utf8_lossy(&left.stdout).into_owned()
        };
        assert!(
            broker_test_support::wait_for(Duration::from_secs(30), || running().is_empty()),
            "what the command started with setsid was not stopped: {}",
            running()
        );
    }

    #[tokio::test]
    async fn twenty_megabytes_round_trip_streamed() {
        let Some(sshd) = Sshd::running() else { return };
        let session = connect(&sshd.address(), &sshd.key_options()).await.unwrap();
        let local = tempfile::tempdir().unwrap();
        let source = local.path().join("blob");
        let payload: Vec<u8> = (0..20 * 1024 * 1024u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(&source, &payload).unwrap();
        let remote = format!("{}/remote/deep/blob", sshd.dir.path().display());
        session.upload(&source, &remote).await.unwrap();
        let back = local.path().join("back/blob");
        session.download(&remote, &back).await.unwrap();
        assert!(std::fs::read(&back).unwrap() == payload, "checksums differ");
        let sum = session
            .execute(&format!("sha256sum {remote}"), None)
            .await
            .unwrap();
        let local_sum = Command::new("sha256sum").arg(&source).output().unwrap();
        assert_eq!(
            sum.stdout.split_whitespace().next(),
            String::from_utf8_lossy(&local_sum.stdout)
                .split_whitespace()
                .next()
        );
        session
            .write_file(&format!("{remote}.small"), b"small")
            .await
            .unwrap();
        assert_eq!(
            session.read_file(&format!("{remote}.small")).await.unwrap(),
            b"small"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fifty_commands_on_one_host_and_ten_hosts_in_parallel() {
        let Some(sshd) = Sshd::running() else { return };
        let session = Arc::new(connect(&sshd.address(), &sshd.key_options()).await.unwrap());
        let runs = (0..50).map(|i| {
            let session = Arc::clone(&session);
            async move { session.execute(&format!("echo {i}"), None).await }
        });
        let outs = futures_util::future::join_all(runs).await;
        for (i, out) in outs.into_iter().enumerate() {
            assert_eq!(out.unwrap().stdout, format!("{i}\n"));
        }
        let mut hosts: Vec<Sshd> = (0..10).map(|_| Sshd::prepare()).collect();
        for h in &mut hosts {
            h.start();
        }
        let checks = hosts.iter().map(|h| async move {
            let s = connect(&h.address(), &h.key_options()).await?;
            s.execute("hostname", None).await
        });
        for out in futures_util::future::join_all(checks).await {
            assert!(out.unwrap().success());
        }
    }

    #[tokio::test]
    async fn ipv6_only_refuses_an_ipv4_only_host() {
        let Some(sshd) = Sshd::running() else { return };
        let mut options = sshd.key_options();
        options.ipv6 = true;
        options.ipv4_fallback = false;
        options.connection_timeout = Duration::from_millis(300);
        assert!(connect(&sshd.address(), &options).await.is_err());
        options.ipv4_fallback = true;
        options.connection_timeout = Duration::from_secs(60);
        assert!(connect(&sshd.address(), &options).await.is_ok());
    }

    /// A port found free but taken before sshd binds it (by another test, another process): sshd
    /// starts on another one instead of the test failing.
    #[tokio::test]
    async fn an_sshd_whose_port_was_taken_starts_on_another() {
        if !Sshd::available() {
            return;
        }
        let mut sshd = Sshd::prepare();
        let taken = std::net::TcpListener::bind(("127.0.0.1", sshd.port)).unwrap();
        sshd.start();
        assert_ne!(sshd.port, taken.local_addr().unwrap().port());
        let session = connect(&sshd.address(), &sshd.key_options()).await.unwrap();
        assert!(session.execute("true", None).await.unwrap().success());
    }

    #[tokio::test]
    async fn connecting_retries_until_sshd_is_up() {
        if !Sshd::available() {
            return;
        }
        // The port is fixed before sshd starts: should someone take it meanwhile, start over.
        for _ in 0..5 {
            let mut sshd = Sshd::prepare();
            let address = sshd.address();
            let options = sshd.key_options();
            let attempt = tokio::spawn(async move { connect(&address, &options).await });
            // Nothing listens for a while: the attempt meets refusals (however long it takes to
            // run), and keeps trying.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            assert!(!attempt.is_finished(), "{:?}", attempt.await);
            if !sshd.try_start() {
                attempt.abort();
                continue;
            }
            let session = attempt.await.unwrap().unwrap();
            assert!(session.execute("true", None).await.unwrap().success());
            return;
        }
        panic!("sshd could not bind any of 5 free ports");
    }

    #[tokio::test]
    async fn a_changed_host_key_is_refused_under_accept_new() {
        let Some(mut sshd) = Sshd::running() else {
            return;
        };
        let options = sshd.key_options();
        connect(&sshd.address(), &options).await.unwrap();
        assert!(
            options.known_hosts.exists(),
            "the new host key was remembered"
        );
        sshd.stop();
        std::fs::remove_file(sshd.dir.path().join("host_key")).unwrap();
        std::fs::remove_file(sshd.dir.path().join("host_key.pub")).unwrap();
        keygen(&sshd.dir.path().join("host_key"));
        // The same port (the known host is address and port): taken meanwhile, the test cannot go on.
        assert!(sshd.try_start(), "port {} was taken meanwhile", sshd.port);
        let err = connect(&sshd.address(), &options).await.unwrap_err();
        assert!(err.to_string().contains("CHANGED"), "{err}");
        let mut strict = options.clone();
        strict.host_key_policy = HostKeyPolicy::Strict;
        strict.known_hosts = sshd.dir.path().join("empty_known_hosts");
        assert!(
            connect(&sshd.address(), &strict)
                .await
                .unwrap_err()
                .to_string()
                .contains("strict")
        );
        let mut off = options.clone();
        off.host_key_policy = HostKeyPolicy::Off;
        assert!(connect(&sshd.address(), &off).await.is_ok());
    }
}
