//! The whole policy path on real objects: CRDs are compiled, a delegate's
//! calls are evaluated and reserved in Redis, and its spend shows up on its
//! parent's own budget counter, which then limits the parent too.

use std::sync::Arc;

use caracal_api::Micros;
use caracal_api::crd::{
    Agent, AgentRef, AgentSpec, Budget, Delegation, DelegationSpec, Identity, Period, Policy,
    PolicySpec, Window,
};
use caracal_policy::{
    Budgets, Call, CompileInput, Decision, Request, budget_lines, compile, evaluate,
    fixtures::test_catalog,
};
use chrono::Utc;

use crate::support::TestRedis;

fn agent(name: &str) -> Agent {
    let mut a = Agent::new(
        name,
        AgentSpec {
            owner: "platform".into(),
            description: None,
            identity: Identity {
                service_account_name: Some(name.into()),
                api_key: None,
            },
            providers: None,
            suspended: false,
        },
    );
    a.metadata.namespace = Some("flow".into());
    a
}

fn daily(limit: &str) -> Budget {
    Budget {
        limit: limit.parse().unwrap(),
        window: Window::calendar(Period::Daily),
    }
}

#[tokio::test]
async fn delegate_spend_rolls_up_to_the_parent_budget() {
    let mut policy = Policy::new(
        "parent-daily",
        PolicySpec {
            target_refs: Some(vec![AgentRef::new("parent")]),
            agent_selector: None,
            budget: Some(daily("0.10")),
            max_request_cost: None,
            allow: None,
            enforcement: Default::default(),
        },
    );
    policy.metadata.namespace = Some("flow".into());
    let mut grant = Delegation::new(
        "parent-child",
        DelegationSpec {
            parent_ref: AgentRef::new("parent"),
            child_ref: AgentRef::new("child"),
            budget: daily("0.06"),
            allow: None,
            expires_at: None,
            max_depth: 0,
        },
    );
    grant.metadata.namespace = Some("flow".into());
    let providers = vec!["openai".to_string()];
    let prices = test_catalog();
    let compiled = compile(&CompileInput {
        agents: &[agent("parent"), agent("child")],
        policies: &[policy],
        delegations: &[grant],
        providers: &providers,
        prices: &prices,
        version: 1,
        now: Utc::now(),
    });
    assert!(compiled.problems.is_empty(), "{:?}", compiled.problems);
    let snapshot = compiled.snapshot;

    let redis = TestRedis::new();
    let budgets = Budgets::new(Arc::new(redis.store().await));
    // 1000 prompt + 2000 output tokens of gpt-test: 2,500 + 20,000 micros.
    let call = |agent| Request {
        agent,
        provider: "openai",
        call: Call::Model {
            model: "gpt-test",
            input_tokens: 1000,
            max_tokens: Some(2000),
        },
    };
    let mut child_calls = 0;
    loop {
        let now = Utc::now();
        let Decision::Allow(allowed) = evaluate(&snapshot, &call("flow/child"), now) else {
            panic!("child denied by evaluation");
        };
        assert_eq!(allowed.amount.max, Micros(22_500));
        match budgets
            .reserve(&allowed, &format!("child{child_calls}"), now)
            .await
        {
            Ok(r) => {
                // Two full calls, then one clamped to the $0.015 left.
                let want = if child_calls < 2 { 22_500 } else { 15_000 };
                assert_eq!(r.amount, Micros(want), "call {child_calls}");
                if child_calls == 2 {
                    // $0.0125 of output room: 1,250 tokens at $10/1M.
                    assert_eq!(allowed.max_tokens_for(r.amount), Some(1_250));
                }
                budgets.settle(&r, r.amount, now).await.unwrap();
                child_calls += 1;
            }
            Err(denial) => {
                // The $0.06 grant is used to the micro-dollar after three.
                assert_eq!(child_calls, 3);
                assert_eq!(denial.reason.code(), "budget_exhausted");
                assert_eq!(denial.rule.as_deref(), Some("delegation flow/parent-child"));
                break;
            }
        }
    }
    // The parent's own counter carries the child's $0.045.
    let parent = &snapshot.agents["flow/parent"];
    let lines = budget_lines(parent, Utc::now()).unwrap();
    let usage = budgets
        .usage(
            &lines.iter().map(|(l, _)| l.clone()).collect::<Vec<_>>(),
            Utc::now(),
        )
        .await
        .unwrap();
    assert_eq!(usage[0].spent, Micros(60_000));
    // So the parent itself has $0.04 left: one full call and one clamped to
    // the remaining $0.0175, not four full calls.
    let mut parent_calls = 0;
    while let Decision::Allow(a) = evaluate(&snapshot, &call("flow/parent"), Utc::now()) {
        match budgets
            .reserve(&a, &format!("parent{parent_calls}"), Utc::now())
            .await
        {
            Ok(r) => {
                budgets.settle(&r, r.amount, Utc::now()).await.unwrap();
                parent_calls += 1;
            }
            Err(d) => {
                assert_eq!(
                    d.rule.as_deref(),
                    Some("policy flow/parent-daily (agent flow/parent)")
                );
                break;
            }
        }
    }
    assert_eq!(parent_calls, 2);
    let usage = budgets
        .usage(
            &lines.iter().map(|(l, _)| l.clone()).collect::<Vec<_>>(),
            Utc::now(),
        )
        .await
        .unwrap();
    assert_eq!(
        usage[0].spent,
        Micros(100_000),
        "the parent's $0.10 is used exactly"
    );
    redis.cleanup().await;
}
