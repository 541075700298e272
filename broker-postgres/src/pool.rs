//! Connections on threads of the store's own.
//!
//! The store's methods are synchronous and are called from anywhere, async tasks' blocking threads
//! included, where the synchronous driver (which runs a small runtime of its own) must not run. So
//! each connection lives on a worker thread; a call sends its work there and waits for the answer.
//!
//! A call whose connection breaks (the server restarted, the network dropped) or that finds the
//! server unreachable is tried again on a new connection, with a pause that doubles up to a second,
//! until its retry window ends; the first failure it tries again is said as a warning. Work sent
//! here is therefore written to be safe to repeat: each runs in one transaction, and a transaction
//! that did not commit changed nothing. A failure that trying again cannot mend (credentials
//! refused, a certificate that does not verify, a query the server refuses) is returned at once.

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

/// How long opening the store waits for a server that cannot be reached: long enough for a restart,
/// short enough that a wrong address is said soon.
pub(crate) const START_RETRY_FOR: Duration = Duration::from_secs(10);

/// The first pause before trying again; each next one is twice as long, up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(50);

/// The longest pause between two tries.
const MAX_PAUSE: Duration = Duration::from_secs(1);

impl Pool {
    /// A pool of connections to `url`, each made when first needed: a call takes the connection
    /// used last, so calls one after the other share one connection, and a new one is made only
    /// when all are busy.
    pub(crate) fn new(url: Arc<DbUrl>, retry_for: Duration) -> Self {
        let (send, receive) = mpsc::channel::<Job>();
        let receive = Arc::new(Mutex::new(receive));
        let idle: Arc<Mutex<Vec<postgres::Client>>> = Arc::default();
        for n in 0..WORKERS {
            let url = Arc::clone(&url);
            let (receive, idle) = (Arc::clone(&receive), Arc::clone(&idle));
            let spawned = std::thread::Builder::new()
                .name(format!("broker-postgres-{n}"))
                .spawn(move || {
                    loop {
                        let job = match receive.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        let mut conn = Connection {
                            url: Arc::clone(&url),
                            client: idle.lock().ok().and_then(|mut idle| idle.pop()),
                        };
                        job(&mut conn);
                        if let (Some(client), Ok(mut idle)) = (conn.client, idle.lock()) {
                            idle.push(client);
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

/// The connection a call runs on, made when there is none and again when it broke.
struct Connection {
    url: Arc<DbUrl>,
    client: Option<postgres::Client>,
}

/// Why one try on a connection failed.
enum Failed {
    /// Trying again may pass (the server restarted, cannot be reached, or two transactions clashed).
    Transient(Error),
    /// Trying again cannot mend it.
    Final(Error),
}

impl Connection {
    fn run<T>(
        &mut self,
        action: &'static str,
        retry_for: Duration,
        work: &mut Work<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + retry_for;
        let mut pause = FIRST_PAUSE;
        let mut warned = false;
        loop {
            let failure = match self.try_once(action, work) {
                Ok(out) => return Ok(out),
                Err(Failed::Final(e)) => return Err(e),
                Err(Failed::Transient(e)) => e,
            };
            if Instant::now() + pause > deadline {
                return Err(failure);
            }
            let said = broker_core::error::chain(&failure);
            if warned {
                tracing::debug!("{said}; trying again in {} ms", pause.as_millis());
            } else {
                tracing::warn!("{said}; trying again for up to {} s", retry_for.as_secs());
                warned = true;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    /// One try: a connection (made again when it broke), then `work` on it.
    fn try_once<T>(
        &mut self,
        action: &'static str,
        work: &mut Work<T>,
    ) -> std::result::Result<T, Failed> {
        let client = match self.client.take().filter(|c| !c.is_closed()) {
            Some(client) => self.client.insert(client),
            None => match self.url.try_connect() {
                Ok(client) => self.client.insert(client),
                Err(Step::Refused(e)) => return Err(Failed::Final(e)),
                Err(Step::Db(e)) => {
                    let said = self.url.error("connecting to the inventory database", &e);
                    return Err(if transient(&e) {
                        Failed::Transient(said)
                    } else {
                        Failed::Final(said)
                    });
                }
            },
        };
        match work(client) {
            Ok(out) => Ok(out),
            Err(Step::Refused(e)) => Err(Failed::Final(e)),
            Err(Step::Db(e)) => {
                let closed = client.is_closed();
                let said = self.url.error(action, &e);
                if closed || !clashed(&e) {
                    // A new connection for the next try: this one may be half gone.
                    self.client = None;
                }
                if closed || transient(&e) {
                    Err(Failed::Transient(said))
                } else {
                    Err(Failed::Final(said))
                }
            }
        }
    }
}

/// Whether a failure may pass when tried again: the connection broke or could not be made (refused,
/// reset, timed out), the server is starting, shutting down or full, or two transactions clashed.
pub(crate) fn transient(e: &postgres::Error) -> bool {
    use postgres::error::SqlState;
    use std::io::ErrorKind;
    if e.is_closed() || clashed(e) {
        return true;
    }
    if let Some(code) = e.code() {
        return [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
        ]
        .contains(code);
    }
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            // Not a TLS failure (`InvalidData`): the certificate stays wrong however often tried.
            return matches!(
                io.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::NotConnected
                    | ErrorKind::BrokenPipe
                    | ErrorKind::TimedOut
                    | ErrorKind::UnexpectedEof
                    | ErrorKind::NotFound
            );
        }
        cause = c.source();
    }
    false
}

/// Whether two transactions clashed (a deadlock, or a serialisation failure): the connection is
/// fine, the transaction may pass when run again.
fn clashed(e: &postgres::Error) -> bool {
    use postgres::error::SqlState;
    e.code().is_some_and(|code| {
        [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
        ]
        .contains(code)
    })
}
