//! Processes of this machine as `/proc` shows them: which machine this is, when a process started,
//! which boot this is. A leaf: it depends on nothing else in broker-core. Its [`local`] module runs
//! commands on this machine in process groups of their own.
//!
//! A pid alone does not name a process for long: pids are reused. A process is told from a later
//! one with its pid by its start time (clock ticks since boot, field 22 of `/proc/PID/stat`) and by
//! the boot it started in (`/proc/sys/kernel/random/boot_id`).

#[cfg(any(
    feature = "handoff-ansible",
    feature = "handoff-puppet",
    feature = "scenario"
))]
pub(crate) mod local;

/// Whether a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// It runs.
    Alive,
    /// It ran on this machine and is gone (its pid is free, or another process has it); or, on
    /// another machine, its lease in a shared store ran out.
    Gone,
    /// It runs on another machine, or this machine cannot tell: presumed alive.
    Unknown,
}

/// The variable that names this machine instead of its host name.
pub const MACHINE_ENV: &str = "BROKER_MACHINE";

/// This machine's name: `$BROKER_MACHINE` when set (workers in containers that share a host
/// name, tests posing as several machines), else the kernel's host name, else `/etc/hostname`,
/// else `$HOSTNAME`, else `localhost`.
pub(crate) fn machine_name() -> String {
    if let Some(name) = std::env::var(MACHINE_ENV).ok().filter(|s| !s.is_empty()) {
        return name;
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The start time of process `pid` in clock ticks since boot. `None` when no such process runs, or
/// it is a zombie (it has exited; its parent has not collected it yet).
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    start_ticks_of(&stat)
}

/// The start time in a `/proc/PID/stat` line, counted after the command name (which may hold spaces
/// and parentheses).
fn start_ticks_of(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut rest = after_name.split_whitespace();
    // Field 3 is the state; the start time is field 22, the 20th after the name.
    if rest.next()? == "Z" {
        return None;
    }
    rest.nth(18)?.parse().ok()
}

/// This boot's identity.
pub fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(id.trim().to_owned()).filter(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boot_id_is_the_kernels_without_its_line_break() {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
        let id = boot_id().unwrap();
        assert_eq!(format!("{id}\n"), kernel);
        assert_eq!(id.len(), 36, "{id}");
    }

    #[test]
    fn start_times_come_from_the_stat_line_after_the_command_name() {
        // A command name with spaces and a parenthesis must not shift the fields.
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 \
                    987654 1000 100 18446744073709551615";
        assert_eq!(start_ticks_of(stat), Some(987_654));
        let zombie = "4242 (x) Z 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 987654";
        assert_eq!(start_ticks_of(zombie), None);
        assert_eq!(start_ticks_of("garbage"), None);
        assert!(start_ticks(std::process::id()).is_some());
        assert!(boot_id().is_some());
    }
}
