//! Caracal's verifiable ledger: every spending decision, recorded so that
//! anyone holding the log's public key can prove nothing was changed,
//! removed, inserted or reordered. The format is specified in
//! `docs/ledger.md`; this crate is one implementation of it.
//!
//! # Layers
//!
//! - [`hash`], [`proof`], [`tree`]: RFC 6962 hashing, inclusion and
//!   consistency proofs and their verifiers, tree geometry. No I/O, no keys.
//! - [`keys`], [`note`]: ECDSA P-256 keys and C2SP signed-note checkpoints.
//! - [`event`]: the canonical, versioned metering event.
//! - [`batch`]: gateway-signed batches (provenance of every entry).
//! - [`sequencer`]: the pure decision of one sequencing step.
//! - [`store`]: one [`store::LedgerStore`] trait, Postgres and SQLite;
//!   [`tile`]: the data tiles Postgres keeps so verification reads few rows;
//!   [`hashtile`]: the hash tiles it keeps so proofs read few rows.
//! - [`verify`], [`prove`], [`export`]: checking, proving, exporting.
//!
//! # What a gateway uses (stable API)
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use caracal_ledger::{BatchSigner, KeyPair, Ledger, LedgerStore, MeteringEvent};
//!
//! // Once per gateway: a named key (the name is the gateway id events carry).
//! let gateway_key = KeyPair::generate("gw-node-1")?; // or KeyPair::from_pem(name, pem)
//! let signer = BatchSigner::new(gateway_key);
//!
//! // Build events (see MeteringEvent's fields) and encode them canonically;
//! // the bytes returned by `encode` are what gets hashed and stored forever.
//! let event = MeteringEvent::example(1);
//! let bytes: Vec<u8> = event.encode()?;
//!
//! // Sign a batch (of events, or of canonical bytes read back from a spool).
//! let batch = signer.sign_encoded(vec![bytes]);
//!
//! // Submit: idempotent by event id, so retry freely after any failure.
//! let ledger = Ledger::open("postgres://postgres@127.0.0.1/caracal").await?;
//! ledger.register_submitter(signer.public()).await?; // operator/dev setup, idempotent
//! let outcome = ledger.submit(batch.clone()).await?;
//!
//! // The sequencer (operator leader; in-process for `caracal dev`):
//! let log_key = KeyPair::generate("caracal.dev/ledger")?; // name = log origin
//! let step = ledger.sequence_pending(&log_key).await?;
//! // or both at once in dev mode:
//! let step = ledger.submit_and_sequence(batch, &log_key).await?;
//! let status = ledger.status().await?;
//! # let _ = (outcome, step, status);
//! # Ok(()) }
//! ```
//!
//! Every error means "not recorded": callers must keep the events (spool)
//! and retry, never assume success.

pub mod batch;
pub mod event;
pub mod export;
pub mod hash;
pub mod hashtile;
pub mod keys;
pub mod note;
pub mod proof;
pub mod prove;
pub mod sequencer;
pub mod store;
pub mod tile;
pub mod tree;
pub mod verify;

pub use batch::{Batch, BatchError, BatchSigner};
pub use event::{AgentRef, EventError, MeteringEvent, Outcome, Tokens};
pub use keys::{KeyError, KeyPair, PublicKey};
pub use note::Checkpoint;
pub use store::{Ledger, LedgerStore, SequenceOutcome, Status, StoreError, SubmitOutcome};
pub use verify::{Report, Scope, Trust, verify_store};
