//! Hash tiles: the tree's nodes stored 256 at a time, so a proof reads a
//! couple of values instead of one row per node (the idea of C2SP
//! tlog-tiles, with this project's own storage).
//!
//! Hash tile `(L, t)` holds the nodes of tree level `8·L` with indexes
//! `[256·t, 256·t + 256)`, concatenated in index order (8,192 bytes). It is
//! written once, when its last node exists, and never changes. The nodes of
//! levels `8·L + 1 ..= 8·L + 7` over the same leaves are not stored in it:
//! they are recomputed by hashing, which for a whole tile is 255 SHA-256
//! calls. A tile is full or absent; nodes of unfinished tiles (the right
//! edge of the tree) are read from the node table.
//!
//! Nothing read here is trusted: proofs assembled from tiles are verified
//! against the signed root before they are served ([`crate::prove`]).

use std::collections::{BTreeSet, HashMap};

use crate::hash::{Hash, hash_from_slice, node_hash};
use crate::tree::NodeKey;

/// Tree levels per tile (the levels `8·L .. 8·L + 8` live in tile level `L`).
pub const TILE_HEIGHT: u8 = 8;
/// Nodes in a tile's stored row.
pub const TILE_WIDTH: u64 = 1 << TILE_HEIGHT;
/// Bytes of a stored hash tile.
pub const TILE_BYTES: usize = TILE_WIDTH as usize * 32;

/// Names one hash tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TileKey {
    /// Tile level `L`: the tile stores nodes of tree level `8·L`.
    pub level: u8,
    pub index: u64,
}

impl TileKey {
    /// The tile that holds (or recomputes) node `key`.
    pub fn of(key: NodeKey) -> Self {
        let level = key.level / TILE_HEIGHT;
        let height = key.level % TILE_HEIGHT;
        Self {
            level,
            index: (key.index << height) >> TILE_HEIGHT,
        }
    }

    /// Whether a tree of `size` leaves has every node of this tile.
    pub fn full_at(self, size: u64) -> bool {
        let span = u32::from(self.level) * u32::from(TILE_HEIGHT) + u32::from(TILE_HEIGHT);
        self.index
            .checked_add(1)
            .and_then(|n| n.checked_mul(1u64.checked_shl(span)?))
            .is_some_and(|leaves| leaves <= size)
    }
}

/// Every tile completed by growing a tree from `old` to `new` leaves, lowest
/// level first.
pub fn completed(old: u64, new: u64) -> Vec<TileKey> {
    let mut out = Vec::new();
    for level in 0..(64 / TILE_HEIGHT) {
        let span = u32::from(level) * u32::from(TILE_HEIGHT) + u32::from(TILE_HEIGHT);
        let Some(width) = 1u64.checked_shl(span) else {
            break;
        };
        out.extend((old / width..new / width).map(|index| TileKey { level, index }));
    }
    out
}

/// Where each node a proof needs will come from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sources {
    /// Full tiles that recompute some of the nodes.
    pub tiles: Vec<TileKey>,
    /// Nodes outside every full tile, read one by one.
    pub nodes: Vec<NodeKey>,
}

/// Splits `keys` (nodes of a tree of `size` leaves) between full tiles and
/// single nodes.
pub fn plan(keys: &[NodeKey], size: u64) -> Sources {
    let mut tiles = BTreeSet::new();
    let mut nodes = Vec::new();
    for &key in keys {
        let tile = TileKey::of(key);
        if tile.full_at(size) {
            tiles.insert(tile);
        } else {
            nodes.push(key);
        }
    }
    Sources {
        tiles: tiles.into_iter().collect(),
        nodes,
    }
}

/// Why stored tile bytes cannot be a tile.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("hash tile {level}/{index} has {len} bytes, not {TILE_BYTES}")]
pub struct MalformedTile {
    pub level: u8,
    pub index: u64,
    pub len: usize,
}

/// Every node a full tile stands for: its stored row and the seven levels
/// above it, recomputed.
#[derive(Clone, Debug)]
pub struct TileNodes {
    key: TileKey,
    /// `rows[h]` holds the `256 >> h` nodes of tree level `8·L + h`.
    rows: Vec<Vec<Hash>>,
}

impl TileNodes {
    /// Recomputes a tile's inner levels from its stored bytes.
    pub fn new(key: TileKey, data: &[u8]) -> Result<Self, MalformedTile> {
        let malformed = MalformedTile {
            level: key.level,
            index: key.index,
            len: data.len(),
        };
        if data.len() != TILE_BYTES {
            return Err(malformed);
        }
        let bottom: Vec<Hash> = data
            .chunks_exact(32)
            .map(|c| hash_from_slice(c).ok_or(malformed.clone()))
            .collect::<Result<_, _>>()?;
        let mut rows = vec![bottom];
        for _ in 1..TILE_HEIGHT {
            let below = rows.last().map(Vec::as_slice).unwrap_or_default();
            let row = below
                .chunks_exact(2)
                .map(|p| node_hash(&p[0], &p[1]))
                .collect();
            rows.push(row);
        }
        Ok(Self { key, rows })
    }

    pub fn key(&self) -> TileKey {
        self.key
    }

    /// Node `key`, if this tile holds or recomputes it.
    pub fn node(&self, key: NodeKey) -> Option<Hash> {
        if TileKey::of(key) != self.key {
            return None;
        }
        let height = key.level % TILE_HEIGHT;
        let first = (self.key.index << TILE_HEIGHT) >> height;
        let at = usize::try_from(key.index - first).ok()?;
        self.rows.get(usize::from(height))?.get(at).copied()
    }
}

/// Node hashes for `keys` from the tiles and single nodes a store returned;
/// keys found in neither are left out (the caller reads them as nodes).
pub fn resolve(
    keys: &[NodeKey],
    tiles: &HashMap<TileKey, TileNodes>,
    nodes: &HashMap<NodeKey, Hash>,
) -> HashMap<NodeKey, Hash> {
    keys.iter()
        .filter_map(|&k| {
            let from_tile = tiles.get(&TileKey::of(k)).and_then(|t| t.node(k));
            from_tile.or_else(|| nodes.get(&k).copied()).map(|h| (k, h))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proof::inclusion_ranges;
    use crate::tree::{MemoryTree, range_keys};

    fn tree(n: u64) -> MemoryTree {
        let mut t = MemoryTree::new();
        (0..n).for_each(|i| t.push(crate::hash::leaf_hash(&i.to_be_bytes())));
        t
    }

    fn stored(tree: &MemoryTree, key: TileKey) -> Vec<u8> {
        (0..TILE_WIDTH)
            .flat_map(|i| {
                let node = NodeKey {
                    level: key.level * TILE_HEIGHT,
                    index: key.index * TILE_WIDTH + i,
                };
                tree.node(node).unwrap()
            })
            .collect()
    }

    #[test]
    fn tile_of_a_node() {
        let k = |level, index| TileKey::of(NodeKey { level, index });
        assert_eq!(k(0, 255), TileKey { level: 0, index: 0 });
        assert_eq!(k(0, 256), TileKey { level: 0, index: 1 });
        assert_eq!(k(7, 1), TileKey { level: 0, index: 0 });
        assert_eq!(k(7, 2), TileKey { level: 0, index: 1 });
        assert_eq!(k(8, 0), TileKey { level: 1, index: 0 });
        assert_eq!(k(15, 3), TileKey { level: 1, index: 1 });
        assert_eq!(k(16, 5), TileKey { level: 2, index: 0 });
    }

    #[test]
    fn fullness_and_completion_agree() {
        let t = |level, index| TileKey { level, index };
        assert!(!t(0, 0).full_at(255));
        assert!(t(0, 0).full_at(256));
        assert!(!t(1, 0).full_at(65_535));
        assert!(t(1, 0).full_at(65_536));
        assert!(!t(7, u64::MAX).full_at(u64::MAX));
        assert_eq!(completed(0, 255), vec![]);
        assert_eq!(completed(255, 513), vec![t(0, 0), t(0, 1)]);
        assert_eq!(completed(65_280, 65_536), vec![t(0, 255), t(1, 0)]);
        for (old, new) in [(0, 70_000), (300, 131_073), (65_536, 65_536)] {
            for key in completed(old, new) {
                assert!(key.full_at(new) && !key.full_at(old), "{key:?}");
            }
        }
    }

    #[test]
    fn every_node_of_a_tile_matches_the_tree() {
        let mem = tree(70_000);
        for key in [
            TileKey { level: 0, index: 3 },
            TileKey { level: 1, index: 0 },
        ] {
            let tile = TileNodes::new(key, &stored(&mem, key)).unwrap();
            for height in 0..TILE_HEIGHT {
                let level = key.level * TILE_HEIGHT + height;
                let first = (key.index << TILE_HEIGHT) >> height;
                for index in first..first + (TILE_WIDTH >> height) {
                    let node = NodeKey { level, index };
                    assert_eq!(tile.node(node), mem.node(node), "{node:?}");
                }
            }
            // Nodes of other tiles are not answered.
            let outside = NodeKey {
                level: key.level * TILE_HEIGHT,
                index: (key.index + 1) * TILE_WIDTH,
            };
            assert_eq!(tile.node(outside), None);
        }
    }

    #[test]
    fn proofs_from_tiles_and_right_edge_nodes_match_the_tree() {
        let size = 66_000;
        let mem = tree(size);
        for index in [0, 255, 256, 40_000, 65_535, 65_536, 65_999] {
            let ranges = inclusion_ranges(index, size).unwrap();
            let keys: Vec<_> = ranges.iter().flat_map(|r| range_keys(*r)).collect();
            let sources = plan(&keys, size);
            let tiles = sources
                .tiles
                .iter()
                .map(|&k| (k, TileNodes::new(k, &stored(&mem, k)).unwrap()))
                .collect();
            let nodes = sources
                .nodes
                .iter()
                .map(|&k| (k, mem.node(k).unwrap()))
                .collect();
            let found = resolve(&keys, &tiles, &nodes);
            for k in &keys {
                assert_eq!(found.get(k).copied(), mem.node(*k), "{index}: {k:?}");
            }
        }
    }

    #[test]
    fn wrong_length_is_malformed() {
        let key = TileKey { level: 0, index: 0 };
        assert!(TileNodes::new(key, &[0; TILE_BYTES - 1]).is_err());
        assert!(TileNodes::new(key, &[0; TILE_BYTES + 32]).is_err());
    }
}
