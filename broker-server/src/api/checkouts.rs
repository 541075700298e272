//! `POST /api/v1/checkouts`: a checkout as an operation (202 and the operation to poll; with
//! `?wait=true`, 200 and the operation once it ended), and `GET /api/v1/operations[/{id}]`.

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use broker_core::CheckoutRequest;
use serde::Deserialize;

use crate::api::hosts::arguments;
use crate::api::operations::{Asked, Operation};
use crate::body;
use crate::openapi::schemas as doc;
use crate::problem::Problem;
use crate::state::AppState;

/// The most hosts one checkout through the API makes: broker's own bound
/// ([`broker_core::CheckoutRequest::MAX_COUNT`]), checked here too so that the problem names `count`.
pub(crate) const MAX_COUNT: usize = broker_core::CheckoutRequest::MAX_COUNT;

/// The body of `POST /api/v1/checkouts`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Checkout {
    nick: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    arguments: serde_json::Map<String, serde_json::Value>,
    /// How many hosts: 1 (the default) to [`MAX_COUNT`].
    #[schema(minimum = 1, maximum = 1000)]
    count: Option<usize>,
    handoff: Option<String>,
    #[serde(default)]
    keep_failed_handoff: bool,
}

/// `POST /api/v1/checkouts[?wait=true]`.
#[utoipa::path(
    post, path = "/api/v1/checkouts", operation_id = "startCheckout", tag = "checkouts",
    params(
        ("wait" = Option<bool>, Query, description = "Answer once the operation has ended"),
    ),
    request_body = Checkout,
    responses(
        (status = 202, description = "The operation, started", body = Operation, headers(("Location" = String, description = "`/api/v1/operations/{id}`"))),
        (status = 200, description = "With `wait`: the operation once it ended (or still running after 10 minutes)", body = Operation),
        doc::BodyFailures,
        doc::Refused,
        (status = 422, description = "Neither a nick nor arguments, or a count of 0 or over 1000 (`errors` names the field)", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn start(State(state): State<AppState>, request: Request) -> Response {
    let result = async {
        let wait = wants_wait(&body::query(request.uri()))?;
        let asked: Checkout = body::json(&body::read(&state, request).await?)?;
        let (summary, checkout) = checkout_request(asked)?;
        let entry = state
            .operations
            .start_checkout(&state.broker, summary, checkout);
        if wait {
            let done = entry.wait(state.options.wait_limit).await;
            return Ok((StatusCode::OK, Json(done)).into_response());
        }
        let doc = entry.snapshot();
        let location = format!("/api/v1/operations/{}", doc.id);
        Ok::<_, Problem>(
            (
                StatusCode::ACCEPTED,
                [(header::LOCATION, location)],
                Json(doc),
            )
                .into_response(),
        )
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

fn wants_wait(query: &std::collections::BTreeMap<String, String>) -> Result<bool, Problem> {
    match query.get("wait").map(String::as_str) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(other) => Err(Problem::field(
            "wait",
            format!("expected true or false, not `{other}`"),
        )
        .with_status(StatusCode::BAD_REQUEST)),
    }
}

fn checkout_request(asked: Checkout) -> Result<(Asked, CheckoutRequest), Problem> {
    if asked.nick.is_none() && asked.arguments.is_empty() {
        return Err(Problem::field(
            "arguments",
            "give a nick or the provider's arguments (e.g. {\"test_action\": \"basic\"})",
        ));
    }
    let count = asked.count.unwrap_or(1);
    if count == 0 {
        return Err(Problem::field("count", "the count must be at least 1"));
    }
    if count > MAX_COUNT {
        return Err(Problem::field(
            "count",
            format!("at most {MAX_COUNT} hosts in one checkout; ask for more in several"),
        ));
    }
    let mut request = CheckoutRequest::new()
        .args(arguments(asked.arguments)?)
        .count(count)
        .keep_failed_handoff(asked.keep_failed_handoff);
    if let Some(nick) = &asked.nick {
        request = request.nick(nick);
    }
    if let Some(target) = &asked.handoff {
        request = request.handoff(target);
    }
    let summary = Asked {
        nick: asked.nick,
        count,
        handoff: asked.handoff,
    };
    Ok((summary, request))
}

/// `GET /api/v1/operations`.
#[utoipa::path(
    get, path = "/api/v1/operations", operation_id = "listOperations", tag = "checkouts",
    responses(
        (status = 200, description = "The operations of this server's run, oldest first", body = Vec<Operation>),
        (status = 401, response = doc::Unauthorized),
    ),
)]
pub(crate) async fn operations(State(state): State<AppState>) -> Response {
    Json(state.operations.list()).into_response()
}

/// `GET /api/v1/operations/{id}[?wait=true]`.
#[utoipa::path(
    get, path = "/api/v1/operations/{id}", operation_id = "showOperation", tag = "checkouts",
    params(
        ("id" = String, Path, description = "The operation's id: `o` and 16 hex digits"),
        ("wait" = Option<bool>, Query, description = "Answer once the operation has ended (at most 10 minutes)"),
    ),
    responses(
        (status = 200, description = "The operation", body = Operation),
        (status = 400, description = "`wait` is not a boolean", body = Problem, content_type = "application/problem+json"),
        (status = 401, response = doc::Unauthorized),
        (status = 404, description = "No such operation", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn operation(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    let Some(entry) = state.operations.get(&id) else {
        return Problem::not_found(format!("operation `{id}`")).into_response();
    };
    match wants_wait(&body::query(request.uri())) {
        Ok(true) => Json(entry.wait(state.options.wait_limit).await).into_response(),
        Ok(false) => Json(entry.snapshot()).into_response(),
        Err(problem) => problem.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asking(count: usize) -> Checkout {
        Checkout {
            nick: None,
            arguments: serde_json::json!({"test_action": "basic"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            count: Some(count),
            handoff: None,
            keep_failed_handoff: false,
        }
    }

    /// A remote client cannot ask for more hosts than one checkout makes: a count of 2^64 - 1 made
    /// the checkout's task panic (a semaphore of that many permits) and left its operation
    /// `running` for ever.
    #[test]
    fn a_count_over_the_limit_is_refused_naming_count() {
        assert!(checkout_request(asking(MAX_COUNT)).is_ok());
        for count in [MAX_COUNT + 1, usize::MAX] {
            let Err(problem) = checkout_request(asking(count)) else {
                panic!("a count of {count} was taken");
            };
            assert_eq!(problem.status, 422);
            assert_eq!(problem.errors[0].field, "count");
            assert_eq!(
                problem.detail,
                format!("at most {MAX_COUNT} hosts in one checkout; ask for more in several")
            );
        }
    }
}
