//! Fetching the token issuer's public keys from its JWK Set URL, e.g. a
//! cluster's `https://kubernetes.default.svc/openid/v1/jwks`, which the API
//! server serves to callers with a token (the gateway's own, from a file
//! re-read on every fetch because projected tokens rotate) and over TLS
//! with the cluster's CA. With discovery, the JWK Set URL is read first
//! from the issuer's OpenID configuration (`ISSUER/.well-known/openid-configuration`,
//! whose `issuer` must be the configured issuer exactly), on every fetch.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{Request, Uri, header};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use super::{KeyError, VerifyKey};

/// A JWK Set larger than this is refused (a real one is a few kilobytes).
const MAX_JWKS_BYTES: usize = 1 << 20;

/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the keys come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwksUrl {
    pub url: Uri,
    /// CA bundle (PEM) the server's certificate must chain to; the public
    /// web roots when absent.
    pub ca_file: Option<PathBuf>,
    /// A file holding a bearer token sent with each fetch (to the JWK Set
    /// found by discovery only if it is on the same host and port).
    pub bearer_token_file: Option<PathBuf>,
    /// With discovery: the issuer, whose OpenID configuration `url` is.
    pub discovery_issuer: Option<String>,
}

/// Why the keys could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("JWK Set URL {0:?}: {1}")]
    Url(String, &'static str),
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    /// The CA file (the error names it).
    #[error(transparent)]
    CaFile(#[from] crate::mtls::TlsError),
    #[error("fetching {url}: {message}")]
    Request { url: String, message: String },
    #[error("fetching {url}: HTTP status {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: {source}")]
    Keys { url: String, source: Box<KeyError> },
    #[error("OpenID configuration {url}: {message}")]
    Discovery { url: String, message: String },
}

impl JwksUrl {
    /// Checks the URL: `https`, or `http` to this machine only (a key set
    /// read in the clear from elsewhere could be swapped for an attacker's).
    pub fn parse(
        url: &str,
        ca_file: Option<PathBuf>,
        bearer_token_file: Option<PathBuf>,
    ) -> Result<JwksUrl, FetchError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| FetchError::Url(url.to_owned(), "not a URL"))?;
        let host = uri
            .host()
            .ok_or(FetchError::Url(url.to_owned(), "no host"))?;
        let loopback = host == "localhost"
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if loopback => {}
            Some("http") => {
                return Err(FetchError::Url(
                    url.to_owned(),
                    "must be https (http only to this machine)",
                ));
            }
            _ => return Err(FetchError::Url(url.to_owned(), "must be https")),
        }
        Ok(JwksUrl {
            url: uri,
            ca_file,
            bearer_token_file,
            discovery_issuer: None,
        })
    }

    /// Keys found through `issuer`'s OpenID configuration, under the same
    /// rules for its URL (https, or http to this machine only).
    pub fn discover(
        issuer: &str,
        ca_file: Option<PathBuf>,
        bearer_token_file: Option<PathBuf>,
    ) -> Result<JwksUrl, FetchError> {
        let config_url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let mut source = JwksUrl::parse(&config_url, ca_file, bearer_token_file)?;
        source.discovery_issuer = Some(issuer.to_owned());
        Ok(source)
    }

    /// Fetch the set and read every key in it (any unusable key fails the
    /// whole fetch, as it does for a JWK Set file).
    pub async fn fetch(&self) -> Result<Vec<VerifyKey>, FetchError> {
        let client = self.client()?;
        let jwks_url = match &self.discovery_issuer {
            None => self.url.clone(),
            Some(issuer) => {
                let document = self.get(&client, &self.url, true).await?;
                self.jwks_uri_from(&document, issuer)?
            }
        };
        // The token goes only where it was meant to: the configured host.
        let same_host = jwks_url.authority() == self.url.authority();
        let body = self.get(&client, &jwks_url, same_host).await?;
        let text = std::str::from_utf8(&body).map_err(|e| request_error(&jwks_url, e))?;
        VerifyKey::from_jwks(text).map_err(|source| FetchError::Keys {
            url: jwks_url.to_string(),
            source: Box::new(source),
        })
    }

    /// The JWK Set URL of an OpenID configuration `document`, which must
    /// name `issuer` exactly.
    fn jwks_uri_from(&self, document: &[u8], issuer: &str) -> Result<Uri, FetchError> {
        let discovery = |message: String| FetchError::Discovery {
            url: self.url.to_string(),
            message,
        };
        let value: serde_json::Value =
            serde_json::from_slice(document).map_err(|e| discovery(format!("not JSON: {e}")))?;
        let found = value.get("issuer").and_then(|v| v.as_str());
        if found != Some(issuer) {
            return Err(discovery(format!(
                "names issuer {found:?}, not the configured {issuer:?}"
            )));
        }
        let jwks_uri = value
            .get("jwks_uri")
            .and_then(|v| v.as_str())
            .ok_or_else(|| discovery("has no jwks_uri".into()))?;
        JwksUrl::parse(jwks_uri, None, None)
            .map(|u| u.url)
            .map_err(|e| discovery(e.to_string()))
    }

    /// The body of a successful GET of `url`, with the bearer token if
    /// `send_token`.
    async fn get(
        &self,
        client: &Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>,
        url: &Uri,
        send_token: bool,
    ) -> Result<Bytes, FetchError> {
        let mut request = Request::get(url.clone()).header(header::ACCEPT, "application/json");
        if let Some(path) = self.bearer_token_file.as_ref().filter(|_| send_token) {
            let token = std::fs::read_to_string(path).map_err(|e| FetchError::File {
                path: path.clone(),
                message: e.to_string(),
            })?;
            request = request.header(header::AUTHORIZATION, format!("Bearer {}", token.trim()));
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| request_error(url, e))?;
        let exchange = async {
            let response = client
                .request(request)
                .await
                .map_err(|e| request_error(url, e))?;
            let status = response.status();
            if !status.is_success() {
                return Err(FetchError::Status {
                    url: url.to_string(),
                    status: status.as_u16(),
                });
            }
            Limited::new(response.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map(|body| body.to_bytes())
                .map_err(|e| request_error(url, e))
        };
        tokio::time::timeout(FETCH_TIMEOUT, exchange)
            .await
            .map_err(|_| request_error(url, format!("no answer in {FETCH_TIMEOUT:?}")))?
    }

    fn client(
        &self,
    ) -> Result<Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>, FetchError> {
        let roots = match &self.ca_file {
            Some(path) => crate::mtls::trust_anchors(path)?,
            None => rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
        };
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| request_error(&self.url, e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Client::builder(TokioExecutor::new()).build(connector))
    }
}

fn request_error(url: &Uri, e: impl std::fmt::Display) -> FetchError {
    FetchError::Request {
        url: url.to_string(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http_urls_are_taken() {
        for ok in [
            "https://kubernetes.default.svc/openid/v1/jwks",
            "http://127.0.0.1:8080/jwks",
            "http://localhost/jwks",
            "http://[::1]:9000/jwks",
        ] {
            assert!(JwksUrl::parse(ok, None, None).is_ok(), "{ok}");
        }
        for bad in [
            "http://issuer.example.com/jwks",
            "http://10.0.0.1/jwks",
            "ftp://issuer/jwks",
            "/openid/v1/jwks",
            "not a url",
        ] {
            assert!(JwksUrl::parse(bad, None, None).is_err(), "{bad}");
        }
    }
}
