//! How the server listens and what it bounds: the address (loopback unless told otherwise), request
//! body size, and how long a client may take to send its request.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use broker_core::{Error, Result, Settings};

/// Where `broker serve` listens when no `--listen` is given.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8420";

/// The PEM files TLS is served with.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsFiles {
    /// The certificate chain: the server's certificate first, then its intermediates.
    pub certificate: PathBuf,
    /// The certificate's private key (PKCS#8, PKCS#1 or SEC1), unencrypted.
    pub key: PathBuf,
}

impl TlsFiles {
    /// The certificate chain and key at these paths.
    pub fn new(certificate: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        TlsFiles {
            certificate: certificate.into(),
            key: key.into(),
        }
    }
}

/// What the server is told at start.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServeOptions {
    /// The address to listen on.
    pub listen: SocketAddr,
    /// Listen on an address other machines reach without TLS (`--insecure`).
    pub insecure: bool,
    /// Serve HTTPS with this certificate and key (`serve.tls`, `--tls-certificate`/`--tls-key`).
    pub tls: Option<TlsFiles>,
    /// The largest request body taken, in bytes; a larger one is refused with 413.
    pub body_limit: usize,
    /// How long a client may take to send a request's headers (also how long an idle connection
    /// stays open between requests).
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body.
    pub body_timeout: Duration,
    /// The longest a `?wait=true` request waits for its operation before it answers with the
    /// operation still running.
    pub wait_limit: Duration,
}

impl ServeOptions {
    /// The defaults, listening on `listen`: 1 MiB bodies, 10 s for headers and for a body, 10
    /// minutes of waiting.
    pub fn new(listen: SocketAddr) -> Self {
        ServeOptions {
            listen,
            insecure: false,
            tls: None,
            body_limit: 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            wait_limit: Duration::from_secs(600),
        }
    }
}

impl ServeOptions {
    /// The defaults of [`ServeOptions::new`], changed by the settings `serve.body_limit` (bytes),
    /// `serve.header_timeout` and `serve.body_timeout` (durations: `10s`, `1m`), and
    /// `serve.tls.certificate` with `serve.tls.key` (paths, relative ones from the settings'
    /// directory).
    ///
    /// # Errors
    /// [`Error::Configuration`] naming a setting that is not a number or a duration, or one of
    /// the TLS paths given without the other.
    pub fn from_settings(listen: SocketAddr, settings: &Settings) -> Result<Self> {
        let mut options = ServeOptions::new(listen);
        if let Some(value) = settings.get("serve.body_limit") {
            options.body_limit = broker_core::value::scalar_u64(value)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| {
                    Error::configuration("`serve.body_limit` must be a number of bytes")
                })?;
        }
        for (key, slot) in [
            ("serve.header_timeout", &mut options.header_timeout),
            ("serve.body_timeout", &mut options.body_timeout),
        ] {
            if let Some(value) = settings.get(key) {
                let text = broker_core::value::scalar_text(value).unwrap_or_default();
                *slot = broker_core::time::parse_duration(&text).map_err(|_| {
                    Error::configuration(format!("`{key}` must be a duration such as `10s`"))
                })?;
            }
        }
        options.tls = tls_files(settings)?;
        Ok(options)
    }
}

fn tls_files(settings: &Settings) -> Result<Option<TlsFiles>> {
    let path = |key: &str| {
        settings
            .get(key)
            .and_then(broker_core::value::scalar_text)
            .filter(|text| !text.is_empty())
            .map(|text| settings.directory().join(text))
    };
    match (path("serve.tls.certificate"), path("serve.tls.key")) {
        (Some(certificate), Some(key)) => Ok(Some(TlsFiles { certificate, key })),
        (None, None) => Ok(None),
        (Some(_), None) | (None, Some(_)) => Err(Error::configuration(
            "`serve.tls.certificate` and `serve.tls.key` go together: set both (PEM files) or \
             neither",
        )),
    }
}

/// Checks that the server may listen on `addr` without TLS: a loopback address always; another
/// only with `insecure`, and then the answer is the warning to log. (With TLS any address is
/// taken; this is not asked.)
///
/// # Errors
/// [`Error::Usage`] for a non-loopback address without `insecure`, saying why and what to do.
pub fn check_listen(addr: &SocketAddr, insecure: bool) -> Result<Option<String>> {
    if addr.ip().is_loopback() {
        return Ok(None);
    }
    if insecure {
        return Ok(Some(format!(
            "listening on {addr} without TLS (--insecure): bearer tokens and handoff secrets cross \
             the network in clear; put a TLS-terminating proxy in front or listen on 127.0.0.1"
        )));
    }
    Err(Error::usage(format!(
        "refusing to listen on {addr}: it is not a loopback address and no TLS certificate is \
         given, so tokens would cross the network in clear; give a certificate and key (--tls-certificate and \
         --tls-key, or `serve.tls` in the settings), listen on 127.0.0.1, or give --insecure to \
         do it anyway"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_is_taken_without_insecure() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(check_listen(&at("127.0.0.1:1"), false).unwrap(), None);
        assert_eq!(check_listen(&at("[::1]:1"), false).unwrap(), None);
        let refused = check_listen(&at("0.0.0.0:1"), false).unwrap_err();
        assert!(matches!(refused, Error::Usage { .. }));
        assert!(
            refused
                .to_string()
                .starts_with("refusing to listen on 0.0.0.0:1")
        );
        let warning = check_listen(&at("192.0.2.1:1"), true).unwrap().unwrap();
        assert!(warning.starts_with("listening on 192.0.2.1:1 without TLS"));
    }

    #[test]
    fn limits_come_from_the_settings() {
        let dir = tempfile::tempdir().unwrap();
        let at = "127.0.0.1:1".parse().unwrap();
        let settings = |yaml: &str| Settings::from_yaml(dir.path(), yaml).unwrap();
        let options = ServeOptions::from_settings(
            at,
            &settings("serve: {body_limit: 100, header_timeout: 2s, body_timeout: 1m}\n"),
        )
        .unwrap();
        assert_eq!(options.body_limit, 100);
        assert_eq!(options.header_timeout, Duration::from_secs(2));
        assert_eq!(options.body_timeout, Duration::from_secs(60));
        let bad = ServeOptions::from_settings(at, &settings("serve: {header_timeout: soon}\n"));
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("`serve.header_timeout` must be a duration")
        );
        let bad = ServeOptions::from_settings(at, &settings("serve: {body_limit: big}\n"));
        assert!(bad.is_err());
    }

    #[test]
    fn tls_paths_come_from_the_settings_relative_to_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let at = "127.0.0.1:1".parse().unwrap();
        let settings = |yaml: &str| Settings::from_yaml(dir.path(), yaml).unwrap();
        let options = ServeOptions::from_settings(
            at,
            &settings("serve: {tls: {certificate: tls/cert.pem, key: /etc/broker/key.pem}}\n"),
        )
        .unwrap();
        assert_eq!(
            options.tls,
            Some(TlsFiles::new(
                dir.path().join("tls/cert.pem"),
                "/etc/broker/key.pem"
            ))
        );
        let none = ServeOptions::from_settings(at, &settings("serve: {body_limit: 1}\n"));
        assert_eq!(none.unwrap().tls, None);
        let half = ServeOptions::from_settings(at, &settings("serve: {tls: {certificate: c}}\n"));
        assert!(half.unwrap_err().to_string().contains("go together"));
    }
}
