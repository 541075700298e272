//! The handoff step of a checkout and of `Broker::handoff`: each host is marked `handing_off`, the
//! kind runs on it, and how it went is written on its record. A checkout whose hosts are not all
//! handed off fails, all or nothing, as any checkout failure does: every host of it is checked in
//! again, unless the request keeps failed handoffs.

use std::sync::Arc;

use tokio::task::JoinSet;

use crate::error::{Error, Result};
use crate::handoff::run::{self, Handoff, HandoffState, RunReport};
use crate::handoff::target::Target;
use crate::host::Host;
use crate::lifecycle::{BrokerInner, by_result};
use crate::provider::Provider;
use crate::record::HostRecord;
use crate::request::Cancellation;

/// What a handoff runs: the kind and its target.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    pub(crate) kind: Arc<dyn Handoff>,
    pub(crate) target: Target,
}

/// Hands the freshly checked-out `records` off (all at once) and returns them as recorded. When any
/// is not handed off and `keep_failed` is not set, all are checked in again and the checkout fails.
///
/// # Errors
/// [`Error::CheckoutFailed`] naming each host not handed off and what became of the others; an
/// inventory error.
pub(crate) async fn hand_off_checkout(
    inner: &Arc<BrokerInner>,
    provider: &Arc<dyn Provider>,
    records: Vec<HostRecord>,
    step: &Step,
    keep_failed: bool,
    stop: Option<&Cancellation>,
) -> Result<Vec<HostRecord>> {
    let hosts = records
        .into_iter()
        .map(|record| Host::new(record, Arc::clone(provider)))
        .collect();
    let done = hand_off_all(inner, hosts, step, true, stop).await?;
    if stop.is_some_and(Cancellation::is_cancelled) {
        let records = done.into_iter().map(|(record, _)| record).collect();
        return Err(stopped_checkout(inner, records, step).await);
    }
    let not_handed_off: Vec<(usize, String, RunReport)> = done
        .iter()
        .enumerate()
        .filter(|(_, (_, report))| report.state != HandoffState::HandedOff)
        .map(|(i, (record, report))| (i, record.display_name(), report.clone()))
        .collect();
    let records: Vec<HostRecord> = done.into_iter().map(|(record, _)| record).collect();
    if not_handed_off.is_empty() || keep_failed {
        return Ok(records);
    }
    let requested = records.len();
    let (rolled_back, left) = by_result(inner.checkin(records, None).await);
    let failures = not_handed_off
        .into_iter()
        .map(|(i, host, report)| {
            let checked_in = rolled_back.contains(&host);
            (i, failed_handoff(&host, &report, checked_in))
        })
        .collect();
    Err(Error::CheckoutFailed {
        requested,
        failures,
        rolled_back,
        kept: Vec::new(),
        left,
    })
}

/// A checkout stopped while its hosts were handed off (their runs were stopped): all are checked
/// in again, as for any stopped checkout, and the error says so.
async fn stopped_checkout(
    inner: &Arc<BrokerInner>,
    records: Vec<HostRecord>,
    step: &Step,
) -> Error {
    let (rolled_back, left) = by_result(inner.checkin(records, None).await);
    let mut message = format!(
        "the checkout was stopped while its hosts were handed off to `{}`; their runs were \
         stopped and {} host(s) checked in again",
        step.target.name,
        rolled_back.len()
    );
    for (host, error) in &left {
        message.push_str(&format!(
            "; checking in {host} failed ({}): `broker checkin {host}` gives it back",
            crate::error::chain(error)
        ));
    }
    Error::Interrupted { message }
}

/// Hands one host off (`broker handoff run|retry`) and returns how it went; the record is
/// updated in the inventory. When `stop` is cancelled, the run is stopped and ends failed,
/// interrupted.
///
/// # Errors
/// Invalid run settings of the target; an inventory error.
pub(crate) async fn hand_off_one(
    inner: &Arc<BrokerInner>,
    host: Host,
    step: &Step,
    stop: Option<&Cancellation>,
) -> Result<RunReport> {
    let mut done = hand_off_all(inner, vec![host], step, false, stop).await?;
    done.pop().map(|(_, report)| report).ok_or(Error::Internal {
        message: "a handoff of one host reported none".into(),
        source: None,
    })
}

/// Marks every host `handing_off` (one write; `at_checkout`: as the last step of the checkout that
/// made it), runs the handoffs concurrently, and records their reports (one write). The records come
/// back in the order given.
async fn hand_off_all(
    inner: &Arc<BrokerInner>,
    hosts: Vec<Host>,
    step: &Step,
    at_checkout: bool,
    stop: Option<&Cancellation>,
) -> Result<Vec<(HostRecord, RunReport)>> {
    run::RunPolicy::of(&step.target)?;
    let mut runs = Vec::new();
    for host in &hosts {
        let id = run::new_run_id();
        claim(inner, host, &step.target, at_checkout, &id).await?;
        runs.push(id);
    }
    let mut tasks = JoinSet::new();
    for (index, (host, id)) in hosts.into_iter().zip(runs).enumerate() {
        let step = step.clone();
        let stop = stop.cloned();
        tasks.spawn(async move {
            let report =
                run::run_stoppable(&*step.kind, &host, &step.target, &id, stop.as_ref()).await;
            (index, host.record().clone(), report)
        });
    }
    let mut done = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (index, mut record, report) =
            joined.map_err(|e| Error::internal("a handoff task failed", e))?;
        let report = report?;
        report.apply(&mut record);
        done.push((index, record, report));
    }
    done.sort_by_key(|(index, _, _)| *index);
    let done: Vec<(HostRecord, RunReport)> = done.into_iter().map(|(_, r, p)| (r, p)).collect();
    for (record, report) in &done {
        let applied = report.clone();
        let recorded = inner
            .revise(record.id(), move |stored| {
                applied.apply(stored);
                Ok(true)
            })
            .await?;
        if recorded.is_none() {
            tracing::warn!(
                host = %record.display_name(),
                "the host was checked in while it was being handed off (a reap of its ended lease, \
                 or `broker checkin`); how its handoff went is not recorded"
            );
        }
    }
    Ok(done)
}

/// Marks `host`'s stored record `handing_off` for this run (`at_checkout`: as the last step of the
/// checkout that made it), on the record as it is: a host that another run — of this process or a
/// live other one — is handing off is refused, and two runs starting at once cannot both claim it.
async fn claim(
    inner: &Arc<BrokerInner>,
    host: &Host,
    target: &Target,
    at_checkout: bool,
    run: &str,
) -> Result<()> {
    let name = host.display_name();
    let target = target.clone();
    let run = run.to_owned();
    let claimed = inner
        .revise(host.record().id(), move |record| {
            if crate::record::handing_off(record) && !crate::record::handoff_interrupted(record) {
                return Err(Error::user(format!(
                    "host {} is already being handed off; wait for that run to end \
                     (`broker handoff status {}`)",
                    record.display_name(),
                    record.display_name()
                )));
            }
            run::mark_handing_off(record, &target, &run);
            if at_checkout {
                record.set(crate::record::fields::HANDOFF_AT_CHECKOUT, true);
            }
            Ok(true)
        })
        .await?;
    match claimed {
        Some(_) => Ok(()),
        None => Err(Error::user(format!(
            "host {name} is not in the inventory (checked in meanwhile?); nothing was handed off"
        ))),
    }
}

/// How many of the last lines of a run's log the error of a failed handoff shows.
const LOG_TAIL: usize = 10;

/// The error of a host of a checkout whose handoff did not end handed off: why, and — the host
/// checked in, so its record is gone — the end of the run's log; else where its record is.
fn failed_handoff(host: &str, report: &RunReport, checked_in: bool) -> Error {
    let ended = format!(
        "handoff to `{}` ended {}: {}",
        report.target_name,
        report.state,
        report.last_error.as_deref().unwrap_or("no reason given"),
    );
    if !checked_in {
        return Error::host(
            host,
            format!(
                "{ended}; checking the host in failed too, so it is still out: `broker handoff \
                 status {host}` shows the run's log, `broker checkin {host}` gives it back"
            ),
        );
    }
    let tail = &report.log[report.log.len().saturating_sub(LOG_TAIL)..];
    let shown: String = tail.iter().map(|line| format!("\n      {line}")).collect();
    Error::host(
        host,
        format!(
            "{ended}; the host was checked in (a failed handoff fails the checkout; \
             `--keep-failed-handoff` keeps the host); the run's log ended:{shown}"
        ),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use serde_yaml::Mapping;
    use tokio::sync::Notify;

    use super::*;
    use crate::handoff::run::{HandoffContext, Outcome, StepError};
    use crate::handoff::target::TargetConfig;
    use crate::provider::{CheckoutContext, ProviderKind, ProviderRegistry};
    use crate::{Broker, CheckoutRequest, Host, Settings};

    /// Makes a host named after the `name` argument.
    #[derive(Debug)]
    struct Named;

    #[async_trait::async_trait]
    impl Provider for Named {
        fn name(&self) -> &str {
            "Named"
        }
        fn instance(&self) -> Option<&str> {
            None
        }
        async fn checkout(&self, ctx: &CheckoutContext<'_>) -> Result<Mapping> {
            let mut fields = Mapping::new();
            let name = ctx.args().get("name").cloned().unwrap_or_default();
            fields.insert("hostname".into(), name);
            Ok(fields)
        }
        async fn checkin(&self, _host: &HostRecord) -> Result<()> {
            Ok(())
        }
    }

    /// Hands off once the test opens the gate; counts the runs under way.
    #[derive(Debug, Default)]
    struct Gated {
        gate: Notify,
        running: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Handoff for Gated {
        fn name(&self) -> &str {
            "gated"
        }
        async fn run(&self, _cx: &HandoffContext<'_>) -> std::result::Result<Outcome, StepError> {
            self.running.fetch_add(1, Ordering::SeqCst);
            self.gate.notified().await;
            Ok(Outcome::Succeeded)
        }
    }

    /// A broker over `dir` with the `gated` kind and its target `gate`, and a host checked out of
    /// it and kept.
    async fn set_up(dir: &std::path::Path, gated: &Arc<Gated>) -> (Broker, Host) {
        let settings = Settings::load_from(dir, Vec::new()).unwrap();
        let kind =
            ProviderKind::new("Named", "test", |_| Ok(Arc::new(Named))).checkout_actions(&["name"]);
        let broker = Broker::new(settings, ProviderRegistry::new().with(kind)).unwrap();
        broker.register_handoff(Arc::clone(gated) as Arc<dyn Handoff>);
        let target = Target::new("gate", "", "gated", TargetConfig::default()).unwrap();
        broker.target_store().add(target).unwrap();
        let request = CheckoutRequest::new().arg("name", "held.example.com");
        let host = broker.checkout_one(request).await.unwrap().keep();
        (broker, host)
    }

    /// Waits (at most 30 s) until the gated kind runs on `n` hosts.
    async fn running(gated: &Gated, n: usize) {
        let wait = async {
            while gated.running.load(Ordering::SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .expect("the handoff never started");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_host_checked_in_while_it_is_handed_off_is_not_written_back() {
        let dir = tempfile::tempdir().unwrap();
        let gated = Arc::new(Gated::default());
        let (broker, host) = set_up(dir.path(), &gated).await;
        let handing_off = {
            let (broker, host) = (broker.clone(), host.clone());
            tokio::spawn(async move { broker.handoff(&host, "gate").await })
        };
        running(&gated, 1).await;
        // A reap of its ended lease (or a `broker checkin`) takes the host back meanwhile.
        broker.inventory().remove(&[host.record().id()]).unwrap();
        gated.gate.notify_waiters();
        let report = handing_off.await.unwrap().unwrap();
        assert_eq!(report.state, HandoffState::HandedOff);
        assert_eq!(broker.inventory().list().unwrap(), Vec::new());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_host_being_handed_off_is_not_handed_off_again_at_the_same_time() {
        let dir = tempfile::tempdir().unwrap();
        let gated = Arc::new(Gated::default());
        let (broker, host) = set_up(dir.path(), &gated).await;
        let first = {
            let (broker, host) = (broker.clone(), host.clone());
            tokio::spawn(async move { broker.handoff(&host, "gate").await })
        };
        running(&gated, 1).await;
        // Refused at once: it does not wait for the gate.
        let second = tokio::time::timeout(Duration::from_secs(10), broker.handoff(&host, "gate"))
            .await
            .expect("the second handoff ran instead of being refused")
            .unwrap_err();
        assert_eq!(
            second.to_string(),
            "host held.example.com is already being handed off; wait for that run to end \
             (`broker handoff status held.example.com`)"
        );
        gated.gate.notify_waiters();
        assert_eq!(first.await.unwrap().unwrap().state, HandoffState::HandedOff);
        assert_eq!(gated.running.load(Ordering::SeqCst), 1);
        // Once it has ended, the host may be handed off again.
        let again = {
            let (broker, host) = (broker.clone(), host.clone());
            tokio::spawn(async move { broker.handoff(&host, "gate").await })
        };
        running(&gated, 2).await;
        gated.gate.notify_waiters();
        assert_eq!(again.await.unwrap().unwrap().state, HandoffState::HandedOff);
        let stored = broker.inventory().list().unwrap();
        assert_eq!(stored.len(), 1);
        assert!(!crate::record::handing_off(&stored[0]));
    }

    /// A handoff to a target given whole (not stored) runs and is recorded on the host; one that
    /// is cancelled while it runs ends `handoff_failed`, interrupted, the host still out.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_handoff_to_a_target_given_whole_or_cancelled_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let gated = Arc::new(Gated::default());
        let (broker, host) = set_up(dir.path(), &gated).await;
        let unstored = Target::new("elsewhere", "", "gated", TargetConfig::default()).unwrap();
        let id = unstored.id.to_string();
        let handing_off = {
            let (broker, host) = (broker.clone(), host.clone());
            tokio::spawn(async move { broker.handoff_to(&host, unstored).await })
        };
        running(&gated, 1).await;
        gated.gate.notify_waiters();
        let report = handing_off.await.unwrap().unwrap();
        assert_eq!(
            (report.state, report.target),
            (HandoffState::HandedOff, id.clone())
        );
        let stored = broker.inventory().list().unwrap();
        assert_eq!(HandoffState::of(&stored[0]), Some(HandoffState::HandedOff));

        let cancellation = crate::Cancellation::new();
        let cancelled = {
            let (broker, host, cancellation) = (broker.clone(), host.clone(), cancellation.clone());
            tokio::spawn(async move {
                broker
                    .handoff_cancellable(&host, "gate", &cancellation)
                    .await
            })
        };
        running(&gated, 2).await;
        cancellation.cancel();
        let report = tokio::time::timeout(Duration::from_secs(30), cancelled)
            .await
            .expect("a cancelled handoff ends")
            .unwrap()
            .unwrap();
        assert_eq!(report.state, HandoffState::Failed, "{report:?}");
        let stored = broker.inventory().list().unwrap();
        assert_eq!(stored.len(), 1, "the host stays out");
        assert_eq!(HandoffState::of(&stored[0]), Some(HandoffState::Failed));
    }
}
