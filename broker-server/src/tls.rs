//! TLS for the listener: a PEM certificate chain and a PEM private key, served by rustls with the
//! ring provider.

use std::path::Path;
use std::sync::Arc;

use broker_core::{Error, Result};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;

use crate::options::TlsFiles;

/// The acceptor for `files`: the chain and the key read, parsed and checked to belong together.
///
/// # Errors
/// [`Error::Configuration`] naming the file that cannot be read, holds no PEM certificate or key,
/// or whose key is not the certificate's.
pub(crate) fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor> {
    let chain = read(&files.certificate, "certificate")?;
    let certificates = CertificateDer::pem_slice_iter(&chain)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| unusable(&files.certificate, "certificate", &e))?;
    if certificates.is_empty() {
        return Err(unusable(
            &files.certificate,
            "certificate",
            &"it holds no `BEGIN CERTIFICATE` block",
        ));
    }
    let key = read(&files.key, "key")?;
    let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| unusable(&files.key, "key", &e))?;
    let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::configuration(format!("cannot set up TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .map_err(|e| {
            Error::configuration(format!(
                "the TLS key {} does not go with the certificate {} ({e}); give the key the \
                 certificate was made for",
                files.key.display(),
                files.certificate.display()
            ))
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Error::configuration(format!(
            "cannot read the TLS {what} {}: {e}; set `serve.tls.{what}` (or --tls-{what}) to a \
             readable PEM file",
            path.display()
        ))
    })
}

fn unusable(path: &Path, what: &str, cause: &dyn std::fmt::Display) -> Error {
    Error::configuration(format!(
        "the TLS {what} {} is not a PEM {what}: {cause}; set `serve.tls.{what}` (or --tls-{what}) \
         to a PEM file",
        path.display()
    ))
}
