//! What the gateway asks ([`Request`]) and what the engine answers
//! ([`Decision`]). Deny reasons are machine-readable: the `reason` code is
//! what clients, metrics and ledger events key on; the message is for people.

use std::fmt;
use std::sync::Arc;

use caracal_api::Micros;
use caracal_api::snapshot::RuleSource;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::cost::ModelRates;
use crate::window::WindowInstance;

/// One call an agent wants to make.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// Agent id, `namespace/name`.
    pub agent: &'a str,
    /// Configured provider name (an MCP server is a provider too).
    pub provider: &'a str,
    pub call: Call<'a>,
}

/// A model completion or an MCP tool call.
#[derive(Clone, Copy, Debug)]
pub enum Call<'a> {
    Model {
        model: &'a str,
        /// Upper bound of prompt tokens, counted from the request body.
        input_tokens: u64,
        /// The request's `max_tokens`, if it set one.
        max_tokens: Option<u32>,
    },
    Tool {
        tool: &'a str,
    },
}

/// Allow with everything needed to reserve, or deny with a reason.
#[derive(Clone, Debug)]
pub enum Decision {
    Allow(Allowed),
    Deny(Denial),
}

/// An allowed request: reserve `amount` on every line, then forward.
#[derive(Clone, Debug)]
pub struct Allowed {
    /// Budgets to reserve on, in one atomic step: the agent's own and every
    /// ancestor's along the delegation chain.
    pub lines: Vec<BudgetLine>,
    /// How much to reserve.
    pub amount: ReserveAmount,
    /// Set when the request had no `max_tokens`: the largest value the
    /// tightest limit can pay for. After reserving, use
    /// [`Allowed::max_tokens_for`] with the amount actually reserved.
    pub max_tokens: Option<u32>,
    /// Prompt tokens the estimate assumed.
    pub input_tokens: u64,
    /// The resolved prices (for settling and for sizing `max_tokens`).
    pub pricing: Pricing,
    /// Denials from rules in `DryRun` mode: reported, not enforced.
    pub would_deny: Vec<Denial>,
}

/// The prices that apply to an allowed request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pricing {
    Model(ModelRates),
    Tool { per_call: Micros },
}

/// The cost to reserve: `min == max` when the request bounded its own
/// output; otherwise the store reserves the largest amount in `[min, max]`
/// that every budget can still pay (at least one output token's worth).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReserveAmount {
    pub min: Micros,
    pub max: Micros,
}

/// One budget counter to reserve on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetLine {
    /// Counter key without the store prefix: `{tree}:counter:window`, where
    /// `{tree}` is the delegation tree's Redis Cluster hash tag.
    pub key: Arc<str>,
    pub limit: Micros,
    pub window: WindowInstance,
}

/// The counter name of a Policy's budget for one agent. Kubernetes names
/// cannot contain `:`, so the parts can be read back by [`describe_counter`].
pub fn policy_counter(policy: &str, agent: &str) -> String {
    format!("p:{policy}:{agent}")
}

/// The counter name of a Delegation's grant budget.
pub fn delegation_counter(delegation: &str) -> String {
    format!("d:{delegation}")
}

/// A human-readable name for a counter, the same text
/// [`RuleSource::describe`] gives for its rule (for delegations, without the
/// parent and child).
pub fn describe_counter(counter: &str) -> String {
    let mut parts = counter.split(':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("p"), Some(policy), Some(agent)) => format!("policy {policy} (agent {agent})"),
        (Some("d"), Some(delegation), _) => format!("delegation {delegation}"),
        _ => counter.to_owned(),
    }
}

impl BudgetLine {
    /// The budget this line counts, for deny messages and status (derived
    /// from the key, so lines stay cheap to build on the request path).
    pub fn budget(&self) -> String {
        let counter = self.key.split_once("}:").map_or(&*self.key, |(_, c)| c);
        describe_counter(counter)
    }

    /// The delegation tree this line belongs to (the key's hash tag).
    pub fn tree(&self) -> &str {
        self.key
            .strip_prefix('{')
            .and_then(|rest| rest.split_once('}'))
            .map_or("", |(tree, _)| tree)
    }
}

impl Allowed {
    /// The `max_tokens` to send upstream once `reserved` is held: the most
    /// output that amount can pay for. `None` when the request set its own.
    pub fn max_tokens_for(&self, reserved: Micros) -> Option<u32> {
        let requested = self.max_tokens?;
        match self.pricing {
            Pricing::Model(rates) => Some(
                rates
                    .max_output_within(self.input_tokens, reserved)
                    .unwrap_or(0)
                    .min(requested),
            ),
            Pricing::Tool { .. } => None,
        }
    }
}

/// A refusal, with the rule that caused it when there is one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Denial {
    #[serde(flatten)]
    pub reason: DenyReason,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub message: String,
}

impl Denial {
    pub fn new(reason: DenyReason, rule: Option<&RuleSource>) -> Denial {
        let rule = rule.map(RuleSource::describe);
        let message = match &rule {
            Some(r) => format!("{reason} ({r})"),
            None => reason.to_string(),
        };
        Denial {
            reason,
            rule,
            message,
        }
    }
}

/// Machine-readable deny reasons. `code()` is the stable wire name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum DenyReason {
    /// No configuration snapshot has been loaded yet.
    NoConfig,
    UnknownAgent,
    NoPolicy,
    AgentSuspended,
    /// Compilation refused the agent (`delegation_cycle`, ...).
    AgentNotReady {
        detail: String,
    },
    DelegationExpired,
    ProviderNotAllowed {
        provider: String,
    },
    ModelNotAllowed {
        model: String,
    },
    ToolNotAllowed {
        tool: String,
    },
    UnpricedModel {
        model: String,
    },
    UnpricedTool {
        tool: String,
    },
    RequestCostCap {
        cost: Micros,
        cap: Micros,
    },
    BudgetExhausted {
        budget: String,
        resets_at: Option<DateTime<Utc>>,
    },
    /// The budget store failed, timed out or is not configured.
    BudgetStoreUnavailable {
        detail: String,
    },
    /// A budget window could not be computed (bad time zone in config).
    InvalidWindow {
        detail: String,
    },
}

impl DenyReason {
    pub fn code(&self) -> &'static str {
        match self {
            DenyReason::NoConfig => "no_config",
            DenyReason::UnknownAgent => "unknown_agent",
            DenyReason::NoPolicy => "no_policy",
            DenyReason::AgentSuspended => "agent_suspended",
            DenyReason::AgentNotReady { .. } => "agent_not_ready",
            DenyReason::DelegationExpired => "delegation_expired",
            DenyReason::ProviderNotAllowed { .. } => "provider_not_allowed",
            DenyReason::ModelNotAllowed { .. } => "model_not_allowed",
            DenyReason::ToolNotAllowed { .. } => "tool_not_allowed",
            DenyReason::UnpricedModel { .. } => "unpriced_model",
            DenyReason::UnpricedTool { .. } => "unpriced_tool",
            DenyReason::RequestCostCap { .. } => "request_cost_cap",
            DenyReason::BudgetExhausted { .. } => "budget_exhausted",
            DenyReason::BudgetStoreUnavailable { .. } => "budget_store_unavailable",
            DenyReason::InvalidWindow { .. } => "invalid_window",
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DenyReason::NoConfig => write!(f, "the gateway has no configuration yet"),
            DenyReason::UnknownAgent => write!(f, "unknown agent"),
            DenyReason::NoPolicy => write!(f, "no Policy applies to this agent"),
            DenyReason::AgentSuspended => {
                write!(f, "the agent or one of its delegators is suspended")
            }
            DenyReason::AgentNotReady { detail } => write!(f, "the agent is not ready: {detail}"),
            DenyReason::DelegationExpired => {
                write!(f, "a delegation in the agent's chain has expired")
            }
            DenyReason::ProviderNotAllowed { provider } => {
                write!(f, "provider {provider:?} is not allowed")
            }
            DenyReason::ModelNotAllowed { model } => write!(f, "model {model:?} is not allowed"),
            DenyReason::ToolNotAllowed { tool } => write!(f, "tool {tool:?} is not allowed"),
            DenyReason::UnpricedModel { model } => {
                write!(f, "model {model:?} has no price in the catalog")
            }
            DenyReason::UnpricedTool { tool } => {
                write!(f, "tool {tool:?} has no price in the catalog")
            }
            DenyReason::RequestCostCap { cost, cap } => write!(
                f,
                "the request could cost up to ${cost}, over the per-request cap of ${cap}"
            ),
            DenyReason::BudgetExhausted { budget, resets_at } => match resets_at {
                Some(t) => write!(f, "budget {budget} is exhausted until {}", t.to_rfc3339()),
                None => write!(f, "budget {budget} is exhausted"),
            },
            DenyReason::BudgetStoreUnavailable { detail } => {
                write!(f, "the budget store is unavailable: {detail}")
            }
            DenyReason::InvalidWindow { detail } => write!(f, "invalid budget window: {detail}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_name_their_tree_and_budget() {
        let line = BudgetLine {
            key: format!(
                "{{team/root}}:{}:c1778371200",
                policy_counter("team/daily", "team/bot")
            )
            .into(),
            limit: Micros(1),
            window: WindowInstance::Rolling {
                seconds: 60,
                bucket_seconds: 1,
            },
        };
        assert_eq!(line.tree(), "team/root");
        assert_eq!(line.budget(), "policy team/daily (agent team/bot)");
        let grant = BudgetLine {
            key: format!("{{team/root}}:{}:r3600", delegation_counter("team/grant")).into(),
            ..line.clone()
        };
        assert_eq!(grant.budget(), "delegation team/grant");
        let odd = BudgetLine {
            key: "no-tag".into(),
            ..line
        };
        assert_eq!((odd.tree(), odd.budget().as_str()), ("", "no-tag"));
    }
}
