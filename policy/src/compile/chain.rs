//! Resolving one agent's delegation chain and flattening everything that
//! applies to it into rules, refusing cycles, depth violations, expired
//! grants, grants that widen their parent's allowances and chains whose
//! root no Policy selects.

use std::collections::{BTreeMap, BTreeSet};
use std::iter::once;

use caracal_api::crd::Agent;
use caracal_api::snapshot::{
    AgentEntry, AgentState, Allow, BudgetRule, Enforcement, Rule, RuleSource,
};
use chrono::{DateTime, Utc};

use super::convert::Refusal;
use super::{Grant, PolicyTemplate};
use crate::decision::{delegation_counter, policy_counter};
use crate::glob::glob_matches;

/// Longest delegation chain accepted (the CRD caps `maxDepth` at 8 too).
pub const MAX_CHAIN_DEPTH: usize = 8;

pub(super) struct Context<'a> {
    pub agents: &'a BTreeMap<String, &'a Agent>,
    pub policies_of: &'a BTreeMap<String, Vec<PolicyTemplate>>,
    pub grants_of: &'a BTreeMap<String, Vec<Grant>>,
    pub broken: &'a BTreeMap<String, Refusal>,
    pub providers: &'a [String],
    pub now: DateTime<Utc>,
}

/// The snapshot entry for agent `id`; refusals become `NotReady`.
pub(super) fn entry(ctx: &Context<'_>, id: &str, agent: &Agent) -> AgentEntry {
    let namespace = agent
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = agent.metadata.name.clone().unwrap_or_default();
    match resolve(ctx, id) {
        Ok(r) => AgentEntry {
            namespace,
            name,
            state: r.state,
            providers: r.providers,
            chain: r.chain,
            rules: r.rules,
        },
        Err((reason, message)) => AgentEntry {
            namespace,
            name,
            state: AgentState::NotReady {
                reason: reason.into(),
                message,
            },
            providers: Vec::new(),
            chain: Vec::new(),
            rules: Vec::new(),
        },
    }
}

struct Resolved {
    state: AgentState,
    providers: Vec<String>,
    chain: Vec<String>,
    rules: Vec<Rule>,
}

fn resolve(ctx: &Context<'_>, id: &str) -> Result<Resolved, Refusal> {
    let (links, chain) = walk(ctx, id)?;
    for (below, g) in links.iter().enumerate() {
        if below > g.max_depth as usize {
            return Err((
                "delegation_depth_exceeded",
                format!(
                    "delegation {} lets {} delegate {} level(s) further, but {id} is {below} level(s) below it",
                    g.id, g.child, g.max_depth
                ),
            ));
        }
    }
    if let Some(g) = links
        .iter()
        .find(|g| g.expires_at.is_some_and(|t| ctx.now >= t))
    {
        return Err((
            "delegation_expired",
            format!("delegation {} expired; delete it or extend expiresAt", g.id),
        ));
    }
    let root = chain.last().map(String::as_str).unwrap_or(id);
    if ctx.policies_of.get(root).is_none_or(Vec::is_empty) {
        let message = if root == id {
            "no Policy selects this agent".to_owned()
        } else {
            format!("no Policy selects {root}, the root of this agent's delegation chain")
        };
        return Err(("no_policy", message));
    }

    let mut rules = Vec::new();
    push_policies(ctx, id, root, &mut rules);
    for g in &links {
        rules.push(grant_rule(g, root));
        push_policies(ctx, &g.parent, root, &mut rules);
    }
    check_narrowing(&rules)?;

    let lineage = || once(id).chain(chain.iter().map(String::as_str));
    let mut providers = ctx.providers.to_vec();
    let mut suspended = false;
    for a in lineage() {
        if let Some(agent) = ctx.agents.get(a) {
            if let Some(list) = &agent.spec.providers {
                providers.retain(|p| list.contains(p));
            }
            suspended |= agent.spec.suspended;
        }
    }
    Ok(Resolved {
        state: if suspended {
            AgentState::Suspended
        } else {
            AgentState::Ready
        },
        providers,
        chain,
        rules,
    })
}

/// Follow parent links from `id` to the root: the grants (nearest first)
/// and the ancestors' ids.
fn walk<'a>(ctx: &Context<'a>, id: &str) -> Result<(Vec<&'a Grant>, Vec<String>), Refusal> {
    let mut links: Vec<&Grant> = Vec::new();
    let mut chain: Vec<String> = Vec::new();
    let mut seen = BTreeSet::from([id.to_owned()]);
    let mut current = id.to_owned();
    loop {
        if let Some((reason, message)) = ctx.broken.get(&current) {
            let message = if current == id {
                message.clone()
            } else {
                format!("ancestor {current}: {message}")
            };
            return Err((reason, message));
        }
        let Some(grants) = ctx.grants_of.get(&current) else {
            return Ok((links, chain));
        };
        let [g] = grants.as_slice() else {
            let names: Vec<&str> = grants.iter().map(|g| g.id.as_str()).collect();
            return Err((
                "multiple_parents",
                format!(
                    "{current} is the child of several delegations ({}); an agent may have one parent",
                    names.join(", ")
                ),
            ));
        };
        if !seen.insert(g.parent.clone()) {
            let mut path: Vec<&str> = once(id).chain(chain.iter().map(String::as_str)).collect();
            path.push(&g.parent);
            return Err((
                "delegation_cycle",
                format!("delegation cycle: {}", path.join(" <- ")),
            ));
        }
        if links.len() >= MAX_CHAIN_DEPTH {
            return Err((
                "delegation_depth_exceeded",
                format!("delegation chain is longer than {MAX_CHAIN_DEPTH}"),
            ));
        }
        links.push(g);
        chain.push(g.parent.clone());
        current = g.parent.clone();
    }
}

/// The Redis Cluster hash tag of every counter `agent`'s chain charges: its
/// namespace. Delegations link agents of one namespace, so a chain's
/// counters share one slot and are reserved in one atomic step. It is not
/// the chain's root: a counter's key must not change when a Delegation is
/// added, moved or removed, or the agent's spent budget would start again
/// from zero under the new key.
fn tree_of(agent: &str) -> String {
    agent.split_once('/').map_or(agent, |(ns, _)| ns).to_owned()
}

fn push_policies(ctx: &Context<'_>, agent: &str, root: &str, rules: &mut Vec<Rule>) {
    for t in ctx.policies_of.get(agent).into_iter().flatten() {
        rules.push(Rule {
            source: RuleSource::Policy {
                policy: t.id.clone(),
                agent: agent.to_owned(),
            },
            enforcement: t.enforcement,
            allow: t.allow.clone(),
            max_request_cost: t.max_request_cost,
            budget: t.budget.as_ref().map(|(limit, window)| BudgetRule {
                limit: *limit,
                window: window.clone(),
                counter: policy_counter(&t.id, agent),
                tree: tree_of(root),
            }),
            expires_at: None,
        });
    }
}

fn grant_rule(g: &Grant, root: &str) -> Rule {
    Rule {
        source: RuleSource::Delegation {
            delegation: g.id.clone(),
            parent: g.parent.clone(),
            child: g.child.clone(),
        },
        enforcement: Enforcement::Enforce,
        allow: g.allow.clone(),
        max_request_cost: None,
        budget: Some(BudgetRule {
            limit: g.limit,
            window: g.window.clone(),
            counter: delegation_counter(&g.id),
            tree: tree_of(root),
        }),
        expires_at: g.expires_at,
    }
}

/// A grant may only narrow: each pattern it allows must be covered by a
/// pattern of every enforced rule on the parent's side of the chain. The
/// runtime intersects anyway; this makes a widening grant visible instead of
/// silently ineffective. (Coverage is checked by matching the grant's
/// pattern text against the parent's patterns, exact for literal names and
/// for `*` suffixes such as `gpt-4o*` under `gpt-*`.)
fn check_narrowing(rules: &[Rule]) -> Result<(), Refusal> {
    for (i, rule) in rules.iter().enumerate() {
        let RuleSource::Delegation { delegation, .. } = &rule.source else {
            continue;
        };
        for above in rules[i + 1..]
            .iter()
            .filter(|r| r.enforcement == Enforcement::Enforce)
        {
            for (kind, wanted, allowed) in lists(&rule.allow, &above.allow) {
                let (Some(wanted), Some(allowed)) = (wanted, allowed) else {
                    continue;
                };
                if let Some(p) = wanted
                    .iter()
                    .find(|p| !allowed.iter().any(|q| glob_matches(q, p)))
                {
                    return Err((
                        "delegation_widens_allowance",
                        format!(
                            "delegation {delegation} allows {kind} {p:?}, which {} does not",
                            above.source.describe()
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

type Lists<'a> = [(
    &'static str,
    Option<&'a Vec<String>>,
    Option<&'a Vec<String>>,
); 3];

fn lists<'a>(grant: &'a Allow, parent: &'a Allow) -> Lists<'a> {
    [
        (
            "provider",
            grant.providers.as_ref(),
            parent.providers.as_ref(),
        ),
        ("model", grant.models.as_ref(), parent.models.as_ref()),
        ("tool", grant.tools.as_ref(), parent.tools.as_ref()),
    ]
}
