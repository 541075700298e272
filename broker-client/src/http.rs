//! One request to the server: the bearer token on it (and on nothing else), the answer's problem
//! document turned into broker's [`Error`] with the exit code the same failure has locally.
//!
//! Redirects are never followed: the native API does not redirect, and a redirect to another origin
//! must not carry the token there. The server's address is shown without any user or password it
//! was written with.

use std::time::Duration;

use broker_core::Error;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;

/// How long connecting to the server may take. Requests themselves are not bounded: a checkout or a
/// handoff answers when it ends.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A broker server's address and the token to show it.
pub(crate) struct Http {
    client: reqwest::Client,
    base: Url,
    token: SecretString,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("server", &self.shown())
            .field("token", &"[REDACTED]")
            .finish()
    }
}

/// An answer with a body.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) body: Vec<u8>,
}

impl Http {
    /// A client of the server at `server` (`http://127.0.0.1:8420`; without a scheme, `http://`)
    /// with `token`, trusting the certificates of `ca` (PEM) besides the system's.
    pub(crate) fn new(server: &str, token: SecretString, ca: Option<&[u8]>) -> Result<Self, Error> {
        let server = server.trim();
        let written = if server.contains("://") {
            server.to_owned()
        } else {
            format!("http://{server}")
        };
        let mut base = Url::parse(&written).map_err(|e| {
            Error::usage(format!(
                "`{}` is not a broker server address ({e}); write it as http://HOST:PORT",
                broker_core::redact::url_credentials(server)
            ))
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(Error::usage(format!(
                "`{}` is not a broker server address; write it as http://HOST:PORT or https://HOST:PORT",
                broker_core::redact::url_credentials(server)
            )));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(Error::usage(
                "the broker server address carries a user or password; give the server's token \
                 with BROKER_SERVER_TOKEN (or `server_token` in the settings) instead",
            ));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        base.set_query(None);
        base.set_fragment(None);
        let mut client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(pem) = ca {
            let certificates = reqwest::Certificate::from_pem_bundle(pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| {
                    Error::configuration(
                        "the broker server's CA (`server_ca`, BROKER_SERVER_CA) holds no PEM \
                         certificate; give the file of the certificate that signed the server's",
                    )
                })?;
            for certificate in certificates {
                client = client.add_root_certificate(certificate);
            }
        }
        let client = client
            .build()
            .map_err(|e| Error::internal("setting up the HTTP client", e))?;
        Ok(Http {
            client,
            base,
            token,
        })
    }

    /// The server's address as messages show it: `http://127.0.0.1:8420`.
    pub(crate) fn shown(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_owned()
    }

    /// `METHOD PATH` (relative to the server's address, e.g. `api/v1/hosts`) with `body` as JSON;
    /// a 2xx answer, or the error its problem document maps to.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, Error> {
        let mut url = self
            .base
            .join(path)
            .map_err(|e| Error::internal(format!("building the address of `{path}`"), e))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut bearer = HeaderValue::from_str(&format!("Bearer {}", self.token.expose_secret()))
            .map_err(|_| {
            Error::usage(
                "the broker server token holds characters a header cannot; \
                     copy it again from `broker serve token add`",
            )
        })?;
        bearer.set_sensitive(true);
        let mut request = self
            .client
            .request(method.clone(), url)
            .header(AUTHORIZATION, bearer);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.unreachable(e))?
            .to_vec();
        if status.is_success() {
            return Ok(Answer { status, body });
        }
        if status.is_redirection() {
            return Err(Error::user(format!(
                "the broker server at {} answered `{method} /{path}` with a redirect ({status}), \
                 which broker does not follow (its token must not go elsewhere); give the server's \
                 own address with --server",
                self.shown()
            )));
        }
        Err(self.refused(status, &body))
    }

    /// As [`Http::send`], the answer's body read as `T`.
    pub(crate) async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&serde_json::Value>,
    ) -> Result<T, Error> {
        let answer = self.send(method, path, query, body).await?;
        self.read(path, &answer.body)
    }

    /// A body read as `T`.
    pub(crate) fn read<T: DeserializeOwned>(&self, path: &str, body: &[u8]) -> Result<T, Error> {
        serde_json::from_slice(body).map_err(|e| {
            Error::internal(
                format!(
                    "the broker server at {} answered `/{path}` with what this broker cannot read; \
                     is it a broker server of the same version?",
                    self.shown()
                ),
                e,
            )
        })
    }

    fn unreachable(&self, error: reqwest::Error) -> Error {
        // reqwest's message names the URL; the server's address is said once, here.
        Error::internal(
            format!(
                "cannot reach the broker server at {} (is `broker serve` running there?)",
                self.shown()
            ),
            error.without_url(),
        )
    }

    /// The error a refused request maps to.
    pub(crate) fn refused(&self, status: StatusCode, body: &[u8]) -> Error {
        problem_error(&self.shown(), status, &detail_of(status, body))
    }
}

/// What a problem document (or any other error body) says.
pub(crate) fn detail_of(status: StatusCode, body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Problem {
        detail: String,
    }
    match serde_json::from_slice::<Problem>(body) {
        Ok(problem) => problem.detail,
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                status.canonical_reason().unwrap_or("error").to_lowercase()
            } else {
                text.chars().take(500).collect()
            }
        }
    }
}

/// The error a problem of `status` saying `detail` maps to: the one the same failure is locally,
/// so the exit code is the same (401 → 5, 403 → 6, 400 → 2, 404/409/422 → 13, 502/504 → 7,
/// 501 → 9, others → 1).
pub(crate) fn problem_error(server: &str, status: StatusCode, detail: &str) -> Error {
    match status.as_u16() {
        401 => Error::Authentication {
            message: format!(
                "the broker server at {server} refused the token: {detail}; set \
                 BROKER_SERVER_TOKEN (or `server_token` in the settings) to a token of that server"
            ),
            source: None,
        },
        403 => Error::Permission {
            message: format!("the broker server at {server}: {detail}"),
            source: None,
        },
        400 => Error::usage(detail),
        404 | 409 | 422 => Error::user(detail),
        502 | 504 => Error::provider(format!("broker server at {server}"), detail),
        501 => match detail.split_once(" does not support ") {
            Some((provider, operation)) => Error::NotImplemented {
                provider: provider.to_owned(),
                operation: operation.to_owned(),
            },
            None => Error::provider(format!("broker server at {server}"), detail),
        },
        _ => Error::Internal {
            message: format!("the broker server at {server} failed ({status}): {detail}"),
            source: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_map_to_the_exit_codes_of_the_same_failures_locally() {
        let code = |status: u16| {
            problem_error("http://s", StatusCode::from_u16(status).unwrap(), "x").exit_code()
        };
        let codes: Vec<i32> = [400, 401, 403, 404, 409, 422, 500, 501, 502, 503, 504]
            .into_iter()
            .map(code)
            .collect();
        assert_eq!(codes, [2, 5, 6, 13, 13, 13, 1, 7, 7, 1, 7]);
        let e = problem_error(
            "http://s",
            StatusCode::NOT_IMPLEMENTED,
            "TestProvider does not support extend",
        );
        assert_eq!(
            (e.exit_code(), e.to_string().as_str()),
            (9, "TestProvider does not support extend")
        );
    }

    #[test]
    fn a_problem_document_gives_its_detail_and_anything_else_its_text() {
        let ok = StatusCode::CONFLICT;
        assert_eq!(
            detail_of(ok, br#"{"status":409,"detail":"in use"}"#),
            "in use"
        );
        assert_eq!(detail_of(ok, b" busy \n"), "busy");
        assert_eq!(detail_of(ok, b""), "conflict");
    }

    #[test]
    fn addresses_are_checked_and_never_carry_credentials() {
        let token = || SecretString::from("t0ken".to_owned());
        let http = Http::new("http://127.0.0.1:8420", token(), None).unwrap();
        assert_eq!(http.shown(), "http://127.0.0.1:8420");
        assert!(!format!("{http:?}").contains("t0ken"));
        let e = Http::new("http://me:pw@127.0.0.1:1/", token(), None).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(!e.to_string().contains("pw"), "{e}");
        let bare = Http::new("127.0.0.1:8420/broker", token(), None).unwrap();
        assert_eq!(bare.shown(), "http://127.0.0.1:8420/broker");
        for wrong in ["ftp://h/", "http://", "not a url"] {
            assert_eq!(
                Http::new(wrong, token(), None).unwrap_err().exit_code(),
                2,
                "{wrong}"
            );
        }
        for not_pem in [&b"not a certificate"[..], b""] {
            let e = Http::new("https://h/", token(), Some(not_pem)).unwrap_err();
            assert_eq!(e.exit_code(), 8, "{e}");
        }
    }
}
