//! `/readyz` probes the budget store: ready with a working store, not ready
//! (naming `budget_store`) when the store is missing or stops answering, and
//! ready again when it comes back.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use caracal_gateway::{
    config::{Limits, ProviderKind},
    readiness::PROBE_CACHE,
};
use caracal_policy::{Budgets, RedisBudgetStore};
use tokio::{net::TcpListener, task::JoinHandle};

use crate::{harness::*, openai::budgeted_snapshot};

/// An OpenAI provider at `base` (nothing listens there unless a test
/// starts an upstream; readiness never contacts it).
fn setup(configured: bool, base: &str) -> Setup {
    Setup {
        providers: vec![provider("openai", ProviderKind::Openai, Some(base))],
        snapshot: configured.then(|| budgeted_snapshot(1_000_000)),
        agent: "team/bot".into(),
        limits: Limits::default(),
    }
}

async fn readyz(gw: &TestGateway) -> (u16, serde_json::Value) {
    let answer = get(&format!("{}/readyz", gw.url)).await;
    (answer.status, answer.json())
}

/// Poll `/readyz` until it answers `status` (the probe is cached for a
/// second, so a change shows within about that).
async fn wait_for(gw: &TestGateway, status: u16) -> serde_json::Value {
    let deadline = Instant::now() + PROBE_CACHE * 5;
    loop {
        let (now, body) = readyz(gw).await;
        if now == status {
            return body;
        }
        assert!(Instant::now() < deadline, "/readyz stayed {now}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn ready_with_a_config_and_a_memory_store() {
    let gw = start(setup(true, "http://127.0.0.1:9")).await;
    let (status, body) = readyz(&gw).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, serde_json::json!({"ready": true, "missing": []}));
}

#[tokio::test]
async fn no_store_and_no_config_are_both_named() {
    let gw = start_with_budgets(setup(false, "http://127.0.0.1:9"), Budgets::unavailable()).await;
    let (status, body) = readyz(&gw).await;
    assert_eq!(status, 503);
    assert_eq!(
        body,
        serde_json::json!({"ready": false, "missing": ["config", "budget_store"]})
    );
}

/// Relays every connection on `listener` to `target`, until aborted (which
/// closes the listener and every relayed connection with it).
fn relay(listener: TcpListener, target: String) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((mut client, _)) = listener.accept().await {
            let target = target.clone();
            conns.spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    })
}

fn redis_addr() -> String {
    let url =
        std::env::var("CARACAL_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let rest = url.trim_start_matches("redis://");
    let host_port = rest.split('/').next().unwrap_or(rest);
    host_port.rsplit('@').next().unwrap_or(host_port).to_owned()
}

#[tokio::test]
async fn a_redis_that_goes_away_is_named_and_its_return_noticed() {
    // The real Redis, reached through a relay we can cut: the shared server
    // is never stopped. The probe only PINGs, so no key is written.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut relayed = relay(listener, redis_addr());
    let prefix = format!("caracal_test_{}", uuid::Uuid::now_v7().simple());
    let store = RedisBudgetStore::connect(&format!("redis://{addr}"), &prefix)
        .await
        .unwrap();
    let upstream = FakeUpstream::start(Arc::new(|_: &Seen| {
        json_response(serde_json::json!({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}))
    }))
    .await;
    let gw = start_with_budgets(setup(true, &upstream.url), Budgets::new(Arc::new(store))).await;
    assert_eq!(readyz(&gw).await.0, 200);

    // Cut: the port is closed, so the store's reconnects are refused.
    relayed.abort();
    let _ = (&mut relayed).await;
    let body = wait_for(&gw, 503).await;
    assert_eq!(
        body,
        serde_json::json!({"ready": false, "missing": ["budget_store"]})
    );
    // A request is denied for the same reason, fast.
    let started = Instant::now();
    let answer = post(
        &format!("{}/openai/v1/chat/completions", gw.url),
        &[("authorization", &gw.bearer())],
        r#"{"model":"gpt-test","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(
        (answer.status, answer.json()["error"]["code"].as_str()),
        (503, Some("budget_store_unavailable")),
        "{}",
        answer.text()
    );

    // Back on the same port: ready again.
    let listener = TcpListener::bind(addr).await.unwrap();
    let relayed = relay(listener, redis_addr());
    let body = wait_for(&gw, 200).await;
    assert_eq!(body, serde_json::json!({"ready": true, "missing": []}));
    relayed.abort();
}
