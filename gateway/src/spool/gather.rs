//! When the flusher ships: as soon as enough events wait, or once the first
//! of them has waited long enough.
//!
//! Every batch costs a signature, a store transaction and a checkpoint, so
//! shipping events one by one would cost far more under load than shipping
//! them together. But a large batch is also one long burst of CPU work (in
//! `caracal dev`, the in-process sequencer's), and on a small machine a
//! burst of a few milliseconds holds up the requests that wake behind it (a
//! 3 ms burst per batch added about 2 ms to the p99 at 3,000 req/s; see
//! docs/benchmarks.md). So the flusher ships when
//! [`SpoolConfig::ship_records`] events wait, and waits at most
//! [`SpoolConfig::ship_delay`] for a slow trickle to gather. It sleeps while
//! it gathers; the append that makes enough wakes it.

use std::time::Duration;

use super::SpoolConfig;

/// Events that make a batch worth shipping at once under `config`.
pub(super) fn enough(config: &SpoolConfig) -> u64 {
    config.ship_records.clamp(1, config.batch_records.max(1)) as u64
}

/// How much longer the flusher should let events gather, with `pending`
/// events waiting and `waited` since it began gathering them; `None` means
/// ship now (or, with nothing pending, look for work now). The flusher
/// sleeps that long or until the append that makes [`enough`] wakes it.
pub(super) fn gather_for(pending: u64, waited: Duration, config: &SpoolConfig) -> Option<Duration> {
    if pending == 0 || pending >= enough(config) || waited >= config.ship_delay {
        return None;
    }
    Some(config.ship_delay - waited)
}

/// Whether the append that found `before` events pending should wake the
/// flusher: the first one (the flusher may be idle) and the one that makes
/// `enough` (see [`enough`]). Every other append leaves it alone, so a
/// gathering flusher is not woken once per request.
pub(super) fn wakes_flusher(before: u64, enough: u64) -> bool {
    before == 0 || before + 1 == enough
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
        let cases = [
            // (pending, waited, ship_records, batch_records, want)
            (0, ms(0), 32, 512, None),
            (1, ms(0), 32, 512, Some(ms(50))),
            (31, ms(10), 32, 512, Some(ms(40))),
            (32, ms(0), 32, 512, None),
            (500, ms(0), 32, 512, None),
            (1, ms(49), 32, 512, Some(ms(1))),
            (1, ms(50), 32, 512, None),
            (1, ms(80), 32, 512, None),
            // A threshold above the batch size means a full batch.
            (511, ms(0), 1000, 512, Some(ms(50))),
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

    #[test]
    fn only_the_first_and_the_enough_making_appends_wake_the_flusher() {
        let cases = [
            // (pending before the append, ship_records, wakes)
            (0, 32, true),
            (1, 32, false),
            (30, 32, false),
            (31, 32, true),
            (32, 32, false),
            (600, 32, false),
            (511, 1000, true),
            (0, 1, true),
            (1, 1, false),
        ];
        for (before, ship, want) in cases {
            assert_eq!(
                wakes_flusher(before, enough(&config(ship, 512))),
                want,
                "{before} pending, ship at {ship}"
            );
        }
    }
}
