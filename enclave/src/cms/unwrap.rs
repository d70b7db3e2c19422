//! The enclave's per-boot RSA-2048 recipient key and the unwrap of a KMS
//! `CiphertextForRecipient`: RSAES-OAEP-SHA-256 decryption of the content key
//! (constant time, aws-lc-rs), then AES-256-CBC with PKCS#7 padding. The content key and
//! the plaintext live in zeroizing buffers; the private key never leaves [`RecipientKey`].
//!
//! [`RecipientKey::from_pkcs8_pem`] reads one PEM block by hand for fixtures, with the
//! `base64` the crate already uses rather than a PEM crate in the enclave image.

use std::fmt;

use aws_lc_rs::cipher::{DecryptionContext, PaddedBlockDecryptingKey, UnboundCipherKey, AES_256};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rsa::{
    KeySize, OaepPrivateDecryptingKey, PrivateDecryptingKey, OAEP_SHA256_MGF1SHA256,
};
use zeroize::Zeroizing;

use super::enveloped::parse_enveloped_data;
use super::{hex_lower, CmsError, Result};

/// AES-256 key length (FIPS 197).
const CONTENT_KEY_LEN: usize = 32;

/// The enclave's per-boot RSA-2048 key: KMS encrypts `CiphertextForRecipient` to its
/// public half, named in the attestation document's `public_key`. The private half
/// never leaves this value (no export; `Debug` shows only a fingerprint).
pub struct RecipientKey {
    key: OaepPrivateDecryptingKey,
    spki_der: Vec<u8>,
}

impl fmt::Debug for RecipientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.spki_der);
        f.debug_struct("RecipientKey")
            .field("bits", &self.key.key_size_bits())
            .field("spki_sha256", &hex_lower(digest.as_ref()))
            .field("private_key", &"<redacted>")
            .finish()
    }
}

impl RecipientKey {
    /// A fresh RSA-2048 key (the size KMS accepts for `RSAES_OAEP_SHA_256` recipients).
    pub fn generate() -> Result<RecipientKey> {
        let key = PrivateDecryptingKey::generate(KeySize::Rsa2048)
            .map_err(|_| CmsError::KeyGeneration)?;
        Self::from_private_key(key)
    }

    /// From a PKCS#8 DER private key (tests and fixtures).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<RecipientKey> {
        let key = PrivateDecryptingKey::from_pkcs8(der).map_err(|e| CmsError::KeyRejected {
            reason: e.to_string(),
        })?;
        Self::from_private_key(key)
    }

    /// From a PEM `PRIVATE KEY` (PKCS#8) block (tests and fixtures).
    pub fn from_pkcs8_pem(pem: &str) -> Result<RecipientKey> {
        use base64::Engine as _;
        const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
        const END: &str = "-----END PRIVATE KEY-----";
        let rejected = |reason: &str| CmsError::KeyRejected {
            reason: reason.to_owned(),
        };
        let start = pem
            .find(BEGIN)
            .ok_or_else(|| rejected("no \"-----BEGIN PRIVATE KEY-----\" line"))?
            + BEGIN.len();
        let end = pem[start..]
            .find(END)
            .ok_or_else(|| rejected("no \"-----END PRIVATE KEY-----\" line"))?
            + start;
        let body: Zeroizing<String> = Zeroizing::new(
            pem[start..end]
                .chars()
                .filter(|c| !c.is_ascii_whitespace())
                .collect(),
        );
        let der = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(body.as_bytes())
                .map_err(|_| rejected("PEM body is not base64"))?,
        );
        Self::from_pkcs8_der(&der)
    }

    fn from_private_key(key: PrivateDecryptingKey) -> Result<RecipientKey> {
        let spki_der = key
            .public_key()
            .as_der()
            .map_err(|_| CmsError::KeyRejected {
                reason: "cannot encode the public key".to_owned(),
            })?
            .as_ref()
            .to_vec();
        let key = OaepPrivateDecryptingKey::new(key).map_err(|_| CmsError::KeyRejected {
            reason: "not usable for RSA-OAEP".to_owned(),
        })?;
        Ok(RecipientKey { key, spki_der })
    }

    /// The public key as X.509 `SubjectPublicKeyInfo` DER (the attestation document's
    /// `public_key`).
    pub fn public_key_spki_der(&self) -> Vec<u8> {
        self.spki_der.clone()
    }

    /// RSA modulus size in bits.
    pub fn bits(&self) -> usize {
        self.key.key_size_bits()
    }

    /// RSA-OAEP-SHA-256 (MGF1-SHA-256, empty label) decryption of the content key.
    pub(super) fn unwrap_content_key(&self, encrypted_key: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let expected = self.key.key_size_bytes();
        if encrypted_key.len() != expected {
            return Err(CmsError::EncryptedKeyLength {
                expected,
                actual: encrypted_key.len(),
            });
        }
        let mut buffer = Zeroizing::new(vec![0u8; self.key.min_output_size()]);
        let plaintext = self
            .key
            .decrypt(&OAEP_SHA256_MGF1SHA256, encrypted_key, &mut buffer, None)
            .map_err(|_| CmsError::KeyUnwrap)?;
        Ok(Zeroizing::new(plaintext.to_vec()))
    }
}

/// Unwraps a KMS `CiphertextForRecipient`: parses the `EnvelopedData`, unwraps the
/// content key with `key` (RSA-OAEP-SHA-256) and decrypts the content (AES-256-CBC,
/// PKCS#7). The plaintext is zeroized on drop.
pub fn unwrap_ciphertext_for_recipient(
    ber: &[u8],
    key: &RecipientKey,
) -> Result<Zeroizing<Vec<u8>>> {
    let enveloped = parse_enveloped_data(ber)?;
    let content_key = key.unwrap_content_key(&enveloped.encrypted_key)?;
    if content_key.len() != CONTENT_KEY_LEN {
        return Err(CmsError::ContentKeyLength {
            expected: CONTENT_KEY_LEN,
            actual: content_key.len(),
        });
    }
    let cipher_key =
        UnboundCipherKey::new(&AES_256, &content_key).map_err(|_| CmsError::ContentDecrypt)?;
    let decrypting =
        PaddedBlockDecryptingKey::cbc_pkcs7(cipher_key).map_err(|_| CmsError::ContentDecrypt)?;
    let mut buffer = Zeroizing::new(enveloped.ciphertext);
    let plaintext = decrypting
        .decrypt(
            &mut buffer,
            DecryptionContext::Iv128(FixedLength::from(enveloped.iv)),
        )
        .map_err(|_| CmsError::ContentDecrypt)?;
    Ok(Zeroizing::new(plaintext.to_vec()))
}
