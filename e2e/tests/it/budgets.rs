//! Delegation and MCP enforcement through `caracal dev`, driven with curl.

use std::time::Duration;

use crate::{
    dev::{Dev, agent_with_budget, config_yaml},
    harness::{FakeUpstream, curl, scratch_dir},
};

fn anthropic_call(dev: &Dev, key: &str, usage: &str) -> (u16, String) {
    let body = format!(
        r#"{{"model":"claude-haiku-4-5","max_tokens":256,"messages":[{{"role":"user","content":"usage={usage}"}}]}}"#
    );
    curl(
        &format!("{}/anthropic/v1/messages", dev.url()),
        &[
            "-H",
            &format!("x-api-key: {key}"),
            "-H",
            "anthropic-version: 2023-06-01",
            "-d",
            &body,
        ],
    )
}

#[test]
fn a_delegates_spend_counts_against_the_parents_budget() {
    let dir = scratch_dir("delegation");
    let upstream = FakeUpstream::start(&dir);
    let manifests = format!(
        "{}{}{}",
        agent_with_budget("team", "parent", "0.00151", ""),
        agent_with_budget("team", "child", "1.00", ""),
        r#"---
apiVersion: caracal.dev/v1alpha1
kind: Delegation
metadata: {name: parent-to-child, namespace: team}
spec:
  parentRef: {name: parent}
  childRef: {name: child}
  budget: {limit: "1.00", window: {period: Daily, timeZone: UTC}}
"#
    );
    let dev = Dev::start(&dir, &manifests, &config_yaml(&upstream), &[], true);
    let (parent, child) = (dev.key("team", "parent"), dev.key("team", "child"));

    // The child spends $0.00151: all of the parent's budget.
    let (status, body) = anthropic_call(&dev, &child, "10/300");
    assert_eq!(status, 200, "{body}");
    // Now neither may start a call: not even one output token is left, so
    // there is nothing to clamp the output limit down to.
    let (status, body) = anthropic_call(&dev, &parent, "1/1");
    assert_eq!(status, 429, "{body}");
    assert!(
        body.contains("budget_exhausted") && body.contains("team/parent-daily"),
        "{body}"
    );
    let (status, body) = anthropic_call(&dev, &child, "1/1");
    assert_eq!(status, 429, "{body}");

    let events = dev.ledger_at_least("team/child", 2, Duration::from_secs(10));
    assert_eq!(
        events[0]["delegation_chain"][0]["name"], "parent",
        "{events:?}"
    );
    assert_eq!(events[0]["cost_micros"], 1510);
}

#[test]
fn an_mcp_tool_outside_the_allowlist_is_refused() {
    let dir = scratch_dir("mcp");
    let upstream = FakeUpstream::start(&dir);
    let allow = "  allow: {tools: [\"search/web_*\"]}\n";
    let dev = Dev::start(
        &dir,
        &agent_with_budget("team", "bot", "1.00", allow),
        &config_yaml(&upstream),
        &[],
        true,
    );
    let key = dev.key("team", "bot");
    let mcp = |body: &str| {
        curl(
            &format!("{}/search", dev.url()),
            &[
                "-H",
                &format!("authorization: Bearer {key}"),
                "-H",
                "accept: application/json, text/event-stream",
                "-H",
                "content-type: application/json",
                "-d",
                body,
            ],
        )
    };
    let (status, body) = mcp(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("delete_repo"), "other methods pass: {body}");
    let (status, body) = mcp(
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"web_search","arguments":{"q":"x"}}}"#,
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = mcp(
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"delete_repo","arguments":{}}}"#,
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("tool_not_allowed"), "{body}");
    let served: Vec<String> = upstream
        .served()
        .iter()
        .filter_map(|s| s["tool"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(served, vec!["web_search".to_owned()]);
    let events = dev.ledger_at_least("team/bot", 2, Duration::from_secs(10));
    let summary: Vec<(String, String, i64)> = events
        .iter()
        .map(|e| {
            (
                e["tool"].as_str().unwrap_or_default().to_owned(),
                e["outcome"].as_str().unwrap_or_default().to_owned(),
                e["cost_micros"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("web_search".into(), "allowed".into(), 10_000),
            ("delete_repo".into(), "denied".into(), 0)
        ]
    );
}
