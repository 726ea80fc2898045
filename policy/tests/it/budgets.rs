//! The fail-closed facade: store trouble of any kind is a denial with
//! `budget_store_unavailable`, quickly; exhaustion names the budget.

use std::sync::Arc;
use std::time::{Duration, Instant};

use caracal_api::Micros;
use caracal_policy::fixtures::{SnapshotBuilder, daily, policy_rule, with_budget};
use caracal_policy::store::StoreFuture;
use caracal_policy::{
    Allowed, BudgetLine, BudgetStore, Budgets, Call, Decision, LineUsage, MemoryBudgetStore,
    RedisBudgetStore, Request, Reservation, ReserveOutcome, ReserveRequest, SettleOutcome,
    StoreError, evaluate,
};
use chrono::{DateTime, Utc};

use crate::support::TestRedis;

/// An allowed decision for a $0.02 budget (each call reserves 3,500 micros).
fn allowed(tree: &str) -> Allowed {
    let rule = with_budget(
        policy_rule("team/small", "team/bot"),
        20_000,
        daily("UTC"),
        tree,
    );
    let snapshot = SnapshotBuilder::new()
        .agent("team/bot", &[], vec![rule])
        .build();
    let request = Request {
        agent: "team/bot",
        provider: "openai",
        call: Call::Model {
            model: "gpt-test",
            input_tokens: 1000,
            max_tokens: Some(100),
        },
    };
    match evaluate(&snapshot, &request, Utc::now()) {
        Decision::Allow(a) => a,
        Decision::Deny(d) => panic!("{d:?}"),
    }
}

async fn drain(budgets: &Budgets, a: &Allowed) -> caracal_policy::Denial {
    for i in 0..100 {
        if let Err(d) = budgets.reserve(a, &format!("drain{i}"), Utc::now()).await {
            return d;
        }
    }
    panic!("a $0.02 budget never ran out");
}

#[tokio::test]
async fn exhaustion_names_the_budget_and_its_reset() {
    let redis = TestRedis::new();
    let a = allowed("exhaust");
    for budgets in [
        Budgets::new(Arc::new(MemoryBudgetStore::new())),
        Budgets::new(Arc::new(redis.store().await)),
    ] {
        let denial = drain(&budgets, &a).await;
        assert_eq!(denial.reason.code(), "budget_exhausted", "{denial:?}");
        let json = serde_json::to_value(&denial).unwrap();
        assert_eq!(json["budget"], "policy team/small (agent team/bot)");
        let resets_at: DateTime<Utc> = json["resets_at"].as_str().unwrap().parse().unwrap();
        assert_eq!(Some(resets_at), a.lines[0].window.resets_at());
    }
    redis.cleanup().await;
}

#[tokio::test]
async fn no_store_denies() {
    let d = Budgets::unavailable()
        .reserve(&allowed("none"), "r1", Utc::now())
        .await
        .unwrap_err();
    assert_eq!(d.reason.code(), "budget_store_unavailable");
}

#[tokio::test]
async fn unreachable_redis_denies() {
    // Nothing listens on port 1; the client fails to connect at all.
    assert!(
        RedisBudgetStore::connect("redis://127.0.0.1:1", "x")
            .await
            .is_err()
    );
}

/// A "Redis" that accepts connections and never answers: connecting fails
/// within its bound instead of hanging the gateway.
#[tokio::test]
async fn silent_redis_fails_to_connect_quickly() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let url = format!("redis://{addr}");
    let started = Instant::now();
    let result = RedisBudgetStore::connect(&url, "x").await;
    assert!(result.is_err(), "a silent server must not yield a store");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    hold.abort();
}

/// A store that answers too late.
struct Slow(MemoryBudgetStore);

impl BudgetStore for Slow {
    fn reserve<'a>(&'a self, request: ReserveRequest<'a>) -> StoreFuture<'a, ReserveOutcome> {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            self.0.reserve(request).await
        })
    }
    fn settle<'a>(
        &'a self,
        reservation: &'a Reservation,
        actual: Micros,
        now: DateTime<Utc>,
    ) -> StoreFuture<'a, SettleOutcome> {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            self.0.settle(reservation, actual, now).await
        })
    }
    fn usage<'a>(
        &'a self,
        lines: &'a [BudgetLine],
        now: DateTime<Utc>,
    ) -> StoreFuture<'a, Vec<LineUsage>> {
        self.0.usage(lines, now)
    }
    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            self.0.ping().await
        })
    }
}

#[tokio::test]
async fn slow_store_times_out_into_a_denial() {
    let budgets = Budgets::new(Arc::new(Slow(MemoryBudgetStore::new())))
        .with_timeout(Duration::from_millis(50));
    let started = Instant::now();
    let d = budgets
        .reserve(&allowed("slow"), "r1", Utc::now())
        .await
        .unwrap_err();
    assert_eq!(d.reason.code(), "budget_store_unavailable", "{d:?}");
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "took {:?}",
        started.elapsed()
    );
    // The store never saw the reservation complete, so nothing is held.
    let a = allowed("slow");
    let usage = budgets.usage(&a.lines, Utc::now()).await.unwrap();
    assert_eq!(usage[0].held, Micros(0));
    // Settle is bounded the same way.
    let fake = Reservation {
        id: "r1".into(),
        lines: a.lines.clone(),
        amount: Micros(1),
        expires_at: Utc::now(),
    };
    assert!(matches!(
        budgets.settle(&fake, Micros(1), Utc::now()).await,
        Err(StoreError::Timeout(_))
    ));
    // And so is the readiness ping.
    assert!(matches!(budgets.ping().await, Err(StoreError::Timeout(_))));
}

#[tokio::test]
async fn ping_needs_a_configured_store() {
    assert!(Budgets::unavailable().ping().await.is_err());
    let budgets = Budgets::new(Arc::new(MemoryBudgetStore::new()));
    budgets.ping().await.unwrap();
}

#[tokio::test]
async fn settle_commits_actual_through_the_facade() {
    let budgets = Budgets::new(Arc::new(MemoryBudgetStore::new()));
    let a = allowed("facade");
    let r = budgets.reserve(&a, "r1", Utc::now()).await.unwrap();
    assert_eq!(r.amount, Micros(3_500));
    budgets.settle(&r, Micros(1_234), Utc::now()).await.unwrap();
    let usage = budgets.usage(&a.lines, Utc::now()).await.unwrap();
    assert_eq!((usage[0].spent, usage[0].held), (Micros(1_234), Micros(0)));
}
