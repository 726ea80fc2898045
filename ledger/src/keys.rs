//! ECDSA P-256 keys for checkpoints (the log key) and batches (gateway keys).
//!
//! A key is named and identified the way C2SP signed notes expect for
//! signature type 0x02 in this project: the key id is the first 4 bytes of
//! SHA-256 over the public key's SubjectPublicKeyInfo DER, and the verifier
//! key string is `name+hex(keyid)+base64(0x02 || SPKI DER)`. Rotation means
//! signing with a new key under the same name: old checkpoints keep their old
//! key id, so a verifier holding every public key can still check them.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use p256::ecdsa::{SigningKey, VerifyingKey};
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};

use crate::hash::sha256;

/// The signature type byte for ECDSA P-256 with SHA-256 in signed notes.
pub const SIG_TYPE_ECDSA_P256: u8 = 0x02;

/// Key problems: bad files, bad strings, bad signatures.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key name {0:?} is empty or contains '+' or whitespace")]
    BadName(String),
    #[error("private key PEM could not be read (PKCS#8 P-256 expected): {0}")]
    BadPrivateKey(String),
    #[error("verifier key string is malformed: {0}")]
    BadVerifierKey(String),
    #[error("signature does not verify")]
    BadSignature,
}

/// A 4-byte key id.
pub type KeyId = [u8; 4];

fn check_name(name: &str) -> Result<(), KeyError> {
    if name.is_empty() || name.contains('+') || name.chars().any(char::is_whitespace) {
        return Err(KeyError::BadName(name.to_string()));
    }
    Ok(())
}

fn spki_der(key: &VerifyingKey) -> Vec<u8> {
    key.to_public_key_der()
        .expect("a P-256 point always encodes as SPKI")
        .as_bytes()
        .to_vec()
}

/// A named private key. Debug output never shows the secret.
///
/// The key is held twice: as a `p256` key (PEM files, public key encoding)
/// and as a `ring` key pair, which signs several times faster (assembly
/// field arithmetic); signing runs once per batch and once per checkpoint.
#[derive(Clone)]
pub struct KeyPair {
    name: String,
    secret: SigningKey,
    signer: std::sync::Arc<ring::signature::EcdsaKeyPair>,
    public: PublicKey,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public.to_vkey())
            .finish()
    }
}

impl KeyPair {
    /// A fresh random key from the operating system's generator.
    pub fn generate(name: &str) -> Result<Self, KeyError> {
        let secret = SigningKey::random(&mut rand::rngs::OsRng);
        Self::from_signing_key(name, secret)
    }

    /// Loads a PKCS#8 PEM private key ("BEGIN PRIVATE KEY").
    pub fn from_pem(name: &str, pem: &str) -> Result<Self, KeyError> {
        let secret =
            SigningKey::from_pkcs8_pem(pem).map_err(|e| KeyError::BadPrivateKey(e.to_string()))?;
        Self::from_signing_key(name, secret)
    }

    fn from_signing_key(name: &str, secret: SigningKey) -> Result<Self, KeyError> {
        check_name(name)?;
        let public = PublicKey::new(name, *secret.verifying_key())?;
        let point = secret.verifying_key().to_encoded_point(false);
        let signer = ring::signature::EcdsaKeyPair::from_private_key_and_public_key(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &secret.to_bytes(),
            point.as_bytes(),
            &ring::rand::SystemRandom::new(),
        )
        .map_err(|e| KeyError::BadPrivateKey(e.to_string()))?;
        Ok(Self {
            name: name.to_string(),
            secret,
            signer: std::sync::Arc::new(signer),
            public,
        })
    }

    /// The private key as PKCS#8 PEM, for saving to a file.
    pub fn to_pem(&self) -> String {
        self.secret
            .to_pkcs8_pem(LineEnding::LF)
            .expect("a P-256 key always encodes as PKCS#8")
            .to_string()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    pub fn key_id(&self) -> KeyId {
        self.public.key_id
    }

    /// ECDSA P-256 over SHA-256(message), DER encoded. The nonce is random
    /// (from the operating system), so signing the same message twice gives
    /// two different signatures, both valid.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.signer
            .sign(&ring::rand::SystemRandom::new(), message)
            .expect("signing with a valid P-256 key pair and the system generator")
            .as_ref()
            .to_vec()
    }
}

/// A named public key with its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    name: String,
    key_id: KeyId,
    key: VerifyingKey,
}

impl PublicKey {
    fn new(name: &str, key: VerifyingKey) -> Result<Self, KeyError> {
        check_name(name)?;
        let der = spki_der(&key);
        let digest = sha256(&der);
        let key_id = [digest[0], digest[1], digest[2], digest[3]];
        Ok(Self {
            name: name.to_string(),
            key_id,
            key,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// `name+hex(keyid)+base64(0x02 || SPKI DER)`.
    pub fn to_vkey(&self) -> String {
        let mut blob = vec![SIG_TYPE_ECDSA_P256];
        blob.extend_from_slice(&spki_der(&self.key));
        format!(
            "{}+{}+{}",
            self.name,
            hex::encode(self.key_id),
            STANDARD.encode(blob)
        )
    }

    /// Parses a verifier key string and checks that its key id matches its key.
    pub fn from_vkey(vkey: &str) -> Result<Self, KeyError> {
        let bad = |why: &str| KeyError::BadVerifierKey(format!("{why}: {vkey:?}"));
        let mut parts = vkey.trim().splitn(3, '+');
        let (Some(name), Some(id_hex), Some(blob_b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected name+keyid+key"));
        };
        let blob = STANDARD
            .decode(blob_b64)
            .map_err(|_| bad("key is not base64"))?;
        let Some((&SIG_TYPE_ECDSA_P256, der)) = blob.split_first() else {
            return Err(bad("key type is not 0x02 (ECDSA P-256)"));
        };
        let key = VerifyingKey::from_public_key_der(der).map_err(|_| bad("not a P-256 SPKI"))?;
        let public = Self::new(name, key)?;
        if hex::encode(public.key_id) != id_hex.to_ascii_lowercase() {
            return Err(bad("key id does not match the key"));
        }
        Ok(public)
    }

    /// Checks a DER ECDSA signature over `message`. The check itself is
    /// ring's (assembly field arithmetic, several times faster than `p256`'s;
    /// a full verification checks every batch and checkpoint signature).
    pub fn verify(&self, message: &[u8], der_signature: &[u8]) -> Result<(), KeyError> {
        let point = self.key.to_encoded_point(false);
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_ASN1,
            point.as_bytes(),
        )
        .verify(message, der_signature)
        .map_err(|_| KeyError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vkey_round_trips_and_key_id_is_spki_digest_prefix() {
        let pair = KeyPair::generate("caracal.dev/test").unwrap();
        let vkey = pair.public().to_vkey();
        let parsed = PublicKey::from_vkey(&vkey).unwrap();
        assert_eq!(&parsed, pair.public());
        let der = spki_der(&parsed.key);
        assert_eq!(&sha256(&der)[..4], &parsed.key_id()[..]);
        assert!(vkey.starts_with(&format!("caracal.dev/test+{}+", hex::encode(pair.key_id()))));
    }

    #[test]
    fn vkey_with_wrong_key_id_is_refused() {
        let pair = KeyPair::generate("log").unwrap();
        let vkey = pair.public().to_vkey();
        let forged = format!("log+00000000+{}", vkey.rsplit('+').next().unwrap());
        assert!(PublicKey::from_vkey(&forged).is_err());
        assert!(PublicKey::from_vkey("log+abcd").is_err());
    }

    #[test]
    fn pem_round_trip_and_signatures() {
        let pair = KeyPair::generate("gw-1").unwrap();
        let again = KeyPair::from_pem("gw-1", &pair.to_pem()).unwrap();
        assert_eq!(again.public(), pair.public());
        let sig = again.sign(b"hello");
        pair.public().verify(b"hello", &sig).unwrap();
        assert!(pair.public().verify(b"hellO", &sig).is_err());
        let other = KeyPair::generate("gw-1").unwrap();
        assert!(other.public().verify(b"hello", &sig).is_err());
    }

    /// Signing (ring) and verifying (ring) share a library, so check the
    /// signatures against the independent `p256` implementation too: a
    /// third-party verifier must accept them.
    #[test]
    fn signatures_verify_with_an_independent_implementation() {
        use p256::ecdsa::{DerSignature, signature::Verifier};
        let pair = KeyPair::generate("log").unwrap();
        let message = b"caracal.dev/log\n7\nroot\n";
        let first = pair.sign(message);
        let second = pair.sign(message);
        assert_ne!(first, second, "nonces are random, so signatures differ");
        for der in [first, second] {
            let sig = DerSignature::try_from(der.as_slice()).unwrap();
            pair.public().key.verify(message, &sig).unwrap();
            assert!(pair.public().key.verify(b"other", &sig).is_err());
        }
    }

    #[test]
    fn names_with_plus_or_space_are_refused() {
        assert!(KeyPair::generate("a+b").is_err());
        assert!(KeyPair::generate("a b").is_err());
        assert!(KeyPair::generate("").is_err());
    }
}
