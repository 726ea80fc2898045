//! Data tiles in Postgres ([`crate::tile`]): written by the sequencer inside
//! its transaction and read by the verifier, which compares them with the
//! per-entry rows through the rows' verify records (`pgrowchecks`).
//!
//! A tile's records are built by SQL from the entry rows the same step just
//! wrote, with the record layout spelled out once in [`RECORD`]; the
//! sequencer packs them (migration 0006) and the verifier unpacks them.

use futures::TryStreamExt;
use sqlx::{PgConnection, PgPool};

use super::spare::SpareBuffers;
use super::{StoreError, TileChunk, to_i64};
use crate::tile::{Packing, TILE_WIDTH, pack_tile};

/// One entry row as a tile record (see `crate::tile` for the layout).
const RECORD: &str = "uuid_send(e.event_id) || e.batch_root || int4send(e.batch_pos) \
                      || int4send(length(e.leaf)) || e.leaf";

/// Writes every tile completed by growing the log from `old_size` to
/// `new_size` entries (call inside the sequencing transaction, after the
/// entries are written).
pub(super) async fn write_completed(
    conn: &mut PgConnection,
    old_size: u64,
    new_size: u64,
) -> Result<(), StoreError> {
    let first = old_size / TILE_WIDTH;
    let end = new_size / TILE_WIDTH;
    if end <= first {
        return Ok(());
    }
    // Postgres builds each tile's plain records from the rows just written;
    // the sequencer packs them (`crate::tile::Packing::Lz4`) and stores them.
    let sql = format!(
        "SELECT e.idx >> 8, string_agg({RECORD}, ''::bytea ORDER BY e.idx)
         FROM ledger_entries e WHERE e.idx >= $1 AND e.idx < $2
         GROUP BY e.idx >> 8 HAVING count(*) = {TILE_WIDTH} ORDER BY 1"
    );
    let plain: Vec<(i64, Vec<u8>)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(to_i64(first * TILE_WIDTH))
        .bind(to_i64(end * TILE_WIDTH))
        .fetch_all(&mut *conn)
        .await?;
    if plain.len() as u64 != end - first {
        return Err(StoreError::Inconsistent(format!(
            "built {} of {} data tiles: entries are not dense",
            plain.len(),
            end - first
        )));
    }
    let (tiles, packed): (Vec<i64>, Vec<Vec<u8>>) =
        plain.iter().map(|(t, data)| (*t, pack_tile(data))).unzip();
    sqlx::query(
        "INSERT INTO ledger_tiles (tile, packing, data)
         SELECT t, $3, d FROM UNNEST($1::bigint[], $2::bytea[]) AS u(t, d)",
    )
    .bind(&tiles)
    .bind(&packed)
    .bind(Packing::Lz4.code())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Tiles `[from, to)` as stored (the verifier unpacks them, each on the
/// thread that then hashes it), with the stored level-8 node over each, by
/// binary COPY.
pub(super) async fn read(
    pool: &PgPool,
    spare: &SpareBuffers,
    from: u64,
    to: u64,
) -> Result<TileChunk, StoreError> {
    // Bounds are integers we format ourselves, so the statement is safe. The
    // range on n.idx keeps the join on the primary key.
    let sql = format!(
        "COPY (SELECT t.tile, t.packing, t.data, n.hash FROM ledger_tiles t
               LEFT JOIN ledger_nodes n ON n.level = 8 AND n.idx = t.tile AND n.idx >= {from} AND n.idx < {to}
               WHERE t.tile >= {from} AND t.tile < {to} ORDER BY t.tile) TO STDOUT (FORMAT binary)",
        from = to_i64(from),
        to = to_i64(to)
    );
    let mut conn = pool.acquire().await?;
    let mut stream = conn.copy_out_raw(&sql).await?;
    // Packed tiles of 527-byte events take about 15 KB.
    let tiles = usize::try_from(to - from).unwrap_or(0).min(256);
    let mut buf = spare.take(tiles * 20_000);
    while let Some(chunk) = stream.try_next().await? {
        buf.extend_from_slice(&chunk);
    }
    drop(stream);
    let tiles = super::pgcopy::parse_tiles(&buf)?;
    Ok(TileChunk { buf, tiles })
}
