use std::sync::Arc;

use caracal_api::Micros;
use caracal_gateway::config::{Limits, ProviderKind};
use caracal_ledger::event::Outcome;
use caracal_policy::fixtures::{SnapshotBuilder, daily, policy_rule, with_budget};
use serde_json::json;

use crate::harness::*;

pub fn budgeted_snapshot(limit: i64) -> caracal_api::snapshot::ConfigSnapshot {
    SnapshotBuilder::new()
        .agent(
            "team/bot",
            &[],
            vec![with_budget(
                policy_rule("team/daily", "team/bot"),
                limit,
                daily("UTC"),
                "team/bot",
            )],
        )
        .build()
}

pub async fn openai_gateway(upstream: &FakeUpstream, limit: i64) -> TestGateway {
    openai_gateway_at(&upstream.url, limit, Limits::default()).await
}

/// An OpenAI provider at `base_url`, for `team/bot` with a daily budget of
/// `limit` micro-dollars, under `limits`.
pub async fn openai_gateway_at(base_url: &str, limit: i64, limits: Limits) -> TestGateway {
    start(Setup {
        providers: vec![provider("openai", ProviderKind::Openai, Some(base_url))],
        snapshot: Some(budgeted_snapshot(limit)),
        agent: "team/bot".into(),
        limits,
    })
    .await
}

fn chat_usage(prompt: u64, completion: u64) -> Handler {
    Arc::new(move |_seen: &Seen| {
        json_response(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-test",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        }))
    })
}

#[tokio::test]
async fn json_completion_is_metered_to_the_micro_dollar() {
    let upstream = FakeUpstream::start(chat_usage(11, 7)).await;
    let gw = openai_gateway(&upstream, 10_000_000).await;
    let body = json!({"model": "gpt-test", "messages": [{"role": "user", "content": "hello"}]})
        .to_string();
    let answer = post(
        &format!("{}/openai/v1/chat/completions", gw.url),
        &[
            ("authorization", &gw.bearer()),
            ("content-type", "application/json"),
        ],
        body.clone(),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["choices"][0]["message"]["content"], "hi");
    // 11 x $2.50/M + 7 x $10/M = 97.5 micro-dollars, rounded up.
    assert_eq!(answer.headers["x-caracal-cost-micros"], "98");
    let request_id = answer.headers["x-request-id"].to_str().unwrap().to_owned();

    let seen = upstream.last();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.headers["authorization"], "Bearer sk-provider-openai");
    assert!(!seen.headers.contains_key("x-api-key"));
    let sent: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    // No max_tokens in the request: the gateway set one the budget can pay for,
    // capped by the model's own ceiling.
    assert_eq!(sent["max_completion_tokens"], 16_384);

    let events = gw.events(1).await;
    let e = &events[0];
    assert_eq!(e.outcome, Outcome::Allowed);
    assert_eq!(e.cost, Micros(98));
    assert_eq!((e.tokens.input, e.tokens.output), (11, 7));
    assert_eq!(e.agent.to_string(), "team/bot");
    assert_eq!(e.policies, vec!["team/daily".to_owned()]);
    assert_eq!(e.model.as_deref(), Some("gpt-test"));
    assert_eq!(e.price_catalog_version, "test-1");
    assert_eq!(e.request_id, request_id);
    assert_eq!(e.gateway_id, "gw-test");
    // Reserved the worst case: body bytes as input tokens + the output cap.
    let worst = 2_500_000u128 * body.len() as u128 + 10_000_000u128 * 16_384;
    assert_eq!(e.reserved, Micros(worst.div_ceil(1_000_000) as i64));
}

#[tokio::test]
async fn cached_and_reasoning_tokens_are_priced_by_kind() {
    let handler: Handler = Arc::new(|_: &Seen| {
        json_response(json!({"choices": [], "usage": {
            "prompt_tokens": 1000, "completion_tokens": 500,
            "prompt_tokens_details": {"cached_tokens": 400},
            "completion_tokens_details": {"reasoning_tokens": 300}}}))
    });
    let upstream = FakeUpstream::start(handler).await;
    let gw = openai_gateway(&upstream, 10_000_000).await;
    let answer = post(
        &format!("{}/openai/v1/chat/completions", gw.url),
        &[("authorization", &gw.bearer())],
        json!({"model": "gpt-test", "max_tokens": 600}).to_string(),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    // 600 x 2.50 + 400 x 1.25 + 200 x 10 + 300 x 10 (reasoning at output) = 7000.
    assert_eq!(gw.events(1).await[0].cost, Micros(7000));
}

#[tokio::test]
async fn embeddings_and_responses_are_metered() {
    let handler: Handler = Arc::new(|seen: &Seen| {
        if seen.path == "/v1/embeddings" {
            json_response(json!({"data": [], "usage": {"prompt_tokens": 8, "total_tokens": 8}}))
        } else {
            json_response(json!({"output": [], "usage": {"input_tokens": 4, "output_tokens": 2}}))
        }
    });
    let upstream = FakeUpstream::start(handler).await;
    let gw = openai_gateway(&upstream, 10_000_000).await;
    let auth = gw.bearer();
    let a = post(
        &format!("{}/openai/v1/embeddings", gw.url),
        &[("authorization", &auth)],
        json!({"model": "gpt-test", "input": "x"}).to_string(),
    )
    .await;
    assert_eq!(a.headers["x-caracal-cost-micros"], "20");
    let b = post(
        &format!("{}/openai/v1/responses", gw.url),
        &[("authorization", &auth)],
        json!({"model": "gpt-test", "input": "x", "max_output_tokens": 50}).to_string(),
    )
    .await;
    assert_eq!(b.headers["x-caracal-cost-micros"], "30");
    let sent: serde_json::Value = serde_json::from_slice(&upstream.last().body).unwrap();
    assert_eq!(sent["max_output_tokens"], 50);
}

#[tokio::test]
async fn upstream_errors_are_relayed_and_cost_nothing() {
    let handler: Handler = Arc::new(|_: &Seen| {
        let mut r = json_response(
            json!({"error": {"message": "model overloaded", "type": "server_error"}}),
        );
        *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
        r
    });
    let upstream = FakeUpstream::start(handler).await;
    let gw = openai_gateway(&upstream, 10_000_000).await;
    let answer = post(
        &format!("{}/openai/v1/chat/completions", gw.url),
        &[("authorization", &gw.bearer())],
        json!({"model": "gpt-test"}).to_string(),
    )
    .await;
    assert_eq!(answer.status, 500);
    assert_eq!(answer.json()["error"]["message"], "model overloaded");
    let e = &gw.events(1).await[0];
    assert_eq!(
        (e.outcome, e.reason.as_str(), e.cost),
        (Outcome::UpstreamError, "upstream_status_500", Micros::ZERO)
    );
}

#[tokio::test]
async fn cleartext_http2_is_served_on_the_same_port() {
    use http_body_util::{BodyExt, Full};
    use hyper_util::{client::legacy::Client, rt::TokioExecutor};

    let upstream = FakeUpstream::start(chat_usage(1, 1)).await;
    let gw = openai_gateway(&upstream, 10_000_000).await;
    let client: Client<_, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let req = hyper::Request::post(format!("{}/openai/v1/chat/completions", gw.url))
        .header("authorization", gw.bearer())
        .body(Full::new(bytes::Bytes::from(
            json!({"model": "gpt-test"}).to_string(),
        )))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("chatcmpl-1"));
}

/// A client that hangs up while the provider is still answering must not
/// stop the gateway metering the call: the provider bills it, so the budget
/// and the ledger must too.
#[tokio::test]
async fn a_client_that_hangs_up_is_still_charged_and_recorded() {
    let handler: Handler = Arc::new(|_: &Seen| {
        let body = json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-test",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 10}
        })
        .to_string();
        let frames = futures::stream::once(async move {
            tokio::time::sleep(std::time::Duration::from_millis(400)).await;
            Ok::<_, std::io::Error>(hyper::body::Frame::data(bytes::Bytes::from(body)))
        });
        hyper::Response::builder()
            .header("content-type", "application/json")
            .body(http_body_util::BodyExt::boxed(
                http_body_util::StreamBody::new(frames),
            ))
            .unwrap()
    });
    let upstream = FakeUpstream::start(handler).await;
    let gw = openai_gateway(&upstream, 10_000_000).await;
    let body = json!({"model": "gpt-test", "max_tokens": 10}).to_string();
    let conn = gw.send_raw_chat(&body).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    drop(conn);
    let e = &gw.events(1).await[0];
    assert_eq!(e.outcome, Outcome::Allowed, "{e:?}");
    assert!(e.cost > Micros::ZERO, "{e:?}");
}

/// A provider that took the request but never answered may still bill it:
/// the gateway must not charge zero when it gives up waiting.
#[tokio::test]
async fn a_provider_that_never_answers_is_charged_the_reservation() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (conn, _) = listener.accept().await.unwrap();
            held.push(conn); // read nothing, answer nothing
        }
    });
    let gw = start(Setup {
        providers: vec![provider("openai", ProviderKind::Openai, Some(&url))],
        snapshot: Some(budgeted_snapshot(10_000_000)),
        agent: "team/bot".into(),
        limits: Limits {
            max_call_duration: std::time::Duration::from_millis(300),
            ..Limits::default()
        },
    })
    .await;
    let answer = post(
        &format!("{}/openai/v1/chat/completions", gw.url),
        &[("authorization", &gw.bearer())],
        json!({"model": "gpt-test", "max_tokens": 10}).to_string(),
    )
    .await;
    assert_eq!(answer.status, 502, "{}", answer.text());
    let e = &gw.events(1).await[0];
    assert_eq!(e.outcome, Outcome::UpstreamError, "{e:?}");
    assert_eq!(e.cost, e.reserved, "{e:?}");
    silent.abort();
}

/// A provider that cannot be connected to never saw the request: no charge.
#[tokio::test]
async fn an_unreachable_provider_is_not_charged() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener); // nothing listens there now
    let gw = start(Setup {
        providers: vec![provider("openai", ProviderKind::Openai, Some(&url))],
        snapshot: Some(budgeted_snapshot(10_000_000)),
        agent: "team/bot".into(),
        limits: Limits::default(),
    })
    .await;
    let answer = post(
        &format!("{}/openai/v1/chat/completions", gw.url),
        &[("authorization", &gw.bearer())],
        json!({"model": "gpt-test", "max_tokens": 10}).to_string(),
    )
    .await;
    assert_eq!(answer.status, 502, "{}", answer.text());
    let e = &gw.events(1).await[0];
    assert_eq!(
        (e.outcome, e.reason.as_str(), e.cost),
        (Outcome::UpstreamError, "upstream_unreachable", Micros::ZERO)
    );
}

/// A client that declares a body and then trickles (or stops) must not hold
/// a request open forever: the body read shares the call deadline.
#[tokio::test]
async fn a_body_that_never_finishes_is_refused_at_the_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = FakeUpstream::start(chat_usage(1, 1)).await;
    let gw = start(Setup {
        providers: vec![provider(
            "openai",
            ProviderKind::Openai,
            Some(&upstream.url),
        )],
        snapshot: Some(budgeted_snapshot(10_000_000)),
        agent: "team/bot".into(),
        limits: Limits {
            max_call_duration: std::time::Duration::from_millis(300),
            ..Limits::default()
        },
    })
    .await;
    let addr = gw.url.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /openai/v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\nauthorization: {}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"model\":",
        gw.bearer()
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        conn.read_exact(&mut head),
    )
    .await
    .expect("the gateway answers a stalled body")
    .unwrap();
    assert_eq!(&head, b"HTTP/1.1 408");
    let e = &gw.events(1).await[0];
    assert_eq!(
        (e.outcome, e.reason.as_str(), e.cost),
        (Outcome::Denied, "body_read_timeout", Micros::ZERO)
    );
}
