//! The gateway's own configuration: where providers live and how to reach
//! them, plus the limits of the data path.
//!
//! Who may spend what comes from the policy snapshot, not from here; this is
//! only what a gateway process needs to carry traffic. Provider credentials
//! are named by environment variable so config files never hold secrets.

use std::time::Duration;

use hyper::StatusCode;
use serde::Deserialize;

/// How a provider speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    /// api.openai.com or anything with the same API and usage reports.
    Openai,
    /// An OpenAI-compatible server (vLLM, llama.cpp, ...). Older servers know
    /// only `max_tokens`, so that is the field the gateway adds.
    OpenaiCompatible,
    /// api.anthropic.com.
    Anthropic,
    /// An MCP server over streamable HTTP.
    Mcp,
    /// Answered inside the gateway with deterministic fake completions, for
    /// trying Caracal with no network (see `mock.rs`).
    Mock,
}

/// One configured provider, as written in a config file.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderConfig {
    /// The name agents, policies and prices refer to; also the first path
    /// segment of the gateway URL (`/NAME/v1/...`).
    pub name: String,
    pub kind: ProviderKind,
    /// Upstream base URL, e.g. `https://api.openai.com`; not used by `mock`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Environment variable holding the provider credential to inject.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// CA bundle (PEM) the provider's server certificate must chain to,
    /// instead of the public web roots: for providers inside the cluster
    /// behind a private CA. Relative to the config file; needs an `https`
    /// base URL.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
}

/// A provider ready to serve: config plus the resolved credential.
#[derive(Clone, Debug)]
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    pub base_url: Option<hyper::Uri>,
    pub credential: Option<String>,
    /// The only CAs this provider's server certificate may chain to; `None`:
    /// the public web roots.
    pub tls_roots: Option<std::sync::Arc<rustls::RootCertStore>>,
}

/// Why a provider or the gateway config was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("provider {name:?}: {problem}")]
    Provider { name: String, problem: String },
    #[error("provider name {0:?} is used twice")]
    DuplicateProvider(String),
}

impl ProviderConfig {
    /// Check the entry and read its credential through `env` (a lookup
    /// function, so tests need not touch the process environment).
    pub fn resolve(&self, env: impl Fn(&str) -> Option<String>) -> Result<Provider, ConfigError> {
        let fail = |problem: String| ConfigError::Provider {
            name: self.name.clone(),
            problem,
        };
        let valid_name = !self.name.is_empty()
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid_name {
            return Err(fail(
                "names may use only lowercase letters, digits, '-' and '_'".into(),
            ));
        }
        let base_url = match (&self.base_url, self.kind) {
            (_, ProviderKind::Mock) => None,
            (None, _) => return Err(fail("baseUrl is required".into())),
            (Some(url), _) => {
                let uri: hyper::Uri = url
                    .trim_end_matches('/')
                    .parse()
                    .map_err(|e| fail(format!("baseUrl: {e}")))?;
                match uri.scheme_str() {
                    Some("http") | Some("https") => {}
                    _ => return Err(fail("baseUrl must start with http:// or https://".into())),
                }
                if uri.query().is_some() {
                    return Err(fail("baseUrl may not carry a query".into()));
                }
                Some(uri)
            }
        };
        if self.ca_file.is_some() && base_url.as_ref().and_then(|u| u.scheme_str()) != Some("https")
        {
            return Err(fail("caFile needs an https:// baseUrl".into()));
        }
        let credential = match &self.api_key_env {
            None => None,
            Some(var) => Some(
                env(var).ok_or_else(|| fail(format!("environment variable {var} is not set")))?,
            ),
        };
        Ok(Provider {
            name: self.name.clone(),
            kind: self.kind,
            base_url,
            credential,
            tls_roots: None,
        })
    }
}

/// Limits and switches of the data path.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body accepted (bytes).
    pub max_request_bytes: usize,
    /// Largest non-streamed upstream response read for metering (bytes).
    pub max_response_bytes: usize,
    /// Largest single SSE event followed in a stream (bytes).
    pub max_sse_event_bytes: usize,
    /// Status for budget denials: 429 (SDKs retry with backoff) or 402.
    pub budget_denial_status: StatusCode,
    /// How long to wait for an upstream's response headers.
    pub upstream_timeout: Duration,
    /// How long to wait for a TCP connection to an upstream. Nothing has
    /// been sent when it runs out, so the call is refused (`502
    /// upstream_unreachable`) and charged nothing; without it a provider
    /// whose address drops packets holds the agent for the kernel's two
    /// minutes of SYN retries.
    pub upstream_connect_timeout: Duration,
    /// Longest a model call may run from arrival to its last upstream byte.
    /// Must stay below the budget store's hold lifetime (300 s by default):
    /// a hold that expires while its call still runs frees budget another
    /// call can spend before this one settles, an overspend.
    pub max_call_duration: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 4 << 20,
            max_response_bytes: 32 << 20,
            max_sse_event_bytes: 1 << 20,
            budget_denial_status: StatusCode::TOO_MANY_REQUESTS,
            upstream_timeout: Duration::from_secs(600),
            upstream_connect_timeout: Duration::from_secs(10),
            max_call_duration: Duration::from_secs(270),
        }
    }
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // table tests spell out their rows
mod tests {
    use super::*;

    fn cfg(
        name: &str,
        kind: ProviderKind,
        base_url: Option<&str>,
        env: Option<&str>,
    ) -> ProviderConfig {
        ProviderConfig {
            name: name.into(),
            kind,
            base_url: base_url.map(Into::into),
            api_key_env: env.map(Into::into),
            ca_file: None,
        }
    }

    fn with_ca(mut config: ProviderConfig) -> ProviderConfig {
        config.ca_file = Some("ca.pem".into());
        config
    }

    #[test]
    fn providers_are_checked_when_resolved() {
        let env = |k: &str| (k == "KEY").then(|| "sk-test".to_owned());
        let cases: Vec<(ProviderConfig, Result<(Option<&str>, Option<&str>), &str>)> = vec![
            (
                cfg(
                    "openai",
                    ProviderKind::Openai,
                    Some("https://api.openai.com/"),
                    Some("KEY"),
                ),
                Ok((Some("https://api.openai.com/"), Some("sk-test"))),
            ),
            (
                cfg("mock", ProviderKind::Mock, None, None),
                Ok((None, None)),
            ),
            (
                cfg("x", ProviderKind::Openai, None, None),
                Err("baseUrl is required"),
            ),
            (
                cfg("x", ProviderKind::Openai, Some("ftp://h"), None),
                Err("must start with http"),
            ),
            (
                cfg("x", ProviderKind::Openai, Some("http://h?a=b"), None),
                Err("query"),
            ),
            (
                cfg("x", ProviderKind::Openai, Some("http://h"), Some("MISSING")),
                Err("MISSING is not set"),
            ),
            (
                cfg("Bad Name", ProviderKind::Mock, None, None),
                Err("lowercase"),
            ),
            (cfg("", ProviderKind::Mock, None, None), Err("lowercase")),
            (
                with_ca(cfg(
                    "vllm",
                    ProviderKind::OpenaiCompatible,
                    Some("https://vllm.ml:8443"),
                    None,
                )),
                Ok((Some("https://vllm.ml:8443/"), None)),
            ),
            // A private CA means nothing without TLS, or for the mock.
            (
                with_ca(cfg(
                    "x",
                    ProviderKind::OpenaiCompatible,
                    Some("http://vllm.ml"),
                    None,
                )),
                Err("caFile needs an https:// baseUrl"),
            ),
            (
                with_ca(cfg("x", ProviderKind::Mock, None, None)),
                Err("caFile needs an https:// baseUrl"),
            ),
        ];
        for (config, want) in cases {
            let got = config.resolve(env);
            match (got, want) {
                (Ok(p), Ok((url, cred))) => {
                    assert_eq!(p.base_url.map(|u| u.to_string()).as_deref(), url);
                    assert_eq!(p.credential.as_deref(), cred);
                }
                (Err(e), Err(needle)) => assert!(e.to_string().contains(needle), "{e} !~ {needle}"),
                (got, want) => panic!("{config:?}: got {got:?}, want {want:?}"),
            }
        }
    }
}
