//! Nonces for Sign-In with Ethereum messages: stateless for a fleet, single-use per
//! enclave.
//!
//! A nonce is `hex(bucket_be8 ‖ random_8 ‖ tag_12)` (56 characters, alphanumeric as
//! EIP-4361 requires), where `bucket = ⌊now / NONCE_BUCKET_SECONDS⌋` and `tag` is the
//! first 12 bytes of HMAC-SHA256 under a key derived from the issuer seed over
//! `"agentkeys/siwe-nonce/v1" ‖ bucket_be8 ‖ random_8`. Every enclave that unsealed the
//! same seed accepts the nonces of the others, so a fleet needs no shared store; a nonce
//! is accepted in its own bucket and the next one. Each enclave remembers the nonces it
//! accepted until they expire and refuses them a second time; a message replayed to
//! another enclave of the fleet inside that window mints a second token for the same
//! wallet, which the wallet's owner signed for.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

/// Length of a nonce's time bucket: 5 minutes, the longest a SIWE message may live here
/// (`MAX_SIWE_LIFETIME_SECONDS` in [`super`]), so a nonce lives 5 to 10 minutes.
pub const NONCE_BUCKET_SECONDS: u64 = 300;
/// Most nonces one enclave remembers as used: 100 000 × ~60 bytes ≈ 6 MiB at most,
/// about 160 mints a second sustained over a nonce's 10-minute life. When full, new
/// messages are refused (never accepted unremembered) until old buckets expire.
pub const MAX_REMEMBERED_NONCES: usize = 100_000;

const DOMAIN: &[u8] = b"agentkeys/siwe-nonce/v1";
const RANDOM_BYTES: usize = 8;
const TAG_BYTES: usize = 12;
const NONCE_BYTES: usize = 8 + RANDOM_BYTES + TAG_BYTES;

/// Why a nonce was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NonceError {
    /// Not a nonce this issuer makes (wrong length, not hex, or a bad tag).
    #[error("nonce was not issued by this issuer")]
    Forged,
    /// Its bucket is over.
    #[error("nonce expired (issued for {issued_bucket_start}, valid until {valid_until}; now {now}): ask for a new one")]
    Expired {
        /// Start of its bucket (UNIX seconds).
        issued_bucket_start: u64,
        /// Last second it was valid.
        valid_until: u64,
        /// The enclave's clock.
        now: u64,
    },
    /// From a bucket that has not begun.
    #[error("nonce is from the future")]
    Future,
    /// Already used at this enclave.
    #[error("nonce was already used: ask for a new one")]
    Reused,
    /// The replay cache is full.
    #[error("too many sign-ins in flight ({max} nonces remembered): retry in a few minutes")]
    Full {
        /// [`MAX_REMEMBERED_NONCES`].
        max: usize,
    },
    /// The random generator failed.
    #[error("random generator failed")]
    Random,
}

/// Issues and checks nonces under one seed-derived key.
pub struct NonceBook {
    key: hmac::Key,
    used: Mutex<BTreeMap<u64, HashSet<[u8; NONCE_BYTES]>>>,
}

impl std::fmt::Debug for NonceBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceBook(<key redacted>)")
    }
}

impl NonceBook {
    /// A book keyed by `key` (32 bytes derived from the seed; see `keys::derive_nonce_key`).
    pub fn new(key: &[u8; 32]) -> NonceBook {
        NonceBook {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            used: Mutex::new(BTreeMap::new()),
        }
    }

    fn tag(&self, bucket: u64, random: &[u8]) -> [u8; TAG_BYTES] {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(DOMAIN);
        ctx.update(&bucket.to_be_bytes());
        ctx.update(random);
        let full = ctx.sign();
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(&full.as_ref()[..TAG_BYTES]);
        tag
    }

    /// A fresh nonce at `now`, and the last second it is accepted.
    pub fn issue(&self, now: u64, rng: &SystemRandom) -> Result<(String, u64), NonceError> {
        let bucket = now / NONCE_BUCKET_SECONDS;
        let mut random = [0u8; RANDOM_BYTES];
        rng.fill(&mut random).map_err(|_| NonceError::Random)?;
        let mut bytes = Vec::with_capacity(NONCE_BYTES);
        bytes.extend_from_slice(&bucket.to_be_bytes());
        bytes.extend_from_slice(&random);
        bytes.extend_from_slice(&self.tag(bucket, &random));
        Ok((hex::encode(bytes), valid_until(bucket)))
    }

    /// Checks `nonce` at `now` and remembers it as used.
    pub fn redeem(&self, nonce: &str, now: u64) -> Result<(), NonceError> {
        let mut bytes = [0u8; NONCE_BYTES];
        if nonce.len() != NONCE_BYTES * 2
            || !nonce
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(NonceError::Forged);
        }
        hex::decode_to_slice(nonce, &mut bytes).map_err(|_| NonceError::Forged)?;
        let mut bucket_bytes = [0u8; 8];
        bucket_bytes.copy_from_slice(&bytes[..8]);
        let bucket = u64::from_be_bytes(bucket_bytes);
        let random = &bytes[8..8 + RANDOM_BYTES];
        let expected = self.tag(bucket, random);
        if !constant_time_eq(&expected, &bytes[8 + RANDOM_BYTES..]) {
            return Err(NonceError::Forged);
        }
        let current = now / NONCE_BUCKET_SECONDS;
        if bucket > current {
            return Err(NonceError::Future);
        }
        if bucket + 1 < current {
            return Err(NonceError::Expired {
                issued_bucket_start: bucket.saturating_mul(NONCE_BUCKET_SECONDS),
                valid_until: valid_until(bucket),
                now,
            });
        }
        let mut used = self.used.lock().map_err(|_| NonceError::Full {
            max: MAX_REMEMBERED_NONCES,
        })?;
        // Forget buckets no nonce of which can still be accepted.
        used.retain(|b, _| b + 1 >= current);
        if used.get(&bucket).is_some_and(|set| set.contains(&bytes)) {
            return Err(NonceError::Reused);
        }
        let remembered: usize = used.values().map(HashSet::len).sum();
        if remembered >= MAX_REMEMBERED_NONCES {
            return Err(NonceError::Full {
                max: MAX_REMEMBERED_NONCES,
            });
        }
        used.entry(bucket).or_default().insert(bytes);
        Ok(())
    }
}

/// The last second a nonce of `bucket` is accepted (the end of the next bucket).
fn valid_until(bucket: u64) -> u64 {
    bucket
        .saturating_add(2)
        .saturating_mul(NONCE_BUCKET_SECONDS)
        .saturating_sub(1)
}

/// Compares two tags without stopping at the first difference, so the time taken says
/// nothing about how much of a forged tag was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_100;

    #[test]
    fn a_nonce_is_accepted_once_in_its_window() {
        let book = NonceBook::new(&[7; 32]);
        let rng = SystemRandom::new();
        let (nonce, until) = book.issue(NOW, &rng).unwrap();
        assert_eq!(nonce.len(), 56);
        assert!(nonce.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert!(until >= NOW + NONCE_BUCKET_SECONDS);
        book.redeem(&nonce, NOW + 1).unwrap();
        assert_eq!(book.redeem(&nonce, NOW + 2), Err(NonceError::Reused));
        // Another enclave of the fleet (same seed, same key) accepts it too.
        let other = NonceBook::new(&[7; 32]);
        other.redeem(&nonce, until).unwrap();
        // A new nonce is accepted up to `until` and refused after.
        let (fresh, until) = book.issue(NOW, &rng).unwrap();
        assert!(matches!(
            book.redeem(&fresh, until + 1),
            Err(NonceError::Expired { .. })
        ));
        book.redeem(&fresh, until).unwrap();
    }

    #[test]
    fn forged_and_future_nonces_are_refused() {
        let book = NonceBook::new(&[7; 32]);
        let rng = SystemRandom::new();
        let (nonce, _) = book.issue(NOW, &rng).unwrap();
        let other_key = NonceBook::new(&[8; 32]);
        assert_eq!(other_key.redeem(&nonce, NOW), Err(NonceError::Forged));
        let mut flipped = nonce.clone().into_bytes();
        flipped[20] = if flipped[20] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(book.redeem(&flipped, NOW), Err(NonceError::Forged));
        assert_eq!(
            book.redeem(&nonce.to_uppercase(), NOW),
            Err(NonceError::Forged)
        );
        assert_eq!(book.redeem("abc", NOW), Err(NonceError::Forged));
        let (later, _) = book.issue(NOW + NONCE_BUCKET_SECONDS, &rng).unwrap();
        assert_eq!(book.redeem(&later, NOW), Err(NonceError::Future));
    }
}
