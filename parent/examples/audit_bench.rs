//! Audit store throughput: one commit per row versus group commit.
//!
//! `cargo run --release -p agentkeys-broker --example audit_bench [-- DIR [SECONDS]]`
//!
//! Phase 1: one appender, each row its own transaction (WAL, `synchronous=FULL`).
//! Phase 2: 64 concurrent appenders sharing commits. Prints rows/s, rows per commit and
//! the ratio. DIR defaults to a fresh temporary directory (use the disk the broker uses).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentkeys_broker::audit::{AuditEvent, AuditStore, NewAuditRow, Outcome, SqliteAuditStore};

const APPENDERS: usize = 64;

fn row(i: u64) -> NewAuditRow {
    NewAuditRow::new(AuditEvent::MintJwt, Outcome::Success)
        .bearer("benchmark-bearer")
        .wallet("0x00000000000000000000000000000000000000aa")
        .token_ids("kid", format!("jti-{i}"))
        .enclave(1, i, [7; 32], [9; 32])
        .status(200)
}

async fn phase(store: Arc<SqliteAuditStore>, appenders: usize, secs: f64) -> (u64, u64, f64) {
    let before = store.stats();
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..appenders {
        let (s, stop, count) = (Arc::clone(&store), Arc::clone(&stop), Arc::clone(&count));
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let n = count.fetch_add(1, Ordering::Relaxed);
                s.append(row(n)).await.expect("append");
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("task");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = store.stats();
    (
        after.rows - before.rows,
        after.commits - before.commits,
        elapsed,
    )
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let tmp;
    let dir = match args.next() {
        Some(d) => PathBuf::from(d),
        None => {
            tmp = tempfile::tempdir().expect("tempdir");
            tmp.path().to_path_buf()
        }
    };
    let secs: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let path = dir.join(format!("audit-bench-{}.db", std::process::id()));
    let store = Arc::new(SqliteAuditStore::open(&path, Default::default()).expect("open"));

    let (rows1, commits1, t1) = phase(Arc::clone(&store), 1, secs).await;
    let single = rows1 as f64 / t1;
    println!(
        "single commit : {rows1} rows, {commits1} commits in {t1:.2}s = {single:.0} rows/s ({:.0} commits/s)",
        commits1 as f64 / t1
    );
    let (rows2, commits2, t2) = phase(Arc::clone(&store), APPENDERS, secs).await;
    let grouped = rows2 as f64 / t2;
    println!(
        "group commit  : {rows2} rows, {commits2} commits in {t2:.2}s = {grouped:.0} rows/s ({:.0} commits/s, {:.1} rows/commit, {APPENDERS} appenders)",
        commits2 as f64 / t2,
        rows2 as f64 / commits2.max(1) as f64
    );
    println!("ratio grouped/single: {:.1}x", grouped / single);
    let report = agentkeys_broker::audit::verify_chain(&path, None).expect("verify");
    println!(
        "verify: {} rows, ok={}",
        report.rows_checked,
        report.is_ok()
    );
    store.close();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}
