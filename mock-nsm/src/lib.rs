//! Mock Nitro platform for development and CI.
//!
//! * [`MockNsm`]: a stand-in for `/dev/nsm` with the request/response semantics of
//!   `aws-nitro-enclaves-nsm-api` (the same [`Request`]/[`Response`] types): a SHA-384 PCR
//!   bank with the real extend rule and locking (PCR0..15 locked at boot), a debug-mode
//!   switch, an injectable clock, and attestation documents in the real wire format.
//! * [`pki`]: a mock P-384 PKI shaped like AWS's, derived from a **published** seed so
//!   that every process agrees on [`mock_root_pem`]. It is public by design and protects
//!   nothing; verifiers accept it only when told to explicitly.
//! * [`kms`]: a KMS stand-in speaking the KMS JSON 1.1 protocol, honouring `Recipient`.

pub mod clock;
pub mod document;
pub mod kms;
pub mod nsm;
pub mod pki;

pub use aws_nitro_enclaves_nsm_api::api::{Digest, ErrorCode, Request, Response};
pub use clock::{Clock, ManualClock, SystemClock};
pub use nsm::{
    default_boot_pcrs, extend_pcr, measure, ConfigError, MockNsm, MockNsmConfig, NsmError,
    DEFAULT_MODULE_ID, MAX_PCRS, PCR_LEN,
};
pub use pki::{mock_cabundle, mock_root_der, mock_root_pem, MOCK_ROOT_ORGANIZATION};
