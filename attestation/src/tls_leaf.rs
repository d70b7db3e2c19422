//! The end-entity certificate an issuer presented in a TLS handshake, as an auditor
//! records it: who it names, who issued it, when it ends, and the SHA-256 of its
//! SubjectPublicKeyInfo — the value the enclave attests as `tls_spki_sha256`, so that a
//! certificate for a key the enclave never attested is seen for what it is.
//!
//! The TLS client has already validated the certificate (WebPKI path to the trusted
//! roots, name, validity) before it is summarized here; this module only reads it.

use der::{Decode, Encode};
use sha2::{Digest, Sha256};
use x509_cert::Certificate;

/// Why a presented certificate could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsLeafError {
    /// The DER is not an X.509 certificate.
    #[error("the TLS leaf certificate is not DER X.509: {0}")]
    Parse(String),
    /// Its SubjectPublicKeyInfo cannot be encoded again (malformed key).
    #[error("the TLS leaf certificate's SubjectPublicKeyInfo cannot be encoded: {0}")]
    Spki(String),
}

/// The TLS server certificate an issuer presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsLeaf {
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
    /// SHA-256 of the certificate's DER: differs between two certificates for one key
    /// (a renewal), unlike [`spki_sha256`](Self::spki_sha256).
    pub cert_sha256: [u8; 32],
    /// SHA-256 of the DER SubjectPublicKeyInfo: the key the handshake proved possession of.
    pub spki_sha256: [u8; 32],
}

impl TlsLeaf {
    /// Reads a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<TlsLeaf, TlsLeafError> {
        let cert = Certificate::from_der(der).map_err(|e| TlsLeafError::Parse(e.to_string()))?;
        let tbs = &cert.tbs_certificate;
        let spki = tbs
            .subject_public_key_info
            .to_der()
            .map_err(|e| TlsLeafError::Spki(e.to_string()))?;
        Ok(TlsLeaf {
            subject: tbs.subject.to_string(),
            issuer: tbs.issuer.to_string(),
            serial_hex: hex::encode(tbs.serial_number.as_bytes()),
            not_before_ms: unix_ms(tbs.validity.not_before),
            not_after_ms: unix_ms(tbs.validity.not_after),
            cert_sha256: Sha256::digest(der).into(),
            spki_sha256: Sha256::digest(&spki).into(),
        })
    }

    /// SHA-256 of the SubjectPublicKeyInfo, lower-case hex.
    pub fn spki_sha256_hex(&self) -> String {
        hex::encode(self.spki_sha256)
    }

    /// One line naming the certificate: subject, issuer, serial, notAfter.
    pub fn describe(&self) -> String {
        format!(
            "subject {:?}, issuer {:?}, serial {}, notAfter {}",
            self.subject,
            self.issuer,
            self.serial_hex,
            crate::timefmt::rfc3339_ms(self.not_after_ms)
        )
    }
}

fn unix_ms(time: x509_cert::time::Time) -> u64 {
    u64::try_from(time.to_unix_duration().as_millis()).unwrap_or(u64::MAX)
}
