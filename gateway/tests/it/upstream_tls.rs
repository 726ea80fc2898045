//! Providers behind a private CA (`caFile`): trusted through that CA only,
//! and refused, at no cost, when the certificate does not chain to the CAs
//! the gateway trusts for that provider.

use caracal_api::Micros;
use caracal_gateway::{config::Limits, standalone::file_config::GatewayFile};
use caracal_ledger::event::Outcome;
use serde_json::json;

use crate::{
    harness::*,
    mtls::pki::{Ca, upstream_server_config},
    openai::budgeted_snapshot,
};

fn chat_answer() -> Handler {
    std::sync::Arc::new(|_: &Seen| {
        json_response(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-test",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
        }))
    })
}

/// A gateway whose provider `openai` is `url`, read from a config file
/// that names `ca_pem` (written beside it) as its `caFile`, if given.
async fn gateway_trusting(url: &str, ca_pem: Option<String>, dir: &TempDir) -> TestGateway {
    let mut yaml = format!("providers:\n  - name: openai\n    kind: openai\n    baseUrl: {url}\n");
    if let Some(pem) = ca_pem {
        std::fs::write(dir.0.join("provider-ca.pem"), pem).unwrap();
        yaml.push_str("    caFile: provider-ca.pem\n");
    }
    let path = dir.0.join("gateway.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let providers = GatewayFile::load(&path)
        .unwrap()
        .resolve_providers(&path, |_| None)
        .unwrap();
    start(Setup {
        providers,
        snapshot: Some(budgeted_snapshot(10_000_000)),
        agent: "team/bot".into(),
        limits: Limits::default(),
    })
    .await
}

#[tokio::test]
async fn a_provider_behind_a_private_ca_is_reached_through_that_ca_only() {
    let ca = Ca::new("provider CA");
    let upstream = FakeUpstream::start_tls(chat_answer(), upstream_server_config(&ca)).await;
    let body =
        json!({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    // (the CA the gateway is told to trust for the provider, the answer)
    let cases = [
        (Some(ca.pem()), 200),
        // The public web roots do not know the private CA.
        (None, 502),
        // Nor does another private CA.
        (Some(Ca::new("someone else").pem()), 502),
    ];
    for (trusted, want) in cases {
        let dir = TempDir::new();
        let named = trusted.is_some();
        let gw = gateway_trusting(&upstream.url, trusted, &dir).await;
        let answer = post(
            &format!("{}/openai/v1/chat/completions", gw.url),
            &[("authorization", &gw.bearer())],
            body.clone(),
        )
        .await;
        assert_eq!(answer.status, want, "caFile {named}: {}", answer.text());
        let e = &gw.events(1).await[0];
        if want == 200 {
            assert_eq!((e.outcome, e.cost), (Outcome::Allowed, Micros(45)), "{e:?}");
        } else {
            // The handshake failed before anything was sent: no charge.
            assert_eq!(answer.refusal().1, "upstream_unreachable");
            assert_eq!(
                (e.outcome, e.cost),
                (Outcome::UpstreamError, Micros::ZERO),
                "{e:?}"
            );
            assert!(answer.text().contains("certificate"), "{}", answer.text());
        }
    }
    assert_eq!(
        upstream.seen.lock().unwrap().len(),
        1,
        "only the trusting gateway got through"
    );
}
