//! The drop worker: one process-wide thread with a runtime of its own, on which synchronous code
//! (`Drop`) runs async clean-up.
//!
//! A guard dropped on a current-thread runtime blocks that runtime's only thread, and one dropped
//! outside any runtime has none: either way the check-in must run elsewhere (the guard's batch waits
//! for it, bounded). A checkout dropped before it returned is given back here too, so that it needs
//! nothing of the caller's runtime, which may end right after. This module knows nothing of hosts or
//! records; the guard and the lifecycle hand it futures.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, OnceLock};

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Hands `job` to the drop worker to run concurrently with the others; `false` when the worker
/// cannot be had (logged).
pub(crate) fn hand_over(job: impl Future<Output = ()> + Send + 'static) -> bool {
    drop_worker().is_some_and(|worker| worker.send(Box::pin(job)).is_ok())
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
