//! Commands broker runs on this machine (a handoff's `ansible-playbook`, Puppet's
//! `ca_clean_command`, a scenario's `local_exec`): in a process group of their own, so that when the
//! time is up the whole group — the command and everything it started — is killed.

use std::process::Stdio;
use std::time::Duration;

use crate::session::ExecOutput;

/// Why [`run`] has no output to give.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The command could not be started (not installed, not executable).
    Start(std::io::Error),
    /// Waiting for it failed.
    Wait(std::io::Error),
    /// It outlived its time; its process group was killed. What it had written until then.
    TimedOut(ExecOutput),
}

/// Runs `command` (stdin empty, output collected) in a process group of its own until it ends and
/// its output is closed, or `timeout` passes: then its whole group is killed.
pub(crate) async fn run(
    command: &mut tokio::process::Command,
    timeout: Duration,
) -> Result<ExecOutput, Failure> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0)
        .spawn()
        .map_err(Failure::Start)?;
    let group = ProcessGroup(child.id());
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    // The buffers outlive a timed-out read, so what came until then is kept.
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let ran = tokio::time::timeout(timeout, async {
        tokio::join!(
            read_all(stdout, &mut out),
            read_all(stderr, &mut err),
            child.wait()
        )
    })
    .await;
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let Ok((_, _, status)) = ran else {
        drop(group);
        let _reaped = child.wait().await;
        return Err(Failure::TimedOut(ExecOutput {
            stdout: text(&out),
            stderr: text(&err),
            status: -1,
        }));
    };
    group.release();
    let status = status.map_err(Failure::Wait)?;
    Ok(ExecOutput {
        stdout: text(&out),
        stderr: text(&err),
        // Killed by a signal: no status of its own.
        status: status.code().unwrap_or(-1),
    })
}

/// Reads all a pipe gives into `bytes`.
async fn read_all(pipe: Option<impl tokio::io::AsyncRead + Unpin>, bytes: &mut Vec<u8>) {
    if let Some(mut pipe) = pipe {
        // A read error ends the output; the exit status still tells how the command ended.
        let _ended = tokio::io::AsyncReadExt::read_to_end(&mut pipe, bytes).await;
    }
}

/// A process group killed when dropped, unless released once its leader has ended. It is dropped
/// before the leader is waited for: until then the leader's pid, the group's id, names no other
/// group.
struct ProcessGroup(Option<u32>);

impl ProcessGroup {
    fn release(mut self) {
        self.0 = None;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let pid = self
            .0
            .and_then(|pid| i32::try_from(pid).ok())
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            // Fails only when the group is already gone.
            let _gone = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether process `pid` lives and no kill is on its way to it: it is neither a zombie nor
    /// gone, and has no SIGKILL pending (the kernel may not have ended it yet).
    fn alive(pid: &str) -> bool {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            return false;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
                .unwrap_or_default()
                .to_owned()
        };
        let kill_pending = |mask: String| {
            u64::from_str_radix(&mask, 16).is_ok_and(|bits| bits & (1 << (9 - 1)) != 0)
        };
        !field("State:").starts_with(['Z', 'X'])
            && !kill_pending(field("SigPnd:"))
            && !kill_pending(field("ShdPnd:"))
    }

    /// A command that ends in time keeps what it started in the background (a daemon it
    /// launched); only a command that outlives its time has its whole group killed.
    #[tokio::test]
    async fn what_a_command_that_ended_started_in_the_background_keeps_running() {
        let mut sh = tokio::process::Command::new("sh");
        sh.arg("-c")
            .arg("sleep 60 >/dev/null 2>&1 </dev/null & echo $!");
        let out = run(&mut sh, Duration::from_secs(60)).await.unwrap();
        let pid = out.stdout.trim().to_owned();
        let kept = alive(&pid);
        if let Ok(n) = pid.parse::<i32>()
            && let Some(pid) = rustix::process::Pid::from_raw(n)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
        assert!(kept, "the background process {pid} was killed");

        let mut sh = tokio::process::Command::new("sh");
        sh.arg("-c").arg("echo started; sleep 60");
        match run(&mut sh, Duration::from_millis(300)).await {
            Err(Failure::TimedOut(partial)) => assert_eq!(partial.stdout, "started\n"),
            other => panic!("{other:?}"),
        }
    }
}
