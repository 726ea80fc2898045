//! One suite, two stores: every case runs against `MemoryBudgetStore` and
//! against `RedisBudgetStore` on the real Redis, and both must agree.

use std::time::Duration;

use caracal_api::Micros;
use caracal_policy::{
    BudgetLine, BudgetStore, LineUsage, Reservation, ReserveAmount, ReserveOutcome, ReserveRequest,
    SettleOutcome, StoreError, WindowInstance,
};
use chrono::{DateTime, Utc};

use crate::support::{at, day_of, line};

const T0: &str = "2026-05-10T12:00:00Z";
const TTL: Duration = Duration::from_secs(60);

async fn reserve(
    store: &dyn BudgetStore,
    id: &str,
    lines: &[BudgetLine],
    (min, max): (i64, i64),
    now: DateTime<Utc>,
    ttl: Duration,
) -> ReserveOutcome {
    store
        .reserve(ReserveRequest {
            id,
            lines,
            amount: ReserveAmount {
                min: Micros(min),
                max: Micros(max),
            },
            now,
            ttl,
        })
        .await
        .unwrap()
}

fn held(outcome: ReserveOutcome) -> Reservation {
    match outcome {
        ReserveOutcome::Reserved(r) => r,
        other => panic!("expected a reservation, got {other:?}"),
    }
}

async fn usage(
    store: &dyn BudgetStore,
    lines: &[BudgetLine],
    now: DateTime<Utc>,
) -> Vec<(i64, i64)> {
    store
        .usage(lines, now)
        .await
        .unwrap()
        .into_iter()
        .map(|LineUsage { spent, held }| (spent.get(), held.get()))
        .collect()
}

async fn reserve_settle_and_exhaust(store: &dyn BudgetStore) {
    let now = at(T0);
    let lines = [line("t1", "daily", 100, day_of(now))];
    let first = held(reserve(store, "r1", &lines, (60, 60), now, TTL).await);
    assert_eq!(first.amount, Micros(60));
    assert_eq!(
        reserve(store, "r2", &lines, (60, 60), now, TTL).await,
        ReserveOutcome::Exhausted {
            line: 0,
            available: Micros(40),
            resets_at: Some(at("2026-05-11T00:00:00Z")),
        }
    );
    assert_eq!(usage(store, &lines, now).await, [(0, 60)]);
    let settled = store.settle(&first, Micros(30), now).await.unwrap();
    assert_eq!(settled, SettleOutcome::Settled);
    let again = store.settle(&first, Micros(30), now).await.unwrap();
    assert_eq!(again, SettleOutcome::AlreadySettled);
    assert_eq!(usage(store, &lines, now).await, [(30, 0)]);
    held(reserve(store, "r3", &lines, (70, 70), now, TTL).await);
    assert!(matches!(
        reserve(store, "r4", &lines, (1, 1), now, TTL).await,
        ReserveOutcome::Exhausted {
            available: Micros(0),
            ..
        }
    ));
}

async fn reserves_on_all_lines_or_none(store: &dyn BudgetStore) {
    let now = at(T0);
    let parent = line("t2", "parent", 100, day_of(now));
    let child = line("t2", "child", 50, day_of(now));
    let spend = held(
        reserve(
            store,
            "c1",
            std::slice::from_ref(&child),
            (40, 40),
            now,
            TTL,
        )
        .await,
    );
    store.settle(&spend, Micros(40), now).await.unwrap();
    let both = [parent.clone(), child.clone()];
    assert!(matches!(
        reserve(store, "c2", &both, (20, 20), now, TTL).await,
        ReserveOutcome::Exhausted {
            line: 1,
            available: Micros(10),
            ..
        }
    ));
    // Nothing was held on the parent by the failed attempt.
    assert_eq!(usage(store, &both, now).await, [(0, 0), (40, 0)]);
    let ok = held(reserve(store, "c3", &both, (10, 10), now, TTL).await);
    assert_eq!(usage(store, &both, now).await, [(0, 10), (40, 10)]);
    store.settle(&ok, Micros(7), now).await.unwrap();
    assert_eq!(usage(store, &both, now).await, [(7, 0), (47, 0)]);
}

async fn flexible_amount_takes_what_the_tightest_line_has(store: &dyn BudgetStore) {
    let now = at(T0);
    let lines = [
        line("t3", "wide", 1_000, day_of(now)),
        line("t3", "narrow", 300, day_of(now)),
    ];
    let r = held(reserve(store, "f1", &lines, (10, 250), now, TTL).await);
    assert_eq!(r.amount, Micros(250));
    let r = held(reserve(store, "f2", &lines, (10, 250), now, TTL).await);
    assert_eq!(r.amount, Micros(50));
    assert!(matches!(
        reserve(store, "f3", &lines, (10, 250), now, TTL).await,
        ReserveOutcome::Exhausted { line: 1, .. }
    ));
}

async fn unsettled_holds_expire(store: &dyn BudgetStore) {
    let now = at(T0);
    let lines = [line("t4", "daily", 100, day_of(now))];
    held(
        reserve(
            store,
            "dead",
            &lines,
            (100, 100),
            now,
            Duration::from_secs(1),
        )
        .await,
    );
    let half = now + chrono::Duration::milliseconds(999);
    assert!(matches!(
        reserve(store, "e1", &lines, (1, 1), half, TTL).await,
        ReserveOutcome::Exhausted { .. }
    ));
    let after = now + chrono::Duration::seconds(1);
    let r = held(reserve(store, "e2", &lines, (100, 100), after, TTL).await);
    assert_eq!(usage(store, &lines, after).await, [(0, 100)]);
    store.settle(&r, Micros(100), after).await.unwrap();
    assert_eq!(usage(store, &lines, after).await, [(100, 0)]);
}

async fn settle_is_once_and_counts_even_after_expiry(store: &dyn BudgetStore) {
    let now = at(T0);
    let lines = [line("t5", "daily", 1_000, day_of(now))];
    let r = held(reserve(store, "s1", &lines, (100, 100), now, Duration::from_secs(1)).await);
    // The gateway was slow: the hold expired before the response came back,
    // but the money was spent, so it is still committed.
    let late = now + chrono::Duration::seconds(5);
    assert_eq!(
        store.settle(&r, Micros(80), late).await.unwrap(),
        SettleOutcome::Settled
    );
    assert_eq!(
        store.settle(&r, Micros(80), late).await.unwrap(),
        SettleOutcome::AlreadySettled
    );
    assert_eq!(usage(store, &lines, late).await, [(80, 0)]);
}

/// A settle just before its hold's expiry, after another gateway whose clock
/// runs a few milliseconds ahead has already dropped the hold as expired,
/// still counts the call's spend (once).
async fn a_settle_near_expiry_counts_after_another_clock_dropped_the_hold(store: &dyn BudgetStore) {
    let now = at(T0);
    let lines = [line("tnear", "daily", 1_000, day_of(now))];
    let ttl = Duration::from_secs(300);
    let r = held(reserve(store, "near", &lines, (100, 100), now, ttl).await);
    let expiry = now + chrono::Duration::seconds(300);
    let ahead = expiry + chrono::Duration::milliseconds(5);
    held(reserve(store, "other", &lines, (1, 1), ahead, TTL).await);
    let behind = expiry - chrono::Duration::milliseconds(10);
    assert_eq!(
        store.settle(&r, Micros(80), behind).await.unwrap(),
        SettleOutcome::Settled
    );
    assert_eq!(
        store.settle(&r, Micros(80), behind).await.unwrap(),
        SettleOutcome::AlreadySettled
    );
    assert_eq!(usage(store, &lines, ahead).await, [(80, 1)]);
}

async fn a_repeated_id_never_strands_a_hold(store: &dyn BudgetStore) {
    let now = at(T0);
    let lines = [line("t9", "daily", 1_000, day_of(now))];
    // A repeated reserve with the same id and amount is the same hold, so
    // one settle releases all of it.
    let r = held(reserve(store, "dup", &lines, (100, 100), now, TTL).await);
    held(reserve(store, "dup", &lines, (100, 100), now, TTL).await);
    assert_eq!(usage(store, &lines, now).await, [(0, 100)]);
    store.settle(&r, Micros(80), now).await.unwrap();
    assert_eq!(usage(store, &lines, now).await, [(80, 0)]);
    // The same id with another amount is a second hold: both count until
    // settled, so neither caller can spend money the store no longer holds.
    let a = held(reserve(store, "twin", &lines, (200, 200), now, TTL).await);
    let b = held(reserve(store, "twin", &lines, (50, 50), now, TTL).await);
    assert_eq!(usage(store, &lines, now).await, [(80, 250)]);
    store.settle(&a, Micros(200), now).await.unwrap();
    assert_eq!(usage(store, &lines, now).await, [(280, 50)]);
    store.settle(&b, Micros(10), now).await.unwrap();
    assert_eq!(usage(store, &lines, now).await, [(290, 0)]);
}

/// A hold of nothing (a tool priced at zero, say) settles like any other,
/// and what the call did cost is counted.
async fn a_free_hold_settles_and_counts(store: &dyn BudgetStore) {
    let now = at(T0);
    let lines = [line("tfree", "daily", 1_000, day_of(now))];
    let r = held(reserve(store, "zero", &lines, (0, 0), now, TTL).await);
    assert_eq!(
        store.settle(&r, Micros(5), now).await.unwrap(),
        SettleOutcome::Settled
    );
    assert_eq!(
        store.settle(&r, Micros(5), now).await.unwrap(),
        SettleOutcome::AlreadySettled
    );
    assert_eq!(usage(store, &lines, now).await, [(5, 0)]);
}

async fn absurd_costs_saturate_instead_of_wrapping(store: &dyn BudgetStore) {
    let now = at(T0);
    // A usage report of billions of tokens prices at the i64 ceiling; two
    // of them must not wrap the counter into a negative, spendable one.
    for (tree, window) in [
        ("t10", day_of(now)),
        (
            "t11",
            WindowInstance::Rolling {
                seconds: 3600,
                bucket_seconds: 60,
            },
        ),
    ] {
        let lines = [line(tree, "huge", 1_000, window)];
        // Two requests in flight at once, both reporting absurd usage.
        let first = held(reserve(store, "h1", &lines, (1, 1), now, TTL).await);
        let second = held(reserve(store, "h2", &lines, (1, 1), now, TTL).await);
        for r in [first, second] {
            store.settle(&r, Micros(i64::MAX), now).await.unwrap();
        }
        let [(spent, held)] = usage(store, &lines, now).await[..] else {
            panic!("one line")
        };
        assert!(spent >= 9_000_000_000_000_000_000, "{tree}: spent {spent}");
        assert_eq!(held, 0);
        assert!(matches!(
            reserve(store, "h3", &lines, (1, 1), now, TTL).await,
            ReserveOutcome::Exhausted { .. }
        ));
    }
}

async fn window_resets_during_a_request(store: &dyn BudgetStore) {
    let before = at("2026-05-10T23:59:59Z");
    let after = at("2026-05-11T00:00:01Z");
    let old_day = [line("t6", "daily", 100, day_of(before))];
    let new_day = [line("t6", "daily", 100, day_of(after))];
    assert_ne!(old_day[0].key, new_day[0].key);
    let r = held(reserve(store, "w1", &old_day, (100, 100), before, TTL).await);
    // The new day starts empty while the old request is still in flight.
    held(reserve(store, "w2", &new_day, (100, 100), after, TTL).await);
    // Its cost lands in the day it was reserved in.
    store.settle(&r, Micros(90), after).await.unwrap();
    assert_eq!(usage(store, &old_day, after).await, [(90, 0)]);
    assert_eq!(usage(store, &new_day, after).await, [(0, 100)]);
}

async fn rolling_window_forgets_old_spend(store: &dyn BudgetStore) {
    let now = at(T0);
    let window = WindowInstance::Rolling {
        seconds: 60,
        bucket_seconds: 1,
    };
    let lines = [line("t7", "rolling", 100, window)];
    let r = held(reserve(store, "o1", &lines, (100, 100), now, TTL).await);
    store.settle(&r, Micros(100), now).await.unwrap();
    let soon = now + chrono::Duration::seconds(30);
    // Spend in the bucket starting at T0 counts until T0 + 1s + 60s.
    assert_eq!(
        reserve(store, "o2", &lines, (1, 1), soon, TTL).await,
        ReserveOutcome::Exhausted {
            line: 0,
            available: Micros(0),
            resets_at: Some(at("2026-05-10T12:01:01Z")),
        }
    );
    let edge = at("2026-05-10T12:01:00.999Z");
    assert!(matches!(
        reserve(store, "o3", &lines, (1, 1), edge, TTL).await,
        ReserveOutcome::Exhausted { .. }
    ));
    let later = at("2026-05-10T12:01:01Z");
    held(reserve(store, "o4", &lines, (100, 100), later, TTL).await);
}

async fn invalid_requests_are_refused(store: &dyn BudgetStore) {
    let now = at(T0);
    let lines = [line("t8", "daily", 100, day_of(now))];
    let bad_id = store
        .reserve(ReserveRequest {
            id: "has:colon",
            lines: &lines,
            amount: ReserveAmount {
                min: Micros(1),
                max: Micros(1),
            },
            now,
            ttl: TTL,
        })
        .await;
    assert!(matches!(bad_id, Err(StoreError::Invalid(_))));
    let mixed = [lines[0].clone(), line("other", "daily", 100, day_of(now))];
    let mixed_trees = store
        .reserve(ReserveRequest {
            id: "ok",
            lines: &mixed,
            amount: ReserveAmount {
                min: Micros(1),
                max: Micros(1),
            },
            now,
            ttl: TTL,
        })
        .await;
    assert!(matches!(mixed_trees, Err(StoreError::Invalid(_))));
    let inverted = store
        .reserve(ReserveRequest {
            id: "ok",
            lines: &lines,
            amount: ReserveAmount {
                min: Micros(2),
                max: Micros(1),
            },
            now,
            ttl: TTL,
        })
        .await;
    assert!(matches!(inverted, Err(StoreError::Invalid(_))));
    assert_eq!(usage(store, &lines, now).await, [(0, 0)]);
}

async fn no_lines_reserve_the_maximum(store: &dyn BudgetStore) {
    let r = held(reserve(store, "free", &[], (1, i64::MAX), at(T0), TTL).await);
    assert_eq!(r.amount, Micros(i64::MAX));
    assert_eq!(
        store.settle(&r, Micros(5), at(T0)).await.unwrap(),
        SettleOutcome::Settled
    );
}

async fn ping_answers_without_touching_counters(store: &dyn BudgetStore) {
    let now = at(T0);
    let lines = [line("tping", "daily", 100, day_of(now))];
    held(reserve(store, "r1", &lines, (30, 30), now, TTL).await);
    store.ping().await.unwrap();
    store.ping().await.unwrap();
    assert_eq!(usage(store, &lines, now).await, [(0, 30)]);
}

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $case() {
                    let store = caracal_policy::MemoryBudgetStore::new();
                    super::$case(&store).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $case() {
                    let redis = crate::support::TestRedis::new();
                    let store = redis.store().await;
                    super::$case(&store).await;
                    redis.cleanup().await;
                }
            )*
        }
    };
}

suite!(
    ping_answers_without_touching_counters,
    reserve_settle_and_exhaust,
    reserves_on_all_lines_or_none,
    flexible_amount_takes_what_the_tightest_line_has,
    unsettled_holds_expire,
    settle_is_once_and_counts_even_after_expiry,
    a_repeated_id_never_strands_a_hold,
    absurd_costs_saturate_instead_of_wrapping,
    a_free_hold_settles_and_counts,
    a_settle_near_expiry_counts_after_another_clock_dropped_the_hold,
    window_resets_during_a_request,
    rolling_window_forgets_old_spend,
    invalid_requests_are_refused,
    no_lines_reserve_the_maximum,
);
