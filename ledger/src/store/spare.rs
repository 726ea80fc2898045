//! Read buffers kept for reuse. A full verification reads the log in chunks
//! of several megabytes; taking each chunk's buffer from the previous ones
//! means the pages are already mapped, instead of being faulted in and zeroed
//! by the kernel again for every chunk.

use std::sync::{Arc, Mutex};

/// Buffers kept at most (two chunks of tiles and two of verify records are in
/// flight at a time).
const KEEP: usize = 4;

/// Spare buffers shared by the clones of one store.
#[derive(Clone, Debug, Default)]
pub(super) struct SpareBuffers(Arc<Mutex<Vec<Vec<u8>>>>);

impl SpareBuffers {
    /// An empty buffer with room for at least `capacity` bytes: the largest
    /// spare one, or a new one.
    pub(super) fn take(&self, capacity: usize) -> Vec<u8> {
        let mut spare = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let largest = (0..spare.len()).max_by_key(|&i| spare[i].capacity());
        let mut buf = largest.map(|i| spare.swap_remove(i)).unwrap_or_default();
        drop(spare);
        buf.clear();
        buf.reserve(capacity);
        buf
    }

    /// Keeps `buf` for a later [`SpareBuffers::take`] (or drops it if enough
    /// are kept already).
    pub(super) fn give(&self, buf: Vec<u8>) {
        let mut spare = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if spare.len() < KEEP {
            spare.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_back_the_largest_buffer_emptied() {
        let spare = SpareBuffers::default();
        spare.give(Vec::with_capacity(10));
        let mut big = Vec::with_capacity(1000);
        big.extend_from_slice(b"old bytes");
        spare.give(big);
        let buf = spare.take(5);
        assert!(buf.is_empty() && buf.capacity() >= 1000);
        for _ in 0..KEEP + 2 {
            spare.give(Vec::new());
        }
        assert_eq!(spare.0.lock().unwrap().len(), KEEP);
    }
}
