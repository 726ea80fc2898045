//! The gateway config file: providers, prices and data-path limits.
//!
//! ```yaml
//! providers:
//!   - name: openai
//!     kind: openai
//!     baseUrl: https://api.openai.com
//!     apiKeyEnv: OPENAI_API_KEY
//!   - name: vllm            # in the cluster, behind a private CA
//!     kind: openai-compatible
//!     baseUrl: https://vllm.ml.svc:8443
//!     caFile: vllm-ca.pem   # relative to this file
//! prices:            # the price catalog (see docs/policies.md)
//!   version: "2026-11-22.1"
//!   models: [...]
//! budgetDenialStatus: 429   # or 402
//! maxRequestBytes: 4194304
//! spoolAck: fsync           # or write
//! spoolMaxPendingBytes: 67108864
//! upstreamConnectTimeoutSeconds: 10
//! tls:                      # optional: a TLS listener, mTLS with clientCaFile
//!   listen: 127.0.0.1:8443
//!   certFile: server.pem
//!   keyFile: server-key.pem
//!   clientCaFile: ca.pem
//!   clientCrlFiles: [ca.crl.pem]   # optional: revoked client certificates
//! ```
//!
//! Without a file, [`GatewayFile::mock`] is used: one `mock` provider with
//! two priced models, so `caracal dev` works with no network and no keys.

use std::path::Path;

use caracal_api::{
    Micros,
    prices::{ModelPrice, PriceCatalog},
};
use hyper::StatusCode;
use serde::Deserialize;

use super::{SetupError, io_error};
use crate::config::{Limits, Provider, ProviderConfig, ProviderKind};
use crate::jwt::{KeyError, VerifyKey};
use crate::mtls::{DEFAULT_TRUST_DOMAIN, TlsSettings};

fn key_error(path: &Path) -> impl Fn(KeyError) -> SetupError + '_ {
    move |e| SetupError::Invalid {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayFile {
    pub providers: Vec<ProviderConfig>,
    #[serde(default)]
    pub prices: PriceCatalog,
    #[serde(default)]
    pub budget_denial_status: Option<u16>,
    #[serde(default)]
    pub max_request_bytes: Option<usize>,
    /// `fsync` (default): a response finishes only after its event is
    /// fsync'd. `write`: after it is written (survives a killed gateway,
    /// not a lost machine); see docs/gateway.md.
    #[serde(default)]
    pub spool_ack: Option<SpoolAck>,
    /// Unshipped spool bytes beyond which requests are refused.
    #[serde(default)]
    pub spool_max_pending_bytes: Option<u64>,
    /// Accept service-account tokens (JWT, ES256 or RS256) as agent identity.
    #[serde(default)]
    pub service_account_tokens: Option<TokenConfig>,
    /// A TLS listener beside the plaintext one, verifying client
    /// certificates when `clientCaFile` is set.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// How long a TCP connect to a provider may take before the call is
    /// refused (`502 upstream_unreachable`, nothing charged); default 10.
    #[serde(default)]
    pub upstream_connect_timeout_seconds: Option<u64>,
}

/// The TLS listener, as written in the file. Paths are relative to the
/// config file.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConfig {
    pub listen: std::net::SocketAddr,
    /// The server's certificate chain (PEM, leaf first).
    pub cert_file: std::path::PathBuf,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: std::path::PathBuf,
    /// CA bundle (PEM) client certificates must chain to: the operator's CA.
    #[serde(default)]
    pub client_ca_file: Option<std::path::PathBuf>,
    /// Certificate revocation lists (PEM) of the client CA and any
    /// intermediate CAs; re-read when they change. With them, a revoked
    /// certificate, one whose issuer has no CRL here, or any certificate
    /// once a CRL is past its next update fails the handshake.
    #[serde(default)]
    pub client_crl_files: Vec<std::path::PathBuf>,
    /// Default: true when `clientCaFile` is set. `false` also lets clients
    /// without a certificate connect and use a key or token.
    #[serde(default)]
    pub require_client_cert: Option<bool>,
    /// SPIFFE trust domain of client identities; default `cluster.local`.
    #[serde(default)]
    pub trust_domain: Option<String>,
}

/// How to verify service-account tokens.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenConfig {
    pub issuer: String,
    #[serde(default = "default_audiences")]
    pub audiences: Vec<String>,
    /// PEM public keys (RSA or P-256 SubjectPublicKeyInfo), relative to the
    /// config file.
    #[serde(default)]
    pub public_key_files: Vec<std::path::PathBuf>,
    /// JWK Set files (e.g. a saved `/openid/v1/jwks`), relative to the
    /// config file.
    #[serde(default)]
    pub jwks_files: Vec<std::path::PathBuf>,
    /// The issuer's JWK Set URL, fetched at start and every
    /// `jwksRefreshSeconds`: `https`, or `http` to this machine only.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// CA bundle (PEM) for the JWK Set URL's server; default: public roots.
    #[serde(default)]
    pub jwks_ca_file: Option<std::path::PathBuf>,
    /// A file holding a bearer token sent when fetching (re-read each time).
    #[serde(default)]
    pub jwks_bearer_token_file: Option<std::path::PathBuf>,
    /// Find the JWK Set URL in the issuer's OpenID configuration instead
    /// (`ISSUER/.well-known/openid-configuration`); not with `jwksUrl`.
    #[serde(default)]
    pub discover_jwks_url: bool,
    /// How often the JWK Set URL is fetched again; default 300.
    #[serde(default)]
    pub jwks_refresh_seconds: Option<u64>,
}

fn default_audiences() -> Vec<String> {
    vec!["caracal".into()]
}

/// The spool acknowledgement mode, as written in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpoolAck {
    Fsync,
    Write,
}

fn mock_model(model: &str, input: i64, output: i64) -> ModelPrice {
    ModelPrice {
        provider: "mock".into(),
        model: model.into(),
        aliases: vec![],
        input: Micros(input),
        output: Micros(output),
        cached_input: None,
        cache_write: None,
        reasoning: None,
        max_output_tokens: Some(4096),
    }
}

impl GatewayFile {
    /// The built-in config: provider `mock` with `mock-small` ($0.15 / $0.60
    /// per 1M tokens) and `mock-large` ($3 / $15).
    pub fn mock() -> Self {
        GatewayFile {
            providers: vec![ProviderConfig {
                name: "mock".into(),
                kind: ProviderKind::Mock,
                base_url: None,
                api_key_env: None,
                ca_file: None,
            }],
            prices: PriceCatalog {
                version: "mock-1".into(),
                models: vec![
                    mock_model("mock-small", 150_000, 600_000),
                    mock_model("mock-large", 3_000_000, 15_000_000),
                ],
                tools: vec![],
            },
            budget_denial_status: None,
            max_request_bytes: None,
            spool_ack: None,
            spool_max_pending_bytes: None,
            service_account_tokens: None,
            tls: None,
            upstream_connect_timeout_seconds: None,
        }
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, SetupError> {
        serde_saphyr::from_str(text).map_err(|e| SetupError::Invalid {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    pub fn load(path: &Path) -> Result<Self, SetupError> {
        let text = std::fs::read_to_string(path).map_err(io_error(path))?;
        Self::parse(&text, path)
    }

    /// Providers with their credentials read through `env` and their CA
    /// files read relative to `config_path`.
    pub fn resolve_providers(
        &self,
        config_path: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<Provider>, SetupError> {
        let base = config_path.parent().unwrap_or(Path::new("."));
        let mut out: Vec<Provider> = Vec::new();
        for p in &self.providers {
            if out.iter().any(|o| o.name == p.name) {
                return Err(crate::config::ConfigError::DuplicateProvider(p.name.clone()).into());
            }
            let mut provider = p.resolve(&env)?;
            if let Some(file) = &p.ca_file {
                let path = base.join(file);
                let roots = crate::mtls::trust_anchors(&path).map_err(|e| SetupError::Invalid {
                    path: path.clone(),
                    message: format!("caFile of provider {:?}: {e}", p.name),
                })?;
                provider.tls_roots = Some(std::sync::Arc::new(roots));
            }
            out.push(provider);
        }
        Ok(out)
    }

    /// The key files of `serviceAccountTokens`, resolved relative to
    /// `config_path` (empty without that section).
    pub fn token_key_files(&self, config_path: &Path) -> Vec<std::path::PathBuf> {
        let Some(tokens) = &self.service_account_tokens else {
            return Vec::new();
        };
        let base = config_path.parent().unwrap_or(Path::new("."));
        tokens
            .public_key_files
            .iter()
            .chain(&tokens.jwks_files)
            .map(|f| base.join(f))
            .collect()
    }

    /// The issuer's JWK Set URL and how often to fetch it, with files
    /// resolved relative to `config_path`; `None` without one.
    pub fn jwks_url(
        &self,
        config_path: &Path,
    ) -> Result<Option<(crate::jwt::fetch::JwksUrl, std::time::Duration)>, SetupError> {
        let Some(tokens) = &self.service_account_tokens else {
            return Ok(None);
        };
        let invalid = |message: String| SetupError::Invalid {
            path: config_path.to_owned(),
            message,
        };
        let base = config_path.parent().unwrap_or(Path::new("."));
        let ca_file = tokens.jwks_ca_file.as_ref().map(|f| base.join(f));
        let token_file = tokens.jwks_bearer_token_file.as_ref().map(|f| base.join(f));
        let source = match (&tokens.jwks_url, tokens.discover_jwks_url) {
            (None, false) => return Ok(None),
            (Some(_), true) => {
                return Err(invalid(
                    "give jwksUrl or discoverJwksUrl: true, not both".into(),
                ));
            }
            (Some(url), false) => crate::jwt::fetch::JwksUrl::parse(url, ca_file, token_file),
            (None, true) => {
                crate::jwt::fetch::JwksUrl::discover(&tokens.issuer, ca_file, token_file)
            }
        }
        .map_err(|e| invalid(e.to_string()))?;
        let seconds = tokens.jwks_refresh_seconds.unwrap_or(300);
        if seconds == 0 {
            return Err(SetupError::Invalid {
                path: config_path.to_owned(),
                message: "jwksRefreshSeconds must be at least 1".into(),
            });
        }
        Ok(Some((source, std::time::Duration::from_secs(seconds))))
    }

    /// The token verifier, reading key files relative to `config_path`.
    pub fn jwt_config(
        &self,
        config_path: &Path,
    ) -> Result<Option<crate::jwt::JwtConfig>, SetupError> {
        let Some(tokens) = &self.service_account_tokens else {
            return Ok(None);
        };
        let base = config_path.parent().unwrap_or(Path::new("."));
        let mut keys = Vec::new();
        for file in &tokens.public_key_files {
            let path = base.join(file);
            let pem = std::fs::read_to_string(&path).map_err(io_error(&path))?;
            keys.push(VerifyKey::from_pem(&pem).map_err(key_error(&path))?);
        }
        for file in &tokens.jwks_files {
            let path = base.join(file);
            let text = std::fs::read_to_string(&path).map_err(io_error(&path))?;
            keys.extend(VerifyKey::from_jwks(&text).map_err(key_error(&path))?);
        }
        if keys.is_empty() && tokens.jwks_url.is_none() && !tokens.discover_jwks_url {
            return Err(SetupError::Invalid {
                path: config_path.to_owned(),
                message: "serviceAccountTokens needs at least one key source (publicKeyFiles, jwksFiles, jwksUrl or discoverJwksUrl)"
                    .into(),
            });
        }
        Ok(Some(crate::jwt::JwtConfig {
            issuer: tokens.issuer.clone(),
            audiences: tokens.audiences.clone(),
            keys,
            leeway_seconds: 30,
        }))
    }

    /// The TLS listener's address and settings, with paths resolved
    /// relative to `config_path`; `None` without a `tls` section.
    pub fn tls_settings(&self, config_path: &Path) -> Option<(std::net::SocketAddr, TlsSettings)> {
        let tls = self.tls.as_ref()?;
        let base = config_path.parent().unwrap_or(Path::new("."));
        Some((
            tls.listen,
            TlsSettings {
                cert_file: base.join(&tls.cert_file),
                key_file: base.join(&tls.key_file),
                client_ca_file: tls.client_ca_file.as_ref().map(|f| base.join(f)),
                client_crl_files: tls.client_crl_files.iter().map(|f| base.join(f)).collect(),
                require_client_cert: tls
                    .require_client_cert
                    .unwrap_or(tls.client_ca_file.is_some()),
                trust_domain: tls
                    .trust_domain
                    .clone()
                    .unwrap_or_else(|| DEFAULT_TRUST_DOMAIN.to_owned()),
            },
        ))
    }

    /// Spool settings for a spool in `dir`.
    pub fn spool_config(&self, dir: std::path::PathBuf) -> crate::spool::SpoolConfig {
        let mut config = crate::spool::SpoolConfig::new(dir);
        if self.spool_ack == Some(SpoolAck::Write) {
            config.ack_after = crate::spool::AckAfter::Write;
        }
        if let Some(bytes) = self.spool_max_pending_bytes {
            config.max_pending_bytes = bytes;
        }
        config
    }

    pub fn limits(&self, path: &Path) -> Result<Limits, SetupError> {
        let mut limits = Limits::default();
        if let Some(code) = self.budget_denial_status {
            if code != 429 && code != 402 {
                return Err(SetupError::Invalid {
                    path: path.to_owned(),
                    message: format!("budgetDenialStatus must be 429 or 402, not {code}"),
                });
            }
            limits.budget_denial_status =
                StatusCode::from_u16(code).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
        }
        if let Some(bytes) = self.max_request_bytes {
            limits.max_request_bytes = bytes;
        }
        if let Some(seconds) = self.upstream_connect_timeout_seconds {
            if !(1..=600).contains(&seconds) {
                return Err(SetupError::Invalid {
                    path: path.to_owned(),
                    message: format!(
                        "upstreamConnectTimeoutSeconds must be 1 to 600, not {seconds}"
                    ),
                });
            }
            limits.upstream_connect_timeout = std::time::Duration::from_secs(seconds);
        }
        Ok(limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_config_file() {
        let text = r#"
providers:
  - name: openai
    kind: openai
    baseUrl: https://api.openai.com
    apiKeyEnv: OPENAI_API_KEY
  - name: local
    kind: openai-compatible
    baseUrl: http://127.0.0.1:8000
  - name: mock
    kind: mock
prices:
  version: "v1"
  models:
    - {provider: openai, model: gpt-4o-mini, input: "0.15", output: "0.60"}
budgetDenialStatus: 402
spoolAck: write
spoolMaxPendingBytes: 1000
upstreamConnectTimeoutSeconds: 3
"#;
        let path = Path::new("gateway.yaml");
        let file = GatewayFile::parse(text, path).unwrap();
        let providers = file.resolve_providers(path, |_| Some("sk".into())).unwrap();
        assert_eq!(
            providers.iter().map(|p| p.kind).collect::<Vec<_>>(),
            vec![
                ProviderKind::Openai,
                ProviderKind::OpenaiCompatible,
                ProviderKind::Mock
            ]
        );
        assert_eq!(file.prices.models[0].input, Micros(150_000));
        let limits = file.limits(path).unwrap();
        assert_eq!(limits.budget_denial_status, StatusCode::PAYMENT_REQUIRED);
        assert_eq!(
            limits.upstream_connect_timeout,
            std::time::Duration::from_secs(3)
        );
    }

    #[test]
    fn refuses_bad_files() {
        let path = Path::new("g.yaml");
        let cases = [
            ("providers: []\nextra: 1\n", "extra"),
            (
                "providers:\n  - {name: x, kind: carrier-pigeon}\n",
                "carrier-pigeon",
            ),
            ("providers: []\nbudgetDenialStatus: 500\n", "429 or 402"),
            (
                "providers:\n  - {name: a, kind: mock}\n  - {name: a, kind: mock}\n",
                "used twice",
            ),
            (
                "providers:\n  - {name: v, kind: openai-compatible, baseUrl: \"https://v\", caFile: no-such-ca.pem}\n",
                "no-such-ca.pem",
            ),
            (
                "providers: []\nupstreamConnectTimeoutSeconds: 0\n",
                "upstreamConnectTimeoutSeconds must be 1 to 600",
            ),
        ];
        for (text, needle) in cases {
            let result = GatewayFile::parse(text, path)
                .and_then(|f| f.limits(path).map(|_| f))
                .and_then(|f| f.resolve_providers(path, |_| None));
            let err = result.unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn reads_the_tls_section() {
        let path = Path::new("/etc/caracal/gateway.yaml");
        let text = "providers: []\ntls:\n  listen: 127.0.0.1:8443\n  certFile: server.pem\n  keyFile: /keys/server-key.pem\n  clientCaFile: ca.pem\n  clientCrlFiles: [ca.crl.pem, /crls/intermediate.crl.pem]\n";
        let (listen, tls) = GatewayFile::parse(text, path)
            .unwrap()
            .tls_settings(path)
            .unwrap();
        assert_eq!(listen, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(tls.cert_file, Path::new("/etc/caracal/server.pem"));
        assert_eq!(tls.key_file, Path::new("/keys/server-key.pem"));
        assert_eq!(
            tls.client_ca_file.as_deref(),
            Some(Path::new("/etc/caracal/ca.pem"))
        );
        assert_eq!(
            tls.client_crl_files,
            [
                Path::new("/etc/caracal/ca.crl.pem"),
                Path::new("/crls/intermediate.crl.pem")
            ]
        );
        // A client CA makes client certificates required unless told otherwise.
        assert!(tls.require_client_cert);
        assert_eq!(tls.trust_domain, "cluster.local");

        let optional = "providers: []\ntls: {listen: 0.0.0.0:0, certFile: s.pem, keyFile: k.pem, clientCaFile: ca.pem, requireClientCert: false, trustDomain: example.org}\n";
        let (_, tls) = GatewayFile::parse(optional, path)
            .unwrap()
            .tls_settings(path)
            .unwrap();
        assert_eq!(
            (tls.require_client_cert, tls.trust_domain.as_str()),
            (false, "example.org")
        );
        let server_only =
            "providers: []\ntls: {listen: 0.0.0.0:0, certFile: s.pem, keyFile: k.pem}\n";
        let (_, tls) = GatewayFile::parse(server_only, path)
            .unwrap()
            .tls_settings(path)
            .unwrap();
        assert_eq!((tls.client_ca_file, tls.require_client_cert), (None, false));

        assert!(GatewayFile::mock().tls_settings(path).is_none());
        for bad in [
            "providers: []\ntls: {listen: 0.0.0.0:0, certFile: s.pem, keyFile: k.pem, caFile: x}\n",
            "providers: []\ntls: {certFile: s.pem, keyFile: k.pem}\n",
            "providers: []\ntls: {listen: nowhere, certFile: s.pem, keyFile: k.pem}\n",
        ] {
            assert!(GatewayFile::parse(bad, path).is_err(), "{bad}");
        }
    }

    #[test]
    fn reads_service_account_token_keys() {
        use p256::pkcs8::{EncodePublicKey, LineEnding};
        let dir = std::env::temp_dir().join(format!("caracal-cfg-test-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
        let pem = key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        std::fs::write(dir.join("sa.pub"), pem).unwrap();
        let path = dir.join("gateway.yaml");
        let text = "providers: []\nserviceAccountTokens:\n  issuer: https://k8s\n  publicKeyFiles: [sa.pub]\n";
        let jwt = GatewayFile::parse(text, &path)
            .unwrap()
            .jwt_config(&path)
            .unwrap()
            .unwrap();
        assert_eq!(
            (jwt.issuer.as_str(), jwt.audiences.clone(), jwt.keys.len()),
            ("https://k8s", vec!["caracal".to_owned()], 1)
        );
        let missing =
            "providers: []\nserviceAccountTokens:\n  issuer: x\n  publicKeyFiles: [nope.pub]\n";
        assert!(
            GatewayFile::parse(missing, &path)
                .unwrap()
                .jwt_config(&path)
                .is_err()
        );
        // RSA keys, from PEM and from a JWK Set, alongside the P-256 one.
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        std::fs::copy(data.join("rsa-test-key.pub.pem"), dir.join("rsa.pub")).unwrap();
        std::fs::copy(data.join("rsa-test-key.jwks.json"), dir.join("jwks.json")).unwrap();
        let text = "providers: []\nserviceAccountTokens:\n  issuer: x\n  publicKeyFiles: [sa.pub, rsa.pub]\n  jwksFiles: [jwks.json]\n";
        let jwt = GatewayFile::parse(text, &path)
            .unwrap()
            .jwt_config(&path)
            .unwrap()
            .unwrap();
        let algs: Vec<&str> = jwt.keys.iter().map(|k| k.alg()).collect();
        assert_eq!(algs, ["ES256", "RS256", "RS256"]);
        // A key file that is not a usable key stops the gateway, naming it.
        std::fs::write(
            dir.join("bad.json"),
            r#"{"keys": [{"kty": "oct", "k": "AA"}]}"#,
        )
        .unwrap();
        let bad = "providers: []\nserviceAccountTokens:\n  issuer: x\n  jwksFiles: [bad.json]\n";
        let err = GatewayFile::parse(bad, &path)
            .unwrap()
            .jwt_config(&path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.json"), "{err}");
        let none = "providers: []\nserviceAccountTokens:\n  issuer: x\n";
        assert!(
            GatewayFile::parse(none, &path)
                .unwrap()
                .jwt_config(&path)
                .is_err()
        );
        assert!(GatewayFile::mock().jwt_config(&path).unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
