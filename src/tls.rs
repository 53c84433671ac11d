//! TLS as a client, to Postgres and to a JWKS URL: rustls (ring) trusting
//! the Mozilla roots, plus an optional CA file for private certificate
//! authorities. For Postgres the URL's `sslmode` decides: `disable` plain,
//! `prefer` (the default) TLS when the server offers it, `require` TLS or no
//! connection. Certificates are always verified.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// What every Postgres connection of the service is made with.
pub type Connector = tokio_postgres_rustls::MakeRustlsConnect;

/// Why TLS to Postgres could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CA file could not be read or holds no usable certificate.
    #[error("cannot read CA certificates from {path}: {message}")]
    Ca {
        /// The file named by `--pg-ca-file`.
        path: PathBuf,
        /// Why its certificates could not be used.
        message: String,
    },
    /// The client configuration was refused.
    #[error("TLS setup")]
    Rustls(#[from] rustls::Error),
}

/// A connector trusting the Mozilla roots and the certificates in `ca_file`.
pub fn connector(ca_file: Option<&Path>) -> Result<Connector, Error> {
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(
        client_config(ca_file)?,
    ))
}

/// A client configuration trusting the Mozilla roots and the certificates in `ca_file`.
pub fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let bad = |message: String| Error::Ca {
            path: path.to_owned(),
            message,
        };
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
            let cert = cert.map_err(|e| bad(e.to_string()))?;
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(bad("no certificate in the file".into()));
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth())
}
