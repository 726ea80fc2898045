//! The gateway's handle on budgets: a store plus the fail-closed rules.
//!
//! Every store call is bounded by a timeout; a timeout or a store error is
//! a denial (`budget_store_unavailable`), never an allow. An unconfigured
//! store (`Budgets::unavailable`) denies everything that has a budget.

use std::sync::Arc;
use std::time::Duration;

use caracal_api::Micros;
use chrono::{DateTime, Utc};
use tracing::Instrument;

use super::{
    BudgetStore, LineUsage, Reservation, ReserveOutcome, ReserveRequest, SettleOutcome, StoreError,
};
use crate::decision::{Allowed, BudgetLine, Denial, DenyReason};

/// Default bound on one store round trip: well under 100 ms, so a sick
/// Redis turns into fast denials rather than hanging agents.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_millis(50);

/// Default lifetime of a hold that is never settled.
pub const DEFAULT_RESERVATION_TTL: Duration = Duration::from_secs(300);

/// A budget store with a timeout and a reservation lifetime.
#[derive(Clone)]
pub struct Budgets {
    store: Option<Arc<dyn BudgetStore>>,
    timeout: Duration,
    ttl: Duration,
}

impl std::fmt::Debug for Budgets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budgets")
            .field("configured", &self.store.is_some())
            .field("timeout", &self.timeout)
            .field("ttl", &self.ttl)
            .finish()
    }
}

fn unavailable(detail: impl Into<String>) -> Denial {
    Denial::new(
        DenyReason::BudgetStoreUnavailable {
            detail: detail.into(),
        },
        None,
    )
}

impl Budgets {
    pub fn new(store: Arc<dyn BudgetStore>) -> Self {
        Budgets {
            store: Some(store),
            timeout: DEFAULT_STORE_TIMEOUT,
            ttl: DEFAULT_RESERVATION_TTL,
        }
    }

    /// No store configured: every request with a budget is denied.
    pub fn unavailable() -> Self {
        Budgets {
            store: None,
            timeout: DEFAULT_STORE_TIMEOUT,
            ttl: DEFAULT_RESERVATION_TTL,
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long a hold lives if its gateway never settles it; should cover
    /// the longest request the gateway lets through.
    pub fn with_reservation_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    fn store(&self) -> Result<&dyn BudgetStore, StoreError> {
        self.store
            .as_deref()
            .ok_or_else(|| StoreError::Backend("no budget store is configured".into()))
    }

    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))?
    }

    /// Reserve `allowed.amount` on all of its lines, or deny with the
    /// budget that cannot pay (`budget_exhausted`) or the store failure
    /// (`budget_store_unavailable`).
    pub async fn reserve(
        &self,
        allowed: &Allowed,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Reservation, Denial> {
        let span = tracing::debug_span!(
            "budget_reserve",
            reservation = id,
            lines = allowed.lines.len()
        );
        async {
            let store = self.store().map_err(|e| unavailable(e.to_string()))?;
            let request = ReserveRequest {
                id,
                lines: &allowed.lines,
                amount: allowed.amount,
                now,
                ttl: self.ttl,
            };
            match self.bounded(store.reserve(request)).await {
                Ok(ReserveOutcome::Reserved(r)) => Ok(r),
                Ok(ReserveOutcome::Exhausted {
                    line, resets_at, ..
                }) => {
                    let budget = allowed
                        .lines
                        .get(line)
                        .map(BudgetLine::budget)
                        .unwrap_or_default();
                    let reason = DenyReason::BudgetExhausted {
                        budget: budget.clone(),
                        resets_at,
                    };
                    Err(Denial {
                        message: format!("{reason} ({budget})"),
                        reason,
                        rule: Some(budget),
                    })
                }
                Err(e) => {
                    tracing::warn!(error = %e, "budget reservation failed; denying");
                    Err(unavailable(e.to_string()))
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Commit `actual` and release the rest of the hold. An error here means
    /// the hold stays until it expires (never an overspend); the caller
    /// should retry or record the failure.
    pub async fn settle(
        &self,
        reservation: &Reservation,
        actual: Micros,
        now: DateTime<Utc>,
    ) -> Result<SettleOutcome, StoreError> {
        let store = self.store()?;
        self.bounded(store.settle(reservation, actual, now))
            .instrument(tracing::debug_span!("budget_settle", reservation = %reservation.id))
            .await
    }

    /// Spend and holds of `lines` (for status and `caracal budget`).
    pub async fn usage(
        &self,
        lines: &[BudgetLine],
        now: DateTime<Utc>,
    ) -> Result<Vec<LineUsage>, StoreError> {
        let store = self.store()?;
        self.bounded(store.usage(lines, now)).await
    }

    /// Whether the store answers within the same timeout requests get: what
    /// a gateway's `/readyz` asks. No store configured is an error.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let store = self.store()?;
        self.bounded(store.ping()).await
    }
}
