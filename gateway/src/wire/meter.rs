//! Reading usage out of provider responses, whole or streamed.
//!
//! For a JSON response the provider's `usage` object is the whole story. For
//! a stream the meter watches events as they pass: it counts output-bearing
//! deltas (each carries at least one token) so a stream that runs past its
//! reservation can be cut before the provider's final usage arrives, and it
//! keeps the provider's own usage report when one comes (OpenAI's usage
//! chunk, the Responses API's `response.completed`, Anthropic's
//! `message_start` plus the cumulative `message_delta`).

use serde_json::Value;

use crate::wire::{Endpoint, SseEvent, Usage, WireError, anthropic_usage, openai_usage};

/// Usage from a complete (non-streamed) JSON response body.
pub fn usage_from_json(endpoint: Endpoint, body: &[u8]) -> Result<Usage, WireError> {
    /// Only `usage` is kept; the rest of the answer (the generated text) is
    /// checked for well-formedness and skipped without being built.
    #[derive(serde::Deserialize)]
    struct Answer {
        usage: Option<Value>,
    }
    let answer: Answer = serde_json::from_slice(body).map_err(|_| WireError::NotJson)?;
    let usage = answer
        .usage
        .filter(|u| reports_output(endpoint, u))
        .ok_or(WireError::MissingUsage)?;
    let usage = &usage;
    let parsed = if endpoint.is_anthropic() {
        anthropic_usage(usage)
    } else {
        openai_usage(usage)
    };
    parsed.ok_or(WireError::MissingUsage)
}

/// Whether a usage object counts the output of an endpoint that produces
/// some. One that does not is no usage report at all: reading the missing
/// count as zero would let every output token through free.
fn reports_output(endpoint: Endpoint, usage: &Value) -> bool {
    let has = |field: &str| usage.get(field).and_then(Value::as_u64).is_some();
    match endpoint {
        Endpoint::Embeddings => true,
        Endpoint::Messages => has("output_tokens"),
        Endpoint::ChatCompletions | Endpoint::Responses => {
            has("completion_tokens") || has("output_tokens")
        }
    }
}

/// Watches a stream's events for output and usage.
#[derive(Debug)]
pub struct StreamMeter {
    endpoint: Endpoint,
    deltas: u64,
    usage: Option<Usage>,
    finished: bool,
    /// Anthropic only: a `message_delta` with the final counts was seen.
    saw_final_usage: bool,
}

impl StreamMeter {
    pub fn new(endpoint: Endpoint) -> Self {
        StreamMeter {
            endpoint,
            deltas: 0,
            usage: None,
            finished: false,
            saw_final_usage: false,
        }
    }

    /// Account for one event. An event whose data is not the JSON the
    /// provider's format promises makes the stream invalid.
    pub fn observe(&mut self, event: &SseEvent) -> Result<(), WireError> {
        if self.endpoint.is_anthropic() {
            self.observe_anthropic(event)
        } else {
            self.observe_openai(event)
        }
    }

    fn observe_openai(&mut self, event: &SseEvent) -> Result<(), WireError> {
        if event.data == "[DONE]" {
            self.finished = true;
            return Ok(());
        }
        let v: Value = serde_json::from_str(&event.data).map_err(|_| WireError::InvalidSse)?;
        if v.get("error").is_some_and(|e| !e.is_null()) || event.event == "error" {
            return Err(WireError::UpstreamStreamError);
        }
        // Responses API: typed events; usage arrives with the final response.
        if let Some(kind) = v.get("type").and_then(Value::as_str) {
            match kind {
                "response.output_text.delta"
                | "response.function_call_arguments.delta"
                | "response.reasoning_text.delta" => self.deltas += 1,
                "response.completed" | "response.incomplete" => {
                    self.finished = true;
                    if let Some(u) = v
                        .pointer("/response/usage")
                        .filter(|u| reports_output(self.endpoint, u))
                        .and_then(openai_usage)
                    {
                        self.usage = Some(u);
                    }
                }
                "response.failed" | "error" => return Err(WireError::UpstreamStreamError),
                _ => {}
            }
            return Ok(());
        }
        // Chat completions: deltas in choices, usage in a final chunk.
        if let Some(choices) = v.get("choices").and_then(Value::as_array) {
            for choice in choices {
                let delta = choice.get("delta");
                let has_content = delta
                    .and_then(|d| d.get("content"))
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty());
                let has_tool = delta
                    .and_then(|d| d.get("tool_calls"))
                    .is_some_and(|t| !t.is_null());
                let has_refusal = delta
                    .and_then(|d| d.get("refusal"))
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty());
                if has_content || has_tool || has_refusal {
                    self.deltas += 1;
                }
            }
        }
        if let Some(u) = v
            .get("usage")
            .filter(|u| reports_output(self.endpoint, u))
            .and_then(openai_usage)
        {
            self.usage = Some(u);
        }
        Ok(())
    }

    fn observe_anthropic(&mut self, event: &SseEvent) -> Result<(), WireError> {
        let v: Value = serde_json::from_str(&event.data).map_err(|_| WireError::InvalidSse)?;
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(event.event.as_str());
        match kind {
            "message_start" => {
                let usage = v
                    .pointer("/message/usage")
                    .and_then(anthropic_usage)
                    .ok_or(WireError::InvalidSse)?;
                self.usage = Some(usage);
            }
            "content_block_delta" => self.deltas += 1,
            "message_delta" => {
                // Counts in message_delta are cumulative; later ones win. One
                // before `message_start` would leave the input priced at zero.
                let usage = v.get("usage").ok_or(WireError::InvalidSse)?;
                let current = self.usage.as_mut().ok_or(WireError::InvalidSse)?;
                // Only a delta that gives the output count is a final report:
                // without one, `message_start`'s placeholder would be charged.
                if let Some(out) = usage.get("output_tokens").and_then(Value::as_u64) {
                    current.output_tokens = out;
                    self.saw_final_usage = true;
                }
                if let Some(input) = usage.get("input_tokens").and_then(Value::as_u64) {
                    current.input_tokens = input;
                }
                if let Some(n) = usage.get("cache_read_input_tokens").and_then(Value::as_u64) {
                    current.cached_input_tokens = n;
                }
                if let Some(n) = usage
                    .get("cache_creation_input_tokens")
                    .and_then(Value::as_u64)
                {
                    current.cache_write_tokens = n;
                }
            }
            // `message_start` carries only a placeholder output count; the
            // real one is in `message_delta`. Without it the stream did not
            // report its usage and is charged as one that did not.
            "message_stop" => self.finished = self.saw_final_usage,
            "error" => return Err(WireError::UpstreamStreamError),
            _ => {}
        }
        Ok(())
    }

    /// The most output the stream has shown so far: the provider's count
    /// when it has reported one, else one token per delta seen.
    pub fn observed_output(&self) -> u64 {
        let reported = self.usage.map_or(0, |u| u.total_output());
        reported.max(self.deltas)
    }

    /// The provider's final usage, if the stream reported it.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Whether the stream reached its normal end marker.
    pub fn finished(&self) -> bool {
        self.finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::SseScanner;

    fn run(endpoint: Endpoint, stream: &str) -> (Result<(), WireError>, StreamMeter) {
        let mut scanner = SseScanner::new(1 << 16);
        let mut meter = StreamMeter::new(endpoint);
        let mut result = Ok(());
        scanner
            .feed(stream.as_bytes(), |e| {
                if result.is_ok() {
                    result = meter.observe(&e);
                }
            })
            .unwrap();
        (result, meter)
    }

    const OPENAI_STREAM: &str = concat!(
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":2,\"total_tokens\":13}}\n\n",
        "data: [DONE]\n\n",
    );

    const ANTHROPIC_STREAM: &str = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1,\"cache_read_input_tokens\":5}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\ndata: {\"type\":\"ping\"}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );

    #[test]
    fn openai_chat_stream_usage_and_deltas() {
        let (result, meter) = run(Endpoint::ChatCompletions, OPENAI_STREAM);
        result.unwrap();
        assert!(meter.finished());
        assert_eq!(
            meter.usage(),
            Some(Usage {
                input_tokens: 11,
                output_tokens: 2,
                ..Usage::default()
            })
        );
        assert_eq!(meter.observed_output(), 2);
    }

    #[test]
    fn anthropic_stream_combines_start_and_delta() {
        let (result, meter) = run(Endpoint::Messages, ANTHROPIC_STREAM);
        result.unwrap();
        assert!(meter.finished());
        assert_eq!(
            meter.usage(),
            Some(Usage {
                input_tokens: 25,
                cached_input_tokens: 5,
                output_tokens: 15,
                ..Usage::default()
            })
        );
        assert_eq!(meter.observed_output(), 15);
    }

    #[test]
    fn responses_stream_reads_final_usage() {
        let stream = concat!(
            "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{}}\n\n",
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"a\"}\n\n",
            "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":4,\"output_tokens\":1}}}\n\n",
        );
        let (result, meter) = run(Endpoint::Responses, stream);
        result.unwrap();
        assert!(meter.finished());
        assert_eq!(
            meter.usage(),
            Some(Usage {
                input_tokens: 4,
                output_tokens: 1,
                ..Usage::default()
            })
        );
    }

    #[test]
    fn broken_streams_are_refused() {
        let cases = [
            (
                Endpoint::ChatCompletions,
                "data: {not json\n\n",
                WireError::InvalidSse,
            ),
            (
                Endpoint::ChatCompletions,
                "data: {\"error\":{\"message\":\"boom\"}}\n\n",
                WireError::UpstreamStreamError,
            ),
            (
                Endpoint::Messages,
                "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{}}\n\n",
                WireError::InvalidSse,
            ),
            (
                Endpoint::Messages,
                "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}\n\n",
                WireError::UpstreamStreamError,
            ),
            (
                Endpoint::Responses,
                "data: {\"type\":\"response.failed\"}\n\n",
                WireError::UpstreamStreamError,
            ),
        ];
        for (endpoint, stream, want) in cases {
            assert_eq!(run(endpoint, stream).0, Err(want), "{stream}");
        }
    }

    /// An Anthropic stream whose usage is incomplete must not count as a
    /// stream that reported usage: a `message_delta` with no `message_start`
    /// would price the input at zero, and a stream with no `message_delta`
    /// would price the output at `message_start`'s placeholder count.
    #[test]
    fn anthropic_stream_without_both_usage_events_is_not_fully_reported() {
        let delta = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}\n\n";
        let stop = "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let no_start = format!(
            "{}{}{}",
            delta.repeat(3),
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tokens\":3}}\n\n",
            stop
        );
        assert_eq!(
            run(Endpoint::Messages, &no_start).0,
            Err(WireError::InvalidSse)
        );

        let no_delta = format!(
            "{}{}{}",
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n",
            delta.repeat(40),
            stop
        );
        let (result, meter) = run(Endpoint::Messages, &no_delta);
        result.unwrap();
        assert!(!meter.finished(), "no final usage: must fall back");
        assert_eq!(meter.observed_output(), 40);

        // A message_delta whose usage has no output count is no final report
        // either (it would leave the placeholder 1 as the output).
        let empty_delta = format!(
            "{}{}{}{}",
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n",
            delta.repeat(40),
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{}}\n\n",
            stop
        );
        let (result, meter) = run(Endpoint::Messages, &empty_delta);
        result.unwrap();
        assert!(!meter.finished(), "an output-less delta is not final usage");
        assert_eq!(meter.observed_output(), 40);
    }

    #[test]
    fn a_stream_usage_without_output_count_is_not_a_report() {
        let stream = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5}}\n\n",
            "data: [DONE]\n\n",
        );
        let (result, meter) = run(Endpoint::ChatCompletions, stream);
        result.unwrap();
        assert_eq!(meter.usage(), None);
        assert_eq!(meter.observed_output(), 1);
    }

    #[test]
    fn deltas_bound_output_before_usage_arrives() {
        let chunk = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n";
        let (result, meter) = run(Endpoint::ChatCompletions, &chunk.repeat(7));
        result.unwrap();
        assert!(!meter.finished());
        assert_eq!(meter.usage(), None);
        assert_eq!(meter.observed_output(), 7);
    }

    #[test]
    fn json_usage_per_endpoint() {
        let cases: Vec<(Endpoint, &str, Result<Usage, WireError>)> = vec![
            (
                Endpoint::ChatCompletions,
                r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
                Ok(Usage {
                    input_tokens: 3,
                    output_tokens: 4,
                    ..Usage::default()
                }),
            ),
            (
                Endpoint::Messages,
                r#"{"content":[],"usage":{"input_tokens":3,"output_tokens":4}}"#,
                Ok(Usage {
                    input_tokens: 3,
                    output_tokens: 4,
                    ..Usage::default()
                }),
            ),
            (
                Endpoint::Messages,
                r#"{"content":[]}"#,
                Err(WireError::MissingUsage),
            ),
            (Endpoint::ChatCompletions, "<html>", Err(WireError::NotJson)),
            // A model answer whose usage has no output count is not read as
            // zero output (that would price the answer's tokens at nothing).
            (
                Endpoint::ChatCompletions,
                r#"{"choices":[{"message":{"content":"a long answer"}}],"usage":{"prompt_tokens":3}}"#,
                Err(WireError::MissingUsage),
            ),
            (
                Endpoint::Responses,
                r#"{"output":[],"usage":{"input_tokens":3}}"#,
                Err(WireError::MissingUsage),
            ),
            (
                Endpoint::Messages,
                r#"{"content":[],"usage":{"input_tokens":3}}"#,
                Err(WireError::MissingUsage),
            ),
            // Embeddings have no output; input alone is their whole usage.
            (
                Endpoint::Embeddings,
                r#"{"data":[],"usage":{"prompt_tokens":3,"total_tokens":3}}"#,
                Ok(Usage {
                    input_tokens: 3,
                    ..Usage::default()
                }),
            ),
        ];
        for (endpoint, body, want) in cases {
            assert_eq!(usage_from_json(endpoint, body.as_bytes()), want, "{body}");
        }
    }
}
