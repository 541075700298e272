//! The Foreman API v2 client: Basic auth, Foreman's paging, its error bodies, and transient failures
//! (no answer, a 5xx from Foreman or the proxy in front of it) tried again with backoff. Requests go
//! through [`crate::http`], on its background runtime.

use std::time::Duration;

use broker_core::secrecy::{ExposeSecret, SecretString};
use broker_core::{Error, Result};
use reqwest::Method;
use serde_json::Value as Json;

use crate::http::{Failure, Verify};

/// The page size broker asks for.
pub(crate) const PAGE: usize = 100;

/// Where and how to connect to one Foreman.
#[derive(Debug, Clone)]
pub(crate) struct ConnectOptions {
    pub url: String,
    pub username: String,
    pub password: SecretString,
    pub verify: Verify,
    pub retry: Retry,
}

/// How transient failures are tried again: up to `attempts` more times, waiting `first_delay`,
/// then twice as long each time (at most a minute).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retry {
    pub attempts: u32,
    pub first_delay: Duration,
}

impl Retry {
    /// The wait before try number `n` (0-based) again.
    pub(crate) fn delay(&self, n: u32) -> Duration {
        self.first_delay
            .saturating_mul(2u32.saturating_pow(n))
            .min(Duration::from_secs(60))
    }
}

/// A failed request, before it becomes a broker [`Error`].
#[derive(Debug)]
pub(crate) enum ApiError {
    /// No answer.
    Unanswered(Failure),
    /// An answer with an error status.
    Status {
        status: u16,
        method: String,
        url: String,
        message: String,
    },
    /// An answer that is not the JSON expected.
    Decode { url: String, message: String },
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Unanswered(Failure::Transport { url, message }) => {
                write!(f, "{url} did not answer: {message}")
            }
            ApiError::Unanswered(Failure::ForeignLink { link, origin }) => write!(
                f,
                "refusing to follow `{link}`: it leads away from `{origin}`, the configured \
                 `foreman_url`, and broker sends credentials nowhere else"
            ),
            ApiError::Unanswered(Failure::Task(_)) => write!(f, "the request task failed"),
            ApiError::Status {
                status,
                method,
                url,
                message,
            } => write!(f, "{method} {url} answered {status}: {message}"),
            ApiError::Decode { url, message } => {
                write!(
                    f,
                    "{url} answered something that is not Foreman's JSON: {message}"
                )
            }
        }
    }
}

impl std::error::Error for ApiError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ApiError::Unanswered(Failure::Task(e)) => Some(e),
            _ => None,
        }
    }
}

impl ApiError {
    /// Worth trying again: no answer, or a 5xx.
    pub(crate) fn transient(&self) -> bool {
        match self {
            ApiError::Unanswered(Failure::Transport { .. }) => true,
            ApiError::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// The HTTP status, when there was an answer.
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The broker error, saying what broker was doing: a refused login is an authentication error
    /// (exit code 5), a refused permission a permission error (6), the rest provider errors (7).
    pub(crate) fn into_error(self, doing: &str) -> Error {
        let refused = match &self {
            ApiError::Status {
                status, message, ..
            } => *status == 401 || message.contains("Unable to authenticate user"),
            _ => false,
        };
        if refused {
            return Error::Authentication {
                message: format!(
                    "Foreman refused the login while {doing}; check `foreman_username` and \
                     `foreman_password` of this instance in broker_settings.yaml"
                ),
                source: Some(self.into()),
            };
        }
        match &self {
            ApiError::Status { status: 403, .. } => Error::Permission {
                message: doing.to_owned(),
                source: Some(self.into()),
            },
            ApiError::Unanswered(Failure::Task(_)) => {
                Error::internal(format!("Foreman: {doing}"), self)
            }
            _ => Error::provider(super::NAME, doing).caused_by(self),
        }
    }
}

pub(crate) type ApiResult<T> = std::result::Result<T, ApiError>;

/// Foreman's message in an error body (`error.full_messages`, `error.message`, `message`), the
/// title of an HTML page (a proxy's), or the text.
pub(crate) fn message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let parsed: Option<Json> = serde_json::from_slice(body).ok();
    let texts = |v: &Json| -> Option<String> {
        let items: Vec<&str> = v.as_array()?.iter().filter_map(Json::as_str).collect();
        (!items.is_empty()).then(|| items.join("; "))
    };
    let found = parsed.as_ref().and_then(|v| {
        texts(&v["error"]["full_messages"])
            .or_else(|| v["error"]["message"].as_str().map(str::to_owned))
            .or_else(|| v["message"].as_str().map(str::to_owned))
            .or_else(|| texts(&v["errors"]["base"]))
    });
    let title = || {
        let start = text.find("<title>")? + "<title>".len();
        let end = text[start..].find("</title>")?;
        Some(text[start..start + end].trim().to_owned())
    };
    let out = found
        .or_else(title)
        .unwrap_or_else(|| text.trim().to_owned());
    crate::http::shortened(out)
}

/// A client for one Foreman.
#[derive(Clone)]
pub(crate) struct Api {
    http: reqwest::Client,
    root: reqwest::Url,
    username: String,
    password: SecretString,
    retry: Retry,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("root", &self.root.as_str())
            .field("username", &self.username)
            .finish()
    }
}

impl Api {
    /// A client for `options` (nothing is sent yet).
    pub(crate) fn new(options: &ConnectOptions) -> Result<Api> {
        let root = reqwest::Url::parse(&options.url).map_err(|e| {
            Error::configuration(format!(
                "Foreman `foreman_url: {}` is not a URL; write it as `https://foreman.example.com`",
                options.url
            ))
            .caused_by(e)
        })?;
        Ok(Api {
            http: crate::http::client(super::NAME, &options.verify, Duration::from_secs(120))?,
            root,
            username: options.username.clone(),
            password: options.password.clone(),
            retry: options.retry,
        })
    }

    /// How transient failures are tried again.
    pub(crate) fn retry(&self) -> Retry {
        self.retry
    }

    /// The URL of `/api/SEGMENTS…` (each segment escaped as a path segment).
    fn url(&self, segments: &[&str]) -> reqwest::Url {
        let mut url = self.root.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().push("api").extend(segments);
        }
        url
    }

    /// One request, one answer.
    async fn once(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&Json>,
    ) -> ApiResult<Json> {
        let mut request = self
            .http
            .request(method.clone(), self.url(segments))
            .header(reqwest::header::ACCEPT, "application/json")
            .basic_auth(&self.username, Some(self.password.expose_secret()));
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let (status, body, url) = crate::http::exchange(request)
            .await
            .map_err(ApiError::Unanswered)?;
        crate::http::json_of(status, &body).map_err(|e| match e {
            None => ApiError::Status {
                status,
                method: method.to_string(),
                url,
                message: message(&body),
            },
            Some(e) => ApiError::Decode {
                url,
                message: e.to_string(),
            },
        })
    }

    /// A request that is safe to repeat, tried again while it fails transiently.
    async fn repeated(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> ApiResult<Json> {
        let mut tried = 0;
        loop {
            match self.once(method.clone(), segments, query, None).await {
                Err(e) if e.transient() && tried < self.retry.attempts => {
                    tracing::info!("Foreman: {e}; trying again");
                    tokio::time::sleep(self.retry.delay(tried)).await;
                    tried += 1;
                }
                answer => return answer,
            }
        }
    }

    /// `GET` one object, tried again while it fails transiently.
    pub(crate) async fn get(&self, segments: &[&str]) -> ApiResult<Json> {
        self.repeated(Method::GET, segments, &[]).await
    }

    /// `DELETE` one object, tried again while it fails transiently.
    pub(crate) async fn delete(&self, segments: &[&str]) -> ApiResult<Json> {
        self.repeated(Method::DELETE, segments, &[]).await
    }

    /// `POST` a JSON body, once: a create is not repeated blindly (the caller knows how to find
    /// what a failed answer may have made).
    pub(crate) async fn post(&self, segments: &[&str], body: &Json) -> ApiResult<Json> {
        self.once(Method::POST, segments, &[], Some(body)).await
    }

    /// Every result of a list, page after page, that `search` (Foreman's scoped search) selects.
    pub(crate) async fn all(
        &self,
        segments: &[&str],
        search: Option<&str>,
    ) -> ApiResult<Vec<Json>> {
        let mut out = Vec::new();
        for page in 1.. {
            let mut query = vec![("page", page.to_string()), ("per_page", PAGE.to_string())];
            if let Some(search) = search {
                query.push(("search", search.to_owned()));
            }
            let mut answer = self.repeated(Method::GET, segments, &query).await?;
            let results = match answer.get_mut("results").map(Json::take) {
                Some(Json::Array(items)) => items,
                _ => Vec::new(),
            };
            let expected = answer["subtotal"]
                .as_u64()
                .or_else(|| answer["total"].as_u64())
                .unwrap_or(0) as usize;
            let last = results.len() < PAGE;
            out.extend(results);
            if last || out.len() >= expected {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_come_from_foremans_error_bodies() {
        assert_eq!(
            message(br#"{"error": {"id": null, "errors": {"name": ["has already been taken"]}, "full_messages": ["Name has already been taken"]}}"#),
            "Name has already been taken"
        );
        assert_eq!(
            message(br#"{"error": {"message": "Unable to authenticate user alice"}}"#),
            "Unable to authenticate user alice"
        );
        assert_eq!(
            message(br#"{"message": "Resource host not found by id 'x'"}"#),
            "Resource host not found by id 'x'"
        );
        assert_eq!(
            message(b"<html><head><title>Proxy Error</title></head><body>...</body></html>"),
            "Proxy Error"
        );
        assert_eq!(message(b""), "(no body)");
    }

    #[test]
    fn refusals_map_to_exit_codes() {
        let status = |status: u16, message: &str| ApiError::Status {
            status,
            method: "GET".into(),
            url: "https://foreman.example.com/api/hosts".into(),
            message: message.into(),
        };
        assert_eq!(
            status(401, "Unable to authenticate user alice")
                .into_error("x")
                .exit_code(),
            5
        );
        assert_eq!(status(403, "Access denied").into_error("x").exit_code(), 6);
        assert_eq!(status(404, "not found").into_error("x").exit_code(), 7);
        assert!(status(502, "Proxy Error").transient());
        assert!(!status(422, "Name has already been taken").transient());
        let refused = status(401, "Unable to authenticate user alice").into_error("listing hosts");
        assert_eq!(
            refused.to_string(),
            "authentication failed: Foreman refused the login while listing hosts; check \
             `foreman_username` and `foreman_password` of this instance in broker_settings.yaml"
        );
    }

    #[test]
    fn retries_back_off_up_to_a_minute() {
        let retry = Retry {
            attempts: 9,
            first_delay: Duration::from_secs(1),
        };
        let delays: Vec<u64> = (0..8).map(|n| retry.delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
    }
}
