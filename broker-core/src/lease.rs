//! Leases and reaping: when a host is due back, who holds it, and which records a reaper gives back.
//!
//! Every host broker checks out can carry a **lease** — the time it is due back, kept on its record as
//! `_broker_expire_time` (seconds since the epoch, as the Python broker's `*_time` fields) — and has
//! a **holder**:
//!
//! - a *process*: a [`HostGuard`](crate::HostGuard) alive in the process that checked the host out
//!   (the record says `_broker_guarded: true`). When that process is gone without dropping its guards
//!   (`kill -9`, `abort()`, `std::process::exit`), nobody will give the host back but a reaper;
//! - its *user*: a CLI checkout, a guard's `keep()`, a host kept by `keep_on_failure`, every record
//!   the Python broker wrote. Such a host outlives the process that made it on purpose and goes back
//!   only by hand or when its lease ends.
//!
//! A process is told from a later one with the same pid by its start time (`/proc/PID/stat`) and the
//! boot it started in (`/proc/sys/kernel/random/boot_id`), both recorded with the owner, so a reused
//! pid is not mistaken for the owner still running.
//!
//! This module owns those notions and the choice of what to reap ([`reap_reason`],
//! [`select_for_reap`]): pure functions over records, a clock and a way to tell whether a process
//! lives. It must not touch the inventory or a provider; the lifecycle does that.

use std::fmt;
use std::time::Duration;

use serde_yaml::{Mapping, Value};

use crate::error::{Error, Result};
use crate::process::Liveness;
use crate::record::{HostRecord, HostState, Owner};

/// Field and argument names of leases and reaping.
pub mod fields {
    /// The argument (in a nick, an args file, on the command line) and provider setting giving a
    /// checkout's lease: `lease: 2h`.
    pub const LEASE: &str = "lease";
    /// `true` while a [`HostGuard`](crate::HostGuard) of the owning process holds the host (broker
    /// only); absent when its user holds it.
    pub const GUARDED: &str = "_broker_guarded";
    /// The process giving the host back for a reap (broker only): it claims the record so that a
    /// second reaper leaves it alone.
    pub const REAPER: &str = "_broker_reaper";
}

/// How long a host may stay checked out.
///
/// ```
/// use broker_core::lease::Lease;
///
/// let lease = Lease::parse("2h").unwrap();
/// assert_eq!(lease.expire_time(1_000), 1_000 + 7_200);
/// assert!(Lease::parse("0").is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lease(Duration);

impl Lease {
    /// The longest lease broker gives: a year. A longer one is refused, not shortened: a lease
    /// that never ends is no lease (`keep()` a host, or check it out from the CLI, to hold it
    /// until it is checked in by hand).
    pub const MAX: Duration = Duration::from_secs(365 * 86_400);

    /// A lease of `duration` (1 s to [`Lease::MAX`]).
    ///
    /// # Errors
    /// [`Error::Usage`] for a lease shorter than a second, which would end before the host is made,
    /// or longer than [`Lease::MAX`].
    pub fn new(duration: Duration) -> Result<Self> {
        if duration < Duration::from_secs(1) {
            return Err(Error::usage(
                "a lease of 0 ends before the host is made; give 1s or more (`30m`, `2h`)",
            ));
        }
        if duration > Lease::MAX {
            let max = crate::time::format_duration(Lease::MAX);
            return Err(Error::usage(format!(
                "a lease of {} is longer than the longest broker gives ({max}); give {max} or \
                 less, or leave the lease out to hold the host until it is checked in",
                crate::time::format_duration(duration),
            )));
        }
        Ok(Lease(duration))
    }

    /// A lease as people write it: `90` (seconds), `45s`, `30m`, `2h`, `1d`, `1h30m`.
    ///
    /// # Errors
    /// [`Error::Usage`] naming the text when it is not a duration, or is 0.
    pub fn parse(text: &str) -> Result<Self> {
        Lease::new(crate::time::parse_duration(text)?)
    }

    /// A lease from a nick's, an args file's or a setting's value: a whole number of seconds or text.
    ///
    /// # Errors
    /// [`Error::Usage`] when the value is no duration.
    pub fn from_value(value: &Value) -> Result<Self> {
        match crate::value::scalar_text(value) {
            Some(text) => Lease::parse(&text),
            None => Err(Error::usage(format!(
                "`lease` must be a duration (`30m`, `2h`), not `{}`",
                crate::value::to_json(value)
            ))),
        }
    }

    /// How long the lease lasts.
    pub fn duration(self) -> Duration {
        self.0
    }

    /// When a lease starting at `now` (seconds since the epoch) ends.
    pub fn expire_time(self, now: i64) -> i64 {
        // At most a year: the conversion cannot fail, nor the sum overflow for any real `now`.
        now.saturating_add(i64::try_from(self.0.as_secs()).unwrap_or(i64::MAX))
    }
}

impl fmt::Display for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::time::format_duration(self.0))
    }
}

/// The lease a checkout asks for, from its arguments (`lease`, taken out: it is broker's, not the
/// provider's) or else its provider section's `lease` setting.
///
/// # Errors
/// [`Error::Usage`] when either is not a duration.
pub fn take_lease(args: &mut Mapping, section: Option<&Value>) -> Result<Option<Lease>> {
    match args.shift_remove(fields::LEASE) {
        Some(Value::Null) | None => section
            .filter(|v| !v.is_null())
            .map(Lease::from_value)
            .transpose(),
        Some(v) => Lease::from_value(&v).map(Some),
    }
}

/// The process reaping a record (`_broker_reaper`), when one claimed it.
pub fn reaper_of(record: &HostRecord) -> Option<Owner> {
    serde_yaml::from_value(record.get(fields::REAPER)?.clone()).ok()
}

/// Whether a guard of the owning process holds the host (`_broker_guarded: true`).
pub fn is_guarded(record: &HostRecord) -> bool {
    record.get(fields::GUARDED).and_then(Value::as_bool) == Some(true)
}

/// The record as a reaper claims it: `releasing`, naming the reaping process.
pub fn claimed(record: &HostRecord, reaper: &Owner) -> HostRecord {
    let mut claimed = record.clone();
    claimed.set(fields::REAPER, reaper.to_value());
    claimed.set_state(HostState::Releasing);
    claimed
}

/// Why a reaper gives a host back.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReapReason {
    /// Its lease ended at this time (seconds since the epoch).
    LeaseExpired {
        /// When.
        at: i64,
    },
    /// The process holding it is gone without giving it back.
    OwnerGone {
        /// The owner's pid.
        pid: u32,
    },
    /// The provider holds it for this inventory, labelled with a record identity no record has,
    /// since this time (seconds since the epoch) — longer than the grace period.
    Orphan {
        /// When the provider made it.
        made: i64,
    },
    /// Not a reason to give the host back but to leave it: its lease cannot be read
    /// ([`HostRecord::unreadable_expire_time`]). A reap of ended leases reports such a host (its
    /// result is `None`) so that someone mends the record; it never checks it in.
    LeaseUnreadable {
        /// The lease as the record has it.
        value: String,
    },
}

impl fmt::Display for ReapReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReapReason::LeaseExpired { at } => {
                write!(f, "its lease ended {}", crate::time::format_epoch(*at))
            }
            ReapReason::OwnerGone { pid } => {
                write!(f, "the process holding it (pid {pid}) is gone")
            }
            ReapReason::Orphan { made } => write!(
                f,
                "no inventory record knows it; made {}",
                crate::time::format_epoch(*made)
            ),
            ReapReason::LeaseUnreadable { value } => write!(
                f,
                "its lease `{}: {value}` is not seconds since the epoch, so it never \
                 ends; give it a new one (`broker extend HOST --lease 2h`) or check it in",
                crate::record::fields::EXPIRE_TIME
            ),
        }
    }
}

impl ReapReason {
    /// A short name for programs: `lease-expired`, `owner-gone`, `orphan`, `lease-unreadable`.
    pub fn kind(&self) -> &'static str {
        match self {
            ReapReason::LeaseExpired { .. } => "lease-expired",
            ReapReason::OwnerGone { .. } => "owner-gone",
            ReapReason::Orphan { .. } => "orphan",
            ReapReason::LeaseUnreadable { .. } => "lease-unreadable",
        }
    }

    /// Whether the reap leaves the host rather than giving it back ([`ReapReason::LeaseUnreadable`]).
    pub fn is_skip(&self) -> bool {
        matches!(self, ReapReason::LeaseUnreadable { .. })
    }
}

/// Which records a reap looks at.
///
/// ```
/// use broker_core::lease::ReapScope;
///
/// let everything = ReapScope::default();
/// assert!(everything.expired && everything.owner_gone);
/// let one_process = ReapScope::left_by(4242);
/// assert_eq!(one_process.owner_pid, Some(4242));
/// assert!(!one_process.expired);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReapScope {
    /// Hosts whose lease ended.
    pub expired: bool,
    /// Hosts whose holding process is gone: its guarded hosts, and records it left `pending` or
    /// `releasing`.
    pub owner_gone: bool,
    /// Only hosts of this process of this machine (a watcher's process).
    pub owner_pid: Option<u32>,
}

impl Default for ReapScope {
    /// Expired leases and hosts of gone processes, whoever they are.
    fn default() -> Self {
        ReapScope {
            expired: true,
            owner_gone: true,
            owner_pid: None,
        }
    }
}

impl ReapScope {
    /// Only hosts whose lease ended.
    pub fn expired() -> Self {
        ReapScope {
            owner_gone: false,
            ..ReapScope::default()
        }
    }

    /// Only hosts whose holding process is gone.
    pub fn owner_gone() -> Self {
        ReapScope {
            expired: false,
            ..ReapScope::default()
        }
    }

    /// Only what process `pid` of this machine left when it went (what `broker reap --watch PID`
    /// gives back).
    pub fn left_by(pid: u32) -> Self {
        ReapScope {
            expired: false,
            owner_gone: true,
            owner_pid: Some(pid),
        }
    }
}

/// Why `record` is to be reaped at `now` (seconds since the epoch), or `None` to leave it.
///
/// `liveness` tells whether a process runs ([`Owner::liveness`] outside tests). The rules:
///
/// - a record a live process is reaping (this one included) is left to it; one whose reaper is gone
///   is reaped again;
/// - a `pending` or `releasing` record of a process not known to be gone is a checkout or a check-in
///   under way: left alone, whatever its lease;
/// - a record whose lease has ended is reaped, whoever holds it;
/// - a record whose owning process is gone is reaped when that process held it: a guarded `ready`
///   record, or one it left `pending` or `releasing`. A `ready` record its user holds (a CLI
///   checkout, a kept guard) stays until its lease ends or someone checks it in.
pub fn reap_reason(
    record: &HostRecord,
    now: i64,
    scope: ReapScope,
    liveness: &dyn Fn(&Owner) -> Liveness,
) -> Option<ReapReason> {
    let reaper = reaper_of(record);
    if let Some(reaper) = &reaper
        && liveness(reaper) != Liveness::Gone
    {
        return None;
    }
    let owner = record.owner();
    if let Some(pid) = scope.owner_pid
        && owner
            .as_ref()
            .is_none_or(|o| o.pid != pid || o.machine != Owner::current().machine)
    {
        return None;
    }
    let owner_gone = owner
        .as_ref()
        .is_some_and(|o| liveness(o) == Liveness::Gone);
    // A reap that was started and whose reaper is gone (or is this process) is finished, whatever
    // the state it left; anything else not `ready` is the owner's own work under way.
    if record.state() != HostState::Ready && !owner_gone && reaper.is_none() {
        return None;
    }
    if scope.expired
        && let Some(at) = record.expire_time()
        && at <= now
    {
        return Some(ReapReason::LeaseExpired { at });
    }
    // A host whose checkout's handoff has not ended is not handed out yet: still its process's.
    let held_by_process = record.state() != HostState::Ready
        || is_guarded(record)
        || crate::record::checkout_handing_off(record);
    if scope.owner_gone && owner_gone && held_by_process {
        return owner.map(|o| ReapReason::OwnerGone { pid: o.pid });
    }
    None
}

/// The records of `records` to reap at `now`, with why, in inventory order (see [`reap_reason`]).
pub fn select_for_reap(
    records: &[HostRecord],
    now: i64,
    scope: ReapScope,
    liveness: &dyn Fn(&Owner) -> Liveness,
) -> Vec<(HostRecord, ReapReason)> {
    records
        .iter()
        .filter_map(|r| Some((r.clone(), reap_reason(r, now, scope, liveness)?)))
        .collect()
}

/// The records of `records` a reap of ended leases (`scope.expired`) looks at and leaves because
/// their lease cannot be read, in inventory order, unless [`reap_reason`] picks them for another
/// reason (their owner is gone) — to be reported, never reaped.
pub fn select_unreadable(
    records: &[HostRecord],
    now: i64,
    scope: ReapScope,
    liveness: &dyn Fn(&Owner) -> Liveness,
) -> Vec<(HostRecord, ReapReason)> {
    if !scope.expired {
        return Vec::new();
    }
    records
        .iter()
        .filter(|r| reap_reason(r, now, scope, liveness).is_none())
        .filter_map(|r| {
            let value = r.unreadable_expire_time()?;
            Some((r.clone(), ReapReason::LeaseUnreadable { value }))
        })
        .collect()
}

/// The hosts of a provider's `listed` hosts that are orphans at `now`: each carries a record
/// identity (`_broker_id`, from the label broker put on it) that none of `known` has, and was made
/// (`_broker_checkout_time`, from the provider) `grace` or longer ago. A host without an identity
/// (the Python broker's, or made by hand) or without a known age is never an orphan; nor is one
/// younger than the grace period, which may be a checkout of another process whose record the
/// caller read too early.
pub fn select_orphans(
    listed: Vec<HostRecord>,
    known: &[HostRecord],
    now: i64,
    grace: Duration,
) -> Vec<(HostRecord, ReapReason)> {
    let known: std::collections::HashSet<_> = known.iter().map(HostRecord::id).collect();
    let grace = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
    listed
        .into_iter()
        .filter(|host| host.has_broker_id() && !known.contains(&host.id()))
        .filter_map(|host| {
            let made = host.checkout_time()?;
            (made <= now.saturating_sub(grace)).then_some((host, ReapReason::Orphan { made }))
        })
        .collect()
}

/// What a lease has left at `now`, for the inventory's countdown: `1h 59m`, or `expired`. Whole
/// minutes, rounded up: a lease with seconds left has a minute left, not none.
pub fn remaining(expire_time: i64, now: i64) -> String {
    match u64::try_from(expire_time.saturating_sub(now)) {
        Ok(left) if left > 0 => crate::time::format_duration_human(left.div_ceil(60) * 60),
        _ => "expired".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 2_000_000_000;

    fn record(yaml: &str) -> HostRecord {
        serde_yaml::from_str(yaml).unwrap()
    }

    /// A record owned by `pid` on this machine, started at tick 100 of boot `b1`, with `extra` fields.
    fn owned(pid: u32, extra: &str) -> HostRecord {
        let machine = &Owner::current().machine;
        record(&format!(
            "{{_broker_id: h{pid}, _broker_provider: TestProvider, hostname: host{pid}, \
             _broker_owner: {{user: me, machine: '{machine}', pid: {pid}, started: 100, boot: b1}}{extra}}}"
        ))
    }

    /// Processes 1 to 9 run; every other pid is gone.
    fn low_pids_live(p: &Owner) -> Liveness {
        if p.pid < 10 {
            Liveness::Alive
        } else {
            Liveness::Gone
        }
    }

    fn reason(r: &HostRecord) -> Option<ReapReason> {
        reap_reason(r, NOW, ReapScope::default(), &low_pids_live)
    }

    #[test]
    fn leases_parse_as_durations_and_end_after_them() {
        assert_eq!(Lease::parse("2h").unwrap().expire_time(NOW), NOW + 7200);
        assert_eq!(
            Lease::parse("90").unwrap().duration(),
            Duration::from_secs(90)
        );
        assert_eq!(Lease::parse("1h30m").unwrap().to_string(), "1h 30m");
        let zero = Lease::parse("0s").unwrap_err();
        assert_eq!(zero.exit_code(), 2);
        assert!(zero.to_string().contains("give 1s or more"), "{zero}");
        let bad = Lease::parse("soon").unwrap_err();
        assert!(
            bad.to_string().contains("`soon` is not a duration"),
            "{bad}"
        );
        assert_eq!(
            Lease::from_value(&Value::from(60)).unwrap().duration(),
            Duration::from_secs(60)
        );
        // Longer than the maximum is refused and names it, never shortened.
        assert_eq!(Lease::parse("365d").unwrap().duration(), Lease::MAX);
        for long in ["366d", "8761h", "99999999999999999"] {
            let e = Lease::parse(long).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{long}");
            assert!(
                e.to_string()
                    .contains("is longer than the longest broker gives (365d); give 365d or less"),
                "{long}: {e}"
            );
        }
        for negative in ["-5m", "-1"] {
            let e = Lease::parse(negative).unwrap_err();
            assert!(e.to_string().contains("is not a duration"), "{e}");
        }
        let list = Lease::from_value(&serde_yaml::from_str("[1, 2]").unwrap()).unwrap_err();
        assert!(list.to_string().contains("must be a duration"), "{list}");
    }

    #[test]
    fn a_lease_argument_is_taken_out_and_wins_over_the_provider_section() {
        let mut args: Mapping = serde_yaml::from_str("{lease: 30m, test_action: basic}").unwrap();
        let lease = take_lease(&mut args, Some(&Value::from("2h"))).unwrap();
        assert_eq!(lease, Some(Lease::parse("30m").unwrap()));
        assert!(!args.contains_key("lease"), "a provider never sees it");
        assert_eq!(args.len(), 1);
        let from_section = take_lease(&mut args, Some(&Value::from("2h"))).unwrap();
        assert_eq!(from_section, Some(Lease::parse("2h").unwrap()));
        assert_eq!(take_lease(&mut args, None).unwrap(), None);
        assert_eq!(take_lease(&mut args, Some(&Value::Null)).unwrap(), None);
        let mut bad: Mapping = serde_yaml::from_str("{lease: forever}").unwrap();
        assert!(take_lease(&mut bad, None).is_err());
    }

    #[test]
    fn an_expired_lease_is_reaped_whoever_holds_the_host() {
        let held_by_user = owned(3, &format!(", _broker_expire_time: {NOW}"));
        assert_eq!(
            reason(&held_by_user),
            Some(ReapReason::LeaseExpired { at: NOW })
        );
        let guarded_live = owned(
            3,
            &format!(", _broker_guarded: true, _broker_expire_time: {}", NOW - 5),
        );
        assert_eq!(
            reason(&guarded_live),
            Some(ReapReason::LeaseExpired { at: NOW - 5 })
        );
        let python = record(&format!(
            "{{hostname: legacy, _broker_expire_time: {}}}",
            NOW - 1
        ));
        assert_eq!(
            reason(&python),
            Some(ReapReason::LeaseExpired { at: NOW - 1 })
        );
        let running = owned(3, &format!(", _broker_expire_time: {}", NOW + 1));
        assert_eq!(reason(&running), None, "a lease that has not ended");
    }

    #[test]
    fn a_gone_process_loses_what_it_held_not_what_its_user_holds() {
        let guarded = owned(4242, ", _broker_guarded: true");
        assert_eq!(reason(&guarded), Some(ReapReason::OwnerGone { pid: 4242 }));
        let pending = owned(4242, ", _broker_state: pending");
        assert_eq!(reason(&pending), Some(ReapReason::OwnerGone { pid: 4242 }));
        let releasing = owned(4242, ", _broker_state: releasing");
        assert_eq!(
            reason(&releasing),
            Some(ReapReason::OwnerGone { pid: 4242 })
        );
        let kept = owned(4242, "");
        assert_eq!(reason(&kept), None, "a CLI checkout or a kept guard");
        let unguarded = owned(4242, ", _broker_guarded: false");
        assert_eq!(reason(&unguarded), None);
        assert_eq!(reason(&record("{hostname: python-broker}")), None);
    }

    #[test]
    fn a_live_owners_hosts_are_never_touched_without_an_ended_lease() {
        for extra in [
            ", _broker_guarded: true",
            ", _broker_state: pending",
            ", _broker_state: releasing",
            "",
        ] {
            assert_eq!(reason(&owned(3, extra)), None, "{extra}");
        }
        // A checkout or check-in under way is left alone even when its lease has ended.
        let expired = format!(", _broker_expire_time: {}", NOW - 60);
        for state in ["pending", "releasing"] {
            let busy = owned(3, &format!(", _broker_state: {state}{expired}"));
            assert_eq!(reason(&busy), None, "{state}");
        }
        // An owner on another machine is presumed alive.
        let elsewhere = record(
            "{_broker_guarded: true, _broker_owner: {user: me, machine: far-away, pid: 4242}}",
        );
        let unknown = |p: &Owner| p.liveness();
        assert_eq!(
            reap_reason(&elsewhere, NOW, ReapScope::default(), &unknown),
            None
        );
    }

    #[test]
    fn a_record_another_live_reaper_claimed_is_left_to_it() {
        let guarded = owned(4242, ", _broker_guarded: true");
        let by_live = claimed(
            &guarded,
            &Owner {
                user: "other".into(),
                machine: Owner::current().machine.clone(),
                pid: 5,
                started: Some(1),
                boot: Some("b1".into()),
            },
        );
        assert_eq!(by_live.state(), HostState::Releasing);
        assert_eq!(reason(&by_live), None);
        let by_gone = claimed(
            &guarded,
            &Owner {
                user: "other".into(),
                machine: Owner::current().machine.clone(),
                pid: 4243,
                started: Some(1),
                boot: None,
            },
        );
        assert_eq!(reason(&by_gone), Some(ReapReason::OwnerGone { pid: 4242 }));
        // This process's own reap under way (another task of it) is left to it as well.
        let by_me = claimed(&guarded, Owner::current());
        let real = |p: &Owner| p.liveness();
        assert_eq!(reap_reason(&by_me, NOW, ReapScope::default(), &real), None);
        // A reap of an ended lease whose reaper died is finished by the next, though the owner runs.
        let expired = owned(3, &format!(", _broker_expire_time: {NOW}"));
        let gone_reaper = Owner {
            user: "other".into(),
            machine: Owner::current().machine.clone(),
            pid: 4244,
            started: None,
            boot: None,
        };
        let left_half_done = claimed(&expired, &gone_reaper);
        assert_eq!(
            reason(&left_half_done),
            Some(ReapReason::LeaseExpired { at: NOW })
        );
    }

    #[test]
    fn scopes_pick_by_reason_and_by_process() {
        let expired = owned(3, &format!(", _broker_expire_time: {}", NOW - 1));
        let orphan = owned(4242, ", _broker_guarded: true");
        let other_orphan = owned(4343, ", _broker_state: pending");
        let records = [expired.clone(), orphan.clone(), other_orphan.clone()];
        let picked = |scope| -> Vec<String> {
            select_for_reap(&records, NOW, scope, &low_pids_live)
                .into_iter()
                .map(|(r, why)| format!("{} {}", r.display_name(), why.kind()))
                .collect()
        };
        assert_eq!(
            picked(ReapScope::default()),
            [
                "host3 lease-expired",
                "host4242 owner-gone",
                "host4343 owner-gone"
            ]
        );
        assert_eq!(picked(ReapScope::expired()), ["host3 lease-expired"]);
        assert_eq!(
            picked(ReapScope::owner_gone()),
            ["host4242 owner-gone", "host4343 owner-gone"]
        );
        assert_eq!(picked(ReapScope::left_by(4343)), ["host4343 owner-gone"]);
        assert!(picked(ReapScope::left_by(3)).is_empty(), "process 3 runs");
    }

    #[test]
    fn a_lease_that_cannot_be_read_is_reported_by_a_reap_of_ended_leases_never_reaped() {
        let garbage = owned(3, ", _broker_expire_time: garbage");
        let gone_guarded = owned(4242, ", _broker_guarded: true, _broker_expire_time: soon");
        let fine = owned(3, &format!(", _broker_expire_time: {}", NOW + 60));
        let records = [garbage.clone(), gone_guarded.clone(), fine];
        assert_eq!(reason(&garbage), None, "never reaped for its lease");
        let skipped = select_unreadable(&records, NOW, ReapScope::default(), &low_pids_live);
        assert_eq!(
            skipped,
            [(
                garbage.clone(),
                ReapReason::LeaseUnreadable {
                    value: "garbage".into()
                }
            )],
            "the gone owner's host is reaped for that, not skipped"
        );
        assert!(skipped[0].1.is_skip());
        assert_eq!(skipped[0].1.kind(), "lease-unreadable");
        assert_eq!(
            skipped[0].1.to_string(),
            "its lease `_broker_expire_time: garbage` is not seconds since the epoch, so it never \
             ends; give it a new one (`broker extend HOST --lease 2h`) or check it in"
        );
        assert_eq!(
            select_for_reap(&records, NOW, ReapScope::default(), &low_pids_live),
            [(gone_guarded, ReapReason::OwnerGone { pid: 4242 })]
        );
        for scope in [ReapScope::owner_gone(), ReapScope::left_by(3)] {
            assert!(select_unreadable(&records, NOW, scope, &low_pids_live).is_empty());
        }
    }

    #[test]
    fn an_orphan_is_a_listed_host_of_no_record_older_than_the_grace() {
        let known = owned(3, "");
        let host = |id: &str, made: Option<i64>| {
            let mut h = HostRecord::default();
            if !id.is_empty() {
                h.set(crate::record::fields::ID, id);
            }
            h.set(crate::record::fields::NAME, format!("c-{id}"));
            if let Some(made) = made {
                h.set(crate::record::fields::CHECKOUT_TIME, made);
            }
            h
        };
        let listed = vec![
            host("h3", Some(NOW - 3600)),
            host("old", Some(NOW - 600)),
            host("young", Some(NOW - 599)),
            host("ageless", None),
            host("", Some(NOW - 3600)),
        ];
        let picked = select_orphans(listed, &[known], NOW, Duration::from_secs(600));
        let names: Vec<(String, ReapReason)> = picked
            .into_iter()
            .map(|(h, why)| (h.display_name(), why))
            .collect();
        assert_eq!(
            names,
            [("c-old".to_owned(), ReapReason::Orphan { made: NOW - 600 })]
        );
        assert_eq!(ReapReason::Orphan { made: NOW }.kind(), "orphan");
    }

    #[test]
    fn reasons_and_countdowns_read_well() {
        assert_eq!(
            ReapReason::OwnerGone { pid: 7 }.to_string(),
            "the process holding it (pid 7) is gone"
        );
        assert_eq!(
            ReapReason::LeaseExpired { at: 1_765_804_090 }.to_string(),
            "its lease ended Dec 15, 2025 13:08 UTC"
        );
        assert_eq!(
            ReapReason::Orphan {
                made: 1_765_804_090
            }
            .to_string(),
            "no inventory record knows it; made Dec 15, 2025 13:08 UTC"
        );
        assert_eq!(remaining(NOW + 7_140, NOW), "1h 59m");
        assert_eq!(remaining(NOW + 7_141, NOW), "2h");
        assert_eq!(remaining(NOW + 1, NOW), "1m");
        assert_eq!(remaining(NOW + 2 * 86_400 + 60, NOW), "2d 1m");
        assert_eq!(remaining(NOW, NOW), "expired");
        assert_eq!(remaining(NOW - 5, NOW), "expired");
    }
}
