//! Shipping spooled events to the ledger store, signed by this gateway.

mod calm;

use std::sync::Arc;

use caracal_ledger::{
    batch::{Batch, BatchSigner},
    keys::KeyPair,
    store::{Ledger, LedgerStore, SqliteStore},
};
use futures::future::BoxFuture;

use crate::spool::{AckAfter, LedgerSink};

/// Whether `caracal dev` should give batches to the idle-priority thread
/// (`calm`): only for a SQLite ledger in a file, whose work runs in this
/// process (an in-memory database exists per connection, so a second
/// connection would be another ledger), and only when the spool
/// acknowledges after `write(2)`. When requests wait for the spool's fsync,
/// an idle-priority thread writing SQLite on the same filesystem holds those
/// fsyncs up behind it: +11 to +13 ms of p99 at 3,000 req/s instead of +2.0
/// to +2.6 ms (docs/benchmarks.md).
pub fn calm_lane_suits(database_url: &str, ack_after: AckAfter) -> bool {
    database_url.starts_with("sqlite:")
        && !SqliteStore::is_in_memory(database_url)
        && ack_after == AckAfter::Write
}

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
    calm: Option<calm::CalmLane>,
}

impl SequencingSink {
    /// `signer` as for [`SignedSink::new`]; `log_key` signs checkpoints and
    /// its name is the log's origin.
    pub fn new(ledger: Arc<Ledger>, signer: BatchSigner, log_key: KeyPair) -> Self {
        SequencingSink {
            ledger,
            signer: Arc::new(signer),
            log_key,
            calm: None,
        }
    }

    /// Store batches, while the machine has idle CPU, from a thread at idle
    /// scheduling priority with a connection of its own to `url` (the same
    /// ledger), so that requests never wait behind a batch (see
    /// `ledger_sink/calm.rs`). Meant for a SQLite ledger, whose work runs in
    /// this process. Where that thread cannot be set up (not Linux, or the
    /// ledger does not open a second time) every batch is stored as by
    /// [`SequencingSink::new`], and the reason is logged.
    pub async fn with_calm_lane(mut self, url: &str) -> Self {
        match calm::CalmLane::start(url, self.signer.clone(), self.log_key.clone()).await {
            Ok(lane) => {
                tracing::info!(
                    "ledger batches are stored at idle CPU priority while there is idle CPU"
                );
                self.calm = Some(lane);
            }
            Err(e) => tracing::warn!(
                error = %e,
                "ledger batches run at normal CPU priority only"
            ),
        }
        self
    }

    /// Whether batches may go to the idle-priority thread.
    pub fn has_calm_lane(&self) -> bool {
        self.calm.is_some()
    }

    /// Sign and sequence `batch` on a blocking thread at normal priority.
    async fn store_normally(&self, batch: &[Vec<u8>]) -> Result<(), String> {
        // Signing hashes every event, and sequencing plans the tree, signs a
        // checkpoint and builds large statements between its awaits: all of
        // it runs on one blocking thread, so that no async worker serving
        // requests is held up by a batch.
        let (ledger, key) = (self.ledger.clone(), self.log_key.clone());
        let (signer, events) = (self.signer.clone(), batch.to_vec());
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            sign_and_sequence(&ledger, &signer, &key, events, &runtime)
        })
        .await
        .map_err(|e| format!("sequencing the batch did not finish: {e}"))?
    }
}

/// Sign `events` as one batch and append it to the log under a checkpoint
/// signed with `log_key`, blocking the calling thread (never an async
/// worker) until it is stored.
fn sign_and_sequence(
    ledger: &Ledger,
    signer: &BatchSigner,
    log_key: &KeyPair,
    events: Vec<Vec<u8>>,
    runtime: &tokio::runtime::Handle,
) -> Result<(), String> {
    let signed = signer.sign_encoded(events);
    ledger
        .submit_and_sequence_blocking(signed, log_key, runtime)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

impl LedgerSink for SequencingSink {
    fn submit<'a>(&'a self, batch: &'a [Vec<u8>]) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            match &self.calm {
                Some(calm) => calm.store(batch, || self.store_normally(batch)).await,
                None => self.store_normally(batch).await,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_calm_lane_is_for_a_sqlite_ledger_behind_write_acks() {
        let cases = [
            ("sqlite:/var/lib/caracal/ledger.db", AckAfter::Write, true),
            ("sqlite:ledger.db?mode=rwc", AckAfter::Write, true),
            ("sqlite::memory:", AckAfter::Write, false),
            (
                "sqlite:file:ledger?mode=memory&cache=shared",
                AckAfter::Write,
                false,
            ),
            ("sqlite:/var/lib/caracal/ledger.db", AckAfter::Fsync, false),
            ("postgres://caracal@db/caracal", AckAfter::Write, false),
            ("postgresql://caracal@db/caracal", AckAfter::Fsync, false),
        ];
        for (url, ack, want) in cases {
            assert_eq!(calm_lane_suits(url, ack), want, "{url} {ack:?}");
        }
    }
}
