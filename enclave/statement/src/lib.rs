//! What the enclave attests, as a specification every side shares: the enclave binds
//! these statements into its attestation documents' `user_data`, the broker serves them,
//! and the verifiers (`agentkeys-attest`, `audit verify`) check them against the signed
//! document.
//!
//! * [`statement`]: the tagged, versioned statements (`agentkeys/jwks/v2`,
//!   `agentkeys/audit-checkpoint/v1`, `agentkeys/acme-account/v1`).
//! * [`kms_key_arn`]: the KMS key ARN the enclave image is pinned to.
//!
//! No dependency beyond hex encoding and SHA-256, so a verifier can take it without the
//! enclave's transport or the broker's stack.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![warn(missing_docs)]

pub mod kms_key_arn;
pub mod statement;

pub use kms_key_arn::{KeyArnError, KmsKeyArn};
pub use statement::{
    caa_issue_parameters, AcmeAccountStatement, CheckpointStatement, JwksStatement, StatementError,
    ACME_ACCOUNT_SERVED_FIELDS, CAA_VALIDATION_METHODS,
};
