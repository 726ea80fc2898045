//! The "shipped" mark: how far into the spool file the ledger has every
//! record, rewritten in place after each batch.
//!
//! The file holds one fixed-width line, the offset as 20 decimal digits, a
//! space, and 16 hex digits of SHA-256 of those digits:
//! `00000000000000004096 1f0e...\n`. Every write covers the whole line at
//! offset 0, so one `pwrite` replaces it; no temporary file and rename per
//! batch (a rename was most of the mark's cost: a journalled directory
//! update each time). A crash in the middle of a write can leave old and new
//! digits mixed, which could read as a larger offset than was ever shipped;
//! the checksum catches that, and a mark that does not check out reads as 0,
//! so events are shipped again (the ledger takes them idempotently) and none
//! is skipped. Marks in another form, such as an older version's plain
//! number, read as 0 for the same reason.

use std::{
    fs::{File, OpenOptions},
    io::Read,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};

/// Bytes in a mark line.
pub(super) const MARK_LEN: usize = 20 + 1 + 16 + 1;

fn check(digits: &[u8]) -> String {
    let digest = Sha256::digest(digits);
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The line for `offset`.
pub(super) fn encode(offset: u64) -> [u8; MARK_LEN] {
    let digits = format!("{offset:020}");
    let line = format!("{digits} {}\n", check(digits.as_bytes()));
    let mut out = [0u8; MARK_LEN];
    out.copy_from_slice(line.as_bytes());
    out
}

/// The offset a mark file's contents name; `None` for anything but one
/// whole line that checks out.
pub(super) fn decode(bytes: &[u8]) -> Option<u64> {
    if bytes.len() != MARK_LEN || bytes[20] != b' ' || bytes[MARK_LEN - 1] != b'\n' {
        return None;
    }
    let digits = &bytes[..20];
    if !digits.iter().all(u8::is_ascii_digit) || check(digits).as_bytes() != &bytes[21..37] {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The open mark file.
#[derive(Debug)]
pub(super) struct MarkFile {
    file: File,
    path: PathBuf,
}

impl MarkFile {
    /// Open (creating if needed) the mark file at `path` and read its
    /// offset: 0 when it is new or does not check out.
    pub(super) fn open(path: &Path) -> std::io::Result<(MarkFile, u64)> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let offset = match decode(&bytes) {
            Some(offset) => offset,
            None => {
                if !bytes.is_empty() {
                    tracing::warn!(path = %path.display(), "the spool's shipped mark does not check out; shipping everything again");
                }
                0
            }
        };
        let mark = MarkFile {
            file,
            path: path.to_owned(),
        };
        if bytes.len() != MARK_LEN {
            // New, or not one line: a whole line from the start, and a
            // directory entry that survives a crash, so later writes can be
            // in place.
            mark.file.set_len(0)?;
            mark.write(offset, true)?;
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
        }
        Ok((mark, offset))
    }

    /// Replace the mark with `offset`; `durable` also syncs it to disk.
    pub(super) fn write(&self, offset: u64, durable: bool) -> std::io::Result<()> {
        self.file.write_all_at(&encode(offset), 0)?;
        if durable {
            self.file.sync_data()?;
        }
        Ok(())
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_round_trip_and_anything_else_reads_as_nothing() {
        for offset in [0, 1, 4096, u64::MAX] {
            assert_eq!(decode(&encode(offset)), Some(offset), "{offset}");
        }
        let good = encode(1000);
        // Old and new digits mixed by a torn write: 1999 was never shipped.
        let mut torn = good;
        torn[16] = b'1';
        torn[17..20].copy_from_slice(b"999");
        let mut bad_check = good;
        bad_check[30] = if bad_check[30] == b'0' { b'1' } else { b'0' };
        let cases: [(&[u8], Option<u64>); 7] = [
            (&good, Some(1000)),
            (&torn, None),
            (&bad_check, None),
            (b"1000", None),
            (b"", None),
            (&good[..MARK_LEN - 1], None),
            (&[b'x'; MARK_LEN], None),
        ];
        for (bytes, want) in cases {
            assert_eq!(decode(bytes), want, "{:?}", String::from_utf8_lossy(bytes));
        }
    }
}
