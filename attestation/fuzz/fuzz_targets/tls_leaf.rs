//! Fuzzes the reader of the TLS server certificate an issuer presents (outside bytes: any
//! host can present any certificate the TLS client accepts) with arbitrary bytes.
#![no_main]

use agentkeys_attestation::tls_leaf::TlsLeaf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(leaf) = TlsLeaf::from_der(data) {
        // What is read is what the hashes and the description are made of.
        assert_eq!(leaf.spki_sha256_hex().len(), 64);
        let _ = leaf.describe();
    }
});
