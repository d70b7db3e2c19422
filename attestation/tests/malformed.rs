//! One negative test per malformed field: each input yields the precise decode error, both
//! from `decode_unverified` and from `verify`.

mod common;

use agentkeys_attestation::{
    decode_unverified, verify, Check, DecodeError, VerifyError, MAX_DOCUMENT_BYTES,
};
use ciborium::Value;
use common::*;

fn base() -> Fixture {
    fixture("aws-real-2022-07-06.cose")
}

/// Decodes expecting failure, checks `verify` reports the same error.
fn err(bytes: &[u8]) -> DecodeError {
    let e = decode_unverified(bytes).unwrap_err();
    let f = base();
    assert_eq!(
        verify(bytes, &aws(), f.timestamp_ms, &f.policy()).unwrap_err(),
        VerifyError::Decode(e.clone())
    );
    e
}

fn t(s: &str) -> Value {
    Value::Text(s.into())
}

fn b(n: usize) -> Value {
    Value::Bytes(vec![7; n])
}

fn i(n: i64) -> Value {
    Value::Integer(n.into())
}

fn with_items(f: impl FnOnce(&mut Vec<Value>)) -> Vec<u8> {
    let mut items = cose_items(&base().bytes);
    f(&mut items);
    cose_from_items(items)
}

fn protected(map: Vec<(Value, Value)>) -> Vec<u8> {
    with_items(|items| items[0] = Value::Bytes(encode(&Value::Map(map))))
}

fn payload(f: impl FnOnce(&mut Vec<(Value, Value)>)) -> Vec<u8> {
    with_payload(&base().bytes, f)
}

fn wrong_type(e: DecodeError, check: Check, field: &str, expected: &str) {
    match &e {
        DecodeError::WrongType {
            check: c,
            field: fl,
            expected: ex,
            ..
        } => {
            assert_eq!((*c, fl.as_str(), *ex), (check, field, expected), "{e}");
        }
        other => panic!("expected WrongType for {field}, got {other}"),
    }
}

// ------------------------------------------------------------------ size bounds

#[test]
fn empty_document() {
    assert_eq!(err(&[]), DecodeError::Empty);
    assert_eq!(DecodeError::Empty.check(), Check::SizeBounds);
}

#[test]
fn oversized_document() {
    let bytes = vec![0x80; MAX_DOCUMENT_BYTES + 1];
    assert_eq!(
        err(&bytes),
        DecodeError::TooLarge {
            max: MAX_DOCUMENT_BYTES,
            actual: MAX_DOCUMENT_BYTES + 1
        }
    );
    // At the bound the size check passes and the next step decides.
    let bytes = vec![0x80; MAX_DOCUMENT_BYTES];
    assert_eq!(err(&bytes).check(), Check::CoseStructure);
}

// ------------------------------------------------------------------ COSE structure

#[test]
fn truncated_documents() {
    let doc = base().bytes;
    for len in [
        1,
        2,
        5,
        20,
        100,
        doc.len() / 2,
        doc.len() - 97,
        doc.len() - 1,
    ] {
        let e = err(&doc[..len]);
        assert!(
            matches!(
                e,
                DecodeError::Cbor {
                    check: Check::CoseStructure,
                    ..
                }
            ),
            "len {len}: {e}"
        );
    }
}

#[test]
fn trailing_bytes() {
    let mut doc = base().bytes;
    doc.push(0);
    assert!(matches!(
        err(&doc),
        DecodeError::TrailingBytes {
            check: Check::CoseStructure,
            count: 1,
            ..
        }
    ));
    let mut doc = base().bytes;
    doc.extend_from_slice(&base().bytes[..10]);
    assert!(matches!(
        err(&doc),
        DecodeError::TrailingBytes { count: 10, .. }
    ));
}

#[test]
fn not_an_array() {
    wrong_type(
        err(&encode(&i(5))),
        Check::CoseStructure,
        "COSE_Sign1",
        "array",
    );
    wrong_type(
        err(&encode(&Value::Map(vec![]))),
        Check::CoseStructure,
        "COSE_Sign1",
        "array",
    );
    wrong_type(
        err(&encode(&b(10))),
        Check::CoseStructure,
        "COSE_Sign1",
        "array",
    );
}

#[test]
fn wrong_array_length() {
    assert_eq!(
        err(&with_items(|items| {
            items.pop();
        })),
        DecodeError::CoseArrayLength { actual: 3 }
    );
    assert_eq!(
        err(&with_items(|items| items.push(Value::Null))),
        DecodeError::CoseArrayLength { actual: 5 }
    );
    assert_eq!(err(&[0x80]), DecodeError::CoseArrayLength { actual: 0 });
}

#[test]
fn wrong_tag() {
    let mut doc = vec![0xd3];
    doc.extend_from_slice(&base().bytes);
    assert_eq!(err(&doc), DecodeError::UnexpectedTag { actual: 19 });
    // COSE_Sign (tag 98) is not COSE_Sign1.
    let mut doc = vec![0xd8, 98];
    doc.extend_from_slice(&base().bytes);
    assert_eq!(err(&doc), DecodeError::UnexpectedTag { actual: 98 });
    // A tag 18 inside tag 18 is not an array.
    let mut doc = vec![0xd2, 0xd2];
    doc.extend_from_slice(&base().bytes);
    wrong_type(err(&doc), Check::CoseStructure, "COSE_Sign1", "array");
}

#[test]
fn protected_header_not_bstr() {
    let doc = with_items(|items| {
        items[0] = Value::Map(vec![(i(1), i(-35))]);
    });
    wrong_type(err(&doc), Check::CoseStructure, "protected header", "bstr");
}

#[test]
fn protected_header_not_a_map() {
    let doc = with_items(|items| items[0] = Value::Bytes(encode(&Value::Array(vec![i(1)]))));
    wrong_type(
        err(&doc),
        Check::CoseStructure,
        "protected header contents",
        "map",
    );
    // Empty bstr: RFC 9052 allows it for "no protected headers", but then alg is absent.
    let doc = with_items(|items| items[0] = Value::Bytes(vec![]));
    assert!(matches!(
        err(&doc),
        DecodeError::Cbor {
            field: "protected header",
            ..
        }
    ));
}

#[test]
fn protected_header_garbage_or_trailing() {
    let doc = with_items(|items| items[0] = Value::Bytes(vec![0xa1, 0x01]));
    assert!(matches!(
        err(&doc),
        DecodeError::Cbor {
            field: "protected header",
            ..
        }
    ));
    let doc = with_items(|items| items[0] = Value::Bytes(vec![0xa1, 0x01, 0x38, 0x22, 0x00]));
    assert!(matches!(
        err(&doc),
        DecodeError::TrailingBytes {
            field: "protected header",
            count: 1,
            ..
        }
    ));
}

#[test]
fn wrong_alg() {
    // ES256
    assert_eq!(
        err(&protected(vec![(i(1), i(-7))])),
        DecodeError::AlgUnsupported {
            actual: "-7".into()
        }
    );
    // ES512
    assert_eq!(
        err(&protected(vec![(i(1), i(-36))])),
        DecodeError::AlgUnsupported {
            actual: "-36".into()
        }
    );
    // Textual alg
    assert_eq!(
        err(&protected(vec![(i(1), t("ES384"))])),
        DecodeError::AlgUnsupported {
            actual: "\"ES384\"".into()
        }
    );
    // Re-encoding the genuine header decodes.
    assert!(decode_unverified(&protected(vec![(i(1), i(-35))])).is_ok());
}

#[test]
fn missing_alg() {
    assert_eq!(err(&protected(vec![])), DecodeError::AlgMissing);
}

#[test]
fn extra_protected_header() {
    assert_eq!(
        err(&protected(vec![(i(1), i(-35)), (i(4), b(3))])),
        DecodeError::UnexpectedHeader { label: "4".into() }
    );
    assert_eq!(
        err(&protected(vec![(t("alg"), i(-35))])),
        DecodeError::UnexpectedHeader {
            label: "\"alg\"".into()
        }
    );
}

#[test]
fn duplicate_alg() {
    assert!(matches!(
        err(&protected(vec![(i(1), i(-35)), (i(1), i(-35))])),
        DecodeError::DuplicateKey {
            check: Check::CoseStructure,
            ..
        }
    ));
}

#[test]
fn unprotected_not_a_map() {
    let doc = with_items(|items| items[1] = b(0));
    wrong_type(err(&doc), Check::CoseStructure, "unprotected header", "map");
    let doc = with_items(|items| items[1] = Value::Null);
    wrong_type(err(&doc), Check::CoseStructure, "unprotected header", "map");
}

#[test]
fn payload_not_bstr() {
    // Detached payload (nil) is not allowed: the NSM always embeds it.
    let doc = with_items(|items| items[2] = Value::Null);
    wrong_type(err(&doc), Check::CoseStructure, "payload", "bstr");
    let doc = with_items(|items| items[2] = t("payload"));
    wrong_type(err(&doc), Check::CoseStructure, "payload", "bstr");
}

#[test]
fn signature_length() {
    for n in [0, 1, 64, 95, 97, 104] {
        let doc = with_items(|items| items[3] = b(n));
        assert_eq!(err(&doc), DecodeError::SignatureLength { actual: n });
    }
    assert_eq!(
        DecodeError::SignatureLength { actual: 95 }.to_string(),
        "cose_structure: signature is 95 bytes, expected 96 (ES384 r||s)"
    );
}

#[test]
fn signature_not_bstr() {
    let doc = with_items(|items| items[3] = Value::Array(vec![b(48), b(48)]));
    wrong_type(err(&doc), Check::CoseStructure, "signature", "bstr");
}

#[test]
fn deep_nesting_is_refused_without_overflow() {
    let mut doc = vec![0x81; 100_000.min(MAX_DOCUMENT_BYTES - 1)];
    doc.push(0x00);
    assert!(matches!(err(&doc), DecodeError::Cbor { .. }));
    let mut doc = vec![0xd2; MAX_DOCUMENT_BYTES - 1];
    doc.push(0x80);
    assert!(matches!(err(&doc), DecodeError::Cbor { .. }));
    let mut doc = vec![0xa1, 0x00];
    for _ in 0..5000 {
        doc.extend_from_slice(&[0xa1, 0x00]);
    }
    doc.push(0x00);
    assert!(matches!(err(&doc), DecodeError::Cbor { .. }));
}

#[test]
fn huge_declared_lengths_do_not_allocate() {
    // bstr, text, array and map claiming 2^64-1 elements, with few bytes behind them.
    for head in [0x5b, 0x7b, 0x9b, 0xbb] {
        let mut doc = vec![0x84, head];
        doc.extend_from_slice(&[0xff; 8]);
        doc.extend_from_slice(&[0u8; 64]);
        assert!(
            matches!(err(&doc), DecodeError::Cbor { .. }),
            "head {head:#x}"
        );
    }
}

#[test]
fn indefinite_length_items_are_handled() {
    // An indefinite-length array with the right four items decodes like a definite one.
    let items = cose_items(&base().bytes);
    let mut doc = vec![0x9f];
    for item in &items {
        doc.extend_from_slice(&encode(item));
    }
    doc.push(0xff);
    assert_eq!(
        decode_unverified(&doc).unwrap(),
        decode_unverified(&base().bytes).unwrap()
    );
    // Unterminated indefinite array.
    assert!(matches!(
        err(&doc[..doc.len() - 1]),
        DecodeError::Cbor { .. }
    ));
}

// ------------------------------------------------------------------ payload syntax

#[test]
fn payload_not_a_map() {
    let doc = with_items(|items| items[2] = Value::Bytes(encode(&Value::Array(vec![]))));
    wrong_type(err(&doc), Check::PayloadSyntax, "payload", "map");
}

#[test]
fn payload_garbage_and_trailing() {
    let doc = with_items(|items| items[2] = Value::Bytes(vec![0xa9, 0x69]));
    assert!(matches!(
        err(&doc),
        DecodeError::Cbor {
            check: Check::PayloadSyntax,
            ..
        }
    ));
    let doc = with_items(|items| items[2] = Value::Bytes(vec![]));
    assert!(matches!(
        err(&doc),
        DecodeError::Cbor {
            check: Check::PayloadSyntax,
            ..
        }
    ));
    let doc = with_items(|items| {
        let Value::Bytes(p) = &mut items[2] else {
            panic!()
        };
        p.push(0xf6);
    });
    assert!(matches!(
        err(&doc),
        DecodeError::TrailingBytes {
            check: Check::PayloadSyntax,
            count: 1,
            ..
        }
    ));
}

#[test]
fn missing_required_fields() {
    for field in [
        "module_id",
        "digest",
        "timestamp",
        "pcrs",
        "certificate",
        "cabundle",
    ] {
        let doc = payload(|e| remove_field(e, field));
        assert_eq!(err(&doc), DecodeError::MissingField { field }, "{field}");
    }
}

#[test]
fn optional_fields_may_be_absent_or_null() {
    for field in ["public_key", "user_data", "nonce"] {
        let doc = payload(|e| remove_field(e, field));
        let d = decode_unverified(&doc).unwrap();
        let doc = payload(|e| set_field(e, field, Value::Null));
        assert_eq!(decode_unverified(&doc).unwrap(), d);
    }
}

#[test]
fn unknown_field() {
    let doc = payload(|e| set_field(e, "extra", b(1)));
    assert_eq!(
        err(&doc),
        DecodeError::UnknownField {
            field: "extra".into()
        }
    );
}

#[test]
fn non_text_key() {
    let doc = payload(|e| e.push((i(1), b(1))));
    wrong_type(err(&doc), Check::PayloadSyntax, "payload key", "text");
    let doc = payload(|e| e.push((b(1), b(1))));
    wrong_type(err(&doc), Check::PayloadSyntax, "payload key", "text");
}

#[test]
fn duplicate_fields() {
    for field in ["module_id", "timestamp", "nonce", "cabundle"] {
        let doc = payload(|e| {
            let value = get_field(e, field).clone();
            e.push((t(field), value));
        });
        assert_eq!(
            err(&doc),
            DecodeError::DuplicateKey {
                check: Check::PayloadSyntax,
                field: field.into()
            }
        );
    }
}

#[test]
fn module_id_types() {
    wrong_type(
        err(&payload(|e| set_field(e, "module_id", i(1)))),
        Check::PayloadSyntax,
        "module_id",
        "text",
    );
    wrong_type(
        err(&payload(|e| set_field(e, "module_id", b(3)))),
        Check::PayloadSyntax,
        "module_id",
        "text",
    );
    assert!(matches!(
        err(&payload(|e| set_field(e, "module_id", t("")))),
        DecodeError::FieldLength { actual: 0, .. }
    ));
}

#[test]
fn digest_values() {
    assert_eq!(
        err(&payload(|e| set_field(e, "digest", t("SHA256")))),
        DecodeError::Digest {
            actual: "SHA256".into()
        }
    );
    assert_eq!(
        err(&payload(|e| set_field(e, "digest", t("sha384")))),
        DecodeError::Digest {
            actual: "sha384".into()
        }
    );
    wrong_type(
        err(&payload(|e| set_field(e, "digest", i(384)))),
        Check::PayloadSyntax,
        "digest",
        "text",
    );
}

#[test]
fn timestamp_values() {
    assert_eq!(
        err(&payload(|e| set_field(e, "timestamp", i(0)))),
        DecodeError::Timestamp { actual: "0".into() }
    );
    assert_eq!(
        err(&payload(|e| set_field(e, "timestamp", i(-1)))),
        DecodeError::Timestamp {
            actual: "-1".into()
        }
    );
    wrong_type(
        err(&payload(|e| set_field(e, "timestamp", t("1")))),
        Check::PayloadSyntax,
        "timestamp",
        "uint",
    );
    wrong_type(
        err(&payload(|e| set_field(e, "timestamp", Value::Float(1.0)))),
        Check::PayloadSyntax,
        "timestamp",
        "uint",
    );
    let max = payload(|e| set_field(e, "timestamp", Value::Integer(u64::MAX.into())));
    assert_eq!(decode_unverified(&max).unwrap().timestamp_ms, u64::MAX);
}

fn pcrs_doc(pcrs: Vec<(Value, Value)>) -> Vec<u8> {
    payload(|e| set_field(e, "pcrs", Value::Map(pcrs)))
}

#[test]
fn pcrs_values() {
    wrong_type(
        err(&payload(|e| set_field(e, "pcrs", Value::Array(vec![])))),
        Check::PayloadSyntax,
        "pcrs",
        "map",
    );
    assert_eq!(
        err(&pcrs_doc(vec![])),
        DecodeError::EmptyCollection { field: "pcrs" }
    );
    assert_eq!(
        err(&pcrs_doc(vec![(i(32), b(48))])),
        DecodeError::PcrIndex {
            actual: "32".into()
        }
    );
    assert_eq!(
        err(&pcrs_doc(vec![(i(-1), b(48))])),
        DecodeError::PcrIndex {
            actual: "-1".into()
        }
    );
    assert_eq!(
        err(&pcrs_doc(vec![(i(70000), b(48))])),
        DecodeError::PcrIndex {
            actual: "70000".into()
        }
    );
    wrong_type(
        err(&pcrs_doc(vec![(t("0"), b(48))])),
        Check::PayloadSyntax,
        "pcrs key",
        "uint",
    );
    wrong_type(
        err(&pcrs_doc(vec![(i(0), t("00"))])),
        Check::PayloadSyntax,
        "pcrs[0]",
        "bstr",
    );
    for n in [0, 16, 47, 49, 96] {
        assert_eq!(
            err(&pcrs_doc(vec![(i(5), b(n))])),
            DecodeError::PcrLength {
                index: 5,
                actual: n
            }
        );
    }
    assert_eq!(
        err(&pcrs_doc(vec![(i(3), b(48)), (i(3), b(48))])),
        DecodeError::DuplicateKey {
            check: Check::PayloadSyntax,
            field: "pcrs[3]".into()
        }
    );
    // Every specified length and the whole index range are accepted syntactically.
    let ok = pcrs_doc(vec![(i(0), b(32)), (i(1), b(48)), (i(31), b(64))]);
    let d = decode_unverified(&ok).unwrap();
    assert_eq!(d.pcrs.keys().copied().collect::<Vec<_>>(), vec![0, 1, 31]);
}

#[test]
fn certificate_values() {
    wrong_type(
        err(&payload(|e| set_field(e, "certificate", t("x")))),
        Check::PayloadSyntax,
        "certificate",
        "bstr",
    );
    assert_eq!(
        err(&payload(|e| set_field(e, "certificate", b(0)))),
        DecodeError::FieldLength {
            field: "certificate".into(),
            min: 1,
            max: 1024,
            actual: 0
        }
    );
    assert_eq!(
        err(&payload(|e| set_field(e, "certificate", b(1025)))),
        DecodeError::FieldLength {
            field: "certificate".into(),
            min: 1,
            max: 1024,
            actual: 1025
        }
    );
}

#[test]
fn cabundle_values() {
    wrong_type(
        err(&payload(|e| set_field(e, "cabundle", b(10)))),
        Check::PayloadSyntax,
        "cabundle",
        "array",
    );
    assert_eq!(
        err(&payload(|e| set_field(e, "cabundle", Value::Array(vec![])))),
        DecodeError::EmptyCollection { field: "cabundle" }
    );
    wrong_type(
        err(&payload(|e| {
            set_field(e, "cabundle", Value::Array(vec![b(10), t("x")]))
        })),
        Check::PayloadSyntax,
        "cabundle[1]",
        "bstr",
    );
    assert!(matches!(
        err(&payload(|e| set_field(
            e,
            "cabundle",
            Value::Array(vec![b(0)])
        ))),
        DecodeError::FieldLength { actual: 0, .. }
    ));
    assert!(matches!(
        err(&payload(|e| set_field(
            e,
            "cabundle",
            Value::Array(vec![b(2000)])
        ))),
        DecodeError::FieldLength { actual: 2000, .. }
    ));
}

#[test]
fn optional_byte_fields() {
    for field in ["public_key", "user_data", "nonce"] {
        wrong_type(
            err(&payload(|e| set_field(e, field, t("x")))),
            Check::PayloadSyntax,
            field,
            "bstr or null",
        );
        wrong_type(
            err(&payload(|e| set_field(e, field, i(0)))),
            Check::PayloadSyntax,
            field,
            "bstr or null",
        );
        wrong_type(
            err(&payload(|e| set_field(e, field, Value::Bool(false)))),
            Check::PayloadSyntax,
            field,
            "bstr or null",
        );
        assert_eq!(
            err(&payload(|e| set_field(e, field, b(1025)))),
            DecodeError::FieldLength {
                field: field.into(),
                min: 0,
                max: 1024,
                actual: 1025
            }
        );
        let ok = payload(|e| set_field(e, field, b(1024)));
        decode_unverified(&ok).unwrap();
        let empty = payload(|e| set_field(e, field, b(0)));
        decode_unverified(&empty).unwrap();
    }
}

#[test]
fn error_messages_name_step_field_expected_and_actual() {
    let e = err(&payload(|e| set_field(e, "nonce", b(1025))));
    assert_eq!(
        e.to_string(),
        "payload_syntax: nonce is 1025 bytes, expected 0..=1024"
    );
    let e = err(&pcrs_doc(vec![(i(5), b(47))]));
    assert_eq!(
        e.to_string(),
        "payload_syntax: pcrs[5] is 47 bytes, expected 32, 48 or 64"
    );
    let e = err(&payload(|e| set_field(e, "timestamp", t("1"))));
    assert_eq!(
        e.to_string(),
        "payload_syntax: timestamp is text, expected uint"
    );
    assert_eq!(err(&[]).to_string(), "size_bounds: document is empty");
}
