//! When the flusher ships: as soon as enough events wait, or once the first
//! of them has waited long enough.
//!
//! Every batch costs a signature, a store transaction and a checkpoint, so
//! shipping events one by one would cost far more under load than shipping
//! them together. But a large batch is also one long burst of CPU work (in
//! `caracal dev`, the in-process sequencer's), and on a small machine a
//! burst of a few milliseconds holds up the requests that wake behind it: at
//! 3,000 req/s, batches gathered for a fixed 50 ms (150 events) doubled the
//! gateway's p99 compared with batches of about 30 (docs/benchmarks.md). So
//! the flusher ships when [`SpoolConfig::ship_records`] events wait, and
//! waits at most [`SpoolConfig::ship_delay`] for a slow trickle to gather.

use std::time::Duration;

use super::SpoolConfig;

/// How often a gathering flusher looks at how many events wait.
pub(super) const GATHER_POLL: Duration = Duration::from_millis(2);

/// How long the flusher should sleep before looking again, with `pending`
/// events waiting and `waited` since it began gathering them; `None` means
/// ship now (or, with nothing pending, look for work now).
pub(super) fn gather_for(pending: u64, waited: Duration, config: &SpoolConfig) -> Option<Duration> {
    let enough = config.ship_records.clamp(1, config.batch_records.max(1)) as u64;
    if pending == 0 || pending >= enough || waited >= config.ship_delay {
        return None;
    }
    Some(GATHER_POLL.min(config.ship_delay - waited))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(ship_records: usize, batch_records: usize) -> SpoolConfig {
        SpoolConfig {
            ship_records,
            batch_records,
            ship_delay: Duration::from_millis(50),
            ..SpoolConfig::new("/nonexistent")
        }
    }

    #[test]
    fn ships_when_enough_wait_or_the_first_has_waited_long_enough() {
        let ms = Duration::from_millis;
        let poll = Some(GATHER_POLL);
        let cases = [
            // (pending, waited, ship_records, batch_records, want)
            (0, ms(0), 32, 512, None),
            (1, ms(0), 32, 512, poll),
            (31, ms(10), 32, 512, poll),
            (32, ms(0), 32, 512, None),
            (500, ms(0), 32, 512, None),
            (1, ms(49), 32, 512, Some(ms(1))),
            (1, ms(50), 32, 512, None),
            (1, ms(80), 32, 512, None),
            // A threshold above the batch size means a full batch.
            (511, ms(0), 1000, 512, poll),
            (512, ms(0), 1000, 512, None),
            // A threshold of 0 or 1 ships every event at once.
            (1, ms(0), 0, 512, None),
            (1, ms(0), 1, 512, None),
        ];
        for (pending, waited, ship, batch, want) in cases {
            assert_eq!(
                gather_for(pending, waited, &config(ship, batch)),
                want,
                "{pending} pending after {waited:?}, ship at {ship}, batches of {batch}"
            );
        }
    }
}
