//! Reaping's results, and the watcher that reaps when a process ends.
//!
//! What a reap picks is [`crate::lease`]'s choice; claiming and checking in is the lifecycle's
//! ([`Broker::reap`](crate::Broker::reap)). This module holds what a reap reports ([`Reaped`]) and the
//! watcher: [`spawn_watcher`] starts `broker reap --watch PID` for this process, which waits until the
//! process ends ([`Broker::watch`](crate::Broker::watch)) and then gives back what it held.

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::lease::ReapReason;
use crate::process::Liveness;
use crate::record::{HostRecord, Owner};

/// What a reap did with one host.
#[derive(Debug)]
#[non_exhaustive]
pub struct Reaped {
    /// The host's record as the reap found it.
    pub record: HostRecord,
    /// Why it was picked.
    pub reason: ReapReason,
    /// How its check-in went; `None` when nothing was done: a dry run, or a host the reap leaves
    /// ([`ReapReason::is_skip`]: its lease cannot be read).
    pub result: Option<Result<()>>,
}

impl Reaped {
    /// A host a dry run picked, or one a reap leaves.
    pub(crate) fn picked((record, reason): (HostRecord, ReapReason)) -> Self {
        Reaped {
            record,
            reason,
            result: None,
        }
    }

    /// A host a reap checked in (or tried to).
    pub(crate) fn done((record, reason): (HostRecord, ReapReason), result: Result<()>) -> Self {
        Reaped {
            record,
            reason,
            result: Some(result),
        }
    }
}

/// How often a watcher looks whether its process still runs.
pub(crate) const WATCH_POLL: Duration = Duration::from_millis(250);

/// Waits until `process` has ended, looking every `poll`.
pub(crate) async fn wait_until_gone(process: &Owner, poll: Duration) {
    while process.liveness() != Liveness::Gone {
        tokio::time::sleep(poll).await;
    }
}

/// Starts a watcher for this process: `program reap --watch <this pid>` (`program` is the `broker`
/// binary), over the inventory in `directory`. It outlives this process, however this process ends
/// (`kill -9`, `abort()`, `std::process::exit`), and then checks in within about a second what this
/// process held — its guards' hosts and checkouts under way — and exits. Hosts handed to the user
/// (`keep()`) stay. When this process ends having dropped its guards, the watcher finds nothing to
/// do.
///
/// ```no_run
/// # fn demo(settings: &broker_core::Settings) -> broker_core::Result<()> {
/// // Once, at the start of a test suite:
/// let _watcher = broker_core::reap::spawn_watcher("broker", settings.directory())?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`Error::Io`] when the program cannot be started (not installed, not on `PATH`).
pub fn spawn_watcher(program: impl AsRef<OsStr>, directory: &Path) -> Result<std::process::Child> {
    use std::process::{Command, Stdio};
    let program = program.as_ref();
    Command::new(program)
        .args(["reap", "--watch", &std::process::id().to_string()])
        .env("BROKER_DIRECTORY", directory)
        .stdin(Stdio::null())
        // Not the test harness's pipes: a harness waits for whoever holds them.
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            Error::io_without_path(
                "starting the reap watcher (`broker reap --watch`); install broker or give the path of its binary",
                e,
            )
        })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[tokio::test]
    async fn a_watcher_waits_until_its_process_has_ended() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.5")
            .spawn()
            .unwrap();
        let process = Owner {
            pid: child.id(),
            started: None,
            boot: None,
            ..Owner::current().clone()
        };
        wait_until_gone(&process, Duration::from_millis(10)).await;
        // Ended (a zombie until reaped here), not merely looked at.
        assert!(child.try_wait().unwrap().is_some());
    }
    use crate::inventory::{InventoryStore, ProviderListing, SyncReport, YamlFileStore};
    use crate::lease::{Lease, ReapScope};
    use crate::provider::{CheckoutContext, Provider, ProviderKind};
    use crate::record::{HostState, RecordId, fields};
    use crate::{Broker, CheckoutRequest, Mapping, ProviderRegistry, RecoverScope, Settings};

    /// What the ledger provider of one broker directory saw: hosts checked in, leases told.
    #[derive(Default, Clone)]
    struct Seen {
        checked_in: Vec<String>,
        leases: Vec<Option<i64>>,
    }

    static LEDGER: Mutex<Option<HashMap<PathBuf, Seen>>> = Mutex::new(None);

    fn seen(dir: &Path) -> Seen {
        crate::sync::lock(&LEDGER)
            .get_or_insert_with(HashMap::new)
            .get(dir)
            .cloned()
            .unwrap_or_default()
    }

    fn note(dir: &Path, change: impl FnOnce(&mut Seen)) {
        let mut ledger = crate::sync::lock(&LEDGER);
        change(
            ledger
                .get_or_insert_with(HashMap::new)
                .entry(dir.to_owned())
                .or_default(),
        );
    }

    /// Names hosts `l<index>`; notes, per broker directory, the leases it is told and the hosts it
    /// checks in.
    #[derive(Debug)]
    struct Ledger(PathBuf);

    #[async_trait::async_trait]
    impl Provider for Ledger {
        fn name(&self) -> &str {
            "Ledger"
        }
        fn instance(&self) -> Option<&str> {
            None
        }
        async fn checkout(&self, ctx: &CheckoutContext<'_>) -> Result<Mapping> {
            note(&self.0, |s| s.leases.push(ctx.expire_time()));
            let mut fields = Mapping::new();
            fields.insert("hostname".into(), format!("l{}", ctx.index()).into());
            Ok(fields)
        }
        async fn checkin(&self, host: &HostRecord) -> Result<()> {
            if host.display_name().starts_with("hanging-") {
                std::future::pending::<()>().await;
            }
            note(&self.0, |s| s.checked_in.push(host.display_name()));
            Ok(())
        }
    }

    fn broker_with(dir: &Path, settings: &str, store: Option<Arc<dyn InventoryStore>>) -> Broker {
        let settings = Settings::from_yaml(dir, settings).unwrap();
        let kind = ProviderKind::new("Ledger", "test", |config| {
            Ok(Arc::new(Ledger(config.directory().to_owned())))
        })
        .checkout_actions(&["ledger_action"]);
        let registry = ProviderRegistry::new().with(kind);
        match store {
            Some(store) => Broker::with_store(settings, registry, store).unwrap(),
            None => Broker::new(settings, registry).unwrap(),
        }
    }

    fn ask() -> CheckoutRequest {
        CheckoutRequest::new().arg("ledger_action", "x")
    }

    /// A record of the Ledger provider named `name`, owned by `owner`, a guard's or not.
    fn left_by(owner: &Owner, name: &str, state: HostState, guarded: bool) -> HostRecord {
        let mut r = HostRecord::pending("Ledger", None, Mapping::new());
        r.set(fields::OWNER, owner.to_value());
        r.set(fields::HOSTNAME, name);
        if guarded {
            r.set(crate::lease::fields::GUARDED, true);
        }
        r.set_state(state);
        r
    }

    fn gone() -> Owner {
        Owner {
            pid: 3_999_999_999,
            ..Owner::current().clone()
        }
    }

    fn names(records: &[HostRecord]) -> Vec<String> {
        let mut names: Vec<String> = records.iter().map(HostRecord::display_name).collect();
        names.sort();
        names
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_guard_holds_its_host_for_this_process_until_kept() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker_with(dir.path(), "{}", None);
        let mut guards = broker.checkout(ask().count(2)).await.unwrap();
        let stored = broker.inventory().list().unwrap();
        assert!(stored.iter().all(crate::lease::is_guarded), "{stored:?}");
        assert_eq!(names(&broker.leftovers().unwrap()), ["l0", "l1"]);
        let kept = guards.remove(0).keep();
        let stored = broker.inventory().list().unwrap();
        let kept_now = stored.iter().find(|r| r.id() == kept.id()).unwrap();
        assert!(!crate::lease::is_guarded(kept_now), "kept: its user's now");
        assert_eq!(names(&broker.leftovers().unwrap()), ["l1"]);
        drop(guards);
        assert!(broker.leftovers().unwrap().is_empty());
        assert_eq!(names(&broker.inventory().list().unwrap()), ["l0"]);
        // Hosts handed to their user from the start are not a guard's.
        let held = broker.checkout(ask().held_by_user(true)).await.unwrap();
        let record = held[0].record().clone();
        assert!(!crate::lease::is_guarded(&record));
        assert!(broker.leftovers().unwrap().is_empty());
        drop(held);
    }

    #[tokio::test]
    async fn a_lease_is_recorded_and_told_to_the_provider() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker_with(dir.path(), "{}", None);
        let before = crate::time::now_epoch();
        let guard = broker
            .checkout_one(ask().lease(Lease::parse("2h").unwrap()))
            .await
            .unwrap();
        let after = crate::time::now_epoch();
        let at = guard.record().expire_time().unwrap();
        assert!((before + 7200..=after + 7200).contains(&at), "{at}");
        assert_eq!(seen(dir.path()).leases, [Some(at)]);
        let stored = broker.inventory().list().unwrap();
        assert_eq!(stored[0].expire_time(), Some(at));
        guard.checkin().await.unwrap();
    }

    #[tokio::test]
    async fn extend_moves_brokers_lease_for_a_provider_without_an_extend_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker_with(dir.path(), "{}", None);
        let guard = broker.checkout_one(ask().held_by_user(true)).await.unwrap();
        let record = broker.inventory().list().unwrap().remove(0);
        let plain = broker.extend(vec![record.clone()], Mapping::new()).await;
        let e = plain[0].result.as_ref().unwrap_err();
        assert_eq!(e.exit_code(), 9, "{e}");
        let mut args = Mapping::new();
        args.insert("lease".into(), "3h".into());
        let before = crate::time::now_epoch();
        let extended = broker.extend(vec![record.clone()], args).await;
        assert!(extended[0].result.is_ok(), "{:?}", extended[0].result);
        let at = broker.inventory().list().unwrap()[0].expire_time().unwrap();
        assert!(
            (before + 10_800..=crate::time::now_epoch() + 10_800).contains(&at),
            "{at}"
        );
        let mut bad = Mapping::new();
        bad.insert("lease".into(), "0".into());
        let refused = broker.extend(vec![record], bad).await;
        assert_eq!(refused[0].result.as_ref().unwrap_err().exit_code(), 2);
        assert_eq!(
            broker.inventory().list().unwrap()[0].expire_time(),
            Some(at)
        );
        guard.checkin().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_first_checkout_gives_back_what_gone_processes_held_unless_switched_off() {
        let dir = tempfile::tempdir().unwrap();
        let live = Owner::current();
        let left = [
            left_by(&gone(), "guarded-of-gone", HostState::Ready, true),
            left_by(&gone(), "pending-of-gone", HostState::Pending, false),
            left_by(&gone(), "kept-of-gone", HostState::Ready, false),
            left_by(live, "guarded-of-live", HostState::Ready, true),
        ];
        let off = broker_with(dir.path(), "reap_on_start: false\n", None);
        off.inventory().put(&left).unwrap();
        drop(off.checkout_one(ask()).await.unwrap());
        assert!(seen(dir.path()).checked_in.iter().all(|n| n == "l0"));
        assert_eq!(off.inventory().list().unwrap().len(), 4);

        let broker = broker_with(dir.path(), "{}", None);
        let guard = broker.checkout_one(ask()).await.unwrap();
        let mut given_back = seen(dir.path()).checked_in;
        given_back.retain(|n| n != "l0");
        given_back.sort();
        assert_eq!(given_back, ["guarded-of-gone", "pending-of-gone"]);
        let mut stored = names(&broker.inventory().list().unwrap());
        stored.retain(|n| n != "l0");
        assert_eq!(stored, ["guarded-of-live", "kept-of-gone"]);
        // Once per broker: a second checkout finds nothing more to do.
        drop(broker.checkout_one(ask()).await.unwrap());
        drop(guard);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hanging_check_in_of_the_reap_on_start_does_not_hold_up_the_checkout() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker_with(dir.path(), "checkin_timeout: 1\n", None);
        let left = [
            left_by(&gone(), "hanging-of-gone", HostState::Ready, true),
            left_by(&gone(), "pending-of-gone", HostState::Pending, false),
        ];
        broker.inventory().put(&left).unwrap();
        // Without a bound the checkout waits for the hanging check-in for ever.
        let checkout = broker.checkout_one(ask());
        let guard = tokio::time::timeout(Duration::from_secs(60), checkout)
            .await
            .expect("the checkout waited for the reap's hanging check-in")
            .unwrap();
        assert_eq!(guard.hostname(), Some("l0"));
        let stored = names(&broker.inventory().list().unwrap());
        assert!(stored.contains(&"hanging-of-gone".to_owned()), "{stored:?}");
        drop(guard);
    }

    #[test]
    fn a_stopped_wait_lists_what_this_process_left_and_how_to_finish() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker_with(dir.path(), "reap_on_start: false\n", None);
        let err = broker.stopped_waiting("Ctrl-C again");
        assert_eq!(err.exit_code(), 130);
        assert_eq!(
            err.to_string(),
            "interrupted: Ctrl-C again: stopped waiting; this checkout left nothing in the inventory"
        );
        let left = [
            left_by(Owner::current(), "made", HostState::Ready, false),
            left_by(Owner::current(), "half-made", HostState::Pending, false),
            left_by(&gone(), "someone-elses", HostState::Pending, false),
        ];
        broker.inventory().put(&left).unwrap();
        assert_eq!(
            broker.stopped_waiting("Ctrl-C again").to_string(),
            "interrupted: Ctrl-C again: stopped waiting; left in the inventory: made (ready), half-made (pending); \
             finish with `broker recover` (it checks in the unfinished ones of this process once it has exited) \
             and `broker checkin made`"
        );
    }

    /// A store in which another reaper claims the first record between this one's reading and its
    /// claim.
    #[derive(Debug)]
    struct Racing(YamlFileStore);

    impl InventoryStore for Racing {
        fn list(&self) -> Result<Vec<HostRecord>> {
            let records = self.0.list()?;
            if let Some(first) = records.first() {
                let mut other = crate::lease::claimed(first, &gone());
                other.set("_note", "claimed by someone else");
                self.0.put(&[other])?;
            }
            Ok(records)
        }
        fn put(&self, records: &[HostRecord]) -> Result<()> {
            self.0.put(records)
        }
        fn remove(&self, ids: &[RecordId]) -> Result<Vec<RecordId>> {
            self.0.remove(ids)
        }
        fn sync_provider(&self, listing: ProviderListing) -> Result<SyncReport> {
            self.0.sync_provider(listing)
        }
        fn replace_unchanged(&self, changes: &[(HostRecord, HostRecord)]) -> Result<Vec<RecordId>> {
            self.0.replace_unchanged(changes)
        }
        fn location(&self) -> String {
            self.0.location()
        }
    }

    #[tokio::test]
    async fn a_reaper_checks_in_only_what_its_claim_won() {
        let dir = tempfile::tempdir().unwrap();
        let file = YamlFileStore::new(dir.path().join("inventory.yaml"), Duration::from_secs(5));
        file.put(&[
            left_by(&gone(), "a", HostState::Ready, true),
            left_by(&gone(), "b", HostState::Ready, true),
        ])
        .unwrap();
        let broker = broker_with(dir.path(), "{}", Some(Arc::new(Racing(file))));
        let reaped = broker.reap(ReapScope::default(), false).await.unwrap();
        let done: Vec<String> = reaped.iter().map(|r| r.record.display_name()).collect();
        assert_eq!(done, ["b"]);
        assert!(matches!(reaped[0].result, Some(Ok(()))));
        assert_eq!(seen(dir.path()).checked_in, ["b"]);
        let left = broker.inventory().list().unwrap();
        assert_eq!(names(&left), ["a"]);
        assert_eq!(
            left[0].state(),
            HostState::Releasing,
            "the other reaper's claim"
        );
    }

    #[tokio::test]
    async fn a_dry_run_and_the_recover_scopes_pick_as_a_reap_does() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker_with(dir.path(), "reap_on_start: false\n", None);
        let mut expired = left_by(Owner::current(), "expired", HostState::Ready, false);
        expired.set(fields::EXPIRE_TIME, crate::time::now_epoch() - 1);
        broker
            .inventory()
            .put(&[
                expired,
                left_by(&gone(), "abandoned", HostState::Ready, true),
            ])
            .unwrap();
        let would = broker.reap(ReapScope::default(), true).await.unwrap();
        assert_eq!(would.len(), 2);
        assert!(would.iter().all(|r| r.result.is_none()));
        assert_eq!(broker.inventory().list().unwrap().len(), 2);
        let outcomes = broker.recover(RecoverScope::Expired).await.unwrap();
        let done: Vec<String> = outcomes.iter().map(|o| o.record.display_name()).collect();
        assert_eq!(done, ["expired"]);
        let outcomes = broker.recover(RecoverScope::Reapable).await.unwrap();
        let done: Vec<String> = outcomes.iter().map(|o| o.record.display_name()).collect();
        assert_eq!(done, ["abandoned"]);
        assert!(outcomes.iter().all(|o| o.result.is_ok()));
        assert!(broker.inventory().list().unwrap().is_empty());
        assert_eq!(seen(dir.path()).checked_in, ["expired", "abandoned"]);
    }

    /// `recover`'s own scopes: `Orphaned` checks in the unfinished checkouts and check-ins of gone
    /// processes only, `Unfinished` those of anyone, `ThisProcess` everything this process owns;
    /// none takes a finished host of a gone process (that is a reap's).
    #[tokio::test]
    async fn recover_scopes_take_the_unfinished_records_they_name() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker_with(dir.path(), "reap_on_start: false\n", None);
        let me = Owner::current();
        broker
            .inventory()
            .put(&[
                left_by(&gone(), "gone-pending", HostState::Pending, false),
                left_by(&gone(), "gone-releasing", HostState::Releasing, false),
                left_by(&gone(), "gone-ready", HostState::Ready, false),
                left_by(me, "mine-pending", HostState::Pending, false),
                left_by(me, "mine-ready", HostState::Ready, false),
            ])
            .unwrap();
        let recovered = |outcomes: Vec<crate::HostOutcome>| {
            assert!(outcomes.iter().all(|o| o.result.is_ok()));
            names(&outcomes.into_iter().map(|o| o.record).collect::<Vec<_>>())
        };
        let orphaned = broker.recover(RecoverScope::Orphaned).await.unwrap();
        assert_eq!(recovered(orphaned), ["gone-pending", "gone-releasing"]);
        let unfinished = broker.recover(RecoverScope::Unfinished).await.unwrap();
        assert_eq!(recovered(unfinished), ["mine-pending"]);
        let mine = broker.recover(RecoverScope::ThisProcess).await.unwrap();
        assert_eq!(recovered(mine), ["mine-ready"]);
        assert_eq!(names(&broker.inventory().list().unwrap()), ["gone-ready"]);
    }

    #[tokio::test]
    async fn a_lease_that_cannot_be_read_is_reported_by_a_reap_and_never_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker_with(dir.path(), "reap_on_start: false\n", None);
        let mut garbage = left_by(Owner::current(), "garbage", HostState::Ready, false);
        garbage.set(fields::EXPIRE_TIME, "garbage");
        broker.inventory().put(&[garbage]).unwrap();
        let reaped = broker.reap(ReapScope::expired(), false).await.unwrap();
        assert_eq!(reaped.len(), 1);
        assert!(reaped[0].reason.is_skip() && reaped[0].result.is_none());
        // `recover` lists what it checked in: not a host it left.
        for scope in [RecoverScope::Expired, RecoverScope::Reapable] {
            assert!(broker.recover(scope).await.unwrap().is_empty(), "{scope:?}");
        }
        assert_eq!(names(&broker.inventory().list().unwrap()), ["garbage"]);
        assert!(seen(dir.path()).checked_in.is_empty());
    }

    #[tokio::test]
    async fn waiting_for_a_gone_process_returns_at_once() {
        tokio::time::timeout(
            Duration::from_secs(60),
            wait_until_gone(&gone(), Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn watching_a_process_that_is_gone_reaps_what_it_left_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker_with(dir.path(), "{}", None);
        broker
            .inventory()
            .put(&[
                left_by(&gone(), "its", HostState::Ready, true),
                left_by(
                    &Owner {
                        pid: 3_999_999_998,
                        ..gone()
                    },
                    "another's",
                    HostState::Ready,
                    true,
                ),
            ])
            .unwrap();
        let reaped = tokio::time::timeout(Duration::from_secs(60), broker.watch(gone().pid))
            .await
            .unwrap()
            .unwrap();
        let done: Vec<String> = reaped.iter().map(|r| r.record.display_name()).collect();
        assert_eq!(done, ["its"]);
        assert_eq!(names(&broker.inventory().list().unwrap()), ["another's"]);
    }

    #[tokio::test]
    async fn watching_pid_0_is_a_usage_error_that_reaps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker_with(dir.path(), "{}", None);
        let pid_0 = Owner { pid: 0, ..gone() };
        broker
            .inventory()
            .put(&[left_by(&pid_0, "h0", HostState::Ready, true)])
            .unwrap();
        let e = broker.watch(0).await.unwrap_err();
        assert!(matches!(e, Error::Usage { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "pid 0 names no process; give the pid of a process on this machine to watch"
        );
        assert_eq!(broker.inventory().list().unwrap().len(), 1);
    }

    #[test]
    fn a_watcher_that_cannot_start_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let e = spawn_watcher(dir.path().join("no-such-broker"), dir.path()).unwrap_err();
        assert!(e.to_string().contains("starting the reap watcher"), "{e}");
        assert!(e.to_string().contains("give the path of its binary"), "{e}");
    }
}
