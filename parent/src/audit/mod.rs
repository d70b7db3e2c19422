//! The durable, hash-chained audit log.
//!
//! Invariant: no token or credential leaves the broker unless its audit row is
//! durable. [`AuditStore::append`] returns only after the row's transaction has been
//! committed durably (SQLite: `synchronous=FULL`; PostgreSQL: `synchronous_commit` and
//! `fsync` on); many concurrent appends share one commit (group commit), so durability
//! does not cost throughput.
//!
//! Two engines implement [`AuditStore`], chosen by `--audit-db` ([`AuditDb`]): a SQLite
//! file for one host, and a PostgreSQL database for a fleet, where each host appends to its
//! own row chain in one table ([`postgres`]).
//!
//! Rows are append-only (triggers refuse `UPDATE` and `DELETE`, and on PostgreSQL
//! `TRUNCATE`) and hash-chained:
//! `row_hash = SHA-256(prev_hash ‖ canonical encoding of the row)`, the first
//! `prev_hash` being 32 zero bytes (see [`row`]). Rows about a signed JWT carry the
//! enclave's `(epoch, seq)` and the JWT's signing input, which the enclave's own attested
//! chain hashes; [`verify_chain`] checks both.

pub mod db;
pub mod postgres;
pub mod row;
pub(crate) mod sqlite;
pub mod verify;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

pub use db::{AuditBackend, AuditDb, AuditDbError, PgUrl};
pub use postgres::{PgAuditStore, PgError, PG_SCHEMA_VERSION};
pub use row::{row_hash, AuditRow, RowFormat, GENESIS_PREV_HASH};
pub use sqlite::{AuditStats, SqliteAuditStore, SCHEMA_VERSION};
pub use verify::{
    checkpoint_from_document, checkpoint_from_json, load_checkpoint, verify_chain,
    AuditVerifyError, CheckpointError, CheckpointSummary, CheckpointTrust, EpochSummary,
    VerifyFailure, VerifyReport,
};

/// What happened. Stored as the snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditEvent {
    /// A JWT was minted and returned to the caller.
    MintJwt,
    /// A JWT was minted and exchanged at STS for AWS credentials that were returned.
    MintAwsCreds,
    /// The bearer was missing, malformed or rejected by the session backend.
    AuthFailed,
    /// The enclave refused or failed to mint.
    MintFailed,
    /// STS rejected the exchange (the enclave did sign a JWT).
    StsFailed,
    /// The enclave signed a JWT, but its success row could not be made durable, so the
    /// token was not returned. Recorded once the store accepts writes again.
    MintWithheld,
    /// The session backend could not be reached or answered something unexpected.
    BackendFailed,
    /// An enclave boot was unsealed and is about to serve: its epoch and, in `detail`,
    /// its NSM module id (`module_id=…`), which CloudTrail names in the boot's attested
    /// KMS call. Written before the boot serves any mint.
    EnclaveUnsealed,
}

impl AuditEvent {
    /// Every event kind, in a stable order.
    pub const ALL: [AuditEvent; 8] = [
        AuditEvent::MintJwt,
        AuditEvent::MintAwsCreds,
        AuditEvent::AuthFailed,
        AuditEvent::MintFailed,
        AuditEvent::StsFailed,
        AuditEvent::MintWithheld,
        AuditEvent::BackendFailed,
        AuditEvent::EnclaveUnsealed,
    ];

    /// The stored name (`mint_jwt`, `mint_aws_creds`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            AuditEvent::MintJwt => "mint_jwt",
            AuditEvent::MintAwsCreds => "mint_aws_creds",
            AuditEvent::AuthFailed => "auth_failed",
            AuditEvent::MintFailed => "mint_failed",
            AuditEvent::StsFailed => "sts_failed",
            AuditEvent::MintWithheld => "mint_withheld",
            AuditEvent::BackendFailed => "backend_failed",
            AuditEvent::EnclaveUnsealed => "enclave_unsealed",
        }
    }

    /// Parses a stored name.
    pub fn parse(name: &str) -> Option<AuditEvent> {
        AuditEvent::ALL.into_iter().find(|e| e.as_str() == name)
    }
}

impl fmt::Display for AuditEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the event succeeded. Stored as `success` / `failure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The operation succeeded (and something was returned to the caller).
    Success,
    /// The operation failed.
    Failure,
}

impl Outcome {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }

    /// Parses a stored name.
    pub fn parse(name: &str) -> Option<Outcome> {
        match name {
            "success" => Some(Outcome::Success),
            "failure" => Some(Outcome::Failure),
            _ => None,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A row to append. The store assigns `id`, `ts_ms`, `prev_hash` and `row_hash`.
///
/// Never put a secret in any field: bearers are passed only as their SHA-256, and
/// `detail` is free text meant for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditRow {
    /// What happened.
    pub event: AuditEvent,
    /// Success or failure.
    pub outcome: Outcome,
    /// SHA-256 of the caller's bearer, when one was presented.
    pub bearer_sha256: Option<[u8; 32]>,
    /// The wallet the session backend vouched for (lower case).
    pub wallet: Option<String>,
    /// The key id that signed the JWT.
    pub kid: Option<String>,
    /// The JWT's `jti`.
    pub jti: Option<String>,
    /// The enclave's audit-chain epoch for the signed JWT.
    pub enclave_epoch: Option<u64>,
    /// The enclave's audit-chain sequence number for the signed JWT.
    pub enclave_seq: Option<u64>,
    /// SHA-256 of the signed JWT (its compact serialization).
    pub jwt_sha256: Option<[u8; 32]>,
    /// The enclave's chain head after this JWT.
    pub enclave_head: Option<[u8; 32]>,
    /// The JWS signing input of the signed JWT (header and claims, no signature): what
    /// the enclave's chain hashes, and what `audit verify` checks this row against.
    pub signing_input: Option<String>,
    /// The HTTP status returned to the caller.
    pub status: Option<u16>,
    /// Free text for operators (never secrets).
    pub detail: String,
}

impl NewAuditRow {
    /// A row with only `event` and `outcome` set.
    pub fn new(event: AuditEvent, outcome: Outcome) -> NewAuditRow {
        NewAuditRow {
            event,
            outcome,
            bearer_sha256: None,
            wallet: None,
            kid: None,
            jti: None,
            enclave_epoch: None,
            enclave_seq: None,
            jwt_sha256: None,
            enclave_head: None,
            signing_input: None,
            status: None,
            detail: String::new(),
        }
    }

    /// Sets `bearer_sha256` to SHA-256 of `bearer` (the bearer itself is not kept).
    pub fn bearer(mut self, bearer: &str) -> NewAuditRow {
        use sha2::Digest;
        self.bearer_sha256 = Some(sha2::Sha256::digest(bearer.as_bytes()).into());
        self
    }

    /// Sets the wallet.
    pub fn wallet(mut self, wallet: impl Into<String>) -> NewAuditRow {
        self.wallet = Some(wallet.into());
        self
    }

    /// Sets the enclave's view of the signed JWT: epoch, seq, JWT hash and chain head.
    pub fn enclave(mut self, epoch: u64, seq: u64, jwt_sha256: [u8; 32], head: [u8; 32]) -> Self {
        self.enclave_epoch = Some(epoch);
        self.enclave_seq = Some(seq);
        self.jwt_sha256 = Some(jwt_sha256);
        self.enclave_head = Some(head);
        self
    }

    /// The fields of a JWT the enclave signed: its wallet, `kid`, `jti`, its place in the
    /// enclave's chain and its signing input. Every row about a signed token is built
    /// through this.
    pub fn signed(self, minted: &agentkeys_wire::MintedJwt) -> NewAuditRow {
        let mut row = self
            .wallet(&*minted.wallet)
            .token_ids(&*minted.kid, &*minted.jti)
            .enclave(minted.epoch, minted.seq, minted.jwt_sha256, minted.head);
        row.signing_input = agentkeys_wire::signing_input(&minted.jwt).map(str::to_owned);
        row
    }

    /// Sets the key id and `jti`.
    pub fn token_ids(mut self, kid: impl Into<String>, jti: impl Into<String>) -> NewAuditRow {
        self.kid = Some(kid.into());
        self.jti = Some(jti.into());
        self
    }

    /// Sets the HTTP status.
    pub fn status(mut self, status: u16) -> NewAuditRow {
        self.status = Some(status);
        self
    }

    /// Sets the detail text.
    pub fn detail(mut self, detail: impl Into<String>) -> NewAuditRow {
        self.detail = detail.into();
        self
    }
}

/// Proof that a row is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditReceipt {
    /// The row's id (returned to clients as `audit_id`).
    pub id: i64,
    /// The row's chain hash.
    pub row_hash: [u8; 32],
}

/// Group-commit tuning.
#[derive(Debug, Clone)]
pub struct GroupCommitConfig {
    /// Most rows one transaction carries.
    pub max_batch: usize,
    /// How often the writer retries queued `mint_withheld` rows while idle.
    pub retry_interval: Duration,
    /// How long the writer waits for a lock another connection holds before the commit
    /// fails (every row in it is then refused and nothing is acknowledged).
    pub busy_timeout: Duration,
}

impl Default for GroupCommitConfig {
    fn default() -> Self {
        GroupCommitConfig {
            // 256 rows a commit: at ~64 rows a commit SQLite WAL+FULL already reaches
            // ~270k rows/s on 2 cores (measured), so larger batches only add latency.
            max_batch: 256,
            // One second: withheld rows are rare and only need to land eventually.
            retry_interval: Duration::from_secs(1),
            // 5 s: far above any commit, so only a lock held on purpose (or a stuck
            // process) fails a write.
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// Everything that can go wrong writing the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The directory that should hold the database does not exist.
    #[error("audit database directory {path} does not exist")]
    DirectoryMissing {
        /// The missing directory.
        path: PathBuf,
    },
    /// The database or its directory cannot be written.
    #[error("audit database {path} is not writable: {reason}")]
    NotWritable {
        /// The database path.
        path: PathBuf,
        /// What SQLite or the OS said.
        reason: String,
    },
    /// Opening or preparing the database failed.
    #[error("cannot open audit database {path}: {source}")]
    Open {
        /// The database path.
        path: PathBuf,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// `journal_mode=WAL` was not accepted.
    #[error("audit database {path}: journal_mode is {actual}, expected wal")]
    NotWal {
        /// The database path.
        path: PathBuf,
        /// The mode SQLite reported.
        actual: String,
    },
    /// The database was written by a newer schema.
    #[error("audit database {path} has schema version {found}; this build supports {supported}")]
    UnsupportedSchema {
        /// The database path.
        path: PathBuf,
        /// `PRAGMA user_version` found.
        found: i64,
        /// The version this build writes.
        supported: i64,
    },
    /// The batch holding this row could not be committed; the row is not in the log.
    #[error("audit commit failed, row not recorded: {reason}")]
    Commit {
        /// What the database said.
        reason: String,
    },
    /// The audit database cannot be reached (a PostgreSQL server down or restarting); the
    /// row is not in the log. The store reconnects by itself.
    #[error("audit database unreachable, row not recorded: {reason}")]
    Unreachable {
        /// Why the connection failed.
        reason: String,
    },
    /// The writer thread is gone (the store was closed or the thread panicked).
    #[error("audit writer is not running")]
    WriterGone,
    /// The health probe could not begin a write transaction.
    #[error("audit database is not writable: {reason}")]
    Unhealthy {
        /// What SQLite said.
        reason: String,
    },
    /// Spawning the writer thread failed.
    #[error("cannot start the audit writer thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// The PostgreSQL store refused to start (or its server is not usable).
    #[error(transparent)]
    Postgres(#[from] PgError),
}

/// A durable, append-only audit log. Usable as `Arc<dyn AuditStore>`.
pub trait AuditStore: Send + Sync + 'static {
    /// Appends the row and resolves only once it is durable (group commit inside).
    /// An error means the row is not in the log and nothing may be returned to the caller.
    fn append(&self, row: NewAuditRow) -> BoxFuture<'_, Result<AuditReceipt, AuditError>>;

    /// Checks the writer is alive and the database writable (for `/readyz`).
    fn healthy(&self) -> BoxFuture<'_, Result<(), AuditError>>;

    /// Queues a `mint_withheld` row: the enclave signed a JWT whose success row could
    /// not be written, so the token was withheld. The store writes it (event forced to
    /// `mint_withheld`, outcome to `failure`) as soon as writes succeed again, so the
    /// log keeps accounting for every `(epoch, seq)` the enclave signed. Returns at once.
    fn queue_withheld(&self, row: NewAuditRow);

    /// How many `mint_withheld` rows wait to be written.
    fn pending_withheld(&self) -> usize;
}
