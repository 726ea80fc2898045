//! Table tests for the compile step, on CRD objects built in code.

use caracal_api::Micros;
use caracal_api::crd::{
    Agent, AgentRef, AgentSpec, Allow, Budget, Delegation, DelegationSpec, Identity, Period,
    Policy, PolicySpec, Window,
};
use caracal_api::snapshot::{AgentState, RuleSource};
use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::{CompileInput, Compiled, ObjectKind, compile};
use crate::fixtures::test_catalog;

const NS: &str = "team";

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-05-10T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

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
    a.metadata.namespace = Some(NS.into());
    a
}

fn budget(dollars: i64) -> Budget {
    Budget {
        limit: Micros::from_dollars(dollars).unwrap(),
        window: Window::calendar(Period::Daily),
    }
}

fn policy(name: &str, targets: &[&str]) -> Policy {
    let mut p = Policy::new(
        name,
        PolicySpec {
            target_refs: Some(targets.iter().map(|t| AgentRef::new(*t)).collect()),
            agent_selector: None,
            budget: Some(budget(100)),
            max_request_cost: None,
            allow: None,
            enforcement: Default::default(),
        },
    );
    p.metadata.namespace = Some(NS.into());
    p
}

fn delegation(name: &str, parent: &str, child: &str) -> Delegation {
    let mut d = Delegation::new(
        name,
        DelegationSpec {
            parent_ref: AgentRef::new(parent),
            child_ref: AgentRef::new(child),
            budget: budget(10),
            allow: None,
            expires_at: None,
            max_depth: 8,
        },
    );
    d.metadata.namespace = Some(NS.into());
    d
}

fn run(agents: &[Agent], policies: &[Policy], delegations: &[Delegation]) -> Compiled {
    let providers = vec!["openai".to_string(), "anthropic".to_string()];
    let prices = test_catalog();
    compile(&CompileInput {
        agents,
        policies,
        delegations,
        providers: &providers,
        prices: &prices,
        version: 3,
        now: now(),
    })
}

fn state(c: &Compiled, name: &str) -> String {
    match &c.snapshot.agents[&format!("{NS}/{name}")].state {
        AgentState::Ready => "ready".into(),
        AgentState::Suspended => "suspended".into(),
        AgentState::NotReady { reason, .. } => reason.clone(),
    }
}

#[test]
fn chain_flattens_into_rules_on_one_tree() {
    let agents = [agent("root"), agent("mid"), agent("leaf")];
    let policies = [
        policy("root-daily", &["root"]),
        policy("leaf-daily", &["leaf"]),
    ];
    let delegations = [
        delegation("root-mid", "root", "mid"),
        delegation("mid-leaf", "mid", "leaf"),
    ];
    let c = run(&agents, &policies, &delegations);
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    assert_eq!(c.snapshot.version, 3);
    let leaf = &c.snapshot.agents["team/leaf"];
    assert_eq!(leaf.state, AgentState::Ready);
    assert_eq!(leaf.chain, ["team/mid", "team/root"]);
    let sources: Vec<String> = leaf.rules.iter().map(|r| r.source.describe()).collect();
    assert_eq!(
        sources,
        [
            "policy team/leaf-daily (agent team/leaf)",
            "delegation team/mid-leaf (team/mid -> team/leaf)",
            "delegation team/root-mid (team/root -> team/mid)",
            "policy team/root-daily (agent team/root)",
        ]
    );
    let counters: Vec<(&str, &str)> = leaf
        .rules
        .iter()
        .filter_map(|r| r.budget.as_ref())
        .map(|b| (b.counter.as_str(), b.tree.as_str()))
        .collect();
    assert_eq!(
        counters,
        [
            ("p:team/leaf-daily:team/leaf", "team"),
            ("d:team/mid-leaf", "team"),
            ("d:team/root-mid", "team"),
            // The same counter the root's own requests charge.
            ("p:team/root-daily:team/root", "team"),
        ]
    );
    let root = &c.snapshot.agents["team/root"];
    assert_eq!(
        root.rules[0].budget.as_ref().unwrap().counter,
        "p:team/root-daily:team/root"
    );
    assert_eq!(root.providers, ["openai", "anthropic"]);
}

/// An agent's counters keep their keys whatever Delegations come and go: a
/// Delegation that moved them would let the agent spend a spent budget
/// again from zero. An agent named twice by one Policy gets one rule.
#[test]
fn counters_do_not_move_with_the_delegation_chain() {
    let agents = [agent("lead"), agent("bot")];
    let policies = [
        policy("lead-daily", &["lead"]),
        policy("bot-daily", &["bot", "bot"]),
    ];
    let alone = run(&agents, &policies, &[]);
    let delegated = run(&agents, &policies, &[delegation("lead-bot", "lead", "bot")]);
    let own_rule = |c: &Compiled| {
        let rules: Vec<_> = c.snapshot.agents["team/bot"]
            .rules
            .iter()
            .filter(|r| r.source.describe().starts_with("policy team/bot-daily"))
            .map(|r| r.budget.clone().unwrap())
            .collect();
        assert_eq!(rules.len(), 1, "{rules:?}");
        (rules[0].counter.clone(), rules[0].tree.clone())
    };
    assert_eq!(own_rule(&alone), own_rule(&delegated));
    assert_eq!(
        own_rule(&alone),
        ("p:team/bot-daily:team/bot".into(), "team".into())
    );
}

#[test]
fn refusals_table() {
    type Case = (
        &'static str,
        Vec<Agent>,
        Vec<Policy>,
        Vec<Delegation>,
        &'static str,
        &'static str,
    );
    let expired = {
        let mut d = delegation("p-c", "p", "c");
        d.spec.expires_at = Some("2026-05-10T12:00:00Z".into());
        d
    };
    let shallow = {
        let mut d = delegation("p-c", "p", "c");
        d.spec.max_depth = 0;
        d
    };
    let widening = {
        let mut d = delegation("p-c", "p", "c");
        d.spec.allow = Some(Allow {
            models: Some(vec!["claude-*".into()]),
            ..Allow::default()
        });
        d
    };
    let parent_models = {
        let mut p = policy("p-pol", &["p"]);
        p.spec.allow = Some(Allow {
            models: Some(vec!["gpt-*".into()]),
            ..Allow::default()
        });
        p
    };
    let bad_zone = {
        let mut p = policy("p-pol", &["p"]);
        if let Some(b) = p.spec.budget.as_mut() {
            b.window.time_zone = Some("Moon/Crater".into());
        }
        p
    };
    let suspended_parent = {
        let mut a = agent("p");
        a.spec.suspended = true;
        a
    };
    let cases: Vec<Case> = vec![
        (
            "no policy",
            vec![agent("a")],
            vec![],
            vec![],
            "a",
            "no_policy",
        ),
        (
            "child of unselected root",
            vec![agent("p"), agent("c")],
            vec![],
            vec![delegation("p-c", "p", "c")],
            "c",
            "no_policy",
        ),
        (
            "child under a grant only",
            vec![agent("p"), agent("c")],
            vec![policy("p-pol", &["p"])],
            vec![delegation("p-c", "p", "c")],
            "c",
            "ready",
        ),
        (
            "limit beyond exact counting",
            vec![agent("a")],
            vec![{
                let mut p = policy("huge", &["a"]);
                p.spec.budget = Some(Budget {
                    limit: Micros((1 << 53) + 1),
                    window: Window::calendar(Period::Daily),
                });
                p
            }],
            vec![],
            "a",
            "invalid_policy",
        ),
        (
            "cycle",
            vec![agent("p"), agent("c")],
            vec![policy("p-pol", &["p", "c"])],
            vec![delegation("p-c", "p", "c"), delegation("c-p", "c", "p")],
            "c",
            "delegation_cycle",
        ),
        (
            "expired",
            vec![agent("p"), agent("c")],
            vec![policy("p-pol", &["p"])],
            vec![expired],
            "c",
            "delegation_expired",
        ),
        (
            "depth",
            vec![agent("p"), agent("c"), agent("g")],
            vec![policy("p-pol", &["p"])],
            vec![shallow, delegation("c-g", "c", "g")],
            "g",
            "delegation_depth_exceeded",
        ),
        (
            "widening",
            vec![agent("p"), agent("c")],
            vec![parent_models],
            vec![widening],
            "c",
            "delegation_widens_allowance",
        ),
        (
            "two parents",
            vec![agent("p"), agent("q"), agent("c")],
            vec![policy("p-pol", &["p", "q"])],
            vec![delegation("p-c", "p", "c"), delegation("q-c", "q", "c")],
            "c",
            "multiple_parents",
        ),
        (
            "invalid policy",
            vec![agent("p")],
            vec![bad_zone],
            vec![],
            "p",
            "invalid_policy",
        ),
        (
            "suspended ancestor",
            vec![suspended_parent, agent("c")],
            vec![policy("p-pol", &["p"])],
            vec![delegation("p-c", "p", "c")],
            "c",
            "suspended",
        ),
        (
            "dangling delegation",
            vec![agent("c")],
            vec![policy("c-pol", &["c"])],
            vec![delegation("x-c", "ghost", "c")],
            "c",
            "invalid_delegation",
        ),
    ];
    for (label, agents, policies, delegations, who, want) in cases {
        let c = run(&agents, &policies, &delegations);
        assert_eq!(state(&c, who), want, "{label}: {:?}", c.problems);
        if want != "ready" && want != "suspended" {
            assert!(
                c.problems
                    .iter()
                    .any(|p| p.kind == ObjectKind::Agent && p.name == who && p.reason == want),
                "{label}: {:?}",
                c.problems
            );
        }
    }
}

#[test]
fn selectors_and_provider_intersection() {
    let mut labelled = agent("labelled");
    labelled.metadata.labels = Some([("team".to_string(), "search".to_string())].into());
    labelled.spec.providers = Some(vec!["openai".into(), "mistral".into()]);
    let mut elsewhere = agent("labelled");
    elsewhere.metadata.namespace = Some("other".into());
    elsewhere.metadata.labels = labelled.metadata.labels.clone();
    let mut by_label = policy("by-label", &[]);
    by_label.spec.target_refs = None;
    by_label.spec.agent_selector = Some(LabelSelector {
        match_labels: Some([("team".to_string(), "search".to_string())].into()),
        match_expressions: None,
    });
    let c = run(&[labelled, agent("plain"), elsewhere], &[by_label], &[]);
    assert_eq!(state(&c, "labelled"), "ready");
    assert_eq!(state(&c, "plain"), "no_policy");
    // Policies select only in their own namespace.
    assert!(matches!(
        c.snapshot.agents["other/labelled"].state,
        AgentState::NotReady { .. }
    ));
    // "mistral" is not configured on the gateway, so it is dropped.
    assert_eq!(c.snapshot.agents["team/labelled"].providers, ["openai"]);
    assert!(matches!(
        &c.snapshot.agents["team/labelled"].rules[0].source,
        RuleSource::Policy { policy, .. } if policy == "team/by-label"
    ));
}

#[test]
fn invalid_objects_are_reported_on_themselves() {
    let mut both = policy("both", &["a"]);
    both.spec.agent_selector = Some(LabelSelector::default());
    let c = run(&[agent("a")], &[both], &[]);
    assert!(
        c.problems.iter().any(|p| p.kind == ObjectKind::Policy
            && p.name == "both"
            && p.reason == "invalid_target")
    );
    // Denied, naming the Policy that could not be read.
    assert_eq!(state(&c, "a"), "invalid_policy");
}

#[test]
fn a_policy_whose_selector_cannot_be_read_denies_what_it_may_select() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    // Both agents also have an allowlist-only Policy, so dropping the
    // unreadable budget Policy would leave them with no budget at all.
    let mut search = agent("search");
    search.metadata.labels = Some([("team".to_string(), "search".to_string())].into());
    let mut ads = agent("ads");
    ads.metadata.labels = Some([("team".to_string(), "ads".to_string())].into());
    let mut allow_only = policy("allow-only", &["search", "ads"]);
    allow_only.spec.budget = None;
    allow_only.spec.allow = Some(Allow {
        providers: None,
        models: Some(vec!["gpt-*".into()]),
        tools: None,
    });
    let mut typo = policy("budget-typo", &[]);
    typo.spec.target_refs = None;
    typo.spec.agent_selector = Some(LabelSelector {
        match_labels: Some([("team".to_string(), "search".to_string())].into()),
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "tier".into(),
            operator: "in".into(), // not "In"
            values: Some(vec!["prod".into()]),
        }]),
    });
    let c = run(&[search, ads], &[allow_only, typo], &[]);
    assert!(
        c.problems
            .iter()
            .any(|p| p.name == "budget-typo" && p.reason == "invalid_selector")
    );
    // The selector's readable part matches "search": it may be selected, so
    // it is denied rather than served without the budget.
    assert_eq!(state(&c, "search"), "invalid_policy");
    // Its matchLabels rule "ads" out whatever the expression says.
    assert_eq!(state(&c, "ads"), "ready");

    // Both targetRefs and agentSelector set: everything either names.
    let mut both = policy("both", &["ads"]);
    both.spec.agent_selector = Some(LabelSelector::default());
    let mut allow_ads = policy("allow-ads", &["ads"]);
    allow_ads.spec.budget = None;
    allow_ads.spec.allow = Some(Allow::default());
    let c = run(&[agent("ads")], &[allow_ads, both], &[]);
    assert_eq!(state(&c, "ads"), "invalid_policy");
}
