//! Table tests for `evaluate`, over snapshots built with `fixtures`.

use caracal_api::Micros;
use caracal_api::snapshot::{AgentState, ConfigSnapshot, Enforcement, Rule};
use chrono::{DateTime, Utc};

use super::{budget_lines, evaluate, may_reach};
use crate::decision::{Call, Decision, DenyReason, Request};
use crate::fixtures::{SnapshotBuilder, daily, delegation_rule, policy_rule, with_budget};
use crate::window::WindowInstance;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

const NOW: &str = "2026-05-10T12:00:00Z";

fn team_policy() -> Rule {
    let mut rule = with_budget(
        policy_rule("team/daily", "team/bot"),
        10_000_000,
        daily("UTC"),
        "team/bot",
    );
    rule.allow.models = Some(vec!["gpt-*".into(), "claude-*".into()]);
    rule.allow.tools = Some(vec!["search/web_*".into()]);
    rule.max_request_cost = Some(Micros(500_000));
    rule
}

fn grant() -> Rule {
    let mut rule = with_budget(
        delegation_rule("team/bot-to-helper", "team/bot", "team/helper"),
        2_000_000,
        daily("Europe/Berlin"),
        "team/bot",
    );
    rule.allow.models = Some(vec!["gpt-test".into()]);
    rule.expires_at = Some(at("2026-06-01T00:00:00Z"));
    rule
}

fn snapshot() -> ConfigSnapshot {
    let mut dry = policy_rule("team/audit", "team/bot");
    dry.enforcement = Enforcement::DryRun;
    dry.allow.models = Some(vec!["claude-*".into()]);
    dry = with_budget(dry, 1, daily("UTC"), "team/bot");
    let mut b = SnapshotBuilder::new()
        .agent("team/bot", &[], vec![team_policy()])
        .agent("team/helper", &["team/bot"], vec![grant(), team_policy()])
        .agent("team/audited", &[], vec![team_policy(), dry])
        .agent("team/orphan", &[], vec![]);
    let mut suspended = b.clone().build().agents["team/bot"].clone();
    suspended.name = "paused".into();
    suspended.state = AgentState::Suspended;
    let mut cyclic = suspended.clone();
    cyclic.name = "cyclic".into();
    cyclic.state = AgentState::NotReady {
        reason: "delegation_cycle".into(),
        message: "team/a -> team/b -> team/a".into(),
    };
    let mut narrow = b.clone().build().agents["team/bot"].clone();
    narrow.name = "narrow".into();
    narrow.providers = vec!["anthropic".into()];
    b = b.entry(suspended).entry(cyclic).entry(narrow);
    b.build()
}

fn model<'a>(
    agent: &'a str,
    provider: &'a str,
    model: &'a str,
    max_tokens: Option<u32>,
) -> Request<'a> {
    Request {
        agent,
        provider,
        call: Call::Model {
            model,
            input_tokens: 1000,
            max_tokens,
        },
    }
}

fn tool<'a>(agent: &'a str, tool: &'a str) -> Request<'a> {
    Request {
        agent,
        provider: "search",
        call: Call::Tool { tool },
    }
}

#[test]
fn denials_table() {
    let snap = snapshot();
    let cases: Vec<(Request<'_>, &str, &str)> = vec![
        (
            model("team/nobody", "openai", "gpt-test", Some(10)),
            NOW,
            "unknown_agent",
        ),
        (
            model("team/orphan", "openai", "gpt-test", Some(10)),
            NOW,
            "no_policy",
        ),
        (
            model("team/paused", "openai", "gpt-test", Some(10)),
            NOW,
            "agent_suspended",
        ),
        (
            model("team/cyclic", "openai", "gpt-test", Some(10)),
            NOW,
            "agent_not_ready",
        ),
        (
            model("team/bot", "mistral", "gpt-test", Some(10)),
            NOW,
            "provider_not_allowed",
        ),
        (
            model("team/narrow", "openai", "gpt-test", Some(10)),
            NOW,
            "provider_not_allowed",
        ),
        (
            model("team/bot", "openai", "o3", Some(10)),
            NOW,
            "model_not_allowed",
        ),
        (
            model("team/bot", "openai", "gpt-unpriced", Some(10)),
            NOW,
            "unpriced_model",
        ),
        (tool("team/bot", "shell_exec"), NOW, "tool_not_allowed"),
        (tool("team/bot", "web_fetch"), NOW, "unpriced_tool"),
        // A large max_tokens is clamped, not refused (see
        // `a_large_max_tokens_is_clamped_to_the_cap`); only a prompt the cap
        // cannot pay for with even one output token is refused: 300,000 in
        // at $2.50/1M = $0.75 > $0.50 cap.
        (
            Request {
                agent: "team/bot",
                provider: "openai",
                call: Call::Model {
                    model: "gpt-test",
                    input_tokens: 300_000,
                    max_tokens: Some(10),
                },
            },
            NOW,
            "request_cost_cap",
        ),
        // The delegation narrows models to gpt-test only.
        (
            model("team/helper", "anthropic", "claude-test", Some(10)),
            NOW,
            "model_not_allowed",
        ),
        (
            model("team/helper", "openai", "gpt-test", Some(10)),
            "2026-06-01T00:00:00Z",
            "delegation_expired",
        ),
    ];
    for (request, now, want) in cases {
        match evaluate(&snap, &request, at(now)) {
            Decision::Deny(d) => assert_eq!(d.reason.code(), want, "{request:?}: {}", d.message),
            Decision::Allow(a) => panic!("{request:?} allowed, expected {want}: {a:?}"),
        }
    }
}

#[test]
fn budget_that_can_never_pay_is_exhausted_with_reset_time() {
    let tiny = with_budget(
        policy_rule("team/tiny", "team/bot"),
        1000,
        daily("UTC"),
        "team/bot",
    );
    let snap = SnapshotBuilder::new()
        .agent("team/bot", &[], vec![tiny])
        .build();
    let Decision::Deny(d) = evaluate(
        &snap,
        &model("team/bot", "openai", "gpt-test", Some(10)),
        at(NOW),
    ) else {
        panic!("expected a denial");
    };
    assert_eq!(
        d.reason,
        DenyReason::BudgetExhausted {
            budget: "policy team/tiny (agent team/bot)".into(),
            resets_at: Some(at("2026-05-11T00:00:00Z")),
        }
    );
}

#[test]
fn delegate_reserves_on_its_grant_and_every_ancestor_budget() {
    let snap = snapshot();
    let Decision::Allow(a) = evaluate(
        &snap,
        &model("team/helper", "openai", "gpt-test", Some(100)),
        at(NOW),
    ) else {
        panic!("expected allow");
    };
    // 1000 prompt tokens at the worst prompt price ($2.50) + 100 output at
    // $10; at least one output token's worth.
    assert_eq!(a.amount.min, Micros(2_510));
    assert_eq!(a.amount.max, Micros(3_500));
    assert_eq!(a.max_tokens, Some(100));
    assert_eq!(a.max_tokens_for(Micros(3_500)), Some(100));
    let keys: Vec<&str> = a.lines.iter().map(|l| &*l.key).collect();
    // Berlin midnight of 10 May is 22:00 UTC on 9 May.
    assert_eq!(
        keys,
        [
            "{team/bot}:d:team/bot-to-helper:c1778364000",
            "{team/bot}:p:team/daily:team/bot:c1778371200",
        ]
    );
    assert!(a.lines.iter().all(|l| l.tree() == "team/bot"));
    assert_eq!(
        a.lines[1].window,
        WindowInstance::Calendar {
            start: at("2026-05-10T00:00:00Z"),
            end: at("2026-05-11T00:00:00Z")
        }
    );
}

#[test]
fn missing_max_tokens_is_sized_to_the_tightest_limit() {
    let snap = snapshot();
    // The tightest limit is the $0.50 per-request cap: (500,000 - 2,500) / 10
    // = 49,750 tokens, but gpt-test's own ceiling is 16,384.
    let Decision::Allow(a) = evaluate(
        &snap,
        &model("team/bot", "openai", "gpt-test", None),
        at(NOW),
    ) else {
        panic!("expected allow");
    };
    assert_eq!(a.max_tokens, Some(16_384));
    assert_eq!(a.amount.min, Micros(2_510));
    assert_eq!(a.amount.max, Micros(2_500 + 163_840));
    // The store may grant less; max_tokens follows what was reserved.
    assert_eq!(a.max_tokens_for(Micros(12_500)), Some(1_000));
    assert_eq!(a.max_tokens_for(Micros(1_000_000)), Some(16_384));

    // Under a delegation whose grant is $0.01 a day, the grant is tightest.
    let mut small = grant();
    if let Some(b) = small.budget.as_mut() {
        b.limit = Micros(10_000);
    }
    let snap = SnapshotBuilder::new()
        .agent("team/helper", &["team/bot"], vec![small, team_policy()])
        .build();
    let Decision::Allow(a) = evaluate(
        &snap,
        &model("team/helper", "openai", "gpt-test", None),
        at(NOW),
    ) else {
        panic!("expected allow");
    };
    assert_eq!(a.max_tokens, Some(750));
    assert_eq!(a.amount.max, Micros(10_000));
}

#[test]
fn reaching_a_provider_checks_state_provider_expiry_and_allowlists_only() {
    let mut snap = snapshot();
    // A policy that names its providers, and one in dry-run that does.
    let mut only_anthropic = team_policy();
    only_anthropic.allow.providers = Some(vec!["anthropic".into()]);
    let mut dry = only_anthropic.clone();
    dry.enforcement = Enforcement::DryRun;
    let base = snap.agents["team/bot"].clone();
    for (name, rule) in [("fenced", only_anthropic), ("watched", dry)] {
        let mut entry = base.clone();
        entry.name = name.into();
        entry.rules = vec![rule];
        snap.agents.insert(format!("team/{name}"), entry);
    }
    let after_grant = "2026-06-02T00:00:00Z";
    let cases: &[(&str, &str, &str, Option<&str>)] = &[
        ("team/bot", "openai", NOW, None),
        // Models and tools are not looked at: nothing is called or priced.
        ("team/bot", "search", NOW, None),
        ("team/helper", "openai", NOW, None),
        ("team/watched", "openai", NOW, None),
        ("team/nobody", "openai", NOW, Some("unknown_agent")),
        ("team/orphan", "openai", NOW, Some("no_policy")),
        ("team/paused", "openai", NOW, Some("agent_suspended")),
        ("team/cyclic", "openai", NOW, Some("agent_not_ready")),
        ("team/bot", "mistral", NOW, Some("provider_not_allowed")),
        ("team/narrow", "openai", NOW, Some("provider_not_allowed")),
        ("team/fenced", "openai", NOW, Some("provider_not_allowed")),
        ("team/fenced", "anthropic", NOW, None),
        (
            "team/helper",
            "openai",
            after_grant,
            Some("delegation_expired"),
        ),
    ];
    for (agent, provider, now, want) in cases {
        let got = may_reach(&snap, agent, provider, at(now)).map_err(|d| d.reason.code());
        assert_eq!(got.err(), *want, "{agent} -> {provider} at {now}");
    }
}

#[test]
fn dry_run_rules_report_but_do_not_block_or_reserve() {
    let snap = snapshot();
    let Decision::Allow(a) = evaluate(
        &snap,
        &model("team/audited", "openai", "gpt-test", Some(10)),
        at(NOW),
    ) else {
        panic!("dry-run rule must not block");
    };
    let codes: Vec<&str> = a.would_deny.iter().map(|d| d.reason.code()).collect();
    assert_eq!(codes, ["model_not_allowed", "budget_exhausted"]);
    assert_eq!(a.lines.len(), 1, "the dry-run budget is not reserved");
}

#[test]
fn tool_calls_reserve_their_per_call_price() {
    let snap = snapshot();
    let Decision::Allow(a) = evaluate(&snap, &tool("team/bot", "web_search"), at(NOW)) else {
        panic!("expected allow");
    };
    assert_eq!(
        (a.amount.min, a.amount.max),
        (Micros(10_000), Micros(10_000))
    );
    assert_eq!(a.max_tokens_for(Micros(10_000)), None);
}

#[test]
fn denial_serialises_with_a_reason_code() {
    let snap = snapshot();
    let Decision::Deny(d) = evaluate(&snap, &model("team/bot", "openai", "o3", Some(1)), at(NOW))
    else {
        panic!("expected a denial");
    };
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["reason"], "model_not_allowed");
    assert_eq!(json["model"], "o3");
    assert_eq!(json["rule"], "policy team/daily (agent team/bot)");
}

#[test]
fn status_lines_match_what_a_call_reserves() {
    let snap = snapshot();
    let Decision::Allow(a) = evaluate(
        &snap,
        &model("team/helper", "openai", "gpt-test", Some(1)),
        at(NOW),
    ) else {
        panic!("expected allow");
    };
    let lines = budget_lines(&snap.agents["team/helper"], at(NOW)).unwrap();
    let keys: Vec<&str> = lines.iter().map(|(l, _)| &*l.key).collect();
    let reserved: Vec<&str> = a.lines.iter().map(|l| &*l.key).collect();
    assert_eq!(keys, reserved);
    assert_eq!(
        lines[0].1.describe(),
        "delegation team/bot-to-helper (team/bot -> team/helper)"
    );
    // Dry-run budgets are not counted, so they are not reported either.
    assert_eq!(
        budget_lines(&snap.agents["team/audited"], at(NOW))
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_rolling_window_too_long_to_count_denies() {
    // A snapshot is not trusted to have come through `compile`: a window
    // whose millisecond length would wrap must deny, not count nothing.
    let rule = with_budget(
        policy_rule("team/forever", "team/bot"),
        1_000_000,
        caracal_api::snapshot::WindowSpec::Rolling { seconds: u64::MAX },
        "team/bot",
    );
    let snap = SnapshotBuilder::new()
        .agent("team/bot", &[], vec![rule])
        .build();
    match evaluate(
        &snap,
        &model("team/bot", "openai", "gpt-test", Some(10)),
        at(NOW),
    ) {
        Decision::Deny(d) => assert_eq!(d.reason.code(), "invalid_window"),
        other => panic!("expected a denial, got {other:?}"),
    }
}

/// A request's own `max_tokens` is a ceiling: above what the tightest limit
/// can pay for, it is clamped (the call is served, shorter), never raised.
#[test]
fn a_large_max_tokens_is_clamped_to_the_cap() {
    let snap = snapshot();
    let Decision::Allow(a) = evaluate(
        &snap,
        &model("team/bot", "openai", "gpt-test", Some(100_000)),
        at(NOW),
    ) else {
        panic!("expected allow");
    };
    // The $0.50 cap pays for 1000 prompt tokens ($0.0025) plus 49,750 output
    // tokens at $10/1M, but the model's own ceiling (16,384) is lower.
    assert_eq!(a.max_tokens, Some(16_384));
    assert_eq!(a.amount.max, Micros(2_500 + 163_840));
    // With less reserved (a nearly spent budget), the limit sent upstream
    // shrinks to what was reserved: $0.0125 pays for 1000 output tokens.
    assert_eq!(a.max_tokens_for(Micros(12_500)), Some(1_000));
    // A small request keeps its own limit.
    let Decision::Allow(small) = evaluate(
        &snap,
        &model("team/bot", "openai", "gpt-test", Some(50)),
        at(NOW),
    ) else {
        panic!("expected allow");
    };
    assert_eq!(small.max_tokens_for(small.amount.max), Some(50));
}
