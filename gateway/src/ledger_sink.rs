//! Shipping spooled events to the ledger store, signed by this gateway.

use std::sync::Arc;

use caracal_ledger::{batch::BatchSigner, store::LedgerStore};
use futures::future::BoxFuture;

use crate::spool::LedgerSink;

/// Signs each batch with the gateway's key and submits it to a store.
#[derive(Debug)]
pub struct SignedSink<S> {
    store: Arc<S>,
    signer: BatchSigner,
}

impl<S: LedgerStore + 'static> SignedSink<S> {
    /// `signer`'s key name must be the gateway id the events carry, and its
    /// public key must be registered with the store as a submitter.
    pub fn new(store: Arc<S>, signer: BatchSigner) -> Self {
        SignedSink { store, signer }
    }
}

impl<S: LedgerStore + 'static> LedgerSink for SignedSink<S> {
    fn submit<'a>(&'a self, batch: &'a [Vec<u8>]) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let signed = self.signer.sign_encoded(batch.to_vec());
            self.store
                .submit(signed)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}
