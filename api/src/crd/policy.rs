//! The Policy resource: limits and allowlists for the agents it selects.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{AgentRef, Allow, Budget, Condition};
use crate::money::Micros;

/// Spending limits and allowlists. Every Policy that selects an agent applies
/// and all must pass; an agent no Policy selects is denied (`no_policy`).
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "caracal.dev",
    version = "v1alpha1",
    kind = "Policy",
    namespaced,
    status = "PolicyStatus",
    shortname = "cpol",
    category = "caracal",
    printcolumn = r#"{"name":"Limit","type":"string","jsonPath":".spec.budget.limit"}"#,
    printcolumn = r#"{"name":"Window","type":"string","jsonPath":".spec.budget.window.period"}"#,
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.budget.window.type"}"#,
    printcolumn = r#"{"name":"Enforcement","type":"string","jsonPath":".spec.enforcement"}"#,
    printcolumn = r#"{"name":"Agents","type":"integer","jsonPath":".status.agents"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(
    validation = Rule::new("has(self.targetRefs) != has(self.agentSelector)").message("set exactly one of targetRefs or agentSelector"),
    validation = Rule::new("has(self.budget) || has(self.maxRequestCost) || has(self.allow)").message("a Policy needs at least one of budget, maxRequestCost or allow")
)]
pub struct PolicySpec {
    /// Agents this policy applies to, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub target_refs: Option<Vec<AgentRef>>,
    /// Agents this policy applies to, by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_selector: Option<LabelSelector>,
    /// The spending limit and its window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// The most a single request may cost in the worst case (dollars).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("!self.matches('^0+(\\\\.0+)?$')").message("maxRequestCost must be greater than 0"))]
    pub max_request_cost: Option<Micros>,
    /// Allowed providers, models and MCP tools (glob patterns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Allow>,
    /// Enforce (default) denies calls that break the policy; DryRun records
    /// what would have been denied and lets the call through.
    #[serde(default)]
    pub enforcement: Enforcement,
}

/// Whether a policy blocks or only reports.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum Enforcement {
    #[default]
    Enforce,
    DryRun,
}

/// What the operator last observed about the policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Number of agents the policy currently selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents: Option<u32>,
}
