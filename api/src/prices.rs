//! The price catalog: what one token or one tool call costs, per provider.
//!
//! Prices are written per million tokens as exact decimal dollar strings
//! (`"2.50"` = $2.50 per 1M tokens) and held as [`Micros`] per million, so a
//! catalog can state prices down to $0.000001 per million tokens without any
//! floating point. The catalog carries a `version` that is recorded on every
//! ledger event, so a charge can always be traced back to the prices used.
//!
//! This module only describes the data; turning token counts into a cost
//! (rounded up to the next micro-dollar) lives in `caracal-policy`.

use serde::{Deserialize, Serialize};

use crate::money::Micros;

/// A versioned set of model and tool prices.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PriceCatalog {
    /// Identifies this set of prices on every ledger event (e.g. "2026-11-22.1").
    pub version: String,
    /// Per-token prices of models, by provider.
    #[serde(default)]
    pub models: Vec<ModelPrice>,
    /// Per-call prices of MCP tools, by provider (MCP server).
    #[serde(default)]
    pub tools: Vec<ToolPrice>,
}

/// Prices of one model at one provider, per million tokens.
///
/// Token kinds are disjoint: `input` is uncached prompt tokens, `cachedInput`
/// prompt tokens served from the provider's cache, `cacheWrite` prompt tokens
/// written to the cache, `output` visible completion tokens and `reasoning`
/// hidden reasoning tokens. An optional kind that is absent is billed at the
/// price of the kind it refines (cached input and cache writes at `input`,
/// reasoning at `output`), which is never cheaper than the provider's bill
/// for providers that discount those kinds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelPrice {
    /// Name of a configured provider (e.g. "openai", "anthropic").
    pub provider: String,
    /// Model name as the client sends it.
    pub model: String,
    /// Other names that resolve to these prices (dated snapshots, aliases).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Dollars per million uncached input tokens.
    pub input: Micros,
    /// Dollars per million output tokens.
    pub output: Micros,
    /// Dollars per million cached input tokens (default: `input`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<Micros>,
    /// Dollars per million tokens written to the prompt cache (default: `input`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<Micros>,
    /// Dollars per million reasoning tokens (default: `output`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<Micros>,
    /// The model's own output ceiling, used to bound a request that sets no
    /// `max_tokens` when no budget is tighter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
}

/// Price of one call to one MCP tool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolPrice {
    /// Name of the configured MCP provider (server).
    pub provider: String,
    /// Tool name as it appears in `tools/call`.
    pub tool: String,
    /// Dollars per call.
    pub per_call: Micros,
}

impl ModelPrice {
    /// Whether `model` names this entry or one of its aliases.
    pub fn answers_to(&self, model: &str) -> bool {
        self.model == model || self.aliases.iter().any(|a| a == model)
    }
}

impl PriceCatalog {
    /// The prices for `model` at `provider`, if the catalog has them.
    pub fn model(&self, provider: &str, model: &str) -> Option<&ModelPrice> {
        self.models
            .iter()
            .find(|m| m.provider == provider && m.answers_to(model))
    }

    /// The per-call price of `tool` at `provider`, if the catalog has it.
    pub fn tool(&self, provider: &str, tool: &str) -> Option<&ToolPrice> {
        self.tools
            .iter()
            .find(|t| t.provider == provider && t.tool == tool)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_reads_from_yaml_with_exact_prices() {
        let yaml = r#"
version: "test-1"
models:
  - provider: openai
    model: gpt-test
    aliases: [gpt-test-2026-01-01]
    input: "2.50"
    output: "10.00"
    cachedInput: "1.25"
tools:
  - provider: search
    tool: web_search
    perCall: "0.01"
"#;
        let catalog: PriceCatalog = serde_saphyr::from_str(yaml).unwrap();
        let m = catalog.model("openai", "gpt-test-2026-01-01").unwrap();
        assert_eq!(m.input, Micros(2_500_000));
        assert_eq!(m.cached_input, Some(Micros(1_250_000)));
        assert_eq!(m.reasoning, None);
        assert!(catalog.model("anthropic", "gpt-test").is_none());
        assert_eq!(
            catalog.tool("search", "web_search").unwrap().per_call,
            Micros(10_000)
        );
    }

    #[test]
    fn catalog_refuses_float_like_or_unknown_fields() {
        let bad_price =
            "version: v\nmodels:\n  - {provider: p, model: m, input: 1e-6, output: \"1\"}\n";
        assert!(serde_saphyr::from_str::<PriceCatalog>(bad_price).is_err());
        let unknown = "version: v\nmodels: []\ncurrency: EUR\n";
        assert!(serde_saphyr::from_str::<PriceCatalog>(unknown).is_err());
    }
}
