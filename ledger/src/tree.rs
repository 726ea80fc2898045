//! Tree geometry and incremental appends, independent of where nodes live.
//!
//! A node is named by `(level, index)`: level 0 holds leaf hashes, and the node
//! at `(level, i)` is the root of the complete subtree over leaves
//! `[i * 2^level, (i + 1) * 2^level)`. Only complete subtrees are ever stored,
//! so a stored node never changes once written. Any RFC 6962 subtree hash
//! `MTH(D[start:end])` is computed from a handful of such nodes.

use crate::hash::{Hash, empty_root, node_hash};
use std::collections::HashMap;

/// Names one complete subtree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeKey {
    /// Height above the leaves (0 = a leaf hash).
    pub level: u8,
    /// Position among the nodes of that level.
    pub index: u64,
}

/// A half-open range of leaf indexes `[start, end)`, standing for `MTH(D[start:end])`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeafRange {
    pub start: u64,
    pub end: u64,
}

/// Largest power of two strictly below `n` (`n >= 2`), the RFC 6962 split point.
pub fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The stored nodes whose hashes determine `MTH(D[start:end])`, left to right.
pub fn range_keys(range: LeafRange) -> Vec<NodeKey> {
    let mut keys = Vec::new();
    collect_range_keys(range.start, range.end, &mut keys);
    keys
}

fn collect_range_keys(start: u64, end: u64, out: &mut Vec<NodeKey>) {
    let len = end - start;
    if len.is_power_of_two() && start.is_multiple_of(len) {
        out.push(NodeKey {
            level: len.trailing_zeros() as u8,
            index: start >> len.trailing_zeros(),
        });
        return;
    }
    let k = split_point(len);
    collect_range_keys(start, start + k, out);
    collect_range_keys(start + k, end, out);
}

/// Computes `MTH(D[start:end])` from node hashes supplied by `node`.
/// Returns `None` if a needed node is missing.
pub fn range_hash(range: LeafRange, node: &impl Fn(NodeKey) -> Option<Hash>) -> Option<Hash> {
    let len = range.end - range.start;
    if len == 0 {
        return Some(empty_root());
    }
    if len.is_power_of_two() && range.start.is_multiple_of(len) {
        return node(NodeKey {
            level: len.trailing_zeros() as u8,
            index: range.start >> len.trailing_zeros(),
        });
    }
    let k = split_point(len);
    let left = range_hash(
        LeafRange {
            start: range.start,
            end: range.start + k,
        },
        node,
    )?;
    let right = range_hash(
        LeafRange {
            start: range.start + k,
            end: range.end,
        },
        node,
    )?;
    Some(node_hash(&left, &right))
}

/// The complete subtrees along the right edge of a tree of `size` leaves:
/// one per set bit of `size`, highest first. Their hashes are all that is
/// needed to append more leaves and to compute the root.
pub fn frontier_keys(size: u64) -> Vec<NodeKey> {
    let mut keys = Vec::new();
    let mut start = 0u64;
    for level in (0..64u8).rev() {
        if size & (1u64 << level) != 0 {
            keys.push(NodeKey {
                level,
                index: start >> level,
            });
            start += 1u64 << level;
        }
    }
    keys
}

/// The right edge of a tree, enough to append leaves and compute roots
/// without reading the rest of the tree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// `(level, hash)` of each right-edge complete subtree, highest first.
    edge: Vec<(u8, Hash)>,
}

impl Frontier {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds the frontier of a tree of `size` leaves from the hashes of
    /// `frontier_keys(size)`, in that order.
    pub fn from_hashes(size: u64, hashes: &[Hash]) -> Option<Self> {
        let keys = frontier_keys(size);
        if keys.len() != hashes.len() {
            return None;
        }
        let edge = keys
            .iter()
            .zip(hashes)
            .map(|(k, h)| (k.level, *h))
            .collect();
        Some(Self { size, edge })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one leaf hash and returns every complete node this creates
    /// (the leaf itself first, then each parent it completes).
    pub fn push(&mut self, leaf: Hash) -> Vec<(NodeKey, Hash)> {
        let mut created = vec![(
            NodeKey {
                level: 0,
                index: self.size,
            },
            leaf,
        )];
        let mut current = (0u8, leaf);
        while let Some(&(level, left)) = self.edge.last() {
            if level != current.0 {
                break;
            }
            self.edge.pop();
            let parent = node_hash(&left, &current.1);
            let parent_level = level + 1;
            // The new leaf lies inside every node it completes.
            let index = self.size >> parent_level;
            created.push((
                NodeKey {
                    level: parent_level,
                    index,
                },
                parent,
            ));
            current = (parent_level, parent);
        }
        self.edge.push(current);
        self.size += 1;
        created
    }

    /// Appends one leaf hash without reporting the nodes created (faster for verifiers).
    pub fn push_hash(&mut self, leaf: Hash) {
        let mut current = (0u8, leaf);
        while let Some(&(level, left)) = self.edge.last() {
            if level != current.0 {
                break;
            }
            self.edge.pop();
            current = (level + 1, node_hash(&left, &current.1));
        }
        self.edge.push(current);
        self.size += 1;
    }

    /// Appends a whole complete subtree of `2^level` leaves at once. The size
    /// must be a multiple of `2^level` (the subtree starts on its own
    /// boundary), as it is for data tiles; returns false otherwise.
    pub fn push_subtree(&mut self, level: u8, hash: Hash) -> bool {
        if level >= 63 || !self.size.is_multiple_of(1u64 << level) {
            return false;
        }
        let mut current = (level, hash);
        while let Some(&(l, left)) = self.edge.last() {
            if l != current.0 {
                break;
            }
            self.edge.pop();
            current = (l + 1, node_hash(&left, &current.1));
        }
        self.edge.push(current);
        self.size += 1u64 << level;
        true
    }

    /// The RFC 6962 root of the tree so far.
    pub fn root(&self) -> Hash {
        let mut iter = self.edge.iter().rev();
        let Some(&(_, mut acc)) = iter.next() else {
            return empty_root();
        };
        for (_, left) in iter {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

/// An in-memory node store: used by tests, by offline verification of an
/// export, and by the dev-mode tools.
#[derive(Clone, Debug, Default)]
pub struct MemoryTree {
    frontier: Frontier,
    nodes: HashMap<NodeKey, Hash>,
}

impl MemoryTree {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, leaf: Hash) {
        for (key, hash) in self.frontier.push(leaf) {
            self.nodes.insert(key, hash);
        }
    }

    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    pub fn node(&self, key: NodeKey) -> Option<Hash> {
        self.nodes.get(&key).copied()
    }

    /// Root of the first `size` leaves (any earlier tree size).
    pub fn root_at(&self, size: u64) -> Option<Hash> {
        if size > self.size() {
            return None;
        }
        range_hash(
            LeafRange {
                start: 0,
                end: size,
            },
            &|k| self.node(k),
        )
    }

    /// Inclusion proof for `index` in the tree of `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Option<Vec<Hash>> {
        if size > self.size() {
            return None;
        }
        crate::proof::inclusion_ranges(index, size)?
            .into_iter()
            .map(|r| range_hash(r, &|k| self.node(k)))
            .collect()
    }

    /// Consistency proof from `old` to `new` leaves.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Option<Vec<Hash>> {
        if new > self.size() {
            return None;
        }
        crate::proof::consistency_ranges(old, new)?
            .into_iter()
            .map(|r| range_hash(r, &|k| self.node(k)))
            .collect()
    }
}
