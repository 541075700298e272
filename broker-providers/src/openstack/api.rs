//! The OpenStack HTTP client: a Keystone v3 login (password or application credential) and the
//! service catalogue it answers with, then Nova, Glance and Neutron requests that log in again when
//! the token expires and ride out passing failures.
//!
//! A provider keeps its login — the token and the endpoints, plain data — for all its calls, but no
//! connection: each call of the provider makes an HTTP client of its own ([`Cloud::api`]) on the
//! runtime that runs the call, so a host guard's check-in on broker's drop worker never waits on a
//! runtime that is gone (the Container provider does the same with its engine).

use std::sync::Arc;
use std::time::Duration;

use broker_core::secrecy::{ExposeSecret, SecretString};
use broker_core::{Error, Result};
use reqwest::Method;
use serde_json::{Value as Json, json};

use super::NAME;

/// How many times a read or a delete is tried when the cloud fails in passing.
const TRIES: u32 = 4;

/// The most pages a listing follows: a cloud whose `next` links never end is not followed forever.
const MAX_PAGES: usize = 1_000;

/// A service of the catalogue that the provider uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    /// Nova.
    Compute,
    /// Glance.
    Image,
    /// Neutron.
    Network,
}

impl Service {
    /// The catalogue's `type` of the service.
    fn kind(self) -> &'static str {
        match self {
            Service::Compute => "compute",
            Service::Image => "image",
            Service::Network => "network",
        }
    }

    /// The root the provider's paths are relative to: Nova's endpoint names its API version (added
    /// when it does not), Glance's and Neutron's paths name theirs (`/v2/images`, `/v2.0/networks`),
    /// so a version their endpoint ends with is taken off.
    fn root(self, endpoint: &str) -> String {
        let endpoint = endpoint.trim_end_matches('/');
        let (head, last) = endpoint.rsplit_once('/').unwrap_or(("", endpoint));
        let versioned = last.len() > 1
            && last.starts_with('v')
            && last[1..].chars().all(|c| c.is_ascii_digit() || c == '.');
        match (self, versioned) {
            (Service::Compute, true) => endpoint.to_owned(),
            (Service::Compute, false) => format!("{endpoint}/v2.1"),
            (_, true) => head.to_owned(),
            (_, false) => endpoint.to_owned(),
        }
    }
}

/// A Keystone domain, by name or id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Domain {
    Name(String),
    Id(String),
}

impl Domain {
    fn to_json(&self) -> Json {
        match self {
            Domain::Name(name) => json!({"name": name}),
            Domain::Id(id) => json!({"id": id}),
        }
    }
}

/// The project a password login is scoped to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Project {
    Id(String),
    Name { name: String, domain: Domain },
}

/// Who logs in. Secrets never show in `Debug`.
pub(crate) enum Credentials {
    Password {
        username: String,
        user_domain: Domain,
        password: SecretString,
        project: Project,
    },
    /// An application credential, scoped to its project by Keystone (a scope may not be asked for).
    ApplicationCredential {
        id: Option<String>,
        /// By name, the credential's user is needed too.
        name: Option<(String, String, Domain)>,
        secret: SecretString,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Password {
                username, project, ..
            } => write!(
                f,
                "Password {{ username: {username:?}, project: {project:?}, password: *** }}"
            ),
            Credentials::ApplicationCredential { id, name, .. } => write!(
                f,
                "ApplicationCredential {{ id: {id:?}, name: {:?}, secret: *** }}",
                name.as_ref().map(|(n, _, _)| n)
            ),
        }
    }
}

impl Credentials {
    /// Keystone's `auth` object.
    fn auth(&self) -> Json {
        match self {
            Credentials::Password {
                username,
                user_domain,
                password,
                project,
            } => {
                let project = match project {
                    Project::Id(id) => json!({"id": id}),
                    Project::Name { name, domain } => {
                        json!({"name": name, "domain": domain.to_json()})
                    }
                };
                json!({
                    "identity": {"methods": ["password"], "password": {"user": {
                        "name": username, "domain": user_domain.to_json(),
                        "password": password.expose_secret()}}},
                    "scope": {"project": project}
                })
            }
            Credentials::ApplicationCredential { id, name, secret } => {
                let mut credential = json!({"secret": secret.expose_secret()});
                if let Some(id) = id {
                    credential["id"] = json!(id);
                } else if let Some((name, user, domain)) = name {
                    credential["name"] = json!(name);
                    credential["user"] = json!({"name": user, "domain": domain.to_json()});
                }
                json!({"identity": {"methods": ["application_credential"],
                                    "application_credential": credential}})
            }
        }
    }

    /// The login method, for messages.
    fn method(&self) -> &'static str {
        match self {
            Credentials::Password { .. } => "password",
            Credentials::ApplicationCredential { .. } => "application credential",
        }
    }
}

/// Where and how to log in, resolved from the settings or a cloud of `clouds.yaml`.
#[derive(Debug)]
pub(crate) struct Login {
    pub auth_url: String,
    pub credentials: Credentials,
    pub region: Option<String>,
    /// `public`, `internal` or `admin`.
    pub interface: String,
    /// Where the credentials were read, for messages: the settings, or a cloud of a file.
    pub origin: String,
}

impl Login {
    fn tokens_url(&self) -> String {
        let base = self.auth_url.trim_end_matches('/');
        if base.ends_with("/v3") {
            format!("{base}/auth/tokens")
        } else {
            format!("{base}/v3/auth/tokens")
        }
    }
}

/// A token and the service roots of its catalogue.
struct Token {
    value: SecretString,
    user_id: String,
    compute: Option<String>,
    image: Option<String>,
    network: Option<String>,
}

impl Token {
    fn root(&self, service: Service) -> Option<&str> {
        match service {
            Service::Compute => self.compute.as_deref(),
            Service::Image => self.image.as_deref(),
            Service::Network => self.network.as_deref(),
        }
    }
}

/// A failed request, before it becomes a broker [`Error`].
#[derive(Debug)]
pub(crate) enum ApiError {
    /// No answer: refused, reset, timed out.
    Transport { url: String, source: reqwest::Error },
    /// An answer with an error status; `detail` is the service's message.
    Status {
        status: u16,
        method: String,
        url: String,
        detail: String,
    },
    /// An answer that is not the JSON expected.
    Decode { url: String, message: String },
    /// The catalogue has no endpoint for the service.
    NoEndpoint { service: &'static str },
    /// Logging in (again) failed.
    Login(Box<Error>),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Transport { url, .. } => write!(f, "{url} did not answer"),
            ApiError::Status {
                status,
                method,
                url,
                detail,
            } => write!(f, "{method} {url} answered {status}: {detail}"),
            ApiError::Decode { url, message } => {
                write!(f, "{url} answered something that is not JSON: {message}")
            }
            ApiError::NoEndpoint { service } => {
                write!(f, "the service catalogue has no {service} endpoint")
            }
            ApiError::Login(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ApiError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ApiError::Transport { source, .. } => Some(source),
            ApiError::Login(e) => e.source(),
            _ => None,
        }
    }
}

impl ApiError {
    /// Worth trying again: no answer, a 5xx, or "too many requests".
    pub(crate) fn transient(&self) -> bool {
        match self {
            ApiError::Transport { .. } => true,
            ApiError::Status { status, .. } => *status >= 500 || *status == 429,
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

    /// The broker error, saying what broker was doing.
    pub(crate) fn into_error(self, doing: &str) -> Error {
        match self {
            ApiError::Login(e) => *e,
            ApiError::NoEndpoint { service } => Error::configuration(format!(
                "OpenStack: {doing}: the service catalogue has no {service} endpoint for this \
                 `region_name` and `interface`; check them"
            )),
            ApiError::Status { status: 401, .. } => Error::Authentication {
                message: format!("OpenStack refused the token while {doing}"),
                source: Some(self.into()),
            },
            ApiError::Status {
                status: 403,
                ref detail,
                ..
            } if detail.to_ascii_lowercase().contains("quota") => Error::provider(
                NAME,
                format!("{doing}: the project is over its quota; free some of it or ask for more"),
            )
            .caused_by(self),
            ApiError::Status { status: 403, .. } => Error::Permission {
                message: format!("OpenStack: {doing}"),
                source: Some(self.into()),
            },
            _ => Error::provider(NAME, doing).caused_by(self),
        }
    }
}

pub(crate) type ApiResult<T> = std::result::Result<T, ApiError>;

/// Query parameters of a request.
pub(crate) type Query<'q> = &'q [(&'q str, &'q str)];

/// One cloud: its login, the token it gave (shared by every call of the provider), and how long
/// requests may take.
pub(crate) struct Cloud {
    login: Login,
    token: tokio::sync::Mutex<Option<Arc<Token>>>,
    request_timeout: Duration,
    retry_pause: Duration,
}

impl std::fmt::Debug for Cloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cloud").field("login", &self.login).finish()
    }
}

impl Cloud {
    /// A cloud logged in to on first use; `retry_pause` is the first pause before a request that
    /// failed in passing is tried again (doubling after each try).
    pub(crate) fn new(login: Login, request_timeout: Duration, retry_pause: Duration) -> Cloud {
        Cloud {
            login,
            token: tokio::sync::Mutex::new(None),
            request_timeout,
            retry_pause,
        }
    }

    /// A client for one call of the provider.
    ///
    /// # Errors
    /// [`Error::Configuration`] when the HTTP client cannot be set up.
    pub(crate) fn api(&self) -> Result<Api<'_>> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("broker/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(15))
            .timeout(self.request_timeout)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| {
                Error::configuration("OpenStack: cannot set up the HTTP client").caused_by(e)
            })?;
        Ok(Api { cloud: self, http })
    }
}

/// The client of one call.
pub(crate) struct Api<'a> {
    cloud: &'a Cloud,
    http: reqwest::Client,
}

impl Api<'_> {
    /// The id of the user logged in (Nova's `user_id` of the servers they make).
    pub(crate) async fn user_id(&self) -> Result<String> {
        Ok(self.token().await?.user_id.clone())
    }

    async fn token(&self) -> Result<Arc<Token>> {
        let mut slot = self.cloud.token.lock().await;
        if let Some(token) = &*slot {
            return Ok(Arc::clone(token));
        }
        let token = Arc::new(self.log_in().await?);
        *slot = Some(Arc::clone(&token));
        Ok(token)
    }

    /// A new token in place of `refused`, unless another call already got one.
    async fn renew(&self, refused: &Arc<Token>) -> Result<Arc<Token>> {
        let mut slot = self.cloud.token.lock().await;
        if let Some(token) = &*slot
            && !Arc::ptr_eq(token, refused)
        {
            return Ok(Arc::clone(token));
        }
        tracing::info!("the OpenStack token was refused (expired or revoked); logging in again");
        let token = Arc::new(self.log_in().await?);
        *slot = Some(Arc::clone(&token));
        Ok(token)
    }

    /// `POST /v3/auth/tokens`: the token, the user and the catalogue's endpoints.
    async fn log_in(&self) -> Result<Token> {
        let login = &self.cloud.login;
        let url = login.tokens_url();
        let (status, header, body) = self.post_login(&url).await?;
        let refused = |status| ApiError::Status {
            status,
            method: "POST".into(),
            url: url.clone(),
            detail: detail(&body),
        };
        if status == 401 {
            return Err(Error::Authentication {
                message: format!(
                    "Keystone at `{}` refused the {} login; check the credentials ({})",
                    login.auth_url,
                    login.credentials.method(),
                    login.origin
                ),
                source: Some(refused(status).into()),
            });
        }
        if !(200..300).contains(&status) {
            return Err(Error::provider(
                NAME,
                format!("logging in to Keystone at `{}`", login.auth_url),
            )
            .caused_by(refused(status)));
        }
        let (Some(value), Ok(body)) = (header, serde_json::from_slice::<Json>(&body)) else {
            return Err(Error::provider(
                NAME,
                format!(
                    "Keystone at `{}` answered the login without a token; is `auth_url` Keystone v3?",
                    login.auth_url
                ),
            ));
        };
        tracing::debug!(
            method = login.credentials.method(),
            "logged in to OpenStack"
        );
        Ok(token_from(login, value, &body))
    }

    /// Sends the login to `url`: Keystone's status, its `X-Subject-Token` and its body.
    async fn post_login(&self, url: &str) -> Result<(u16, Option<SecretString>, Vec<u8>)> {
        let login = &self.cloud.login;
        let transport = |source| ApiError::Transport {
            url: url.to_owned(),
            source,
        };
        let answer = self
            .http
            .post(url)
            .json(&json!({"auth": login.credentials.auth()}))
            .send()
            .await
            .map_err(|e| {
                Error::provider(
                    NAME,
                    format!(
                        "cannot reach Keystone at `{}`; check `auth_url` ({}) and that the cloud is up",
                        login.auth_url, login.origin
                    ),
                )
                .caused_by(transport(e))
            })?;
        let header = answer
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(|v| SecretString::from(v.to_owned()));
        let status = answer.status().as_u16();
        let body = answer.bytes().await.map_err(|e| {
            Error::provider(NAME, "reading Keystone's answer to the login").caused_by(transport(e))
        })?;
        Ok((status, header, body.to_vec()))
    }

    /// Sends one request, logging in again once when the token is refused.
    async fn send(
        &self,
        method: &Method,
        service: Service,
        path: &str,
        query: Query<'_>,
        body: Option<&Json>,
    ) -> ApiResult<Json> {
        let token = self.token().await.map_err(|e| ApiError::Login(e.into()))?;
        let mut answer = self
            .exchange(method, &token, (service, path, query), body)
            .await?;
        if answer.status == 401 {
            let renewed = self
                .renew(&token)
                .await
                .map_err(|e| ApiError::Login(e.into()))?;
            answer = self
                .exchange(method, &renewed, (service, path, query), body)
                .await?;
        }
        answer.decode(method)
    }

    async fn exchange(
        &self,
        method: &Method,
        token: &Token,
        (service, path, query): (Service, &str, Query<'_>),
        body: Option<&Json>,
    ) -> ApiResult<Answer> {
        let root = token.root(service).ok_or(ApiError::NoEndpoint {
            service: service.kind(),
        })?;
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{root}{path}")
        };
        let mut request = self
            .http
            .request(method.clone(), &url)
            .header("X-Auth-Token", token.value.expose_secret())
            .header(reqwest::header::ACCEPT, "application/json");
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let transport = |source| ApiError::Transport {
            url: url.clone(),
            source,
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(transport)?;
        Ok(Answer {
            status,
            url: url.clone(),
            body,
        })
    }

    /// Sends a request, trying again (with a doubling pause) while the cloud fails in passing.
    async fn patiently(
        &self,
        method: Method,
        service: Service,
        path: &str,
        query: Query<'_>,
    ) -> ApiResult<Json> {
        let mut pause = self.cloud.retry_pause;
        let mut tries = 1;
        loop {
            match self.send(&method, service, path, query, None).await {
                Err(e) if e.transient() && tries < TRIES => {
                    tracing::warn!("OpenStack did not answer properly ({e}); trying again");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    tries += 1;
                }
                done => return done,
            }
        }
    }

    /// `GET`, tried again while the cloud fails in passing.
    pub(crate) async fn get(
        &self,
        service: Service,
        path: &str,
        query: Query<'_>,
    ) -> ApiResult<Json> {
        self.patiently(Method::GET, service, path, query).await
    }

    /// `GET` once: the caller rides out failures itself (a poll).
    pub(crate) async fn get_once(
        &self,
        service: Service,
        path: &str,
        query: Query<'_>,
    ) -> ApiResult<Json> {
        self.send(&Method::GET, service, path, query, None).await
    }

    /// `DELETE`, tried again while the cloud fails in passing.
    pub(crate) async fn delete(&self, service: Service, path: &str) -> ApiResult<Json> {
        self.patiently(Method::DELETE, service, path, &[]).await
    }

    /// `POST` a JSON body, once: whether to try again is the caller's to decide.
    pub(crate) async fn post(&self, service: Service, path: &str, body: &Json) -> ApiResult<Json> {
        self.send(&Method::POST, service, path, &[], Some(body))
            .await
    }

    /// Every item of a listing under `key` (`servers`, `images`…), following its `next` links:
    /// Nova's and Neutron's `<key>_links`, Glance's `next`.
    pub(crate) async fn list(
        &self,
        service: Service,
        path: &str,
        query: Query<'_>,
        key: &str,
    ) -> ApiResult<Vec<Json>> {
        let mut items = Vec::new();
        let mut next = Some(path.to_owned());
        let mut pages = 0;
        while let Some(page_path) = next.take() {
            // The query is the first page's: a `next` link carries its own.
            let query = if pages == 0 { query } else { &[] };
            let mut page = self.get(service, &page_path, query).await?;
            if let Some(Json::Array(found)) = page.get_mut(key).map(Json::take) {
                items.extend(found);
            }
            pages += 1;
            next = next_page(&page, key).filter(|n| *n != page_path && pages < MAX_PAGES);
        }
        Ok(items)
    }
}

/// The link to a listing's next page, if any.
fn next_page(page: &Json, key: &str) -> Option<String> {
    let linked = page[format!("{key}_links")]
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["rel"] == "next")
        .and_then(|l| l["href"].as_str());
    linked
        .or_else(|| page["next"].as_str())
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
}

/// An answer, read whole.
struct Answer {
    status: u16,
    url: String,
    body: bytes::Bytes,
}

impl Answer {
    fn decode(self, method: &Method) -> ApiResult<Json> {
        if !(200..300).contains(&self.status) {
            return Err(ApiError::Status {
                status: self.status,
                method: method.to_string(),
                url: self.url,
                detail: detail(&self.body),
            });
        }
        if self.body.is_empty() {
            return Ok(Json::Null);
        }
        serde_json::from_slice(&self.body).map_err(|e| ApiError::Decode {
            url: self.url,
            message: e.to_string(),
        })
    }
}

/// The token Keystone gave `login`, with its user and the catalogue's endpoints for the login's
/// interface and region.
fn token_from(login: &Login, value: SecretString, body: &Json) -> Token {
    let catalog = &body["token"]["catalog"];
    let root = |service: Service| {
        endpoint(catalog, service, &login.interface, login.region.as_deref())
            .map(|url| service.root(&url))
    };
    Token {
        value,
        user_id: body["token"]["user"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        compute: root(Service::Compute),
        image: root(Service::Image),
        network: root(Service::Network),
    }
}

/// The catalogue's URL of `service` on `interface` (`publicURL` read as `public`), in `region`
/// when one is set.
fn endpoint(
    catalog: &Json,
    service: Service,
    interface: &str,
    region: Option<&str>,
) -> Option<String> {
    let interface = interface.trim_end_matches("URL");
    catalog
        .as_array()?
        .iter()
        .filter(|entry| entry["type"] == service.kind())
        .flat_map(|entry| entry["endpoints"].as_array().into_iter().flatten())
        .find(|e| {
            e["interface"] == interface
                && region.is_none_or(|r| e["region_id"] == r || e["region"] == r)
        })
        .and_then(|e| e["url"].as_str())
        .map(str::to_owned)
}

/// The service's own words in an error answer: Nova's `{"badRequest": {"message": …}}`,
/// Neutron's `{"NeutronError": {"message": …}}`, Keystone's `{"error": {"message": …}}`, Glance's
/// `{"message": …}`, else the text (cut at 400 characters).
fn detail(body: &[u8]) -> String {
    let parsed: Option<Json> = serde_json::from_slice(body).ok();
    let message = parsed.as_ref().and_then(|v| {
        v["message"].as_str().or_else(|| {
            v.as_object()?
                .values()
                .find_map(|inner| inner["message"].as_str())
        })
    });
    let text = match message {
        Some(m) => m.to_owned(),
        None => String::from_utf8_lossy(body)
            .trim()
            .chars()
            .take(400)
            .collect(),
    };
    if text.is_empty() {
        "(no body)".into()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_roots_take_the_version_where_paths_name_it() {
        assert_eq!(
            Service::Compute.root("http://c/compute/v2.1/"),
            "http://c/compute/v2.1"
        );
        assert_eq!(Service::Compute.root("http://c:8774"), "http://c:8774/v2.1");
        assert_eq!(
            Service::Compute.root("http://c:8774/v2.1/p-demo"),
            "http://c:8774/v2.1/p-demo/v2.1"
        );
        assert_eq!(Service::Image.root("http://c/image"), "http://c/image");
        assert_eq!(Service::Image.root("http://c:9292/v2/"), "http://c:9292");
        assert_eq!(Service::Network.root("http://c:9696/v2.0"), "http://c:9696");
        assert_eq!(
            Service::Network.root("http://c/networking"),
            "http://c/networking"
        );
    }

    #[test]
    fn error_details_are_the_services_own_words() {
        assert_eq!(
            detail(br#"{"badRequest": {"code": 400, "message": "Invalid imageRef provided."}}"#),
            "Invalid imageRef provided."
        );
        assert_eq!(
            detail(
                br#"{"NeutronError": {"type": "x", "message": "Network n could not be found."}}"#
            ),
            "Network n could not be found."
        );
        assert_eq!(
            detail(br#"{"message": "No image found", "code": "404 Not Found"}"#),
            "No image found"
        );
        assert_eq!(
            detail(b"<html>Bad Gateway</html>"),
            "<html>Bad Gateway</html>"
        );
        assert_eq!(detail(b""), "(no body)");
    }

    #[test]
    fn the_catalogue_is_read_by_interface_and_region() {
        let catalog = json!([
            {"type": "compute", "endpoints": [
                {"interface": "public", "region_id": "East", "url": "http://east/compute/v2.1"},
                {"interface": "internal", "region_id": "West", "url": "http://west-int/compute/v2.1"},
                {"interface": "public", "region_id": "West", "url": "http://west/compute/v2.1"}]},
        ]);
        let found = |interface, region| endpoint(&catalog, Service::Compute, interface, region);
        assert_eq!(
            found("public", Some("West")).as_deref(),
            Some("http://west/compute/v2.1")
        );
        assert_eq!(
            found("publicURL", None).as_deref(),
            Some("http://east/compute/v2.1")
        );
        assert_eq!(
            found("internal", None).as_deref(),
            Some("http://west-int/compute/v2.1")
        );
        assert_eq!(found("admin", None), None);
        assert_eq!(endpoint(&catalog, Service::Image, "public", None), None);
    }

    #[test]
    fn credentials_never_show_secrets() {
        let password = Credentials::Password {
            username: "alice".into(),
            user_domain: Domain::Name("Default".into()),
            password: SecretString::from("hunter2".to_owned()),
            project: Project::Id("p".into()),
        };
        let app = Credentials::ApplicationCredential {
            id: Some("cred".into()),
            name: None,
            secret: SecretString::from("s3cret".to_owned()),
        };
        assert!(!format!("{password:?}").contains("hunter2"));
        assert!(!format!("{app:?}").contains("s3cret"));
        assert_eq!(
            app.auth(),
            json!({"identity": {"methods": ["application_credential"],
                                "application_credential": {"id": "cred", "secret": "s3cret"}}})
        );
    }

    #[test]
    fn only_passing_failures_are_tried_again() {
        let status = |status| ApiError::Status {
            status,
            method: "GET".into(),
            url: "u".into(),
            detail: "Quota exceeded for instances".into(),
        };
        assert!(status(503).transient());
        assert!(status(429).transient());
        assert!(!status(404).transient());
        assert_eq!(status(401).into_error("x").exit_code(), 5);
        assert_eq!(status(403).into_error("x").exit_code(), 7);
        assert_eq!(status(500).into_error("x").exit_code(), 7);
    }
}
