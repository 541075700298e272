//! The life of a host: intent → provider → ready → (guard) → releasing → gone.
//!
//! [`BrokerInner`] owns every step that writes the inventory or calls a provider for a host: a
//! checkout (each host: record intent, ask the provider, record `ready`; all or nothing across
//! hosts; stopping on request), and the one check-in path that guards, `broker checkin`, the
//! rollback of a failed checkout and `recover` all take (mark `releasing`, ask the provider, drop the
//! record or note the error on it). Extending, provider actions and inventory sync, which also reach
//! providers through it, come after.
//!
//! It must not resolve requests (that is [`crate::request`]) nor hand out guards (that is
//! [`crate::guard`], which calls in here): it depends on neither, nor on the `Broker` facade.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_yaml::{Mapping, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::error::{Error, Result};
use crate::inventory::{InventoryStore, ProviderListing, SyncReport};
use crate::lease::ReapScope;
use crate::process::Liveness;
use crate::provider::{CheckoutContext, Operation, Provider, ProviderKind, ProviderRegistry};
use crate::reap::Reaped;
use crate::record::{HostRecord, HostState, Owner, RecordId, fields};
use crate::request::{Cancellation, Origin, ResolvedCheckout, first_action};
use crate::settings::Settings;
use crate::sync::lock;

#[cfg(test)]
mod cancel_tests;

type ProviderKey = (String, Option<String>);

/// The longest a checkout waits for the reap on start (see `reap_on_start`).
const REAP_ON_START_LIMIT: Duration = Duration::from_secs(30);

/// What handoffs need of the lifecycle's check-in and recovery, which the lifecycle cannot name (the
/// handoff module is built on it): implemented in `handoff::release`, set by the `Broker`.
#[async_trait::async_trait]
pub(crate) trait HandoffHooks: Send + Sync {
    /// At check-in, before the provider releases a host that has a handoff: stops what an
    /// interrupted run left on the host and undoes what the handoff did. It never stops the
    /// check-in: the answer says what could not be undone.
    async fn before_release(
        &self,
        record: &HostRecord,
        provider: &Arc<dyn Provider>,
    ) -> Option<String>;

    /// A handoff run by hand whose process died mid-run: stops what it left on the host and
    /// returns the record judged failed (the host stays checked out).
    async fn settle_interrupted(
        &self,
        record: HostRecord,
        provider: &Arc<dyn Provider>,
    ) -> HostRecord;
}

/// What one broker shares between its facade, its guards and its tasks.
pub(crate) struct BrokerInner {
    pub(crate) settings: Settings,
    pub(crate) registry: ProviderRegistry,
    pub(crate) store: Arc<dyn InventoryStore>,
    /// Providers built so far, by (provider, instance).
    providers: Mutex<HashMap<ProviderKey, Arc<dyn Provider>>>,
    pub(crate) checkin_timeout: Duration,
    cancel_timeout: Duration,
    pub(crate) keep_on_failure: Option<Duration>,
    thread_limit: Option<usize>,
    origin: Mutex<Option<String>>,
    /// Whom providers ask when they must ([`Broker::set_interaction`](crate::Broker::set_interaction)).
    asker: crate::interaction::Asker,
    /// Ready records waiting to be written together (see `put_grouped`).
    grouped: Mutex<GroupedPuts>,
    /// Whether the first checkout reaps first (`reap_on_start`).
    reap_on_start: bool,
    /// Set once the reap on start has run.
    reaped_on_start: tokio::sync::OnceCell<()>,
    /// Inventory writes under way, which the clean-up of a dropped checkout waits for.
    writes: Arc<WritesUnderWay>,
    /// The handoff's part in check-in and recovery (none without the `handoff` feature).
    handoff_hooks: std::sync::OnceLock<Arc<dyn HandoffHooks>>,
}

/// What happened to one host of a `checkin`, `extend` or `recover`.
#[derive(Debug)]
pub struct HostOutcome {
    /// The host's record as it was before the operation.
    pub record: HostRecord,
    /// How it went.
    pub result: Result<()>,
    /// What went wrong on the way without stopping it: at check-in, undoing the host's handoff
    /// (the host went back all the same; this says what is left to undo by hand).
    pub warning: Option<String>,
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
    /// Hosts whose lease ended, whoever holds them (as [`Broker::reap`](crate::Broker::reap) with
    /// [`ReapScope::expired`]).
    Expired,
    /// Hosts a gone process held: its guards' hosts and what it left `pending` or `releasing` (as
    /// [`Broker::reap`](crate::Broker::reap) with [`ReapScope::owner_gone`]).
    Abandoned,
    /// Both (as `broker reap`).
    Reapable,
}

impl BrokerInner {
    /// The lifecycle over `store`, with the timeouts and limits of `settings`.
    ///
    /// # Errors
    /// [`Error::Configuration`] for invalid timeouts in the settings.
    pub(crate) fn new(
        settings: Settings,
        registry: ProviderRegistry,
        store: Arc<dyn InventoryStore>,
    ) -> Result<Self> {
        Ok(BrokerInner {
            checkin_timeout: settings.checkin_timeout()?,
            cancel_timeout: settings.cancel_timeout()?,
            keep_on_failure: settings.keep_on_failure()?,
            thread_limit: settings.thread_limit(),
            reap_on_start: settings.reap_on_start()?,
            reaped_on_start: tokio::sync::OnceCell::new(),
            settings,
            registry,
            store,
            providers: Mutex::new(HashMap::new()),
            origin: Mutex::new(None),
            asker: crate::interaction::Asker::default(),
            grouped: Mutex::new(GroupedPuts::default()),
            writes: Arc::default(),
            handoff_hooks: std::sync::OnceLock::new(),
        })
    }

    /// Sets the handoff's part in check-in and recovery (once).
    #[cfg_attr(not(feature = "handoff"), allow(dead_code))]
    pub(crate) fn set_handoff_hooks(&self, hooks: Arc<dyn HandoffHooks>) {
        let _ = self.handoff_hooks.set(hooks);
    }

    /// Sets the origin recorded with each checkout from now on.
    pub(crate) fn set_origin(&self, origin: String) {
        *lock(&self.origin) = Some(origin);
    }

    /// The origin a checkout starting now records.
    pub(crate) fn origin(&self) -> Origin {
        Origin::of_this_process(lock(&self.origin).clone())
    }

    /// Sets whom providers ask, including those already built.
    pub(crate) fn set_interaction(&self, interaction: Arc<dyn crate::interaction::Interaction>) {
        self.asker.set(interaction);
    }

    /// The provider for a kind and instance, built once and reused.
    pub(crate) fn provider(
        &self,
        kind: &ProviderKind,
        instance: Option<&str>,
    ) -> Result<Arc<dyn Provider>> {
        let mut config = self.settings.provider_config(kind.name(), instance)?;
        config.set_asker(self.asker.clone());
        config.set_inventory(&self.store.location());
        let key = (kind.name().to_owned(), config.instance().map(str::to_owned));
        if let Some(p) = lock(&self.providers).get(&key) {
            return Ok(Arc::clone(p));
        }
        let provider = kind.build(config)?;
        lock(&self.providers).insert(key, Arc::clone(&provider));
        Ok(provider)
    }

    /// The provider that made a record.
    pub(crate) fn provider_for(&self, record: &HostRecord) -> Result<Arc<dyn Provider>> {
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

    // -----------------------------------------------------------------------------------------------
    // Checkout

    /// Checks out the hosts of a resolved request, all or nothing: the provider that made them and
    /// their `ready` records, in request order.
    ///
    /// # Errors
    /// The provider's error for a single host; [`Error::CheckoutFailed`] naming each failure when
    /// several were asked; [`Error::Interrupted`] when stopped.
    pub(crate) async fn checkout(
        self: &Arc<Self>,
        resolved: ResolvedCheckout,
    ) -> Result<(Arc<dyn Provider>, Vec<HostRecord>)> {
        let provider = self.provider(&resolved.kind, resolved.instance.as_deref())?;
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
        let stop = Stop {
            own: Cancellation::new(),
            caller: resolved.cancellation.clone(),
        };
        // Until it returns, dropping this future hands what the run wrote to `clean_up_dropped`.
        let mut run = CheckoutRun::new(Arc::clone(self), stop.clone());
        self.start_hosts(&provider, &resolved, &mut run);
        let tally = Tally::of(run.finish().await);
        let out = if stop.is_set() {
            Err(self.give_back_stopped(tally).await)
        } else if !tally.failures.is_empty() {
            Err(self.roll_back(&resolved, tally).await)
        } else {
            Ok((provider, tally.made))
        };
        run.disarm();
        out
    }

    /// Starts one task per host, at most `thread_limit` at once.
    fn start_hosts(
        self: &Arc<Self>,
        provider: &Arc<dyn Provider>,
        resolved: &ResolvedCheckout,
        run: &mut CheckoutRun,
    ) {
        let limit = self.thread_limit.unwrap_or(resolved.count).max(1);
        let permits = Arc::new(Semaphore::new(limit));
        let args = Arc::new(resolved.args.clone());
        let terms = Terms {
            expire_time: resolved
                .lease
                .map(|l| l.expire_time(crate::time::now_epoch())),
            guarded: !resolved.held_by_user,
        };
        for index in 0..resolved.count {
            let inner = Arc::clone(self);
            let provider = Arc::clone(provider);
            let args = Arc::clone(&args);
            let permits = Arc::clone(&permits);
            let (stop, ledger) = (run.stop.clone(), run.ledger.clone());
            run.spawn(index, async move {
                let _permit = permits.acquire_owned().await;
                inner
                    .checkout_single(provider, &args, index, terms, &stop, &ledger)
                    .await
            });
        }
    }

    /// One host: intent → provider → ready. Once `stop` is set, no provider call starts; one under
    /// way gets `cancel_timeout` to answer, and what it made is given back. The record's identity
    /// goes in `ledger` before it is written.
    async fn checkout_single(
        self: &Arc<Self>,
        provider: Arc<dyn Provider>,
        args: &Mapping,
        index: usize,
        terms: Terms,
        stop: &Stop,
        ledger: &Ledger,
    ) -> HostAttempt {
        if stop.is_set() {
            return HostAttempt::NotStarted;
        }
        let record = self.intent(&provider, args, index, terms);
        let id = record.id();
        let ctx = CheckoutContext::new(&id, args, index).with_expire_time(terms.expire_time);
        ledger.note(id.clone());
        // Written together with the intents of the checkout's other hosts.
        if let Err(e) = self.put_grouped(record.clone()).await {
            return HostAttempt::Failed(e);
        }
        if stop.is_set() {
            let _removed = self.remove(vec![id]).await;
            return HostAttempt::NotStarted;
        }
        let answer = match stop
            .finish_or_abandon(provider.checkout(&ctx), self.cancel_timeout)
            .await
        {
            Some(answer) => answer,
            None => return self.give_back_abandoned(&provider, record).await,
        };
        let fields = match answer {
            Ok(fields) => fields,
            Err(e) => {
                return self
                    .clean_up_failed(&provider, record, &ctx, e, ledger)
                    .await;
            }
        };
        let mut record = as_ready(&provider, record, fields);
        if terms.guarded {
            record.set(crate::lease::fields::GUARDED, true);
        }
        if let Err(e) = self.put_grouped(record.clone()).await {
            return self.give_back_unrecorded(&provider, record, e).await;
        }
        tracing::info!(host = %record.display_name(), "checked out");
        if stop.is_set() {
            // Made after the stop was asked for: no one will receive it.
            let name = record.display_name();
            return match self.checkin_one(record).await {
                Ok(()) => HostAttempt::GivenBack(name),
                Err(e) => HostAttempt::Left(name, e),
            };
        }
        HostAttempt::Made(record)
    }

    /// The intent record of the `index`-th host of a checkout. What the provider knows before it
    /// creates anything (the name it will give the host) goes in, so a crash at any point leaves a
    /// record that names the host.
    fn intent(
        &self,
        provider: &Arc<dyn Provider>,
        args: &Mapping,
        index: usize,
        terms: Terms,
    ) -> HostRecord {
        let mut record = HostRecord::pending(provider.name(), provider.instance(), args.clone());
        let id = record.id();
        let ctx = CheckoutContext::new(&id, args, index).with_expire_time(terms.expire_time);
        record.merge(provider.planned_fields(&ctx));
        if let Some(at) = terms.expire_time {
            record.set(fields::EXPIRE_TIME, at);
        }
        record
    }

    /// The provider did not answer in time after the stop: it gives back whatever it made of the
    /// host so far, found by the `pending` record's identity; the record stays when that fails.
    async fn give_back_abandoned(
        &self,
        provider: &Arc<dyn Provider>,
        mut record: HostRecord,
    ) -> HostAttempt {
        let name = record.display_name();
        tracing::warn!(host = %name, "the provider did not answer within {:?} of the stop; giving back what it made", self.cancel_timeout);
        match provider.checkin(&record).await {
            Ok(()) => {
                let _removed = self.remove(vec![record.id()]).await;
                HostAttempt::GivenBack(name)
            }
            Err(e) => {
                record.set(fields::LAST_ERROR, crate::error::chain(&e));
                let _ = self.put(record).await;
                HostAttempt::Left(name, e)
            }
        }
    }

    /// The provider's checkout failed: records what it asked to keep, else gives back what it may
    /// have left tagged with the record's identity and drops the intent record.
    async fn clean_up_failed(
        &self,
        provider: &Arc<dyn Provider>,
        record: HostRecord,
        ctx: &CheckoutContext<'_>,
        error: Error,
        ledger: &Ledger,
    ) -> HostAttempt {
        let error = match provider.instance() {
            Some(i) => error.with_instance(i),
            None => error,
        };
        let kept = ctx.take_kept();
        if !kept.is_empty() {
            // Kept on purpose: not the clean-up's to give back, should the checkout be dropped.
            ledger.forget(&record.id());
            self.keep_failed(provider, record, kept, &error).await;
            return HostAttempt::Failed(error);
        }
        match provider.checkin(&record).await {
            Ok(()) => {
                if let Err(rm) = self.remove(vec![record.id()]).await {
                    tracing::warn!("removing the intent record of a failed checkout: {rm}");
                }
                HostAttempt::Failed(error)
            }
            Err(cleanup) => self.left_by_failed_checkout(record, error, cleanup).await,
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
            let base = if n == 0 {
                record.clone()
            } else {
                HostRecord::pending(provider.name(), provider.instance(), record.args())
            };
            let mut r = as_ready(provider, base, fields);
            r.set("deploy_failed", true);
            r.set(fields::LAST_ERROR, reason.clone());
            tracing::warn!(host = %r.display_name(), "kept a host of a failed checkout in the inventory; check it in when done with it");
            records.push(r);
        }
        if let Err(e) = self.put_many(records).await {
            tracing::error!("recording the hosts a failed checkout left failed: {e}");
            record.set(fields::LAST_ERROR, reason);
            let _ = self.put(record).await;
        }
    }

    /// The host exists but is recorded only as pending: give it back rather than hand out a host the
    /// inventory does not know as ready. If that fails too, the pending record remains for
    /// `broker recover`.
    async fn give_back_unrecorded(
        &self,
        provider: &Arc<dyn Provider>,
        record: HostRecord,
        error: Error,
    ) -> HostAttempt {
        match provider.checkin(&record).await {
            Ok(()) => {
                let _removed = self.remove(vec![record.id()]).await;
                HostAttempt::Failed(error)
            }
            Err(cleanup) => self.left_by_failed_checkout(record, error, cleanup).await,
        }
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

    /// A stopped checkout: hosts made before the stop was asked for go back too (no one will receive
    /// them), and the error says what was given back and what is left.
    async fn give_back_stopped(self: &Arc<Self>, tally: Tally) -> Error {
        let Tally {
            made,
            failures,
            mut stopped,
        } = tally;
        let (given_back, left) = by_result(self.checkin(made, None).await);
        stopped.given_back.extend(given_back);
        stopped.left.extend(left);
        stopped.failed = failures;
        Error::Interrupted {
            message: stopped.describe(),
        }
    }

    /// A checkout some of whose hosts failed: the others are checked in again unless the request
    /// keeps partial results. A single host's failure is its own error.
    async fn roll_back(self: &Arc<Self>, resolved: &ResolvedCheckout, tally: Tally) -> Error {
        let Tally {
            made,
            mut failures,
            stopped,
        } = tally;
        // Hosts whose failed checkout could not be cleaned up are still out, whatever happens to the
        // others.
        let failed_left = stopped.left;
        if resolved.count == 1 && made.is_empty() && failed_left.is_empty() {
            return failures.remove(0).1;
        }
        let (rolled_back, kept, mut left) = if resolved.keep_partial {
            let names = made.iter().map(HostRecord::display_name).collect();
            (Vec::new(), names, Vec::new())
        } else {
            let (rolled_back, left) = by_result(self.checkin(made, None).await);
            for (host, _) in &left {
                tracing::error!(host = %host, "rolling back failed; the record stays in the inventory");
            }
            (rolled_back, Vec::new(), left)
        };
        left.splice(0..0, failed_left);
        Error::CheckoutFailed {
            requested: resolved.count,
            failures,
            rolled_back,
            kept,
            left,
        }
    }

    /// Gives back what a checkout dropped before it returned leaves, on the drop worker: once the
    /// run's tasks have ended (stopped at the drop, they finish the provider call under way within
    /// `cancel_timeout` and give back what they made) — or `cancel_timeout` + `checkin_timeout` have
    /// passed — and the inventory writes under way have landed, every record the run wrote that is
    /// still there goes through `checkin`: hosts delivered but never handed out, a rollback cut
    /// short, and the intents of tasks their runtime dropped with it (the provider finds what it
    /// made by the record's identity).
    async fn clean_up_dropped(
        self: Arc<Self>,
        mut deliveries: tokio::sync::mpsc::UnboundedReceiver<(usize, HostAttempt)>,
        ledger: Ledger,
    ) {
        let bound = self.cancel_timeout + self.checkin_timeout;
        let tasks_ended = async { while deliveries.recv().await.is_some() {} };
        let _ = tokio::time::timeout(bound, tasks_ended).await;
        self.writes.settled(bound).await;
        let ids = ledger.ids();
        let store = Arc::clone(&self.store);
        let left = match blocking(move || store.list()).await {
            Ok(records) => records.into_iter().filter(|r| ids.contains(&r.id())),
            Err(e) => {
                tracing::error!(
                    "giving back what a dropped checkout left: {}",
                    crate::error::chain(&e)
                );
                return;
            }
        };
        for outcome in self.checkin(left.collect(), None).await {
            if let Err(e) = outcome.result {
                tracing::error!(host = %outcome.record.display_name(), "giving back a host of a dropped checkout failed; its record stays for `broker checkin` or `broker recover`: {}", crate::error::chain(&e));
            }
        }
    }

    // -----------------------------------------------------------------------------------------------
    // Check-in: the one path

    /// Checks in hosts asked for by name (`broker checkin`), leaving alone each `pending` record
    /// whose owner is still alive: that is a checkout under way, whose host may not exist yet, so
    /// checking it in would find nothing, drop the record and call the host gone while the checkout
    /// goes on to make it. Its outcome is an [`Error::User`] naming the process that holds it.
    pub(crate) async fn checkin_unless_under_way(
        self: &Arc<Self>,
        records: Vec<HostRecord>,
        limit: Option<usize>,
    ) -> Vec<HostOutcome> {
        let (busy, free): (Vec<_>, Vec<_>) = records
            .into_iter()
            .enumerate()
            .partition(|(_, r)| checkout_under_way(r).is_some());
        let (order, free): (Vec<usize>, Vec<HostRecord>) = free.into_iter().unzip();
        let mut outcomes: Vec<(usize, HostOutcome)> = order
            .into_iter()
            .zip(self.checkin(free, limit).await)
            .collect();
        outcomes.extend(busy.into_iter().map(|(i, record)| {
            let holder = checkout_under_way(&record).unwrap_or_default();
            let result = Err(Error::user(format!(
                "host {} is still being checked out by {holder}; check it in once that checkout \
                 has finished (or, if that process is gone, `broker recover`)",
                record.display_name()
            )));
            (
                i,
                HostOutcome {
                    record,
                    result,
                    warning: None,
                },
            )
        }));
        outcomes.sort_by_key(|(i, _)| *i);
        outcomes.into_iter().map(|(_, o)| o).collect()
    }

    /// One host back (a guard's check-in, or a host made after its checkout was stopped).
    ///
    /// # Errors
    /// The provider's error, or the inventory's; the record then stays, marked `releasing`.
    pub(crate) async fn checkin_one(self: &Arc<Self>, record: HostRecord) -> Result<()> {
        match self.checkin(vec![record], None).await.pop() {
            Some(outcome) => outcome.result,
            None => Ok(()),
        }
    }

    /// Checks hosts in on the drop worker and waits for that: should the waiting future be dropped
    /// (a caller's `timeout`), the check-in goes on, so hosts of a checkout that no guard holds yet
    /// are never left half given back.
    pub(crate) async fn checkin_past_drop(self: &Arc<Self>, records: Vec<HostRecord>) {
        let (done, finished) = tokio::sync::oneshot::channel();
        let inner = Arc::clone(self);
        let handed = records.clone();
        let sent = crate::drop_worker::hand_over(async move {
            let _ = done.send(inner.checkin(handed, None).await);
        });
        if sent {
            let _ = finished.await;
        } else {
            self.checkin(records, None).await;
        }
    }

    /// Hosts back, the one way every check-in goes: mark them all releasing, ask their providers in
    /// parallel (at most `limit`, else `thread_limit`, at once), then drop the records of those given
    /// back and note the error on the others — three inventory writes in all, however many hosts. A
    /// crash in between leaves `releasing` records for `recover`, and check-in is idempotent, so
    /// nothing is lost by batching.
    pub(crate) async fn checkin(
        self: &Arc<Self>,
        records: Vec<HostRecord>,
        limit: Option<usize>,
    ) -> Vec<HostOutcome> {
        if records.is_empty() {
            return Vec::new();
        }
        if let Err(e) = self.mark_releasing(&records).await {
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
                    warning: None,
                })
                .collect();
        }
        let limit = limit.or(self.thread_limit).unwrap_or(records.len());
        let warnings: Arc<Mutex<HashMap<RecordId, String>>> = Arc::default();
        let mut outcomes = for_each_host(records, limit, |record| {
            let inner = Arc::clone(self);
            let warnings = Arc::clone(&warnings);
            async move {
                let provider = inner.provider_for(&record)?;
                if let Some(warning) = inner.before_release(&record, &provider).await {
                    lock(&warnings).insert(record.id(), warning);
                }
                provider
                    .checkin(&record)
                    .await
                    .map_err(|e| e.with_host(&record.display_name()))
            }
        })
        .await;
        for o in &mut outcomes {
            o.warning = lock(&warnings).remove(&o.record.id());
        }
        self.note_checkin_errors(&outcomes).await;
        self.remove_checked_in(&mut outcomes).await;
        for o in outcomes.iter().filter(|o| o.result.is_ok()) {
            tracing::info!(host = %o.record.display_name(), "checked in");
        }
        outcomes
    }

    /// Undoes a host's handoff before its provider releases it (see [`HandoffHooks`]); what could
    /// not be undone is said loudly and returned, and the host goes back all the same.
    async fn before_release(
        &self,
        record: &HostRecord,
        provider: &Arc<dyn Provider>,
    ) -> Option<String> {
        let hooks = self.handoff_hooks.get()?;
        record.get(fields::HANDOFF_STATE)?;
        let warning = hooks.before_release(record, provider).await?;
        tracing::error!(host = %record.display_name(), "{warning}");
        Some(warning)
    }

    /// Marks broker's own records `releasing` before their providers are asked.
    async fn mark_releasing(&self, records: &[HostRecord]) -> Result<()> {
        let marked: Vec<HostRecord> = records
            .iter()
            .filter(|r| r.has_broker_id())
            .map(|r| {
                let mut r = r.clone();
                r.set_state(HostState::Releasing);
                r
            })
            .collect();
        self.put_many(marked).await
    }

    /// Notes each failed check-in's error on its record, which stays `releasing`.
    async fn note_checkin_errors(&self, outcomes: &[HostOutcome]) {
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
    }

    /// Drops the records of the hosts given back; when that fails, their outcomes say so.
    async fn remove_checked_in(&self, outcomes: &mut [HostOutcome]) {
        let done: Vec<RecordId> = outcomes
            .iter()
            .filter(|o| o.result.is_ok())
            .map(|o| o.record.id())
            .collect();
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
    }

    /// Keeps a guard's host after its test panicked, until `keep_for` from now (`keep_on_failure`):
    /// records the lease and returns when it ends (seconds since the epoch). Synchronous: it runs in
    /// `Drop`, maybe outside any runtime.
    ///
    /// # Errors
    /// Inventory errors.
    pub(crate) fn keep_after_failure(
        &self,
        mut record: HostRecord,
        keep_for: Duration,
    ) -> Result<i64> {
        let expires = crate::time::now_epoch() + keep_for.as_secs() as i64;
        record.set(fields::EXPIRE_TIME, expires);
        // Kept for a person to look at: it goes by its lease, not with this process.
        record.remove(crate::lease::fields::GUARDED);
        write_stored(&*self.store, vec![record])?;
        Ok(expires)
    }

    /// Notes `message` on the record `id` as its last error (a check-in on drop that did not finish).
    /// Synchronous: it runs in `Drop`, maybe outside any runtime.
    ///
    /// # Errors
    /// Inventory errors.
    pub(crate) fn note_error(&self, id: &RecordId, message: &str) -> Result<()> {
        self.update_stored(id, |record| {
            record.set(fields::LAST_ERROR, message);
            true
        })
    }

    /// Changes the stored record `id` by `change`, which says whether it changed anything, as
    /// [`revise_stored`] does; a record that is gone is left gone. Synchronous, for `Drop` and
    /// `keep`.
    fn update_stored(&self, id: &RecordId, change: impl Fn(&mut HostRecord) -> bool) -> Result<()> {
        revise_stored(&*self.store, id, &|record| Ok(change(record))).map(drop)
    }

    /// Hands a guard's host to its user ([`HostGuard::keep`](crate::HostGuard::keep)): its record
    /// no longer says a guard of this process holds it, so it outlives this process. Synchronous:
    /// `keep` is.
    ///
    /// # Errors
    /// Inventory errors.
    pub(crate) fn hand_to_user(&self, id: &RecordId) -> Result<()> {
        self.update_stored(id, |record| {
            record.remove(crate::lease::fields::GUARDED).is_some()
        })
    }

    /// What this process still holds: its guards' hosts not yet given back, and what it left
    /// `pending` or `releasing` (see [`Broker::leftovers`](crate::Broker::leftovers)).
    ///
    /// # Errors
    /// Inventory errors.
    pub(crate) fn leftovers(&self) -> Result<Vec<HostRecord>> {
        let me = Owner::current();
        Ok(self
            .store
            .list()?
            .into_iter()
            .filter(|r| r.owner().as_ref() == Some(me))
            .filter(|r| r.state() != HostState::Ready || crate::lease::is_guarded(r))
            .collect())
    }

    /// After a stopped checkout was abandoned mid-clean-up: what this process left in the inventory,
    /// and how to finish.
    pub(crate) fn stopped_waiting(&self, why: &str) -> Error {
        let me = Owner::current();
        let left: Vec<HostRecord> = match self.store.list() {
            Ok(records) => records
                .into_iter()
                .filter(|r| r.owner().is_some_and(|o| &o == me))
                .collect(),
            Err(e) => {
                return Error::Interrupted {
                    message: format!(
                        "{why}: stopped waiting; reading the inventory failed ({}); run `broker recover` once this process has exited",
                        crate::error::chain(&e)
                    ),
                };
            }
        };
        if left.is_empty() {
            return Error::Interrupted {
                message: format!(
                    "{why}: stopped waiting; this checkout left nothing in the inventory"
                ),
            };
        }
        let listed: Vec<String> = left
            .iter()
            .map(|r| format!("{} ({})", r.display_name(), r.state()))
            .collect();
        let ready: Vec<String> = left
            .iter()
            .filter(|r| r.state() == HostState::Ready)
            .map(HostRecord::display_name)
            .collect();
        let mut message = format!(
            "{why}: stopped waiting; left in the inventory: {}; finish with `broker recover` (it checks in the unfinished ones of this process once it has exited)",
            listed.join(", ")
        );
        if !ready.is_empty() {
            message.push_str(&format!(" and `broker checkin {}`", ready.join(" ")));
        }
        Error::Interrupted { message }
    }

    // -----------------------------------------------------------------------------------------------
    // Reaping

    /// Gives back what `scope` picks ([`crate::lease::select_for_reap`]): claims it first — one
    /// compare-and-replace marks the records `releasing` with this process as their reaper, so that
    /// of two reapers reading the same records each wins only some — then checks the claimed hosts in
    /// the one way every check-in goes. With `dry_run` it only picks.
    ///
    /// # Errors
    /// Inventory errors reading or claiming; per-host failures are in the results.
    pub(crate) async fn reap(
        self: &Arc<Self>,
        scope: ReapScope,
        dry_run: bool,
    ) -> Result<Vec<Reaped>> {
        let store = Arc::clone(&self.store);
        let (records, owners) =
            blocking(move || Ok((store.list()?, store.owner_leases()?))).await?;
        let now = crate::time::now_epoch();
        let liveness = |o: &Owner| owners.liveness(o);
        let picked = crate::lease::select_for_reap(&records, now, scope, &liveness);
        // Reported, never reaped: a lease that cannot be read.
        let skipped = crate::lease::select_unreadable(&records, now, scope, &liveness);
        let skipped = skipped.into_iter().map(Reaped::picked);
        if dry_run || picked.is_empty() {
            return Ok(picked
                .into_iter()
                .map(Reaped::picked)
                .chain(skipped)
                .collect());
        }
        let me = Owner::current();
        let claims: Vec<(HostRecord, HostRecord)> = picked
            .iter()
            .map(|(r, _)| (r.clone(), crate::lease::claimed(r, me)))
            .collect();
        let won = blocking({
            let store = Arc::clone(&self.store);
            let claims = claims.clone();
            move || store.replace_unchanged(&claims)
        })
        .await?;
        let (mine, reasons): (Vec<HostRecord>, Vec<_>) = claims
            .into_iter()
            .zip(picked)
            .filter(|((seen, _), _)| won.contains(&seen.id()))
            .map(|((_, claimed), (found, reason))| (claimed, (found, reason)))
            .unzip();
        let mut reaped = self.check_in_reaped(mine, reasons).await;
        reaped.extend(skipped);
        Ok(reaped)
    }

    /// Checks in the `claimed` records of what a reap `picked` (one for one, in order) and says how
    /// each went.
    async fn check_in_reaped(
        self: &Arc<Self>,
        claimed: Vec<HostRecord>,
        picked: Vec<(HostRecord, crate::lease::ReapReason)>,
    ) -> Vec<Reaped> {
        for (record, reason) in &picked {
            tracing::info!(host = %record.display_name(), "reaping: {reason}");
        }
        let outcomes = self.checkin(claimed, None).await;
        picked
            .into_iter()
            .zip(outcomes)
            .map(|(found, outcome)| Reaped::done(found, outcome.result))
            .collect()
    }

    /// Checks in the orphans a provider holds for this inventory (see
    /// [`Broker::reap_orphans`](crate::Broker::reap_orphans)): each is first written to the
    /// inventory as a record this process is reaping (`releasing`), so that a reaper killed
    /// half-way leaves a record `broker reap` finishes, then checked in the one way every check-in
    /// goes. With `dry_run` it only picks.
    ///
    /// # Errors
    /// Unknown provider or instance; the provider's listing error; inventory errors.
    pub(crate) async fn reap_orphans(
        self: &Arc<Self>,
        spec: &str,
        grace: Duration,
        dry_run: bool,
    ) -> Result<Vec<Reaped>> {
        let (name, arg, instance) = crate::request::parse_sync_spec(spec);
        let kind = *self.registry.require(name)?;
        let provider = self.provider(&kind, instance)?;
        let listed = provider.inventory(arg).await?;
        // Read after listing: a checkout writes its record before it creates the host, so every
        // host listed that is not an orphan has its record by now.
        let store = Arc::clone(&self.store);
        let known = blocking(move || store.list()).await?;
        let picked = crate::lease::select_orphans(listed, &known, crate::time::now_epoch(), grace);
        if dry_run || picked.is_empty() {
            return Ok(picked.into_iter().map(Reaped::picked).collect());
        }
        let me = Owner::current();
        let claimed: Vec<HostRecord> = picked
            .iter()
            .map(|(r, _)| crate::lease::claimed(r, me))
            .collect();
        self.put_many(claimed.clone()).await?;
        Ok(self.check_in_reaped(claimed, picked).await)
    }

    /// The first time this broker checks out, reaps the inventory (`reap_on_start`): what killed
    /// processes held and leases that ended go back before anything new is made. Failures are
    /// logged, never the caller's.
    pub(crate) async fn reap_on_start(self: &Arc<Self>) {
        if !self.reap_on_start {
            return;
        }
        // A provider whose check-in hangs must not hold up every later checkout: the reap gets at
        // most `checkin_timeout` (and never more than half a minute); what it had not finished stays
        // claimed by this process, which the next reap after it has ended takes over.
        let bound = self.checkin_timeout.min(REAP_ON_START_LIMIT);
        self.reaped_on_start
            .get_or_init(|| async {
                match tokio::time::timeout(bound, self.reap(ReapScope::default(), false)).await {
                    Ok(Ok(reaped)) => {
                        for r in reaped.iter().filter(|r| matches!(r.result, Some(Err(_)))) {
                            tracing::warn!(host = %r.record.display_name(), "reaping on start failed; `broker reap` retries it");
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::warn!("reaping on start failed: {}", crate::error::chain(&e));
                    }
                    Err(_) => tracing::warn!(
                        "reaping on start took longer than {}s; going on with the checkout (`broker reap` finishes it once this process has ended)",
                        bound.as_secs()
                    ),
                }
            })
            .await;
    }

    // -----------------------------------------------------------------------------------------------
    // Recover, extend

    /// Checks in the records left `pending` or `releasing` that `scope` picks (see
    /// [`Broker::recover`](crate::Broker::recover)).
    ///
    /// # Errors
    /// Inventory errors; per-host failures are in the outcomes.
    pub(crate) async fn recover(self: &Arc<Self>, scope: RecoverScope) -> Result<Vec<HostOutcome>> {
        let reap = match scope {
            RecoverScope::Expired => Some(ReapScope::expired()),
            RecoverScope::Abandoned => Some(ReapScope::owner_gone()),
            RecoverScope::Reapable => Some(ReapScope::default()),
            _ => None,
        };
        if let Some(reap) = reap {
            let reaped = self.reap(reap, false).await?;
            return Ok(reaped
                .into_iter()
                .filter(|r| !r.reason.is_skip())
                .map(outcome_of)
                .collect());
        }
        let me = Owner::current();
        let owners = self.store.owner_leases()?;
        let (records, interrupted): (Vec<HostRecord>, Vec<HostRecord>) = self
            .store
            .list()?
            .into_iter()
            .filter(|r| {
                // A checkout whose handoff has not ended is as unfinished as a `pending` one.
                let unfinished =
                    r.state() != HostState::Ready || crate::record::checkout_handing_off(r);
                let interrupted = crate::record::handoff_interrupted(r);
                match scope {
                    RecoverScope::Unfinished => unfinished || interrupted,
                    RecoverScope::Orphaned => {
                        (unfinished
                            && r.owner()
                                .is_some_and(|o| owners.liveness(&o) == Liveness::Gone))
                            || interrupted
                    }
                    RecoverScope::ThisProcess => r.owner().is_some_and(|o| &o == me),
                    _ => false,
                }
            })
            .partition(|r| {
                r.state() != HostState::Ready
                    || crate::record::checkout_handing_off(r)
                    || scope == RecoverScope::ThisProcess
            });
        let mut outcomes = self.settle_interrupted(interrupted).await;
        outcomes.extend(self.checkin(records, None).await);
        Ok(outcomes)
    }

    /// Handoffs run by hand whose process died mid-run: what they left on the host is stopped and
    /// their records say `handoff_failed`; the hosts stay checked out.
    async fn settle_interrupted(&self, records: Vec<HostRecord>) -> Vec<HostOutcome> {
        let Some(hooks) = self.handoff_hooks.get() else {
            return Vec::new();
        };
        let mut outcomes = Vec::new();
        for record in records {
            let settled = match self.provider_for(&record) {
                Ok(provider) => Ok(hooks.settle_interrupted(record.clone(), &provider).await),
                Err(e) => Err(e),
            };
            let result = match settled {
                Ok(settled) => self.put(settled).await,
                Err(e) => Err(e),
            };
            outcomes.push(HostOutcome {
                record,
                result,
                warning: None,
            });
        }
        outcomes
    }

    /// Extends hosts' leases, each through its own provider instance; when an argument is one a
    /// host's provider does not take, no host is extended and each outcome carries that usage error.
    pub(crate) async fn extend(
        self: &Arc<Self>,
        records: Vec<HostRecord>,
        mut args: Mapping,
    ) -> Vec<HostOutcome> {
        // Broker's own lease (`lease: 2h`) is not the provider's argument.
        let lease = crate::lease::take_lease(&mut args, None);
        let refused = match &lease {
            Err(e) => Some(e.to_string()),
            Ok(_) => records.iter().find_map(|r| {
                let kind = self.registry.get(r.provider()?)?;
                let refused = kind.check_arguments(Operation::Extend, &args).err()?;
                Some(refused.to_string())
            }),
        };
        if let Some(message) = refused {
            return records
                .into_iter()
                .map(|record| HostOutcome {
                    record,
                    result: Err(Error::usage(message.clone())),
                    warning: None,
                })
                .collect();
        }
        let expire_time = lease
            .ok()
            .flatten()
            .map(|l| l.expire_time(crate::time::now_epoch()));
        let args = Arc::new(args);
        let limit = records.len();
        for_each_host(records, limit, |record| {
            let inner = Arc::clone(self);
            let args = Arc::clone(&args);
            async move { inner.extend_one(record, &args, expire_time).await }
        })
        .await
    }

    /// Extends one host at its provider — a provider without an extend of its own is fine when
    /// broker's lease is extended — then moves broker's lease to `expire_time`, if given.
    async fn extend_one(
        self: &Arc<Self>,
        record: HostRecord,
        args: &Mapping,
        expire_time: Option<i64>,
    ) -> Result<()> {
        let provider = self.provider_for(&record)?;
        crate::report::action(provider.name(), "extend", args);
        match provider.extend(&record, args).await {
            Ok(()) => {}
            Err(Error::NotImplemented { .. }) if expire_time.is_some() => {}
            Err(e) => return Err(e.with_host(&record.display_name())),
        }
        let Some(at) = expire_time else {
            return Ok(());
        };
        let mut extended = record.clone();
        extended.set(fields::EXPIRE_TIME, at);
        let store = Arc::clone(&self.store);
        let replaced = blocking(move || store.replace_unchanged(&[(record, extended)])).await?;
        if replaced.is_empty() {
            return Err(Error::user(
                "the host's record changed while its lease was extended (checked in, or extended by \
                 someone else); look at `broker inventory` and extend it again",
            ));
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------------
    // Provider actions that make no host, and inventory sync

    /// Runs a provider action that is not a checkout.
    ///
    /// # Errors
    /// The provider's error.
    pub(crate) async fn execute(
        &self,
        kind: &ProviderKind,
        instance: Option<&str>,
        args: &Mapping,
    ) -> Result<Value> {
        let provider = self.provider(kind, instance)?;
        crate::report::action(
            kind.name(),
            first_action(kind.execute_action_keys(), args),
            args,
        );
        provider.execute(args).await
    }

    /// Answers a discovery query of a provider.
    ///
    /// # Errors
    /// Unknown provider or instance; the provider's error.
    pub(crate) async fn provider_help(
        &self,
        provider: &str,
        instance: Option<&str>,
        query: &Mapping,
    ) -> Result<Value> {
        let kind = *self.registry.require(provider)?;
        let provider = self.provider(&kind, instance)?;
        crate::report::action(kind.name(), "provider_help", query);
        provider.help(query).await
    }

    /// Pulls a provider's view of its hosts into the inventory (see
    /// [`Broker::sync_inventory`](crate::Broker::sync_inventory)).
    ///
    /// # Errors
    /// Unknown provider or instance; the provider's error; [`Error::SyncRefused`]; inventory errors.
    pub(crate) async fn sync(&self, spec: &str, force: bool) -> Result<SyncReport> {
        let (name, arg, instance) = crate::request::parse_sync_spec(spec);
        let kind = *self.registry.require(name)?;
        let provider = self.provider(&kind, instance)?;
        let store = Arc::clone(&self.store);
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

    // -----------------------------------------------------------------------------------------------
    // Inventory writes

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

    pub(crate) async fn put_many(&self, records: Vec<HostRecord>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let store = Arc::clone(&self.store);
        let under_way = self.writes.start();
        blocking(move || {
            let _under_way = under_way;
            write_stored(&*store, records)
        })
        .await
    }

    pub(crate) async fn put(&self, record: HostRecord) -> Result<()> {
        self.put_many(vec![record]).await
    }

    /// Changes the stored record `id` with `change` on a blocking thread, as
    /// [`revise_stored`] does; `Ok(None)` when the record is gone — its host was checked in
    /// meanwhile — and nothing is written.
    ///
    /// # Errors
    /// What `change` refuses; inventory errors; a record that kept changing.
    #[cfg(feature = "handoff")]
    pub(crate) async fn revise<F>(&self, id: RecordId, change: F) -> Result<Option<HostRecord>>
    where
        F: Fn(&mut HostRecord) -> Result<bool> + Send + 'static,
    {
        let store = Arc::clone(&self.store);
        let under_way = self.writes.start();
        blocking(move || {
            let _under_way = under_way;
            revise_stored(&*store, &id, &change)
        })
        .await
    }

    async fn remove(&self, ids: Vec<RecordId>) -> Result<Vec<RecordId>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let store = Arc::clone(&self.store);
        let under_way = self.writes.start();
        blocking(move || {
            let _under_way = under_way;
            store.remove(&ids)
        })
        .await
    }
}

/// A record made ready with the provider's fields. The provider may not rewrite broker's own
/// bookkeeping: the identity, the provider and its instance stay broker's.
fn as_ready(provider: &Arc<dyn Provider>, mut record: HostRecord, fields: Mapping) -> HostRecord {
    let id = record.id();
    record.merge(fields);
    record.set(fields::ID, id.as_str());
    record.set(fields::PROVIDER, provider.name());
    if let Some(i) = provider.instance() {
        record.set(fields::PROVIDER_INSTANCE, i);
    }
    record.set_state(HostState::Ready);
    record
}

/// A reaped host as the outcome of a `recover`.
fn outcome_of(reaped: Reaped) -> HostOutcome {
    HostOutcome {
        // Reaps for a recover are never dry runs.
        result: reaped.result.unwrap_or(Ok(())),
        record: reaped.record,
        warning: None,
    }
}

/// The names of the hosts whose check-in went through, and those of the others with their errors.
pub(crate) fn by_result(outcomes: Vec<HostOutcome>) -> (Vec<String>, Vec<(String, Error)>) {
    let mut done = Vec::new();
    let mut left = Vec::new();
    for o in outcomes {
        match o.result {
            Ok(()) => done.push(o.record.display_name()),
            Err(e) => left.push((o.record.display_name(), e)),
        }
    }
    (done, left)
}

/// Writes records in the form `store` may keep them. A record read back must keep its identity: only
/// broker's own records (identified by `_broker_id`, not by a fingerprint of their content) are
/// stored masked.
/// Changes the stored record `id` with `change` (which says whether it changed anything) and writes
/// it back unless another process or task changed it in between — then reads it again and retries,
/// a few times: a change is made on the record as it is, never over someone else's. Returns the
/// record as written (or as it is, when `change` changed nothing); `None` when it is gone.
///
/// # Errors
/// What `change` refuses; inventory errors; a record that kept changing.
fn revise_stored(
    store: &dyn InventoryStore,
    id: &RecordId,
    change: &dyn Fn(&mut HostRecord) -> Result<bool>,
) -> Result<Option<HostRecord>> {
    const TRIES: usize = 5;
    for _ in 0..TRIES {
        let Some(current) = store.list()?.into_iter().find(|r| &r.id() == id) else {
            return Ok(None);
        };
        let mut changed = current.clone();
        if !change(&mut changed)? {
            return Ok(Some(current));
        }
        let changed = stored_form(store, vec![changed], HostRecord::has_broker_id)
            .pop()
            .unwrap_or_default();
        if !store
            .replace_unchanged(&[(current, changed.clone())])?
            .is_empty()
        {
            return Ok(Some(changed));
        }
    }
    Err(Error::user(format!(
        "the inventory record {} kept changing while broker wrote to it; try again",
        id.as_str()
    )))
}

fn write_stored(store: &dyn InventoryStore, records: Vec<HostRecord>) -> Result<()> {
    store.put(&stored_form(store, records, HostRecord::has_broker_id))
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
/// `pending`, or ready but still being handed off by its checkout, and another process, not known to
/// be gone, owns it; `None` for any other record. (This process's own such records are what its
/// finished checkouts could not clean up.)
fn checkout_under_way(record: &HostRecord) -> Option<String> {
    if record.state() != HostState::Pending && !crate::record::checkout_handing_off(record) {
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
            warning: None,
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

// ---------------------------------------------------------------------------------------------------
// The state of one checkout run

/// What every host of one checkout is recorded with: when its lease ends, and whether a guard of
/// this process holds it (`_broker_guarded`) or its user does.
#[derive(Debug, Clone, Copy)]
struct Terms {
    expire_time: Option<i64>,
    guarded: bool,
}

/// What stops the tasks of one checkout: the caller's cancellation, or the checkout's own, which is
/// set when the checkout's future is dropped.
#[derive(Debug, Clone)]
struct Stop {
    own: Cancellation,
    caller: Option<Cancellation>,
}

impl Stop {
    /// Whether the caller gave up on the clean-up ([`Cancellation::stop_waiting`]).
    fn is_abandoned(&self) -> bool {
        self.caller.as_ref().is_some_and(Cancellation::is_abandoned)
    }

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

/// The tasks making the hosts of one checkout, and the records they wrote.
///
/// Each task delivers its outcome through a channel rather than its join handle, so that a host made
/// after the caller went away is never dropped silently: when the checkout's future is dropped (a
/// caller's `timeout` or `select!`) before the run is disarmed, the run is stopped, not aborted —
/// tasks finish the provider call under way (within `cancel_timeout`) and give back what they made —
/// and [`BrokerInner::clean_up_dropped`] takes the channel and the ledger to the drop worker, which
/// gives back whatever of the run is still in the inventory once they have ended: it needs nothing
/// of the caller's runtime, which may end right after the drop.
struct CheckoutRun {
    inner: Arc<BrokerInner>,
    stop: Stop,
    ledger: Ledger,
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
            ledger: Ledger::default(),
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
                inner.checkin(vec![record], None).await;
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
        out.sort_by_key(|(i, _)| *i);
        out
    }

    /// The checkout has answered its caller: what the run made is the caller's (or was given back).
    fn disarm(&mut self) {
        self.finished = true;
    }
}

impl Drop for CheckoutRun {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.stop.own.cancel();
        self.tasks.detach_all();
        if self.stop.is_abandoned() {
            // The caller stopped waiting: what is unfinished stays recorded for `broker recover`.
            return;
        }
        // The tasks hold the other senders: the channel ends when the last of them has ended.
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.sender, sender));
        let deliveries = std::mem::replace(&mut self.receiver, receiver);
        let clean_up = Arc::clone(&self.inner).clean_up_dropped(deliveries, self.ledger.clone());
        if !crate::drop_worker::hand_over(clean_up) {
            tracing::error!(
                "a dropped checkout could not be cleaned up; `broker recover` gives back what it left once this process has exited"
            );
        }
    }
}

/// The identities of the records one checkout run wrote (or is about to write).
#[derive(Debug, Clone, Default)]
struct Ledger(Arc<Mutex<Vec<RecordId>>>);

impl Ledger {
    fn note(&self, id: RecordId) {
        lock(&self.0).push(id);
    }

    fn forget(&self, id: &RecordId) {
        lock(&self.0).retain(|noted| noted != id);
    }

    fn ids(&self) -> Vec<RecordId> {
        lock(&self.0).clone()
    }
}

/// How many inventory writes are under way, and a wake-up when one ends.
#[derive(Debug, Default)]
struct WritesUnderWay {
    count: std::sync::atomic::AtomicUsize,
    ended: tokio::sync::Notify,
}

impl WritesUnderWay {
    /// Counts a write until the returned token is dropped — with the blocking work that holds it,
    /// whether it ran or was dropped unrun.
    fn start(self: &Arc<Self>) -> WriteUnderWay {
        self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        WriteUnderWay(Arc::clone(self))
    }

    /// Waits until no write is under way, at most `bound`.
    async fn settled(&self, bound: Duration) {
        let wait = async {
            loop {
                let ended = self.ended.notified();
                let mut ended = std::pin::pin!(ended);
                ended.as_mut().enable();
                if self.count.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                    return;
                }
                ended.await;
            }
        };
        let _ = tokio::time::timeout(bound, wait).await;
    }
}

/// One write under way (see [`WritesUnderWay::start`]).
struct WriteUnderWay(Arc<WritesUnderWay>);

impl Drop for WriteUnderWay {
    fn drop(&mut self) {
        self.0
            .count
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.0.ended.notify_waiters();
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

/// The hosts of one checkout run, sorted by how they ended.
#[derive(Debug, Default)]
struct Tally {
    /// Made and recorded `ready`, in request order.
    made: Vec<HostRecord>,
    /// Failed, with their positions in the request.
    failures: Vec<(usize, Error)>,
    /// Not started, given back, or left (by a stop or a failed clean-up).
    stopped: Stopped,
}

impl Tally {
    fn of(attempts: Vec<(usize, HostAttempt)>) -> Tally {
        let mut tally = Tally::default();
        for (index, attempt) in attempts {
            match attempt {
                HostAttempt::Made(record) => tally.made.push(record),
                HostAttempt::Failed(e) => tally.failures.push((index, e)),
                HostAttempt::FailedAndLeft {
                    error,
                    host,
                    cleanup,
                } => {
                    tally.failures.push((index, error));
                    tally.stopped.left.push((host, cleanup));
                }
                HostAttempt::NotStarted => tally.stopped.not_started += 1,
                HostAttempt::GivenBack(name) => tally.stopped.given_back.push(name),
                HostAttempt::Left(name, e) => tally.stopped.left.push((name, e)),
            }
        }
        tally
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ledger_forgets_only_the_record_it_is_told_to() {
        let ledger = Ledger::default();
        for id in ["h1", "h2", "h3"] {
            ledger.note(RecordId::from(id));
        }
        ledger.forget(&RecordId::from("h2"));
        assert_eq!(
            ledger.ids(),
            vec![RecordId::from("h1"), RecordId::from("h3")]
        );
    }

    /// Each host's attempt lands in its place in the tally: made, failed (with its index), left,
    /// given back, and every host not started counted.
    #[test]
    fn a_tally_counts_each_hosts_attempt_in_its_place() {
        let made = HostRecord::pending("P", None, Mapping::new());
        let tally = Tally::of(vec![
            (0, HostAttempt::Made(made.clone())),
            (1, HostAttempt::NotStarted),
            (2, HostAttempt::Failed(Error::user("no quota"))),
            (3, HostAttempt::NotStarted),
            (4, HostAttempt::GivenBack("given".into())),
            (5, HostAttempt::Left("left".into(), Error::user("hung"))),
            (
                6,
                HostAttempt::FailedAndLeft {
                    error: Error::user("broke"),
                    host: "half".into(),
                    cleanup: Error::user("stuck"),
                },
            ),
            (7, HostAttempt::NotStarted),
        ]);
        assert_eq!(tally.made, [made]);
        let failed: Vec<(usize, String)> = tally
            .failures
            .iter()
            .map(|(i, e)| (*i, e.to_string()))
            .collect();
        assert_eq!(failed, [(2, "no quota".into()), (6, "broke".into())]);
        assert_eq!(tally.stopped.not_started, 3);
        assert_eq!(tally.stopped.given_back, ["given"]);
        let left: Vec<(&str, String)> = tally
            .stopped
            .left
            .iter()
            .map(|(n, e)| (n.as_str(), e.to_string()))
            .collect();
        assert_eq!(left, [("left", "hung".into()), ("half", "stuck".into())]);
    }

    #[test]
    fn a_stopped_checkout_lists_each_host_left_once_with_its_cause() {
        let stopped = Stopped {
            given_back: vec!["made".into()],
            left: vec![
                ("one".into(), Error::user("it hung")),
                ("two".into(), Error::user("it failed")),
            ],
            failed: Vec::new(),
            not_started: 1,
        };
        assert_eq!(
            stopped.describe(),
            "checkout stopped; checked in again: made; 1 not started; still checked out: \
             one (it hung), two (it failed); release them with `broker checkin one two` or \
             `broker recover --all`"
        );
        let nothing_made = Stopped {
            failed: vec![(0, Error::user("no quota")), (2, Error::user("timed out"))],
            ..Stopped::default()
        };
        assert_eq!(
            nothing_made.describe(),
            "checkout stopped; no host was made; #1 failed: no quota; #3 failed: timed out"
        );
    }

    /// The file store, its first write held until the test opens the gate; keeps the host names
    /// of each write.
    #[derive(Debug)]
    struct GatedStore {
        file: crate::inventory::YamlFileStore,
        writes: Mutex<Vec<Vec<String>>>,
        open: Mutex<bool>,
        opened: std::sync::Condvar,
    }

    impl InventoryStore for GatedStore {
        fn list(&self) -> Result<Vec<HostRecord>> {
            self.file.list()
        }
        fn put(&self, records: &[HostRecord]) -> Result<()> {
            let first = {
                let mut writes = lock(&self.writes);
                writes.push(records.iter().map(HostRecord::display_name).collect());
                writes.len() == 1
            };
            if first {
                let mut open = lock(&self.open);
                while !*open {
                    open = self.opened.wait(open).unwrap_or_else(|e| e.into_inner());
                }
            }
            self.file.put(records)
        }
        fn remove(&self, ids: &[RecordId]) -> Result<Vec<RecordId>> {
            self.file.remove(ids)
        }
        fn sync_provider(&self, listing: ProviderListing) -> Result<SyncReport> {
            self.file.sync_provider(listing)
        }
        fn location(&self) -> String {
            self.file.location()
        }
    }

    /// Opens the gate when dropped: a test that fails while a write waits at it does not leave
    /// the write (and the runtime, which waits for it) hanging.
    struct OpenAtEnd<'a>(&'a GatedStore);

    impl Drop for OpenAtEnd<'_> {
        fn drop(&mut self) {
            *lock(&self.0.open) = true;
            self.0.opened.notify_all();
        }
    }

    /// A lifecycle over `dir` whose store holds its first write at a gate.
    fn gated(dir: &std::path::Path) -> (Arc<GatedStore>, Arc<BrokerInner>) {
        let settings = Settings::load_from(dir, Vec::new()).unwrap();
        let store = Arc::new(GatedStore {
            file: crate::inventory::YamlFileStore::new(
                settings.inventory_path(),
                Duration::from_secs(60),
            ),
            writes: Mutex::new(Vec::new()),
            open: Mutex::new(false),
            opened: std::sync::Condvar::new(),
        });
        let inner =
            Arc::new(BrokerInner::new(settings, ProviderRegistry::new(), store.clone()).unwrap());
        (store, inner)
    }

    /// Writes a record of host `name` through the grouped writes, in a task of its own.
    fn put_grouped(inner: &Arc<BrokerInner>, name: &str) -> tokio::task::JoinHandle<Result<()>> {
        let mut record = HostRecord::pending("P", None, Mapping::new());
        record.set(fields::HOSTNAME, name);
        let inner = Arc::clone(inner);
        tokio::spawn(async move { inner.put_grouped(record).await })
    }

    /// Starts the write of host `a`, which the gate holds, and queues `b` and `c` behind it.
    async fn two_queued_behind_a_held_write(
        store: &GatedStore,
        inner: &Arc<BrokerInner>,
    ) -> [tokio::task::JoinHandle<Result<()>>; 3] {
        let first = put_grouped(inner, "a");
        until("the first write", || lock(&store.writes).len() == 1).await;
        let (second, third) = (put_grouped(inner, "b"), put_grouped(inner, "c"));
        until("two records queued", || {
            lock(&inner.grouped).waiting.len() == 2
        })
        .await;
        [first, second, third]
    }

    /// Waits (at most 30 s) until `holds`.
    async fn until(what: &str, holds: impl Fn() -> bool) {
        let wait = async {
            while !holds() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .unwrap_or_else(|_| panic!("{what} never happened"));
    }

    /// Records that finish while a write is under way wait for it and are then written together,
    /// in one write, by the task that wrote first.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_finishing_during_a_write_are_written_together_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let (store, inner) = gated(dir.path());
        let gate = OpenAtEnd(&store);
        let writes = two_queued_behind_a_held_write(&store, &inner).await;
        drop(gate);
        for done in writes {
            done.await.unwrap().unwrap();
        }
        let mut writes = lock(&store.writes).clone();
        writes.iter_mut().for_each(|w| w.sort());
        assert_eq!(writes, [vec!["a"], vec!["b", "c"]]);
        assert_eq!(inner.store.list().unwrap().len(), 3);
    }

    /// A write stopped mid-way (its task dropped, as when a checkout is stopped) does not keep
    /// the records queued behind it waiting: each is written on its own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_queued_behind_a_dropped_write_are_written_on_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let (store, inner) = gated(dir.path());
        let _gate = OpenAtEnd(&store);
        let [first, second, third] = two_queued_behind_a_held_write(&store, &inner).await;
        // The first write still waits at the gate.
        first.abort();
        for done in [second, third] {
            tokio::time::timeout(Duration::from_secs(30), done)
                .await
                .expect("a record queued behind a dropped write is written")
                .unwrap()
                .unwrap();
        }
        let mut alone: Vec<Vec<String>> = lock(&store.writes)[1..].to_vec();
        alone.sort();
        assert_eq!(alone, [vec!["b"], vec!["c"]]);
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
}
