//! Service-account tokens (JWT) as agent identity.
//!
//! A pod running as an Agent's service account presents its projected token
//! (audience `caracal`) as `Authorization: Bearer`. The gateway verifies it
//! against the issuer, audiences and public keys in its config and maps the
//! token's subject (`system:serviceaccount:NAMESPACE:NAME`) to the agent
//! that names that service account. ES256 (ECDSA P-256) and RS256 (RSA
//! PKCS#1 v1.5 with SHA-256, Kubernetes' default) are accepted, each only
//! with a key of its own type (see [`keys`]); a token with any other `alg`,
//! `none` and the HMAC family included, is refused.

pub mod fetch;
mod keys;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use p256::ecdsa::Signature;
use serde_json::Value;

pub use keys::{KeyError, RsaKey, VerifyKey};

/// The `alg` values a token may carry.
const ACCEPTED_ALGS: [&str; 2] = ["ES256", "RS256"];

/// What a token must satisfy.
#[derive(Clone, Debug)]
pub struct JwtConfig {
    pub issuer: String,
    /// The token's `aud` must contain at least one of these.
    pub audiences: Vec<String>,
    /// Tried in order; only keys whose [`VerifyKey::alg`] is the token's
    /// `alg` are used.
    pub keys: Vec<VerifyKey>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_seconds: i64,
}

/// The token settings a running gateway checks against, replaceable while
/// it runs (new signing keys after the issuer rotated them).
#[derive(Debug)]
pub struct JwtVerifier {
    current: std::sync::RwLock<std::sync::Arc<JwtConfig>>,
    /// Signalled when a token's signature matched no key: the issuer may
    /// have started signing with a key not fetched yet.
    missed: tokio::sync::Notify,
}

impl JwtVerifier {
    pub fn new(config: JwtConfig) -> JwtVerifier {
        JwtVerifier {
            current: std::sync::RwLock::new(std::sync::Arc::new(config)),
            missed: tokio::sync::Notify::new(),
        }
    }

    /// Verify `token` at `now` with the settings in force and return its
    /// subject; a signature no key verifies is also signalled to whoever
    /// fetches the keys ([`JwtVerifier::key_missed`]).
    pub fn verify(&self, token: &str, now: i64) -> Result<String, JwtError> {
        let result = verify(token, &self.current(), now);
        if matches!(
            result,
            Err(JwtError::Signature | JwtError::NoKeyForAlgorithm(_))
        ) {
            self.missed.notify_one();
        }
        result
    }

    /// Wait until a token's signature matches no key (at once if one did
    /// since the last wait).
    pub async fn key_missed(&self) {
        self.missed.notified().await
    }

    /// The settings in force now.
    pub fn current(&self) -> std::sync::Arc<JwtConfig> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Check tokens with `config` from now on.
    pub fn replace(&self, config: JwtConfig) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(config);
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("the token is not three base64url parts")]
    Malformed,
    #[error("the token is signed with {0:?}; only ES256 and RS256 are accepted")]
    Algorithm(String),
    #[error("no configured key verifies {0} tokens")]
    NoKeyForAlgorithm(&'static str),
    #[error("the token's signature does not verify against any configured key")]
    Signature,
    #[error("the token's issuer {0:?} is not the configured issuer")]
    Issuer(String),
    #[error("the token is not for this audience")]
    Audience,
    #[error("the token has expired or is not valid yet")]
    Expired,
    #[error("the token names no subject")]
    NoSubject,
}

fn part(text: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| JwtError::Malformed)
}

/// Verify `token` at `now` (Unix seconds) and return its subject.
pub fn verify(token: &str, config: &JwtConfig, now: i64) -> Result<String, JwtError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let header: Value = serde_json::from_slice(&part(h)?).map_err(|_| JwtError::Malformed)?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(alg) = ACCEPTED_ALGS.into_iter().find(|a| *a == alg) else {
        return Err(JwtError::Algorithm(alg.to_owned()));
    };
    // Extensions the signer marked critical must be understood (RFC 7515,
    // 4.1.11); this verifier understands none.
    if header.get("crit").is_some() {
        return Err(JwtError::Malformed);
    }
    let mut candidates = config.keys.iter().filter(|k| k.alg() == alg).peekable();
    if candidates.peek().is_none() {
        return Err(JwtError::NoKeyForAlgorithm(alg));
    }
    let signature = part(s)?;
    let signed = &token[..h.len() + 1 + p.len()];
    if !candidates.any(|k| k.verifies(signed.as_bytes(), &signature)) {
        return Err(JwtError::Signature);
    }
    let claims: Value = serde_json::from_slice(&part(p)?).map_err(|_| JwtError::Malformed)?;
    let iss = claims
        .get("iss")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if iss != config.issuer {
        return Err(JwtError::Issuer(iss.to_owned()));
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(a)) => config.audiences.contains(a),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .any(|a| config.audiences.iter().any(|c| c == a)),
        _ => false,
    };
    if !audience_ok {
        return Err(JwtError::Audience);
    }
    // `exp` is required; `nbf` is optional. Both are NumericDates, which
    // may have a fraction (RFC 7519, 2): read as whole seconds, `exp`
    // rounded down and `nbf` up, so neither widens the window. A value that
    // is present but not a number refuses the token.
    let seconds = |name: &str| -> Result<Option<f64>, JwtError> {
        match claims.get(name) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or(JwtError::Expired),
        }
    };
    let exp = seconds("exp")?.ok_or(JwtError::Expired)?.floor() as i64;
    let nbf = seconds("nbf")?.map_or(i64::MIN, |n| n.ceil() as i64);
    if now >= exp + config.leeway_seconds || now + config.leeway_seconds < nbf {
        return Err(JwtError::Expired);
    }
    claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .ok_or(JwtError::NoSubject)
}

/// The subject Kubernetes puts in a service account's token.
pub fn service_account_subject(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// Whether a presented credential looks like a JWT rather than a key.
pub fn looks_like_jwt(credential: &str) -> bool {
    credential.starts_with("eyJ") && credential.matches('.').count() == 2
}

/// Sign `claims` as an ES256 JWT (tests and local tooling).
pub fn sign_es256(key: &p256::ecdsa::SigningKey, claims: &Value) -> String {
    use p256::ecdsa::signature::Signer;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{header}.{payload}");
    let signature: Signature = key.sign(signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

/// Sign `claims` as an RS256 JWT (tests and local tooling). Fails only if
/// the system random source does (ring asks for one even though PKCS#1 v1.5
/// signing is deterministic).
pub fn sign_rs256(
    key: &ring::signature::RsaKeyPair,
    claims: &Value,
) -> Result<String, ring::error::Unspecified> {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{header}.{payload}");
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signed.as_bytes(),
        &mut signature,
    )?;
    Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::SigningKey;
    use serde_json::json;

    fn setup() -> (SigningKey, JwtConfig) {
        let key = SigningKey::random(&mut rand::rngs::OsRng);
        let config = JwtConfig {
            issuer: "https://kubernetes.default.svc".into(),
            audiences: vec!["caracal".into()],
            keys: vec![(*key.verifying_key()).into()],
            leeway_seconds: 30,
        };
        (key, config)
    }

    fn claims(iss: &str, aud: Value, exp: i64, nbf: Option<i64>, sub: &str) -> Value {
        let mut c = json!({"iss": iss, "aud": aud, "exp": exp, "sub": sub});
        if let Some(n) = nbf {
            c["nbf"] = json!(n);
        }
        c
    }

    #[test]
    fn verifies_claims_and_signature() {
        let (key, config) = setup();
        let now = 1_700_000_000;
        let iss = "https://kubernetes.default.svc";
        let sub = "system:serviceaccount:team:bot";
        let cases: Vec<(Value, Result<String, JwtError>)> = vec![
            (
                claims(iss, json!("caracal"), now + 600, None, sub),
                Ok(sub.into()),
            ),
            (
                claims(
                    iss,
                    json!(["other", "caracal"]),
                    now + 600,
                    Some(now - 10),
                    sub,
                ),
                Ok(sub.into()),
            ),
            (
                claims(iss, json!("caracal"), now - 10, None, sub),
                Ok(sub.into()),
            ), // within leeway
            (
                claims(iss, json!("caracal"), now - 31, None, sub),
                Err(JwtError::Expired),
            ),
            (
                claims(iss, json!("caracal"), now + 600, Some(now + 60), sub),
                Err(JwtError::Expired),
            ),
            (
                claims(iss, json!("kubernetes"), now + 600, None, sub),
                Err(JwtError::Audience),
            ),
            (
                claims("https://evil", json!("caracal"), now + 600, None, sub),
                Err(JwtError::Issuer("https://evil".into())),
            ),
            (
                claims(iss, json!("caracal"), now + 600, None, ""),
                Err(JwtError::NoSubject),
            ),
            (
                json!({"iss": iss, "aud": "caracal", "sub": sub}),
                Err(JwtError::Expired),
            ),
            // Fractional NumericDates count; an unreadable one refuses.
            (
                json!({"iss": iss, "aud": "caracal", "sub": sub, "exp": now + 600, "nbf": (now + 60) as f64 + 0.5}),
                Err(JwtError::Expired),
            ),
            (
                json!({"iss": iss, "aud": "caracal", "sub": sub, "exp": now as f64 - 40.5}),
                Err(JwtError::Expired),
            ),
            (
                json!({"iss": iss, "aud": "caracal", "sub": sub, "exp": now + 600, "nbf": "soon"}),
                Err(JwtError::Expired),
            ),
            (
                json!({"iss": iss, "aud": "caracal", "sub": sub, "exp": (now + 600) as f64 + 0.25}),
                Ok(sub.into()),
            ),
        ];
        for (c, want) in cases {
            assert_eq!(verify(&sign_es256(&key, &c), &config, now), want, "{c}");
        }
    }

    #[test]
    fn refuses_forgeries() {
        let (key, config) = setup();
        let now = 1_700_000_000;
        let good = sign_es256(
            &key,
            &claims(
                "https://kubernetes.default.svc",
                json!("caracal"),
                now + 600,
                None,
                "s",
            ),
        );
        let (other, _) = setup();
        let foreign = sign_es256(
            &other,
            &claims(
                "https://kubernetes.default.svc",
                json!("caracal"),
                now + 600,
                None,
                "s",
            ),
        );
        assert_eq!(verify(&foreign, &config, now), Err(JwtError::Signature));
        // Swapping in another payload breaks the signature.
        let parts: Vec<&str> = good.split('.').collect();
        let forged_payload = URL_SAFE_NO_PAD.encode(r#"{"iss":"https://kubernetes.default.svc","aud":"caracal","exp":9999999999,"sub":"admin"}"#);
        assert_eq!(
            verify(
                &format!("{}.{forged_payload}.{}", parts[0], parts[2]),
                &config,
                now
            ),
            Err(JwtError::Signature)
        );
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            parts[1]
        );
        assert_eq!(
            verify(&none, &config, now),
            Err(JwtError::Algorithm("none".into()))
        );
        let hs = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256"}"#),
            parts[1],
            parts[2]
        );
        assert_eq!(
            verify(&hs, &config, now),
            Err(JwtError::Algorithm("HS256".into()))
        );
        for bad in ["", "a.b", "a.b.c.d", "!!.??.##"] {
            assert_eq!(verify(bad, &config, now), Err(JwtError::Malformed), "{bad}");
        }
        // A validly signed token with a critical extension this verifier
        // does not understand is refused (RFC 7515, 4.1.11).
        let critical = {
            use p256::ecdsa::signature::Signer;
            let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","crit":["b64"],"b64":false}"#);
            let signed = format!("{header}.{}", parts[1]);
            let signature: Signature = key.sign(signed.as_bytes());
            format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
        };
        assert_eq!(verify(&critical, &config, now), Err(JwtError::Malformed));
        // Every flipped bit in the signature is caught.
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        for i in 0..sig.len() {
            let mut s = sig.clone();
            s[i] ^= 1;
            let t = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(&s));
            assert_eq!(
                verify(&t, &config, now),
                Err(JwtError::Signature),
                "byte {i}"
            );
        }
    }

    #[test]
    fn recognises_token_shapes() {
        assert!(looks_like_jwt("eyJhbGciOiJFUzI1NiJ9.eyJ9.sig"));
        assert!(!looks_like_jwt("ck_0123"));
        assert_eq!(
            service_account_subject("team", "bot"),
            "system:serviceaccount:team:bot"
        );
    }
}
