//! What the gateway reads from, and changes in, a provider request body.
//!
//! Everything here is pure so the rules can be read as tables in the tests:
//! which field bounds output per endpoint, how a cap is set or clamped, and
//! when the gateway asks OpenAI to put usage in a stream.

use serde_json::{Map, Value};

use crate::wire::{WireError, body::JsonObject};

/// The provider endpoints the gateway understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// OpenAI `POST /v1/chat/completions` (also OpenAI-compatible servers).
    ChatCompletions,
    /// OpenAI `POST /v1/responses`.
    Responses,
    /// OpenAI `POST /v1/embeddings`.
    Embeddings,
    /// Anthropic `POST /v1/messages`.
    Messages,
}

impl Endpoint {
    /// Which endpoint a path (after the provider prefix) names, if any.
    pub fn from_path(path: &str) -> Option<Endpoint> {
        match path.trim_end_matches('/') {
            "/v1/chat/completions" | "/chat/completions" => Some(Endpoint::ChatCompletions),
            "/v1/responses" | "/responses" => Some(Endpoint::Responses),
            "/v1/embeddings" | "/embeddings" => Some(Endpoint::Embeddings),
            "/v1/messages" | "/messages" => Some(Endpoint::Messages),
            _ => None,
        }
    }

    /// True for endpoints whose errors an Anthropic SDK reads.
    pub fn is_anthropic(self) -> bool {
        self == Endpoint::Messages
    }

    fn produces_output(self) -> bool {
        self != Endpoint::Embeddings
    }
}

/// Bounds read from a request before anything is reserved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestFacts {
    pub model: String,
    pub stream: bool,
    /// Output tokens per choice the client asked for, if it set a limit.
    pub requested_output: Option<u64>,
    /// How many completions the request asks for (`n`); output scales with it.
    pub choices: u64,
    /// Upper bound on input tokens. Every tokenizer the supported providers
    /// use maps a token to at least one byte of text, so the body's length
    /// in bytes bounds the prompt's tokens from above.
    pub input_bound: u64,
}

impl RequestFacts {
    /// Worst-case output tokens under a per-choice cap.
    pub fn output_bound(&self, per_choice: u64) -> u64 {
        per_choice.saturating_mul(self.choices)
    }
}

fn output_field(
    endpoint: Endpoint,
    body: &JsonObject<'_>,
    legacy_max_tokens: bool,
) -> Option<&'static str> {
    match endpoint {
        Endpoint::Embeddings => None,
        Endpoint::Messages => Some("max_tokens"),
        Endpoint::Responses => Some("max_output_tokens"),
        Endpoint::ChatCompletions => {
            if body.has("max_completion_tokens") {
                Some("max_completion_tokens")
            } else if body.has("max_tokens") || legacy_max_tokens {
                Some("max_tokens")
            } else {
                Some("max_completion_tokens")
            }
        }
    }
}

fn optional_count(body: &JsonObject<'_>, field: &'static str) -> Result<Option<u64>, WireError> {
    body.get::<u64>(field)
        .map_err(|_| WireError::BadField(field))
}

/// Read the model, streaming flag and bounds from a request body's
/// top-level members.
pub fn inspect(
    endpoint: Endpoint,
    body: &JsonObject<'_>,
    body_len: usize,
) -> Result<RequestFacts, WireError> {
    let model = match body.raw("model") {
        None => return Err(WireError::MissingModel),
        Some(_) => match body.get::<String>("model") {
            Ok(Some(m)) if m.len() > super::MAX_NAME_BYTES => {
                return Err(WireError::TooLong("model"));
            }
            Ok(Some(m)) if !m.is_empty() => m,
            _ => return Err(WireError::BadField("model")),
        },
    };
    let stream = body
        .get::<bool>("stream")
        .map_err(|_| WireError::BadField("stream"))?
        .unwrap_or(false);
    let requested_output = match output_field(endpoint, body, false) {
        None => None,
        Some(_) if endpoint == Endpoint::ChatCompletions => {
            let modern = optional_count(body, "max_completion_tokens")?;
            let legacy = optional_count(body, "max_tokens")?;
            match (modern, legacy) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
        Some(field) => optional_count(body, field)?,
    };
    let choices = if endpoint == Endpoint::ChatCompletions {
        match optional_count(body, "n")? {
            None => 1,
            Some(0) => return Err(WireError::BadField("n")),
            Some(n) => n,
        }
    } else {
        1
    };
    Ok(RequestFacts {
        model,
        stream,
        requested_output,
        choices,
        input_bound: body_len as u64,
    })
}

/// Make the body safe to forward: cap output at `per_choice_cap` tokens
/// (setting the limit when the client gave none, lowering it when the client
/// asked for more) and, for OpenAI chat streams, ask for the usage chunk.
///
/// `legacy_max_tokens` picks `max_tokens` over `max_completion_tokens` when
/// the gateway has to add a limit to a chat request (older OpenAI-compatible
/// servers know only the former). Returns the per-choice output limit the
/// upstream will honour. Members the rules do not name are left as sent.
pub fn prepare(
    endpoint: Endpoint,
    body: &mut JsonObject<'_>,
    per_choice_cap: u64,
    legacy_max_tokens: bool,
) -> u64 {
    if !endpoint.produces_output() {
        return 0;
    }
    let mut effective = per_choice_cap;
    if endpoint == Endpoint::ChatCompletions {
        // Clamp whichever limits the client set; add one if it set none.
        let mut any = false;
        for field in ["max_completion_tokens", "max_tokens"] {
            if let Ok(Some(v)) = body.get::<u64>(field) {
                any = true;
                let clamped = v.min(per_choice_cap);
                effective = effective.min(clamped);
                body.set(field, clamped.to_string());
            }
        }
        if !any && !legacy_max_tokens {
            body.set("max_completion_tokens", per_choice_cap.to_string());
        }
        // A server that knows only `max_tokens` ignores
        // `max_completion_tokens`: it always gets the limit in force.
        if legacy_max_tokens {
            body.set("max_tokens", effective.to_string());
        }
        if body.get::<bool>("stream") == Ok(Some(true)) {
            ask_for_stream_usage(body);
        }
    } else {
        let field = match endpoint {
            Endpoint::Messages => "max_tokens",
            _ => "max_output_tokens",
        };
        let clamped = body
            .get::<u64>(field)
            .ok()
            .flatten()
            .map_or(per_choice_cap, |v| v.min(per_choice_cap));
        effective = clamped;
        body.set(field, clamped.to_string());
    }
    effective
}

/// Set `stream_options.include_usage` to true, keeping the client's other
/// stream options (null counts as none). A `stream_options` of another type
/// is left alone for the provider to refuse.
fn ask_for_stream_usage(body: &mut JsonObject<'_>) {
    let options = match body.raw("stream_options") {
        None | Some("null") => Map::new(),
        Some(raw) => match serde_json::from_str::<Value>(raw) {
            Ok(Value::Object(options)) => options,
            _ => return,
        },
    };
    let mut options = options;
    options.insert("include_usage".to_owned(), Value::Bool(true));
    body.set("stream_options", Value::Object(options).to_string());
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // table tests spell out their rows
mod tests {
    use serde_json::json;

    use super::*;

    fn object(body: &Value) -> JsonObject<'static> {
        let text: &'static str = Box::leak(body.to_string().into_boxed_str());
        JsonObject::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn endpoints_are_recognised_by_path() {
        let cases = [
            ("/v1/chat/completions", Some(Endpoint::ChatCompletions)),
            ("/chat/completions", Some(Endpoint::ChatCompletions)),
            ("/v1/responses", Some(Endpoint::Responses)),
            ("/v1/embeddings/", Some(Endpoint::Embeddings)),
            ("/v1/messages", Some(Endpoint::Messages)),
            ("/v1/models", None),
            ("/v1/messages/count_tokens", None),
        ];
        for (path, want) in cases {
            assert_eq!(Endpoint::from_path(path), want, "{path}");
        }
    }

    #[test]
    fn inspect_reads_bounds_per_endpoint() {
        use Endpoint::*;
        let cases: Vec<(Endpoint, Value, Result<(bool, Option<u64>, u64), WireError>)> = vec![
            (ChatCompletions, json!({"model": "m"}), Ok((false, None, 1))),
            (
                ChatCompletions,
                json!({"model": "m", "max_tokens": 9}),
                Ok((false, Some(9), 1)),
            ),
            (
                ChatCompletions,
                json!({"model": "m", "max_completion_tokens": 7, "max_tokens": 9}),
                Ok((false, Some(7), 1)),
            ),
            (
                ChatCompletions,
                json!({"model": "m", "stream": true, "n": 3}),
                Ok((true, None, 3)),
            ),
            (
                ChatCompletions,
                json!({"model": "m", "n": 0}),
                Err(WireError::BadField("n")),
            ),
            (
                ChatCompletions,
                json!({"model": "m", "max_tokens": -1}),
                Err(WireError::BadField("max_tokens")),
            ),
            (
                ChatCompletions,
                json!({"model": "m", "max_tokens": "5"}),
                Err(WireError::BadField("max_tokens")),
            ),
            (
                ChatCompletions,
                json!({"model": "m", "stream": "yes"}),
                Err(WireError::BadField("stream")),
            ),
            (
                ChatCompletions,
                json!({"messages": []}),
                Err(WireError::MissingModel),
            ),
            (
                ChatCompletions,
                json!({"model": ""}),
                Err(WireError::BadField("model")),
            ),
            (
                ChatCompletions,
                json!({"model": 5}),
                Err(WireError::BadField("model")),
            ),
            // Names are kept in the ledger for good: bounded.
            (
                ChatCompletions,
                json!({"model": "m".repeat(256)}),
                Ok((false, None, 1)),
            ),
            (
                Messages,
                json!({"model": "m".repeat(257)}),
                Err(WireError::TooLong("model")),
            ),
            (
                Responses,
                json!({"model": "m", "max_output_tokens": 100}),
                Ok((false, Some(100), 1)),
            ),
            (
                Responses,
                json!({"model": "m", "max_tokens": 100}),
                Ok((false, None, 1)),
            ),
            (
                Embeddings,
                json!({"model": "m", "max_tokens": 100}),
                Ok((false, None, 1)),
            ),
            (
                Messages,
                json!({"model": "m", "max_tokens": 1024, "stream": true}),
                Ok((true, Some(1024), 1)),
            ),
        ];
        for (endpoint, body, want) in cases {
            let got = inspect(endpoint, &object(&body), 42).map(|f| {
                assert_eq!(f.input_bound, 42);
                (f.stream, f.requested_output, f.choices)
            });
            assert_eq!(got, want, "{endpoint:?} {body}");
        }
    }

    #[test]
    fn prepare_sets_or_clamps_the_output_limit() {
        use Endpoint::*;
        let cases: Vec<(Endpoint, Value, u64, bool, Value, u64)> = vec![
            (
                ChatCompletions,
                json!({"model": "m"}),
                50,
                false,
                json!({"model": "m", "max_completion_tokens": 50}),
                50,
            ),
            // An OpenAI-compatible server may know only `max_tokens`: it gets
            // the limit in force even when the client sent the newer field.
            (
                ChatCompletions,
                json!({"model": "m", "max_completion_tokens": 500}),
                50,
                true,
                json!({"model": "m", "max_completion_tokens": 50, "max_tokens": 50}),
                50,
            ),
            (
                ChatCompletions,
                json!({"model": "m", "max_completion_tokens": 20, "max_tokens": 80}),
                50,
                true,
                json!({"model": "m", "max_completion_tokens": 20, "max_tokens": 20}),
                20,
            ),
            (
                ChatCompletions,
                json!({"model": "m"}),
                50,
                true,
                json!({"model": "m", "max_tokens": 50}),
                50,
            ),
            (
                ChatCompletions,
                json!({"model": "m", "max_tokens": 10}),
                50,
                false,
                json!({"model": "m", "max_tokens": 10}),
                10,
            ),
            (
                ChatCompletions,
                json!({"model": "m", "max_tokens": 80}),
                50,
                false,
                json!({"model": "m", "max_tokens": 50}),
                50,
            ),
            (
                ChatCompletions,
                json!({"model": "m", "max_tokens": 80, "max_completion_tokens": 20}),
                50,
                false,
                json!({"model": "m", "max_tokens": 50, "max_completion_tokens": 20}),
                20,
            ),
            (
                ChatCompletions,
                json!({"model": "m", "stream": true}),
                5,
                false,
                json!({"model": "m", "stream": true, "max_completion_tokens": 5, "stream_options": {"include_usage": true}}),
                5,
            ),
            (
                ChatCompletions,
                json!({"model": "m", "stream": true, "stream_options": {"include_usage": false}}),
                5,
                false,
                json!({"model": "m", "stream": true, "max_completion_tokens": 5, "stream_options": {"include_usage": true}}),
                5,
            ),
            (
                ChatCompletions,
                json!({"model": "m", "stream": true, "stream_options": null, "max_tokens": 9}),
                5,
                false,
                json!({"model": "m", "stream": true, "max_tokens": 5, "stream_options": {"include_usage": true}}),
                5,
            ),
            (
                ChatCompletions,
                json!({"model": "m", "stream": true, "stream_options": "x"}),
                5,
                false,
                json!({"model": "m", "stream": true, "max_completion_tokens": 5, "stream_options": "x"}),
                5,
            ),
            (
                Responses,
                json!({"model": "m"}),
                9,
                false,
                json!({"model": "m", "max_output_tokens": 9}),
                9,
            ),
            (
                Responses,
                json!({"model": "m", "max_output_tokens": 3}),
                9,
                false,
                json!({"model": "m", "max_output_tokens": 3}),
                3,
            ),
            (
                Messages,
                json!({"model": "m", "max_tokens": 4096}),
                100,
                false,
                json!({"model": "m", "max_tokens": 100}),
                100,
            ),
            (
                Messages,
                json!({"model": "m", "stream": true}),
                100,
                false,
                json!({"model": "m", "stream": true, "max_tokens": 100}),
                100,
            ),
            (
                Embeddings,
                json!({"model": "m", "input": "x"}),
                100,
                false,
                json!({"model": "m", "input": "x"}),
                0,
            ),
        ];
        for (endpoint, before, cap, legacy, want_body, want_effective) in cases {
            let mut body = object(&before);
            let effective = prepare(endpoint, &mut body, cap, legacy);
            let body: Value = serde_json::from_slice(&body.to_vec(0)).unwrap();
            assert_eq!(body, want_body, "{endpoint:?} {before}");
            assert_eq!(effective, want_effective, "{endpoint:?} {before}");
        }
    }

    #[test]
    fn output_bound_scales_with_choices() {
        let facts = inspect(
            Endpoint::ChatCompletions,
            &object(&json!({"model": "m", "n": 4})),
            10,
        )
        .unwrap();
        assert_eq!(facts.output_bound(25), 100);
        assert_eq!(facts.output_bound(u64::MAX), u64::MAX);
    }
}
