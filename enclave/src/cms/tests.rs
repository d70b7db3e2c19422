//! Fixture vectors, negative structural tests and a no-panic sweep.

use super::ber::{octet_string, oid_text, Reader};
use super::enveloped::{
    OID_AES256_CBC, OID_DATA, OID_ENVELOPED_DATA, OID_MGF1, OID_P_SPECIFIED, OID_RSAES_OAEP,
    OID_SHA256,
};
use super::*;
use aws_lc_rs::cipher::{
    EncryptingKey, EncryptionContext, PaddedBlockEncryptingKey, UnboundCipherKey, AES_256,
};
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rsa::{OaepPublicEncryptingKey, PublicEncryptingKey, OAEP_SHA256_MGF1SHA256};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../fixtures/kms-recipient/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn expected() -> serde_json::Value {
    serde_json::from_slice(&fixture("expected.json")).unwrap()
}

fn hex(s: &serde_json::Value) -> Vec<u8> {
    hex::decode(s.as_str().unwrap()).unwrap()
}

fn test_key() -> RecipientKey {
    let pem = String::from_utf8(fixture("openssl-test-rsa2048-key.pem")).unwrap();
    RecipientKey::from_pkcs8_pem(&pem).unwrap()
}

const AWS: [&str; 2] = ["enveloped-aes256cbc.ber", "enveloped-context-specific.ber"];
const OPENSSL: [&str; 2] = [
    "openssl-oaep-aes256cbc-indefinite.ber",
    "openssl-oaep-aes256cbc-definite.der",
];

// ---------------------------------------------------------------- fixtures

#[test]
fn aws_vectors_parse_to_the_expected_fields() {
    let expected = expected();
    for name in AWS {
        let ber = fixture(name);
        let want = &expected[name];
        assert_eq!(ber.len() as u64, want["len"].as_u64().unwrap(), "{name}");
        let parsed = parse_enveloped_data(&ber).unwrap();
        assert_eq!(
            parsed.encrypted_key,
            hex(&want["encrypted_key_hex"]),
            "{name}"
        );
        assert_eq!(parsed.iv.to_vec(), hex(&want["iv_hex"]), "{name}");
        assert_eq!(parsed.ciphertext, hex(&want["ciphertext_hex"]), "{name}");
        assert!(matches!(
            parsed.recipient,
            RecipientId::SubjectKeyIdentifier(ref ski) if ski.len() == 32
        ));
    }
}

#[test]
fn openssl_vectors_decrypt_to_the_expected_plaintext() {
    let expected = expected();
    let key = test_key();
    assert_eq!(key.bits(), 2048);
    for name in OPENSSL {
        let plaintext = unwrap_ciphertext_for_recipient(&fixture(name), &key).unwrap();
        assert_eq!(
            plaintext.as_slice(),
            hex(&expected[name]["plaintext_hex"]).as_slice(),
            "{name}"
        );
    }
    // The indefinite vector carries its ciphertext in two chunks (32 + 16 bytes).
    let parsed = parse_enveloped_data(&fixture(OPENSSL[0])).unwrap();
    assert_eq!(parsed.ciphertext.len(), 48);
    assert_eq!(parsed.encrypted_key.len(), 256);
}

#[test]
fn aws_vectors_do_not_decrypt_with_another_key() {
    let key = test_key();
    for name in AWS {
        assert_eq!(
            unwrap_ciphertext_for_recipient(&fixture(name), &key).unwrap_err(),
            CmsError::KeyUnwrap,
            "{name}"
        );
    }
}

#[test]
fn wrong_key_is_refused() {
    let other = RecipientKey::generate().unwrap();
    for name in OPENSSL {
        assert_eq!(
            unwrap_ciphertext_for_recipient(&fixture(name), &other).unwrap_err(),
            CmsError::KeyUnwrap
        );
    }
}

#[test]
fn debug_output_is_redacted() {
    let key = test_key();
    let text = format!("{key:?}");
    assert!(text.contains("<redacted>"), "{text}");
    assert!(text.contains("2048"), "{text}");
    assert!(text.len() < 200, "{text}");
    let parsed = parse_enveloped_data(&fixture(OPENSSL[1])).unwrap();
    let text = format!("{parsed:?}");
    assert!(text.contains("<256 bytes>"), "{text}");
}

#[test]
fn generated_key_round_trip_with_chunked_indefinite_ber() {
    let key = RecipientKey::generate().unwrap();
    assert_eq!(key.bits(), 2048);
    let spki = key.public_key_spki_der();
    assert_eq!(spki[0], 0x30);
    let seed: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(7)).collect();
    let (encrypted_key, cek) = wrap_random_cek(&spki);
    let iv = [0x11u8; 16];
    let ciphertext = aes_cbc_pkcs7(&cek, &iv, &seed);
    // Content in 3 chunks, one of them a nested constructed OCTET STRING.
    let (a, rest) = ciphertext.split_at(5);
    let (b, c) = rest.split_at(20);
    let content = indef(
        0xa0,
        &[
            tlv(0x04, a),
            indef(0x24, &[tlv(0x04, b), tlv(0x04, &[])]),
            tlv(0x04, c),
        ],
    );
    let ber = Parts::new(encrypted_key.clone(), iv.to_vec(), content).encode(true);
    let plaintext = unwrap_ciphertext_for_recipient(&ber, &key).unwrap();
    assert_eq!(plaintext.as_slice(), seed.as_slice());
    // Definite form of the same.
    let ber = Parts::new(encrypted_key, iv.to_vec(), tlv(0x80, &ciphertext)).encode(false);
    let plaintext = unwrap_ciphertext_for_recipient(&ber, &key).unwrap();
    assert_eq!(plaintext.as_slice(), seed.as_slice());
}

// ---------------------------------------------------------------- builder

const OID_SHA1: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];
const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_AES128_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x02];

fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend_from_slice(&[0x81, len as u8]);
    } else {
        out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend_from_slice(contents);
    out
}

fn cons(tag: u8, children: &[Vec<u8>], indefinite: bool) -> Vec<u8> {
    if indefinite {
        indef(tag, children)
    } else {
        tlv(tag, &children.concat())
    }
}

fn indef(tag: u8, children: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![tag, 0x80];
    out.extend_from_slice(&children.concat());
    out.extend_from_slice(&[0, 0]);
    out
}

fn oid(contents: &[u8]) -> Vec<u8> {
    tlv(0x06, contents)
}

fn alg(oid_contents: &[u8], params: Option<Vec<u8>>) -> Vec<u8> {
    let mut children = vec![oid(oid_contents)];
    children.extend(params);
    tlv(0x30, &children.concat())
}

fn sha256_alg() -> Vec<u8> {
    alg(OID_SHA256, Some(tlv(0x05, &[])))
}

fn oaep_params(hash: Option<Vec<u8>>, mgf_hash: Option<Vec<u8>>, label: Option<&[u8]>) -> Vec<u8> {
    let mut fields = Vec::new();
    if let Some(hash) = hash {
        fields.push(tlv(0xa0, &hash));
    }
    if let Some(mgf_hash) = mgf_hash {
        fields.push(tlv(0xa1, &alg(OID_MGF1, Some(mgf_hash))));
    }
    if let Some(label) = label {
        fields.push(tlv(0xa2, &alg(OID_P_SPECIFIED, Some(tlv(0x04, label)))));
    }
    tlv(0x30, &fields.concat())
}

fn good_key_alg() -> Vec<u8> {
    alg(
        OID_RSAES_OAEP,
        Some(oaep_params(Some(sha256_alg()), Some(sha256_alg()), None)),
    )
}

fn ktri(version: u8, rid: Vec<u8>, key_alg: Vec<u8>, encrypted_key: &[u8]) -> Vec<u8> {
    tlv(
        0x30,
        &[
            tlv(0x02, &[version]),
            rid,
            key_alg,
            tlv(0x04, encrypted_key),
        ]
        .concat(),
    )
}

fn ski() -> Vec<u8> {
    tlv(0x80, &[0x5a; 20])
}

/// A valid EnvelopedData made of parts that tests replace one at a time.
#[derive(Clone)]
struct Parts {
    content_type: Vec<u8>,
    version: Vec<u8>,
    originator: Option<Vec<u8>>,
    recipients: Vec<Vec<u8>>,
    data_type: Vec<u8>,
    cipher: Vec<u8>,
    content: Option<Vec<u8>>,
    enveloped_extra: Vec<Vec<u8>>,
    eci_extra: Vec<Vec<u8>>,
}

impl Parts {
    fn new(encrypted_key: Vec<u8>, iv: Vec<u8>, content: Vec<u8>) -> Parts {
        Parts {
            content_type: oid(OID_ENVELOPED_DATA),
            version: tlv(0x02, &[2]),
            originator: None,
            recipients: vec![ktri(2, ski(), good_key_alg(), &encrypted_key)],
            data_type: oid(OID_DATA),
            cipher: alg(OID_AES256_CBC, Some(tlv(0x04, &iv))),
            content: Some(content),
            enveloped_extra: vec![],
            eci_extra: vec![],
        }
    }

    /// With the openssl vector's key, IV and ciphertext (decryptable with the test key).
    fn openssl() -> Parts {
        let parsed = parse_enveloped_data(&fixture(OPENSSL[1])).unwrap();
        Parts::new(
            parsed.encrypted_key,
            parsed.iv.to_vec(),
            tlv(0x80, &parsed.ciphertext),
        )
    }

    fn encode(&self, indefinite: bool) -> Vec<u8> {
        let mut eci = vec![self.data_type.clone(), self.cipher.clone()];
        eci.extend(self.content.clone());
        eci.extend(self.eci_extra.clone());
        let mut ed = vec![self.version.clone()];
        ed.extend(self.originator.clone());
        ed.push(tlv(0x31, &self.recipients.concat()));
        ed.push(cons(0x30, &eci, indefinite));
        ed.extend(self.enveloped_extra.clone());
        cons(
            0x30,
            &[
                self.content_type.clone(),
                cons(0xa0, &[cons(0x30, &ed, indefinite)], indefinite),
            ],
            indefinite,
        )
    }
}

fn wrap_random_cek(spki: &[u8]) -> (Vec<u8>, [u8; 32]) {
    let mut cek = [0u8; 32];
    aws_lc_rs::rand::fill(&mut cek).unwrap();
    let public =
        OaepPublicEncryptingKey::new(PublicEncryptingKey::from_der(spki).unwrap()).unwrap();
    let mut out = vec![0u8; public.ciphertext_size()];
    let n = public
        .encrypt(&OAEP_SHA256_MGF1SHA256, &cek, &mut out, None)
        .unwrap()
        .len();
    out.truncate(n);
    (out, cek)
}

fn aes_cbc_pkcs7(key: &[u8], iv: &[u8; 16], plaintext: &[u8]) -> Vec<u8> {
    let k =
        PaddedBlockEncryptingKey::cbc_pkcs7(UnboundCipherKey::new(&AES_256, key).unwrap()).unwrap();
    let mut buf = plaintext.to_vec();
    k.less_safe_encrypt(&mut buf, EncryptionContext::Iv128(FixedLength::from(*iv)))
        .unwrap();
    buf
}

fn aes_cbc_raw(key: &[u8], iv: &[u8; 16], blocks: &[u8]) -> Vec<u8> {
    let k = EncryptingKey::cbc(UnboundCipherKey::new(&AES_256, key).unwrap()).unwrap();
    let mut buf = blocks.to_vec();
    k.less_safe_encrypt(&mut buf, EncryptionContext::Iv128(FixedLength::from(*iv)))
        .unwrap();
    buf
}

#[test]
fn builder_matches_the_openssl_vector() {
    for indefinite in [false, true] {
        let plaintext =
            unwrap_ciphertext_for_recipient(&Parts::openssl().encode(indefinite), &test_key())
                .unwrap();
        assert_eq!(plaintext.len(), 32);
    }
}

fn parse_err(parts: &Parts) -> CmsError {
    let definite = parse_enveloped_data(&parts.encode(false)).unwrap_err();
    let indefinite = parse_enveloped_data(&parts.encode(true)).unwrap_err();
    // Same verdict in both encodings, modulo offsets.
    assert_eq!(
        std::mem::discriminant(&definite),
        std::mem::discriminant(&indefinite),
        "{definite} vs {indefinite}"
    );
    definite
}

// ---------------------------------------------------------------- structural negatives

#[test]
fn wrong_content_type_oid() {
    let mut p = Parts::openssl();
    p.content_type = oid(OID_DATA);
    let err = parse_err(&p);
    assert!(
        matches!(&err, CmsError::UnexpectedOid { field: "ContentInfo contentType", actual, .. } if actual == "1.2.840.113549.1.7.1"),
        "{err}"
    );
    assert!(err.to_string().contains("envelopedData"), "{err}");
}

#[test]
fn wrong_version() {
    for v in [1u8, 3, 4, 0x7f] {
        let mut p = Parts::openssl();
        p.version = tlv(0x02, &[v]);
        assert_eq!(
            parse_err(&p),
            CmsError::UnsupportedVersion {
                structure: "EnvelopedData",
                expected: "0 or 2",
                actual: u64::from(v)
            }
        );
    }
    for bad in [tlv(0x02, &[]), tlv(0x02, &[0x80]), tlv(0x02, &[0, 2])] {
        let mut p = Parts::openssl();
        p.version = bad;
        assert!(matches!(parse_err(&p), CmsError::InvalidInteger { .. }));
    }
    let mut p = Parts::openssl();
    p.version = tlv(0x04, &[2]);
    assert!(matches!(
        parse_err(&p),
        CmsError::UnexpectedTag {
            field: "EnvelopedData version",
            ..
        }
    ));
}

#[test]
fn ktri_version_must_match_rid() {
    let key = parse_enveloped_data(&fixture(OPENSSL[1]))
        .unwrap()
        .encrypted_key;
    let mut p = Parts::openssl();
    p.recipients = vec![ktri(0, ski(), good_key_alg(), &key)];
    assert!(matches!(
        parse_err(&p),
        CmsError::UnsupportedVersion { expected: "2", .. }
    ));
    p.recipients = vec![ktri(2, tlv(0x30, &tlv(0x02, &[1])), good_key_alg(), &key)];
    assert!(matches!(
        parse_err(&p),
        CmsError::UnsupportedVersion { expected: "0", .. }
    ));
    // issuerAndSerialNumber with version 0 is accepted.
    p.recipients = vec![ktri(0, tlv(0x30, &tlv(0x02, &[1])), good_key_alg(), &key)];
    let parsed = parse_enveloped_data(&p.encode(false)).unwrap();
    assert!(matches!(
        parsed.recipient,
        RecipientId::IssuerAndSerialNumber(_)
    ));
    // Another rid form.
    p.recipients = vec![ktri(2, tlv(0x81, &[1]), good_key_alg(), &key)];
    assert!(matches!(
        parse_err(&p),
        CmsError::UnexpectedTag {
            field: "KeyTransRecipientInfo rid",
            ..
        }
    ));
}

#[test]
fn recipient_count_must_be_one() {
    let mut p = Parts::openssl();
    let one = p.recipients[0].clone();
    p.recipients = vec![one.clone(), one];
    assert_eq!(parse_err(&p), CmsError::RecipientCount { actual: 2 });
    p.recipients = vec![];
    assert_eq!(parse_err(&p), CmsError::RecipientCount { actual: 0 });
    // A KeyAgreeRecipientInfo ([1]) instead.
    p.recipients = vec![tlv(0xa1, &tlv(0x02, &[3]))];
    assert!(matches!(
        parse_err(&p),
        CmsError::UnsupportedRecipientInfo { actual } if actual == Tag::context(1, true)
    ));
}

#[test]
fn wrong_key_encryption_oid() {
    let key = parse_enveloped_data(&fixture(OPENSSL[1]))
        .unwrap()
        .encrypted_key;
    let mut p = Parts::openssl();
    p.recipients = vec![ktri(
        2,
        ski(),
        alg(OID_RSA_ENCRYPTION, Some(tlv(0x05, &[]))),
        &key,
    )];
    let err = parse_err(&p);
    assert!(
        matches!(&err, CmsError::UnexpectedOid { field: "keyEncryptionAlgorithm", actual, .. } if actual == "1.2.840.113549.1.1.1"),
        "{err}"
    );
}

#[test]
fn sha1_oaep_parameters_are_refused() {
    let key = parse_enveloped_data(&fixture(OPENSSL[1]))
        .unwrap()
        .encrypted_key;
    let sha1 = alg(OID_SHA1, Some(tlv(0x05, &[])));
    let cases = [
        // Explicit SHA-1 hash.
        (
            oaep_params(Some(sha1.clone()), Some(sha256_alg()), None),
            "RSAES-OAEP hashAlgorithm",
        ),
        // SHA-1 MGF1.
        (
            oaep_params(Some(sha256_alg()), Some(sha1), None),
            "RSAES-OAEP maskGenAlgorithm hash",
        ),
        // All defaults (SHA-1 / MGF1-SHA-1).
        (oaep_params(None, None, None), "RSAES-OAEP hashAlgorithm"),
        // Default MGF (MGF1-SHA-1).
        (
            oaep_params(Some(sha256_alg()), None, None),
            "RSAES-OAEP maskGenAlgorithm hash",
        ),
    ];
    for (params, field) in cases {
        let mut p = Parts::openssl();
        p.recipients = vec![ktri(2, ski(), alg(OID_RSAES_OAEP, Some(params)), &key)];
        let err = parse_err(&p);
        assert!(
            matches!(&err, CmsError::UnexpectedOid { field: f, .. } if *f == field),
            "{field}: {err}"
        );
        assert!(err.to_string().contains("sha1") || err.to_string().contains("1.3.14.3.2.26"));
    }
    // Parameters absent altogether.
    let mut p = Parts::openssl();
    p.recipients = vec![ktri(2, ski(), alg(OID_RSAES_OAEP, None), &key)];
    assert!(matches!(parse_err(&p), CmsError::MissingField { .. }));
}

#[test]
fn oaep_label_and_parameter_details() {
    let key = parse_enveloped_data(&fixture(OPENSSL[1]))
        .unwrap()
        .encrypted_key;
    let with = |params: Vec<u8>| {
        let mut p = Parts::openssl();
        p.recipients = vec![ktri(2, ski(), alg(OID_RSAES_OAEP, Some(params)), &key)];
        p
    };
    // An explicit empty label is fine (and decrypts).
    let p = with(oaep_params(
        Some(sha256_alg()),
        Some(sha256_alg()),
        Some(&[]),
    ));
    unwrap_ciphertext_for_recipient(&p.encode(true), &test_key()).unwrap();
    // A non-empty label is refused.
    let p = with(oaep_params(
        Some(sha256_alg()),
        Some(sha256_alg()),
        Some(b"x"),
    ));
    assert_eq!(parse_err(&p), CmsError::OaepLabel { length: 1 });
    // Hash without the NULL is fine; hash with other parameters is not.
    let p = with(oaep_params(
        Some(alg(OID_SHA256, None)),
        Some(alg(OID_SHA256, None)),
        None,
    ));
    parse_enveloped_data(&p.encode(false)).unwrap();
    let p = with(oaep_params(
        Some(alg(OID_SHA256, Some(tlv(0x04, &[])))),
        Some(sha256_alg()),
        None,
    ));
    assert!(matches!(
        parse_err(&p),
        CmsError::UnexpectedParameters { .. }
    ));
    // Wrong MGF OID.
    let p = with(tlv(
        0x30,
        &[
            tlv(0xa0, &sha256_alg()),
            tlv(0xa1, &alg(OID_SHA256, Some(sha256_alg()))),
        ]
        .concat(),
    ));
    assert!(matches!(
        parse_err(&p),
        CmsError::UnexpectedOid {
            field: "RSAES-OAEP maskGenAlgorithm",
            ..
        }
    ));
    // An extra field after pSourceAlgorithm.
    let p = with(tlv(
        0x30,
        &[
            tlv(0xa0, &sha256_alg()),
            tlv(0xa1, &alg(OID_MGF1, Some(sha256_alg()))),
            tlv(0xa3, &[]),
        ]
        .concat(),
    ));
    assert!(matches!(parse_err(&p), CmsError::UnexpectedElement { .. }));
}

#[test]
fn wrong_content_cipher_oid() {
    let mut p = Parts::openssl();
    p.cipher = alg(OID_AES128_CBC, Some(tlv(0x04, &[0; 16])));
    let err = parse_err(&p);
    assert!(
        matches!(&err, CmsError::UnexpectedOid { field: "contentEncryptionAlgorithm", actual, .. } if actual == "2.16.840.1.101.3.4.1.2"),
        "{err}"
    );
    let mut p = Parts::openssl();
    p.data_type = oid(OID_ENVELOPED_DATA);
    assert!(matches!(
        parse_err(&p),
        CmsError::UnexpectedOid {
            field: "EncryptedContentInfo contentType",
            ..
        }
    ));
}

#[test]
fn iv_must_be_16_bytes() {
    for len in [0usize, 15, 17, 32] {
        let mut p = Parts::openssl();
        p.cipher = alg(OID_AES256_CBC, Some(tlv(0x04, &vec![1; len])));
        assert_eq!(
            parse_err(&p),
            CmsError::IvLength {
                expected: 16,
                actual: len
            }
        );
    }
    let mut p = Parts::openssl();
    p.cipher = alg(OID_AES256_CBC, None);
    assert!(matches!(
        parse_err(&p),
        CmsError::MissingField {
            field: "aes256-CBC IV",
            ..
        }
    ));
}

#[test]
fn encrypted_content_shape() {
    let mut p = Parts::openssl();
    p.content = None;
    assert_eq!(parse_err(&p), CmsError::MissingEncryptedContent);
    p.content = Some(tlv(0x80, &[0; 15]));
    assert_eq!(parse_err(&p), CmsError::CiphertextLength { actual: 15 });
    p.content = Some(tlv(0x80, &[]));
    assert_eq!(parse_err(&p), CmsError::CiphertextLength { actual: 0 });
    p.content = Some(tlv(0x04, &[0; 16]));
    assert!(matches!(
        parse_err(&p),
        CmsError::UnexpectedTag {
            field: "encryptedContent",
            ..
        }
    ));
    // A constructed [0] whose chunk is not an OCTET STRING.
    p.content = Some(tlv(0xa0, &tlv(0x02, &[1])));
    assert!(matches!(
        parse_err(&p),
        CmsError::UnexpectedTag {
            field: "encryptedContent",
            ..
        }
    ));
    // Extra element after encryptedContent.
    let mut p = Parts::openssl();
    p.eci_extra = vec![tlv(0x05, &[])];
    assert!(matches!(
        parse_err(&p),
        CmsError::UnexpectedElement {
            structure: "EncryptedContentInfo",
            ..
        }
    ));
}

#[test]
fn optional_enveloped_fields() {
    // originatorInfo [0] and unprotectedAttrs [1] are skipped.
    let mut p = Parts::openssl();
    p.originator = Some(tlv(0xa0, &[]));
    p.enveloped_extra = vec![tlv(0xa1, &tlv(0x30, &[]))];
    unwrap_ciphertext_for_recipient(&p.encode(true), &test_key()).unwrap();
    // Anything else after encryptedContentInfo is refused.
    let mut p = Parts::openssl();
    p.enveloped_extra = vec![tlv(0x02, &[0])];
    assert!(matches!(
        parse_err(&p),
        CmsError::UnexpectedElement {
            structure: "EnvelopedData",
            ..
        }
    ));
}

#[test]
fn content_info_shape() {
    // Not a SEQUENCE.
    assert!(matches!(
        parse_enveloped_data(&tlv(0x31, &[])).unwrap_err(),
        CmsError::UnexpectedTag {
            field: "ContentInfo",
            ..
        }
    ));
    assert!(matches!(
        parse_enveloped_data(&[]).unwrap_err(),
        CmsError::MissingField {
            field: "ContentInfo",
            ..
        }
    ));
    // Trailing bytes.
    let mut ber = fixture(OPENSSL[1]);
    ber.push(0);
    assert!(matches!(
        parse_enveloped_data(&ber).unwrap_err(),
        CmsError::TrailingData { count: 1, .. }
    ));
    // content [0] holding two elements.
    let ed = {
        let ber = fixture(OPENSSL[1]);
        // contents of [0]: from offset 19 to the end
        ber[19..].to_vec()
    };
    let ber = tlv(
        0x30,
        &[
            oid(OID_ENVELOPED_DATA),
            tlv(0xa0, &[ed.clone(), tlv(0x05, &[])].concat()),
        ]
        .concat(),
    );
    assert!(matches!(
        parse_enveloped_data(&ber).unwrap_err(),
        CmsError::UnexpectedElement {
            structure: "ContentInfo content [0]",
            ..
        }
    ));
}

#[test]
fn fixture_byte_patches_are_named() {
    let aws = fixture(AWS[0]);
    let patch = |offset: usize, value: u8| {
        let mut b = aws.clone();
        b[offset] = value;
        parse_enveloped_data(&b).unwrap_err()
    };
    // Offsets from `openssl asn1parse` of enveloped-aes256cbc.ber.
    assert!(matches!(
        patch(12, 0x01),
        CmsError::UnexpectedOid {
            field: "ContentInfo contentType",
            ..
        }
    ));
    assert!(matches!(
        patch(19, 0x03),
        CmsError::UnsupportedVersion {
            structure: "EnvelopedData",
            actual: 3,
            ..
        }
    ));
    assert!(matches!(
        patch(77, 0x01),
        CmsError::UnexpectedOid {
            field: "keyEncryptionAlgorithm",
            ..
        }
    ));
    assert!(matches!(
        patch(94, 0x02),
        CmsError::UnexpectedOid {
            field: "RSAES-OAEP hashAlgorithm",
            ..
        }
    ));
    assert!(matches!(
        patch(124, 0x03),
        CmsError::UnexpectedOid {
            field: "RSAES-OAEP maskGenAlgorithm hash",
            ..
        }
    ));
    assert!(matches!(
        patch(399, 0x02),
        CmsError::UnexpectedOid {
            field: "EncryptedContentInfo contentType",
            ..
        }
    ));
    assert!(matches!(
        patch(412, 0x02),
        CmsError::UnexpectedOid {
            field: "contentEncryptionAlgorithm",
            ..
        }
    ));
    // IV length 16 → 15: the IV OCTET STRING now ends one byte early, leaving a stray
    // byte inside the AlgorithmIdentifier.
    assert!(matches!(
        patch(414, 15),
        CmsError::UnexpectedElement {
            structure: "contentEncryptionAlgorithm",
            ..
        }
    ));
}

// ---------------------------------------------------------------- BER-level negatives

#[test]
fn truncated_at_every_point() {
    for name in AWS.iter().chain(OPENSSL.iter()) {
        let ber = fixture(name);
        for len in 0..ber.len() {
            let err = parse_enveloped_data(&ber[..len]).unwrap_err();
            assert!(
                matches!(
                    err,
                    CmsError::Truncated { .. }
                        | CmsError::MissingEndOfContents { .. }
                        | CmsError::MissingField { .. }
                ),
                "{name} at {len}: {err}"
            );
        }
    }
}

#[test]
fn missing_end_of_contents() {
    let ber = fixture(AWS[0]);
    // Drop the outermost end-of-contents.
    let err = parse_enveloped_data(&ber[..ber.len() - 2]).unwrap_err();
    assert!(
        matches!(err, CmsError::MissingEndOfContents { offset: 0, tag } if tag == Tag::SEQUENCE),
        "{err}"
    );
    // Drop an inner one (the encryptedContent [0] at offset 431 ends at 483..485).
    let mut cut = ber.clone();
    cut.drain(483..485);
    assert!(parse_enveloped_data(&cut).is_err());
    // Malformed end-of-contents (00 01).
    let mut bad = ber.clone();
    let n = bad.len();
    bad[n - 1] = 0x01;
    assert!(matches!(
        parse_enveloped_data(&bad).unwrap_err(),
        CmsError::MalformedEndOfContents { .. } | CmsError::Truncated { .. }
    ));
}

#[test]
fn ber_reader_edge_cases() {
    // Indefinite length on a primitive.
    assert!(matches!(
        parse_enveloped_data(&[0x04, 0x80, 0, 0]).unwrap_err(),
        CmsError::IndefinitePrimitive { .. }
    ));
    // Reserved length octet.
    assert!(matches!(
        parse_enveloped_data(&[0x30, 0xff]).unwrap_err(),
        CmsError::ReservedLength { .. }
    ));
    // Length of 9 octets.
    assert!(matches!(
        parse_enveloped_data(&[0x30, 0x89, 1, 1, 1, 1, 1, 1, 1, 1, 1]).unwrap_err(),
        CmsError::LengthTooLong { octets: 9, .. }
    ));
    // Length far beyond the input.
    assert!(matches!(
        parse_enveloped_data(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).unwrap_err(),
        CmsError::Truncated { .. }
    ));
    // End-of-contents at top level and inside a definite element.
    assert!(matches!(
        parse_enveloped_data(&[0x00, 0x00]).unwrap_err(),
        CmsError::UnexpectedEndOfContents { .. }
    ));
    assert!(matches!(
        parse_enveloped_data(&[0x30, 0x02, 0x00, 0x00]).unwrap_err(),
        CmsError::UnexpectedEndOfContents { .. }
    ));
    // High-tag-number form: accepted when valid, refused when malformed.
    let mut r = Reader::new(&[0x9f, 0x81, 0x00, 0x00]);
    let e = r.element().unwrap();
    assert_eq!(e.tag, Tag::context(128, false));
    for bad in [
        &[0x9f, 0x80, 0x01, 0x00][..],
        &[0x9f, 0x05, 0x00],
        &[0x9f, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x00],
    ] {
        assert!(
            matches!(
                Reader::new(bad).element().unwrap_err(),
                CmsError::InvalidTag { .. }
            ),
            "{bad:02x?}"
        );
    }
    // Non-minimal long-form lengths are fine in BER.
    let mut r = Reader::new(&[0x04, 0x82, 0x00, 0x01, 0xaa]);
    assert_eq!(r.element().unwrap().contents, &[0xaa]);
    // Depth limit: deeply nested indefinite SEQUENCEs.
    let mut deep = Vec::new();
    for _ in 0..1000 {
        deep.extend_from_slice(&[0x30, 0x80]);
    }
    for _ in 0..1000 {
        deep.extend_from_slice(&[0, 0]);
    }
    assert!(matches!(
        parse_enveloped_data(&deep).unwrap_err(),
        CmsError::TooDeep {
            limit: MAX_DEPTH,
            ..
        }
    ));
    // Deeply nested constructed OCTET STRING segments (definite lengths).
    let mut nested = tlv(0x04, &[1; 16]);
    for _ in 0..100 {
        nested = tlv(0x24, &nested);
    }
    let el = Reader::new(&nested).element().unwrap();
    assert!(matches!(
        octet_string(&el, "x").unwrap_err(),
        CmsError::TooDeep { .. }
    ));
}

#[test]
fn oid_text_renders() {
    assert_eq!(oid_text(OID_ENVELOPED_DATA), "1.2.840.113549.1.7.3");
    assert_eq!(oid_text(OID_AES256_CBC), "2.16.840.1.101.3.4.1.42");
    assert_eq!(oid_text(OID_SHA1), "1.3.14.3.2.26");
    assert!(oid_text(&[]).starts_with("malformed"));
    assert!(oid_text(&[0x86]).starts_with("malformed"));
    assert!(oid_text(&[0xff; 20]).starts_with("malformed"));
}

// ---------------------------------------------------------------- decryption negatives

#[test]
fn bad_padding_is_refused() {
    let key = test_key();
    let parsed = parse_enveloped_data(&fixture(OPENSSL[1])).unwrap();
    let cek = key.unwrap_content_key(&parsed.encrypted_key).unwrap();
    let iv = [7u8; 16];
    for last in [0x00u8, 0x11, 0xff] {
        let mut blocks = vec![0x42u8; 32];
        blocks[31] = last;
        let ciphertext = aes_cbc_raw(&cek, &iv, &blocks);
        let p = Parts::new(
            parsed.encrypted_key.clone(),
            iv.to_vec(),
            tlv(0x80, &ciphertext),
        );
        assert_eq!(
            unwrap_ciphertext_for_recipient(&p.encode(true), &key).unwrap_err(),
            CmsError::ContentDecrypt,
            "last byte {last:#x}"
        );
    }
    // Inconsistent padding bytes (…03 02 03).
    let mut blocks = vec![0x42u8; 16];
    blocks[13..].copy_from_slice(&[3, 2, 3]);
    let ciphertext = aes_cbc_raw(&cek, &iv, &blocks);
    let p = Parts::new(
        parsed.encrypted_key.clone(),
        iv.to_vec(),
        tlv(0x80, &ciphertext),
    );
    assert_eq!(
        unwrap_ciphertext_for_recipient(&p.encode(false), &key).unwrap_err(),
        CmsError::ContentDecrypt
    );
    // Good padding with the same helpers decrypts.
    let ciphertext = aes_cbc_pkcs7(&cek, &iv, b"seed");
    let p = Parts::new(
        parsed.encrypted_key.clone(),
        iv.to_vec(),
        tlv(0x80, &ciphertext),
    );
    assert_eq!(
        unwrap_ciphertext_for_recipient(&p.encode(false), &key)
            .unwrap()
            .as_slice(),
        b"seed"
    );
}

#[test]
fn wrapped_key_of_wrong_length_or_size() {
    let key = test_key();
    let spki = key.public_key_spki_der();
    // A 16-byte content key (AES-128) wrapped correctly: refused after unwrap.
    let public =
        OaepPublicEncryptingKey::new(PublicEncryptingKey::from_der(&spki).unwrap()).unwrap();
    let mut out = vec![0u8; public.ciphertext_size()];
    let wrapped = public
        .encrypt(&OAEP_SHA256_MGF1SHA256, &[9u8; 16], &mut out, None)
        .unwrap()
        .to_vec();
    let p = Parts::new(wrapped, vec![0; 16], tlv(0x80, &[0; 16]));
    assert_eq!(
        unwrap_ciphertext_for_recipient(&p.encode(true), &key).unwrap_err(),
        CmsError::ContentKeyLength {
            expected: 32,
            actual: 16
        }
    );
    // An encryptedKey that is not one RSA block.
    let p = Parts::new(vec![1; 255], vec![0; 16], tlv(0x80, &[0; 16]));
    assert_eq!(
        unwrap_ciphertext_for_recipient(&p.encode(true), &key).unwrap_err(),
        CmsError::EncryptedKeyLength {
            expected: 256,
            actual: 255
        }
    );
    // A corrupted encryptedKey.
    let mut parsed = parse_enveloped_data(&fixture(OPENSSL[1])).unwrap();
    parsed.encrypted_key[100] ^= 1;
    let p = Parts::new(
        parsed.encrypted_key,
        parsed.iv.to_vec(),
        tlv(0x80, &parsed.ciphertext),
    );
    assert_eq!(
        unwrap_ciphertext_for_recipient(&p.encode(true), &key).unwrap_err(),
        CmsError::KeyUnwrap
    );
}

#[test]
fn key_loading_errors() {
    assert!(matches!(
        RecipientKey::from_pkcs8_pem("nothing").unwrap_err(),
        CmsError::KeyRejected { .. }
    ));
    assert!(matches!(
        RecipientKey::from_pkcs8_pem("-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----")
            .unwrap_err(),
        CmsError::KeyRejected { .. }
    ));
    assert!(matches!(
        RecipientKey::from_pkcs8_der(&[0x30, 0x00]).unwrap_err(),
        CmsError::KeyRejected { .. }
    ));
}

// ---------------------------------------------------------------- no-panic sweep

#[test]
fn no_panic_on_truncation_or_single_byte_corruption() {
    let key = test_key();
    for name in AWS.iter().chain(OPENSSL.iter()) {
        let ber = fixture(name);
        for len in 0..=ber.len() {
            let _ = parse_enveloped_data(&ber[..len]);
        }
        for i in 0..ber.len() {
            for value in [
                0x00u8,
                0x01,
                0x7f,
                0x80,
                0xff,
                ber[i] ^ 0x20,
                ber[i].wrapping_add(1),
            ] {
                let mut bad = ber.clone();
                bad[i] = value;
                let _ = parse_enveloped_data(&bad);
            }
        }
        // Full unwrap (with RSA) on a sample of corruptions.
        for i in (0..ber.len()).step_by(7) {
            let mut bad = ber.clone();
            bad[i] ^= 0x01;
            let _ = unwrap_ciphertext_for_recipient(&bad, &key);
        }
    }
}
