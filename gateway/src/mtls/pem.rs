//! Reading PEM files: the TLS listener's, and the CA bundles trusted for a
//! provider (`caFile`) or a JWK Set URL. Every error names the file, so a
//! gateway that cannot start says which file to fix.

use std::path::{Path, PathBuf};

use rustls::{
    RootCertStore,
    pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, pem::PemObject},
};

use super::TlsError;

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn invalid(path: &Path, message: impl Into<String>) -> TlsError {
    TlsError::Invalid {
        path: PathBuf::from(path),
        message: message.into(),
    }
}

/// Every `what` block (`CERTIFICATE`, `X509 CRL`) of the file, in order.
fn blocks<T: PemObject>(path: &Path, what: &str) -> Result<Vec<T>, TlsError> {
    let bytes = read(path)?;
    let items = T::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(path, format!("not valid PEM: {e}")))?;
    if items.is_empty() {
        return Err(invalid(path, format!("no `BEGIN {what}` block found")));
    }
    Ok(items)
}

/// Every `CERTIFICATE` block of the file, in order (a chain: leaf first).
pub(super) fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    blocks(path, "CERTIFICATE")
}

/// The first private key of the file (PKCS#8, PKCS#1 RSA or SEC1 EC).
pub(super) fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => invalid(
            path,
            "no private key found (`BEGIN PRIVATE KEY`, `BEGIN RSA PRIVATE KEY` or `BEGIN EC PRIVATE KEY`)",
        ),
        e => invalid(path, format!("not valid PEM: {e}")),
    })
}

/// A trust store holding every certificate of the file.
pub(crate) fn trust_anchors(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for (i, cert) in certificates(path)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            invalid(
                path,
                format!("certificate {} cannot be a trust anchor: {e}", i + 1),
            )
        })?;
    }
    Ok(roots)
}

/// Every `X509 CRL` block of the file.
pub(super) fn revocation_lists(
    path: &Path,
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    blocks(path, "X509 CRL")
}
