//! Caracal's policy engine: decides whether an agent may make a call, how
//! much to reserve for it, and keeps the budget counters that make the
//! reservation atomic across gateways. See `docs/policies.md` for the exact
//! semantics.
//!
//! The request path is:
//! 1. [`evaluate`] (pure) turns a [`ConfigSnapshot`](caracal_api::snapshot::ConfigSnapshot)
//!    and a [`Request`] into a [`Decision`]: a denial with a machine-readable
//!    reason, or the budget lines and amount to reserve;
//! 2. [`Budgets::reserve`] holds that amount on every line at once;
//! 3. after the response, [`Budgets::settle`] commits the actual cost
//!    (priced with [`ModelRates::cost`]) and releases the rest.
//!
//! The operator (and `caracal dev`) builds the snapshot with [`compile`],
//! reads prices with [`parse_catalog`], and reports spend per budget with
//! [`budget_lines`] and [`Budgets::usage`].

pub mod catalog;
pub mod compile;
pub mod cost;
pub mod decision;
pub mod evaluate;
pub mod fixtures;
pub mod glob;
mod lines;
pub mod store;
pub mod window;

pub use catalog::{CatalogError, parse_catalog, validate_catalog};
pub use compile::{CompileInput, Compiled, ObjectKind, Problem, compile};
pub use cost::{ModelRates, Usage};
pub use decision::{
    Allowed, BudgetLine, Call, Decision, Denial, DenyReason, Pricing, Request, ReserveAmount,
};
pub use evaluate::{budget_lines, evaluate, may_reach};
pub use store::{
    BudgetStore, Budgets, DEFAULT_RESERVATION_TTL, DEFAULT_STORE_TIMEOUT, LineUsage,
    MemoryBudgetStore, RedisBudgetStore, Reservation, ReserveOutcome, ReserveRequest,
    SettleOutcome, StoreError,
};
pub use window::{WindowError, WindowInstance, window_at};
