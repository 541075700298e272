//! The drop worker: one process-wide thread with a runtime of its own, on which synchronous code
//! (`Drop`) runs async clean-up.
//!
//! A guard dropped on a current-thread runtime blocks that runtime's only thread, and one dropped
//! outside any runtime has none: either way the check-in must run elsewhere, and the dropping thread
//! waits for it, bounded. This module knows nothing of hosts or records; the guard and the lifecycle
//! hand it futures.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, OnceLock, mpsc};
use std::task::Poll;
use std::time::Duration;

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Hands `job` to the drop worker to run concurrently with the others; `false` when the worker
/// cannot be had (logged).
pub(crate) fn hand_over(job: impl Future<Output = ()> + Send + 'static) -> bool {
    drop_worker().is_some_and(|worker| worker.send(Box::pin(job)).is_ok())
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
    let mut slot = crate::sync::lock(slot);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn thread_name() -> String {
        std::thread::current().name().unwrap_or_default().to_owned()
    }

    /// The thread `run_bounded` ran its work on, and whether it gave up on work that is too slow.
    fn run_bounded_where_and_late() -> (Option<String>, Option<()>) {
        let name = run_bounded(async { thread_name() }, Duration::from_secs(30));
        let late = run_bounded(
            async { tokio::time::sleep(Duration::from_secs(60)).await },
            Duration::from_millis(100),
        );
        (name, late)
    }

    #[test]
    fn run_bounded_runs_on_the_callers_multi_thread_runtime_else_on_the_drop_worker() {
        let worker = Some("broker-drop-worker".to_owned());
        assert_eq!(run_bounded_where_and_late(), (worker.clone(), None));
        let current = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        assert_eq!(
            current.block_on(async { run_bounded_where_and_late() }),
            (worker, None)
        );
        // On a multi-thread runtime the work runs on the caller's runtime, which its connections
        // are bound to: here, on the calling thread.
        let multi = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        assert_eq!(
            multi.block_on(async { run_bounded_where_and_late() }),
            (Some(thread_name()), None)
        );
    }
}
