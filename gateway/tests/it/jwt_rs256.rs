//! RS256 service-account tokens, signed with the committed test-only RSA key
//! (tests/data/README.md): verified alone and through a running gateway.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use caracal_gateway::{
    config::{Limits, ProviderKind},
    jwt::{
        JwtConfig, JwtError, VerifyKey, service_account_subject, sign_es256, sign_rs256, verify,
    },
};
use ring::signature::RsaKeyPair;
use serde_json::{Value, json};

use crate::{harness::*, openai::budgeted_snapshot};

const ISSUER: &str = "https://kubernetes.default.svc";
const NOW: i64 = 1_700_000_000;

fn signer() -> RsaKeyPair {
    RsaKeyPair::from_pkcs8(include_bytes!("../data/rsa-test-key.pk8")).unwrap()
}

fn config(keys: Vec<VerifyKey>) -> JwtConfig {
    JwtConfig {
        issuer: ISSUER.into(),
        audiences: vec!["caracal".into()],
        keys,
        leeway_seconds: 30,
    }
}

fn rsa_key() -> VerifyKey {
    VerifyKey::from_pem(include_str!("../data/rsa-test-key.pub.pem")).unwrap()
}

fn claims(exp: i64) -> Value {
    json!({"iss": ISSUER, "aud": ["caracal"], "exp": exp, "sub": "system:serviceaccount:team:bot-sa"})
}

fn with_header(token: &str, header: &str) -> String {
    let (_, rest) = token.split_once('.').unwrap();
    format!("{}.{rest}", URL_SAFE_NO_PAD.encode(header))
}

#[test]
fn a_good_token_verifies_with_the_pem_or_the_jwk_form() {
    let token = sign_rs256(&signer(), &claims(NOW + 600)).unwrap();
    let jwks = VerifyKey::from_jwks(include_str!("../data/rsa-test-key.jwks.json")).unwrap();
    for keys in [vec![rsa_key()], jwks] {
        assert_eq!(
            verify(&token, &config(keys), NOW),
            Ok("system:serviceaccount:team:bot-sa".into())
        );
    }
}

#[test]
fn every_flipped_signature_byte_is_refused() {
    let token = sign_rs256(&signer(), &claims(NOW + 600)).unwrap();
    let config = config(vec![rsa_key()]);
    let (signed, sig) = token.rsplit_once('.').unwrap();
    let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    assert_eq!(sig.len(), 256);
    for i in 0..sig.len() {
        for bit in [0x01, 0x80] {
            let mut s = sig.clone();
            s[i] ^= bit;
            let forged = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(&s));
            assert_eq!(
                verify(&forged, &config, NOW),
                Err(JwtError::Signature),
                "byte {i} bit {bit:#x}"
            );
        }
    }
    // A truncated or empty signature too.
    let short = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(&sig[1..]));
    assert_eq!(verify(&short, &config, NOW), Err(JwtError::Signature));
    assert_eq!(
        verify(&format!("{signed}."), &config, NOW),
        Err(JwtError::Signature)
    );
}

#[test]
fn other_algorithms_and_mismatched_keys_are_refused() {
    let token = sign_rs256(&signer(), &claims(NOW + 600)).unwrap();
    let rsa_only = config(vec![rsa_key()]);
    for alg in ["none", "HS256", "RS512", "PS256", "rs256", ""] {
        let relabelled = with_header(&token, &format!(r#"{{"alg":"{alg}"}}"#));
        assert_eq!(
            verify(&relabelled, &rsa_only, NOW),
            Err(JwtError::Algorithm(alg.into())),
            "{alg}"
        );
    }
    // The RSA signature offered as ES256: no EC key is configured.
    let as_es256 = with_header(&token, r#"{"alg":"ES256"}"#);
    assert_eq!(
        verify(&as_es256, &rsa_only, NOW),
        Err(JwtError::NoKeyForAlgorithm("ES256"))
    );
    // An RS256 token where only an EC key is configured, and an ES256 token
    // where only the RSA key is.
    let ec = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
    let ec_only = config(vec![(*ec.verifying_key()).into()]);
    assert_eq!(
        verify(&token, &ec_only, NOW),
        Err(JwtError::NoKeyForAlgorithm("RS256"))
    );
    let es_token = sign_es256(&ec, &claims(NOW + 600));
    assert_eq!(
        verify(&es_token, &rsa_only, NOW),
        Err(JwtError::NoKeyForAlgorithm("ES256"))
    );
    // With both kinds configured, each token finds its own key.
    let both = config(vec![(*ec.verifying_key()).into(), rsa_key()]);
    assert!(verify(&token, &both, NOW).is_ok());
    assert!(verify(&es_token, &both, NOW).is_ok());
    assert_eq!(
        verify(&as_es256, &both, NOW),
        Err(JwtError::Signature),
        "an RSA signature relabelled ES256 must not verify under the EC key"
    );
}

#[test]
fn expired_tokens_are_refused() {
    let config = config(vec![rsa_key()]);
    let within_leeway = sign_rs256(&signer(), &claims(NOW - 29)).unwrap();
    assert!(verify(&within_leeway, &config, NOW).is_ok());
    for exp in [NOW - 30, NOW - 3600] {
        let token = sign_rs256(&signer(), &claims(exp)).unwrap();
        assert_eq!(
            verify(&token, &config, NOW),
            Err(JwtError::Expired),
            "{exp}"
        );
    }
}

#[tokio::test]
async fn a_gateway_serves_an_agent_by_its_rs256_token() {
    let upstream = FakeUpstream::start(std::sync::Arc::new(|_: &Seen| {
        json_response(json!({"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 3}}))
    }))
    .await;
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
        Some(config(vec![rsa_key()])),
        vec![(subject, "team/bot".into())],
    )
    .await;
    let now = chrono::Utc::now().timestamp();
    let url = format!("{}/openai/v1/chat/completions", gw.url);
    let body = json!({"model": "gpt-test"}).to_string();
    let good = sign_rs256(&signer(), &claims(now + 600)).unwrap();
    let answer = post(
        &url,
        &[("authorization", &format!("Bearer {good}"))],
        body.clone(),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let expired = sign_rs256(&signer(), &claims(now - 3600)).unwrap();
    let answer = post(
        &url,
        &[("authorization", &format!("Bearer {expired}"))],
        body,
    )
    .await;
    assert_eq!(
        (answer.status, answer.json()["error"]["code"].as_str()),
        (401, Some("invalid_token"))
    );
}
