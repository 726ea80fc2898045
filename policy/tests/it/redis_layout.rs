//! What the Redis store leaves behind: rolling counters stay bounded, and
//! every key it creates expires by itself.

use std::time::Duration;

use caracal_api::Micros;
use caracal_policy::{BudgetStore, ReserveAmount, ReserveOutcome, ReserveRequest, WindowInstance};

use crate::support::{TestRedis, at, day_of, line};

#[tokio::test]
async fn rolling_counter_stays_bounded_and_every_key_expires() {
    let redis = TestRedis::new();
    let store = redis.store().await;
    let start = at("2026-05-10T12:00:00Z");
    let rolling = line(
        "layout",
        "rolling",
        1_000_000,
        WindowInstance::Rolling {
            seconds: 60,
            bucket_seconds: 1,
        },
    );
    let daily = line("layout", "daily", 1_000_000, day_of(start));
    let lines = [rolling.clone(), daily];
    // Five minutes of one request per second, each settled at once, and
    // one more every 10 s left unsettled (a dead gateway).
    for s in 0..300 {
        let now = start + chrono::Duration::seconds(s);
        let outcome = store
            .reserve(ReserveRequest {
                id: &format!("r{s}"),
                lines: &lines,
                amount: ReserveAmount {
                    min: Micros(10),
                    max: Micros(10),
                },
                now,
                ttl: Duration::from_secs(30),
            })
            .await
            .unwrap();
        let ReserveOutcome::Reserved(r) = outcome else {
            panic!("{outcome:?}")
        };
        if s % 10 != 0 {
            store.settle(&r, Micros(7), now).await.unwrap();
        }
    }
    let end = start + chrono::Duration::seconds(299);
    let usage = store.usage(&lines, end).await.unwrap();
    // The last 60 s (61 one-second buckets overlap it) of settled spend.
    assert_eq!(usage[0].spent, Micros(7 * 55));
    // Unsettled holds younger than 30 s: those at s = 270, 280, 290.
    assert_eq!(usage[0].held, Micros(30));
    assert_eq!(usage[1].spent, Micros(7 * 270));

    let mut conn = redis.raw().await;
    let counter = format!("{}:{}", redis.prefix, rolling.key);
    let fields: i64 = redis::cmd("HLEN")
        .arg(&counter)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(fields <= 62, "rolling counter has {fields} fields");
    let holds: i64 = redis::cmd("ZCARD")
        .arg(format!("{counter}:h"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(holds, 3);

    let keys = redis.keys().await;
    assert_eq!(keys.len(), 4, "{keys:?}");
    for key in keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0, "{key} has no expiry ({ttl})");
    }
    redis.cleanup().await;
}

#[tokio::test]
async fn amounts_beyond_exact_lua_arithmetic_are_refused() {
    let redis = TestRedis::new();
    let store = redis.store().await;
    let now = at("2026-05-10T12:00:00Z");
    let huge = [line("huge", "daily", (1 << 53) + 1, day_of(now))];
    let refused = store
        .reserve(ReserveRequest {
            id: "r1",
            lines: &huge,
            amount: ReserveAmount {
                min: Micros(1),
                max: Micros(1),
            },
            now,
            ttl: Duration::from_secs(30),
        })
        .await;
    assert!(
        matches!(refused, Err(caracal_policy::StoreError::Invalid(_))),
        "{refused:?}"
    );
    assert!(redis.keys().await.is_empty());
}
