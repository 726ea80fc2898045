//! Feeding the checker from data tiles ([`crate::tile`]), and the two
//! follow-up checks a tile can call for.
//!
//! A tile's 256 entries get exactly the checks a row gets (event id, batch
//! signature, place in the tree, checkpoint roots). Two things are different:
//! the tile's level-8 node is compared once per tile instead of each level-0
//! node (on a mismatch, [`Checker::name_moved`] compares the level-0 nodes to
//! name the entry), and the per-entry rows that queries and proofs read are
//! compared with the tile through their verify records (`rows`), using the
//! leaf hashes computed here.

use std::collections::HashMap;

use super::rows::row_record_faults;
use super::{Checker, EntryRef, MOVED};
use crate::hash::{Hash, leaf_hash, node_hash};
use crate::store::RowCheckChunk;
use crate::tile::{TILE_LEVEL, TILE_WIDTH, TileRecord, parse_tile};
use crate::tree::NodeKey;

/// One stored tile as read.
#[derive(Clone, Copy, Debug)]
pub struct TileInput<'a> {
    pub tile: u64,
    pub data: &'a [u8],
    /// The stored tree node over the tile's leaves, if there is one.
    pub recorded_root: Option<&'a [u8]>,
    /// Why the stored tile could not be unpacked (then `data` is empty).
    pub fault: Option<&'a str>,
}

/// What [`Checker::feed_tile_run`] got through, and what it leaves to the caller.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TileRun {
    /// Inputs consumed, from the first (including a malformed one).
    pub consumed: usize,
    /// The last consumed tile is not 256 well-formed records (already
    /// reported): the caller feeds that tile's entries from the rows, so the
    /// rest of the log is still checked.
    pub malformed: Option<u64>,
    /// Tiles whose recomputed root differs from the stored node, with their
    /// leaf hashes: the caller compares the level-0 nodes ([`Checker::name_moved`]).
    pub compare_leaves: Vec<(u64, Vec<Hash>)>,
}

/// Root of a complete subtree of `hashes.len()` (a power of two) leaves.
fn subtree_root(hashes: &[Hash]) -> Hash {
    let mut level: Vec<Hash> = hashes.to_vec();
    while level.len() > 1 {
        level = level.chunks(2).map(|p| node_hash(&p[0], &p[1])).collect();
    }
    level[0]
}

fn first_index(tile: u64) -> u64 {
    tile * TILE_WIDTH
}

/// What can be worked out about one tile on its own, before the checker
/// takes it in order: its records, their leaf hashes, the subtree root over
/// them, and how its rows' verify records differ from it.
struct TileDigest<'a> {
    records: Result<Vec<TileRecord<'a>>, String>,
    hashes: Vec<Hash>,
    root: Hash,
    row_faults: Vec<(u64, &'static str)>,
}

fn digest_tile<'a>(t: &TileInput<'a>, rows: Option<&RowCheckChunk>) -> TileDigest<'a> {
    let records = match t.fault {
        Some(fault) => Err(fault.to_owned()),
        None => parse_tile(t.data).map_err(|e| e.to_string()),
    };
    let Ok(parsed) = &records else {
        return TileDigest {
            records,
            hashes: Vec::new(),
            root: [0; 32],
            row_faults: Vec::new(),
        };
    };
    let hashes: Vec<Hash> = parsed.iter().map(|r| leaf_hash(r.leaf)).collect();
    let root = subtree_root(&hashes);
    let row_faults = rows.map_or_else(Vec::new, |rows| {
        let start = first_index(t.tile);
        row_record_faults(
            start,
            parsed,
            &hashes,
            &rows.between(start, start + TILE_WIDTH),
        )
    });
    TileDigest {
        records,
        hashes,
        root,
        row_faults,
    }
}

/// [`digest_tile`] for every tile, on all available cores.
fn digest_tiles<'a>(tiles: &[TileInput<'a>], rows: Option<&RowCheckChunk>) -> Vec<TileDigest<'a>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    if threads < 2 || tiles.len() < 4 {
        return tiles.iter().map(|t| digest_tile(t, rows)).collect();
    }
    let per = tiles.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = tiles
            .chunks(per)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|t| digest_tile(t, rows))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().expect("tile digest thread panicked"))
            .collect()
    })
}

impl Checker {
    /// Reports a tile that should exist but is not stored. The caller then
    /// feeds that range from the rows.
    pub fn tile_missing(&mut self, tile: u64) {
        self.problem(
            Some(first_index(tile)),
            None,
            format!("data tile {tile} is missing (every complete tile is stored when sequenced)"),
        );
    }

    /// Feeds tiles `first, first + 1, ...` from the front of `tiles`, each
    /// tile parsed, hashed and compared with the verify records of its rows
    /// (when `rows` are given; otherwise the caller compares the rows itself)
    /// on all cores first. Stops after a malformed tile or before the first
    /// input that is not the next tile (a missing tile).
    pub fn feed_tile_run(
        &mut self,
        first: u64,
        tiles: &[TileInput<'_>],
        rows: Option<&RowCheckChunk>,
    ) -> TileRun {
        let mut run = TileRun::default();
        let consecutive = tiles
            .iter()
            .enumerate()
            .take_while(|(k, t)| t.tile == first + *k as u64)
            .count();
        let digests = digest_tiles(&tiles[..consecutive], rows);
        for (t, digest) in tiles.iter().zip(digests) {
            run.consumed += 1;
            let records = match digest.records {
                Ok(records) => records,
                Err(e) => {
                    self.problem(
                        Some(first_index(t.tile)),
                        None,
                        format!("data tile {} is malformed: {e}", t.tile),
                    );
                    run.malformed = Some(t.tile);
                    break;
                }
            };
            if rows.is_some() {
                self.report_row_faults(digest.row_faults);
            }
            if let Some(leaf_hashes) =
                self.feed_tile_hashed(t, &records, &digest.hashes, digest.root)
            {
                run.compare_leaves.push((t.tile, leaf_hashes));
            }
        }
        run
    }

    fn feed_tile_hashed(
        &mut self,
        t: &TileInput<'_>,
        records: &[TileRecord<'_>],
        hashes: &[Hash],
        root: Hash,
    ) -> Option<Vec<Hash>> {
        let start = first_index(t.tile);
        if self.broken {
            return None;
        }
        if self.frontier.size() != start {
            // The caller feeds tiles in order; a jump means the rows or
            // tiles before this one were not all fed, which is a gap.
            self.problem(
                Some(self.frontier.size()),
                None,
                format!("entries missing before data tile {}", t.tile),
            );
            self.broken = true;
            return None;
        }
        for (i, (r, h)) in records.iter().zip(hashes).enumerate() {
            let entry = EntryRef {
                index: start + i as u64,
                event_id: r.event_id,
                leaf: r.leaf,
                batch_root: r.batch_root,
                batch_pos: r.batch_pos,
                recorded_hash: None,
            };
            self.check_entry(&entry, h);
        }
        let end = start + TILE_WIDTH;
        if self.checkpoints.range(start + 1..end).next().is_some() {
            // A checkpoint inside the tile: grow leaf by leaf to check it.
            for h in hashes {
                self.frontier.push_hash(*h);
                self.report.entries_checked += 1;
                self.check_root_here();
            }
        } else {
            self.frontier.push_subtree(TILE_LEVEL, root);
            self.report.entries_checked += TILE_WIDTH;
            self.check_root_here();
        }
        match t.recorded_root {
            Some(stored) if stored != root => Some(hashes.to_vec()),
            _ => None,
        }
    }

    /// Names each entry of `tile` whose stored level-0 node differs from the
    /// hash of its bytes (entries moved within or between tiles).
    pub fn name_moved(&mut self, tile: u64, leaf_hashes: &[Hash], nodes: &HashMap<NodeKey, Hash>) {
        let start = first_index(tile);
        for (i, h) in leaf_hashes.iter().enumerate() {
            let index = start + i as u64;
            let key = NodeKey { level: 0, index };
            if nodes.get(&key).is_some_and(|stored| stored != h) {
                self.problem(Some(index), None, MOVED.into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::leaf_hash;
    use crate::tree::Frontier;

    #[test]
    fn a_pushed_subtree_equals_its_leaves_pushed_one_by_one() {
        let hashes: Vec<Hash> = (0..1024u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut by_leaf = Frontier::new();
        let mut by_tile = Frontier::new();
        for tile in hashes.chunks(256) {
            tile.iter().for_each(|h| by_leaf.push_hash(*h));
            assert!(by_tile.push_subtree(TILE_LEVEL, subtree_root(tile)));
            assert_eq!(by_leaf, by_tile);
            assert_eq!(by_leaf.root(), by_tile.root());
        }
        by_tile.push_hash(hashes[0]);
        assert!(
            !by_tile.push_subtree(TILE_LEVEL, hashes[1]),
            "unaligned push accepted"
        );
    }
}
