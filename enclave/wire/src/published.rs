//! The JSON the issuer publishes, the same whichever side serves it: the broker on its
//! own listener, or the enclave over the issuer TLS it terminates.

use base64::Engine;

use crate::{Attestation, JwksStatement, EPOCH_CLAIM, SEQ_CLAIM, WALLET_CLAIM};

/// The discovery document for `issuer` (`docs/api.md`,
/// `GET /.well-known/openid-configuration`).
pub fn discovery_document(issuer: &str) -> serde_json::Value {
    serde_json::json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "claims_supported": [
            "iss", "sub", "aud", "iat", "nbf", "exp", "jti",
            WALLET_CLAIM, EPOCH_CLAIM, SEQ_CLAIM,
            "https://aws.amazon.com/tags"
        ],
        "nitro_attestation_uri": format!("{issuer}/.well-known/nitro-attestation"),
    })
}

/// The body of `GET /.well-known/nitro-attestation` (`docs/api.md`): the document, the
/// JWKS hash and kids, the statement's exact text (which the document's `user_data` binds
/// by its SHA-256: a verifier checks these bytes, never the decoded fields beside them)
/// and its fields for reading, the nonce and whether the NSM is the mock.
pub fn attestation_json(a: &Attestation, nonce: Option<&[u8]>, mock: bool) -> serde_json::Value {
    serde_json::json!({
        "document": base64::engine::general_purpose::STANDARD.encode(&a.document),
        "format": "cose_sign1",
        "jwks_sha256": hex::encode(a.jwks_sha256),
        "kids": a.kids,
        "statement": statement_fields(&a.statement),
        "statement_text": String::from_utf8_lossy(&a.statement),
        "nonce": nonce.map(hex::encode),
        "mock": mock,
    })
}

/// The JWKS statement's fields, for reading.
fn statement_fields(statement: &[u8]) -> serde_json::Value {
    match JwksStatement::decode(statement) {
        Ok(s) => serde_json::json!({
            "tag": crate::statement::JWKS_TAG,
            "jwks_sha256": hex::encode(s.jwks_sha256),
            "kms_key_arn": s.kms_key_arn.as_str(),
            "sealed_seed_sha256": hex::encode(s.sealed_seed_sha256),
            "key_version": s.key_version,
            "audit_epoch": s.audit_epoch,
            "module_id": s.module_id,
            "auth_modes": s.auth_modes,
            "session_keys": s.session_keys,
            "tls_spki_sha256": hex::encode(s.tls_spki_sha256),
        }),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    }
}

/// Longest nonce `/.well-known/nitro-attestation` and `/.well-known/acme-account` accept,
/// in bytes: the NSM accepts at most 512 bytes of nonce (AWS Nitro Enclaves NSM API,
/// `Attestation.nonce`).
pub const MAX_NONCE_BYTES: usize = 512;

/// The nonce of an attestation route's query, `nonce=<hex>` of 1 to [`MAX_NONCE_BYTES`]
/// bytes (`None` without a query); any other parameter, a repeated or empty nonce, or one
/// that is not hex is refused with a message for the caller. One rule for the broker's
/// routes and the enclave's issuer TLS.
pub fn parse_nonce_query(query: Option<&str>) -> Result<Option<Vec<u8>>, String> {
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return Ok(None);
    };
    let mut nonce = None;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k != "nonce" {
            return Err(format!(
                "unknown query parameter {:?}; only nonce is accepted",
                k.chars().take(32).collect::<String>()
            ));
        }
        if nonce.is_some() {
            return Err("nonce given twice".into());
        }
        if v.is_empty() {
            return Err("nonce is empty".into());
        }
        if v.len() > 2 * MAX_NONCE_BYTES {
            return Err(format!("nonce longer than {MAX_NONCE_BYTES} bytes"));
        }
        nonce = Some(hex::decode(v).map_err(|e| format!("nonce is not hex: {e}"))?);
    }
    Ok(nonce)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_queries() {
        assert!(parse_nonce_query(None).unwrap().is_none());
        assert!(parse_nonce_query(Some("")).unwrap().is_none());
        assert_eq!(
            parse_nonce_query(Some("nonce=0a0b")).unwrap().unwrap(),
            vec![10, 11]
        );
        for bad in [
            "nonce=zz",
            "nonce=abc",
            "nonce=",
            "x=1",
            "nonce=00&nonce=01",
        ] {
            assert!(parse_nonce_query(Some(bad)).is_err(), "{bad}");
        }
        let max = "00".repeat(MAX_NONCE_BYTES);
        assert!(parse_nonce_query(Some(&format!("nonce={max}"))).is_ok());
        let e = parse_nonce_query(Some(&format!("nonce={max}00"))).unwrap_err();
        assert!(e.contains("longer than 512 bytes"), "{e}");
    }
}
