//! In-process budget store for `caracal dev` and tests. Same semantics as
//! the Redis store (one lock makes each operation atomic); counters,
//! expired holds and old settle markers are swept so memory stays bounded.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use caracal_api::Micros;
use chrono::{DateTime, Utc};

use super::{
    BudgetStore, LineUsage, Reservation, ReserveOutcome, ReserveRequest, SettleOutcome, StoreError,
    StoreFuture, counter_expiry, rolling_range, rolling_relief, validate,
};
use crate::decision::BudgetLine;
use crate::window::WindowInstance;

/// Budget counters in a `HashMap` behind a mutex.
#[derive(Debug, Default)]
pub struct MemoryBudgetStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    counters: HashMap<String, Counter>,
    /// Ids of reservations settled after their hold expired.
    settled: HashMap<String, DateTime<Utc>>,
    ops_since_sweep: u32,
}

#[derive(Debug, Default)]
struct Counter {
    /// Calendar windows: committed spend.
    spent: i64,
    /// Rolling windows: committed spend per bucket index.
    buckets: BTreeMap<i64, i64>,
    /// Live holds: `<reservation id>:<amount>` (the Redis store's zset
    /// member, so a repeated id behaves the same in both) -> (amount, expiry).
    holds: HashMap<String, (i64, DateTime<Utc>)>,
    expires_at: Option<DateTime<Utc>>,
}

impl Counter {
    /// Drop expired holds and rolling buckets that no longer count; return
    /// (committed spend, held) at `now`.
    fn refresh(&mut self, window: &WindowInstance, now: DateTime<Utc>) -> (i64, i64) {
        self.holds.retain(|_, (_, exp)| *exp > now);
        let held = saturating_sum(self.holds.values().map(|(a, _)| *a));
        let spent = match window {
            WindowInstance::Calendar { .. } => self.spent,
            WindowInstance::Rolling {
                seconds,
                bucket_seconds,
            } => {
                let (_, first) = rolling_range(*seconds, *bucket_seconds, now);
                self.buckets = self.buckets.split_off(&first);
                saturating_sum(self.buckets.values().copied())
            }
        };
        (spent, held)
    }

    fn relief(&self, window: &WindowInstance) -> Option<DateTime<Utc>> {
        match window {
            WindowInstance::Calendar { end, .. } => Some(*end),
            WindowInstance::Rolling {
                seconds,
                bucket_seconds,
            } => {
                let oldest = self.buckets.iter().find(|(_, v)| **v > 0)?.0;
                rolling_relief(*seconds, *bucket_seconds, *oldest)
            }
        }
    }
}

impl State {
    fn sweep(&mut self, now: DateTime<Utc>) {
        self.ops_since_sweep += 1;
        if self.ops_since_sweep < 1024 {
            return;
        }
        self.ops_since_sweep = 0;
        self.counters
            .retain(|_, c| c.expires_at.is_none_or(|t| t > now));
        self.settled.retain(|_, t| *t > now);
    }

    fn counter(&mut self, line: &BudgetLine, now: DateTime<Utc>) -> &mut Counter {
        // Looked up first, so that the key is copied only for a new counter
        // (this runs under the store's lock on every reserve and settle).
        if !self.counters.contains_key(&*line.key) {
            self.counters
                .insert(line.key.to_string(), Counter::default());
        }
        let counter = self
            .counters
            .get_mut(&*line.key)
            .expect("inserted just above when missing");
        if counter.expires_at.is_some_and(|t| t <= now) {
            *counter = Counter::default();
        }
        let expiry = counter_expiry(&line.window, now);
        counter.expires_at = Some(counter.expires_at.map_or(expiry, |t| t.max(expiry)));
        counter
    }

    fn reserve(&mut self, req: &ReserveRequest<'_>) -> ReserveOutcome {
        self.sweep(req.now);
        let mut amount = req.amount.max.get();
        for (i, line) in req.lines.iter().enumerate() {
            let counter = self.counter(line, req.now);
            let (spent, held) = counter.refresh(&line.window, req.now);
            let available = line.limit.get().saturating_sub(spent).saturating_sub(held);
            amount = amount.min(available);
            if amount < req.amount.min.get() {
                return ReserveOutcome::Exhausted {
                    line: i,
                    available: Micros(available.max(0)),
                    resets_at: counter.relief(&line.window),
                };
            }
        }
        let expires_at = req.now + chrono::Duration::from_std(req.ttl).unwrap_or_default();
        let member = hold_member(req.id, Micros(amount));
        for line in req.lines {
            let counter = self.counter(line, req.now);
            // Like Redis' `ZADD NX`: a repeat of a live hold is that hold.
            counter
                .holds
                .entry(member.clone())
                .or_insert((amount, expires_at));
        }
        ReserveOutcome::Reserved(Reservation {
            id: req.id.to_owned(),
            lines: req.lines.to_vec(),
            amount: Micros(amount),
            expires_at,
        })
    }

    /// Same rule as the Redis script: before expiry a missing hold means
    /// settled already; after expiry a marker remembers late settles.
    fn settle(&mut self, res: &Reservation, actual: Micros, now: DateTime<Utc>) -> SettleOutcome {
        self.sweep(now);
        let member = hold_member(&res.id, res.amount);
        if now < res.marker_from() {
            let Some(first) = res.lines.first() else {
                return SettleOutcome::Settled;
            };
            let held = self
                .counters
                .get(&*first.key)
                .is_some_and(|c| c.holds.contains_key(&member));
            if !held {
                return SettleOutcome::AlreadySettled;
            }
        } else {
            let marker_expiry = now + chrono::Duration::days(1);
            if self.settled.insert(res.id.clone(), marker_expiry).is_some() {
                return SettleOutcome::AlreadySettled;
            }
        }
        for line in &res.lines {
            let counter = self.counter(line, now);
            counter.holds.remove(&member);
            match &line.window {
                WindowInstance::Calendar { .. } => {
                    counter.spent = counter.spent.saturating_add(actual.get());
                }
                WindowInstance::Rolling {
                    seconds,
                    bucket_seconds,
                } => {
                    let (bucket, _) = rolling_range(*seconds, *bucket_seconds, now);
                    let spent = counter.buckets.entry(bucket).or_default();
                    *spent = spent.saturating_add(actual.get());
                }
            }
        }
        SettleOutcome::Settled
    }

    fn usage(&mut self, lines: &[BudgetLine], now: DateTime<Utc>) -> Vec<LineUsage> {
        lines
            .iter()
            .map(|line| match self.counters.get_mut(&*line.key) {
                Some(c) if c.expires_at.is_none_or(|t| t > now) => {
                    let (spent, held) = c.refresh(&line.window, now);
                    LineUsage {
                        spent: Micros(spent),
                        held: Micros(held),
                    }
                }
                _ => LineUsage::default(),
            })
            .collect()
    }
}

/// Counters stop at `i64::MAX` rather than wrap (an absurd usage report can
/// cost that much), matching the Redis scripts' cap.
fn saturating_sum(amounts: impl Iterator<Item = i64>) -> i64 {
    amounts.fold(0, i64::saturating_add)
}

/// A hold is one reservation id *and* amount, as in the Redis store.
fn hold_member(id: &str, amount: Micros) -> String {
    format!("{id}:{}", amount.get())
}

impl MemoryBudgetStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> Result<T, StoreError> {
        // A poisoned lock means a panic mid-update: fail closed.
        let mut guard = self
            .state
            .lock()
            .map_err(|_| StoreError::Backend("memory store lock poisoned".into()))?;
        Ok(f(&mut guard))
    }
}

impl BudgetStore for MemoryBudgetStore {
    fn reserve<'a>(&'a self, request: ReserveRequest<'a>) -> StoreFuture<'a, ReserveOutcome> {
        Box::pin(async move {
            validate(&request)?;
            self.with_state(|s| s.reserve(&request))
        })
    }

    fn settle<'a>(
        &'a self,
        reservation: &'a Reservation,
        actual: Micros,
        now: DateTime<Utc>,
    ) -> StoreFuture<'a, SettleOutcome> {
        Box::pin(async move {
            if actual.get() < 0 {
                return Err(StoreError::Invalid("actual cost is negative".into()));
            }
            self.with_state(|s| s.settle(reservation, actual, now))
        })
    }

    fn usage<'a>(
        &'a self,
        lines: &'a [BudgetLine],
        now: DateTime<Utc>,
    ) -> StoreFuture<'a, Vec<LineUsage>> {
        Box::pin(async move { self.with_state(|s| s.usage(lines, now)) })
    }

    /// Fails only when the lock is poisoned, as every other call would.
    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move { self.with_state(|_| ()) })
    }
}
