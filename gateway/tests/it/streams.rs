use std::sync::Arc;

use caracal_api::Micros;
use caracal_ledger::event::Outcome;
use serde_json::json;

use crate::{harness::*, openai::openai_gateway};

fn chunk(content: &str) -> String {
    format!(
        "data: {}\n\n",
        json!({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": content}}]})
    )
}

fn usage_chunk(prompt: u64, completion: u64) -> String {
    format!(
        "data: {}\n\n",
        json!({"id": "c", "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion}})
    )
}

#[tokio::test]
async fn openai_stream_passes_through_and_is_metered() {
    let chunks = vec![
        chunk("Hel"),
        chunk("lo"),
        usage_chunk(20, 2),
        "data: [DONE]\n\n".to_owned(),
    ];
    let expected: String = chunks.concat();
    let handler: Handler = Arc::new(move |_: &Seen| sse_response(chunks.clone()));
    let upstream = FakeUpstream::start(handler).await;
    let gw = openai_gateway(&upstream, 10_000_000).await;
    let answer = post(
        &format!("{}/openai/v1/chat/completions", gw.url),
        &[("authorization", &gw.bearer())],
        json!({"model": "gpt-test", "stream": true, "max_tokens": 10}).to_string(),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["content-type"], "text/event-stream");
    assert_eq!(answer.text(), expected, "bytes pass through unchanged");
    let sent: serde_json::Value = serde_json::from_slice(&upstream.last().body).unwrap();
    assert_eq!(
        sent["stream_options"]["include_usage"], true,
        "the gateway asks for the usage chunk"
    );
    let e = &gw.events(1).await[0];
    // 20 x 2.50 + 2 x 10 = 70.
    assert_eq!(
        (e.outcome, e.cost, e.tokens.output),
        (Outcome::Allowed, Micros(70), 2)
    );
}

#[tokio::test]
async fn a_stream_past_its_reservation_is_cut() {
    // The upstream ignores max_tokens and keeps going.
    let handler: Handler = Arc::new(|_: &Seen| {
        let mut chunks: Vec<String> = (0..50).map(|i| chunk(&format!("w{i} "))).collect();
        chunks.push(usage_chunk(5, 50));
        chunks.push("data: [DONE]\n\n".into());
        sse_response(chunks)
    });
    let upstream = FakeUpstream::start(handler).await;
    let gw = openai_gateway(&upstream, 10_000_000).await;
    let answer = post(
        &format!("{}/openai/v1/chat/completions", gw.url),
        &[("authorization", &gw.bearer())],
        json!({"model": "gpt-test", "stream": true, "max_tokens": 3}).to_string(),
    )
    .await;
    let text = answer.text();
    assert_eq!(text.matches("\"content\":\"w").count(), 3, "{text}");
    assert!(
        text.contains("stream_cut_off"),
        "the client is told why: {text}"
    );
    assert!(!text.contains("[DONE]"));
    let e = &gw.events(1).await[0];
    assert_eq!(e.outcome, Outcome::CutOff);
    // The provider ignored the limit: what it generated after the cut is
    // unknown, so the whole reservation is charged.
    assert_eq!(e.cost, e.reserved, "{e:?}");
    assert_eq!(
        e.tokens.output, 4,
        "the delta that crossed the limit is counted, not sent"
    );
}

#[tokio::test]
async fn invalid_upstream_sse_is_an_error_and_releases_the_hold() {
    let handler: Handler = Arc::new(|_: &Seen| {
        sse_response(vec![
            chunk("ok"),
            "data: {not json\n\n".into(),
            chunk("never"),
        ])
    });
    let upstream = FakeUpstream::start(handler).await;
    let gw = openai_gateway(&upstream, 10_000_000).await;
    let answer = post(
        &format!("{}/openai/v1/chat/completions", gw.url),
        &[("authorization", &gw.bearer())],
        json!({"model": "gpt-test", "stream": true, "max_tokens": 10}).to_string(),
    )
    .await;
    let text = answer.text();
    assert!(text.contains("invalid_upstream_sse"), "{text}");
    assert!(!text.contains("never"), "{text}");
    let e = &gw.events(1).await[0];
    assert_eq!(
        (e.outcome, e.reason.as_str()),
        (Outcome::UpstreamError, "invalid_upstream_sse")
    );
    // No usage report: the one delta seen bounds nothing the provider bills,
    // so the reservation is charged (and the hold released).
    assert!(e.cost > Micros::ZERO && e.cost == e.reserved, "{e:?}");
}

#[tokio::test]
async fn an_upstream_reset_mid_stream_aborts_the_client_stream() {
    let handler: Handler = Arc::new(|_: &Seen| {
        // One chunk, a pause (so headers and the chunk reach the gateway), then a reset.
        let frames = futures::stream::unfold(0, |step| async move {
            match step {
                0 => Some((
                    Ok(hyper::body::Frame::data(bytes::Bytes::from(chunk("part")))),
                    1,
                )),
                1 => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    Some((Err(std::io::Error::other("connection reset")), 2))
                }
                _ => None,
            }
        });
        let body = http_body_util::StreamBody::new(frames);
        hyper::Response::builder()
            .header("content-type", "text/event-stream")
            .body(http_body_util::BodyExt::boxed(body))
            .unwrap()
    });
    let upstream = FakeUpstream::start(handler).await;
    let gw = openai_gateway(&upstream, 10_000_000).await;
    let answer = post(
        &format!("{}/openai/v1/chat/completions", gw.url),
        &[("authorization", &gw.bearer())],
        json!({"model": "gpt-test", "stream": true, "max_tokens": 10}).to_string(),
    )
    .await;
    assert!(
        answer.text().contains("<<body error"),
        "the client sees an incomplete stream: {}",
        answer.text()
    );
    let e = &gw.events(1).await[0];
    assert_eq!(
        (e.outcome, e.reason.as_str()),
        (Outcome::UpstreamError, "upstream_reset")
    );
    assert_eq!(
        e.cost, e.reserved,
        "no usage report: the reservation, {e:?}"
    );
    // The gateway is unharmed.
    assert_eq!(get(&format!("{}/healthz", gw.url)).await.status, 200);
}

/// An upstream that sends `first` with `content_type` and then stalls for
/// ever, as a provider hanging mid-answer would.
fn stalling_upstream(content_type: &'static str, first: String) -> Handler {
    Arc::new(move |_: &Seen| {
        let first = first.clone();
        let frames = futures::stream::unfold(Some(first), |next| async move {
            match next {
                Some(data) => Some((
                    Ok::<_, std::io::Error>(hyper::body::Frame::data(bytes::Bytes::from(data))),
                    None,
                )),
                None => {
                    std::future::pending::<()>().await;
                    None
                }
            }
        });
        hyper::Response::builder()
            .header("content-type", content_type)
            .body(http_body_util::BodyExt::boxed(
                http_body_util::StreamBody::new(frames),
            ))
            .unwrap()
    })
}

/// On shutdown the listener closes at once (a new client is refused, not
/// left waiting), while a stream already running is served to its end.
#[tokio::test]
async fn shutdown_refuses_new_clients_and_drains_a_running_stream() {
    let handler: Handler = Arc::new(|_: &Seen| {
        let frames = futures::stream::unfold(0, |step| async move {
            let data = match step {
                0 => chunk("first "),
                1 => {
                    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
                    chunk("second")
                }
                2 => usage_chunk(5, 2),
                3 => "data: [DONE]\n\n".to_owned(),
                _ => return None,
            };
            Some((
                Ok::<_, std::io::Error>(hyper::body::Frame::data(bytes::Bytes::from(data))),
                step + 1,
            ))
        });
        hyper::Response::builder()
            .header("content-type", "text/event-stream")
            .body(http_body_util::BodyExt::boxed(
                http_body_util::StreamBody::new(frames),
            ))
            .unwrap()
    });
    let upstream = FakeUpstream::start(handler).await;
    let mut gw = openai_gateway(&upstream, 10_000_000).await;
    let url = format!("{}/openai/v1/chat/completions", gw.url);
    let auth = gw.bearer();
    let running = tokio::spawn(async move {
        post(
            &url,
            &[("authorization", &auth)],
            json!({"model": "gpt-test", "stream": true}).to_string(),
        )
        .await
    });
    for _ in 0..100 {
        if !upstream.seen.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    gw.begin_shutdown();
    let addr = gw.url.trim_start_matches("http://").to_owned();
    let mut refused = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(&addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        refused,
        "a new client was still accepted after shutdown began"
    );
    assert!(
        !running.is_finished(),
        "refused while the stream still runs"
    );
    let answer = running.await.unwrap();
    assert_eq!(answer.status, 200);
    assert!(answer.text().contains("second"), "{}", answer.text());
    assert_eq!(gw.events(1).await[0].outcome, Outcome::Allowed);
}

/// A budgeted OpenAI gateway in front of `upstream` whose calls end after
/// 300 ms.
async fn gateway_with_short_deadline(upstream: &FakeUpstream) -> TestGateway {
    start(Setup {
        providers: vec![provider(
            "openai",
            caracal_gateway::config::ProviderKind::Openai,
            Some(&upstream.url),
        )],
        snapshot: Some(crate::openai::budgeted_snapshot(10_000_000)),
        agent: "team/bot".into(),
        limits: caracal_gateway::config::Limits {
            max_call_duration: std::time::Duration::from_millis(300),
            ..Default::default()
        },
    })
    .await
}

/// A provider that stalls mid-stream must not keep the call open past the
/// budget hold's lifetime (the hold would expire and the budget could be
/// spent twice): the gateway ends the call at its deadline, charges what it
/// saw and records it.
#[tokio::test]
async fn a_stalled_stream_is_ended_at_the_call_deadline() {
    let upstream = FakeUpstream::start(stalling_upstream("text/event-stream", chunk("part"))).await;
    let gw = gateway_with_short_deadline(&upstream).await;
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        post(
            &format!("{}/openai/v1/chat/completions", gw.url),
            &[("authorization", &gw.bearer())],
            json!({"model": "gpt-test", "stream": true, "max_tokens": 10}).to_string(),
        ),
    )
    .await
    .expect("the gateway ends a stalled stream");
    assert!(answer.text().contains("call_deadline"), "{}", answer.text());
    let e = &gw.events(1).await[0];
    assert_eq!(
        (e.outcome, e.reason.as_str()),
        (Outcome::UpstreamError, "call_deadline")
    );
    // A stalled provider may be reasoning unseen: the reservation.
    assert_eq!(e.cost, e.reserved, "{e:?}");
}

/// A client that hangs up mid-stream ends the call there and then (not at
/// the call deadline, minutes later): the gateway stops reading the
/// provider, charges the output the client was sent, releases the rest of
/// the hold and records the call.
#[tokio::test]
async fn a_client_that_hangs_up_mid_stream_is_settled_and_recorded_at_once() {
    use tokio::io::AsyncReadExt;
    let upstream = FakeUpstream::start(stalling_upstream("text/event-stream", chunk("part"))).await;
    // The default call deadline (270 s): only the hang-up can end this call.
    let gw = openai_gateway(&upstream, 10_000_000).await;
    let body = json!({"model": "gpt-test", "stream": true, "max_tokens": 10}).to_string();
    let mut conn = gw.send_raw_chat(&body).await;
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("part") {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), conn.read(&mut buf))
            .await
            .expect("the first chunk is relayed at once")
            .unwrap();
        assert!(n > 0, "the gateway closed the stream");
        seen.extend_from_slice(&buf[..n]);
    }
    drop(conn);
    // `events` waits at most two seconds.
    let e = &gw.events(1).await[0];
    assert_eq!(
        (e.outcome, e.reason.as_str()),
        (Outcome::Allowed, "client_disconnected"),
        "{e:?}"
    );
    assert!(e.cost > Micros::ZERO && e.cost < e.reserved, "{e:?}");
}

/// The same deadline bounds a JSON answer whose body never finishes: the
/// call is charged its reservation (the provider may bill it) and recorded.
#[tokio::test]
async fn a_stalled_json_body_is_ended_at_the_call_deadline() {
    let upstream =
        FakeUpstream::start(stalling_upstream("application/json", "{\"id\":".into())).await;
    let gw = gateway_with_short_deadline(&upstream).await;
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        post(
            &format!("{}/openai/v1/chat/completions", gw.url),
            &[("authorization", &gw.bearer())],
            json!({"model": "gpt-test", "max_tokens": 10}).to_string(),
        ),
    )
    .await
    .expect("the gateway ends a stalled body");
    assert_eq!(answer.status, 502);
    let e = &gw.events(1).await[0];
    assert_eq!(
        (e.outcome, e.reason.as_str()),
        (Outcome::UpstreamError, "upstream_body_failed")
    );
    assert_eq!(e.cost, e.reserved);
}
