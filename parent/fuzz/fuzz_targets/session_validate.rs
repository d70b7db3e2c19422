//! The broker's handling of what a client and the session backend send it: the
//! `Authorization` header (bearer extraction) and the backend's `/session/validate`
//! answer (`{"wallet": …}`). Must never panic; what is accepted must satisfy the
//! documented shape.
#![no_main]

use agentkeys_broker::session::{
    bearer_from_headers, parse_validate_body, Bearer, MAX_BEARER_BYTES,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The backend's 200 body.
    if let Ok(wallet) = parse_validate_body(data) {
        assert_eq!(wallet.len(), 42, "wallet is 0x + 40 hex");
        assert!(wallet.starts_with("0x"));
        assert!(wallet[2..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }
    // The client's Authorization header, as raw header bytes.
    if let Ok(value) = http::HeaderValue::from_bytes(data) {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, value);
        if let Ok(bearer) = bearer_from_headers(&headers) {
            let token = bearer.token();
            assert!(!token.is_empty() && token.len() <= MAX_BEARER_BYTES);
            assert!(token.bytes().all(|b| b.is_ascii_graphic()));
        }
    }
    // The token alone.
    if let Ok(token) = std::str::from_utf8(data) {
        if let Ok(bearer) = Bearer::new(token) {
            assert_eq!(bearer.token(), token);
            assert!(!format!("{bearer:?}").contains(token) || token.len() < 8);
        }
    }
});
