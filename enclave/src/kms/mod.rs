//! Unsealing the issuer seed with AWS KMS, called from inside the enclave (the unseal
//! sequence and decisions in `docs/architecture.md`, "Sequences" and "Unseal decisions").
//!
//! The enclave is its own KMS client: `aws-sdk-kms` with the parent's lent credentials, and
//! an HTTP transport whose TLS terminates *inside* the enclave. In production the bytes
//! travel over a vsock stream to the parent's `vsock-proxy` (CID 3), which only forwards
//! them to `kms.<region>.amazonaws.com:443`; the parent sees ciphertext. In mock mode the
//! transport is plain HTTP to a loopback KMS stand-in.
//!
//! Why not let the parent relay KMS's answer: CMS to a public RSA key is unauthenticated,
//! so a relaying parent could substitute a seed of its choice. TLS to the genuine KMS
//! endpoint closes that, which is why outside mock mode only
//! `https://kms.<region>.amazonaws.com` and `https://kms-fips.<region>.amazonaws.com` are
//! accepted as endpoints.
//!
//! `transport.rs` holds the endpoint policy and the HTTP clients (vsock + TLS in
//! production, loopback HTTP in mock mode); `unseal.rs` holds request validation, the
//! KMS calls and the classification of KMS errors.

use agentkeys_wire::WireErrorKind;

use crate::nsm::NsmError;

mod transport;
mod unseal;

pub use agentkeys_wire::{KeyArnError, KmsKeyArn};

pub use transport::{
    loopback_http_client, resolve_endpoint, validate_region, vsock_https_client, KmsEndpoint,
    VsockConn, VsockConnector, DEFAULT_KMS_PROXY_PORT, PARENT_CID,
};
pub use unseal::{
    unseal, KmsSettings, Unsealed, CONTEXT_ISSUER_KEY, CONTEXT_PURPOSE, KMS_OPERATION_TIMEOUT,
    MAX_KEY_ID_BYTES, MAX_SEALED_SEED_BYTES,
};

/// Failures unsealing.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    /// The region is not shaped like an AWS region.
    #[error("invalid AWS region {region:?}: expected e.g. \"eu-west-1\"")]
    InvalidRegion {
        /// The rejected region.
        region: String,
    },
    /// The endpoint is not allowed in this mode.
    #[error("KMS endpoint {endpoint:?} refused: {reason}")]
    EndpointNotAllowed {
        /// The rejected endpoint.
        endpoint: String,
        /// What is accepted instead.
        reason: String,
    },
    /// A request field is unusable.
    #[error("invalid unseal request: {0}")]
    InvalidRequest(String),
    /// The parent named a key other than the one this enclave image is pinned to.
    #[error("unseal refused: the request names KMS key {requested:?}, but this enclave is pinned to {pinned} (its --kms-key-arn, covered by PCR0); no KMS call was made")]
    KeyNotPinned {
        /// The key the parent named.
        requested: String,
        /// The pinned key ARN.
        pinned: String,
    },
    /// The parent named a region other than the pinned key's.
    #[error("unseal refused: the request names region {requested:?}, but this enclave is pinned to {pinned}, in {pinned_region}; no KMS call was made")]
    RegionNotPinned {
        /// The region the parent named.
        requested: String,
        /// The pinned key ARN.
        pinned: String,
        /// The pinned key's region.
        pinned_region: String,
    },
    /// KMS's answer names another key than the pinned one (or none).
    #[error("KMS {operation} answer names key {answered:?}, not the pinned {pinned}; its seed is not used")]
    AnswerKeyMismatch {
        /// KMS operation.
        operation: &'static str,
        /// The `KeyId` of the answer.
        answered: Option<String>,
        /// The pinned key ARN.
        pinned: String,
    },
    /// The NSM could not produce the recipient document.
    #[error("recipient attestation failed: {0}")]
    Nsm(#[from] NsmError),
    /// KMS refused access (typically the key policy's attestation condition).
    #[error("KMS {operation} access denied: {message}")]
    AccessDenied {
        /// KMS operation.
        operation: &'static str,
        /// KMS's message.
        message: String,
    },
    /// KMS answered with another error.
    #[error("KMS {operation} failed: {code}: {message}")]
    Service {
        /// KMS operation.
        operation: &'static str,
        /// KMS error code, e.g. `InvalidCiphertextException`.
        code: String,
        /// KMS's message.
        message: String,
    },
    /// KMS could not be reached or answered garbage.
    #[error("KMS {operation} transport failure: {detail}")]
    Transport {
        /// KMS operation.
        operation: &'static str,
        /// Error chain.
        detail: String,
    },
    /// The answer lacks `CiphertextForRecipient` / `CiphertextBlob`.
    #[error("KMS {operation} answer lacks {field}")]
    MissingField {
        /// KMS operation.
        operation: &'static str,
        /// Missing field.
        field: &'static str,
    },
    /// The answer carries a plaintext: the recipient binding was ignored.
    #[error("KMS {operation} answer carries Plaintext; refused outside mock mode")]
    PlaintextReturned {
        /// KMS operation.
        operation: &'static str,
    },
    /// `CiphertextForRecipient` could not be opened.
    #[error("cannot open CiphertextForRecipient: {0}")]
    Cms(String),
    /// The unsealed seed has the wrong size.
    #[error("unsealed seed is {actual} bytes, expected {expected}")]
    SeedLength {
        /// Expected.
        expected: usize,
        /// Actual.
        actual: usize,
    },
    /// The HTTPS transport could not be set up.
    #[error("TLS setup failed: {0}")]
    Tls(String),
}

impl KmsError {
    /// The wire error class for this failure.
    pub fn wire_kind(&self) -> WireErrorKind {
        match self {
            KmsError::InvalidRegion { .. }
            | KmsError::EndpointNotAllowed { .. }
            | KmsError::InvalidRequest(_)
            | KmsError::KeyNotPinned { .. }
            | KmsError::RegionNotPinned { .. } => WireErrorKind::InvalidRequest,
            KmsError::Nsm(_) => WireErrorKind::Nsm,
            KmsError::AccessDenied { .. } => WireErrorKind::AccessDenied,
            _ => WireErrorKind::Kms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds() {
        let e = KmsError::AccessDenied {
            operation: "Decrypt",
            message: "m".into(),
        };
        assert_eq!(e.wire_kind(), WireErrorKind::AccessDenied);
        let e = KmsError::PlaintextReturned {
            operation: "Decrypt",
        };
        assert_eq!(e.wire_kind(), WireErrorKind::Kms);
    }
}
