//! Fuzzes the document parser and the full verifier with arbitrary bytes.
#![no_main]

use agentkeys_attestation::{decode_unverified, verify, Policy, TrustAnchor};
use libfuzzer_sys::fuzz_target;

/// A time inside the validity of the genuine documents used as seeds (2022-07-06).
const AT_MS: u64 = 1_657_117_102_484;

fuzz_target!(|data: &[u8]| {
    let decoded = decode_unverified(data);
    let verified = verify(
        data,
        &TrustAnchor::aws_nitro_root_g1(),
        AT_MS,
        &Policy::default(),
    );
    // Whatever verifies must also decode, to the same document.
    if let Ok(v) = verified {
        assert_eq!(decoded.ok(), Some(v.document));
    }
});
