//! The SQLite store: the embedded default for `caracal dev`.
//!
//! Same tables and meaning as Postgres. The sequencer's lock is SQLite's own
//! write lock: each step's transaction starts with `BEGIN IMMEDIATE`, so no
//! other writer can slip in between reading the tree size and appending.
//! Times are stored as microseconds since the Unix epoch.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
};
use uuid::Uuid;

use super::{
    EntryRecord, LedgerStore, SequenceOutcome, StoreError, SubmitOutcome, frontier_from,
    node_from_row, parse_vkeys, to_i64,
};
use crate::batch::{Batch, CheckedBatch, CheckedEvent};
use crate::hash::{Hash, leaf_hash};
use crate::keys::{KeyPair, PublicKey};
use crate::sequencer::{AppendPlan, MAX_EVENTS_PER_STEP, PendingEvent, plan_append};
use crate::tree::{Frontier, NodeKey, frontier_keys};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// A SQLite-backed ledger.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Every write goes through this one connection (SQLite takes one
    /// writer at a time anyway), so its page cache stays current: a batch
    /// written through whichever connection was idle would first read back
    /// the pages the previous batch changed through another.
    writer: SqlitePool,
    remembered: Arc<Mutex<Remembered>>,
}

/// What [`SqliteStore::submit_and_sequence`] keeps from one batch to the
/// next, to spare a batch trips to SQLite's worker thread. Both only grow
/// (the tables are append-only), and neither is trusted blindly: the right
/// edge is used only while the log's size and latest checkpoint root are
/// the ones it gives, and a batch signed by a key missing here reads the
/// keys again.
#[derive(Debug, Default)]
struct Remembered {
    submitters: Arc<Vec<PublicKey>>,
    frontier: Option<Frontier>,
}

/// The log as a sequencing transaction finds it.
struct Head {
    size: u64,
    /// Root of the latest checkpoint (none while the log is empty).
    latest_root: Option<Vec<u8>>,
    /// Events submitted but not yet sequenced are waiting.
    queued: bool,
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn entry_from_row(row: &SqliteRow) -> Result<EntryRecord, StoreError> {
    Ok(EntryRecord {
        index: row.try_get::<i64, _>("idx")? as u64,
        event_id: row.try_get("event_id")?,
        leaf: row.try_get("leaf")?,
        batch_root: row.try_get("batch_root")?,
        batch_pos: row.try_get::<i64, _>("batch_pos")? as u32,
        recorded_hash: row.try_get("recorded_hash").ok().flatten(),
    })
}

const ENTRY_COLUMNS: &str = "idx, event_id, leaf, batch_root, batch_pos";

/// Rows written per multi-row statement. Each statement is one trip to the
/// connection's worker thread, so a batch takes a handful of trips instead
/// of several per event; 128 rows of at most 7 values stay under the 999
/// parameters even old SQLite builds allow.
const ROWS_PER_STATEMENT: usize = 128;

/// `items` in statement-sized pieces: full pieces of [`ROWS_PER_STATEMENT`],
/// then the rest in powers of two, largest first (100 rows go as 64, 32, 4).
/// The SQL text of a multi-row statement depends on its row count, and SQLite
/// parses a statement afresh for each new text; with these sizes a batch
/// reuses at most eight texts per statement (kept prepared by the connection)
/// instead of parsing one for its odd remainder every time.
fn statement_chunks<T>(items: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let size = if rest.len() >= ROWS_PER_STATEMENT {
            ROWS_PER_STATEMENT
        } else {
            1 << rest.len().ilog2()
        };
        let (piece, tail) = rest.split_at(size);
        rest = tail;
        Some(piece)
    })
}

/// Page size of a database this store creates. A batch writes mostly new
/// pages at the right edge of each table, each page costing two `pwrite`s
/// to the WAL (frame header and page) and, at a checkpoint, a read and a
/// write to copy it into the database file; 16 KiB pages move the same
/// bytes in fewer calls
/// (docs/benchmarks.md, eleventh session). SQLite fixes the size when it
/// creates the file, so a database made with 4 KiB pages keeps them.
///
/// `temp_store = memory` beside it keeps a statement's journal in memory:
/// a large batch's multi-row inserts otherwise spill it to a temporary
/// file, one more `pwrite` per page they touch.
const NEW_DATABASE_PAGE_SIZE: u32 = 16 * 1024;

/// Row counts of the append path's padded statements (see [`padded_chunks`]).
const PADDED_SIZES: [usize; 3] = [8, 32, ROWS_PER_STATEMENT];

/// `items` in pieces of at most [`ROWS_PER_STATEMENT`], each with the row
/// count of the statement that carries it: the smallest of [`PADDED_SIZES`]
/// that holds it. The rows past a piece are bound as NULLs and skipped by the
/// statement, so a piece of any length costs one trip to SQLite's worker
/// thread, through one of three prepared texts per statement. On the append
/// path a trip costs far more than binding and skipping empty rows
/// (docs/benchmarks.md, tenth session); [`statement_chunks`] would send a
/// 63-row piece as six statements.
fn padded_chunks<T>(items: &[T]) -> impl Iterator<Item = (&[T], usize)> {
    items.chunks(ROWS_PER_STATEMENT).map(|piece| {
        let rows = PADDED_SIZES
            .into_iter()
            .find(|&size| size >= piece.len())
            .unwrap_or(ROWS_PER_STATEMENT);
        (piece, rows)
    })
}

/// Binds `count` NULLs: the empty rows of a padded statement.
fn bind_nulls(mut query: SqliteQuery<'_>, count: usize) -> SqliteQuery<'_> {
    for _ in 0..count {
        query = query.bind(None::<i64>);
    }
    query
}

/// `(?, ?), (?, ?)` for `rows` rows of `columns` values.
fn placeholders(rows: usize, columns: usize) -> String {
    let row = format!("({})", vec!["?"; columns].join(", "));
    vec![row; rows].join(", ")
}

impl SqliteStore {
    /// Opens (creating if needed) the database and applies `migrations/sqlite`.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .page_size(NEW_DATABASE_PAGE_SIZE)
            .pragma("temp_store", "memory")
            .busy_timeout(Duration::from_secs(10));
        // A connection to a local file cannot go stale; the default ping
        // before each use would cost a trip to its worker thread.
        let pool_options = || SqlitePoolOptions::new().test_before_acquire(false);
        // An in-memory database exists per connection, so it gets exactly one.
        let in_memory = Self::is_in_memory(url);
        let pool = pool_options()
            .max_connections(if in_memory { 1 } else { 4 })
            .connect_with(options.clone())
            .await?;
        let writer = if in_memory {
            pool.clone()
        } else {
            pool_options()
                .max_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(options)
                .await?
        };
        MIGRATOR.run(&writer).await?;
        Ok(Self {
            pool,
            writer,
            remembered: Arc::default(),
        })
    }

    /// Whether `url` names an in-memory database, which exists per
    /// connection: a second connection (or store) opened with it sees
    /// another, empty database.
    pub fn is_in_memory(url: &str) -> bool {
        url.contains(":memory:") || url.contains("mode=memory")
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, Remembered> {
        self.remembered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The registered submitter keys, read again only when `batch` names a
    /// key this process has not seen registered.
    async fn submitters_for(&self, batch: &Batch) -> Result<Arc<Vec<PublicKey>>, StoreError> {
        let known = self.remembered().submitters.clone();
        if known.iter().any(|k| k.key_id() == batch.key_id) {
            return Ok(known);
        }
        let fresh = Arc::new(parse_vkeys(&self.submitter_keys().await?)?);
        self.remembered().submitters = fresh.clone();
        Ok(fresh)
    }

    /// The right edge of the log `head` describes: the one kept from this
    /// process's last append when it still describes it, else read.
    async fn frontier_at(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
        head: &Head,
    ) -> Result<Frontier, StoreError> {
        if head.size == 0 {
            return Ok(Frontier::new());
        }
        let kept = self.remembered().frontier.clone();
        if let Some(kept) = kept
            .filter(|f| f.size() == head.size && head.latest_root.as_deref() == Some(&f.root()[..]))
        {
            return Ok(kept);
        }
        let found = fetch_nodes(tx, &frontier_keys(head.size)).await?;
        frontier_from(head.size, &found)
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Checks a batch and appends its new events to the log in one
    /// transaction, with a checkpoint signed by `key`: the path for one
    /// process that is both gateway and sequencer (`caracal dev`). Each event
    /// is written once, straight into the log, instead of being queued by
    /// [`LedgerStore::submit`] and moved by [`LedgerStore::sequence_pending`].
    /// Events already logged are skipped, so resubmitting is harmless; events
    /// still queued from earlier are sequenced first, keeping arrival order.
    pub async fn submit_and_sequence(
        &self,
        batch: Batch,
        key: &KeyPair,
    ) -> Result<SequenceOutcome, StoreError> {
        let submitters = self.submitters_for(&batch).await?;
        // Hashing and decoding a batch takes a while; keep it off the async
        // workers that serve requests.
        let checked = tokio::task::spawn_blocking(move || batch.check(&submitters))
            .await
            .map_err(|e| StoreError::Inconsistent(format!("batch check did not finish: {e}")))??;
        self.sequence_checked(checked, key).await
    }

    /// [`Self::submit_and_sequence`] for a caller on a thread that may block
    /// (a blocking-pool thread or one of its own, never an async worker),
    /// driving `runtime`'s connections from it: the batch is checked on the
    /// calling thread instead of being handed to another, one hand-off less
    /// per batch (and the check runs at the calling thread's priority).
    pub fn submit_and_sequence_blocking(
        &self,
        batch: Batch,
        key: &KeyPair,
        runtime: &tokio::runtime::Handle,
    ) -> Result<SequenceOutcome, StoreError> {
        runtime.block_on(async {
            let submitters = self.submitters_for(&batch).await?;
            let checked = batch.check(&submitters)?;
            self.sequence_checked(checked, key).await
        })
    }

    /// Appends a checked batch's new events under a checkpoint signed by
    /// `key` (see [`Self::submit_and_sequence`]).
    async fn sequence_checked(
        &self,
        checked: CheckedBatch,
        key: &KeyPair,
    ) -> Result<SequenceOutcome, StoreError> {
        // `BEGIN IMMEDIATE` takes SQLite's write lock at once, so no other
        // writer slips in between reading the tree and appending to it.
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let head = read_head(&mut tx).await?;
        if head.queued {
            // Keep arrival order: queue behind what waits, then sequence it all.
            insert_pending(&mut tx, &checked).await?;
            tx.commit().await?;
            return self.sequence_all_pending(key).await;
        }
        let frontier = self.frontier_at(&mut tx, &head).await?;
        let root = checked.root.to_vec();
        let mut logged = HashSet::new();
        for (chunk, rows) in padded_chunks(&checked.events) {
            let sql = format!(
                "SELECT event_id FROM ledger_entries WHERE event_id IN ({})",
                vec!["?"; rows].join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for e in chunk {
                query = query.bind(e.event.id);
            }
            for row in bind_nulls(query, rows - chunk.len())
                .fetch_all(&mut *tx)
                .await?
            {
                logged.insert(row.try_get::<Uuid, _>(0)?);
            }
        }
        let new: Vec<(usize, &CheckedEvent)> = checked
            .events
            .iter()
            .enumerate()
            .filter(|(_, e)| !logged.contains(&e.event.id))
            .collect();
        if new.is_empty() {
            insert_batch(&mut tx, &checked).await?;
            tx.commit().await?;
            return Ok(SequenceOutcome::nothing_appended(
                head.size,
                frontier.root(),
            ));
        }
        let pending: Vec<PendingEvent> = new
            .iter()
            .map(|(_, e)| PendingEvent {
                event_id: e.event.id,
                leaf_hash: e.leaf_hash,
            })
            .collect();
        let plan = plan_append(frontier, &pending, key);
        for ((rows, padded), (entries, _)) in padded_chunks(&new).zip(padded_chunks(&plan.entries))
        {
            let sql = format!(
                "INSERT OR FAIL INTO ledger_entries (idx, event_id, leaf, batch_root, batch_pos, event_time, agent)
                 SELECT column1, column2, column3, column4, column5, column6, column7
                 FROM (VALUES {}) WHERE column1 IS NOT NULL",
                placeholders(padded, 7)
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for ((pos, e), entry) in rows.iter().zip(entries) {
                query = query
                    .bind(to_i64(entry.index))
                    .bind(e.event.id)
                    .bind(&e.bytes)
                    .bind(&root)
                    .bind(*pos as i64)
                    .bind(micros(e.event.time))
                    .bind(e.event.agent.to_string());
            }
            bind_nulls(query, (padded - rows.len()) * 7)
                .execute(&mut *tx)
                .await?;
        }
        write_nodes_and_checkpoint(&mut tx, &plan, key, Some(&checked)).await?;
        tx.commit().await?;
        self.remembered().frontier = Some(plan.frontier);
        Ok(SequenceOutcome {
            appended: plan.entries.len() as u64,
            size: plan.checkpoint.size,
            root: plan.checkpoint.root,
            checkpoint: Some(plan.note),
        })
    }

    /// Sequence until nothing is queued; the outcome of the last step, with
    /// every step's appends counted.
    async fn sequence_all_pending(&self, key: &KeyPair) -> Result<SequenceOutcome, StoreError> {
        let mut appended = 0;
        loop {
            let step = self.sequence_pending(key).await?;
            appended += step.appended;
            if step.appended < MAX_EVENTS_PER_STEP as u64 {
                return Ok(SequenceOutcome { appended, ..step });
            }
        }
    }
}

async fn fetch_nodes(
    conn: &mut sqlx::SqliteConnection,
    keys: &[NodeKey],
) -> Result<HashMap<NodeKey, Hash>, StoreError> {
    let mut out = HashMap::with_capacity(keys.len());
    // One statement per chunk of keys, not one per key: every statement is
    // a trip to the connection's worker thread, and a frontier alone has up
    // to one key per bit of the log's size.
    for chunk in statement_chunks(keys) {
        let sql = format!(
            "SELECT n.level, n.idx, n.hash FROM (VALUES {}) AS k
             JOIN ledger_nodes n ON n.level = k.column1 AND n.idx = k.column2",
            placeholders(chunk.len(), 2)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for key in chunk {
            query = query.bind(i64::from(key.level)).bind(to_i64(key.index));
        }
        for row in query.fetch_all(&mut *conn).await? {
            let hash: Vec<u8> = row.try_get("hash")?;
            out.extend(node_from_row(
                row.try_get("level")?,
                row.try_get("idx")?,
                &hash,
            ));
        }
    }
    Ok(out)
}

/// The log's size, latest checkpoint root and whether events are queued, in
/// one statement; refuses a log whose latest checkpoint does not cover
/// exactly its entries.
async fn read_head(tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>) -> Result<Head, StoreError> {
    let (size, signed, latest_root, queued): (i64, Option<i64>, Option<Vec<u8>>, bool) =
        sqlx::query_as(
            "SELECT (SELECT COALESCE(MAX(idx) + 1, 0) FROM ledger_entries),
                    (SELECT MAX(size) FROM ledger_checkpoints),
                    (SELECT root FROM ledger_checkpoints ORDER BY size DESC LIMIT 1),
                    EXISTS (SELECT 1 FROM ledger_pending)",
        )
        .fetch_one(&mut **tx)
        .await?;
    let size = size as u64;
    if signed.map_or(0, |s| s as u64) != size {
        return Err(StoreError::Inconsistent(format!(
            "{size} entries stored but the latest checkpoint has size {}",
            signed.unwrap_or(0)
        )));
    }
    Ok(Head {
        size,
        latest_root,
        queued,
    })
}

/// Statements shared by the sequencing paths, with plain `?` parameters so
/// they can share a statement list (sqlx binds a statement's unused numbers
/// as if they were plain ones, so numbered parameters shared across
/// statements can shift past the end and be left unbound).
macro_rules! insert_batch_sql {
    () => {
        "INSERT OR IGNORE INTO ledger_batches (root, key_id, signature, leaf_hashes)
         VALUES (?, ?, ?, ?);"
    };
}
macro_rules! insert_checkpoint_sql {
    () => {
        "INSERT OR IGNORE INTO ledger_log_keys (key_id, vkey) VALUES (?, ?);
         INSERT INTO ledger_checkpoints (size, root, key_id, note) VALUES (?, ?, ?, ?);"
    };
}

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

/// Binds [`insert_batch_sql`]'s parameters.
fn bind_batch<'q>(query: SqliteQuery<'q>, checked: &'q CheckedBatch) -> SqliteQuery<'q> {
    query
        .bind(checked.root.to_vec())
        .bind(checked.key_id.to_vec())
        .bind(&checked.signature)
        .bind(checked.leaf_hashes_blob())
}

/// The batch record (kept once, whoever resubmits it).
async fn insert_batch(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    checked: &CheckedBatch,
) -> Result<(), StoreError> {
    bind_batch(sqlx::query(insert_batch_sql!()), checked)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Queues a checked batch's events that are not logged yet (with the batch
/// record); how many were queued.
async fn insert_pending(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    checked: &CheckedBatch,
) -> Result<usize, StoreError> {
    insert_batch(tx, checked).await?;
    let mut accepted = 0;
    let root = checked.root.to_vec();
    let rows: Vec<_> = checked.events.iter().enumerate().collect();
    for chunk in statement_chunks(&rows) {
        let sql = format!(
            "INSERT OR IGNORE INTO ledger_pending (event_id, batch_root, batch_pos, leaf, event_time, agent)
             SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6
             FROM (VALUES {}) AS v
             WHERE NOT EXISTS (SELECT 1 FROM ledger_entries e WHERE e.event_id = v.column1)",
            placeholders(chunk.len(), 6)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (pos, e) in chunk {
            query = query
                .bind(e.event.id)
                .bind(root.clone())
                .bind(*pos as i64)
                .bind(&e.bytes)
                .bind(micros(e.event.time))
                .bind(e.event.agent.to_string());
        }
        accepted += query.execute(&mut **tx).await?.rows_affected() as usize;
    }
    Ok(accepted)
}

/// The tree nodes of a planned append.
async fn insert_nodes(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    plan: &AppendPlan,
) -> Result<(), StoreError> {
    for (chunk, rows) in padded_chunks(&plan.nodes) {
        let sql = format!(
            "INSERT OR FAIL INTO ledger_nodes (level, idx, hash)
             SELECT column1, column2, column3 FROM (VALUES {}) WHERE column1 IS NOT NULL",
            placeholders(rows, 3)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (k, h) in chunk {
            query = query
                .bind(i64::from(k.level))
                .bind(to_i64(k.index))
                .bind(h.to_vec());
        }
        bind_nulls(query, (rows - chunk.len()) * 3)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// The tree nodes of a planned append, then in one statement list the log
/// key, the signed checkpoint and, for a batch appended straight into the
/// log, the batch record.
async fn write_nodes_and_checkpoint(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    plan: &AppendPlan,
    key: &KeyPair,
    batch: Option<&CheckedBatch>,
) -> Result<(), StoreError> {
    insert_nodes(tx, plan).await?;
    let sql = match batch {
        Some(_) => concat!(insert_checkpoint_sql!(), insert_batch_sql!()),
        None => insert_checkpoint_sql!(),
    };
    let log_key_id = key.key_id().to_vec();
    let mut query = sqlx::query(sql)
        .bind(&log_key_id)
        .bind(key.public().to_vkey())
        .bind(to_i64(plan.checkpoint.size))
        .bind(plan.checkpoint.root.to_vec())
        .bind(&log_key_id)
        .bind(&plan.note);
    if let Some(checked) = batch {
        query = bind_batch(query, checked);
    }
    query.execute(&mut **tx).await?;
    Ok(())
}

impl LedgerStore for SqliteStore {
    async fn register_submitter(&self, key: &PublicKey) -> Result<(), StoreError> {
        sqlx::query("INSERT OR IGNORE INTO ledger_submitters (key_id, vkey) VALUES (?1, ?2)")
            .bind(key.key_id().to_vec())
            .bind(key.to_vkey())
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(events = batch.events.len()))]
    async fn submit(&self, batch: Batch) -> Result<SubmitOutcome, StoreError> {
        let submitters = self.submitters_for(&batch).await?;
        let checked = batch.check(&submitters)?;
        let mut tx = self.writer.begin().await?;
        let accepted = insert_pending(&mut tx, &checked).await?;
        tx.commit().await?;
        Ok(SubmitOutcome {
            accepted,
            duplicates: checked.events.len() - accepted,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn sequence_pending(&self, key: &KeyPair) -> Result<SequenceOutcome, StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "DELETE FROM ledger_pending WHERE EXISTS
             (SELECT 1 FROM ledger_entries e WHERE e.event_id = ledger_pending.event_id)",
        )
        .execute(&mut *tx)
        .await?;
        let head = read_head(&mut tx).await?;
        let (size, frontier) = (head.size, self.frontier_at(&mut tx, &head).await?);
        let rows =
            sqlx::query("SELECT event_id, leaf FROM ledger_pending ORDER BY arrival LIMIT ?1")
                .bind(MAX_EVENTS_PER_STEP as i64)
                .fetch_all(&mut *tx)
                .await?;
        if rows.is_empty() {
            return Ok(SequenceOutcome::nothing_appended(size, frontier.root()));
        }
        let mut pending = Vec::with_capacity(rows.len());
        for r in &rows {
            let leaf: Vec<u8> = r.try_get("leaf")?;
            pending.push(PendingEvent {
                event_id: r.try_get("event_id")?,
                leaf_hash: leaf_hash(&leaf),
            });
        }
        let plan = plan_append(frontier, &pending, key);
        let appended = plan.entries.len() as u64;
        for chunk in statement_chunks(&plan.entries) {
            let sql = format!(
                "INSERT OR FAIL INTO ledger_entries (idx, event_id, leaf, batch_root, batch_pos, event_time, agent)
                 SELECT v.column1, p.event_id, p.leaf, p.batch_root, p.batch_pos, p.event_time, p.agent
                 FROM (VALUES {}) AS v JOIN ledger_pending p ON p.event_id = v.column2",
                placeholders(chunk.len(), 2)
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for e in chunk {
                query = query.bind(to_i64(e.index)).bind(e.event_id);
            }
            let moved = query.execute(&mut *tx).await?.rows_affected();
            if moved != chunk.len() as u64 {
                return Err(StoreError::Inconsistent(format!(
                    "{} of {} pending events vanished while sequencing",
                    chunk.len() as u64 - moved.min(chunk.len() as u64),
                    chunk.len()
                )));
            }
            let sql = format!(
                "DELETE FROM ledger_pending WHERE event_id IN (SELECT column1 FROM (VALUES {}))",
                placeholders(chunk.len(), 1)
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for e in chunk {
                query = query.bind(e.event_id);
            }
            query.execute(&mut *tx).await?;
        }
        write_nodes_and_checkpoint(&mut tx, &plan, key, None).await?;
        tx.commit().await?;
        self.remembered().frontier = Some(plan.frontier);
        Ok(SequenceOutcome {
            appended,
            size: plan.checkpoint.size,
            root: plan.checkpoint.root,
            checkpoint: Some(plan.note),
        })
    }

    super::shared_reads::shared_reads!();

    async fn entries(&self, from: u64, to: u64) -> Result<Vec<EntryRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT e.idx, e.event_id, e.leaf, e.batch_root, e.batch_pos, n.hash AS recorded_hash
             FROM ledger_entries e LEFT JOIN ledger_nodes n ON n.level = 0 AND n.idx = e.idx
             WHERE e.idx >= ?1 AND e.idx < ?2 ORDER BY e.idx",
        )
        .bind(to_i64(from))
        .bind(to_i64(to))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(entry_from_row).collect()
    }

    async fn entries_matching(
        &self,
        agent: Option<&str>,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> Result<Vec<EntryRecord>, StoreError> {
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM ledger_entries
             WHERE (?1 IS NULL OR agent = ?1) AND (?2 IS NULL OR event_time >= ?2)
               AND (?3 IS NULL OR event_time < ?3)
             ORDER BY idx"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(agent)
            .bind(since.map(micros))
            .bind(until.map(micros))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(entry_from_row).collect()
    }

    async fn entry_bound(&self) -> Result<u64, StoreError> {
        let size: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(idx) + 1, 0) FROM ledger_entries")
            .fetch_one(&self.pool)
            .await?;
        Ok(size as u64)
    }

    async fn first_index_from(&self, from: u64) -> Result<Option<u64>, StoreError> {
        let Ok(from) = i64::try_from(from) else {
            return Ok(None);
        };
        let first: Option<i64> =
            sqlx::query_scalar("SELECT MIN(idx) FROM ledger_entries WHERE idx >= ?1")
                .bind(from)
                .fetch_one(&self.pool)
                .await?;
        Ok(first.map(|i| i as u64))
    }

    async fn entry_by_event(&self, id: Uuid) -> Result<Option<EntryRecord>, StoreError> {
        let sql = format!("SELECT {ENTRY_COLUMNS} FROM ledger_entries WHERE event_id = ?1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(entry_from_row).transpose()
    }

    async fn index_range_for_time(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Option<(u64, u64)>, StoreError> {
        let row = sqlx::query(
            "SELECT MIN(idx) AS lo, MAX(idx) AS hi FROM ledger_entries WHERE event_time >= ?1 AND event_time < ?2",
        )
        .bind(micros(start))
        .bind(micros(end))
        .fetch_one(&self.pool)
        .await?;
        let lo: Option<i64> = row.try_get("lo")?;
        let hi: Option<i64> = row.try_get("hi")?;
        Ok(lo.zip(hi).map(|(lo, hi)| (lo as u64, hi as u64 + 1)))
    }

    async fn nodes(&self, keys: &[NodeKey]) -> Result<HashMap<NodeKey, Hash>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        fetch_nodes(&mut conn, keys).await
    }
}

#[cfg(test)]
mod tests {
    use super::{ROWS_PER_STATEMENT, SqliteStore, padded_chunks, placeholders, statement_chunks};
    use crate::batch::BatchSigner;
    use crate::event::MeteringEvent;
    use crate::hash::{Hash, leaf_hash};
    use crate::keys::KeyPair;
    use crate::store::LedgerStore;
    use crate::tree::{Frontier, MemoryTree};

    /// A store in a fresh file with the first four of seven example events
    /// logged by `gateway` under checkpoints signed with `log_key`.
    struct Logged {
        path: std::path::PathBuf,
        store: SqliteStore,
        events: Vec<MeteringEvent>,
        gateway: BatchSigner,
        log_key: KeyPair,
    }

    async fn four_of_seven_logged() -> Logged {
        let path = std::env::temp_dir().join(format!(
            "caracal-sqlite-unit-{}.db",
            uuid::Uuid::now_v7().simple()
        ));
        let store = SqliteStore::open(&format!("sqlite:{}", path.display()))
            .await
            .unwrap();
        let events: Vec<MeteringEvent> = (0..7).map(MeteringEvent::example).collect();
        let logged = Logged::prepare(path, store, events).await;
        let first = logged.gateway.sign_events(&logged.events[..4]).unwrap();
        logged
            .store
            .submit_and_sequence(first, &logged.log_key)
            .await
            .unwrap();
        logged
    }

    async fn pragma(store: &SqliteStore, name: &'static str) -> i64 {
        let sql = match name {
            "page_size" => "PRAGMA page_size",
            "temp_store" => "PRAGMA temp_store",
            other => panic!("no query for pragma {other}"),
        };
        sqlx::query_scalar(sql)
            .fetch_one(&store.writer)
            .await
            .unwrap()
    }

    /// A new ledger gets 16 KiB pages, and a statement journal never
    /// reaches a temporary file (temp_store 2 = memory).
    #[tokio::test]
    async fn a_new_ledger_has_large_pages_and_keeps_statement_journals_in_memory() {
        let logged = four_of_seven_logged().await;
        assert_eq!(
            pragma(&logged.store, "page_size").await,
            super::NEW_DATABASE_PAGE_SIZE as i64
        );
        assert_eq!(pragma(&logged.store, "temp_store").await, 2);
        logged.remove();
    }

    /// A ledger file made with 4 KiB pages (as every ledger was before the
    /// eleventh session) opens, keeps its pages and takes new batches.
    #[tokio::test]
    async fn a_ledger_made_with_small_pages_keeps_them_and_still_appends() {
        use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
        use std::str::FromStr;
        let path = std::env::temp_dir().join(format!(
            "caracal-sqlite-small-pages-{}.db",
            uuid::Uuid::now_v7().simple()
        ));
        let url = format!("sqlite:{}", path.display());
        let made_before = sqlx::SqlitePool::connect_with(
            SqliteConnectOptions::from_str(&url)
                .unwrap()
                .create_if_missing(true)
                .page_size(4096)
                .journal_mode(SqliteJournalMode::Wal),
        )
        .await
        .unwrap();
        sqlx::query("CREATE TABLE made_before (x)")
            .execute(&made_before)
            .await
            .unwrap();
        made_before.close().await;

        let store = SqliteStore::open(&url).await.unwrap();
        assert_eq!(pragma(&store, "page_size").await, 4096);
        let events: Vec<MeteringEvent> = (0..300).map(MeteringEvent::example).collect();
        let logged = Logged::prepare(path, store, events).await;
        let batch = logged.gateway.sign_events(&logged.events).unwrap();
        let out = logged
            .store
            .submit_and_sequence(batch, &logged.log_key)
            .await
            .unwrap();
        assert_eq!((out.size, out.root), (300, logged.root_of_all()));
        logged.remove();
    }

    impl Logged {
        /// `events`, none logged yet, for `store` (in the file at `path`),
        /// whose gateway key is registered with it.
        async fn prepare(
            path: std::path::PathBuf,
            store: SqliteStore,
            events: Vec<MeteringEvent>,
        ) -> Logged {
            let gateway = BatchSigner::new(KeyPair::generate(&events[0].gateway_id).unwrap());
            let log_key = KeyPair::generate("caracal.test/unit").unwrap();
            store.register_submitter(gateway.public()).await.unwrap();
            Logged {
                path,
                store,
                events,
                gateway,
                log_key,
            }
        }

        /// The root of a tree holding every one of `events`, in order: what
        /// the log's root must be once all of them are logged.
        fn root_of_all(&self) -> Hash {
            let mut tree = MemoryTree::new();
            for e in &self.events {
                tree.push(leaf_hash(&e.encode().unwrap()));
            }
            tree.root()
        }

        /// Close the store and delete its files.
        fn remove(self) {
            drop(self.store);
            for suffix in ["", "-wal", "-shm"] {
                let mut p = self.path.clone().into_os_string();
                p.push(suffix);
                std::fs::remove_file(p).ok();
            }
        }
    }

    /// The right edge kept between batches is used only while it describes
    /// the log: one of another tree of the same size (as if the database
    /// were replaced under the process) is read again from the stored nodes.
    #[tokio::test]
    async fn a_kept_right_edge_that_does_not_describe_the_log_is_not_used() {
        let logged = four_of_seven_logged().await;

        let mut other = Frontier::new();
        for n in 100..104 {
            other.push(leaf_hash(&MeteringEvent::example(n).encode().unwrap()));
        }
        logged.store.remembered().frontier = Some(other);
        let second = logged.gateway.sign_events(&logged.events[4..]).unwrap();
        let out = logged
            .store
            .submit_and_sequence(second, &logged.log_key)
            .await
            .unwrap();

        assert_eq!((out.size, out.root), (7, logged.root_of_all()));
        logged.remove();
    }

    /// The multi-row inserts use `OR FAIL` (no statement journal), so a
    /// statement that fails part-way keeps its earlier rows until the
    /// transaction is rolled back: the whole batch must still leave nothing.
    #[tokio::test]
    async fn a_batch_whose_insert_fails_part_way_leaves_nothing_behind() {
        let logged = four_of_seven_logged().await;
        let store = &logged.store;
        // A stray leaf node where the next batch's second leaf goes: its
        // node insert fails after the rows before it were written.
        sqlx::query("INSERT INTO ledger_nodes (level, idx, hash) VALUES (0, 5, zeroblob(32))")
            .execute(store.pool())
            .await
            .unwrap();
        let second = logged.gateway.sign_events(&logged.events[4..]).unwrap();
        assert!(
            store
                .submit_and_sequence(second, &logged.log_key)
                .await
                .is_err()
        );

        let count = |sql: &'static str| {
            let pool = store.pool().clone();
            async move {
                sqlx::query_scalar::<_, i64>(sql)
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(count("SELECT count(*) FROM ledger_entries").await, 4);
        assert_eq!(
            count("SELECT count(*) FROM ledger_nodes WHERE idx >= 2 AND level = 1").await,
            0
        );
        assert_eq!(
            count("SELECT count(*) FROM ledger_nodes WHERE level = 0").await,
            5,
            "the four leaves and the stray one, not the batch's first"
        );
        assert_eq!(count("SELECT max(size) FROM ledger_checkpoints").await, 4);
        assert_eq!(count("SELECT count(*) FROM ledger_batches").await, 1);
        logged.remove();
    }

    #[test]
    fn statement_chunks_are_full_then_powers_of_two_in_order() {
        for n in 0..=3 * ROWS_PER_STATEMENT + 5 {
            let items: Vec<usize> = (0..n).collect();
            let pieces: Vec<&[usize]> = statement_chunks(&items).collect();
            assert_eq!(pieces.concat(), items, "{n} items, in order, none lost");
            let sizes: Vec<usize> = pieces.iter().map(|p| p.len()).collect();
            let full = n / ROWS_PER_STATEMENT;
            assert!(sizes[..full].iter().all(|&s| s == ROWS_PER_STATEMENT));
            let rest = &sizes[full..];
            assert!(rest.iter().all(|s| s.is_power_of_two()), "{sizes:?}");
            assert!(rest.windows(2).all(|w| w[0] > w[1]), "{sizes:?}");
            assert_eq!(rest.len() as u32, (n % ROWS_PER_STATEMENT).count_ones());
        }
    }

    #[test]
    fn padded_chunks_are_full_then_one_padded_piece() {
        // (items, want: (piece length, padded rows) in order)
        let cases: [(usize, &[(usize, usize)]); 8] = [
            (0, &[]),
            (1, &[(1, 8)]),
            (8, &[(8, 8)]),
            (9, &[(9, 32)]),
            (63, &[(63, 128)]),
            (128, &[(128, 128)]),
            (130, &[(128, 128), (2, 8)]),
            (300, &[(128, 128), (128, 128), (44, 128)]),
        ];
        for (n, want) in cases {
            let items: Vec<usize> = (0..n).collect();
            let got: Vec<(usize, usize)> = padded_chunks(&items)
                .map(|(piece, rows)| (piece.len(), rows))
                .collect();
            assert_eq!(got, want, "{n} items");
            let flat: Vec<usize> = padded_chunks(&items)
                .flat_map(|(piece, _)| piece.iter().copied())
                .collect();
            assert_eq!(flat, items, "every item once, in order");
        }
    }

    #[test]
    fn placeholders_list_rows_of_values() {
        assert_eq!(placeholders(1, 1), "(?)");
        assert_eq!(placeholders(2, 3), "(?, ?, ?), (?, ?, ?)");
    }
}
