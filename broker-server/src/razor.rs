//! Razor's broker routes, for Razor's clients: `GET /broker`, `GET /broker/{uuid}`,
//! `GET /broker/plugins`, `POST /broker`, `PUT /broker/{uuid}`, `DELETE /broker/{uuid}`;
//! `DELETE /broker` (and `/broker/all`) is 405, as in Razor.
//!
//! Input comes as Razor's `json_hash` (a query parameter, or a form field) or as a JSON body:
//! `name`, `plugin` (the handoff kind), `description`, `req_metadata_hash` (the configuration).
//! Answers keep Razor's envelope (`resource`, `command`, `result`, `http_err_code`, `response`)
//! and its `@`-keys, but secrets come back as fingerprints, and a target in use is not removed.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use broker_core::Error;
use broker_core::handoff::schema::{builtin, find_kind};
use broker_core::handoff::{Added, Target, TargetChange, add_target, update_target};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::targets::{config_values, new_config, removed};
use crate::body;
use crate::openapi::schemas as doc;
use crate::problem::Problem;
use crate::state::AppState;

const SLICE: &str = "ProjectRazor::Slice::Broker";

/// A Razor error: its class, `std_err_code` and HTTP status.
#[derive(Debug, Clone, Copy)]
struct Class(&'static str, u16, StatusCode);

const INPUT_ERROR: Class = Class("InputError", 111, StatusCode::BAD_REQUEST);
const MISSING_ARGUMENT: Class = Class("MissingArgument", 114, StatusCode::BAD_REQUEST);
const INVALID_UUID: Class = Class("InvalidUUID", 116, StatusCode::BAD_REQUEST);
const NOT_FOUND: Class = Class("NotFound", 123, StatusCode::NOT_FOUND);
const METHOD_NOT_ALLOWED: Class = Class("MethodNotAllowed", 128, StatusCode::METHOD_NOT_ALLOWED);
const INVALID_METADATA: Class = Class("InvalidBrokerMetadata", 163, StatusCode::BAD_REQUEST);
const CONFLICT: Class = Class("Conflict", 409, StatusCode::CONFLICT);
const COULD_NOT: Class = Class("CouldNotCreate", 125, StatusCode::INTERNAL_SERVER_ERROR);

/// A Razor error answer of `command`.
struct RazorError {
    class: Class,
    message: String,
    command: &'static str,
}

impl RazorError {
    fn new(class: Class, command: &'static str, message: impl Into<String>) -> Self {
        RazorError {
            class,
            message: message.into(),
            command,
        }
    }

    /// A problem of the native API in Razor's words: 404 → `not_found`, 409 → conflict, 422 →
    /// invalid metadata, anything else broker's own failure.
    fn from_problem(problem: Problem, command: &'static str, not_found: Class) -> Self {
        let class = match problem.status_code() {
            StatusCode::NOT_FOUND => not_found,
            StatusCode::CONFLICT => CONFLICT,
            StatusCode::UNPROCESSABLE_ENTITY | StatusCode::BAD_REQUEST => INVALID_METADATA,
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT => {
                Class("InputError", 111, problem.status_code())
            }
            _ => COULD_NOT,
        };
        RazorError::new(class, command, problem.detail)
    }
}

impl IntoResponse for RazorError {
    fn into_response(self) -> Response {
        let Class(name, code, status) = self.class;
        let body = json!({
            "std_err_code": code,
            "err_class": format!("ProjectRazor::Error::Slice::{name}"),
            "result": self.message,
            "http_err_code": status.as_u16(),
            "slice": SLICE,
            "command": self.command,
        });
        (status, Json(body)).into_response()
    }
}

/// A Razor success answer.
fn answer(status: StatusCode, command: &str, result: &str, items: Vec<Value>) -> Response {
    let body = json!({
        "resource": SLICE,
        "command": command,
        "result": result,
        "http_err_code": status.as_u16(),
        "errcode": 0,
        "response": items,
    });
    (status, Json(body)).into_response()
}

fn classname(kind: &str) -> String {
    let mut chars = kind.chars();
    let capital: String = chars
        .next()
        .map(|c| c.to_uppercase().collect())
        .unwrap_or_default();
    format!("ProjectRazor::BrokerPlugin::{capital}{}", chars.as_str())
}

/// A target as Razor shows one item: every `@`-key, secrets as fingerprints.
fn full(target: &Target) -> Value {
    let metadata: serde_json::Map<String, Value> = target
        .config
        .iter()
        .map(|(k, v)| (k.to_owned(), Value::String(v.shown())))
        .collect();
    json!({
        "@uuid": target.id.as_str(),
        "@classname": classname(&target.kind),
        "@noun": "broker",
        "@name": target.name,
        "@user_description": target.description,
        "@plugin": target.kind,
        "@req_metadata_hash": metadata,
        "@uri": format!("/broker/{}", target.id),
    })
}

/// A target as Razor lists several (its stray comma that dropped `@classname` fixed).
fn summary(target: &Target) -> Value {
    json!({
        "@uuid": target.id.as_str(),
        "@classname": classname(&target.kind),
        "@noun": "broker",
        "@name": target.name,
        "@plugin": target.kind,
        "@uri": format!("/broker/{}", target.id),
    })
}

/// `GET /broker[?name=…&plugin=…]`: every target (or those of that name or plugin, in any case).
#[utoipa::path(
    get, path = "/broker", operation_id = "razorList", tag = "razor",
    params(
        ("name" = Option<String>, Query, description = "Only the target of that name, in any case"),
        ("plugin" = Option<String>, Query, description = "Only the targets of that kind"),
    ),
    responses(
        (status = 200, description = "Every target (`get_all_brokers`)", body = doc::RazorTargets),
        (status = 401, response = doc::Unauthorized),
        (status = 500, description = "broker's own failure (`CouldNotCreate`)", body = doc::RazorError),
    ),
)]
pub(crate) async fn list(State(state): State<AppState>, request: Request) -> Response {
    const COMMAND: &str = "get_all_brokers";
    let query = body::query(request.uri());
    let wanted =
        |key: &str, value: &str| query.get(key).is_none_or(|w| w.eq_ignore_ascii_case(value));
    match state.blocking(|s| Ok(s.targets.list())).await {
        Err(problem) => RazorError::from_problem(problem, COMMAND, NOT_FOUND).into_response(),
        Ok(Ok(targets)) => {
            let items = targets
                .iter()
                .filter(|t| wanted("name", &t.name) && wanted("plugin", &t.kind))
                .map(summary)
                .collect();
            answer(StatusCode::OK, COMMAND, "Ok", items)
        }
        Ok(Err(e)) => RazorError::new(COULD_NOT, COMMAND, e.to_string()).into_response(),
    }
}

/// `GET /broker/{uuid}`: by id, or by name in any case.
#[utoipa::path(
    get, path = "/broker/{uuid}", operation_id = "razorShow", tag = "razor",
    params(
        ("uuid" = String, Path, description = "The target's id (`t` and 16 hex digits) or name"),
    ),
    responses(
        (status = 200, description = "The target, whole, secrets as fingerprints (`get_broker_by_uuid`)", body = doc::RazorTargets),
        (status = 401, response = doc::Unauthorized),
        (status = 404, description = "No such target (`NotFound`)", body = doc::RazorError),
        (status = 500, description = "broker's own failure (`CouldNotCreate`)", body = doc::RazorError),
    ),
)]
pub(crate) async fn show(State(state): State<AppState>, Path(uuid): Path<String>) -> Response {
    const COMMAND: &str = "get_broker_by_uuid";
    let key = uuid.clone();
    match state.blocking(move |s| Ok(s.targets.get(&key))).await {
        Err(problem) => RazorError::from_problem(problem, COMMAND, NOT_FOUND).into_response(),
        Ok(Ok(target)) => answer(StatusCode::OK, COMMAND, "Ok", vec![full(&target)]),
        Ok(Err(Error::User { .. })) => {
            RazorError::new(NOT_FOUND, COMMAND, format!("Broker Target UUID: [{uuid}]"))
                .into_response()
        }
        Ok(Err(e)) => RazorError::new(COULD_NOT, COMMAND, e.to_string()).into_response(),
    }
}

/// `GET /broker/plugins`: the handoff kinds.
#[utoipa::path(
    get, path = "/broker/plugins", operation_id = "razorPlugins", tag = "razor",
    responses(
        (status = 200, description = "The handoff kinds (`get_broker_plugins`)", body = doc::RazorPlugins),
        (status = 401, response = doc::Unauthorized),
    ),
)]
pub(crate) async fn plugins() -> Response {
    let items = builtin()
        .iter()
        .map(|k| {
            json!({
                "@plugin": k.name,
                "@classname": classname(k.name),
                "@description": k.description,
            })
        })
        .collect();
    answer(StatusCode::OK, "get_broker_plugins", "Ok", items)
}

/// What Razor's clients send.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RazorInput {
    name: Option<String>,
    plugin: Option<String>,
    description: Option<String>,
    #[schema(value_type = Option<BTreeMap<String, doc::ConfigValue>>)]
    req_metadata_hash: Option<BTreeMap<String, Value>>,
}

/// The input of a `POST`/`PUT`: `json_hash` from the query, else from a form body, else the body
/// as JSON.
async fn input(
    state: &AppState,
    request: Request,
    command: &'static str,
) -> Result<RazorInput, RazorError> {
    let from_query = body::query(request.uri()).remove("json_hash");
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let bytes = body::read(state, request)
        .await
        .map_err(|p| RazorError::from_problem(p, command, INPUT_ERROR))?;
    let text = match from_query {
        Some(text) => text.into_bytes(),
        None if is_form => form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == "json_hash")
            .map(|(_, v)| v.into_owned().into_bytes())
            .unwrap_or_default(),
        None => bytes.to_vec(),
    };
    if text.iter().all(u8::is_ascii_whitespace) {
        return Err(RazorError::new(
            MISSING_ARGUMENT,
            command,
            "Must Provide: [json_hash] (a query parameter, a form field, or a JSON body)",
        ));
    }
    body::json(&text).map_err(|p| {
        let field = p
            .errors
            .first()
            .map(|f| f.field.clone())
            .unwrap_or_default();
        RazorError::new(
            INPUT_ERROR,
            command,
            format!("invalid json_hash at `{field}`: {}", p.detail),
        )
    })
}

/// `POST /broker`: 201 and the target; 200 when the same one is there; 409 when one of that name
/// differs.
#[utoipa::path(
    post, path = "/broker", operation_id = "razorAdd", tag = "razor",
    params(
        ("json_hash" = Option<String>, Query, description = "Razor's input as JSON text: `{\"plugin\", \"name\", \"description\", \"req_metadata_hash\"}`; else a form field of that name, else the JSON body"),
    ),
    request_body(content((RazorInput = "application/json"), (doc::RazorForm = "application/x-www-form-urlencoded")), description = "Razor's input, when the query has no `json_hash`"),
    responses(
        (status = 201, description = "Created (`add_broker`)", body = doc::RazorTargets),
        (status = 200, description = "The same target was there already", body = doc::RazorTargets),
        (status = 400, description = "No input (`MissingArgument`), input that is not JSON of these fields (`InputError`), a value the kind refuses (`InvalidBrokerMetadata`)", body = doc::RazorError),
        doc::Refused,
        (status = 408, description = "The body did not arrive in time (`InputError`)", body = doc::RazorError),
        (status = 409, description = "A target of that name differs", body = doc::RazorError),
        (status = 413, description = "The body is over the limit (`InputError`)", body = doc::RazorError),
        (status = 500, description = "broker's own failure (`CouldNotCreate`)", body = doc::RazorError),
    ),
)]
pub(crate) async fn add(State(state): State<AppState>, request: Request) -> Response {
    const COMMAND: &str = "add_broker";
    let result = async {
        let input = input(&state, request, COMMAND).await?;
        let Some(plugin) = input.plugin else {
            return Err(RazorError::new(
                MISSING_ARGUMENT,
                COMMAND,
                "Must Provide: [The broker plugin to use.]",
            ));
        };
        let name = input.name.unwrap_or_default();
        let description = input.description.unwrap_or_default();
        let values = new_config(&name, &plugin, input.req_metadata_hash.unwrap_or_default())
            .map_err(|p| RazorError::from_problem(p, COMMAND, INPUT_ERROR))?;
        let added = state
            .blocking(move |s| {
                add_target(&*s.targets, builtin(), &name, &description, &plugin, values)
                    .map_err(|e| crate::api::targets::conflict_or(s, &name, e))
            })
            .await
            .map_err(|problem| RazorError::from_problem(problem, COMMAND, INPUT_ERROR))?;
        Ok(match added {
            Added::Created(t) => answer(StatusCode::CREATED, COMMAND, "Created", vec![full(&t)]),
            other => answer(StatusCode::OK, COMMAND, "Ok", vec![full(other.target())]),
        })
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// `PUT /broker/{uuid}`: changes the name, description or configuration keys given; never the
/// plugin. 202 and the target.
#[utoipa::path(
    put, path = "/broker/{uuid}", operation_id = "razorUpdate", tag = "razor",
    params(
        ("uuid" = String, Path, description = "The target's id (`t` and 16 hex digits) or name"),
        ("json_hash" = Option<String>, Query, description = "Razor's input as JSON text: `{\"plugin\", \"name\", \"description\", \"req_metadata_hash\"}`; else a form field of that name, else the JSON body"),
    ),
    request_body(content((RazorInput = "application/json"), (doc::RazorForm = "application/x-www-form-urlencoded")), description = "Razor's input, when the query has no `json_hash`"),
    responses(
        (status = 202, description = "Updated (`update_broker`)", body = doc::RazorTargets),
        (status = 400, description = "No such target (`InvalidUUID`), nothing to change (`MissingArgument`), another plugin or input that is not JSON of these fields (`InputError`), a value refused (`InvalidBrokerMetadata`)", body = doc::RazorError),
        doc::Refused,
        (status = 408, description = "The body did not arrive in time (`InputError`)", body = doc::RazorError),
        (status = 409, description = "The new name is another target's", body = doc::RazorError),
        (status = 413, description = "The body is over the limit (`InputError`)", body = doc::RazorError),
        (status = 500, description = "broker's own failure (`CouldNotCreate`)", body = doc::RazorError),
    ),
)]
pub(crate) async fn update(
    State(state): State<AppState>,
    Path(uuid): Path<String>,
    request: Request,
) -> Response {
    const COMMAND: &str = "update_broker";
    let result = async {
        let input = input(&state, request, COMMAND).await?;
        let changed = state
            .blocking(move |s| Ok(changed(s, &uuid, input)))
            .await
            .map_err(|problem| RazorError::from_problem(problem, COMMAND, INVALID_UUID))??;
        Ok::<_, RazorError>(answer(
            StatusCode::ACCEPTED,
            COMMAND,
            "Updated",
            vec![full(&changed)],
        ))
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// The change a `PUT /broker/{uuid}` asks for, made.
fn changed(state: &AppState, uuid: &str, input: RazorInput) -> Result<Target, RazorError> {
    const COMMAND: &str = "update_broker";
    let old = state.targets.get(uuid).map_err(|_| {
        RazorError::new(
            INVALID_UUID,
            COMMAND,
            format!("Cannot Find Broker Target with UUID: [{uuid}]"),
        )
    })?;
    if input
        .plugin
        .as_ref()
        .is_some_and(|p| !p.eq_ignore_ascii_case(&old.kind))
    {
        return Err(RazorError::new(
            INPUT_ERROR,
            COMMAND,
            format!(
                "the plugin of a broker target cannot change (it is `{}`)",
                old.kind
            ),
        ));
    }
    if input.name.is_none() && input.description.is_none() && input.req_metadata_hash.is_none() {
        return Err(RazorError::new(
            MISSING_ARGUMENT,
            COMMAND,
            "Must provide one option from [:name, :description, :req_metadata_hash].",
        ));
    }
    let kind = find_kind(builtin(), &old.kind)
        .map_err(|e| RazorError::new(COULD_NOT, COMMAND, e.to_string()))?;
    let set = config_values(kind, input.req_metadata_hash.unwrap_or_default())
        .map_err(|p| RazorError::from_problem(p, COMMAND, INVALID_UUID))?;
    let change = TargetChange {
        name: input.name.clone(),
        description: input.description,
        set,
        ..TargetChange::default()
    };
    let changed =
        update_target(&*state.targets, builtin(), old.id.as_str(), change).map_err(|e| {
            let problem =
                crate::api::targets::renamed_conflict(state, &old, input.name.as_deref(), e);
            RazorError::from_problem(problem, COMMAND, INVALID_UUID)
        })?;
    Ok(changed)
}

/// `DELETE /broker/{uuid}`: 202 and the target removed; 409 while a nick or a host names it.
#[utoipa::path(
    delete, path = "/broker/{uuid}", operation_id = "razorRemove", tag = "razor",
    params(
        ("uuid" = String, Path, description = "The target's id (`t` and 16 hex digits) or name"),
    ),
    responses(
        (status = 202, description = "Removed (`remove_broker_by_uuid`)", body = doc::RazorTargets),
        (status = 400, description = "No such target (`InvalidUUID`)", body = doc::RazorError),
        doc::Refused,
        (status = 405, description = "`all`: never over the network (`MethodNotAllowed`)", body = doc::RazorError),
        (status = 409, description = "A nick or an inventory host names the target", body = doc::RazorError),
        (status = 500, description = "broker's own failure (`CouldNotCreate`)", body = doc::RazorError),
    ),
)]
pub(crate) async fn remove(State(state): State<AppState>, Path(uuid): Path<String>) -> Response {
    const COMMAND: &str = "remove_broker_by_uuid";
    if uuid.eq_ignore_ascii_case("all") {
        return remove_all().await;
    }
    let key = uuid.clone();
    match state.blocking(move |s| removed(s, &key)).await {
        Ok(target) => answer(
            StatusCode::ACCEPTED,
            COMMAND,
            "Removed",
            vec![full(&target)],
        ),
        Err(problem) if problem.status_code() == StatusCode::NOT_FOUND => RazorError::new(
            INVALID_UUID,
            COMMAND,
            format!("Cannot Find Broker with UUID: [{uuid}]"),
        )
        .into_response(),
        Err(problem) => RazorError::from_problem(problem, COMMAND, INVALID_UUID).into_response(),
    }
}

/// `DELETE /broker`: never over the network, as in Razor.
#[utoipa::path(
    delete, path = "/broker", operation_id = "razorRemoveAll", tag = "razor",
    responses(
        (status = 405, description = "Cannot remove all Brokers via REST (`MethodNotAllowed`)", body = doc::RazorError, headers(("Allow" = String, description = "`GET, POST`"))),
        (status = 401, response = doc::Unauthorized),
    ),
)]
pub(crate) async fn remove_all() -> Response {
    let mut response = RazorError::new(
        METHOD_NOT_ALLOWED,
        "remove_all_brokers",
        "Cannot remove all Brokers via REST",
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static("GET, POST"));
    response
}
