//! `/api/v1/hosts`: the inventory — list (`?filter=` in the inventory filter language), show,
//! check in (`DELETE`), extend. Records come back with secret-looking fields masked.

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use broker_core::handoff::run::{status_of, target_of};
use broker_core::selection::filter_records;
use broker_core::{Error, HostRecord, HostState, Mapping};
use serde::Deserialize;

use crate::body;
use crate::openapi::schemas as doc;
use crate::problem::Problem;
use crate::state::AppState;

/// A record as the API shows it: every field, secret-looking ones masked.
pub(crate) fn shown(record: &HostRecord) -> serde_json::Value {
    broker_core::value::to_json(record.masked().as_ref())
}

/// `GET /api/v1/hosts[?filter=…]`.
#[utoipa::path(
    get, path = "/api/v1/hosts", operation_id = "listHosts", tag = "hosts",
    params(
        ("filter" = Option<String>, Query, description = "An inventory filter (docs/cli.md#filters): `@inv._broker_provider == \"TestProvider\"`"),
    ),
    responses(
        (status = 200, description = "The records, secret-looking fields masked", body = Vec<doc::HostRecord>),
        (status = 400, description = "A filter that is not of the inventory filter language (`errors` names `filter`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, response = doc::Unauthorized),
        doc::StoreFailures,
    ),
)]
pub(crate) async fn list(State(state): State<AppState>, request: Request) -> Response {
    let filter = body::query(request.uri()).remove("filter");
    let picked = state
        .blocking(move |s| {
            let records = s.broker.inventory().list().map_err(Problem::from)?;
            let picked = filter_records(records, filter.as_deref()).map_err(|e| match e {
                Error::Filter(_) => {
                    Problem::field("filter", e.to_string()).with_status(StatusCode::BAD_REQUEST)
                }
                e => Problem::from(e),
            })?;
            Ok(picked.iter().map(shown).collect::<Vec<_>>())
        })
        .await;
    match picked {
        Ok(records) => Json(records).into_response(),
        Err(problem) => problem.into_response(),
    }
}

/// The record `key` names (as [`find`]), read on a blocking thread.
async fn find_off(state: &AppState, key: &str) -> Result<HostRecord, Problem> {
    let key = key.to_owned();
    state.blocking(move |s| find(s, &key)).await
}

/// The record `key` names: its id, else its hostname or name when only one record has it.
fn find(state: &AppState, key: &str) -> Result<HostRecord, Problem> {
    let records = state.broker.inventory().list().map_err(Problem::from)?;
    if let Some(record) = records.iter().find(|r| r.id().as_str() == key) {
        return Ok(record.clone());
    }
    let mut named = records.into_iter().filter(|r| r.answers_to(key));
    match (named.next(), named.next()) {
        (Some(record), None) => Ok(record),
        (Some(_), Some(_)) => Err(Problem::new(
            StatusCode::CONFLICT,
            format!("more than one host is called `{key}`; use its id (`_broker_id`)"),
        )),
        (None, _) => Err(Problem::not_found(format!("host `{key}` in the inventory"))),
    }
}

/// `GET /api/v1/hosts/{id}`.
#[utoipa::path(
    get, path = "/api/v1/hosts/{id}", operation_id = "showHost", tag = "hosts",
    params(
        ("id" = String, Path, description = "The record's `_broker_id`, or the hostname or name of the one host that has it"),
    ),
    responses(
        (status = 200, description = "The record, secret-looking fields masked", body = doc::HostRecord),
        (status = 401, response = doc::Unauthorized),
        (status = 404, description = "No such host", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "More than one host has that name", body = Problem, content_type = "application/problem+json"),
        doc::StoreFailures,
    ),
)]
pub(crate) async fn show(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match find_off(&state, &id).await {
        Ok(record) => Json(shown(&record)).into_response(),
        Err(problem) => problem.into_response(),
    }
}

/// `DELETE /api/v1/hosts/{id}`: checks the host in; 204 once it is.
#[utoipa::path(
    delete, path = "/api/v1/hosts/{id}", operation_id = "checkinHost", tag = "hosts",
    params(
        ("id" = String, Path, description = "The record's `_broker_id`, or the hostname or name of the one host that has it"),
    ),
    responses(
        (status = 204, description = "Checked in"),
        doc::Refused,
        (status = 404, description = "No such host", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A checkout still makes the host, or more than one host has that name", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The provider refuses the check-in", body = Problem, content_type = "application/problem+json"),
        doc::ProviderFailures,
    ),
)]
pub(crate) async fn checkin(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let record = match find_off(&state, &id).await {
        Ok(record) => record,
        Err(problem) => return problem.into_response(),
    };
    // A checkout under way — this server's own operation, whose caller will be told it got the host,
    // or another process's — still makes the host: checking it in now would leave that caller a host
    // that is gone. (The core refuses only other processes' checkouts; the server is the owner of
    // its operations'.)
    if record.state() == HostState::Pending || broker_core::record::checkout_handing_off(&record) {
        return Problem::new(
            StatusCode::CONFLICT,
            format!(
                "host {} is still being checked out; check it in once its checkout has finished \
                 (its operation says when), or with `broker recover` if the process making it is gone",
                record.display_name()
            ),
        )
        .into_response();
    }
    let outcome = state.broker.checkin(vec![record], false).await;
    match outcome.into_iter().next().map(|o| o.result) {
        Some(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Some(Err(e)) => Problem::from(e).into_response(),
        None => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the check-in gave no outcome",
        )
        .into_response(),
    }
}

/// The body of `POST /api/v1/hosts/{id}/extend`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Extend {
    /// Arguments of the provider's extend (AnsibleTower's `new_expire_time`).
    #[serde(default)]
    #[schema(value_type = Object)]
    arguments: serde_json::Map<String, serde_json::Value>,
}

/// `POST /api/v1/hosts/{id}/extend`: extends the host's lease at its provider; 200 and the
/// record as it is then.
#[utoipa::path(
    post, path = "/api/v1/hosts/{id}/extend", operation_id = "extendHost", tag = "hosts",
    params(
        ("id" = String, Path, description = "The record's `_broker_id`, or the hostname or name of the one host that has it"),
    ),
    request_body(content = Option<Extend>, description = "The provider's extend arguments; an empty body is `{}`"),
    responses(
        (status = 200, description = "The record as it is then", body = doc::HostRecord),
        doc::BodyFailures,
        doc::Refused,
        (status = 404, description = "No such host", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "More than one host has that name", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The provider refuses the arguments", body = Problem, content_type = "application/problem+json"),
        doc::ProviderFailures,
        (status = 501, description = "The provider cannot extend", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn extend(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    let result = async {
        let asked: Extend = body::json_or_default(&state, request).await?;
        let record = find_off(&state, &id).await?;
        let args = arguments(asked.arguments)?;
        let outcome = state.broker.extend(vec![record.clone()], args).await;
        match outcome.into_iter().next().map(|o| o.result) {
            Some(Ok(())) | None => {}
            Some(Err(e)) => return Err(Problem::from(e)),
        }
        let now = find_off(&state, record.id().as_str())
            .await
            .unwrap_or(record);
        Ok(Json(shown(&now)).into_response())
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// JSON arguments as the YAML mapping broker-core takes.
pub(crate) fn arguments(
    json: serde_json::Map<String, serde_json::Value>,
) -> Result<Mapping, Problem> {
    match broker_core::value::to_yaml(&json) {
        broker_core::Value::Mapping(args) => Ok(args),
        _ => Err(Problem::field("arguments", "expected an object")),
    }
}

/// `GET /api/v1/hosts/{id}/handoff`: the host's handoff — target, state, attempts, last error and
/// log (`broker handoff status`); `{}` when it was never handed off.
#[utoipa::path(
    get, path = "/api/v1/hosts/{id}/handoff", operation_id = "showHandoff", tag = "hosts",
    params(
        ("id" = String, Path, description = "The record's `_broker_id`, or the hostname or name of the one host that has it"),
    ),
    responses(
        (status = 200, description = "The host's handoff; `{}` when never handed off", body = doc::HandoffStatus),
        (status = 401, response = doc::Unauthorized),
        (status = 404, description = "No such host", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "More than one host has that name", body = Problem, content_type = "application/problem+json"),
        doc::StoreFailures,
    ),
)]
pub(crate) async fn handoff_status(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Response {
    match find_off(&state, &id).await {
        Ok(record) => Json(broker_core::value::to_json(&status_of(&record))).into_response(),
        Err(problem) => problem.into_response(),
    }
}

/// The body of `POST /api/v1/hosts/{id}/handoff`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct HandOff {
    /// The target (id or name); default: the one the host was last handed to.
    target: Option<String>,
    /// A retry of a handoff that did not succeed (refused for a host handed off).
    #[serde(default)]
    retry: bool,
}

/// `POST /api/v1/hosts/{id}/handoff`: hands the host to a target (`broker handoff run|retry`) and
/// answers when the run ends: 200 and how it went (a failed handoff is a report, not an error).
#[utoipa::path(
    post, path = "/api/v1/hosts/{id}/handoff", operation_id = "runHandoff", tag = "hosts",
    params(
        ("id" = String, Path, description = "The record's `_broker_id`, or the hostname or name of the one host that has it"),
    ),
    request_body(content = Option<HandOff>, description = "The target, and whether this is a retry; an empty body is `{}`"),
    responses(
        (status = 200, description = "How the run went; a failed handoff is `_broker_handoff_state: handoff_failed`", body = doc::HandoffStatus),
        doc::BodyFailures,
        doc::Refused,
        (status = 404, description = "No such host", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "More than one host has that name", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An unknown target, none given or recorded, or a retry of a host handed off (`errors` names `target`)", body = Problem, content_type = "application/problem+json"),
        doc::ProviderFailures,
    ),
)]
pub(crate) async fn handoff_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    let result = async {
        let asked: HandOff = body::json_or_default(&state, request).await?;
        let record = find_off(&state, &id).await?;
        let target = target_of(&record, asked.target.as_deref(), asked.retry)
            .map_err(|e| Problem::field("target", e.to_string()))?;
        let host = state.broker.attach(record).map_err(Problem::from)?;
        let report = state
            .broker
            .handoff(&host, &target)
            .await
            .map_err(|e| match e {
                Error::User { .. } => Problem::field("target", e.to_string()),
                e => Problem::from(e),
            })?;
        Ok::<_, Problem>(Json(broker_core::value::to_json(&report.to_mapping())).into_response())
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}
