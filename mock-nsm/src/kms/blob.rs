//! The stand-in's own ciphertext blobs (opaque to callers, like KMS's).
//!
//! ```text
//! blob = "AKMB" ‖ version 0x01 ‖ id_len u8 ‖ key_id ‖ nonce (12) ‖ AES-256-GCM(ct ‖ tag 16)
//! AAD  = "agentkeys-mock-kms-blob-v1" ‖ 0x00 ‖ id_len ‖ key_id ‖ canonical(context)
//! canonical(context) = count u32be ‖ for each pair sorted by key:
//!                      klen u32be ‖ key ‖ vlen u32be ‖ value
//! ```
//!
//! The master key is per KMS key; binding the key id and the encryption context in the
//! AAD makes a blob decrypt only under the same key and the exact same context.

use std::collections::BTreeMap;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use zeroize::Zeroizing;

/// Magic prefix of a blob.
const MAGIC: &[u8; 4] = b"AKMB";
/// Blob format version.
const VERSION: u8 = 1;
/// AAD domain separator.
const AAD_DOMAIN: &[u8] = b"agentkeys-mock-kms-blob-v1";
/// AES-GCM tag length.
const TAG_LEN: usize = 16;
/// Largest key id stored in a blob (it is length-prefixed with one byte).
pub const MAX_KEY_ID_LEN: usize = 255;

/// Errors opening a blob; all of them surface as `InvalidCiphertextException`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BlobError {
    /// Too short, wrong magic or version, or a bad length prefix.
    #[error("ciphertext blob is malformed: {0}")]
    Malformed(&'static str),
    /// Authentication failed: wrong key, wrong encryption context, or tampering.
    #[error("ciphertext blob does not authenticate (wrong key or encryption context)")]
    Authentication,
    /// Sealing failed.
    #[error("sealing failed: {0}")]
    Seal(&'static str),
}

/// The key id recorded in a blob, read without decrypting.
pub fn key_id_of(blob: &[u8]) -> Result<&str, BlobError> {
    let rest = blob
        .strip_prefix(MAGIC.as_slice())
        .ok_or(BlobError::Malformed("not a blob of this KMS"))?;
    let (&version, rest) = rest
        .split_first()
        .ok_or(BlobError::Malformed("truncated"))?;
    if version != VERSION {
        return Err(BlobError::Malformed("unknown blob version"));
    }
    let (&len, rest) = rest
        .split_first()
        .ok_or(BlobError::Malformed("truncated"))?;
    let id = rest
        .get(..usize::from(len))
        .ok_or(BlobError::Malformed("truncated key id"))?;
    std::str::from_utf8(id).map_err(|_| BlobError::Malformed("key id is not UTF-8"))
}

fn aad(key_id: &str, context: &BTreeMap<String, String>) -> Vec<u8> {
    let mut out = AAD_DOMAIN.to_vec();
    out.push(0);
    out.push(key_id.len() as u8);
    out.extend_from_slice(key_id.as_bytes());
    out.extend_from_slice(&(context.len() as u32).to_be_bytes());
    for (k, v) in context {
        out.extend_from_slice(&(k.len() as u32).to_be_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

fn aead_key(master: &[u8; 32]) -> Result<LessSafeKey, BlobError> {
    UnboundKey::new(&AES_256_GCM, master)
        .map(LessSafeKey::new)
        .map_err(|_| BlobError::Seal("AES-256-GCM key setup"))
}

/// Seals `plaintext` under `master` for `key_id` and `context`.
pub fn seal(
    master: &[u8; 32],
    key_id: &str,
    context: &BTreeMap<String, String>,
    plaintext: &[u8],
) -> Result<Vec<u8>, BlobError> {
    if key_id.len() > MAX_KEY_ID_LEN {
        return Err(BlobError::Seal("key id too long"));
    }
    let key = aead_key(master)?;
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| BlobError::Seal("RNG"))?;
    let mut in_out = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad(key_id, context)),
        &mut in_out,
    )
    .map_err(|_| BlobError::Seal("AES-256-GCM"))?;
    let mut blob = MAGIC.to_vec();
    blob.push(VERSION);
    blob.push(key_id.len() as u8);
    blob.extend_from_slice(key_id.as_bytes());
    blob.extend_from_slice(&nonce);
    blob.extend_from_slice(&in_out);
    Ok(blob)
}

/// Opens a blob sealed by [`seal`] under the same master key and context.
pub fn open(
    master: &[u8; 32],
    blob: &[u8],
    context: &BTreeMap<String, String>,
) -> Result<Zeroizing<Vec<u8>>, BlobError> {
    let key_id = key_id_of(blob)?;
    let header = MAGIC.len() + 2 + key_id.len();
    let nonce: [u8; NONCE_LEN] = blob
        .get(header..header + NONCE_LEN)
        .and_then(|n| n.try_into().ok())
        .ok_or(BlobError::Malformed("truncated nonce"))?;
    let sealed = blob
        .get(header + NONCE_LEN..)
        .filter(|s| s.len() >= TAG_LEN)
        .ok_or(BlobError::Malformed("truncated ciphertext"))?;
    let key = aead_key(master)?;
    let mut in_out = Zeroizing::new(sealed.to_vec());
    let len = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(key_id, context)),
            in_out.as_mut_slice(),
        )
        .map_err(|_| BlobError::Authentication)?
        .len();
    in_out.truncate(len);
    Ok(in_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn round_trip_and_bindings() {
        let master = [7u8; 32];
        let c = ctx(&[("a", "1"), ("b", "2")]);
        let blob = seal(&master, "key-1", &c, b"secret").unwrap();
        assert_eq!(key_id_of(&blob).unwrap(), "key-1");
        assert_eq!(open(&master, &blob, &c).unwrap().as_slice(), b"secret");
        assert_eq!(
            open(&master, &blob, &ctx(&[("a", "1")])),
            Err(BlobError::Authentication)
        );
        assert_eq!(
            open(&master, &blob, &ctx(&[("a", "1"), ("b", "3")])),
            Err(BlobError::Authentication)
        );
        assert_eq!(open(&[8u8; 32], &blob, &c), Err(BlobError::Authentication));
        // Context pairs are unambiguous: ("ab","") != ("a","b").
        let blob2 = seal(&master, "k", &ctx(&[("ab", "")]), b"x").unwrap();
        assert!(open(&master, &blob2, &ctx(&[("a", "b")])).is_err());
        // Rewriting the key id in the header breaks authentication.
        let mut moved = blob.clone();
        moved[10] ^= 1;
        assert!(open(&master, &moved, &c).is_err());
    }

    #[test]
    fn malformed_blobs() {
        let master = [7u8; 32];
        let c = BTreeMap::new();
        for bad in [
            &b""[..],
            b"AKM",
            b"XXXX\x01\x00",
            b"AKMB\x02\x00",
            b"AKMB\x01",
            b"AKMB\x01\x05ab",
            b"AKMB\x01\x01k0123456789a",
            b"AKMB\x01\x01k0123456789ab0123",
        ] {
            assert!(
                matches!(open(&master, bad, &c), Err(BlobError::Malformed(_))),
                "{bad:?}"
            );
        }
        assert!(seal(&master, &"k".repeat(256), &c, b"x").is_err());
    }
}
