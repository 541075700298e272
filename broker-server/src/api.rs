//! The routes: `GET /health` (no token), Razor's `/broker` routes ([`crate::razor`]) and the native
//! API under `/api/v1`, each behind the role it needs.
//!
//! | Role | Routes |
//! |---|---|
//! | read | every `GET` (kinds, targets, hosts and their handoffs, providers and their queries, operations, Razor's `GET /broker…`); `DELETE /broker` (405) |
//! | write | check out (`POST /api/v1/checkouts`), check in (`DELETE /api/v1/hosts/{id}`), extend, hand off |
//! | admin | create, change and remove targets (native and Razor's); `GET /api/v1/tokens` |
//!
//! Targets are admin's: a target's configuration says what runs where — an `ansible` target runs
//! `ansible-playbook` on the server's machine with the variables it is given, a `puppet` target's
//! `ca_clean_command` runs there as it is written — so who may change targets may run commands as
//! the server's user. A write token may hand hosts to the targets there are.

pub(crate) mod checkouts;
pub(crate) mod hosts;
pub mod operations;
pub(crate) mod providers;
pub(crate) mod targets;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};

use crate::auth::{HEALTH, authenticate, require};
use crate::openapi::schemas as doc;
use crate::problem::Problem;
use crate::razor;
use crate::state::AppState;
use crate::tokens::Role;

/// Every route, with authentication, roles and the access log.
pub(crate) fn router(state: AppState) -> Router {
    routes()
        .layer(from_fn_with_state(state.clone(), authenticate))
        .layer(from_fn(crate::access::log))
        .with_state(state)
}

/// Every route and the role it needs, before authentication (which [`router`] adds).
pub(crate) fn routes() -> Router<AppState> {
    let read = Router::new()
        .route("/api/v1/kinds", get(targets::kinds))
        .route("/api/v1/kinds/{name}", get(targets::kind))
        .route("/api/v1/targets", get(targets::list))
        .route("/api/v1/targets/{id}", get(targets::show))
        .route("/api/v1/hosts", get(hosts::list))
        .route("/api/v1/hosts/{id}", get(hosts::show))
        .route("/api/v1/hosts/{id}/handoff", get(hosts::handoff_status))
        .route("/api/v1/providers", get(providers::list))
        .route("/api/v1/providers/{name}", get(providers::query))
        .route("/api/v1/operations", get(checkouts::operations))
        .route("/api/v1/operations/{id}", get(checkouts::operation))
        .route(crate::openapi::PATH, get(crate::openapi::openapi))
        .route("/broker", get(razor::list).delete(razor::remove_all))
        .route("/broker/plugins", get(razor::plugins))
        .route("/broker/{uuid}", get(razor::show))
        .route_layer(from_fn_with_state(Role::Read, require));
    let write = Router::new()
        .route("/api/v1/hosts/{id}", delete(hosts::checkin))
        .route("/api/v1/hosts/{id}/extend", post(hosts::extend))
        .route("/api/v1/hosts/{id}/handoff", post(hosts::handoff_run))
        .route("/api/v1/checkouts", post(checkouts::start))
        .route_layer(from_fn_with_state(Role::Write, require));
    let admin = Router::new()
        .route("/api/v1/targets", post(targets::create))
        .route(
            "/api/v1/targets/{id}",
            axum::routing::patch(targets::change).delete(targets::remove),
        )
        .route("/broker", post(razor::add))
        .route("/broker/{uuid}", put(razor::update).delete(razor::remove))
        .route("/api/v1/tokens", get(tokens))
        .route_layer(from_fn_with_state(Role::Admin, require));
    Router::new()
        .route(HEALTH, get(health))
        .merge(read)
        .merge(write)
        .merge(admin)
        .fallback(not_found)
}

/// `GET /health`: 200 `{"status": "ok"}`, without a token.
#[utoipa::path(
    get, path = "/health", operation_id = "health", tag = "server",
    responses(
        (status = 200, description = "The server answers", body = doc::Health),
    ),
    security(()),
)]
pub(crate) async fn health() -> Response {
    Json(serde_json::json!({"status": "ok"})).into_response()
}

/// `GET /api/v1/tokens` (admin): the tokens' names and roles.
#[utoipa::path(
    get, path = "/api/v1/tokens", operation_id = "listTokens", tag = "server",
    responses(
        (status = 200, description = "The tokens' names and roles, never their hashes", body = Vec<crate::tokens::TokenInfo>),
        doc::Refused,
    ),
)]
pub(crate) async fn tokens(State(state): State<AppState>) -> Response {
    Json(state.tokens.current().list()).into_response()
}

async fn not_found() -> Response {
    Problem::new(StatusCode::NOT_FOUND, "no such route; see docs/serve.md").into_response()
}
