//! Host guards: a checked-out host that checks itself back in when dropped.
//!
//! Check-in is async but `Drop` is not, so a dropped guard hands its check-in to one process-wide
//! *drop worker* thread with a runtime of its own — which works on any runtime, outside one, during a
//! panic and while the caller's runtime shuts down (dropping its tasks and their guards) — and waits for
//! it, bounded by `checkin_timeout`.
//!
//! The guards of one checkout form a batch: a guard dropped while others of its batch are still alive
//! starts its check-in and returns; the last one to go waits for all of them within one
//! `checkin_timeout`. So dropping a `Vec` of guards checks its hosts in concurrently, not one after
//! another. On a multi-thread runtime the wait blocks in place, so the runtime's other tasks (and
//! providers' connections bound to it) keep running.
//!
//! The wait is bounded and nothing in `Drop` panics. When check-in fails or times out the
//! record stays in the inventory, marked `releasing` with the error, for `broker checkin` or
//! `broker recover` to finish.
//!
//! With the setting `keep_on_failure: <duration>` (or `BROKER_KEEP_ON_FAILURE=30m` in the environment),
//! guards dropped while their thread panics keep their hosts for that long instead, recording the lease
//! (`_broker_expire_time`), so a failed test can be debugged.

use std::fmt;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use tracing::Level;

use crate::error::Result;
use crate::host::{FromHost, Host};
use crate::lifecycle::BrokerInner;
use crate::provider::Provider;
use crate::record::{HostRecord, RecordId};

/// The environment variable that keeps the hosts of panicking tests for a while (the `keep_on_failure`
/// setting).
pub const KEEP_ON_FAILURE_ENV: &str = "BROKER_KEEP_ON_FAILURE";

/// The guards of one checkout (see the module documentation).
#[derive(Default)]
struct Batch {
    state: Mutex<BatchState>,
}

#[derive(Default)]
struct BatchState {
    /// Guards of the batch not yet dropped, kept or checked in.
    live: usize,
    /// Check-ins started by dropped guards, not yet waited for.
    started: Vec<Started>,
}

/// A check-in under way on the drop worker.
struct Started {
    done: mpsc::Receiver<Result<()>>,
    inner: Arc<BrokerInner>,
    id: RecordId,
    name: String,
    timeout: Duration,
    deadline: std::time::Instant,
}

impl Batch {
    /// An empty batch; each guard made joins it.
    fn new() -> Arc<Batch> {
        Arc::new(Batch::default())
    }

    fn join(&self) {
        let mut state = crate::sync::lock(&self.state);
        state.live += 1;
    }

    /// One guard leaves the batch (having started `started`, if anything); the check-ins to wait for
    /// now — all of them when it was the last.
    fn leave(&self, started: Option<Started>) -> Vec<Started> {
        let mut state = crate::sync::lock(&self.state);
        state.live = state.live.saturating_sub(1);
        state.started.extend(started);
        if state.live == 0 {
            std::mem::take(&mut state.started)
        } else {
            Vec::new()
        }
    }
}

/// What a guard needs to check its host in.
struct Ticket {
    inner: Arc<BrokerInner>,
    record: HostRecord,
}

/// A checked-out host. Dropping it checks the host in; [`HostGuard::checkin`] does so and reports
/// errors; [`HostGuard::keep`] leaves it checked out.
///
/// Derefs to the host type `H` ([`Host`] unless a test framework brings its own through [`FromHost`]).
#[must_use = "dropping a HostGuard checks the host in at once; bind it: `let host = …`"]
pub struct HostGuard<H: FromHost = Host> {
    host: Option<H>,
    ticket: Option<Ticket>,
    batch: Arc<Batch>,
}

impl<H: FromHost> fmt::Debug for HostGuard<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostGuard")
            .field("host", &self.host.as_ref().map(|h| h.host().record()))
            .field("armed", &self.ticket.is_some())
            .finish()
    }
}

impl<H: FromHost> std::ops::Deref for HostGuard<H> {
    type Target = H;
    fn deref(&self) -> &H {
        // Only `keep`/`checkin` (which consume the guard) take the host out.
        match &self.host {
            Some(h) => h,
            None => unreachable!("a HostGuard's host is present until the guard is consumed"),
        }
    }
}

impl<H: FromHost> HostGuard<H> {
    /// Guards for the hosts of one checkout, forming one batch. When wrapping a host in `H` fails,
    /// the hosts not yet guarded are checked in and the wrapper's error is returned.
    pub(crate) async fn for_checkout(
        inner: &Arc<BrokerInner>,
        provider: &Arc<dyn Provider>,
        records: Vec<HostRecord>,
    ) -> Result<Vec<Self>> {
        let mut guards = Vec::with_capacity(records.len());
        let mut records = records.into_iter();
        let batch = Batch::new();
        while let Some(record) = records.next() {
            match HostGuard::new(
                Arc::clone(inner),
                Arc::clone(provider),
                record.clone(),
                Arc::clone(&batch),
            ) {
                Ok(guard) => guards.push(guard),
                Err(e) => {
                    // Guards already made check themselves in when dropped; the rest go back explicitly.
                    let rest: Vec<HostRecord> = std::iter::once(record).chain(records).collect();
                    inner.checkin_past_drop(rest).await;
                    return Err(e);
                }
            }
        }
        Ok(guards)
    }

    fn new(
        inner: Arc<BrokerInner>,
        provider: Arc<dyn Provider>,
        record: HostRecord,
        batch: Arc<Batch>,
    ) -> Result<Self> {
        let host = H::from_host(Host::new(record.clone(), provider))?;
        batch.join();
        Ok(HostGuard {
            host: Some(host),
            ticket: Some(Ticket { inner, record }),
            batch,
        })
    }

    /// The inventory record of the host.
    pub fn record(&self) -> &HostRecord {
        self.host().record()
    }

    /// Checks the host in now and reports how it went.
    ///
    /// # Errors
    /// The provider's error; the record then stays in the inventory, marked `releasing`.
    pub async fn checkin(mut self) -> Result<()> {
        let _others = self.batch.leave(None);
        match self.ticket.take() {
            Some(t) => t.inner.checkin_one(t.record).await,
            None => Ok(()),
        }
    }

    /// Leaves the host checked out (it stays in the inventory) and returns it: the host is its
    /// user's from now on, not this process's, so it outlives this process and goes back only by
    /// hand (`broker checkin`) or when its lease ends (see [`crate::lease`]). Its record is updated
    /// to say so (a blocking inventory write; the record `H` holds still shows the guard).
    pub fn keep(mut self) -> H {
        // Check-ins that guards of the batch dropped earlier started finish on their own.
        let _others = self.batch.leave(None);
        if let Some(ticket) = self.ticket.take()
            && crate::lease::is_guarded(&ticket.record)
            && let Err(e) = ticket.inner.hand_to_user(&ticket.record.id())
        {
            let name = ticket.record.display_name();
            left_behind(
                Level::ERROR,
                &name,
                &format!(
                    "keeping host {name} failed to reach the inventory ({}): a reaper will give \
                     it back once this process ends; check it out again to keep it longer",
                    crate::error::chain(&e)
                ),
            );
        }
        match self.host.take() {
            Some(h) => h,
            None => unreachable!("a HostGuard's host is present until the guard is consumed"),
        }
    }
}

impl<H: FromHost> Drop for HostGuard<H> {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        if std::thread::panicking()
            && let Some(keep_for) = ticket.inner.keep_on_failure
        {
            keep_after_failure(ticket, keep_for);
            wait_for(self.batch.leave(None));
            return;
        }
        let started = start_checkin(ticket);
        wait_for(self.batch.leave(started));
    }
}

/// Hands a guard's check-in to the drop worker; `None` when the worker cannot be had (logged).
fn start_checkin(ticket: Ticket) -> Option<Started> {
    let Ticket { inner, record } = ticket;
    let name = record.display_name();
    let timeout = inner.checkin_timeout;
    let id = record.id();
    let (done_tx, done) = mpsc::sync_channel::<Result<()>>(1);
    let held = Arc::clone(&inner);
    let sent = crate::drop_worker::hand_over(async move {
        let work = held.checkin_one(record);
        if let Ok(out) = tokio::time::timeout(timeout, work).await {
            let _ = done_tx.send(out);
        }
    });
    if !sent {
        left_behind(
            Level::ERROR,
            &name,
            &format!(
                "cannot check in {name} on drop: the check-in worker is not running; retry with `broker checkin {name}`"
            ),
        );
        return None;
    }
    Some(Started {
        done,
        inner,
        id,
        name,
        timeout,
        deadline: std::time::Instant::now() + timeout,
    })
}

/// Waits for started check-ins until their deadlines, reporting each that failed or did not finish.
fn wait_for(started: Vec<Started>) {
    if started.is_empty() {
        return;
    }
    let wait = move || {
        for s in started {
            let left = s
                .deadline
                .saturating_duration_since(std::time::Instant::now());
            // A little grace over the job's own timeout so a job that just finished is not late.
            match s.done.recv_timeout(left + Duration::from_secs(1)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => left_behind(
                    Level::ERROR,
                    &s.name,
                    &format!(
                        "checking in {} on drop failed: {}; the record stays in the inventory: retry with `broker checkin {}`",
                        s.name,
                        crate::error::chain(&e),
                        s.name
                    ),
                ),
                Err(_) => {
                    left_behind(
                        Level::ERROR,
                        &s.name,
                        &format!(
                            "checking in {} on drop did not finish within {}; the record stays in the \
                             inventory marked releasing: retry with `broker checkin {}`",
                            s.name,
                            crate::time::format_duration(s.timeout),
                            s.name
                        ),
                    );
                    let _ = s.inner.note_error(
                        &s.id,
                        &format!(
                            "check-in on drop timed out after {}",
                            crate::time::format_duration(s.timeout)
                        ),
                    );
                }
            }
        }
    };
    // On a multi-thread runtime's worker, let the runtime move its other tasks away meanwhile.
    use tokio::runtime::{Handle, RuntimeFlavor};
    let on_worker = Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread)
        && !std::thread::panicking();
    if on_worker {
        tokio::task::block_in_place(wait);
    } else {
        wait();
    }
}

/// Keeps a panicking test's host for `keep_for` (`keep_on_failure`) instead of checking it in.
fn keep_after_failure(ticket: Ticket, keep_for: Duration) {
    let name = ticket.record.display_name();
    match ticket.inner.keep_after_failure(ticket.record, keep_for) {
        Ok(expires) => left_behind(
            Level::WARN,
            &name,
            &format!(
                "the test panicked: keeping host {name} until {} ({KEEP_ON_FAILURE_ENV}); check it in with `broker checkin {name}`",
                crate::time::format_epoch(expires)
            ),
        ),
        Err(e) => left_behind(
            Level::ERROR,
            &name,
            &format!(
                "the test panicked and recording the kept host {name} failed: {}",
                crate::error::chain(&e)
            ),
        ),
    }
}

/// Says that a host was left behind (kept, or not checked in): a `tracing` event at `level` and —
/// when no subscriber would show it, as in a test binary, which has none — one line on stderr, so a
/// suite does not pass in silence.
fn left_behind(level: Level, host: &str, message: &str) {
    if level == Level::WARN {
        tracing::warn!(host = %host, "{message}");
    } else {
        tracing::error!(host = %host, "{message}");
    }
    if no_subscriber() {
        eprintln!("broker: {message}");
    }
}

/// Whether this thread's `tracing` events reach no subscriber.
fn no_subscriber() -> bool {
    tracing::dispatcher::get_default(|d| d.is::<tracing::subscriber::NoSubscriber>())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::OnceLock;

    use super::*;
    use crate::provider::{CheckoutContext, ProviderKind};
    use crate::record::{HostState, fields};
    use crate::{Broker, CheckoutRequest, Error, Mapping, ProviderRegistry, Settings, Value};

    /// What the ledger provider saw for one test (its `tag` argument).
    #[derive(Default)]
    struct Seen {
        checked_in: Vec<String>,
        under_way: usize,
        most_at_once: usize,
        go: bool,
    }

    static LEDGER: OnceLock<Mutex<HashMap<String, Seen>>> = OnceLock::new();

    fn seen<T>(tag: &str, f: impl FnOnce(&mut Seen) -> T) -> T {
        let ledger = LEDGER.get_or_init(Default::default);
        let mut ledger = crate::sync::lock(ledger);
        f(ledger.entry(tag.to_owned()).or_default())
    }

    /// Names its hosts `TAG-INDEX` and writes down each check-in under the tag; a check-in waits
    /// `checkin_ms`, for the test's `go` (`wait_for_go`) or for `meet` check-ins under way at once,
    /// and fails when asked (`fail_checkin`).
    #[derive(Debug)]
    struct Ledger;

    #[async_trait::async_trait]
    impl Provider for Ledger {
        fn name(&self) -> &str {
            "Ledger"
        }
        fn instance(&self) -> Option<&str> {
            None
        }
        async fn checkout(&self, ctx: &CheckoutContext<'_>) -> Result<Mapping> {
            let tag = ctx.arg("tag").unwrap_or_default();
            let mut fields = Mapping::new();
            fields.insert("hostname".into(), format!("{tag}-{}", ctx.index()).into());
            Ok(fields)
        }
        async fn checkin(&self, host: &HostRecord) -> Result<()> {
            let args = host.args();
            let arg = |key: &str| args.get(key).and_then(Value::as_str).unwrap_or_default();
            let tag = arg("tag").to_owned();
            seen(&tag, |s| {
                s.under_way += 1;
                s.most_at_once = s.most_at_once.max(s.under_way);
            });
            if let Ok(ms) = arg("checkin_ms").parse() {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            // Waits (up to 10 s) for a task of the test's runtime to say `go`, as a provider's check-in
            // does for a connection that runtime drives.
            if arg("wait_for_go") == "yes" {
                for _ in 0..1000 {
                    if seen(&tag, |s| s.go) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                if !seen(&tag, |s| s.go) {
                    seen(&tag, |s| s.under_way -= 1);
                    return Err(Error::provider("Ledger", "no go within 10 s"));
                }
            }
            // Waits (up to 10 s) until this many check-ins of the tag are under way at once.
            if let Ok(meet) = arg("meet").parse::<usize>() {
                for _ in 0..1000 {
                    if seen(&tag, |s| s.most_at_once) >= meet {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            seen(&tag, |s| s.under_way -= 1);
            if arg("fail_checkin") == "yes" {
                return Err(Error::provider("Ledger", "injected check-in failure"));
            }
            let name = host.hostname().unwrap_or_default().to_owned();
            seen(&tag, |s| s.checked_in.push(name));
            Ok(())
        }
    }

    fn build_ledger(_config: crate::ProviderConfig) -> Result<Arc<dyn Provider>> {
        Ok(Arc::new(Ledger))
    }

    fn broker(dir: &std::path::Path, settings: &str) -> Broker {
        let settings = Settings::from_yaml(dir, settings).unwrap();
        let kind = ProviderKind::new("Ledger", "test", build_ledger).checkout_actions(&["ledger"]);
        Broker::new(settings, ProviderRegistry::new().with(kind)).unwrap()
    }

    fn request(tag: &str, count: usize) -> CheckoutRequest {
        CheckoutRequest::new()
            .arg("ledger", "host")
            .arg("tag", tag)
            .count(count)
    }

    fn checked_in(tag: &str) -> Vec<String> {
        let mut names = seen(tag, |s| s.checked_in.clone());
        names.sort();
        names
    }

    fn records(broker: &Broker) -> Vec<HostRecord> {
        broker.inventory().list().unwrap()
    }

    #[tokio::test]
    async fn dropped_guards_check_their_hosts_in_before_the_drop_returns() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path(), "");
        let hosts = broker.checkout(request("dropped", 3)).await.unwrap();
        assert_eq!(records(&broker).len(), 3);
        assert!(
            format!("{:?}", hosts[0]).contains("armed: true"),
            "{:?}",
            hosts[0]
        );
        drop(hosts);
        assert_eq!(
            checked_in("dropped"),
            ["dropped-0", "dropped-1", "dropped-2"]
        );
        assert_eq!(records(&broker), []);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_guard_dropped_on_a_multi_thread_runtime_checks_in() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path(), "");
        let host = broker.checkout_one(request("multi", 1)).await.unwrap();
        assert_eq!(host.record().hostname(), Some("multi-0"));
        drop(host);
        assert_eq!(checked_in("multi"), ["multi-0"]);
        assert_eq!(records(&broker), []);
    }

    #[tokio::test]
    async fn a_check_in_on_drop_slower_than_a_second_is_waited_for_within_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path(), "");
        let host = broker
            .checkout_one(request("unhurried", 1).arg("checkin_ms", "1500"))
            .await
            .unwrap();
        drop(host);
        assert_eq!(checked_in("unhurried"), ["unhurried-0"]);
        assert_eq!(records(&broker), []);
    }

    #[test]
    fn a_guard_dropped_by_a_task_panicking_on_a_multi_thread_runtime_checks_in() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path(), "");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let held = broker.clone();
        let task = runtime.spawn(async move {
            let _host = held.checkout_one(request("task", 1)).await.unwrap();
            panic!("the test failed");
        });
        let panic = runtime.block_on(task).unwrap_err().into_panic();
        assert_eq!(panic.downcast_ref::<&str>(), Some(&"the test failed"));
        assert_eq!(checked_in("task"), ["task-0"]);
        assert_eq!(records(&broker), []);
    }

    #[test]
    fn a_guard_dropped_on_a_runtime_worker_lets_the_runtime_run_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path(), "");
        // One worker: were the drop to block it, the task saying `go` could not run, and the check-in
        // waiting for it would fail.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let host = runtime
            .block_on(broker.checkout_one(request("worker", 1).arg("wait_for_go", "yes")))
            .unwrap();
        runtime.block_on(async move {
            let go = tokio::spawn(async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                seen("worker", |s| s.go = true);
            });
            tokio::spawn(async move { drop(host) }).await.unwrap();
            go.await.unwrap();
        });
        assert_eq!(checked_in("worker"), ["worker-0"]);
        assert_eq!(records(&broker), []);
    }

    #[tokio::test]
    async fn guards_dropped_together_check_in_concurrently() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path(), "");
        let hosts = broker
            .checkout(request("together", 3).arg("meet", "3"))
            .await
            .unwrap();
        drop(hosts);
        assert_eq!(checked_in("together").len(), 3);
        assert_eq!(seen("together", |s| s.most_at_once), 3);
        assert_eq!(records(&broker), []);
    }

    #[tokio::test]
    async fn a_kept_host_stays_checked_out() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path(), "");
        let mut hosts = broker.checkout(request("kept", 2)).await.unwrap();
        let kept = hosts.remove(1).keep();
        assert_eq!(kept.record().hostname(), Some("kept-1"));
        drop(hosts);
        assert_eq!(checked_in("kept"), ["kept-0"]);
        let left = records(&broker);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].hostname(), Some("kept-1"));
        assert_eq!(left[0].state(), HostState::Ready);
    }

    #[tokio::test]
    async fn an_explicit_checkin_reports_the_error_and_keeps_the_record_releasing() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path(), "");
        let host = broker
            .checkout_one(request("failing", 1).arg("fail_checkin", "yes"))
            .await
            .unwrap();
        let err = host.checkin().await.unwrap_err();
        assert!(
            err.to_string().contains("injected check-in failure"),
            "{err}"
        );
        let left = records(&broker);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].state(), HostState::Releasing);
        assert_eq!(checked_in("failing"), Vec::<String>::new());
    }

    #[tokio::test]
    async fn a_check_in_on_drop_that_outlasts_its_timeout_leaves_the_record_saying_so() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path(), "checkin_timeout: 1s\n");
        let host = broker
            .checkout_one(request("slow", 1).arg("checkin_ms", "60000"))
            .await
            .unwrap();
        drop(host);
        let left = records(&broker);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].state(), HostState::Releasing);
        assert_eq!(
            left[0].get(fields::LAST_ERROR).and_then(Value::as_str),
            Some("check-in on drop timed out after 1s")
        );
    }

    #[test]
    fn a_panicking_test_keeps_its_host_for_the_keep_on_failure_lease() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path(), "keep_on_failure: 30m\n");
        let held = broker.clone();
        let before = crate::time::now_epoch();
        let outcome = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let _host = held.checkout_one(request("panicked", 1)).await.unwrap();
                panic!("the test failed");
            })
        })
        .join();
        let panic = outcome.expect_err("the thread should have panicked");
        assert_eq!(panic.downcast_ref::<&str>(), Some(&"the test failed"));
        assert_eq!(checked_in("panicked"), Vec::<String>::new());
        let left = records(&broker);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].state(), HostState::Ready);
        // 30 minutes from the checkout, whenever it happened between `before` and now.
        let expires = left[0].expire_time().unwrap();
        let after = crate::time::now_epoch();
        assert!(
            (before + 1800..=after + 1800).contains(&expires),
            "expires {expires}, checked out between {before} and {after}"
        );
    }

    /// Runs `test` on a thread of its own with a current-thread runtime, as `#[tokio::test]` does, and
    /// returns what it panicked with.
    fn panic_of(test: impl Future<Output = ()> + Send + 'static) -> String {
        let outcome = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(test);
        })
        .join();
        let panic = outcome.expect_err("the thread should have panicked");
        panic.downcast_ref::<&str>().unwrap().to_string()
    }

    #[test]
    fn a_guard_dropped_outside_any_runtime_checks_in() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path(), "");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let host = runtime
            .block_on(broker.checkout_one(request("outside", 1)))
            .unwrap();
        assert!(tokio::runtime::Handle::try_current().is_err());
        drop(host);
        assert_eq!(checked_in("outside"), ["outside-0"]);
        assert_eq!(records(&broker), []);
    }

    #[test]
    fn a_guard_dropped_after_its_runtime_is_gone_checks_in() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path(), "");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let host = runtime
            .block_on(broker.checkout_one(request("orphaned", 1)))
            .unwrap();
        drop(runtime);
        drop(host);
        assert_eq!(checked_in("orphaned"), ["orphaned-0"]);
        assert_eq!(records(&broker), []);
    }

    #[test]
    fn a_panicking_test_checks_its_host_in_unless_keep_on_failure_is_set() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path(), "");
        let held = broker.clone();
        let panic = panic_of(async move {
            let _host = held.checkout_one(request("not-kept", 1)).await.unwrap();
            panic!("the test failed");
        });
        assert_eq!(panic, "the test failed");
        assert_eq!(checked_in("not-kept"), ["not-kept-0"]);
        assert_eq!(records(&broker), []);
    }

    #[tokio::test]
    async fn keep_on_failure_keeps_nothing_of_a_test_that_passes() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path(), "keep_on_failure: 30m\n");
        let host = broker.checkout_one(request("passed", 1)).await.unwrap();
        drop(host);
        assert_eq!(checked_in("passed"), ["passed-0"]);
        assert_eq!(records(&broker), []);
    }

    #[test]
    fn a_host_kept_after_a_panic_keeps_its_secrets_masked_in_a_shared_inventory() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let inventory = dir.path().join("inventory.yaml");
        std::fs::write(&inventory, "[]\n").unwrap();
        std::fs::set_permissions(&inventory, std::fs::Permissions::from_mode(0o644)).unwrap();
        let broker = broker(dir.path(), "keep_on_failure: 30m\n");
        let held = broker.clone();
        let panic = panic_of(async move {
            let secret = request("kept-secret", 1).arg("host_password", "hunter2");
            let _host = held.checkout_one(secret).await.unwrap();
            panic!("the test failed");
        });
        assert_eq!(panic, "the test failed");
        let left = records(&broker);
        assert_eq!(left.len(), 1);
        assert!(left[0].expire_time().is_some(), "{:?}", left[0].fields());
        assert_eq!(
            left[0].args().get("host_password"),
            Some(&Value::from(crate::redact::MASK))
        );
        let text = std::fs::read_to_string(&inventory).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
    }

    /// A host left behind is logged to a subscriber where there is one, and printed on stderr only
    /// where there is none (a test binary): the stderr line itself is checked end to end in
    /// `tests/integration/leases.rs`.
    #[test]
    fn a_host_left_behind_is_logged_to_a_subscriber_and_printed_only_without_one() {
        assert!(no_subscriber(), "a test binary has none");
        let (counting, events) = crate::test_log::Collect::new();
        tracing::subscriber::with_default(counting, || {
            assert!(
                !no_subscriber(),
                "with a subscriber it is logged, not printed"
            );
            left_behind(Level::ERROR, "h1", "checking in h1 on drop failed");
            left_behind(Level::WARN, "h2", "keeping host h2");
        });
        // At the level asked for: a host kept is a warning, one not checked in an error.
        let levels: Vec<Level> = events.lock().unwrap().iter().map(|(l, _)| *l).collect();
        assert_eq!(levels, [Level::ERROR, Level::WARN]);
        assert!(no_subscriber());
    }
}
