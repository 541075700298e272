//! What broker's tests share (not shipped).
//!
//! - [`Component`]: a real component a test needs (Podman, OpenSSH's server, awxkit…). When it is
//!   missing the test **fails**, naming the component and the script that installs it, unless
//!   `BROKER_ALLOW_SKIP=1` is set: then it prints a `SKIPPED:` line on stderr and returns early. A
//!   plain `cargo test` on a machine without the components therefore fails loudly instead of
//!   reporting tests that did nothing as passed.
//! - [`ChildGuard`]: a child process killed, with every process it started, when dropped, and waited
//!   for with a deadline — a failing or stuck test leaves nothing running.
//! - [`Containers`]: the containers a test names with its prefix, removed when dropped.
//! - [`wait_for`]: polls a condition up to a generous deadline instead of sleeping a fixed time.

use std::fmt;
use std::io::{Read, Write};
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The variable that lets tests skip when a real component they need is missing: `1` allows it.
pub const ALLOW_SKIP: &str = "BROKER_ALLOW_SKIP";

/// The Podman API that `scripts/setup-podman` starts.
pub const PODMAN_SOCKET: &str = "unix:///run/podman/podman.sock";

/// A real component some tests need, and how to install it.
#[derive(Debug, Clone, Copy)]
pub struct Component {
    /// What it is, as a failure names it.
    pub name: &'static str,
    /// The command that installs it.
    pub install: &'static str,
}

/// Podman, its API on [`PODMAN_SOCKET`] and the test image `localhost/broker-busybox`.
pub const PODMAN: Component = Component {
    name: "Podman (its API on unix:///run/podman/podman.sock and the image localhost/broker-busybox)",
    install: "bash scripts/setup-podman",
};

/// OpenSSH's server and client tools, and the password-auth test user `brokertest`.
pub const SSHD: Component = Component {
    name: "OpenSSH's server (/usr/sbin/sshd, ssh-keygen) and the test user brokertest",
    install: "bash scripts/setup-sshd",
};

/// The container image with sshd that container hosts are reached through over SSH.
pub const SSHD_IMAGE: Component = Component {
    name: "the image localhost/broker-sshd (a container with sshd)",
    install: "bash scripts/setup-sshd-image",
};

/// `ansible-playbook` with Podman's connection plugin, sshpass, and the sshd image with Python.
pub const ANSIBLE: Component = Component {
    name: "Ansible (ansible-playbook, the containers.podman collection, sshpass) and the image localhost/broker-sshd-python",
    install: "bash scripts/setup-ansible",
};

/// The official AWX client, in the Python that `BROKER_AWXKIT_PYTHON` names.
pub const AWXKIT: Component = Component {
    name: "awxkit (in the Python that BROKER_AWXKIT_PYTHON names)",
    install: "export BROKER_AWXKIT_PYTHON=\"$(bash scripts/setup-awxkit)\"",
};

/// The official OpenStack client library, in the Python that `BROKER_OPENSTACKSDK_PYTHON` names.
pub const OPENSTACKSDK: Component = Component {
    name: "openstacksdk (in the Python that BROKER_OPENSTACKSDK_PYTHON names)",
    install: "export BROKER_OPENSTACKSDK_PYTHON=\"$(bash scripts/setup-openstacksdk)\"",
};

/// The Python broker (PyPI `broker`, a test oracle), in the Python that `BROKER_PYBROKER_PYTHON`
/// names.
pub const PYBROKER: Component = Component {
    name: "the Python broker (in the Python that BROKER_PYBROKER_PYTHON names)",
    install: "export BROKER_PYBROKER_PYTHON=\"$(bash scripts/setup-pybroker)\"",
};

/// The official Beaker client, as the `bkr` command that `BROKER_BKR` names.
pub const BKR: Component = Component {
    name: "the Beaker client bkr (the command that BROKER_BKR names)",
    install: "export BROKER_BKR=\"$(bash scripts/setup-beaker-client)\"",
};

/// Schemathesis, the OpenAPI fuzzer, as the `schemathesis` command that `BROKER_SCHEMATHESIS`
/// names.
pub const SCHEMATHESIS: Component = Component {
    name: "schemathesis (the command that BROKER_SCHEMATHESIS names)",
    install: "export BROKER_SCHEMATHESIS=\"$(bash scripts/setup-schemathesis)\"",
};

/// A Puppet Server of the tests' own, as `scripts/puppetserver start` runs it, in the directory
/// that `BROKER_PUPPET_SERVER` names.
pub const PUPPET_SERVER: Component = Component {
    name: "a Puppet Server (the directory of `scripts/puppetserver start` in BROKER_PUPPET_SERVER) \
           and the image localhost/broker-puppet-agent",
    install: "bash scripts/setup-puppet && export BROKER_PUPPET_SERVER=\"$(bash scripts/puppetserver start)\"",
};

/// A PostgreSQL server of the tests' own, as `scripts/postgres start` runs it, in the directory that
/// `BROKER_POSTGRES` names.
pub const POSTGRES: Component = Component {
    name: "a PostgreSQL server (the directory of `scripts/postgres start` in BROKER_POSTGRES)",
    install: "export BROKER_POSTGRES=\"$(bash scripts/postgres start)\"",
};

/// Whether `BROKER_ALLOW_SKIP=1` is set.
pub fn skip_allowed() -> bool {
    std::env::var_os(ALLOW_SKIP).is_some_and(|v| v == "1")
}

impl Component {
    /// Whether a test that needs this component goes on, given what looking for it `found` (an
    /// error says why it is missing). With `BROKER_ALLOW_SKIP=1` a missing component prints a
    /// `SKIPPED:` line on stderr and returns `false`: the test returns without running.
    ///
    /// # Panics
    ///
    /// When the component is missing and skipping was not asked for: the test fails, naming the
    /// component, why it is missing and the command that installs it.
    pub fn check(&self, found: Result<(), String>) -> bool {
        let Err(why) = found else {
            return true;
        };
        let test = std::thread::current()
            .name()
            .filter(|n| *n != "main")
            .unwrap_or("a test")
            .to_owned();
        if skip_allowed() {
            // Straight to the process's stderr, not through `eprintln!`, which `cargo test`
            // captures (and hides) for tests that pass.
            let _shown = writeln!(
                std::io::stderr(),
                "SKIPPED: {test} did not run: it needs {}, which is missing ({why}); \
                 install it with `{}`",
                self.name,
                self.install
            );
            return false;
        }
        panic!(
            "{test} needs {}, which is missing: {why}\ninstall it with `{}` (`bash scripts/test` \
             installs every component), or set {ALLOW_SKIP}=1 to skip the tests that need it",
            self.name, self.install
        );
    }
}

/// Runs a probe command, `Ok` when it succeeds, else what went wrong.
fn probe(command: &mut Command) -> Result<(), String> {
    let shown = format!("{command:?}");
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether Podman answers on [`PODMAN_SOCKET`] with the test image (see [`Component::check`]:
/// a missing engine fails the test unless skipping is allowed).
pub fn podman() -> bool {
    PODMAN.check(
        probe(Command::new("podman").args(["--url", PODMAN_SOCKET, "version"])).and_then(|()| {
            probe(Command::new("podman").args([
                "image",
                "exists",
                "localhost/broker-busybox:latest",
            ]))
        }),
    )
}

/// Whether OpenSSH's server, ssh-keygen and the test user are there (see [`Component::check`]).
pub fn sshd() -> bool {
    let found = if Path::new("/usr/sbin/sshd").exists() {
        probe(Command::new("ssh-keygen").args(["-l", "-f", "/dev/null"]))
            .or_else(|e| {
                // `ssh-keygen -l` of an empty file fails but runs: only a missing binary matters.
                if e.starts_with("cannot run") {
                    Err(e)
                } else {
                    Ok(())
                }
            })
            .and_then(|()| probe(Command::new("id").arg("brokertest")))
    } else {
        Err("no /usr/sbin/sshd".to_owned())
    };
    SSHD.check(found)
}

/// Whether the image `localhost/broker-sshd` is there (see [`Component::check`]).
pub fn sshd_image() -> bool {
    SSHD_IMAGE.check(probe(Command::new("podman").args([
        "image",
        "exists",
        "localhost/broker-sshd:latest",
    ])))
}

/// Whether `ansible-playbook` (with Podman's connection plugin) and sshpass are installed and the
/// image `localhost/broker-sshd-python` is there (see [`Component::check`]).
pub fn ansible() -> bool {
    let plugin = "/usr/lib/python3/dist-packages/ansible_collections/containers/podman/plugins/connection/podman.py";
    ANSIBLE.check(
        probe(Command::new("ansible-playbook").arg("--version"))
            .and_then(|()| probe(Command::new("sshpass").arg("-V")))
            .and_then(|()| {
                Path::new(plugin)
                    .exists()
                    .then_some(())
                    .ok_or_else(|| format!("no {plugin}"))
            })
            .and_then(|()| {
                probe(Command::new("podman").args([
                    "image",
                    "exists",
                    "localhost/broker-sshd-python:latest",
                ]))
            }),
    )
}

/// The Python that the environment variable `var` names, when it can import `module`; `None` when
/// skipping is allowed and it cannot (see [`Component::check`]).
fn python_with(var: &str, module: &str, component: &Component) -> Option<String> {
    let python = std::env::var(var).unwrap_or_default();
    let found = if python.is_empty() {
        Err(format!("{var} is not set"))
    } else {
        probe(Command::new(&python).args(["-c", &format!("import {module}")]))
    };
    component.check(found).then_some(python)
}

/// The Python with awxkit that `BROKER_AWXKIT_PYTHON` names, `None` when skipping is allowed and it
/// is missing (see [`Component::check`]).
pub fn awxkit_python() -> Option<String> {
    python_with("BROKER_AWXKIT_PYTHON", "awxkit", &AWXKIT)
}

/// The Python with openstacksdk that `BROKER_OPENSTACKSDK_PYTHON` names, `None` when skipping is
/// allowed and it is missing (see [`Component::check`]).
pub fn openstacksdk_python() -> Option<String> {
    python_with("BROKER_OPENSTACKSDK_PYTHON", "openstack", &OPENSTACKSDK)
}

/// The Python with the Python broker that `BROKER_PYBROKER_PYTHON` names, `None` when skipping is
/// allowed and it is missing (see [`Component::check`]).
pub fn pybroker_python() -> Option<String> {
    python_with(
        "BROKER_PYBROKER_PYTHON",
        "broker.providers.foreman",
        &PYBROKER,
    )
}

/// The `bkr` command that `BROKER_BKR` names, `None` when skipping is allowed and it is missing
/// (see [`Component::check`]).
pub fn bkr() -> Option<String> {
    let command = std::env::var("BROKER_BKR").unwrap_or_default();
    let found = if command.is_empty() {
        Err("BROKER_BKR is not set".to_owned())
    } else {
        probe(Command::new(&command).arg("--version"))
    };
    BKR.check(found).then_some(command)
}

/// The `schemathesis` command that `BROKER_SCHEMATHESIS` names, `None` when skipping is allowed and
/// it is missing (see [`Component::check`]).
pub fn schemathesis() -> Option<String> {
    let command = std::env::var("BROKER_SCHEMATHESIS").unwrap_or_default();
    let found = if command.is_empty() {
        Err("BROKER_SCHEMATHESIS is not set".to_owned())
    } else {
        probe(Command::new(&command).arg("--version"))
    };
    SCHEMATHESIS.check(found).then_some(command)
}

/// The directory of the running Puppet Server that `BROKER_PUPPET_SERVER` names (its `port`,
/// `puppet/puppet.conf`), once it answers — waiting up to five minutes for one still starting —
/// with the image `localhost/broker-puppet-agent` there; `None` when skipping is allowed and either
/// is missing (see [`Component::check`]).
pub fn puppet_server() -> Option<std::path::PathBuf> {
    let dir =
        std::path::PathBuf::from(std::env::var_os("BROKER_PUPPET_SERVER").unwrap_or_default());
    let found = if dir.as_os_str().is_empty() {
        Err("BROKER_PUPPET_SERVER is not set".to_owned())
    } else {
        puppet_server_answers(&dir).and_then(|()| {
            probe(Command::new("podman").args([
                "image",
                "exists",
                "localhost/broker-puppet-agent:latest",
            ]))
        })
    };
    PUPPET_SERVER.check(found).then_some(dir)
}

/// Whether the server in `dir` answers its status request, waiting while its process runs.
fn puppet_server_answers(dir: &Path) -> Result<(), String> {
    let port = std::fs::read_to_string(dir.join("port"))
        .map_err(|e| format!("no server in {}: {e}", dir.display()))?;
    let pid = std::fs::read_to_string(dir.join("pid")).unwrap_or_default();
    let url = format!("https://127.0.0.1:{}/status/v1/simple", port.trim());
    let answers = || {
        Command::new("curl")
            .args(["-sk", "--max-time", "5", &url])
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|out| out.stdout == b"running")
    };
    let runs = || Path::new(&format!("/proc/{}", pid.trim())).exists() && !pid.trim().is_empty();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(300) {
        if answers() {
            return Ok(());
        }
        if !runs() {
            return Err(format!("the server in {} is not running", dir.display()));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    Err(format!(
        "the server in {} did not answer {url} within 300 s",
        dir.display()
    ))
}

/// Polls `check` every 20 ms until it holds or `limit` passes; whether it held. Give a generous
/// limit: it only matters when the condition never comes.
pub fn wait_for(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}

/// A child process that is killed — with every process it started — when dropped, so that a test
/// that fails or gets stuck leaves nothing running. It dereferences to the [`std::process::Child`].
pub struct ChildGuard {
    child: Option<std::process::Child>,
    what: String,
}

impl ChildGuard {
    /// Starts `command`. Give it a stdin of its own (`Stdio::null()` or a pipe): a child that reads
    /// the test runner's terminal can block forever.
    ///
    /// # Panics
    ///
    /// When the command cannot start.
    pub fn spawn(command: &mut Command) -> ChildGuard {
        let what = format!("{command:?}");
        match command.spawn() {
            Ok(child) => ChildGuard {
                child: Some(child),
                what,
            },
            Err(e) => panic!("cannot start {what}: {e}"),
        }
    }

    fn inner(&mut self) -> &mut std::process::Child {
        match self.child.as_mut() {
            Some(child) => child,
            None => unreachable!("a ChildGuard holds its child until dropped"),
        }
    }

    /// Waits up to `limit` for the child to exit (its piped output, if any, is left to the caller).
    ///
    /// # Panics
    ///
    /// When it has not exited by then: it is killed, with what it started.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            match self.inner().try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(None) | Err(_) => {
                    self.kill_tree();
                    panic!("{} did not exit within {limit:?}; killed it", self.what);
                }
            }
        }
    }

    /// Waits up to `limit` for the child to exit, collecting its piped stdout and stderr.
    ///
    /// # Panics
    ///
    /// When it has not exited by then (it is killed, with what it started, and what it printed is
    /// shown), or when something it left running still holds its output open after it exited.
    pub fn wait_output(mut self, limit: Duration) -> Output {
        let deadline = Instant::now() + limit;
        let pid = self.inner().id();
        let stdout = read_in_background(self.inner().stdout.take());
        let stderr = read_in_background(self.inner().stderr.take());
        let mut tree = Vec::new();
        let mut polls = 0u32;
        let status = loop {
            // Who it started, now and then: they may hold its output open after it exits.
            if polls.is_multiple_of(10) {
                for p in descendants(pid) {
                    if !tree.contains(&p) {
                        tree.push(p);
                    }
                }
            }
            polls += 1;
            match self.inner().try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(None) | Err(_) => {
                    self.kill_tree();
                    let out = stdout.recv_timeout(Duration::from_secs(5));
                    let err = stderr.recv_timeout(Duration::from_secs(5));
                    panic!(
                        "{} did not exit within {limit:?}; killed it\nstdout:\n{}\nstderr:\n{}",
                        self.what,
                        String::from_utf8_lossy(&out.unwrap_or_default()),
                        String::from_utf8_lossy(&err.unwrap_or_default())
                    );
                }
            }
        };
        let collect = |pipe: &mpsc::Receiver<Vec<u8>>| {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_secs(5));
            pipe.recv_timeout(left).unwrap_or_else(|_| {
                kill(&tree);
                panic!(
                    "{} exited ({status}) but processes it started still hold its output: \
                     {tree:?}; killed them",
                    self.what
                )
            })
        };
        let stdout = collect(&stdout);
        let stderr = collect(&stderr);
        Output {
            status,
            stdout,
            stderr,
        }
    }

    /// Kills the child and every process it started, and reaps it.
    fn kill_tree(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let mut tree = descendants(child.id());
            tree.push(child.id());
            kill(&tree);
            let _reaped = child.wait();
        }
    }
}

impl Deref for ChildGuard {
    type Target = std::process::Child;

    fn deref(&self) -> &std::process::Child {
        match self.child.as_ref() {
            Some(child) => child,
            None => unreachable!("a ChildGuard holds its child until dropped"),
        }
    }
}

impl DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        self.inner()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut()
            && matches!(child.try_wait(), Ok(None))
        {
            self.kill_tree();
        }
    }
}

fn read_in_background<R: Read + Send + 'static>(pipe: Option<R>) -> mpsc::Receiver<Vec<u8>> {
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _read = pipe.read_to_end(&mut bytes);
        }
        let _sent = send.send(bytes);
    });
    receive
}

/// SIGKILL to these processes (errors ignored: some may be gone already).
fn kill(pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _killed = Command::new("kill")
        .arg("-KILL")
        .args(pids.iter().map(u32::to_string))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The processes descended from `pid` (children, their children…), from `/proc`.
pub fn descendants(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut parents = Vec::new();
    for entry in entries.flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid …", where comm may hold spaces and parentheses.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parents.push((p, ppid));
        }
    }
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        for &(p, ppid) in &parents {
            if ppid == parent && !found.contains(&p) {
                found.push(p);
            }
        }
        i += 1;
    }
    found.remove(0);
    found
}

/// The containers of one test, named `<prefix>_…`: removed, whatever their state, when dropped, so
/// that a failing test leaves none behind. It dereferences to (and prints as) the prefix.
pub struct Containers {
    prefix: String,
}

impl Containers {
    /// The containers named `<prefix>_…` (on the local Podman, through the `podman` command).
    pub fn new(prefix: impl Into<String>) -> Containers {
        Containers {
            prefix: prefix.into(),
        }
    }

    /// The names of those that exist now (running or not), sorted.
    ///
    /// # Panics
    ///
    /// When `podman ps` cannot run.
    pub fn names(&self) -> Vec<String> {
        match self.list() {
            Ok(names) => names,
            Err(e) => panic!("{e}"),
        }
    }

    fn list(&self) -> Result<Vec<String>, String> {
        let out = Command::new("podman")
            .args([
                "ps",
                "-a",
                "--filter",
                &format!("name=^{}_", self.prefix),
                "--format",
                "{{.Names}}",
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run podman ps: {e}"))?;
        let mine = format!("{}_", self.prefix);
        let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|n| n.starts_with(&mine))
            .map(str::to_owned)
            .collect();
        names.sort();
        Ok(names)
    }
}

impl Deref for Containers {
    type Target = str;

    fn deref(&self) -> &str {
        &self.prefix
    }
}

impl fmt::Display for Containers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.prefix)
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        let Ok(names) = self.list() else {
            return;
        };
        if !names.is_empty() {
            let _removed = Command::new("podman")
                .args(["rm", "-f", "-t", "0"])
                .args(&names)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The root password of the image `localhost/broker-sshd` (test-only credentials; the image is
/// local).
pub const SSHD_IMAGE_PASSWORD: &str = "broker-test-password";

/// A container of the image `localhost/broker-sshd` (see [`sshd_image`]), its port 22 published on
/// every address of this machine: a machine to reach over SSH as `root` with
/// [`SSHD_IMAGE_PASSWORD`] — on `127.0.0.1`, `127.0.0.2`…, as if each were a host of its own.
/// Removed when dropped.
pub struct SshdContainer {
    name: String,
    port: u16,
}

impl SshdContainer {
    /// Starts one named `<prefix>_sshd`.
    ///
    /// # Panics
    ///
    /// When Podman cannot start it or does not say which port it published.
    pub fn start(prefix: &str) -> SshdContainer {
        let name = format!("{prefix}_sshd");
        let run = Command::new("podman")
            .args([
                "run",
                "-d",
                "--rm",
                "--name",
                &name,
                "-p",
                "22",
                "localhost/broker-sshd",
            ])
            .stdin(Stdio::null())
            .output()
            .expect("run podman");
        assert!(
            run.status.success(),
            "podman run {name}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        let mut container = SshdContainer { name, port: 0 };
        let port = Command::new("podman")
            .args(["port", &container.name, "22"])
            .output()
            .expect("run podman port");
        let published = String::from_utf8_lossy(&port.stdout);
        let port = published
            .lines()
            .find_map(|l| l.rsplit(':').next()?.trim().parse().ok())
            .unwrap_or_else(|| panic!("podman port {}: {published:?}", container.name));
        container.port = port;
        container
    }

    /// The port 22 is published on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Puts the script a Beaker harness gives its systems, `/usr/bin/extendtesttime.sh HOURS`, in the
    /// container: it appends the hours to `/var/tmp/extended`, which [`SshdContainer::extended`]
    /// reads.
    ///
    /// # Panics
    ///
    /// When it cannot be written.
    pub fn with_extendtesttime(self) -> SshdContainer {
        let made = self.exec(
            "printf '#!/bin/sh\\necho \"$1\" >> /var/tmp/extended\\n' > /usr/bin/extendtesttime.sh \
             && chmod +x /usr/bin/extendtesttime.sh",
        );
        assert!(made.status.success(), "writing extendtesttime.sh: {made:?}");
        self
    }

    /// The hours `extendtesttime.sh` was run with, one a line.
    pub fn extended(&self) -> String {
        String::from_utf8_lossy(&self.exec("cat /var/tmp/extended").stdout).into_owned()
    }

    /// Runs a shell script in the container as root; its output.
    pub fn exec(&self, script: &str) -> Output {
        Command::new("podman")
            .args(["exec", &self.name, "sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .expect("run podman exec")
    }
}

impl Drop for SshdContainer {
    fn drop(&mut self) {
        let _removed = Command::new("podman")
            .args(["rm", "-f", "-t", "0", &self.name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A new, empty database of its own on the PostgreSQL server of `BROKER_POSTGRES` (see
/// [`POSTGRES`]), for one test: its URL (with password) and the server's directory (`ca.pem`, and
/// what `scripts/postgres restart` takes); `None` when skipping is allowed and the server is missing
/// (see [`Component::check`]).
pub fn postgres_database() -> Option<(String, std::path::PathBuf)> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static MADE: AtomicUsize = AtomicUsize::new(0);
    let dir = std::path::PathBuf::from(std::env::var_os("BROKER_POSTGRES").unwrap_or_default());
    let url = if dir.as_os_str().is_empty() {
        Err("BROKER_POSTGRES is not set".to_owned())
    } else {
        std::fs::read_to_string(dir.join("url"))
            .map(|u| u.trim().to_owned())
            .map_err(|e| format!("no server in {}: {e}", dir.display()))
    };
    let name = format!(
        "t_{}_{}_{}",
        std::process::id(),
        MADE.fetch_add(1, Ordering::SeqCst),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    );
    let made = url.clone().and_then(|url| {
        probe(Command::new("psql").args([url.as_str(), "-qc", &format!("CREATE DATABASE {name}")]))
    });
    if !POSTGRES.check(made) {
        return None;
    }
    let url = url.ok()?;
    let (base, _) = url.rsplit_once('/')?;
    Some((format!("{base}/{name}"), dir))
}
