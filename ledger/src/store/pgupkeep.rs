//! Keeping the entry table's visibility map current behind the sequencer.
//!
//! A full verification reads each entry's verify record through the index
//! `ledger_entries_verify` alone, but only on table pages the visibility map
//! marks all-visible; every other record is fetched from its row's page, and
//! the first reader after an insert also sets the rows' hint bits (for a log
//! of 200,000 fresh entries that made verification about a quarter slower,
//! docs/benchmarks.md). Only `VACUUM` sets the map. Autovacuum does, where it
//! is on (the migration asks for it every 2 % of growth), but on its own
//! schedule and not at all where it is off. So after the sequencer has
//! appended enough new entries it runs `VACUUM` on `ledger_entries` itself, in
//! the background on a connection of its own: it skips pages already marked,
//! so each run costs about one read of the new pages.
//!
//! This is upkeep, never a condition: a vacuum that fails (a role that does
//! not own the table gets a warning and nothing is done) or is skipped
//! because another one holds the table (`SKIP_LOCKED`) only leaves
//! verification slower, so it is logged and sequencing goes on.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use sqlx::PgPool;

/// New entries between two vacuums, at least (64 data tiles).
pub const DEFAULT_VACUUM_FLOOR: u64 = 16_384;

/// Whether a log now `size` entries long, last vacuumed at `vacuumed_at`
/// entries, is due another vacuum: after `floor` new entries, or 2 % of the
/// log when that is more (as the migration's autovacuum setting).
pub(super) fn vacuum_due(vacuumed_at: u64, size: u64, floor: u64) -> bool {
    size.saturating_sub(vacuumed_at) >= floor.max(size / 50)
}

/// Runs at most one vacuum at a time, and only when one is due.
#[derive(Debug)]
pub(super) struct VisibilityUpkeep {
    floor: u64,
    /// Log size when the last vacuum started (0 before the first: a process
    /// attaching to a log vacuums it once, which is cheap if it is current).
    vacuumed_at: AtomicU64,
    running: AtomicBool,
}

impl VisibilityUpkeep {
    pub(super) fn new(floor: u64) -> Arc<Self> {
        Arc::new(Self {
            floor: floor.max(1),
            vacuumed_at: AtomicU64::new(0),
            running: AtomicBool::new(false),
        })
    }

    /// The sequencer grew the log to `size` entries.
    pub(super) fn appended(self: &Arc<Self>, pool: &PgPool, size: u64) {
        if !vacuum_due(self.vacuumed_at.load(Ordering::Relaxed), size, self.floor)
            || self.running.swap(true, Ordering::AcqRel)
        {
            return;
        }
        self.vacuumed_at.store(size, Ordering::Relaxed);
        let (upkeep, pool) = (self.clone(), pool.clone());
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            match sqlx::raw_sql("VACUUM (SKIP_LOCKED, PARALLEL 0) ledger_entries")
                .execute(&pool)
                .await
            {
                Ok(_) => tracing::debug!(
                    size,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "vacuumed ledger_entries"
                ),
                Err(e) => tracing::warn!(
                    error = %e,
                    "could not vacuum ledger_entries; full verification reads unmarked pages from the table"
                ),
            }
            upkeep.running.store(false, Ordering::Release);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_after_the_floor_or_two_percent() {
        let floor = DEFAULT_VACUUM_FLOOR;
        // (vacuumed at, size, due)
        let table = [
            (0, 0, false),
            (0, 16_383, false),
            (0, 16_384, true),
            (16_384, 32_767, false),
            (16_384, 32_768, true),
            // Past 819,200 entries, 2 % of the log is more than the floor.
            (1_000_000, 1_016_384, false),
            (1_000_000, 1_020_319, false),
            (1_000_000, 1_020_820, true),
            (100_000_000, 101_999_999, false),
            (100_000_000, 102_040_817, true),
            // A log that shrank (another database behind the same URL): not due.
            (50_000, 10_000, false),
        ];
        for (at, size, due) in table {
            assert_eq!(
                vacuum_due(at, size, floor),
                due,
                "vacuumed at {at}, size {size}"
            );
        }
    }
}
