//! The PostgreSQL audit store, for a fleet of hosts sharing one log.
//!
//! The same invariants as the SQLite store: [`AuditStore::append`] resolves only once the
//! row's transaction has committed on a server whose commits are durable when they return
//! (`synchronous_commit` on and `fsync` on, checked on every connection); one writer task
//! per broker batches concurrent appends into one transaction (group commit); the table is
//! append-only by triggers; rows are hash-chained with the SQLite store's encoding.
//!
//! Every broker appends to its own row chain (`chain_id`, by default the host name), so
//! hosts never contend for one chain tip. A broker holds a session advisory lock on its
//! chain while connected, so a second broker configured with the same chain id is refused
//! at start; the primary key `(chain_id, chain_seq)` refuses a fork even without it.
//!
//! While PostgreSQL is unreachable every append fails at once (the mint answers 503, no
//! token without its row), `healthy` names the cause, and the writer reconnects by itself.

mod rows;
pub(crate) mod schema;
pub mod tls;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_postgres::{Client, Statement};

use super::db::{check_chain_id, PgUrl};
use super::row::{encode_row, row_hash, RowFormat, GENESIS_PREV_HASH};
use super::sqlite::AuditStats;
use super::{
    AuditError, AuditEvent, AuditReceipt, AuditStore, GroupCommitConfig, NewAuditRow, Outcome,
};

pub(crate) use rows::{row_from_pg, PG_ROW_COLUMNS};
pub use schema::PG_SCHEMA_VERSION;

/// How long connecting may take before the attempt fails (a blackholed address would
/// otherwise hold every append for the kernel's TCP timeout): 3 s, above a cross-AZ
/// connection with TLS-less start-up by two orders of magnitude.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// After a failed connection attempt, appends fail at once for this long before the next
/// attempt, so a down server costs each mint a refusal, not a connect timeout: 250 ms
/// bounds the recovery delay after the server is back.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(250);

/// Domain of the advisory lock key derived from a chain id.
const CHAIN_LOCK_DOMAIN: &[u8] = b"agentkeys-audit-chain-lock\0";

/// What the PostgreSQL store can refuse or fail at.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// No connection could be made (unreachable, refused, wrong credentials, no database).
    #[error("cannot connect to PostgreSQL at {url}: {reason}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// What the driver or server said.
        reason: String,
    },
    /// A query the store needs failed.
    #[error("PostgreSQL: {what} failed: {reason}")]
    Query {
        /// What the store was doing.
        what: &'static str,
        /// What the server said.
        reason: String,
    },
    /// The server acknowledges commits before they are durable.
    #[error("PostgreSQL has {setting} = {value}: a commit could be acknowledged and then lost, so the broker refuses to write its audit log there (set synchronous_commit = on and fsync = on)")]
    NotDurable {
        /// The setting.
        setting: &'static str,
        /// Its value.
        value: String,
    },
    /// The database has no schema (or an older one) and the store was told not to migrate.
    #[error("PostgreSQL audit schema is at version {found}, this build needs {supported}: start one broker with a role that may create tables (see docs/fleet.md)")]
    NoSchema {
        /// The version found (0: none).
        found: i32,
        /// [`PG_SCHEMA_VERSION`].
        supported: i32,
    },
    /// The schema was written by a newer build.
    #[error("PostgreSQL audit schema is at version {found}; this build supports up to {supported}: upgrade the broker")]
    NewerSchema {
        /// The version found.
        found: i32,
        /// [`PG_SCHEMA_VERSION`].
        supported: i32,
    },
    /// The table is not what this build created.
    #[error("PostgreSQL audit table was altered: {0}")]
    Altered(String),
    /// Applying a migration failed (often: the role may not create tables).
    #[error("PostgreSQL audit schema migration failed: {0}")]
    Migrate(String),
    /// Another broker is writing this chain.
    #[error("audit chain {chain:?} is being written by another broker: give each host its own --audit-chain")]
    ChainInUse {
        /// The chain id.
        chain: String,
    },
    /// The chain's last row cannot be read back.
    #[error("audit chain {chain:?}: its last row is malformed: {reason}")]
    BadTip {
        /// The chain id.
        chain: String,
        /// What is wrong.
        reason: String,
    },
    /// The chain id is not valid.
    #[error(transparent)]
    Chain(#[from] super::db::AuditDbError),
}

impl PgError {
    /// Maps a driver error met while doing `what` to [`PgError::Query`].
    pub(crate) fn query(what: &'static str) -> impl Fn(tokio_postgres::Error) -> PgError {
        move |e| PgError::Query {
            what,
            reason: describe(&e),
        }
    }

    /// Maps a driver error met while migrating to [`PgError::Migrate`], naming a missing
    /// privilege.
    pub(crate) fn migrate(e: tokio_postgres::Error) -> PgError {
        let insufficient = e
            .as_db_error()
            .is_some_and(|d| *d.code() == tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE);
        if insufficient {
            PgError::Migrate(format!(
                "{}: this role may not create the schema; apply it once with the owner role \
                 (see docs/fleet.md)",
                describe(&e)
            ))
        } else {
            PgError::Migrate(describe(&e))
        }
    }
}

/// A driver error with the server's message or the underlying cause (the driver's own
/// `Display` says only "db error" or "error connecting to server").
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// A row's `ts_ms`: the broker's clock in UNIX milliseconds.
pub(crate) fn row_timestamp_ms() -> i64 {
    i64::try_from(agentkeys_attestation::now_unix_ms()).unwrap_or(i64::MAX)
}

/// The advisory lock key of a chain: the first 8 bytes of a domain-separated SHA-256.
fn chain_lock_key(chain: &str) -> i64 {
    let digest = Sha256::new()
        .chain_update(CHAIN_LOCK_DOMAIN)
        .chain_update(chain.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// `(last chain_seq, last row_hash)` of a chain.
type Tip = (i64, [u8; 32]);

/// An open connection of the writer, holding the chain's advisory lock.
struct Live {
    client: Client,
    driver: tokio::task::JoinHandle<()>,
    insert: Statement,
}

impl Drop for Live {
    fn drop(&mut self) {
        // Closing the socket ends the session, which releases the chain lock.
        self.driver.abort();
    }
}

/// Connects, checks durability and the schema (migrating it when `migrate`), takes the
/// chain's lock and prepares the insert.
async fn connect(url: &PgUrl, chain: &str, migrate: bool) -> Result<Live, PgError> {
    let mut config = url.config().clone();
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config.keepalives(true);
    config.application_name("agentkeys-broker");
    let connect_error = |reason: String| PgError::Connect {
        url: url.redacted().to_string(),
        reason,
    };
    let (mut client, connection) =
        tokio::time::timeout(CONNECT_TIMEOUT, config.connect(url.tls().connector()))
            .await
            .map_err(|_| connect_error(format!("no answer within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| {
                let reason = describe(&e);
                let hint = url.tls().hint(&reason);
                connect_error(format!("{reason}{hint}"))
            })?;
    let driver = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %describe(&e), "PostgreSQL audit connection ended");
        }
    });
    // From here on, dropping `live` closes the connection.
    let prepared = async {
        schema::check_durability(&client).await?;
        schema::prepare(&mut client, migrate).await?;
        let locked: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&chain_lock_key(chain)])
            .await
            .map_err(PgError::query("locking the chain"))?
            .get(0);
        if !locked {
            return Err(PgError::ChainInUse {
                chain: chain.to_string(),
            });
        }
        let insert = client
            .prepare(rows::INSERT_ROWS)
            .await
            .map_err(PgError::query("preparing the insert"))?;
        Ok(insert)
    };
    match prepared.await {
        Ok(insert) => Ok(Live {
            client,
            driver,
            insert,
        }),
        Err(e) => {
            driver.abort();
            Err(e)
        }
    }
}

/// Reads the chain's last `(chain_seq, row_hash)` (genesis for a new chain).
async fn read_tip(
    client: &impl tokio_postgres::GenericClient,
    chain: &str,
) -> Result<Tip, PgError> {
    let row = client
        .query_opt(
            "SELECT chain_seq, row_hash FROM audit_log WHERE chain_id = $1 \
             ORDER BY chain_seq DESC LIMIT 1",
            &[&chain],
        )
        .await
        .map_err(PgError::query("reading the chain tip"))?;
    let Some(row) = row else {
        return Ok((0, GENESIS_PREV_HASH));
    };
    let seq: i64 = row.get(0);
    let hash: Vec<u8> = row.get(1);
    let hash = <[u8; 32]>::try_from(hash.as_slice()).map_err(|_| PgError::BadTip {
        chain: chain.to_string(),
        reason: format!("row {seq}'s row_hash is {} bytes", hash.len()),
    })?;
    Ok((seq, hash))
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

/// The PostgreSQL audit store. See the module documentation.
pub struct PgAuditStore {
    url: PgUrl,
    chain: String,
    tx: Mutex<Option<mpsc::UnboundedSender<Msg>>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PgAuditStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgAuditStore")
            .field("url", &self.url)
            .field("chain", &self.chain)
            .field("stats", &self.stats())
            .finish()
    }
}

impl PgAuditStore {
    /// Connects to `url`, refuses a server whose commits are not durable, applies the
    /// schema's migrations (or checks them), refuses an altered table, takes the chain's
    /// lock and starts the writer task. Must run inside a tokio runtime.
    pub async fn open(
        url: &PgUrl,
        chain: &str,
        config: GroupCommitConfig,
    ) -> Result<PgAuditStore, AuditError> {
        let chain = check_chain_id(chain).map_err(PgError::from)?.to_string();
        let live = connect(url, &chain, true).await?;
        let tip = read_tip(&live.client, &chain).await?;
        let shared = Arc::new(Shared {
            alive: AtomicBool::new(true),
            ..Shared::default()
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = Writer {
            url: url.clone(),
            chain: chain.clone(),
            rx,
            shared: Arc::clone(&shared),
            max_batch: config.max_batch.max(1),
            retry_interval: config.retry_interval,
            commit_timeout: config.busy_timeout,
            live: Some(live),
            tip: Some(tip),
            withheld: Vec::new(),
            next_connect: Instant::now(),
            last_connect_error: String::new(),
        };
        let task = tokio::spawn(writer.run());
        tracing::info!(url = %url, chain = %chain, next_seq = tip.0 + 1, "PostgreSQL audit store open");
        Ok(PgAuditStore {
            url: url.clone(),
            chain,
            tx: Mutex::new(Some(tx)),
            task: Mutex::new(Some(task)),
            shared,
        })
    }

    /// This broker's chain id.
    pub fn chain(&self) -> &str {
        &self.chain
    }

    /// Commit counters.
    pub fn stats(&self) -> AuditStats {
        AuditStats {
            commits: self.shared.commits.load(Ordering::SeqCst),
            rows: self.shared.rows.load(Ordering::SeqCst),
            failed_commits: self.shared.failed_commits.load(Ordering::SeqCst),
        }
    }

    /// Stops taking rows; the writer answers everything already queued, then ends.
    pub fn close(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
    }

    /// [`close`](Self::close), then waits at most `grace` for the writer to finish.
    pub async fn shutdown(&self, grace: Duration) {
        self.close();
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            if tokio::time::timeout(grace, task).await.is_err() {
                tracing::warn!(?grace, "the PostgreSQL audit writer was still running");
            }
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

impl Drop for PgAuditStore {
    fn drop(&mut self) {
        self.close();
    }
}

impl AuditStore for PgAuditStore {
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

type Reply = oneshot::Sender<Result<AuditReceipt, AuditError>>;

/// The writer task: it alone owns the connection and the chain's tip.
struct Writer {
    url: PgUrl,
    chain: String,
    rx: mpsc::UnboundedReceiver<Msg>,
    shared: Arc<Shared>,
    max_batch: usize,
    retry_interval: Duration,
    /// Longest a transaction may take before the connection is dropped and every row in
    /// it refused.
    commit_timeout: Duration,
    live: Option<Live>,
    /// `None` after a failure: re-read from the database on the next commit.
    tip: Option<Tip>,
    withheld: Vec<(NewAuditRow, i64)>,
    /// No connection attempt before this instant (see [`RECONNECT_BACKOFF`]).
    next_connect: Instant,
    last_connect_error: String,
}

impl Writer {
    async fn run(mut self) {
        let mut batch: Vec<(NewAuditRow, i64)> = Vec::with_capacity(self.max_batch);
        let mut replies: Vec<Reply> = Vec::with_capacity(self.max_batch);
        let mut health: Vec<oneshot::Sender<Result<(), AuditError>>> = Vec::new();
        loop {
            let first = match tokio::time::timeout(self.retry_interval, self.rx.recv()).await {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(_) => {
                    if !self.withheld.is_empty() {
                        // The outcome shows in pending_withheld(); retried later.
                        let _ = self.commit(&[]).await;
                    }
                    continue;
                }
            };
            accept(
                first,
                &mut batch,
                &mut replies,
                &mut health,
                &mut self.withheld,
            );
            while batch.len() < self.max_batch {
                match self.rx.try_recv() {
                    Ok(m) => accept(m, &mut batch, &mut replies, &mut health, &mut self.withheld),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() || !self.withheld.is_empty() {
                match self.commit(&batch).await {
                    Ok(receipts) => {
                        for (reply, receipt) in replies.drain(..).zip(receipts) {
                            // The appender may have given up; the row is durable anyway.
                            let _ = reply.send(Ok(receipt));
                        }
                    }
                    Err(failure) => {
                        for reply in replies.drain(..) {
                            let _ = reply.send(Err(failure.to_audit_error()));
                        }
                    }
                }
                batch.clear();
            }
            for reply in health.drain(..) {
                let _ = reply.send(self.probe().await);
            }
        }
        self.shared.alive.store(false, Ordering::SeqCst);
    }

    /// The live connection, connecting first when there is none (or it died), unless the
    /// last attempt failed less than [`RECONNECT_BACKOFF`] ago.
    async fn connection(&mut self) -> Result<&Live, String> {
        if self.live.as_ref().is_some_and(|l| l.client.is_closed()) {
            self.live = None;
            self.tip = None;
        }
        if self.live.is_none() {
            if Instant::now() < self.next_connect {
                return Err(self.last_connect_error.clone());
            }
            match connect(&self.url, &self.chain, false).await {
                Ok(live) => {
                    tracing::info!(url = %self.url, chain = %self.chain, "PostgreSQL audit connection restored");
                    self.live = Some(live);
                    self.tip = None;
                }
                Err(e) => {
                    self.next_connect = Instant::now() + RECONNECT_BACKOFF;
                    self.last_connect_error = e.to_string();
                    return Err(self.last_connect_error.clone());
                }
            }
        }
        self.live
            .as_ref()
            .ok_or_else(|| "no PostgreSQL connection".to_string())
    }

    /// Writes the pending withheld rows then `batch` in one transaction; returns the
    /// receipts of `batch`, in order, once the commit returned.
    async fn commit(
        &mut self,
        batch: &[(NewAuditRow, i64)],
    ) -> Result<Vec<AuditReceipt>, CommitFailure> {
        let withheld = std::mem::take(&mut self.withheld);
        let result = self.write(&withheld, batch).await;
        match result {
            Ok((tip, receipts)) => {
                self.tip = Some(tip);
                self.shared.commits.fetch_add(1, Ordering::SeqCst);
                self.shared.rows.fetch_add(
                    u64::try_from(receipts.len() + withheld.len()).unwrap_or(u64::MAX),
                    Ordering::SeqCst,
                );
                self.shared
                    .pending_withheld
                    .fetch_sub(withheld.len(), Ordering::SeqCst);
                Ok(receipts)
            }
            Err(e) => {
                self.withheld = withheld;
                self.tip = None;
                self.shared.failed_commits.fetch_add(1, Ordering::SeqCst);
                tracing::error!(error = %e, rows = batch.len(), "audit commit failed");
                Err(e)
            }
        }
    }

    /// One transaction, bounded by `commit_timeout`. Any failure drops the connection: a
    /// transaction whose outcome is unknown has answered no caller with a receipt, and the
    /// next commit re-reads the tip from a fresh session.
    async fn write(
        &mut self,
        withheld: &[(NewAuditRow, i64)],
        batch: &[(NewAuditRow, i64)],
    ) -> Result<(Tip, Vec<AuditReceipt>), CommitFailure> {
        let tip = self.tip;
        let chain = self.chain.clone();
        let timeout = self.commit_timeout;
        let live = self
            .connection()
            .await
            .map_err(CommitFailure::Unreachable)?;
        let outcome = tokio::time::timeout(
            timeout,
            write_batch(&live.client, &live.insert, &chain, tip, withheld, batch),
        )
        .await;
        let result = match outcome {
            Ok(r) => r,
            Err(_) => Err(CommitFailure::Failed(format!(
                "PostgreSQL did not complete the commit within {timeout:?}"
            ))),
        };
        if result.is_err() {
            self.live = None;
        }
        result
    }

    /// Health: flush withheld rows (a real commit) if any, then check the connection, that
    /// the server is a writable primary and that its commits are still durable.
    async fn probe(&mut self) -> Result<(), AuditError> {
        if !self.withheld.is_empty() {
            self.commit(&[]).await.map_err(|f| AuditError::Unhealthy {
                reason: f.to_string(),
            })?;
        }
        let timeout = self.commit_timeout;
        let live = self
            .connection()
            .await
            .map_err(|reason| AuditError::Unhealthy { reason })?;
        let checked = tokio::time::timeout(timeout, async {
            let row = live
                .client
                .query_one("SELECT pg_is_in_recovery()", &[])
                .await
                .map_err(|e| format!("PostgreSQL: {}", describe(&e)))?;
            if row.get::<_, bool>(0) {
                return Err("PostgreSQL is a read-only standby (in recovery)".to_string());
            }
            schema::check_durability(&live.client)
                .await
                .map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|_| Err(format!("PostgreSQL did not answer within {timeout:?}")));
        if checked.is_err() {
            self.live = None;
        }
        checked.map_err(|reason| AuditError::Unhealthy { reason })
    }
}

fn accept(
    msg: Msg,
    batch: &mut Vec<(NewAuditRow, i64)>,
    replies: &mut Vec<Reply>,
    health: &mut Vec<oneshot::Sender<Result<(), AuditError>>>,
    withheld: &mut Vec<(NewAuditRow, i64)>,
) {
    match msg {
        Msg::Append { row, ts_ms, reply } => {
            batch.push((row, ts_ms));
            replies.push(reply);
        }
        Msg::Withheld { row, ts_ms } => withheld.push((row, ts_ms)),
        Msg::Health { reply } => health.push(reply),
    }
}

/// Inserts `withheld` then `batch` after `tip` (read from the database when `None`) with
/// one statement ([`rows::INSERT_ROWS`]) outside an explicit transaction: the statement is
/// atomic and is committed when it returns (durably: the connection checked
/// `synchronous_commit`), so a batch costs one round trip, its commit included. The chain's
/// advisory lock, held by this connection, keeps the tip read and the insert free of any
/// other writer of the chain; the primary key would refuse one anyway.
async fn write_batch(
    client: &Client,
    insert: &Statement,
    chain: &str,
    tip: Option<Tip>,
    withheld: &[(NewAuditRow, i64)],
    batch: &[(NewAuditRow, i64)],
) -> Result<(Tip, Vec<AuditReceipt>), CommitFailure> {
    let (mut last_seq, mut prev) = match tip {
        Some(t) => t,
        None => read_tip(client, chain)
            .await
            .map_err(|e| CommitFailure::Failed(e.to_string()))?,
    };
    let mut values = Vec::with_capacity(withheld.len() + batch.len());
    let mut receipts = Vec::with_capacity(batch.len());
    for (i, (new, ts_ms)) in withheld.iter().chain(batch.iter()).enumerate() {
        let seq = last_seq + 1;
        let hash = row_hash(&prev, &encode_row(RowFormat::CURRENT, seq, *ts_ms, new));
        values.push(rows::PgRowValues::new(seq, *ts_ms, new, prev, hash));
        if i >= withheld.len() {
            receipts.push(AuditReceipt {
                id: seq,
                row_hash: hash,
            });
        }
        last_seq = seq;
        prev = hash;
    }
    let columns = rows::PgBatchValues::new(chain, &values);
    match client.execute(insert, &columns.params()).await {
        Ok(n) if n == values.len() as u64 => Ok(((last_seq, prev), receipts)),
        Ok(n) => Err(CommitFailure::Failed(format!(
            "PostgreSQL inserted {n} rows of a batch of {}",
            values.len()
        ))),
        Err(e) => Err(CommitFailure::of(&e)),
    }
}

/// Why a batch was not committed: the server could not be reached (mints answer 503 and
/// the writer reconnects), or the transaction failed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CommitFailure {
    /// No connection could be made.
    Unreachable(String),
    /// The transaction failed or timed out.
    Failed(String),
}

impl std::fmt::Display for CommitFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommitFailure::Unreachable(r) | CommitFailure::Failed(r) => f.write_str(r),
        }
    }
}

impl CommitFailure {
    /// Classifies a driver error: a connection the server closed, an I/O error on its
    /// socket, or an error of SQLSTATE class 08 (connection exception) or 57 (operator
    /// intervention: the server shutting down or not yet accepting connections;
    /// PostgreSQL docs, Appendix A) is an outage,
    /// after which the caller may retry once the writer has reconnected; anything else is a
    /// failed transaction.
    fn of(e: &tokio_postgres::Error) -> CommitFailure {
        let reason = format!("PostgreSQL: {}", describe(e));
        let outage_class = e
            .as_db_error()
            .map(|db| db.code().code())
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57"));
        // An I/O error on the socket (reset, broken pipe) is the server going away too.
        let io = std::error::Error::source(e).is_some_and(|cause| cause.is::<std::io::Error>());
        if e.is_closed() || outage_class || io {
            CommitFailure::Unreachable(reason)
        } else {
            CommitFailure::Failed(reason)
        }
    }

    /// The error each caller of the batch gets.
    fn to_audit_error(&self) -> AuditError {
        match self {
            CommitFailure::Unreachable(reason) => AuditError::Unreachable {
                reason: reason.clone(),
            },
            CommitFailure::Failed(reason) => AuditError::Commit {
                reason: reason.clone(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_lock_keys_differ_per_chain_and_are_stable() {
        assert_eq!(chain_lock_key("host-a"), chain_lock_key("host-a"));
        assert_ne!(chain_lock_key("host-a"), chain_lock_key("host-b"));
    }

    #[test]
    fn not_durable_names_the_setting() {
        let m = PgError::NotDurable {
            setting: "synchronous_commit",
            value: "off".into(),
        }
        .to_string();
        assert!(m.contains("synchronous_commit = off"), "{m}");
    }
}
