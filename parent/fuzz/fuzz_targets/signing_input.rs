//! A row's (or a found token's) JWS signing input as `audit verify` reads it back (the
//! parent writes rows, so a hostile parent chooses these bytes): must never panic, and a
//! parsed epoch prints back to the claim it came from.
#![no_main]

use agentkeys_broker::audit::verify::signed::parse_signing_input;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(fields) = parse_signing_input(text) {
        assert!(text.contains('.'));
        let _ = (fields.kid.len(), fields.jti.len(), fields.wallet.len(), fields.seq);
    }
});
