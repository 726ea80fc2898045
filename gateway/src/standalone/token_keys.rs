//! Following the token issuer's key rotation without a restart: when a key
//! file of `serviceAccountTokens` changes, every key file is read again and,
//! if all of them can be used, the gateway checks tokens with the new keys.
//! If one cannot (half-written, wrong format), the error is logged with the
//! file's name and the previous keys stay in force.

use std::{path::PathBuf, sync::Arc, time::Duration};

use super::file_config::GatewayFile;
use crate::jwt::JwtVerifier;

/// Watch `file`'s token key files (checked every `every`) and put what they
/// hold into `verifier`. `None` when the file has no token section.
pub fn watch(
    file: GatewayFile,
    config_path: PathBuf,
    verifier: Arc<JwtVerifier>,
    every: Duration,
) -> Option<tokio::task::JoinHandle<()>> {
    let files = file.token_key_files(&config_path);
    if files.is_empty() {
        return None;
    }
    Some(crate::file_watch::watch(files, every, move || {
        match file.jwt_config(&config_path) {
            Ok(Some(config)) => {
                let keys = config.keys.len();
                verifier.replace(config);
                tracing::info!(
                    keys,
                    "token key files changed; now checking tokens with them"
                );
            }
            Ok(None) => {}
            Err(e) => tracing::error!(
                error = %e,
                "token key files changed but cannot be used; still checking tokens with the previous keys"
            ),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::{self, JwtError};
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    use p256::ecdsa::SigningKey;
    use serde_json::json;

    /// A JWK Set holding `key`'s public half.
    fn jwks(key: &SigningKey) -> String {
        let point = key.verifying_key().to_encoded_point(false);
        json!({"keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "k",
            "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
            "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
        }]})
        .to_string()
    }

    fn token(key: &SigningKey) -> String {
        let now = chrono::Utc::now().timestamp();
        jwt::sign_es256(
            key,
            &json!({"iss": "https://issuer", "aud": ["caracal"], "sub": "system:serviceaccount:team:bot",
                    "iat": now, "exp": now + 600}),
        )
    }

    #[tokio::test]
    async fn rotated_keys_are_used_and_unusable_files_keep_the_previous_ones() {
        let dir = std::env::temp_dir().join(format!(
            "caracal-token-keys-{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let config_path = dir.join("gateway.yaml");
        let text = "providers: []\nserviceAccountTokens:\n  issuer: https://issuer\n  jwksFiles: [jwks.json]\n";
        let file = GatewayFile::parse(text, &config_path).unwrap();
        let (old, new) = (
            SigningKey::random(&mut rand::rngs::OsRng),
            SigningKey::random(&mut rand::rngs::OsRng),
        );
        std::fs::write(dir.join("jwks.json"), jwks(&old)).unwrap();
        let verifier = Arc::new(JwtVerifier::new(
            file.jwt_config(&config_path).unwrap().unwrap(),
        ));
        let now = chrono::Utc::now().timestamp();
        let checks = |key: &SigningKey| jwt::verify(&token(key), &verifier.current(), now);
        assert!(checks(&old).is_ok());
        assert_eq!(checks(&new), Err(JwtError::Signature));

        let task = watch(
            file,
            config_path,
            verifier.clone(),
            Duration::from_millis(10),
        )
        .unwrap();
        // The issuer rotates: the saved JWK Set now holds the new key only.
        std::fs::write(dir.join("jwks.json"), jwks(&new)).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while checks(&new).is_err() {
            assert!(std::time::Instant::now() < deadline, "new key not taken");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(checks(&old), Err(JwtError::Signature));

        // A broken file is not taken: the new key keeps working.
        std::fs::write(dir.join("jwks.json"), "{\"keys\": [").unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(checks(&new).is_ok());
        task.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
