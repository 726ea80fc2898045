//! Endpoints that cost nothing (model lists, Anthropic's token count): passed
//! on with the provider's key for an agent that may reach the provider,
//! neither priced nor recorded; everything else unmetered stays closed.

use std::sync::Arc;

use caracal_gateway::config::ProviderKind;
use caracal_policy::fixtures::{daily, policy_rule, with_budget};
use hyper::Method;
use serde_json::json;

use crate::harness::*;

/// OpenAI and Anthropic providers on one fake upstream, for `team/bot`
/// with a budget and, when given, a policy allowlist of providers.
async fn two_provider_gateway(upstream: &FakeUpstream, providers: Option<&[&str]>) -> TestGateway {
    let mut rule = with_budget(
        policy_rule("team/daily", "team/bot"),
        1_000_000,
        daily("UTC"),
        "team/bot",
    );
    rule.allow.providers = providers.map(|p| p.iter().map(|s| s.to_string()).collect());
    let providers = vec![
        provider("openai", ProviderKind::Openai, Some(&upstream.url)),
        provider("anthropic", ProviderKind::Anthropic, Some(&upstream.url)),
    ];
    start_for_bot(providers, rule).await
}

/// Answers a model list, a token count or a chat completion by path.
fn provider_answers() -> Handler {
    Arc::new(|seen: &Seen| match seen.path.as_str() {
        "/v1/messages/count_tokens" => json_response(json!({"input_tokens": 42})),
        "/v1/chat/completions" => json_response(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-test",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        })),
        path if path.starts_with("/v1/models/") => json_response(
            json!({"id": "gpt-test", "object": "model", "created": 1, "owned_by": "x"}),
        ),
        _ => json_response(
            json!({"object": "list", "data": [{"id": "gpt-test", "object": "model", "created": 1, "owned_by": "x"}]}),
        ),
    })
}

#[tokio::test]
async fn model_lists_and_token_counts_pass_with_the_provider_key_and_cost_nothing() {
    let upstream = FakeUpstream::start(provider_answers()).await;
    let gw = two_provider_gateway(&upstream, None).await;
    let bearer = gw.bearer();
    let openai = [("authorization", bearer.as_str())];

    let list = request(
        Method::GET,
        &format!("{}/openai/v1/models?limit=2", gw.url),
        &openai,
        "",
    )
    .await;
    assert_eq!(list.status, 200, "{}", list.text());
    assert_eq!(list.json()["data"][0]["id"], "gpt-test");
    let seen = upstream.last();
    assert_eq!(
        (&seen.method, seen.path.as_str(), seen.query.as_deref()),
        (&Method::GET, "/v1/models", Some("limit=2"))
    );
    assert_eq!(seen.headers["authorization"], "Bearer sk-provider-openai");

    let one = request(
        Method::GET,
        &format!("{}/openai/v1/models/gpt-test", gw.url),
        &openai,
        "",
    )
    .await;
    assert_eq!(
        (one.status, one.json()["id"].clone()),
        (200, json!("gpt-test"))
    );
    assert_eq!(upstream.last().path, "/v1/models/gpt-test");

    let count_body = r#"{"model": "claude-test", "messages": [{"role": "user", "content": "hi"}]}"#;
    let count = post(
        &format!("{}/anthropic/v1/messages/count_tokens", gw.url),
        &[("x-api-key", &gw.key), ("anthropic-version", "2023-06-01")],
        count_body,
    )
    .await;
    assert_eq!(count.status, 200, "{}", count.text());
    assert_eq!(count.json()["input_tokens"], 42);
    let seen = upstream.last();
    assert_eq!(seen.headers["x-api-key"], "sk-provider-anthropic");
    assert!(!seen.headers.contains_key("authorization"));
    assert_eq!(
        seen.body,
        count_body.as_bytes(),
        "the body is passed on as sent"
    );

    // A metered call after them: its event is the only one, so the three
    // before it wrote none (the spool ships in order).
    let chat = post(
        &format!("{}/openai/v1/chat/completions", gw.url),
        &openai,
        json!({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}).to_string(),
    )
    .await;
    assert_eq!(chat.status, 200, "{}", chat.text());
    let events = gw.events(1).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].model.as_deref(), Some("gpt-test"));

    assert_metrics_contain(
        &gw,
        &[
            "caracal_gateway_requests_total{provider=\"openai\",outcome=\"passed\"} 2",
            "caracal_gateway_requests_total{provider=\"anthropic\",outcome=\"passed\"} 1",
            "caracal_gateway_requests_total{provider=\"openai\",outcome=\"allowed\"} 1",
        ],
    )
    .await;
}

#[tokio::test]
#[allow(clippy::type_complexity)] // the table spells out its rows
async fn free_endpoints_are_closed_to_agents_that_may_not_reach_the_provider() {
    let upstream = FakeUpstream::start(provider_answers()).await;
    // The policy lets the agent use Anthropic only.
    let gw = two_provider_gateway(&upstream, Some(&["anthropic"])).await;
    let bearer = gw.bearer();
    let models = format!("{}/openai/v1/models", gw.url);
    let cases: Vec<(Method, String, Vec<(&str, &str)>, u16, &str)> = vec![
        (
            Method::GET,
            models.clone(),
            vec![],
            401,
            "missing_credentials",
        ),
        (
            Method::GET,
            models.clone(),
            vec![("authorization", "Bearer ck_0000")],
            401,
            "invalid_api_key",
        ),
        (
            Method::GET,
            models.clone(),
            vec![("authorization", &bearer)],
            403,
            "provider_not_allowed",
        ),
        // Only reading is free: deleting a fine-tuned model is not.
        (
            Method::DELETE,
            format!("{models}/ft:gpt-test:acme::1"),
            vec![("authorization", &bearer)],
            404,
            "unsupported_endpoint",
        ),
        // Nothing else unmetered passes, even for a provider it may reach.
        (
            Method::GET,
            format!("{}/anthropic/v1/files", gw.url),
            vec![("x-api-key", &gw.key)],
            404,
            "unsupported_endpoint",
        ),
        (
            Method::GET,
            format!("{}/anthropic/v1/models/..%2Ffiles", gw.url),
            vec![("x-api-key", &gw.key)],
            404,
            "unsupported_endpoint",
        ),
    ];
    for (method, url, headers, status, reason) in cases {
        let answer = request(method.clone(), &url, &headers, "").await;
        assert_eq!(answer.status, status, "{method} {url}: {}", answer.text());
        assert_eq!(
            answer.headers["x-caracal-reason"],
            reason,
            "{method} {url}: {}",
            answer.text()
        );
    }
    assert!(
        upstream.seen.lock().unwrap().is_empty(),
        "nothing was passed on"
    );
    let allowed = request(
        Method::GET,
        &format!("{}/anthropic/v1/models", gw.url),
        &[("x-api-key", &gw.key)],
        "",
    )
    .await;
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    assert_eq!(upstream.seen.lock().unwrap().len(), 1);
}
