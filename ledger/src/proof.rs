//! Inclusion and consistency proofs (RFC 6962 section 2.1, RFC 9162 section 2.1).
//!
//! Generation is split in two so it works over any node store: the functions
//! here say *which* subtree hashes a proof consists of (as leaf ranges), and
//! [`crate::tree::range_hash`] turns each range into a hash from stored nodes.
//! Verification needs only hashes and sizes; it never trusts the prover.

use crate::hash::{Hash, hash_from_slice, node_hash};
use crate::tree::{LeafRange, split_point};

/// Why a proof was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("old size {old} is larger than new size {new}")]
    SizesOutOfOrder { old: u64, new: u64 },
    #[error("a consistency proof from an empty tree is not defined")]
    EmptyOldTree,
    #[error("proof has the wrong number of hashes for these sizes")]
    WrongLength,
    #[error("proof does not lead to the expected root")]
    RootMismatch,
    #[error("a hash is not exactly 32 bytes")]
    BadHashLength,
}

/// The subtrees whose hashes make up the audit path of leaf `index` in a tree
/// of `size` leaves, in proof order (`PATH(m, D[0:n])`).
pub fn inclusion_ranges(index: u64, size: u64) -> Option<Vec<LeafRange>> {
    if index >= size {
        return None;
    }
    let mut out = Vec::new();
    path(index, 0, size, &mut out);
    Some(out)
}

fn path(m: u64, start: u64, end: u64, out: &mut Vec<LeafRange>) {
    let n = end - start;
    if n <= 1 {
        return;
    }
    let k = split_point(n);
    if m < k {
        path(m, start, start + k, out);
        out.push(LeafRange {
            start: start + k,
            end,
        });
    } else {
        path(m - k, start + k, end, out);
        out.push(LeafRange {
            start,
            end: start + k,
        });
    }
}

/// The subtrees whose hashes make up the consistency proof from `old` to `new`
/// leaves (`PROOF(m, D[0:n])`). Empty when `old == new`; `None` when the sizes
/// admit no proof (`old == 0` or `old > new`).
pub fn consistency_ranges(old: u64, new: u64) -> Option<Vec<LeafRange>> {
    if old == 0 || old > new {
        return None;
    }
    let mut out = Vec::new();
    if old < new {
        subproof(old, 0, new, true, &mut out);
    }
    Some(out)
}

fn subproof(m: u64, start: u64, end: u64, complete: bool, out: &mut Vec<LeafRange>) {
    let n = end - start;
    if m == n {
        if !complete {
            out.push(LeafRange { start, end });
        }
        return;
    }
    let k = split_point(n);
    if m <= k {
        subproof(m, start, start + k, complete, out);
        out.push(LeafRange {
            start: start + k,
            end,
        });
    } else {
        subproof(m - k, start + k, end, false, out);
        out.push(LeafRange {
            start,
            end: start + k,
        });
    }
}

/// Checks that `leaf` is at `index` in the tree of `size` leaves with `root`
/// (RFC 9162 section 2.1.3.2).
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut f = index;
    let mut s = size - 1;
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return Err(ProofError::WrongLength);
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::WrongLength);
    }
    if r != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// The checks both consistency verifiers make before any hashing. `Some` is
/// the final answer: an error for impossible sizes, or, for equal sizes, an
/// empty proof with roots that compare equal.
fn consistency_precheck(
    old: u64,
    new: u64,
    proof_len: usize,
    roots_equal: impl FnOnce() -> bool,
) -> Option<Result<(), ProofError>> {
    if old == 0 {
        return Some(Err(ProofError::EmptyOldTree));
    }
    if old > new {
        return Some(Err(ProofError::SizesOutOfOrder { old, new }));
    }
    if old == new {
        return Some(if proof_len != 0 {
            Err(ProofError::WrongLength)
        } else if roots_equal() {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        });
    }
    None
}

/// Checks that the tree of `old` leaves with `old_root` is a prefix of the
/// tree of `new` leaves with `new_root` (RFC 9162 section 2.1.4.2).
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if let Some(answer) = consistency_precheck(old, new, proof.len(), || old_root == new_root) {
        return answer;
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return Err(ProofError::WrongLength);
    };
    let mut f = old - 1;
    let mut s = new - 1;
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let mut fr = *first;
    let mut sr = *first;
    for c in rest {
        if s == 0 {
            return Err(ProofError::WrongLength);
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::WrongLength);
    }
    if fr != *old_root || sr != *new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// [`verify_inclusion`] over untrusted byte strings: every hash must be
/// exactly 32 bytes (a short hash is refused, never padded).
pub fn verify_inclusion_bytes(
    index: u64,
    size: u64,
    leaf: &[u8],
    proof: &[Vec<u8>],
    root: &[u8],
) -> Result<(), ProofError> {
    let leaf = hash_from_slice(leaf).ok_or(ProofError::BadHashLength)?;
    let root = hash_from_slice(root).ok_or(ProofError::BadHashLength)?;
    let proof = hashes(proof)?;
    verify_inclusion(index, size, &leaf, &proof, &root)
}

/// [`verify_consistency`] over untrusted byte strings. Sizes are checked
/// first; equal sizes need an empty proof and byte-equal roots (there is
/// nothing to hash, so the roots are compared as given); otherwise every hash
/// must be exactly 32 bytes.
pub fn verify_consistency_bytes(
    old: u64,
    new: u64,
    old_root: &[u8],
    new_root: &[u8],
    proof: &[Vec<u8>],
) -> Result<(), ProofError> {
    if let Some(answer) = consistency_precheck(old, new, proof.len(), || old_root == new_root) {
        return answer;
    }
    let old_root = hash_from_slice(old_root).ok_or(ProofError::BadHashLength)?;
    let new_root = hash_from_slice(new_root).ok_or(ProofError::BadHashLength)?;
    verify_consistency(old, new, &old_root, &new_root, &hashes(proof)?)
}

fn hashes(proof: &[Vec<u8>]) -> Result<Vec<Hash>, ProofError> {
    proof
        .iter()
        .map(|p| hash_from_slice(p).ok_or(ProofError::BadHashLength))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::leaf_hash;
    use crate::tree::MemoryTree;

    /// The RFC 6962 definitions written as literally as possible, over a leaf
    /// list, as an independent reference for the node-store implementation.
    /// The RFC 6962 definitions written as literally as possible, over a leaf
    /// list, as an independent reference for the node-store implementation.
    /// `MTH` is memoised by leaf range only so the exhaustive test runs quickly
    /// in debug builds; the recursion is the RFC's.
    mod naive {
        use super::*;
        use std::collections::HashMap;

        pub struct Naive<'a> {
            pub leaves: &'a [Hash],
            memo: HashMap<(usize, usize), Hash>,
        }

        impl<'a> Naive<'a> {
            pub fn new(leaves: &'a [Hash]) -> Self {
                Self {
                    leaves,
                    memo: HashMap::new(),
                }
            }

            /// MTH(D[a:b]).
            pub fn mth(&mut self, a: usize, b: usize) -> Hash {
                if let Some(h) = self.memo.get(&(a, b)) {
                    return *h;
                }
                let h = match b - a {
                    0 => crate::hash::empty_root(),
                    1 => self.leaves[a],
                    n => {
                        let k = split_point(n as u64) as usize;
                        node_hash(&self.mth(a, a + k), &self.mth(a + k, b))
                    }
                };
                self.memo.insert((a, b), h);
                h
            }

            /// PATH(m, D[a:b]).
            pub fn path(&mut self, m: usize, a: usize, b: usize) -> Vec<Hash> {
                let n = b - a;
                if n <= 1 {
                    return vec![];
                }
                let k = split_point(n as u64) as usize;
                if m < k {
                    let mut p = self.path(m, a, a + k);
                    p.push(self.mth(a + k, b));
                    p
                } else {
                    let mut p = self.path(m - k, a + k, b);
                    p.push(self.mth(a, a + k));
                    p
                }
            }

            /// SUBPROOF(m, D[a:b], complete).
            pub fn subproof(&mut self, m: usize, a: usize, b: usize, complete: bool) -> Vec<Hash> {
                let n = b - a;
                if m == n {
                    return if complete {
                        vec![]
                    } else {
                        vec![self.mth(a, b)]
                    };
                }
                let k = split_point(n as u64) as usize;
                if m <= k {
                    let mut p = self.subproof(m, a, a + k, complete);
                    p.push(self.mth(a + k, b));
                    p
                } else {
                    let mut p = self.subproof(m - k, a + k, b, false);
                    p.push(self.mth(a, a + k));
                    p
                }
            }
        }
    }

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(&(i as u64).to_be_bytes()))
            .collect()
    }

    /// Every tree size 1..=300: roots, every inclusion proof and every
    /// consistency proof agree with the literal RFC recursion and verify.
    #[test]
    fn matches_naive_rfc_recursion_for_sizes_1_to_300() {
        let all = leaves(300);
        let mut naive = naive::Naive::new(&all);
        let mut tree = MemoryTree::new();
        let mut roots = vec![crate::hash::empty_root()];
        for (i, leaf) in all.iter().enumerate() {
            tree.push(*leaf);
            let size = i + 1;
            let root = tree.root();
            assert_eq!(root, naive.mth(0, size), "root at size {size}");
            assert_eq!(tree.root_at(size as u64), Some(root));
            roots.push(root);
        }
        for size in 1..=300usize {
            let root = roots[size];
            for (m, leaf) in all.iter().enumerate().take(size) {
                let proof = tree.inclusion_proof(m as u64, size as u64).unwrap();
                assert_eq!(proof, naive.path(m, 0, size), "path {m} in {size}");
                verify_inclusion(m as u64, size as u64, leaf, &proof, &root).unwrap();
            }
            for (old, old_root) in roots.iter().enumerate().take(size + 1).skip(1) {
                let proof = tree.consistency_proof(old as u64, size as u64).unwrap();
                let expected = if old == size {
                    vec![]
                } else {
                    naive.subproof(old, 0, size, true)
                };
                assert_eq!(proof, expected, "consistency {old} -> {size}");
                verify_consistency(old as u64, size as u64, old_root, &root, &proof).unwrap();
            }
        }
    }

    /// Flipping any bit of any proof hash, or dropping or adding a hash, must
    /// make verification fail.
    #[test]
    fn every_flipped_proof_byte_is_rejected() {
        let all = leaves(77);
        let mut tree = MemoryTree::new();
        all.iter().for_each(|l| tree.push(*l));
        let mut roots = vec![crate::hash::empty_root()];
        for n in 1..=77u64 {
            roots.push(tree.root_at(n).unwrap());
        }
        for size in [1u64, 2, 3, 7, 8, 9, 31, 64, 77] {
            let root = roots[size as usize];
            for m in 0..size {
                let proof = tree.inclusion_proof(m, size).unwrap();
                let leaf = all[m as usize];
                for i in 0..proof.len() {
                    for byte in 0..32 {
                        for bit in [0x01u8, 0x80] {
                            let mut bad = proof.clone();
                            bad[i][byte] ^= bit;
                            assert!(verify_inclusion(m, size, &leaf, &bad, &root).is_err());
                        }
                    }
                }
                let mut longer = proof.clone();
                longer.push([0; 32]);
                assert!(verify_inclusion(m, size, &leaf, &longer, &root).is_err());
                if !proof.is_empty() {
                    assert!(verify_inclusion(m, size, &leaf, &proof[1..], &root).is_err());
                }
                let mut bad_leaf = leaf;
                bad_leaf[0] ^= 1;
                assert!(verify_inclusion(m, size, &bad_leaf, &proof, &root).is_err());
            }
            for old in 1..size {
                let proof = tree.consistency_proof(old, size).unwrap();
                let old_root = roots[old as usize];
                for i in 0..proof.len() {
                    for byte in 0..32 {
                        let mut bad = proof.clone();
                        bad[i][byte] ^= 0x01;
                        assert!(verify_consistency(old, size, &old_root, &root, &bad).is_err());
                    }
                }
                assert!(verify_consistency(old, size, &old_root, &root, &proof[1..]).is_err());
                let mut bad_root = old_root;
                bad_root[31] ^= 1;
                assert!(verify_consistency(old, size, &bad_root, &root, &proof).is_err());
            }
        }
    }

    #[test]
    fn ranges_refuse_impossible_sizes() {
        assert!(inclusion_ranges(3, 3).is_none());
        assert!(consistency_ranges(0, 5).is_none());
        assert!(consistency_ranges(6, 5).is_none());
        assert_eq!(consistency_ranges(5, 5), Some(vec![]));
    }
}
