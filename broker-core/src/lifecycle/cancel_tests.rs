//! A checkout whose future is dropped — by a caller's `timeout` or `select!`, at any of its await
//! points — leaves nothing behind shortly after: no host at the provider, no record in the inventory.
//! Also when the caller's runtime goes away right after the drop (a `#[tokio::test]` that ends), and
//! on a current-thread runtime.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_yaml::Mapping;

use crate::error::{Error, Result};
use crate::inventory::{InventoryStore, ProviderListing, SyncReport, YamlFileStore};
use crate::provider::{CheckoutContext, Provider, ProviderKind, ProviderRegistry};
use crate::record::{HostRecord, RecordId};
use crate::request::CheckoutRequest;
use crate::settings::Settings;

/// Counts the calls of a provider and an inventory (each one an await point of a checkout), and
/// holds the `pause_at`-th until released.
struct Gate {
    seen: AtomicUsize,
    pause_at: usize,
    reached: tokio::sync::watch::Sender<bool>,
    released: Mutex<bool>,
    wake: Condvar,
    released_async: tokio::sync::watch::Sender<bool>,
    /// Whether the held call has ended — finished, or dropped with the future that made it. Until
    /// then what is left is not yet known: the held inventory write, say, has not landed.
    held_ended: AtomicBool,
}

/// The held call, while it lasts (see [`Gate::held_ended`]).
struct Held<'a>(Option<&'a Gate>);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some(gate) = self.0 {
            gate.held_ended.store(true, Ordering::SeqCst);
        }
    }
}

impl Gate {
    fn new(pause_at: usize) -> Arc<Gate> {
        Arc::new(Gate {
            seen: AtomicUsize::new(0),
            pause_at,
            reached: tokio::sync::watch::channel(false).0,
            released: Mutex::new(false),
            wake: Condvar::new(),
            released_async: tokio::sync::watch::channel(false).0,
            held_ended: AtomicBool::new(false),
        })
    }

    /// Whether this call is the one to hold (and says it was reached).
    fn is_pause(&self) -> bool {
        let hold = self.seen.fetch_add(1, Ordering::SeqCst) == self.pause_at;
        if hold {
            self.reached.send_replace(true);
        }
        hold
    }

    /// An async call (the provider's): held without blocking its runtime. The call ends when the
    /// answer is dropped.
    async fn pass(&self) -> Held<'_> {
        if !self.is_pause() {
            return Held(None);
        }
        let held = Held(Some(self));
        let mut released = self.released_async.subscribe();
        let _ = released.wait_for(|r| *r).await;
        held
    }

    /// A blocking call (the inventory's, on a blocking thread). The call ends when the answer is
    /// dropped.
    fn pass_blocking(&self) -> Held<'_> {
        if !self.is_pause() {
            return Held(None);
        }
        let held = Held(Some(self));
        let mut released = self.released.lock().unwrap();
        while !*released {
            released = self.wake.wait(released).unwrap();
        }
        held
    }

    async fn reached(&self) {
        let mut reached = self.reached.subscribe();
        let _ = reached.wait_for(|r| *r).await;
    }

    fn release(&self) {
        *self.released.lock().unwrap() = true;
        self.wake.notify_all();
        self.released_async.send_replace(true);
    }
}

/// A provider that makes hosts in a set, named by the record's identity, and gives them back by it
/// (already gone counts as given back). With `fail_index`, that host's create fails after starting.
struct Pausing {
    gate: Arc<Gate>,
    hosts: Arc<Mutex<BTreeSet<String>>>,
    fail_index: Option<usize>,
}

impl std::fmt::Debug for Pausing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pausing")
    }
}

#[async_trait::async_trait]
impl Provider for Pausing {
    fn name(&self) -> &str {
        "Pausing"
    }
    fn instance(&self) -> Option<&str> {
        None
    }
    async fn checkout(&self, ctx: &CheckoutContext<'_>) -> Result<Mapping> {
        let _held = self.gate.pass().await;
        if self.fail_index == Some(ctx.index()) {
            return Err(Error::user("this host fails"));
        }
        let id = ctx.record_id().as_str().to_owned();
        self.hosts.lock().unwrap().insert(id.clone());
        // Made, not yet answered: a create in flight.
        let _held = self.gate.pass().await;
        let mut fields = Mapping::new();
        fields.insert("hostname".into(), format!("host-{id}").into());
        Ok(fields)
    }
    async fn checkin(&self, host: &HostRecord) -> Result<()> {
        let _held = self.gate.pass().await;
        self.hosts.lock().unwrap().remove(host.id().as_str());
        Ok(())
    }
}

/// An inventory whose writes pass the gate.
#[derive(Debug)]
struct PausingStore(YamlFileStore, Arc<GateRef>);

/// The gate, for a `Debug` store.
struct GateRef(Arc<Gate>);

impl std::fmt::Debug for GateRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gate")
    }
}

impl InventoryStore for PausingStore {
    fn list(&self) -> Result<Vec<HostRecord>> {
        self.0.list()
    }
    fn put(&self, records: &[HostRecord]) -> Result<()> {
        // `HostGuard::keep` writing that a host handed out is its user's is no await point of the
        // call (it is synchronous, on the caller's thread, after the call returned).
        let kept = records
            .iter()
            .all(|r| r.state() == crate::record::HostState::Ready && !crate::lease::is_guarded(r));
        let _held = (!kept).then(|| self.1.0.pass_blocking());
        self.0.put(records)
    }
    fn remove(&self, ids: &[RecordId]) -> Result<Vec<RecordId>> {
        let _held = self.1.0.pass_blocking();
        self.0.remove(ids)
    }
    fn sync_provider(&self, listing: ProviderListing) -> Result<SyncReport> {
        self.0.sync_provider(listing)
    }
    fn location(&self) -> String {
        self.0.location()
    }
}

/// The provider of each world, by its settings directory (a provider is built from a function).
static PROVIDERS: Mutex<std::collections::BTreeMap<std::path::PathBuf, Arc<Pausing>>> =
    Mutex::new(std::collections::BTreeMap::new());

fn build_pausing(config: crate::ProviderConfig) -> Result<Arc<dyn Provider>> {
    let provider = PROVIDERS.lock().unwrap().get(config.directory()).cloned();
    provider
        .map(|p| p as Arc<dyn Provider>)
        .ok_or_else(|| Error::user("no world"))
}

/// One broker over a pausing provider and inventory.
struct World {
    _dir: tempfile::TempDir,
    gate: Arc<Gate>,
    hosts: Arc<Mutex<BTreeSet<String>>>,
    store: Arc<PausingStore>,
    broker: crate::Broker,
}

impl World {
    fn new(pause_at: usize, fail_index: Option<usize>) -> World {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("broker_settings.yaml"),
            "cancel_timeout: 1\ncheckin_timeout: 5\n",
        )
        .unwrap();
        let settings = Settings::load_from(dir.path(), Vec::new()).unwrap();
        let gate = Gate::new(pause_at);
        let hosts = Arc::new(Mutex::new(BTreeSet::new()));
        let provider = Arc::new(Pausing {
            gate: Arc::clone(&gate),
            hosts: Arc::clone(&hosts),
            fail_index,
        });
        PROVIDERS
            .lock()
            .unwrap()
            .insert(dir.path().to_owned(), provider);
        let kind =
            ProviderKind::new("Pausing", "test", build_pausing).checkout_actions(&["pause_action"]);
        let store = Arc::new(PausingStore(
            YamlFileStore::new(settings.inventory_path(), Duration::from_secs(5)),
            Arc::new(GateRef(Arc::clone(&gate))),
        ));
        let broker = crate::Broker::with_store(
            settings,
            ProviderRegistry::new().with(kind),
            Arc::clone(&store) as Arc<dyn InventoryStore>,
        )
        .unwrap();
        World {
            _dir: dir,
            gate,
            hosts,
            store,
            broker,
        }
    }

    /// What is left: hosts at the provider, records in the inventory.
    fn left(&self) -> (BTreeSet<String>, Vec<HostRecord>) {
        let hosts = self.hosts.lock().unwrap().clone();
        (hosts, self.store.0.list().unwrap())
    }
}

/// Which call of the broker is dropped.
#[derive(Debug, Clone, Copy)]
enum Verb {
    Checkout,
    CheckoutOne,
    Duplicate,
    /// `checkout_as` a wrapper that refuses every host, so that the hosts go back again.
    CheckoutAsRefused,
}

impl Verb {
    /// The call, to its end; hosts it hands out are kept.
    async fn call(self, broker: &crate::Broker, original: &[HostRecord]) {
        let kept = match self {
            Verb::Checkout => broker
                .checkout(request(3))
                .await
                .map(|guards| guards.into_iter().map(crate::HostGuard::keep).count()),
            Verb::CheckoutOne => broker.checkout_one(request(1)).await.map(|g| {
                g.keep();
                1
            }),
            Verb::Duplicate => broker.duplicate(original, 3).await.map(|r| r.len()),
            Verb::CheckoutAsRefused => broker
                .checkout_as::<Refused>(request(3))
                .await
                .map(|guards| guards.into_iter().map(crate::HostGuard::keep).count()),
        };
        let _ = kept;
    }
}

/// A test framework's host type that takes no host.
struct Refused(crate::Host);

impl crate::FromHost for Refused {
    fn from_host(_host: crate::Host) -> Result<Self> {
        Err(Error::user("not this kind of host"))
    }
    fn host(&self) -> &crate::Host {
        &self.0
    }
}

/// How the caller goes on after dropping the future.
#[derive(Debug, Clone, Copy)]
struct Caller {
    current_thread: bool,
    /// The caller's runtime is dropped right after (a test that ends), rather than kept running.
    runtime_ends: bool,
}

const CALLERS: [Caller; 4] = [
    Caller {
        current_thread: false,
        runtime_ends: false,
    },
    Caller {
        current_thread: true,
        runtime_ends: false,
    },
    Caller {
        current_thread: false,
        runtime_ends: true,
    },
    Caller {
        current_thread: true,
        runtime_ends: true,
    },
];

fn runtime(current_thread: bool) -> tokio::runtime::Runtime {
    let mut builder = if current_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2);
        b
    };
    builder.enable_all().build().unwrap()
}

/// Runs `verb` until the `pause_at`-th call of the provider or inventory, drops it there, and says
/// what is left once nothing more is (or after a generous deadline); `None` when the call finished
/// before that point.
fn drop_at(
    verb: Verb,
    pause_at: usize,
    fail_index: Option<usize>,
    caller: Caller,
) -> Option<(BTreeSet<String>, Vec<HostRecord>)> {
    let world = World::new(pause_at, fail_index);
    // A host to duplicate, made before the count starts.
    let original = match verb {
        Verb::Duplicate => {
            let rt = runtime(false);
            let before = World::new(usize::MAX, None);
            let kept = rt
                .block_on(before.broker.checkout_one(request(1)))
                .unwrap()
                .keep();
            world.store.0.put(&[kept.record().clone()]).unwrap();
            vec![kept.record().clone()]
        }
        _ => Vec::new(),
    };
    let rt = runtime(caller.current_thread);
    let reached = rt.block_on(async {
        let call = verb.call(&world.broker, &original);
        tokio::select! {
            _ = call => false,
            () = world.gate.reached() => true,
        }
        // The call's future is dropped here.
    });
    world.gate.release();
    if !reached {
        return None;
    }
    let deadline = Duration::from_secs(10);
    // Until the held call has ended, an empty inventory says nothing: its write may land next.
    let is_clean = |left: &(BTreeSet<String>, Vec<HostRecord>)| {
        world.gate.held_ended.load(Ordering::SeqCst)
            && left.0.is_empty()
            && left
                .1
                .iter()
                .all(|r| original.iter().any(|o| o.id() == r.id()))
    };
    if caller.runtime_ends {
        drop(rt);
        wait_for(deadline, || is_clean(&world.left()));
    } else {
        rt.block_on(async {
            let start = Instant::now();
            while !is_clean(&world.left()) && start.elapsed() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
    let (hosts, records) = world.left();
    let records = records
        .into_iter()
        .filter(|r| !original.iter().any(|o| o.id() == r.id()))
        .collect();
    Some((hosts, records))
}

/// A checkout dropped while a host is being made hands its clean-up to the drop worker, which
/// gives everything back, and nothing says otherwise: the error that no one could clean up is only
/// for a drop worker that is gone.
#[test]
fn a_dropped_checkout_is_cleaned_up_by_the_drop_worker_without_an_error() {
    // The intent record's write, the provider's create, the record's update as `ready`.
    for pause_at in 1..=3 {
        let world = World::new(pause_at, None);
        let rt = runtime(true);
        let (subscriber, events) = crate::test_log::Collect::new();
        let reached = {
            let _default = tracing::subscriber::set_default(subscriber);
            rt.block_on(async {
                tokio::select! {
                    () = Verb::Checkout.call(&world.broker, &[]) => false,
                    () = world.gate.reached() => true,
                }
            })
        };
        world.gate.release();
        assert!(reached, "call {pause_at}");
        // The runtime goes on (its tasks finish what they were doing) while the worker cleans up.
        rt.block_on(async {
            let start = Instant::now();
            while world.left() != (BTreeSet::new(), Vec::new())
                && start.elapsed() < Duration::from_secs(10)
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        assert_eq!(
            world.left(),
            (BTreeSet::new(), Vec::new()),
            "call {pause_at}"
        );
        let events = events.lock().unwrap();
        let errors: Vec<&String> = events
            .iter()
            .filter(|(level, _)| *level == tracing::Level::ERROR)
            .map(|(_, message)| message)
            .collect();
        assert!(errors.is_empty(), "call {pause_at}: {errors:?}");
    }
}

fn request(count: usize) -> CheckoutRequest {
    CheckoutRequest::new().arg("pause_action", "x").count(count)
}

/// Polls `done` until it holds or `deadline` has passed.
fn wait_for(deadline: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() && start.elapsed() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How many calls of the provider and inventory an undisturbed run of `verb` makes.
fn calls_of(verb: Verb, fail_index: Option<usize>) -> usize {
    // A duplicate's are those of a checkout: the host it copies comes from elsewhere.
    let verb = match verb {
        Verb::Duplicate => Verb::Checkout,
        other => other,
    };
    let world = World::new(usize::MAX, fail_index);
    runtime(false).block_on(verb.call(&world.broker, &[]));
    world.gate.seen.load(Ordering::SeqCst)
}

/// Drops `verb` at each of its await points, for each kind of caller, and lists the first point that
/// left something, for each.
fn leaks_of(verb: Verb, fail_index: Option<usize>) -> Vec<String> {
    let calls = calls_of(verb, fail_index);
    assert!(calls >= 4, "{verb:?}: only {calls} calls");
    let mut leaks = Vec::new();
    for caller in CALLERS {
        for pause_at in 0..calls {
            if let Some((hosts, records)) = drop_at(verb, pause_at, fail_index, caller)
                && (!hosts.is_empty() || !records.is_empty())
            {
                let states: Vec<String> = records
                    .iter()
                    .map(|r| r.state().as_str().to_owned())
                    .collect();
                leaks.push(format!(
                    "{verb:?} dropped at call {pause_at} of {calls}, {caller:?}: hosts {hosts:?}, records {states:?}"
                ));
                // The first point that leaks, for each kind of caller, is enough to say.
                break;
            }
        }
    }
    leaks
}

#[test]
fn a_three_host_checkout_dropped_at_any_await_point_leaves_nothing() {
    let leaks = leaks_of(Verb::Checkout, None);
    assert!(leaks.is_empty(), "{}", leaks.join("\n"));
}

#[test]
fn a_failing_checkout_dropped_while_rolling_back_leaves_nothing() {
    let leaks = leaks_of(Verb::Checkout, Some(1));
    assert!(leaks.is_empty(), "{}", leaks.join("\n"));
}

#[test]
fn checkout_one_duplicate_and_checkout_as_dropped_at_any_await_point_leave_nothing() {
    let mut leaks = leaks_of(Verb::CheckoutOne, None);
    leaks.extend(leaks_of(Verb::Duplicate, None));
    leaks.extend(leaks_of(Verb::CheckoutAsRefused, None));
    assert!(leaks.is_empty(), "{}", leaks.join("\n"));
}

/// A caller who stopped waiting (the CLI's second Ctrl-C) leaves what the checkout had not finished
/// recorded for `recover`: no clean-up runs behind a process that is about to exit. Beside it, the
/// same checkout dropped without that is given back — and once it is, the other is still there.
#[test]
fn a_checkout_dropped_after_stop_waiting_leaves_its_records_for_recover() {
    use crate::request::Cancellation;
    // The host is made and the create not yet answered (call 2: intent, create begins, made).
    let (abandoned, dropped) = (World::new(2, None), World::new(2, None));
    let stop = Cancellation::new();
    let rt = runtime(true);
    rt.block_on(async {
        let mut a = Box::pin(abandoned.broker.checkout(request(1).cancel_with(&stop)));
        let b = dropped.broker.checkout(request(1));
        tokio::select! {
            _ = &mut a => panic!("the checkout went on past the pause"),
            () = abandoned.gate.reached() => {}
        }
        stop.stop_waiting();
        drop(a);
        tokio::select! {
            _ = b => panic!("the checkout went on past the pause"),
            () = dropped.gate.reached() => {}
        }
    });
    abandoned.gate.release();
    dropped.gate.release();
    drop(rt);
    wait_for(Duration::from_secs(30), || {
        let (hosts, records) = dropped.left();
        hosts.is_empty() && records.is_empty()
    });
    assert_eq!(dropped.left(), (BTreeSet::new(), Vec::new()));
    let (hosts, records) = abandoned.left();
    assert_eq!(hosts.len(), 1, "{hosts:?}");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].state(), crate::record::HostState::Pending);
    let rt = runtime(false);
    let outcomes = rt
        .block_on(abandoned.broker.recover(crate::RecoverScope::ThisProcess))
        .unwrap();
    assert!(outcomes.iter().all(|o| o.result.is_ok()), "{outcomes:?}");
    assert_eq!(abandoned.left(), (BTreeSet::new(), Vec::new()));
}
