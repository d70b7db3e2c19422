//! Enclave application.
