//! The Postgres store: the production home of the log.
//!
//! Sequencing runs in one transaction under `pg_advisory_xact_lock`, so at
//! most one sequencer extends the log at a time even if several processes
//! believe they lead; indexes come from the entries themselves (dense, never
//! from a database sequence that can skip numbers). Rows are written in bulk
//! with `UNNEST` so one step costs a few statements, not one per event. Each
//! step also writes the data tiles (`pgtiles`) and hash tiles (`pghashtiles`)
//! it completes.

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Postgres, Row, Transaction};
use uuid::Uuid;

use super::pgupkeep::{DEFAULT_VACUUM_FLOOR, VisibilityUpkeep};
use super::{
    EntryRecord, HashTileRead, LedgerStore, RowChecks, SequenceOutcome, StoreError, SubmitOutcome,
    TileChunk, frontier_from, node_from_row, parse_vkeys, to_i64,
};
use crate::batch::Batch;
use crate::hash::{Hash, hash_from_slice};
use crate::hashtile::TileKey;
use crate::keys::{KeyPair, PublicKey};
use crate::sequencer::{MAX_EVENTS_PER_STEP, PendingEvent, plan_append};
use crate::tree::{Frontier, NodeKey, frontier_keys};

/// Advisory lock key of the sequencer ("caracal" in ASCII, as a number).
const SEQUENCER_LOCK: i64 = 0x0063_6172_6163_616c;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// A Postgres-backed ledger.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    /// Connections for the proof read alone, which always run its generic
    /// plan. Postgres would otherwise plan that statement anew on every call
    /// (its custom plans look cheaper for a handful of keys), and planning
    /// costs about as much as executing it (docs/benchmarks.md). Other
    /// statements keep the default, since some need plans for their values.
    proof_pool: PgPool,
    /// Buffers of earlier tile and verify record reads, for the next ones.
    spare: super::spare::SpareBuffers,
    /// Vacuums `ledger_entries` behind the sequencer (see `pgupkeep`).
    upkeep: Arc<VisibilityUpkeep>,
}

/// How long [`PgStore::open`] waits for the database to accept a first
/// connection.
const FIRST_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn entry_from_row(row: &sqlx::postgres::PgRow) -> Result<EntryRecord, StoreError> {
    Ok(EntryRecord {
        index: row.try_get::<i64, _>("idx")? as u64,
        event_id: row.try_get("event_id")?,
        leaf: row.try_get("leaf")?,
        batch_root: row.try_get("batch_root")?,
        batch_pos: row.try_get::<i32, _>("batch_pos")? as u32,
        recorded_hash: row.try_get("recorded_hash").ok().flatten(),
    })
}

impl PgStore {
    /// Connects and applies the migrations under `migrations/postgres`.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url.parse()?;
        // One connection on its own first. A pool retries a failing connect
        // until its acquire timeout (30 s) and then reports only that it
        // timed out; a wrong host, port, password or database name is
        // reported here as itself, at once.
        match tokio::time::timeout(FIRST_CONNECT_TIMEOUT, PgConnection::connect_with(&options))
            .await
        {
            Ok(first) => first?.close().await?,
            Err(_) => return Err(StoreError::NoAnswer(FIRST_CONNECT_TIMEOUT)),
        }
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        Self::from_pool(pool).await
    }

    /// Wraps an existing pool (migrations are still applied).
    pub async fn from_pool(pool: PgPool) -> Result<Self, StoreError> {
        MIGRATOR.run(&pool).await?;
        let options = (*pool.connect_options())
            .clone()
            .options([("plan_cache_mode", "force_generic_plan")]);
        let proof_pool = PgPoolOptions::new()
            .max_connections(4)
            .connect_lazy_with(options);
        Ok(Self {
            pool,
            proof_pool,
            spare: Default::default(),
            upkeep: VisibilityUpkeep::new(DEFAULT_VACUUM_FLOOR),
        })
    }

    /// How many new entries the sequencer lets pass, at least, before it
    /// vacuums `ledger_entries` to keep the visibility map (and so full
    /// verification) current; 2 % of the log when that is more. Default
    /// 16,384.
    pub fn with_vacuum_floor(mut self, entries: u64) -> Self {
        self.upkeep = VisibilityUpkeep::new(entries);
        self
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn frontier(
        tx: &mut Transaction<'_, Postgres>,
        size: u64,
    ) -> Result<Frontier, StoreError> {
        let found = fetch_nodes(&mut **tx, &frontier_keys(size)).await?;
        frontier_from(size, &found)
    }
}

async fn fetch_nodes<'e>(
    exec: impl sqlx::PgExecutor<'e>,
    keys: &[NodeKey],
) -> Result<HashMap<NodeKey, Hash>, StoreError> {
    let levels: Vec<i16> = keys.iter().map(|k| i16::from(k.level)).collect();
    let idxs: Vec<i64> = keys.iter().map(|k| to_i64(k.index)).collect();
    let rows = sqlx::query(
        "SELECT n.level, n.idx, n.hash FROM ledger_nodes n
         JOIN UNNEST($1::smallint[], $2::bigint[]) AS k(level, idx)
           ON n.level = k.level AND n.idx = k.idx",
    )
    .bind(&levels)
    .bind(&idxs)
    .fetch_all(exec)
    .await?;
    let mut out = HashMap::with_capacity(rows.len());
    for row in rows {
        let hash: Vec<u8> = row.try_get("hash")?;
        let level = i64::from(row.try_get::<i16, _>("level")?);
        out.extend(node_from_row(level, row.try_get("idx")?, &hash));
    }
    Ok(out)
}

impl LedgerStore for PgStore {
    async fn register_submitter(&self, key: &PublicKey) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO ledger_submitters (key_id, vkey) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(key.key_id().to_vec())
        .bind(key.to_vkey())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(events = batch.events.len()))]
    async fn submit(&self, batch: Batch) -> Result<SubmitOutcome, StoreError> {
        let submitters = parse_vkeys(&self.submitter_keys().await?)?;
        let checked = batch.check(&submitters)?;
        let total = checked.events.len();
        let ids: Vec<Uuid> = checked.events.iter().map(|e| e.event.id).collect();
        let positions: Vec<i32> = (0..total as i32).collect();
        let leaves: Vec<Vec<u8>> = checked.events.iter().map(|e| e.bytes.clone()).collect();
        let times: Vec<DateTime<Utc>> = checked.events.iter().map(|e| e.event.time).collect();
        let agents: Vec<String> = checked
            .events
            .iter()
            .map(|e| e.event.agent.to_string())
            .collect();
        let mut tx = self.pool.begin().await?;
        // Already-logged events are skipped; looked up by id so the cost does
        // not grow with the log. (A race with the sequencer is harmless: it
        // drops queued events that are already logged.)
        let logged: std::collections::HashSet<Uuid> =
            sqlx::query_scalar("SELECT event_id FROM ledger_entries WHERE event_id = ANY($1)")
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();
        let keep: Vec<bool> = ids.iter().map(|id| !logged.contains(id)).collect();
        sqlx::query(
            "INSERT INTO ledger_batches (root, key_id, signature, leaf_hashes)
             VALUES ($1, $2, $3, $4) ON CONFLICT (root) DO NOTHING",
        )
        .bind(checked.root.to_vec())
        .bind(checked.key_id.to_vec())
        .bind(&checked.signature)
        .bind(checked.leaf_hashes_blob())
        .execute(&mut *tx)
        .await?;
        let inserted = sqlx::query(
            "INSERT INTO ledger_pending (event_id, batch_root, batch_pos, leaf, event_time, agent)
             SELECT u.event_id, $1, u.pos, u.leaf, u.event_time, u.agent
             FROM UNNEST($2::uuid[], $3::int[], $4::bytea[], $5::timestamptz[], $6::text[], $7::bool[])
                  WITH ORDINALITY AS u(event_id, pos, leaf, event_time, agent, keep, ord)
             WHERE u.keep
             ORDER BY u.ord
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(checked.root.to_vec())
        .bind(&ids)
        .bind(&positions)
        .bind(&leaves)
        .bind(&times)
        .bind(&agents)
        .bind(&keep)
        .execute(&mut *tx)
        .await?
        .rows_affected() as usize;
        tx.commit().await?;
        Ok(SubmitOutcome {
            accepted: inserted,
            duplicates: total - inserted,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn sequence_pending(&self, key: &KeyPair) -> Result<SequenceOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SEQUENCER_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO ledger_log_keys (key_id, vkey) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(key.key_id().to_vec())
        .bind(key.public().to_vkey())
        .execute(&mut *tx)
        .await?;
        let size: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(idx) + 1, 0) FROM ledger_entries")
            .fetch_one(&mut *tx)
            .await?;
        let size = size as u64;
        let signed: Option<i64> = sqlx::query_scalar("SELECT MAX(size) FROM ledger_checkpoints")
            .fetch_one(&mut *tx)
            .await?;
        if signed.map_or(0, |s| s as u64) != size {
            return Err(StoreError::Inconsistent(format!(
                "{size} entries stored but the latest checkpoint has size {}",
                signed.unwrap_or(0)
            )));
        }
        let frontier = Self::frontier(&mut tx, size).await?;
        // The leaf hash is computed by Postgres from the bytes as stored; the
        // bytes themselves never leave the database.
        let rows = sqlx::query(
            "SELECT event_id, sha256('\\x00'::bytea || leaf) AS leaf_hash FROM ledger_pending
             ORDER BY arrival LIMIT $1",
        )
        .bind(MAX_EVENTS_PER_STEP as i64)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(SequenceOutcome::nothing_appended(size, frontier.root()));
        }
        let mut pending = Vec::with_capacity(rows.len());
        for r in &rows {
            let hash: Vec<u8> = r.try_get("leaf_hash")?;
            let leaf_hash = hash_from_slice(&hash).ok_or_else(|| {
                StoreError::Inconsistent("sha256 returned a hash of the wrong length".into())
            })?;
            pending.push(PendingEvent {
                event_id: r.try_get("event_id")?,
                leaf_hash,
            });
        }
        // Events that reached the log through an earlier, racing submission
        // are dropped from the queue (looked up by id, so the cost does not
        // grow with the log).
        let taken: Vec<Uuid> = pending.iter().map(|p| p.event_id).collect();
        let logged: Vec<Uuid> =
            sqlx::query_scalar("SELECT event_id FROM ledger_entries WHERE event_id = ANY($1)")
                .bind(&taken)
                .fetch_all(&mut *tx)
                .await?;
        if !logged.is_empty() {
            sqlx::query("DELETE FROM ledger_pending WHERE event_id = ANY($1)")
                .bind(&logged)
                .execute(&mut *tx)
                .await?;
            let logged: std::collections::HashSet<Uuid> = logged.into_iter().collect();
            pending.retain(|p| !logged.contains(&p.event_id));
            if pending.is_empty() {
                tx.commit().await?;
                return Ok(SequenceOutcome::nothing_appended(size, frontier.root()));
            }
        }
        let plan = plan_append(frontier, &pending, key);

        let n = plan.entries.len();
        let idx: Vec<i64> = plan.entries.iter().map(|e| to_i64(e.index)).collect();
        let ids: Vec<Uuid> = plan.entries.iter().map(|e| e.event_id).collect();
        let moved = sqlx::query(
            "INSERT INTO ledger_entries (idx, event_id, leaf, batch_root, batch_pos, event_time, agent)
             SELECT u.idx, p.event_id, p.leaf, p.batch_root, p.batch_pos, p.event_time, p.agent
             FROM UNNEST($1::bigint[], $2::uuid[]) AS u(idx, event_id)
             JOIN ledger_pending p ON p.event_id = u.event_id",
        )
        .bind(&idx)
        .bind(&ids)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved != n as u64 {
            return Err(StoreError::Inconsistent(format!(
                "moved {moved} of {n} pending events"
            )));
        }
        let levels: Vec<i16> = plan.nodes.iter().map(|(k, _)| i16::from(k.level)).collect();
        let node_idx: Vec<i64> = plan.nodes.iter().map(|(k, _)| to_i64(k.index)).collect();
        let hashes: Vec<Vec<u8>> = plan.nodes.iter().map(|(_, h)| h.to_vec()).collect();
        sqlx::query(
            "INSERT INTO ledger_nodes (level, idx, hash)
             SELECT * FROM UNNEST($1::smallint[], $2::bigint[], $3::bytea[])",
        )
        .bind(&levels)
        .bind(&node_idx)
        .bind(&hashes)
        .execute(&mut *tx)
        .await?;
        super::pgtiles::write_completed(&mut tx, size, plan.checkpoint.size).await?;
        super::pghashtiles::write_completed(&mut tx, size, plan.checkpoint.size).await?;
        sqlx::query(
            "INSERT INTO ledger_checkpoints (size, root, key_id, note) VALUES ($1, $2, $3, $4)",
        )
        .bind(to_i64(plan.checkpoint.size))
        .bind(plan.checkpoint.root.to_vec())
        .bind(key.key_id().to_vec())
        .bind(&plan.note)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM ledger_pending WHERE event_id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::debug!(appended = n, size = plan.checkpoint.size, "sequenced");
        self.upkeep.appended(&self.pool, plan.checkpoint.size);
        Ok(SequenceOutcome {
            appended: n as u64,
            size: plan.checkpoint.size,
            root: plan.checkpoint.root,
            checkpoint: Some(plan.note),
        })
    }

    super::shared_reads::shared_reads!();

    async fn entries(&self, from: u64, to: u64) -> Result<Vec<EntryRecord>, StoreError> {
        use futures::TryStreamExt;
        // Bounds are integers we format ourselves, so the statement is safe.
        let sql = format!(
            "COPY (SELECT e.idx, e.event_id, e.leaf, e.batch_root, e.batch_pos, n.hash
                   FROM ledger_entries e
                   LEFT JOIN ledger_nodes n ON n.level = 0 AND n.idx = e.idx AND n.idx >= {from} AND n.idx < {to}
                   WHERE e.idx >= {from} AND e.idx < {to} ORDER BY e.idx) TO STDOUT (FORMAT binary)",
            from = to_i64(from),
            to = to_i64(to)
        );
        // (The range on n.idx lets the planner use the primary key instead of
        // scanning every level-0 node for each chunk.)
        let mut conn = self.pool.acquire().await?;
        let mut stream = conn.copy_out_raw(&sql).await?;
        let mut buf = Vec::new();
        while let Some(chunk) = stream.try_next().await? {
            buf.extend_from_slice(&chunk);
        }
        drop(stream);
        super::pgcopy::parse_entries(&buf)
    }

    async fn entries_matching(
        &self,
        agent: Option<&str>,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> Result<Vec<EntryRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT idx, event_id, leaf, batch_root, batch_pos FROM ledger_entries
             WHERE ($1::text IS NULL OR agent = $1)
               AND ($2::timestamptz IS NULL OR event_time >= $2)
               AND ($3::timestamptz IS NULL OR event_time < $3)
             ORDER BY idx",
        )
        .bind(agent)
        .bind(since)
        .bind(until)
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
            sqlx::query_scalar("SELECT MIN(idx) FROM ledger_entries WHERE idx >= $1")
                .bind(from)
                .fetch_one(&self.pool)
                .await?;
        Ok(first.map(|i| i as u64))
    }

    async fn entry_by_event(&self, id: Uuid) -> Result<Option<EntryRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT idx, event_id, leaf, batch_root, batch_pos FROM ledger_entries WHERE event_id = $1",
        )
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
            "SELECT MIN(idx) AS lo, MAX(idx) AS hi FROM ledger_entries WHERE event_time >= $1 AND event_time < $2",
        )
        .bind(start)
        .bind(end)
        .fetch_one(&self.pool)
        .await?;
        let lo: Option<i64> = row.try_get("lo")?;
        let hi: Option<i64> = row.try_get("hi")?;
        Ok(lo.zip(hi).map(|(lo, hi)| (lo as u64, hi as u64 + 1)))
    }

    async fn nodes(&self, keys: &[NodeKey]) -> Result<HashMap<NodeKey, Hash>, StoreError> {
        fetch_nodes(&self.pool, keys).await
    }

    fn keeps_hash_tiles(&self) -> bool {
        true
    }

    async fn tiles_and_nodes(
        &self,
        tiles: &[TileKey],
        nodes: &[NodeKey],
    ) -> Result<HashTileRead, StoreError> {
        super::pghashtiles::read(&self.proof_pool, tiles, nodes).await
    }

    fn keeps_tiles(&self) -> bool {
        true
    }

    async fn tiles(&self, from: u64, to: u64) -> Result<TileChunk, StoreError> {
        super::pgtiles::read(&self.pool, &self.spare, from, to).await
    }

    async fn row_checks(&self, from: u64, to: u64) -> Result<RowChecks, StoreError> {
        super::pgrowchecks::read(&self.pool, &self.spare, from, to).await
    }

    fn recycle(&self, buf: Vec<u8>) {
        self.spare.give(buf);
    }
}
