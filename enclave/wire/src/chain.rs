//! The enclave audit chain, defined here so the parent can recompute it.
//!
//! ```text
//! head_0 = SHA-256("agentkeys-audit-chain-v1" ‖ epoch_be8)
//! head_n = SHA-256(head_{n-1} ‖ seq_be8 ‖ jwt_sha256)      (seq = n, from 1)
//! ```
//!
//! An audit checkpoint attests `(epoch, seq, head)` and the enclave's module id as a
//! tagged statement ([`crate::CheckpointStatement`]).

use sha2::{Digest, Sha256};

/// Domain separation prefix of the genesis head (version 1 of the chain).
pub const CHAIN_DOMAIN: &[u8] = b"agentkeys-audit-chain-v1";

/// The chain head before any JWT of `epoch`.
pub fn chain_genesis(epoch: u64) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(CHAIN_DOMAIN);
    hasher.update(epoch.to_be_bytes());
    hasher.finalize().into()
}

/// The chain head after the JWT number `seq` whose SHA-256 is `jwt_sha256`.
pub fn chain_next(prev: &[u8; 32], seq: u64, jwt_sha256: &[u8; 32]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(prev);
    hasher.update(seq.to_be_bytes());
    hasher.update(jwt_sha256);
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256(data: &[u8]) -> [u8; 32] {
        Sha256::digest(data).into()
    }

    #[test]
    fn genesis_matches_definition() {
        let mut input = b"agentkeys-audit-chain-v1".to_vec();
        input.extend_from_slice(&7u64.to_be_bytes());
        assert_eq!(chain_genesis(7), sha256(&input));
        assert_ne!(chain_genesis(7), chain_genesis(8));
    }

    #[test]
    fn fixed_vectors() {
        // Fixed vectors so that an independent implementation can check itself.
        let g = chain_genesis(1);
        assert_eq!(
            hex::encode(g),
            hex::encode(sha256(b"agentkeys-audit-chain-v1\0\0\0\0\0\0\0\x01"))
        );
        let jwt_hash = sha256(b"a.b.c");
        let h1 = chain_next(&g, 1, &jwt_hash);
        let mut input = g.to_vec();
        input.extend_from_slice(&1u64.to_be_bytes());
        input.extend_from_slice(&jwt_hash);
        assert_eq!(h1, sha256(&input));
        // The values themselves, pinned.
        assert_eq!(hex::encode(g), GENESIS_EPOCH_1);
        assert_eq!(hex::encode(h1), HEAD_1_EPOCH_1);
    }

    const GENESIS_EPOCH_1: &str =
        "19b2f23332c4865998dff233fc93df11360bb227369ec7811705a11215aadcc9";
    const HEAD_1_EPOCH_1: &str = "c5572c655dfba6722d0304cf2d6bbfcbe2cf7df323a664f6da844d0f0e1673d7";

    #[test]
    fn next_depends_on_every_input() {
        let g = chain_genesis(0);
        let h = [9u8; 32];
        let base = chain_next(&g, 1, &h);
        assert_ne!(base, chain_next(&g, 2, &h));
        assert_ne!(base, chain_next(&[0u8; 32], 1, &h));
        assert_ne!(base, chain_next(&g, 1, &[8u8; 32]));
    }
}
