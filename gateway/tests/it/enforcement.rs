use std::{sync::Arc, time::Duration};

use caracal_api::Micros;
use caracal_gateway::config::{Limits, ProviderKind};
use caracal_ledger::event::Outcome;
use caracal_policy::{ModelRates, fixtures::test_catalog};
use serde_json::json;

use crate::{
    harness::*,
    openai::{budgeted_snapshot, openai_gateway, openai_gateway_at},
};

fn fixed_usage(prompt: u64, completion: u64) -> Handler {
    Arc::new(move |_: &Seen| {
        json_response(
            json!({"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion}}),
        )
    })
}

fn chat(gw: &TestGateway) -> String {
    format!("{}/openai/v1/chat/completions", gw.url)
}

#[tokio::test]
async fn a_spent_budget_denies_with_429_and_retry_after() {
    let upstream = FakeUpstream::start(fixed_usage(40, 60)).await;
    // $0.001 = 1000 micro-dollars a day.
    let gw = openai_gateway(&upstream, 1000).await;
    let body = json!({"model": "gpt-test", "max_tokens": 10, "messages": [{"role": "user", "content": "x".repeat(60)}]}).to_string();
    assert!(
        body.len() * 5 / 2 + 100 > 300,
        "the second call's worst case must exceed what is left"
    );
    let first = post(&chat(&gw), &[("authorization", &gw.bearer())], body.clone()).await;
    // 40 x 2.50 + 60 x 10 = 700.
    assert_eq!(
        (
            first.status,
            first.headers["x-caracal-cost-micros"].to_str().unwrap()
        ),
        (200, "700")
    );
    // The next call's worst case (body bytes x 2.50 + 10 x 10) is over the 300 left.
    let second = post(&chat(&gw), &[("authorization", &gw.bearer())], body).await;
    assert_eq!(second.status, 429, "{}", second.text());
    let retry: u64 = second.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=86_400).contains(&retry), "{retry}");
    assert_eq!(second.headers["x-should-retry"], "false");
    let err = second.json();
    assert_eq!(err["error"]["type"], "rate_limit_error");
    assert_eq!(err["error"]["code"], "budget_exhausted");
    assert_eq!(
        upstream.seen.lock().unwrap().len(),
        1,
        "the denied call never left"
    );
    let events = gw.events(2).await;
    assert_eq!(
        (events[1].outcome, events[1].reason.as_str()),
        (Outcome::Denied, "budget_exhausted")
    );
}

#[tokio::test]
async fn the_output_cap_is_what_the_budget_can_pay() {
    let upstream = FakeUpstream::start(fixed_usage(1, 1)).await;
    let gw = openai_gateway(&upstream, 5000).await;
    let body =
        json!({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let answer = post(&chat(&gw), &[("authorization", &gw.bearer())], body.clone()).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let rates = ModelRates::from_price(test_catalog().model("openai", "gpt-test").unwrap());
    let want = rates
        .max_output_within(body.len() as u64, Micros(5000))
        .unwrap();
    assert!(want > 0 && want < 16_384);
    let sent: serde_json::Value = serde_json::from_slice(&upstream.last().body).unwrap();
    assert_eq!(sent["max_completion_tokens"], want);
}

#[tokio::test]
async fn a_requested_limit_above_the_budget_is_clamped_to_it() {
    let upstream = FakeUpstream::start(fixed_usage(1, 1)).await;
    let gw = openai_gateway(&upstream, 5000).await;
    let body = json!({"model": "gpt-test", "max_tokens": 100_000}).to_string();
    let answer = post(&chat(&gw), &[("authorization", &gw.bearer())], body.clone()).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let rates = ModelRates::from_price(test_catalog().model("openai", "gpt-test").unwrap());
    let want = rates
        .max_output_within(body.len() as u64, Micros(5000))
        .unwrap();
    assert!(want > 0 && want < 100_000);
    let sent: serde_json::Value = serde_json::from_slice(&upstream.last().body).unwrap();
    assert_eq!(
        sent["max_tokens"], want,
        "the client's own field is clamped in place"
    );
    assert!(sent.get("max_completion_tokens").is_none(), "{sent}");
}

#[tokio::test]
async fn a_prompt_the_budget_cannot_pay_for_is_denied() {
    let upstream = FakeUpstream::start(fixed_usage(1, 1)).await;
    // 100 micro-dollars cannot pay for even this small prompt's worst case
    // plus one output token.
    let gw = openai_gateway(&upstream, 100).await;
    let body = json!({"model": "gpt-test", "max_tokens": 10, "messages": [{"role": "user", "content": "x".repeat(200)}]});
    let answer = post(
        &chat(&gw),
        &[("authorization", &gw.bearer())],
        body.to_string(),
    )
    .await;
    assert_eq!(answer.status, 429, "{}", answer.text());
    assert!(upstream.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn credentials_are_required_and_checked() {
    let upstream = FakeUpstream::start(fixed_usage(1, 1)).await;
    let gw = openai_gateway(&upstream, 1_000_000).await;
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![], "missing_credentials"),
        (vec![("authorization", "Bearer ck_0000")], "invalid_api_key"),
        (
            vec![("authorization", "Basic dXNlcjpwYXNz")],
            "missing_credentials",
        ),
    ];
    for (headers, reason) in cases {
        let answer = post(
            &chat(&gw),
            &headers,
            json!({"model": "gpt-test"}).to_string(),
        )
        .await;
        assert_eq!(answer.status, 401);
        assert_eq!(answer.json()["error"]["code"], reason);
    }
    // The same key works as x-api-key too.
    let ok = post(
        &chat(&gw),
        &[("x-api-key", &gw.key)],
        json!({"model": "gpt-test"}).to_string(),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert!(
        !upstream
            .last()
            .headers
            .get("x-api-key")
            .is_some_and(|v| v.to_str().unwrap().starts_with("ck_"))
    );
}

#[tokio::test]
async fn malformed_oversized_unknown_and_unpriced_requests_are_refused() {
    let upstream = FakeUpstream::start(fixed_usage(1, 1)).await;
    let limits = Limits {
        max_request_bytes: 1024,
        ..Limits::default()
    };
    let gw = openai_gateway_at(&upstream.url, 1_000_000, limits).await;
    let auth = gw.bearer();
    let big =
        json!({"model": "gpt-test", "messages": [{"role": "user", "content": "x".repeat(2000)}]})
            .to_string();
    let cases: Vec<(String, String, u16, &str)> = vec![
        (chat(&gw), "{not json".into(), 400, "invalid_json"),
        (
            chat(&gw),
            json!({"messages": []}).to_string(),
            400,
            "invalid_request",
        ),
        (chat(&gw), big, 413, "body_too_large"),
        // A name longer than any real one is refused, not kept in the ledger.
        (
            chat(&gw),
            json!({"model": "m".repeat(300)}).to_string(),
            400,
            "invalid_request",
        ),
        (
            chat(&gw),
            json!({"model": "gpt-unknown"}).to_string(),
            400,
            "unpriced_model",
        ),
        (
            format!("{}/openai/v1/files", gw.url),
            "{}".into(),
            404,
            "unsupported_endpoint",
        ),
        (
            format!("{}/nope/v1/chat/completions", gw.url),
            "{}".into(),
            404,
            "unknown_provider",
        ),
    ];
    for (url, body, status, reason) in cases {
        let answer = post(&url, &[("authorization", &auth)], body).await;
        assert_eq!(answer.refusal(), (status, reason.to_owned()), "{url}");
    }
    assert!(upstream.seen.lock().unwrap().is_empty());
    // Refusals after authentication are in the ledger as denials.
    let events = gw.events(5).await;
    assert!(events.iter().all(|e| e.outcome == Outcome::Denied));
    assert!(
        events
            .iter()
            .all(|e| e.model.as_ref().is_none_or(|m| m.len() <= 256)),
        "{events:?}"
    );
}

#[tokio::test]
async fn no_config_denies_everything_until_one_arrives() {
    let upstream = FakeUpstream::start(fixed_usage(1, 1)).await;
    let gw = start(Setup {
        providers: vec![provider(
            "openai",
            ProviderKind::Openai,
            Some(&upstream.url),
        )],
        snapshot: None,
        agent: "team/bot".into(),
        limits: Limits::default(),
    })
    .await;
    let started = std::time::Instant::now();
    let answer = post(
        &chat(&gw),
        &[("authorization", &gw.bearer())],
        json!({"model": "gpt-test"}).to_string(),
    )
    .await;
    assert!(started.elapsed() < Duration::from_millis(100));
    assert_eq!(answer.refusal(), (503, "no_config".to_owned()));
    assert_eq!(get(&format!("{}/readyz", gw.url)).await.status, 503);
    // With no agents to name, the refusal has no ledger event, but it is
    // counted.
    assert_eq!(
        metric_lines(&gw, "caracal_gateway_requests_total").await,
        vec![(r#"{provider="openai",outcome="denied"}"#.to_owned(), 1)]
    );
    assert_eq!(
        metric_lines(&gw, "caracal_gateway_decisions_total").await,
        vec![(r#"{reason="no_config"}"#.to_owned(), 1)]
    );

    // A snapshot arrives: the same call goes through.
    gw.live.send_modify(|live| {
        let mut next = (**live).clone();
        next.snapshot = Some(Arc::new(budgeted_snapshot(1_000_000)));
        *live = Arc::new(next);
    });
    let answer = post(
        &chat(&gw),
        &[("authorization", &gw.bearer())],
        json!({"model": "gpt-test"}).to_string(),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(get(&format!("{}/readyz", gw.url)).await.status, 200);
}

/// A provider address that swallows connection attempts (here: a listener
/// whose accept queue is full, so the kernel drops further SYNs) is given
/// up on after the connect timeout, not after the kernel's SYN retries.
#[tokio::test]
async fn an_upstream_that_never_accepts_is_given_up_on_after_the_connect_timeout() {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    // Fill the accept queue (never accepted); later connects then hang.
    let mut held = Vec::new();
    loop {
        match tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(conn) => held.push(conn.unwrap()),
            Err(_) => break,
        }
        assert!(held.len() < 64, "the listener's queue never filled");
    }
    let limits = Limits {
        upstream_connect_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let gw = openai_gateway_at(&format!("http://{addr}"), 1000, limits).await;
    let started = std::time::Instant::now();
    let answer = post(
        &chat(&gw),
        &[("authorization", &gw.bearer())],
        json!({"model": "gpt-test", "max_tokens": 10}).to_string(),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(answer.refusal(), (502, "upstream_unreachable".to_owned()));
    // Nothing was sent: nothing is charged.
    let events = gw.events(1).await;
    assert_eq!(
        (events[0].outcome, events[0].cost),
        (Outcome::UpstreamError, Micros::ZERO)
    );
    drop((held, listener));
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502_that_costs_nothing() {
    // Bind and drop to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gw = openai_gateway_at(&format!("http://127.0.0.1:{port}"), 1000, Limits::default()).await;
    let body = json!({"model": "gpt-test", "max_tokens": 10}).to_string();
    for _ in 0..3 {
        // Were holds leaked, the third call could not reserve on a $0.001 budget.
        let answer = post(&chat(&gw), &[("authorization", &gw.bearer())], body.clone()).await;
        assert_eq!(answer.refusal(), (502, "upstream_unreachable".to_owned()));
    }
    let events = gw.events(3).await;
    assert!(
        events
            .iter()
            .all(|e| e.outcome == Outcome::UpstreamError && e.cost == Micros::ZERO)
    );
}

#[tokio::test]
async fn metrics_and_health_endpoints() {
    let upstream = FakeUpstream::start(fixed_usage(3, 4)).await;
    let gw = openai_gateway(&upstream, 1_000_000).await;
    post(
        &chat(&gw),
        &[("authorization", &gw.bearer())],
        json!({"model": "gpt-test"}).to_string(),
    )
    .await;
    assert_eq!(get(&format!("{}/healthz", gw.url)).await.status, 200);
    assert_eq!(get(&format!("{}/readyz", gw.url)).await.status, 200);
    assert_metrics_contain(
        &gw,
        &[
            "caracal_gateway_requests_total{provider=\"openai\",outcome=\"allowed\"} 1",
            "caracal_gateway_tokens_total{provider=\"openai\",kind=\"output\"} 4",
            "caracal_gateway_spend_micros_total{provider=\"openai\"} 48",
            "caracal_gateway_spool_pending_records",
        ],
    )
    .await;
}

/// The metric lines of `gw` that start with `prefix`, as (labels, value).
async fn metric_lines(gw: &TestGateway, prefix: &str) -> Vec<(String, u64)> {
    let text = get(&format!("{}/metrics", gw.url)).await.text();
    let mut lines: Vec<(String, u64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter_map(|l| {
            let (labels, value) = l.rsplit_once(' ')?;
            Some((labels.to_owned(), value.parse().ok()?))
        })
        .collect();
    lines.sort();
    lines
}

#[tokio::test]
async fn refusals_without_a_ledger_event_are_counted_once() {
    let upstream = FakeUpstream::start(fixed_usage(3, 4)).await;
    let gw = openai_gateway(&upstream, 1_000_000).await;
    let body = json!({"model": "gpt-test", "max_tokens": 10}).to_string();
    let key = gw.bearer();
    let wrong_key = "Bearer ck_not_a_key";
    let elsewhere = format!("{}/elsewhere/v1/chat/completions", gw.url);
    let files = format!("{}/openai/v1/files", gw.url);
    let calls = [
        // No agent is known for these three: no ledger event.
        (chat(&gw), None, body.as_str(), 401),
        (chat(&gw), Some(wrong_key), body.as_str(), 401),
        (elsewhere, None, body.as_str(), 404),
        // Known agent, endpoint not metered: refused before any record.
        (files, Some(key.as_str()), body.as_str(), 404),
        // A recorded denial: counted by its event, not a second time.
        (chat(&gw), Some(key.as_str()), "{not json", 400),
    ];
    for (i, (url, auth, body, status)) in calls.into_iter().enumerate() {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        let answer = post(&url, &headers, body.to_owned()).await;
        assert_eq!(answer.status, status, "call {i}");
    }
    assert_eq!(upstream.seen.lock().unwrap().len(), 0);
    assert_eq!(
        metric_lines(&gw, "caracal_gateway_requests_total").await,
        vec![(r#"{provider="openai",outcome="denied"}"#.to_owned(), 4)]
    );
    let reasons = |pairs: &[(&str, u64)]| -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = pairs
            .iter()
            .map(|(r, n)| (format!("{{reason=\"{r}\"}}"), *n))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        metric_lines(&gw, "caracal_gateway_decisions_total").await,
        reasons(&[
            ("missing_credentials", 1),
            ("invalid_api_key", 1),
            ("unknown_provider", 1),
            ("unsupported_endpoint", 1),
            ("invalid_json", 1),
        ])
    );
    // Only the refusal after authentication is in the ledger.
    let events = gw.events(1).await;
    assert_eq!(events[0].reason, "invalid_json");
}

#[tokio::test]
async fn service_account_tokens_identify_agents() {
    use caracal_gateway::jwt::{JwtConfig, service_account_subject, sign_es256};

    let upstream = FakeUpstream::start(fixed_usage(2, 3)).await;
    let signer = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
    let config = JwtConfig {
        issuer: "https://kubernetes.default.svc".into(),
        audiences: vec!["caracal".into()],
        keys: vec![(*signer.verifying_key()).into()],
        leeway_seconds: 30,
    };
    let subject = service_account_subject("team", "bot-sa");
    let gw = start_with_jwt(
        Setup {
            providers: vec![provider(
                "openai",
                ProviderKind::Openai,
                Some(&upstream.url),
            )],
            snapshot: Some(budgeted_snapshot(1_000_000)),
            agent: "team/bot".into(),
            limits: Limits::default(),
        },
        Some(config),
        vec![(subject.clone(), "team/bot".into())],
    )
    .await;
    let now = chrono::Utc::now().timestamp();
    let token = |sub: &str, aud: &str, exp: i64| {
        sign_es256(
            &signer,
            &json!({"iss": "https://kubernetes.default.svc", "aud": [aud], "sub": sub, "exp": exp}),
        )
    };
    let body = json!({"model": "gpt-test"}).to_string();
    let good = token(&subject, "caracal", now + 600);
    let answer = post(
        &chat(&gw),
        &[("authorization", &format!("Bearer {good}"))],
        body.clone(),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_ne!(
        upstream.last().headers["authorization"],
        format!("Bearer {good}").as_str(),
        "the token is not forwarded"
    );
    assert_eq!(gw.events(1).await[0].agent.to_string(), "team/bot");

    let cases = [
        (token(&subject, "kubernetes", now + 600), "invalid_token"),
        (token(&subject, "caracal", now - 600), "invalid_token"),
        (
            token("system:serviceaccount:team:stranger", "caracal", now + 600),
            "unknown_service_account",
        ),
    ];
    for (t, reason) in cases {
        let answer = post(
            &chat(&gw),
            &[("authorization", &format!("Bearer {t}"))],
            body.clone(),
        )
        .await;
        assert_eq!(answer.refusal(), (401, reason.to_owned()));
    }
    // Virtual keys keep working beside tokens.
    assert_eq!(
        post(&chat(&gw), &[("authorization", &gw.bearer())], body)
            .await
            .status,
        200
    );
}
