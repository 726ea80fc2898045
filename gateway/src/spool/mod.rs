//! The local durable spool: metering events are on disk before they count.
//!
//! Appends go to one writer thread that drains whatever has queued, writes it
//! with one `write`, calls `fsync` once and only then acknowledges every
//! append in the group (group commit). The proxy waits for that
//! acknowledgement before it finishes a response, so a gateway killed at any
//! moment has on disk every event for every response it delivered.
//!
//! A flusher task ships committed records to the ledger in batches and then
//! records, in a small side file replaced atomically, how far it got. After
//! a restart, everything past that mark is shipped again; the ledger accepts
//! events idempotently by event id, so a batch shipped twice is harmless.
//! When everything is shipped the writer truncates the file, writing the
//! mark `0` *before* truncating so that a crash in between only re-ships.

mod format;
mod writer;

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::future::BoxFuture;
use tokio::sync::{Notify, mpsc, oneshot};

pub use format::{Scan, encode, scan};

/// Why the spool could not take or ship an event.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool I/O failed at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the spool holds {pending} unshipped bytes (limit {limit}); the ledger store is not taking events"
    )]
    Full { pending: u64, limit: u64 },
    #[error("the spool writer has stopped")]
    Stopped,
}

/// Where the flusher sends batches: the ledger store (through the signer).
pub trait LedgerSink: Send + Sync + 'static {
    /// Store every record of `batch` or fail as a whole. Must be idempotent
    /// per record, because a batch can be sent again after a crash.
    fn submit<'a>(&'a self, batch: &'a [Vec<u8>]) -> BoxFuture<'a, Result<(), String>>;
}

/// Limits and timing of a spool.
#[derive(Clone, Debug)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    /// Unshipped bytes beyond which appends are refused (fail-closed).
    pub max_pending_bytes: u64,
    /// Records per ledger batch.
    pub batch_records: usize,
    /// How long the flusher waits between attempts when idle or failing.
    pub flush_interval: Duration,
    /// Truncate the file once everything in it is shipped and it is at
    /// least this long.
    pub compact_after_bytes: u64,
    /// When an append is acknowledged (and so when a response may finish).
    pub ack_after: AckAfter,
}

/// When the spool acknowledges an append.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AckAfter {
    /// After `fsync`: survives the machine losing power. The default.
    #[default]
    Fsync,
    /// After `write(2)`, with `fsync` right behind: survives the gateway
    /// process being killed at any moment (the page cache belongs to the
    /// kernel), but a machine crash can lose the last group. Removes the
    /// disk's fsync latency from every response.
    Write,
}

impl SpoolConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SpoolConfig {
            dir: dir.into(),
            max_pending_bytes: 64 << 20,
            batch_records: 512,
            flush_interval: Duration::from_millis(200),
            compact_after_bytes: 4 << 20,
            ack_after: AckAfter::Fsync,
        }
    }
}

/// Counters shared by the writer, the flusher and readers of health/metrics.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// File length covered by fsync'd records.
    committed: AtomicU64,
    /// File offset up to which records are in the ledger.
    flushed: AtomicU64,
    pending_records: AtomicU64,
    shipped_records: AtomicU64,
    sink_healthy: AtomicBool,
    /// An fsync failed after its group was acknowledged (`AckAfter::Write`).
    sync_failed: AtomicBool,
    notify: Notify,
}

/// A handle to the spool; cheap to clone.
#[derive(Clone, Debug)]
pub struct Spool {
    tx: mpsc::Sender<writer::Command>,
    shared: Arc<Shared>,
    config: Arc<SpoolConfig>,
}

/// What the spool holds right now, for `/metrics` and `/readyz`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpoolStatus {
    pub pending_bytes: u64,
    pub pending_records: u64,
    pub shipped_records: u64,
    pub sink_healthy: bool,
}

impl Spool {
    /// Open (or create) the spool in `config.dir`, replaying what a previous
    /// run left unshipped, and start the writer thread and the flusher task.
    pub fn open(config: SpoolConfig, sink: Arc<dyn LedgerSink>) -> Result<Spool, SpoolError> {
        let shared = Arc::new(Shared::default());
        // Healthy until a submission says otherwise.
        shared.sink_healthy.store(true, Ordering::Release);
        let (tx, rx) = mpsc::channel(4096);
        let recovered = writer::Writer::open(&config, shared.clone())?;
        std::thread::Builder::new()
            .name("caracal-spool".into())
            .spawn(move || recovered.run(rx))
            .map_err(|source| SpoolError::Io {
                path: config.dir.clone(),
                source,
            })?;
        let spool = Spool {
            tx,
            shared,
            config: Arc::new(config),
        };
        tokio::spawn(flush_loop(
            spool.tx.downgrade(),
            spool.shared.clone(),
            spool.config.clone(),
            sink,
        ));
        Ok(spool)
    }

    /// Whether an append could be accepted now; the proxy checks this before
    /// it forwards anything, so a full spool denies up front.
    pub fn check_room(&self) -> Result<(), SpoolError> {
        if self.shared.sync_failed.load(Ordering::Acquire) {
            return Err(SpoolError::Io {
                path: self.config.dir.clone(),
                source: std::io::Error::other("an fsync of the spool failed; restart the gateway"),
            });
        }
        let pending = self.status().pending_bytes;
        if pending >= self.config.max_pending_bytes {
            return Err(SpoolError::Full {
                pending,
                limit: self.config.max_pending_bytes,
            });
        }
        Ok(())
    }

    /// Append one record; returns once it is fsync'd.
    pub async fn append(&self, record: Vec<u8>) -> Result<(), SpoolError> {
        self.check_room()?;
        let (done, wait) = oneshot::channel();
        self.tx
            .send(writer::Command::Append { record, done })
            .await
            .map_err(|_| SpoolError::Stopped)?;
        wait.await.map_err(|_| SpoolError::Stopped)??;
        self.shared.notify.notify_one();
        Ok(())
    }

    pub fn status(&self) -> SpoolStatus {
        let committed = self.shared.committed.load(Ordering::Acquire);
        let flushed = self.shared.flushed.load(Ordering::Acquire);
        SpoolStatus {
            pending_bytes: committed.saturating_sub(flushed),
            pending_records: self.shared.pending_records.load(Ordering::Acquire),
            shipped_records: self.shared.shipped_records.load(Ordering::Acquire),
            sink_healthy: self.shared.sink_healthy.load(Ordering::Acquire),
        }
    }

    /// Ship everything committed so far (used on shutdown and in tests).
    pub async fn flush_now(&self, sink: &dyn LedgerSink) -> Result<(), String> {
        while self.status().pending_records > 0 {
            ship_one_batch(&self.tx, &self.shared, &self.config, sink).await?;
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.config.dir
    }
}

async fn ship_one_batch(
    tx: &mpsc::Sender<writer::Command>,
    shared: &Shared,
    config: &SpoolConfig,
    sink: &dyn LedgerSink,
) -> Result<usize, String> {
    let stopped = || "spool writer stopped".to_owned();
    let (done, wait) = oneshot::channel();
    tx.send(writer::Command::ReadBatch {
        max: config.batch_records,
        done,
    })
    .await
    .map_err(|_| stopped())?;
    let (records, end) = wait
        .await
        .map_err(|_| stopped())?
        .map_err(|e| e.to_string())?;
    if records.is_empty() {
        return Ok(0);
    }
    let result = sink.submit(&records).await;
    shared.sink_healthy.store(result.is_ok(), Ordering::Release);
    result?;
    let (done, wait) = oneshot::channel();
    tx.send(writer::Command::MarkShipped {
        end,
        count: records.len() as u64,
        done,
    })
    .await
    .map_err(|_| stopped())?;
    wait.await
        .map_err(|_| stopped())?
        .map_err(|e| e.to_string())?;
    Ok(records.len())
}

/// Ships batches until every [`Spool`] handle is gone. It holds only a weak
/// sender, so dropping the last handle stops the writer thread and this task.
async fn flush_loop(
    tx: mpsc::WeakSender<writer::Command>,
    shared: Arc<Shared>,
    config: Arc<SpoolConfig>,
    sink: Arc<dyn LedgerSink>,
) {
    loop {
        let Some(strong) = tx.upgrade() else { return };
        match ship_one_batch(&strong, &shared, &config, sink.as_ref()).await {
            Ok(n) if n > 0 => continue,
            Ok(_) => shared.sink_healthy.store(true, Ordering::Release),
            Err(e) => {
                tracing::warn!(error = %e, "could not ship spooled events to the ledger; will retry")
            }
        }
        drop(strong);
        let _ = tokio::time::timeout(config.flush_interval, shared.notify.notified()).await;
    }
}
