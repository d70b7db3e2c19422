//! `audit verify`: the parent's hash chain, and the parent's log against the enclave's
//! attested chain.
//!
//! 1. Rows are walked in id order; every `row_hash` is recomputed and every `prev_hash`
//!    compared with the previous row's hash. Ids must run 1, 2, 3, … An edited row, a
//!    removed row or a rewritten suffix is named by id.
//! 2. Rows that carry the enclave's `(epoch, seq, jwt_sha256)` (mint rows, `sts_failed`,
//!    `mint_withheld`) are grouped by epoch and sorted by seq; the enclave chain is
//!    recomputed from `chain_genesis(epoch)` and compared with each row's recorded
//!    `enclave_head`.
//! 3. With the enclave's checkpoint `(epoch, seq, head)`, every seq `1..=seq` of that
//!    epoch must have a row and the recomputed head must equal `head`. This is the only
//!    way to catch the most recent rows being dropped: the parent's own chain stays valid
//!    when its tail is cut.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use agentkeys_wire::{chain_genesis, chain_next, CheckpointUserData};
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::row::GENESIS_PREV_HASH;
use super::sqlite::{decode_hash, open_read_only, row_from_sql, ROW_COLUMNS, SCHEMA_VERSION};

/// The first sequence number in every enclave epoch (the enclave counts from 1; a
/// checkpoint with `seq` 0 covers no JWT and its head is the genesis).
const FIRST_SEQ: u64 = 1;

/// At most this many failures are collected (the first one is what matters).
const MAX_FAILURES: usize = 100;

/// The database could not be read as an audit log at all.
#[derive(Debug, thiserror::Error)]
pub enum AuditVerifyError {
    /// The file does not exist.
    #[error("audit database {path} does not exist")]
    Missing {
        /// The path given.
        path: PathBuf,
    },
    /// SQLite refused to open or read it.
    #[error("cannot read audit database {path}: {source}")]
    Sqlite {
        /// The path given.
        path: PathBuf,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// It is not an audit log of a supported version.
    #[error("{path} is not an audit log this build can read (user_version {found}, expected {expected})")]
    WrongSchema {
        /// The path given.
        path: PathBuf,
        /// `PRAGMA user_version`.
        found: i64,
        /// [`SCHEMA_VERSION`].
        expected: i64,
    },
}

/// The first thing found wrong, naming the rows or sequence numbers involved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum VerifyFailure {
    /// A column holds something that is not a valid value.
    Malformed {
        /// Row id.
        id: i64,
        /// Column.
        column: String,
        /// What it holds.
        value: String,
    },
    /// The first row does not start the chain (id 1, `prev_hash` zero).
    BadStart {
        /// The first id present.
        id: i64,
    },
    /// Ids jump: rows `from..=to` are missing.
    MissingRows {
        /// First missing id.
        from: i64,
        /// Last missing id.
        to: i64,
    },
    /// The recomputed hash of the row differs from the stored one: the row was edited.
    RowHashMismatch {
        /// Row id.
        id: i64,
        /// Stored `row_hash` (hex).
        stored: String,
        /// Recomputed (hex).
        computed: String,
    },
    /// The row's `prev_hash` is not the previous row's `row_hash`.
    BrokenLink {
        /// Row id.
        id: i64,
        /// The previous row's id.
        previous_id: i64,
    },
    /// Two rows claim the same enclave `(epoch, seq)` with different JWT hashes.
    ConflictingSeq {
        /// Epoch.
        epoch: u64,
        /// Seq.
        seq: u64,
        /// The first row.
        first_id: i64,
        /// The conflicting row.
        second_id: i64,
    },
    /// The enclave chain recomputed from the log differs from the head the enclave
    /// returned for this row: a JWT hash at or before this seq was changed.
    EnclaveHeadMismatch {
        /// Row id.
        id: i64,
        /// Epoch.
        epoch: u64,
        /// Seq.
        seq: u64,
    },
    /// The enclave signed these seqs (per its checkpoint) but the log has no rows for them.
    MissingSeqs {
        /// Epoch.
        epoch: u64,
        /// First missing seq.
        from: u64,
        /// Last missing seq.
        to: u64,
    },
    /// Every seq is present but the recomputed head differs from the attested one.
    CheckpointHeadMismatch {
        /// Epoch.
        epoch: u64,
        /// Seq.
        seq: u64,
        /// The attested head (hex).
        attested: String,
        /// The head recomputed from the log (hex).
        computed: String,
    },
}

impl fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyFailure::Malformed { id, column, value } => {
                write!(f, "row {id}: column {column} holds an invalid value {value:?}")
            }
            VerifyFailure::BadStart { id } => write!(
                f,
                "the log starts at row {id}, not at row 1 with a zero prev_hash: rows were removed from its start"
            ),
            VerifyFailure::MissingRows { from, to } if from == to => {
                write!(f, "row {from} is missing: it was deleted")
            }
            VerifyFailure::MissingRows { from, to } => {
                write!(f, "rows {from}..{to} are missing: they were deleted")
            }
            VerifyFailure::RowHashMismatch { id, stored, computed } => write!(
                f,
                "row {id} was edited: its contents hash to {computed}, but its stored row_hash is {stored}"
            ),
            VerifyFailure::BrokenLink { id, previous_id } => write!(
                f,
                "row {id}'s prev_hash does not match row {previous_id}'s row_hash: row {previous_id} was rewritten or a row between them removed"
            ),
            VerifyFailure::ConflictingSeq { epoch, seq, first_id, second_id } => write!(
                f,
                "rows {first_id} and {second_id} both claim enclave seq {seq} in epoch {epoch} with different JWT hashes"
            ),
            VerifyFailure::EnclaveHeadMismatch { id, epoch, seq } => write!(
                f,
                "row {id} (epoch {epoch}, seq {seq}): the enclave chain recomputed from the log differs from the head the enclave returned: a JWT hash at or before seq {seq} was changed"
            ),
            VerifyFailure::MissingSeqs { epoch, from, to } if from == to => write!(
                f,
                "enclave signed seq {from} in epoch {epoch} but the log has no row for it"
            ),
            VerifyFailure::MissingSeqs { epoch, from, to } => write!(
                f,
                "enclave signed seq {from}..{to} in epoch {epoch} but the log has no rows for them"
            ),
            VerifyFailure::CheckpointHeadMismatch { epoch, seq, attested, computed } => write!(
                f,
                "epoch {epoch} up to seq {seq}: the log's JWT hashes give head {computed}, the enclave attested {attested}: a JWT hash was changed"
            ),
        }
    }
}

/// What the log holds for one enclave epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EpochSummary {
    /// Epoch.
    pub epoch: u64,
    /// Rows carrying a seq of this epoch.
    pub rows: u64,
    /// Lowest seq.
    pub min_seq: u64,
    /// Highest seq.
    pub max_seq: u64,
    /// Seq ranges with no row (inclusive), from 1 to `max_seq`.
    pub gaps: Vec<(u64, u64)>,
}

/// The result of comparing with a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointSummary {
    /// Epoch attested.
    pub epoch: u64,
    /// Seq attested.
    pub seq: u64,
    /// Head attested (hex).
    pub head: String,
    /// Whether every seq was present and the head matched.
    pub matched: bool,
    /// Rows of that epoch beyond the attested seq (newer than the checkpoint).
    pub rows_after: u64,
}

/// The outcome of `audit verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// The database.
    pub db: PathBuf,
    /// Rows walked.
    pub rows_checked: u64,
    /// Last id seen.
    pub last_id: Option<i64>,
    /// Last row hash (hex): the tip of the parent's chain.
    pub last_row_hash: Option<String>,
    /// Per-epoch summary of the enclave seqs found.
    pub epochs: Vec<EpochSummary>,
    /// The checkpoint comparison, when a checkpoint was given.
    pub checkpoint: Option<CheckpointSummary>,
    /// Failures found, first first (at most 100).
    pub failures: Vec<VerifyFailure>,
    /// Things worth knowing that are not failures by themselves.
    pub warnings: Vec<String>,
}

impl VerifyReport {
    /// True when nothing failed.
    pub fn is_ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// The first failure.
    pub fn first_failure(&self) -> Option<&VerifyFailure> {
        self.failures.first()
    }

    /// A human-readable report.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!("audit log: {}\n", self.db.display()));
        out.push_str(&format!("rows checked: {}\n", self.rows_checked));
        if let (Some(id), Some(h)) = (self.last_id, &self.last_row_hash) {
            out.push_str(&format!("chain tip: row {id}, row_hash {h}\n"));
        }
        for e in &self.epochs {
            out.push_str(&format!(
                "epoch {}: {} rows, seq {}..{}",
                e.epoch, e.rows, e.min_seq, e.max_seq
            ));
            if !e.gaps.is_empty() {
                let gaps: Vec<String> = e.gaps.iter().map(|(a, b)| fmt_range(*a, *b)).collect();
                out.push_str(&format!(", gaps {}", gaps.join(", ")));
            }
            out.push('\n');
        }
        match &self.checkpoint {
            None => out.push_str(
                "checkpoint: none given (dropped most-recent rows cannot be detected without one)\n",
            ),
            Some(c) => out.push_str(&format!(
                "checkpoint: epoch {} seq {} head {}: {}{}\n",
                c.epoch,
                c.seq,
                c.head,
                if c.matched { "matches" } else { "DOES NOT MATCH" },
                if c.rows_after > 0 {
                    format!(" ({} newer rows not covered)", c.rows_after)
                } else {
                    String::new()
                }
            )),
        }
        for w in &self.warnings {
            out.push_str(&format!("warning: {w}\n"));
        }
        if self.failures.is_empty() {
            out.push_str("result: OK\n");
        } else {
            out.push_str(&format!(
                "result: FAILED ({} problems)\n",
                self.failures.len()
            ));
            for f in &self.failures {
                out.push_str(&format!("  - {f}\n"));
            }
        }
        out
    }
}

fn fmt_range(a: u64, b: u64) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a}..{b}")
    }
}

/// One enclave-chain entry found in the log.
struct SeqEntry {
    seq: u64,
    jwt_sha256: [u8; 32],
    head: Option<[u8; 32]>,
    id: i64,
}

/// Verifies the log at `path`, and against `checkpoint` when given.
pub fn verify_chain(
    path: &Path,
    checkpoint: Option<&CheckpointUserData>,
) -> Result<VerifyReport, AuditVerifyError> {
    if !path.exists() {
        return Err(AuditVerifyError::Missing {
            path: path.to_path_buf(),
        });
    }
    let sql_err = |source| AuditVerifyError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let conn = open_read_only(path).map_err(sql_err)?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql_err)?;
    if version != SCHEMA_VERSION {
        return Err(AuditVerifyError::WrongSchema {
            path: path.to_path_buf(),
            found: version,
            expected: SCHEMA_VERSION,
        });
    }
    // One read transaction: a consistent snapshot even while the broker appends.
    conn.execute_batch("BEGIN").map_err(sql_err)?;
    let mut stmt = conn
        .prepare(&format!("SELECT {ROW_COLUMNS} FROM audit_log ORDER BY id"))
        .map_err(sql_err)?;
    let mut rows = stmt.query([]).map_err(sql_err)?;

    let mut report = VerifyReport {
        db: path.to_path_buf(),
        rows_checked: 0,
        last_id: None,
        last_row_hash: None,
        epochs: Vec::new(),
        checkpoint: None,
        failures: Vec::new(),
        warnings: Vec::new(),
    };
    let fail = |report: &mut VerifyReport, f: VerifyFailure| {
        if report.failures.len() < MAX_FAILURES {
            report.failures.push(f);
        }
    };
    // (id, stored row_hash) of the previous row.
    let mut previous: Option<(i64, [u8; 32])> = None;
    let mut epochs: BTreeMap<u64, Vec<SeqEntry>> = BTreeMap::new();

    while let Some(r) = rows.next().map_err(sql_err)? {
        let row = match row_from_sql(r).map_err(sql_err)? {
            Ok(row) => row,
            Err(e) => {
                // Undecodable: report it, and keep the stored hash (if readable) as the link.
                let id = e.id;
                fail(
                    &mut report,
                    VerifyFailure::Malformed {
                        id,
                        column: e.column.to_string(),
                        value: e.value,
                    },
                );
                let stored: Option<String> = r.get(15).ok();
                report.rows_checked += 1;
                report.last_id = Some(id);
                previous = stored.as_deref().and_then(decode_hash).map(|h| (id, h));
                continue;
            }
        };
        report.rows_checked += 1;
        match previous {
            None => {
                if row.id != 1 || row.prev_hash != GENESIS_PREV_HASH {
                    fail(&mut report, VerifyFailure::BadStart { id: row.id });
                }
            }
            Some((prev_id, prev_hash)) => {
                if row.id != prev_id + 1 {
                    fail(
                        &mut report,
                        VerifyFailure::MissingRows {
                            from: prev_id + 1,
                            to: row.id - 1,
                        },
                    );
                } else if row.prev_hash != prev_hash {
                    fail(
                        &mut report,
                        VerifyFailure::BrokenLink {
                            id: row.id,
                            previous_id: prev_id,
                        },
                    );
                }
            }
        }
        let computed = row.compute_hash();
        if computed != row.row_hash {
            fail(
                &mut report,
                VerifyFailure::RowHashMismatch {
                    id: row.id,
                    stored: hex::encode(row.row_hash),
                    computed: hex::encode(computed),
                },
            );
        }
        if let (Some(epoch), Some(seq), Some(jwt)) = (
            row.entry.enclave_epoch,
            row.entry.enclave_seq,
            row.entry.jwt_sha256,
        ) {
            epochs.entry(epoch).or_default().push(SeqEntry {
                seq,
                jwt_sha256: jwt,
                head: row.entry.enclave_head,
                id: row.id,
            });
        }
        report.last_id = Some(row.id);
        report.last_row_hash = Some(hex::encode(row.row_hash));
        previous = Some((row.id, row.row_hash));
    }
    drop(rows);
    drop(stmt);
    // Read-only snapshot: ending it cannot lose anything.
    let _ = conn.execute_batch("COMMIT");

    // The enclave chain, epoch by epoch.
    let mut checkpoint_entries: Option<Vec<SeqEntry>> = None;
    for (epoch, mut entries) in epochs {
        entries.sort_by_key(|e| (e.seq, e.id));
        // Collapse duplicates (same seq and hash is harmless; different hashes is not).
        let mut unique: Vec<SeqEntry> = Vec::with_capacity(entries.len());
        for e in entries {
            match unique.last() {
                Some(last) if last.seq == e.seq => {
                    if last.jwt_sha256 != e.jwt_sha256 {
                        let f = VerifyFailure::ConflictingSeq {
                            epoch,
                            seq: e.seq,
                            first_id: last.id,
                            second_id: e.id,
                        };
                        fail(&mut report, f);
                    } else {
                        report.warnings.push(format!(
                            "rows {} and {} both record epoch {epoch} seq {}",
                            last.id, e.id, e.seq
                        ));
                    }
                }
                _ => unique.push(e),
            }
        }
        let mut summary = EpochSummary {
            epoch,
            rows: u64::try_from(unique.len()).unwrap_or(u64::MAX),
            min_seq: unique.first().map_or(0, |e| e.seq),
            max_seq: unique.last().map_or(0, |e| e.seq),
            gaps: Vec::new(),
        };
        // Recompute while seqs are contiguous from FIRST_SEQ.
        let mut head = chain_genesis(epoch);
        let mut expected = FIRST_SEQ;
        let mut contiguous = true;
        for e in &unique {
            if e.seq != expected {
                if e.seq > expected {
                    summary.gaps.push((expected, e.seq - 1));
                }
                contiguous = false;
            }
            if contiguous {
                head = chain_next(&head, e.seq, &e.jwt_sha256);
                if let Some(recorded) = e.head {
                    if recorded != head {
                        let f = VerifyFailure::EnclaveHeadMismatch {
                            id: e.id,
                            epoch,
                            seq: e.seq,
                        };
                        fail(&mut report, f);
                    }
                }
            }
            expected = e.seq.saturating_add(1);
        }
        if !summary.gaps.is_empty() && checkpoint.is_none_or(|c| c.epoch != epoch) {
            let gaps: Vec<String> = summary
                .gaps
                .iter()
                .map(|(a, b)| fmt_range(*a, *b))
                .collect();
            report.warnings.push(format!(
                "epoch {epoch}: the enclave signed seq {} but the log has no rows for them \
                 (a broker killed between signing and recording leaves such gaps; \
                 verify against a checkpoint of this epoch to decide)",
                gaps.join(", ")
            ));
        }
        report.epochs.push(summary);
        if checkpoint.is_some_and(|c| c.epoch == epoch) {
            checkpoint_entries = Some(unique);
        }
    }

    if let Some(cp) = checkpoint {
        let entries = checkpoint_entries.unwrap_or_default();
        let mut head = chain_genesis(cp.epoch);
        let mut expected = FIRST_SEQ;
        let mut complete = true;
        let mut rows_after = 0u64;
        for e in &entries {
            if e.seq > cp.seq {
                rows_after += 1;
                continue;
            }
            if e.seq > expected {
                complete = false;
                fail(
                    &mut report,
                    VerifyFailure::MissingSeqs {
                        epoch: cp.epoch,
                        from: expected,
                        to: e.seq - 1,
                    },
                );
            }
            head = chain_next(&head, e.seq, &e.jwt_sha256);
            expected = e.seq.saturating_add(1);
        }
        if expected <= cp.seq {
            complete = false;
            fail(
                &mut report,
                VerifyFailure::MissingSeqs {
                    epoch: cp.epoch,
                    from: expected,
                    to: cp.seq,
                },
            );
        }
        let mut matched = complete;
        if complete && head != cp.head {
            matched = false;
            fail(
                &mut report,
                VerifyFailure::CheckpointHeadMismatch {
                    epoch: cp.epoch,
                    seq: cp.seq,
                    attested: hex::encode(cp.head),
                    computed: hex::encode(head),
                },
            );
        }
        report.checkpoint = Some(CheckpointSummary {
            epoch: cp.epoch,
            seq: cp.seq,
            head: hex::encode(cp.head),
            matched,
            rows_after,
        });
    }
    Ok(report)
}

/// Why a checkpoint could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Reading the file failed.
    #[error("cannot read checkpoint {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The JSON form is malformed.
    #[error("checkpoint JSON is malformed: {0}")]
    Json(String),
    /// `head` is not 64 hex digits.
    #[error("checkpoint head must be 64 hex digits, got {0:?}")]
    Head(String),
    /// The attestation document could not be decoded.
    #[error("checkpoint attestation document cannot be decoded: {0}")]
    Document(String),
    /// The attestation document failed verification.
    #[error("checkpoint attestation document failed verification: {0}")]
    Verification(String),
    /// The document has no `user_data`.
    #[error("checkpoint attestation document carries no user_data")]
    NoUserData,
    /// `user_data` is not a checkpoint.
    #[error("checkpoint user_data is not a checkpoint: {0}")]
    UserData(#[source] agentkeys_wire::CheckpointDecodeError),
    /// The JSON's epoch/seq/head disagree with its own attested document.
    #[error("checkpoint JSON says epoch {json_epoch} seq {json_seq} but its document attests epoch {doc_epoch} seq {doc_seq}")]
    Disagrees {
        /// From JSON.
        json_epoch: u64,
        /// From JSON.
        json_seq: u64,
        /// From the document.
        doc_epoch: u64,
        /// From the document.
        doc_seq: u64,
    },
}

/// How to check a checkpoint's attestation document.
pub struct CheckpointTrust<'a> {
    /// The pinned root.
    pub anchor: &'a agentkeys_attestation::TrustAnchor,
    /// PCR and other constraints.
    pub policy: &'a agentkeys_attestation::Policy,
    /// Verification time (UNIX ms); use the document's own time for archived documents.
    pub at_unix_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointJson {
    epoch: Option<u64>,
    seq: Option<u64>,
    head: Option<String>,
    /// Base64 COSE_Sign1 attestation document whose user_data is the checkpoint.
    document: Option<String>,
}

/// Extracts the checkpoint from an attestation document's `user_data`. With `trust`,
/// the document is fully verified first (signature, certificate path, policy);
/// without it, it is only decoded.
pub fn checkpoint_from_document(
    document: &[u8],
    trust: Option<&CheckpointTrust<'_>>,
) -> Result<CheckpointUserData, CheckpointError> {
    let doc = match trust {
        Some(t) => {
            agentkeys_attestation::verify(document, t.anchor, t.at_unix_ms, t.policy)
                .map_err(|e| CheckpointError::Verification(e.to_string()))?
                .document
        }
        None => agentkeys_attestation::decode_unverified(document)
            .map_err(|e| CheckpointError::Document(e.to_string()))?,
    };
    let user_data = doc.user_data.ok_or(CheckpointError::NoUserData)?;
    CheckpointUserData::decode(&user_data).map_err(CheckpointError::UserData)
}

/// Parses a checkpoint given as JSON: `{"epoch":N,"seq":N,"head":"hex"}`, or
/// `{"document":"base64"}` (optionally with epoch/seq/head, which must then agree).
pub fn checkpoint_from_json(
    text: &str,
    trust: Option<&CheckpointTrust<'_>>,
) -> Result<CheckpointUserData, CheckpointError> {
    let j: CheckpointJson =
        serde_json::from_str(text).map_err(|e| CheckpointError::Json(e.to_string()))?;
    let from_doc = match &j.document {
        Some(b64) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| CheckpointError::Json(format!("document is not base64: {e}")))?;
            Some(checkpoint_from_document(&bytes, trust)?)
        }
        None => None,
    };
    let from_fields = match (j.epoch, j.seq, &j.head) {
        (Some(epoch), Some(seq), Some(head)) => Some(CheckpointUserData {
            epoch,
            seq,
            head: decode_hash(head.trim()).ok_or_else(|| CheckpointError::Head(head.clone()))?,
        }),
        (None, None, None) => None,
        _ => {
            return Err(CheckpointError::Json(
                "epoch, seq and head must be given together".into(),
            ))
        }
    };
    match (from_fields, from_doc) {
        (Some(f), Some(d)) => {
            if f != d {
                return Err(CheckpointError::Disagrees {
                    json_epoch: f.epoch,
                    json_seq: f.seq,
                    doc_epoch: d.epoch,
                    doc_seq: d.seq,
                });
            }
            Ok(d)
        }
        (Some(f), None) => Ok(f),
        (None, Some(d)) => Ok(d),
        (None, None) => Err(CheckpointError::Json(
            "expected epoch/seq/head or document".into(),
        )),
    }
}

/// Reads a checkpoint file: JSON (see [`checkpoint_from_json`]), a raw COSE_Sign1
/// attestation document, or that document in base64.
pub fn load_checkpoint(
    path: &Path,
    trust: Option<&CheckpointTrust<'_>>,
) -> Result<CheckpointUserData, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let trimmed = bytes.trim_ascii();
    if trimmed.first() == Some(&b'{') {
        let text =
            std::str::from_utf8(trimmed).map_err(|e| CheckpointError::Json(e.to_string()))?;
        return checkpoint_from_json(text, trust);
    }
    if let Ok(text) = std::str::from_utf8(trimmed) {
        if let Ok(doc) = base64::engine::general_purpose::STANDARD.decode(text) {
            return checkpoint_from_document(&doc, trust);
        }
    }
    checkpoint_from_document(&bytes, trust)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_checkpoint_parses() {
        let cp = checkpoint_from_json(
            &format!(r#"{{"epoch":3,"seq":4,"head":"{}"}}"#, "ab".repeat(32)),
            None,
        )
        .unwrap();
        assert_eq!((cp.epoch, cp.seq, cp.head), (3, 4, [0xab; 32]));
    }

    #[test]
    fn json_checkpoint_rejects_bad_head_and_partial_fields() {
        assert!(matches!(
            checkpoint_from_json(r#"{"epoch":3,"seq":4,"head":"abcd"}"#, None),
            Err(CheckpointError::Head(_))
        ));
        assert!(matches!(
            checkpoint_from_json(r#"{"epoch":3}"#, None),
            Err(CheckpointError::Json(_))
        ));
        assert!(matches!(
            checkpoint_from_json(r#"{}"#, None),
            Err(CheckpointError::Json(_))
        ));
        assert!(matches!(
            checkpoint_from_json(r#"{"epoch":1,"seq":1,"head":"00","extra":1}"#, None),
            Err(CheckpointError::Json(_))
        ));
    }

    #[test]
    fn garbage_document_is_an_error() {
        assert!(checkpoint_from_document(b"not cbor", None).is_err());
    }

    #[test]
    fn failure_messages_name_rows_and_seqs() {
        let m = VerifyFailure::MissingSeqs {
            epoch: 9,
            from: 17,
            to: 20,
        }
        .to_string();
        assert_eq!(
            m,
            "enclave signed seq 17..20 in epoch 9 but the log has no rows for them"
        );
        let m = VerifyFailure::MissingRows { from: 5, to: 5 }.to_string();
        assert!(m.contains("row 5"), "{m}");
    }
}
