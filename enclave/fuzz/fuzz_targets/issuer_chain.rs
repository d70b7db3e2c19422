//! The check of an issuer certificate chain (`tls::chain::check_chain`), on arbitrary
//! bytes: the parent offers its cached chain after a restart, and a compromised parent
//! chooses those bytes. Must never panic; a chain that passes certifies the given key
//! hash, names the given host and is valid at the given time.
#![no_main]

#[allow(dead_code)]
#[path = "../../src/tls/chain.rs"]
mod chain;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(pem) = std::str::from_utf8(data) else {
        return;
    };
    let now = 1_800_000_000;
    if let Ok(checked) = chain::check_chain(pem, &[0x7e; 32], "issuer.example.com", now) {
        assert!(checked.not_before <= now && now < checked.not_after);
        assert!(!checked.der.is_empty());
    }
});
