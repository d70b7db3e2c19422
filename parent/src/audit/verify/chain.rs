//! Walking the parent's hash chain and recomputing the enclave chain from it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use agentkeys_wire::{chain_next, signing_input_sha256, ChainVersion, CheckpointStatement};
use rusqlite::Connection;

use super::signed::{disagreements, parse_signing_input};
use super::{fmt_range, CheckpointSummary, EpochSummary, VerifyFailure, VerifyReport};
use crate::audit::row::{AuditRow, RowFormat, GENESIS_PREV_HASH};
use crate::audit::sqlite::{
    decode_hash, open_read_only, row_columns, row_from_sql, RowDecodeError, OLDEST_SCHEMA_VERSION,
    SCHEMA_VERSION,
};

/// The first sequence number in every enclave epoch (the enclave counts from 1; a
/// checkpoint with `seq` 0 covers no JWT and its head is the genesis).
const FIRST_SEQ: u64 = 1;

/// At most this many failures are collected (the first one is what matters).
const MAX_FAILURES: usize = 100;

/// The column index of `row_hash` in `ROW_COLUMNS`.
const ROW_HASH_COLUMN: usize = 15;

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
    #[error("{path} is not an audit log this build can read (user_version {found}, expected {oldest} to {newest})")]
    WrongSchema {
        /// The path given.
        path: PathBuf,
        /// `PRAGMA user_version`.
        found: i64,
        /// The oldest schema version this build reads.
        oldest: i64,
        /// [`SCHEMA_VERSION`].
        newest: i64,
    },
}

/// One enclave-chain entry found in the log.
pub(super) struct SeqEntry {
    seq: u64,
    /// What the chain hashes at `seq`: the signing input's hash (version 2) or the JWT's
    /// (version 1).
    entry_sha256: [u8; 32],
    version: ChainVersion,
    head: Option<[u8; 32]>,
    id: i64,
}

/// The enclave-chain entries found in the log, by epoch.
pub(super) type EpochEntries = BTreeMap<u64, Vec<SeqEntry>>;

/// `(id, stored row_hash)` of the row the next one must link to.
type ChainLink = Option<(i64, [u8; 32])>;

/// Verifies the log at `path`, and against `checkpoint` when given.
pub fn verify_chain(
    path: &Path,
    checkpoint: Option<&CheckpointStatement>,
) -> Result<VerifyReport, AuditVerifyError> {
    let (conn, version) = open_log(path)?;
    let mut report = VerifyReport::empty(path.to_path_buf());
    let epochs = walk_log(&conn, version, path, &mut report)?;
    let checkpoints: Vec<&CheckpointStatement> = checkpoint.into_iter().collect();
    report.checkpoint = check_enclave_epochs(epochs, &checkpoints, &mut report)
        .into_iter()
        .next();
    Ok(report)
}

/// Maps a SQLite error on the log at `path` to [`AuditVerifyError::Sqlite`].
fn sqlite_error(path: &Path) -> impl Fn(rusqlite::Error) -> AuditVerifyError + '_ {
    move |source| AuditVerifyError::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

/// Records `failure` unless [`MAX_FAILURES`] have been recorded already.
pub(super) fn fail(report: &mut VerifyReport, failure: VerifyFailure) {
    if report.failures.len() < MAX_FAILURES {
        report.failures.push(failure);
    }
}

/// Opens the log read-only, checking that it exists and has a schema this build reads;
/// returns the connection and the schema version.
pub fn open_log(path: &Path) -> Result<(Connection, i64), AuditVerifyError> {
    if !path.exists() {
        return Err(AuditVerifyError::Missing {
            path: path.to_path_buf(),
        });
    }
    let conn = open_read_only(path).map_err(sqlite_error(path))?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sqlite_error(path))?;
    if !(OLDEST_SCHEMA_VERSION..=SCHEMA_VERSION).contains(&version) {
        return Err(AuditVerifyError::WrongSchema {
            path: path.to_path_buf(),
            found: version,
            oldest: OLDEST_SCHEMA_VERSION,
            newest: SCHEMA_VERSION,
        });
    }
    Ok((conn, version))
}

/// Checks the parent's chain over one consistent snapshot of the log.
fn walk_log(
    conn: &Connection,
    version: i64,
    path: &Path,
    report: &mut VerifyReport,
) -> Result<EpochEntries, AuditVerifyError> {
    // One read transaction: a consistent snapshot even while the broker appends.
    conn.execute_batch("BEGIN").map_err(sqlite_error(path))?;
    let epochs = walk_rows(conn, version, path, report)?;
    // Read-only snapshot: ending it cannot lose anything.
    let _ = conn.execute_batch("COMMIT");
    Ok(epochs)
}

/// Checks every row in id order against the one before it, collecting enclave entries.
fn walk_rows(
    conn: &Connection,
    version: i64,
    path: &Path,
    report: &mut VerifyReport,
) -> Result<EpochEntries, AuditVerifyError> {
    let sql_err = sqlite_error(path);
    let columns = row_columns(version);
    let mut stmt = conn
        .prepare(&format!("SELECT {columns} FROM audit_log ORDER BY id"))
        .map_err(&sql_err)?;
    let mut rows = stmt.query([]).map_err(&sql_err)?;
    let mut walker = ChainWalker::default();
    while let Some(r) = rows.next().map_err(&sql_err)? {
        match row_from_sql(r).map_err(&sql_err)? {
            Ok(row) => walker.row(&row, report),
            Err(e) => {
                let stored: Option<String> = r.get(ROW_HASH_COLUMN).ok();
                walker.malformed(e, stored.as_deref().and_then(decode_hash), report);
            }
        }
    }
    Ok(walker.epochs)
}

/// Walks one row chain, row by row in id order: links, hashes, format order, and the
/// enclave entries it collects by epoch.
#[derive(Default)]
pub(super) struct ChainWalker {
    previous: ChainLink,
    first_format_2: Option<i64>,
    /// The enclave-chain entries found so far, by epoch.
    pub(super) epochs: EpochEntries,
}

impl ChainWalker {
    /// Checks `row` against the one before it and collects its enclave entry.
    pub(super) fn row(&mut self, row: &AuditRow, report: &mut VerifyReport) {
        report.rows_checked += 1;
        check_link(row, self.previous, report);
        check_row_hash(row, report);
        check_format_order(row, &mut self.first_format_2, report);
        collect_enclave_entry(row, &mut self.epochs, report);
        report.last_id = Some(row.id);
        report.last_row_hash = Some(hex::encode(row.row_hash));
        self.previous = Some((row.id, row.row_hash));
    }

    /// Reports an undecodable row; its stored hash (if readable) is the next link.
    pub(super) fn malformed(
        &mut self,
        e: RowDecodeError,
        stored_hash: Option<[u8; 32]>,
        report: &mut VerifyReport,
    ) {
        let id = e.id;
        fail(
            report,
            VerifyFailure::Malformed {
                id,
                column: e.column.to_string(),
                value: e.value,
            },
        );
        report.rows_checked += 1;
        report.last_id = Some(id);
        self.previous = stored_hash.map(|h| (id, h));
    }
}

/// Checks that the row starts the chain or directly follows and links to `previous`.
fn check_link(row: &AuditRow, previous: ChainLink, report: &mut VerifyReport) {
    match previous {
        None => {
            if row.id != 1 || row.prev_hash != GENESIS_PREV_HASH {
                fail(report, VerifyFailure::BadStart { id: row.id });
            }
        }
        Some((prev_id, prev_hash)) => {
            if row.id != prev_id + 1 {
                fail(
                    report,
                    VerifyFailure::MissingRows {
                        from: prev_id + 1,
                        to: row.id - 1,
                    },
                );
            } else if row.prev_hash != prev_hash {
                fail(
                    report,
                    VerifyFailure::BrokenLink {
                        id: row.id,
                        previous_id: prev_id,
                    },
                );
            }
        }
    }
}

/// Checks that the row's contents hash to its stored `row_hash`.
fn check_row_hash(row: &AuditRow, report: &mut VerifyReport) {
    let computed = row.compute_hash();
    if computed != row.row_hash {
        fail(
            report,
            VerifyFailure::RowHashMismatch {
                id: row.id,
                stored: hex::encode(row.row_hash),
                computed: hex::encode(computed),
            },
        );
    }
}

/// Checks that no format 1 row follows a format 2 row: a row rewritten in format 1 would
/// escape the checks against its signing input.
fn check_format_order(row: &AuditRow, first_format_2: &mut Option<i64>, report: &mut VerifyReport) {
    match (row.format, *first_format_2) {
        (RowFormat::V2, None) => *first_format_2 = Some(row.id),
        (RowFormat::V1, Some(after)) => {
            fail(report, VerifyFailure::FormatDowngrade { id: row.id, after })
        }
        _ => {}
    }
}

/// Files the row's enclave chain entry, when it carries one, under its epoch. A format 2
/// row must hold the signing input its entry hashes, and agree with the claims in it.
fn collect_enclave_entry(row: &AuditRow, epochs: &mut EpochEntries, report: &mut VerifyReport) {
    let entry = &row.entry;
    let (Some(epoch), Some(seq)) = (entry.enclave_epoch, entry.enclave_seq) else {
        return;
    };
    let (entry_sha256, version) = match row.format {
        RowFormat::V1 => match entry.jwt_sha256 {
            Some(jwt) => (jwt, ChainVersion::V1),
            None => return,
        },
        RowFormat::V2 => {
            let Some(signing_input) = entry.signing_input.as_deref() else {
                fail(
                    report,
                    VerifyFailure::Unanchored {
                        id: row.id,
                        epoch,
                        seq,
                    },
                );
                return;
            };
            match parse_signing_input(signing_input) {
                Ok(signed) => {
                    for d in disagreements(entry, &signed) {
                        let f = VerifyFailure::DisagreesWithSigned {
                            id: row.id,
                            field: d.field.to_owned(),
                            row: d.row,
                            signed: d.signed,
                        };
                        fail(report, f);
                    }
                }
                Err(e) => fail(
                    report,
                    VerifyFailure::Malformed {
                        id: row.id,
                        column: "signing_input".to_owned(),
                        value: e.to_string(),
                    },
                ),
            }
            (signing_input_sha256(signing_input), ChainVersion::V2)
        }
    };
    epochs.entry(epoch).or_default().push(SeqEntry {
        seq,
        entry_sha256,
        version,
        head: entry.enclave_head,
        id: row.id,
    });
}

/// Checks the enclave chain of every epoch, then the log against each checkpoint (in the
/// order given; a checkpoint whose epoch has no rows finds every seq missing).
pub(super) fn check_enclave_epochs(
    epochs: EpochEntries,
    checkpoints: &[&CheckpointStatement],
    report: &mut VerifyReport,
) -> Vec<CheckpointSummary> {
    let mut covered: BTreeMap<u64, Vec<SeqEntry>> = BTreeMap::new();
    for (epoch, entries) in epochs {
        let unique = dedup_seqs(epoch, entries, report);
        let summary = check_epoch_chain(epoch, &unique, report);
        let has_checkpoint = checkpoints.iter().any(|c| c.epoch == epoch);
        if !summary.gaps.is_empty() && !has_checkpoint {
            report.warnings.push(gap_warning(&summary));
        }
        report.epochs.push(summary);
        if has_checkpoint {
            covered.insert(epoch, unique);
        }
    }
    checkpoints
        .iter()
        .map(|cp| {
            let entries = covered
                .get(&cp.epoch)
                .map(Vec::as_slice)
                .unwrap_or_default();
            check_checkpoint(cp, entries, report)
        })
        .collect()
}

/// Checks that rows sharing an epoch's seq agree on the JWT hash; returns one entry per seq.
fn dedup_seqs(epoch: u64, mut entries: Vec<SeqEntry>, report: &mut VerifyReport) -> Vec<SeqEntry> {
    entries.sort_by_key(|e| (e.seq, e.id));
    // Collapse duplicates (same seq and hash is harmless; different hashes is not).
    let mut unique: Vec<SeqEntry> = Vec::with_capacity(entries.len());
    for e in entries {
        match unique.last() {
            Some(last) if last.seq == e.seq => {
                if last.entry_sha256 != e.entry_sha256 {
                    let f = VerifyFailure::ConflictingSeq {
                        epoch,
                        seq: e.seq,
                        first_id: last.id,
                        second_id: e.id,
                    };
                    fail(report, f);
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
    unique
}

/// Checks each recorded enclave head against the chain recomputed from the epoch's genesis.
fn check_epoch_chain(epoch: u64, unique: &[SeqEntry], report: &mut VerifyReport) -> EpochSummary {
    let mut summary = EpochSummary {
        epoch,
        rows: u64::try_from(unique.len()).unwrap_or(u64::MAX),
        min_seq: unique.first().map_or(0, |e| e.seq),
        max_seq: unique.last().map_or(0, |e| e.seq),
        gaps: Vec::new(),
    };
    // Recompute while seqs are contiguous from FIRST_SEQ, in the chain version of the
    // epoch's first entry; an entry of another version is a row rewritten in another
    // format.
    let version = epoch_version(unique);
    let mut head = version.genesis(epoch);
    let mut expected = FIRST_SEQ;
    let mut contiguous = true;
    for e in unique {
        if e.seq != expected {
            if e.seq > expected {
                summary.gaps.push((expected, e.seq - 1));
            }
            contiguous = false;
        }
        if e.version != version {
            fail(
                report,
                VerifyFailure::MixedChainVersions { id: e.id, epoch },
            );
        }
        if contiguous {
            head = chain_next(&head, e.seq, &e.entry_sha256);
            if let Some(recorded) = e.head {
                if recorded != head {
                    let f = VerifyFailure::EnclaveHeadMismatch {
                        id: e.id,
                        epoch,
                        seq: e.seq,
                    };
                    fail(report, f);
                }
            }
        }
        expected = e.seq.saturating_add(1);
    }
    summary
}

/// The chain version of an epoch: its first entry's (the current one when it has none).
fn epoch_version(entries: &[SeqEntry]) -> ChainVersion {
    entries.first().map_or(ChainVersion::CURRENT, |e| e.version)
}

/// The warning for an epoch whose seq gaps no checkpoint decides.
fn gap_warning(summary: &EpochSummary) -> String {
    let gaps: Vec<String> = summary
        .gaps
        .iter()
        .map(|(a, b)| fmt_range(*a, *b))
        .collect();
    format!(
        "epoch {}: the enclave signed seq {} but the log has no rows for them \
         (a broker killed between signing and recording leaves such gaps; \
         verify against a checkpoint of this epoch to decide)",
        summary.epoch,
        gaps.join(", ")
    )
}

/// Checks that the log has every seq up to the checkpoint's and that they hash to its head.
fn check_checkpoint(
    cp: &CheckpointStatement,
    entries: &[SeqEntry],
    report: &mut VerifyReport,
) -> CheckpointSummary {
    // A checkpoint is attested by an enclave that keeps the current chain version.
    let mut head = ChainVersion::CURRENT.genesis(cp.epoch);
    let mut expected = FIRST_SEQ;
    let mut complete = true;
    let mut rows_after = 0u64;
    for e in entries {
        if e.seq > cp.seq {
            rows_after += 1;
            continue;
        }
        if e.seq > expected {
            complete = false;
            fail(
                report,
                VerifyFailure::MissingSeqs {
                    epoch: cp.epoch,
                    from: expected,
                    to: e.seq - 1,
                },
            );
        }
        head = chain_next(&head, e.seq, &e.entry_sha256);
        expected = e.seq.saturating_add(1);
    }
    if expected <= cp.seq {
        complete = false;
        fail(
            report,
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
            report,
            VerifyFailure::CheckpointHeadMismatch {
                epoch: cp.epoch,
                seq: cp.seq,
                attested: hex::encode(cp.head),
                computed: hex::encode(head),
            },
        );
    }
    CheckpointSummary {
        epoch: cp.epoch,
        seq: cp.seq,
        head: hex::encode(cp.head),
        matched,
        rows_after,
    }
}
