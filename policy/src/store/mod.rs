//! Budget counters: reserve the worst case on every line at once, settle
//! the actual cost afterwards.
//!
//! Invariants every [`BudgetStore`] keeps (the shared suite in
//! `tests/it/store_suite.rs` checks them against each implementation):
//! - A reservation succeeds on all of its lines or on none.
//! - For every line, committed spend plus live holds never exceeds the limit
//!   because of a reservation (a settle may commit more than was held, since
//!   that money was really spent; it then blocks further reservations).
//! - A hold that is never settled stops counting at its expiry, so a dead
//!   gateway's reservations come back by themselves.
//! - Settling twice has no further effect, as long as the repeat comes
//!   before the hold's expiry or within a day of a settle that itself came
//!   after expiry. (A repeat after expiry of a settle made in time counts
//!   again: that can only over-count spend, never overspend, and it keeps
//!   Redis free of a marker per request. Gateways do not retry settles.)
//! - Reserving again with an id and amount that are already held is that
//!   same hold; the same id with another amount is a second hold.
//!
//! The caller passes `now`, so every gateway decides by the same rules and
//! tests can move time; gateways' clocks are assumed to agree to well under
//! a reservation's lifetime.

mod budgets;
mod memory;
mod redis_store;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use caracal_api::Micros;
use chrono::{DateTime, Utc};

use crate::decision::{BudgetLine, ReserveAmount};
use crate::window::WindowInstance;

pub use budgets::{Budgets, DEFAULT_RESERVATION_TTL, DEFAULT_STORE_TIMEOUT};
pub use memory::MemoryBudgetStore;
pub(crate) use redis_store::MAX_SCRIPT_AMOUNT as MAX_EXACT_AMOUNT;
pub use redis_store::RedisBudgetStore;

/// A boxed future, so stores can be used as `Arc<dyn BudgetStore>`.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The longest a reservation may live; counters are kept at least this long
/// past their window so an expiring hold is always found and released.
pub const MAX_RESERVATION_TTL: Duration = Duration::from_secs(3600);

/// How long counters outlive their window (for status and late settles).
pub const COUNTER_RETENTION: Duration = Duration::from_secs(2 * 3600);

/// Why a store could not answer. Every one of these is a denial upstream.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("budget store did not answer within {0:?}")]
    Timeout(Duration),
    #[error("budget store error: {0}")]
    Backend(String),
    #[error("invalid reservation: {0}")]
    Invalid(String),
}

/// Ask to hold an amount on several lines at once.
#[derive(Clone, Debug)]
pub struct ReserveRequest<'a> {
    /// Unique per reservation (e.g. a UUIDv7); `:` is not allowed.
    pub id: &'a str,
    pub lines: &'a [BudgetLine],
    pub amount: ReserveAmount,
    pub now: DateTime<Utc>,
    /// How long the hold lives if never settled (at most [`MAX_RESERVATION_TTL`]).
    pub ttl: Duration,
}

/// A hold on every line of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    pub id: String,
    pub lines: Vec<BudgetLine>,
    /// The amount held on each line.
    pub amount: Micros,
    pub expires_at: DateTime<Utc>,
}

/// How long before its hold expires a settle stops trusting the hold as the
/// proof that the reservation is unsettled, and leaves a settle marker
/// instead (as every settle after expiry does). Near expiry another gateway
/// whose clock runs a little ahead may already have dropped the hold as
/// expired; a settle that took the missing hold for "settled before" would
/// lose the call's spend. Clocks must agree to well within this.
pub const SETTLE_MARKER_MARGIN: std::time::Duration = std::time::Duration::from_secs(10);

impl Reservation {
    /// From when a settle of this reservation goes by a settle marker rather
    /// than by its hold (see [`SETTLE_MARKER_MARGIN`]).
    pub fn marker_from(&self) -> DateTime<Utc> {
        self.expires_at - chrono::Duration::from_std(SETTLE_MARKER_MARGIN).unwrap_or_default()
    }
}

/// Result of a reservation attempt that reached the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReserveOutcome {
    Reserved(Reservation),
    /// Line `line` cannot pay `amount.min`; `available` is what it has left.
    Exhausted {
        line: usize,
        available: Micros,
        resets_at: Option<DateTime<Utc>>,
    },
}

/// Result of a settle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SettleOutcome {
    Settled,
    /// This reservation id was settled before; nothing changed.
    AlreadySettled,
}

/// What a line has committed and holds right now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LineUsage {
    pub spent: Micros,
    pub held: Micros,
}

/// A place budget counters live.
pub trait BudgetStore: Send + Sync {
    /// Hold the largest amount in `[amount.min, amount.max]` that every
    /// line can pay, on all lines or none.
    fn reserve<'a>(&'a self, request: ReserveRequest<'a>) -> StoreFuture<'a, ReserveOutcome>;

    /// Commit `actual` on every line of `reservation` (in the window the
    /// reservation was made in) and release its hold.
    fn settle<'a>(
        &'a self,
        reservation: &'a Reservation,
        actual: Micros,
        now: DateTime<Utc>,
    ) -> StoreFuture<'a, SettleOutcome>;

    /// Committed spend and live holds of each line at `now`.
    fn usage<'a>(
        &'a self,
        lines: &'a [BudgetLine],
        now: DateTime<Utc>,
    ) -> StoreFuture<'a, Vec<LineUsage>>;

    /// One cheap round trip that touches no counters, so a readiness probe
    /// can tell a reachable store from one that is down without spending.
    fn ping(&self) -> StoreFuture<'_, ()>;
}

/// Checks shared by both stores before touching counters.
fn validate(request: &ReserveRequest<'_>) -> Result<(), StoreError> {
    if request.id.is_empty() || request.id.contains(':') {
        return Err(StoreError::Invalid(format!(
            "reservation id {:?} must be non-empty and contain no ':'",
            request.id
        )));
    }
    if request.amount.min.get() < 0 || request.amount.min > request.amount.max {
        return Err(StoreError::Invalid(format!(
            "reservation amount range {:?} is not 0 <= min <= max",
            request.amount
        )));
    }
    if request.ttl.is_zero() || request.ttl > MAX_RESERVATION_TTL {
        return Err(StoreError::Invalid(format!(
            "reservation ttl {:?} must be between 1ms and {MAX_RESERVATION_TTL:?}",
            request.ttl
        )));
    }
    if let Some(first) = request.lines.first()
        && (first.tree().is_empty() || request.lines.iter().any(|l| l.tree() != first.tree()))
    {
        return Err(StoreError::Invalid(
            "all lines of a reservation must belong to one delegation tree ({tree} key prefix)"
                .into(),
        ));
    }
    Ok(())
}

/// The rolling bucket index of `now`, and the first bucket still counted.
fn rolling_range(seconds: u64, bucket_seconds: u64, now: DateTime<Utc>) -> (i64, i64) {
    let now_ms = now.timestamp_millis();
    let bucket_ms = (bucket_seconds * 1000) as i64;
    let window_ms = (seconds * 1000) as i64;
    (
        now_ms.div_euclid(bucket_ms),
        (now_ms - window_ms).div_euclid(bucket_ms),
    )
}

/// When spend in rolling bucket `bucket` stops counting.
fn rolling_relief(seconds: u64, bucket_seconds: u64, bucket: i64) -> Option<DateTime<Utc>> {
    let ms = (bucket + 1) * (bucket_seconds * 1000) as i64 + (seconds * 1000) as i64;
    DateTime::from_timestamp_millis(ms)
}

/// When a line's counter may be dropped.
fn counter_expiry(window: &WindowInstance, now: DateTime<Utc>) -> DateTime<Utc> {
    let retention = chrono::Duration::from_std(COUNTER_RETENTION).unwrap_or_default();
    match window {
        WindowInstance::Calendar { end, .. } => (*end).max(now) + retention,
        WindowInstance::Rolling { seconds, .. } => {
            now + chrono::Duration::seconds(*seconds as i64) + retention
        }
    }
}
