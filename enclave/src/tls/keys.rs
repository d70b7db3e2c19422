//! The issuer's TLS key and its ACME account key, both derived from the seed.
//!
//! Each has its own HKDF label (same salt and seed as the signing keys, see
//! [`crate::keys::derive_labelled_secret`]): [`TLS_KEY_LABEL`] and
//! [`ACME_ACCOUNT_KEY_LABEL`]. Every enclave that unseals the seed, on any boot, has the
//! same TLS key (so a cached certificate stays valid across restarts and a fleet) and the
//! same ACME account (a `newAccount` with the same key returns the same account URL,
//! RFC 8555 section 7.3.1), which the CAA `accounturi` pins.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::keys::{derive_labelled_secret, thumbprint_p256, KeyError, Seed};

/// HKDF `info` of the issuer's TLS key (P-256).
pub const TLS_KEY_LABEL: &str = "tls/issuer/v1";
/// HKDF `info` of the ACME account key (P-256, ES256 JWS, RFC 8555 section 6.2).
pub const ACME_ACCOUNT_KEY_LABEL: &str = "acme/account/v1";

/// A P-256 key derived from the seed: its PKCS#8 private key (zeroized on drop, never
/// printed) and its public forms.
pub struct DerivedKey {
    pkcs8: Zeroizing<Vec<u8>>,
    spki_der: Vec<u8>,
    spki_sha256: [u8; 32],
    thumbprint: String,
}

impl fmt::Debug for DerivedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DerivedKey")
            .field("spki_sha256", &hex::encode(self.spki_sha256))
            .field("thumbprint", &self.thumbprint)
            .field("private", &"<redacted>")
            .finish()
    }
}

impl DerivedKey {
    /// Derives the key under `label`.
    pub fn derive(seed: &Seed, label: &str) -> Result<DerivedKey, KeyError> {
        let secret = derive_labelled_secret(seed, label)?;
        let pkcs8 = secret
            .to_pkcs8_der()
            .map_err(|e| KeyError::Rejected(format!("PKCS#8 encoding: {e}")))?;
        let public = secret.public_key();
        let spki_der = public
            .to_public_key_der()
            .map_err(|e| KeyError::Spki(e.to_string()))?
            .into_vec();
        let point = public.to_encoded_point(false);
        let (x, y) = match (point.x(), point.y()) {
            (Some(x), Some(y)) => (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y)),
            _ => return Err(KeyError::Rejected("public point is the identity".into())),
        };
        Ok(DerivedKey {
            pkcs8: Zeroizing::new(pkcs8.as_bytes().to_vec()),
            spki_sha256: Sha256::digest(&spki_der).into(),
            spki_der,
            thumbprint: thumbprint_p256(&x, &y),
        })
    }

    /// The PKCS#8 DER private key. Stays inside the enclave: handed only to rustls,
    /// rcgen and the ACME client, never logged and never put in a wire message.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// DER SubjectPublicKeyInfo of the public key.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// SHA-256 of [`spki_der`](Self::spki_der).
    pub fn spki_sha256(&self) -> [u8; 32] {
        self.spki_sha256
    }

    /// RFC 7638 thumbprint of the public key, base64url without padding.
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }
}

/// The two keys of the issuer's TLS.
#[derive(Debug)]
pub struct IssuerTlsKeys {
    /// The key the TLS handshake proves and the certificate certifies.
    pub tls: DerivedKey,
    /// The ACME account key.
    pub account: DerivedKey,
}

impl IssuerTlsKeys {
    /// Derives both keys from the seed.
    pub fn derive(seed: &Seed) -> Result<IssuerTlsKeys, KeyError> {
        Ok(IssuerTlsKeys {
            tls: DerivedKey::derive(seed, TLS_KEY_LABEL)?,
            account: DerivedKey::derive(seed, ACME_ACCOUNT_KEY_LABEL)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SigningKey;

    fn seed(b: u8) -> Seed {
        Seed::from_slice(&[b; 32]).unwrap()
    }

    #[test]
    fn derived_keys_are_deterministic_and_tied_to_the_seed() {
        let a = IssuerTlsKeys::derive(&seed(7)).unwrap();
        let b = IssuerTlsKeys::derive(&seed(7)).unwrap();
        assert_eq!(a.tls.spki_der(), b.tls.spki_der());
        assert_eq!(a.account.spki_der(), b.account.spki_der());
        assert_eq!(a.tls.pkcs8_der(), b.tls.pkcs8_der());
        let other = IssuerTlsKeys::derive(&seed(8)).unwrap();
        assert_ne!(a.tls.spki_der(), other.tls.spki_der());
        assert_ne!(a.account.spki_der(), other.account.spki_der());
    }

    #[test]
    fn tls_account_and_signing_keys_are_distinct() {
        let s = seed(7);
        let keys = IssuerTlsKeys::derive(&s).unwrap();
        let signing = SigningKey::derive(&s, 1).unwrap();
        assert_ne!(keys.tls.spki_der(), keys.account.spki_der());
        assert_ne!(keys.tls.spki_der(), signing.spki_der());
        assert_ne!(keys.account.spki_der(), signing.spki_der());
        assert_ne!(keys.account.thumbprint(), signing.kid());
    }

    #[test]
    fn the_spki_hash_is_sha256_of_the_spki_and_debug_hides_the_key() {
        let keys = IssuerTlsKeys::derive(&seed(9)).unwrap();
        let want: [u8; 32] = Sha256::digest(keys.tls.spki_der()).into();
        assert_eq!(keys.tls.spki_sha256(), want);
        let printed = format!("{keys:?}");
        assert!(printed.contains("<redacted>"));
        assert!(!printed.contains(&hex::encode(keys.tls.pkcs8_der())));
    }
}
