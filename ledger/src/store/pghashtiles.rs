//! Hash tiles in Postgres ([`crate::hashtile`]): written by the sequencer in
//! the transaction that stores their last node, read by proofs together with
//! the right-edge nodes in one statement.
//!
//! A tile is built by SQL from the node rows, so it holds exactly what the
//! node table holds; the `CHECK (length(hashes) = 8192)` of the table refuses
//! a tile built over missing nodes, which fails the sequencing step, as does
//! a tile with no nodes at all (it is not written, and the count is checked).

use std::collections::{BTreeSet, HashMap};

use sqlx::{PgConnection, PgPool, Row};

use super::{HashTileRead, StoreError, to_i64};
use crate::hash::hash_from_slice;
use crate::hashtile::{TILE_HEIGHT, TILE_WIDTH, TileKey, completed};
use crate::tree::NodeKey;

/// Writes every hash tile completed by growing the tree from `old_size` to
/// `new_size` leaves (call inside the sequencing transaction, after the
/// nodes are written). One statement per tile level that completed a tile,
/// which is level 0 alone for most steps.
pub(super) async fn write_completed(
    conn: &mut PgConnection,
    old_size: u64,
    new_size: u64,
) -> Result<(), StoreError> {
    let done = completed(old_size, new_size);
    for level in done.iter().map(|t| t.level).collect::<BTreeSet<_>>() {
        let mut tiles = done.iter().filter(|t| t.level == level).map(|t| t.index);
        let first = tiles.next().unwrap_or_default();
        let count = 1 + tiles.count() as u64;
        // One range scan of the primary key with bounds known when the
        // statement is planned: a per-tile subquery looked so expensive to
        // the planner on a large log that it compiled the query with JIT
        // (0.16 s per step).
        let written = sqlx::query(
            "INSERT INTO ledger_hash_tiles (tile_level, tile_index, hashes)
             SELECT $1, idx >> 8, string_agg(hash, ''::bytea ORDER BY idx) FROM ledger_nodes
             WHERE level = $2 AND idx >= $3 AND idx < $4
             GROUP BY idx >> 8",
        )
        .bind(i16::from(level))
        .bind(i16::from(level * TILE_HEIGHT))
        .bind(to_i64(first * TILE_WIDTH))
        .bind(to_i64((first + count) * TILE_WIDTH))
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if written != count {
            return Err(StoreError::Inconsistent(format!(
                "wrote {written} of {count} hash tiles at tile level {level}: nodes are missing"
            )));
        }
    }
    Ok(())
}

/// The stored tiles among `tiles` and nodes among `nodes`, in one statement.
pub(super) async fn read(
    pool: &PgPool,
    tiles: &[TileKey],
    nodes: &[NodeKey],
) -> Result<HashTileRead, StoreError> {
    let tile_levels: Vec<i16> = tiles.iter().map(|t| i16::from(t.level)).collect();
    let tile_idxs: Vec<i64> = tiles.iter().map(|t| to_i64(t.index)).collect();
    let node_levels: Vec<i16> = nodes.iter().map(|k| i16::from(k.level)).collect();
    let node_idxs: Vec<i64> = nodes.iter().map(|k| to_i64(k.index)).collect();
    let rows = sqlx::query(
        "SELECT true AS tile, h.tile_level AS level, h.tile_index AS idx, h.hashes AS bytes
         FROM ledger_hash_tiles h
         JOIN UNNEST($1::smallint[], $2::bigint[]) AS k(level, idx)
           ON h.tile_level = k.level AND h.tile_index = k.idx
         UNION ALL
         SELECT false, n.level, n.idx, n.hash FROM ledger_nodes n
         JOIN UNNEST($3::smallint[], $4::bigint[]) AS k(level, idx)
           ON n.level = k.level AND n.idx = k.idx",
    )
    .bind(&tile_levels)
    .bind(&tile_idxs)
    .bind(&node_levels)
    .bind(&node_idxs)
    .fetch_all(pool)
    .await?;
    let mut out = HashTileRead {
        tiles: HashMap::with_capacity(tiles.len()),
        nodes: HashMap::with_capacity(nodes.len()),
    };
    for row in rows {
        let level = row.try_get::<i16, _>("level")? as u8;
        let index = row.try_get::<i64, _>("idx")? as u64;
        let bytes: Vec<u8> = row.try_get("bytes")?;
        if row.try_get("tile")? {
            out.tiles.insert(TileKey { level, index }, bytes);
        } else if let Some(hash) = hash_from_slice(&bytes) {
            out.nodes.insert(NodeKey { level, index }, hash);
        }
    }
    Ok(out)
}
