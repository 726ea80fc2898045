//! The default catalog shipped in `examples/prices.yaml` parses, validates
//! and prices a request as the published rates say.

use caracal_api::Micros;
use caracal_policy::{ModelRates, Usage, parse_catalog};

const DEFAULT_CATALOG: &str = include_str!("../../../examples/prices.yaml");

#[test]
fn default_catalog_is_valid_and_exact() {
    let catalog = parse_catalog(DEFAULT_CATALOG).expect("examples/prices.yaml must be valid");
    assert!(!catalog.version.is_empty());
    assert!(
        catalog
            .models
            .iter()
            .all(|m| m.provider == "openai" || m.provider == "anthropic")
    );
    assert!(catalog.models.len() >= 10);

    // gpt-4o-mini: $0.15 in, $0.075 cached, $0.60 out per 1M tokens.
    let mini = ModelRates::from_price(catalog.model("openai", "gpt-4o-mini-2024-07-18").unwrap());
    let usage = Usage {
        input: 1_000,
        cached_input: 2_000,
        output: 500,
        ..Usage::default()
    };
    // 150 + 150 + 300 micro-dollars.
    assert_eq!(mini.cost(&usage), Micros(600));

    // claude-sonnet-4-5: cache writes at $3.75, hits at $0.30.
    let sonnet = ModelRates::from_price(catalog.model("anthropic", "claude-sonnet-4-5").unwrap());
    let usage = Usage {
        input: 10,
        cache_write: 1_000,
        cached_input: 1_000,
        output: 100,
        ..Usage::default()
    };
    // 30 + 3,750 + 300 + 1,500 micro-dollars.
    assert_eq!(sonnet.cost(&usage), Micros(5_580));
    assert!(catalog.model("anthropic", "claude-unknown").is_none());
}
