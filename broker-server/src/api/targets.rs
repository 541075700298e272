//! `/api/v1/kinds` and `/api/v1/targets`: handoff kinds (read-only) and targets — list, show,
//! create (the same again is 200, a different one of that name 409), change (`set`/`clear` of
//! config keys; never the kind), remove (409 while a nick or a host names it).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use broker_core::Error;
use broker_core::handoff::schema::{KindSchema, builtin, find_kind};
use broker_core::handoff::target::check_name;
use broker_core::handoff::{
    Added, ConfigValue, Target, TargetChange, add_target, remove_target, update_target,
};
use serde::Deserialize;

use crate::body;
use crate::openapi::schemas as doc;
use crate::problem::Problem;
use crate::state::AppState;

/// `GET /api/v1/kinds`.
#[utoipa::path(
    get, path = "/api/v1/kinds", operation_id = "listKinds", tag = "kinds",
    responses(
        (status = 200, description = "Every handoff kind", body = Vec<doc::Kind>),
        (status = 401, response = doc::Unauthorized),
    ),
)]
pub(crate) async fn kinds() -> Response {
    Json(builtin()).into_response()
}

/// `GET /api/v1/kinds/{name}`.
#[utoipa::path(
    get, path = "/api/v1/kinds/{name}", operation_id = "showKind", tag = "kinds",
    params(
        ("name" = String, Path, description = "The kind: `puppet`, `chef`, …"),
    ),
    responses(
        (status = 200, description = "The kind", body = doc::Kind),
        (status = 401, response = doc::Unauthorized),
        (status = 404, description = "No such kind", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn kind(Path(name): Path<String>) -> Response {
    match find_kind(builtin(), &name) {
        Ok(kind) => Json(kind).into_response(),
        Err(e) => Problem::from(e)
            .with_status(StatusCode::NOT_FOUND)
            .into_response(),
    }
}

/// `GET /api/v1/targets`.
#[utoipa::path(
    get, path = "/api/v1/targets", operation_id = "listTargets", tag = "targets",
    responses(
        (status = 200, description = "Every target, secrets as fingerprints", body = Vec<doc::Target>),
        (status = 401, response = doc::Unauthorized),
        (status = 500, response = doc::ServerError),
    ),
)]
pub(crate) async fn list(State(state): State<AppState>) -> Response {
    match state
        .blocking(|s| s.targets.list().map_err(Problem::from))
        .await
    {
        Ok(targets) => Json(targets).into_response(),
        Err(problem) => problem.into_response(),
    }
}

/// `GET /api/v1/targets/{id}`: by id, or by name in any case.
#[utoipa::path(
    get, path = "/api/v1/targets/{id}", operation_id = "showTarget", tag = "targets",
    params(
        ("id" = String, Path, description = "The target's id (`t` and 16 hex digits) or name, in any case"),
    ),
    responses(
        (status = 200, description = "The target, secrets as fingerprints", body = doc::Target),
        (status = 401, response = doc::Unauthorized),
        (status = 404, description = "No such target", body = Problem, content_type = "application/problem+json"),
        (status = 500, response = doc::ServerError),
    ),
)]
pub(crate) async fn show(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.blocking(move |s| find(s, &id)).await {
        Ok(target) => Json(target).into_response(),
        Err(problem) => problem.into_response(),
    }
}

/// The target `id_or_name`, or 404.
pub(crate) fn find(state: &AppState, id_or_name: &str) -> Result<Target, Problem> {
    state.targets.get(id_or_name).map_err(|e| match e {
        Error::User { .. } => Problem::from(e).with_status(StatusCode::NOT_FOUND),
        e => Problem::from(e),
    })
}

/// The body of `POST /api/v1/targets`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewTarget {
    name: String,
    kind: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, doc::ConfigValue>)]
    config: BTreeMap<String, serde_json::Value>,
}

/// `POST /api/v1/targets`: 201 and the target, 200 when the same one is there, 409 when one of
/// that name differs.
#[utoipa::path(
    post, path = "/api/v1/targets", operation_id = "createTarget", tag = "targets",
    request_body = NewTarget,
    responses(
        (status = 201, description = "Created", body = doc::Target, headers(("Location" = String, description = "`/api/v1/targets/{id}`"))),
        (status = 200, description = "The same target (kind, description, configuration) was there already", body = doc::Target),
        doc::BodyFailures,
        doc::Refused,
        (status = 409, description = "A target of that name differs", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A name, kind, key or value refused; `errors` names the field", body = Problem, content_type = "application/problem+json"),
        (status = 500, response = doc::ServerError),
    ),
)]
pub(crate) async fn create(State(state): State<AppState>, request: Request) -> Response {
    let result = async {
        let new: NewTarget = body::json(&body::read(&state, request).await?)?;
        state.blocking(move |s| created(s, new)).await
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

fn created(state: &AppState, new: NewTarget) -> Result<Response, Problem> {
    let values = new_config(&new.name, &new.kind, new.config)?;
    let added = add_target(
        &*state.targets,
        builtin(),
        &new.name,
        &new.description,
        &new.kind,
        values,
    )
    .map_err(|e| conflict_or(state, &new.name, e))?;
    Ok(match added {
        Added::Created(target) => (
            StatusCode::CREATED,
            [(header::LOCATION, format!("/api/v1/targets/{}", target.id))],
            Json(target),
        )
            .into_response(),
        Added::Existing(target) => (StatusCode::OK, Json(target)).into_response(),
        other => (StatusCode::OK, Json(other.target().clone())).into_response(),
    })
}

/// The name, kind and configuration of a new target, checked field by field.
pub(crate) fn new_config(
    name: &str,
    kind: &str,
    config: BTreeMap<String, serde_json::Value>,
) -> Result<BTreeMap<String, ConfigValue>, Problem> {
    check_name(name).map_err(|e| Problem::field("name", e.to_string()))?;
    let kind = find_kind(builtin(), kind).map_err(|e| Problem::field("kind", e.to_string()))?;
    for spec in kind.all_keys() {
        if spec.required && spec.default.is_none() && !config.contains_key(spec.key) {
            return Err(Problem::field(
                format!("config.{}", spec.key),
                format!(
                    "missing required key `{}` of kind `{}` ({})",
                    spec.key, kind.name, spec.description
                ),
            ));
        }
    }
    config_values(kind, config)
}

/// Given configuration values as the kind takes them: text (numbers and booleans as written),
/// each key known to the kind and its value accepted; a refusal names `config.KEY`.
pub(crate) fn config_values(
    kind: &KindSchema,
    config: BTreeMap<String, serde_json::Value>,
) -> Result<BTreeMap<String, ConfigValue>, Problem> {
    let mut values = BTreeMap::new();
    for (key, value) in config {
        let field = format!("config.{key}");
        let text = match value {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            _ => {
                return Err(Problem::field(
                    field,
                    "expected text, a number or a boolean",
                ));
            }
        };
        kind.refuse_unknown([key.as_str()])
            .map_err(|e| Problem::field(&field, e.to_string()))?;
        let secret = kind.key(&key).is_some_and(|spec| spec.secret);
        if let Some(spec) = kind.key(&key) {
            spec.check(&text)
                .map_err(|e| Problem::field(&field, e.to_string()))?;
        }
        values.insert(key, ConfigValue::new(&text, secret));
    }
    Ok(values)
}

/// 409 when a target named `name` is there (the error was a conflict with it), else the error.
pub(crate) fn conflict_or(state: &AppState, name: &str, error: Error) -> Problem {
    match (&error, state.targets.get(name)) {
        (Error::User { .. }, Ok(_)) => Problem::from(error).with_status(StatusCode::CONFLICT),
        _ => Problem::from(error),
    }
}

/// The body of `PATCH /api/v1/targets/{id}`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Patch {
    name: Option<String>,
    description: Option<String>,
    #[serde(default)]
    config: ConfigPatch,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ConfigPatch {
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, doc::ConfigValue>)]
    set: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    clear: Vec<String>,
}

/// `PATCH /api/v1/targets/{id}`: 200 and the target as changed.
#[utoipa::path(
    patch, path = "/api/v1/targets/{id}", operation_id = "changeTarget", tag = "targets",
    params(
        ("id" = String, Path, description = "The target's id (`t` and 16 hex digits) or name, in any case"),
    ),
    request_body = Patch,
    responses(
        (status = 200, description = "The target as changed", body = doc::Target),
        doc::BodyFailures,
        doc::Refused,
        (status = 404, description = "No such target", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The new name is another target's", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A name, key or value refused; `errors` names the field", body = Problem, content_type = "application/problem+json"),
        (status = 500, response = doc::ServerError),
    ),
)]
pub(crate) async fn change(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    let result = async {
        let patch: Patch = body::json(&body::read(&state, request).await?)?;
        state.blocking(move |s| changed(s, &id, patch)).await
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

fn changed(state: &AppState, id: &str, patch: Patch) -> Result<Response, Problem> {
    let old = find(state, id)?;
    let kind = find_kind(builtin(), &old.kind).map_err(Problem::from)?;
    if let Some(name) = &patch.name {
        check_name(name).map_err(|e| Problem::field("name", e.to_string()))?;
    }
    let change = TargetChange {
        name: patch.name.clone(),
        description: patch.description,
        set: config_values(kind, patch.config.set)?,
        clear: patch.config.clear,
        config: None,
    };
    let changed = update_target(&*state.targets, builtin(), old.id.as_str(), change)
        .map_err(|e| renamed_conflict(state, &old, patch.name.as_deref(), e))?;
    Ok(Json(changed).into_response())
}

/// 409 when the new name is another target's, else the error.
pub(crate) fn renamed_conflict(
    state: &AppState,
    old: &Target,
    name: Option<&str>,
    error: Error,
) -> Problem {
    let taken = name
        .and_then(|n| state.targets.get(n).ok())
        .is_some_and(|other| other.id != old.id);
    if taken {
        Problem::field("name", error.to_string()).with_status(StatusCode::CONFLICT)
    } else {
        Problem::from(error)
    }
}

/// `DELETE /api/v1/targets/{id}`: 204, or 409 while a nick or a host names it.
#[utoipa::path(
    delete, path = "/api/v1/targets/{id}", operation_id = "removeTarget", tag = "targets",
    params(
        ("id" = String, Path, description = "The target's id (`t` and 16 hex digits) or name, in any case"),
    ),
    responses(
        (status = 204, description = "Removed"),
        doc::Refused,
        (status = 404, description = "No such target", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A nick or an inventory host names the target", body = Problem, content_type = "application/problem+json"),
        doc::StoreFailures,
    ),
)]
pub(crate) async fn remove(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.blocking(move |s| removed(s, &id)).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(problem) => problem.into_response(),
    }
}

/// Removes the target `id_or_name`: 404 when there is none, 409 while a nick or a host names it.
pub(crate) fn removed(state: &AppState, id_or_name: &str) -> Result<Target, Problem> {
    let target = find(state, id_or_name)?;
    let records = state.broker.inventory().list().map_err(Problem::from)?;
    let settings = state.broker.settings();
    remove_target(&*state.targets, target.id.as_str(), settings, &records).map_err(|e| {
        let still_there = state.targets.get(target.id.as_str()).is_ok();
        match e {
            Error::User { .. } if still_there => Problem::from(e).with_status(StatusCode::CONFLICT),
            Error::User { .. } => Problem::from(e).with_status(StatusCode::NOT_FOUND),
            e => Problem::from(e),
        }
    })
}
