//! Small POSIX shell snippets shared by the sessions that run commands through `sh`.

/// A fresh path for the pid file of one command.
pub(crate) fn pid_marker() -> String {
    format!("/tmp/.broker-exec-{}", broker_core::RecordId::generate())
}

/// Kills the process trees whose root pids are in `marker`, children first (found through `/proc`, so
/// no `ps` or `pkill` is needed on the host), then removes the marker.
pub(crate) fn kill_tree(marker: &str) -> String {
    format!(
        "kt() {{ for s in /proc/[0-9]*/stat; do read -r p c st pp r < \"$s\" 2>/dev/null || continue; \
         [ \"$pp\" = \"$1\" ] && kt \"$p\"; done; kill -9 \"$1\" 2>/dev/null; }}; \
         for p in $(cat {marker} 2>/dev/null); do kt \"$p\"; done; rm -f {marker}"
    )
}
