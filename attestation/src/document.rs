//! The decoded attestation document.

use std::collections::BTreeMap;

use crate::certificate::CertificateSummary;
use crate::error::{CertPosition, ChainError};

/// The PCRs that are all zero in a debug-mode enclave's documents (AWS Nitro Enclaves User
/// Guide, "Where to get an enclave's measurements": in debug mode PCR0, 1 and 2 read as
/// zeros).
pub const DEBUG_MODE_PCRS: [u16; 3] = [0, 1, 2];

/// An attestation document's payload, as decoded (verified or not, depending on where it
/// came from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationDocument {
    /// The issuing NSM module id (`i-…-enc…`).
    pub module_id: String,
    /// The digest of the PCRs; always "SHA384".
    pub digest: String,
    /// Creation time, UNIX milliseconds.
    pub timestamp_ms: u64,
    /// PCR index → value.
    pub pcrs: BTreeMap<u16, Vec<u8>>,
    /// The leaf certificate (DER) whose key signed the document.
    pub certificate: Vec<u8>,
    /// CA certificates (DER): `cabundle[0]` is the root, then intermediates towards the leaf.
    pub cabundle: Vec<Vec<u8>>,
    /// The `public_key` the enclave asked to include.
    pub public_key: Option<Vec<u8>>,
    /// The `user_data` the enclave asked to include.
    pub user_data: Option<Vec<u8>>,
    /// The `nonce` the enclave asked to include.
    pub nonce: Option<Vec<u8>>,
}

impl AttestationDocument {
    /// True when PCR0, PCR1 and PCR2 are all present and all zero: the document comes from
    /// an enclave started in debug mode, whose memory the parent instance can read.
    pub fn is_debug_mode(&self) -> bool {
        DEBUG_MODE_PCRS.iter().all(|index| {
            self.pcrs
                .get(index)
                .is_some_and(|value| value.iter().all(|b| *b == 0))
        })
    }

    /// Summaries of `cabundle` (root first) followed by the leaf, without any verification.
    /// Certificates that do not parse are reported as errors in place.
    pub fn certificate_summaries(&self) -> Vec<Result<CertificateSummary, ChainError>> {
        self.cabundle
            .iter()
            .enumerate()
            .map(|(i, der)| CertificateSummary::from_der(CertPosition::Bundle(i), der))
            .chain(std::iter::once(CertificateSummary::from_der(
                CertPosition::Leaf,
                &self.certificate,
            )))
            .collect()
    }
}
