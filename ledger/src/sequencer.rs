//! The sequencer's decision, kept apart from storage.
//!
//! Given the right edge of the tree as it stands and the pending events in
//! arrival order, [`plan_append`] decides each event's dense index, every tree
//! node the appends complete, and the signed checkpoint for the new size. The
//! stores run it inside a transaction that holds the sequencer lock, and write
//! the plan out; nothing here touches I/O, so it is tested directly.

use uuid::Uuid;

use crate::event::MeteringEvent;
use crate::hash::{Hash, leaf_hash};
use crate::keys::KeyPair;
use crate::note::Checkpoint;
use crate::tree::{Frontier, NodeKey};

/// At most this many events are sequenced under one checkpoint, to keep
/// transactions short; the rest wait for the next step.
pub const MAX_EVENTS_PER_STEP: usize = 20_000;

/// A submitted event waiting for an index.
#[derive(Clone, Debug)]
pub struct PendingEvent {
    pub event_id: Uuid,
    pub batch_root: Vec<u8>,
    pub batch_pos: u32,
    pub leaf: Vec<u8>,
}

/// A new log entry as the stores write it.
#[derive(Clone, Debug)]
pub struct NewEntry {
    pub index: u64,
    pub event_id: Uuid,
    pub leaf: Vec<u8>,
    pub batch_root: Vec<u8>,
    pub batch_pos: u32,
    pub event_time: chrono::DateTime<chrono::Utc>,
    /// `namespace/name`, for queries.
    pub agent: String,
}

/// Everything one sequencing step writes.
#[derive(Clone, Debug)]
pub struct AppendPlan {
    pub entries: Vec<NewEntry>,
    pub nodes: Vec<(NodeKey, Hash)>,
    pub checkpoint: Checkpoint,
    /// The signed note for `checkpoint`.
    pub note: String,
}

/// Why a step could not be planned.
#[derive(Debug, thiserror::Error)]
pub enum SequenceError {
    #[error("pending event {0} does not decode: {1}")]
    BadPending(Uuid, String),
    #[error("pending event id {0} does not match its bytes")]
    IdMismatch(Uuid),
}

/// Plans the append of `pending` (already in arrival order, duplicates of
/// logged events already removed) onto the tree whose right edge is `frontier`,
/// and signs the resulting checkpoint with `key` (whose name is the log origin).
pub fn plan_append(
    mut frontier: Frontier,
    pending: Vec<PendingEvent>,
    key: &KeyPair,
) -> Result<AppendPlan, SequenceError> {
    let mut entries = Vec::with_capacity(pending.len());
    let mut nodes = Vec::with_capacity(pending.len() * 2);
    for p in pending {
        let event = MeteringEvent::decode(&p.leaf)
            .map_err(|e| SequenceError::BadPending(p.event_id, e.to_string()))?;
        if event.id != p.event_id {
            return Err(SequenceError::IdMismatch(p.event_id));
        }
        let index = frontier.size();
        nodes.extend(frontier.push(leaf_hash(&p.leaf)));
        entries.push(NewEntry {
            index,
            event_id: p.event_id,
            leaf: p.leaf,
            batch_root: p.batch_root,
            batch_pos: p.batch_pos,
            event_time: event.time,
            agent: event.agent.to_string(),
        });
    }
    let checkpoint = Checkpoint {
        origin: key.name().to_string(),
        size: frontier.size(),
        root: frontier.root(),
    };
    let note = checkpoint.sign(key);
    Ok(AppendPlan {
        entries,
        nodes,
        checkpoint,
        note,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::MemoryTree;

    fn pending(n: u64) -> PendingEvent {
        let e = MeteringEvent::example(n);
        PendingEvent {
            event_id: e.id,
            batch_root: vec![0; 32],
            batch_pos: n as u32,
            leaf: e.encode().unwrap(),
        }
    }

    #[test]
    fn two_steps_give_the_same_tree_as_one() {
        let key = KeyPair::generate("log").unwrap();
        let all: Vec<_> = (0..13).map(pending).collect();
        let one = plan_append(Frontier::new(), all.clone(), &key).unwrap();

        let first = plan_append(Frontier::new(), all[..5].to_vec(), &key).unwrap();
        let mut mem = MemoryTree::new();
        first
            .entries
            .iter()
            .for_each(|e| mem.push(leaf_hash(&e.leaf)));
        let mut frontier = Frontier::new();
        first
            .entries
            .iter()
            .for_each(|e| frontier.push_hash(leaf_hash(&e.leaf)));
        let second = plan_append(frontier, all[5..].to_vec(), &key).unwrap();

        assert_eq!(second.checkpoint, one.checkpoint);
        assert_eq!(second.entries[0].index, 5);
        assert_eq!(first.nodes.len() + second.nodes.len(), one.nodes.len());
        assert_eq!(one.checkpoint.size, 13);
        // 13 leaves make 13 + 6 + 3 + 1 complete nodes.
        assert_eq!(one.nodes.len(), 23);
    }

    #[test]
    fn pending_with_wrong_id_is_refused() {
        let key = KeyPair::generate("log").unwrap();
        let mut p = pending(1);
        p.event_id = MeteringEvent::example(2).id;
        assert!(matches!(
            plan_append(Frontier::new(), vec![p], &key),
            Err(SequenceError::IdMismatch(_))
        ));
    }

    #[test]
    fn empty_step_still_signs_current_size() {
        let key = KeyPair::generate("log").unwrap();
        let plan = plan_append(Frontier::new(), vec![], &key).unwrap();
        assert_eq!(plan.checkpoint.size, 0);
        assert_eq!(plan.checkpoint.root, crate::hash::empty_root());
    }
}
