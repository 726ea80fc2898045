//! The Delegation resource: a parent agent grants a child a narrower,
//! optionally expiring share of its budget.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{AgentRef, Allow, Budget, Condition};
use crate::money::Micros;

/// A grant from `parentRef` to `childRef`. Every charge to the child is also
/// charged to each ancestor's budgets in the same atomic reservation; the
/// child's allowances are the intersection of its own and every ancestor's.
/// Expiry or deletion revokes the grant at once.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "caracal.dev",
    version = "v1alpha1",
    kind = "Delegation",
    namespaced,
    status = "DelegationStatus",
    shortname = "cdel",
    category = "caracal",
    printcolumn = r#"{"name":"Parent","type":"string","jsonPath":".spec.parentRef.name"}"#,
    printcolumn = r#"{"name":"Child","type":"string","jsonPath":".spec.childRef.name"}"#,
    printcolumn = r#"{"name":"Limit","type":"string","jsonPath":".spec.budget.limit"}"#,
    printcolumn = r#"{"name":"Spent","type":"string","jsonPath":".status.spent"}"#,
    printcolumn = r#"{"name":"Remaining","type":"string","jsonPath":".status.remaining"}"#,
    printcolumn = r#"{"name":"Expires","type":"date","jsonPath":".spec.expiresAt"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status","priority":1}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("self.parentRef.name != self.childRef.name").message("an agent cannot delegate to itself: parentRef and childRef must differ"))]
pub struct DelegationSpec {
    /// The agent granting part of its budget.
    pub parent_ref: AgentRef,
    /// The agent receiving the grant.
    pub child_ref: AgentRef,
    /// What the child may spend under this grant, per window.
    pub budget: Budget,
    /// Narrows the parent's allowances for the child; it can never widen them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Allow>,
    /// When the grant ends (RFC 3339, e.g. "2026-12-31T00:00:00Z"). Absent
    /// means until the Delegation is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$"
    ))]
    pub expires_at: Option<String>,
    /// How many further levels the child may delegate below itself: 0 (the
    /// default) means the child may not delegate at all.
    #[serde(default)]
    #[schemars(range(min = 0, max = 8))]
    pub max_depth: u32,
}

/// Whether the grant is in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum DelegationState {
    Active,
    Expired,
    Invalid,
}

/// What the operator last observed about the delegation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DelegationStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<DelegationState>,
    /// Spent under this grant in the current window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spent: Option<Micros>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<Micros>,
}
