//! Decoding and verification of AWS Nitro Enclaves attestation documents.
//!
//! [`verify`] implements this checklist, in this order, and stops at the first failure
//! with an error that names the step ([`Check`]) and the field, expected vs actual:
//!
//! 1. **size bounds**: not empty, at most [`MAX_DOCUMENT_BYTES`];
//! 2. **COSE_Sign1 structure**: untagged or tag 18; `[protected, unprotected, payload,
//!    signature]`; protected header `{1: -35}` (ES384) only; 96-byte signature; no
//!    trailing bytes;
//! 3. **payload syntax**: exactly the fields of the AWS specification with their types and
//!    bounds;
//! 4. **certificate path**: leaf ← `cabundle` (root first) ← pinned [`TrustAnchor`], ECDSA
//!    P-384 / SHA-384 only, every certificate valid at the chosen time, CA and key-usage
//!    constraints;
//! 5. **COSE signature**: ES384 over the Sig_structure of the bytes exactly as received;
//! 6. **policy** ([`Policy`]): expected PCRs, debug mode, nonce, user_data, public_key,
//!    age and clock skew.
//!
//! ```no_run
//! use agentkeys_attestation::{verify, Policy, TrustAnchor};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let document = std::fs::read("document.cose")?;
//! let now_ms = 1_657_117_102_484;
//! let verified = verify(&document, &TrustAnchor::aws_nitro_root_g1(), now_ms, &Policy::default())?;
//! println!("module {}", verified.document.module_id);
//! # Ok(()) }
//! ```

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod anchor;
mod certificate;
mod chain;
mod clock;
mod decode;
mod document;
mod error;
mod es384;
/// The issuer's JWKS and ES256 signatures checked against it.
pub mod jwks;
/// The measurements file an operator publishes for an enclave image (`nitro-cli` JSON).
pub mod measurements;
mod oids;
mod policy;
mod timefmt;
/// The TLS server certificate an issuer presented, as an auditor records it.
pub mod tls_leaf;
mod verify;

#[cfg(feature = "cli")]
pub mod online;
/// `agentkeys-attest watch`: what one audit of a live issuer showed, compared with the
/// first one.
#[cfg(feature = "cli")]
pub mod watch;

pub use anchor::{
    TrustAnchor, AWS_NITRO_ROOT_G1_PEM, AWS_NITRO_ROOT_G1_SHA256, MOCK_ROOT_ORGANIZATION,
};
pub use certificate::CertificateSummary;
pub use clock::now_unix_ms;
pub use decode::{
    COSE_ALG_ES384, COSE_SIGN1_TAG, DIGEST_SHA384, ES384_SIGNATURE_BYTES, MAX_CERTIFICATE_BYTES,
    MAX_DOCUMENT_BYTES, MAX_PCR_INDEX, MAX_USER_FIELD_BYTES, PCR_LENGTHS,
};
pub use document::{AttestationDocument, DEBUG_MODE_PCRS};
pub use error::{
    error_chain, AnchorError, CertPosition, ChainError, Check, DecodeError, PolicyError,
    SignatureError, VerifyError,
};
pub use measurements::MeasurementsError;
pub use policy::{expected_pcrs_from_measurements, Policy, DEFAULT_CLOCK_SKEW};
pub use verify::{decode_unverified, verify, VerifiedDocument};

/// Renders UNIX milliseconds as RFC 3339 (UTC); empty when out of range.
pub fn format_unix_ms(ms: u64) -> String {
    timefmt::rfc3339_ms(ms)
}
