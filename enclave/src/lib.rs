//! The AgentKeys enclave application: runs inside the Nitro Enclave, unseals the issuer
//! seed from KMS, derives the ES256 signing keys, mints JWTs, publishes the attested JWKS
//! and keeps the audit chain head. Only the wire protocol (`agentkeys-wire`) crosses the
//! trust boundary; no message carries the seed, a signing scalar or the RSA private key.
//!
//! The binary `agentkeys-enclave` is [`run_from_args`]; a process that wants to run the
//! same service (the parent's dev stack) calls that or [`server::run`]. [`config`] turns
//! the command line into an [`EnclaveConfig`] and [`server`] serves it.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod audit;
pub mod authz;
pub mod cms;
pub mod config;
mod entry;
pub mod jwt;
pub mod keys;
pub mod kms;
pub mod nsm;
pub mod server;
pub mod tls;

pub use config::{Args, EnclaveConfig};
pub use entry::run_from_args;
pub use server::{run, Enclave};
