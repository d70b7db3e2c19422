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
