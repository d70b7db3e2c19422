//! The PostgreSQL schema: versioned migrations applied (or checked) at start, the
//! append-only triggers, and the checks that refuse a server or a table the broker cannot
//! trust.

use tokio_postgres::{Client, GenericClient};

use super::PgError;

/// The schema version this build writes (`MAX(version)` of `agentkeys_audit_schema`).
pub const PG_SCHEMA_VERSION: i32 = 1;

/// Schema version 1. One table holds the rows of every host: each broker appends to its own
/// row chain (`chain_id`), numbered 1, 2, 3, … by `chain_seq`, so the primary key
/// `(chain_id, chain_seq)` never makes two hosts wait for each other, and a second writer
/// of one chain fails on a duplicate key instead of forking it. u64 values (`enclave_epoch`,
/// `enclave_seq`) are stored bit-for-bit in BIGINT, as in the SQLite store; hashes are the 32
/// raw bytes. The trigger function refuses UPDATE and DELETE row by row and TRUNCATE per
/// statement, whoever the role (a superuser can still drop the triggers: that is what
/// `audit verify` and the enclave's checkpoints are for).
const SCHEMA_V1: &str = "
CREATE TABLE agentkeys_audit_schema (
    version       INTEGER PRIMARY KEY,
    applied_at_ms BIGINT  NOT NULL
);
CREATE TABLE audit_log (
    chain_id      TEXT     NOT NULL CHECK (octet_length(chain_id) BETWEEN 1 AND 253),
    chain_seq     BIGINT   NOT NULL CHECK (chain_seq >= 1),
    ts_ms         BIGINT   NOT NULL,
    event         TEXT     NOT NULL,
    outcome       TEXT     NOT NULL,
    bearer_sha256 BYTEA    CHECK (octet_length(bearer_sha256) = 32),
    wallet        TEXT,
    kid           TEXT,
    jti           TEXT,
    enclave_epoch BIGINT,
    enclave_seq   BIGINT,
    jwt_sha256    BYTEA    CHECK (octet_length(jwt_sha256) = 32),
    enclave_head  BYTEA    CHECK (octet_length(enclave_head) = 32),
    signing_input TEXT,
    row_format    SMALLINT NOT NULL,
    status        INTEGER,
    detail        TEXT     NOT NULL,
    prev_hash     BYTEA    NOT NULL CHECK (octet_length(prev_hash) = 32),
    row_hash      BYTEA    NOT NULL CHECK (octet_length(row_hash) = 32),
    PRIMARY KEY (chain_id, chain_seq)
);
CREATE INDEX audit_log_enclave ON audit_log (enclave_epoch, enclave_seq);
CREATE FUNCTION agentkeys_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION agentkeys_audit_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION agentkeys_audit_append_only();
CREATE TRIGGER agentkeys_audit_schema_no_update_delete BEFORE UPDATE OR DELETE
    ON agentkeys_audit_schema FOR EACH ROW EXECUTE FUNCTION agentkeys_audit_append_only();
CREATE TRIGGER agentkeys_audit_schema_no_truncate BEFORE TRUNCATE ON agentkeys_audit_schema
    FOR EACH STATEMENT EXECUTE FUNCTION agentkeys_audit_append_only();
";

/// The migrations, in order: entry `i` takes version `i` to `i + 1` (version 0 is a
/// database without the schema).
const MIGRATIONS: [&str; 1] = [SCHEMA_V1];

/// The advisory lock key that serializes migrations between hosts starting together
/// ("agentkeys" in ASCII, as a number: any fixed value no other application uses).
const MIGRATION_LOCK: i64 = 0x6167_656e_746b_6579;

/// `audit_log`'s columns as this build expects them: name, `information_schema` data type,
/// nullable. A table someone altered (a column added, dropped, retyped or made nullable) is
/// refused at start rather than written into.
const EXPECTED_COLUMNS: [(&str, &str, bool); 19] = [
    ("chain_id", "text", false),
    ("chain_seq", "bigint", false),
    ("ts_ms", "bigint", false),
    ("event", "text", false),
    ("outcome", "text", false),
    ("bearer_sha256", "bytea", true),
    ("wallet", "text", true),
    ("kid", "text", true),
    ("jti", "text", true),
    ("enclave_epoch", "bigint", true),
    ("enclave_seq", "bigint", true),
    ("jwt_sha256", "bytea", true),
    ("enclave_head", "bytea", true),
    ("signing_input", "text", true),
    ("row_format", "smallint", false),
    ("status", "integer", true),
    ("detail", "text", false),
    ("prev_hash", "bytea", false),
    ("row_hash", "bytea", false),
];

/// The triggers that make `audit_log` append-only; each must exist and be enabled.
const APPEND_ONLY_TRIGGERS: [&str; 2] = ["audit_log_no_update_delete", "audit_log_no_truncate"];

/// The `synchronous_commit` values under which a commit returns only once its WAL is
/// flushed to disk (`on`, and the two that add a standby's confirmation). `local` is
/// refused as well as `off`: with synchronous standbys configured, `local` acknowledges
/// before a standby has the row, which a failover then loses.
const DURABLE_SYNCHRONOUS_COMMIT: [&str; 3] = ["on", "remote_write", "remote_apply"];

/// Refuses a server whose commits are not durable when they return: `synchronous_commit`
/// must be one of [`DURABLE_SYNCHRONOUS_COMMIT`] and `fsync` on.
pub async fn check_durability(client: &Client) -> Result<(), PgError> {
    let row = client
        .query_one(
            "SELECT current_setting('synchronous_commit'), current_setting('fsync')",
            &[],
        )
        .await
        .map_err(PgError::query("reading synchronous_commit and fsync"))?;
    let synchronous_commit: String = row.get(0);
    let fsync: String = row.get(1);
    if !DURABLE_SYNCHRONOUS_COMMIT.contains(&synchronous_commit.as_str()) {
        return Err(PgError::NotDurable {
            setting: "synchronous_commit",
            value: synchronous_commit,
        });
    }
    if fsync != "on" {
        return Err(PgError::NotDurable {
            setting: "fsync",
            value: fsync,
        });
    }
    Ok(())
}

/// The schema version found: `None` for a database without the schema.
async fn found_version(client: &impl GenericClient) -> Result<Option<i32>, PgError> {
    let row = client
        .query_one(
            "SELECT to_regclass('agentkeys_audit_schema') IS NOT NULL, \
                    to_regclass('audit_log') IS NOT NULL",
            &[],
        )
        .await
        .map_err(PgError::query("looking for the schema"))?;
    let (has_versions, has_log): (bool, bool) = (row.get(0), row.get(1));
    match (has_versions, has_log) {
        (false, false) => Ok(None),
        (false, true) => Err(PgError::Altered(
            "a table audit_log exists without agentkeys_audit_schema: it was not created by \
             this broker"
                .into(),
        )),
        (true, _) => {
            let row = client
                .query_one("SELECT MAX(version) FROM agentkeys_audit_schema", &[])
                .await
                .map_err(PgError::query("reading the schema version"))?;
            Ok(Some(row.get::<_, Option<i32>>(0).unwrap_or(0)))
        }
    }
}

/// Checks the schema version: `Ok(true)` when current, `Ok(false)` when older (or absent),
/// an error when newer than this build.
async fn is_current(client: &Client) -> Result<bool, PgError> {
    match found_version(client).await? {
        Some(v) if v > PG_SCHEMA_VERSION => Err(PgError::NewerSchema {
            found: v,
            supported: PG_SCHEMA_VERSION,
        }),
        Some(v) => Ok(v == PG_SCHEMA_VERSION),
        None => Ok(false),
    }
}

/// Brings the schema to [`PG_SCHEMA_VERSION`] when `migrate` (one transaction under an
/// advisory lock, so hosts starting together migrate once), or only checks it is current
/// otherwise; then checks the table has not been altered. A role without the right to
/// create tables gets [`PgError::Migrate`] naming the privilege.
pub async fn prepare(client: &mut Client, migrate: bool) -> Result<(), PgError> {
    if is_current(client).await? {
        return check_shape(client).await;
    }
    if !migrate {
        return Err(PgError::NoSchema {
            found: found_version(client).await?.unwrap_or(0),
            supported: PG_SCHEMA_VERSION,
        });
    }
    let tx = client
        .transaction()
        .await
        .map_err(PgError::query("beginning the migration"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(PgError::query("taking the migration lock"))?;
    // Another host may have migrated while this one waited for the lock.
    let from = found_version(&tx).await?.unwrap_or(0);
    if from > PG_SCHEMA_VERSION {
        return Err(PgError::NewerSchema {
            found: from,
            supported: PG_SCHEMA_VERSION,
        });
    }
    let from_index = usize::try_from(from).unwrap_or(0);
    for (version, migration) in MIGRATIONS.iter().enumerate().skip(from_index) {
        tx.batch_execute(migration)
            .await
            .map_err(PgError::migrate)?;
        let to = i32::try_from(version + 1).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO agentkeys_audit_schema (version, applied_at_ms) VALUES ($1, $2)",
            &[&to, &super::row_timestamp_ms()],
        )
        .await
        .map_err(PgError::migrate)?;
        tracing::info!(from = version, to, "PostgreSQL audit schema migrated");
    }
    tx.commit().await.map_err(PgError::migrate)?;
    check_shape(client).await
}

/// Refuses an `audit_log` whose columns differ from [`EXPECTED_COLUMNS`] or whose
/// append-only triggers are missing or disabled.
pub async fn check_shape(client: &Client) -> Result<(), PgError> {
    let rows = client
        .query(
            "SELECT column_name::text, data_type::text, is_nullable::text = 'YES' \
             FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = 'audit_log' \
             ORDER BY ordinal_position",
            &[],
        )
        .await
        .map_err(PgError::query("reading audit_log's columns"))?;
    let found: Vec<(String, String, bool)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    for (name, data_type, nullable) in EXPECTED_COLUMNS {
        match found.iter().find(|(n, _, _)| n == name) {
            None => return Err(PgError::Altered(format!("column {name} is missing"))),
            Some((_, t, n)) if t != data_type || *n != nullable => {
                return Err(PgError::Altered(format!(
                    "column {name} is {t}{}, expected {data_type}{}",
                    if *n { " NULL" } else { " NOT NULL" },
                    if nullable { " NULL" } else { " NOT NULL" },
                )))
            }
            Some(_) => {}
        }
    }
    if let Some((extra, _, _)) = found
        .iter()
        .find(|(n, _, _)| !EXPECTED_COLUMNS.iter().any(|(e, _, _)| e == n))
    {
        return Err(PgError::Altered(format!("unexpected column {extra}")));
    }
    let triggers = client
        .query(
            "SELECT tgname::text FROM pg_trigger \
             WHERE tgrelid = 'audit_log'::regclass AND tgenabled IN ('O', 'A')",
            &[],
        )
        .await
        .map_err(PgError::query("reading audit_log's triggers"))?;
    let enabled: Vec<String> = triggers.iter().map(|r| r.get(0)).collect();
    for name in APPEND_ONLY_TRIGGERS {
        if !enabled.iter().any(|t| t == name) {
            return Err(PgError::Altered(format!(
                "the append-only trigger {name} is missing or disabled"
            )));
        }
    }
    Ok(())
}
