//! The issuer's TLS, terminated inside the enclave.
//!
//! * [`keys`]: the TLS key and the ACME account key, derived from the seed.

pub mod keys;
