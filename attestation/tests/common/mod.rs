//! Shared test helpers: the genuine AWS fixtures, CBOR surgery on documents, and a small
//! P-384 test PKI that signs documents in the NSM format.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use agentkeys_attestation::{Policy, TrustAnchor};
use base64::Engine;
use ciborium::Value;
use p384::ecdsa::signature::Signer;
use p384::ecdsa::{DerSignature, Signature, SigningKey};
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::der::asn1::UtcTime;
use x509_cert::der::{Encode, EncodePem};
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::{Time, Validity};

pub const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../fixtures/nitro-attestation/"
);

/// One genuine document with what index.json says about it.
pub struct Fixture {
    pub name: &'static str,
    pub bytes: Vec<u8>,
    pub timestamp_ms: u64,
    pub debug: bool,
}

impl Fixture {
    /// A policy that accepts this fixture (debug allowed only for the debug ones).
    pub fn policy(&self) -> Policy {
        Policy {
            allow_debug: self.debug,
            ..Policy::default()
        }
    }
}

pub const FIXTURE_NAMES: [(&str, u64, bool); 4] = [
    ("aws-real-2022-07-06.cose", 1_657_117_102_484, false),
    ("ev-beta-valid.bin", 1_665_651_482_136, false),
    ("ev-beta-debug.bin", 1_665_582_606_081, true),
    ("ev-valid.b64", 1_695_049_410_860, true),
];

pub fn fixture(name: &str) -> Fixture {
    let (name, timestamp_ms, debug) = FIXTURE_NAMES
        .iter()
        .copied()
        .find(|(n, _, _)| *n == name)
        .unwrap();
    let raw = std::fs::read(format!("{FIXTURES}{name}")).unwrap();
    let bytes = if name.ends_with(".b64") {
        let text: String = String::from_utf8(raw).unwrap().split_whitespace().collect();
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap()
    } else {
        raw
    };
    Fixture {
        name,
        bytes,
        timestamp_ms,
        debug,
    }
}

pub fn fixtures() -> Vec<Fixture> {
    FIXTURE_NAMES.iter().map(|(n, _, _)| fixture(n)).collect()
}

pub fn aws() -> TrustAnchor {
    TrustAnchor::aws_nitro_root_g1()
}

pub const DAY_MS: u64 = 24 * 3600 * 1000;

// ---------------------------------------------------------------- CBOR surgery

pub fn decode(bytes: &[u8]) -> Value {
    ciborium::de::from_reader(bytes).unwrap()
}

pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(value, &mut out).unwrap();
    out
}

/// The four COSE_Sign1 items of a document.
pub fn cose_items(document: &[u8]) -> Vec<Value> {
    match decode(document) {
        Value::Array(items) => items,
        other => panic!("not an array: {other:?}"),
    }
}

pub fn cose_from_items(items: Vec<Value>) -> Vec<u8> {
    encode(&Value::Array(items))
}

/// The payload map entries of a document.
pub fn payload_entries(document: &[u8]) -> Vec<(Value, Value)> {
    let items = cose_items(document);
    let Value::Bytes(payload) = &items[2] else {
        panic!("payload not bytes")
    };
    match decode(payload) {
        Value::Map(entries) => entries,
        other => panic!("payload not a map: {other:?}"),
    }
}

/// Rebuilds the document with its payload map changed by `f` (signature left as is).
pub fn with_payload(document: &[u8], f: impl FnOnce(&mut Vec<(Value, Value)>)) -> Vec<u8> {
    let mut entries = payload_entries(document);
    f(&mut entries);
    let mut items = cose_items(document);
    items[2] = Value::Bytes(encode(&Value::Map(entries)));
    cose_from_items(items)
}

/// Sets (or adds) a payload field.
pub fn set_field(entries: &mut Vec<(Value, Value)>, name: &str, value: Value) {
    if let Some(entry) = entries
        .iter_mut()
        .find(|(k, _)| *k == Value::Text(name.into()))
    {
        entry.1 = value;
    } else {
        entries.push((Value::Text(name.into()), value));
    }
}

pub fn remove_field(entries: &mut Vec<(Value, Value)>, name: &str) {
    entries.retain(|(k, _)| *k != Value::Text(name.into()));
}

pub fn get_field<'a>(entries: &'a [(Value, Value)], name: &str) -> &'a Value {
    &entries
        .iter()
        .find(|(k, _)| *k == Value::Text(name.into()))
        .unwrap()
        .1
}

// ---------------------------------------------------------------- test PKI

/// Deterministic P-384 key from a one-byte seed.
pub fn p384_key(seed: u8) -> SigningKey {
    let mut bytes = [0u8; 48];
    bytes[47] = seed;
    bytes[0] = 1;
    SigningKey::from_slice(&bytes).unwrap()
}

/// What goes into a test certificate.
#[derive(Clone)]
pub struct CertSpec {
    pub subject: String,
    /// None: no basicConstraints extension.
    pub ca: Option<bool>,
    pub path_len: Option<u8>,
    /// None: no keyUsage extension.
    pub key_usage: Option<Vec<KeyUsages>>,
    pub not_before_secs: u64,
    pub not_after_secs: u64,
}

impl CertSpec {
    pub fn ca(subject: &str, path_len: Option<u8>, now_secs: u64) -> Self {
        CertSpec {
            subject: subject.into(),
            ca: Some(true),
            path_len,
            key_usage: Some(vec![KeyUsages::KeyCertSign, KeyUsages::CRLSign]),
            not_before_secs: now_secs - 86_400,
            not_after_secs: now_secs + 30 * 86_400,
        }
    }

    pub fn leaf(subject: &str, now_secs: u64) -> Self {
        CertSpec {
            subject: subject.into(),
            ca: Some(false),
            path_len: None,
            key_usage: Some(vec![KeyUsages::DigitalSignature]),
            not_before_secs: now_secs - 600,
            not_after_secs: now_secs + 3 * 3600,
        }
    }
}

/// Issues a certificate for `spki` signed by `issuer_key` (self-signed when `issuer` is None).
pub fn issue(
    spec: &CertSpec,
    spki: SubjectPublicKeyInfoOwned,
    issuer: Option<&Name>,
    issuer_key: &SigningKey,
    serial: u32,
) -> Vec<u8> {
    let validity = Validity {
        not_before: Time::UtcTime(
            UtcTime::from_unix_duration(Duration::from_secs(spec.not_before_secs)).unwrap(),
        ),
        not_after: Time::UtcTime(
            UtcTime::from_unix_duration(Duration::from_secs(spec.not_after_secs)).unwrap(),
        ),
    };
    let subject = Name::from_str(&spec.subject).unwrap();
    let mut builder = CertificateBuilder::new(
        Profile::Manual {
            issuer: issuer.cloned(),
        },
        SerialNumber::from(serial),
        validity,
        subject,
        spki,
        issuer_key,
    )
    .unwrap();
    if let Some(ca) = spec.ca {
        builder
            .add_extension(&BasicConstraints {
                ca,
                path_len_constraint: spec.path_len,
            })
            .unwrap();
    }
    if let Some(usages) = &spec.key_usage {
        let mut flags = x509_cert::der::flagset::FlagSet::<KeyUsages>::default();
        for u in usages {
            flags |= *u;
        }
        builder.add_extension(&KeyUsage(flags)).unwrap();
    }
    let cert = builder.build::<DerSignature>().unwrap();
    cert.to_der().unwrap()
}

pub fn spki_of(key: &SigningKey) -> SubjectPublicKeyInfoOwned {
    SubjectPublicKeyInfoOwned::from_key(*key.verifying_key()).unwrap()
}

pub const MOCK_ROOT_SUBJECT: &str = "CN=mock.nitro-enclaves,O=AgentKeys Mock Nitro,C=US";

/// A root → intermediate(s) → leaf chain shaped like AWS's.
pub struct TestPki {
    pub now_secs: u64,
    pub keys: Vec<SigningKey>,
    pub specs: Vec<CertSpec>,
    /// Root first, then intermediates.
    pub cabundle: Vec<Vec<u8>>,
    pub leaf: Vec<u8>,
    pub leaf_key: SigningKey,
}

impl TestPki {
    /// Root (mock marker) → 2 intermediates → leaf, valid around `now_secs`.
    pub fn new(now_secs: u64) -> Self {
        let specs = vec![
            CertSpec::ca(MOCK_ROOT_SUBJECT, None, now_secs),
            CertSpec::ca(
                "CN=int1.mock,O=AgentKeys Mock Nitro,C=US",
                Some(1),
                now_secs,
            ),
            CertSpec::ca(
                "CN=int2.mock,O=AgentKeys Mock Nitro,C=US",
                Some(0),
                now_secs,
            ),
            CertSpec::leaf(
                "CN=i-0mock-enc0mock.mock,O=AgentKeys Mock Nitro,C=US",
                now_secs,
            ),
        ];
        Self::from_specs(now_secs, specs)
    }

    /// Builds a chain from the specs (root first, leaf last).
    pub fn from_specs(now_secs: u64, specs: Vec<CertSpec>) -> Self {
        let keys: Vec<SigningKey> = (0..specs.len()).map(|i| p384_key(i as u8 + 1)).collect();
        let mut ders = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let (issuer_name, issuer_key) = if i == 0 {
                (None, &keys[0])
            } else {
                (
                    Some(Name::from_str(&specs[i - 1].subject).unwrap()),
                    &keys[i - 1],
                )
            };
            ders.push(issue(
                spec,
                spki_of(&keys[i]),
                issuer_name.as_ref(),
                issuer_key,
                100 + i as u32,
            ));
        }
        let leaf = ders.pop().unwrap();
        TestPki {
            now_secs,
            leaf_key: keys[keys.len() - 1].clone(),
            keys,
            specs,
            cabundle: ders,
            leaf,
        }
    }

    pub fn root_pem(&self) -> String {
        let cert = <x509_cert::Certificate as x509_cert::der::Decode>::from_der(&self.cabundle[0])
            .unwrap();
        cert.to_pem(x509_cert::der::pem::LineEnding::LF).unwrap()
    }

    pub fn anchor(&self) -> TrustAnchor {
        TrustAnchor::mock_root_explicitly_trusted(&self.root_pem()).unwrap()
    }

    pub fn now_ms(&self) -> u64 {
        self.now_secs * 1000
    }

    /// A payload in the NSM's field order.
    pub fn payload(&self, spec: &DocSpec) -> Vec<(Value, Value)> {
        let pcrs = spec
            .pcrs
            .iter()
            .map(|(i, v)| (Value::Integer((*i).into()), Value::Bytes(v.clone())))
            .collect();
        let opt = |v: &Option<Vec<u8>>| v.clone().map_or(Value::Null, Value::Bytes);
        vec![
            (
                Value::Text("module_id".into()),
                Value::Text(spec.module_id.clone()),
            ),
            (Value::Text("digest".into()), Value::Text("SHA384".into())),
            (
                Value::Text("timestamp".into()),
                Value::Integer(spec.timestamp_ms.into()),
            ),
            (Value::Text("pcrs".into()), Value::Map(pcrs)),
            (
                Value::Text("certificate".into()),
                Value::Bytes(self.leaf.clone()),
            ),
            (
                Value::Text("cabundle".into()),
                Value::Array(self.cabundle.iter().cloned().map(Value::Bytes).collect()),
            ),
            (Value::Text("public_key".into()), opt(&spec.public_key)),
            (Value::Text("user_data".into()), opt(&spec.user_data)),
            (Value::Text("nonce".into()), opt(&spec.nonce)),
        ]
    }

    /// A signed document (untagged COSE_Sign1, protected {1: -35}).
    pub fn document(&self, spec: &DocSpec) -> Vec<u8> {
        self.sign_payload(&encode(&Value::Map(self.payload(spec))))
    }

    /// Signs arbitrary payload bytes with the leaf key.
    pub fn sign_payload(&self, payload: &[u8]) -> Vec<u8> {
        let protected = encode(&Value::Map(vec![(
            Value::Integer(1.into()),
            Value::Integer((-35).into()),
        )]));
        sign_cose(
            &self.leaf_key,
            protected,
            payload.to_vec(),
            Value::Map(vec![]),
        )
    }
}

/// COSE_Sign1 with an ES384 signature by `key` over the Sig_structure.
pub fn sign_cose(
    key: &SigningKey,
    protected: Vec<u8>,
    payload: Vec<u8>,
    unprotected: Value,
) -> Vec<u8> {
    let tbs = encode(&Value::Array(vec![
        Value::Text("Signature1".into()),
        Value::Bytes(protected.clone()),
        Value::Bytes(vec![]),
        Value::Bytes(payload.clone()),
    ]));
    let signature: Signature = key.sign(&tbs);
    cose_from_items(vec![
        Value::Bytes(protected),
        unprotected,
        Value::Bytes(payload),
        Value::Bytes(signature.to_bytes().to_vec()),
    ])
}

/// Document contents for the test PKI.
#[derive(Clone)]
pub struct DocSpec {
    pub module_id: String,
    pub timestamp_ms: u64,
    pub pcrs: BTreeMap<u16, Vec<u8>>,
    pub public_key: Option<Vec<u8>>,
    pub user_data: Option<Vec<u8>>,
    pub nonce: Option<Vec<u8>>,
}

impl DocSpec {
    pub fn new(timestamp_ms: u64) -> Self {
        DocSpec {
            module_id: "i-0mock-enc0mock".into(),
            timestamp_ms,
            pcrs: (0u16..16).map(|i| (i, vec![i as u8 + 1; 48])).collect(),
            public_key: None,
            user_data: Some(b"user data".to_vec()),
            nonce: Some(b"nonce".to_vec()),
        }
    }
}

/// A fixed "now" for test-PKI documents: 2025-01-01T00:00:00Z.
pub const TEST_NOW_SECS: u64 = 1_735_689_600;
