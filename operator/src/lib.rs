//! The Kubernetes operator. So far it holds the registry: the Postgres record
//! of the Agent, Policy and Delegation objects that ledger events refer to.
//! The controllers that feed it are not built yet (see docs/status.md).

#![forbid(unsafe_code)]

pub mod registry;
