//! Who is asking and whether they may: the bearer token of every request but `GET /health`
//! (401 without a valid one), and the role a route needs (403 below it).

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::problem::Problem;
use crate::state::AppState;
use crate::tokens::{Role, TokenInfo};

/// The path that answers without a token.
pub(crate) const HEALTH: &str = "/health";

/// Checks the request's bearer token; the caller it names goes into the request's (and the
/// response's, for the access log) extensions.
pub(crate) async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    if request.uri().path() == HEALTH {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    let tokens = state.tokens.current();
    let Some(caller) = presented.and_then(|token| tokens.verify(token)).cloned() else {
        let detail = if presented.is_some() {
            "the bearer token is not valid; ask an admin for one (`broker serve token add`)"
        } else {
            "this route needs `Authorization: Bearer TOKEN`; make one with `broker serve token add`"
        };
        let mut response = Problem::new(StatusCode::UNAUTHORIZED, detail).into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    };
    request.extensions_mut().insert(caller.clone());
    let mut response = next.run(request).await;
    response.extensions_mut().insert(caller);
    response
}

/// The token of an `Authorization: Bearer TOKEN` header value (the scheme in any case).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Refuses a caller whose role is below `needed` with 403.
pub(crate) async fn require(State(needed): State<Role>, request: Request, next: Next) -> Response {
    let role = request.extensions().get::<TokenInfo>().map(|c| c.role);
    match role {
        Some(role) if role >= needed => next.run(request).await,
        Some(role) => Problem::new(
            StatusCode::FORBIDDEN,
            format!("this needs a token of role {needed} or above; this one's role is {role}"),
        )
        .into_response(),
        None => Problem::new(StatusCode::UNAUTHORIZED, "no bearer token").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_read_in_any_case() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer"), None);
    }
}
