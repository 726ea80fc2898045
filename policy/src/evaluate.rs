//! The decision function: pure, no I/O, no clock of its own.
//!
//! Order of checks (the first failure is the answer, so reasons are stable):
//! agent state, provider, each rule's expiry and allowlists, price, the
//! per-request cost caps, then whether the worst case could ever fit in each
//! budget's limit. Whether it fits in what is *left* of a budget is decided
//! atomically by the budget store when it reserves.

use caracal_api::Micros;
use caracal_api::snapshot::{
    AgentEntry, AgentState, ConfigSnapshot, Enforcement, Rule, RuleSource,
};
use chrono::{DateTime, Utc};

use crate::cost::ModelRates;
use crate::decision::{
    Allowed, BudgetLine, Call, Decision, Denial, DenyReason, Pricing, Request, ReserveAmount,
};
use crate::glob::allowed_by;
use crate::lines::line_for;
use crate::window::WindowError;

/// Whether `agent` may reach `provider` at all at `now`, for a request that
/// costs nothing and so is neither priced nor reserved (an MCP message
/// other than `tools/call`, a provider's model list): the checks
/// [`evaluate`] makes before it looks at the call itself, in the same order
/// and with the same reasons. Dry-run rules report nothing here; they do
/// not deny.
pub fn may_reach(
    snapshot: &ConfigSnapshot,
    agent: &str,
    provider: &str,
    now: DateTime<Utc>,
) -> Result<(), Denial> {
    let entry = reachable(snapshot, agent, provider)?;
    for rule in &entry.rules {
        if let Err(reason) = check_reach(rule, provider, now) {
            record(rule, reason, &mut Vec::new())?;
        }
    }
    Ok(())
}

/// The agent, if it is known, servable and lets `provider` be reached.
fn reachable<'s>(
    snapshot: &'s ConfigSnapshot,
    agent: &str,
    provider: &str,
) -> Result<&'s AgentEntry, Denial> {
    let entry = snapshot
        .agents
        .get(agent)
        .ok_or_else(|| deny(DenyReason::UnknownAgent))?;
    check_state(entry)?;
    let provider_known = snapshot.providers.iter().any(|p| p == provider);
    if !provider_known || !entry.providers.iter().any(|p| p == provider) {
        return Err(deny(DenyReason::ProviderNotAllowed {
            provider: provider.to_owned(),
        }));
    }
    Ok(entry)
}

/// Decide `request` against `snapshot` at `now`.
pub fn evaluate(snapshot: &ConfigSnapshot, request: &Request<'_>, now: DateTime<Utc>) -> Decision {
    match try_evaluate(snapshot, request, now) {
        Ok(allowed) => Decision::Allow(allowed),
        Err(denial) => Decision::Deny(denial),
    }
}

fn deny(reason: DenyReason) -> Denial {
    Denial::new(reason, None)
}

fn try_evaluate(
    snapshot: &ConfigSnapshot,
    request: &Request<'_>,
    now: DateTime<Utc>,
) -> Result<Allowed, Denial> {
    let agent = reachable(snapshot, request.agent, request.provider)?;

    let mut would_deny = Vec::new();
    for rule in &agent.rules {
        if let Err(reason) = check_rule(rule, request, now) {
            record(rule, reason, &mut would_deny)?;
        }
    }

    let pricing = resolve_price(snapshot, request)?;
    let (amount, max_tokens, input_tokens) = size_reservation(agent, request, pricing)?;

    let mut lines: Vec<BudgetLine> = Vec::with_capacity(agent.rules.len());
    for rule in &agent.rules {
        if let Some(cap) = rule.max_request_cost
            && amount.min > cap
        {
            let reason = DenyReason::RequestCostCap {
                cost: amount.min,
                cap,
            };
            record(rule, reason, &mut would_deny)?;
        }
        let Some(budget) = &rule.budget else { continue };
        let line = line_for(budget, now).map_err(|e| {
            Denial::new(
                DenyReason::InvalidWindow {
                    detail: e.to_string(),
                },
                Some(&rule.source),
            )
        })?;
        if amount.min > budget.limit {
            let reason = DenyReason::BudgetExhausted {
                budget: rule.source.describe(),
                resets_at: line.window.resets_at(),
            };
            record(rule, reason, &mut would_deny)?;
            continue;
        }
        // Compile gives every rule its own counter, but a counter listed
        // twice would be held once and charged twice by a store, so a
        // repeat is dropped here too.
        if rule.enforcement == Enforcement::Enforce && !lines.iter().any(|l| l.key == line.key) {
            lines.push(line);
        }
    }
    Ok(Allowed {
        lines,
        amount,
        max_tokens,
        input_tokens,
        pricing,
        would_deny,
    })
}

/// Enforced rules deny; dry-run rules only report.
fn record(rule: &Rule, reason: DenyReason, would_deny: &mut Vec<Denial>) -> Result<(), Denial> {
    let denial = Denial::new(reason, Some(&rule.source));
    match rule.enforcement {
        Enforcement::Enforce => Err(denial),
        Enforcement::DryRun => {
            would_deny.push(denial);
            Ok(())
        }
    }
}

fn check_state(agent: &AgentEntry) -> Result<(), Denial> {
    match &agent.state {
        AgentState::Ready if agent.rules.is_empty() => Err(deny(DenyReason::NoPolicy)),
        AgentState::Ready => Ok(()),
        AgentState::Suspended => Err(deny(DenyReason::AgentSuspended)),
        AgentState::NotReady { reason, message } => Err(deny(match reason.as_str() {
            "no_policy" => DenyReason::NoPolicy,
            "delegation_expired" => DenyReason::DelegationExpired,
            _ => DenyReason::AgentNotReady {
                detail: format!("{reason}: {message}"),
            },
        })),
    }
}

/// Expiry and allowlists of one rule.
fn check_rule(rule: &Rule, request: &Request<'_>, now: DateTime<Utc>) -> Result<(), DenyReason> {
    check_reach(rule, request.provider, now)?;
    match request.call {
        Call::Model { model, .. } if !allowed_by(rule.allow.models.as_deref(), model) => {
            Err(DenyReason::ModelNotAllowed {
                model: model.to_owned(),
            })
        }
        // Tool patterns name the MCP server too: "github/search_*".
        Call::Tool { tool }
            if rule.allow.tools.is_some()
                && !allowed_by(
                    rule.allow.tools.as_deref(),
                    &format!("{}/{tool}", request.provider),
                ) =>
        {
            Err(DenyReason::ToolNotAllowed {
                tool: tool.to_owned(),
            })
        }
        _ => Ok(()),
    }
}

/// Expiry and the provider allowlist of one rule: what any request to
/// `provider` must pass, whatever it calls.
fn check_reach(rule: &Rule, provider: &str, now: DateTime<Utc>) -> Result<(), DenyReason> {
    if rule.expires_at.is_some_and(|t| now >= t) {
        return Err(DenyReason::DelegationExpired);
    }
    if !allowed_by(rule.allow.providers.as_deref(), provider) {
        return Err(DenyReason::ProviderNotAllowed {
            provider: provider.to_owned(),
        });
    }
    Ok(())
}

fn resolve_price(snapshot: &ConfigSnapshot, request: &Request<'_>) -> Result<Pricing, Denial> {
    let prices = &snapshot.prices;
    match request.call {
        Call::Model { model, .. } => prices
            .model(request.provider, model)
            .map(|p| Pricing::Model(ModelRates::from_price(p)))
            .ok_or_else(|| {
                deny(DenyReason::UnpricedModel {
                    model: model.to_owned(),
                })
            }),
        Call::Tool { tool } => prices
            .tool(request.provider, tool)
            .map(|t| Pricing::Tool {
                per_call: t.per_call,
            })
            .ok_or_else(|| {
                deny(DenyReason::UnpricedTool {
                    tool: tool.to_owned(),
                })
            }),
    }
}

/// The amount to reserve and the output limit to send: the request's own
/// `max_tokens` (or, without one, the largest output the tightest enforced
/// limit — budget or per-request cap — can pay for), clamped to what that
/// limit can pay for.
fn size_reservation(
    agent: &AgentEntry,
    request: &Request<'_>,
    pricing: Pricing,
) -> Result<(ReserveAmount, Option<u32>, u64), Denial> {
    let (rates, input_tokens, max_tokens) = match (pricing, request.call) {
        (Pricing::Tool { per_call }, _) => {
            let fixed = ReserveAmount {
                min: per_call,
                max: per_call,
            };
            return Ok((fixed, None, 0));
        }
        (
            Pricing::Model(rates),
            Call::Model {
                input_tokens,
                max_tokens,
                ..
            },
        ) => (rates, input_tokens, max_tokens),
        // resolve_price pairs model prices only with model calls; should the
        // two ever disagree, deny rather than guess.
        (Pricing::Model(_), Call::Tool { .. }) => {
            return Err(deny(DenyReason::UnpricedModel {
                model: String::new(),
            }));
        }
    };
    // The tightest enforced ceiling on one request's cost.
    let tightest = agent
        .rules
        .iter()
        .filter(|r| r.enforcement == Enforcement::Enforce)
        .flat_map(|r| [r.max_request_cost, r.budget.as_ref().map(|b| b.limit)])
        .flatten()
        .min()
        .unwrap_or(Micros(i64::MAX));
    // Zero output tokens fitting means not even one token can be paid for:
    // price the minimum at one token so the cap or budget check names it.
    let fits = rates.max_output_within(input_tokens, tightest).unwrap_or(0);
    // A request's own output limit is honoured as a ceiling and clamped down
    // to what the tightest limit can pay for: the store reserves the most it
    // can in [min, max] and `Allowed::max_tokens_for` turns that into the
    // limit sent upstream, so a call that can still afford some output is
    // served (shorter) rather than refused.
    let n = max_tokens.map_or(fits, |asked| asked.min(fits));
    let min = rates.worst_case(input_tokens, 1);
    let max = rates.worst_case(input_tokens, u64::from(n.max(1)));
    Ok((ReserveAmount { min, max }, Some(n.max(1)), input_tokens))
}

/// `{tree}:counter:<window>` — calendar windows are named by their start
/// (Unix seconds) so each window is a fresh counter; rolling windows keep
/// one bucketed counter.
/// Every enforced budget of `agent` in the window containing `now`, with the
/// rule it belongs to: what a call would reserve on, for status reports and
/// `caracal budget` (pass the lines to `Budgets::usage`).
pub fn budget_lines(
    agent: &AgentEntry,
    now: DateTime<Utc>,
) -> Result<Vec<(BudgetLine, &RuleSource)>, WindowError> {
    let mut out = Vec::new();
    for rule in &agent.rules {
        let Some(budget) = &rule.budget else { continue };
        if rule.enforcement != Enforcement::Enforce {
            continue;
        }
        out.push((line_for(budget, now)?, &rule.source));
    }
    Ok(out)
}

#[cfg(test)]
#[path = "evaluate_tests.rs"]
mod tests;
