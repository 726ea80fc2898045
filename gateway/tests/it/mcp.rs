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
    let search = provider(
        "search",
        ProviderKind::Mcp,
        Some(&format!("{}/mcp", upstream.url)),
    );
    start_for_bot(vec![search], rule).await
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
    // Both are in the metrics: one passed on, one refused.
    assert_metrics_contain(
        &gw,
        &[
            "caracal_gateway_requests_total{provider=\"search\",outcome=\"passed\"} 1",
            "caracal_gateway_requests_total{provider=\"search\",outcome=\"denied\"} 1",
            "caracal_gateway_decisions_total{reason=\"missing_credentials\"} 1",
        ],
    )
    .await;
}

/// Only the configured endpoint is reachable: a sub-path or a dot segment
/// would reach whatever else the server's host serves, under this server's
/// name and allowlist.
#[tokio::test]
async fn only_the_configured_endpoint_is_reachable() {
    let upstream = FakeUpstream::start(echo()).await;
    let gw = mcp_gateway(&upstream).await;
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).to_string();
    for path in ["/search/other", "/search/../admin", "/search/x?session=1"] {
        let answer = post(
            &format!("{}{path}", gw.url),
            &[("authorization", &gw.bearer())],
            list.clone(),
        )
        .await;
        assert_eq!(answer.status, 404, "{path}: {}", answer.text());
        assert_eq!(
            answer.json()["error"]["reason"],
            "unsupported_endpoint",
            "{path}"
        );
    }
    assert!(upstream.seen.lock().unwrap().is_empty());
    for path in ["/search", "/search/", "/search?session=1"] {
        let answer = post(
            &format!("{}{path}", gw.url),
            &[("authorization", &gw.bearer())],
            list.clone(),
        )
        .await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.text());
        assert_eq!(upstream.last().path, "/mcp", "{path}");
    }
}

/// A body with a repeated `method` key is read by the gateway as its last
/// value (free `ping`) but by a first-key-wins server as `tools/call`. The
/// server must receive exactly the message the gateway classified.
#[tokio::test]
async fn duplicate_keys_cannot_smuggle_an_unmetered_tool_call() {
    let upstream = FakeUpstream::start(echo()).await;
    let gw = mcp_gateway(&upstream).await;
    let smuggled = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_all"},"method":"ping"}"#;
    let answer = post(
        &format!("{}/search", gw.url),
        &[("authorization", &gw.bearer())],
        smuggled,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let seen: serde_json::Value = serde_json::from_slice(&upstream.last().body).unwrap();
    assert_eq!(seen["method"], "ping");
    assert!(
        !String::from_utf8_lossy(&upstream.last().body).contains("tools/call"),
        "the server saw a tools/call the gateway did not meter"
    );
}

/// A tool call the server took but never answered may have run: it is
/// charged its price, not zero.
#[tokio::test]
async fn a_tool_call_left_unanswered_is_charged() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (conn, _) = listener.accept().await.unwrap();
            held.push(conn);
        }
    });
    let mut rule = with_budget(
        policy_rule("team/daily", "team/bot"),
        1_000_000,
        daily("UTC"),
        "team/bot",
    );
    rule.allow.tools = Some(vec!["search/web_*".into()]);
    let gw = start(Setup {
        providers: vec![provider("search", ProviderKind::Mcp, Some(&url))],
        snapshot: Some(
            SnapshotBuilder::new()
                .agent("team/bot", &[], vec![rule])
                .build(),
        ),
        agent: "team/bot".into(),
        limits: Limits {
            max_call_duration: std::time::Duration::from_millis(300),
            ..Limits::default()
        },
    })
    .await;
    let answer = post(
        &format!("{}/search", gw.url),
        &[("authorization", &gw.bearer())],
        call("web_search"),
    )
    .await;
    assert_eq!(answer.status, 502, "{}", answer.text());
    let e = &gw.events(1).await[0];
    assert_eq!(e.outcome, Outcome::UpstreamError, "{e:?}");
    assert!(e.cost > Micros::ZERO && e.cost == e.reserved, "{e:?}");
    silent.abort();
}
