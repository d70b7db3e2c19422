//! The AgentKeys dev stack: the whole system on one machine with the mock Nitro
//! platform, for developers, CI and demonstrations.
//!
//! This crate is the only one that links the enclave's code, the mock NSM and the
//! stand-ins of AWS KMS, AWS STS and the session backend together with the broker. The
//! production broker (`agentkeys-broker`) depends on none of them.
//!
//! | module | job |
//! |---|---|
//! | [`stack`] | `agentkeys-dev dev`: every service on loopback, the ready file, shutdown |
//! | [`enclave_child`] | the enclave as a supervised child process with the mock NSM |
//! | [`standins`] | the STS and session-backend stand-ins, and `stand-in KIND` |
//! | [`audit_faults`] | the audit fault switch (`POST /dev/faults/audit`) |
//! | [`audit_stats`] | the audit store's commit counters (`GET /dev/audit/stats`) |
//! | [`fleet`] | `dev --hosts N --audit-db postgres://…`: several hosts on one PostgreSQL log |
//! | [`pebble_mode`] | `dev --acme pebble`: the issuer's TLS in the enclave, certificates from Pebble |
//! | [`api_tls`] | `dev --acme pebble --api-tls`: the mint API over HTTPS, a certificate made for the stack |
//! | [`demo`] | `dev --demo`: the whole flow once, each step checked |
//! | [`jwk`] | base64url and P-256 JWKs, for the STS stand-in and the demo |
//! | [`siwe_wallet`] | a throwaway Ethereum wallet that writes and signs Sign-In with Ethereum messages |

pub mod api_tls;
pub mod audit_faults;
pub mod audit_stats;
pub mod demo;
pub mod enclave_child;
pub mod fleet;
pub mod jwk;
pub mod pebble_mode;
pub mod siwe_wallet;
pub mod stack;
pub mod standins;
