//! Rows acknowledged before a `kill -9` of the appending process are all present after.
//!
//! The test binary re-runs itself as the child (selected by an environment variable):
//! the child appends from many tasks and prints `ACK <id> <row_hash>` after each
//! acknowledged append; the parent kills it with SIGKILL mid-stream and checks the file.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentkeys_broker::audit::{
    verify_chain, AuditEvent, AuditStore, NewAuditRow, Outcome, SqliteAuditStore,
};
use agentkeys_broker::cli::audit as cli;

const CHILD_DB_ENV: &str = "AGENTKEYS_AUDIT_DURABILITY_CHILD_DB";
const TEST_NAME: &str = "acknowledged_rows_survive_kill_9";

fn child(db: &Path) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store: Arc<dyn AuditStore> =
            Arc::new(SqliteAuditStore::open(db, Default::default()).unwrap());
        let mut tasks = Vec::new();
        for t in 0..16 {
            let s = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                for i in 0u64.. {
                    let r = NewAuditRow::new(AuditEvent::AuthFailed, Outcome::Failure)
                        .detail(format!("task {t} row {i}"));
                    let receipt = s.append(r).await.unwrap();
                    // println! locks stdout per call, so lines do not interleave.
                    println!("ACK {} {}", receipt.id, hex::encode(receipt.row_hash));
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}

#[test]
fn acknowledged_rows_survive_kill_9() {
    if let Some(db) = std::env::var_os(CHILD_DB_ENV) {
        child(Path::new(&db));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let mut proc = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_DB_ENV, &db)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = proc.stdout.take().unwrap();
    let mut acked: Vec<(i64, String)> = Vec::new();
    let started = Instant::now();
    let mut lines = BufReader::new(stdout).lines();
    while acked.len() < 2000 && started.elapsed() < Duration::from_secs(60) {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(rest) = line.strip_prefix("ACK ") {
            let (id, hash) = rest.split_once(' ').unwrap();
            acked.push((id.parse().unwrap(), hash.to_string()));
        }
    }
    // SIGKILL while the child is still appending.
    proc.kill().unwrap();
    let status = proc.wait().unwrap();
    assert!(!status.success());
    // Acknowledgements printed after our last read are also durable; read what is left.
    for line in lines.map_while(Result::ok) {
        if let Some(rest) = line.strip_prefix("ACK ") {
            if let Some((id, hash)) = rest.split_once(' ') {
                if let Ok(id) = id.parse() {
                    acked.push((id, hash.to_string()));
                }
            }
        }
    }
    assert!(
        acked.len() >= 100,
        "the child acknowledged only {}",
        acked.len()
    );

    let report = verify_chain(&db, None).unwrap();
    assert!(report.is_ok(), "{}", report.render());
    let rows = cli::recent_rows(&db, usize::MAX).unwrap();
    let stored: std::collections::HashMap<i64, String> = rows
        .iter()
        .map(|r| (r.id, hex::encode(r.row_hash)))
        .collect();
    for (id, hash) in &acked {
        assert_eq!(
            stored.get(id),
            Some(hash),
            "acknowledged row {id} is missing or different"
        );
    }
    assert!(rows.len() >= acked.len());
}
