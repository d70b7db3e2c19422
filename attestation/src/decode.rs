//! The three decoding steps of the checklist: size bounds, COSE_Sign1 structure, payload
//! syntax. Nothing here checks a signature; see [`crate::verify`] for that.
//!
//! References: RFC 9052 §4.2 (COSE_Sign1), RFC 9053 §2.1 (ES384), and the attestation
//! document specification in the AWS Nitro Enclaves User Guide ("Attestation document
//! specification", CDDL):
//!
//! ```text
//! AttestationDocument = {
//!     module_id: text, digest: digest, timestamp: uint .size 8,
//!     pcrs: { + index => pcr }, certificate: cert, cabundle: [* cert],
//!     ? public_key: user_data, ? user_data: user_data, ? nonce: user_data,
//! }
//! cert = bytes .size (1..1024)   user_data = bytes .size (0..1024)
//! pcr = bytes .size (32/48/64)   index = 0..31   digest = "SHA384"
//! ```

use std::collections::BTreeMap;

use ciborium::Value;

use crate::document::AttestationDocument;
use crate::error::{Check, DecodeError};

/// Largest document accepted, in bytes.
///
/// The NSM driver (`aws-nitro-enclaves-nsm-api`, `driver/mod.rs`) receives every response
/// in a buffer of `NSM_RESPONSE_MAX_SIZE = 0x3000` bytes (12 KiB), so no genuine document
/// exceeds 12 KiB; genuine documents are 4–6 KiB. 16 KiB leaves room for CBOR framing by a
/// transport without letting an attacker make the parser work on arbitrary amounts of data.
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024;

/// Nesting depth given to the CBOR decoder. A genuine document nests 4 deep (tag, array,
/// map, value); the limit keeps hostile inputs from exhausting the stack.
const CBOR_RECURSION_LIMIT: usize = 16;

/// CBOR tag of COSE_Sign1 (RFC 9052 §4.2, IANA "CBOR Tags").
pub const COSE_SIGN1_TAG: u64 = 18;

/// COSE header label `alg` (RFC 9052 §3.1).
const COSE_HEADER_ALG: i128 = 1;

/// COSE algorithm identifier of ES384, ECDSA P-384 with SHA-384 (RFC 9053 §2.1).
pub const COSE_ALG_ES384: i64 = -35;

/// Length of an ES384 signature: r‖s, 48 bytes each (RFC 9053 §2.1).
pub const ES384_SIGNATURE_BYTES: usize = 96;

/// Largest `certificate` / `cabundle` entry: `cert = bytes .size (1..1024)` (AWS CDDL).
pub const MAX_CERTIFICATE_BYTES: usize = 1024;

/// Largest `public_key`, `user_data` and `nonce`: `user_data = bytes .size (0..1024)`
/// (AWS CDDL).
pub const MAX_USER_FIELD_BYTES: usize = 1024;

/// Highest PCR index: `index = 0..31` (AWS CDDL; the NSM has 32 PCRs).
pub const MAX_PCR_INDEX: u16 = 31;

/// Accepted PCR lengths: `pcr = bytes .size (32/48/64)` (AWS CDDL).
pub const PCR_LENGTHS: [usize; 3] = [32, 48, 64];

/// The only accepted `digest` value (AWS CDDL).
pub const DIGEST_SHA384: &str = "SHA384";

/// A structurally valid COSE_Sign1, with the exact bytes the signature covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CoseSign1 {
    /// The protected header bstr contents, exactly as received.
    pub protected: Vec<u8>,
    /// The payload bstr contents, exactly as received.
    pub payload: Vec<u8>,
    /// r‖s.
    pub signature: [u8; ES384_SIGNATURE_BYTES],
}

/// Step 1: the document is neither empty nor larger than [`MAX_DOCUMENT_BYTES`].
pub(crate) fn check_size_bounds(document: &[u8]) -> Result<(), DecodeError> {
    if document.is_empty() {
        return Err(DecodeError::Empty);
    }
    if document.len() > MAX_DOCUMENT_BYTES {
        return Err(DecodeError::TooLarge {
            max: MAX_DOCUMENT_BYTES,
            actual: document.len(),
        });
    }
    Ok(())
}

/// Step 2: COSE_Sign1 = [protected: bstr .cbor {1: -35}, unprotected: map, payload: bstr,
/// signature: bstr .size 96], untagged or with tag 18, and nothing after it.
pub(crate) fn parse_cose_sign1(document: &[u8]) -> Result<CoseSign1, DecodeError> {
    let value = decode_cbor(document, Check::CoseStructure, "COSE_Sign1")?;
    let value = match value {
        Value::Tag(COSE_SIGN1_TAG, inner) => *inner,
        Value::Tag(actual, _) => return Err(DecodeError::UnexpectedTag { actual }),
        other => other,
    };
    let items = match value {
        Value::Array(items) => items,
        other => return Err(cose_type("COSE_Sign1", "array", &other)),
    };
    let [protected, unprotected, payload, signature]: [Value; 4] =
        items
            .try_into()
            .map_err(|items: Vec<Value>| DecodeError::CoseArrayLength {
                actual: items.len(),
            })?;

    let protected = match protected {
        Value::Bytes(bytes) => bytes,
        other => return Err(cose_type("protected header", "bstr", &other)),
    };
    check_protected_header(&protected)?;

    if !matches!(unprotected, Value::Map(_)) {
        return Err(cose_type("unprotected header", "map", &unprotected));
    }

    let payload = match payload {
        Value::Bytes(bytes) => bytes,
        other => return Err(cose_type("payload", "bstr", &other)),
    };

    let signature = match signature {
        Value::Bytes(bytes) => bytes,
        other => return Err(cose_type("signature", "bstr", &other)),
    };
    let signature: [u8; ES384_SIGNATURE_BYTES] = signature
        .try_into()
        .map_err(|s: Vec<u8>| DecodeError::SignatureLength { actual: s.len() })?;

    Ok(CoseSign1 {
        protected,
        payload,
        signature,
    })
}

/// The protected header is a CBOR map holding exactly `{1: -35}`.
fn check_protected_header(protected: &[u8]) -> Result<(), DecodeError> {
    let header = decode_cbor(protected, Check::CoseStructure, "protected header")?;
    let entries = match header {
        Value::Map(entries) => entries,
        other => return Err(cose_type("protected header contents", "map", &other)),
    };
    let mut alg = None;
    for (label, value) in entries {
        match label {
            Value::Integer(i) if i128::from(i) == COSE_HEADER_ALG => {
                if alg.is_some() {
                    return Err(DecodeError::DuplicateKey {
                        check: Check::CoseStructure,
                        field: "protected header alg (1)".to_owned(),
                    });
                }
                alg = Some(value);
            }
            other => {
                return Err(DecodeError::UnexpectedHeader {
                    label: describe(&other),
                })
            }
        }
    }
    match alg {
        None => Err(DecodeError::AlgMissing),
        Some(Value::Integer(i)) if i128::from(i) == i128::from(COSE_ALG_ES384) => Ok(()),
        Some(other) => Err(DecodeError::AlgUnsupported {
            actual: describe(&other),
        }),
    }
}

/// Step 3: the payload is a map with exactly the fields of the AWS specification, each
/// with its type and bounds; no field twice.
pub(crate) fn parse_payload(payload: &[u8]) -> Result<AttestationDocument, DecodeError> {
    let value = decode_cbor(payload, Check::PayloadSyntax, "payload")?;
    let entries = match value {
        Value::Map(entries) => entries,
        other => return Err(payload_type("payload".to_owned(), "map", &other)),
    };

    let mut fields = PayloadFields::default();
    for (key, value) in entries {
        let key = match key {
            Value::Text(key) => key,
            other => return Err(payload_type("payload key".to_owned(), "text", &other)),
        };
        let slot = match key.as_str() {
            "module_id" => &mut fields.module_id,
            "digest" => &mut fields.digest,
            "timestamp" => &mut fields.timestamp,
            "pcrs" => &mut fields.pcrs,
            "certificate" => &mut fields.certificate,
            "cabundle" => &mut fields.cabundle,
            "public_key" => &mut fields.public_key,
            "user_data" => &mut fields.user_data,
            "nonce" => &mut fields.nonce,
            _ => return Err(DecodeError::UnknownField { field: key }),
        };
        if slot.is_some() {
            return Err(DecodeError::DuplicateKey {
                check: Check::PayloadSyntax,
                field: key,
            });
        }
        *slot = Some(value);
    }

    Ok(AttestationDocument {
        module_id: parse_module_id(fields.module_id)?,
        digest: parse_digest(fields.digest)?,
        timestamp_ms: parse_timestamp(fields.timestamp)?,
        pcrs: parse_pcrs(fields.pcrs)?,
        certificate: parse_certificate(fields.certificate)?,
        cabundle: parse_cabundle(fields.cabundle)?,
        public_key: parse_optional_bytes("public_key", fields.public_key)?,
        user_data: parse_optional_bytes("user_data", fields.user_data)?,
        nonce: parse_optional_bytes("nonce", fields.nonce)?,
    })
}

#[derive(Default)]
struct PayloadFields {
    module_id: Option<Value>,
    digest: Option<Value>,
    timestamp: Option<Value>,
    pcrs: Option<Value>,
    certificate: Option<Value>,
    cabundle: Option<Value>,
    public_key: Option<Value>,
    user_data: Option<Value>,
    nonce: Option<Value>,
}

fn required(field: &'static str, value: Option<Value>) -> Result<Value, DecodeError> {
    value.ok_or(DecodeError::MissingField { field })
}

fn parse_module_id(value: Option<Value>) -> Result<String, DecodeError> {
    match required("module_id", value)? {
        Value::Text(s) if s.is_empty() => Err(DecodeError::FieldLength {
            field: "module_id".to_owned(),
            min: 1,
            max: MAX_DOCUMENT_BYTES,
            actual: 0,
        }),
        Value::Text(s) => Ok(s),
        other => Err(payload_type("module_id".to_owned(), "text", &other)),
    }
}

fn parse_digest(value: Option<Value>) -> Result<String, DecodeError> {
    match required("digest", value)? {
        Value::Text(s) if s == DIGEST_SHA384 => Ok(s),
        Value::Text(actual) => Err(DecodeError::Digest { actual }),
        other => Err(payload_type("digest".to_owned(), "text", &other)),
    }
}

fn parse_timestamp(value: Option<Value>) -> Result<u64, DecodeError> {
    match required("timestamp", value)? {
        Value::Integer(i) => match u64::try_from(i) {
            Ok(0) | Err(_) => Err(DecodeError::Timestamp {
                actual: i128::from(i).to_string(),
            }),
            Ok(ms) => Ok(ms),
        },
        other => Err(payload_type("timestamp".to_owned(), "uint", &other)),
    }
}

fn parse_pcrs(value: Option<Value>) -> Result<BTreeMap<u16, Vec<u8>>, DecodeError> {
    let entries = match required("pcrs", value)? {
        Value::Map(entries) => entries,
        other => return Err(payload_type("pcrs".to_owned(), "map", &other)),
    };
    if entries.is_empty() {
        return Err(DecodeError::EmptyCollection { field: "pcrs" });
    }
    let mut pcrs = BTreeMap::new();
    for (index, value) in entries {
        let index = match index {
            Value::Integer(i) => match u16::try_from(i) {
                Ok(index) if index <= MAX_PCR_INDEX => index,
                _ => {
                    return Err(DecodeError::PcrIndex {
                        actual: i128::from(i).to_string(),
                    })
                }
            },
            other => return Err(payload_type("pcrs key".to_owned(), "uint", &other)),
        };
        let bytes = match value {
            Value::Bytes(bytes) => bytes,
            other => return Err(payload_type(format!("pcrs[{index}]"), "bstr", &other)),
        };
        if !PCR_LENGTHS.contains(&bytes.len()) {
            return Err(DecodeError::PcrLength {
                index,
                actual: bytes.len(),
            });
        }
        if pcrs.insert(index, bytes).is_some() {
            return Err(DecodeError::DuplicateKey {
                check: Check::PayloadSyntax,
                field: format!("pcrs[{index}]"),
            });
        }
    }
    Ok(pcrs)
}

fn parse_certificate(value: Option<Value>) -> Result<Vec<u8>, DecodeError> {
    cert_bytes("certificate".to_owned(), required("certificate", value)?)
}

fn parse_cabundle(value: Option<Value>) -> Result<Vec<Vec<u8>>, DecodeError> {
    let items = match required("cabundle", value)? {
        Value::Array(items) => items,
        other => return Err(payload_type("cabundle".to_owned(), "array", &other)),
    };
    if items.is_empty() {
        return Err(DecodeError::EmptyCollection { field: "cabundle" });
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| cert_bytes(format!("cabundle[{i}]"), item))
        .collect()
}

fn cert_bytes(field: String, value: Value) -> Result<Vec<u8>, DecodeError> {
    match value {
        Value::Bytes(bytes) if (1..=MAX_CERTIFICATE_BYTES).contains(&bytes.len()) => Ok(bytes),
        Value::Bytes(bytes) => Err(DecodeError::FieldLength {
            field,
            min: 1,
            max: MAX_CERTIFICATE_BYTES,
            actual: bytes.len(),
        }),
        other => Err(payload_type(field, "bstr", &other)),
    }
}

fn parse_optional_bytes(
    field: &'static str,
    value: Option<Value>,
) -> Result<Option<Vec<u8>>, DecodeError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bytes(bytes)) if bytes.len() <= MAX_USER_FIELD_BYTES => Ok(Some(bytes)),
        Some(Value::Bytes(bytes)) => Err(DecodeError::FieldLength {
            field: field.to_owned(),
            min: 0,
            max: MAX_USER_FIELD_BYTES,
            actual: bytes.len(),
        }),
        Some(other) => Err(payload_type(field.to_owned(), "bstr or null", &other)),
    }
}

/// Decodes exactly one CBOR item from `bytes`, refusing trailing bytes.
fn decode_cbor(bytes: &[u8], check: Check, field: &'static str) -> Result<Value, DecodeError> {
    let mut reader = bytes;
    let value: Value =
        ciborium::de::from_reader_with_recursion_limit(&mut reader, CBOR_RECURSION_LIMIT).map_err(
            |e| DecodeError::Cbor {
                check,
                field,
                message: e.to_string(),
            },
        )?;
    if !reader.is_empty() {
        return Err(DecodeError::TrailingBytes {
            check,
            field,
            count: reader.len(),
        });
    }
    Ok(value)
}

fn cose_type(field: &str, expected: &'static str, actual: &Value) -> DecodeError {
    DecodeError::WrongType {
        check: Check::CoseStructure,
        field: field.to_owned(),
        expected,
        actual: type_name(actual),
    }
}

fn payload_type(field: String, expected: &'static str, actual: &Value) -> DecodeError {
    DecodeError::WrongType {
        check: Check::PayloadSyntax,
        field,
        expected,
        actual: type_name(actual),
    }
}

/// The CBOR type of a value, for messages.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Integer(i) if i128::from(*i) < 0 => "nint",
        Value::Integer(_) => "uint",
        Value::Bytes(_) => "bstr",
        Value::Float(_) => "float",
        Value::Text(_) => "text",
        Value::Bool(_) => "bool",
        Value::Null => "null",
        Value::Tag(..) => "tag",
        Value::Array(_) => "array",
        Value::Map(_) => "map",
        _ => "unknown CBOR item",
    }
}

/// A short rendering of a scalar value for messages (type only for containers).
fn describe(value: &Value) -> String {
    match value {
        Value::Integer(i) => i128::from(*i).to_string(),
        Value::Text(s) => format!("{s:?}"),
        other => type_name(other).to_owned(),
    }
}
