//! Certificates made at test time (rcgen, ring): CAs, the gateway's server
//! certificate, client certificates, and a TLS client that presents them.

use std::{net::SocketAddr, path::Path, sync::Arc};

use bytes::Bytes;
use caracal_gateway::mtls::{DEFAULT_TRUST_DOMAIN, TlsSettings};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SanType, SerialNumber, date_time_ymd,
};
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName},
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::harness::{Answer, TempDir};

pub struct Ca(CertifiedIssuer<'static, KeyPair>);

/// A certificate and its private key.
pub struct Issued {
    pub cert: CertificateDer<'static>,
    pub cert_pem: String,
    pub key: KeyPair,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ca(CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap())
    }

    pub fn pem(&self) -> String {
        self.0.pem()
    }

    fn issue(&self, params: CertificateParams) -> Issued {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.0).unwrap();
        Issued {
            cert: cert.der().clone(),
            cert_pem: cert.pem(),
            key,
        }
    }

    /// The gateway's certificate, for `localhost` and 127.0.0.1.
    pub fn server(&self) -> Issued {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A client certificate whose URI SANs are `uris`.
    pub fn client(&self, uris: &[&str]) -> Issued {
        self.client_params(uris, |_| {})
    }

    /// A client certificate that expired in 2021.
    pub fn expired_client(&self, uri: &str) -> Issued {
        self.client_params(&[uri], |p| {
            p.not_before = date_time_ymd(2020, 1, 1);
            p.not_after = date_time_ymd(2021, 1, 1);
        })
    }

    /// A client certificate that expires `seconds` from now.
    pub fn client_expiring_in(&self, uri: &str, seconds: u64) -> Issued {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let epoch = date_time_ymd(1970, 1, 1);
        self.client_params(&[uri], |p| {
            p.not_before = epoch + since_epoch - std::time::Duration::from_secs(60);
            p.not_after = epoch + since_epoch + std::time::Duration::from_secs(seconds);
        })
    }

    /// A client certificate with serial number `serial`, for revoking.
    pub fn client_with_serial(&self, uri: &str, serial: u64) -> Issued {
        self.client_params(&[uri], |p| {
            p.serial_number = Some(SerialNumber::from(serial))
        })
    }

    /// A CRL (PEM) revoking `serials`, current until 2099.
    pub fn crl(&self, serials: &[u64]) -> String {
        self.crl_until(serials, 2099)
    }

    /// A CRL (PEM) revoking `serials` whose next update was due in 2021.
    pub fn stale_crl(&self, serials: &[u64]) -> String {
        self.crl_until(serials, 2021)
    }

    fn crl_until(&self, serials: &[u64], next_update_year: i32) -> String {
        let params = CertificateRevocationListParams {
            this_update: date_time_ymd(2020, 1, 1),
            next_update: date_time_ymd(next_update_year, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|&serial| RevokedCertParams {
                    serial_number: SerialNumber::from(serial),
                    revocation_time: date_time_ymd(2020, 6, 1),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.0).unwrap().pem().unwrap()
    }

    fn client_params(&self, uris: &[&str], edit: impl FnOnce(&mut CertificateParams)) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "agent");
        params.subject_alt_names = uris
            .iter()
            .map(|u| SanType::URI((*u).try_into().unwrap()))
            .collect();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        edit(&mut params);
        self.issue(params)
    }
}

pub fn spiffe(namespace: &str, account: &str) -> String {
    format!("spiffe://{DEFAULT_TRUST_DOMAIN}/ns/{namespace}/sa/{account}")
}

/// The server's certificate, key and `ca` as client CA, written into `dir`.
pub fn settings(dir: &TempDir, ca: &Ca, require_client_cert: bool) -> TlsSettings {
    let server = ca.server();
    TlsSettings {
        cert_file: write(&dir.0, "server.pem", &server.cert_pem),
        key_file: write(&dir.0, "server-key.pem", &server.key.serialize_pem()),
        client_ca_file: Some(write(&dir.0, "ca.pem", &ca.pem())),
        client_crl_files: Vec::new(),
        require_client_cert,
        trust_domain: DEFAULT_TRUST_DOMAIN.into(),
    }
}

/// Which HTTP version to offer by ALPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alpn {
    H1,
    H2,
}

/// A TLS client trusting `server_ca`, presenting `cert` if given.
pub fn client_config(server_ca: &Ca, cert: Option<&Issued>, alpn: Alpn) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    roots.add(server_ca.0.der().clone()).unwrap();
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
    let mut config = match cert {
        Some(c) => builder
            .with_client_auth_cert(
                vec![c.cert.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.key.serialize_der())),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![match alpn {
        Alpn::H1 => b"http/1.1".to_vec(),
        Alpn::H2 => b"h2".to_vec(),
    }];
    config
}

/// One POST over a fresh TLS connection. `Err` is any failure before a
/// response arrives (the handshake refused included), as text.
pub async fn post_tls(
    addr: SocketAddr,
    config: ClientConfig,
    path: &str,
    headers: &[(&str, &str)],
    body: String,
) -> Result<(Version, Answer), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let connector = TlsConnector::from(Arc::new(config));
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    let io = TokioIo::new(tls);
    let uri = if h2 {
        format!("https://localhost{path}")
    } else {
        path.to_owned()
    };
    let mut req = Request::post(uri).header("host", "localhost");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body))).unwrap();
    // hyper's own message hides the TLS alert; keep the whole chain.
    let fail = |e: hyper::Error| {
        let mut text = format!("request: {e}");
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(&format!(": {s}"));
            source = s.source();
        }
        text
    };
    let resp = if h2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(fail)?;
        tokio::spawn(conn);
        send.send_request(req).await.map_err(fail)?
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(fail)?;
        tokio::spawn(conn);
        send.send_request(req).await.map_err(fail)?
    };
    let version = resp.version();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.map_err(fail)?.to_bytes();
    Ok((
        version,
        Answer {
            status,
            headers,
            body,
        },
    ))
}

/// Write `text` to `dir/name` and return the path.
pub fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A TLS server config presenting a certificate `ca` issued for
/// `localhost` and 127.0.0.1, with no client authentication: a provider
/// behind a private CA.
pub fn upstream_server_config(ca: &Ca) -> Arc<rustls::ServerConfig> {
    let server = ca.server();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server.key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![server.cert], key)
    .unwrap();
    Arc::new(config)
}
