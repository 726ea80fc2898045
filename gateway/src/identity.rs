//! Who is calling: virtual API keys.
//!
//! A virtual key is 256 random bits shown once (`ck_` + 64 hex digits). The
//! gateway keeps only SHA-256 digests, so a leaked config or memory dump does
//! not reveal usable keys. Lookup indexes the digest's first 8 bytes and then
//! compares the full digest in constant time. Agents send the key however
//! their SDK does: `Authorization: Bearer` (OpenAI) or `x-api-key`
//! (Anthropic); both headers are removed before anything is forwarded.

use std::collections::HashMap;

use hyper::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix that marks a Caracal virtual key.
pub const KEY_PREFIX: &str = "ck_";

/// SHA-256 of a presented key.
pub type KeyDigest = [u8; 32];

pub fn digest(key: &str) -> KeyDigest {
    Sha256::digest(key.as_bytes()).into()
}

/// Make a new random virtual key.
pub fn generate_key() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{KEY_PREFIX}{}", hex::encode(bytes))
}

/// Known key digests and the agent (`namespace/name`) each belongs to.
#[derive(Clone, Debug, Default)]
pub struct KeyTable {
    by_prefix: HashMap<[u8; 8], Vec<(KeyDigest, String)>>,
}

impl KeyTable {
    pub fn new(entries: impl IntoIterator<Item = (KeyDigest, String)>) -> Self {
        let mut by_prefix: HashMap<[u8; 8], Vec<(KeyDigest, String)>> = HashMap::new();
        for (digest, agent) in entries {
            let mut prefix = [0u8; 8];
            prefix.copy_from_slice(&digest[..8]);
            by_prefix.entry(prefix).or_default().push((digest, agent));
        }
        KeyTable { by_prefix }
    }

    /// The agent a presented key belongs to.
    pub fn agent_for(&self, key: &str) -> Option<&str> {
        let presented = digest(key);
        let mut prefix = [0u8; 8];
        prefix.copy_from_slice(&presented[..8]);
        let mut found = None;
        for (known, agent) in self.by_prefix.get(&prefix)? {
            if bool::from(known.ct_eq(&presented)) {
                found = Some(agent.as_str());
            }
        }
        found
    }

    pub fn len(&self) -> usize {
        self.by_prefix.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_prefix.is_empty()
    }
}

/// The credential a client presented, if any: `Authorization: Bearer X`
/// wins over `x-api-key: X`.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(auth) = headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, token) = auth.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim())
            .filter(|t| !t.is_empty());
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // table tests spell out their rows
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn keys_resolve_only_to_their_agent() {
        let a = generate_key();
        let b = generate_key();
        assert!(a.starts_with(KEY_PREFIX) && a.len() == 3 + 64);
        assert_ne!(a, b);
        let table = KeyTable::new([
            (digest(&a), "team/a".to_owned()),
            (digest(&b), "team/b".to_owned()),
        ]);
        assert_eq!(table.len(), 2);
        assert_eq!(table.agent_for(&a), Some("team/a"));
        assert_eq!(table.agent_for(&b), Some("team/b"));
        assert_eq!(table.agent_for(&a[..a.len() - 1]), None);
        assert_eq!(table.agent_for(""), None);
    }

    #[test]
    fn credentials_are_read_from_either_header() {
        let cases: Vec<(Vec<(&str, &str)>, Option<&str>)> = vec![
            (vec![("authorization", "Bearer ck_1")], Some("ck_1")),
            (vec![("authorization", "bearer  ck_1 ")], Some("ck_1")),
            (vec![("x-api-key", "ck_2")], Some("ck_2")),
            (
                vec![("authorization", "Bearer ck_1"), ("x-api-key", "ck_2")],
                Some("ck_1"),
            ),
            (vec![("authorization", "Basic abc")], None),
            (vec![("authorization", "Bearer ")], None),
            (vec![("x-api-key", "")], None),
            (vec![], None),
        ];
        for (headers, want) in cases {
            let mut map = HeaderMap::new();
            for (k, v) in &headers {
                map.insert(*k, HeaderValue::from_str(v).unwrap());
            }
            assert_eq!(presented_key(&map), want, "{headers:?}");
        }
    }
}
