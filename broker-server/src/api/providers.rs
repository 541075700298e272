//! `/api/v1/providers`: the providers compiled in (with the instances the settings configure), and
//! a provider's discovery queries (`broker providers NAME --flag`), the flags given as query
//! parameters.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use broker_core::query::{ProviderQuery, provider_summaries};
use broker_core::{Error, value::to_json};

use crate::body;
use crate::openapi::schemas as doc;
use crate::problem::Problem;
use crate::state::AppState;

/// `GET /api/v1/providers`.
#[utoipa::path(
    get, path = "/api/v1/providers", operation_id = "listProviders", tag = "providers",
    responses(
        (status = 200, description = "The providers compiled in", body = Vec<doc::ProviderSummary>),
        (status = 401, response = doc::Unauthorized),
    ),
)]
pub(crate) async fn list(State(state): State<AppState>) -> Response {
    let broker = &state.broker;
    Json(provider_summaries(broker.registry(), broker.settings())).into_response()
}

/// `GET /api/v1/providers/{name}?FLAG[=VALUE]&…[&results_filter=EXPR][&results_limit=N]`: the
/// provider's answer to a discovery query; `?{name}=INSTANCE` picks the instance.
#[utoipa::path(
    get, path = "/api/v1/providers/{name}", operation_id = "queryProvider", tag = "providers",
    params(
        ("name" = String, Path, description = "The provider: `TestProvider`, `AnsibleTower`, …"),
        ("results_filter" = Option<String>, Query, description = "Narrows the answer (the filter language)"),
        ("results_limit" = Option<u32>, Query, description = "At most this many results"),
    ),
    responses(
        (status = 200, description = "The provider's answer (its shape is the provider's)", body = serde_json::Value),
        (status = 400, description = "A flag the provider does not answer (`errors` names `query`), a bad `results_filter` or `results_limit`", body = Problem, content_type = "application/problem+json"),
        (status = 401, response = doc::Unauthorized),
        (status = 404, description = "No such provider", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The provider refuses the query", body = Problem, content_type = "application/problem+json"),
        doc::ProviderFailures,
        (status = 501, description = "The provider has no such query", body = Problem, content_type = "application/problem+json"),
    ),
    description = "Every other query parameter is a flag of `broker providers NAME`: `?workflows`, `?workflow=deploy-rhel`; `?{name}=INSTANCE` picks the instance.",
)]
pub(crate) async fn query(
    State(state): State<AppState>,
    Path(name): Path<String>,
    uri: Uri,
) -> Response {
    let result = async {
        let kind = *state
            .broker
            .registry()
            .require(&name)
            .map_err(|e| Problem::from(e).with_status(StatusCode::NOT_FOUND))?;
        let mut params = body::query(&uri);
        let filter = params.remove("results_filter");
        let limit = match params.remove("results_limit") {
            Some(text) => Some(text.parse::<usize>().map_err(|_| {
                Problem::field("results_limit", "expected a whole number")
                    .with_status(StatusCode::BAD_REQUEST)
            })?),
            None => None,
        };
        let tokens: Vec<String> = params
            .into_iter()
            .map(|(k, v)| {
                if v.is_empty() {
                    format!("--{k}")
                } else {
                    format!("--{k}={v}")
                }
            })
            .collect();
        let query = ProviderQuery::parse(&kind, &tokens)
            .map_err(|e| {
                Problem::field("query", e.to_string()).with_status(StatusCode::BAD_REQUEST)
            })?
            .results_filter(filter)
            .results_limit(limit);
        let mut answer = state
            .broker
            .provider_help(query.provider(), query.instance(), &query.arguments())
            .await
            .map_err(Problem::from)?;
        query.trim(&mut answer).map_err(|e| match e {
            Error::Filter(_) => {
                Problem::field("results_filter", e.to_string()).with_status(StatusCode::BAD_REQUEST)
            }
            e => Problem::from(e),
        })?;
        Ok::<_, Problem>(Json(to_json(&answer)).into_response())
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}
