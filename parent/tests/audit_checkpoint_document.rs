//! `audit verify` with the enclave's checkpoint given as an attestation document
//! (mock NSM), raw, base64 or inside JSON, decoded only or fully verified.

use agentkeys_attestation::{Policy, TrustAnchor};
use agentkeys_broker::audit::{
    AuditEvent, AuditStore, CheckpointTrust, NewAuditRow, Outcome, SqliteAuditStore, VerifyFailure,
};
use agentkeys_broker::cli::audit as cli;
use agentkeys_mock_nsm::{mock_root_pem, MockNsm, MockNsmConfig};
use agentkeys_wire::CheckpointStatement;
use base64::Engine;

mod support;

use support::{FakeEnclave, MODULE_ID};

const EPOCH: u64 = 42;

async fn log_with_mints(path: &std::path::Path, n: u64) -> CheckpointStatement {
    let store = SqliteAuditStore::open(path, Default::default()).unwrap();
    let mut enclave = FakeEnclave::new(EPOCH);
    for _ in 1..=n {
        store
            .append(NewAuditRow::new(AuditEvent::MintJwt, Outcome::Success).signed(&enclave.mint()))
            .await
            .unwrap();
    }
    store.close();
    enclave.checkpoint()
}

fn document(cp: &CheckpointStatement) -> Vec<u8> {
    MockNsm::new(MockNsmConfig::default())
        .attest(Some(cp.encode().to_vec()), None, None)
        .unwrap()
}

#[tokio::test]
async fn attested_checkpoint_in_every_file_form() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let cp = log_with_mints(&db, 5).await;
    let doc = document(&cp);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&doc);
    let forms: Vec<(&str, Vec<u8>)> = vec![
        ("raw.cose", doc.clone()),
        ("doc.b64", b64.clone().into_bytes()),
        (
            "doc.json",
            format!(r#"{{"document":"{b64}"}}"#).into_bytes(),
        ),
        (
            "both.json",
            format!(
                r#"{{"epoch":{},"seq":{},"head":"{}","document":"{b64}"}}"#,
                cp.epoch,
                cp.seq,
                hex::encode(cp.head)
            )
            .into_bytes(),
        ),
    ];
    for (name, bytes) in forms {
        let file = dir.path().join(name);
        std::fs::write(&file, bytes).unwrap();
        let report = cli::verify(&db, Some(&file)).unwrap();
        assert!(report.is_ok(), "{name}: {}", report.render());
        assert!(report.checkpoint.unwrap().matched, "{name}");
    }

    // Fully verified against the explicitly trusted mock root.
    let anchor = TrustAnchor::mock_root_explicitly_trusted(&mock_root_pem()).unwrap();
    let policy = Policy::default();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let trust = CheckpointTrust {
        anchor: &anchor,
        policy: &policy,
        at_unix_ms: now_ms,
    };
    let file = dir.path().join("raw.cose");
    let report = cli::verify_with_trust(&db, Some(&file), Some(&trust)).unwrap();
    assert!(report.is_ok(), "{}", report.render());

    // The production root refuses the mock document.
    let root = TrustAnchor::aws_nitro_root_g1();
    let trust = CheckpointTrust {
        anchor: &root,
        policy: &policy,
        at_unix_ms: now_ms,
    };
    assert!(cli::verify_with_trust(&db, Some(&file), Some(&trust)).is_err());

    // JSON fields that disagree with the document are refused.
    let lie = dir.path().join("lie.json");
    std::fs::write(
        &lie,
        format!(
            r#"{{"epoch":{},"seq":{},"head":"{}","document":"{b64}"}}"#,
            cp.epoch,
            cp.seq - 1,
            hex::encode(cp.head)
        ),
    )
    .unwrap();
    assert!(cli::verify(&db, Some(&lie)).is_err());
}

#[tokio::test]
async fn attested_checkpoint_reveals_dropped_tail() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let cp = log_with_mints(&db, 6).await;
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("DROP TRIGGER audit_log_no_delete; DELETE FROM audit_log WHERE id > 3;")
        .unwrap();
    let file = dir.path().join("cp.cose");
    std::fs::write(&file, document(&cp)).unwrap();
    let report = cli::verify(&db, None).unwrap();
    assert!(report.is_ok());
    let report = cli::verify(&db, Some(&file)).unwrap();
    assert_eq!(
        report.first_failure(),
        Some(&VerifyFailure::MissingSeqs {
            epoch: EPOCH,
            from: 4,
            to: 6
        })
    );
}

#[test]
fn document_without_user_data_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let doc = MockNsm::new(MockNsmConfig::default())
        .attest(None, None, None)
        .unwrap();
    let file = dir.path().join("doc.cose");
    std::fs::write(&file, doc).unwrap();
    let err = agentkeys_broker::audit::load_checkpoint(&file, None).unwrap_err();
    assert!(err.to_string().contains("user_data"), "{err}");
}

#[tokio::test]
async fn a_document_that_is_not_an_audit_checkpoint_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let cp = log_with_mints(&db, 2).await;
    let nsm = MockNsm::new(MockNsmConfig::default());
    // The JWKS attestation the broker publishes, and the untagged 48-byte checkpoint of
    // the first format (epoch ‖ seq ‖ head): neither passes for an audit checkpoint.
    let jwks_statement = agentkeys_wire::JwksStatement {
        jwks_sha256: [1; 32],
        kms_key_arn: agentkeys_wire::KmsKeyArn::parse(
            "arn:aws:kms:us-east-1:000000000000:key/5f1c9e2a-0b7d-4e3f-9a61-2c8d4b0e7f13",
        )
        .unwrap(),
        sealed_seed_sha256: [2; 32],
        key_version: 1,
        audit_epoch: cp.epoch,
        module_id: MODULE_ID.into(),
        auth_modes: vec!["signed-session".into()],
        session_keys: vec![],
        tls_spki_sha256: [3; 32],
    };
    let mut legacy = cp.epoch.to_be_bytes().to_vec();
    legacy.extend_from_slice(&cp.seq.to_be_bytes());
    legacy.extend_from_slice(&cp.head);
    for (name, user_data) in [("jwks", jwks_statement.encode()), ("legacy", legacy)] {
        let doc = nsm.attest(Some(user_data), None, None).unwrap();
        let file = dir.path().join(name);
        std::fs::write(&file, &doc).unwrap();
        let e = cli::verify(&db, Some(&file)).unwrap_err();
        assert!(
            e.to_string().contains("not an audit checkpoint"),
            "{name}: {e}"
        );
    }
    // A JSON module id other than the document's is refused.
    let b64 = base64::engine::general_purpose::STANDARD.encode(document(&cp));
    let file = dir.path().join("module.json");
    std::fs::write(
        &file,
        format!(r#"{{"module_id":"i-0ffffffffffffffff-enc0ffffffffffffff","document":"{b64}"}}"#),
    )
    .unwrap();
    let e = cli::verify(&db, Some(&file)).unwrap_err();
    assert!(e.to_string().contains("names enclave"), "{e}");
}
