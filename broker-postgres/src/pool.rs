//! Connections on threads of the store's own.
//!
//! The store's methods are synchronous and are called from anywhere, async tasks' blocking threads
//! included, where the synchronous driver (which runs a small runtime of its own) must not run. So
//! each connection lives on a worker thread; a call sends its work there and waits for the answer.
//!
//! A call whose connection breaks (the server restarted, the network dropped) is tried again on a
//! new connection, with a pause that doubles up to a second, until the retry window ends. Work sent
//! here is therefore written to be safe to repeat: each runs in one transaction, and a transaction
//! that did not commit changed nothing.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use broker_core::{Error, Result};

use crate::url::DbUrl;

/// Work for a connection; it runs again on a new connection when the connection broke.
pub(crate) type Work<T> = Box<dyn FnMut(&mut postgres::Client) -> StepResult<T> + Send>;

/// One try's result: the driver's errors are classified by the pool.
pub(crate) type StepResult<T> = std::result::Result<T, Step>;

/// Why one try failed.
#[derive(Debug)]
pub(crate) enum Step {
    /// The driver failed (connection lost, query refused…).
    Db(postgres::Error),
    /// The work itself refused (a sync that would remove too much): not tried again.
    Refused(Error),
}

impl From<postgres::Error> for Step {
    fn from(e: postgres::Error) -> Self {
        Step::Db(e)
    }
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// The workers and their queue.
pub(crate) struct Pool {
    url: Arc<DbUrl>,
    queue: Mutex<Option<mpsc::Sender<Job>>>,
    /// How long a call keeps trying while the server cannot be reached.
    retry_for: Duration,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("url", &self.url).finish()
    }
}

/// How many connections a store opens at most.
const WORKERS: usize = 3;

/// How long a call keeps trying a server that cannot be reached, by default.
pub(crate) const RETRY_FOR: Duration = Duration::from_secs(60);

impl Pool {
    /// A pool whose first connection is `first` (made by the caller, so that a server that cannot be
    /// reached at start is said at once).
    pub(crate) fn new(url: Arc<DbUrl>, first: postgres::Client, retry_for: Duration) -> Self {
        let (send, receive) = mpsc::channel::<Job>();
        let receive = Arc::new(Mutex::new(receive));
        let mut first = Some(first);
        for n in 0..WORKERS {
            let mut conn = Connection {
                url: Arc::clone(&url),
                client: first.take(),
            };
            let receive = Arc::clone(&receive);
            let spawned = std::thread::Builder::new()
                .name(format!("broker-postgres-{n}"))
                .spawn(move || {
                    loop {
                        let job = match receive.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(&mut conn),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!("cannot start a database connection thread: {e}");
            }
        }
        Pool {
            url,
            queue: Mutex::new(Some(send)),
            retry_for,
        }
    }

    /// Runs `work` on a connection, trying again while the server cannot be reached for up to the
    /// retry window.
    ///
    /// # Errors
    /// The driver's error once the window is over (or at once for one that trying again cannot
    /// mend), as [`Error::Io`] saying `action` and naming the URL without password.
    pub(crate) fn run<T: Send + 'static>(&self, action: &'static str, work: Work<T>) -> Result<T> {
        self.run_within(action, self.retry_for, work)
    }

    /// [`Pool::run`] with its own retry window.
    pub(crate) fn run_within<T: Send + 'static>(
        &self,
        action: &'static str,
        retry_for: Duration,
        mut work: Work<T>,
    ) -> Result<T> {
        let (answer, answered) = mpsc::channel();
        let job: Job = Box::new(move |conn: &mut Connection| {
            let _ = answer.send(conn.run(action, retry_for, &mut work));
        });
        let sent = match self.queue.lock() {
            Ok(queue) => queue.as_ref().map(|q| q.send(job).is_ok()),
            Err(_) => None,
        };
        if sent != Some(true) {
            return Err(Error::internal(
                "the inventory database's connection threads are gone",
                std::io::Error::other(self.url.shown().to_owned()),
            ));
        }
        answered.recv().unwrap_or_else(|e| {
            Err(Error::internal(
                "a database connection thread ended without an answer",
                e,
            ))
        })
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the queue ends the workers once they finish what they run.
        if let Ok(mut queue) = self.queue.lock() {
            queue.take();
        }
    }
}

/// One worker's connection, made again when it broke.
struct Connection {
    url: Arc<DbUrl>,
    client: Option<postgres::Client>,
}

impl Connection {
    fn run<T>(
        &mut self,
        action: &'static str,
        retry_for: Duration,
        work: &mut Work<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + retry_for;
        let mut pause = Duration::from_millis(50);
        loop {
            let failure = match self.client() {
                Ok(client) => match work(client) {
                    Ok(out) => return Ok(out),
                    Err(Step::Refused(e)) => return Err(e),
                    Err(Step::Db(e)) if !worth_retrying(&e, client) => {
                        return Err(self.url.error(action, e));
                    }
                    Err(Step::Db(e)) => self.url.error(action, e),
                },
                Err(e) => e,
            };
            if self
                .client
                .as_ref()
                .is_some_and(postgres::Client::is_closed)
            {
                self.client = None;
            }
            if Instant::now() + pause > deadline {
                return Err(failure);
            }
            tracing::debug!(
                "{}; trying again in {} ms",
                broker_core::error::chain(&failure),
                pause.as_millis()
            );
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    fn client(&mut self) -> Result<&mut postgres::Client> {
        if self.client.as_ref().is_none_or(postgres::Client::is_closed) {
            self.client = Some(self.url.connect()?);
        }
        self.client.as_mut().ok_or_else(|| {
            Error::internal(
                "no database connection",
                std::io::Error::other("connection missing"),
            )
        })
    }
}

/// Whether a failure may pass when tried again: the connection broke, the server is starting or
/// shutting down, or two transactions deadlocked or could not be serialised.
fn worth_retrying(e: &postgres::Error, client: &postgres::Client) -> bool {
    use postgres::error::SqlState;
    if client.is_closed() || e.is_closed() {
        return true;
    }
    match e.code() {
        None => e.as_db_error().is_none(),
        Some(code) => [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
        ]
        .contains(code),
    }
}
