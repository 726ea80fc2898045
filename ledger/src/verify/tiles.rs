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
use super::signed::SignedBatches;
use super::{Checker, MOVED, names_event, on_all_cores};
use crate::hash::{Hash, leaf_hash, node_hash};
use crate::store::RowCheckChunk;
use crate::tile::{
    Packing, TILE_LEVEL, TILE_WIDTH, TileRecord, parse_tile, plain_len, unpack_tile_to,
};
use crate::tree::NodeKey;

/// One stored tile as read.
#[derive(Clone, Copy, Debug)]
pub struct TileInput<'a> {
    pub tile: u64,
    /// How `data` holds the tile ([`crate::tile::Packing`]).
    pub packing: i16,
    /// The tile as stored.
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

/// What can be worked out about one tile on its own, before the checker
/// takes it in order: its records, their leaf hashes, the subtree root over
/// them, which records do not carry their event id, and how its rows'
/// verify records differ from it.
struct TileDigest<'a> {
    records: Result<Vec<TileRecord<'a>>, String>,
    hashes: Vec<Hash>,
    root: Hash,
    /// Positions in the tile of records whose bytes lack their event id.
    unnamed: Vec<usize>,
    /// Positions in the tile of records that are not what their batch
    /// signed, with why ([`SignedBatches::fault`]).
    unsigned: Vec<(usize, String)>,
    row_faults: Vec<(u64, &'static str)>,
}

impl TileDigest<'_> {
    fn malformed(why: String) -> Self {
        TileDigest {
            records: Err(why),
            hashes: Vec::new(),
            root: [0; 32],
            unnamed: Vec::new(),
            unsigned: Vec::new(),
            row_faults: Vec::new(),
        }
    }
}

/// What the digests read of the checker: the tile's rows, and the batches.
#[derive(Clone, Copy)]
struct Against<'r> {
    rows: Option<&'r RowCheckChunk>,
    batches: &'r SignedBatches,
}

/// Unpacks `t` into `room` (sized by `plain_len`; empty for a plain tile,
/// which is read where it is), then digests it while it is in this core's
/// cache.
fn digest_tile<'a>(t: &TileInput<'a>, room: &'a mut [u8], against: Against<'_>) -> TileDigest<'a> {
    let plain: &'a [u8] = if t.packing == Packing::Plain.code() {
        t.data
    } else {
        if let Err(e) = unpack_tile_to(t.packing, t.data, room) {
            return TileDigest::malformed(e.to_string());
        }
        room
    };
    let parsed = match parse_tile(plain) {
        Ok(parsed) => parsed,
        Err(e) => return TileDigest::malformed(e.to_string()),
    };
    let hashes: Vec<Hash> = parsed.iter().map(|r| leaf_hash(r.leaf)).collect();
    let root = subtree_root(&hashes);
    let unnamed = (parsed.iter().enumerate())
        .filter(|(_, r)| !names_event(r.leaf, &r.event_id))
        .map(|(i, _)| i)
        .collect();
    let mut last = None;
    let unsigned = (parsed.iter().zip(&hashes).enumerate())
        .filter_map(|(i, (r, h))| {
            let fault = against
                .batches
                .fault(&mut last, r.batch_root, r.batch_pos, h);
            fault.map(|why| (i, why))
        })
        .collect();
    let row_faults = against.rows.map_or_else(Vec::new, |rows| {
        let start = first_index(t.tile);
        row_record_faults(
            start,
            &parsed,
            &hashes,
            &rows.between(start, start + TILE_WIDTH),
        )
    });
    TileDigest {
        records: Ok(parsed),
        hashes,
        root,
        unnamed,
        unsigned,
        row_faults,
    }
}

/// Most bytes of unpacked tiles held at once. A chunk of 64 tiles of
/// 527-byte events takes about 9.5 MB; a tile may declare up to
/// [`crate::tile::MAX_PLAIN_TILE_BYTES`], so tiles that declare more
/// together are digested in groups, and a damaged store cannot make the
/// verifier set aside gigabytes.
const SCRATCH_BUDGET: usize = 64 << 20;

/// Room a tile needs in the scratch buffer: its declared plain length if
/// packed (none for a plain tile, read where it is, or for one whose length
/// cannot be known, which then fails to unpack for the same reason).
fn room_len(t: &TileInput<'_>) -> usize {
    if t.packing == Packing::Plain.code() {
        return 0;
    }
    plain_len(t.packing, t.data).unwrap_or(0)
}

/// The end of the group of tiles starting at `from` whose rooms fit in
/// [`SCRATCH_BUDGET`] together (at least one tile).
fn group_end(tiles: &[TileInput<'_>], from: usize) -> usize {
    let mut total = 0;
    let mut end = from;
    while end < tiles.len() {
        let room = room_len(&tiles[end]);
        if end > from && total + room > SCRATCH_BUDGET {
            break;
        }
        total += room;
        end += 1;
    }
    end
}

/// [`digest_tile`] for every tile, on all available cores, each tile
/// unpacked into its own part of `scratch`.
fn digest_tiles<'a>(
    tiles: &[TileInput<'a>],
    scratch: &'a mut Vec<u8>,
    against: Against<'_>,
) -> Vec<TileDigest<'a>> {
    let lens: Vec<usize> = tiles.iter().map(room_len).collect();
    let total: usize = lens.iter().sum();
    if scratch.len() < total {
        // Grown, never shrunk or cleared: unpacking overwrites every byte used.
        scratch.resize(total, 0);
    }
    let mut rooms = Vec::with_capacity(tiles.len());
    let mut rest: &'a mut [u8] = &mut scratch[..total];
    for len in lens {
        let (room, after) = std::mem::take(&mut rest).split_at_mut(len);
        rooms.push(room);
        rest = after;
    }
    let work: Vec<(&TileInput<'a>, &'a mut [u8])> = tiles.iter().zip(rooms).collect();
    on_all_cores(work, 4, |(t, room)| digest_tile(t, room, against))
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
        let tiles = &tiles[..consecutive];
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut at = 0;
        'groups: while at < tiles.len() {
            let end = group_end(tiles, at);
            let against = Against {
                rows,
                batches: &self.batches,
            };
            let digests = digest_tiles(&tiles[at..end], &mut scratch, against);
            for (t, mut digest) in tiles[at..end].iter().zip(digests) {
                run.consumed += 1;
                let records = match std::mem::replace(&mut digest.records, Ok(Vec::new())) {
                    Ok(records) => records,
                    Err(e) => {
                        self.problem(
                            Some(first_index(t.tile)),
                            None,
                            format!("data tile {} is malformed: {e}", t.tile),
                        );
                        run.malformed = Some(t.tile);
                        break 'groups;
                    }
                };
                if rows.is_some() {
                    self.report_row_faults(std::mem::take(&mut digest.row_faults));
                }
                if let Some(leaf_hashes) = self.feed_tile_hashed(t, &records, &digest) {
                    run.compare_leaves.push((t.tile, leaf_hashes));
                }
            }
            at = end;
        }
        self.scratch = scratch;
        run
    }

    fn feed_tile_hashed(
        &mut self,
        t: &TileInput<'_>,
        records: &[TileRecord<'_>],
        digest: &TileDigest<'_>,
    ) -> Option<Vec<Hash>> {
        let (hashes, root) = (&digest.hashes, digest.root);
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
        // Problems in index order, an entry's event id before its batch.
        let mut unnamed = digest.unnamed.iter().copied().peekable();
        let mut unsigned = digest.unsigned.iter().peekable();
        loop {
            let i = match (unnamed.peek(), unsigned.peek()) {
                (None, None) => break,
                (Some(&u), Some((s, _))) => u.min(*s),
                (Some(&u), None) => u,
                (None, Some((s, _))) => *s,
            };
            let index = start + i as u64;
            if unnamed.next_if_eq(&i).is_some() {
                self.unnamed(index, &records[i].event_id);
            }
            if let Some((_, why)) = unsigned.next_if(|(s, _)| *s == i) {
                self.problem(Some(index), None, why.clone());
            }
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
            Some(stored) if stored != root => Some(hashes.clone()),
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
    fn tiles_declaring_much_are_digested_in_groups_within_the_budget() {
        fn input(packing: i16, data: &[u8]) -> TileInput<'_> {
            TileInput {
                tile: 0,
                packing,
                data,
                recorded_root: None,
            }
        }
        let declaring = |n: u32| n.to_le_bytes();
        let (big, small, huge) = (declaring(40 << 20), declaring(1 << 20), declaring(64 << 20));
        let tiles = [
            input(1, &small),
            input(1, &big),
            input(1, &big),
            input(0, &big),
            input(1, &[1]),
            input(1, &small),
        ];
        // 1 + 40 MiB fit; the next 40 starts a group, which the plain tile
        // and the unreadable one (no room each) and 1 MiB join.
        assert_eq!(group_end(&tiles, 0), 2);
        assert_eq!(group_end(&tiles, 2), 6);
        assert_eq!((room_len(&tiles[3]), room_len(&tiles[4])), (0, 0));
        // A single tile at the budget still forms a group of its own.
        let tiles = [input(1, &huge), input(1, &huge)];
        assert_eq!(group_end(&tiles, 0), 1);
    }

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
