//! The SQLite audit store: WAL, `synchronous=FULL`, append-only triggers, one writer
//! thread doing group commit.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use futures::future::BoxFuture;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use tokio::sync::oneshot;

use super::row::{encode_row, row_hash, AuditRow, RowFormat, StoredRow, GENESIS_PREV_HASH};
use super::{
    AuditError, AuditEvent, AuditReceipt, AuditStore, GroupCommitConfig, NewAuditRow, Outcome,
};

/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 2;

/// The oldest schema version this build reads (and migrates when it opens the log to
/// write).
pub(crate) const OLDEST_SCHEMA_VERSION: i64 = 1;

/// Schema version 1. `enclave_epoch`/`enclave_seq` are u64 values stored bit-for-bit in
/// SQLite's signed 64-bit INTEGER. Hashes are lower-case hex.
const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS audit_log (
    id            INTEGER PRIMARY KEY,
    ts_ms         INTEGER NOT NULL,
    event         TEXT    NOT NULL,
    outcome       TEXT    NOT NULL,
    bearer_sha256 TEXT,
    wallet        TEXT,
    kid           TEXT,
    jti           TEXT,
    enclave_epoch INTEGER,
    enclave_seq   INTEGER,
    jwt_sha256    TEXT,
    enclave_head  TEXT,
    status        INTEGER,
    detail        TEXT    NOT NULL,
    prev_hash     TEXT    NOT NULL,
    row_hash      TEXT    NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS audit_log_enclave ON audit_log (enclave_epoch, enclave_seq);
CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: UPDATE refused'); END;
CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: DELETE refused'); END;
CREATE TABLE IF NOT EXISTS audit_probe (x INTEGER) STRICT;
";

/// Schema version 2 over version 1: each row's JWS signing input, and the row format its
/// hash covers (rows written before this migration keep format 1).
const MIGRATE_V1_TO_V2: &str = "
ALTER TABLE audit_log ADD COLUMN signing_input TEXT;
ALTER TABLE audit_log ADD COLUMN row_format INTEGER NOT NULL DEFAULT 1;
";

/// The migrations from each version to the next, in order: entry `i` takes version `i`
/// to `i + 1` (version 0 is an empty database).
const MIGRATIONS: [&str; 2] = [SCHEMA_V1, MIGRATE_V1_TO_V2];

/// The columns of `audit_log` in the order [`row_from_sql`] reads them.
pub(crate) const ROW_COLUMNS: &str = "id, ts_ms, event, outcome, bearer_sha256, wallet, kid, \
     jti, enclave_epoch, enclave_seq, jwt_sha256, enclave_head, status, detail, prev_hash, \
     row_hash, signing_input, row_format";

/// [`ROW_COLUMNS`] of a schema version 1 log, read without migrating it.
const ROW_COLUMNS_V1: &str = "id, ts_ms, event, outcome, bearer_sha256, wallet, kid, \
     jti, enclave_epoch, enclave_seq, jwt_sha256, enclave_head, status, detail, prev_hash, \
     row_hash, NULL, 1";

/// The select list reading rows of a log at schema `version` in [`ROW_COLUMNS`] order.
pub(crate) fn row_columns(version: i64) -> &'static str {
    if version == 1 {
        ROW_COLUMNS_V1
    } else {
        ROW_COLUMNS
    }
}

const INSERT_ROW: &str = "INSERT INTO audit_log (id, ts_ms, event, outcome, bearer_sha256, \
     wallet, kid, jti, enclave_epoch, enclave_seq, jwt_sha256, enclave_head, status, detail, \
     prev_hash, row_hash, signing_input, row_format) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, \
     ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)";

/// How long a reading connection waits for a lock held by another process (e.g.
/// `audit verify` reading while the broker writes) before failing: 5 s is far above any
/// commit.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Counters of a running store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AuditStats {
    /// Transactions committed.
    pub commits: u64,
    /// Rows made durable.
    pub rows: u64,
    /// Transactions that failed (every row in them was answered with an error).
    pub failed_commits: u64,
}

#[derive(Debug, Default)]
struct Shared {
    commits: AtomicU64,
    rows: AtomicU64,
    failed_commits: AtomicU64,
    pending_withheld: AtomicUsize,
    alive: AtomicBool,
}

enum Msg {
    Append {
        row: NewAuditRow,
        ts_ms: i64,
        reply: oneshot::Sender<Result<AuditReceipt, AuditError>>,
    },
    Withheld {
        row: NewAuditRow,
        ts_ms: i64,
    },
    Health {
        reply: oneshot::Sender<Result<(), AuditError>>,
    },
}

/// The SQLite audit store. See the module documentation of [`crate::audit`].
pub struct SqliteAuditStore {
    path: PathBuf,
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SqliteAuditStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteAuditStore")
            .field("path", &self.path)
            .field("stats", &self.stats())
            .finish()
    }
}

/// A row's `ts_ms`: the verifier's clock, as SQLite's signed 64-bit integer.
fn row_timestamp_ms() -> i64 {
    i64::try_from(agentkeys_attestation::now_unix_ms()).unwrap_or(i64::MAX)
}

fn is_not_writable(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(
            rusqlite::ErrorCode::CannotOpen
                | rusqlite::ErrorCode::ReadOnly
                | rusqlite::ErrorCode::PermissionDenied
                | rusqlite::ErrorCode::DiskFull
                | rusqlite::ErrorCode::SystemIoFailure
        )
    )
}

fn open_error(path: &Path, e: rusqlite::Error) -> AuditError {
    if is_not_writable(&e) {
        AuditError::NotWritable {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    } else {
        AuditError::Open {
            path: path.to_path_buf(),
            source: e,
        }
    }
}

impl SqliteAuditStore {
    /// Opens (creating if needed) the database at `path` and starts the writer thread.
    ///
    /// The parent directory must exist and be writable. Sets `journal_mode=WAL` and
    /// `synchronous=FULL`, creates the schema on first use and refuses a newer schema.
    pub fn open(path: &Path, config: GroupCommitConfig) -> Result<SqliteAuditStore, AuditError> {
        let conn = open_writer_connection(path, config.busy_timeout)?;
        let shared = Arc::new(Shared {
            alive: AtomicBool::new(true),
            ..Shared::default()
        });
        let (tx, rx) = mpsc::channel();
        let mut writer = Writer {
            conn,
            rx,
            shared: Arc::clone(&shared),
            max_batch: config.max_batch.max(1),
            retry_interval: config.retry_interval,
            tip: None,
            withheld: Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run())
            .map_err(AuditError::Spawn)?;
        Ok(SqliteAuditStore {
            path: path.to_path_buf(),
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            shared,
        })
    }

    /// The database path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Commit counters.
    pub fn stats(&self) -> AuditStats {
        AuditStats {
            commits: self.shared.commits.load(Ordering::SeqCst),
            rows: self.shared.rows.load(Ordering::SeqCst),
            failed_commits: self.shared.failed_commits.load(Ordering::SeqCst),
        }
    }

    /// Stops the writer after it has answered everything already queued, and waits for it.
    pub fn close(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(handle) = handle {
            // A panicked writer has already answered nothing more; nothing to do.
            let _ = handle.join();
        }
    }

    fn send(&self, msg: Msg) -> Result<(), AuditError> {
        let guard = self.tx.lock().map_err(|_| AuditError::WriterGone)?;
        match guard.as_ref() {
            Some(tx) => tx.send(msg).map_err(|_| AuditError::WriterGone),
            None => Err(AuditError::WriterGone),
        }
    }
}

impl Drop for SqliteAuditStore {
    fn drop(&mut self) {
        self.close();
    }
}

impl AuditStore for SqliteAuditStore {
    fn append(&self, row: NewAuditRow) -> BoxFuture<'_, Result<AuditReceipt, AuditError>> {
        let (reply, rx) = oneshot::channel();
        let sent = self.send(Msg::Append {
            row,
            ts_ms: row_timestamp_ms(),
            reply,
        });
        Box::pin(async move {
            sent?;
            rx.await.map_err(|_| AuditError::WriterGone)?
        })
    }

    fn healthy(&self) -> BoxFuture<'_, Result<(), AuditError>> {
        let (reply, rx) = oneshot::channel();
        let sent = if self.shared.alive.load(Ordering::SeqCst) {
            self.send(Msg::Health { reply })
        } else {
            Err(AuditError::WriterGone)
        };
        Box::pin(async move {
            sent?;
            rx.await.map_err(|_| AuditError::WriterGone)?
        })
    }

    fn queue_withheld(&self, mut row: NewAuditRow) {
        row.event = AuditEvent::MintWithheld;
        row.outcome = Outcome::Failure;
        self.shared.pending_withheld.fetch_add(1, Ordering::SeqCst);
        if self
            .send(Msg::Withheld {
                row,
                ts_ms: row_timestamp_ms(),
            })
            .is_err()
        {
            self.shared.pending_withheld.fetch_sub(1, Ordering::SeqCst);
            tracing::error!("audit writer is not running: a mint_withheld row was lost");
        }
    }

    fn pending_withheld(&self) -> usize {
        self.shared.pending_withheld.load(Ordering::SeqCst)
    }
}

/// Page size of a new audit database. A commit of about 15 rows of ≈ 1.2 KB rewrites
/// the table's last leaf pages, its index leaf and the pages above them: with SQLite's
/// default 4 KiB pages that is about 15 WAL frames (30 `pwrite`s) a commit, with 16 KiB
/// pages about 5, which took about 2 µs of the audit writer's CPU off each mint in the
/// benchmark's interleaved A/B runs (15.7 → 13.7 µs, docs/performance.md).
const NEW_DATABASE_PAGE_SIZE: i64 = 16 * 1024;

fn open_writer_connection(path: &Path, busy_timeout: Duration) -> Result<Connection, AuditError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(AuditError::DirectoryMissing { path: dir });
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| open_error(path, e))?;
    // SQLite silently falls back to read-only when the file cannot be opened for writing.
    if conn
        .is_readonly(rusqlite::DatabaseName::Main)
        .map_err(|e| open_error(path, e))?
    {
        return Err(AuditError::NotWritable {
            path: path.to_path_buf(),
            reason: "the file opened read-only".into(),
        });
    }
    conn.busy_timeout(busy_timeout)
        .map_err(|e| open_error(path, e))?;
    // Takes effect only on a new, empty database (before WAL is switched on); an existing
    // log keeps the page size it was created with.
    conn.pragma_update(None, "page_size", NEW_DATABASE_PAGE_SIZE)
        .map_err(|e| open_error(path, e))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(|e| open_error(path, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(AuditError::NotWal {
            path: path.to_path_buf(),
            actual: mode,
        });
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(|e| open_error(path, e))?;
    init_schema(&conn, path)?;
    Ok(conn)
}

fn init_schema(conn: &Connection, path: &Path) -> Result<(), AuditError> {
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| open_error(path, e))?;
    let result = (|| -> Result<(), AuditError> {
        let found: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| open_error(path, e))?;
        let from = usize::try_from(found)
            .ok()
            .filter(|v| *v <= MIGRATIONS.len())
            .ok_or_else(|| AuditError::UnsupportedSchema {
                path: path.to_path_buf(),
                found,
                supported: SCHEMA_VERSION,
            })?;
        // Every step runs in this one transaction: a failed migration changes nothing.
        for (version, migration) in MIGRATIONS.iter().enumerate().skip(from) {
            conn.execute_batch(migration)
                .map_err(|e| open_error(path, e))?;
            if found > 0 {
                tracing::info!(path = %path.display(), from = version, to = version + 1, "audit log schema migrated");
            }
        }
        if from < MIGRATIONS.len() {
            conn.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(|e| open_error(path, e))?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => conn
            .execute_batch("COMMIT")
            .map_err(|e| open_error(path, e)),
        Err(e) => {
            // The transaction wrote nothing durable; a failed rollback changes nothing.
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// The writer thread's state: it alone owns the write connection.
struct Writer {
    conn: Connection,
    rx: mpsc::Receiver<Msg>,
    shared: Arc<Shared>,
    max_batch: usize,
    retry_interval: Duration,
    /// `(last id, last row_hash)`; `None` after a failure, re-read from the database.
    tip: Option<(i64, [u8; 32])>,
    withheld: Vec<(NewAuditRow, i64)>,
}

type Reply = oneshot::Sender<Result<AuditReceipt, AuditError>>;

impl Writer {
    fn run(&mut self) {
        let mut batch: Vec<(NewAuditRow, i64)> = Vec::with_capacity(self.max_batch);
        let mut replies: Vec<Reply> = Vec::with_capacity(self.max_batch);
        let mut health: Vec<oneshot::Sender<Result<(), AuditError>>> = Vec::new();
        loop {
            let first = match self.rx.recv_timeout(self.retry_interval) {
                Ok(m) => m,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if !self.withheld.is_empty() {
                        // The outcome is visible through pending_withheld(); retried later.
                        let _ = self.commit(&[]);
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            self.accept(first, &mut batch, &mut replies, &mut health);
            while batch.len() < self.max_batch {
                match self.rx.try_recv() {
                    Ok(m) => self.accept(m, &mut batch, &mut replies, &mut health),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() || !self.withheld.is_empty() {
                match self.commit(&batch) {
                    Ok(receipts) => {
                        for (reply, receipt) in replies.drain(..).zip(receipts) {
                            // The appender may have given up waiting; the row is durable anyway.
                            let _ = reply.send(Ok(receipt));
                        }
                    }
                    Err(reason) => {
                        for reply in replies.drain(..) {
                            let _ = reply.send(Err(AuditError::Commit {
                                reason: reason.clone(),
                            }));
                        }
                    }
                }
                batch.clear();
            }
            for reply in health.drain(..) {
                let _ = reply.send(self.probe());
            }
        }
        // Drain what is left so that nobody waits forever.
        for reply in replies.drain(..) {
            let _ = reply.send(Err(AuditError::WriterGone));
        }
        self.shared.alive.store(false, Ordering::SeqCst);
    }

    fn accept(
        &mut self,
        msg: Msg,
        batch: &mut Vec<(NewAuditRow, i64)>,
        replies: &mut Vec<Reply>,
        health: &mut Vec<oneshot::Sender<Result<(), AuditError>>>,
    ) {
        match msg {
            Msg::Append { row, ts_ms, reply } => {
                batch.push((row, ts_ms));
                replies.push(reply);
            }
            Msg::Withheld { row, ts_ms } => self.withheld.push((row, ts_ms)),
            Msg::Health { reply } => health.push(reply),
        }
    }

    /// Writes the pending withheld rows then `batch` in one transaction.
    /// Returns the receipts of `batch` (in order) once the commit returned.
    fn commit(&mut self, batch: &[(NewAuditRow, i64)]) -> Result<Vec<AuditReceipt>, String> {
        let withheld = std::mem::take(&mut self.withheld);
        let result = match write_batch(&mut self.conn, self.tip, &withheld, batch) {
            Ok(v) => Ok((v, withheld.len())),
            Err(e) => {
                self.withheld = withheld;
                Err(e)
            }
        };
        match result {
            Ok(((tip, receipts), withheld_written)) => {
                self.tip = Some(tip);
                self.shared.commits.fetch_add(1, Ordering::SeqCst);
                self.shared.rows.fetch_add(
                    u64::try_from(receipts.len() + withheld_written).unwrap_or(u64::MAX),
                    Ordering::SeqCst,
                );
                self.shared
                    .pending_withheld
                    .fetch_sub(withheld_written, Ordering::SeqCst);
                Ok(receipts)
            }
            Err(e) => {
                self.tip = None;
                self.shared.failed_commits.fetch_add(1, Ordering::SeqCst);
                tracing::error!(error = %e, rows = batch.len(), "audit commit failed");
                Err(e)
            }
        }
    }

    /// Health: flush withheld rows (a real commit) if any, then begin a write
    /// transaction, write a probe row and roll it back.
    fn probe(&mut self) -> Result<(), AuditError> {
        if !self.withheld.is_empty() {
            self.commit(&[])
                .map_err(|reason| AuditError::Unhealthy { reason })?;
        }
        let r = self
            .conn
            .execute_batch("BEGIN IMMEDIATE; INSERT INTO audit_probe (x) VALUES (1);");
        // Always leave no transaction open, whatever happened.
        let rb = if self.conn.is_autocommit() {
            Ok(())
        } else {
            self.conn.execute_batch("ROLLBACK")
        };
        r.and(rb).map_err(|e| AuditError::Unhealthy {
            reason: e.to_string(),
        })
    }
}

type Tip = (i64, [u8; 32]);

fn write_batch(
    conn: &mut Connection,
    tip: Option<Tip>,
    withheld: &[(NewAuditRow, i64)],
    batch: &[(NewAuditRow, i64)],
) -> Result<(Tip, Vec<AuditReceipt>), String> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| e.to_string())?;
    let (mut last_id, mut prev) = match tip {
        Some(t) => t,
        None => read_tip(&tx)?,
    };
    let mut receipts = Vec::with_capacity(batch.len());
    {
        let mut stmt = tx.prepare_cached(INSERT_ROW).map_err(|e| e.to_string())?;
        for (i, (new, ts_ms)) in withheld.iter().chain(batch.iter()).enumerate() {
            let id = last_id + 1;
            let hash = row_hash(&prev, &encode_row(RowFormat::CURRENT, id, *ts_ms, new));
            let mut hex_buffers = HexBuffers::default();
            stmt.execute(params![
                id,
                ts_ms,
                new.event.as_str(),
                new.outcome.as_str(),
                hex_buffers.bearer.encode_opt(new.bearer_sha256.as_ref()),
                new.wallet,
                new.kid,
                new.jti,
                new.enclave_epoch.map(u64_to_sql),
                new.enclave_seq.map(u64_to_sql),
                hex_buffers.jwt.encode_opt(new.jwt_sha256.as_ref()),
                hex_buffers.head.encode_opt(new.enclave_head.as_ref()),
                new.status,
                new.detail,
                hex_buffers.prev.encode(&prev),
                hex_buffers.hash.encode(&hash),
                new.signing_input,
                RowFormat::CURRENT.number(),
            ])
            .map_err(|e| e.to_string())?;
            if i >= withheld.len() {
                receipts.push(AuditReceipt { id, row_hash: hash });
            }
            last_id = id;
            prev = hash;
        }
    }
    tx.commit().map_err(|e| e.to_string())?;
    Ok(((last_id, prev), receipts))
}

fn read_tip(conn: &Connection) -> Result<Tip, String> {
    let last: Option<(i64, String)> = conn
        .query_row(
            "SELECT id, row_hash FROM audit_log ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(|e| e.to_string())?;
    match last {
        None => Ok((0, GENESIS_PREV_HASH)),
        Some((id, h)) => {
            let hash = decode_hash(&h)
                .ok_or_else(|| format!("the last row {id} has a malformed row_hash {h:?}"))?;
            Ok((id, hash))
        }
    }
}

/// Lower-case hex of a 32-byte hash, written into a buffer on the stack.
struct HexHash([u8; 64]);

impl Default for HexHash {
    fn default() -> Self {
        HexHash([b'0'; 64])
    }
}

impl HexHash {
    fn encode(&mut self, hash: &[u8; 32]) -> &str {
        // 32 bytes always fit the 64 digits; only ASCII hex digits are written.
        let _ = hex::encode_to_slice(hash, &mut self.0);
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    fn encode_opt(&mut self, hash: Option<&[u8; 32]>) -> Option<&str> {
        hash.map(|h| self.encode(h))
    }
}

/// The hex columns of one row, without a heap allocation each.
#[derive(Default)]
struct HexBuffers {
    bearer: HexHash,
    jwt: HexHash,
    head: HexHash,
    prev: HexHash,
    hash: HexHash,
}

/// u64 stored bit-for-bit in SQLite's signed INTEGER.
pub(crate) fn u64_to_sql(v: u64) -> i64 {
    i64::from_ne_bytes(v.to_ne_bytes())
}

/// Inverse of [`u64_to_sql`].
pub(crate) fn u64_from_sql(v: i64) -> u64 {
    u64::from_ne_bytes(v.to_ne_bytes())
}

/// Decodes 64 hex digits.
pub(crate) fn decode_hash(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// A stored row that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("row {id}: column {column} holds {value:?}, which is not valid")]
pub struct RowDecodeError {
    /// The row id.
    pub id: i64,
    /// The column.
    pub column: &'static str,
    /// What it holds.
    pub value: String,
}

/// Reads one row (columns in [`ROW_COLUMNS`] order).
pub(crate) fn row_from_sql(
    r: &rusqlite::Row<'_>,
) -> rusqlite::Result<Result<AuditRow, RowDecodeError>> {
    let stored = StoredRow {
        id: r.get(0)?,
        ts_ms: r.get(1)?,
        event: r.get(2)?,
        outcome: r.get(3)?,
        bearer_sha256: r.get::<_, Option<String>>(4)?,
        wallet: r.get(5)?,
        kid: r.get(6)?,
        jti: r.get(7)?,
        enclave_epoch: r.get(8)?,
        enclave_seq: r.get(9)?,
        jwt_sha256: r.get(10)?,
        enclave_head: r.get(11)?,
        status: r.get(12)?,
        detail: r.get(13)?,
        prev_hash: r.get(14)?,
        row_hash: r.get(15)?,
        signing_input: r.get(16)?,
        row_format: r.get(17)?,
    };
    Ok(stored.decode(|s: &String| decode_hash(s), String::clone))
}

/// Opens an existing database read-only (for `verify` and `tail`).
pub(crate) fn open_read_only(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u64_roundtrips_through_sql_integer() {
        for v in [0u64, 1, i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX] {
            assert_eq!(u64_from_sql(u64_to_sql(v)), v);
        }
    }

    #[test]
    fn stack_hex_matches_the_hex_crate() {
        for hash in [
            [0u8; 32],
            [0xff; 32],
            core::array::from_fn(|i| (i * 37) as u8),
        ] {
            assert_eq!(HexHash::default().encode(&hash), hex::encode(hash));
            assert_eq!(decode_hash(HexHash::default().encode(&hash)), Some(hash));
        }
        assert_eq!(HexHash::default().encode_opt(None), None);
    }

    #[test]
    fn decode_hash_rejects_wrong_lengths() {
        assert!(decode_hash(&"ab".repeat(32)).is_some());
        assert!(decode_hash(&"ab".repeat(31)).is_none());
        assert!(decode_hash(&"zz".repeat(32)).is_none());
    }

    #[test]
    fn missing_directory_is_named() {
        let err = SqliteAuditStore::open(
            Path::new("/nonexistent-agentkeys-dir/sub/audit.db"),
            GroupCommitConfig::default(),
        )
        .unwrap_err();
        assert!(
            matches!(err, AuditError::DirectoryMissing { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("/nonexistent-agentkeys-dir/sub"));
    }

    #[test]
    fn unwritable_location_is_named() {
        // /proc refuses file creation even to root.
        let err = SqliteAuditStore::open(Path::new("/proc/agentkeys-audit.db"), Default::default())
            .unwrap_err();
        assert!(
            matches!(
                err,
                AuditError::NotWritable { .. } | AuditError::Open { .. }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("/proc/agentkeys-audit.db"),
            "{err}"
        );
    }

    /// Writes `rows` into a schema version 1 log at `path`, hashed in row format 1.
    fn write_v1_log(path: &Path, rows: &[NewAuditRow]) {
        let c = Connection::open(path).unwrap();
        c.execute_batch(SCHEMA_V1).unwrap();
        c.pragma_update(None, "user_version", 1).unwrap();
        let mut prev = GENESIS_PREV_HASH;
        for (i, row) in rows.iter().enumerate() {
            let id = i as i64 + 1;
            let ts_ms = 1_700_000_000_000 + id;
            let hash = row_hash(&prev, &encode_row(RowFormat::V1, id, ts_ms, row));
            c.execute(
                "INSERT INTO audit_log (id, ts_ms, event, outcome, bearer_sha256, wallet, kid, \
                 jti, enclave_epoch, enclave_seq, jwt_sha256, enclave_head, status, detail, \
                 prev_hash, row_hash) VALUES (?1, ?2, ?3, ?4, NULL, ?5, ?6, ?7, ?8, ?9, ?10, \
                 ?11, ?12, ?13, ?14, ?15)",
                params![
                    id,
                    ts_ms,
                    row.event.as_str(),
                    row.outcome.as_str(),
                    row.wallet,
                    row.kid,
                    row.jti,
                    row.enclave_epoch.map(u64_to_sql),
                    row.enclave_seq.map(u64_to_sql),
                    row.jwt_sha256.map(hex::encode),
                    row.enclave_head.map(hex::encode),
                    row.status,
                    row.detail,
                    hex::encode(prev),
                    hex::encode(hash),
                ],
            )
            .unwrap();
            prev = hash;
        }
    }

    /// A log written before row format 2 verifies as it is, is migrated when the broker
    /// opens it (its rows untouched), and verifies afterwards with rows of both formats.
    #[tokio::test]
    async fn a_schema_1_log_is_migrated_and_still_verifies() {
        use agentkeys_wire::{chain_next, ChainVersion};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        let jwt_sha256 = [4u8; 32];
        let head = chain_next(&ChainVersion::V1.genesis(3), 1, &jwt_sha256);
        let v1_rows = [
            NewAuditRow::new(AuditEvent::AuthFailed, Outcome::Failure).status(401),
            NewAuditRow::new(AuditEvent::MintJwt, Outcome::Success)
                .wallet("0x00000000000000000000000000000000000000aa")
                .token_ids("k", "j")
                .enclave(3, 1, jwt_sha256, head)
                .status(200),
        ];
        write_v1_log(&path, &v1_rows);
        let before = crate::audit::verify_chain(&path, None).unwrap();
        assert!(before.is_ok(), "{}", before.render());
        assert_eq!(before.rows_checked, 2);

        let store = SqliteAuditStore::open(&path, GroupCommitConfig::default()).unwrap();
        store
            .append(NewAuditRow::new(AuditEvent::AuthFailed, Outcome::Failure).status(401))
            .await
            .unwrap();
        store.close();
        let c = Connection::open(&path).unwrap();
        let version: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let formats: Vec<i64> = c
            .prepare("SELECT row_format FROM audit_log ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(formats, [1, 1, 2]);
        let after = crate::audit::verify_chain(&path, None).unwrap();
        assert!(after.is_ok(), "{}", after.render());
        assert_eq!(after.rows_checked, 3);
        assert_eq!(after.last_row_hash.as_deref().map(str::len), Some(64));
    }

    /// A format 2 row rewritten as format 1 (to escape the checks against its signing
    /// input), the parent's chain recomputed, is named.
    #[tokio::test]
    async fn a_row_rewritten_in_format_1_after_format_2_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let store = SqliteAuditStore::open(&path, GroupCommitConfig::default()).unwrap();
        for _ in 0..2 {
            store
                .append(NewAuditRow::new(AuditEvent::AuthFailed, Outcome::Failure))
                .await
                .unwrap();
        }
        store.close();
        let c = Connection::open(&path).unwrap();
        c.execute_batch("DROP TRIGGER audit_log_no_update").unwrap();
        let rows: Vec<AuditRow> = c
            .prepare(&format!("SELECT {ROW_COLUMNS} FROM audit_log ORDER BY id"))
            .unwrap()
            .query_map([], |r| Ok(row_from_sql(r).unwrap().unwrap()))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let mut prev = rows[0].row_hash;
        let mut second = rows[1].clone();
        second.format = RowFormat::V1;
        second.prev_hash = prev;
        prev = second.compute_hash();
        c.execute(
            "UPDATE audit_log SET row_format = 1, row_hash = ?1 WHERE id = 2",
            [hex::encode(prev)],
        )
        .unwrap();
        let report = crate::audit::verify_chain(&path, None).unwrap();
        assert_eq!(
            report.failures,
            [crate::audit::VerifyFailure::FormatDowngrade { id: 2, after: 1 }],
            "{}",
            report.render()
        );
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        {
            let c = Connection::open(&path).unwrap();
            c.pragma_update(None, "user_version", 99).unwrap();
        }
        let err = SqliteAuditStore::open(&path, Default::default()).unwrap_err();
        assert!(
            matches!(
                err,
                AuditError::UnsupportedSchema {
                    found: 99,
                    supported: SCHEMA_VERSION,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn pragmas_are_wal_and_full() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let conn = open_writer_connection(&path, BUSY_TIMEOUT).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "FULL is 2");
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        let page_size: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        assert_eq!(page_size, NEW_DATABASE_PAGE_SIZE);
    }

    #[test]
    fn a_log_created_with_small_pages_keeps_them_and_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "PRAGMA page_size=4096; PRAGMA journal_mode=WAL; CREATE TABLE t (x)",
            )
            .unwrap();
        }
        let conn = open_writer_connection(&path, BUSY_TIMEOUT).unwrap();
        let page_size: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        assert_eq!(page_size, 4096, "an existing log keeps its page size");
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'audit_log'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 1, "the schema is created in it");
    }
}
