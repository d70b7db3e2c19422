//! The enclave's session-token check (`signed-session`), on arbitrary bytes: the caller
//! writes the token and the parent forwards it. Must never panic; a token that verifies
//! names a wallet in its normal form and was signed by the one trusted key.
#![no_main]

#[allow(dead_code)]
#[path = "../../src/authz/session.rs"]
mod session;

use libfuzzer_sys::fuzz_target;

/// The thumbprint of the fuzzed tokens' trusted key: the seed's `valid` token is signed
/// by it, so the fuzzer starts from a token that verifies.
const TRUSTED: &str = "vAjB_9FRwODNS_Ju3LwNh5VNmmTr31RQwZ1dyHfwjMA";

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(verified) = session::verify(
        token,
        &[TRUSTED.to_string()],
        "https://issuer.example.com",
        1_700_000_000,
    ) {
        assert_eq!(
            verified.wallet.as_str(),
            verified.wallet.as_str().to_ascii_lowercase()
        );
    }
});
