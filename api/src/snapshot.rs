//! The compiled gateway configuration: everything a gateway needs to decide
//! a request, with no reference left to resolve.
//!
//! The operator (or `caracal dev`) compiles Agents, Policies and Delegations
//! into one [`ConfigSnapshot`] and hands it to every gateway. Compilation
//! flattens each agent's delegation chain into a plain list of [`Rule`]s that
//! must all pass, so the request path never walks a graph, never sees a cycle
//! and never looks up another object. An agent that cannot be compiled safely
//! is kept in the snapshot with a [`AgentState::NotReady`] reason, so it is
//! denied with that reason instead of being silently unknown.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::money::Micros;
use crate::prices::PriceCatalog;

/// One immutable, versioned view of the whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigSnapshot {
    /// Increases with every compiled change; gateways report the version they apply.
    pub version: u64,
    /// When this snapshot was compiled.
    pub compiled_at: DateTime<Utc>,
    /// Names of the providers the gateway is configured to reach.
    pub providers: Vec<String>,
    /// Prices used to estimate and settle costs.
    pub prices: PriceCatalog,
    /// Agents by [`agent_id`] (`namespace/name`).
    pub agents: BTreeMap<String, AgentEntry>,
}

/// The canonical id of an agent: `namespace/name`.
pub fn agent_id(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// Everything that applies to one agent, already flattened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentEntry {
    pub namespace: String,
    pub name: String,
    /// Whether requests from this agent may be evaluated at all.
    pub state: AgentState,
    /// Provider names this agent may reach (from `Agent.spec.providers`).
    pub providers: Vec<String>,
    /// The delegation chain from this agent up to its root, nearest first
    /// (empty for an agent that is not a delegate). Ledger events name it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<String>,
    /// Every rule that must pass: the agent's own policies, the delegation
    /// grants along its chain and every ancestor's policies.
    pub rules: Vec<Rule>,
}

/// Whether an agent can be served.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "state", deny_unknown_fields)]
pub enum AgentState {
    Ready,
    /// `spec.suspended` is set on this agent or an ancestor.
    Suspended,
    /// Compilation refused this agent; `reason` is machine-readable
    /// (`no_policy`, `delegation_cycle`, `delegation_expired`, ...).
    NotReady {
        reason: String,
        message: String,
    },
}

/// Where a rule came from, so a denial can name it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind", deny_unknown_fields)]
pub enum RuleSource {
    /// A Policy selecting `agent` (the agent itself or an ancestor).
    Policy { policy: String, agent: String },
    /// A Delegation granting `child` a share of `parent`'s allowance.
    Delegation {
        delegation: String,
        parent: String,
        child: String,
    },
}

impl RuleSource {
    /// A short human-readable name such as `policy team/daily (agent team/bot)`.
    pub fn describe(&self) -> String {
        match self {
            RuleSource::Policy { policy, agent } => format!("policy {policy} (agent {agent})"),
            RuleSource::Delegation {
                delegation,
                parent,
                child,
            } => format!("delegation {delegation} ({parent} -> {child})"),
        }
    }
}

/// Whether a rule blocks or only reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Enforcement {
    #[default]
    Enforce,
    /// Denials are reported (`would deny`) but the request proceeds; the
    /// rule's budget is not reserved.
    DryRun,
}

/// One set of conditions a request must meet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    pub source: RuleSource,
    #[serde(default)]
    pub enforcement: Enforcement,
    /// Allowlists; `None` in a list means this rule does not restrict it.
    #[serde(default)]
    pub allow: Allow,
    /// Largest worst-case cost of one request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_cost: Option<Micros>,
    /// The budget this rule charges, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetRule>,
    /// After this instant the rule denies everything (delegation expiry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// Glob allowlists (`*` any run of characters, `?` one character). Tool
/// patterns match `provider/tool` (e.g. `github/search_*`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Allow {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub providers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
}

/// A spending limit over a window, and the counter that tracks it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BudgetRule {
    pub limit: Micros,
    pub window: WindowSpec,
    /// Stable counter name, unique per budget and agent, e.g.
    /// `p:team/daily:team/bot`. The store adds the window instance.
    pub counter: String,
    /// Redis Cluster hash tag shared by every counter a request may charge
    /// (the agent's namespace: delegation chains stay inside one), so one
    /// script can reserve on all of them. Not the chain's root, so that a
    /// counter keeps its key when Delegations change.
    pub tree: String,
}

/// Calendar period lengths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Period {
    Hourly,
    Daily,
    /// Weeks start Monday 00:00.
    Weekly,
    Monthly,
}

/// The window a budget limit applies to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type", deny_unknown_fields)]
pub enum WindowSpec {
    /// Fixed windows in an IANA time zone (e.g. "Europe/Berlin").
    #[serde(rename_all = "camelCase")]
    Calendar { period: Period, time_zone: String },
    /// The last `seconds` before each request.
    #[serde(rename_all = "camelCase")]
    Rolling { seconds: u64 },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_round_trips_through_json() {
        let mut agents = BTreeMap::new();
        agents.insert(
            agent_id("team", "bot"),
            AgentEntry {
                namespace: "team".into(),
                name: "bot".into(),
                state: AgentState::Ready,
                providers: vec!["openai".into()],
                chain: vec![],
                rules: vec![Rule {
                    source: RuleSource::Policy {
                        policy: "team/daily".into(),
                        agent: "team/bot".into(),
                    },
                    enforcement: Enforcement::Enforce,
                    allow: Allow {
                        models: Some(vec!["gpt-*".into()]),
                        ..Allow::default()
                    },
                    max_request_cost: Some(Micros(500_000)),
                    budget: Some(BudgetRule {
                        limit: Micros(10_000_000),
                        window: WindowSpec::Calendar {
                            period: Period::Daily,
                            time_zone: "Europe/Berlin".into(),
                        },
                        counter: "p:team/daily:team/bot".into(),
                        tree: "team/bot".into(),
                    }),
                    expires_at: None,
                }],
            },
        );
        let snapshot = ConfigSnapshot {
            version: 7,
            compiled_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            providers: vec!["openai".into()],
            prices: PriceCatalog::default(),
            agents,
        };
        let json = serde_json::to_string(&snapshot).unwrap();
        assert!(json.contains(r#""type":"calendar""#), "{json}");
        let back: ConfigSnapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back, snapshot);
    }
}
