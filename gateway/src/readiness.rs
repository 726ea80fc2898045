//! What `/readyz` reports: whether this gateway can serve a metered request
//! right now, and if not, which dependency is missing.
//!
//! The decision is a pure function of what was observed ([`Observed`] ->
//! [`missing`]), kept apart from the probing. The only probe that costs a
//! round trip is the budget store's ping; its answer is cached for
//! [`PROBE_CACHE`] so that a load balancer polling `/readyz` often does not
//! turn into a stream of store calls. Every other input is an atomic read.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use caracal_policy::Budgets;

/// How long a budget-store probe answer is reused.
pub const PROBE_CACHE: Duration = Duration::from_secs(1);

/// What the gateway saw when asked whether it is ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    pub config_loaded: bool,
    /// The spool can take another event (not full, no failed fsync).
    pub spool_has_room: bool,
    /// The last batch shipped to the ledger store was accepted (or none was
    /// needed yet).
    pub ledger_store_accepting: bool,
    /// The budget store answered a ping within the store timeout.
    pub budget_store_answering: bool,
}

/// Names of what is missing, in a fixed order; empty means ready.
pub fn missing(seen: Observed) -> Vec<&'static str> {
    let checks = [
        (seen.config_loaded, "config"),
        (seen.spool_has_room, "spool"),
        (seen.ledger_store_accepting, "ledger_store"),
        (seen.budget_store_answering, "budget_store"),
    ];
    checks
        .into_iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, name)| name)
        .collect()
}

/// The `/readyz` body: `{"ready":BOOL,"missing":[...]}`.
pub fn body(missing: &[&str]) -> String {
    // Written by hand so the key order is fixed whatever serde_json's
    // features are; the names are plain identifiers, serialised as strings.
    let names = serde_json::to_string(missing).unwrap_or_else(|_| "[]".into());
    format!(r#"{{"ready":{},"missing":{names}}}"#, missing.is_empty())
}

/// The last budget-store probe and when it was taken.
#[derive(Debug, Default)]
pub struct BudgetProbe {
    last: Mutex<Option<(Instant, bool)>>,
}

impl BudgetProbe {
    /// Whether the store answers, from the cache when the last answer is
    /// younger than [`PROBE_CACHE`]. The ping itself is bounded by the
    /// store timeout `budgets` was built with, so this never hangs.
    pub async fn answering(&self, budgets: &Budgets) -> bool {
        if let Some(cached) = self.fresh(Instant::now()) {
            return cached;
        }
        let ok = match budgets.ping().await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "budget store probe failed");
                false
            }
        };
        // A poisoned lock only loses the cache; the answer still stands.
        if let Ok(mut last) = self.last.lock() {
            *last = Some((Instant::now(), ok));
        }
        ok
    }

    fn fresh(&self, now: Instant) -> Option<bool> {
        let last = self.last.lock().ok()?;
        let (at, ok) = (*last)?;
        (now.saturating_duration_since(at) < PROBE_CACHE).then_some(ok)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use caracal_policy::MemoryBudgetStore;

    use super::*;

    const ALL: Observed = Observed {
        config_loaded: true,
        spool_has_room: true,
        ledger_store_accepting: true,
        budget_store_answering: true,
    };

    #[test]
    fn each_missing_dependency_is_named() {
        let cases: [(Observed, &[&str]); 6] = [
            (ALL, &[]),
            (
                Observed {
                    config_loaded: false,
                    ..ALL
                },
                &["config"],
            ),
            (
                Observed {
                    spool_has_room: false,
                    ..ALL
                },
                &["spool"],
            ),
            (
                Observed {
                    ledger_store_accepting: false,
                    ..ALL
                },
                &["ledger_store"],
            ),
            (
                Observed {
                    budget_store_answering: false,
                    ..ALL
                },
                &["budget_store"],
            ),
            (
                Observed {
                    config_loaded: false,
                    spool_has_room: false,
                    ledger_store_accepting: false,
                    budget_store_answering: false,
                },
                &["config", "spool", "ledger_store", "budget_store"],
            ),
        ];
        for (seen, want) in cases {
            assert_eq!(missing(seen), want, "{seen:?}");
        }
    }

    #[test]
    fn body_says_ready_only_when_nothing_is_missing() {
        assert_eq!(body(&[]), r#"{"ready":true,"missing":[]}"#);
        assert_eq!(
            body(&["budget_store", "config"]),
            r#"{"ready":false,"missing":["budget_store","config"]}"#
        );
    }

    #[tokio::test]
    async fn probe_answers_are_cached_for_a_second() {
        let probe = BudgetProbe::default();
        // No store: not answering, and that answer is reused.
        assert!(!probe.answering(&Budgets::unavailable()).await);
        let working = Budgets::new(Arc::new(MemoryBudgetStore::new()));
        assert!(!probe.answering(&working).await, "cached answer reused");
        // Once the cache is stale the store is asked again.
        *probe.last.lock().unwrap() = Some((Instant::now() - PROBE_CACHE, false));
        assert!(probe.answering(&working).await);
    }
}
