//! Certificate-path, signature and freshness rules exercised with a test PKI shaped like
//! the Nitro one (P-384 root → intermediates with path lengths → leaf).

mod common;

use std::time::Duration;

use agentkeys_attestation::{
    verify, CertPosition, ChainError, Check, PolicyError, SignatureError, VerifyError,
};
use ciborium::Value;
use common::*;
use x509_cert::ext::pkix::KeyUsages;

fn run(pki: &TestPki, doc: &[u8]) -> Result<agentkeys_attestation::VerifiedDocument, VerifyError> {
    verify(doc, &pki.anchor(), pki.now_ms(), &Default::default())
}

fn chain_err(pki: &TestPki) -> ChainError {
    match run(pki, &pki.document(&DocSpec::new(pki.now_ms()))) {
        Err(VerifyError::Chain(e)) => e,
        other => panic!("expected a chain error, got {other:?}"),
    }
}

fn specs() -> Vec<CertSpec> {
    TestPki::new(TEST_NOW_SECS).specs
}

#[test]
fn test_pki_documents_verify_with_the_mock_root_explicitly_trusted() {
    let pki = TestPki::new(TEST_NOW_SECS);
    let spec = DocSpec::new(pki.now_ms());
    let doc = pki.document(&spec);
    let v = run(&pki, &doc).unwrap();
    assert!(v.anchor_is_mock);
    assert_eq!(v.document.nonce, spec.nonce);
    assert_eq!(v.chain.len(), 4);
    // Tagged form too.
    let mut tagged = vec![0xd2];
    tagged.extend_from_slice(&doc);
    run(&pki, &tagged).unwrap();
    // And never against the AWS root.
    assert!(matches!(
        verify(&doc, &aws(), pki.now_ms(), &Default::default()),
        Err(VerifyError::Chain(ChainError::AnchorMismatch { .. }))
    ));
}

#[test]
fn leaf_that_is_a_ca_is_rejected() {
    let mut s = specs();
    s[3].ca = Some(true);
    let e = chain_err(&TestPki::from_specs(TEST_NOW_SECS, s));
    assert_eq!(
        e,
        ChainError::BasicConstraints {
            position: CertPosition::Leaf,
            expected: false,
            actual: true
        }
    );
}

#[test]
fn leaf_without_basic_constraints_is_accepted() {
    let mut s = specs();
    s[3].ca = None;
    let pki = TestPki::from_specs(TEST_NOW_SECS, s);
    run(&pki, &pki.document(&DocSpec::new(pki.now_ms()))).unwrap();
}

#[test]
fn leaf_key_usage_must_include_digital_signature() {
    let mut s = specs();
    s[3].key_usage = None;
    let e = chain_err(&TestPki::from_specs(TEST_NOW_SECS, s.clone()));
    assert!(
        matches!(e, ChainError::KeyUsage { position: CertPosition::Leaf, expected: "digitalSignature", ref actual } if actual == "absent"),
        "{e}"
    );
    s[3].key_usage = Some(vec![KeyUsages::KeyAgreement]);
    let e = chain_err(&TestPki::from_specs(TEST_NOW_SECS, s));
    assert!(
        matches!(e, ChainError::KeyUsage { ref actual, .. } if actual == "keyAgreement"),
        "{e}"
    );
}

#[test]
fn intermediate_must_be_a_ca() {
    let mut s = specs();
    s[2].ca = Some(false);
    assert_eq!(
        chain_err(&TestPki::from_specs(TEST_NOW_SECS, s.clone())),
        ChainError::BasicConstraints {
            position: CertPosition::Bundle(2),
            expected: true,
            actual: false
        }
    );
    s[2].ca = None;
    assert_eq!(
        chain_err(&TestPki::from_specs(TEST_NOW_SECS, s)),
        ChainError::BasicConstraints {
            position: CertPosition::Bundle(2),
            expected: true,
            actual: false
        }
    );
}

#[test]
fn root_must_be_a_ca() {
    let mut s = specs();
    s[0].ca = Some(false);
    assert!(matches!(
        chain_err(&TestPki::from_specs(TEST_NOW_SECS, s)),
        ChainError::BasicConstraints {
            position: CertPosition::Bundle(0),
            ..
        }
    ));
}

#[test]
fn ca_needs_key_cert_sign() {
    let mut s = specs();
    s[1].key_usage = Some(vec![KeyUsages::DigitalSignature, KeyUsages::CRLSign]);
    let e = chain_err(&TestPki::from_specs(TEST_NOW_SECS, s.clone()));
    assert!(
        matches!(
            e,
            ChainError::KeyUsage {
                position: CertPosition::Bundle(1),
                expected: "keyCertSign",
                ..
            }
        ),
        "{e}"
    );
    s[1].key_usage = None;
    assert!(matches!(
        chain_err(&TestPki::from_specs(TEST_NOW_SECS, s)),
        ChainError::KeyUsage {
            position: CertPosition::Bundle(1),
            ..
        }
    ));
}

#[test]
fn path_length_is_enforced() {
    // int1 allows no intermediate below it, but int2 follows.
    let mut s = specs();
    s[1].path_len = Some(0);
    assert_eq!(
        chain_err(&TestPki::from_specs(TEST_NOW_SECS, s)),
        ChainError::PathLength {
            position: CertPosition::Bundle(1),
            path_len: 0,
            actual: 1
        }
    );
    // The root may constrain too.
    let mut s = specs();
    s[0].path_len = Some(1);
    assert_eq!(
        chain_err(&TestPki::from_specs(TEST_NOW_SECS, s)),
        ChainError::PathLength {
            position: CertPosition::Bundle(0),
            path_len: 1,
            actual: 2
        }
    );
    // Exactly enough is fine.
    let mut s = specs();
    s[0].path_len = Some(2);
    let pki = TestPki::from_specs(TEST_NOW_SECS, s);
    run(&pki, &pki.document(&DocSpec::new(pki.now_ms()))).unwrap();
}

#[test]
fn validity_window_of_every_certificate() {
    for (index, position) in [(1, CertPosition::Bundle(1)), (3, CertPosition::Leaf)] {
        let mut s = specs();
        s[index].not_before_secs = TEST_NOW_SECS + 10;
        assert!(
            matches!(chain_err(&TestPki::from_specs(TEST_NOW_SECS, s)), ChainError::NotYetValid { position: p, .. } if p == position)
        );
        let mut s = specs();
        s[index].not_after_secs = TEST_NOW_SECS - 10;
        assert!(
            matches!(chain_err(&TestPki::from_specs(TEST_NOW_SECS, s)), ChainError::Expired { position: p, .. } if p == position)
        );
    }
    // Boundaries are inclusive.
    let mut s = specs();
    s[3].not_before_secs = TEST_NOW_SECS;
    s[3].not_after_secs = TEST_NOW_SECS;
    let pki = TestPki::from_specs(TEST_NOW_SECS, s);
    run(&pki, &pki.document(&DocSpec::new(pki.now_ms()))).unwrap();
}

#[test]
fn p256_leaf_key_is_rejected() {
    let pki = TestPki::new(TEST_NOW_SECS);
    let p256_key = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
    let spki =
        x509_cert::spki::SubjectPublicKeyInfoOwned::from_key(*p256_key.verifying_key()).unwrap();
    let issuer: x509_cert::name::Name = pki.specs[2].subject.parse().unwrap();
    let leaf = issue(&pki.specs[3], spki, Some(&issuer), &pki.keys[2], 999);
    let doc = with_payload(&pki.document(&DocSpec::new(pki.now_ms())), |e| {
        set_field(e, "certificate", Value::Bytes(leaf))
    });
    let e = run(&pki, &doc).unwrap_err();
    assert!(
        matches!(e, VerifyError::Chain(ChainError::KeyAlgorithm { position: CertPosition::Leaf, ref actual }) if actual.contains("1.2.840.10045.3.1.7")),
        "{e}"
    );
}

#[test]
fn leaf_signed_by_the_wrong_key_is_rejected() {
    let pki = TestPki::new(TEST_NOW_SECS);
    let issuer: x509_cert::name::Name = pki.specs[2].subject.parse().unwrap();
    // Right issuer name, wrong key (the root's).
    let leaf = issue(
        &pki.specs[3],
        spki_of(&pki.leaf_key),
        Some(&issuer),
        &pki.keys[0],
        5,
    );
    let doc = with_payload(&pki.document(&DocSpec::new(pki.now_ms())), |e| {
        set_field(e, "certificate", Value::Bytes(leaf))
    });
    assert_eq!(
        run(&pki, &doc).unwrap_err(),
        VerifyError::Chain(ChainError::Signature {
            position: CertPosition::Leaf,
            issuer_position: CertPosition::Bundle(2)
        })
    );
}

#[test]
fn garbage_certificate_is_a_parse_error() {
    let pki = TestPki::new(TEST_NOW_SECS);
    let doc = with_payload(&pki.document(&DocSpec::new(pki.now_ms())), |e| {
        let mut bundle = get_field(e, "cabundle").as_array().unwrap().clone();
        bundle[2] = Value::Bytes(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
        set_field(e, "cabundle", Value::Array(bundle));
    });
    assert!(matches!(
        run(&pki, &doc).unwrap_err(),
        VerifyError::Chain(ChainError::Parse {
            position: CertPosition::Bundle(2),
            ..
        })
    ));
}

#[test]
fn document_signed_by_another_key_is_rejected() {
    let pki = TestPki::new(TEST_NOW_SECS);
    let payload = encode(&Value::Map(pki.payload(&DocSpec::new(pki.now_ms()))));
    let protected = encode(&Value::Map(vec![(
        Value::Integer(1.into()),
        Value::Integer((-35).into()),
    )]));
    let doc = sign_cose(&pki.keys[2], protected, payload, Value::Map(vec![]));
    assert_eq!(
        run(&pki, &doc).unwrap_err(),
        VerifyError::Signature(SignatureError::Invalid)
    );
}

#[test]
fn protected_header_bytes_are_covered_as_received() {
    // The same header map encoded non-minimally (alg as a 1-byte-argument integer): the
    // signature is over these exact bytes, so it verifies; re-encoding would break it.
    let pki = TestPki::new(TEST_NOW_SECS);
    let payload = encode(&Value::Map(pki.payload(&DocSpec::new(pki.now_ms()))));
    let protected = vec![0xa1, 0x01, 0x38, 0x22];
    let doc = sign_cose(
        &pki.leaf_key,
        protected.clone(),
        payload.clone(),
        Value::Map(vec![]),
    );
    run(&pki, &doc).unwrap();
    let protected_long = vec![0xa1, 0x18, 0x01, 0x38, 0x22];
    let doc = sign_cose(&pki.leaf_key, protected_long, payload, Value::Map(vec![]));
    run(&pki, &doc).unwrap();
}

#[test]
fn zero_signature_is_an_encoding_error() {
    let pki = TestPki::new(TEST_NOW_SECS);
    let mut items = cose_items(&pki.document(&DocSpec::new(pki.now_ms())));
    items[3] = Value::Bytes(vec![0; 96]);
    assert_eq!(
        run(&pki, &cose_from_items(items)).unwrap_err(),
        VerifyError::Signature(SignatureError::Encoding)
    );
}

#[test]
fn document_from_the_future_is_rejected() {
    let pki = TestPki::new(TEST_NOW_SECS);
    let policy = agentkeys_attestation::Policy {
        clock_skew: Duration::from_secs(60),
        ..Default::default()
    };
    let ok = pki.document(&DocSpec::new(pki.now_ms() + 60_000));
    verify(&ok, &pki.anchor(), pki.now_ms(), &policy).unwrap();
    let future = pki.document(&DocSpec::new(pki.now_ms() + 60_001));
    let e = verify(&future, &pki.anchor(), pki.now_ms(), &policy).unwrap_err();
    assert!(matches!(
        e,
        VerifyError::Policy(PolicyError::FromFuture {
            skew_ms: 60_000,
            ..
        })
    ));
    assert_eq!(e.check(), Check::Freshness);
}

#[test]
fn debug_mode_needs_all_three_pcrs_zero() {
    let pki = TestPki::new(TEST_NOW_SECS);
    let mut spec = DocSpec::new(pki.now_ms());
    for i in [0u16, 1, 2] {
        spec.pcrs.insert(i, vec![0; 48]);
    }
    let doc = pki.document(&spec);
    assert_eq!(
        run(&pki, &doc).unwrap_err(),
        VerifyError::Policy(PolicyError::DebugMode)
    );
    let allow = agentkeys_attestation::Policy {
        allow_debug: true,
        ..Default::default()
    };
    assert!(
        verify(&doc, &pki.anchor(), pki.now_ms(), &allow)
            .unwrap()
            .debug_mode
    );
    // Only two of three zero: not debug mode.
    spec.pcrs.insert(2, vec![9; 48]);
    assert!(!run(&pki, &pki.document(&spec)).unwrap().debug_mode);
}

#[test]
fn policy_checks_run_in_order() {
    let pki = TestPki::new(TEST_NOW_SECS);
    let spec = DocSpec::new(pki.now_ms());
    let doc = pki.document(&spec);
    let mut policy = agentkeys_attestation::Policy {
        nonce: Some(b"other".to_vec()),
        user_data: Some(b"other".to_vec()),
        ..Default::default()
    };
    policy.expected_pcrs.insert(0, vec![0xee; 48]);
    let e = verify(&doc, &pki.anchor(), pki.now_ms(), &policy).unwrap_err();
    assert_eq!(e.check(), Check::Pcrs);
    policy.expected_pcrs.clear();
    let e = verify(&doc, &pki.anchor(), pki.now_ms(), &policy).unwrap_err();
    assert_eq!(e.check(), Check::Nonce);
    policy.nonce = spec.nonce.clone();
    let e = verify(&doc, &pki.anchor(), pki.now_ms(), &policy).unwrap_err();
    assert_eq!(e.check(), Check::UserData);
    assert_eq!(
        e.to_string(),
        format!(
            "user_data: user_data is {}, expected {}",
            hex::encode(b"user data"),
            hex::encode(b"other")
        )
    );
}
