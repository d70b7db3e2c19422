//! Parent/enclave wire protocol.
//!
//! This crate is the only code that crosses the trust boundary between the parent
//! instance and the Nitro Enclave: the parent depends on nothing else of the enclave.
//!
//! * [`Address`]: one address type for `vsock:CID:PORT` (production) and `unix:PATH`
//!   (mock mode and tests), with connect/listen helpers.
//! * [`frame`]: `u32` big-endian body length ‖ CBOR body, capped at [`MAX_FRAME_BYTES`];
//!   pure encode/decode functions (fuzzable) and async read/write helpers.
//! * [`messages`]: [`Request`]/[`Response`] carried in [`RequestEnvelope`]/[`ResponseEnvelope`]
//!   with a `u64` request id, and [`WireError`].
//! * [`published`]: the discovery document and the attestation answer the issuer
//!   publishes, shared by the broker and the enclave.
//! * [`chain`]: the enclave audit chain, over the signing input of every JWT.
//! * [`statement`] and [`kms_key_arn`] (from `agentkeys-statement`): what the enclave
//!   attests, and the key it is pinned to.
//! * [`Wallet`]: the one wallet rule (`0x` + 40 hex digits, lower-cased) that the parent's
//!   session check and the enclave's mint both apply.
//! * [`EnclaveClient`]: a small pool of persistent, multiplexed connections.
//! * [`serve_connection`]/[`serve`]: the server side.
//!
//! No message can carry the issuer seed, the signing scalar, the issuer's TLS or ACME
//! account private key or the enclave's RSA private key: no message type has a field for them (see `docs/protocol.md`).

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![warn(missing_docs)]

pub mod address;
pub mod chain;
pub mod client;
pub mod frame;
pub mod messages;
pub mod published;
pub mod server;
pub mod wallet;

pub use address::{Address, AddressError, Listener, Stream};
pub use agentkeys_statement::{
    caa_issue_parameters, AcmeAccountStatement, CheckpointStatement, JwksStatement, StatementError,
    ACME_ACCOUNT_SERVED_FIELDS, CAA_VALIDATION_METHODS,
};
pub use agentkeys_statement::{kms_key_arn, statement};
pub use agentkeys_statement::{KeyArnError, KmsKeyArn};
pub use chain::{
    chain_genesis, chain_next, signing_input, signing_input_sha256, ChainVersion, EPOCH_CLAIM,
    SEQ_CLAIM, WALLET_CLAIM,
};
pub use client::{ClientError, EnclaveClient, LateReplies};
pub use frame::{FrameError, MAX_FRAME_BYTES};
pub use messages::{
    Attestation, AuditCheckpoint, AwsCredentials, EnclaveStatus, IssuerTlsRequest, IssuerTlsStatus,
    MintJwtRequest, MintedJwt, Request, RequestEnvelope, Response, ResponseEnvelope, UnsealRequest,
    UnsealResult, WalletProof, WireError, WireErrorKind, ISSUER_TLS_ISSUED, ISSUER_TLS_SELF_SIGNED,
};
pub use published::{attestation_json, discovery_document, parse_nonce_query, MAX_NONCE_BYTES};
pub use server::{serve, serve_connection, MAX_IN_FLIGHT_PER_CONNECTION};
pub use wallet::{Wallet, WalletError};
