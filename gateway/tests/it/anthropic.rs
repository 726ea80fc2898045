use std::sync::Arc;

use caracal_api::Micros;
use caracal_gateway::config::{Limits, ProviderKind};
use caracal_ledger::event::Outcome;
use serde_json::json;

use crate::{harness::*, openai::budgeted_snapshot};

async fn anthropic_gateway(upstream: &FakeUpstream) -> TestGateway {
    start(Setup {
        providers: vec![provider(
            "anthropic",
            ProviderKind::Anthropic,
            Some(&upstream.url),
        )],
        snapshot: Some(budgeted_snapshot(10_000_000)),
        agent: "team/bot".into(),
        limits: Limits::default(),
    })
    .await
}

fn named(event: &str, v: serde_json::Value) -> String {
    format!("event: {event}\ndata: {v}\n\n")
}

#[tokio::test]
async fn messages_json_with_x_api_key() {
    let handler: Handler = Arc::new(|_: &Seen| {
        json_response(
            json!({"type": "message", "content": [{"type": "text", "text": "hi"}],
            "usage": {"input_tokens": 100, "output_tokens": 10, "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 200}}),
        )
    });
    let upstream = FakeUpstream::start(handler).await;
    let gw = anthropic_gateway(&upstream).await;
    let answer = post(
        &format!("{}/anthropic/v1/messages", gw.url),
        &[("x-api-key", &gw.key), ("anthropic-version", "2023-06-01")],
        json!({"model": "claude-test", "max_tokens": 1024, "messages": [{"role": "user", "content": "hi"}]}).to_string(),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let seen = upstream.last();
    assert_eq!(seen.headers["x-api-key"], "sk-provider-anthropic");
    assert_eq!(seen.headers["anthropic-version"], "2023-06-01");
    assert!(!seen.headers.contains_key("authorization"));
    // 100 x 3 + 1000 x 0.30 + 200 x 3.75 + 10 x 15 = 300 + 300 + 750 + 150.
    let e = &gw.events(1).await[0];
    assert_eq!(e.cost, Micros(1500));
    assert_eq!((e.tokens.cached_input, e.tokens.cache_write), (1000, 200));
}

#[tokio::test]
async fn messages_stream_combines_start_and_delta_usage() {
    let handler: Handler = Arc::new(|_: &Seen| {
        sse_response(vec![
            named(
                "message_start",
                json!({"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 25, "output_tokens": 1, "cache_read_input_tokens": 5}}}),
            ),
            named(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            named(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
            ),
            named(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
            named(
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 15}}),
            ),
            named("message_stop", json!({"type": "message_stop"})),
        ])
    });
    let upstream = FakeUpstream::start(handler).await;
    let gw = anthropic_gateway(&upstream).await;
    let answer = post(
        &format!("{}/anthropic/v1/messages", gw.url),
        &[("x-api-key", &gw.key)],
        json!({"model": "claude-test", "max_tokens": 100, "stream": true, "messages": []})
            .to_string(),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert!(answer.text().contains("message_stop"));
    let e = &gw.events(1).await[0];
    // 25 x 3 + 5 x 0.30 + 15 x 15 = 301.5 -> 302.
    assert_eq!((e.outcome, e.cost), (Outcome::Allowed, Micros(302)));
}

#[tokio::test]
async fn anthropic_errors_use_the_anthropic_shape() {
    let upstream = FakeUpstream::start(Arc::new(|_: &Seen| json_response(json!({})))).await;
    let gw = anthropic_gateway(&upstream).await;
    let answer = post(
        &format!("{}/anthropic/v1/messages", gw.url),
        &[("x-api-key", "ck_wrong")],
        "{}",
    )
    .await;
    assert_eq!(answer.status, 401);
    let body = answer.json();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");
    assert_eq!(body["error"]["caracal_reason"], "invalid_api_key");
    assert_eq!(
        body["request_id"],
        answer.headers["request-id"].to_str().unwrap()
    );
    assert!(upstream.seen.lock().unwrap().is_empty());
}
