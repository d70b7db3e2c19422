//! `audit verify` on a PostgreSQL log: every host's row chain is walked like a SQLite log
//! (links, hashes, row formats, the signed claims, the enclave chain of each of its
//! epochs), each against the checkpoints of its own enclaves, and reported per chain.
//! One read-only REPEATABLE READ transaction gives a consistent snapshot while the fleet
//! appends.
//!
//! Also the other readers of a PostgreSQL log: tokens found outside the broker, each
//! checked against the rows of its `(epoch, seq)` in whatever chain holds them
//! (`audit verify --token`), and the most recent rows of all chains (`audit tail`).

use std::collections::{BTreeMap, BTreeSet};

use agentkeys_attestation::jwks::Jwk;
use agentkeys_wire::CheckpointStatement;
use futures::{pin_mut, TryStreamExt};
use tokio_postgres::GenericClient;

use super::chain::{check_enclave_epochs, fail, ChainWalker};
use super::tokens::{judge, verify_or_report, FoundToken};
use super::{ChainReport, VerifyFailure, VerifyReport};
use crate::audit::db::PgUrl;
use crate::audit::postgres::{describe, row_from_pg, PG_ROW_COLUMNS, PG_SCHEMA_VERSION};
use crate::audit::row::AuditRow;
use crate::audit::sqlite::{u64_to_sql, RowDecodeError};

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
    let (mut client, driver) = connect(url).await?;
    let result = async {
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(read)?;
        check_schema(&tx, &shown).await?;
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

/// A connection to the log at `url`, and the task driving it (abort it when done).
async fn connect(
    url: &PgUrl,
) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), PgVerifyError> {
    let (client, connection) = url
        .config()
        .connect(url.tls().connector())
        .await
        .map_err(|e| {
            let reason = describe(&e);
            PgVerifyError::Connect {
                url: url.redacted().to_string(),
                reason: format!("{reason}{}", url.tls().hint(&reason)),
            }
        })?;
    let driver = tokio::spawn(async move {
        // The connection's end is seen by the queries that needed it.
        let _ = connection.await;
    });
    Ok((client, driver))
}

/// Checks that the database holds an audit log this build can read.
async fn check_schema(client: &impl GenericClient, shown: &str) -> Result<(), PgVerifyError> {
    let read = |e: tokio_postgres::Error| PgVerifyError::Read {
        url: shown.to_owned(),
        reason: describe(&e),
    };
    let has_schema: bool = client
        .query_one(
            "SELECT to_regclass('agentkeys_audit_schema') IS NOT NULL",
            &[],
        )
        .await
        .map_err(read)?
        .get(0);
    let found: i32 = if has_schema {
        client
            .query_one(
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
            url: shown.to_owned(),
            found,
            newest: PG_SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// [`super::tokens::check_tokens`] on a PostgreSQL log: every found token against the rows
/// of its `(epoch, seq)`, in whichever host's chain they are. A failure naming a row names
/// its chain. Returns how many tokens were accounted for.
pub async fn check_tokens_pg(
    url: &PgUrl,
    tokens: &[FoundToken],
    jwks: &[Jwk],
    report: &mut VerifyReport,
) -> Result<usize, PgVerifyError> {
    let shown = url.redacted().to_string();
    let read = |e: tokio_postgres::Error| PgVerifyError::Read {
        url: shown.clone(),
        reason: describe(&e),
    };
    let (client, driver) = connect(url).await?;
    let result = async {
        check_schema(&client, &shown).await?;
        let stmt = client
            .prepare(&format!(
                "SELECT {PG_ROW_COLUMNS} FROM audit_log WHERE enclave_epoch = $1 AND \
                 enclave_seq = $2 ORDER BY chain_id, chain_seq"
            ))
            .await
            .map_err(read)?;
        let mut accounted = 0;
        for token in tokens {
            let Some(verified) = verify_or_report(token, jwks, report) else {
                continue;
            };
            let (epoch, seq) = (u64_to_sql(verified.epoch), u64_to_sql(verified.seq));
            let mut chains = Vec::new();
            let mut rows = Vec::new();
            for r in client.query(&stmt, &[&epoch, &seq]).await.map_err(read)? {
                // An undecodable row is named by the walk of the whole log.
                if let (chain, Ok(row)) = row_from_pg(&r).map_err(read)? {
                    chains.push(chain);
                    rows.push(row);
                }
            }
            match judge(&token.source, &verified, &rows) {
                None => accounted += 1,
                Some((failure, None)) => report.failures.push(failure),
                Some((failure, Some(i))) => report.failures.push(VerifyFailure::InChain {
                    chain: chains[i].clone(),
                    failure: Box::new(failure),
                }),
            }
        }
        Ok(accounted)
    }
    .await;
    driver.abort();
    result
}

/// The module ids of the enclave boots every chain records (`enclave_unsealed` rows), by
/// chain: what `audit verify --cloudtrail` holds CloudTrail's attested unseals against.
pub async fn boots_in_pg(url: &PgUrl) -> Result<BTreeMap<String, BTreeSet<String>>, PgVerifyError> {
    let shown = url.redacted().to_string();
    let read = |e: tokio_postgres::Error| PgVerifyError::Read {
        url: shown.clone(),
        reason: describe(&e),
    };
    let (client, driver) = connect(url).await?;
    let result = async {
        check_schema(&client, &shown).await?;
        let mut boots: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for r in client
            .query(
                "SELECT chain_id, detail FROM audit_log WHERE event = $1",
                &[&crate::audit::AuditEvent::EnclaveUnsealed.as_str()],
            )
            .await
            .map_err(read)?
        {
            let chain: String = r.try_get(0).map_err(read)?;
            let detail: String = r.try_get(1).map_err(read)?;
            if let Some(id) = super::cloudtrail::boot_module_id(&detail) {
                boots.entry(chain).or_default().insert(id.to_string());
            }
        }
        Ok(boots)
    }
    .await;
    driver.abort();
    result
}

/// The most recent `n` rows of all chains (by time, then chain and row), oldest first,
/// each with its chain id.
pub async fn recent_rows_pg(
    url: &PgUrl,
    n: usize,
) -> Result<Vec<(String, Result<AuditRow, RowDecodeError>)>, PgVerifyError> {
    let shown = url.redacted().to_string();
    let read = |e: tokio_postgres::Error| PgVerifyError::Read {
        url: shown.clone(),
        reason: describe(&e),
    };
    let (client, driver) = connect(url).await?;
    let result = async {
        check_schema(&client, &shown).await?;
        let limit = i64::try_from(n).unwrap_or(i64::MAX);
        let rows = client
            .query(
                &format!(
                    "SELECT {PG_ROW_COLUMNS} FROM audit_log \
                     ORDER BY ts_ms DESC, chain_id DESC, chain_seq DESC LIMIT $1"
                ),
                &[&limit],
            )
            .await
            .map_err(read)?;
        let mut out = rows
            .iter()
            .map(row_from_pg)
            .collect::<Result<Vec<_>, _>>()
            .map_err(read)?;
        out.reverse();
        Ok(out)
    }
    .await;
    driver.abort();
    result
}
