//! Token usage as providers report it, normalised into disjoint counts.
//!
//! Providers overlap their categories differently: OpenAI's `prompt_tokens`
//! *includes* cached tokens and `completion_tokens` *includes* reasoning
//! tokens, while Anthropic reports cache reads and cache writes *beside*
//! `input_tokens`. [`Usage`] holds disjoint counts so that a cost is always
//! `sum(count * price)` with nothing charged twice.

use serde_json::Value;

/// Disjoint token counts for one call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input tokens billed at the full input price (cache reads excluded).
    pub input_tokens: u64,
    /// Input tokens served from the provider's prompt cache.
    pub cached_input_tokens: u64,
    /// Input tokens written to the provider's prompt cache (Anthropic).
    pub cache_write_tokens: u64,
    /// Output tokens billed at the output price (reasoning excluded).
    pub output_tokens: u64,
    /// Hidden reasoning tokens (OpenAI o-series), billed separately.
    pub reasoning_tokens: u64,
}

impl Usage {
    /// Every output-side token, reasoning included: what `max_tokens` bounds.
    pub fn total_output(&self) -> u64 {
        self.output_tokens + self.reasoning_tokens
    }

    /// Every input-side token.
    pub fn total_input(&self) -> u64 {
        self.input_tokens + self.cached_input_tokens + self.cache_write_tokens
    }
}

fn count(v: &Value, path: &[&str]) -> Option<u64> {
    let mut cur = v;
    for key in path {
        cur = cur.get(key)?;
    }
    cur.as_u64()
}

/// Read an OpenAI `usage` object (chat completions, responses, embeddings).
///
/// Chat completions say `prompt_tokens`/`completion_tokens`; the Responses
/// API says `input_tokens`/`output_tokens`. Returns `None` when the object
/// carries neither spelling, so a missing usage is never read as zero.
pub fn openai_usage(usage: &Value) -> Option<Usage> {
    let prompt = count(usage, &["prompt_tokens"]).or_else(|| count(usage, &["input_tokens"]))?;
    let completion = count(usage, &["completion_tokens"])
        .or_else(|| count(usage, &["output_tokens"]))
        .unwrap_or(0);
    let cached = count(usage, &["prompt_tokens_details", "cached_tokens"])
        .or_else(|| count(usage, &["input_tokens_details", "cached_tokens"]))
        .unwrap_or(0)
        .min(prompt);
    // OpenAI counts reasoning inside the completion. Some compatible servers
    // (xAI's, for one) count it beside it, and their total says so: tokens
    // the total has beyond prompt and completion are reasoning the
    // completion left out, never to be dropped.
    let beside = count(usage, &["total_tokens"])
        .map_or(0, |t| t.saturating_sub(prompt.saturating_add(completion)));
    let (output, reasoning) = if beside > 0 {
        (completion, beside)
    } else {
        let inside = count(usage, &["completion_tokens_details", "reasoning_tokens"])
            .or_else(|| count(usage, &["output_tokens_details", "reasoning_tokens"]))
            .unwrap_or(0)
            .min(completion);
        (completion - inside, inside)
    };
    Some(Usage {
        input_tokens: prompt - cached,
        cached_input_tokens: cached,
        cache_write_tokens: 0,
        output_tokens: output,
        reasoning_tokens: reasoning,
    })
}

/// Read an Anthropic `usage` object. `input_tokens` is required; the cache
/// fields are optional and already disjoint from it.
pub fn anthropic_usage(usage: &Value) -> Option<Usage> {
    Some(Usage {
        input_tokens: count(usage, &["input_tokens"])?,
        cached_input_tokens: count(usage, &["cache_read_input_tokens"]).unwrap_or(0),
        cache_write_tokens: count(usage, &["cache_creation_input_tokens"]).unwrap_or(0),
        output_tokens: count(usage, &["output_tokens"]).unwrap_or(0),
        reasoning_tokens: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn openai_usage_is_made_disjoint() {
        let cases = [
            (
                json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}),
                Some(Usage {
                    input_tokens: 10,
                    output_tokens: 5,
                    ..Usage::default()
                }),
            ),
            // Reasoning counted beside the completion, as the total shows.
            (
                json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 315,
                       "completion_tokens_details": {"reasoning_tokens": 300}}),
                Some(Usage {
                    input_tokens: 10,
                    output_tokens: 5,
                    reasoning_tokens: 300,
                    ..Usage::default()
                }),
            ),
            (
                json!({"prompt_tokens": 100, "completion_tokens": 50,
                       "prompt_tokens_details": {"cached_tokens": 40},
                       "completion_tokens_details": {"reasoning_tokens": 30}}),
                Some(Usage {
                    input_tokens: 60,
                    cached_input_tokens: 40,
                    output_tokens: 20,
                    reasoning_tokens: 30,
                    ..Usage::default()
                }),
            ),
            (
                json!({"input_tokens": 7, "output_tokens": 3,
                       "input_tokens_details": {"cached_tokens": 2},
                       "output_tokens_details": {"reasoning_tokens": 1}}),
                Some(Usage {
                    input_tokens: 5,
                    cached_input_tokens: 2,
                    output_tokens: 2,
                    reasoning_tokens: 1,
                    ..Usage::default()
                }),
            ),
            // Embeddings report only prompt tokens.
            (
                json!({"prompt_tokens": 8, "total_tokens": 8}),
                Some(Usage {
                    input_tokens: 8,
                    ..Usage::default()
                }),
            ),
            // A cached count larger than the prompt is clamped, never underflows.
            (
                json!({"prompt_tokens": 3, "prompt_tokens_details": {"cached_tokens": 9}}),
                Some(Usage {
                    cached_input_tokens: 3,
                    ..Usage::default()
                }),
            ),
            (json!({"total_tokens": 8}), None),
            (json!({"prompt_tokens": -1}), None),
            (json!(null), None),
        ];
        for (input, want) in cases {
            assert_eq!(openai_usage(&input), want, "{input}");
        }
    }

    #[test]
    fn anthropic_usage_keeps_cache_fields_apart() {
        let cases = [
            (
                json!({"input_tokens": 12, "output_tokens": 4}),
                Some(Usage {
                    input_tokens: 12,
                    output_tokens: 4,
                    ..Usage::default()
                }),
            ),
            (
                json!({"input_tokens": 12, "output_tokens": 4,
                       "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20}),
                Some(Usage {
                    input_tokens: 12,
                    cached_input_tokens: 100,
                    cache_write_tokens: 20,
                    output_tokens: 4,
                    reasoning_tokens: 0,
                }),
            ),
            (json!({"output_tokens": 4}), None),
        ];
        for (input, want) in cases {
            assert_eq!(anthropic_usage(&input), want, "{input}");
        }
    }
}
