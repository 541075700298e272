//! Schemas of what the server answers but does not define: the JSON that broker-core serialises
//! (kinds, targets, inventory records, handoff statuses, provider summaries) and Razor's envelopes,
//! which the handlers build with `json!`. These types are never built: they only describe.
//! Also the shared error responses (problem documents) the routes name. A schema of a fixed shape
//! allows no other property (`additionalProperties: false`, from `deny_unknown_fields`), so that a
//! field the code starts to send — a secret — breaks the schemathesis test until it is described.
#![allow(dead_code)]

use std::collections::BTreeMap;

use utoipa::openapi::{Ref, RefOr, Response};
use utoipa::{IntoResponses, ToResponse, ToSchema};

use crate::problem::Problem;

/// `GET /health`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// Always `ok`.
    #[schema(pattern = "^ok$")]
    status: String,
}

/// A handoff kind (`broker target kinds`): what a target can be, and the keys it is configured
/// with.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Kind {
    /// Its name: `puppet`.
    name: String,
    /// What a host is handed to, one line.
    description: String,
    /// Its configuration keys, in the order they are asked for.
    keys: Vec<KindKey>,
}

/// One configuration key of a kind.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KindKey {
    /// The key: `server`.
    key: String,
    /// What the value is.
    description: String,
    /// An example value.
    #[schema(required = false)]
    example: String,
    /// Whether a target must have a value (a default counts).
    required: bool,
    /// The value taken when none is given.
    #[schema(required = false)]
    default: String,
    /// Whether the value is a secret (shown only as a fingerprint).
    sensitive: bool,
    /// Whether the value spans lines.
    multiline: bool,
    /// Which values are accepted, in words.
    validation: String,
}

/// A handoff target. A secret value comes back as `secret sha256:` and the first 16 hex digits of
/// its SHA-256, never in clear.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Its id: `t` and 16 hex digits.
    #[schema(pattern = "^t[0-9a-f]{16}$")]
    id: String,
    /// Its name, unique in any case.
    name: String,
    /// What it is for.
    description: String,
    /// Its kind.
    kind: String,
    /// Its configuration, every value as text; secrets as `secret sha256:…`.
    config: BTreeMap<String, String>,
    /// When it was added, seconds since the Unix epoch.
    created: i64,
    /// When it last changed, seconds since the Unix epoch.
    updated: i64,
    /// 1 when added, one more with each change.
    #[schema(minimum = 1)]
    revision: u64,
}

/// A value of a target's configuration as a request gives it: text, or a number or a boolean
/// taken as written.
#[derive(ToSchema)]
#[serde(untagged)]
pub enum ConfigValue {
    /// Text.
    Text(String),
    /// A number, taken as written.
    Number(f64),
    /// A boolean, taken as `true` or `false`.
    Flag(bool),
}

/// A record of the inventory, as `broker inventory` has it: broker's `_broker_…` fields and the
/// provider's (secret-looking fields masked). Records written by older brokers may lack any field.
#[derive(ToSchema)]
pub struct HostRecord {
    /// The record's id: `h` and 16 hex digits.
    #[schema(required = false)]
    _broker_id: String,
    /// The provider that made the host.
    #[schema(required = false)]
    _broker_provider: String,
    /// `pending` while a checkout makes it, else `ready`.
    #[schema(required = false)]
    _broker_state: String,
    /// The arguments it was checked out with.
    #[schema(required = false, value_type = Object)]
    _broker_args: serde_json::Value,
    /// Its host name.
    #[schema(required = false)]
    hostname: String,
    /// Its name.
    #[schema(required = false)]
    name: String,
}

/// A host's handoff (`broker handoff status`): empty when never handed off.
#[derive(ToSchema)]
pub struct HandoffStatus {
    /// The target's id.
    #[schema(required = false)]
    _broker_handoff_target: String,
    /// `handed_off`, `handoff_failed`, …
    #[schema(required = false)]
    _broker_handoff_state: String,
    /// How many runs there were.
    #[schema(required = false, minimum = 0)]
    _broker_handoff_attempts: u64,
    /// The last run's error.
    #[schema(required = false)]
    _broker_handoff_error: String,
    /// The runs' log lines.
    #[schema(required = false)]
    _broker_handoff_log: Vec<String>,
}

/// A provider compiled in (`broker providers`).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderSummary {
    /// Its name: `AnsibleTower`.
    name: String,
    /// The checkout arguments that pick it.
    actions: Vec<String>,
    /// The instances the settings configure.
    instances: Vec<String>,
    /// What it provides, one line.
    about: String,
}

/// Razor's answer envelope (`resource`, `command`, `result`, `http_err_code`, `errcode`,
/// `response`) around targets.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RazorTargets {
    /// `ProjectRazor::Slice::Broker`.
    resource: String,
    /// The Razor command: `get_all_brokers`, `add_broker`, …
    command: String,
    /// `Ok`, `Created`, `Updated`, `Removed`.
    result: String,
    /// The HTTP status.
    http_err_code: u16,
    /// Always 0.
    errcode: u16,
    /// The targets.
    response: Vec<RazorTarget>,
}

/// A target in Razor's words. A listing has no `@user_description` and no `@req_metadata_hash`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RazorTarget {
    /// The target's id.
    #[serde(rename = "@uuid")]
    uuid: String,
    /// `ProjectRazor::BrokerPlugin::` and the kind, capitalised.
    #[serde(rename = "@classname")]
    classname: String,
    /// `broker`.
    #[serde(rename = "@noun")]
    noun: String,
    /// The target's name.
    #[serde(rename = "@name")]
    name: String,
    /// Its description.
    #[serde(rename = "@user_description")]
    #[schema(required = false)]
    user_description: String,
    /// The kind.
    #[serde(rename = "@plugin")]
    plugin: String,
    /// Its configuration; secrets as `secret sha256:…`.
    #[serde(rename = "@req_metadata_hash")]
    #[schema(required = false)]
    req_metadata_hash: BTreeMap<String, String>,
    /// `/broker/` and the id.
    #[serde(rename = "@uri")]
    uri: String,
}

/// Razor's envelope around the handoff kinds.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RazorPlugins {
    /// `ProjectRazor::Slice::Broker`.
    resource: String,
    /// `get_broker_plugins`.
    command: String,
    /// `Ok`.
    result: String,
    /// 200.
    http_err_code: u16,
    /// 0.
    errcode: u16,
    /// The kinds.
    response: Vec<RazorPlugin>,
}

/// A handoff kind in Razor's words.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RazorPlugin {
    /// The kind.
    #[serde(rename = "@plugin")]
    plugin: String,
    /// `ProjectRazor::BrokerPlugin::` and the kind, capitalised.
    #[serde(rename = "@classname")]
    classname: String,
    /// What it does.
    #[serde(rename = "@description")]
    description: String,
}

/// A Razor error.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RazorError {
    /// Razor's error code: 111 `InputError`, 114 `MissingArgument`, 116 `InvalidUUID`, 123
    /// `NotFound`, 128 `MethodNotAllowed`, 163 `InvalidBrokerMetadata`, …
    std_err_code: u16,
    /// `ProjectRazor::Error::Slice::` and the class.
    err_class: String,
    /// What went wrong.
    result: String,
    /// The HTTP status.
    http_err_code: u16,
    /// `ProjectRazor::Slice::Broker`.
    slice: String,
    /// The Razor command.
    command: String,
}

/// The form of Razor's `POST`/`PUT`: `json_hash` holds the JSON.
#[derive(ToSchema)]
pub struct RazorForm {
    /// JSON text: `{"plugin", "name", "description", "req_metadata_hash"}`.
    json_hash: String,
}

/// The request is malformed: not JSON, a field of the wrong type or unknown, a bad parameter.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct BadRequest(Problem);

/// No bearer token, or one the server does not know (with `WWW-Authenticate: Bearer`).
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct Unauthorized(Problem);

/// The token's role may not do this.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct Forbidden(Problem);

/// The request body did not arrive within the body timeout.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct RequestTimeout(Problem);

/// The request body is larger than the body limit.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct TooLarge(Problem);

/// broker's own failure: a file it cannot read or write.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct ServerError(Problem);

/// The provider failed.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct BadGateway(Problem);

/// The inventory is locked by another process for too long; try again.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct Unavailable(Problem);

/// The provider did not answer in time.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct GatewayTimeout(Problem);

/// Responses that several routes give alike, each a reference to the shared response of its status.
fn shared(statuses: &[(&str, &str)]) -> BTreeMap<String, RefOr<Response>> {
    statuses
        .iter()
        .map(|(status, name)| {
            (
                (*status).to_owned(),
                RefOr::Ref(Ref::from_response_name(*name)),
            )
        })
        .collect()
}

/// 401 and 403: a route that needs more than a read token.
pub struct Refused;

impl IntoResponses for Refused {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        shared(&[("401", "Unauthorized"), ("403", "Forbidden")])
    }
}

/// 400, 408 and 413: a route that reads a body (malformed, late, too large).
pub struct BodyFailures;

impl IntoResponses for BodyFailures {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        shared(&[
            ("400", "BadRequest"),
            ("408", "RequestTimeout"),
            ("413", "TooLarge"),
        ])
    }
}

/// 500 and 503: a route that reads the inventory or the targets.
pub struct StoreFailures;

impl IntoResponses for StoreFailures {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        shared(&[("500", "ServerError"), ("503", "Unavailable")])
    }
}

/// 500, 502, 503 and 504: a route that reaches a provider, as well as the inventory.
pub struct ProviderFailures;

impl IntoResponses for ProviderFailures {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        shared(&[
            ("500", "ServerError"),
            ("502", "BadGateway"),
            ("503", "Unavailable"),
            ("504", "GatewayTimeout"),
        ])
    }
}
