//! The TLS listener and client-certificate (mTLS) identity.
//!
//! rustls (ring provider, chosen explicitly) terminates TLS with ALPN `h2`
//! and `http/1.1`. Client certificates are verified against the configured
//! CA bundle (the operator's CA) by rustls' WebPKI verifier during the
//! handshake: a certificate from another CA, expired, or not for client
//! auth fails the handshake, so no request is ever read from it. With
//! `require_client_cert` off, a client may also connect without one and
//! authenticate each request with a key or token as on the plaintext port.
//!
//! With client CRL files, a certificate revoked by its issuer fails the
//! handshake too. Revocation is checked for every certificate of the chain
//! (so each CA that issued one needs its CRL in the files), a certificate
//! whose issuer has no CRL there is refused, and so is every certificate
//! once a CRL is past its next update: stale revocation data means unknown
//! status, and unknown status is a refusal. [`TlsServer::watch`] re-reads
//! the files when they change, so a new CRL takes effect without a restart.
//!
//! A verified certificate's identity is read once per connection (see
//! [`spiffe`]) and attached to every request of that connection as a
//! [`ClientCert`] extension. It then wins over any key or token in the
//! request's headers, which are not consulted (SDKs insist on sending some
//! key) and, like every client credential, never forwarded.

mod pem;
pub(crate) use pem::trust_anchors;
pub mod spiffe;

use std::{
    path::PathBuf,
    sync::{Arc, RwLock},
    time::Duration,
};

use hyper::StatusCode;
use rustls::{
    ServerConfig,
    pki_types::CertificateDer,
    server::{WebPkiClientVerifier, danger::ClientCertVerifier},
};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use x509_cert::{
    Certificate,
    der::{Decode, oid::AssociatedOid},
    ext::pkix::{SubjectAltName, name::GeneralName},
};

use crate::{live::Live, refusal::Refusal};
use spiffe::{IdentityError, ServiceAccount};

/// Trust domain used when the config names none (the Kubernetes default).
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the TLS listener is built from.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    /// The server's certificate chain (PEM, leaf first).
    pub cert_file: PathBuf,
    /// The server's private key (PEM).
    pub key_file: PathBuf,
    /// CA bundle that client certificates must chain to. Without it the
    /// listener asks for no client certificate.
    pub client_ca_file: Option<PathBuf>,
    /// Certificate revocation lists (PEM) for the client CA and any
    /// intermediate CAs. Needs `client_ca_file`.
    pub client_crl_files: Vec<PathBuf>,
    /// Refuse the handshake of a client without a certificate.
    pub require_client_cert: bool,
    /// The SPIFFE trust domain client identities must be in.
    pub trust_domain: String,
}

/// Why the TLS listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("tls: {0}")]
    Settings(String),
}

/// A TLS acceptor and the trust domain its client identities are read in.
/// Clones share the acceptor, so a reload reaches every clone.
#[derive(Clone)]
pub struct TlsServer {
    acceptor: Arc<RwLock<TlsAcceptor>>,
    settings: Arc<TlsSettings>,
    trust_domain: Arc<str>,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

impl TlsServer {
    /// Read the PEM files and build the rustls server config.
    pub fn new(settings: &TlsSettings) -> Result<TlsServer, TlsError> {
        if !spiffe::is_trust_domain(&settings.trust_domain) {
            return Err(TlsError::Settings(format!(
                "trust domain {:?} may use only lowercase letters, digits, '.', '-' and '_'",
                settings.trust_domain
            )));
        }
        let acceptor = acceptor(settings)?;
        Ok(TlsServer {
            acceptor: Arc::new(RwLock::new(acceptor)),
            settings: Arc::new(settings.clone()),
            trust_domain: settings.trust_domain.as_str().into(),
        })
    }

    /// Read every file again and serve new handshakes with what they say
    /// now. On an error nothing changes (the previous files stay in force)
    /// and the error says which file is wrong.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = acceptor(&self.settings)?;
        *self.acceptor.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// Every `every`, reload if any of the files changed, logging what
    /// happened. Runs until the runtime stops.
    pub fn watch(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let s = &self.settings;
        let files = [&s.cert_file, &s.key_file]
            .into_iter()
            .chain(&s.client_ca_file)
            .chain(&s.client_crl_files)
            .cloned()
            .collect();
        let server = self.clone();
        crate::file_watch::watch(files, every, move || match server.reload() {
            Ok(()) => tracing::info!("TLS files changed; reloaded them"),
            Err(e) => tracing::error!(
                error = %e,
                "TLS files changed but cannot be used; still serving the previous ones"
            ),
        })
    }

    /// Complete the handshake on `stream` and read the client's identity,
    /// if it presented a certificate (which rustls has verified by then).
    pub async fn accept(
        &self,
        stream: TcpStream,
    ) -> std::io::Result<(TlsStream<TcpStream>, Option<ClientCert>)> {
        let acceptor = self
            .acceptor
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake"))??;
        let cert = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(<[_]>::first)
            .map(|leaf| ClientCert::read(leaf, &self.trust_domain));
        if let Some(cert) = &cert {
            match cert.service_account() {
                Ok(sa) => {
                    tracing::debug!(namespace = %sa.namespace, service_account = %sa.name, "client certificate")
                }
                Err(e) => tracing::info!(error = %e, "client certificate names no usable identity"),
            }
        }
        Ok((tls, cert))
    }
}

/// The client-certificate verifier `settings` ask for.
fn client_verifier(
    settings: &TlsSettings,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let Some(path) = &settings.client_ca_file else {
        if settings.require_client_cert {
            return Err(TlsError::Settings(
                "requiring client certificates needs a client CA file".into(),
            ));
        }
        if !settings.client_crl_files.is_empty() {
            return Err(TlsError::Settings(
                "client CRL files need a client CA file".into(),
            ));
        }
        return Ok(WebPkiClientVerifier::no_client_auth());
    };
    let roots = Arc::new(pem::trust_anchors(path)?);
    let mut builder = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
    if !settings.client_crl_files.is_empty() {
        let mut crls = Vec::new();
        for file in &settings.client_crl_files {
            crls.extend(pem::revocation_lists(file)?);
        }
        // rustls' defaults already refuse a certificate whose issuer has no
        // CRL here; a CRL past its next update is refused as well.
        builder = builder.with_crls(crls).enforce_revocation_expiration();
    }
    if !settings.require_client_cert {
        builder = builder.allow_unauthenticated();
    }
    builder.build().map_err(|e| match e {
        rustls::server::VerifierBuilderError::InvalidCrl(_) => TlsError::Settings(format!(
            "a CRL in {} cannot be used: {e}",
            settings
                .client_crl_files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        e => TlsError::Invalid {
            path: path.clone(),
            message: format!("cannot verify client certificates with it: {e}"),
        },
    })
}

/// A TLS acceptor for `settings`, every file read afresh.
fn acceptor(settings: &TlsSettings) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = client_verifier(settings, &provider)?;
    let chain = pem::certificates(&settings.cert_file)?;
    let key = pem::private_key(&settings.key_file)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Settings(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Invalid {
            path: settings.key_file.clone(),
            message: format!(
                "cannot serve it with the certificate in {}: {e}",
                settings.cert_file.display()
            ),
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if settings.client_ca_file.is_some() {
        // A resumed session (session id or TLS 1.3 ticket) brings back the
        // client certificate it was opened with without verifying it again,
        // so a certificate that has since expired, or whose CRL has gone
        // stale, would go on working. Every connection verifies afresh.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The identity of a connection's verified client certificate, attached to
/// each of its requests.
#[derive(Clone, Debug)]
pub struct ClientCert(Arc<Result<Identified, IdentityError>>);

#[derive(Debug)]
struct Identified {
    account: ServiceAccount,
    /// `system:serviceaccount:NS:NAME`, computed once per connection.
    subject: String,
}

impl ClientCert {
    /// The identity `leaf` names in `trust_domain`.
    pub fn read(leaf: &CertificateDer<'_>, trust_domain: &str) -> ClientCert {
        let identity = uri_sans(leaf).and_then(|uris| {
            let uris: Vec<&str> = uris.iter().map(String::as_str).collect();
            let account = spiffe::service_account(&uris, trust_domain)?;
            Ok(Identified {
                subject: account.subject(),
                account,
            })
        });
        ClientCert(Arc::new(identity))
    }

    /// The service account the certificate names, or why it names none.
    pub fn service_account(&self) -> Result<&ServiceAccount, &IdentityError> {
        self.0.as_ref().as_ref().map(|i| &i.account)
    }

    /// The agent this certificate is, through the same service-account table
    /// tokens are resolved with.
    pub(crate) fn agent(&self, live: &Live) -> Result<String, Refusal> {
        let identified = self.0.as_ref().as_ref().map_err(|e| {
            Refusal::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client_certificate",
                e.to_string(),
            )
        })?;
        live.agent_for_service_account(&identified.subject)
            .map(str::to_owned)
            .ok_or_else(|| {
                let ServiceAccount { namespace, name } = &identified.account;
                Refusal::new(
                    StatusCode::FORBIDDEN,
                    "unknown_agent",
                    format!(
                        "no Agent runs as service account {namespace}/{name} (the client certificate's identity)"
                    ),
                )
            })
    }
}

/// The URI SANs of a DER certificate.
fn uri_sans(der: &[u8]) -> Result<Vec<String>, IdentityError> {
    let unreadable = |e: x509_cert::der::Error| IdentityError::Unreadable(e.to_string());
    let cert = Certificate::from_der(der).map_err(unreadable)?;
    let mut uris = Vec::new();
    let extensions = cert.tbs_certificate.extensions.unwrap_or_default();
    for ext in extensions
        .iter()
        .filter(|e| e.extn_id == SubjectAltName::OID)
    {
        let names = SubjectAltName::from_der(ext.extn_value.as_bytes()).map_err(unreadable)?;
        for name in names.0 {
            if let GeneralName::UniformResourceIdentifier(uri) = name {
                uris.push(uri.to_string());
            }
        }
    }
    Ok(uris)
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // table tests spell out their rows
mod tests {
    use std::collections::HashMap;

    use super::*;
    use rcgen::{CertificateParams, KeyPair, SanType};

    fn cert(sans: Vec<SanType>) -> CertificateDer<'static> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = sans;
        params
            .self_signed(&KeyPair::generate().unwrap())
            .unwrap()
            .der()
            .clone()
    }

    fn uri(u: &str) -> SanType {
        SanType::URI(u.try_into().unwrap())
    }

    #[test]
    fn only_uri_sans_are_read() {
        let der = cert(vec![
            SanType::DnsName("bot.team.svc".try_into().unwrap()),
            uri("spiffe://cluster.local/ns/team/sa/bot"),
            SanType::Rfc822Name("bot@example.org".try_into().unwrap()),
            uri("https://example.org/x"),
        ]);
        assert_eq!(
            uri_sans(&der).unwrap(),
            [
                "spiffe://cluster.local/ns/team/sa/bot",
                "https://example.org/x"
            ]
        );
        assert_eq!(uri_sans(&cert(vec![])).unwrap(), Vec::<String>::new());
        assert!(matches!(
            uri_sans(b"not a certificate"),
            Err(IdentityError::Unreadable(_))
        ));
    }

    #[test]
    fn a_certificate_resolves_through_the_service_account_table() {
        let live = Live {
            service_accounts: Arc::new(HashMap::from([(
                "system:serviceaccount:team:bot-sa".to_owned(),
                "team/bot".to_owned(),
            )])),
            ..Live::default()
        };
        let agent = |sans: Vec<SanType>| {
            ClientCert::read(&cert(sans), DEFAULT_TRUST_DOMAIN)
                .agent(&live)
                .map_err(|r| (r.status.as_u16(), r.reason))
        };
        let cases: Vec<(Vec<SanType>, Result<String, (u16, String)>)> = vec![
            (
                vec![uri("spiffe://cluster.local/ns/team/sa/bot-sa")],
                Ok("team/bot".into()),
            ),
            (
                vec![uri("spiffe://cluster.local/ns/team/sa/other")],
                Err((403, "unknown_agent".into())),
            ),
            (
                vec![uri("spiffe://cluster.local/ns/other/sa/bot-sa")],
                Err((403, "unknown_agent".into())),
            ),
            (
                vec![uri("spiffe://elsewhere/ns/team/sa/bot-sa")],
                Err((401, "invalid_client_certificate".into())),
            ),
            (vec![], Err((401, "invalid_client_certificate".into()))),
        ];
        for (sans, want) in cases {
            assert_eq!(agent(sans.clone()), want, "{sans:?}");
        }
    }
}
