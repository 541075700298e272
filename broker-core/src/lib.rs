//! The core of broker: check hosts out of provisioning systems, use them, give them back.
//!
//! broker-core holds the host model, the [`Provider`] and [`Session`] traits, settings, the inventory,
//! the filter language, the [`Broker`] facade and [`HostGuard`]s. It knows no HTTP, SSH or container
//! crate: providers live in `broker-providers`, one feature each, and register into a
//! [`ProviderRegistry`]. What only the `broker` command line needs (pass-through arguments, editing
//! the settings file, inventory columns) is apart, in [`cli_support`].
//!
//! # A test suite's view
//! ```no_run
//! use broker_core::{Broker, CheckoutRequest, Settings};
//!
//! # async fn demo(registry: broker_core::ProviderRegistry) -> broker_core::Result<()> {
//! let broker = Broker::new(Settings::load()?, registry)?;
//! let hosts = broker.checkout(CheckoutRequest::new().nick("rhel9").count(2)).await?;
//! for host in &hosts {
//!     let out = host.execute("cat /etc/os-release").await?;
//!     assert!(out.stdout.contains("Red Hat"));
//! }
//! // Dropping the guards checks the hosts in, even when the test panics.
//! # Ok(()) }
//! ```
//!
//! # Guarantees
//! - **No host is lost**: a `pending` record is written before a provider is asked for a host, so a
//!   crash mid-checkout leaves a record that [`Broker::recover`] (`broker recover`) cleans up.
//! - **Many processes share one inventory** safely: `flock` across read-modify-write, atomic replace.
//! - **Secrets stay secret**: settings hand them out as [`secrecy::SecretString`] and mask them in
//!   `Debug` and displays.
//! - **Drop never panics or hangs**: see [`guard`](crate::HostGuard) for how check-in on drop works
//!   under every kind of runtime.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod args;
#[cfg(feature = "blocking")]
pub mod blocking;
mod broker;
pub mod cli_support;
#[cfg(feature = "conformance")]
pub mod conformance;
mod drop_worker;
pub mod error;
pub mod files;
pub mod filter;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod guard;
#[cfg(feature = "handoff")]
pub mod handoff;
pub mod host;
pub mod interaction;
pub mod inventory;
pub mod lease;
mod lifecycle;
#[cfg(test)]
mod module_graph;
pub mod process;
pub mod provider;
pub mod query;
pub mod reap;
pub mod record;
pub mod redact;
pub mod report;
mod request;
#[cfg(feature = "scenario")]
pub mod scenario;
pub mod selection;
pub mod session;
pub mod settings;
pub mod spelling;
pub mod sync;
#[cfg(test)]
mod test_log;
pub mod time;
pub mod validation;
pub mod value;

pub use broker::Broker;
pub use error::{Error, Result};
pub use guard::{HostGuard, KEEP_ON_FAILURE_ENV};
pub use host::{FromHost, Host};
pub use inventory::{
    InventoryStore, OwnerLease, OwnerLeases, ProviderListing, SyncReport, YamlFileStore,
};
pub use lifecycle::{HostOutcome, RecoverScope};
pub use provider::{
    Arguments, CheckoutContext, HelpOption, Operation, Provider, ProviderKind, ProviderRegistry,
};
pub use record::{HostRecord, HostState, Owner, RecordId};
pub use request::{Cancellation, CheckoutRequest};
pub use session::{ExecOutput, OutputSink, OutputStream, Session};
pub use settings::{ProviderConfig, Settings};

/// The property tests' settings: `cases` cases each, unless `PROPTEST_CASES` asks for more (or fewer).
#[cfg(test)]
pub(crate) fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    let mut config = proptest::test_runner::Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    config
}

/// Secret strings, as handed out by [`ProviderConfig::secret`]: re-exported so that a provider names
/// the very type broker hands out. A major version of `secrecy` is therefore one of broker-core too.
pub use secrecy;
/// YAML values, the type of a checkout's arguments and of a host record's fields (the inventory is
/// YAML, as the Python broker's is). These are `serde_yaml`'s own types, re-exported rather than
/// wrapped so that arguments and fields pass to and from YAML and JSON without copying, and so that a
/// test suite names the types broker takes and returns without depending on `serde_yaml` at the same
/// version itself. They are part of broker-core's API: a major version of `serde_yaml` is a major
/// version of broker-core.
pub use serde_yaml::{Mapping, Value};
