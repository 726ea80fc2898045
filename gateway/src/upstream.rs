//! Reaching providers: the only outbound path of the gateway.
//!
//! A request can only go to a configured provider's base URL; the client
//! never supplies a host. Headers pass through an allowlist, so the agent's
//! credential (and anything else the provider should not see) is dropped,
//! and the provider credential from config is injected. `Accept-Encoding` is
//! not forwarded: the gateway must read usage from the bytes it relays.

use std::{collections::HashMap, convert::Infallible, sync::Arc};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::{
    HeaderMap, Method, Request, Response, Uri,
    header::{self, HeaderName, HeaderValue},
};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use crate::config::{Provider, ProviderKind};

/// Response bodies inside the gateway, from upstreams and the mock alike.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// Request headers that may reach a provider.
const FORWARDED_REQUEST_HEADERS: &[&str] = &[
    "content-type",
    "accept",
    "user-agent",
    "anthropic-version",
    "anthropic-beta",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
];

/// Response headers never relayed to the client (hop-by-hop or re-framed).
const DROPPED_RESPONSE_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "proxy-connection",
    "upgrade",
    "trailer",
    "te",
];

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("provider {0:?} has no base URL")]
    NoBaseUrl(String),
    #[error("could not build the upstream URL: {0}")]
    BadUri(String),
    #[error("could not reach the provider: {0}")]
    Connect(String),
    /// Connected (the request may have been sent), then the exchange failed.
    #[error("the exchange with the provider failed: {0}")]
    Exchange(String),
    #[error("the provider did not answer within {0:?}")]
    Timeout(std::time::Duration),
}

/// The upstream URL for `rest` (path and query after the provider prefix).
impl UpstreamError {
    /// Whether the provider may have received the request (and may bill
    /// it). Only a failure before or while connecting rules that out.
    pub fn may_have_reached_provider(&self) -> bool {
        matches!(self, UpstreamError::Exchange(_) | UpstreamError::Timeout(_))
    }
}

pub fn upstream_uri(base: &Uri, rest: &str) -> Result<Uri, UpstreamError> {
    let base_path = base.path().trim_end_matches('/');
    let rest = if rest.starts_with('/') {
        rest.to_owned()
    } else {
        format!("/{rest}")
    };
    let mut parts = base.clone().into_parts();
    // `/NAME` alone means the base URL itself (an MCP endpoint such as `/mcp`).
    let pq = match (base_path, rest.as_str()) {
        ("", _) => rest.clone(),
        (_, "/") => base_path.to_owned(),
        (_, r) if r.starts_with("/?") => format!("{base_path}{}", &r[1..]),
        _ => format!("{base_path}{rest}"),
    };
    parts.path_and_query = Some(
        pq.parse()
            .map_err(|e: hyper::http::uri::InvalidUri| UpstreamError::BadUri(e.to_string()))?,
    );
    Uri::from_parts(parts).map_err(|e| UpstreamError::BadUri(e.to_string()))
}

/// The headers sent upstream: the allowlisted client headers plus the
/// provider credential.
pub fn forward_headers(incoming: &HeaderMap, provider: &Provider) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in FORWARDED_REQUEST_HEADERS {
        for value in incoming.get_all(*name) {
            out.append(HeaderName::from_static(name), value.clone());
        }
    }
    if let Some(cred) = &provider.credential {
        let (name, value) = match provider.kind {
            ProviderKind::Anthropic => (HeaderName::from_static("x-api-key"), cred.clone()),
            _ => (header::AUTHORIZATION, format!("Bearer {cred}")),
        };
        if let Ok(mut value) = HeaderValue::from_str(&value) {
            value.set_sensitive(true);
            out.insert(name, value);
        }
    }
    out
}

/// The upstream's response headers that may reach the client.
pub fn relayed_headers(upstream: &HeaderMap) -> HeaderMap {
    let mut out = upstream.clone();
    for name in DROPPED_RESPONSE_HEADERS {
        out.remove(*name);
    }
    out
}

type PooledClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Pooled HTTP/1.1 + HTTP/2 clients with rustls (ring): one trusting the
/// Mozilla root set, and one for each provider configured with CAs of its
/// own (`caFile`), which trusts only those. Plain `http://` is allowed for
/// loopback and in-cluster providers named that way in config.
#[derive(Clone)]
pub struct UpstreamClient {
    client: PooledClient,
    /// Clients of the providers with their own CAs, by provider name.
    private_ca: HashMap<String, PooledClient>,
    timeout: std::time::Duration,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient")
            .field("timeout", &self.timeout)
            .field("private_ca", &self.private_ca.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn pooled_client(
    roots: rustls::RootCertStore,
    connect_timeout: std::time::Duration,
) -> Result<PooledClient, rustls::Error> {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build(connector))
}

impl UpstreamClient {
    /// `timeout` bounds the wait for response headers, `connect_timeout`
    /// the TCP connect alone (see [`crate::config::Limits`]); `providers`
    /// with `tls_roots` get a client of their own.
    pub fn new(
        timeout: std::time::Duration,
        connect_timeout: std::time::Duration,
        providers: &[Provider],
    ) -> Result<Self, rustls::Error> {
        let public = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let mut private_ca = HashMap::new();
        for provider in providers {
            if let Some(roots) = &provider.tls_roots {
                let client = pooled_client(roots.as_ref().clone(), connect_timeout)?;
                private_ca.insert(provider.name.clone(), client);
            }
        }
        Ok(UpstreamClient {
            client: pooled_client(public, connect_timeout)?,
            private_ca,
            timeout,
        })
    }

    /// Send one request to `provider` and return its response headers and
    /// a streaming body. The body is not read here.
    pub async fn send(
        &self,
        provider: &Provider,
        method: Method,
        rest: &str,
        incoming: &HeaderMap,
        body: Bytes,
    ) -> Result<Response<Body>, UpstreamError> {
        let base = provider
            .base_url
            .as_ref()
            .ok_or_else(|| UpstreamError::NoBaseUrl(provider.name.clone()))?;
        let uri = upstream_uri(base, rest)?;
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .body(Full::new(body))
            .map_err(|e| UpstreamError::BadUri(e.to_string()))?;
        *request.headers_mut() = forward_headers(incoming, provider);
        let client = match self.private_ca.is_empty() {
            true => &self.client,
            false => self.private_ca.get(&provider.name).unwrap_or(&self.client),
        };
        let response = tokio::time::timeout(self.timeout, client.request(request))
            .await
            .map_err(|_| UpstreamError::Timeout(self.timeout))?
            .map_err(|e| {
                if e.is_connect() {
                    UpstreamError::Connect(error_chain(&e))
                } else {
                    UpstreamError::Exchange(error_chain(&e))
                }
            })?;
        Ok(response.map(|b| b.map_err(std::io::Error::other).boxed()))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

/// A whole body from bytes, for gateway-made responses.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|e: Infallible| match e {})
        .boxed()
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // table tests spell out their rows
mod tests {
    use super::*;

    fn provider(kind: ProviderKind, cred: Option<&str>) -> Provider {
        Provider {
            name: "p".into(),
            kind,
            base_url: None,
            credential: cred.map(Into::into),
            tls_roots: None,
        }
    }

    #[test]
    fn uris_join_base_path_and_rest() {
        let cases = [
            (
                "https://api.openai.com",
                "/v1/chat/completions",
                "https://api.openai.com/v1/chat/completions",
            ),
            (
                "http://127.0.0.1:9000/base/",
                "/v1/messages",
                "http://127.0.0.1:9000/base/v1/messages",
            ),
            ("http://h:1", "mcp?x=1", "http://h:1/mcp?x=1"),
            ("http://h:1/mcp", "/", "http://h:1/mcp"),
            ("http://h:1/mcp", "/?s=1", "http://h:1/mcp?s=1"),
            ("http://h:1", "/", "http://h:1/"),
        ];
        for (base, rest, want) in cases {
            assert_eq!(
                upstream_uri(&base.parse().unwrap(), rest)
                    .unwrap()
                    .to_string(),
                want
            );
        }
    }

    #[test]
    fn client_credentials_never_reach_the_provider() {
        let mut incoming = HeaderMap::new();
        incoming.insert("authorization", HeaderValue::from_static("Bearer ck_agent"));
        incoming.insert("x-api-key", HeaderValue::from_static("ck_agent"));
        incoming.insert("content-type", HeaderValue::from_static("application/json"));
        incoming.insert("accept-encoding", HeaderValue::from_static("gzip"));
        incoming.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
        incoming.insert("host", HeaderValue::from_static("gateway"));
        incoming.insert("openai-organization", HeaderValue::from_static("org-x"));

        let cases: Vec<(ProviderKind, Option<&str>, Vec<(&str, &str)>)> = vec![
            (
                ProviderKind::Openai,
                Some("sk-real"),
                vec![("authorization", "Bearer sk-real")],
            ),
            (
                ProviderKind::OpenaiCompatible,
                Some("tok"),
                vec![("authorization", "Bearer tok")],
            ),
            (
                ProviderKind::Anthropic,
                Some("sk-ant"),
                vec![("x-api-key", "sk-ant")],
            ),
            (ProviderKind::Mcp, None, vec![]),
        ];
        for (kind, cred, injected) in cases {
            let out = forward_headers(&incoming, &provider(kind, cred));
            let mut names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
            names.sort();
            let mut want: Vec<&str> = vec!["anthropic-version", "content-type"];
            want.extend(injected.iter().map(|(k, _)| *k));
            want.sort();
            assert_eq!(names, want, "{kind:?}");
            for (k, v) in injected {
                assert_eq!(out.get(k).unwrap(), v, "{kind:?}");
            }
        }
    }

    #[test]
    fn hop_by_hop_response_headers_are_dropped() {
        let mut upstream = HeaderMap::new();
        upstream.insert(
            "content-type",
            HeaderValue::from_static("text/event-stream"),
        );
        upstream.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        upstream.insert("content-length", HeaderValue::from_static("10"));
        upstream.insert("mcp-session-id", HeaderValue::from_static("s1"));
        let out = relayed_headers(&upstream);
        assert_eq!(out.len(), 2);
        assert!(out.contains_key("mcp-session-id"));
    }
}
