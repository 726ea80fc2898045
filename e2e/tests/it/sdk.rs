//! The official SDKs against `caracal dev`: metered to the micro-dollar,
//! and budget denials raised as each SDK's normal errors.

use std::time::Duration;

use serde_json::json;

use crate::{
    dev::{Dev, agent_with_budget, bot_with_ten_dollars, config_yaml, cost},
    harness::{FakeUpstream, curl, scratch_dir, sdk_call},
};

/// Every call the provider served carried the provider's key, never the
/// agent's.
fn assert_provider_keys_only(served: &[serde_json::Value]) {
    for s in served {
        let auth = s["auth"].as_str().unwrap_or_default();
        assert!(
            auth == "Bearer sk-fake-openai" || auth == "sk-fake-anthropic",
            "{s}"
        );
    }
}

#[test]
fn sdk_calls_are_metered_exactly() {
    let (upstream, dev, env) = bot_with_ten_dollars("sdk");

    let cases: Vec<(Vec<&str>, u64, u64)> = vec![
        (vec!["openai-chat", "--message", "hi usage=11/7"], 11, 7),
        (
            vec!["openai-chat", "--stream", "--message", "hi usage=12/9"],
            12,
            9,
        ),
        (vec!["openai-responses", "--message", "hi usage=5/3"], 5, 3),
        (
            vec!["anthropic-messages", "--message", "hi usage=13/8"],
            13,
            8,
        ),
        (
            vec![
                "anthropic-messages",
                "--stream",
                "--message",
                "hi usage=14/6",
            ],
            14,
            6,
        ),
    ];
    for (args, _, _) in &cases {
        let out = sdk_call(&env, args);
        assert_eq!(out["ok"], true, "{args:?}: {out}");
    }
    let events = dev.ledger_at_least("team/bot", cases.len(), Duration::from_secs(10));
    assert_eq!(events.len(), cases.len(), "{events:#?}");
    for ((args, input, output), event) in cases.iter().zip(&events) {
        let want = if args[0].starts_with("anthropic") {
            cost(*input, 1_000_000, *output, 5_000_000)
        } else {
            cost(*input, 150_000, *output, 600_000)
        };
        assert_eq!(event["outcome"], "allowed", "{args:?}");
        assert_eq!(event["cost_micros"], json!(want), "{args:?}: {event}");
        assert_eq!(event["tokens"]["input"], json!(input), "{args:?}");
        assert_eq!(event["tokens"]["output"], json!(output), "{args:?}");
    }
    // The provider saw the provider's key, never the agent's.
    assert_provider_keys_only(&upstream.served());
    let (ok, report) = dev.merkle_verify();
    assert!(ok, "{report}");
}

#[test]
fn a_spent_budget_is_a_normal_sdk_rate_limit_error() {
    let dir = scratch_dir("sdk-budget");
    let upstream = FakeUpstream::start(&dir);
    // One call of 10 in / 300 out at $1 / $5 per 1M costs $0.00151, the
    // whole budget: after it not even a clamped call (one output token) fits.
    let dev = Dev::start(
        &dir,
        &agent_with_budget("team", "bot", "0.00151", ""),
        &config_yaml(&upstream),
        &[],
        true,
    );
    let env = dev.env("team", "bot");
    let first = sdk_call(
        &env,
        &[
            "anthropic-messages",
            "--message",
            "usage=10/300",
            "--max-tokens",
            "256",
        ],
    );
    assert_eq!(first["ok"], true, "{first}");
    let second = sdk_call(
        &env,
        &[
            "anthropic-messages",
            "--message",
            "usage=10/300",
            "--max-tokens",
            "256",
        ],
    );
    assert_eq!(second["error"], "RateLimitError", "{second}");
    assert_eq!(second["status"], 429);
    assert!(
        second["retry_after"]
            .as_str()
            .is_some_and(|s| s.parse::<u64>().is_ok()),
        "{second}"
    );
    assert_eq!(
        second["body"]["error"]["caracal_reason"], "budget_exhausted",
        "{second}"
    );
    let openai = sdk_call(&env, &["openai-chat", "--max-tokens", "4000"]);
    assert_eq!(
        (openai["error"].as_str(), openai["status"].as_u64()),
        (Some("RateLimitError"), Some(429)),
        "{openai}"
    );
    assert_eq!(openai["body"]["code"], "budget_exhausted", "{openai}");
    assert_eq!(
        upstream.served().len(),
        1,
        "denied calls never reach the provider"
    );
    // curl sees the same JSON error.
    let key = dev.key("team", "bot");
    let (status, body) = curl(
        &format!("{}/openai/v1/chat/completions", dev.url()),
        &[
            "-H",
            &format!("authorization: Bearer {key}"),
            "-d",
            r#"{"model":"gpt-4o-mini","max_tokens":4000}"#,
        ],
    );
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("budget_exhausted"), "{body}");
}

#[test]
fn a_service_account_token_works_as_the_sdk_key() {
    use p256::pkcs8::{EncodePublicKey, LineEnding};

    let dir = scratch_dir("sa-token");
    let upstream = FakeUpstream::start(&dir);
    let signer = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
    let pem = signer
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    std::fs::write(dir.join("sa.pub"), pem).unwrap();
    let config = format!(
        "{}serviceAccountTokens:\n  issuer: https://kubernetes.default.svc\n  publicKeyFiles: [sa.pub]\n",
        config_yaml(&upstream)
    );
    let manifests = r#"apiVersion: caracal.dev/v1alpha1
kind: Agent
metadata: {name: bot, namespace: team}
spec:
  owner: e2e
  identity: {serviceAccountName: bot-sa}
---
apiVersion: caracal.dev/v1alpha1
kind: Policy
metadata: {name: bot-daily, namespace: team}
spec:
  targetRefs: [{name: bot}]
  budget: {limit: "1.00", window: {period: Daily, timeZone: UTC}}
"#;
    let dev = Dev::start(&dir, manifests, &config, &[], true);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let token = caracal_gateway::jwt::sign_es256(
        &signer,
        &json!({"iss": "https://kubernetes.default.svc", "aud": ["caracal"], "exp": now + 600,
                "sub": "system:serviceaccount:team:bot-sa"}),
    );
    let env = vec![
        (
            "OPENAI_BASE_URL".to_owned(),
            format!("{}/openai/v1", dev.url()),
        ),
        ("OPENAI_API_KEY".to_owned(), token),
    ];
    let out = sdk_call(&env, &["openai-chat", "--message", "usage=3/4"]);
    assert_eq!(out["ok"], true, "{out}");
    let events = dev.ledger_at_least("team/bot", 1, Duration::from_secs(10));
    assert_eq!(
        events[0]["cost_micros"],
        json!(cost(3, 150_000, 4, 600_000))
    );
    // A token for a service account no Agent uses is refused.
    let stranger = caracal_gateway::jwt::sign_es256(
        &signer,
        &json!({"iss": "https://kubernetes.default.svc", "aud": "caracal", "exp": now + 600,
                "sub": "system:serviceaccount:team:someone-else"}),
    );
    let env = vec![env[0].clone(), ("OPENAI_API_KEY".to_owned(), stranger)];
    let out = sdk_call(&env, &["openai-chat"]);
    assert_eq!(
        (out["error"].as_str(), out["status"].as_u64()),
        (Some("AuthenticationError"), Some(401)),
        "{out}"
    );
}

/// SDK helpers that cost nothing (model lists, Anthropic's token count) work
/// through the gateway with the provider's key, and leave no ledger entry.
#[test]
fn free_sdk_helpers_pass_without_a_charge() {
    let (upstream, dev, env) = bot_with_ten_dollars("sdk-free");
    let models = ["gpt-4o-mini", "claude-haiku-4-5"];
    let openai = sdk_call(&env, &["openai-models"]);
    assert_eq!(openai["ok"], true, "{openai}");
    assert_eq!(openai["ids"], json!(models), "{openai}");
    assert_eq!(openai["retrieved"], "gpt-4o-mini", "{openai}");
    let anthropic = sdk_call(&env, &["anthropic-models"]);
    assert_eq!(anthropic["ids"], json!(models), "{anthropic}");
    let count = sdk_call(
        &env,
        &["anthropic-count-tokens", "--message", "hi usage=23/1"],
    );
    assert_eq!(count["input_tokens"], 23, "{count}");

    // A metered call after them is the agent's first ledger entry.
    let chat = sdk_call(&env, &["openai-chat", "--message", "hi usage=4/2"]);
    assert_eq!(chat["ok"], true, "{chat}");
    let events = dev.ledger_at_least("team/bot", 1, Duration::from_secs(10));
    assert_eq!(events[0]["model"], "gpt-4o-mini", "{events:#?}");
    assert_eq!(events.len(), 1, "{events:#?}");

    let served = upstream.served();
    let apis: Vec<&str> = served.iter().filter_map(|s| s["api"].as_str()).collect();
    assert_eq!(
        apis,
        [
            "models.list",
            "models.retrieve",
            "models.list",
            "anthropic.count_tokens",
            "openai.chat"
        ],
        "{served:#?}"
    );
    assert_provider_keys_only(&served);
}
