//! Caracal's shared vocabulary: the custom resources users apply, money, and
//! the compiled configuration snapshot the operator hands to gateways.
//! Nothing here does I/O.

pub mod crd;
pub mod money;
pub mod prices;
pub mod snapshot;

pub use money::{Micros, MoneyError};
