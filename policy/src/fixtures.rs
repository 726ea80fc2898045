//! Builders for snapshots in tests and benchmarks (here and in other
//! crates' tests), so a test states only what it is about.

use std::collections::BTreeMap;

use caracal_api::Micros;
use caracal_api::prices::{ModelPrice, PriceCatalog, ToolPrice};
use caracal_api::snapshot::{
    AgentEntry, AgentState, Allow, BudgetRule, ConfigSnapshot, Enforcement, Period, Rule,
    RuleSource, WindowSpec,
};
use chrono::{DateTime, Utc};

use crate::decision::{delegation_counter, policy_counter};

/// A small catalog: `openai/gpt-test` ($2.50 in, $10 out per 1M),
/// `anthropic/claude-test` ($3 in, $15 out, $0.30 cached, $3.75 cache write)
/// and `search/web_search` ($0.01 per call).
pub fn test_catalog() -> PriceCatalog {
    PriceCatalog {
        version: "test-1".into(),
        models: vec![
            ModelPrice {
                provider: "openai".into(),
                model: "gpt-test".into(),
                aliases: vec!["gpt-test-2026-01-01".into()],
                input: Micros(2_500_000),
                output: Micros(10_000_000),
                cached_input: Some(Micros(1_250_000)),
                cache_write: None,
                reasoning: None,
                max_output_tokens: Some(16_384),
            },
            ModelPrice {
                provider: "anthropic".into(),
                model: "claude-test".into(),
                aliases: vec![],
                input: Micros(3_000_000),
                output: Micros(15_000_000),
                cached_input: Some(Micros(300_000)),
                cache_write: Some(Micros(3_750_000)),
                reasoning: None,
                max_output_tokens: Some(64_000),
            },
        ],
        tools: vec![ToolPrice {
            provider: "search".into(),
            tool: "web_search".into(),
            per_call: Micros(10_000),
        }],
    }
}

/// A daily window in `zone`.
pub fn daily(zone: &str) -> WindowSpec {
    WindowSpec::Calendar {
        period: Period::Daily,
        time_zone: zone.into(),
    }
}

/// A policy rule with no budget, no caps and no allowlists.
pub fn policy_rule(policy: &str, agent: &str) -> Rule {
    Rule {
        source: RuleSource::Policy {
            policy: policy.into(),
            agent: agent.into(),
        },
        enforcement: Enforcement::Enforce,
        allow: Allow::default(),
        max_request_cost: None,
        budget: None,
        expires_at: None,
    }
}

/// A delegation rule (`parent` grants `child`).
pub fn delegation_rule(delegation: &str, parent: &str, child: &str) -> Rule {
    Rule {
        source: RuleSource::Delegation {
            delegation: delegation.into(),
            parent: parent.into(),
            child: child.into(),
        },
        ..policy_rule("", "")
    }
}

/// `rule` with a budget of `limit` micro-dollars over `window`, counted in
/// the delegation tree `tree`.
pub fn with_budget(mut rule: Rule, limit: i64, window: WindowSpec, tree: &str) -> Rule {
    let counter = match &rule.source {
        RuleSource::Policy { policy, agent } => policy_counter(policy, agent),
        RuleSource::Delegation { delegation, .. } => delegation_counter(delegation),
    };
    rule.budget = Some(BudgetRule {
        limit: Micros(limit),
        window,
        counter,
        tree: tree.into(),
    });
    rule
}

/// A snapshot being built: providers `openai`, `anthropic`, `search` and
/// [`test_catalog`] prices.
#[derive(Debug, Clone)]
pub struct SnapshotBuilder {
    snapshot: ConfigSnapshot,
}

impl Default for SnapshotBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl SnapshotBuilder {
    pub fn new() -> Self {
        SnapshotBuilder {
            snapshot: ConfigSnapshot {
                version: 1,
                compiled_at: DateTime::<Utc>::UNIX_EPOCH,
                providers: vec!["openai".into(), "anthropic".into(), "search".into()],
                prices: test_catalog(),
                agents: BTreeMap::new(),
            },
        }
    }

    /// A ready agent `namespace/name` that may reach every test provider.
    pub fn agent(self, id: &str, chain: &[&str], rules: Vec<Rule>) -> Self {
        let (namespace, name) = id.split_once('/').unwrap_or(("default", id));
        self.entry(AgentEntry {
            namespace: namespace.into(),
            name: name.into(),
            state: AgentState::Ready,
            providers: vec!["openai".into(), "anthropic".into(), "search".into()],
            chain: chain.iter().map(|s| s.to_string()).collect(),
            rules,
        })
    }

    pub fn entry(mut self, entry: AgentEntry) -> Self {
        let id = format!("{}/{}", entry.namespace, entry.name);
        self.snapshot.agents.insert(id, entry);
        self
    }

    pub fn build(self) -> ConfigSnapshot {
        self.snapshot
    }
}
