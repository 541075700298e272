//! The `Broker` facade: check out, check in, extend, execute, sync, recover.
//!
//! Each method forwards: a request is resolved by [`crate::request`], the hosts' lifecycle — intent
//! → provider → ready, check-in, rollback, recover — runs in [`crate::lifecycle`], and checked-out
//! hosts are handed out as [`HostGuard`]s ([`crate::guard`]). One checkout reads top-down from
//! [`Broker::checkout_as`] through those three files, in that order.

use std::sync::Arc;

use serde_yaml::{Mapping, Value};

use crate::error::{Error, Result};
use crate::guard::HostGuard;
#[cfg(feature = "handoff")]
use crate::handoff::checkout::{Step, hand_off_checkout, hand_off_one};
#[cfg(feature = "handoff")]
use crate::handoff::{Handoff, HandoffRegistry, RunReport, Target, TargetStore};
use crate::host::{FromHost, Host};
use crate::inventory::{InventoryStore, SyncReport, YamlFileStore};
use crate::lease::ReapScope;
use crate::lifecycle::{BrokerInner, HostOutcome, RecoverScope};
use crate::provider::Provider;
use crate::provider::ProviderRegistry;
use crate::reap::Reaped;
use crate::record::{HostRecord, Owner};
use crate::request::{Cancellation, CheckoutRequest, ResolvedCheckout};
use crate::selection::filter_records;
use crate::settings::Settings;

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
    /// The handoff kinds this broker runs.
    #[cfg(feature = "handoff")]
    handoffs: Arc<std::sync::Mutex<HandoffRegistry>>,
    /// Where its handoff targets are.
    #[cfg(feature = "handoff")]
    targets: Arc<dyn TargetStore>,
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

    /// A broker over another inventory store (and, with the `handoff` feature, the targets file
    /// `targets.yaml` in the settings' directory).
    ///
    /// # Errors
    /// [`Error::Configuration`] for invalid timeouts in the settings.
    pub fn with_store(
        settings: Settings,
        registry: ProviderRegistry,
        store: Arc<dyn InventoryStore>,
    ) -> Result<Self> {
        #[cfg(feature = "handoff")]
        {
            let targets = crate::handoff::YamlTargetStore::for_settings(&settings)?
                .checked_against(crate::handoff::schema::builtin());
            Self::with_stores(settings, registry, store, Arc::new(targets))
        }
        #[cfg(not(feature = "handoff"))]
        Ok(Broker {
            inner: Arc::new(BrokerInner::new(settings, registry, store)?),
        })
    }

    /// A broker over another inventory store and another handoff-target store (a shared database
    /// keeps both).
    ///
    /// # Errors
    /// [`Error::Configuration`] for invalid timeouts in the settings.
    #[cfg(feature = "handoff")]
    pub fn with_stores(
        settings: Settings,
        registry: ProviderRegistry,
        store: Arc<dyn InventoryStore>,
        targets: Arc<dyn TargetStore>,
    ) -> Result<Self> {
        let broker = Broker {
            inner: Arc::new(BrokerInner::new(settings, registry, store)?),
            handoffs: Arc::new(std::sync::Mutex::new(crate::handoff::kinds::builtin())),
            targets,
        };
        broker
            .inner
            .set_handoff_hooks(Arc::new(crate::handoff::release::Release {
                kinds: Arc::clone(&broker.handoffs),
                targets: Arc::clone(&broker.targets),
            }));
        Ok(broker)
    }

    /// A broker with other settings over the same providers and inventory store (a scenario's
    /// `config.settings` merged for its run).
    ///
    /// # Errors
    /// [`Error::Configuration`] for invalid timeouts in the settings.
    pub fn with_settings(&self, settings: Settings) -> Result<Broker> {
        Self::with_store(
            settings,
            self.inner.registry.clone(),
            Arc::clone(&self.inner.store),
        )
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
        self.inner.set_origin(origin.into());
    }

    /// Sets whom providers ask when they must ask the user something (e.g. AnsibleTower's
    /// `dangling_behavior: prompt`); without it nobody is asked
    /// ([`NonInteractive`](crate::interaction::NonInteractive)) and providers take their
    /// non-interactive course. It reaches providers already in use too.
    pub fn set_interaction(&self, interaction: Arc<dyn crate::interaction::Interaction>) {
        self.inner.set_interaction(interaction);
    }

    /// Checks out the hosts a request asks for, all or nothing.
    ///
    /// Dropping the future before it completes (a `timeout`, a `select!`) stops the checkout at
    /// whatever point it is and gives back, shortly after and on broker's own drop-worker thread,
    /// every host it made and every record it wrote — also when the caller's runtime ends right
    /// after the drop.
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
        let resolved = crate::request::resolve_checkout(
            &request,
            &self.inner.settings,
            &self.inner.registry,
            self.inner.origin(),
        )?;
        // The handoff target is found before anything is made: an unknown one fails first.
        let handoff = self.plan_handoff(&resolved)?;
        let stop = resolved.cancellation.clone();
        self.inner.reap_on_start().await;
        let (provider, records) = self.inner.checkout(resolved).await?;
        let records = self
            .hand_off_planned(&provider, records, handoff, stop.as_ref())
            .await?;
        HostGuard::for_checkout(&self.inner, &provider, records).await
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
        self.inner.checkin_unless_under_way(records, limit).await
    }

    /// Extends hosts' leases at their providers, each through its own provider instance. When an
    /// argument is one a host's provider does not take ([`ProviderKind::check_arguments`]), no host
    /// is extended and each outcome carries that usage error.
    ///
    /// [`ProviderKind::check_arguments`]: crate::ProviderKind::check_arguments
    pub async fn extend(&self, records: Vec<HostRecord>, args: Mapping) -> Vec<HostOutcome> {
        self.inner.extend(records, args).await
    }

    /// Runs a provider action that is not a checkout (`broker execute`).
    ///
    /// # Errors
    /// [`Error::User`] when no provider matches; the provider's error.
    pub async fn execute(&self, request: CheckoutRequest) -> Result<Value> {
        let (kind, instance, args) =
            crate::request::resolve_execute(&request, &self.inner.settings, &self.inner.registry)?;
        self.inner.execute(&kind, instance.as_deref(), &args).await
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
        self.inner.provider_help(provider, instance, query).await
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
        self.inner.sync(spec, false).await
    }

    /// As [`Broker::sync_inventory`], removing every record the provider no longer lists however
    /// many that is (`broker inventory --sync X --force`).
    ///
    /// # Errors
    /// Unknown provider or instance; the provider's error; inventory errors.
    pub async fn sync_inventory_forced(&self, spec: &str) -> Result<SyncReport> {
        self.inner.sync(spec, true).await
    }

    /// Hosts from the inventory, optionally filtered, attached to their providers.
    ///
    /// # Errors
    /// Inventory errors, a bad filter, or a record whose provider is not compiled in.
    pub fn from_inventory(&self, filter: Option<&str>) -> Result<Vec<Host>> {
        filter_records(self.inner.store.list()?, filter)?
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
        let location = self.inner.store.location();
        let requests = records
            .iter()
            .map(|r| crate::request::duplicate_request(r, count, cancellation, &location))
            .collect::<Result<Vec<_>>>()?;
        let mut out = Vec::new();
        for request in requests {
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
        self.inner.recover(scope).await
    }

    /// Checks in what needs a reaper (`broker reap`): hosts whose lease ended, and hosts whose
    /// holding process is gone — its guards' hosts and what it left `pending` or `releasing`; with
    /// `dry_run`, only says which (see [`crate::lease`] for the rules). Safe with other reapers at
    /// once: each host is checked in by one of them.
    ///
    /// ```no_run
    /// # async fn demo(broker: broker_core::Broker) -> broker_core::Result<()> {
    /// use broker_core::lease::ReapScope;
    ///
    /// for reaped in broker.reap(ReapScope::default(), false).await? {
    ///     println!("{}: {}", reaped.record.display_name(), reaped.reason);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// Inventory errors; per-host failures are in the results.
    pub async fn reap(&self, scope: ReapScope, dry_run: bool) -> Result<Vec<Reaped>> {
        self.inner.reap(scope, dry_run).await
    }

    /// Checks in the orphans the provider of `spec` holds for this inventory (`broker reap --orphans
    /// SPEC`): hosts carrying broker's label of a record identity that no inventory record has, made
    /// `grace` or longer ago (see [`crate::lease::select_orphans`]); with `dry_run`, only says
    /// which. `spec` is written as for [`Broker::sync_inventory`]: `Provider`, `Provider:filter`,
    /// `Provider::instance`. A provider lists only the hosts of this inventory
    /// ([`ProviderConfig::inventory_id`](crate::ProviderConfig::inventory_id)), so another
    /// inventory's hosts are never taken for orphans.
    ///
    /// ```no_run
    /// # async fn demo(broker: broker_core::Broker) -> broker_core::Result<()> {
    /// use std::time::Duration;
    ///
    /// let reaped = broker.reap_orphans("Container", Duration::from_secs(600), false).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// Unknown provider or instance; the provider's error listing its hosts (a provider without a
    /// listing: [`Error::NotImplemented`](crate::Error::NotImplemented)); inventory errors.
    /// Per-host failures are in the results.
    pub async fn reap_orphans(
        &self,
        spec: &str,
        grace: std::time::Duration,
        dry_run: bool,
    ) -> Result<Vec<Reaped>> {
        self.inner.reap_orphans(spec, grace, dry_run).await
    }

    /// Waits until process `pid` of this machine has ended, however it ends, then checks in what it
    /// held: its guards' hosts and its checkouts under way (`broker reap --watch PID`; see
    /// [`crate::reap::spawn_watcher`]). Returns at once, reaping, when no such process runs.
    ///
    /// # Errors
    /// [`Error::Usage`] for pid 0, which names no process; inventory errors; per-host failures are
    /// in the results.
    pub async fn watch(&self, pid: u32) -> Result<Vec<Reaped>> {
        if pid == 0 {
            return Err(Error::usage(
                "pid 0 names no process; give the pid of a process on this machine to watch",
            ));
        }
        if let Some(process) = Owner::local(pid) {
            crate::reap::wait_until_gone(&process, crate::reap::WATCH_POLL).await;
        }
        self.inner.reap(ReapScope::left_by(pid), false).await
    }

    /// What this process still holds in the inventory: its guards' hosts not yet checked in, and
    /// what its checkouts and check-ins left `pending` or `releasing` — for an end-of-suite
    /// assertion. Hosts handed to the user ([`HostGuard::keep`], `keep_on_failure`) are not listed.
    ///
    /// ```no_run
    /// # fn demo(broker: broker_core::Broker) -> broker_core::Result<()> {
    /// let left = broker.leftovers()?;
    /// assert!(left.is_empty(), "hosts left behind: {left:?}");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// Inventory errors.
    pub fn leftovers(&self) -> Result<Vec<HostRecord>> {
        self.inner.leftovers()
    }

    /// The error for a stopped checkout whose clean-up its caller stopped waiting for (a second
    /// Ctrl-C, a deadline; see [`Cancellation::stop_waiting`]): [`Error::Interrupted`] listing what
    /// this process left in the inventory and how to finish — `broker recover`, and `broker checkin`
    /// for hosts already ready. `why` says what stopped the wait.
    pub fn stopped_waiting(&self, why: &str) -> Error {
        self.inner.stopped_waiting(why)
    }
}

/// Handoffs (feature `handoff`): kinds, running one on a host, and the step of a checkout that
/// hands each host off before its guard is handed out.
#[cfg(feature = "handoff")]
impl Broker {
    /// Adds a handoff kind (replacing one of the same name), as a provider is added to a
    /// [`ProviderRegistry`]: targets of that kind are then run by it. `noop` and, with the
    /// `handoff-script` feature, `script` are there from the start.
    pub fn register_handoff(&self, kind: Arc<dyn Handoff>) {
        crate::sync::lock(&self.handoffs).register(kind);
    }

    /// The names of the handoff kinds this broker runs.
    pub fn handoff_kinds(&self) -> Vec<String> {
        let registry = crate::sync::lock(&self.handoffs);
        registry.names().into_iter().map(str::to_owned).collect()
    }

    /// Hands a checked-out host to the handoff target `target` (an id or a name) (`broker handoff run`), or
    /// again (`retry`), and records how it went on the host's inventory record. A failed handoff
    /// is a report, not an error: the host stays checked out.
    ///
    /// # Errors
    /// An unknown target or kind, invalid run settings of the target, inventory errors.
    pub async fn handoff(&self, host: &Host, target: &str) -> Result<RunReport> {
        let step = self.handoff_step(target)?;
        hand_off_one(&self.inner, host.clone(), &step, None).await
    }

    /// As [`Broker::handoff`], until `cancellation` is cancelled (Ctrl-C, SIGTERM): then the run is
    /// stopped — what it started on the host is stopped and its files removed — and its report
    /// says `handoff_failed`, interrupted; the host stays checked out.
    ///
    /// # Errors
    /// As [`Broker::handoff`].
    pub async fn handoff_cancellable(
        &self,
        host: &Host,
        target: &str,
        cancellation: &Cancellation,
    ) -> Result<RunReport> {
        let step = self.handoff_step(target)?;
        hand_off_one(&self.inner, host.clone(), &step, Some(cancellation)).await
    }

    /// As [`Broker::handoff`], to a target given whole rather than by id or name (one not stored
    /// in `targets.yaml`).
    ///
    /// # Errors
    /// An unknown kind, invalid run settings of the target, inventory errors.
    pub async fn handoff_to(&self, host: &Host, target: Target) -> Result<RunReport> {
        let step = self.step_of(target)?;
        hand_off_one(&self.inner, host.clone(), &step, None).await
    }

    /// What to tell the user about a host a checkout kept although its handoff did not succeed
    /// (`keep_failed_handoff`): what it is, why, and how to look, retry or give it back; `None` for
    /// a host handed off or never handed off.
    pub fn kept_handoff_notice(&self, record: &HostRecord) -> Option<String> {
        let id = record
            .get(crate::record::fields::HANDOFF_TARGET)
            .and_then(Value::as_str)
            .unwrap_or_default();
        let name = self
            .targets
            .get(id)
            .map_or_else(|_| id.to_owned(), |t| t.name);
        crate::handoff::run::kept_notice(record, &name)
    }

    /// Where this broker's handoff targets are: `targets.yaml` next to the inventory file, or the
    /// store given to [`Broker::with_stores`] (the shared database's).
    pub fn target_store(&self) -> &Arc<dyn TargetStore> {
        &self.targets
    }

    /// The kind and target a handoff to `target` (an id or a name) runs.
    fn handoff_step(&self, target: &str) -> Result<Step> {
        self.step_of(self.targets.get(target)?)
    }

    fn step_of(&self, target: Target) -> Result<Step> {
        let kind = Arc::clone(crate::sync::lock(&self.handoffs).get(&target.kind)?);
        Ok(Step { kind, target })
    }

    /// The handoff a checkout asks for, found before anything is made.
    fn plan_handoff(&self, resolved: &ResolvedCheckout) -> Result<Option<(Step, bool)>> {
        resolved
            .handoff
            .as_deref()
            .map(|target| Ok((self.handoff_step(target)?, resolved.keep_failed_handoff)))
            .transpose()
    }

    /// Hands the hosts of a checkout off, as planned; all or nothing, and stopped (checking them
    /// in) when `stop` is cancelled.
    async fn hand_off_planned(
        &self,
        provider: &Arc<dyn Provider>,
        records: Vec<HostRecord>,
        planned: Option<(Step, bool)>,
        stop: Option<&Cancellation>,
    ) -> Result<Vec<HostRecord>> {
        match planned {
            Some((step, keep_failed)) => {
                hand_off_checkout(&self.inner, provider, records, &step, keep_failed, stop).await
            }
            None => Ok(records),
        }
    }
}

/// Without the `handoff` feature, a checkout that asks for a handoff (a nick's `handoff:` key) is
/// refused before anything is made.
#[cfg(not(feature = "handoff"))]
impl Broker {
    fn plan_handoff(
        &self,
        resolved: &ResolvedCheckout,
    ) -> Result<Option<std::convert::Infallible>> {
        match &resolved.handoff {
            Some(target) => Err(Error::user(format!(
                "this checkout asks for a handoff to `{target}`, but broker was built without \
                 handoffs; build it with broker-core's `handoff` feature"
            ))),
            None => Ok(None),
        }
    }

    async fn hand_off_planned(
        &self,
        _provider: &Arc<dyn Provider>,
        records: Vec<HostRecord>,
        _planned: Option<std::convert::Infallible>,
        _stop: Option<&Cancellation>,
    ) -> Result<Vec<HostRecord>> {
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::inventory::{ProviderListing, YamlFileStore};
    use crate::provider::{CheckoutContext, Provider, ProviderKind};
    use crate::record::{HostState, Owner, RecordId, fields};

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

    /// The origin set on a broker is recorded with each host it checks out (`_broker_origin`).
    #[tokio::test]
    async fn the_origin_set_is_recorded_with_each_checkout() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings::load_from(dir.path(), Vec::new()).unwrap();
        let kind =
            ProviderKind::new("Panicky", "test", build_panicky).checkout_actions(&["panic_action"]);
        let broker = Broker::new(settings, ProviderRegistry::new().with(kind)).unwrap();
        broker.set_origin("ci-job-7 (qe)");
        let guards = broker
            .checkout(CheckoutRequest::new().arg("panic_action", "x"))
            .await
            .unwrap();
        let origin = |record: &HostRecord| {
            record
                .get(fields::ARGS)
                .and_then(|args| args.get("_broker_origin"))
                .cloned()
        };
        assert_eq!(
            origin(guards[0].record()),
            Some(Value::from("ci-job-7 (qe)"))
        );
        let stored = broker.inventory().list().unwrap();
        assert_eq!(origin(&stored[0]), Some(Value::from("ci-job-7 (qe)")));
    }

    /// The notice about a host kept after a failed handoff names the target by its name (by its
    /// id when no target has it any more), and there is none for a host without a failed handoff.
    #[test]
    fn a_kept_hosts_notice_names_its_handoff_target() {
        use crate::handoff::run::HandoffState;
        use crate::handoff::target::{ConfigValue, Target, TargetConfig};

        let dir = tempfile::tempdir().unwrap();
        let settings = Settings::load_from(dir.path(), Vec::new()).unwrap();
        let broker = Broker::new(settings, ProviderRegistry::new()).unwrap();
        let mut config = TargetConfig::default();
        config.insert("script", ConfigValue::new("/usr/local/bin/enrol", false));
        let target = Target::new("web-tier", "", "script", config).unwrap();
        let id = target.id.to_string();
        broker.target_store().add(target).unwrap();

        let mut record = HostRecord::default();
        record.set("hostname", "h1.example.com");
        assert_eq!(broker.kept_handoff_notice(&record), None);
        record.set(fields::HANDOFF_TARGET, id.as_str());
        record.set(fields::HANDOFF_STATE, HandoffState::HandedOff.as_str());
        assert_eq!(broker.kept_handoff_notice(&record), None);

        record.set(fields::HANDOFF_STATE, HandoffState::Failed.as_str());
        record.set(fields::HANDOFF_ERROR, "disk full");
        let notice = broker.kept_handoff_notice(&record).unwrap_or_default();
        assert!(
            notice.starts_with(
                "kept host h1.example.com although its handoff to `web-tier` ended handoff_failed \
                 (disk full): `broker handoff status h1.example.com`"
            ),
            "{notice}"
        );
        record.set(fields::HANDOFF_TARGET, "removed-since");
        let notice = broker.kept_handoff_notice(&record).unwrap_or_default();
        assert!(
            notice.contains("handoff to `removed-since` ended"),
            "{notice}"
        );
    }

    /// Answers `broker execute` with the arguments it was given.
    #[derive(Debug)]
    struct Echo;

    #[async_trait::async_trait]
    impl Provider for Echo {
        fn name(&self) -> &str {
            "Echo"
        }
        fn instance(&self) -> Option<&str> {
            None
        }
        async fn checkout(&self, _ctx: &CheckoutContext<'_>) -> Result<Mapping> {
            Err(Error::user("Echo makes no hosts"))
        }
        async fn checkin(&self, _host: &HostRecord) -> Result<()> {
            Ok(())
        }
        async fn execute(&self, args: &Mapping) -> Result<Value> {
            Ok(Value::Mapping(args.clone()))
        }
    }

    #[tokio::test]
    async fn execute_answers_with_what_the_provider_returns() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings::load_from(dir.path(), Vec::new()).unwrap();
        let kind = ProviderKind::new("Echo", "test", |_| Ok(Arc::new(Echo) as Arc<dyn Provider>))
            .execute_actions(&["job"]);
        let broker = Broker::new(settings, ProviderRegistry::new().with(kind)).unwrap();
        let answer = broker
            .execute(CheckoutRequest::new().arg("job", "sweep").arg("size", 3))
            .await
            .unwrap();
        let expected: Value = serde_yaml::from_str("{job: sweep, size: 3}").unwrap();
        assert_eq!(answer, expected);
        // Nothing is recorded: an action is not a checkout.
        assert!(broker.inventory().list().unwrap().is_empty());
        let e = broker
            .execute(CheckoutRequest::new().arg("nothing", "x"))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "could not determine a provider from the arguments (nothing); give one of: job"
        );
    }

    /// The inventory's hosts, all or those a filter keeps, each ready to use through its provider.
    #[tokio::test]
    async fn hosts_from_the_inventory_are_all_or_those_a_filter_keeps() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings::load_from(dir.path(), Vec::new()).unwrap();
        let kind =
            ProviderKind::new("Panicky", "test", build_panicky).checkout_actions(&["panic_action"]);
        let broker = Broker::new(settings, ProviderRegistry::new().with(kind)).unwrap();
        let guards = broker
            .checkout(CheckoutRequest::new().arg("panic_action", "x"))
            .await
            .unwrap();
        let mut record = guards[0].record().clone();
        guards.into_iter().for_each(|g| drop(g.keep()));
        record.set("hostname", "h2");
        record.set(fields::ID, "another");
        broker.inventory().put(&[record]).unwrap();
        let names = |hosts: Vec<Host>| -> Vec<String> {
            hosts.iter().map(|h| h.record().display_name()).collect()
        };
        assert_eq!(names(broker.from_inventory(None).unwrap()), ["h0", "h2"]);
        let kept = broker
            .from_inventory(Some("@inv.hostname == 'h2'"))
            .unwrap();
        assert_eq!(names(kept), ["h2"]);
        assert!(broker.from_inventory(Some("@inv.hostname ==")).is_err());
    }

    /// Answers `broker execute` with what its configuration's interaction chose.
    #[derive(Debug)]
    struct Asking(crate::ProviderConfig);

    #[async_trait::async_trait]
    impl Provider for Asking {
        fn name(&self) -> &str {
            "Asking"
        }
        fn instance(&self) -> Option<&str> {
            None
        }
        async fn checkout(&self, _ctx: &CheckoutContext<'_>) -> Result<Mapping> {
            Err(Error::user("Asking makes no hosts"))
        }
        async fn checkin(&self, _host: &HostRecord) -> Result<()> {
            Ok(())
        }
        async fn execute(&self, _args: &Mapping) -> Result<Value> {
            let question = crate::interaction::Question {
                context: "",
                prompt: "which?",
                answers: &["c", "s"],
            };
            Ok(self
                .0
                .interaction()
                .choose(&question)
                .map_or(Value::Null, Value::from))
        }
    }

    /// The first answer of every question.
    struct First;

    impl crate::interaction::Interaction for First {
        fn choose(&self, question: &crate::interaction::Question<'_>) -> Option<String> {
            question.answers.first().map(|a| (*a).to_owned())
        }
    }

    /// A provider asks nobody until an interaction is set, then asks it, also when it was built
    /// before.
    #[tokio::test]
    async fn the_interaction_set_reaches_providers_built_before() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings::load_from(dir.path(), Vec::new()).unwrap();
        let kind = ProviderKind::new("Asking", "test", |config| {
            Ok(Arc::new(Asking(config)) as Arc<dyn Provider>)
        })
        .execute_actions(&["job"]);
        let broker = Broker::new(settings, ProviderRegistry::new().with(kind)).unwrap();
        let ask = || broker.execute(CheckoutRequest::new().arg("job", "x"));
        assert_eq!(ask().await.unwrap(), Value::Null);
        broker.set_interaction(Arc::new(First));
        assert_eq!(ask().await.unwrap(), Value::from("c"));
        // `{:?}` of a broker says where it works and with which providers.
        let shown = format!("{broker:?}");
        let directory = format!("{:?}", dir.path());
        for part in [
            "Broker",
            directory.as_str(),
            "[\"Asking\"]",
            "inventory.yaml",
        ] {
            assert!(shown.contains(part), "{part} in {shown}");
        }
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

    /// Lists one host broker made that no record knows, one a record knows, and one made by hand;
    /// records what it checks in (in `LISTING_CHECKINS`: one test uses it).
    #[derive(Debug)]
    struct Listing;

    const LISTING_KNOWN: &str = "h00000000000000a1";
    static LISTING_CHECKINS: Mutex<Vec<String>> = Mutex::new(Vec::new());

    #[async_trait::async_trait]
    impl Provider for Listing {
        fn name(&self) -> &str {
            "Listing"
        }
        fn instance(&self) -> Option<&str> {
            None
        }
        async fn checkout(&self, _ctx: &CheckoutContext<'_>) -> Result<Mapping> {
            Err(self.not_implemented("checkout"))
        }
        async fn checkin(&self, host: &HostRecord) -> Result<()> {
            let name = host.hostname().unwrap_or_default().to_owned();
            crate::sync::lock(&LISTING_CHECKINS).push(name);
            Ok(())
        }
        async fn inventory(&self, _filter: Option<&str>) -> Result<Vec<HostRecord>> {
            let made = crate::time::now_epoch() - 3600;
            let host = |hostname: &str, id: Option<&str>| {
                let mut record = HostRecord::pending("Listing", None, Mapping::new());
                record.set(fields::HOSTNAME, hostname);
                record.set(fields::CHECKOUT_TIME, made);
                match id {
                    Some(id) => record.set(fields::ID, id),
                    None => {
                        record.fields_mut().remove(fields::ID);
                    }
                }
                record
            };
            Ok(vec![
                host("orphan", Some("h00000000000000b1")),
                host("known", Some(LISTING_KNOWN)),
                host("by-hand", None),
            ])
        }
    }

    #[tokio::test]
    async fn reap_orphans_checks_in_only_what_no_record_knows() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings::load_from(dir.path(), Vec::new()).unwrap();
        let kind = ProviderKind::new("Listing", "test", |_| Ok(Arc::new(Listing)));
        let broker = Broker::new(settings, ProviderRegistry::new().with(kind)).unwrap();
        let mut known = HostRecord::pending("Listing", None, Mapping::new());
        known.set(fields::ID, LISTING_KNOWN);
        known.set(fields::HOSTNAME, "known");
        broker.inventory().put(&[known]).unwrap();
        assert_eq!(broker.registry().names(), vec!["Listing"]);

        let grace = Duration::from_secs(60);
        let picked = broker.reap_orphans("Listing", grace, true).await.unwrap();
        let names: Vec<_> = picked.iter().map(|r| r.record.hostname()).collect();
        assert_eq!(names, vec![Some("orphan")]);
        assert!(picked[0].result.is_none(), "a dry run checks nothing in");
        assert!(crate::sync::lock(&LISTING_CHECKINS).is_empty());

        let reaped = broker.reap_orphans("Listing", grace, false).await.unwrap();
        assert_eq!(reaped.len(), 1);
        assert!(
            matches!(reaped[0].result, Some(Ok(()))),
            "{:?}",
            reaped[0].result
        );
        assert_eq!(*crate::sync::lock(&LISTING_CHECKINS), vec!["orphan"]);
        // The orphan's claim record is gone with it; the known host's record stays.
        let left = broker.inventory().list().unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].hostname(), Some("known"));
    }

    #[cfg(feature = "handoff")]
    #[test]
    fn handoff_kinds_lists_the_builtin_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings::load_from(dir.path(), Vec::new()).unwrap();
        let broker = Broker::new(settings, ProviderRegistry::new()).unwrap();
        let kinds = broker.handoff_kinds();
        assert!(kinds.iter().any(|k| k == "noop"), "{kinds:?}");
        #[cfg(feature = "handoff-script")]
        assert!(kinds.iter().any(|k| k == "script"), "{kinds:?}");
    }
}
