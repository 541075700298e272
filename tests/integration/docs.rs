//! Every shell example in README.md and docs/*.md runs as written, on this machine, with the `broker`
//! under test: a reader who copies a block into a terminal gets exit code 0.
//!
//! The examples are the fenced blocks marked ```` ```sh ```` (or ```` ```bash ````). A block that
//! cannot run here — it builds or installs broker, takes minutes — carries a marker on the line
//! before its fence, with the reason:
//!
//! ```text
//! <!-- not-run: installs broker -->
//! ```
//!
//! The blocks of one file run in order in one `bash` (so an `export` carries on, as in a terminal),
//! with `set -e -o pipefail`, from the repository's root, `broker` first on `PATH`, and a fresh
//! `HOME`, `TMPDIR` and `BROKER_DIRECTORY` in a temporary directory. Whatever the blocks leave checked
//! out is checked in at the end. They need the container engine and images that `scripts/test` sets up;
//! the AWX examples talk to the AWX simulator (`tests/awx-sim`), which environment overrides
//! (`BROKER_ANSIBLETOWER__BASE_URL`, …, and the nick `rhel9`) configure as a reader's settings would.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::BROKER;

/// The marker that keeps the next block from running; the reason follows it.
const NOT_RUN: &str = "<!-- not-run:";

/// One shell example of a document.
#[derive(Debug, PartialEq)]
struct Example {
    /// 1-based line of the opening fence.
    line: usize,
    /// The block's text.
    script: String,
    /// Why it does not run, when it is marked.
    not_run: Option<String>,
}

/// The shell examples of a Markdown document, or what is wrong with its markers.
fn examples(markdown: &str) -> Result<Vec<Example>, String> {
    let mut found = Vec::new();
    let mut lines = markdown.lines().enumerate();
    let mut pending_marker: Option<(usize, String)> = None;
    while let Some((index, line)) = lines.next() {
        let trimmed = line.trim();
        if let Some(rest) = trimmed.strip_prefix(NOT_RUN) {
            let reason = rest.trim_end_matches("-->").trim();
            if reason.is_empty() || !rest.trim_end().ends_with("-->") {
                return Err(format!(
                    "line {}: write the marker as `<!-- not-run: REASON -->`",
                    index + 1
                ));
            }
            pending_marker = Some((index + 1, reason.to_owned()));
            continue;
        }
        if trimmed.is_empty() {
            continue;
        }
        let is_shell = trimmed == "```sh" || trimmed == "```bash";
        if let Some((marker_line, _)) = &pending_marker
            && !is_shell
        {
            return Err(format!(
                "line {marker_line}: a not-run marker must stand right before a ```sh block"
            ));
        }
        if trimmed.starts_with("```") {
            let mut script = String::new();
            for (_, body) in lines.by_ref() {
                if body.trim() == "```" {
                    break;
                }
                script.push_str(body);
                script.push('\n');
            }
            if is_shell {
                found.push(Example {
                    line: index + 1,
                    script,
                    not_run: pending_marker.take().map(|(_, reason)| reason),
                });
            }
        }
    }
    if let Some((line, _)) = pending_marker {
        return Err(format!(
            "line {line}: a not-run marker with no block after it"
        ));
    }
    Ok(found)
}

/// README.md and every docs/*.md, by path relative to the repository's root.
fn documents(root: &Path) -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .filter_map(|p| Some(p.strip_prefix(root).ok()?.to_path_buf()))
        .collect();
    docs.sort();
    docs.insert(0, PathBuf::from("README.md"));
    docs
}

/// Runs one document's examples; `Err` says which failed and shows their output.
fn run_document(root: &Path, document: &Path, examples: &[Example]) -> Result<(), String> {
    let sandbox = tempfile::tempdir().expect("temp dir");
    let [bin, home, tmp, broker_dir] =
        ["bin", "home", "tmp", "broker"].map(|d| sandbox.path().join(d));
    for dir in [&bin, &home, &tmp, &broker_dir] {
        std::fs::create_dir_all(dir).expect("sandbox directory");
    }
    std::os::unix::fs::symlink(BROKER, bin.join("broker")).expect("link broker");
    let mut script = String::from(
        "set -e -o pipefail\n\
         trap 'broker checkin --all --pending >/dev/null 2>&1 || true' EXIT\n\
         PS4='+ '\nset -x\n",
    );
    for example in examples.iter().filter(|e| e.not_run.is_none()) {
        script.push_str(&format!(
            ": '=== {}:{} ==='\n{}",
            document.display(),
            example.line,
            example.script
        ));
    }
    let (stdout, stderr) = (sandbox.path().join("stdout"), sandbox.path().join("stderr"));
    let path = std::env::join_paths(std::iter::once(bin.clone()).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .expect("PATH");
    use std::os::unix::process::CommandExt;
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(&script)
        .current_dir(root)
        .env_clear()
        .env("PATH", path)
        .env("HOME", &home)
        .env("TMPDIR", &tmp)
        .env(
            "USER",
            std::env::var("USER").unwrap_or_else(|_| "tester".into()),
        )
        .env("LANG", "C.UTF-8")
        .env("BROKER_DIRECTORY", &broker_dir)
        .env("BROKER_NON_INTERACTIVE", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .process_group(0);
    // The AWX examples run against the AWX simulator, configured through environment overrides as a
    // reader's settings file configures their AWX (with the nick `rhel9` of the settings example).
    #[cfg(feature = "ansible-tower")]
    let _awx = {
        let sim = awx_sim::Sim::start();
        command
            .env("BROKER_ANSIBLETOWER__BASE_URL", sim.url())
            .env("BROKER_ANSIBLETOWER__TOKEN", awx_sim::ALICE_TOKEN)
            .env("BROKER_ANSIBLETOWER__WORKFLOW_POLL_INTERVAL", "0.05")
            .env("BROKER_NICKS__RHEL9__WORKFLOW", "deploy-rhel")
            .env("BROKER_NICKS__RHEL9__DEPLOY_RHEL_VERSION", "'9.4'");
        sim
    };
    // Killed, with what the examples started, if this test fails on the way.
    let mut child = crate::util::ChildGuard::spawn(&mut command);
    // A bound, not a measurement: an example that hangs fails instead of stalling the suite.
    let limit = Duration::from_secs(300);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for bash") {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = Command::new("kill")
                .args(["-KILL", &format!("-{}", child.id())])
                .status();
            let _ = child.wait(Duration::from_secs(60));
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if status.is_some_and(|s| s.success()) {
        return Ok(());
    }
    let tail = |path: &Path| {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };
    Err(format!(
        "{}: {} (the last `=== file:line ===` below is the failing block)\n--- stderr:\n{}\n--- stdout:\n{}",
        document.display(),
        match status {
            Some(s) => format!("the examples exited with {s}"),
            None => format!("the examples did not finish within {limit:?}"),
        },
        tail(&stderr),
        tail(&stdout),
    ))
}

#[test]
fn documented_shell_examples_run_as_written() {
    if !broker_test_support::podman() {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root");
    let mut failures = Vec::new();
    let mut ran = 0;
    for document in documents(root) {
        let text = std::fs::read_to_string(root.join(&document)).expect("read the document");
        let examples = match examples(&text) {
            Ok(examples) => examples,
            Err(e) => {
                failures.push(format!("{}: {e}", document.display()));
                continue;
            }
        };
        if examples.iter().all(|e| e.not_run.is_some()) {
            continue;
        }
        ran += examples.iter().filter(|e| e.not_run.is_none()).count();
        if let Err(e) = run_document(root, &document, &examples) {
            failures.push(e);
        }
    }
    assert!(
        ran >= 5,
        "only {ran} examples ran: did the docs lose their ```sh blocks?"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn not_run_markers_skip_the_next_block_and_need_a_reason() {
    let doc = "text\n\n<!-- not-run: needs AWX -->\n```sh\nbroker checkout --workflow x\n```\n\n\
               ```sh\nbroker inventory\n```\n\n```\nnot shell\n```\n```yaml\na: 1\n```\n";
    assert_eq!(
        examples(doc).unwrap(),
        vec![
            Example {
                line: 4,
                script: "broker checkout --workflow x\n".into(),
                not_run: Some("needs AWX".into()),
            },
            Example {
                line: 8,
                script: "broker inventory\n".into(),
                not_run: None,
            },
        ]
    );
    assert!(examples("<!-- not-run: -->\n```sh\nx\n```\n").is_err());
    assert!(examples("<!-- not-run: why -->\n```yaml\nx\n```\n").is_err());
    assert!(examples("<!-- not-run: why -->\n").is_err());
}
