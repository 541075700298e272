//! Running a handoff: the [`Handoff`] trait a kind implements, the registry kinds are found in, and
//! the runner that drives one kind over a host's session — connect and run timeouts, retries on
//! transport errors only, a bounded re-check of "pending" — and records how it went on the host's
//! inventory record.
//!
//! A kind never sees the inventory: it is handed a [`HandoffContext`] (the host, its session, the
//! target's configuration, a log) and answers with an [`Outcome`], or with a [`StepError`] saying
//! whether trying again could help. The runner decides about retries and re-checks, so every kind
//! gets the same policy.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_yaml::{Mapping, Value};

use crate::error::{Error, Result};
use crate::handoff::target::{ConfigValue, Target};
use crate::host::Host;
use crate::record::{HostRecord, fields};
use crate::session::{OutputStream, Session};
use crate::sync::lock;

/// A handoff kind: what hands a checked-out host on to a target (run a script, enrol it with a
/// configuration-management server). Register one in a [`HandoffRegistry`] as a provider is
/// registered in a [`ProviderRegistry`](crate::ProviderRegistry).
#[async_trait::async_trait]
pub trait Handoff: Send + Sync + fmt::Debug {
    /// The kind's name, as targets name it (`script`, `noop`).
    fn name(&self) -> &str;

    /// Runs the handoff once on the host. A failed script is an [`Outcome::Failed`], not an error:
    /// only [`StepError::Transport`] is tried again.
    ///
    /// # Errors
    /// [`StepError::Transport`] when the host could not be reached before anything ran on it;
    /// [`StepError::Fatal`] when the run cannot be judged (a timeout, a connection lost mid-run).
    async fn run(&self, cx: &HandoffContext<'_>) -> std::result::Result<Outcome, StepError>;

    /// Undoes what [`Handoff::run`] did, before the host is checked in (revoke a certificate,
    /// delete a node). The default undoes nothing.
    ///
    /// # Errors
    /// As [`Handoff::run`].
    async fn undo(&self, cx: &HandoffContext<'_>) -> std::result::Result<(), StepError> {
        let _ = cx;
        Ok(())
    }
}

/// How one run of a kind ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The host is handed off.
    Succeeded,
    /// The target has not accepted the host yet (an unsigned certificate); a later run may succeed.
    Pending {
        /// Why it waits.
        reason: String,
    },
    /// The handoff failed; running it again as it is would fail again.
    Failed {
        /// What failed.
        reason: String,
    },
}

/// Why a run could not be judged.
#[derive(Debug)]
#[non_exhaustive]
pub enum StepError {
    /// The host could not be reached, or a file not put on it, before anything ran: tried again.
    Transport(Error),
    /// Something went wrong once the handoff was under way: never tried again.
    Fatal(Error),
}

/// Where a host is in its handoff, as recorded in `_broker_handoff_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandoffState {
    /// Under way.
    HandingOff,
    /// Done: the target has the host.
    HandedOff,
    /// The target has not accepted the host yet; `broker handoff retry` tries again.
    Pending,
    /// Failed; `broker handoff retry` tries again.
    Failed,
}

impl HandoffState {
    /// The name written to the inventory.
    pub fn as_str(self) -> &'static str {
        match self {
            HandoffState::HandingOff => "handing_off",
            HandoffState::HandedOff => "handed_off",
            HandoffState::Pending => "handoff_pending",
            HandoffState::Failed => "handoff_failed",
        }
    }

    /// The state a record's `_broker_handoff_state` names, if any.
    pub fn of(record: &HostRecord) -> Option<HandoffState> {
        match record.get(fields::HANDOFF_STATE)?.as_str()? {
            "handing_off" => Some(HandoffState::HandingOff),
            "handed_off" => Some(HandoffState::HandedOff),
            "handoff_pending" => Some(HandoffState::Pending),
            "handoff_failed" => Some(HandoffState::Failed),
            _ => None,
        }
    }
}

impl fmt::Display for HandoffState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The handoff kinds a broker knows, by name.
#[derive(Debug, Clone, Default)]
pub struct HandoffRegistry {
    kinds: BTreeMap<String, Arc<dyn Handoff>>,
}

impl HandoffRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a kind, replacing one of the same name.
    #[must_use]
    pub fn with(mut self, kind: Arc<dyn Handoff>) -> Self {
        self.register(kind);
        self
    }

    /// Adds a kind, replacing one of the same name.
    pub fn register(&mut self, kind: Arc<dyn Handoff>) {
        self.kinds.insert(kind.name().to_owned(), kind);
    }

    /// The kind of that name.
    ///
    /// # Errors
    /// [`Error::User`] naming the kinds there are.
    pub fn get(&self, name: &str) -> Result<&Arc<dyn Handoff>> {
        self.kinds.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.kinds.keys().map(String::as_str).collect();
            Error::user(format!(
                "no handoff kind `{name}` in this broker (it has: {}); build broker with the \
                 kind's feature or register it with `Broker::register_handoff`",
                known.join(", ")
            ))
        })
    }

    /// The kinds' names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.kinds.keys().map(String::as_str).collect()
    }
}

/// A target's value of `key` as text (secret or not: for the host, never for showing), or `None`
/// when unset or empty.
pub fn setting<'t>(target: &'t Target, key: &str) -> Option<&'t str> {
    target.config.text(key).filter(|v| !v.is_empty())
}

/// A target's duration value (`30s`, `5m`), else `default`.
///
/// # Errors
/// [`Error::Configuration`] naming the target and key when the value is not a duration.
pub fn duration_setting(target: &Target, key: &str, default: Duration) -> Result<Duration> {
    setting(target, key).map_or(Ok(default), |text| {
        crate::time::parse_duration(text).map_err(|e| bad_setting(target, key, &e))
    })
}

/// A target's whole-number value, else `default`.
///
/// # Errors
/// [`Error::Configuration`] naming the target and key when the value is not a number.
pub fn number_setting(target: &Target, key: &str, default: u32) -> Result<u32> {
    setting(target, key).map_or(Ok(default), |text| {
        text.trim()
            .parse()
            .map_err(|e| bad_setting(target, key, &e))
    })
}

/// A setting that does not parse; the cause (which may quote the value) only for a plain one.
fn bad_setting(target: &Target, key: &str, cause: &dyn fmt::Display) -> Error {
    let cause = match target.config.get(key) {
        Some(ConfigValue::Secret(_)) => "a secret value, not shown".to_owned(),
        _ => cause.to_string(),
    };
    Error::configuration(format!(
        "handoff target `{}`: `{key}` is invalid ({cause}); fix it with `broker target update`",
        target.name
    ))
}

/// Keys every kind's target may set to shape its run ([`RUN_KEYS`](crate::handoff::schema::RUN_KEYS)).
pub use crate::handoff::schema::run as keys;

/// The timing of a run, read from its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunPolicy {
    /// The limit on reaching the host.
    pub connect_timeout: Duration,
    /// The limit on one run.
    pub run_timeout: Duration,
    /// Retries of a transport error.
    pub retries: u32,
    /// The wait before a retry.
    pub retry_delay: Duration,
    /// Re-checks of a pending outcome.
    pub rechecks: u32,
    /// The wait before a re-check.
    pub recheck_interval: Duration,
}

impl RunPolicy {
    /// The policy a target's configuration asks for, with defaults for what it leaves out.
    ///
    /// # Errors
    /// [`Error::Configuration`] for a value that is not a duration or number.
    pub fn of(target: &Target) -> Result<RunPolicy> {
        Ok(RunPolicy {
            connect_timeout: duration_setting(target, keys::CONNECT_TIMEOUT, secs(60))?,
            run_timeout: duration_setting(target, keys::RUN_TIMEOUT, secs(30 * 60))?,
            retries: number_setting(target, keys::RETRIES, 3)?,
            retry_delay: duration_setting(target, keys::RETRY_DELAY, secs(5))?,
            rechecks: number_setting(target, keys::RECHECKS, 0)?,
            recheck_interval: duration_setting(target, keys::RECHECK_INTERVAL, secs(30))?,
        })
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The most of a run's output kept in its log, in bytes (the end is kept).
pub const LOG_LIMIT: usize = 16 * 1024;

/// A run's log: what the runner did and what the kind saw, kept on the host's record.
#[derive(Debug, Default)]
pub struct RunLog {
    lines: Mutex<Vec<String>>,
    concealed: Mutex<Vec<secrecy::SecretString>>,
}

impl RunLog {
    /// Adds a line (or several), each secret given to [`RunLog::conceal`] masked.
    pub fn line(&self, text: impl AsRef<str>) {
        use secrecy::ExposeSecret;
        let mut text = text.as_ref().to_owned();
        for secret in lock(&self.concealed).iter() {
            text = text.replace(secret.expose_secret(), crate::redact::MASK);
        }
        let mut lines = lock(&self.lines);
        lines.extend(text.lines().map(str::to_owned));
    }

    /// Masks `secret` (a password, a key the kind handed on) in every line added from now on: the
    /// whole of it, and each of its lines of 16 characters or more on its own.
    pub fn conceal(&self, secret: &str) {
        let lines = secret.lines().map(str::trim).filter(|l| l.len() >= 16);
        let mut concealed = lock(&self.concealed);
        for part in std::iter::once(secret).chain(lines) {
            if !part.is_empty() {
                concealed.push(part.to_owned().into());
            }
        }
    }

    /// The lines, the oldest dropped past [`LOG_LIMIT`] bytes.
    pub fn lines(&self) -> Vec<String> {
        let lines = lock(&self.lines);
        let mut kept = Vec::new();
        let mut size = 0;
        for line in lines.iter().rev() {
            size += line.len() + 1;
            if size > LOG_LIMIT {
                kept.push("[earlier lines dropped]".to_owned());
                break;
            }
            kept.push(line.clone());
        }
        kept.reverse();
        kept
    }
}

/// What a kind is given for one run.
pub struct HandoffContext<'a> {
    /// The host being handed off.
    pub host: &'a Host,
    /// The target, with its configuration.
    pub target: &'a Target,
    /// The limit on the run itself.
    pub run_timeout: Duration,
    /// The limit on reaching the host.
    pub connect_timeout: Duration,
    /// The run's log.
    pub log: &'a RunLog,
    /// The run's id ([`new_run_id`]): [`PrivateDir`]s are named by it and [`execute_logged`]
    /// marks the processes it starts with it, so that they can be stopped when the run is.
    pub run: &'a str,
}

impl HandoffContext<'_> {
    /// The host's session, connecting (within the connect timeout) on first use.
    ///
    /// # Errors
    /// [`StepError::Transport`] when the host cannot be reached in time.
    pub async fn session(&self) -> std::result::Result<Arc<dyn Session>, StepError> {
        match tokio::time::timeout(self.connect_timeout, self.host.session()).await {
            Ok(Ok(session)) => Ok(session),
            Ok(Err(e)) => Err(StepError::Transport(e)),
            Err(_) => Err(StepError::Transport(Error::Timeout {
                operation: format!("connecting to {}", self.host.display_name()),
                after: self.connect_timeout,
            })),
        }
    }
}

impl fmt::Debug for HandoffContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandoffContext")
            .field("host", &self.host.display_name())
            .field("target", &self.target.name)
            .finish_non_exhaustive()
    }
}

/// How a run ended, as recorded on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// The target's id (as `_broker_handoff_target` records it).
    pub target: String,
    /// The target's name.
    pub target_name: String,
    /// The state reached: handed off, pending or failed.
    pub state: HandoffState,
    /// Runs started (retries and re-checks included).
    pub attempts: u32,
    /// Why it is not handed off, when it is not.
    pub last_error: Option<String>,
    /// The run's log.
    pub log: Vec<String>,
}

impl RunReport {
    /// Writes the report onto a record (`_broker_handoff_*`).
    pub fn apply(&self, record: &mut HostRecord) {
        // The run is over: no process runs it, and a checkout it was part of has its answer.
        record.remove(fields::HANDOFF_RUNNER);
        record.remove(fields::HANDOFF_AT_CHECKOUT);
        record.remove(fields::HANDOFF_RUN);
        record.set(fields::HANDOFF_TARGET, self.target.clone());
        record.set(fields::HANDOFF_STATE, self.state.as_str());
        record.set(fields::HANDOFF_ATTEMPTS, u64::from(self.attempts));
        match &self.last_error {
            Some(e) => record.set(fields::HANDOFF_ERROR, e.clone()),
            None => {
                record.fields_mut().remove(fields::HANDOFF_ERROR);
            }
        }
        let log = self.log.iter().cloned().map(Value::String).collect();
        record.set(fields::HANDOFF_LOG, Value::Sequence(log));
    }

    /// The exit code of a command that ran this handoff: 0 when handed off, else that of a failed
    /// host operation (10).
    pub fn exit_code(&self) -> i32 {
        match self.state {
            HandoffState::HandedOff => 0,
            _ => Error::host(self.target.clone(), String::new()).exit_code(),
        }
    }

    /// The report as a mapping, for output.
    pub fn to_mapping(&self) -> Mapping {
        let mut record = HostRecord::default();
        self.apply(&mut record);
        record.fields().clone()
    }
}

/// The target `broker handoff run|retry HOST [--target T]` hands the host to: the one given, else
/// the one it was last handed to. A retry is of a handoff that did not succeed.
///
/// # Errors
/// [`Error::Usage`] when no target is given or recorded, and for a retry of a host handed off.
pub fn target_of(record: &HostRecord, given: Option<&str>, retry: bool) -> Result<String> {
    let host = record.display_name();
    if retry && HandoffState::of(record) == Some(HandoffState::HandedOff) && given.is_none() {
        return Err(Error::usage(format!(
            "host {host} is already handed off; run it again with `broker handoff run {host}`"
        )));
    }
    let recorded = record
        .get(fields::HANDOFF_TARGET)
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty());
    given.or(recorded).map(str::to_owned).ok_or_else(|| {
        Error::usage(format!(
            "host {host} has not been handed off; name a target with `--target` (`broker target list`)"
        ))
    })
}

/// A record's handoff fields (`broker handoff status`): target, state, attempts, last error and
/// log, under their field names; empty when the host was never handed off.
pub fn status_of(record: &HostRecord) -> Mapping {
    [
        fields::HANDOFF_TARGET,
        fields::HANDOFF_STATE,
        fields::HANDOFF_ATTEMPTS,
        fields::HANDOFF_ERROR,
        fields::HANDOFF_LOG,
    ]
    .into_iter()
    .filter_map(|key| Some((Value::from(key), record.get(key)?.clone())))
    .collect()
}

/// What to tell the user about a host kept although its handoff to `target` (its name) did not
/// succeed (a checkout with `keep_failed_handoff`): what it is, why, and how to look, retry or give
/// it back; `None` for a host handed off or never handed off.
pub fn kept_notice(record: &HostRecord, target: &str) -> Option<String> {
    let state = HandoffState::of(record).filter(|s| *s != HandoffState::HandedOff)?;
    let host = record.display_name();
    let reason = record
        .get(fields::HANDOFF_ERROR)
        .and_then(Value::as_str)
        .unwrap_or("no reason given");
    Some(format!(
        "kept host {host} although its handoff to `{target}` ended {state} ({reason}): `broker \
         handoff status {host}` shows its log, `broker handoff retry {host}` runs it again, \
         `broker checkin {host}` gives the host back"
    ))
}

/// Marks a record as being handed off to `target` by this process in the run `run` (before the
/// run starts, so a crash leaves it `handing_off`, naming the process that was running it and the
/// run, whose leftovers [`stop_leftovers`] then finds).
pub fn mark_handing_off(record: &mut HostRecord, target: &Target, run: &str) {
    record.set(fields::HANDOFF_TARGET, target.id.to_string());
    record.set(fields::HANDOFF_STATE, HandoffState::HandingOff.as_str());
    record.set(
        fields::HANDOFF_RUNNER,
        crate::record::Owner::current().to_value(),
    );
    record.set(fields::HANDOFF_RUN, run);
}

/// A fresh id for one handoff run: lower-case hex digits, safe in a file name and a shell word.
pub fn new_run_id() -> String {
    crate::record::RecordId::generate()
        .as_str()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// The id of the run a record says is under way ([`mark_handing_off`]); `None` when it names none
/// or one that is not a run id (the inventory is a file people edit).
pub fn recorded_run(record: &HostRecord) -> Option<&str> {
    record
        .get(fields::HANDOFF_RUN)
        .and_then(Value::as_str)
        .filter(|run| !run.is_empty() && run.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// Runs `kind` for `target` on `host`: connect within the connect timeout, run within the run
/// timeout, retry transport errors, re-check a pending outcome, as `target`'s [`RunPolicy`] says.
///
/// # Errors
/// [`Error::Configuration`] when the target's run settings are invalid (nothing is run then). How
/// the handoff went — failures included — is the report.
pub async fn run(kind: &dyn Handoff, host: &Host, target: &Target) -> Result<RunReport> {
    run_stoppable(kind, host, target, &new_run_id(), None).await
}

/// Runs `kind` as [`run`] does, as the run `run` ([`new_run_id`], recorded by
/// [`mark_handing_off`]), until `stop` is cancelled: then the run is dropped where it is, what it
/// started on the host is stopped and its files removed ([`stop_leftovers`]), and it ends
/// `handoff_failed`, interrupted.
///
/// # Errors
/// As [`run`].
pub async fn run_stoppable(
    kind: &dyn Handoff,
    host: &Host,
    target: &Target,
    run: &str,
    stop: Option<&crate::Cancellation>,
) -> Result<RunReport> {
    let policy = RunPolicy::of(target)?;
    let log = RunLog::default();
    let mut attempts = 0;
    let ended = {
        let runs = run_and_recheck(kind, host, target, run, &policy, &log, &mut attempts);
        match stop {
            Some(stop) => tokio::select! {
                ended = runs => ended,
                () = stop.cancelled() => interrupted(host, run, &policy, &log).await,
            },
            None => runs.await,
        }
    };
    let (state, last_error) = match ended {
        Outcome::Succeeded => (HandoffState::HandedOff, None),
        Outcome::Pending { reason } => (HandoffState::Pending, Some(reason)),
        Outcome::Failed { reason } => (HandoffState::Failed, Some(reason)),
    };
    log.line(format!("{state} after {attempts} attempt(s)"));
    Ok(RunReport {
        target: target.id.to_string(),
        target_name: target.name.clone(),
        state,
        attempts,
        last_error,
        log: log.lines(),
    })
}

/// The runs of one handoff: retried after transport errors, re-checked while pending.
async fn run_and_recheck(
    kind: &dyn Handoff,
    host: &Host,
    target: &Target,
    run: &str,
    policy: &RunPolicy,
    log: &RunLog,
    attempts: &mut u32,
) -> Outcome {
    let cx = context(host, target, policy, log, run);
    let mut rechecks = 0;
    loop {
        match run_with_retries(kind, &cx, policy, attempts).await {
            Outcome::Pending { reason } if rechecks < policy.rechecks => {
                rechecks += 1;
                log.line(format!(
                    "pending ({reason}); re-checking in {} ({rechecks} of {})",
                    crate::time::format::format_duration(policy.recheck_interval),
                    policy.rechecks
                ));
                tokio::time::sleep(policy.recheck_interval).await;
            }
            other => return other,
        }
    }
}

/// The end of a run that was asked to stop: what it started on the host is stopped and its files
/// removed.
async fn interrupted(host: &Host, run: &str, policy: &RunPolicy, log: &RunLog) -> Outcome {
    log.line("asked to stop: stopping the run");
    let cleaned = match stop_leftovers(host, Some(run), policy.connect_timeout).await {
        Ok(()) => "what it started on the host was stopped and its files removed".to_owned(),
        Err(e) => format!(
            "stopping what it started on the host failed ({}): look for {PRIVATE_DIR_PREFIX}{run}.* \
             in the host's temporary directory",
            crate::error::chain(&e)
        ),
    };
    let reason = format!("interrupted: the run was stopped before it ended; {cleaned}");
    log.line(&reason);
    Outcome::Failed { reason }
}

/// One run, tried again after a transport error up to `policy.retries` times.
async fn run_with_retries(
    kind: &dyn Handoff,
    cx: &HandoffContext<'_>,
    policy: &RunPolicy,
    attempts: &mut u32,
) -> Outcome {
    let mut retries = 0;
    loop {
        *attempts += 1;
        cx.log.line(format!(
            "attempt {attempts}: {} on {}",
            kind.name(),
            cx.host.display_name()
        ));
        let error = match kind.run(cx).await {
            Ok(outcome) => return outcome,
            Err(StepError::Fatal(e)) => return failed(cx.log, &e),
            Err(StepError::Transport(e)) => e,
        };
        if retries >= policy.retries {
            return failed(cx.log, &error);
        }
        retries += 1;
        cx.log.line(format!(
            "transport error: {}; retry {retries} of {} in {}",
            crate::error::chain(&error),
            policy.retries,
            crate::time::format::format_duration(policy.retry_delay)
        ));
        tokio::time::sleep(policy.retry_delay).await;
    }
}

fn failed(log: &RunLog, error: &Error) -> Outcome {
    let reason = crate::error::chain(error);
    log.line(format!("error: {reason}"));
    Outcome::Failed { reason }
}

fn context<'a>(
    host: &'a Host,
    target: &'a Target,
    policy: &RunPolicy,
    log: &'a RunLog,
    run: &'a str,
) -> HandoffContext<'a> {
    HandoffContext {
        host,
        target,
        run_timeout: policy.run_timeout,
        connect_timeout: policy.connect_timeout,
        log,
        run,
    }
}

/// Runs a kind's undo for `target` on `host` (before check-in).
///
/// # Errors
/// [`Error::Configuration`] for invalid run settings; the kind's error.
pub async fn undo(kind: &dyn Handoff, host: &Host, target: &Target) -> Result<()> {
    let policy = RunPolicy::of(target)?;
    let log = RunLog::default();
    let run = new_run_id();
    match kind.undo(&context(host, target, &policy, &log, &run)).await {
        Ok(()) => Ok(()),
        Err(StepError::Transport(e) | StepError::Fatal(e)) => Err(e),
    }
}

/// Runs `command` (`what` names it: "the handoff script") on the host within the run timeout, its
/// processes marked as the run's ([`RUN_ENV`] in their environment), and logs its output — line by line as it comes, where the session streams it, so that a run that
/// times out keeps what it printed — and its exit status.
///
/// # Errors
/// [`StepError::Fatal`], whatever went wrong: the command may have done part of its work. After
/// the run timeout its processes are stopped and the error says so.
pub async fn execute_logged(
    cx: &HandoffContext<'_>,
    session: &dyn Session,
    command: &str,
    what: &str,
) -> std::result::Result<crate::session::ExecOutput, StepError> {
    let lines = LogLines::new(cx.log);
    let sink = |stream: OutputStream, bytes: &[u8]| lines.push(stream, bytes);
    let marked = format!("{RUN_ENV}={run}; export {RUN_ENV}; {command}", run = cx.run);
    let result = session
        .execute_streaming(&marked, Some(cx.run_timeout), &sink)
        .await;
    lines.finish();
    let out = result.map_err(|e| match e {
        Error::Timeout { after, .. } => StepError::Fatal(Error::Timeout {
            operation: format!(
                "{what} on {} (its processes were stopped)",
                cx.host.display_name()
            ),
            after,
        }),
        other => StepError::Fatal(other),
    })?;
    cx.log.line(format!("exit status {}", out.status));
    Ok(out)
}

/// Streamed output cut into a run log's lines, each stream's on its own: a line goes into the log
/// once it is complete, and what is left of one when the command ends (or fails) at [`finish`].
///
/// [`finish`]: LogLines::finish
struct LogLines<'a> {
    log: &'a RunLog,
    /// The incomplete last line of stdout and of stderr.
    pending: Mutex<[Vec<u8>; 2]>,
}

impl<'a> LogLines<'a> {
    fn new(log: &'a RunLog) -> Self {
        LogLines {
            log,
            pending: Mutex::new([Vec::new(), Vec::new()]),
        }
    }

    fn push(&self, stream: OutputStream, bytes: &[u8]) {
        let mut pending = lock(&self.pending);
        let buffer = &mut pending[usize::from(stream == OutputStream::Stderr)];
        buffer.extend_from_slice(bytes);
        if let Some(end) = buffer.iter().rposition(|b| *b == b'\n') {
            let complete: Vec<u8> = buffer.drain(..=end).collect();
            self.log.line(String::from_utf8_lossy(&complete));
        }
    }

    fn finish(&self) {
        for buffer in lock(&self.pending).iter_mut() {
            if !buffer.is_empty() {
                self.log.line(String::from_utf8_lossy(buffer));
                buffer.clear();
            }
        }
    }
}

/// The time the small commands that make, fill and remove a [`PrivateDir`] may take.
const FILE_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// What a [`PrivateDir`]'s name starts with, in the host's temporary directory; the run's id and
/// a dot follow.
pub const PRIVATE_DIR_PREFIX: &str = "broker-handoff.";

/// The environment variable that marks the processes a run starts on the host with the run's id
/// (see [`execute_logged`]): inherited by everything they start, also by what leaves their
/// process tree.
pub const RUN_ENV: &str = "BROKER_HANDOFF_RUN";

/// A shell command that stops every process the handoff run `run` left on a host — those marked
/// with it ([`RUN_ENV`]), those whose command line names one of its [`PrivateDir`]s or that run in
/// one, with their children — and removes its directories (after the process that ran it was
/// killed). Nothing of another run is touched. `run` must be a run id ([`recorded_run`]). It needs
/// only `/proc` and a POSIX shell.
pub fn stop_leftovers_command(run: &str) -> String {
    format!(
        "kt() {{ for s in /proc/[0-9]*/stat; do read -r p c st pp r < \"$s\" 2>/dev/null || continue; \
         [ \"$pp\" = \"$1\" ] && kt \"$p\"; done; kill -9 \"$1\" 2>/dev/null; }}; \
         for s in /proc/[0-9]*; do p=${{s#/proc/}}; [ \"$p\" = \"$$\" ] && continue; \
         tr '\\0' '\\n' < \"$s/environ\" 2>/dev/null | grep -qxF '{RUN_ENV}={run}' && kt \"$p\"; done; \
         for d in \"${{TMPDIR:-/tmp}}\"/{PRIVATE_DIR_PREFIX}{run}.*; do [ -d \"$d\" ] || continue; \
         for s in /proc/[0-9]*; do p=${{s#/proc/}}; [ \"$p\" = \"$$\" ] && continue; \
         if tr '\\0' ' ' < \"$s/cmdline\" 2>/dev/null | grep -qF \"$d\" || \
         [ \"$(readlink \"$s/cwd\" 2>/dev/null)\" = \"$d\" ]; then kt \"$p\"; fi; done; \
         rm -rf -- \"$d\"; done"
    )
}

/// Runs [`stop_leftovers_command`] for the run `run` on `host` (connecting within
/// `connect_timeout`).
///
/// # Errors
/// No run is named (a record written by a broker before runs had ids: nothing is stopped, rather
/// than another run's processes), the host cannot be reached, or the command fails.
pub async fn stop_leftovers(
    host: &Host,
    run: Option<&str>,
    connect_timeout: Duration,
) -> Result<()> {
    let Some(run) = run.filter(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_alphanumeric()))
    else {
        return Err(Error::host(
            host.display_name(),
            "the record names no handoff run (`_broker_handoff_run`), so what it left cannot be \
             told from another run's",
        ));
    };
    let session = match tokio::time::timeout(connect_timeout, host.session()).await {
        Ok(session) => session?,
        Err(_) => {
            return Err(Error::Timeout {
                operation: format!("connecting to {}", host.display_name()),
                after: connect_timeout,
            });
        }
    };
    let out = session
        .execute(&stop_leftovers_command(run), Some(FILE_COMMAND_TIMEOUT))
        .await?;
    if out.success() {
        return Ok(());
    }
    Err(Error::host(
        host.display_name(),
        format!(
            "stopping what a handoff left on the host failed: {}",
            out.stderr.trim()
        ),
    ))
}

/// A directory only its owner can enter (`umask 077; mktemp -d`), made on the host for one run in
/// its temporary directory (`$TMPDIR`, else `/tmp`): scripts, metadata and secrets go in it, each
/// file `chmod`ed as asked (0600 for secrets), and [`PrivateDir::remove`] deletes it with
/// everything in it.
///
/// Its errors say whether trying again could help: the session failing is a
/// [`StepError::Transport`] (nothing ran yet), a command that ran and failed (`mktemp`, `chmod`)
/// a [`StepError::Fatal`] — the host refused, and would again.
#[derive(Debug)]
pub struct PrivateDir<'a> {
    session: &'a dyn Session,
    host: String,
    path: String,
}

impl<'a> PrivateDir<'a> {
    /// Makes the directory in the host's temporary directory, named by the run of `cx`.
    ///
    /// # Errors
    /// [`StepError::Transport`] with the session's error; [`StepError::Fatal`] with an
    /// [`Error::Host`] when `mktemp` fails or prints something else than a directory of its own.
    pub async fn create(
        session: &'a dyn Session,
        cx: &HandoffContext<'_>,
    ) -> std::result::Result<PrivateDir<'a>, StepError> {
        let host = &cx.host.display_name();
        let made = session
            .execute(
                &format!(
                    "umask 077 && mktemp -d \"${{TMPDIR:-/tmp}}/{PRIVATE_DIR_PREFIX}{}.XXXXXXXX\"",
                    cx.run
                ),
                Some(FILE_COMMAND_TIMEOUT),
            )
            .await
            .map_err(StepError::Transport)?;
        let path = made.stdout.trim();
        let named = path
            .rsplit('/')
            .next()
            .is_some_and(|name| name.starts_with(PRIVATE_DIR_PREFIX));
        if !made.success() || !path.starts_with('/') || !named || path.contains('\'') {
            return Err(StepError::Fatal(Error::host(
                host,
                format!(
                    "cannot make a private directory for the handoff (`mktemp -d` said: {})",
                    made.stderr.trim()
                ),
            )));
        }
        Ok(PrivateDir {
            session,
            host: host.to_owned(),
            path: path.to_owned(),
        })
    }

    /// The directory's path on the host.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The path of `name` in the directory.
    pub fn file(&self, name: &str) -> String {
        format!("{}/{name}", self.path)
    }

    /// Writes `name` into the directory with permission bits `mode` (e.g. `0o600`); returns its
    /// path.
    ///
    /// # Errors
    /// [`StepError::Transport`] with the session's error; [`StepError::Fatal`] with an
    /// [`Error::Host`] when `chmod` fails.
    pub async fn write(
        &self,
        name: &str,
        contents: &[u8],
        mode: u32,
    ) -> std::result::Result<String, StepError> {
        let path = self.file(name);
        self.session
            .write_file(&path, contents)
            .await
            .map_err(StepError::Transport)?;
        self.command(&format!("chmod {mode:o} '{path}'"), "setting the mode of")
            .await?;
        Ok(path)
    }

    /// Deletes the directory and everything in it.
    ///
    /// # Errors
    /// The session's error, or [`Error::Host`] when `rm` fails.
    pub async fn remove(self) -> Result<()> {
        match self
            .command(&format!("rm -rf -- '{}'", self.path), "removing")
            .await
        {
            Ok(()) => Ok(()),
            Err(StepError::Transport(e) | StepError::Fatal(e)) => Err(e),
        }
    }

    /// Deletes the directory as [`PrivateDir::remove`] does; when that fails, says so in `log`
    /// and as a warning, and the run's outcome stands.
    pub async fn remove_or_warn(self, log: &RunLog) {
        let host = self.host.clone();
        if let Err(e) = self.remove().await {
            let why = crate::error::chain(&e);
            tracing::warn!(host = %host, "a handoff left its files on the host: {why}");
            log.line(format!("could not remove the handoff's files: {why}"));
        }
    }

    async fn command(&self, command: &str, doing: &str) -> std::result::Result<(), StepError> {
        let out = self
            .session
            .execute(command, Some(FILE_COMMAND_TIMEOUT))
            .await
            .map_err(StepError::Transport)?;
        if out.success() {
            return Ok(());
        }
        Err(StepError::Fatal(Error::host(
            &self.host,
            format!("{doing} {}: {}", self.path, out.stderr.trim()),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handoff::fake::{self, Script};
    use std::collections::VecDeque;

    /// A kind that connects, then answers each run with the next of its outcomes.
    #[derive(Debug)]
    struct Replies(Mutex<VecDeque<std::result::Result<Outcome, &'static str>>>);

    impl Replies {
        fn of(outcomes: Vec<std::result::Result<Outcome, &'static str>>) -> Replies {
            Replies(Mutex::new(outcomes.into()))
        }
    }

    #[async_trait::async_trait]
    impl Handoff for Replies {
        fn name(&self) -> &str {
            "replies"
        }
        async fn run(&self, cx: &HandoffContext<'_>) -> std::result::Result<Outcome, StepError> {
            cx.session().await?;
            match lock(&self.0).pop_front() {
                Some(Ok(outcome)) => Ok(outcome),
                Some(Err(fatal)) => Err(StepError::Fatal(Error::host("fake", fatal))),
                None => Ok(Outcome::Failed {
                    reason: "run more often than the test expected".into(),
                }),
            }
        }
    }

    /// Prints a little on both streams, then times out.
    #[derive(Debug)]
    struct PrintsThenHangs;

    #[async_trait::async_trait]
    impl Session for PrintsThenHangs {
        async fn execute(
            &self,
            command: &str,
            timeout: Option<Duration>,
        ) -> Result<crate::session::ExecOutput> {
            self.execute_streaming(command, timeout, &|_, _| {}).await
        }
        async fn execute_streaming(
            &self,
            _command: &str,
            timeout: Option<Duration>,
            sink: crate::session::OutputSink<'_>,
        ) -> Result<crate::session::ExecOutput> {
            sink(OutputStream::Stdout, b"dir /tmp/x\nstarted");
            sink(OutputStream::Stderr, b"a warning\n");
            sink(OutputStream::Stdout, b" in 2s\nwaiting");
            Err(Error::Timeout {
                operation: "running it".into(),
                after: timeout.unwrap_or_default(),
            })
        }
        async fn read_file(&self, _path: &str) -> Result<Vec<u8>> {
            Ok(Vec::new())
        }
        async fn write_file(&self, _path: &str, _contents: &[u8]) -> Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_command_that_times_out_leaves_what_it_printed_in_the_log() {
        let (host, _) = fake::host(Script::default());
        let target = target();
        let policy = RunPolicy::of(&target).unwrap();
        let log = RunLog::default();
        let cx = context(&host, &target, &policy, &log, "r1");
        let err = execute_logged(&cx, &PrintsThenHangs, "sh it", "the handoff script")
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StepError::Fatal(Error::Timeout { .. })),
            "{err:?}"
        );
        assert_eq!(
            log.lines(),
            ["dir /tmp/x", "a warning", "started in 2s", "waiting"]
        );
    }

    /// A `sleep SECONDS` of this machine in `cwd`, its environment marked with the run `run`.
    fn sleeper(seconds: u32, cwd: &std::path::Path, run: &str) -> std::process::Child {
        std::process::Command::new("sleep")
            .arg(seconds.to_string())
            .current_dir(cwd)
            .env(RUN_ENV, run)
            .spawn()
            .unwrap()
    }

    #[test]
    fn stopping_what_a_run_left_stops_that_run_only() {
        let tmp = tempfile::tempdir().unwrap();
        let [a, b] = ["runa", "runb"].map(|run| {
            let dir = tmp.path().join(format!("{PRIVATE_DIR_PREFIX}{run}.x1"));
            std::fs::create_dir(&dir).unwrap();
            dir
        });
        // Each run has one process in its directory and one elsewhere, marked with the run.
        let mut left_by_a = [
            sleeper(4801, &a, "other"),
            sleeper(4802, tmp.path(), "runa"),
        ];
        let mut left_by_b = [
            sleeper(4803, &b, "other"),
            sleeper(4804, tmp.path(), "runb"),
        ];
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(stop_leftovers_command("runa"))
            .env("TMPDIR", tmp.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        for child in &mut left_by_a {
            let ended = child.wait().unwrap();
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&ended),
                Some(9)
            );
        }
        assert!(!a.exists(), "the recovered run's directory is left");
        for child in &mut left_by_b {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the other run was stopped"
            );
            child.kill().unwrap();
            child.wait().unwrap();
        }
        assert!(b.is_dir(), "the other run's directory was removed");
    }

    #[test]
    fn a_run_id_is_a_safe_word_and_a_record_names_one_only_when_it_is() {
        let run = new_run_id();
        assert!(
            !run.is_empty() && run.chars().all(|c| c.is_ascii_alphanumeric()),
            "{run}"
        );
        assert_ne!(run, new_run_id());
        let mut record = HostRecord::default();
        mark_handing_off(&mut record, &target(), &run);
        assert_eq!(recorded_run(&record), Some(run.as_str()));
        record.set(fields::HANDOFF_RUN, "x'; rm -rf /");
        assert_eq!(recorded_run(&record), None);
    }

    /// `broker handoff status` shows a record's handoff fields and nothing else; nothing for a
    /// host never handed off.
    #[test]
    fn the_status_of_a_handoff_is_its_records_handoff_fields() {
        let mut record = HostRecord::default();
        record.set("hostname", "h1");
        assert!(status_of(&record).is_empty());
        record.set(fields::HANDOFF_TARGET, "t1");
        record.set(fields::HANDOFF_STATE, "handoff_failed");
        record.set(fields::HANDOFF_ATTEMPTS, 2);
        record.set(fields::HANDOFF_ERROR, "exit 1");
        record.set(fields::HANDOFF_LOG, "/tmp/log");
        record.set(fields::HANDOFF_RUN, "abc");
        let want: Mapping = serde_yaml::from_str(
            "{_broker_handoff_target: t1, _broker_handoff_state: handoff_failed, \
             _broker_handoff_attempts: 2, _broker_handoff_error: exit 1, _broker_handoff_log: /tmp/log}",
        )
        .unwrap();
        assert_eq!(status_of(&record), want);
    }

    fn target() -> Target {
        fake::target(
            "tgt",
            "replies",
            &[(keys::RETRY_DELAY, "0s"), (keys::RECHECK_INTERVAL, "0s")],
        )
    }

    fn pending() -> Outcome {
        Outcome::Pending {
            reason: "unsigned".into(),
        }
    }

    #[tokio::test]
    async fn transport_errors_are_retried_as_often_as_the_target_says_then_the_handoff_fails() {
        let (host, seen) = fake::host(Script {
            failing_connects: 10,
            ..Script::default()
        });
        let kind = Replies::of(vec![Ok(Outcome::Succeeded)]);
        let report = run(
            &kind,
            &host,
            &fake::with(target(), keys::RETRIES, "2", false),
        )
        .await
        .unwrap();
        assert_eq!(report.state, HandoffState::Failed);
        assert_eq!(report.attempts, 3);
        assert_eq!(seen.lock().unwrap().connects, 3);
        assert_eq!(
            report.last_error.as_deref(),
            Some("host fake: connection refused")
        );
    }

    #[tokio::test]
    async fn a_transport_error_then_a_connect_hands_off_on_the_retry() {
        let (host, seen) = fake::host(Script {
            failing_connects: 1,
            ..Script::default()
        });
        let kind = Replies::of(vec![Ok(Outcome::Succeeded)]);
        let report = run(&kind, &host, &target()).await.unwrap();
        assert_eq!(
            (report.state, report.attempts, report.last_error),
            (HandoffState::HandedOff, 2, None)
        );
        assert_eq!(seen.lock().unwrap().connects, 2);
    }

    #[tokio::test]
    async fn a_failed_run_or_a_fatal_error_is_never_tried_again() {
        let (host, _) = fake::host(Script::default());
        let failed = Replies::of(vec![
            Ok(Outcome::Failed {
                reason: "exit 1".into(),
            }),
            Ok(Outcome::Succeeded),
        ]);
        let report = run(&failed, &host, &target()).await.unwrap();
        assert_eq!(
            (report.state, report.attempts, report.last_error.as_deref()),
            (HandoffState::Failed, 1, Some("exit 1"))
        );
        let fatal = Replies::of(vec![Err("lost mid-run"), Ok(Outcome::Succeeded)]);
        let report = run(&fatal, &host, &target()).await.unwrap();
        assert_eq!(
            (report.state, report.attempts, report.last_error.as_deref()),
            (HandoffState::Failed, 1, Some("host fake: lost mid-run"))
        );
    }

    #[tokio::test]
    async fn pending_is_re_checked_a_bounded_number_of_times() {
        let (host, _) = fake::host(Script::default());
        let kind = Replies::of(vec![Ok(pending()), Ok(pending()), Ok(pending())]);
        let report = run(
            &kind,
            &host,
            &fake::with(target(), keys::RECHECKS, "1", false),
        )
        .await
        .unwrap();
        assert_eq!(
            (report.state, report.attempts, report.last_error.as_deref()),
            (HandoffState::Pending, 2, Some("unsigned"))
        );
        assert_eq!(lock(&kind.0).len(), 1, "one outcome left unasked");

        let kind = Replies::of(vec![Ok(pending()), Ok(Outcome::Succeeded)]);
        let report = run(
            &kind,
            &host,
            &fake::with(target(), keys::RECHECKS, "3", false),
        )
        .await
        .unwrap();
        assert_eq!(
            (report.state, report.attempts),
            (HandoffState::HandedOff, 2)
        );
    }

    #[tokio::test]
    async fn invalid_run_settings_are_a_configuration_error_and_nothing_runs() {
        let (host, seen) = fake::host(Script::default());
        let kind = Replies::of(vec![Ok(Outcome::Succeeded)]);
        let err = run(
            &kind,
            &host,
            &fake::with(target(), keys::RUN_TIMEOUT, "soon", false),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Error::Configuration { .. }), "{err:?}");
        assert!(err.to_string().contains("`run_timeout`"), "{err}");
        let err = RunPolicy::of(&fake::with(target(), keys::RETRIES, "-1", false)).unwrap_err();
        assert!(err.to_string().contains("`retries`"), "{err}");
        assert_eq!(seen.lock().unwrap().connects, 0);
    }

    #[test]
    fn the_policy_has_defaults_for_what_the_target_leaves_out() {
        let policy = RunPolicy::of(&fake::target("tgt", "noop", &[])).unwrap();
        assert_eq!(
            policy,
            RunPolicy {
                connect_timeout: Duration::from_secs(60),
                run_timeout: Duration::from_secs(1800),
                retries: 3,
                retry_delay: Duration::from_secs(5),
                rechecks: 0,
                recheck_interval: Duration::from_secs(30),
            }
        );
    }

    #[test]
    fn a_report_is_written_onto_the_record_and_a_success_clears_the_last_error() {
        let mut record = HostRecord::default();
        let mut target = fake::target("prod", "noop", &[]);
        target.id = "prod".into();
        mark_handing_off(&mut record, &target, "r1");
        assert_eq!(HandoffState::of(&record), Some(HandoffState::HandingOff));
        let mut report = RunReport {
            target: "prod".into(),
            target_name: "prod".into(),
            state: HandoffState::Failed,
            attempts: 2,
            last_error: Some("exit 1".into()),
            log: vec!["a".into(), "b".into()],
        };
        assert_eq!(
            report.exit_code(),
            10,
            "a failed handoff is a failed host operation"
        );
        report.state = HandoffState::Pending;
        assert_eq!(report.exit_code(), 10);
        report.state = HandoffState::HandedOff;
        assert_eq!(report.exit_code(), 0);
        report.state = HandoffState::Failed;
        report.apply(&mut record);
        let yaml = serde_yaml::to_string(record.fields()).unwrap();
        assert_eq!(
            yaml,
            "_broker_handoff_target: prod\n_broker_handoff_state: handoff_failed\n\
             _broker_handoff_attempts: 2\n_broker_handoff_error: exit 1\n\
             _broker_handoff_log:\n- a\n- b\n"
        );
        report.state = HandoffState::HandedOff;
        report.last_error = None;
        report.apply(&mut record);
        assert_eq!(record.get(fields::HANDOFF_ERROR), None);
        assert_eq!(HandoffState::of(&record), Some(HandoffState::HandedOff));
        // The report shown to users is the fields it writes.
        let shown = serde_yaml::to_string(&report.to_mapping()).unwrap();
        assert_eq!(
            shown,
            "_broker_handoff_target: prod\n_broker_handoff_state: handed_off\n\
             _broker_handoff_attempts: 2\n_broker_handoff_log:\n- a\n- b\n"
        );
    }

    /// `broker handoff run|retry HOST` hands the host to the target given, else to the one it was
    /// last handed to; retrying a host handed off, or naming no target for a host never handed
    /// off, is a usage error saying what to do.
    #[test]
    fn a_handoff_goes_to_the_target_given_else_the_one_recorded() {
        let mut record = HostRecord::default();
        record.set("hostname", "h1");
        let of = |record: &HostRecord, given, retry| {
            target_of(record, given, retry).map_err(|e| (e.exit_code(), e.to_string()))
        };
        assert_eq!(of(&record, Some("t1"), false), Ok("t1".to_owned()));
        let never = "host h1 has not been handed off; name a target with `--target`";
        for retry in [false, true] {
            let (code, message) = of(&record, None, retry).unwrap_err();
            assert_eq!(code, 2, "a usage error");
            assert!(message.contains(never), "{message}");
        }
        record.set(fields::HANDOFF_TARGET, "");
        assert!(of(&record, None, false).is_err(), "an empty target is none");
        record.set(fields::HANDOFF_TARGET, "t9");
        record.set(fields::HANDOFF_STATE, HandoffState::Failed.as_str());
        assert_eq!(of(&record, None, true), Ok("t9".to_owned()));
        assert_eq!(of(&record, Some("t1"), true), Ok("t1".to_owned()));
        record.set(fields::HANDOFF_STATE, HandoffState::HandedOff.as_str());
        assert_eq!(of(&record, None, false), Ok("t9".to_owned()));
        assert_eq!(of(&record, Some("t1"), true), Ok("t1".to_owned()));
        let (code, message) = of(&record, None, true).unwrap_err();
        assert_eq!(code, 2);
        assert!(
            message.contains(
                "host h1 is already handed off; run it again with `broker handoff run h1`"
            ),
            "{message}"
        );
    }

    #[test]
    fn a_concealed_secret_is_masked_in_every_later_line() {
        let log = RunLog::default();
        log.conceal("");
        log.line("before hunter2");
        log.conceal("hunter2");
        log.line("ok: password=hunter2\nagain hunter2hunter2");
        assert_eq!(
            log.lines(),
            [
                "before hunter2",
                "ok: password=********",
                "again ****************"
            ]
        );
    }

    #[test]
    fn the_log_keeps_its_end() {
        let log = RunLog::default();
        log.line("first");
        log.line("x".repeat(LOG_LIMIT));
        log.line("last\nlines");
        assert_eq!(log.lines(), ["[earlier lines dropped]", "last", "lines"]);
        // Exactly the limit (each line with its newline) is kept whole.
        let log = RunLog::default();
        log.line("x".repeat(LOG_LIMIT - 3));
        log.line("y");
        let kept = log.lines();
        assert_eq!(
            (kept.len(), kept[0].len(), kept[1].as_str()),
            (2, LOG_LIMIT - 3, "y")
        );
        log.line("z");
        assert_eq!(log.lines(), ["[earlier lines dropped]", "y", "z"]);
    }

    #[test]
    fn an_unknown_kind_is_a_user_error_naming_the_kinds_there_are() {
        let registry = crate::handoff::kinds::builtin();
        let err = registry.get("salt").unwrap_err();
        assert_eq!(err.exit_code(), Error::user("").exit_code());
        // The kinds compiled in, whichever features are on: noop always.
        let names = registry.names();
        assert!(names.contains(&"noop"), "{names:?}");
        assert!(
            err.to_string()
                .contains(&format!("(it has: {});", names.join(", "))),
            "{err}"
        );
        assert_eq!(registry.get("noop").unwrap().name(), "noop");
    }

    #[test]
    fn a_secret_setting_reaches_the_host_but_never_an_error() {
        let target = fake::with(
            fake::target("tgt", "script", &[]),
            "run_timeout",
            "hunter2",
            true,
        );
        assert_eq!(setting(&target, "run_timeout"), Some("hunter2"));
        let err = RunPolicy::of(&target).unwrap_err();
        assert!(err.to_string().contains("`run_timeout`"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
