//! The enclave audit chain, defined here so the parent can recompute it.
//!
//! Version 2 (what the enclave keeps) hashes what the enclave signed, the JWS signing
//! input (RFC 7515 §5.1: `BASE64URL(header) '.' BASE64URL(claims)`), whose claims name the
//! chain position (`agentkeys_epoch`, `agentkeys_seq`):
//!
//! ```text
//! head_0 = SHA-256("agentkeys-audit-chain-v2" ‖ epoch_be8)
//! head_n = SHA-256(head_{n-1} ‖ seq_be8 ‖ SHA-256(signing_input_n))      (seq = n, from 1)
//! ```
//!
//! Version 1 (logs written before version 2) had the domain `agentkeys-audit-chain-v1`
//! and hashed the whole compact JWT instead; [`ChainVersion::V1`] lets `audit verify`
//! still walk such logs.
//!
//! An audit checkpoint attests `(epoch, seq, head)` and the enclave's module id as a
//! tagged statement ([`crate::CheckpointStatement`]).

use sha2::{Digest, Sha256};

/// The claim holding a token's audit chain epoch, as a decimal string (a random 64-bit
/// value exceeds the integers a JSON number carries exactly in many parsers; RFC 8259 §6
/// names 2^53 − 1 as the interoperable limit).
pub const EPOCH_CLAIM: &str = "agentkeys_epoch";
/// The claim holding a token's seq in the chain of its epoch (a JSON number, from 1).
pub const SEQ_CLAIM: &str = "agentkeys_seq";
/// The claim holding the token's wallet (also the AWS session tag of that name).
pub const WALLET_CLAIM: &str = "agentkeys_user_wallet";

/// What one version of the chain hashes at each seq, and its genesis domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainVersion {
    /// Each entry is SHA-256 of the whole compact JWT (signature included).
    V1,
    /// Each entry is SHA-256 of the JWS signing input, whose claims carry the position.
    V2,
}

impl ChainVersion {
    /// The version the enclave keeps.
    pub const CURRENT: ChainVersion = ChainVersion::V2;

    /// Domain separation prefix of the genesis head.
    pub fn domain(self) -> &'static [u8] {
        match self {
            ChainVersion::V1 => b"agentkeys-audit-chain-v1",
            ChainVersion::V2 => b"agentkeys-audit-chain-v2",
        }
    }

    /// The chain head before any JWT of `epoch`.
    pub fn genesis(self, epoch: u64) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.domain());
        hasher.update(epoch.to_be_bytes());
        hasher.finalize().into()
    }
}

/// The chain head before any JWT of `epoch`, in the current version.
pub fn chain_genesis(epoch: u64) -> [u8; 32] {
    ChainVersion::CURRENT.genesis(epoch)
}

/// The chain head after entry number `seq`, whose hash is `entry_sha256` (the signing
/// input's in version 2, the JWT's in version 1).
pub fn chain_next(prev: &[u8; 32], seq: u64, entry_sha256: &[u8; 32]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(prev);
    hasher.update(seq.to_be_bytes());
    hasher.update(entry_sha256);
    hasher.finalize().into()
}

/// The JWS signing input of a compact JWS: everything before its last `.` (RFC 7515
/// §7.1). `None` when `jwt` has no `.`.
pub fn signing_input(jwt: &str) -> Option<&str> {
    jwt.rsplit_once('.').map(|(input, _signature)| input)
}

/// SHA-256 of a JWS signing input: what version 2 of the chain hashes at each seq.
pub fn signing_input_sha256(signing_input: &str) -> [u8; 32] {
    Sha256::digest(signing_input.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256(data: &[u8]) -> [u8; 32] {
        Sha256::digest(data).into()
    }

    #[test]
    fn genesis_matches_definition() {
        let mut input = b"agentkeys-audit-chain-v2".to_vec();
        input.extend_from_slice(&7u64.to_be_bytes());
        assert_eq!(chain_genesis(7), sha256(&input));
        assert_ne!(chain_genesis(7), chain_genesis(8));
        assert_ne!(ChainVersion::V1.genesis(7), ChainVersion::V2.genesis(7));
    }

    #[test]
    fn fixed_vectors() {
        // Fixed vectors so that an independent implementation can check itself.
        let g1 = ChainVersion::V1.genesis(1);
        assert_eq!(g1, sha256(b"agentkeys-audit-chain-v1\0\0\0\0\0\0\0\x01"));
        let g = chain_genesis(1);
        assert_eq!(g, sha256(b"agentkeys-audit-chain-v2\0\0\0\0\0\0\0\x01"));
        let entry = signing_input_sha256("a.b");
        assert_eq!(entry, sha256(b"a.b"));
        let h1 = chain_next(&g, 1, &entry);
        let mut input = g.to_vec();
        input.extend_from_slice(&1u64.to_be_bytes());
        input.extend_from_slice(&entry);
        assert_eq!(h1, sha256(&input));
        // The values themselves, pinned.
        assert_eq!(hex::encode(g1), GENESIS_V1_EPOCH_1);
        assert_eq!(hex::encode(g), GENESIS_V2_EPOCH_1);
        assert_eq!(hex::encode(h1), HEAD_1_V2_EPOCH_1);
    }

    const GENESIS_V1_EPOCH_1: &str =
        "19b2f23332c4865998dff233fc93df11360bb227369ec7811705a11215aadcc9";
    const GENESIS_V2_EPOCH_1: &str =
        "a5c740219b73c3e34e6aedf1b2d08748ba20d5c2135543b388ae4f8b7dddde47";
    const HEAD_1_V2_EPOCH_1: &str =
        "f62c09d0d0537171d9e8fa007f78992124a0bf0bc661bfc1c566ae43240ae6c3";

    #[test]
    fn next_depends_on_every_input() {
        let g = chain_genesis(0);
        let h = [9u8; 32];
        let base = chain_next(&g, 1, &h);
        assert_ne!(base, chain_next(&g, 2, &h));
        assert_ne!(base, chain_next(&[0u8; 32], 1, &h));
        assert_ne!(base, chain_next(&g, 1, &[8u8; 32]));
    }

    #[test]
    fn signing_input_is_the_jws_without_its_signature() {
        assert_eq!(
            signing_input("aGVhZA.Y2xhaW1z.c2ln"),
            Some("aGVhZA.Y2xhaW1z")
        );
        assert_eq!(signing_input("a.b."), Some("a.b"));
        assert_eq!(signing_input("no-dot"), None);
        assert_eq!(signing_input(""), None);
    }
}
