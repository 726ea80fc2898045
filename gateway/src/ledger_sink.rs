//! Shipping spooled events to the ledger store, signed by this gateway.

use std::sync::Arc;

use caracal_ledger::{
    batch::{Batch, BatchSigner},
    keys::KeyPair,
    store::{Ledger, LedgerStore},
};
use futures::future::BoxFuture;

use crate::spool::LedgerSink;

/// Signs each batch with the gateway's key and submits it to a store.
#[derive(Debug)]
pub struct SignedSink<S> {
    store: Arc<S>,
    signer: Arc<BatchSigner>,
}

impl<S: LedgerStore + 'static> SignedSink<S> {
    /// `signer`'s key name must be the gateway id the events carry, and its
    /// public key must be registered with the store as a submitter.
    pub fn new(store: Arc<S>, signer: BatchSigner) -> Self {
        SignedSink {
            store,
            signer: Arc::new(signer),
        }
    }
}

/// Sign a batch on a blocking thread: hashing every event and signing takes
/// long enough to delay requests if done on the async workers.
async fn sign(signer: &Arc<BatchSigner>, batch: &[Vec<u8>]) -> Result<Batch, String> {
    let (signer, events) = (signer.clone(), batch.to_vec());
    tokio::task::spawn_blocking(move || signer.sign_encoded(events))
        .await
        .map_err(|e| format!("signing the batch did not finish: {e}"))
}

impl<S: LedgerStore + 'static> LedgerSink for SignedSink<S> {
    fn submit<'a>(&'a self, batch: &'a [Vec<u8>]) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let signed = sign(&self.signer, batch).await?;
            self.store
                .submit(signed)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}

/// For a process that is its own sequencer (`caracal dev`): signs each batch
/// with the gateway's key, then submits and sequences it in one step, so the
/// batch's events are in the log, under a checkpoint signed with the log
/// key, when the spool counts them as shipped.
#[derive(Debug)]
pub struct SequencingSink {
    ledger: Arc<Ledger>,
    signer: Arc<BatchSigner>,
    log_key: KeyPair,
}

impl SequencingSink {
    /// `signer` as for [`SignedSink::new`]; `log_key` signs checkpoints and
    /// its name is the log's origin.
    pub fn new(ledger: Arc<Ledger>, signer: BatchSigner, log_key: KeyPair) -> Self {
        SequencingSink {
            ledger,
            signer: Arc::new(signer),
            log_key,
        }
    }
}

impl LedgerSink for SequencingSink {
    fn submit<'a>(&'a self, batch: &'a [Vec<u8>]) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            // Signing hashes every event, and sequencing plans the tree,
            // signs a checkpoint and builds large statements between its
            // awaits: all of it runs on one blocking thread, so that no
            // async worker serving requests is held up by a batch.
            let (ledger, key) = (self.ledger.clone(), self.log_key.clone());
            let (signer, events) = (self.signer.clone(), batch.to_vec());
            let runtime = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                let signed = signer.sign_encoded(events);
                runtime.block_on(ledger.submit_and_sequence(signed, &key))
            })
            .await
            .map_err(|e| format!("sequencing the batch did not finish: {e}"))?
            .map(|_| ())
            .map_err(|e| e.to_string())
        })
    }
}
