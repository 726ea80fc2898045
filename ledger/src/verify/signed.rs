//! The batches gateways signed, and whether an entry's bytes are what its
//! batch signed at its position.

use std::collections::HashMap;

use crate::hash::Hash;

/// A batch's signed leaf hashes, or why the batch is not valid.
pub(super) type BatchVerdict = Result<Vec<Hash>, String>;

/// Every stored batch, checked, by root.
#[derive(Debug, Default)]
pub(super) struct SignedBatches {
    /// Batch root -> its place in `verdicts` (the last batch stored with
    /// that root, should there be several).
    by_root: HashMap<Vec<u8>, usize>,
    verdicts: Vec<(Vec<u8>, BatchVerdict)>,
}

impl SignedBatches {
    pub(super) fn insert(&mut self, root: &[u8], verdict: BatchVerdict) {
        self.by_root.insert(root.to_vec(), self.verdicts.len());
        self.verdicts.push((root.to_vec(), verdict));
    }

    /// Why an entry with leaf hash `hash`, claiming position `batch_pos` of
    /// the batch with root `batch_root`, is not what a gateway signed (`None`
    /// when it is). `last` is the batch the previous entry named: a batch's
    /// entries mostly follow one another, so most entries need no lookup.
    pub(super) fn fault(
        &self,
        last: &mut Option<usize>,
        batch_root: &[u8],
        batch_pos: u32,
        hash: &Hash,
    ) -> Option<String> {
        let found = match *last {
            Some(i) if self.verdicts[i].0 == batch_root => Some(i),
            _ => self.by_root.get(batch_root).copied(),
        };
        *last = found.or(*last);
        match found.map(|i| &self.verdicts[i].1) {
            None => Some("its batch is not stored (no gateway signed it)".to_string()),
            Some(Err(why)) => Some(format!("its batch is not validly signed: {why}")),
            Some(Ok(leaves)) => match leaves.get(batch_pos as usize) {
                Some(h) if h == hash => None,
                Some(_) => Some(format!(
                    "bytes differ from what the gateway signed (batch position {batch_pos})"
                )),
                None => Some(format!("batch has no position {batch_pos}")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_each_way_an_entry_can_miss_its_signature() {
        let mut batches = SignedBatches::default();
        batches.insert(&[1; 32], Ok(vec![[7; 32], [8; 32]]));
        batches.insert(&[2; 32], Err("bad signature".into()));
        let mut last = None;
        let mut fault =
            |root: &[u8], pos: u32, hash: &Hash| batches.fault(&mut last, root, pos, hash);
        assert_eq!(fault(&[1; 32], 1, &[8; 32]), None);
        assert_eq!(
            fault(&[1; 32], 0, &[7; 32]),
            None,
            "found again through `last`"
        );
        assert!(
            fault(&[1; 32], 0, &[8; 32])
                .unwrap()
                .contains("differ from what the gateway signed")
        );
        assert!(
            fault(&[1; 32], 2, &[8; 32])
                .unwrap()
                .contains("no position 2")
        );
        assert!(
            fault(&[2; 32], 0, &[7; 32])
                .unwrap()
                .contains("not validly signed: bad signature")
        );
        assert!(fault(&[3; 32], 0, &[7; 32]).unwrap().contains("not stored"));
        // `last` now points at batch 2; batch 1 is still found by its root.
        assert_eq!(fault(&[1; 32], 1, &[8; 32]), None);
    }
}
