//! Policy benchmarks (a program, not a test):
//!
//! 1. In-process decision latency for an agent with 10 policies at the end
//!    of a 3-deep delegation chain, against a baseline of the simplest
//!    possible decision (one policy, no budget) in the same run.
//! 2. Redis reserve+settle throughput on one hot budget from several
//!    connections, against a plain pipelined `INCRBY` on the same server in
//!    the same run.
//!
//! Run: `cargo run --release -p caracal-policy --example bench_policy`
//! (Redis from `CARACAL_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use caracal_api::Micros;
use caracal_api::snapshot::{ConfigSnapshot, Period, WindowSpec};
use caracal_policy::fixtures::{SnapshotBuilder, daily, delegation_rule, policy_rule, with_budget};
use caracal_policy::{
    BudgetStore, Call, Decision, RedisBudgetStore, Request, ReserveAmount, ReserveOutcome,
    ReserveRequest, evaluate,
};
use chrono::Utc;

const ZONES: [&str; 5] = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "Australia/Sydney",
];

/// `bench/leaf` is delegated to by `bench/mid`, itself delegated to by
/// `bench/root`: 10 policies on the leaf, 2 grants, 2 policies on each
/// ancestor, all with budgets, caps and glob allowlists.
fn deep_snapshot() -> ConfigSnapshot {
    let tree = "bench/root";
    let mut rules = Vec::new();
    for i in 0..10 {
        let window = match i % 3 {
            0 => daily(ZONES[i % ZONES.len()]),
            1 => WindowSpec::Calendar {
                period: if i % 2 == 0 {
                    Period::Weekly
                } else {
                    Period::Monthly
                },
                time_zone: ZONES[i % ZONES.len()].into(),
            },
            _ => WindowSpec::Rolling { seconds: 3600 },
        };
        let mut rule = with_budget(
            policy_rule(&format!("bench/p{i}"), "bench/leaf"),
            100_000_000,
            window,
            tree,
        );
        rule.allow.models = Some(vec!["claude-*".into(), "gpt-*".into(), "o3*".into()]);
        rule.allow.providers = Some(vec!["openai".into(), "anthropic".into()]);
        rule.max_request_cost = Some(Micros(5_000_000));
        rules.push(rule);
    }
    for (d, parent, child) in [
        ("bench/mid-leaf", "bench/mid", "bench/leaf"),
        ("bench/root-mid", "bench/root", "bench/mid"),
    ] {
        let mut grant = with_budget(
            delegation_rule(d, parent, child),
            50_000_000,
            daily("Europe/Berlin"),
            tree,
        );
        grant.allow.models = Some(vec!["gpt-*".into()]);
        grant.expires_at = Some(Utc::now() + chrono::Duration::days(30));
        rules.push(grant);
    }
    for agent in ["bench/mid", "bench/root"] {
        for i in 0..2 {
            let policy = format!("{agent}-p{i}");
            rules.push(with_budget(
                policy_rule(&policy, agent),
                1_000_000_000,
                daily("UTC"),
                tree,
            ));
        }
    }
    SnapshotBuilder::new()
        .agent("bench/leaf", &["bench/mid", "bench/root"], rules)
        .agent(
            "bench/flat",
            &[],
            vec![policy_rule("bench/allow-all", "bench/flat")],
        )
        .build()
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Nanosecond latencies of `n` decisions for `agent`, sorted.
fn time_decisions(snapshot: &ConfigSnapshot, agent: &str, n: usize) -> Vec<u64> {
    let now = Utc::now();
    let request = Request {
        agent,
        provider: "openai",
        call: Call::Model {
            model: "gpt-test",
            input_tokens: 1200,
            max_tokens: None,
        },
    };
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let d = evaluate(black_box(snapshot), black_box(&request), now);
        let elapsed = t.elapsed().as_nanos() as u64;
        assert!(matches!(d, Decision::Allow(_)), "{d:?}");
        black_box(d);
        out.push(elapsed);
    }
    out.sort_unstable();
    out
}

fn bench_decisions() {
    let snapshot = deep_snapshot();
    let lines = match evaluate(
        &snapshot,
        &Request {
            agent: "bench/leaf",
            provider: "openai",
            call: Call::Model {
                model: "gpt-test",
                input_tokens: 1200,
                max_tokens: None,
            },
        },
        Utc::now(),
    ) {
        Decision::Allow(a) => a.lines.len(),
        Decision::Deny(d) => panic!("{d:?}"),
    };
    time_decisions(&snapshot, "bench/leaf", 20_000); // warm-up
    let n = 200_000;
    let base = time_decisions(&snapshot, "bench/flat", n);
    let deep = time_decisions(&snapshot, "bench/leaf", n);
    let (b50, b99) = (percentile(&base, 0.5), percentile(&base, 0.99));
    let (d50, d99, d999) = (
        percentile(&deep, 0.5),
        percentile(&deep, 0.99),
        percentile(&deep, 0.999),
    );
    println!("decision: {n} evaluations each");
    println!("  baseline (1 policy, no budget):        p50 {b50} ns  p99 {b99} ns");
    println!(
        "  10 policies + 3-deep chain ({lines} budget lines): p50 {d50} ns  p99 {d99} ns  p99.9 {d999} ns"
    );
    println!(
        "  p99 ratio to baseline: {:.1}x; target p99 <= 5000 ns: {}",
        d99 as f64 / b99.max(1) as f64,
        if d99 <= 5000 { "met" } else { "NOT met" }
    );
}

async fn bench_redis() -> Result<(), Box<dyn std::error::Error>> {
    let url =
        std::env::var("CARACAL_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("caracal_bench_{}", std::process::id());
    let client = redis::Client::open(url.as_str())?;
    let mut raw = client.get_multiplexed_async_connection().await?;

    // Baseline: pipelined INCRBY, 100 per round trip, 4 connections.
    let total: usize = 200_000;
    let batch = 100;
    // Connections stand for gateways; override with BENCH_CONNECTIONS.
    let conns: usize = std::env::var("BENCH_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..conns {
        let mut conn = client.get_multiplexed_async_connection().await?;
        let key = format!("{prefix}:incr");
        tasks.push(tokio::spawn(async move {
            for _ in 0..(total / conns / batch) {
                let mut pipe = redis::pipe();
                for _ in 0..batch {
                    pipe.cmd("INCRBY").arg(&key).arg(1000 + c).ignore();
                }
                let () = pipe.query_async(&mut conn).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let incr_rate = total as f64 / start.elapsed().as_secs_f64();

    // Reserve + settle on one hot $1M budget: 4 gateways (connections), 32
    // requests in flight each.
    let line = caracal_policy::BudgetLine {
        key: "{bench}:p:hot:r0".into(),
        limit: Micros(1_000_000_000_000),
        window: caracal_policy::window_at(&daily("UTC"), Utc::now())?,
    };
    let pairs: usize = 60_000;
    let in_flight: usize = std::env::var("BENCH_IN_FLIGHT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let lines = Arc::new(vec![line]);
    let mut stores = Vec::new();
    for _ in 0..conns {
        stores.push(Arc::new(RedisBudgetStore::connect(&url, &prefix).await?));
    }
    let before = evalsha_stats(&mut raw).await?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..(conns * in_flight) {
        let store = stores[w % conns].clone();
        let lines = lines.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..(pairs / (conns * in_flight)) {
                let id = format!("b{w}x{i}");
                let now = Utc::now();
                let outcome = store
                    .reserve(ReserveRequest {
                        id: &id,
                        lines: &lines,
                        amount: ReserveAmount {
                            min: Micros(1_000),
                            max: Micros(1_000),
                        },
                        now,
                        ttl: Duration::from_secs(60),
                    })
                    .await
                    .unwrap();
                let ReserveOutcome::Reserved(r) = outcome else {
                    panic!("{outcome:?}")
                };
                store.settle(&r, Micros(700), now).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let done = (pairs / (conns * in_flight)) * conns * in_flight;
    let pair_rate = done as f64 / start.elapsed().as_secs_f64();
    let after = evalsha_stats(&mut raw).await?;
    let server_us_per_pair = (after.1 - before.1) as f64 / done as f64;
    let usage = stores[0].usage(&lines, Utc::now()).await?;
    assert_eq!(
        usage[0].spent,
        Micros(700 * done as i64),
        "every settle counted once"
    );
    assert_eq!(usage[0].held, Micros(0));

    println!("redis (loopback), {conns} connections:");
    println!("  baseline INCRBY, pipelined by {batch}: {incr_rate:.0} commands/s");
    println!(
        "  reserve+settle pairs ({} in flight): {pair_rate:.0} pairs/s",
        conns * in_flight
    );
    println!(
        "  Redis server time per pair (both scripts): {server_us_per_pair:.1} us ({} script calls)",
        after.0 - before.0
    );
    println!(
        "  ratio to INCRBY: {:.3}; target >= 20000 pairs/s: {}",
        pair_rate / incr_rate,
        if pair_rate >= 20_000.0 {
            "met"
        } else {
            "NOT met"
        }
    );

    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut raw)
        .await?;
    for chunk in keys.chunks(1000) {
        let _: i64 = redis::cmd("DEL").arg(chunk).query_async(&mut raw).await?;
    }
    Ok(())
}

/// `(calls, microseconds)` the server has spent in EVALSHA so far.
async fn evalsha_stats(
    conn: &mut redis::aio::MultiplexedConnection,
) -> Result<(u64, u64), Box<dyn std::error::Error>> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await?;
    let line = info
        .lines()
        .find(|l| l.starts_with("cmdstat_evalsha:"))
        .unwrap_or("cmdstat_evalsha:calls=0,usec=0");
    let field = |name: &str| {
        line.split([':', ','])
            .find_map(|kv| kv.strip_prefix(name))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((field("calls="), field("usec=")))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    bench_decisions();
    bench_redis().await
}
