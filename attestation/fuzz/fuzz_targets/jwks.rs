//! Fuzzes the JWKS reader with arbitrary bytes: the JWKS is outside bytes both when
//! `agentkeys-attest verify --issuer` fetches it from the issuer host and when
//! `audit verify --jwks FILE` reads a copy from anywhere. Must never panic; what it reads
//! is a non-empty set of P-256 keys with 32-byte coordinates.
#![no_main]

use agentkeys_attestation::jwks::parse_jwks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(keys) = parse_jwks(data) {
        assert!(!keys.is_empty());
        for key in &keys {
            assert_eq!((key.x.len(), key.y.len()), (32, 32));
            // Coordinates off the curve, or any signature, must give false, not a panic.
            let _ = key.verifies_es256(data, &[0x5a; 64]);
        }
    }
});
