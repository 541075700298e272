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
) -> Result<Vec<HostRecord>> {
    let hosts = records
        .into_iter()
        .map(|record| Host::new(record, Arc::clone(provider)))
        .collect();
    let done = hand_off_all(inner, hosts, step, true).await?;
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

/// Hands one host off (`broker handoff run|retry`) and returns how it went; the record is
/// updated in the inventory.
///
/// # Errors
/// Invalid run settings of the target; an inventory error.
pub(crate) async fn hand_off_one(
    inner: &Arc<BrokerInner>,
    host: Host,
    step: &Step,
) -> Result<RunReport> {
    let mut done = hand_off_all(inner, vec![host], step, false).await?;
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
) -> Result<Vec<(HostRecord, RunReport)>> {
    run::RunPolicy::of(&step.target)?;
    let marked = hosts
        .iter()
        .map(|host| {
            let mut record = host.record().clone();
            run::mark_handing_off(&mut record, &step.target);
            if at_checkout {
                record.set(crate::record::fields::HANDOFF_AT_CHECKOUT, true);
            }
            record
        })
        .collect();
    inner.put_many(marked).await?;
    let mut tasks = JoinSet::new();
    for (index, host) in hosts.into_iter().enumerate() {
        let step = step.clone();
        tasks.spawn(async move {
            let report = run::run(&*step.kind, &host, &step.target).await;
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
    inner
        .put_many(done.iter().map(|(r, _)| r.clone()).collect())
        .await?;
    Ok(done)
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
