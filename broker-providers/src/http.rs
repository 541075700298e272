//! What the providers that speak HTTP APIs with reqwest share (AnsibleTower, Foreman): the TLS
//! check a `verify` setting asks for, the client, and requests run on one background runtime.
//!
//! Every request runs on one background runtime of its own (see [`io`]), so that a client works
//! whatever runtime — or none — the caller has: a host guard may check its host in from a drop
//! worker long after the runtime that made the connection pool is gone.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use broker_core::{Error, Result, Value};
use serde::Deserialize;

/// How the TLS certificate of the server is checked.
#[derive(Debug, Clone)]
pub(crate) enum Verify {
    /// Against the system's trust store.
    System,
    /// Not at all (`verify: false`).
    Off,
    /// Against the system store plus this PEM bundle (`verify: /path/ca.pem`).
    Bundle(PathBuf),
}

/// `verify`: `true` (also as text, or empty) checks against the system's trust store, `false`
/// not at all, any other text is a CA bundle path (relative to the broker directory).
pub(crate) fn verify<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<Verify>, D::Error> {
    use serde::de::Error as _;
    Ok(match Value::deserialize(deserializer)? {
        Value::Null | Value::Bool(true) => None,
        Value::Bool(false) => Some(Verify::Off),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" | "" => None,
            "false" | "no" | "0" => Some(Verify::Off),
            _ => Some(Verify::Bundle(PathBuf::from(s))),
        },
        other => {
            return Err(D::Error::custom(format!(
                "`{}` is not true, false or a CA bundle path",
                serde_yaml::to_string(&other).unwrap_or_default().trim()
            )));
        }
    })
}

/// The check `verify` asks for, a relative bundle path taken from `directory` (the broker
/// directory); the system's trust store when it says nothing.
pub(crate) fn verify_in(verify: Option<&Verify>, directory: &std::path::Path) -> Verify {
    match verify {
        Some(Verify::Bundle(path)) if path.is_relative() => Verify::Bundle(directory.join(path)),
        Some(verify) => verify.clone(),
        None => Verify::System,
    }
}

/// A request that got no answer.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Refused, reset, timed out.
    Transport { url: String, message: String },
    /// A redirect to another origin than the request's, refused: credentials go nowhere else.
    ForeignLink { link: String, origin: String },
    /// The task that ran the request on the I/O runtime panicked or was cancelled.
    Task(tokio::task::JoinError),
}

/// The runtime every request of these providers runs on, started on first use.
pub(crate) fn io() -> Option<&'static tokio::runtime::Handle> {
    static IO: OnceLock<Option<tokio::runtime::Handle>> = OnceLock::new();
    IO.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        let handle = runtime.handle().clone();
        std::thread::Builder::new()
            .name("broker-http-io".into())
            .spawn(move || runtime.block_on(std::future::pending::<()>()))
            .ok()?;
        Some(handle)
    })
    .as_ref()
}

/// Sends a request on the I/O runtime and reads the whole answer: status, body, final URL.
pub(crate) async fn exchange(
    request: reqwest::RequestBuilder,
) -> std::result::Result<(u16, bytes::Bytes, String), Failure> {
    let work = async move {
        let response = request.send().await.map_err(|e| match left_origin(&e) {
            Some(left) => Failure::ForeignLink {
                link: left.link.clone(),
                origin: left.origin.clone(),
            },
            None => Failure::Transport {
                url: e.url().map(|u| u.to_string()).unwrap_or_default(),
                message: transport_message(&e),
            },
        })?;
        let status = response.status().as_u16();
        let url = response.url().to_string();
        let body = response.bytes().await.map_err(|e| Failure::Transport {
            url: url.clone(),
            message: transport_message(&e),
        })?;
        Ok((status, body, url))
    };
    match io() {
        Some(handle) => match handle.spawn(work).await {
            Ok(result) => result,
            Err(e) => Err(Failure::Task(e)),
        },
        None => work.await,
    }
}

/// What a 2xx answer's body says (`null` when empty); `Err(None)` for any other status,
/// `Err(Some(e))` for a body that is not JSON.
pub(crate) fn json_of(
    status: u16,
    body: &[u8],
) -> std::result::Result<serde_json::Value, Option<serde_json::Error>> {
    if !(200..300).contains(&status) {
        return Err(None);
    }
    if body.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_slice(body).map_err(Some)
}

/// An error message from an answer's body, cut to 400 bytes; `(no body)` when it is empty.
pub(crate) fn shortened(mut out: String) -> String {
    if out.len() > 400 {
        let mut cut = 400;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    if out.is_empty() {
        "(no body)".into()
    } else {
        out
    }
}

/// A redirect to another origin than the request's, refused by the client's redirect policy.
#[derive(Debug)]
struct LeftOrigin {
    link: String,
    origin: String,
}

impl std::fmt::Display for LeftOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a redirect to `{}` leaves `{}`", self.link, self.origin)
    }
}

impl std::error::Error for LeftOrigin {}

fn left_origin(e: &reqwest::Error) -> Option<&LeftOrigin> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(left) = s.downcast_ref::<LeftOrigin>() {
            return Some(left);
        }
        source = s.source();
    }
    None
}

/// Whether two URLs share scheme, host and port.
pub(crate) fn same_origin(a: &reqwest::Url, b: &reqwest::Url) -> bool {
    a.origin() == b.origin()
}

/// The origin of a URL as text, `https://host:port`.
pub(crate) fn origin_text(url: &reqwest::Url) -> String {
    url.origin().ascii_serialization()
}

/// Follows redirects within the origin of the first request only (as many as reqwest's default
/// policy allows); a redirect elsewhere would carry credentials away and is an error.
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let Some(first) = attempt.previous().first() else {
            return attempt.follow();
        };
        if !same_origin(first, attempt.url()) {
            let left = LeftOrigin {
                link: attempt.url().to_string(),
                origin: origin_text(first),
            };
            attempt.error(left)
        } else if attempt.previous().len() >= 10 {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    })
}

/// The causes of a transport error, without reqwest's wrappers (which repeat the URL).
fn transport_message(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        let text = s.to_string();
        let wrapper = text.starts_with("error sending request")
            || text.starts_with("client error (")
            || text.starts_with("error decoding response body")
            || text.starts_with("request or response body error");
        if !wrapper && !parts.iter().any(|p| p == &text) {
            parts.push(text);
        }
        source = s.source();
    }
    if e.is_timeout() && !parts.iter().any(|p| p.contains("timed out")) {
        parts.insert(0, "timed out".into());
    }
    if parts.is_empty() {
        e.to_string()
    } else {
        parts.join(": ")
    }
}

/// The HTTP client of `provider`: TLS checked as `verify` says, requests limited to `timeout`,
/// redirects followed within their origin only.
pub(crate) fn client(
    provider: &str,
    verify: &Verify,
    timeout: Duration,
) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("broker/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(15))
        .tcp_nodelay(true)
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(50))
        .redirect(redirect_policy());
    match verify {
        Verify::System => {}
        Verify::Off => {
            tracing::warn!("{provider}: TLS certificates are not checked (`verify: false`)");
            builder = builder.danger_accept_invalid_certs(true);
        }
        Verify::Bundle(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                Error::configuration(format!(
                    "{provider} `verify: {}`: cannot read the CA bundle",
                    path.display()
                ))
                .caused_by(e)
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                Error::configuration(format!(
                    "{provider} `verify: {}` is not a PEM bundle of CA certificates",
                    path.display()
                ))
                .caused_by(e)
            })?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
    }
    builder.build().map_err(|e| {
        Error::configuration(format!("{provider}: cannot set up the HTTP client")).caused_by(e)
    })
}
