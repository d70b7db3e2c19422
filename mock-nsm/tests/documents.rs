//! Mock documents: wire format against a genuine AWS document, verification with the
//! project's verifier (mock root explicitly trusted) and with independent implementations.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use agentkeys_attestation::{verify, Policy, TrustAnchor, VerifyError};
use agentkeys_mock_nsm::{
    mock_root_der, mock_root_pem, ManualClock, MockNsm, MockNsmConfig, Request, Response,
};
use ciborium::Value;

const REAL_DOC: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../fixtures/nitro-attestation/aws-real-2022-07-06.cose"
);
const PY_VERIFIER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/verify_with_cryptography.py"
);
const T0: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn nsm_at(ms: u64) -> (MockNsm, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(ms));
    (
        MockNsm::new(MockNsmConfig::default().clock(clock.clone())),
        clock,
    )
}

fn mock_anchor() -> TrustAnchor {
    TrustAnchor::mock_root_explicitly_trusted(&mock_root_pem()).unwrap()
}

fn decode(bytes: &[u8]) -> Value {
    let mut reader = bytes;
    let v: Value = ciborium::from_reader(&mut reader).unwrap();
    assert!(reader.is_empty(), "trailing bytes");
    v
}

fn payload_of(doc: &[u8]) -> (Vec<Value>, Vec<(Value, Value)>) {
    let cose = decode(doc).into_array().unwrap();
    let payload = decode(cose[2].as_bytes().unwrap()).into_map().unwrap();
    (cose, payload)
}

/// A coarse type name of a CBOR value.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Integer(_) => "int",
        Value::Bytes(_) => "bytes",
        Value::Text(_) => "text",
        Value::Array(_) => "array",
        Value::Map(_) => "map",
        Value::Null => "null",
        _ => "other",
    }
}

#[test]
fn structure_matches_a_genuine_aws_document() {
    let real = std::fs::read(REAL_DOC).unwrap();
    let (nsm, _) = nsm_at(T0);
    // Same optional fields present as the fixture: public_key and user_data, no nonce.
    let mock = nsm
        .attest(Some(vec![1; 32]), None, Some(vec![2; 100]))
        .unwrap();

    let (real_cose, real_payload) = payload_of(&real);
    let (mock_cose, mock_payload) = payload_of(&mock);
    // COSE_Sign1: untagged 4-array; identical protected header bytes; empty unprotected map;
    // 96-byte signature.
    assert!(!matches!(decode(&mock), Value::Tag(..)));
    assert_eq!(mock_cose.len(), 4);
    assert_eq!(mock_cose[0], real_cose[0]);
    assert_eq!(mock_cose[0].as_bytes().unwrap(), &[0xa1, 0x01, 0x38, 0x22]);
    assert_eq!(mock_cose[1], Value::Map(vec![]));
    assert_eq!(real_cose[1], Value::Map(vec![]));
    assert_eq!(mock_cose[3].as_bytes().unwrap().len(), 96);
    assert_eq!(real_cose[3].as_bytes().unwrap().len(), 96);

    // Payload: same keys, same order, same types.
    let keys = |p: &[(Value, Value)]| -> Vec<(String, &'static str)> {
        p.iter()
            .map(|(k, v)| (k.as_text().unwrap().to_string(), kind(v)))
            .collect()
    };
    assert_eq!(keys(&mock_payload), keys(&real_payload));
    assert_eq!(
        keys(&mock_payload)
            .into_iter()
            .map(|(k, _)| k)
            .collect::<Vec<_>>(),
        [
            "module_id",
            "digest",
            "timestamp",
            "pcrs",
            "certificate",
            "cabundle",
            "public_key",
            "user_data",
            "nonce"
        ]
    );
    // PCR map: integer keys 0..15 in order, 48-byte values, like the device.
    let pcr_shape = |p: &[(Value, Value)]| -> Vec<(i128, usize)> {
        p[3].1
            .as_map()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                (
                    i128::from(k.as_integer().unwrap()),
                    v.as_bytes().unwrap().len(),
                )
            })
            .collect()
    };
    assert_eq!(pcr_shape(&mock_payload), pcr_shape(&real_payload));
    assert_eq!(pcr_shape(&mock_payload).len(), 16);
    // cabundle: four certificates, root first (same count as AWS).
    let bundle = mock_payload[5].1.as_array().unwrap();
    assert_eq!(bundle.len(), real_payload[5].1.as_array().unwrap().len());
    assert_eq!(bundle[0].as_bytes().unwrap(), mock_root_der().as_slice());
    assert_eq!(mock_payload[1].1, Value::Text("SHA384".into()));
    assert_eq!(mock_payload[2].1, Value::Integer(T0.into()));
}

#[test]
fn every_absent_field_is_null_and_present_ones_are_bytes() {
    let (nsm, _) = nsm_at(T0);
    let doc = nsm.attest(None, Some(vec![9; 16]), None).unwrap();
    let (_, payload) = payload_of(&doc);
    assert!(payload[6].1.is_null());
    assert!(payload[7].1.is_null());
    assert_eq!(payload[8].1, Value::Bytes(vec![9; 16]));
}

#[test]
fn verifies_with_the_mock_root_explicitly_trusted() {
    let (nsm, _) = nsm_at(T0);
    let doc = nsm
        .attest(
            Some(b"ud".to_vec()),
            Some(b"nonce".to_vec()),
            Some(vec![4; 91]),
        )
        .unwrap();
    let policy = Policy {
        nonce: Some(b"nonce".to_vec()),
        user_data: Some(b"ud".to_vec()),
        public_key: Some(vec![4; 91]),
        ..Policy::default()
    };
    let verified = verify(&doc, &mock_anchor(), T0 + 1_000, &policy).unwrap();
    assert!(verified.anchor_is_mock);
    assert!(!verified.debug_mode);
    assert_eq!(verified.document.timestamp_ms, T0);
    assert_eq!(verified.chain.len(), 5);
}

#[test]
fn fails_against_the_aws_root() {
    let (nsm, _) = nsm_at(T0);
    let doc = nsm.attest(None, None, None).unwrap();
    let err = verify(
        &doc,
        &TrustAnchor::aws_nitro_root_g1(),
        T0,
        &Policy::default(),
    )
    .unwrap_err();
    assert!(matches!(err, VerifyError::Chain(_)), "{err}");
    // And the mock root cannot be smuggled in as an ordinary root.
    assert!(TrustAnchor::from_pem(&mock_root_pem()).is_err());
}

#[test]
fn debug_documents_need_allow_debug() {
    let nsm = MockNsm::new(
        MockNsmConfig::default()
            .debug_mode(true)
            .clock(Arc::new(ManualClock::new(T0))),
    );
    let doc = nsm.attest(None, None, None).unwrap();
    let err = verify(&doc, &mock_anchor(), T0, &Policy::default()).unwrap_err();
    assert!(matches!(err, VerifyError::Policy(_)), "{err}");
    let policy = Policy {
        allow_debug: true,
        ..Policy::default()
    };
    assert!(
        verify(&doc, &mock_anchor(), T0, &policy)
            .unwrap()
            .debug_mode
    );
}

#[test]
fn pcr_policy_sees_configured_and_extended_values() {
    let (nsm, _) = nsm_at(T0);
    let extended = match nsm.process(Request::ExtendPCR {
        index: 16,
        data: b"app config".to_vec(),
    }) {
        Response::ExtendPCR { data } => data,
        other => panic!("{other:?}"),
    };
    // Unlocked PCR16 is not in the document yet; once locked it is.
    let (_, payload) = payload_of(&nsm.attest(None, None, None).unwrap());
    assert_eq!(payload[3].1.as_map().unwrap().len(), 16);
    nsm.process(Request::LockPCR { index: 16 });
    let doc = nsm.attest(None, None, None).unwrap();
    let (_, payload) = payload_of(&doc);
    assert_eq!(payload[3].1.as_map().unwrap().len(), 17);
    let mut policy = Policy::default();
    policy.expected_pcrs.insert(16, extended);
    policy
        .expected_pcrs
        .insert(0, agentkeys_mock_nsm::default_boot_pcrs()[&0].to_vec());
    verify(&doc, &mock_anchor(), T0, &policy).unwrap();
    policy.expected_pcrs.insert(0, vec![0x11; 48]);
    assert!(matches!(
        verify(&doc, &mock_anchor(), T0, &policy).unwrap_err(),
        VerifyError::Policy(_)
    ));
}

#[test]
fn leaf_is_reissued_when_it_runs_out_and_old_documents_still_verify_at_their_time() {
    let (nsm, clock) = nsm_at(T0);
    let first = nsm.attest(None, None, None).unwrap();
    let leaf = |doc: &[u8]| payload_of(doc).1[4].1.as_bytes().unwrap().clone();
    clock.advance(60_000);
    let second = nsm.attest(None, None, None).unwrap();
    assert_eq!(
        leaf(&first),
        leaf(&second),
        "leaf reused within its validity"
    );
    clock.advance(3 * 3600 * 1000);
    let third = nsm.attest(None, None, None).unwrap();
    assert_ne!(leaf(&first), leaf(&third), "leaf re-issued after 3 hours");
    let anchor = mock_anchor();
    verify(&first, &anchor, T0, &Policy::default()).unwrap();
    verify(
        &third,
        &anchor,
        T0 + 3 * 3600 * 1000 + 60_000,
        &Policy::default(),
    )
    .unwrap();
    // The first document is dead once its leaf expired.
    assert!(verify(&first, &anchor, T0 + 4 * 3600 * 1000, &Policy::default()).is_err());
}

#[test]
fn tampered_documents_fail() {
    let (nsm, _) = nsm_at(T0);
    let doc = nsm.attest(Some(vec![0x55; 32]), None, None).unwrap();
    let anchor = mock_anchor();
    let mut flipped_payload = doc.clone();
    let pos = flipped_payload
        .windows(32)
        .position(|w| w == [0x55; 32])
        .unwrap();
    flipped_payload[pos] ^= 1;
    assert!(verify(&flipped_payload, &anchor, T0, &Policy::default()).is_err());
    let mut flipped_sig = doc.clone();
    let last = flipped_sig.len() - 1;
    flipped_sig[last] ^= 1;
    assert!(verify(&flipped_sig, &anchor, T0, &Policy::default()).is_err());
}

fn tool_exists(tool: &str, arg: &str) -> bool {
    Command::new(tool)
        .arg(arg)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn python_has_cryptography() -> bool {
    Command::new("python3")
        .args(["-c", "import cryptography"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn run_python(doc: &Path, root: &Path) -> (bool, String) {
    let out = Command::new("python3")
        .arg(PY_VERIFIER)
        .arg(doc)
        .arg(root)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Chain check and COSE ES384 check with the `openssl` CLI; the COSE pieces are taken
/// apart with ciborium (a third-party decoder), the signature converted to DER by hand.
fn run_openssl(dir: &Path, doc: &[u8], root_pem: &str, at_unix: u64) -> bool {
    let (cose, payload) = payload_of(doc);
    let write = |name: &str, bytes: &[u8]| -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let der_to_pem = |der: &[u8]| -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        )
    };
    let root = write("root.pem", root_pem.as_bytes());
    let bundle = payload[5].1.as_array().unwrap();
    let untrusted: String = bundle[1..]
        .iter()
        .map(|c| der_to_pem(c.as_bytes().unwrap()))
        .collect();
    let untrusted = write("untrusted.pem", untrusted.as_bytes());
    let leaf = write(
        "leaf.pem",
        der_to_pem(payload[4].1.as_bytes().unwrap()).as_bytes(),
    );
    let chain_ok = Command::new("openssl")
        .args(["verify", "-attime", &at_unix.to_string(), "-CAfile"])
        .arg(&root)
        .arg("-untrusted")
        .arg(&untrusted)
        .arg(&leaf)
        .output()
        .unwrap()
        .status
        .success();
    let pubkey = Command::new("openssl")
        .args(["x509", "-pubkey", "-noout", "-in"])
        .arg(&leaf)
        .output()
        .unwrap()
        .stdout;
    let pubkey = write("leaf-pub.pem", &pubkey);
    let sig_structure = {
        let mut out = Vec::new();
        ciborium::into_writer(
            &Value::Array(vec![
                Value::Text("Signature1".into()),
                cose[0].clone(),
                Value::Bytes(vec![]),
                cose[2].clone(),
            ]),
            &mut out,
        )
        .unwrap();
        out
    };
    let tbs = write("sig-structure.bin", &sig_structure);
    let raw = cose[3].as_bytes().unwrap();
    let int = |b: &[u8]| -> Vec<u8> {
        let mut b: Vec<u8> = b.iter().copied().skip_while(|x| *x == 0).collect();
        if b.first().is_some_and(|x| x & 0x80 != 0) {
            b.insert(0, 0);
        }
        let mut out = vec![0x02, b.len() as u8];
        out.extend(b);
        out
    };
    let mut body = int(&raw[..48]);
    body.extend(int(&raw[48..]));
    let mut der_sig = vec![0x30, body.len() as u8];
    der_sig.extend(body);
    let sig = write("sig.der", &der_sig);
    let sig_ok = Command::new("openssl")
        .args(["dgst", "-sha384", "-verify"])
        .arg(&pubkey)
        .arg("-signature")
        .arg(&sig)
        .arg(&tbs)
        .output()
        .unwrap()
        .status
        .success();
    chain_ok && sig_ok
}

#[test]
fn verifies_with_an_independent_implementation() {
    let dir = tempfile::tempdir().unwrap();
    let (nsm, _) = nsm_at(T0);
    let doc = nsm
        .attest(
            Some(b"user data".to_vec()),
            Some(vec![7; 32]),
            Some(vec![3; 64]),
        )
        .unwrap();
    let doc_path = dir.path().join("mock.cose");
    std::fs::write(&doc_path, &doc).unwrap();
    let root_path = dir.path().join("mock-root.pem");
    std::fs::write(&root_path, mock_root_pem()).unwrap();
    let mut tampered = doc.clone();
    let pos = tampered.windows(9).position(|w| w == b"user data").unwrap();
    tampered[pos] ^= 0x20;
    let tampered_path = dir.path().join("tampered.cose");
    std::fs::write(&tampered_path, &tampered).unwrap();
    let aws_root = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/nitro-attestation/aws-nitro-root-g1.pem"
    ));

    let mut checked = false;
    if python_has_cryptography() {
        let (ok, out) = run_python(&doc_path, &root_path);
        assert!(ok, "python cryptography rejected a mock document: {out}");
        let (ok, out) = run_python(&tampered_path, &root_path);
        assert!(
            !ok && out.contains("signature"),
            "tampered document accepted: {out}"
        );
        let (ok, out) = run_python(&doc_path, aws_root);
        assert!(!ok, "mock document accepted under the AWS root: {out}");
        // The same script accepts a genuine AWS document (so it checks what AWS signs).
        let (ok, out) = run_python(Path::new(REAL_DOC), aws_root);
        assert!(
            ok,
            "python verifier rejected the genuine AWS document: {out}"
        );
        checked = true;
    }
    if tool_exists("openssl", "version") {
        let at = T0 / 1000 + 10;
        assert!(
            run_openssl(dir.path(), &doc, &mock_root_pem(), at),
            "openssl rejected a mock document"
        );
        assert!(
            !run_openssl(dir.path(), &tampered, &mock_root_pem(), at),
            "openssl accepted a tampered document"
        );
        let aws_pem = std::fs::read_to_string(aws_root).unwrap();
        assert!(
            !run_openssl(dir.path(), &doc, &aws_pem, at),
            "openssl accepted the mock chain under the AWS root"
        );
        checked = true;
    }
    if !checked {
        println!("NOTICE: neither python3 with `cryptography` nor openssl is available; independent verification skipped");
    }
}

#[test]
fn cli_writes_documents_and_the_root() {
    let bin = env!("CARGO_BIN_EXE_mock-nsm");
    let out = Command::new(bin).arg("root-cert").output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), mock_root_pem());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.cose");
    let pcr0 = "ab".repeat(48);
    let status = Command::new(bin)
        .args([
            "document",
            "--user-data",
            "c0ffee",
            "--nonce",
            "0102",
            "--public-key",
            "30",
            "--pcr",
            &format!("0={pcr0}"),
            "--pcr",
            &format!("20={}", "cd".repeat(48)),
            "--at-ms",
            &T0.to_string(),
            "--out",
        ])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    let doc = std::fs::read(&path).unwrap();
    let mut policy = Policy {
        user_data: Some(vec![0xc0, 0xff, 0xee]),
        nonce: Some(vec![1, 2]),
        public_key: Some(vec![0x30]),
        ..Policy::default()
    };
    policy.expected_pcrs.insert(0, vec![0xab; 48]);
    let verified = verify(&doc, &mock_anchor(), T0, &policy).unwrap();
    // PCR20 is set but not locked, so it is not part of the document.
    assert!(!verified.document.pcrs.contains_key(&20));

    // stdout, debug mode.
    let out = Command::new(bin)
        .args(["document", "--debug", "--at-ms", &T0.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let verified = verify(
        &out.stdout,
        &mock_anchor(),
        T0,
        &Policy {
            allow_debug: true,
            ..Policy::default()
        },
    )
    .unwrap();
    assert_eq!(verified.document.pcrs[&0], vec![0; 48]);
    assert_eq!(verified.document.pcrs[&8], vec![0; 48]);

    // Usage errors.
    for bad in [
        vec!["document", "--pcr", "0=abcd"],
        vec!["document", "--pcr", "40="],
        vec!["document", "--user-data", "zz"],
        vec!["document", "--pcr", "x"],
    ] {
        let out = Command::new(bin).args(&bad).output().unwrap();
        assert!(!out.status.success(), "{bad:?} accepted");
        assert!(!String::from_utf8_lossy(&out.stderr).is_empty());
    }
}
