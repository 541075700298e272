//! `broker checkout` on a terminal: the checkout runs in a child `broker` that this process
//! supervises, so that Ctrl-C can offer the Python broker's choice — go on in the background, stop and
//! give back what it made, or resume. A process cannot give the shell its prompt back and go on
//! running, so the work is in another process from the start.
//!
//! The child is the same command line, run as it runs without a terminal: it owns the checkout, its
//! records, messages and exit code, and it stops (giving back what it made) on SIGINT, SIGTERM or
//! SIGHUP — the one stop path of a checkout. It sits in a process group of its own, so the terminal's
//! Ctrl-C reaches only this process. Its stdout and stderr are files next to the log, which outlive
//! this process (a pipe would break under the child when the user chooses the background, or when
//! this process is killed); this process copies them to its own stdout and stderr as they grow, and
//! passes the lines typed on the terminal to the child's stdin, where a provider's question (e.g.
//! AnsibleTower's dangling host) reads its answer.
//!
//! This module supervises a process and nothing else: no checkout logic lives here.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{ChildStdin, ExitStatus, Stdio};
use std::time::Duration;

use broker_core::{Error, Result, Settings};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::app::StopSignals;
use crate::cli::Command;
use crate::output::note;
use crate::terminal::SUPERVISED_ENV;

/// How often the child's output is copied and its end looked for.
const POLL: Duration = Duration::from_millis(50);

/// Runs `broker checkout` in a supervised child when someone sits at a terminal (and `-b` was not
/// given), and returns the exit code to give. `None`: the checkout is to run in this process — no
/// terminal, or the child could not be started (then said why; Ctrl-C stops the checkout at once).
pub fn checkout(command: &Command, settings: &Settings) -> Option<i32> {
    let Command::Checkout(args) = command else {
        return None;
    };
    if args.background || !on_terminal() {
        return None;
    }
    let started = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io_without_path("starting the async runtime", e))
        .and_then(|runtime| {
            // Listening before the child starts: from now on a Ctrl-C is a question, never the end
            // of this process.
            let signals = runtime.block_on(async { StopSignals::listen() })?;
            let child = Child::start(settings)?;
            Ok((runtime, signals, child))
        });
    match started {
        Ok((runtime, signals, child)) => Some(runtime.block_on(child.supervise(signals))),
        Err(e) => {
            note!(
                "warning: the checkout runs without a supervisor ({}): Ctrl-C will stop it without asking",
                broker_core::error::chain(&e)
            );
            None
        }
    }
}

/// Whether this process runs a checkout for a supervising `broker` that is still there: its stderr
/// then reaches the user's terminal (colors, progress) as if it were one. Once the supervisor has
/// left (background, `kill -9`), nobody watches.
pub fn relayed() -> bool {
    std::env::var(SUPERVISED_ENV)
        .is_ok_and(|pid| pid == std::os::unix::process::parent_id().to_string())
}

/// Whether someone sits at a terminal to answer a Ctrl-C (stdin and stderr are terminals) and did not
/// ask broker never to ask (`BROKER_NON_INTERACTIVE`). A supervised child's stdin is a pipe: it never
/// supervises in turn.
fn on_terminal() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("BROKER_NON_INTERACTIVE").is_none()
        && std::io::stdin().is_terminal()
        && std::io::stderr().is_terminal()
}

/// What the user chose at the Ctrl-C question (or what happened meanwhile).
enum Choice {
    Background,
    Resume,
    /// Stop, as this signal asks.
    Stop(&'static str),
    Exited(ExitStatus),
}

/// The child `broker` running the checkout, and the copies of its output.
struct Child {
    process: std::process::Child,
    /// Where typed lines go; `None` once the terminal's input ended or the child stopped reading.
    input: Option<ChildStdin>,
    stdout: Relay,
    stderr: Relay,
}

impl Child {
    /// Starts this same command line again as the child, its output in new files next to the log.
    fn start(settings: &Settings) -> Result<Self> {
        let exe = std::env::current_exe()
            .map_err(|e| Error::io("finding the broker executable", "/proc/self/exe", e))?;
        let mut files = crate::app::background_output(&settings.log_path(), &["out", "err"])?;
        let (err_path, err) = files.remove(1);
        let (out_path, out) = files.remove(0);
        let stdout = Relay::new(out_path, Stream::Stdout)?;
        let stderr = Relay::new(err_path, Stream::Stderr)?;
        let mut command = std::process::Command::new(exe);
        command
            .args(std::env::args_os().skip(1))
            .env(SUPERVISED_ENV, std::process::id().to_string())
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            // Out of the terminal's foreground group: Ctrl-C reaches this process only.
            .process_group(0);
        // Tables fit this terminal, which the child's stdout (a file) cannot tell it.
        if let Some(width) = crate::output::output_width() {
            command.env("COLUMNS", width.to_string());
        }
        let mut process = command
            .spawn()
            .map_err(|e| Error::io("starting the checkout's process", "broker", e))?;
        tracing::debug!(pid = process.id(), "the checkout runs in a child process");
        Ok(Child {
            input: process.stdin.take(),
            process,
            stdout,
            stderr,
        })
    }

    /// Shows the child's output until it exits, asking on Ctrl-C what to do, and returns the exit
    /// code to give.
    async fn supervise(mut self, mut signals: StopSignals) -> i32 {
        let mut typed = typed_lines();
        let mut tick = tokio::time::interval(POLL);
        let mut stopping = false;
        loop {
            let signal = tokio::select! {
                _ = tick.tick() => {
                    self.relay();
                    match self.exited() {
                        Some(status) => return self.finish(status),
                        None => continue,
                    }
                }
                line = typed.recv(), if self.input.is_some() => {
                    self.forward(line);
                    continue;
                }
                signal = signals.next() => signal,
            };
            if signal != "Ctrl-C" || stopping {
                stopping = true;
                self.signal(signal);
                continue;
            }
            match self.ask(&mut signals, &mut typed, &mut tick).await {
                Choice::Background => return self.leave(),
                Choice::Resume => {
                    note!("resuming the checkout");
                }
                Choice::Stop(signal) => {
                    stopping = true;
                    self.signal(signal);
                }
                Choice::Exited(status) => return self.finish(status),
            }
        }
    }

    /// Asks what the Ctrl-C means while the checkout goes on. The child's output waits in its files
    /// meanwhile, not to write over the question.
    async fn ask(
        &mut self,
        signals: &mut StopSignals,
        typed: &mut UnboundedReceiver<String>,
        tick: &mut tokio::time::Interval,
    ) -> Choice {
        let mut question = "\r\x1b[2KCtrl-C: [b]ackground (the checkout goes on without this terminal), \
            [s]top the checkout and give back what it made, or [r]esume it? [b/s/r] (r): ";
        loop {
            let mut err = std::io::stderr();
            let _ = write!(err, "{question}");
            let _ = err.flush();
            let line = loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if let Some(status) = self.exited() {
                            note!("");
                            return Choice::Exited(status);
                        }
                    }
                    again = signals.next() => {
                        note!("");
                        return Choice::Stop(again);
                    }
                    line = typed.recv() => break line,
                }
            };
            match line.as_deref().map(str::trim) {
                Some("" | "r" | "R" | "resume") => return Choice::Resume,
                Some("b" | "B" | "background") => return Choice::Background,
                Some("s" | "S" | "stop") => return Choice::Stop("Ctrl-C"),
                None => {
                    // Nobody can answer any more (Ctrl-D): the Ctrl-C stands as pressed.
                    note!("");
                    note!("the terminal's input ended: stopping the checkout");
                    return Choice::Stop("Ctrl-C");
                }
                // A typo must not end (or keep) a checkout: ask again.
                Some(other) => {
                    note!("`{other}` is not b, s or r");
                    question = "[b]ackground, [s]top or [r]esume? [b/s/r] (r): ";
                }
            }
        }
    }

    /// The child's exit status, once it has exited.
    fn exited(&mut self) -> Option<ExitStatus> {
        self.process.try_wait().ok().flatten()
    }

    /// Copies what the child wrote since the last call: its messages first, then its results.
    fn relay(&mut self) {
        self.stderr.copy();
        self.stdout.copy();
    }

    /// Passes a typed line to the child; the end of the terminal's input ends the child's.
    fn forward(&mut self, line: Option<String>) {
        let written = match (&mut self.input, line) {
            (Some(input), Some(line)) => input.write_all(line.as_bytes()).is_ok(),
            _ => false,
        };
        if !written {
            self.input = None;
        }
    }

    /// Sends the child the stop signal this process got (Ctrl-C stands for SIGINT), so that its
    /// messages name what the user did.
    fn signal(&self, signal: &str) {
        use rustix::process::{Pid, Signal, kill_process};
        let signal = match signal {
            "SIGTERM" => Signal::TERM,
            "SIGHUP" => Signal::HUP,
            _ => Signal::INT,
        };
        // It fails only when the child is gone, which the next poll sees.
        let _ = kill_process(Pid::from_child(&self.process), signal);
    }

    /// Leaves the child running on its own and says where to follow it.
    fn leave(self) -> i32 {
        let (out, err) = (self.stdout.path.display(), self.stderr.path.display());
        note!(
            "the checkout goes on in the background as pid {}: its hosts go to {out} and its messages \
             to {err}; follow them with `tail -f {out} {err}`",
            self.process.id()
        );
        0
    }

    /// After the child exited: copies the rest of its output, removes the files once everything was
    /// shown (else keeps them and says where they are) and gives the child's exit code.
    fn finish(mut self, status: ExitStatus) -> i32 {
        self.relay();
        let code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        let lost = self.stdout.lost || self.stderr.lost;
        if !lost && !self.stdout.closed {
            let _ = std::fs::remove_file(&self.stdout.path);
            let _ = std::fs::remove_file(&self.stderr.path);
            return code;
        }
        // A reader that closed stdout may have seen enough (`| head`), or may have been stopped by the
        // same Ctrl-C (`| tee`, answered r): either way the rest is kept, and said where.
        let why = if lost {
            "could not all be shown"
        } else {
            "was not all read (its reader closed stdout)"
        };
        note!(
            "the checkout's output {why}; it is kept in {} (hosts) and {} (messages)",
            self.stdout.path.display(),
            self.stderr.path.display()
        );
        if lost && code == 0 { 1 } else { code }
    }
}

/// Which of this process's streams a relay writes to.
#[derive(Clone, Copy, PartialEq)]
enum Stream {
    Stdout,
    Stderr,
}

/// One output file of the child, copied to this process's stream of the same name as it grows.
struct Relay {
    path: PathBuf,
    file: File,
    to: Stream,
    /// The stream is closed (`| head`): nothing more is written to it.
    closed: bool,
    /// Writing failed: not everything was shown.
    lost: bool,
}

impl Relay {
    fn new(path: PathBuf, to: Stream) -> Result<Self> {
        let file = File::open(&path)
            .map_err(|e| Error::io("opening the checkout's output file", &path, e))?;
        Ok(Relay {
            path,
            file,
            to,
            closed: false,
            lost: false,
        })
    }

    /// Copies what was added to the file since the last call.
    fn copy(&mut self) {
        let mut buffer = [0u8; 8192];
        while !self.closed {
            let n = match self.file.read(&mut buffer) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.lost = true;
                    return;
                }
            };
            let written = match self.to {
                Stream::Stdout => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&buffer[..n]).and_then(|()| out.flush())
                }
                Stream::Stderr => std::io::stderr().lock().write_all(&buffer[..n]),
            };
            if let Err(e) = written {
                // A closed pipe on stdout is a reader that has seen enough, as for any broker output.
                self.lost =
                    !(self.to == Stream::Stdout && e.kind() == std::io::ErrorKind::BrokenPipe);
                self.closed = true;
            }
        }
    }
}

/// Lines typed on the terminal, read on a thread of their own (a process exiting does not wait for
/// it); the channel ends with the input.
fn typed_lines() -> UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let _ = std::thread::Builder::new()
        .name("broker-typed".into())
        .spawn(move || {
            loop {
                let mut line = String::new();
                match std::io::stdin().read_line(&mut line) {
                    Ok(n) if n > 0 && tx.send(line).is_ok() => {}
                    _ => return,
                }
            }
        });
    rx
}
