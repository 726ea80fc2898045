//! Public keys that verify service-account tokens.
//!
//! A key is bound to one algorithm by its type: a P-256 key verifies only
//! ES256 tokens and an RSA key only RS256 tokens, so a token cannot pick how
//! a key is used (the classic confusion is an RSA public key taken as an
//! HMAC secret). Keys come from PEM SubjectPublicKeyInfo files or from a JWK
//! Set (what Kubernetes serves at `/openid/v1/jwks`). Everything is checked
//! when the config is read, so a bad key stops the gateway at start rather
//! than refusing every token later.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use p256::ecdsa::{Signature, VerifyingKey, signature::Verifier};
use p256::pkcs8::{
    DecodePublicKey, ObjectIdentifier, SubjectPublicKeyInfoRef,
    der::{Decode, Reader, SliceReader, asn1::UintRef},
};
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
use serde_json::Value;

/// `rsaEncryption` (RFC 8017 appendix A.1).
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// `id-ecPublicKey` (RFC 5480 section 2.1.1).
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

/// Why a configured key cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not a PEM public key (expected BEGIN PUBLIC KEY): {0}")]
    Pem(String),
    #[error("unsupported key: {0}; use an RSA (2048 to 8192 bits) or a P-256 public key")]
    Unsupported(String),
    #[error("invalid {kind} key: {detail}")]
    Invalid { kind: &'static str, detail: String },
    #[error("not a JWK Set (a JSON object with a non-empty \"keys\" array): {0}")]
    Jwks(String),
}

fn invalid(kind: &'static str, detail: impl Into<String>) -> KeyError {
    KeyError::Invalid {
        kind,
        detail: detail.into(),
    }
}

/// An RSA public key as big-endian modulus and exponent, checked to be
/// within what `RSA_PKCS1_2048_8192_SHA256` accepts.
#[derive(Clone, PartialEq, Eq)]
pub struct RsaKey {
    n: Vec<u8>,
    e: Vec<u8>,
}

impl std::fmt::Debug for RsaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RsaKey({} bits)", bit_length(&self.n))
    }
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

fn bit_length(be: &[u8]) -> usize {
    let be = strip_zeros(be);
    be.first().map_or(0, |top| {
        (be.len() - 1) * 8 + (8 - top.leading_zeros() as usize)
    })
}

impl RsaKey {
    /// Checks what ring would otherwise only find at the first token: a
    /// modulus of 2048 to 8192 bits, and an odd exponent from 3 to 2^33 - 1.
    pub fn new(n: &[u8], e: &[u8]) -> Result<RsaKey, KeyError> {
        let (n, e) = (strip_zeros(n), strip_zeros(e));
        let bits = bit_length(n);
        if !(2048..=8192).contains(&bits) || n.last().is_some_and(|b| b % 2 == 0) {
            return Err(invalid(
                "RSA",
                format!(
                    "the modulus is {bits} bits or even; 2048 to 8192 bits and odd are accepted"
                ),
            ));
        }
        let exponent_ok = bit_length(e) <= 33
            && e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)) >= 3
            && e.last().is_some_and(|b| b % 2 == 1);
        if !exponent_ok {
            return Err(invalid(
                "RSA",
                "the public exponent must be odd, from 3 to 2^33 - 1",
            ));
        }
        Ok(RsaKey {
            n: n.to_vec(),
            e: e.to_vec(),
        })
    }

    /// Read PKCS#1 `RSAPublicKey` DER: `SEQUENCE { modulus, publicExponent }`.
    fn from_pkcs1(der: &[u8]) -> Result<RsaKey, KeyError> {
        let parse = || -> Result<(Vec<u8>, Vec<u8>), p256::pkcs8::der::Error> {
            let mut reader = SliceReader::new(der)?;
            let parts = reader.sequence(|r| {
                let n = UintRef::decode(r)?.as_bytes().to_vec();
                let e = UintRef::decode(r)?.as_bytes().to_vec();
                Ok((n, e))
            })?;
            reader.finish(parts)
        };
        let (n, e) = parse().map_err(|e| invalid("RSA", e.to_string()))?;
        RsaKey::new(&n, &e)
    }
}

/// A public key and, through its type, the one algorithm it verifies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerifyKey {
    Es256(VerifyingKey),
    Rs256(RsaKey),
}

impl From<VerifyingKey> for VerifyKey {
    fn from(key: VerifyingKey) -> Self {
        VerifyKey::Es256(key)
    }
}

impl VerifyKey {
    /// The JWS `alg` this key verifies.
    pub fn alg(&self) -> &'static str {
        match self {
            VerifyKey::Es256(_) => "ES256",
            VerifyKey::Rs256(_) => "RS256",
        }
    }

    /// Whether `signature` over `signed` verifies under this key. The
    /// caller has already matched the token's `alg` to [`Self::alg`].
    pub(crate) fn verifies(&self, signed: &[u8], signature: &[u8]) -> bool {
        match self {
            VerifyKey::Es256(key) => {
                Signature::from_slice(signature).is_ok_and(|s| key.verify(signed, &s).is_ok())
            }
            VerifyKey::Rs256(key) => RsaPublicKeyComponents {
                n: &key.n,
                e: &key.e,
            }
            .verify(&RSA_PKCS1_2048_8192_SHA256, signed, signature)
            .is_ok(),
        }
    }

    /// A PEM SubjectPublicKeyInfo (`BEGIN PUBLIC KEY`) holding an RSA or a
    /// P-256 key.
    pub fn from_pem(pem: &str) -> Result<VerifyKey, KeyError> {
        let (label, der) = p256::pkcs8::der::pem::decode_vec(pem.trim().as_bytes())
            .map_err(|e| KeyError::Pem(e.to_string()))?;
        if label != "PUBLIC KEY" {
            return Err(KeyError::Pem(format!("found BEGIN {label}")));
        }
        let info =
            SubjectPublicKeyInfoRef::from_der(&der).map_err(|e| KeyError::Pem(e.to_string()))?;
        match info.algorithm.oid {
            RSA_ENCRYPTION => {
                let bits = info
                    .subject_public_key
                    .as_bytes()
                    .ok_or_else(|| invalid("RSA", "the key bit string is not whole bytes"))?;
                Ok(VerifyKey::Rs256(RsaKey::from_pkcs1(bits)?))
            }
            EC_PUBLIC_KEY => VerifyingKey::from_public_key_der(&der)
                .map(VerifyKey::Es256)
                .map_err(|e| KeyError::Unsupported(format!("EC key not on P-256 ({e})"))),
            other => Err(KeyError::Unsupported(format!("algorithm {other}"))),
        }
    }

    /// One JWK: `kty` `RSA` with `n` and `e`, or `EC` on `P-256` with `x`
    /// and `y`. An `alg` other than the key's own, or a `use` other than
    /// `sig`, is refused rather than ignored.
    pub fn from_jwk(jwk: &Value) -> Result<VerifyKey, KeyError> {
        let field = |name: &str, kind: &'static str| -> Result<Vec<u8>, KeyError> {
            let text = jwk
                .get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(kind, format!("JWK has no \"{name}\"")))?;
            URL_SAFE_NO_PAD
                .decode(text)
                .map_err(|_| invalid(kind, format!("JWK \"{name}\" is not base64url")))
        };
        let key = match jwk.get("kty").and_then(Value::as_str) {
            Some("RSA") => VerifyKey::Rs256(RsaKey::new(&field("n", "RSA")?, &field("e", "RSA")?)?),
            Some("EC") => {
                let crv = jwk.get("crv").and_then(Value::as_str).unwrap_or_default();
                if crv != "P-256" {
                    return Err(KeyError::Unsupported(format!("EC curve {crv:?}")));
                }
                let (x, y) = (field("x", "EC")?, field("y", "EC")?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(invalid("EC", "x and y must be 32 bytes each"));
                }
                let point = [&[0x04][..], &x, &y].concat();
                VerifyingKey::from_sec1_bytes(&point)
                    .map(VerifyKey::Es256)
                    .map_err(|_| invalid("EC", "the point is not on P-256"))?
            }
            other => return Err(KeyError::Unsupported(format!("JWK kty {other:?}"))),
        };
        if let Some(alg) = jwk.get("alg").and_then(Value::as_str)
            && alg != key.alg()
        {
            return Err(KeyError::Unsupported(format!(
                "JWK alg {alg:?} on a key that verifies {}",
                key.alg()
            )));
        }
        if let Some(usage) = jwk.get("use").and_then(Value::as_str)
            && usage != "sig"
        {
            return Err(KeyError::Unsupported(format!("JWK use {usage:?}")));
        }
        Ok(key)
    }

    /// Every key of a JWK Set (`{"keys": [...]}`); any unusable key is an
    /// error naming its position.
    pub fn from_jwks(text: &str) -> Result<Vec<VerifyKey>, KeyError> {
        let set: Value = serde_json::from_str(text).map_err(|e| KeyError::Jwks(e.to_string()))?;
        let keys = set
            .get("keys")
            .and_then(Value::as_array)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| KeyError::Jwks("no keys".into()))?;
        keys.iter()
            .enumerate()
            .map(|(i, jwk)| {
                VerifyKey::from_jwk(jwk).map_err(|e| KeyError::Jwks(format!("key {i}: {e}")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const RSA_PEM: &str = include_str!("../../tests/data/rsa-test-key.pub.pem");
    const RSA_JWKS: &str = include_str!("../../tests/data/rsa-test-key.jwks.json");

    fn rsa_jwk() -> Value {
        serde_json::from_str::<Value>(RSA_JWKS).unwrap()["keys"][0].clone()
    }

    fn with(mut jwk: Value, field: &str, value: Value) -> Value {
        jwk[field] = value;
        jwk
    }

    #[test]
    fn pem_and_jwk_forms_of_one_rsa_key_agree() {
        let from_pem = VerifyKey::from_pem(RSA_PEM).unwrap();
        assert_eq!(from_pem.alg(), "RS256");
        assert_eq!(VerifyKey::from_jwks(RSA_JWKS).unwrap(), vec![from_pem]);
    }

    #[test]
    fn p256_keys_read_from_pem_and_jwk() {
        use p256::pkcs8::{EncodePublicKey, LineEnding};
        let key = *p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng).verifying_key();
        let pem = key.to_public_key_pem(LineEnding::LF).unwrap();
        assert_eq!(VerifyKey::from_pem(&pem).unwrap(), VerifyKey::Es256(key));
        let point = key.to_encoded_point(false);
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
            "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
        });
        assert_eq!(VerifyKey::from_jwk(&jwk).unwrap(), VerifyKey::Es256(key));
        let off_curve = with(jwk, "y", json!(URL_SAFE_NO_PAD.encode([7u8; 32])));
        assert!(VerifyKey::from_jwk(&off_curve).is_err());
    }

    #[test]
    fn unusable_jwks_are_refused() {
        let rsa = rsa_jwk();
        let n = URL_SAFE_NO_PAD.decode(rsa["n"].as_str().unwrap()).unwrap();
        let mut even = n.clone();
        *even.last_mut().unwrap() &= 0xfe;
        let cases = [
            with(rsa.clone(), "alg", json!("RS512")),
            with(rsa.clone(), "alg", json!("PS256")),
            with(rsa.clone(), "alg", json!("HS256")),
            with(rsa.clone(), "use", json!("enc")),
            with(rsa.clone(), "kty", json!("oct")),
            with(rsa.clone(), "n", json!(URL_SAFE_NO_PAD.encode(&n[..128]))),
            with(rsa.clone(), "n", json!(URL_SAFE_NO_PAD.encode(&even))),
            with(rsa.clone(), "n", json!("not base64!")),
            with(rsa.clone(), "e", json!(URL_SAFE_NO_PAD.encode([1u8]))),
            with(rsa.clone(), "e", json!(URL_SAFE_NO_PAD.encode([1u8, 0, 0]))),
            // 2^33 + 1: one past the largest exponent ring takes.
            with(
                rsa.clone(),
                "e",
                json!(URL_SAFE_NO_PAD.encode([2u8, 0, 0, 0, 1])),
            ),
            json!({"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"}),
            json!({"kty": "RSA", "e": "AQAB"}),
        ];
        for jwk in cases {
            assert!(VerifyKey::from_jwk(&jwk).is_err(), "{jwk}");
        }
        for set in ["{}", r#"{"keys": []}"#, "[]", "not json"] {
            assert!(VerifyKey::from_jwks(set).is_err(), "{set}");
        }
        // One bad key spoils the set: no silent skipping.
        let mixed = json!({"keys": [rsa.clone(), with(rsa, "use", json!("enc"))]});
        assert!(VerifyKey::from_jwks(&mixed.to_string()).is_err());
    }

    #[test]
    fn unusable_pems_are_refused() {
        let private = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let body: String = RSA_PEM
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let mut der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap();
        // Turn rsaEncryption (..1.1.1) into rsassa-pss (..1.1.10).
        let oid = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
        let at = der.windows(oid.len()).position(|w| w == oid).unwrap();
        der[at + oid.len() - 1] = 0x0a;
        let pss = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(&der)
        );
        for pem in [private, "", "hello", pss.as_str()] {
            assert!(VerifyKey::from_pem(pem).is_err(), "{pem}");
        }
    }
}
