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
#[derive(Debug)]
struct Memory {
    name: &'static str,
    leaky: bool,
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
    Ok(Arc::new(Memory {
        name: "Memory",
        leaky: false,
    }))
}

fn build_leaky(_: ProviderConfig) -> Result<Arc<dyn Provider>> {
    Ok(Arc::new(Memory {
        name: "Leaky",
        leaky: true,
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
    // The kit gave back what the leaky provider kept, through its listing.
    let left: Vec<String> = lock(&HOSTS)
        .keys()
        .filter(|n| n.starts_with("leaky-"))
        .cloned()
        .collect();
    assert_eq!(left, Vec::<String>::new());
}
