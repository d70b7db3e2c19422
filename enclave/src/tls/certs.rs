//! Certificates the enclave makes for its own TLS key, with rcgen: the self-signed
//! certificate served until a CA certifies the key, the RFC 8737 TLS-ALPN-01 challenge
//! certificate, and the CSR of an order.

use std::sync::Arc;

use rcgen::{CertificateParams, CustomExtension, DistinguishedName, DnType, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use super::keys::DerivedKey;

/// Failures making a certificate.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused the parameters or the key.
    #[error("cannot make the certificate: {0}")]
    Rcgen(String),
    /// rustls refused the key.
    #[error("rustls refused the TLS key: {0}")]
    Rustls(String),
}

fn rcgen_key(key: &DerivedKey) -> Result<KeyPair, CertError> {
    let der = PrivatePkcs8KeyDer::from(key.pkcs8_der());
    KeyPair::try_from(&der).map_err(|e| CertError::Rcgen(e.to_string()))
}

fn params_for(hostname: &str) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::new(vec![hostname.to_string()])
        .map_err(|e| CertError::Rcgen(e.to_string()))?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, hostname);
    Ok(params)
}

/// A self-signed certificate for `hostname` over the TLS key: served before a CA has
/// certified the key, so the attested key hash is checkable from the first handshake.
pub fn self_signed(key: &DerivedKey, hostname: &str) -> Result<CertificateDer<'static>, CertError> {
    let signer = rcgen_key(key)?;
    let cert = params_for(hostname)?
        .self_signed(&signer)
        .map_err(|e| CertError::Rcgen(e.to_string()))?;
    Ok(cert.der().clone())
}

/// The RFC 8737 section 3 challenge certificate: self-signed, subjectAltName = the one
/// `hostname`, and the critical `id-pe-acmeIdentifier` extension holding the SHA-256 of
/// the key authorization.
pub fn challenge_certificate(
    key: &DerivedKey,
    hostname: &str,
    key_authorization_sha256: &[u8],
) -> Result<CertificateDer<'static>, CertError> {
    let signer = rcgen_key(key)?;
    let mut params = params_for(hostname)?;
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(
        key_authorization_sha256,
    )];
    let cert = params
        .self_signed(&signer)
        .map_err(|e| CertError::Rcgen(e.to_string()))?;
    Ok(cert.der().clone())
}

/// The DER CSR of an order: the TLS key, subjectAltName = `hostname`.
pub fn csr(key: &DerivedKey, hostname: &str) -> Result<Vec<u8>, CertError> {
    let signer = rcgen_key(key)?;
    let csr = params_for(hostname)?
        .serialize_request(&signer)
        .map_err(|e| CertError::Rcgen(e.to_string()))?;
    Ok(csr.der().to_vec())
}

/// A rustls certified key: `chain` (leaf first) with the TLS key as signer. The key is
/// loaded by aws-lc-rs (the provider of every configuration built here, never a process
/// default) from a borrowed view of the zeroized PKCS#8 bytes, so no further copy of the
/// private key is left behind.
pub fn certified_key(
    key: &DerivedKey,
    chain: Vec<CertificateDer<'static>>,
) -> Result<Arc<CertifiedKey>, CertError> {
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.pkcs8_der()));
    let signer = rustls::crypto::aws_lc_rs::sign::any_ecdsa_type(&der)
        .map_err(|e| CertError::Rustls(e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(chain, signer)))
}
