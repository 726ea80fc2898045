//! The Kubernetes operator: reconcilers for Agent, Policy and Delegation. Not built yet; see docs/architecture.md.
