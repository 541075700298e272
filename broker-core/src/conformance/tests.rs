//! The kit against a provider that conforms and one that leaks.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_yaml::Mapping;

use super::Conformance;
use crate::error::Result;
use crate::provider::{CheckoutContext, Provider, ProviderKind};
use crate::record::{HostRecord, HostState, fields};
use crate::settings::ProviderConfig;
use crate::sync::lock;

/// The "remote system" of the memory providers: host name → the record identity it was made for.
/// Shared by every provider built, as a real system is by every client.
static HOSTS: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());

/// Hosts kept in memory. `leaky` forgets the host of a record still `pending`: a provider whose
/// check-in goes only by the name a `ready` record holds, so what a failed checkout made is lost.
/// `flaw` breaks another rule of the kit.
#[derive(Debug)]
struct Memory {
    name: &'static str,
    leaky: bool,
    flaw: Option<Flaw>,
}

impl Memory {
    /// A memory provider called `name` that breaks no rule.
    fn plain(name: &'static str) -> Self {
        Memory {
            name,
            leaky: false,
            flaw: None,
        }
    }
}

/// A rule of the kit a provider breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flaw {
    /// Its listing shows none of its hosts.
    Unlisted,
    /// Checking in a host it no longer holds is an error.
    GoneIsAnError,
}

#[async_trait::async_trait]
impl Provider for Memory {
    fn name(&self) -> &str {
        self.name
    }

    fn instance(&self) -> Option<&str> {
        None
    }

    async fn checkout(&self, ctx: &CheckoutContext<'_>) -> Result<Mapping> {
        let name = format!("{}-{}", self.name.to_lowercase(), ctx.record_id());
        lock(&HOSTS).insert(name.clone(), ctx.record_id().to_string());
        let mut out = Mapping::new();
        out.insert("name".into(), name.into());
        Ok(out)
    }

    async fn checkin(&self, host: &HostRecord) -> Result<()> {
        let mut hosts = lock(&HOSTS);
        let held = |name: &str| hosts.contains_key(name);
        if self.flaw == Some(Flaw::GoneIsAnError) && !host.name().is_some_and(held) {
            return Err(crate::Error::host(host.display_name(), "no such host"));
        }
        if host.state() == HostState::Pending {
            if !self.leaky {
                hosts.retain(|_, id| id != host.id().as_str());
            }
            return Ok(());
        }
        if let Some(name) = host.name() {
            hosts.remove(name);
        }
        Ok(())
    }

    async fn inventory(&self, _filter: Option<&str>) -> Result<Vec<HostRecord>> {
        if self.flaw == Some(Flaw::Unlisted) {
            return Ok(Vec::new());
        }
        let prefix = format!("{}-", self.name.to_lowercase());
        Ok(lock(&HOSTS)
            .keys()
            .filter(|n| n.starts_with(&prefix))
            .map(|n| {
                let mut r = HostRecord::default();
                r.set("name", n.as_str());
                r.set(fields::PROVIDER, self.name);
                r
            })
            .collect())
    }
}

fn build_memory(_: ProviderConfig) -> Result<Arc<dyn Provider>> {
    Ok(Arc::new(Memory::plain("Memory")))
}

fn build_leaky(_: ProviderConfig) -> Result<Arc<dyn Provider>> {
    Ok(Arc::new(Memory {
        name: "Leaky",
        leaky: true,
        flaw: None,
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conforming_provider_passes_every_check() {
    let kind = ProviderKind::new("Memory", "test", build_memory).checkout_actions(&["memory"]);
    Conformance::new(kind)
        .arg("memory", "small")
        .without_sessions()
        .run()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaky_provider_fails_with_what_it_leaked_and_after_which_fault() {
    let kind = ProviderKind::new("Leaky", "test", build_leaky).checkout_actions(&["leaky"]);
    let kit = Conformance::new(kind)
        .arg("leaky", "small")
        .without_sessions();
    // Its normal life is fine: the leak shows only when a checkout fails once the host exists.
    kit.lifecycle().await.unwrap();
    let err = kit.run().await.unwrap_err();
    let failures: Vec<(String, String)> = err
        .failures()
        .map(|(c, m)| (c.to_owned(), m.to_owned()))
        .collect();
    let leaked = |fault: &str| {
        failures.iter().any(|(check, message)| {
            message.starts_with(&format!(
                "after `{fault}`: leaked: Leaky still holds leaky-h"
            )) && message.contains(
                "Provider::checkin must find a host by the record's identity, also for a \
                     record still `pending`",
            ) && (check == "faults" || check == "all or nothing")
        })
    };
    assert!(leaked("fail after creating host index 2"), "{err}");
    assert!(leaked("fail after creating host index 1"), "{err}");
    assert!(leaked("panic after creating host index 1"), "{err}");
    // Faults before the host exists leave nothing to leak.
    assert!(
        !failures.iter().any(|(_, m)| m.contains("before creating")),
        "{err}"
    );
    assert!(
        err.to_string().starts_with("provider Leaky fails "),
        "{err}"
    );
    // `?` and `.unwrap()` in a test show the same readable message, not a struct dump.
    assert_eq!(format!("{err:?}"), err.to_string());
    // The kit gave back what the leaky provider kept, through its listing.
    let left: Vec<String> = lock(&HOSTS)
        .keys()
        .filter(|n| n.starts_with("leaky-"))
        .cloned()
        .collect();
    assert_eq!(left, Vec::<String>::new());
}

// ---- the fault wrapper on its own ----

use super::{Call, Effect, Fault, FaultInjector, When};
use crate::inventory::{InventoryStore, YamlFileStore};
use crate::{Broker, Cancellation, CheckoutRequest, Error, ProviderRegistry, Settings};

/// A broker on a new directory whose Memory provider and inventory `injector` wraps.
fn wrapped_broker(injector: &Arc<FaultInjector>) -> (tempfile::TempDir, Broker) {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings::from_yaml(dir.path(), "cancel_timeout: 1s\n").unwrap();
    let store: Arc<dyn InventoryStore> = Arc::new(YamlFileStore::new(
        settings.inventory_path(),
        std::time::Duration::from_secs(60),
    ));
    let kind = ProviderKind::new("Memory", "test", build_memory).checkout_actions(&["memory"]);
    let registry = ProviderRegistry::new().with(injector.wrap(kind));
    let broker = Broker::with_store(settings, registry, injector.wrap_store(store)).unwrap();
    (dir, broker)
}

/// Whether the Memory provider holds a host made for `record`.
fn holds(record: &HostRecord) -> bool {
    lock(&HOSTS).values().any(|id| id == record.id().as_str())
}

/// The one record of a broker's inventory.
fn only_record(broker: &Broker) -> HostRecord {
    let mut records = broker.inventory().list().unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
    records.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_fault_strikes_its_host_before_or_after_the_real_call() {
    let request = || CheckoutRequest::new().arg("memory", "small");
    // A panic leaves the intent record (nobody cleans up after it), which tells whether the
    // provider made the host.
    for (when, made) in [(When::Before, false), (When::After, true)] {
        let injector = FaultInjector::new(Fault::new(Call::Create, when, Effect::Panic));
        let (_dir, broker) = wrapped_broker(&injector);
        let err = broker.checkout(request()).await.unwrap_err();
        assert!(matches!(err, Error::Internal { .. }), "{err}");
        let record = only_record(&broker);
        assert_eq!((record.state(), holds(&record)), (HostState::Pending, made));
        Memory::plain("Memory").checkin(&record).await.unwrap();
    }
    // A failure names the fault and strikes only the host it names.
    let fault = Fault::new(Call::Create, When::After, Effect::Fail).host(1);
    let injector = FaultInjector::new(fault);
    let (_dir, broker) = wrapped_broker(&injector);
    match broker.checkout(request().count(3)).await {
        Err(Error::CheckoutFailed {
            failures,
            rolled_back,
            ..
        }) => {
            assert_eq!(failures.len(), 1);
            assert_eq!(failures[0].0, 1);
            assert!(
                crate::error::chain(&failures[0].1).ends_with(
                    "conformance kit: injected failure: fail after creating host index 1"
                )
            );
            assert_eq!(rolled_back.len(), 2);
        }
        other => panic!("{other:?}"),
    }
    // A hang holds the call until the checkout is stopped.
    let injector = FaultInjector::new(Fault::new(Call::Create, When::Before, Effect::Hang));
    let (_dir, broker) = wrapped_broker(&injector);
    let cancel = Cancellation::new();
    let checkout = tokio::spawn({
        let broker = broker.clone();
        let request = request().cancel_with(&cancel);
        async move { broker.checkout(request).await.map(|_| ()) }
    });
    injector.hung().await;
    assert!(!holds(&only_record(&broker)));
    cancel.cancel();
    let stopped = checkout.await.unwrap().unwrap_err();
    assert!(matches!(stopped, Error::Interrupted { .. }), "{stopped}");
    assert_eq!(broker.inventory().list().unwrap(), Vec::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_fault_strikes_before_or_after_the_host_is_given_back() {
    for (when, still_held) in [(When::Before, true), (When::After, false)] {
        let injector = FaultInjector::new(Fault::new(Call::Release, when, Effect::Fail));
        let (_dir, broker) = wrapped_broker(&injector);
        let guard = broker
            .checkout_one(CheckoutRequest::new().arg("memory", "small"))
            .await
            .unwrap();
        let record = guard.record().clone();
        let err = guard.checkin().await.unwrap_err();
        let when_text = if still_held { "before" } else { "after" };
        assert!(
            err.to_string().contains(&format!(
                "conformance kit: injected failure: fail {when_text} releasing host index 0"
            )),
            "{err}"
        );
        assert_eq!(holds(&record), still_held);
        // The record stays, marked releasing, for a later check-in; the fault struck once.
        assert_eq!(only_record(&broker).state(), HostState::Releasing);
        let outcomes = broker.checkin(vec![record.clone()], false).await;
        assert!(outcomes[0].result.is_ok(), "{:?}", outcomes[0].result);
        assert!(!holds(&record));
    }
}

#[test]
fn an_inventory_write_fault_strikes_its_write_before_or_after_it_is_made() {
    let record = HostRecord::pending("Memory", None, Mapping::new());
    for (when, written) in [(When::Before, false), (When::After, true)] {
        let injector = FaultInjector::new(Fault::new(Call::Record, when, Effect::Fail).write(1));
        let dir = tempfile::tempdir().unwrap();
        let store = injector.wrap_store(Arc::new(YamlFileStore::new(
            dir.path().join("inventory.yaml"),
            std::time::Duration::from_secs(60),
        )));
        store.remove(&[record.id()]).unwrap(); // write 0 passes
        let err = store.put(std::slice::from_ref(&record)).unwrap_err();
        assert!(
            err.to_string().ends_with("inventory write index 1"),
            "{err}"
        );
        assert_eq!(store.list().unwrap().len(), usize::from(written));
        assert!(injector.has_struck());
        store.put(std::slice::from_ref(&record)).unwrap(); // struck once
    }
    // A hanging write blocks its thread until released, then goes on.
    let injector = FaultInjector::new(Fault::new(Call::Record, When::Before, Effect::Hang));
    let dir = tempfile::tempdir().unwrap();
    let store = injector.wrap_store(Arc::new(YamlFileStore::new(
        dir.path().join("inventory.yaml"),
        std::time::Duration::from_secs(60),
    )));
    let writer = std::thread::spawn({
        let store = Arc::clone(&store);
        let record = record.clone();
        move || store.put(&[record])
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(injector.hung());
    assert_eq!(store.list().unwrap(), Vec::new());
    injector.release();
    writer.join().unwrap().unwrap();
    assert_eq!(store.list().unwrap().len(), 1);
    runtime.block_on(injector.idle());
}

/// A fault scenario's checkout that failed before its fault struck failed on its own: that is the
/// provider's failure, whatever the fault — and so is one that failed under a release fault,
/// which a checkout never calls. A create fault that struck and failed the checkout is the
/// scenario working as meant.
#[tokio::test]
async fn a_checkout_that_fails_before_its_fault_strikes_is_the_providers_failure() {
    let kind = ProviderKind::new("Memory", "test", build_memory).checkout_actions(&["memory"]);
    let kit = Conformance::new(kind)
        .arg("memory", "small")
        .without_sessions();
    let own = Error::user("no quota");
    let before = "the checkout failed before the fault struck: no quota";
    for fault in [
        Fault::new(Call::Create, When::After, Effect::Hang).host(2),
        Fault::new(Call::Release, When::Before, Effect::Fail),
    ] {
        let run = kit.start("faults", FaultInjector::new(fault)).unwrap();
        assert_eq!(
            run.after_failed_checkout(fault, &own).await,
            Err(before.to_owned()),
            "{fault:?}"
        );
        run.finish(Ok(())).await.unwrap();
    }
    // The fault struck: a create that failed leaves nothing (here nothing was made).
    let fault = Fault::new(Call::Create, When::Before, Effect::Fail);
    let injector = FaultInjector::new(fault);
    let run = kit.start("faults", Arc::clone(&injector)).unwrap();
    let err = run
        .broker
        .checkout(run.kit.request(1))
        .await
        .expect_err("the fault fails the checkout");
    assert!(injector.has_struck());
    assert_eq!(run.after_failed_checkout(fault, &err).await, Ok(()));
    run.finish(Ok(())).await.unwrap();
}

/// The kit knows a listed host as one its provider made by the record identity it holds in any
/// text field (TestProvider names hosts `broker-test-<id>`), or by a name a create returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_host_is_known_by_the_identity_it_holds_in_any_field() {
    let injector = FaultInjector::watching();
    let (_dir, broker) = wrapped_broker(&injector);
    let guard = broker
        .checkout_one(CheckoutRequest::new().arg("memory", "small"))
        .await
        .unwrap();
    let id = guard.record().id().as_str().to_owned();
    let listed = |yaml: &str| -> HostRecord { serde_yaml::from_str(yaml).unwrap() };
    assert!(injector.made(&listed(&format!("{{vm: 'x-{id}-y'}}"))));
    assert!(injector.made(&listed(&format!("{{name: memory-{id}}}"))));
    assert!(!injector.made(&listed("{vm: other, size: 7}")));
    assert!(!injector.made(&listed("{name: memory-other}")));
    guard.checkin().await.unwrap();
}

/// A session on a memory host: files kept in memory, and the kit's command answered as a shell
/// would (`honest`) or with nothing.
#[derive(Debug)]
struct MemorySession {
    honest: bool,
    files: Mutex<BTreeMap<String, Vec<u8>>>,
}

#[async_trait::async_trait]
impl crate::session::Session for MemorySession {
    async fn execute(
        &self,
        command: &str,
        _timeout: Option<std::time::Duration>,
    ) -> Result<crate::session::ExecOutput> {
        let answer = match command {
            "echo conformance; echo err >&2; exit 3" if self.honest => {
                ("conformance\n", "err\n", 3)
            }
            _ => ("", "", 0),
        };
        Ok(crate::session::ExecOutput {
            stdout: answer.0.to_owned(),
            stderr: answer.1.to_owned(),
            status: answer.2,
        })
    }
    async fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        lock(&self.files)
            .get(path)
            .cloned()
            .ok_or_else(|| Error::host("memory", format!("no {path}")))
    }
    async fn write_file(&self, path: &str, contents: &[u8]) -> Result<()> {
        lock(&self.files).insert(path.to_owned(), contents.to_vec());
        Ok(())
    }
}

/// The Memory provider with sessions to its hosts.
#[derive(Debug)]
struct Shelled {
    memory: Memory,
    honest: bool,
}

#[async_trait::async_trait]
impl Provider for Shelled {
    fn name(&self) -> &str {
        self.memory.name()
    }
    fn instance(&self) -> Option<&str> {
        None
    }
    async fn checkout(&self, ctx: &CheckoutContext<'_>) -> Result<Mapping> {
        self.memory.checkout(ctx).await
    }
    async fn checkin(&self, host: &HostRecord) -> Result<()> {
        self.memory.checkin(host).await
    }
    async fn inventory(&self, filter: Option<&str>) -> Result<Vec<HostRecord>> {
        self.memory.inventory(filter).await
    }
    async fn connect(&self, _host: &HostRecord) -> Result<Box<dyn crate::session::Session>> {
        Ok(Box::new(MemorySession {
            honest: self.honest,
            files: Mutex::new(BTreeMap::new()),
        }))
    }
}

/// With sessions, the kit runs a command on the host and moves a file: a host that answers as a
/// shell does passes; one whose command gives other output fails, saying what it gave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosts_command_is_checked_to_give_what_a_shell_gives() {
    fn honest(_: ProviderConfig) -> Result<Arc<dyn Provider>> {
        Ok(Arc::new(Shelled {
            memory: Memory::plain("Honest"),
            honest: true,
        }))
    }
    fn garbled(_: ProviderConfig) -> Result<Arc<dyn Provider>> {
        Ok(Arc::new(Shelled {
            memory: Memory::plain("Garbled"),
            honest: false,
        }))
    }
    let kind = ProviderKind::new("Honest", "test", honest).checkout_actions(&["honest"]);
    Conformance::new(kind)
        .arg("honest", "small")
        .lifecycle()
        .await
        .unwrap();
    let kind = ProviderKind::new("Garbled", "test", garbled).checkout_actions(&["garbled"]);
    let err = Conformance::new(kind)
        .arg("garbled", "small")
        .lifecycle()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(
            "`echo conformance; echo err >&2; exit 3` gave stdout \"\", stderr \"\", status 0"
        ),
        "{err}"
    );
}

/// Each of the kit's checks fails a provider that breaks its rule, saying what it found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_check_fails_a_provider_that_breaks_its_rule() {
    fn unlisted(_: ProviderConfig) -> Result<Arc<dyn Provider>> {
        Ok(Arc::new(Memory {
            name: "Unlisted",
            leaky: false,
            flaw: Some(Flaw::Unlisted),
        }))
    }
    fn strict(_: ProviderConfig) -> Result<Arc<dyn Provider>> {
        Ok(Arc::new(Memory {
            name: "Strict",
            leaky: false,
            flaw: Some(Flaw::GoneIsAnError),
        }))
    }
    fn immortal(_: ProviderConfig) -> Result<Arc<dyn Provider>> {
        Ok(Arc::new(Shelled {
            memory: Memory::plain("Immortal"),
            honest: true,
        }))
    }
    let kit = |name: &'static str, build: crate::provider::BuildProvider| {
        // The action is the name in lower case (the name itself would choose an instance).
        let action: &'static str = Box::leak(name.to_lowercase().into_boxed_str());
        let actions: &'static [&'static str] = Box::leak(Box::new([action]));
        Conformance::new(ProviderKind::new(name, "test", build).checkout_actions(actions))
            .arg(action, "small")
    };
    let said = |result: std::result::Result<(), super::Nonconformance>| {
        result.expect_err("the check fails").to_string()
    };
    let unlisted = kit("Unlisted", unlisted).without_sessions();
    let err = said(unlisted.lifecycle().await);
    assert!(
        err.contains("the provider's listing does not show the host it made"),
        "{err}"
    );
    let err = said(unlisted.sync_finds_its_hosts().await);
    assert!(
        err.contains("a sync found 0 record(s) for the host whose record was lost"),
        "{err}"
    );
    let err = said(unlisted.all_or_nothing().await);
    assert!(
        err.contains("a checkout of 3 gave 3 record(s), and the provider lists 0"),
        "{err}"
    );
    let strict = kit("Strict", strict).without_sessions();
    let err = said(strict.idempotent_checkin().await);
    assert!(
        err.contains("Provider::checkin of a host already checked in"),
        "{err}"
    );
    let err = said(kit("Immortal", immortal).vanished_host().await);
    assert!(
        err.contains("a command on a removed host ran (status 0)"),
        "{err}"
    );
}
