//! The wallet rule shared by the parent's session check and the enclave's mint, on
//! arbitrary UTF-8. Must never panic; what is accepted is the input lower-cased, in the
//! documented shape, and parses again to itself.
#![no_main]

use agentkeys_wire::wallet::{Wallet, WALLET_LEN, WALLET_PREFIX};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match Wallet::parse(s) {
        Ok(w) => {
            assert_eq!(w.as_str(), s.to_ascii_lowercase());
            assert_eq!(w.len(), WALLET_LEN);
            assert!(w.starts_with(WALLET_PREFIX));
            assert!(w[WALLET_PREFIX.len()..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            assert_eq!(Wallet::parse(w.as_str()).as_ref(), Ok(&w));
        }
        Err(e) => assert!(e.to_string().len() < 128, "{e}"),
    }
});
