//! `audit verify` on a PostgreSQL log: every host's row chain is walked like a SQLite log
//! (links, hashes, row formats, the signed claims, the enclave chain of each of its
//! epochs), each against the checkpoints of its own enclaves, and reported per chain.
//! One read-only REPEATABLE READ transaction gives a consistent snapshot while the fleet
//! appends.

use std::collections::BTreeMap;

use agentkeys_wire::CheckpointStatement;
use futures::{pin_mut, TryStreamExt};
use tokio_postgres::NoTls;

use super::chain::{check_enclave_epochs, fail, ChainWalker};
use super::{ChainReport, VerifyFailure, VerifyReport};
use crate::audit::db::PgUrl;
use crate::audit::postgres::{describe, row_from_pg, PG_ROW_COLUMNS, PG_SCHEMA_VERSION};

/// A PostgreSQL log that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum PgVerifyError {
    /// No connection.
    #[error("cannot connect to PostgreSQL at {url}: {reason}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// What the driver or server said.
        reason: String,
    },
    /// A query failed.
    #[error("cannot read the audit log at {url}: {reason}")]
    Read {
        /// The URL, password redacted.
        url: String,
        /// What the server said.
        reason: String,
    },
    /// No schema, or a schema newer than this build.
    #[error("{url} holds no audit log this build can read (schema version {found}, expected 1 to {newest})")]
    WrongSchema {
        /// The URL, password redacted.
        url: String,
        /// The version found (0: none).
        found: i32,
        /// [`PG_SCHEMA_VERSION`].
        newest: i32,
    },
}

/// Verifies every chain of the log at `url`, each against the checkpoints of its epochs.
pub async fn verify_pg(
    url: &PgUrl,
    checkpoints: &[CheckpointStatement],
) -> Result<VerifyReport, PgVerifyError> {
    let shown = url.redacted().to_string();
    let read = |e: tokio_postgres::Error| PgVerifyError::Read {
        url: shown.clone(),
        reason: describe(&e),
    };
    let (mut client, connection) =
        url.config()
            .connect(NoTls)
            .await
            .map_err(|e| PgVerifyError::Connect {
                url: shown.clone(),
                reason: describe(&e),
            })?;
    let driver = tokio::spawn(connection);
    let result = async {
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(read)?;
        let has_schema: bool = tx
            .query_one(
                "SELECT to_regclass('agentkeys_audit_schema') IS NOT NULL",
                &[],
            )
            .await
            .map_err(read)?
            .get(0);
        let found: i32 = if has_schema {
            tx.query_one(
                "SELECT COALESCE(MAX(version), 0) FROM agentkeys_audit_schema",
                &[],
            )
            .await
            .map_err(read)?
            .get(0)
        } else {
            0
        };
        if !(1..=PG_SCHEMA_VERSION).contains(&found) {
            return Err(PgVerifyError::WrongSchema {
                url: shown.clone(),
                found,
                newest: PG_SCHEMA_VERSION,
            });
        }
        let sql = format!("SELECT {PG_ROW_COLUMNS} FROM audit_log ORDER BY chain_id, chain_seq");
        let rows = tx
            .query_raw(&sql, std::iter::empty::<i32>())
            .await
            .map_err(read)?;
        pin_mut!(rows);
        let mut report = VerifyReport::empty(shown.clone().into());
        let mut current: Option<(String, ChainWalker, VerifyReport)> = None;
        let mut epoch_chain: BTreeMap<u64, String> = BTreeMap::new();
        while let Some(r) = rows.try_next().await.map_err(read)? {
            let (chain, decoded) = row_from_pg(&r).map_err(read)?;
            if current.as_ref().is_none_or(|(c, _, _)| *c != chain) {
                if let Some(done) = current.take() {
                    finish_chain(done, checkpoints, &mut epoch_chain, &mut report);
                }
                current = Some((
                    chain,
                    ChainWalker::default(),
                    VerifyReport::empty(shown.clone().into()),
                ));
            }
            if let Some((_, walker, sub)) = current.as_mut() {
                match decoded {
                    Ok(row) => walker.row(&row, sub),
                    Err(e) => {
                        let stored: Option<Vec<u8>> = r.try_get(18).ok();
                        let stored = stored.and_then(|h| <[u8; 32]>::try_from(h.as_slice()).ok());
                        walker.malformed(e, stored, sub);
                    }
                }
            }
        }
        if let Some(done) = current.take() {
            finish_chain(done, checkpoints, &mut epoch_chain, &mut report);
        }
        // A checkpoint of an epoch no chain holds: the enclave signed tokens the log lacks.
        let orphans: Vec<&CheckpointStatement> = checkpoints
            .iter()
            .filter(|c| !epoch_chain.contains_key(&c.epoch))
            .collect();
        let summaries = check_enclave_epochs(Default::default(), &orphans, &mut report);
        report.checkpoints.extend(summaries);
        // Read-only snapshot: ending it cannot lose anything.
        let _ = tx.commit().await;
        Ok(report)
    }
    .await;
    driver.abort();
    result
}

/// Checks the enclave epochs of one walked chain against its checkpoints, and files the
/// chain's results in `report` (failures and warnings named by chain).
fn finish_chain(
    (chain, walker, mut sub): (String, ChainWalker, VerifyReport),
    checkpoints: &[CheckpointStatement],
    epoch_chain: &mut BTreeMap<u64, String>,
    report: &mut VerifyReport,
) {
    let own: Vec<&CheckpointStatement> = checkpoints
        .iter()
        .filter(|c| walker.epochs.contains_key(&c.epoch))
        .collect();
    for epoch in walker.epochs.keys() {
        if let Some(first) = epoch_chain.insert(*epoch, chain.clone()) {
            fail(
                report,
                VerifyFailure::EpochInTwoChains {
                    epoch: *epoch,
                    first,
                    second: chain.clone(),
                },
            );
        }
    }
    let summaries = check_enclave_epochs(walker.epochs, &own, &mut sub);
    report.rows_checked += sub.rows_checked;
    report.epochs.extend(sub.epochs.iter().cloned());
    report.checkpoints.extend(summaries.iter().cloned());
    for w in &sub.warnings {
        report.warnings.push(format!("chain {chain}: {w}"));
    }
    for f in &sub.failures {
        fail(
            report,
            VerifyFailure::InChain {
                chain: chain.clone(),
                failure: Box::new(f.clone()),
            },
        );
    }
    report.chains.push(ChainReport {
        chain,
        rows: sub.rows_checked,
        last_id: sub.last_id,
        last_row_hash: sub.last_row_hash,
        epochs: sub.epochs,
        checkpoints: summaries,
        failures: sub.failures.len(),
    });
}
