//! Reading a price catalog from YAML and refusing catalogs that would price
//! something ambiguously.
//!
//! Parsing is strict (unknown fields are errors, prices are exact decimal
//! strings); validation then refuses an empty version, a model or alias
//! listed twice for one provider, and a tool listed twice, because with
//! duplicates the price a request gets would depend on list order.

use std::collections::BTreeSet;

use caracal_api::prices::PriceCatalog;

/// Why a catalog was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("price catalog is not valid YAML for the catalog format: {0}")]
    Parse(String),
    #[error("price catalog has no version; set `version` so charges can name their prices")]
    NoVersion,
    #[error("price catalog lists {provider}/{name} more than once (as a model or alias)")]
    DuplicateModel { provider: String, name: String },
    #[error("price catalog lists tool {provider}/{tool} more than once")]
    DuplicateTool { provider: String, tool: String },
}

/// Parse and validate a catalog.
pub fn parse_catalog(yaml: &str) -> Result<PriceCatalog, CatalogError> {
    let catalog: PriceCatalog =
        serde_saphyr::from_str(yaml).map_err(|e| CatalogError::Parse(e.to_string()))?;
    validate_catalog(&catalog)?;
    Ok(catalog)
}

/// Check a catalog built in code or received over the wire.
pub fn validate_catalog(catalog: &PriceCatalog) -> Result<(), CatalogError> {
    if catalog.version.trim().is_empty() {
        return Err(CatalogError::NoVersion);
    }
    let mut names = BTreeSet::new();
    for m in &catalog.models {
        for name in std::iter::once(&m.model).chain(&m.aliases) {
            if !names.insert((m.provider.as_str(), name.as_str())) {
                return Err(CatalogError::DuplicateModel {
                    provider: m.provider.clone(),
                    name: name.clone(),
                });
            }
        }
    }
    let mut tools = BTreeSet::new();
    for t in &catalog.tools {
        if !tools.insert((t.provider.as_str(), t.tool.as_str())) {
            return Err(CatalogError::DuplicateTool {
                provider: t.provider.clone(),
                tool: t.tool.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_ambiguous_catalogs() {
        let dup_alias = "version: v1\nmodels:\n  - {provider: openai, model: a, input: \"1\", output: \"1\"}\n  - {provider: openai, model: b, aliases: [a], input: \"2\", output: \"2\"}\n";
        assert_eq!(
            parse_catalog(dup_alias),
            Err(CatalogError::DuplicateModel {
                provider: "openai".into(),
                name: "a".into()
            })
        );
        let same_name_other_provider = "version: v1\nmodels:\n  - {provider: openai, model: a, input: \"1\", output: \"1\"}\n  - {provider: azure, model: a, input: \"2\", output: \"2\"}\n";
        assert!(parse_catalog(same_name_other_provider).is_ok());
        let dup_tool = "version: v1\ntools:\n  - {provider: s, tool: t, perCall: \"0.01\"}\n  - {provider: s, tool: t, perCall: \"0.02\"}\n";
        assert!(matches!(
            parse_catalog(dup_tool),
            Err(CatalogError::DuplicateTool { .. })
        ));
        assert_eq!(
            parse_catalog("version: \" \"\n"),
            Err(CatalogError::NoVersion)
        );
        assert!(matches!(
            parse_catalog("version: v1\nmodels: 7\n"),
            Err(CatalogError::Parse(_))
        ));
    }
}
