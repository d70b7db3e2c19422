//! A throwaway Ethereum wallet for tests and the demo: the other side of the enclave's
//! Sign-In with Ethereum check (`agentkeys_enclave::authz::siwe`). It holds a random
//! secp256k1 key, writes EIP-4361 messages and signs them with `personal_sign` (EIP-191)
//! as a wallet would.
//!
//! The address's EIP-55 case comes from [`Wallet::eip55`] and the EIP-191 hash from the
//! enclave's [`personal_sign_hash`], so the signer and the checker cannot disagree on
//! either; `dev/tests/siwe_wallet.rs` checks both against Python's `eth-account`.
//!
//! Not for real funds: the key lives in memory, unprotected, for as long as the value.

use std::fmt;

use agentkeys_enclave::authz::siwe::{address_of, personal_sign_hash, SIGNATURE_BYTES};
use agentkeys_wire::Wallet;
use k256::ecdsa::SigningKey;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// A wallet with a random secp256k1 key. Its `Debug` shows the address only.
#[derive(Clone)]
pub struct ThrowawayWallet {
    key: SigningKey,
}

impl ThrowawayWallet {
    /// A wallet with a fresh random key (from the operating system's generator).
    pub fn new() -> ThrowawayWallet {
        ThrowawayWallet {
            key: SigningKey::random(&mut rand::rngs::OsRng),
        }
    }

    /// The wallet of a given 32-byte private key (for fixed test vectors); `None` if the
    /// bytes are zero or not below the secp256k1 group order.
    pub fn from_private_key(bytes: &[u8; 32]) -> Option<ThrowawayWallet> {
        SigningKey::from_slice(bytes)
            .ok()
            .map(|key| ThrowawayWallet { key })
    }

    /// The address in normal (lower-case) form.
    pub fn wallet(&self) -> Wallet {
        address_of(self.key.verifying_key())
    }

    /// The address in EIP-55 checksum case, as a SIWE message writes it.
    pub fn address(&self) -> String {
        self.wallet().eip55()
    }

    /// `personal_sign(message)`: the 65-byte `r ‖ s ‖ v` signature over the EIP-191 hash
    /// of `message`, with a low `s` (EIP-2) and `v` 27 or 28.
    ///
    /// # Panics
    ///
    /// If signing fails, which RFC 6979 nonces make impossible short of a broken curve
    /// implementation.
    pub fn sign(&self, message: &str) -> [u8; SIGNATURE_BYTES] {
        let (signature, recovery_id) = self
            .key
            .sign_prehash_recoverable(&personal_sign_hash(message))
            .expect("secp256k1 signing with an RFC 6979 nonce does not fail");
        let mut out = [0u8; SIGNATURE_BYTES];
        out[..64].copy_from_slice(&signature.to_bytes());
        // The x-reduced recovery IDs (2, 3) have probability about 2^-127 and no
        // `personal_sign` encoding; only the parity is written.
        out[64] = 27 + u8::from(recovery_id.is_y_odd());
        out
    }
}

impl Default for ThrowawayWallet {
    fn default() -> ThrowawayWallet {
        ThrowawayWallet::new()
    }
}

impl fmt::Debug for ThrowawayWallet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThrowawayWallet")
            .field("address", &self.address())
            .finish_non_exhaustive()
    }
}

/// An EIP-4361 message without a statement, resources or request ID: `domain` asks
/// `address` (EIP-55 case, as [`ThrowawayWallet::address`] gives it) to sign in for
/// `uri` on chain `chain_id` with `nonce`, issued at `issued_at` and expiring at
/// `expiration` (UNIX seconds, written as RFC 3339 UTC times).
///
/// The values are written as given: the enclave refuses a message whose values break
/// the specification, which is how tests make such messages.
///
/// # Panics
///
/// If a time is after the year 9999 (RFC 3339 has four-digit years).
pub fn siwe_message(
    domain: &str,
    address: &str,
    uri: &str,
    chain_id: u64,
    nonce: &str,
    issued_at: u64,
    expiration: u64,
) -> String {
    let issued_at = rfc3339(issued_at);
    let expiration = rfc3339(expiration);
    // Without a statement, the address is followed by two empty lines (EIP-4361 ABNF:
    // `address LF LF [ statement LF ] LF`); the message ends without a newline.
    format!(
        "{domain} wants you to sign in with your Ethereum account:\n\
         {address}\n\
         \n\
         \n\
         URI: {uri}\n\
         Version: 1\n\
         Chain ID: {chain_id}\n\
         Nonce: {nonce}\n\
         Issued At: {issued_at}\n\
         Expiration Time: {expiration}"
    )
}

/// `t` (UNIX seconds) as an RFC 3339 UTC date-time, such as `2026-01-01T00:00:00Z`.
fn rfc3339(t: u64) -> String {
    i64::try_from(t)
        .ok()
        .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .expect("a SIWE time is a UNIX time before the year 10000")
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentkeys_enclave::authz::siwe::{parse, recover_signer, verify, SiweExpectations};

    /// A well-known test key and its address.
    const KEY: &str = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";
    const ADDRESS: &str = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23";
    const T0: u64 = 1_767_225_600;

    fn fixed() -> ThrowawayWallet {
        let bytes: [u8; 32] = hex::decode(KEY).unwrap().try_into().unwrap();
        ThrowawayWallet::from_private_key(&bytes).unwrap()
    }

    #[test]
    fn fixed_key_address() {
        let w = fixed();
        assert_eq!(w.address(), ADDRESS);
        assert_eq!(w.wallet(), ADDRESS.to_ascii_lowercase().as_str());
        assert!(format!("{w:?}").contains(ADDRESS));
        assert!(!format!("{w:?}").contains(KEY));
        assert!(ThrowawayWallet::from_private_key(&[0; 32]).is_none());
        assert!(ThrowawayWallet::from_private_key(&[0xff; 32]).is_none());
    }

    #[test]
    fn message_is_what_the_enclave_parses() {
        let w = ThrowawayWallet::new();
        let message = siwe_message(
            "issuer.example:8443",
            &w.address(),
            "https://issuer.example:8443/v1/mint",
            1,
            "abcdef0123456789",
            T0,
            T0 + 300,
        );
        assert!(message
            .starts_with("issuer.example:8443 wants you to sign in with your Ethereum account:\n"));
        assert!(message.contains("\nIssued At: 2026-01-01T00:00:00Z\n"));
        assert!(message.ends_with("\nExpiration Time: 2026-01-01T00:05:00Z"));
        let m = parse(&message).unwrap();
        assert_eq!(m.address, w.wallet());
        assert_eq!(m.statement, None);
        assert_eq!(m.uri, "https://issuer.example:8443/v1/mint");
        assert_eq!(m.chain_id, 1);
        assert_eq!(m.nonce, "abcdef0123456789");
        assert_eq!((m.issued_at, m.expiration_time), (T0, Some(T0 + 300)));

        let signature = w.sign(&message);
        assert!(signature[64] == 27 || signature[64] == 28);
        assert_eq!(recover_signer(&message, &signature).unwrap(), w.wallet());
        let expect = SiweExpectations {
            domain: "issuer.example:8443",
            now: T0 + 10,
            max_lifetime_seconds: 300,
            clock_skew_seconds: 30,
        };
        let verified = verify(&message, &signature, &expect).unwrap();
        assert_eq!(verified.wallet, w.wallet());
        assert_eq!(verified.expires_at, T0 + 300);
    }

    #[test]
    fn random_wallets_differ() {
        assert_ne!(
            ThrowawayWallet::new().address(),
            ThrowawayWallet::new().address()
        );
    }

    #[test]
    #[should_panic(expected = "before the year 10000")]
    fn time_after_9999_panics() {
        siwe_message("a", ADDRESS, "https://a", 1, "abcdefgh", T0, u64::MAX);
    }
}
