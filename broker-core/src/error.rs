//! The one public error type of broker and its mapping to process exit codes.
//!
//! Messages follow one house style: lowercase, no trailing period, never repeating the text of their
//! `source()` (a reporter that walks the chain prints each cause once), and where one can, they say what
//! to do next.
//!
//! Where a failure has a cause — an operating-system error, an engine's or an SSH library's error, a
//! panicked task — the cause is kept as the error's `source()` (boxed when its type belongs to a
//! crate broker does not want in its public API), the message says what failed and what to do, and
//! [`chain`] (or `{:?}`) shows why.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Result alias used across broker.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in broker.
///
/// Each variant maps to the exit code the Python broker used for the same kind of failure (see
/// [`Error::exit_code`]), so scripts that check `$?` keep working.
/// `{:?}` prints the message and each cause on a line of its own, so that a `?` in a `#[test]` says
/// what went wrong; [`chain`] gives the same on one line.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The command line or the library call was malformed (exit code 2).
    #[error("{}", shown(.message))]
    Usage {
        /// What was wrong and how to call it instead.
        message: String,
    },

    /// The request cannot be served as asked: unknown nick, no provider for the given arguments, a host
    /// that is not in the inventory (exit code 13).
    #[error("{}", shown(.message))]
    User {
        /// What was wrong and what to do.
        message: String,
    },

    /// A settings file or setting is invalid (exit code 8).
    #[error("configuration error: {}", shown(.message))]
    Configuration {
        /// What is wrong, naming the file or key.
        message: String,
        /// The underlying cause, e.g. why a file a setting names cannot be read.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// A YAML or JSON document could not be parsed (exit code 8 for settings, 1 for data files).
    #[error("cannot parse `{path}` at line {line}, column {column}: {}", shown(.message))]
    Parse {
        /// The file that failed to parse.
        path: PathBuf,
        /// One-based line of the problem (0 when unknown).
        line: usize,
        /// One-based column of the problem (0 when unknown).
        column: usize,
        /// The parser's description.
        message: String,
        /// Whether the file is a settings file (changes the exit code).
        settings: bool,
    },

    /// A filter expression is invalid.
    #[error(transparent)]
    Filter(#[from] FilterError),

    /// Reading or writing a local file or stream failed, or the operating system refused a resource
    /// (a runtime, a signal handler).
    #[error("{action}{}", path_suffix(path.as_deref()))]
    Io {
        /// What broker was doing, e.g. "writing inventory" or "writing to standard output".
        action: &'static str,
        /// The file concerned, when there is one.
        path: Option<PathBuf>,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The inventory could not record a change to hosts that were otherwise handled, e.g. a
    /// check-in (exit code 1, as for other inventory I/O). The message says what is left and how to
    /// finish.
    #[error("{message}")]
    InventoryUpdate {
        /// What could not be recorded, why, and what to run next.
        message: String,
    },

    /// Another process held the inventory lock (or that of another file broker shares the same
    /// way, `targets.yaml`) for longer than the configured wait.
    #[error(
        "{what} `{path}` is locked by another process ({holder}); gave up after {}; \
         raise `inventory_lock_timeout` if many processes share this {what}",
        crate::time::format::format_duration(*waited)
    )]
    InventoryLocked {
        /// The file locked: `inventory`, `handoff targets file`.
        what: &'static str,
        /// The lock file.
        path: PathBuf,
        /// Who holds it, as that process wrote it into the lock file.
        holder: String,
        /// How long broker waited.
        waited: Duration,
    },

    /// An inventory sync would remove many records at once (more than a few and more than half of
    /// the provider's, or all of them); nothing was changed (exit code 13).
    #[error(
        "syncing {provider} would remove {} of its {records} records: {}; nothing was changed; \
         if the provider really no longer has these hosts, sync again with `--force`",
        removing.len(),
        some_names(removing)
    )]
    SyncRefused {
        /// The provider (and instance) synced.
        provider: String,
        /// How many `ready` records of it the inventory holds.
        records: usize,
        /// The names of the records the sync would remove.
        removing: Vec<String>,
    },

    /// A provider failed (exit code 7).
    #[error("{provider}{}{}: {}", instance_suffix(instance.as_deref()), host_suffix(host.as_deref()), shown(.message))]
    Provider {
        /// The provider's name, e.g. `AnsibleTower`.
        provider: String,
        /// The provider instance, when one was chosen.
        instance: Option<String>,
        /// The host concerned, when there is one.
        host: Option<String>,
        /// What failed and what to do about it.
        message: String,
        /// The underlying cause.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// Credentials were refused (exit code 5).
    #[error("authentication failed: {}", shown(.message))]
    Authentication {
        /// Which method failed and against what.
        message: String,
        /// The underlying cause, e.g. the server's answer.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// The credentials are valid but lack a permission (exit code 6).
    #[error("permission denied: {}", shown(.message))]
    Permission {
        /// What was refused.
        message: String,
        /// The underlying cause, e.g. the server's answer.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// The provider does not implement the operation (exit code 9).
    #[error("{provider} does not support {operation}")]
    NotImplemented {
        /// The provider's name.
        provider: String,
        /// The operation, e.g. "extend".
        operation: String,
    },

    /// An operation on a checked-out host failed (exit code 10).
    #[error("host {host}: {}", shown(.message))]
    Host {
        /// The host's hostname or name.
        host: String,
        /// What failed.
        message: String,
        /// The underlying cause.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// Some hosts of a multi-host checkout failed.
    ///
    /// Unless the request asked to keep partial results, the hosts that were made have been checked in
    /// again (listed in `rolled_back`, or in `left` when that failed); otherwise they are in the
    /// inventory (listed in `kept`).
    #[error("{}", checkout_failed_message(*requested, failures, rolled_back, kept, left))]
    CheckoutFailed {
        /// How many hosts were asked for.
        requested: usize,
        /// Each failed checkout: its position (0-based) in the request and why it failed.
        failures: Vec<(usize, Error)>,
        /// Hosts that were made and checked in again.
        rolled_back: Vec<String>,
        /// Hosts that were made and kept (when partial results were asked for).
        kept: Vec<String>,
        /// Hosts that could not be given back, with why: made and not checked in again, or partly
        /// made by a failed checkout whose clean-up failed. They are still checked out, their records
        /// marked `releasing` (or left `pending`, for a checkout that failed).
        left: Vec<(String, Error)>,
    },

    /// Broker itself failed: a task panicked (a bug in broker or in a provider) or could not be
    /// joined (exit code 1, as the Python broker's unexpected exceptions).
    #[error("{}", shown(.message))]
    Internal {
        /// What was being done, e.g. "the checkout task failed".
        message: String,
        /// The panic or join failure.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// The operation was cancelled, e.g. by Ctrl-C (exit code 130).
    #[error("interrupted: {}", shown(.message))]
    Interrupted {
        /// What was left behind and how to clean it up.
        message: String,
    },

    /// A scenario failed: its file is invalid, a step failed, an `assert` did not hold or an `exit`
    /// asked for a non-zero code (exit code 16, as the Python broker's `ScenarioError`).
    #[error("{}", scenario_message(scenario, step.as_deref(), message))]
    Scenario {
        /// The scenario's name (its file's stem).
        scenario: String,
        /// The step that failed, when one did.
        step: Option<String>,
        /// What went wrong.
        message: String,
        /// The underlying cause, e.g. the host error of an `ssh` step.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// The operation did not finish in time.
    #[error("{} timed out after {}", shown(.operation), crate::time::format::format_duration(*after))]
    Timeout {
        /// What timed out.
        operation: String,
        /// The limit that was hit.
        after: Duration,
    },
}

/// `scenario `NAME` step `STEP`: MESSAGE`, without the step when none failed.
fn scenario_message(scenario: &str, step: Option<&str>, message: &str) -> String {
    match step {
        Some(step) => format!("scenario `{scenario}` step `{step}`: {}", shown(message)),
        None => format!("scenario `{scenario}`: {}", shown(message)),
    }
}

/// A filter that does not parse, with the column (1-based, in characters) where it goes wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    pub(crate) filter: String,
    pub(crate) column: usize,
    pub(crate) message: String,
}

impl FilterError {
    /// The 1-based column of the problem.
    pub fn column(&self) -> usize {
        self.column
    }

    /// What is wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid filter at column {}: {}\n  {}\n  {}^",
            self.column,
            self.message,
            self.filter,
            " ".repeat(self.column.saturating_sub(1))
        )
    }
}

impl std::error::Error for FilterError {}

/// A message as shown: credentials written into URLs in it (`https://user:pw@…`) are redacted, so a
/// password in a setting such as `base_url` never reaches a terminal, a log or an output file.
fn shown(message: &str) -> std::borrow::Cow<'_, str> {
    crate::redact::url_credentials(message)
}

/// Up to ten names, then how many more.
fn some_names(names: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut out = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        out.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    out
}

fn instance_suffix(instance: Option<&str>) -> String {
    instance.map(|i| format!("::{i}")).unwrap_or_default()
}

fn path_suffix(path: Option<&std::path::Path>) -> String {
    path.map(|p| format!(" `{}`", p.display()))
        .unwrap_or_default()
}

fn host_suffix(host: Option<&str>) -> String {
    host.map(|h| format!(" (host {h})")).unwrap_or_default()
}

fn checkout_failed_message(
    requested: usize,
    failures: &[(usize, Error)],
    rolled_back: &[String],
    kept: &[String],
    left: &[(String, Error)],
) -> String {
    use fmt::Write;
    let mut out = format!("{} of {requested} checkouts failed", failures.len());
    for (index, error) in failures {
        let _ = write!(out, "\n  #{}: {}", index + 1, crate::error::chain(error));
    }
    if !rolled_back.is_empty() {
        let _ = write!(out, "\n  checked in again: {}", rolled_back.join(", "));
    }
    if !kept.is_empty() {
        let _ = write!(out, "\n  kept in the inventory: {}", kept.join(", "));
    }
    if !left.is_empty() {
        let _ = write!(out, "\n  still checked out (giving them back failed):");
        for (name, error) in left {
            let _ = write!(out, "\n    {name}: {}", crate::error::chain(error));
        }
        let names: Vec<&str> = left.iter().map(|(n, _)| n.as_str()).collect();
        let _ = write!(
            out,
            "\n  release them with `broker checkin {}` (or `broker recover --all`)",
            names.join(" ")
        );
    }
    out
}

impl Error {
    /// The process exit code for this error, as the Python broker uses them.
    ///
    /// | code | meaning |
    /// |---|---|
    /// | 1 | general failure, including broker's own (a panicked task) |
    /// | 2 | usage |
    /// | 5 | authentication |
    /// | 6 | permission |
    /// | 7 | provider |
    /// | 8 | configuration |
    /// | 9 | not implemented |
    /// | 10 | host |
    /// | 13 | user |
    /// | 16 | scenario |
    /// | 130 | interrupted |
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage { .. } => 2,
            Error::User { .. } | Error::Filter(_) | Error::SyncRefused { .. } => 13,
            Error::Configuration { .. } => 8,
            Error::Parse { settings: true, .. } => 8,
            Error::Parse { .. }
            | Error::Io { .. }
            | Error::InventoryLocked { .. }
            | Error::InventoryUpdate { .. }
            | Error::Internal { .. } => 1,
            Error::Provider { .. } | Error::Timeout { .. } => 7,
            Error::Authentication { .. } => 5,
            Error::Permission { .. } => 6,
            Error::NotImplemented { .. } => 9,
            Error::Host { .. } => 10,
            Error::CheckoutFailed { failures, .. } => {
                failures.first().map(|(_, e)| e.exit_code()).unwrap_or(1)
            }
            Error::Interrupted { .. } => 130,
            Error::Scenario { .. } => 16,
        }
    }

    /// A usage error.
    pub fn usage(message: impl Into<String>) -> Self {
        Error::Usage {
            message: message.into(),
        }
    }

    /// A user error.
    pub fn user(message: impl Into<String>) -> Self {
        Error::User {
            message: message.into(),
        }
    }

    /// A configuration error.
    pub fn configuration(message: impl Into<String>) -> Self {
        Error::Configuration {
            message: message.into(),
            source: None,
        }
    }

    /// A provider error without a host or a source.
    pub fn provider(provider: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Provider {
            provider: provider.into(),
            instance: None,
            host: None,
            message: message.into(),
            source: None,
        }
    }

    /// A host error without a source.
    pub fn host(host: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Host {
            host: host.into(),
            message: message.into(),
            source: None,
        }
    }

    /// An internal failure: `message` says what was being done, `source` is the panic or join
    /// failure.
    pub fn internal(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Internal {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// Keeps `cause` as the `source()` of a configuration, authentication, permission, provider, host
    /// or internal error, whose message then says what failed without repeating why; other errors
    /// are returned unchanged.
    #[must_use]
    pub fn caused_by(mut self, cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        match &mut self {
            Error::Configuration { source, .. }
            | Error::Authentication { source, .. }
            | Error::Permission { source, .. }
            | Error::Provider { source, .. }
            | Error::Host { source, .. }
            | Error::Internal { source, .. }
            | Error::Scenario { source, .. } => *source = Some(cause.into()),
            _ => {}
        }
        self
    }

    /// Adds the provider instance to a provider error; other errors are returned unchanged.
    #[must_use]
    pub fn with_instance(mut self, name: &str) -> Self {
        if let Error::Provider { instance, .. } = &mut self {
            instance.get_or_insert_with(|| name.to_owned());
        }
        self
    }

    /// Adds the host to a provider error; other errors are returned unchanged.
    #[must_use]
    pub fn with_host(mut self, name: &str) -> Self {
        if let Error::Provider { host, .. } = &mut self {
            host.get_or_insert_with(|| name.to_owned());
        }
        self
    }

    /// A local I/O failure while doing `action` on `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: Some(path.into()),
            source,
        }
    }

    /// A local I/O failure while doing `action` on something that is not a file (a stream, a
    /// runtime, a signal handler): `action` says what, e.g. "writing to standard output".
    pub fn io_without_path(action: &'static str, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: None,
            source,
        }
    }

    pub(crate) fn parse(path: impl Into<PathBuf>, err: &serde_yaml::Error, settings: bool) -> Self {
        let (line, column) = err
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        Error::Parse {
            path: path.into(),
            line,
            column,
            message: strip_location(&err.to_string()),
            settings,
        }
    }
}

/// yaml_serde appends " at line L column C" to its messages; we report the location ourselves.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

impl fmt::Debug for Error {
    /// The message, then each cause not already in it on a line of its own, credentials in URLs
    /// redacted: what `?` in a `#[test]` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.to_string();
        f.write_str(&crate::redact::url(&shown))?;
        let mut source = std::error::Error::source(self);
        let mut first = true;
        while let Some(cause) = source {
            let text = cause.to_string();
            if !shown.ends_with(&text) {
                if first {
                    f.write_str("\n\ncaused by:")?;
                    first = false;
                }
                write!(f, "\n  {}", crate::redact::url(&text))?;
                shown.push_str(": ");
                shown.push_str(&text);
            }
            source = cause.source();
        }
        Ok(())
    }
}

/// Formats an error with all its causes, `outer: cause: cause`, credentials in URLs redacted (the
/// causes may come from other crates).
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    crate::redact::url(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_name_lists_are_cut_after_ten() {
        let names = |n: usize| (1..=n).map(|i| format!("h{i}")).collect::<Vec<_>>();
        assert_eq!(
            some_names(&names(10)),
            "h1, h2, h3, h4, h5, h6, h7, h8, h9, h10"
        );
        assert_eq!(
            some_names(&names(12)),
            "h1, h2, h3, h4, h5, h6, h7, h8, h9, h10 and 2 more"
        );
    }

    #[test]
    fn a_failed_checkout_says_only_what_happened() {
        let failures = [(1, Error::usage("no such image"))];
        let plain = checkout_failed_message(2, &failures, &["h1".into()], &[], &[]);
        assert_eq!(
            plain,
            "1 of 2 checkouts failed\n  #2: no such image\n  checked in again: h1"
        );
        let kept = checkout_failed_message(2, &failures, &[], &["h1".into()], &[]);
        assert_eq!(
            kept,
            "1 of 2 checkouts failed\n  #2: no such image\n  kept in the inventory: h1"
        );
    }

    #[test]
    fn provider_error_names_instance_and_host() {
        let err = Error::provider(
            "TestProvider",
            "release failed; retry with `broker checkin`",
        )
        .with_instance("test1")
        .with_host("h1.example.com");
        assert_eq!(
            err.to_string(),
            "TestProvider::test1 (host h1.example.com): release failed; retry with `broker checkin`"
        );
        assert_eq!(err.exit_code(), 7);
    }

    #[test]
    fn exit_codes_match_upstream() {
        assert_eq!(Error::usage("x").exit_code(), 2);
        assert_eq!(Error::user("x").exit_code(), 13);
        assert_eq!(Error::configuration("x").exit_code(), 8);
        assert_eq!(
            Error::Authentication {
                message: "x".into(),
                source: None,
            }
            .exit_code(),
            5
        );
        assert_eq!(
            Error::NotImplemented {
                provider: "p".into(),
                operation: "extend".into()
            }
            .exit_code(),
            9
        );
    }

    #[test]
    fn internal_failures_exit_1_not_as_user_errors() {
        let err = Error::internal("the checkout task failed", "task 7 panicked");
        assert_eq!(err.exit_code(), 1);
        assert_eq!(err.to_string(), "the checkout task failed");
        assert_eq!(chain(&err), "the checkout task failed: task 7 panicked");
    }

    #[test]
    fn a_cause_is_kept_as_the_source_and_shown_once_in_the_chain() {
        let os = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let errors = [
            (
                Error::provider("Container", "inspecting image x").caused_by(os()),
                "Container: inspecting image x: no such file",
            ),
            (
                Error::host("h1", "reading /etc/hosts").caused_by(os()),
                "host h1: reading /etc/hosts: no such file",
            ),
            (
                Error::Authentication {
                    message: "logging in".into(),
                    source: None,
                }
                .caused_by(os()),
                "authentication failed: logging in: no such file",
            ),
            (
                Error::Permission {
                    message: "listing job templates".into(),
                    source: None,
                }
                .caused_by(os()),
                "permission denied: listing job templates: no such file",
            ),
            (
                Error::configuration("`verify: /ca.pem`: cannot read the CA bundle")
                    .caused_by(os()),
                "configuration error: `verify: /ca.pem`: cannot read the CA bundle: no such file",
            ),
            (
                Error::Internal {
                    message: "the inventory task failed".into(),
                    source: None,
                }
                .caused_by(os()),
                "the inventory task failed: no such file",
            ),
        ];
        for (err, shown) in &errors {
            let source = std::error::Error::source(err).expect("the cause is the source");
            assert_eq!(source.to_string(), "no such file");
            assert!(!err.to_string().contains("no such file"), "{err}");
            assert_eq!(chain(err), *shown);
        }
        // Errors without a place for a cause are left as they were.
        let user = Error::user("x").caused_by(os());
        assert!(std::error::Error::source(&user).is_none());
    }

    #[test]
    fn chain_walks_every_level_once() {
        let inner = Error::io("reading inventory", "/tmp/inventory.yaml", {
            std::io::Error::new(std::io::ErrorKind::PermissionDenied, "permission denied")
        });
        let outer = Error::provider("TestProvider", "listing hosts").caused_by(inner);
        assert_eq!(
            chain(&outer),
            "TestProvider: listing hosts: reading inventory `/tmp/inventory.yaml`: permission denied"
        );
        // A message that already ends with its cause's text (as older ones did) does not repeat it.
        let flat = Error::provider("TestProvider", "listing hosts: permission denied").caused_by(
            std::io::Error::new(std::io::ErrorKind::PermissionDenied, "permission denied"),
        );
        assert_eq!(
            chain(&flat),
            "TestProvider: listing hosts: permission denied"
        );
    }

    #[test]
    fn io_without_a_path_names_no_pseudo_path() {
        let err = Error::io_without_path(
            "writing to standard output",
            std::io::Error::other("disk full"),
        );
        assert_eq!(err.to_string(), "writing to standard output");
        assert_eq!(chain(&err), "writing to standard output: disk full");
        assert_eq!(err.exit_code(), 1);
        let file = Error::io(
            "writing inventory",
            "/b/inventory.yaml",
            std::io::Error::other("x"),
        );
        assert_eq!(file.to_string(), "writing inventory `/b/inventory.yaml`");
    }

    #[test]
    fn debug_shows_the_message_and_each_cause_not_a_struct() {
        let inner = Error::io("reading inventory", "/b/inventory.yaml", {
            std::io::Error::new(std::io::ErrorKind::PermissionDenied, "permission denied")
        });
        let err = Error::provider(
            "TestProvider",
            "listing hosts at https://u:hunter2@x.example/",
        )
        .caused_by(inner);
        assert_eq!(
            format!("{err:?}"),
            "TestProvider: listing hosts at https://***@x.example/\n\n\
             caused by:\n  \
             reading inventory `/b/inventory.yaml`\n  \
             permission denied"
        );
        // Without a cause, just the message.
        assert_eq!(format!("{:?}", Error::user("no such host")), "no such host");
        // What a `?` in a `#[test]` returning `Result<(), Error>` prints on failure.
        fn step(fail: bool) -> Result<()> {
            match fail {
                true => Err(Error::host("h1", "starting `ls`").caused_by("channel closed")),
                false => Ok(()),
            }
        }
        fn a_test() -> Result<()> {
            step(false)?;
            step(true)?;
            Ok(())
        }
        let shown = format!("{:?}", a_test().expect_err("the second step fails"));
        assert_eq!(
            shown,
            "host h1: starting `ls`\n\ncaused by:\n  channel closed"
        );
    }

    #[test]
    fn checkout_failed_lists_each_failure() {
        let err = Error::CheckoutFailed {
            requested: 3,
            failures: vec![(2, Error::provider("TestProvider", "injected failure"))],
            rolled_back: vec!["a".into(), "b".into()],
            kept: vec![],
            left: vec![],
        };
        let text = err.to_string();
        assert!(text.starts_with("1 of 3 checkouts failed"), "{text}");
        assert!(
            text.contains("#3: TestProvider: injected failure"),
            "{text}"
        );
        assert!(text.contains("checked in again: a, b"), "{text}");
        assert_eq!(err.exit_code(), 7);
    }

    #[test]
    fn no_message_shows_a_password_written_into_a_url() {
        let url = "https://alice:hunter2@tower.example.com/api/v2/";
        let text = format!("cannot reach `{url}`");
        let source: Box<dyn std::error::Error + Send + Sync> = text.clone().into();
        let errors = [
            Error::usage(&text),
            Error::user(&text),
            Error::configuration(&text),
            Error::provider("AnsibleTower", &text),
            Error::Provider {
                provider: "AnsibleTower".into(),
                instance: None,
                host: None,
                message: "listing".into(),
                source: Some(source),
            },
            Error::Authentication {
                message: text.clone(),
                source: None,
            },
            Error::Permission {
                message: text.clone(),
                source: None,
            },
            Error::Host {
                host: "h".into(),
                message: text.clone(),
                source: None,
            },
            Error::Interrupted {
                message: text.clone(),
            },
            Error::Timeout {
                operation: text.clone(),
                after: Duration::from_secs(1),
            },
            Error::Parse {
                path: "broker_settings.yaml".into(),
                line: 1,
                column: 1,
                message: text.clone(),
                settings: true,
            },
            Error::CheckoutFailed {
                requested: 1,
                failures: vec![(0, Error::provider("AnsibleTower", &text))],
                rolled_back: vec![],
                kept: vec![],
                left: vec![],
            },
        ];
        for e in &errors {
            let shown = chain(e);
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(
                shown.contains("https://***@tower.example.com/api/v2/") || shown == "listing",
                "{shown}"
            );
        }
    }
}
