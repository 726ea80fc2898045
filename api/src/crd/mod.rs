//! The custom resources users apply (group `caracal.dev`, version
//! `v1alpha1`), and the generator for their CRD manifests.

mod agent;
mod common;
mod delegation;
mod policy;
mod reference;

pub use agent::{
    Agent, AgentSpec, AgentStatus, ApiKeyIdentity, BudgetStatus, GatewaySync, Identity,
};
pub use common::{AgentRef, Allow, Budget, Condition, Period, Window, WindowType};
pub use delegation::{Delegation, DelegationSpec, DelegationState, DelegationStatus};
pub use kube::api::ObjectMeta;
pub use policy::{Enforcement, Policy, PolicySpec, PolicyStatus};

use kube::CustomResourceExt;

/// Why a manifest could not be generated.
#[derive(Debug, thiserror::Error)]
#[error("cannot render the {kind} CRD as YAML: {source}")]
pub struct GenerateError {
    kind: &'static str,
    #[source]
    source: serde_saphyr::ser_error::Error,
}

/// The CRD manifests as `(file name, YAML)` pairs, one per kind, exactly as
/// committed under `crds/`.
pub fn generated_manifests() -> Result<Vec<(&'static str, String)>, GenerateError> {
    let render = |kind: &'static str, crd| {
        serde_saphyr::to_string(&crd)
            .map(|yaml| {
                format!("# Generated from the Rust types in api/src/crd by `cargo run -p caracal-api --bin crdgen`. Do not edit.\n{yaml}")
            })
            .map_err(|source| GenerateError { kind, source })
    };
    Ok(vec![
        ("agent.yaml", render("Agent", Agent::crd())?),
        ("policy.yaml", render("Policy", Policy::crd())?),
        ("delegation.yaml", render("Delegation", Delegation::crd())?),
    ])
}

/// The CRD reference document (`docs/reference/crds.md`), generated from the
/// same schemas as the manifests.
pub fn generated_reference() -> String {
    reference::render(&[Agent::crd(), Policy::crd(), Delegation::crd()])
}
