//! Serving proofs from a store: an event's inclusion in a signed checkpoint,
//! and the consistency of two signed checkpoints.
//!
//! Proofs are assembled from stored nodes (no recompute of the tree): from
//! the full hash tiles that hold them where the store keeps those
//! ([`crate::hashtile`]), otherwise one node at a time. Every proof is then
//! verified here against the signed root before it is returned, so a damaged
//! node or tile yields an error instead of a wrong proof, and when a tile is
//! to blame the error names it.

use std::collections::HashMap;

use crate::hash::{Hash, leaf_hash};
use crate::hashtile::{MalformedTile, Sources, TileKey, TileNodes, plan, resolve};
use crate::note::{Checkpoint, open_checkpoint};
use crate::proof::{
    ProofError, consistency_ranges, inclusion_ranges, verify_consistency, verify_inclusion,
};
use crate::store::{CheckpointRecord, LedgerStore, StoreError};
use crate::tree::{LeafRange, NodeKey, range_hash, range_keys};
use crate::verify::{Trust, names_event};

/// Why a proof could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ProveError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("event {0} is not in the log")]
    UnknownEvent(uuid::Uuid),
    #[error("the stored bytes filed under event {0} name another event; the store is damaged")]
    WrongEvent(uuid::Uuid),
    #[error("no signed checkpoint at size {size}{}", nearest(*before, *after))]
    NoCheckpoint {
        size: u64,
        /// The largest checkpointed size below `size`, and the smallest above.
        before: Option<u64>,
        after: Option<u64>,
    },
    #[error("the log has no signed checkpoint yet")]
    NoCheckpointYet,
    #[error("no signed checkpoint covers index {0} yet")]
    NotYetCovered(u64),
    #[error("checkpoint at size {size} does not verify: {why}")]
    BadCheckpoint { size: u64, why: String },
    #[error("tree node {0:?} is missing from the store")]
    MissingNode(LeafRange),
    #[error(
        "the assembled proof does not verify against the signed root ({0}); the store is damaged"
    )]
    Invalid(ProofError),
    #[error(
        "hash tile {level}/{index} disagrees with the stored tree node (level {}, index {}) it \
         stands for; the store is damaged",
        node.level,
        node.index
    )]
    DamagedHashTile {
        level: u8,
        index: u64,
        node: NodeKey,
    },
    #[error("{0}; the store is damaged")]
    MalformedHashTile(#[from] MalformedTile),
    #[error("sizes have no consistency proof: {0}")]
    BadSizes(String),
}

/// An inclusion proof with the checkpoint it is relative to.
#[derive(Clone, Debug)]
pub struct InclusionProof {
    pub index: u64,
    pub leaf: Vec<u8>,
    pub leaf_hash: Hash,
    pub proof: Vec<Hash>,
    pub checkpoint: Checkpoint,
    pub note: String,
}

/// A consistency proof between two signed checkpoints.
#[derive(Clone, Debug)]
pub struct ConsistencyProof {
    pub old: Checkpoint,
    pub new: Checkpoint,
    pub proof: Vec<Hash>,
    pub old_note: String,
    pub new_note: String,
}

fn open(record: &CheckpointRecord, trust: &Trust) -> Result<Checkpoint, ProveError> {
    let bad = |why: String| ProveError::BadCheckpoint {
        size: record.size,
        why,
    };
    let (cp, _) = open_checkpoint(&record.note, &trust.log_keys, trust.origin.as_deref())
        .map_err(|e| bad(e.to_string()))?;
    if cp.size != record.size {
        return Err(bad(format!("note says size {}", cp.size)));
    }
    Ok(cp)
}

/// The hashes of `ranges` (subtrees of a tree of `size` leaves), and which
/// nodes came from hash tiles (to blame a tile if the proof fails).
struct Assembled {
    hashes: Vec<Hash>,
    from_tiles: Vec<(NodeKey, Hash, TileKey)>,
}

async fn hashes_for(
    store: &impl LedgerStore,
    ranges: &[LeafRange],
    size: u64,
) -> Result<Assembled, ProveError> {
    let keys: Vec<_> = ranges.iter().flat_map(|r| range_keys(*r)).collect();
    let sources = if store.keeps_hash_tiles() {
        plan(&keys, size)
    } else {
        Sources {
            tiles: Vec::new(),
            nodes: keys.clone(),
        }
    };
    let read = store
        .tiles_and_nodes(&sources.tiles, &sources.nodes)
        .await?;
    let mut tiles = HashMap::with_capacity(read.tiles.len());
    for (key, bytes) in &read.tiles {
        tiles.insert(*key, TileNodes::new(*key, bytes)?);
    }
    let mut found = resolve(&keys, &tiles, &read.nodes);
    // A full tile that is not stored (a log older than its tiles, or a
    // damaged one): its nodes are read one by one instead.
    let absent: Vec<NodeKey> = keys
        .iter()
        .filter(|k| !found.contains_key(k))
        .copied()
        .collect();
    if !absent.is_empty() {
        found.extend(store.nodes(&absent).await?);
    }
    let hashes = ranges
        .iter()
        .map(|r| range_hash(*r, &|k| found.get(&k).copied()).ok_or(ProveError::MissingNode(*r)))
        .collect::<Result<_, _>>()?;
    let from_tiles = keys
        .iter()
        .filter_map(|&k| {
            let tile = tiles.get(&TileKey::of(k))?;
            Some((k, tile.node(k)?, tile.key()))
        })
        .collect();
    Ok(Assembled { hashes, from_tiles })
}

/// Why an assembled proof failed: a hash tile that disagrees with the node
/// table it was built from, or else the proof itself.
async fn blame(
    store: &impl LedgerStore,
    assembled: &Assembled,
    failure: ProofError,
) -> Result<ProveError, ProveError> {
    if assembled.from_tiles.is_empty() {
        return Ok(ProveError::Invalid(failure));
    }
    let keys: Vec<NodeKey> = assembled.from_tiles.iter().map(|(k, _, _)| *k).collect();
    let stored = store.nodes(&keys).await?;
    Ok(assembled
        .from_tiles
        .iter()
        .find(|(k, hash, _)| stored.get(k).is_some_and(|s| s != hash))
        .map_or(ProveError::Invalid(failure), |&(node, _, tile)| {
            ProveError::DamagedHashTile {
                level: tile.level,
                index: tile.index,
                node,
            }
        }))
}

/// Proves that the event with `id` is in the latest checkpoint.
pub async fn prove_event(
    store: &impl LedgerStore,
    id: uuid::Uuid,
    trust: &Trust,
) -> Result<InclusionProof, ProveError> {
    let entry = store
        .entry_by_event(id)
        .await?
        .ok_or(ProveError::UnknownEvent(id))?;
    // The id column is only an index: the proof is about the bytes, so they
    // must be the event that was asked for.
    if !names_event(&entry.leaf, &id) {
        return Err(ProveError::WrongEvent(id));
    }
    let latest = store
        .status()
        .await?
        .latest_checkpoint
        .ok_or(ProveError::NotYetCovered(entry.index))?;
    if latest.size <= entry.index {
        return Err(ProveError::NotYetCovered(entry.index));
    }
    let checkpoint = open(&latest, trust)?;
    prove_index_at(store, entry.index, entry.leaf, checkpoint, latest.note).await
}

/// Proves that index `index` with bytes `leaf` is in the tree of `checkpoint`.
pub async fn prove_index_at(
    store: &impl LedgerStore,
    index: u64,
    leaf: Vec<u8>,
    checkpoint: Checkpoint,
    note: String,
) -> Result<InclusionProof, ProveError> {
    let ranges =
        inclusion_ranges(index, checkpoint.size).ok_or(ProveError::NotYetCovered(index))?;
    let assembled = hashes_for(store, &ranges, checkpoint.size).await?;
    let leaf_hash = leaf_hash(&leaf);
    let checked = verify_inclusion(
        index,
        checkpoint.size,
        &leaf_hash,
        &assembled.hashes,
        &checkpoint.root,
    );
    if let Err(failure) = checked {
        return Err(blame(store, &assembled, failure).await?);
    }
    let proof = assembled.hashes;
    Ok(InclusionProof {
        index,
        leaf,
        leaf_hash,
        proof,
        checkpoint,
        note,
    })
}

/// What to say about the checkpointed sizes around one that has none.
fn nearest(before: Option<u64>, after: Option<u64>) -> String {
    match (before, after) {
        (Some(b), Some(a)) => format!(" (the nearest are at sizes {b} and {a})"),
        (Some(b), None) => format!(" (the latest is at size {b})"),
        (None, Some(a)) => format!(" (the first is at size {a})"),
        (None, None) => String::new(),
    }
}

/// Proves that the checkpoint at `old` is a prefix of the one at `new`
/// (the latest when `new` is `None`).
pub async fn prove_consistency(
    store: &impl LedgerStore,
    old: u64,
    new: Option<u64>,
    trust: &Trust,
) -> Result<ConsistencyProof, ProveError> {
    let checkpoints = store.checkpoints().await?;
    let find = |size: u64| {
        checkpoints
            .iter()
            .find(|c| c.size == size)
            .ok_or_else(|| ProveError::NoCheckpoint {
                size,
                before: checkpoints
                    .iter()
                    .map(|c| c.size)
                    .filter(|s| *s < size)
                    .max(),
                after: checkpoints
                    .iter()
                    .map(|c| c.size)
                    .filter(|s| *s > size)
                    .min(),
            })
    };
    let old_rec = find(old)?;
    let new_rec = match new {
        Some(n) => find(n)?,
        None => checkpoints.last().ok_or(ProveError::NoCheckpointYet)?,
    };
    let old_cp = open(old_rec, trust)?;
    let new_cp = open(new_rec, trust)?;
    let ranges = consistency_ranges(old_cp.size, new_cp.size)
        .ok_or_else(|| ProveError::BadSizes(format!("{} -> {}", old_cp.size, new_cp.size)))?;
    let assembled = hashes_for(store, &ranges, new_cp.size).await?;
    let checked = verify_consistency(
        old_cp.size,
        new_cp.size,
        &old_cp.root,
        &new_cp.root,
        &assembled.hashes,
    );
    if let Err(failure) = checked {
        return Err(blame(store, &assembled, failure).await?);
    }
    let proof = assembled.hashes;
    Ok(ConsistencyProof {
        old: old_cp,
        new: new_cp,
        proof,
        old_note: old_rec.note.clone(),
        new_note: new_rec.note.clone(),
    })
}
