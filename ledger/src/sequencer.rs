//! The sequencer's decision, kept apart from storage.
//!
//! Given the right edge of the tree as it stands and the pending events in
//! arrival order, [`plan_append`] decides each event's dense index, every tree
//! node the appends complete, and the signed checkpoint for the new size. The
//! stores run it inside a transaction that holds the sequencer lock, and write
//! the plan out; nothing here touches I/O, so it is tested directly.
//!
//! The plan needs only each pending event's id and leaf hash. Stores compute
//! the hash from the stored bytes themselves (Postgres does it server-side),
//! so the event bytes are never shipped to the sequencer and back.

use uuid::Uuid;

use crate::hash::Hash;
use crate::keys::KeyPair;
use crate::note::Checkpoint;
use crate::tree::{Frontier, NodeKey};

/// At most this many events are sequenced under one checkpoint, to keep
/// transactions short; the rest wait for the next step.
pub const MAX_EVENTS_PER_STEP: usize = 10_000;

/// A submitted event waiting for an index.
#[derive(Clone, Copy, Debug)]
pub struct PendingEvent {
    pub event_id: Uuid,
    /// `SHA-256(0x00 || stored bytes)`, computed from the bytes as stored.
    pub leaf_hash: Hash,
}

/// An index assignment: the pending event `event_id` becomes entry `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewEntry {
    pub index: u64,
    pub event_id: Uuid,
}

/// Everything one sequencing step writes.
#[derive(Clone, Debug)]
pub struct AppendPlan {
    pub entries: Vec<NewEntry>,
    pub nodes: Vec<(NodeKey, Hash)>,
    pub checkpoint: Checkpoint,
    /// The signed note for `checkpoint`.
    pub note: String,
    /// The tree's right edge after the append: the next step's starting
    /// point, for a store that keeps it between steps.
    pub frontier: Frontier,
}

/// Plans the append of `pending` (already in arrival order, duplicates of
/// logged events already removed) onto the tree whose right edge is `frontier`,
/// and signs the resulting checkpoint with `key` (whose name is the log origin).
pub fn plan_append(mut frontier: Frontier, pending: &[PendingEvent], key: &KeyPair) -> AppendPlan {
    let mut entries = Vec::with_capacity(pending.len());
    let mut nodes = Vec::with_capacity(pending.len() * 2);
    for p in pending {
        let index = frontier.size();
        nodes.extend(frontier.push(p.leaf_hash));
        entries.push(NewEntry {
            index,
            event_id: p.event_id,
        });
    }
    let checkpoint = Checkpoint {
        origin: key.name().to_string(),
        size: frontier.size(),
        root: frontier.root(),
    };
    let note = checkpoint.sign(key);
    AppendPlan {
        entries,
        nodes,
        checkpoint,
        note,
        frontier,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::MeteringEvent;
    use crate::hash::leaf_hash;
    use crate::tree::MemoryTree;

    fn pending(n: u64) -> PendingEvent {
        let e = MeteringEvent::example(n);
        PendingEvent {
            event_id: e.id,
            leaf_hash: leaf_hash(&e.encode().unwrap()),
        }
    }

    #[test]
    fn two_steps_give_the_same_tree_as_one() {
        let key = KeyPair::generate("log").unwrap();
        let all: Vec<_> = (0..13).map(pending).collect();
        let one = plan_append(Frontier::new(), &all, &key);

        let first = plan_append(Frontier::new(), &all[..5], &key);
        let mut frontier = Frontier::new();
        all[..5]
            .iter()
            .for_each(|p| frontier.push_hash(p.leaf_hash));
        let second = plan_append(frontier, &all[5..], &key);

        assert_eq!(second.checkpoint, one.checkpoint);
        assert_eq!(
            second.entries[0],
            NewEntry {
                index: 5,
                event_id: all[5].event_id
            }
        );
        assert_eq!(first.nodes.len() + second.nodes.len(), one.nodes.len());
        assert_eq!(one.checkpoint.size, 13);
        // 13 leaves make 13 + 6 + 3 + 1 complete nodes.
        assert_eq!(one.nodes.len(), 23);
        // Every node written agrees with an independently built tree.
        let mut mem = MemoryTree::new();
        all.iter().for_each(|p| mem.push(p.leaf_hash));
        for (key, hash) in &one.nodes {
            assert_eq!(mem.node(*key), Some(*hash), "{key:?}");
        }
    }

    #[test]
    fn empty_step_still_signs_current_size() {
        let key = KeyPair::generate("log").unwrap();
        let plan = plan_append(Frontier::new(), &[], &key);
        assert_eq!(plan.checkpoint.size, 0);
        assert_eq!(plan.checkpoint.root, crate::hash::empty_root());
    }
}
