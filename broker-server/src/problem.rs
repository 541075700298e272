//! RFC 7807 problem documents: what every error of the native API (and every refused token) looks
//! like — `{type, title, status, detail, errors: [{field, message}]}`, as
//! `application/problem+json`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use broker_core::Error;
use serde::{Deserialize, Serialize};

/// One field of a request that was refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldError {
    /// The field, as a dotted path into the request: `config.server`, or a query parameter.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// An error answer (RFC 7807, `application/problem+json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Problem {
    /// Always `about:blank`: the status says what kind of problem it is.
    #[serde(rename = "type")]
    #[schema(pattern = "^about:blank$")]
    pub kind: &'static str,
    /// The status's reason phrase.
    pub title: String,
    /// The HTTP status.
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    /// What went wrong and what to do.
    pub detail: String,
    /// The fields refused, when the problem is in the request.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl Problem {
    /// A problem of `status` saying `detail`.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Problem {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    /// A problem with the field `field` of the request: 422, or `status` when given.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let message = message.into();
        let mut problem = Problem::new(StatusCode::UNPROCESSABLE_ENTITY, message.clone());
        problem.errors.push(FieldError {
            field: field.into(),
            message,
        });
        problem
    }

    /// The same problem with another status.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status.as_u16();
        self.title = status.canonical_reason().unwrap_or("Error").to_owned();
        self
    }

    /// 404 for `what` (`handoff target \`x\``).
    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Problem::new(StatusCode::NOT_FOUND, format!("no {what}"))
    }

    /// The status as a [`StatusCode`].
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// The status an error of broker-core answers with: the caller's mistakes 4xx, a provider's or a
/// timeout 502/504, a busy inventory 503, broker's own failures 500. A configuration error is 422:
/// the settings were read when the server started, so what a request meets is a provider (or an
/// instance) they do not configure — a request this server cannot serve, not its failure.
pub fn status_of(error: &Error) -> StatusCode {
    match error {
        Error::Usage { .. } | Error::Filter(_) => StatusCode::BAD_REQUEST,
        Error::User { .. } | Error::SyncRefused { .. } | Error::Configuration { .. } => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        Error::Provider { .. } | Error::Host { .. } => StatusCode::BAD_GATEWAY,
        Error::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        Error::InventoryLocked { .. } => StatusCode::SERVICE_UNAVAILABLE,
        Error::NotImplemented { .. } => StatusCode::NOT_IMPLEMENTED,
        Error::CheckoutFailed { failures, .. } => failures
            .first()
            .map(|(_, e)| status_of(e))
            .unwrap_or(StatusCode::BAD_GATEWAY),
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<Error> for Problem {
    fn from(error: Error) -> Self {
        Problem::new(status_of(&error), broker_core::error::chain(&error))
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let mut response = (status, axum::Json(self)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_statuses() {
        assert_eq!(status_of(&Error::usage("x")), StatusCode::BAD_REQUEST);
        assert_eq!(
            status_of(&Error::user("x")),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            status_of(&Error::provider("P", "x")),
            StatusCode::BAD_GATEWAY
        );
        let p = Problem::from(Error::user("no such nick"));
        assert_eq!((p.status, p.detail.as_str()), (422, "no such nick"));
        // A provider the server's settings do not configure (found by schemathesis: it was 500).
        assert_eq!(
            status_of(&Error::configuration(
                "AnsibleTower needs `base_url`; set it in broker_settings.yaml"
            )),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        let f = Problem::field("config.server", "bad");
        assert_eq!(f.errors[0].field, "config.server");
        assert_eq!(f.with_status(StatusCode::CONFLICT).title, "Conflict");
    }
}
