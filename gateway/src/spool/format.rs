//! The spool's on-disk record format, kept apart from the I/O around it.
//!
//! A record is `0xCA`, the payload length (u32 little-endian), the first 8
//! bytes of SHA-256 of the payload, then the payload. A crash can leave a
//! torn record at the end of the file; [`scan`] stops at the first record
//! that is incomplete or fails its checksum and reports where valid data
//! ends, so the file can be cut back to that point. Such a record was never
//! acknowledged, because acknowledgement waits for fsync.

use sha2::{Digest, Sha256};

const MAGIC: u8 = 0xCA;
pub const HEADER_LEN: usize = 1 + 4 + 8;

fn checksum(payload: &[u8]) -> [u8; 8] {
    let digest = Sha256::digest(payload);
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

/// Append the encoded form of `payload` to `out`.
pub fn encode(payload: &[u8], out: &mut Vec<u8>) {
    out.push(MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&checksum(payload));
    out.extend_from_slice(payload);
}

/// Records found in a byte range and where the valid prefix ends.
#[derive(Debug, PartialEq, Eq)]
pub struct Scan {
    pub records: Vec<Vec<u8>>,
    /// Bytes from the start of the input that hold whole, valid records.
    pub valid_len: usize,
    /// Whether something after `valid_len` was discarded.
    pub torn_tail: bool,
}

/// Decode as many whole records as `bytes` holds, at most `max_records`.
pub fn scan(bytes: &[u8], max_records: usize) -> Scan {
    let mut records = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() && records.len() < max_records {
        let rest = &bytes[pos..];
        if rest.len() < HEADER_LEN || rest[0] != MAGIC {
            break;
        }
        let len = u32::from_le_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let Some(payload) = rest.get(HEADER_LEN..HEADER_LEN + len) else {
            break;
        };
        if rest[5..HEADER_LEN] != checksum(payload) {
            break;
        }
        records.push(payload.to_vec());
        pos += HEADER_LEN + len;
    }
    let torn_tail = records.len() < max_records && pos < bytes.len();
    Scan {
        records,
        valid_len: pos,
        torn_tail,
    }
}

/// The whole records of `bytes` found by stepping over damage: after a
/// record that is incomplete or fails its checksum, the next byte offset
/// where a valid record starts. Returns the records and the number of
/// damaged byte ranges stepped over (a torn tail counts as one). Only for a
/// file known to be damaged: it may try a checksum at every byte.
pub fn salvage(bytes: &[u8]) -> (Vec<Vec<u8>>, usize) {
    let mut records = Vec::new();
    let mut damaged = 0;
    let mut pos = 0;
    while pos < bytes.len() {
        let found = scan(&bytes[pos..], usize::MAX);
        records.extend(found.records);
        pos += found.valid_len;
        if !found.torn_tail {
            break;
        }
        damaged += 1;
        match (pos + 1..bytes.len()).find(|&at| starts_valid_record(&bytes[at..])) {
            Some(at) => pos = at,
            None => break,
        }
    }
    (records, damaged)
}

fn starts_valid_record(bytes: &[u8]) -> bool {
    !scan(bytes, 1).records.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            encode(p, &mut out);
        }
        out
    }

    #[test]
    fn round_trips_records() {
        let bytes = encoded(&[b"one", b"", b"three"]);
        let scan = scan(&bytes, usize::MAX);
        assert_eq!(
            scan.records,
            vec![b"one".to_vec(), vec![], b"three".to_vec()]
        );
        assert_eq!(scan.valid_len, bytes.len());
        assert!(!scan.torn_tail);
    }

    #[test]
    fn every_truncation_keeps_exactly_the_whole_records() {
        let first = encoded(&[b"first"]);
        let bytes = encoded(&[b"first", b"second record"]);
        for cut in 0..bytes.len() {
            let scan = scan(&bytes[..cut], usize::MAX);
            let whole = if cut >= first.len() { 1 } else { 0 };
            assert_eq!(scan.records.len(), whole, "cut {cut}");
            assert_eq!(scan.valid_len, whole * first.len(), "cut {cut}");
            assert_eq!(scan.torn_tail, cut != scan.valid_len, "cut {cut}");
        }
    }

    #[test]
    fn every_flipped_byte_of_the_last_record_is_detected() {
        let first = encoded(&[b"first"]);
        let bytes = encoded(&[b"first", b"second"]);
        for i in first.len()..bytes.len() {
            let mut corrupt = bytes.clone();
            corrupt[i] ^= 0x01;
            let scan = scan(&corrupt, usize::MAX);
            assert_eq!(scan.records, vec![b"first".to_vec()], "byte {i}");
            assert!(scan.torn_tail, "byte {i}");
        }
    }

    /// Damage in the middle of a file is stepped over: every whole record
    /// before and after it is kept, in order.
    #[test]
    fn salvage_keeps_every_record_around_damage() {
        let bytes = encoded(&[b"one", b"two", b"three", b"four"]);
        let second = HEADER_LEN + 3;
        for i in second..second + HEADER_LEN + 3 {
            let mut corrupt = bytes.clone();
            corrupt[i] ^= 0x40;
            let (records, damaged) = salvage(&corrupt);
            assert_eq!(
                records,
                vec![b"one".to_vec(), b"three".to_vec(), b"four".to_vec()],
                "byte {i}"
            );
            assert_eq!(damaged, 1, "byte {i}");
        }
        // A torn tail alone: the records before it, one damaged range.
        let (records, damaged) = salvage(&bytes[..bytes.len() - 2]);
        assert_eq!(records.len(), 3);
        assert_eq!(damaged, 1);
        // An intact file: everything, no damage.
        assert_eq!(
            salvage(&bytes),
            (
                vec![
                    b"one".to_vec(),
                    b"two".to_vec(),
                    b"three".to_vec(),
                    b"four".to_vec()
                ],
                0
            )
        );
    }

    #[test]
    fn max_records_limits_a_batch() {
        let bytes = encoded(&[b"a", b"b", b"c"]);
        let scan = scan(&bytes, 2);
        assert_eq!(scan.records.len(), 2);
        assert!(!scan.torn_tail);
        assert_eq!(scan.valid_len, 2 * (HEADER_LEN + 1));
    }
}
