//! ES384 (ECDSA on P-384 with SHA-384) verification through aws-lc-rs.
//!
//! A document costs five verifications (four certificates and the COSE signature); the
//! assembly of aws-lc makes each several times cheaper than a portable implementation.

use aws_lc_rs::signature::{
    ParsedPublicKey, UnparsedPublicKey, ECDSA_P384_SHA384_ASN1, ECDSA_P384_SHA384_FIXED,
};

/// Length of a COSE ES384 signature: r ‖ s, 48 bytes each (RFC 9053 §2.1).
pub(crate) const COSE_ES384_SIGNATURE_BYTES: usize = 96;

/// The order n of the P-384 group, big-endian (SEC 2 v2 §2.5.1; FIPS 186-4 D.1.2.4).
const P384_ORDER: [u8; 48] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xc7, 0x63, 0x4d, 0x81, 0xf4, 0x37, 0x2d, 0xdf,
    0x58, 0x1a, 0x0d, 0xb2, 0x48, 0xb0, 0xa7, 0x7a, 0xec, 0xec, 0x19, 0x6a, 0xcc, 0xc5, 0x29, 0x73,
];

/// A COSE ES384 signature is well formed: [`COSE_ES384_SIGNATURE_BYTES`] long, and r and s
/// each in [1, n-1] (SEC 1 v2 §4.1.4 step 1). Anything else is an encoding error rather
/// than a signature that merely fails.
pub(crate) fn fixed_signature_is_well_formed(signature: &[u8]) -> bool {
    let in_range = |scalar: &[u8]| scalar.iter().any(|&b| b != 0) && scalar < P384_ORDER.as_slice();
    signature.len() == COSE_ES384_SIGNATURE_BYTES
        && in_range(&signature[..48])
        && in_range(&signature[48..])
}

/// A P-384 public key, checked to be a point on the curve when it was parsed.
#[derive(Clone)]
pub(crate) struct Es384PublicKey {
    /// The SEC1 point as received, for the COSE (fixed-length) signature form.
    sec1: Vec<u8>,
    /// The parsed key for X.509 (DER) signatures.
    certificate_verifier: ParsedPublicKey,
}

impl std::fmt::Debug for Es384PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Es384PublicKey")
            .field("sec1", &hex::encode(&self.sec1))
            .finish()
    }
}

impl Es384PublicKey {
    /// Parses a SEC1 point; `None` if it is not a point on P-384.
    pub(crate) fn from_sec1(sec1: &[u8]) -> Option<Es384PublicKey> {
        let certificate_verifier = ParsedPublicKey::new(&ECDSA_P384_SHA384_ASN1, sec1).ok()?;
        Some(Es384PublicKey {
            sec1: sec1.to_vec(),
            certificate_verifier,
        })
    }

    /// Verifies an X.509 signature: a DER `Ecdsa-Sig-Value` (RFC 5758 §3.2) over `message`.
    pub(crate) fn verify_der_signature(&self, message: &[u8], signature: &[u8]) -> bool {
        self.certificate_verifier
            .verify_sig(message, signature)
            .is_ok()
    }

    /// Verifies a COSE signature: r ‖ s of [`COSE_ES384_SIGNATURE_BYTES`] over `message`.
    pub(crate) fn verify_fixed_signature(&self, message: &[u8], signature: &[u8]) -> bool {
        signature.len() == COSE_ES384_SIGNATURE_BYTES
            && UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, &self.sec1)
                .verify(message, signature)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED_SIGNING;
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P384_SHA384_ASN1_SIGNING};

    fn key_pair(alg: &'static aws_lc_rs::signature::EcdsaSigningAlgorithm) -> EcdsaKeyPair {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref()).unwrap()
    }

    #[test]
    fn der_signatures_verify_and_tampering_fails() {
        let pair = key_pair(&ECDSA_P384_SHA384_ASN1_SIGNING);
        let key = Es384PublicKey::from_sec1(pair.public_key().as_ref()).unwrap();
        let sig = pair.sign(&SystemRandom::new(), b"tbs").unwrap();
        assert!(key.verify_der_signature(b"tbs", sig.as_ref()));
        assert!(!key.verify_der_signature(b"tbt", sig.as_ref()));
        let mut bad = sig.as_ref().to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(!key.verify_der_signature(b"tbs", &bad));
        // The fixed form is not accepted where DER is expected.
        assert!(!key.verify_fixed_signature(b"tbs", sig.as_ref()));
    }

    #[test]
    fn fixed_signatures_verify_and_wrong_lengths_fail() {
        let pair = key_pair(&ECDSA_P384_SHA384_FIXED_SIGNING);
        let key = Es384PublicKey::from_sec1(pair.public_key().as_ref()).unwrap();
        let sig = pair.sign(&SystemRandom::new(), b"payload").unwrap();
        assert_eq!(sig.as_ref().len(), COSE_ES384_SIGNATURE_BYTES);
        assert!(key.verify_fixed_signature(b"payload", sig.as_ref()));
        assert!(!key.verify_fixed_signature(b"payloae", sig.as_ref()));
        assert!(!key.verify_fixed_signature(b"payload", &sig.as_ref()[..95]));
        let mut longer = sig.as_ref().to_vec();
        longer.push(0);
        assert!(!key.verify_fixed_signature(b"payload", &longer));
    }

    #[test]
    fn scalars_outside_the_group_order_are_malformed() {
        let one = {
            let mut s = [0u8; 48];
            s[47] = 1;
            s
        };
        let mut n_minus_one = P384_ORDER;
        n_minus_one[47] -= 1;
        let ok = [one, n_minus_one].concat();
        assert!(fixed_signature_is_well_formed(&ok));
        assert!(fixed_signature_is_well_formed(&[n_minus_one, one].concat()));
        for bad_scalar in [[0u8; 48], P384_ORDER, [0xff; 48]] {
            assert!(!fixed_signature_is_well_formed(&[bad_scalar, one].concat()));
            assert!(!fixed_signature_is_well_formed(&[one, bad_scalar].concat()));
        }
        assert!(!fixed_signature_is_well_formed(&ok[..95]));
    }

    #[test]
    fn points_off_the_curve_are_refused() {
        let pair = key_pair(&ECDSA_P384_SHA384_FIXED_SIGNING);
        let mut point = pair.public_key().as_ref().to_vec();
        point[50] ^= 1;
        assert!(Es384PublicKey::from_sec1(&point).is_none());
        assert!(Es384PublicKey::from_sec1(&[]).is_none());
        assert!(Es384PublicKey::from_sec1(&[4; 97]).is_none());
        // A P-256 point is not a P-384 key.
        assert!(Es384PublicKey::from_sec1(&[4; 65]).is_none());
    }
}
