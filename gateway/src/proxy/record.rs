//! What is known about one request, turned into a ledger event at the end.

use std::time::Instant;

use caracal_api::{
    Micros,
    snapshot::{AgentEntry, ConfigSnapshot, RuleSource},
};
use caracal_ledger::event::{AgentRef, MeteringEvent, Outcome, Tokens};
use uuid::Uuid;

use crate::wire::Usage;

/// The facts gathered along the request path.
#[derive(Clone, Debug)]
pub struct Record {
    pub request_id: String,
    pub started: Instant,
    pub agent: String,
    pub provider: String,
    pub model: Option<String>,
    pub tool: Option<String>,
    pub usage: Usage,
    pub cost: Micros,
    pub reserved: Micros,
    pub outcome: Outcome,
    /// Machine-readable reason; empty for a plain success.
    pub reason: String,
}

impl Record {
    pub fn new(request_id: &str, started: Instant, agent: &str, provider: &str) -> Self {
        Record {
            request_id: request_id.to_owned(),
            started,
            agent: agent.to_owned(),
            provider: provider.to_owned(),
            model: None,
            tool: None,
            usage: Usage::default(),
            cost: Micros::ZERO,
            reserved: Micros::ZERO,
            outcome: Outcome::Allowed,
            reason: String::new(),
        }
    }

    pub fn finish(&mut self, outcome: Outcome, reason: impl Into<String>) {
        self.outcome = outcome;
        self.reason = reason.into();
    }

    pub fn tokens_by_kind(&self) -> [(&'static str, u64); 5] {
        let u = &self.usage;
        [
            ("input", u.input_tokens),
            ("cached_input", u.cached_input_tokens),
            ("cache_write", u.cache_write_tokens),
            ("output", u.output_tokens),
            ("reasoning", u.reasoning_tokens),
        ]
    }
}

fn agent_ref(id: &str) -> AgentRef {
    match id.split_once('/') {
        Some((ns, name)) => AgentRef::new(ns, name),
        None => AgentRef::new("", id),
    }
}

/// Policies that apply to the agent, as `namespace/name`, without repeats.
fn policies(entry: Option<&AgentEntry>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for rule in entry.map(|e| e.rules.as_slice()).unwrap_or_default() {
        if let RuleSource::Policy { policy, .. } = &rule.source
            && !out.contains(policy)
        {
            out.push(policy.clone());
        }
    }
    out
}

/// The ledger event for a finished request.
pub fn event(
    record: &Record,
    snapshot: Option<&ConfigSnapshot>,
    gateway_id: &str,
) -> MeteringEvent {
    let entry = snapshot.and_then(|s| s.agents.get(&record.agent));
    MeteringEvent {
        id: Uuid::now_v7(),
        time: chrono::Utc::now(),
        agent: agent_ref(&record.agent),
        delegation_chain: entry
            .map(|e| e.chain.iter().map(|a| agent_ref(a)).collect())
            .unwrap_or_default(),
        policies: policies(entry),
        provider: record.provider.clone(),
        model: record.model.clone(),
        tool: record.tool.clone(),
        tokens: Tokens {
            input: record.usage.input_tokens,
            output: record.usage.output_tokens,
            cached_input: record.usage.cached_input_tokens,
            cache_write: record.usage.cache_write_tokens,
            reasoning: record.usage.reasoning_tokens,
        },
        cost: record.cost,
        reserved: record.reserved,
        price_catalog_version: snapshot
            .map(|s| s.prices.version.clone())
            .unwrap_or_default(),
        outcome: record.outcome,
        reason: record.reason.clone(),
        gateway_id: gateway_id.to_owned(),
        request_id: record.request_id.clone(),
    }
}

impl From<Usage> for caracal_policy::Usage {
    fn from(u: Usage) -> Self {
        caracal_policy::Usage {
            input: u.input_tokens,
            cached_input: u.cached_input_tokens,
            cache_write: u.cache_write_tokens,
            output: u.output_tokens,
            reasoning: u.reasoning_tokens,
        }
    }
}
