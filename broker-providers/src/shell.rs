//! Small POSIX shell snippets shared by the sessions that run commands through `sh`.

/// A fresh path for the pid file of one command.
pub(crate) fn pid_marker() -> String {
    format!("/tmp/.broker-exec-{}", broker_core::RecordId::generate())
}

/// The environment variable that marks every process of one command with its marker (see
/// [`marking`]): it is inherited by everything the command starts, also what leaves its process
/// group, session or parent (`setsid`, a daemon's double fork), so [`kill_tree`] finds those too.
pub(crate) const MARKER_ENV: &str = "BROKER_EXEC_MARKER";

/// Shell words that mark the processes of the command after them with `marker` ([`MARKER_ENV`]).
/// (TestProvider's local session sets the variable itself.)
#[cfg(any(feature = "container", feature = "ssh"))]
pub(crate) fn marking(marker: &str) -> String {
    format!("{MARKER_ENV}={marker}; export {MARKER_ENV}; ")
}

/// Kills the process trees whose root pids are in `marker`, children first (found through `/proc`, so
/// no `ps` or `pkill` is needed on the host), then every process still marked with `marker` (the
/// ones that left the tree), then removes the marker.
pub(crate) fn kill_tree(marker: &str) -> String {
    format!(
        "kt() {{ for s in /proc/[0-9]*/stat; do read -r p c st pp r < \"$s\" 2>/dev/null || continue; \
         [ \"$pp\" = \"$1\" ] && kt \"$p\"; done; kill -9 \"$1\" 2>/dev/null; }}; \
         for p in $(cat {marker} 2>/dev/null); do kt \"$p\"; done; \
         for s in /proc/[0-9]*; do p=${{s#/proc/}}; [ \"$p\" = \"$$\" ] && continue; \
         tr '\\0' '\\n' < \"$s/environ\" 2>/dev/null | grep -qxF '{MARKER_ENV}={marker}' && kt \"$p\"; \
         done; rm -f {marker}"
    )
}
