//! The enclave's own audit chain head (`docs/architecture.md`, "Audit chain head"; the
//! formula and checkpoint layout in `docs/protocol.md`, "Audit chain").
//!
//! Every boot draws a random `epoch` from the NSM; every minted JWT extends the chain
//! `head_n = SHA-256(head_{n-1} ‖ seq_be8 ‖ SHA-256(jwt))` (see `agentkeys_wire::chain`)
//! with `seq` = 1, 2, … assigned under a mutex, so the sequence is contiguous whatever
//! the concurrency. A checkpoint is an NSM attestation document whose `user_data` is the
//! tagged statement of `(epoch, seq, head)` and the enclave's module id
//! ([`CheckpointStatement`]), letting an auditor prove that the parent's log holds every
//! token.

use std::sync::Mutex;

use agentkeys_wire::{chain_genesis, chain_next, CheckpointStatement};

use crate::nsm::{self, NsmDevice, NsmError};

/// Failures of the audit chain.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The chain mutex was poisoned by a panicking thread.
    #[error("audit chain lock poisoned")]
    Poisoned,
    /// `seq` would overflow (2^64 tokens in one boot).
    #[error("audit chain sequence exhausted at {seq}")]
    Exhausted {
        /// Last sequence number.
        seq: u64,
    },
    /// The NSM refused the checkpoint document.
    #[error("checkpoint attestation failed: {0}")]
    Nsm(#[from] NsmError),
}

#[derive(Debug, Clone, Copy)]
struct Position {
    seq: u64,
    head: [u8; 32],
}

/// The chain head of this boot.
#[derive(Debug)]
pub struct AuditChain {
    epoch: u64,
    position: Mutex<Position>,
}

/// Where a JWT landed in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainEntry {
    /// Epoch of this boot.
    pub epoch: u64,
    /// Sequence number of the JWT (from 1).
    pub seq: u64,
    /// Head after the JWT.
    pub head: [u8; 32],
}

/// An attested checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The statement attested.
    pub data: CheckpointStatement,
    /// The NSM document with `user_data = data.encode()`.
    pub document: Vec<u8>,
}

impl AuditChain {
    /// Starts a chain for `epoch` at its genesis head.
    pub fn new(epoch: u64) -> AuditChain {
        AuditChain {
            epoch,
            position: Mutex::new(Position {
                seq: 0,
                head: chain_genesis(epoch),
            }),
        }
    }

    /// Starts a chain with a random epoch from the NSM.
    pub fn from_nsm(nsm: &dyn NsmDevice) -> Result<AuditChain, NsmError> {
        Ok(AuditChain::new(nsm::random_u64(nsm)?))
    }

    /// The epoch of this boot.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The current `(epoch, seq, head)`.
    pub fn current(&self) -> Result<ChainEntry, AuditError> {
        let p = self.position.lock().map_err(|_| AuditError::Poisoned)?;
        Ok(ChainEntry {
            epoch: self.epoch,
            seq: p.seq,
            head: p.head,
        })
    }

    /// Appends one JWT hash; returns its sequence number and the new head.
    pub fn append(&self, jwt_sha256: &[u8; 32]) -> Result<ChainEntry, AuditError> {
        let mut p = self.position.lock().map_err(|_| AuditError::Poisoned)?;
        let seq = p
            .seq
            .checked_add(1)
            .ok_or(AuditError::Exhausted { seq: p.seq })?;
        let head = chain_next(&p.head, seq, jwt_sha256);
        *p = Position { seq, head };
        Ok(ChainEntry {
            epoch: self.epoch,
            seq,
            head,
        })
    }

    /// Attests the current position of the enclave `module_id` (with an optional caller
    /// nonce).
    pub fn checkpoint(
        &self,
        nsm: &dyn NsmDevice,
        module_id: &str,
        nonce: Option<&[u8]>,
    ) -> Result<Checkpoint, AuditError> {
        let position = self.current()?;
        let data = CheckpointStatement {
            epoch: position.epoch,
            seq: position.seq,
            head: position.head,
            module_id: module_id.to_string(),
        };
        let document = nsm::attest(nsm, Some(&data.encode()), nonce, None)?;
        Ok(Checkpoint { data, document })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use std::sync::Arc;

    #[test]
    fn genesis_and_append_match_definition() {
        let chain = AuditChain::new(42);
        let c0 = chain.current().unwrap();
        assert_eq!(c0.seq, 0);
        let mut h = Sha256::new();
        h.update(b"agentkeys-audit-chain-v1");
        h.update(42u64.to_be_bytes());
        let g: [u8; 32] = h.finalize().into();
        assert_eq!(c0.head, g);
        let j = [7u8; 32];
        let e = chain.append(&j).unwrap();
        let mut h = Sha256::new();
        h.update(g);
        h.update(1u64.to_be_bytes());
        h.update(j);
        let expected: [u8; 32] = h.finalize().into();
        assert_eq!(
            e,
            ChainEntry {
                epoch: 42,
                seq: 1,
                head: expected
            }
        );
        assert_eq!(chain.current().unwrap().head, expected);
    }

    #[test]
    fn concurrent_appends_are_contiguous() {
        let chain = Arc::new(AuditChain::new(1));
        let mut handles = Vec::new();
        for t in 0..8u8 {
            let chain = chain.clone();
            handles.push(std::thread::spawn(move || {
                (0..100)
                    .map(|_| chain.append(&[t; 32]).unwrap().seq)
                    .collect::<Vec<_>>()
            }));
        }
        let mut all: Vec<u64> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort_unstable();
        assert_eq!(all, (1..=800).collect::<Vec<_>>());
    }

    #[test]
    fn exhausted_sequence() {
        let chain = AuditChain::new(1);
        chain.position.lock().unwrap().seq = u64::MAX;
        assert!(matches!(
            chain.append(&[0; 32]),
            Err(AuditError::Exhausted { seq: u64::MAX })
        ));
    }
}
