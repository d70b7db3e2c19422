//! The readers of a PostgreSQL audit log against a real server: `audit verify --token`
//! (found tokens, each against the rows of its `(epoch, seq)` in whichever host's chain)
//! and `audit tail` (the latest rows of every chain, each naming its chain).

mod support;
mod support_pg;

use std::path::Path;

use agentkeys_attestation::jwks::parse_jwks;
use agentkeys_broker::audit::verify::postgres::check_tokens_pg;
use agentkeys_broker::audit::verify::tokens::FoundToken;
use agentkeys_broker::audit::verify::PgVerifyError;
use agentkeys_broker::audit::{
    verify::verify_pg, AuditDb, AuditEvent, AuditStore, NewAuditRow, Outcome, PgAuditStore, PgUrl,
    VerifyFailure,
};
use agentkeys_broker::cli::audit::{tail, AuditCliError};
use support::FakeEnclave;
use support_pg::{PgCluster, SUPERUSER_PASSWORD};
use tokio_postgres::NoTls;

fn pg_url(s: &str) -> PgUrl {
    match AuditDb::parse(s).unwrap() {
        AuditDb::Postgres { url, .. } => url,
        other => panic!("not postgres: {other:?}"),
    }
}

/// Two hosts' chains: host-a records its seq 1 and never its seq 2; host-b records its
/// seq 1 as sent and its seq 2 as withheld. Returns the enclaves and their tokens.
struct Fleet {
    a: FakeEnclave,
    a1: String,
    a2_unrecorded: String,
    b1: String,
    b2_withheld: String,
}

async fn two_chains(url: &PgUrl) -> Fleet {
    let store_a = PgAuditStore::open(url, "host-a", Default::default())
        .await
        .unwrap();
    let store_b = PgAuditStore::open(url, "host-b", Default::default())
        .await
        .unwrap();
    let mut a = FakeEnclave::new(7);
    let mut b = FakeEnclave::new(8);
    let a1 = a.mint();
    store_a
        .append(NewAuditRow::new(AuditEvent::MintJwt, Outcome::Success).signed(&a1))
        .await
        .unwrap();
    let a2 = a.mint();
    let b1 = b.mint();
    store_b
        .append(NewAuditRow::new(AuditEvent::MintJwt, Outcome::Success).signed(&b1))
        .await
        .unwrap();
    let b2 = b.mint();
    store_b
        .append(NewAuditRow::new(AuditEvent::MintWithheld, Outcome::Failure).signed(&b2))
        .await
        .unwrap();
    Fleet {
        a,
        a1: a1.jwt,
        a2_unrecorded: a2.jwt,
        b1: b1.jwt,
        b2_withheld: b2.jwt,
    }
}

async fn create_database(cluster: &PgCluster, name: &str) {
    let (c, conn) = tokio_postgres::connect(&cluster.admin_url("postgres"), NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c.batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
}

#[tokio::test]
async fn found_tokens_are_checked_against_the_rows_of_every_chain() {
    let Some(cluster) = PgCluster::start_or_skip() else {
        return;
    };
    let url = pg_url(&cluster.admin_url("postgres"));
    let f = two_chains(&url).await;
    let jwks = parse_jwks(f.a.jwks().as_bytes()).unwrap();
    // Signed by host-a's enclave key at epoch 7 seq 1, but not the token its row records.
    let other_at_a1 = f.a.sign(&f.a.signing_input(support::WALLET, 1, 5));
    let found = |jwt: &str, n: usize| FoundToken {
        source: format!("found:{n}"),
        jwt: jwt.to_owned(),
    };
    let tokens = [
        found(&f.a1, 1),
        found(&f.b1, 2),
        found(&f.a2_unrecorded, 3),
        found(&f.b2_withheld, 4),
        found(&other_at_a1, 5),
        found("not-a-token", 6),
    ];
    let mut report = verify_pg(&url, &[]).await.unwrap();
    assert!(report.is_ok(), "{}", report.render());
    let accounted = check_tokens_pg(&url, &tokens, &jwks, &mut report)
        .await
        .unwrap();
    let failures: Vec<String> = report.failures.iter().map(|f| f.to_string()).collect();
    assert_eq!(accounted, 2, "{failures:#?}");
    assert_eq!(
        report.failures[0],
        VerifyFailure::TokenWithoutRow {
            source: "found:3".into(),
            epoch: 7,
            seq: 2
        }
    );
    assert_eq!(
        report.failures[1],
        VerifyFailure::InChain {
            chain: "host-b".into(),
            failure: Box::new(VerifyFailure::TokenWithheld {
                source: "found:4".into(),
                id: 2
            })
        }
    );
    assert_eq!(
        report.failures[2],
        VerifyFailure::InChain {
            chain: "host-a".into(),
            failure: Box::new(VerifyFailure::TokenDisagrees {
                source: "found:5".into(),
                id: 1
            })
        }
    );
    assert!(
        matches!(&report.failures[3], VerifyFailure::TokenInvalid { source, .. } if source == "found:6"),
        "{failures:#?}"
    );
    assert_eq!(report.failures.len(), 4, "{failures:#?}");
    assert!(!report.is_ok());
    assert!(failures[1].starts_with("chain host-b: token at found:4 is recorded as withheld"));

    // A database without the audit log is an error, not a pass.
    create_database(&cluster, "empty").await;
    let empty = pg_url(&cluster.admin_url("empty"));
    let mut report = verify_pg(&url, &[]).await.unwrap();
    let err = check_tokens_pg(&empty, &tokens[..1], &jwks, &mut report)
        .await
        .unwrap_err();
    assert!(
        matches!(err, PgVerifyError::WrongSchema { found: 0, .. }),
        "{err:?}"
    );
    assert!(!err.to_string().contains(SUPERUSER_PASSWORD), "{err}");
}

#[tokio::test]
async fn tail_shows_the_latest_rows_of_every_chain_naming_each_chain() {
    let Some(cluster) = PgCluster::start_or_skip() else {
        return;
    };
    let raw = cluster.admin_url("postgres");
    let f = two_chains(&pg_url(&raw)).await;
    let db = Path::new(&raw);

    let lines: Vec<serde_json::Value> = tail(db, 100, true)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let placed: Vec<(&str, i64, &str)> = lines
        .iter()
        .map(|r| {
            (
                r["chain"].as_str().unwrap(),
                r["id"].as_i64().unwrap(),
                r["event"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        placed,
        [
            ("host-a", 1, "mint_jwt"),
            ("host-b", 1, "mint_jwt"),
            ("host-b", 2, "mint_withheld")
        ],
        "oldest first, every chain"
    );
    let signed = |jwt: &str| jwt.rsplit_once('.').unwrap().0.to_owned();
    assert_eq!(lines[0]["signing_input"], signed(&f.a1));
    assert_eq!(lines[1]["signing_input"], signed(&f.b1));
    assert_eq!(lines[2]["signing_input"], signed(&f.b2_withheld));
    assert_eq!(lines[2]["outcome"], "failure");

    // -n: the latest rows only.
    let last: Vec<serde_json::Value> = tail(db, 2, true)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(last.len(), 2);
    assert_eq!(last[0]["chain"], "host-b");
    assert_eq!(last[0]["id"], 1);
    assert_eq!(last[1]["id"], 2);

    // The table names the chain of every row.
    let table = tail(db, 10, false).unwrap();
    let mut rows = table.lines();
    assert!(rows.next().unwrap().starts_with("CHAIN"), "{table}");
    let body: Vec<&str> = rows.collect();
    assert_eq!(body.len(), 3, "{table}");
    assert!(body[0].starts_with("host-a"), "{table}");
    assert!(
        body[2].starts_with("host-b") && body[2].contains("mint_withheld"),
        "{table}"
    );

    // No audit log there, or no server: an error naming the database, password redacted.
    create_database(&cluster, "empty").await;
    let empty = cluster.admin_url("empty");
    let err = tail(Path::new(&empty), 10, true).unwrap_err();
    assert!(
        matches!(
            err,
            AuditCliError::Postgres(PgVerifyError::WrongSchema { found: 0, .. })
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("postgres:***@"), "{err}");
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let nowhere = format!("postgres://postgres:{SUPERUSER_PASSWORD}@127.0.0.1:{closed}/postgres");
    let err = tail(Path::new(&nowhere), 10, true).unwrap_err();
    assert!(
        matches!(err, AuditCliError::Postgres(PgVerifyError::Connect { .. })),
        "{err:?}"
    );
    assert!(!err.to_string().contains(SUPERUSER_PASSWORD), "{err}");
    let err = tail(Path::new("postgres://u:p@127.0.0.1:notaport/db"), 10, true).unwrap_err();
    assert!(matches!(err, AuditCliError::Db(_)), "{err:?}");
}

/// The issuer key of the CloudTrail records below.
const TRAIL_KEY: &str =
    "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

/// An attested KMS call of the issuer key by enclave `module`, as CloudTrail records it.
fn attested(operation: &str, module: &str) -> serde_json::Value {
    serde_json::json!({
        "eventTime": "2026-12-04T10:00:00Z",
        "eventSource": "kms.amazonaws.com",
        "eventName": operation,
        "requestParameters": { "keyId": TRAIL_KEY },
        "resources": [{ "ARN": TRAIL_KEY, "type": "AWS::KMS::Key" }],
        "additionalEventData": { "recipient": {
            "attestationDocumentModuleId": module,
            "attestationDocumentEnclaveImageDigest": "ab"
        } }
    })
}

#[tokio::test]
async fn cloudtrail_unseals_are_held_against_the_boots_of_every_chain() {
    let Some(cluster) = PgCluster::start_or_skip() else {
        return;
    };
    let raw = cluster.admin_url("postgres");
    let url = pg_url(&raw);
    for (chain, module) in [("host-a", "i-0a-enc1"), ("host-b", "i-0b-enc1")] {
        let store = PgAuditStore::open(&url, chain, Default::default())
            .await
            .unwrap();
        store
            .append(
                NewAuditRow::new(AuditEvent::EnclaveUnsealed, Outcome::Success)
                    .detail(format!("module_id={module} genesis=false")),
            )
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let verify = |records: Vec<serde_json::Value>| {
        let trail = dir.path().join("trail.json");
        std::fs::write(
            &trail,
            serde_json::json!({ "Records": records }).to_string(),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_agentkeys-broker"))
            .args([
                "audit",
                "verify",
                "--kms-key-arn",
                TRAIL_KEY,
                "--cloudtrail",
            ])
            .arg(&trail)
            .env("BROKER_AUDIT_DB", &raw)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    // Each host's boot is in its own chain: both unseals are accounted for.
    let (ok, stdout, stderr) = verify(vec![
        attested("GenerateDataKey", "i-0a-enc1"),
        attested("Decrypt", "i-0b-enc1"),
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("chain host-a: 1 enclave boots")
            && stderr.contains("chain host-b: 1 enclave boots")
            && stderr.contains("2 attested unseals"),
        "{stderr}"
    );
    // An unseal by an enclave no chain records is a hidden boot.
    let (ok, stdout, stderr) = verify(vec![
        attested("Decrypt", "i-0a-enc1"),
        attested("Decrypt", "i-0c-enc9"),
    ]);
    assert!(!ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("by enclave i-0c-enc9")
            && stdout.contains("records no boot")
            && !stdout.contains("by enclave i-0a-enc1"),
        "{stdout}"
    );
    assert!(!stdout.contains(SUPERUSER_PASSWORD) && !stderr.contains(SUPERUSER_PASSWORD));
}
