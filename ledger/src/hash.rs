//! RFC 6962 / RFC 9162 hashing with domain separation.
//!
//! Leaves and interior nodes are hashed under different one-byte prefixes
//! (0x00 and 0x01), so a leaf can never be passed off as a node and the trees
//! `[a, b, c]` and `[a, b, c, c]` have different roots.

use sha2::{Digest, Sha256};

/// A SHA-256 digest: a leaf hash, a node hash or a tree root.
pub type Hash = [u8; 32];

/// Hash of an entry's exact stored bytes: `SHA-256(0x00 || bytes)`.
pub fn leaf_hash(bytes: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(bytes);
    h.finalize().into()
}

/// Hash of an interior node: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Plain SHA-256, used for key ids and batch ids.
pub fn sha256(bytes: &[u8]) -> Hash {
    Sha256::digest(bytes).into()
}

/// Turns a byte slice into a hash, refusing anything that is not exactly 32
/// bytes (a verifier that accepted short hashes could be fooled by truncation).
pub fn hash_from_slice(bytes: &[u8]) -> Option<Hash> {
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn leaf_and_node_are_domain_separated() {
        let a = leaf_hash(b"a");
        let b = leaf_hash(b"b");
        let mut joined = vec![];
        joined.extend_from_slice(&a);
        joined.extend_from_slice(&b);
        assert_ne!(leaf_hash(&joined), node_hash(&a, &b));
        assert_eq!(
            hex::encode(leaf_hash(&[])),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
    }

    #[test]
    fn hash_from_slice_needs_exactly_32_bytes() {
        assert!(hash_from_slice(&[0; 31]).is_none());
        assert!(hash_from_slice(&[0; 33]).is_none());
        assert!(hash_from_slice(&[0; 32]).is_some());
    }
}
