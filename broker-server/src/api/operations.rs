//! Checkouts run as operations: `POST /api/v1/checkouts` starts one and answers at once (202) with
//! the operation, which a client polls at `/api/v1/operations/{id}` (or waits for).
//!
//! An operation runs on a task of its own, so a client that goes away stops nothing. The hosts it
//! checks out stay in the inventory (their guards are kept) until a client checks them in. When
//! the server stops, every operation under way is cancelled as Ctrl-C cancels `broker checkout`:
//! what it made is given back, and what cannot be is left `pending` for `broker recover`; the
//! operation ends `interrupted`. Operations are recorded in the broker directory as they start and
//! end ([`journal`]), so a client polling one after a restart still reads how it ended.

mod journal;

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker_core::sync::lock;
use broker_core::{Broker, Cancellation, CheckoutRequest, Error, Result, Settings};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use self::journal::Journal;
use crate::problem::Problem;

/// How many finished operations are kept to be read (the oldest go first).
const KEEP_FINISHED: usize = 1000;

/// Where an operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum OperationState {
    /// Under way.
    Running,
    /// Done: its hosts are checked out.
    Succeeded,
    /// Done: nothing is checked out (all or nothing); `error` says why.
    Failed,
    /// Stopped by the server's stop (or found running in the operations file after a restart):
    /// what it had made was given back, or is `pending` in the inventory for `broker recover`.
    Interrupted,
}

/// What a checkout was asked for, as the operation shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Asked {
    /// The nick.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nick: Option<String>,
    /// How many hosts.
    #[schema(minimum = 1)]
    pub count: usize,
    /// The handoff target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handoff: Option<String>,
}

/// An operation as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Operation {
    /// Its id: `o` and 16 hex digits.
    pub id: String,
    /// What it does: `checkout`.
    #[schema(pattern = "^checkout$")]
    pub kind: &'static str,
    /// Where it is.
    pub state: OperationState,
    /// What was asked.
    pub request: Asked,
    /// When it started, seconds since the Unix epoch.
    pub created: i64,
    /// When it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished: Option<i64>,
    /// The hosts checked out (their records, secrets masked), once it succeeded.
    #[schema(value_type = Vec<crate::openapi::schemas::HostRecord>)]
    pub hosts: Vec<serde_json::Value>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Problem>,
}

/// One operation and the signal that it ended.
#[derive(Debug)]
pub(crate) struct Entry {
    doc: Mutex<Operation>,
    done: watch::Sender<bool>,
}

impl Entry {
    /// The operation as it is now.
    pub(crate) fn snapshot(&self) -> Operation {
        lock(&self.doc).clone()
    }

    /// Waits up to `limit` for the operation to end; the operation as it is then.
    pub(crate) async fn wait(&self, limit: Duration) -> Operation {
        let mut done = self.done.subscribe();
        let _ = tokio::time::timeout(limit, done.wait_for(|d| *d)).await;
        self.snapshot()
    }

    /// Ends the operation with `result` (`Err`: the state it ended in and why) and records it.
    fn finish(
        &self,
        result: std::result::Result<Vec<serde_json::Value>, (OperationState, Problem)>,
        journal: &Journal,
    ) {
        let ended = {
            let mut doc = lock(&self.doc);
            doc.finished = Some(broker_core::time::now_epoch());
            match result {
                Ok(hosts) => {
                    doc.state = OperationState::Succeeded;
                    doc.hosts = hosts;
                }
                Err((state, problem)) => {
                    doc.state = state;
                    doc.error = Some(problem);
                }
            }
            doc.clone()
        };
        journal.record(&ended);
        self.done.send_replace(true);
    }
}

/// The server's operations: those under way and the last [`KEEP_FINISHED`] finished (also those
/// of earlier runs, read from the operations file).
#[derive(Debug)]
pub struct Operations {
    entries: Mutex<VecDeque<Arc<Entry>>>,
    journal: Arc<Journal>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    cancel: Cancellation,
    stop_bound: Duration,
}

impl Operations {
    /// The operations of earlier runs, from the operations file of the settings' directory (those
    /// that were running then, `interrupted`); a stop waits for those under way as long as a
    /// stopped checkout may take (`cancel_timeout` + `checkin_timeout` of `settings`).
    ///
    /// # Errors
    /// [`broker_core::Error::Configuration`] for timeouts that are not durations;
    /// [`broker_core::Error::Io`] for an operations file that cannot be read or written.
    pub fn new(settings: &Settings) -> Result<Self> {
        let (journal, earlier) = Journal::open(settings.directory())?;
        let entries = earlier
            .into_iter()
            .map(|doc| {
                Arc::new(Entry {
                    doc: Mutex::new(doc),
                    done: watch::Sender::new(true),
                })
            })
            .collect();
        Ok(Operations {
            entries: Mutex::new(entries),
            journal: Arc::new(journal),
            tasks: Mutex::new(Vec::new()),
            cancel: Cancellation::new(),
            stop_bound: settings.cancel_timeout()? + settings.checkin_timeout()?,
        })
    }

    /// Starts checking out `request` on `broker`.
    pub(crate) fn start_checkout(
        &self,
        broker: &Broker,
        asked: Asked,
        request: CheckoutRequest,
    ) -> Arc<Entry> {
        let entry = Arc::new(Entry {
            doc: Mutex::new(Operation {
                id: operation_id(),
                kind: "checkout",
                state: OperationState::Running,
                request: asked,
                created: broker_core::time::now_epoch(),
                finished: None,
                hosts: Vec::new(),
                error: None,
            }),
            done: watch::Sender::new(false),
        });
        self.record_start(&entry);
        let broker = broker.clone();
        let request = request.cancel_with(&self.cancel);
        let journal = Arc::clone(&self.journal);
        let task = finish_when_done(Arc::clone(&entry), journal, async move {
            match broker.checkout(request).await {
                // Keeping a host writes the inventory: off the async threads.
                Ok(guards) => tokio::task::spawn_blocking(move || kept(guards))
                    .await
                    .map_err(|_| {
                        let problem = Problem::new(
                            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                            "keeping the hosts checked out failed; see `broker inventory`",
                        );
                        (OperationState::Failed, problem)
                    }),
                Err(e @ Error::Interrupted { .. }) => Err((
                    OperationState::Interrupted,
                    Problem::from(e).with_status(axum::http::StatusCode::SERVICE_UNAVAILABLE),
                )),
                Err(e) => Err((OperationState::Failed, Problem::from(e))),
            }
        });
        let mut tasks = lock(&self.tasks);
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
        drop(tasks);
        let mut entries = lock(&self.entries);
        entries.push_back(Arc::clone(&entry));
        while entries.len() > KEEP_FINISHED {
            let Some(oldest) = entries.iter().position(|e| *e.done.borrow()) else {
                break;
            };
            entries.remove(oldest);
        }
        entry
    }

    /// Records `entry` as it starts, rewriting the operations file first when it has grown long.
    fn record_start(&self, entry: &Entry) {
        if self.journal.is_long()
            && let Err(e) = self.journal.rewrite(&self.list())
        {
            tracing::warn!("cannot rewrite the operations file: {e}");
        }
        self.journal.record(&entry.snapshot());
    }

    /// The operation `id`.
    pub(crate) fn get(&self, id: &str) -> Option<Arc<Entry>> {
        lock(&self.entries)
            .iter()
            .find(|e| lock(&e.doc).id == id)
            .cloned()
    }

    /// Every operation kept, oldest first.
    pub(crate) fn list(&self) -> Vec<Operation> {
        lock(&self.entries).iter().map(|e| e.snapshot()).collect()
    }

    /// Stops every operation under way (each gives back what it made).
    pub(crate) fn cancel_all(&self) {
        self.cancel.cancel();
    }

    /// How long a stop waits for operations under way.
    pub(crate) fn stop_bound(&self) -> Duration {
        self.stop_bound
    }

    /// Waits up to `limit` for every operation's task to end.
    pub(crate) async fn wait_all(&self, limit: Duration) {
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *lock(&self.tasks));
        let all = async {
            for task in tasks {
                let _ = task.await;
            }
        };
        if tokio::time::timeout(limit, all).await.is_err() {
            tracing::warn!(
                "checkouts still under way after {limit:?}; what they left is `pending` for \
                 `broker recover`"
            );
        }
    }
}

/// Runs `work` on a task of its own and ends `entry` with its result — also when `work` panics: the
/// operation then fails (500), instead of staying `running` for ever.
fn finish_when_done(
    entry: Arc<Entry>,
    journal: Arc<Journal>,
    work: impl Future<Output = std::result::Result<Vec<serde_json::Value>, (OperationState, Problem)>>
    + Send
    + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let result = tokio::spawn(work).await.unwrap_or_else(|_| {
            let problem = Problem::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "the checkout stopped on an internal error; the server's log says where, and \
                 `broker inventory` shows what it left",
            );
            Err((OperationState::Failed, problem))
        });
        entry.finish(result, &journal);
    })
}

/// The hosts of a checkout kept (checked out until a client checks them in), as shown.
fn kept(guards: Vec<broker_core::HostGuard>) -> Vec<serde_json::Value> {
    guards
        .into_iter()
        .map(|guard| {
            let mut record = guard.keep().record().clone();
            // The inventory's record says its user holds it now, not a guard.
            record.remove(broker_core::lease::fields::GUARDED);
            crate::api::hosts::shown(&record)
        })
        .collect()
}

fn operation_id() -> String {
    let id = broker_core::RecordId::generate();
    format!("o{}", &id.as_str()[1..])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkout whose task panics ends as a failed operation, not one `running` for ever (a count
    /// of 2^64 - 1 did that once; the cause is bounded now, the guard stays).
    #[tokio::test]
    async fn an_operation_whose_work_panics_fails() {
        let entry = Arc::new(Entry {
            doc: Mutex::new(Operation {
                id: operation_id(),
                kind: "checkout",
                state: OperationState::Running,
                request: Asked::default(),
                created: 0,
                finished: None,
                hosts: Vec::new(),
                error: None,
            }),
            done: watch::Sender::new(false),
        });
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path()).unwrap();
        let task = finish_when_done(Arc::clone(&entry), Arc::new(journal), async {
            panic!("a bug")
        });
        task.await.expect("the operation's task ends");
        let done = entry.wait(Duration::from_secs(5)).await;
        assert_eq!(done.state, OperationState::Failed);
        let error = done.error.expect("why it failed");
        assert_eq!(error.status, 500);
        assert!(
            error
                .detail
                .starts_with("the checkout stopped on an internal error")
        );
    }
}
