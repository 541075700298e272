//! A temporary broker directory and a way to run `broker` in it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

pub const BROKER: &str = env!("CARGO_BIN_EXE_broker");

/// The settings most tests use: a TestProvider instance and a nick.
pub const SETTINGS: &str = "\
TestProvider:
  instances:
    local:
      default: true
nicks:
  N:
    test_action: basic
";

pub struct BrokerDir {
    dir: tempfile::TempDir,
}

impl BrokerDir {
    pub fn new(settings: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        if !settings.is_empty() {
            std::fs::write(dir.path().join("broker_settings.yaml"), settings)
                .expect("write settings");
        }
        BrokerDir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn inventory_path(&self) -> PathBuf {
        self.path().join("inventory.yaml")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BROKER);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.path())
            .env("USER", "tester")
            .env("BROKER_DIRECTORY", self.path())
            .env("BROKER_NON_INTERACTIVE", "1")
            .stdin(Stdio::null());
        cmd
    }

    /// `broker COMMAND_LINE` (after any shell `setup;`) in a terminal — `script` gives it one, as a
    /// user typing at a prompt has — in this directory, with the environment [`BrokerDir::command`]
    /// sets, less `BROKER_NON_INTERACTIVE` (add it where broker must not ask).
    pub fn in_terminal(&self, setup: &str, command_line: &str) -> Command {
        let mut cmd = Command::new("script");
        cmd.args([
            "-qfec",
            &format!("{setup}{BROKER} {command_line}"),
            "/dev/null",
        ])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", self.path())
        .env("USER", "tester")
        .env("BROKER_DIRECTORY", self.path())
        // Never the test runner's terminal: `script` would read (and block on) it.
        .stdin(Stdio::null());
        cmd
    }

    /// Runs broker to its end (killed, and the test failed, if it takes longer than [`DEADLINE`]).
    pub fn run(&self, args: &[&str]) -> Output {
        output(&mut self.command(args))
    }

    /// Runs broker and asserts its exit code, returning stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.expect(args, 0)
    }

    pub fn expect(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "broker {args:?}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The inventory as JSON, through the CLI.
    pub fn inventory(&self) -> Vec<Value> {
        let text = self.ok(&["inventory", "-o", "json"]);
        match serde_json::from_str(&text) {
            Ok(Value::Array(items)) => items,
            other => panic!("inventory -o json gave {other:?}: {text}"),
        }
    }

    /// Starts `broker checkout` with these arguments and waits until the provider holds `hosts` hosts
    /// (use a `--hang` fault to stop it there). It is killed if the test ends first.
    pub fn spawn_checkout(&self, args: &[&str], hosts: usize) -> ChildGuard {
        let mut full = vec!["checkout"];
        full.extend_from_slice(args);
        let child = ChildGuard::spawn(
            self.command(&full)
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        );
        assert!(
            wait_for(Duration::from_secs(20), || self.provider_hosts().len()
                == hosts),
            "the checkout never made {hosts} hosts"
        );
        child
    }

    /// Asserts that no host is left: no record in the inventory and none at the TestProvider.
    pub fn assert_nothing_out(&self) {
        assert!(self.inventory().is_empty(), "{:?}", self.inventory());
        assert!(
            self.provider_hosts().is_empty(),
            "{:?}",
            self.provider_hosts()
        );
    }

    /// Hosts that exist at the TestProvider instance `local`.
    pub fn provider_hosts(&self) -> Vec<String> {
        let dir = self.path().join("test_provider/local/hosts");
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

pub use broker_test_support::{ChildGuard, Containers, wait_for};

/// How long a test waits for a process to finish or a condition to come before it fails: generous,
/// as it only matters when something is stuck (a loaded 2-core machine must never reach it).
pub const DEADLINE: Duration = Duration::from_secs(90);

/// A terminal session (a command from [`BrokerDir::in_terminal`]) that a test reads as it goes and
/// types into. It is killed, with everything it started, if the test ends before it does.
pub struct Terminal {
    session: ChildGuard,
    keys: Option<std::process::ChildStdin>,
    shown: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Terminal {
    /// Starts `command` with its input and output piped here (its stderr goes nowhere: on a terminal
    /// everything comes out on stdout).
    pub fn start(command: &mut Command) -> Terminal {
        let mut session = ChildGuard::spawn(
            command
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        );
        let keys = session.stdin.take();
        let mut stdout = session
            .stdout
            .take()
            .expect("the terminal's output is piped");
        let shown = Arc::new(Mutex::new(String::new()));
        let reader = {
            let shown = Arc::clone(&shown);
            std::thread::spawn(move || {
                use std::io::Read;
                let mut buf = [0u8; 4096];
                while let Ok(n) = stdout.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut shown) = shown.lock() {
                        shown.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            })
        };
        Terminal {
            session,
            keys,
            shown,
            reader: Some(reader),
        }
    }

    /// The session's process id (`script`'s).
    pub fn id(&self) -> u32 {
        self.session.id()
    }

    /// What the terminal showed so far, without carriage returns.
    pub fn shown(&self) -> String {
        self.shown
            .lock()
            .map(|s| s.replace('\r', ""))
            .unwrap_or_default()
    }

    /// Waits (up to [`DEADLINE`]) until the terminal shows `text`; fails the test showing what it
    /// showed instead.
    pub fn wait_for_text(&self, text: &str) {
        assert!(
            wait_for(DEADLINE, || self.shown().contains(text)),
            "the terminal never showed {text:?}; it showed:\n{}",
            self.shown()
        );
    }

    /// Types on the terminal (`\r` is Enter, `\x03` is Ctrl-C).
    pub fn type_keys(&mut self, keys: &str) {
        use std::io::Write;
        let keyboard = self.keys.as_mut().expect("the terminal's input is open");
        keyboard
            .write_all(keys.as_bytes())
            .expect("type on the terminal");
        keyboard.flush().expect("type on the terminal");
    }

    /// Waits (up to [`DEADLINE`]) for the session to end, the keyboard still attached until then:
    /// its exit code and all the terminal showed.
    pub fn finish(mut self) -> (Option<i32>, String) {
        let status = self.session.wait(DEADLINE);
        drop(self.keys.take());
        if let Some(reader) = self.reader.take() {
            // The output ends with the session (processes it left behind are killed on drop).
            let _joined = reader.join();
        }
        (status.code(), self.shown())
    }
}

/// Runs `command` to its end with its stdout and stderr piped here, as `Command::output` does, but
/// killed (and the test failed) if it takes longer than [`DEADLINE`].
pub fn output(command: &mut Command) -> Output {
    ChildGuard::spawn(command.stdout(Stdio::piped()).stderr(Stdio::piped())).wait_output(DEADLINE)
}

/// Runs `python script args…` (an official client's check of a simulator, under `tests/`), failing
/// the test with its output unless it exits 0 having printed `ok`; returns its standard output.
pub fn client_check(python: &str, script: &str, args: &[&str], ok: &str) -> String {
    let script = format!("{}/../tests/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = ChildGuard::spawn(
        Command::new(python)
            .arg(&script)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .wait_output(DEADLINE);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(ok),
        "{script} against the simulator:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Sends SIGINT (what Ctrl-C sends) to a child process.
pub fn interrupt(child: &std::process::Child) {
    signal(child, "INT");
}

/// Sends a signal (`INT`, `TERM`, `HUP`…) to a child process.
pub fn signal(child: &std::process::Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {}", child.id());
}
