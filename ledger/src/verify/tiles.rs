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

use super::{Checker, EntryRef, MOVED, hash_leaves};
use crate::hash::{Hash, node_hash};
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

    /// Feeds tiles `first, first + 1, ...` from the front of `tiles`, hashing
    /// all their leaves on all cores first, and compares each tile with the
    /// verify records of its rows when `rows` are given (otherwise the caller
    /// compares the rows itself). Stops after a malformed tile or before the
    /// first input that is not the next tile (a missing tile).
    pub fn feed_tile_run(
        &mut self,
        first: u64,
        tiles: &[TileInput<'_>],
        rows: Option<&RowCheckChunk>,
    ) -> TileRun {
        let mut run = TileRun::default();
        let mut parsed: Vec<(&TileInput<'_>, Vec<TileRecord<'_>>)> = Vec::new();
        for (k, t) in tiles.iter().enumerate() {
            if t.tile != first + k as u64 {
                break;
            }
            run.consumed += 1;
            match parse_tile(t.data) {
                Ok(records) => parsed.push((t, records)),
                Err(e) => {
                    self.problem(
                        Some(first_index(t.tile)),
                        None,
                        format!("data tile {} is malformed: {e}", t.tile),
                    );
                    run.malformed = Some(t.tile);
                    break;
                }
            }
        }
        let leaves = parsed.iter().flat_map(|(_, r)| r.iter().map(|r| r.leaf));
        let count = parsed.len() * TILE_WIDTH as usize;
        let hashes = hash_leaves(leaves, count);
        for ((t, records), mine) in parsed.iter().zip(hashes.chunks(TILE_WIDTH as usize)) {
            if let Some(rows) = rows {
                let start = first_index(t.tile);
                let mine_rows = rows.between(start, start + TILE_WIDTH);
                self.compare_row_records(t.tile, records, mine, &mine_rows);
            }
            if let Some(leaf_hashes) = self.feed_tile_hashed(t, records, mine) {
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
        let root = subtree_root(hashes);
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
