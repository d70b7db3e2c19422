//! The enclave's Sign-In with Ethereum parser (EIP-4361) and signature recovery
//! (EIP-191), on arbitrary bytes: the caller writes both. Must never panic; what parses
//! holds only values of the shapes the specification allows, and written out again from
//! its fields it parses to the same fields.
#![no_main]

#[allow(dead_code)]
#[path = "../../src/authz/siwe.rs"]
mod siwe;

use libfuzzer_sys::fuzz_target;
use siwe::{SiweMessage, MAX_MESSAGE_BYTES, MIN_NONCE_CHARS, SIGNATURE_BYTES, TITLE_SUFFIX};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

fn rfc3339(t: u64) -> String {
    OffsetDateTime::from_unix_timestamp(i64::try_from(t).unwrap())
        .unwrap()
        .format(&Rfc3339)
        .unwrap()
}

/// The message in the specification's layout, from the parsed fields only.
fn write(m: &SiweMessage) -> String {
    let mut out = format!("{}{TITLE_SUFFIX}\n{}\n\n", m.domain, m.address.eip55());
    if let Some(statement) = &m.statement {
        out.push_str(statement);
        out.push('\n');
    }
    out.push_str(&format!(
        "\nURI: {}\nVersion: {}\nChain ID: {}\nNonce: {}\nIssued At: {}",
        m.uri,
        m.version,
        m.chain_id,
        m.nonce,
        rfc3339(m.issued_at)
    ));
    if let Some(t) = m.expiration_time {
        out.push_str(&format!("\nExpiration Time: {}", rfc3339(t)));
    }
    if let Some(t) = m.not_before {
        out.push_str(&format!("\nNot Before: {}", rfc3339(t)));
    }
    if let Some(id) = &m.request_id {
        out.push_str(&format!("\nRequest ID: {id}"));
    }
    if !m.resources.is_empty() {
        out.push_str("\nResources:");
        for r in &m.resources {
            out.push_str(&format!("\n- {r}"));
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match siwe::parse(&text) {
        Ok(m) => {
            assert!(text.len() <= MAX_MESSAGE_BYTES);
            assert!(!text.contains('\r') && !text.ends_with('\n'));
            assert!(text.is_ascii());
            assert!(text.starts_with(&format!("{}{TITLE_SUFFIX}\n", m.domain)));
            assert!(!m.domain.is_empty() && !m.domain.contains("://"));
            assert!(text.contains(&format!("\n{}\n", m.address.eip55())));
            assert_eq!(m.address.as_str(), m.address.to_ascii_lowercase());
            assert!(m.statement.as_deref().is_none_or(|s| !s.contains('\n')));
            assert!(m.uri.contains(':') && !m.uri.contains(['\n', ' ']));
            assert_eq!(m.version, "1");
            assert!(m.nonce.len() >= MIN_NONCE_CHARS);
            assert!(m.nonce.bytes().all(|b| b.is_ascii_alphanumeric()));
            assert!(m
                .request_id
                .as_deref()
                .is_none_or(|s| !s.contains(['\n', ' ', '/'])));
            for r in &m.resources {
                assert!(r.contains(':') && !r.contains(['\n', ' ']));
            }
            let again = write(&m);
            assert_eq!(siwe::parse(&again).as_ref(), Ok(&m), "{again}");
        }
        Err(e) => assert!(e.to_string().len() < 1024, "{e}"),
    }
    // After a 0xff byte (never valid UTF-8, so such inputs teach the parser nothing), 65
    // bytes as a signature over the rest: refused or recovered, never a panic. Only those
    // inputs pay for the curve arithmetic, so parsing keeps its speed.
    if let [0xff, rest @ ..] = data {
        if rest.len() < SIGNATURE_BYTES {
            return;
        }
        let (signature, message) = rest.split_at(SIGNATURE_BYTES);
        if let Ok(w) = siwe::recover_signer(&String::from_utf8_lossy(message), signature) {
            assert_eq!(w.eip55().to_ascii_lowercase(), w.as_str());
        }
    }
});
