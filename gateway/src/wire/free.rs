//! Provider endpoints that cost nothing and are passed on unmetered.
//!
//! Everything outside the metered endpoints is refused, because an endpoint
//! the gateway cannot meter could spend money outside every budget (batches,
//! fine-tuning, images...). A few read-only or counting endpoints are free at
//! the providers and are called by SDK helpers and agent frameworks: listing
//! models (a health check many tools run first) and Anthropic's token count.
//! Those, and only those, pass. The list is deliberately closed: each entry
//! was checked against the provider's documentation as free of charge.

use hyper::Method;

/// A free endpoint, by what it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreeEndpoint {
    /// `GET /v1/models`: the models the provider serves.
    ListModels,
    /// `GET /v1/models/{id}`: one model's description.
    Model,
    /// Anthropic `POST /v1/messages/count_tokens`: how many input tokens a
    /// message would take; the provider does not run the model.
    CountTokens,
}

/// Which provider dialects an endpoint is looked up in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Anthropic,
    /// The mock answers both.
    Both,
}

impl FreeEndpoint {
    /// The free endpoint `method` and `path` (after the provider prefix, no
    /// query) name in `dialect`, if any. Paths are matched exactly, with or
    /// without the `/v1` prefix as metered endpoints are.
    pub fn from_request(dialect: Dialect, method: &Method, path: &str) -> Option<FreeEndpoint> {
        let path = path.strip_prefix("/v1").unwrap_or(path);
        let anthropic = matches!(dialect, Dialect::Anthropic | Dialect::Both);
        if *method == Method::POST {
            return (anthropic && path == "/messages/count_tokens")
                .then_some(FreeEndpoint::CountTokens);
        }
        if *method != Method::GET {
            return None;
        }
        match path.strip_prefix("/models") {
            Some("") => Some(FreeEndpoint::ListModels),
            Some(rest) => rest
                .strip_prefix('/')
                .filter(|id| is_model_id(id))
                .map(|_| FreeEndpoint::Model),
            None => None,
        }
    }

    /// The label metrics and logs use.
    pub fn as_str(self) -> &'static str {
        match self {
            FreeEndpoint::ListModels => "list_models",
            FreeEndpoint::Model => "model",
            FreeEndpoint::CountTokens => "count_tokens",
        }
    }
}

/// A model id as it may appear in a path: one segment of letters, digits and
/// `-_.:@` (fine-tuned OpenAI models look like `ft:gpt-4o:org::id`), and not
/// a dot segment. No `/` and no percent-encoding, so nothing reaches another
/// endpoint of the provider through `..` or an encoded slash.
fn is_model_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 256
        && id.bytes().any(|b| b != b'.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_listed_endpoints_are_free() {
        use Dialect::*;
        use FreeEndpoint::*;
        let get = Method::GET;
        let post = Method::POST;
        let cases: &[(Dialect, &Method, &str, Option<FreeEndpoint>)] = &[
            (OpenAi, &get, "/v1/models", Some(ListModels)),
            (OpenAi, &get, "/models", Some(ListModels)),
            (Anthropic, &get, "/v1/models", Some(ListModels)),
            (OpenAi, &get, "/v1/models/gpt-4o-mini", Some(Model)),
            (
                OpenAi,
                &get,
                "/v1/models/ft:gpt-4o:acme::abc123",
                Some(Model),
            ),
            (Anthropic, &get, "/v1/models/claude-sonnet-4-5", Some(Model)),
            (
                Anthropic,
                &post,
                "/v1/messages/count_tokens",
                Some(CountTokens),
            ),
            (Both, &post, "/v1/messages/count_tokens", Some(CountTokens)),
            (Both, &get, "/v1/models", Some(ListModels)),
            // Counting tokens is Anthropic's; OpenAI has no such endpoint.
            (OpenAi, &post, "/v1/messages/count_tokens", None),
            // Deleting a fine-tuned model, or anything but reading.
            (
                OpenAi,
                &Method::DELETE,
                "/v1/models/ft:gpt-4o:acme::abc123",
                None,
            ),
            (OpenAi, &post, "/v1/models", None),
            (Anthropic, &get, "/v1/messages/count_tokens", None),
            // Ids that could leave the models collection.
            (OpenAi, &get, "/v1/models/", None),
            (OpenAi, &get, "/v1/models/..", None),
            (OpenAi, &get, "/v1/models/.", None),
            (OpenAi, &get, "/v1/models/../files", None),
            (OpenAi, &get, "/v1/models/a/b", None),
            (OpenAi, &get, "/v1/models/%2e%2e", None),
            (OpenAi, &get, "/v1/modelsx", None),
            (OpenAi, &get, "/v2/models", None),
            // Everything else stays closed.
            (OpenAi, &get, "/v1/files", None),
            (OpenAi, &get, "/v1/batches", None),
            (OpenAi, &post, "/v1/chat/completions", None),
            (Anthropic, &get, "/v1/messages/batches", None),
        ];
        for (dialect, method, path, want) in cases {
            assert_eq!(
                FreeEndpoint::from_request(*dialect, method, path),
                *want,
                "{dialect:?} {method} {path}"
            );
        }
        let long = format!("/v1/models/{}", "a".repeat(257));
        assert_eq!(FreeEndpoint::from_request(OpenAi, &get, &long), None);
    }
}
