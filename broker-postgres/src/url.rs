//! The database URL: parsed once, kept as a secret, shown without its password.
//!
//! The URL is libpq's (`postgres://user:password@host:port/db?sslmode=…&sslrootcert=…`). The
//! driver knows `sslmode` `disable`, `prefer` and `require` only and no `sslrootcert`: those are
//! read here, as libpq reads them: `prefer` (the default) and `require` encrypt without checking
//! the server's certificate, unless `sslrootcert` names a CA file; `verify-ca` and `verify-full`
//! check it — against `sslrootcert`, else the system's roots — and its name (both as
//! `verify-full`). `owner_lease` (seconds, broker's own) is how long a process using the store
//! counts as running without renewing its lease.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use broker_core::{Error, Result};
use secrecy::{ExposeSecret, SecretString};

use crate::pool::{Step, StepResult};

/// How TLS is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tls {
    /// No TLS (`sslmode=disable`).
    Off,
    /// TLS when the server offers it (`prefer`, libpq's default), or always (`require` and the
    /// `verify-…` modes).
    On { required: bool, verify: Verify },
}

/// Whether and against what the server's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verify {
    /// Not checked (`prefer` and `require` without `sslrootcert`, as libpq).
    No,
    /// Against the CA certificates of this PEM file.
    Roots(PathBuf),
    /// Against the system's roots.
    System,
}

/// A parsed database URL.
pub(crate) struct DbUrl {
    /// What the driver is given: the URL without broker's and libpq-only parameters.
    driver: SecretString,
    /// The URL without password, for messages.
    shown: String,
    tls: Tls,
    owner_lease: Duration,
}

impl std::fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbUrl")
            .field("url", &self.shown)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// How long a process's lease lasts unless renewed, by default.
pub(crate) const DEFAULT_OWNER_LEASE: Duration = Duration::from_secs(60);

/// Whether `text` is a PostgreSQL URL (rather than an inventory file's path).
pub fn is_postgres_url(text: &str) -> bool {
    text.starts_with("postgres://") || text.starts_with("postgresql://")
}

impl DbUrl {
    /// Parses `url`.
    ///
    /// # Errors
    /// [`Error::Configuration`] naming the URL without its password.
    pub(crate) fn parse(url: &SecretString) -> Result<Self> {
        let url = url.expose_secret();
        let shown = without_password(url);
        if !is_postgres_url(url) {
            return Err(Error::configuration(format!(
                "`{shown}` is no PostgreSQL URL: one starts with `postgres://`"
            )));
        }
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut kept: Vec<&str> = Vec::new();
        let mut mode = "prefer".to_owned();
        let mut root_cert = None;
        let mut owner_lease = DEFAULT_OWNER_LEASE;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sslmode" => mode = decode(value),
                "sslrootcert" => root_cert = Some(PathBuf::from(decode(value))),
                "owner_lease" => {
                    owner_lease = decode(value)
                        .parse::<u64>()
                        .ok()
                        .filter(|s| *s > 0)
                        .map(Duration::from_secs)
                        .ok_or_else(|| {
                            Error::configuration(format!(
                                "`owner_lease` in `{shown}` must be a whole number of seconds above 0"
                            ))
                        })?;
                }
                _ => kept.push(pair),
            }
        }
        let given = |root_cert: Option<PathBuf>| root_cert.map_or(Verify::No, Verify::Roots);
        let (tls, driver_mode) = match mode.as_str() {
            "disable" => (Tls::Off, "disable"),
            "allow" | "prefer" => (
                Tls::On {
                    required: false,
                    verify: given(root_cert),
                },
                "prefer",
            ),
            "require" => (
                Tls::On {
                    required: true,
                    verify: given(root_cert),
                },
                "require",
            ),
            "verify-ca" | "verify-full" => (
                Tls::On {
                    required: true,
                    verify: root_cert.map_or(Verify::System, Verify::Roots),
                },
                "require",
            ),
            other => {
                return Err(Error::configuration(format!(
                    "unknown `sslmode={other}` in `{shown}`; use disable, prefer, require, \
                     verify-ca or verify-full"
                )));
            }
        };
        kept.push(if driver_mode == "disable" {
            "sslmode=disable"
        } else if driver_mode == "prefer" {
            "sslmode=prefer"
        } else {
            "sslmode=require"
        });
        let driver = format!("{base}?{}", kept.join("&"));
        Ok(DbUrl {
            driver: SecretString::from(driver),
            shown,
            tls,
            owner_lease,
        })
    }

    /// The URL without password.
    pub(crate) fn shown(&self) -> &str {
        &self.shown
    }

    /// How long a process's lease lasts unless renewed.
    pub(crate) fn owner_lease(&self) -> Duration {
        self.owner_lease
    }

    /// A new connection.
    ///
    /// # Errors
    /// [`Step::Db`] with the driver's error (the server cannot be reached, refuses the credentials or
    /// the TLS handshake fails); [`Step::Refused`] when the URL does not parse or the CA file named
    /// cannot be read.
    pub(crate) fn try_connect(&self) -> StepResult<postgres::Client> {
        let mut config: postgres::Config = self
            .driver
            .expose_secret()
            .parse()
            .map_err(|e| Step::Refused(self.error("reading the inventory database URL", &e)))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let connected = match &self.tls {
            Tls::Off => config.connect(postgres::NoTls),
            Tls::On { verify, .. } => {
                let tls = self.tls_config(verify).map_err(Step::Refused)?;
                config.connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
            }
        };
        Ok(connected?)
    }

    fn tls_config(&self, verify: &Verify) -> Result<rustls::ClientConfig> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::internal("cannot set up TLS for the inventory database", e))?;
        let mut roots = rustls::RootCertStore::empty();
        match verify {
            Verify::No => {
                return Ok(builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(crate::tls::Unchecked(provider)))
                    .with_no_client_auth());
            }
            Verify::Roots(path) => {
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                    .and_then(Iterator::collect)
                    .map_err(|e| {
                        Error::configuration(format!(
                            "cannot read the CA certificates `sslrootcert` names (`{}`) for `{}`: \
                             {e}",
                            path.display(),
                            self.shown
                        ))
                    })?;
                roots.add_parsable_certificates(certs);
            }
            Verify::System => {
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            }
        }
        Ok(builder.with_root_certificates(roots).with_no_client_auth())
    }

    /// A database error as broker's, naming the URL without password: refused credentials are an
    /// authentication error (exit code 5), anything else is I/O (exit code 1).
    pub(crate) fn error(&self, action: &'static str, e: &postgres::Error) -> Error {
        if e.code().is_some_and(|c| c.code().starts_with("28")) {
            return Error::Authentication {
                message: format!(
                    "the inventory database `{}` refused the credentials: {}; check the user and \
                     password in `inventory` (or BROKER_INVENTORY)",
                    self.shown,
                    describe(e)
                ),
                source: None,
            };
        }
        Error::io(
            action,
            PathBuf::from(&self.shown),
            std::io::Error::other(describe(e)),
        )
    }
}

/// The driver's error with its causes on one line (its own text alone often says only `db error`).
pub(crate) fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// `url` without the password in its user part or its `password=` parameter.
fn without_password(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let base = match base.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let authority = match authority.rsplit_once('@') {
                Some((user, host)) => {
                    let user = user.split_once(':').map_or(user, |(u, _)| u);
                    format!("{user}@{host}")
                }
                None => authority.to_owned(),
            };
            format!("{scheme}://{authority}{path}")
        }
        None => base.to_owned(),
    };
    let query: Vec<&str> = query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("password="))
        .collect();
    if query.is_empty() {
        base
    } else {
        format!("{base}?{}", query.join("&"))
    }
}

/// Percent-decodes a query value (`%2F` → `/`); anything malformed is kept as it is.
fn decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(url: &str) -> DbUrl {
        DbUrl::parse(&SecretString::from(url.to_owned())).unwrap()
    }

    #[test]
    fn the_shown_url_has_no_password() {
        for (url, shown) in [
            (
                "postgres://broker:s3cret@db.example:5432/inv?sslmode=require",
                "postgres://broker@db.example:5432/inv?sslmode=require",
            ),
            (
                "postgresql://u@h/d?password=s3cret&application_name=x",
                "postgresql://u@h/d?application_name=x",
            ),
            ("postgres://h/d", "postgres://h/d"),
            ("postgres://u:p%40ss@h", "postgres://u@h"),
        ] {
            let db = parsed(url);
            assert_eq!(db.shown(), shown);
            assert!(!format!("{db:?}").contains("s3cret"));
        }
    }

    #[test]
    fn libpq_tls_parameters_are_read_here_and_not_given_to_the_driver() {
        let db = parsed(
            "postgres://u:p@h/d?sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.pem&owner_lease=5&application_name=a",
        );
        assert_eq!(
            db.tls,
            Tls::On {
                required: true,
                verify: Verify::Roots(PathBuf::from("/tmp/ca.pem"))
            }
        );
        assert_eq!(db.owner_lease(), Duration::from_secs(5));
        assert_eq!(
            db.driver.expose_secret(),
            "postgres://u:p@h/d?application_name=a&sslmode=require"
        );
        assert_eq!(parsed("postgres://h/d?sslmode=disable").tls, Tls::Off);
        assert_eq!(
            parsed("postgres://h/d").tls,
            Tls::On {
                required: false,
                verify: Verify::No
            }
        );
        assert_eq!(
            parsed("postgres://h/d?sslmode=verify-ca").tls,
            Tls::On {
                required: true,
                verify: Verify::System
            }
        );
    }

    #[test]
    fn a_bad_url_is_a_configuration_error_without_the_password() {
        for (url, says) in [
            (
                "mysql://u:s3cret@h/d",
                "`mysql://***@h/d` is no PostgreSQL URL",
            ),
            (
                "postgres://u:s3cret@h/d?sslmode=maybe",
                "unknown `sslmode=maybe` in `postgres://***@h/d?sslmode=maybe`",
            ),
            (
                "postgres://u:s3cret@h/d?owner_lease=0",
                "`owner_lease` in `postgres://***@h/d?owner_lease=0` must be",
            ),
        ] {
            let err = DbUrl::parse(&SecretString::from(url.to_owned())).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(says), "{text}");
            assert!(!text.contains("s3cret"), "{text}");
            assert_eq!(err.exit_code(), 8);
        }
    }
}
