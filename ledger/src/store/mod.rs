//! Where the log lives: one trait, a Postgres store and a SQLite store.
//!
//! Stores do I/O only. Deciding indexes and nodes is [`crate::sequencer`],
//! checking batches is [`crate::batch`], and judging integrity is
//! [`crate::verify`], which reads through this trait and trusts nothing it
//! reads. [`Ledger`] opens either store from a URL so callers need not care.

mod pgcopy;
mod pghashtiles;
mod pgrowchecks;
mod pgtiles;
mod pgupkeep;
mod postgres;
mod shared_reads;
mod shown_url;
mod spare;
mod sqlite;

use std::collections::HashMap;
use std::future::Future;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::batch::{Batch, BatchError};
use crate::hash::{Hash, hash_from_slice};
use crate::hashtile::TileKey;
use crate::keys::{KeyPair, PublicKey};
use crate::tree::NodeKey;

pub use postgres::PgStore;
pub use shown_url::shown_url;
pub use sqlite::SqliteStore;

/// Storage failures. Callers must treat every one as "not recorded".
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the database did not accept a connection within {0:?}")]
    NoAnswer(std::time::Duration),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("batch refused: {0}")]
    Batch(#[from] BatchError),
    #[error("unsupported database URL {0:?} (expected postgres://... or sqlite:...)")]
    UnsupportedUrl(String),
    #[error("the stored log is inconsistent, refusing to extend it: {0}")]
    Inconsistent(String),
    #[error("stored key is unreadable: {0}")]
    BadKey(String),
}

/// One log entry as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryRecord {
    pub index: u64,
    pub event_id: Uuid,
    /// The exact canonical event bytes that were hashed.
    pub leaf: Vec<u8>,
    pub batch_root: Vec<u8>,
    pub batch_pos: u32,
    /// The leaf hash the tree recorded for this index when it was sequenced
    /// (level-0 node), where the read provides it; lets the verifier name the
    /// exact index of swapped or rewritten entries.
    pub recorded_hash: Option<Vec<u8>>,
}

/// Data tiles read in one go ([`crate::tile`]); their bytes share one buffer.
#[derive(Clone, Debug, Default)]
pub struct TileChunk {
    pub buf: Vec<u8>,
    pub tiles: Vec<TileSlot>,
}

/// Where one tile's bytes, and the stored tree node over it, sit in a [`TileChunk`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TileSlot {
    pub tile: u64,
    /// How `data` holds the tile ([`crate::tile::Packing`]).
    pub packing: i16,
    /// The tile as stored.
    pub data: std::ops::Range<usize>,
    pub recorded_root: Option<std::ops::Range<usize>>,
}

impl TileChunk {
    /// The tiles as the verifier takes them.
    pub fn inputs(&self) -> Vec<crate::verify::TileInput<'_>> {
        self.tiles
            .iter()
            .map(|t| crate::verify::TileInput {
                tile: t.tile,
                data: &self.buf[t.data.clone()],
                recorded_root: t.recorded_root.clone().map(|r| &self.buf[r]),
                packing: t.packing,
            })
            .collect()
    }
}

/// The entry rows of a range of tiles, each as the verify record the store
/// derives from it (`idx || event_id || batch_root || batch_pos ||
/// leaf hash`, docs/ledger.md section 7), so the verifier can compare the
/// rows with the tiles it has checked without reading every row's bytes.
#[derive(Clone, Debug)]
pub enum RowChecks {
    Records(RowCheckChunk),
    /// The store cannot vouch that the records are derived from the rows (its
    /// schema was altered); the verifier reads the rows in full instead.
    Unavailable(String),
}

/// Verify records read in one go, in index order; their bytes share one buffer.
#[derive(Clone, Debug, Default)]
pub struct RowCheckChunk {
    pub buf: Vec<u8>,
    pub rows: Vec<RowCheckSlot>,
}

/// One row's index and where its verify record sits in a [`RowCheckChunk`]
/// (`None` if the record is NULL).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowCheckSlot {
    pub index: u64,
    pub record: Option<std::ops::Range<usize>>,
}

impl RowCheckChunk {
    /// The records of entries `[from, to)`: `(index, record)` in index order,
    /// an index twice if two rows claim it.
    pub fn between(&self, from: u64, to: u64) -> Vec<(u64, Option<&[u8]>)> {
        let lo = self.rows.partition_point(|r| r.index < from);
        let hi = self.rows.partition_point(|r| r.index < to);
        self.rows[lo..hi]
            .iter()
            .map(|r| (r.index, r.record.clone().map(|range| &self.buf[range])))
            .collect()
    }
}

/// Hash tiles and single nodes read together for a proof ([`crate::hashtile`]).
#[derive(Clone, Debug, Default)]
pub struct HashTileRead {
    /// Stored bytes of each tile found (not yet checked for length).
    pub tiles: HashMap<TileKey, Vec<u8>>,
    pub nodes: HashMap<NodeKey, Hash>,
}

/// One submitted batch as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchRecord {
    pub root: Vec<u8>,
    pub key_id: Vec<u8>,
    pub signature: Vec<u8>,
    /// The batch's leaf hashes, 32 bytes each, in batch order.
    pub leaf_hashes: Vec<u8>,
}

/// One signed checkpoint as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointRecord {
    pub size: u64,
    pub note: String,
}

/// What a submission did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubmitOutcome {
    /// Events newly queued for sequencing.
    pub accepted: usize,
    /// Events already queued or logged (resubmissions are harmless).
    pub duplicates: usize,
}

/// What one sequencing step did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SequenceOutcome {
    pub appended: u64,
    pub size: u64,
    pub root: Hash,
    /// The checkpoint note signed for the new size (`None` when nothing was appended).
    pub checkpoint: Option<String>,
}

impl SequenceOutcome {
    /// A step that found nothing new to append: no checkpoint signed.
    pub fn nothing_appended(size: u64, root: Hash) -> Self {
        SequenceOutcome {
            appended: 0,
            size,
            root,
            checkpoint: None,
        }
    }
}

/// The tree's right edge at `size` from the stored nodes `found` (read for
/// `frontier_keys(size)`); a damaged or incomplete node table is an error.
pub(crate) fn frontier_from(
    size: u64,
    found: &HashMap<NodeKey, Hash>,
) -> Result<crate::tree::Frontier, StoreError> {
    let hashes = crate::tree::frontier_keys(size)
        .iter()
        .map(|k| found.get(k).copied())
        .collect::<Option<Vec<Hash>>>()
        .ok_or_else(|| {
            StoreError::Inconsistent(format!("tree nodes for size {size} are missing"))
        })?;
    crate::tree::Frontier::from_hashes(size, &hashes)
        .ok_or_else(|| StoreError::Inconsistent("frontier has the wrong shape".into()))
}

/// A node row as read back from either store: `None` for a hash of the
/// wrong length, which the callers treat as a missing node.
pub(crate) fn node_from_row(level: i64, idx: i64, hash: &[u8]) -> Option<(NodeKey, Hash)> {
    let key = NodeKey {
        level: level as u8,
        index: idx as u64,
    };
    hash_from_slice(hash).map(|h| (key, h))
}

/// A count or index as the `BIGINT` the stores keep it in (saturating; no
/// log comes near 2^63 entries).
pub(crate) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A summary of the log for `caracal merkle status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub entries: u64,
    pub pending: u64,
    pub latest_checkpoint: Option<CheckpointRecord>,
    pub log_keys: Vec<String>,
    pub submitters: Vec<String>,
}

/// The operations every store provides. Writes are idempotent where they can
/// be retried; reads return raw rows for the verifier to judge.
pub trait LedgerStore: Send + Sync {
    /// Allows a gateway key to submit batches (idempotent).
    fn register_submitter(
        &self,
        key: &PublicKey,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Checks a batch against the registered gateway keys and queues its new
    /// events. Events already queued or logged are skipped, so a gateway may
    /// resubmit after any failure.
    fn submit(
        &self,
        batch: Batch,
    ) -> impl Future<Output = Result<SubmitOutcome, StoreError>> + Send;
    /// Under the sequencer lock: gives queued events dense indexes, stores the
    /// tree nodes they complete and a checkpoint signed by `key` (whose name is
    /// the log origin). Appends at most [`crate::sequencer::MAX_EVENTS_PER_STEP`].
    fn sequence_pending(
        &self,
        key: &KeyPair,
    ) -> impl Future<Output = Result<SequenceOutcome, StoreError>> + Send;
    fn status(&self) -> impl Future<Output = Result<Status, StoreError>> + Send;
    fn submitter_keys(&self) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
    fn log_keys(&self) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
    /// Every checkpoint, smallest size first.
    fn checkpoints(&self)
    -> impl Future<Output = Result<Vec<CheckpointRecord>, StoreError>> + Send;
    fn batches(&self) -> impl Future<Output = Result<Vec<BatchRecord>, StoreError>> + Send;
    /// Entries with `from <= index < to`, in index order (gaps are not filled in).
    fn entries(
        &self,
        from: u64,
        to: u64,
    ) -> impl Future<Output = Result<Vec<EntryRecord>, StoreError>> + Send;
    /// Entries whose indexed time and agent match, in index order.
    fn entries_matching(
        &self,
        agent: Option<&str>,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> impl Future<Output = Result<Vec<EntryRecord>, StoreError>> + Send;
    /// One past the highest stored index (the size the entries claim).
    fn entry_bound(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// The lowest stored index at or after `from`, if any: how a reader
    /// steps over a gap in one lookup instead of range by empty range.
    fn first_index_from(
        &self,
        from: u64,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;
    fn entry_by_event(
        &self,
        id: Uuid,
    ) -> impl Future<Output = Result<Option<EntryRecord>, StoreError>> + Send;
    /// Lowest and one-past-highest index of entries with time in `[start, end)`.
    fn index_range_for_time(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<(u64, u64)>, StoreError>> + Send;
    /// Stored tree nodes among `keys` (missing ones are simply absent).
    fn nodes(
        &self,
        keys: &[NodeKey],
    ) -> impl Future<Output = Result<HashMap<NodeKey, Hash>, StoreError>> + Send;
    /// Whether this store writes hash tiles ([`crate::hashtile`]). Proofs
    /// from a store that does not read every node on its own.
    fn keeps_hash_tiles(&self) -> bool {
        false
    }
    /// Stored hash tiles among `tiles` and stored nodes among `nodes`, read
    /// together (missing ones are simply absent).
    fn tiles_and_nodes(
        &self,
        tiles: &[TileKey],
        nodes: &[NodeKey],
    ) -> impl Future<Output = Result<HashTileRead, StoreError>> + Send {
        let _ = tiles;
        async move {
            Ok(HashTileRead {
                tiles: HashMap::new(),
                nodes: self.nodes(nodes).await?,
            })
        }
    }
    /// Whether this store writes data tiles ([`crate::tile`]). The verifier
    /// reads a store that does not row by row.
    fn keeps_tiles(&self) -> bool {
        false
    }
    /// Stored data tiles with `from <= tile < to`, in order, each with the
    /// stored level-8 tree node over it (gaps are not filled in).
    fn tiles(
        &self,
        from: u64,
        to: u64,
    ) -> impl Future<Output = Result<TileChunk, StoreError>> + Send {
        let _ = (from, to);
        async { Ok(TileChunk::default()) }
    }
    /// The entry rows of tiles `[from, to)` as verify records
    /// ([`RowChecks`]), or why the store cannot vouch for them.
    fn row_checks(
        &self,
        from: u64,
        to: u64,
    ) -> impl Future<Output = Result<RowChecks, StoreError>> + Send {
        let _ = (from, to);
        async {
            Ok(RowChecks::Unavailable(
                "this store keeps no verify records".into(),
            ))
        }
    }
    /// Hands back the buffer of a [`TileChunk`] or [`RowCheckChunk`] the
    /// caller is done with, for the store to read into again.
    fn recycle(&self, buf: Vec<u8>) {
        let _ = buf;
    }
}

/// A store opened from a URL: `postgres://...` / `postgresql://...` or `sqlite:...`.
#[derive(Clone, Debug)]
pub enum Ledger {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

impl Ledger {
    /// Connects and runs the ledger migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres(PgStore::open(url).await?))
        } else if url.starts_with("sqlite:") {
            Ok(Self::Sqlite(SqliteStore::open(url).await?))
        } else {
            Err(StoreError::UnsupportedUrl(url.to_string()))
        }
    }

    /// Whether any submitted event still waits for a log index: one read,
    /// without the sequencer's write lock, for a caller that polls.
    pub async fn has_pending(&self) -> Result<bool, StoreError> {
        const SQL: &str = "SELECT EXISTS (SELECT 1 FROM ledger_pending)";
        Ok(match self {
            Self::Sqlite(s) => sqlx::query_scalar(SQL).fetch_one(s.pool()).await?,
            Self::Postgres(s) => sqlx::query_scalar(SQL).fetch_one(s.pool()).await?,
        })
    }

    /// Submits and sequences in one go (the in-process `caracal dev` mode).
    /// SQLite writes the batch's new events straight into the log
    /// ([`SqliteStore::submit_and_sequence`]); Postgres queues, then runs one
    /// sequencing step.
    pub async fn submit_and_sequence(
        &self,
        batch: Batch,
        key: &KeyPair,
    ) -> Result<SequenceOutcome, StoreError> {
        match self {
            Self::Sqlite(s) => s.submit_and_sequence(batch, key).await,
            Self::Postgres(s) => {
                s.submit(batch).await?;
                s.sequence_pending(key).await
            }
        }
    }

    /// [`Self::submit_and_sequence`] for a caller on a thread that may block
    /// (never an async worker), with `runtime` driving the connections.
    /// SQLite checks the batch on the calling thread
    /// ([`SqliteStore::submit_and_sequence_blocking`]), one hand-off to
    /// another thread less per batch.
    pub fn submit_and_sequence_blocking(
        &self,
        batch: Batch,
        key: &KeyPair,
        runtime: &tokio::runtime::Handle,
    ) -> Result<SequenceOutcome, StoreError> {
        match self {
            Self::Sqlite(s) => s.submit_and_sequence_blocking(batch, key, runtime),
            Self::Postgres(_) => runtime.block_on(self.submit_and_sequence(batch, key)),
        }
    }
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Ledger::Postgres($s) => $e,
            Ledger::Sqlite($s) => $e,
        }
    };
}

impl LedgerStore for Ledger {
    async fn register_submitter(&self, key: &PublicKey) -> Result<(), StoreError> {
        dispatch!(self, s => s.register_submitter(key).await)
    }
    async fn submit(&self, batch: Batch) -> Result<SubmitOutcome, StoreError> {
        dispatch!(self, s => s.submit(batch).await)
    }
    async fn sequence_pending(&self, key: &KeyPair) -> Result<SequenceOutcome, StoreError> {
        dispatch!(self, s => s.sequence_pending(key).await)
    }
    async fn status(&self) -> Result<Status, StoreError> {
        dispatch!(self, s => s.status().await)
    }
    async fn submitter_keys(&self) -> Result<Vec<String>, StoreError> {
        dispatch!(self, s => s.submitter_keys().await)
    }
    async fn log_keys(&self) -> Result<Vec<String>, StoreError> {
        dispatch!(self, s => s.log_keys().await)
    }
    async fn checkpoints(&self) -> Result<Vec<CheckpointRecord>, StoreError> {
        dispatch!(self, s => s.checkpoints().await)
    }
    async fn batches(&self) -> Result<Vec<BatchRecord>, StoreError> {
        dispatch!(self, s => s.batches().await)
    }
    async fn entries(&self, from: u64, to: u64) -> Result<Vec<EntryRecord>, StoreError> {
        dispatch!(self, s => s.entries(from, to).await)
    }
    async fn entries_matching(
        &self,
        agent: Option<&str>,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> Result<Vec<EntryRecord>, StoreError> {
        dispatch!(self, s => s.entries_matching(agent, since, until).await)
    }
    async fn entry_bound(&self) -> Result<u64, StoreError> {
        dispatch!(self, s => s.entry_bound().await)
    }
    async fn first_index_from(&self, from: u64) -> Result<Option<u64>, StoreError> {
        dispatch!(self, s => s.first_index_from(from).await)
    }
    async fn entry_by_event(&self, id: Uuid) -> Result<Option<EntryRecord>, StoreError> {
        dispatch!(self, s => s.entry_by_event(id).await)
    }
    async fn index_range_for_time(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Option<(u64, u64)>, StoreError> {
        dispatch!(self, s => s.index_range_for_time(start, end).await)
    }
    async fn nodes(&self, keys: &[NodeKey]) -> Result<HashMap<NodeKey, Hash>, StoreError> {
        dispatch!(self, s => s.nodes(keys).await)
    }
    fn keeps_hash_tiles(&self) -> bool {
        dispatch!(self, s => s.keeps_hash_tiles())
    }
    async fn tiles_and_nodes(
        &self,
        tiles: &[TileKey],
        nodes: &[NodeKey],
    ) -> Result<HashTileRead, StoreError> {
        dispatch!(self, s => s.tiles_and_nodes(tiles, nodes).await)
    }
    fn keeps_tiles(&self) -> bool {
        dispatch!(self, s => s.keeps_tiles())
    }
    async fn tiles(&self, from: u64, to: u64) -> Result<TileChunk, StoreError> {
        dispatch!(self, s => s.tiles(from, to).await)
    }
    async fn row_checks(&self, from: u64, to: u64) -> Result<RowChecks, StoreError> {
        dispatch!(self, s => s.row_checks(from, to).await)
    }
    fn recycle(&self, buf: Vec<u8>) {
        dispatch!(self, s => s.recycle(buf))
    }
}

/// Parses vkey strings read back from a store.
pub(crate) fn parse_vkeys(vkeys: &[String]) -> Result<Vec<PublicKey>, StoreError> {
    vkeys
        .iter()
        .map(|v| PublicKey::from_vkey(v).map_err(|e| StoreError::BadKey(e.to_string())))
        .collect()
}
