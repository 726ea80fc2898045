//! Reading a store into the [`Checker`]: rows and data tiles, each fetched
//! while the previous batch is hashed on a blocking thread.
//!
//! Tiles take the fast path; anything odd about them (a missing tile, a
//! malformed one, a root that differs from the stored node, rows that differ
//! from the tile) is reported and then looked at row by row, so the rest of
//! the log is still checked and the bad index is named.

use super::Checker;
use super::tiles::TileRun;
use crate::store::{LedgerStore, RowChecks, StoreError, TileChunk};
use crate::tile::TILE_WIDTH;
use crate::tree::NodeKey;

/// Entries read per round trip when reading rows.
const CHUNK: u64 = 20_000;
/// Tiles read per round trip (16,384 entries).
const TILES_PER_READ: u64 = 64;

fn task_failed(e: tokio::task::JoinError) -> StoreError {
    StoreError::Inconsistent(format!("verifier task failed: {e}"))
}

/// Feeds the rows with `from <= index < to`, and stops early once reading
/// further cannot tell anything ([`Checker::done`]).
///
/// A chunk that comes back short has a gap in it or ends where the stored
/// entries end. Then the next stored entry is looked up and fed (the checker
/// names the gap), or, when there is none, the checker is told that the
/// entries have run out. So a bound or checkpoint size far beyond the
/// stored entries (an inserted row at index 2^62, say) costs one lookup,
/// not a walk over every empty range up to it.
pub(super) async fn feed_rows(
    store: &impl LedgerStore,
    mut checker: Checker,
    from: u64,
    to: u64,
) -> Result<Checker, StoreError> {
    let mut next = from;
    let mut current = None;
    if next < to && !checker.done() {
        let chunk_end = next.saturating_add(CHUNK).min(to);
        current = Some((next, chunk_end, store.entries(next, chunk_end).await?));
        next = chunk_end;
    }
    while let Some((chunk_start, chunk_end, chunk)) = current.take() {
        let short = (chunk.len() as u64) < chunk_end - chunk_start;
        let work = tokio::task::spawn_blocking(move || {
            checker.feed_chunk(&chunk);
            checker
        });
        let fetch_end = next.saturating_add(CHUNK).min(to);
        let fetch = async {
            if next < to && !short {
                Some(store.entries(next, fetch_end).await)
            } else {
                None
            }
        };
        let (worked, fetched) = tokio::join!(work, fetch);
        checker = worked.map_err(task_failed)?;
        if checker.done() {
            break;
        }
        if short {
            match store.first_index_from(checker.next_index()).await? {
                None => {
                    checker.exhausted = true;
                    break;
                }
                Some(index) => {
                    // Feeding it names the gap before it.
                    let rows = store.entries(index, index.saturating_add(1)).await?;
                    checker.feed_chunk(&rows);
                    if !checker.done() {
                        // The entry was there a moment ago and is not now:
                        // a store being written while it is read.
                        return Err(StoreError::Inconsistent(format!(
                            "entry {index} disappeared while the log was read"
                        )));
                    }
                    break;
                }
            }
        }
        current = fetched.transpose()?.map(|rows| (next, fetch_end, rows));
        next = fetch_end;
    }
    Ok(checker)
}

/// One chunk of tiles as read: the tiles, and the verify records of their rows.
pub(super) struct TileRead {
    first: u64,
    end: u64,
    tiles: TileChunk,
    rows: RowChecks,
}

/// The first read of [`feed_tiles`] over tiles `from..to`, made ahead (while
/// the batches are checked, which needs no tiles).
pub(super) async fn first_tile_read(
    store: &impl LedgerStore,
    from: u64,
    to: u64,
) -> Option<Result<TileRead, StoreError>> {
    if from >= to {
        return None;
    }
    Some(read_tiles(store, from, (from + TILES_PER_READ).min(to)).await)
}

async fn read_tiles(
    store: &impl LedgerStore,
    first: u64,
    end: u64,
) -> Result<TileRead, StoreError> {
    let (tiles, rows) = tokio::join!(store.tiles(first, end), store.row_checks(first, end));
    Ok(TileRead {
        first,
        end,
        tiles: tiles?,
        rows: rows?,
    })
}

/// Feeds tiles `from..to` and compares each with the rows of its range,
/// reading the next chunk while the current one is hashed. `first` is
/// [`first_tile_read`] of the same range, if it was made ahead.
pub(super) async fn feed_tiles(
    store: &impl LedgerStore,
    mut checker: Checker,
    from: u64,
    to: u64,
    first: Option<Result<TileRead, StoreError>>,
) -> Result<Checker, StoreError> {
    let mut refused_records = false;
    let first = match first {
        Some(read) => Some(read),
        None => first_tile_read(store, from, to).await,
    };
    let mut current = first.transpose()?;
    let mut next = current.as_ref().map_or(from, |read| read.end);
    while let Some(read) = current.take() {
        let work = async {
            let mut checker = checker;
            let refused = match &read.rows {
                RowChecks::Records(_) => false,
                RowChecks::Unavailable(why) => {
                    if !std::mem::replace(&mut refused_records, true) {
                        checker.records_refused(why);
                    }
                    true
                }
            };
            let (checker, run, read) = tokio::task::spawn_blocking(move || {
                let rows = match &read.rows {
                    RowChecks::Records(rows) => Some(rows),
                    RowChecks::Unavailable(_) => None,
                };
                let run = checker.feed_tile_run(read.first, &read.tiles.inputs(), rows);
                (checker, run, read)
            })
            .await
            .map_err(task_failed)?;
            let mut checker = finish_chunk(store, checker, run, &read).await?;
            if refused {
                for input in read.tiles.inputs() {
                    let first_index = input.tile * TILE_WIDTH;
                    let rows = store.entries(first_index, first_index + TILE_WIDTH).await?;
                    checker.compare_rows(&input, &rows);
                }
            }
            store.recycle(read.tiles.buf);
            if let RowChecks::Records(rows) = read.rows {
                store.recycle(rows.buf);
            }
            Ok::<_, StoreError>(checker)
        };
        let fetch_end = (next + TILES_PER_READ).min(to);
        let fetch = async {
            if next < to {
                Some(read_tiles(store, next, fetch_end).await)
            } else {
                None
            }
        };
        let (worked, fetched) = tokio::join!(work, fetch);
        checker = worked?;
        if checker.done() {
            break;
        }
        current = fetched.transpose()?;
        next = fetch_end;
    }
    Ok(checker)
}

/// Deals with what the fast pass over one chunk of tiles `first..end` left:
/// leaf comparisons, malformed and missing tiles.
async fn finish_chunk(
    store: &impl LedgerStore,
    mut checker: Checker,
    mut run: TileRun,
    read: &TileRead,
) -> Result<Checker, StoreError> {
    let (first, end) = (read.first, read.end);
    let inputs = read.tiles.inputs();
    let rows = match &read.rows {
        RowChecks::Records(rows) => Some(rows),
        RowChecks::Unavailable(_) => None,
    };
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
        while next < stop && !checker.done() {
            let rows_from = next * TILE_WIDTH;
            checker = feed_rows(store, checker, rows_from, rows_from + TILE_WIDTH).await?;
            // With every row of the tile there, the tile itself is what is
            // missing; rows that are missing (or past the log's end) are
            // reported as such, not as a missing tile too.
            if checker.next_index() >= rows_from + TILE_WIDTH {
                checker.tile_missing(next);
            }
            next += 1;
        }
        if checker.done() {
            return Ok(checker);
        }
        if done >= inputs.len() || next >= end || inputs[done].tile != next {
            return Ok(checker);
        }
        run = checker.feed_tile_run(next, &inputs[done..], rows);
    }
}
