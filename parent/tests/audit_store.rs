//! The SQLite audit store and `audit verify` / `audit tail`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agentkeys_broker::audit::{
    verify_chain, AuditError, AuditEvent, AuditStore, GroupCommitConfig, NewAuditRow, Outcome,
    SqliteAuditStore, VerifyFailure,
};
use agentkeys_broker::cli::audit as cli;
use agentkeys_wire::{chain_genesis, CheckpointStatement};
use sha2::{Digest, Sha256};

mod support;

use support::MODULE_ID;

const EPOCH: u64 = 0x5eed_0000_0001;

/// Builds mint rows that follow the enclave's chain, like the broker records them.
struct FakeEnclave(support::FakeEnclave);

impl FakeEnclave {
    fn new(epoch: u64) -> FakeEnclave {
        FakeEnclave(support::FakeEnclave::new(epoch))
    }

    fn mint(&mut self, event: AuditEvent) -> NewAuditRow {
        NewAuditRow::new(event, Outcome::Success)
            .bearer("bearer-secret")
            .signed(&self.0.mint())
            .status(200)
    }

    fn checkpoint(&self) -> CheckpointStatement {
        self.0.checkpoint()
    }
}

fn db(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("audit.db")
}

async fn fill(store: &SqliteAuditStore, enclave: &mut FakeEnclave, n: usize) {
    for i in 0..n {
        let row = if i % 4 == 3 {
            NewAuditRow::new(AuditEvent::AuthFailed, Outcome::Failure)
                .bearer("wrong")
                .status(401)
                .detail("backend said 401")
        } else if i % 2 == 0 {
            enclave.mint(AuditEvent::MintJwt)
        } else {
            enclave.mint(AuditEvent::MintAwsCreds)
        };
        store.append(row).await.unwrap();
    }
}

/// Opens the file with the triggers dropped, as an attacker with file access would.
fn raw_without_triggers(path: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch("DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;")
        .unwrap();
    c
}

fn count(path: &Path) -> i64 {
    let c = rusqlite::Connection::open(path).unwrap();
    c.query_row("SELECT count(*) FROM audit_log", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn append_then_verify_passes() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let store = SqliteAuditStore::open(&path, GroupCommitConfig::default()).unwrap();
    let mut enclave = FakeEnclave::new(EPOCH);
    let first = store
        .append(enclave.mint(AuditEvent::MintJwt))
        .await
        .unwrap();
    assert_eq!(first.id, 1);
    fill(&store, &mut enclave, 19).await;
    store.healthy().await.unwrap();
    let report = verify_chain(&path, None).unwrap();
    assert!(report.is_ok(), "{}", report.render());
    assert_eq!(report.rows_checked, 20);
    assert_eq!(report.last_id, Some(20));
    assert_eq!(report.epochs.len(), 1);
    assert_eq!(report.epochs[0].max_seq, enclave.0.seq);
    assert!(report.epochs[0].gaps.is_empty());
    let report = verify_chain(&path, Some(&enclave.checkpoint())).unwrap();
    assert!(report.is_ok(), "{}", report.render());
    assert!(report.checkpoint.as_ref().unwrap().matched);
}

#[tokio::test]
async fn bearer_is_stored_only_as_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let store = SqliteAuditStore::open(&path, Default::default()).unwrap();
    store
        .append(NewAuditRow::new(AuditEvent::AuthFailed, Outcome::Failure).bearer("s3cr3t-bearer"))
        .await
        .unwrap();
    store.close();
    let mut bytes = std::fs::read(&path).unwrap();
    if let Ok(wal) = std::fs::read(dir.path().join("audit.db-wal")) {
        bytes.extend(wal);
    }
    assert!(!bytes.windows(13).any(|w| w == b"s3cr3t-bearer"));
    let rows = cli::recent_rows(&path, 1).unwrap();
    assert_eq!(
        rows[0].entry.bearer_sha256.unwrap(),
        <[u8; 32]>::from(Sha256::digest(b"s3cr3t-bearer"))
    );
}

#[tokio::test]
async fn update_and_delete_are_refused_by_triggers() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let store = SqliteAuditStore::open(&path, Default::default()).unwrap();
    fill(&store, &mut FakeEnclave::new(EPOCH), 3).await;
    let c = rusqlite::Connection::open(&path).unwrap();
    let e = c
        .execute("UPDATE audit_log SET detail = 'x' WHERE id = 1", [])
        .unwrap_err();
    assert!(e.to_string().contains("append-only"), "{e}");
    let e = c
        .execute("DELETE FROM audit_log WHERE id = 3", [])
        .unwrap_err();
    assert!(e.to_string().contains("append-only"), "{e}");
    assert_eq!(count(&path), 3);
    assert!(verify_chain(&path, None).unwrap().is_ok());
}

#[tokio::test]
async fn edited_row_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let store = SqliteAuditStore::open(&path, Default::default()).unwrap();
    fill(&store, &mut FakeEnclave::new(EPOCH), 8).await;
    store.close();
    raw_without_triggers(&path)
        .execute(
            "UPDATE audit_log SET wallet = '0x00000000000000000000000000000000000000bb' WHERE id = 3",
            [],
        )
        .unwrap();
    let report = verify_chain(&path, None).unwrap();
    assert!(!report.is_ok());
    match report.first_failure().unwrap() {
        VerifyFailure::RowHashMismatch { id, .. } => assert_eq!(*id, 3),
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        report.render().contains("row 3 was edited"),
        "{}",
        report.render()
    );
}

#[tokio::test]
async fn edited_row_with_recomputed_hash_breaks_the_next_link() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let store = SqliteAuditStore::open(&path, Default::default()).unwrap();
    fill(&store, &mut FakeEnclave::new(EPOCH), 6).await;
    store.close();
    // Rewrite row 2's status and give it a self-consistent hash.
    let mut row = cli::recent_rows(&path, 6).unwrap()[1].clone();
    assert_eq!(row.id, 2);
    row.entry.status = Some(500);
    let h = row.compute_hash();
    raw_without_triggers(&path)
        .execute(
            "UPDATE audit_log SET status = 500, row_hash = ?1 WHERE id = 2",
            [hex::encode(h)],
        )
        .unwrap();
    let report = verify_chain(&path, None).unwrap();
    assert_eq!(
        report.first_failure(),
        Some(&VerifyFailure::BrokenLink {
            id: 3,
            previous_id: 2
        }),
        "{}",
        report.render()
    );
}

#[tokio::test]
async fn deleted_middle_row_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let store = SqliteAuditStore::open(&path, Default::default()).unwrap();
    fill(&store, &mut FakeEnclave::new(EPOCH), 10).await;
    store.close();
    raw_without_triggers(&path)
        .execute("DELETE FROM audit_log WHERE id = 5", [])
        .unwrap();
    let report = verify_chain(&path, None).unwrap();
    assert_eq!(
        report.first_failure(),
        Some(&VerifyFailure::MissingRows { from: 5, to: 5 }),
        "{}",
        report.render()
    );
    assert!(report.render().contains("row 5 is missing"));
}

#[tokio::test]
async fn deleted_first_row_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let store = SqliteAuditStore::open(&path, Default::default()).unwrap();
    fill(&store, &mut FakeEnclave::new(EPOCH), 4).await;
    store.close();
    raw_without_triggers(&path)
        .execute("DELETE FROM audit_log WHERE id = 1", [])
        .unwrap();
    let report = verify_chain(&path, None).unwrap();
    assert_eq!(
        report.first_failure(),
        Some(&VerifyFailure::BadStart { id: 2 })
    );
}

#[tokio::test]
async fn dropped_tail_is_caught_only_with_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let store = SqliteAuditStore::open(&path, Default::default()).unwrap();
    let mut enclave = FakeEnclave::new(EPOCH);
    for _ in 0..20 {
        store
            .append(enclave.mint(AuditEvent::MintJwt))
            .await
            .unwrap();
    }
    store.close();
    raw_without_triggers(&path)
        .execute("DELETE FROM audit_log WHERE id > 17", [])
        .unwrap();
    let report = verify_chain(&path, None).unwrap();
    assert!(report.is_ok(), "{}", report.render());
    assert_eq!(report.rows_checked, 17);

    let report = verify_chain(&path, Some(&enclave.checkpoint())).unwrap();
    assert_eq!(
        report.first_failure(),
        Some(&VerifyFailure::MissingSeqs {
            epoch: EPOCH,
            from: 18,
            to: 20
        }),
        "{}",
        report.render()
    );
    let text = report.render();
    assert!(
        text.contains(&format!(
            "enclave signed seq 18..20 in epoch {EPOCH} but the log has no rows for them"
        )),
        "{text}"
    );
    assert!(!report.checkpoint.unwrap().matched);
}

#[tokio::test]
async fn dropped_middle_mint_with_rewritten_chain_is_caught_by_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let mut enclave = FakeEnclave::new(EPOCH);
    let rows: Vec<NewAuditRow> = (0..6).map(|_| enclave.mint(AuditEvent::MintJwt)).collect();
    // A parent that never wrote seq 4 but kept its own chain consistent.
    let store = SqliteAuditStore::open(&path, Default::default()).unwrap();
    for (i, r) in rows.into_iter().enumerate() {
        if i != 3 {
            store.append(r).await.unwrap();
        }
    }
    store.close();
    let report = verify_chain(&path, None).unwrap();
    assert!(report.is_ok(), "{}", report.render());
    assert_eq!(report.epochs[0].gaps, vec![(4, 4)]);
    assert!(report.warnings.iter().any(|w| w.contains("seq 4")));
    let report = verify_chain(&path, Some(&enclave.checkpoint())).unwrap();
    assert_eq!(
        report.first_failure(),
        Some(&VerifyFailure::MissingSeqs {
            epoch: EPOCH,
            from: 4,
            to: 4
        })
    );
}

#[tokio::test]
async fn changed_signing_input_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let mut enclave = FakeEnclave::new(EPOCH);
    let mut rows: Vec<NewAuditRow> = (0..5).map(|_| enclave.mint(AuditEvent::MintJwt)).collect();
    // The log claims a different token for seq 2 (same wallet, kid, jti and position,
    // another issue time), its own chain kept consistent.
    rows[1].signing_input = Some(enclave.0.signing_input(support::WALLET, 2, 1));
    let store = SqliteAuditStore::open(&path, Default::default()).unwrap();
    for r in rows.clone() {
        store.append(r).await.unwrap();
    }
    store.close();
    let report = verify_chain(&path, None).unwrap();
    assert_eq!(
        report.first_failure(),
        Some(&VerifyFailure::EnclaveHeadMismatch {
            id: 2,
            epoch: EPOCH,
            seq: 2
        }),
        "{}",
        report.render()
    );

    // Same, with the recorded heads stripped: only the checkpoint reveals it.
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let store = SqliteAuditStore::open(&path, Default::default()).unwrap();
    for mut r in rows {
        r.enclave_head = None;
        store.append(r).await.unwrap();
    }
    store.close();
    assert!(verify_chain(&path, None).unwrap().is_ok());
    let report = verify_chain(&path, Some(&enclave.checkpoint())).unwrap();
    assert!(
        matches!(
            report.first_failure(),
            Some(VerifyFailure::CheckpointHeadMismatch { seq: 5, .. })
        ),
        "{}",
        report.render()
    );
}

#[tokio::test]
async fn checkpoint_of_an_older_point_passes_and_counts_newer_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let store = SqliteAuditStore::open(&path, Default::default()).unwrap();
    let mut enclave = FakeEnclave::new(EPOCH);
    for _ in 0..3 {
        store
            .append(enclave.mint(AuditEvent::MintJwt))
            .await
            .unwrap();
    }
    let cp = enclave.checkpoint();
    for _ in 0..2 {
        store
            .append(enclave.mint(AuditEvent::MintJwt))
            .await
            .unwrap();
    }
    let report = verify_chain(&path, Some(&cp)).unwrap();
    assert!(report.is_ok(), "{}", report.render());
    assert_eq!(report.checkpoint.unwrap().rows_after, 2);
    // An empty epoch checkpoint (seq 0, genesis head) passes on an empty log too.
    let empty = tempfile::tempdir().unwrap();
    let p = db(&empty);
    drop(SqliteAuditStore::open(&p, Default::default()).unwrap());
    let cp0 = CheckpointStatement {
        epoch: 9,
        seq: 0,
        head: chain_genesis(9),
        module_id: MODULE_ID.into(),
    };
    assert!(verify_chain(&p, Some(&cp0)).unwrap().is_ok());
    // A checkpoint for an epoch the log never saw names every seq.
    let other = CheckpointStatement {
        epoch: 77,
        seq: 2,
        head: [0; 32],
        module_id: MODULE_ID.into(),
    };
    let report = verify_chain(&path, Some(&other)).unwrap();
    assert_eq!(
        report.first_failure(),
        Some(&VerifyFailure::MissingSeqs {
            epoch: 77,
            from: 1,
            to: 2
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let store: Arc<SqliteAuditStore> =
        Arc::new(SqliteAuditStore::open(&path, Default::default()).unwrap());
    let dyn_store: Arc<dyn AuditStore> = store.clone();
    let mut tasks = Vec::new();
    for t in 0..64 {
        let s = Arc::clone(&dyn_store);
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..40 {
                let r = NewAuditRow::new(AuditEvent::AuthFailed, Outcome::Failure)
                    .detail(format!("task {t} row {i}"));
                ids.push(s.append(r).await.unwrap().id);
            }
            ids
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    let n = all.len();
    all.dedup();
    assert_eq!(all.len(), n, "ids are distinct");
    assert_eq!(all, (1..=n as i64).collect::<Vec<_>>());
    let stats = store.stats();
    assert_eq!(stats.rows, n as u64);
    assert!(stats.commits < stats.rows, "{stats:?}");
    assert_eq!(stats.failed_commits, 0);
    let report = verify_chain(&path, None).unwrap();
    assert!(report.is_ok(), "{}", report.render());
    assert_eq!(report.rows_checked, n as u64);
}

/// Writers give up on a lock after 50 ms instead of 5 s.
fn short_busy_timeout() -> GroupCommitConfig {
    GroupCommitConfig {
        busy_timeout: Duration::from_millis(50),
        ..Default::default()
    }
}

/// Another connection holding the database's write lock (`BEGIN EXCLUSIVE`), as a stuck
/// process would: the store's writes fail until it is dropped.
struct WriteLock(rusqlite::Connection);

impl WriteLock {
    fn take(path: &std::path::Path) -> WriteLock {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
        WriteLock(conn)
    }
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        let _ = self.0.execute_batch("ROLLBACK");
    }
}

#[tokio::test]
async fn refused_writes_acknowledge_nothing_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let store = SqliteAuditStore::open(&path, short_busy_timeout()).unwrap();
    let mut enclave = FakeEnclave::new(EPOCH);
    fill(&store, &mut enclave, 3).await;
    let lock = WriteLock::take(&path);
    let err = store
        .append(enclave.mint(AuditEvent::MintJwt))
        .await
        .unwrap_err();
    assert!(matches!(err, AuditError::Commit { .. }), "{err:?}");
    assert!(store.healthy().await.is_err());
    assert_eq!(count(&path), 3);
    assert_eq!(store.stats().failed_commits, 1);
    drop(lock);
    store.healthy().await.unwrap();
    let r = NewAuditRow::new(AuditEvent::AuthFailed, Outcome::Failure);
    assert_eq!(store.append(r).await.unwrap().id, 4);
    let report = verify_chain(&path, None).unwrap();
    assert!(report.is_ok(), "{}", report.render());
}

#[tokio::test]
async fn withheld_mint_is_recorded_when_the_store_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let config = GroupCommitConfig {
        retry_interval: Duration::from_millis(20),
        ..short_busy_timeout()
    };
    let store = SqliteAuditStore::open(&path, config).unwrap();
    let mut enclave = FakeEnclave::new(EPOCH);
    store
        .append(enclave.mint(AuditEvent::MintJwt))
        .await
        .unwrap();
    let lock = WriteLock::take(&path);
    let minted = enclave.mint(AuditEvent::MintJwt);
    assert!(store.append(minted.clone()).await.is_err());
    store.queue_withheld(minted.detail("success row not durable; token withheld"));
    assert_eq!(store.pending_withheld(), 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(store.pending_withheld(), 1, "still refused");
    drop(lock);
    for _ in 0..100 {
        if store.pending_withheld() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(store.pending_withheld(), 0);
    let rows = cli::recent_rows(&path, 10).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].entry.event, AuditEvent::MintWithheld);
    assert_eq!(rows[1].entry.outcome, Outcome::Failure);
    assert_eq!(rows[1].entry.enclave_seq, Some(2));
    let report = verify_chain(&path, Some(&enclave.checkpoint())).unwrap();
    assert!(report.is_ok(), "{}", report.render());
}

#[tokio::test]
async fn reopen_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let mut enclave = FakeEnclave::new(EPOCH);
    {
        let store = SqliteAuditStore::open(&path, Default::default()).unwrap();
        fill(&store, &mut enclave, 5).await;
    }
    let store = SqliteAuditStore::open(&path, Default::default()).unwrap();
    let r = store
        .append(enclave.mint(AuditEvent::MintJwt))
        .await
        .unwrap();
    assert_eq!(r.id, 6);
    let report = verify_chain(&path, Some(&enclave.checkpoint())).unwrap();
    assert!(report.is_ok(), "{}", report.render());
}

#[tokio::test]
async fn closed_store_refuses_appends() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteAuditStore::open(&db(&dir), Default::default()).unwrap();
    store.close();
    let r = NewAuditRow::new(AuditEvent::AuthFailed, Outcome::Failure);
    assert!(matches!(store.append(r).await, Err(AuditError::WriterGone)));
    assert!(store.healthy().await.is_err());
}

#[test]
fn unwritable_directory_is_refused_with_its_path() {
    // Permission bits do not stop root; /proc refuses new files to everyone.
    let dir = tempfile::tempdir().unwrap();
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let mut perms = std::fs::metadata(&ro).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o555);
    std::fs::set_permissions(&ro, perms).unwrap();
    let probe = ro.join("probe");
    let target = if std::fs::write(&probe, b"x").is_ok() {
        PathBuf::from("/proc/agentkeys-audit.db")
    } else {
        ro.join("audit.db")
    };
    let err = SqliteAuditStore::open(&target, Default::default()).unwrap_err();
    assert!(
        err.to_string().contains(&target.display().to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn read_only_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    drop(SqliteAuditStore::open(&path, Default::default()).unwrap());
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o444);
    std::fs::set_permissions(&path, perms).unwrap();
    if std::fs::OpenOptions::new().write(true).open(&path).is_ok() {
        // Running as root: permission bits do not apply; covered by the fault test.
        return;
    }
    let err = SqliteAuditStore::open(&path, Default::default()).unwrap_err();
    assert!(matches!(err, AuditError::NotWritable { .. }), "{err:?}");
}

#[test]
fn verify_reports_a_missing_or_foreign_database() {
    let dir = tempfile::tempdir().unwrap();
    assert!(verify_chain(&dir.path().join("none.db"), None).is_err());
    let foreign = dir.path().join("foreign.db");
    rusqlite::Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE t (x INTEGER)")
        .unwrap();
    let err = verify_chain(&foreign, None).unwrap_err();
    assert!(err.to_string().contains("foreign.db"), "{err}");
}

#[tokio::test]
async fn tail_renders_table_and_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let store = SqliteAuditStore::open(&path, Default::default()).unwrap();
    fill(&store, &mut FakeEnclave::new(EPOCH), 8).await;
    let table = cli::tail(&path, 3, false).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[0].starts_with("ID"), "{table}");
    assert!(lines[1].starts_with('6'), "{table}");
    assert!(table.contains("auth_failed"), "{table}");
    let json = cli::tail(&path, 5, true).unwrap();
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[4]["id"], 8);
    assert_eq!(rows[4]["event"], "auth_failed");
    assert_eq!(rows[0]["row_hash"].as_str().unwrap().len(), 64);
    let empty = tempfile::tempdir().unwrap();
    let p = db(&empty);
    drop(SqliteAuditStore::open(&p, Default::default()).unwrap());
    assert!(cli::tail(&p, 5, false).unwrap().contains("(no rows)"));
}

#[tokio::test]
async fn cli_verify_refuses_a_checkpoint_file_without_its_document() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let store = SqliteAuditStore::open(&path, Default::default()).unwrap();
    let mut enclave = FakeEnclave::new(EPOCH);
    fill(&store, &mut enclave, 6).await;
    let cp = enclave.checkpoint();
    let file = dir.path().join("cp.json");
    std::fs::write(
        &file,
        format!(
            r#"{{"epoch":{},"seq":{},"head":"{}"}}"#,
            cp.epoch,
            cp.seq,
            hex::encode(cp.head)
        ),
    )
    .unwrap();
    // The fields alone are the parent's word: refused, even though they are right.
    let e = cli::verify(&path, Some(&file)).unwrap_err();
    assert!(e.to_string().contains("no attestation document"), "{e}");
    std::fs::write(&file, "garbage").unwrap();
    assert!(cli::verify(&path, Some(&file)).is_err());
    assert!(cli::verify(&path, Some(&dir.path().join("missing.json"))).is_err());
}

/// Tokens found outside the broker: each must be this issuer's and have its own row.
#[tokio::test]
async fn found_tokens_are_checked_against_their_rows() {
    use agentkeys_attestation::jwks::parse_jwks;
    use agentkeys_broker::audit::verify::tokens::{check_tokens, read_tokens, FoundToken};
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let store = SqliteAuditStore::open(&path, Default::default()).unwrap();
    let mut enclave = support::FakeEnclave::new(EPOCH);
    let recorded = enclave.mint();
    store
        .append(NewAuditRow::new(AuditEvent::MintJwt, Outcome::Success).signed(&recorded))
        .await
        .unwrap();
    // Signed by the enclave, never recorded.
    let unrecorded = enclave.mint();
    store.close();
    let jwks = parse_jwks(enclave.jwks().as_bytes()).unwrap();
    let mut forged_signature = recorded.jwt.clone();
    forged_signature.pop();
    forged_signature.push(if recorded.jwt.ends_with('A') {
        'B'
    } else {
        'A'
    });
    // Another token the enclave key signed at seq 1, not the one the row records.
    let other_at_seq_1 = enclave.sign(&enclave.signing_input(support::WALLET, 1, 5));
    let found = |jwt: &str, n: usize| FoundToken {
        source: format!("found:{n}"),
        jwt: jwt.to_owned(),
    };
    let tokens = [
        found(&recorded.jwt, 1),
        found(&unrecorded.jwt, 2),
        found(&forged_signature, 3),
        found(&other_at_seq_1, 4),
        found("not-a-token", 5),
    ];
    let mut report = verify_chain(&path, None).unwrap();
    let accounted = check_tokens(&path, &tokens, &jwks, &mut report).unwrap();
    assert_eq!(accounted, 1);
    let failures: Vec<String> = report.failures.iter().map(|f| f.to_string()).collect();
    assert_eq!(
        report.failures[0],
        VerifyFailure::TokenWithoutRow {
            source: "found:2".into(),
            epoch: EPOCH,
            seq: 2
        }
    );
    assert!(
        matches!(&report.failures[1], VerifyFailure::TokenInvalid { source, reason }
            if source == "found:3" && reason.contains("signature does not verify")),
        "{failures:?}"
    );
    assert_eq!(
        report.failures[2],
        VerifyFailure::TokenDisagrees {
            source: "found:4".into(),
            id: 1
        }
    );
    assert!(
        matches!(&report.failures[3], VerifyFailure::TokenInvalid { source, .. } if source == "found:5"),
        "{failures:?}"
    );
    assert_eq!(report.failures.len(), 4, "{failures:?}");

    // The file form: one token per line, comments and blank lines skipped; a file with no
    // token is an error, not a pass.
    let file = dir.path().join("tokens.txt");
    std::fs::write(
        &file,
        format!("# kept by a relying party\n\n{}\n", recorded.jwt),
    )
    .unwrap();
    let read = read_tokens(&file).unwrap();
    assert_eq!(
        read,
        [found(&recorded.jwt, 3)].map(|mut t| {
            t.source = format!("{}:3", file.display());
            t
        })
    );
    std::fs::write(&file, "# nothing\n").unwrap();
    assert!(read_tokens(&file)
        .unwrap_err()
        .to_string()
        .contains("holds no token"));
}
