//! The fault wrapper: makes any provider (and the inventory) fail, hang or panic before or after
//! one call, so a test can check that broker and the provider together lose no host and no record.
//!
//! It lives in the conformance kit, not in providers: a production provider carries no switch that
//! makes it misbehave on purpose.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use serde_yaml::{Mapping, Value};

use crate::error::{Error, Result};
use crate::inventory::{InventoryStore, ProviderListing, SyncReport};
use crate::provider::{CheckoutContext, Provider, ProviderKind};
use crate::record::{HostRecord, RecordId};
use crate::session::Session;
use crate::settings::ProviderConfig;
use crate::sync::lock;

/// The call a [`Fault`] strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Call {
    /// The provider makes a host ([`Provider::checkout`]).
    Create,
    /// Broker writes the inventory ([`InventoryStore::put`] or [`InventoryStore::remove`]).
    Record,
    /// The provider gives a host back ([`Provider::checkin`]).
    Release,
}

/// Whether a [`Fault`] strikes before the real call or after it has done its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum When {
    /// The real call is not made.
    Before,
    /// The real call is made and its work done; its caller still sees the fault.
    After,
}

/// What a [`Fault`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Effect {
    /// The call returns an error.
    Fail,
    /// The call never answers: a provider call until its future is dropped, an inventory write
    /// until [`FaultInjector::release`] (it blocks a thread, as a stuck file system would).
    Hang,
    /// The call panics.
    Panic,
}

/// One fault: what it does, at which call, and which host or write it strikes. It strikes once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    call: Call,
    when: When,
    effect: Effect,
    index: usize,
}

impl Fault {
    /// `effect` `when` `call`, striking the first host (index 0) or the first inventory write.
    pub fn new(call: Call, when: When, effect: Effect) -> Self {
        Fault {
            call,
            when,
            effect,
            index: 0,
        }
    }

    /// Strikes the host of this 0-based index in its request ([`CheckoutContext::index`]), for
    /// [`Call::Create`] and [`Call::Release`].
    #[must_use]
    pub fn host(mut self, index: usize) -> Self {
        self.index = index;
        self
    }

    /// Strikes the inventory write of this 0-based index (puts and removes counted together, in
    /// the order broker makes them), for [`Call::Record`].
    #[must_use]
    pub fn write(mut self, index: usize) -> Self {
        self.index = index;
        self
    }

    /// The call it strikes.
    pub fn call(&self) -> Call {
        self.call
    }

    /// Before or after the call.
    pub fn when(&self) -> When {
        self.when
    }

    /// What it does.
    pub fn effect(&self) -> Effect {
        self.effect
    }

    /// Every fault the conformance kit tries: each effect before and after each call, on the second
    /// host of two for creates and releases, and on each write of a one-host checkout and check-in
    /// (intent, ready, releasing, removal).
    pub fn matrix() -> Vec<Fault> {
        let mut out = Vec::new();
        for effect in [Effect::Fail, Effect::Hang, Effect::Panic] {
            for when in [When::Before, When::After] {
                out.push(Fault::new(Call::Create, when, effect).host(1));
                out.push(Fault::new(Call::Release, when, effect).host(1));
                for write in 0..4 {
                    out.push(Fault::new(Call::Record, when, effect).write(write));
                }
            }
        }
        out
    }

    /// How many hosts the kit's scenario for this fault checks out.
    pub(crate) fn hosts(&self) -> usize {
        match self.call {
            Call::Record => 1,
            Call::Create | Call::Release => self.index + 1,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let effect = match self.effect {
            Effect::Fail => "fail",
            Effect::Hang => "hang",
            Effect::Panic => "panic",
        };
        let when = match self.when {
            When::Before => "before",
            When::After => "after",
        };
        match self.call {
            Call::Create => write!(f, "{effect} {when} creating host index {}", self.index),
            Call::Release => write!(f, "{effect} {when} releasing host index {}", self.index),
            Call::Record => write!(f, "{effect} {when} inventory write index {}", self.index),
        }
    }
}

/// Injects one [`Fault`] into the providers of the kinds it wraps ([`FaultInjector::wrap`]) and the
/// stores it wraps ([`FaultInjector::wrap_store`]), and watches what they do: which records were
/// asked for, which host names came back, which calls are under way.
///
/// ```
/// use broker_core::conformance::{Call, Effect, Fault, FaultInjector, When};
/// use broker_core::ProviderRegistry;
/// # fn demo(kind: broker_core::ProviderKind) {
/// // The third host of a checkout fails once its host exists.
/// let injector = FaultInjector::new(Fault::new(Call::Create, When::After, Effect::Fail).host(2));
/// let registry = ProviderRegistry::new().with(injector.wrap(kind));
/// # }
/// ```
#[derive(Debug)]
pub struct FaultInjector {
    fault: Option<Fault>,
    armed: AtomicBool,
    struck: AtomicBool,
    writes: AtomicUsize,
    /// Provider and store calls under way.
    in_flight: tokio::sync::watch::Sender<usize>,
    /// Calls hanging now.
    hanging: tokio::sync::watch::Sender<usize>,
    released: Mutex<bool>,
    release: Condvar,
    /// Host index by record identity, from the creates seen.
    indices: Mutex<HashMap<String, usize>>,
    /// Names and host names the hosts got, from planned fields, creates and records written.
    names: Mutex<HashSet<String>>,
}

impl FaultInjector {
    /// An injector of `fault`, armed.
    pub fn new(fault: Fault) -> Arc<Self> {
        Self::with(Some(fault))
    }

    /// An injector that injects nothing and only watches.
    pub fn watching() -> Arc<Self> {
        Self::with(None)
    }

    fn with(fault: Option<Fault>) -> Arc<Self> {
        Arc::new(FaultInjector {
            fault,
            armed: AtomicBool::new(true),
            struck: AtomicBool::new(false),
            writes: AtomicUsize::new(0),
            in_flight: tokio::sync::watch::Sender::new(0),
            hanging: tokio::sync::watch::Sender::new(0),
            released: Mutex::new(false),
            release: Condvar::new(),
            indices: Mutex::new(HashMap::new()),
            names: Mutex::new(HashSet::new()),
        })
    }

    /// `kind`, with its providers wrapped: same name, action keys and arguments. The wrapper and
    /// this injector live as long as the process (a kind is `'static`).
    pub fn wrap(self: &Arc<Self>, kind: ProviderKind) -> ProviderKind {
        let injector = Arc::clone(self);
        let build = move |config: ProviderConfig| -> Result<Arc<dyn Provider>> {
            let inner = kind.build(config)?;
            Ok(Arc::new(FaultyProvider {
                inner,
                injector: Arc::clone(&injector),
            }))
        };
        kind.built_by(Box::leak(Box::new(build)))
    }

    /// `store`, with its writes subject to a [`Call::Record`] fault.
    pub fn wrap_store(self: &Arc<Self>, store: Arc<dyn InventoryStore>) -> Arc<dyn InventoryStore> {
        Arc::new(FaultyStore {
            inner: store,
            injector: Arc::clone(self),
        })
    }

    /// The fault, if any.
    pub fn fault(&self) -> Option<Fault> {
        self.fault
    }

    /// Stops injecting: later calls pass through (a hang under way goes on hanging).
    pub fn disarm(&self) {
        self.armed.store(false, Ordering::SeqCst);
    }

    /// Whether the fault has struck.
    pub fn has_struck(&self) -> bool {
        self.struck.load(Ordering::SeqCst)
    }

    /// Lets a hanging inventory write go on (a hanging provider call hangs until it is dropped).
    pub fn release(&self) {
        *lock(&self.released) = true;
        self.release.notify_all();
    }

    /// Waits until a call hangs.
    pub async fn hung(&self) {
        let mut hanging = self.hanging.subscribe();
        let _ = hanging.wait_for(|n| *n > 0).await;
    }

    /// Waits until no wrapped call is under way.
    pub async fn idle(&self) {
        let mut in_flight = self.in_flight.subscribe();
        let _ = in_flight.wait_for(|n| *n == 0).await;
    }

    /// Whether `listed` (a host as its provider lists it) is one the wrapped providers made or were
    /// asked for: by its record identity (as `_broker_id`, or within a field, as in TestProvider's
    /// `broker-test-<id>` names), else by a name or host name a create returned.
    pub fn made(&self, listed: &HostRecord) -> bool {
        let asked = lock(&self.indices);
        if listed.has_broker_id() && asked.contains_key(listed.id().as_str()) {
            return true;
        }
        let names_an_id = |v: &Value| match v {
            Value::String(text) => asked.keys().any(|id| text.contains(id.as_str())),
            _ => false,
        };
        if listed.fields().values().any(names_an_id) {
            return true;
        }
        drop(asked);
        let names = lock(&self.names);
        [listed.name(), listed.hostname()]
            .into_iter()
            .flatten()
            .any(|n| names.contains(n))
    }

    fn note_names(&self, fields: &Mapping) {
        let mut names = lock(&self.names);
        for key in ["name", "hostname"] {
            if let Some(Value::String(n)) = fields.get(key) {
                names.insert(n.clone());
            }
        }
    }

    fn enter(&self) -> Counted<'_> {
        Counted::new(&self.in_flight)
    }

    /// The fault, when it strikes `call` `when`, at host or write `index`: taken, so it strikes once.
    fn take(&self, call: Call, when: When, index: usize) -> Option<Fault> {
        let fault = self.fault?;
        let due = fault.call == call && fault.when == when && fault.index == index;
        if !due || !self.armed.load(Ordering::SeqCst) || self.struck.swap(true, Ordering::SeqCst) {
            return None;
        }
        tracing::warn!("conformance kit: injecting `{fault}`");
        Some(fault)
    }

    /// A provider call's fault point.
    async fn strike(&self, provider: &str, call: Call, when: When, index: usize) -> Result<()> {
        match self.take(call, when, index).map(|f| (f, f.effect)) {
            None => Ok(()),
            Some((fault, Effect::Fail)) => Err(injected(provider, fault)),
            Some((fault, Effect::Panic)) => panic!("conformance kit: injected panic: {fault}"),
            Some((_, Effect::Hang)) => {
                let _hanging = Counted::new(&self.hanging);
                std::future::pending::<()>().await;
                Ok(())
            }
        }
    }

    /// An inventory write's fault point (on a blocking thread).
    fn strike_write(&self, when: When, index: usize) -> Result<()> {
        match self.take(Call::Record, when, index).map(|f| (f, f.effect)) {
            None => Ok(()),
            Some((fault, Effect::Fail)) => Err(Error::InventoryUpdate {
                message: format!("conformance kit: injected failure: {fault}"),
            }),
            Some((fault, Effect::Panic)) => panic!("conformance kit: injected panic: {fault}"),
            Some((_, Effect::Hang)) => {
                let _hanging = Counted::new(&self.hanging);
                let mut released = lock(&self.released);
                while !*released {
                    released = self
                        .release
                        .wait(released)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                Ok(())
            }
        }
    }

    /// One inventory write, between its two fault points.
    fn write<T>(&self, records: &[HostRecord], work: impl FnOnce() -> Result<T>) -> Result<T> {
        let _call = self.enter();
        for record in records {
            self.note_names(record.fields());
        }
        let index = self.writes.fetch_add(1, Ordering::SeqCst);
        self.strike_write(When::Before, index)?;
        let out = work()?;
        self.strike_write(When::After, index)?;
        Ok(out)
    }
}

fn injected(provider: &str, fault: Fault) -> Error {
    Error::provider(
        provider,
        format!("conformance kit: injected failure: {fault}"),
    )
}

/// Counts one in a watched counter while it lives.
struct Counted<'a>(&'a tokio::sync::watch::Sender<usize>);

impl<'a> Counted<'a> {
    fn new(counter: &'a tokio::sync::watch::Sender<usize>) -> Self {
        counter.send_modify(|n| *n += 1);
        Counted(counter)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// A provider with a [`FaultInjector`] around its create and release.
#[derive(Debug)]
struct FaultyProvider {
    inner: Arc<dyn Provider>,
    injector: Arc<FaultInjector>,
}

#[async_trait::async_trait]
impl Provider for FaultyProvider {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn instance(&self) -> Option<&str> {
        self.inner.instance()
    }

    fn planned_fields(&self, ctx: &CheckoutContext<'_>) -> Mapping {
        let fields = self.inner.planned_fields(ctx);
        self.injector.note_names(&fields);
        fields
    }

    async fn checkout(&self, ctx: &CheckoutContext<'_>) -> Result<Mapping> {
        let injector = &self.injector;
        let _call = injector.enter();
        let index = ctx.index();
        lock(&injector.indices).insert(ctx.record_id().to_string(), index);
        let name = self.inner.name();
        injector
            .strike(name, Call::Create, When::Before, index)
            .await?;
        let fields = self.inner.checkout(ctx).await?;
        injector.note_names(&fields);
        injector
            .strike(name, Call::Create, When::After, index)
            .await?;
        Ok(fields)
    }

    async fn checkin(&self, host: &HostRecord) -> Result<()> {
        let injector = &self.injector;
        let _call = injector.enter();
        // Records the injector never saw created (synced, older) are no host index.
        let index = lock(&injector.indices)
            .get(host.id().as_str())
            .copied()
            .unwrap_or(usize::MAX);
        let name = self.inner.name();
        injector
            .strike(name, Call::Release, When::Before, index)
            .await?;
        self.inner.checkin(host).await?;
        injector
            .strike(name, Call::Release, When::After, index)
            .await
    }

    async fn extend(&self, host: &HostRecord, args: &Mapping) -> Result<()> {
        self.inner.extend(host, args).await
    }

    async fn execute(&self, args: &Mapping) -> Result<Value> {
        self.inner.execute(args).await
    }

    async fn help(&self, query: &Mapping) -> Result<Value> {
        self.inner.help(query).await
    }

    async fn inventory(&self, filter: Option<&str>) -> Result<Vec<HostRecord>> {
        self.inner.inventory(filter).await
    }

    async fn connect(&self, host: &HostRecord) -> Result<Box<dyn Session>> {
        self.inner.connect(host).await
    }
}

/// An inventory store with a [`FaultInjector`] around its writes.
#[derive(Debug)]
struct FaultyStore {
    inner: Arc<dyn InventoryStore>,
    injector: Arc<FaultInjector>,
}

impl InventoryStore for FaultyStore {
    fn list(&self) -> Result<Vec<HostRecord>> {
        self.inner.list()
    }

    fn put(&self, records: &[HostRecord]) -> Result<()> {
        self.injector.write(records, || self.inner.put(records))
    }

    fn remove(&self, ids: &[RecordId]) -> Result<Vec<RecordId>> {
        self.injector.write(&[], || self.inner.remove(ids))
    }

    fn sync_provider(&self, listing: ProviderListing) -> Result<SyncReport> {
        self.inner.sync_provider(listing)
    }

    fn replace_unchanged(&self, changes: &[(HostRecord, HostRecord)]) -> Result<Vec<RecordId>> {
        let new: Vec<HostRecord> = changes.iter().map(|(_, new)| new.clone()).collect();
        self.injector
            .write(&new, || self.inner.replace_unchanged(changes))
    }

    fn location(&self) -> String {
        self.inner.location()
    }

    fn is_private(&self) -> bool {
        self.inner.is_private()
    }

    fn owner_leases(&self) -> Result<crate::inventory::OwnerLeases> {
        self.inner.owner_leases()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fault strikes once, where it is due; a disarmed injector (the kit disarms it before
    /// giving back what a check left) strikes no more.
    #[test]
    fn a_fault_strikes_once_where_due_and_never_once_disarmed() {
        let fault = Fault::new(Call::Release, When::Before, Effect::Fail).host(1);
        let armed = FaultInjector::new(fault);
        assert!(
            armed.take(Call::Release, When::Before, 0).is_none(),
            "not its host"
        );
        assert!(
            armed.take(Call::Release, When::After, 1).is_none(),
            "not its moment"
        );
        assert!(
            armed.take(Call::Create, When::Before, 1).is_none(),
            "not its call"
        );
        assert!(!armed.has_struck());
        assert_eq!(armed.take(Call::Release, When::Before, 1), Some(fault));
        assert!(armed.has_struck());
        assert!(armed.take(Call::Release, When::Before, 1).is_none(), "once");

        let disarmed = FaultInjector::new(fault);
        disarmed.disarm();
        assert!(disarmed.take(Call::Release, When::Before, 1).is_none());
        assert!(!disarmed.has_struck());
        assert_eq!(disarmed.fault(), Some(fault));
    }

    /// The wrapper is the provider it wraps to the broker: same name and instance.
    #[test]
    fn a_wrapped_provider_keeps_its_name_and_instance() {
        #[derive(Debug)]
        struct Named(Option<&'static str>);
        #[async_trait::async_trait]
        impl Provider for Named {
            fn name(&self) -> &str {
                "Named"
            }
            fn instance(&self) -> Option<&str> {
                self.0
            }
            async fn checkout(&self, _: &CheckoutContext<'_>) -> Result<Mapping> {
                Ok(Mapping::new())
            }
            async fn checkin(&self, _: &HostRecord) -> Result<()> {
                Ok(())
            }
        }
        for instance in [Some("prod"), None] {
            let wrapped = FaultyProvider {
                inner: Arc::new(Named(instance)),
                injector: FaultInjector::watching(),
            };
            assert_eq!((wrapped.name(), wrapped.instance()), ("Named", instance));
        }
    }
}
