//! The Beaker hub client: XML-RPC calls (`/RPC2`) and HTTP requests, both carrying the session
//! cookie (`beaker_auth_token`) a password login gave, logging in again once when the hub has
//! forgotten the session.
//!
//! The provider keeps the session — a secret, plain data — across its calls, but no connection:
//! each call of the provider makes a client of its own ([`Hub::new`]) on the runtime that runs it,
//! so a host guard's check-in on broker's drop worker never waits on a runtime that is gone.

use std::sync::Mutex;
use std::time::Duration;

use broker_core::secrecy::{ExposeSecret, SecretString};
use broker_core::sync::lock;
use broker_core::{Error, Result};
use serde_json::{Value as Json, json};

use super::xmlrpc::{self, Answer};

/// Where the hub is and who logs in.
pub(crate) struct HubConfig {
    /// The hub's root, without a trailing slash.
    pub url: String,
    pub username: String,
    pub password: SecretString,
    pub timeout: Duration,
}

impl std::fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubConfig")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// The session cookie's value, shared by the calls of one provider.
pub(crate) type SessionSlot = Mutex<Option<SecretString>>;

/// A failed exchange with the hub, before it becomes a broker [`Error`].
#[derive(Debug)]
pub(crate) enum HubError {
    /// No answer: refused, reset, timed out.
    Transport { url: String, message: String },
    /// An HTTP error status.
    Status {
        status: u16,
        what: String,
        body: String,
    },
    /// An XML-RPC fault.
    Fault { method: String, message: String },
    /// An answer that is not what the hub sends.
    Decode { what: String, message: String },
    /// The hub refused the login.
    Login { message: String },
}

impl std::fmt::Display for HubError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HubError::Transport { url, message } => write!(f, "{url} did not answer: {message}"),
            HubError::Status { status, what, body } => {
                write!(f, "{what} answered {status}: {body}")
            }
            HubError::Fault { method, message } => write!(f, "{method}: {message}"),
            HubError::Decode { what, message } => {
                write!(
                    f,
                    "{what} answered something that is not Beaker's: {message}"
                )
            }
            HubError::Login { message } => write!(f, "the hub refused the login: {message}"),
        }
    }
}

impl std::error::Error for HubError {}

pub(crate) type HubResult<T> = std::result::Result<T, HubError>;

impl HubError {
    /// Worth asking again while waiting for a job: no answer, or a 5xx.
    pub(crate) fn transient(&self) -> bool {
        match self {
            HubError::Transport { .. } => true,
            HubError::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// The hub's message of a fault (or an error status), for deciding what it means.
    pub(crate) fn hub_message(&self) -> Option<&str> {
        match self {
            HubError::Fault { message, .. } => Some(message),
            HubError::Status { body, .. } => Some(body),
            _ => None,
        }
    }

    /// The HTTP status, when there was one.
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            HubError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The broker error, saying what broker was doing.
    pub(crate) fn into_error(self, doing: &str) -> Error {
        match &self {
            HubError::Login { .. } | HubError::Status { status: 401, .. } => {
                Error::Authentication {
                    message: format!(
                        "Beaker refused the login while {doing}; check `username` and `password` in the \
                     Beaker section of broker_settings.yaml"
                    ),
                    source: Some(self.into()),
                }
            }
            HubError::Status { status: 403, .. } => Error::Permission {
                message: doing.to_owned(),
                source: Some(self.into()),
            },
            _ => Error::provider(super::NAME, doing).caused_by(self),
        }
    }
}

/// The text of a fault without the exception class the hub puts first
/// (`<class 'bkr.common.bexceptions.BX'>:Invalid J:9` → `Invalid J:9`).
pub(crate) fn fault_text(message: &str) -> &str {
    match message.split_once("'>:") {
        Some((class, rest)) if class.starts_with("<class '") => rest.trim(),
        _ => message.trim(),
    }
}

/// Whether a fault says the call was made without a (valid) session.
fn is_identity_failure(message: &str) -> bool {
    message.contains("IdentityFailure") || message.contains("Anonymous access denied")
}

/// An error and its causes in one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    std::iter::successors(Some(e), |e| e.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

/// A client of the hub for one call of the provider.
pub(crate) struct Hub<'a> {
    http: reqwest::Client,
    config: &'a HubConfig,
    session: &'a SessionSlot,
}

impl<'a> Hub<'a> {
    /// A client on the runtime that makes it.
    ///
    /// # Errors
    /// The HTTP client cannot be built (its TLS set-up failed).
    pub(crate) fn new(config: &'a HubConfig, session: &'a SessionSlot) -> Result<Hub<'a>> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::provider(super::NAME, "building the HTTP client").caused_by(e))?;
        Ok(Hub {
            http,
            config,
            session,
        })
    }

    /// The user broker logs in as.
    pub(crate) fn username(&self) -> &str {
        &self.config.username
    }

    /// Calls `method` with `params`, logging in first when there is no session yet, and again
    /// once when the hub has forgotten it.
    pub(crate) async fn call(&self, method: &str, params: &[Json]) -> HubResult<Json> {
        let session = self.session().await?;
        let answer = match self.rpc(method, params, Some(&session)).await? {
            Answer::Fault(f) if is_identity_failure(&f) => {
                let renewed = self.login_again(&session).await?;
                self.rpc(method, params, Some(&renewed)).await?
            }
            answer => answer,
        };
        match answer {
            Answer::Value(v) => Ok(v),
            Answer::Fault(message) => Err(HubError::Fault {
                method: method.to_owned(),
                message: fault_text(&message).to_owned(),
            }),
        }
    }

    /// One XML-RPC exchange.
    async fn rpc(
        &self,
        method: &str,
        params: &[Json],
        session: Option<&SecretString>,
    ) -> HubResult<Answer> {
        let url = format!("{}/RPC2", self.config.url);
        let request = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "text/xml")
            .body(xmlrpc::call(method, params));
        let (status, body, _) = self.exchange(request, session, &url).await?;
        let what = format!("XML-RPC {method} at {url}");
        if status != 200 {
            return Err(HubError::Status {
                status,
                what,
                body: shortened(&body),
            });
        }
        xmlrpc::answer(&body).map_err(|message| HubError::Decode { what, message })
    }

    /// Sends a request with the session cookie; the status, the body and the cookie it set.
    async fn exchange(
        &self,
        mut request: reqwest::RequestBuilder,
        session: Option<&SecretString>,
        url: &str,
    ) -> HubResult<(u16, String, Option<SecretString>)> {
        if let Some(token) = session {
            request = request.header(
                reqwest::header::COOKIE,
                format!("beaker_auth_token={}", token.expose_secret()),
            );
        }
        let transport = |e: reqwest::Error| HubError::Transport {
            url: url.to_owned(),
            message: chain(&e),
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let cookie = response
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| {
                let pair = v.split(';').next()?.trim();
                pair.strip_prefix("beaker_auth_token=").map(str::to_owned)
            })
            .filter(|token| !token.is_empty() && token != "deleted")
            .map(SecretString::from);
        let body = response.text().await.map_err(transport)?;
        Ok((status, body, cookie))
    }

    /// The session, logging in when there is none.
    async fn session(&self) -> HubResult<SecretString> {
        let known = lock(self.session).clone();
        match known {
            Some(token) => Ok(token),
            None => self.login().await,
        }
    }

    /// Logs in again unless another call already did since `stale` was refused.
    async fn login_again(&self, stale: &SecretString) -> HubResult<SecretString> {
        let current = lock(self.session).clone();
        match current {
            Some(token) if token.expose_secret() != stale.expose_secret() => Ok(token),
            _ => {
                tracing::info!("the Beaker hub forgot the session; logging in again");
                self.login().await
            }
        }
    }

    /// `auth.login_password`: a new session, kept for the provider's later calls.
    async fn login(&self) -> HubResult<SecretString> {
        let url = format!("{}/RPC2", self.config.url);
        let params = [
            json!(self.config.username),
            json!(self.config.password.expose_secret()),
            Json::Null,
        ];
        let request = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "text/xml")
            .body(xmlrpc::call("auth.login_password", &params));
        let (status, body, cookie) = self.exchange(request, None, &url).await?;
        let what = format!("the login at {url}");
        if status != 200 {
            return Err(HubError::Status {
                status,
                what,
                body: shortened(&body),
            });
        }
        match xmlrpc::answer(&body).map_err(|message| HubError::Decode {
            what: what.clone(),
            message,
        })? {
            Answer::Fault(message) => Err(HubError::Login {
                message: fault_text(&message).to_owned(),
            }),
            Answer::Value(_) => {
                let token = cookie.ok_or_else(|| HubError::Decode {
                    what,
                    message: "a login without a beaker_auth_token cookie".into(),
                })?;
                *lock(self.session) = Some(token.clone());
                tracing::debug!(user = %self.config.username, "logged in to the Beaker hub");
                Ok(token)
            }
        }
    }

    /// `GET path` (relative to the hub) as JSON, logged in.
    pub(crate) async fn get_json(&self, path: &str) -> HubResult<Json> {
        let body = self.http_request(reqwest::Method::GET, path, None).await?;
        serde_json::from_str(&body).map_err(|e| HubError::Decode {
            what: format!("GET {}/{path}", self.config.url),
            message: e.to_string(),
        })
    }

    /// A request of `path` (relative to the hub), logged in (again, once, on a 401); its body.
    pub(crate) async fn http_request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Json>,
    ) -> HubResult<String> {
        let url = format!("{}/{path}", self.config.url);
        let session = self.session().await?;
        let (mut status, mut text, _) = self.send_http(&method, &url, body, &session).await?;
        if status == 401 {
            let renewed = self.login_again(&session).await?;
            (status, text, _) = self.send_http(&method, &url, body, &renewed).await?;
        }
        if (200..300).contains(&status) {
            Ok(text)
        } else {
            Err(HubError::Status {
                status,
                what: format!("{method} {url}"),
                body: shortened(&text),
            })
        }
    }
}

impl Hub<'_> {
    async fn send_http(
        &self,
        method: &reqwest::Method,
        url: &str,
        body: Option<&Json>,
        session: &SecretString,
    ) -> HubResult<(u16, String, Option<SecretString>)> {
        let mut request = self
            .http
            .request(method.clone(), url)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(b) = body {
            request = request.json(b);
        }
        self.exchange(request, Some(session), url).await
    }
}

/// An answer's body, short enough for a message.
fn shortened(body: &str) -> String {
    let text = body.trim();
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None if text.is_empty() => "(no body)".into(),
        None => text.to_owned(),
    }
}
