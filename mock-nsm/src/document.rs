//! Attestation documents in the AWS Nitro wire format.
//!
//! Byte layout (checked against genuine documents in `fixtures/nitro-attestation`):
//!
//! ```text
//! COSE_Sign1 (untagged) = [
//!     protected:   bstr( {1: -35} ),          ; a1 01 38 22 — alg ES384
//!     unprotected: {},
//!     payload:     bstr( AttestationDocument ),
//!     signature:   bstr .size 96               ; raw r ‖ s, P-384
//! ]
//! AttestationDocument = {                      ; this key order, as AWS emits it
//!     "module_id": tstr, "digest": "SHA384", "timestamp": uint (ms),
//!     "pcrs": { uint => bstr .size 48 },       ; 0..15 always, plus locked user PCRs
//!     "certificate": bstr, "cabundle": [root, …, issuer],
//!     "public_key": bstr / null, "user_data": bstr / null, "nonce": bstr / null,
//! }
//! ```
//!
//! The signature is ES384 over `Sig_structure = ["Signature1", protected, h'', payload]`
//! (RFC 8152 §4.4).

use std::collections::BTreeMap;

use ciborium::Value;
use p384::ecdsa::signature::Signer;
use p384::ecdsa::{Signature, SigningKey};

/// COSE algorithm identifier for ES384 (RFC 8152 table 5).
pub const COSE_ALG_ES384: i64 = -35;
/// COSE header label `alg` (RFC 8152 table 2).
const COSE_HEADER_ALG: i64 = 1;

/// Errors producing a document (only from CBOR serialization; not from input).
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    /// CBOR serialization failed.
    #[error("CBOR encoding of {what} failed: {message}")]
    Cbor {
        /// Which structure.
        what: &'static str,
        /// The serializer's message.
        message: String,
    },
}

/// The fields of an attestation document, before signing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentFields {
    /// Issuing module id, e.g. `i-0123456789abcdef0-enc0123456789abcdef`.
    pub module_id: String,
    /// Creation time, UNIX milliseconds.
    pub timestamp_ms: u64,
    /// PCR index → 48-byte value.
    pub pcrs: BTreeMap<u16, Vec<u8>>,
    /// DER of the signing (leaf) certificate.
    pub certificate: Vec<u8>,
    /// DER certificates, root first.
    pub cabundle: Vec<Vec<u8>>,
    /// Optional public key.
    pub public_key: Option<Vec<u8>>,
    /// Optional user data.
    pub user_data: Option<Vec<u8>>,
    /// Optional nonce.
    pub nonce: Option<Vec<u8>>,
}

fn to_cbor(value: &Value, what: &'static str) -> Result<Vec<u8>, DocumentError> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).map_err(|e| DocumentError::Cbor {
        what,
        message: e.to_string(),
    })?;
    Ok(out)
}

fn optional_bytes(v: &Option<Vec<u8>>) -> Value {
    match v {
        Some(b) => Value::Bytes(b.clone()),
        None => Value::Null,
    }
}

/// The CBOR payload (the AttestationDocument map) in AWS's field order.
pub fn encode_payload(fields: &DocumentFields) -> Result<Vec<u8>, DocumentError> {
    let pcrs = fields
        .pcrs
        .iter()
        .map(|(i, v)| (Value::Integer((*i).into()), Value::Bytes(v.clone())))
        .collect();
    let map = Value::Map(vec![
        (
            Value::Text("module_id".into()),
            Value::Text(fields.module_id.clone()),
        ),
        (Value::Text("digest".into()), Value::Text("SHA384".into())),
        (
            Value::Text("timestamp".into()),
            Value::Integer(fields.timestamp_ms.into()),
        ),
        (Value::Text("pcrs".into()), Value::Map(pcrs)),
        (
            Value::Text("certificate".into()),
            Value::Bytes(fields.certificate.clone()),
        ),
        (
            Value::Text("cabundle".into()),
            Value::Array(
                fields
                    .cabundle
                    .iter()
                    .map(|c| Value::Bytes(c.clone()))
                    .collect(),
            ),
        ),
        (
            Value::Text("public_key".into()),
            optional_bytes(&fields.public_key),
        ),
        (
            Value::Text("user_data".into()),
            optional_bytes(&fields.user_data),
        ),
        (Value::Text("nonce".into()), optional_bytes(&fields.nonce)),
    ]);
    to_cbor(&map, "attestation document payload")
}

/// The protected header `{1: -35}` as its serialized bytes (`a1 01 38 22`).
pub fn protected_header() -> Result<Vec<u8>, DocumentError> {
    to_cbor(
        &Value::Map(vec![(
            Value::Integer(COSE_HEADER_ALG.into()),
            Value::Integer(COSE_ALG_ES384.into()),
        )]),
        "protected header",
    )
}

/// `Sig_structure = ["Signature1", protected, external_aad = h'', payload]`.
pub fn sig_structure(protected: &[u8], payload: &[u8]) -> Result<Vec<u8>, DocumentError> {
    to_cbor(
        &Value::Array(vec![
            Value::Text("Signature1".into()),
            Value::Bytes(protected.to_vec()),
            Value::Bytes(Vec::new()),
            Value::Bytes(payload.to_vec()),
        ]),
        "Sig_structure",
    )
}

/// Encodes and signs a document with the leaf key: the untagged COSE_Sign1 bytes.
pub fn sign_document(fields: &DocumentFields, key: &SigningKey) -> Result<Vec<u8>, DocumentError> {
    let protected = protected_header()?;
    let payload = encode_payload(fields)?;
    let to_sign = sig_structure(&protected, &payload)?;
    // ES384: ECDSA P-384 over SHA-384 of the Sig_structure; raw r ‖ s (96 bytes).
    let signature: Signature = key.sign(&to_sign);
    let cose = Value::Array(vec![
        Value::Bytes(protected),
        Value::Map(Vec::new()),
        Value::Bytes(payload),
        Value::Bytes(signature.to_bytes().to_vec()),
    ]);
    to_cbor(&cose, "COSE_Sign1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protected_header_bytes_match_aws() {
        assert_eq!(protected_header().unwrap(), [0xa1, 0x01, 0x38, 0x22]);
    }

    #[test]
    fn absent_fields_are_null() {
        let fields = DocumentFields {
            module_id: "m".into(),
            timestamp_ms: 1,
            pcrs: BTreeMap::from([(0, vec![0; 48])]),
            certificate: vec![1],
            cabundle: vec![vec![2]],
            public_key: None,
            user_data: Some(vec![]),
            nonce: None,
        };
        let payload = encode_payload(&fields).unwrap();
        let v: Value = ciborium::from_reader(payload.as_slice()).unwrap();
        let map = v.as_map().unwrap();
        assert_eq!(map.len(), 9);
        assert!(map[6].1.is_null());
        assert_eq!(map[7].1, Value::Bytes(vec![]));
        assert!(map[8].1.is_null());
    }
}
