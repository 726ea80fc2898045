//! Concurrency proofs: many reservations racing from separate connections
//! (as separate gateways would) never commit more than a budget's limit,
//! and a client that dies mid-reservation leaves nothing held past expiry.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use caracal_api::Micros;
use caracal_policy::{
    BudgetLine, BudgetStore, MemoryBudgetStore, ReserveAmount, ReserveOutcome, ReserveRequest,
};
use chrono::Utc;
use rand::Rng;

use crate::support::{TestRedis, day_of, line};

const LIMIT: i64 = 10_000_000; // $10
const MAX_COST: i64 = 50_000; // $0.05
const TTL: Duration = Duration::from_secs(30);

/// Reserve a random cost on `lines` and, if held, commit it in full after a
/// short random delay. Returns the amount committed (0 if refused).
async fn spend(store: Arc<dyn BudgetStore>, id: String, lines: Arc<Vec<BudgetLine>>) -> i64 {
    let (cost, pause) = {
        let mut rng = rand::thread_rng();
        (rng.gen_range(1..=MAX_COST), rng.gen_range(0..2000u64))
    };
    let outcome = store
        .reserve(ReserveRequest {
            id: &id,
            lines: &lines,
            amount: ReserveAmount {
                min: Micros(cost),
                max: Micros(cost),
            },
            now: Utc::now(),
            ttl: TTL,
        })
        .await
        .unwrap();
    match outcome {
        ReserveOutcome::Reserved(r) => {
            tokio::time::sleep(Duration::from_micros(pause)).await;
            store.settle(&r, r.amount, Utc::now()).await.unwrap();
            cost
        }
        ReserveOutcome::Exhausted { .. } => 0,
    }
}

/// Watch `lines` while the race runs: committed plus held must never pass a
/// limit at any instant we can observe.
fn watch(
    store: Arc<dyn BudgetStore>,
    lines: Vec<BudgetLine>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut samples = 0;
        while !stop.load(Ordering::Relaxed) {
            let usage = store.usage(&lines, Utc::now()).await.unwrap();
            for (l, u) in lines.iter().zip(&usage) {
                assert!(
                    u.spent.get() + u.held.get() <= l.limit.get(),
                    "{l:?} at {u:?}"
                );
            }
            samples += 1;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        samples
    })
}

/// 1,000 racing reservations spread over `stores` against one $10 budget.
async fn one_budget(stores: Vec<Arc<dyn BudgetStore>>, tree: &str) {
    let budget = line(tree, "ten-dollars", LIMIT, day_of(Utc::now()));
    let lines = Arc::new(vec![budget.clone()]);
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch(stores[0].clone(), vec![budget.clone()], stop.clone());
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let store = stores[i % stores.len()].clone();
            tokio::spawn(spend(store, format!("one{i}"), lines.clone()))
        })
        .collect();
    let mut committed = 0;
    for t in tasks {
        committed += t.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    assert!(watcher.await.unwrap() > 0, "the watcher must have sampled");
    let usage = stores[1 % stores.len()]
        .usage(&lines, Utc::now())
        .await
        .unwrap();
    assert_eq!(usage[0].held, Micros(0));
    assert_eq!(usage[0].spent, Micros(committed));
    assert!(committed <= LIMIT, "overspent: {committed}");
    // Random costs average $0.025, so 1,000 of them ask for ~$25: the budget
    // must end up used to within one request's largest cost.
    assert!(
        committed > LIMIT - MAX_COST,
        "left unused: {}",
        LIMIT - committed
    );
}

/// A child spending under a $4 grant and its parent spending directly, both
/// against the parent's $10 budget, racing from all stores.
async fn child_and_parent(stores: Vec<Arc<dyn BudgetStore>>, tree: &str) {
    const GRANT: i64 = 4_000_000;
    let now = Utc::now();
    let parent = line(tree, "parent", LIMIT, day_of(now));
    let grant = line(tree, "grant", GRANT, day_of(now));
    let child_lines = Arc::new(vec![grant.clone(), parent.clone()]);
    let parent_lines = Arc::new(vec![parent.clone()]);
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch(
        stores[0].clone(),
        vec![grant.clone(), parent.clone()],
        stop.clone(),
    );
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let store = stores[i % stores.len()].clone();
            let lines = if i % 2 == 0 {
                &child_lines
            } else {
                &parent_lines
            };
            tokio::spawn(spend(store, format!("cp{i}"), lines.clone()))
        })
        .collect();
    let (mut by_child, mut by_parent) = (0, 0);
    for (i, t) in tasks.into_iter().enumerate() {
        let c = t.await.unwrap();
        if i % 2 == 0 {
            by_child += c
        } else {
            by_parent += c
        }
    }
    stop.store(true, Ordering::Relaxed);
    watcher.await.unwrap();
    let usage = stores[0]
        .usage(&[grant.clone(), parent.clone()], Utc::now())
        .await
        .unwrap();
    assert_eq!(usage[0].spent, Micros(by_child), "grant counter");
    assert_eq!(
        usage[1].spent,
        Micros(by_child + by_parent),
        "every child charge rolls up"
    );
    assert!(by_child <= GRANT);
    assert!(by_child + by_parent <= LIMIT);
    assert!(
        by_child + by_parent > LIMIT - MAX_COST,
        "parent budget not used up"
    );
}

async fn three_gateways(redis: &TestRedis) -> Vec<Arc<dyn BudgetStore>> {
    let mut stores: Vec<Arc<dyn BudgetStore>> = Vec::new();
    for _ in 0..3 {
        stores.push(Arc::new(redis.store().await));
    }
    stores
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_never_overspends_one_budget() {
    let redis = TestRedis::new();
    one_budget(three_gateways(&redis).await, "race").await;
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_never_overspends_child_or_parent() {
    let redis = TestRedis::new();
    child_and_parent(three_gateways(&redis).await, "tree").await;
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_never_overspends() {
    let store: Arc<dyn BudgetStore> = Arc::new(MemoryBudgetStore::new());
    one_budget(vec![store.clone()], "race").await;
    child_and_parent(vec![store], "tree").await;
}

/// A gateway process dies with reservations in flight: its runtime and
/// connection are torn down mid-request. Its holds block the budget until
/// they expire, and not one micro-dollar longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_client_leaves_nothing_held_past_expiry() {
    let redis = TestRedis::new();
    let start = Utc::now();
    let budget = line("dying", "daily", LIMIT, day_of(start));
    let lines = vec![budget.clone()];
    let ttl = Duration::from_secs(2);

    let doomed_lines = lines.clone();
    let prefix = redis.prefix.clone();
    let landed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let landed_in_doomed = landed.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = Arc::new(
                caracal_policy::RedisBudgetStore::connect(&crate::support::redis_url(), &prefix)
                    .await
                    .unwrap(),
            );
            let tasks: Vec<_> = (0..400)
                .map(|i| {
                    let store = store.clone();
                    let lines = doomed_lines.clone();
                    let landed = landed_in_doomed.clone();
                    tokio::spawn(async move {
                        let outcome = store
                            .reserve(ReserveRequest {
                                id: &format!("doomed{i}"),
                                lines: &lines,
                                amount: ReserveAmount {
                                    min: Micros(20_000),
                                    max: Micros(20_000),
                                },
                                now: start,
                                ttl,
                            })
                            .await;
                        if matches!(outcome, Ok(ReserveOutcome::Reserved(_))) {
                            landed.fetch_add(1, Ordering::SeqCst);
                        }
                    })
                })
                .collect();
            // Let some of them land, then die mid-flight without settling.
            for _ in 0..10_000 {
                if landed_in_doomed.load(Ordering::SeqCst) >= 20 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            drop(tasks);
        });
        rt.shutdown_background();
    })
    .join()
    .unwrap();

    let survivor = redis.store().await;
    let before = survivor.usage(&lines, start).await.unwrap()[0];
    assert_eq!(before.spent, Micros(0));
    let landed = landed.load(Ordering::SeqCst) as i64;
    assert!(
        landed >= 20,
        "only {landed} reservations landed before the kill"
    );
    // Reservations that landed after the count was read still hold too.
    assert!(
        before.held.get() >= landed * 20_000,
        "{before:?} for {landed} landed"
    );
    assert!(before.held.get() <= LIMIT);

    let just_before_expiry = start + chrono::Duration::milliseconds(1999);
    assert_eq!(
        survivor.usage(&lines, just_before_expiry).await.unwrap()[0].held,
        before.held
    );

    let at_expiry = start + chrono::Duration::from_std(ttl).unwrap();
    assert_eq!(
        survivor.usage(&lines, at_expiry).await.unwrap()[0].held,
        Micros(0)
    );
    let whole = survivor
        .reserve(ReserveRequest {
            id: "survivor",
            lines: &lines,
            amount: ReserveAmount {
                min: Micros(LIMIT),
                max: Micros(LIMIT),
            },
            now: at_expiry,
            ttl,
        })
        .await
        .unwrap();
    assert!(matches!(whole, ReserveOutcome::Reserved(_)), "{whole:?}");
    redis.cleanup().await;
}
