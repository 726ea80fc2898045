//! The `mock` provider: deterministic fake completions, answered in-process.
//!
//! It lets someone try Caracal with no network and no provider account. The
//! answers have the exact wire shapes of OpenAI and Anthropic (JSON and
//! SSE), so the whole metering path runs as it would against a real
//! provider. Usage is deterministic:
//! - input tokens: the number of whitespace-separated words in every string
//!   of the request's `messages` / `input` / `prompt` / `system`, labels
//!   such as `role` and `type` aside (at least 1);
//! - output tokens: the reply's words, at most the request's output limit.
//!   Each word is one SSE delta.

use bytes::Bytes;
use futures::stream;
use http_body_util::{BodyExt, StreamBody};
use hyper::{Response, StatusCode, body::Frame};
use serde_json::{Value, json};

use crate::upstream::{Body, full};
use crate::wire::Endpoint;

const REPLY: &str =
    "This is a mock reply from Caracal. No provider was called and no money was spent.";

fn count_words(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.split_whitespace().count() as u64,
        Value::Array(items) => items.iter().map(count_words).sum(),
        // Labels such as `"role": "user"` are structure, not prompt text.
        Value::Object(map) => map
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "role" | "type" | "name" | "id"))
            .map(|(_, v)| count_words(v))
            .sum(),
        _ => 0,
    }
}

/// Input tokens the mock charges for a request body.
pub fn input_tokens(body: &Value) -> u64 {
    let words: u64 = ["messages", "input", "prompt", "system"]
        .iter()
        .filter_map(|k| body.get(k))
        .map(count_words)
        .sum();
    words.max(1)
}

/// The reply's words, cut to the output limit the gateway set.
fn reply_words(body: &Value) -> Vec<&'static str> {
    let limit = ["max_completion_tokens", "max_tokens", "max_output_tokens"]
        .iter()
        .filter_map(|k| body.get(k).and_then(Value::as_u64))
        .min()
        .unwrap_or(u64::MAX);
    REPLY
        .split(' ')
        .take(limit.min(usize::MAX as u64) as usize)
        .collect()
}

fn sse(events: Vec<String>) -> Body {
    let frames = events
        .into_iter()
        .map(|e| Ok::<_, std::io::Error>(Frame::data(Bytes::from(e))));
    StreamBody::new(stream::iter(frames)).boxed()
}

fn data(v: Value) -> String {
    format!("data: {v}\n\n")
}

fn named(event: &str, v: Value) -> String {
    format!("event: {event}\ndata: {v}\n\n")
}

fn response(content_type: &str, body: Body) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", content_type)
        .body(body)
        .unwrap_or_else(|_| Response::new(full("")))
}

/// Answer `body` (already prepared by the gateway) as the provider would.
pub fn respond(endpoint: Endpoint, body: &Value) -> Response<Body> {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("mock")
        .to_owned();
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let input = input_tokens(body);
    let words = reply_words(body);
    let output = words.len() as u64;
    let text = words.join(" ");
    match (endpoint, stream) {
        (Endpoint::Embeddings, _) => response(
            "application/json",
            full(json!({"object": "list", "model": model, "data": [{"object": "embedding", "index": 0, "embedding": [0.0, 0.5, 1.0]}],
                        "usage": {"prompt_tokens": input, "total_tokens": input}}).to_string()),
        ),
        (Endpoint::ChatCompletions, false) => response(
            "application/json",
            full(json!({"id": "chatcmpl-mock", "object": "chat.completion", "created": 0, "model": model,
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output}}).to_string()),
        ),
        (Endpoint::ChatCompletions, true) => {
            let chunk = |delta: Value, finish: Value| {
                data(json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0, "model": model,
                            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}))
            };
            let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
            for (i, w) in words.iter().enumerate() {
                let piece = if i == 0 { (*w).to_owned() } else { format!(" {w}") };
                events.push(chunk(json!({"content": piece}), Value::Null));
            }
            events.push(chunk(json!({}), json!("stop")));
            if body.pointer("/stream_options/include_usage").and_then(Value::as_bool) == Some(true) {
                events.push(data(json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [],
                                        "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output}})));
            }
            events.push("data: [DONE]\n\n".to_owned());
            response("text/event-stream", sse(events))
        }
        (Endpoint::Responses, false) => response(
            "application/json",
            full(json!({"id": "resp_mock", "object": "response", "status": "completed", "model": model,
                        "output": [{"type": "message", "id": "msg_mock", "status": "completed", "role": "assistant",
                                    "content": [{"type": "output_text", "text": text, "annotations": []}]}],
                        "usage": {"input_tokens": input, "output_tokens": output, "total_tokens": input + output}}).to_string()),
        ),
        (Endpoint::Responses, true) => {
            let mut events = vec![named("response.created", json!({"type": "response.created", "response": {"id": "resp_mock", "status": "in_progress"}}))];
            for w in &words {
                events.push(named("response.output_text.delta", json!({"type": "response.output_text.delta", "delta": format!("{w} ")})));
            }
            events.push(named("response.completed", json!({"type": "response.completed",
                "response": {"id": "resp_mock", "status": "completed", "model": model, "usage": {"input_tokens": input, "output_tokens": output, "total_tokens": input + output}}})));
            response("text/event-stream", sse(events))
        }
        (Endpoint::Messages, false) => response(
            "application/json",
            full(json!({"id": "msg_mock", "type": "message", "role": "assistant", "model": model,
                        "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": null,
                        "usage": {"input_tokens": input, "output_tokens": output}}).to_string()),
        ),
        (Endpoint::Messages, true) => {
            let mut events = vec![
                named("message_start", json!({"type": "message_start", "message": {"id": "msg_mock", "type": "message", "role": "assistant", "model": model,
                    "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": input, "output_tokens": 1}}})),
                named("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})),
            ];
            for (i, w) in words.iter().enumerate() {
                let piece = if i == 0 { (*w).to_owned() } else { format!(" {w}") };
                events.push(named("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}})));
            }
            events.push(named("content_block_stop", json!({"type": "content_block_stop", "index": 0})));
            events.push(named("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": output}})));
            events.push(named("message_stop", json!({"type": "message_stop"})));
            response("text/event-stream", sse(events))
        }
    }
}

/// One model as both SDKs describe it: OpenAI's `id`, `object`, `created`,
/// `owned_by` and Anthropic's `type`, `display_name`, `created_at` (each
/// SDK ignores the other's fields).
fn model_entry(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": "caracal-mock",
           "type": "model", "display_name": id, "created_at": "1970-01-01T00:00:00Z"})
}

/// The model list (`GET /v1/models`) in a shape both SDKs read: OpenAI's
/// `object` and `data`, Anthropic's `data`, `has_more`, `first_id`, `last_id`.
pub fn models(ids: &[&str]) -> Response<Body> {
    let data: Vec<Value> = ids.iter().map(|id| model_entry(id)).collect();
    response(
        "application/json",
        full(
            json!({"object": "list", "data": data, "has_more": false,
                    "first_id": ids.first(), "last_id": ids.last()})
            .to_string(),
        ),
    )
}

/// One model (`GET /v1/models/{id}`).
pub fn model(id: &str) -> Response<Body> {
    response("application/json", full(model_entry(id).to_string()))
}

/// Anthropic's token count (`POST /v1/messages/count_tokens`): the input
/// tokens a `messages` call with this body would be charged.
pub fn token_count(body: &Value) -> Response<Body> {
    response(
        "application/json",
        full(json!({"input_tokens": input_tokens(body)}).to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{SseScanner, StreamMeter, Usage, usage_from_json};

    async fn collect(resp: Response<Body>) -> Vec<u8> {
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec()
    }

    #[tokio::test]
    async fn mock_answers_meter_like_real_providers() {
        let cases = [
            (
                Endpoint::ChatCompletions,
                json!({"model": "m", "messages": [{"role": "user", "content": "one two three"}], "max_completion_tokens": 5}),
            ),
            (
                Endpoint::ChatCompletions,
                json!({"model": "m", "messages": [{"role": "user", "content": "one two three"}], "max_completion_tokens": 5, "stream": true, "stream_options": {"include_usage": true}}),
            ),
            (
                Endpoint::Responses,
                json!({"model": "m", "input": "one two three", "max_output_tokens": 5}),
            ),
            (
                Endpoint::Responses,
                json!({"model": "m", "input": "one two three", "max_output_tokens": 5, "stream": true}),
            ),
            (
                Endpoint::Messages,
                json!({"model": "m", "messages": [{"role": "user", "content": "one two three"}], "max_tokens": 5}),
            ),
            (
                Endpoint::Messages,
                json!({"model": "m", "messages": [{"role": "user", "content": "one two three"}], "max_tokens": 5, "stream": true}),
            ),
        ];
        let want = Usage {
            input_tokens: 3,
            output_tokens: 5,
            ..Usage::default()
        };
        for (endpoint, body) in cases {
            let bytes = collect(respond(endpoint, &body)).await;
            let usage = if body["stream"] == json!(true) {
                let mut scanner = SseScanner::new(1 << 16);
                let mut meter = StreamMeter::new(endpoint);
                scanner
                    .feed(&bytes, |e| meter.observe(&e).unwrap())
                    .unwrap();
                assert!(meter.finished(), "{endpoint:?}");
                meter.usage().unwrap()
            } else {
                usage_from_json(endpoint, &bytes).unwrap()
            };
            assert_eq!(usage, want, "{endpoint:?} {body}");
        }
    }

    #[tokio::test]
    async fn free_answers_read_as_both_providers_shapes() {
        let list: Value =
            serde_json::from_slice(&collect(models(&["mock-small", "mock-large"])).await).unwrap();
        assert_eq!(list["object"], "list");
        assert_eq!(
            (&list["first_id"], &list["last_id"]),
            (&json!("mock-small"), &json!("mock-large"))
        );
        assert_eq!(list["has_more"], false);
        for (entry, id) in list["data"]
            .as_array()
            .unwrap()
            .iter()
            .zip(["mock-small", "mock-large"])
        {
            // OpenAI's fields and Anthropic's.
            for field in [
                "id",
                "object",
                "created",
                "owned_by",
                "type",
                "display_name",
                "created_at",
            ] {
                assert!(entry.get(field).is_some(), "{field} missing in {entry}");
            }
            assert_eq!(entry["id"], id);
        }
        let one: Value = serde_json::from_slice(&collect(model("mock-small")).await).unwrap();
        assert_eq!(one["id"], "mock-small");
        let body = json!({"model": "mock-small", "system": "be brief",
                          "messages": [{"role": "user", "content": "three words here"}]});
        let count: Value = serde_json::from_slice(&collect(token_count(&body)).await).unwrap();
        assert_eq!(
            count,
            json!({"input_tokens": 5}),
            "the tokens a call would be charged"
        );
    }

    #[test]
    fn input_tokens_count_words_in_prompt_fields() {
        assert_eq!(input_tokens(&json!({"model": "a b c"})), 1);
        assert_eq!(
            input_tokens(
                &json!({"system": "be brief", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi there"}]}]})
            ),
            4
        );
    }
}
