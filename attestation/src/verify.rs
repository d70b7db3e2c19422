//! The verification checklist, one step per function, in order.

use ciborium::Value;

use crate::anchor::TrustAnchor;
use crate::certificate::CertificateSummary;
use crate::chain::verify_certificate_path;
use crate::decode::{check_size_bounds, parse_cose_sign1, parse_payload, CoseSign1};
use crate::document::AttestationDocument;
use crate::error::{DecodeError, SignatureError, VerifyError};
use crate::es384::{fixed_signature_is_well_formed, Es384PublicKey};
use crate::policy::{apply_policy, Policy};

/// The COSE Sig_structure context string of COSE_Sign1 (RFC 9052 §4.4).
const SIG_STRUCTURE_CONTEXT: &str = "Signature1";

/// A document that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedDocument {
    /// The decoded payload.
    pub document: AttestationDocument,
    /// The validated certificate path, root (`cabundle[0]`) first, leaf last.
    pub chain: Vec<CertificateSummary>,
    /// SHA-256 (hex) of the trust anchor the path ends at.
    pub anchor_sha256: String,
    /// True when the anchor was the mock NSM root.
    pub anchor_is_mock: bool,
    /// True when the document comes from a debug-mode enclave (accepted by the policy).
    pub debug_mode: bool,
    /// The verification time used, UNIX ms.
    pub verified_at_ms: u64,
}

/// Full verification at time `at_unix_ms` (UNIX ms); returns the decoded, verified
/// document. The steps, in order: size bounds → COSE_Sign1 structure → payload syntax →
/// certificate path to the pinned anchor → COSE signature → policy.
pub fn verify(
    document: &[u8],
    anchor: &TrustAnchor,
    at_unix_ms: u64,
    policy: &Policy,
) -> Result<VerifiedDocument, VerifyError> {
    check_size_bounds(document)?;
    let cose = parse_cose_sign1(document)?;
    let payload = parse_payload(&cose.payload)?;
    let chain = verify_certificate_path(&payload, anchor, at_unix_ms)?;
    verify_cose_signature(&cose, &chain.leaf_key)?;
    apply_policy(&payload, at_unix_ms, policy)?;
    Ok(VerifiedDocument {
        debug_mode: payload.is_debug_mode(),
        document: payload,
        chain: chain.certificates,
        anchor_sha256: anchor.sha256_hex(),
        anchor_is_mock: anchor.is_mock(),
        verified_at_ms: at_unix_ms,
    })
}

/// Decoding only: size bounds, COSE structure and payload syntax; no signature, chain or
/// policy check (for `inspect`).
pub fn decode_unverified(document: &[u8]) -> Result<AttestationDocument, DecodeError> {
    check_size_bounds(document)?;
    let cose = parse_cose_sign1(document)?;
    parse_payload(&cose.payload)
}

/// Step 5: ES384 over Sig_structure = ["Signature1", protected (as received),
/// external_aad = h'', payload (as received)] with the leaf key (RFC 9052 §4.4).
fn verify_cose_signature(
    cose: &CoseSign1,
    leaf_key: &Es384PublicKey,
) -> Result<(), SignatureError> {
    let to_be_signed = sig_structure(&cose.protected, &cose.payload)?;
    if !fixed_signature_is_well_formed(&cose.signature) {
        return Err(SignatureError::Encoding);
    }
    if leaf_key.verify_fixed_signature(&to_be_signed, &cose.signature) {
        Ok(())
    } else {
        Err(SignatureError::Invalid)
    }
}

/// The CBOR encoding of the COSE_Sign1 Sig_structure.
pub(crate) fn sig_structure(protected: &[u8], payload: &[u8]) -> Result<Vec<u8>, SignatureError> {
    let structure = Value::Array(vec![
        Value::Text(SIG_STRUCTURE_CONTEXT.to_owned()),
        Value::Bytes(protected.to_vec()),
        Value::Bytes(Vec::new()),
        Value::Bytes(payload.to_vec()),
    ]);
    let mut out = Vec::with_capacity(protected.len() + payload.len() + 32);
    ciborium::ser::into_writer(&structure, &mut out).map_err(|_| SignatureError::Encoding)?;
    Ok(out)
}
