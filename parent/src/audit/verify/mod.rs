//! `audit verify`: the parent's hash chain, and the parent's log against the enclave's
//! attested chain.
//!
//! 1. Rows are walked in id order; every `row_hash` is recomputed and every `prev_hash`
//!    compared with the previous row's hash. Ids must run 1, 2, 3, … An edited row, a
//!    removed row or a rewritten suffix is named by id.
//! 2. Rows about a signed JWT (mint rows, `sts_failed`, `mint_withheld`) hold its JWS
//!    signing input; its claims must say what the row says (wallet, `kid`, `jti`, epoch,
//!    seq), so a row edited and the parent's chain recomputed is still named.
//! 3. Those rows are grouped by epoch and sorted by seq; the enclave chain is recomputed
//!    from the epoch's genesis over the signing inputs' hashes and compared with each
//!    row's recorded `enclave_head`.
//! 4. With the enclave's checkpoint `(epoch, seq, head)`, every seq `1..=seq` of that
//!    epoch must have a row and the recomputed head must equal `head`. This is the only
//!    way to catch the most recent rows being dropped, or a signing input rewritten: the
//!    parent's own chain stays valid when it is recomputed.
//! 5. Tokens found elsewhere (`--token`, checked against the JWKS) each name their row by
//!    their `agentkeys_epoch` and `agentkeys_seq` claims: the row must exist, hold the
//!    same signing input, and not say the token was withheld ([`tokens`]).

mod chain;
mod checkpoint;
pub mod cloudtrail;
pub mod postgres;
pub mod signed;
pub mod tokens;

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

pub use chain::{open_log, verify_chain, AuditVerifyError};
pub use checkpoint::{
    checkpoint_from_document, checkpoint_from_json, document_in_checkpoint_file, load_checkpoint,
    CheckpointError, CheckpointTrust,
};
pub use postgres::{verify_pg, PgVerifyError};

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
    /// CloudTrail shows an attested unseal of the issuer key by an enclave whose boot the
    /// log does not record.
    HiddenBoot {
        /// The enclave's module id.
        module_id: String,
        /// The KMS operation.
        operation: String,
        /// When CloudTrail saw it.
        time: String,
    },
    /// A format 2 row records an enclave seq without the signing input the chain hashed.
    Unanchored {
        /// Row id.
        id: i64,
        /// Epoch.
        epoch: u64,
        /// Seq.
        seq: u64,
    },
    /// A row says something other than the token it is about.
    DisagreesWithSigned {
        /// Row id.
        id: i64,
        /// The column.
        field: String,
        /// What the row holds.
        row: String,
        /// What the signed token holds.
        signed: String,
    },
    /// A format 1 row follows a format 2 row.
    FormatDowngrade {
        /// Row id.
        id: i64,
        /// The first format 2 row.
        after: i64,
    },
    /// An epoch's rows are hashed in two chain versions.
    MixedChainVersions {
        /// The row whose version differs from its epoch's first.
        id: i64,
        /// Epoch.
        epoch: u64,
    },
    /// A token found elsewhere is not a token of this issuer (its signature or shape).
    TokenInvalid {
        /// Where it was found (file and line).
        source: String,
        /// What is wrong.
        reason: String,
    },
    /// A signed token whose `(epoch, seq)` has no row.
    TokenWithoutRow {
        /// Where it was found.
        source: String,
        /// Epoch.
        epoch: u64,
        /// Seq.
        seq: u64,
    },
    /// A signed token whose row says it was withheld.
    TokenWithheld {
        /// Where it was found.
        source: String,
        /// The `mint_withheld` row.
        id: i64,
    },
    /// A signed token whose row holds another signing input.
    TokenDisagrees {
        /// Where it was found.
        source: String,
        /// The row.
        id: i64,
    },
    /// A failure found in one host's row chain of a PostgreSQL log (its row ids are that
    /// chain's `chain_seq`).
    InChain {
        /// The chain id.
        chain: String,
        /// What was found.
        failure: Box<VerifyFailure>,
    },
    /// Rows of one enclave epoch are in two hosts' chains: one enclave boot serves one host.
    EpochInTwoChains {
        /// Epoch.
        epoch: u64,
        /// The first chain holding it.
        first: String,
        /// The other chain.
        second: String,
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
            VerifyFailure::HiddenBoot {
                module_id,
                operation,
                time,
            } => write!(
                f,
                "CloudTrail shows an attested {operation} of the issuer key by enclave {module_id} at {time}, but the log records no boot of that enclave: its tokens may be missing from the log"
            ),
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
                "epoch {epoch} up to seq {seq}: the log's signed tokens give head {computed}, the enclave attested {attested}: a token's signing input was changed"
            ),
            VerifyFailure::Unanchored { id, epoch, seq } => write!(
                f,
                "row {id} records enclave seq {seq} in epoch {epoch} but not the signing input the enclave hashed: it cannot be checked against what was signed"
            ),
            VerifyFailure::DisagreesWithSigned { id, field, row, signed } => write!(
                f,
                "row {id} was edited: its {field} is {row}, but the token the enclave signed says {signed}"
            ),
            VerifyFailure::FormatDowngrade { id, after } => write!(
                f,
                "row {id} is in row format 1 after row {after} in format 2: it was rewritten to escape the checks against its signing input"
            ),
            VerifyFailure::MixedChainVersions { id, epoch } => write!(
                f,
                "row {id} hashes epoch {epoch}'s enclave chain in another version than the epoch's first row: it was rewritten"
            ),
            VerifyFailure::InChain { chain, failure } => write!(f, "chain {chain}: {failure}"),
            VerifyFailure::EpochInTwoChains { epoch, first, second } => write!(
                f,
                "epoch {epoch} has rows in chains {first} and {second}: an enclave boot serves one host, so rows were copied or rewritten"
            ),
            VerifyFailure::TokenInvalid { source, reason } => {
                write!(f, "token at {source} is not one of this issuer's: {reason}")
            }
            VerifyFailure::TokenWithoutRow { source, epoch, seq } => write!(
                f,
                "token at {source} was signed by the enclave (epoch {epoch}, seq {seq}) but the log has no row for it"
            ),
            VerifyFailure::TokenWithheld { source, id } => write!(
                f,
                "token at {source} is recorded as withheld (row {id}, mint_withheld), yet it was found outside the broker: the row was relabelled, or the parent leaked the token"
            ),
            VerifyFailure::TokenDisagrees { source, id } => write!(
                f,
                "token at {source} is not the token row {id} records for its epoch and seq: the row was rewritten"
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
    /// PostgreSQL: the comparison with every checkpoint given, in chain order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checkpoints: Vec<CheckpointSummary>,
    /// PostgreSQL: what each host's row chain holds (empty for a SQLite log).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub chains: Vec<ChainReport>,
    /// Failures found, first first (at most 100).
    pub failures: Vec<VerifyFailure>,
    /// Things worth knowing that are not failures by themselves.
    pub warnings: Vec<String>,
}

/// What one host's row chain of a PostgreSQL log holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    /// The chain id.
    pub chain: String,
    /// Rows walked.
    pub rows: u64,
    /// Last `chain_seq` seen.
    pub last_id: Option<i64>,
    /// Its row hash (hex).
    pub last_row_hash: Option<String>,
    /// The enclave epochs whose rows it holds.
    pub epochs: Vec<EpochSummary>,
    /// The comparisons with the checkpoints of its epochs.
    pub checkpoints: Vec<CheckpointSummary>,
    /// Failures found in it.
    pub failures: usize,
}

impl VerifyReport {
    /// A report on `db` with nothing checked yet.
    pub fn empty(db: PathBuf) -> VerifyReport {
        VerifyReport {
            db,
            rows_checked: 0,
            last_id: None,
            last_row_hash: None,
            epochs: Vec::new(),
            checkpoint: None,
            checkpoints: Vec::new(),
            chains: Vec::new(),
            failures: Vec::new(),
            warnings: Vec::new(),
        }
    }

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
        if !self.chains.is_empty() {
            self.render_chains(&mut out);
            self.render_outcome(&mut out);
            return out;
        }
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
            Some(c) => out.push_str(&format!("{}\n", render_checkpoint(c))),
        }
        self.render_outcome(&mut out);
        out
    }

    /// The per-chain part of a PostgreSQL report.
    fn render_chains(&self, out: &mut String) {
        out.push_str(&format!("chains: {}\n", self.chains.len()));
        for c in &self.chains {
            out.push_str(&format!("chain {}: {} rows", c.chain, c.rows));
            if let (Some(id), Some(h)) = (c.last_id, &c.last_row_hash) {
                out.push_str(&format!(", tip row {id}, row_hash {h}"));
            }
            out.push_str(if c.failures == 0 {
                ": OK\n"
            } else {
                ": FAILED\n"
            });
            for e in &c.epochs {
                out.push_str(&format!(
                    "  epoch {}: {} rows, seq {}..{}\n",
                    e.epoch, e.rows, e.min_seq, e.max_seq
                ));
            }
            for cp in &c.checkpoints {
                out.push_str(&format!("  {}\n", render_checkpoint(cp)));
            }
            if c.checkpoints.is_empty() {
                out.push_str("  checkpoint: none given for this chain's epochs\n");
            }
        }
    }

    /// Warnings, then the result and the failures.
    fn render_outcome(&self, out: &mut String) {
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
    }
}

/// One checkpoint comparison, as a line of a PostgreSQL report.
fn render_checkpoint(c: &CheckpointSummary) -> String {
    format!(
        "checkpoint: epoch {} seq {} head {}: {}{}",
        c.epoch,
        c.seq,
        c.head,
        if c.matched {
            "matches"
        } else {
            "DOES NOT MATCH"
        },
        if c.rows_after > 0 {
            format!(" ({} newer rows not covered)", c.rows_after)
        } else {
            String::new()
        }
    )
}

/// Formats an inclusive seq range, a one-seq range as that seq.
fn fmt_range(a: u64, b: u64) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a}..{b}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_without_its_document_is_refused() {
        for json in [
            format!(r#"{{"epoch":3,"seq":4,"head":"{}"}}"#, "ab".repeat(32)),
            format!(
                r#"{{"epoch":3,"seq":4,"head":"{}","module_id":"i-0"}}"#,
                "ab".repeat(32)
            ),
            "{}".to_string(),
        ] {
            let e = checkpoint_from_json(&json, None).unwrap_err();
            assert!(matches!(e, CheckpointError::NoDocument), "{json}: {e:?}");
            assert!(e.to_string().contains("attestation document"), "{e}");
        }
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
