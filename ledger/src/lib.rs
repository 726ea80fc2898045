//! The verifiable ledger (see docs/ledger.md).
pub mod batch;
pub mod event;
pub mod export;
pub mod hash;
pub mod keys;
pub mod note;
pub mod proof;
pub mod prove;
pub mod sequencer;
pub mod store;
pub mod tree;
pub mod verify;
