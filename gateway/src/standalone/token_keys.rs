//! Following the token issuer's key rotation without a restart. Keys come
//! from files, from the issuer's JWK Set URL, or both; tokens are checked
//! against all of them.
//!
//! - When a key file changes, every key file is read again and, if all of
//!   them can be used, their keys replace the previous file keys.
//! - The URL is fetched at start and every refresh period; a fetch that
//!   fails (unreachable, bad status, a key that cannot be used) keeps the
//!   keys of the last good fetch and is tried again sooner. A token whose
//!   signature matches no key brings the next fetch forward (at most one
//!   such early fetch per [`EARLY_FETCH_GAP`]): the issuer may have started
//!   signing with a new key. That token itself is still refused.
//!
//! Every failure is logged with its cause; nothing half-read is ever used.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use super::{SetupError, file_config::GatewayFile};
use crate::jwt::{JwtVerifier, VerifyKey, fetch::JwksUrl};

/// After a failed fetch, the next try comes this soon (or at the refresh
/// period, if that is shorter).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// A fetch brought forward by an unknown key comes at least this long after
/// the previous fetch, so a stream of bad tokens cannot hammer the issuer.
const EARLY_FETCH_GAP: Duration = Duration::from_secs(30);

/// The keys from each source, merged into the verifier.
struct Sources {
    verifier: Arc<JwtVerifier>,
    keys: Mutex<SourceKeys>,
}

#[derive(Default)]
struct SourceKeys {
    from_files: Vec<VerifyKey>,
    from_url: Vec<VerifyKey>,
}

impl Sources {
    fn new(verifier: Arc<JwtVerifier>, from_files: Vec<VerifyKey>) -> Sources {
        Sources {
            verifier,
            keys: Mutex::new(SourceKeys {
                from_files,
                from_url: Vec::new(),
            }),
        }
    }

    /// Change one source's keys and put all keys in force. The lock is held
    /// until the verifier has them, so two sources changing at once cannot
    /// leave either one's older keys in force.
    fn update(&self, change: impl FnOnce(&mut SourceKeys)) {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        change(&mut keys);
        let mut config = (*self.verifier.current()).clone();
        config.keys = keys
            .from_files
            .iter()
            .chain(&keys.from_url)
            .cloned()
            .collect();
        self.verifier.replace(config);
    }
}

/// Keep `verifier`'s keys current from `file`'s token key sources: key
/// files checked for changes every `every`, the JWK Set URL fetched as
/// configured. `verifier` must start with the file keys (as
/// [`GatewayFile::jwt_config`] reads them). Returns the tasks started.
pub fn watch(
    file: GatewayFile,
    config_path: PathBuf,
    verifier: Arc<JwtVerifier>,
    every: Duration,
) -> Result<Vec<tokio::task::JoinHandle<()>>, SetupError> {
    let url = file.jwks_url(&config_path)?;
    let from_files = verifier.current().keys.clone();
    let sources = Arc::new(Sources::new(verifier, from_files));
    let mut tasks = Vec::new();
    let files = file.token_key_files(&config_path);
    if !files.is_empty() {
        let sources = sources.clone();
        tasks.push(crate::file_watch::watch(files, every, move || {
            match file.jwt_config(&config_path) {
                Ok(Some(config)) => {
                    let keys = config.keys.len();
                    sources.update(|k| k.from_files = config.keys);
                    tracing::info!(keys, "token key files changed; now checking tokens with them");
                }
                Ok(None) => {}
                Err(e) => tracing::error!(
                    error = %e,
                    "token key files changed but cannot be used; still checking tokens with the previous keys"
                ),
            }
        }));
    }
    if let Some((url, refresh)) = url {
        tasks.push(tokio::spawn(refresh_forever(
            url,
            refresh,
            EARLY_FETCH_GAP,
            sources,
        )));
    }
    Ok(tasks)
}

/// Fetch `url` now and then every `refresh` (sooner after a failure, or
/// `early_gap` after the last fetch once a token matched no key).
async fn refresh_forever(
    url: JwksUrl,
    refresh: Duration,
    early_gap: Duration,
    sources: Arc<Sources>,
) {
    let mut healthy = false;
    loop {
        let wait = match url.fetch().await {
            Ok(keys) => {
                if !healthy {
                    tracing::info!(url = %url.url, keys = keys.len(), "token keys fetched");
                }
                healthy = true;
                sources.update(|k| k.from_url = keys);
                refresh
            }
            Err(e) => {
                // The keys of the last good fetch stay in force.
                tracing::error!(error = %e, "could not fetch the token issuer's keys; will retry");
                healthy = false;
                refresh.min(RETRY_AFTER_FAILURE)
            }
        };
        let verifier = sources.verifier.clone();
        let unknown_key = async {
            tokio::time::sleep(early_gap).await;
            verifier.key_missed().await;
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = unknown_key => {
                tracing::info!("a token matched none of the issuer's keys; fetching them early");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::{self, JwtError};
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    use p256::ecdsa::SigningKey;
    use serde_json::json;
    use std::sync::Mutex;

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

    /// A new, empty directory for one test.
    fn fresh_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "{name}-{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
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
        let dir = fresh_dir("caracal-token-keys");
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

        let tasks = watch(
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
        tasks.iter().for_each(|t| t.abort());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Wait (up to 10 s) until `done`, failing with `what`.
    async fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What the fake issuer answers: status and body, and the
    /// `Authorization` headers it was sent.
    #[derive(Default)]
    struct Issuer {
        status: u16,
        body: String,
        /// Served at `/.well-known/openid-configuration` when set.
        openid_configuration: Option<String>,
        authorizations: Vec<String>,
        /// Each request's path and whether it carried `Authorization`.
        requests: Vec<(String, bool)>,
    }

    /// A JWK Set server on loopback answering from `issuer`.
    async fn serve_jwks(issuer: Arc<Mutex<Issuer>>) -> String {
        use hyper::{Response, body::Incoming, server::conn::http1, service::service_fn};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/openid/v1/jwks", listener.local_addr().unwrap());
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let issuer = issuer.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<Incoming>| {
                        let mut issuer = issuer.lock().unwrap();
                        let auth = req.headers().get("authorization");
                        if let Some(auth) = auth {
                            issuer
                                .authorizations
                                .push(auth.to_str().unwrap().to_owned());
                        }
                        let path = req.uri().path().to_owned();
                        issuer.requests.push((path.clone(), auth.is_some()));
                        let body = match &issuer.openid_configuration {
                            Some(doc) if path == "/.well-known/openid-configuration" => doc.clone(),
                            _ => issuer.body.clone(),
                        };
                        let response = Response::builder()
                            .status(issuer.status)
                            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                            .unwrap();
                        async move { Ok::<_, std::convert::Infallible>(response) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        url
    }

    #[tokio::test]
    async fn keys_from_the_jwks_url_are_refreshed_and_kept_through_failures() {
        let dir = fresh_dir("caracal-jwks-url");
        let (file_key, first, second) = (
            SigningKey::random(&mut rand::rngs::OsRng),
            SigningKey::random(&mut rand::rngs::OsRng),
            SigningKey::random(&mut rand::rngs::OsRng),
        );
        std::fs::write(dir.join("saved.json"), jwks(&file_key)).unwrap();
        std::fs::write(dir.join("token"), "gateway-token\n").unwrap();
        let issuer = Arc::new(Mutex::new(Issuer {
            status: 200,
            body: jwks(&first),
            ..Issuer::default()
        }));
        let url = serve_jwks(issuer.clone()).await;
        let config_path = dir.join("gateway.yaml");
        let text = format!(
            "providers: []\nserviceAccountTokens:\n  issuer: https://issuer\n  jwksFiles: [saved.json]\n  jwksUrl: {url}\n  jwksBearerTokenFile: token\n  jwksRefreshSeconds: 1\n"
        );
        let file = GatewayFile::parse(&text, &config_path).unwrap();
        let verifier = Arc::new(JwtVerifier::new(
            file.jwt_config(&config_path).unwrap().unwrap(),
        ));
        let now = chrono::Utc::now().timestamp();
        let checks = |key: &SigningKey| jwt::verify(&token(key), &verifier.current(), now).is_ok();
        let tasks = watch(file, config_path, verifier.clone(), Duration::from_secs(60)).unwrap();
        until("the first fetch", || checks(&first)).await;
        // Keys from files and from the URL are both in force.
        assert!(checks(&file_key));
        assert!(!checks(&second));
        assert_eq!(
            issuer.lock().unwrap().authorizations[0],
            "Bearer gateway-token"
        );

        // The issuer rotates; the next refresh takes the new set.
        issuer.lock().unwrap().body = jwks(&second);
        until("the rotated key", || checks(&second)).await;
        assert!(!checks(&first), "the old URL key is gone");
        assert!(checks(&file_key));

        // The issuer fails: the last good keys stay.
        let fetches = issuer.lock().unwrap().authorizations.len();
        issuer.lock().unwrap().status = 503;
        until("a failed fetch", || {
            issuer.lock().unwrap().authorizations.len() > fetches
        })
        .await;
        assert!(checks(&second) && checks(&file_key));
        tasks.iter().for_each(|t| t.abort());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_token_with_an_unknown_key_brings_the_next_fetch_forward() {
        let (first, second) = (
            SigningKey::random(&mut rand::rngs::OsRng),
            SigningKey::random(&mut rand::rngs::OsRng),
        );
        let issuer = Arc::new(Mutex::new(Issuer {
            status: 200,
            body: jwks(&first),
            ..Issuer::default()
        }));
        let url = serve_jwks(issuer.clone()).await;
        let path = std::path::Path::new("/nowhere/gateway.yaml");
        let text = format!(
            "providers: []\nserviceAccountTokens:\n  issuer: https://issuer\n  jwksUrl: {url}\n"
        );
        let file = GatewayFile::parse(&text, path).unwrap();
        let verifier = Arc::new(JwtVerifier::new(file.jwt_config(path).unwrap().unwrap()));
        let sources = Arc::new(Sources::new(verifier.clone(), Vec::new()));
        let (source, _) = file.jwks_url(path).unwrap().unwrap();
        // Periodic refresh far away; early fetches allowed 50 ms apart.
        let task = tokio::spawn(refresh_forever(
            source,
            Duration::from_secs(3600),
            Duration::from_millis(50),
            sources,
        ));
        let now = chrono::Utc::now().timestamp();
        // Polled without signalling misses (the free function).
        let quietly = |key: &SigningKey| jwt::verify(&token(key), &verifier.current(), now);
        until("the first fetch", || quietly(&first).is_ok()).await;
        issuer.lock().unwrap().body = jwks(&second);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            issuer.lock().unwrap().requests.len(),
            1,
            "no miss, no fetch"
        );
        // The first token with the new key is refused, and triggers a fetch.
        assert_eq!(
            verifier.verify(&token(&second), now),
            Err(JwtError::Signature)
        );
        until("the early fetch", || quietly(&second).is_ok()).await;
        assert_eq!(issuer.lock().unwrap().requests.len(), 2);
        task.abort();
    }

    #[tokio::test]
    async fn discovery_reads_the_jwks_uri_of_the_named_issuer_only() {
        use crate::jwt::fetch::{FetchError, JwksUrl};
        let key = SigningKey::random(&mut rand::rngs::OsRng);
        let issuer = Arc::new(Mutex::new(Issuer {
            status: 200,
            body: jwks(&key),
            ..Issuer::default()
        }));
        let jwks_url = serve_jwks(issuer.clone()).await;
        let base = jwks_url.trim_end_matches("/openid/v1/jwks").to_owned();
        let token_file =
            std::env::temp_dir().join(format!("caracal-discovery-token-{}", std::process::id()));
        std::fs::write(&token_file, "t0ken").unwrap();
        let source =
            JwksUrl::discover(&format!("{base}/"), None, Some(token_file.clone())).unwrap();
        let document = |issuer_name: &str, jwks_uri: &str| {
            json!({"issuer": issuer_name, "jwks_uri": jwks_uri}).to_string()
        };

        // The document names the configured issuer: its jwks_uri is used,
        // with the token, since it is on the same host and port.
        issuer.lock().unwrap().openid_configuration =
            Some(document(&format!("{base}/"), &jwks_url));
        assert_eq!(source.fetch().await.unwrap().len(), 1);
        assert_eq!(
            issuer.lock().unwrap().requests,
            [
                ("/.well-known/openid-configuration".to_owned(), true),
                ("/openid/v1/jwks".to_owned(), true)
            ]
        );

        // A jwks_uri on another authority gets no token.
        issuer.lock().unwrap().requests.clear();
        let elsewhere = jwks_url.replace("127.0.0.1", "localhost");
        issuer.lock().unwrap().openid_configuration =
            Some(document(&format!("{base}/"), &elsewhere));
        assert_eq!(source.fetch().await.unwrap().len(), 1);
        assert_eq!(
            issuer.lock().unwrap().requests[1],
            ("/openid/v1/jwks".to_owned(), false)
        );

        // Another issuer's document, or a jwks_uri in the clear elsewhere, is refused.
        for (name, uri, needle) in [
            ("https://someone-else/", jwks_url.as_str(), "names issuer"),
            (
                &format!("{base}/")[..],
                "http://keys.example.com/jwks",
                "must be https",
            ),
        ] {
            issuer.lock().unwrap().openid_configuration = Some(document(name, uri));
            match source.fetch().await {
                Err(e @ FetchError::Discovery { .. }) => {
                    assert!(e.to_string().contains(needle), "{e}")
                }
                other => panic!("expected a discovery error, got {other:?}"),
            }
        }
        let _ = std::fs::remove_file(&token_file);
    }

    #[test]
    fn a_jwks_url_alone_is_a_key_source_and_plain_http_elsewhere_is_refused() {
        let path = std::path::Path::new("/etc/caracal/gateway.yaml");
        let only_url = "providers: []\nserviceAccountTokens:\n  issuer: https://issuer\n  jwksUrl: https://kubernetes.default.svc/openid/v1/jwks\n  jwksCaFile: ca.crt\n";
        let file = GatewayFile::parse(only_url, path).unwrap();
        assert!(file.jwt_config(path).unwrap().unwrap().keys.is_empty());
        let (url, refresh) = file.jwks_url(path).unwrap().unwrap();
        assert_eq!(refresh, Duration::from_secs(300));
        assert_eq!(
            url.ca_file.as_deref(),
            Some(std::path::Path::new("/etc/caracal/ca.crt"))
        );
        let clear = only_url.replace("https://kubernetes", "http://kubernetes");
        let err = GatewayFile::parse(&clear, path)
            .unwrap()
            .jwks_url(path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("must be https"), "{err}");
        let never = format!("{only_url}  jwksRefreshSeconds: 0\n");
        assert!(
            GatewayFile::parse(&never, path)
                .unwrap()
                .jwks_url(path)
                .is_err()
        );
    }
}
