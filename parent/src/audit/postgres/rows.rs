//! Rows as PostgreSQL stores them: the insert's parameters and the decoding of a selected
//! row back into an [`AuditRow`] (the chain's `chain_seq` is the row's `id`, the number its
//! hash covers).

use tokio_postgres::types::ToSql;

use crate::audit::row::{AuditRow, RowFormat};
use crate::audit::sqlite::{u64_from_sql, u64_to_sql, RowDecodeError};
use crate::audit::{AuditEvent, NewAuditRow, Outcome};

/// The insert of one row; parameters in [`PgRowValues::params`] order.
pub(super) const INSERT_ROW: &str = "INSERT INTO audit_log (chain_id, chain_seq, ts_ms, event, \
     outcome, bearer_sha256, wallet, kid, jti, enclave_epoch, enclave_seq, jwt_sha256, \
     enclave_head, signing_input, row_format, status, detail, prev_hash, row_hash) VALUES ($1, \
     $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)";

/// The columns of `audit_log` in the order [`row_from_pg`] reads them.
pub(crate) const PG_ROW_COLUMNS: &str = "chain_id, chain_seq, ts_ms, event, outcome, \
     bearer_sha256, wallet, kid, jti, enclave_epoch, enclave_seq, jwt_sha256, enclave_head, \
     signing_input, row_format, status, detail, prev_hash, row_hash";

/// One row's insert parameters, borrowed from the row being appended.
pub(super) struct PgRowValues<'a> {
    chain: &'a str,
    seq: i64,
    ts_ms: i64,
    entry: &'a NewAuditRow,
    event: &'static str,
    outcome: &'static str,
    bearer: Option<&'a [u8]>,
    epoch: Option<i64>,
    enclave_seq: Option<i64>,
    jwt: Option<&'a [u8]>,
    head: Option<&'a [u8]>,
    format: i16,
    status: Option<i32>,
    prev: Vec<u8>,
    hash: Vec<u8>,
}

impl<'a> PgRowValues<'a> {
    /// The values of `entry` stored as row `seq` of `chain`.
    pub(super) fn new(
        chain: &'a str,
        seq: i64,
        ts_ms: i64,
        entry: &'a NewAuditRow,
        prev: [u8; 32],
        hash: [u8; 32],
    ) -> PgRowValues<'a> {
        PgRowValues {
            chain,
            seq,
            ts_ms,
            entry,
            event: entry.event.as_str(),
            outcome: entry.outcome.as_str(),
            bearer: entry.bearer_sha256.as_ref().map(|h| &h[..]),
            epoch: entry.enclave_epoch.map(u64_to_sql),
            enclave_seq: entry.enclave_seq.map(u64_to_sql),
            jwt: entry.jwt_sha256.as_ref().map(|h| &h[..]),
            head: entry.enclave_head.as_ref().map(|h| &h[..]),
            // Row formats are 1 and 2: they fit a SMALLINT.
            format: i16::try_from(RowFormat::CURRENT.number()).unwrap_or(i16::MAX),
            status: entry.status.map(i32::from),
            prev: prev.to_vec(),
            hash: hash.to_vec(),
        }
    }

    /// The parameters of [`INSERT_ROW`].
    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 19] {
        [
            &self.chain,
            &self.seq,
            &self.ts_ms,
            &self.event,
            &self.outcome,
            &self.bearer,
            &self.entry.wallet,
            &self.entry.kid,
            &self.entry.jti,
            &self.epoch,
            &self.enclave_seq,
            &self.jwt,
            &self.head,
            &self.entry.signing_input,
            &self.format,
            &self.status,
            &self.entry.detail,
            &self.prev,
            &self.hash,
        ]
    }
}

/// Reads one row selected with [`PG_ROW_COLUMNS`]: its chain id, and the row or what in it
/// cannot be decoded.
pub(crate) fn row_from_pg(
    r: &tokio_postgres::Row,
) -> Result<(String, Result<AuditRow, RowDecodeError>), tokio_postgres::Error> {
    let chain: String = r.try_get(0)?;
    let id: i64 = r.try_get(1)?;
    let ts_ms: i64 = r.try_get(2)?;
    let event: String = r.try_get(3)?;
    let outcome: String = r.try_get(4)?;
    let bearer: Option<Vec<u8>> = r.try_get(5)?;
    let wallet: Option<String> = r.try_get(6)?;
    let kid: Option<String> = r.try_get(7)?;
    let jti: Option<String> = r.try_get(8)?;
    let epoch: Option<i64> = r.try_get(9)?;
    let seq: Option<i64> = r.try_get(10)?;
    let jwt: Option<Vec<u8>> = r.try_get(11)?;
    let head: Option<Vec<u8>> = r.try_get(12)?;
    let signing_input: Option<String> = r.try_get(13)?;
    let format: i16 = r.try_get(14)?;
    let status: Option<i32> = r.try_get(15)?;
    let detail: String = r.try_get(16)?;
    let prev: Vec<u8> = r.try_get(17)?;
    let hash: Vec<u8> = r.try_get(18)?;
    let bad = |column: &'static str, value: String| RowDecodeError { id, column, value };
    let hash32 = |column: &'static str, v: &[u8]| {
        <[u8; 32]>::try_from(v).map_err(|_| bad(column, hex::encode(v)))
    };
    let opt_hash = |column: &'static str, v: Option<Vec<u8>>| match v {
        None => Ok(None),
        Some(v) => hash32(column, &v).map(Some),
    };
    let decoded = (|| {
        Ok(AuditRow {
            id,
            format: RowFormat::from_number(i64::from(format))
                .ok_or_else(|| bad("row_format", format.to_string()))?,
            ts_ms,
            entry: NewAuditRow {
                event: AuditEvent::parse(&event).ok_or_else(|| bad("event", event.clone()))?,
                outcome: Outcome::parse(&outcome).ok_or_else(|| bad("outcome", outcome.clone()))?,
                bearer_sha256: opt_hash("bearer_sha256", bearer)?,
                wallet,
                kid,
                jti,
                enclave_epoch: epoch.map(u64_from_sql),
                enclave_seq: seq.map(u64_from_sql),
                jwt_sha256: opt_hash("jwt_sha256", jwt)?,
                enclave_head: opt_hash("enclave_head", head)?,
                signing_input,
                status: match status {
                    None => None,
                    Some(s) => Some(u16::try_from(s).map_err(|_| bad("status", s.to_string()))?),
                },
                detail,
            },
            prev_hash: hash32("prev_hash", &prev)?,
            row_hash: hash32("row_hash", &hash)?,
        })
    })();
    Ok((chain, decoded))
}
