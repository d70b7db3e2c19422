//! The JSON the issuer publishes, the same whichever side serves it: the broker on its
//! own listener, or the enclave over the issuer TLS it terminates.

use crate::{EPOCH_CLAIM, SEQ_CLAIM, WALLET_CLAIM};

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
