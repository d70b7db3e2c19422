//! Who may have a token signed: the proofs the enclave verifies itself before it signs
//! for a wallet.

pub mod siwe;
