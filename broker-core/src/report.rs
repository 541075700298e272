//! Results for a front end to collect as a command runs — what the Python broker "emitted" into its
//! `--output-file`: which provider and action a command used with which arguments, and what a provider
//! learns on the way (a job's addresses, how it logged in, why a job failed).
//!
//! They travel as `tracing` events with the target [`TARGET`], so that they reach the front end from
//! any task or thread a provider works on, without the library holding global state: the front end
//! that wants them installs a layer that keeps the fields of these events (the CLI does for
//! `--output-file`); for everyone else they are ordinary debug and info events. Field names, and the
//! output-file keys the CLI writes them as:
//!
//! | Field | Key | Value |
//! |---|---|---|
//! | `provider` | `provider` | the provider's name |
//! | `action` | `action` | the action key (`workflow`, `container_host`, `test_action`, …) or `extend` / `provider_help` |
//! | `arguments` | `arguments` | JSON text of the arguments, secrets masked |
//! | `api_url`, `ui_url` | `api_url`, `ui_url` | a job's API and web addresses |
//! | `auth_type` | `auth_type` | `token` or `password` |
//! | `job_subject`, `job_status` | `<job_subject> Status` | e.g. `Workflow Status: failed` |
//! | `job_reasons` | `Reason(s)` | JSON text of a list of reasons |
//! | `job_url` | `URL` | the failed job's web address |

use serde_yaml::Mapping;

/// The `tracing` target of result events.
pub const TARGET: &str = "broker::report";

/// Reports the provider, action and arguments a command uses (secrets masked).
pub fn action(provider: &str, action: &str, arguments: &Mapping) {
    let arguments = serde_json::to_string(&crate::redact::mask_mapping(arguments))
        .unwrap_or_else(|_| "{}".into());
    tracing::debug!(target: TARGET, provider, action, arguments = %arguments, "provider action");
}
