//! Nitro attestation document verification.
