//! The `Broker` facade: check out, check in, extend, execute, sync, recover.
//!
//! One checkout reads top-down in [`Broker::checkout`]: resolve the request (nick, args file,
//! arguments) → pick the provider by action key → for each host: record intent (`pending`) → ask the
//! provider → record `ready` → hand out a [`HostGuard`]. When one host of several fails, the others are
//! checked in again (all or nothing) unless the request keeps partial results.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_yaml::{Mapping, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::args::layer;
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::guard::HostGuard;
use crate::host::{FromHost, Host, HostRecord, HostState, Owner, RecordId, fields};
use crate::inventory::{InventoryStore, ProviderListing, SyncReport, YamlFileStore};
use crate::provider::{CheckoutContext, Operation, Provider, ProviderKind, ProviderRegistry};
use crate::settings::Settings;
use crate::sync::lock;

/// What to check out: a nick, arguments and a count.
///
/// Arguments are layered: the nick's, then the args file's, then those given here (later wins).
///
/// ```
/// use broker_core::CheckoutRequest;
///
/// let request = CheckoutRequest::new()
///     .nick("rhel9")
///     .arg("deploy_rhel_version", "9.4")
///     .count(2);
/// assert_eq!(request.host_count(), 2);
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct CheckoutRequest {
    nick: Option<String>,
    file_args: Mapping,
    args: Mapping,
    count: Option<usize>,
    keep_partial: bool,
    labels: Mapping,
    cancellation: Option<Cancellation>,
}

impl CheckoutRequest {
    /// An empty request (one host).
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses the arguments of a nick from the settings.
    pub fn nick(mut self, name: impl Into<String>) -> Self {
        self.nick = Some(name.into());
        self
    }

    /// Adds arguments from an args file (they override the nick, and are overridden by
    /// [`CheckoutRequest::arg`]).
    pub fn args_file(mut self, args: Mapping) -> Self {
        self.file_args = layer(self.file_args, args);
        self
    }

    /// Sets one argument, e.g. `test_action`, `workflow`, or `AnsibleTower` (the instance to use).
    pub fn arg(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.args.insert(Value::String(key.into()), value.into());
        self
    }

    /// Sets several arguments.
    pub fn args(mut self, args: Mapping) -> Self {
        self.args = layer(self.args, args);
        self
    }

    /// How many hosts to check out (default 1; 0 makes the checkout fail with [`Error::Usage`]).
    pub fn count(mut self, count: usize) -> Self {
        self.count = Some(count);
        self
    }

    /// Keeps the hosts that were made when others fail, instead of checking them in again.
    pub fn keep_partial(mut self, keep: bool) -> Self {
        self.keep_partial = keep;
        self
    }

    /// Labels for providers that support them (`-l k=v,…`).
    pub fn provider_labels(mut self, labels: Mapping) -> Self {
        self.labels = layer(self.labels, labels);
        self
    }

    /// The number of hosts asked for.
    pub fn host_count(&self) -> usize {
        self.count.unwrap_or(1)
    }

    /// Lets `cancellation` stop the checkout: no further host is started, provider calls under way
    /// are given `cancel_timeout` to answer, and every host made is checked in again; the checkout
    /// then fails with [`Error::Interrupted`] saying what was given back and what is left.
    pub fn cancel_with(mut self, cancellation: &Cancellation) -> Self {
        self.cancellation = Some(cancellation.clone());
        self
    }
}

/// Asks running checkouts to stop, e.g. on Ctrl-C (see [`CheckoutRequest::cancel_with`]).
///
/// Stopping is cooperative rather than abrupt: a provider call already under way may complete at
/// the provider even when its caller goes away (an engine finishes a create whose request was
/// dropped), so broker waits for its answer and gives back what it made.
///
/// ```
/// let stop = broker_core::Cancellation::new();
/// assert!(!stop.is_cancelled());
/// stop.cancel();
/// assert!(stop.is_cancelled());
/// ```
#[derive(Debug, Clone)]
pub struct Cancellation {
    state: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for Cancellation {
    fn default() -> Self {
        Self::new()
    }
}

impl Cancellation {
    /// A cancellation not yet asked for.
    pub fn new() -> Self {
        Cancellation {
            state: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }

    /// Asks everything watching this cancellation to stop.
    pub fn cancel(&self) {
        self.state.send_replace(true);
    }

    /// Whether [`Cancellation::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        *self.state.borrow()
    }

    /// Completes once [`Cancellation::cancel`] has been called.
    pub async fn cancelled(&self) {
        let mut seen = self.state.subscribe();
        // The sender lives as long as `self`, so waiting cannot fail.
        let _ = seen.wait_for(|stopped| *stopped).await;
    }
}

/// What stops the tasks of one checkout: the caller's cancellation, or the checkout's own, which is
/// set when the checkout's future is dropped.
#[derive(Debug, Clone)]
struct Stop {
    own: Cancellation,
    caller: Option<Cancellation>,
}

impl Stop {
    fn is_set(&self) -> bool {
        self.own.is_cancelled() || self.caller.as_ref().is_some_and(Cancellation::is_cancelled)
    }

    async fn wait(&self) {
        match &self.caller {
            Some(caller) => tokio::select! {
                () = self.own.cancelled() => {}
                () = caller.cancelled() => {}
            },
            None => self.own.cancelled().await,
        }
    }

    /// Runs a provider call to its end; once a stop is asked for, waits at most `grace` more for
    /// its answer (`None`: it did not come, and the call was dropped).
    async fn finish_or_abandon<T>(
        &self,
        call: impl Future<Output = T>,
        grace: Duration,
    ) -> Option<T> {
        let mut call = std::pin::pin!(call);
        tokio::select! {
            biased;
            out = &mut call => return Some(out),
            () = self.wait() => {}
        }
        tokio::time::timeout(grace, call).await.ok()
    }
}

/// How one host of a checkout ended.
#[derive(Debug)]
enum HostAttempt {
    /// Made and recorded `ready`.
    Made(HostRecord),
    /// The provider failed (and what it left was cleaned up).
    Failed(Error),
    /// The checkout failed, and giving back what it had made of the host failed too: the intent
    /// record stays `pending`, with the clean-up's error.
    FailedAndLeft {
        /// Why the checkout failed.
        error: Error,
        /// The host, as its record names it.
        host: String,
        /// Why giving it back failed.
        cleanup: Error,
    },
    /// Stopped before the provider was asked.
    NotStarted,
    /// Stopped; the host (or whatever the provider had made of it) was given back.
    GivenBack(String),
    /// Stopped; giving the host back failed, so its record stays.
    Left(String, Error),
}

/// What a stopped checkout did with its hosts, for the message the caller gets.
#[derive(Debug, Default)]
struct Stopped {
    given_back: Vec<String>,
    left: Vec<(String, Error)>,
    failed: Vec<(usize, Error)>,
    not_started: usize,
}

impl Stopped {
    fn describe(&self) -> String {
        use std::fmt::Write;
        let mut out = "checkout stopped".to_owned();
        if self.given_back.is_empty() {
            out.push_str("; no host was made");
        } else {
            let _ = write!(out, "; checked in again: {}", self.given_back.join(", "));
        }
        if self.not_started > 0 {
            let _ = write!(out, "; {} not started", self.not_started);
        }
        for (index, e) in &self.failed {
            let _ = write!(out, "; #{} failed: {}", index + 1, crate::error::chain(e));
        }
        if !self.left.is_empty() {
            let names: Vec<&str> = self.left.iter().map(|(n, _)| n.as_str()).collect();
            let _ = write!(out, "; still checked out: ");
            for (n, (name, e)) in self.left.iter().enumerate() {
                let sep = if n == 0 { "" } else { ", " };
                let _ = write!(out, "{sep}{name} ({})", crate::error::chain(e));
            }
            let _ = write!(
                out,
                "; release them with `broker checkin {}` or `broker recover --all`",
                names.join(" ")
            );
        }
        out
    }
}

/// The tasks making the hosts of one checkout.
///
/// Each task delivers its outcome through a channel rather than its join handle, so that a host made
/// after the caller went away is never dropped silently: when the checkout's future is dropped (a
/// caller's `timeout` or `select!`), the run is stopped, not aborted — tasks finish the provider call
/// under way (within `cancel_timeout`) and give back what they made, and hosts already delivered but
/// not yet received are checked in again.
struct CheckoutRun {
    inner: Arc<BrokerInner>,
    stop: Stop,
    tasks: JoinSet<()>,
    task_index: HashMap<tokio::task::Id, usize>,
    sender: tokio::sync::mpsc::UnboundedSender<(usize, HostAttempt)>,
    receiver: tokio::sync::mpsc::UnboundedReceiver<(usize, HostAttempt)>,
    finished: bool,
}

impl CheckoutRun {
    fn new(inner: Arc<BrokerInner>, stop: Stop) -> Self {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        CheckoutRun {
            inner,
            stop,
            tasks: JoinSet::new(),
            task_index: HashMap::new(),
            sender,
            receiver,
            finished: false,
        }
    }

    fn spawn(&mut self, index: usize, work: impl Future<Output = HostAttempt> + Send + 'static) {
        let sender = self.sender.clone();
        let inner = Arc::clone(&self.inner);
        let task = self.tasks.spawn(async move {
            let attempt = work.await;
            if let Err(undelivered) = sender.send((index, attempt))
                && let (_, HostAttempt::Made(record)) = undelivered.0
            {
                inner.checkin_many(vec![record], None).await;
            }
        });
        self.task_index.insert(task.id(), index);
    }

    /// Every task's outcome, in request order.
    async fn finish(&mut self) -> Vec<(usize, HostAttempt)> {
        let mut out = Vec::new();
        while let Some(joined) = self.tasks.join_next_with_id().await {
            // A provider that panics fails its host, not the whole process.
            if let Err(e) = joined {
                let index = self.task_index.get(&e.id()).copied().unwrap_or_default();
                let failure = Error::internal("the checkout task failed", e);
                out.push((index, HostAttempt::Failed(failure)));
            }
        }
        while let Ok(delivered) = self.receiver.try_recv() {
            out.push(delivered);
        }
        self.finished = true;
        out.sort_by_key(|(i, _)| *i);
        out
    }
}

impl Drop for CheckoutRun {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.stop.own.cancel();
        self.tasks.detach_all();
        self.receiver.close();
        let mut undelivered = Vec::new();
        while let Ok((_, attempt)) = self.receiver.try_recv() {
            if let HostAttempt::Made(record) = attempt {
                undelivered.push(record);
            }
        }
        if undelivered.is_empty() {
            return;
        }
        let inner = Arc::clone(&self.inner);
        let give_back = async move {
            inner.checkin_many(undelivered, None).await;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(give_back);
            }
            Err(_) => {
                let _ = crate::guard::run_bounded(give_back, self.inner.checkin_timeout);
            }
        }
    }
}

/// A checkout request resolved against the settings and the registry.
#[derive(Debug, Clone)]
struct Resolved {
    kind: ProviderKind,
    instance: Option<String>,
    args: Mapping,
    count: usize,
}

/// What happened to one host of a `checkin`, `extend` or `recover`.
#[derive(Debug)]
pub struct HostOutcome {
    /// The host's record as it was before the operation.
    pub record: HostRecord,
    /// How it went.
    pub result: Result<()>,
}

/// The first of `keys` given in `args`: the action a request runs.
fn first_action<'a>(keys: &[&'a str], args: &Mapping) -> &'a str {
    keys.iter()
        .copied()
        .find(|k| args.contains_key(*k))
        .unwrap_or_default()
}

/// Which left-over records `recover` handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecoverScope {
    /// `pending` or `releasing` records whose owning process is gone (the default).
    Orphaned,
    /// Every `pending` or `releasing` record, whoever owns it.
    Unfinished,
    /// Every record this process owns, in any state (after an interrupted checkout).
    ThisProcess,
}

type ProviderKey = (String, Option<String>);

pub(crate) struct BrokerInner {
    settings: Settings,
    registry: ProviderRegistry,
    pub(crate) store: Arc<dyn InventoryStore>,
    /// Providers built so far, by (provider, instance).
    providers: Mutex<HashMap<ProviderKey, Arc<dyn Provider>>>,
    pub(crate) checkin_timeout: Duration,
    cancel_timeout: Duration,
    pub(crate) keep_on_failure: Option<Duration>,
    thread_limit: Option<usize>,
    origin: Mutex<Option<String>>,
    /// Whom providers ask when they must ([`Broker::set_interaction`]).
    asker: crate::interaction::Asker,
    /// Ready records waiting to be written together (see `put_grouped`).
    grouped: Mutex<GroupedPuts>,
}

#[derive(Default)]
struct GroupedPuts {
    /// Records to write, each with where to say whether its write succeeded.
    waiting: Vec<(HostRecord, tokio::sync::oneshot::Sender<bool>)>,
    writing: bool,
}

/// The task writing grouped records; a writer dropped mid-way lets the next caller write.
struct GroupWriter<'a> {
    inner: &'a BrokerInner,
    finished: bool,
}

impl GroupWriter<'_> {
    async fn drain(&mut self) {
        loop {
            let batch = {
                let mut queue = lock(&self.inner.grouped);
                if queue.waiting.is_empty() {
                    queue.writing = false;
                    self.finished = true;
                    return;
                }
                std::mem::take(&mut queue.waiting)
            };
            let (records, done): (Vec<HostRecord>, Vec<_>) = batch.into_iter().unzip();
            let written = self.inner.put_many(records).await.is_ok();
            for tx in done {
                let _ = tx.send(written);
            }
        }
    }
}

impl Drop for GroupWriter<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Dropped before the queue was empty: records still waiting fail (their senders drop), and
        // the next caller writes.
        let mut queue = lock(&self.inner.grouped);
        queue.writing = false;
        queue.waiting.clear();
    }
}

/// The entry point of the library.
///
/// ```no_run
/// use broker_core::{Broker, CheckoutRequest, Settings};
///
/// # async fn demo(registry: broker_core::ProviderRegistry) -> broker_core::Result<()> {
/// let broker = Broker::new(Settings::load()?, registry)?;
/// let host = broker
///     .checkout_one(CheckoutRequest::new().arg("test_action", "basic"))
///     .await?;
/// let out = host.execute("hostname").await?;
/// assert!(out.success());
/// host.checkin().await?; // or let it drop
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Broker {
    inner: Arc<BrokerInner>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("directory", &self.inner.settings.directory())
            .field("providers", &self.inner.registry.names())
            .field("inventory", &self.inner.store.location())
            .finish()
    }
}

impl Broker {
    /// A broker over the settings' `inventory.yaml`.
    ///
    /// # Errors
    /// [`Error::Configuration`] for invalid timeouts in the settings.
    pub fn new(settings: Settings, registry: ProviderRegistry) -> Result<Self> {
        let store = Arc::new(YamlFileStore::new(
            settings.inventory_path(),
            settings.inventory_lock_timeout()?,
        ));
        Self::with_store(settings, registry, store)
    }

    /// A broker over another inventory store.
    ///
    /// # Errors
    /// [`Error::Configuration`] for invalid timeouts in the settings.
    pub fn with_store(
        settings: Settings,
        registry: ProviderRegistry,
        store: Arc<dyn InventoryStore>,
    ) -> Result<Self> {
        Ok(Broker {
            inner: Arc::new(BrokerInner {
                checkin_timeout: settings.checkin_timeout()?,
                cancel_timeout: settings.cancel_timeout()?,
                keep_on_failure: settings.keep_on_failure()?,
                thread_limit: settings.thread_limit(),
                settings,
                registry,
                store,
                providers: Mutex::new(HashMap::new()),
                origin: Mutex::new(None),
                asker: crate::interaction::Asker::default(),
                grouped: Mutex::new(GroupedPuts::default()),
            }),
        })
    }

    /// The settings in use.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The providers compiled in.
    pub fn registry(&self) -> &ProviderRegistry {
        &self.inner.registry
    }

    /// The inventory store.
    pub fn inventory(&self) -> &dyn InventoryStore {
        &*self.inner.store
    }

    /// Sets the origin recorded with each checkout (`_broker_origin`); by default the test's thread
    /// name, or the program name and user.
    pub fn set_origin(&self, origin: impl Into<String>) {
        *lock(&self.inner.origin) = Some(origin.into());
    }

    /// Sets whom providers ask when they must ask the user something (e.g. AnsibleTower's
    /// `dangling_behavior: prompt`); without it nobody is asked
    /// ([`NonInteractive`](crate::interaction::NonInteractive)) and providers take their
    /// non-interactive course. It reaches providers already in use too.
    pub fn set_interaction(&self, interaction: Arc<dyn crate::interaction::Interaction>) {
        self.inner.asker.set(interaction);
    }

    /// Checks out the hosts a request asks for, all or nothing.
    ///
    /// # Errors
    /// [`Error::User`] when no provider matches the arguments or the nick is unknown; the provider's
    /// error for a single host; [`Error::CheckoutFailed`] naming each failure when several were asked.
    pub async fn checkout(&self, request: CheckoutRequest) -> Result<Vec<HostGuard>> {
        self.checkout_as::<Host>(request).await
    }

    /// Checks out exactly one host.
    ///
    /// # Errors
    /// As [`Broker::checkout`].
    pub async fn checkout_one(&self, request: CheckoutRequest) -> Result<HostGuard> {
        let mut guards = self.checkout_as::<Host>(request.count(1)).await?;
        guards
            .pop()
            .ok_or_else(|| Error::user("the provider returned no host"))
    }

    /// Checks out hosts wrapped in a test framework's own host type.
    ///
    /// # Errors
    /// As [`Broker::checkout`], plus the wrapper's own error (the hosts are then checked in).
    pub async fn checkout_as<H: FromHost>(
        &self,
        request: CheckoutRequest,
    ) -> Result<Vec<HostGuard<H>>> {
        let resolved = self.resolve(&request)?;
        let provider = self
            .inner
            .provider(&resolved.kind, resolved.instance.as_deref())?;
        tracing::info!(
            provider = resolved.kind.name(),
            instance = provider.instance().unwrap_or("-"),
            count = resolved.count,
            "checking out"
        );
        crate::report::action(
            resolved.kind.name(),
            first_action(resolved.kind.checkout_action_keys(), &resolved.args),
            &resolved.args,
        );
        let limit = self.inner.thread_limit.unwrap_or(resolved.count).max(1);
        let permits = Arc::new(Semaphore::new(limit));
        let args = Arc::new(resolved.args);
        let stop = Stop {
            own: Cancellation::new(),
            caller: request.cancellation.clone(),
        };
        let mut run = CheckoutRun::new(Arc::clone(&self.inner), stop.clone());
        for index in 0..resolved.count {
            let inner = Arc::clone(&self.inner);
            let provider = Arc::clone(&provider);
            let args = Arc::clone(&args);
            let permits = Arc::clone(&permits);
            let stop = stop.clone();
            run.spawn(index, async move {
                let _permit = permits.acquire_owned().await;
                inner.checkout_single(provider, &args, index, &stop).await
            });
        }
        let attempts = run.finish().await;

        let mut made: Vec<(usize, HostRecord)> = Vec::new();
        let mut failures: Vec<(usize, Error)> = Vec::new();
        let mut stopped = Stopped::default();
        for (index, attempt) in attempts {
            match attempt {
                HostAttempt::Made(record) => made.push((index, record)),
                HostAttempt::Failed(e) => failures.push((index, e)),
                HostAttempt::FailedAndLeft {
                    error,
                    host,
                    cleanup,
                } => {
                    failures.push((index, error));
                    stopped.left.push((host, cleanup));
                }
                HostAttempt::NotStarted => stopped.not_started += 1,
                HostAttempt::GivenBack(name) => stopped.given_back.push(name),
                HostAttempt::Left(name, e) => stopped.left.push((name, e)),
            }
        }

        if stop.is_set() {
            // Hosts made before the stop was asked for go back too: no one will receive them.
            let outcomes = self
                .inner
                .checkin_many(made.into_iter().map(|(_, r)| r).collect(), None)
                .await;
            for o in outcomes {
                match o.result {
                    Ok(()) => stopped.given_back.push(o.record.display_name()),
                    Err(e) => stopped.left.push((o.record.display_name(), e)),
                }
            }
            stopped.failed = failures;
            return Err(Error::Interrupted {
                message: stopped.describe(),
            });
        }

        if !failures.is_empty() {
            // Hosts whose failed checkout could not be cleaned up are still out, whatever happens to
            // the others.
            let failed_left = std::mem::take(&mut stopped.left);
            if resolved.count == 1 && made.is_empty() && failed_left.is_empty() {
                return Err(failures.remove(0).1);
            }
            let (rolled_back, kept, mut left) = if request.keep_partial {
                let names = made.iter().map(|(_, r)| r.display_name()).collect();
                (Vec::new(), names, Vec::new())
            } else {
                let outcomes = self
                    .inner
                    .checkin_many(made.into_iter().map(|(_, r)| r).collect(), None)
                    .await;
                let mut rolled_back = Vec::new();
                let mut left = Vec::new();
                for o in outcomes {
                    match o.result {
                        Ok(()) => rolled_back.push(o.record.display_name()),
                        Err(e) => {
                            tracing::error!(host = %o.record.display_name(), "rolling back failed; the record stays in the inventory");
                            left.push((o.record.display_name(), e));
                        }
                    }
                }
                (rolled_back, Vec::new(), left)
            };
            left.splice(0..0, failed_left);
            return Err(Error::CheckoutFailed {
                requested: resolved.count,
                failures,
                rolled_back,
                kept,
                left,
            });
        }

        let mut guards = Vec::with_capacity(made.len());
        let mut records = made.into_iter().map(|(_, r)| r);
        let batch = crate::guard::Batch::new();
        while let Some(record) = records.next() {
            match HostGuard::<H>::new(
                Arc::clone(&self.inner),
                Arc::clone(&provider),
                record.clone(),
                Arc::clone(&batch),
            ) {
                Ok(guard) => guards.push(guard),
                Err(e) => {
                    // Guards already made check themselves in when dropped; the rest go back explicitly.
                    let rest: Vec<HostRecord> = std::iter::once(record).chain(records).collect();
                    let _ = self.inner.checkin_many(rest, None).await;
                    return Err(e);
                }
            }
        }
        Ok(guards)
    }

    /// Checks hosts out, runs `body` with them, and checks them in afterwards, also when `body`
    /// panics (the guards are dropped while unwinding).
    ///
    /// # Errors
    /// As [`Broker::checkout`], or the check-in error after `body` returned.
    pub async fn with_hosts<T>(
        &self,
        request: CheckoutRequest,
        body: impl AsyncFnOnce(&[Host]) -> T,
    ) -> Result<T> {
        let guards = self.checkout(request).await?;
        let hosts: Vec<Host> = guards.iter().map(|g| (**g).clone()).collect();
        let out = body(&hosts).await;
        let mut first_error = None;
        for guard in guards {
            if let Err(e) = guard.checkin().await {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Checks in hosts from the inventory (in parallel up to `thread_limit`, or one at a time).
    /// Already-gone hosts count as checked in. Each host's outcome is reported; a failure leaves that
    /// host's record in place.
    ///
    /// A `pending` record whose owner is still alive is a checkout under way: its host may not exist
    /// yet, so checking it in would find nothing, drop the record and call the host gone while the
    /// checkout goes on to make it. Such a record is left alone, and its outcome is an
    /// [`Error::User`] naming the process that holds it.
    pub async fn checkin(&self, records: Vec<HostRecord>, sequential: bool) -> Vec<HostOutcome> {
        let limit = if sequential { Some(1) } else { None };
        let (busy, free): (Vec<_>, Vec<_>) = records
            .into_iter()
            .enumerate()
            .partition(|(_, r)| checkout_under_way(r).is_some());
        let (order, free): (Vec<usize>, Vec<HostRecord>) = free.into_iter().unzip();
        let mut outcomes: Vec<(usize, HostOutcome)> = order
            .into_iter()
            .zip(self.inner.checkin_many(free, limit).await)
            .collect();
        outcomes.extend(busy.into_iter().map(|(i, record)| {
            let holder = checkout_under_way(&record).unwrap_or_default();
            let result = Err(Error::user(format!(
                "host {} is still being checked out by {holder}; check it in once that checkout \
                 has finished (or, if that process is gone, `broker recover`)",
                record.display_name()
            )));
            (i, HostOutcome { record, result })
        }));
        outcomes.sort_by_key(|(i, _)| *i);
        outcomes.into_iter().map(|(_, o)| o).collect()
    }

    /// Extends hosts' leases at their providers, each through its own provider instance. When an
    /// argument is one a host's provider does not take ([`ProviderKind::check_arguments`]), no host
    /// is extended and each outcome carries that usage error.
    pub async fn extend(&self, records: Vec<HostRecord>, args: Mapping) -> Vec<HostOutcome> {
        let refused = records.iter().find_map(|r| {
            let kind = self.inner.registry.get(r.provider()?)?;
            kind.check_arguments(Operation::Extend, &args).err()
        });
        if let Some(e) = refused {
            let message = e.to_string();
            return records
                .into_iter()
                .map(|record| HostOutcome {
                    record,
                    result: Err(Error::usage(message.clone())),
                })
                .collect();
        }
        let args = Arc::new(args);
        let limit = records.len();
        for_each_host(records, limit, |record| {
            let inner = Arc::clone(&self.inner);
            let args = Arc::clone(&args);
            async move {
                let provider = inner.provider_for(&record)?;
                crate::report::action(provider.name(), "extend", &args);
                provider
                    .extend(&record, &args)
                    .await
                    .map_err(|e| e.with_host(&record.display_name()))
            }
        })
        .await
    }

    /// Runs a provider action that is not a checkout (`broker execute`).
    ///
    /// # Errors
    /// [`Error::User`] when no provider matches; the provider's error.
    pub async fn execute(&self, request: CheckoutRequest) -> Result<Value> {
        let args = self.layered_args(&request)?;
        let (kind, instance, args) = self.split_instance(args, |r, a| r.for_execute(a))?;
        kind.check_arguments(Operation::Execute, &args)?;
        let provider = self.inner.provider(&kind, instance.as_deref())?;
        crate::report::action(
            kind.name(),
            first_action(kind.execute_action_keys(), &args),
            &args,
        );
        provider.execute(&args).await
    }

    /// Answers a discovery query of a provider (`broker providers NAME --flag`).
    ///
    /// # Errors
    /// Unknown provider or instance; the provider's error.
    pub async fn provider_help(
        &self,
        provider: &str,
        instance: Option<&str>,
        query: &Mapping,
    ) -> Result<Value> {
        let kind = *self.inner.registry.require(provider)?;
        let provider = self.inner.provider(&kind, instance)?;
        crate::report::action(kind.name(), "provider_help", query);
        provider.help(query).await
    }

    /// Pulls a provider's view of its hosts into the inventory: `Provider`, `Provider:arg`,
    /// `Provider::instance` or `Provider:arg::instance`. Only that instance's records are replaced,
    /// and only records that were `ready` before the provider was listed may go (see
    /// [`merge_sync`](crate::inventory::merge_sync)). A sync that would remove many records is
    /// refused: see [`Broker::sync_inventory_forced`].
    ///
    /// # Errors
    /// Unknown provider or instance; the provider's error; [`Error::SyncRefused`]; inventory errors.
    pub async fn sync_inventory(&self, spec: &str) -> Result<SyncReport> {
        self.sync(spec, false).await
    }

    /// As [`Broker::sync_inventory`], removing every record the provider no longer lists however
    /// many that is (`broker inventory --sync X --force`).
    ///
    /// # Errors
    /// Unknown provider or instance; the provider's error; inventory errors.
    pub async fn sync_inventory_forced(&self, spec: &str) -> Result<SyncReport> {
        self.sync(spec, true).await
    }

    async fn sync(&self, spec: &str, force: bool) -> Result<SyncReport> {
        let (head, instance) = match spec.split_once("::") {
            Some((h, i)) => (h, Some(i).filter(|i| !i.is_empty())),
            None => (spec, None),
        };
        let (name, arg) = match head.split_once(':') {
            Some((n, a)) => (n, Some(a).filter(|a| !a.is_empty())),
            None => (head, None),
        };
        let kind = *self.inner.registry.require(name)?;
        let provider = self.inner.provider(&kind, instance)?;
        let store = Arc::clone(&self.inner.store);
        // What the inventory held before the provider was asked: hosts checked out from now on may
        // be missing from the listing, and must not be taken for gone.
        let before = blocking({
            let store = Arc::clone(&store);
            move || store.list()
        })
        .await?;
        let reported = provider.inventory(arg).await?;
        let mut listing =
            ProviderListing::new(kind.name(), provider.instance(), before, reported).force(force);
        blocking(move || {
            listing.reported =
                stored_form(&*store, std::mem::take(&mut listing.reported), |_| true);
            store.sync_provider(listing)
        })
        .await
    }

    /// Hosts from the inventory, optionally filtered, attached to their providers.
    ///
    /// # Errors
    /// Inventory errors, a bad filter, or a record whose provider is not compiled in.
    pub fn from_inventory(&self, filter: Option<&str>) -> Result<Vec<Host>> {
        let records = self.inner.store.list()?;
        let selected = match filter {
            Some(f) => {
                let filter = Filter::parse(f, "inv")?;
                filter
                    .select(&records)
                    .into_iter()
                    .map(|i| records[i].clone())
                    .collect()
            }
            None => records,
        };
        selected
            .into_iter()
            .map(|record| self.attach(record))
            .collect()
    }

    /// A host from an inventory record, attached to its provider (for sessions).
    ///
    /// # Errors
    /// A record whose provider is not compiled in, or whose instance is not configured.
    pub fn attach(&self, record: HostRecord) -> Result<Host> {
        let provider = self.inner.provider_for(&record)?;
        Ok(Host::new(record, provider))
    }

    /// Checks out again with each host's recorded arguments (`broker duplicate`); the new hosts are
    /// kept in the inventory.
    ///
    /// # Errors
    /// [`Error::User`] before anything is checked out when a record's secret arguments were stored
    /// masked (the inventory is readable by others); the first checkout error (hosts already
    /// duplicated stay checked out).
    pub async fn duplicate(&self, records: &[HostRecord], count: usize) -> Result<Vec<HostRecord>> {
        self.duplicate_cancellable(records, count, &Cancellation::new())
            .await
    }

    /// As [`Broker::duplicate`], stopped by `cancellation` as [`CheckoutRequest::cancel_with`] says.
    ///
    /// # Errors
    /// As [`Broker::duplicate`]; [`Error::Interrupted`] when stopped.
    pub async fn duplicate_cancellable(
        &self,
        records: &[HostRecord],
        count: usize,
        cancellation: &Cancellation,
    ) -> Result<Vec<HostRecord>> {
        for record in records {
            let not_stored = crate::redact::masked_keys(&record.args());
            if !not_stored.is_empty() {
                return Err(Error::user(format!(
                    "host {} was checked out with secret arguments the inventory does not hold \
                     (`{}`: `{}` can be read by others, so they were stored masked); check it out \
                     again with `broker checkout`, giving them, or keep the inventory private \
                     (`chmod 600`) before checking out",
                    record.display_name(),
                    not_stored.join("`, `"),
                    self.inner.store.location()
                )));
            }
        }
        let mut out = Vec::new();
        for record in records {
            let mut args = record.args();
            args.shift_remove("_broker_origin");
            args.shift_remove("_jenkins_url");
            if let (Some(provider), Some(instance)) = (record.provider(), record.instance()) {
                args.insert(Value::from(provider), Value::from(instance));
            }
            let request = CheckoutRequest::new()
                .args(args)
                .count(count)
                .cancel_with(cancellation);
            let guards = self.checkout(request).await?;
            out.extend(guards.into_iter().map(|g| g.keep().record().clone()));
        }
        Ok(out)
    }

    /// Resolves records left `pending` or `releasing` (by a crash, a kill or a timeout): checks each in
    /// at its provider (which finds even half-made hosts by the record's identity) and removes the
    /// record.
    ///
    /// # Errors
    /// Inventory errors; per-host failures are in the outcomes.
    pub async fn recover(&self, scope: RecoverScope) -> Result<Vec<HostOutcome>> {
        let me = Owner::current();
        let records: Vec<HostRecord> = self
            .inner
            .store
            .list()?
            .into_iter()
            .filter(|r| {
                let unfinished = r.state() != HostState::Ready;
                match scope {
                    RecoverScope::Unfinished => unfinished,
                    RecoverScope::Orphaned => unfinished && r.owner().is_some_and(|o| o.is_dead()),
                    RecoverScope::ThisProcess => r.owner().is_some_and(|o| &o == me),
                }
            })
            .collect();
        Ok(self.inner.checkin_many(records, None).await)
    }

    fn layered_args(&self, request: &CheckoutRequest) -> Result<Mapping> {
        let nick = match &request.nick {
            Some(name) => self.inner.settings.nick(name)?,
            None => Mapping::new(),
        };
        let mut args = layer(layer(nick, request.file_args.clone()), request.args.clone());
        let mut labels = match args.shift_remove("provider_labels") {
            Some(Value::Mapping(m)) => m,
            Some(Value::String(s)) => crate::args::parse_labels(&s),
            _ => Mapping::new(),
        };
        labels = layer(labels, request.labels.clone());
        if !labels.is_empty() {
            args.insert("provider_labels".into(), Value::Mapping(labels));
        }
        Ok(args)
    }

    fn split_instance(
        &self,
        mut args: Mapping,
        pick: impl for<'r> Fn(
            &'r ProviderRegistry,
            &Mapping,
        ) -> Option<(&'r ProviderKind, &'static str)>,
    ) -> Result<(ProviderKind, Option<String>, Mapping)> {
        let kind = match pick(&self.inner.registry, &args) {
            Some((kind, _)) => *kind,
            None => {
                let mut keys: Vec<&str> = self.inner.registry.all_action_keys().collect();
                keys.sort_unstable();
                keys.dedup();
                let given: Vec<String> = args
                    .keys()
                    .filter_map(|k| k.as_str().map(str::to_owned))
                    .collect();
                return Err(Error::user(format!(
                    "could not determine a provider from the arguments ({}); give one of: {}",
                    if given.is_empty() {
                        "none given".to_owned()
                    } else {
                        given.join(", ")
                    },
                    keys.join(", ")
                )));
            }
        };
        let instance = match args.shift_remove(kind.name()) {
            Some(Value::String(s)) => Some(s),
            Some(Value::Null) | None => None,
            Some(other) => Some(
                serde_yaml::to_string(&other)
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
            ),
        };
        // Instance selectors of other providers are not arguments either.
        for other in self.inner.registry.names() {
            args.shift_remove(other);
        }
        Ok((kind, instance, args))
    }

    fn resolve(&self, request: &CheckoutRequest) -> Result<Resolved> {
        let mut args = self.layered_args(request)?;
        let count_arg = match args
            .shift_remove("_count")
            .or_else(|| args.shift_remove("count"))
        {
            None => None,
            Some(v) => Some(
                crate::value::scalar_u64(&v)
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| {
                        Error::usage(format!(
                            "the count of hosts must be a whole number (1 or more), not `{}`",
                            serde_yaml::to_string(&v).unwrap_or_default().trim()
                        ))
                    })?,
            ),
        };
        // Zero hosts is a mistake to report, not a request for one host.
        let count = request.count.or(count_arg).unwrap_or(1);
        if count == 0 {
            return Err(Error::usage(
                "a count of 0 asks for no host; give 1 or more",
            ));
        }
        let (kind, instance, mut args) = self.split_instance(args, |r, a| r.for_checkout(a))?;
        kind.check_arguments(Operation::Checkout, &args)?;
        if !args.contains_key("_broker_origin") {
            args.insert("_broker_origin".into(), Value::from(self.origin()));
        }
        if let Ok(url) = std::env::var("BUILD_URL")
            && !url.is_empty()
            && !args.contains_key("_jenkins_url")
        {
            args.insert("_jenkins_url".into(), Value::from(url));
        }
        Ok(Resolved {
            kind,
            instance,
            args,
            count,
        })
    }

    fn origin(&self) -> String {
        if let Some(origin) = lock(&self.inner.origin).clone() {
            return origin;
        }
        let user = crate::host::current_user();
        match std::thread::current().name() {
            Some(name) if name != "main" && !name.starts_with("tokio-") => {
                format!("{name} ({user})")
            }
            _ => {
                let program = std::env::args()
                    .next()
                    .and_then(|p| {
                        std::path::Path::new(&p)
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                    })
                    .unwrap_or_else(|| "broker".into());
                format!("{program}:{user}")
            }
        }
    }
}

impl BrokerInner {
    /// The provider for a kind and instance, built once and reused.
    fn provider(&self, kind: &ProviderKind, instance: Option<&str>) -> Result<Arc<dyn Provider>> {
        let mut config = self.settings.provider_config(kind.name(), instance)?;
        config.set_asker(self.asker.clone());
        let key = (kind.name().to_owned(), config.instance().map(str::to_owned));
        if let Some(p) = lock(&self.providers).get(&key) {
            return Ok(Arc::clone(p));
        }
        let provider = kind.build(config)?;
        lock(&self.providers).insert(key, Arc::clone(&provider));
        Ok(provider)
    }

    /// The provider that made a record.
    fn provider_for(&self, record: &HostRecord) -> Result<Arc<dyn Provider>> {
        let name = record.provider().ok_or_else(|| {
            Error::user(format!(
                "inventory record {} names no provider (`_broker_provider`)",
                record.display_name()
            ))
        })?;
        let kind = *self.registry.get(name).ok_or_else(|| {
            Error::user(format!(
                "host {} comes from provider `{name}`, which this broker was built without; \
                 build broker with its feature or check it in from a broker that has it",
                record.display_name()
            ))
        })?;
        self.provider(&kind, record.instance())
    }

    /// The intent record of the `index`-th host of a checkout. What the provider knows before it
    /// creates anything (the name it will give the host) goes in, so a crash at any point leaves a
    /// record that names the host.
    fn intent(&self, provider: &Arc<dyn Provider>, args: &Mapping, index: usize) -> HostRecord {
        let mut record = HostRecord::pending(provider.name(), provider.instance(), args.clone());
        let id = record.id();
        record.merge(provider.planned_fields(&CheckoutContext::new(&id, args, index)));
        record
    }

    /// One host: intent → provider → ready. Once `stop` is set, no provider call starts; one under
    /// way gets `cancel_timeout` to answer, and what it made is given back.
    async fn checkout_single(
        &self,
        provider: Arc<dyn Provider>,
        args: &Mapping,
        index: usize,
        stop: &Stop,
    ) -> HostAttempt {
        if stop.is_set() {
            return HostAttempt::NotStarted;
        }
        let mut record = self.intent(&provider, args, index);
        let id = record.id();
        let ctx = CheckoutContext::new(&id, args, index);
        // Written together with the intents of the checkout's other hosts.
        if let Err(e) = self.put_grouped(record.clone()).await {
            return HostAttempt::Failed(e);
        }
        if stop.is_set() {
            let _removed = self.remove(vec![id]).await;
            return HostAttempt::NotStarted;
        }
        let attempt = match stop
            .finish_or_abandon(provider.checkout(&ctx), self.cancel_timeout)
            .await
        {
            Some(attempt) => attempt,
            None => {
                // The provider did not answer in time after the stop: it gives back whatever it made
                // of the host so far, found by the `pending` record's identity; the record stays
                // when that fails.
                let name = record.display_name();
                tracing::warn!(host = %name, "the provider did not answer within {:?} of the stop; giving back what it made", self.cancel_timeout);
                return match provider.checkin(&record).await {
                    Ok(()) => {
                        let _removed = self.remove(vec![id]).await;
                        HostAttempt::GivenBack(name)
                    }
                    Err(e) => {
                        record.set(fields::LAST_ERROR, crate::error::chain(&e));
                        let _ = self.put(record).await;
                        HostAttempt::Left(name, e)
                    }
                };
            }
        };
        let fields = match attempt {
            Ok(fields) => fields,
            Err(e) => {
                let e = match provider.instance() {
                    Some(i) => e.with_instance(i),
                    None => e,
                };
                let kept = ctx.take_kept();
                if !kept.is_empty() {
                    self.keep_failed(&provider, record, kept, &e).await;
                    return HostAttempt::Failed(e);
                }
                // The provider may have left something tagged with the record's identity behind.
                match provider.checkin(&record).await {
                    Ok(()) => {
                        if let Err(rm) = self.remove(vec![id]).await {
                            tracing::warn!("removing the intent record of a failed checkout: {rm}");
                        }
                    }
                    Err(cleanup) => return self.left_by_failed_checkout(record, e, cleanup).await,
                }
                return HostAttempt::Failed(e);
            }
        };
        record.merge(fields);
        // The provider may not rewrite broker's own bookkeeping.
        record.set(fields::ID, id.as_str());
        record.set(fields::PROVIDER, provider.name());
        if let Some(i) = provider.instance() {
            record.set(fields::PROVIDER_INSTANCE, i);
        }
        record.set_state(HostState::Ready);
        if let Err(e) = self.put_grouped(record.clone()).await {
            // The host exists but is recorded only as pending: give it back rather than hand out a
            // host the inventory does not know as ready. If that fails too, the pending record
            // remains for `broker recover`.
            match provider.checkin(&record).await {
                Ok(()) => {
                    let _removed = self.remove(vec![id]).await;
                }
                Err(cleanup) => return self.left_by_failed_checkout(record, e, cleanup).await,
            }
            return HostAttempt::Failed(e);
        }
        tracing::info!(host = %record.display_name(), "checked out");
        if stop.is_set() {
            // Made after the stop was asked for: no one will receive it.
            let name = record.display_name();
            return match self.checkin_record(provider, record).await {
                Ok(()) => HostAttempt::GivenBack(name),
                Err(e) => HostAttempt::Left(name, e),
            };
        }
        HostAttempt::Made(record)
    }

    /// A checkout failed and giving back what it made failed too: the intent record stays `pending`
    /// — the provider's creation was never confirmed, which providers go by when they look for what
    /// it made (AnsibleTower cancels the job by the record's id) — with the clean-up's error, so
    /// `broker checkin` and `broker recover` finish the job; the caller's error lists the host as
    /// still out.
    async fn left_by_failed_checkout(
        &self,
        mut record: HostRecord,
        error: Error,
        cleanup: Error,
    ) -> HostAttempt {
        let host = record.display_name();
        tracing::error!(host = %host, "giving back what a failed checkout made failed: {}", crate::error::chain(&cleanup));
        record.set(fields::LAST_ERROR, crate::error::chain(&cleanup));
        if let Err(e) = self.put(record).await {
            tracing::warn!(host = %host, "recording the failed clean-up: {}", crate::error::chain(&e));
        }
        HostAttempt::FailedAndLeft {
            error,
            host,
            cleanup,
        }
    }

    /// Records the hosts a failed checkout left and the provider asked to keep: the first in the
    /// intent record, the others as records of their own, all `ready` and marked `deploy_failed`.
    async fn keep_failed(
        &self,
        provider: &Arc<dyn Provider>,
        mut record: HostRecord,
        kept: Vec<Mapping>,
        error: &Error,
    ) {
        let reason = crate::error::chain(error);
        let mut records = Vec::with_capacity(kept.len());
        for (n, fields) in kept.into_iter().enumerate() {
            let mut r = if n == 0 {
                record.clone()
            } else {
                HostRecord::pending(provider.name(), provider.instance(), record.args())
            };
            let id = r.id();
            r.merge(fields);
            r.set(fields::ID, id.as_str());
            r.set(fields::PROVIDER, provider.name());
            if let Some(i) = provider.instance() {
                r.set(fields::PROVIDER_INSTANCE, i);
            }
            r.set("deploy_failed", true);
            r.set(fields::LAST_ERROR, reason.clone());
            r.set_state(HostState::Ready);
            tracing::warn!(host = %r.display_name(), "kept a host of a failed checkout in the inventory; check it in when done with it");
            records.push(r);
        }
        if let Err(e) = self.put_many(records).await {
            tracing::error!("recording the hosts a failed checkout left failed: {e}");
            record.set(fields::LAST_ERROR, reason);
            let _ = self.put(record).await;
        }
    }

    /// One host back: mark releasing → provider → remove the record.
    pub(crate) async fn checkin_record(
        &self,
        provider: Arc<dyn Provider>,
        mut record: HostRecord,
    ) -> Result<()> {
        let name = record.display_name();
        let id = record.id();
        if record.has_broker_id() {
            record.set_state(HostState::Releasing);
            self.put(record.clone()).await?;
        }
        match provider.checkin(&record).await {
            Ok(()) => {
                self.remove(vec![id]).await?;
                tracing::info!(host = %name, "checked in");
                Ok(())
            }
            Err(e) => {
                let e = e.with_host(&name);
                if record.has_broker_id() {
                    record.set(fields::LAST_ERROR, crate::error::chain(&e));
                    let _ = self.put(record).await;
                }
                Err(e)
            }
        }
    }

    /// Many hosts back with three inventory writes in all, however many hosts: mark them all
    /// releasing, ask the providers in parallel, then drop the records of those given back and note
    /// the error on the others. A crash in between leaves `releasing` records for `recover`, and
    /// check-in is idempotent, so nothing is lost by batching.
    async fn checkin_many(
        self: &Arc<Self>,
        records: Vec<HostRecord>,
        limit: Option<usize>,
    ) -> Vec<HostOutcome> {
        if records.is_empty() {
            return Vec::new();
        }
        let marked: Vec<HostRecord> = records
            .iter()
            .filter(|r| r.has_broker_id())
            .map(|r| {
                let mut r = r.clone();
                r.set_state(HostState::Releasing);
                r
            })
            .collect();
        if let Err(e) = self.put_many(marked).await {
            let message = crate::error::chain(&e);
            return records
                .into_iter()
                .map(|record| HostOutcome {
                    record,
                    result: Err(Error::InventoryUpdate {
                        message: format!(
                            "cannot record the check-in in the inventory, so the host was not checked in: {message}"
                        ),
                    }),
                })
                .collect();
        }
        let limit = limit.or(self.thread_limit).unwrap_or(records.len());
        let mut outcomes = for_each_host(records, limit, |record| {
            let inner = Arc::clone(self);
            async move {
                let provider = inner.provider_for(&record)?;
                provider
                    .checkin(&record)
                    .await
                    .map_err(|e| e.with_host(&record.display_name()))
            }
        })
        .await;
        let done: Vec<RecordId> = outcomes
            .iter()
            .filter(|o| o.result.is_ok())
            .map(|o| o.record.id())
            .collect();
        let noted: Vec<HostRecord> = outcomes
            .iter()
            .filter(|o| o.record.has_broker_id())
            .filter_map(|o| {
                let e = o.result.as_ref().err()?;
                let mut r = o.record.clone();
                r.set_state(HostState::Releasing);
                r.set(fields::LAST_ERROR, crate::error::chain(e));
                Some(r)
            })
            .collect();
        if let Err(e) = self.put_many(noted).await {
            tracing::warn!("noting check-in errors in the inventory failed: {e}");
        }
        if let Err(e) = self.remove(done).await {
            // The hosts are gone at their providers; their records say `releasing`, and a later
            // `broker checkin` or `recover` finishes the job.
            let message = crate::error::chain(&e);
            for o in outcomes.iter_mut().filter(|o| o.result.is_ok()) {
                o.result = Err(Error::InventoryUpdate {
                    message: format!(
                        "checked in at the provider, but removing the record failed: {message}; run `broker recover --all`"
                    ),
                });
            }
        }
        for o in outcomes.iter().filter(|o| o.result.is_ok()) {
            tracing::info!(host = %o.record.display_name(), "checked in");
        }
        outcomes
    }

    /// Writes a record together with those other tasks are writing meanwhile: one inventory write
    /// for every record queued while the previous write ran, however many hosts finish at once.
    async fn put_grouped(&self, record: HostRecord) -> Result<()> {
        let (done, written) = tokio::sync::oneshot::channel();
        let lead = {
            let mut queue = lock(&self.grouped);
            queue.waiting.push((record.clone(), done));
            !std::mem::replace(&mut queue.writing, true)
        };
        if lead {
            // Whoever finds no write under way writes, until the queue is empty; should this future be
            // dropped mid-way, the next caller takes over.
            let mut writer = GroupWriter {
                inner: self,
                finished: false,
            };
            writer.drain().await;
        }
        match written.await {
            Ok(true) => Ok(()),
            // The group's write failed (or was abandoned): write this record alone, which reports
            // this record's own error.
            _ => self.put(record).await,
        }
    }

    async fn put_many(&self, records: Vec<HostRecord>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let store = Arc::clone(&self.store);
        blocking(move || {
            // A record read back must keep its identity: only broker's own records (identified by
            // `_broker_id`, not by a fingerprint of their content) are stored masked.
            let records = stored_form(&*store, records, HostRecord::has_broker_id);
            store.put(&records)
        })
        .await
    }

    async fn put(&self, record: HostRecord) -> Result<()> {
        self.put_many(vec![record]).await
    }

    async fn remove(&self, ids: Vec<RecordId>) -> Result<Vec<RecordId>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let store = Arc::clone(&self.store);
        blocking(move || store.remove(&ids)).await
    }
}

/// The records as `store` may keep them: as they are in a store only their owner can read, else with
/// the secret-looking values of those `maskable` picks masked (`broker duplicate` then asks for them
/// again).
fn stored_form(
    store: &dyn InventoryStore,
    records: Vec<HostRecord>,
    maskable: impl Fn(&HostRecord) -> bool,
) -> Vec<HostRecord> {
    if store.is_private() {
        return records;
    }
    records
        .into_iter()
        .map(|r| {
            if maskable(&r) {
                r.masked().into_owned()
            } else {
                r
            }
        })
        .collect()
}

/// Who is still checking out the host of `record` — `pid N of USER on MACHINE` — when the record is
/// `pending` and another process, not known to be gone, owns it; `None` for any other record. (This
/// process's own pending records are what its finished checkouts could not clean up.)
fn checkout_under_way(record: &HostRecord) -> Option<String> {
    if record.state() != HostState::Pending {
        return None;
    }
    let owner = record.owner()?;
    (&owner != Owner::current() && !owner.is_dead())
        .then(|| format!("pid {} of {} on {}", owner.pid, owner.user, owner.machine))
}

/// Runs `work` for every record, at most `limit` at once, newest first (as the Python broker does), and
/// reports each record's outcome in the records' order — also when its task panicked.
///
/// When the run is dropped (Ctrl-C), no host still waiting for its turn is started.
async fn for_each_host<F, Fut>(records: Vec<HostRecord>, limit: usize, work: F) -> Vec<HostOutcome>
where
    F: Fn(HostRecord) -> Fut,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    /// Closes the turns when the run is dropped: aborting the task under way frees its turn, which
    /// must not start the next host.
    struct CloseOnDrop(Arc<Semaphore>);
    impl Drop for CloseOnDrop {
        fn drop(&mut self) {
            self.0.close();
        }
    }
    let permits = Arc::new(Semaphore::new(limit.max(1)));
    let mut tasks = JoinSet::new();
    let _close = CloseOnDrop(Arc::clone(&permits));
    let mut task_index = HashMap::new();
    for (index, record) in records.iter().enumerate().rev() {
        let permits = Arc::clone(&permits);
        let job = work(record.clone());
        let task = tasks.spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return Err(Error::user("stopped before this host's turn came"));
            };
            job.await
        });
        task_index.insert(task.id(), index);
    }
    let mut results: Vec<Option<Result<()>>> = records.iter().map(|_| None).collect();
    while let Some(joined) = tasks.join_next_with_id().await {
        let (id, result) = match joined {
            Ok((id, result)) => (id, result),
            Err(e) => (
                e.id(),
                Err(Error::internal("the task for this host failed", e)),
            ),
        };
        if let Some(slot) = task_index.get(&id).and_then(|i| results.get_mut(*i)) {
            *slot = Some(result);
        }
    }
    records
        .into_iter()
        .zip(results)
        .map(|(record, result)| HostOutcome {
            record,
            result: result.unwrap_or_else(|| {
                Err(Error::Internal {
                    message: "the task for this host never finished".into(),
                    source: None,
                })
            }),
        })
        .collect()
}

/// Runs blocking inventory I/O off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(Error::internal("the inventory task failed", e)))
}

/// Picks inventory records the way `broker checkin` and `broker extend` do: the filter first, then
/// each key as a position in the filtered list, a hostname, a name or a record identity; `all` takes
/// every filtered record. Returns the records and the keys nothing matched.
///
/// # Errors
/// A bad filter.
pub fn select_records(
    records: &[HostRecord],
    keys: &[String],
    all: bool,
    filter: Option<&str>,
) -> Result<(Vec<HostRecord>, Vec<String>)> {
    let filtered: Vec<&HostRecord> = match filter {
        Some(f) => Filter::parse(f, "inv")?.apply(records),
        None => records.iter().collect(),
    };
    if all {
        return Ok((filtered.into_iter().cloned().collect(), Vec::new()));
    }
    let mut chosen: Vec<usize> = Vec::new();
    let mut missing = Vec::new();
    for key in keys {
        let hits: Vec<usize> = match key.parse::<usize>() {
            Ok(i) if i < filtered.len() => vec![i],
            _ => filtered
                .iter()
                .enumerate()
                .filter(|(_, r)| r.answers_to(key))
                .map(|(i, _)| i)
                .collect(),
        };
        if hits.is_empty() {
            missing.push(key.clone());
        }
        for i in hits {
            if !chosen.contains(&i) {
                chosen.push(i);
            }
        }
    }
    Ok((
        chosen.into_iter().map(|i| filtered[i].clone()).collect(),
        missing,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ProviderKind;

    /// A provider whose second checkout panics.
    #[derive(Debug)]
    struct Panicky;

    #[async_trait::async_trait]
    impl Provider for Panicky {
        fn name(&self) -> &str {
            "Panicky"
        }
        fn instance(&self) -> Option<&str> {
            None
        }
        async fn checkout(&self, ctx: &CheckoutContext<'_>) -> Result<Mapping> {
            if ctx.index() == 1 {
                panic!("provider bug");
            }
            let mut fields = Mapping::new();
            fields.insert("hostname".into(), format!("h{}", ctx.index()).into());
            Ok(fields)
        }
        async fn checkin(&self, _host: &HostRecord) -> Result<()> {
            Ok(())
        }
    }

    fn build_panicky(_config: crate::ProviderConfig) -> Result<Arc<dyn Provider>> {
        Ok(Arc::new(Panicky))
    }

    /// A run of per-host work that is stopped (its future dropped, as on Ctrl-C) starts no host
    /// that was still waiting for its turn: `checkin --sequential` stops after the host under way.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopped_run_starts_no_host_still_waiting_for_its_turn() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let started = Arc::new(AtomicUsize::new(0));
        let records: Vec<HostRecord> = (0..4)
            .map(|_| HostRecord::pending("P", None, Mapping::new()))
            .collect();
        let counter = Arc::clone(&started);
        let run = for_each_host(records, 1, move |_| {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<()>().await;
                Ok(())
            }
        });
        tokio::select! {
            _ = run => panic!("the work never ends"),
            () = async {
                while started.load(Ordering::SeqCst) == 0 {
                    tokio::task::yield_now().await;
                }
            } => {}
        }
        // The run is dropped: give the runtime time to start what it (wrongly) would.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(started.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_panicking_provider_fails_its_host_not_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings::load_from(dir.path(), Vec::new()).unwrap();
        let kind =
            ProviderKind::new("Panicky", "test", build_panicky).checkout_actions(&["panic_action"]);
        let broker = Broker::new(settings, ProviderRegistry::new().with(kind)).unwrap();
        let err = broker
            .checkout(CheckoutRequest::new().arg("panic_action", "x").count(3))
            .await
            .unwrap_err();
        match &err {
            Error::CheckoutFailed {
                failures,
                rolled_back,
                ..
            } => {
                assert_eq!(failures.len(), 1);
                assert_eq!(failures[0].0, 1, "{err}");
                assert_eq!(failures[0].1.to_string(), "the checkout task failed");
                // The panic is kept as the cause, and it is broker's failure, not the user's.
                let cause = std::error::Error::source(&failures[0].1).map(|c| c.to_string());
                assert!(
                    cause.as_deref().is_some_and(|c| c.contains("provider bug")),
                    "{cause:?}"
                );
                assert_eq!(err.exit_code(), 1);
                assert_eq!(rolled_back.len(), 2);
            }
            other => panic!("unexpected {other}"),
        }
        // The panicked host's intent record stays for `recover`; the others are gone.
        let left = broker.inventory().list().unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].state(), HostState::Pending);
        let outcomes = broker.recover(RecoverScope::Unfinished).await.unwrap();
        assert!(outcomes.iter().all(|o| o.result.is_ok()));
        assert!(broker.inventory().list().unwrap().is_empty());
    }

    /// Counts check-ins; its checkouts name the host after their index.
    #[derive(Debug)]
    struct Counted;

    static COUNTED_CHECKINS: std::sync::atomic::AtomicUsize =
        std::sync::atomic::AtomicUsize::new(0);

    #[async_trait::async_trait]
    impl Provider for Counted {
        fn name(&self) -> &str {
            "Counted"
        }
        fn instance(&self) -> Option<&str> {
            None
        }
        async fn checkout(&self, ctx: &CheckoutContext<'_>) -> Result<Mapping> {
            let mut fields = Mapping::new();
            fields.insert("hostname".into(), format!("c{}", ctx.index()).into());
            Ok(fields)
        }
        async fn checkin(&self, _host: &HostRecord) -> Result<()> {
            COUNTED_CHECKINS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
    }

    #[tokio::test]
    async fn checkin_leaves_a_checkout_another_live_process_has_under_way() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings::load_from(dir.path(), Vec::new()).unwrap();
        let kind = ProviderKind::new("Counted", "test", |_| Ok(Arc::new(Counted)))
            .checkout_actions(&["count_action"]);
        let broker = Broker::new(settings, ProviderRegistry::new().with(kind)).unwrap();
        let ready = broker
            .checkout_one(CheckoutRequest::new().arg("count_action", "x"))
            .await
            .unwrap()
            .keep()
            .record()
            .clone();
        // An intent record of another process that is alive (pid 1 always is) on this machine.
        let mut busy = HostRecord::pending("Counted", None, Mapping::new());
        let mut owner = Mapping::new();
        owner.insert("user".into(), "someone".into());
        owner.insert("machine".into(), Owner::current().machine.clone().into());
        owner.insert("pid".into(), 1u64.into());
        busy.set(fields::OWNER, Value::Mapping(owner));
        broker.inventory().put(std::slice::from_ref(&busy)).unwrap();

        let outcomes = broker
            .checkin(vec![busy.clone(), ready.clone()], false)
            .await;
        assert_eq!(outcomes.len(), 2);
        assert_eq!(outcomes[0].record.id(), busy.id());
        let err = outcomes[0].result.as_ref().unwrap_err();
        assert_eq!(err.exit_code(), 13);
        assert!(
            err.to_string()
                .contains("still being checked out by pid 1 of someone"),
            "{err}"
        );
        assert_eq!(outcomes[1].record.id(), ready.id());
        assert!(outcomes[1].result.is_ok());
        // Only the ready host went to the provider; the checkout under way keeps its record.
        assert_eq!(
            COUNTED_CHECKINS.load(std::sync::atomic::Ordering::SeqCst),
            1
        );
        let left = broker.inventory().list().unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].id(), busy.id());
        assert_eq!(left[0].state(), HostState::Pending);
    }

    /// A provider whose second checkout fails and whose check-ins all fail.
    #[derive(Debug)]
    struct CannotGiveBack;

    #[async_trait::async_trait]
    impl Provider for CannotGiveBack {
        fn name(&self) -> &str {
            "CannotGiveBack"
        }
        fn instance(&self) -> Option<&str> {
            None
        }
        fn planned_fields(&self, ctx: &CheckoutContext<'_>) -> Mapping {
            let mut fields = Mapping::new();
            fields.insert("name".into(), format!("vm{}", ctx.index()).into());
            fields
        }
        async fn checkout(&self, ctx: &CheckoutContext<'_>) -> Result<Mapping> {
            if ctx.index() == 1 {
                return Err(Error::provider("CannotGiveBack", "the build failed"));
            }
            Ok(Mapping::new())
        }
        async fn checkin(&self, host: &HostRecord) -> Result<()> {
            Err(Error::provider(
                "CannotGiveBack",
                format!("cannot delete {}", host.display_name()),
            ))
        }
    }

    #[tokio::test]
    async fn a_failed_checkout_whose_clean_up_fails_is_listed_as_still_out() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings::load_from(dir.path(), Vec::new()).unwrap();
        let kind = ProviderKind::new("CannotGiveBack", "test", |_| Ok(Arc::new(CannotGiveBack)))
            .checkout_actions(&["stuck_action"]);
        let broker = Broker::new(settings, ProviderRegistry::new().with(kind)).unwrap();
        let err = broker
            .checkout(CheckoutRequest::new().arg("stuck_action", "x").count(2))
            .await
            .unwrap_err();
        let Error::CheckoutFailed {
            failures,
            rolled_back,
            left,
            ..
        } = &err
        else {
            panic!("unexpected {err}");
        };
        assert_eq!(failures.len(), 1, "{err}");
        assert_eq!(failures[0].0, 1, "{err}");
        assert!(rolled_back.is_empty(), "{err}");
        let mut names: Vec<&str> = left.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["vm0", "vm1"], "{err}");
        let text = err.to_string();
        assert!(!text.contains("checked in again"), "{text}");
        assert!(text.contains("broker checkin vm"), "{text}");
        // The made host's record says its check-in is unfinished; the failed one's intent record
        // stays pending; both carry the error, and `checkin` and `recover` can finish them.
        let records = broker.inventory().list().unwrap();
        assert_eq!(records.len(), 2);
        for r in &records {
            let expected = if r.display_name() == "vm1" {
                HostState::Pending
            } else {
                HostState::Releasing
            };
            assert_eq!(r.state(), expected, "{r:?}");
            let last = r
                .get(fields::LAST_ERROR)
                .and_then(Value::as_str)
                .unwrap_or("");
            assert!(last.contains("cannot delete"), "{r:?}");
        }
        // This process's own leftovers are no checkout under way: `checkin` tries them (and here
        // fails again at the provider, keeping the records).
        let outcomes = broker.checkin(records, false).await;
        for o in &outcomes {
            let err = o.result.as_ref().unwrap_err();
            assert!(err.to_string().contains("cannot delete"), "{err}");
        }
    }

    /// A provider whose checkout fails after making two hosts it asks broker to keep.
    #[derive(Debug, Default)]
    struct LeavesTwo;

    static LEAVES_TWO_CHECKINS: std::sync::atomic::AtomicUsize =
        std::sync::atomic::AtomicUsize::new(0);

    #[async_trait::async_trait]
    impl Provider for LeavesTwo {
        fn name(&self) -> &str {
            "LeavesTwo"
        }
        fn instance(&self) -> Option<&str> {
            None
        }
        async fn checkout(&self, ctx: &CheckoutContext<'_>) -> Result<Mapping> {
            for name in ["vm-a", "vm-b"] {
                let mut fields = Mapping::new();
                fields.insert("name".into(), name.into());
                ctx.keep_failed(fields);
            }
            Err(Error::provider(
                "LeavesTwo",
                "the second half of the deployment failed",
            ))
        }
        async fn checkin(&self, _host: &HostRecord) -> Result<()> {
            LEAVES_TWO_CHECKINS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
    }

    #[tokio::test]
    async fn hosts_a_failed_checkout_keeps_are_recorded_failed_not_cleaned_up() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings::load_from(dir.path(), Vec::new()).unwrap();
        let kind = ProviderKind::new("LeavesTwo", "test", |_| Ok(Arc::new(LeavesTwo)))
            .checkout_actions(&["leave_action"]);
        let broker = Broker::new(settings, ProviderRegistry::new().with(kind)).unwrap();
        let err = broker
            .checkout_one(CheckoutRequest::new().arg("leave_action", "x"))
            .await
            .unwrap_err();
        assert_eq!(err.exit_code(), 7);
        let mut kept = broker.inventory().list().unwrap();
        kept.sort_by_key(|r| r.name().map(str::to_owned));
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].name(), Some("vm-a"));
        assert_eq!(kept[1].name(), Some("vm-b"));
        assert_ne!(kept[0].id(), kept[1].id());
        for r in &kept {
            assert_eq!(r.state(), HostState::Ready);
            assert_eq!(r.get("deploy_failed"), Some(&Value::Bool(true)));
            assert!(
                r.get(fields::LAST_ERROR)
                    .and_then(Value::as_str)
                    .unwrap()
                    .contains("second half")
            );
            assert_eq!(r.args().get("leave_action"), Some(&Value::from("x")));
        }
        // Nothing was checked in behind the user's back; checking them in later works as for any host.
        let checkins = || LEAVES_TWO_CHECKINS.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(checkins(), 0);
        let outcomes = broker.checkin(kept, false).await;
        assert!(outcomes.iter().all(|o| o.result.is_ok()));
        assert_eq!(checkins(), 2);
        assert!(broker.inventory().list().unwrap().is_empty());
    }

    /// An inventory other users can read.
    #[derive(Debug)]
    struct SharedStore(YamlFileStore);

    impl InventoryStore for SharedStore {
        fn list(&self) -> Result<Vec<HostRecord>> {
            self.0.list()
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
        fn location(&self) -> String {
            self.0.location()
        }
    }

    /// A provider that notes the password it was given.
    #[derive(Debug)]
    struct NotesPassword;

    static PASSWORD_GIVEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

    #[async_trait::async_trait]
    impl Provider for NotesPassword {
        fn name(&self) -> &str {
            "NotesPassword"
        }
        fn instance(&self) -> Option<&str> {
            None
        }
        async fn checkout(&self, ctx: &CheckoutContext<'_>) -> Result<Mapping> {
            if let Some(p) = ctx.args().get("host_password").and_then(Value::as_str) {
                PASSWORD_GIVEN.lock().unwrap().push(p.to_owned());
            }
            let mut fields = Mapping::new();
            fields.insert("name".into(), "vm".into());
            fields.insert("api_token".into(), "tok-123".into());
            Ok(fields)
        }
        async fn checkin(&self, _host: &HostRecord) -> Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_shared_inventory_stores_secrets_masked_and_duplicate_asks_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings::load_from(dir.path(), Vec::new()).unwrap();
        let store = SharedStore(YamlFileStore::new(
            settings.inventory_path(),
            Duration::from_secs(5),
        ));
        let kind = ProviderKind::new("NotesPassword", "test", |_| Ok(Arc::new(NotesPassword)))
            .checkout_actions(&["note_action"]);
        let broker = Broker::with_store(
            settings,
            ProviderRegistry::new().with(kind),
            Arc::new(store),
        )
        .unwrap();
        let guard = broker
            .checkout_one(
                CheckoutRequest::new()
                    .arg("note_action", "x")
                    .arg("host_password", "hunter2"),
            )
            .await
            .unwrap()
            .keep();
        assert_eq!(
            *PASSWORD_GIVEN.lock().unwrap(),
            ["hunter2"],
            "the provider gets it"
        );
        let text = std::fs::read_to_string(dir.path().join("inventory.yaml")).unwrap();
        assert!(
            !text.contains("hunter2") && !text.contains("tok-123"),
            "{text}"
        );
        let stored = broker.inventory().list().unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].id(), guard.record().id());
        assert_eq!(
            stored[0].args().get("host_password"),
            Some(&Value::from(crate::redact::MASK))
        );
        assert_eq!(
            stored[0].get("api_token"),
            Some(&Value::from(crate::redact::MASK))
        );
        let err = broker.duplicate(&stored, 1).await.unwrap_err();
        assert_eq!(err.exit_code(), 13, "{err}");
        assert!(err.to_string().contains("`host_password`"), "{err}");
        assert_eq!(
            PASSWORD_GIVEN.lock().unwrap().len(),
            1,
            "nothing was checked out"
        );
        assert_eq!(broker.inventory().list().unwrap().len(), 1);
    }
}
