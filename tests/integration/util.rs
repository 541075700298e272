//! A temporary broker directory and a way to run `broker` in it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
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
        .env("BROKER_DIRECTORY", self.path());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run broker")
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
    /// (use a `--hang` fault to stop it there).
    pub fn spawn_checkout(&self, args: &[&str], hosts: usize) -> std::process::Child {
        let mut full = vec!["checkout"];
        full.extend_from_slice(args);
        let child = self
            .command(&full)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start broker checkout");
        assert!(
            wait_for(Duration::from_secs(20), || self.provider_hosts().len()
                == hosts),
            "the checkout never made {hosts} hosts"
        );
        child
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

pub use broker_test_support::{Containers, wait_for};

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
