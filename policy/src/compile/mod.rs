//! The compile step: Agents, Policies and Delegations (as stored in the
//! cluster) plus the configured providers and the price catalog become one
//! [`ConfigSnapshot`] the gateway can decide on without resolving anything.
//!
//! Pure: no I/O, and `now` is passed in. Anything that cannot be compiled
//! safely makes the affected agents `NotReady` with a reason (fail-closed),
//! and is also listed in [`Compiled::problems`] so the operator can set a
//! `Ready=False` condition on the object at fault.
//!
//! Simplifications (documented in docs/policies.md): an agent may be the
//! child of at most one Delegation, so every agent has a single chain to
//! one root; a policy's budget is counted per selected agent.

mod chain;
mod convert;

use std::collections::BTreeMap;

use caracal_api::Micros;
use caracal_api::crd::{Agent, Delegation, Policy};
use caracal_api::prices::PriceCatalog;
use caracal_api::snapshot::{Allow, ConfigSnapshot, Enforcement, WindowSpec, agent_id};
use chrono::{DateTime, Utc};

pub use chain::MAX_CHAIN_DEPTH;
pub use convert::{MIN_ROLLING_SECONDS, parse_duration};

/// Everything the compile step reads.
#[derive(Clone, Copy, Debug)]
pub struct CompileInput<'a> {
    pub agents: &'a [Agent],
    pub policies: &'a [Policy],
    pub delegations: &'a [Delegation],
    /// Names of the providers configured on the gateways.
    pub providers: &'a [String],
    pub prices: &'a PriceCatalog,
    /// The version the new snapshot carries.
    pub version: u64,
    pub now: DateTime<Utc>,
}

/// Which kind of object a problem is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    Agent,
    Policy,
    Delegation,
}

/// Why an object is not (fully) in force. `reason` is machine-readable and
/// suits a condition's `reason` field after case conversion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub kind: ObjectKind,
    pub namespace: String,
    pub name: String,
    pub reason: String,
    pub message: String,
}

/// The snapshot, and every problem found on the way.
#[derive(Clone, Debug)]
pub struct Compiled {
    pub snapshot: ConfigSnapshot,
    pub problems: Vec<Problem>,
}

/// A Policy in compiled form, before it is bound to an agent.
#[derive(Clone, Debug)]
struct PolicyTemplate {
    id: String,
    enforcement: Enforcement,
    allow: Allow,
    max_request_cost: Option<Micros>,
    budget: Option<(Micros, WindowSpec)>,
}

/// A Delegation in compiled form.
#[derive(Clone, Debug)]
struct Grant {
    id: String,
    parent: String,
    child: String,
    limit: Micros,
    window: WindowSpec,
    allow: Allow,
    expires_at: Option<DateTime<Utc>>,
    max_depth: u32,
}

fn ns_name(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_else(|| "default".into()),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Compile everything into one snapshot.
pub fn compile(input: &CompileInput<'_>) -> Compiled {
    let mut problems = Vec::new();
    let agents: BTreeMap<String, &Agent> = input
        .agents
        .iter()
        .map(|a| {
            let (ns, name) = ns_name(&a.metadata);
            (agent_id(&ns, &name), a)
        })
        .collect();

    // Agent id -> (policy templates, refusal of any policy selecting it).
    let mut policies_of: BTreeMap<String, Vec<PolicyTemplate>> = BTreeMap::new();
    let mut broken: BTreeMap<String, (&'static str, String)> = BTreeMap::new();
    for policy in input.policies {
        let (ns, name) = ns_name(&policy.metadata);
        let id = agent_id(&ns, &name);
        let mut refuse = |reason: &'static str, message: String| {
            problems.push(Problem {
                kind: ObjectKind::Policy,
                namespace: ns.clone(),
                name: name.clone(),
                reason: reason.into(),
                message,
            });
        };
        let selected = match select(policy, &ns, &agents) {
            Ok(s) => s,
            Err(((reason, message), maybe)) => {
                // Dropping an unreadable Policy would serve the agents it
                // may select without its limits: deny them instead.
                for agent in maybe {
                    broken.entry(agent).or_insert((
                        "invalid_policy",
                        format!("policy {id} is invalid ({reason}): {message}"),
                    ));
                }
                refuse(reason, message);
                continue;
            }
        };
        let template = policy_template(policy, &id);
        for agent in selected {
            match &template {
                Ok(t) => policies_of.entry(agent).or_default().push(t.clone()),
                Err((reason, message)) => {
                    broken.entry(agent).or_insert((
                        "invalid_policy",
                        format!("policy {id} is invalid ({reason}): {message}"),
                    ));
                }
            }
        }
        if let Err((reason, message)) = template {
            refuse(reason, message);
        }
    }

    let mut grants_of: BTreeMap<String, Vec<Grant>> = BTreeMap::new();
    for delegation in input.delegations {
        let (ns, name) = ns_name(&delegation.metadata);
        match grant(delegation, &ns, &name, &agents) {
            Ok(g) => grants_of.entry(g.child.clone()).or_default().push(g),
            Err((reason, message)) => {
                let child = agent_id(&ns, &delegation.spec.child_ref.name);
                broken.entry(child).or_insert((
                    "invalid_delegation",
                    format!("delegation {ns}/{name} is invalid ({reason}): {message}"),
                ));
                problems.push(Problem {
                    kind: ObjectKind::Delegation,
                    namespace: ns,
                    name,
                    reason: reason.into(),
                    message,
                });
            }
        }
    }

    let ctx = chain::Context {
        agents: &agents,
        policies_of: &policies_of,
        grants_of: &grants_of,
        broken: &broken,
        providers: input.providers,
        now: input.now,
    };
    let mut entries = BTreeMap::new();
    for (id, agent) in &agents {
        let entry = chain::entry(&ctx, id, agent);
        if let caracal_api::snapshot::AgentState::NotReady { reason, message } = &entry.state {
            problems.push(Problem {
                kind: ObjectKind::Agent,
                namespace: entry.namespace.clone(),
                name: entry.name.clone(),
                reason: reason.clone(),
                message: message.clone(),
            });
        }
        entries.insert(id.clone(), entry);
    }

    Compiled {
        snapshot: ConfigSnapshot {
            version: input.version,
            compiled_at: input.now,
            providers: input.providers.to_vec(),
            prices: input.prices.clone(),
            agents: entries,
        },
        problems,
    }
}

/// The agents (ids) a Policy selects in its namespace. A Policy that
/// cannot be read is refused together with every agent it may select: those
/// its selector's readable part matches (or its `targetRefs` name, when both
/// ways of selecting are set).
fn select(
    policy: &Policy,
    ns: &str,
    agents: &BTreeMap<String, &Agent>,
) -> Result<Vec<String>, (convert::Refusal, Vec<String>)> {
    let spec = &policy.spec;
    // An agent named twice is selected once: two identical rules would
    // hold its reservation once but commit its spend twice.
    let named = |refs: &Vec<caracal_api::crd::AgentRef>| -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for id in refs.iter().map(|r| agent_id(ns, &r.name)) {
            if agents.contains_key(&id) && !out.contains(&id) {
                out.push(id);
            }
        }
        out
    };
    // (selected, refusal if some agent could not be judged, with it included)
    let by_labels = |selector| {
        let mut out = Vec::new();
        let mut refusal = None;
        for (id, agent) in agents {
            let in_ns = agent.metadata.namespace.as_deref().unwrap_or("default") == ns;
            if !in_ns {
                continue;
            }
            let labels = agent.metadata.labels.clone().unwrap_or_default();
            match convert::selects(selector, &labels) {
                Ok(true) => out.push(id.clone()),
                Ok(false) => {}
                Err(r) => {
                    out.push(id.clone());
                    refusal.get_or_insert(r);
                }
            }
        }
        (out, refusal)
    };
    match (&spec.target_refs, &spec.agent_selector) {
        (Some(refs), None) => Ok(named(refs)),
        (None, Some(selector)) => match by_labels(selector) {
            (out, None) => Ok(out),
            (maybe, Some(refusal)) => Err((refusal, maybe)),
        },
        (refs, selector) => {
            let mut maybe = refs.as_ref().map(named).unwrap_or_default();
            if let Some(selector) = selector {
                maybe.extend(by_labels(selector).0);
            }
            Err((
                (
                    "invalid_target",
                    "set exactly one of targetRefs or agentSelector".into(),
                ),
                maybe,
            ))
        }
    }
}

fn policy_template(policy: &Policy, id: &str) -> Result<PolicyTemplate, convert::Refusal> {
    let spec = &policy.spec;
    let budget = match &spec.budget {
        Some(b) => Some((
            countable(b.limit, "budget.limit")?,
            convert::window(&b.window)?,
        )),
        None => None,
    };
    let max_request_cost = match spec.max_request_cost {
        Some(m) => Some(positive(m, "maxRequestCost")?),
        None => None,
    };
    Ok(PolicyTemplate {
        id: id.to_owned(),
        enforcement: match spec.enforcement {
            caracal_api::crd::Enforcement::Enforce => Enforcement::Enforce,
            caracal_api::crd::Enforcement::DryRun => Enforcement::DryRun,
        },
        allow: convert::allow(spec.allow.as_ref()),
        max_request_cost,
        budget,
    })
}

/// A budget limit the stores can count exactly: positive and at most 2^53
/// micro-dollars (about $9 billion; Redis counts in Lua doubles). A larger
/// one is refused here, naming the field, rather than denying every call
/// later as `budget_store_unavailable`.
fn countable(m: Micros, field: &str) -> Result<Micros, convert::Refusal> {
    let m = positive(m, field)?;
    if m.get() > crate::store::MAX_EXACT_AMOUNT {
        return Err((
            "invalid_limit",
            format!(
                "{field} must be at most {:#} dollars, the most a budget store counts exactly",
                Micros(crate::store::MAX_EXACT_AMOUNT)
            ),
        ));
    }
    Ok(m)
}

fn positive(m: Micros, field: &str) -> Result<Micros, convert::Refusal> {
    if m.get() > 0 {
        Ok(m)
    } else {
        Err(("invalid_limit", format!("{field} must be greater than 0")))
    }
}

fn grant(
    d: &Delegation,
    ns: &str,
    name: &str,
    agents: &BTreeMap<String, &Agent>,
) -> Result<Grant, convert::Refusal> {
    let parent = agent_id(ns, &d.spec.parent_ref.name);
    let child = agent_id(ns, &d.spec.child_ref.name);
    if parent == child {
        return Err(("delegation_cycle", format!("{parent} delegates to itself")));
    }
    for end in [&parent, &child] {
        if !agents.contains_key(end) {
            return Err(("unknown_agent", format!("agent {end} does not exist")));
        }
    }
    let expires_at = match &d.spec.expires_at {
        Some(text) => Some(
            DateTime::parse_from_rfc3339(text)
                .map_err(|e| ("invalid_expiry", format!("expiresAt {text:?}: {e}")))?
                .with_timezone(&Utc),
        ),
        None => None,
    };
    Ok(Grant {
        id: agent_id(ns, name),
        parent,
        child,
        limit: countable(d.spec.budget.limit, "budget.limit")?,
        window: convert::window(&d.spec.budget.window)?,
        allow: convert::allow(d.spec.allow.as_ref()),
        expires_at,
        max_depth: d.spec.max_depth,
    })
}

#[cfg(test)]
mod tests;
