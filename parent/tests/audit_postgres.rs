//! The PostgreSQL audit store against a real server: durability refused when the server
//! would lose commits, the append-only triggers, the INSERT/SELECT-only role, the schema
//! checks at start, per-host chains, and a server stopped and restarted under the broker.

mod support;
mod support_pg;

use std::sync::Arc;
use std::time::Duration;

use agentkeys_broker::audit::{
    verify::verify_pg, AuditDb, AuditError, AuditEvent, AuditStore, GroupCommitConfig, NewAuditRow,
    Outcome, PgAuditStore, PgError, PgUrl, VerifyFailure,
};
use support_pg::PgCluster;
use tokio_postgres::NoTls;

/// The SQL docs/fleet.md gives for the broker's role: INSERT and SELECT, nothing else.
const BROKER_ROLE_SQL: &str = "
CREATE ROLE agentkeys_broker LOGIN PASSWORD 'broker-pw';
GRANT CONNECT ON DATABASE postgres TO agentkeys_broker;
GRANT USAGE ON SCHEMA public TO agentkeys_broker;
GRANT SELECT, INSERT ON audit_log, agentkeys_audit_schema TO agentkeys_broker;
";

fn pg_url(s: &str) -> PgUrl {
    match AuditDb::parse(s).unwrap() {
        AuditDb::Postgres { url, .. } => url,
        other => panic!("not postgres: {other:?}"),
    }
}

async fn admin(cluster: &PgCluster) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&cluster.admin_url("postgres"), NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

async fn open(cluster: &PgCluster, chain: &str) -> Result<PgAuditStore, AuditError> {
    PgAuditStore::open(
        &pg_url(&cluster.admin_url("postgres")),
        chain,
        GroupCommitConfig::default(),
    )
    .await
}

fn row(i: usize) -> NewAuditRow {
    NewAuditRow::new(AuditEvent::AuthFailed, Outcome::Failure)
        .status(401)
        .detail(format!("row {i}"))
}

/// `(chain_seq, prev_hash, row_hash)` of every row of `chain`, in order.
async fn chain_rows(c: &tokio_postgres::Client, chain: &str) -> Vec<(i64, Vec<u8>, Vec<u8>)> {
    c.query(
        "SELECT chain_seq, prev_hash, row_hash FROM audit_log WHERE chain_id = $1 ORDER BY chain_seq",
        &[&chain],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

fn assert_linked(rows: &[(i64, Vec<u8>, Vec<u8>)], n: usize) {
    assert_eq!(rows.len(), n);
    for (i, (seq, prev, _)) in rows.iter().enumerate() {
        assert_eq!(*seq, i as i64 + 1);
        if i == 0 {
            assert_eq!(prev, &vec![0u8; 32]);
        } else {
            assert_eq!(prev, &rows[i - 1].2, "row {seq} links to its predecessor");
        }
    }
}

#[tokio::test]
async fn concurrent_appends_share_commits_and_each_host_keeps_its_own_chain() {
    let Some(cluster) = PgCluster::start_or_skip() else {
        return;
    };
    let a = Arc::new(open(&cluster, "host-a").await.unwrap());
    let b = Arc::new(open(&cluster, "host-b").await.unwrap());
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move { store.append(row(i)).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert!(a.stats().commits < 100, "group commit: {:?}", a.stats());
    assert_eq!(a.stats().rows + b.stats().rows, 200);
    let c = admin(&cluster).await;
    assert_linked(&chain_rows(&c, "host-a").await, 100);
    assert_linked(&chain_rows(&c, "host-b").await, 100);
}

#[tokio::test]
async fn a_second_broker_on_one_chain_is_refused_and_a_reopened_chain_continues() {
    let Some(cluster) = PgCluster::start_or_skip() else {
        return;
    };
    let a = open(&cluster, "host-a").await.unwrap();
    a.append(row(1)).await.unwrap();
    let err = open(&cluster, "host-a").await.unwrap_err();
    assert!(
        matches!(err, AuditError::Postgres(PgError::ChainInUse { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("--audit-chain"), "{err}");
    a.shutdown(Duration::from_secs(5)).await;
    drop(a);
    let again = open(&cluster, "host-a").await.unwrap();
    let receipt = again.append(row(2)).await.unwrap();
    assert_eq!(receipt.id, 2);
    assert_linked(&chain_rows(&admin(&cluster).await, "host-a").await, 2);
}

#[tokio::test]
async fn the_table_refuses_update_delete_and_truncate_even_to_the_superuser() {
    let Some(cluster) = PgCluster::start_or_skip() else {
        return;
    };
    let store = open(&cluster, "host-a").await.unwrap();
    store.append(row(1)).await.unwrap();
    let c = admin(&cluster).await;
    for sql in [
        "UPDATE audit_log SET detail = 'x'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
        "DELETE FROM agentkeys_audit_schema",
    ] {
        let e = c.batch_execute(sql).await.unwrap_err();
        let db = e.as_db_error().expect("a server error");
        assert!(
            db.message().contains("append-only"),
            "{sql}: {}",
            db.message()
        );
    }
    assert_eq!(chain_rows(&c, "host-a").await.len(), 1);
}

#[tokio::test]
async fn the_insert_select_role_appends_but_cannot_update_or_create_the_schema() {
    let Some(cluster) = PgCluster::start_or_skip() else {
        return;
    };
    let c = admin(&cluster).await;
    c.batch_execute(
        "CREATE ROLE agentkeys_broker LOGIN PASSWORD 'broker-pw';
         REVOKE CREATE ON SCHEMA public FROM PUBLIC;",
    )
    .await
    .unwrap();
    let broker_url = pg_url(&cluster.url("agentkeys_broker", "broker-pw", "postgres"));
    // Without the schema, the restricted role cannot create it: named at start.
    let err = PgAuditStore::open(&broker_url, "host-a", Default::default())
        .await
        .unwrap_err();
    let m = err.to_string();
    assert!(m.contains("may not create the schema"), "{m}");
    // The owner applies it once; then the role's grants are enough.
    open(&cluster, "owner")
        .await
        .unwrap()
        .shutdown(Duration::from_secs(5))
        .await;
    c.batch_execute("DROP ROLE agentkeys_broker").await.unwrap();
    c.batch_execute(BROKER_ROLE_SQL).await.unwrap();
    let store = PgAuditStore::open(&broker_url, "host-a", Default::default())
        .await
        .unwrap();
    store.append(row(1)).await.unwrap();
    let (role, conn) = tokio_postgres::connect(
        &cluster.url("agentkeys_broker", "broker-pw", "postgres"),
        NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let n: i64 = role
        .query_one("SELECT count(*) FROM audit_log", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    for sql in [
        "UPDATE audit_log SET detail = 'x'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
        "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete",
        "DROP TABLE audit_log",
    ] {
        let e = role.batch_execute(sql).await.unwrap_err();
        let db = e.as_db_error().expect("a server error");
        assert!(
            db.message().contains("permission denied") || db.message().contains("must be owner"),
            "{sql}: {}",
            db.message()
        );
    }
}

#[tokio::test]
async fn a_server_that_would_lose_commits_is_refused_at_start() {
    let Some(cluster) = PgCluster::start_or_skip() else {
        return;
    };
    let c = admin(&cluster).await;
    for value in ["off", "local"] {
        c.batch_execute(&format!(
            "ALTER DATABASE postgres SET synchronous_commit = {value}"
        ))
        .await
        .unwrap();
        let err = open(&cluster, "host-a").await.unwrap_err();
        assert!(
            matches!(&err, AuditError::Postgres(PgError::NotDurable { setting: "synchronous_commit", value: v }) if v == value),
            "{value}: {err:?}"
        );
        assert!(
            err.to_string()
                .contains(&format!("synchronous_commit = {value}")),
            "{err}"
        );
    }
    c.batch_execute("ALTER DATABASE postgres RESET synchronous_commit")
        .await
        .unwrap();
    open(&cluster, "host-a").await.unwrap();
}

#[tokio::test]
async fn bad_databases_are_named_at_start() {
    let Some(cluster) = PgCluster::start_or_skip() else {
        return;
    };
    // Wrong credentials.
    let err = PgAuditStore::open(
        &pg_url(&cluster.url("postgres", "wrong", "postgres")),
        "host-a",
        Default::default(),
    )
    .await
    .unwrap_err();
    let m = err.to_string();
    assert!(
        m.contains("cannot connect to PostgreSQL") && m.contains("password authentication failed"),
        "{m}"
    );
    assert!(!m.contains("wrong@"), "the password is not repeated: {m}");
    // Nothing listening.
    let err = PgAuditStore::open(
        &pg_url("postgres://u:p@127.0.0.1:1/db"),
        "host-a",
        Default::default(),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("cannot connect to PostgreSQL"),
        "{err}"
    );

    let c = admin(&cluster).await;
    // A table of the same name that this broker did not create.
    for db in ["foreign_db", "newer_db", "altered_db", "untriggered_db"] {
        c.batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .unwrap();
    }
    let at = |db: &str| pg_url(&cluster.admin_url(db));
    let (f, conn) = tokio_postgres::connect(&cluster.admin_url("foreign_db"), NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    f.batch_execute("CREATE TABLE audit_log (id int)")
        .await
        .unwrap();
    let err = PgAuditStore::open(&at("foreign_db"), "h", Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, AuditError::Postgres(PgError::Altered(_))),
        "{err:?}"
    );

    // A schema of a newer version.
    drop(
        PgAuditStore::open(&at("newer_db"), "h", Default::default())
            .await
            .unwrap(),
    );
    let (n, conn) = tokio_postgres::connect(&cluster.admin_url("newer_db"), NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    n.batch_execute("INSERT INTO agentkeys_audit_schema VALUES (99, 0)")
        .await
        .unwrap();
    let err = PgAuditStore::open(&at("newer_db"), "h2", Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            AuditError::Postgres(PgError::NewerSchema { found: 99, .. })
        ),
        "{err:?}"
    );

    // A table someone altered, and a trigger someone dropped.
    for (db, sql, expect) in [
        (
            "altered_db",
            "ALTER TABLE audit_log ADD COLUMN note text",
            "unexpected column note",
        ),
        (
            "untriggered_db",
            "DROP TRIGGER audit_log_no_truncate ON audit_log",
            "audit_log_no_truncate",
        ),
    ] {
        drop(
            PgAuditStore::open(&at(db), "h", Default::default())
                .await
                .unwrap(),
        );
        let (a, conn) = tokio_postgres::connect(&cluster.admin_url(db), NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        a.batch_execute(sql).await.unwrap();
        let err = PgAuditStore::open(&at(db), "h2", Default::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, AuditError::Postgres(PgError::Altered(m)) if m.contains(expect)),
            "{db}: {err:?}"
        );
    }
}

#[tokio::test]
async fn a_stopped_server_refuses_appends_names_the_cause_and_is_rejoined_without_restart() {
    let Some(mut cluster) = PgCluster::start_or_skip() else {
        return;
    };
    let store = open(&cluster, "host-a").await.unwrap();
    store.append(row(1)).await.unwrap();
    store.healthy().await.unwrap();

    cluster.stop_server();
    let err = store.append(row(2)).await.unwrap_err();
    // The server closed the connection: an outage (503 to a mint), not a failed commit.
    assert!(matches!(err, AuditError::Unreachable { .. }), "{err:?}");
    // A withheld row waits for the server.
    store.queue_withheld(row(3));
    let unhealthy = store.healthy().await.unwrap_err().to_string();
    assert!(unhealthy.contains("PostgreSQL"), "{unhealthy}");
    // Refusals while down are immediate (no connect timeout per append).
    let started = std::time::Instant::now();
    for i in 0..20 {
        assert!(store.append(row(10 + i)).await.is_err());
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    cluster.start_server();
    let mut recovered = None;
    for _ in 0..100 {
        if let Ok(r) = store.append(row(4)).await {
            recovered = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let receipt = recovered.expect("the store reconnected by itself");
    store.healthy().await.unwrap();
    assert_eq!(store.pending_withheld(), 0);
    // Row 1, the withheld row, then row 4: nothing refused was written.
    assert_eq!(receipt.id, 3);
    let c = admin(&cluster).await;
    assert_linked(&chain_rows(&c, "host-a").await, 3);
    let events: Vec<String> = c
        .query("SELECT event FROM audit_log ORDER BY chain_seq", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(events, ["auth_failed", "mint_withheld", "auth_failed"]);
}

/// A signed-token row of `enclave`'s next seq.
fn minted(enclave: &mut support::FakeEnclave) -> NewAuditRow {
    NewAuditRow::new(AuditEvent::MintJwt, Outcome::Success)
        .signed(&enclave.mint())
        .status(200)
}

#[tokio::test]
async fn verify_walks_every_chain_against_its_own_checkpoint_and_names_the_chain() {
    let Some(cluster) = PgCluster::start_or_skip() else {
        return;
    };
    let url = pg_url(&cluster.admin_url("postgres"));
    let a = open(&cluster, "host-a").await.unwrap();
    let b = open(&cluster, "host-b").await.unwrap();
    let mut enclave_a = support::FakeEnclave::new(7);
    let mut enclave_b = support::FakeEnclave::new(8);
    for i in 0..6 {
        a.append(minted(&mut enclave_a)).await.unwrap();
        b.append(minted(&mut enclave_b)).await.unwrap();
        a.append(row(i)).await.unwrap();
    }
    let checkpoints = [enclave_a.checkpoint(), enclave_b.checkpoint()];
    let report = verify_pg(&url, &checkpoints).await.unwrap();
    assert!(report.is_ok(), "{}", report.render());
    assert_eq!(report.rows_checked, 18);
    let chains: Vec<(&str, u64, usize)> = report
        .chains
        .iter()
        .map(|c| (c.chain.as_str(), c.rows, c.checkpoints.len()))
        .collect();
    assert_eq!(chains, [("host-a", 12, 1), ("host-b", 6, 1)]);
    assert!(report.chains.iter().all(|c| c.checkpoints[0].matched));
    let text = report.render();
    assert!(
        text.contains("chain host-a: 12 rows") && text.contains("result: OK"),
        "{text}"
    );

    // The enclave of host-a signed a token whose row never landed: named in host-a.
    enclave_a.mint();
    let checkpoints = [enclave_a.checkpoint(), enclave_b.checkpoint()];
    let report = verify_pg(&url, &checkpoints).await.unwrap();
    assert_eq!(
        report.failures,
        [VerifyFailure::InChain {
            chain: "host-a".into(),
            failure: Box::new(VerifyFailure::MissingSeqs {
                epoch: 7,
                from: 7,
                to: 7
            }),
        }],
        "{}",
        report.render()
    );

    // A row of host-b edited by someone who dropped the triggers: named in host-b.
    let c = admin(&cluster).await;
    c.batch_execute(
        "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete;
         UPDATE audit_log SET status = 201 WHERE chain_id = 'host-b' AND chain_seq = 3;",
    )
    .await
    .unwrap();
    let report = verify_pg(&url, &[]).await.unwrap();
    assert!(
        matches!(
            report.failures.as_slice(),
            [VerifyFailure::InChain { chain, failure }]
                if chain == "host-b" && matches!(**failure, VerifyFailure::RowHashMismatch { id: 3, .. })
        ),
        "{}",
        report.render()
    );
    assert!(report.render().contains("chain host-b: row 3 was edited"));
}

#[tokio::test]
async fn verify_refuses_a_database_without_the_schema() {
    let Some(cluster) = PgCluster::start_or_skip() else {
        return;
    };
    let err = verify_pg(&pg_url(&cluster.admin_url("postgres")), &[])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("holds no audit log"), "{err}");
}

#[test]
fn a_cluster_that_cannot_start_is_skipped_unless_postgres_is_required() {
    let reason = || Err("no server binaries".to_string());
    assert!(support_pg::skip_unless_required(reason(), false).is_none());
    let required = std::panic::catch_unwind(|| support_pg::skip_unless_required(reason(), true));
    let Err(message) = required else {
        panic!("required: a failure, not a skip");
    };
    let text = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        text.contains("AGENTKEYS_REQUIRE_POSTGRES=1") && text.contains("no server binaries"),
        "{text}"
    );
}
