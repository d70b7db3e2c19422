//! Parses a KMS `CiphertextForRecipient` (CMS EnvelopedData in BER) from arbitrary
//! bytes. Must never panic, loop or blow the stack.
#![no_main]

#[allow(dead_code)]
#[path = "../../src/cms/mod.rs"]
mod cms;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(parsed) = cms::parse_enveloped_data(data) {
        // Invariants of a successful parse.
        assert!(!parsed.ciphertext.is_empty() && parsed.ciphertext.len() % 16 == 0);
    }
});
