//! Data tiles: 256 consecutive entries stored as one value, so a full
//! verification reads a few large rows instead of one row per entry.
//!
//! Tile `t` holds entries `[256·t, 256·t + 256)` and is written once, by the
//! sequencing step that completes it (a tile is never partial, so it never
//! changes). Each entry is one record, in index order:
//!
//! ```text
//! event_id (16 bytes, the UUID's bytes) || batch_root (32) ||
//! batch_pos (u32 big-endian) || leaf length (u32 big-endian) || leaf bytes
//! ```
//!
//! The record repeats the entry row's columns exactly, so a store can compare
//! its per-entry rows (what queries read) with the tile cheaply, and a tile
//! is the concatenation of its 256 records with nothing before or after.

use uuid::Uuid;

/// Entries per tile.
pub const TILE_WIDTH: u64 = 256;
/// The tree level whose nodes are tile roots (`2^TILE_LEVEL = TILE_WIDTH`).
pub const TILE_LEVEL: u8 = 8;
/// Bytes in a record before the leaf bytes.
pub const RECORD_HEADER: usize = 16 + 32 + 4 + 4;

/// One entry inside a tile, borrowed from the tile's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileRecord<'a> {
    pub event_id: Uuid,
    pub batch_root: &'a [u8],
    pub batch_pos: u32,
    pub leaf: &'a [u8],
}

/// Why a tile's bytes are not 256 well-formed records.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TileError {
    #[error("record {record} is cut short")]
    Truncated { record: usize },
    #[error("{extra} bytes follow the last record")]
    TrailingBytes { extra: usize },
}

/// Splits a tile into its records. Anything but exactly [`TILE_WIDTH`]
/// complete records, back to back, is refused.
pub fn parse_tile(data: &[u8]) -> Result<Vec<TileRecord<'_>>, TileError> {
    let mut out = Vec::with_capacity(TILE_WIDTH as usize);
    let mut rest = data;
    for record in 0..TILE_WIDTH as usize {
        let cut = TileError::Truncated { record };
        if rest.len() < RECORD_HEADER {
            return Err(cut);
        }
        let (head, tail) = rest.split_at(RECORD_HEADER);
        let len = u32::from_be_bytes(head[52..56].try_into().expect("4 bytes")) as usize;
        if tail.len() < len {
            return Err(cut);
        }
        let (leaf, next) = tail.split_at(len);
        out.push(TileRecord {
            event_id: Uuid::from_bytes(head[..16].try_into().expect("16 bytes")),
            batch_root: &head[16..48],
            batch_pos: u32::from_be_bytes(head[48..52].try_into().expect("4 bytes")),
            leaf,
        });
        rest = next;
    }
    if !rest.is_empty() {
        return Err(TileError::TrailingBytes { extra: rest.len() });
    }
    Ok(out)
}

/// Appends one record (used by stores that build tiles in Rust, and tests).
/// `batch_root` must be 32 bytes.
pub fn push_record(
    out: &mut Vec<u8>,
    event_id: Uuid,
    batch_root: &[u8],
    batch_pos: u32,
    leaf: &[u8],
) {
    debug_assert_eq!(batch_root.len(), 32);
    out.extend_from_slice(event_id.as_bytes());
    out.extend_from_slice(batch_root);
    out.extend_from_slice(&batch_pos.to_be_bytes());
    out.extend_from_slice(&(leaf.len() as u32).to_be_bytes());
    out.extend_from_slice(leaf);
}

/// How a stored tile's bytes are encoded (the `packing` column).
///
/// Tiles are packed by the sequencer so that a full verification moves a
/// tenth of the bytes through the database and the socket; tiles written
/// before packing existed stay plain, and a reader takes both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packing {
    /// The records as they are (packing 0).
    Plain,
    /// An LZ4 block (the LZ4 block format, no frame) after a 4-byte
    /// little-endian length of the plain tile (packing 1).
    Lz4,
}

impl Packing {
    pub fn code(self) -> i16 {
        match self {
            Packing::Plain => 0,
            Packing::Lz4 => 1,
        }
    }

    pub fn from_code(code: i16) -> Option<Packing> {
        match code {
            0 => Some(Packing::Plain),
            1 => Some(Packing::Lz4),
            _ => None,
        }
    }
}

/// Largest plain tile a reader unpacks (256 events of 256 KiB each): a
/// packed tile declaring more is refused before any memory is set aside.
pub const MAX_PLAIN_TILE_BYTES: usize = 64 << 20;

/// Why a stored tile could not be unpacked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnpackError {
    #[error("unknown packing {0}")]
    UnknownPacking(i16),
    #[error("packed tile is shorter than its 4-byte length")]
    NoLength,
    #[error("packed tile declares {0} plain bytes, more than the limit of {MAX_PLAIN_TILE_BYTES}")]
    TooLarge(usize),
    #[error("packed tile does not decode: {0}")]
    Corrupt(String),
    #[error("packed tile decodes to {got} bytes, not the {declared} it declares")]
    WrongLength { declared: usize, got: usize },
}

/// Packs a plain tile as [`Packing::Lz4`].
pub fn pack_tile(plain: &[u8]) -> Vec<u8> {
    lz4_flex::block::compress_prepend_size(plain)
}

/// The length of a stored tile's plain bytes, as its packing declares it
/// (checked against [`MAX_PLAIN_TILE_BYTES`], not yet decoded).
pub fn plain_len(packing: i16, stored: &[u8]) -> Result<usize, UnpackError> {
    match Packing::from_code(packing) {
        Some(Packing::Plain) => Ok(stored.len()),
        Some(Packing::Lz4) => {
            let (len, _) = stored
                .split_first_chunk::<4>()
                .ok_or(UnpackError::NoLength)?;
            let declared = u32::from_le_bytes(*len) as usize;
            if declared > MAX_PLAIN_TILE_BYTES {
                return Err(UnpackError::TooLarge(declared));
            }
            Ok(declared)
        }
        None => Err(UnpackError::UnknownPacking(packing)),
    }
}

/// Writes the plain bytes of a stored tile into `out`, which must be
/// exactly [`plain_len`] long. On an error `out` holds no meaning.
pub fn unpack_tile_to(packing: i16, stored: &[u8], out: &mut [u8]) -> Result<(), UnpackError> {
    let declared = plain_len(packing, stored)?;
    assert_eq!(out.len(), declared, "output sized by plain_len");
    match Packing::from_code(packing) {
        Some(Packing::Lz4) => match lz4_flex::block::decompress_into(&stored[4..], out) {
            Ok(got) if got == declared => Ok(()),
            Ok(got) => Err(UnpackError::WrongLength { declared, got }),
            Err(e) => Err(UnpackError::Corrupt(e.to_string())),
        },
        _ => {
            out.copy_from_slice(stored);
            Ok(())
        }
    }
}

/// The plain bytes of a stored tile.
pub fn unpack_tile(packing: i16, stored: &[u8]) -> Result<Vec<u8>, UnpackError> {
    let mut out = vec![0; plain_len(packing, stored)?];
    unpack_tile_to(packing, stored, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tile(records: usize) -> Vec<u8> {
        let mut data = Vec::new();
        for i in 0..records {
            let leaf = format!("leaf {i}");
            push_record(
                &mut data,
                Uuid::from_u128(i as u128),
                &[i as u8; 32],
                i as u32 * 2,
                leaf.as_bytes(),
            );
        }
        data
    }

    #[test]
    fn round_trips_256_records() {
        let data = tile(256);
        let records = parse_tile(&data).unwrap();
        assert_eq!(records.len(), 256);
        assert_eq!(records[7].event_id, Uuid::from_u128(7));
        assert_eq!(records[7].batch_root, &[7u8; 32]);
        assert_eq!(records[7].batch_pos, 14);
        assert_eq!(records[255].leaf, b"leaf 255");
    }

    #[test]
    fn refuses_short_long_and_cut_tiles() {
        assert_eq!(
            parse_tile(&tile(255)),
            Err(TileError::Truncated { record: 255 })
        );
        let mut long = tile(256);
        long.push(0);
        assert_eq!(
            parse_tile(&long),
            Err(TileError::TrailingBytes { extra: 1 })
        );
        let full = tile(256);
        for cut in [1, RECORD_HEADER, RECORD_HEADER + 3, full.len() - 1] {
            assert!(parse_tile(&full[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn packed_tiles_unpack_to_the_same_bytes() {
        let plain = tile(256);
        let packed = pack_tile(&plain);
        assert!(packed.len() < plain.len() / 2, "{} bytes", packed.len());
        assert_eq!(plain_len(Packing::Lz4.code(), &packed), Ok(plain.len()));
        assert_eq!(unpack_tile(Packing::Lz4.code(), &packed).unwrap(), plain);
        assert_eq!(unpack_tile(Packing::Plain.code(), &plain).unwrap(), plain);
    }

    #[test]
    fn refuses_damaged_packed_tiles() {
        let plain = tile(256);
        let packed = pack_tile(&plain);
        let unpack = |packing: i16, stored: &[u8]| unpack_tile(packing, stored).map(|_| ());
        assert_eq!(unpack(7, &packed), Err(UnpackError::UnknownPacking(7)));
        assert_eq!(unpack(1, &packed[..3]), Err(UnpackError::NoLength));
        let mut huge = packed.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            unpack(1, &huge),
            Err(UnpackError::TooLarge(u32::MAX as usize))
        );
        let mut short = packed.clone();
        let declared = plain.len() as u32 - 1;
        short[..4].copy_from_slice(&declared.to_le_bytes());
        assert!(unpack(1, &short).is_err());
        let mut long = packed.clone();
        long[..4].copy_from_slice(&(plain.len() as u32 + 10).to_le_bytes());
        assert_eq!(
            unpack(1, &long),
            Err(UnpackError::WrongLength {
                declared: plain.len() + 10,
                got: plain.len()
            })
        );
        assert!(unpack(1, &packed[..packed.len() - 1]).is_err());
    }
}
