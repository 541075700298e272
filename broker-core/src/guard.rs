//! Host guards: a checked-out host that checks itself back in when dropped.
//!
//! Check-in is async but `Drop` is not, so a dropped guard runs its check-in to completion before
//! returning, bounded by `checkin_timeout`:
//! - on a multi-thread tokio runtime (and not while panicking) it blocks in place on that runtime, so
//!   providers' connections bound to it keep working;
//! - on a current-thread runtime (`#[tokio::test]`), outside any runtime, or during a panic, it hands
//!   the work to one process-wide *drop worker* thread with a runtime of its own and waits for it.
//!
//! Either way the wait is bounded and nothing in `Drop` panics. When check-in fails or times out the
//! record stays in the inventory, marked `releasing` with the error, for `broker checkin` or
//! `broker recover` to finish.
//!
//! With the setting `keep_on_failure: <duration>` (or `BROKER_KEEP_ON_FAILURE=30m` in the environment),
//! guards dropped while their thread panics keep their hosts for that long instead, recording the lease
//! (`_broker_expire_time`), so a failed test can be debugged.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::task::Poll;
use std::time::Duration;

use crate::broker::BrokerInner;
use crate::error::Result;
use crate::host::{FromHost, Host, HostRecord, fields};
use crate::provider::Provider;

/// The environment variable that keeps the hosts of panicking tests for a while (the `keep_on_failure`
/// setting).
pub const KEEP_ON_FAILURE_ENV: &str = "BROKER_KEEP_ON_FAILURE";

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// What a guard needs to check its host in.
struct Ticket {
    inner: Arc<BrokerInner>,
    provider: Arc<dyn Provider>,
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
    pub(crate) fn new(
        inner: Arc<BrokerInner>,
        provider: Arc<dyn Provider>,
        record: HostRecord,
    ) -> Result<Self> {
        let host = H::from_host(Host::new(record.clone(), Arc::clone(&provider)))?;
        Ok(HostGuard {
            host: Some(host),
            ticket: Some(Ticket {
                inner,
                provider,
                record,
            }),
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
        match self.ticket.take() {
            Some(t) => t.inner.checkin_record(t.provider, t.record).await,
            None => Ok(()),
        }
    }

    /// Leaves the host checked out (it stays in the inventory) and returns it.
    pub fn keep(mut self) -> H {
        self.ticket = None;
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
        let name = ticket.record.display_name();
        if std::thread::panicking()
            && let Some(keep_for) = ticket.inner.keep_on_failure
        {
            keep_after_failure(ticket, keep_for);
            return;
        }
        let timeout = ticket.inner.checkin_timeout;
        let Ticket {
            inner,
            provider,
            record,
        } = ticket;
        let id = record.id();
        let store = Arc::clone(&inner.store);
        let work = async move { inner.checkin_record(provider, record).await };
        match run_bounded(work, timeout) {
            Some(Ok(())) => {}
            Some(Err(e)) => tracing::error!(
                host = %name,
                "checking in on drop failed: {}; the record stays in the inventory: retry with `broker checkin {name}`",
                crate::error::chain(&e)
            ),
            None => {
                tracing::error!(
                    host = %name,
                    "checking in on drop did not finish within {}; the record stays in the inventory \
                     marked releasing: retry with `broker checkin {name}`",
                    crate::time::format_duration(timeout)
                );
                let _ = note_error(
                    &*store,
                    &id,
                    &format!(
                        "check-in on drop timed out after {}",
                        crate::time::format_duration(timeout)
                    ),
                );
            }
        }
    }
}

fn keep_after_failure(ticket: Ticket, keep_for: Duration) {
    let mut record = ticket.record;
    let expires = crate::time::now_epoch() + keep_for.as_secs() as i64;
    record.set(fields::EXPIRE_TIME, expires);
    let name = record.display_name();
    match ticket.inner.store.put(std::slice::from_ref(&record)) {
        Ok(()) => tracing::warn!(
            host = %name,
            "the test panicked: keeping the host until {} ({KEEP_ON_FAILURE_ENV}); check it in with `broker checkin {name}`",
            crate::time::format_epoch(expires)
        ),
        Err(e) => {
            tracing::error!(host = %name, "the test panicked and recording the kept host failed: {e}")
        }
    }
}

fn note_error(
    store: &dyn crate::inventory::InventoryStore,
    id: &crate::host::RecordId,
    message: &str,
) -> Result<()> {
    let Some(mut record) = store.list()?.into_iter().find(|r| &r.id() == id) else {
        return Ok(());
    };
    record.set(fields::LAST_ERROR, message);
    store.put(std::slice::from_ref(&record))
}

/// Runs `work` to completion from synchronous code, waiting at most `timeout`. `None` means it did not
/// finish in time (it may still be running on the drop worker).
pub(crate) fn run_bounded<T: Send + 'static>(
    work: impl Future<Output = T> + Send + 'static,
    timeout: Duration,
) -> Option<T> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    if let Ok(handle) = Handle::try_current()
        && handle.runtime_flavor() == RuntimeFlavor::MultiThread
        && !std::thread::panicking()
    {
        return tokio::task::block_in_place(|| handle.block_on(race_with_deadline(work, timeout)));
    }
    let (done_tx, done_rx) = mpsc::sync_channel::<T>(1);
    let job: BoxFuture = Box::pin(async move {
        if let Ok(Some(out)) = tokio::time::timeout(timeout, async { Some(work.await) }).await {
            let _ = done_tx.send(out);
        }
    });
    let worker = drop_worker()?;
    if worker.send(job).is_err() {
        return None;
    }
    // A little grace over the job's own timeout so a job that just finished is not reported as late.
    done_rx.recv_timeout(timeout + Duration::from_secs(1)).ok()
}

/// Polls `work` until it finishes or a timer thread says the deadline has passed. Needs no tokio timer,
/// so it works on runtimes built without one.
async fn race_with_deadline<T>(work: impl Future<Output = T>, timeout: Duration) -> Option<T> {
    let (fire_tx, fire_rx) = tokio::sync::oneshot::channel::<()>();
    let (cancel_tx, cancel_rx) = mpsc::channel::<()>();
    let timer = std::thread::Builder::new()
        .name("broker-checkin-deadline".into())
        .spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = cancel_rx.recv_timeout(timeout) {
                let _ = fire_tx.send(());
            }
        });
    if timer.is_err() {
        return Some(work.await);
    }
    let mut work = std::pin::pin!(work);
    let mut fire_rx = std::pin::pin!(fire_rx);
    let out = std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = work.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        if fire_rx.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await;
    drop(cancel_tx);
    out
}

/// The process-wide drop worker: a thread running a current-thread runtime that runs handed-over
/// check-ins concurrently.
fn drop_worker() -> Option<tokio::sync::mpsc::UnboundedSender<BoxFuture>> {
    static WORKER: OnceLock<Mutex<Option<tokio::sync::mpsc::UnboundedSender<BoxFuture>>>> =
        OnceLock::new();
    let slot = WORKER.get_or_init(|| Mutex::new(None));
    let mut slot = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(tx) = slot.as_ref().filter(|tx| !tx.is_closed()) {
        return Some(tx.clone());
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<BoxFuture>();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the check-in worker runtime: {e}");
            return None;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("broker-drop-worker".into())
        .spawn(move || {
            runtime.block_on(async move {
                while let Some(job) = rx.recv().await {
                    tokio::spawn(job);
                }
            });
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the check-in worker thread: {e}");
        return None;
    }
    *slot = Some(tx.clone());
    Some(tx)
}
