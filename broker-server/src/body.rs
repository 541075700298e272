//! Request bodies and queries: read within the size limit and the body timeout, parsed as JSON
//! naming the field that did not fit.

use std::collections::BTreeMap;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use crate::problem::Problem;
use crate::state::AppState;

/// The whole body of a request, at most the server's body limit (413 beyond it), sent within its
/// body timeout (408 after it).
pub(crate) async fn read(
    state: &AppState,
    request: axum::extract::Request,
) -> Result<Bytes, Problem> {
    let limit = state.options.body_limit;
    let too_large = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {limit} bytes"),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let body: Body = request.into_body();
    match tokio::time::timeout(
        state.options.body_timeout,
        axum::body::to_bytes(body, limit),
    )
    .await
    {
        Err(_) => Err(Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive in time",
        )),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            let over = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.into_inner().is::<http_body_util::LengthLimitError>();
            if over {
                Err(too_large())
            } else {
                Err(Problem::new(
                    StatusCode::BAD_REQUEST,
                    "the request body could not be read",
                ))
            }
        }
    }
}

/// The request's body read as [`json`], or `T::default()` when it is empty (a POST with nothing to
/// say).
pub(crate) async fn json_or_default<T: DeserializeOwned + Default>(
    state: &AppState,
    request: axum::extract::Request,
) -> Result<T, Problem> {
    let bytes = read(state, request).await?;
    if bytes.is_empty() {
        Ok(T::default())
    } else {
        json(&bytes)
    }
}

/// `bytes` as JSON of type `T`; a body that does not fit names the field (`config.server`) and
/// what was expected.
pub(crate) fn json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let message = e.inner().to_string();
        let path = e.path().to_string();
        // serde names a missing field only in its message; the path stops at its parent.
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next());
        let field = match (path.as_str(), missing) {
            (".", Some(name)) => name.to_owned(),
            (_, Some(name)) => format!("{path}.{name}"),
            (".", None) => "body".to_owned(),
            (_, None) => path,
        };
        Problem::field(field, message).with_status(StatusCode::BAD_REQUEST)
    })?;
    de.end()
        .map_err(|e| Problem::field("body", e.to_string()).with_status(StatusCode::BAD_REQUEST))?;
    Ok(value)
}

/// The query parameters of `uri`, the last of each name winning.
pub(crate) fn query(uri: &axum::http::Uri) -> BTreeMap<String, String> {
    form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}
