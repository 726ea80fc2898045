use std::sync::Arc;

use caracal_api::Micros;
use caracal_gateway::config::{Limits, ProviderKind};
use caracal_ledger::event::Outcome;
use caracal_policy::fixtures::{SnapshotBuilder, daily, policy_rule, with_budget};
use serde_json::json;

use crate::harness::*;

async fn mcp_gateway(upstream: &FakeUpstream) -> TestGateway {
    let mut rule = with_budget(
        policy_rule("team/daily", "team/bot"),
        1_000_000,
        daily("UTC"),
        "team/bot",
    );
    // Tools are named `provider/tool` in allowlists.
    rule.allow.tools = Some(vec!["search/web_*".into()]);
    start(Setup {
        providers: vec![provider(
            "search",
            ProviderKind::Mcp,
            Some(&format!("{}/mcp", upstream.url)),
        )],
        snapshot: Some(
            SnapshotBuilder::new()
                .agent("team/bot", &[], vec![rule])
                .build(),
        ),
        agent: "team/bot".into(),
        limits: Limits::default(),
    })
    .await
}

fn call(tool: &str) -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": {}}}).to_string()
}

fn echo() -> Handler {
    Arc::new(|_: &Seen| {
        json_response(json!({"jsonrpc": "2.0", "id": 1, "result": {"content": []}}))
    })
}

#[tokio::test]
async fn allowed_tool_calls_are_charged_per_call() {
    let upstream = FakeUpstream::start(echo()).await;
    let gw = mcp_gateway(&upstream).await;
    let answer = post(
        &format!("{}/search", gw.url),
        &[
            ("authorization", &gw.bearer()),
            ("accept", "application/json, text/event-stream"),
        ],
        call("web_search"),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let seen = upstream.last();
    assert_eq!(seen.path, "/mcp");
    assert_eq!(seen.headers["authorization"], "Bearer sk-provider-search");
    let e = &gw.events(1).await[0];
    assert_eq!(
        (e.outcome, e.cost, e.tool.as_deref()),
        (Outcome::Allowed, Micros(10_000), Some("web_search"))
    );
}

#[tokio::test]
async fn a_tool_outside_the_allowlist_is_refused() {
    let upstream = FakeUpstream::start(echo()).await;
    let gw = mcp_gateway(&upstream).await;
    let answer = post(
        &format!("{}/search", gw.url),
        &[("authorization", &gw.bearer())],
        call("delete_everything"),
    )
    .await;
    assert_eq!(answer.status, 403);
    assert_eq!(answer.json()["error"]["reason"], "tool_not_allowed");
    assert!(upstream.seen.lock().unwrap().is_empty());
    let e = &gw.events(1).await[0];
    assert_eq!(
        (e.outcome, e.reason.as_str()),
        (Outcome::Denied, "tool_not_allowed")
    );
}

#[tokio::test]
async fn other_messages_pass_without_a_charge() {
    let upstream = FakeUpstream::start(echo()).await;
    let gw = mcp_gateway(&upstream).await;
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).to_string();
    let answer = post(
        &format!("{}/search", gw.url),
        &[("authorization", &gw.bearer())],
        list,
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(upstream.seen.lock().unwrap().len(), 1);
    // Without a key, nothing passes.
    let answer = post(
        &format!("{}/search", gw.url),
        &[],
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}).to_string(),
    )
    .await;
    assert_eq!(answer.status, 401);
    assert_eq!(upstream.seen.lock().unwrap().len(), 1);
}
