//! mTLS: a gateway TLS listener whose clients are agents by their
//! certificate's SPIFFE ID, with certificates made at test time.

pub mod pki;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use caracal_api::Micros;
use caracal_gateway::{
    config::{Limits, ProviderKind},
    jwt::service_account_subject,
    mtls::{TlsServer, TlsSettings},
    server,
};
use caracal_ledger::event::Outcome;
use hyper::Version;
use serde_json::json;
use tokio::{net::TcpListener, sync::oneshot};

use crate::{harness::*, openai::budgeted_snapshot};
use pki::{Alpn, Ca, client_config, post_tls, spiffe};

/// A gateway with a plaintext and a TLS listener, the CA that issued its
/// server certificate and trusts its clients, and one agent (`team/bot`)
/// running as service account `team/bot-sa`.
struct MtlsGateway {
    gw: TestGateway,
    tls_addr: SocketAddr,
    tls: TlsServer,
    ca: Ca,
    dir: TempDir,
    _stop: oneshot::Sender<()>,
}

async fn mtls_gateway(upstream: &FakeUpstream, require_client_cert: bool) -> MtlsGateway {
    mtls_gateway_with_crls(upstream, require_client_cert, |_| Vec::new()).await
}

/// As [`mtls_gateway`], with client CRL files: `crls` gives their PEM text,
/// written as `crl0.pem`, `crl1.pem`, ... in the gateway's directory.
async fn mtls_gateway_with_crls(
    upstream: &FakeUpstream,
    require_client_cert: bool,
    crls: impl FnOnce(&Ca) -> Vec<String>,
) -> MtlsGateway {
    let gw = start_with_jwt(
        Setup {
            providers: vec![
                provider("openai", ProviderKind::Openai, Some(&upstream.url)),
                provider("anthropic", ProviderKind::Anthropic, Some(&upstream.url)),
                provider(
                    "search",
                    ProviderKind::Mcp,
                    Some(&format!("{}/mcp", upstream.url)),
                ),
            ],
            snapshot: Some(budgeted_snapshot(10_000_000)),
            agent: "team/bot".into(),
            limits: Limits::default(),
        },
        None,
        vec![(service_account_subject("team", "bot-sa"), "team/bot".into())],
    )
    .await;
    let ca = Ca::new("caracal test CA");
    let dir = TempDir::new();
    let mut settings = pki::settings(&dir, &ca, require_client_cert);
    settings.client_crl_files = crls(&ca)
        .iter()
        .enumerate()
        .map(|(i, pem)| pki::write(&dir.0, &format!("crl{i}.pem"), pem))
        .collect();
    let tls = TlsServer::new(&settings).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let gateway = gw.gateway.clone();
    let serving = tls.clone();
    tokio::spawn(async move {
        let stopped = async {
            let _ = stopped.await;
        };
        server::serve_tls(listener, serving, gateway, stopped, Duration::from_secs(1))
            .await
            .unwrap();
    });
    MtlsGateway {
        gw,
        tls_addr,
        tls,
        ca,
        dir,
        _stop: stop,
    }
}

/// Usage of 11 prompt and 7 completion tokens: 98 micro-dollars for
/// `gpt-test` ($2.50 / $10 per million: 97.5, rounded up). The MCP server
/// at `/mcp` answers every call with an empty result.
fn chat_upstream() -> Handler {
    Arc::new(|seen: &Seen| {
        if seen.path == "/mcp" {
            return json_response(json!({"jsonrpc": "2.0", "id": 1, "result": {"content": []}}));
        }
        json_response(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-test",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        }))
    })
}

const CHAT: &str = "/openai/v1/chat/completions";

fn chat_body() -> String {
    json!({"model": "gpt-test", "messages": [{"role": "user", "content": "hello"}]}).to_string()
}

/// The gateway refused the connection with TLS alert `alert` (with TLS 1.3
/// the client hears it on its first read, after its side of the handshake).
fn refused_with<T: std::fmt::Debug>(result: Result<T, String>, alert: &str) {
    match result {
        Err(e) => assert!(e.contains(&format!("fatal alert: {alert}")), "{e}"),
        Ok(answer) => panic!("expected TLS alert {alert}, got {answer:?}"),
    }
}

#[tokio::test]
async fn a_client_certificate_is_its_agent_and_is_charged_to_it() {
    let upstream = FakeUpstream::start(chat_upstream()).await;
    let m = mtls_gateway(&upstream, true).await;
    let cert = m.ca.client(&[&spiffe("team", "bot-sa")]);
    // SDKs always send some key; on a certificate connection it is not
    // consulted (this one is no valid key at all), and never forwarded.
    let (version, answer) = post_tls(
        m.tls_addr,
        client_config(&m.ca, Some(&cert), Alpn::H1),
        CHAT,
        &[
            ("authorization", "Bearer ck_client-placeholder-key"),
            ("x-api-key", "sk-client-secret"),
            ("content-type", "application/json"),
        ],
        chat_body(),
    )
    .await
    .unwrap();
    assert_eq!(version, Version::HTTP_11);
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.headers["x-caracal-cost-micros"], "98");

    let events = m.gw.events(1).await;
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.agent.to_string(), "team/bot");
    assert_eq!((e.outcome, e.cost), (Outcome::Allowed, Micros(98)));
    assert_eq!((e.tokens.input, e.tokens.output), (11, 7));

    // The provider credential went upstream; no client credential did.
    let seen = upstream.last();
    assert_eq!(seen.headers["authorization"], "Bearer sk-provider-openai");
    assert!(!seen.headers.contains_key("x-api-key"));
    for (name, value) in &seen.headers {
        let value = value.to_str().unwrap_or_default();
        assert!(
            !value.contains("ck_client") && !value.contains("sk-client"),
            "client credential leaked upstream in {name}: {value}"
        );
    }
}

#[tokio::test]
async fn http2_over_tls_is_served_and_charged() {
    let upstream = FakeUpstream::start(chat_upstream()).await;
    let m = mtls_gateway(&upstream, true).await;
    let cert = m.ca.client(&[&spiffe("team", "bot-sa")]);
    for i in 1..=2 {
        let (version, answer) = post_tls(
            m.tls_addr,
            client_config(&m.ca, Some(&cert), Alpn::H2),
            CHAT,
            &[("content-type", "application/json")],
            chat_body(),
        )
        .await
        .unwrap();
        assert_eq!(version, Version::HTTP_2);
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(answer.headers["x-caracal-cost-micros"], "98");
        let events = m.gw.events(i).await;
        assert_eq!(events.len(), i);
        assert!(
            events
                .iter()
                .all(|e| e.agent.to_string() == "team/bot" && e.cost == Micros(98))
        );
    }
    assert_eq!(
        upstream.last().headers["authorization"],
        "Bearer sk-provider-openai"
    );
}

#[tokio::test]
async fn mcp_tool_calls_are_charged_to_the_certificate_agent() {
    let upstream = FakeUpstream::start(chat_upstream()).await;
    let m = mtls_gateway(&upstream, true).await;
    let cert = m.ca.client(&[&spiffe("team", "bot-sa")]);
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "web_search", "arguments": {}}});
    let (_, answer) = post_tls(
        m.tls_addr,
        client_config(&m.ca, Some(&cert), Alpn::H2),
        "/search",
        &[
            ("accept", "application/json, text/event-stream"),
            ("authorization", "Bearer placeholder"),
        ],
        call.to_string(),
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    let seen = upstream.last();
    assert_eq!(seen.path, "/mcp");
    assert_eq!(seen.headers["authorization"], "Bearer sk-provider-search");
    let e = &m.gw.events(1).await[0];
    assert_eq!(
        (e.agent.to_string(), e.outcome, e.cost, e.tool.as_deref()),
        (
            "team/bot".to_owned(),
            Outcome::Allowed,
            Micros(10_000),
            Some("web_search")
        )
    );
}

#[tokio::test]
async fn certificates_the_ca_did_not_issue_or_that_expired_fail_the_handshake() {
    let upstream = FakeUpstream::start(chat_upstream()).await;
    let m = mtls_gateway(&upstream, true).await;
    let identity = spiffe("team", "bot-sa");
    let other_ca = Ca::new("someone else's CA");
    let cases = [
        ("UnknownCA", other_ca.client(&[&identity])),
        ("CertificateExpired", m.ca.expired_client(&identity)),
    ];
    for (alert, cert) in cases {
        let result = post_tls(
            m.tls_addr,
            client_config(&m.ca, Some(&cert), Alpn::H1),
            CHAT,
            &[("authorization", &m.gw.bearer())],
            chat_body(),
        )
        .await;
        refused_with(result, alert);
    }
    // The same identity from the right CA is served on the same listener.
    let good = m.ca.client(&[&identity]);
    let (_, answer) = post_tls(
        m.tls_addr,
        client_config(&m.ca, Some(&good), Alpn::H1),
        CHAT,
        &[],
        chat_body(),
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(upstream.seen.lock().unwrap().len(), 1);
}

/// A client that resumes its TLS session (a TLS 1.3 ticket, a session id)
/// is verified afresh: a certificate that expired since the first
/// connection stops working, as it would on a new handshake.
#[tokio::test]
async fn a_resumed_session_does_not_outlive_its_certificate() {
    let upstream = FakeUpstream::start(chat_upstream()).await;
    let m = mtls_gateway(&upstream, true).await;
    let cert = m.ca.client_expiring_in(&spiffe("team", "bot-sa"), 2);
    // Clones of one client config share its session store, so the second
    // connection offers to resume the first one's session.
    let config = client_config(&m.ca, Some(&cert), Alpn::H1);
    let (_, answer) = post_tls(m.tls_addr, config.clone(), CHAT, &[], chat_body())
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let later = post_tls(m.tls_addr, config, CHAT, &[], chat_body()).await;
    refused_with(later, "CertificateExpired");
    assert_eq!(upstream.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_required_listener_refuses_clients_without_a_certificate() {
    let upstream = FakeUpstream::start(chat_upstream()).await;
    let m = mtls_gateway(&upstream, true).await;
    // Even with a valid key: this listener is for certificates only.
    let result = post_tls(
        m.tls_addr,
        client_config(&m.ca, None, Alpn::H1),
        CHAT,
        &[("authorization", &m.gw.bearer())],
        chat_body(),
    )
    .await;
    refused_with(result, "CertificateRequired");
    assert!(upstream.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_optional_listener_takes_keys_and_still_refuses_bad_certificates() {
    let upstream = FakeUpstream::start(chat_upstream()).await;
    let m = mtls_gateway(&upstream, false).await;
    let post = |cert: Option<pki::Issued>, headers: Vec<(&'static str, String)>| {
        let config = client_config(&m.ca, cert.as_ref(), Alpn::H1);
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            post_tls(m.tls_addr, config, CHAT, &headers, chat_body()).await
        }
    };
    let (_, by_key) = post(None, vec![("authorization", m.gw.bearer())])
        .await
        .unwrap();
    assert_eq!(by_key.status, 200, "{}", by_key.text());
    assert_eq!(by_key.headers["x-caracal-cost-micros"], "98");
    let (_, nothing) = post(None, vec![]).await.unwrap();
    assert_eq!(
        (nothing.status, nothing.json()["error"]["code"].as_str()),
        (401, Some("missing_credentials"))
    );
    // Presenting a certificate the CA did not issue is not the same as
    // presenting none: the handshake fails.
    let foreign = Ca::new("other").client(&[&spiffe("team", "bot-sa")]);
    let refused = post(Some(foreign), vec![("authorization", m.gw.bearer())]).await;
    refused_with(refused, "UnknownCA");
    let events = m.gw.events(1).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].cost, Micros(98));
}

impl MtlsGateway {
    /// One chat call over a fresh TLS connection presenting `cert`.
    async fn call_with(&self, cert: &pki::Issued) -> Result<(hyper::Version, Answer), String> {
        post_tls(
            self.tls_addr,
            client_config(&self.ca, Some(cert), Alpn::H1),
            CHAT,
            &[],
            chat_body(),
        )
        .await
    }

    async fn served(&self, cert: &pki::Issued) {
        let (_, answer) = self.call_with(cert).await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
}

#[tokio::test]
async fn revoked_certificates_fail_the_handshake_and_a_new_crl_applies_without_restart() {
    let upstream = FakeUpstream::start(chat_upstream()).await;
    let identity = spiffe("team", "bot-sa");
    let m = mtls_gateway_with_crls(&upstream, true, |ca| vec![ca.crl(&[1001])]).await;
    let revoked = m.ca.client_with_serial(&identity, 1001);
    let good = m.ca.client_with_serial(&identity, 1002);
    refused_with(m.call_with(&revoked).await, "CertificateRevoked");
    m.served(&good).await;
    assert_eq!(upstream.seen.lock().unwrap().len(), 1);

    // The CA revokes the second certificate too; the watcher sees the new
    // file and the listener refuses it from then on, with no restart.
    let _watch = m.tls.watch(Duration::from_millis(20));
    pki::write(&m.dir.0, "crl0.pem", &m.ca.crl(&[1001, 1002]));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    // Calls made before the watcher noticed are still served.
    let mut served_meanwhile = 0;
    loop {
        match m.call_with(&good).await {
            Err(e) if e.contains("fatal alert: CertificateRevoked") => break,
            Ok((_, answer)) if answer.status == 200 => served_meanwhile += 1,
            other => panic!("neither served nor revoked: {other:?}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new CRL did not apply"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(upstream.seen.lock().unwrap().len(), 1 + served_meanwhile);

    // A file that no longer holds a CRL is refused and the last good CRL
    // stays in force: still no access for either certificate.
    pki::write(&m.dir.0, "crl0.pem", "not a CRL");
    let err = m.tls.reload().unwrap_err().to_string();
    assert!(
        err.contains("crl0.pem") && err.contains("X509 CRL"),
        "{err}"
    );
    refused_with(m.call_with(&good).await, "CertificateRevoked");
    assert_eq!(upstream.seen.lock().unwrap().len(), 1 + served_meanwhile);
}

#[tokio::test]
async fn a_stale_crl_or_an_issuer_without_one_refuses_every_certificate() {
    let upstream = FakeUpstream::start(chat_upstream()).await;
    let identity = spiffe("team", "bot-sa");
    // Past its next update: nothing is known about revocations since 2021.
    let stale = mtls_gateway_with_crls(&upstream, true, |ca| vec![ca.stale_crl(&[])]).await;
    let cert = stale.ca.client_with_serial(&identity, 7);
    assert!(stale.call_with(&cert).await.is_err(), "stale CRL accepted");
    // Only another CA's CRL: this CA's certificates have no revocation status.
    let other_ca = Ca::new("someone else's CA");
    let other_crl = other_ca.crl(&[]);
    let unknown = mtls_gateway_with_crls(&upstream, true, move |_| vec![other_crl]).await;
    let cert = unknown.ca.client_with_serial(&identity, 7);
    assert!(
        unknown.call_with(&cert).await.is_err(),
        "unknown status accepted"
    );
    assert_eq!(upstream.seen.lock().unwrap().len(), 0);
    // The same certificate is served once the CA's current CRL is there.
    pki::write(&unknown.dir.0, "crl0.pem", &unknown.ca.crl(&[]));
    unknown.tls.reload().unwrap();
    unknown.served(&cert).await;
}

#[tokio::test]
async fn identities_that_name_no_agent_are_refused_in_the_provider_shape() {
    let upstream = FakeUpstream::start(chat_upstream()).await;
    let m = mtls_gateway(&upstream, true).await;
    let stranger = m.ca.client(&[&spiffe("team", "stranger")]);
    let (_, openai) = post_tls(
        m.tls_addr,
        client_config(&m.ca, Some(&stranger), Alpn::H1),
        CHAT,
        // A valid key does not rescue an unknown certificate identity.
        &[("authorization", &m.gw.bearer())],
        chat_body(),
    )
    .await
    .unwrap();
    assert_eq!(openai.status, 403, "{}", openai.text());
    assert_eq!(openai.json()["error"]["code"], "unknown_agent");
    assert_eq!(openai.headers["x-caracal-reason"], "unknown_agent");

    let (_, anthropic) = post_tls(
        m.tls_addr,
        client_config(&m.ca, Some(&stranger), Alpn::H2),
        "/anthropic/v1/messages",
        &[("anthropic-version", "2023-06-01")],
        json!({"model": "claude-test", "max_tokens": 10, "messages": []}).to_string(),
    )
    .await
    .unwrap();
    assert_eq!(anthropic.status, 403, "{}", anthropic.text());
    let body = anthropic.json();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["caracal_reason"], "unknown_agent");

    // Identities the gateway cannot read as an agent at all.
    let unreadable = [
        m.ca.client(&["spiffe://other.domain/ns/team/sa/bot-sa"]),
        m.ca.client(&["spiffe://cluster.local/team/bot-sa"]),
        m.ca.client(&[]),
        m.ca.client(&[
            &spiffe("team", "bot-sa"),
            "spiffe://cluster.local/ns/team/sa/other",
        ]),
    ];
    for cert in unreadable {
        let (_, answer) = post_tls(
            m.tls_addr,
            client_config(&m.ca, Some(&cert), Alpn::H1),
            CHAT,
            &[],
            chat_body(),
        )
        .await
        .unwrap();
        assert_eq!(
            (answer.status, answer.json()["error"]["code"].as_str()),
            (401, Some("invalid_client_certificate")),
            "{}",
            answer.text()
        );
    }
    assert!(upstream.seen.lock().unwrap().is_empty());
}

#[test]
fn unusable_pem_files_stop_the_listener_naming_the_file() {
    let dir = TempDir::new();
    let ca = Ca::new("ca");
    let good = pki::settings(&dir, &ca, true);
    let garbage = pki::write(&dir.0, "garbage.pem", "not a pem file\n");
    let other_key = pki::write(&dir.0, "other-key.pem", &ca.client(&[]).key.serialize_pem());
    let missing = dir.0.join("missing.pem");
    let cases: Vec<(TlsSettings, &std::path::Path)> = vec![
        (
            TlsSettings {
                cert_file: missing.clone(),
                ..good.clone()
            },
            &missing,
        ),
        (
            TlsSettings {
                cert_file: garbage.clone(),
                ..good.clone()
            },
            &garbage,
        ),
        (
            TlsSettings {
                key_file: garbage.clone(),
                ..good.clone()
            },
            &garbage,
        ),
        (
            TlsSettings {
                key_file: good.cert_file.clone(),
                ..good.clone()
            },
            &good.cert_file,
        ),
        (
            TlsSettings {
                key_file: other_key.clone(),
                ..good.clone()
            },
            &other_key,
        ),
        (
            TlsSettings {
                client_ca_file: Some(garbage.clone()),
                ..good.clone()
            },
            &garbage,
        ),
        (
            TlsSettings {
                client_ca_file: Some(missing.clone()),
                ..good.clone()
            },
            &missing,
        ),
    ];
    for (settings, named) in cases {
        let err = TlsServer::new(&settings).unwrap_err().to_string();
        assert!(
            err.contains(&named.display().to_string()),
            "{settings:?}: {err}"
        );
    }
    let no_ca = TlsSettings {
        client_ca_file: None,
        ..good.clone()
    };
    assert!(TlsServer::new(&no_ca).is_err(), "required without a CA");
    let crl_without_ca = TlsSettings {
        client_ca_file: None,
        require_client_cert: false,
        client_crl_files: vec![garbage.clone()],
        ..good.clone()
    };
    let err = TlsServer::new(&crl_without_ca).unwrap_err().to_string();
    assert!(err.contains("CRL files need a client CA file"), "{err}");
    let bad_crl = TlsSettings {
        client_crl_files: vec![garbage.clone()],
        ..good.clone()
    };
    let err = TlsServer::new(&bad_crl).unwrap_err().to_string();
    assert!(err.contains(&garbage.display().to_string()), "{err}");
    let bad_domain = TlsSettings {
        trust_domain: "Not A Domain".into(),
        ..good.clone()
    };
    assert!(TlsServer::new(&bad_domain).is_err());
    assert!(TlsServer::new(&good).is_ok());
}
