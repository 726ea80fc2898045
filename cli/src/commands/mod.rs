//! One module per top-level subcommand.

pub mod crds;
pub mod dev;
pub mod ledger;
pub mod merkle;
