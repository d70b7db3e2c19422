//! Audit append cost with `synchronous=FULL`: one append at a time (a commit per row)
//! versus 64 concurrent appends sharing commits (group commit), and a single row's
//! hash-chain computation. Mint throughput is bounded by the grouped figure.

use std::sync::Arc;
use std::time::Instant;

use agentkeys_broker::audit::{
    AuditEvent, AuditStore, GroupCommitConfig, NewAuditRow, Outcome, SqliteAuditStore,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// Concurrent appends in the grouped case (the benchmark's default connection count).
const CONCURRENT: usize = 64;

fn mint_row(i: u64) -> NewAuditRow {
    NewAuditRow::new(AuditEvent::MintJwt, Outcome::Success)
        .bearer("bench-bearer")
        .wallet("0x00000000000000000000000000000000be7c0001")
        .token_ids(
            "Zk0aPZVw2T7VxS0eW2lQj9eXb8yVQm6iKxqJm0n3cF8",
            format!("{i:032x}"),
        )
        .enclave(7, i, [3; 32], [4; 32])
        .status(200)
}

fn bench_append(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteAuditStore::open(&dir.path().join("audit.db"), GroupCommitConfig::default()).unwrap(),
    );
    let mut seq = 0u64;
    let mut g = c.benchmark_group("audit_append_sync_full");
    g.throughput(Throughput::Elements(1));
    g.bench_function("single", |b| {
        b.iter_custom(|iters| {
            let store = store.clone();
            let first = seq;
            seq += iters;
            rt.block_on(async move {
                let start = Instant::now();
                for i in 0..iters {
                    store.append(mint_row(first + i)).await.unwrap();
                }
                start.elapsed()
            })
        })
    });
    g.throughput(Throughput::Elements(CONCURRENT as u64));
    g.bench_function(format!("grouped{CONCURRENT}"), |b| {
        b.iter_custom(|iters| {
            let store = store.clone();
            let first = seq;
            seq += iters * CONCURRENT as u64;
            rt.block_on(async move {
                let start = Instant::now();
                for i in 0..iters {
                    let base = first + i * CONCURRENT as u64;
                    let appends = (0..CONCURRENT as u64).map(|k| store.append(mint_row(base + k)));
                    for r in futures::future::join_all(appends).await {
                        r.unwrap();
                    }
                }
                start.elapsed()
            })
        })
    });
    g.finish();
    let stats = store.stats();
    eprintln!(
        "audit store: {} rows in {} commits ({:.1} rows per commit)",
        stats.rows,
        stats.commits,
        stats.rows as f64 / stats.commits.max(1) as f64
    );
}

criterion_group!(benches, bench_append);
criterion_main!(benches);
