//! The access log: one line per request at `info` (target `broker::serve::access`) with the method,
//! the path — never the query, which may hold Razor's `json_hash` with secrets —, the status, the
//! time taken and the token's name (never the token).

use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

use crate::tokens::TokenInfo;

/// Logs the request once answered.
pub(crate) async fn log(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let caller = response
        .extensions()
        .get::<TokenInfo>()
        .map_or("-", |c| c.name.as_str());
    tracing::info!(
        target: "broker::serve::access",
        "{method} {path} {} {:.1}ms token={caller}",
        response.status().as_u16(),
        started.elapsed().as_secs_f64() * 1000.0,
    );
    response
}
