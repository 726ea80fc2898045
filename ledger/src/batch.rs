//! Gateway-signed batches: how events reach the log with provenance.
//!
//! A gateway groups canonical events into a batch, computes the RFC 6962 root
//! over the batch's own leaves, and signs
//! `"caracal-ledger/batch/v1\n" || count (u64, big-endian) || root` with its
//! ECDSA P-256 key. The store keeps the signature and the batch's leaf hashes,
//! so a verifier can later check that every log entry was submitted by a known
//! gateway, and rows written by anything else stand out.

use std::collections::HashSet;

use crate::event::{EventError, MeteringEvent};
use crate::hash::{Hash, leaf_hash};
use crate::keys::{KeyId, KeyPair, PublicKey};
use crate::tree::Frontier;

const BATCH_DOMAIN: &[u8] = b"caracal-ledger/batch/v1\n";

/// The most events one batch may carry.
pub const MAX_BATCH_EVENTS: usize = 10_000;

/// Why a batch was refused.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("batch is empty")]
    Empty,
    #[error("batch has {0} events, more than the limit of {MAX_BATCH_EVENTS}")]
    TooLarge(usize),
    #[error("event {position} of the batch: {source}")]
    Event { position: usize, source: EventError },
    #[error("event id {0} appears twice in the batch")]
    DuplicateEvent(uuid::Uuid),
    #[error("batch is signed by key id {0}, which is not a registered submitter")]
    UnknownSubmitter(String),
    #[error("batch signature does not verify")]
    BadSignature,
    #[error("event {position} names gateway {found:?} but the batch is signed by {signer:?}")]
    WrongGateway {
        position: usize,
        found: String,
        signer: String,
    },
}

/// A batch as a gateway submits it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Key id of the submitting gateway's key.
    pub key_id: KeyId,
    /// DER ECDSA signature over [`batch_message`].
    pub signature: Vec<u8>,
    /// Canonical event bytes, in the gateway's order.
    pub events: Vec<Vec<u8>>,
}

/// The RFC 6962 root over a list of leaf hashes.
pub fn batch_root(leaf_hashes: &[Hash]) -> Hash {
    let mut frontier = Frontier::new();
    leaf_hashes.iter().for_each(|h| frontier.push_hash(*h));
    frontier.root()
}

/// The bytes a gateway signs for a batch.
pub fn batch_message(count: u64, root: &Hash) -> Vec<u8> {
    let mut msg = BATCH_DOMAIN.to_vec();
    msg.extend_from_slice(&count.to_be_bytes());
    msg.extend_from_slice(root);
    msg
}

/// A gateway's batch signing key.
#[derive(Clone, Debug)]
pub struct BatchSigner {
    key: KeyPair,
}

impl BatchSigner {
    /// The key's name must be the gateway id that events carry.
    pub fn new(key: KeyPair) -> Self {
        Self { key }
    }

    pub fn public(&self) -> &PublicKey {
        self.key.public()
    }

    /// Encodes and signs events as one batch.
    pub fn sign_events(&self, events: &[MeteringEvent]) -> Result<Batch, BatchError> {
        let encoded = events
            .iter()
            .enumerate()
            .map(|(position, e)| {
                e.encode()
                    .map_err(|source| BatchError::Event { position, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.sign_encoded(encoded))
    }

    /// Signs already-encoded canonical events (e.g. read back from a spool).
    pub fn sign_encoded(&self, events: Vec<Vec<u8>>) -> Batch {
        let hashes: Vec<Hash> = events.iter().map(|e| leaf_hash(e)).collect();
        let root = batch_root(&hashes);
        let signature = self.key.sign(&batch_message(events.len() as u64, &root));
        Batch {
            key_id: self.key.key_id(),
            signature,
            events,
        }
    }
}

/// One event of a checked batch, with what the store indexes.
#[derive(Clone, Debug)]
pub struct CheckedEvent {
    pub event: MeteringEvent,
    pub bytes: Vec<u8>,
    pub leaf_hash: Hash,
}

/// A batch whose signature, events and submitter have been checked.
#[derive(Clone, Debug)]
pub struct CheckedBatch {
    pub root: Hash,
    pub key_id: KeyId,
    pub signature: Vec<u8>,
    pub events: Vec<CheckedEvent>,
}

impl CheckedBatch {
    pub fn leaf_hashes(&self) -> Vec<Hash> {
        self.events.iter().map(|e| e.leaf_hash).collect()
    }

    /// Leaf hashes concatenated, as stored.
    pub fn leaf_hashes_blob(&self) -> Vec<u8> {
        self.events.iter().flat_map(|e| e.leaf_hash).collect()
    }
}

impl Batch {
    /// Checks the batch against the registered submitter keys: size limits,
    /// canonical events with unique ids that name the signing gateway, and the
    /// signature over the batch root.
    pub fn check(self, submitters: &[PublicKey]) -> Result<CheckedBatch, BatchError> {
        if self.events.is_empty() {
            return Err(BatchError::Empty);
        }
        if self.events.len() > MAX_BATCH_EVENTS {
            return Err(BatchError::TooLarge(self.events.len()));
        }
        let key = submitters
            .iter()
            .find(|k| k.key_id() == self.key_id)
            .ok_or_else(|| BatchError::UnknownSubmitter(hex::encode(self.key_id)))?;
        let mut seen = HashSet::new();
        let mut events = Vec::with_capacity(self.events.len());
        for (position, bytes) in self.events.into_iter().enumerate() {
            let event = MeteringEvent::decode(&bytes)
                .map_err(|source| BatchError::Event { position, source })?;
            if !seen.insert(event.id) {
                return Err(BatchError::DuplicateEvent(event.id));
            }
            if event.gateway_id != key.name() {
                return Err(BatchError::WrongGateway {
                    position,
                    found: event.gateway_id,
                    signer: key.name().to_string(),
                });
            }
            let leaf_hash = leaf_hash(&bytes);
            events.push(CheckedEvent {
                event,
                bytes,
                leaf_hash,
            });
        }
        let hashes: Vec<Hash> = events.iter().map(|e| e.leaf_hash).collect();
        let root = batch_root(&hashes);
        key.verify(&batch_message(hashes.len() as u64, &root), &self.signature)
            .map_err(|_| BatchError::BadSignature)?;
        Ok(CheckedBatch {
            root,
            key_id: self.key_id,
            signature: self.signature,
            events,
        })
    }
}

/// Checks a stored batch record (signature over the root of its stored leaf hashes).
pub fn verify_batch_record(
    key: &PublicKey,
    leaf_hashes: &[Hash],
    root: &Hash,
    signature: &[u8],
) -> Result<(), BatchError> {
    if batch_root(leaf_hashes) != *root {
        return Err(BatchError::BadSignature);
    }
    key.verify(&batch_message(leaf_hashes.len() as u64, root), signature)
        .map_err(|_| BatchError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> BatchSigner {
        BatchSigner::new(KeyPair::generate("gw-node-1").unwrap())
    }

    #[test]
    fn signed_batch_checks_out() {
        let s = signer();
        let events: Vec<_> = (0..5).map(MeteringEvent::example).collect();
        let batch = s.sign_events(&events).unwrap();
        let checked = batch.check(&[s.public().clone()]).unwrap();
        assert_eq!(checked.events.len(), 5);
        verify_batch_record(
            s.public(),
            &checked.leaf_hashes(),
            &checked.root,
            &checked.signature,
        )
        .unwrap();
    }

    #[test]
    fn tampered_or_foreign_batches_are_refused() {
        let s = signer();
        let keys = [s.public().clone()];
        let events: Vec<_> = (0..3).map(MeteringEvent::example).collect();
        let good = s.sign_events(&events).unwrap();

        let mut reordered = good.clone();
        reordered.events.swap(0, 1);
        assert!(matches!(
            reordered.check(&keys),
            Err(BatchError::BadSignature)
        ));

        let mut dropped = good.clone();
        dropped.events.pop();
        assert!(matches!(
            dropped.check(&keys),
            Err(BatchError::BadSignature)
        ));

        let other = signer();
        assert!(matches!(
            good.clone().check(&[other.public().clone()]),
            Err(BatchError::UnknownSubmitter(_))
        ));

        let mut dup = events.clone();
        dup.push(events[0].clone());
        assert!(matches!(
            s.sign_events(&dup).unwrap().check(&keys),
            Err(BatchError::DuplicateEvent(_))
        ));

        let wrong_gw = BatchSigner::new(KeyPair::generate("gw-node-2").unwrap());
        let res = wrong_gw
            .sign_events(&events)
            .unwrap()
            .check(&[wrong_gw.public().clone()]);
        assert!(matches!(res, Err(BatchError::WrongGateway { .. })));

        assert!(matches!(
            s.sign_encoded(vec![]).check(&keys),
            Err(BatchError::Empty)
        ));
        assert!(matches!(
            s.sign_encoded(vec![b"{}".to_vec()]).check(&keys),
            Err(BatchError::Event { .. })
        ));
    }
}
