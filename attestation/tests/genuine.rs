//! The genuine AWS documents: accepted at their own time against the embedded root,
//! rejected for every tampering and every policy mismatch.

mod common;

use std::time::Duration;

use agentkeys_attestation::{
    decode_unverified, expected_pcrs_from_measurements, verify, AnchorError, CertPosition,
    CertificateSummary, ChainError, Check, PolicyError, SignatureError, TrustAnchor, VerifyError,
    AWS_NITRO_ROOT_G1_PEM, AWS_NITRO_ROOT_G1_SHA256,
};
use ciborium::Value;
use common::*;
use sha2::{Digest, Sha256};

fn index_json() -> serde_json::Value {
    let text = std::fs::read_to_string(format!("{FIXTURES}index.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn index_hex(name: &str, field: &str) -> Option<Vec<u8>> {
    index_json()["documents"][name][field]
        .as_str()
        .map(|s| hex::decode(s).unwrap())
}

#[test]
fn embedded_root_matches_pinned_hash_and_fixture() {
    let (label, der) = x509_cert::der::pem::decode_vec(AWS_NITRO_ROOT_G1_PEM.as_bytes()).unwrap();
    assert_eq!(label, "CERTIFICATE");
    assert_eq!(hex::encode(Sha256::digest(&der)), AWS_NITRO_ROOT_G1_SHA256);
    let anchor = aws();
    assert_eq!(anchor.der(), der.as_slice());
    assert_eq!(anchor.sha256_hex(), AWS_NITRO_ROOT_G1_SHA256);
    assert!(anchor.is_aws_nitro_root_g1());
    assert!(!anchor.is_mock());
    // The embedded copy is the fixture copy, and parsing it gives the same anchor.
    let fixture_pem = std::fs::read_to_string(format!("{FIXTURES}aws-nitro-root-g1.pem")).unwrap();
    assert_eq!(TrustAnchor::from_pem(&fixture_pem).unwrap(), anchor);
    assert_eq!(
        TrustAnchor::from_pem(&fixture_pem).unwrap().subject(),
        "CN=aws.nitro-enclaves,OU=AWS,O=Amazon,C=US"
    );
}

#[test]
fn every_fixture_verifies_at_its_own_time() {
    for f in fixtures() {
        let v = verify(&f.bytes, &aws(), f.timestamp_ms, &f.policy())
            .unwrap_or_else(|e| panic!("{}: {e}", f.name));
        let index = &index_json()["documents"][f.name];
        assert_eq!(v.document.module_id, index["module_id"].as_str().unwrap());
        assert_eq!(v.document.timestamp_ms, f.timestamp_ms);
        assert_eq!(v.document.digest, "SHA384");
        assert_eq!(v.debug_mode, f.debug, "{}", f.name);
        assert_eq!(v.chain.len(), 5);
        assert_eq!(v.chain[0].sha256_hex, AWS_NITRO_ROOT_G1_SHA256);
        assert_eq!(v.chain[4].position, CertPosition::Leaf);
        assert_eq!(
            v.document.cabundle.len(),
            index["cabundle_len"].as_u64().unwrap() as usize
        );
        for pcr in [0u16, 1, 2, 3, 4, 8] {
            let want = index_hex(f.name, &format!("pcr{pcr}")).unwrap();
            assert_eq!(v.document.pcrs[&pcr], want, "{} PCR{pcr}", f.name);
        }
        assert_eq!(v.document.user_data, index_hex(f.name, "user_data_hex"));
        assert_eq!(v.document.nonce, index_hex(f.name, "nonce_hex"));
        assert_eq!(v.document.public_key, index_hex(f.name, "public_key_hex"));
        // decode_unverified agrees.
        assert_eq!(decode_unverified(&f.bytes).unwrap(), v.document);
    }
}

#[test]
fn debug_fixtures_fail_without_allow_debug() {
    for f in fixtures().into_iter().filter(|f| f.debug) {
        let err = verify(&f.bytes, &aws(), f.timestamp_ms, &Default::default()).unwrap_err();
        assert_eq!(
            err,
            VerifyError::Policy(PolicyError::DebugMode),
            "{}",
            f.name
        );
        assert_eq!(err.check(), Check::DebugMode);
    }
}

#[test]
fn chain_summaries_match_each_certificate_read_on_its_own() {
    for f in fixtures() {
        let v = verify(&f.bytes, &aws(), f.timestamp_ms, &f.policy()).unwrap();
        let document = decode_unverified(&f.bytes).unwrap();
        let ders = document
            .cabundle
            .iter()
            .chain(std::iter::once(&document.certificate));
        for (summary, der) in v.chain.iter().zip(ders) {
            let alone = CertificateSummary::from_der(summary.position, der).unwrap();
            assert_eq!(summary, &alone, "{}", f.name);
        }
        // The root is self-issued; every other issuer is the subject above it.
        assert_eq!(v.chain[0].issuer, v.chain[0].subject);
        for pair in v.chain.windows(2) {
            assert_eq!(pair[1].issuer, pair[0].subject, "{}", f.name);
        }
    }
}

#[test]
fn a_day_before_fails_not_yet_valid() {
    for f in fixtures() {
        let err = verify(&f.bytes, &aws(), f.timestamp_ms - DAY_MS, &f.policy()).unwrap_err();
        assert_eq!(err.check(), Check::CertificatePath, "{}", f.name);
        assert!(
            matches!(err, VerifyError::Chain(ChainError::NotYetValid { .. })),
            "{}: {err}",
            f.name
        );
    }
}

#[test]
fn a_day_after_fails_expired() {
    for f in fixtures() {
        let err = verify(&f.bytes, &aws(), f.timestamp_ms + DAY_MS, &f.policy()).unwrap_err();
        assert!(
            matches!(err, VerifyError::Chain(ChainError::Expired { .. })),
            "{}: {err}",
            f.name
        );
        assert!(err.to_string().contains("notAfter"), "{err}");
    }
}

#[test]
fn flipped_payload_byte_fails_signature() {
    for f in fixtures() {
        let mut bytes = f.bytes.clone();
        // The module id text starts right after the "module_id" key; flipping the low bit of
        // an ASCII character keeps the payload well-formed.
        let at = bytes.windows(9).position(|w| w == b"module_id").unwrap() + 9 + 2 + 3;
        bytes[at] ^= 0x01;
        let err = verify(&bytes, &aws(), f.timestamp_ms, &f.policy()).unwrap_err();
        assert_eq!(
            err,
            VerifyError::Signature(SignatureError::Invalid),
            "{}",
            f.name
        );
    }
}

#[test]
fn flipped_pcr_byte_fails_signature() {
    let f = fixture("aws-real-2022-07-06.cose");
    let pcr0 = index_hex(f.name, "pcr0").unwrap();
    let mut bytes = f.bytes.clone();
    let at = bytes
        .windows(48)
        .position(|w| w == pcr0.as_slice())
        .unwrap();
    bytes[at + 47] ^= 0x80;
    let err = verify(&bytes, &aws(), f.timestamp_ms, &f.policy()).unwrap_err();
    assert_eq!(err, VerifyError::Signature(SignatureError::Invalid));
}

#[test]
fn flipped_signature_byte_fails_signature() {
    for f in fixtures() {
        for position in [1, 48, 96] {
            let mut bytes = f.bytes.clone();
            let at = bytes.len() - position;
            bytes[at] ^= 0x01;
            let err = verify(&bytes, &aws(), f.timestamp_ms, &f.policy()).unwrap_err();
            assert_eq!(
                err.check(),
                Check::CoseSignature,
                "{} byte -{position}",
                f.name
            );
        }
    }
}

#[test]
fn cabundle_entry_removed_fails_certificate_path() {
    for f in fixtures() {
        for removed in 0..4 {
            let bytes = with_payload(&f.bytes, |entries| {
                let mut bundle = get_field(entries, "cabundle").as_array().unwrap().clone();
                bundle.remove(removed);
                set_field(entries, "cabundle", Value::Array(bundle));
            });
            let err = verify(&bytes, &aws(), f.timestamp_ms, &f.policy()).unwrap_err();
            assert_eq!(
                err.check(),
                Check::CertificatePath,
                "{} remove {removed}: {err}",
                f.name
            );
            if removed == 0 {
                assert!(matches!(
                    err,
                    VerifyError::Chain(ChainError::AnchorMismatch { .. })
                ));
            } else {
                assert!(
                    matches!(err, VerifyError::Chain(ChainError::IssuerName { .. })),
                    "{err}"
                );
            }
        }
    }
}

#[test]
fn cabundle_reordered_fails_certificate_path() {
    let f = fixture("aws-real-2022-07-06.cose");
    for (a, b) in [(0, 1), (1, 2), (2, 3), (1, 3)] {
        let bytes = with_payload(&f.bytes, |entries| {
            let mut bundle = get_field(entries, "cabundle").as_array().unwrap().clone();
            bundle.swap(a, b);
            set_field(entries, "cabundle", Value::Array(bundle));
        });
        let err = verify(&bytes, &aws(), f.timestamp_ms, &f.policy()).unwrap_err();
        assert_eq!(err.check(), Check::CertificatePath, "swap {a} {b}: {err}");
    }
    // Reversed (leaf-first order) fails too.
    let bytes = with_payload(&f.bytes, |entries| {
        let mut bundle = get_field(entries, "cabundle").as_array().unwrap().clone();
        bundle.reverse();
        set_field(entries, "cabundle", Value::Array(bundle));
    });
    assert!(matches!(
        verify(&bytes, &aws(), f.timestamp_ms, &f.policy()),
        Err(VerifyError::Chain(ChainError::AnchorMismatch { .. }))
    ));
}

#[test]
fn cabundle_with_extra_root_fails() {
    let f = fixture("aws-real-2022-07-06.cose");
    let bytes = with_payload(&f.bytes, |entries| {
        let mut bundle = get_field(entries, "cabundle").as_array().unwrap().clone();
        bundle.insert(0, bundle[0].clone());
        set_field(entries, "cabundle", Value::Array(bundle));
    });
    // A self-issued root above itself is a valid path (RFC 5280); the altered payload is
    // still caught by the COSE signature.
    let err = verify(&bytes, &aws(), f.timestamp_ms, &f.policy()).unwrap_err();
    assert_eq!(err.check(), Check::CoseSignature, "{err}");
}

#[test]
fn leaf_swapped_for_intermediate_fails() {
    let f = fixture("aws-real-2022-07-06.cose");
    let bytes = with_payload(&f.bytes, |entries| {
        let bundle = get_field(entries, "cabundle").as_array().unwrap().clone();
        set_field(entries, "certificate", bundle[3].clone());
    });
    let err = verify(&bytes, &aws(), f.timestamp_ms, &f.policy()).unwrap_err();
    assert_eq!(err.check(), Check::CertificatePath, "{err}");
}

#[test]
fn mock_root_anchor_rejects_genuine_documents() {
    let pki = TestPki::new(TEST_NOW_SECS);
    let mock = pki.anchor();
    assert!(mock.is_mock());
    for f in fixtures() {
        let err = verify(&f.bytes, &mock, f.timestamp_ms, &f.policy()).unwrap_err();
        match err {
            VerifyError::Chain(ChainError::AnchorMismatch {
                expected_sha256,
                actual_sha256,
            }) => {
                assert_eq!(expected_sha256, mock.sha256_hex());
                assert_eq!(actual_sha256, AWS_NITRO_ROOT_G1_SHA256);
            }
            other => panic!("{}: {other}", f.name),
        }
    }
}

#[test]
fn from_pem_refuses_the_mock_root() {
    let pki = TestPki::new(TEST_NOW_SECS);
    let err = TrustAnchor::from_pem(&pki.root_pem()).unwrap_err();
    assert!(matches!(err, AnchorError::MockRoot { .. }), "{err}");
    assert!(err.to_string().contains("AgentKeys Mock Nitro"));
}

#[test]
fn from_pem_rejects_garbage() {
    assert!(matches!(
        TrustAnchor::from_pem("nonsense"),
        Err(AnchorError::Pem { .. })
    ));
    let key_pem = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
    assert!(matches!(
        TrustAnchor::from_pem(key_pem),
        Err(AnchorError::Label { .. })
    ));
    let not_cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    assert!(matches!(
        TrustAnchor::from_pem(not_cert),
        Err(AnchorError::Certificate { .. })
    ));
}

#[test]
fn anchor_with_a_broken_self_signature_is_refused() {
    let mut der = aws().der().to_vec();
    // The last byte is inside s of the signature: the certificate still parses.
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let err = TrustAnchor::from_der(&der).unwrap_err();
    assert_eq!(
        err,
        AnchorError::NotSelfSigned {
            subject: "CN=aws.nitro-enclaves,OU=AWS,O=Amazon,C=US".to_owned(),
            reason: ChainError::Signature {
                position: CertPosition::Bundle(0),
                issuer_position: CertPosition::Bundle(0),
            },
        }
    );
    assert!(
        err.to_string().contains("not a self-signed ES384 root"),
        "{err}"
    );
}

#[test]
fn an_intermediate_is_refused_as_anchor() {
    let f = fixture("ev-beta-valid.bin");
    let intermediate = decode_unverified(&f.bytes).unwrap().cabundle[1].clone();
    let err = TrustAnchor::from_der(&intermediate).unwrap_err();
    assert!(
        matches!(
            err,
            AnchorError::NotSelfSigned {
                reason: ChainError::IssuerName { .. },
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn another_non_mock_root_rejects_genuine_documents() {
    // A root that is neither AWS's nor marked as mock: accepted as anchor, never matches.
    let specs = vec![CertSpec::ca(
        "CN=other root,O=Example,C=US",
        None,
        TEST_NOW_SECS,
    )];
    let mut specs_with_leaf = specs.clone();
    specs_with_leaf.push(CertSpec::leaf("CN=leaf,O=Example", TEST_NOW_SECS));
    let pki = TestPki::from_specs(TEST_NOW_SECS, specs_with_leaf);
    let anchor = TrustAnchor::from_pem(&pki.root_pem()).unwrap();
    assert!(!anchor.is_mock());
    let f = fixture("ev-beta-valid.bin");
    let err = verify(&f.bytes, &anchor, f.timestamp_ms, &f.policy()).unwrap_err();
    assert!(matches!(
        err,
        VerifyError::Chain(ChainError::AnchorMismatch { .. })
    ));
}

#[test]
fn expected_pcrs_pass_and_wrong_pcrs_fail() {
    for f in fixtures() {
        let mut policy = f.policy();
        for pcr in [0u16, 1, 2, 3, 4, 8] {
            policy
                .expected_pcrs
                .insert(pcr, index_hex(f.name, &format!("pcr{pcr}")).unwrap());
        }
        verify(&f.bytes, &aws(), f.timestamp_ms, &policy).unwrap();

        for pcr in [0u16, 3, 8] {
            let mut wrong = policy.clone();
            wrong.expected_pcrs.get_mut(&pcr).unwrap()[0] ^= 1;
            let err = verify(&f.bytes, &aws(), f.timestamp_ms, &wrong).unwrap_err();
            match &err {
                VerifyError::Policy(PolicyError::PcrMismatch {
                    index,
                    expected,
                    actual,
                }) => {
                    assert_eq!(*index, pcr);
                    assert_ne!(expected, actual);
                    assert_eq!(
                        *actual,
                        hex::encode(index_hex(f.name, &format!("pcr{pcr}")).unwrap())
                    );
                }
                other => panic!("{other}"),
            }
            assert!(err.to_string().starts_with("pcrs: PCR"));
        }
    }
}

#[test]
fn absent_or_out_of_range_pcr_fails() {
    let f = fixture("aws-real-2022-07-06.cose");
    let mut policy = f.policy();
    policy.expected_pcrs.insert(20, vec![0; 48]);
    assert!(matches!(
        verify(&f.bytes, &aws(), f.timestamp_ms, &policy),
        Err(VerifyError::Policy(PolicyError::PcrMissing {
            index: 20,
            ..
        }))
    ));
    let mut policy = f.policy();
    policy.expected_pcrs.insert(32, vec![0; 48]);
    assert!(matches!(
        verify(&f.bytes, &aws(), f.timestamp_ms, &policy),
        Err(VerifyError::Policy(PolicyError::PolicyPcrIndex {
            index: 32
        }))
    ));
}

#[test]
fn measurements_json_policy() {
    let f = fixture("ev-beta-valid.bin");
    let pcr = |i: u16| hex::encode(index_hex(f.name, &format!("pcr{i}")).unwrap());
    let json = format!(
        r#"{{"Measurements":{{"HashAlgorithm":"Sha384 {{ ... }}","PCR0":"{}","PCR1":"{}","PCR2":"{}"}}}}"#,
        pcr(0),
        pcr(1),
        pcr(2)
    );
    let mut policy = f.policy();
    policy.expected_pcrs = expected_pcrs_from_measurements(&json).unwrap();
    verify(&f.bytes, &aws(), f.timestamp_ms, &policy).unwrap();
    let other = fixture("aws-real-2022-07-06.cose");
    let err = verify(&other.bytes, &aws(), other.timestamp_ms, &policy).unwrap_err();
    assert!(matches!(
        err,
        VerifyError::Policy(PolicyError::PcrMismatch { index: 0, .. })
    ));
}

fn check_field_policy(
    name: &str,
    field: &'static str,
    set: fn(&mut agentkeys_attestation::Policy, Vec<u8>),
) {
    let f = fixture(name);
    let value = index_hex(name, &format!("{field}_hex")).unwrap();
    let mut policy = f.policy();
    set(&mut policy, value.clone());
    verify(&f.bytes, &aws(), f.timestamp_ms, &policy).unwrap();

    let mut wrong_value = value.clone();
    wrong_value[0] ^= 0xff;
    let mut wrong = f.policy();
    set(&mut wrong, wrong_value);
    let err = verify(&f.bytes, &aws(), f.timestamp_ms, &wrong).unwrap_err();
    assert!(
        matches!(&err, VerifyError::Policy(PolicyError::FieldMismatch { field: got, .. }) if *got == field),
        "{err}"
    );
    assert_eq!(err.check().name(), field);

    let mut longer = f.policy();
    let mut longer_value = value;
    longer_value.push(0);
    set(&mut longer, longer_value);
    assert!(verify(&f.bytes, &aws(), f.timestamp_ms, &longer).is_err());
}

#[test]
fn nonce_policy() {
    check_field_policy("ev-beta-valid.bin", "nonce", |p, v| p.nonce = Some(v));
    check_field_policy("ev-valid.b64", "nonce", |p, v| p.nonce = Some(v));
    // Expected nonce, document has none.
    let f = fixture("aws-real-2022-07-06.cose");
    let mut policy = f.policy();
    policy.nonce = Some(vec![1, 2, 3]);
    assert!(matches!(
        verify(&f.bytes, &aws(), f.timestamp_ms, &policy),
        Err(VerifyError::Policy(PolicyError::FieldMissing {
            field: "nonce",
            ..
        }))
    ));
}

#[test]
fn user_data_policy() {
    check_field_policy("aws-real-2022-07-06.cose", "user_data", |p, v| {
        p.user_data = Some(v)
    });
    check_field_policy("ev-beta-debug.bin", "user_data", |p, v| {
        p.user_data = Some(v)
    });
    let f = fixture("ev-beta-valid.bin");
    let mut policy = f.policy();
    policy.user_data = Some(vec![0]);
    assert!(matches!(
        verify(&f.bytes, &aws(), f.timestamp_ms, &policy),
        Err(VerifyError::Policy(PolicyError::FieldMissing {
            field: "user_data",
            ..
        }))
    ));
}

#[test]
fn public_key_policy() {
    check_field_policy("aws-real-2022-07-06.cose", "public_key", |p, v| {
        p.public_key = Some(v)
    });
    check_field_policy("ev-beta-debug.bin", "public_key", |p, v| {
        p.public_key = Some(v)
    });
    let f = fixture("ev-beta-valid.bin");
    let mut policy = f.policy();
    policy.public_key = Some(vec![0]);
    assert!(matches!(
        verify(&f.bytes, &aws(), f.timestamp_ms, &policy),
        Err(VerifyError::Policy(PolicyError::FieldMissing {
            field: "public_key",
            ..
        }))
    ));
}

#[test]
fn max_age_exceeded_fails() {
    for f in fixtures() {
        let mut policy = f.policy();
        policy.max_age = Some(Duration::from_secs(300));
        policy.clock_skew = Duration::from_secs(30);
        // Within max age + skew.
        verify(&f.bytes, &aws(), f.timestamp_ms + 330_000, &policy).unwrap();
        let err = verify(&f.bytes, &aws(), f.timestamp_ms + 330_001, &policy).unwrap_err();
        match err {
            VerifyError::Policy(PolicyError::TooOld {
                age_ms,
                max_age_ms,
                skew_ms,
                ..
            }) => {
                assert_eq!((age_ms, max_age_ms, skew_ms), (330_001, 300_000, 30_000));
            }
            other => panic!("{}: {other}", f.name),
        }
    }
}

#[test]
fn tag_18_is_accepted_other_tags_are_not() {
    let f = fixture("aws-real-2022-07-06.cose");
    let mut tagged = vec![0xd2];
    tagged.extend_from_slice(&f.bytes);
    verify(&tagged, &aws(), f.timestamp_ms, &f.policy()).unwrap();
    let mut wrong = vec![0xd3];
    wrong.extend_from_slice(&f.bytes);
    assert_eq!(
        verify(&wrong, &aws(), f.timestamp_ms, &f.policy())
            .unwrap_err()
            .to_string(),
        "cose_structure: CBOR tag is 19, expected none or 18 (COSE_Sign1)"
    );
}

#[test]
fn unprotected_header_is_not_signed_but_must_be_a_map() {
    let f = fixture("ev-beta-valid.bin");
    let mut items = cose_items(&f.bytes);
    items[1] = Value::Map(vec![(
        Value::Integer(4.into()),
        Value::Bytes(b"kid".to_vec()),
    )]);
    // Contents of the unprotected header are not covered by the signature and are ignored.
    verify(&cose_from_items(items), &aws(), f.timestamp_ms, &f.policy()).unwrap();
}

#[test]
fn cose_signature_over_another_payload_fails() {
    // Payload of one genuine document with the signature of another.
    let a = fixture("aws-real-2022-07-06.cose");
    let b = fixture("ev-beta-valid.bin");
    let mut items = cose_items(&a.bytes);
    items[3] = cose_items(&b.bytes)[3].clone();
    let err = verify(&cose_from_items(items), &aws(), a.timestamp_ms, &a.policy()).unwrap_err();
    assert_eq!(err.check(), Check::CoseSignature);
}
