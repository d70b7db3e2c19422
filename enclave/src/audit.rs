//! The enclave's own audit chain head (`docs/architecture.md`, "Audit chain head"; the
//! formula and checkpoint layout in `docs/protocol.md`, "Audit chain").
//!
//! Every boot draws a random `epoch` from the NSM; every minted JWT extends the chain
//! `head_n = SHA-256(head_{n-1} ‖ seq_be8 ‖ SHA-256(signing_input))` (see
//! `agentkeys_wire::chain`) with `seq` = 1, 2, … assigned under a mutex that also covers
//! the signature, so the sequence is contiguous whatever the concurrency and every token
//! carries its own `(epoch, seq)` in its claims. A checkpoint is an NSM attestation document whose `user_data` is the
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

    /// Gives the next seq to `sign` and appends the entry hash of what it signed, all under
    /// the chain lock: the token can carry its own position, and a signature that fails
    /// consumes no seq, so the chain never has an entry without a token.
    pub fn append_with<T, E: From<AuditError>>(
        &self,
        sign: impl FnOnce(u64, u64) -> Result<T, E>,
        entry_sha256: impl FnOnce(&T) -> [u8; 32],
    ) -> Result<(T, ChainEntry), E> {
        let mut p = self.position.lock().map_err(|_| AuditError::Poisoned)?;
        let seq = p
            .seq
            .checked_add(1)
            .ok_or(AuditError::Exhausted { seq: p.seq })?;
        let signed = sign(self.epoch, seq)?;
        let head = chain_next(&p.head, seq, &entry_sha256(&signed));
        *p = Position { seq, head };
        let entry = ChainEntry {
            epoch: self.epoch,
            seq,
            head,
        };
        Ok((signed, entry))
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
        h.update(b"agentkeys-audit-chain-v2");
        h.update(42u64.to_be_bytes());
        let g: [u8; 32] = h.finalize().into();
        assert_eq!(c0.head, g);
        let j = [7u8; 32];
        let (signed, e) = chain
            .append_with(|epoch, seq| Ok::<_, AuditError>((epoch, seq)), |_| j)
            .unwrap();
        assert_eq!(
            signed,
            (42, 1),
            "the signer is told the position it signs at"
        );
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
                    .map(|_| append(&chain, [t; 32]).seq)
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
            chain.append_with(|_, _| Ok::<_, AuditError>(()), |_| [0; 32]),
            Err(AuditError::Exhausted { seq: u64::MAX })
        ));
    }

    fn append(chain: &AuditChain, entry: [u8; 32]) -> ChainEntry {
        chain
            .append_with(|_, _| Ok::<_, AuditError>(()), |_| entry)
            .unwrap()
            .1
    }

    /// A signature that fails takes no seq: the next token gets the seq it would have had.
    #[test]
    fn failed_signature_consumes_no_seq() {
        let chain = AuditChain::new(5);
        append(&chain, [1; 32]);
        let before = chain.current().unwrap();
        let failed = chain.append_with(|_, _| Err::<(), _>(AuditError::Poisoned), |_| [2; 32]);
        assert!(failed.is_err());
        assert_eq!(chain.current().unwrap(), before);
        assert_eq!(append(&chain, [3; 32]).seq, 2);
    }
}
