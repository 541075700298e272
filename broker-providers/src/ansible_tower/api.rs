//! The AWX / AAP REST client: base-path detection, authentication, temporary tokens, pagination and
//! error mapping. Requests go through [`crate::http`], on its background runtime.

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use broker_core::secrecy::{ExposeSecret, SecretString};
use broker_core::{Error, Result};
use reqwest::Method;
use serde_json::{Value as Json, json};

pub(crate) use crate::http::Verify;
use crate::http::{Failure, io, origin_text, same_origin};

/// Largest page AWX grants (`MAX_PAGE_SIZE`).
pub(crate) const PAGE_SIZE: usize = 200;

/// What the settings say about credentials.
pub(crate) enum Credentials {
    Token(SecretString),
    Password {
        username: String,
        password: SecretString,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Token(_) => f.write_str("Token(***)"),
            Credentials::Password { username, .. } => {
                write!(f, "Password {{ username: {username:?}, password: *** }}")
            }
        }
    }
}

/// How requests are authenticated once connected.
enum Auth {
    Bearer(SecretString),
    Temporary(Arc<TempToken>),
    Basic {
        username: String,
        password: SecretString,
    },
}

impl Auth {
    fn apply(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Auth::Bearer(token) => request.bearer_auth(token.expose_secret()),
            Auth::Temporary(t) => request.bearer_auth(t.token.expose_secret()),
            Auth::Basic { username, password } => {
                request.basic_auth(username, Some(password.expose_secret()))
            }
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Auth::Bearer(_) => "token",
            Auth::Temporary(_) => "temporary token",
            Auth::Basic { .. } => "password",
        }
    }
}

/// A failed request, before it becomes a broker [`Error`].
#[derive(Debug)]
pub(crate) enum ApiError {
    /// No answer: refused, reset, timed out.
    Transport { url: String, message: String },
    /// An answer with an error status.
    Status {
        status: u16,
        method: String,
        url: String,
        detail: String,
    },
    /// An answer that is not the JSON expected.
    Decode { url: String, message: String },
    /// A link (`next`, a `related` link, a redirect) to another origin than `base_url`'s: broker
    /// sends its credentials to the configured origin only, so it does not follow it.
    ForeignLink { link: String, origin: String },
    /// The task that ran the request on the provider's I/O runtime panicked or was cancelled:
    /// broker's own failure, not the server's.
    Task(tokio::task::JoinError),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Transport { url, message } => write!(f, "{url} did not answer: {message}"),
            ApiError::Status {
                status,
                method,
                url,
                detail,
            } => write!(f, "{method} {url} answered {status}: {detail}"),
            ApiError::Decode { url, message } => {
                write!(
                    f,
                    "{url} answered something that is not AWX's JSON: {message}"
                )
            }
            ApiError::ForeignLink { link, origin } => write!(
                f,
                "refusing to follow `{link}`: it leads away from `{origin}`, the configured \
                 `base_url`, and broker sends credentials nowhere else; if the server is meant to be \
                 reached at that address, set `base_url` to it"
            ),
            ApiError::Task(_) => write!(f, "the request task failed"),
        }
    }
}

impl std::error::Error for ApiError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ApiError::Task(e) => Some(e),
            _ => None,
        }
    }
}

impl ApiError {
    /// Worth riding out while a job runs: no answer, a 5xx, or a 403 blip.
    pub(crate) fn transient(&self) -> bool {
        match self {
            ApiError::Transport { .. } => true,
            ApiError::Status { status, .. } => *status >= 500 || *status == 403,
            ApiError::Decode { .. } | ApiError::ForeignLink { .. } | ApiError::Task(_) => false,
        }
    }

    /// The HTTP status, when there was an answer.
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The broker error, saying what broker was doing.
    pub(crate) fn into_error(self, doing: &str) -> Error {
        match &self {
            ApiError::Status { status: 401, .. } => Error::Authentication {
                message: format!(
                    "AnsibleTower refused the credentials while {doing}; check `token`, or \
                     `username` and `password`, of this instance in broker_settings.yaml"
                ),
                source: Some(self.into()),
            },
            ApiError::Status { status: 403, .. } => Error::Permission {
                message: doing.to_owned(),
                source: Some(self.into()),
            },
            ApiError::Task(_) => Error::internal(format!("AnsibleTower: {doing}"), self),
            _ => Error::provider(super::NAME, doing).caused_by(self),
        }
    }
}

pub(crate) type ApiResult<T> = std::result::Result<T, ApiError>;

/// Sends a request on the I/O runtime and reads the whole answer.
async fn exchange(request: reqwest::RequestBuilder) -> ApiResult<(u16, bytes::Bytes, String)> {
    crate::http::exchange(request).await.map_err(ApiError::from)
}

impl From<Failure> for ApiError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Transport { url, message } => ApiError::Transport { url, message },
            Failure::ForeignLink { link, origin } => ApiError::ForeignLink { link, origin },
            Failure::Task(e) => ApiError::Task(e),
        }
    }
}

/// The readable part of an AWX error body: `detail`, the first field error, or the text.
fn detail(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let parsed: Option<Json> = serde_json::from_slice(body).ok();
    let found = parsed.as_ref().and_then(|v| {
        if let Some(d) = v.get("detail").and_then(Json::as_str) {
            return Some(d.to_owned());
        }
        let map = v.as_object()?;
        let (field, errors) = map.iter().next()?;
        let first = match errors {
            Json::Array(items) => items.first().map(json_text).unwrap_or_default(),
            other => json_text(other),
        };
        Some(if field == "__all__" {
            first
        } else {
            format!("{field}: {first}")
        })
    });
    let out = found.unwrap_or_else(|| text.trim().to_owned());
    crate::http::shortened(out)
}

pub(crate) fn json_text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        Json::Null => String::new(),
        other => other.to_string(),
    }
}

/// A connected client for one AWX / AAP instance.
pub(crate) struct Api {
    http: reqwest::Client,
    root: String,
    /// `root` parsed: requests go to its origin only.
    root_url: reqwest::Url,
    base: String,
    aap25: bool,
    auth: Auth,
    username: String,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("root", &self.root)
            .field("base", &self.base)
            .field("auth", &self.auth.kind())
            .field("username", &self.username)
            .finish()
    }
}

/// Connection settings of one instance.
#[derive(Debug)]
pub(crate) struct ConnectOptions {
    pub base_url: String,
    pub credentials: Credentials,
    pub aap_version: Option<String>,
    pub verify: Verify,
    pub request_timeout: Duration,
}

impl Api {
    /// Connects: finds the API's base path, authenticates (creating a temporary token for a
    /// password login) and learns the user's name.
    pub(crate) async fn connect(options: &ConnectOptions) -> Result<Api> {
        let http = client(&options.verify, options.request_timeout)?;
        let root = options.base_url.trim_end_matches('/').to_owned();
        let root_url = reqwest::Url::parse(&root).map_err(|e| {
            Error::configuration(format!(
                "AnsibleTower `base_url: {root}` is not a URL; write it as `https://tower.example.com/`"
            ))
            .caused_by(e)
        })?;
        let (base, aap25) = detect_base(&http, &root, options.aap_version.as_deref()).await?;
        tracing::debug!(%root, %base, "AnsibleTower API located");
        let auth = match &options.credentials {
            Credentials::Token(token) => Auth::Bearer(token.clone()),
            Credentials::Password { username, password } => {
                password_auth(&http, &root, &base, username, password).await?
            }
        };
        let mut api = Api {
            http,
            root,
            root_url,
            base,
            aap25,
            auth,
            username: String::new(),
        };
        let me = api
            .get("me/", &[])
            .await
            .map_err(|e| e.into_error("checking the login (GET me/)"))?;
        api.username = me
            .pointer("/results/0/username")
            .and_then(Json::as_str)
            .map(str::to_owned)
            .or_else(|| match &options.credentials {
                Credentials::Password { username, .. } => Some(username.clone()),
                Credentials::Token(_) => None,
            })
            .unwrap_or_default();
        tracing::debug!(user = %api.username, auth = api.auth.kind(), "logged in to AnsibleTower");
        // As the Python broker reports it: a password login is `password`, temporary token or not.
        let auth_type = match api.auth {
            Auth::Bearer(_) => "token",
            Auth::Temporary(_) | Auth::Basic { .. } => "password",
        };
        tracing::debug!(target: broker_core::report::TARGET, auth_type, "AnsibleTower login");
        Ok(api)
    }

    /// The logged-in user.
    pub(crate) fn username(&self) -> &str {
        &self.username
    }

    /// The web UI's address of a job: `kind` is `workflow` or `playbook`.
    pub(crate) fn ui_url(&self, kind: &str, id: u64) -> String {
        let prefix = if self.aap25 { "execution" } else { "#" };
        format!("{}/{prefix}/jobs/{kind}/{id}/output", self.root)
    }

    /// A full URL from a path relative to the API base (`inventories/`), an absolute path
    /// (`/api/v2/jobs/4/`, as `related` links and `next` give them) or a full URL.
    pub(crate) fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else if path.starts_with('/') {
            format!("{}{path}", self.root)
        } else {
            format!("{}{}{path}", self.root, self.base)
        }
    }

    /// The URL a request for `path` goes to, refused when it leads to another origin than
    /// `base_url`'s: links in answers (`next`, `related`) are followed only where the credentials
    /// may go.
    fn target(&self, path: &str) -> ApiResult<reqwest::Url> {
        let link = self.url(path);
        match reqwest::Url::parse(&link) {
            Ok(url) if same_origin(&url, &self.root_url) => Ok(url),
            _ => Err(ApiError::ForeignLink {
                link,
                origin: origin_text(&self.root_url),
            }),
        }
    }

    /// The API path (`/api/v2/…`) of a path relative to the base.
    pub(crate) fn path(&self, relative: &str) -> String {
        format!("{}{relative}", self.base)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Json>,
    ) -> ApiResult<Json> {
        let mut request = self
            .http
            .request(method.clone(), self.target(path)?)
            .header(reqwest::header::ACCEPT, "application/json");
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        request = self.auth.apply(request);
        decode(exchange(request).await, method.as_str())
    }

    /// `GET` one object or page.
    pub(crate) async fn get(&self, path: &str, query: &[(&str, String)]) -> ApiResult<Json> {
        self.send(Method::GET, path, query, None).await
    }

    /// `POST` a JSON body.
    pub(crate) async fn post(&self, path: &str, body: &Json) -> ApiResult<Json> {
        self.send(Method::POST, path, &[], Some(body)).await
    }

    /// Every result of a list endpoint, following `next` page by page (at most `limit`).
    pub(crate) async fn get_all(
        &self,
        path: &str,
        query: &[(&str, String)],
        limit: Option<usize>,
    ) -> ApiResult<Vec<Json>> {
        let mut q: Vec<(&str, String)> = query.to_vec();
        let size = limit.unwrap_or(PAGE_SIZE).clamp(1, PAGE_SIZE);
        q.push(("page_size", size.to_string()));
        let mut page = self.get(path, &q).await?;
        let mut out = Vec::new();
        let mut previous: Option<String> = None;
        loop {
            if let Some(Json::Array(items)) = page.get_mut("results").map(Json::take) {
                out.extend(items);
            }
            if limit.is_some_and(|l| out.len() >= l) {
                out.truncate(limit.unwrap_or(usize::MAX));
                break;
            }
            match page.get("next").and_then(Json::as_str) {
                // A server that names the same page again would keep us here forever.
                Some(next) if !next.is_empty() && previous.as_deref() != Some(next) => {
                    let next = next.to_owned();
                    page = self.get(&next, &[]).await?;
                    previous = Some(next);
                }
                _ => break,
            }
        }
        Ok(out)
    }
}

/// A temporary token for a password login, shared with every instance of this process that logs
/// in to the same server as the same user; Basic auth when the server refuses tokens.
async fn password_auth(
    http: &reqwest::Client,
    root: &str,
    base: &str,
    username: &str,
    password: &SecretString,
) -> Result<Auth> {
    tracing::warn!(
        "AnsibleTower: logging in with a password; a personal `token` in the settings is preferred"
    );
    if let Some(shared) = TempToken::shared(root, username) {
        return Ok(Auth::Temporary(shared));
    }
    let description = format!("Broker temp {}", random_letters(10));
    let request = http
        .request(Method::POST, format!("{root}{base}tokens/"))
        .basic_auth(username, Some(password.expose_secret()))
        .json(&json!({"description": description, "application": null, "scope": "write"}));
    match decode(exchange(request).await, "POST") {
        Ok(created) => {
            let (Some(id), Some(token)) = (
                created.get("id").and_then(Json::as_u64),
                created.get("token").and_then(Json::as_str),
            ) else {
                tracing::warn!(
                    "AnsibleTower answered the token request without a token; using the password for every request"
                );
                return Ok(basic(username, password));
            };
            let temp = Arc::new(TempToken {
                token: SecretString::from(token.to_owned()),
                url: format!("{root}{base}tokens/{id}/"),
                description,
                http: http.clone(),
            });
            TempToken::share(root, username, &temp);
            tracing::info!(
                id,
                "created a temporary AnsibleTower token; it is deleted when broker is done"
            );
            Ok(Auth::Temporary(temp))
        }
        Err(e) if e.status() == Some(401) => {
            Err(e.into_error(&format!("logging in as `{username}`")))
        }
        Err(e) => {
            tracing::warn!(
                "AnsibleTower refused a temporary token ({e}); using the password for every request"
            );
            Ok(basic(username, password))
        }
    }
}

fn basic(username: &str, password: &SecretString) -> Auth {
    Auth::Basic {
        username: username.to_owned(),
        password: password.clone(),
    }
}

fn decode(answer: ApiResult<(u16, bytes::Bytes, String)>, method: &str) -> ApiResult<Json> {
    let (status, body, url) = answer?;
    crate::http::json_of(status, &body).map_err(|e| match e {
        None => ApiError::Status {
            status,
            method: method.to_owned(),
            url,
            detail: detail(&body),
        },
        Some(e) => ApiError::Decode {
            url,
            message: e.to_string(),
        },
    })
}

fn client(verify: &Verify, timeout: Duration) -> Result<reqwest::Client> {
    crate::http::client(super::NAME, verify, timeout)
}

/// Finds the API base: `aap_version` when set (2.5 and later live under `/api/controller/v2/`),
/// else the API root's answer (`available_versions` on AWX and older AAP; the gateway's `apis` on
/// AAP 2.5).
async fn detect_base(
    http: &reqwest::Client,
    root: &str,
    aap_version: Option<&str>,
) -> Result<(String, bool)> {
    if let Some(version) = aap_version.map(str::trim).filter(|v| !v.is_empty()) {
        let mut parts = version.split('.').map(|p| p.trim().parse::<u32>());
        match (parts.next(), parts.next()) {
            (Some(Ok(major)), minor) => {
                let minor = minor.and_then(|m| m.ok()).unwrap_or(0);
                return Ok(if (major, minor) >= (2, 5) {
                    ("/api/controller/v2/".into(), true)
                } else {
                    ("/api/v2/".into(), false)
                });
            }
            _ => tracing::warn!(
                "AnsibleTower `aap_version: {version}` is not a version like 2.4 or 2.5; asking the server"
            ),
        }
    }
    let request = http
        .request(Method::GET, format!("{root}/api/"))
        .header(reqwest::header::ACCEPT, "application/json");
    let probe = decode(exchange(request).await, "GET");
    match probe {
        Ok(answer) => {
            if let Some(v2) = answer
                .pointer("/available_versions/v2")
                .and_then(Json::as_str)
            {
                return Ok((with_slash(v2), false));
            }
            if let Some(controller) = answer.pointer("/apis/controller").and_then(Json::as_str) {
                return Ok((format!("{}v2/", with_slash(controller)), true));
            }
            Ok(("/api/controller/v2/".into(), true))
        }
        Err(e @ ApiError::Transport { .. }) => Err(Error::provider(
            super::NAME,
            format!("cannot reach `{root}`; check `base_url` and that the server is up"),
        )
        .caused_by(e)),
        Err(e) => Err(Error::provider(
            super::NAME,
            format!(
                "`{root}/api/` does not look like AWX or Ansible Automation Platform; check \
                 `base_url`, or set `aap_version`"
            ),
        )
        .caused_by(e)),
    }
}

fn with_slash(path: &str) -> String {
    if path.ends_with('/') {
        path.to_owned()
    } else {
        format!("{path}/")
    }
}

fn random_letters(n: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::with_capacity(n);
    let mut seed = std::collections::hash_map::RandomState::new().build_hasher();
    seed.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    let mut x = seed.finish() | 1;
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(char::from(b'a' + (x % 26) as u8));
    }
    out
}

/// A token broker made from a password login. It is deleted from the server when the last
/// provider using it is dropped (the CLI drops its providers on every way out, Ctrl-C included).
pub(crate) struct TempToken {
    token: SecretString,
    url: String,
    description: String,
    http: reqwest::Client,
}

type SharedTokens = Mutex<Vec<(String, String, Weak<TempToken>)>>;

fn shared_tokens() -> &'static SharedTokens {
    static TOKENS: OnceLock<SharedTokens> = OnceLock::new();
    TOKENS.get_or_init(|| Mutex::new(Vec::new()))
}

impl TempToken {
    fn shared(root: &str, username: &str) -> Option<Arc<TempToken>> {
        broker_core::sync::lock(shared_tokens())
            .iter()
            .filter(|(r, u, _)| r == root && u == username)
            .find_map(|(_, _, weak)| weak.upgrade())
    }

    fn share(root: &str, username: &str, token: &Arc<TempToken>) {
        let mut tokens = broker_core::sync::lock(shared_tokens());
        tokens.retain(|(_, _, w)| w.strong_count() > 0);
        tokens.push((root.to_owned(), username.to_owned(), Arc::downgrade(token)));
    }
}

impl Drop for TempToken {
    fn drop(&mut self) {
        let request = self
            .http
            .request(Method::DELETE, &self.url)
            .bearer_auth(self.token.expose_secret())
            .timeout(Duration::from_secs(10));
        let (done, wait) = std::sync::mpsc::channel();
        let work = async move {
            let _ = done.send(decode(exchange(request).await, "DELETE"));
        };
        match io() {
            Some(handle) => {
                handle.spawn(work);
            }
            None => return,
        }
        match wait.recv_timeout(Duration::from_secs(12)) {
            Ok(Ok(_)) => {
                tracing::info!(token = %self.description, "deleted the temporary AnsibleTower token")
            }
            Ok(Err(e)) if e.status() == Some(404) => {}
            Ok(Err(e)) => tracing::warn!(
                "could not delete the temporary AnsibleTower token `{}` ({e}); delete it in the UI under your user's tokens",
                self.description
            ),
            Err(_) => tracing::warn!(
                "timed out deleting the temporary AnsibleTower token `{}`; delete it in the UI under your user's tokens",
                self.description
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing answers at `base_url`: what to check in the message, the transport error as cause.
    #[tokio::test]
    async fn an_unreachable_server_keeps_the_transport_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let root = format!("http://127.0.0.1:{port}");
        let http = client(&Verify::System, Duration::from_secs(5)).unwrap();
        let err = detect_base(&http, &root, None).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "AnsibleTower: cannot reach `{root}`; check `base_url` and that the server is up"
            )
        );
        let cause = std::error::Error::source(&err).expect("the transport error is the source");
        assert!(
            cause
                .to_string()
                .starts_with(&format!("{root}/api/ did not answer: ")),
            "{cause}"
        );
        assert_eq!(err.exit_code(), 7);
    }

    /// Refused credentials and permissions keep the server's answer as the cause.
    #[test]
    fn refusals_keep_the_answer_as_the_source() {
        let answer = |status| ApiError::Status {
            status,
            method: "GET".into(),
            url: "https://tower.example.com/api/v2/me/".into(),
            detail: "Authentication credentials were not provided.".into(),
        };
        let said = "GET https://tower.example.com/api/v2/me/ answered 401: Authentication \
                    credentials were not provided.";
        let refused = answer(401).into_error("logging in");
        assert!(
            matches!(refused, Error::Authentication { .. }),
            "{refused:?}"
        );
        assert_eq!(
            std::error::Error::source(&refused).map(|c| c.to_string()),
            Some(said.to_owned())
        );
        assert!(!refused.to_string().contains("answered"), "{refused}");
        let denied = answer(403).into_error("listing job templates");
        assert!(matches!(denied, Error::Permission { .. }), "{denied:?}");
        assert_eq!(
            broker_core::error::chain(&denied),
            format!(
                "permission denied: listing job templates: {}",
                said.replace("401", "403")
            )
        );
    }

    /// A request task that panicked is broker's own failure (exit 1), the panic its cause.
    #[tokio::test]
    async fn a_failed_request_task_is_an_internal_error() {
        let joined = tokio::spawn(async { panic!("client bug") }).await;
        let err = ApiError::Task(joined.unwrap_err()).into_error("listing inventories");
        assert!(matches!(err, Error::Internal { .. }), "{err:?}");
        assert_eq!(err.exit_code(), 1);
        assert_eq!(err.to_string(), "AnsibleTower: listing inventories");
        let shown = broker_core::error::chain(&err);
        assert!(
            shown.starts_with("AnsibleTower: listing inventories: the request task failed: task ")
                && shown.ends_with("panicked with message \"client bug\""),
            "{shown}"
        );
        assert!(
            !ApiError::Task(tokio::spawn(async { panic!("again") }).await.unwrap_err()).transient()
        );
    }

    /// The API's answer is kept as the provider error's source; the message says what broker did.
    #[test]
    fn an_api_error_is_kept_as_the_source() {
        let err = ApiError::Status {
            status: 404,
            method: "GET".into(),
            url: "https://tower.example.com/api/v2/jobs/7/".into(),
            detail: "Not found.".into(),
        }
        .into_error("reading job 7");
        assert_eq!(err.to_string(), "AnsibleTower: reading job 7");
        let cause = std::error::Error::source(&err).expect("the API error is the source");
        assert_eq!(
            cause.to_string(),
            "GET https://tower.example.com/api/v2/jobs/7/ answered 404: Not found."
        );
        assert_eq!(
            broker_core::error::chain(&err),
            "AnsibleTower: reading job 7: GET https://tower.example.com/api/v2/jobs/7/ answered 404: Not found."
        );
    }

    #[test]
    fn detail_prefers_awx_messages() {
        assert_eq!(detail(br#"{"detail": "Not found."}"#), "Not found.");
        assert_eq!(
            detail(br#"{"__all__": ["Label with this Name and Organization already exists."]}"#),
            "Label with this Name and Organization already exists."
        );
        assert_eq!(
            detail(br#"{"inventory": ["Invalid pk \"9\" - object does not exist."]}"#),
            "inventory: Invalid pk \"9\" - object does not exist."
        );
        assert_eq!(
            detail(b"<html>Bad Gateway</html>"),
            "<html>Bad Gateway</html>"
        );
        assert_eq!(detail(b""), "(no body)");
    }

    #[test]
    fn transient_errors_are_the_ones_worth_waiting_for() {
        let status = |status| ApiError::Status {
            status,
            method: "GET".into(),
            url: "u".into(),
            detail: String::new(),
        };
        assert!(status(502).transient());
        assert!(status(403).transient());
        assert!(!status(404).transient());
        assert!(!status(401).transient());
        assert!(
            ApiError::Transport {
                url: "u".into(),
                message: "reset".into()
            }
            .transient()
        );
        assert_eq!(status(401).into_error("x").exit_code(), 5);
        assert_eq!(status(403).into_error("x").exit_code(), 6);
        assert_eq!(status(500).into_error("x").exit_code(), 7);
    }

    #[test]
    fn random_letters_are_letters() {
        let a = random_letters(10);
        assert_eq!(a.len(), 10);
        assert!(a.chars().all(|c| c.is_ascii_lowercase()));
    }

    #[test]
    fn credentials_never_show_secrets() {
        let c = Credentials::Password {
            username: "alice".into(),
            password: SecretString::from("hunter2".to_owned()),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        let t = Credentials::Token(SecretString::from("tok-123".to_owned()));
        assert!(!format!("{t:?}").contains("tok-123"));
    }
}
