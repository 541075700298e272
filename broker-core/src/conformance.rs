//! The provider conformance kit (feature `conformance`): what every provider must do for broker's
//! guarantees to hold, run from the provider's own tests.
//!
//! [`Conformance`] checks a provider through the [`Broker`], on a broker directory of its own:
//! - **lifecycle**: checkout → execute → write and read a file → extend → checkin, and the provider
//!   then holds nothing;
//! - **idempotent checkin**: checking a host in again, at the provider and through broker, succeeds;
//! - **vanished host**: a host removed behind broker's back fails its commands and checks in;
//! - **sync**: a host whose record was lost is found again by `sync_inventory` and checks in;
//! - **all or nothing**: three hosts come back distinct; when the third fails once it exists, the
//!   other two are given back and nothing is left;
//! - **faults**: with the [`FaultInjector`] making a create, an inventory write or a release fail,
//!   hang or panic, before or after the real call ([`Fault::matrix`]), no host is leaked and no
//!   record lost: after the broker's own clean-up, `recover` and a check-in of what the inventory
//!   still holds, the provider holds none of the hosts it was asked for.
//!
//! "The provider holds" is what [`Provider::inventory`] lists, so a provider must implement it. The
//! kit never relies on timing: it waits for conditions (a call hanging, no call under way) with
//! generous deadlines.
//!
//! It must not ship in a provider's production build: enable the feature in `[dev-dependencies]`.

mod faults;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_yaml::{Mapping, Value};

pub use faults::{Call, Effect, Fault, FaultInjector, When};

use crate::broker::Broker;
use crate::error::Error;
use crate::inventory::{InventoryStore, YamlFileStore};
use crate::lifecycle::RecoverScope;
use crate::provider::{Provider, ProviderKind, ProviderRegistry};
use crate::record::{HostRecord, HostState};
use crate::request::{Cancellation, CheckoutRequest};
use crate::settings::Settings;

/// How long the kit waits for anything it waits for: generous, so a loaded machine does not fail a
/// conforming provider.
const DEADLINE: Duration = Duration::from_secs(180);

/// How many fault scenarios run at once.
const SCENARIOS_AT_ONCE: usize = 4;

/// A provider's conformance suite.
///
/// ```no_run
/// # async fn demo(kind: broker_core::ProviderKind) {
/// use broker_core::conformance::Conformance;
///
/// Conformance::new(kind)
///     .settings("MyCloud:\n  region: test\n")
///     .arg("my_image", "small")
///     .run()
///     .await
///     .unwrap(); // the error lists every check that failed, and why
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Conformance {
    kind: ProviderKind,
    settings: String,
    args: Mapping,
    listing_filter: Option<String>,
    sessions: bool,
    extend_args: Mapping,
}

impl Conformance {
    /// The suite for `kind`, with no settings, no arguments beyond what the caller adds, and
    /// sessions expected.
    pub fn new(kind: ProviderKind) -> Self {
        Conformance {
            kind,
            settings: String::new(),
            args: Mapping::new(),
            listing_filter: None,
            sessions: true,
            extend_args: Mapping::new(),
        }
    }

    /// The settings file's text (the provider's section, nicks…). The kit adds `cancel_timeout: 2s`
    /// unless it is set: its hang scenarios stop a checkout whose provider call never answers.
    #[must_use]
    pub fn settings(mut self, yaml: &str) -> Self {
        self.settings = yaml.to_owned();
        self
    }

    /// A checkout argument (the action key and whatever makes a small, quick host).
    #[must_use]
    pub fn arg(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.args.insert(key.into(), value.into());
        self
    }

    /// An argument of the extend check.
    #[must_use]
    pub fn extend_arg(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extend_args.insert(key.into(), value.into());
        self
    }

    /// The filter given to [`Provider::inventory`] (and to the sync, as `NAME:FILTER`).
    #[must_use]
    pub fn listing_filter(mut self, filter: &str) -> Self {
        self.listing_filter = Some(filter.to_owned());
        self
    }

    /// The provider's hosts cannot be reached from here (no sessions): the kit does not run
    /// commands or move files.
    #[must_use]
    pub fn without_sessions(mut self) -> Self {
        self.sessions = false;
        self
    }

    /// Runs every check, the fault scenarios several at once.
    ///
    /// # Errors
    /// [`Nonconformance`] listing every check that failed.
    pub async fn run(&self) -> Result<(), Nonconformance> {
        let mut failures = Vec::new();
        for result in [
            self.lifecycle().await,
            self.idempotent_checkin().await,
            self.vanished_host().await,
            self.sync_finds_its_hosts().await,
            self.all_or_nothing().await,
            self.faults().await,
        ] {
            if let Err(e) = result {
                failures.extend(e.failures);
            }
        }
        self.verdict(failures)
    }

    fn verdict(&self, failures: Vec<(&'static str, String)>) -> Result<(), Nonconformance> {
        if failures.is_empty() {
            return Ok(());
        }
        Err(Nonconformance {
            provider: self.kind.name().to_owned(),
            failures,
        })
    }

    fn fail(&self, check: &'static str, message: impl Into<String>) -> Nonconformance {
        Nonconformance {
            provider: self.kind.name().to_owned(),
            failures: vec![(check, message.into())],
        }
    }

    /// The kit keeps every host it checks out (and checks it in itself), so they are their user's
    /// from the start, as a CLI checkout's are: no write to hand them over when kept.
    fn request(&self, count: usize) -> CheckoutRequest {
        CheckoutRequest::new()
            .args(self.args.clone())
            .count(count)
            .held_by_user(true)
    }

    /// A broker on a new directory, its provider and store wrapped by `injector`.
    fn start(
        &self,
        check: &'static str,
        injector: Arc<FaultInjector>,
    ) -> Result<Run, Nonconformance> {
        let fail =
            |what: &str, e: Error| self.fail(check, format!("{what}: {}", crate::error::chain(&e)));
        let dir = tempfile::tempdir()
            .map_err(|e| self.fail(check, format!("making a broker directory: {e}")))?;
        let mut yaml = self.settings.clone();
        if !yaml.contains("cancel_timeout") {
            yaml = format!("cancel_timeout: 2s\n{yaml}");
        }
        let settings =
            Settings::from_yaml(dir.path(), &yaml).map_err(|e| fail("reading the settings", e))?;
        let config = settings
            .provider_config(self.kind.name(), None)
            .map_err(|e| fail("configuring the provider", e))?;
        let observer = self
            .kind
            .build(config)
            .map_err(|e| fail("building the provider", e))?;
        let store: Arc<dyn InventoryStore> = Arc::new(YamlFileStore::new(
            settings.inventory_path(),
            settings
                .inventory_lock_timeout()
                .map_err(|e| fail("reading the settings", e))?,
        ));
        let registry = ProviderRegistry::new().with(injector.wrap(self.kind));
        let broker = Broker::with_store(settings, registry, injector.wrap_store(store))
            .map_err(|e| fail("starting broker", e))?;
        Ok(Run {
            kit: self.clone(),
            check,
            _dir: dir,
            broker,
            injector,
            observer,
        })
    }

    /// checkout → execute → write and read a file → extend → checkin, leaving nothing.
    ///
    /// # Errors
    /// [`Nonconformance`] saying which step failed.
    pub async fn lifecycle(&self) -> Result<(), Nonconformance> {
        let run = self.start("lifecycle", FaultInjector::watching())?;
        let outcome = run.lifecycle().await;
        run.finish(outcome).await
    }

    /// A host checked in twice (at the provider, then through broker) is checked in.
    ///
    /// # Errors
    /// [`Nonconformance`] saying which check-in failed.
    pub async fn idempotent_checkin(&self) -> Result<(), Nonconformance> {
        let run = self.start("idempotent checkin", FaultInjector::watching())?;
        let outcome = run.idempotent_checkin().await;
        run.finish(outcome).await
    }

    /// A host removed behind broker's back fails its commands with a host error and checks in.
    ///
    /// # Errors
    /// [`Nonconformance`] saying what went wrong.
    pub async fn vanished_host(&self) -> Result<(), Nonconformance> {
        let run = self.start("vanished host", FaultInjector::watching())?;
        let outcome = run.vanished_host().await;
        run.finish(outcome).await
    }

    /// A host whose record was lost is found again by a sync, and checks in from the record the
    /// sync made.
    ///
    /// # Errors
    /// [`Nonconformance`] saying what the sync missed.
    pub async fn sync_finds_its_hosts(&self) -> Result<(), Nonconformance> {
        let run = self.start("sync", FaultInjector::watching())?;
        let outcome = run.sync_finds_its_hosts().await;
        run.finish(outcome).await
    }

    /// Three hosts come back distinct and check in; when the third fails once it exists, the other
    /// two are given back and nothing is left.
    ///
    /// # Errors
    /// [`Nonconformance`] saying what was left or wrong.
    pub async fn all_or_nothing(&self) -> Result<(), Nonconformance> {
        let run = self.start("all or nothing", FaultInjector::watching())?;
        let outcome = run.three_hosts().await;
        run.finish(outcome).await?;
        let fault = Fault::new(Call::Create, When::After, Effect::Fail).host(2);
        let run = self.start("all or nothing", FaultInjector::new(fault))?;
        let outcome = run.third_of_three_fails().await;
        run.finish(outcome).await
    }

    /// Every fault of [`Fault::matrix`], a few at once.
    ///
    /// # Errors
    /// [`Nonconformance`] naming each fault after which a host was leaked, a record lost, or broker
    /// did not return.
    pub async fn faults(&self) -> Result<(), Nonconformance> {
        let permits = Arc::new(tokio::sync::Semaphore::new(SCENARIOS_AT_ONCE));
        let mut scenarios = tokio::task::JoinSet::new();
        for fault in Fault::matrix() {
            let kit = self.clone();
            let permits = Arc::clone(&permits);
            scenarios.spawn(async move {
                let _turn = permits.acquire_owned().await;
                kit.fault(fault).await
            });
        }
        let mut failures = Vec::new();
        while let Some(done) = scenarios.join_next().await {
            match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.extend(e.failures),
                Err(e) => failures.push(("faults", format!("a fault scenario failed: {e}"))),
            }
        }
        failures.sort_by(|a, b| a.1.cmp(&b.1));
        self.verdict(failures)
    }

    /// One fault scenario: check hosts out and in with `fault` injected, then check that broker's
    /// records lead to every host the provider still holds.
    ///
    /// # Errors
    /// [`Nonconformance`] naming the fault and what was leaked, lost or stuck.
    pub async fn fault(&self, fault: Fault) -> Result<(), Nonconformance> {
        let run = self.start("faults", FaultInjector::new(fault))?;
        let outcome = run.under_fault(fault).await;
        run.finish(outcome).await
    }
}

/// What a provider failed.
#[non_exhaustive]
pub struct Nonconformance {
    /// The provider's name.
    pub provider: String,
    /// Each failed check and why.
    failures: Vec<(&'static str, String)>,
}

impl Nonconformance {
    /// Each failed check's name and why it failed.
    pub fn failures(&self) -> impl Iterator<Item = (&str, &str)> {
        self.failures.iter().map(|(c, m)| (*c, m.as_str()))
    }
}

impl fmt::Display for Nonconformance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "provider {} fails {} conformance check(s):",
            self.provider,
            self.failures.len()
        )?;
        for (check, message) in self.failures() {
            write!(f, "\n- {check}: {message}")?;
        }
        Ok(())
    }
}

/// The message, so that `.unwrap()` in a test shows what failed.
impl fmt::Debug for Nonconformance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Nonconformance {}

/// One check's broker, on a directory of its own.
struct Run {
    kit: Conformance,
    check: &'static str,
    _dir: tempfile::TempDir,
    broker: Broker,
    injector: Arc<FaultInjector>,
    /// The provider unwrapped, asked what it holds.
    observer: Arc<dyn Provider>,
}

/// A check's failure message.
type Step<T = ()> = std::result::Result<T, String>;

/// `what` failed with `e`.
fn failed(what: &str, e: &Error) -> String {
    format!("{what}: {}", crate::error::chain(e))
}

impl Run {
    /// Gives back what the check left, and fails it when something was left or `outcome` failed.
    async fn finish(self, outcome: Step) -> Result<(), Nonconformance> {
        self.injector.disarm();
        self.injector.release();
        let left = self.give_back_all().await;
        let message = match (outcome, left) {
            (Ok(()), Ok(())) => return Ok(()),
            (Err(e), Ok(())) | (Ok(()), Err(e)) => e,
            (Err(e), Err(left)) => format!("{e}; and then {left}"),
        };
        let message = match self.injector.fault() {
            Some(fault) => format!("after `{fault}`: {message}"),
            None => message,
        };
        Err(self.kit.fail(self.check, message))
    }

    /// Waits for the wrapped calls to end, recovers and checks in every record left, and says
    /// which hosts the provider still holds (leaked) and which records are left.
    async fn give_back_all(&self) -> Step {
        self.quiet().await?;
        let mut failures = Vec::new();
        match self.broker.recover(RecoverScope::Unfinished).await {
            Ok(outcomes) => failures.extend(
                outcomes
                    .into_iter()
                    .filter_map(|o| o.result.err().map(|e| failed(&o.record.display_name(), &e))),
            ),
            Err(e) => failures.push(failed("recover", &e)),
        }
        let rest = self.records()?;
        for o in self.broker.checkin(rest, false).await {
            if let Err(e) = o.result {
                failures.push(failed(
                    &format!("checking in {}", o.record.display_name()),
                    &e,
                ));
            }
        }
        let verdict = if failures.is_empty() {
            self.nothing_left("recover and a check-in of every record left")
                .await
        } else {
            Err(format!(
                "giving back what the inventory held failed: {}",
                failures.join("; ")
            ))
        };
        if verdict.is_err() {
            self.force_out().await;
        }
        verdict
    }

    /// Checks in whatever the provider still holds of this check, by its listing: a failed check
    /// leaves nothing on a shared provider.
    async fn force_out(&self) {
        if let Ok(held) = self.held().await {
            for host in held {
                let _ = self.observer.checkin(&host).await;
            }
        }
    }

    /// Waits (bounded) until no wrapped call is under way.
    async fn quiet(&self) -> Step {
        tokio::time::timeout(DEADLINE, self.injector.idle())
            .await
            .map_err(|_| {
                format!(
                    "provider or inventory calls were still under way {DEADLINE:?} after the check"
                )
            })
    }

    /// The hosts of this check that the provider holds.
    async fn held(&self) -> Step<Vec<HostRecord>> {
        let listed = self
            .observer
            .inventory(self.kit.listing_filter.as_deref())
            .await
            .map_err(|e| {
                failed(
                    "listing the provider's hosts (Provider::inventory, which the kit needs)",
                    &e,
                )
            })?;
        Ok(listed
            .into_iter()
            .filter(|h| self.injector.made(h))
            .collect())
    }

    /// The inventory's records of this check.
    fn records(&self) -> Step<Vec<HostRecord>> {
        let records = self
            .broker
            .inventory()
            .list()
            .map_err(|e| failed("reading the inventory", &e))?;
        Ok(records
            .into_iter()
            .filter(|r| r.provider() == Some(self.kit.kind.name()) && self.injector.made(r))
            .collect())
    }

    /// Fails when the provider holds a host of this check or the inventory keeps a record of it.
    async fn nothing_left(&self, after: &str) -> Step {
        let held = self.held().await?;
        if !held.is_empty() {
            let names: Vec<String> = held.iter().map(HostRecord::display_name).collect();
            return Err(format!(
                "leaked: {} still holds {} after {after}, and the inventory has no record of {}; \
                 Provider::checkin must find a host by the record's identity, also for a record \
                 still `pending`",
                self.kit.kind.name(),
                names.join(", "),
                if names.len() == 1 { "it" } else { "them" },
            ));
        }
        let records = self.records()?;
        if !records.is_empty() {
            let names: Vec<String> = records
                .iter()
                .map(|r| format!("{} ({})", r.display_name(), r.state().as_str()))
                .collect();
            return Err(format!(
                "records left in the inventory after {after}: {}",
                names.join(", ")
            ));
        }
        Ok(())
    }

    /// Fails unless the inventory holds every host handed out as `ready`: no record is lost.
    fn recorded(&self, handed_out: &[HostRecord]) -> Step {
        let stored = self.records()?;
        for host in handed_out {
            if !stored
                .iter()
                .any(|r| r.id() == host.id() && r.state() == HostState::Ready)
            {
                return Err(format!(
                    "record lost: {} was handed out, but the inventory has no ready record of it",
                    host.display_name()
                ));
            }
        }
        Ok(())
    }

    async fn checkout(&self, count: usize) -> Step<Vec<HostRecord>> {
        let guards = self
            .broker
            .checkout(self.kit.request(count))
            .await
            .map_err(|e| failed(&format!("checking out {count} host(s)"), &e))?;
        let records: Vec<HostRecord> = guards
            .into_iter()
            .map(|g| g.keep().record().clone())
            .collect();
        self.recorded(&records)?;
        Ok(records)
    }

    async fn checkin(&self, records: Vec<HostRecord>, what: &str) -> Step {
        for o in self.broker.checkin(records, false).await {
            if let Err(e) = o.result {
                return Err(failed(&format!("{what} {}", o.record.display_name()), &e));
            }
        }
        Ok(())
    }

    async fn lifecycle(&self) -> Step {
        let record = self.one().await?;
        if self.held().await?.len() != 1 {
            return Err(format!(
                "the provider's listing does not show the host it made ({})",
                record.display_name()
            ));
        }
        if self.kit.sessions {
            self.use_host(&record).await?;
        }
        for o in self
            .broker
            .extend(vec![record.clone()], self.kit.extend_args.clone())
            .await
        {
            match o.result {
                Ok(()) | Err(Error::NotImplemented { .. }) => {}
                Err(e) => return Err(failed("extending the host", &e)),
            }
        }
        self.checkin(vec![record], "checking in").await?;
        self.nothing_left("checkin").await
    }

    async fn one(&self) -> Step<HostRecord> {
        let mut records = self.checkout(1).await?;
        match (records.pop(), records.is_empty()) {
            (Some(r), true) if r.state() == HostState::Ready => Ok(r),
            _ => Err("a checkout of one host did not give one ready host".into()),
        }
    }

    /// Runs commands and moves a file on the host.
    async fn use_host(&self, record: &HostRecord) -> Step {
        let host = self
            .broker
            .attach(record.clone())
            .map_err(|e| failed("attaching the host", &e))?;
        let out = host
            .execute("echo conformance; echo err >&2; exit 3")
            .await
            .map_err(|e| failed("running a command", &e))?;
        if (out.stdout.as_str(), out.stderr.as_str(), out.status) != ("conformance\n", "err\n", 3) {
            return Err(format!(
                "`echo conformance; echo err >&2; exit 3` gave stdout {:?}, stderr {:?}, status {}",
                out.stdout, out.stderr, out.status
            ));
        }
        // Every byte value (256 wraps to 0), in a period no power-of-two chunk size divides.
        let payload: Vec<u8> = (0..70_000u32).map(|i| (i % 257) as u8).collect();
        let path = "/tmp/broker-conformance/file.bin";
        host.write_file(path, &payload)
            .await
            .map_err(|e| failed(&format!("writing {path}"), &e))?;
        let back = host
            .read_file(path)
            .await
            .map_err(|e| failed(&format!("reading {path}"), &e))?;
        if back != payload {
            return Err(format!(
                "{path} read back {} bytes unlike the {} written",
                back.len(),
                payload.len()
            ));
        }
        Ok(())
    }

    async fn idempotent_checkin(&self) -> Step {
        let record = self.one().await?;
        self.checkin(vec![record.clone()], "checking in").await?;
        self.observer
            .checkin(&record)
            .await
            .map_err(|e| failed("Provider::checkin of a host already checked in", &e))?;
        self.checkin(vec![record], "checking in again through broker")
            .await?;
        self.nothing_left("three check-ins of one host").await
    }

    async fn vanished_host(&self) -> Step {
        let record = self.one().await?;
        self.observer
            .checkin(&record)
            .await
            .map_err(|e| failed("removing the host behind broker's back", &e))?;
        if self.kit.sessions {
            let host = self
                .broker
                .attach(record.clone())
                .map_err(|e| failed("attaching the host", &e))?;
            match host.execute("true").await {
                Err(Error::Host { .. }) => {}
                Ok(out) => {
                    return Err(format!(
                        "a command on a removed host ran (status {})",
                        out.status
                    ));
                }
                Err(e) => {
                    return Err(failed(
                        "a command on a removed host should fail with a host error",
                        &e,
                    ));
                }
            }
        }
        self.checkin(
            vec![record],
            "checking in a host removed behind broker's back",
        )
        .await?;
        self.nothing_left("checkin of a vanished host").await
    }

    async fn sync_finds_its_hosts(&self) -> Step {
        let record = self.one().await?;
        self.broker
            .inventory()
            .remove(&[record.id()])
            .map_err(|e| failed("removing the record", &e))?;
        let spec = match &self.kit.listing_filter {
            Some(filter) => format!("{}:{filter}", self.kit.kind.name()),
            None => self.kit.kind.name().to_owned(),
        };
        self.broker
            .sync_inventory(&spec)
            .await
            .map_err(|e| failed(&format!("syncing `{spec}`"), &e))?;
        let found = self.records()?;
        if found.len() != 1 {
            return Err(format!(
                "a sync found {} record(s) for the host whose record was lost ({}), not 1",
                found.len(),
                record.display_name()
            ));
        }
        self.checkin(found, "checking in the host the sync found")
            .await?;
        self.nothing_left("checkin of the synced host").await
    }

    async fn three_hosts(&self) -> Step {
        let records = self.checkout(3).await?;
        let held = self.held().await?;
        if records.len() != 3 || held.len() != 3 {
            return Err(format!(
                "a checkout of 3 gave {} record(s), and the provider lists {} host(s) of them",
                records.len(),
                held.len()
            ));
        }
        self.checkin(records, "checking in").await?;
        self.nothing_left("checkin of 3 hosts").await
    }

    async fn third_of_three_fails(&self) -> Step {
        match self.broker.checkout(self.kit.request(3)).await {
            Err(Error::CheckoutFailed {
                failures,
                rolled_back,
                left,
                ..
            }) if failures.len() == 1
                && failures[0].0 == 2
                && rolled_back.len() == 2
                && left.is_empty() => {}
            Err(e) => {
                return Err(failed(
                    "the checkout of 3 whose third failed should fail with host 3's failure and give the other 2 back",
                    &e,
                ));
            }
            Ok(_) => return Err("a checkout of 3 whose third host failed succeeded".into()),
        }
        self.nothing_left("a failed checkout of 3").await
    }

    /// Checks hosts out and in with the injector's fault striking somewhere; a hang is ended as a
    /// caller would end it (a checkout is cancelled, a check-in dropped).
    async fn under_fault(&self, fault: Fault) -> Step {
        let records = match self.checkout_under_fault(fault).await? {
            Ok(records) => records,
            Err(e) => return self.after_failed_checkout(fault, &e).await,
        };
        if fault.call() == Call::Create && fault.effect() == Effect::Fail {
            return Err(format!(
                "the checkout succeeded though host index {} failed to be created",
                fault.hosts() - 1
            ));
        }
        self.recorded(&records)?;
        let mut checkin = Box::pin(self.broker.checkin(records, false));
        if self.until_hung(&mut checkin).await.is_none() {
            // As a caller's timeout would: the check-in is dropped; a stalled write goes on.
            drop(checkin);
            self.injector.release();
        }
        if !self.injector.has_struck() {
            return Err(
                "the fault never struck: the check-out and check-in made no such call".into(),
            );
        }
        Ok(())
    }

    /// The checkout of a fault scenario: its result, or `Err` when it did not return.
    async fn checkout_under_fault(&self, fault: Fault) -> Step<crate::Result<Vec<HostRecord>>> {
        let cancel = Cancellation::new();
        let request = self.kit.request(fault.hosts()).cancel_with(&cancel);
        let mut checkout = Box::pin(self.broker.checkout(request));
        let outcome = match self.until_hung(&mut checkout).await {
            Some(outcome) => outcome,
            None => {
                // As a caller stops a checkout that does not return: a provider call that never
                // answers is given up after `cancel_timeout`; a stalled write goes on, and broker
                // must notice the stop after it.
                cancel.cancel();
                self.injector.release();
                tokio::time::timeout(DEADLINE, checkout)
                    .await
                    .map_err(|_| {
                        format!(
                            "the checkout did not return within {DEADLINE:?} of being cancelled"
                        )
                    })?
            }
        };
        Ok(outcome.map(|guards| {
            guards
                .into_iter()
                .map(|g| g.keep().record().clone())
                .collect()
        }))
    }

    /// A scenario's checkout failed: it must have been the fault, and a failed create must leave
    /// nothing, even before any clean-up.
    async fn after_failed_checkout(&self, fault: Fault, e: &Error) -> Step {
        if !self.injector.has_struck() || fault.call() == Call::Release {
            return Err(failed("the checkout failed before the fault struck", e));
        }
        if fault.call() == Call::Create && fault.effect() == Effect::Fail {
            self.quiet().await?;
            return self
                .nothing_left("the failed checkout (broker gives back what it made)")
                .await;
        }
        Ok(())
    }

    /// Runs `work` until it ends (`Some`) or a wrapped call hangs (`None`).
    async fn until_hung<T>(&self, work: &mut (impl Future<Output = T> + Unpin)) -> Option<T> {
        tokio::select! {
            out = work => Some(out),
            () = self.injector.hung() => None,
        }
    }
}
