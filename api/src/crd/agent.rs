//! The Agent resource: an AI workload whose spending Caracal controls.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::Condition;
use crate::money::Micros;

/// An AI workload. Pods running as `identity.serviceAccountName` are this
/// agent; with `identity.apiKey.issue: true` the operator also issues a
/// virtual API key into the Secret `caracal-agent-<name>`.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "caracal.dev",
    version = "v1alpha1",
    kind = "Agent",
    namespaced,
    status = "AgentStatus",
    shortname = "cag",
    category = "caracal",
    printcolumn = r#"{"name":"Owner","type":"string","jsonPath":".spec.owner"}"#,
    printcolumn = r#"{"name":"Suspended","type":"boolean","jsonPath":".spec.suspended"}"#,
    printcolumn = r#"{"name":"Spent","type":"string","jsonPath":".status.spent","description":"Spend in the tightest budget's current window"}"#,
    printcolumn = r#"{"name":"Remaining","type":"string","jsonPath":".status.remaining","description":"Remaining in the tightest budget's current window"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Gateways","type":"string","jsonPath":".status.gateways.summary","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentSpec {
    /// Who is accountable for this agent's spending (a team or a person).
    #[schemars(length(min = 1, max = 253))]
    pub owner: String,
    /// What the agent does, for people reading `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// How the gateway recognises this agent's calls.
    pub identity: Identity,
    /// Names of the providers (as configured on the gateway) this agent may
    /// call. Absent means every configured provider, subject to policies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 128)))]
    pub providers: Option<Vec<String>>,
    /// A suspended agent is denied every call (reason `agent_suspended`).
    #[serde(default)]
    pub suspended: bool,
}

/// At least one way for the gateway to recognise the agent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.serviceAccountName) || (has(self.apiKey) && self.apiKey.issue)").message("identity needs serviceAccountName or apiKey.issue: true, or the agent could never authenticate"))]
pub struct Identity {
    /// Pods running as this service account (presenting a projected token with
    /// audience `caracal`) are this agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub service_account_name: Option<String>,
    /// A virtual API key issued by the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<ApiKeyIdentity>,
}

/// Virtual API key settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKeyIdentity {
    /// Issue a key into Secret `caracal-agent-<name>` with ready-to-use
    /// OPENAI_BASE_URL / OPENAI_API_KEY / ANTHROPIC_BASE_URL / ANTHROPIC_API_KEY.
    pub issue: bool,
}

/// What the operator last observed about the agent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    /// `Ready` (the agent can be served) and `Synced` (every gateway applied
    /// the config that includes it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Secret holding the issued credentials, when `apiKey.issue` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// Spend in the tightest budget's current window (dollars).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spent: Option<Micros>,
    /// Remaining in the tightest budget's current window (dollars).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<Micros>,
    /// One entry per budget that applies to the agent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub budgets: Vec<BudgetStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateways: Option<GatewaySync>,
}

/// Spend against one budget in its current window.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BudgetStatus {
    /// `Policy/<name>` or `Delegation/<name>`.
    pub source: String,
    pub spent: Micros,
    pub limit: Micros,
    pub remaining: Micros,
    /// When the current window ends (RFC 3339); absent for rolling windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resets_at: Option<String>,
}

/// How many gateways run the config version that includes this object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySync {
    pub synced: u32,
    pub total: u32,
    pub config_version: u64,
    /// `synced/total`, for the printer column.
    pub summary: String,
}
