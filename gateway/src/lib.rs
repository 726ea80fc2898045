//! The gateway data plane: a metering, budget-enforcing proxy in front of
//! model providers and MCP servers.
//!
//! The request path (see `docs/gateway.md`): authenticate, evaluate the
//! agent's rules, reserve the worst-case cost, forward with the output limit
//! set or clamped to what the budget can pay, meter the provider's own usage
//! report (streams included, passed through unbuffered), settle, append the
//! metering event to the durable spool, respond. Anything that cannot be
//! completed denies.

pub mod config;
pub mod file_watch;
pub mod identity;
pub mod jwt;
pub mod ledger_sink;
pub mod live;
pub mod metrics;
pub mod mock;
pub mod mtls;
pub mod proxy;
pub mod readiness;
pub mod refusal;
pub mod server;
pub mod spool;
pub mod standalone;
pub mod upstream;
pub mod wire;
