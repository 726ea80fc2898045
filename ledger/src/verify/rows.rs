//! Comparing the per-entry rows (what `caracal ledger query` and `merkle
//! prove` read) with a data tile the checker has verified, and naming each
//! index whose row is missing, doubled or different.
//!
//! Two ways in: the rows' verify records, which a store keeps derived from
//! each row (`idx || event_id || batch_root || batch_pos || leaf hash`), are
//! compared with the same fields of the tile's records and the leaf hashes the
//! checker computed ([`row_record_faults`]); or, where the store
//! cannot vouch for its records, the full rows are compared byte for byte
//! ([`Checker::compare_rows`]).

use std::collections::HashMap;

use super::Checker;
use super::TileInput;
use crate::hash::Hash;
use crate::store::EntryRecord;
use crate::tile::{TILE_WIDTH, TileRecord, parse_tile, unpack_tile};

const MISSING: &str = "entry row missing (its data tile has it)";
const DOUBLED: &str = "more than one entry row has this index";
const BYTES: &str = "entry row's bytes differ from its data tile";
const EVENT_ID: &str = "entry row's event id differs from its data tile";
const BATCH: &str = "entry row's batch differs from its data tile";
/// Bytes of a verify record around the variable-length batch root.
const RECORD_HEAD: usize = 8 + 16;
const RECORD_TAIL: usize = 4 + 32;

/// A verify record as it should be for the row at `index`, built from its
/// tile record `rec` and leaf hash `hash` (`None` if the tile's batch root is
/// not 32 bytes; the field-by-field comparison handles that).
fn expected_record(index: u64, rec: &TileRecord<'_>, hash: &Hash) -> Option<[u8; 92]> {
    let mut out = [0u8; 92];
    out[..8].copy_from_slice(&index.to_be_bytes());
    out[8..24].copy_from_slice(rec.event_id.as_bytes());
    out[24..56].copy_from_slice(
        rec.batch_root
            .get(..32)
            .filter(|_| rec.batch_root.len() == 32)?,
    );
    out[56..60].copy_from_slice(&rec.batch_pos.to_be_bytes());
    out[60..].copy_from_slice(hash);
    Some(out)
}

/// What is wrong with the verify record `got` of the row at `index`, whose
/// tile record is `rec` with leaf hash `hash`.
fn record_fault(index: u64, rec: &TileRecord<'_>, hash: &Hash, got: &[u8]) -> Option<&'static str> {
    // One comparison for the usual case; fields only to name a difference.
    if expected_record(index, rec, hash).is_some_and(|want| want[..] == *got) {
        return None;
    }
    if got.len() < RECORD_HEAD + RECORD_TAIL {
        return Some(BYTES);
    }
    let (head, rest) = got.split_at(RECORD_HEAD);
    let (batch_root, tail) = rest.split_at(rest.len() - RECORD_TAIL);
    let (batch_pos, leaf_hash) = tail.split_at(4);
    if head[..8] != index.to_be_bytes() || leaf_hash != hash {
        Some(BYTES)
    } else if head[8..] != rec.event_id.as_bytes()[..] {
        Some(EVENT_ID)
    } else if batch_root != rec.batch_root || batch_pos != rec.batch_pos.to_be_bytes() {
        Some(BATCH)
    } else {
        None
    }
}

/// How the rows of the tile starting at index `start` (its parsed `records`
/// and their leaf `hashes`) differ from the tile, judged by their verify
/// records, `(index, record)` in index order: `(index, what)` per fault.
pub(super) fn row_record_faults(
    start: u64,
    records: &[TileRecord<'_>],
    hashes: &[Hash],
    rows: &[(u64, Option<&[u8]>)],
) -> Vec<(u64, &'static str)> {
    let mut faults = Vec::new();
    let mut at = 0;
    for (i, (rec, hash)) in records.iter().zip(hashes).enumerate() {
        let index = start + i as u64;
        // Rows come in index order: those at `index` are the next few.
        let first = at;
        while rows.get(at).is_some_and(|(row, _)| *row <= index) {
            at += 1;
        }
        let fault = match &rows[first..at] {
            [] => Some(MISSING),
            [(_, Some(got))] => record_fault(index, rec, hash, got),
            [(_, None)] => Some(BYTES),
            _ => Some(DOUBLED),
        };
        faults.extend(fault.map(|what| (index, what)));
    }
    faults
}

impl Checker {
    /// Reports that the store's verify records cannot be trusted (`why`); the
    /// rows are then compared in full.
    pub(super) fn records_refused(&mut self, why: &str) {
        self.problem(
            None,
            None,
            format!(
                "the store's verify records cannot be trusted ({why}); the entry rows were compared with their data tiles in full instead"
            ),
        );
    }

    /// Compares the full rows of `tile` with the tile's records byte for
    /// byte (when the store's verify records cannot be trusted). The tile is
    /// unpacked again: this is the rare path.
    pub fn compare_rows(&mut self, tile: &TileInput<'_>, rows: &[EntryRecord]) {
        let start = tile.tile * TILE_WIDTH;
        let Ok(plain) = unpack_tile(tile.packing, tile.data) else {
            // Already reported when the tile was fed; the rows were checked then.
            return;
        };
        let Ok(records) = parse_tile(&plain) else {
            return;
        };
        let mut by_index: HashMap<u64, Vec<&EntryRecord>> = HashMap::new();
        for row in rows {
            by_index.entry(row.index).or_default().push(row);
        }
        let mut faults = Vec::new();
        for (i, rec) in records.iter().enumerate() {
            let index = start + i as u64;
            let fault = match by_index.get(&index).map(Vec::as_slice) {
                None | Some([]) => Some(MISSING),
                Some([row]) if row.leaf != rec.leaf => Some(BYTES),
                Some([row]) if row.event_id != rec.event_id => Some(EVENT_ID),
                Some([row])
                    if row.batch_root != rec.batch_root || row.batch_pos != rec.batch_pos =>
                {
                    Some(BATCH)
                }
                Some([_]) => None,
                Some(_) => Some(DOUBLED),
            };
            faults.extend(fault.map(|what| (index, what)));
        }
        self.report_row_faults(faults);
    }

    /// Reports faults `(index, what)` in index order, runs of consecutive
    /// indexes with the same fault as one problem, so a block of deleted rows
    /// does not crowd everything else out of the list.
    pub(super) fn report_row_faults(&mut self, faults: Vec<(u64, &'static str)>) {
        let mut runs: Vec<(u64, u64, &str)> = Vec::new();
        for (index, what) in faults {
            match runs.last_mut() {
                Some((_, last, w)) if *last + 1 == index && *w == what => *last = index,
                _ => runs.push((index, index, what)),
            }
        }
        for (first, last, what) in runs {
            let span = if first == last {
                String::new()
            } else {
                format!(", and so are indexes {}..={last}", first + 1)
            };
            self.problem(
                Some(first),
                None,
                format!("{what}{span} (queries and proofs read the rows)"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::leaf_hash;
    use uuid::Uuid;

    fn record(index: u64, rec: &TileRecord<'_>, hash: &Hash) -> Vec<u8> {
        let mut out = index.to_be_bytes().to_vec();
        out.extend_from_slice(rec.event_id.as_bytes());
        out.extend_from_slice(rec.batch_root);
        out.extend_from_slice(&rec.batch_pos.to_be_bytes());
        out.extend_from_slice(hash);
        out
    }

    #[test]
    fn each_field_of_a_verify_record_is_compared() {
        let root = [3u8; 32];
        let rec = TileRecord {
            event_id: Uuid::from_u128(7),
            batch_root: &root,
            batch_pos: 4,
            leaf: b"leaf",
        };
        let hash = leaf_hash(rec.leaf);
        let good = record(9, &rec, &hash);
        assert_eq!(record_fault(9, &rec, &hash, &good), None);
        assert_eq!(record_fault(10, &rec, &hash, &good), Some(BYTES));
        assert_eq!(record_fault(9, &rec, &hash, &good[..50]), Some(BYTES));
        for (at, fault) in [
            (3, BYTES),
            (12, EVENT_ID),
            (30, BATCH),
            (58, BATCH),
            (80, BYTES),
        ] {
            let mut bad = good.clone();
            bad[at] ^= 1;
            assert_eq!(record_fault(9, &rec, &hash, &bad), Some(fault), "byte {at}");
        }
        let mut longer_root = good[..RECORD_HEAD].to_vec();
        longer_root.extend_from_slice(&[3u8; 33]);
        longer_root.extend_from_slice(&good[good.len() - RECORD_TAIL..]);
        assert_eq!(record_fault(9, &rec, &hash, &longer_root), Some(BATCH));
    }
}
