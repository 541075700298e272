//! `script`: upload a script and a metadata JSON file to the host, run the script with the metadata
//! file's path as its argument, and judge by its exit status — or by a marker it prints.
//!
//! Both files go into a private directory (0700, made with `umask 077; mktemp -d`): the script
//! 0700, the metadata (which holds the target's configuration, secrets included) and the optional
//! data file 0600. The directory is removed when the run ends, however it ends. Nothing is inlined
//! into a command line.
//!
//! Judging, in this order: a line of output containing `pending_marker` makes the run pending
//! (whatever the exit status: an unsigned Puppet agent exits 1); a non-zero exit status fails it;
//! with `success_marker` set, a run that exits 0 without printing it fails too.

use serde_json::json;

use crate::handoff::run::{
    Handoff, HandoffContext, Outcome, PrivateDir, StepError, execute_logged, setting,
};
use crate::handoff::target::Target;
use crate::session::{ExecOutput, Session};

/// The `script` kind's configuration keys.
pub mod keys {
    /// The script, a path on the machine broker runs on (required).
    pub const SCRIPT: &str = "script";
    /// A data file to upload next to it, a path on the machine broker runs on.
    pub const DATA: &str = "data";
    /// Text whose presence on a line of output marks success.
    pub const SUCCESS_MARKER: &str = "success_marker";
    /// Text whose presence on a line of output marks the handoff pending.
    pub const PENDING_MARKER: &str = "pending_marker";
}

/// The `script` kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct Script;

#[async_trait::async_trait]
impl Handoff for Script {
    fn name(&self) -> &str {
        "script"
    }

    async fn run(&self, cx: &HandoffContext<'_>) -> Result<Outcome, StepError> {
        let files = match Files::read(cx.target) {
            Ok(files) => files,
            Err(reason) => return Ok(Outcome::Failed { reason }),
        };
        let session = cx.session().await?;
        let dir = PrivateDir::create(&*session, cx).await?;
        let ran = upload_and_run(cx, &*session, &dir, &files).await;
        dir.remove_or_warn(cx.log).await;
        Ok(judge(cx.target, &ran?))
    }
}

/// What goes onto the host, read before connecting.
struct Files {
    script: Vec<u8>,
    data: Option<Vec<u8>>,
}

impl Files {
    fn read(target: &Target) -> Result<Files, String> {
        let script_path = setting(target, keys::SCRIPT).ok_or_else(|| {
            format!(
                "handoff target `{}` names no script (`{}`)",
                target.name,
                keys::SCRIPT
            )
        })?;
        let read = |path: &str| {
            std::fs::read(path).map_err(|e| {
                format!(
                    "cannot read {path} for handoff target `{}`: {e}",
                    target.name
                )
            })
        };
        Ok(Files {
            script: read(script_path)?,
            data: setting(target, keys::DATA).map(read).transpose()?,
        })
    }
}

/// Puts the files in `dir` and runs the script. A session failing while putting them is a transport
/// error (nothing ran yet), the host refusing them (`chmod` failing) is fatal, as is an error running
/// the script (it may have done part of its work).
async fn upload_and_run(
    cx: &HandoffContext<'_>,
    session: &dyn Session,
    dir: &PrivateDir<'_>,
    files: &Files,
) -> Result<ExecOutput, StepError> {
    let data_path = match &files.data {
        Some(data) => Some(dir.write("data", data, 0o600).await?),
        None => None,
    };
    let metadata = metadata(cx, data_path.as_deref());
    let metadata_path = dir
        .write("metadata.json", metadata.as_bytes(), 0o600)
        .await?;
    let script_path = dir.write("script", &files.script, 0o700).await?;
    let command = format!("cd '{}' && '{script_path}' '{metadata_path}'", dir.path());
    cx.log.line(format!("running the script in {}", dir.path()));
    execute_logged(cx, session, &command, "the handoff script").await
}

/// The metadata file's content: the host, the target and its whole configuration (secrets
/// included: the file is 0600 in a private directory and removed after the run).
fn metadata(cx: &HandoffContext<'_>, data_path: Option<&str>) -> String {
    let config: serde_json::Map<String, serde_json::Value> = cx
        .target
        .config
        .iter()
        .map(|(key, value)| (key.to_owned(), json!(value.expose())))
        .collect();
    let host = cx.host;
    let doc = json!({
        "hostname": host.hostname(),
        "name": host.name(),
        "ip": host.get(crate::record::fields::IP).and_then(crate::value::scalar_text),
        "record_id": host.id().as_str(),
        "target": cx.target.name,
        "kind": cx.target.kind,
        "data_path": data_path,
        "config": config,
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

/// Pending marker, then exit status, then success marker.
fn judge(target: &Target, out: &ExecOutput) -> Outcome {
    let printed = |marker: &str| {
        out.stdout
            .lines()
            .chain(out.stderr.lines())
            .any(|line| line.contains(marker))
    };
    if let Some(marker) = setting(target, keys::PENDING_MARKER).filter(|m| printed(m)) {
        return Outcome::Pending {
            reason: format!("the script printed the pending marker `{marker}`"),
        };
    }
    if !out.success() {
        return Outcome::Failed {
            reason: format!("the handoff script exited with status {}", out.status),
        };
    }
    match setting(target, keys::SUCCESS_MARKER) {
        Some(marker) if !printed(marker) => Outcome::Failed {
            reason: format!("the handoff script exited 0 without printing `{marker}`"),
        },
        _ => Outcome::Succeeded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::handoff::fake::{self, DIR, Script as Host};
    use crate::handoff::run::{self, HandoffState, RunReport};

    fn target(dir: &tempfile::TempDir) -> Target {
        let script = dir.path().join("hand-off.sh");
        std::fs::write(&script, "#!/bin/sh\necho handed\n").unwrap();
        let target = fake::target(
            "scripted",
            "script",
            &[
                (keys::SCRIPT, script.to_str().unwrap()),
                ("retry_delay", "0s"),
            ],
        );
        fake::with(target, "password", "hunter2", true)
    }

    async fn run_with(
        target: &Target,
        replies: Vec<crate::error::Result<ExecOutput>>,
    ) -> (RunReport, Host) {
        fake::run_in_private_dir(&Script, target, replies).await
    }

    #[tokio::test]
    async fn files_go_into_a_private_directory_secrets_0600_and_all_is_removed_after_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let (report, seen) = run_with(&target(&dir), vec![]).await;
        assert_eq!(report.state, HandoffState::HandedOff, "{report:?}");
        assert_eq!(
            seen.commands,
            [
                "umask 077 && mktemp -d \"${TMPDIR:-/tmp}/broker-handoff.r1.XXXXXXXX\"".to_owned(),
                format!("chmod 600 '{DIR}/metadata.json'"),
                format!("chmod 700 '{DIR}/script'"),
                format!(
                    "BROKER_HANDOFF_RUN=r1; export BROKER_HANDOFF_RUN; cd '{DIR}' && '{DIR}/script' '{DIR}/metadata.json'"
                ),
                format!("rm -rf -- '{DIR}'"),
            ]
        );
        let (path, metadata) = &seen.written[0];
        assert_eq!(path, &format!("{DIR}/metadata.json"));
        let metadata: serde_json::Value = serde_json::from_slice(metadata).unwrap();
        assert_eq!(metadata["hostname"], "fake.example.com");
        assert_eq!(metadata["target"], "scripted");
        assert_eq!(metadata["config"]["password"], "hunter2");
        assert_eq!(seen.written[1].1, b"#!/bin/sh\necho handed\n");
        assert!(
            !report.log.iter().any(|l| l.contains("hunter2")),
            "{:?}",
            report.log
        );
    }

    /// A private directory `mktemp` did not make — it failed, or printed something else than an
    /// absolute path named as broker names them, without quotes — fails the handoff before
    /// anything is copied.
    #[tokio::test]
    async fn a_directory_mktemp_did_not_make_fails_the_handoff_before_any_copy() {
        let dir = tempfile::tempdir().unwrap();
        for reply in [
            fake::status(1, &format!("{DIR}\n")),
            fake::ok("tmp/broker-handoff.abc\n"),
            fake::ok("/tmp/other.abc\n"),
            fake::ok("/tmp/broker-handoff.a'b\n"),
        ] {
            let shown = format!("{reply:?}");
            let (host, seen) = fake::host(Host {
                replies: vec![reply].into(),
                ..Host::default()
            });
            let report = run::run_stoppable(&Script, &host, &target(&dir), fake::RUN, None)
                .await
                .unwrap();
            assert_eq!(report.state, HandoffState::Failed, "{shown}");
            let error = report.last_error.unwrap_or_default();
            assert!(
                error.contains("cannot make a private directory for the handoff"),
                "{shown}: {error}"
            );
            assert!(seen.lock().unwrap().written.is_empty(), "{shown}");
        }
    }

    #[tokio::test]
    async fn a_failing_script_fails_once_and_its_files_are_still_removed() {
        let dir = tempfile::tempdir().unwrap();
        let replies = vec![fake::ok(""), fake::ok(""), fake::status(1, "broken\n")];
        let (report, seen) = run_with(&target(&dir), replies).await;
        assert_eq!(
            (report.state, report.attempts, report.last_error.as_deref()),
            (
                HandoffState::Failed,
                1,
                Some("the handoff script exited with status 1")
            )
        );
        assert_eq!(seen.commands.last().unwrap(), &format!("rm -rf -- '{DIR}'"));
        assert!(
            report.log.contains(&"broken".to_owned()),
            "{:?}",
            report.log
        );
    }

    #[tokio::test]
    async fn a_host_refusing_the_files_fails_once_and_is_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let replies = vec![fake::status(1, "")];
        let (report, seen) = run_with(&target(&dir), replies).await;
        assert_eq!(
            (report.state, report.attempts),
            (HandoffState::Failed, 1),
            "{report:?}"
        );
        assert!(
            report
                .last_error
                .as_deref()
                .unwrap()
                .starts_with(&format!("host fake.example.com: setting the mode of {DIR}")),
            "{report:?}"
        );
        assert_eq!(seen.connects, 1);
        assert_eq!(seen.commands.last().unwrap(), &format!("rm -rf -- '{DIR}'"));
    }

    #[tokio::test]
    async fn a_timed_out_script_is_not_run_again_and_says_its_processes_were_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let timeout = Err(Error::Timeout {
            operation: "x".into(),
            after: std::time::Duration::from_secs(5),
        });
        let replies = vec![fake::ok(""), fake::ok(""), timeout];
        let (report, seen) = run_with(&target(&dir), replies).await;
        assert_eq!((report.state, report.attempts), (HandoffState::Failed, 1));
        assert_eq!(
            report.last_error.as_deref(),
            Some(
                "the handoff script on fake.example.com (its processes were stopped) timed out after 5s"
            )
        );
        assert_eq!(seen.commands.last().unwrap(), &format!("rm -rf -- '{DIR}'"));
    }

    #[tokio::test]
    async fn a_missing_script_fails_without_touching_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let target = fake::with(
            target(&dir),
            keys::SCRIPT,
            "/nonexistent/hand-off.sh",
            false,
        );
        let (host, seen) = fake::host(Host::default());
        let report = run::run(&Script, &host, &target).await.unwrap();
        assert_eq!(report.state, HandoffState::Failed);
        assert!(
            report
                .last_error
                .as_deref()
                .unwrap()
                .starts_with("cannot read /nonexistent/hand-off.sh for handoff target `scripted`"),
            "{report:?}"
        );
        assert_eq!(seen.lock().unwrap().connects, 0);
    }

    fn out(status: i32, stdout: &str) -> ExecOutput {
        ExecOutput {
            stdout: stdout.into(),
            stderr: String::new(),
            status,
        }
    }

    #[test]
    fn the_pending_marker_wins_then_the_exit_status_then_the_success_marker() {
        let plain = fake::target("tgt", "script", &[]);
        assert_eq!(judge(&plain, &out(0, "")), Outcome::Succeeded);
        assert!(matches!(judge(&plain, &out(2, "")), Outcome::Failed { .. }));
        let marked = fake::target(
            "tgt",
            "script",
            &[
                (keys::PENDING_MARKER, "no certificate"),
                (keys::SUCCESS_MARKER, "Finished"),
            ],
        );
        assert_eq!(
            judge(&marked, &out(1, "Exiting; no certificate found\n")),
            Outcome::Pending {
                reason: "the script printed the pending marker `no certificate`".into()
            }
        );
        assert_eq!(
            judge(&marked, &out(0, "done\n")),
            Outcome::Failed {
                reason: "the handoff script exited 0 without printing `Finished`".into()
            }
        );
        assert_eq!(
            judge(&marked, &out(0, "Finished catalog run\n")),
            Outcome::Succeeded
        );
        assert!(matches!(
            judge(&marked, &out(1, "Finished catalog run\n")),
            Outcome::Failed { .. }
        ));
    }
}
