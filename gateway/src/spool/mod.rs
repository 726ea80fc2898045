//! The local durable spool: metering events are on disk before they count.
//!
//! A request's task writes its event to the spool file itself (one
//! `write(2)` under a mutex); a dedicated thread runs `fsync` whenever new
//! records are written, and an append made with [`AckAfter::Fsync`] returns
//! only once an fsync that covers it has finished (group commit: one fsync
//! serves every append written before it). The proxy waits for that before
//! it finishes a response, so a gateway killed at any moment has on disk
//! every event for every response it delivered.
//!
//! A flusher task ships durable records to the ledger in batches and then
//! records, in a small side file replaced atomically, how far it got. After
//! a restart, everything past that mark is shipped again; the ledger accepts
//! events idempotently by event id, so a batch shipped twice is harmless.
//! When everything is shipped the file is truncated, writing the mark `0`
//! durably *before* truncating so that a crash in between only re-ships.

mod format;
mod gather;
mod mark;
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
use tokio::sync::Notify;

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
    /// Events worth a batch of their own: the flusher ships as soon as this
    /// many wait (see `gather`). Each batch costs a signature and a store
    /// transaction, so shipping every event on its own would cost far more
    /// under load; a large batch is one long burst of work that delays the
    /// requests queued behind it.
    pub ship_records: usize,
    /// How long the flusher lets fewer than [`Self::ship_records`] events
    /// gather before it ships them anyway; this bounds how far the ledger
    /// lags behind the spool.
    pub ship_delay: Duration,
    /// Truncate the file once everything in it is shipped and it is at
    /// least this long.
    pub compact_after_bytes: u64,
    /// When an append is acknowledged (and so when a response may finish).
    pub ack_after: AckAfter,
    /// With [`AckAfter::Write`], how often written records are fsync'd: at
    /// most this much can be lost if the machine (not the process) dies.
    pub sync_interval: Duration,
}

/// When the spool acknowledges an append.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AckAfter {
    /// After `fsync`: survives the machine losing power. The default.
    #[default]
    Fsync,
    /// After `write(2)`, fsync'd every [`SpoolConfig::sync_interval`]:
    /// survives the gateway process being killed at any moment (the page
    /// cache belongs to the kernel), but a machine crash can lose what was
    /// written in the last interval. Removes the disk's fsync latency from
    /// every response, and most of its cost.
    Write,
}

impl SpoolConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SpoolConfig {
            dir: dir.into(),
            max_pending_bytes: 64 << 20,
            batch_records: 512,
            ship_records: 32,
            flush_interval: Duration::from_millis(200),
            ship_delay: Duration::from_millis(50),
            compact_after_bytes: 4 << 20,
            ack_after: AckAfter::Fsync,
            sync_interval: Duration::from_millis(10),
        }
    }
}

/// Counters shared by the writer, the flusher and readers of health/metrics.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Logical position just past the last record written (see `writer`).
    written: AtomicU64,
    /// Logical position up to which records are in the ledger.
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
    file: Arc<writer::SpoolFile>,
    config: Arc<SpoolConfig>,
    /// One shipper at a time (the flusher, or `flush_now`).
    shipping: Arc<tokio::sync::Mutex<()>>,
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
    /// run left unshipped, and start the sync thread and the flusher task.
    pub fn open(config: SpoolConfig, sink: Arc<dyn LedgerSink>) -> Result<Spool, SpoolError> {
        let shared = Arc::new(Shared::default());
        // Healthy until a submission says otherwise.
        shared.sink_healthy.store(true, Ordering::Release);
        let file = Arc::new(writer::SpoolFile::open(&config, shared.clone())?);
        let spool = Spool {
            file,
            config: Arc::new(config),
            shipping: Arc::default(),
        };
        tokio::spawn(flush_loop(
            Arc::downgrade(&spool.file),
            shared,
            spool.config.clone(),
            spool.shipping.clone(),
            sink,
        ));
        Ok(spool)
    }

    /// Whether an append could be accepted now; the proxy checks this before
    /// it forwards anything, so a full spool denies up front.
    pub fn check_room(&self) -> Result<(), SpoolError> {
        if self.file.shared().sync_failed.load(Ordering::Acquire) {
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

    /// Append one record; returns once it is as durable as
    /// [`SpoolConfig::ack_after`] asks.
    pub async fn append(&self, record: Vec<u8>) -> Result<(), SpoolError> {
        self.check_room()?;
        // The write wakes the flusher when it should (see `gather`).
        self.file.append(&record).await
    }

    pub fn status(&self) -> SpoolStatus {
        let written = self.file.shared().written.load(Ordering::Acquire);
        let flushed = self.file.shared().flushed.load(Ordering::Acquire);
        SpoolStatus {
            pending_bytes: written.saturating_sub(flushed),
            pending_records: self.file.shared().pending_records.load(Ordering::Acquire),
            shipped_records: self.file.shared().shipped_records.load(Ordering::Acquire),
            sink_healthy: self.file.shared().sink_healthy.load(Ordering::Acquire),
        }
    }

    /// Ship everything written so far (used on shutdown and in tests).
    pub async fn flush_now(&self, sink: &dyn LedgerSink) -> Result<(), String> {
        // Only durable records ship: let everything written become so. After
        // a failed fsync nothing more will, and what is left stays in the
        // file for the next start instead of being asked for in a loop.
        let written = self.file.shared().written.load(Ordering::Acquire);
        let _ = self.file.durable_past(written).await;
        while self.status().pending_records > 0 {
            let _one_shipper = self.shipping.lock().await;
            if ship_one_batch(&self.file, &self.config, sink).await? == 0 {
                break;
            }
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.config.dir
    }
}

/// Ship one batch of durable records; returns how many were shipped. The
/// file work runs on a blocking thread (a truncation includes fsyncs).
async fn ship_one_batch(
    file: &Arc<writer::SpoolFile>,
    config: &SpoolConfig,
    sink: &dyn LedgerSink,
) -> Result<usize, String> {
    let reader = file.clone();
    let max = config.batch_records;
    let (records, end) = tokio::task::spawn_blocking(move || reader.read_batch(max))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    if records.is_empty() {
        return Ok(0);
    }
    let result = sink.submit(&records).await;
    file.shared()
        .sink_healthy
        .store(result.is_ok(), Ordering::Release);
    result?;
    let count = records.len();
    let marker = file.clone();
    tokio::task::spawn_blocking(move || marker.mark_shipped(end, count as u64))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok(count)
}

/// Ships batches until every [`Spool`] handle is gone. It holds the file
/// only weakly between batches, so dropping the last handle stops the sync
/// thread and this task.
async fn flush_loop(
    file: std::sync::Weak<writer::SpoolFile>,
    shared: Arc<Shared>,
    config: Arc<SpoolConfig>,
    shipping: Arc<tokio::sync::Mutex<()>>,
    sink: Arc<dyn LedgerSink>,
) {
    loop {
        // Let a fuller batch gather rather than sign and store a few events
        // at a time.
        let gathering = tokio::time::Instant::now();
        while let Some(pause) = gather::gather_for(
            shared.pending_records.load(Ordering::Acquire),
            gathering.elapsed(),
            &config,
        ) {
            let _ = tokio::time::timeout(pause, shared.notify.notified()).await;
        }
        let Some(strong) = file.upgrade() else { return };
        // Only durable records ship: let the ones counted above become
        // durable first (at once with `AckAfter::Fsync`, within one sync
        // interval with `AckAfter::Write`), so that a batch is not cut short
        // by a record still in its fsync.
        // Without a sync thread (stopped) nothing more becomes durable, and
        // shipping reads only durable records either way.
        let _ = strong
            .durable_past(shared.written.load(Ordering::Acquire))
            .await;
        let shipped = {
            let _one_shipper = shipping.lock().await;
            ship_one_batch(&strong, &config, sink.as_ref()).await
        };
        drop(strong);
        match shipped {
            Ok(n) if n > 0 => continue,
            Ok(_) => shared.sink_healthy.store(true, Ordering::Release),
            Err(e) => {
                tracing::warn!(error = %e, "could not ship spooled events to the ledger; will retry")
            }
        }
        let _ = tokio::time::timeout(config.flush_interval, shared.notify.notified()).await;
    }
}
