//! Reading a store into the [`Checker`]: rows and data tiles, each fetched
//! while the previous batch is hashed on a blocking thread.
//!
//! Tiles take the fast path; anything odd about them (a missing tile, a
//! malformed one, a root that differs from the stored node, rows that differ
//! from the tile) is reported and then looked at row by row, so the rest of
//! the log is still checked and the bad index is named.

use super::Checker;
use super::tiles::TileRun;
use crate::store::{LedgerStore, StoreError, TileChunk};
use crate::tile::TILE_WIDTH;
use crate::tree::NodeKey;

/// Entries read per round trip when reading rows.
const CHUNK: u64 = 20_000;
/// Tiles read per round trip (16,384 entries).
const TILES_PER_READ: u64 = 64;

fn task_failed(e: tokio::task::JoinError) -> StoreError {
    StoreError::Inconsistent(format!("verifier task failed: {e}"))
}

/// Feeds the rows with `from <= index < to`.
pub(super) async fn feed_rows(
    store: &impl LedgerStore,
    mut checker: Checker,
    from: u64,
    to: u64,
) -> Result<Checker, StoreError> {
    let mut next = from;
    let mut current = None;
    if next < to {
        let chunk_end = (next + CHUNK).min(to);
        current = Some(store.entries(next, chunk_end).await?);
        next = chunk_end;
    }
    while let Some(chunk) = current.take() {
        let work = tokio::task::spawn_blocking(move || {
            checker.feed_chunk(&chunk);
            checker
        });
        let chunk_end = (next + CHUNK).min(to);
        let fetch = async {
            if next < to {
                Some(store.entries(next, chunk_end).await)
            } else {
                None
            }
        };
        let (worked, fetched) = tokio::join!(work, fetch);
        checker = worked.map_err(task_failed)?;
        current = fetched.transpose()?;
        next = chunk_end;
    }
    Ok(checker)
}

/// Feeds tiles `from..to`, with the store comparing each tile with its rows
/// alongside.
pub(super) async fn feed_tiles(
    store: &impl LedgerStore,
    checker: Checker,
    from: u64,
    to: u64,
) -> Result<Checker, StoreError> {
    let (unlike, fed) = tokio::join!(store.tiles_unlike_rows(from, to), async {
        let mut checker = checker;
        let mut next = from;
        let mut current = None;
        if next < to {
            let end = (next + TILES_PER_READ).min(to);
            current = Some((next, end, store.tiles(next, end).await?));
            next = end;
        }
        while let Some((first, end, chunk)) = current.take() {
            let work = async {
                let (checker, run, chunk) = tokio::task::spawn_blocking(move || {
                    let run = checker.feed_tile_run(first, &chunk.inputs());
                    (checker, run, chunk)
                })
                .await
                .map_err(task_failed)?;
                finish_chunk(store, checker, run, &chunk, first, end).await
            };
            let fetch_end = (next + TILES_PER_READ).min(to);
            let fetch = async {
                if next < to {
                    Some(store.tiles(next, fetch_end).await)
                } else {
                    None
                }
            };
            let (worked, fetched) = tokio::join!(work, fetch);
            checker = worked?;
            current = fetched.transpose()?.map(|c| (next, fetch_end, c));
            next = fetch_end;
        }
        Ok::<_, StoreError>(checker)
    });
    let mut checker = fed?;
    for tile in unlike? {
        let chunk = store.tiles(tile, tile + 1).await?;
        let rows = store
            .entries(tile * TILE_WIDTH, (tile + 1) * TILE_WIDTH)
            .await?;
        if let Some(input) = chunk.inputs().first() {
            checker.compare_rows(tile, input.data, &rows);
        }
    }
    Ok(checker)
}

/// Deals with what the fast pass over one chunk of tiles `first..end` left:
/// leaf comparisons, malformed and missing tiles.
async fn finish_chunk(
    store: &impl LedgerStore,
    mut checker: Checker,
    mut run: TileRun,
    chunk: &TileChunk,
    first: u64,
    end: u64,
) -> Result<Checker, StoreError> {
    let inputs = chunk.inputs();
    let mut done = 0;
    let mut next = first;
    loop {
        for (tile, leaf_hashes) in std::mem::take(&mut run.compare_leaves) {
            let keys: Vec<NodeKey> = (0..TILE_WIDTH)
                .map(|i| NodeKey {
                    level: 0,
                    index: tile * TILE_WIDTH + i,
                })
                .collect();
            let nodes = store.nodes(&keys).await?;
            checker.name_moved(tile, &leaf_hashes, &nodes);
        }
        done += run.consumed;
        next += run.consumed as u64;
        if let Some(tile) = run.malformed {
            checker = feed_rows(store, checker, tile * TILE_WIDTH, (tile + 1) * TILE_WIDTH).await?;
        }
        let stop = inputs.get(done).map_or(end, |t| t.tile.min(end));
        while next < stop {
            checker.tile_missing(next);
            checker = feed_rows(store, checker, next * TILE_WIDTH, (next + 1) * TILE_WIDTH).await?;
            next += 1;
        }
        if done >= inputs.len() || next >= end || inputs[done].tile != next {
            return Ok(checker);
        }
        run = checker.feed_tile_run(next, &inputs[done..]);
    }
}
