//! The online audit against a tiny local HTTP issuer serving discovery, JWKS and
//! attestation documents from the test PKI.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use agentkeys_attestation::online::{OnlineAudit, OnlineCheck, OnlineError};
use agentkeys_attestation::{PolicyError, VerifyError};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use common::*;
use p256::pkcs8::EncodePublicKey;
use sha2::{Digest, Sha256};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    IgnoreNonce,
    OtherJwksHash,
    KeyNotInJwks,
    WrongClaimedHash,
    WrongIssuer,
    NotFound,
    WrongKids,
    /// The first format: `user_data` = SHA-256 of the JWKS, no tag.
    BareHash,
    /// A statement of another kind: an audit checkpoint.
    CheckpointStatement,
    /// The statement served beside the document is not the one its binding names.
    UnboundStatement,
}

/// The KMS key the test issuer's enclave is pinned to.
pub const PINNED_KEY: &str =
    "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

/// The statement an honest enclave attests for a JWKS with this hash.
fn statement(jwks_sha256: [u8; 32]) -> agentkeys_statement::JwksStatement {
    agentkeys_statement::JwksStatement {
        jwks_sha256,
        kms_key_arn: agentkeys_statement::KmsKeyArn::parse(PINNED_KEY).unwrap(),
        sealed_seed_sha256: [7; 32],
        key_version: 1,
        audit_epoch: 99,
        module_id: "i-0123456789abcdef0-enc0123456789abcdef".into(),
        auth_modes: vec!["signed-session".into()],
        session_keys: vec![],
        tls_spki_sha256: [8; 32],
    }
}

struct Issuer {
    url: String,
}

fn jwk(key: &p256::ecdsa::SigningKey, kid: &str) -> String {
    let point = key.verifying_key().to_encoded_point(false);
    format!(
        r#"{{"kty":"EC","crv":"P-256","x":"{}","y":"{}","kid":"{kid}","alg":"ES256","use":"sig"}}"#,
        URL_SAFE_NO_PAD.encode(point.x().unwrap()),
        URL_SAFE_NO_PAD.encode(point.y().unwrap())
    )
}

fn start(fault: Fault) -> Issuer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let pki = Arc::new(TestPki::new(TEST_NOW_SECS));
    let k1 = p256::ecdsa::SigningKey::from_slice(&[3u8; 32]).unwrap();
    let k2 = p256::ecdsa::SigningKey::from_slice(&[4u8; 32]).unwrap();
    let jwks = format!(
        r#"{{"keys":[{},{}]}}"#,
        jwk(&k1, "kid-1"),
        jwk(&k2, "kid-2")
    );
    let attested = if fault == Fault::KeyNotInJwks {
        p256::ecdsa::SigningKey::from_slice(&[5u8; 32]).unwrap()
    } else {
        k2.clone()
    };
    let spki = attested
        .verifying_key()
        .to_public_key_der()
        .unwrap()
        .as_bytes()
        .to_vec();
    let base = url.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&request).to_string();
            let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
            let (status, body) = if fault == Fault::NotFound {
                ("404 Not Found", String::new())
            } else if path == "/.well-known/openid-configuration" {
                let issuer = if fault == Fault::WrongIssuer {
                    format!("{base}/other")
                } else {
                    base.clone()
                };
                (
                    "200 OK",
                    format!(
                        r#"{{"issuer":"{issuer}","jwks_uri":"{base}/.well-known/jwks.json","nitro_attestation_uri":"{base}/.well-known/nitro-attestation"}}"#
                    ),
                )
            } else if path == "/.well-known/jwks.json" {
                ("200 OK", jwks.clone())
            } else if let Some(query) = path.strip_prefix("/.well-known/nitro-attestation?nonce=") {
                let mut nonce = hex::decode(query).unwrap();
                if fault == Fault::IgnoreNonce {
                    nonce = vec![0; 32];
                }
                let hashed = if fault == Fault::OtherJwksHash {
                    format!("{jwks} ")
                } else {
                    jwks.clone()
                };
                let hash = Sha256::digest(hashed.as_bytes());
                let bound = statement(hash.into());
                let mut served = bound.clone();
                if fault == Fault::UnboundStatement {
                    served.kms_key_arn = agentkeys_statement::KmsKeyArn::parse(
                        "arn:aws:kms:us-east-1:444455556666:key/1234abcd-12ab-34cd-56ef-1234567890ab",
                    )
                    .unwrap();
                }
                let statement_text = String::from_utf8(served.encode()).unwrap();
                let mut spec = DocSpec::new(pki.now_ms());
                spec.nonce = Some(nonce);
                spec.user_data = Some(match fault {
                    Fault::BareHash => hash.to_vec(),
                    Fault::CheckpointStatement => agentkeys_statement::CheckpointStatement {
                        epoch: 99,
                        seq: 0,
                        head: hash.into(),
                        module_id: "i-0123456789abcdef0-enc0123456789abcdef".into(),
                    }
                    .encode(),
                    _ => bound.user_data(),
                });
                spec.public_key = Some(spki.clone());
                let doc = pki.document(&spec);
                let claimed = if fault == Fault::WrongClaimedHash {
                    "00".repeat(32)
                } else {
                    hex::encode(hash)
                };
                let kids = if fault == Fault::WrongKids {
                    r#"["kid-2"]"#
                } else {
                    r#"["kid-1","kid-2"]"#
                };
                (
                    "200 OK",
                    format!(
                        r#"{{"document":"{}","statement_text":{},"jwks_sha256":"{claimed}","kids":{kids}}}"#,
                        STANDARD.encode(doc),
                        serde_json::Value::String(statement_text)
                    ),
                )
            } else {
                ("404 Not Found", String::new())
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    Issuer { url }
}

fn audit(issuer: &Issuer) -> Result<agentkeys_attestation::online::OnlineReport, OnlineError> {
    let pki = TestPki::new(TEST_NOW_SECS);
    OnlineAudit {
        issuer: format!("{}/", issuer.url),
        anchor: pki.anchor(),
        policy: Default::default(),
        at_unix_ms: Some(pki.now_ms()),
        timeout: Duration::from_secs(10),
        expect_kms_key_arn: None,
        expect_kids: vec![],
        tls_roots_pem: None,
        allow_plain_http: true,
        resolve: vec![],
    }
    .run()
}

#[test]
fn online_audit_passes_against_an_honest_issuer() {
    let issuer = start(Fault::None);
    let report = audit(&issuer).unwrap();
    assert_eq!(report.issuer, issuer.url);
    assert_eq!(report.kids, vec!["kid-1", "kid-2"]);
    assert_eq!(report.attested_kid, "kid-2");
    assert_eq!(report.nonce_hex.len(), 64);
    assert_eq!(
        report.verified.document.nonce.as_deref().map(hex::encode),
        Some(report.nonce_hex.clone())
    );
    // Two audits use two different nonces.
    assert_ne!(audit(&issuer).unwrap().nonce_hex, report.nonce_hex);
}

#[test]
fn replayed_nonce_fails() {
    let e = audit(&start(Fault::IgnoreNonce)).unwrap_err();
    assert!(
        matches!(
            e,
            OnlineError::Verify(VerifyError::Policy(PolicyError::FieldMismatch {
                field: "nonce",
                ..
            }))
        ),
        "{e}"
    );
}

#[test]
fn attestation_of_other_jwks_bytes_fails() {
    let e = audit(&start(Fault::OtherJwksHash)).unwrap_err();
    assert_eq!(e.check(), Some(OnlineCheck::Statement), "{e}");
    assert!(e.to_string().contains("the issuer served JWKS"), "{e}");
}

#[test]
fn a_served_statement_the_document_does_not_bind_fails() {
    let e = audit(&start(Fault::UnboundStatement)).unwrap_err();
    assert_eq!(e.check(), Some(OnlineCheck::Statement), "{e}");
    assert!(e.to_string().contains("not the attested one"), "{e}");
}

#[test]
fn a_document_without_a_jwks_statement_fails() {
    let e = audit(&start(Fault::BareHash)).unwrap_err();
    assert_eq!(e.check(), Some(OnlineCheck::Statement), "{e}");
    let e = audit(&start(Fault::CheckpointStatement)).unwrap_err();
    assert_eq!(e.check(), Some(OnlineCheck::Statement), "{e}");
    assert!(
        e.to_string().contains("agentkeys/audit-checkpoint/v1"),
        "{e}"
    );
}

fn audit_expecting(
    issuer: &Issuer,
    kms_key_arn: Option<&str>,
    kids: &[&str],
) -> Result<agentkeys_attestation::online::OnlineReport, OnlineError> {
    let pki = TestPki::new(TEST_NOW_SECS);
    OnlineAudit {
        issuer: issuer.url.clone(),
        anchor: pki.anchor(),
        policy: Default::default(),
        at_unix_ms: Some(pki.now_ms()),
        timeout: Duration::from_secs(10),
        expect_kms_key_arn: kms_key_arn.map(str::to_owned),
        expect_kids: kids.iter().map(|k| k.to_string()).collect(),
        tls_roots_pem: None,
        allow_plain_http: true,
        resolve: vec![],
    }
    .run()
}

#[test]
fn the_pinned_kms_key_and_the_kids_are_checked_when_expected() {
    let issuer = start(Fault::None);
    let report = audit_expecting(&issuer, Some(PINNED_KEY), &["kid-2", "kid-1"]).unwrap();
    assert_eq!(report.statement.kms_key_arn.as_str(), PINNED_KEY);
    assert_eq!(report.statement.key_version, 1);
    // An enclave pinned to another key (a seed sealed under a key the parent controls).
    let other = "arn:aws:kms:us-east-1:444455556666:key/7e2d1c0b-4a3f-4b5e-8c9d-0e1f2a3b4c5d";
    let e = audit_expecting(&issuer, Some(other), &[]).unwrap_err();
    assert_eq!(e.check(), Some(OnlineCheck::Statement), "{e}");
    assert!(e.to_string().contains(other), "{e}");
    // A kid the auditor did not expect (another seed) or one missing (a lost key).
    for kids in [&["kid-1"][..], &["kid-1", "kid-2", "kid-3"][..]] {
        let e = audit_expecting(&issuer, None, kids).unwrap_err();
        assert_eq!(e.check(), Some(OnlineCheck::Jwks), "{kids:?}: {e}");
        assert!(e.to_string().contains("expected exactly"), "{e}");
    }
}

#[test]
fn attested_key_not_in_jwks_fails() {
    let e = audit(&start(Fault::KeyNotInJwks)).unwrap_err();
    assert_eq!(e.check(), Some(OnlineCheck::PublicKeyInJwks), "{e}");
}

#[test]
fn wrong_claimed_hash_fails() {
    let e = audit(&start(Fault::WrongClaimedHash)).unwrap_err();
    assert_eq!(e.check(), Some(OnlineCheck::JwksSha256), "{e}");
}

#[test]
fn wrong_kids_fail() {
    let e = audit(&start(Fault::WrongKids)).unwrap_err();
    assert_eq!(e.check(), Some(OnlineCheck::Jwks), "{e}");
}

#[test]
fn issuer_mismatch_fails() {
    let e = audit(&start(Fault::WrongIssuer)).unwrap_err();
    assert_eq!(e.check(), Some(OnlineCheck::Discovery), "{e}");
}

#[test]
fn http_errors_are_transport_errors() {
    let e = audit(&start(Fault::NotFound)).unwrap_err();
    assert!(e.is_transport(), "{e}");
    assert!(matches!(e, OnlineError::Status { status: 404, .. }));
}

/// Nitro-cli measurements JSON listing `indices` of `pcrs`, written into `dir`.
fn write_measurements(
    dir: &std::path::Path,
    name: &str,
    pcrs: &std::collections::BTreeMap<u16, Vec<u8>>,
    indices: &[u16],
) -> std::path::PathBuf {
    let mut inner = serde_json::Map::new();
    inner.insert("HashAlgorithm".into(), "Sha384 { ... }".into());
    for index in indices {
        inner.insert(format!("PCR{index}"), hex::encode(&pcrs[index]).into());
    }
    let path = dir.join(name);
    std::fs::write(
        &path,
        serde_json::json!({ "Measurements": inner }).to_string(),
    )
    .unwrap();
    path
}

/// `agentkeys-attest verify --issuer URL` against the test PKI's mock root, with `policy`
/// flags.
fn cli_audit(issuer: &str, policy: &[&str]) -> std::process::Output {
    let pki = TestPki::new(TEST_NOW_SECS);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("mock-root.pem");
    std::fs::write(&root, pki.root_pem()).unwrap();
    Command::new(env!("CARGO_BIN_EXE_agentkeys-attest"))
        .args(["verify", "--issuer", issuer, "--root"])
        .arg(&root)
        .args([
            "--allow-mock-root",
            "--json",
            "--at",
            &TEST_NOW_SECS.to_string(),
        ])
        .args(policy)
        .output()
        .unwrap()
}

/// The PCRs the test issuer's documents carry.
fn issuer_pcrs() -> std::collections::BTreeMap<u16, Vec<u8>> {
    DocSpec::new(0).pcrs
}

#[test]
fn cli_online_audit_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let m = write_measurements(dir.path(), "m.json", &issuer_pcrs(), &[0, 1, 2]);
    let policy = ["--measurements", m.to_str().unwrap()];
    let ok = cli_audit(&start(Fault::None).url, &policy);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let json: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(json["ok"], true);
    assert_eq!(json["report"]["attested_kid"], "kid-2");

    let bad = cli_audit(&start(Fault::KeyNotInJwks).url, &policy);
    assert_eq!(bad.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(json["failed_check"], "public_key_in_jwks");

    let down = cli_audit(&start(Fault::NotFound).url, &policy);
    assert_eq!(down.status.code(), Some(2));
}

#[test]
fn cli_online_audit_without_pcr_policy_is_refused() {
    let o = cli_audit(&start(Fault::None).url, &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no PCR policy: give --measurements FILE"),
        "{err}"
    );
    assert!(err.contains("--no-pcr-policy"), "{err}");
    assert!(o.stdout.is_empty());
}

#[test]
fn cli_online_audit_with_no_pcr_policy_warns_and_passes() {
    let o = cli_audit(&start(Fault::None).url, &["--no-pcr-policy"]);
    assert_eq!(o.status.code(), Some(0));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("warning: --no-pcr-policy: the document's PCRs are not checked"),
        "{err}"
    );
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let pcrs_row = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "pcrs")
        .unwrap();
    assert_eq!(pcrs_row["result"], "skipped");
}

#[test]
fn cli_online_audit_refuses_incomplete_measurements() {
    let dir = tempfile::tempdir().unwrap();
    let pcrs = issuer_pcrs();
    // The files hold the issuer's own values: only the rule on PCR0/1/2 refuses them.
    for (indices, missing) in [
        (&[8u16][..], "has no PCR0, PCR1, PCR2;"),
        (&[0, 2, 8][..], "has no PCR1;"),
    ] {
        let m = write_measurements(
            dir.path(),
            &format!("m{}.json", indices.len()),
            &pcrs,
            indices,
        );
        let m = m.to_str().unwrap();
        let o = cli_audit(&start(Fault::None).url, &["--measurements", m]);
        assert_eq!(o.status.code(), Some(2), "{indices:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(&format!("--measurements: {m}: ")), "{err}");
        assert!(err.contains(missing), "{err}");
    }
}

#[test]
fn cli_online_audit_of_another_pcr0_fails_naming_pcr0() {
    let dir = tempfile::tempdir().unwrap();
    let mut pcrs = issuer_pcrs();
    pcrs.insert(0, vec![0x22; 48]);
    let m = write_measurements(dir.path(), "other.json", &pcrs, &[0, 1, 2]);
    let o = cli_audit(
        &start(Fault::None).url,
        &["--measurements", m.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["failed_check"], "pcrs");
    assert!(
        json["error"].as_str().unwrap().contains("PCR0 is "),
        "{json}"
    );
}

#[test]
fn cli_online_audit_checks_the_pinned_key_and_the_kids() {
    let issuer = start(Fault::None);
    let o = cli_audit(
        &issuer.url,
        &[
            "--no-pcr-policy",
            "--kms-key-arn",
            PINNED_KEY,
            "--expect-kid",
            "kid-1",
            "--expect-kid",
            "kid-2",
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["report"]["statement"]["kms_key_arn"], PINNED_KEY);

    let other = "arn:aws:kms:us-east-1:444455556666:key/7e2d1c0b-4a3f-4b5e-8c9d-0e1f2a3b4c5d";
    let o = cli_audit(&issuer.url, &["--no-pcr-policy", "--kms-key-arn", other]);
    assert_eq!(o.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["failed_check"], "statement");

    let o = cli_audit(&issuer.url, &["--no-pcr-policy", "--expect-kid", "kid-9"]);
    assert_eq!(o.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["failed_check"], "jwks");

    // An alias is not a key the enclave can be pinned to: a usage error naming the flag.
    let o = cli_audit(
        &issuer.url,
        &["--no-pcr-policy", "--kms-key-arn", "alias/agentkeys"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--kms-key-arn"));
}
