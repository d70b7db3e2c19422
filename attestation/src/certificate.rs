//! One certificate of the Nitro path: its readable summary, and the checks that need no
//! certificate but the one itself and its issuer (version, algorithm, key, signature).
//! Both the path validation and the trust anchor (its self-signature) use them.

use der::asn1::{AnyRef, ObjectIdentifier};
use der::{Decode, Encode, SliceReader};
use sha2::{Digest, Sha256};
use x509_cert::certificate::Version;
use x509_cert::Certificate;

use crate::error::{CertPosition, ChainError};
use crate::es384::Es384PublicKey;
use crate::oids;

/// A readable summary of one certificate of the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSummary {
    /// Where it sits in the document.
    pub position: CertPosition,
    /// Subject (RFC 4514).
    pub subject: String,
    /// Issuer (RFC 4514).
    pub issuer: String,
    /// Serial number, hex.
    pub serial_hex: String,
    /// notBefore, UNIX ms.
    pub not_before_ms: u64,
    /// notAfter, UNIX ms.
    pub not_after_ms: u64,
    /// SHA-256 of the DER, hex.
    pub sha256_hex: String,
}

impl CertificateSummary {
    /// Summarizes a DER certificate without verifying anything.
    pub fn from_der(position: CertPosition, der: &[u8]) -> Result<Self, ChainError> {
        let cert = Certificate::from_der(der).map_err(|e| ChainError::Parse {
            position,
            message: e.to_string(),
        })?;
        Ok(Self::from_parsed(position, der, &cert))
    }

    fn from_parsed(position: CertPosition, der: &[u8], cert: &Certificate) -> Self {
        let tbs = &cert.tbs_certificate;
        Self::with_names(
            position,
            der,
            cert,
            tbs.subject.to_string(),
            tbs.issuer.to_string(),
        )
    }

    pub(crate) fn with_names(
        position: CertPosition,
        der: &[u8],
        cert: &Certificate,
        subject: String,
        issuer: String,
    ) -> Self {
        let tbs = &cert.tbs_certificate;
        CertificateSummary {
            position,
            subject,
            issuer,
            serial_hex: hex::encode(tbs.serial_number.as_bytes()),
            not_before_ms: unix_ms(tbs.validity.not_before),
            not_after_ms: unix_ms(tbs.validity.not_after),
            sha256_hex: hex::encode(Sha256::digest(der)),
        }
    }
}

/// One parsed certificate with what the checks need.
pub(crate) struct PathCert<'a> {
    pub(crate) position: CertPosition,
    pub(crate) der: &'a [u8],
    pub(crate) cert: Certificate,
}

/// The checks a trust anchor passes once, when it is built: X.509 v3, ecdsa-with-SHA384,
/// a P-384 key, and a self-signature that verifies with that key under its own name.
pub(crate) fn check_self_signed_root(der: &[u8], cert: Certificate) -> Result<(), ChainError> {
    let root = PathCert {
        position: CertPosition::Bundle(0),
        der,
        cert,
    };
    check_version(&root)?;
    check_signature_algorithm(&root)?;
    let key = p384_public_key(&root)?;
    check_issued_by(&root, &root, &key)
}

/// Extensions (and so CA constraints) exist only in X.509 v3.
pub(crate) fn check_version(entry: &PathCert<'_>) -> Result<(), ChainError> {
    let version = entry.cert.tbs_certificate.version;
    if version != Version::V3 {
        return Err(ChainError::Version {
            position: entry.position,
            actual: format!("{version:?}"),
        });
    }
    Ok(())
}

/// The certificate is signed with ecdsa-with-SHA384, parameters absent (RFC 5758 §3.2),
/// and the TBS copy of the algorithm agrees (RFC 5280 §4.1.1.2).
pub(crate) fn check_signature_algorithm(entry: &PathCert<'_>) -> Result<(), ChainError> {
    let alg = &entry.cert.signature_algorithm;
    if alg.oid != oids::ECDSA_WITH_SHA384 || alg.parameters.is_some() {
        return Err(ChainError::SignatureAlgorithm {
            position: entry.position,
            actual: match &alg.parameters {
                Some(_) => format!("{} with parameters", alg.oid),
                None => alg.oid.to_string(),
            },
        });
    }
    if entry.cert.tbs_certificate.signature != *alg {
        return Err(ChainError::SignatureAlgorithmMismatch {
            position: entry.position,
        });
    }
    Ok(())
}

/// The subject key is id-ecPublicKey on secp384r1 and a valid point.
pub(crate) fn p384_public_key(entry: &PathCert<'_>) -> Result<Es384PublicKey, ChainError> {
    let spki = &entry.cert.tbs_certificate.subject_public_key_info;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
    if spki.algorithm.oid != oids::ID_EC_PUBLIC_KEY || curve != Some(oids::SECP384R1) {
        return Err(ChainError::KeyAlgorithm {
            position: entry.position,
            actual: match curve {
                Some(curve) => format!("{} on {curve}", spki.algorithm.oid),
                None => format!("{} without a named curve", spki.algorithm.oid),
            },
        });
    }
    spki.subject_public_key
        .as_bytes()
        .and_then(Es384PublicKey::from_sec1)
        .ok_or(ChainError::PublicKey {
            position: entry.position,
        })
}

/// The certificate names `issuer` as its issuer and carries a valid signature by its key
/// over the exact TBSCertificate bytes received.
pub(crate) fn check_issued_by(
    entry: &PathCert<'_>,
    issuer: &PathCert<'_>,
    issuer_key: &Es384PublicKey,
) -> Result<(), ChainError> {
    if entry.cert.tbs_certificate.issuer != issuer.cert.tbs_certificate.subject {
        return Err(ChainError::IssuerName {
            position: entry.position,
            issuer_position: issuer.position,
            expected: issuer.cert.tbs_certificate.subject.to_string(),
            actual: entry.cert.tbs_certificate.issuer.to_string(),
        });
    }
    let bad_signature = ChainError::Signature {
        position: entry.position,
        issuer_position: issuer.position,
    };
    let tbs = raw_tbs_certificate(entry.der).ok_or_else(|| bad_signature.clone())?;
    let signature = entry
        .cert
        .signature
        .as_bytes()
        .ok_or_else(|| bad_signature.clone())?;
    if issuer_key.verify_der_signature(&tbs, signature) {
        Ok(())
    } else {
        Err(bad_signature)
    }
}

/// The TBSCertificate exactly as received: the first element of the outer SEQUENCE.
fn raw_tbs_certificate(der: &[u8]) -> Option<Vec<u8>> {
    let outer = AnyRef::from_der(der).ok()?;
    let mut reader = SliceReader::new(outer.value()).ok()?;
    let tbs = AnyRef::decode(&mut reader).ok()?;
    tbs.to_der().ok()
}

pub(crate) fn unix_ms(time: x509_cert::time::Time) -> u64 {
    u64::try_from(time.to_unix_duration().as_millis()).unwrap_or(u64::MAX)
}
