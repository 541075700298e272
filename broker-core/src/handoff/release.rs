//! The handoff's part in check-in and recovery ([`HandoffHooks`]): before a host that was handed off
//! goes back, what its handoff did is undone (the kind's [`Handoff::undo`](crate::handoff::Handoff::undo))
//! and what an interrupted run left on it is stopped; a handoff run by hand whose process died is
//! judged failed.
//!
//! Check-in never waits on an undo that cannot be done: the host goes back all the same, and what
//! could not be undone (the target removed from `targets.yaml`, its kind not in this broker, the
//! undo failing) is said loudly — logged as an error and returned with the host's outcome — naming
//! the target, so a person can undo it by hand.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_yaml::Value;

use crate::handoff::run::{self, HandoffRegistry, HandoffState};
use crate::handoff::store::TargetStore;
use crate::host::Host;
use crate::lifecycle::HandoffHooks;
use crate::provider::Provider;
use crate::record::{HostRecord, Owner, fields};
use crate::sync::lock;

/// The longest the clean-up after an interrupted run waits to reach the host.
const CONNECT_FOR_CLEAN_UP: Duration = Duration::from_secs(60);

/// The handoff hooks of one broker: its kinds and its targets.
pub(crate) struct Release {
    pub(crate) kinds: Arc<Mutex<HandoffRegistry>>,
    pub(crate) targets: Arc<dyn TargetStore>,
}

#[async_trait::async_trait]
impl HandoffHooks for Release {
    async fn before_release(
        &self,
        record: &HostRecord,
        provider: &Arc<dyn Provider>,
    ) -> Option<String> {
        let host = Host::new(record.clone(), Arc::clone(provider));
        let mut problems = Vec::new();
        if HandoffState::of(record) == Some(HandoffState::HandingOff)
            && let Err(e) =
                run::stop_leftovers(&host, run::recorded_run(record), CONNECT_FOR_CLEAN_UP).await
        {
            problems.push(format!(
                "what its unfinished handoff left on it may still run ({})",
                crate::error::chain(&e)
            ));
        }
        if let Err(problem) = self.undo(record, &host).await {
            problems.push(problem);
        }
        if problems.is_empty() {
            return None;
        }
        Some(format!(
            "host {} goes back, but {}",
            record.display_name(),
            problems.join("; and ")
        ))
    }

    async fn settle_interrupted(
        &self,
        mut record: HostRecord,
        provider: &Arc<dyn Provider>,
    ) -> HostRecord {
        let host = Host::new(record.clone(), Arc::clone(provider));
        let runner = record
            .get(fields::HANDOFF_RUNNER)
            .and_then(|v| serde_yaml::from_value::<Owner>(v.clone()).ok())
            .map_or_else(|| "?".to_owned(), |o| o.pid.to_string());
        let name = record.display_name();
        let recorded = run::recorded_run(&record);
        let cleaned = match run::stop_leftovers(&host, recorded, CONNECT_FOR_CLEAN_UP).await {
            Ok(()) => "what it left on the host was stopped and removed".to_owned(),
            Err(e) => format!(
                "stopping what it left on the host failed ({}): look for {}{}.* in the host's \
                 temporary directory",
                crate::error::chain(&e),
                run::PRIVATE_DIR_PREFIX,
                recorded.unwrap_or("*")
            ),
        };
        let reason = format!(
            "interrupted: the broker process running it (pid {runner}) ended mid-run; {cleaned}; \
             `broker handoff retry {name}` runs it again"
        );
        tracing::warn!(host = %name, "{reason}");
        record.remove(fields::HANDOFF_RUNNER);
        record.remove(fields::HANDOFF_AT_CHECKOUT);
        record.remove(fields::HANDOFF_RUN);
        record.set(fields::HANDOFF_STATE, HandoffState::Failed.as_str());
        record.set(fields::HANDOFF_ERROR, reason);
        record
    }
}

impl Release {
    /// Runs the kind's undo of the target `record` was handed to; what stood in the way, said for
    /// the person who must undo it by hand.
    async fn undo(&self, record: &HostRecord, host: &Host) -> Result<(), String> {
        let id = record
            .get(fields::HANDOFF_TARGET)
            .and_then(Value::as_str)
            .unwrap_or_default();
        let target = self.targets.get(id).map_err(|e| {
            format!(
                "its handoff to target `{id}` was not undone ({}); undo by hand what that target \
                 holds for the host",
                crate::error::chain(&e)
            )
        })?;
        let kind = Arc::clone(lock(&self.kinds).get(&target.kind).map_err(|e| {
            format!(
                "its handoff to `{}` was not undone: {}; undo by hand what the target holds for \
                 the host",
                target.name,
                crate::error::chain(&e)
            )
        })?);
        run::undo(&*kind, host, &target).await.map_err(|e| {
            format!(
                "undoing its handoff to `{}` failed ({}); undo by hand what the target holds for \
                 the host",
                target.name,
                crate::error::chain(&e)
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Error, Result};
    use crate::handoff::run::{Handoff, HandoffContext, Outcome, StepError};
    use crate::handoff::target::{ConfigValue, Target, TargetConfig};
    use crate::provider::{CheckoutContext, ProviderKind, ProviderRegistry};
    use crate::{Broker, CheckoutRequest, Settings};
    use serde_yaml::Mapping;

    /// What the host and the kind were asked, in order, for every test (hosts are named per test).
    static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

    fn seen(host: &str) -> Vec<String> {
        lock(&SEEN)
            .iter()
            .filter(|e| e.ends_with(host))
            .cloned()
            .collect()
    }

    /// Makes a host named after the `name` argument; notes check-ins and connects.
    #[derive(Debug)]
    struct Noted;

    #[async_trait::async_trait]
    impl Provider for Noted {
        fn name(&self) -> &str {
            "Noted"
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
        async fn checkin(&self, host: &HostRecord) -> Result<()> {
            lock(&SEEN).push(format!("checkin {}", host.display_name()));
            Ok(())
        }
    }

    /// Hands off at once; its undo notes the host, and fails when the target sets `fail_undo`.
    #[derive(Debug)]
    struct Undoer;

    #[async_trait::async_trait]
    impl Handoff for Undoer {
        fn name(&self) -> &str {
            "undoer"
        }
        async fn run(&self, _cx: &HandoffContext<'_>) -> std::result::Result<Outcome, StepError> {
            Ok(Outcome::Succeeded)
        }
        async fn undo(&self, cx: &HandoffContext<'_>) -> std::result::Result<(), StepError> {
            lock(&SEEN).push(format!(
                "undo {} {}",
                cx.target.name,
                cx.host.display_name()
            ));
            match run::setting(cx.target, "fail_undo") {
                Some(why) => Err(StepError::Fatal(Error::host(cx.host.display_name(), why))),
                None => Ok(()),
            }
        }
    }

    fn build(_config: crate::ProviderConfig) -> Result<Arc<dyn Provider>> {
        Ok(Arc::new(Noted))
    }

    /// A broker over a fresh directory with the `undoer` kind and its target `tgt` (with `config`).
    fn broker(dir: &std::path::Path, config: &[(&str, &str)]) -> Broker {
        let settings = Settings::load_from(dir, Vec::new()).unwrap();
        let kind = ProviderKind::new("Noted", "test", build).checkout_actions(&["name"]);
        let broker = Broker::new(settings, ProviderRegistry::new().with(kind)).unwrap();
        broker.register_handoff(Arc::new(Undoer));
        let mut values = TargetConfig::default();
        for (key, value) in config {
            values.insert(*key, ConfigValue::new(value, false));
        }
        let target = Target::new("tgt", "", "undoer", values).unwrap();
        broker.target_store().add(target).unwrap();
        broker
    }

    /// The record of a host checked out for `request` and kept (its guard let go).
    async fn kept(broker: &Broker, request: CheckoutRequest) -> HostRecord {
        let guard = broker.checkout_one(request).await.unwrap();
        guard.keep().record().clone()
    }

    fn request(name: &str) -> CheckoutRequest {
        CheckoutRequest::new().arg("name", name).handoff("tgt")
    }

    #[tokio::test]
    async fn check_in_undoes_the_handoff_before_the_provider_releases_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path(), &[]);
        let guard = broker.checkout_one(request("guarded.a")).await.unwrap();
        guard.checkin().await.unwrap();
        assert_eq!(
            seen("guarded.a"),
            ["undo tgt guarded.a", "checkin guarded.a"]
        );

        let record = kept(&broker, request("listed.a")).await;
        let outcomes = broker.checkin(vec![record], false).await;
        assert!(outcomes[0].result.is_ok(), "{outcomes:?}");
        assert_eq!(outcomes[0].warning, None);
        assert_eq!(seen("listed.a"), ["undo tgt listed.a", "checkin listed.a"]);
        assert!(broker.inventory().list().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_host_never_handed_off_is_checked_in_without_an_undo() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path(), &[]);
        let record = kept(&broker, CheckoutRequest::new().arg("name", "plain.a")).await;
        let outcomes = broker.checkin(vec![record], false).await;
        assert!(outcomes[0].result.is_ok(), "{outcomes:?}");
        assert_eq!(outcomes[0].warning, None);
        assert_eq!(seen("plain.a"), ["checkin plain.a"]);
    }

    #[tokio::test]
    async fn a_failed_undo_still_checks_the_host_in_and_says_what_is_left_to_undo() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path(), &[("fail_undo", "the CA refused")]);
        let record = kept(&broker, request("failing.a")).await;
        let outcomes = broker.checkin(vec![record], false).await;
        assert!(outcomes[0].result.is_ok(), "{outcomes:?}");
        assert_eq!(
            outcomes[0].warning.as_deref(),
            Some(
                "host failing.a goes back, but undoing its handoff to `tgt` failed (host \
                 failing.a: the CA refused); undo by hand what the target holds for the host"
            )
        );
        assert_eq!(
            seen("failing.a"),
            ["undo tgt failing.a", "checkin failing.a"]
        );
        assert!(broker.inventory().list().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_removed_target_still_checks_the_host_in_and_says_its_handoff_was_not_undone() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path(), &[]);
        let record = kept(&broker, request("removed.a")).await;
        let store = broker.target_store();
        let id = store.get("tgt").unwrap().id;
        store.remove(&id).unwrap();
        let outcomes = broker.checkin(vec![record], false).await;
        assert!(outcomes[0].result.is_ok(), "{outcomes:?}");
        let warning = outcomes[0].warning.as_deref().unwrap();
        assert!(
            warning.starts_with(&format!(
                "host removed.a goes back, but its handoff to target `{id}` was not undone \
                 (unknown handoff target `{id}`"
            )),
            "{warning}"
        );
        assert!(
            warning.ends_with("undo by hand what that target holds for the host"),
            "{warning}"
        );
        assert_eq!(seen("removed.a"), ["checkin removed.a"]);
        assert!(broker.inventory().list().unwrap().is_empty());
    }
}
